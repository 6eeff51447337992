#!/usr/bin/env bash
# The appliance's main job on this kind of machine, as far as it goes today:
# vpn-dp (the DPDK dataplane, static-SA mode) terminates an IPsec tunnel from
# a customer gateway (scapy's ESP, in namespace vt-demo-cgw) and forwards to
# a VPC host (a real kernel, namespace vt-demo-vpc), on af_packet ports.
# Then the forwarding rate of vpn-fwd vs dpdk-testpmd on net_null devices.
# usage: tools/demo.sh [pings]
set -euo pipefail
cd "$(dirname "$0")/.."
PINGS=${1:-50}
bash tools/setup.sh
cargo build --release -q -p appliance --bin vpn-dp --bin vpn-fwd

D=$(mktemp -d)
cleanup() {
  [ -f "$D/dp.pid" ] && kill "$(cat "$D/dp.pid")" 2>/dev/null || true
  sleep 0.5
  for ns in vt-demo-cgw vt-demo-dp vt-demo-vpc; do ip netns del $ns 2>/dev/null || true; done
  rm -rf "$D"
}
trap cleanup EXIT
[ -n "${DEMO_DEBUG:-}" ] && trap 'cat "$D/dp.err" "$D/dp.out" >&2; cleanup' EXIT
for ns in vt-demo-cgw vt-demo-dp vt-demo-vpc; do ip netns del $ns 2>/dev/null || true; ip netns add $ns; ip -n $ns link set lo up; done
ip link add dm-cgw netns vt-demo-cgw type veth peer name dm-out netns vt-demo-dp
ip link add dm-vpc netns vt-demo-vpc type veth peer name dm-in netns vt-demo-dp
for pair in vt-demo-cgw:dm-cgw vt-demo-dp:dm-out vt-demo-vpc:dm-vpc vt-demo-dp:dm-in; do
  ns=${pair%%:*} dev=${pair##*:}
  ip netns exec $ns sysctl -qw net.ipv6.conf.$dev.disable_ipv6=1
  ip netns exec $ns ethtool -K $dev tx off >/dev/null 2>&1 || true
  ip -n $ns link set $dev up
done
ip -n vt-demo-cgw addr add 192.0.2.2/24 dev dm-cgw
ip -n vt-demo-vpc addr add 198.51.100.2/24 dev dm-vpc
ip -n vt-demo-vpc route add 203.0.113.0/24 via 198.51.100.1
cat > "$D/static.toml" <<CONF
[ports]
outside = "net_af_packet0,iface=dm-out"
inside = "net_af_packet1,iface=dm-in"

[addresses]
outside = ["192.0.2.1"]
inside = ["198.51.100.1"]
outside_gateway_mac = "$(ip netns exec vt-demo-cgw cat /sys/class/net/dm-cgw/address)"
inside_gateway_mac = "$(ip netns exec vt-demo-vpc cat /sys/class/net/dm-vpc/address)"

[[tunnels]]
id = 0
algorithm = "aes128gcm16"
local = "192.0.2.1"
remote = "192.0.2.2"
outbound = { spi = 4097, key = "000102030405060708090a0b0c0d0e0f10111213" }
inbound = { spi = 8194, key = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3" }

[[routes]]
prefix = "203.0.113.0/24"
target = "tunnel:0"

[[routes]]
prefix = "198.51.100.0/24"
target = "inside"
CONF
echo "== vpn-dp: tunnel 0 (AES-128-GCM) 192.0.2.1 <-> 192.0.2.2, 203.0.113.0/24 behind it, VPC 198.51.100.0/24 inside"
ip netns exec vt-demo-dp target/release/vpn-dp --config "$D/static.toml" --file-prefix vt-demo > "$D/dp.out" 2> "$D/dp.err" &
echo $! > "$D/dp.pid"
for i in $(seq 100); do ip netns exec vt-demo-cgw ping -c 1 -W 1 192.0.2.1 >/dev/null 2>&1 || true; ip -n vt-demo-cgw neigh show 192.0.2.1 | grep -q lladdr && break; sleep 0.2; done
echo "== customer gateway (scapy ESP): $PINGS pings 203.0.113.5 -> 198.51.100.2 through the tunnel"
ip netns exec vt-demo-cgw python3 tests/esp/peer.py dm-cgw aes128gcm16 0 192.0.2.2 192.0.2.1 \
  8194 a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3 - 4097 000102030405060708090a0b0c0d0e0f10111213 - \
  203.0.113.5 198.51.100.2 "$PINGS"
kill "$(cat "$D/dp.pid")"; wait "$(cat "$D/dp.pid")" 2>/dev/null || true; rm -f "$D/dp.pid"
echo "== vpn-dp counters"
cat "$D/dp.out"
echo "== forwarding rate: vpn-fwd vs dpdk-testpmd (io mode, net_null pair, one core each)"
bash bench/scripts/fwd-vs-testpmd.sh 3 1
