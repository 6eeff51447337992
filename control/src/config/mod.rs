//! Configuration model of the appliance: types, defaults, validation,
//! modification and crash-safe persistence.
//!
//! Layer: pure control-plane logic. It never touches DPDK, sockets or the
//! clock; randomness (pre-shared keys, inside CIDR allocation) is injected
//! as a byte-filling function `&mut dyn FnMut(&mut [u8])`. The only I/O is
//! in [`store`] and [`journal`], on the files they are given.
//!
//! What it guarantees:
//!
//! * Every option of the requirements (spec `site-to-site-vpn.md` §3,
//!   quick reference §3.15) is a typed field with the spec's range and
//!   default; absent fields get the default when the TOML file is read.
//!   The table of options is on [`TunnelOptions`].
//! * Values are spelled as the spec spells them (`AES128-GCM-16`,
//!   `SHA2-256`, DH group numbers, `ikev2`, `PublicIpv4`), and
//!   `FromStr`/`Display`/serde round-trip.
//! * `validate()` at each level ([`TunnelOptions`], [`VpnConnection`],
//!   [`CustomerGateway`], [`ApplianceConfig`]) returns *every* broken rule,
//!   each a [`ConfigError`] naming the field path
//!   (`connections[vpn-1].tunnels[0].phase2_lifetime_secs`), the value and
//!   what is allowed. Pre-shared keys are never echoed.
//! * Modifications ([`TunnelOptions::apply`],
//!   [`ApplianceConfig::modify_tunnel_options`],
//!   [`ApplianceConfig::modify_connection_options`]) build a new value and
//!   validate it; nothing is half-applied.
//! * [`Journal`] persists a change at the cost of the change's size: one
//!   record appended and synced, on top of a snapshot that is rewritten
//!   atomically once the journal outgrows it ([`journal`]); a torn last
//!   record is dropped at open. [`ConfigStore`] reads (and writes, for
//!   tools) the TOML file atomically (temp file, fsync, rename, directory
//!   fsync, the previous version kept as `<name>.prev`).
//!
//! File layout (TOML, `snake_case` keys):
//!
//! ```toml
//! [gateway]            # id, kind, asn, outside_addresses, local_networks
//! [dataplane]          # hugepages_dir, file_prefix, main_lcore, worker_lcores,
//!                      # next-hop MACs, inside_addresses, tunnel_policing,
//!                      # crypto_backend
//! [[dataplane.ports]]  # name, device, role, rx_queues, tx_queues
//! [management]         # socket_path, socket_group
//! [metrics]            # enabled, listen
//! [logging]            # level, format, journald, file, file_max_bytes, file_keep
//! [[customer_gateways]]
//! [[connections]]
//! [connections.bgp]
//! [[connections.tunnels]]   # exactly two
//! [certificates]      # endpoint certificate + key, CA chains by certificate name
//! [[certificates.authorities]]
//! [[client_vpn_endpoints]]  # remote access (crate::client_vpn)
//! ```
//!
//! See `control/examples/appliance.toml` for a complete example.
//!
//! # Choices on points the requirements leave open
//!
//! * Appliance ASN: 64512–65534 or 4200000000–4294967294 (the gateway
//!   creation rule, §12.3), not the feature list's 1–2147483647 (§24.2).
//! * Customer gateway ASN: 1–4294967294 (4-byte ASNs, §24.1), minus 0,
//!   23456 (AS_TRANS), 65535 and 4294967295; the four ASNs §8 reserves per
//!   region (7224, 9059, 10124, 17943) are refused everywhere, since the
//!   appliance has no regions. No default: the spec's "64512" would always
//!   equal the appliance's default ASN, which eBGP forbids.
//! * Inside IPv6 CIDRs are /126 (§24.4).
//! * Inside CIDRs are unique across the whole appliance for every gateway
//!   kind (the spec requires it per VGW only): one appliance has one FIB and
//!   binds BGP sessions by inside address.
//! * Each tunnel names its local outside address; the two tunnels of a
//!   connection use different ones, and a (local, peer) address pair is
//!   used by one tunnel only, so IKE can tell tunnels apart.
//! * Bandwidth is a connection option in the spec; it is stored on each
//!   tunnel, must be equal on both, and is changed for both at once.
//! * `startup_action = start` needs `ikev2` among the IKE versions (§24.7);
//!   accelerated connections refuse `start` and DPD `restart` (§9: the
//!   customer gateway initiates).
//! * Phase 1 integrity lists may not be empty (IKE derives its PRF from
//!   them); phase 2 may be empty only if every phase 2 cipher is GCM.
//! * Log format default `json`; replay window any integer 64–2048; DPD
//!   timeout has no upper bound (the spec gives none).
//! * Peer addresses: `PublicIpv4` and `Ipv6` need a public address,
//!   `PrivateIpv4` an RFC 1918 / RFC 6598 one. Documentation prefixes
//!   (RFC 5737, RFC 3849) count as public so labs and examples can use them.
//! * Gateway kind default `transit-gateway` (fewest restrictions); the
//!   `concentrator` kind also refuses large tunnels (100 Mbps per tunnel,
//!   §11.2); at most 100 static routes per connection for every kind.
//! * With `pre_shared_key_storage = SecretsManager` the keys must not be in
//!   the file.

