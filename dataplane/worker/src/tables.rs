//! The worker's SA tables: inbound by SPI, outbound by tunnel.

use dataplane::esp::{InboundSa, OutboundSa};
use fib::TunnelId;

use crate::spi_map::SpiMap;

/// SAs owned by one worker. Capacity is reserved up front so installing
/// never reallocates on the worker, and SAs are boxed so the box the
/// control core allocated travels back to it to be freed: the worker
/// never allocates or frees SA memory.
#[derive(Debug)]
pub struct SaTables {
    // Boxed on purpose: the control core's allocation moves in and out
    // whole, so the worker never allocates or frees an SA.
    #[allow(clippy::vec_box)]
    inbound: Vec<Box<InboundSa>>,
    /// The tunnel of each inbound SA (`NONE`: not given), parallel to
    /// `inbound`.
    inbound_tunnel: Vec<u32>,
    /// SPI → index into `inbound`: one cache line per lookup, which the
    /// burst loop prefetches before it looks up ([`SpiMap`]). Looked up
    /// twice per ESP packet (prefetch stage, pipeline).
    by_spi: SpiMap,
    /// Outbound SAs by tunnel id, `capacity` slots allocated up front:
    /// a packet's tunnel reaches its SA in one load (the pointer), which
    /// the burst loop prefetches before it reads it.
    outbound: Box<[Option<Box<OutboundSa>>]>,
    outbound_len: usize,
    capacity: usize,
}

const NONE: u32 = u32::MAX;

