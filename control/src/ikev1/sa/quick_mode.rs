//! Quick Mode ([RFC 2409 § 5.5]), both roles, with and without PFS:
//!
//! ```text
//! Initiator                                   Responder
//! HDR*, HASH(1), SA, Ni [, KE ] [, IDci, IDcr ] -->
//!                       <-- HDR*, HASH(2), SA, Nr [, KE ] [, IDci, IDcr ]
//! HDR*, HASH(3)                                 -->
//! ```
//!
//! Every message of one exchange shares its Message ID and continues its
//! own IV chain, which starts from the last phase 1 CBC block (RFC 2409
//! Appendix B). The ID payloads are the selectors: an initiator's IDci /
//! IDcr must lie inside the tunnel's networks and are echoed unchanged
//! (IKEv1 has no narrowing); without them the selectors are the phase 1
//! addresses (§ 5.5). Keys come from KEYMAT per SPI: the SA with our SPI
//! carries the peer's traffic to us. The responder reports the IPsec SA
//! after HASH(3), the initiator after sending it.
//!
//! [RFC 2409 § 5.5]: https://www.rfc-editor.org/rfc/rfc2409#section-5.5

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use zeroize::Zeroizing;

use crate::ike::Rng;
use crate::ike::crypto::Integ;
use crate::ike::dh::DhPrivate;
use crate::ike::sa::{ChildSa, Datagram, EspKeys};
use crate::ike::wire::TrafficSelector;

use super::super::crypto::{ct_eq, keymat, last_block, phase2_iv, qm_hash, qm_hash3};
use super::super::proposal::{Phase2Suite, phase2_offer, select_phase2};
use super::super::wire::{
    Body, Chain, ExchangeType, Id, IdType, Message, Payload, PayloadType, ProtocolId, Sa,
};
use super::{
    Established, HashVerified, HeldSa, Ikev1Sa, NONCE_LEN, Quick, State, hashed_chain,
    random_bytes, random_u32,
};

/// An IPsec SA's selectors: ours, the peer's.
type Selectors = (Vec<TrafficSelector>, Vec<TrafficSelector>);

/// Where one Quick Mode stands.
#[derive(Debug)]
pub(super) enum QmRole {
    /// Responder: message 2 sent, HASH(3) awaited; the SA waits for it.
    AwaitHash3 {
        ni: Vec<u8>,
        nr: Vec<u8>,
        child: Box<ChildSa>,
    },
    /// Initiator: message 1 sent.
    AwaitQm2 {
        ni: Vec<u8>,
        our_spi: u32,
        dh: Option<DhPrivate>,
        idci: Id,
        idcr: Id,
    },
}

/// An ID payload for a selector network.
#[must_use]
pub fn id_of_net(n: &IpNet) -> Id {
    let (id_type, mut data) = match n {
        IpNet::V4(v) => (IdType::Ipv4Subnet, v.network().octets().to_vec()),
        IpNet::V6(v) => (IdType::Ipv6Subnet, v.network().octets().to_vec()),
    };
    match n {
        IpNet::V4(v) => data.extend_from_slice(&v.netmask().octets()),
        IpNet::V6(v) => data.extend_from_slice(&v.netmask().octets()),
    }
    Id {
        id_type,
        protocol: 0,
        port: 0,
        data,
    }
}

fn prefix_of_mask(mask: &[u8]) -> Option<u8> {
    let ones: u32 = mask.iter().map(|b| b.count_ones()).sum();
    // Contiguous: the mask is `ones` one bits followed by zeros.
    let mut want = Vec::with_capacity(mask.len());
    let mut left = ones;
    for _ in mask {
        let take = left.min(8);
        want.push(if take == 0 { 0 } else { 0xffu8 << (8 - take) });
        left -= take;
    }
    (want == mask).then(|| u8::try_from(ones).ok()).flatten()
}

