//! AES-CBC ([RFC 3602]) with HMAC-SHA1-96 ([RFC 2404]) or HMAC-SHA2
//! ([RFC 4868]), encrypt-then-MAC as ESP does it ([RFC 4303 § 3.3.2]).
//!
//! Cipher: `aws-lc-rs` unpadded CBC with an explicit IV (ESP pads itself).
//! MAC: `ring::hmac`, truncated, compared in constant time with `subtle`.
//!
//! The ICV covers `SPI | seq-low | IV | ciphertext`, followed, with ESN,
//! by the high 32 bits of the sequence number, which are not sent
//! ([RFC 4303 § 2.2.1] and § 3.3.2.1).
//!
//! [RFC 3602]: https://www.rfc-editor.org/rfc/rfc3602
//! [RFC 2404]: https://www.rfc-editor.org/rfc/rfc2404
//! [RFC 4868]: https://www.rfc-editor.org/rfc/rfc4868
//! [RFC 4303 § 3.3.2]: https://www.rfc-editor.org/rfc/rfc4303#section-3.3.2
//! [RFC 4303 § 2.2.1]: https://www.rfc-editor.org/rfc/rfc4303#section-2.2.1

use aws_lc_rs::cipher::{
    AES_128, AES_256, DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext,
    UnboundCipherKey,
};
use aws_lc_rs::iv::FixedLength;
use ring::hmac;
use subtle::ConstantTimeEq;

use super::{CryptoError, ESP_HEADER_LEN, EspTransform, Integrity, seq_hi};

/// IV bytes on the wire (RFC 3602 § 3: one cipher block).
pub(crate) const IV_LEN: usize = 16;
const BLOCK: usize = 16;

/// Per-SA CBC IV generator: `IV = AES-128-ECB(iv_key, 0^64 || seq)`.
///
/// RFC 3602 § 3 requires CBC IVs to be unpredictable. Encrypting a
/// never-repeating counter under a secret key is the NIST SP 800-38A
/// Appendix C method; the counter is the ESP sequence number, which the SA
/// never reuses, and AES is a permutation, so IVs never repeat within an
/// SA. The key is a random 16-byte seed drawn by the control plane once
/// per SA (no RNG call per packet).
pub struct CbcIvGenerator {
    key: EncryptingKey,
}

impl core::fmt::Debug for CbcIvGenerator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CbcIvGenerator").finish_non_exhaustive()
    }
}

impl CbcIvGenerator {
    /// Keys the generator.
    ///
    /// # Errors
    /// [`CryptoError::KeySetup`] if aws-lc-rs refuses the key.
    pub fn new(seed: &[u8; 16]) -> Result<Self, CryptoError> {
        let k = UnboundCipherKey::new(&AES_128, seed).map_err(|_| CryptoError::KeySetup)?;
        let key = EncryptingKey::ecb(k).map_err(|_| CryptoError::KeySetup)?;
        Ok(Self { key })
    }

    /// The IV for sequence number `seq`.
    ///
    /// # Errors
    /// [`CryptoError::KeySetup`] if the cipher call fails (it does not for
    /// a 16-byte block).
    #[inline]
    pub fn iv(&self, seq: u64) -> Result<[u8; IV_LEN], CryptoError> {
        let mut block = [0u8; IV_LEN];
        block[8..].copy_from_slice(&seq.to_be_bytes());
        self.key
            .less_safe_encrypt(&mut block, EncryptionContext::None)
            .map_err(|_| CryptoError::KeySetup)?;
        Ok(block)
    }
}

/// AES-CBC + truncated HMAC for one SA direction.
pub struct AesCbcHmac {
    enc: EncryptingKey,
    dec: DecryptingKey,
    mac: hmac::Key,
    integ: Integrity,
    ivgen: CbcIvGenerator,
}

impl core::fmt::Debug for AesCbcHmac {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AesCbcHmac")
            .field("enc", &self.enc)
            .field("integ", &self.integ)
            .finish_non_exhaustive()
    }
}

