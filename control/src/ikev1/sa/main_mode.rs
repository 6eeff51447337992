//! Main Mode with pre-shared keys ([RFC 2409 § 5], § 5.4), both roles:
//!
//! ```text
//! Initiator                          Responder
//! HDR, SA, VID(NAT-T), VID(DPD)  -->
//!                                <-- HDR, SA, VID(NAT-T), VID(DPD)
//! HDR, KE, Ni, NAT-D, NAT-D      -->
//!                                <-- HDR, KE, Nr, NAT-D, NAT-D
//! HDR*, IDii, HASH_I [, N(INITIAL-CONTACT)] -->      (UDP 4500 after a NAT)
//!                                <-- HDR*, IDir, HASH_R
//! ```
//!
//! NAT detection is RFC 3947's: after the NAT-T vendor ID exchange each
//! side sends `HASH(CKY-I | CKY-R | IP | Port)` of the destination, then
//! of its source; a mismatch means a NAT and the initiator floats to UDP
//! 4500 for message 5 (§ 4). A wrong pre-shared key shows as a message 5
//! (or 6) that does not decrypt to a payload chain whose HASH verifies
//! (spec § 20.4: "AWS tunnel payload decryption failed due to invalid
//! pre-shared key").
//!
//! [RFC 2409 § 5]: https://www.rfc-editor.org/rfc/rfc2409#section-5

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::ike::Rng;
use crate::ike::crypto::Prf;
use crate::ike::dh::DhPrivate;
use crate::ike::sa::{Datagram, DownReason, IkeConfig, NAT_T_PORT, Transmit};

use super::super::crypto::{
    Phase1Cipher, ct_eq, hash, last_block, main_mode_hash, phase1_iv, phase1_keys, skeyid_psk,
};
use super::super::proposal::{accept_phase1, phase1_offer, select_phase1};
use super::super::wire::{
    Body, Chain, DOI_IPSEC, ExchangeType, FLAG_ENCRYPTION, HEADER_LEN, Header, Id, IdType, Message,
    Notify, NotifyType, Payload, PayloadType, ProtocolId, parse_chain,
};
use super::{
    ExpectMm2, ExpectMm3, ExpectMm4, ExpectMm5, ExpectMm6, HashVerified, Ikev1Sa, Keyed, NONCE_LEN,
    State, VID_DPD, VID_NAT_T, add_marker, random_bytes, random_u32, random_u64, strip_marker,
};

/// Why [`Ikev1Sa::accept`] made no SA: what to send back (if anything)
/// and the log lines.
#[derive(Debug)]
pub struct Refused {
    /// An unauthenticated notification to send.
    pub answer: Option<Transmit>,
    /// Tunnel log lines (spec § 20.4 texts).
    pub log: Vec<String>,
}

impl Refused {
    fn silent(why: &str) -> Self {
        Self {
            answer: None,
            log: vec![why.to_owned()],
        }
    }
}

/// A NAT-D hash (RFC 3947 § 3.2): `HASH(CKY-I | CKY-R | IP | Port)` with
/// the negotiated hash.
#[must_use]
pub fn nat_d_hash(prf: Prf, cky_i: u64, cky_r: u64, addr: SocketAddr) -> Vec<u8> {
    let ip = match addr.ip() {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    hash(
        prf,
        &[
            &cky_i.to_be_bytes(),
            &cky_r.to_be_bytes(),
            &ip,
            &addr.port().to_be_bytes(),
        ],
    )
}

/// The body of payload `i` of `chain` as received (generic header
/// stripped); `after_header` is the message without its ISAKMP header.
fn raw_body<'a>(after_header: &'a [u8], chain: &Chain, i: usize) -> &'a [u8] {
    chain
        .spans
        .get(i)
        .and_then(|s| after_header.get(s.start + 4..s.end))
        .unwrap_or(&[])
}

fn vendor_ids(c: &Chain) -> (bool, bool) {
    let has = |v: &[u8]| {
        c.payloads
            .iter()
            .any(|p| matches!(p, Payload::Vendor(x) if x.as_slice() == v))
    };
    (has(&VID_NAT_T), has(&VID_DPD))
}

