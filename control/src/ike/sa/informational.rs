//! INFORMATIONAL exchanges ([RFC 7296 § 1.4]): DELETE of the IKE SA and
//! of Child SAs, both directions (a rekeyed Child SA's DELETE waits for
//! the request slot and the SA is reported down when the peer answers),
//! and the DPD idle time (§ 2.4; the empty INFORMATIONAL is sent from
//! [`IkeSa::handle_timeout`], its give-up handled in `retransmit`).
//!
//! [RFC 7296 § 1.4]: https://www.rfc-editor.org/rfc/rfc7296#section-1.4

use std::time::{Duration, Instant};

use crate::ike::Rng;
use crate::ike::wire::{Delete, ExchangeType, Payload, ProtocolId};

use super::retransmit::PendingKind;
use super::{DownReason, Event, IkeSa, State, spi_u32};

impl IkeSa {
    /// Idle time before a DPD check: a quarter of the DPD timeout, so
    /// retransmissions fit in the rest.
    pub(super) fn dpd_idle(&self) -> Duration {
        (self.cfg.dpd_timeout / 4).max(Duration::from_secs(1))
    }

    /// Deletes the IKE SA (INFORMATIONAL with DELETE), reporting its
    /// Child SAs down at once.
    pub fn close(&mut self, now: Instant, rng: &mut dyn Rng) {
        if let State::Established(_) = self.state {
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
        self.go_down(DownReason::Closed);
    }

    pub(super) fn flush_queued(&mut self, now: Instant, rng: &mut dyn Rng) {
        if self.pending.is_none()
            && matches!(self.state, State::Established(_))
            && let Some((spi, outbound_spi)) = self.queued_delete.pop_front()
        {
            self.child_deleting = Some((spi, outbound_spi));
            self.request(
                now,
                rng,
                ExchangeType::Informational,
                &[Payload::Delete(Delete {
                    protocol: ProtocolId::Esp,
                    spi_size: 4,
                    spis: vec![spi.to_be_bytes().to_vec()],
                })],
                PendingKind::Delete,
            );
        }
    }

    /// The DELETE of a rekeyed Child SA was answered (or given up on): the
    /// peer sends no more with it.
    pub(super) fn child_deleted(&mut self) {
        if let Some((inbound_spi, outbound_spi)) = self.child_deleting.take() {
            self.events.push_back(Event::ChildSaDown {
                inbound_spi,
                outbound_spi,
            });
        }
    }

    pub(super) fn on_informational(&mut self, rng: &mut dyn Rng, id: u32, p: &[Payload]) {
        let mut resp = Vec::new();
        let mut ike_deleted = false;
        for d in p.iter().filter_map(|p| match p {
            Payload::Delete(d) => Some(d),
            _ => None,
        }) {
            match d.protocol {
                ProtocolId::Ike => ike_deleted = true,
                ProtocolId::Esp => {
                    let mut ours = Vec::new();
                    for spi in d.spis.iter().filter_map(|s| spi_u32(s)) {
                        self.log(format!(
                            "AWS tunnel received DELETE for phase 2 SA with SPI: {spi:08x}"
                        ));
                        if let State::Established(e) = &self.state
                            && let Some(rk) = &e.rekeying
                            && e.children.iter().any(|c| {
                                c.outbound_spi == spi && Some(c.inbound_spi) == rk.old_inbound
                            })
                        {
                            self.log(
                                "AWS tunnel detected a (CHILD_REKEY) collision as CHILD_DELETE",
                            );
                        }
                        let inbound = match &self.state {
                            State::Established(e) => e
                                .children
                                .iter()
                                .find(|c| c.outbound_spi == spi)
                                .map(|c| c.inbound_spi),
                            _ => None,
                        };
                        if let Some(inbound) = inbound {
                            self.release_deferred(inbound);
                        }
                        if let State::Established(e) = &mut self.state
                            && let Some(i) = e.children.iter().position(|c| c.outbound_spi == spi)
                        {
                            let c = e.children.remove(i);
                            ours.push(c.inbound_spi.to_be_bytes().to_vec());
                            self.events.push_back(Event::ChildSaDown {
                                inbound_spi: c.inbound_spi,
                                outbound_spi: c.outbound_spi,
                            });
                        }
                    }
                    if !ours.is_empty() {
                        resp.push(Payload::Delete(Delete {
                            protocol: ProtocolId::Esp,
                            spi_size: 4,
                            spis: ours,
                        }));
                    }
                }
                _ => {}
            }
        }
        if ike_deleted {
            self.respond(rng, ExchangeType::Informational, id, &[]);
            let childless = match &self.state {
                State::Established(e) => e.children.is_empty(),
                _ => true,
            };
            // A replaced IKE SA, or the redundant one of a rekey collision.
            if self.rekeyed_away || (self.from_rekey && childless) {
                self.go_down(DownReason::Rekeyed);
            } else {
                self.log("AWS tunnel received DELETE for IKE_SA from CGW");
                self.go_down(DownReason::DeletedByPeer);
            }
            return;
        }
        self.respond(rng, ExchangeType::Informational, id, &resp);
    }
}
