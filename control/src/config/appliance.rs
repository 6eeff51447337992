//! The whole appliance configuration and the rules that span objects.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use dataplane::crypto::BackendPreference;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use super::certificates::CertificatesConfig;
use super::connection::{VpnConnection, VpnConnectionOptionsPatch};
use super::error::{ConfigError, Errors, finish};
use super::gateway::{
    AddrClass, CustomerGateway, DEFAULT_GATEWAY_ASN, GATEWAY_ASN_RANGES, check_id, classify,
    is_gateway_asn,
};
use super::inside;
use super::names::{
    GatewayKind, LogFormat, LogLevel, OutsideIpAddressType, PortRole, PreSharedKeyStorage,
    RoutingType, StartupAction, TunnelBandwidth, TunnelInsideIpVersion,
};
use super::psk::PreSharedKey;
use super::store::ParseError;
use super::tunnel::TunnelOptionsPatch;

/// Default metrics listen address: loopback only, port 9469.
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9469);

/// Highest lcore id accepted: DPDK's default `RTE_MAX_LCORE` is 128.
pub const MAX_LCORE_ID: u32 = 127;

/// Highest cpu id accepted in `worker_cpus`/`main_cpu` (the EAL's
/// `CPU_SETSIZE` is 1024).
pub const MAX_CPU_ID: u32 = 1023;

/// Most queues per port accepted.
pub const MAX_QUEUES_PER_PORT: u16 = 64;

/// The gateway this appliance plays (spec §2, §11).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Identifier connections name as their `target`.
    pub id: String,
    /// Which rule set applies. Default `transit-gateway`.
    #[serde(default)]
    pub kind: GatewayKind,
    /// Appliance-side BGP ASN: 64512–65534 or 4200000000–4294967294.
    /// Default 64512.
    #[serde(default = "default_asn")]
    pub asn: u32,
    /// The appliance's outside addresses, IPv4 and/or IPv6. Each tunnel
    /// binds to one of them.
    pub outside_addresses: Vec<IpAddr>,
    /// Networks behind the appliance (the "VPC CIDR" role): advertised over
    /// BGP, and the appliance side of static connections.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_networks: Vec<IpNet>,
}

fn default_asn() -> u32 {
    DEFAULT_GATEWAY_ASN
}

/// One DPDK port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// Name used in logs and metrics, unique.
    pub name: String,
    /// PCI address (`0000:01:00.0`) or virtual device (`net_tap0,iface=x`).
    pub device: String,
    /// What the port faces.
    pub role: PortRole,
    /// RX queues, 1 to the number of workers (every queue is polled by
    /// one worker). Default 1. Validated but not yet applied: the DPDK
    /// runtime gives every port one rx/tx queue pair per worker (worker
    /// `i` polls queue `i`; `net_af_packet`'s fanout needs every queue
    /// polled), see `appliance::runtime`.
    #[serde(default = "one")]
    pub rx_queues: u16,
    /// TX queues. Absent: one per worker (workers never share a TX queue,
    /// so there is no lock). When set, at least the number of workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_queues: Option<u16>,
}

fn one() -> u16 {
    1
}

/// DPDK dataplane settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataplaneConfig {
    /// hugetlbfs mount the EAL uses (`--huge-dir`). Default `/dev/hugepages`.
    #[serde(default = "default_huge_dir")]
    pub hugepages_dir: PathBuf,
    /// EAL `--file-prefix`, unique per DPDK process on the host. Default `vpnd`.
    #[serde(default = "default_file_prefix")]
    pub file_prefix: String,
    /// Main lcore (runs the control core). Default 0.
    #[serde(default)]
    pub main_lcore: u32,
    /// Worker lcores, one pinned worker each.
    pub worker_lcores: Vec<u32>,
    /// The cpu each worker lcore runs on, in the order of `worker_lcores`
    /// (EAL `--lcores 1@cpu,…`). Absent: lcore `n` runs on cpu `n`
    /// (EAL `-l`). With it, lcore ids are names and several workers may
    /// share a cpu: more workers than cpus (functional tests, small
    /// machines), never for throughput.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_cpus: Option<Vec<u32>>,
    /// The cpu the main lcore runs on when `worker_cpus` is given.
    /// Absent: cpu `main_lcore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_cpu: Option<u32>,
    /// Ports: at least one outside and one inside; at most one kernel
    /// (exception path, a `net_tap` device).
    pub ports: Vec<PortConfig>,
    /// MAC of the next hop on the outside port (the router toward the
    /// customer gateways), `aa:bb:cc:dd:ee:ff`. Absent: broadcast.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside_next_hop_mac: Option<String>,
    /// MAC of the next hop on the inside port (the VPC router). Absent:
    /// broadcast.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inside_next_hop_mac: Option<String>,
    /// The appliance's own IPv4 addresses on the inside port (answered in
    /// ARP).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inside_addresses: Vec<Ipv4Addr>,
    /// Enforce each tunnel's rate caps by its bandwidth option (spec
    /// §21.3: standard 1.25 Gbps / 140,000 packets/s, large 5 Gbps /
    /// 400,000 packets/s; a concentrator's tunnels 100 Mbps / 10,000
    /// packets/s), each direction, dropping the excess (counted as
    /// `policed`). Default on. Off is refused for a concentrator gateway,
    /// whose per-tunnel cap is not adjustable (spec §11.2).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub tunnel_policing: bool,
    /// The ESP crypto library: `auto` (default: intel-ipsec-mb where its
    /// code path for this CPU is AVX2 or better, else `ring`),
    /// `ipsec-mb` (refused at start where it cannot run) or `ring`.
    #[serde(default = "default_crypto_backend", skip_serializing_if = "is_auto")]
    pub crypto_backend: String,
    /// Let `vpn-setup nics` bind the PCI ports to `vfio-pci` in vfio's
    /// no-IOMMU mode when the machine has no IOMMU (or it is off). That
    /// mode gives the dataplane unprotected DMA and taints the kernel:
    /// only for boxes that run nothing else. Default off: without an
    /// IOMMU the binding is refused.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_no_iommu: bool,
}

impl DataplaneConfig {
    /// The EAL `--lcores` map when `worker_cpus` is given: the main lcore
    /// on `main_cpu` (or its own number) and each worker lcore on its cpu,
    /// e.g. `0@0,1@0,2@0` for two workers sharing cpu 0. `None`: lcore
    /// `n` on cpu `n` (EAL `-l`). Meaningful on a validated configuration.
    #[must_use]
    pub fn lcore_map(&self) -> Option<String> {
        let cpus = self.worker_cpus.as_ref()?;
        let main = self.main_cpu.unwrap_or(self.main_lcore);
        let mut map = format!("{}@{main}", self.main_lcore);
        for (lcore, cpu) in self.worker_lcores.iter().zip(cpus) {
            map.push_str(&format!(",{lcore}@{cpu}"));
        }
        Some(map)
    }

