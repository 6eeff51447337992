#!/usr/bin/env bash
# Build the appliance's Debian package: vpnd, vpnctl and vpn-setup (release
# build), their systemd units, the sysusers file, hugepages.conf, a default
# configuration and the docs, as target/debian/vpn-concentrator_<version>_amd64.deb.
#
#   bash tools/build-deb.sh [--version V] [--no-build] [--out DIR]
#
# --version  the package version (default: the workspace version plus the
#            commit date and hash, e.g. 0.1.0+git20261206.d743a1f)
# --no-build package the release binaries already in target/release
#
# The runtime dependencies are computed from the binaries' shared libraries
# (dpkg-shlibdeps), so the package asks for exactly the DPDK and
# intel-ipsec-mb libraries it was linked against. Plain dpkg-deb rather
# than cargo-deb: the maintainer scripts (sysusers, units, upgrades that
# keep the configuration store) are the part that needs care, and they are
# shorter to read here than as cargo-deb metadata.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

version=""
build=1
out="$root/target/debian"
while [ $# -gt 0 ]; do
    case "$1" in
        --version) version="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        --out) out="$2"; shift 2 ;;
        *) echo "build-deb: unknown option $1" >&2; exit 2 ;;
    esac
done
if [ -z "$version" ]; then
    base=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
    if git rev-parse --git-dir >/dev/null 2>&1; then
        version="$base+git$(git log -1 --format=%cd --date=format:%Y%m%d%H%M).$(git rev-parse --short HEAD)"
    else
        version="$base"
    fi
fi

bins=(vpnd vpnctl vpn-setup)
if [ "$build" = 1 ]; then
    cargo build --release --locked -p appliance $(printf -- '--bin %s ' "${bins[@]}")
fi

pkg=vpn-concentrator
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
d="$stage/$pkg"
install -d "$d/DEBIAN" "$d/usr/bin" "$d/lib/systemd/system" "$d/usr/lib/sysusers.d" \
    "$d/etc/vpn" "$d/etc/default" "$d/usr/share/doc/$pkg" "$d/usr/share/$pkg"
for b in "${bins[@]}"; do
    install -m 0755 "target/release/$b" "$d/usr/bin/$b"
    strip --strip-unneeded "$d/usr/bin/$b"
done
install -m 0644 appliance/systemd/vpnd.service appliance/systemd/vpn-setup.service \
    appliance/systemd/vpn-nics.service "$d/lib/systemd/system/"
install -m 0644 appliance/systemd/vpnd.sysusers.conf "$d/usr/lib/sysusers.d/vpnd.conf"
install -m 0644 appliance/systemd/vpnd.default "$d/etc/default/vpnd"
install -m 0644 hugepages.conf "$d/etc/vpn/hugepages.conf"
install -m 0640 packaging/vpnd.toml "$d/etc/vpn/vpnd.toml"
install -m 0644 packaging/vpnd.toml "$d/usr/share/$pkg/vpnd.toml.default"
install -m 0644 control/examples/appliance.toml "$d/usr/share/doc/$pkg/appliance.toml.example"
install -m 0644 docs/management-api.md README.md "$d/usr/share/doc/$pkg/"
cat > "$d/usr/share/doc/$pkg/copyright" <<COPY
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: $pkg

Files: *
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
COPY

# Runtime dependencies from the linked libraries.
mkdir -p "$stage/shlibs/debian"
printf 'Source: %s\n\nPackage: %s\nArchitecture: amd64\n' "$pkg" "$pkg" > "$stage/shlibs/debian/control"
depends=$(cd "$stage/shlibs" && dpkg-shlibdeps -O $(printf "$d/usr/bin/%s " "${bins[@]}") 2>/dev/null \
    | sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { echo "build-deb: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

# DPDK loads its drivers as plugins, which no linker records: the PCI bus,
# the mempool handler, the kernel exception port (net_tap) and the PMDs of
# the NICs the appliance is built for (Intel e1000/ixgbe/i40e/ice, virtio).
pmds="librte-bus-pci23, librte-bus-vdev23, librte-mempool-ring23, librte-net-tap23, \
librte-net-e1000-23, librte-net-ixgbe23, librte-net-i40e23, librte-net-ice23, librte-net-virtio23"

size=$(du -sk --exclude=DEBIAN "$d" | cut -f1)
cat > "$d/DEBIAN/control" <<CTRL
Package: $pkg
Version: $version
Architecture: amd64
Maintainer: VPN appliance engineers <root@localhost>
Installed-Size: $size
Depends: $depends, $pmds, systemd, iproute2, kmod
Recommends: librte-net-af-packet23, librte-net-memif23, librte-net-ring23
Section: net
Priority: optional
Description: DPDK IPsec VPN concentrator (vpnd, vpnctl, vpn-setup)
 Terminates many route-based IPsec site-to-site tunnels (IKEv2, ESP with
 AES-GCM in DPDK poll-mode workers, BGP over the tunnels), managed with
 vpnctl. vpn-setup reserves hugepages and binds the configured PCI NICs to
 vfio-pci at boot.
CTRL
printf '%s\n' /etc/vpn/vpnd.toml /etc/vpn/hugepages.conf /etc/default/vpnd > "$d/DEBIAN/conffiles"

cat > "$d/DEBIAN/postinst" <<'SH'
#!/bin/sh
set -e
units="vpn-setup.service vpn-nics.service vpnd.service"
if [ "$1" = configure ]; then
    systemd-sysusers vpnd.conf >/dev/null 2>&1 || {
        getent group vpnd >/dev/null || groupadd --system vpnd
    }
    chgrp vpnd /etc/vpn/vpnd.toml 2>/dev/null || true
    install -d -m 0750 /var/lib/vpn
    # Enabled on the first installation only: an operator who disabled a
    # unit keeps it disabled across upgrades.
    if [ -z "$2" ]; then
        systemctl enable $units >/dev/null 2>&1 || true
    fi
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
        # An upgrade restarts a running vpnd on the new binary; its
        # configuration store is untouched.
        if [ -n "$2" ]; then
            systemctl try-restart vpnd.service || true
        fi
    fi
fi
exit 0
SH
cat > "$d/DEBIAN/prerm" <<'SH'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop vpnd.service || true
fi
exit 0
SH
cat > "$d/DEBIAN/postrm" <<'SH'
#!/bin/sh
set -e
units="vpn-setup.service vpn-nics.service vpnd.service"
case "$1" in
    remove)
        systemctl disable $units >/dev/null 2>&1 || true
        [ -d /run/systemd/system ] && systemctl daemon-reload || true
        ;;
    purge)
        systemctl disable $units >/dev/null 2>&1 || true
        # The configuration store and the NIC state are the appliance's
        # data: purge removes them with the configuration files.
        rm -f /etc/vpn/vpnd.snapshot /etc/vpn/vpnd.journal /etc/vpn/vpnd.toml.prev
        rm -rf /var/lib/vpn
        rmdir /etc/vpn 2>/dev/null || true
        ;;
esac
exit 0
SH
chmod 0755 "$d/DEBIAN/postinst" "$d/DEBIAN/prerm" "$d/DEBIAN/postrm"

mkdir -p "$out"
deb="$out/${pkg}_${version}_amd64.deb"
# Built under a name of its own, then renamed: two builds at once (the
# package test and the boot test) never leave a half-written package.
dpkg-deb --root-owner-group --build "$d" "$deb.tmp.$$" >/dev/null
mv -f "$deb.tmp.$$" "$deb"
echo "$deb"
