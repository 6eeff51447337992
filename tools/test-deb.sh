#!/usr/bin/env bash
# The Debian package on a stock Debian 12: install, upgrade (the operator's
# configuration and the configuration store kept), remove (configuration
# kept), purge (everything gone). Runs in a throw-away Debian 12 root made
# with mmdebstrap from Debian's mirror (the same sources as this machine),
# so this machine's own /usr and /etc are never touched.
#
#   bash tools/test-deb.sh [PACKAGE.deb]
#
# Without a package it builds one (tools/build-deb.sh). Exit 0 when every
# check passed; the failing check is printed otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

deb="${1:-}"
if [ -z "$deb" ]; then
    deb=$(bash tools/build-deb.sh | tail -1)
fi
[ -f "$deb" ] || { echo "test-deb: no package at $deb" >&2; exit 1; }
for tool in mmdebstrap dpkg-deb; do
    command -v "$tool" >/dev/null || { echo "test-deb: $tool is missing (bash tools/setup.sh)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/vpn-test-deb.XXXXXX)
cleanup() {
    umount -R "$work/root/proc" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# The same package with a higher version: the upgrade path.
version=$(dpkg-deb -f "$deb" Version)
mkdir "$work/v2"
dpkg-deb -R "$deb" "$work/v2/pkg"
sed -i "s/^Version: .*/Version: ${version}.1/" "$work/v2/pkg/DEBIAN/control"
dpkg-deb --root-owner-group --build "$work/v2/pkg" "$work/v2.deb" >/dev/null

echo "test-deb: a Debian 12 root with mmdebstrap"
mmdebstrap --quiet --variant=apt \
    --components=main \
    bookworm "$work/root" \
    "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian bookworm-updates main" \
    "deb http://deb.debian.org/debian-security bookworm-security main"
cp "$deb" "$work/root/tmp/v1.deb"
cp "$work/v2.deb" "$work/root/tmp/v2.deb"
mount -t proc proc "$work/root/proc"
in_root() { chroot "$work/root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"; }
fail() { echo "test-deb: FAILED: $*" >&2; exit 1; }

cp /etc/resolv.conf "$work/root/etc/resolv.conf" 2>/dev/null || true
in_root apt-get update -q >"$work/update.log" 2>&1 || { cat "$work/update.log"; fail "apt-get update"; }

echo "test-deb: install $version"
in_root apt-get install -y -q /tmp/v1.deb >"$work/install.log" 2>&1 || { cat "$work/install.log"; fail "apt-get install"; }
for b in vpnd vpnctl vpn-setup; do
    in_root "$b" --version >/dev/null || fail "$b does not run (missing libraries?)"
done
in_root getent group vpnd >/dev/null || fail "group vpnd not created"
for u in vpnd vpn-setup vpn-nics; do
    [ -L "$work/root/etc/systemd/system/multi-user.target.wants/$u.service" ] || fail "$u.service not enabled"
done
[ -f "$work/root/etc/vpn/vpnd.toml" ] && [ -f "$work/root/etc/vpn/hugepages.conf" ] || fail "configuration files missing"
# The shipped configuration is one vpnd accepts (the example PCI addresses
# aside, which only vpn-nics checks).
in_root vpn-setup nics --status --config /etc/vpn/vpnd.toml >"$work/status.log" 2>&1 || { cat "$work/status.log"; fail "vpn-setup nics --status"; }
grep -q "outside: 0000:01:00.0" "$work/status.log" || fail "nics --status did not list the configured ports"

echo "test-deb: upgrade to ${version}.1 keeps the configuration"
echo "# edited by the operator" >>"$work/root/etc/vpn/vpnd.toml"
echo "store" >"$work/root/etc/vpn/vpnd.snapshot"
in_root systemctl disable vpn-nics.service >/dev/null 2>&1
in_root apt-get install -y -q /tmp/v2.deb >"$work/upgrade.log" 2>&1 || { cat "$work/upgrade.log"; fail "upgrade"; }
[ "$(in_root dpkg-query -W -f '${Version}' vpn-concentrator)" = "${version}.1" ] || fail "not upgraded"
grep -q "edited by the operator" "$work/root/etc/vpn/vpnd.toml" || fail "upgrade replaced the operator's vpnd.toml"
[ -f "$work/root/etc/vpn/vpnd.snapshot" ] || fail "upgrade removed the configuration store"
[ ! -e "$work/root/etc/systemd/system/multi-user.target.wants/vpn-nics.service" ] || fail "upgrade re-enabled a unit the operator disabled"

echo "test-deb: remove keeps the configuration, purge removes it"
in_root apt-get remove -y -q vpn-concentrator >"$work/remove.log" 2>&1 || { cat "$work/remove.log"; fail "remove"; }
[ ! -e "$work/root/usr/bin/vpnd" ] || fail "remove left /usr/bin/vpnd"
[ ! -e "$work/root/etc/systemd/system/multi-user.target.wants/vpnd.service" ] || fail "remove left vpnd.service enabled"
[ -f "$work/root/etc/vpn/vpnd.toml" ] && [ -f "$work/root/etc/vpn/vpnd.snapshot" ] || fail "remove deleted the configuration"
in_root dpkg --purge vpn-concentrator >"$work/purge.log" 2>&1 || { cat "$work/purge.log"; fail "purge"; }
[ ! -e "$work/root/etc/vpn" ] || { ls -la "$work/root/etc/vpn"; fail "purge left /etc/vpn"; }
[ ! -e "$work/root/var/lib/vpn" ] || fail "purge left /var/lib/vpn"
echo "test-deb: install, upgrade, remove and purge passed ($(du -k "$deb" | cut -f1) KiB package)"
