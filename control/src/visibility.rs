//! Tunnel visibility (issue 21 item 6, spec §19.1 `GetActiveVpnTunnelStatus`,
//! §20.2 flaps, §20.9 health events): what IKE negotiated for a tunnel,
//! how often and why its UP/DOWN status changed, and the health events
//! the appliance raised about it.
//!
//! The values are written by the protocol engines into the tunnel's
//! [`TunnelRuntimeState`](crate::dataplane::TunnelRuntimeState) (the
//! negotiated suite by IKE, status changes by whichever of IKE and BGP
//! caused them, see [`StatusChange`]) and read by `show_tunnels` /
//! `show_tunnel`, `vpnctl` and the metrics. Health events are kept by the
//! [`HealthMonitor`] the manager owns: a bounded ring of records and an
//! index of the tunnels that are DOWN, ordered by when they become
//! unhealthy, so a check costs the tunnels that are due, not every tunnel.
//!
//! Nothing here reads the clock: times come in as milliseconds since the
//! Unix epoch.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::config::{EncryptionAlgorithm, IkeVersion, IntegrityAlgorithm};
use crate::dataplane::TunnelKey;

/// A tunnel DOWN this long is unhealthy (spec §20.9: the single-tunnel
/// notification counts a tunnel down "for more than one hour").
pub const UNHEALTHY_AFTER_MS: u64 = 3_600_000;

/// Health event records kept (oldest dropped first).
pub const HEALTH_EVENTS_KEPT: usize = 1024;

/// What IKE negotiated for a tunnel's current IKE SA and Child SA
/// (spec §19.1: "encryption algorithm, integrity algorithm and DH group
/// for both IKE phases"), with the lifetimes in force and when each SA is
/// next rekeyed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NegotiatedParams {
    /// `ikev1` or `ikev2`.
    pub ike_version: IkeVersion,
    /// Phase 1 (IKE SA) encryption.
    pub phase1_encryption: EncryptionAlgorithm,
    /// Phase 1 integrity; absent with an AEAD cipher (GCM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase1_integrity: Option<IntegrityAlgorithm>,
    /// Phase 1 PRF, as the hash of its HMAC (`SHA2-256`, …).
    pub phase1_prf: IntegrityAlgorithm,
    /// Phase 1 Diffie-Hellman group.
    pub phase1_dh_group: u16,
    /// IKE SA lifetime in force, seconds.
    pub phase1_lifetime_secs: u64,
    /// When the IKE SA is next rekeyed (re-authenticated for IKEv1), ms
    /// since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase1_rekey_at_ms: Option<u64>,
    /// Phase 2 (Child SA) encryption; absent before a Child SA exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase2_encryption: Option<EncryptionAlgorithm>,
    /// Phase 2 integrity; absent with GCM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase2_integrity: Option<IntegrityAlgorithm>,
    /// Phase 2 PFS group, when the Child SA was made with its own DH
    /// exchange (a rekey with PFS; the first Child SA of IKEv2 reuses the
    /// IKE SA's keys and has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase2_pfs_dh_group: Option<u16>,
    /// Extended sequence numbers on the Child SA.
    #[serde(default)]
    pub phase2_esn: bool,
    /// Child SA lifetime in force, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase2_lifetime_secs: Option<u64>,
    /// When the Child SA is next rekeyed, ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase2_rekey_at_ms: Option<u64>,
}

/// Seconds from `now_ms` to `at_ms` (0 when past).
#[must_use]
pub fn secs_until(at_ms: u64, now_ms: u64) -> u64 {
    at_ms.saturating_sub(now_ms) / 1000
}

/// One UP/DOWN change, as a protocol engine reports it into
/// [`TunnelRuntimeState::note_status_change`](crate::dataplane::TunnelRuntimeState::note_status_change).
#[derive(Debug, Clone, Copy)]
pub struct StatusChange<'a> {
    /// The tunnel is UP after the change.
    pub up: bool,
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// Why, in words (`"IKE_SA deleted by the peer"`, `"BGP session
    /// left Established (Idle)"`, …).
    pub reason: &'a str,
}

