//! Diffie-Hellman for IKEv2 KE payloads: MODP groups 2, 5, 14–18
//! ([RFC 2409 § 6.2], [RFC 3526]) and 22–24 ([RFC 5114]) with
//! `crypto-bigint` (constant-time Montgomery exponentiation), ECP groups
//! 19–21 ([RFC 5903]) and Curve25519 (31, [RFC 8031]) with `aws-lc-rs`.
//!
//! Encodings (RFC 7296 § 3.4, RFC 5903 § 7): a MODP public value and
//! shared secret are big-endian, left-padded to the prime's length; an
//! ECP public value is `x | y` (no SEC1 `0x04` prefix) and the shared
//! secret is `x`.
//!
//! Peer values are checked: MODP `1 < y < p − 1`, and `y^q = 1 (mod p)`
//! for the prime-order-subgroup groups 22–24 (RFC 6989 § 2.2); ECP points
//! are validated by aws-lc (on the curve, not infinity).
//!
//! Private values come from the injected [`Rng`], so tests are
//! deterministic.
//!
//! [RFC 2409 § 6.2]: https://www.rfc-editor.org/rfc/rfc2409#section-6.2
//! [RFC 3526]: https://www.rfc-editor.org/rfc/rfc3526
//! [RFC 5114]: https://www.rfc-editor.org/rfc/rfc5114
//! [RFC 5903]: https://www.rfc-editor.org/rfc/rfc5903
//! [RFC 8031]: https://www.rfc-editor.org/rfc/rfc8031

use aws_lc_rs::agreement::{self, ECDH_P256, ECDH_P384, ECDH_P521, PrivateKey, X25519};
use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use crypto_bigint::{BoxedUint, Odd};
use zeroize::Zeroizing;

use super::Rng;
use super::dh_params as params;

/// Why a DH operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DhError {
    /// A group number we do not implement.
    #[error("unsupported DH group {0}")]
    Unsupported(u16),
    /// The peer's public value has the wrong length or fails the checks.
    #[error("invalid peer public value for DH group {0}")]
    InvalidPeerValue(u16),
    /// Key generation kept failing (RNG broken).
    #[error("DH key generation failed")]
    KeyGen,
}

/// Every group implemented, by number.
pub const SUPPORTED: [u16; 14] = [2, 5, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 31];

struct Modp {
    p: &'static str,
    g: &'static str,
    q: Option<&'static str>,
    /// Private exponent bits: twice the group's security strength
    /// (RFC 3526 § 8), or the subgroup order's size for 22–24.
    exp_bits: u32,
}

fn modp(group: u16) -> Option<Modp> {
    let m = |p, g, exp_bits| Modp {
        p,
        g,
        q: None,
        exp_bits,
    };
    Some(match group {
        2 => m(params::MODP_1024_P, params::MODP_1024_G, 256),
        5 => m(params::MODP_1536_P, params::MODP_1536_G, 256),
        14 => m(params::MODP_2048_P, params::MODP_2048_G, 320),
        15 => m(params::MODP_3072_P, params::MODP_3072_G, 420),
        16 => m(params::MODP_4096_P, params::MODP_4096_G, 480),
        17 => m(params::MODP_6144_P, params::MODP_6144_G, 540),
        18 => m(params::MODP_8192_P, params::MODP_8192_G, 620),
        22 => Modp {
            p: params::MODP_1024_160_P,
            g: params::MODP_1024_160_G,
            q: Some(params::MODP_1024_160_Q),
            exp_bits: 159,
        },
        23 => Modp {
            p: params::MODP_2048_224_P,
            g: params::MODP_2048_224_G,
            q: Some(params::MODP_2048_224_Q),
            exp_bits: 223,
        },
        24 => Modp {
            p: params::MODP_2048_256_P,
            g: params::MODP_2048_256_G,
            q: Some(params::MODP_2048_256_Q),
            exp_bits: 255,
        },
        _ => return None,
    })
}

fn hex(s: &str) -> Vec<u8> {
    s.as_bytes()
        .chunks(2)
        .map(|c| {
            let d = |x: u8| match x {
                b'0'..=b'9' => x - b'0',
                b'a'..=b'f' => x - b'a' + 10,
                b'A'..=b'F' => x - b'A' + 10,
                _ => 0,
            };
            (d(c[0]) << 4) | d(c.get(1).copied().unwrap_or(b'0'))
        })
        .collect()
}

fn ec_alg(group: u16) -> Option<(&'static agreement::Algorithm, usize)> {
    match group {
        19 => Some((&ECDH_P256, 32)),
        20 => Some((&ECDH_P384, 48)),
        21 => Some((&ECDH_P521, 66)),
        31 => Some((&X25519, 32)),
        _ => None,
    }
}

enum Inner {
    Modp {
        params: BoxedMontyParams,
        x: Zeroizing<Vec<u8>>,
        q: Option<BoxedUint>,
        plen: usize,
    },
    Ec(PrivateKey),
}

