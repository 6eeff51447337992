//! A negotiated Child SA: [`ChildSa`] with its ESP keys split per
//! direction from KEYMAT, the dataplane record it becomes
//! ([`ChildSa::sa_config`]), traffic selector narrowing and checking
//! ([RFC 7296 § 2.9]), and the responder's Child SA negotiation shared by
//! IKE_AUTH and CREATE_CHILD_SA. A [`ChildSa`] is only built with the
//! proof tokens [`AuthVerified`] and [`TsNarrowed`].
//!
//! [RFC 7296 § 2.9]: https://www.rfc-editor.org/rfc/rfc7296#section-2.9

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use zeroize::Zeroizing;

use crate::ike::Rng;
use crate::ike::crypto::child_keymat;
use crate::ike::proposal::{EspSuite, esp_response, select_esp};
use crate::ike::wire::{NotifyType, Payload, TrafficSelector};

use super::config::IkeConfig;
use super::{
    AuthVerified, Established, IkeSa, TsNarrowed, random_spi, sa_of, spi_u32, tsi_of, tsr_of,
};

/// One direction's ESP keys.
pub struct EspKeys {
    /// SPI.
    pub spi: u32,
    /// Encryption key (GCM: key ‖ 4-byte salt).
    pub enc_key: Zeroizing<Vec<u8>>,
    /// Integrity key (empty for GCM).
    pub auth_key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for EspKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EspKeys")
            .field("spi", &format_args!("{:08x}", self.spi))
            .finish_non_exhaustive()
    }
}

/// A negotiated Child SA, ready to install.
#[derive(Debug)]
pub struct ChildSa {
    /// Algorithms.
    pub suite: EspSuite,
    /// Peer → us.
    pub inbound: EspKeys,
    /// Us → peer.
    pub outbound: EspKeys,
    /// Our side's selectors.
    pub local_ts: Vec<TrafficSelector>,
    /// The peer's side's selectors.
    pub remote_ts: Vec<TrafficSelector>,
    /// Our ESP endpoint (port meaningful with NAT-T).
    pub local: SocketAddr,
    /// The peer's ESP endpoint.
    pub remote: SocketAddr,
    /// UDP encapsulation (NAT detected).
    pub nat_t: bool,
    /// Replay window.
    pub replay_window: u32,
    /// Hard lifetime.
    pub lifetime: Duration,
    /// Whether we initiated the exchange that created it.
    pub initiator: bool,
    /// Install only the inbound SA now: we answered the peer's rekey of
    /// another Child SA, and the peer installs its inbound SA only when our
    /// answer reaches it. The outbound SA follows with
    /// [`Event::ChildSaOutbound`](super::Event::ChildSaOutbound) once the
    /// peer deletes the SA this one replaces (RFC 7296 § 2.8).
    pub outbound_deferred: bool,
}