/// Kind of a health event (spec §20.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HealthEventKind {
    /// The tunnel has been DOWN for longer than [`UNHEALTHY_AFTER_MS`].
    TunnelUnhealthy,
    /// The tunnel came back UP after having been reported unhealthy.
    TunnelRecovered,
    /// The tunnel's endpoint was replaced (maintenance, spec §7, §20.9:
    /// sent "after the tunnel endpoint replacement completes").
    EndpointReplacement,
}

impl HealthEventKind {
    /// Every kind, for the metrics.
    pub const ALL: [Self; 3] = [
        Self::TunnelUnhealthy,
        Self::TunnelRecovered,
        Self::EndpointReplacement,
    ];

    /// The serialized name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TunnelUnhealthy => "tunnel_unhealthy",
            Self::TunnelRecovered => "tunnel_recovered",
            Self::EndpointReplacement => "endpoint_replacement",
        }
    }
}

/// One health event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthEvent {
    /// What happened.
    pub kind: HealthEventKind,
    /// Connection id.
    pub connection_id: String,
    /// Tunnel index.
    pub tunnel: usize,
    /// When it was raised, ms since the epoch.
    pub event_timestamp: u64,
    /// Details in words.
    pub details: String,
}

/// The health events of the appliance and the index that raises
/// `tunnel_unhealthy` (see the module docs).
#[derive(Debug, Default)]
pub struct HealthMonitor {
    events: VecDeque<HealthEvent>,
    totals: BTreeMap<HealthEventKind, u64>,
    /// DOWN tunnels not yet reported, by the instant they become
    /// unhealthy.
    due: BTreeSet<(u64, TunnelKey)>,
    /// Each DOWN tunnel's entry in `due` (its due time), or `None` once
    /// reported unhealthy.
    down: BTreeMap<TunnelKey, Option<u64>>,
    threshold_ms: u64,
}

impl HealthMonitor {
    /// A monitor with the spec's threshold, [`UNHEALTHY_AFTER_MS`].
    #[must_use]
    pub fn new() -> Self {
        Self::with_threshold(UNHEALTHY_AFTER_MS)
    }

    /// A monitor that calls a tunnel unhealthy after `threshold_ms` DOWN
    /// (tests).
    #[must_use]
    pub fn with_threshold(threshold_ms: u64) -> Self {
        Self {
            threshold_ms,
            ..Self::default()
        }
    }

    /// A tunnel's DOWN-since time changed (`None`: it is UP, or gone).
    pub fn handle_down_since(&mut self, key: &TunnelKey, down_since_ms: Option<u64>, now_ms: u64) {
        let previous = self.down.remove(key);
        if let Some(Some(at)) = previous {
            self.due.remove(&(at, key.clone()));
        }
        match down_since_ms {
            Some(since) => {
                // Still the same outage once reported: do not report again.
                if previous == Some(None) {
                    self.down.insert(key.clone(), None);
                    return;
                }
                let at = since.saturating_add(self.threshold_ms);
                self.due.insert((at, key.clone()));
                self.down.insert(key.clone(), Some(at));
            }
            None => {
                if previous == Some(None) {
                    self.record(HealthEvent {
                        kind: HealthEventKind::TunnelRecovered,
                        connection_id: key.connection_id.clone(),
                        tunnel: key.tunnel,
                        event_timestamp: now_ms,
                        details: "the tunnel is UP again".to_owned(),
                    });
                }
            }
        }
    }

    /// A tunnel was removed from the configuration: forget it.
    pub fn forget(&mut self, key: &TunnelKey) {
        if let Some(Some(at)) = self.down.remove(key) {
            self.due.remove(&(at, key.clone()));
        }
    }

