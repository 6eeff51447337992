//! `vpnctl client-vpn …`: Client VPN endpoints, their authorization rules
//! and routes, the `.ovpn` export, client connections.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use control::api::{Request, Response};
use control::client_vpn::{
    Access, ClientVpnConnection, ClientVpnEndpoint, ClientVpnEndpointPatch, ClientVpnEndpointView,
    RouteTarget, TransportProtocol,
};
use ipnet::Ipv4Net;

use super::{Fail, opt, patch_from_sets, table, write_private_file};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum TransportArg {
    Udp,
    Tcp,
}

/// The fields of `client-vpn create`.
#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// Client IPv4 CIDR the addresses come from: /22 ... /12, fixed
    /// once created (recommended: 2 × the concurrent clients).
    #[arg(long, value_name = "CIDR")]
    client_cidr: Ipv4Net,
    /// Server certificate chain (PEM, end entity first).
    #[arg(long, value_name = "FILE")]
    server_cert: PathBuf,
    /// The server certificate's private key (PEM).
    #[arg(long, value_name = "FILE")]
    server_key: PathBuf,
    /// CA certificate(s) client certificates are issued under (PEM); the
    /// server certificate must chain to it too.
    #[arg(long, value_name = "FILE")]
    client_ca: PathBuf,
    /// tls-crypt key (`openvpn --genkey tls-crypt FILE`).
    #[arg(long, value_name = "FILE")]
    tls_crypt_key: PathBuf,
    /// Certificate revocation list (PEM or DER, at most 20,000 entries).
    #[arg(long, value_name = "FILE")]
    crl: Option<PathBuf>,
    /// Transport.
    #[arg(long, value_enum, default_value = "udp")]
    transport: TransportArg,
    /// Port: 443 or 1194.
    #[arg(long, default_value_t = 443)]
    port: u16,
    /// Outside address clients connect to (default: the gateway's first).
    #[arg(long)]
    outside_address: Option<IpAddr>,
    /// DNS server pushed to clients; repeat for a second.
    #[arg(long = "dns", value_name = "IP")]
    dns: Vec<Ipv4Addr>,
    /// Split tunnel: push the route table instead of the default route.
    #[arg(long)]
    split_tunnel: bool,
    /// Session timeout in hours: 8, 10, 12 or 24.
    #[arg(long, default_value_t = 24)]
    session_timeout_hours: u32,
    /// Client login banner (at most 1,400 characters).
    #[arg(long)]
    banner: Option<String>,
    /// Most concurrent connections (default: half the pool).
    #[arg(long)]
    max_connections: Option<u32>,
    /// Free text.
    #[arg(long)]
    description: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RouteCommand {
    /// Add a route: traffic to CIDR goes to the VPC side (vpc), to a
    /// site-to-site connection (its id) or to other clients (local).
    Add {
        /// Endpoint id.
        endpoint: String,
        /// Destination, e.g. 10.1.0.0/16.
        destination: Ipv4Net,
        /// vpc, local, or a connection id.
        #[arg(long)]
        target: String,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete a route.
    #[command(visible_alias = "delete")]
    Del {
        /// Endpoint id.
        endpoint: String,
        /// Destination.
        destination: Ipv4Net,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ClientVpnCommand {
    /// Create an endpoint (its files are checked by the daemon).
    Create {
        /// Id, e.g. cvpn-1 ([A-Za-z0-9-], 1-64 characters).
        id: String,
        #[command(flatten)]
        fields: Box<CreateArgs>,
    },
    /// Change fields of an endpoint.
    ///
    /// Keys: description, outside_address, server_certificate_file,
    /// server_private_key_file, client_ca_chain_file, tls_crypt_key_file,
    /// crl_file ("" removes it), transport_protocol, vpn_port, dns_servers,
    /// split_tunnel, session_timeout_hours, client_login_banner,
    /// max_connections (0: default). client_cidr cannot change.
    Modify {
        /// Id.
        id: String,
        /// A field to change, KEY=VALUE; repeat for several.
        #[arg(long = "set", value_name = "KEY=VALUE", required = true)]
        set: Vec<String>,
    },
    /// Delete an endpoint.
    Delete {
        /// Id.
        id: String,
    },
    /// Show endpoints (one in detail, with its rules and routes).
    Show {
        /// Only this one.
        id: Option<String>,
    },
    /// Allow clients to reach a destination (or, with --deny, carve an
    /// exception out of a broader rule: the most specific rule wins).
    Authorize {
        /// Endpoint id.
        endpoint: String,
        /// Destination, e.g. 10.0.0.0/16 (0.0.0.0/0 for everything).
        destination: Ipv4Net,
        /// A deny rule instead of an allow rule.
        #[arg(long)]
        deny: bool,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
    },
    /// Remove the authorization rule for a destination.
    Revoke {
        /// Endpoint id.
        endpoint: String,
        /// The rule's destination.
        destination: Ipv4Net,
    },
    /// The endpoint's route table.
    #[command(subcommand)]
    Route(RouteCommand),
    /// The .ovpn file for OpenVPN clients (add your client certificate
    /// and key to it); to standard output or --output (mode 0600).
    ExportConfig {
        /// Endpoint id.
        endpoint: String,
        /// Write to this file.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Client connections: id, common name, client address, public
    /// address, bytes, since.
    #[command(visible_alias = "show-connections")]
    Connections {
        /// Only this endpoint.
        endpoint: Option<String>,
    },
    /// Disconnect a client by connection id, or every client with a
    /// common name.
    Terminate {
        /// Endpoint id.
        endpoint: String,
        /// Connection id.
        #[arg(
            long,
            conflicts_with = "common_name",
            required_unless_present = "common_name"
        )]
        connection: Option<String>,
        /// Certificate common name.
        #[arg(long)]
        common_name: Option<String>,
    },
}

/// `path` made absolute against the current directory (the daemon
/// resolves nothing: it runs elsewhere).
fn absolute(path: &Path) -> Result<PathBuf, Fail> {
    std::path::absolute(path).map_err(|e| Fail::Usage(format!("{}: {e}", path.display())))
}

pub(crate) fn build(cmd: &ClientVpnCommand) -> Result<Request, Fail> {
    Ok(match cmd {
        ClientVpnCommand::Create { id, fields: f } => {
            let mut ep = ClientVpnEndpoint::new(
                id.clone(),
                f.client_cidr,
                absolute(&f.server_cert)?,
                absolute(&f.server_key)?,
                absolute(&f.client_ca)?,
                absolute(&f.tls_crypt_key)?,
            );
            ep.crl_file = f.crl.as_deref().map(absolute).transpose()?;
            ep.transport_protocol = match f.transport {
                TransportArg::Udp => TransportProtocol::Udp,
                TransportArg::Tcp => TransportProtocol::Tcp,
            };
            ep.vpn_port = f.port;
            ep.outside_address = f.outside_address;
            ep.dns_servers.clone_from(&f.dns);
            ep.split_tunnel = f.split_tunnel;
            ep.session_timeout_hours = f.session_timeout_hours;
            ep.client_login_banner.clone_from(&f.banner);
            ep.max_connections = f.max_connections;
            ep.description.clone_from(&f.description);
            Request::CreateClientVpnEndpoint {
                endpoint: Box::new(ep),
            }
        }
        ClientVpnCommand::Modify { id, set } => {
            let mut changes: ClientVpnEndpointPatch = patch_from_sets(set)?;
            for p in [
                &mut changes.server_certificate_file,
                &mut changes.server_private_key_file,
                &mut changes.client_ca_chain_file,
                &mut changes.tls_crypt_key_file,
                &mut changes.crl_file,
            ]
            .into_iter()
            .flatten()
            {
                if !p.as_os_str().is_empty() {
                    *p = absolute(p)?;
                }
            }
            Request::ModifyClientVpnEndpoint {
                id: id.clone(),
                changes: Box::new(changes),
            }
        }
        ClientVpnCommand::Delete { id } => Request::DeleteClientVpnEndpoint { id: id.clone() },
        ClientVpnCommand::Show { id } => Request::ShowClientVpnEndpoints { id: id.clone() },
        ClientVpnCommand::Authorize {
            endpoint,
            destination,
            deny,
            description,
        } => Request::AuthorizeClientVpnIngress {
            endpoint_id: endpoint.clone(),
            destination: *destination,
            access: if *deny { Access::Deny } else { Access::Allow },
            description: description.clone(),
        },
        ClientVpnCommand::Revoke {
            endpoint,
            destination,
        } => Request::RevokeClientVpnIngress {
            endpoint_id: endpoint.clone(),
            destination: *destination,
        },
        ClientVpnCommand::Route(RouteCommand::Add {
            endpoint,
            destination,
            target,
            description,
        }) => Request::CreateClientVpnRoute {
            endpoint_id: endpoint.clone(),
            destination: *destination,
            target: target.parse::<RouteTarget>().unwrap_or(RouteTarget::Vpc),
            description: description.clone(),
        },
        ClientVpnCommand::Route(RouteCommand::Del {
            endpoint,
            destination,
        }) => Request::DeleteClientVpnRoute {
            endpoint_id: endpoint.clone(),
            destination: *destination,
        },
        ClientVpnCommand::ExportConfig { endpoint, .. } => Request::ExportClientVpnConfig {
            endpoint_id: endpoint.clone(),
        },
        ClientVpnCommand::Connections { endpoint } => Request::ShowClientVpnConnections {
            endpoint_id: endpoint.clone(),
        },
        ClientVpnCommand::Terminate {
            endpoint,
            connection,
            common_name,
        } => Request::TerminateClientVpnConnections {
            endpoint_id: endpoint.clone(),
            connection_id: connection.clone(),
            common_name: common_name.clone(),
        },
    })
}

/// Handles a reply that goes to a file (`export-config --output`);
/// `true` when it did.
pub(crate) fn write_output(cmd: &ClientVpnCommand, response: &Response) -> Result<bool, Fail> {
    if let (
        ClientVpnCommand::ExportConfig {
            output: Some(path), ..
        },
        Response::ClientVpnConfig { text, .. },
    ) = (cmd, response)
    {
        write_private_file(path, text.as_bytes())
            .map_err(|e| Fail::Usage(format!("{}: {e}", path.display())))?;
        return Ok(true);
    }
    Ok(false)
}

fn endpoint_detail(v: &ClientVpnEndpointView) -> String {
    let e = &v.endpoint;
    let mut s = String::new();
    let mut kv = |k: &str, v: String| {
        let _ = writeln!(s, "{k:<24}{v}");
    };
    kv("id", e.id.clone());
    kv("description", opt(e.description.clone()));
    kv("client cidr", e.client_cidr.to_string());
    kv("server tunnel address", v.server_tunnel_address.to_string());
    kv("outside address", opt(v.effective_outside_address));
    kv(
        "transport",
        format!("{}/{}", e.transport_protocol, e.vpn_port),
    );
    kv(
        "tunnel",
        if e.split_tunnel { "split" } else { "full" }.to_owned(),
    );
    kv(
        "dns servers",
        if e.dns_servers.is_empty() {
            "-".to_owned()
        } else {
            e.dns_servers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
    kv("session timeout", format!("{} h", e.session_timeout_hours));
    kv(
        "max connections",
        format!(
            "{} (pool {} addresses)",
            v.effective_max_connections, v.pool_addresses
        ),
    );
    kv(
        "server certificate",
        e.server_certificate_file.display().to_string(),
    );
    kv("client CA", e.client_ca_chain_file.display().to_string());
    kv(
        "crl",
        opt(e.crl_file.as_ref().map(|p| p.display().to_string())),
    );
    kv(
        "banner",
        opt(e
            .client_login_banner
            .as_ref()
            .map(|b| format!("{} characters", b.chars().count()))),
    );
    s.push('\n');
    let rules: Vec<Vec<String>> = e
        .authorization_rules
        .iter()
        .map(|r| {
            vec![
                r.destination.to_string(),
                match r.access {
                    Access::Allow => "allow".to_owned(),
                    Access::Deny => "deny".to_owned(),
                },
                opt(r.description.clone()),
            ]
        })
        .collect();
    s.push_str(&table(
        &["AUTHORIZED-DESTINATION", "ACCESS", "DESCRIPTION"],
        &rules,
    ));
    s.push('\n');
    let routes: Vec<Vec<String>> = e
        .routes
        .iter()
        .map(|r| {
            vec![
                r.destination.to_string(),
                r.target.to_string(),
                opt(r.description.clone()),
            ]
        })
        .collect();
    s.push_str(&table(
        &["ROUTE-DESTINATION", "TARGET", "DESCRIPTION"],
        &routes,
    ));
    for w in &v.warnings {
        let _ = writeln!(s, "\nwarning: {w}");
    }
    s
}

fn connection_rows(cs: &[ClientVpnConnection]) -> String {
    let rows: Vec<Vec<String>> = cs
        .iter()
        .map(|c| {
            vec![
                c.endpoint_id.clone(),
                c.connection_id.clone(),
                c.common_name.clone(),
                c.client_address.to_string(),
                c.public_address.to_string(),
                c.bytes_in.to_string(),
                c.bytes_out.to_string(),
                c.since_ms.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ENDPOINT",
            "CONNECTION",
            "COMMON-NAME",
            "CLIENT-ADDRESS",
            "PUBLIC-ADDRESS",
            "BYTES-IN",
            "BYTES-OUT",
            "SINCE-MS",
        ],
        &rows,
    )
}

/// The human rendering of a Client VPN reply; `None` for other replies.
pub(crate) fn human(r: &Response) -> Option<String> {
    Some(match r {
        Response::ClientVpnEndpoint { endpoint } => endpoint_detail(endpoint),
        Response::ClientVpnEndpoints { endpoints } if endpoints.len() == 1 => {
            endpoint_detail(&endpoints[0])
        }
        Response::ClientVpnEndpoints { endpoints } => {
            let rows: Vec<Vec<String>> = endpoints
                .iter()
                .map(|v| {
                    let e = &v.endpoint;
                    vec![
                        e.id.clone(),
                        e.client_cidr.to_string(),
                        opt(v.effective_outside_address),
                        format!("{}/{}", e.transport_protocol, e.vpn_port),
                        if e.split_tunnel { "split" } else { "full" }.to_owned(),
                        e.authorization_rules.len().to_string(),
                        e.routes.len().to_string(),
                    ]
                })
                .collect();
            table(
                &[
                    "ID",
                    "CLIENT-CIDR",
                    "OUTSIDE-ADDRESS",
                    "TRANSPORT",
                    "TUNNEL",
                    "RULES",
                    "ROUTES",
                ],
                &rows,
            )
        }
        Response::ClientVpnConfig { text, .. } => text.clone(),
        Response::ClientVpnConnections { connections } => connection_rows(connections),
        Response::ClientVpnTerminated { connections, .. } => {
            format!(
                "{} connection(s) terminated\n{}",
                connections.len(),
                connection_rows(connections)
            )
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::super::{Cli, Command, build_request};
    use super::*;

    fn request(args: &[&str]) -> Request {
        let mut v = vec!["vpnctl", "client-vpn"];
        v.extend_from_slice(args);
        let cli = Cli::try_parse_from(v).unwrap();
        build_request(&cli.command).unwrap()
    }

    fn usage(args: &[&str]) -> String {
        let mut v = vec!["vpnctl", "client-vpn"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v) {
            Err(e) => e.to_string(),
            Ok(cli) => match build_request(&cli.command) {
                Err(Fail::Usage(m)) => m,
                other => panic!("{args:?}: {other:?}"),
            },
        }
    }

    #[test]
    fn create_sends_absolute_paths_and_every_option() {
        let r = request(&[
            "create",
            "cvpn-1",
            "--client-cidr",
            "192.168.100.0/22",
            "--server-cert",
            "server.pem",
            "--server-key",
            "/etc/k",
            "--client-ca",
            "ca.pem",
            "--tls-crypt-key",
            "tc.key",
            "--transport",
            "tcp",
            "--port",
            "1194",
            "--dns",
            "10.0.0.2",
            "--dns",
            "10.0.0.3",
            "--split-tunnel",
            "--session-timeout-hours",
            "12",
        ]);
        let Request::CreateClientVpnEndpoint { endpoint } = r else {
            panic!("{r:?}")
        };
        assert!(endpoint.server_certificate_file.is_absolute());
        assert!(endpoint.server_certificate_file.ends_with("server.pem"));
        assert_eq!(endpoint.server_private_key_file, PathBuf::from("/etc/k"));
        assert_eq!(endpoint.transport_protocol, TransportProtocol::Tcp);
        assert_eq!(endpoint.vpn_port, 1194);
        assert_eq!(endpoint.dns_servers.len(), 2);
        assert!(endpoint.split_tunnel);
        assert_eq!(endpoint.session_timeout_hours, 12);
    }

    #[test]
    fn rules_routes_terminate_and_bad_input() {
        let r = request(&["authorize", "cvpn-1", "10.9.0.0/16", "--deny"]);
        assert!(
            matches!(
                r,
                Request::AuthorizeClientVpnIngress {
                    access: Access::Deny,
                    ..
                }
            ),
            "{r:?}"
        );
        let r = request(&[
            "route",
            "add",
            "cvpn-1",
            "10.1.0.0/16",
            "--target",
            "vpn-azure",
        ]);
        assert!(
            matches!(&r, Request::CreateClientVpnRoute { target: RouteTarget::Connection(c), .. } if c == "vpn-azure"),
            "{r:?}"
        );
        let r = request(&["route", "del", "cvpn-1", "10.1.0.0/16"]);
        assert!(matches!(r, Request::DeleteClientVpnRoute { .. }), "{r:?}");
        let r = request(&["terminate", "cvpn-1", "--common-name", "alice"]);
        assert!(
            matches!(&r, Request::TerminateClientVpnConnections { common_name: Some(cn), connection_id: None, .. } if cn == "alice"),
            "{r:?}"
        );
        let r = request(&[
            "modify",
            "cvpn-1",
            "--set",
            "crl_file=crl.pem",
            "--set",
            "split_tunnel=true",
        ]);
        let Request::ModifyClientVpnEndpoint { changes, .. } = r else {
            panic!("{r:?}")
        };
        assert!(changes.crl_file.unwrap().is_absolute());
        assert_eq!(changes.split_tunnel, Some(true));
        // Bad input is a usage error naming what is wrong.
        assert!(usage(&["authorize", "cvpn-1", "10.0.0.0/33"]).contains("10.0.0.0/33"));
        assert!(usage(&["terminate", "cvpn-1"]).contains("--connection"));
        assert!(usage(&["modify", "cvpn-1", "--set", "vpn_port=abc"]).contains("vpn_port"));
        assert!(usage(&["modify", "cvpn-1", "--set", "nonsense=1"]).contains("nonsense"));
        let cli = Cli::try_parse_from(["vpnctl", "cvpn", "connections"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::ClientVpn(ClientVpnCommand::Connections { .. })
        ));
    }
}
