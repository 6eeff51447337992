//! Encoding and decoding of envelopes, one JSON object per line.
//!
//! Decoding never panics on any input and always yields the request id when
//! the input is a JSON object with an integer `id`, so the error reply can
//! name the request it answers.

use super::{
    ApiError, ErrorCode, PROTOCOL_VERSION, ReplyEnvelope, Request, RequestEnvelope, Response,
};

/// Largest message (one line, without its `\n`) accepted.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// A request that could not be decoded, with the id if one was readable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("request {id:?}: {error}")]
pub struct DecodeError {
    /// The request's id, when it could be read.
    pub id: Option<u64>,
    /// The error reply to send.
    pub error: ApiError,
}

/// Decode one request line (without its newline).
///
/// # Errors
/// `too_large`, `bad_request` (not UTF-8, not JSON, not an envelope,
/// unknown request type or field) or `unsupported_version`, with the id when
/// readable.
pub fn decode_request(line: &[u8]) -> Result<RequestEnvelope, DecodeError> {
    if line.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError {
            id: None,
            error: ApiError::new(
                ErrorCode::TooLarge,
                format!(
                    "message of {} bytes exceeds the limit of {MAX_MESSAGE_BYTES} bytes",
                    line.len()
                ),
            ),
        });
    }
    let bad = |id, msg: String| DecodeError {
        id,
        error: ApiError::new(ErrorCode::BadRequest, msg),
    };
    let value: serde_json::Value = serde_json::from_slice(line)
        .map_err(|e| bad(None, format!("not a JSON message: {}", bounded_serde(&e))))?;
    let Some(obj) = value.as_object() else {
        return Err(bad(None, "a message must be a JSON object".to_owned()));
    };
    let id = match envelope_u64(obj, "id") {
        Ok(Some(id)) => Some(id),
        Ok(None) => {
            return Err(bad(
                None,
                "envelope: \"id\" (unsigned integer) is missing".to_owned(),
            ));
        }
        Err(e) => return Err(bad(None, e)),
    };
    match envelope_u64(obj, "version") {
        Ok(Some(v)) if v == u64::from(PROTOCOL_VERSION) => {}
        Ok(Some(v)) => {
            return Err(DecodeError {
                id,
                error: ApiError::new(
                    ErrorCode::UnsupportedVersion,
                    format!(
                        "protocol version {v} is not supported; this daemon speaks version {PROTOCOL_VERSION}"
                    ),
                ),
            });
        }
        Ok(None) => {
            return Err(bad(
                id,
                "envelope: \"version\" (unsigned integer) is missing".to_owned(),
            ));
        }
        Err(e) => return Err(bad(id, e)),
    }
    serde_json::from_value::<RequestEnvelope>(value)
        .map_err(|e| bad(id, format!("invalid request: {}", bounded_serde(&e))))
}

/// Longest error message a request gets: serde's text with every quoted
/// part of the input bounded, then the whole bounded again.
pub const MAX_ERROR_CHARS: usize = 2048;

/// serde's message with what it quotes of the input bounded
/// ([`crate::config::bounded_quoted`]), the whole below [`MAX_ERROR_CHARS`].
fn bounded_serde(e: &serde_json::Error) -> String {
    crate::config::bounded_quoted(&e.to_string(), MAX_ERROR_CHARS - 100)
}

/// An envelope field that must be an unsigned 64-bit integer: `Ok(None)`
/// when absent, an error that says what was sent instead otherwise.
fn envelope_u64(
    obj: &serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<Option<u64>, String> {
    let Some(v) = obj.get(key) else {
        return Ok(None);
    };
    v.as_u64().map(Some).ok_or_else(|| {
        let what = match v {
            serde_json::Value::Number(n) if n.is_i64() => "a negative number",
            serde_json::Value::Number(n) if n.is_f64() => {
                "a number that is not an integer below 2^64"
            }
            serde_json::Value::String(_) => "a string",
            serde_json::Value::Bool(_) => "a boolean",
            serde_json::Value::Null => "null",
            serde_json::Value::Array(_) => "an array",
            _ => "an object",
        };
        let sent = crate::config::bounded(v.to_string(), 64);
        format!("envelope: \"{key}\" must be an unsigned 64-bit integer; got {what}: {sent}")
    })
}

/// Encode a request as one line, with its `\n`.
///
/// # Errors
/// Only if serialisation fails, which these types never do.
pub fn encode_request(envelope: &RequestEnvelope) -> Result<Vec<u8>, serde_json::Error> {
    let mut v = serde_json::to_vec(envelope)?;
    v.push(b'\n');
    Ok(v)
}

/// Encode a reply as one line, with its `\n`.
#[must_use]
pub fn encode_reply(id: Option<u64>, result: Result<Response, ApiError>) -> Vec<u8> {
    let envelope = ReplyEnvelope::new(id, result);
    let mut v = serde_json::to_vec(&envelope).unwrap_or_else(|e| {
        // Unreachable with these types; still answer with a valid line.
        let fallback = ReplyEnvelope::new(
            id,
            Err(ApiError::new(
                ErrorCode::Internal,
                format!("cannot encode reply: {e}"),
            )),
        );
        serde_json::to_vec(&fallback).unwrap_or_default()
    });
    v.push(b'\n');
    v
}

/// Decode one reply line (without its newline).
///
/// # Errors
/// If the line is not a reply envelope.
pub fn decode_response(line: &[u8]) -> Result<ReplyEnvelope, serde_json::Error> {
    serde_json::from_slice(line)
}

/// Convenience for clients: build a request envelope.
#[must_use]
pub fn envelope(id: u64, request: Request) -> RequestEnvelope {
    RequestEnvelope {
        version: PROTOCOL_VERSION,
        id,
        request,
    }
}