impl ChildSa {
    #[allow(
        clippy::too_many_arguments,
        reason = "the two proof tokens are extra by design"
    )]
    pub(super) fn new(
        suite: EspSuite,
        keymat: &[u8],
        our_spi: u32,
        peer_spi: u32,
        we_initiated: bool,
        ts: (Vec<TrafficSelector>, Vec<TrafficSelector>),
        ctx: &ChildCtx,
        _auth: &AuthVerified,
        _narrowed: TsNarrowed,
    ) -> Self {
        let e = suite.encr.keymat_len();
        let a = suite.integ.map_or(0, crate::ike::crypto::Integ::key_len);
        let half = |o: usize| EspKeysRaw {
            enc: Zeroizing::new(keymat[o..o + e].to_vec()),
            auth: Zeroizing::new(keymat[o + e..o + e + a].to_vec()),
        };
        let (i2r, r2i) = (half(0), half(e + a));
        let (inb, outb) = if we_initiated { (r2i, i2r) } else { (i2r, r2i) };
        Self {
            suite,
            inbound: EspKeys {
                spi: our_spi,
                enc_key: inb.enc,
                auth_key: inb.auth,
            },
            outbound: EspKeys {
                spi: peer_spi,
                enc_key: outb.enc,
                auth_key: outb.auth,
            },
            local_ts: ts.0,
            remote_ts: ts.1,
            local: ctx.local,
            remote: ctx.remote,
            nat_t: ctx.nat,
            replay_window: ctx.replay_window,
            lifetime: ctx.lifetime,
            initiator: we_initiated,
            outbound_deferred: false,
        }
    }

    /// The initiator → responder keys (strongSwan logs these as the
    /// "initiator" keys).
    #[must_use]
    pub fn initiator_keys(&self) -> &EspKeys {
        if self.initiator {
            &self.outbound
        } else {
            &self.inbound
        }
    }
    /// The responder → initiator keys.
    #[must_use]
    pub fn responder_keys(&self) -> &EspKeys {
        if self.initiator {
            &self.inbound
        } else {
            &self.outbound
        }
    }

    /// The dataplane SA record for one direction. `iv_seed` comes from
    /// the control plane's RNG (CBC IV generator, unused for GCM).
    ///
    /// # Errors
    /// `None` if the suite or addresses cannot be expressed (mixed
    /// address families).
    #[must_use]
    pub fn sa_config(
        &self,
        direction: dataplane::esp::sa::Direction,
        iv_seed: [u8; 16],
    ) -> Option<dataplane::esp::sa::SaConfig> {
        use dataplane::esp::sa::{
            DfPolicy, Direction, LifetimeLimits, Lifetimes, NatT, SaConfig, TunnelEndpoints,
        };
        let keys = match direction {
            Direction::Inbound => &self.inbound,
            Direction::Outbound => &self.outbound,
        };
        let tunnel = match (self.local.ip(), self.remote.ip()) {
            (IpAddr::V4(local), IpAddr::V4(remote)) => TunnelEndpoints::V4 { local, remote },
            (IpAddr::V6(local), IpAddr::V6(remote)) => TunnelEndpoints::V6 { local, remote },
            _ => return None,
        };
        let secs = self.lifetime.as_secs();
        Some(SaConfig {
            spi: keys.spi,
            direction,
            algorithm: self.suite.to_dataplane()?,
            enc_key: keys.enc_key.clone(),
            auth_key: keys.auth_key.clone(),
            iv_seed: Zeroizing::new(iv_seed),
            tunnel,
            nat_t: self.nat_t.then_some(NatT {
                local_port: self.local.port(),
                remote_port: self.remote.port(),
            }),
            esn: self.suite.esn,
            replay_window: self.replay_window,
            lifetimes: Lifetimes {
                soft: LifetimeLimits::default(),
                hard: LifetimeLimits {
                    secs: Some(secs),
                    ..LifetimeLimits::default()
                },
            },
            df: DfPolicy::default(),
        })
    }
}

pub(super) struct EspKeysRaw {
    pub(super) enc: Zeroizing<Vec<u8>>,
    pub(super) auth: Zeroizing<Vec<u8>>,
}

pub(super) struct ChildCtx {
    pub(super) local: SocketAddr,
    pub(super) remote: SocketAddr,
    pub(super) nat: bool,
    pub(super) replay_window: u32,
    pub(super) lifetime: Duration,
}

pub(super) fn net_range(n: &IpNet) -> TrafficSelector {
    TrafficSelector::range(n.network(), n.broadcast())
}

pub(super) fn ip_u128(a: IpAddr) -> (bool, u128) {
    match a {
        IpAddr::V4(v) => (false, u128::from(u32::from(v))),
        IpAddr::V6(v) => (true, u128::from(v)),
    }
}

pub(super) fn ip_from(v6: bool, x: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(x.into())
    } else {
        IpAddr::V4(u32::try_from(x).unwrap_or(u32::MAX).into())
    }
}

/// Intersection of a peer selector and one of our networks.
pub(super) fn intersect(ts: &TrafficSelector, net: &IpNet) -> Option<TrafficSelector> {
    let (f1, s1) = ip_u128(ts.start);
    let (f2, e1) = ip_u128(ts.end);
    let ours = net_range(net);
    let (f3, s2) = ip_u128(ours.start);
    let (_, e2) = ip_u128(ours.end);
    if f1 != f2 || f1 != f3 {
        return None;
    }
    let (s, e) = (s1.max(s2), e1.min(e2));
    (s <= e && ts.start_port <= ts.end_port).then(|| TrafficSelector {
        ip_protocol: ts.ip_protocol,
        start_port: ts.start_port,
        end_port: ts.end_port,
        start: ip_from(f1, s),
        end: ip_from(f1, e),
    })
}

