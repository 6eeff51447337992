"""A scapy customer gateway with several tunnels, for the static-SA e2e tests.

Usage (inside the peer namespace):  cgw_multi.py SPEC.json

SPEC: {"iface", "local" (our outer address), "remote" (vpn-dp's), "vpc_ns",
"vpc_addr", "count", "bad" (bool), "tunnels": [{"alg", "natt", "out_spi",
"out_key", "out_auth", "in_spi", "in_key", "in_auth", "site"}]}.

For every tunnel, with scapy's own ESP (independent of ours):
  * icmp_out: COUNT echo requests site -> vpc through the tunnel, replies counted;
  * udp_out: COUNT datagrams site:5000 -> vpc:7 (an echo server there), echoes counted;
  * icmp_in: `ping` from the VPC namespace to the site: we answer through the tunnel;
  * udp_in: datagrams from the VPC to site:9999: we echo them back through the tunnel.
With "bad": on tunnel 0, 3 each of replayed, tampered (ICV), truncated and
unknown-SPI ESP, 3 ESP-in-UDP garbage datagrams and 3 garbage frames, then
COUNT more echo requests ("after_bad").
Prints one JSON line with the counts per tunnel and "undecryptable". Exit 0.
"""
import json
import os
import random
import subprocess
import sys
import threading
import time

from scapy.all import AsyncSniffer, Ether, Raw, conf, get_if_hwaddr, send, sendp
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.ipsec import ESP, SecurityAssociation

AUTH = {"sha1": "HMAC-SHA1-96", "sha256": "SHA2-256-128", "sha384": "SHA2-384-192",
        "sha512": "SHA2-512-256"}


def make_sa(alg, natt, spi, key, auth, src, dst):
    kw = {}
    if natt:
        kw["nat_t_header"] = UDP(sport=4500, dport=4500)
    if alg.endswith("gcm16"):
        kw.update(crypt_algo="AES-GCM", crypt_key=bytes.fromhex(key), auth_algo="NULL")
    else:
        kw.update(crypt_algo="AES-CBC", crypt_key=bytes.fromhex(key),
                  auth_algo=AUTH[alg.split("-")[1]], auth_key=bytes.fromhex(auth))
    return SecurityAssociation(ESP, spi=spi, tunnel_header=IP(src=src, dst=dst), **kw)


def vpc(spec, cmd, timeout=60):
    return subprocess.run(["ip", "netns", "exec", spec["vpc_ns"], "sh", "-c", cmd],
                          capture_output=True, text=True, timeout=timeout).stdout


UDP_ECHO = r"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 7))
while True:
    d, a = s.recvfrom(2000)
    s.sendto(d, a)
"""

UDP_CLIENT = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
want = {b"vpc-udp-%d" % i for i in range(int(sys.argv[2]))}
for d in sorted(want):
    s.sendto(d, (sys.argv[1], 9999))
    time.sleep(0.05)
got = set()
deadline = time.time() + 20
while got != want and time.time() < deadline:
    try:
        got.add(s.recvfrom(2000)[0])
    except OSError:
        pass
print(len(got & want))
"""


