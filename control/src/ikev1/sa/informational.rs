//! Informational exchanges ([RFC 2409 § 5.7]): DELETE of IPsec and
//! ISAKMP SAs both ways ([RFC 2408 § 3.15]), INITIAL-CONTACT ([RFC 2407
//! § 4.6.3.3]), DPD R-U-THERE / R-U-THERE-ACK ([RFC 3706]), plus the
//! lifetimes of the SAs and [`Ikev1Sa::close`].
//!
//! Every Informational after Main Mode is protected: `HDR*, HASH(1),
//! N/D` with `HASH(1) = prf(SKEYID_a, M-ID | N/D)` and an IV of its own
//! derived from the last phase 1 block and its Message ID. Plaintext
//! notifications are believed only before keys exist, and only to end a
//! Main Mode we started.
//!
//! [RFC 2409 § 5.7]: https://www.rfc-editor.org/rfc/rfc2409#section-5.7
//! [RFC 2408 § 3.15]: https://www.rfc-editor.org/rfc/rfc2408#section-3.15
//! [RFC 2407 § 4.6.3.3]: https://www.rfc-editor.org/rfc/rfc2407#section-4.6.3.3
//! [RFC 3706]: https://www.rfc-editor.org/rfc/rfc3706

use std::time::Instant;

use crate::config::DpdTimeoutAction;
use crate::ike::Rng;
use crate::ike::sa::{DownReason, Event};

use super::super::crypto::{ct_eq, phase2_iv, qm_hash};
use super::super::wire::{
    Body, DOI_IPSEC, Delete, ExchangeType, Message, Notify, NotifyType, Payload, PayloadType,
    ProtocolId,
};
use super::{DpdProbe, Established, Ikev1Sa, State, hashed_chain, random_u32};

impl Ikev1Sa {
    fn cookies(&self) -> Vec<u8> {
        let mut spi = self.cky_i.to_be_bytes().to_vec();
        spi.extend_from_slice(&self.cky_r.to_be_bytes());
        spi
    }

    /// Sends a protected Informational with `payloads` after HASH(1);
    /// returns the datagram payload as sent (for DPD retransmission).
    pub(super) fn send_informational(
        &mut self,
        est: &Established,
        rng: &mut dyn Rng,
        payloads: &[Payload],
    ) -> Option<Vec<u8>> {
        let mid = random_u32(rng, 0);
        let (prf, a) = (est.suite.prf, &est.skeyid_a);
        let plain = hashed_chain(payloads, |t| qm_hash(prf, a, mid, None, t));
        let iv = phase2_iv(prf, &est.p1_last, mid);
        let (msg, _) = self.seal_raw(
            &est.cipher,
            &iv,
            mid,
            ExchangeType::Informational,
            PayloadType::Hash,
            &plain,
        )?;
        self.send(msg.clone());
        Some(msg)
    }

    /// A protected notification about the ISAKMP SA itself.
    pub(super) fn send_informational_notify(
        &mut self,
        est: &Established,
        rng: &mut dyn Rng,
        kind: NotifyType,
    ) {
        let n = Payload::Notify(Notify {
            doi: DOI_IPSEC,
            protocol: ProtocolId::Isakmp,
            spi: self.cookies(),
            kind,
            data: Vec::new(),
        });
        let _ = self.send_informational(est, rng, &[n]);
    }