mod appliance;
mod certificates;
mod connection;
mod error;
mod gateway;
pub mod inside;
pub mod journal;
mod names;
mod psk;
pub mod secrets;
pub mod store;
mod tunnel;

#[cfg(test)]
mod tests;

pub use appliance::{
    ApplianceConfig, DEFAULT_LOG_FILE_KEEP, DEFAULT_LOG_FILE_MAX_BYTES, DEFAULT_METRICS_LISTEN,
    DataplaneConfig, GatewayConfig, LOG_FILE_KEEP_RANGE, LOG_FILE_MAX_BYTES_RANGE, LoggingConfig,
    MAX_CPU_ID, MAX_LCORE_ID, MAX_QUEUES_PER_PORT, ManagementConfig, MetricsConfig, PortConfig,
    parse_mac,
};
pub use certificates::{CertConfigError, CertificateAuthority, CertificatesConfig};
pub use connection::{BgpOptions, MAX_STATIC_ROUTES, VpnConnection, VpnConnectionOptionsPatch};
pub use error::ConfigError;
pub(crate) use error::{Errors, bounded, bounded_quoted, finish};
pub(crate) use gateway::check_id;
pub use gateway::{
    CustomerGateway, DEFAULT_GATEWAY_ASN, GATEWAY_ASN_RANGES, RESERVED_CUSTOMER_ASNS,
    is_gateway_asn,
};
pub use journal::{Change, Journal, JournalError, OpenReport, StorePaths};
pub use names::{
    DhGroup, DpdTimeoutAction, EncryptionAlgorithm, GatewayKind, IkeVersion, IntegrityAlgorithm,
    LogFormat, LogLevel, OutsideIpAddressType, PortRole, PreSharedKeyStorage, RoutingType,
    StartupAction, TunnelBandwidth, TunnelInsideIpVersion, UnknownValue,
};
pub use psk::{PSK_GENERATED_LEN, PSK_MAX_LEN, PSK_MIN_LEN, PreSharedKey, PskError};
pub use store::{ConfigStore, LoadedFrom, ParseError, StoreError};
pub use tunnel::{
    DPD_TIMEOUT_SECS, LogStreamOptions, PHASE1_LIFETIME_SECS, PHASE2_LIFETIME_SECS,
    REKEY_FUZZ_PERCENT, REKEY_MARGIN_TIME_SECS, REPLAY_WINDOW_PACKETS, TunnelLogOptions,
    TunnelOptions, TunnelOptionsPatch,
};
