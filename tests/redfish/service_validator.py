#!/usr/bin/env python3
"""Runs DMTF's Redfish Service Validator (redfish-service-validator==3.1.8) offline.

    target/redfish-venv/bin/python tests/redfish/service_validator.py \
        --rhost https://127.0.0.1:8443 -u admin -p PASSWORD [--min-pass 300] [validator options...]

What it adds to `rf_service_validator`:
- `--skipschema` and `--schema_directory <csdl>` are always passed: the tool then neither
  fetches DSP8010.zip/info.json from dmtf.org nor downloads the schemas that $metadata
  references, and writes nothing into the schema folder (the folder is checked before and after
  the run; root can write to a folder without write bits, so this is checked, not assumed).
  The csdl folder is, in order: --schema-dir, $REDFISH_CSDL, <repo>/../shared/redfish/csdl,
  /work/shared/redfish/csdl. It must hold the DMTF CSDL files (ServiceRoot_v1.xml, ...):
  with a wrong folder the tool finds no definitions, reports 0 PASS / 0 FAIL and exits 0.
- a floor on passes (--min-pass, default 1) and the service root must have been validated with
  HTTP 200, so that an empty or broken run cannot pass;
- --max-warn N (default: no limit) fails the run on more than N warnings;
- a check of $metadata (off with --no-metadata-check): every @odata.type met in the walk must
  be declared there, <edmx:Reference Uri=".../Name_v1.xml"> naming a file of the csdl folder
  with <edmx:Include Namespace="Name.vX_Y_Z"/> (or "NameCollection") that the file defines;
  the 3.1.8 validator itself no longer reads $metadata when schemas are not downloaded;
- a machine-readable summary, <report dir>/results.json: totals and, per URI, the HTTP status,
  counts and every FAIL/WARN message. (3.1.8 writes no JSON itself: its totals are on the
  console table and in the HTML report's score tiles, <div class="snum">N</div> followed by
  Pass/Warning/Fail/Not Tested, and in the XLSX "Summary" sheet.)
- no network traffic except to loopback and the service (see netguard.py); REQUESTS_CA_BUNDLE
  and CURL_CA_BUNDLE are unset (the tool never verifies the service certificate).
Exit status: 0 only if the validator reported no FAIL and the checks above hold.
"""
import argparse
import json
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import netguard  # noqa: E402  (must come before the tools open any socket)

REPO = HERE.parent.parent


def find_csdl(explicit):
    for given in (explicit, os.environ.get("REDFISH_CSDL")):
        if given:  # an explicit choice is never second-guessed
            if not Path(given, "ServiceRoot_v1.xml").is_file():
                sys.exit(f"service_validator: {given} has no ServiceRoot_v1.xml; not the DMTF CSDL folder")
            return str(Path(given).resolve())
    cands = [str(REPO.parent / "shared" / "redfish" / "csdl"), "/work/shared/redfish/csdl"]
    for c in cands:
        if c and Path(c, "ServiceRoot_v1.xml").is_file():
            return str(Path(c).resolve())
    sys.exit("service_validator: no CSDL folder with ServiceRoot_v1.xml found (tried: %s)"
             % ", ".join(c for c in cands if c))


def odata_types(obj, out):
    if isinstance(obj, dict):
        t = obj.get("@odata.type")
        if isinstance(t, str) and t.startswith("#"):
            out.add(t[1:])
        for v in obj.values():
            odata_types(v, out)
    elif isinstance(obj, list):
        for v in obj:
            odata_types(v, out)


def check_metadata(sut, csdl):
    """Every @odata.type seen in the walk must be declared by $metadata: a Reference whose Uri ends in
    <Namespace>_v1.xml (a file of the csdl folder) with an Include of the versioned namespace (and of
    the unversioned one for collections), the version being one the CSDL file defines.
    rf_service_validator 3.1.8 no longer reads $metadata with --skipschema, so this is checked here."""
    import xml.etree.ElementTree as ET
    problems = []
    r = sut.session.get("/redfish/v1/$metadata")
    if r.status != 200:
        return [f"GET /redfish/v1/$metadata answered HTTP {r.status}"]
    try:
        root = ET.fromstring(r.text)
    except ET.ParseError as e:
        return [f"$metadata is not XML: {e}"]
    edmx = "{http://docs.oasis-open.org/odata/ns/edmx}"
    includes = {}  # namespace -> file name
    for ref in root.iter(edmx + "Reference"):
        uri = ref.get("Uri", "")
        for inc in ref.iter(edmx + "Include"):
            includes[inc.get("Namespace")] = uri.rsplit("/", 1)[-1]
    for ref_file in sorted(set(includes.values())):
        if ref_file.endswith("_v1.xml") and not Path(csdl, ref_file).is_file():
            problems.append(f"$metadata references {ref_file}, which is not in {csdl}")
    types = set()
    for uri, res in sut._resources.items():
        try:
            if res["Response"] is not None and res["Response"].status == 200:
                odata_types(res["Response"].dict, types)
        except Exception:
            pass
    defined = {}
    for t in sorted(types):
        parts = t.split(".")
        base = parts[0]
        want = [base] if len(parts) == 2 else [".".join(parts[:2])]
        fname = f"{base}_v1.xml"
        if not Path(csdl, fname).is_file():
            problems.append(f"@odata.type #{t}: no {fname} in {csdl}")
            continue
        if fname not in defined:
            text = Path(csdl, fname).read_text()
            defined[fname] = set(re.findall(r'Namespace="([^"]+)"', text))
        for ns in want:
            if ns not in defined[fname]:
                problems.append(f"@odata.type #{t}: namespace {ns} is not defined in {fname}")
            elif ns not in includes:
                problems.append(f"@odata.type #{t}: $metadata has no <edmx:Include Namespace=\"{ns}\"/>")
            elif includes[ns] != fname:
                problems.append(f"@odata.type #{t}: $metadata includes {ns} from {includes[ns]}, expected {fname}")
    return problems


