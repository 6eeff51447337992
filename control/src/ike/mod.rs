//! IKEv2 ([RFC 7296]) as a sans-IO state machine.
//!
//! | module | what |
//! |---|---|
//! | [`wire`] | message and payload codec (no-panic parser) |
//! | [`crypto`] | prf / prf+, SKEYSEED and SK_*, KEYMAT, PSK AUTH, SK and SKF payload protection |
//! | [`cert`] | X.509: CERT / CERTREQ, signature AUTH (RSA, ECDSA, RFC 7427), chain validation |
//! | [`frag`] | IKE fragmentation (RFC 7383): SKF split and bounded reassembly |
//! | [`dh`] | MODP, ECP and Curve25519 key exchange |
//! | [`proposal`] | proposals from the tunnel options; selection |
//! | [`sa`] | one IKE SA with its Child SAs: handshake typestate, retransmission, NAT-T, DPD, rekey |
//! | [`endpoint`] | dispatch of datagrams to IKE SAs; COOKIE under load |
//! | [`tunnels`] | the configured tunnels as IKE runs them: one endpoint each, SAs into the dataplane through [`tunnels::TunnelSink`], tunnel state and logs |
//!
//! Time, randomness and sockets are the caller's: see [`sa::IkeSa`] for
//! the call order.
//!
//! # What it does
//!
//! * IKE_SA_INIT / IKE_AUTH with PSK (RFC 7296 § 1.2, § 2.15), both
//!   roles; or with certificates ([`cert`]: RSA and ECDSA, AUTH methods
//!   1, 9–11 and 14, chain to the configured CAs with the spec's AKI /
//!   SKI / basicConstraints rules, identity checked against the
//!   certificate); proposal selection from the tunnel's lists (spec § 3.6, rule
//!   in [`proposal`]); INVALID_KE_PAYLOAD retry (§ 1.3; a stale one naming
//!   the group already switched to is ignored); COOKIE when the half-open
//!   count reaches the endpoint's threshold or the caller's load signal
//!   (§ 2.6, [`endpoint`]: IKE_SA_INIT from unconfigured addresses is
//!   dropped unanswered and counted); half-open timeout.
//! * NAT detection and the float to UDP 4500 with the non-ESP marker
//!   (§ 2.23, RFC 3948); the Child SA records the peer's mapped port;
//!   NAT-T keepalives every 20 s from the side behind the NAT (RFC 3948
//!   § 4).
//! * Route-based traffic selectors from the configured CIDRs, narrowed as
//!   responder and checked as initiator (§ 2.9), TS_UNACCEPTABLE.
//! * Retransmission with exponential backoff, one request in flight
//!   (window 1), cached responses for retransmitted requests (§ 2.1–2.3).
//! * CREATE_CHILD_SA: Child SA rekey with PFS and IKE SA rekey, both
//!   roles, on `lifetime − margin − fuzz` timers; simultaneous-rekey
//!   collisions by the nonce rule (§ 2.8.1, § 2.8.2); make-before-break
//!   (the new Child SA is reported up before the old one goes down); a
//!   Child SA rekey answered with INVALID_KE_PAYLOAD is repeated with the
//!   requested PFS group, a failed one is retried halfway to expiry; the
//!   dataplane's soft byte/packet lifetimes rekey at once
//!   ([`sa::IkeSa::expedite_child_rekey`], [`sa::SEQ_REKEY_PACKETS`]).
//! * IKE fragmentation ([`frag`], RFC 7383): announced in IKE_SA_INIT;
//!   messages above the configured datagram size (1280 bytes by default)
//!   go out as SKF fragments, retransmitted as a set; the peer's are
//!   authenticated one by one and reassembled with bounds.
//! * INFORMATIONAL: DELETE (IKE and ESP), DPD with the tunnel's timeout
//!   and action (clear / none / restart), INITIAL_CONTACT (§ 2.4).
//! * [`endpoint::Endpoint`]: startup action `start` (initiate, retry
//!   forever with backoff, re-initiate after a peer DELETE).
//! * Events carry the Child SA's keys, SPIs, selectors and NAT-T ports;
//!   [`sa::ChildSa::sa_config`] builds the dataplane's `SaConfig`.
//!
//! # Not yet
//!
//! * Peers known only by certificate identity, without an address (the
//!   endpoint keys tunnels by peer address), and automatic rotation of our
//!   own certificate (a new file is read when the tunnel restarts).
//! * Revocation (CRL / OCSP) of peer certificates.
//! * RSA signatures with SHA-1 (AUTH method 1) are verified but never
//!   made: we sign RSA with RFC 7427 sha256WithRSAEncryption.
//! * Rekeying an IKE SA while a Child SA rekey is in flight on it is
//!   deferred to the next timer rather than queued.
//!
//! [RFC 7296]: https://www.rfc-editor.org/rfc/rfc7296

pub mod cert;
pub mod crypto;
pub mod dh;
mod dh_params;
pub mod endpoint;
pub mod frag;
pub mod proposal;
pub mod sa;
#[cfg(any(test, fuzzing))]
pub mod scenario;
pub mod tunnels;
pub mod wire;

#[cfg(test)]
pub(crate) mod tests;

/// Randomness, injected (convention 4): nonces, SPIs, DH private values,
/// IVs, rekey fuzz.
pub trait Rng {
    /// Fills `dst` with random bytes.
    fn fill(&mut self, dst: &mut [u8]);
}

/// The system CSPRNG (aws-lc).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRng;

impl Rng for SystemRng {
    fn fill(&mut self, dst: &mut [u8]) {
        // aws-lc's RNG does not fail on Linux; if it ever did, carrying
        // on with predictable nonces or keys would be worse than stopping.
        if aws_lc_rs::rand::fill(dst).is_err() {
            std::process::abort();
        }
    }
}
