"""A scapy customer gateway for the static-SA end-to-end test.

Usage (inside the peer namespace):
  peer.py IFACE ALG NATT LOCAL REMOTE OUT_SPI OUT_KEY OUT_AUTH IN_SPI IN_KEY IN_AUTH SRC DST COUNT [FRAGSIZE [BADSUM]]

Sends COUNT ICMP echo requests SRC -> DST encrypted with the OUT SA (scapy's
independent ESP, tunnel mode, LOCAL -> REMOTE, raw or UDP 4500) and decrypts
what comes back from REMOTE with the IN SA. Prints one JSON line:
  {"sent": N, "replies": M, "bad": K}
where replies are decrypted, ICV-checked echo replies DST -> SRC matching a
request, and bad counts ESP packets that did not decrypt or whose outer IPv4
header checksum is wrong (the dataplane fills it, or leaves it to the NIC:
either way it must be right on the wire). Exit 0.

With BADSUM = N > 0, N more requests (sequence numbers after COUNT's) are sent
with a wrong outer IPv4 header checksum: they must be dropped unanswered.

With FRAGSIZE > 0 each request carries 1200 bytes of data and its ESP packet
is split by scapy's fragment() into outer IP fragments of at most FRAGSIZE
bytes of data (as a router with a small MTU on the path would), sent last
fragment first so that the receiver must hold and reorder them. They are sent
at layer 2: through a raw IP socket the peer's own netfilter (nf_defrag, when
conntrack is loaded) would reassemble them again on output.
"""
import json
import sys
import time

from scapy.all import AsyncSniffer, checksum, conf, fragment, get_if_hwaddr, getmacbyip, send, sendp
from scapy.layers.l2 import Ether
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.ipsec import ESP, SecurityAssociation

AUTH = {"sha1": "HMAC-SHA1-96", "sha256": "SHA2-256-128", "sha384": "SHA2-384-192", "sha512": "SHA2-512-256"}


def sa(alg, natt, spi, key, auth, src, dst):
    kw = {}
    if natt:
        kw["nat_t_header"] = UDP(sport=4500, dport=4500)
    if alg.endswith("gcm16"):
        kw.update(crypt_algo="AES-GCM", crypt_key=bytes.fromhex(key), auth_algo="NULL")
    else:
        kw.update(crypt_algo="AES-CBC", crypt_key=bytes.fromhex(key),
                  auth_algo=AUTH[alg.split("-")[1]], auth_key=bytes.fromhex(auth))
    return SecurityAssociation(ESP, spi=spi, tunnel_header=IP(src=src, dst=dst), **kw)


def main():
    (iface, alg, natt, local, remote, out_spi, out_key, out_auth,
     in_spi, in_key, in_auth, src, dst, count) = sys.argv[1:15]
    fragsize = int(sys.argv[15]) if len(sys.argv) > 15 else 0
    badsum = int(sys.argv[16]) if len(sys.argv) > 16 else 0
    natt, count = natt == "1", int(count)
    conf.verb = 0
    out = sa(alg, natt, int(out_spi), out_key, out_auth, local, remote)
    inb = sa(alg, natt, int(in_spi), in_key, in_auth, remote, local)
    got = set()
    bad = [0]
    why = []

    def on_packet(p):
        if IP not in p or p[IP].src != remote:
            return
        if ESP not in p and not (UDP in p and p[UDP].dport == 4500):
            return
        raw = bytes(p[IP])
        if checksum(raw[:(raw[0] & 15) * 4]) != 0:
            bad[0] += 1
            if len(why) < 8:
                why.append("outer IPv4 header checksum %#06x is wrong" % p[IP].chksum)
            return
        try:
            ip = IP(raw)
            if natt and ESP not in ip:
                return
            inner = inb.decrypt(ip)
        except Exception as e:
            bad[0] += 1
            if len(why) < 8:
                esp = ip[ESP] if ESP in ip else None
                why.append("%s: %s (spi %s seq %s, %d bytes)" % (
                    type(e).__name__, e, esp.spi if esp else None,
                    esp.seq if esp else None, len(ip)))
            return
        if ICMP in inner and inner[ICMP].type == 0 and inner[IP].src == dst and inner[IP].dst == src:
            got.add(inner[ICMP].seq)

    sniffer = AsyncSniffer(iface=iface, prn=on_packet, store=False)
    sniffer.start()
    time.sleep(0.5)
    if fragsize:
        eth = Ether(src=get_if_hwaddr(iface), dst=getmacbyip(remote))
    for i in range(count):
        data = b"vpn-test-%04d" % i
        if fragsize:
            data = data.ljust(1200, b"f")
        pkt = IP(src=src, dst=dst) / ICMP(id=0x4242, seq=i + 1) / data
        esp = out.encrypt(pkt)
        if fragsize:
            frags = fragment(esp, fragsize=fragsize)
            assert len(frags) > 1, "ESP packet not fragmented"
            sendp([eth / f for f in reversed(frags)], iface=iface)
        else:
            send(esp, iface=iface)
        time.sleep(0.05)
    for i in range(count, count + badsum):
        esp = out.encrypt(IP(src=src, dst=dst) / ICMP(id=0x4242, seq=i + 1) / b"bad-checksum")
        esp[IP].chksum = (IP(bytes(esp))[IP].chksum ^ 0x5555) or 1
        send(esp, iface=iface)
        time.sleep(0.05)
    deadline = time.time() + 5
    while len(got) < count and time.time() < deadline:
        time.sleep(0.1)
    sniffer.stop()
    # Answers to the bad-checksum requests would show as extra replies.
    print(json.dumps({"sent": count, "replies": len(got), "bad": bad[0]}))
    for w in why:
        print("bad:", w, file=sys.stderr)


if __name__ == "__main__":
    main()
