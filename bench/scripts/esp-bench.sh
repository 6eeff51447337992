#!/usr/bin/env bash
# ESP pipeline in memory vs the raw AES-GCM ceilings, one core, one table.
#
# usage: bench/scripts/esp-bench.sh [rounds] [round-ms]
#   env: CPU (default 1)       CPU the bench is pinned to; dpdk-test-crypto-perf
#                              runs its worker lcore on the same CPU (-l OTHER,CPU)
#        CP_OPS (default 1000000) operations per crypto-perf size
#        ONLY                  substring filter passed to the bench (--only)
#        CARGO_TARGET_DIR      default /work/target-bench
#
# Steps: build `bench/benches/esp.rs` (bench profile = release + LTO), run
# dpdk-test-crypto-perf --vdev crypto_aesni_gcm0 (throughput, burst 32,
# --no-pci --no-huge, unique --file-prefix; AES-128 and AES-256, sizes
# 64/512/1420 and IMIX 7:4:1 of 64/576/1500) three times: before the bench,
# half-way through its rounds and after its last round (the bench calls
# this script back with --cp-round). The bench, pinned with taskset,
# prints the table with the crypto-perf medians (ratios encap/decap vs
# ring raw seal and vs DPDK aesni_gcm), then the backend tables: raw
# AES-GCM on ring, intel-ipsec-mb direct (one packet per call) and
# intel-ipsec-mb's job API (one burst per call), the fastest of those and
# DPDK, the pipeline on each backend, and the target ratios (pipeline on
# ipsec-mb / fastest raw Gbps; / ipsec-mb raw burst packets per second).
# Takes about two minutes after the build.
set -euo pipefail
MODE=bench
if [ "${1:-}" = --cp-round ]; then MODE=cp; CSV=$2; shift 2; fi
ROUNDS=${1:-7}
ROUND_MS=${2:-100}
CPU=${CPU:-1}
CP_OPS=${CP_OPS:-1000000}
OTHER=$(( CPU == 0 ? 1 : 0 ))
SELF=$(realpath "$0")
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-bench}

# One dpdk-test-crypto-perf invocation; appends "KEYBITS,LABEL,<csv line>".
cp_run() { # key-bytes buffer-sizes imix-weights(or "")
  local kb=$1 sizes=$2 imix=$3 pfx="esp-bench-cp-$$-$RANDOM"
  local label=""
  [ -n "$imix" ] && label=IMIX
  dpdk-test-crypto-perf -l "$OTHER,$CPU" --no-pci --no-huge -m 128 --file-prefix="$pfx" \
      --log-level=error --vdev crypto_aesni_gcm0 -- \
      --devtype crypto_aesni_gcm --ptest throughput --optype aead --aead-algo aes-gcm \
      --aead-op encrypt --aead-key-sz "$kb" --aead-iv-sz 12 --aead-aad-sz 8 --digest-sz 16 \
      --buffer-sz "$sizes" ${imix:+--imix "$imix"} --burst-sz 32 --total-ops "$CP_OPS" \
      --silent --csv-friendly 2>/dev/null \
    | awk -F, -v k=$((kb * 8)) -v l="$label" '/^[0-9]+,/ { print k "," (l == "" ? $2 : l) "," $0 }' \
    >> "$CSV" || echo "dpdk-test-crypto-perf failed (key $kb, sizes $sizes)" >&2
  rm -rf "/var/run/dpdk/$pfx"
}
cp_round() {
  for kb in 16 32; do
    cp_run "$kb" 64,512,1420 ""
    cp_run "$kb" 64,576,1500 7,4,1   # IMIX 7:4:1 of 64/576/1500
  done
}

if [ "$MODE" = cp ]; then cp_round; exit 0; fi

echo "== $(date -u '+%Y-%m-%d %H:%M:%S UTC') $(uname -n), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "== lscpu: $(lscpu | sed -n 's/^Model name: *//p'); AES/AVX flags: $(grep -m1 -o -w -E 'aes|avx2|avx512f|vaes|vpclmulqdq|sha_ni' /proc/cpuinfo | sort -u | paste -sd' ')"
echo "== load before: $(uptime)"
ps -eo pcpu,comm --sort=-pcpu | awk 'NR > 1 && $1 >= 10 { printf "   busy: %s %s%%\n", $2, $1 }'

# The bench's own executable: cargo also lists the package's binaries it
# built on the way (esp-loadgen, ike-setup-peer), in no fixed order.
BIN=$(cargo bench -q -p bench --bench esp --no-run --message-format=json 2>/dev/null \
      | python3 -c 'import json, sys
for l in sys.stdin:
    m = json.loads(l)
    t = m.get("target") or {}
    if m.get("executable") and t.get("name") == "esp" and "bench" in t.get("kind", []):
        print(m["executable"])' | tail -1)
[ -x "$BIN" ] || { echo "bench binary not built" >&2; exit 1; }

CSV=$(mktemp /tmp/esp-bench-dpdk.XXXXXX.csv)
trap 'rm -f "$CSV"' EXIT

cp_round
# The hook runs under taskset too: widen the mask again for the EAL.
taskset -c "$CPU" "$BIN" --rounds "$ROUNDS" --round-ms "$ROUND_MS" --dpdk-csv "$CSV" \
    --hook "taskset -c $OTHER,$CPU $(printf %q "$SELF") --cp-round $(printf %q "$CSV")" \
    ${ONLY:+--only "$ONLY"}

echo
echo "dpdk-test-crypto-perf samples (key bits/size: Gbps; run order within each size):"
awk -F, '{ printf "  %s/%s: %s\n", $1, $2, $11 }' "$CSV" | sort -t/ -k1,1n -k2,2 -s | paste -sd' ' | fold -s -w 110
echo "== load after: $(uptime)"
