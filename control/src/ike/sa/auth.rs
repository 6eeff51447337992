//! The parts of [`IkeSa`] that depend on how a tunnel authenticates (PSK
//! or certificates, [`super::super::cert`]) and on IKE fragmentation
//! ([`super::super::frag`]): the extra IKE_SA_INIT notifies and CERTREQ,
//! our AUTH payload, the check of the peer's, SKF reassembly on receipt
//! and the split of fragmented messages into datagrams.

use std::net::SocketAddr;
use std::time::Instant;

use super::super::cert::{self, signed_octets};
use super::super::crypto::{ct_eq, psk_auth};
use super::super::frag::{FragOutcome, split_messages};
use super::super::wire::{
    AuthMethod, Identification, Message, Notify, NotifyType, Payload, find_notify, parse_chain,
};
use super::{AuthVerified, IkeConfig, IkeSa, NAT_T_PORT, SaKeys, Transmit, add_marker};

/// IKE_SA_INIT request notifies: IKEV2_FRAGMENTATION_SUPPORTED (RFC 7383
/// § 2.3) and, with certificates, SIGNATURE_HASH_ALGORITHMS (RFC 7427 § 4).
pub(super) fn sa_init_request_extras(cfg: &IkeConfig) -> Vec<Payload> {
    let mut v = Vec::new();
    if cfg.fragmentation.enabled {
        v.push(Payload::Notify(Notify::new(
            NotifyType::FragmentationSupported,
            Vec::new(),
        )));
    }
    if cfg.cert.is_some() {
        v.push(cert::signature_hashes_notify());
    }
    v
}

/// IKE_SA_INIT response extras: CERTREQ with our CAs (RFC 7296 § 3.7:
/// the responder asks in IKE_SA_INIT), fragmentation support only if the
/// initiator announced it, SIGNATURE_HASH_ALGORITHMS.
pub(super) fn sa_init_response_extras(cfg: &IkeConfig, request: &[Payload]) -> Vec<Payload> {
    let mut v = Vec::new();
    if let Some(c) = &cfg.cert {
        v.push(c.trust.certreq_payload());
    }
    if peer_fragmentation(cfg, request) {
        v.push(Payload::Notify(Notify::new(
            NotifyType::FragmentationSupported,
            Vec::new(),
        )));
    }
    if cfg.cert.is_some() {
        v.push(cert::signature_hashes_notify());
    }
    v
}

/// Whether messages may be fragmented: we support it and the peer said so.
pub(super) fn peer_fragmentation(cfg: &IkeConfig, payloads: &[Payload]) -> bool {
    cfg.fragmentation.enabled && find_notify(payloads, NotifyType::FragmentationSupported).is_some()
}

/// One datagram per IKE message in `bytes` (several for a fragmented one).
pub(super) fn datagrams(local: SocketAddr, remote: SocketAddr, bytes: &[u8]) -> Vec<Transmit> {
    split_messages(bytes)
        .into_iter()
        .map(|m| Transmit {
            local,
            remote,
            payload: add_marker(local, m.to_vec()),
        })
        .collect()
}

/// Why the peer's AUTH was not accepted.
#[derive(Debug)]
pub(super) enum AuthFailure {
    /// No AUTH payload (of the kind the tunnel uses) at all.
    Missing,
    /// The check failed; the log line says why.
    Failed(String),
}

/// Our identity, CERT payloads (none with PSK) and AUTH payload.
#[derive(Debug)]
pub(super) struct OurAuth {
    pub(super) id: Identification,
    pub(super) certs: Vec<Payload>,
    pub(super) auth: Payload,
}

fn any_auth(p: &[Payload]) -> Option<(AuthMethod, &[u8])> {
    p.iter().find_map(|p| match p {
        Payload::Auth { method, data } => Some((*method, data.as_slice())),
        _ => None,
    })
}

impl IkeSa {
    /// Our AUTH (RFC 7296 § 2.15) over our IKE_SA_INIT message and the
    /// peer's nonce. `initiator`: we are the original initiator (SK_pi).
    pub(super) fn our_auth(
        &self,
        keys: &SaKeys,
        real_message: &[u8],
        peer_nonce: &[u8],
        initiator: bool,
    ) -> Result<OurAuth, String> {
        let sk_p = if initiator { &keys.sk_pi } else { &keys.sk_pr };
        let Some(c) = &self.cfg.cert else {
            let id = self.cfg.local_id.clone();
            let auth = psk_auth(
                keys.suite.prf,
                &self.cfg.psk,
                real_message,
                peer_nonce,
                sk_p,
                &id.body(),
            );
            return Ok(OurAuth {
                id,
                certs: Vec::new(),
                auth: Payload::Auth {
                    method: AuthMethod::SharedKeyMic,
                    data: auth.to_vec(),
                },
            });
        };
        let id = c.local.id().clone();
        let octets = signed_octets(keys.suite.prf, real_message, peer_nonce, sk_p, &id.body());
        let (method, data) = c
            .sign(self.peer_rfc7427, &octets)
            .map_err(|e| format!("AWS tunnel cannot sign its AUTH payload: {e}"))?;
        Ok(OurAuth {
            id,
            certs: c.local.cert_payloads(),
            auth: Payload::Auth { method, data },
        })
    }

