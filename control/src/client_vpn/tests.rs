//! Client VPN endpoint: validation with field paths, the pure policy
//! (authorization, routes, push set), modification, files and export.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, RevokedCertParams, SerialNumber,
};

use super::api::ClientVpnEndpointPatch;
use super::endpoint::*;
use super::files::check_files;
use super::ovpn;
use super::policy::*;
use crate::config::{ApplianceConfig, ConfigError};
use crate::openvpn::push::PushConfig;
use crate::openvpn::tls_crypt::StaticKey;

const EXAMPLE: &str = include_str!("../../examples/appliance.toml");

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn endpoint(id: &str, cidr: &str) -> ClientVpnEndpoint {
    ClientVpnEndpoint::new(
        id,
        net(cidr),
        "/etc/vpn/cvpn/server.pem".into(),
        "/etc/vpn/cvpn/server.key".into(),
        "/etc/vpn/cvpn/ca.pem".into(),
        "/etc/vpn/cvpn/tc.key".into(),
    )
}

fn rule(dst: &str, access: Access) -> AuthorizationRule {
    AuthorizationRule {
        destination: net(dst),
        access,
        description: None,
    }
}

fn route(dst: &str, target: &str) -> ClientVpnRoute {
    ClientVpnRoute {
        destination: net(dst),
        target: target.parse().unwrap(),
        description: None,
    }
}

fn config_with(ep: ClientVpnEndpoint) -> ApplianceConfig {
    let mut c = ApplianceConfig::from_toml_str(EXAMPLE).unwrap();
    c.client_vpn_endpoints.push(ep);
    c
}

fn errors(c: &ApplianceConfig) -> Vec<ConfigError> {
    c.validate().err().unwrap_or_default()
}

fn fields(e: &[ConfigError]) -> Vec<&str> {
    e.iter().map(ConfigError::field).collect()
}

#[test]
fn a_valid_endpoint_round_trips_through_toml() {
    let mut ep = endpoint("cvpn-1", "192.168.100.0/22");
    ep.dns_servers = vec![ip("10.2.0.2")];
    ep.split_tunnel = true;
    ep.transport_protocol = TransportProtocol::Tcp;
    ep.vpn_port = 1194;
    ep.authorization_rules = vec![rule("10.2.0.0/16", Access::Allow)];
    ep.routes = vec![
        route("10.2.0.0/16", "vpc"),
        route("10.10.0.0/16", "vpn-branch1"),
        route("192.168.100.0/22", "local"),
    ];
    let c = config_with(ep.clone());
    assert!(errors(&c).is_empty(), "{:?}", errors(&c));
    let text = c.to_toml_string().unwrap();
    assert!(text.contains("[[client_vpn_endpoints]]"), "{text}");
    assert!(text.contains("target = \"vpn-branch1\""), "{text}");
    let back = ApplianceConfig::from_toml_str(&text).unwrap();
    assert_eq!(back.client_vpn_endpoints, vec![ep]);
    // Defaults when absent.
    let d: ClientVpnEndpoint = toml::from_str(
        r#"
        id = "x"
        client_cidr = "10.200.0.0/16"
        server_certificate_file = "/a"
        server_private_key_file = "/b"
        client_ca_chain_file = "/c"
        tls_crypt_key_file = "/d"
        "#,
    )
    .unwrap();
    assert_eq!(d.vpn_port, 443);
    assert_eq!(d.transport_protocol, TransportProtocol::Udp);
    assert_eq!(d.session_timeout_hours, 24);
    assert!(!d.split_tunnel);
    assert_eq!(d.effective_max_connections(), (65_536 - 3) / 2);
}

