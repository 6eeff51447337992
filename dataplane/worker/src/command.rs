//! The control core ⇄ worker rings.

use std::sync::Arc;

use dataplane::esp::sa::{LifetimeEvent, SaCounters};
use dataplane::esp::{InboundSa, OutboundSa};
use dataplane::ovpn::DataChannel;
use fib::{Fib, TunnelId};

use crate::ovpn::OvpnClient;
use crate::pipeline::{Addresses, MtuOptions};
use crate::policy::RatePolicy;

/// A change the control core asks one worker to make. Applied between
/// bursts, in order, each acknowledged with [`Event::Done`].
#[derive(Debug)]
pub enum Command {
    /// Install (or replace, same SPI) an inbound SA. For a rekey the new
    /// inbound SA is installed first (make before break).
    AddInbound(Box<InboundSa>),
    /// [`Command::AddInbound`] for an SA whose traffic is counted under
    /// `tunnel` in the worker's tunnel counters (`TunnelDataIn`).
    AddInboundForTunnel {
        /// The tunnel the SA belongs to.
        tunnel: TunnelId,
        /// The SA.
        sa: Box<InboundSa>,
    },
    /// Remove an inbound SA.
    RemoveInbound {
        /// Its SPI.
        spi: u32,
    },
    /// Install or atomically replace a tunnel's outbound SA.
    SetOutbound {
        /// The tunnel.
        tunnel: TunnelId,
        /// The new SA.
        sa: Box<OutboundSa>,
    },
    /// Remove a tunnel's outbound SA.
    RemoveOutbound {
        /// The tunnel.
        tunnel: TunnelId,
    },
    /// Publish a new forwarding table (RCU style: the old one comes back).
    SetFib(Arc<Fib>),
    /// Replace the addresses the worker answers for and sends from.
    SetAddresses(Box<Addresses>),
    /// Replace the MTU options (MSS clamping, ICMP errors).
    SetMtuOptions(Box<MtuOptions>),
    /// Fill the (empty) vector with the counters of every SA installed,
    /// up to its capacity, and send it back as [`Event::SaSnapshot`]. The
    /// control core allocates; the worker only pushes within capacity.
    SnapshotSas(Box<Vec<SaSnapshot>>),
    /// Police `tunnel` (both directions, separate buckets) with this
    /// worker's share of its caps (see [`crate::policy`]: for a tunnel
    /// carried by `n` workers, [`RatePolicy::share`]`(caps, n, i)` for the
    /// `i`-th). Replaces a policy already set, with full buckets. Fails
    /// for a tunnel id beyond the worker's capacity.
    SetTunnelPolicy {
        /// The tunnel.
        tunnel: TunnelId,
        /// This worker's share.
        policy: RatePolicy,
    },
    /// Stop policing `tunnel`. Fails when it had no policy.
    ClearTunnelPolicy {
        /// The tunnel.
        tunnel: TunnelId,
    },
    /// Turn policing on or off for the whole worker (on by default; the
    /// policies set stay installed while it is off).
    SetPolicing {
        /// On or off.
        enabled: bool,
    },
    /// Replace the table of which worker decrypts each tunnel's inbound
    /// ESP, indexed by tunnel id ([`NO_OWNER`]: whichever receives it;
    /// ids beyond the table likewise). Read through
    /// [`Worker::inbound_owner`](crate::Worker::inbound_owner) by the
    /// runtime, which hands a packet received on another worker's queue
    /// to its owner. An empty table turns hand-off off (the default). The
    /// old table comes back in [`Event::RetiredOwners`].
    SetInboundOwners(Arc<[u16]>),
    /// Install an OpenVPN client (see [`crate::ovpn`]) under its peer-id,
    /// replacing one already there ([`Event::RetiredClient`]). Fails for
    /// a peer-id beyond the worker's client table. Install a client on
    /// one worker only: its sealing key must not exist twice.
    AddClient(Box<OvpnClient>),
    /// Renegotiation: `key` becomes the client's current (sealing) key,
    /// the current one its previous key, which still opens; the key that
    /// was previous comes back in [`Event::RetiredClientKey`]. Fails
    /// (the key comes back) for an unknown peer-id or a key of another
    /// peer-id.
    SetClientKey {
        /// The client.
        peer_id: u32,
        /// The new key.
        key: Box<DataChannel>,
    },
    /// End of the transition window: the key `key_id` leaves the client
    /// ([`Event::RetiredClientKey`]). Fails when the client does not
    /// hold it.
    RetireClientKey {
        /// The client.
        peer_id: u32,
        /// The key id (0..=7).
        key_id: u8,
    },
    /// Remove a client ([`Event::RetiredClient`]).
    RemoveClient {
        /// Its peer-id.
        peer_id: u32,
    },
    /// The UDP port of the remote-access endpoint on the outside
    /// addresses (`None`: no endpoint, the default). Its `P_DATA_V2`
    /// packets are handled by the worker, every other datagram to it
    /// (the control channel) goes to the kernel like IKE.
    SetOvpnPort {
        /// The port.
        port: Option<u16>,
    },
}

