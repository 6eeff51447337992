#!/usr/bin/env python3
"""Writes the seed inputs of the control fuzz targets (seeds/<target>/*).

The byte fixtures are those of the codec unit tests (control/src/ike/tests.rs,
control/src/bgp/tests/wire_tests.rs), each behind the selector byte the
target reads first (see the target's doc comment). Run from anywhere:
    python3 control/fuzz/seeds/make_seeds.py
"""
from pathlib import Path

HERE = Path(__file__).resolve().parent


def h(s: str) -> bytes:
    return bytes.fromhex("".join(s.split()))


def write(target: str, name: str, data: bytes) -> None:
    d = HERE / target
    d.mkdir(exist_ok=True)
    (d / name).write_bytes(data)


# ---------------------------------------------------------------- IKE
SA_INIT_BODY = h(
    "22 00 0028"
    "00 00 0024 01 01 00 03"
    "03 00 000c 01 00 0014 800e 0080"
    "03 00 0008 02 00 0005"
    "00 00 0008 04 00 0013"
)


def ike_header(next_payload: int, length: int, exchange: int = 0x22, flags: int = 0x08) -> bytes:
    return (
        h("0102030405060708 0000000000000000")
        + bytes([next_payload, 0x20, exchange, flags])
        + (0).to_bytes(4, "big")
        + length.to_bytes(4, "big")
    )


def sa_init(ke: bytes, nonce: bytes, notifies: list[bytes]) -> bytes:
    ke_p = h("28 00") + (8 + len(ke)).to_bytes(2, "big") + h("0013 0000") + ke
    nonce_next = 0x29 if notifies else 0
    nonce_p = bytes([nonce_next, 0]) + (4 + len(nonce)).to_bytes(2, "big") + nonce
    ns = b""
    for i, n in enumerate(notifies):
        nxt = 0x29 if i + 1 < len(notifies) else 0
        ns += bytes([nxt, 0]) + (4 + len(n)).to_bytes(2, "big") + n
    body = SA_INIT_BODY + ke_p + nonce_p + ns
    return ike_header(0x21, 28 + len(body)) + body


# The unit test's fixture (short KE data).
fixture = sa_init(h("aabbccdd"), h("11223344"), [])
assert len(fixture) == 0x58, len(fixture)
write("ike_message", "sa_init_fixture", b"\x00" + fixture)
write("ike_message", "sa_init_fixture_endpoint", b"\x01" + fixture)
# A full-size one: 64-byte ECP-256 public value, 32-byte nonce, NAT
# detection notifies (SHA-1 sized data) and fragmentation supported.
nat_src = h("00 00 4004") + bytes(range(20))
nat_dst = h("00 00 4005") + bytes(range(20, 40))
frag = h("00 00 402e")
full = sa_init(bytes(range(64)), bytes(range(100, 132)), [nat_src, nat_dst, frag])
write("ike_message", "sa_init_full", b"\x00" + full)
write("ike_message", "sa_init_full_endpoint_500", b"\x01" + full)
write("ike_message", "sa_init_full_endpoint_4500", b"\x03" + full)
# A payload chain from the notify/delete/TS/ID unit test, as a message.
chain = h(
    "2a 00 000c 03 04 4009 c0ffee01"
    "2c 00 0010 03 04 0002 01020304 05060708"
    "23 00 0018 01 000000 07 00 0010 0000 ffff 0a000000 0a0000ff"
    "00 00 000c 01 000000 c0000201"
)
write("ike_message", "informational_chain", b"\x00" + ike_header(0x29, 28 + len(chain), 0x25, 0x20) + chain)
# An IKE_AUTH request with an SK payload (opaque body) and an SKF fragment.
sk = h("23 00 0018") + bytes(20)
write("ike_message", "auth_sk", b"\x00" + ike_header(0x2e, 28 + len(sk), 0x23) + sk)
skf = h("23 00 001c 0001 0002") + bytes(20)
write("ike_message", "auth_skf", b"\x00" + ike_header(0x35, 28 + len(skf), 0x23) + skf)

# ---------------------------------------------------------------- BGP
MARKER = b"\xff" * 16


def bgp(msg_type: int, body: bytes) -> bytes:
    return MARKER + (19 + len(body)).to_bytes(2, "big") + bytes([msg_type]) + body


