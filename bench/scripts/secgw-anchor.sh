#!/usr/bin/env bash
# The anchor of the end-to-end bench: vpn-dp against DPDK's ipsec-secgw
# example and dpdk-testpmd io on the same ports and CPU.
#
# Every gateway is the memif server of the two net_memif ports of
# vpn-dp's static file (port 0 = outside/ESP, port 1 = inside/plaintext)
# and forwards on CPU 1; esp-loadgen (source + sink, the same as
# bench/scripts/e2e-bench.sh) runs on CPU 0. The gateways, run one after
# the other in every round (every other round in the reverse order):
#   vpn-dp       static-SA mode, one worker lcore (--lcores 0,1)
#   secgw        ipsec-secgw, its default path: lookaside crypto through
#                a crypto_aesni_gcm vdev (enqueue/dequeue)
#   secgw-l      ipsec-secgw -l -w 1024: librte_ipsec with SAs of type
#                cpu-crypto (synchronous AES-GCM) and a 1024 replay window
#   testpmd      dpdk-testpmd --forward-mode=io between the same two
#                ports: what the ports and the load generator carry
# ipsec-secgw is built from Debian's dpdk-doc sources in a temporary
# directory, with one change: its default RX checksum offload, which the
# memif vdev lacks, is left out. Its SP/SA/route file is generated from
# vpn-dp's (bench/scripts/secgw-anchor.py): the same SPIs, keys and
# prefixes, AES-128-GCM, 1 tunnel and TUNNELS_MANY tunnels; plaintext
# enters on port 1 (protected), ESP on port 0 (in -u).
#
# Every run of an IPsec gateway samples what it sent (esp-loadgen
# --capture) and scapy checks it (ESP decrypted with the file's keys, ICV
# checked, into the load generator's plaintext; decap plaintext compared):
# a cell whose output fails is printed as BROKEN and not timed.
#
# usage: bench/scripts/secgw-anchor.sh [seconds-per-run] [rounds]
#   env: TUNNELS_MANY (default 10000), SIZES (default "64 1420"),
#        MODES (default "encap decap"), GATEWAYS (default
#        "vpn-dp secgw secgw-l testpmd"), VPN_DP (a vpn-dp binary)
# Prints one JSON line per run, then the table of medians (Mpps and Gbps
# of inner bytes, ratios vpn-dp / best ipsec-secgw and vpn-dp / testpmd),
# the CPU model and the load average.
set -euo pipefail
SECS=${1:-2}
ROUNDS=${2:-4}
MANY=${TUNNELS_MANY:-10000}
SIZES=${SIZES:-64 1420}
MODES=${MODES:-encap decap}
GATEWAYS=${GATEWAYS:-vpn-dp secgw secgw-l testpmd}
cd "$(dirname "$0")/../.."
HERE=$PWD
cargo build --release -q -p appliance --bin vpn-dp
cargo build --release -q -p bench --bin esp-loadgen
T=${CARGO_TARGET_DIR:-target}
DP=${VPN_DP:-$T/release/vpn-dp}
LG=$T/release/esp-loadgen
PY=bench/scripts/secgw-anchor.py
EXAMPLES=/usr/share/dpdk/examples
if [ ! -d $EXAMPLES/ipsec-secgw ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends dpdk-doc >/dev/null
fi
command -v dpdk-testpmd >/dev/null || { echo "dpdk-testpmd missing (package dpdk)" >&2; exit 1; }
python3 -c 'import scapy.layers.ipsec' || { echo "scapy missing" >&2; exit 1; }

D=$(mktemp -d /tmp/bench-secgw-anchor.XXXXXX)
GW_PID= GW_SIG=TERM PREFIX=
stop_gw() {
  if [ -n "$GW_PID" ]; then
    kill -"$GW_SIG" "$GW_PID" 2>/dev/null || true
    wait "$GW_PID" 2>/dev/null || true
    GW_PID=
  fi
  [ -n "$PREFIX" ] && rm -rf "/var/run/dpdk/$PREFIX"
  PREFIX=
  rm -f "$D"/*.sock
}
cleanup() {
  stop_gw
  rm -rf "$D"
}
trap cleanup EXIT

# ipsec-secgw from the packaged example sources, built here only.
mkdir -p "$D/src"
cp -r $EXAMPLES/ipsec-secgw $EXAMPLES/common "$D/src/"
sed -i 's|^\(\t*\)\.offloads = RTE_ETH_RX_OFFLOAD_CHECKSUM,$|\1.offloads = 0, /* bench: memif has no RX checksum offload */|' \
  "$D/src/ipsec-secgw/ipsec-secgw.c"
grep -q 'bench: memif has no RX checksum offload' "$D/src/ipsec-secgw/ipsec-secgw.c" \
  || { echo "the ipsec-secgw patch no longer applies" >&2; exit 1; }
make -s -C "$D/src/ipsec-secgw" >"$D/build.log" 2>&1 || { cat "$D/build.log" >&2; exit 1; }
SG=$D/src/ipsec-secgw/build/ipsec-secgw

for t in 1 "$MANY"; do
  "$LG" --dir "$D" --tunnels "$t" --write-config "$D/dp-$t.toml"
  python3 $PY conf "$D/dp-$t.toml" > "$D/sg-$t.cfg"
  python3 $PY conf "$D/dp-$t.toml" cpu-crypto > "$D/sg-l-$t.cfg"
done

# Starts gateway $1 on the tunnels' file $2 and waits until it listens
# with its ports started (a memif client that connects earlier is
# refused and does not retry).
start_gw() {
  local gw=$1 t=$2 ready vdevs
  read -r -a vdevs <<< "$(python3 $PY eal "$D/dp-$t.toml")"
  PREFIX=bench-anchor-$gw-$$ GW_SIG=TERM
  case $gw in
    vpn-dp)
      "$DP" --config "$D/dp-$t.toml" --lcores 0,1 --no-huge --file-prefix "$PREFIX" \
          > "$D/gw.out" 2> "$D/gw.err" &
      ready= ;;
    secgw|secgw-l)
      local extra=() cfg=$D/sg-$t.cfg
      [ "$gw" = secgw-l ] && extra=(-l -w 1024) cfg=$D/sg-l-$t.cfg
      "$SG" -l 1 -n 1 --no-pci --no-huge -m 1024 --file-prefix "$PREFIX" --log-level=warning \
          "${vdevs[@]}" --vdev crypto_aesni_gcm0 -- -p 0x3 -u 0x1 "${extra[@]}" -f "$cfg" \
          --config "(0,0,1),(1,0,1)" > "$D/gw.out" 2> "$D/gw.err" &
      ready='Checking link status' ;;
    testpmd)
      dpdk-testpmd -l 0,1 --main-lcore 0 -n 1 --no-pci --no-huge -m 1024 --file-prefix "$PREFIX" \
          --log-level=warning "${vdevs[@]}" -- --forward-mode=io --nb-cores=1 -a \
          --stats-period 1 --total-num-mbufs 16384 > "$D/gw.out" 2> "$D/gw.err" &
      ready='Checking link statuses' GW_SIG=INT ;;  # SIGINT ends its stats loop
    *) echo "unknown gateway $gw" >&2; exit 2 ;;
  esac
  GW_PID=$!
  for _ in $(seq 1200); do
    [ -S "$D/in.sock" ] && [ -S "$D/out.sock" ] && { [ -z "$ready" ] || grep -q "$ready" "$D/gw.out"; } && return 0
    kill -0 "$GW_PID" 2>/dev/null || break
    sleep 0.05
  done
  echo "$gw did not start:" >&2; tail -5 "$D/gw.out" "$D/gw.err" >&2
  return 1
}

