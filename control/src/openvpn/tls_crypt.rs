//! `--tls-crypt`: the pre-shared static key that authenticates and
//! encrypts every control packet, so the TLS handshake is hidden and a
//! flood of forged packets is rejected by one HMAC before any state.
//!
//! Construction (OpenVPN's `tls_crypt.h` describes it; SIV-like):
//!
//! ```text
//! header = opcode/key_id || session_id || packet_id || net_time   (17 bytes, sent in clear)
//! tag    = HMAC-SHA256(Ka, header || plaintext)                    (32 bytes)
//! C      = AES-256-CTR(Ke, IV = tag[0..16], plaintext)
//! packet = header || tag || C
//! ```
//!
//! The key file (`-----BEGIN OpenVPN Static key V1-----`, 256 bytes in
//! hex) holds two "key" records of 64 cipher bytes and 64 HMAC bytes.
//! The server sends with record 0 and receives with record 1 (OpenVPN's
//! `KEY_DIRECTION_NORMAL`); a client the other way round. Of each record
//! AES-256 uses the first 32 cipher bytes and HMAC-SHA256 the first 32
//! HMAC bytes.
//!
//! Receiving checks the tag in constant time after decrypting (the IV is
//! the tag); nothing about the packet is believed before it verifies.

use aws_lc_rs::cipher::{
    AES_256, DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext, UnboundCipherKey,
};
use aws_lc_rs::iv::FixedLength;
use ring::hmac;
use zeroize::Zeroizing;

use super::wire::{CONTROL_HEADER_LEN, ControlHeader, WireError};

/// Bytes in an OpenVPN static key file.
pub const STATIC_KEY_LEN: usize = 256;
/// The HMAC-SHA256 tag.
pub const TAG_LEN: usize = 32;
/// Smallest wrapped packet: header, tag and the one-byte ack count.
pub const MIN_WRAPPED_LEN: usize = CONTROL_HEADER_LEN + TAG_LEN + 1;

const BEGIN: &str = "-----BEGIN OpenVPN Static key V1-----";
const END: &str = "-----END OpenVPN Static key V1-----";

/// Why a static key file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// No `-----BEGIN OpenVPN Static key V1-----` … `-----END …-----` block.
    #[error("no OpenVPN Static key V1 block")]
    NoBlock,
    /// A character in the block that is not a hex digit.
    #[error("non-hex character {0:?} in the static key")]
    NotHex(char),
    /// The block does not hold exactly 256 bytes.
    #[error("static key has {0} bytes, expected {STATIC_KEY_LEN}")]
    Length(usize),
}

/// Why a control packet was not accepted by tls-crypt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnwrapError {
    /// Shorter than header, tag and ack count, or not a control opcode.
    #[error("malformed tls-crypt packet: {0}")]
    Malformed(WireError),
    /// The HMAC does not verify: forged, corrupted or another key.
    #[error("tls-crypt authentication failed")]
    BadTag,
}

/// An OpenVPN static key (two directions of cipher and HMAC keys).
pub struct StaticKey {
    bytes: Zeroizing<[u8; STATIC_KEY_LEN]>,
}

impl std::fmt::Debug for StaticKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticKey(..)")
    }
}

impl StaticKey {
    /// A key from raw bytes (e.g. freshly generated).
    #[must_use]
    pub fn from_bytes(bytes: [u8; STATIC_KEY_LEN]) -> Self {
        Self {
            bytes: Zeroizing::new(bytes),
        }
    }

    /// Parses the text of a key file (`openvpn --genkey secret` output,
    /// or the body of an inline `<tls-crypt>` block). Lines outside the
    /// BEGIN/END block (the `#` comments) are ignored.
    ///
    /// # Errors
    /// [`KeyFileError`] naming what is wrong.
    pub fn parse(text: &str) -> Result<Self, KeyFileError> {
        let start = text.find(BEGIN).ok_or(KeyFileError::NoBlock)? + BEGIN.len();
        let len = text[start..].find(END).ok_or(KeyFileError::NoBlock)?;
        let mut bytes = Zeroizing::new([0u8; STATIC_KEY_LEN]);
        let mut n = 0usize;
        let mut high: Option<u8> = None;
        for c in text[start..start + len].chars() {
            if c.is_ascii_whitespace() {
                continue;
            }
            let v = c
                .to_digit(16)
                .and_then(|d| u8::try_from(d).ok())
                .ok_or(KeyFileError::NotHex(c))?;
            match high.take() {
                None => high = Some(v),
                Some(h) => {
                    if n < STATIC_KEY_LEN {
                        bytes[n] = (h << 4) | v;
                    }
                    n += 1;
                }
            }
        }
        if n != STATIC_KEY_LEN || high.is_some() {
            return Err(KeyFileError::Length(n));
        }
        Ok(Self { bytes })
    }

