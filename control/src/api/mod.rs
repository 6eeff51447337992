//! The management API: versioned request/response messages exchanged as
//! newline-delimited JSON over the daemon's unix socket.
//!
//! Layer: message types and their codec only. Applying a request is the
//! [`Manager`](crate::manager::Manager)'s job; moving bytes is the daemon's.
//!
//! # Protocol (version 1)
//!
//! * Transport: a `SOCK_STREAM` unix socket (path `management.socket_path`
//!   in the configuration, default `/run/vpnd/control.sock`), mode 0660,
//!   group `management.socket_group`. The daemon checks the peer's
//!   credentials (`SO_PEERCRED`): root, the daemon's own user and members of
//!   the socket group are allowed; anyone else gets a `permission_denied`
//!   error and the connection is closed.
//! * Framing: each message is one JSON object on one line, terminated by
//!   `\n` (UTF-8, no embedded newlines — JSON escapes them). A client may
//!   send several requests on one connection; the daemon answers each in
//!   order, one line per request. A final request without the `\n` before
//!   the client shuts down its write side is still answered.
//! * Limits: a request line longer than [`MAX_MESSAGE_BYTES`] (1 MiB) is
//!   discarded up to its newline and answered with `too_large`; a line that
//!   is not JSON, not an envelope, or names an unknown request is answered
//!   with `bad_request`. The connection stays usable after either.
//! * Envelope: `{"version":1,"id":N,"request":{"type":"…",…}}`. `id` is any
//!   unsigned integer chosen by the client and echoed in the reply. A
//!   request with a `version` other than [`PROTOCOL_VERSION`] is answered
//!   with `unsupported_version`.
//! * Reply: `{"version":1,"id":N,"response":{"type":"…",…}}` on success,
//!   `{"version":1,"id":N,"error":{"code":"…","message":"…","errors":[…]}}`
//!   on failure. `id` is `null` when the request's id could not be read.
//!   `errors` lists, for `validation_failed`, every broken rule with its
//!   `field` path, the `value` given and what is `allowed`.
//! * Changes are atomic and durable: a success reply to a change is sent
//!   only after the whole resulting configuration validated and was written
//!   to disk (fsync + rename); on any error nothing changed.
//! * Pre-shared keys are never shown by `show_*` (they appear as absent and
//!   `pre_shared_key_set` says whether one exists); `config_download` is the
//!   one request that returns them.
//!
//! Request types (`"type"` value → fields → reply type):
//!
//! | request | fields | reply |
//! | --- | --- | --- |
//! | `ping` | — | `pong` |
//! | `create_customer_gateway` | `customer_gateway` (object as in the TOML file) | `customer_gateway` |
//! | `modify_customer_gateway` | `id`, `changes` (`ip_address`?, `bgp_asn`?, `device_name`?, `certificate`?) | `customer_gateway` |
//! | `delete_customer_gateway` | `id` | `ok` |
//! | `show_customer_gateways` | `id`? | `customer_gateways` |
//! | `create_connection` | `connection` (object as in the TOML file; `target` may be empty, tunnels' outside addresses, inside CIDRs and keys may be absent: they are assigned) | `connection` |
//! | `modify_connection_options` | `connection_id`, `options` (traffic selectors, `tunnel_bandwidth`) | `connection` |
//! | `modify_tunnel_options` | `connection_id`, `tunnel` (0 or 1), `options` (any tunnel option) | `connection` |
//! | `delete_connection` | `id` | `ok` |
//! | `show_connections` | `id`? | `connections` |
//! | `add_static_route` / `delete_static_route` | `connection_id`, `prefix` | `connection` |
//! | `show_tunnels` | `connection_id`? | `tunnels` (with negotiated parameters, flaps, last change) |
//! | `show_tunnel` | `connection_id`, `outside_ip_address` | `tunnel` (`tunnel`, `health_events`) |
//! | `show_health_events` | `connection_id`? | `health_events` |
//! | `psk_set` / `psk_rotate` | `name`, `pre_shared_key`? (absent: generated) | `psk` (`secret`: name, version, `updated_ms`, `used_by`; never the key) |
//! | `psk_delete` | `name` (refused while a tunnel references it) | `ok` |
//! | `psk_list` | — | `psks` |
//! | `show_sas` | `connection_id`? | `sas` |
//! | `show_routes` | `connection_id`? | `routes` (BGP routes with their chosen path and `ecmp` members) |
//! | `show_bgp` | `connection_id`? | `bgp` (`neighbors`: state, uptime, prefixes received/advertised) |
//! | `show_stats` | — | `stats` |
//! | `logs` | `connection_id`?, `lines`? (default 100) | `logs` |
//! | `config_download` | `connection_id`, `device` ([`Device::as_str`](crate::download::Device::as_str): `generic`, `strongswan`, `cisco-ios`, …) | `config_text` |
//! | `create_client_vpn_endpoint` | `endpoint` (object as in the TOML file) | `client_vpn_endpoint` |
//! | `modify_client_vpn_endpoint` | `id`, `changes` (any field but `id`; `client_cidr` only unchanged) | `client_vpn_endpoint` |
//! | `delete_client_vpn_endpoint` | `id` | `ok` |
//! | `show_client_vpn_endpoints` | `id`? | `client_vpn_endpoints` |
//! | `authorize_client_vpn_ingress` | `endpoint_id`, `destination`, `access`? (`allow`), `description`? | `client_vpn_endpoint` |
//! | `revoke_client_vpn_ingress` | `endpoint_id`, `destination` | `client_vpn_endpoint` |
//! | `create_client_vpn_route` / `delete_client_vpn_route` | `endpoint_id`, `destination` (+ `target`, `description`? to create) | `client_vpn_endpoint` |
//! | `export_client_vpn_config` | `endpoint_id` | `client_vpn_config` (`text`: the `.ovpn` file) |
//! | `show_client_vpn_connections` | `endpoint_id`? | `client_vpn_connections` |
//! | `terminate_client_vpn_connections` | `endpoint_id`, `connection_id` or `common_name` | `client_vpn_terminated` |
//!
//! Error codes: `bad_request`, `too_large`, `unsupported_version`,
//! `validation_failed`, `not_found`, `already_exists`, `permission_denied`,
//! `internal` (e.g. the configuration could not be written; nothing
//! changed).
//!
//! # Example exchange
//!
//! ```text
//! → {"version":1,"id":7,"request":{"type":"modify_tunnel_options","connection_id":"vpn-branch1","tunnel":0,"options":{"phase2_lifetime_secs":5000}}}
//! ← {"version":1,"id":7,"error":{"code":"validation_failed","message":"the change breaks 1 rule(s); nothing was changed","errors":[{"field":"connections[vpn-branch1].tunnels[0].phase2_lifetime_secs","value":"5000","allowed":"900..=3600","message":"connections[vpn-branch1].tunnels[0].phase2_lifetime_secs: 5000 is out of range; allowed: 900..=3600"}]}}
//! → {"version":1,"id":8,"request":{"type":"show_tunnels","connection_id":"vpn-branch1"}}
//! ← {"version":1,"id":8,"response":{"type":"tunnels","tunnels":[{"connection_id":"vpn-branch1","tunnel":0,"outside_ip_address":"198.51.100.10","peer_ip_address":"203.0.113.20","status":"DOWN","ike_phase1_state":"Down","ike_phase2_state":"Down","nat_t_detected":false}, …]}}
//! ```
//!
//! With a shell: `printf '{"version":1,"id":1,"request":{"type":"ping"}}\n' | socat - UNIX-CONNECT:/run/vpnd/control.sock`.