UPDATE_BODY = h(
    "0000 001b"
    "40 01 01 00"
    "40 02 06 02 01 0000fde8"
    "40 03 04 a9fe1502"
    "80 04 04 00000064"
    "18 0a0100"
)
OPEN = h(
    "ffffffffffffffffffffffffffffffff 0031 01"
    "04 fc00 001e a9fe1501 14"
    "02 06 01 04 0001 00 01"
    "02 02 02 00"
    "02 06 41 04 0000fc00"
)
assert len(OPEN) == 49
# bit 0: 4-octet AS, bit 1: external, bit 2: session stream.
write("bgp_update", "update_body_4oct_ebgp", b"\x03" + UPDATE_BODY)
write("bgp_update", "update_msg_4oct_ebgp", b"\x03" + bgp(2, UPDATE_BODY))
# 2-octet session: AS_PATH with AS_TRANS and an AS4_PATH, AGGREGATOR.
two = h(
    "0000 0029"
    "40 01 01 00"
    "40 02 08 02 03 0064 5ba0 00c8"
    "c0 11 0e 02 03 00000064 fa56ea01 000000c8"
    "40 03 04 a9fe1502"
    "08 0a"
)
write("bgp_update", "update_body_2oct_as4_path", b"\x02" + two)
# IBGP with LOCAL_PREF, COMMUNITIES, MP_REACH (IPv6) and MP_UNREACH.
attrs = (
    h("40 01 01 02")
    + h("40 02 0a 02 02 0000fde8 0000fc00")
    + h("40 05 04 00000064")
    + h("c0 08 08 fde80001 fde80002")
    + h("80 0e 1a 0002 01 10 20010db8000000000000000000000001 00 20 20010db8")
    + h("80 0f 0a 0002 01 30 20010db80001")
)
ibgp = len(attrs).to_bytes(2, "big")
write("bgp_update", "update_body_ibgp_mp", b"\x01" + h("0000") + ibgp + attrs)
write("bgp_update", "withdraw_body", b"\x03" + h("0004 18 0a0100 0000"))
write("bgp_update", "end_of_rib_v4", b"\x03" + h("0000 0000"))
write("bgp_update", "notification", b"\x03" + bgp(3, h("06 02")))
write("bgp_update", "route_refresh", b"\x03" + bgp(5, h("0001 00 01")))
write("bgp_update", "open", b"\x03" + OPEN)
# Session path: a stream of UPDATE, KEEPALIVE, UPDATE (split anywhere).
stream = bgp(2, UPDATE_BODY) + bgp(4, b"") + bgp(2, h("0004 18 0a0100 0000"))
write("bgp_update", "session_stream", b"\x07" + stream)
write("bgp_update", "session_notification", b"\x07" + bgp(3, h("06 04")))


# ---------------------------------------------------------------- IKEv1
# Main Mode message 1 of control/src/ikev1/tests.rs (mm1_bytes), with a
# length patched in, behind each selector: even (codec), odd (endpoint on
# 500), 3 (endpoint on 4500, non-ESP marker), 5 (endpoint, fed twice).
MM1 = h(
    "0102030405060708 0000000000000000 01 10 02 00 00000000 00000000"
    "0d00003c 00000001 00000001"
    "00000030 01010001"
    "00000028 01010000"
    "80010007 800e0080 80020004 80030001 8004000e 800b0001 000c0004 00007080"
    "0d000014 4a131c81070358455c5728f20e95452f"
    "00000014 afcad71368a1f1c96b8696fc77570100"
)
MM1 = MM1[:24] + len(MM1).to_bytes(4, "big") + MM1[28:]
write("ikev1_message", "mm1_codec", b"\x00" + MM1)
write("ikev1_message", "mm1_endpoint_500", b"\x01" + MM1)
write("ikev1_message", "mm1_endpoint_4500", b"\x03" + bytes(4) + MM1)
write("ikev1_message", "mm1_endpoint_twice", b"\x05" + MM1)
AGGR = MM1[:18] + b"\x04" + MM1[19:]
write("ikev1_message", "aggressive_endpoint", b"\x01" + AGGR)
# ---------------------------------------------------------------- OpenVPN
# Fixtures of control/src/openvpn/wire.rs and key_method.rs behind 0x00
# (every decoder); behind 0x01 datagram sequences for the server:
# [len][flags][bytes], flags bit 0 = wrap with the tls-crypt key.
OVPN_HEADER = h("38 0102030405060708 0f000001 65432110")
OVPN_BODY = h("02 00000000 00000001 0909090909090909 00000002 1603")
KM2 = (
    h("00000000 02") + b"\x11" * 112
    + len(b"V4,dev-type tun,tls-client\0").to_bytes(2, "big") + b"V4,dev-type tun,tls-client\0"
    + h("0000 0000")
    + (lambda s: len(s).to_bytes(2, "big") + s)(b"IV_VER=2.6.14\nIV_PROTO=990\nIV_CIPHERS=AES-256-GCM\n\0")
)
write("openvpn_packet", "control_header", b"\x00" + OVPN_HEADER + OVPN_BODY)
write("openvpn_packet", "control_body", b"\x00" + OVPN_BODY)
write("openvpn_packet", "data_v2", b"\x00" + h("48 000102") + bytes(24))
write("openvpn_packet", "key_method_2", b"\x00" + KM2)


def dgram(flags: int, data: bytes) -> bytes:
    return bytes([len(data), flags]) + data


RESET = h("38 00 00000000")  # hard reset: no acks, message 0
HELLO = h("20 01 00000000 0102030405060708 00000001") + h("160301") + bytes(40)
write("openvpn_packet", "server_reset_then_control", b"\x01" + dgram(1, RESET) + dgram(1, HELLO))
write(
    "openvpn_packet",
    "server_two_clients_and_timeout",
    b"\x01" + dgram(1, RESET) + dgram(3, RESET) + dgram(9, h("28 00 00000000")) + dgram(0, h("48 000000") + bytes(30)),
)
