//! The OpenVPN data channel in the worker: a client table indexed by
//! peer-id, each client with a key slot for the current and the previous
//! key id (renegotiation: the new key seals at once, the old one still
//! opens until the control core retires it), the client's tunnel address
//! and the public address/port it was last seen at.
//!
//! ```text
//!   outside UDP :port, P_DATA_V2 ─► peer-id ─► key slot by key id ─► open, replay
//!        ─► (float: remember the source) ─► ping/OCC consumed, exit notify → Event
//!        ─► inner IPv4 from the client's own address ─► FIB (inside, a tunnel, a client)
//!   FIB Target::Client(peer-id) ─► current key ─► seal ─► IPv4/UDP to the client ─► outside
//!   outside UDP :port, any other opcode (control channel) ─► kernel ─► control core
//! ```
//!
//! Clients come and go by [`Command`](crate::Command)s on the worker's
//! ring (`AddClient`, `SetClientKey`, `RetireClientKey`, `RemoveClient`,
//! `SetOvpnPort`), acknowledged like SA commands; what leaves the table
//! travels back as an event so that its memory is freed on the control
//! core. A client's keys live on one worker only: two copies of a
//! sealing key would reuse AES-GCM nonces.

use std::net::{Ipv4Addr, SocketAddrV4};

use dataplane::ovpn::DataChannel;

/// One OpenVPN client as a worker holds it. Built on the control core,
/// moved to the worker by `Command::AddClient`.
#[derive(Debug)]
pub struct OvpnClient {
    peer_id: u32,
    /// The client's tunnel address (its /32 in the client CIDR): inner
    /// packets from the client must come from it.
    inner_v4: Ipv4Addr,
    /// Where the client was last seen (updated after a packet
    /// authenticated: OpenVPN's "float").
    remote: SocketAddrV4,
    /// Our address and port the client talks to.
    local: SocketAddrV4,
    /// `keys[0]` seals and opens; `keys[1]` (the previous key id) only
    /// opens.
    keys: [Option<Box<DataChannel>>; 2],
    counters: ClientCounters,
}

/// A client's traffic as one worker counted it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientCounters {
    /// Tunnel packets received from the client (after the tag verified).
    pub packets_in: u64,
    /// Their inner bytes.
    pub bytes_in: u64,
    /// Tunnel packets sealed toward the client.
    pub packets_out: u64,
    /// Their inner bytes.
    pub bytes_out: u64,
    /// Keepalive pings and other OCC messages received.
    pub keepalives: u64,
}

impl OvpnClient {
    /// A client known by `key`'s peer-id with that first key, its tunnel
    /// address, its public address and port and ours.
    #[must_use]
    pub fn new(
        key: Box<DataChannel>,
        inner_v4: Ipv4Addr,
        remote: SocketAddrV4,
        local: SocketAddrV4,
    ) -> Self {
        Self {
            peer_id: key.peer_id(),
            inner_v4,
            remote,
            local,
            keys: [Some(key), None],
            counters: ClientCounters::default(),
        }
    }

    /// The peer-id.
    #[must_use]
    pub fn peer_id(&self) -> u32 {
        self.peer_id
    }

    /// The tunnel address.
    #[must_use]
    pub fn inner_v4(&self) -> Ipv4Addr {
        self.inner_v4
    }

    /// Where the client was last seen.
    #[must_use]
    pub fn remote(&self) -> SocketAddrV4 {
        self.remote
    }

    /// The counters.
    #[must_use]
    pub fn counters(&self) -> ClientCounters {
        self.counters
    }

    /// The key ids held, current first.
    #[must_use]
    pub fn key_ids(&self) -> [Option<u8>; 2] {
        [
            self.keys[0].as_ref().map(|k| k.key_id()),
            self.keys[1].as_ref().map(|k| k.key_id()),
        ]
    }

    /// The channel for `key_id`, if held (current or previous).
    pub(crate) fn key_for(&mut self, key_id: u8) -> Option<&mut DataChannel> {
        self.keys
            .iter_mut()
            .flatten()
            .find(|k| k.key_id() == key_id)
            .map(|k| &mut **k)
    }

    /// The sealing channel.
    pub(crate) fn current(&mut self) -> Option<&mut DataChannel> {
        self.keys[0].as_deref_mut()
    }

    /// Installs `key` as the current key. The current one becomes the
    /// previous (unless it has the same key id: then it is replaced);
    /// what falls out is returned.
    pub(crate) fn set_key(&mut self, key: Box<DataChannel>) -> Option<Box<DataChannel>> {
        let same = self.keys[0]
            .as_ref()
            .is_some_and(|k| k.key_id() == key.key_id());
        if same {
            return self.keys[0].replace(key);
        }
        let old_current = self.keys[0].replace(key);
        std::mem::replace(&mut self.keys[1], old_current)
    }

    /// Removes the key `key_id` (current or previous).
    pub(crate) fn retire_key(&mut self, key_id: u8) -> Option<Box<DataChannel>> {
        let slot = self
            .keys
            .iter_mut()
            .find(|k| k.as_ref().is_some_and(|k| k.key_id() == key_id))?;
        slot.take()
    }

    /// An authenticated packet came from `remote`: replies go there.
    pub(crate) fn float(&mut self, remote: SocketAddrV4) {
        self.remote = remote;
    }

    pub(crate) fn count_in(&mut self, inner_bytes: usize) {
        self.counters.packets_in += 1;
        self.counters.bytes_in += inner_bytes as u64;
    }

    pub(crate) fn count_keepalive(&mut self) {
        self.counters.keepalives += 1;
    }

    pub(crate) fn count_out(&mut self, inner_bytes: usize) {
        self.counters.packets_out += 1;
        self.counters.bytes_out += inner_bytes as u64;
    }

    pub(crate) fn endpoints(&self) -> (SocketAddrV4, SocketAddrV4) {
        (self.local, self.remote)
    }
}

/// The worker's clients by peer-id (allocated once; a command never
/// grows it).
#[derive(Debug)]
pub(crate) struct ClientTable {
    slots: Box<[Option<Box<OvpnClient>>]>,
    len: usize,
}

impl ClientTable {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            slots: std::iter::repeat_with(|| None).take(n).collect(),
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(crate) fn get(&self, peer_id: u32) -> Option<&OvpnClient> {
        self.slots.get(peer_id as usize)?.as_deref()
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, peer_id: u32) -> Option<&mut OvpnClient> {
        self.slots.get_mut(peer_id as usize)?.as_deref_mut()
    }

    /// Installs `client` (replacing the one with its peer-id, returned).
    ///
    /// # Errors
    /// The client back when its peer-id is beyond the table.
    pub(crate) fn insert(
        &mut self,
        client: Box<OvpnClient>,
    ) -> Result<Option<Box<OvpnClient>>, Box<OvpnClient>> {
        let Some(slot) = self.slots.get_mut(client.peer_id as usize) else {
            return Err(client);
        };
        let old = slot.replace(client);
        if old.is_none() {
            self.len += 1;
        }
        Ok(old)
    }

    pub(crate) fn remove(&mut self, peer_id: u32) -> Option<Box<OvpnClient>> {
        let old = self.slots.get_mut(peer_id as usize)?.take();
        if old.is_some() {
            self.len -= 1;
        }
        old
    }
}
