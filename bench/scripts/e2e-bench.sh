#!/usr/bin/env bash
# End-to-end ESP through DPDK ports: vpn-dp (static-SA mode, one worker
# lcore) between two net_memif links to esp-loadgen (source + sink on the
# other core). Encap and decap, AES-128-GCM, inner sizes 64/512/1420/IMIX,
# with 1 tunnel and with TUNNELS_MANY tunnels; then the latency at 50 % of
# the 1-tunnel maximum; then the many/1 ratio once more with one SA and
# many alternating in one run (esp-loadgen --alternate, blocks of ALTERNATE
# packets: separate runs here differ by up to 2x, blocks milliseconds
# apart do not); then the in-memory ESP bench and the DPDK crypto ceiling
# in the same run, for the ratios.
#
# usage: bench/scripts/e2e-bench.sh [seconds-per-run]
#   env: TUNNELS_MANY (default 10000)  SIZES (default "64 512 1420 0"; 0 = IMIX)
#        ALTERNATE (default 16384; 0 skips the alternating runs)
#        SKIP_ESP=1 skips the in-memory bench part
#        VPN_DP=path runs that vpn-dp binary instead (e.g. an older build,
#        for a before/after in the same time window); binaries are taken
#        from $CARGO_TARGET_DIR when it is set
# Prints one JSON line per run, then a Markdown table.
set -euo pipefail
SECS=${1:-2}
TUNNELS_MANY=${TUNNELS_MANY:-10000}
SIZES=${SIZES:-64 512 1420 0}
ALTERNATE=${ALTERNATE:-16384}
cd "$(dirname "$0")/../.."
cargo build --release -q -p appliance --bin vpn-dp
cargo build --release -q -p bench --bin esp-loadgen
T=${CARGO_TARGET_DIR:-target}
DP=${VPN_DP:-$T/release/vpn-dp}
LG=$T/release/esp-loadgen

D=$(mktemp -d /tmp/vt-e2e-bench.XXXXXX)
DP_PID=
cleanup() {
  [ -n "$DP_PID" ] && kill "$DP_PID" 2>/dev/null && wait "$DP_PID" 2>/dev/null || true
  rm -rf "$D"
}
trap cleanup EXIT
RESULTS=$D/results.jsonl

