//! `vpnctl`: command-line client of the `vpnd` management API.
//!
//! Sends one request (`control::api`, newline-delimited JSON) over the
//! daemon's unix socket and prints the reply as a table, or as the reply's
//! JSON with `--json`.
//!
//! Exit codes: 0 success; 1 usage error (bad arguments or `--set` value);
//! 2 the daemon rejected the request (validation errors, unknown object,
//! permission denied, …); 3 the daemon cannot be reached or its reply
//! cannot be read.

// The clap arguments' doc comments are the CLI's help text, written for
// the terminal: `tunnels[0]` or `[[connections]]` there are not links.
#![allow(rustdoc::broken_intra_doc_links)]

use std::fmt::Write as _;
use std::io::{BufReader, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use appliance::mgmt::{self, LineRead};
use clap::{Args, Parser, Subcommand, ValueEnum};
use control::api::{
    self, ApiError, ConnectionView, CustomerGatewayPatch, ReplyEnvelope, Request, Response,
};
use control::config::PreSharedKey;
use control::config::secrets::SecretInfo;
use control::config::{
    CustomerGateway, RoutingType, TunnelInsideIpVersion, TunnelOptionsPatch, VpnConnection,
    VpnConnectionOptionsPatch,
};
use control::download::Device;
use control::visibility::{HealthEvent, NegotiatedParams};
use ipnet::IpNet;

#[path = "vpnctl/client_vpn.rs"]
mod client_vpn;

const EXIT_HELP: &str = "\
Exit codes:
  0  success
  1  usage error (bad arguments, bad --set value)
  2  the daemon rejected the request (validation errors are listed with
     field, value and allowed range; unknown object; permission denied)
  3  the daemon cannot be reached, or its reply cannot be read

--set KEY=VALUE takes a TOML value: numbers (1800), booleans (true),
lists ([14, 19] or '[\"AES128-GCM-16\"]'); anything that is not valid TOML is
taken as a string (AES128-GCM-16, restart).";

/// Manage the VPN concentrator through vpnd's management socket.
#[derive(Debug, Parser)]
#[command(name = "vpnctl", version, after_help = EXIT_HELP)]
struct Cli {
    /// The daemon's management socket.
    #[arg(
        long,
        global = true,
        env = "VPNCTL_SOCKET",
        default_value = "/run/vpnd/control.sock"
    )]
    socket: PathBuf,
    /// Print the daemon's reply as JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Customer gateways: create, modify, delete, show.
    #[command(subcommand, name = "customer-gateway", visible_alias = "cgw")]
    CustomerGateway(CgwCommand),
    /// VPN connections (each with two tunnels): create, modify, delete, show.
    #[command(subcommand, visible_alias = "conn")]
    Connection(ConnCommand),
    /// Modify one tunnel's options (spec modify-vpn-tunnel-options).
    ///
    /// Keys: pre_shared_key, inside_ipv4_cidr, inside_ipv6_cidr,
    /// phase1_encryption_algorithms, phase2_encryption_algorithms,
    /// phase1_integrity_algorithms, phase2_integrity_algorithms,
    /// phase1_dh_groups, phase2_dh_groups, phase1_lifetime_secs,
    /// phase2_lifetime_secs, rekey_margin_time_secs, rekey_fuzz_percent,
    /// replay_window_packets, dpd_timeout_secs, dpd_timeout_action,
    /// startup_action, ike_versions, enable_tunnel_lifecycle_control.
    ModifyTunnelOptions {
        /// Connection id.
        connection: String,
        /// Tunnel index: 0 or 1 (tunnels[0], tunnels[1] in the configuration).
        #[arg(value_parser = clap::value_parser!(u8).range(0..=1))]
        tunnel: u8,
        /// An option to change, KEY=VALUE; repeat for several.
        #[arg(long = "set", value_name = "KEY=VALUE", required = true)]
        set: Vec<String>,
    },
    /// Static routes of a static-routing connection.
    #[command(subcommand, name = "static-route")]
    StaticRoute(RouteCommand),
    /// Show tunnels, SAs, routes, counters, connections or gateways.
    #[command(subcommand)]
    Show(ShowCommand),
    /// Show the most recent tunnel log entries.
    Logs {
        /// Only this connection.
        #[arg(long)]
        connection: Option<String>,
        /// How many entries.
        #[arg(long, short = 'n', default_value_t = 100)]
        lines: usize,
        /// Keep printing new entries as they come (every second) until
        /// interrupted.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Customer device configuration download (devices: generic,
    /// strongswan, cisco-ios, cisco-asa, juniper-srx, fortinet, palo-alto,
    /// mikrotik, windows), export, import.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The pre-shared key store: set, rotate, delete, list (never shows a
    /// key). Tunnels of connections with pre_shared_key_storage =
    /// SecretsManager take their key from it by name
    /// (pre_shared_key_ref, default <connection>/<tunnel>).
    #[command(subcommand)]
    Psk(PskCommand),
    /// Client VPN (remote access) endpoints: create, modify, delete, show,
    /// authorize/revoke, route add/del, export-config, connections,
    /// terminate.
    #[command(subcommand, name = "client-vpn", visible_alias = "cvpn")]
    ClientVpn(client_vpn::ClientVpnCommand),
    /// Check that the daemon answers.
    Ping,
}

#[derive(Debug, Subcommand)]
enum PskCommand {
    /// Store a key under NAME (created or replaced): generated (32
    /// alphanumeric characters), or read from standard input with
    /// --stdin (one line; never pass a key as an argument). Tunnels that
    /// use NAME re-authenticate with it at once.
    Set {
        /// The secret's name.
        name: String,
        /// Read the key from standard input.
        #[arg(long)]
        stdin: bool,
    },
    /// Replace the key of an existing secret (generated, or --stdin);
    /// its tunnels re-authenticate with the new key at once.
    Rotate {
        /// The secret's name.
        name: String,
        /// Read the key from standard input.
        #[arg(long)]
        stdin: bool,
    },
    /// Remove a secret no tunnel uses.
    Delete {
        /// The secret's name.
        name: String,
    },
    /// The secrets: name, version, last change, tunnels using it.
    List,
}

