#!/usr/bin/env bash
# The appliance's main job on this kind of machine: vpnd (DPDK dataplane on
# af_packet ports, kernel port on a tap, IKE on the control core) brings up
# an IKEv2 tunnel with a real strongSwan customer gateway (namespace
# vt-demo-cgw, its LAN 10.1.0.0/16), installs the Child SA into the
# dataplane, and a VPC host (namespace vt-demo-vpc) pings the gateway's LAN
# through it and back. Configured with vpnctl; `vpnctl show tunnels` is
# printed. Then the forwarding rate of vpn-fwd vs dpdk-testpmd.
# usage: tools/demo.sh [pings]     (DEMO_DEBUG=1 prints the daemons' logs)
set -euo pipefail
cd "$(dirname "$0")/.."
PINGS=${1:-20}
PSK=demo.PSK_0123456789
bash tools/setup.sh
cargo build --release -q -p appliance --bin vpnd --bin vpnctl --bin vpn-fwd

D=$(mktemp -d)
NS="vt-demo-cgw vt-demo-dp vt-demo-vpc"
cleanup() {
  for p in vpnd charon; do [ -f "$D/$p.pid" ] && kill "$(cat "$D/$p.pid")" 2>/dev/null || true; done
  sleep 1
  for ns in $NS; do ip netns del $ns 2>/dev/null || true; done
  rm -rf "$D"
}
trap cleanup EXIT
[ -n "${DEMO_DEBUG:-}" ] && trap 'cat "$D/vpnd.log" "$D/charon.log" >&2; cleanup' EXIT
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
ip -n vt-demo-cgw addr add 10.1.0.1/16 dev lo
ip -n vt-demo-vpc addr add 198.51.100.2/24 dev dm-vpc
ip -n vt-demo-vpc route add 10.1.0.0/16 via 198.51.100.1
# The DPDK ports' veths stay kernel interfaces: strict reverse-path filtering
# keeps the kernel from taking, besides the worker, what arrives on them.
ip netns exec vt-demo-dp sysctl -qw net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.dm-out.rp_filter=1 net.ipv4.conf.dm-in.rp_filter=1
mac() { ip netns exec "$1" cat "/sys/class/net/$2/address"; }

cat > "$D/vpnd.toml" <<CONF
[gateway]
id = "tgw-demo"
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
# The kernel port holds the outside addresses (vpnd's IKE sockets live
# there); the worker routes what the kernel sends out of it.
for i in $(seq 100); do ip -n vt-demo-dp link show dm-kernel >/dev/null 2>&1 && break; sleep 0.1; done
ip netns exec vt-demo-dp sysctl -qw net.ipv6.conf.dm-kernel.disable_ipv6=1
ip -n vt-demo-dp addr add 192.0.2.1/24 dev dm-kernel
ip -n vt-demo-dp addr add 192.0.2.3/24 dev dm-kernel
ip -n vt-demo-dp link set dm-kernel up
ip -n vt-demo-dp neigh replace 192.0.2.2 lladdr 02:00:00:00:00:02 dev dm-kernel nud permanent

echo "== strongSwan customer gateway 192.0.2.2, LAN 10.1.0.0/16 (kernel-libipsec: ESP in UDP 4500)"
cat > "$D/strongswan.conf" <<CONF
charon {
  load = random nonce openssl aes sha1 sha2 hmac gcm pem pkcs1 x509 pubkey kdf curve25519 kernel-libipsec kernel-netlink socket-default vici updown
  plugins { vici { socket = unix://$D/charon.vici } }
  filelog { stderr { default = 1 } }
}
charon-systemd { journal { default = -1 } }
CONF
cat > "$D/swanctl.conf" <<CONF
connections { vpn {
  version = 2
  local_addrs = 192.0.2.2
  remote_addrs = 192.0.2.1
  proposals = aes256gcm16-prfsha384-ecp384
  local { auth = psk }
  remote { auth = psk }
  children { net { local_ts = 10.1.0.0/16
                   remote_ts = 198.51.100.0/24
                   esp_proposals = aes256gcm16
                   mode = tunnel } }
} }
secrets { ike-1 { secret = "$PSK" } }
CONF
ip netns exec vt-demo-cgw env STRONGSWAN_CONF="$D/strongswan.conf" /usr/sbin/charon-systemd > "$D/charon.log" 2>&1 &
echo $! > "$D/charon.pid"
for i in $(seq 100); do [ -S "$D/charon.vici" ] && break; sleep 0.1; done
ip netns exec vt-demo-cgw swanctl --load-all --file "$D/swanctl.conf" --uri "unix://$D/charon.vici" >/dev/null

echo "== vpnctl: customer gateway, static connection to 10.1.0.0/16, tunnel 0 initiates"
ctl cgw create cgw-demo --ip-address 192.0.2.2 >/dev/null
ctl connection create vpn-demo --customer-gateway cgw-demo --routing static \
  --static-route 10.1.0.0/16 --tunnel0-outside-ip 192.0.2.1 --tunnel1-outside-ip 192.0.2.3 >/dev/null
ctl modify-tunnel-options vpn-demo 0 --set "pre_shared_key=$PSK" --set startup_action=start >/dev/null
for i in $(seq 300); do ctl --json show tunnels vpn-demo | grep -q '"UP"' && break; sleep 0.2; done
ctl show tunnels
echo "== VPC host 198.51.100.2 -> 10.1.0.1 behind strongSwan: $PINGS pings through the tunnel"
ip netns exec vt-demo-vpc ping -c "$PINGS" -i 0.05 -W 2 10.1.0.1 | tail -2
echo "== and back: 10.1.0.1 -> 198.51.100.2"
ip netns exec vt-demo-cgw ping -c 3 -i 0.2 -W 2 -I 10.1.0.1 198.51.100.2 | tail -2
ctl show sas
ctl logs --connection vpn-demo -n 8
echo "== forwarding rate: vpn-fwd vs dpdk-testpmd (io mode, net_null pair, one core each)"
bash bench/scripts/fwd-vs-testpmd.sh 3 1
