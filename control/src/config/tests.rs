//! Tests of the configuration model: defaults, bounds, rules, round trips,
//! modification and persistence.

#![allow(
    clippy::field_reassign_with_default,
    reason = "each case changes one field of a default value; that reads clearer than struct-update syntax"
)]

use std::net::IpAddr;

use ipnet::{Ipv4Net, Ipv6Net};
use proptest::prelude::*;

use super::store::SaveStep;
use super::*;

const EXAMPLE: &str = include_str!("../../examples/appliance.toml");

/// xorshift64*: deterministic random bytes.
fn rng(seed: u64) -> impl FnMut(&mut [u8]) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move |buf: &mut [u8]| {
        for b in buf {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            *b = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_be_bytes()[0];
        }
    }
}

fn example() -> ApplianceConfig {
    ApplianceConfig::from_toml_str(EXAMPLE).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v4(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn v6(s: &str) -> Ipv6Net {
    s.parse().unwrap()
}

/// The errors whose field is exactly `field`.
fn on<'a>(errs: &'a [ConfigError], field: &str) -> Vec<&'a ConfigError> {
    errs.iter().filter(|e| e.field() == field).collect()
}

/// Assert that `errs` has an error on `field` whose message contains every
/// one of `needles`.
#[track_caller]
fn assert_err(errs: &[ConfigError], field: &str, needles: &[&str]) {
    let hits = on(errs, field);
    assert!(!hits.is_empty(), "no error on {field}; got: {errs:#?}");
    assert!(
        hits.iter().any(|e| {
            let m = e.to_string();
            m.starts_with(field) && needles.iter().all(|n| m.contains(n))
        }),
        "no error on {field} mentions {needles:?}; got: {:#?}",
        hits.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
}

fn tunnel_errs(t: &TunnelOptions) -> Vec<ConfigError> {
    t.validate().err().unwrap_or_default()
}

// ---------------------------------------------------------------- defaults

#[test]
fn tunnel_defaults_match_spec() {
    let t = TunnelOptions::default();
    assert_eq!(t.phase1_lifetime_secs, 28_800);
    assert_eq!(t.phase2_lifetime_secs, 3_600);
    assert_eq!(t.rekey_margin_time_secs, 270);
    assert_eq!(t.rekey_fuzz_percent, 100);
    assert_eq!(t.replay_window_packets, 1024);
    assert_eq!(t.dpd_timeout_secs, 40);
    assert_eq!(t.dpd_timeout_action, DpdTimeoutAction::Clear);
    assert_eq!(t.startup_action, StartupAction::Add);
    assert_eq!(t.ike_versions, [IkeVersion::Ikev1, IkeVersion::Ikev2]);
    assert_eq!(t.tunnel_bandwidth, TunnelBandwidth::Standard);
    assert!(!t.log.activity.enabled && !t.log.bgp.enabled);
    assert_eq!(t.log.activity.format, LogFormat::Json);
    assert!(!t.enable_tunnel_lifecycle_control);
    let names = |v: &[EncryptionAlgorithm]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(
        names(&t.phase1_encryption_algorithms),
        ["AES256-GCM-16", "AES128-GCM-16", "AES256", "AES128"]
    );
    assert_eq!(
        t.phase1_encryption_algorithms,
        t.phase2_encryption_algorithms
    );
    let integ: Vec<_> = t
        .phase1_integrity_algorithms
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(integ, ["SHA2-256", "SHA2-384", "SHA2-512", "SHA1"]);
    assert_eq!(t.phase1_integrity_algorithms, t.phase2_integrity_algorithms);
    let nums = |v: &[DhGroup]| v.iter().map(|g| g.number()).collect::<Vec<_>>();
    assert_eq!(
        nums(&t.phase1_dh_groups),
        [19, 20, 21, 14, 15, 16, 17, 18, 24, 23, 22, 2]
    );
    assert_eq!(
        nums(&t.phase2_dh_groups),
        [19, 20, 21, 14, 15, 16, 17, 18, 24, 23, 22, 5, 2]
    );
    assert!(
        t.inside_ipv4_cidr.is_none() && t.inside_ipv6_cidr.is_none() && t.pre_shared_key.is_none()
    );
    t.validate().unwrap();
}

#[test]
fn absent_fields_get_defaults_when_parsed() {
    let t: TunnelOptions = toml::from_str("").unwrap();
    assert_eq!(t, TunnelOptions::default());

    let text = r#"
        [gateway]
        id = "gw"
        outside_addresses = ["198.51.100.1", "198.51.100.2"]
        [dataplane]
        worker_lcores = [1]
        [[dataplane.ports]]
        name = "o"
        device = "net_tap0"
        role = "outside"
        [[dataplane.ports]]
        name = "i"
        device = "net_tap1"
        role = "inside"
        [[customer_gateways]]
        id = "cgw"
        ip_address = "203.0.113.1"
        bgp_asn = 65000
        [[connections]]
        id = "vpn"
        customer_gateway_id = "cgw"
        target = "gw"
    "#;
    let c = ApplianceConfig::from_toml_str(text).unwrap();
    assert_eq!(c.gateway.asn, 64_512);
    assert_eq!(c.gateway.kind, GatewayKind::TransitGateway);
    assert_eq!(c.metrics.listen.to_string(), "127.0.0.1:9469");
    assert!(c.metrics.enabled);
    assert_eq!(
        c.management.socket_path.to_str(),
        Some("/run/vpnd/control.sock")
    );
    assert_eq!(c.management.socket_group, "vpnd");
    assert_eq!(c.logging.level, LogLevel::Info);
    assert_eq!(c.dataplane.hugepages_dir.to_str(), Some("/dev/hugepages"));
    assert_eq!(c.dataplane.ports[0].rx_queues, 1);
    let conn = &c.connections[0];
    assert_eq!(conn.routing, RoutingType::Dynamic);
    assert_eq!(conn.local_ipv4_network_cidr, v4("0.0.0.0/0"));
    assert_eq!(conn.remote_ipv4_network_cidr, v4("0.0.0.0/0"));
    assert_eq!(conn.local_ipv6_network_cidr, v6("::/0"));
    assert_eq!(conn.remote_ipv6_network_cidr, v6("::/0"));
    assert_eq!(
        conn.outside_ip_address_type,
        OutsideIpAddressType::PublicIpv4
    );
    assert_eq!(conn.tunnel_inside_ip_version, TunnelInsideIpVersion::Ipv4);
    assert_eq!(conn.pre_shared_key_storage, PreSharedKeyStorage::Standard);
    assert!(!conn.enable_acceleration);
    assert_eq!(
        conn.tunnels,
        [TunnelOptions::default(), TunnelOptions::default()]
    );
    let bgp = conn.bgp_options();
    assert_eq!(
        (bgp.hold_time_secs, bgp.keepalive_secs, bgp.med),
        (30, 10, 100)
    );
    assert_eq!(
        bgp.effective_max_prefixes(GatewayKind::TransitGateway),
        1000
    );
    assert_eq!(
        bgp.effective_max_prefixes(GatewayKind::VirtualPrivateGateway),
        100
    );

    // The only thing missing is the tunnels' outside address bindings.
    let errs = c.validate().unwrap_err();
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_err(
        &errs,
        "connections[vpn].tunnels[0].outside_ip_address",
        &["missing"],
    );
}

// ------------------------------------------------------------ numeric bounds

struct Bound {
    field: &'static str,
    set: fn(&mut TunnelOptions, u32),
    accepted: &'static [u32],
    rejected: &'static [u32],
    allowed: &'static str,
}

const BOUNDS: &[Bound] = &[
    Bound {
        field: "phase1_lifetime_secs",
        set: |t, v| t.phase1_lifetime_secs = v,
        accepted: &[900, 901, 28_800],
        rejected: &[0, 899, 28_801, u32::MAX],
        allowed: "900..=28800",
    },
    Bound {
        field: "phase2_lifetime_secs",
        set: |t, v| t.phase2_lifetime_secs = v,
        accepted: &[900, 3_600],
        rejected: &[0, 899, 3_601],
        allowed: "900..=3600",
    },
    Bound {
        field: "rekey_margin_time_secs",
        set: |t, v| t.rekey_margin_time_secs = v,
        accepted: &[60, 270, 1_800],
        rejected: &[0, 59, 1_801],
        allowed: "60..=1800",
    },
    Bound {
        field: "rekey_fuzz_percent",
        set: |t, v| t.rekey_fuzz_percent = v,
        accepted: &[0, 50, 100],
        rejected: &[101, 1000],
        allowed: "0..=100",
    },
    Bound {
        field: "replay_window_packets",
        set: |t, v| t.replay_window_packets = v,
        accepted: &[64, 1024, 2048],
        rejected: &[0, 63, 2049],
        allowed: "64..=2048",
    },
    Bound {
        field: "dpd_timeout_secs",
        set: |t, v| t.dpd_timeout_secs = v,
        accepted: &[30, 40, 3600, u32::MAX],
        rejected: &[0, 29],
        allowed: ">= 30",
    },
];

#[test]
fn every_numeric_bound() {
    for b in BOUNDS {
        for &v in b.accepted {
            let mut t = TunnelOptions::default();
            (b.set)(&mut t, v);
            let errs = tunnel_errs(&t);
            assert!(
                on(&errs, b.field).is_empty(),
                "{} = {v} rejected: {errs:#?}",
                b.field
            );
        }
        for &v in b.rejected {
            let mut t = TunnelOptions::default();
            (b.set)(&mut t, v);
            let errs = tunnel_errs(&t);
            assert_err(&errs, b.field, &[&v.to_string(), b.allowed]);
        }
    }
}

#[test]
fn lifetimes_and_margin_cross_rules() {
    // Phase 2 must be strictly less than phase 1.
    let mut t = TunnelOptions::default();
    t.phase1_lifetime_secs = 3_600;
    t.phase2_lifetime_secs = 3_600;
    let errs = tunnel_errs(&t);
    assert_err(
        &errs,
        "phase2_lifetime_secs",
        &["3600", "phase1_lifetime_secs = 3600", "less than"],
    );
    t.phase1_lifetime_secs = 1_000;
    t.phase2_lifetime_secs = 1_200;
    assert_err(&tunnel_errs(&t), "phase2_lifetime_secs", &["less than"]);
    // Smallest valid pair.
    t.phase1_lifetime_secs = 901;
    t.phase2_lifetime_secs = 900;
    t.rekey_margin_time_secs = 450;
    t.validate().unwrap();
    // The margin's upper bound follows phase 2.
    t.rekey_margin_time_secs = 451;
    assert_err(
        &tunnel_errs(&t),
        "rekey_margin_time_secs",
        &["451", "60..=450"],
    );
    // The default margin 270 is valid for every phase 2 lifetime.
    for p2 in 900..=3600 {
        let mut t = TunnelOptions::default();
        t.phase2_lifetime_secs = p2;
        t.validate().unwrap();
    }
}

#[test]
fn negative_numbers_are_parse_errors() {
    let e = toml::from_str::<TunnelOptions>("dpd_timeout_secs = -1").unwrap_err();
    assert!(
        e.to_string().contains("dpd_timeout_secs") || e.span().is_some(),
        "{e}"
    );
}

// ---------------------------------------------------------- algorithm lists

#[test]
fn proposal_lists() {
    let mut t = TunnelOptions::default();
    t.phase1_encryption_algorithms.clear();
    assert_err(
        &tunnel_errs(&t),
        "phase1_encryption_algorithms",
        &["at least one", "AES128-GCM-16"],
    );

    let mut t = TunnelOptions::default();
    t.phase2_encryption_algorithms = vec![EncryptionAlgorithm::Aes128, EncryptionAlgorithm::Aes128];
    assert_err(
        &tunnel_errs(&t),
        "phase2_encryption_algorithms[1]",
        &["AES128", "phase2_encryption_algorithms[0]"],
    );

    // Group 5 is phase 2 only.
    let mut t = TunnelOptions::default();
    t.phase1_dh_groups = vec![DhGroup::Modp1536];
    t.phase2_dh_groups = vec![DhGroup::Modp1536];
    let errs = tunnel_errs(&t);
    assert_err(
        &errs,
        "phase1_dh_groups[0]",
        &["5", "2, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24"],
    );
    assert!(on(&errs, "phase2_dh_groups[0]").is_empty());

    // Registry numbers we do not know parse, then fail validation.
    let t: TunnelOptions =
        toml::from_str("phase2_dh_groups = [14, 31]\nphase1_dh_groups = [1]").unwrap();
    let errs = tunnel_errs(&t);
    assert_err(&errs, "phase2_dh_groups[1]", &["31", "2, 5, 14"]);
    assert_err(&errs, "phase1_dh_groups[0]", &["1 is not allowed"]);

    // Every allowed group, one at a time.
    for g in DhGroup::PHASE1_ALLOWED {
        let mut t = TunnelOptions::default();
        t.phase1_dh_groups = vec![*g];
        t.validate().unwrap();
    }
    for g in DhGroup::PHASE2_ALLOWED {
        let mut t = TunnelOptions::default();
        t.phase2_dh_groups = vec![*g];
        t.validate().unwrap();
    }
    let mut t = TunnelOptions::default();
    t.phase2_dh_groups.clear();
    assert_err(&tunnel_errs(&t), "phase2_dh_groups", &["at least one"]);

    // Integrity: phase 1 always needs one (PRF); phase 2 only without GCM.
    let mut t = TunnelOptions::default();
    t.phase1_integrity_algorithms.clear();
    assert_err(
        &tunnel_errs(&t),
        "phase1_integrity_algorithms",
        &["at least one", "SHA2-256"],
    );
    let mut t = TunnelOptions::default();
    t.phase2_integrity_algorithms.clear();
    assert_err(&tunnel_errs(&t), "phase2_integrity_algorithms", &["GCM"]);
    t.phase2_encryption_algorithms = vec![EncryptionAlgorithm::Aes256Gcm16];
    t.validate().unwrap();
}

#[test]
fn unknown_algorithm_names_are_parse_errors_with_position() {
    let text =
        "phase1_lifetime_secs = 28800\nphase1_encryption_algorithms = [\"AES128\", \"3DES\"]\n";
    let e = toml::from_str::<TunnelOptions>(text).unwrap_err();
    let pe = ParseError::from_toml(text, &e);
    assert_eq!(pe.line, 2, "{pe}");
    assert!(
        pe.message.contains("3DES") && pe.message.contains("AES256-GCM-16"),
        "{pe}"
    );
    let e = toml::from_str::<TunnelOptions>("phase2_integrity_algorithms = [\"MD5\"]").unwrap_err();
    assert!(e.message().contains("SHA2-512"), "{e}");
}

#[test]
fn enum_values_parse_in_spec_spelling() {
    for (text, want) in [
        ("clear", DpdTimeoutAction::Clear),
        ("none", DpdTimeoutAction::None),
        ("restart", DpdTimeoutAction::Restart),
        ("Clear", DpdTimeoutAction::Clear),
    ] {
        let t: TunnelOptions = toml::from_str(&format!("dpd_timeout_action = {text:?}")).unwrap();
        assert_eq!(t.dpd_timeout_action, want);
    }
    assert!(toml::from_str::<TunnelOptions>("dpd_timeout_action = \"reboot\"").is_err());
    for (text, want) in [("add", StartupAction::Add), ("start", StartupAction::Start)] {
        let t: TunnelOptions = toml::from_str(&format!("startup_action = {text:?}")).unwrap();
        assert_eq!(t.startup_action, want);
    }
    let t: TunnelOptions =
        toml::from_str("tunnel_bandwidth = \"large\"\nike_versions = [\"ikev2\"]").unwrap();
    assert_eq!(t.tunnel_bandwidth, TunnelBandwidth::Large);
    assert_eq!(t.ike_versions, [IkeVersion::Ikev2]);
    assert!(toml::from_str::<TunnelOptions>("tunnel_bandwidth = \"huge\"").is_err());
    assert!(toml::from_str::<TunnelOptions>("ike_versions = [\"ikev3\"]").is_err());
    let t: TunnelOptions =
        toml::from_str("[log.activity]\nenabled = true\nformat = \"text\"").unwrap();
    assert!(t.log.activity.enabled);
    assert_eq!(t.log.activity.format, LogFormat::Text);
    assert!(!t.log.bgp.enabled);
}

#[test]
fn ike_versions_and_startup_action() {
    let mut t = TunnelOptions::default();
    t.ike_versions.clear();
    assert_err(
        &tunnel_errs(&t),
        "ike_versions",
        &["at least one", "ikev1, ikev2"],
    );
    t.ike_versions = vec![IkeVersion::Ikev2, IkeVersion::Ikev2];
    assert_err(&tunnel_errs(&t), "ike_versions[1]", &["ikev2"]);
    t.ike_versions = vec![IkeVersion::Ikev1];
    t.validate().unwrap();
    t.startup_action = StartupAction::Start;
    assert_err(&tunnel_errs(&t), "startup_action", &["start", "ikev2"]);
    t.ike_versions = vec![IkeVersion::Ikev1, IkeVersion::Ikev2];
    t.validate().unwrap();
}

// ---------------------------------------------------------- inside CIDRs

#[test]
fn reserved_inside_cidrs_rejected() {
    for r in [
        "169.254.0.0/30",
        "169.254.1.0/30",
        "169.254.2.0/30",
        "169.254.3.0/30",
        "169.254.4.0/30",
        "169.254.5.0/30",
        "169.254.169.252/30",
    ] {
        let mut t = TunnelOptions::default();
        t.inside_ipv4_cidr = Some(v4(r));
        assert_err(
            &tunnel_errs(&t),
            "inside_ipv4_cidr",
            &[r, "reserved", "169.254.169.252/30"],
        );
    }
    for ok in [
        "169.254.6.0/30",
        "169.254.21.0/30",
        "169.254.169.248/30",
        "169.254.255.252/30",
        "169.254.0.4/30",
    ] {
        let mut t = TunnelOptions::default();
        t.inside_ipv4_cidr = Some(v4(ok));
        t.validate().unwrap();
    }
    for (bad, why) in [
        ("169.254.10.0/29", "/30"),
        ("169.254.10.0/31", "/30"),
        ("169.254.10.2/30", "host bits"),
        ("10.0.0.0/30", "169.254.0.0/16"),
    ] {
        let mut t = TunnelOptions::default();
        t.inside_ipv4_cidr = Some(v4(bad));
        assert_err(&tunnel_errs(&t), "inside_ipv4_cidr", &[bad, why]);
    }
    for (bad, why) in [
        ("fd00::/128", "/126"),
        ("fd00::/64", "/126"),
        ("fd00::2/126", "host bits"),
        ("2001:db8::/126", "fd00::/8"),
    ] {
        let mut t = TunnelOptions::default();
        t.inside_ipv6_cidr = Some(v6(bad));
        assert_err(&tunnel_errs(&t), "inside_ipv6_cidr", &[why]);
    }
    let mut t = TunnelOptions::default();
    t.inside_ipv6_cidr = Some(v6("fd12:3456::8/126"));
    t.validate().unwrap();
}

// ------------------------------------------------------------------- PSK

#[test]
fn psk_rules_through_validation() {
    let set = |k: &str| {
        let mut t = TunnelOptions::default();
        t.pre_shared_key = Some(
            toml::from_str::<TunnelOptions>(&format!("pre_shared_key = {k:?}"))
                .unwrap()
                .pre_shared_key
                .unwrap(),
        );
        tunnel_errs(&t)
    };
    for (key, why) in [
        ("short.1", "7 characters"),
        (&"x".repeat(65), "65 characters"),
        ("0leadingzero", "starts with '0'"),
        ("bad-char-key", "[A-Za-z0-9._]"),
        ("space key here", "position 5"),
        ("ümlautkey", "position 0"),
    ] {
        let errs = set(key);
        assert_err(&errs, "pre_shared_key", &[why, "8..=64"]);
        assert!(
            !errs[0].to_string().contains(key),
            "key echoed: {}",
            errs[0]
        );
    }
    for key in [
        "abcdefgh",
        "A.b_C.d_",
        "1bcdefgh",
        &"z".repeat(64),
        "abc0defg",
    ] {
        assert!(set(key).is_empty(), "{key} rejected");
    }
}

#[test]
fn generated_psks_and_cidrs_are_valid_and_deterministic() {
    let mut c = example();
    for t in &mut c.connections[0].tunnels {
        t.pre_shared_key = None;
        t.inside_ipv4_cidr = None;
    }
    let mut a = c.clone();
    let assigned = a.assign_generated(&mut rng(7)).unwrap();
    assert_eq!(assigned.len(), 4, "{assigned:?}");
    assert!(assigned.contains(&"connections[vpn-branch1].tunnels[1].pre_shared_key".to_owned()));
    a.validate().unwrap();
    let mut b = c.clone();
    b.assign_generated(&mut rng(7)).unwrap();
    assert_eq!(a, b);
    // Nothing left to assign.
    assert!(a.clone().assign_generated(&mut rng(8)).unwrap().is_empty());
    for seed in 0..200 {
        let mut x = c.clone();
        x.assign_generated(&mut rng(seed)).unwrap();
        x.validate().unwrap();
        let k = x.connections[0].tunnels[0].pre_shared_key.as_ref().unwrap();
        assert_eq!(k.dangerous_as_str().len(), 32);
    }
    // IPv6-inside connections also get /126s; SecretsManager gets no keys
    // but the names of its keys in the key store.
    let mut x = c.clone();
    x.connections[0].tunnel_inside_ip_version = TunnelInsideIpVersion::Ipv6;
    x.connections[0].pre_shared_key_storage = PreSharedKeyStorage::SecretsManager;
    let assigned = x.assign_generated(&mut rng(3)).unwrap();
    assert_eq!(assigned.len(), 6, "{assigned:?}");
    assert!(
        x.connections[0]
            .tunnels
            .iter()
            .all(|t| t.inside_ipv6_cidr.is_some() && t.pre_shared_key.is_none())
    );
    let refs: Vec<_> = x.connections[0]
        .tunnels
        .iter()
        .map(|t| t.pre_shared_key_ref.clone().unwrap())
        .collect();
    assert_eq!(refs, ["vpn-branch1/0", "vpn-branch1/1"]);
    x.validate().unwrap();
    // A key name needs SecretsManager, and a valid name.
    let mut y = x.clone();
    y.connections[0].pre_shared_key_storage = PreSharedKeyStorage::Standard;
    let e = y.validate().unwrap_err();
    assert!(
        e.iter()
            .any(|e| e.to_string().contains("tunnels[0].pre_shared_key_ref")),
        "{e:?}"
    );
    let mut z = x.clone();
    z.connections[0].tunnels[1].pre_shared_key_ref = Some("bad name".to_owned());
    let e = z.validate().unwrap_err();
    assert!(
        e.iter()
            .any(|e| e.to_string().contains("tunnels[1].pre_shared_key_ref")),
        "{e:?}"
    );
}

// ------------------------------------------------------- connection rules

#[test]
fn example_parses_and_validates() {
    let c = example();
    c.validate().unwrap();
    assert_eq!(c.customer_gateways.len(), 1);
    assert_eq!(c.connections.len(), 1);
    assert_eq!(c.connections[0].tunnels[1].phase1_lifetime_secs, 28_800);
    // Also through the store, from the file on disk.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/appliance.toml");
    assert_eq!(ConfigStore::new(path).load().unwrap(), c);
}

#[test]
fn logging_outputs_have_defaults_and_are_validated_by_path() {
    let c = example();
    assert_eq!(c.logging.journald, None);
    assert_eq!(c.logging.file_max_bytes, DEFAULT_LOG_FILE_MAX_BYTES);
    assert_eq!(c.logging.file_keep, DEFAULT_LOG_FILE_KEEP);
    let mut c = example();
    c.logging.file = Some("vpnd.log".into());
    c.logging.file_max_bytes = 100;
    c.logging.file_keep = 0;
    let errs = c.validate().unwrap_err();
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert_err(&errs, "logging.file", &["vpnd.log", "absolute"]);
    assert_err(
        &errs,
        "logging.file_max_bytes",
        &["100", "4096..=1073741824"],
    );
    assert_err(&errs, "logging.file_keep", &["0", "1..=100"]);
    c.logging.file = Some("/var/log/vpnd/vpnd.log".into());
    c.logging.file_max_bytes = 4096;
    c.logging.file_keep = 100;
    c.validate().unwrap();
}

#[test]
fn error_paths_name_connection_and_tunnel() {
    let mut c = example();
    c.connections[0].tunnels[0].phase2_lifetime_secs = 4_000;
    c.connections[0].tunnels[1].replay_window_packets = 10;
    c.gateway.asn = 1;
    let errs = c.validate().unwrap_err();
    assert_err(
        &errs,
        "connections[vpn-branch1].tunnels[0].phase2_lifetime_secs",
        &["4000", "900..=3600"],
    );
    assert_err(
        &errs,
        "connections[vpn-branch1].tunnels[1].replay_window_packets",
        &["10", "64..=2048"],
    );
    assert_err(
        &errs,
        "gateway.asn",
        &["64512..=65534 or 4200000000..=4294967294"],
    );
    // All errors, not just the first; the customer gateway ASN 65000 differs.
    assert_eq!(errs.len(), 3, "{errs:#?}");
}

#[test]
fn both_tunnels_same_bandwidth() {
    let mut c = example();
    c.connections[0].tunnels[1].tunnel_bandwidth = TunnelBandwidth::Large;
    let errs = c.validate().unwrap_err();
    assert_err(
        &errs,
        "connections[vpn-branch1].tunnels[1].tunnel_bandwidth",
        &["large", "same bandwidth"],
    );
    // Changing it for the connection changes both.
    let c = example()
        .modify_connection_options(
            "vpn-branch1",
            VpnConnectionOptionsPatch {
                tunnel_bandwidth: Some(TunnelBandwidth::Large),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(
        c.connections[0]
            .tunnels
            .iter()
            .all(|t| t.tunnel_bandwidth == TunnelBandwidth::Large)
    );
}

#[test]
fn inside_cidrs_unique_across_tunnels_and_connections() {
    let mut c = example();
    c.connections[0].tunnels[1].inside_ipv4_cidr = Some(v4("169.254.21.0/30"));
    let errs = c.validate().unwrap_err();
    assert_err(
        &errs,
        "connections[vpn-branch1].tunnels[1].inside_ipv4_cidr",
        &["tunnels[0].inside_ipv4_cidr"],
    );
    assert_eq!(errs.len(), 1, "{errs:#?}");

    let mut c = example();
    let mut second = c.connections[0].clone();
    second.id = "vpn-2".into();
    second.tunnels[0].inside_ipv4_cidr = Some(v4("169.254.30.0/30"));
    second.tunnels[1].inside_ipv4_cidr = Some(v4("169.254.22.0/30"));
    c.gateway.outside_addresses.push(ip("198.51.100.12"));
    c.gateway.outside_addresses.push(ip("198.51.100.13"));
    second.tunnels[0].outside_ip_address = Some(ip("198.51.100.12"));
    second.tunnels[1].outside_ip_address = Some(ip("198.51.100.13"));
    c.connections.push(second);
    let errs = c.validate().unwrap_err();
    assert_err(
        &errs,
        "connections[vpn-2].tunnels[1].inside_ipv4_cidr",
        &[
            "169.254.22.0/30",
            "connections[vpn-branch1].tunnels[1].inside_ipv4_cidr",
        ],
    );
    assert_eq!(errs.len(), 1, "{errs:#?}");
    c.connections[1].tunnels[1].inside_ipv4_cidr = Some(v4("169.254.30.4/30"));
    c.validate().unwrap();

    // Same (local, remote) address pair twice: IKE cannot tell them apart.
    c.connections[1].tunnels[0].outside_ip_address = Some(ip("198.51.100.10"));
    let errs = c.validate().unwrap_err();
    assert_err(
        &errs,
        "connections[vpn-2].tunnels[0].outside_ip_address",
        &["198.51.100.10", "same customer gateway"],
    );
}

#[test]
fn tunnel_bindings() {
    let mut c = example();
    c.connections[0].tunnels[1].outside_ip_address = Some(ip("198.51.100.10"));
    let errs = c.validate().unwrap_err();
    assert_err(
        &errs,
        "connections[vpn-branch1].tunnels[1].outside_ip_address",
        &["198.51.100.10", "tunnels[0].outside_ip_address"],
    );
    assert_eq!(errs.len(), 1, "reported once: {errs:#?}");
    let mut c = example();
    c.connections[0].tunnels[1].outside_ip_address = Some(ip("198.51.100.99"));
    assert_err(
        &c.validate().unwrap_err(),
        "connections[vpn-branch1].tunnels[1].outside_ip_address",
        &["gateway.outside_addresses"],
    );
    let mut c = example();
    c.connections[0].tunnels[1].outside_ip_address = Some(ip("2001:db8::1"));
    c.gateway.outside_addresses.push(ip("2001:db8::1"));
    assert_err(
        &c.validate().unwrap_err(),
        "connections[vpn-branch1].tunnels[1].outside_ip_address",
        &["PublicIpv4", "IPv4"],
    );
}

#[test]
fn references_and_asns() {
    let mut c = example();
    c.connections[0].customer_gateway_id = "cgw-nope".into();
    c.connections[0].target = "vgw-other".into();
    let errs = c.validate().unwrap_err();
    assert_err(
        &errs,
        "connections[vpn-branch1].customer_gateway_id",
        &["cgw-nope", "does not exist"],
    );
    assert_err(
        &errs,
        "connections[vpn-branch1].target",
        &["vgw-other", "tgw-lab"],
    );

    let mut c = example();
    c.customer_gateways[0].bgp_asn = Some(64_512);
    assert_err(
        &c.validate().unwrap_err(),
        "connections[vpn-branch1].customer_gateway_id",
        &["64512", "gateway.asn"],
    );
    c.customer_gateways[0].bgp_asn = None;
    assert_err(
        &c.validate().unwrap_err(),
        "connections[vpn-branch1].customer_gateway_id",
        &["bgp_asn is required"],
    );
    c.connections[0].routing = RoutingType::Static;
    c.connections[0].bgp = None;
    c.validate().unwrap();

    for asn in [64_512, 65_534, 4_200_000_000, 4_294_967_294] {
        let mut c = example();
        c.gateway.asn = asn;
        c.customer_gateways[0].bgp_asn = Some(65_001);
        c.validate().unwrap();
    }
    for asn in [0, 1, 64_511, 65_535, 4_199_999_999, 4_294_967_295] {
        let mut c = example();
        c.gateway.asn = asn;
        assert_err(
            &c.validate().unwrap_err(),
            "gateway.asn",
            &[&asn.to_string(), "64512..=65534"],
        );
    }
    for asn in [1, 65_000, 4_294_967_294] {
        let mut c = example();
        c.customer_gateways[0].bgp_asn = Some(asn);
        c.validate().unwrap();
    }
    for asn in [0, 7224, 9059, 10124, 17943, 23_456, 4_294_967_295] {
        let mut c = example();
        c.customer_gateways[0].bgp_asn = Some(asn);
        assert_err(
            &c.validate().unwrap_err(),
            "customer_gateways[cgw-branch1].bgp_asn",
            &[&asn.to_string()],
        );
    }
}

#[test]
fn customer_gateway_address_rules() {
    // Private address with public outside type: rejected.
    let mut c = example();
    c.customer_gateways[0].ip_address = Some(ip("10.0.0.1"));
    assert_err(
        &c.validate().unwrap_err(),
        "connections[vpn-branch1].outside_ip_address_type",
        &["PublicIpv4", "10.0.0.1", "public"],
    );
    // ... accepted for a private IP VPN on a transit gateway.
    c.connections[0].outside_ip_address_type = OutsideIpAddressType::PrivateIpv4;
    c.validate().unwrap();
    c.customer_gateways[0].ip_address = Some(ip("100.64.1.1"));
    c.validate().unwrap();
    // ... but a public address is not private.
    c.customer_gateways[0].ip_address = Some(ip("203.0.113.20"));
    assert_err(
        &c.validate().unwrap_err(),
        "connections[vpn-branch1].outside_ip_address_type",
        &["RFC 1918"],
    );
    // Never-usable addresses.
    for bad in [
        "127.0.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "169.254.1.1",
        "fe80::1",
        "fd00::1",
        "::",
    ] {
        let mut c = example();
        c.customer_gateways[0].ip_address = Some(ip(bad));
        assert_err(
            &c.validate().unwrap_err(),
            "customer_gateways[cgw-branch1].ip_address",
            &[bad],
        );
    }
    // No address: needs a certificate; start and large need an address.
    let mut c = example();
    c.customer_gateways[0].ip_address = None;
    let errs = c.validate().unwrap_err();
    assert_err(
        &errs,
        "customer_gateways[cgw-branch1].ip_address",
        &["certificate"],
    );
    assert_err(
        &errs,
        "connections[vpn-branch1].tunnels[0].startup_action",
        &["start", "address"],
    );
    c.customer_gateways[0].certificate = Some("cgw-branch1-cert".into());
    c.connections[0].tunnels[0].startup_action = StartupAction::Add;
    // The certificate must name a CA chain, and we need our own certificate.
    let errs = c.validate().unwrap_err();
    assert_err(
        &errs,
        "customer_gateways[cgw-branch1].certificate",
        &["certificates.authorities"],
    );
    assert_err(
        &errs,
        "certificates.endpoint_certificate_file",
        &["endpoint certificate"],
    );
    c.certificates = certificates("cgw-branch1-cert");
    c.validate().unwrap();
    let c = c
        .modify_connection_options(
            "vpn-branch1",
            VpnConnectionOptionsPatch {
                tunnel_bandwidth: Some(TunnelBandwidth::Large),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_err(
        &c,
        "connections[vpn-branch1].tunnels[0].tunnel_bandwidth",
        &["fixed peer address"],
    );
}

#[test]
fn gateway_kind_rules() {
    // Concentrator: BGP only, no private IP VPN, no large tunnels, unique CGW IPs.
    let mut c = example();
    c.gateway.kind = GatewayKind::Concentrator;
    c.validate().unwrap();
    c.connections[0].routing = RoutingType::Static;
    c.connections[0].bgp = None;
    assert_err(
        &c.validate().unwrap_err(),
        "connections[vpn-branch1].routing",
        &["static", "BGP only"],
    );
    let mut c2 = c.clone();
    c2.connections[0].routing = RoutingType::Dynamic;
    let mut dup = c2.customer_gateways[0].clone();
    dup.id = "cgw-branch2".into();
    c2.customer_gateways.push(dup);
    assert_err(
        &c2.validate().unwrap_err(),
        "customer_gateways[cgw-branch2].ip_address",
        &["unique IP"],
    );

    // Virtual private gateway: IPv4 only, standard, public, not accelerated.
    let mut c = example();
    c.gateway.kind = GatewayKind::VirtualPrivateGateway;
    c.validate().unwrap();
    c.connections[0].tunnel_inside_ip_version = TunnelInsideIpVersion::Ipv6;
    c.connections[0].enable_acceleration = true;
    c.connections[0].tunnels[0].startup_action = StartupAction::Add;
    let errs = c.validate().unwrap_err();
    assert_err(
        &errs,
        "connections[vpn-branch1].tunnel_inside_ip_version",
        &["IPv6"],
    );
    assert_err(
        &errs,
        "connections[vpn-branch1].enable_acceleration",
        &["virtual-private-gateway"],
    );
}

#[test]
fn acceleration_rules() {
    let mut c = example();
    c.connections[0].enable_acceleration = true;
    c.connections[0].tunnels[1].dpd_timeout_action = DpdTimeoutAction::Restart;
    let errs = c.validate().unwrap_err();
    assert_err(
        &errs,
        "connections[vpn-branch1].tunnels[0].startup_action",
        &["customer gateway"],
    );
    assert_err(
        &errs,
        "connections[vpn-branch1].tunnels[1].dpd_timeout_action",
        &["restart"],
    );
    c.connections[0].tunnels[0].startup_action = StartupAction::Add;
    c.connections[0].tunnels[1].dpd_timeout_action = DpdTimeoutAction::Clear;
    c.validate().unwrap();
}

#[test]
fn routing_and_selectors() {
    let mut c = example();
    c.connections[0].static_routes = vec!["10.1.0.0/16".parse().unwrap()];
    assert_err(
        &c.validate().unwrap_err(),
        "connections[vpn-branch1].static_routes",
        &["dynamic"],
    );
    c.connections[0].routing = RoutingType::Static;
    assert_err(
        &c.validate().unwrap_err(),
        "connections[vpn-branch1].bgp",
        &["dynamic routing"],
    );
    c.connections[0].bgp = None;
    c.validate().unwrap();
    c.connections[0].static_routes = vec![
        "10.1.0.0/16".parse().unwrap(),
        "10.1.0.0/16".parse().unwrap(),
        "10.3.0.1/16".parse().unwrap(),
        "2001:db8::/32".parse().unwrap(),
    ];
    let errs = c.validate().unwrap_err();
    assert_err(
        &errs,
        "connections[vpn-branch1].static_routes[1]",
        &["static_routes[0]"],
    );
    assert_err(
        &errs,
        "connections[vpn-branch1].static_routes[2]",
        &["host bits", "10.3.0.0/16"],
    );
    assert_err(
        &errs,
        "connections[vpn-branch1].static_routes[3]",
        &["one family"],
    );
    c.connections[0].static_routes = (0..=100u8)
        .map(|i| format!("10.{i}.0.0/16").parse().unwrap())
        .collect();
    assert_err(
        &c.validate().unwrap_err(),
        "connections[vpn-branch1].static_routes",
        &["101 routes", "at most 100"],
    );

    let mut c = example();
    c.connections[0].local_ipv6_network_cidr = v6("2001:db8::/32");
    c.connections[0].remote_ipv4_network_cidr = "10.2.0.1/16".parse().unwrap();
    let errs = c.validate().unwrap_err();
    assert_err(
        &errs,
        "connections[vpn-branch1].local_ipv6_network_cidr",
        &["ipv4", "IPv4 network CIDRs"],
    );
    assert_err(
        &errs,
        "connections[vpn-branch1].remote_ipv4_network_cidr",
        &["host bits"],
    );

    let mut c = example();
    c.connections[0].tunnels[0].inside_ipv6_cidr = Some(v6("fd00::/126"));
    assert_err(
        &c.validate().unwrap_err(),
        "connections[vpn-branch1].tunnels[0].inside_ipv6_cidr",
        &["IPv6-inside"],
    );

    let mut c = example();
    c.connections[0].pre_shared_key_storage = PreSharedKeyStorage::SecretsManager;
    let errs = c.validate().unwrap_err();
    assert_err(
        &errs,
        "connections[vpn-branch1].tunnels[0].pre_shared_key",
        &["secret store"],
    );
    assert!(!format!("{errs:?}").contains("Example.key"));
}

#[test]
fn bgp_bounds() {
    let check = |f: fn(&mut BgpOptions)| {
        let mut c = example();
        let mut b = BgpOptions::default();
        f(&mut b);
        c.connections[0].bgp = Some(b);
        c.validate().err().unwrap_or_default()
    };
    assert_err(
        &check(|b| b.hold_time_secs = 3),
        "connections[vpn-branch1].bgp.keepalive_secs",
        &["10", "1..=1"],
    );
    assert!(
        check(|b| {
            b.hold_time_secs = 3;
            b.keepalive_secs = 1;
        })
        .is_empty()
    );
    assert!(
        check(|b| {
            b.hold_time_secs = 65_535;
            b.keepalive_secs = 21_845;
        })
        .is_empty()
    );
    assert!(
        check(|b| {
            b.hold_time_secs = 0;
            b.keepalive_secs = 0;
        })
        .is_empty()
    );
    assert_err(
        &check(|b| b.hold_time_secs = 2),
        "connections[vpn-branch1].bgp.hold_time_secs",
        &["3..=65535"],
    );
    assert_err(
        &check(|b| b.hold_time_secs = 65_536),
        "connections[vpn-branch1].bgp.hold_time_secs",
        &["3..=65535"],
    );
    assert_err(
        &check(|b| b.keepalive_secs = 11),
        "connections[vpn-branch1].bgp.keepalive_secs",
        &["1..=10"],
    );
    assert_err(
        &check(|b| b.hold_time_secs = 0),
        "connections[vpn-branch1].bgp.keepalive_secs",
        &["hold_time_secs = 0"],
    );
    assert_err(
        &check(|b| b.graceful_restart_time_secs = 4096),
        "connections[vpn-branch1].bgp.graceful_restart_time_secs",
        &["0..=4095"],
    );
    assert_err(
        &check(|b| b.max_prefixes = Some(0)),
        "connections[vpn-branch1].bgp.max_prefixes",
        &[">= 1"],
    );
}

#[test]
fn appliance_sections() {
    let mut c = example();
    c.gateway.outside_addresses = vec![
        ip("198.51.100.10"),
        ip("198.51.100.10"),
        ip("127.0.0.1"),
        ip("198.51.100.11"),
    ];
    c.dataplane.worker_lcores = vec![0, 2, 2, 500];
    c.dataplane.ports[0].rx_queues = 5;
    c.dataplane.ports[1].role = PortRole::Outside;
    c.dataplane.hugepages_dir = "hugepages".into();
    c.management.socket_path = "control.sock".into();
    c.metrics.listen = "127.0.0.1:0".parse().unwrap();
    let errs = c.validate().unwrap_err();
    assert_err(
        &errs,
        "gateway.outside_addresses[1]",
        &["gateway.outside_addresses[0]"],
    );
    assert_err(&errs, "gateway.outside_addresses[2]", &["loopback"]);
    assert_err(&errs, "dataplane.worker_lcores[0]", &["main_lcore"]);
    assert_err(&errs, "dataplane.worker_lcores[2]", &["worker_lcores[1]"]);
    assert_err(&errs, "dataplane.worker_lcores[3]", &["500", "0..=127"]);
    assert!(
        on(&errs, "dataplane.tunnel_policing").is_empty(),
        "{errs:#?}"
    );
    assert_err(&errs, "dataplane.ports[outside].rx_queues", &["5", "1..=4"]);
    assert_err(&errs, "dataplane.ports", &["inside"]);
    assert_err(&errs, "dataplane.hugepages_dir", &["absolute"]);
    assert_err(&errs, "management.socket_path", &["absolute"]);
    assert_err(&errs, "metrics.listen", &["port 0"]);
}

#[test]
fn worker_cpus_map_lcores_onto_cpus() {
    // Absent: lcore n on cpu n, no map.
    let mut c = example();
    assert_eq!(c.dataplane.lcore_map(), None);
    // Two workers on one cpu, from TOML: a valid configuration.
    let text = EXAMPLE.replace(
        "worker_lcores = [2, 3]",
        "worker_lcores = [2, 3]\nworker_cpus = [1, 1]",
    );
    let parsed = ApplianceConfig::from_toml_str(&text).unwrap();
    parsed.validate().unwrap();
    assert_eq!(parsed.dataplane.worker_cpus, Some(vec![1, 1]));
    assert_eq!(parsed.dataplane.lcore_map().as_deref(), Some("0@0,2@1,3@1"));
    let back = ApplianceConfig::from_toml_str(&parsed.to_toml_string().unwrap()).unwrap();
    assert_eq!(back, parsed);
    c.dataplane.main_cpu = Some(1);
    c.dataplane.worker_cpus = Some(vec![0, 0]);
    assert_eq!(c.dataplane.lcore_map().as_deref(), Some("0@1,2@0,3@0"));
    c.validate().unwrap();

    // One cpu per worker lcore, each in range; main_cpu only with them.
    c.dataplane.worker_cpus = Some(vec![0, 2000, 1]);
    c.dataplane.main_cpu = Some(4096);
    let errs = c.validate().unwrap_err();
    assert_err(
        &errs,
        "dataplane.worker_cpus",
        &["3 cpu(s)", "dataplane.worker_lcores has 2"],
    );
    assert_err(&errs, "dataplane.worker_cpus[1]", &["2000", "0..=1023"]);
    assert_err(&errs, "dataplane.main_cpu", &["4096", "0..=1023"]);
    c.dataplane.worker_cpus = None;
    c.dataplane.main_cpu = Some(0);
    let errs = c.validate().unwrap_err();
    assert_err(&errs, "dataplane.main_cpu", &["dataplane.worker_cpus"]);
}

#[test]
fn unknown_fields_rejected_with_line() {
    let text = EXAMPLE.replace(
        "dpd_timeout_secs = 40",
        "dpd_timeout_secs = 40\ndpd_interval = 10",
    );
    let e = ApplianceConfig::from_toml_str(&text).unwrap_err();
    let want_line = text
        .lines()
        .position(|l| l.starts_with("dpd_interval"))
        .unwrap()
        + 1;
    assert_eq!(e.line, want_line, "{e}");
    assert!(e.message.contains("dpd_interval"), "{e}");
    // Exactly two tunnels.
    let three = format!("{EXAMPLE}\n[[connections.tunnels]]\n");
    let e = ApplianceConfig::from_toml_str(&three).unwrap_err();
    assert!(e.message.contains("exactly 2 tunnels, found 3"), "{e}");
    let one = EXAMPLE[..EXAMPLE.find("# Tunnel 2").unwrap()].to_owned();
    let e = ApplianceConfig::from_toml_str(&one).unwrap_err();
    assert!(e.message.contains("exactly 2 tunnels, found 1"), "{e}");
}

// ------------------------------------------------------------- modify

#[test]
fn apply_patch_all_or_nothing() {
    let t = TunnelOptions::default();
    let next = t
        .apply(TunnelOptionsPatch {
            phase2_lifetime_secs: Some(1_800),
            rekey_margin_time_secs: Some(900),
            ike_versions: Some(vec![IkeVersion::Ikev2]),
            startup_action: Some(StartupAction::Start),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(next.phase2_lifetime_secs, 1_800);
    assert_eq!(next.rekey_margin_time_secs, 900);
    assert_eq!(next.startup_action, StartupAction::Start);
    assert_eq!(next.phase1_lifetime_secs, 28_800, "untouched field kept");

    // Lowering phase 2 below twice the margin breaks the margin rule:
    // nothing is applied and every error is reported.
    let errs = next
        .apply(TunnelOptionsPatch {
            phase2_lifetime_secs: Some(1_000),
            replay_window_packets: Some(4096),
            ..Default::default()
        })
        .unwrap_err();
    assert_err(&errs, "rekey_margin_time_secs", &["900", "60..=500"]);
    assert_err(&errs, "replay_window_packets", &["4096"]);
    assert_eq!(next.phase2_lifetime_secs, 1_800);

    // The patch itself is TOML-readable (the management API can take it).
    let p: TunnelOptionsPatch =
        toml::from_str("dpd_timeout_secs = 60\nphase1_dh_groups = [20]").unwrap();
    let n = t.apply(p).unwrap();
    assert_eq!(
        (n.dpd_timeout_secs, n.phase1_dh_groups.clone()),
        (60, vec![DhGroup::Ecp384])
    );
    assert!(toml::from_str::<TunnelOptionsPatch>("tunnel_bandwidth = \"large\"").is_err());
}

#[test]
fn modify_tunnel_options_checks_the_whole_appliance() {
    let c = example();
    let before = c.clone();
    let errs = c
        .modify_tunnel_options(
            "vpn-branch1",
            1,
            TunnelOptionsPatch {
                inside_ipv4_cidr: Some(v4("169.254.21.0/30")),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_err(
        &errs,
        "connections[vpn-branch1].tunnels[1].inside_ipv4_cidr",
        &["tunnels[0]"],
    );
    assert_eq!(c, before);
    let next = c
        .modify_tunnel_options(
            "vpn-branch1",
            1,
            TunnelOptionsPatch {
                inside_ipv4_cidr: Some(v4("169.254.23.0/30")),
                pre_shared_key: Some(PreSharedKey::new("New.key_123").unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        next.connections[0].tunnels[1].inside_ipv4_cidr,
        Some(v4("169.254.23.0/30"))
    );
    assert_eq!(next.connections[0].tunnels[0], c.connections[0].tunnels[0]);
    assert!(
        c.modify_tunnel_options("vpn-x", 0, TunnelOptionsPatch::default())
            .is_err()
    );
    assert_err(
        &c.modify_tunnel_options("vpn-branch1", 2, TunnelOptionsPatch::default())
            .unwrap_err(),
        "connections[vpn-branch1].tunnels",
        &["0..=1"],
    );
}

// ---------------------------------------------------------- round trips

fn certificates(name: &str) -> CertificatesConfig {
    CertificatesConfig {
        endpoint_certificate_file: Some("/etc/vpn/certs/endpoint-chain.pem".into()),
        endpoint_private_key_file: Some("/etc/vpn/private/endpoint.key".into()),
        authorities: vec![CertificateAuthority {
            certificate: name.into(),
            ca_chain_file: "/etc/vpn/ca/chain.pem".into(),
        }],
    }
}

fn full_config() -> ApplianceConfig {
    let mut c = example();
    c.gateway.outside_addresses.push(ip("2001:db8::10"));
    c.gateway.outside_addresses.push(ip("2001:db8::11"));
    c.customer_gateways.push(CustomerGateway {
        id: "cgw-v6".into(),
        ip_address: Some(ip("2001:db8:1::20")),
        bgp_asn: Some(4_200_000_001),
        certificate: Some("arn:aws:acm:eu-west-1:111122223333:certificate/abc".into()),
        device_name: Some("v6 edge".into()),
    });
    c.certificates = certificates("arn:aws:acm:eu-west-1:111122223333:certificate/abc");
    let mut v6c = VpnConnection::new("vpn-v6", "cgw-v6", "tgw-lab");
    v6c.outside_ip_address_type = OutsideIpAddressType::Ipv6;
    v6c.tunnel_inside_ip_version = TunnelInsideIpVersion::Ipv6;
    v6c.local_ipv6_network_cidr = v6("2001:db8:100::/48");
    v6c.pre_shared_key_storage = PreSharedKeyStorage::SecretsManager;
    v6c.bgp = Some(BgpOptions {
        max_prefixes: Some(500),
        ..BgpOptions::default()
    });
    for (i, t) in v6c.tunnels.iter_mut().enumerate() {
        t.outside_ip_address = Some(ip(&format!("2001:db8::1{i}")));
        t.inside_ipv4_cidr = Some(v4(&format!("169.254.40.{}/30", 4 * i)));
        t.inside_ipv6_cidr = Some(v6(&format!("fd00:1::{}/126", 4 * i)));
        t.tunnel_bandwidth = TunnelBandwidth::Large;
        t.phase2_dh_groups = vec![DhGroup::Modp1536, DhGroup::Ecp521];
        t.dpd_timeout_action = DpdTimeoutAction::Restart;
        t.enable_tunnel_lifecycle_control = true;
        t.log.bgp = LogStreamOptions {
            enabled: true,
            format: LogFormat::Text,
        };
    }
    c.connections.push(v6c);
    c
}

#[test]
fn toml_round_trip_full_config() {
    let c = full_config();
    c.validate().unwrap();
    let text = c.to_toml_string().unwrap();
    let back = ApplianceConfig::from_toml_str(&text).unwrap();
    assert_eq!(back, c, "{text}");
    assert!(
        text.contains("\"AES256-GCM-16\"")
            && text.contains("\"SHA2-256\"")
            && text.contains("\"PublicIpv4\""),
        "{text}"
    );
    // Second trip is byte-identical.
    assert_eq!(back.to_toml_string().unwrap(), text);
}

fn arb_tunnel() -> impl Strategy<Value = TunnelOptions> {
    let enc = proptest::sample::subsequence(EncryptionAlgorithm::ALL.to_vec(), 1..=4);
    let integ = proptest::sample::subsequence(IntegrityAlgorithm::ALL.to_vec(), 1..=4);
    let g1 = proptest::sample::subsequence(DhGroup::PHASE1_ALLOWED.to_vec(), 1..=12);
    let g2 = proptest::sample::subsequence(DhGroup::PHASE2_ALLOWED.to_vec(), 1..=13);
    let ike = proptest::sample::subsequence(IkeVersion::ALL.to_vec(), 1..=2);
    (
        (enc.clone(), enc, integ.clone(), integ, g1, g2, ike),
        (
            901u32..=28_800,
            900u32..=3_600,
            0u32..=100,
            64u32..=2048,
            30u32..=100_000,
        ),
        (
            any::<bool>(),
            any::<bool>(),
            0usize..3,
            0u16..16_384,
            any::<u64>(),
        ),
    )
        .prop_map(
            |(
                (e1, e2, i1, i2, g1, g2, ike),
                (p1, p2, fuzz, replay, dpd),
                (lc, logon, act, block, seed),
            )| {
                let p2 = p2.min(p1 - 1);
                let mut r = rng(seed);
                TunnelOptions {
                    outside_ip_address: None,
                    inside_ipv4_cidr: inside::next_free_inside_ipv4_cidr(
                        &std::collections::HashSet::new(),
                        Some(
                            Ipv4Net::new(
                                std::net::Ipv4Addr::from(0xA9FE_0000 + u32::from(block) * 4),
                                30,
                            )
                            .unwrap(),
                        ),
                    ),
                    inside_ipv6_cidr: None,
                    pre_shared_key: Some(PreSharedKey::generate(&mut r)),
                    pre_shared_key_ref: None,
                    phase1_encryption_algorithms: e1,
                    phase2_encryption_algorithms: e2,
                    phase1_integrity_algorithms: i1,
                    phase2_integrity_algorithms: i2,
                    phase1_dh_groups: g1,
                    phase2_dh_groups: g2,
                    phase1_lifetime_secs: p1,
                    phase2_lifetime_secs: p2,
                    rekey_margin_time_secs: 60 + (p2 / 2 - 60) * fuzz / 100,
                    rekey_fuzz_percent: fuzz,
                    replay_window_packets: replay,
                    dpd_timeout_secs: dpd,
                    dpd_timeout_action: DpdTimeoutAction::ALL[act],
                    startup_action: if ike.contains(&IkeVersion::Ikev2) {
                        StartupAction::Start
                    } else {
                        StartupAction::Add
                    },
                    ike_versions: ike,
                    tunnel_bandwidth: TunnelBandwidth::Standard,
                    log: TunnelLogOptions {
                        activity: LogStreamOptions {
                            enabled: logon,
                            format: LogFormat::Text,
                        },
                        bgp: LogStreamOptions::default(),
                    },
                    enable_tunnel_lifecycle_control: lc,
                }
            },
        )
}

proptest! {
    #[test]
    fn tunnel_options_round_trip(t in arb_tunnel()) {
        prop_assert_eq!(t.validate(), Ok(()));
        let text = toml::to_string(&t).unwrap();
        let back: TunnelOptions = toml::from_str(&text).unwrap();
        prop_assert_eq!(back, t);
    }
}

// ---------------------------------------------------------- persistence

#[test]
fn save_load_round_trip_and_prev_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = ConfigStore::new(dir.path().join("appliance.toml"));
    let first = example();
    store.save(&first).unwrap();
    assert_eq!(store.load().unwrap(), first);
    assert!(!store.prev_path().exists(), "no previous version yet");

    let second = full_config();
    store.save(&second).unwrap();
    assert_eq!(store.load().unwrap(), second);
    assert_eq!(ConfigStore::new(store.prev_path()).load().unwrap(), first);

    let third = first
        .modify_tunnel_options(
            "vpn-branch1",
            0,
            TunnelOptionsPatch {
                dpd_timeout_secs: Some(45),
                ..Default::default()
            },
        )
        .unwrap();
    store.save(&third).unwrap();
    assert_eq!(store.load().unwrap(), third);
    assert_eq!(ConfigStore::new(store.prev_path()).load().unwrap(), second);
    // No temp files left behind by successful saves.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // The file holds pre-shared keys: owner-only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(store.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn invalid_config_is_not_saved() {
    let dir = tempfile::tempdir().unwrap();
    let store = ConfigStore::new(dir.path().join("c.toml"));
    store.save(&example()).unwrap();
    let mut bad = example();
    bad.connections[0].tunnels[0].replay_window_packets = 1;
    match store.save(&bad) {
        Err(StoreError::Invalid { errors, .. }) => assert_err(
            &errors,
            "connections[vpn-branch1].tunnels[0].replay_window_packets",
            &["64..=2048"],
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.load().unwrap(), example());
}

#[test]
fn corrupt_file_error_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("appliance.toml");
    let store = ConfigStore::new(&path);
    store.save(&example()).unwrap();
    store.save(&full_config()).unwrap();

    // Truncated in the middle of a string value.
    let text = std::fs::read_to_string(&path).unwrap();
    let cut = text.find("\"AES256-GCM-16").unwrap() + 5;
    std::fs::write(&path, &text[..cut]).unwrap();
    let err = store.load().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Parse { .. }), "{err:?}");
    assert!(msg.contains(path.to_str().unwrap()), "{msg}");
    let line = text[..cut].matches('\n').count() + 1;
    assert!(
        msg.contains(&format!(":{line}:")),
        "{msg} (want line {line})"
    );

    // No silent fallback...
    assert!(store.load().is_err());
    // ...only when asked.
    let (c, from) = store.load_or_prev().unwrap();
    assert_eq!(from, LoadedFrom::Previous);
    assert_eq!(c, example());

    // Garbage bytes.
    std::fs::write(&path, b"\x00\xff\xfe not toml").unwrap();
    let msg = store.load().unwrap_err().to_string();
    assert!(msg.contains(path.to_str().unwrap()), "{msg}");

    // Both unusable.
    std::fs::write(store.prev_path(), "[gateway\n").unwrap();
    let err = store.load_or_prev().unwrap_err();
    assert!(matches!(err, StoreError::BothUnusable { .. }));
    assert!(err.to_string().contains("appliance.toml.prev:1:"), "{err}");

    // Missing file.
    let missing = ConfigStore::new(dir.path().join("nope.toml"));
    assert!(matches!(
        missing.load(),
        Err(StoreError::Io { op: "read", .. })
    ));
}

#[test]
fn every_truncation_of_the_file_is_an_error_or_a_valid_config() {
    // Truncation never panics the loader; what it returns is either an
    // error or a configuration that passed validation.
    let text = full_config().to_toml_string().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    let store = ConfigStore::new(&path);
    for cut in (0..text.len()).step_by(7) {
        std::fs::write(&path, &text.as_bytes()[..cut]).unwrap();
        if let Ok(c) = store.load() {
            c.validate().unwrap();
        }
    }
}

#[test]
fn interrupted_save_never_corrupts_target() {
    let steps = [
        SaveStep::PartialWrite,
        SaveStep::TempSynced,
        SaveStep::PrevKept,
        SaveStep::Renamed,
    ];
    for step in steps {
        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::new(dir.path().join("appliance.toml"));
        let old = example();
        let new = full_config();
        store.save(&old).unwrap();
        store.save_steps(&new, Some(step)).unwrap();
        let got = store.load().unwrap();
        if step >= SaveStep::Renamed {
            assert_eq!(got, new, "{step:?}");
        } else {
            assert_eq!(got, old, "{step:?}");
        }
        // A later, complete save works despite the debris, and clean-up
        // removes it.
        store.save(&new).unwrap();
        assert_eq!(store.load().unwrap(), new);
        let stale = store.remove_stale_temp_files().unwrap();
        assert_eq!(stale, usize::from(step < SaveStep::Renamed), "{step:?}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A crash at any point of a save — modelled as stray temp files of any
    /// length, with any bytes, plus an interrupted save at any step — leaves
    /// the target loadable as the old or the new configuration.
    #[test]
    fn stray_temp_files_never_corrupt_target(
        cut_frac in 0.0f64..=1.0,
        junk in proptest::collection::vec(any::<u8>(), 0..256),
        step in 0usize..4,
        strays in 0usize..4,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::new(dir.path().join("a.toml"));
        let old = example();
        let new = full_config();
        store.save(&old).unwrap();
        let new_text = new.to_toml_string().unwrap();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let cut = (new_text.len() as f64 * cut_frac) as usize;
        for i in 0..strays {
            let p = dir.path().join(format!(".a.toml.tmp.999.{i}"));
            let mut bytes = new_text.as_bytes()[..cut].to_vec();
            bytes.extend_from_slice(&junk);
            std::fs::write(p, bytes).unwrap();
        }
        let step = [SaveStep::PartialWrite, SaveStep::TempSynced, SaveStep::PrevKept, SaveStep::Renamed][step];
        store.save_steps(&new, Some(step)).unwrap();
        let got = store.load().unwrap();
        prop_assert!(got == old || got == new);
        prop_assert_eq!(got == new, step == SaveStep::Renamed);
    }
}

#[test]
fn next_hop_macs_and_the_kernel_port_are_checked() {
    assert_eq!(parse_mac("02:00:00:00:00:0a"), Ok([2, 0, 0, 0, 0, 10]));
    for bad in [
        "02:00:00:00:00",
        "02:00:00:00:00:0a:0b",
        "2:0:0:0:0:a",
        "zz:00:00:00:00:00",
        "",
    ] {
        assert!(parse_mac(bad).is_err(), "{bad:?}");
    }
    let mut c = example();
    c.dataplane.outside_next_hop_mac = Some("02:00:00:00:00:01".into());
    c.dataplane.inside_next_hop_mac = Some("not-a-mac".into());
    c.dataplane.inside_addresses = vec!["10.2.0.1".parse().unwrap()];
    let errs = c.validate().unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].field(), "dataplane.inside_next_hop_mac");
    assert!(errs[0].value().contains("not-a-mac"));

    // One kernel port is optional; two are refused; outside and inside
    // stay mandatory.
    let mut c = example();
    let kernel = PortConfig {
        name: "kernel".into(),
        device: "net_tap0,iface=vpnd0".into(),
        role: PortRole::Kernel,
        rx_queues: 1,
        tx_queues: None,
    };
    c.dataplane.ports.push(kernel.clone());
    c.validate().unwrap();
    let text = c.to_toml_string().unwrap();
    assert!(text.contains("role = \"kernel\""), "{text}");
    assert_eq!(ApplianceConfig::from_toml_str(&text).unwrap(), c);
    let mut two = c.clone();
    two.dataplane.ports.push(PortConfig {
        name: "kernel2".into(),
        ..kernel
    });
    let errs = two.validate().unwrap_err();
    assert!(
        errs.iter().any(|e| e.field() == "dataplane.ports"),
        "{errs:?}"
    );
    c.dataplane.ports.retain(|p| p.role != PortRole::Inside);
    let errs = c.validate().unwrap_err();
    assert!(
        errs.iter().any(|e| e.field() == "dataplane.ports"),
        "{errs:?}"
    );
}

/// `dataplane.tunnel_policing`: on by default (and then not written out),
/// off allowed except for a concentrator, whose per-tunnel cap is fixed.
#[test]
fn tunnel_policing_defaults_on_and_stays_on_for_a_concentrator() {
    let mut c = example();
    assert!(c.dataplane.tunnel_policing);
    assert!(!c.to_toml_string().unwrap().contains("tunnel_policing"));
    c.dataplane.tunnel_policing = false;
    assert!(
        c.to_toml_string()
            .unwrap()
            .contains("tunnel_policing = false")
    );
    if let Err(errs) = c.validate() {
        assert!(
            on(&errs, "dataplane.tunnel_policing").is_empty(),
            "{errs:#?}"
        );
    }
    c.gateway.kind = GatewayKind::Concentrator;
    let errs = c.validate().unwrap_err();
    assert_err(
        &errs,
        "dataplane.tunnel_policing",
        &["false", "concentrator", "not adjustable"],
    );
}

/// Issue 17: a static route over the appliance's own networks, outside
/// addresses or a tunnel's inside addresses black-holes traffic; each is
/// refused with the field it collides with.
#[test]
fn static_routes_that_would_capture_the_appliance_s_own_traffic() {
    let mut c = example();
    c.connections[0].routing = RoutingType::Static;
    c.connections[0].bgp = None;
    let route = |c: &mut ApplianceConfig, r: &str| {
        c.connections[0].static_routes = vec![r.parse().unwrap()];
        c.validate().err().unwrap_or_default()
    };
    let f = "connections[vpn-branch1].static_routes[0]";

    // The gateway's local network, a part of it, a supernet of it.
    for r in ["10.2.0.0/16", "10.2.3.0/24", "10.0.0.0/8"] {
        assert_err(
            &route(&mut c, r),
            f,
            &[r, "gateway.local_networks[0] = 10.2.0.0/16"],
        );
    }
    // The default route collides with everything at once.
    let errs = route(&mut c, "0.0.0.0/0");
    assert_err(&errs, f, &["gateway.local_networks[0]"]);
    assert_err(&errs, f, &["gateway.outside_addresses[0] = 198.51.100.10"]);
    assert_err(
        &errs,
        f,
        &["customer_gateways[cgw-branch1].ip_address = 203.0.113.20"],
    );
    assert_err(
        &errs,
        f,
        &["connections[vpn-branch1].tunnels[0].inside_ipv4_cidr = 169.254.21.0/30"],
    );
    // Outside addresses, ours and the peer's.
    assert_err(
        &route(&mut c, "198.51.100.0/24"),
        f,
        &[
            "gateway.outside_addresses[0] = 198.51.100.10",
            "IKE and ESP",
        ],
    );
    assert_err(
        &route(&mut c, "203.0.113.20/32"),
        f,
        &["customer_gateways[cgw-branch1].ip_address"],
    );
    // A tunnel's inside /30: the whole link-local block, the /30 itself,
    // one address in it.
    assert_err(
        &route(&mut c, "169.254.0.0/16"),
        f,
        &["connections[vpn-branch1].tunnels[0].inside_ipv4_cidr = 169.254.21.0/30"],
    );
    for r in ["169.254.22.0/30", "169.254.22.2/32"] {
        assert_err(
            &route(&mut c, r),
            f,
            &["connections[vpn-branch1].tunnels[1].inside_ipv4_cidr = 169.254.22.0/30"],
        );
    }
    // Neighbours of each are fine.
    for r in [
        "10.1.0.0/16",
        "10.3.0.0/16",
        "169.254.22.4/30",
        "203.0.113.21/32",
    ] {
        assert_eq!(route(&mut c, r), Vec::new(), "{r}");
    }
}

/// Issue 17: errors echo what the operator sent, bounded: a 100,000
/// character identifier yields an error of a few hundred bytes that
/// still names the field and the rule.
#[test]
fn echoed_values_are_bounded() {
    let mut c = example();
    let long = "x".repeat(100_000);
    c.connections[0].id.clone_from(&long);
    let errs = c.validate().unwrap_err();
    assert!(!errs.is_empty());
    for e in &errs {
        let m = e.to_string();
        assert!(m.len() < 1_200, "{} bytes: {}", m.len(), &m[..200]);
        assert!(!m.contains(&long[..1_000]));
    }
    let id_err = errs
        .iter()
        .find(|e| e.field().ends_with(".id"))
        .expect("an error on the connection's id");
    assert!(id_err.value().contains("characters, shortened"), "{id_err}");
    assert!(id_err.field().starts_with("connections[xxx"), "{id_err}");

    assert_eq!(bounded("short".into(), 8), "short");
    let b = bounded("abcdefghij".into(), 4);
    assert_eq!(b, "ab…[10 characters, shortened]…ij");
    // Multi-byte characters are cut on character boundaries.
    let b = bounded("é".repeat(10), 4);
    assert_eq!(b, "éé…[10 characters, shortened]…éé");
}

/// The preference lists hold exactly the allowed values, each once.
#[test]
fn preference_orders_are_permutations_of_the_allowed_sets() {
    fn same<T: Ord + Clone>(a: &[T], b: &[T]) -> bool {
        let (mut a, mut b) = (a.to_vec(), b.to_vec());
        a.sort();
        b.sort();
        a == b
    }
    assert!(same(
        EncryptionAlgorithm::PREFERENCE,
        EncryptionAlgorithm::ALL
    ));
    assert!(same(
        IntegrityAlgorithm::PREFERENCE,
        IntegrityAlgorithm::ALL
    ));
    let n = |v: &[DhGroup]| v.iter().map(|g| g.number()).collect::<Vec<_>>();
    assert!(same(
        &n(DhGroup::PHASE1_PREFERENCE),
        &n(DhGroup::PHASE1_ALLOWED)
    ));
    assert!(same(
        &n(DhGroup::PHASE2_PREFERENCE),
        &n(DhGroup::PHASE2_ALLOWED)
    ));
}

/// `dataplane.crypto_backend`: `auto` by default (not written out),
/// `ipsec-mb` and `ring` accepted, anything else refused by field path.
#[test]
fn crypto_backend_defaults_auto_and_refuses_unknown_names() {
    use dataplane::crypto::BackendPreference;
    let mut c = example();
    assert_eq!(c.dataplane.crypto_backend, "auto");
    assert_eq!(
        c.dataplane.crypto_backend_preference(),
        BackendPreference::Auto
    );
    assert!(!c.to_toml_string().unwrap().contains("crypto_backend"));
    for (name, pref) in [
        ("ipsec-mb", BackendPreference::IpsecMb),
        ("ring", BackendPreference::Ring),
    ] {
        c.dataplane.crypto_backend = name.to_owned();
        assert_eq!(c.dataplane.crypto_backend_preference(), pref);
        assert!(
            c.to_toml_string()
                .unwrap()
                .contains(&format!("crypto_backend = \"{name}\""))
        );
        if let Err(errs) = c.validate() {
            assert!(
                on(&errs, "dataplane.crypto_backend").is_empty(),
                "{errs:#?}"
            );
        }
    }
    c.dataplane.crypto_backend = "openssl".to_owned();
    let errs = c.validate().unwrap_err();
    assert_err(
        &errs,
        "dataplane.crypto_backend",
        &["openssl", "auto", "ipsec-mb", "ring"],
    );
}
