//! AES-GCM-16 for ESP, [RFC 4106], on `ring`.
//!
//! Nonce = 4-byte salt (the last 4 bytes of the keying material, § 8.1)
//! || 8-byte explicit IV carried in the packet (§ 3.1). We use the 64-bit
//! sequence number as the explicit IV: it is unique per key, which is the
//! only requirement (§ 3.1: "the IV MUST be unique ... for a given key";
//! § 3.1 also names a counter as a valid choice).
//!
//! AAD (§ 5): SPI || 32-bit sequence number, or SPI || ESN high || ESN
//! low (12 bytes) when extended sequence numbers are in use.
//!
//! [RFC 4106]: https://www.rfc-editor.org/rfc/rfc4106

use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

use super::{CryptoError, ESP_HEADER_LEN, EspTransform, seq_hi};

/// Salt bytes at the end of the keying material (RFC 4106 § 8.1).
pub(crate) const SALT_LEN: usize = 4;
/// Explicit IV bytes on the wire (RFC 4106 § 3.1).
pub(crate) const IV_LEN: usize = 8;
/// ICV bytes (the "-16" of AES-GCM-16, RFC 4106 § 6).
pub(crate) const ICV_LEN: usize = 16;

/// AES-128-GCM-16 or AES-256-GCM-16 for one SA direction.
pub struct AesGcm {
    key: LessSafeKey,
    salt: [u8; SALT_LEN],
}

impl core::fmt::Debug for AesGcm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print the salt: it is keying material.
        f.debug_struct("AesGcm")
            .field("algorithm", self.key.algorithm())
            .finish_non_exhaustive()
    }
}

impl Drop for AesGcm {
    fn drop(&mut self) {
        // The salt is ours to clear; ring's key schedule is opaque.
        zeroize::Zeroize::zeroize(&mut self.salt);
    }
}

impl AesGcm {
    /// Builds the context from `key || salt` (20 or 36 bytes).
    ///
    /// # Errors
    /// [`CryptoError::BadKeyLength`] for any other length.
    pub fn new(key_and_salt: &[u8]) -> Result<Self, CryptoError> {
        let (alg, key_len) = match key_and_salt.len() {
            20 => (&AES_128_GCM, 16),
            36 => (&AES_256_GCM, 32),
            _ => return Err(CryptoError::BadKeyLength),
        };
        let (key, salt) = key_and_salt.split_at(key_len);
        let unbound = UnboundKey::new(alg, key).map_err(|_| CryptoError::KeySetup)?;
        let mut s = [0u8; SALT_LEN];
        s.copy_from_slice(salt);
        Ok(Self {
            key: LessSafeKey::new(unbound),
            salt: s,
        })
    }

    fn nonce(&self, iv: &[u8; IV_LEN]) -> Nonce {
        let mut n = [0u8; 12];
        n[..SALT_LEN].copy_from_slice(&self.salt);
        n[SALT_LEN..].copy_from_slice(iv);
        Nonce::assume_unique_for_key(n)
    }