/// The network an ID payload names (addresses and subnets; ranges are
/// not accepted).
#[must_use]
pub fn net_of_id(id: &Id) -> Option<IpNet> {
    let d = id.data.as_slice();
    match (id.id_type, d.len()) {
        (IdType::Ipv4Addr, 4) => {
            let a = Ipv4Addr::new(d[0], d[1], d[2], d[3]);
            Some(IpNet::V4(Ipv4Net::new(a, 32).ok()?))
        }
        (IdType::Ipv4Subnet, 8) => {
            let a = Ipv4Addr::new(d[0], d[1], d[2], d[3]);
            Some(IpNet::V4(
                Ipv4Net::new(a, prefix_of_mask(&d[4..])?).ok()?.trunc(),
            ))
        }
        (IdType::Ipv6Addr, 16) => {
            let a = Ipv6Addr::from(<[u8; 16]>::try_from(d).ok()?);
            Some(IpNet::V6(Ipv6Net::new(a, 128).ok()?))
        }
        (IdType::Ipv6Subnet, 32) => {
            let a = Ipv6Addr::from(<[u8; 16]>::try_from(&d[..16]).ok()?);
            Some(IpNet::V6(
                Ipv6Net::new(a, prefix_of_mask(&d[16..])?).ok()?.trunc(),
            ))
        }
        _ => None,
    }
}

fn selector(id: &Id, n: &IpNet) -> TrafficSelector {
    let (start_port, end_port) = if id.port == 0 {
        (0, u16::MAX)
    } else {
        (id.port, id.port)
    };
    TrafficSelector {
        ip_protocol: id.protocol,
        start_port,
        end_port,
        start: n.network(),
        end: n.broadcast(),
    }
}

fn host_id(ip: IpAddr) -> Id {
    match ip {
        IpAddr::V4(a) => Id {
            id_type: IdType::Ipv4Addr,
            protocol: 0,
            port: 0,
            data: a.octets().to_vec(),
        },
        IpAddr::V6(a) => Id {
            id_type: IdType::Ipv6Addr,
            protocol: 0,
            port: 0,
            data: a.octets().to_vec(),
        },
    }
}

fn inside(n: &IpNet, ours: &[IpNet]) -> bool {
    ours.iter().any(|o| o.contains(n))
}

/// The ESP keys of the SA with `spi` from its KEYMAT.
fn esp_keys(suite: &Phase2Suite, spi: u32, km: &[u8]) -> EspKeys {
    let e = suite.esp.encr.keymat_len();
    let a = suite.esp.integ.map_or(0, Integ::key_len);
    EspKeys {
        spi,
        enc_key: Zeroizing::new(km[..e].to_vec()),
        auth_key: Zeroizing::new(km[e..e + a].to_vec()),
    }
}

impl Ikev1Sa {
    pub(super) fn handle_quick_mode(
        &mut self,
        now: Instant,
        rng: &mut dyn Rng,
        _d: Datagram<'_>,
        bytes: &[u8],
        msg: &Message,
    ) {
        let Some(mut est) = self.take_established() else {
            return;
        };
        self.quick_mode(now, rng, &mut est, bytes, msg);
        if matches!(self.state, State::Closed) {
            self.state = State::Established(est);
        }
    }