/// A key from standard input (one line, the newline removed).
fn key_from_stdin(stdin: bool) -> Result<Option<PreSharedKey>, Fail> {
    if !stdin {
        return Ok(None);
    }
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Fail::Usage(format!("standard input: {e}")))?;
    let key = line.trim_end_matches(['\n', '\r']);
    PreSharedKey::new(key)
        .map(Some)
        .map_err(|e| Fail::Usage(format!("the key on standard input: {e}")))
}

#[derive(Debug, Args)]
struct CgwFields {
    /// Outside IP address of the device (or of the NAT in front of it).
    #[arg(long)]
    ip_address: Option<IpAddr>,
    /// BGP ASN of the device (dynamic routing).
    #[arg(long)]
    bgp_asn: Option<u32>,
    /// Device name.
    #[arg(long)]
    device_name: Option<String>,
    /// Private certificate name the device authenticates with.
    #[arg(long)]
    certificate: Option<String>,
}

#[derive(Debug, Subcommand)]
enum CgwCommand {
    /// Create a customer gateway.
    Create {
        /// Id, e.g. cgw-branch2 ([A-Za-z0-9-], 1-64 characters).
        id: String,
        #[command(flatten)]
        fields: CgwFields,
    },
    /// Change fields of a customer gateway.
    Modify {
        /// Id.
        id: String,
        #[command(flatten)]
        fields: CgwFields,
    },
    /// Delete a customer gateway no connection uses.
    Delete {
        /// Id.
        id: String,
    },
    /// Show customer gateways.
    Show {
        /// Only this one.
        id: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RoutingArg {
    Static,
    Dynamic,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum InsideArg {
    Ipv4,
    Ipv6,
}

#[derive(Debug, Subcommand)]
enum ConnCommand {
    /// Create a connection with two tunnels. Unset values get the spec
    /// defaults; outside addresses, inside CIDRs and pre-shared keys are
    /// assigned by the daemon.
    Create {
        /// Id, e.g. vpn-branch2.
        id: String,
        /// The customer gateway.
        #[arg(long)]
        customer_gateway: String,
        /// Routing type.
        #[arg(long, value_enum, default_value = "dynamic")]
        routing: RoutingArg,
        /// Inside IP version.
        #[arg(long, value_enum, default_value = "ipv4")]
        inside_ip_version: InsideArg,
        /// A static route (static routing); repeat for several.
        #[arg(long = "static-route", value_name = "PREFIX")]
        static_routes: Vec<IpNet>,
        /// Outside address of tunnel 0 (default: the gateway's first).
        #[arg(long)]
        tunnel0_outside_ip: Option<IpAddr>,
        /// Outside address of tunnel 1 (default: the gateway's second).
        #[arg(long)]
        tunnel1_outside_ip: Option<IpAddr>,
        /// Read the whole connection from a TOML file (the fields of one
        /// [[connections]] entry); the id argument must match.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["static_routes", "tunnel0_outside_ip", "tunnel1_outside_ip"])]
        from_file: Option<PathBuf>,
    },
    /// Modify connection options. Keys: local_ipv4_network_cidr,
    /// remote_ipv4_network_cidr, local_ipv6_network_cidr,
    /// remote_ipv6_network_cidr, tunnel_bandwidth.
    Modify {
        /// Connection id.
        id: String,
        /// An option to change, KEY=VALUE; repeat for several.
        #[arg(long = "set", value_name = "KEY=VALUE", required = true)]
        set: Vec<String>,
    },
    /// Delete a connection and its tunnels.
    Delete {
        /// Connection id.
        id: String,
    },
    /// Show connections.
    Show {
        /// Only this one.
        id: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum RouteCommand {
    /// Add a static route.
    Add {
        /// Connection id.
        connection: String,
        /// Prefix, e.g. 10.1.0.0/16.
        prefix: IpNet,
    },
    /// Delete a static route.
    Delete {
        /// Connection id.
        connection: String,
        /// Prefix.
        prefix: IpNet,
    },
}

#[derive(Debug, Subcommand)]
enum ShowCommand {
    /// Tunnel status: UP/DOWN, IKE phase 1/2 state, BGP, NAT-T, flaps,
    /// the negotiated suites.
    Tunnels {
        /// Only this connection.
        connection: Option<String>,
    },
    /// One tunnel in detail: negotiated parameters (IKE version, phase 1
    /// encryption/integrity/PRF/DH, phase 2 cipher/integrity/PFS),
    /// lifetimes and time to the next rekeys, status changes, flaps, the
    /// last change and its reason, its health events.
    Tunnel {
        /// The connection.
        connection: String,
        /// The tunnel's appliance outside address.
        outside_ip: IpAddr,
    },
    /// Health events (tunnel unhealthy: DOWN for more than an hour;
    /// recovered; endpoint replacement), oldest first.
    HealthEvents {
        /// Only this connection.
        connection: Option<String>,
    },
    /// Installed ESP SAs.
    Sas {
        /// Only this connection.
        connection: Option<String>,
    },
    /// Routes (static and BGP): for BGP routes the chosen path (AS path,
    /// MED, next hop) and the ECMP members.
    Routes {
        /// Only this connection.
        connection: Option<String>,
    },
    /// BGP neighbours: state, uptime, prefixes received and advertised.
    Bgp {
        /// Only this connection.
        connection: Option<String>,
    },
    /// Counters per tunnel and drops by reason.
    Stats,
    /// The dataplane's ports: device (PCI address or virtual device), link
    /// state and speed, link changes, packet counters.
    Ports,
    /// Connections.
    Connections {
        /// Only this one.
        id: Option<String>,
    },
    /// Customer gateways.
    CustomerGateways {
        /// Only this one.
        id: Option<String>,
    },
}

/// `--device` values: every [`Device`], each with its one-line
/// description, so `--help` lists them and clap's error for an unknown one
/// names the valid ones.
fn device_parser() -> impl clap::builder::TypedValueParser<Value = Device> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser as _};
    PossibleValuesParser::new(
        Device::ALL
            .iter()
            .map(|d| PossibleValue::new(d.as_str()).help(d.description())),
    )
    .try_map(|s| s.parse::<Device>())
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the configuration for the customer device of a connection
    /// (contains the pre-shared keys).
    Download {
        /// Connection id.
        connection: String,
        /// Device kind.
        #[arg(long, default_value = "generic", value_parser = device_parser())]
        device: Device,
    },
    /// Print the daemon's whole configuration as a TOML file (contains the
    /// pre-shared keys), or write it to --output (mode 0600, replaced
    /// atomically).
    Export {
        /// Write to this file instead of standard output.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Replace the daemon's whole configuration with a TOML file: validated
    /// by the daemon (every broken rule is listed, nothing changes), then
    /// saved atomically and applied. Sections other than customer gateways
    /// and connections (ports, lcores, socket) take effect at the next
    /// start of vpnd.
    Import {
        /// The TOML file.
        file: PathBuf,
    },
}

/// A failure with its exit code.
#[derive(Debug)]
enum Fail {
    Usage(String),
    /// The error, and the daemon's reply line as received.
    Rejected(ApiError, String),
    Unreachable(String),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Usage(m)) => {
            eprintln!("vpnctl: {m}");
            ExitCode::from(1)
        }
        Err(Fail::Rejected(e, raw)) => {
            if cli.json {
                println!("{raw}");
            }
            eprintln!("vpnctl: rejected ({:?}): {}", e.code, e.message);
            for f in &e.errors {
                eprintln!("  {}: {} — allowed: {}", f.field, f.value, f.allowed);
            }
            ExitCode::from(2)
        }
        Err(Fail::Unreachable(m)) => {
            eprintln!("vpnctl: cannot reach the daemon: {m}");
            ExitCode::from(3)
        }
    }
}

/// Parse `KEY=VALUE` pairs into a TOML table and deserialize it as `T`.
///
/// A value that is not TOML is taken as a string (`--set name=branch-1`),
/// and so is a TOML value where the field wants a string
/// (`--set pre_shared_key=12345678`); but a number TOML cannot hold (its
/// integers are 64-bit signed) is an error, not a string. An error names
/// the key; values of secret fields are never echoed.
fn patch_from_sets<T: serde::de::DeserializeOwned>(sets: &[String]) -> Result<T, Fail> {
    let mut table = toml::Table::new();
    for s in sets {
        let Some((k, v)) = s.split_once('=') else {
            return Err(Fail::Usage(format!(
                "--set {:?}: expected KEY=VALUE",
                shorten(s)
            )));
        };
        let k = k.trim();
        let v = v.trim();
        let parsed = toml::from_str::<toml::Table>(&format!("v = {v}"))
            .ok()
            .and_then(|mut t| t.remove("v"));
        let one = |value: toml::Value| {
            toml::Value::Table(toml::Table::from_iter([(k.to_owned(), value)])).try_into::<T>()
        };
        let text = toml::Value::String(v.to_owned());
        let value = match parsed.map(|p| (one(p.clone()), p)) {
            Some((Ok(_), p)) => p,
            None if looks_numeric(v) && one(text.clone()).is_err() => {
                return Err(Fail::Usage(format!(
                    "--set {}={}: not a number the configuration can hold (integers are 64-bit signed: {}..={})",
                    shorten(k),
                    shown(k, v),
                    i64::MIN,
                    i64::MAX
                )));
            }
            parsed => match one(text.clone()) {
                Ok(_) => text,
                Err(e) => {
                    // The TOML value's error when there was one: it says
                    // which type the field wants.
                    let e = match parsed {
                        Some((Err(e), _)) => e,
                        _ => e,
                    };
                    let why = if is_secret(k) {
                        "not a valid value (not shown)".to_owned()
                    } else {
                        shorten_to(e.to_string().trim(), 200)
                    };
                    return Err(Fail::Usage(format!(
                        "--set {}={}: {why}",
                        shorten(k),
                        shown(k, v)
                    )));
                }
            },
        };
        table.insert(k.to_owned(), value);
    }
    toml::Value::Table(table)
        .try_into()
        .map_err(|e| Fail::Usage(format!("--set: {}", shorten_to(e.to_string().trim(), 200))))
}

/// Fields whose values are never echoed.
fn is_secret(key: &str) -> bool {
    key.contains("pre_shared_key") || key.contains("private_key")
}

/// A `--set` value as echoed in an error.
fn shown(key: &str, value: &str) -> String {
    if is_secret(key) {
        "(redacted)".to_owned()
    } else {
        shorten(value)
    }
}

/// Whether a `--set` value was meant as a number: an optional sign, then a
/// digit.
fn looks_numeric(v: &str) -> bool {
    let digits = v.strip_prefix(['+', '-']).unwrap_or(v);
    digits.starts_with(|c: char| c.is_ascii_digit())
}

/// An argument echoed in an error: at most 64 characters of it.
fn shorten(s: &str) -> String {
    shorten_to(s, 64)
}

/// `s` with at most `max` characters: its head and tail around a note of
/// its length.
fn shorten_to(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_owned();
    }
    let half = max / 2;
    let head: String = s.chars().take(half).collect();
    let tail: String = s.chars().skip(n - half).collect();
    format!("{head}…[{n} characters]…{tail}")
}

fn build_request(cmd: &Command) -> Result<Request, Fail> {
    Ok(match cmd {
        Command::Ping => Request::Ping {},
        Command::ClientVpn(c) => client_vpn::build(c)?,
        Command::CustomerGateway(c) => match c {
            CgwCommand::Create { id, fields } => Request::CreateCustomerGateway {
                customer_gateway: CustomerGateway {
                    id: id.clone(),
                    ip_address: fields.ip_address,
                    bgp_asn: fields.bgp_asn,
                    certificate: fields.certificate.clone(),
                    device_name: fields.device_name.clone(),
                },
            },
            CgwCommand::Modify { id, fields } => Request::ModifyCustomerGateway {
                id: id.clone(),
                changes: CustomerGatewayPatch {
                    ip_address: fields.ip_address,
                    bgp_asn: fields.bgp_asn,
                    device_name: fields.device_name.clone(),
                    certificate: fields.certificate.clone(),
                },
            },
            CgwCommand::Delete { id } => Request::DeleteCustomerGateway { id: id.clone() },
            CgwCommand::Show { id } => Request::ShowCustomerGateways { id: id.clone() },
        },
        Command::Connection(c) => match c {
            ConnCommand::Create {
                id,
                customer_gateway,
                routing,
                inside_ip_version,
                static_routes,
                tunnel0_outside_ip,
                tunnel1_outside_ip,
                from_file,
            } => {
                let mut conn = if let Some(f) = from_file {
                    let text = std::fs::read_to_string(f)
                        .map_err(|e| Fail::Usage(format!("{}: {e}", f.display())))?;
                    let conn: VpnConnection = toml::from_str(&text)
                        .map_err(|e| Fail::Usage(format!("{}: {e}", f.display())))?;
                    if conn.id != *id {
                        return Err(Fail::Usage(format!(
                            "{}: id {:?} does not match {id:?}",
                            f.display(),
                            conn.id
                        )));
                    }
                    conn
                } else {
                    let mut conn = VpnConnection::new(id.clone(), customer_gateway.clone(), "");
                    conn.routing = match routing {
                        RoutingArg::Static => RoutingType::Static,
                        RoutingArg::Dynamic => RoutingType::Dynamic,
                    };
                    conn.tunnel_inside_ip_version = match inside_ip_version {
                        InsideArg::Ipv4 => TunnelInsideIpVersion::Ipv4,
                        InsideArg::Ipv6 => TunnelInsideIpVersion::Ipv6,
                    };
                    conn.static_routes.clone_from(static_routes);
                    conn.tunnels[0].outside_ip_address = *tunnel0_outside_ip;
                    conn.tunnels[1].outside_ip_address = *tunnel1_outside_ip;
                    conn
                };
                if conn.customer_gateway_id.is_empty() {
                    conn.customer_gateway_id.clone_from(customer_gateway);
                }
                Request::CreateConnection {
                    connection: Box::new(conn),
                }
            }
            ConnCommand::Modify { id, set } => Request::ModifyConnectionOptions {
                connection_id: id.clone(),
                options: patch_from_sets::<VpnConnectionOptionsPatch>(set)?,
            },
            ConnCommand::Delete { id } => Request::DeleteConnection { id: id.clone() },
            ConnCommand::Show { id } => Request::ShowConnections { id: id.clone() },
        },
        Command::ModifyTunnelOptions {
            connection,
            tunnel,
            set,
        } => Request::ModifyTunnelOptions {
            connection_id: connection.clone(),
            tunnel: usize::from(*tunnel),
            options: Box::new(patch_from_sets::<TunnelOptionsPatch>(set)?),
        },
        Command::StaticRoute(r) => match r {
            RouteCommand::Add { connection, prefix } => Request::AddStaticRoute {
                connection_id: connection.clone(),
                prefix: *prefix,
            },
            RouteCommand::Delete { connection, prefix } => Request::DeleteStaticRoute {
                connection_id: connection.clone(),
                prefix: *prefix,
            },
        },
        Command::Show(s) => match s {
            ShowCommand::Tunnels { connection } => Request::ShowTunnels {
                connection_id: connection.clone(),
            },
            ShowCommand::Tunnel {
                connection,
                outside_ip,
            } => Request::ShowTunnel {
                connection_id: connection.clone(),
                outside_ip_address: *outside_ip,
            },
            ShowCommand::HealthEvents { connection } => Request::ShowHealthEvents {
                connection_id: connection.clone(),
            },
            ShowCommand::Sas { connection } => Request::ShowSas {
                connection_id: connection.clone(),
            },
            ShowCommand::Routes { connection } => Request::ShowRoutes {
                connection_id: connection.clone(),
            },
            ShowCommand::Bgp { connection } => Request::ShowBgp {
                connection_id: connection.clone(),
            },
            ShowCommand::Stats | ShowCommand::Ports => Request::ShowStats {},
            ShowCommand::Connections { id } => Request::ShowConnections { id: id.clone() },
            ShowCommand::CustomerGateways { id } => {
                Request::ShowCustomerGateways { id: id.clone() }
            }
        },
        Command::Logs {
            connection, lines, ..
        } => Request::Logs {
            connection_id: connection.clone(),
            lines: Some(*lines),
        },
        Command::Config(ConfigCommand::Export { .. }) => Request::ConfigExport {},
        Command::Config(ConfigCommand::Import { file }) => {
            let toml = std::fs::read_to_string(file)
                .map_err(|e| Fail::Usage(format!("{}: {e}", file.display())))?;
            // The request is one line of at most MAX_MESSAGE_BYTES, with the
            // TOML as an escaped JSON string.
            if toml.len() + toml.len() / 8 + 256 > api::MAX_MESSAGE_BYTES {
                return Err(Fail::Usage(format!(
                    "{}: {} bytes: an import is one API message of at most {} bytes; \
                     for a larger configuration stop vpnd, remove its store \
                     (<stem>.snapshot, <stem>.journal) and start it from the file",
                    file.display(),
                    toml.len(),
                    api::MAX_MESSAGE_BYTES
                )));
            }
            Request::ConfigImport { toml }
        }
        Command::Config(ConfigCommand::Download { connection, device }) => {
            Request::ConfigDownload {
                connection_id: connection.clone(),
                device: *device,
            }
        }
        Command::Psk(PskCommand::Set { name, stdin }) => Request::PskSet {
            name: name.clone(),
            pre_shared_key: key_from_stdin(*stdin)?,
        },
        Command::Psk(PskCommand::Rotate { name, stdin }) => Request::PskRotate {
            name: name.clone(),
            pre_shared_key: key_from_stdin(*stdin)?,
        },
        Command::Psk(PskCommand::Delete { name }) => Request::PskDelete { name: name.clone() },
        Command::Psk(PskCommand::List) => Request::PskList {},
    })
}

/// Largest reply accepted (replies can carry many connections).
const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

fn exchange(socket: &PathBuf, request: Request) -> Result<(ReplyEnvelope, String), Fail> {
    let unreachable = |e: std::io::Error| Fail::Unreachable(format!("{}: {e}", socket.display()));
    let mut stream = UnixStream::connect(socket).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(unreachable)?;
    let id = u64::from(std::process::id());
    let line = api::encode_request(&api::envelope(id, request))
        .map_err(|e| Fail::Usage(format!("cannot encode the request: {e}")))?;
    // A daemon that refuses us answers and closes without reading: the
    // write may fail, its reply is still worth reading.
    let written = stream.write_all(&line);
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    let read = mgmt::read_bounded_line(&mut reader, MAX_REPLY_BYTES, &mut buf);
    if let Err(e) = written
        && !matches!(read, Ok(LineRead::Line))
    {
        return Err(unreachable(e));
    }
    match read.map_err(unreachable)? {
        LineRead::Line => {}
        LineRead::Eof => {
            return Err(Fail::Unreachable(
                "the daemon closed the connection without a reply".to_owned(),
            ));
        }
        LineRead::TooLong(n) => {
            return Err(Fail::Unreachable(format!(
                "reply of {n} bytes is too large"
            )));
        }
    }
    let raw = String::from_utf8_lossy(&buf).into_owned();
    let reply = api::decode_response(&buf)
        .map_err(|e| Fail::Unreachable(format!("unreadable reply: {e}")))?;
    Ok((reply, raw))
}

fn run(cli: &Cli) -> Result<(), Fail> {
    let request = build_request(&cli.command)?;
    if let Command::Logs { follow: true, .. } = cli.command {
        return follow_logs(cli, &request);
    }
    let (reply, raw) = exchange(&cli.socket, request)?;
    let response = reply
        .into_result()
        .map_err(|e| Fail::Rejected(e, raw.clone()))?;
    if let (
        Command::Config(ConfigCommand::Export { output: Some(path) }),
        Response::ConfigToml { toml },
    ) = (&cli.command, &response)
    {
        return write_private_file(path, toml.as_bytes())
            .map_err(|e| Fail::Usage(format!("{}: {e}", path.display())));
    }
    if let Command::ClientVpn(c) = &cli.command
        && client_vpn::write_output(c, &response)?
    {
        return Ok(());
    }
    if cli.json {
        println!("{raw}");
    } else if let (Command::Show(ShowCommand::Ports), Response::Stats { stats }) =
        (&cli.command, &response)
    {
        print!("{}", ports_table(stats));
    } else {
        print!("{}", human(&response));
    }
    Ok(())
}

/// `show ports`: one line per port of the dataplane.
fn ports_table(stats: &control::dataplane::DataplaneStats) -> String {
    let rows: Vec<Vec<String>> = stats
        .ports
        .iter()
        .map(|(name, p)| {
            let link = match p.link_up {
                Some(true) => "up",
                Some(false) => "down",
                None => "-",
            };
            let speed = if p.speed_mbps == 0 {
                "-".to_owned()
            } else {
                format!("{}M", p.speed_mbps)
            };
            vec![
                name.clone(),
                if p.device.is_empty() {
                    "-".to_owned()
                } else {
                    p.device.clone()
                },
                link.to_owned(),
                speed,
                p.link_changes.to_string(),
                if p.offloads.is_empty() {
                    "-".to_owned()
                } else {
                    p.offloads.clone()
                },
                p.rx_packets.to_string(),
                p.tx_packets.to_string(),
                p.rx_dropped.to_string(),
                p.tx_errors.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "PORT",
            "DEVICE",
            "LINK",
            "SPEED",
            "CHANGES",
            "CKSUM-OFFLOAD",
            "RX-PKTS",
            "TX-PKTS",
            "RX-DROPPED",
            "TX-ERRORS",
        ],
        &rows,
    )
}

/// Write `bytes` to `path` with mode 0600: a temp file in the same
/// directory, fsync, rename (readers see the old or the new file).
fn write_private_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// `logs --follow`: ask every second, print what was not printed yet (one
/// JSON entry per line with `--json`).
fn follow_logs(cli: &Cli, request: &Request) -> Result<(), Fail> {
    let mut last: Option<control::logs::LogEntry> = None;
    loop {
        let (reply, raw) = exchange(&cli.socket, request.clone())?;
        let response = reply.into_result().map_err(|e| Fail::Rejected(e, raw))?;
        let Response::Logs { entries } = response else {
            return Err(Fail::Unreachable("unexpected reply to logs".to_owned()));
        };
        // Entries are oldest first: print those after the last one seen
        // (all of them if it scrolled out of the window).
        let start = last
            .as_ref()
            .and_then(|l| entries.iter().rposition(|e| e == l))
            .map_or(0, |i| i + 1);
        for e in &entries[start..] {
            if cli.json {
                println!("{}", serde_json::to_string(e).unwrap_or_default());
            } else {
                println!("{}", e.render_text());
            }
        }
        if let Some(e) = entries.last() {
            last = Some(e.clone());
        }
        let _ = std::io::stdout().flush();
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Render rows as aligned columns.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (c, w) in cells.zip(&widths) {
            let _ = write!(l, "{c:<w$}  ");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut out, &mut headers.iter().copied());
    for r in rows {
        line(&mut out, &mut r.iter().map(String::as_str));
    }
    out
}

/// Why a tunnel is down with IKE up, and when the next attempt starts
/// (`CHILD_SA not established: TS_UNACCEPTABLE refused by the peer, 1
/// failure; retry in 9 s`), or `-`.
fn status_detail(t: &api::TunnelStatus) -> String {
    let Some(d) = &t.status_detail else {
        return "-".to_owned();
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    match t.next_retry_ms {
        Some(at) => format!(
            "{d}; retry in {} s",
            at.saturating_sub(now_ms).div_ceil(1000)
        ),
        None => format!("{d}; retrying now"),
    }
}

/// `1d02h03m`, `02:03:04` or `-` for zero (as routers print uptimes).
fn uptime(secs: u64) -> String {
    if secs == 0 {
        return "-".to_owned();
    }
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h:02}h{m:02}m")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// `ikev2 AES256-GCM-16/PRF-SHA2-256/DH19` (integrity before the PRF
/// when the cipher is not AEAD).
fn ike_suite(n: &NegotiatedParams) -> String {
    let integ = n
        .phase1_integrity
        .map_or_else(String::new, |i| format!("{i}/"));
    format!(
        "{} {}/{integ}PRF-{}/DH{}",
        n.ike_version, n.phase1_encryption, n.phase1_prf, n.phase1_dh_group
    )
}

/// `AES256-GCM-16`, `AES128/SHA2-256/PFS14`, … (absent before a Child SA).
fn esp_suite(n: &NegotiatedParams) -> Option<String> {
    let mut s = n.phase2_encryption?.to_string();
    if let Some(i) = n.phase2_integrity {
        let _ = write!(s, "/{i}");
    }
    if let Some(g) = n.phase2_pfs_dh_group {
        let _ = write!(s, "/PFS{g}");
    }
    Some(s)
}

/// A time in ms since the epoch as UTC `YYYY-MM-DD HH:MM:SS`.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn tunnel_detail(t: &api::TunnelStatus, events: &[HealthEvent]) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| {
        let _ = writeln!(out, "{k:<22} {v}");
    };
    line(
        "tunnel",
        format!(
            "{}/{} {} -> {}",
            t.connection_id,
            t.tunnel,
            opt(t.outside_ip_address),
            opt(t.peer_ip_address)
        ),
    );
    line("status", format!("{:?}", t.status).to_uppercase());
    line(
        "ike phase 1 / 2",
        format!(
            "{} / {}",
            t.ike_phase1_state.as_str(),
            t.ike_phase2_state.as_str()
        ),
    );
    if let Some(b) = &t.bgp_state {
        line("bgp", b.clone());
    }
    line(
        "nat-t",
        if t.nat_t_detected { "yes" } else { "no" }.to_owned(),
    );
    line(
        "last change",
        format!(
            "{} ({})",
            t.last_status_change_ms.map_or_else(|| "-".to_owned(), utc),
            t.last_status_change_reason.as_deref().unwrap_or("-")
        ),
    );
    line("status changes", t.status_changes.to_string());
    line("flaps", t.flaps.to_string());
    match &t.negotiated {
        None => line("negotiated", "- (no IKE SA)".to_owned()),
        Some(n) => {
            line("ike version", n.ike_version.to_string());
            line("phase 1 encryption", n.phase1_encryption.to_string());
            line("phase 1 integrity", opt(n.phase1_integrity));
            line("phase 1 prf", n.phase1_prf.to_string());
            line("phase 1 dh group", n.phase1_dh_group.to_string());
            line(
                "phase 1 lifetime",
                format!(
                    "{} s, rekey in {}",
                    n.phase1_lifetime_secs,
                    opt(t.phase1_rekey_in_secs.map(|s| format!("{s} s")))
                ),
            );
            line("phase 2 encryption", opt(n.phase2_encryption));
            line("phase 2 integrity", opt(n.phase2_integrity));
            line("phase 2 pfs dh group", opt(n.phase2_pfs_dh_group));
            line(
                "phase 2 esn",
                if n.phase2_esn { "yes" } else { "no" }.to_owned(),
            );
            line(
                "phase 2 lifetime",
                format!(
                    "{} s, rekey in {}",
                    opt(n.phase2_lifetime_secs),
                    opt(t.phase2_rekey_in_secs.map(|s| format!("{s} s")))
                ),
            );
        }
    }
    if !events.is_empty() {
        out.push('\n');
        out.push_str(&health_rows(events));
    }
    out
}

fn psk_rows(secrets: &[SecretInfo]) -> String {
    let rows: Vec<Vec<String>> = secrets
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.version.to_string(),
                utc(s.updated_ms),
                if s.used_by.is_empty() {
                    "-".to_owned()
                } else {
                    s.used_by.join(",")
                },
            ]
        })
        .collect();
    table(&["NAME", "VERSION", "UPDATED", "USED-BY"], &rows)
}

