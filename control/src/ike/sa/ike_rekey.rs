//! IKE SA rekey by CREATE_CHILD_SA ([RFC 7296 § 1.3.2], § 2.18), both
//! roles: the new IKE SA inherits the Child SAs and is handed to the owner
//! through [`IkeSa::take_spawned`]; simultaneous rekeys are settled by
//! the nonce rule (§ 2.8.2) and the redundant SA deleted.
//!
//! [RFC 7296 § 1.3.2]: https://www.rfc-editor.org/rfc/rfc7296#section-1.3.2

use std::time::Instant;

use crate::ike::Rng;
use crate::ike::crypto::{derive_ike_keys, skeyseed_rekey};
use crate::ike::dh::DhPrivate;
use crate::ike::proposal::{accept_ike_response, ike_response, select_ike};
use crate::ike::wire::{
    Delete, ExchangeType, Message, Notify, NotifyType, Payload, ProtocolId, first_error_notify,
};

use super::child_rekey::ChildState;
use super::retransmit::PendingKind;
use super::{
    Established, Event, IkeSa, NONCE_LEN, SaKeys, State, ke_of, nonce_of, random_bytes, random_u64,
    sa_of,
};

#[derive(Debug)]
pub(super) struct IkeRekey {
    pub(super) new_spi: u64,
    pub(super) ni: Vec<u8>,
    pub(super) dh: DhPrivate,
    /// The peer rekeyed this IKE SA at the same time (RFC 7296 § 2.8.2):
    /// the lowest nonce of its exchange and the SA it made, held back
    /// until ours completes and the nonces decide which one survives.
    pub(super) collision: Option<(Vec<u8>, Box<IkeSa>)>,
}

impl IkeSa {
    /// A new IKE SA from a rekey, inheriting the Child SAs.
    #[allow(clippy::too_many_arguments, reason = "the new SA's parts")]
    pub(super) fn rekeyed(
        &mut self,
        now: Instant,
        rng: &mut dyn Rng,
        initiator: bool,
        spi_i: u64,
        spi_r: u64,
        keys: SaKeys,
        children: Vec<ChildState>,
    ) -> Self {
        let est = Established {
            rekey_ike_at: now + self.cfg.rekey_after(self.cfg.phase1_lifetime, rng),
            expire_ike_at: now + self.cfg.phase1_lifetime,
            keys,
            children,
            last_heard: now,
            rekeying: None,
            ike_rekey: None,
        };
        let mut n = Self::blank(
            self.cfg.clone(),
            initiator,
            now,
            State::Established(Box::new(est)),
        );
        n.spi_i = spi_i;
        n.spi_r = spi_r;
        n.from_rekey = true;
        n.local = self.local;
        n.remote = self.remote;
        n.nat_detected = self.nat_detected;
        n.keepalive_at = self.keepalive_at;
        n.log(format!(
            "IKE_SA rekeyed: {:016x}_i {:016x}_r replaced by {spi_i:016x}_i {spi_r:016x}_r",
            self.spi_i, self.spi_r
        ));
        n.events.push_back(Event::IkeSaRekeyed { spi_i, spi_r });
        self.rekeyed_away = true;
        n
    }

    /// Starts an IKE SA rekey (RFC 7296 § 1.3.2) with the current group.
    pub(super) fn rekey_ike(&mut self, now: Instant, rng: &mut dyn Rng) {
        let State::Established(e) = &mut self.state else {
            return;
        };
        // One attempt per lifetime; expiry deletes the SA if it fails.
        e.rekey_ike_at = e.expire_ike_at;
        let Ok(dh) = DhPrivate::generate(e.keys.suite.dh, rng) else {
            return;
        };
        let new_spi = random_u64(rng);
        let ni = random_bytes(rng, NONCE_LEN);
        let mut props = self.cfg.phase1.ike_proposals(dh.group());
        for p in &mut props {
            p.spi = new_spi.to_be_bytes().to_vec();
        }
        let payloads = vec![
            Payload::Sa(props),
            Payload::Nonce(ni.clone()),
            Payload::Ke {
                group: dh.group(),
                data: dh.public().to_vec(),
            },
        ];
        e.ike_rekey = Some(IkeRekey {
            new_spi,
            ni,
            dh,
            collision: None,
        });
        let id = self.next_request;
        self.log(format!(
            "AWS tunnel is sending request for CREATE_CHILD_SA (id={id})"
        ));
        self.request(
            now,
            rng,
            ExchangeType::CreateChildSa,
            &payloads,
            PendingKind::RekeyIke,
        );
    }

