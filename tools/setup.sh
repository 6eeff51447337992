#!/usr/bin/env bash
# Installs what building, testing and running the appliance here needs
# (Debian 12, as root) and reserves hugepages from hugepages.conf.
# Idempotent: a second run changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  # DPDK 22.11 (libraries, PMDs, dpdk-testpmd, dpdk-test-crypto-perf) and what bindgen needs
  dpdk dpdk-dev libdpdk-dev pkg-config clang libclang-dev
  # intel-ipsec-mb 1.3: the second ESP crypto backend (ffi/ipsec-mb-sys binds it)
  libipsec-mb-dev
  # test plumbing: namespaces, veth, captures, ping
  iproute2 ethtool tcpdump iputils-ping procps python3 python3-pip python3-venv
  # real peers for the interop tests: strongSwan with userspace ESP (kernel-libipsec), BIRD 2
  strongswan-swanctl charon-systemd strongswan-charon libcharon-extra-plugins
  libstrongswan-standard-plugins libstrongswan-extra-plugins strongswan-pki bird2
  # the Debian package and its test in a throw-away Debian root (tools/build-deb.sh, tools/test-deb.sh)
  dpkg-dev mmdebstrap
  # the disk image and its boot test under QEMU/OVMF (tools/build-image.sh, tests/tests/boot.rs)
  qemu-system-x86 qemu-utils ovmf mtools dosfstools fdisk e2fsprogs openssh-client
  # the real OpenVPN 2.6 client for the remote-access interop tests
  openvpn
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo-nextest >/dev/null 2>&1 && ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

# The fuzz targets (tools/fuzz.sh): a nightly toolchain for libFuzzer's
# sanitizer flags, and cargo-fuzz.
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "setup: installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "setup: installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi
# scapy: the independent ESP implementation the cross-checks use.
if ! python3 -c "import scapy.layers.ipsec, cryptography" >/dev/null 2>&1; then
  echo "setup: installing scapy"
  python3 -m pip install -q scapy cryptography || pip3 install -q --break-system-packages scapy cryptography
fi

# Hugepages through the appliance's own set-up tool; the appliance falls
# back to --no-huge (and says so) where they cannot be had.
cargo build -q -p appliance --bin vpn-setup
target/debug/vpn-setup hugepages --conf hugepages.conf || \
  echo "setup: hugepages unavailable here; DPDK processes will use --no-huge"