mod codec;

pub use codec::{
    DecodeError, MAX_ERROR_CHARS, MAX_MESSAGE_BYTES, decode_request, decode_response, encode_reply,
    encode_request, envelope,
};

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

use crate::client_vpn::{
    Access, ClientVpnConnection, ClientVpnEndpoint, ClientVpnEndpointPatch, ClientVpnEndpointView,
    RouteTarget,
};
use crate::config::PreSharedKey;
use crate::config::secrets::SecretInfo;
use crate::config::{
    ConfigError, CustomerGateway, IkeVersion, TunnelOptionsPatch, VpnConnection,
    VpnConnectionOptionsPatch,
};
use crate::dataplane::{DataplaneStats, RouteEntry, SaInfo, TunnelUpDown};
use crate::download::Device;
use crate::logs::{IkePhaseState, LogEntry};
use crate::visibility::{HealthEvent, NegotiatedParams};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Default number of log entries returned by `logs`.
pub const DEFAULT_LOG_LINES: usize = 100;

/// A request envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestEnvelope {
    /// Protocol version, [`PROTOCOL_VERSION`].
    pub version: u32,
    /// Client-chosen id, echoed in the reply.
    pub id: u64,
    /// The request.
    pub request: Request,
}

/// A reply envelope: exactly one of `response` and `error` is present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyEnvelope {
    /// Protocol version, [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The request's id; `None` when it could not be read.
    pub id: Option<u64>,
    /// The success reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Response>,
    /// The error reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

