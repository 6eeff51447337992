//! Per-tunnel options (spec §3, quick reference §3.15).
//!
//! | option | range / set | default |
//! |---|---|---|
//! | `inside_ipv4_cidr` | /30 in 169.254.0.0/16 minus 7 reserved | allocated |
//! | `inside_ipv6_cidr` | /126 in fd00::/8 (IPv6-inside only) | allocated |
//! | `pre_shared_key` | 8–64 of `[A-Za-z0-9._]`, no leading `0` | generated, 32 alnum |
//! | `pre_shared_key_ref` | name in the key store, `[A-Za-z0-9._/-]{1,128}` (SecretsManager only) | `<connection>/<tunnel>` |
//! | `phase1_encryption_algorithms` | AES128, AES256, AES128-GCM-16, AES256-GCM-16 | all |
//! | `phase2_encryption_algorithms` | same | all |
//! | `phase1_integrity_algorithms` | SHA1, SHA2-256, SHA2-384, SHA2-512 | all |
//! | `phase2_integrity_algorithms` | same | all |
//! | `phase1_dh_groups` | 2, 14–24 | all |
//! | `phase2_dh_groups` | 2, 5, 14–24 | all |
//! | `phase1_lifetime_secs` | 900–28800 | 28800 |
//! | `phase2_lifetime_secs` | 900–3600, < phase 1 | 3600 |
//! | `rekey_margin_time_secs` | 60 – phase2/2 | 270 |
//! | `rekey_fuzz_percent` | 0–100 | 100 |
//! | `replay_window_packets` | 64–2048 | 1024 |
//! | `dpd_timeout_secs` | ≥ 30 | 40 |
//! | `dpd_timeout_action` | clear, none, restart | clear |
//! | `startup_action` | add, start (start needs ikev2) | add |
//! | `ike_versions` | ikev1, ikev2 | both |
//! | `tunnel_bandwidth` | standard, large (same on both tunnels) | standard |
//! | `log.activity` / `log.bgp` | enabled + json/text | disabled, json |
//! | `enable_tunnel_lifecycle_control` | bool | false |
//!
//! Multi-valued options follow the spec's rule: when absent, every allowed
//! value is configured; the operator removes values by listing the ones to
//! keep. A list may not be empty and may not repeat a value.

use std::net::IpAddr;

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use super::error::{ConfigError, Errors, finish};
use super::inside::{self, InsideV4Problem, InsideV6Problem};
use super::names::{
    DhGroup, DpdTimeoutAction, EncryptionAlgorithm, IkeVersion, IntegrityAlgorithm, LogFormat,
    StartupAction, TunnelBandwidth,
};
use super::psk::{PSK_RULE, PreSharedKey};

/// Phase 1 lifetime bounds and default, seconds (spec §3.7).
pub const PHASE1_LIFETIME_SECS: (u32, u32, u32) = (900, 28_800, 28_800);
/// Phase 2 lifetime bounds and default, seconds (spec §3.7).
///
/// Phase 2 must also be strictly below phase 1, so a phase 1 lifetime of
/// 900 s (its own minimum) admits no phase 2 lifetime; the smallest valid
/// pair is 901 / 900. The spec's ranges are kept as written.
pub const PHASE2_LIFETIME_SECS: (u32, u32, u32) = (900, 3_600, 3_600);
/// Smallest rekey margin and the default, seconds; the largest is half the
/// phase 2 lifetime (spec §3.7).
pub const REKEY_MARGIN_TIME_SECS: (u32, u32) = (60, 270);
/// Rekey fuzz bounds and default, percent (spec §3.7).
pub const REKEY_FUZZ_PERCENT: (u32, u32, u32) = (0, 100, 100);
/// Replay window bounds and default, packets (spec §3.8).
pub const REPLAY_WINDOW_PACKETS: (u32, u32, u32) = (64, 2048, 1024);
/// Smallest DPD timeout and the default, seconds (spec §3.1).
pub const DPD_TIMEOUT_SECS: (u32, u32) = (30, 40);

