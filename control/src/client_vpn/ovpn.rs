//! `export-config`: the `.ovpn` client configuration of an endpoint, for a
//! stock OpenVPN 2.6 client (and the clients built on it), as the cloud
//! service hands it out: the endpoint's address and transport, its CA and
//! tls-crypt key inline, the data ciphers our engine speaks. The client
//! certificate and key are the user's to add (`<cert>`/`<key>` blocks or
//! `cert`/`key` lines), so one file serves every user of the endpoint.
//!
//! Directives and why:
//!
//! * `client`, `dev tun`, `nobind`, `resolv-retry infinite`: a routed
//!   client on any local port.
//! * `proto udp` | `proto tcp-client`, `remote <outside address> <port>`.
//! * `remote-cert-tls server` and `verify-x509-name "<CN>" name`: the
//!   client accepts only a server certificate with the `serverAuth` usage
//!   and the endpoint's common name (files checks both exist).
//! * `data-ciphers AES-256-GCM:AES-128-GCM`: what our data channel
//!   implements, in our order of preference; `cipher AES-256-GCM` for the
//!   fallback the 2.6 client would otherwise warn about.
//! * `reneg-sec 0`: the server decides when data keys are renegotiated;
//!   the client does not start renegotiations of its own (the cloud
//!   service's file says the same).
//! * `explicit-exit-notify 1` (UDP): the client tells the server when it
//!   leaves, so its address is released at once (TCP has the close).
//! * `<ca>`: the client CA chain, which the server certificate chains to.
//! * `<tls-crypt>`: the static key that encrypts and authenticates every
//!   control packet; without it the endpoint ignores the client.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::endpoint::{ClientVpnEndpoint, TransportProtocol};
use super::files::EndpointMaterial;
use crate::openvpn::data::DataCipher;

/// The data ciphers the exported file offers, ours in order.
pub const DATA_CIPHERS: [DataCipher; 2] = [DataCipher::Aes256Gcm, DataCipher::Aes128Gcm];

/// `s` as one quoted argument of an OpenVPN configuration line.
fn quoted(s: &str) -> String {
    let mut q = String::from("\"");
    for c in s.chars() {
        if c == '\\' || c == '"' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// PEM text ending in exactly one newline.
fn block(text: &str) -> String {
    let mut t = text.trim_end().to_owned();
    t.push('\n');
    t
}

/// The `.ovpn` text for `ep`, whose clients connect to `remote`.
#[must_use]
pub fn render(ep: &ClientVpnEndpoint, remote: IpAddr, m: &EndpointMaterial) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# OpenVPN client configuration of Client VPN endpoint {}, exported by vpnd.",
        ep.id
    );
    s.push_str(
        "# Add your client certificate and its key before use: <cert>...</cert> and\n\
         # <key>...</key> blocks at the end of this file, or `cert FILE` / `key FILE` lines.\n",
    );
    s.push_str("client\ndev tun\n");
    let proto = match ep.transport_protocol {
        TransportProtocol::Udp => "udp",
        TransportProtocol::Tcp => "tcp-client",
    };
    let _ = writeln!(s, "proto {proto}");
    let _ = writeln!(s, "remote {remote} {}", ep.vpn_port);
    s.push_str("resolv-retry infinite\nnobind\nremote-cert-tls server\n");
    let _ = writeln!(s, "verify-x509-name {} name", quoted(&m.server_common_name));
    let names: Vec<&str> = DATA_CIPHERS.iter().map(|c| c.name()).collect();
    let _ = writeln!(s, "data-ciphers {}", names.join(":"));
    let _ = writeln!(s, "cipher {}", DATA_CIPHERS[0].name());
    s.push_str("reneg-sec 0\n");
    if ep.transport_protocol == TransportProtocol::Udp {
        s.push_str("explicit-exit-notify 1\n");
    }
    s.push_str("verb 3\n");
    let _ = write!(s, "<ca>\n{}</ca>\n", block(&m.ca_pem));
    let _ = write!(s, "<tls-crypt>\n{}</tls-crypt>\n", block(&m.tls_crypt_key));
    s
}
