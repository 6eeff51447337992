//! IKEv2 message fragmentation ([RFC 7383]): splitting a protected
//! message into SKF fragments that each fit the path, and reassembling the
//! peer's fragments with bounds.
//!
//! Both sides announce IKEV2_FRAGMENTATION_SUPPORTED in IKE_SA_INIT; only
//! then are messages after IKE_SA_INIT fragmented, and only when the
//! whole message would exceed the configured datagram size (1280 bytes of
//! IP datagram by default, like strongSwan's `charon.fragment_size`).
//!
//! # Reassembly rules (RFC 7383 § 2.6)
//!
//! 1. Each fragment is authenticated and decrypted on its own before it is
//!    kept (the caller opens it; [`Reassembly::add`] takes the plaintext).
//! 2. Fragment Number must be 1..=Total Fragments; Total Fragments at most
//!    [`MAX_FRAGMENTS`]; only fragment 1 names the first inner payload.
//! 3. A fragment of a newer message, or one with a larger Total Fragments
//!    for the same message (the sender re-fragmented a retransmission),
//!    replaces what was collected; a smaller Total Fragments is dropped.
//! 4. At most [`MAX_REASSEMBLED_BYTES`] of plaintext are kept; an
//!    incomplete message older than [`REASSEMBLY_TIMEOUT`] is discarded
//!    when the next fragment arrives.
//!
//! [RFC 7383]: https://www.rfc-editor.org/rfc/rfc7383

use std::time::{Duration, Instant};

use super::crypto::{SkError, SkKeys};
use super::wire::{HEADER_LEN, Header, PayloadType};

/// Default largest IP datagram an IKE fragment may fill (strongSwan's
/// `charon.fragment_size` default; also the IPv6 minimum MTU).
pub const DEFAULT_FRAGMENT_SIZE: usize = 1280;
/// Most fragments per message we send or accept.
pub const MAX_FRAGMENTS: u16 = 64;
/// Most plaintext bytes one reassembled message may hold.
pub const MAX_REASSEMBLED_BYTES: usize = 64 * 1024;
/// Incomplete messages older than this are discarded.
pub const REASSEMBLY_TIMEOUT: Duration = Duration::from_secs(30);

const IPV4_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const UDP_HEADER: usize = 8;
const NON_ESP_MARKER: usize = 4;

/// Fragmentation settings of a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentConfig {
    /// Announce IKEV2_FRAGMENTATION_SUPPORTED and fragment large messages.
    pub enabled: bool,
    /// Largest IP datagram (IP + UDP headers included) a fragment fills.
    pub max_datagram: usize,
}

impl Default for FragmentConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_datagram: DEFAULT_FRAGMENT_SIZE,
        }
    }
}

impl FragmentConfig {
    /// Largest IKE message (header included) that fits one datagram.
    #[must_use]
    pub fn max_message(&self, ipv6: bool, nat_t: bool) -> usize {
        let ip = if ipv6 { IPV6_HEADER } else { IPV4_HEADER };
        let marker = if nat_t { NON_ESP_MARKER } else { 0 };
        self.max_datagram
            .saturating_sub(ip + UDP_HEADER + marker)
            .max(HEADER_LEN + 64)
    }
}

/// Splits the inner payload bytes of a message into SKF fragment messages
/// of at most `max_message` bytes each. `iv` is called once per fragment
/// for fresh IV bytes (at least 16).
///
/// # Errors
/// [`SkError::Length`] if the message would need more than
/// [`MAX_FRAGMENTS`] fragments or nothing fits; [`SkError::Key`] from the
/// cipher.
pub fn fragment(
    keys: &SkKeys,
    header: &Header,
    first: PayloadType,
    inner: &[u8],
    max_message: usize,
    iv: &mut dyn FnMut() -> Vec<u8>,
) -> Result<Vec<Vec<u8>>, SkError> {
    let chunk = keys.max_fragment_plain(max_message.saturating_sub(HEADER_LEN));
    if chunk == 0 {
        return Err(SkError::Length);
    }
    let count = inner.len().div_ceil(chunk).max(1);
    let total = u16::try_from(count)
        .ok()
        .filter(|t| *t <= MAX_FRAGMENTS)
        .ok_or(SkError::Length)?;
    let mut out = Vec::with_capacity(count);
    let pieces: Vec<&[u8]> = if inner.is_empty() {
        vec![inner]
    } else {
        inner.chunks(chunk).collect()
    };
    for (i, piece) in pieces.into_iter().enumerate() {
        let number = u16::try_from(i + 1).map_err(|_| SkError::Length)?;
        let f = if number == 1 {
            first
        } else {
            PayloadType::None
        };
        out.push(keys.seal_fragment(header, f, number, total, piece, &iv())?);
    }
    Ok(out)
}

