//! Per-worker counters: one writer (the worker), summed by the control core.

use dataplane::esp::{DropCounters, DropReason};
use dataplane::ovpn::DataDrop;

/// Why the worker dropped a packet outside the ESP code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Drop {
    /// Not Ethernet/IPv4/IPv6/ARP, or a header that does not parse.
    Malformed = 0,
    /// An outside packet not addressed to one of our addresses.
    NotLocal,
    /// No route for the inner destination.
    NoRoute,
    /// The route says blackhole.
    Blackhole,
    /// Routed to a tunnel that has no outbound SA (yet).
    NoOutboundSa,
    /// ESP for an SPI we do not have.
    UnknownSpi,
    /// A NAT-T keepalive (RFC 3948 § 2.3): consumed, counted.
    NatKeepalive,
    /// Inside traffic routed back to the inside (no hairpin).
    Hairpin,
    /// ARP that is not a request for one of our addresses.
    ArpIgnored,
    /// Kernel (exception path) traffic with nowhere to go.
    KernelUnroutable,
    /// An ESP drop (see [`WorkerStats::esp`]).
    Esp,
    /// Over the tunnel's rate policy (either direction; per tunnel the
    /// direction is counted, see [`crate::TunnelSnapshot`]).
    Policed,
    /// An IPv6 Neighbor Solicitation on the outside port for an address
    /// that is not one of ours.
    NdIgnored,
    /// An outer fragment dropped by the outer reassembly (the reason in
    /// [`WorkerStats::outer`]).
    OuterFragment,
    /// An OpenVPN data-channel drop (the reason in [`WorkerStats::ovpn`]).
    Ovpn,
    /// `P_DATA_V2` with a peer-id no client of this worker has.
    OvpnUnknownPeer,
    /// A packet from an OpenVPN client whose inner source is not the
    /// client's tunnel address (or not IPv4).
    OvpnSpoofedSource,
    /// Routed to an OpenVPN client this worker does not hold.
    OvpnNoClient,
    /// `P_DATA_V2` whose outer IPv4 header checksum is wrong.
    OvpnOuterBadChecksum,
}

impl Drop {
    /// Number of reasons.
    pub const COUNT: usize = Self::OvpnOuterBadChecksum as usize + 1;
    /// All reasons in order.
    pub const ALL: [Self; Self::COUNT] = [
        Self::Malformed,
        Self::NotLocal,
        Self::NoRoute,
        Self::Blackhole,
        Self::NoOutboundSa,
        Self::UnknownSpi,
        Self::NatKeepalive,
        Self::Hairpin,
        Self::ArpIgnored,
        Self::KernelUnroutable,
        Self::Esp,
        Self::Policed,
        Self::NdIgnored,
        Self::OuterFragment,
        Self::Ovpn,
        Self::OvpnUnknownPeer,
        Self::OvpnSpoofedSource,
        Self::OvpnNoClient,
        Self::OvpnOuterBadChecksum,
    ];

    /// A stable name for logs and metrics.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::NotLocal => "not_local",
            Self::NoRoute => "no_route",
            Self::Blackhole => "blackhole",
            Self::NoOutboundSa => "no_outbound_sa",
            Self::UnknownSpi => "unknown_spi",
            Self::NatKeepalive => "nat_keepalive",
            Self::Hairpin => "hairpin",
            Self::ArpIgnored => "arp_ignored",
            Self::KernelUnroutable => "kernel_unroutable",
            Self::Esp => "esp",
            Self::Policed => "policed",
            Self::NdIgnored => "nd_ignored",
            Self::OuterFragment => "outer_fragment",
            Self::Ovpn => "ovpn",
            Self::OvpnUnknownPeer => "ovpn_unknown_peer",
            Self::OvpnSpoofedSource => "ovpn_spoofed_source",
            Self::OvpnNoClient => "ovpn_no_client",
            Self::OvpnOuterBadChecksum => "ovpn_outer_bad_checksum",
        }
    }
}