    fn quick_mode(
        &mut self,
        now: Instant,
        rng: &mut dyn Rng,
        est: &mut Established,
        bytes: &[u8],
        msg: &Message,
    ) {
        let h = msg.header;
        let mid = h.message_id;
        let Body::Encrypted(ct) = &msg.body else {
            self.log("dropped an unencrypted Quick Mode message");
            return;
        };
        if mid == 0 {
            return;
        }
        let pos = est.quick.iter().position(|q| q.mid == mid);
        let iv = pos.map_or_else(
            || phase2_iv(est.suite.prf, &est.p1_last, mid),
            |i| est.quick[i].iv,
        );
        let Some((plain, chain)) = Self::open(&est.cipher, &iv, &h, ct) else {
            self.log("dropped a Quick Mode message that does not decrypt");
            return;
        };
        let (Some(Payload::Hash(got)), Some(span)) = (chain.payloads.first(), chain.spans.first())
        else {
            self.log("dropped a Quick Mode message without HASH first");
            return;
        };
        let rest = plain.get(span.end..chain.end).unwrap_or(&[]);
        let Some(iv_next) = last_block(ct) else {
            return;
        };
        let prf = est.suite.prf;
        match pos {
            None => {
                let want = qm_hash(prf, &est.skeyid_a, mid, None, rest);
                if !ct_eq(&want, got) {
                    self.log("dropped a Quick Mode message 1 whose HASH(1) does not verify");
                    return;
                }
                if !est.fresh_mid(mid) {
                    self.log("dropped a replayed Quick Mode message 1");
                    return;
                }
                est.last_heard = now;
                self.respond_qm(now, rng, est, bytes, mid, iv_next, &chain, HashVerified(()));
            }
            Some(i) => {
                let q = est.quick.remove(i);
                match q.role {
                    QmRole::AwaitHash3 { ni, nr, child } => {
                        let want = qm_hash3(prf, &est.skeyid_a, mid, &ni, &nr);
                        if !ct_eq(&want, got) || !rest.is_empty() {
                            self.log(
                                "dropped a Quick Mode message 3 whose HASH(3) does not verify",
                            );
                            est.quick.push(Quick {
                                role: QmRole::AwaitHash3 { ni, nr, child },
                                ..q
                            });
                            return;
                        }
                        est.last_heard = now;
                        self.answered_by_peer(Some(mid));
                        let proof = HashVerified(());
                        self.install_child(now, est, *child, &proof);
                    }
                    QmRole::AwaitQm2 {
                        ni,
                        our_spi,
                        dh,
                        idci,
                        idcr,
                    } => {
                        let want = qm_hash(prf, &est.skeyid_a, mid, Some(&ni), rest);
                        if !ct_eq(&want, got) {
                            self.log(
                                "dropped a Quick Mode message 2 whose HASH(2) does not verify",
                            );
                            est.quick.push(Quick {
                                role: QmRole::AwaitQm2 {
                                    ni,
                                    our_spi,
                                    dh,
                                    idci,
                                    idcr,
                                },
                                ..q
                            });
                            return;
                        }
                        est.last_heard = now;
                        self.answered_by_peer(Some(mid));
                        let proof = HashVerified(());
                        self.finish_qm(
                            now,
                            est,
                            bytes,
                            mid,
                            iv_next,
                            &chain,
                            (ni, our_spi, dh, idci, idcr),
                            &proof,
                        );
                    }
                }
            }
        }
    }

    fn install_child(
        &mut self,
        now: Instant,
        est: &mut Established,
        mut c: ChildSa,
        _p: &HashVerified,
    ) {
        if c.initiator && est.children.iter().any(|o| o.rekeying) {
            // Our rekey: receive with the successor now, send with it
            // once the peer has surely installed it.
            c.outbound_deferred = true;
            est.switches.push((
                now + super::OUTBOUND_SWITCH_DELAY,
                c.inbound.spi,
                c.outbound.spi,
            ));
        }
        // The new SA supersedes the older ones (a route-based tunnel has
        // one): none of them is rekeyed again, and those our rekey
        // replaces go shortly.
        for old in &mut est.children {
            old.rekey_at = None;
            if c.initiator && old.rekeying {
                old.rekeying = false;
                old.expire_at = old.expire_at.min(now + super::REKEYED_GRACE);
            }
        }
        // Rekeyed before it expires, by `rekey_margin` (at most half its
        // lifetime); a margin of zero: never by us.
        let margin = self.cfg.rekey_margin.min(c.lifetime / 2);
        est.children.push(HeldSa {
            inbound_spi: c.inbound.spi,
            outbound_spi: c.outbound.spi,
            expire_at: now + c.lifetime,
            rekey_at: (!margin.is_zero()).then(|| now + c.lifetime - margin),
            rekeying: false,
            pfs: c.suite.dh,
        });
        self.events
            .push_back(crate::ike::sa::Event::ChildSaUp(Box::new(c)));
    }

