#!/usr/bin/env bash
# Makes the virtualenv of the Redfish clients (DMTF's validators, sushy, redfishtool) in
# target/redfish-venv from tests/redfish/requirements.txt (pinned, from PyPI), once; a venv made
# from an older requirements file is made again. Installs python3-venv first when it is missing
# and we are root (a fresh Debian has python3 without it).
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/redfish-venv
requirements=tests/redfish/requirements.txt
stamp=$venv/requirements.txt
if [ -x "$venv/bin/python" ] && cmp -s "$requirements" "$stamp"; then
  exit 0
fi
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "python3's venv module is missing: install python3-venv (as root: apt-get install python3-venv)" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv >&2 ||
    { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv >&2; }
fi
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
cp "$requirements" "$stamp"
echo "redfish clients installed in $venv"
