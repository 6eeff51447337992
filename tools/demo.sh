#!/usr/bin/env bash
# The appliance's main job on this kind of machine: vpnd (DPDK dataplane on
# af_packet ports, kernel port on a tap, IKEv2 and BGP on the control core)
# brings up both tunnels of a dynamic-routing connection with a real
# customer gateway — strongSwan (kernel-libipsec) and BIRD 2 in namespace
# vt-demo-cgw, its LAN 10.1.0.0/16 — installs the Child SAs into the
# dataplane, runs a BGP session inside each tunnel (169.254.21.0/30 and
# 169.254.22.0/30), learns the LAN by BGP with ECMP over both tunnels, and a
# VPC host (namespace vt-demo-vpc) pings the LAN through the tunnels and
# back. Configured with vpnctl; `vpnctl show tunnels`, `show bgp` and
# `show routes` are printed. Then the forwarding rate of vpn-fwd vs
# dpdk-testpmd.
# usage: tools/demo.sh [pings]     (DEMO_DEBUG=1 prints the daemons' logs)
set -euo pipefail
cd "$(dirname "$0")/.."
PINGS=${1:-20}
. tools/lib/cgw.sh
bash tools/setup.sh
cargo build --release -q -p appliance --bin vpnd --bin vpnctl --bin vpn-fwd

D=$(mktemp -d)
NS="vt-demo-cgw vt-demo-dp vt-demo-vpc"
cleanup() {
  cgw_stop "$D"
  [ -f "$D/vpnd.pid" ] && kill "$(cat "$D/vpnd.pid")" 2>/dev/null || true
  sleep 1
  for ns in $NS; do ip netns del $ns 2>/dev/null || true; done
  rm -rf "$D"
}
trap cleanup EXIT
[ -n "${DEMO_DEBUG:-}" ] && trap 'cat "$D/vpnd.log" "$D/charon.log" "$D/bird.log" >&2; cleanup' EXIT
for ns in $NS; do ip netns del $ns 2>/dev/null || true; ip netns add $ns; ip -n $ns link set lo up; done
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
ip -n vt-demo-vpc route add 10.1.0.0/16 via 198.51.100.1
# The DPDK ports' veths stay kernel interfaces: strict reverse-path filtering
# keeps the kernel from taking, besides the worker, what arrives on them.
ip netns exec vt-demo-dp sysctl -qw net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.dm-out.rp_filter=1 net.ipv4.conf.dm-in.rp_filter=1
mac() { ip netns exec "$1" cat "/sys/class/net/$2/address"; }

cat > "$D/vpnd.toml" <<CONF
[gateway]
id = "tgw-demo"
asn = 64512
outside_addresses = ["192.0.2.1", "192.0.2.3"]
local_networks = ["198.51.100.0/24"]

[dataplane]
file_prefix = "vt-demo"
worker_lcores = [1]
outside_next_hop_mac = "$(mac vt-demo-cgw dm-cgw)"
inside_next_hop_mac = "$(mac vt-demo-vpc dm-vpc)"
inside_addresses = ["198.51.100.1"]

[[dataplane.ports]]
name = "wan"
device = "net_af_packet0,iface=dm-out"
role = "outside"

[[dataplane.ports]]
name = "lan"
device = "net_af_packet1,iface=dm-in"
role = "inside"

[[dataplane.ports]]
name = "kernel"
device = "net_tap0,iface=dm-kernel"
role = "kernel"

[management]
socket_path = "$D/control.sock"

[metrics]
enabled = false
CONF
echo "== vpnd: outside 192.0.2.1 (tunnel 0) / 192.0.2.3 (tunnel 1), VPC 198.51.100.0/24 inside"
ip netns exec vt-demo-dp target/release/vpnd --config "$D/vpnd.toml" --no-huge 2> "$D/vpnd.log" &
echo $! > "$D/vpnd.pid"
ctl() { target/release/vpnctl --socket "$D/control.sock" "$@"; }
for i in $(seq 300); do ctl ping >/dev/null 2>&1 && break; sleep 0.1; done
echo "== strongSwan customer gateway 192.0.2.2, LAN 10.1.0.0/16 (kernel-libipsec: ESP in UDP 4500), BIRD 2: AS 65001, announces the LAN over both tunnels"
cgw_start vt-demo-cgw "$D"

echo "== vpnctl: customer gateway (AS 65001), dynamic-routing connection, both tunnels initiated by vpnd"
cgw_configure_vpnd ctl
for i in $(seq 600); do
  # Both sessions up and each has the gateway's prefix (ECMP over both).
  [ "$(ctl --json show bgp | grep -Eo '"prefixes_received": ?[1-9]' | wc -l)" -ge 2 ] && \
    ctl --json show routes | grep -q '10.1.0.0/16' && break
  sleep 0.2
done
ctl show tunnels
ctl show bgp
ctl show routes
echo "== VPC host 198.51.100.2 -> 10.1.0.1 behind strongSwan: $PINGS pings through the tunnels"
ip netns exec vt-demo-vpc ping -c "$PINGS" -i 0.05 -W 2 10.1.0.1 | tail -2
echo "== and back: 10.1.0.1 -> 198.51.100.2 (BIRD learned the VPC prefix by BGP)"
ip netns exec vt-demo-cgw birdc -s "$D/bird.ctl" show route 198.51.100.0/24 | tail -n +2
ip netns exec vt-demo-cgw ping -c 3 -i 0.2 -W 2 -I 10.1.0.1 198.51.100.2 | tail -2
ctl show sas
ctl logs --connection vpn-demo -n 12
echo "== forwarding rate: vpn-fwd vs dpdk-testpmd (io mode, net_null pair, one core each)"
bash bench/scripts/fwd-vs-testpmd.sh 3 1
