//! Client VPN configuration end to end: `vpnctl client-vpn …` against a
//! real `vpnd`, the exported `.ovpn` loaded unchanged by the real OpenVPN
//! 2.6 client (plus the user's own certificate and key), connecting to our
//! engine (`ovpn_server --client-vpn`, which takes the endpoint, its files
//! and its push set from the daemon's exported configuration).
//!
//! ```text
//!   test ─► vpnctl ─unix socket─► vpnd --no-dataplane (ns cvs: 10.98.0.1)
//!   test ─► vpnctl client-vpn export-config ─► cvpn.ovpn (+ <cert>/<key>)
//!   ns cvc: openvpn --config cvpn.ovpn ──veth──► ns cvs: ovpn_server --client-vpn appliance.toml cvpn-1
//! ```
//!
//! * `exported_config_connects_split_tunnel_udp`: create (bad input
//!   refused with field paths), rules and routes, export; the client
//!   connects over UDP with no option complaint, verifies the server's
//!   name, gets 192.168.100.2/22 and exactly the route table as routes;
//!   pings the endpoint's tunnel address through the data channel.
//! * `exported_config_connects_full_tunnel_tcp`: the endpoint modified to
//!   TCP 443 and full tunnel; the new export connects over TCP and the
//!   client's default route (0/1 + 128/1) points into the tunnel.
#![forbid(unsafe_code)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use e2e::{Netns, Proc, bin, bounded, require_root, tag, text, veth, wait_until};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

const OUTSIDE: &str = "10.98.0.1";
const CLIENT_IP: &str = "10.98.0.2";
const SERVER_TUN_IP: &str = "192.168.100.1";
const CLIENT_TUN_IP: &str = "192.168.100.2";

struct Node {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.not_before = rcgen::date_time_ymd(2025, 1, 1);
    p.not_after = rcgen::date_time_ymd(2035, 1, 1);
    p.use_authority_key_identifier_extension = true;
    p
}

fn ca(cn: &str) -> Node {
    let mut p = params(cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let pem = p.self_signed(&key).unwrap().pem();
    Node {
        params: p,
        key,
        pem,
    }
}

fn leaf(cn: &str, server: bool, by: &Node) -> Node {
    let mut p = params(cn);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyAgreement,
    ];
    p.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let issuer = Issuer::from_params(&by.params, &by.key);
    let pem = p.signed_by(&key, &issuer).unwrap().pem();
    Node {
        params: p,
        key,
        pem,
    }
}

fn openvpn_available() -> bool {
    let ok = e2e::sh_ok("command -v openvpn");
    if !ok {
        testkit::tool_missing("openvpn (Debian package openvpn)");
    }
    ok
}

/// vpnd (management only) in the server namespace, the endpoint's files,
/// the two namespaces.
struct Lab {
    dir: tempfile::TempDir,
    server_ns: Netns,
    client_ns: Netns,
    _vpnd: Proc,
    ca: Node,
}

impl Lab {
    fn new() -> Self {
        require_root();
        let t = tag();
        let server_ns = Netns::new(&format!("cvs{t}"));
        let client_ns = Netns::new(&format!("cvc{t}"));
        veth(&server_ns, "cvs0", &client_ns, "cvc0");
        server_ns.sh(&format!("ip addr add {OUTSIDE}/24 dev cvs0"));
        client_ns.sh(&format!("ip addr add {CLIENT_IP}/24 dev cvc0"));
        let dir = tempfile::tempdir().unwrap();
        let ca = ca("cvpn client CA");
        let server = leaf("vpn.example", true, &ca);
        let mut tc = [0u8; 256];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut tc)
            .unwrap();
        let w = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        w("ca.pem", &ca.pem);
        w("server.pem", &server.pem);
        w("server.key", &server.key.serialize_pem());
        w(
            "tc.key",
            &control::openvpn::tls_crypt::StaticKey::from_bytes(tc).to_file_text(),
        );
        let socket = dir.path().join("control.sock");
        w(
            "vpnd.toml",
            &format!(
                r#"
[gateway]
id = "tgw-cvpn"
outside_addresses = ["{OUTSIDE}"]
local_networks = ["10.2.0.0/16"]

[dataplane]
worker_lcores = [1]

[[dataplane.ports]]
name = "outside"
device = "net_null0"
role = "outside"

[[dataplane.ports]]
name = "inside"
device = "net_null1"
role = "inside"

[management]
socket_path = "{}"

[metrics]
enabled = false
"#,
                socket.display()
            ),
        );
        let mut cmd = server_ns.command(&bin("vpnd"));
        cmd.arg("--config")
            .arg(dir.path().join("vpnd.toml"))
            .arg("--no-dataplane");
        let mut vpnd = Proc::spawn(cmd, &dir.path().join("vpnd.log"));
        let lab_ctl = |args: &[&str]| {
            let mut c = Command::new(bin("vpnctl"));
            c.arg("--socket").arg(&socket).args(args);
            bounded(c, Duration::from_secs(30))
        };
        assert!(
            wait_until(Duration::from_secs(30), || vpnd.running()
                && lab_ctl(&["ping"]).status.success()),
            "vpnd did not come up: {}",
            vpnd.output()
        );
        Self {
            dir,
            server_ns,
            client_ns,
            _vpnd: vpnd,
            ca,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn ctl(&self, args: &[&str]) -> Output {
        let mut c = Command::new(bin("vpnctl"));
        c.arg("--socket")
            .arg(self.dir.path().join("control.sock"))
            .args(args);
        bounded(c, Duration::from_secs(30))
    }

    /// `vpnctl args…`, which must succeed; its output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(out.status.success(), "vpnctl {args:?}: {}", text(&out));
        text(&out)
    }

