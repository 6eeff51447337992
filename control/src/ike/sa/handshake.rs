//! The IKE_SA_INIT → IKE_AUTH handshake ([RFC 7296 § 1.2]), both roles,
//! as a typestate: [`ExpectSaInitResponse`] → [`ExpectAuthResponse`] for
//! the initiator, [`ExpectAuthRequest`] for the responder, then
//! `Established` with the first Child SA. Also COOKIE and
//! INVALID_KE_PAYLOAD retries (§ 2.6, § 1.3), NAT detection and the float
//! to UDP 4500 (§ 2.23), and the stateless refusals of [`IkeSa::accept`].
//! How AUTH is made and checked is in `auth`.
//!
//! [RFC 7296 § 1.2]: https://www.rfc-editor.org/rfc/rfc7296#section-1.2

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::ike::Rng;
use crate::ike::crypto::{child_keymat, ct_eq, derive_ike_keys, skeyseed};
use crate::ike::dh::DhPrivate;
use crate::ike::proposal::{accept_esp_response, accept_ike_response, ike_response, select_ike};
use crate::ike::wire::{
    ExchangeType, Header, Message, Notify, NotifyType, Payload, find_notify, first_error_notify,
    flags,
};

use super::auth;
use super::child::{ChildSa, check_ts_response, net_range};
use super::child_rekey::ChildState;
use super::config::IkeConfig;
use super::retransmit::PendingKind;
use super::{
    Datagram, DownReason, Established, Event, IkeSa, NAT_T_PORT, NONCE_LEN, SaKeys, State,
    Transmit, add_marker, ke_of, nonce_of, random_bytes, random_spi, random_u64, sa_of, spi_u32,
    strip_marker, tsi_of, tsr_of,
};

/// Initiator, after sending IKE_SA_INIT.
#[derive(Debug)]
pub struct ExpectSaInitResponse {
    pub(super) dh: DhPrivate,
    pub(super) ni: Vec<u8>,
    pub(super) cookie: Option<Vec<u8>>,
    pub(super) tried_groups: Vec<u16>,
}

/// Initiator, after sending IKE_AUTH.
#[derive(Debug)]
pub struct ExpectAuthResponse {
    pub(super) keys: SaKeys,
    pub(super) ni: Vec<u8>,
    pub(super) nr: Vec<u8>,
    /// Our IKE_SA_INIT request and the peer's response, as sent.
    pub(super) msg1: Vec<u8>,
    pub(super) msg2: Vec<u8>,
    pub(super) child_spi: u32,
}

/// Responder, after answering IKE_SA_INIT.
#[derive(Debug)]
pub struct ExpectAuthRequest {
    pub(super) keys: SaKeys,
    pub(super) ni: Vec<u8>,
    pub(super) nr: Vec<u8>,
    pub(super) msg1: Vec<u8>,
    pub(super) msg2: Vec<u8>,
}

/// NAT_DETECTION_*_IP data: `SHA1(SPIi | SPIr | IP | port)` (RFC 7296
/// § 2.23).
#[must_use]
pub fn nat_hash(spi_i: u64, spi_r: u64, addr: SocketAddr) -> Vec<u8> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(&spi_i.to_be_bytes());
    ctx.update(&spi_r.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(a) => ctx.update(&a.octets()),
        IpAddr::V6(a) => ctx.update(&a.octets()),
    }
    ctx.update(&addr.port().to_be_bytes());
    ctx.finish().as_ref().to_vec()
}

/// Computes the expected COOKIE from `(Ni, IPi:port, SPIi)`.
pub type CookieFn<'a> = dyn Fn(&[u8], SocketAddr, u64) -> Vec<u8> + 'a;

/// Outcome of [`IkeSa::accept`] when no SA is created: a stateless
/// answer to send (INVALID_KE_PAYLOAD, NO_PROPOSAL_CHOSEN, COOKIE) or
/// nothing.
#[derive(Debug)]
pub struct Refused {
    /// Answer to send, if any.
    pub transmit: Option<Transmit>,
    /// The answer is a COOKIE (the request had none, or a wrong one).
    pub cookie: bool,
    /// Log lines.
    pub logs: Vec<String>,
}

