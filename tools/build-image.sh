#!/usr/bin/env bash
# Build the appliance's bootable disk image: GPT, UEFI (systemd-boot), a
# Debian 12 root made from Debian's packages plus the appliance's package
# (tools/build-deb.sh). Output: target/image/vpn-appliance.raw (and .qcow2).
#
#   bash tools/build-image.sh [--deb PKG.deb] [--authorized-key FILE] [--mgmt-address CIDR]
#                             [--isolcpus LIST] [--extra-cmdline ARGS] [--size 3G] [--out DIR]
#
# What the image is:
#   * partitions: an EFI system partition (FAT32: systemd-boot, the kernel,
#     the initrd, a loader entry) and the root (ext4), found by PARTUUID;
#   * kernel command line: serial console (ttyS0) and the VGA console,
#     hugepages as hugepages.conf asks (reserved at boot, while memory is
#     still unfragmented), IOMMU on (intel_iommu=on iommu=pt; AMD's is on
#     by default), and with --isolcpus LIST the worker cpus isolated
#     (isolcpus, nohz_full, rcu_nocbs; the build host cannot know the
#     target's cpus, so nothing is isolated by default);
#   * units: vpn-setup (hugepages), vpn-nics (PCI NICs onto vfio-pci), vpnd;
#     ssh and a getty on the serial console; systemd-networkd for the
#     management port: the virtio-net NIC (the DPDK ports are Intel NICs
#     bound to vfio-pci), DHCP, or --mgmt-address CIDR for a static address;
#   * first boot makes what is unique per box: machine-id (empty in the
#     image, systemd writes it) and the SSH host keys (none in the image;
#     vpn-firstboot.service runs ssh-keygen -A before ssh).
#   --extra-cmdline appends kernel arguments (the boot test under QEMU's TCG
#   needs no_timer_check: its interrupt-remapping vIOMMU fails the kernel's
#   timer check, and vfio wants interrupt remapping).
#   --authorized-key adds a key for root's SSH login (test images; an
#   appliance in production gets its operators' keys the same way).
#
# Built without loop devices or mounts: mmdebstrap makes the root in a
# directory, mkfs.ext4 -d and mtools fill the filesystems, sfdisk + dd lay
# out the disk. Needs root (mmdebstrap's chroot) and network to Debian's mirror.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

deb=""
key=""
size=3G
out="$root/target/image"
isolcpus=""
mgmt=""
extra=""
while [ $# -gt 0 ]; do
    case "$1" in
        --deb) deb="$2"; shift 2 ;;
        --authorized-key) key="$2"; shift 2 ;;
        --size) size="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --isolcpus) isolcpus="$2"; shift 2 ;;
        --mgmt-address) mgmt="$2"; shift 2 ;;
        --extra-cmdline) extra="$2"; shift 2 ;;
        *) echo "build-image: unknown option $1" >&2; exit 2 ;;
    esac
done
for tool in mmdebstrap mkfs.ext4 mkfs.vfat mcopy sfdisk qemu-img; do
    command -v "$tool" >/dev/null || { echo "build-image: $tool is missing (bash tools/setup.sh)" >&2; exit 1; }
done
if [ -z "$deb" ]; then
    deb=$(bash tools/build-deb.sh | tail -1)