/// Our half of a DH exchange: the private value and the public value we
/// send. Consumed by [`agree`](Self::agree).
pub struct DhPrivate {
    group: u16,
    public: Vec<u8>,
    inner: Inner,
}

impl std::fmt::Debug for DhPrivate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhPrivate")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

/// `bytes` as an integer of `bits` precision; values wider than that
/// (never produced by the callers, which check lengths) become 0.
fn bits_to_uint(bytes: &[u8], bits: u32) -> BoxedUint {
    BoxedUint::from_be_slice(bytes, bits).unwrap_or_else(|_| BoxedUint::zero_with_precision(bits))
}

impl DhPrivate {
    /// Generates a key pair for `group`.
    ///
    /// # Errors
    /// [`DhError::Unsupported`] or [`DhError::KeyGen`].
    pub fn generate(group: u16, rng: &mut dyn Rng) -> Result<Self, DhError> {
        if let Some(m) = modp(group) {
            let p_bytes = hex(m.p);
            let plen = p_bytes.len();
            let bits = u32::try_from(plen * 8).map_err(|_| DhError::Unsupported(group))?;
            let p = Option::<Odd<BoxedUint>>::from(Odd::new(bits_to_uint(&p_bytes, bits)))
                .ok_or(DhError::Unsupported(group))?;
            let params = BoxedMontyParams::new(p);
            let mut x = Zeroizing::new(vec![0u8; (m.exp_bits as usize).div_ceil(8)]);
            for _ in 0..16 {
                rng.fill(&mut x);
                // Keep exp_bits bits; set the top one so x is large.
                let extra = x.len() * 8 - m.exp_bits as usize;
                x[0] &= 0xff >> extra;
                x[0] |= 0x80 >> extra;
                if x.iter().any(|&b| b != 0) {
                    break;
                }
            }
            let g = BoxedMontyForm::new(bits_to_uint(&hex(m.g), bits), &params);
            let e = bits_to_uint(&x, bits);
            let y = g.pow_bounded_exp(&e, m.exp_bits).retrieve();
            let public = pad_left(&y.to_be_bytes(), plen);
            let q = m.q.map(|q| bits_to_uint(&hex(q), bits));
            return Ok(Self {
                group,
                public,
                inner: Inner::Modp { params, x, q, plen },
            });
        }
        let (alg, len) = ec_alg(group).ok_or(DhError::Unsupported(group))?;
        let mut sk = Zeroizing::new(vec![0u8; len]);
        for _ in 0..16 {
            rng.fill(&mut sk);
            if group == 21 {
                // P-521 scalars have 521 bits: 66 bytes, top 7 bits clear.
                sk[0] &= 0x01;
            }
            if let Ok(k) = PrivateKey::from_private_key(alg, &sk) {
                let pk = k.compute_public_key().map_err(|_| DhError::KeyGen)?;
                let raw = pk.as_ref();
                let public = if group == 31 {
                    raw.to_vec()
                } else {
                    // Strip the SEC1 uncompressed-point prefix 0x04.
                    raw.get(1..).ok_or(DhError::KeyGen)?.to_vec()
                };
                return Ok(Self {
                    group,
                    public,
                    inner: Inner::Ec(k),
                });
            }
        }
        Err(DhError::KeyGen)
    }

    /// The group number.
    #[must_use]
    pub fn group(&self) -> u16 {
        self.group
    }

