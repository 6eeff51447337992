//! Child SA lifecycle after IKE_AUTH: the per-Child timers, rekey by
//! CREATE_CHILD_SA with PFS ([RFC 7296 § 1.3.3], § 2.8) in both roles,
//! simultaneous-rekey collisions by the nonce rule (§ 2.8.1),
//! make-before-break, the responder's deferred outbound SA
//! ([`DEFERRED_OUTBOUND_MAX`]), retries after a failed rekey, the
//! dataplane's soft-lifetime trigger ([`IkeSa::expedite_child_rekey`])
//! and hard expiry.
//!
//! [RFC 7296 § 1.3.3]: https://www.rfc-editor.org/rfc/rfc7296#section-1.3.3

use std::time::{Duration, Instant};

use crate::ike::Rng;
use crate::ike::crypto::child_keymat;
use crate::ike::dh::DhPrivate;
use crate::ike::proposal::accept_esp_response;
use crate::ike::wire::{
    ExchangeType, Message, Notify, NotifyType, Payload, ProtocolId, find_notify, first_error_notify,
};

use super::child::{ChildCtx, ChildSa, check_ts_response, net_range};
use super::retransmit::PendingKind;
use super::{
    AuthVerified, Event, IkeSa, NONCE_LEN, State, invalid_ke_group, ke_of, nonce_of, random_bytes,
    random_spi, sa_of, spi_u32, tsi_of, tsr_of,
};

#[derive(Debug)]
pub(super) struct ChildState {
    pub(super) inbound_spi: u32,
    pub(super) outbound_spi: u32,
    pub(super) rekey_at: Instant,
    pub(super) expire_at: Instant,
    /// Its outbound SA waits (we answered the peer's rekey): until the
    /// SA with this inbound SPI is deleted, or [`DEFERRED_OUTBOUND_MAX`]
    /// has passed.
    pub(super) deferred: Option<(u32, Instant)>,
}

#[derive(Debug)]
pub(super) struct ChildRekey {
    /// The Child SA being rekeyed (inbound SPI); `None`: a new Child SA
    /// ([`IkeSa::create_child`]), no REKEY_SA.
    pub(super) old_inbound: Option<u32>,
    pub(super) new_spi: u32,
    pub(super) ni: Vec<u8>,
    pub(super) dh: Option<DhPrivate>,
    /// The peer rekeyed the same Child SA at the same time (RFC 7296
    /// § 2.8.1): the lowest nonce of its exchange.
    pub(super) collision: Option<Vec<u8>>,
}

/// A failed Child SA rekey is retried halfway to the SA's hard expiry
/// while that leaves at least this long.
pub(super) const MIN_REKEY_RETRY: Duration = Duration::from_secs(1);

/// How long the responder of a Child SA rekey keeps sending with the old
/// SA when the peer does not delete it: a DELETE lost once is retransmitted
/// within this time (strongSwan: after 4 s); a peer that never deletes the
/// old SA gets our traffic on the new one from then on.
pub const DEFERRED_OUTBOUND_MAX: Duration = Duration::from_secs(10);

impl IkeSa {
    /// The dataplane reports that Child SA `spi` (inbound or outbound)
    /// reached a soft byte or packet lifetime: rekey it as soon as the
    /// request slot is free, not when its time-based timer fires. `false`
    /// when no Child SA of this IKE SA has that SPI.
    pub fn expedite_child_rekey(&mut self, now: Instant, spi: u32) -> bool {
        let State::Established(e) = &mut self.state else {
            return false;
        };
        let rekeying = e.rekeying.as_ref().and_then(|r| r.old_inbound);
        let Some(c) = e
            .children
            .iter_mut()
            .find(|c| c.inbound_spi == spi || c.outbound_spi == spi)
        else {
            return false;
        };
        // A rekey of it already in flight: nothing to do.
        if rekeying != Some(c.inbound_spi) && c.rekey_at > now {
            c.rekey_at = now;
        }
        true
    }

