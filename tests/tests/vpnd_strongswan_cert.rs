//! `vpnd` end to end against a real strongSwan 5.9.8 customer gateway
//! with certificate authentication: the customer gateway names a private
//! certificate (`vpnctl cgw create --certificate`), vpnd's `[certificates]`
//! section gives our endpoint certificate and the CA chain that name
//! stands for, both PKIs are made by strongSwan's `pki` in the test (the
//! gateway's certificate with the spec's SKI / basicConstraints through
//! `openssl x509 -req`, see `ike_strongswan_cert.rs`). IKE runs in vpnd's
//! IKE thread, the Child SA goes into the DPDK dataplane, and a VPC host
//! pings the gateway's LAN through the tunnel, with strongSwan initiating
//! and then vpnd initiating. Same topology as `vpnd_strongswan.rs`:
//!
//! ```text
//!  [vt-ikc-c cgw: charon 192.0.2.2, LAN 10.1.0.1/16 on lo]
//!        │ veth kc ⇄ ko (af_packet, outside)
//!  [vt-ikc-d dp: vpnd outside 192.0.2.1 / 192.0.2.3, kernel port kk (tap)]
//!        │ veth ki ⇄ kv (af_packet, inside)
//!  [vt-ikc-v vpc: 198.51.100.2, 10.1.0.0/16 via 198.51.100.1]
//! ```
//!
//! The lab is [`e2e::swan_lab`]'s; the PKI is [`e2e::charon::make_pki`]'s.
//!
//! Needs the workspace binaries (`cargo build --workspace --bins`),
//! strongSwan and its `pki` tool, and openssl.

use std::ops::Deref;

use e2e::charon::{Alg, make_pki};
use e2e::swan_lab::{Auth, Options, SwanLab, vpn_conf};

/// The private certificate name the customer gateway is created with.
const CERT_NAME: &str = "arn:aws:acm:eu-west-1:111122223333:certificate/vt-ikc";
const CONN: &str = "vpn-sw";

struct Lab {
    // Drop order: the lab, then the PKI it reads.
    lab: SwanLab,
    _pki: tempfile::TempDir,
}

impl Lab {
    fn new() -> Self {
        // Both PKIs, before vpnd reads ours.
        let pki = tempfile::tempdir().expect("tempdir");
        make_pki(pki.path(), Alg::Ecdsa, true);
        let p = pki.path().display();
        let lab = SwanLab::new(&Options {
            ns: "ikc",
            dev: "k",
            gateway: "id = \"tgw-sw\"\nkind = \"transit-gateway\"",
            vpnd_toml: &format!(
                r#"
[certificates]
endpoint_certificate_file = "{p}/us-chain.pem"
endpoint_private_key_file = "{p}/us.key"

[[certificates.authorities]]
certificate = "{CERT_NAME}"
ca_chain_file = "{p}/root.pem"
"#
            ),
            // strongSwan: its certificate and key, our root.
            swanctl_conf: &vpn_conf(Auth::Certificates(pki.path()), "aes128gcm16", "", ""),
            conn: CONN,
            kernel_port_addresses: true,
            ..Options::default()
        });
        // swanctl reads keys from `private/` beside its file.
        let private = lab.swanctl_conf().with_file_name("private");
        std::fs::create_dir_all(&private).expect("swanctl dir");
        std::fs::copy(pki.path().join("sw.key"), private.join("sw.key")).expect("key");
        Self { lab, _pki: pki }
    }
}

impl Deref for Lab {
    type Target = SwanLab;
    fn deref(&self) -> &SwanLab {
        &self.lab
    }
}

#[test]
fn vpnd_certificate_tunnel_with_strongswan_carries_traffic() {
    if !testkit::own_process() {
        return;
    }
    let lab = Lab::new();
    // The customer gateway names its private certificate: tunnel 0 uses
    // certificate authentication (its generated PSK is not used).
    lab.create_connection(
        "cgw-sw",
        &["--certificate", CERT_NAME],
        &["--routing", "static", "--static-route", "10.1.0.0/16"],
    );
    assert_eq!(lab.tunnel(0)["status"], "DOWN");
    let out = lab.load_swanctl();
    assert!(out.contains("key from"), "swanctl --load-all: {out}");

    // 1. strongSwan initiates; we respond (startup action add). vpnd's
    // IKE thread takes the new tunnel within 250 ms: retried, bounded.
    lab.initiate();
    lab.wait_status(0, "UP", "strongSwan initiates");
    let logs = lab.ctl_ok(&["logs", "--connection", CONN]);
    assert!(
        logs.contains("authenticated cgw: 192.0.2.2 by certificate")
            && logs.contains("CN=cgw.vt.example"),
        "{logs}"
    );
    assert!(
        lab.charon
            .output()
            .contains("authentication of 'C=CH, O=vt lab, CN=aws.vt.example' with"),
        "{}",
        lab.diagnostics()
    );
    lab.traffic("strongSwan initiated");

    // 2. strongSwan deletes the IKE SA; 3. vpnd initiates (start).
    let (ok, out) = lab.swanctl("--terminate --ike vpn --timeout 10");
    assert!(ok, "{out}");
    lab.wait_status(0, "DOWN", "strongSwan deleted the IKE SA");
    lab.vpnd_initiates();
    lab.traffic("vpnd initiated");
}
