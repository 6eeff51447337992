//! Tunnel logs: the two record kinds of the requirements (tunnel activity
//! and tunnel BGP, spec `site-to-site-vpn.md` §20.3–§20.5), their `json` and
//! `text` renderings, the message texts of the spec's catalogue, and a
//! bounded in-memory ring of recent entries that `vpnctl logs` reads.
//!
//! Layer: pure control-plane logic. Nothing here reads the clock: every
//! record is built with the event time passed in (milliseconds since the
//! Unix epoch). Nothing here writes to a file or a socket; the daemon decides
//! where rendered lines go.
//!
//! Choices the spec leaves open:
//!
//! * `dpd_enabled` and `nat_t_detected` are JSON booleans in `json` and
//!   `True`/`False` in `text` (the spec's table writes `True` / `False`).
//! * No activity-log example exists in the spec; its JSON record carries the
//!   BGP record's `resource_id` too, so both kinds can be filtered alike.
//! * The message texts keep the spec's wording, including its "AWS" prefix,
//!   so existing log parsers and runbooks keep working.
//!
//! Where records go: every record enters the [`LogRing`] (`vpnctl logs`),
//! whatever the tunnel's options say. A record reaches the daemon's log
//! outputs (stderr or journald, the log file) only when its stream is
//! enabled in the tunnel's `log` options, rendered in that stream's format
//! ([`output_line`]), as a `tracing` event on [`ACTIVITY_TARGET`] or
//! [`BGP_TARGET`] whose message is the whole line (the daemon writes it
//! as is, not wrapped in its own line format).

use std::collections::VecDeque;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::config::{LogFormat, TunnelLogOptions};

/// `tracing` target of tunnel activity records in the daemon's outputs.
pub const ACTIVITY_TARGET: &str = "vpn::tunnel::activity";
/// `tracing` target of tunnel BGP records in the daemon's outputs.
pub const BGP_TARGET: &str = "vpn::tunnel::bgp";

/// IKE phase 1 / phase 2 state as the logs name it (spec §20.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum IkePhaseState {
    /// SA established.
    Established,
    /// SA being rekeyed.
    Rekeying,
    /// Negotiation in progress.
    Negotiating,
    /// No SA.
    #[default]
    Down,
}

impl IkePhaseState {
    /// The spelling used in the logs and the CLI.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Established => "Established",
            Self::Rekeying => "Rekeying",
            Self::Negotiating => "Negotiating",
            Self::Down => "Down",
        }
    }
}

/// `<connection-id>_<tunnel-outside-ip>` (spec §20.3, e.g.
/// `vpn-1234abcd_1.2.3.4`).
#[must_use]
pub fn resource_id(connection_id: &str, tunnel_outside_ip: &str) -> String {
    format!("{connection_id}_{tunnel_outside_ip}")
}

/// One tunnel activity record (spec §20.3: IKE, IPsec and DPD events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelActivityLog {
    /// `<connection-id>_<tunnel-outside-ip>`.
    pub resource_id: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub event_timestamp: u64,
    /// Creation time, readable UTC (`2025-11-08 05:40:29.641Z`).
    pub timestamp: String,
    /// Dead peer detection enabled.
    pub dpd_enabled: bool,
    /// NAT-T detected on the customer gateway.
    pub nat_t_detected: bool,
    /// IKE phase 1 state.
    pub ike_phase1_state: IkePhaseState,
    /// IKE phase 2 state.
    pub ike_phase2_state: IkePhaseState,
    /// The message (see the `msg_*` functions).
    pub details: String,
}

/// BGP record type (spec §20.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BgpLogType {
    /// Session state.
    #[serde(rename = "BGPStatus")]
    BgpStatus,
    /// Route from the peer.
    RouteStatus,
}

/// BGP record status (spec §20.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum BgpLogStatus {
    /// BGPStatus: session Established.
    Up,
    /// BGPStatus: any other session state.
    Down,
    /// RouteStatus: route advertised by the peer.
    Advertised,
    /// RouteStatus: existing route updated by the peer.
    Updated,
    /// RouteStatus: route withdrawn by the peer.
    Withdrawn,
}