impl AesCbcHmac {
    /// Builds the context from an AES key (16 or 32 bytes), the integrity
    /// algorithm and its key, and the IV generator seed.
    ///
    /// # Errors
    /// [`CryptoError::BadKeyLength`] or [`CryptoError::KeySetup`].
    pub fn new(
        enc_key: &[u8],
        integ: Integrity,
        auth_key: &[u8],
        iv_seed: &[u8; 16],
    ) -> Result<Self, CryptoError> {
        let alg = match enc_key.len() {
            16 => &AES_128,
            32 => &AES_256,
            _ => return Err(CryptoError::BadKeyLength),
        };
        if auth_key.len() != integ.key_len() {
            return Err(CryptoError::BadKeyLength);
        }
        let enc = EncryptingKey::cbc(
            UnboundCipherKey::new(alg, enc_key).map_err(|_| CryptoError::KeySetup)?,
        )
        .map_err(|_| CryptoError::KeySetup)?;
        let dec = DecryptingKey::cbc(
            UnboundCipherKey::new(alg, enc_key).map_err(|_| CryptoError::KeySetup)?,
        )
        .map_err(|_| CryptoError::KeySetup)?;
        Ok(Self {
            enc,
            dec,
            mac: hmac::Key::new(integ.ring_algorithm(), auth_key),
            integ,
            ivgen: CbcIvGenerator::new(iv_seed)?,
        })
    }

    /// Raw RFC 3602 CBC encryption in place with an explicit IV (no
    /// padding; `data.len()` must be a multiple of 16).
    ///
    /// # Errors
    /// [`CryptoError::BadLength`] for an unaligned length.
    pub fn encrypt_with_iv(&self, iv: &[u8; IV_LEN], data: &mut [u8]) -> Result<(), CryptoError> {
        if !data.len().is_multiple_of(BLOCK) {
            return Err(CryptoError::BadLength);
        }
        self.enc
            .less_safe_encrypt(data, EncryptionContext::Iv128(FixedLength::from(iv)))
            .map(|_| ())
            .map_err(|_| CryptoError::BadLength)
    }

    /// Raw RFC 3602 CBC decryption in place with an explicit IV.
    ///
    /// # Errors
    /// [`CryptoError::BadLength`] for an unaligned length.
    pub fn decrypt_with_iv(&self, iv: &[u8; IV_LEN], data: &mut [u8]) -> Result<(), CryptoError> {
        if !data.len().is_multiple_of(BLOCK) {
            return Err(CryptoError::BadLength);
        }
        self.dec
            .decrypt(data, DecryptionContext::Iv128(FixedLength::from(iv)))
            .map(|_| ())
            .map_err(|_| CryptoError::BadLength)
    }

    /// The IV this SA sends with sequence number `seq`.
    #[inline]
    pub(crate) fn iv(&self, seq: u64) -> Result<[u8; IV_LEN], CryptoError> {
        self.ivgen.iv(seq)
    }

    /// Full (untruncated) HMAC over `covered || esn_hi?`.
    fn mac(&self, covered: &[u8], seq: u64, esn: bool) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.mac);
        ctx.update(covered);
        if esn {
            // RFC 4303 § 3.3.2.1: the high-order 32 bits of the ESN are
            // appended after the Next Header field for the ICV computation.
            ctx.update(&seq_hi(seq).to_be_bytes());
        }
        ctx.sign()
    }
}

impl EspTransform for AesCbcHmac {
    fn iv_len(&self) -> usize {
        IV_LEN
    }
    fn icv_len(&self) -> usize {
        self.integ.icv_len()
    }
    fn pad_align(&self) -> usize {
        BLOCK
    }

    fn seal(&self, seq: u64, esn: bool, esp: &mut [u8]) -> Result<(), CryptoError> {
        let icv_len = self.integ.icv_len();
        let min = ESP_HEADER_LEN + IV_LEN + icv_len;
        if esp.len() < min + BLOCK || !(esp.len() - min).is_multiple_of(BLOCK) {
            return Err(CryptoError::BadLength);
        }
        let covered_len = esp.len() - icv_len;
        let (covered, icv) = esp.split_at_mut(covered_len);
        let iv = self.ivgen.iv(seq)?;
        covered[ESP_HEADER_LEN..ESP_HEADER_LEN + IV_LEN].copy_from_slice(&iv);
        self.encrypt_with_iv(&iv, &mut covered[ESP_HEADER_LEN + IV_LEN..])?;
        let tag = self.mac(covered, seq, esn);
        // RFC 2404 § 2 / RFC 4868 § 2.1.1: the ICV is the leftmost bits.
        let t = tag.as_ref();
        icv.copy_from_slice(&t[..icv_len]);
        Ok(())
    }