fn nat_ds(c: &Chain) -> Vec<&Vec<u8>> {
    c.payloads
        .iter()
        .filter_map(|p| match p {
            Payload::NatD(_, h) => Some(h),
            _ => None,
        })
        .collect()
}

/// An unauthenticated Informational with one notification, for refusals
/// before keys exist (RFC 2408 § 5.1).
fn plain_notify(h: &Header, kind: NotifyType, mid: u32) -> Vec<u8> {
    let mut spi = h.cky_i.to_be_bytes().to_vec();
    spi.extend_from_slice(&h.cky_r.to_be_bytes());
    Message::emit_plain(
        &Header {
            exchange: ExchangeType::Informational,
            flags: 0,
            message_id: mid,
            ..*h
        },
        &[Payload::Notify(Notify {
            doi: DOI_IPSEC,
            protocol: ProtocolId::Isakmp,
            spi,
            kind,
            data: Vec::new(),
        })],
    )
}

/// Our phase 1 ID payload: the configured identity, protocol and port 0
/// (RFC 2407 § 4.6.2 allows 0 / 0 or UDP / 500).
fn our_id(cfg: &IkeConfig) -> Id {
    Id {
        id_type: IdType::from(u8::from(cfg.local_id.id_type)),
        protocol: 0,
        port: 0,
        data: cfg.local_id.data.clone(),
    }
}

impl Ikev1Sa {
    /// Responder: Main Mode message 1 from the tunnel's peer. Chooses a
    /// transform and answers with message 2.
    ///
    /// # Errors
    /// [`Refused`]: Aggressive Mode (spec § 3.2: Main Mode only), no
    /// acceptable transform (NO-PROPOSAL-CHOSEN is sent), or not a valid
    /// message 1.
    pub fn accept(
        cfg: IkeConfig,
        now: Instant,
        rng: &mut dyn Rng,
        d: Datagram<'_>,
    ) -> Result<Self, Refused> {
        let bytes = strip_marker(d).ok_or_else(|| Refused::silent("not an ISAKMP message"))?;
        let msg = Message::parse(bytes)
            .map_err(|e| Refused::silent(&format!("dropped a malformed ISAKMP message: {e}")))?;
        let h = msg.header;
        if h.exchange == ExchangeType::Aggressive {
            let mid = random_u32(rng, 0);
            return Err(Refused {
                answer: Some(Transmit {
                    local: d.local,
                    remote: d.remote,
                    payload: add_marker(
                        d.local,
                        plain_notify(&h, NotifyType::InvalidExchangeType, mid),
                    ),
                }),
                log: vec![format!(
                    "IKEv1 Aggressive Mode from {} refused: only Main Mode is supported",
                    d.remote.ip()
                )],
            });
        }
        let Body::Plain(chain) = &msg.body else {
            return Err(Refused::silent("encrypted Main Mode message 1"));
        };
        if h.exchange != ExchangeType::IdentityProtection || h.cky_r != 0 || h.message_id != 0 {
            return Err(Refused::silent("not a Main Mode message 1"));
        }
        let Some(sa_idx) = chain
            .payloads
            .iter()
            .position(|p| matches!(p, Payload::Sa(_)))
        else {
            return Err(Refused::silent("Main Mode message 1 without SA"));
        };
        let Payload::Sa(sa_i) = &chain.payloads[sa_idx] else {
            return Err(Refused::silent("Main Mode message 1 without SA"));
        };
        let Some((sa_r, suite)) = select_phase1(&cfg.phase1, cfg.phase1_lifetime, sa_i) else {
            let mid = random_u32(rng, 0);
            return Err(Refused {
                answer: Some(Transmit {
                    local: d.local,
                    remote: d.remote,
                    payload: add_marker(
                        d.local,
                        plain_notify(&h, NotifyType::NoProposalChosen, mid),
                    ),
                }),
                log: vec!["No proposal match found by AWS".to_owned()],
            });
        };
        let sa_i_b = raw_body(&bytes[HEADER_LEN..], chain, sa_idx).to_vec();
        let (nat_t, dpd) = vendor_ids(chain);
        let mut sa = Self::blank(cfg, false, now, State::Mm3(ExpectMm3 { sa_i_b, suite }));
        sa.cky_i = h.cky_i;
        sa.cky_r = random_u64(rng);
        sa.local = d.local;
        sa.remote = d.remote;
        sa.peer_nat_t = nat_t;
        sa.peer_dpd = dpd;
        let mut out = vec![Payload::Sa(sa_r)];
        if nat_t {
            out.push(Payload::Vendor(VID_NAT_T.to_vec()));
        }
        out.push(Payload::Vendor(VID_DPD.to_vec()));
        let mm2 = Message::emit_plain(&sa.header(ExchangeType::IdentityProtection, 0, 0), &out);
        sa.remember(bytes, &mm2);
        sa.send(mm2);
        Ok(sa)
    }