    pub(super) fn expire_children(&mut self, now: Instant) {
        let State::Established(e) = &mut self.state else {
            return;
        };
        let expired: Vec<u32> = e
            .children
            .iter()
            .filter(|c| now >= c.expire_at)
            .map(|c| c.inbound_spi)
            .collect();
        for spi in expired {
            self.release_deferred(spi);
            if let State::Established(e) = &mut self.state
                && let Some(i) = e.children.iter().position(|c| c.inbound_spi == spi)
            {
                let c = e.children.remove(i);
                self.events.push_back(Event::ChildSaDown {
                    inbound_spi: c.inbound_spi,
                    outbound_spi: c.outbound_spi,
                });
            }
        }
    }

    /// The Child SA with inbound SPI `old` is going away: the Child SA
    /// whose outbound SA waited for that (we answered the peer's rekey of
    /// `old`) sends from now on. Reported before `old` goes down.
    pub(super) fn release_deferred(&mut self, old: u32) {
        let State::Established(e) = &mut self.state else {
            return;
        };
        for c in &mut e.children {
            if c.deferred.is_some_and(|(o, _)| o == old) {
                c.deferred = None;
                self.events.push_back(Event::ChildSaOutbound {
                    inbound_spi: c.inbound_spi,
                    outbound_spi: c.outbound_spi,
                });
            }
        }
    }

    pub(super) fn on_create_child_request(
        &mut self,
        now: Instant,
        rng: &mut dyn Rng,
        id: u32,
        p: &[Payload],
    ) {
        self.log(format!(
            "AWS tunnel processing request for CREATE_CHILD_SA (id={id})"
        ));
        let fail = |kind: NotifyType| vec![Payload::Notify(Notify::new(kind, Vec::new()))];
        let rekey = find_notify(p, NotifyType::RekeySa).and_then(|n| spi_u32(&n.spi));
        let is_ike_rekey =
            sa_of(p).is_some_and(|v| v.iter().any(|x| x.protocol == ProtocolId::Ike));
        let resp = if is_ike_rekey {
            self.answer_ike_rekey(now, rng, p)
        } else {
            let known = |old: u32| match &self.state {
                State::Established(e) => e.children.iter().any(|c| c.outbound_spi == old),
                _ => false,
            };
            if let Some(old) = rekey
                && !known(old)
            {
                // RFC 7296 § 2.25: rekeying an SA we no longer have.
                self.log(format!(
                    "CHILD_SA with SPI {old:08x} not found for rekeying"
                ));
                self.respond(
                    rng,
                    ExchangeType::CreateChildSa,
                    id,
                    &fail(NotifyType::ChildSaNotFound),
                );
                return;
            }
            let Some(ni) = nonce_of(p).cloned() else {
                self.respond(
                    rng,
                    ExchangeType::CreateChildSa,
                    id,
                    &fail(NotifyType::InvalidSyntax),
                );
                return;
            };
            let nr = random_bytes(rng, NONCE_LEN);
            let mut dh_out = None;
            let g_ir = match ke_of(p) {
                Some((g, ke)) if self.cfg.phase2.dh.contains(&g) => {
                    match DhPrivate::generate(g, rng).ok().and_then(|d| {
                        let s = d.agree(ke).ok()?;
                        Some((d, s))
                    }) {
                        Some((d, s)) => {
                            dh_out = Some(d);
                            Some((g, s))
                        }
                        None => {
                            self.respond(
                                rng,
                                ExchangeType::CreateChildSa,
                                id,
                                &fail(NotifyType::InvalidSyntax),
                            );
                            return;
                        }
                    }
                }
                Some(_) => {
                    let g = self.cfg.phase2.dh.first().copied().unwrap_or(14);
                    self.respond(
                        rng,
                        ExchangeType::CreateChildSa,
                        id,
                        &[Payload::Notify(Notify::new(
                            NotifyType::InvalidKePayload,
                            g.to_be_bytes().to_vec(),
                        ))],
                    );
                    return;
                }
                None => None,
            };
            let State::Established(est) = std::mem::replace(&mut self.state, State::Closed) else {
                return;
            };
            // The IKE SA's AUTH was verified when it was established.
            let verified = AuthVerified(());
            let r = self.negotiate_child(
                rng,
                &est,
                p,
                &ni,
                &nr,
                g_ir.as_ref().map(|(g, s)| (*g, &s[..])),
                &verified,
            );
            self.state = State::Established(est);
            let nr_copy = nr.clone();
            match r {
                Ok((mut c, props)) => {
                    let mut resp = props;
                    resp.insert(1, Payload::Nonce(nr));
                    if let Some(d) = &dh_out {
                        resp.insert(
                            2,
                            Payload::Ke {
                                group: d.group(),
                                data: d.public().to_vec(),
                            },
                        );
                    }
                    // RFC 7296 § 2.8: the initiator of the rekey installs
                    // its inbound SA when our answer reaches it; until it
                    // deletes the old SA we keep sending on that one.
                    let replaces = rekey.and_then(|old| match &self.state {
                        State::Established(e) => e
                            .children
                            .iter()
                            .find(|c| c.outbound_spi == old)
                            .map(|c| c.inbound_spi),
                        _ => None,
                    });
                    c.outbound_deferred = replaces.is_some();
                    if let State::Established(e) = &mut self.state {
                        e.children.push(ChildState {
                            inbound_spi: c.inbound.spi,
                            outbound_spi: c.outbound.spi,
                            rekey_at: now + self.cfg.rekey_after(self.cfg.phase2_lifetime, rng),
                            expire_at: now + self.cfg.phase2_lifetime,
                            deferred: replaces.map(|old| (old, now + DEFERRED_OUTBOUND_MAX)),
                        });
                    }
                    if let Some(old) = rekey {
                        self.log(format!("rekeying CHILD_SA with SPI {old:08x}"));
                        // Simultaneous rekey of the same Child SA?
                        let their_min = if ni < nr_copy {
                            ni.clone()
                        } else {
                            nr_copy.clone()
                        };
                        if let State::Established(e) = &mut self.state
                            && let Some(rk) = &mut e.rekeying
                            && e.children.iter().any(|c| {
                                c.outbound_spi == old && Some(c.inbound_spi) == rk.old_inbound
                            })
                        {
                            rk.collision = Some(their_min);
                        }
                    }
                    self.events.push_back(Event::ChildSaUp(Box::new(c)));
                    resp
                }
                Err(n) => fail(n),
            }
        };
        self.log(format!(
            "AWS tunnel is sending response for CREATE_CHILD_SA (id={id})"
        ));
        self.respond(rng, ExchangeType::CreateChildSa, id, &resp);
    }

