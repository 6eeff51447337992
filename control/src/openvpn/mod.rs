//! Remote access ("Client VPN"): an OpenVPN 2.6–compatible server engine,
//! sans-IO. OpenVPN clients connect with mutual certificates; the control
//! channel runs here, the data channel functions ([`data`]) are what the
//! DPDK workers will call per packet.
//!
//! Layers, bottom up (each its own module, none reads a clock or a socket):
//!
//! ```text
//!   server      demux by client address, tls-crypt check first, stateless
//!               cookie before any state, pool, drop counters
//!   cookie      the hard-reset cookie (our session id = MAC of address, sid, time)
//!   session     one client: reliable control channel ⇄ rustls ⇄ key method 2,
//!               PUSH_REQUEST → PUSH_REPLY, keepalive, soft resets, exit
//!   ├ reliable  acks, retransmission with backoff, in-order delivery, bounded windows
//!   ├ tls       rustls server config: TLS 1.2/1.3, client certificates required
//!   ├ key_method / push   the plaintext messages and the address pool
//!   └ data      AES-GCM P_DATA_V2 in place, packet-id replay window, TLS-EKM keys
//!   tls_crypt   AES-256-CTR + HMAC-SHA256 over every control packet (static key)
//!   wire        opcodes, session ids, ack arrays, packet ids, TCP framing
//! ```
//!
//! Renegotiation: soft resets from either side (client `reneg-sec`,
//! server [`session::SessionConfig::reneg`]), key ids 1..7 wrapping, a new
//! TLS session and TLS-EKM keys each time, the previous key kept as the
//! lame duck for the transition window.
//!
//! Revocation: a CRL (PEM/DER, up to 20,000 entries) checked at every
//! handshake; reloading it keeps other sessions and disconnects the ones
//! it newly revokes ([`server::Server::reload_tls`]). Explicit exit notify
//! both ways: the client's `EXIT`/OCC exit frees its session at once; the
//! server tells a connected client `HALT` when terminated or revoked and
//! `RESTART` at the session timeout
//! ([`session::SessionConfig::session_timeout`], default 24 h) and at
//! shutdown ([`server::Server::shutdown`]). Dead clients expire after
//! twice the pushed `ping-restart`.
//!
//! What it does not do (yet): tls-crypt-v2, the pre-2.6 TLS-PRF key
//! derivation (clients must offer TLS-EKM, which every OpenVPN ≥ 2.5 with
//! OpenSSL does), compression, username/password auth, a rate limit on
//! cookie replies (OpenVPN's `connect-freq-initial`; ours are bounded only
//! by the reply queue), the CRL's `nextUpdate` (an expired list still
//! applies, rustls-webpki's default), the client's common name in the log
//! line of a refused revoked certificate (rustls does not hand out a
//! certificate it rejected).
//!
//! Protocol sources read (never copied): OpenVPN's
//! `doc/doxygen/doc_protocol_overview.h`, `ssl_pkt.h`, `reliable.h`,
//! `tls_crypt.c`, `ssl.c` (key method 2, key directions, EKM label, soft
//! reset and lame duck), `ssl_pkt.c` and `mudp.c` (the stateless reset
//! cookie's behaviour).

pub mod cookie;
pub mod data;
pub mod key_method;
pub mod push;
pub mod reliable;
pub mod server;
pub mod session;
pub mod tls;
pub mod tls_crypt;
pub mod wire;

#[cfg(test)]
mod tests;