    #[allow(clippy::too_many_arguments, reason = "the exchange's inputs")]
    fn build_child(
        &self,
        est: &Established,
        suite: &Phase2Suite,
        g_qm: Option<&[u8]>,
        our_spi: u32,
        peer_spi: u32,
        ni: &[u8],
        nr: &[u8],
        ts: Selectors,
        we_initiated: bool,
    ) -> ChildSa {
        let len = suite.esp.keymat_len();
        let prf = est.suite.prf;
        let esp = u8::from(ProtocolId::Esp);
        let km_in = keymat(prf, &est.skeyid_d, g_qm, esp, our_spi, ni, nr, len);
        let km_out = keymat(prf, &est.skeyid_d, g_qm, esp, peer_spi, ni, nr, len);
        ChildSa {
            suite: suite.esp,
            inbound: esp_keys(suite, our_spi, &km_in),
            outbound: esp_keys(suite, peer_spi, &km_out),
            local_ts: ts.0,
            remote_ts: ts.1,
            local: self.local,
            remote: self.remote,
            nat_t: suite.udp_encap,
            replay_window: self.cfg.replay_window,
            lifetime: suite.lifetime,
            initiator: we_initiated,
            outbound_deferred: false,
        }
    }

    /// Checks the initiator's IDci / IDcr (its side, ours) against the
    /// tunnel's networks; returns the selectors (ours, theirs) and the IDs
    /// to echo.
    fn check_ids(&mut self, c: &Chain) -> Option<(Selectors, Vec<Payload>)> {
        let ids: Vec<&Id> = c
            .payloads
            .iter()
            .filter_map(|p| match p {
                Payload::Id(id) => Some(id),
                _ => None,
            })
            .collect();
        let (idci, idcr, echo) = match ids.as_slice() {
            [] => (host_id(self.remote.ip()), host_id(self.local.ip()), false),
            [i, r] => ((*i).clone(), (*r).clone(), true),
            _ => return None,
        };
        let (Some(ni), Some(nr)) = (net_of_id(&idci), net_of_id(&idcr)) else {
            return None;
        };
        if !inside(&ni, &self.cfg.remote_ts) || !inside(&nr, &self.cfg.local_ts) {
            return None;
        }
        let ts = (vec![selector(&idcr, &nr)], vec![selector(&idci, &ni)]);
        let echo = if echo {
            vec![Payload::Id(idci), Payload::Id(idcr)]
        } else {
            Vec::new()
        };
        Some((ts, echo))
    }