    /// Exports the endpoint's `.ovpn` and the daemon's configuration,
    /// starts `ovpn_server` from them, and the client from the `.ovpn`
    /// with a fresh client certificate appended (the user's step).
    fn connect(&self, name: &str) -> (Proc, Proc, String) {
        let ovpn = self.path(&format!("{name}.ovpn"));
        self.ok(&["client-vpn", "export-config", "cvpn-1", "-o", &ovpn]);
        let exported = std::fs::read_to_string(&ovpn).unwrap();
        let appliance = self.path(&format!("{name}-appliance.toml"));
        self.ok(&["config", "export", "-o", &appliance]);
        let mut cmd = self.server_ns.command(&bin("ovpn_server"));
        cmd.args(["--client-vpn", &appliance, "cvpn-1", "--secs", "90"]);
        let mut server = Proc::spawn(cmd, &self.dir.path().join(format!("{name}-server.log")));
        assert!(
            wait_until(Duration::from_secs(10), || server
                .output()
                .contains("LISTENING")),
            "ovpn_server did not start: {}",
            server.output()
        );
        assert!(server.running());
        let alice = leaf("alice", false, &self.ca);
        let with_cert = format!(
            "{exported}<cert>\n{}</cert>\n<key>\n{}</key>\n",
            alice.pem,
            alice.key.serialize_pem()
        );
        let conf = self.path(&format!("{name}-alice.ovpn"));
        std::fs::write(&conf, with_cert).unwrap();
        let mut cmd = self.client_ns.command(Path::new("openvpn"));
        cmd.args(["--config", &conf]);
        let client = Proc::spawn(cmd, &self.dir.path().join(format!("{name}-client.log")));
        (server, client, exported)
    }

    fn diag(&self, server: &Proc, client: &Proc) -> String {
        format!(
            "\n--- server ---\n{}\n--- client ---\n{}",
            server.output(),
            client.output()
        )
    }
}

/// The client came up with the pushed address, accepted every option of
/// the file, verified the server's name and pings through the tunnel.
fn assert_connected(lab: &Lab, server: &Proc, client: &Proc) {
    assert!(
        wait_until(Duration::from_secs(40), || client
            .output()
            .contains("Initialization Sequence Completed")),
        "client did not complete{}",
        lab.diag(server, client)
    );
    let out = client.output();
    for bad in ["Unrecognized option", "Options error", "option ignored"] {
        assert!(
            !out.contains(bad),
            "the client complained about the file ({bad}){}",
            lab.diag(server, client)
        );
    }
    assert!(
        out.contains("VERIFY X509NAME OK: CN=vpn.example"),
        "verify-x509-name{}",
        lab.diag(server, client)
    );
    assert!(
        server
            .output()
            .contains(&format!("cn=alice address={CLIENT_TUN_IP}")),
        "{}",
        lab.diag(server, client)
    );
    let addr = lab.client_ns.sh("ip -4 addr show dev tun0");
    let addr = String::from_utf8_lossy(&addr.stdout);
    assert!(
        addr.contains(&format!("inet {CLIENT_TUN_IP}/22")),
        "tun0: {addr}"
    );
    let ping = lab
        .client_ns
        .sh(&format!("ping -c 3 -i 0.2 -W 2 {SERVER_TUN_IP}"));
    assert!(
        String::from_utf8_lossy(&ping.stdout).contains("3 received"),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );
}

fn tun_routes(lab: &Lab) -> Vec<String> {
    let r = lab.client_ns.sh("ip -4 route show dev tun0");
    let mut v: Vec<String> = String::from_utf8_lossy(&r.stdout)
        .lines()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .collect();
    v.sort();
    v
}

