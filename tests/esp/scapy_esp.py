#!/usr/bin/env python3
"""Cross-check our ESP tunnel mode against scapy's independent implementation.

Usage: scapy_esp.py REQUESTS OUTPUT

REQUESTS holds one request per line, space-separated:

  ENC id alg outer natt esn seq spi enc_key auth_key src dst inner_hex wire_hex
      `wire_hex` is a packet our encap produced (outer IP [+UDP] + ESP) with
      64-bit sequence number `seq`; scapy decrypts it and must get exactly
      `inner_hex` back; the outer IPv4 checksum and the UDP checksum (0 over
      IPv4, correct over IPv6) are checked too.
      Answer: "OK id" or "FAIL id reason".
  DEC id alg outer natt esn seq spi enc_key auth_key src dst inner_hex
      scapy encrypts `inner_hex` (outer header src -> dst, sequence `seq`);
      our decap must accept it. Answer: "PKT id wire_hex" or "FAIL id reason".

alg: aes128gcm16 | aes256gcm16 | aes128cbc-<integ> | aes256cbc-<integ> with
integ one of sha1 / sha256 / sha384 / sha512. outer: 4 or 6. natt, esn: 0 or 1.
Keys in hex; for GCM enc_key is key||salt (scapy's crypt_key too), auth_key "-".

Exit status: 0 when every request was answered (answers may be FAIL),
77 when scapy is not available and cannot be installed (the Rust test
then reports a skip), anything else is an error.
"""
import subprocess
import sys


def ensure_scapy():
    try:
        import scapy.layers.ipsec  # noqa: F401
        return True
    except ImportError:
        pass
    for extra in ([], ["--break-system-packages"]):
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", *extra, "scapy", "cryptography"]
        if subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr).returncode == 0:
            break
    try:
        import scapy.layers.ipsec  # noqa: F401
        return True
    except ImportError:
        return False


AUTH = {
    "sha1": "HMAC-SHA1-96",
    "sha256": "SHA2-256-128",
    "sha384": "SHA2-384-192",
    "sha512": "SHA2-512-256",
}


def make_sa(alg, outer, natt, esn, spi, enc_key, auth_key, src, dst):
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.ipsec import ESP, SecurityAssociation

    if alg.endswith("gcm16"):
        crypt, auth, akey = "AES-GCM", None, None
    else:
        crypt = "AES-CBC"
        auth = AUTH[alg.split("-")[1]]
        akey = bytes.fromhex(auth_key)
    tunnel = IP(src=src, dst=dst) if outer == "4" else IPv6(src=src, dst=dst)
    nat = UDP(sport=4500, dport=4500) if natt == "1" else None
    return SecurityAssociation(
        ESP,
        spi=int(spi),
        crypt_algo=crypt,
        crypt_key=bytes.fromhex(enc_key),
        auth_algo=auth,
        auth_key=akey,
        tunnel_header=tunnel,
        nat_t_header=nat,
        esn_en=esn == "1",
    )


def check_outer(wire, outer, natt):
    """Outer checksums our encap filled in; None if fine."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6

    cls = IP if outer == "4" else IPv6
    pkt = cls(wire)
    if outer == "4":
        fresh = IP(wire)
        del fresh.chksum
        if IP(bytes(fresh)).chksum != pkt.chksum:
            return "outer IPv4 checksum wrong"
    if natt == "1":
        got = pkt[UDP].chksum
        if outer == "4":
            if got != 0:
                return f"UDP checksum over IPv4 is {got:#x}, want 0 (RFC 3948)"
        else:
            fresh = IPv6(wire)
            del fresh[UDP].chksum
            if IPv6(bytes(fresh))[UDP].chksum != got:
                return "UDP checksum over IPv6 wrong"
    return None


def handle(fields):
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6

    kind, rid, alg, outer, natt, esn, seq, spi, enc_key, auth_key, src, dst, inner_hex = fields[:13]
    sa = make_sa(alg, outer, natt, esn, spi, enc_key, auth_key, src, dst)
    inner = bytes.fromhex(inner_hex)
    seq = int(seq)
    esn_kw = {"esn_en": True, "esn": seq >> 32} if esn == "1" else {}
    if kind == "ENC":
        wire = bytes.fromhex(fields[13])
        bad = check_outer(wire, outer, natt)
        if bad:
            return f"FAIL {rid} {bad}"
        pkt = IP(wire) if outer == "4" else IPv6(wire)
        try:
            plain = sa.decrypt(pkt, **esn_kw)
        except Exception as e:  # scapy raises IPSecIntegrityError etc.
            return f"FAIL {rid} decrypt: {type(e).__name__}: {e}"
        got = bytes(plain)
        if got != inner:
            return f"FAIL {rid} inner differs: got {got.hex()}"
        return f"OK {rid}"
    if kind == "DEC":
        ip = IP(inner) if inner[0] >> 4 == 4 else IPv6(inner)
        # scapy takes `seq_num or self.seq_num`, so a low half of 0 (ESN,
        # at 2^32) must come through the SA's own counter.
        sa.seq_num = seq & 0xFFFFFFFF
        try:
            enc = sa.encrypt(ip, seq_num=seq & 0xFFFFFFFF, **esn_kw)
        except Exception as e:
            return f"FAIL {rid} encrypt: {type(e).__name__}: {e}"
        return f"PKT {rid} {bytes(enc).hex()}"
    return f"FAIL {rid} unknown request {kind}"


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    if not ensure_scapy():
        print("scapy not available and could not be installed", file=sys.stderr)
        return 77
    out = []
    with open(sys.argv[1]) as f:
        for line in f:
            fields = line.split()
            if fields:
                out.append(handle(fields))
    with open(sys.argv[2], "w") as f:
        f.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