/// "No owner" in [`Command::SetInboundOwners`].
pub const NO_OWNER: u16 = u16::MAX;

/// One SA's counters as seen by one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaSnapshot {
    /// The SPI.
    pub spi: u32,
    /// Inbound (decap) or outbound (encap).
    pub inbound: bool,
    /// The tunnel it carries, if known.
    pub tunnel: Option<TunnelId>,
    /// Packets and inner bytes processed.
    pub counters: SaCounters,
}

/// What a worker reports back.
#[derive(Debug)]
pub enum Event {
    /// Command number `seq` (counted from 0 on this ring) is applied.
    Done {
        /// Sequence number of the command.
        seq: u64,
    },
    /// A command could not be applied (table full, nothing to remove).
    Failed {
        /// Sequence number of the command.
        seq: u64,
        /// Why.
        reason: &'static str,
    },
    /// An inbound SA left the worker (removed or replaced): free it here.
    RetiredInbound(Box<InboundSa>),
    /// An outbound SA left the worker.
    RetiredOutbound(Box<OutboundSa>),
    /// The forwarding table that was replaced.
    RetiredFib(Arc<Fib>),
    /// The inbound owner table replaced by [`Command::SetInboundOwners`].
    RetiredOwners(Arc<[u16]>),
    /// The answer to [`Command::SnapshotSas`] (just before its
    /// [`Event::Done`]); `truncated` when there were more SAs than room.
    SaSnapshot {
        /// The counters.
        sas: Box<Vec<SaSnapshot>>,
        /// Whether some SAs did not fit.
        truncated: bool,
    },
    /// An OpenVPN client left the worker (removed or replaced), with its
    /// keys and counters: free it here.
    RetiredClient(Box<OvpnClient>),
    /// A client key left the worker (renegotiation, retirement, or a
    /// refused [`Command::SetClientKey`]).
    RetiredClientKey(Box<DataChannel>),
    /// A client sent explicit-exit-notify on its data channel (already
    /// authenticated): the control core ends its session. Lost when the
    /// event ring is full (the session then ends by its ping timeout).
    ClientExit {
        /// The client's peer-id.
        peer_id: u32,
    },
    /// An SA reached a soft (rekey) or hard (stop) lifetime limit.
    Lifetime {
        /// The SA's SPI.
        spi: u32,
        /// Which direction it carries.
        inbound: bool,
        /// Soft or hard.
        event: LifetimeEvent,
    },
}

/// The control core's end of one worker's rings.
#[derive(Debug)]
pub struct ControlEnd {
    commands: rtrb::Producer<Command>,
    events: rtrb::Consumer<Event>,
    sent: u64,
}

/// The worker's end.
#[derive(Debug)]
pub struct WorkerEnd {
    pub(crate) commands: rtrb::Consumer<Command>,
    pub(crate) events: rtrb::Producer<Event>,
    pub(crate) applied: u64,
}

/// Rings holding up to `capacity` commands and `4 × capacity` events.
#[must_use]
pub fn channel(capacity: usize) -> (ControlEnd, WorkerEnd) {
    let (cp, cc) = rtrb::RingBuffer::new(capacity);
    let (ep, ec) = rtrb::RingBuffer::new(capacity * 4);
    (
        ControlEnd {
            commands: cp,
            events: ec,
            sent: 0,
        },
        WorkerEnd {
            commands: cc,
            events: ep,
            applied: 0,
        },
    )
}

impl ControlEnd {
    /// Queues a command; returns its sequence number.
    ///
    /// # Errors
    /// The command back when the ring is full (the worker is behind).
    pub fn send(&mut self, command: Command) -> Result<u64, Command> {
        self.commands
            .push(command)
            .map_err(|rtrb::PushError::Full(c)| c)?;
        let seq = self.sent;
        self.sent += 1;
        Ok(seq)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop().ok()
    }

    /// Commands sent so far.
    #[must_use]
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Free slots in the command ring: a control core sending one
    /// command to several workers checks them all first, so the command
    /// reaches every worker or none.
    #[must_use]
    pub fn free_slots(&self) -> usize {
        self.commands.slots()
    }
}
