//! Key method 2: the first plaintext each side writes into the TLS
//! session, and the client's peer info (`IV_*` variables).
//!
//! ```text
//! u32 0 | u8 2 (key method) | key source | options string |
//!   [username string | password string | [peer-info string]]
//! key source: client pre_master 48, random1 32, random2 32; server random1 32, random2 32
//! string:     u16 length including the NUL (0 = empty, no bytes), bytes, NUL
//! ```
//!
//! With TLS-EKM key derivation the key source is exchanged but does not
//! feed the data keys. The options strings are compared by OpenVPN only
//! to warn; we log the client's and send ours.

use zeroize::Zeroizing;

use super::wire::{Reader, WireError};

/// `IV_PROTO` bit: the peer understands P_DATA_V2.
pub const IV_PROTO_DATA_V2: u32 = 1 << 1;
/// `IV_PROTO` bit: the client sends PUSH_REQUEST at once.
pub const IV_PROTO_REQUEST_PUSH: u32 = 1 << 2;
/// `IV_PROTO` bit: TLS-EKM data key derivation (`key-derivation tls-ekm`).
pub const IV_PROTO_TLS_KEY_EXPORT: u32 = 1 << 3;
/// `IV_PROTO` bit: explicit-exit-notify over the control channel (`EXIT`).
pub const IV_PROTO_CC_EXIT_NOTIFY: u32 = 1 << 7;

/// Longest string accepted (OpenVPN's `TLS_OPTIONS_LEN` is 2048).
pub const MAX_STRING: usize = 2048;

/// Why a key-method-2 message is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyMethodError {
    /// More bytes are needed (the message spans TLS records).
    #[error("incomplete key method message")]
    Incomplete,
    /// Not key method 2 (method 1 is gone since OpenVPN 2.5).
    #[error("unsupported key method {0}")]
    Method(u8),
    /// The leading u32 is not zero.
    #[error("key method message does not start with a zero word")]
    NotZero,
    /// A string without its NUL, too long, or not UTF-8.
    #[error("bad string in key method message: {0}")]
    BadString(&'static str),
}

/// The client's key-method-2 message.
pub struct ClientKeyMethod2 {
    /// The client's key source (unused for keys under TLS-EKM).
    pub key_source: Zeroizing<[u8; 112]>,
    /// The client's options string (`V4,dev-type tun,...,tls-client`).
    pub options: String,
    /// Username (empty without `auth-user-pass`).
    pub username: String,
    /// Password, zeroised on drop.
    pub password: Zeroizing<String>,
    /// The peer info variables.
    pub peer_info: PeerInfo,
}

impl std::fmt::Debug for ClientKeyMethod2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKeyMethod2")
            .field("options", &self.options)
            .field("username", &self.username)
            .field("peer_info", &self.peer_info)
            .finish_non_exhaustive()
    }
}

fn string(r: &mut Reader<'_>, what: &'static str) -> Result<String, KeyMethodError> {
    let len = usize::from(r.u16(what).map_err(|_| KeyMethodError::Incomplete)?);
    if len == 0 {
        return Ok(String::new());
    }
    if len > MAX_STRING {
        return Err(KeyMethodError::BadString(what));
    }
    let b = r.take(len, what).map_err(|_| KeyMethodError::Incomplete)?;
    let (&last, body) = b.split_last().ok_or(KeyMethodError::BadString(what))?;
    if last != 0 {
        return Err(KeyMethodError::BadString(what));
    }
    // Everything after an embedded NUL is ignored, as C would.
    let body = body.split(|&c| c == 0).next().unwrap_or(&[]);
    String::from_utf8(body.to_vec()).map_err(|_| KeyMethodError::BadString(what))
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    if s.is_empty() {
        out.extend_from_slice(&[0, 0]);
        return;
    }
    let len = u16::try_from(s.len() + 1).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..usize::from(len) - 1]);
    out.push(0);
}

impl ClientKeyMethod2 {
    /// Parses the client's message from the start of `buf`; returns it and
    /// the bytes it used.
    ///
    /// # Errors
    /// [`KeyMethodError::Incomplete`] when `buf` ends early (wait for
    /// more plaintext); otherwise the message is malformed.
    pub fn parse(buf: &[u8]) -> Result<(Self, usize), KeyMethodError> {
        let mut r = Reader::new(buf);
        let inc = |_: WireError| KeyMethodError::Incomplete;
        if r.u32("zero").map_err(inc)? != 0 {
            return Err(KeyMethodError::NotZero);
        }
        let method = r.u8("key method").map_err(inc)?;
        if method & 0x0f != 2 {
            return Err(KeyMethodError::Method(method));
        }
        let mut key_source = Zeroizing::new([0u8; 112]);
        key_source.copy_from_slice(r.take(112, "key source").map_err(inc)?);
        let options = string(&mut r, "options")?;
        // The rest is optional: a message may end after the options.
        let (username, password, peer_info) = if r.left() == 0 {
            (String::new(), Zeroizing::new(String::new()), String::new())
        } else {
            let u = string(&mut r, "username")?;
            let p = Zeroizing::new(string(&mut r, "password")?);
            let i = if r.left() == 0 {
                String::new()
            } else {
                string(&mut r, "peer info")?
            };
            (u, p, i)
        };
        let used = buf.len() - r.left();
        Ok((
            Self {
                key_source,
                options,
                username,
                password,
                peer_info: PeerInfo::parse(&peer_info),
            },
            used,
        ))
    }