impl IkeSa {
    /// Starts an IKE SA as initiator: queues IKE_SA_INIT.
    ///
    /// # Errors
    /// [`crate::ike::dh::DhError`] if the first configured group is unusable.
    pub fn initiate(
        cfg: IkeConfig,
        now: Instant,
        rng: &mut dyn Rng,
    ) -> Result<Self, crate::ike::dh::DhError> {
        let group = cfg.phase1.dh.first().copied().unwrap_or(14);
        let dh = DhPrivate::generate(group, rng)?;
        let ni = random_bytes(rng, NONCE_LEN);
        let mut sa = Self::blank(
            cfg,
            true,
            now,
            State::InitSent(ExpectSaInitResponse {
                dh,
                ni,
                cookie: None,
                tried_groups: vec![group],
            }),
        );
        sa.spi_i = random_u64(rng);
        sa.send_sa_init(now);
        Ok(sa)
    }

    pub(super) fn send_sa_init(&mut self, now: Instant) {
        let State::InitSent(st) = &self.state else {
            return;
        };
        let mut payloads = Vec::new();
        if let Some(c) = &st.cookie {
            payloads.push(Payload::Notify(Notify::new(NotifyType::Cookie, c.clone())));
        }
        payloads.push(Payload::Sa(self.cfg.phase1.ike_proposals(st.dh.group())));
        payloads.push(Payload::Ke {
            group: st.dh.group(),
            data: st.dh.public().to_vec(),
        });
        payloads.push(Payload::Nonce(st.ni.clone()));
        payloads.push(Payload::Notify(Notify::new(
            NotifyType::NatDetectionSourceIp,
            nat_hash(self.spi_i, 0, self.local),
        )));
        payloads.push(Payload::Notify(Notify::new(
            NotifyType::NatDetectionDestinationIp,
            nat_hash(self.spi_i, 0, self.remote),
        )));
        payloads.extend(auth::sa_init_request_extras(&self.cfg));
        let msg = Message {
            header: Header {
                spi_i: self.spi_i,
                spi_r: 0,
                exchange: ExchangeType::IkeSaInit,
                flags: flags::INITIATOR,
                message_id: 0,
            },
            payloads,
        };
        self.next_request = 1;
        self.send_request_bytes(now, 0, msg.emit(), PendingKind::SaInit);
    }