    /// Rekeys the Child SA whose inbound SPI is `spi` (CREATE_CHILD_SA
    /// with REKEY_SA, PFS with the first configured phase 2 group).
    pub(super) fn rekey_child(&mut self, now: Instant, rng: &mut dyn Rng, spi: u32) {
        let group = self.cfg.phase2.dh.first().copied();
        self.rekey_child_with(now, rng, spi, group);
    }

    /// Starts a new Child SA on this IKE SA (CREATE_CHILD_SA without
    /// REKEY_SA, RFC 7296 § 1.3.1, PFS with the first configured phase 2
    /// group): the retry of a Child SA that IKE_AUTH or an earlier attempt
    /// did not establish (see [`super::super::endpoint`]). `false` when it
    /// cannot start now: not established, a request in flight, or rekeyed
    /// away. The outcome is an [`Event::ChildSaUp`] or an
    /// [`Event::ChildSaFailed`].
    pub fn create_child(&mut self, now: Instant, rng: &mut dyn Rng) -> bool {
        let free = match &self.state {
            State::Established(e) => e.rekeying.is_none() && e.ike_rekey.is_none(),
            _ => false,
        };
        if !free || self.pending.is_some() || self.rekeyed_away {
            return false;
        }
        let group = self.cfg.phase2.dh.first().copied();
        self.log("AWS tunnel retrying CHILD_SA: sending CREATE_CHILD_SA for a new CHILD_SA");
        self.child_request(now, rng, None, group);
        true
    }

    /// Rekeys Child SA `spi` with PFS in `group` (None: without KE).
    pub(super) fn rekey_child_with(
        &mut self,
        now: Instant,
        rng: &mut dyn Rng,
        spi: u32,
        group: Option<u16>,
    ) {
        self.child_request(now, rng, Some(spi), group);
    }

