//! The request window ([RFC 7296 § 2.1–2.3]): one request in flight
//! (window 1), its retransmission with exponential backoff and what
//! giving up on it means (DPD action, a lost DELETE, a dead peer), the
//! cached response for a retransmitted request, and the protection of
//! messages in the SK payload (or SKF fragments) on the way out and in.
//!
//! [RFC 7296 § 2.1–2.3]: https://www.rfc-editor.org/rfc/rfc7296#section-2.1

use std::time::Instant;

use crate::ike::Rng;
use crate::ike::wire::{ExchangeType, Header, Message, Payload, emit_chain, flags, parse_chain};

use super::auth;
use super::{DownReason, IkeSa, State, random_bytes};
use crate::config::DpdTimeoutAction;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PendingKind {
    SaInit,
    Auth,
    Dpd,
    CreateChild,
    RekeyIke,
    Delete,
}

#[derive(Debug)]
pub(super) struct Pending {
    pub(super) id: u32,
    pub(super) bytes: Vec<u8>,
    pub(super) kind: PendingKind,
    pub(super) tries: u32,
    pub(super) next: Instant,
    pub(super) first_sent: Instant,
}

impl IkeSa {
    pub(super) fn send_request_bytes(
        &mut self,
        now: Instant,
        id: u32,
        bytes: Vec<u8>,
        kind: PendingKind,
    ) {
        self.transmits
            .extend(auth::datagrams(self.local, self.remote, &bytes));
        self.pending = Some(Pending {
            id,
            bytes,
            kind,
            tries: 0,
            next: now + self.cfg.retransmit.base,
            first_sent: now,
        });
    }

    pub(super) fn send_response_bytes(&mut self, id: u32, bytes: Vec<u8>) {
        self.transmits
            .extend(auth::datagrams(self.local, self.remote, &bytes));
        self.last_response = Some((id, bytes));
    }

    pub(super) fn protect(
        &self,
        rng: &mut dyn Rng,
        exchange: ExchangeType,
        response: bool,
        id: u32,
        payloads: &[Payload],
    ) -> Option<Vec<u8>> {
        let keys = self.keys()?;
        let mut f = if self.initiator { flags::INITIATOR } else { 0 };
        if response {
            f |= flags::RESPONSE;
        }
        let header = Header {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            exchange,
            flags: f,
            message_id: id,
        };
        let mut inner = Vec::new();
        let first = emit_chain(payloads, &mut inner);
        if let Some(max) = self.fragment_limit()
            && crate::ike::wire::HEADER_LEN + inner.len() + keys.out.overhead(inner.len()) > max
        {
            // RFC 7383 § 2.5: the fragments, back to back; they are sent
            // (and retransmitted) as separate datagrams.
            let frags =
                crate::ike::frag::fragment(&keys.out, &header, first, &inner, max, &mut || {
                    random_bytes(rng, 16)
                })
                .ok()?;
            return Some(frags.concat());
        }
        let iv = random_bytes(rng, 16);
        keys.out.seal(&header, first, &inner, &iv).ok()
    }

    pub(super) fn request(
        &mut self,
        now: Instant,
        rng: &mut dyn Rng,
        exchange: ExchangeType,
        payloads: &[Payload],
        kind: PendingKind,
    ) {
        let id = self.next_request;
        if let Some(b) = self.protect(rng, exchange, false, id, payloads) {
            self.next_request = self.next_request.wrapping_add(1);
            self.send_request_bytes(now, id, b, kind);
        }
    }

    pub(super) fn respond(
        &mut self,
        rng: &mut dyn Rng,
        exchange: ExchangeType,
        id: u32,
        p: &[Payload],
    ) {
        if let Some(b) = self.protect(rng, exchange, true, id, p) {
            self.send_response_bytes(id, b);
        }
    }

    pub(super) fn decrypt(&mut self, raw: &[u8], msg: &Message) -> Option<Vec<Payload>> {
        if let Some(Payload::Skf { .. }) = msg.payloads.last() {
            // Opened fragment by fragment in `reassemble`.
            return self.reassembled.take();
        }
        let keys = self.keys()?;
        match msg.payloads.last()? {
            Payload::Sk { first, data } => {
                let plain = keys.inn.open(raw, raw.len() - data.len()).ok()?;
                parse_chain(*first, &plain).ok()
            }
            _ => None,
        }
    }

    /// The request in flight is due: retransmit it with exponential backoff
    /// (RFC 7296 § 2.1), or give up on it after the configured tries.
    pub(super) fn retransmit_due(&mut self, now: Instant) {
        if let Some(p) = &mut self.pending
            && now >= p.next
        {
            if p.tries >= self.cfg.retransmit.tries {
                let kind = p.kind;
                let tries = p.tries;
                self.pending = None;
                match kind {
                    PendingKind::Dpd => {
                        self.log(format!(
                            "AWS tunnel DPD timed out after {tries} retransmissions"
                        ));
                        if self.cfg.dpd_action == DpdTimeoutAction::None {
                            // Action none: keep the SAs; probe again later.
                            if let State::Established(e) = &mut self.state {
                                e.last_heard = now;
                            }
                        } else {
                            self.go_down(DownReason::DpdTimeout);
                        }
                    }
                    PendingKind::Delete => {
                        self.child_deleted();
                        if self.rekeyed_away {
                            self.go_down(DownReason::Rekeyed);
                        }
                    }
                    _ => {
                        self.log(format!("giving up after {tries} retransmissions"));
                        self.go_down(DownReason::Timeout);
                    }
                }
            } else {
                p.tries += 1;
                // Exponential backoff, capped by the DPD timeout for DPD.
                let mut wait = self.cfg.retransmit.base * 2u32.saturating_pow(p.tries);
                if p.kind == PendingKind::Dpd {
                    let deadline = p.first_sent + self.cfg.dpd_timeout;
                    wait = wait.min(deadline.saturating_duration_since(now));
                    if p.tries == self.cfg.retransmit.tries {
                        wait = deadline.saturating_duration_since(now);
                    }
                }
                p.next = now + wait;
                self.transmits
                    .extend(auth::datagrams(self.local, self.remote, &p.bytes));
            }
        }
    }
}
