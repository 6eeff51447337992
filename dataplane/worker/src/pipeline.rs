//! The per-packet pipeline.
//!
//! Each `handle_*` takes one Ethernet frame as received on a port, rewrites
//! it in place (decap/encap, new Ethernet header) and says where it goes.
//! The runtime moves the buffer to that port's tx burst, or frees it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::sync::Arc;

use dataplane::crypto::{CBC_BATCH, CryptoError, run_cbc_batch};
use dataplane::esp::decap::DecapTicket;
use dataplane::esp::encap::EncapTicket;
use dataplane::esp::frag::{self, Fit, FragConfig};
use dataplane::esp::mtu::{self, mss_clamp, mss_v4, mss_v6};
use dataplane::esp::reassembly::{Reassembler, Reassembly, ReassemblyConfig};
use dataplane::esp::sa::DfPolicy;
use dataplane::esp::{self, DropReason};
use dataplane::ovpn::{self, DATA_V2_OVERHEAD, DataDrop, Payload};
use dataplane::wire::ethernet::{EthernetFrame, HEADER_LEN as ETH_LEN};
use dataplane::wire::ipv4::Ipv4Packet;
use dataplane::wire::ipv6::Ipv6Packet;
use dataplane::wire::nat_t::{IKE_PORT, NAT_T_PORT, NatTKind, NatTPacket};
use dataplane::wire::{EtherType, IpProtocol};
use fib::{ClientId, Fib, Target, TunnelId};
use netbuf::{PacketBuffer, RxChecksum};

use crate::command::{Command, Event, NO_OWNER, SaSnapshot, WorkerEnd};
use crate::counters::{CountersHandle, TunnelCounterBlock};
use crate::nd;
use crate::ovpn::{ClientTable, OvpnClient};
use crate::policy::{Dir, Policers};
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
    /// Free it. Either the reason is already counted as a drop, or the
    /// pipeline consumed it: an inner or outer fragment whose data is
    /// held for reassembly (counted in [`WorkerStats::fragments_held`] or
    /// [`WorkerStats::outer_fragments_held`]).
    Drop,
}

/// The port a burst was received on (see [`Worker::handle_burst_io`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    /// The outside port: ESP, IKE, ARP/ND ([`Worker::handle_outside_io`]).
    Outside,
    /// The inside port: plaintext toward the tunnels
    /// ([`Worker::handle_inside_io`]).
    Inside,
    /// The exception (tap) port: the kernel's own traffic
    /// ([`Worker::handle_kernel_io`]).
    Kernel,
}

/// How many packets ahead of the one being handled
/// [`Worker::handle_burst_io`] looks up: that far ahead it finds a
/// packet's tunnel (or inbound SA) and prefetches the pointer to its SA,
/// its counters and its policer; [`PREFETCH_SA_AHEAD`] packets ahead it
/// prefetches the SA itself (per-packet state, header template, key
/// schedule and GHASH table), and [`PREFETCH_TABLE_AHEAD`] packets ahead,
/// for ESP, the line of the SPI table the look-up reads. One packet's
/// work (hundreds of nanoseconds) is longer than a miss to memory, so
/// stages two packets apart hide each dependent miss without holding so
/// many lines in flight that they evict each other.
pub const PREFETCH_AHEAD: usize = 4;

/// See [`PREFETCH_AHEAD`].
pub const PREFETCH_SA_AHEAD: usize = 2;

/// See [`PREFETCH_AHEAD`]: also how many packets the burst loop holds.
pub const PREFETCH_TABLE_AHEAD: usize = 8;

const _: () = assert!(
    PREFETCH_SA_AHEAD >= 1
        && PREFETCH_SA_AHEAD < PREFETCH_AHEAD
        && PREFETCH_AHEAD < PREFETCH_TABLE_AHEAD
);

/// What the prefetch stages found for a packet ahead.
#[derive(Debug, Clone, Copy)]
enum Hint {
    /// Nothing to prefetch (not for a tunnel, unknown, or the same SA as
    /// the packet before it).
    None,
    /// Not looked at yet (an inside or kernel frame before the look-up).
    Later,
    /// ESP with this SPI, its SPI-table line prefetched.
    Spi(u32),
    /// Toward this tunnel.
    Tunnel(TunnelId),
    /// ESP of the inbound SA at this index.
    Inbound(u32),
}

/// What the pipeline needs from the runtime besides the packet in hand:
/// empty buffers (for fragments and ICMP errors it originates) and a way
/// to send the extra packets it produces. The DPDK runtime implements it
/// with the worker's mempool and its tx bursts; tests with a `Vec`.
///
/// Neither call may block, allocate on the heap per packet or panic.
pub trait PacketIo<B> {
    /// An empty buffer from the worker's pool, `None` when it is dry (the
    /// packet that needed it is then dropped and counted).
    fn alloc(&mut self) -> Option<B>;
    /// An extra packet, complete with its Ethernet header, to be sent as
    /// a packet whose `handle_*` returned `action` (never
    /// [`Action::Drop`]).
    fn send(&mut self, action: Action, buf: B);
}

/// No pool: the pipeline can neither fragment nor originate ICMP errors.
/// Used by [`Worker::handle_outside`] and friends; oversized packets are
/// then dropped and counted ([`DropReason::FragmentFailed`],
/// [`DropReason::TooBig`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoIo;

impl<B> PacketIo<B> for NoIo {
    fn alloc(&mut self) -> Option<B> {
        None
    }
    fn send(&mut self, _action: Action, _buf: B) {}
}

/// A [`PacketIo`] from two closures: `alloc` hands out empty buffers,
/// `send` takes the extra packets (e.g. pushes them onto the tx burst of
/// the port the [`Action`] names).
#[derive(Debug)]
pub struct FnIo<A, S>(pub A, pub S);

impl<B, A, S> PacketIo<B> for FnIo<A, S>
where
    A: FnMut() -> Option<B>,
    S: FnMut(Action, B),
{
    fn alloc(&mut self) -> Option<B> {
        (self.0)()
    }
    fn send(&mut self, action: Action, buf: B) {
        (self.1)(action, buf);
    }
}

/// Most events one command produces (see [`Worker::apply_commands`]).
pub const EVENTS_PER_COMMAND: usize = 2;

/// Most fragments one inner packet is split into before encryption
/// (a 9000-byte packet over the smallest tunnel MTU needs 7).
pub const MAX_FRAGMENTS: usize = 8;

/// Limits of the per-worker outer reassembly table (ESP and NAT-T
/// fragments to us, reassembled before decap; spec § 25.3). A peer
/// fragments only what exceeds its path MTU, so a datagram is a few
/// fragments of at most an mbuf's data room; 64 contexts × (2 KiB of
/// data, 256 B of header, 16 ranges) is 160 KiB per worker, allocated
/// once.
pub const OUTER_REASSEMBLY: ReassemblyConfig = ReassemblyConfig {
    contexts: 64,
    max_datagram_len: 2048,
    max_fragments: 16,
    timeout_ms: 30_000,
};

/// Per-worker options for the tunnel MTU handling (spec § 14.2, § 14.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MtuOptions {
    /// Clamp the MSS of transit TCP SYNs, both directions, to the
    /// tunnel's MSS (spec § 14.3: MTU − 40 for IPv4, MTU − 60 for IPv6).
    pub mss_clamp: bool,
    /// Source of the ICMPv4 "fragmentation needed" we send; `None`: the
    /// first of [`Addresses::inside_v4`].
    pub icmp_src_v4: Option<Ipv4Addr>,
    /// Source of the ICMPv6 "packet too big" we send; `None`: the first
    /// of [`Addresses::outside_v6`]. With no address at all, none is sent.
    pub icmp_src_v6: Option<Ipv6Addr>,
    /// ICMP errors originated per second (token bucket, RFC 1812
    /// § 4.3.2.8 / RFC 4443 § 2.4 (f)); excess is counted, not sent.
    pub icmp_per_sec: u32,
    /// Burst allowance of the ICMP token bucket.
    pub icmp_burst: u32,
    /// IP MTU of the inside port. Datagrams reassembled from a peer's
    /// fragments can exceed it; they are fragmented again (or, with DF,
    /// answered with an ICMP error) as any router would.
    pub inside_mtu: u16,
}

