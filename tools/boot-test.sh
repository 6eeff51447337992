#!/usr/bin/env bash
# Boot test of the appliance image: QEMU (TCG: this machine's /dev/kvm does
# not run a stock kernel) with OVMF boots the image that tools/build-image.sh
# makes; vpnd runs under systemd on two Intel e1000e PCI NICs (82574L,
# DPDK's net_e1000_em) that vpn-setup nics binds to vfio-pci behind an
# emulated Intel IOMMU with interrupt remapping (vfio's normal mode, as on
# real hardware; no-IOMMU mode is not used). The NICs are tap devices on
# this host, moved into namespaces the test makes:
#
#   vt-boot-q  qemu; tap "tapm" 192.168.77.1/24 <-> the VM's virtio-net
#              management port 192.168.77.2 (ssh with a key made here)
#   vt-boot-c  tap "tapo" 192.0.2.2 <-> the VM's outside e1000e:
#              strongSwan + BIRD customer gateway, LAN 10.1.0.0/16 (tools/lib/cgw.sh)
#   vt-boot-v  tap "tapi" 198.51.100.2 <-> the VM's inside e1000e: the VPC host
#
# Checks: first boot made the machine id and SSH host keys; the configured
# PCI NICs are on vfio-pci and vpnd drives them (`vpnctl show ports`: the
# PCI devices, link up); a dynamic connection made
# with vpnctl inside the VM brings both tunnels UP with BGP Established and
# ECMP; pings VPC -> LAN and LAN -> VPC; then the VM reboots: same machine
# id, configuration kept, tunnels back, traffic flows.
#
#   bash tools/boot-test.sh [IMAGE.qcow2]     (without: builds one)
# BOOT_DEBUG=1 prints the serial console and the logs on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/lib/cgw.sh
for tool in qemu-system-x86_64 ssh scp ssh-keygen charon-systemd bird swanctl; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || { echo "boot-test: $tool is missing (bash tools/setup.sh)" >&2; exit 1; }
done
ovmf_code=/usr/share/OVMF/OVMF_CODE_4M.fd
ovmf_vars=/usr/share/OVMF/OVMF_VARS_4M.fd
[ -f "$ovmf_code" ] || { echo "boot-test: OVMF is missing (bash tools/setup.sh)" >&2; exit 1; }

T=$(mktemp -d /tmp/vpn-boot.XXXXXX)
Q=vt-boot-q C=vt-boot-c V=vt-boot-v
start=$(date +%s)
step() { echo "boot-test [$(( $(date +%s) - start )) s]: $*"; }
cleanup() {
    local rc=$?
    if [ "$rc" != 0 ] && [ -n "${BOOT_DEBUG:-}" ]; then
        tail -c 20000 "$T/serial.log" 2>/dev/null | tr -d '\033' >&2 || true
        cat "$T/charon.log" "$T/bird.log" >&2 2>/dev/null || true
    fi
    cgw_stop "$T"
    [ -f "$T/qemu.pid" ] && kill "$(cat "$T/qemu.pid")" 2>/dev/null || true
    sleep 1
    for ns in $Q $C $V; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$T"
    exit "$rc"
}
trap cleanup EXIT
fail() { echo "boot-test: FAILED: $*" >&2; exit 1; }

ssh-keygen -q -t ed25519 -N "" -f "$T/key"
image="${1:-}"
if [ -z "$image" ]; then
    step "building the image"
    bash tools/build-image.sh --out "$T/image" --authorized-key "$T/key.pub" \
        --mgmt-address 192.168.77.2/24 --extra-cmdline no_timer_check | tail -1
    rm -f "$T/image/vpn-appliance.raw"
    image="$T/image/vpn-appliance.qcow2"
else
    cp "$image" "$T/disk.qcow2"
    image="$T/disk.qcow2"
fi
cp "$ovmf_vars" "$T/vars.fd"

