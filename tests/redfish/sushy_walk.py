#!/usr/bin/env python3
"""Walks the CompositionService with OpenStack sushy, composes a system and decomposes it.

    target/redfish-venv/bin/python tests/redfish/sushy_walk.py URL USER PASSWORD [--name NAME] [--keep]

URL is the service's base URL, e.g. https://127.0.0.1:8443 (sushy appends /redfish/v1/).
Steps (the first failing one is named on stderr and the exit status is 1):
 1. sushy.Sushy(URL, USER, PASSWORD, verify=False): GET /redfish/v1/ unauthenticated, then a
    session login (POST Links.Sessions, X-Auth-Token + Location); sushy falls back to Basic
    auth only if the POST fails with 401/403 -- this script requires the session to work.
 2. CompositionService (Id, Name required by sushy; ServiceEnabled must be true),
    ResourceBlocks (each needs Id, Name, CompositionStatus.CompositionState, ResourceBlockType)
    and ResourceZones (Id, Name, Links.ResourceBlocks).
 3. Picks, in the first zone that has any, one Unused block of each ResourceBlockType.
 4. POSTs {"Name": NAME, "Links": {"ResourceBlocks": [...]}} to the Systems collection (the
    specific-composition request of DSP2050); accepts 201 + Location, or 202 + Location of a
    task monitor that sushy polls until it stops answering 202.
 5. The new system must be a ComputerSystem listed in Systems, with SystemType Composed and
    Links.ResourceBlocks naming the blocks; each block must now be Composed (or
    ComposedAndAvailable) and link back to the system.
 6. DELETEs the system (unless --keep); it must then answer 404, leave the collection, and the
    blocks must be Unused again. Finally the session is deleted (sushy does it on close).
"""
import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import netguard  # noqa: E402

STEP = ["start"]


class WalkError(Exception):
    pass


def step(name):
    STEP[0] = name
    print(f"sushy_walk: {name}", flush=True)


def check(cond, what):
    if not cond:
        raise WalkError(what)


def block_state(block):
    return block.json.get("CompositionStatus", {}).get("CompositionState")