impl SaTables {
    /// Tables for up to `capacity` SAs each way (allocated here, once).
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            inbound: Vec::with_capacity(capacity),
            inbound_tunnel: Vec::with_capacity(capacity),
            by_spi: SpiMap::with_capacity(capacity),
            outbound: (0..capacity).map(|_| None).collect(),
            outbound_len: 0,
            capacity,
        }
    }

    /// Installs an inbound SA; returns the one it replaces (same SPI), or
    /// gives the SA back when the table is full.
    ///
    /// # Errors
    /// The SA itself when the table is full.
    pub fn add_inbound(
        &mut self,
        sa: Box<InboundSa>,
    ) -> Result<Option<Box<InboundSa>>, Box<InboundSa>> {
        self.add_inbound_for(None, sa)
    }

    /// [`SaTables::add_inbound`] for an SA whose traffic is counted under
    /// `tunnel`.
    ///
    /// # Errors
    /// The SA itself when the table is full.
    pub fn add_inbound_for(
        &mut self,
        tunnel: Option<TunnelId>,
        sa: Box<InboundSa>,
    ) -> Result<Option<Box<InboundSa>>, Box<InboundSa>> {
        let spi = sa.spi();
        let t = tunnel.map_or(NONE, |t| t.0);
        if let Some(i) = self.by_spi.get(spi) {
            self.inbound_tunnel[i as usize] = t;
            return Ok(Some(std::mem::replace(&mut self.inbound[i as usize], sa)));
        }
        if self.inbound.len() >= self.capacity {
            return Err(sa);
        }
        let Ok(index) = u32::try_from(self.inbound.len()) else {
            return Err(sa);
        };
        if self.by_spi.insert(spi, index).is_err() {
            return Err(sa);
        }
        self.inbound.push(sa);
        self.inbound_tunnel.push(t);
        Ok(None)
    }

    /// Removes an inbound SA by SPI.
    pub fn remove_inbound(&mut self, spi: u32) -> Option<Box<InboundSa>> {
        let i = self.by_spi.remove(spi)?;
        let sa = self.inbound.swap_remove(i as usize);
        self.inbound_tunnel.swap_remove(i as usize);
        if let Some(moved) = self.inbound.get(i as usize) {
            // Present already (the last entry, moved into the hole):
            // replacing its value cannot fail.
            let _ = self.by_spi.insert(moved.spi(), i);
        }
        Some(sa)
    }

    /// Installs (or atomically replaces, for a rekey) the outbound SA of a
    /// tunnel; returns the one it replaces.
    ///
    /// # Errors
    /// The SA itself when the table is full or the tunnel id is too large.
    pub fn set_outbound(
        &mut self,
        tunnel: TunnelId,
        sa: Box<OutboundSa>,
    ) -> Result<Option<Box<OutboundSa>>, Box<OutboundSa>> {
        let Some(slot) = self.outbound.get_mut(tunnel.0 as usize) else {
            return Err(sa);
        };
        let old = slot.replace(sa);
        if old.is_none() {
            self.outbound_len += 1;
        }
        Ok(old)
    }

    /// Removes a tunnel's outbound SA.
    pub fn remove_outbound(&mut self, tunnel: TunnelId) -> Option<Box<OutboundSa>> {
        let sa = self.outbound.get_mut(tunnel.0 as usize)?.take()?;
        self.outbound_len -= 1;
        Some(sa)
    }

    /// The inbound SA of an SPI.
    #[inline]
    pub fn inbound_mut(&mut self, spi: u32) -> Option<&mut InboundSa> {
        let i = self.by_spi.get(spi)?;
        self.inbound.get_mut(i as usize).map(|sa| &mut **sa)
    }

    /// The inbound SA of an SPI and the tunnel it was installed for.
    #[inline]
    pub fn inbound_with_tunnel(&mut self, spi: u32) -> Option<(&mut InboundSa, Option<TunnelId>)> {
        let i = self.by_spi.get(spi)? as usize;
        let t = self.inbound_tunnel.get(i).copied().unwrap_or(NONE);
        let sa = self.inbound.get_mut(i)?;
        Some((&mut **sa, (t != NONE).then_some(TunnelId(t))))
    }

    /// The outbound SA of a tunnel, read-only (the worker's prefetch
    /// stage).
    #[inline]
    pub(crate) fn outbound_of(&self, tunnel: TunnelId) -> Option<&OutboundSa> {
        self.outbound.get(tunnel.0 as usize)?.as_deref()
    }

    /// Prefetches the slot holding `tunnel`'s outbound SA pointer (the
    /// first stage of the burst loop's prefetch; the SA itself follows
    /// with [`SaTables::outbound_of`]).
    #[inline]
    pub(crate) fn prefetch_outbound_slot(&self, tunnel: TunnelId) {
        if let Some(slot) = self.outbound.get(tunnel.0 as usize) {
            prefetch::read(slot);
        }
    }

    /// The index of an SPI's inbound SA (the first stage of the burst
    /// loop's prefetch), with the slots holding its pointer and tunnel
    /// prefetched.
    #[inline]
    pub(crate) fn inbound_index(&self, spi: u32) -> Option<u32> {
        let i = self.by_spi.get(spi)?;
        if let (Some(sa), Some(t)) = (
            self.inbound.get(i as usize),
            self.inbound_tunnel.get(i as usize),
        ) {
            prefetch::read(sa);
            prefetch::read(t);
        }
        Some(i)
    }

    /// Prefetches the line of the SPI table that looking `spi` up reads
    /// (a stage before [`SaTables::inbound_index`]).
    #[inline]
    pub(crate) fn prefetch_spi(&self, spi: u32) {
        self.by_spi.prefetch(spi);
    }

    /// The inbound SA at an index from [`SaTables::inbound_index`], with
    /// its tunnel.
    #[inline]
    pub(crate) fn inbound_at(&self, i: u32) -> Option<(&InboundSa, Option<TunnelId>)> {
        let t = self.inbound_tunnel.get(i as usize).copied().unwrap_or(NONE);
        let sa = self.inbound.get(i as usize)?;
        Some((&**sa, (t != NONE).then_some(TunnelId(t))))
    }

    /// Every inbound SA with its tunnel.
    pub fn inbound_tunnels(&self) -> impl Iterator<Item = (&InboundSa, Option<TunnelId>)> {
        self.inbound
            .iter()
            .zip(&self.inbound_tunnel)
            .map(|(sa, &t)| (&**sa, (t != NONE).then_some(TunnelId(t))))
    }

    /// The outbound SA of a tunnel.
    #[inline]
    pub fn outbound_mut(&mut self, tunnel: TunnelId) -> Option<&mut OutboundSa> {
        self.outbound.get_mut(tunnel.0 as usize)?.as_deref_mut()
    }

    /// Every inbound SA, mutably (for ageing between bursts).
    pub(crate) fn inbound_iter_mut(&mut self) -> impl Iterator<Item = &mut InboundSa> {
        self.inbound.iter_mut().map(|sa| &mut **sa)
    }

    /// Every outbound SA, mutably.
    pub(crate) fn outbound_iter_mut(&mut self) -> impl Iterator<Item = &mut OutboundSa> {
        self.outbound.iter_mut().flatten().map(|sa| &mut **sa)
    }

    /// Inbound SAs installed.
    #[must_use]
    pub fn inbound_len(&self) -> usize {
        self.inbound.len()
    }

    /// Outbound SAs installed.
    #[must_use]
    pub fn outbound_len(&self) -> usize {
        self.outbound_len
    }

    /// Every inbound SA.
    pub fn inbound(&self) -> impl Iterator<Item = &InboundSa> {
        self.inbound.iter().map(|sa| &**sa)
    }

    /// Every outbound SA with its tunnel.
    pub fn outbound(&self) -> impl Iterator<Item = (TunnelId, &OutboundSa)> {
        self.outbound
            .iter()
            .enumerate()
            .filter_map(|(t, sa)| Some((TunnelId(u32::try_from(t).ok()?), &**sa.as_ref()?)))
    }
}