fn health_rows(events: &[HealthEvent]) -> String {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                utc(e.event_timestamp),
                e.kind.as_str().to_owned(),
                e.connection_id.clone(),
                e.tunnel.to_string(),
                e.details.clone(),
            ]
        })
        .collect();
    table(&["TIME", "EVENT", "CONNECTION", "TUNNEL", "DETAILS"], &rows)
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn connection_rows(cs: &[ConnectionView]) -> String {
    let rows: Vec<Vec<String>> = cs
        .iter()
        .map(|v| {
            let c = &v.connection;
            vec![
                c.id.clone(),
                c.customer_gateway_id.clone(),
                c.routing.to_string(),
                opt(c.tunnels[0].outside_ip_address),
                opt(c.tunnels[0].inside_ipv4_cidr),
                opt(c.tunnels[1].outside_ip_address),
                opt(c.tunnels[1].inside_ipv4_cidr),
                c.static_routes.len().to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "CUSTOMER-GW",
            "ROUTING",
            "TUNNEL0",
            "INSIDE0",
            "TUNNEL1",
            "INSIDE1",
            "ROUTES",
        ],
        &rows,
    )
}

fn human(r: &Response) -> String {
    if let Some(text) = client_vpn::human(r) {
        return text;
    }
    match r {
        Response::Ok => "ok\n".to_owned(),
        Response::Pong { version, daemon } => {
            format!("vpnd {daemon} answers (protocol version {version})\n")
        }
        Response::CustomerGateway { customer_gateway } => human(&Response::CustomerGateways {
            customer_gateways: vec![customer_gateway.clone()],
        }),
        Response::CustomerGateways { customer_gateways } => {
            let rows: Vec<Vec<String>> = customer_gateways
                .iter()
                .map(|g| {
                    vec![
                        g.id.clone(),
                        opt(g.ip_address),
                        opt(g.bgp_asn),
                        opt(g.device_name.clone()),
                    ]
                })
                .collect();
            table(&["ID", "IP-ADDRESS", "BGP-ASN", "DEVICE"], &rows)
        }
        Response::Connection { connection } => connection_rows(std::slice::from_ref(connection)),
        Response::Connections { connections } => connection_rows(connections),
        Response::Tunnels { tunnels } => {
            let rows: Vec<Vec<String>> = tunnels
                .iter()
                .map(|t| {
                    vec![
                        t.connection_id.clone(),
                        t.tunnel.to_string(),
                        opt(t.outside_ip_address),
                        opt(t.peer_ip_address),
                        opt(t.inside_cidr),
                        format!("{:?}", t.status).to_uppercase(),
                        t.ike_phase1_state.as_str().to_owned(),
                        t.ike_phase2_state.as_str().to_owned(),
                        opt(t.bgp_state.clone()),
                        if t.nat_t_detected { "yes" } else { "no" }.to_owned(),
                        t.flaps.to_string(),
                        opt(t.negotiated.as_ref().map(ike_suite)),
                        opt(t.negotiated.as_ref().and_then(esp_suite)),
                        opt(t.ike_version),
                        opt(t.ike_refused.clone()),
                        status_detail(t),
                    ]
                })
                .collect();
            table(
                &[
                    "CONNECTION",
                    "TUNNEL",
                    "OUTSIDE-IP",
                    "PEER-IP",
                    "INSIDE",
                    "STATUS",
                    "PHASE1",
                    "PHASE2",
                    "BGP",
                    "NAT-T",
                    "FLAPS",
                    "IKE",
                    "ESP",
                    "VERSION",
                    "REFUSED",
                    "DETAIL",
                ],
                &rows,
            )
        }
        Response::Tunnel {
            tunnel,
            health_events,
        } => tunnel_detail(tunnel, health_events),
        Response::HealthEvents { events } => health_rows(events),
        Response::Psk { secret } => psk_rows(std::slice::from_ref(secret)),
        Response::Psks { secrets } => psk_rows(secrets),
        Response::Sas { sas } => {
            let rows: Vec<Vec<String>> = sas
                .iter()
                .map(|s| {
                    vec![
                        s.connection_id.clone(),
                        s.tunnel.to_string(),
                        format!("{:?}", s.direction).to_lowercase(),
                        format!("0x{:08x}", s.spi),
                        s.encryption.clone(),
                        s.local.to_string(),
                        s.peer.to_string(),
                        s.bytes.to_string(),
                        s.packets.to_string(),
                        s.age_secs.to_string(),
                    ]
                })
                .collect();
            table(
                &[
                    "CONNECTION",
                    "TUNNEL",
                    "DIR",
                    "SPI",
                    "CIPHER",
                    "LOCAL",
                    "PEER",
                    "BYTES",
                    "PACKETS",
                    "AGE-S",
                ],
                &rows,
            )
        }
        Response::Routes { routes } => {
            let rows: Vec<Vec<String>> = routes
                .iter()
                .map(|r| {
                    vec![
                        r.prefix.to_string(),
                        r.connection_id.clone(),
                        opt(r.tunnel),
                        r.source.clone(),
                        if r.active { "yes" } else { "no" }.to_owned(),
                        opt(r.next_hop),
                        r.as_path
                            .as_ref()
                            .map_or_else(|| "-".to_owned(), |p| format!("[{p}]")),
                        opt(r.med),
                        if r.ecmp.is_empty() {
                            "-".to_owned()
                        } else {
                            r.ecmp.join(",")
                        },
                    ]
                })
                .collect();
            table(
                &[
                    "PREFIX",
                    "CONNECTION",
                    "TUNNEL",
                    "SOURCE",
                    "ACTIVE",
                    "NEXT-HOP",
                    "AS-PATH",
                    "MED",
                    "ECMP",
                ],
                &rows,
            )
        }
        Response::Bgp { neighbors } => {
            let rows: Vec<Vec<String>> = neighbors
                .iter()
                .map(|n| {
                    vec![
                        n.connection_id.clone(),
                        n.tunnel.to_string(),
                        n.local_address.to_string(),
                        n.neighbor.to_string(),
                        n.peer_asn.to_string(),
                        n.state.clone(),
                        uptime(n.uptime_secs),
                        n.prefixes_received.to_string(),
                        n.prefixes_advertised.to_string(),
                        n.denied.to_string(),
                        opt(n.last_sent_notification.clone()),
                        opt(n.last_received_notification.clone()),
                    ]
                })
                .collect();
            table(
                &[
                    "CONNECTION",
                    "TUNNEL",
                    "LOCAL",
                    "NEIGHBOR",
                    "AS",
                    "STATE",
                    "UP",
                    "PFX-RCVD",
                    "PFX-SENT",
                    "DENIED",
                    "LAST-SENT",
                    "LAST-RCVD",
                ],
                &rows,
            )
        }
        Response::Stats { stats } => {
            let rows: Vec<Vec<String>> = stats
                .tunnels
                .iter()
                .map(|(k, c)| {
                    vec![
                        k.clone(),
                        c.data_in_bytes.to_string(),
                        c.data_out_bytes.to_string(),
                        c.packets_in.to_string(),
                        c.packets_out.to_string(),
                        c.drops.to_string(),
                        c.worker.map_or_else(|| "-".to_owned(), |w| w.to_string()),
                    ]
                })
                .collect();
            let mut out = format!(
                "rx packets {}  tx packets {}\n",
                stats.rx_packets, stats.tx_packets
            );
            if !stats.worker.is_empty() {
                let line: Vec<String> = stats
                    .worker
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect();
                let _ = writeln!(out, "worker: {}", line.join("  "));
            }
            if !stats.steering.is_empty() {
                let _ = writeln!(out, "steering: {}", stats.steering);
            }
            if !stats.crypto_backend.is_empty() {
                let _ = writeln!(out, "crypto: {}", stats.crypto_backend);
            }
            out.push('\n');
            if !stats.ports.is_empty() {
                let rows: Vec<Vec<String>> = stats
                    .ports
                    .iter()
                    .map(|(name, p)| {
                        vec![
                            name.clone(),
                            p.rx_packets.to_string(),
                            p.tx_packets.to_string(),
                            p.rx_bytes.to_string(),
                            p.tx_bytes.to_string(),
                            p.rx_dropped.to_string(),
                            p.tx_errors.to_string(),
                        ]
                    })
                    .collect();
                out.push_str(&table(
                    &[
                        "PORT",
                        "RX-PKTS",
                        "TX-PKTS",
                        "RX-BYTES",
                        "TX-BYTES",
                        "RX-DROPPED",
                        "TX-ERRORS",
                    ],
                    &rows,
                ));
                out.push('\n');
            }
            out.push_str(&table(
                &[
                    "TUNNEL",
                    "DATA-IN-B",
                    "DATA-OUT-B",
                    "PKTS-IN",
                    "PKTS-OUT",
                    "DROPS",
                    "WORKER",
                ],
                &rows,
            ));
            // Every reason is in the JSON; the table lists those that
            // happened.
            let rows: Vec<Vec<String>> = stats
                .drops
                .iter()
                .filter(|(_, v)| **v > 0)
                .map(|(k, v)| vec![k.clone(), v.to_string()])
                .collect();
            out.push('\n');
            if rows.is_empty() {
                out.push_str("no drops\n");
            } else {
                out.push_str(&table(&["DROP-REASON", "PACKETS"], &rows));
            }
            out
        }
        Response::Logs { entries } => {
            let mut out = String::new();
            for e in entries {
                out.push_str(&e.render_text());
                out.push('\n');
            }
            out
        }
        Response::ConfigText { text, .. } => text.clone(),
        Response::ConfigToml { toml } => toml.clone(),
        other => format!("{other:?}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    /// `config download --device` takes every device by name, `--help`
    /// lists them all (top level and the subcommand), and an unknown name
    /// is a usage error that lists the valid ones.
    #[test]
    fn download_devices() {
        for &d in Device::ALL {
            let cli = Cli::try_parse_from([
                "vpnctl",
                "config",
                "download",
                "vpn-1",
                "--device",
                d.as_str(),
            ])
            .unwrap();
            match build_request(&cli.command).unwrap() {
                Request::ConfigDownload { device, .. } => assert_eq!(device, d),
                other => panic!("{other:?}"),
            }
        }
        let cli = Cli::try_parse_from(["vpnctl", "config", "download", "vpn-1"]).unwrap();
        assert!(matches!(
            build_request(&cli.command).unwrap(),
            Request::ConfigDownload {
                device: Device::Generic,
                ..
            }
        ));
        let e = Cli::try_parse_from(["vpnctl", "config", "download", "vpn-1", "--device", "cisco"])
            .unwrap_err()
            .to_string();
        for &d in Device::ALL {
            assert!(e.contains(d.as_str()), "{e}");
        }
        let top = Cli::command().render_long_help().to_string();
        let mut cmd = Cli::command();
        let download = cmd
            .find_subcommand_mut("config")
            .unwrap()
            .find_subcommand_mut("download")
            .unwrap()
            .render_long_help()
            .to_string();
        for &d in Device::ALL {
            assert!(top.contains(d.as_str()), "{d} not in vpnctl --help:\n{top}");
            assert!(download.contains(d.as_str()), "{d}:\n{download}");
            assert!(download.contains(d.description()), "{d}:\n{download}");
        }
    }

    fn sets(s: &[&str]) -> Vec<String> {
        s.iter().map(|&x| x.to_owned()).collect()
    }

    fn usage<T: serde::de::DeserializeOwned + std::fmt::Debug>(s: &[&str]) -> String {
        match patch_from_sets::<T>(&sets(s)) {
            Err(Fail::Usage(m)) => m,
            other => panic!("{s:?}: expected a usage error, got {other:?}"),
        }
    }

    /// Issue 17: a number too large for TOML is named as such, the key is
    /// named, secrets are not echoed, long input is shortened.
    #[test]
    fn set_values_give_errors_that_name_the_key() {
        let m = usage::<TunnelOptionsPatch>(&["phase2_lifetime_secs=18446744073709551616"]);
        assert!(m.contains("phase2_lifetime_secs"), "{m}");
        assert!(m.contains("not a number the configuration can hold"), "{m}");
        assert!(!m.contains("invalid type: string"), "{m}");

        let m = usage::<TunnelOptionsPatch>(&["phase2_lifetime_secs=true"]);
        assert!(m.starts_with("--set phase2_lifetime_secs=true: "), "{m}");

        let long = format!("dpd_timeout_secs={}", "x".repeat(100_000));
        let m = usage::<TunnelOptionsPatch>(&[long.as_str()]);
        assert!(m.len() < 400, "{} bytes", m.len());

        let m = usage::<TunnelOptionsPatch>(&["no_such_option=1"]);
        assert!(m.contains("no_such_option"), "{m}");
    }

    /// A value that TOML reads as a number is a string where the field
    /// wants one (a numeric pre-shared key).
    #[test]
    fn numeric_text_is_a_string_where_a_string_is_wanted() {
        let p: TunnelOptionsPatch = patch_from_sets(&sets(&[
            "pre_shared_key=12345678",
            "phase2_lifetime_secs=1800",
        ]))
        .unwrap();
        let q: TunnelOptionsPatch =
            patch_from_sets(&sets(&["pre_shared_key=99999999999999999999"])).unwrap();
        assert!(q.pre_shared_key.is_some());
        let v = toml::Value::try_from(&p).unwrap();
        assert_eq!(v["phase2_lifetime_secs"].as_integer(), Some(1800));
        assert!(v.get("pre_shared_key").is_some());
    }

    #[test]
    fn utc_renders_civil_time() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(1_767_225_600_000), "2026-01-01 00:00:00Z");
        assert_eq!(utc(951_825_599_000), "2000-02-29 11:59:59Z");
    }
}
