#!/usr/bin/env bash
# Runs every test of the workspace, the QEMU end-to-end tests included, installing what they need:
# qemu-system-x86 (from Debian's packages, when missing and root), the pinned kernel package, and
# the Redfish clients (DMTF's validators, sushy, redfishtool) from PyPI into target/redfish-venv.
# Every test binary runs even when an earlier one failed (--no-fail-fast), so a run shows all
# failures. Ends with one summary line over all test binaries: "tests: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release -p qemu -- setup
bash tests/redfish/setup.sh
mkdir -p target
log=target/run-all.log
status=0
cargo test --workspace --release --no-fail-fast 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
