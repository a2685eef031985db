#!/usr/bin/env bash
# Runs every test of the workspace, the QEMU end-to-end tests included, installing what they need.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --release