/// One log stream of a tunnel (spec §3.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogStreamOptions {
    /// Whether the stream is written. Default: false.
    #[serde(default)]
    pub enabled: bool,
    /// Output format. Default: `json`.
    ///
    /// \[AMBIGUOUS\] The spec gives no default format; `json` is chosen
    /// because the log fields in §20.3 are defined as JSON keys.
    #[serde(default = "default_log_format")]
    pub format: LogFormat,
}

fn default_log_format() -> LogFormat {
    LogFormat::Json
}

impl Default for LogStreamOptions {
    fn default() -> Self {
        Self {
            enabled: false,
            format: LogFormat::Json,
        }
    }
}

/// A tunnel's logs (spec §3.12): the tunnel activity log (IKE, IPsec, DPD)
/// and the tunnel BGP log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelLogOptions {
    /// Tunnel activity log.
    #[serde(default)]
    pub activity: LogStreamOptions,
    /// Tunnel BGP log.
    #[serde(default)]
    pub bgp: LogStreamOptions,
}

/// Every option of one tunnel.
///
/// `Default` gives the spec's defaults; `inside_*_cidr` and
/// `pre_shared_key` are `None`, meaning "assign one"
/// ([`ApplianceConfig::assign_generated`](super::ApplianceConfig::assign_generated)
/// fills them in and the result is saved, so they stay stable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelOptions {
    /// The appliance's outside address this tunnel uses; one of
    /// `gateway.outside_addresses`. Required at appliance level: each
    /// tunnel is bound to a local outside address (spec §2.2, §25.1), and
    /// the two tunnels of a connection to one peer address must use
    /// different ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside_ip_address: Option<IpAddr>,
    /// Inside IPv4 /30 (spec §3.3). `None`: allocate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inside_ipv4_cidr: Option<Ipv4Net>,
    /// Inside IPv6 /126, IPv6-inside connections only (spec §3.3, §10.4).
    /// `None`: allocate (IPv6-inside connections) or none (IPv4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inside_ipv6_cidr: Option<Ipv6Net>,
    /// Pre-shared key (spec §3.10). `None`: generate (when the connection
    /// stores keys in this file), or fetched from the secret store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_shared_key: Option<PreSharedKey>,
    /// The name of this tunnel's key in the pre-shared key store
    /// ([`super::secrets`]), for connections with `pre_shared_key_storage
    /// = SecretsManager`. `None` there: `<connection>/<tunnel>` is
    /// assigned. The configuration holds this name, never the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_shared_key_ref: Option<String>,
    /// Phase 1 encryption algorithms, in preference order. Default: all
    /// four, GCM first ([`EncryptionAlgorithm::PREFERENCE`]).
    #[serde(default = "all_encryption")]
    pub phase1_encryption_algorithms: Vec<EncryptionAlgorithm>,
    /// Phase 2 encryption algorithms, in preference order. Default: all
    /// four, GCM first.
    #[serde(default = "all_encryption")]
    pub phase2_encryption_algorithms: Vec<EncryptionAlgorithm>,
    /// Phase 1 integrity algorithms, in preference order. Default: all
    /// four, SHA-1 last ([`IntegrityAlgorithm::PREFERENCE`]). Never empty: IKE
    /// derives its PRF from them even when the cipher is GCM.
    #[serde(default = "all_integrity")]
    pub phase1_integrity_algorithms: Vec<IntegrityAlgorithm>,
    /// Phase 2 integrity algorithms, in preference order. Default: all
    /// four, SHA-1 last. May be empty only
    /// when every phase 2 encryption algorithm is GCM.
    #[serde(default = "all_integrity")]
    pub phase2_integrity_algorithms: Vec<IntegrityAlgorithm>,
    /// Phase 1 DH groups: 2, 14–24, in preference order. Default: all,
    /// 19, 20, 21, 14 first and 2 last ([`DhGroup::PHASE1_PREFERENCE`]).
    #[serde(default = "phase1_groups")]
    pub phase1_dh_groups: Vec<DhGroup>,
    /// Phase 2 (PFS) DH groups: 2, 5, 14–24, in preference order.
    /// Default: all, 19, 20, 21, 14 first, 5 and 2 last.
    #[serde(default = "phase2_groups")]
    pub phase2_dh_groups: Vec<DhGroup>,
    /// IKE SA lifetime, 900–28800 s. Default 28800.
    #[serde(default = "default_phase1_lifetime")]
    pub phase1_lifetime_secs: u32,
    /// Child SA lifetime, 900–3600 s and below phase 1. Default 3600.
    #[serde(default = "default_phase2_lifetime")]
    pub phase2_lifetime_secs: u32,
    /// Rekey margin, 60 s to half the phase 2 lifetime. Default 270.
    #[serde(default = "default_rekey_margin")]
    pub rekey_margin_time_secs: u32,
    /// Rekey fuzz, 0–100 % of the margin. Default 100.
    #[serde(default = "default_rekey_fuzz")]
    pub rekey_fuzz_percent: u32,
    /// ESP anti-replay window, 64–2048 packets. Default 1024.
    #[serde(default = "default_replay_window")]
    pub replay_window_packets: u32,
    /// DPD timeout, ≥ 30 s from the first failed keepalive. Default 40.
    #[serde(default = "default_dpd_timeout")]
    pub dpd_timeout_secs: u32,
    /// Action on DPD timeout. Default `clear`.
    #[serde(default)]
    pub dpd_timeout_action: DpdTimeoutAction,
    /// Startup action. Default `add`.
    #[serde(default)]
    pub startup_action: StartupAction,
    /// Allowed IKE versions. Default both.
    #[serde(default = "all_ike_versions")]
    pub ike_versions: Vec<IkeVersion>,
    /// Bandwidth class. Default `standard`.
    ///
    /// The spec makes this a connection option (§3.11); it is stored per
    /// tunnel so the dataplane can shape each tunnel from its own record,
    /// and connection validation requires both tunnels to agree. It is
    /// changed for both tunnels at once through
    /// [`VpnConnectionOptionsPatch`](super::VpnConnectionOptionsPatch),
    /// never through [`TunnelOptionsPatch`].
    #[serde(default)]
    pub tunnel_bandwidth: TunnelBandwidth,
    /// Tunnel logs.
    #[serde(default)]
    pub log: TunnelLogOptions,
    /// Tunnel endpoint lifecycle control (spec §3.13, §7.3). Default off.
    #[serde(default)]
    pub enable_tunnel_lifecycle_control: bool,
}