/// The `message` object of a BGP record; route fields only for
/// `RouteStatus` (JSON keys as in spec §20.5).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpLogMessage {
    /// Prefix of the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// AS path, space separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_path: Option<String>,
    /// LOCAL_PREF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
    /// MED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub med: Option<u32>,
    /// Next hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop_ip: Option<String>,
    /// Weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Why the session is down, or why the route was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

/// One tunnel BGP record (spec §20.3, §20.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpLog {
    /// `<connection-id>_<tunnel-outside-ip>`.
    pub resource_id: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub event_timestamp: u64,
    /// Creation time, readable UTC.
    pub timestamp: String,
    /// Record type.
    #[serde(rename = "type")]
    pub kind: BgpLogType,
    /// Status.
    pub status: BgpLogStatus,
    /// Details.
    pub message: BgpLogMessage,
}

/// A tunnel log record of either kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "log", rename_all = "snake_case")]
pub enum LogEntry {
    /// Tunnel activity (IKE, IPsec, DPD).
    Activity(TunnelActivityLog),
    /// Tunnel BGP.
    Bgp(BgpLog),
}

impl LogEntry {
    /// The record's resource id.
    #[must_use]
    pub fn resource_id(&self) -> &str {
        match self {
            Self::Activity(a) => &a.resource_id,
            Self::Bgp(b) => &b.resource_id,
        }
    }

    /// Render in the configured format, one line, no trailing newline.
    #[must_use]
    pub fn render(&self, format: LogFormat) -> String {
        match format {
            LogFormat::Json => self.render_json(),
            LogFormat::Text => self.render_text(),
        }
    }

    /// The record as one JSON object with the spec's keys (no `log` tag).
    #[must_use]
    pub fn render_json(&self) -> String {
        let r = match self {
            Self::Activity(a) => serde_json::to_string(a),
            Self::Bgp(b) => serde_json::to_string(b),
        };
        // Serialising these plain structs cannot fail (no maps with
        // non-string keys, no custom serialisers that error).
        r.unwrap_or_default()
    }

    /// The record as one `key=value` text line.
    #[must_use]
    pub fn render_text(&self) -> String {
        match self {
            Self::Activity(a) => format!(
                "{} {} dpd_enabled={} nat_t_detected={} ike_phase1_state={} ike_phase2_state={} details=\"{}\"",
                a.timestamp,
                a.resource_id,
                py_bool(a.dpd_enabled),
                py_bool(a.nat_t_detected),
                a.ike_phase1_state.as_str(),
                a.ike_phase2_state.as_str(),
                a.details.replace('"', "'"),
            ),
            Self::Bgp(b) => {
                let kind = match b.kind {
                    BgpLogType::BgpStatus => "BGPStatus",
                    BgpLogType::RouteStatus => "RouteStatus",
                };
                let status = match b.status {
                    BgpLogStatus::Up => "UP",
                    BgpLogStatus::Down => "DOWN",
                    BgpLogStatus::Advertised => "ADVERTISED",
                    BgpLogStatus::Updated => "UPDATED",
                    BgpLogStatus::Withdrawn => "WITHDRAWN",
                };
                let mut s = format!(
                    "{} {} type={kind} status={status}",
                    b.timestamp, b.resource_id
                );
                let m = &b.message;
                if let Some(v) = &m.prefix {
                    let _ = write!(s, " prefix={v}");
                }
                if let Some(v) = &m.as_path {
                    let _ = write!(s, " asPath=\"{v}\"");
                }
                if let Some(v) = m.local_pref {
                    let _ = write!(s, " localPref={v}");
                }
                if let Some(v) = m.med {
                    let _ = write!(s, " med={v}");
                }
                if let Some(v) = &m.next_hop_ip {
                    let _ = write!(s, " nextHopIp={v}");
                }
                if let Some(v) = m.weight {
                    let _ = write!(s, " weight={v}");
                }
                if let Some(v) = &m.details {
                    let _ = write!(s, " details=\"{}\"", v.replace('"', "'"));
                }
                s
            }
        }
    }
}