#[test]
fn client_cidr_size_and_overlaps_are_named() {
    for (cidr, ok) in [
        ("192.168.100.0/22", true),
        ("172.16.0.0/12", true),
        ("192.168.100.0/23", false),
        ("172.0.0.0/11", false),
    ] {
        let e = errors(&config_with(endpoint("cvpn-1", cidr)));
        assert_eq!(e.is_empty(), ok, "{cidr}: {e:?}");
        if !ok {
            assert_eq!(fields(&e), ["client_vpn_endpoints[cvpn-1].client_cidr"]);
            assert!(e[0].allowed().contains("/12 ... /22"), "{e:?}");
        }
    }
    // Host bits.
    let e = errors(&config_with(endpoint("cvpn-1", "192.168.101.0/22")));
    assert_eq!(fields(&e), ["client_vpn_endpoints[cvpn-1].client_cidr"]);
    // The example's local network is 10.2.0.0/16.
    let e = errors(&config_with(endpoint("cvpn-1", "10.0.0.0/14")));
    assert_eq!(fields(&e), ["client_vpn_endpoints[cvpn-1].client_cidr"]);
    assert!(
        e[0].allowed().contains("gateway.local_networks[0]"),
        "{e:?}"
    );
    // Another endpoint's pool.
    let mut c = config_with(endpoint("cvpn-1", "192.168.100.0/22"));
    let mut two = endpoint("cvpn-2", "192.168.96.0/20");
    two.vpn_port = 1194;
    c.client_vpn_endpoints.push(two);
    let e = errors(&c);
    assert_eq!(
        fields(&e),
        [
            "client_vpn_endpoints[cvpn-1].client_cidr",
            "client_vpn_endpoints[cvpn-2].client_cidr"
        ]
    );
    // A route over the pool (other than a local one).
    let mut ep = endpoint("cvpn-1", "192.168.100.0/22");
    ep.routes = vec![
        route("192.168.0.0/16", "vpc"),
        route("192.168.101.0/24", "local"),
        route("10.50.0.0/16", "local"),
    ];
    let e = errors(&config_with(ep));
    assert_eq!(
        fields(&e),
        [
            "client_vpn_endpoints[cvpn-1].routes[0].destination",
            "client_vpn_endpoints[cvpn-1].routes[2].destination"
        ],
        "{e:?}"
    );
}

#[test]
fn every_option_is_checked_with_its_field_path() {
    let mut ep = endpoint("cvpn-1", "192.168.100.0/22");
    ep.vpn_port = 8443;
    ep.dns_servers = vec![ip("10.2.0.2"), ip("10.2.0.3"), ip("0.0.0.0")];
    ep.session_timeout_hours = 6;
    ep.client_login_banner = Some("é".repeat(MAX_BANNER_CHARS + 1));
    ep.max_connections = Some(2000);
    ep.server_certificate_file = "relative.pem".into();
    ep.outside_address = Some("192.0.2.99".parse().unwrap());
    ep.authorization_rules = (0..=MAX_AUTHORIZATION_RULES)
        .map(|i| rule(&format!("10.{}.{}.0/24", i / 256, i % 256), Access::Allow))
        .collect();
    ep.routes = vec![
        route("10.9.0.0/16", "vpn-nope"),
        route("10.9.0.0/16", "vpc"),
    ];
    let e = errors(&config_with(ep));
    let p = |f: &str| format!("client_vpn_endpoints[cvpn-1].{f}");
    let got = fields(&e);
    for f in [
        "server_certificate_file",
        "vpn_port",
        "dns_servers",
        "dns_servers[2]",
        "session_timeout_hours",
        "client_login_banner",
        "max_connections",
        "authorization_rules",
        "routes[1].destination",
        "outside_address",
        "routes[0].target",
    ] {
        assert!(got.contains(&p(f).as_str()), "{f} missing in {got:?}");
    }
    assert_eq!(got.len(), 11, "{e:#?}");
    // The banner counts characters, not bytes: 1,400 two-byte characters pass.
    let mut ep = endpoint("cvpn-1", "192.168.100.0/22");
    ep.client_login_banner = Some("é".repeat(MAX_BANNER_CHARS));
    assert!(errors(&config_with(ep)).is_empty());
}

#[test]
fn too_many_routes_and_a_route_to_an_unknown_connection() {
    let mut ep = endpoint("cvpn-1", "172.16.0.0/12");
    ep.routes = (0..=MAX_ROUTES)
        .map(|i| route(&format!("10.100.{i}.0/24"), "vpc"))
        .collect();
    let e = errors(&config_with(ep));
    assert_eq!(fields(&e), ["client_vpn_endpoints[cvpn-1].routes"]);
    assert!(e[0].to_string().contains("101 routes"), "{e:?}");
}

#[test]
fn pool_smaller_than_twice_the_connections_is_an_advisory() {
    let mut ep = endpoint("cvpn-1", "192.168.100.0/22");
    assert!(ep.advisories().is_empty(), "the default is half the pool");
    ep.max_connections = Some(600);
    let a = ep.advisories();
    assert_eq!(a.len(), 1);
    assert!(
        a[0].contains("1021 client addresses") && a[0].contains("1200"),
        "{a:?}"
    );
    // An advisory, not an error.
    assert!(errors(&config_with(ep.clone())).is_empty());
    // More connections than addresses is an error.
    ep.max_connections = Some(1022);
    let e = errors(&config_with(ep));
    assert_eq!(fields(&e), ["client_vpn_endpoints[cvpn-1].max_connections"]);
}