// The default lists hold every value the spec allows, in preference
// order: the strongest first (AES-GCM before AES-CBC, elliptic curves
// and 2048-bit MODP before MODP-1024). Our choice as responder follows
// our list order, not the peer's (spec §25: "independent of the peer's
// proposal order"; see `ike::proposal`), and the first group is the one
// our initiator sends a KE payload for, so this order is what a peer
// gets when both sides leave their defaults.
fn all_encryption() -> Vec<EncryptionAlgorithm> {
    EncryptionAlgorithm::PREFERENCE.to_vec()
}
fn all_integrity() -> Vec<IntegrityAlgorithm> {
    IntegrityAlgorithm::PREFERENCE.to_vec()
}
fn phase1_groups() -> Vec<DhGroup> {
    DhGroup::PHASE1_PREFERENCE.to_vec()
}
fn phase2_groups() -> Vec<DhGroup> {
    DhGroup::PHASE2_PREFERENCE.to_vec()
}
fn all_ike_versions() -> Vec<IkeVersion> {
    IkeVersion::ALL.to_vec()
}
fn default_phase1_lifetime() -> u32 {
    PHASE1_LIFETIME_SECS.2
}
fn default_phase2_lifetime() -> u32 {
    PHASE2_LIFETIME_SECS.2
}
fn default_rekey_margin() -> u32 {
    REKEY_MARGIN_TIME_SECS.1
}
fn default_rekey_fuzz() -> u32 {
    REKEY_FUZZ_PERCENT.2
}
fn default_replay_window() -> u32 {
    REPLAY_WINDOW_PACKETS.2
}
fn default_dpd_timeout() -> u32 {
    DPD_TIMEOUT_SECS.1
}

