#!/usr/bin/env python3
"""Known-answer values for control/src/ikev1/tests.rs, computed independently
of the Rust code with Python's hashlib/hmac and `cryptography` (AES-CBC),
straight from the formulas of RFC 2409 § 5, § 5.5 and Appendix B.

Run: python3 control/src/ikev1/kat.py   (prints the Rust constants)
"""
import hashlib
import hmac

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

PSK = b"vt-kat-pre-shared-key"
NI = bytes(range(0, 32))
NR = bytes(range(32, 64))
G_XY = bytes((i * 7 + 3) % 256 for i in range(256))
G_QM = bytes((i * 13 + 5) % 256 for i in range(256))
CKY_I = bytes.fromhex("0102030405060708")
CKY_R = bytes.fromhex("1112131415161718")
KE_I = bytes((i * 3) % 256 for i in range(64))
KE_R = bytes((i * 5 + 1) % 256 for i in range(64))
SAI_B = bytes.fromhex("00000001000000010000002c010100010000002401010000800b0001800c7080800100078002000480030001800e0080800400 0e".replace(" ", ""))
IDII_B = bytes.fromhex("01000000c0000201")
MID = bytes.fromhex("a1b2c3d4")
SPI = bytes.fromhex("c0ffee01")


def prf(h, key, *data):
    return hmac.new(key, b"".join(data), h).digest()


def out(name, b):
    print(f'const {name}: [u8; {len(b)}] = hex!("{b.hex()}");')


for label, h in (("SHA1", hashlib.sha1), ("SHA256", hashlib.sha256)):
    skeyid = prf(h, PSK, NI, NR)
    d = prf(h, skeyid, G_XY, CKY_I, CKY_R, b"\x00")
    a = prf(h, skeyid, d, G_XY, CKY_I, CKY_R, b"\x01")
    e = prf(h, skeyid, a, G_XY, CKY_I, CKY_R, b"\x02")
    # Appendix B: Ka = K1 | K2 ..., K1 = prf(SKEYID_e, 0), Kn = prf(SKEYID_e, Kn-1)
    ka, k = b"", prf(h, e, b"\x00")
    while len(ka) < 32:
        ka += k
        k = prf(h, e, k)
    enc256 = e[:32] if len(e) >= 32 else ka[:32]
    hash_i = prf(h, skeyid, KE_I, KE_R, CKY_I, CKY_R, SAI_B, IDII_B)
    hash_r = prf(h, skeyid, KE_R, KE_I, CKY_R, CKY_I, SAI_B, IDII_B)
    iv1 = h(KE_I + KE_R).digest()[:16]
    last = bytes(range(100, 116))
    iv2 = h(last + MID).digest()[:16]
    # KEYMAT = K1 | K2 ..., K1 = prf(SKEYID_d, [g_qm |] proto | SPI | Ni | Nr)
    def keymat(g, n):
        km, prev = b"", b""
        while len(km) < n:
            prev = prf(h, d, prev, g, b"\x03", SPI, NI, NR)
            km += prev
        return km[:n]
    rest = bytes.fromhex("0a0000240102030405060708")
    out(f"{label}_SKEYID", skeyid)
    out(f"{label}_SKEYID_D", d)
    out(f"{label}_SKEYID_A", a)
    out(f"{label}_SKEYID_E", e)
    out(f"{label}_ENC_KEY_256", enc256)
    out(f"{label}_HASH_I", hash_i)
    out(f"{label}_HASH_R", hash_r)
    out(f"{label}_IV1", iv1)
    out(f"{label}_IV2", iv2)
    out(f"{label}_KEYMAT_96", keymat(b"", 96))
    out(f"{label}_KEYMAT_PFS_36", keymat(G_QM, 36))
    out(f"{label}_QM_HASH1", prf(h, a, MID, rest))
    out(f"{label}_QM_HASH2", prf(h, a, MID, NI, rest))
    out(f"{label}_QM_HASH3", prf(h, a, b"\x00", MID, NI, NR))
    plain = bytes(range(40)) + bytes(7) + b"\x07"  # 40 bytes + RFC 2409 App. B padding
    enc = Cipher(algorithms.AES(enc256), modes.CBC(iv1)).encryptor()
    out(f"{label}_CT", enc.update(plain) + enc.finalize())