def main():
    spec = json.load(open(sys.argv[1]))
    echo_server = subprocess.Popen(
        ["ip", "netns", "exec", spec["vpc_ns"], "timeout", "120", "python3", "-c", UDP_ECHO],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run(spec)
    finally:
        echo_server.terminate()  # `timeout` passes SIGTERM on to the server
        echo_server.wait(timeout=10)


def run(spec):
    conf.verb = 0
    iface, local, remote, count = spec["iface"], spec["local"], spec["remote"], spec["count"]
    lock = threading.Lock()
    tunnels = []
    for t in spec["tunnels"]:
        tunnels.append({
            "spec": t,
            "out": make_sa(t["alg"], t["natt"], t["out_spi"], t["out_key"], t["out_auth"], local, remote),
            "in": make_sa(t["alg"], t["natt"], t["in_spi"], t["in_key"], t["in_auth"], remote, local),
            "icmp_out": set(), "udp_out": set(), "udp_in": 0,
        })
    by_spi = {t["spec"]["in_spi"]: t for t in tunnels}
    undecryptable = [0]

    def encrypt(t, pkt):
        with lock:
            return t["out"].encrypt(pkt)

    def on_packet(p):
        if IP not in p or p[IP].src != remote or p[IP].dst != local:
            return
        ip = IP(bytes(p[IP]))
        if ESP in ip:
            spi = ip[ESP].spi
        elif UDP in ip and ip[UDP].dport == 4500 and len(bytes(ip[UDP].payload)) >= 8:
            spi = int.from_bytes(bytes(ip[UDP].payload)[:4], "big")
            ip = IP(bytes(ip))
        else:
            return
        t = by_spi.get(spi)
        if t is None:
            undecryptable[0] += 1
            return
        try:
            inner = t["in"].decrypt(ip)
        except Exception:
            undecryptable[0] += 1
            return
        site = t["spec"]["site"]
        if ICMP in inner and inner[IP].dst == site:
            if inner[ICMP].type == 0 and inner[ICMP].id == 0x4242:
                t["icmp_out"].add(inner[ICMP].seq)
            elif inner[ICMP].type == 8:
                reply = IP(src=site, dst=inner[IP].src) / ICMP(
                    type=0, id=inner[ICMP].id, seq=inner[ICMP].seq) / inner[ICMP].payload
                send(encrypt(t, reply), iface=iface)
        elif UDP in inner and inner[IP].dst == site:
            if inner[UDP].sport == 7 and inner[UDP].dport == 5000:
                t["udp_out"].add(bytes(inner[UDP].payload))
            elif inner[UDP].dport == 9999:
                t["udp_in"] += 1
                echo = IP(src=site, dst=inner[IP].src) / UDP(
                    sport=9999, dport=inner[UDP].sport) / bytes(inner[UDP].payload)
                send(encrypt(t, echo), iface=iface)

    sniffer = AsyncSniffer(iface=iface, prn=on_packet, store=False)
    sniffer.start()
    time.sleep(0.5)

    def wait(cond, secs=20):
        deadline = time.time() + secs
        while not cond() and time.time() < deadline:
            time.sleep(0.1)

    def echo_requests(t, first, n):
        site = t["spec"]["site"]
        for i in range(first, first + n):
            pkt = IP(src=site, dst=spec["vpc_addr"]) / ICMP(id=0x4242, seq=i) / (b"vpn-test-%04d" % i)
            send(encrypt(t, pkt), iface=iface)
            time.sleep(0.02)

    result = {"tunnels": []}
    for t in tunnels:
        site = t["spec"]["site"]
        echo_requests(t, 1, count)
        for i in range(count):
            pkt = IP(src=site, dst=spec["vpc_addr"]) / UDP(sport=5000, dport=7) / (b"udp-%s-%d" % (site.encode(), i))
            send(encrypt(t, pkt), iface=iface)
            time.sleep(0.02)
        wait(lambda: len(t["icmp_out"]) >= count and len(t["udp_out"]) >= count)
        ping = vpc(spec, "ping -c %d -i 0.2 -W 20 %s | grep -o '[0-9]* received'" % (count, site))
        udp_in = vpc(spec, "python3 -c '%s' %s %d" % (UDP_CLIENT.replace("'", "'\\''"), site, count))
        result["tunnels"].append({
            "alg": t["spec"]["alg"], "natt": t["spec"]["natt"],
            "icmp_out": len(t["icmp_out"]), "udp_out": len(t["udp_out"]),
            "icmp_in": int((ping.split() or ["0"])[0]),
            "udp_in": int(udp_in.strip() or "0"),
        })

    if spec.get("bad"):
        t = tunnels[0]
        site = t["spec"]["site"]
        mk = lambda i: IP(src=site, dst=spec["vpc_addr"]) / ICMP(id=0x4242, seq=1000 + i) / b"bad"
        # Replayed: one good packet, then the same bytes three more times.
        good = encrypt(t, mk(0))
        for _ in range(4):
            send(good, iface=iface)
            time.sleep(0.05)
        for i in range(3):
            # Tampered: a flipped bit in the ciphertext.
            raw = bytearray(bytes(encrypt(t, mk(10 + i))))
            raw[-20] ^= 0x01
            send(IP(bytes(raw)), iface=iface)
            # Truncated: the ESP header and 4 bytes.
            raw = bytes(encrypt(t, mk(20 + i)))
            hdr = 20 + (8 if t["spec"]["natt"] else 0)
            cut = IP(raw[:hdr + 12])
            cut[IP].len = None
            cut[IP].chksum = None
            if t["spec"]["natt"]:
                cut[UDP].len = None
                cut[UDP].chksum = 0
            send(IP(bytes(cut)), iface=iface)
            # Unknown SPI.
            send(IP(src=local, dst=remote) / ESP(spi=0xDEAD0000 + i, seq=1) / Raw(os.urandom(48)), iface=iface)
            # Garbage to the NAT-T port (non-zero first word: read as an SPI).
            send(IP(src=local, dst=remote) / UDP(sport=4500, dport=4500) /
                 Raw(b"\xff" + os.urandom(63)), iface=iface)
            # Garbage frames: IPv4 ethertype, version nibble 0.
            junk = bytearray(random.randbytes(60))
            junk[0] &= 0x0F
            sendp(Ether(dst=spec["remote_mac"], src=get_if_hwaddr(iface), type=0x0800) / Raw(bytes(junk)),
                  iface=iface)
            time.sleep(0.05)
        wait(lambda: 1000 in t["icmp_out"])
        before = len(t["icmp_out"])
        echo_requests(t, 2000, count)
        wait(lambda: len(t["icmp_out"]) >= before + count)
        result["after_bad"] = len(t["icmp_out"]) - before
        result["bad_good"] = 1000 in t["icmp_out"]
    sniffer.stop()
    result["undecryptable"] = undecryptable[0]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