    /// Raw RFC 4106 seal: encrypts `in_out` in place under nonce
    /// `salt || iv` and returns the 16-byte tag. Used by [`EspTransform::seal`]
    /// and by the test vectors.
    ///
    /// # Errors
    /// [`CryptoError::BadLength`] if `ring` refuses the input (too long).
    pub fn seal_with_iv(
        &self,
        iv: &[u8; IV_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; ICV_LEN], CryptoError> {
        let tag = self
            .key
            .seal_in_place_separate_tag(self.nonce(iv), Aad::from(aad), in_out)
            .map_err(|_| CryptoError::BadLength)?;
        let mut out = [0u8; ICV_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Raw RFC 4106 open: `in_out` is ciphertext || 16-byte tag; on
    /// success the first `len - 16` bytes are the plaintext. `ring`
    /// compares the tag in constant time and decrypts nothing on failure.
    ///
    /// # Errors
    /// [`CryptoError::AuthFailed`] if the tag does not verify,
    /// [`CryptoError::BadLength`] if `in_out` is shorter than the tag.
    pub fn open_with_iv(
        &self,
        iv: &[u8; IV_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<(), CryptoError> {
        if in_out.len() < ICV_LEN {
            return Err(CryptoError::BadLength);
        }
        self.key
            .open_in_place(self.nonce(iv), Aad::from(aad), in_out)
            .map(|_| ())
            .map_err(|_| CryptoError::AuthFailed)
    }
}

/// Builds the RFC 4106 § 5 AAD from the ESP header bytes; returns the
/// buffer and the number of bytes used (8, or 12 with ESN).
#[inline]
pub(crate) fn aad(header: &[u8], seq: u64, esn: bool) -> ([u8; 12], usize) {
    let mut a = [0u8; 12];
    if esn {
        // SPI || Seq high || Seq low (RFC 4106 § 5, Figure 4)
        a[..4].copy_from_slice(&header[..4]);
        a[4..8].copy_from_slice(&seq_hi(seq).to_be_bytes());
        a[8..12].copy_from_slice(&header[4..8]);
        (a, 12)
    } else {
        // SPI || Seq (RFC 4106 § 5, Figure 3)
        a[..8].copy_from_slice(&header[..8]);
        (a, 8)
    }
}

impl EspTransform for AesGcm {
    fn iv_len(&self) -> usize {
        IV_LEN
    }
    fn icv_len(&self) -> usize {
        ICV_LEN
    }
    fn pad_align(&self) -> usize {
        4
    }

    fn seal(&self, seq: u64, esn: bool, esp: &mut [u8]) -> Result<(), CryptoError> {
        esp_seal(seq, esn, esp, |iv, aad, body| {
            self.seal_with_iv(iv, aad, body)
        })
    }

    fn open(&self, seq: u64, esn: bool, esp: &mut [u8]) -> Result<(), CryptoError> {
        esp_open(seq, esn, esp, |iv, aad, body_and_icv| {
            self.open_with_iv(iv, aad, body_and_icv)
        })
    }
}

/// The ESP framing of RFC 4106 around an AES-GCM engine, shared by both
/// backends: checks the length (header + IV + ICV, plaintext aligned to 4
/// bytes), writes the 64-bit sequence number as the explicit IV (§ 3.1),
/// builds the AAD (§ 5) and puts the tag in the ICV field. `seal` gets
/// the explicit IV, the AAD and the plaintext to encrypt in place, and
/// returns the tag.
#[inline]
pub(crate) fn esp_seal(
    seq: u64,
    esn: bool,
    esp: &mut [u8],
    seal: impl FnOnce(&[u8; IV_LEN], &[u8], &mut [u8]) -> Result<[u8; ICV_LEN], CryptoError>,
) -> Result<(), CryptoError> {
    let min = ESP_HEADER_LEN + IV_LEN + ICV_LEN;
    if esp.len() < min || !(esp.len() - min).is_multiple_of(4) {
        return Err(CryptoError::BadLength);
    }
    let (header, rest) = esp.split_at_mut(ESP_HEADER_LEN);
    let (iv_bytes, rest) = rest.split_at_mut(IV_LEN);
    let iv = seq.to_be_bytes();
    iv_bytes.copy_from_slice(&iv);
    let (a, alen) = aad(header, seq, esn);
    let body_len = rest.len() - ICV_LEN;
    let (body, icv) = rest.split_at_mut(body_len);
    let tag = seal(&iv, &a[..alen], body)?;
    icv.copy_from_slice(&tag);
    Ok(())
}

/// The ESP side of an RFC 4106 open, shared by both backends: checks the
/// length, reads the explicit IV and builds the AAD; `open` gets the IV,
/// the AAD and ciphertext || tag, verifies and decrypts in place.
#[inline]
pub(crate) fn esp_open(
    seq: u64,
    esn: bool,
    esp: &mut [u8],
    open: impl FnOnce(&[u8; IV_LEN], &[u8], &mut [u8]) -> Result<(), CryptoError>,
) -> Result<(), CryptoError> {
    let min = ESP_HEADER_LEN + IV_LEN + ICV_LEN;
    if esp.len() < min {
        return Err(CryptoError::BadLength);
    }
    let (header, rest) = esp.split_at_mut(ESP_HEADER_LEN);
    let (iv_bytes, body_and_icv) = rest.split_at_mut(IV_LEN);
    let mut iv = [0u8; IV_LEN];
    iv.copy_from_slice(iv_bytes);
    let (a, alen) = aad(header, seq, esn);
    open(&iv, &a[..alen], body_and_icv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::aead::{AeadInPlace, KeyInit};
    use hex_literal::hex;
    use proptest::prelude::*;

    /// Plaintext of test cases 3/4 and 15/16 of McGrew & Viega, "The
    /// Galois/Counter Mode of Operation (GCM)", Appendix B (the vectors
    /// RFC 4106 § 6 points to through the GCM specification).
    const P: [u8; 64] = hex!(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
        "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
    );
    /// AAD of test cases 4 and 16.
    const A: [u8; 20] = hex!("feedfacedeadbeeffeedfacedeadbeefabaddad2");
    const K: [u8; 16] = hex!("feffe9928665731c6d6a8f9467308308");
    /// IV of test cases 3/4/15/16: salt `cafebabe` || explicit IV.
    const SALT: [u8; 4] = hex!("cafebabe");
    const IV: [u8; 8] = hex!("facedbaddecaf888");

    fn check(key: &[u8], salt: &[u8], iv: &[u8; 8], aad: &[u8], p: &[u8], c: &[u8], t: &[u8]) {
        let mut ks = key.to_vec();
        ks.extend_from_slice(salt);
        let g = AesGcm::new(&ks).unwrap();
        let mut buf = p.to_vec();
        let tag = g.seal_with_iv(iv, aad, &mut buf).unwrap();
        assert_eq!(buf, c);
        assert_eq!(tag, t);
        buf.extend_from_slice(&tag);
        g.open_with_iv(iv, aad, &mut buf).unwrap();
        assert_eq!(&buf[..p.len()], p);
    }

    /// GCM spec Appendix B, test case 2 (AES-128, zero key/IV, one block).
    #[test]
    fn gcm_spec_test_case_2() {
        check(
            &[0; 16],
            &[0; 4],
            &[0; 8],
            &[],
            &[0; 16],
            &hex!("0388dace60b6a392f328c2b971b2fe78"),
            &hex!("ab6e47d42cec13bdf53a67b21257bddf"),
        );
    }

    /// GCM spec Appendix B, test case 3 (AES-128, 4 blocks, no AAD).
    #[test]
    fn gcm_spec_test_case_3() {
        check(
            &K,
            &SALT,
            &IV,
            &[],
            &P,
            &hex!(
                "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
                "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985"
            ),
            &hex!("4d5c2af327cd64a62cf35abd2ba6fab4"),
        );
    }

    /// GCM spec Appendix B, test case 4 (AES-128, 60 bytes, 20-byte AAD).
    #[test]
    fn gcm_spec_test_case_4() {
        check(
            &K,
            &SALT,
            &IV,
            &A,
            &P[..60],
            &hex!(
                "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
                "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091"
            ),
            &hex!("5bc94fbc3221a5db94fae95ae7121a47"),
        );
    }

    /// GCM spec Appendix B, test case 14 (AES-256, zero key/IV, one block).
    #[test]
    fn gcm_spec_test_case_14() {
        check(
            &[0; 32],
            &[0; 4],
            &[0; 8],
            &[],
            &[0; 16],
            &hex!("cea7403d4d606b6e074ec5d3baf39d18"),
            &hex!("d0d1c8a799996bf0265b98b5d48ab919"),
        );
    }

    /// GCM spec Appendix B, test case 15 (AES-256, 4 blocks, no AAD).
    #[test]
    fn gcm_spec_test_case_15() {
        let k: Vec<u8> = [K, K].concat();
        check(
            &k,
            &SALT,
            &IV,
            &[],
            &P,
            &hex!(
                "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
                "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad"
            ),
            &hex!("b094dac5d93471bdec1a502270e3cc6c"),
        );
    }

    /// GCM spec Appendix B, test case 16 (AES-256, 60 bytes, 20-byte AAD).
    #[test]
    fn gcm_spec_test_case_16() {
        let k: Vec<u8> = [K, K].concat();
        check(
            &k,
            &SALT,
            &IV,
            &A,
            &P[..60],
            &hex!(
                "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
                "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
            ),
            &hex!("76fc6ece0f4e1768cddf8853bb2d551b"),
        );
    }

    #[test]
    fn bad_tag_is_auth_failed_and_wrong_key_length_rejected() {
        assert!(matches!(
            AesGcm::new(&[0; 16]),
            Err(CryptoError::BadKeyLength)
        ));
        let g = AesGcm::new(&[7; 20]).unwrap();
        let mut buf = vec![1u8; 32];
        let tag = g.seal_with_iv(&[0; 8], b"aad", &mut buf).unwrap();
        buf.extend_from_slice(&tag);
        buf[40] ^= 1;
        assert_eq!(
            g.open_with_iv(&[0; 8], b"aad", &mut buf),
            Err(CryptoError::AuthFailed)
        );
    }

    proptest! {
        /// ring against RustCrypto `aes-gcm` (independent implementation)
        /// on random keys, IVs, AAD and plaintexts.
        #[test]
        fn ring_matches_rustcrypto(
            k256 in any::<bool>(),
            key in proptest::collection::vec(any::<u8>(), 32),
            salt in any::<[u8; 4]>(),
            iv in any::<[u8; 8]>(),
            aad in proptest::collection::vec(any::<u8>(), 0..24),
            p in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let key = if k256 { &key[..] } else { &key[..16] };
            let mut ks = key.to_vec();
            ks.extend_from_slice(&salt);
            let ours = AesGcm::new(&ks).unwrap();
            let mut a = p.clone();
            let tag = ours.seal_with_iv(&iv, &aad, &mut a).unwrap();

            let mut nonce = [0u8; 12];
            nonce[..4].copy_from_slice(&salt);
            nonce[4..].copy_from_slice(&iv);
            let mut b = p.clone();
            let t2 = if k256 {
                let c = aes_gcm::Aes256Gcm::new_from_slice(key).unwrap();
                c.encrypt_in_place_detached((&nonce).into(), &aad, &mut b).unwrap()
            } else {
                let c = aes_gcm::Aes128Gcm::new_from_slice(key).unwrap();
                c.encrypt_in_place_detached((&nonce).into(), &aad, &mut b).unwrap()
            };
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(&tag[..], t2.as_slice());
        }
    }
}