/// The worker's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Packets decapsulated and forwarded.
    pub decap_packets: u64,
    /// Packets encapsulated and sent.
    pub encap_packets: u64,
    /// Packets handed to the kernel.
    pub punted: u64,
    /// ARP replies and IPv6 Neighbor Advertisements (outside port) sent.
    pub arp_replies: u64,
    /// Transit TCP SYNs whose MSS was clamped (both directions).
    pub mss_clamped: u64,
    /// Inner IPv4 packets whose DF bit the tunnel's clear-DF option reset.
    pub df_cleared: u64,
    /// Inner packets fragmented before encryption.
    pub fragmented: u64,
    /// Extra fragments sent (beyond the first of each packet).
    pub fragments_out: u64,
    /// ICMP "fragmentation needed" / "packet too big" sent.
    pub icmp_sent: u64,
    /// ICMP errors not sent (rate limit, no source address).
    pub icmp_suppressed: u64,
    /// Inner fragments held for reassembly (freed, not dropped).
    pub fragments_held: u64,
    /// Inner datagrams reassembled and forwarded.
    pub reassembled: u64,
    /// Outer fragments (ESP / UDP to us) held for reassembly before
    /// decap (freed, not dropped).
    pub outer_fragments_held: u64,
    /// Outer datagrams reassembled (then decapsulated or punted).
    pub outer_reassembled: u64,
    /// Packets above the inside MTU fragmented toward the inside port.
    pub inside_fragmented: u64,
    /// Extra fragments sent on the inside port.
    pub inside_fragments_out: u64,
    /// OpenVPN data packets opened (tunnel packets, pings and OCC).
    pub ovpn_decap_packets: u64,
    /// OpenVPN data packets sealed toward clients.
    pub ovpn_encap_packets: u64,
    /// OpenVPN keepalive pings and OCC messages consumed (not drops).
    pub ovpn_keepalives: u64,
    /// OpenVPN control-channel datagrams handed to the kernel (also in
    /// [`WorkerStats::punted`]).
    pub ovpn_control_punted: u64,
    /// Drops by pipeline reason.
    pub drops: [u64; Drop::COUNT],
    /// OpenVPN data-channel drops by reason ([`DataDrop::index`]); each
    /// also counts [`Drop::Ovpn`].
    pub ovpn: [u64; DataDrop::COUNT],
    /// Drops by ESP reason.
    pub esp: DropCounters,
    /// Outer reassembly drops by reason (`Reassembly*`, and
    /// `InnerMalformed` for a bad fragment header): the fragment being
    /// handled also counts [`Drop::OuterFragment`]; timeouts and
    /// evictions count here only, once per datagram.
    pub outer: DropCounters,
}

impl WorkerStats {
    /// Counts a pipeline drop.
    #[inline]
    pub fn drop(&mut self, reason: Drop) {
        self.drops[reason as usize] += 1;
    }

    /// Counts an ESP drop.
    #[inline]
    pub fn esp_drop(&mut self, reason: DropReason) {
        self.drops[Drop::Esp as usize] += 1;
        self.esp.count(reason);
    }

    /// Counts an outer reassembly drop.
    #[inline]
    pub fn outer_drop(&mut self, reason: DropReason) {
        self.drops[Drop::OuterFragment as usize] += 1;
        self.outer.count(reason);
    }

    /// Counts an OpenVPN data-channel drop.
    #[inline]
    pub fn ovpn_drop(&mut self, reason: DataDrop) {
        self.drops[Drop::Ovpn as usize] += 1;
        self.ovpn[reason.index()] += 1;
    }

    /// Drops of one reason.
    #[must_use]
    pub fn dropped(&self, reason: Drop) -> u64 {
        self.drops[reason as usize]
    }

    /// All drops.
    #[must_use]
    pub fn total_dropped(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// Summing the counters of several workers (the runtime's totals). The
/// destructuring makes a new field a compile error here until it is summed.
impl std::ops::AddAssign<&Self> for WorkerStats {
    fn add_assign(&mut self, o: &Self) {
        let Self {
            decap_packets,
            encap_packets,
            punted,
            arp_replies,
            mss_clamped,
            df_cleared,
            fragmented,
            fragments_out,
            icmp_sent,
            icmp_suppressed,
            fragments_held,
            reassembled,
            outer_fragments_held,
            outer_reassembled,
            inside_fragmented,
            inside_fragments_out,
            ovpn_decap_packets,
            ovpn_encap_packets,
            ovpn_keepalives,
            ovpn_control_punted,
            drops,
            ovpn,
            esp,
            outer,
        } = o;
        for (a, b) in [
            (&mut self.decap_packets, decap_packets),
            (&mut self.encap_packets, encap_packets),
            (&mut self.punted, punted),
            (&mut self.arp_replies, arp_replies),
            (&mut self.mss_clamped, mss_clamped),
            (&mut self.df_cleared, df_cleared),
            (&mut self.fragmented, fragmented),
            (&mut self.fragments_out, fragments_out),
            (&mut self.icmp_sent, icmp_sent),
            (&mut self.icmp_suppressed, icmp_suppressed),
            (&mut self.fragments_held, fragments_held),
            (&mut self.reassembled, reassembled),
            (&mut self.outer_fragments_held, outer_fragments_held),
            (&mut self.outer_reassembled, outer_reassembled),
            (&mut self.inside_fragmented, inside_fragmented),
            (&mut self.inside_fragments_out, inside_fragments_out),
            (&mut self.ovpn_decap_packets, ovpn_decap_packets),
            (&mut self.ovpn_encap_packets, ovpn_encap_packets),
            (&mut self.ovpn_keepalives, ovpn_keepalives),
            (&mut self.ovpn_control_punted, ovpn_control_punted),
        ] {
            *a = a.wrapping_add(*b);
        }
        for (a, b) in self.drops.iter_mut().zip(drops) {
            *a = a.wrapping_add(*b);
        }
        for (a, b) in self.ovpn.iter_mut().zip(ovpn) {
            *a = a.wrapping_add(*b);
        }
        for (a, b) in self.esp.0.iter_mut().zip(esp.0) {
            *a = a.wrapping_add(b);
        }
        for (a, b) in self.outer.0.iter_mut().zip(outer.0) {
            *a = a.wrapping_add(b);
        }
    }
}