    pub(super) fn handle_informational(
        &mut self,
        now: Instant,
        rng: &mut dyn Rng,
        _bytes: &[u8],
        msg: &Message,
    ) {
        let h = msg.header;
        let Some(mut est) = self.take_established() else {
            // Before keys: only a refusal of the Main Mode we started.
            self.unprotected_notify(msg);
            return;
        };
        let Body::Encrypted(ct) = &msg.body else {
            self.state = State::Established(est);
            self.log("dropped an unprotected Informational");
            return;
        };
        let iv = phase2_iv(est.suite.prf, &est.p1_last, h.message_id);
        let opened = Self::open(&est.cipher, &iv, &h, ct);
        let Some((plain, chain)) = opened else {
            self.state = State::Established(est);
            self.log("dropped an Informational that does not decrypt");
            return;
        };
        let (Some(Payload::Hash(got)), Some(span)) = (chain.payloads.first(), chain.spans.first())
        else {
            self.state = State::Established(est);
            self.log("dropped an Informational without HASH first");
            return;
        };
        let rest = plain.get(span.end..chain.end).unwrap_or(&[]);
        let want = qm_hash(est.suite.prf, &est.skeyid_a, h.message_id, None, rest);
        if !ct_eq(&want, got) {
            self.state = State::Established(est);
            self.log("dropped an Informational whose HASH does not verify");
            return;
        }
        if !est.fresh_mid(h.message_id) {
            self.state = State::Established(est);
            self.log("dropped a replayed Informational");
            return;
        }
        est.last_heard = now;
        let mut delete_ike = false;
        for p in &chain.payloads[1..] {
            match p {
                Payload::Delete(Delete {
                    protocol: ProtocolId::Isakmp,
                    spis,
                    ..
                }) if spis.iter().any(|s| *s == self.cookies()) => delete_ike = true,
                Payload::Delete(Delete {
                    protocol: ProtocolId::Esp,
                    spis,
                    ..
                }) => {
                    for s in spis {
                        let Ok(b) = <[u8; 4]>::try_from(s.as_slice()) else {
                            continue;
                        };
                        let spi = u32::from_be_bytes(b);
                        if let Some(i) = est.children.iter().position(|c| c.outbound_spi == spi) {
                            let c = est.children.remove(i);
                            self.log(format!(
                                "AWS tunnel received DELETE for phase 2 SA with SPI: {spi:08x}"
                            ));
                            self.events.push_back(Event::ChildSaDown {
                                inbound_spi: c.inbound_spi,
                                outbound_spi: c.outbound_spi,
                            });
                        }
                    }
                }
                Payload::Notify(n) if n.kind == NotifyType::RUThere => {
                    // RFC 3706 § 5.4: answer with the same sequence number.
                    let ack = Payload::Notify(Notify {
                        doi: DOI_IPSEC,
                        protocol: ProtocolId::Isakmp,
                        spi: self.cookies(),
                        kind: NotifyType::RUThereAck,
                        data: n.data.clone(),
                    });
                    let _ = self.send_informational(&est, rng, &[ack]);
                }
                Payload::Notify(n) if n.kind == NotifyType::RUThereAck => {
                    let seq = n.data.as_slice().try_into().ok().map(u32::from_be_bytes);
                    if est.dpd.as_ref().is_some_and(|p| Some(p.seq) == seq) {
                        est.dpd = None;
                    }
                }
                Payload::Notify(n) if n.kind == NotifyType::InitialContact => {
                    self.initial_contact = true;
                }
                Payload::Notify(n) => {
                    self.log(format!("received notify {}", u16::from(n.kind)));
                }
                _ => {}
            }
        }
        self.state = State::Established(est);
        if delete_ike {
            self.log("AWS tunnel received DELETE for IKE_SA from CGW");
            self.down(DownReason::DeletedByPeer);
        }
    }

    fn unprotected_notify(&mut self, msg: &Message) {
        let Body::Plain(c) = &msg.body else {
            return;
        };
        let Some(n) = c.find(|p| match p {
            Payload::Notify(n) if n.kind.is_error() => Some(n.kind),
            _ => None,
        }) else {
            return;
        };
        if !self.initiator || self.is_established() {
            return;
        }
        if n == NotifyType::NoProposalChosen {
            self.log("No proposal match found by AWS");
            self.down(DownReason::NoProposalChosen);
        } else {
            self.log(format!(
                "peer refused Main Mode with notify {}",
                u16::from(n)
            ));
            self.down(DownReason::Protocol);
        }
    }

    /// Deletes the SA: DELETE for every IPsec SA (our inbound SPIs), then
    /// for the ISAKMP SA; reports everything down ([`DownReason::Closed`]).
    pub fn close(&mut self, rng: &mut dyn Rng) {
        let Some(est) = self.take_established() else {
            self.down(DownReason::Closed);
            return;
        };
        if !est.children.is_empty() {
            let d = Payload::Delete(Delete {
                doi: DOI_IPSEC,
                protocol: ProtocolId::Esp,
                spis: est
                    .children
                    .iter()
                    .map(|c| c.inbound_spi.to_be_bytes().to_vec())
                    .collect(),
            });
            let _ = self.send_informational(&est, rng, &[d]);
        }
        let d = Payload::Delete(Delete {
            doi: DOI_IPSEC,
            protocol: ProtocolId::Isakmp,
            spis: vec![self.cookies()],
        });
        let _ = self.send_informational(&est, rng, &[d]);
        self.state = State::Established(est);
        self.down(DownReason::Closed);
    }