    pub(super) fn on_ike_rekey_response(
        &mut self,
        now: Instant,
        rng: &mut dyn Rng,
        msg: &Message,
        p: &[Payload],
    ) {
        let id = msg.header.message_id;
        self.log(format!(
            "AWS tunnel processing response for CREATE_CHILD_SA (id={id})"
        ));
        let State::Established(e) = &mut self.state else {
            return;
        };
        let Some(rk) = e.ike_rekey.take() else {
            return;
        };
        let derived = (|| {
            if let Some(n) = first_error_notify(p) {
                return Err(n.kind);
            }
            let props = sa_of(p).ok_or(NotifyType::NoProposalChosen)?;
            let [prop] = props.as_slice() else {
                return Err(NotifyType::NoProposalChosen);
            };
            let suite = accept_ike_response(&self.cfg.phase1, prop)
                .filter(|s| s.dh == rk.dh.group())
                .ok_or(NotifyType::NoProposalChosen)?;
            let peer_spi = <[u8; 8]>::try_from(&prop.spi[..])
                .map(u64::from_be_bytes)
                .map_err(|_| NotifyType::InvalidSyntax)?;
            let nr = nonce_of(p).ok_or(NotifyType::InvalidSyntax)?;
            let (g, ke) = ke_of(p).ok_or(NotifyType::InvalidSyntax)?;
            if g != rk.dh.group() {
                return Err(NotifyType::InvalidKePayload);
            }
            let g_ir = rk.dh.agree(ke).map_err(|_| NotifyType::InvalidSyntax)?;
            let seed = skeyseed_rekey(e.keys.suite.prf, &e.keys.sk_d, &g_ir, &rk.ni, nr);
            let k = derive_ike_keys(&suite, &seed, &rk.ni, nr, rk.new_spi, peer_spi);
            Ok((peer_spi, SaKeys::new(suite, k, true)))
        })();
        match derived {
            Ok((peer_spi, keys)) => {
                let children = std::mem::take(&mut e.children);
                let our_min = nonce_of(p).map(|nr| rk.ni.clone().min(nr.clone()));
                if let Some((their_min, mut theirs)) = rk.collision {
                    // RFC 7296 § 2.8.2: the new IKE SA created with the
                    // lowest of the four nonces is redundant; its
                    // initiator deletes it. The survivor takes the Child
                    // SAs; whoever initiated it deletes the old IKE SA.
                    let ours_lost = our_min.is_some_and(|m| m < their_min);
                    self.log("IKE_SA rekey collision detected");
                    if ours_lost {
                        theirs.adopt_children(children);
                        let mut mine =
                            self.rekeyed(now, rng, true, rk.new_spi, peer_spi, keys, Vec::new());
                        mine.log("AWS tunnel (IKE_SA) redundant SA is being deleted due to detected collision");
                        mine.close_quietly(now, rng);
                        self.spawned.push(*theirs);
                        self.spawned.push(mine);
                        // The peer deletes the old IKE SA.
                        return;
                    }
                    let n = self.rekeyed(now, rng, true, rk.new_spi, peer_spi, keys, children);
                    self.spawned.push(n);
                    self.spawned.push(*theirs);
                } else {
                    let n = self.rekeyed(now, rng, true, rk.new_spi, peer_spi, keys, children);
                    self.spawned.push(n);
                }
                // Delete the old IKE SA (RFC 7296 § 2.18).
                self.request(
                    now,
                    rng,
                    ExchangeType::Informational,
                    &[Payload::Delete(Delete {
                        protocol: ProtocolId::Ike,
                        spi_size: 0,
                        spis: Vec::new(),
                    })],
                    PendingKind::Delete,
                );
            }
            Err(k) => self.log(format!("IKE_SA rekey failed: peer sent {k:?}")),
        }
    }