    /// Initiator: starts Main Mode (message 1).
    #[must_use]
    pub fn initiate(cfg: IkeConfig, now: Instant, rng: &mut dyn Rng) -> Self {
        let offer = phase1_offer(&cfg.phase1, cfg.phase1_lifetime);
        let sa_payload = Payload::Sa(offer);
        let sa_i_b = sa_payload.body();
        let mut sa = Self::blank(cfg, true, now, State::Mm2(ExpectMm2 { sa_i_b }));
        sa.cky_i = random_u64(rng);
        let mm1 = Message::emit_plain(
            &sa.header(ExchangeType::IdentityProtection, 0, 0),
            &[
                sa_payload,
                Payload::Vendor(VID_NAT_T.to_vec()),
                Payload::Vendor(VID_DPD.to_vec()),
            ],
        );
        sa.send_expecting(now, mm1, None);
        sa
    }

    pub(super) fn handle_main_mode(
        &mut self,
        now: Instant,
        rng: &mut dyn Rng,
        d: Datagram<'_>,
        bytes: &[u8],
        msg: &Message,
    ) {
        let state = std::mem::replace(&mut self.state, State::Closed);
        match (state, &msg.body) {
            (State::Mm2(s), Body::Plain(c)) => self.on_mm2(now, rng, s, msg.header, c),
            (State::Mm3(s), Body::Plain(c)) => self.on_mm3(rng, s, bytes, c),
            (State::Mm4(s), Body::Plain(c)) => self.on_mm4(now, s, c),
            (State::Mm5(s), Body::Encrypted(ct)) => self.on_mm5(now, s, d, bytes, msg.header, ct),
            (State::Mm6(s), Body::Encrypted(ct)) => self.on_mm6(now, rng, s, msg.header, ct),
            (other, _) => {
                self.state = other;
                self.log("dropped an unexpected Main Mode message");
            }
        }
    }

    fn on_mm2(&mut self, now: Instant, rng: &mut dyn Rng, s: ExpectMm2, h: Header, c: &Chain) {
        let suite = c.find(|p| match p {
            Payload::Sa(sa) => accept_phase1(&self.cfg.phase1, self.cfg.phase1_lifetime, sa),
            _ => None,
        });
        let Some(suite) = suite else {
            self.log("No proposal match found by AWS");
            self.down(DownReason::NoProposalChosen);
            return;
        };
        if h.cky_r == 0 {
            self.state = State::Mm2(s);
            return;
        }
        self.cky_r = h.cky_r;
        (self.peer_nat_t, self.peer_dpd) = vendor_ids(c);
        let dh = match DhPrivate::generate(suite.dh, rng) {
            Ok(dh) => dh,
            Err(e) => {
                self.log(format!("DH: {e}"));
                self.down(DownReason::Protocol);
                return;
            }
        };
        let ni = random_bytes(rng, NONCE_LEN);
        let mut out = vec![
            Payload::Ke(dh.public().to_vec()),
            Payload::Nonce(ni.clone()),
        ];
        if self.peer_nat_t {
            out.push(Payload::NatD(
                PayloadType::NatD,
                nat_d_hash(suite.prf, self.cky_i, self.cky_r, self.remote),
            ));
            out.push(Payload::NatD(
                PayloadType::NatD,
                nat_d_hash(suite.prf, self.cky_i, self.cky_r, self.local),
            ));
        }
        let mm3 = Message::emit_plain(&self.header(ExchangeType::IdentityProtection, 0, 0), &out);
        self.answered_by_peer(None);
        self.send_expecting(now, mm3, None);
        self.state = State::Mm4(ExpectMm4 {
            sa_i_b: s.sa_i_b,
            suite,
            dh,
            ni,
        });
    }

