//! The per-packet pipeline.
//!
//! Each `handle_*` takes one Ethernet frame as received on a port, rewrites
//! it in place (decap/encap, new Ethernet header) and says where it goes.
//! The runtime moves the buffer to that port's tx burst, or frees it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use dataplane::esp::{self, DropReason};
use dataplane::wire::ethernet::{EthernetFrame, HEADER_LEN as ETH_LEN};
use dataplane::wire::ipv4::Ipv4Packet;
use dataplane::wire::ipv6::Ipv6Packet;
use dataplane::wire::nat_t::{IKE_PORT, NAT_T_PORT, NatTKind, NatTPacket};
use dataplane::wire::{EtherType, IpProtocol};
use fib::{Fib, Target, TunnelId};
use netbuf::PacketBuffer;

use crate::command::{Command, Event, WorkerEnd};
use crate::stats::{Drop, WorkerStats};
use crate::tables::SaTables;

/// Where a packet goes after the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send on the outside port (ESP, or our own IKE).
    ToOutside,
    /// Send on the inside port.
    ToInside,
    /// Hand to the kernel through the exception (tap) port.
    ToKernel,
    /// Free it; the reason is already counted.
    Drop,
}

/// The addresses and neighbours the worker needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addresses {
    /// Our MAC on the outside port.
    pub outside_mac: [u8; 6],
    /// The outside next hop's MAC (router toward the peers).
    pub outside_gateway_mac: [u8; 6],
    /// Our MAC on the inside port.
    pub inside_mac: [u8; 6],
    /// The inside next hop's MAC (the VPC router).
    pub inside_gateway_mac: [u8; 6],
    /// The kernel's MAC on the tap interface.
    pub kernel_mac: [u8; 6],
    /// Our outside addresses (IKE and ESP terminate here).
    pub outside_v4: Vec<Ipv4Addr>,
    /// Our outside IPv6 addresses.
    pub outside_v6: Vec<Ipv6Addr>,
    /// Addresses we answer ARP for on the inside port.
    pub inside_v4: Vec<Ipv4Addr>,
}

impl Addresses {
    fn is_outside_local(&self, a: IpAddr) -> bool {
        match a {
            IpAddr::V4(a) => self.outside_v4.contains(&a),
            IpAddr::V6(a) => self.outside_v6.contains(&a),
        }
    }
}

/// One worker's state: its tables, addresses, counters and control ring.
#[derive(Debug)]
pub struct Worker {
    tables: SaTables,
    fib: Arc<Fib>,
    addrs: Addresses,
    stats: WorkerStats,
    ring: WorkerEnd,
}

/// What a parsed frame is.
enum Class {
    Arp,
    /// ESP to us: offset of the ESP header from the IP header.
    Esp {
        esp_offset: usize,
    },
    /// For the kernel (IKE, ICMP to us, …).
    Punt,
    /// Not for us / keepalive: dropped with this reason.
    Drop(Drop),
}

impl Worker {
    /// A worker with empty tables for up to `capacity` SAs each way.
    #[must_use]
    pub fn new(ring: WorkerEnd, capacity: usize) -> Self {
        Self {
            tables: SaTables::with_capacity(capacity),
            fib: Arc::new(Fib::default()),
            addrs: Addresses::default(),
            stats: WorkerStats::default(),
            ring,
        }
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    /// The SA tables (read-only: changes go through commands).
    #[must_use]
    pub fn tables(&self) -> &SaTables {
        &self.tables
    }

    /// Applies every queued command (call between bursts); returns how many.
    pub fn apply_commands(&mut self) -> usize {
        let mut n = 0;
        while let Ok(cmd) = self.ring.commands.pop() {
            let seq = self.ring.applied;
            self.ring.applied += 1;
            n += 1;
            let outcome = self.apply(cmd);
            let event = match outcome {
                Ok(()) => Event::Done { seq },
                Err(reason) => Event::Failed { seq, reason },
            };
            self.emit(event);
        }
        n
    }

    fn apply(&mut self, cmd: Command) -> Result<(), &'static str> {
        match cmd {
            Command::AddInbound(sa) => match self.tables.add_inbound(sa) {
                Ok(Some(old)) => self.emit(Event::RetiredInbound(old)),
                Ok(None) => {}
                Err(sa) => {
                    self.emit(Event::RetiredInbound(sa));
                    return Err("inbound SA table full");
                }
            },
            Command::RemoveInbound { spi } => {
                let sa = self
                    .tables
                    .remove_inbound(spi)
                    .ok_or("no such inbound SA")?;
                self.emit(Event::RetiredInbound(sa));
            }
            Command::SetOutbound { tunnel, sa } => match self.tables.set_outbound(tunnel, sa) {
                Ok(Some(old)) => self.emit(Event::RetiredOutbound(old)),
                Ok(None) => {}
                Err(sa) => {
                    self.emit(Event::RetiredOutbound(sa));
                    return Err("outbound SA table full or tunnel id too large");
                }
            },
            Command::RemoveOutbound { tunnel } => {
                let sa = self
                    .tables
                    .remove_outbound(tunnel)
                    .ok_or("no outbound SA for the tunnel")?;
                self.emit(Event::RetiredOutbound(sa));
            }
            Command::SetFib(fib) => {
                let old = std::mem::replace(&mut self.fib, fib);
                self.emit(Event::RetiredFib(old));
            }
            Command::SetAddresses(addrs) => self.addrs = *addrs,
        }
        Ok(())
    }