    /// The key in OpenVPN's file format (16 hex lines of 16 bytes).
    #[must_use]
    pub fn to_file_text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::from("#\n# 2048 bit OpenVPN static key\n#\n");
        s.push_str(BEGIN);
        s.push('\n');
        for line in self.bytes.chunks(16) {
            for b in line {
                let _ = write!(s, "{b:02x}");
            }
            s.push('\n');
        }
        s.push_str(END);
        s.push('\n');
        s
    }

    /// Record `i` (0 or 1): (cipher key, HMAC key) as used by tls-crypt.
    fn record(&self, i: usize) -> (&[u8], &[u8]) {
        let r = &self.bytes[i * 128..(i + 1) * 128];
        (&r[..32], &r[64..96])
    }
}

/// Which end of the control channel we are: decides the key direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The server (`--tls-server`): sends with key record 0.
    Server,
    /// The client: sends with key record 1.
    Client,
}

/// The tls-crypt transform for one role, built once from a [`StaticKey`].
pub struct TlsCrypt {
    enc: EncryptingKey,
    enc_mac: hmac::Key,
    dec: DecryptingKey,
    dec_mac: hmac::Key,
}

impl std::fmt::Debug for TlsCrypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsCrypt(..)")
    }
}

impl TlsCrypt {
    /// The transform for `role`.
    ///
    /// # Panics
    /// Never in practice: AES-256 keys of 32 bytes are always accepted.
    #[must_use]
    pub fn new(key: &StaticKey, role: Role) -> Self {
        let (out, inn) = match role {
            Role::Server => (0, 1),
            Role::Client => (1, 0),
        };
        let (oc, om) = key.record(out);
        let (ic, im) = key.record(inn);
        let aes = |k: &[u8]| UnboundCipherKey::new(&AES_256, k).expect("32-byte AES-256 key");
        Self {
            enc: EncryptingKey::ctr(aes(oc)).expect("AES-256-CTR"),
            enc_mac: hmac::Key::new(hmac::HMAC_SHA256, om),
            dec: DecryptingKey::ctr(aes(ic)).expect("AES-256-CTR"),
            dec_mac: hmac::Key::new(hmac::HMAC_SHA256, im),
        }
    }

    /// Wraps one control packet: `header` in clear, `body` (the emitted
    /// [`super::wire::ControlBody`]) authenticated and encrypted.
    #[must_use]
    pub fn wrap(&self, header: &ControlHeader, body: &[u8]) -> Vec<u8> {
        let h = header.emit();
        let mut ctx = hmac::Context::with_key(&self.enc_mac);
        ctx.update(&h);
        ctx.update(body);
        let tag = ctx.sign();
        let mut out = Vec::with_capacity(CONTROL_HEADER_LEN + TAG_LEN + body.len());
        out.extend_from_slice(&h);
        out.extend_from_slice(tag.as_ref());
        let start = out.len();
        out.extend_from_slice(body);
        let iv = iv_of(tag.as_ref());
        // CTR with a caller-given IV cannot fail for a 16-byte IV.
        let _ = self.enc.less_safe_encrypt(
            &mut out[start..],
            EncryptionContext::Iv128(FixedLength::from(iv)),
        );
        out
    }