fi
start=$(date +%s)
mkdir -p "$out"
work=$(mktemp -d "$out/build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Hugepages on the kernel command line, from hugepages.conf.
hp_size=$(sed -n 's/^size *= *"\(.*\)"/\1/p' hugepages.conf)
hp_count=$(sed -n 's/^count *= *\([0-9]*\)/\1/p' hugepages.conf)
cmdline="console=tty0 console=ttyS0,115200 rw quiet"
cmdline="$cmdline default_hugepagesz=$hp_size hugepagesz=$hp_size hugepages=$hp_count"
cmdline="$cmdline intel_iommu=on iommu=pt"
[ -z "$extra" ] || cmdline="$cmdline $extra"
if [ -n "$isolcpus" ]; then
    cmdline="$cmdline isolcpus=$isolcpus nohz_full=$isolcpus rcu_nocbs=$isolcpus"
fi

echo "build-image: Debian 12 root with $(basename "$deb")"
cp "$deb" "$work/vpn.deb"
[ -z "$key" ] || cp "$key" "$work/authorized_keys"
{
    echo "# The management port: the virtio-net NIC (DPDK takes the Intel NICs)."
    printf '[Match]\nDriver=virtio_net\n\n[Network]\n'
    if [ -n "$mgmt" ]; then echo "Address=$mgmt"; else echo "DHCP=yes"; fi
} > "$work/mgmt.network"
# shellcheck disable=SC2016 # the hooks' $1 is mmdebstrap's root directory
mmdebstrap --quiet --variant=important --components=main \
    --include=linux-image-amd64,systemd-sysv,systemd-boot,udev,dbus,openssh-server,iproute2,kmod,pciutils,less,ca-certificates \
    --customize-hook="copy-in $work/vpn.deb /tmp" \
    --customize-hook='chroot "$1" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q /tmp/vpn.deb' \
    --customize-hook='rm -f "$1"/tmp/vpn.deb' \
    --customize-hook='upload '"$root"'/packaging/image/vpn-firstboot.service /etc/systemd/system/vpn-firstboot.service' \
    --customize-hook='upload '"$work"'/mgmt.network /etc/systemd/network/80-mgmt.network' \
    --customize-hook='chroot "$1" systemctl enable vpn-firstboot.service systemd-networkd.service serial-getty@ttyS0.service' \
    --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
    --customize-hook='echo vpn-appliance > "$1"/etc/hostname' \
    --customize-hook='truncate -s 0 "$1"/etc/machine-id; rm -f "$1"/var/lib/dbus/machine-id' \
    --customize-hook='if [ -f '"$work"'/authorized_keys ]; then install -d -m 0700 "$1"/root/.ssh; install -m 0600 '"$work"'/authorized_keys "$1"/root/.ssh/authorized_keys; fi' \
    bookworm "$work/root" \
    "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian bookworm-updates main" \
    "deb http://deb.debian.org/debian-security bookworm-security main"

kver=$(ls "$work/root/lib/modules" | sort -V | tail -1)
[ -f "$work/root/boot/vmlinuz-$kver" ] && [ -f "$work/root/boot/initrd.img-$kver" ] || {
    echo "build-image: no kernel/initrd for $kver in the root" >&2; exit 1; }

# Disk layout: 1 MiB alignment, ESP 128 MiB, the rest root.
esp_mib=128
total_mib=$(( $(numfmt --from=iec "$size") / 1048576 ))
root_mib=$(( total_mib - esp_mib - 2 ))
root_uuid=$(cat /proc/sys/kernel/random/uuid)
esp_uuid=$(cat /proc/sys/kernel/random/uuid)

echo "build-image: root filesystem (${root_mib} MiB)"
fstab="PARTUUID=$root_uuid / ext4 defaults,errors=remount-ro 0 1
PARTUUID=$esp_uuid /boot/efi vfat umask=0077 0 2"
echo "$fstab" > "$work/root/etc/fstab"
mkdir -p "$work/root/boot/efi"
mkfs.ext4 -q -F -L root -d "$work/root" "$work/root.img" "${root_mib}M"

echo "build-image: EFI system partition"
mkfs.vfat -F 32 -n ESP -C "$work/esp.img" $(( esp_mib * 1024 )) >/dev/null
cat > "$work/loader.conf" <<CONF
default vpn-appliance.conf
timeout 1
console-mode keep
CONF
cat > "$work/entry.conf" <<CONF
title   VPN appliance (Debian 12, $kver)
linux   /vmlinuz
initrd  /initrd.img
options root=PARTUUID=$root_uuid $cmdline
CONF
export MTOOLS_SKIP_CHECK=1
mmd -i "$work/esp.img" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries
mcopy -i "$work/esp.img" "$work/root/usr/lib/systemd/boot/efi/systemd-bootx64.efi" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$work/esp.img" "$work/loader.conf" ::/loader/loader.conf
mcopy -i "$work/esp.img" "$work/entry.conf" ::/loader/entries/vpn-appliance.conf
mcopy -i "$work/esp.img" "$work/root/boot/vmlinuz-$kver" ::/vmlinuz
mcopy -i "$work/esp.img" "$work/root/boot/initrd.img-$kver" ::/initrd.img

echo "build-image: GPT disk"
img="$out/vpn-appliance.raw"
rm -f "$img"
truncate -s "${total_mib}M" "$img"
sfdisk --quiet "$img" <<PART
label: gpt
start=1MiB, size=${esp_mib}MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$esp_uuid, name=esp
start=$(( esp_mib + 1 ))MiB, size=${root_mib}MiB, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$root_uuid, name=root
PART
dd if="$work/esp.img" of="$img" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$work/root.img" of="$img" bs=1M seek=$(( esp_mib + 1 )) conv=notrunc,sparse status=none
qemu-img convert -O qcow2 "$img" "$out/vpn-appliance.qcow2"
echo "build-image: $img ($(du -h --apparent-size "$img" | cut -f1), $(du -h "$out/vpn-appliance.qcow2" | cut -f1) as qcow2) in $(( $(date +%s) - start )) s; kernel $kver; cmdline: $cmdline"