    /// Queues an event; if the control core has fallen so far behind that
    /// the ring is full, the event (and what it carries) is dropped here.
    fn emit(&mut self, event: Event) {
        let _ = self.ring.events.push(event);
    }

    /// A frame received on the outside port.
    pub fn handle_outside<B: PacketBuffer>(&mut self, buf: &mut B) -> Action {
        match self.classify_outside(buf.as_ref()) {
            Class::Arp => self.arp_reply(buf, Side::Outside),
            Class::Punt => self.punt(buf),
            Class::Drop(reason) => self.drop(reason),
            Class::Esp { esp_offset } => {
                let Some(spi) = read_spi(buf.as_ref(), ETH_LEN + esp_offset) else {
                    return self.drop(Drop::Malformed);
                };
                if buf.trim_from_start(ETH_LEN).is_err() {
                    return self.drop(Drop::Malformed);
                }
                let Some(sa) = self.tables.inbound_mut(spi) else {
                    return self.drop(Drop::UnknownSpi);
                };
                if let Err(r) = esp::decap(sa, buf, esp_offset) {
                    return self.esp_drop(r);
                }
                self.stats.decap_packets += 1;
                self.route(buf, Side::Outside)
            }
        }
    }

    /// A frame received on the inside port.
    pub fn handle_inside<B: PacketBuffer>(&mut self, buf: &mut B) -> Action {
        match ethertype(buf.as_ref()) {
            Some(EtherType::Arp) => self.arp_reply(buf, Side::Inside),
            Some(EtherType::Ipv4 | EtherType::Ipv6) => {
                if buf.trim_from_start(ETH_LEN).is_err() {
                    return self.drop(Drop::Malformed);
                }
                self.route(buf, Side::Inside)
            }
            _ => self.drop(Drop::Malformed),
        }
    }

    /// A frame the kernel sent out of the tap interface.
    pub fn handle_kernel<B: PacketBuffer>(&mut self, buf: &mut B) -> Action {
        match ethertype(buf.as_ref()) {
            Some(EtherType::Ipv4 | EtherType::Ipv6) => {}
            Some(EtherType::Arp) => return self.drop(Drop::ArpIgnored),
            _ => return self.drop(Drop::Malformed),
        }
        let Some((src, _)) = ip_addrs(&buf.as_ref()[ETH_LEN..]) else {
            return self.drop(Drop::Malformed);
        };
        if self.addrs.is_outside_local(src) {
            // Our own IKE (or ICMP) toward a peer: straight out.
            let (dst, src) = (self.addrs.outside_gateway_mac, self.addrs.outside_mac);
            set_macs(buf.as_mut(), dst, src);
            return Action::ToOutside;
        }
        if buf.trim_from_start(ETH_LEN).is_err() {
            return self.drop(Drop::Malformed);
        }
        match self.route(buf, Side::Kernel) {
            Action::ToKernel => self.drop(Drop::KernelUnroutable),
            a => a,
        }
    }

    /// Ages SAs (time lifetimes) and reports every soft or hard limit
    /// reached since the last call as an [`Event::Lifetime`]. Call between
    /// bursts, about once a second; `now_secs` is on the clock the SAs were
    /// installed with.
    pub fn handle_timeout(&mut self, now_secs: u64) {
        // SAs report each limit once, when polled: poll only while there is
        // room to carry the event, and the rest is reported next time.
        const MAX_PER_CALL: usize = 16;
        let mut pending: [Option<Event>; MAX_PER_CALL] = Default::default();
        let mut n = 0;
        for sa in self.tables.inbound_iter_mut() {
            sa.handle_timeout(now_secs);
            if n < MAX_PER_CALL
                && let Some(event) = sa.poll_lifetime()
            {
                pending[n] = Some(Event::Lifetime {
                    spi: sa.spi(),
                    inbound: true,
                    event,
                });
                n += 1;
            }
        }
        for sa in self.tables.outbound_iter_mut() {
            sa.handle_timeout(now_secs);
            if n < MAX_PER_CALL
                && let Some(event) = sa.poll_lifetime()
            {
                pending[n] = Some(Event::Lifetime {
                    spi: sa.spi(),
                    inbound: false,
                    event,
                });
                n += 1;
            }
        }
        for e in pending.into_iter().flatten() {
            self.emit(e);
        }
    }