    /// CREATE_CHILD_SA for a new Child SA, or rekeying `old` (REKEY_SA).
    fn child_request(
        &mut self,
        now: Instant,
        rng: &mut dyn Rng,
        old: Option<u32>,
        group: Option<u16>,
    ) {
        let dh = group.and_then(|g| DhPrivate::generate(g, rng).ok());
        let new_spi = random_spi(rng);
        let ni = random_bytes(rng, NONCE_LEN);
        let mut p: Vec<Payload> = old
            .map(|spi| {
                Payload::Notify(Notify {
                    protocol: ProtocolId::Esp,
                    spi: spi.to_be_bytes().to_vec(),
                    kind: NotifyType::RekeySa,
                    data: Vec::new(),
                })
            })
            .into_iter()
            .collect();
        p.push(Payload::Sa(
            self.cfg
                .phase2
                .esp_proposals(new_spi, dh.as_ref().map(DhPrivate::group)),
        ));
        p.push(Payload::Nonce(ni.clone()));
        if let Some(d) = &dh {
            p.push(Payload::Ke {
                group: d.group(),
                data: d.public().to_vec(),
            });
        }
        p.push(Payload::TsI(
            self.cfg.local_ts.iter().map(net_range).collect(),
        ));
        p.push(Payload::TsR(
            self.cfg.remote_ts.iter().map(net_range).collect(),
        ));
        let id = self.next_request;
        self.log(format!(
            "AWS tunnel is sending request for CREATE_CHILD_SA (id={id})"
        ));
        if let State::Established(e) = &mut self.state {
            e.rekeying = Some(ChildRekey {
                old_inbound: old,
                new_spi,
                ni,
                dh,
                collision: None,
            });
            // Do not try again before this attempt ends.
            if let Some(c) = e.children.iter_mut().find(|c| Some(c.inbound_spi) == old) {
                c.rekey_at = c.expire_at;
            }
        }
        self.request(
            now,
            rng,
            ExchangeType::CreateChildSa,
            &p,
            PendingKind::CreateChild,
        );
    }