impl ReplyEnvelope {
    /// Wrap a result.
    #[must_use]
    pub fn new(id: Option<u64>, result: Result<Response, ApiError>) -> Self {
        let (response, error) = match result {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(e)),
        };
        Self {
            version: PROTOCOL_VERSION,
            id,
            response,
            error,
        }
    }

    /// The result carried.
    ///
    /// # Errors
    /// The error reply, or a `bad_request` error if the envelope carries
    /// neither or both.
    pub fn into_result(self) -> Result<Response, ApiError> {
        match (self.response, self.error) {
            (Some(r), None) => Ok(r),
            (None, Some(e)) => Err(e),
            _ => Err(ApiError::new(
                ErrorCode::BadRequest,
                "reply carries neither or both of response and error",
            )),
        }
    }
}

/// Fields of a customer gateway modification; each `Some` replaces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerGatewayPatch {
    /// New address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<IpAddr>,
    /// New ASN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp_asn: Option<u32>,
    /// New device name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// New certificate name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

/// A request (the `request` member, tagged by `type`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Request {
    /// Liveness check.
    Ping {},
    /// Add a customer gateway.
    CreateCustomerGateway {
        /// The gateway.
        customer_gateway: CustomerGateway,
    },
    /// Change fields of a customer gateway.
    ModifyCustomerGateway {
        /// Its id.
        id: String,
        /// The fields to change.
        changes: CustomerGatewayPatch,
    },
    /// Remove a customer gateway no connection uses.
    DeleteCustomerGateway {
        /// Its id.
        id: String,
    },
    /// List customer gateways (one, if `id` is given).
    ShowCustomerGateways {
        /// Only this one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Add a connection with its two tunnels.
    CreateConnection {
        /// The connection.
        connection: Box<VpnConnection>,
    },
    /// Change connection options (spec §18.7).
    ModifyConnectionOptions {
        /// The connection.
        connection_id: String,
        /// The options to change.
        options: VpnConnectionOptionsPatch,
    },
    /// Change one tunnel's options (spec §18.8).
    ModifyTunnelOptions {
        /// The connection.
        connection_id: String,
        /// Tunnel index, 0 or 1.
        tunnel: usize,
        /// The options to change.
        options: Box<TunnelOptionsPatch>,
    },
    /// Remove a connection.
    DeleteConnection {
        /// Its id.
        id: String,
    },
    /// List connections (one, if `id` is given).
    ShowConnections {
        /// Only this one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Add a static route to a static-routing connection (spec §18.9).
    AddStaticRoute {
        /// The connection.
        connection_id: String,
        /// The prefix.
        prefix: IpNet,
    },
    /// Remove a static route.
    DeleteStaticRoute {
        /// The connection.
        connection_id: String,
        /// The prefix.
        prefix: IpNet,
    },
    /// Tunnel status.
    ShowTunnels {
        /// Only this connection.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        connection_id: Option<String>,
    },
    /// One tunnel in detail (negotiated parameters, flaps, last change,
    /// its health events), named by its connection and outside address.
    ShowTunnel {
        /// The connection.
        connection_id: String,
        /// The tunnel's appliance outside address.
        outside_ip_address: IpAddr,
    },
    /// Health events (spec §20.9), oldest first.
    ShowHealthEvents {
        /// Only this connection.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        connection_id: Option<String>,
    },
    /// Installed SAs.
    ShowSas {
        /// Only this connection.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        connection_id: Option<String>,
    },
    /// Routes (static from the configuration, BGP from the dataplane).
    ShowRoutes {
        /// Only this connection.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        connection_id: Option<String>,
    },
    /// BGP neighbours: one per tunnel of a dynamic-routing connection.
    ShowBgp {
        /// Only this connection.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        connection_id: Option<String>,
    },
    /// Counters.
    ShowStats {},
    /// Recent tunnel log entries.
    Logs {
        /// Only this connection.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        connection_id: Option<String>,
        /// How many (default [`DEFAULT_LOG_LINES`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lines: Option<usize>,
    },
    /// Customer device configuration for a connection.
    ConfigDownload {
        /// The connection.
        connection_id: String,
        /// The device kind.
        device: Device,
    },
    /// The whole configuration as the TOML file format (pre-shared keys
    /// included).
    ConfigExport {},
    /// Store a pre-shared key in the key store under `name` (created, or
    /// replaced); generated when `pre_shared_key` is absent. Tunnels that
    /// reference it re-authenticate with it at once.
    PskSet {
        /// The secret's name (`pre_shared_key_ref` of the tunnels).
        name: String,
        /// The key; absent: generate one (32 alphanumeric characters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pre_shared_key: Option<PreSharedKey>,
    },
    /// Replace an existing secret's key (generated when absent); its
    /// tunnels re-authenticate with the new key at once.
    PskRotate {
        /// The secret's name.
        name: String,
        /// The new key; absent: generate one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pre_shared_key: Option<PreSharedKey>,
    },
    /// Remove a secret no tunnel references.
    PskDelete {
        /// The secret's name.
        name: String,
    },
    /// The secrets' names, versions and the tunnels using them (never
    /// the keys).
    PskList {},
    /// Replace the whole configuration with a TOML document: validated
    /// (every broken rule reported, nothing changed), then written
    /// atomically as the store's new snapshot and applied.
    ConfigImport {
        /// The TOML document.
        toml: String,
    },
    /// Add a Client VPN endpoint (its files are read and checked; without
    /// routes it gets a `vpc` route per IPv4 local network).
    CreateClientVpnEndpoint {
        /// The endpoint, as in the TOML file.
        endpoint: Box<ClientVpnEndpoint>,
    },
    /// Change fields of a Client VPN endpoint (not its client CIDR).
    ModifyClientVpnEndpoint {
        /// Its id.
        id: String,
        /// The fields to change.
        changes: Box<ClientVpnEndpointPatch>,
    },
    /// Remove a Client VPN endpoint.
    DeleteClientVpnEndpoint {
        /// Its id.
        id: String,
    },
    /// List Client VPN endpoints (one, if `id` is given).
    ShowClientVpnEndpoints {
        /// Only this one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Add an authorization rule (default `allow`).
    AuthorizeClientVpnIngress {
        /// The endpoint.
        endpoint_id: String,
        /// The destination network.
        destination: Ipv4Net,
        /// `allow` (default) or `deny`.
        #[serde(default)]
        access: Access,
        /// Free text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
    /// Remove the authorization rule for a destination.
    RevokeClientVpnIngress {
        /// The endpoint.
        endpoint_id: String,
        /// The rule's destination.
        destination: Ipv4Net,
    },
    /// Add a route to an endpoint's route table.
    CreateClientVpnRoute {
        /// The endpoint.
        endpoint_id: String,
        /// The destination network.
        destination: Ipv4Net,
        /// `vpc`, `local` or a connection id.
        target: RouteTarget,
        /// Free text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
    /// Remove a route.
    DeleteClientVpnRoute {
        /// The endpoint.
        endpoint_id: String,
        /// The route's destination.
        destination: Ipv4Net,
    },
    /// The `.ovpn` client configuration of an endpoint.
    ExportClientVpnConfig {
        /// The endpoint.
        endpoint_id: String,
    },
    /// Client connections (of one endpoint, if given).
    ShowClientVpnConnections {
        /// Only this endpoint.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint_id: Option<String>,
    },
    /// Disconnect clients: one connection by id, or every connection of a
    /// common name.
    TerminateClientVpnConnections {
        /// The endpoint.
        endpoint_id: String,
        /// This connection.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        connection_id: Option<String>,
        /// Every connection with this certificate common name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        common_name: Option<String>,
    },
}

impl Request {
    /// Whether the request changes the configuration.
    #[must_use]
    pub const fn is_change(&self) -> bool {
        matches!(
            self,
            Self::CreateCustomerGateway { .. }
                | Self::ModifyCustomerGateway { .. }
                | Self::DeleteCustomerGateway { .. }
                | Self::CreateConnection { .. }
                | Self::ModifyConnectionOptions { .. }
                | Self::ModifyTunnelOptions { .. }
                | Self::DeleteConnection { .. }
                | Self::AddStaticRoute { .. }
                | Self::DeleteStaticRoute { .. }
                | Self::ConfigImport { .. }
                | Self::PskSet { .. }
                | Self::PskRotate { .. }
                | Self::PskDelete { .. }
                | Self::CreateClientVpnEndpoint { .. }
                | Self::ModifyClientVpnEndpoint { .. }
                | Self::DeleteClientVpnEndpoint { .. }
                | Self::AuthorizeClientVpnIngress { .. }
                | Self::RevokeClientVpnIngress { .. }
                | Self::CreateClientVpnRoute { .. }
                | Self::DeleteClientVpnRoute { .. }
        )
    }
}

/// The status of one tunnel, as `show_tunnels` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelStatus {
    /// Connection id.
    pub connection_id: String,
    /// Tunnel index.
    pub tunnel: usize,
    /// Appliance outside address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside_ip_address: Option<IpAddr>,
    /// Customer gateway address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_ip_address: Option<IpAddr>,
    /// Inside CIDR (IPv4, or IPv6 for IPv6-inside connections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inside_cidr: Option<IpNet>,
    /// UP or DOWN (spec §20.7 rule).
    pub status: TunnelUpDown,
    /// Phase 1 state.
    pub ike_phase1_state: IkePhaseState,
    /// Phase 2 state.
    pub ike_phase2_state: IkePhaseState,
    /// BGP state, dynamic routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp_state: Option<String>,
    /// NAT-T detected.
    pub nat_t_detected: bool,
    /// Last UP/DOWN change, ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status_change_ms: Option<u64>,
    /// Why the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status_change_reason: Option<String>,
    /// UP/DOWN changes since the daemon started.
    #[serde(default)]
    pub status_changes: u64,
    /// UP→DOWN changes (flaps) since the daemon started.
    #[serde(default)]
    pub flaps: u64,
    /// What IKE negotiated for the current SAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negotiated: Option<NegotiatedParams>,
    /// Seconds to the IKE SA's next rekey (at the time of the reply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase1_rekey_in_secs: Option<u64>,
    /// Seconds to the Child SA's next rekey (at the time of the reply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase2_rekey_in_secs: Option<u64>,
    /// IKE version of the tunnel's IKE SA (`ikev1` or `ikev2`), once one
    /// was established.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ike_version: Option<IkeVersion>,
    /// Why the customer gateway's last IKE attempt was refused (e.g. it
    /// speaks IKEv1 and the tunnel allows only IKEv2), until an IKE SA is
    /// up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ike_refused: Option<String>,
    /// Why the tunnel is not up although IKE is (e.g. its Child SA was
    /// refused with TS_UNACCEPTABLE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_detail: Option<String>,
    /// When the next attempt starts, ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_ms: Option<u64>,
}

/// One BGP neighbour, as `show_bgp` reports it (published by the daemon's
/// BGP thread).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpNeighbor {
    /// Connection id.
    pub connection_id: String,
    /// Tunnel index.
    pub tunnel: usize,
    /// Our inside address (the session's local end).
    pub local_address: IpAddr,
    /// The neighbour's inside address.
    pub neighbor: IpAddr,
    /// Our AS.
    pub local_asn: u32,
    /// The neighbour's AS.
    pub peer_asn: u32,
    /// FSM state (RFC 4271 name).
    pub state: String,
    /// Seconds in Established (0 otherwise).
    pub uptime_secs: u64,
    /// Times the session became Established.
    pub established_transitions: u32,
    /// Negotiated hold time, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time_secs: Option<u64>,
    /// Prefixes accepted from the neighbour.
    pub prefixes_received: usize,
    /// Prefixes advertised to it.
    pub prefixes_advertised: usize,
    /// Routes denied by policy (own AS, next hop not connected).
    pub denied: u64,
    /// Last NOTIFICATION sent (`6/1 (Cease/…)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sent_notification: Option<String>,
    /// Last NOTIFICATION received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_received_notification: Option<String>,
}

/// A customer gateway or connection as shown (keys redacted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionView {
    /// The connection, `pre_shared_key` removed from both tunnels.
    #[serde(flatten)]
    pub connection: VpnConnection,
    /// Whether each tunnel has a pre-shared key.
    pub pre_shared_key_set: [bool; 2],
}

impl ConnectionView {
    /// The redacted view of `c`.
    #[must_use]
    pub fn redacted(c: &VpnConnection) -> Self {
        let mut connection = c.clone();
        let set = [
            c.tunnels[0].pre_shared_key.is_some(),
            c.tunnels[1].pre_shared_key.is_some(),
        ];
        for t in &mut connection.tunnels {
            t.pre_shared_key = None;
        }
        Self {
            connection,
            pre_shared_key_set: set,
        }
    }
}

/// A successful reply (the `response` member, tagged by `type`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Response {
    /// Done, nothing to report.
    Ok,
    /// Reply to `ping`.
    Pong {
        /// Protocol version.
        version: u32,
        /// The daemon's crate version.
        daemon: String,
    },
    /// One customer gateway.
    CustomerGateway {
        /// The gateway.
        customer_gateway: CustomerGateway,
    },
    /// Customer gateways.
    CustomerGateways {
        /// The gateways.
        customer_gateways: Vec<CustomerGateway>,
    },
    /// One connection (keys redacted).
    Connection {
        /// The connection.
        connection: Box<ConnectionView>,
    },
    /// Connections (keys redacted).
    Connections {
        /// The connections.
        connections: Vec<ConnectionView>,
    },
    /// Tunnel status.
    Tunnels {
        /// One per tunnel.
        tunnels: Vec<TunnelStatus>,
    },
    /// One tunnel in detail (`show_tunnel`).
    Tunnel {
        /// Its status.
        tunnel: Box<TunnelStatus>,
        /// Its health events, oldest first.
        health_events: Vec<HealthEvent>,
    },
    /// Health events, oldest first.
    HealthEvents {
        /// The events.
        events: Vec<HealthEvent>,
    },
    /// SAs.
    Sas {
        /// The SAs.
        sas: Vec<SaInfo>,
    },
    /// Routes.
    Routes {
        /// The routes.
        routes: Vec<RouteEntry>,
    },
    /// BGP neighbours.
    Bgp {
        /// One per tunnel of a dynamic-routing connection.
        neighbors: Vec<BgpNeighbor>,
    },
    /// Counters.
    Stats {
        /// The counters.
        stats: DataplaneStats,
    },
    /// Log entries, oldest first.
    Logs {
        /// The entries.
        entries: Vec<LogEntry>,
    },
    /// A rendered device configuration.
    ConfigText {
        /// The device kind.
        device: Device,
        /// The text.
        text: String,
    },
    /// One secret of the key store (no key).
    Psk {
        /// Its name, version, time and users.
        secret: SecretInfo,
    },
    /// The key store's secrets (no keys).
    Psks {
        /// Each secret's name, version, time and users.
        secrets: Vec<SecretInfo>,
    },
    /// The whole configuration (`config_export`), in the TOML file format.
    ConfigToml {
        /// The TOML document.
        toml: String,
    },
    /// One Client VPN endpoint.
    ClientVpnEndpoint {
        /// The endpoint.
        endpoint: Box<ClientVpnEndpointView>,
    },
    /// Client VPN endpoints.
    ClientVpnEndpoints {
        /// The endpoints.
        endpoints: Vec<ClientVpnEndpointView>,
    },
    /// An endpoint's `.ovpn` client configuration.
    ClientVpnConfig {
        /// The endpoint.
        endpoint_id: String,
        /// The file's text.
        text: String,
    },
    /// Client connections.
    ClientVpnConnections {
        /// The connections.
        connections: Vec<ClientVpnConnection>,
    },
    /// The connections a terminate request disconnected.
    ClientVpnTerminated {
        /// The endpoint.
        endpoint_id: String,
        /// The connections disconnected.
        connections: Vec<ClientVpnConnection>,
    },
}