    #[allow(clippy::too_many_arguments, reason = "the exchange's inputs")]
    fn respond_qm(
        &mut self,
        now: Instant,
        rng: &mut dyn Rng,
        est: &mut Established,
        bytes: &[u8],
        mid: u32,
        iv: [u8; super::BLOCK],
        c: &Chain,
        _proof: HashVerified,
    ) {
        let sa = c.find(|p| match p {
            Payload::Sa(s) => Some(s),
            _ => None,
        });
        let ni = c.find(|p| match p {
            Payload::Nonce(n) => Some(n.clone()),
            _ => None,
        });
        let ke = c.find(|p| match p {
            Payload::Ke(k) => Some(k.clone()),
            _ => None,
        });
        let (Some(sa), Some(ni)) = (sa, ni) else {
            self.log("dropped a Quick Mode message 1 without SA or nonce");
            return;
        };
        let our_spi = random_u32(rng, 255);
        let nat = self.nat_detected;
        let chosen = match &ke {
            None => select_phase2(
                &self.cfg.phase2,
                self.cfg.phase2_lifetime,
                sa,
                None,
                nat,
                our_spi,
            ),
            // The KE payload carries no group: try the groups the peer
            // offers, in our order.
            Some(_) => self.cfg.phase2.dh.iter().find_map(|g| {
                select_phase2(
                    &self.cfg.phase2,
                    self.cfg.phase2_lifetime,
                    sa,
                    Some(*g),
                    nat,
                    our_spi,
                )
            }),
        };
        let Some((sa_r, peer_spi, suite)) = chosen else {
            self.log("No matching proposal found. Notifying with \"No proposal chosen\"");
            self.log("AWS tunnel phase 2 SA cannot be established while keeping phase 1");
            self.send_informational_notify(
                est,
                rng,
                super::super::wire::NotifyType::NoProposalChosen,
            );
            return;
        };
        let Some((ts, echo)) = self.check_ids(c) else {
            self.log("AWS: Traffic Selector: INVALID-ID-INFORMATION: sent to initiator");
            self.send_informational_notify(
                est,
                rng,
                super::super::wire::NotifyType::InvalidIdInformation,
            );
            return;
        };
        let mut dh_pub = None;
        let g_qm = match (&ke, suite.esp.dh) {
            (Some(k), Some(g)) => {
                let g = DhPrivate::generate(g, rng).and_then(|dh| {
                    let s = dh.agree(k)?;
                    dh_pub = Some(dh.public().to_vec());
                    Ok(s)
                });
                match g {
                    Ok(s) => Some(s),
                    Err(e) => {
                        self.log(format!("Quick Mode PFS: {e}"));
                        return;
                    }
                }
            }
            _ => None,
        };
        let nr = random_bytes(rng, NONCE_LEN);
        let child = self.build_child(
            est,
            &suite,
            g_qm.as_deref().map(|v| v.as_slice()),
            our_spi,
            peer_spi,
            &ni,
            &nr,
            ts,
            false,
        );
        let mut rest = vec![Payload::Sa(sa_r), Payload::Nonce(nr.clone())];
        if let Some(p) = dh_pub {
            rest.push(Payload::Ke(p));
        }
        rest.extend(echo);
        let (prf, a) = (est.suite.prf, &est.skeyid_a);
        let plain = hashed_chain(&rest, |t| qm_hash(prf, a, mid, Some(&ni), t));
        let Some((qm2, last)) = self.seal_raw(
            &est.cipher,
            &iv,
            mid,
            ExchangeType::QuickMode,
            PayloadType::Hash,
            &plain,
        ) else {
            return;
        };
        est.quick.push(Quick {
            mid,
            iv: last,
            role: QmRole::AwaitHash3 {
                ni,
                nr,
                child: Box::new(child),
            },
        });
        self.remember(bytes, &qm2);
        self.send_expecting(now, qm2, Some(mid));
    }

    /// Initiator: starts a Quick Mode for the tunnel's first networks,
    /// with PFS when phase 2 DH groups are configured (the first one).
    pub(super) fn start_quick_mode(&mut self, now: Instant, rng: &mut dyn Rng) {
        let Some(mut est) = self.take_established() else {
            return;
        };
        let pfs = self.cfg.phase2.dh.first().copied();
        self.start_qm(now, rng, &mut est, pfs);
        self.state = State::Established(est);
    }

    /// Initiator: Quick Mode message 1, offering PFS with `pfs` (the
    /// tunnel's first phase 2 group for a new SA, the rekeyed SA's for its
    /// successor).
    pub(super) fn start_qm(
        &mut self,
        now: Instant,
        rng: &mut dyn Rng,
        est: &mut Established,
        pfs: Option<u16>,
    ) {
        let (Some(l), Some(r)) = (self.cfg.local_ts.first(), self.cfg.remote_ts.first()) else {
            self.log("no traffic selectors configured");
            return;
        };
        let (idci, idcr) = (id_of_net(l), id_of_net(r));
        let mid = random_u32(rng, 0);
        let ni = random_bytes(rng, NONCE_LEN);
        let our_spi = random_u32(rng, 255);
        let dh = match pfs.map(|g| DhPrivate::generate(g, rng)).transpose() {
            Ok(dh) => dh,
            Err(e) => {
                self.log(format!("Quick Mode PFS: {e}"));
                return;
            }
        };
        let offer: Sa = phase2_offer(
            &self.cfg.phase2,
            self.cfg.phase2_lifetime,
            our_spi,
            pfs,
            self.nat_detected,
        );
        let mut rest = vec![Payload::Sa(offer), Payload::Nonce(ni.clone())];
        if let Some(d) = &dh {
            rest.push(Payload::Ke(d.public().to_vec()));
        }
        rest.push(Payload::Id(idci.clone()));
        rest.push(Payload::Id(idcr.clone()));
        let (prf, a) = (est.suite.prf, &est.skeyid_a);
        let plain = hashed_chain(&rest, |t| qm_hash(prf, a, mid, None, t));
        let iv = phase2_iv(prf, &est.p1_last, mid);
        let Some((qm1, last)) = self.seal_raw(
            &est.cipher,
            &iv,
            mid,
            ExchangeType::QuickMode,
            PayloadType::Hash,
            &plain,
        ) else {
            return;
        };
        est.quick.push(Quick {
            mid,
            iv: last,
            role: QmRole::AwaitQm2 {
                ni,
                our_spi,
                dh,
                idci,
                idcr,
            },
        });
        self.send_expecting(now, qm1, Some(mid));
    }

