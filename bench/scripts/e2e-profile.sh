#!/usr/bin/env bash
# Where vpn-dp's worker spends its cycles end to end: the set-up of
# bench/scripts/e2e-bench.sh (vpn-dp on CPU 1 between two net_memif ports,
# esp-loadgen on CPU 0), `perf record` of the worker thread only during
# the run, its samples grouped into stages by symbol, each stage's share
# multiplied by the worker's own cycles per packet (its busy TSC cycles
# over the packets it received, printed by vpn-dp at exit).
#
# Stages (perf sees only what LTO left as functions; Debian's PMDs are
# stripped of their static functions), in bench/scripts/e2e-profile.py:
#   memif          the memif PMD, rx and tx (copies to and from the ring)
#   mempool        mbuf alloc/free behind it
#   rdtsc          the worker loop's time-stamp reads (a shim call each)
#   port calls     the shim's rte_eth_rx/tx_burst wrappers
#   mbuf calls     the shim's mbuf helpers (data slice, prepend, adj, ...)
#   crypto         AES-GCM (ring / aws-lc / intel-ipsec-mb symbols)
#   esp            ESP framing outside the cipher (dataplane::esp)
#   pipeline+loop  classify, look-ups, routing, counters, the burst and
#                  worker loops (inlined into the worker thread's closure)
#   libc, other
# An idle worker (one the load generator does not keep busy) spends its
# samples polling: rdtsc, port calls, memif and the loop grow with it.
#
# usage: bench/scripts/e2e-profile.sh [seconds] ["MODES"] ["SIZES"] [tunnels]
#   env: VPN_DP (a vpn-dp binary), TOP (symbols listed per run, default 12)
set -euo pipefail
SECS=${1:-3}
MODES=${2:-encap decap}
SIZES=${3:-64 1420}
TUNNELS=${4:-1}
cd "$(dirname "$0")/../.."
command -v perf >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q linux-perf >/dev/null
cargo build --release -q -p appliance --bin vpn-dp
cargo build --release -q -p bench --bin esp-loadgen
T=${CARGO_TARGET_DIR:-target}
DP=${VPN_DP:-$T/release/vpn-dp}
LG=$T/release/esp-loadgen
D=$(mktemp -d /tmp/bench-e2e-profile.XXXXXX)
DP_PID=
cleanup() {
  [ -n "$DP_PID" ] && kill "$DP_PID" 2>/dev/null && wait "$DP_PID" 2>/dev/null
  rm -rf "$D" "/var/run/dpdk/bench-profile-dp-$$"
}
trap cleanup EXIT
"$LG" --dir "$D" --tunnels "$TUNNELS" --write-config "$D/dp.toml"
echo "== $(date -u '+%F %T') UTC, load: $(cut -d' ' -f1-3 /proc/loadavg), $(lscpu | sed -n 's/^Model name: *//p')"
python3 - <<'PY'
import importlib.util
spec = importlib.util.spec_from_file_location("p", "bench/scripts/e2e-profile.py")
p = importlib.util.module_from_spec(spec); spec.loader.exec_module(p)
names = [n for n, _, _ in p.STAGES] + ["other"]
print("| mode | inner B | tunnels | Mpps | worker cyc/pkt | " + " | ".join(f"{n} cyc/pkt (share)" for n in names) + " |")
print("| --- | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in names) + " |")
PY
for mode in $MODES; do for size in $SIZES; do
  rm -f "$D"/*.sock
  "$DP" --config "$D/dp.toml" --lcores 0,1 --no-huge --file-prefix "bench-profile-dp-$$" \
      > "$D/dp.out" 2> "$D/dp.err" &
  DP_PID=$!
  for _ in $(seq 200); do [ -S "$D/in.sock" ] && [ -S "$D/out.sock" ] && break; sleep 0.05; done
  packets=1000000; [ "$size" = 64 ] && packets=3000000
  : > "$D/lg.json"
  "$LG" --dir "$D" --tunnels "$TUNNELS" --mode "$mode" --size "$size" --seconds "$SECS" \
      --packets "$packets" --file-prefix "bench-profile-lg" --esp-cache "$D/esp-$size.bin" \
      > "$D/lg.json" 2> "$D/lg.err" &
  lg=$!
  # The worker is the thread on lcore 1 (EAL names it after the lcore).
  tid=
  for _ in $(seq 100); do
    tid=$(ps -L -o tid=,comm= -p "$DP_PID" | awk '$2 ~ /worker-1$/ { print $1 }')
    [ -n "$tid" ] && break; sleep 0.05
  done
  # Record while the traffic flows: from the sink's first packet (link
  # up + prepared ESP) for most of the run.
  for _ in $(seq 600); do
    [ -s "$D/lg.err" ] && grep -q 'prepared' "$D/lg.err" || [ "$mode" = encap ] && break
    sleep 0.1
  done
  sleep 0.5
  perf record -q -F 4999 -t "$tid" -o "$D/perf.data" -- sleep "$(awk -v s="$SECS" 'BEGIN { print s * 0.6 }')" \
      2> "$D/perf.err" || true
  for _ in $(seq 1200); do [ -s "$D/lg.json" ] && break; kill -0 $lg 2>/dev/null || break; sleep 0.1; done
  kill "$DP_PID" 2>/dev/null; wait "$DP_PID" 2>/dev/null; DP_PID=
  wait $lg || true
  cpp=$(awk '/^worker 0:/ { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
             if (v["rx"] > 0) printf "%.0f", v["busy_cycles"] / v["rx"] }' "$D/dp.out")
  mpps=$(python3 -c "import json; print(json.load(open('$D/lg.json'))['mpps'])" 2>/dev/null || echo 0)
  perf report -i "$D/perf.data" --no-children --sort dso,sym --stdio -q 2>/dev/null \
      | python3 bench/scripts/e2e-profile.py "$mode" "$size" "$TUNNELS" "${cpp:-0}" "$mpps" "${TOP:-12}"
done; done