    /// IPsec SAs and the ISAKMP SA past their lifetime (the smaller of
    /// the proposed and configured ones) are deleted; rekeying them is the
    /// initiator's (RFC 2409 has no in-place rekey). An expired ISAKMP
    /// SA leaves its IPsec SAs to [`Ikev1Sa::take_orphans`].
    pub(super) fn handle_lifetimes(&mut self, now: Instant, rng: &mut dyn Rng) {
        let Some(mut est) = self.take_established() else {
            return;
        };
        if now >= est.expire_at {
            // The IPsec SAs outlive it (RFC 2409: phase 2 SAs do not
            // depend on the phase 1 SA); a peer that rekeyed phase 1 has
            // them on its newer ISAKMP SA, where the owner moves ours too
            // (or reports them down when there is none).
            self.log("phase 1 lifetime expired: deleting the ISAKMP SA");
            let d = Payload::Delete(Delete {
                doi: DOI_IPSEC,
                protocol: ProtocolId::Isakmp,
                spis: vec![self.cookies()],
            });
            let _ = self.send_informational(&est, rng, &[d]);
            self.state = State::Established(est);
            self.down(DownReason::Expired);
            return;
        }
        // The successors of our rekeys may carry traffic now.
        let (due, later): (Vec<_>, Vec<_>) = est.switches.iter().partition(|(t, _, _)| now >= *t);
        est.switches = later;
        for (_, inbound_spi, outbound_spi) in due {
            self.events.push_back(Event::ChildSaOutbound {
                inbound_spi,
                outbound_spi,
            });
        }
        // Phase 2 rekey: a new Quick Mode before the IPsec SA expires
        // (one at a time); its successor's arrival retires it.
        if est.quick.is_empty()
            && let Some(c) = est
                .children
                .iter_mut()
                .find(|c| c.rekey_at.is_some_and(|t| now >= t))
        {
            c.rekey_at = None;
            c.rekeying = true;
            let (spi, pfs) = (c.inbound_spi, c.pfs);
            self.log(format!(
                "phase 2 SA {spi:08x} reaches its rekey time: starting Quick Mode"
            ));
            self.start_qm(now, rng, &mut est, pfs);
        }
        let expired: Vec<usize> = (0..est.children.len())
            .filter(|i| now >= est.children[*i].expire_at)
            .collect();
        for i in expired.into_iter().rev() {
            let c = est.children.remove(i);
            self.log(format!(
                "phase 2 SA {:08x} lifetime expired: deleting it",
                c.inbound_spi
            ));
            let d = Payload::Delete(Delete {
                doi: DOI_IPSEC,
                protocol: ProtocolId::Esp,
                spis: vec![c.inbound_spi.to_be_bytes().to_vec()],
            });
            let _ = self.send_informational(&est, rng, &[d]);
            self.events.push_back(Event::ChildSaDown {
                inbound_spi: c.inbound_spi,
                outbound_spi: c.outbound_spi,
            });
        }
        self.state = State::Established(est);
    }

    /// DPD (RFC 3706 § 5.5): after `dpd_timeout` of silence an
    /// R-U-THERE, retransmitted until an ACK with its sequence number
    /// arrives; no ACK within `dpd_timeout` declares the peer dead.
    pub(super) fn handle_dpd(&mut self, now: Instant, rng: &mut dyn Rng) {
        if !self.dpd_enabled() {
            return;
        }
        let Some(mut est) = self.take_established() else {
            return;
        };
        let base = self.cfg.retransmit.base.saturating_mul(2);
        match &mut est.dpd {
            Some(p) if now >= p.dead_at => {
                self.log("Peer is not responding - Declaring peer dead");
                if self.cfg.dpd_action == DpdTimeoutAction::None {
                    // Action none (spec § 3.1): keep the SAs, probe again
                    // after another idle period.
                    est.dpd = None;
                    est.last_heard = now;
                    self.state = State::Established(est);
                    return;
                }
                self.state = State::Established(est);
                self.down(DownReason::DpdTimeout);
                return;
            }
            Some(p) if now >= p.resend_at => {
                p.resend_at = now + base;
                let d = p.datagram.clone();
                self.send(d);
            }
            Some(_) => {}
            None if now >= est.last_heard + self.cfg.dpd_timeout => {
                est.dpd_seq = est.dpd_seq.wrapping_add(1);
                let seq = est.dpd_seq;
                let n = Payload::Notify(Notify {
                    doi: DOI_IPSEC,
                    protocol: ProtocolId::Isakmp,
                    spi: self.cookies(),
                    kind: NotifyType::RUThere,
                    data: seq.to_be_bytes().to_vec(),
                });
                if let Some(sent) = self.send_informational(&est, rng, &[n]) {
                    est.dpd = Some(DpdProbe {
                        seq,
                        datagram: sent,
                        resend_at: now + base,
                        dead_at: now + self.cfg.dpd_timeout,
                    });
                }
            }
            None => {}
        }
        self.state = State::Established(est);
    }
}