    fn classify_outside(&self, frame: &[u8]) -> Class {
        let ip = match ethertype(frame) {
            Some(EtherType::Arp) => return Class::Arp,
            Some(EtherType::Ipv4 | EtherType::Ipv6) => &frame[ETH_LEN..],
            _ => return Class::Drop(Drop::Malformed),
        };
        let Some((_, dst)) = ip_addrs(ip) else {
            return Class::Drop(Drop::Malformed);
        };
        if !self.addrs.is_outside_local(dst) {
            return Class::Drop(Drop::NotLocal);
        }
        let Some((protocol, offset)) = upper_layer(ip) else {
            return Class::Drop(Drop::Malformed);
        };
        match protocol {
            IpProtocol::Esp => Class::Esp { esp_offset: offset },
            IpProtocol::Udp => {
                let Some(udp) = ip.get(offset..offset + 8) else {
                    return Class::Drop(Drop::Malformed);
                };
                let dport = u16::from_be_bytes([udp[2], udp[3]]);
                if dport == IKE_PORT {
                    return Class::Punt;
                }
                if dport != NAT_T_PORT {
                    return Class::Punt;
                }
                let payload = ip.get(offset + 8..).unwrap_or(&[]);
                match NatTPacket::new_checked(payload).map(|p| p.kind()) {
                    Ok(NatTKind::Esp) => Class::Esp {
                        esp_offset: offset + 8,
                    },
                    Ok(NatTKind::Ike) => Class::Punt,
                    Ok(NatTKind::Keepalive) => Class::Drop(Drop::NatKeepalive),
                    Err(_) => Class::Drop(Drop::Malformed),
                }
            }
            _ => Class::Punt,
        }
    }

    /// Routes an IP packet (no Ethernet header) by its destination.
    fn route<B: PacketBuffer>(&mut self, buf: &mut B, from: Side) -> Action {
        let Some((_, dst)) = ip_addrs(buf.as_ref()) else {
            return self.drop(Drop::Malformed);
        };
        let Some(target) = self.fib.lookup(dst) else {
            return self.drop(Drop::NoRoute);
        };
        let target = self.fib.resolve(target, flow_hash(buf.as_ref()));
        match target {
            Target::Tunnel(t) => self.encap(buf, t),
            Target::Inside if from == Side::Inside => self.drop(Drop::Hairpin),
            Target::Inside => {
                let (dst, src) = (self.addrs.inside_gateway_mac, self.addrs.inside_mac);
                self.push_eth(buf, dst, src, Action::ToInside)
            }
            Target::Local => {
                let (dst, src) = (self.addrs.kernel_mac, self.addrs.outside_mac);
                match self.push_eth(buf, dst, src, Action::ToKernel) {
                    Action::ToKernel => {
                        self.stats.punted += 1;
                        Action::ToKernel
                    }
                    a => a,
                }
            }
            Target::Blackhole | Target::Ecmp(_) => self.drop(Drop::Blackhole),
        }
    }

    fn encap<B: PacketBuffer>(&mut self, buf: &mut B, tunnel: TunnelId) -> Action {
        let Some(sa) = self.tables.outbound_mut(tunnel) else {
            return self.drop(Drop::NoOutboundSa);
        };
        if let Err(r) = esp::encap(sa, buf) {
            return self.esp_drop(r);
        }
        self.stats.encap_packets += 1;
        let (dst, src) = (self.addrs.outside_gateway_mac, self.addrs.outside_mac);
        self.push_eth(buf, dst, src, Action::ToOutside)
    }

    fn push_eth<B: PacketBuffer>(
        &mut self,
        buf: &mut B,
        dst: [u8; 6],
        src: [u8; 6],
        then: Action,
    ) -> Action {
        let ethertype: u16 = match buf.as_ref().first().map(|b| b >> 4) {
            Some(4) => 0x0800,
            Some(6) => 0x86dd,
            _ => return self.drop(Drop::Malformed),
        };
        let Ok(hdr) = buf.prepend(ETH_LEN) else {
            return self.esp_drop(DropReason::NoHeadroom);
        };
        hdr[0..6].copy_from_slice(&dst);
        hdr[6..12].copy_from_slice(&src);
        hdr[12..14].copy_from_slice(&ethertype.to_be_bytes());
        then
    }

    fn punt<B: PacketBuffer>(&mut self, buf: &mut B) -> Action {
        let kernel = self.addrs.kernel_mac;
        if let Some(dst) = buf.as_mut().get_mut(0..6) {
            dst.copy_from_slice(&kernel);
        }
        self.stats.punted += 1;
        Action::ToKernel
    }