for ns in $Q $C $V; do ip netns del "$ns" 2>/dev/null || true; ip netns add "$ns"; ip -n "$ns" link set lo up; done
for tap in tapm tapo tapi; do ip -n $Q tuntap add dev $tap mode tap; done
ip -n $Q addr add 192.168.77.1/24 dev tapm
ip -n $Q link set tapm up

step "booting (QEMU TCG, OVMF, q35 + intel-iommu, 2 e1000e + virtio-net)"
ip netns exec $Q qemu-system-x86_64 -accel tcg -cpu max -machine q35,kernel-irqchip=split \
    -smp 2 -m 2560 -display none -monitor none -serial "file:$T/serial.log" \
    -drive if=pflash,format=raw,unit=0,readonly=on,file="$ovmf_code" \
    -drive if=pflash,format=raw,unit=1,file="$T/vars.fd" \
    -device intel-iommu,intremap=on \
    -drive if=virtio,format=qcow2,file="$image" \
    -netdev tap,id=m,ifname=tapm,script=no,downscript=no -device virtio-net-pci,netdev=m,addr=0x2 \
    -netdev tap,id=o,ifname=tapo,script=no,downscript=no -device e1000e,netdev=o,addr=0x4 \
    -netdev tap,id=i,ifname=tapi,script=no,downscript=no -device e1000e,netdev=i,addr=0x5 \
    >"$T/qemu.log" 2>&1 &
echo $! > "$T/qemu.pid"
# QEMU holds the taps open; they keep working in the namespaces they move to.
for i in $(seq 50); do ip -n $Q link show tapo 2>/dev/null | grep -q UP && break; sleep 0.2; done
ip -n $Q link set tapo netns $C
ip -n $Q link set tapi netns $V
ip -n $C link set tapo up
ip -n $V link set tapi up
ip -n $C addr add 192.0.2.2/24 dev tapo
ip -n $V addr add 198.51.100.2/24 dev tapi
ip -n $V route add 10.1.0.0/16 via 198.51.100.1
for ns_dev in $C:tapo $V:tapi; do ip netns exec "${ns_dev%%:*}" sysctl -qw "net.ipv6.conf.${ns_dev##*:}.disable_ipv6=1"; done

