//! IKEv1 ([RFC 2409], ISAKMP [RFC 2408], IPsec DOI [RFC 2407]) beside
//! IKEv2, as a sans-IO engine in the shape of [`crate::ike`]: Main Mode
//! with pre-shared keys and Quick Mode for ESP, NAT-T ([RFC 3947]), DPD
//! ([RFC 3706]). The spec allows IKEv1 per tunnel (`ike_versions`, § 3.2)
//! in Main Mode only.
//!
//! | module | what |
//! |---|---|
//! | [`wire`] | ISAKMP header, payloads and data attributes (no-panic parser) |
//! | [`crypto`] | SKEYID and its children, HASH_I/R, Quick Mode hashes, KEYMAT, phase 1 AES-CBC with the IV chain |
//! | [`proposal`] | SA attributes of the tunnel's algorithm lists, offers, selection |
//! | [`sa`] | one ISAKMP SA: Main Mode and Quick Mode typestates, Informational, DPD, lifetimes |
//! | [`endpoint`] | dispatch by cookies, refusals, INITIAL-CONTACT |
//!
//! Shared with IKEv2 and reused as they are: the DH groups
//! ([`crate::ike::dh`]), the HMAC PRFs ([`crate::ike::crypto::Prf`]), the
//! algorithm lists ([`crate::ike::proposal::AlgorithmSet`]), the tunnel's
//! [`IkeConfig`](crate::ike::sa::IkeConfig), and what an SA reports
//! ([`Event`](crate::ike::sa::Event), [`ChildSa`](crate::ike::sa::ChildSa)
//! with its dataplane record), so that the tunnel set can run either
//! version behind one interface.
//!
//! Time, randomness and sockets are the caller's: see [`sa::Ikev1Sa`].
//! `vpnd` runs an [`endpoint::Endpoint`] per tunnel that allows IKEv1,
//! beside its IKEv2 one ([`crate::ike::tunnels`] dispatches by version).
//!
//! # Not yet
//!
//! * Signature authentication (RSA / ECDSA certificates).
//! * Phase 1 rekey as initiator (a new Main Mode before our ISAKMP SA
//!   expires): the peer's is adopted ([`endpoint`]), ours is not started,
//!   so at our phase 1 lifetime the ISAKMP SA is deleted and, with no
//!   newer one from the peer, its IPsec SAs go down with it. Phase 2 SAs
//!   are rekeyed by us `rekey_margin` before they expire (Quick Mode, the
//!   old SA deleted [`sa::REKEYED_GRACE`] after its successor is up).
//! * Our Quick Mode offers the tunnel's configured networks as IDs; a
//!   peer that narrowed them when it set the SA up (our responder accepts
//!   a subset) answers our rekey with other IDs, which we refuse
//!   (INVALID-ID-INFORMATION): the SA then lasts until it expires and the
//!   peer's own rekey (or a new Quick Mode) replaces it.
//!
//! [RFC 2409]: https://www.rfc-editor.org/rfc/rfc2409
//! [RFC 2408]: https://www.rfc-editor.org/rfc/rfc2408
//! [RFC 2407]: https://www.rfc-editor.org/rfc/rfc2407
//! [RFC 3947]: https://www.rfc-editor.org/rfc/rfc3947
//! [RFC 3706]: https://www.rfc-editor.org/rfc/rfc3706

pub mod crypto;
pub mod endpoint;
pub mod proposal;
pub mod sa;
pub mod wire;

#[cfg(test)]
mod tests;