    /// Answers an ARP request for one of our addresses on `side`, in place.
    fn arp_reply<B: PacketBuffer>(&mut self, buf: &mut B, side: Side) -> Action {
        let (mac, mine) = match side {
            Side::Outside => (self.addrs.outside_mac, &self.addrs.outside_v4),
            _ => (self.addrs.inside_mac, &self.addrs.inside_v4),
        };
        let f = buf.as_mut();
        // Ethernet + ARP for IPv4 over Ethernet: 14 + 28 bytes.
        let Some(arp) = f.get(ETH_LEN..ETH_LEN + 28) else {
            return self.drop(Drop::Malformed);
        };
        let is_request = arp[0..8] == [0, 1, 8, 0, 6, 4, 0, 1];
        let target = Ipv4Addr::new(arp[24], arp[25], arp[26], arp[27]);
        if !is_request || !mine.contains(&target) {
            return self.drop(Drop::ArpIgnored);
        }
        let mut sender = [0u8; 10];
        sender.copy_from_slice(&f[ETH_LEN + 8..ETH_LEN + 18]);
        let a = &mut f[ETH_LEN..ETH_LEN + 28];
        a[7] = 2; // reply
        a[18..28].copy_from_slice(&sender); // target hw + ip = old sender
        a[8..14].copy_from_slice(&mac);
        a[14..18].copy_from_slice(&target.octets());
        let requester: [u8; 6] = [
            sender[0], sender[1], sender[2], sender[3], sender[4], sender[5],
        ];
        set_macs(f, requester, mac);
        self.stats.arp_replies += 1;
        match side {
            Side::Outside => Action::ToOutside,
            _ => Action::ToInside,
        }
    }

    #[inline]
    fn drop(&mut self, reason: Drop) -> Action {
        self.stats.drop(reason);
        Action::Drop
    }

    #[inline]
    fn esp_drop(&mut self, reason: DropReason) -> Action {
        self.stats.esp_drop(reason);
        Action::Drop
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Outside,
    Inside,
    Kernel,
}

fn ethertype(frame: &[u8]) -> Option<EtherType> {
    EthernetFrame::new_checked(frame)
        .ok()
        .map(|f| f.ethertype())
}

fn set_macs(frame: &mut [u8], dst: [u8; 6], src: [u8; 6]) {
    if let Some(h) = frame.get_mut(0..12) {
        h[0..6].copy_from_slice(&dst);
        h[6..12].copy_from_slice(&src);
    }
}

fn read_spi(frame: &[u8], at: usize) -> Option<u32> {
    let b = frame.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Source and destination of an IPv4 or IPv6 packet.
fn ip_addrs(ip: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match ip.first()? >> 4 {
        4 => {
            let p = Ipv4Packet::new_checked(ip).ok()?;
            Some((p.src_addr().into(), p.dst_addr().into()))
        }
        6 => {
            let p = Ipv6Packet::new_checked(ip).ok()?;
            Some((p.src_addr().into(), p.dst_addr().into()))
        }
        _ => None,
    }
}

/// Upper-layer protocol and its offset from the start of the IP header.
fn upper_layer(ip: &[u8]) -> Option<(IpProtocol, usize)> {
    match ip.first()? >> 4 {
        4 => {
            let p = Ipv4Packet::new_checked(ip).ok()?;
            if p.is_fragment() {
                // Outer fragments are the kernel's to reassemble.
                return Some((IpProtocol::Unknown(255), usize::from(p.header_len())));
            }
            Some((p.protocol(), usize::from(p.header_len())))
        }
        6 => {
            let p = Ipv6Packet::new_checked(ip).ok()?;
            let u = p.upper_layer().ok()?;
            if u.fragment.is_some() {
                return Some((IpProtocol::Unknown(255), u.offset));
            }
            Some((u.protocol, u.offset))
        }
        _ => None,
    }
}

/// A flow hash over addresses and (for TCP/UDP) ports, for ECMP.
fn flow_hash(ip: &[u8]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |bytes: &[u8]| {
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    match ip.first().map(|b| b >> 4) {
        Some(4) if ip.len() >= 20 => {
            mix(&ip[12..20]);
            let hl = usize::from(ip[0] & 0x0f) * 4;
            if matches!(ip[9], 6 | 17) {
                mix(ip.get(hl..hl + 4).unwrap_or(&[]));
            }
        }
        Some(6) if ip.len() >= 40 => {
            mix(&ip[8..40]);
            if matches!(ip[6], 6 | 17) {
                mix(ip.get(40..44).unwrap_or(&[]));
            }
        }
        _ => {}
    }
    // Fold to 32 bits.
    #[allow(clippy::cast_possible_truncation)]
    let folded = (h ^ (h >> 32)) as u32;
    folded
}
