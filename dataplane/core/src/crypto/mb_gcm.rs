//! AES-GCM-16 for ESP ([RFC 4106]) on intel-ipsec-mb's direct API.
//!
//! Same construction as [`super::AesGcm`] (nonce = salt || 64-bit
//! sequence number as the explicit IV, AAD per RFC 4106 § 5), different
//! engine. The expanded key (`gcm_key_data`, up to 1 KiB with the GHASH
//! powers of the VAES path) is one 64-byte aligned heap block owned by
//! [`ipsec_mb::GcmKey`], zeroised on drop; inline in the SA there are
//! only its pointer, the function pointers and the salt.
//!
//! [RFC 4106]: https://www.rfc-editor.org/rfc/rfc4106

use ipsec_mb::{Direct, GCM_IV_LEN, GcmKey};

use super::gcm::{ICV_LEN, IV_LEN, SALT_LEN, esp_open, esp_seal};
use super::{CryptoError, EspTransform};

/// AES-128/256-GCM-16 for one SA direction, on intel-ipsec-mb.
pub struct MbGcm {
    key: GcmKey,
    salt: [u8; SALT_LEN],
}

impl core::fmt::Debug for MbGcm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MbGcm")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Drop for MbGcm {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.salt);
    }
}

impl MbGcm {
    /// Builds the context from `key || salt` (20 or 36 bytes).
    ///
    /// # Errors
    /// [`CryptoError::BadKeyLength`] for any other length.
    pub fn new(api: &Direct, key_and_salt: &[u8]) -> Result<Self, CryptoError> {
        let key_len = match key_and_salt.len() {
            20 => 16,
            36 => 32,
            _ => return Err(CryptoError::BadKeyLength),
        };
        let (key, salt) = key_and_salt.split_at(key_len);
        let key = GcmKey::new(api, key).map_err(|_| CryptoError::KeySetup)?;
        let mut s = [0u8; SALT_LEN];
        s.copy_from_slice(salt);
        Ok(Self { key, salt: s })
    }

    #[inline]
    fn iv(&self, explicit: &[u8; IV_LEN]) -> [u8; GCM_IV_LEN] {
        let mut n = [0u8; GCM_IV_LEN];
        n[..SALT_LEN].copy_from_slice(&self.salt);
        n[SALT_LEN..].copy_from_slice(explicit);
        n
    }

    /// Raw RFC 4106 seal (as [`super::AesGcm::seal_with_iv`]).
    #[must_use]
    pub fn seal_with_iv(&self, iv: &[u8; IV_LEN], aad: &[u8], in_out: &mut [u8]) -> [u8; ICV_LEN] {
        self.key.seal(&self.iv(iv), aad, in_out)
    }

    /// Raw RFC 4106 open: `in_out` is ciphertext || 16-byte tag; the tag
    /// is compared in constant time, and on failure the ciphertext is left
    /// as it was.
    ///
    /// # Errors
    /// [`CryptoError::AuthFailed`], [`CryptoError::BadLength`] if `in_out`
    /// is shorter than the tag.
    pub fn open_with_iv(
        &self,
        iv: &[u8; IV_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<(), CryptoError> {
        let Some(body_len) = in_out.len().checked_sub(ICV_LEN) else {
            return Err(CryptoError::BadLength);
        };
        let (body, icv) = in_out.split_at_mut(body_len);
        let mut tag = [0u8; ICV_LEN];
        tag.copy_from_slice(icv);
        self.key
            .open(&self.iv(iv), aad, body, &tag)
            .map_err(|_| CryptoError::AuthFailed)
    }
}

impl EspTransform for MbGcm {
    fn iv_len(&self) -> usize {
        IV_LEN
    }
    fn icv_len(&self) -> usize {
        ICV_LEN
    }
    fn pad_align(&self) -> usize {
        4
    }

    #[inline]
    fn seal(&self, seq: u64, esn: bool, esp: &mut [u8]) -> Result<(), CryptoError> {
        esp_seal(seq, esn, esp, |iv, aad, body| {
            Ok(self.seal_with_iv(iv, aad, body))
        })
    }

    #[inline]
    fn open(&self, seq: u64, esn: bool, esp: &mut [u8]) -> Result<(), CryptoError> {
        esp_open(seq, esn, esp, |iv, aad, body_and_icv| {
            self.open_with_iv(iv, aad, body_and_icv)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::AesGcm;
    use super::*;
    use crate::crypto::{CryptoBackend, ESP_HEADER_LEN};
    use proptest::prelude::*;

    fn api() -> Direct {
        match CryptoBackend::ipsec_mb().unwrap() {
            CryptoBackend::IpsecMb(d) => d,
            CryptoBackend::Ring => unreachable!(),
        }
    }

    proptest! {
        /// Whole ESP packets sealed by both backends are byte-identical,
        /// and each opens the other's (ESN on and off, both key sizes,
        /// payload lengths aligned to 4 as ESP pads them, 0 included).
        #[test]
        fn esp_seal_identical_and_cross_open(
            k256 in any::<bool>(),
            key in proptest::collection::vec(any::<u8>(), 36),
            seq in any::<u64>(),
            esn in any::<bool>(),
            words in 0usize..400,
            fill in any::<u8>(),
        ) {
            let ks = if k256 { &key[..] } else { &key[..20] };
            let ring = AesGcm::new(ks).unwrap();
            let mb = MbGcm::new(&api(), ks).unwrap();
            let len = ESP_HEADER_LEN + IV_LEN + 4 * words + ICV_LEN;
            let mut a = vec![fill; len];
            a[..8].copy_from_slice(&[0, 0, 1, 0, 0, 0, 0, 7]);
            let mut b = a.clone();
            ring.seal(seq, esn, &mut a).unwrap();
            mb.seal(seq, esn, &mut b).unwrap();
            prop_assert_eq!(&a, &b);
            let plain_end = len - ICV_LEN;
            let mut a2 = a.clone();
            mb.open(seq, esn, &mut a2).unwrap();
            ring.open(seq, esn, &mut b).unwrap();
            prop_assert_eq!(&a2[..plain_end], &b[..plain_end]);
            prop_assert!(a2[ESP_HEADER_LEN + IV_LEN..plain_end].iter().all(|&x| x == fill));
            // A flipped bit anywhere authenticated is AuthFailed for both.
            let flip = usize::try_from(seq % (len as u64)).unwrap();
            let mut t = a.clone();
            t[flip] ^= 1;
            let before = t.clone();
            prop_assert_eq!(mb.open(seq, esn, &mut t), Err(CryptoError::AuthFailed));
            // ipsec-mb leaves the packet as it was on failure.
            prop_assert_eq!(&t, &before);
            prop_assert_eq!(ring.open(seq, esn, &mut t), Err(CryptoError::AuthFailed));
        }
    }
}