    /// Verifies the peer's AUTH: the PSK MIC, or its certificate chain,
    /// identity and signature. `real_message` is the peer's IKE_SA_INIT
    /// message, `our_nonce` ours.
    #[allow(
        clippy::too_many_arguments,
        reason = "the AUTH inputs of RFC 7296 § 2.15"
    )]
    pub(super) fn verify_peer_auth(
        &mut self,
        now: Instant,
        keys: &SaKeys,
        real_message: &[u8],
        our_nonce: &[u8],
        peer_is_initiator: bool,
        peer_id: &Identification,
        payloads: &[Payload],
    ) -> Result<AuthVerified, AuthFailure> {
        let ip = self.remote.ip();
        let Some(c) = self.cfg.cert.clone() else {
            let auth = auth_of(payloads).ok_or(AuthFailure::Missing)?;
            return verify_psk(
                keys,
                &self.cfg,
                real_message,
                our_nonce,
                peer_is_initiator,
                peer_id,
                auth,
            )
            .ok_or_else(|| {
                AuthFailure::Failed(format!(
                    "AWS tunnel detected pre-shared key mismatch with cgw: {ip}"
                ))
            });
        };
        let fail = |why: String| {
            AuthFailure::Failed(format!(
                "AWS tunnel certificate authentication failed with cgw: {ip}: {why}"
            ))
        };
        if let Some(want) = &self.cfg.remote_id
            && want != peer_id
        {
            return Err(fail(format!(
                "identity {} is not the configured {}",
                cert::display_id(peer_id),
                cert::display_id(want)
            )));
        }
        let (method, data) = any_auth(payloads).ok_or(AuthFailure::Missing)?;
        if method == AuthMethod::SharedKeyMic {
            return Err(fail(
                "peer authenticated with a pre-shared key; this tunnel uses certificates".into(),
            ));
        }
        let sk_p = if peer_is_initiator {
            &keys.sk_pi
        } else {
            &keys.sk_pr
        };
        let octets = signed_octets(
            keys.suite.prf,
            real_message,
            our_nonce,
            sk_p,
            &peer_id.body(),
        );
        let certs = cert::certs_of(payloads);
        match c.verify_peer(now, &certs, peer_id, method, data, &octets) {
            Ok(peer) => {
                self.log(format!(
                    "AWS tunnel authenticated cgw: {ip} by certificate \"{}\" (AUTH method {})",
                    peer.subject,
                    u8::from(method)
                ));
                Ok(AuthVerified(()))
            }
            Err(e) => Err(fail(e.to_string())),
        }
    }

    /// The largest IKE message we send unfragmented, when fragmentation
    /// was negotiated.
    pub(super) fn fragment_limit(&self) -> Option<usize> {
        self.peer_frag.then(|| {
            self.cfg
                .fragmentation
                .max_message(self.remote.is_ipv6(), self.local.port() == NAT_T_PORT)
        })
    }

    /// Feeds an SKF fragment to the reassembly (RFC 7383 § 2.6). Returns
    /// whether the caller should go on with `msg`: always for unfragmented
    /// messages; for a fragment, when it completed its message (the
    /// payloads wait in `reassembled` for `decrypt`) or when it is
    /// fragment 1 of a request we already answered (the caller resends
    /// the cached response once per retransmission, not once per
    /// fragment).
    pub(super) fn reassemble(&mut self, now: Instant, raw: &[u8], msg: &Message) -> bool {
        let Some(Payload::Skf {
            first,
            number,
            total,
            data,
        }) = msg.payloads.last()
        else {
            return true;
        };
        if !self.cfg.fragmentation.enabled {
            return false;
        }
        let h = msg.header;
        if h.is_response() {
            if self.pending.as_ref().map(|p| p.id) != Some(h.message_id) {
                return false;
            }
        } else {
            let answered = self
                .last_response
                .as_ref()
                .is_some_and(|(id, _)| *id == h.message_id)
                && h.message_id.wrapping_add(1) == self.expected_request;
            if answered {
                return *number == 1;
            }
            if h.message_id != self.expected_request {
                return false;
            }
        }
        let Some(keys) = self.keys() else {
            return false;
        };
        // Rule 1: authenticate and decrypt each fragment before keeping it.
        let Ok(plain) = keys.inn.open(raw, raw.len() - data.len()) else {
            return false;
        };
        let id = h.message_id;
        match self
            .reassembly
            .add(now, id, h.is_response(), *number, *total, *first, plain)
        {
            FragOutcome::Incomplete | FragOutcome::Duplicate => false,
            FragOutcome::Complete(first, bytes) => match parse_chain(first, &bytes) {
                Ok(p) => {
                    self.reassembled = Some(p);
                    true
                }
                Err(e) => {
                    self.log(format!(
                        "reassembled IKE message {id} ({total} fragments) does not parse: {e}"
                    ));
                    false
                }
            },
            FragOutcome::Dropped(why) => {
                self.log(format!(
                    "IKE fragment {number}/{total} of message {id} dropped: {why}"
                ));
                false
            }
        }
    }
}

fn auth_of(p: &[Payload]) -> Option<&Vec<u8>> {
    p.iter().find_map(|p| match p {
        Payload::Auth {
            method: AuthMethod::SharedKeyMic,
            data,
        } => Some(data),
        _ => None,
    })
}

/// Verifies the peer's PSK AUTH (RFC 7296 § 2.15). `peer_is_initiator`
/// selects SK_pi vs SK_pr; `real_message` is the peer's IKE_SA_INIT
/// message and `our_nonce` our nonce.
fn verify_psk(
    keys: &SaKeys,
    cfg: &IkeConfig,
    real_message: &[u8],
    our_nonce: &[u8],
    peer_is_initiator: bool,
    peer_id: &Identification,
    auth: &[u8],
) -> Option<AuthVerified> {
    if let Some(want) = &cfg.remote_id
        && want != peer_id
    {
        return None;
    }
    let sk_p = if peer_is_initiator {
        &keys.sk_pi
    } else {
        &keys.sk_pr
    };
    let expect = psk_auth(
        keys.suite.prf,
        &cfg.psk,
        real_message,
        our_nonce,
        sk_p,
        &peer_id.body(),
    );
    ct_eq(&expect, auth).then_some(AuthVerified(()))
}