    /// Emits a client message (tests and tools).
    #[must_use]
    pub fn emit(&self) -> Vec<u8> {
        let mut out = vec![0, 0, 0, 0, 2];
        out.extend_from_slice(&self.key_source[..]);
        put_string(&mut out, &self.options);
        put_string(&mut out, &self.username);
        put_string(&mut out, &self.password);
        put_string(&mut out, &self.peer_info.raw);
        out
    }
}

/// The server's key-method-2 message: zero word, method, 64 random bytes,
/// our options string, empty username, password and peer info (what
/// OpenVPN's own server writes).
#[must_use]
pub fn server_message(random: &[u8; 64], options: &str) -> Vec<u8> {
    let mut out = vec![0, 0, 0, 0, 2];
    out.extend_from_slice(random);
    put_string(&mut out, options);
    put_string(&mut out, "");
    put_string(&mut out, "");
    put_string(&mut out, "");
    out
}

/// Our options string, as OpenVPN 2.6 builds it for a tun server with
/// tls-crypt (`options_string()`); the client only warns on differences.
#[must_use]
pub fn server_options(proto_tcp: bool) -> String {
    format!(
        "V4,dev-type tun,link-mtu 1550,tun-mtu 1500,proto {},cipher AES-256-GCM,auth [null-digest],keysize 256,key-method 2,tls-server",
        if proto_tcp { "TCPv4_SERVER" } else { "UDPv4" }
    )
}

/// The `IV_*` variables a client sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// The raw `KEY=value` lines.
    pub raw: String,
    /// `IV_VER`.
    pub version: Option<String>,
    /// `IV_PLAT`.
    pub platform: Option<String>,
    /// `IV_PROTO` bits (0 when absent).
    pub proto: u32,
    /// `IV_CIPHERS`, split on `:`.
    pub ciphers: Vec<String>,
}

impl PeerInfo {
    /// Parses newline-separated `KEY=value` lines; unknown keys are kept
    /// only in `raw`.
    #[must_use]
    pub fn parse(raw: &str) -> Self {
        let mut p = Self {
            raw: raw.to_owned(),
            ..Self::default()
        };
        for line in raw.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k {
                "IV_VER" => p.version = Some(v.to_owned()),
                "IV_PLAT" => p.platform = Some(v.to_owned()),
                "IV_PROTO" => p.proto = v.trim().parse().unwrap_or(0),
                "IV_CIPHERS" => p.ciphers = v.split(':').map(str::to_owned).collect(),
                _ => {}
            }
        }
        p
    }

    /// Whether every bit of `bits` is set in `IV_PROTO`.
    #[must_use]
    pub fn has(&self, bits: u32) -> bool {
        self.proto & bits == bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_msg() -> ClientKeyMethod2 {
        ClientKeyMethod2 {
            key_source: Zeroizing::new([0x11; 112]),
            options: "V4,dev-type tun,tls-client".into(),
            username: String::new(),
            password: Zeroizing::new(String::new()),
            peer_info: PeerInfo::parse(
                "IV_VER=2.6.14\nIV_PLAT=linux\nIV_PROTO=990\nIV_CIPHERS=AES-256-GCM:AES-128-GCM\n",
            ),
        }
    }

    #[test]
    fn client_message_round_trip_and_every_prefix_is_incomplete() {
        let bytes = client_msg().emit();
        let (m, used) = ClientKeyMethod2::parse(&bytes).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(m.options, "V4,dev-type tun,tls-client");
        assert_eq!(m.peer_info.version.as_deref(), Some("2.6.14"));
        assert_eq!(m.peer_info.proto, 990);
        assert!(m.peer_info.has(IV_PROTO_TLS_KEY_EXPORT | IV_PROTO_DATA_V2));
        assert_eq!(m.peer_info.ciphers, vec!["AES-256-GCM", "AES-128-GCM"]);
        // Every cut before the options string ends is "incomplete"; cuts
        // inside the optional tail parse to less or say incomplete.
        let opts_end = 5 + 112 + 2 + m.options.len() + 1;
        for n in 0..opts_end {
            assert!(matches!(
                ClientKeyMethod2::parse(&bytes[..n]),
                Err(KeyMethodError::Incomplete)
            ));
        }
        for n in opts_end..bytes.len() {
            let _ = ClientKeyMethod2::parse(&bytes[..n]);
        }
    }

    #[test]
    fn malformed_messages() {
        let mut b = client_msg().emit();
        b[4] = 1;
        assert_eq!(
            ClientKeyMethod2::parse(&b).unwrap_err(),
            KeyMethodError::Method(1)
        );
        let mut b = client_msg().emit();
        b[0] = 1;
        assert_eq!(
            ClientKeyMethod2::parse(&b).unwrap_err(),
            KeyMethodError::NotZero
        );
        let mut b = client_msg().emit();
        let nul = 5 + 112 + 2 + 26;
        b[nul] = b'x';
        assert_eq!(
            ClientKeyMethod2::parse(&b).unwrap_err(),
            KeyMethodError::BadString("options")
        );
    }

    #[test]
    fn server_message_layout() {
        let m = server_message(&[7; 64], "V4,x");
        assert_eq!(&m[..5], &[0, 0, 0, 0, 2]);
        assert_eq!(&m[5..69], &[7; 64]);
        assert_eq!(&m[69..71], &[0, 5]);
        assert_eq!(&m[71..76], b"V4,x\0");
        assert_eq!(&m[76..], &[0, 0, 0, 0, 0, 0]);
        assert!(server_options(false).ends_with("tls-server"));
    }
}