#[test]
fn client_cidr_is_immutable() {
    let ep = endpoint("cvpn-1", "192.168.100.0/22");
    let same = ep
        .patched(ClientVpnEndpointPatch {
            client_cidr: Some(net("192.168.100.0/22")),
            split_tunnel: Some(true),
            client_login_banner: Some("hello".into()),
            ..ClientVpnEndpointPatch::default()
        })
        .unwrap();
    assert!(same.split_tunnel);
    assert_eq!(same.client_login_banner.as_deref(), Some("hello"));
    let cleared = same
        .patched(ClientVpnEndpointPatch {
            client_login_banner: Some(String::new()),
            ..ClientVpnEndpointPatch::default()
        })
        .unwrap();
    assert_eq!(cleared.client_login_banner, None);
    let e = ep
        .patched(ClientVpnEndpointPatch {
            client_cidr: Some(net("192.168.104.0/22")),
            ..ClientVpnEndpointPatch::default()
        })
        .unwrap_err();
    assert_eq!(fields(&e), ["client_vpn_endpoints[cvpn-1].client_cidr"]);
    assert!(e[0].allowed().contains("immutable"), "{e:?}");
}

#[test]
fn authorization_most_specific_rule_wins() {
    let rules = vec![
        rule("10.0.0.0/8", Access::Allow),
        rule("10.9.0.0/16", Access::Deny),
        rule("10.9.8.0/24", Access::Allow),
        rule("172.16.5.0/24", Access::Allow),
    ];
    let table = [
        ("10.1.2.3", true),     // the /8
        ("10.9.1.1", false),    // the /16 deny inside the /8
        ("10.9.8.77", true),    // the /24 allow inside the deny
        ("10.9.9.1", false),    // back in the deny
        ("172.16.5.255", true), // its own /24
        ("172.16.6.1", false),  // no rule: no access
        ("192.168.1.1", false), // no rule
        ("0.0.0.0", false),     // no rule
    ];
    for (dst, want) in table {
        assert_eq!(authorize(&rules, ip(dst)), want, "{dst}");
    }
    // Order does not matter.
    let mut reversed = rules.clone();
    reversed.reverse();
    for (dst, want) in table {
        assert_eq!(authorize(&reversed, ip(dst)), want, "{dst} reversed");
    }
    assert!(!authorize(&[], ip("10.0.0.1")));
    assert!(authorize(
        &[rule("0.0.0.0/0", Access::Allow)],
        ip("8.8.8.8")
    ));
}

#[test]
fn routes_longest_prefix_match() {
    let routes = vec![
        route("0.0.0.0/0", "vpc"),
        route("10.10.0.0/16", "vpn-branch1"),
        route("192.168.100.0/22", "local"),
    ];
    let t = |d: &str| route_for(&routes, ip(d)).map(|r| r.target.clone());
    assert_eq!(
        t("10.10.3.4"),
        Some(RouteTarget::Connection("vpn-branch1".into()))
    );
    assert_eq!(t("192.168.101.7"), Some(RouteTarget::Local));
    assert_eq!(t("8.8.8.8"), Some(RouteTarget::Vpc));
    assert_eq!(route_for(&routes[1..], ip("8.8.8.8")), None);
}

#[test]
fn push_set_full_and_split_tunnel() {
    let mut ep = endpoint("cvpn-1", "192.168.100.0/22");
    ep.dns_servers = vec![ip("10.2.0.2")];
    ep.routes = vec![
        route("10.2.0.0/16", "vpc"),
        route("10.10.0.0/16", "vpn-branch1"),
        route("192.168.100.0/22", "local"),
    ];
    // Full tunnel (default): 0.0.0.0/0 by redirect-gateway, no routes.
    let full = push_options(&ep);
    assert!(full.redirect_gateway);
    assert!(full.routes.is_empty());
    assert_eq!(full.dns, vec![ip("10.2.0.2")]);
    let reply = PushOptions::push_config(&ep).reply(
        ip("192.168.100.2"),
        0,
        crate::openvpn::data::DataCipher::Aes256Gcm,
        false,
    );
    assert!(reply.contains(",redirect-gateway def1"), "{reply}");
    assert!(!reply.contains(",route 10."), "{reply}");
    assert!(reply.contains(",dhcp-option DNS 10.2.0.2"), "{reply}");
    assert!(
        reply.contains(",ifconfig 192.168.100.2 255.255.252.0"),
        "{reply}"
    );
    // Split tunnel: the route table, without the pool itself.
    ep.split_tunnel = true;
    let split = push_options(&ep);
    assert!(!split.redirect_gateway);
    assert_eq!(split.routes, vec![net("10.2.0.0/16"), net("10.10.0.0/16")]);
    let reply = PushOptions::push_config(&ep).reply(
        ip("192.168.100.2"),
        0,
        crate::openvpn::data::DataCipher::Aes256Gcm,
        false,
    );
    assert!(!reply.contains("redirect-gateway"), "{reply}");
    assert!(reply.contains(",route 10.2.0.0 255.255.0.0"), "{reply}");
    assert!(reply.contains(",route 10.10.0.0 255.255.0.0"), "{reply}");
    assert!(!reply.contains(",route 192.168.100.0"), "{reply}");
}