impl Default for TunnelOptions {
    fn default() -> Self {
        Self {
            outside_ip_address: None,
            inside_ipv4_cidr: None,
            inside_ipv6_cidr: None,
            pre_shared_key: None,
            pre_shared_key_ref: None,
            phase1_encryption_algorithms: all_encryption(),
            phase2_encryption_algorithms: all_encryption(),
            phase1_integrity_algorithms: all_integrity(),
            phase2_integrity_algorithms: all_integrity(),
            phase1_dh_groups: phase1_groups(),
            phase2_dh_groups: phase2_groups(),
            phase1_lifetime_secs: default_phase1_lifetime(),
            phase2_lifetime_secs: default_phase2_lifetime(),
            rekey_margin_time_secs: default_rekey_margin(),
            rekey_fuzz_percent: default_rekey_fuzz(),
            replay_window_packets: default_replay_window(),
            dpd_timeout_secs: default_dpd_timeout(),
            dpd_timeout_action: DpdTimeoutAction::default(),
            startup_action: StartupAction::default(),
            ike_versions: all_ike_versions(),
            tunnel_bandwidth: TunnelBandwidth::default(),
            log: TunnelLogOptions::default(),
            enable_tunnel_lifecycle_control: false,
        }
    }
}

/// Check a multi-valued option: not empty, no repeats, every value in
/// `allowed`.
fn check_list<T: Copy + PartialEq + std::fmt::Display>(
    errs: &mut Errors<'_>,
    field: &str,
    values: &[T],
    allowed: &[T],
    allowed_text: &str,
) {
    if values.is_empty() {
        errs.invalid(
            field,
            "[]",
            format!("at least one value is required; allowed: {allowed_text}"),
        );
    }
    for (i, v) in values.iter().enumerate() {
        let item = format!("{field}[{i}]");
        if !allowed.contains(v) {
            errs.not_allowed(&item, v, allowed_text);
        }
        if let Some(j) = values[..i].iter().position(|w| w == v) {
            let first = errs.path(&format!("{field}[{j}]"));
            errs.duplicate(&item, v, first);
        }
    }
}

