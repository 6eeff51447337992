//! Pre-shared keys (spec §3.10, §5.1).
//!
//! Rule: 8 to 64 characters from `[A-Za-z0-9._]`, not starting with `0`.
//! A generated key is 32 alphanumeric characters.
//!
//! A key never appears in `Debug` output or in error messages; it is
//! serialized (it must be, to be stored in the configuration file) and can be
//! read with [`PreSharedKey::dangerous_as_str`]. It is wiped from memory
//! when dropped. Where it lives is the connection's
//! `pre_shared_key_storage`: in the configuration (`Standard`) or in the
//! encrypted store of [`super::secrets`] (`SecretsManager`), which is
//! preferred.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroize;

/// Shortest allowed key, in characters.
pub const PSK_MIN_LEN: usize = 8;
/// Longest allowed key, in characters.
pub const PSK_MAX_LEN: usize = 64;
/// Length of a generated key.
pub const PSK_GENERATED_LEN: usize = 32;

/// The rule in words, used in error messages.
pub(crate) const PSK_RULE: &str = "8..=64 characters from [A-Za-z0-9._], not starting with '0'";

const ALNUM: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const FIRST: &[u8; 61] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz123456789";

/// Why a string is not a valid pre-shared key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PskError {
    /// Fewer than 8 characters.
    #[error("pre-shared key is {len} characters long; allowed {PSK_MIN_LEN}..={PSK_MAX_LEN}")]
    TooShort {
        /// Length given.
        len: usize,
    },
    /// More than 64 characters.
    #[error("pre-shared key is {len} characters long; allowed {PSK_MIN_LEN}..={PSK_MAX_LEN}")]
    TooLong {
        /// Length given.
        len: usize,
    },
    /// Starts with `0`.
    #[error("pre-shared key starts with '0'; it must not")]
    LeadingZero,
    /// Contains a character outside `[A-Za-z0-9._]`.
    #[error("pre-shared key has a character outside [A-Za-z0-9._] at position {position}")]
    BadCharacter {
        /// Zero-based character position.
        position: usize,
    },
}

/// A tunnel's pre-shared key.
///
/// Deserialization keeps whatever string the file holds, so that
/// [`TunnelOptions::validate`](super::TunnelOptions::validate) can report a
/// bad key together with every other error; [`PreSharedKey::new`] checks the
/// rule up front.
#[derive(Clone, PartialEq, Eq)]
pub struct PreSharedKey(String);

impl PreSharedKey {
    /// A key checked against the rule.
    ///
    /// # Errors
    /// [`PskError`] naming the first rule the string breaks.
    pub fn new(key: impl Into<String>) -> Result<Self, PskError> {
        let key = Self(key.into());
        key.check()?;
        Ok(key)
    }

    /// Generate a 32-character alphanumeric key that does not start with `0`.
    ///
    /// `fill` supplies random bytes (inject the OS RNG in the daemon, a
    /// seeded generator in tests). Characters are drawn by rejection sampling
    /// so every character is equally likely. Should `fill` keep returning
    /// bytes that are rejected (a broken generator), a character is taken
    /// modulo the alphabet after 64 tries rather than looping forever; the
    /// result is still a valid key.
    pub fn generate(fill: &mut dyn FnMut(&mut [u8])) -> Self {
        let mut out = String::with_capacity(PSK_GENERATED_LEN);
        for i in 0..PSK_GENERATED_LEN {
            // The first character must not be '0': draw it from the 61 others.
            let alphabet: &[u8] = if i == 0 { FIRST } else { ALNUM };
            let pick = |b: u8| alphabet[usize::from(b) % alphabet.len()];
            let limit = 256 - (256 % alphabet.len());
            let mut byte = [0u8; 1];
            let mut chosen = None;
            for _ in 0..64 {
                fill(&mut byte);
                if usize::from(byte[0]) < limit {
                    chosen = Some(pick(byte[0]));
                    break;
                }
            }
            let c = chosen.unwrap_or_else(|| pick(byte[0]));
            out.push(char::from(c));
        }
        Self(out)
    }

    /// The key itself.
    ///
    /// Named `dangerous_` because the result is secret: do not log it.
    #[must_use]
    pub fn dangerous_as_str(&self) -> &str {
        &self.0
    }

    /// Check the key against the rule.
    ///
    /// # Errors
    /// [`PskError`] naming the first rule the key breaks.
    pub fn check(&self) -> Result<(), PskError> {
        let len = self.0.chars().count();
        if len < PSK_MIN_LEN {
            return Err(PskError::TooShort { len });
        }
        if len > PSK_MAX_LEN {
            return Err(PskError::TooLong { len });
        }
        if self.0.starts_with('0') {
            return Err(PskError::LeadingZero);
        }
        if let Some(position) = self
            .0
            .chars()
            .position(|c| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
        {
            return Err(PskError::BadCharacter { position });
        }
        Ok(())
    }
}

impl Drop for PreSharedKey {
    /// A key is wiped from memory when dropped.
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for PreSharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PreSharedKey(<redacted>)")
    }
}

impl Serialize for PreSharedKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PreSharedKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: deterministic bytes for tests.
    pub(crate) fn test_rng(seed: u64) -> impl FnMut(&mut [u8]) {
        let mut state = seed | 1;
        move |buf: &mut [u8]| {
            for b in buf {
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                *b = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_be_bytes()[0];
            }
        }
    }

    #[test]
    fn rule_cases() {
        assert_eq!(
            PreSharedKey::new("abc.1_Z").unwrap_err(),
            PskError::TooShort { len: 7 }
        );
        assert!(PreSharedKey::new("abcd.1_Z").is_ok());
        assert!(PreSharedKey::new("a".repeat(64)).is_ok());
        assert_eq!(
            PreSharedKey::new("a".repeat(65)).unwrap_err(),
            PskError::TooLong { len: 65 }
        );
        assert_eq!(
            PreSharedKey::new("0abcdefgh").unwrap_err(),
            PskError::LeadingZero
        );
        assert!(PreSharedKey::new("1abcdefgh0").is_ok());
        assert_eq!(
            PreSharedKey::new("abcd-efgh").unwrap_err(),
            PskError::BadCharacter { position: 4 }
        );
        assert_eq!(
            PreSharedKey::new("abcdéfgh").unwrap_err(),
            PskError::BadCharacter { position: 4 }
        );
        assert_eq!(
            PreSharedKey::new("abcd efgh").unwrap_err(),
            PskError::BadCharacter { position: 4 }
        );
        assert!(PreSharedKey::new("._._._._").is_ok());
    }

    #[test]
    fn generated_keys_are_valid_and_deterministic() {
        for seed in 0..2000 {
            let k = PreSharedKey::generate(&mut test_rng(seed));
            k.check().unwrap();
            assert_eq!(k.dangerous_as_str().len(), PSK_GENERATED_LEN);
            assert!(
                k.dangerous_as_str()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric())
            );
            assert_eq!(k, PreSharedKey::generate(&mut test_rng(seed)));
        }
        // Degenerate generators still give valid keys and terminate.
        PreSharedKey::generate(&mut |b: &mut [u8]| b.fill(0))
            .check()
            .unwrap();
        PreSharedKey::generate(&mut |b: &mut [u8]| b.fill(0xff))
            .check()
            .unwrap();
        PreSharedKey::generate(&mut |b: &mut [u8]| b.fill(52))
            .check()
            .unwrap();
    }

    #[test]
    fn debug_is_redacted() {
        let k = PreSharedKey::new("secretkey").unwrap();
        assert!(!format!("{k:?}").contains("secret"));
    }
}
