#!/usr/bin/env bash
# Runs every test of the workspace, the QEMU end-to-end tests included, installing what they need:
# qemu-system-x86 (from Debian's packages, when missing and root) and the pinned kernel package.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release -p qemu -- setup
cargo test --workspace --release