impl Default for MtuOptions {
    fn default() -> Self {
        Self {
            mss_clamp: true,
            icmp_src_v4: None,
            icmp_src_v6: None,
            icmp_per_sec: 1000,
            icmp_burst: 100,
            inside_mtu: 1500,
        }
    }
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
    options: MtuOptions,
    /// Inner fragments from peers, reassembled after decap.
    reassembler: Reassembler,
    /// Outer ESP / UDP fragments to us, reassembled before decap (its
    /// own table, so that a flood of one kind cannot evict the other).
    outer_reassembler: Reassembler,
    /// The worker's clock (ms), advanced by the runtime between bursts.
    now_ms: u64,
    /// ICMP error tokens left, and when they were last refilled.
    icmp_tokens: u32,
    icmp_refilled_ms: u64,
    /// Per-tunnel counters, read by the control core.
    counters: Arc<TunnelCounterBlock>,
    /// Per-tunnel rate policers (see [`crate::policy`]).
    policers: Policers,
    /// The current burst (see [`Worker::begin_burst`]) and how many of its
    /// packets are still to come.
    burst_epoch: u64,
    burst_left: u32,
    /// Which worker decrypts each tunnel's inbound ESP (empty: no
    /// hand-off; see [`Command::SetInboundOwners`]).
    owners: Arc<[u16]>,
    /// intel-ipsec-mb's job API state for this worker (`None` if the
    /// library cannot run here: then no SA uses it either).
    mgr: Option<ipsec_mb::Manager>,
    /// Inside [`Worker::handle_burst_io`]: packets of SAs on the job API
    /// are prepared and left in [`Worker::deferred`] for the burst's batch
    /// instead of being encrypted one by one.
    batching: bool,
    /// The packet just handled was prepared for the batch (see
    /// [`Deferred`]); taken by the burst loop.
    deferred: Option<Deferred>,
    /// OpenVPN clients by peer-id (see [`crate::ovpn`]).
    clients: ClientTable,
    /// The remote-access endpoint's UDP port ([`Command::SetOvpnPort`]).
    ovpn_port: Option<u16>,
}

/// The inner MTU of an OpenVPN client's tunnel over a 1500-byte outside
/// path (IPv4 20, UDP 8, `P_DATA_V2` header, packet id and tag 24): TCP
/// SYNs to and from clients are clamped to its MSS.
pub const OVPN_TUNNEL_MTU: u16 = 1500 - 20 - 8 - 24;
const _: () = assert!(DATA_V2_OVERHEAD == 24);

/// A packet prepared for the burst's batch through intel-ipsec-mb's job
/// API ([`Worker::handle_burst_io`]): what finishing it needs. The SA is
/// found again by its key; SAs change only between bursts
/// ([`Worker::apply_commands`]).
#[derive(Debug, Clone, Copy)]
enum Deferred {
    /// Encapsulated but for the crypto, toward `tunnel`; `bytes` inner
    /// bytes (counted once sealed).
    Encap {
        tunnel: TunnelId,
        ticket: EncapTicket,
        bytes: usize,
    },
    /// ESP of the inbound SA `spi`, checked up to the ICV.
    Decap { spi: u32, ticket: DecapTicket },
}

/// What a parsed frame is.
enum Class {
    Arp,
    /// An IPv6 Neighbor Solicitation (see [`crate::nd`]).
    Nd,
    /// ESP to us: offset of the ESP header from the IP header.
    Esp {
        esp_offset: usize,
    },
    /// For the kernel (IKE, ICMP to us, …).
    Punt,
    /// `P_DATA_V2` to the OpenVPN endpoint's port (IPv4): offset of the
    /// UDP header from the IP header.
    Ovpn {
        udp_offset: usize,
    },
    /// Another datagram to the OpenVPN endpoint's port (its control
    /// channel): for the kernel, counted.
    OvpnControl,
    /// An IPv4 or IPv6 fragment of ESP or UDP to us: reassembled before
    /// it is classified again.
    OuterFragment,
    /// Not for us / keepalive: dropped with this reason.
    Drop(Drop),
}

impl Worker {
    /// A worker with empty tables for up to `capacity` SAs each way and
    /// the default reassembly limits.
    #[must_use]
    pub fn new(ring: WorkerEnd, capacity: usize) -> Self {
        Self::with_reassembly(ring, capacity, ReassemblyConfig::default())
    }

    /// A worker whose inner reassembly table is sized by `reassembly`
    /// (allocated here, once).
    #[must_use]
    pub fn with_reassembly(ring: WorkerEnd, capacity: usize, reassembly: ReassemblyConfig) -> Self {
        let options = MtuOptions::default();
        Self {
            tables: SaTables::with_capacity(capacity),
            fib: Arc::new(Fib::default()),
            addrs: Addresses::default(),
            stats: WorkerStats::default(),
            ring,
            icmp_tokens: options.icmp_burst,
            icmp_refilled_ms: 0,
            options,
            reassembler: Reassembler::new(reassembly),
            outer_reassembler: Reassembler::new(OUTER_REASSEMBLY),
            now_ms: 0,
            burst_epoch: 0,
            burst_left: 0,
            owners: Arc::from(Vec::new()),
            counters: TunnelCounterBlock::new(capacity),
            policers: Policers::new(capacity),
            mgr: ipsec_mb::Manager::new().ok(),
            batching: false,
            deferred: None,
            clients: ClientTable::with_capacity(capacity),
            ovpn_port: None,
        }
    }

    /// Replaces the OpenVPN client table with an empty one for peer-ids
    /// `0..capacity` (allocated here: cold path, before clients are
    /// installed; clients already installed are dropped). By default it
    /// has the SA capacity the worker was created with.
    pub fn set_client_capacity(&mut self, capacity: usize) {
        self.clients = ClientTable::with_capacity(capacity);
    }

    /// The OpenVPN client with `peer_id` (read-only: changes go through
    /// commands).
    #[must_use]
    pub fn ovpn_client(&self, peer_id: u32) -> Option<&OvpnClient> {
        self.clients.get(peer_id)
    }

    /// How many OpenVPN clients this worker holds.
    #[must_use]
    pub fn ovpn_clients(&self) -> usize {
        self.clients.len()
    }

    /// The control core's view of this worker's per-tunnel counters
    /// (tunnel ids `0..capacity`); see [`crate::sum_tunnel`].
    #[must_use]
    pub fn counters(&self) -> CountersHandle {
        CountersHandle(self.counters.clone())
    }

    /// Announces a burst of `packets` frames about to be handled. Optional
    /// but recommended: outbound SAs shared with other workers
    /// ([`dataplane::esp::shared`]) then reserve their sequence numbers
    /// once per burst (one compare-and-swap for the burst's packets
    /// instead of one per packet), and numbers left over from the
    /// previous burst are abandoned so reordering between workers stays
    /// within a burst. Without it every packet reserves exactly one
    /// number.
    pub fn begin_burst(&mut self, packets: usize) {
        self.burst_epoch = self.burst_epoch.wrapping_add(1);
        self.burst_left = u32::try_from(packets).unwrap_or(u32::MAX);
    }

    /// The MTU options in force.
    #[must_use]
    pub fn mtu_options(&self) -> &MtuOptions {
        &self.options
    }

    /// The inner reassembler (read-only).
    #[must_use]
    pub fn reassembler(&self) -> &Reassembler {
        &self.reassembler
    }

    /// The outer reassembler (read-only).
    #[must_use]
    pub fn outer_reassembler(&self) -> &Reassembler {
        &self.outer_reassembler
    }

    /// Replaces the outer reassembly table (allocated here: cold path;
    /// datagrams under reassembly are dropped uncounted).
    pub fn set_outer_reassembly(&mut self, cfg: ReassemblyConfig) {
        self.outer_reassembler = Reassembler::new(cfg);
    }