    /// Answers an IKE_SA_INIT request as responder. On success the SA
    /// has queued its response; otherwise [`Refused`] says what to send.
    ///
    /// `cookie_required`: the caller's half-open count is above its
    /// threshold; `cookie` computes the expected COOKIE for
    /// `(Ni, IPi, SPIi)` (RFC 7296 § 2.6).
    ///
    /// # Errors
    /// [`Refused`] for anything that does not create an SA.
    pub fn accept(
        cfg: IkeConfig,
        now: Instant,
        rng: &mut dyn Rng,
        dgram: Datagram<'_>,
        cookie: Option<&CookieFn<'_>>,
    ) -> Result<Self, Refused> {
        let mut logs = Vec::new();
        let refuse = |t: Option<Transmit>, logs: Vec<String>| Refused {
            transmit: t,
            cookie: false,
            logs,
        };
        let Some(raw) = strip_marker(dgram) else {
            return Err(refuse(None, logs));
        };
        let Ok(msg) = Message::parse(raw) else {
            return Err(refuse(None, logs));
        };
        let h = msg.header;
        if h.exchange != ExchangeType::IkeSaInit
            || h.is_response()
            || !h.is_initiator()
            || h.spi_r != 0
            || h.message_id != 0
        {
            return Err(refuse(None, logs));
        }
        let stateless = |payloads: Vec<Payload>| {
            let m = Message {
                header: Header {
                    spi_i: h.spi_i,
                    spi_r: 0,
                    exchange: ExchangeType::IkeSaInit,
                    flags: flags::RESPONSE,
                    message_id: 0,
                },
                payloads,
            };
            Some(Transmit {
                local: dgram.local,
                remote: dgram.remote,
                payload: add_marker(dgram.local, m.emit()),
            })
        };
        let (Some(ni), Some((ke_group, ke)), Some(props)) = (
            nonce_of(&msg.payloads),
            ke_of(&msg.payloads),
            sa_of(&msg.payloads),
        ) else {
            return Err(refuse(
                stateless(vec![Payload::Notify(Notify::new(
                    NotifyType::InvalidSyntax,
                    Vec::new(),
                ))]),
                logs,
            ));
        };
        if let Some(f) = cookie {
            let want = f(ni, dgram.remote, h.spi_i);
            let ok = msg
                .notify(NotifyType::Cookie)
                .is_some_and(|n| ct_eq(&n.data, &want));
            if !ok {
                return Err(Refused {
                    transmit: stateless(vec![Payload::Notify(Notify::new(
                        NotifyType::Cookie,
                        want,
                    ))]),
                    cookie: true,
                    logs,
                });
            }
        }
        let Some((number, suite)) = select_ike(&cfg.phase1, props, ke_group) else {
            logs.push(
                "No matching proposal found. Notifying with \"No proposal chosen\"".to_owned(),
            );
            return Err(refuse(
                stateless(vec![Payload::Notify(Notify::new(
                    NotifyType::NoProposalChosen,
                    Vec::new(),
                ))]),
                logs,
            ));
        };
        if suite.dh != ke_group {
            logs.push(format!(
                "INVALID_KE_PAYLOAD: peer used DH group {ke_group}, requesting group {}",
                suite.dh
            ));
            return Err(refuse(
                stateless(vec![Payload::Notify(Notify::new(
                    NotifyType::InvalidKePayload,
                    suite.dh.to_be_bytes().to_vec(),
                ))]),
                logs,
            ));
        }
        let Ok(dh) = DhPrivate::generate(suite.dh, rng) else {
            return Err(refuse(None, logs));
        };
        let Ok(g_ir) = dh.agree(ke) else {
            logs.push(format!("invalid KE payload for DH group {ke_group}"));
            return Err(refuse(
                stateless(vec![Payload::Notify(Notify::new(
                    NotifyType::InvalidSyntax,
                    Vec::new(),
                ))]),
                logs,
            ));
        };
        let nr = random_bytes(rng, NONCE_LEN);
        let spi_r = random_u64(rng);
        // NAT detection (RFC 7296 § 2.23): compare the peer's hashes with
        // the addresses we actually see.
        let src_ok = msg
            .notify(NotifyType::NatDetectionSourceIp)
            .is_none_or(|n| n.data == nat_hash(h.spi_i, 0, dgram.remote));
        let dst_ok = msg
            .notify(NotifyType::NatDetectionDestinationIp)
            .is_none_or(|n| n.data == nat_hash(h.spi_i, 0, dgram.local));
        let nat = !(src_ok && dst_ok);
        let behind_nat = !dst_ok;
        let seed = skeyseed(suite.prf, ni, &nr, &g_ir);
        let keys = derive_ike_keys(&suite, &seed, ni, &nr, h.spi_i, spi_r);
        let mut payloads = vec![
            Payload::Sa(vec![ike_response(number, &suite)]),
            Payload::Ke {
                group: suite.dh,
                data: dh.public().to_vec(),
            },
            Payload::Nonce(nr.clone()),
        ];
        payloads.push(Payload::Notify(Notify::new(
            NotifyType::NatDetectionSourceIp,
            nat_hash(h.spi_i, spi_r, dgram.local),
        )));
        payloads.push(Payload::Notify(Notify::new(
            NotifyType::NatDetectionDestinationIp,
            nat_hash(h.spi_i, spi_r, dgram.remote),
        )));
        payloads.extend(auth::sa_init_response_extras(&cfg, &msg.payloads));
        let resp = Message {
            header: Header {
                spi_i: h.spi_i,
                spi_r,
                exchange: ExchangeType::IkeSaInit,
                flags: flags::RESPONSE,
                message_id: 0,
            },
            payloads,
        };
        let msg2 = resp.emit();
        let mut sa = Self::blank(
            cfg,
            false,
            now,
            State::AwaitAuth(ExpectAuthRequest {
                keys: SaKeys::new(suite, keys, false),
                ni: ni.clone(),
                nr,
                msg1: raw.to_vec(),
                msg2: msg2.clone(),
            }),
        );
        sa.spi_i = h.spi_i;
        sa.spi_r = spi_r;
        sa.local = dgram.local;
        sa.remote = dgram.remote;
        sa.nat_detected = nat;
        if behind_nat {
            sa.keepalive_at = Some(now + sa.cfg.nat_keepalive);
        }
        sa.expected_request = 1;
        sa.peer_frag = auth::peer_fragmentation(&sa.cfg, &msg.payloads);
        sa.peer_rfc7427 = crate::ike::cert::peer_accepts_rfc7427(&msg.payloads);
        for l in logs {
            sa.log(l);
        }
        if nat {
            sa.log(format!(
                "NAT detected: remote host {} is behind NAT",
                dgram.remote
            ));
        }
        sa.send_response_bytes(0, msg2);
        Ok(sa)
    }