/// Error categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// Not JSON, not an envelope, unknown request or field.
    BadRequest,
    /// Message longer than [`MAX_MESSAGE_BYTES`].
    TooLarge,
    /// Envelope version not supported.
    UnsupportedVersion,
    /// The change would break configuration rules (see `errors`).
    ValidationFailed,
    /// The named object does not exist.
    NotFound,
    /// An object with that id exists.
    AlreadyExists,
    /// The peer is not allowed to use the socket.
    PermissionDenied,
    /// The daemon failed (e.g. could not write the configuration).
    Internal,
}

/// One broken rule, as carried in an error reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Field path.
    pub field: String,
    /// Value given.
    pub value: String,
    /// What is allowed.
    pub allowed: String,
    /// The whole rule as a sentence.
    pub message: String,
}

impl From<&ConfigError> for FieldError {
    fn from(e: &ConfigError) -> Self {
        Self {
            field: e.field().to_owned(),
            value: e.value().to_owned(),
            allowed: e.allowed().to_owned(),
            message: e.to_string(),
        }
    }
}

/// An error reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    /// Category.
    pub code: ErrorCode,
    /// What went wrong, naming the object or input.
    pub message: String,
    /// Broken rules (`validation_failed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl ApiError {
    /// An error without field errors.
    #[must_use]
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            errors: Vec::new(),
        }
    }

    /// A `validation_failed` error listing `errors`.
    #[must_use]
    pub fn validation(errors: &[ConfigError]) -> Self {
        Self {
            code: ErrorCode::ValidationFailed,
            message: format!(
                "the change breaks {} rule(s); nothing was changed",
                errors.len()
            ),
            errors: errors.iter().map(FieldError::from).collect(),
        }
    }
}

#[cfg(test)]
mod tests;