    /// The worker's clock in milliseconds.
    #[must_use]
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Advances the worker's clock (call between bursts, as often as the
    /// runtime likes; a clock that goes back is ignored): drops inner
    /// datagrams whose reassembly timed out (counted as
    /// [`DropReason::ReassemblyTimeout`] in [`WorkerStats::esp`], once per
    /// datagram) and refills the ICMP token bucket.
    /// [`Worker::handle_timeout`] calls it with `now_secs × 1000`, so both
    /// must count from the same origin.
    pub fn handle_time_ms(&mut self, now_ms: u64) {
        // Nothing to do until the clock moves: the runtime calls this on
        // every poll, and the reassembler's timeout poll walks its whole
        // table (256 slots, 30 KiB, all of L1D), which then cost a fifth
        // of the worker's time under load and evicted the burst's state.
        if now_ms <= self.now_ms {
            return;
        }
        self.now_ms = now_ms;
        if self.reassembler.poll_timeout().is_some_and(|t| t <= now_ms) {
            self.reassembler.handle_timeout(now_ms, &mut self.stats.esp);
        }
        if self
            .outer_reassembler
            .poll_timeout()
            .is_some_and(|t| t <= now_ms)
        {
            self.outer_reassembler
                .handle_timeout(now_ms, &mut self.stats.outer);
        }
        let elapsed = now_ms.saturating_sub(self.icmp_refilled_ms);
        let add = elapsed.saturating_mul(u64::from(self.options.icmp_per_sec)) / 1000;
        if add > 0 {
            let t = u64::from(self.icmp_tokens).saturating_add(add);
            self.icmp_tokens =
                u32::try_from(t.min(u64::from(self.options.icmp_burst))).unwrap_or(u32::MAX);
            self.icmp_refilled_ms = now_ms;
        }
    }

    /// Whether policing is on for this worker ([`Command::SetPolicing`]).
    #[must_use]
    pub fn policing(&self) -> bool {
        self.policers.enabled()
    }