vm() { ip netns exec $Q ssh -i "$T/key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o LogLevel=ERROR -o ConnectTimeout=5 -o BatchMode=yes root@192.168.77.2 "$@"; }
wait_ssh() {
    local i
    for i in $(seq "$1"); do vm true 2>/dev/null && return 0; sleep 2; done
    return 1
}
wait_tunnels() {
    local i
    for i in $(seq "$1"); do
        [ "$(vm vpnctl --json show bgp 2>/dev/null | grep -Eo '"prefixes_received": ?[1-9]' | wc -l)" -ge 2 ] &&
            vm vpnctl --json show routes 2>/dev/null | grep -q '10.1.0.0/16' && return 0
        sleep 2
    done
    return 1
}
pings() {
    local got
    got=$(ip netns exec $V ping -c 10 -i 0.2 -W 3 10.1.0.1 | sed -n 's/.* \([0-9]*\) received.*/\1/p')
    [ "${got:-0}" -ge 8 ] || fail "VPC -> LAN: ${got:-0}/10 pings answered"
    got=$(ip netns exec $C ping -c 5 -i 0.3 -W 3 -I 10.1.0.1 198.51.100.2 | sed -n 's/.* \([0-9]*\) received.*/\1/p')
    [ "${got:-0}" -ge 4 ] || fail "LAN -> VPC: ${got:-0}/5 pings answered"
    step "pings VPC -> LAN and LAN -> VPC answered"
}

wait_ssh 300 || fail "no ssh to the VM within 600 s"
step "up: $(vm 'systemd-analyze | head -1')"
machine_id=$(vm cat /etc/machine-id)
[ ${#machine_id} = 32 ] || fail "first boot did not make a machine id: '$machine_id'"
vm test -s /etc/ssh/ssh_host_ed25519_key || fail "first boot did not make SSH host keys"
vm 'grep -q "HugePages_Total: *512" /proc/meminfo' || fail "hugepages not reserved by the kernel command line"
vm 'test "$(ls /sys/kernel/iommu_groups | wc -l)" -gt 0' || fail "no IOMMU groups in the VM"

step "vpnd configuration for the PCI NICs 0000:00:04.0 (outside) and 0000:00:05.0 (inside)"
cat > "$T/vpnd.toml" <<CONF
[gateway]
id = "tgw-boot"
asn = 64512
outside_addresses = ["192.0.2.1", "192.0.2.3"]
local_networks = ["198.51.100.0/24"]

[dataplane]
main_lcore = 0
worker_lcores = [1]
outside_next_hop_mac = "$(ip netns exec $C cat /sys/class/net/tapo/address)"
inside_next_hop_mac = "$(ip netns exec $V cat /sys/class/net/tapi/address)"
inside_addresses = ["198.51.100.1"]

[[dataplane.ports]]
name = "wan"
device = "0000:00:04.0"
role = "outside"

[[dataplane.ports]]
name = "lan"
device = "0000:00:05.0"
role = "inside"

[[dataplane.ports]]
name = "kernel"
device = "net_tap0,iface=vpnk"
role = "kernel"

[management]
socket_path = "/run/vpnd/control.sock"
socket_group = "vpnd"

[metrics]
enabled = false
CONF
ip netns exec $Q scp -q -i "$T/key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o LogLevel=ERROR "$T/vpnd.toml" root@192.168.77.2:/etc/vpn/vpnd.toml
vm systemctl restart vpn-nics.service vpnd.service || { vm journalctl -u vpn-nics -u vpnd --no-pager -n 40 >&2; fail "vpn-nics or vpnd did not start"; }
vm vpn-setup nics --status | grep -q "wan: 0000:00:04.0 on vfio-pci" || fail "the outside NIC is not on vfio-pci"
vm vpn-setup nics --status | grep -q "lan: 0000:00:05.0 on vfio-pci" || fail "the inside NIC is not on vfio-pci"
vm 'journalctl -u vpnd --no-pager' | grep -q "outside port 0000:00:04.0" || fail "vpnd did not start the outside PCI port"

step "customer gateway (strongSwan + BIRD) and the connection through vpnctl in the VM"
cgw_start $C "$T"
cgw_configure_vpnd vm vpnctl
wait_tunnels 150 || { vm vpnctl show tunnels >&2; fail "tunnels/BGP not up within 300 s"; }
vm vpnctl show tunnels
vm vpnctl show routes
pings
vm vpnctl show ports
vm vpnctl show ports | grep -qE "^wan +0000:00:04\.0 +up " || fail "show ports: the outside PCI port is not up"
vm vpnctl show ports | grep -qE "^lan +0000:00:05\.0 +up " || fail "show ports: the inside PCI port is not up"
vm vpnctl show ports | grep -qE "^wan .* rx-ipv4-cksum,tx-ipv4-cksum " || fail "show ports: the e1000e outside port does not use its IPv4 checksum offloads"

step "reboot"
vm systemctl reboot || true
for i in $(seq 60); do vm true 2>/dev/null || break; sleep 2; done
wait_ssh 300 || fail "no ssh after the reboot within 600 s"
step "up again: $(vm 'systemd-analyze | head -1')"
[ "$(vm cat /etc/machine-id)" = "$machine_id" ] || fail "the machine id changed across the reboot"
vm vpnctl show tunnels | grep -q vpn-demo || fail "the configuration was not kept across the reboot"
wait_tunnels 150 || { vm vpnctl show tunnels >&2; fail "tunnels/BGP not back within 300 s of the reboot"; }
vm vpnctl show tunnels
pings
step "passed"
