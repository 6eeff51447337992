#!/usr/bin/env bash
# Forwarding rate of vpn-fwd vs dpdk-testpmd (io mode) on the same virtual
# devices, one forwarding core each, alternating runs in one invocation.
#
# usage: bench/scripts/fwd-vs-testpmd.sh [seconds-per-run] [rounds] [devices]
#   devices: null (net_null pair, default) | ring (net_ring pair via vdev args)
# Prints one line per run and the ratio of the medians (ours / testpmd).
set -euo pipefail
SECS=${1:-5}
ROUNDS=${2:-3}
DEV=${3:-null}
cd "$(dirname "$0")/../.."
cargo build --release -q -p appliance --bin vpn-fwd
FWD=target/release/vpn-fwd

case "$DEV" in
  null) VDEVS=(--vdev=net_null0 --vdev=net_null1) ;;
  *) echo "unknown device set: $DEV" >&2; exit 2 ;;
esac

mem=(--no-huge -m 512)
if grep -qs ' /dev/hugepages hugetlbfs ' /proc/mounts && [ "$(cat /sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages 2>/dev/null || echo 0)" -ge 256 ]; then
  mem=(-m 256 --huge-unlink)
fi
ours=() theirs=()
for r in $(seq "$ROUNDS"); do
  # testpmd: per-port Tx-pps every second; sum the ports per period, skip the first period.
  pfx=bench-tp-$$-$r
  timeout -s INT $((SECS + 2)) dpdk-testpmd -l 0-1 -n 1 --no-pci "${mem[@]}" --file-prefix=$pfx --log-level=warning \
      "${VDEVS[@]}" -- --forward-mode=io --nb-cores=1 -a --stats-period 1 --total-num-mbufs 8192 \
      > /tmp/$pfx.log 2>&1 || true
  rm -rf /var/run/dpdk/$pfx
  tp=$(awk '/Tx-pps:/ { s += $2; n++; if (n % 2 == 0) { p++; if (p > 1) { sum += s; k++ } s = 0 } }
            END { if (k) printf "%.3f", sum / k / 1e6; else print "nan" }' /tmp/$pfx.log)
  rm -f /tmp/$pfx.log
  # ours: the summary line's tx_mpps (after a 1 s warm-up).
  fw=$($FWD --file-prefix bench-fwd-$r "${VDEVS[@]}" --duration "$SECS" --stats-period 0 \
        $( [ "${mem[0]}" = --no-huge ] && echo --no-huge ) 2>/dev/null | sed -n 's/.*tx_mpps=\([0-9.]*\).*/\1/p')
  echo "round $r: vpn-fwd ${fw} Mpps, dpdk-testpmd ${tp} Mpps"
  ours+=("$fw") theirs+=("$tp")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mo=$(median "${ours[@]}") mt=$(median "${theirs[@]}")
echo "median: vpn-fwd $mo Mpps, dpdk-testpmd $mt Mpps, ratio $(awk -v a="$mo" -v b="$mt" 'BEGIN { printf "%.3f", a / b }')"
