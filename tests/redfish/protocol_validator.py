#!/usr/bin/env python3
"""Runs DMTF's Redfish Protocol Validator (redfish-protocol-validator==1.3.2) without SSDP.

    target/redfish-venv/bin/python tests/redfish/protocol_validator.py \
        --rhost https://127.0.0.1:8443 -u admin -p PASSWORD --no-cert-check \
        [--avoid-http-redirect] [--report-dir DIR] [--min-pass N]

Every argument except --min-pass is passed through to `rf_protocol_validator` unchanged
(its own --help lists them). What the wrapper changes:
- redfish_protocol_validator.utils.discover_ssdp is replaced by a stub that returns {}: the
  tool otherwise sends SSDP M-SEARCH datagrams to 239.255.255.250:1900 and [ff02::c]:1900
  (service_details.pre_ssdp, twice per protocol, and again in test_ssdp_can_be_disabled) and
  has no option to skip that. The SSDP assertions then report NOT_TESTED.
- netguard refuses any other connection or datagram that is not for loopback or the service.
- REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE are unset, or requests would verify the self-signed
  certificate despite --no-cert-check on the tool's requests.Session objects.
- --report-dir defaults to <repo>/target/redfish-reports/protocol-validator; the tool writes
  results.json there ({"TestResults": {"Protocol Validations": {"pass","fail","skip","warn"}}})
  plus TSV/HTML/XLSX reports.
- after the run every FAIL and WARN is printed on one line each, and a floor on passes can be
  required with --min-pass (default 1).
Exit status: the tool's (1 if any assertion FAILed), or 1 if fewer than --min-pass passed.
"""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import netguard  # noqa: E402  (before the tool opens any socket)

REPO = HERE.parent.parent


def main():
    argv = list(sys.argv[1:])
    min_pass = 1
    for i, a in enumerate(list(argv)):
        if a == "--min-pass" and i + 1 < len(argv):
            min_pass = int(argv[i + 1])
            del argv[i:i + 2]
            break
        if a.startswith("--min-pass="):
            min_pass = int(a.split("=", 1)[1])
            del argv[i]
            break
    if not any(a == "--report-dir" or a.startswith("--report-dir=") for a in argv) and "--help" not in argv \
            and "-h" not in argv:
        argv += ["--report-dir", str(REPO / "target" / "redfish-reports" / "protocol-validator")]
    netguard.allow_rhost(netguard.rhost_from_argv(argv))

    from redfish_protocol_validator import console_scripts, utils
    from redfish_protocol_validator.constants import Result

    def no_ssdp(*args, **kwargs):
        return {}

    utils.discover_ssdp = no_ssdp  # service_details calls it as utils.discover_ssdp(...)

    captured = {}
    orig_summary = utils.print_summary

    def capture_summary(sut):
        captured["sut"] = sut
        orig_summary(sut)

    utils.print_summary = capture_summary

    sys.argv = ["rf_protocol_validator"] + argv
    code = 0
    try:
        console_scripts.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    sut = captured.get("sut")
    if sut is None:  # --help/--version (0), or the tool stopped before testing (1)
        return code
    for assertion, entries in sorted(sut.results.items(), key=lambda x: x[0].name):
        for r in entries:
            if r["result"] in (Result.FAIL, Result.WARN):
                print(f"{r['result'].value} {assertion.name} {r['method']} {r['status']} {r['uri']}: {r['msg']}")
    passed = sut.summary_count(Result.PASS)
    print(f"rf_protocol_validator totals: pass={passed} warn={sut.summary_count(Result.WARN)} "
          f"fail={sut.summary_count(Result.FAIL)} not_tested={sut.summary_count(Result.NOT_TESTED)}")
    if passed < min_pass:
        print(f"protocol_validator: only {passed} PASS results; at least {min_pass} required", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