    pub(super) fn on_sa_init_response(
        &mut self,
        now: Instant,
        rng: &mut dyn Rng,
        dgram: Datagram<'_>,
        raw: &[u8],
        msg: &Message,
    ) {
        let State::InitSent(st) = &mut self.state else {
            return;
        };
        // COOKIE (RFC 7296 § 2.6): retry with it.
        if let Some(c) = msg.notify(NotifyType::Cookie) {
            if st.cookie.is_some() && st.cookie.as_deref() == Some(&c.data[..]) {
                return;
            }
            st.cookie = Some(c.data.clone());
            self.pending = None;
            self.send_sa_init(now);
            return;
        }
        // INVALID_KE_PAYLOAD (§ 1.3): retry with the requested group.
        if let Some(n) = msg.notify(NotifyType::InvalidKePayload) {
            let g = n.data.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
            match g {
                // IKE_SA_INIT requests all carry message ID 0, so an
                // answer to an earlier request (our retransmission of the
                // old group, answered again by a slow responder) cannot be
                // told from a fresh one. One naming the group we already
                // switched to asks for what we are doing: ignore it and
                // keep waiting (and retransmitting) for the real answer.
                Some(g) if g == st.dh.group() => {
                    self.log(format!(
                        "ignoring INVALID_KE_PAYLOAD for DH group {g}: already retrying with it"
                    ));
                }
                Some(g) if self.cfg.phase1.dh.contains(&g) && !st.tried_groups.contains(&g) => {
                    match DhPrivate::generate(g, rng) {
                        Ok(dh) => {
                            st.dh = dh;
                            st.tried_groups.push(g);
                            st.ni = random_bytes(rng, NONCE_LEN);
                            self.log(format!(
                                "peer requested DH group {g} (INVALID_KE_PAYLOAD), retrying"
                            ));
                            self.pending = None;
                            self.send_sa_init(now);
                        }
                        Err(_) => self.fail(DownReason::NoProposalChosen),
                    }
                }
                _ => {
                    self.log("No proposal match found by AWS");
                    self.fail(DownReason::NoProposalChosen);
                }
            }
            return;
        }
        if let Some(n) = first_error_notify(&msg.payloads) {
            let kind = n.kind;
            if kind == NotifyType::NoProposalChosen {
                self.log("No matching proposal found. Notifying with \"No proposal chosen\"");
                self.fail(DownReason::NoProposalChosen);
            } else {
                self.log(format!("IKE_SA_INIT failed: peer sent {kind:?}"));
                self.fail(DownReason::PeerError(kind));
            }
            return;
        }
        let (Some(nr), Some((group, ke)), Some(props)) = (
            nonce_of(&msg.payloads),
            ke_of(&msg.payloads),
            sa_of(&msg.payloads),
        ) else {
            return;
        };
        let suite = match props.as_slice() {
            [p] => accept_ike_response(&self.cfg.phase1, p),
            _ => None,
        };
        let Some(suite) = suite.filter(|s| s.dh == group && group == st.dh.group()) else {
            self.log("No proposal match found by AWS");
            self.fail(DownReason::NoProposalChosen);
            return;
        };
        let Ok(g_ir) = st.dh.agree(ke) else {
            self.fail(DownReason::Protocol);
            return;
        };
        let h = msg.header;
        self.spi_r = h.spi_r;
        self.peer_frag = auth::peer_fragmentation(&self.cfg, &msg.payloads);
        self.peer_rfc7427 = crate::ike::cert::peer_accepts_rfc7427(&msg.payloads);
        let src_ok = msg
            .notify(NotifyType::NatDetectionSourceIp)
            .is_none_or(|n| n.data == nat_hash(h.spi_i, h.spi_r, dgram.remote));
        let dst_ok = msg
            .notify(NotifyType::NatDetectionDestinationIp)
            .is_none_or(|n| n.data == nat_hash(h.spi_i, h.spi_r, dgram.local));
        let peer_supports_nat_t = msg.notify(NotifyType::NatDetectionSourceIp).is_some();
        self.nat_detected = peer_supports_nat_t && !(src_ok && dst_ok);
        if peer_supports_nat_t && !dst_ok {
            self.keepalive_at = Some(now + self.cfg.nat_keepalive);
        }
        let ni = std::mem::take(&mut st.ni);
        let nr = nr.clone();
        let seed = skeyseed(suite.prf, &ni, &nr, &g_ir);
        let keys = derive_ike_keys(&suite, &seed, &ni, &nr, self.spi_i, self.spi_r);
        let msg1 = self.pending.take().map(|p| p.bytes).unwrap_or_default();
        if self.nat_detected {
            // Float to 4500 (RFC 7296 § 2.23).
            self.local.set_port(NAT_T_PORT);
            self.remote.set_port(NAT_T_PORT);
            self.log(format!("NAT detected: floating to UDP {NAT_T_PORT}"));
            if self.keepalive_at.is_some() {
                self.log("we are behind a NAT: sending NAT-T keepalives");
            }
        }
        let child_spi = random_spi(rng);
        self.state = State::AuthSent(ExpectAuthResponse {
            keys: SaKeys::new(suite, keys, true),
            ni,
            nr,
            msg1,
            msg2: raw.to_vec(),
            child_spi,
        });
        self.send_auth(now, rng);
    }