    /// Whether `tunnel` has a rate policy on this worker.
    #[must_use]
    pub fn has_tunnel_policy(&self, tunnel: TunnelId) -> bool {
        self.policers.has(tunnel.0 as usize)
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
    ///
    /// A command emits at most [`EVENTS_PER_COMMAND`] events (a retired
    /// SA or snapshot, then the ack), so commands are applied only while
    /// the event ring has room for them: when the control core falls
    /// behind, commands wait in their ring instead of acks being lost.
    pub fn apply_commands(&mut self) -> usize {
        let mut n = 0;
        while self.ring.events.slots() >= EVENTS_PER_COMMAND
            && let Ok(cmd) = self.ring.commands.pop()
        {
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
            Command::AddInboundForTunnel { tunnel, sa } => {
                match self.tables.add_inbound_for(Some(tunnel), sa) {
                    Ok(Some(old)) => self.emit(Event::RetiredInbound(old)),
                    Ok(None) => {}
                    Err(sa) => {
                        self.emit(Event::RetiredInbound(sa));
                        return Err("inbound SA table full");
                    }
                }
            }
            Command::SnapshotSas(mut sas) => {
                sas.clear();
                let room = sas.capacity();
                let inbound = self
                    .tables
                    .inbound_tunnels()
                    .map(|(sa, tunnel)| SaSnapshot {
                        spi: sa.spi(),
                        inbound: true,
                        tunnel,
                        counters: sa.counters(),
                    });
                let outbound = self.tables.outbound().map(|(tunnel, sa)| SaSnapshot {
                    spi: sa.spi(),
                    inbound: false,
                    tunnel: Some(tunnel),
                    counters: sa.counters(),
                });
                let mut truncated = false;
                for s in inbound.chain(outbound) {
                    if sas.len() < room {
                        sas.push(s);
                    } else {
                        truncated = true;
                    }
                }
                self.emit(Event::SaSnapshot { sas, truncated });
            }
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
            Command::SetTunnelPolicy { tunnel, policy } => {
                if !self.policers.set(tunnel.0 as usize, &policy, self.now_ms) {
                    return Err("tunnel id beyond the worker's capacity");
                }
            }
            Command::ClearTunnelPolicy { tunnel } => {
                if !self.policers.clear(tunnel.0 as usize) {
                    return Err("no policy for the tunnel");
                }
            }
            Command::SetPolicing { enabled } => self.policers.set_enabled(enabled),
            Command::SetInboundOwners(owners) => {
                let old = std::mem::replace(&mut self.owners, owners);
                self.emit(Event::RetiredOwners(old));
            }
            Command::AddClient(client) => match self.clients.insert(client) {
                Ok(Some(old)) => self.emit(Event::RetiredClient(old)),
                Ok(None) => {}
                Err(client) => {
                    self.emit(Event::RetiredClient(client));
                    return Err("peer-id beyond the worker's client table");
                }
            },
            Command::SetClientKey { peer_id, key } => {
                let Some(client) = self.clients.get_mut(peer_id) else {
                    self.emit(Event::RetiredClientKey(key));
                    return Err("no such OpenVPN client");
                };
                if key.peer_id() != peer_id {
                    self.emit(Event::RetiredClientKey(key));
                    return Err("key for another peer-id");
                }
                if let Some(old) = client.set_key(key) {
                    self.emit(Event::RetiredClientKey(old));
                }
            }
            Command::RetireClientKey { peer_id, key_id } => {
                let key = self
                    .clients
                    .get_mut(peer_id)
                    .and_then(|c| c.retire_key(key_id))
                    .ok_or("no such OpenVPN client key")?;
                self.emit(Event::RetiredClientKey(key));
            }
            Command::RemoveClient { peer_id } => {
                let client = self
                    .clients
                    .remove(peer_id)
                    .ok_or("no such OpenVPN client")?;
                self.emit(Event::RetiredClient(client));
            }
            Command::SetOvpnPort { port } => self.ovpn_port = port,
            Command::SetAddresses(addrs) => self.addrs = *addrs,
            Command::SetMtuOptions(options) => {
                self.options = *options;
                self.icmp_tokens = self.icmp_tokens.min(self.options.icmp_burst);
            }
        }
        Ok(())
    }

    /// Queues an event; if the control core has fallen so far behind that
    /// the ring is full, the event (and what it carries) is dropped here.
    fn emit(&mut self, event: Event) {
        let _ = self.ring.events.push(event);
    }

    /// Handles a burst received on `ingress`, in order, as the matching
    /// `handle_*_io` would one packet at a time, and hands every packet
    /// that is not dropped to `io.send` with its [`Action`] (after the
    /// extra packets it produced, as before); dropped ones are freed
    /// here. Call [`Worker::begin_burst`] first.
    ///
    /// With many tunnels every packet of a burst needs other state (SA,
    /// key schedule and GHASH table, counters, policer), cold in memory.
    /// Before a packet is handled, the packet [`PREFETCH_AHEAD`] places
    /// behind it is looked up (inner destination through the FIB to its
    /// tunnel on the inside and kernel ports, SPI to its inbound SA on the
    /// outside one) and the pointer to its SA, its counters and policer
    /// are prefetched; the SA of the packet [`PREFETCH_SA_AHEAD`] places
    /// behind is prefetched in turn. Their misses overlap with the work on
    /// the packets before them instead of stalling their own. The lookups
    /// only read; what a packet does is decided when it is handled,
    /// exactly as without them.
    ///
    /// Packets of SAs whose crypto runs on intel-ipsec-mb's job API
    /// (AES-CBC + HMAC on the `ipsec-mb` backend) are only prepared while
    /// the burst is walked; every [`CBC_BATCH`] of them, and at the end, they
    /// are sealed or opened in one pass and finished in order
    /// (`finish_batch`), so they leave after the burst's other
    /// packets.
    pub fn handle_burst_io<B, I>(
        &mut self,
        ingress: Ingress,
        burst: impl IntoIterator<Item = B>,
        io: &mut I,
    ) where
        B: PacketBuffer,
        I: PacketIo<B>,
    {
        const N: usize = PREFETCH_TABLE_AHEAD;
        let mut burst = burst.into_iter();
        // A ring of the next N packets with what the stages found for
        // each; a run of packets of one SA is looked up once.
        let mut ahead: [Option<(B, Hint)>; N] = std::array::from_fn(|_| None);
        let mut last = None;
        for slot in &mut ahead {
            *slot = burst.next().map(|b| {
                let hint = self.prefetch_table(ingress, b.as_ref());
                (b, hint)
            });
        }
        for (b, hint) in ahead.iter_mut().take(PREFETCH_AHEAD).flatten() {
            *hint = self.prefetch_lookup(ingress, b.as_ref(), *hint, &mut last);
        }
        for (_, hint) in ahead.iter().take(PREFETCH_SA_AHEAD).flatten() {
            self.prefetch_sa(*hint);
        }
        let mut batch: [Option<(B, Deferred)>; CBC_BATCH] = std::array::from_fn(|_| None);
        let mut batched = 0;
        self.batching = self.mgr.is_some();
        let mut head = 0;
        while let Some((mut buf, _)) = ahead[head].take() {
            // The packet PREFETCH_SA_AHEAD behind this one: its SA now.
            if let Some((_, hint)) = &ahead[(head + PREFETCH_SA_AHEAD) % N] {
                self.prefetch_sa(*hint);
            }
            // The one PREFETCH_AHEAD behind: its look-up.
            if let Some((b, hint)) = &mut ahead[(head + PREFETCH_AHEAD) % N] {
                *hint = self.prefetch_lookup(ingress, b.as_ref(), *hint, &mut last);
            }
            // The one N behind: its SPI-table line.
            if let Some(next) = burst.next() {
                let hint = self.prefetch_table(ingress, next.as_ref());
                ahead[head] = Some((next, hint));
            }
            head = (head + 1) % N;
            let action = match ingress {
                Ingress::Outside => self.handle_outside_io(&mut buf, io),
                Ingress::Inside => self.handle_inside_io(&mut buf, io),
                Ingress::Kernel => self.handle_kernel_io(&mut buf, io),
            };
            if let Some(d) = self.deferred.take() {
                batch[batched] = Some((buf, d));
                batched += 1;
                if batched == CBC_BATCH {
                    self.finish_batch(&mut batch, io);
                    batched = 0;
                }
            } else if action != Action::Drop {
                io.send(action, buf);
            }
        }
        if batched > 0 {
            self.finish_batch(&mut batch[..batched], io);
        }
        self.batching = false;
    }

    /// The crypto of every packet in `batch` in one pass through
    /// intel-ipsec-mb's job API, then each finished in order (ICV placed
    /// and Ethernet header pushed; or ICV result, replay commit, trailer,
    /// strip and the rest of [`Worker::handle_outside_io`]) and sent or
    /// dropped and counted. Empties `batch`.
    ///
    /// The batch's packets leave after the packets of the burst that were
    /// not batched (other suites, fragmented packets): order is kept per
    /// SA for everything batched, and the burst is bounded.
    fn finish_batch<B: PacketBuffer, I: PacketIo<B>>(
        &mut self,
        batch: &mut [Option<(B, Deferred)>],
        io: &mut I,
    ) {
        let mut results = [Err(CryptoError::Engine); CBC_BATCH];
        let n = batch.len().min(CBC_BATCH);
        if let Some(mgr) = self.mgr.as_mut() {
            let tables = &self.tables;
            let ops = batch.iter_mut().map(|slot| {
                let (b, d) = slot.as_mut()?;
                match d {
                    Deferred::Encap { tunnel, ticket, .. } => {
                        ticket.op(tables.outbound_of(*tunnel)?, b.as_mut())
                    }
                    Deferred::Decap { spi, ticket } => {
                        let (sa, _) = tables.inbound_at(tables.inbound_index(*spi)?)?;
                        ticket.op(sa, b.as_mut())
                    }
                }
            });
            run_cbc_batch(mgr, ops, &mut results[..n]);
        }
        // Finishing may route a decapsulated packet into another tunnel:
        // that one is encrypted on its own.
        let batching = core::mem::replace(&mut self.batching, false);
        for (slot, r) in batch.iter_mut().zip(results) {
            let Some((mut buf, d)) = slot.take() else {
                continue;
            };
            let action = match d {
                Deferred::Encap {
                    tunnel,
                    ticket,
                    bytes,
                } => self.finish_encap(&mut buf, tunnel, &ticket, bytes, r),
                Deferred::Decap { spi, ticket } => self.finish_decap(&mut buf, spi, &ticket, r, io),
            };
            if action != Action::Drop {
                io.send(action, buf);
            }
        }
        self.batching = batching;
    }

    /// A batched encap after its crypto step.
    fn finish_encap<B: PacketBuffer>(
        &mut self,
        buf: &mut B,
        tunnel: TunnelId,
        ticket: &EncapTicket,
        bytes: usize,
        sealed: Result<(), CryptoError>,
    ) -> Action {
        let tc = self.counters.get(Some(tunnel));
        if let Err(r) = ticket.finish(buf, sealed) {
            tc.count_drop(r);
            self.stats.esp_drop(r);
            return Action::Drop;
        }
        tc.count_out(bytes);
        self.stats.encap_packets += 1;
        let (dst, src) = (self.addrs.outside_gateway_mac, self.addrs.outside_mac);
        self.push_eth(buf, dst, src, Action::ToOutside)
    }

    /// A batched decap after its crypto step, then the rest of the
    /// outside path.
    fn finish_decap<B: PacketBuffer, I: PacketIo<B>>(
        &mut self,
        buf: &mut B,
        spi: u32,
        ticket: &DecapTicket,
        opened: Result<(), CryptoError>,
        io: &mut I,
    ) -> Action {
        let Some((sa, tunnel)) = self.tables.inbound_with_tunnel(spi) else {
            return self.drop(Drop::UnknownSpi);
        };
        let tc = self.counters.get(tunnel);
        let mtu = mtu::inbound_sa_tunnel_mtu(sa);
        if let Err(r) = ticket.finish(sa, buf, opened) {
            tc.count_drop(r);
            self.stats.esp_drop(r);
            return Action::Drop;
        }
        self.after_decap(buf, tunnel, mtu, io)
    }

    /// The worker that decrypts an outside frame
    /// ([`Command::SetInboundOwners`]): `Some` only for ESP (raw or in UDP
    /// 4500) of a known SPI whose tunnel has an owner; anything else is
    /// for whichever worker received it. Reads only (the SPI lookup also
    /// prefetches the SA's slot, as the burst loop's first stage does).
    #[inline]
    #[must_use]
    pub fn inbound_owner(&self, frame: &[u8]) -> Option<u16> {
        if self.owners.is_empty() {
            return None;
        }
        let spi = peek_esp_spi(frame)?;
        let (_, tunnel) = self.tables.inbound_at(self.tables.inbound_index(spi)?)?;
        let owner = *self.owners.get(tunnel?.0 as usize)?;
        (owner != NO_OWNER).then_some(owner)
    }

    /// First prefetch stage of [`Worker::handle_burst_io`]: for an ESP
    /// frame on the outside port, the SPI table's line that its look-up
    /// will read. Reads only.
    fn prefetch_table(&self, ingress: Ingress, frame: &[u8]) -> Hint {
        match ingress {
            Ingress::Outside => peek_esp_spi(frame).map_or(Hint::None, |spi| {
                self.tables.prefetch_spi(spi);
                Hint::Spi(spi)
            }),
            Ingress::Inside | Ingress::Kernel => Hint::Later,
        }
    }

    /// Second prefetch stage of [`Worker::handle_burst_io`] for one frame:
    /// finds its tunnel (inner destination through the FIB) or inbound SA
    /// (SPI) and prefetches what is reachable without another load: the
    /// slot holding the SA pointer, the tunnel's counters and policer.
    /// Reads only; a frame it cannot make sense of is left to the
    /// pipeline. `last` is the tunnel or SPI looked up last: a packet of
    /// the same one needs nothing more.
    fn prefetch_lookup(
        &self,
        ingress: Ingress,
        frame: &[u8],
        hint: Hint,
        last: &mut Option<u32>,
    ) -> Hint {
        match (ingress, hint) {
            (Ingress::Outside, Hint::Spi(spi)) => {
                if *last == Some(spi) {
                    return Hint::None;
                }
                *last = Some(spi);
                self.tables
                    .inbound_index(spi)
                    .map_or(Hint::None, Hint::Inbound)
            }
            (Ingress::Inside | Ingress::Kernel, Hint::Later) => {
                let Some(ip) = frame.get(ETH_LEN..) else {
                    return Hint::None;
                };
                let tunnel = match peek_dst(ip).and_then(|dst| self.fib.lookup(dst)) {
                    Some(Target::Tunnel(t)) => t,
                    Some(t @ Target::Ecmp(_)) => match self.fib.resolve(t, flow_hash(ip)) {
                        Target::Tunnel(t) => t,
                        _ => return Hint::None,
                    },
                    _ => return Hint::None,
                };
                if *last == Some(tunnel.0) {
                    return Hint::None;
                }
                *last = Some(tunnel.0);
                self.tables.prefetch_outbound_slot(tunnel);
                prefetch::read(self.counters.get(Some(tunnel)));
                self.policers.prefetch(tunnel.0 as usize);
                Hint::Tunnel(tunnel)
            }
            _ => Hint::None,
        }
    }

    /// Third prefetch stage: the SA found by the second (every cache line
    /// of it: per-packet state, template, cipher context), and for an
    /// inbound SA its tunnel's counters and policer.
    fn prefetch_sa(&self, hint: Hint) {
        match hint {
            Hint::None | Hint::Later | Hint::Spi(_) => {}
            Hint::Tunnel(t) => {
                if let Some(sa) = self.tables.outbound_of(t) {
                    prefetch::read_all(sa);
                }
            }
            Hint::Inbound(i) => {
                if let Some((sa, tunnel)) = self.tables.inbound_at(i) {
                    prefetch::read_all(sa);
                    prefetch::read(self.counters.get(tunnel));
                    if let Some(t) = tunnel {
                        self.policers.prefetch(t.0 as usize);
                    }
                }
            }
        }
    }

    /// A frame received on the outside port, without a buffer pool (see
    /// [`NoIo`]).
    pub fn handle_outside<B: PacketBuffer>(&mut self, buf: &mut B) -> Action {
        self.handle_outside_io(buf, &mut NoIo)
    }

    /// A frame received on the outside port. ESP is decapsulated; inner
    /// fragments are reassembled ([`Reassembly::Held`] fragments return
    /// [`Action::Drop`] and are counted in
    /// [`WorkerStats::fragments_held`], not as drops); transit SYNs get
    /// their MSS clamped; then the inner packet is routed.
    pub fn handle_outside_io<B: PacketBuffer, I: PacketIo<B>>(
        &mut self,
        buf: &mut B,
        io: &mut I,
    ) -> Action {
        self.burst_left = self.burst_left.saturating_sub(1);
        match self.classify_outside(buf.as_ref()) {
            Class::Arp => self.arp_reply(buf, Side::Outside),
            Class::Nd => self.nd_reply(buf),
            Class::Punt => self.punt(buf),
            Class::OvpnControl => {
                self.stats.ovpn_control_punted += 1;
                self.punt(buf)
            }
            Class::Ovpn { udp_offset } => {
                if buf.trim_from_start(ETH_LEN).is_err() {
                    return self.drop(Drop::Malformed);
                }
                self.ovpn_decap(buf, udp_offset, io)
            }
            Class::Drop(reason) => self.drop(reason),
            Class::OuterFragment => {
                if buf.trim_from_start(ETH_LEN).is_err() {
                    return self.drop(Drop::Malformed);
                }
                self.outer_fragment(buf, io)
            }
            Class::Esp { esp_offset } => {
                if buf.trim_from_start(ETH_LEN).is_err() {
                    return self.drop(Drop::Malformed);
                }
                self.decap_outside(buf, esp_offset, io)
            }
        }
    }

    /// Spec § 25.3: an outer fragment (no Ethernet header) is reassembled
    /// before decryption; the whole datagram is classified again: ESP is
    /// decapsulated, anything else (IKE, other UDP) goes to the kernel.
    fn outer_fragment<B: PacketBuffer, I: PacketIo<B>>(
        &mut self,
        buf: &mut B,
        io: &mut I,
    ) -> Action {
        match self
            .outer_reassembler
            .handle_fragment(self.now_ms, buf, &mut self.stats.outer)
        {
            Ok(Reassembly::Held) => {
                self.stats.outer_fragments_held += 1;
                return Action::Drop;
            }
            Ok(Reassembly::Complete) => self.stats.outer_reassembled += 1,
            // Classified as a fragment, parsed as none (an IPv6 chain
            // over the walk limit): judged whole below.
            Ok(Reassembly::NotFragment) => {}
            Err(r) => {
                self.stats.outer_drop(r);
                return Action::Drop;
            }
        }
        match self.classify_outside_ip(buf.as_ref()) {
            Class::Esp { esp_offset } => self.decap_outside(buf, esp_offset, io),
            Class::Ovpn { udp_offset } => self.ovpn_decap(buf, udp_offset, io),
            Class::Punt | Class::OvpnControl => {
                let (dst, src) = (self.addrs.kernel_mac, self.addrs.outside_mac);
                match self.push_eth(buf, dst, src, Action::ToKernel) {
                    Action::ToKernel => {
                        self.stats.punted += 1;
                        Action::ToKernel
                    }
                    a => a,
                }
            }
            Class::Drop(reason) => self.drop(reason),
            // Still a fragment after reassembly, or not IP: never
            // reassembled twice.
            Class::Arp | Class::Nd | Class::OuterFragment => self.drop(Drop::Malformed),
        }
    }

    /// ESP (or UDP-encapsulated ESP) to us, without its Ethernet header:
    /// `esp_offset` is the ESP header's offset from the IP header.
    fn decap_outside<B: PacketBuffer, I: PacketIo<B>>(
        &mut self,
        buf: &mut B,
        esp_offset: usize,
        io: &mut I,
    ) -> Action {
        let Some(spi) = read_spi(buf.as_ref(), esp_offset) else {
            return self.drop(Drop::Malformed);
        };
        let Some((sa, tunnel)) = self.tables.inbound_with_tunnel(spi) else {
            return self.drop(Drop::UnknownSpi);
        };
        let tc = self.counters.get(tunnel);
        let mtu = mtu::inbound_sa_tunnel_mtu(sa);
        if self.batching && sa.uses_job_api() {
            // Checked up to the ICV; the crypto and the rest in
            // the burst's batch (`finish_batch`).
            return match esp::decap::decap_begin(sa, buf, esp_offset) {
                Ok(ticket) => {
                    self.deferred = Some(Deferred::Decap { spi, ticket });
                    Action::Drop
                }
                Err(r) => {
                    tc.count_drop(r);
                    self.stats.esp_drop(r);
                    Action::Drop
                }
            };
        }
        if let Err(r) = esp::decap(sa, buf, esp_offset) {
            tc.count_drop(r);
            self.stats.esp_drop(r);
            return Action::Drop;
        }
        self.after_decap(buf, tunnel, mtu, io)
    }

    /// The outside path after a successful decap: policing, counters,
    /// reassembly, MSS clamping, routing.
    fn after_decap<B: PacketBuffer, I: PacketIo<B>>(
        &mut self,
        buf: &mut B,
        tunnel: Option<TunnelId>,
        mtu: u16,
        io: &mut I,
    ) -> Action {
        let tc = self.counters.get(tunnel);
        // Policed after the ICV and replay checks, on inner bytes
        // (see `crate::policy`).
        if let Some(t) = tunnel
            && !self
                .policers
                .admit(t.0 as usize, Dir::In, buf.as_ref().len(), self.now_ms)
        {
            tc.count_policed(true);
            return self.drop(Drop::Policed);
        }
        tc.count_in(buf.as_ref().len());
        self.stats.decap_packets += 1;
        // Spec § 25.3: inner fragments are reassembled before
        // forwarding.
        match self
            .reassembler
            .handle_fragment(self.now_ms, buf, &mut self.stats.esp)
        {
            Ok(Reassembly::NotFragment) => {}
            Ok(Reassembly::Complete) => self.stats.reassembled += 1,
            Ok(Reassembly::Held) => {
                self.stats.fragments_held += 1;
                return Action::Drop;
            }
            Err(r) => {
                tc.count_drop(r);
                self.stats.esp_drop(r);
                return Action::Drop;
            }
        }
        if self.options.mss_clamp && mss_clamp(buf.as_mut(), mss_v4(mtu), mss_v6(mtu)) {
            self.stats.mss_clamped += 1;
        }
        self.route(buf, Side::Outside, io)
    }

    /// A frame received on the inside port, without a buffer pool (see
    /// [`NoIo`]).
    pub fn handle_inside<B: PacketBuffer>(&mut self, buf: &mut B) -> Action {
        self.handle_inside_io(buf, &mut NoIo)
    }

    /// A frame received on the inside port: routed; toward a tunnel its
    /// MSS is clamped, DF cleared if the tunnel says so, and it is
    /// fragmented before encryption when it exceeds the tunnel MTU (the
    /// extra fragments leave through `io`), or answered with an ICMP
    /// error through `io` when it may not be fragmented.
    pub fn handle_inside_io<B: PacketBuffer, I: PacketIo<B>>(
        &mut self,
        buf: &mut B,
        io: &mut I,
    ) -> Action {
        self.burst_left = self.burst_left.saturating_sub(1);
        match ethertype(buf.as_ref()) {
            Some(EtherType::Arp) => self.arp_reply(buf, Side::Inside),
            Some(EtherType::Ipv4 | EtherType::Ipv6) => {
                if buf.trim_from_start(ETH_LEN).is_err() {
                    return self.drop(Drop::Malformed);
                }
                self.route(buf, Side::Inside, io)
            }
            _ => self.drop(Drop::Malformed),
        }
    }

    /// A frame the kernel sent out of the tap interface, without a buffer
    /// pool (see [`NoIo`]).
    pub fn handle_kernel<B: PacketBuffer>(&mut self, buf: &mut B) -> Action {
        self.handle_kernel_io(buf, &mut NoIo)
    }

    /// A frame the kernel sent out of the tap interface (as
    /// [`Worker::handle_inside_io`] for what goes into a tunnel).
    pub fn handle_kernel_io<B: PacketBuffer, I: PacketIo<B>>(
        &mut self,
        buf: &mut B,
        io: &mut I,
    ) -> Action {
        self.burst_left = self.burst_left.saturating_sub(1);
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
        match self.route(buf, Side::Kernel, io) {
            Action::ToKernel => self.drop(Drop::KernelUnroutable),
            a => a,
        }
    }

    /// Ages SAs (time lifetimes) and reports every soft or hard limit
    /// reached since the last call as an [`Event::Lifetime`]. Call between
    /// bursts, about once a second; `now_secs` is on the clock the SAs were
    /// installed with.
    pub fn handle_timeout(&mut self, now_secs: u64) {
        self.handle_time_ms(now_secs.saturating_mul(1000));
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
            // Sent to a solicited-node multicast address (or, for
            // unreachability detection, to ours): before the local check.
            Some(EtherType::Ipv6) if nd::is_solicitation(frame) => return Class::Nd,
            Some(EtherType::Ipv4 | EtherType::Ipv6) => &frame[ETH_LEN..],
            _ => return Class::Drop(Drop::Malformed),
        };
        self.classify_outside_ip(ip)
    }