/// The line `entry` puts in the daemon's log outputs under `options` (its
/// tunnel's `log` options): `None` when the record's stream (activity or
/// BGP) is disabled, else the record rendered in the stream's format.
#[must_use]
pub fn output_line(entry: &LogEntry, options: &TunnelLogOptions) -> Option<String> {
    let stream = match entry {
        LogEntry::Activity(_) => options.activity,
        LogEntry::Bgp(_) => options.bgp,
    };
    stream.enabled.then(|| entry.render(stream.format))
}

/// Write `entry` to the daemon's log outputs (a `tracing` event at info
/// on [`ACTIVITY_TARGET`] or [`BGP_TARGET`]) when `options` enable its
/// stream; nothing otherwise.
pub fn emit(entry: &LogEntry, options: &TunnelLogOptions) {
    let Some(line) = output_line(entry, options) else {
        return;
    };
    // `tracing` wants a constant target per call site.
    match entry {
        LogEntry::Activity(_) => tracing::info!(target: "vpn::tunnel::activity", "{line}"),
        LogEntry::Bgp(_) => tracing::info!(target: "vpn::tunnel::bgp", "{line}"),
    }
}

fn py_bool(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// `2025-11-08 05:40:29.641Z` for a time in milliseconds since the Unix
/// epoch (the spec's readable form, §20.5).
#[must_use]
pub fn readable_timestamp(epoch_ms: u64) -> String {
    let ms = epoch_ms % 1000;
    let secs = epoch_ms / 1000;
    let days = secs / 86_400;
    let sod = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{ms:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`, restricted to dates after 1970).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// The tunnel state a record is taken in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ActivityContext {
    /// DPD enabled on the tunnel.
    pub dpd_enabled: bool,
    /// NAT-T detected.
    pub nat_t_detected: bool,
    /// Phase 1 state.
    pub ike_phase1_state: IkePhaseState,
    /// Phase 2 state.
    pub ike_phase2_state: IkePhaseState,
}

impl TunnelActivityLog {
    /// A record at `epoch_ms` for `resource_id`.
    #[must_use]
    pub fn new(
        resource_id: String,
        epoch_ms: u64,
        ctx: ActivityContext,
        details: impl Into<String>,
    ) -> Self {
        Self {
            resource_id,
            event_timestamp: epoch_ms,
            timestamp: readable_timestamp(epoch_ms),
            dpd_enabled: ctx.dpd_enabled,
            nat_t_detected: ctx.nat_t_detected,
            ike_phase1_state: ctx.ike_phase1_state,
            ike_phase2_state: ctx.ike_phase2_state,
            details: details.into(),
        }
    }
}

impl BgpLog {
    /// A `BGPStatus` record: UP when the session reached Established.
    #[must_use]
    pub fn status(resource_id: String, epoch_ms: u64, up: bool, details: String) -> Self {
        Self {
            resource_id,
            event_timestamp: epoch_ms,
            timestamp: readable_timestamp(epoch_ms),
            kind: BgpLogType::BgpStatus,
            status: if up {
                BgpLogStatus::Up
            } else {
                BgpLogStatus::Down
            },
            message: BgpLogMessage {
                details: Some(details),
                ..BgpLogMessage::default()
            },
        }
    }
}

// Message catalogue (spec §20.4). The texts are the spec's.

/// IKEv2 DPD timeout.
#[must_use]
pub fn msg_dpd_timed_out(retry_count: u32) -> String {
    format!("AWS tunnel DPD timed out after {retry_count} retransmissions")
}
/// IKEv1 DPD timeout.
pub const MSG_IKEV1_PEER_DEAD: &str = "Peer is not responding - Declaring peer dead";
/// Peer deleted the IKE SA.
pub const MSG_DELETE_IKE_SA: &str = "AWS tunnel received DELETE for IKE_SA from CGW";
/// Peer deleted a child SA.
#[must_use]
pub fn msg_delete_child_sa(spi: u32) -> String {
    format!("AWS tunnel received DELETE for phase 2 SA with SPI: {spi:08x}")
}
/// Rekey collision resolved as CHILD_DELETE.
pub const MSG_CHILD_REKEY_COLLISION: &str =
    "AWS tunnel detected a (CHILD_REKEY) collision as CHILD_DELETE";
/// Redundant SA from a collision deleted.
pub const MSG_REDUNDANT_SA: &str =
    "AWS tunnel (CHILD_SA) redundant SA is being deleted due to detected collision";
/// Child SA failed while the IKE SA stays.
pub const MSG_CHILD_SA_FAILED: &str =
    "AWS tunnel phase 2 SA cannot be established while keeping phase 1";
/// TS_UNACCEPTABLE received.
pub const MSG_TS_UNACCEPTABLE: &str =
    "AWS: Traffic Selector: TS_UNACCEPTABLE: received from responder";
/// Sending AUTHENTICATION_FAILED.
pub const MSG_AUTH_FAILED: &str = "AWS tunnel is sending AUTHENTICATION_FAILED as response";
/// PSK mismatch (IKEv2).
#[must_use]
pub fn msg_psk_mismatch(cgw: &str) -> String {
    format!("AWS tunnel detected pre-shared key mismatch with cgw: {cgw}")
}
/// PSK mismatch (IKEv1).
pub const MSG_IKEV1_PSK_DECRYPT_FAILED: &str =
    "AWS tunnel payload decryption failed due to invalid pre-shared key";
/// Half-open IKE SA timed out.
#[must_use]
pub fn msg_half_open_timeout(cgw: &str) -> String {
    format!("AWS tunnel timeout: deleting unestablished phase 1 IKE_SA with cgw: {cgw}")
}
/// Sending NO_PROPOSAL_CHOSEN.
pub const MSG_NO_PROPOSAL_CHOSEN: &str =
    "No matching proposal found. Notifying with \"No proposal chosen\"";
/// Peer proposed only unsupported attributes.
pub const MSG_NO_PROPOSAL_MATCH: &str = "No proposal match found by AWS";

/// Direction of a CREATE_CHILD_SA log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateChildSaEvent {
    /// Request received from the CGW.
    ProcessingRequest,
    /// Response sent to the CGW.
    SendingResponse,
    /// Request sent to the CGW.
    SendingRequest,
    /// Response received from the CGW.
    ProcessingResponse,
}

/// CREATE_CHILD_SA negotiation messages.
#[must_use]
pub fn msg_create_child_sa(event: CreateChildSaEvent, message_id: u32) -> String {
    let what = match event {
        CreateChildSaEvent::ProcessingRequest => "processing request",
        CreateChildSaEvent::SendingResponse => "is sending response",
        CreateChildSaEvent::SendingRequest => "is sending request",
        CreateChildSaEvent::ProcessingResponse => "processing response",
    };
    format!("AWS tunnel {what} for CREATE_CHILD_SA (id={message_id})")
}

/// BGP FSM transition (states spelled as RFC 4271 names them).
#[must_use]
pub fn msg_bgp_state_changed(from: &str, to: &str, neighbor: &str) -> String {
    format!(
        "AWS-side peer BGP session state has changed from {from} to {to} with neighbor {neighbor}"
    )
}

/// Default capacity of [`LogRing`].
pub const DEFAULT_LOG_RING_CAPACITY: usize = 4096;

/// The most recent log entries, oldest first, bounded: pushing onto a full
/// ring drops the oldest entry.
#[derive(Debug, Clone)]
pub struct LogRing {
    entries: VecDeque<LogEntry>,
    capacity: usize,
    dropped: u64,
}

impl Default for LogRing {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_LOG_RING_CAPACITY)
    }
}

impl LogRing {
    /// An empty ring holding at most `capacity` entries (at least 1).
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            entries: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
            dropped: 0,
        }
    }

    /// Append an entry, dropping the oldest when full.
    pub fn push(&mut self, entry: LogEntry) {
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
            self.dropped += 1;
        }
        self.entries.push_back(entry);
    }

    /// Entries currently held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the ring is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries dropped because the ring was full.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The last `lines` entries (oldest first) whose resource id starts with
    /// `prefix` (all entries when `prefix` is `None`).
    #[must_use]
    pub fn tail(&self, lines: usize, prefix: Option<&str>) -> Vec<LogEntry> {
        let mut out: Vec<LogEntry> = self
            .entries
            .iter()
            .rev()
            .filter(|e| prefix.is_none_or(|p| e.resource_id().starts_with(p)))
            .take(lines)
            .cloned()
            .collect();
        out.reverse();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_timestamp_matches_spec_example() {
        assert_eq!(
            readable_timestamp(1_762_580_429_641),
            "2025-11-08 05:40:29.641Z"
        );
        assert_eq!(
            readable_timestamp(1_762_579_573_243),
            "2025-11-08 05:26:13.243Z"
        );
        assert_eq!(readable_timestamp(0), "1970-01-01 00:00:00.000Z");
        assert_eq!(
            readable_timestamp(951_782_400_000),
            "2000-02-29 00:00:00.000Z"
        );
    }

    #[test]
    fn bgp_json_matches_spec_example() {
        let rec = LogEntry::Bgp(BgpLog::status(
            resource_id("vpn-1234abcd", "1.2.3.4"),
            1_762_580_429_641,
            true,
            msg_bgp_state_changed("OpenConfirm", "Established", "169.254.50.85"),
        ));
        let v: serde_json::Value = serde_json::from_str(&rec.render_json()).unwrap();
        let want = serde_json::json!({
          "resource_id": "vpn-1234abcd_1.2.3.4",
          "event_timestamp": 1_762_580_429_641_u64,
          "timestamp": "2025-11-08 05:40:29.641Z",
          "type": "BGPStatus",
          "status": "UP",
          "message": {
            "details": "AWS-side peer BGP session state has changed from OpenConfirm to Established with neighbor 169.254.50.85"
          }
        });
        assert_eq!(v, want);
    }

    #[test]
    fn route_status_json_keys_are_camel_case() {
        let rec = LogEntry::Bgp(BgpLog {
            resource_id: "vpn-1_1.2.3.4".into(),
            event_timestamp: 1_762_579_573_243,
            timestamp: readable_timestamp(1_762_579_573_243),
            kind: BgpLogType::RouteStatus,
            status: BgpLogStatus::Updated,
            message: BgpLogMessage {
                prefix: Some("172.31.0.0/16".into()),
                as_path: Some("64512".into()),
                local_pref: Some(100),
                med: Some(100),
                next_hop_ip: Some("169.254.50.85".into()),
                weight: Some(32768),
                details: Some("DENIED due to: as-path contains our own AS".into()),
            },
        });
        let v: serde_json::Value = serde_json::from_str(&rec.render_json()).unwrap();
        assert_eq!(v["type"], "RouteStatus");
        assert_eq!(v["status"], "UPDATED");
        assert_eq!(v["message"]["asPath"], "64512");
        assert_eq!(v["message"]["nextHopIp"], "169.254.50.85");
        assert_eq!(v["message"]["localPref"], 100);
        let t = rec.render_text();
        assert!(
            t.contains("type=RouteStatus status=UPDATED prefix=172.31.0.0/16"),
            "{t}"
        );
    }

    #[test]
    fn activity_json_and_text_have_the_spec_fields() {
        let rec = LogEntry::Activity(TunnelActivityLog::new(
            resource_id("vpn-1", "198.51.100.10"),
            1_762_580_429_641,
            ActivityContext {
                dpd_enabled: true,
                nat_t_detected: false,
                ike_phase1_state: IkePhaseState::Established,
                ike_phase2_state: IkePhaseState::Negotiating,
            },
            msg_create_child_sa(CreateChildSaEvent::SendingRequest, 7),
        ));
        let v: serde_json::Value = serde_json::from_str(&rec.render(LogFormat::Json)).unwrap();
        for key in [
            "event_timestamp",
            "timestamp",
            "dpd_enabled",
            "nat_t_detected",
            "ike_phase1_state",
            "ike_phase2_state",
            "details",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["ike_phase2_state"], "Negotiating");
        assert_eq!(
            v["details"],
            "AWS tunnel is sending request for CREATE_CHILD_SA (id=7)"
        );
        let t = rec.render(LogFormat::Text);
        assert!(
            t.starts_with(
                "2025-11-08 05:40:29.641Z vpn-1_198.51.100.10 dpd_enabled=True nat_t_detected=False"
            ),
            "{t}"
        );
    }

    #[test]
    fn output_line_follows_the_tunnel_stream_options() {
        use crate::config::LogStreamOptions;
        let activity = LogEntry::Activity(TunnelActivityLog::new(
            resource_id("vpn-1", "198.51.100.10"),
            1_762_580_429_641,
            ActivityContext::default(),
            MSG_DELETE_IKE_SA,
        ));
        let bgp = LogEntry::Bgp(BgpLog::status(
            resource_id("vpn-1", "198.51.100.10"),
            1_762_580_429_641,
            true,
            msg_bgp_state_changed("OpenConfirm", "Established", "169.254.50.85"),
        ));
        let on = |format| LogStreamOptions {
            enabled: true,
            format,
        };
        // Both streams off (the default): nothing reaches the outputs.
        let off = TunnelLogOptions::default();
        assert_eq!(output_line(&activity, &off), None);
        assert_eq!(output_line(&bgp, &off), None);
        // Activity on in JSON: one JSON line, the record's own object.
        let json_activity = TunnelLogOptions {
            activity: on(LogFormat::Json),
            ..TunnelLogOptions::default()
        };
        let line = output_line(&activity, &json_activity).unwrap();
        assert!(!line.contains('\n'), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["resource_id"], "vpn-1_198.51.100.10");
        assert_eq!(v["details"], MSG_DELETE_IKE_SA);
        assert!(v.get("log").is_none(), "{line}");
        // ... and the BGP stream, still off, stays silent.
        assert_eq!(output_line(&bgp, &json_activity), None);
        // BGP on in text: the spec's key=value line.
        let text_bgp = TunnelLogOptions {
            bgp: on(LogFormat::Text),
            ..TunnelLogOptions::default()
        };
        assert_eq!(
            output_line(&bgp, &text_bgp).unwrap(),
            "2025-11-08 05:40:29.641Z vpn-1_198.51.100.10 type=BGPStatus status=UP details=\"AWS-side peer BGP session state has changed from OpenConfirm to Established with neighbor 169.254.50.85\""
        );
        assert_eq!(output_line(&activity, &text_bgp), None);
    }

    #[test]
    fn ring_is_bounded_and_tails_in_order() {
        let mut ring = LogRing::with_capacity(3);
        for i in 0..5u64 {
            ring.push(LogEntry::Activity(TunnelActivityLog::new(
                resource_id(if i % 2 == 0 { "vpn-a" } else { "vpn-b" }, "1.2.3.4"),
                i,
                ActivityContext::default(),
                MSG_DELETE_IKE_SA,
            )));
        }
        assert_eq!(ring.len(), 3);
        assert_eq!(ring.dropped(), 2);
        let all = ring.tail(10, None);
        let ts: Vec<u64> = all
            .iter()
            .map(|e| match e {
                LogEntry::Activity(a) => a.event_timestamp,
                LogEntry::Bgp(b) => b.event_timestamp,
            })
            .collect();
        assert_eq!(ts, vec![2, 3, 4]);
        assert_eq!(ring.tail(10, Some("vpn-a_")).len(), 2);
        assert_eq!(ring.tail(1, None).len(), 1);
    }
}
