//! `vpnd` against a real strongSwan 5.9.8 customer gateway with AES-CBC +
//! HMAC Child SAs (the AWS defaults' AES128/SHA1 and AES256/SHA2-256):
//! with the `auto` crypto backend on this CPU the SAs run on
//! intel-ipsec-mb, and the worker's burst loop seals and opens their ESP
//! through its job API, a burst at a time. strongSwan (kernel-libipsec,
//! its own ESP code) is the other end: traffic from a VPC host to the
//! gateway's LAN and back must come through, both ways.
//!
//! The lab is [`e2e::swan_lab`]'s (see `vpnd_strongswan.rs`), namespace tag
//! `cbc`, interface letter `y`. Needs the workspace binaries (`cargo
//! build --workspace --bins`) and strongSwan (`../shared/lab/recipes.md`
//! § 0).

use e2e::swan_lab::{Auth, Options, SwanLab, vpn_conf};

const PSK: &str = "vty.PSK_0123456789abc";
const CONN: &str = "vpn-cbc";

fn cbc_tunnel_carries_traffic(esp: &str, swan_name: &str) {
    let lab = SwanLab::new(&Options {
        ns: "cbc",
        dev: "y",
        gateway: "id = \"tgw-cbc\"\nkind = \"transit-gateway\"",
        swanctl_conf: &vpn_conf(Auth::Psk(PSK), esp, "", ""),
        conn: CONN,
        kernel_port_addresses: true,
        ..Options::default()
    });
    let stats = lab.json(&["show", "stats"]);
    let backend = stats["response"]["stats"]["crypto_backend"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        backend.starts_with("ipsec-mb"),
        "auto picks intel-ipsec-mb on this CPU: {stats}"
    );
    lab.create_connection(
        "cgw-cbc",
        &[],
        &["--routing", "static", "--static-route", "10.1.0.0/16"],
    );
    lab.set_tunnel_options(0, &[&format!("pre_shared_key={PSK}")]);
    lab.load_swanctl();
    lab.initiate();
    lab.wait_status(0, "UP", esp);
    // strongSwan offered only this suite: the Child SA is CBC + HMAC.
    let (_, list) = lab.swanctl("--list-sas");
    assert!(list.contains(swan_name), "{esp}: {list}");
    lab.traffic(esp);
    // A second round, so that more than one burst of each direction has
    // gone through the batch.
    lab.traffic(esp);
}

#[test]
fn aes128_sha1_child_sa_carries_traffic_both_ways() {
    if !testkit::own_process() {
        return;
    }
    cbc_tunnel_carries_traffic("aes128-sha1", "AES_CBC-128/HMAC_SHA1_96");
}

#[test]
fn aes256_sha256_child_sa_carries_traffic_both_ways() {
    if !testkit::own_process() {
        return;
    }
    cbc_tunnel_carries_traffic("aes256-sha256", "AES_CBC-256/HMAC_SHA2_256_128");
}