/// Narrows the peer's selectors to our configured networks (RFC 7296
/// § 2.9); `None` when nothing is left (TS_UNACCEPTABLE).
pub(super) fn narrow(peer: &[TrafficSelector], ours: &[IpNet]) -> Option<Vec<TrafficSelector>> {
    let v: Vec<TrafficSelector> = peer
        .iter()
        .flat_map(|t| ours.iter().filter_map(move |n| intersect(t, n)))
        .collect();
    (!v.is_empty()).then_some(v)
}

/// Whether every selector of a response lies inside what we proposed.
pub(super) fn within(resp: &[TrafficSelector], ours: &[IpNet]) -> bool {
    !resp.is_empty()
        && resp.iter().all(|t| {
            ours.iter()
                .any(|n| intersect(t, n).is_some_and(|x| x == *t))
        })
}

pub(super) fn check_ts_response(
    cfg: &IkeConfig,
    tsi: &[TrafficSelector],
    tsr: &[TrafficSelector],
) -> Option<TsNarrowed> {
    (within(tsi, &cfg.local_ts) && within(tsr, &cfg.remote_ts)).then_some(TsNarrowed(()))
}

impl IkeSa {
    pub(super) fn child_ctx(&self) -> ChildCtx {
        ChildCtx {
            local: self.local,
            remote: self.remote,
            nat: self.nat_detected,
            replay_window: self.cfg.replay_window,
            lifetime: self.cfg.phase2_lifetime,
        }
    }

    /// Responder side of a Child SA negotiation: proposal, TS narrowing,
    /// keys. Returns the SA and the response payloads (SA, TSi, TSr).
    #[allow(clippy::too_many_arguments, reason = "the exchange's inputs")]
    pub(super) fn negotiate_child(
        &mut self,
        rng: &mut dyn Rng,
        est: &Established,
        p: &[Payload],
        ni: &[u8],
        nr: &[u8],
        g_ir: Option<(u16, &[u8])>,
        verified: &AuthVerified,
    ) -> Result<(ChildSa, Vec<Payload>), NotifyType> {
        let props = sa_of(p).ok_or(NotifyType::NoProposalChosen)?;
        let Some((prop, suite)) = select_esp(&self.cfg.phase2, props, g_ir.map(|g| g.0)) else {
            self.log("No matching proposal found. Notifying with \"No proposal chosen\"");
            self.log("AWS tunnel phase 2 SA cannot be established while keeping phase 1");
            return Err(NotifyType::NoProposalChosen);
        };
        let peer_spi = spi_u32(&prop.spi).ok_or(NotifyType::NoProposalChosen)?;
        let (Some(tsi), Some(tsr)) = (tsi_of(p), tsr_of(p)) else {
            return Err(NotifyType::TsUnacceptable);
        };
        // The peer's TSi is its side (our remote), TSr ours.
        let (Some(n_i), Some(n_r)) = (
            narrow(tsi, &self.cfg.remote_ts),
            narrow(tsr, &self.cfg.local_ts),
        ) else {
            self.log("AWS: Traffic Selector: TS_UNACCEPTABLE: sent to initiator");
            return Err(NotifyType::TsUnacceptable);
        };
        let narrowed = TsNarrowed(());
        let our_spi = random_spi(rng);
        let km = child_keymat(
            est.keys.suite.prf,
            &est.keys.sk_d,
            g_ir.map(|g| g.1),
            ni,
            nr,
            2 * suite.keymat_len(),
        );
        let c = ChildSa::new(
            suite,
            &km,
            our_spi,
            peer_spi,
            false,
            (n_r.clone(), n_i.clone()),
            &self.child_ctx(),
            verified,
            narrowed,
        );
        Ok((
            c,
            vec![
                Payload::Sa(vec![esp_response(prop.number, our_spi, &suite)]),
                Payload::TsI(n_i),
                Payload::TsR(n_r),
            ],
        ))
    }
}