#[test]
fn exported_ciphers_are_the_engines() {
    assert_eq!(ovpn::DATA_CIPHERS.to_vec(), PushConfig::default().ciphers);
}

/// A CA, a server certificate under it, a tls-crypt key and a CRL, as
/// files in `dir`.
pub(crate) struct Pki {
    ca_params: CertificateParams,
    ca_key: KeyPair,
    dir: PathBuf,
}

fn base_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.not_before = rcgen::date_time_ymd(2025, 1, 1);
    p.not_after = rcgen::date_time_ymd(2035, 1, 1);
    p
}

impl Pki {
    pub(crate) fn new(dir: &Path, ca_cn: &str) -> Self {
        let mut p = base_params(ca_cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let pem = p.self_signed(&key).unwrap().pem();
        std::fs::write(dir.join(format!("{ca_cn}.pem")), pem).unwrap();
        Self {
            ca_params: p,
            ca_key: key,
            dir: dir.to_owned(),
        }
    }

    fn leaf(&self, name: &str, cn: &str, eku: ExtendedKeyUsagePurpose) -> (PathBuf, PathBuf) {
        let mut p = base_params(cn);
        p.is_ca = IsCa::ExplicitNoCa;
        p.extended_key_usages = vec![eku];
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let pem = p.signed_by(&key, &issuer).unwrap().pem();
        let c = self.dir.join(format!("{name}.pem"));
        let k = self.dir.join(format!("{name}.key"));
        std::fs::write(&c, pem).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    pub(crate) fn crl(&self, name: &str, entries: u64) -> PathBuf {
        let params = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2026, 1, 1),
            next_update: rcgen::date_time_ymd(2027, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: (1..=entries)
                .map(|n| RevokedCertParams {
                    serial_number: SerialNumber::from(n),
                    revocation_time: rcgen::date_time_ymd(2026, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let pem = params.signed_by(&issuer).unwrap().pem().unwrap();
        let path = self.dir.join(format!("{name}.crl"));
        std::fs::write(&path, pem).unwrap();
        path
    }
}

pub(crate) fn with_files(dir: &Path, pki: &Pki) -> ClientVpnEndpoint {
    let (cert, key) = pki.leaf("server", "vpn.example", ExtendedKeyUsagePurpose::ServerAuth);
    let tc = dir.join("tc.key");
    std::fs::write(&tc, StaticKey::from_bytes([7; 256]).to_file_text()).unwrap();
    ClientVpnEndpoint::new(
        "cvpn-1",
        net("192.168.100.0/22"),
        cert,
        key,
        dir.join("client-ca.pem"),
        tc,
    )
}

#[test]
fn files_are_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "client-ca");
    let mut ep = with_files(dir.path(), &pki);
    ep.crl_file = Some(pki.crl("ok", 3));
    let m = check_files(&ep).unwrap();
    assert_eq!(m.server_common_name, "vpn.example");
    assert_eq!(m.crl_entries, 3);
    assert!(m.ca_pem.contains("BEGIN CERTIFICATE"));
    assert!(StaticKey::parse(&m.tls_crypt_key).is_ok());

    let p = |f: &str| format!("client_vpn_endpoints[cvpn-1].{f}");
    // A key that is not the certificate's.
    let (_, other_key) = pki.leaf("other", "other", ExtendedKeyUsagePurpose::ServerAuth);
    let mut bad = ep.clone();
    bad.server_private_key_file = other_key;
    let e = check_files(&bad).unwrap_err();
    assert_eq!(fields(&e), [p("server_private_key_file")], "{e:?}");
    // A client certificate as the server's: no serverAuth.
    let (cc, ck) = pki.leaf("client", "alice", ExtendedKeyUsagePurpose::ClientAuth);
    let mut bad = ep.clone();
    bad.server_certificate_file = cc;
    bad.server_private_key_file = ck;
    let e = check_files(&bad).unwrap_err();
    assert_eq!(fields(&e), [p("server_certificate_file")], "{e:?}");
    assert!(e[0].allowed().contains("serverAuth"), "{e:?}");
    // A CA file of another CA: the server certificate does not chain to it.
    let _ = Pki::new(dir.path(), "someone-else");
    let mut bad = ep.clone();
    bad.client_ca_chain_file = dir.path().join("someone-else.pem");
    bad.crl_file = None;
    let e = check_files(&bad).unwrap_err();
    assert_eq!(fields(&e), [p("server_certificate_file")], "{e:?}");
    // A CA file holding a leaf certificate.
    let mut bad = ep.clone();
    bad.client_ca_chain_file = dir.path().join("server.pem");
    bad.crl_file = None;
    let e = check_files(&bad).unwrap_err();
    assert!(
        fields(&e).contains(&p("client_ca_chain_file").as_str()),
        "{e:?}"
    );
    // Missing files, a broken tls-crypt key (not echoed), a CRL of another CA.
    let mut bad = ep.clone();
    std::fs::write(
        dir.path().join("bad-tc.key"),
        "-----BEGIN OpenVPN Static key V1-----\nzz\n-----END OpenVPN Static key V1-----\n",
    )
    .unwrap();
    bad.tls_crypt_key_file = dir.path().join("bad-tc.key");
    bad.server_certificate_file = dir.path().join("absent.pem");
    let other = Pki::new(dir.path(), "crl-ca");
    bad.crl_file = Some(other.crl("foreign", 1));
    let e = check_files(&bad).unwrap_err();
    assert_eq!(
        fields(&e),
        [
            p("server_certificate_file"),
            p("crl_file"),
            p("tls_crypt_key_file")
        ],
        "{e:?}"
    );
    assert!(!e[2].to_string().contains("zz"), "{e:?}");
}

#[test]
fn crl_of_more_than_20000_entries_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "client-ca");
    let mut ep = with_files(dir.path(), &pki);
    ep.crl_file = Some(pki.crl("full", 20_000));
    assert_eq!(check_files(&ep).unwrap().crl_entries, 20_000);
    ep.crl_file = Some(pki.crl("over", 20_001));
    let e = check_files(&ep).unwrap_err();
    assert_eq!(fields(&e), ["client_vpn_endpoints[cvpn-1].crl_file"]);
    assert!(e[0].to_string().contains("20001 entries"), "{e:?}");
}

#[test]
fn export_renders_a_client_file() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "client-ca");
    let mut ep = with_files(dir.path(), &pki);
    let m = check_files(&ep).unwrap();
    let text = ovpn::render(&ep, "198.51.100.10".parse().unwrap(), &m);
    for line in [
        "client",
        "dev tun",
        "proto udp",
        "remote 198.51.100.10 443",
        "nobind",
        "remote-cert-tls server",
        "verify-x509-name \"vpn.example\" name",
        "data-ciphers AES-256-GCM:AES-128-GCM",
        "reneg-sec 0",
        "explicit-exit-notify 1",
        "<ca>",
        "</ca>",
        "<tls-crypt>",
        "-----BEGIN OpenVPN Static key V1-----",
        "</tls-crypt>",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
    }
    assert!(!text.contains("PRIVATE KEY"), "the server key never leaves");
    assert!(!text.lines().any(|l| l == "<cert>" || l == "<key>"));
    ep.transport_protocol = TransportProtocol::Tcp;
    ep.vpn_port = 1194;
    let text = ovpn::render(&ep, "2001:db8::1".parse().unwrap(), &m);
    assert!(
        text.contains("\nproto tcp-client\nremote 2001:db8::1 1194\n"),
        "{text}"
    );
    assert!(!text.contains("explicit-exit-notify"));
}

/// The commented example in `control/examples/appliance.toml`, uncommented,
/// is a valid configuration.
#[test]
fn the_examples_endpoint_is_valid() {
    let i = EXAMPLE.find("# [[client_vpn_endpoints]]").unwrap();
    let block: String = EXAMPLE[i..]
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
        .collect();
    let c = ApplianceConfig::from_toml_str(&format!("{}{block}", &EXAMPLE[..i])).unwrap();
    assert_eq!(c.client_vpn_endpoints.len(), 1);
    assert!(errors(&c).is_empty(), "{:?}", errors(&c));
    assert!(push_options(&c.client_vpn_endpoints[0]).routes == vec![net("10.2.0.0/16")]);
}
