#!/usr/bin/env bash
# The test command: set-up, then every test of the workspace, one process
# per test (DPDK initialises its EAL once per process), as root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
cargo build --workspace --bins
# The Debian package's test (tests/tests/package.rs) packages release binaries.
cargo build --release --locked -p appliance --bin vpnd --bin vpnctl --bin vpn-setup
cargo nextest run --workspace --no-fail-fast "$@"