    /// Sets `nat_detected` from the peer's NAT-D payloads: the first is
    /// the hash of its destination (us), the rest of its sources.
    fn detect_nat(&mut self, prf: Prf, natd: &[&Vec<u8>]) {
        if !self.peer_nat_t || natd.is_empty() {
            self.nat_detected = false;
            return;
        }
        let ours = nat_d_hash(prf, self.cky_i, self.cky_r, self.local);
        let theirs = nat_d_hash(prf, self.cky_i, self.cky_r, self.remote);
        let we_behind = natd.first().is_none_or(|h| !ct_eq(h, &ours));
        let they_behind = !natd.iter().skip(1).any(|h| ct_eq(h, &theirs));
        self.nat_detected = we_behind || they_behind;
    }

    /// KE and nonce of message 3 or 4.
    fn ke_nonce(c: &Chain) -> Option<(&Vec<u8>, &Vec<u8>)> {
        let ke = c.find(|p| match p {
            Payload::Ke(k) => Some(k),
            _ => None,
        })?;
        let n = c.find(|p| match p {
            Payload::Nonce(n) => Some(n),
            _ => None,
        })?;
        (8..=256).contains(&n.len()).then_some((ke, n))
    }

    #[allow(clippy::too_many_arguments, reason = "the key schedule's inputs")]
    fn keyed(
        &self,
        sa_i_b: Vec<u8>,
        suite: super::Phase1Suite,
        g_xy: &[u8],
        ni: &[u8],
        nr: &[u8],
        ke_i: Vec<u8>,
        ke_r: Vec<u8>,
    ) -> Keyed {
        let skeyid = skeyid_psk(suite.prf, &self.cfg.psk, ni, nr);
        let k = phase1_keys(
            suite.prf,
            skeyid,
            g_xy,
            self.cky_i,
            self.cky_r,
            suite.key_len(),
        );
        let iv = phase1_iv(suite.prf, &ke_i, &ke_r);
        Keyed {
            sa_i_b,
            suite,
            skeyid: k.skeyid,
            skeyid_d: k.skeyid_d,
            skeyid_a: k.skeyid_a,
            cipher: Phase1Cipher::new(k.enc_key),
            ke_i,
            ke_r,
            iv,
        }
    }

    fn on_mm3(&mut self, rng: &mut dyn Rng, s: ExpectMm3, bytes: &[u8], c: &Chain) {
        let Some((ke_i, ni)) = Self::ke_nonce(c) else {
            self.log("Main Mode message 3 without KE or nonce");
            self.state = State::Mm3(s);
            return;
        };
        let dh = match DhPrivate::generate(s.suite.dh, rng) {
            Ok(dh) => dh,
            Err(e) => {
                self.log(format!("DH: {e}"));
                self.down(DownReason::Protocol);
                return;
            }
        };
        let g_xy = match dh.agree(ke_i) {
            Ok(g) => g,
            Err(e) => {
                self.log(format!("Main Mode message 3: {e}"));
                self.down(DownReason::Protocol);
                return;
            }
        };
        let nr = random_bytes(rng, NONCE_LEN);
        self.detect_nat(s.suite.prf, &nat_ds(c));
        let keyed = self.keyed(
            s.sa_i_b,
            s.suite,
            &g_xy,
            ni,
            &nr,
            ke_i.clone(),
            dh.public().to_vec(),
        );
        let mut out = vec![Payload::Ke(dh.public().to_vec()), Payload::Nonce(nr)];
        if self.peer_nat_t {
            let prf = s.suite.prf;
            out.push(Payload::NatD(
                PayloadType::NatD,
                nat_d_hash(prf, self.cky_i, self.cky_r, self.remote),
            ));
            out.push(Payload::NatD(
                PayloadType::NatD,
                nat_d_hash(prf, self.cky_i, self.cky_r, self.local),
            ));
        }
        let mm4 = Message::emit_plain(&self.header(ExchangeType::IdentityProtection, 0, 0), &out);
        self.remember(bytes, &mm4);
        self.send(mm4);
        self.state = State::Mm5(ExpectMm5(keyed));
    }

