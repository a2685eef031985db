#!/usr/bin/env bash
# Reads ServiceRoot, Systems, Chassis and Managers with DMTF's redfishtool (1.1.8), once with a
# Redfish session and once with HTTP Basic auth, and fails on any error.
#
#   tests/redfish/redfishtool_read.sh URL USER PASSWORD        e.g. https://127.0.0.1:8443 admin secret
#
# redfishtool takes the host without a scheme (-r HOST:PORT); -S Always makes it use https for
# every request; it never verifies the certificate (requests verify=False), so self-signed is fine.
# -A Session logs in with POST to Links.Sessions and DELETEs the session on exit; -A Basic sends
# Authorization: Basic on every request. redfishtool exits non-zero (5 for HTTP errors) on failure.
# Every output must also be a JSON object of the expected @odata.type.
# The venv is $REDFISH_VENV or <repo>/target/redfish-venv; the tool runs under netguard.py (only
# loopback and the service are reachable) with REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE unset.
set -euo pipefail
if [ $# -ne 3 ]; then
  echo "usage: $0 URL USER PASSWORD" >&2
  exit 2
fi
url=$1 user=$2 password=$3
here=$(cd "$(dirname "$0")" && pwd)
venv=${REDFISH_VENV:-$here/../../target/redfish-venv}
py=$venv/bin/python
unset REQUESTS_CA_BUNDLE CURL_CA_BUNDLE
host=${url#*://}
host=${host%%/*}
out=$(mktemp)
trap 'rm -f "$out"' EXIT

rt() {  # rt AUTH ARGS... : runs redfishtool under netguard, output in $out
  local auth=$1
  shift
  "$py" -c 'import sys
sys.path.insert(0, sys.argv[1])
import netguard
netguard.allow_rhost(sys.argv[2])
from redfishtoollib import main
main(["redfishtool"] + sys.argv[3:])' "$here" "$url" -r "$host" -u "$user" -p "$password" -S Always -A "$auth" -T 30 "$@" >"$out"
}

expect() {  # expect WHAT TYPE-PREFIX : the output is JSON whose @odata.type starts with TYPE-PREFIX
  "$py" - "$out" "$1" "$2" <<'EOF'
import json, sys
path, what, prefix = sys.argv[1:4]
try:
    d = json.load(open(path))
except ValueError as e:
    sys.exit(f"redfishtool_read: {what}: output is not JSON ({e})")
t = d.get("@odata.type", "") if isinstance(d, dict) else ""
if not t.startswith(prefix):
    sys.exit(f"redfishtool_read: {what}: @odata.type is {t!r}, expected {prefix}*")
print(f"  {what}: {d.get('@odata.id')} ({t})" + (f", {d['Members@odata.count']} members" if 'Members@odata.count' in d else ""))
EOF
}

members() {  # number of members in the collection in $out
  "$py" -c 'import json,sys; print(json.load(open(sys.argv[1])).get("Members@odata.count", 0))' "$out"
}

for auth in Session Basic; do
  echo "redfishtool_read: -A $auth"
  step="root"
  rt "$auth" root || { echo "redfishtool_read: '$step' failed (-A $auth)" >&2; exit 1; }
  expect "ServiceRoot" "#ServiceRoot."
  for coll in Systems Chassis Managers; do
    case $coll in
      Systems) ctype="#ComputerSystemCollection."; mtype="#ComputerSystem." ;;
      Chassis) ctype="#ChassisCollection."; mtype="#Chassis." ;;
      Managers) ctype="#ManagerCollection."; mtype="#Manager." ;;
    esac
    rt "$auth" "$coll" || { echo "redfishtool_read: '$coll' failed (-A $auth)" >&2; exit 1; }
    expect "$coll" "$ctype"
    if [ "$(members)" -gt 0 ]; then
      rt "$auth" "$coll" -F get || { echo "redfishtool_read: '$coll -F get' failed (-A $auth)" >&2; exit 1; }
      expect "$coll first member" "$mtype"
    fi
  done
done
echo "redfishtool_read: OK"