def main():
    ap = argparse.ArgumentParser(description="Compose and decompose a system through sushy")
    ap.add_argument("url")
    ap.add_argument("user")
    ap.add_argument("password")
    ap.add_argument("--name", default="sushy-walk")
    ap.add_argument("--keep", action="store_true", help="do not decompose the system at the end")
    ap.add_argument("--timeout", type=int, default=120, help="seconds to wait for a task monitor")
    args = ap.parse_args()
    netguard.allow_rhost(args.url)

    import sushy
    from sushy import exceptions as sexc

    root = None
    system_uri = None
    try:
        step("connect and log in (session)")
        root = sushy.Sushy(args.url, username=args.user, password=args.password, verify=False)
        check(root._auth.get_session_key(), "no Redfish session was created: the session login POST failed (wrong credentials?) and sushy fell back to Basic auth")
        print(f"  service root Id={root.identity} RedfishVersion={root.redfish_version} "
              f"session={root._auth.get_session_resource_id()}")

        step("read the CompositionService")
        cs = root.get_composition_service()
        print(f"  {cs.path}: Id={cs.identity} Name={cs.name} ServiceEnabled={cs.service_enabled} "
              f"AllowZoneAffinity={cs.allow_zone_affinity}")
        check(cs.service_enabled is True, "CompositionService.ServiceEnabled is not true")

        step("read the ResourceBlocks")
        # sushy 5.14.0 bug: CompositionService.resource_blocks / .resource_zones pass the bound
        # method _get_resource_blocks_collection_path (not its result) as the collection path and
        # fail with "'function' object has no attribute 'decode'"; build the collections here.
        from sushy.resources.compositionservice import resourceblock, resourcezone
        kw = dict(redfish_version=cs.redfish_version, registries=cs.registries, root=cs.root)
        rb_coll = resourceblock.ResourceBlockCollection(cs._conn, cs._get_resource_blocks_collection_path(), **kw)
        rz_coll = resourcezone.ResourceZoneCollection(cs._conn, cs._get_resource_zones_collection_path(), **kw)
        blocks = {b.path: b for b in rb_coll.get_members()}
        check(blocks, "the ResourceBlocks collection is empty")
        for b in blocks.values():
            print(f"  {b.path}: Id={b.identity} type={b.json.get('ResourceBlockType')} "
                  f"state={block_state(b)}")
            check(b.composition_status.composition_state is not None,
                  f"{b.path}: CompositionStatus.CompositionState missing or not a CompositionState value")

        step("read the ResourceZones")
        zones = rz_coll.get_members()
        check(zones, "the ResourceZones collection is empty")
        for z in zones:
            members = [m.get("@odata.id") for m in (z.links.resource_blocks or [])]
            print(f"  {z.path}: Id={z.identity} ResourceBlocks={members}")
            for m in members:
                check(m in blocks, f"zone {z.path} links {m}, which is not in the ResourceBlocks collection")

        step("choose free resource blocks")
        chosen = []
        for z in zones:
            seen_types = set()
            for m in (z.links.resource_blocks or []):
                b = blocks[m["@odata.id"]]
                key = tuple(b.json.get("ResourceBlockType") or [])
                if block_state(b) == "Unused" and key not in seen_types:
                    seen_types.add(key)
                    chosen.append(b.path)
            if chosen:
                break
        check(chosen, "no zone has an Unused resource block to compose")
        print(f"  composing {args.name} from {chosen}")

        step("compose: POST to the Systems collection")
        systems = root.get_system_collection()
        before = set(systems.members_identities)
        payload = {"Name": args.name, "Links": {"ResourceBlocks": [{"@odata.id": p} for p in chosen]}}
        try:
            resp = root._conn.post(systems.path, data=payload, blocking=True, timeout=args.timeout)
        except TypeError as e:
            raise WalkError(f"{e}: sushy 5.14.0 TaskMonitor.sleep_for passes a 'Retry-After: <seconds>' header "
                            "to time.sleep() as a string; answer 202 without Retry-After or with an HTTP-date")
        print(f"  final response: HTTP {resp.status_code} Location={resp.headers.get('Location')}")
        body = {}
        try:
            body = resp.json() if resp.content else {}
        except ValueError:
            pass
        if "#ComputerSystem." in str(body.get("@odata.type", "")):
            system_uri = body["@odata.id"]
        elif "#Task." in str(body.get("@odata.type", "")):
            check(body.get("TaskState") == "Completed",
                  f"sushy returned the Task {body.get('@odata.id')} in state {body.get('TaskState')}: when a 202 "
                  "body carries @odata.id, sushy (TaskMonitor.from_response) polls that URI instead of the Location "
                  "task monitor and takes its first 200 as completion; answer 202 with Location only, no body")
            created = body.get("Links", {}).get("CreatedResources", [])
            check(created, "compose task completed without Links.CreatedResources")
            system_uri = created[0]["@odata.id"]
        elif resp.headers.get("Location"):
            system_uri = resp.headers["Location"]
        check(resp.status_code in (200, 201), f"compose answered HTTP {resp.status_code}, expected 201")
        check(system_uri, "compose response names no system (no Location, no ComputerSystem body)")
        system_uri = "/" + system_uri.split("://", 1)[-1].split("/", 1)[-1] if "://" in system_uri else system_uri

        step("check the composed system")
        system = root.get_system(system_uri)
        print(f"  {system.path}: Id={system.identity} Name={system.name} SystemType={system.json.get('SystemType')}")
        check(system.json.get("SystemType") == "Composed", "SystemType is not Composed")
        linked = sorted(m.get("@odata.id") for m in system.json.get("Links", {}).get("ResourceBlocks", []))
        check(linked == sorted(chosen), f"Links.ResourceBlocks is {linked}, expected {sorted(chosen)}")
        systems.refresh(force=True)
        check(system_uri in set(systems.members_identities) - before, f"{system_uri} is not a new Systems member")
        for p in chosen:
            b = blocks[p]
            b.refresh(force=True)
            check(block_state(b) in ("Composed", "ComposedAndAvailable"),
                  f"{p}: CompositionState is {block_state(b)} after composing")
            back = [m.get("@odata.id") for m in b.json.get("Links", {}).get("ComputerSystems", [])]
            check(system_uri in back, f"{p}: Links.ComputerSystems {back} does not name {system_uri}")

        if args.keep:
            print(f"sushy_walk: OK (kept {system_uri})")
            system_uri = None
            return 0

        step("decompose: DELETE the system")
        resp = root._conn.delete(system_uri, blocking=True, timeout=args.timeout)
        check(resp.status_code in (200, 202, 204), f"DELETE answered HTTP {resp.status_code}")
        deleted, system_uri = system_uri, None
        try:
            root._conn.get(deleted)
            raise WalkError(f"{deleted} still answers after DELETE")
        except sexc.ResourceNotFoundError:
            pass
        systems.refresh(force=True)
        check(deleted not in systems.members_identities, f"{deleted} is still a Systems member")
        for p in chosen:
            b = blocks[p]
            b.refresh(force=True)
            check(block_state(b) == "Unused", f"{p}: CompositionState is {block_state(b)} after decomposing")
        print("sushy_walk: OK")
        return 0
    except (WalkError, sexc.SushyError, Exception) as e:  # noqa: B014
        print(f"sushy_walk: FAILED at step '{STEP[0]}': {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        if root is not None:
            if system_uri:
                try:
                    root._conn.delete(system_uri, blocking=True, timeout=args.timeout)
                    print(f"sushy_walk: cleaned up {system_uri}")
                except Exception as e:  # pragma: no cover
                    print(f"sushy_walk: could not clean up {system_uri}: {e}", file=sys.stderr)
            try:
                root._auth.close()
            except Exception:
                pass


if __name__ == "__main__":
    sys.exit(main())