/// The endpoint as created through vpnctl; bad input first.
fn create_endpoint(lab: &Lab) {
    let files = [
        "--server-cert",
        &lab.path("server.pem"),
        "--server-key",
        &lab.path("server.key"),
        "--client-ca",
        &lab.path("ca.pem"),
        "--tls-crypt-key",
        &lab.path("tc.key"),
    ]
    .map(str::to_owned);
    let create = |extra: &[&str]| {
        let mut a = vec!["client-vpn", "create", "cvpn-1"];
        a.extend(files.iter().map(String::as_str));
        a.extend_from_slice(extra);
        lab.ctl(&a)
    };
    // Rejected by the daemon (exit 2), every rule with its field path.
    let out = create(&[
        "--client-cidr",
        "192.168.100.0/23",
        "--port",
        "8443",
        "--session-timeout-hours",
        "9",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = text(&out);
    for f in ["client_cidr", "vpn_port", "session_timeout_hours"] {
        assert!(
            t.contains(&format!("client_vpn_endpoints[cvpn-1].{f}")),
            "{f}: {t}"
        );
    }
    // A pool over the local network, and a key that is not the certificate's.
    let other = lab.path("other.key");
    std::fs::write(
        &other,
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_pem(),
    )
    .unwrap();
    let out = create(&["--client-cidr", "10.0.0.0/14"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("gateway.local_networks[0]"),
        "{}",
        text(&out)
    );
    let mut a = vec![
        "client-vpn",
        "create",
        "cvpn-1",
        "--client-cidr",
        "192.168.100.0/22",
        "--server-cert",
    ];
    let (s, c, t) = (
        lab.path("server.pem"),
        lab.path("ca.pem"),
        lab.path("tc.key"),
    );
    a.extend([
        s.as_str(),
        "--server-key",
        &other,
        "--client-ca",
        &c,
        "--tls-crypt-key",
        &t,
    ]);
    let out = lab.ctl(&a);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("client_vpn_endpoints[cvpn-1].server_private_key_file"),
        "{}",
        text(&out)
    );
    // Bad input on the command line is a usage error (exit 1).
    let out = lab.ctl(&["client-vpn", "authorize", "cvpn-1", "10.0.0.0/33"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    let shown = text(&create(&[
        "--client-cidr",
        "192.168.100.0/22",
        "--port",
        "1194",
        "--split-tunnel",
        "--dns",
        "10.2.0.2",
    ]));
    assert!(shown.contains("192.168.100.1"), "{shown}");
    lab.ok(&["client-vpn", "authorize", "cvpn-1", "10.2.0.0/16"]);
    lab.ok(&[
        "client-vpn",
        "route",
        "add",
        "cvpn-1",
        "10.50.0.0/16",
        "--target",
        "vpc",
    ]);
    lab.ok(&[
        "client-vpn",
        "route",
        "add",
        "cvpn-1",
        "192.168.100.0/22",
        "--target",
        "local",
    ]);
    let shown = lab.ok(&["client-vpn", "show", "cvpn-1"]);
    for want in ["10.2.0.0/16", "10.50.0.0/16", "local", "udp/1194", "split"] {
        assert!(shown.contains(want), "{want}: {shown}");
    }
    let conns = lab.ok(&["client-vpn", "connections"]);
    assert!(conns.starts_with("ENDPOINT"), "{conns}");
}

#[test]
fn exported_config_connects_split_tunnel_udp() {
    if !testkit::own_process() || !openvpn_available() {
        return;
    }
    let lab = Lab::new();
    create_endpoint(&lab);
    let (server, mut client, exported) = lab.connect("split");
    for line in [
        "proto udp",
        &format!("remote {OUTSIDE} 1194"),
        "verify-x509-name \"vpn.example\" name",
    ] {
        assert!(exported.lines().any(|l| l == line), "{line}: {exported}");
    }
    assert_connected(&lab, &server, &client);
    // Split tunnel: exactly the route table (the local pool is the
    // tunnel's own subnet), no default route.
    assert_eq!(
        tun_routes(&lab),
        vec![
            "10.2.0.0/16 via 192.168.100.1",
            "10.50.0.0/16 via 192.168.100.1",
            "192.168.100.0/22 proto kernel",
        ]
    );
    assert!(client.terminate(Duration::from_secs(10)));
}

#[test]
fn exported_config_connects_full_tunnel_tcp() {
    if !testkit::own_process() || !openvpn_available() {
        return;
    }
    let lab = Lab::new();
    create_endpoint(&lab);
    // The client needs a default gateway for redirect-gateway to replace.
    lab.client_ns
        .sh(&format!("ip route add default via {OUTSIDE}"));
    lab.ok(&[
        "client-vpn",
        "modify",
        "cvpn-1",
        "--set",
        "transport_protocol=tcp",
        "--set",
        "vpn_port=443",
        "--set",
        "split_tunnel=false",
    ]);
    // The client CIDR cannot change.
    let out = lab.ctl(&[
        "client-vpn",
        "modify",
        "cvpn-1",
        "--set",
        "client_cidr=192.168.104.0/22",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("immutable"), "{}", text(&out));
    let (server, mut client, exported) = lab.connect("full");
    for line in ["proto tcp-client", &format!("remote {OUTSIDE} 443")] {
        assert!(exported.lines().any(|l| l == line), "{line}: {exported}");
    }
    assert!(!exported.contains("explicit-exit-notify"));
    assert_connected(&lab, &server, &client);
    let routes = tun_routes(&lab);
    assert!(
        routes.contains(&"0.0.0.0/1 via 192.168.100.1".to_owned())
            && routes.contains(&"128.0.0.0/1 via 192.168.100.1".to_owned()),
        "{routes:?}{}",
        lab.diag(&server, &client)
    );
    assert!(
        !routes.iter().any(|r| r.starts_with("10.50.")),
        "{routes:?}"
    );
    assert!(client.terminate(Duration::from_secs(10)));
}