    /// `crypto_backend` parsed; `Auto` for a value validation refuses.
    #[must_use]
    pub fn crypto_backend_preference(&self) -> BackendPreference {
        BackendPreference::parse(&self.crypto_backend).unwrap_or_default()
    }
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if signature"
)]
fn is_true(b: &bool) -> bool {
    *b
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if signature"
)]
fn is_false(b: &bool) -> bool {
    !*b
}

/// Parse a MAC address written `aa:bb:cc:dd:ee:ff`.
///
/// # Errors
/// What is wrong with it.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for m in &mut mac {
        let p = parts.next().unwrap_or("");
        if p.len() != 2 {
            return Err("six two-digit hex bytes separated by ':'".to_owned());
        }
        *m = u8::from_str_radix(p, 16)
            .map_err(|_| "six two-digit hex bytes separated by ':'".to_owned())?;
    }
    if parts.next().is_some() {
        return Err("six two-digit hex bytes separated by ':'".to_owned());
    }
    Ok(mac)
}

fn default_crypto_backend() -> String {
    "auto".to_owned()
}

#[allow(clippy::ptr_arg, reason = "serde's skip_serializing_if signature")]
fn is_auto(s: &String) -> bool {
    s == "auto"
}

fn default_huge_dir() -> PathBuf {
    PathBuf::from("/dev/hugepages")
}
fn default_file_prefix() -> String {
    "vpnd".to_owned()
}

/// Management API socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagementConfig {
    /// Unix socket path. Default `/run/vpnd/control.sock`.
    #[serde(default = "default_socket_path")]
    pub socket_path: PathBuf,
    /// Group owning the socket (mode 0660). Default `vpnd`.
    #[serde(default = "default_socket_group")]
    pub socket_group: String,
}

fn default_socket_path() -> PathBuf {
    PathBuf::from("/run/vpnd/control.sock")
}
fn default_socket_group() -> String {
    "vpnd".to_owned()
}

impl Default for ManagementConfig {
    fn default() -> Self {
        Self {
            socket_path: default_socket_path(),
            socket_group: default_socket_group(),
        }
    }
}

/// Metrics endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Whether the endpoint is served. Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Listen address. Default 127.0.0.1:9469.
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
}

fn yes() -> bool {
    true
}
fn default_metrics_listen() -> SocketAddr {
    DEFAULT_METRICS_LISTEN
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: DEFAULT_METRICS_LISTEN,
        }
    }
}

/// Daemon logging: what vpnd writes where (`appliance::logging` installs
/// it). Tunnel activity and BGP records go to the same outputs when the
/// tunnel's own `log` options enable them, in the tunnel's format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// Level. Default `info`. The environment variable `RUST_LOG`, when
    /// set, replaces it with its own filter (`info,vpnd::bgp=debug`).
    #[serde(default)]
    pub level: LogLevel,
    /// Format of the daemon's lines. Default `text` (journald adds its own
    /// structure). Tunnel records keep their tunnel's format.
    #[serde(default = "default_daemon_log_format")]
    pub format: LogFormat,
    /// Write to the systemd journal (native protocol: priority and fields)
    /// instead of stderr. Absent: when stderr is the journal already
    /// (`JOURNAL_STREAM` names it, as under the systemd unit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journald: Option<bool>,
    /// Also write to this file (absolute path), rotated by size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// The file is rotated (`file` → `file.1` → … ) before it would grow
    /// past this many bytes. Default 10 MiB; 4096..=1 GiB.
    #[serde(default = "default_file_max_bytes")]
    pub file_max_bytes: u64,
    /// Rotated files kept (`file.1` … `file.N`); the oldest is removed.
    /// Default 5; 1..=100.
    #[serde(default = "default_file_keep")]
    pub file_keep: u32,
}

/// Default [`LoggingConfig::file_max_bytes`]: 10 MiB.
pub const DEFAULT_LOG_FILE_MAX_BYTES: u64 = 10 << 20;
/// Allowed [`LoggingConfig::file_max_bytes`].
pub const LOG_FILE_MAX_BYTES_RANGE: (u64, u64) = (4096, 1 << 30);
/// Default [`LoggingConfig::file_keep`].
pub const DEFAULT_LOG_FILE_KEEP: u32 = 5;
/// Allowed [`LoggingConfig::file_keep`].
pub const LOG_FILE_KEEP_RANGE: (u32, u32) = (1, 100);

fn default_daemon_log_format() -> LogFormat {
    LogFormat::Text
}
fn default_file_max_bytes() -> u64 {
    DEFAULT_LOG_FILE_MAX_BYTES
}
fn default_file_keep() -> u32 {
    DEFAULT_LOG_FILE_KEEP
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: LogLevel::default(),
            format: LogFormat::Text,
            journald: None,
            file: None,
            file_max_bytes: DEFAULT_LOG_FILE_MAX_BYTES,
            file_keep: DEFAULT_LOG_FILE_KEEP,
        }
    }
}

