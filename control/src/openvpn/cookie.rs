//! The stateless hard-reset cookie (the behaviour of OpenVPN 2.6's
//! `--mode server` over UDP, our own construction): the server answers a
//! client's HARD_RESET_CLIENT_V2 without creating any state, choosing as
//! its own session id a MAC over the client's address, the client's
//! session id and a coarse time slot. Only a packet that echoes that
//! session id back (the client's ack of our reset, or its first TLS
//! record with the ack piggybacked) from the same address creates a
//! session. A flood of resets from spoofed or many addresses therefore
//! costs one tls-crypt check and one MAC each, never a table entry.
//!
//! ```text
//! slot   = seconds since the endpoint's first packet / (handshake window / 2)
//! cookie = HMAC-SHA256(secret, slot u64 BE || IP (4 or 16 bytes) || port u16 BE
//!                              || client session id)[..8]
//! ```
//!
//! A cookie is accepted in its own slot and the two before it (one and a
//! half handshake windows, as OpenVPN accepts), compared in constant time.
//! The secret is 32 random bytes per endpoint, never leaves it, and is
//! replaced on restart (clients in the middle of a handshake then retry).

use std::net::{IpAddr, SocketAddr};

use ring::hmac;
use subtle::ConstantTimeEq as _;

use super::wire::{SESSION_ID_LEN, SessionId};

/// Slots back from the current one in which a cookie is still accepted.
pub const SLOTS_ACCEPTED: u64 = 2;

/// The endpoint's cookie secret.
pub struct CookieKey {
    key: hmac::Key,
}

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieKey(..)")
    }
}

impl CookieKey {
    /// A key from 32 secret bytes.
    #[must_use]
    pub fn new(secret: &[u8; 32]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The server session id for a client at `src` with session id
    /// `client` in time slot `slot`.
    #[must_use]
    pub fn cookie(&self, slot: u64, src: SocketAddr, client: SessionId) -> SessionId {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(&slot.to_be_bytes());
        match src.ip() {
            IpAddr::V4(a) => ctx.update(&a.octets()),
            IpAddr::V6(a) => ctx.update(&a.octets()),
        }
        ctx.update(&src.port().to_be_bytes());
        ctx.update(&client.0);
        let tag = ctx.sign();
        let mut id = [0u8; SESSION_ID_LEN];
        id.copy_from_slice(&tag.as_ref()[..SESSION_ID_LEN]);
        SessionId(id)
    }

    /// Whether `echoed` is the cookie of `src`/`client` in `slot` or one
    /// of the [`SLOTS_ACCEPTED`] before it.
    #[must_use]
    pub fn verify(&self, slot: u64, src: SocketAddr, client: SessionId, echoed: SessionId) -> bool {
        let mut ok = subtle::Choice::from(0);
        for back in 0..=SLOTS_ACCEPTED.min(slot) {
            let want = self.cookie(slot - back, src, client);
            ok |= want.0.ct_eq(&echoed.0);
        }
        bool::from(ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answer, computed independently (Python's `hmac` module):
    /// `hmac.new(bytes(range(32)), (7).to_bytes(8,'big') +
    /// bytes([198,51,100,7]) + (1194).to_bytes(2,'big') +
    /// bytes(range(1,9)), 'sha256').hexdigest()[:16]`.
    #[test]
    fn cookie_known_answer() {
        let mut secret = [0u8; 32];
        for (i, b) in secret.iter_mut().enumerate() {
            *b = u8::try_from(i).unwrap();
        }
        let k = CookieKey::new(&secret);
        let src: SocketAddr = "198.51.100.7:1194".parse().unwrap();
        let c = k.cookie(7, src, SessionId([1, 2, 3, 4, 5, 6, 7, 8]));
        assert_eq!(c.0, hex_literal::hex!("c73dd747d72319cb"));
    }

    #[test]
    fn accepted_in_its_slot_and_two_after_bound_to_address_and_session() {
        let k = CookieKey::new(&[9; 32]);
        let src: SocketAddr = "198.51.100.7:1194".parse().unwrap();
        let sid = SessionId([1; 8]);
        let c = k.cookie(10, src, sid);
        assert!(k.verify(10, src, sid, c));
        assert!(k.verify(11, src, sid, c));
        assert!(k.verify(12, src, sid, c));
        assert!(!k.verify(13, src, sid, c), "expired");
        assert!(!k.verify(9, src, sid, c), "from the future");
        let other: SocketAddr = "198.51.100.7:1195".parse().unwrap();
        assert!(!k.verify(10, other, sid, c), "another port");
        let v6: SocketAddr = "[2001:db8::7]:1194".parse().unwrap();
        assert!(!k.verify(10, v6, sid, c), "another address");
        assert!(!k.verify(10, src, SessionId([2; 8]), c), "another session");
        assert!(
            !CookieKey::new(&[8; 32]).verify(10, src, sid, c),
            "another secret"
        );
        // Slot 0 and 1 look back only as far as there is time.
        let c0 = k.cookie(0, src, sid);
        assert!(k.verify(0, src, sid, c0) && k.verify(2, src, sid, c0));
    }
}