    pub(super) fn send_auth(&mut self, now: Instant, rng: &mut dyn Rng) {
        let State::AuthSent(st) = &self.state else {
            return;
        };
        let ours = match self.our_auth(&st.keys, &st.msg1, &st.nr, true) {
            Ok(o) => o,
            Err(why) => {
                self.log(why);
                self.fail(DownReason::AuthenticationFailed);
                return;
            }
        };
        let mut payloads = vec![Payload::IdI(ours.id)];
        payloads.extend(ours.certs);
        if let Some(c) = &self.cfg.cert {
            payloads.push(c.trust.certreq_payload());
        }
        if let Some(r) = &self.cfg.remote_id {
            payloads.push(Payload::IdR(r.clone()));
        }
        payloads.push(ours.auth);
        payloads.push(Payload::Notify(Notify::new(
            NotifyType::InitialContact,
            Vec::new(),
        )));
        payloads.push(Payload::Sa(
            self.cfg.phase2.esp_proposals(st.child_spi, None),
        ));
        payloads.push(Payload::TsI(
            self.cfg.local_ts.iter().map(net_range).collect(),
        ));
        payloads.push(Payload::TsR(
            self.cfg.remote_ts.iter().map(net_range).collect(),
        ));
        self.request(
            now,
            rng,
            ExchangeType::IkeAuth,
            &payloads,
            PendingKind::Auth,
        );
    }