    fn open(&self, seq: u64, esn: bool, esp: &mut [u8]) -> Result<(), CryptoError> {
        let icv_len = self.integ.icv_len();
        let min = ESP_HEADER_LEN + IV_LEN + icv_len;
        if esp.len() < min + BLOCK || !(esp.len() - min).is_multiple_of(BLOCK) {
            return Err(CryptoError::BadLength);
        }
        let covered_len = esp.len() - icv_len;
        let (covered, icv) = esp.split_at_mut(covered_len);
        // Encrypt-then-MAC: verify before touching the ciphertext.
        let tag = self.mac(covered, seq, esn);
        let ok: bool = tag.as_ref()[..icv_len].ct_eq(icv).into();
        if !ok {
            return Err(CryptoError::AuthFailed);
        }
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&covered[ESP_HEADER_LEN..ESP_HEADER_LEN + IV_LEN]);
        self.decrypt_with_iv(&iv, &mut covered[ESP_HEADER_LEN + IV_LEN..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;

    fn cbc(key: &[u8], iv: [u8; 16], p: &[u8], c: &[u8]) {
        let t = AesCbcHmac::new(key, Integrity::HmacSha1_96, &[0; 20], &[0; 16]).unwrap();
        let mut buf = p.to_vec();
        t.encrypt_with_iv(&iv, &mut buf).unwrap();
        assert_eq!(buf, c);
        t.decrypt_with_iv(&iv, &mut buf).unwrap();
        assert_eq!(buf, p);
    }

    /// [RFC 3602 § 4](https://www.rfc-editor.org/rfc/rfc3602#section-4), Case #1.
    #[test]
    fn rfc3602_case_1() {
        cbc(
            &hex!("06a9214036b8a15b512e03d534120006"),
            hex!("3dafba429d9eb430b422da802c9fac41"),
            b"Single block msg",
            &hex!("e353779c1079aeb82708942dbe77181a"),
        );
    }

    /// [RFC 3602 § 4](https://www.rfc-editor.org/rfc/rfc3602#section-4), Case #2.
    #[test]
    fn rfc3602_case_2() {
        cbc(
            &hex!("c286696d887c9aa0611bbb3e2025a45a"),
            hex!("562e17996d093d28ddb3ba695a2e6f58"),
            &hex!("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"),
            &hex!("d296cd94c2cccf8a3a863028b5e1dc0a7586602d253cfff91b8266bea6d61ab1"),
        );
    }

    /// [RFC 3602 § 4](https://www.rfc-editor.org/rfc/rfc3602#section-4), Case #3.
    #[test]
    fn rfc3602_case_3() {
        cbc(
            &hex!("6c3ea0477630ce21a2ce334aa746c2cd"),
            hex!("c782dc4c098c66cbd9cd27d825682c81"),
            b"This is a 48-byte message (exactly 3 AES blocks)",
            &hex!(
                "d0a02b3836451753d493665d33f0e8862dea54cdb293abc7506939276772f8d5"
                "021c19216bad525c8579695d83ba2684"
            ),
        );
    }

    /// [RFC 3602 § 4](https://www.rfc-editor.org/rfc/rfc3602#section-4), Case #4.
    #[test]
    fn rfc3602_case_4() {
        let p: Vec<u8> = (0xa0..=0xdf).collect();
        cbc(
            &hex!("56e47a38c5598974bc46903dba290349"),
            hex!("8ce82eefbea0da3c44699ed7db51b7d9"),
            &p,
            &hex!(
                "c30e32ffedc0774e6aff6af0869f71aa0f3af07a9a31a9c684db207eb0ef8e4e"
                "35907aa632c3ffdf868bb7b29d3d46ad83ce9f9a102ee99d49a53e87f4c3da55"
            ),
        );
    }

    fn full_hmac(integ: Integrity, key: &[u8], data: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(integ.ring_algorithm(), key), data)
            .as_ref()
            .to_vec()
    }

    /// [RFC 2202 § 3](https://www.rfc-editor.org/rfc/rfc2202#section-3)
    /// test cases 1 and 2 (HMAC-SHA-1).
    #[test]
    fn rfc2202_hmac_sha1() {
        assert_eq!(
            full_hmac(Integrity::HmacSha1_96, &[0x0b; 20], b"Hi There"),
            hex!("b617318655057264e28bc0b6fb378c8ef146be00")
        );
        assert_eq!(
            full_hmac(
                Integrity::HmacSha1_96,
                b"Jefe",
                b"what do ya want for nothing?"
            ),
            hex!("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")
        );
    }

    /// [RFC 4231 § 4.2](https://www.rfc-editor.org/rfc/rfc4231#section-4.2)
    /// test case 1 (HMAC-SHA-256/384/512).
    #[test]
    fn rfc4231_test_case_1() {
        let k = [0x0b; 20];
        let d = b"Hi There";
        assert_eq!(
            full_hmac(Integrity::HmacSha256_128, &k, d),
            hex!("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        );
        assert_eq!(
            full_hmac(Integrity::HmacSha384_192, &k, d),
            hex!(
                "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec6"
                "82aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6"
            )
        );
        assert_eq!(
            full_hmac(Integrity::HmacSha512_256, &k, d),
            hex!(
                "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde"
                "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854"
            )
        );
    }

    /// [RFC 4231 § 4.3](https://www.rfc-editor.org/rfc/rfc4231#section-4.3)
    /// test case 2 (key shorter than the block).
    #[test]
    fn rfc4231_test_case_2() {
        let k = b"Jefe";
        let d = b"what do ya want for nothing?";
        assert_eq!(
            full_hmac(Integrity::HmacSha256_128, k, d),
            hex!("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        assert_eq!(
            full_hmac(Integrity::HmacSha384_192, k, d),
            hex!(
                "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47"
                "e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649"
            )
        );
        assert_eq!(
            full_hmac(Integrity::HmacSha512_256, k, d),
            hex!(
                "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
                "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
            )
        );
    }

    #[test]
    fn iv_generator_never_repeats_in_a_range_and_differs_per_seed() {
        let g = CbcIvGenerator::new(&[1; 16]).unwrap();
        let h = CbcIvGenerator::new(&[2; 16]).unwrap();
        let mut seen = std::collections::HashSet::new();
        for s in 0..10_000u64 {
            assert!(seen.insert(g.iv(s).unwrap()));
        }
        assert_ne!(g.iv(1).unwrap(), h.iv(1).unwrap());
    }

    #[test]
    fn seal_open_round_trip_and_tamper() {
        for integ in [
            Integrity::HmacSha1_96,
            Integrity::HmacSha256_128,
            Integrity::HmacSha384_192,
            Integrity::HmacSha512_256,
        ] {
            let auth = vec![9u8; integ.key_len()];
            let t = AesCbcHmac::new(&[3; 32], integ, &auth, &[4; 16]).unwrap();
            let mut esp = vec![0u8; 8 + 16 + 32 + integ.icv_len()];
            esp[..8].copy_from_slice(&[1, 2, 3, 4, 0, 0, 0, 7]);
            for (i, b) in esp[24..56].iter_mut().enumerate() {
                *b = u8::try_from(i).unwrap();
            }
            let plain = esp.clone();
            t.seal(7 | (5 << 32), true, &mut esp).unwrap();
            assert_ne!(esp[24..56], plain[24..56]);
            let sealed = esp.clone();
            // Wrong ESN high bits fail the ICV.
            assert_eq!(t.open(7, true, &mut esp), Err(CryptoError::AuthFailed));
            assert_eq!(esp, sealed, "nothing decrypted on failure");
            t.open(7 | (5 << 32), true, &mut esp).unwrap();
            assert_eq!(esp[24..56], plain[24..56]);
        }
    }
}