def snapshot(d):
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in Path(d).iterdir()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=False)
    ap.add_argument("--schema-dir")
    ap.add_argument("--min-pass", type=int, default=1)
    ap.add_argument("--max-warn", type=int, default=None)
    ap.add_argument("--no-metadata-check", action="store_true")
    ap.add_argument("--wrapper-help", action="store_true")
    ours, rest = ap.parse_known_args()
    if ours.wrapper_help:
        print(__doc__)
        return 0

    csdl = find_csdl(ours.schema_dir)
    n_xml = sum(1 for p in Path(csdl).glob("*_v1.xml"))
    if n_xml < 100:
        sys.exit(f"service_validator: {csdl} holds only {n_xml} *_v1.xml files; not the DMTF CSDL bundle")
    rest = [a for a in rest if a != "--skipschema"]
    i = 0
    while i < len(rest):  # drop any --schema_directory given: ours is the checked one
        if rest[i] == "--schema_directory":
            del rest[i:i + 2]
            continue
        if rest[i].startswith("--schema_directory="):
            del rest[i]
            continue
        i += 1
    if not any(a in ("--logdir", "--report-dir") or a.startswith(("--logdir=", "--report-dir=")) for a in rest):
        rest += ["--logdir", str(REPO / "target" / "redfish-reports" / "service-validator")]
    argv = ["rf_service_validator", "--skipschema", "--schema_directory", csdl] + rest
    netguard.allow_rhost(netguard.rhost_from_argv(argv))

    from redfish_service_validator import console_scripts

    captured = {}
    orig_summary = console_scripts.print_summary

    def capture_summary(sut):
        captured["sut"] = sut
        if not ours.no_metadata_check:  # before run_validator logs out of the session
            try:
                captured["metadata_problems"] = check_metadata(sut, csdl)
            except Exception as e:
                captured["metadata_problems"] = [f"$metadata check failed: {type(e).__name__}: {e}"]
        orig_summary(sut)

    console_scripts.print_summary = capture_summary
    orig_html = console_scripts.report.html_report

    def capture_html(sut, report_dir, *a, **kw):
        captured["report_dir"] = Path(report_dir)
        f = orig_html(sut, report_dir, *a, **kw)
        captured["html"] = str(f)
        return f

    console_scripts.report.html_report = capture_html

    before = snapshot(csdl)
    sys.argv = argv
    code = 0
    try:
        console_scripts.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    after = snapshot(csdl)

    problems = []
    if before != after:
        problems.append(f"the schema folder {csdl} was modified during the run")
    sut = captured.get("sut")
    if sut is None:
        problems.append("the validator did not run (could not reach or log in to the service?)")
        summary = None
    else:
        resources = {}
        for uri, r in sut._resources.items():
            entry = {"status": r["StatusCode"], "validated": r["Validated"], "pass": r["Pass"],
                     "warn": r["Warn"], "fail": r["Fail"], "skip": r["Skip"], "failures": [], "warnings": []}
            if r["Exception"] is not None:
                entry["exception"] = str(r["Exception"])
            for prop, res in r["Results"].items():
                if res["Result"] in ("FAIL", "WARN"):
                    entry["failures" if res["Result"] == "FAIL" else "warnings"].append(
                        {"property": prop or "(resource)", "value": res["Value"], "message": res["Message"]})
            resources[uri] = entry
        meta = captured.get("metadata_problems", [])
        problems += meta
        summary = {"tool": "redfish-service-validator 3.1.8", "rhost": sut.rhost, "schema_directory": csdl,
                   "metadata_problems": meta,
                   "pass": sut.pass_count, "warn": sut.warn_count, "fail": sut.fail_count,
                   "not_tested": sut.skip_count, "resources_validated": len(resources),
                   "html_report": captured.get("html"), "resources": resources}
        root = resources.get("/redfish/v1/")
        if not root or root["status"] != 200:
            problems.append("the service root /redfish/v1/ was not read with HTTP 200")
        if sut.pass_count < ours.min_pass:
            problems.append(f"only {sut.pass_count} PASS results; at least {ours.min_pass} required")
        if sut.fail_count:
            problems.append(f"{sut.fail_count} FAIL results")
        if ours.max_warn is not None and sut.warn_count > ours.max_warn:
            problems.append(f"{sut.warn_count} WARN results; at most {ours.max_warn} allowed")
        out_dir = captured.get("report_dir")
        if out_dir:
            with open(out_dir / "results.json", "w") as f:
                json.dump(summary, f, indent=2)
            print(f"Results JSON: {out_dir / 'results.json'}")
        for uri, e in resources.items():
            for item in e["failures"]:
                print(f"FAIL {uri} {item['property']}: {item['message']}")
            for item in e["warnings"]:
                print(f"WARN {uri} {item['property']}: {item['message']}")
        print(f"rf_service_validator totals: pass={sut.pass_count} warn={sut.warn_count} "
              f"fail={sut.fail_count} not_tested={sut.skip_count} resources={len(resources)}")
    if code and not problems:
        problems.append(f"rf_service_validator exited with status {code}")
    for p in problems:
        print(f"service_validator: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