    /// Authenticates and decrypts one control packet.
    ///
    /// # Errors
    /// [`UnwrapError::Malformed`] (too short, data opcode),
    /// [`UnwrapError::BadTag`] (authentication failed).
    pub fn unwrap(&self, packet: &[u8]) -> Result<(ControlHeader, Vec<u8>), UnwrapError> {
        let header = ControlHeader::parse(packet).map_err(UnwrapError::Malformed)?;
        if packet.len() < MIN_WRAPPED_LEN {
            return Err(UnwrapError::Malformed(WireError::Truncated(
                "tls-crypt tag",
            )));
        }
        let (head, rest) = packet.split_at(CONTROL_HEADER_LEN);
        let (tag, ct) = rest.split_at(TAG_LEN);
        let mut plain = ct.to_vec();
        let iv = iv_of(tag);
        self.dec
            .decrypt(&mut plain, DecryptionContext::Iv128(FixedLength::from(iv)))
            .map_err(|_| UnwrapError::BadTag)?;
        let mut ctx = hmac::Context::with_key(&self.dec_mac);
        ctx.update(head);
        ctx.update(&plain);
        let want = ctx.sign();
        if !bool::from(subtle::ConstantTimeEq::ct_eq(want.as_ref(), tag)) {
            return Err(UnwrapError::BadTag);
        }
        Ok((header, plain))
    }
}

fn iv_of(tag: &[u8]) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv.copy_from_slice(&tag[..16]);
    iv
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openvpn::wire::{ControlBody, Opcode, SessionId};

    pub(crate) fn test_key() -> StaticKey {
        let mut b = [0u8; STATIC_KEY_LEN];
        for (i, x) in b.iter_mut().enumerate() {
            *x = u8::try_from(i % 251).unwrap();
        }
        StaticKey::from_bytes(b)
    }

    fn header(op: Opcode) -> ControlHeader {
        ControlHeader {
            opcode: op,
            key_id: 0,
            session_id: SessionId([7; 8]),
            packet_id: 1,
            net_time: 1_700_000_000,
        }
    }

    #[test]
    fn key_file_round_trip_and_errors() {
        let k = test_key();
        let text = k.to_file_text();
        assert!(text.contains(BEGIN));
        let again = StaticKey::parse(&text).unwrap();
        assert_eq!(*again.bytes, *k.bytes);
        assert_eq!(
            StaticKey::parse("nothing").unwrap_err(),
            KeyFileError::NoBlock
        );
        let short = text.replacen("00010203", "", 1);
        assert_eq!(
            StaticKey::parse(&short).unwrap_err(),
            KeyFileError::Length(252)
        );
        let bad = text.replacen("0001", "00zz", 1);
        assert_eq!(
            StaticKey::parse(&bad).unwrap_err(),
            KeyFileError::NotHex('z')
        );
    }

    #[test]
    fn client_and_server_unwrap_each_other() {
        let k = test_key();
        let server = TlsCrypt::new(&k, Role::Server);
        let client = TlsCrypt::new(&k, Role::Client);
        let mut body = Vec::new();
        ControlBody {
            message_id: Some(0),
            payload: b"hello",
            ..ControlBody::default()
        }
        .emit(&mut body);
        let h = header(Opcode::HardResetClientV2);
        let pkt = client.wrap(&h, &body);
        assert_eq!(pkt.len(), CONTROL_HEADER_LEN + TAG_LEN + body.len());
        // The payload is not in clear.
        assert!(!pkt.windows(5).any(|w| w == b"hello"));
        let (h2, plain) = server.unwrap(&pkt).unwrap();
        assert_eq!(h2, h);
        assert_eq!(plain, body);
        // A client cannot read its own packets back (other direction's key),
        // nor the server its own.
        assert_eq!(client.unwrap(&pkt).unwrap_err(), UnwrapError::BadTag);
        let back = server.wrap(&header(Opcode::HardResetServerV2), &body);
        assert_eq!(server.unwrap(&back).unwrap_err(), UnwrapError::BadTag);
        assert_eq!(client.unwrap(&back).unwrap().1, body);
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let k = test_key();
        let server = TlsCrypt::new(&k, Role::Server);
        let client = TlsCrypt::new(&k, Role::Client);
        let pkt = client.wrap(&header(Opcode::ControlV1), &[0, 0, 0, 0, 1, 0x16]);
        for i in 1..pkt.len() {
            for bit in 0..8 {
                let mut p = pkt.clone();
                p[i] ^= 1 << bit;
                assert!(server.unwrap(&p).is_err(), "byte {i} bit {bit}");
            }
        }
        for n in 0..MIN_WRAPPED_LEN {
            assert!(matches!(
                server.unwrap(&pkt[..n.min(pkt.len())]),
                Err(UnwrapError::Malformed(_))
            ));
        }
    }
}