/// What [`Reassembly::add`] made of a fragment.
#[derive(Debug, PartialEq, Eq)]
pub enum FragOutcome {
    /// Kept; more fragments are needed.
    Incomplete,
    /// The message is whole: its first inner payload type and the inner
    /// payload bytes.
    Complete(PayloadType, Vec<u8>),
    /// A fragment already held (a retransmission): ignored.
    Duplicate,
    /// Not kept, and why (for the log).
    Dropped(&'static str),
}

/// The fragments of one message being collected.
#[derive(Debug, Default)]
pub struct Reassembly {
    current: Option<Partial>,
}

#[derive(Debug)]
struct Partial {
    message_id: u32,
    response: bool,
    total: u16,
    first: PayloadType,
    parts: Vec<Option<Vec<u8>>>,
    bytes: usize,
    started: Instant,
}

impl Reassembly {
    /// Adds the decrypted, authenticated fragment `number` of `total` of
    /// the message `(message_id, response)`.
    #[allow(
        clippy::too_many_arguments,
        reason = "the message's key and the SKF header fields"
    )]
    pub fn add(
        &mut self,
        now: Instant,
        message_id: u32,
        response: bool,
        number: u16,
        total: u16,
        first: PayloadType,
        plain: Vec<u8>,
    ) -> FragOutcome {
        if total == 0 || number == 0 || number > total {
            return FragOutcome::Dropped("fragment number outside 1..=total");
        }
        if total > MAX_FRAGMENTS {
            return FragOutcome::Dropped("more fragments than allowed");
        }
        if number == 1 && first == PayloadType::None {
            return FragOutcome::Dropped("first fragment without a next payload");
        }
        if let Some(p) = &self.current
            && now.saturating_duration_since(p.started) > REASSEMBLY_TIMEOUT
        {
            self.current = None;
        }
        let same = self
            .current
            .as_ref()
            .is_some_and(|p| p.message_id == message_id && p.response == response);
        match &self.current {
            Some(p) if same && total < p.total => {
                return FragOutcome::Dropped("fewer total fragments than collected");
            }
            Some(p) if same && total == p.total => {}
            _ => {
                self.current = Some(Partial {
                    message_id,
                    response,
                    total,
                    first: PayloadType::None,
                    parts: vec![None; usize::from(total)],
                    bytes: 0,
                    started: now,
                });
            }
        }
        let Some(p) = self.current.as_mut() else {
            return FragOutcome::Dropped("no reassembly");
        };
        let slot = usize::from(number - 1);
        if p.parts[slot].is_some() {
            return FragOutcome::Duplicate;
        }
        if p.bytes + plain.len() > MAX_REASSEMBLED_BYTES {
            self.current = None;
            return FragOutcome::Dropped("reassembled message too large");
        }
        if number == 1 {
            p.first = first;
        }
        p.bytes += plain.len();
        p.parts[slot] = Some(plain);
        if p.parts.iter().any(Option::is_none) {
            return FragOutcome::Incomplete;
        }
        let Some(p) = self.current.take() else {
            return FragOutcome::Dropped("no reassembly");
        };
        let mut whole = Vec::with_capacity(p.bytes);
        for part in p.parts.into_iter().flatten() {
            whole.extend_from_slice(&part);
        }
        FragOutcome::Complete(p.first, whole)
    }

    /// Whether a message is being collected.
    #[must_use]
    pub fn is_collecting(&self) -> bool {
        self.current.is_some()
    }
}

/// Splits a buffer of back-to-back IKE messages (a fragmented message as
/// stored for retransmission) into the messages, by their header length
/// fields. A buffer holding one message yields it unchanged.
#[must_use]
pub fn split_messages(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= HEADER_LEN {
        let len = u32::from_be_bytes([rest[24], rest[25], rest[26], rest[27]]);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len < HEADER_LEN || len > rest.len() {
            break;
        }
        let (m, r) = rest.split_at(len);
        out.push(m);
        rest = r;
    }
    if out.is_empty() || !rest.is_empty() {
        // Not a clean sequence: send it as it is.
        return vec![bytes];
    }
    out
}

#[cfg(test)]
#[path = "frag_tests.rs"]
mod tests;
