//! A tunnel's IKE configuration ([`IkeConfig`]), built from the tunnel
//! options, and the retransmission policy ([`Retransmit`]). The rekey
//! timer formula (`lifetime − margin − fuzz`, spec § 3.7) lives here;
//! the randomness for its fuzz is the caller's.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use zeroize::Zeroizing;

use crate::config::{DpdTimeoutAction, StartupAction, TunnelOptions};
use crate::ike::Rng;
use crate::ike::proposal::AlgorithmSet;
use crate::ike::wire::Identification;

use super::NAT_KEEPALIVE;

/// Retransmission policy (RFC 7296 § 2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retransmit {
    /// First timeout.
    pub base: Duration,
    /// Retransmissions before giving up.
    pub tries: u32,
}

impl Default for Retransmit {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            tries: 5,
        }
    }
}

/// A tunnel's IKE configuration.
#[derive(Debug, Clone)]
pub struct IkeConfig {
    /// Our outside address.
    pub local: IpAddr,
    /// The customer gateway's address.
    pub remote: IpAddr,
    /// Our identity (default: the local address).
    pub local_id: Identification,
    /// The identity the peer must present (None: any).
    pub remote_id: Option<Identification>,
    /// Pre-shared key.
    pub psk: Zeroizing<Vec<u8>>,
    /// Phase 1 algorithms.
    pub phase1: AlgorithmSet,
    /// Phase 2 algorithms.
    pub phase2: AlgorithmSet,
    /// Our side's traffic selectors (route-based: 0.0.0.0/0).
    pub local_ts: Vec<IpNet>,
    /// The peer's side's traffic selectors.
    pub remote_ts: Vec<IpNet>,
    /// IKE SA lifetime.
    pub phase1_lifetime: Duration,
    /// Child SA lifetime.
    pub phase2_lifetime: Duration,
    /// Rekey margin.
    pub rekey_margin: Duration,
    /// Rekey fuzz, percent of the margin.
    pub rekey_fuzz_percent: u32,
    /// ESP replay window, packets.
    pub replay_window: u32,
    /// DPD: idle time before a liveness check, and the time after the
    /// first unanswered check at which the peer is declared dead.
    pub dpd_timeout: Duration,
    /// DPD timeout action.
    pub dpd_action: DpdTimeoutAction,
    /// Startup action: `start` initiates and keeps retrying (spec § 6).
    pub startup_action: StartupAction,
    /// Retransmission policy.
    pub retransmit: Retransmit,
    /// Half-open IKE SA timeout (responder waiting for IKE_AUTH).
    pub half_open_timeout: Duration,
    /// NAT-T keepalive interval when we are the side behind a NAT.
    pub nat_keepalive: Duration,
    /// Certificate authentication (None: PSK). Shared: the key objects
    /// are not cloned per IKE SA.
    pub cert: Option<std::sync::Arc<crate::ike::cert::CertAuth>>,
    /// IKE fragmentation (RFC 7383).
    pub fragmentation: crate::ike::frag::FragmentConfig,
}

impl IkeConfig {
    /// A tunnel's IKE configuration. `local_ts` / `remote_ts` are the
    /// concentrator-side and customer-side networks (the connection's
    /// `remote_*_network_cidr` and `local_*_network_cidr`: the spec names
    /// them from the customer's point of view).
    #[must_use]
    pub fn from_tunnel(
        o: &TunnelOptions,
        local: IpAddr,
        remote: IpAddr,
        local_ts: Vec<IpNet>,
        remote_ts: Vec<IpNet>,
    ) -> Self {
        Self {
            local,
            remote,
            local_id: Identification::from_ip(local),
            remote_id: None,
            psk: Zeroizing::new(
                o.pre_shared_key
                    .as_ref()
                    .map(|p| p.dangerous_as_str().as_bytes().to_vec())
                    .unwrap_or_default(),
            ),
            phase1: AlgorithmSet::phase1(o),
            phase2: AlgorithmSet::phase2(o),
            local_ts,
            remote_ts,
            phase1_lifetime: Duration::from_secs(u64::from(o.phase1_lifetime_secs)),
            phase2_lifetime: Duration::from_secs(u64::from(o.phase2_lifetime_secs)),
            rekey_margin: Duration::from_secs(u64::from(o.rekey_margin_time_secs)),
            rekey_fuzz_percent: o.rekey_fuzz_percent,
            replay_window: o.replay_window_packets,
            dpd_timeout: Duration::from_secs(u64::from(o.dpd_timeout_secs)),
            dpd_action: o.dpd_timeout_action,
            startup_action: o.startup_action,
            retransmit: Retransmit::default(),
            half_open_timeout: Duration::from_secs(30),
            nat_keepalive: NAT_KEEPALIVE,
            cert: None,
            fragmentation: crate::ike::frag::FragmentConfig::default(),
        }
    }

    /// Rekey time for a lifetime: `lifetime − margin − random(0 ..=
    /// margin × fuzz / 100)` (spec § 3.7).
    pub(super) fn rekey_after(&self, lifetime: Duration, rng: &mut dyn Rng) -> Duration {
        let margin = self.rekey_margin.as_millis();
        let window = margin * u128::from(self.rekey_fuzz_percent.min(100)) / 100;
        let mut b = [0u8; 8];
        rng.fill(&mut b);
        let fuzz = if window == 0 {
            0
        } else {
            u128::from(u64::from_be_bytes(b)) % (window + 1)
        };
        let ms = lifetime.as_millis().saturating_sub(margin + fuzz);
        Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
    }
}