    /// [`Self::classify_outside`] from the IP header on.
    fn classify_outside_ip(&self, ip: &[u8]) -> Class {
        let Some((_, dst)) = ip_addrs(ip) else {
            return Class::Drop(Drop::Malformed);
        };
        if !self.addrs.is_outside_local(dst) {
            return Class::Drop(Drop::NotLocal);
        }
        let Some((protocol, offset, fragment)) = upper_layer(ip) else {
            return Class::Drop(Drop::Malformed);
        };
        if fragment {
            // ESP and NAT-T ESP are reassembled here (spec § 25.3); a
            // non-first UDP fragment does not show its port, so all UDP
            // to us is, and the kernel gets non-ESP datagrams whole.
            return match protocol {
                IpProtocol::Esp | IpProtocol::Udp => Class::OuterFragment,
                _ => Class::Punt,
            };
        }
        match protocol {
            IpProtocol::Esp => Class::Esp { esp_offset: offset },
            IpProtocol::Udp => {
                let Some(udp) = ip.get(offset..offset + 8) else {
                    return Class::Drop(Drop::Malformed);
                };
                let dport = u16::from_be_bytes([udp[2], udp[3]]);
                if self.ovpn_port == Some(dport) {
                    // OpenVPN's data channel in the workers (IPv4 outer
                    // only); its control channel, and IPv6, to the
                    // control core.
                    let v2 = ovpn::peek_data_v2(ip.get(offset + 8..).unwrap_or(&[])).is_some();
                    return if v2 && ip[0] >> 4 == 4 {
                        Class::Ovpn { udp_offset: offset }
                    } else {
                        Class::OvpnControl
                    };
                }
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
    fn route<B: PacketBuffer, I: PacketIo<B>>(
        &mut self,
        buf: &mut B,
        from: Side,
        io: &mut I,
    ) -> Action {
        let Some((_, dst)) = ip_addrs(buf.as_ref()) else {
            return self.drop(Drop::Malformed);
        };
        let Some(target) = self.fib.lookup(dst) else {
            return self.drop(Drop::NoRoute);
        };
        // The flow hash only picks an ECMP member.
        let target = match target {
            Target::Ecmp(_) => self.fib.resolve(target, flow_hash(buf.as_ref())),
            t => t,
        };
        match target {
            Target::Tunnel(t) => self.encap(buf, t, from, io),
            Target::Inside if from == Side::Inside => self.drop(Drop::Hairpin),
            Target::Inside if buf.as_ref().len() > usize::from(self.options.inside_mtu) => {
                self.fragment_inside(buf, from, io)
            }
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
            Target::Client(ClientId(peer_id)) => self.ovpn_encap(buf, peer_id),
            Target::Blackhole | Target::Ecmp(_) => self.drop(Drop::Blackhole),
        }
    }

    /// `P_DATA_V2` from an OpenVPN client (no Ethernet header;
    /// `udp_offset` is the UDP header's offset from the IPv4 header):
    /// opened with the key its key id names, the client's address
    /// remembered, keepalives and OCC consumed, an exit notify reported,
    /// and a tunnel packet from the client's own address routed.
    fn ovpn_decap<B: PacketBuffer, I: PacketIo<B>>(
        &mut self,
        buf: &mut B,
        udp_offset: usize,
        io: &mut I,
    ) -> Action {
        // 1. The source and the UDP payload (bytes past the UDP length,
        //    such as Ethernet padding, are not the packet's).
        let Some((remote, payload_len)) = udp_v4_source(buf.as_ref(), udp_offset) else {
            return self.drop(Drop::Malformed);
        };
        //    The outer header is not authenticated but its source decides
        //    where replies go: its checksum must hold (the NIC's verdict
        //    where the port checks it, else ours).
        let checksum_ok = match buf.rx_ipv4_checksum() {
            RxChecksum::Good => true,
            RxChecksum::Bad => false,
            RxChecksum::Unknown => Ipv4Packet::new_unchecked(buf.as_ref()).verify_checksum(),
        };
        if !checksum_ok {
            return self.drop(Drop::OvpnOuterBadChecksum);
        }
        let tail = buf.as_ref().len() - (udp_offset + 8 + payload_len);
        if buf.trim_from_start(udp_offset + 8).is_err() || buf.trim_from_end(tail).is_err() {
            return self.drop(Drop::Malformed);
        }
        // 2. The client by peer-id, the key by key id.
        let Some((key_id, peer_id)) = ovpn::peek_data_v2(buf.as_ref()) else {
            return self.drop(Drop::Malformed);
        };
        let Some(client) = self.clients.get_mut(peer_id) else {
            return self.drop(Drop::OvpnUnknownPeer);
        };
        let Some(key) = client.key_for(key_id) else {
            self.stats.ovpn_drop(DataDrop::UnknownKeyId);
            return Action::Drop;
        };
        // 3. Replay check, tag, replay commit (dataplane::ovpn).
        if let Err(r) = ovpn::decap(key, buf) {
            self.stats.ovpn_drop(r);
            return Action::Drop;
        }
        self.stats.ovpn_decap_packets += 1;
        // 4. Authenticated: the client may have moved (NAT rebinding).
        let inner_v4 = client.inner_v4();
        let payload = ovpn::classify(buf.as_ref());
        let from_client = matches!(payload, Payload::Packet(p)
            if matches!(ip_addrs(p), Some((IpAddr::V4(src), _)) if src == inner_v4));
        match payload {
            Payload::Ping | Payload::Occ(_) => {
                client.float(remote);
                client.count_keepalive();
                self.stats.ovpn_keepalives += 1;
                Action::Drop
            }
            Payload::Exit => {
                client.float(remote);
                client.count_keepalive();
                self.stats.ovpn_keepalives += 1;
                self.emit(Event::ClientExit { peer_id });
                Action::Drop
            }
            // 5. Only the client's own address (OpenVPN's source check).
            Payload::Packet(_) if !from_client => self.drop(Drop::OvpnSpoofedSource),
            Payload::Packet(p) => {
                client.float(remote);
                client.count_in(p.len());
                if self.options.mss_clamp
                    && mss_clamp(
                        buf.as_mut(),
                        mss_v4(OVPN_TUNNEL_MTU),
                        mss_v6(OVPN_TUNNEL_MTU),
                    )
                {
                    self.stats.mss_clamped += 1;
                }
                // 6. Inside, a tunnel, or another client.
                self.route(buf, Side::Outside, io)
            }
        }
    }

    /// Toward an OpenVPN client: MSS clamp, seal with its current key,
    /// IPv4/UDP from the endpoint to where the client was last seen, out
    /// of the outside port.
    fn ovpn_encap<B: PacketBuffer>(&mut self, buf: &mut B, peer_id: u32) -> Action {
        if self.options.mss_clamp
            && mss_clamp(
                buf.as_mut(),
                mss_v4(OVPN_TUNNEL_MTU),
                mss_v6(OVPN_TUNNEL_MTU),
            )
        {
            self.stats.mss_clamped += 1;
        }
        let inner_len = buf.as_ref().len();
        let Some(client) = self.clients.get_mut(peer_id) else {
            return self.drop(Drop::OvpnNoClient);
        };
        let (local, remote) = client.endpoints();
        let Some(key) = client.current() else {
            self.stats.ovpn_drop(DataDrop::UnknownKeyId);
            return Action::Drop;
        };
        if let Err(r) = ovpn::encap(key, buf) {
            self.stats.ovpn_drop(r);
            return Action::Drop;
        }
        client.count_out(inner_len);
        let ident = self.stats.ovpn_encap_packets;
        if push_udp_v4(buf, local, remote, ident).is_err() {
            self.stats.ovpn_drop(DataDrop::NoHeadroom);
            return Action::Drop;
        }
        self.stats.ovpn_encap_packets += 1;
        let (dst, src) = (self.addrs.outside_gateway_mac, self.addrs.outside_mac);
        self.push_eth(buf, dst, src, Action::ToOutside)
    }

    /// Toward a tunnel: MSS clamp, clear DF, fit to the tunnel MTU
    /// (fragment or ICMP error), encapsulate.
    fn encap<B: PacketBuffer, I: PacketIo<B>>(
        &mut self,
        buf: &mut B,
        tunnel: TunnelId,
        from: Side,
        io: &mut I,
    ) -> Action {
        let tc = self.counters.get(Some(tunnel));
        let Some(sa) = self.tables.outbound_mut(tunnel) else {
            tc.count_no_sa();
            self.stats.drop(Drop::NoOutboundSa);
            return Action::Drop;
        };
        // Policed before fragmentation and encryption, on inner bytes.
        if !self
            .policers
            .admit(tunnel.0 as usize, Dir::Out, buf.as_ref().len(), self.now_ms)
        {
            tc.count_policed(false);
            self.stats.drop(Drop::Policed);
            return Action::Drop;
        }
        let mtu = mtu::sa_tunnel_mtu(sa);
        let df = sa.df_policy();
        // 1. MSS clamping of transit SYNs (spec § 14.3).
        if self.options.mss_clamp && mss_clamp(buf.as_mut(), mss_v4(mtu), mss_v6(mtu)) {
            self.stats.mss_clamped += 1;
        }
        // 2. The tunnel's clear-DF option (spec § 14.2).
        if df == DfPolicy::Clear && frag::clear_df(buf.as_mut()) {
            self.stats.df_cleared += 1;
        }
        // 3. Fit to the tunnel MTU before encryption (RFC 4459 § 5.2).
        //    The buffer holds at least the IP packet, so a buffer within
        //    the MTU is a packet within it: the common case skips the rest.
        if buf.as_ref().len() <= usize::from(mtu) {
            return self.encap_fitted(buf, tunnel, 0, &mut [], io);
        }
        let cfg = self.frag_config(mtu, FragConfig::ignore_df_for(df));
        let mut frags: [Option<B>; MAX_FRAGMENTS] = std::array::from_fn(|_| None);
        let mut icmp = None;
        let fit = frag::fit_to_mtu(buf, &cfg, &mut || io.alloc(), &mut frags, &mut icmp);
        let extra = match fit {
            Ok(Fit::Fits) => 0,
            Ok(Fit::Fragmented { extra }) => extra,
            Err(r) => {
                tc.count_drop(r);
                if let Some(icmp) = icmp {
                    self.send_icmp(icmp, &cfg, from, io);
                }
                return self.esp_drop(r);
            }
        };
        self.encap_fitted(buf, tunnel, extra, &mut frags[..extra], io)
    }

    /// Encapsulates the (first fragment of the) packet in `buf` and the
    /// `extra` further fragments in `frags`, sending those through `io`.
    fn encap_fitted<B: PacketBuffer, I: PacketIo<B>>(
        &mut self,
        buf: &mut B,
        tunnel: TunnelId,
        extra: usize,
        frags: &mut [Option<B>],
        io: &mut I,
    ) -> Action {
        let tc = self.counters.get(Some(tunnel));
        let Some(sa) = self.tables.outbound_mut(tunnel) else {
            return self.drop(Drop::NoOutboundSa);
        };
        // This packet, its extra fragments and the rest of the burst.
        let expected = u32::try_from(extra + 1)
            .unwrap_or(u32::MAX)
            .saturating_add(self.burst_left);
        sa.begin_burst(self.burst_epoch, expected);
        let mut bytes = sa.counters().bytes;
        if extra == 0 && self.batching && sa.uses_job_api() {
            // Encapsulated but for the crypto, which the burst's batch
            // does (`finish_batch`).
            return match esp::encap::encap_begin(sa, buf) {
                Ok(ticket) => {
                    let bytes = sa.counters().bytes.saturating_sub(bytes);
                    self.deferred = Some(Deferred::Encap {
                        tunnel,
                        ticket,
                        bytes: usize::try_from(bytes).unwrap_or(0),
                    });
                    Action::Drop
                }
                Err(r) => {
                    tc.count_drop(r);
                    self.stats.esp_drop(r);
                    Action::Drop
                }
            };
        }
        if let Err(r) = esp::encap(sa, buf) {
            tc.count_drop(r);
            self.stats.esp_drop(r);
            return Action::Drop;
        }
        tc.count_out(usize::try_from(sa.counters().bytes.saturating_sub(bytes)).unwrap_or(0));
        self.stats.encap_packets += 1;
        let (dst, src) = (self.addrs.outside_gateway_mac, self.addrs.outside_mac);
        if extra > 0 {
            self.stats.fragmented += 1;
            for f in frags.iter_mut() {
                let Some(mut f) = f.take() else { continue };
                bytes = sa.counters().bytes;
                if let Err(r) = esp::encap(sa, &mut f) {
                    tc.count_drop(r);
                    self.stats.esp_drop(r);
                    continue;
                }
                tc.count_out(
                    usize::try_from(sa.counters().bytes.saturating_sub(bytes)).unwrap_or(0),
                );
                match push_eth_header(&mut f, dst, src) {
                    Ok(()) => {
                        self.stats.encap_packets += 1;
                        self.stats.fragments_out += 1;
                        io.send(Action::ToOutside, f);
                    }
                    Err(r) => {
                        tc.count_drop(r);
                        self.stats.esp_drop(r);
                    }
                }
            }
        }
        self.push_eth(buf, dst, src, Action::ToOutside)
    }

    /// Toward the inside port, a packet above its MTU (a datagram
    /// reassembled from a peer's fragments): fragmented to the MTU, the
    /// extra fragments sent through `io`; with DF (or IPv6) dropped with
    /// an ICMP error back toward the source.
    fn fragment_inside<B: PacketBuffer, I: PacketIo<B>>(
        &mut self,
        buf: &mut B,
        from: Side,
        io: &mut I,
    ) -> Action {
        let cfg = self.frag_config(self.options.inside_mtu, false);
        let mut frags: [Option<B>; MAX_FRAGMENTS] = std::array::from_fn(|_| None);
        let mut icmp = None;
        let fit = frag::fit_to_mtu(buf, &cfg, &mut || io.alloc(), &mut frags, &mut icmp);
        let extra = match fit {
            Ok(Fit::Fits) => 0,
            Ok(Fit::Fragmented { extra }) => extra,
            Err(r) => {
                if let Some(icmp) = icmp {
                    self.send_icmp(icmp, &cfg, from, io);
                }
                return self.esp_drop(r);
            }
        };
        let (dst, src) = (self.addrs.inside_gateway_mac, self.addrs.inside_mac);
        for f in frags.iter_mut().take(extra) {
            let Some(mut f) = f.take() else { continue };
            match push_eth_header(&mut f, dst, src) {
                Ok(()) => {
                    self.stats.inside_fragments_out += 1;
                    io.send(Action::ToInside, f);
                }
                Err(r) => self.stats.esp_drop(r),
            }
        }
        if extra > 0 {
            self.stats.inside_fragmented += 1;
        }
        self.push_eth(buf, dst, src, Action::ToInside)
    }

    /// The fragmentation parameters for an MTU, with our ICMP sources.
    fn frag_config(&self, mtu: u16, ignore_df: bool) -> FragConfig {
        FragConfig {
            mtu,
            ignore_df,
            icmp_src_v4: self
                .options
                .icmp_src_v4
                .or_else(|| self.addrs.inside_v4.first().copied())
                .unwrap_or(Ipv4Addr::UNSPECIFIED),
            icmp_src_v6: self
                .options
                .icmp_src_v6
                .or_else(|| self.addrs.outside_v6.first().copied())
                .unwrap_or(Ipv6Addr::UNSPECIFIED),
        }
    }

    /// Sends an ICMP error (an IP packet in `icmp`) back toward the source
    /// of the packet that caused it: out of the inside port for inside
    /// traffic, to the kernel for the kernel's, routed otherwise.
    fn send_icmp<B: PacketBuffer, I: PacketIo<B>>(
        &mut self,
        mut icmp: B,
        cfg: &FragConfig,
        from: Side,
        io: &mut I,
    ) {
        let v4 = icmp.as_ref().first().is_some_and(|b| b >> 4 == 4);
        let has_src = if v4 {
            !cfg.icmp_src_v4.is_unspecified()
        } else {
            !cfg.icmp_src_v6.is_unspecified()
        };
        if !has_src {
            self.stats.icmp_suppressed += 1;
            return;
        }
        if self.icmp_tokens == 0 {
            self.stats.icmp_suppressed += 1;
            return;
        }
        self.icmp_tokens -= 1;
        let action = match from {
            Side::Inside => {
                let (dst, src) = (self.addrs.inside_gateway_mac, self.addrs.inside_mac);
                self.push_eth(&mut icmp, dst, src, Action::ToInside)
            }
            Side::Kernel => {
                let (dst, src) = (self.addrs.kernel_mac, self.addrs.outside_mac);
                self.push_eth(&mut icmp, dst, src, Action::ToKernel)
            }
            // Transit from one tunnel to another: route it like any other
            // packet (it is small, so it fits whatever tunnel it takes).
            Side::Outside => self.route(&mut icmp, Side::Kernel, &mut NoIo),
        };
        if action != Action::Drop {
            self.stats.icmp_sent += 1;
            io.send(action, icmp);
        }
    }

    fn push_eth<B: PacketBuffer>(
        &mut self,
        buf: &mut B,
        dst: [u8; 6],
        src: [u8; 6],
        then: Action,
    ) -> Action {
        match push_eth_header(buf, dst, src) {
            Ok(()) => then,
            Err(DropReason::InnerMalformed) => self.drop(Drop::Malformed),
            Err(r) => self.esp_drop(r),
        }
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

    /// Answers a Neighbor Solicitation for one of our outside IPv6
    /// addresses with the advertisement, in the same buffer.
    fn nd_reply<B: PacketBuffer>(&mut self, buf: &mut B) -> Action {
        let s = match nd::parse(buf.as_ref(), &self.addrs.outside_v6) {
            Ok(s) => s,
            Err(reason) => return self.drop(reason),
        };
        let len = buf.as_ref().len();
        let resized = if len < nd::NA_FRAME_LEN {
            buf.append(nd::NA_FRAME_LEN - len).map(|_| ())
        } else {
            buf.trim_from_end(len - nd::NA_FRAME_LEN)
        };
        if resized.is_err() {
            return self.drop(Drop::Malformed);
        }
        nd::write_advertisement(buf.as_mut(), self.addrs.outside_mac, &s);
        self.stats.arp_replies += 1;
        Action::ToOutside
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

/// The source address and port of an IPv4/UDP datagram (`udp_offset`:
/// the UDP header's offset from the IP header) and its UDP payload length,
/// checked against the buffer.
fn udp_v4_source(ip: &[u8], udp_offset: usize) -> Option<(SocketAddrV4, usize)> {
    let p = Ipv4Packet::new_checked(ip).ok()?;
    let udp = ip.get(udp_offset..udp_offset + 8)?;
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    let payload_len = udp_len.checked_sub(8)?;
    if udp_offset + udp_len > ip.len() {
        return None;
    }
    let port = u16::from_be_bytes([udp[0], udp[1]]);
    Some((SocketAddrV4::new(p.src_addr(), port), payload_len))
}

/// Prepends IPv4 (no options, DF clear, TTL 64) and UDP (checksum 0,
/// which RFC 768 allows over IPv4) headers from `local` to `remote`.
fn push_udp_v4<B: PacketBuffer>(
    buf: &mut B,
    local: SocketAddrV4,
    remote: SocketAddrV4,
    ident: u64,
) -> Result<(), ()> {
    let udp_len = u16::try_from(buf.as_ref().len() + 8).map_err(|_| ())?;
    let total = udp_len.checked_add(20).ok_or(())?;
    let hdr = buf.prepend(28).map_err(|_| ())?;
    let (ip, udp) = hdr.split_at_mut(20);
    udp[0..2].copy_from_slice(&local.port().to_be_bytes());
    udp[2..4].copy_from_slice(&remote.port().to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    ip.fill(0);
    let mut p = Ipv4Packet::new_unchecked(ip);
    p.set_version(4);
    p.set_header_len(20);
    p.set_total_len(total);
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the identification field is the low 16 bits of a counter"
    )]
    p.set_ident(ident as u16);
    p.set_ttl(64);
    p.set_protocol(IpProtocol::Udp);
    p.set_src_addr(*local.ip());
    p.set_dst_addr(*remote.ip());
    p.fill_checksum();
    Ok(())
}

/// Prepends an Ethernet header for the IP packet in `buf`.
fn push_eth_header<B: PacketBuffer>(
    buf: &mut B,
    dst: [u8; 6],
    src: [u8; 6],
) -> Result<(), DropReason> {
    let ethertype: u16 = match buf.as_ref().first().map(|b| b >> 4) {
        Some(4) => 0x0800,
        Some(6) => 0x86dd,
        _ => return Err(DropReason::InnerMalformed),
    };
    let hdr = buf.prepend(ETH_LEN).map_err(|_| DropReason::NoHeadroom)?;
    hdr[0..6].copy_from_slice(&dst);
    hdr[6..12].copy_from_slice(&src);
    hdr[12..14].copy_from_slice(&ethertype.to_be_bytes());
    Ok(())
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

/// The destination of an IPv4 or IPv6 packet, read without validation
/// (a prefetch hint only: the pipeline validates when it handles it).
fn peek_dst(ip: &[u8]) -> Option<IpAddr> {
    match ip.first()? >> 4 {
        4 => {
            let a: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            Some(IpAddr::from(a))
        }
        6 => {
            let a: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            Some(IpAddr::from(a))
        }
        _ => None,
    }
}

/// The SPI of an ESP (or UDP-encapsulated ESP, RFC 3948) frame, read
/// without validation (a prefetch hint only, like [`peek_dst`]).
fn peek_esp_spi(frame: &[u8]) -> Option<u32> {
    let ip = frame.get(ETH_LEN..)?;
    let (proto, at) = match ip.first()? >> 4 {
        4 => (*ip.get(9)?, usize::from(ip[0] & 0x0f) * 4),
        6 => (*ip.get(6)?, 40),
        _ => return None,
    };
    let at = match proto {
        50 => at,
        17 => at + 8,
        _ => return None,
    };
    read_spi(ip, at).filter(|&spi| spi != 0)
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

/// Upper-layer protocol (for a fragment: of the fragmented payload),
/// its offset from the start of the IP header, and whether the packet is
/// a fragment.
fn upper_layer(ip: &[u8]) -> Option<(IpProtocol, usize, bool)> {
    match ip.first()? >> 4 {
        4 => {
            let p = Ipv4Packet::new_checked(ip).ok()?;
            Some((p.protocol(), usize::from(p.header_len()), p.is_fragment()))
        }
        6 => {
            let p = Ipv6Packet::new_checked(ip).ok()?;
            let u = p.upper_layer().ok()?;
            Some((u.protocol, u.offset, u.fragment.is_some()))
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