impl TunnelOptions {
    /// Check every rule that involves this tunnel alone, and return all
    /// broken ones. Field paths are relative (e.g. `phase2_lifetime_secs`).
    ///
    /// Rules that need the connection or the appliance (outside address
    /// binding, IPv6 inside only on IPv6 connections, unique inside CIDRs,
    /// equal bandwidth on both tunnels, `start` needing a peer address) are
    /// checked by [`VpnConnection::validate`](super::VpnConnection::validate)
    /// and [`ApplianceConfig::validate`](super::ApplianceConfig::validate).
    ///
    /// # Errors
    /// Every broken rule, each naming field, value and allowed values.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut out = Vec::new();
        self.validate_into(&mut Errors::new("", &mut out));
        finish(out)
    }

    pub(crate) fn validate_into(&self, errs: &mut Errors<'_>) {
        // Inside addressing (spec §3.3).
        if let Some(net) = self.inside_ipv4_cidr {
            let f = "inside_ipv4_cidr";
            match inside::check_inside_ipv4(net) {
                Ok(()) => {}
                Err(InsideV4Problem::PrefixLen) => {
                    errs.invalid(f, net, "must be a /30 from 169.254.0.0/16")
                }
                Err(InsideV4Problem::NotNetworkAddress) => errs.invalid(
                    f,
                    net,
                    format!(
                        "host bits are set; write the network address {}",
                        net.trunc()
                    ),
                ),
                Err(InsideV4Problem::OutsidePool) => {
                    errs.out_of_range(f, net, "a /30 from 169.254.0.0/16");
                }
                Err(InsideV4Problem::Reserved) => errs.reserved(
                    f,
                    net,
                    format!("these /30s cannot be used: {}", inside::reserved_rendered()),
                ),
            }
        }
        if let Some(net) = self.inside_ipv6_cidr {
            let f = "inside_ipv6_cidr";
            match inside::check_inside_ipv6(net) {
                Ok(()) => {}
                Err(InsideV6Problem::PrefixLen) => {
                    errs.invalid(f, net, "must be a /126 from fd00::/8")
                }
                Err(InsideV6Problem::NotNetworkAddress) => errs.invalid(
                    f,
                    net,
                    format!(
                        "host bits are set; write the network address {}",
                        net.trunc()
                    ),
                ),
                Err(InsideV6Problem::OutsidePool) => {
                    errs.out_of_range(f, net, "a /126 from fd00::/8")
                }
            }
        }

        // Pre-shared key (spec §3.10). The value is never echoed.
        if let Some(psk) = &self.pre_shared_key
            && let Err(e) = psk.check()
        {
            errs.invalid(
                "pre_shared_key",
                "<redacted>",
                format!("{e}; rule: {PSK_RULE}"),
            );
        }

        if let Some(name) = &self.pre_shared_key_ref
            && !super::secrets::valid_secret_name(name)
        {
            errs.invalid(
                "pre_shared_key_ref",
                name,
                "1..=128 characters from [A-Za-z0-9._/-]".to_owned(),
            );
        }

        // Proposals (spec §3.6).
        let enc = EncryptionAlgorithm::allowed();
        let integ = IntegrityAlgorithm::allowed();
        check_list(
            errs,
            "phase1_encryption_algorithms",
            &self.phase1_encryption_algorithms,
            EncryptionAlgorithm::ALL,
            &enc,
        );
        check_list(
            errs,
            "phase2_encryption_algorithms",
            &self.phase2_encryption_algorithms,
            EncryptionAlgorithm::ALL,
            &enc,
        );
        check_list(
            errs,
            "phase1_integrity_algorithms",
            &self.phase1_integrity_algorithms,
            IntegrityAlgorithm::ALL,
            &integ,
        );
        let phase2_all_aead = !self.phase2_encryption_algorithms.is_empty()
            && self
                .phase2_encryption_algorithms
                .iter()
                .all(|e| e.is_aead());
        if self.phase2_integrity_algorithms.is_empty() && phase2_all_aead {
            // GCM carries its own ICV: no integrity algorithm is needed.
        } else if self.phase2_integrity_algorithms.is_empty() {
            errs.invalid(
                "phase2_integrity_algorithms",
                "[]",
                format!(
                    "at least one value is required unless every phase 2 encryption algorithm is GCM; allowed: {integ}"
                ),
            );
        } else {
            check_list(
                errs,
                "phase2_integrity_algorithms",
                &self.phase2_integrity_algorithms,
                IntegrityAlgorithm::ALL,
                &integ,
            );
        }
        check_list(
            errs,
            "phase1_dh_groups",
            &self.phase1_dh_groups,
            DhGroup::PHASE1_ALLOWED,
            &DhGroup::render(DhGroup::PHASE1_ALLOWED),
        );
        check_list(
            errs,
            "phase2_dh_groups",
            &self.phase2_dh_groups,
            DhGroup::PHASE2_ALLOWED,
            &DhGroup::render(DhGroup::PHASE2_ALLOWED),
        );

        // Lifetimes and rekeying (spec §3.7).
        let (lo, hi, _) = PHASE1_LIFETIME_SECS;
        errs.range("phase1_lifetime_secs", self.phase1_lifetime_secs, lo, hi);
        let (lo, hi, _) = PHASE2_LIFETIME_SECS;
        errs.range("phase2_lifetime_secs", self.phase2_lifetime_secs, lo, hi);
        if self.phase2_lifetime_secs >= self.phase1_lifetime_secs {
            let other = errs.path("phase1_lifetime_secs");
            errs.conflict(
                "phase2_lifetime_secs",
                self.phase2_lifetime_secs,
                format!(
                    "{other} = {}: the phase 2 lifetime must be less than the phase 1 lifetime",
                    self.phase1_lifetime_secs
                ),
            );
        }
        let margin_max = self.phase2_lifetime_secs / 2;
        let margin_lo = REKEY_MARGIN_TIME_SECS.0;
        if self.rekey_margin_time_secs < margin_lo || self.rekey_margin_time_secs > margin_max {
            let p2 = errs.path("phase2_lifetime_secs");
            errs.out_of_range(
                "rekey_margin_time_secs",
                self.rekey_margin_time_secs,
                format!(
                    "{margin_lo}..={margin_max} (60 to half of {p2} = {})",
                    self.phase2_lifetime_secs
                ),
            );
        }
        let (lo, hi, _) = REKEY_FUZZ_PERCENT;
        errs.range("rekey_fuzz_percent", self.rekey_fuzz_percent, lo, hi);

        // Replay window (spec §3.8).
        let (lo, hi, _) = REPLAY_WINDOW_PACKETS;
        errs.range("replay_window_packets", self.replay_window_packets, lo, hi);

        // DPD (spec §3.1).
        if self.dpd_timeout_secs < DPD_TIMEOUT_SECS.0 {
            errs.out_of_range(
                "dpd_timeout_secs",
                self.dpd_timeout_secs,
                format!(">= {} seconds", DPD_TIMEOUT_SECS.0),
            );
        }

        // IKE versions (spec §3.2) and startup action (spec §6 rule 2).
        check_list(
            errs,
            "ike_versions",
            &self.ike_versions,
            IkeVersion::ALL,
            &IkeVersion::allowed(),
        );
        if self.startup_action == StartupAction::Start
            && !self.ike_versions.contains(&IkeVersion::Ikev2)
        {
            let other = errs.path("ike_versions");
            errs.conflict(
                "startup_action",
                self.startup_action,
                format!("{other}: startup action start requires ikev2 in the IKE versions"),
            );
        }
    }

    /// Apply a modification (the spec's modify-vpn-tunnel-options, §18.8)
    /// and return the new options if they are valid.
    ///
    /// Nothing is half-applied: `self` is unchanged, and on error no new
    /// value exists. Only this tunnel's own rules are checked; use
    /// [`ApplianceConfig::modify_tunnel_options`](super::ApplianceConfig::modify_tunnel_options)
    /// to also check the connection and appliance rules.
    ///
    /// # Errors
    /// Every rule the patched options break.
    pub fn apply(&self, patch: TunnelOptionsPatch) -> Result<Self, Vec<ConfigError>> {
        let next = self.patched(patch);
        next.validate()?;
        Ok(next)
    }

    /// The patched options, unchecked.
    pub(crate) fn patched(&self, patch: TunnelOptionsPatch) -> Self {
        let mut n = self.clone();
        let TunnelOptionsPatch {
            inside_ipv4_cidr,
            inside_ipv6_cidr,
            pre_shared_key,
            pre_shared_key_ref,
            phase1_encryption_algorithms,
            phase2_encryption_algorithms,
            phase1_integrity_algorithms,
            phase2_integrity_algorithms,
            phase1_dh_groups,
            phase2_dh_groups,
            phase1_lifetime_secs,
            phase2_lifetime_secs,
            rekey_margin_time_secs,
            rekey_fuzz_percent,
            replay_window_packets,
            dpd_timeout_secs,
            dpd_timeout_action,
            startup_action,
            ike_versions,
            log,
            enable_tunnel_lifecycle_control,
        } = patch;
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = $f { n.$f = v; } )* };
        }
        macro_rules! set_opt {
            ($($f:ident),*) => { $( if let Some(v) = $f { n.$f = Some(v); } )* };
        }
        set_opt!(
            inside_ipv4_cidr,
            inside_ipv6_cidr,
            pre_shared_key,
            pre_shared_key_ref
        );
        set!(
            phase1_encryption_algorithms,
            phase2_encryption_algorithms,
            phase1_integrity_algorithms,
            phase2_integrity_algorithms,
            phase1_dh_groups,
            phase2_dh_groups,
            phase1_lifetime_secs,
            phase2_lifetime_secs,
            rekey_margin_time_secs,
            rekey_fuzz_percent,
            replay_window_packets,
            dpd_timeout_secs,
            dpd_timeout_action,
            startup_action,
            ike_versions,
            log,
            enable_tunnel_lifecycle_control
        );
        n
    }
}