    #[allow(clippy::too_many_arguments, reason = "the exchange's inputs")]
    fn finish_qm(
        &mut self,
        now: Instant,
        est: &mut Established,
        bytes: &[u8],
        mid: u32,
        iv: [u8; super::BLOCK],
        c: &Chain,
        ours: (Vec<u8>, u32, Option<DhPrivate>, Id, Id),
        proof: &HashVerified,
    ) {
        let (ni, our_spi, dh, idci, idcr) = ours;
        let nr = c.find(|p| match p {
            Payload::Nonce(n) => Some(n.clone()),
            _ => None,
        });
        let sa = c.find(|p| match p {
            Payload::Sa(s) => Some(s),
            _ => None,
        });
        let ke = c.find(|p| match p {
            Payload::Ke(k) => Some(k.clone()),
            _ => None,
        });
        let (Some(nr), Some(sa)) = (nr, sa) else {
            self.log("Quick Mode message 2 without SA or nonce");
            return;
        };
        let single = sa.proposals.len() == 1 && sa.proposals[0].transforms.len() == 1;
        let pfs = dh.as_ref().map(DhPrivate::group);
        let chosen = select_phase2(
            &self.cfg.phase2,
            self.cfg.phase2_lifetime,
            sa,
            pfs,
            self.nat_detected,
            our_spi,
        );
        let Some((_, peer_spi, suite)) = chosen.filter(|_| single) else {
            self.log("No proposal match found by AWS");
            return;
        };
        let ids: Vec<&Id> = c
            .payloads
            .iter()
            .filter_map(|p| match p {
                Payload::Id(id) => Some(id),
                _ => None,
            })
            .collect();
        if !ids.is_empty() && (ids.len() != 2 || *ids[0] != idci || *ids[1] != idcr) {
            self.log("AWS: Traffic Selector: INVALID-ID-INFORMATION: received from responder");
            return;
        }
        let g_qm = match (&dh, &ke) {
            (Some(d), Some(k)) => match d.agree(k) {
                Ok(s) => Some(s),
                Err(e) => {
                    self.log(format!("Quick Mode PFS: {e}"));
                    return;
                }
            },
            (None, None) => None,
            _ => {
                self.log("Quick Mode message 2: KE payload does not match the PFS offer");
                return;
            }
        };
        let (Some(ln), Some(rn)) = (net_of_id(&idci), net_of_id(&idcr)) else {
            return;
        };
        let ts = (vec![selector(&idci, &ln)], vec![selector(&idcr, &rn)]);
        let child = self.build_child(
            est,
            &suite,
            g_qm.as_deref().map(|v| v.as_slice()),
            our_spi,
            peer_spi,
            &ni,
            &nr,
            ts,
            true,
        );
        let h3 = qm_hash3(est.suite.prf, &est.skeyid_a, mid, &ni, &nr);
        let Some((qm3, _)) = self.seal(
            &est.cipher,
            &iv,
            mid,
            ExchangeType::QuickMode,
            &[Payload::Hash(h3)],
        ) else {
            return;
        };
        // A retransmitted message 2 (our HASH(3) was lost) gets it again.
        self.remember(bytes, &qm3);
        self.send(qm3);
        self.install_child(now, est, child, proof);
    }
}
