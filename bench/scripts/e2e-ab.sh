#!/usr/bin/env bash
# Before/after of the end-to-end bench on a shared machine: alternates two
# (or more) vpn-dp builds run by run, 1 tunnel then TUNNELS_MANY tunnels for
# each (every other round in the reverse order of both), so every build
# sees the same time window; the same esp-loadgen and
# run as bench/scripts/e2e-bench.sh. Before each build's pair it waits (up
# to QUIET_MAX s) until no more than two tasks are runnable for 2 s. Prints
# one JSON line per run (with "bin" and "cpp", the worker's TSC cycles per
# packet: its busy cycles — bursts that held packets, rx to tx — over the
# packets it received, which the load generator's own speed does not
# move), then per build: best and median Gbps/Mpps with 1 and many tunnels,
# the many/1 ratios (best/best, median/median, median of the ratios paired
# round by round), and the worker's cycles per packet (medians) with their
# 1/many ratio (paired median): the many/1 throughput ratio of a worker
# that is the bottleneck.
#
# With ALTERNATE=N each build instead makes one run per round with
# TUNNELS_MANY + 1 tunnels, the load generator alternating blocks of N
# packets to tunnel 0 alone and round robin over the TUNNELS_MANY others
# (esp-loadgen --alternate): one SA and many are then timed milliseconds
# apart in the same run, and the table gives per build the medians of the
# one-SA and many-SA blocks' Mpps and of the runs' many/one ratios (each
# run's own: the median over its "many" blocks of their rate over the
# mean of the "one" blocks around them), with their range. The machine's
# drift, which moves separate runs by up to 2x here, cancels in it.
#
# usage: bench/scripts/e2e-ab.sh SECONDS ROUNDS "MODES" "SIZES" VPN_DP_A VPN_DP_B ...
#   e.g. bench/scripts/e2e-ab.sh 2 10 encap 1420 /tmp/vpn-dp.before target/release/vpn-dp
#   env: TUNNELS_MANY (default 10000), QUIET_MAX (default 30), ALTERNATE
#   (block size in packets, e.g. 16384; default 0: separate runs)
set -uo pipefail
SECS=$1; ROUNDS=$2; MODES=$3; SIZES=$4; shift 4
BINS=("$@")
cd "$(dirname "$0")/../.."
cargo build --release -q -p bench --bin esp-loadgen
LG=${CARGO_TARGET_DIR:-target}/release/esp-loadgen
MANY=${TUNNELS_MANY:-10000}
ALT=${ALTERNATE:-0}
MIXED=$((MANY + 1))
D=$(mktemp -d /tmp/vt-e2e-ab.XXXXXX)
DP_PID=
cleanup() {
  [ -n "$DP_PID" ] && kill "$DP_PID" 2>/dev/null && wait "$DP_PID" 2>/dev/null
  rm -rf "$D"
}
trap cleanup EXIT
for t in 1 "$MANY" "$MIXED"; do "$LG" --dir "$D" --tunnels "$t" --write-config "$D/dp-$t.toml"; done