    pub(super) fn adopt_children(&mut self, children: Vec<ChildState>) {
        if let State::Established(e) = &mut self.state {
            e.children.extend(children);
        }
    }

    /// Deletes a redundant IKE SA that owns no Child SA.
    pub(super) fn close_quietly(&mut self, now: Instant, rng: &mut dyn Rng) {
        self.request(
            now,
            rng,
            ExchangeType::Informational,
            &[Payload::Delete(Delete {
                protocol: ProtocolId::Ike,
                spi_size: 0,
                spis: Vec::new(),
            })],
            PendingKind::Delete,
        );
        self.rekeyed_away = true;
    }

    /// Responder side of an IKE SA rekey; returns the response payloads.
    pub(super) fn answer_ike_rekey(
        &mut self,
        now: Instant,
        rng: &mut dyn Rng,
        p: &[Payload],
    ) -> Vec<Payload> {
        let fail = |kind: NotifyType, data: Vec<u8>| vec![Payload::Notify(Notify::new(kind, data))];
        if self.rekeyed_away {
            // Already replaced by our own rekey (RFC 7296 § 2.8.2).
            return fail(NotifyType::TemporaryFailure, Vec::new());
        }
        let (Some(props), Some(ni), Some((g, ke))) = (sa_of(p), nonce_of(p), ke_of(p)) else {
            return fail(NotifyType::InvalidSyntax, Vec::new());
        };
        let Some((number, suite)) = select_ike(&self.cfg.phase1, props, g) else {
            self.log("No matching proposal found. Notifying with \"No proposal chosen\"");
            return fail(NotifyType::NoProposalChosen, Vec::new());
        };
        if suite.dh != g {
            return fail(
                NotifyType::InvalidKePayload,
                suite.dh.to_be_bytes().to_vec(),
            );
        }
        let peer_spi = props
            .iter()
            .find(|x| x.number == number)
            .and_then(|x| <[u8; 8]>::try_from(&x.spi[..]).ok())
            .map(u64::from_be_bytes);
        let Some(peer_spi) = peer_spi else {
            return fail(NotifyType::InvalidSyntax, Vec::new());
        };
        let Some((dh, g_ir)) = DhPrivate::generate(g, rng).ok().and_then(|d| {
            let s = d.agree(ke).ok()?;
            Some((d, s))
        }) else {
            return fail(NotifyType::InvalidSyntax, Vec::new());
        };
        let nr = random_bytes(rng, NONCE_LEN);
        let our_spi = random_u64(rng);
        let State::Established(e) = &mut self.state else {
            return fail(NotifyType::TemporaryFailure, Vec::new());
        };
        let seed = skeyseed_rekey(e.keys.suite.prf, &e.keys.sk_d, &g_ir, ni, &nr);
        let k = derive_ike_keys(&suite, &seed, ni, &nr, peer_spi, our_spi);
        // Our own rekey of this IKE SA is under way: a collision.
        let colliding = e.ike_rekey.is_some();
        let their_min = ni.clone().min(nr.clone());
        let children = if colliding {
            Vec::new()
        } else {
            std::mem::take(&mut e.children)
        };
        let mut prop = ike_response(number, &suite);
        prop.spi = our_spi.to_be_bytes().to_vec();
        let n = self.rekeyed(
            now,
            rng,
            false,
            peer_spi,
            our_spi,
            SaKeys::new(suite, k, false),
            children,
        );
        if colliding {
            if let State::Established(e) = &mut self.state
                && let Some(rk) = &mut e.ike_rekey
            {
                rk.collision = Some((their_min, Box::new(n)));
            }
        } else {
            self.spawned.push(n);
        }
        vec![
            Payload::Sa(vec![prop]),
            Payload::Nonce(nr),
            Payload::Ke {
                group: dh.group(),
                data: dh.public().to_vec(),
            },
        ]
    }
}
