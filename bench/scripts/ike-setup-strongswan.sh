#!/usr/bin/env bash
# IKEv2 tunnel set-ups per second: our initiator against strongSwan's charon
# (5.9.8, kernel-libipsec, responder) for reference, and our initiator
# against our responder in one process (benches/ike_setup.rs), in the same
# run, with the ratio.
#
# usage (root): bench/scripts/ike-setup-strongswan.sh [rounds] [round-ms] [window]
#   env: CARGO_TARGET_DIR (default /work/target-bench)
#
# Steps: build the `ike-setup-peer` binary and the `ike_setup` bench
# (release / bench profile); make namespaces vt-ikb-s (charon, 192.0.2.1)
# and vt-ikb-u (us, 192.0.2.2) joined by a veth pair; start charon-systemd
# with its own strongswan.conf (curve25519 plugin loaded, cookie / block
# thresholds raised so a window of set-ups from one address is not
# throttled, logging off) and a swanctl.conf accepting AES-128-GCM-16 /
# PRF-SHA2-256 with DH 14, 19, 31, PSK, `unique = never`; run
# ike-setup-peer (each set-up IKE_SA_INIT + IKE_AUTH + first Child SA, then
# an INFORMATIONAL DELETE); run the in-process bench; print both tables and
# the ratios. Everything made is removed on exit (trap).
set -euo pipefail
ROUNDS=${1:-3}
ROUND_MS=${2:-5000}
WINDOW=${3:-16}
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-bench}
[ "$(id -u)" = 0 ] || { echo "needs root (namespaces, charon)" >&2; exit 1; }

SW=192.0.2.1
US=192.0.2.2
PSK=vtikb.PSK_0123456789
NS_S=vt-ikb-s
NS_U=vt-ikb-u
DIR=$(mktemp -d /tmp/vt-ikb.XXXXXX)
CHARON_PID=

cleanup() {
  if [ -n "$CHARON_PID" ] && kill -0 "$CHARON_PID" 2>/dev/null; then
    kill -TERM "$CHARON_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$CHARON_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$CHARON_PID" 2>/dev/null || true
  fi
  ip netns del "$NS_S" 2>/dev/null || true
  ip netns del "$NS_U" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

echo "== build" >&2
cargo build --release -q -p bench --bin ike-setup-peer
cargo bench -q -p bench --bench ike_setup --no-run 2>&1 | tail -n 3 >&2
PEER=$CARGO_TARGET_DIR/release/ike-setup-peer

ip netns add "$NS_S"
ip netns add "$NS_U"
ip link add vikbs type veth peer name vikbu
ip link set vikbs netns "$NS_S"
ip link set vikbu netns "$NS_U"
ip -n "$NS_S" addr add $SW/24 dev vikbs
ip -n "$NS_U" addr add $US/24 dev vikbu
for n in "$NS_S:vikbs" "$NS_U:vikbu"; do
  ip -n "${n%%:*}" link set lo up
  ip -n "${n%%:*}" link set "${n##*:}" up
done

cat >"$DIR/strongswan.conf" <<EOF
charon {
  load = random nonce openssl aes sha1 sha2 hmac gcm pem pkcs1 x509 pubkey kdf curve25519 kernel-libipsec kernel-netlink socket-default vici updown
  cookie_threshold = 100000
  block_threshold = 100000
  init_limit_half_open = 0
  plugins { vici { socket = unix://$DIR/charon.vici } }
  filelog { stderr { default = -1 } }
}
charon-systemd { journal { default = -1 } }
EOF
cat >"$DIR/swanctl.conf" <<EOF
connections {
 bench {
  version = 2
  local_addrs = $SW
  remote_addrs = $US
  unique = never
  proposals = aes128gcm16-prfsha256-modp2048-ecp256-curve25519
  local { auth = psk }
  remote { auth = psk }
  children { net {
   local_ts = 0.0.0.0/0
   remote_ts = 0.0.0.0/0
   esp_proposals = aes128gcm16
   mode = tunnel
  } }
 }
}
secrets { ike-1 { secret = "$PSK" } }
EOF
STRONGSWAN_CONF=$DIR/strongswan.conf ip netns exec "$NS_S" /usr/sbin/charon-systemd \
  >"$DIR/charon.log" 2>&1 &
CHARON_PID=$!
for _ in $(seq 100); do [ -S "$DIR/charon.vici" ] && break; sleep 0.1; done
[ -S "$DIR/charon.vici" ] || { echo "charon did not start:" >&2; cat "$DIR/charon.log" >&2; exit 1; }
ip netns exec "$NS_S" swanctl --load-all --file "$DIR/swanctl.conf" --uri "unix://$DIR/charon.vici" >"$DIR/swanctl.log" 2>&1 \
  || { cat "$DIR/swanctl.log" >&2; exit 1; }

echo "== our initiator vs charon responder (${ROUNDS} x ${ROUND_MS} ms per group, window ${WINDOW})"
ip netns exec "$NS_U" "$PEER" --local $US --remote $SW --psk "$PSK" \
  --rounds "$ROUNDS" --ms "$ROUND_MS" --window "$WINDOW" | tee "$DIR/sw.txt"
sleep 1
SAS=$(ip netns exec "$NS_S" swanctl --list-sas --uri "unix://$DIR/charon.vici" | grep -c ESTABLISHED || true)
echo "IKE SAs left in charon after the run: $SAS (expected 0: the set-ups in flight when a round ends are finished and deleted, not counted)"

echo
echo "== our initiator vs our responder, in process (${ROUNDS} x ${ROUND_MS} ms per group)"
cargo bench -q -p bench --bench ike_setup -- "$ROUNDS" "$ROUND_MS" | tee "$DIR/ours.txt"

echo
echo "| DH group | vs charon (set-ups/s) | in process (set-ups/s) | in process / vs charon |"
echo "| --- | ---: | ---: | ---: |"
for g in 14 19 31; do
  a=$(awk -F'|' -v g="$g" '$2 ~ "^ "g" \\(" {gsub(/ /,"",$3); print $3}' "$DIR/sw.txt")
  b=$(awk -F'|' -v g="$g" '$2 ~ "^ "g" \\(" {gsub(/ /,"",$3); print $3}' "$DIR/ours.txt")
  r=$(awk -v a="$a" -v b="$b" 'BEGIN { if (a > 0) printf "%.2f", b / a; else print "-" }')
  echo "| $g | $a | $b | $r |"
done
