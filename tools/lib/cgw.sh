# The customer gateway of the demo and of the boot test, sourced by both:
# strongSwan 5.9.8 (charon with kernel-libipsec: ESP inside UDP 4500) and
# BIRD 2 in namespace $1, gateway address 192.0.2.2 (on an interface the
# caller made), LAN 10.1.0.0/16 on lo, one IKEv2 connection to each of our
# outside addresses 192.0.2.1 and 192.0.2.3 with the PSKs $CGW_PSK0 and
# $CGW_PSK1, and a BGP session (AS 65001 to our 64512) inside each tunnel
# (169.254.21.0/30 and 169.254.22.0/30) announcing the LAN.
#
#   cgw_start NAMESPACE DIR     files and pid files (charon.pid, bird.pid) in DIR
#   cgw_stop DIR
CGW_PSK0=${CGW_PSK0:-demo.PSK0_0123456789}
CGW_PSK1=${CGW_PSK1:-demo.PSK1_0123456789}

cgw_start() {
  local ns=$1 d=$2 i
  ip -n "$ns" addr add 10.1.0.1/16 dev lo
  # libipsec's table 220 sends everything into ipsec0 but the peer address
  # of a tunnel that is up: the gateway's WAN routes come first.
  ip -n "$ns" rule add to 192.0.2.0/24 lookup main pref 100
  cat > "$d/strongswan.conf" <<CONF
charon {
  load = random nonce openssl aes sha1 sha2 hmac gcm pem pkcs1 x509 pubkey kdf curve25519 kernel-libipsec kernel-netlink socket-default vici updown
  plugins { vici { socket = unix://$d/charon.vici } }
  filelog { stderr { default = 1 } }
}
charon-systemd { journal { default = -1 } }
CONF
  {
    echo "connections {"
    _cgw_conn 0 192.0.2.1
    _cgw_conn 1 192.0.2.3
    echo "}"
    echo "secrets {"
    printf ' ike-0 { id-a = 192.0.2.2\n         id-b = 192.0.2.1\n         secret = "%s" }\n' "$CGW_PSK0"
    printf ' ike-1 { id-a = 192.0.2.2\n         id-b = 192.0.2.3\n         secret = "%s" }\n' "$CGW_PSK1"
    echo "}"
  } > "$d/swanctl.conf"
  ip netns exec "$ns" env STRONGSWAN_CONF="$d/strongswan.conf" /usr/sbin/charon-systemd > "$d/charon.log" 2>&1 &
  echo $! > "$d/charon.pid"
  for i in $(seq 100); do [ -S "$d/charon.vici" ] && break; sleep 0.1; done
  # libipsec's TUN device carries the inside addresses of both tunnels.
  for i in $(seq 100); do ip -n "$ns" link show ipsec0 >/dev/null 2>&1 && break; sleep 0.1; done
  ip -n "$ns" addr add 169.254.21.2/30 dev ipsec0
  ip -n "$ns" addr add 169.254.22.2/30 dev ipsec0
  # swanctl --load-all also scans the credential folders beside its file.
  mkdir -p "$d"/{x509,x509ca,x509ocsp,x509aa,x509ac,x509crl,pubkey,private,rsa,ecdsa,bliss,pkcs8,pkcs12}
  ip netns exec "$ns" swanctl --load-all --file "$d/swanctl.conf" --uri "unix://$d/charon.vici" >/dev/null
  {
    echo "router id 169.254.21.2;"
    echo "protocol device { scan time 1; }"
    echo "protocol static lan { ipv4; route 10.1.0.0/16 blackhole; }"
    _cgw_bgp 1 169.254.21.2 169.254.21.1
    _cgw_bgp 2 169.254.22.2 169.254.22.1
  } > "$d/bird.conf"
  ip netns exec "$ns" bird -f -c "$d/bird.conf" -s "$d/bird.ctl" > "$d/bird.log" 2>&1 &
  echo $! > "$d/bird.pid"
}

cgw_stop() {
  local d=$1 p
  for p in bird charon; do [ -f "$d/$p.pid" ] && kill "$(cat "$d/$p.pid")" 2>/dev/null || true; done
}

_cgw_conn() { cat <<CONF
 vpn$1 {
  version = 2
  local_addrs = 192.0.2.2
  remote_addrs = $2
  proposals = aes256gcm16-prfsha384-ecp384
  local { auth = psk
          id = 192.0.2.2 }
  remote { auth = psk
           id = $2 }
  children { net$1 { local_ts = 0.0.0.0/0
                     remote_ts = 0.0.0.0/0
                     esp_proposals = aes256gcm16
                     mode = tunnel } }
 }
CONF
}

_cgw_bgp() {
  printf 'protocol bgp t%s {\n  local %s as 65001;\n  neighbor %s as 64512;\n  connect delay time 1;\n  connect retry time 2;\n  ipv4 { import all; export where source = RTS_STATIC; };\n}\n' "$@"
}

# Our side of the demo's dynamic connection, through vpnctl (run by $1...:
# a command prefix, e.g. "target/release/vpnctl --socket S" or an ssh).
cgw_configure_vpnd() {
  "$@" cgw create cgw-demo --ip-address 192.0.2.2 --bgp-asn 65001 >/dev/null
  "$@" connection create vpn-demo --customer-gateway cgw-demo --routing dynamic \
    --tunnel0-outside-ip 192.0.2.1 --tunnel1-outside-ip 192.0.2.3 >/dev/null
  "$@" modify-tunnel-options vpn-demo 0 --set "pre_shared_key=$CGW_PSK0" \
    --set inside_ipv4_cidr=169.254.21.0/30 --set startup_action=start >/dev/null
  "$@" modify-tunnel-options vpn-demo 1 --set "pre_shared_key=$CGW_PSK1" \
    --set inside_ipv4_cidr=169.254.22.0/30 --set startup_action=start >/dev/null
}