    fn on_mm4(&mut self, now: Instant, s: ExpectMm4, c: &Chain) {
        let Some((ke_r, nr)) = Self::ke_nonce(c) else {
            self.log("Main Mode message 4 without KE or nonce");
            self.state = State::Mm4(s);
            return;
        };
        let g_xy = match s.dh.agree(ke_r) {
            Ok(g) => g,
            Err(e) => {
                self.log(format!("Main Mode message 4: {e}"));
                self.down(DownReason::Protocol);
                return;
            }
        };
        self.detect_nat(s.suite.prf, &nat_ds(c));
        let mut keyed = self.keyed(
            s.sa_i_b,
            s.suite,
            &g_xy,
            &s.ni,
            nr,
            s.dh.public().to_vec(),
            ke_r.clone(),
        );
        if self.nat_detected {
            // RFC 3947 § 4: the initiator moves to port 4500 for message 5.
            self.local = SocketAddr::new(self.local.ip(), NAT_T_PORT);
            self.remote = SocketAddr::new(self.remote.ip(), NAT_T_PORT);
        }
        let id = our_id(&self.cfg);
        let hash_i = main_mode_hash(
            keyed.suite.prf,
            &keyed.skeyid,
            &keyed.ke_i,
            &keyed.ke_r,
            self.cky_i,
            self.cky_r,
            &keyed.sa_i_b,
            &id.body(),
        );
        let mut spi = self.cky_i.to_be_bytes().to_vec();
        spi.extend_from_slice(&self.cky_r.to_be_bytes());
        let payloads = [
            Payload::Id(id),
            Payload::Hash(hash_i.to_vec()),
            Payload::Notify(Notify {
                doi: DOI_IPSEC,
                protocol: ProtocolId::Isakmp,
                spi,
                kind: NotifyType::InitialContact,
                data: Vec::new(),
            }),
        ];
        let Some((mm5, last)) = self.seal(
            &keyed.cipher,
            &keyed.iv,
            0,
            ExchangeType::IdentityProtection,
            &payloads,
        ) else {
            self.down(DownReason::Protocol);
            return;
        };
        keyed.iv = last;
        self.answered_by_peer(None);
        self.send_expecting(now, mm5, None);
        self.state = State::Mm6(ExpectMm6(keyed));
    }

    /// Encrypts a payload chain under `iv` into a whole message; returns
    /// it and its last ciphertext block (the next IV).
    pub(super) fn seal(
        &self,
        cipher: &Phase1Cipher,
        iv: &[u8; super::BLOCK],
        mid: u32,
        exchange: ExchangeType,
        payloads: &[Payload],
    ) -> Option<(Vec<u8>, [u8; super::BLOCK])> {
        let mut plain = Vec::new();
        let first = super::super::wire::emit_chain(payloads, &mut plain);
        self.seal_raw(cipher, iv, mid, exchange, first, &plain)
    }

    /// [`Self::seal`] for an already emitted chain starting with `first`.
    pub(super) fn seal_raw(
        &self,
        cipher: &Phase1Cipher,
        iv: &[u8; super::BLOCK],
        mid: u32,
        exchange: ExchangeType,
        first: PayloadType,
        plain: &[u8],
    ) -> Option<(Vec<u8>, [u8; super::BLOCK])> {
        let ct = cipher.encrypt(iv, plain).ok()?;
        let last = last_block(&ct)?;
        let mut h = self.header(exchange, FLAG_ENCRYPTION, mid);
        h.next = first;
        h.length = u32::try_from(HEADER_LEN + ct.len()).ok()?;
        let mut out = Vec::with_capacity(HEADER_LEN + ct.len());
        h.emit(&mut out);
        out.extend_from_slice(&ct);
        Some((out, last))
    }