/// A modification of one tunnel's options: each `Some` field replaces the
/// current value, each `None` keeps it (spec §18.8, modify-vpn-tunnel-options).
///
/// The outside address and the bandwidth class are not here: the first is
/// the tunnel's identity (replace the tunnel to change it), the second is a
/// connection option that both tunnels share.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelOptionsPatch {
    /// New [`TunnelOptions::inside_ipv4_cidr`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inside_ipv4_cidr: Option<Ipv4Net>,
    /// New [`TunnelOptions::inside_ipv6_cidr`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inside_ipv6_cidr: Option<Ipv6Net>,
    /// New [`TunnelOptions::pre_shared_key`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_shared_key: Option<PreSharedKey>,
    /// New [`TunnelOptions::pre_shared_key_ref`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_shared_key_ref: Option<String>,
    /// New [`TunnelOptions::phase1_encryption_algorithms`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase1_encryption_algorithms: Option<Vec<EncryptionAlgorithm>>,
    /// New [`TunnelOptions::phase2_encryption_algorithms`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase2_encryption_algorithms: Option<Vec<EncryptionAlgorithm>>,
    /// New [`TunnelOptions::phase1_integrity_algorithms`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase1_integrity_algorithms: Option<Vec<IntegrityAlgorithm>>,
    /// New [`TunnelOptions::phase2_integrity_algorithms`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase2_integrity_algorithms: Option<Vec<IntegrityAlgorithm>>,
    /// New [`TunnelOptions::phase1_dh_groups`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase1_dh_groups: Option<Vec<DhGroup>>,
    /// New [`TunnelOptions::phase2_dh_groups`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase2_dh_groups: Option<Vec<DhGroup>>,
    /// New [`TunnelOptions::phase1_lifetime_secs`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase1_lifetime_secs: Option<u32>,
    /// New [`TunnelOptions::phase2_lifetime_secs`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase2_lifetime_secs: Option<u32>,
    /// New [`TunnelOptions::rekey_margin_time_secs`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rekey_margin_time_secs: Option<u32>,
    /// New [`TunnelOptions::rekey_fuzz_percent`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rekey_fuzz_percent: Option<u32>,
    /// New [`TunnelOptions::replay_window_packets`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_window_packets: Option<u32>,
    /// New [`TunnelOptions::dpd_timeout_secs`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpd_timeout_secs: Option<u32>,
    /// New [`TunnelOptions::dpd_timeout_action`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpd_timeout_action: Option<DpdTimeoutAction>,
    /// New [`TunnelOptions::startup_action`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_action: Option<StartupAction>,
    /// New [`TunnelOptions::ike_versions`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ike_versions: Option<Vec<IkeVersion>>,
    /// New [`TunnelOptions::log`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<TunnelLogOptions>,
    /// New [`TunnelOptions::enable_tunnel_lifecycle_control`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_tunnel_lifecycle_control: Option<bool>,
}