run() { # gateway tunnels mode size
  local gw=$1 t=$2 mode=$3 size=$4 packets=1000000 line= verdict=unchecked
  [ "$size" = 64 ] && packets=3000000
  start_gw "$gw" "$t" || { stop_gw; return 1; }
  : > "$D/lg.json"
  "$LG" --dir "$D" --tunnels "$t" --mode "$mode" --size "$size" --seconds "$SECS" \
      --packets "$packets" --rate-mpps 0 --lcore 0 --file-prefix "bench-anchor-lg-$$" \
      --esp-cache "$D/esp-$t-$size-$packets.bin" \
      --capture "$D/cap.pcap" --capture-every 1009 --capture-count 64 \
      > "$D/lg.json" 2> "$D/lg.err" &
  local lg=$!
  for _ in $(seq 1800); do
    line=$(head -1 "$D/lg.json"); [ -n "$line" ] && break
    kill -0 $lg 2>/dev/null || break
    sleep 0.1
  done
  stop_gw
  wait $lg || true
  if [ -z "$line" ]; then
    echo "loadgen failed ($gw $t $mode $size):" >&2; cat "$D/lg.err" >&2; return 1
  fi
  if [ "$gw" != testpmd ]; then
    verdict=$(python3 $PY check "$D/dp-$t.toml" "$mode" "$size" "$D/cap.pcap" 2>&1 | tail -1) || true
  fi
  echo "{\"gw\":\"$gw\",\"check\":\"$verdict\",\"at\":\"$(date -u +%T)\",\"load\":\"$(cut -d' ' -f1 /proc/loadavg)\",${line#\{}" \
    | tee -a "$D/results.jsonl"
}

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== $(date -u '+%F %T') UTC, load: $LOAD0"
read -r -a order <<< "$GATEWAYS"
for round in $(seq "$ROUNDS"); do
  gws=("${order[@]}")
  if [ $((round % 2)) = 0 ]; then
    gws=(); for ((i = ${#order[@]} - 1; i >= 0; i--)); do gws+=("${order[$i]}"); done
  fi
  for mode in $MODES; do for size in $SIZES; do for t in 1 "$MANY"; do
    for gw in "${gws[@]}"; do run "$gw" "$t" "$mode" "$size" || true; done
  done; done; done
done
echo "== $(date -u '+%F %T') UTC, load: $(cut -d' ' -f1-3 /proc/loadavg) (at the start: $LOAD0)"

python3 - "$D/results.jsonl" "$MANY" "$ROUNDS" <<'PY'
import collections, json, statistics as st, subprocess, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
many, rounds = int(sys.argv[2]), sys.argv[3]
cells = collections.defaultdict(list)
broken = collections.defaultdict(list)
for r in rows:
    k = (r['gw'], r['mode'].lower(), r['size'], r['tunnels'])
    if r['check'].startswith('ok') or r['check'] == 'unchecked':
        cells[k].append(r)
    else:
        broken[k].append(r['check'])
def med(gw, m, s, t, f):
    L = cells.get((gw, m, s, t))
    return st.median(x[f] for x in L) if L else None
def fmt(gw, m, s, t):
    if broken.get((gw, m, s, t)):
        return "BROKEN"
    mp, gb = med(gw, m, s, t, 'mpps'), med(gw, m, s, t, 'gbps')
    return f"{mp:.2f} / {gb:.2f}" if mp is not None else "n/a"
def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "n/a"
cpu = next((l.split(':', 1)[1].strip() for l in subprocess.run(['lscpu'], capture_output=True, text=True).stdout.splitlines()
            if l.startswith('Model name')), 'unknown')
print()
print(f"CPU: {cpu}; medians of {rounds} alternating rounds, Mpps / Gbps of inner bytes")
print()
print("| mode | inner B | tunnels | ipsec-secgw (cryptodev aesni_gcm) | ipsec-secgw -l (cpu-crypto, replay 1024) "
      "| vpn-dp | testpmd io, same ports | vpn-dp / best secgw | vpn-dp / testpmd |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for m in ('encap', 'decap'):
    for s in sorted({r['size'] for r in rows}):
        for t in (1, many):
            if not any(k[1:] == (m, s, t) for k in list(cells) + list(broken)):
                continue
            secgw = [med(g, m, s, t, 'mpps') for g in ('secgw', 'secgw-l') if not broken.get((g, m, s, t))]
            best = max((x for x in secgw if x), default=None)
            ours, tp = med('vpn-dp', m, s, t, 'mpps'), med('testpmd', m, s, t, 'mpps')
            print(f"| {m} | {s} | {t} | {fmt('secgw', m, s, t)} | {fmt('secgw-l', m, s, t)} | {fmt('vpn-dp', m, s, t)} | "
                  f"{fmt('testpmd', m, s, t)} | {ratio(ours, best)} | {ratio(ours, tp)} |")
for k, v in sorted(broken.items()):
    print(f"BROKEN {k}: {v[0]}")
PY