    /// Decrypts an encrypted body under `iv` and parses its chain;
    /// returns the plaintext and chain.
    pub(super) fn open(
        cipher: &Phase1Cipher,
        iv: &[u8; super::BLOCK],
        h: &Header,
        ct: &[u8],
    ) -> Option<(Vec<u8>, Chain)> {
        let plain = cipher.decrypt(iv, ct).ok()?;
        let chain = parse_chain(h.next, &plain).ok()?;
        Some((plain, chain))
    }

    fn psk_mismatch(&mut self) {
        self.log("AWS tunnel payload decryption failed due to invalid pre-shared key");
        self.down(DownReason::AuthenticationFailed);
    }

    fn check_peer_hash(&self, k: &Keyed, c: &Chain, responder_hash: bool) -> Option<HashVerified> {
        let id = c.find(|p| match p {
            Payload::Id(id) => Some(id),
            _ => None,
        })?;
        let got = c.find(|p| match p {
            Payload::Hash(h) => Some(h),
            _ => None,
        })?;
        let want = if responder_hash {
            main_mode_hash(
                k.suite.prf,
                &k.skeyid,
                &k.ke_r,
                &k.ke_i,
                self.cky_r,
                self.cky_i,
                &k.sa_i_b,
                &id.body(),
            )
        } else {
            main_mode_hash(
                k.suite.prf,
                &k.skeyid,
                &k.ke_i,
                &k.ke_r,
                self.cky_i,
                self.cky_r,
                &k.sa_i_b,
                &id.body(),
            )
        };
        if !ct_eq(&want, got) {
            return None;
        }
        if let Some(r) = &self.cfg.remote_id
            && (u8::from(r.id_type) != u8::from(id.id_type) || r.data != id.data)
        {
            return None;
        }
        Some(HashVerified(()))
    }

    fn on_mm5(
        &mut self,
        now: Instant,
        s: ExpectMm5,
        d: Datagram<'_>,
        bytes: &[u8],
        h: Header,
        ct: &[u8],
    ) {
        let mut k = s.0;
        let Some((_, c)) = Self::open(&k.cipher, &k.iv, &h, ct) else {
            self.psk_mismatch();
            return;
        };
        // A wrong key decrypts to garbage: no chain, or no HASH_I match.
        let Some(_verified) = self.check_peer_hash(&k, &c, false) else {
            self.psk_mismatch();
            return;
        };
        self.initial_contact = c
            .payloads
            .iter()
            .any(|p| matches!(p, Payload::Notify(n) if n.kind == NotifyType::InitialContact));
        if d.local.port() == NAT_T_PORT {
            // The peer floated (RFC 3947 § 4): answer where it came from.
            self.local = d.local;
            self.remote = d.remote;
        }
        let Some(last_in) = last_block(ct) else {
            self.psk_mismatch();
            return;
        };
        let id = our_id(&self.cfg);
        let hash_r = main_mode_hash(
            k.suite.prf,
            &k.skeyid,
            &k.ke_r,
            &k.ke_i,
            self.cky_r,
            self.cky_i,
            &k.sa_i_b,
            &id.body(),
        );
        let payloads = [Payload::Id(id), Payload::Hash(hash_r.to_vec())];
        let Some((mm6, last)) = self.seal(
            &k.cipher,
            &last_in,
            0,
            ExchangeType::IdentityProtection,
            &payloads,
        ) else {
            self.down(DownReason::Protocol);
            return;
        };
        k.iv = last;
        self.remember(bytes, &mm6);
        self.send(mm6);
        if self.initial_contact {
            self.log("received INITIAL-CONTACT");
        }
        self.establish(now, k, last);
    }

    fn on_mm6(&mut self, now: Instant, rng: &mut dyn Rng, s: ExpectMm6, h: Header, ct: &[u8]) {
        let k = s.0;
        let ok = Self::open(&k.cipher, &k.iv, &h, ct)
            .and_then(|(_, c)| self.check_peer_hash(&k, &c, true));
        let (Some(_verified), Some(last)) = (ok, last_block(ct)) else {
            self.psk_mismatch();
            return;
        };
        self.answered_by_peer(None);
        self.establish(now, k, last);
        self.start_quick_mode(now, rng);
    }
}