    /// The public value for our KE payload.
    #[must_use]
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// Computes the shared secret `g^ir` from the peer's KE data.
    ///
    /// # Errors
    /// [`DhError::InvalidPeerValue`].
    pub fn agree(&self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, DhError> {
        let bad = DhError::InvalidPeerValue(self.group);
        match &self.inner {
            Inner::Modp { params, x, q, plen } => {
                if peer.len() != *plen {
                    return Err(bad);
                }
                let bits = params.bits_precision();
                let y = bits_to_uint(peer, bits);
                let p: &BoxedUint = params.modulus().as_ref();
                let one = BoxedUint::one_with_precision(bits);
                let p_minus_1 = p.wrapping_sub(&one);
                // 1 < y < p - 1 (RFC 7296 § 5 / RFC 6989 § 2.1).
                if y <= one || y >= p_minus_1 {
                    return Err(bad);
                }
                let ym = BoxedMontyForm::new(y, params);
                if let Some(q) = q {
                    // y^q = 1 mod p: y is in the prime-order subgroup.
                    if ym.pow(q).retrieve() != one {
                        return Err(bad);
                    }
                }
                let e = bits_to_uint(x, bits);
                let s = ym.pow_bounded_exp(&e, u32::try_from(x.len() * 8).unwrap_or(bits));
                Ok(Zeroizing::new(pad_left(&s.retrieve().to_be_bytes(), *plen)))
            }
            Inner::Ec(k) => {
                let alg = k.algorithm();
                let peer_sec1;
                let bytes: &[u8] = if self.group == 31 {
                    peer
                } else {
                    let (_, len) = ec_alg(self.group).ok_or(bad)?;
                    if peer.len() != 2 * len {
                        return Err(bad);
                    }
                    peer_sec1 = [&[4u8][..], peer].concat();
                    &peer_sec1
                };
                let pk = agreement::UnparsedPublicKey::new(alg, bytes);
                agreement::agree(k, pk, bad, |s| Ok(Zeroizing::new(s.to_vec())))
            }
        }
    }
}

fn pad_left(v: &[u8], len: usize) -> Vec<u8> {
    // `to_be_bytes` has the precision's width; keep the low `len` bytes.
    if v.len() >= len {
        v[v.len() - len..].to_vec()
    } else {
        let mut out = vec![0u8; len - v.len()];
        out.extend_from_slice(v);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ike::tests::TestRng;

    #[test]
    fn every_group_agrees_with_itself() {
        for g in SUPPORTED {
            // 6144/8192 are slow in debug builds; one run each is enough.
            let mut rng = TestRng::new(u64::from(g));
            let a = DhPrivate::generate(g, &mut rng).unwrap();
            let b = DhPrivate::generate(g, &mut rng).unwrap();
            let sa = a.agree(b.public()).unwrap();
            let sb = b.agree(a.public()).unwrap();
            assert_eq!(*sa, *sb, "group {g}");
            assert_ne!(a.public(), b.public());
        }
    }

    #[test]
    fn public_value_lengths() {
        let want = [
            (2, 128),
            (5, 192),
            (14, 256),
            (19, 64),
            (20, 96),
            (21, 132),
            (22, 128),
            (23, 256),
            (24, 256),
            (31, 32),
        ];
        let mut rng = TestRng::new(7);
        for (g, len) in want {
            assert_eq!(
                DhPrivate::generate(g, &mut rng).unwrap().public().len(),
                len
            );
        }
    }

    #[test]
    fn bad_peer_values_are_rejected() {
        let mut rng = TestRng::new(3);
        for g in [2u16, 14, 22, 24] {
            let a = DhPrivate::generate(g, &mut rng).unwrap();
            let plen = a.public().len();
            let mut one = vec![0u8; plen];
            one[plen - 1] = 1;
            assert!(a.agree(&one).is_err(), "1 accepted for {g}");
            assert!(a.agree(&vec![0u8; plen]).is_err());
            let pm1 = pad_left(
                &BoxedUint::from_be_slice_vartime(&hex(modp(g).unwrap().p))
                    .wrapping_sub(BoxedUint::one())
                    .to_be_bytes(),
                plen,
            );
            assert!(a.agree(&pm1).is_err(), "p-1 accepted for {g}");
            assert!(a.agree(&[0xff; 3]).is_err());
        }
        // A value outside the prime-order subgroup: 2 generates the full group for 24? The
        // generator check: g^q = 1, but (p-1)/2-order elements such as p-1 are refused above;
        // try g+1 style values which are almost never in the subgroup.
        let a = DhPrivate::generate(24, &mut rng).unwrap();
        let mut v = vec![0u8; 256];
        v[255] = 5;
        assert!(a.agree(&v).is_err(), "non-subgroup element accepted");
        for g in [19u16, 20, 21] {
            let a = DhPrivate::generate(g, &mut rng).unwrap();
            let mut p = a.public().to_vec();
            p[5] ^= 1;
            assert!(a.agree(&p).is_err(), "off-curve point accepted for {g}");
            assert!(a.agree(&p[1..]).is_err());
        }
    }

    /// The parameters are the RFCs' (checked when generated, see
    /// `gen_dh_params.py`); spot-check the well-known ends here.
    #[test]
    fn parameter_spot_checks() {
        assert!(params::MODP_2048_P.ends_with("15728e5a8aacaa68ffffffffffffffff"));
        assert!(params::MODP_1024_P.starts_with("ffffffffffffffffc90fdaa22168c234"));
        assert!(params::MODP_1024_P.ends_with("49286651ece65381ffffffffffffffff"));
        assert_eq!(params::MODP_8192_P.len(), 2048);
        assert!(params::MODP_2048_256_Q.starts_with("8cf83642a709a097b447997640129da2"));
    }

    /// RFC 5903 § 8.1: the ECDH P-256 test vector.
    #[test]
    fn rfc5903_p256_vector() {
        let i = hex("C88F01F510D9AC3F70A292DAA2316DE544E9AAB8AFE84049C62A9C57862D1433");
        let gr = hex(concat!(
            "D12DFB5289C8D4F81208B70270398C342296970A0BCCB74C736FC7554494BF63",
            "56FBF3CA366CC23E8157854C13C58D6AAC23F046ADA30F8353E74F33039872AB"
        ));
        let gir = hex("D6840F6B42F6EDAFD13116E0E12565202FEF8E9ECE7DCE03812464D04B9442DE");
        let k = PrivateKey::from_private_key(&ECDH_P256, &i).unwrap();
        let me = DhPrivate {
            group: 19,
            public: Vec::new(),
            inner: Inner::Ec(k),
        };
        assert_eq!(*me.agree(&gr).unwrap(), gir);
    }
}