# One run: a fresh vpn-dp (fresh SAs: sequence numbers from 1), one loadgen.
run() { # tunnels mode size rate-mpps [alternate]
  local tunnels=$1 mode=$2 size=$3 rate=$4 alt=${5:-0}
  rm -f "$D"/*.sock
  "$DP" --config "$D/dp-$tunnels.toml" --lcores 0,1 --no-huge --file-prefix vt-e2e-dp \
      > "$D/dp.out" 2> "$D/dp.err" &
  DP_PID=$!
  for _ in $(seq 200); do [ -S "$D/in.sock" ] && [ -S "$D/out.sock" ] && break; sleep 0.05; done
  local packets=1000000
  [ "$size" = 64 ] && packets=3000000
  # The loadgen prints its line, stops polling and waits for vpn-dp to
  # close first (net_memif can crash a side still polling when its peer
  # goes away).
  : > "$D/lg.json"
  "$LG" --dir "$D" --tunnels "$tunnels" --mode "$mode" --size "$size" \
      --seconds "$SECS" --packets "$packets" --rate-mpps "$rate" --alternate "$alt" \
      --file-prefix vt-e2e-lg \
      > "$D/lg.json" 2> "$D/lg.err" &
  local lg=$! line=
  for _ in $(seq 1200); do
    line=$(head -1 "$D/lg.json")
    [ -n "$line" ] && break
    kill -0 $lg 2>/dev/null || break
    sleep 0.1
  done
  kill "$DP_PID" 2>/dev/null || true; wait "$DP_PID" 2>/dev/null || true; DP_PID=
  wait $lg || true
  if [ -z "$line" ]; then
    echo "loadgen failed:" >&2; cat "$D/lg.err" "$D/dp.err" >&2; return 1
  fi
  local drops
  drops=$(grep -E '^(drop|esp_drop) ' "$D/dp.out" | tr '\n' ' ' || true)
  line=${line%\}},\"dp_drops\":\"${drops% }\"}
  echo "$line" | tee -a "$RESULTS"
}

echo "== $(date -u '+%F %T') UTC, load: $(cut -d' ' -f1-3 /proc/loadavg)"
for tunnels in 1 "$TUNNELS_MANY"; do
  "$LG" --dir "$D" --tunnels "$tunnels" --write-config "$D/dp-$tunnels.toml"
  for mode in encap decap; do
    for size in $SIZES; do run "$tunnels" "$mode" "$size" 0; done
  done
done
# Latency at half the 1-tunnel maximum.
for mode in encap decap; do
  for size in $SIZES; do
    max=$(python3 -c "import json,sys
for l in open('$RESULTS'):
    r=json.loads(l)
    if r['tunnels']==1 and r['mode'].lower()=='$mode' and r['size']==$size and r['rate_mpps']==0: print(r['mpps'])" | head -1)
    half=$(python3 -c "print(round($max*0.5, 3))")
    run 1 "$mode" "$size" "$half"
  done
done
# One SA and many alternating in one run (tunnel 0 alone, then the
# TUNNELS_MANY others round robin, block by block).
if [ "$ALTERNATE" -gt 0 ]; then
  mixed=$((TUNNELS_MANY + 1))
  "$LG" --dir "$D" --tunnels "$mixed" --write-config "$D/dp-$mixed.toml"
  for mode in encap decap; do
    for size in $SIZES; do run "$mixed" "$mode" "$size" 0 "$ALTERNATE"; done
  done
fi

ESP_OUT=$D/esp.out
if [ -z "${SKIP_ESP:-}" ]; then
  ONLY=AES-128-GCM bash bench/scripts/esp-bench.sh 5 100 > "$ESP_OUT" 2>&1 || true
fi
python3 - "$RESULTS" "$ESP_OUT" "$TUNNELS_MANY" <<'EOF'
import json, re, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
many = int(sys.argv[3])
# In-memory bench table rows: | AES-128-GCM | size | encap Gbps | Mpps | cyc | decap Gbps | ... | ring seal | dpdk | ...
mem = {}
try:
    for l in open(sys.argv[2]):
        c = [x.strip() for x in l.strip().strip('|').split('|')]
        if len(c) >= 10 and c[0] == 'AES-128-GCM' and re.match(r'^(\d+|IMIX)$', c[1]) and re.match(r'^[\d.]+$', c[2]):
            mem[c[1]] = dict(encap=float(c[2]), decap=float(c[5]), seal=float(c[8]), dpdk=float(c[9]) if c[9] not in ('n/a', '') else None)
except FileNotFoundError:
    pass
def name(s): return 'IMIX' if s == 0 else str(s)
def get(t, m, s, rate0=True):
    for r in rows:
        if r['tunnels'] == t and r['mode'].lower() == m and r['size'] == s and (r['rate_mpps'] == 0) == rate0 \
                and 'alt_ratio' not in r:
            return r
def alternating(m, s):
    for r in rows:
        if 'alt_ratio' in r and r['mode'].lower() == m and r['size'] == s:
            return f"{r['alt_ratio']:.2f}"
    return "n/a"
print()
print(f"| mode | inner B | 1 tunnel Gbps | Mpps | {many} tunnels Gbps | Mpps | {many}/1 | {many}/1 alternating | vs in-memory | vs ring seal | vs DPDK aesni_gcm | latency p50 / p99 / p99.9 us at 50 % |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for m in ('encap', 'decap'):
    for s in sorted({r['size'] for r in rows}, key=lambda x: x or 10**6):
        one, lots, lat = get(1, m, s), get(many, m, s), get(1, m, s, False)
        if not one: continue
        mm = mem.get(name(s), {})
        ratio = lambda a, b: f"{a / b:.2f}" if a and b else "n/a"
        lat_s = f"{lat['p50_ns']/1e3:.1f} / {lat['p99_ns']/1e3:.1f} / {lat['p999_ns']/1e3:.1f}" if lat and lat['latency_samples'] else "n/a"
        print(f"| {m} | {name(s)} | {one['gbps']:.2f} | {one['mpps']:.2f} | "
              f"{lots['gbps'] if lots else 0:.2f} | {lots['mpps'] if lots else 0:.2f} | {ratio(lots and lots['gbps'], one['gbps'])} | "
              f"{alternating(m, s)} | {ratio(one['gbps'], mm.get(m))} | {ratio(one['gbps'], mm.get('seal'))} | {ratio(one['gbps'], mm.get('dpdk'))} | {lat_s} |")
EOF