    /// Raise `tunnel_unhealthy` for every tunnel whose threshold passed.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        while let Some((at, key)) = self.due.first().cloned() {
            if at > now_ms {
                break;
            }
            self.due.pop_first();
            self.down.insert(key.clone(), None);
            let since = at.saturating_sub(self.threshold_ms);
            self.record(HealthEvent {
                kind: HealthEventKind::TunnelUnhealthy,
                connection_id: key.connection_id,
                tunnel: key.tunnel,
                event_timestamp: now_ms,
                details: format!(
                    "the tunnel has been DOWN for more than {} s (since {since} ms)",
                    self.threshold_ms / 1000
                ),
            });
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work, ms
    /// since the epoch.
    #[must_use]
    pub fn next_due_ms(&self) -> Option<u64> {
        self.due.first().map(|(at, _)| *at)
    }

    /// Keep `event` (the maintenance work records endpoint replacements
    /// here).
    pub fn record(&mut self, event: HealthEvent) {
        *self.totals.entry(event.kind).or_default() += 1;
        if self.events.len() == HEALTH_EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// The events kept, oldest first.
    pub fn events(&self) -> impl Iterator<Item = &HealthEvent> {
        self.events.iter()
    }

    /// Events raised since start, by kind (also those no longer kept).
    #[must_use]
    pub fn total(&self, kind: HealthEventKind) -> u64 {
        self.totals.get(&kind).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: &str, t: usize) -> TunnelKey {
        TunnelKey {
            connection_id: c.to_owned(),
            tunnel: t,
        }
    }

    #[test]
    fn a_tunnel_down_past_the_threshold_is_reported_once_then_recovers() {
        let mut h = HealthMonitor::with_threshold(10_000);
        let a = key("vpn-a", 0);
        let b = key("vpn-b", 1);
        h.handle_down_since(&a, Some(1_000), 1_000);
        h.handle_down_since(&b, Some(5_000), 5_000);
        assert_eq!(h.next_due_ms(), Some(11_000));
        h.handle_timeout(10_999);
        assert_eq!(h.events().count(), 0);
        h.handle_timeout(11_000);
        let ev: Vec<_> = h.events().cloned().collect();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, HealthEventKind::TunnelUnhealthy);
        assert_eq!((ev[0].connection_id.as_str(), ev[0].tunnel), ("vpn-a", 0));
        // b comes back before its threshold: nothing about it.
        h.handle_down_since(&b, None, 14_000);
        h.handle_timeout(100_000);
        assert_eq!(h.events().count(), 1);
        // a's outage goes on (a reason changed): not reported twice.
        h.handle_down_since(&a, Some(20_000), 20_000);
        h.handle_timeout(200_000);
        assert_eq!(h.total(HealthEventKind::TunnelUnhealthy), 1);
        // a recovers.
        h.handle_down_since(&a, None, 300_000);
        assert_eq!(h.total(HealthEventKind::TunnelRecovered), 1);
        assert_eq!(h.next_due_ms(), None);
        // A new outage is a new event.
        h.handle_down_since(&a, Some(400_000), 400_000);
        h.handle_timeout(410_000);
        assert_eq!(h.total(HealthEventKind::TunnelUnhealthy), 2);
    }

    #[test]
    fn forgotten_tunnels_are_not_reported_and_the_ring_is_bounded() {
        let mut h = HealthMonitor::with_threshold(10);
        let a = key("vpn-a", 0);
        h.handle_down_since(&a, Some(0), 0);
        h.forget(&a);
        h.handle_timeout(1_000);
        assert_eq!(h.events().count(), 0);
        for i in 0..(HEALTH_EVENTS_KEPT + 5) {
            h.record(HealthEvent {
                kind: HealthEventKind::EndpointReplacement,
                connection_id: format!("vpn-{i}"),
                tunnel: 0,
                event_timestamp: 0,
                details: String::new(),
            });
        }
        assert_eq!(h.events().count(), HEALTH_EVENTS_KEPT);
        assert_eq!(h.events().next().unwrap().connection_id, "vpn-5");
        assert_eq!(
            h.total(HealthEventKind::EndpointReplacement),
            u64::try_from(HEALTH_EVENTS_KEPT + 5).unwrap()
        );
    }

    #[test]
    fn secs_until_saturates() {
        assert_eq!(secs_until(10_500, 1_000), 9);
        assert_eq!(secs_until(1_000, 10_000), 0);
    }
}
