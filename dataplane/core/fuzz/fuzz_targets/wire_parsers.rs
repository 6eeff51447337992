//! Every `new_checked` and `Repr::parse` of `dataplane::wire` on arbitrary
//! bytes: none may panic (the module's no-panic contract). Accessors are
//! called on every view that checks, and the mutating entry points that
//! take untrusted packets (`clamp_mss`, `decrement_ttl`) run on a copy.
#![no_main]

use core::net::{Ipv4Addr, Ipv6Addr};

use dataplane::wire::{
    EspPacket, EspRepr, EspTrailer, EthernetFrame, EthernetRepr, Icmpv4Packet, Icmpv4Repr,
    Icmpv6Packet, Icmpv6Repr, IpPair, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, NatTPacket,
    NatTRepr, TcpPacket, TcpRepr, UdpPacket, UdpRepr,
};
use libfuzzer_sys::fuzz_target;

const V4: IpPair = IpPair::V4 {
    src: Ipv4Addr::new(192, 0, 2, 1),
    dst: Ipv4Addr::new(198, 51, 100, 1),
};
const V6_SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const V6_DST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const V6: IpPair = IpPair::V6 {
    src: V6_SRC,
    dst: V6_DST,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = EthernetFrame::new_checked(data) {
        let _ = (
            frame.dst_addr(),
            frame.src_addr(),
            frame.ethertype(),
            frame.payload(),
        );
        let _ = EthernetRepr::parse(&frame);
    }

    if let Ok(packet) = Ipv4Packet::new_checked(data) {
        let _ = (
            packet.dscp(),
            packet.ecn(),
            packet.ident(),
            packet.frag_offset_bytes(),
        );
        let _ = (
            packet.is_fragment(),
            packet.protocol(),
            packet.verify_checksum(),
        );
        let _ = (packet.options(), packet.payload());
        let _ = Ipv4Repr::parse(&packet);
        let mut copy = data.to_vec();
        if let Ok(mut packet) = Ipv4Packet::new_checked(&mut copy[..]) {
            packet.decrement_ttl();
            packet.rewrite_dscp(46);
            packet.rewrite_ecn(3);
        }
    }

    if let Ok(packet) = Ipv6Packet::new_checked(data) {
        let _ = (
            packet.traffic_class(),
            packet.flow_label(),
            packet.payload(),
        );
        let _ = packet.upper_layer();
        let _ = Ipv6Repr::parse(&packet);
    }

    for ips in [V4, V6] {
        if let Ok(packet) = UdpPacket::new_checked(data) {
            let _ = (packet.payload(), packet.verify_checksum(&ips));
            let _ = UdpRepr::parse(&packet, &ips);
        }
        if let Ok(packet) = TcpPacket::new_checked(data) {
            let _ = (packet.flags(), packet.payload(), packet.max_seg_size());
            for option in packet.options_iter() {
                let _ = option;
            }
            let _ = TcpRepr::parse(&packet, &ips);
        }
    }
    let mut copy = data.to_vec();
    if let Ok(mut packet) = TcpPacket::new_checked(&mut copy[..]) {
        let _ = packet.clamp_mss(1360);
    }

    if let Ok(packet) = Icmpv4Packet::new_checked(data) {
        let _ = (packet.msg_type(), packet.next_hop_mtu(), packet.data());
        let _ = Icmpv4Repr::parse(&packet);
    }
    if let Ok(packet) = Icmpv6Packet::new_checked(data) {
        let _ = (packet.msg_type(), packet.mtu(), packet.data());
        let _ = Icmpv6Repr::parse(&packet, V6_SRC, V6_DST);
    }

    if let Ok(packet) = EspPacket::new_checked(data) {
        let _ = (packet.spi(), packet.seq_number(), packet.payload());
        let _ = EspRepr::parse(&packet);
    }
    if let Ok(trailer) = EspTrailer::parse(data) {
        let _ = trailer.verify_default_padding(data);
        let _ = trailer.payload_len(data.len());
    }

    if let Ok(packet) = NatTPacket::new_checked(data) {
        let _ = (packet.kind(), packet.esp(), packet.ike_message());
        let _ = NatTRepr::parse(&packet);
    }
});