impl LoggingConfig {
    fn validate_into(&self, errs: &mut Errors<'_>) {
        if let Some(f) = &self.file
            && (!f.is_absolute() || f.file_name().is_none())
        {
            errs.invalid("file", f.display(), "must be an absolute path to a file");
        }
        let (lo, hi) = LOG_FILE_MAX_BYTES_RANGE;
        if !(lo..=hi).contains(&self.file_max_bytes) {
            errs.out_of_range(
                "file_max_bytes",
                self.file_max_bytes,
                format!("{lo}..={hi}"),
            );
        }
        let (lo, hi) = LOG_FILE_KEEP_RANGE;
        if !(lo..=hi).contains(&self.file_keep) {
            errs.out_of_range("file_keep", self.file_keep, format!("{lo}..={hi}"));
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplianceConfig {
    /// The gateway this appliance plays.
    pub gateway: GatewayConfig,
    /// Dataplane.
    pub dataplane: DataplaneConfig,
    /// Management socket.
    #[serde(default)]
    pub management: ManagementConfig,
    /// Metrics.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Daemon logging.
    #[serde(default)]
    pub logging: LoggingConfig,
    /// Customer gateways.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub customer_gateways: Vec<CustomerGateway>,
    /// VPN connections.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connections: Vec<VpnConnection>,
    /// Certificate authentication: our endpoint certificate and the CA
    /// chains customer gateways' private certificates are issued under.
    #[serde(default, skip_serializing_if = "CertificatesConfig::is_empty")]
    pub certificates: CertificatesConfig,
    /// Client VPN (remote-access) endpoints (`crate::client_vpn`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_vpn_endpoints: Vec<crate::client_vpn::ClientVpnEndpoint>,
}

fn label(id: &str, index: usize) -> String {
    if id.is_empty() {
        index.to_string()
    } else {
        id.to_owned()
    }
}

/// Every tunnel's inside CIDR with the field path that configures it,
/// ordered by network address so that the ones a route overlaps are one
/// range look-up away.
struct InsideCidrs {
    v4: BTreeMap<Ipv4Net, String>,
    v6: BTreeMap<Ipv6Net, String>,
}

impl InsideCidrs {
    /// One inside CIDR that `route` overlaps (contains, or lies in).
    ///
    /// Inside CIDRs are disjoint /30s or /126s, so a route overlaps one
    /// exactly when it contains that CIDR's network address, or when the
    /// route is longer and the inside CIDR truncated to its length is it.
    fn overlapping(&self, route: IpNet) -> Option<(IpNet, &str)> {
        fn find<N: Ord + Copy>(
            map: &BTreeMap<N, String>,
            lo: N,
            hi: N,
            within: N,
        ) -> Option<(N, &str)> {
            map.range(lo..=hi)
                .next()
                .or_else(|| map.get_key_value(&within))
                .map(|(n, p)| (*n, p.as_str()))
        }
        match route {
            IpNet::V4(r) => {
                let lo = Ipv4Net::new(r.network(), 0).ok()?;
                let hi = Ipv4Net::new(r.broadcast(), 32).ok()?;
                let within = Ipv4Net::new(r.network(), inside::INSIDE_IPV4_PREFIX_LEN)
                    .ok()?
                    .trunc();
                find(&self.v4, lo, hi, within).map(|(n, p)| (IpNet::V4(n), p))
            }
            IpNet::V6(r) => {
                let lo = Ipv6Net::new(r.network(), 0).ok()?;
                let hi = Ipv6Net::new(r.broadcast(), 128).ok()?;
                let within = Ipv6Net::new(r.network(), inside::INSIDE_IPV6_PREFIX_LEN)
                    .ok()?
                    .trunc();
                find(&self.v6, lo, hi, within).map(|(n, p)| (IpNet::V6(n), p))
            }
        }
    }
}

impl ApplianceConfig {
    /// Parse TOML text. Defaults are applied to absent fields; nothing is
    /// validated beyond types (call [`Self::validate`]).
    ///
    /// # Errors
    /// [`ParseError`] with the line and column of the problem.
    pub fn from_toml_str(text: &str) -> Result<Self, ParseError> {
        toml::from_str(text).map_err(|e| ParseError::from_toml(text, &e))
    }

    /// Render as TOML.
    ///
    /// # Errors
    /// Only if a value cannot be represented in TOML (not expected for this
    /// type).
    pub fn to_toml_string(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }

    /// Check every rule of the configuration and return all broken ones.
    ///
    /// # Errors
    /// Every broken rule, each naming its field path, e.g.
    /// `connections[vpn-1].tunnels[0].phase2_lifetime_secs`.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut out = Vec::new();
        let mut errs = Errors::new("", &mut out);
        self.validate_gateway(&mut errs.nested("gateway"));
        self.validate_dataplane(&mut errs.nested("dataplane"));
        self.validate_services(&mut errs);
        self.validate_customer_gateways(&mut errs);
        self.certificates
            .validate_into(&self.customer_gateways, &mut errs);
        self.validate_connections(&mut errs);
        crate::client_vpn::validate_endpoints(self, &mut errs);
        finish(out)
    }

    fn validate_gateway(&self, errs: &mut Errors<'_>) {
        let g = &self.gateway;
        check_id(errs, "id", &g.id);
        if !is_gateway_asn(g.asn) {
            let [(a, b), (c, d)] = GATEWAY_ASN_RANGES;
            errs.out_of_range("asn", g.asn, format!("{a}..={b} or {c}..={d}"));
        }
        if g.outside_addresses.is_empty() {
            errs.missing(
                "outside_addresses",
                "at least one outside address is required",
            );
        }
        for (i, a) in g.outside_addresses.iter().enumerate() {
            let f = format!("outside_addresses[{i}]");
            if let AddrClass::Unusable(why) = classify(*a) {
                errs.invalid(&f, a, format!("{why} cannot be an outside address"));
            }
            if let Some(j) = g.outside_addresses[..i].iter().position(|b| b == a) {
                let first = errs.path(&format!("outside_addresses[{j}]"));
                errs.duplicate(&f, a, first);
            }
        }
        for (i, n) in g.local_networks.iter().enumerate() {
            if n.addr() != n.network() {
                errs.invalid(
                    &format!("local_networks[{i}]"),
                    n,
                    format!("host bits are set; write the network address {}", n.trunc()),
                );
            }
        }
    }

    fn validate_dataplane(&self, errs: &mut Errors<'_>) {
        let d = &self.dataplane;
        if !d.hugepages_dir.is_absolute() {
            errs.invalid(
                "hugepages_dir",
                d.hugepages_dir.display(),
                "must be an absolute path",
            );
        }
        if d.file_prefix.is_empty()
            || d.file_prefix.len() > 64
            || !d
                .file_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            errs.invalid(
                "file_prefix",
                format!("{:?}", d.file_prefix),
                "1..=64 characters from [A-Za-z0-9_-]",
            );
        }
        errs.range("main_lcore", d.main_lcore, 0, MAX_LCORE_ID);
        if BackendPreference::parse(&d.crypto_backend).is_none() {
            errs.invalid(
                "crypto_backend",
                format!("{:?}", d.crypto_backend),
                "one of \"auto\", \"ipsec-mb\", \"ring\"",
            );
        }
        if !d.tunnel_policing && self.gateway.kind == GatewayKind::Concentrator {
            errs.conflict(
                "tunnel_policing",
                false,
                "gateway.kind = concentrator: the per-tunnel cap of 100 Mbps / 10,000 packets/s \
                 is not adjustable (spec §11.2)",
            );
        }
        if d.worker_lcores.is_empty() {
            errs.missing("worker_lcores", "at least one worker lcore is required");
        }
        for (i, l) in d.worker_lcores.iter().enumerate() {
            let f = format!("worker_lcores[{i}]");
            errs.range(&f, *l, 0, MAX_LCORE_ID);
            if *l == d.main_lcore {
                let other = errs.path("main_lcore");
                errs.conflict(
                    &f,
                    l,
                    format!("{other}: workers run on their own lcores, not the main lcore"),
                );
            }
            if let Some(j) = d.worker_lcores[..i].iter().position(|m| m == l) {
                let first = errs.path(&format!("worker_lcores[{j}]"));
                errs.duplicate(&f, l, first);
            }
        }
        if let Some(cpus) = &d.worker_cpus {
            if cpus.len() != d.worker_lcores.len() {
                let lcores = errs.path("worker_lcores");
                errs.conflict(
                    "worker_cpus",
                    format!("{} cpu(s)", cpus.len()),
                    format!(
                        "one cpu per worker lcore: {lcores} has {}",
                        d.worker_lcores.len()
                    ),
                );
            }
            for (i, c) in cpus.iter().enumerate() {
                errs.range(&format!("worker_cpus[{i}]"), *c, 0, MAX_CPU_ID);
            }
        }
        if let Some(c) = d.main_cpu {
            errs.range("main_cpu", c, 0, MAX_CPU_ID);
            if d.worker_cpus.is_none() {
                let other = errs.path("worker_cpus");
                errs.conflict(
                    "main_cpu",
                    c,
                    format!("only with {other}: without it lcore n runs on cpu n"),
                );
            }
        }
        let workers = u16::try_from(d.worker_lcores.len())
            .unwrap_or(u16::MAX)
            .max(1);
        for (field, mac) in [
            ("outside_next_hop_mac", &d.outside_next_hop_mac),
            ("inside_next_hop_mac", &d.inside_next_hop_mac),
        ] {
            if let Some(m) = mac
                && let Err(why) = parse_mac(m)
            {
                errs.invalid(field, format!("{m:?}"), why);
            }
        }
        if d.ports
            .iter()
            .filter(|p| p.role == PortRole::Kernel)
            .count()
            > 1
        {
            errs.invalid(
                "ports",
                "more than one kernel port",
                "at most one port with role kernel",
            );
        }
        for role in [PortRole::Outside, PortRole::Inside] {
            if !d.ports.iter().any(|p| p.role == role) {
                errs.missing(
                    "ports",
                    format!("at least one port with role {role} is required"),
                );
            }
        }
        for (i, p) in d.ports.iter().enumerate() {
            let mut pe = errs.nested(&format!("ports[{}]", label(&p.name, i)));
            check_id(&mut pe, "name", &p.name);
            if p.device.trim().is_empty() {
                pe.invalid(
                    "device",
                    "\"\"",
                    "a PCI address or a virtual device specification",
                );
            }
            pe.range(
                "rx_queues",
                p.rx_queues,
                1,
                workers.min(MAX_QUEUES_PER_PORT),
            );
            if let Some(tx) = p.tx_queues {
                pe.range(
                    "tx_queues",
                    tx,
                    workers.min(MAX_QUEUES_PER_PORT),
                    MAX_QUEUES_PER_PORT,
                );
            }
            if let Some(j) = d.ports[..i].iter().position(|q| q.name == p.name) {
                let first = errs.path(&format!("ports[{j}].name"));
                errs.duplicate(
                    &format!("ports[{}].name", label(&p.name, i)),
                    &p.name,
                    first,
                );
            }
        }
    }

    fn validate_services(&self, errs: &mut Errors<'_>) {
        let m = &self.management;
        if !m.socket_path.is_absolute() {
            errs.invalid(
                "management.socket_path",
                m.socket_path.display(),
                "must be an absolute path",
            );
        }
        if m.socket_group.is_empty()
            || m.socket_group.len() > 32
            || m.socket_group
                .chars()
                .any(|c| c.is_whitespace() || c == ':')
        {
            errs.invalid(
                "management.socket_group",
                format!("{:?}", m.socket_group),
                "a group name of 1..=32 characters, no spaces or ':'",
            );
        }
        if self.metrics.listen.port() == 0 {
            errs.invalid(
                "metrics.listen",
                self.metrics.listen,
                "port 0 is not a fixed port",
            );
        }
        self.logging.validate_into(&mut errs.nested("logging"));
    }

    fn validate_customer_gateways(&self, errs: &mut Errors<'_>) {
        let mut seen_ip: HashMap<IpAddr, String> = HashMap::new();
        let mut seen_id: HashMap<&str, usize> = HashMap::new();
        for (i, c) in self.customer_gateways.iter().enumerate() {
            let p = format!("customer_gateways[{}]", label(&c.id, i));
            c.validate_into(&mut errs.nested(&p));
            if let Some(j) = seen_id.get(c.id.as_str()).copied().or_else(|| {
                seen_id.insert(&c.id, i);
                None
            }) {
                let first = format!("customer_gateways[{j}].id");
                errs.duplicate(&format!("{p}.id"), &c.id, first);
            }
            // Concentrator: every device has its own address (spec §11.1).
            if self.gateway.kind == GatewayKind::Concentrator
                && let Some(a) = c.ip_address
            {
                if let Some(first) = seen_ip.get(&a) {
                    errs.duplicate(
                        &format!("{p}.ip_address"),
                        a,
                        format!("{first} (gateway.kind = concentrator: each customer gateway needs a unique IP address)"),
                    );
                } else {
                    seen_ip.insert(a, format!("{p}.ip_address"));
                }
            }
        }
    }

    fn validate_connections(&self, errs: &mut Errors<'_>) {
        let cgws: HashMap<&str, &CustomerGateway> = self
            .customer_gateways
            .iter()
            .map(|c| (c.id.as_str(), c))
            .collect();
        let mut inside_v4: HashMap<Ipv4Net, String> = HashMap::new();
        let mut inside_v6: HashMap<Ipv6Net, String> = HashMap::new();
        let mut pairs: HashMap<(IpAddr, IpAddr), String> = HashMap::new();
        let kind = self.gateway.kind;

        let mut seen_id: HashMap<&str, usize> = HashMap::new();
        for (ci, conn) in self.connections.iter().enumerate() {
            let p = format!("connections[{}]", label(&conn.id, ci));
            let mut ce = errs.nested(&p);
            conn.validate_into(&mut ce);
            if let Some(j) = seen_id.get(conn.id.as_str()).copied().or_else(|| {
                seen_id.insert(&conn.id, ci);
                None
            }) {
                ce.duplicate("id", &conn.id, format!("connections[{j}].id"));
            }
            if conn.target != self.gateway.id {
                ce.unknown_reference(
                    "target",
                    format!("{:?}", conn.target),
                    format!(
                        "the target must be this appliance's gateway.id {:?}",
                        self.gateway.id
                    ),
                );
            }

            // Gateway kind rules (spec §1.3, §4, §9, §10.1, §11).
            let v6_inside = conn.tunnel_inside_ip_version == TunnelInsideIpVersion::Ipv6;
            let bw = conn.tunnels[0].tunnel_bandwidth;
            let kind_rule = |what: &str| format!("gateway.kind = {kind}: {what}");
            match kind {
                GatewayKind::VirtualPrivateGateway => {
                    if v6_inside {
                        ce.conflict(
                            "tunnel_inside_ip_version",
                            "ipv6",
                            kind_rule("IPv6 traffic is not supported"),
                        );
                    }
                    if conn.outside_ip_address_type != OutsideIpAddressType::PublicIpv4 {
                        ce.conflict(
                            "outside_ip_address_type",
                            conn.outside_ip_address_type,
                            kind_rule("only PublicIpv4 is supported"),
                        );
                    }
                    if bw == TunnelBandwidth::Large {
                        ce.conflict(
                            "tunnels[0].tunnel_bandwidth",
                            bw,
                            kind_rule("large bandwidth is not supported"),
                        );
                    }
                    if conn.enable_acceleration {
                        ce.conflict(
                            "enable_acceleration",
                            true,
                            kind_rule("acceleration is not supported"),
                        );
                    }
                }
                GatewayKind::Concentrator => {
                    if conn.routing == RoutingType::Static {
                        ce.conflict(
                            "routing",
                            conn.routing,
                            kind_rule("BGP only; static routing is not supported"),
                        );
                    }
                    if conn.outside_ip_address_type == OutsideIpAddressType::PrivateIpv4 {
                        ce.conflict(
                            "outside_ip_address_type",
                            conn.outside_ip_address_type,
                            kind_rule("private IP VPN is not supported"),
                        );
                    }
                    if bw == TunnelBandwidth::Large {
                        ce.conflict(
                            "tunnels[0].tunnel_bandwidth",
                            bw,
                            kind_rule(
                                "tunnels are limited to 100 Mbps; large bandwidth is not supported",
                            ),
                        );
                    }
                }
                GatewayKind::TransitGateway => {}
            }

            // Customer gateway rules.
            match cgws.get(conn.customer_gateway_id.as_str()) {
                None => ce.unknown_reference(
                    "customer_gateway_id",
                    format!("{:?}", conn.customer_gateway_id),
                    "must name a customer gateway in customer_gateways",
                ),
                Some(cgw) => self.validate_connection_peer(&mut ce, conn, cgw),
            }

            // Tunnel bindings and appliance-wide uniqueness.
            for (ti, t) in conn.tunnels.iter().enumerate() {
                let tp = format!("tunnels[{ti}]");
                match t.outside_ip_address {
                    None => ce.missing(
                        &format!("{tp}.outside_ip_address"),
                        "each tunnel is bound to one of gateway.outside_addresses",
                    ),
                    Some(a) if !self.gateway.outside_addresses.contains(&a) => ce
                        .unknown_reference(
                            &format!("{tp}.outside_ip_address"),
                            a,
                            "must be one of gateway.outside_addresses",
                        ),
                    Some(a) => {
                        if let Some(remote) = cgws
                            .get(conn.customer_gateway_id.as_str())
                            .and_then(|c| c.ip_address)
                        {
                            let here = ce.path(&format!("{tp}.outside_ip_address"));
                            if let Some(first) = pairs.get(&(a, remote)) {
                                // Within one connection this is already
                                // reported by VpnConnection::validate.
                                if !first.starts_with(&p) {
                                    ce.duplicate(
                                    &format!("{tp}.outside_ip_address"),
                                    a,
                                    format!("{first} towards the same customer gateway address {remote}; IKE could not tell the tunnels apart"),
                                );
                                }
                            } else {
                                pairs.insert((a, remote), here);
                            }
                        }
                    }
                }
                // Unique across the appliance for every kind (see the module
                // docs; the spec requires it per VGW only).
                if let Some(n) = t.inside_ipv4_cidr {
                    let here = ce.path(&format!("{tp}.inside_ipv4_cidr"));
                    if let Some(first) = inside_v4.get(&n) {
                        if !first.starts_with(&p) {
                            ce.duplicate(&format!("{tp}.inside_ipv4_cidr"), n, first.clone());
                        }
                    } else {
                        inside_v4.insert(n, here);
                    }
                }
                if let Some(n) = t.inside_ipv6_cidr {
                    let here = ce.path(&format!("{tp}.inside_ipv6_cidr"));
                    if let Some(first) = inside_v6.get(&n) {
                        if !first.starts_with(&p) {
                            ce.duplicate(&format!("{tp}.inside_ipv6_cidr"), n, first.clone());
                        }
                    } else {
                        inside_v6.insert(n, here);
                    }
                }
            }
        }

        let inside = InsideCidrs {
            v4: inside_v4.into_iter().collect(),
            v6: inside_v6.into_iter().collect(),
        };
        for (ci, conn) in self.connections.iter().enumerate() {
            if conn.static_routes.is_empty() {
                continue;
            }
            let p = format!("connections[{}]", label(&conn.id, ci));
            let remote = cgws
                .get(conn.customer_gateway_id.as_str())
                .and_then(|c| c.ip_address);
            self.validate_static_routes(&mut errs.nested(&p), conn, remote, &inside);
        }
    }

    /// A static route must not capture traffic the appliance itself needs
    /// to deliver elsewhere (spec §10: the VGW routes the VPC's own CIDR
    /// locally, BGP and the tunnels' inside addresses ride the inside
    /// /30s, IKE and ESP go to the outside addresses). Each rule is an
    /// overlap in either direction: `0.0.0.0/0` covers them all.
    fn validate_static_routes(
        &self,
        ce: &mut Errors<'_>,
        conn: &VpnConnection,
        remote: Option<IpAddr>,
        inside: &InsideCidrs,
    ) {
        let overlaps = |a: &IpNet, b: &IpNet| a.contains(b) || b.contains(a);
        for (i, r) in conn.static_routes.iter().enumerate() {
            let f = format!("static_routes[{i}]");
            if let Some((j, n)) = self
                .gateway
                .local_networks
                .iter()
                .enumerate()
                .find(|(_, n)| overlaps(r, n))
            {
                ce.conflict(
                    &f,
                    r,
                    format!(
                        "gateway.local_networks[{j}] = {n}: traffic to the appliance's own networks would be sent into the tunnel"
                    ),
                );
            }
            if let Some((j, a)) = self
                .gateway
                .outside_addresses
                .iter()
                .enumerate()
                .find(|(_, a)| r.contains(*a))
            {
                ce.conflict(
                    &f,
                    r,
                    format!(
                        "gateway.outside_addresses[{j}] = {a}: the appliance's outside address (IKE and ESP) cannot be routed into a tunnel"
                    ),
                );
            }
            if let Some(a) = remote.filter(|a| r.contains(a)) {
                ce.conflict(
                    &f,
                    r,
                    format!(
                        "customer_gateways[{}].ip_address = {a}: the tunnels' own outer destination cannot be routed into them",
                        conn.customer_gateway_id
                    ),
                );
            }
            if let Some((cidr, path)) = inside.overlapping(*r) {
                ce.conflict(
                    &f,
                    r,
                    format!(
                        "{path} = {cidr}: a tunnel's inside addresses (BGP, DPD pings) cannot be routed into a tunnel"
                    ),
                );
            }
        }
    }

    /// Rules that tie a connection to its customer gateway.
    fn validate_connection_peer(
        &self,
        ce: &mut Errors<'_>,
        conn: &VpnConnection,
        cgw: &CustomerGateway,
    ) {
        let cgw_field = format!("customer_gateways[{}]", cgw.id);
        match cgw.ip_address {
            Some(ip) => {
                let class = classify(ip);
                let (want_v6, want_class, what) = match conn.outside_ip_address_type {
                    OutsideIpAddressType::PublicIpv4 => {
                        (false, AddrClass::Public, "a public IPv4 address")
                    }
                    OutsideIpAddressType::PrivateIpv4 => (
                        false,
                        AddrClass::Private,
                        "an RFC 1918 or RFC 6598 IPv4 address",
                    ),
                    OutsideIpAddressType::Ipv6 => {
                        (true, AddrClass::Public, "an internet-routable IPv6 address")
                    }
                };
                if (ip.is_ipv6() != want_v6 || class != want_class)
                    && !matches!(class, AddrClass::Unusable(_))
                {
                    ce.conflict(
                        "outside_ip_address_type",
                        conn.outside_ip_address_type,
                        format!("{cgw_field}.ip_address = {ip}: this outside type needs {what}"),
                    );
                }
            }
            None => {
                for (i, t) in conn.tunnels.iter().enumerate() {
                    if t.startup_action == StartupAction::Start {
                        ce.conflict(
                            &format!("tunnels[{i}].startup_action"),
                            t.startup_action,
                            format!("{cgw_field} has no ip_address: start needs the peer's address (spec §6)"),
                        );
                    }
                }
                if conn.tunnels[0].tunnel_bandwidth == TunnelBandwidth::Large {
                    ce.conflict(
                        "tunnels[0].tunnel_bandwidth",
                        TunnelBandwidth::Large,
                        format!("{cgw_field} has no ip_address: large bandwidth needs a fixed peer address (spec §4)"),
                    );
                }
            }
        }
        if conn.routing == RoutingType::Dynamic {
            match cgw.bgp_asn {
                None => ce.missing(
                    "customer_gateway_id",
                    format!("{cgw_field}.bgp_asn is required for a dynamic-routing connection"),
                ),
                Some(asn) if asn == self.gateway.asn => ce.conflict(
                    "customer_gateway_id",
                    &cgw.id,
                    format!(
                        "{cgw_field}.bgp_asn = {asn} equals gateway.asn; eBGP needs different ASNs"
                    ),
                ),
                Some(_) => {}
            }
        }
    }

    /// Fill in everything the spec says is "chosen automatically": inside
    /// IPv4 /30s (every tunnel), inside IPv6 /126s (IPv6-inside connections)
    /// and pre-shared keys (connections storing keys in this file).
    ///
    /// `fill` supplies random bytes. The result is deterministic for a given
    /// `fill`. Values already present are kept. Returns the paths of the
    /// fields assigned; save the configuration afterwards so they stay
    /// stable.
    ///
    /// # Errors
    /// If the inside address pool is exhausted (the configuration is left
    /// unchanged in that case).
    pub fn assign_generated(
        &mut self,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<Vec<String>, Vec<ConfigError>> {
        let mut next = self.clone();
        let mut used4: HashSet<Ipv4Net> = next
            .connections
            .iter()
            .flat_map(|c| c.tunnels.iter().filter_map(|t| t.inside_ipv4_cidr))
            .collect();
        let mut used6: HashSet<Ipv6Net> = next
            .connections
            .iter()
            .flat_map(|c| c.tunnels.iter().filter_map(|t| t.inside_ipv6_cidr))
            .collect();
        let mut assigned = Vec::new();
        let mut errors = Vec::new();
        for (ci, conn) in next.connections.iter_mut().enumerate() {
            let p = format!("connections[{}]", label(&conn.id, ci));
            let v6 = conn.tunnel_inside_ip_version == TunnelInsideIpVersion::Ipv6;
            let store_psk = conn.pre_shared_key_storage == PreSharedKeyStorage::Standard;
            for (ti, t) in conn.tunnels.iter_mut().enumerate() {
                let tp = format!("{p}.tunnels[{ti}]");
                if t.inside_ipv4_cidr.is_none() {
                    match inside::allocate_inside_ipv4_cidr(&used4, fill) {
                        Some(n) => {
                            used4.insert(n);
                            t.inside_ipv4_cidr = Some(n);
                            assigned.push(format!("{tp}.inside_ipv4_cidr"));
                        }
                        None => errors.push(ConfigError::Missing {
                            field: format!("{tp}.inside_ipv4_cidr"),
                            value: "(absent)".to_owned(),
                            allowed: "no free /30 is left in 169.254.0.0/16".to_owned(),
                        }),
                    }
                }
                if v6 && t.inside_ipv6_cidr.is_none() {
                    match inside::allocate_inside_ipv6_cidr(&used6, fill) {
                        Some(n) => {
                            used6.insert(n);
                            t.inside_ipv6_cidr = Some(n);
                            assigned.push(format!("{tp}.inside_ipv6_cidr"));
                        }
                        None => errors.push(ConfigError::Missing {
                            field: format!("{tp}.inside_ipv6_cidr"),
                            value: "(absent)".to_owned(),
                            allowed: "no free /126 found in fd00::/8".to_owned(),
                        }),
                    }
                }
                if store_psk && t.pre_shared_key.is_none() {
                    t.pre_shared_key = Some(PreSharedKey::generate(fill));
                    assigned.push(format!("{tp}.pre_shared_key"));
                }
                if !store_psk && t.pre_shared_key_ref.is_none() {
                    t.pre_shared_key_ref = Some(format!("{}/{ti}", conn.id));
                    assigned.push(format!("{tp}.pre_shared_key_ref"));
                }
            }
        }
        finish(errors)?;
        *self = next;
        Ok(assigned)
    }

    fn connection_index(&self, connection_id: &str) -> Result<usize, Vec<ConfigError>> {
        self.connections
            .iter()
            .position(|c| c.id == connection_id)
            .ok_or_else(|| {
                vec![ConfigError::UnknownReference {
                    field: "connections".to_owned(),
                    value: format!("{connection_id:?}"),
                    allowed: "must name a configured connection".to_owned(),
                }]
            })
    }

    /// Modify one tunnel's options (spec §18.8) and return the new
    /// configuration if every rule — tunnel, connection and appliance —
    /// holds. `self` is unchanged; nothing is half-applied.
    ///
    /// # Errors
    /// Unknown connection, tunnel index other than 0 or 1, or every rule the
    /// result would break.
    pub fn modify_tunnel_options(
        &self,
        connection_id: &str,
        tunnel: usize,
        patch: TunnelOptionsPatch,
    ) -> Result<Self, Vec<ConfigError>> {
        let ci = self.connection_index(connection_id)?;
        if tunnel > 1 {
            return Err(vec![ConfigError::OutOfRange {
                field: format!("connections[{connection_id}].tunnels"),
                value: tunnel.to_string(),
                allowed: "tunnel index 0..=1".to_owned(),
            }]);
        }
        let mut next = self.clone();
        let t = &mut next.connections[ci].tunnels[tunnel];
        *t = t.patched(patch);
        next.validate()?;
        Ok(next)
    }

    /// Modify a connection's options (spec §18.7: traffic selectors, both
    /// tunnels' bandwidth) and return the new configuration if every rule
    /// holds. `self` is unchanged.
    ///
    /// # Errors
    /// Unknown connection, or every rule the result would break.
    pub fn modify_connection_options(
        &self,
        connection_id: &str,
        patch: VpnConnectionOptionsPatch,
    ) -> Result<Self, Vec<ConfigError>> {
        let ci = self.connection_index(connection_id)?;
        let mut next = self.clone();
        next.connections[ci] = next.connections[ci].patched_options(patch);
        next.validate()?;
        Ok(next)
    }
}

/// Validation and generated values for one change, at a cost that does not
/// grow with the configuration beyond one pass over the other objects
/// without allocation (the management plane's per-change path).
impl ApplianceConfig {
    /// This configuration's appliance-wide sections with only the given
    /// customer gateways and connections: validating it checks every rule
    /// local to them, and the rules tying a connection to its gateway.
    fn with_only(
        &self,
        customer_gateways: Vec<CustomerGateway>,
        connections: Vec<VpnConnection>,
    ) -> Self {
        Self {
            gateway: self.gateway.clone(),
            dataplane: self.dataplane.clone(),
            management: self.management.clone(),
            metrics: self.metrics.clone(),
            logging: self.logging.clone(),
            customer_gateways,
            connections,
            certificates: self.certificates.clone(),
            // Endpoints are checked on their own changes
            // (`validate_put_client_vpn_endpoint`), and a connection they
            // route into cannot be deleted.
            client_vpn_endpoints: Vec::new(),
        }
    }

    /// Check that `self` with `conn` added (its id is not configured) or
    /// replacing the connection with its id still validates, given that
    /// `self` validates. The same rules as [`Self::validate`], with
    /// appliance-wide uniqueness checked against the other connections.
    ///
    /// # Errors
    /// Every broken rule, with field paths under `connections[<id>]`.
    pub fn validate_put_connection(&self, conn: &VpnConnection) -> Result<(), Vec<ConfigError>> {
        let cgw = self
            .customer_gateways
            .iter()
            .find(|g| g.id == conn.customer_gateway_id);
        let mut out = self
            .with_only(cgw.into_iter().cloned().collect(), vec![conn.clone()])
            .validate()
            .err()
            .unwrap_or_default();
        self.check_connection_unique(conn, cgw, &mut out);
        finish(out)
    }

    /// Check that `self` with `cgw` added (its id is not configured) or
    /// replacing the customer gateway with its id still validates, given
    /// that `self` validates: its own rules, its address's uniqueness, and
    /// the rules of every connection that uses it.
    ///
    /// # Errors
    /// Every broken rule.
    pub fn validate_put_customer_gateway(
        &self,
        cgw: &CustomerGateway,
    ) -> Result<(), Vec<ConfigError>> {
        let users: Vec<VpnConnection> = self
            .connections
            .iter()
            .filter(|c| c.customer_gateway_id == cgw.id)
            .cloned()
            .collect();
        let mut out = Vec::new();
        {
            let mut errs = Errors::new("", &mut out);
            let p = format!("customer_gateways[{}]", cgw.id);
            if self.gateway.kind == GatewayKind::Concentrator
                && let Some(a) = cgw.ip_address
                && let Some(other) = self
                    .customer_gateways
                    .iter()
                    .find(|g| g.id != cgw.id && g.ip_address == Some(a))
            {
                errs.duplicate(
                    &format!("{p}.ip_address"),
                    a,
                    format!("customer_gateways[{}].ip_address (gateway.kind = concentrator: each customer gateway needs a unique IP address)", other.id),
                );
            }
        }
        let mini = self.with_only(vec![cgw.clone()], users);
        if let Err(e) = mini.validate() {
            out.extend(e);
        }
        for conn in &mini.connections {
            self.check_connection_unique(conn, Some(cgw), &mut out);
        }
        finish(out)
    }

    /// Appliance-wide rules between `conn` and every other connection:
    /// unique inside CIDRs and (outside address, peer address) pairs, and
    /// no static route over another tunnel's inside CIDR (either way).
    /// `cgw` is `conn`'s customer gateway as it will be.
    fn check_connection_unique(
        &self,
        conn: &VpnConnection,
        cgw: Option<&CustomerGateway>,
        out: &mut Vec<ConfigError>,
    ) {
        let p = format!("connections[{}]", conn.id);
        let mut errs = Errors::new(p, out);
        // Customer gateways (other than conn's own, as it will be) with the
        // same peer address: their connections' tunnels must not use the
        // same outside address as ours.
        let remote = cgw.and_then(|g| g.ip_address);
        let same_peer: Vec<&str> = match remote {
            Some(r) => self
                .customer_gateways
                .iter()
                .filter(|g| cgw.is_none_or(|c| c.id != g.id) && g.ip_address == Some(r))
                .map(|g| g.id.as_str())
                .chain(cgw.map(|c| c.id.as_str()))
                .collect(),
            None => Vec::new(),
        };
        let overlaps = |a: &IpNet, b: &IpNet| a.contains(b) || b.contains(a);
        for other in self.connections.iter().filter(|o| o.id != conn.id) {
            // Static routes never cover a tunnel's inside CIDR, in either
            // direction (see validate_static_routes).
            for (oi, o) in other.tunnels.iter().enumerate() {
                let cidrs = [
                    o.inside_ipv4_cidr
                        .map(IpNet::V4)
                        .map(|n| (n, "inside_ipv4_cidr")),
                    o.inside_ipv6_cidr
                        .map(IpNet::V6)
                        .map(|n| (n, "inside_ipv6_cidr")),
                ];
                for (n, field) in cidrs.into_iter().flatten() {
                    for (i, r) in conn.static_routes.iter().enumerate() {
                        if overlaps(r, &n) {
                            errs.conflict(
                                &format!("static_routes[{i}]"),
                                r,
                                format!(
                                    "connections[{}].tunnels[{oi}].{field} = {n}: a tunnel's inside addresses (BGP, DPD pings) cannot be routed into a tunnel",
                                    other.id
                                ),
                            );
                        }
                    }
                }
            }
            for (ti, t) in conn.tunnels.iter().enumerate() {
                let cidrs = [
                    t.inside_ipv4_cidr
                        .map(IpNet::V4)
                        .map(|n| (n, "inside_ipv4_cidr")),
                    t.inside_ipv6_cidr
                        .map(IpNet::V6)
                        .map(|n| (n, "inside_ipv6_cidr")),
                ];
                for (n, field) in cidrs.into_iter().flatten() {
                    for (i, r) in other.static_routes.iter().enumerate() {
                        if overlaps(r, &n) {
                            errs.conflict(
                                &format!("tunnels[{ti}].{field}"),
                                n,
                                format!(
                                    "connections[{}].static_routes[{i}] = {r}: a tunnel's inside addresses (BGP, DPD pings) cannot be routed into a tunnel",
                                    other.id
                                ),
                            );
                        }
                    }
                }
            }
            let peer_clash = same_peer.contains(&other.customer_gateway_id.as_str());
            for (ti, t) in conn.tunnels.iter().enumerate() {
                for (oi, o) in other.tunnels.iter().enumerate() {
                    let first =
                        |field: &str| format!("connections[{}].tunnels[{oi}].{field}", other.id);
                    if let Some(n) = t.inside_ipv4_cidr
                        && o.inside_ipv4_cidr == Some(n)
                    {
                        errs.duplicate(
                            &format!("tunnels[{ti}].inside_ipv4_cidr"),
                            n,
                            first("inside_ipv4_cidr"),
                        );
                    }
                    if let Some(n) = t.inside_ipv6_cidr
                        && o.inside_ipv6_cidr == Some(n)
                    {
                        errs.duplicate(
                            &format!("tunnels[{ti}].inside_ipv6_cidr"),
                            n,
                            first("inside_ipv6_cidr"),
                        );
                    }
                    if peer_clash
                        && let (Some(a), Some(r)) = (t.outside_ip_address, remote)
                        && o.outside_ip_address == Some(a)
                    {
                        errs.duplicate(
                            &format!("tunnels[{ti}].outside_ip_address"),
                            a,
                            format!("{} towards the same customer gateway address {r}; IKE could not tell the tunnels apart", first("outside_ip_address")),
                        );
                    }
                }
            }
        }
    }

    /// [`Self::assign_generated`] for one connection that is not (yet) in
    /// `self`: inside CIDRs free among the configured connections, and
    /// pre-shared keys. Returns the paths of the fields assigned.
    ///
    /// # Errors
    /// If the inside address pool is exhausted (`conn` is then unchanged).
    pub fn assign_generated_for(
        &self,
        conn: &mut VpnConnection,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<Vec<String>, Vec<ConfigError>> {
        let used4 = |n: Ipv4Net| {
            self.connections
                .iter()
                .chain(std::iter::once(&*conn))
                .any(|c| c.tunnels.iter().any(|t| t.inside_ipv4_cidr == Some(n)))
        };
        let used6 = |n: Ipv6Net| {
            self.connections
                .iter()
                .chain(std::iter::once(&*conn))
                .any(|c| c.tunnels.iter().any(|t| t.inside_ipv6_cidr == Some(n)))
        };
        let mut next = conn.clone();
        let p = format!("connections[{}]", conn.id);
        let v6 = next.tunnel_inside_ip_version == TunnelInsideIpVersion::Ipv6;
        let store_psk = next.pre_shared_key_storage == PreSharedKeyStorage::Standard;
        let mut assigned = Vec::new();
        let mut errors = Vec::new();
        for ti in 0..next.tunnels.len() {
            let tp = format!("{p}.tunnels[{ti}]");
            if next.tunnels[ti].inside_ipv4_cidr.is_none() {
                let taken = |n: Ipv4Net| {
                    used4(n) || next.tunnels.iter().any(|t| t.inside_ipv4_cidr == Some(n))
                };
                match inside::allocate_inside_ipv4_cidr_with(&taken, fill) {
                    Some(n) => {
                        next.tunnels[ti].inside_ipv4_cidr = Some(n);
                        assigned.push(format!("{tp}.inside_ipv4_cidr"));
                    }
                    None => errors.push(ConfigError::Missing {
                        field: format!("{tp}.inside_ipv4_cidr"),
                        value: "(absent)".to_owned(),
                        allowed: "no free /30 is left in 169.254.0.0/16".to_owned(),
                    }),
                }
            }
            if v6 && next.tunnels[ti].inside_ipv6_cidr.is_none() {
                let taken = |n: Ipv6Net| {
                    used6(n) || next.tunnels.iter().any(|t| t.inside_ipv6_cidr == Some(n))
                };
                match inside::allocate_inside_ipv6_cidr_with(&taken, fill) {
                    Some(n) => {
                        next.tunnels[ti].inside_ipv6_cidr = Some(n);
                        assigned.push(format!("{tp}.inside_ipv6_cidr"));
                    }
                    None => errors.push(ConfigError::Missing {
                        field: format!("{tp}.inside_ipv6_cidr"),
                        value: "(absent)".to_owned(),
                        allowed: "no free /126 found in fd00::/8".to_owned(),
                    }),
                }
            }
            if store_psk && next.tunnels[ti].pre_shared_key.is_none() {
                next.tunnels[ti].pre_shared_key = Some(PreSharedKey::generate(fill));
                assigned.push(format!("{tp}.pre_shared_key"));
            }
            if !store_psk && next.tunnels[ti].pre_shared_key_ref.is_none() {
                next.tunnels[ti].pre_shared_key_ref = Some(format!("{}/{ti}", next.id));
                assigned.push(format!("{tp}.pre_shared_key_ref"));
            }
        }
        finish(errors)?;
        *conn = next;
        Ok(assigned)
    }
}
