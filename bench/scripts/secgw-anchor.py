#!/usr/bin/env python3
"""Helpers of bench/scripts/secgw-anchor.sh.

  secgw-anchor.py conf VPN_DP_TOML [cpu-crypto]
      prints DPDK ipsec-secgw's config (SP, SA, routes, neighbours) for the
      tunnels of vpn-dp's static file: the same SPIs, keys, endpoints and
      prefixes, AES-128-GCM, tunnel mode. Port 0 is vpn-dp's outside port
      (ESP, in secgw's unprotected mask), port 1 its inside (plaintext).
      With cpu-crypto every SA gets `type cpu-crypto` (for secgw -l).

  secgw-anchor.py eal VPN_DP_TOML
      prints the two --vdev arguments (outside first, then inside).

  secgw-anchor.py check VPN_DP_TOML MODE SIZE PCAP
      checks a sample of what a gateway sent back to esp-loadgen (the pcap
      esp-loadgen --capture wrote): encap, every frame is ESP of one of
      the file's outbound SAs that scapy decrypts (ICV checked) into the
      load generator's plaintext; decap, every frame is that plaintext.
      Prints one line and exits 1 if any frame is wrong or none came.
"""
import ipaddress
import sys
import tomllib

# What esp-loadgen sends (bench/src/bin/esp-loadgen.rs): inner IPv4/UDP
# 198.51.100.2 <-> 10.H.L.1 for tunnel H*256+L, ports 12345, the packet
# index (u64, big endian) at byte 28 of the IP packet, zeros after it.
VPC_HOST = "198.51.100.2"
INDEX_AT = 28


def load(path):
    with open(path, "rb") as f:
        return tomllib.load(f)


def colon_hex(h):
    return ":".join(h[i:i + 2] for i in range(0, len(h), 2))


def conf(cfg, cpu_crypto):
    out = []
    inside = [r["prefix"] for r in cfg["routes"] if r["target"] == "inside"]
    typ = " type cpu-crypto" if cpu_crypto else ""
    tunnels = {t["id"]: t for t in cfg["tunnels"]}
    for t in cfg["tunnels"]:
        if t["algorithm"] != "aes128gcm16":
            sys.exit(f"tunnel {t['id']}: only aes128gcm16 is mapped")
        for d, sa, src, dst in (("out", t["outbound"], t["local"], t["remote"]),
                                ("in", t["inbound"], t["remote"], t["local"])):
            out.append(f"sa {d} {sa['spi']} aead_algo aes-128-gcm aead_key {colon_hex(sa['key'])} "
                       f"mode ipv4-tunnel src {src} dst {dst}{typ}")
    for r in cfg["routes"]:
        if not r["target"].startswith("tunnel:"):
            continue
        t = tunnels[int(r["target"].split(":")[1])]
        any_port = "sport 0:65535 dport 0:65535"
        out.append(f"sp ipv4 out esp protect {t['outbound']['spi']} pri 1 dst {r['prefix']} {any_port}")
        # Route-based like vpn-dp: what the tunnel's prefix sends to the inside.
        for p in inside:
            out.append(f"sp ipv4 in esp protect {t['inbound']['spi']} pri 1 src {r['prefix']} dst {p} {any_port}")
    for remote in sorted({t["remote"] for t in cfg["tunnels"]}):
        out.append(f"rt ipv4 dst {remote}/32 port 0")
    for p in inside:
        out.append(f"rt ipv4 dst {p} port 1")
    addrs = cfg["addresses"]
    out.append(f"neigh port 0 {addrs['outside_gateway_mac']}")
    out.append(f"neigh port 1 {addrs['inside_gateway_mac']}")
    print("\n".join(out))


def tunnel_of(addr):
    a = ipaddress.IPv4Address(addr).packed
    return a[1] * 256 + a[2] if a[0] == 10 else None


def plaintext_ok(ip, tunnel, size):
    """The load generator's packet of `tunnel`, `size` bytes, as sent
    (TTL and the header checksum aside: a router rewrites them)."""
    from scapy.layers.inet import IP
    raw = bytes(ip)
    if len(raw) != size or ip.len != size or ip.proto != 17:
        return f"length {len(raw)} / {ip.len}, proto {ip.proto}"
    fix = IP(raw[:20])
    del fix.chksum
    if bytes(fix)[:20] != raw[:20]:
        return "bad header checksum"
    ends = {ip.src, ip.dst}
    if VPC_HOST not in ends or tunnel is None or tunnel_of((ends - {VPC_HOST}).pop()) != tunnel:
        return f"addresses {ip.src} -> {ip.dst} (tunnel {tunnel})"
    if raw[20:24] != bytes.fromhex("30393039") or any(raw[INDEX_AT + 8:]):
        return "payload differs"
    return None


def check(cfg, mode, size, pcap):
    from scapy.layers.inet import IP
    from scapy.layers.ipsec import ESP, SecurityAssociation
    from scapy.utils import rdpcap
    frames = rdpcap(pcap)
    sas = {}
    for t in cfg["tunnels"]:
        o = t["outbound"]
        sas[o["spi"]] = (t["id"], SecurityAssociation(
            ESP, spi=o["spi"], crypt_algo="AES-GCM", crypt_key=bytes.fromhex(o["key"]),
            tunnel_header=IP(src=t["local"], dst=t["remote"])))
    bad, seen = [], set()
    for n, f in enumerate(frames):
        ip = f[IP] if IP in f else None
        if ip is None:
            bad.append(f"#{n}: not IPv4")
            continue
        if mode == "encap":
            if ESP not in ip or ip[ESP].spi not in sas:
                bad.append(f"#{n}: not ESP of a known SA")
                continue
            tid, sa = sas[ip[ESP].spi]
            try:
                inner = sa.decrypt(IP(bytes(ip)))
            except Exception as e:  # noqa: BLE001 - any failure is the verdict
                bad.append(f"#{n}: does not decrypt ({e})")
                continue
            err = plaintext_ok(inner, tid, size)
        else:
            tid = tunnel_of(ip.src)
            err = plaintext_ok(ip, tid, size)
        seen.add(tid)
        if err:
            bad.append(f"#{n}: {err}")
    verdict = "ok" if frames and not bad else "BROKEN"
    print(f"{verdict}: {len(frames)} frames checked, {len(frames) - len(bad)} good, "
          f"{len(seen)} tunnels" + (f"; first: {bad[0]}" if bad else ""))
    return verdict == "ok"


def main():
    cmd, cfg = sys.argv[1], load(sys.argv[2])
    if cmd == "conf":
        conf(cfg, len(sys.argv) > 3 and sys.argv[3] == "cpu-crypto")
    elif cmd == "eal":
        print(f"--vdev={cfg['ports']['outside']} --vdev={cfg['ports']['inside']}")
    elif cmd == "check":
        sys.exit(0 if check(cfg, sys.argv[3], int(sys.argv[4]), sys.argv[5]) else 1)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