    pub(super) fn on_auth_response(
        &mut self,
        now: Instant,
        rng: &mut dyn Rng,
        payloads: &[Payload],
    ) {
        let State::AuthSent(st) = std::mem::replace(&mut self.state, State::Closed) else {
            return;
        };
        if let Some(n) = find_notify(payloads, NotifyType::AuthenticationFailed) {
            let _ = n;
            self.state = State::AuthSent(st);
            if self.cfg.cert.is_some() {
                self.log(format!(
                    "AWS tunnel certificate authentication refused by cgw: {} (AUTHENTICATION_FAILED)",
                    self.remote.ip()
                ));
            } else {
                self.log(format!(
                    "AWS tunnel detected pre-shared key mismatch with cgw: {}",
                    self.remote.ip()
                ));
            }
            self.fail(DownReason::AuthenticationFailed);
            return;
        }
        // Verify the responder's AUTH (RFC 7296 § 2.15).
        let idr = payloads.iter().find_map(|p| match p {
            Payload::IdR(id) => Some(id),
            _ => None,
        });
        let Some(idr) = idr else {
            self.state = State::AuthSent(st);
            self.fail(DownReason::Protocol);
            return;
        };
        let verified =
            match self.verify_peer_auth(now, &st.keys, &st.msg2, &st.ni, false, idr, payloads) {
                Ok(v) => v,
                Err(auth::AuthFailure::Missing) => {
                    self.state = State::AuthSent(st);
                    self.fail(DownReason::Protocol);
                    return;
                }
                Err(auth::AuthFailure::Failed(why)) => {
                    self.state = State::AuthSent(st);
                    self.log(why);
                    self.fail(DownReason::AuthenticationFailed);
                    return;
                }
            };
        let mut est = Established {
            rekey_ike_at: now + self.cfg.rekey_after(self.cfg.phase1_lifetime, rng),
            expire_ike_at: now + self.cfg.phase1_lifetime,
            keys: st.keys,
            children: Vec::new(),
            last_heard: now,
            rekeying: None,
            ike_rekey: None,
        };
        self.events.push_back(Event::IkeSaUp {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            suite: est.keys.suite,
            nat_detected: self.nat_detected,
        });
        // The first Child SA.
        let child = (|| {
            if let Some(n) = first_error_notify(payloads) {
                return Err(n.kind);
            }
            let props = sa_of(payloads).ok_or(NotifyType::NoProposalChosen)?;
            let [p] = props.as_slice() else {
                return Err(NotifyType::NoProposalChosen);
            };
            let suite = accept_esp_response(&self.cfg.phase2, p, None)
                .ok_or(NotifyType::NoProposalChosen)?;
            let peer_spi = spi_u32(&p.spi).ok_or(NotifyType::NoProposalChosen)?;
            let (tsi, tsr) = (tsi_of(payloads), tsr_of(payloads));
            let (Some(tsi), Some(tsr)) = (tsi, tsr) else {
                return Err(NotifyType::TsUnacceptable);
            };
            let narrowed =
                check_ts_response(&self.cfg, tsi, tsr).ok_or(NotifyType::TsUnacceptable)?;
            let km = child_keymat(
                est.keys.suite.prf,
                &est.keys.sk_d,
                None,
                &st.ni,
                &st.nr,
                2 * suite.keymat_len(),
            );
            Ok(ChildSa::new(
                suite,
                &km,
                st.child_spi,
                peer_spi,
                true,
                (tsi.clone(), tsr.clone()),
                &self.child_ctx(),
                &verified,
                narrowed,
            ))
        })();
        match child {
            Ok(c) => {
                est.children.push(ChildState {
                    inbound_spi: c.inbound.spi,
                    outbound_spi: c.outbound.spi,
                    rekey_at: now + self.cfg.rekey_after(self.cfg.phase2_lifetime, rng),
                    expire_at: now + self.cfg.phase2_lifetime,
                    deferred: None,
                });
                self.events.push_back(Event::ChildSaUp(Box::new(c)));
            }
            Err(kind) => {
                if kind == NotifyType::TsUnacceptable {
                    self.log("AWS: Traffic Selector: TS_UNACCEPTABLE: received from responder");
                } else {
                    self.log(format!(
                        "AWS tunnel phase 2 SA cannot be established while keeping phase 1 ({kind:?})"
                    ));
                }
                self.events.push_back(Event::ChildSaFailed {
                    reason: kind,
                    by_peer: true,
                });
            }
        }
        self.state = State::Established(Box::new(est));
    }

