#!/usr/bin/env bash
# The appliance's main job on this kind of machine, as it stands today:
# the DPDK forwarder between two virtual devices, printing rates.
# usage: tools/demo.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
cargo build --release -q -p appliance --bin vpn-fwd
exec target/release/vpn-fwd --vdev net_null0 --vdev net_null1 \
  --hugepages-conf hugepages.conf --duration "${1:-10}"