    pub(super) fn on_create_child_response(
        &mut self,
        now: Instant,
        rng: &mut dyn Rng,
        msg: &Message,
        p: &[Payload],
    ) {
        let rekey_in = self.cfg.rekey_after(self.cfg.phase2_lifetime, rng);
        let id = msg.header.message_id;
        self.log(format!(
            "AWS tunnel processing response for CREATE_CHILD_SA (id={id})"
        ));
        let State::Established(est) = &mut self.state else {
            return;
        };
        let Some(rk) = est.rekeying.take() else {
            return;
        };
        let result = (|| {
            if let Some(n) = first_error_notify(p) {
                return Err(n.kind);
            }
            let props = sa_of(p).ok_or(NotifyType::NoProposalChosen)?;
            let [prop] = props.as_slice() else {
                return Err(NotifyType::NoProposalChosen);
            };
            let pfs = rk.dh.as_ref().map(DhPrivate::group);
            let suite = accept_esp_response(&self.cfg.phase2, prop, pfs)
                .ok_or(NotifyType::NoProposalChosen)?;
            let peer_spi = spi_u32(&prop.spi).ok_or(NotifyType::NoProposalChosen)?;
            let nr = nonce_of(p).ok_or(NotifyType::InvalidSyntax)?;
            let g_ir = match (&rk.dh, ke_of(p)) {
                (Some(d), Some((g, ke))) if g == d.group() => {
                    Some(d.agree(ke).map_err(|_| NotifyType::InvalidSyntax)?)
                }
                (None, None) => None,
                _ => return Err(NotifyType::NoProposalChosen),
            };
            let (Some(tsi), Some(tsr)) = (tsi_of(p), tsr_of(p)) else {
                return Err(NotifyType::TsUnacceptable);
            };
            let narrowed =
                check_ts_response(&self.cfg, tsi, tsr).ok_or(NotifyType::TsUnacceptable)?;
            let km = child_keymat(
                est.keys.suite.prf,
                &est.keys.sk_d,
                g_ir.as_deref().map(|v| &v[..]),
                &rk.ni,
                nr,
                2 * suite.keymat_len(),
            );
            let verified = AuthVerified(());
            Ok(ChildSa::new(
                suite,
                &km,
                rk.new_spi,
                peer_spi,
                true,
                (tsi.clone(), tsr.clone()),
                &ChildCtx {
                    local: self.local,
                    remote: self.remote,
                    nat: self.nat_detected,
                    replay_window: self.cfg.replay_window,
                    lifetime: self.cfg.phase2_lifetime,
                },
                &verified,
                narrowed,
            ))
        })();
        let our_min = nonce_of(p).map(|nr| {
            if rk.ni < *nr {
                rk.ni.clone()
            } else {
                nr.clone()
            }
        });
        match result {
            Ok(c) => {
                let new_in = c.inbound.spi;
                est.children.push(ChildState {
                    inbound_spi: new_in,
                    outbound_spi: c.outbound.spi,
                    rekey_at: now + rekey_in,
                    expire_at: now + self.cfg.phase2_lifetime,
                    deferred: None,
                });
                // Make-before-break: the new SA is reported up before the
                // old one is deleted.
                self.events.push_back(Event::ChildSaUp(Box::new(c)));
                // A new Child SA replaces nothing.
                let Some(old_inbound) = rk.old_inbound else {
                    return;
                };
                // RFC 7296 § 2.8.1: after a simultaneous rekey, the SA
                // created with the lowest of the four nonces is redundant
                // and its initiator deletes it; the other side deletes
                // the old SA.
                let lost = matches!((&rk.collision, &our_min), (Some(theirs), Some(ours)) if ours < theirs);
                if lost {
                    self.log(
                        "AWS tunnel (CHILD_SA) redundant SA is being deleted due to detected collision",
                    );
                    // The peer's SA replaces the old one: it sends now.
                    self.release_deferred(old_inbound);
                    self.delete_child_after_rekey(new_in);
                } else {
                    // The peer's SA of the collision is the redundant one
                    // (the peer deletes it): it never sends.
                    if let State::Established(e) = &mut self.state {
                        for c in &mut e.children {
                            if c.deferred.is_some_and(|(o, _)| o == old_inbound) {
                                c.deferred = None;
                            }
                        }
                    }
                    self.delete_child_after_rekey(old_inbound);
                }
            }
            Err(NotifyType::InvalidKePayload)
                if let Some(g) = invalid_ke_group(p).filter(|g| {
                    self.cfg.phase2.dh.contains(g)
                        && rk.dh.as_ref().map(DhPrivate::group) != Some(*g)
                }) =>
            {
                // RFC 7296 § 1.3: the responder wants another PFS group
                // (one of ours): rekey again with it.
                self.log(format!(
                    "peer requested DH group {g} for CREATE_CHILD_SA (INVALID_KE_PAYLOAD), retrying"
                ));
                self.child_request(now, rng, rk.old_inbound, Some(g));
            }
            Err(k) if rk.old_inbound.is_none() => {
                if k == NotifyType::TsUnacceptable {
                    self.log("AWS: Traffic Selector: TS_UNACCEPTABLE: received from responder");
                }
                self.log(format!(
                    "AWS tunnel phase 2 SA cannot be established while keeping phase 1 ({k:?})"
                ));
                self.events.push_back(Event::ChildSaFailed {
                    reason: k,
                    by_peer: true,
                });
            }
            Err(k) => {
                // Try again halfway to the hard expiry (a later attempt may
                // meet a peer that recovered), not only when it expires.
                if let Some(c) = est
                    .children
                    .iter_mut()
                    .find(|c| Some(c.inbound_spi) == rk.old_inbound)
                    && let Some(left) = c.expire_at.checked_duration_since(now)
                    && left >= 2 * MIN_REKEY_RETRY
                {
                    c.rekey_at = now + left / 2;
                }
                self.log(format!(
                    "AWS tunnel phase 2 SA cannot be established while keeping phase 1 ({k:?})"
                ));
            }
        }
    }

    pub(super) fn delete_child_after_rekey(&mut self, old_inbound: u32) {
        let State::Established(e) = &mut self.state else {
            return;
        };
        if let Some(i) = e.children.iter().position(|c| c.inbound_spi == old_inbound) {
            let c = e.children.remove(i);
            // The DELETE goes out once the pending slot is free (window
            // size 1): queue it as the next request. The SA is reported
            // down when the peer answers: until then it may still send
            // with it (it switches when it sees our DELETE).
            self.queued_delete
                .push_back((c.inbound_spi, c.outbound_spi));
        }
    }
}
