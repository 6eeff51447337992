#!/usr/bin/env python3
"""Groups `perf report --sort sym --stdio` lines (stdin) of vpn-dp's worker
into stages (see bench/scripts/e2e-profile.sh) and prints one Markdown row:
mode, size, tunnels, Mpps, worker cycles/packet, then per stage its
cycles per packet (its share of the samples times the worker's busy
cycles per packet: meaningful when the worker is the bottleneck, not
while it idles between bursts) and share; then the TOP symbols.

usage: e2e-profile.py MODE SIZE TUNNELS CYCLES_PER_PACKET MPPS TOP
"""
import re
import sys

# First match wins. (dso, symbol) patterns: Debian's PMDs are stripped
# of their static functions, so the memif driver is known by its library.
STAGES = [
    ("memif", r"librte_net_memif", r""),
    ("mempool", r"librte_mempool|librte_mbuf", r""),
    ("rdtsc", r"", r"rte_rdtsc_w"),
    ("port calls", r"", r"rte_eth_(rx|tx)_burst_w"),
    ("mbuf calls", r"", r"rte_pktmbuf_\w+_w\b|rte_mbuf_\w+_w\b"),
    ("crypto", r"", r"aes|gcm|ghash|gfmul|aws_lc|ring_core|imb_|IMB|clmul|polyval|crypto::"),
    ("esp", r"", r"dataplane::esp|esp::"),
    ("pipeline+loop", r"vpn-dp", r"worker::|Worker|pipeline|fib::|route|classify|vtable\.shim|FnOnce"),
    ("libc", r"libc", r""),
]


def stage(dso, sym):
    for name, d, rx in STAGES:
        if (not d or re.search(d, dso)) and (not rx or re.search(rx, sym)):
            return name
    return "other"


def main():
    mode, size, tunnels, cpp, mpps, top = sys.argv[1:7]
    cpp, top = float(cpp), int(top)
    shares, syms = {}, []
    for line in sys.stdin:
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*\S)", line)
        if not m:
            continue
        pct, dso, sym = float(m.group(1)), m.group(2), m.group(3)
        syms.append((pct, f"{dso}: {sym}"))
        s = stage(dso, sym)
        shares[s] = shares.get(s, 0.0) + pct
    total = sum(shares.values()) or 1.0
    order = [n for n, _, _ in STAGES] + ["other"]
    cells = " | ".join(f"{cpp * shares.get(n, 0) / total:.0f} ({shares.get(n, 0) / total * 100:.0f} %)" for n in order)
    print(f"| {mode} | {size} | {tunnels} | {float(mpps):.2f} | {cpp:.0f} | {cells} |")
    for pct, sym in syms[:top]:
        dso, name = sym.split(": ", 1)
        print(f"    {pct:5.1f} %  {stage(dso, name):13}  {sym[:110]}")


if __name__ == "__main__":
    main()