quiet() {
  local ok=0 i=0 r
  QUIET=0
  while [ $i -lt $(( ${QUIET_MAX:-30} * 5 )) ]; do
    r=$(cut -d' ' -f4 /proc/loadavg); r=${r%/*}
    if [ "$r" -le 2 ]; then ok=$((ok + 1)); else ok=0; fi
    [ $ok -ge 10 ] && { QUIET=1; return; }
    sleep 0.2; i=$((i + 1))
  done
}

run() { # bin tunnels mode size [alternate]
  local bin=$1 tunnels=$2 mode=$3 size=$4 alt=${5:-0}
  rm -f "$D"/*.sock
  "$bin" --config "$D/dp-$tunnels.toml" --lcores 0,1 --no-huge --file-prefix vt-e2e-ab-dp \
      > "$D/dp.out" 2> "$D/dp.err" &
  DP_PID=$!
  for _ in $(seq 200); do [ -S "$D/in.sock" ] && [ -S "$D/out.sock" ] && break; sleep 0.05; done
  local packets=1000000
  [ "$size" = 64 ] && packets=3000000
  : > "$D/lg.json"
  "$LG" --dir "$D" --tunnels "$tunnels" --mode "$mode" --size "$size" --seconds "$SECS" \
      --packets "$packets" --rate-mpps 0 --alternate "$alt" --file-prefix vt-e2e-ab-lg \
      > "$D/lg.json" 2> "$D/lg.err" &
  local lg=$! line=
  for _ in $(seq 1200); do
    line=$(head -1 "$D/lg.json"); [ -n "$line" ] && break
    kill -0 $lg 2>/dev/null || break
    sleep 0.1
  done
  kill "$DP_PID" 2>/dev/null; wait "$DP_PID" 2>/dev/null; DP_PID=
  wait $lg
  if [ -z "$line" ]; then
    echo "loadgen failed ($bin $tunnels $mode $size):" >&2; cat "$D/lg.err" "$D/dp.err" >&2; return 1
  fi
  local cpp
  cpp=$(awk '/^worker 0:/ { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
             if (v["rx"] > 0) printf "%.1f", v["busy_cycles"] / v["rx"] }' "$D/dp.out")
  echo "{\"bin\":\"$bin\",\"quiet\":$QUIET,\"cpp\":${cpp:-0},\"at\":\"$(date -u +%T)\",\"load\":\"$(cut -d' ' -f1 /proc/loadavg)\",${line#\{}" \
    | tee -a "$D/results.jsonl"
}

echo "== $(date -u '+%F %T') UTC, load: $(cut -d' ' -f1-3 /proc/loadavg)"
REVERSED=()
for ((i = ${#BINS[@]} - 1; i >= 0; i--)); do REVERSED+=("${BINS[$i]}"); done
for round in $(seq "$ROUNDS"); do
  # Every other round in the opposite order (builds, and 1 / many
  # tunnels), so a drift within a round, or a first run after the quiet
  # wait that is slower than the next, favours neither side.
  order=("${BINS[@]}") counts=(1 "$MANY")
  if [ $((round % 2)) = 0 ]; then order=("${REVERSED[@]}") counts=("$MANY" 1); fi
  for mode in $MODES; do for size in $SIZES; do
    for bin in "${order[@]}"; do
      quiet
      if [ "$ALT" -gt 0 ]; then run "$bin" "$MIXED" "$mode" "$size" "$ALT"; continue; fi
      for t in "${counts[@]}"; do run "$bin" "$t" "$mode" "$size"; done
    done
  done; done
done
python3 - "$D/results.jsonl" <<'PY'
import collections, json, statistics as st, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
g = collections.defaultdict(list)
alt = collections.defaultdict(list)
for r in rows:
    if 'alt_ratio' in r:
        alt[(r['bin'], r['mode'].lower(), r['size'])].append(r)
    else:
        g[(r['bin'], r['mode'].lower(), r['size'], r['tunnels'] == 1)].append(r)
if alt:
    print()
    print("| build | mode | inner B | runs | one SA Mpps (median) | many SAs Mpps (median) | many/one, median of runs | range | block pairs per run |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (b, m, s), L in sorted(alt.items()):
        ratios = [x['alt_ratio'] for x in L]
        print(f"| {b} | {m} | {s or 'IMIX'} | {len(L)} | {st.median(x['one_mpps'] for x in L):.2f} | "
              f"{st.median(x['many_mpps'] for x in L):.2f} | {st.median(ratios):.2f} | "
              f"{min(ratios):.2f}–{max(ratios):.2f} | {min(x['alt_pairs'] for x in L)}–{max(x['alt_pairs'] for x in L)} |")
    sys.exit(0)
print()
print("| build | mode | inner B | runs | 1 tunnel Gbps best / median | Mpps | many Gbps best / median | Mpps | many/1 best | median | paired median | worker cyc/pkt 1 / many | 1/many paired |")
print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for (b, m, s) in sorted({k[:3] for k in g}):
    one, many = g[(b, m, s, True)], g[(b, m, s, False)]
    if not one or not many:
        continue
    gb = lambda L: [x['gbps'] for x in L]
    mp = lambda L: [x['mpps'] for x in L]
    pr = [y['gbps'] / x['gbps'] for x, y in zip(one, many)]
    cpp = lambda L: [x.get('cpp', 0) for x in L]
    cr = [x['cpp'] / y['cpp'] for x, y in zip(one, many) if x.get('cpp') and y.get('cpp')]
    print(f"| {b} | {m} | {s or 'IMIX'} | {len(one)} | {max(gb(one)):.2f} / {st.median(gb(one)):.2f} | "
          f"{max(mp(one)):.2f} / {st.median(mp(one)):.2f} | {max(gb(many)):.2f} / {st.median(gb(many)):.2f} | "
          f"{max(mp(many)):.2f} / {st.median(mp(many)):.2f} | {max(gb(many)) / max(gb(one)):.2f} | "
          f"{st.median(gb(many)) / st.median(gb(one)):.2f} | {st.median(pr):.2f} | "
          f"{st.median(cpp(one)):.0f} / {st.median(cpp(many)):.0f} | {st.median(cr) if cr else 0:.2f} |")
PY
