//! IKEv2 ([RFC 7296]) as a sans-IO state machine.
//!
//! | module | what |
//! |---|---|
//! | [`wire`] | message and payload codec (no-panic parser) |
//! | [`crypto`] | prf / prf+, SKEYSEED and SK_*, KEYMAT, PSK AUTH, SK payload protection |
//! | [`dh`] | MODP, ECP and Curve25519 key exchange |
//! | [`proposal`] | proposals from the tunnel options; selection |
//! | [`sa`] | one IKE SA with its Child SAs: handshake typestate, retransmission, NAT-T, DPD, rekey |
//! | [`endpoint`] | dispatch of datagrams to IKE SAs; COOKIE under load |
//!
//! Time, randomness and sockets are the caller's: see [`sa::IkeSa`] for
//! the call order.
//!
//! [RFC 7296]: https://www.rfc-editor.org/rfc/rfc7296

pub mod crypto;
pub mod dh;
mod dh_params;
pub mod endpoint;
pub mod proposal;
pub mod sa;
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