    pub(super) fn on_auth_request(
        &mut self,
        now: Instant,
        rng: &mut dyn Rng,
        id: u32,
        p: &[Payload],
    ) {
        let State::AwaitAuth(st) = std::mem::replace(&mut self.state, State::Closed) else {
            return;
        };
        let idi = p.iter().find_map(|p| match p {
            Payload::IdI(id) => Some(id),
            _ => None,
        });
        let verified = match idi {
            Some(idi) => self.verify_peer_auth(now, &st.keys, &st.msg1, &st.nr, true, idi, p),
            None => Err(auth::AuthFailure::Missing),
        };
        let verified = match verified {
            Ok(v) => Some(v),
            Err(auth::AuthFailure::Missing) => {
                self.log(format!(
                    "AWS tunnel detected pre-shared key mismatch with cgw: {}",
                    self.remote.ip()
                ));
                None
            }
            Err(auth::AuthFailure::Failed(why)) => {
                self.log(why);
                None
            }
        };
        let Some(verified) = verified else {
            self.state = State::AwaitAuth(st);
            self.log("AWS tunnel is sending AUTHENTICATION_FAILED as response");
            self.respond(
                rng,
                ExchangeType::IkeAuth,
                id,
                &[Payload::Notify(Notify::new(
                    NotifyType::AuthenticationFailed,
                    Vec::new(),
                ))],
            );
            self.go_down(DownReason::AuthenticationFailed);
            return;
        };
        self.initial_contact = find_notify(p, NotifyType::InitialContact).is_some();
        let ours = match self.our_auth(&st.keys, &st.msg2, &st.ni, false) {
            Ok(o) => o,
            Err(why) => {
                self.log(why);
                self.state = State::AwaitAuth(st);
                self.respond(
                    rng,
                    ExchangeType::IkeAuth,
                    id,
                    &[Payload::Notify(Notify::new(
                        NotifyType::AuthenticationFailed,
                        Vec::new(),
                    ))],
                );
                self.go_down(DownReason::AuthenticationFailed);
                return;
            }
        };
        let mut resp = vec![Payload::IdR(ours.id)];
        resp.extend(ours.certs);
        resp.push(ours.auth);
        let mut est = Established {
            rekey_ike_at: now + self.cfg.rekey_after(self.cfg.phase1_lifetime, rng),
            expire_ike_at: now + self.cfg.phase1_lifetime,
            keys: st.keys,
            children: Vec::new(),
            last_heard: now,
            rekeying: None,
            ike_rekey: None,
        };
        let child = self.negotiate_child(rng, &est, p, &st.ni, &st.nr, None, &verified);
        let mut refused = None;
        let child = match child {
            Ok((c, props)) => {
                resp.extend(props);
                Some(c)
            }
            Err(n) => {
                resp.push(Payload::Notify(Notify::new(n, Vec::new())));
                refused = Some(n);
                None
            }
        };
        self.events.push_back(Event::IkeSaUp {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            suite: est.keys.suite,
            nat_detected: self.nat_detected,
        });
        if let Some(n) = refused {
            self.events.push_back(Event::ChildSaFailed {
                reason: n,
                by_peer: false,
            });
        }
        if let Some(c) = child {
            est.children.push(ChildState {
                inbound_spi: c.inbound.spi,
                outbound_spi: c.outbound.spi,
                rekey_at: now + self.cfg.rekey_after(self.cfg.phase2_lifetime, rng),
                expire_at: now + self.cfg.phase2_lifetime,
                deferred: None,
            });
            self.events.push_back(Event::ChildSaUp(Box::new(c)));
        }
        self.state = State::Established(Box::new(est));
        self.respond(rng, ExchangeType::IkeAuth, id, &resp);
    }
}
