//! The management plane's owner of the configuration: applies API requests
//! to the [`ApplianceConfig`], persists, and tells the [`Dataplane`].
//!
//! ```text
//!   request ──► Manager::handle ──► change = the new state of the one
//!                                   object changed (or its removal)
//!                                   validate the change against the rest
//!                                            ── Err ─► validation_failed, nothing changed
//!                                   journal.append(change) + fdatasync
//!                                            ── Err ─► internal, nothing changed
//!                                   config.apply_change(change)
//!                                   dataplane.apply_change(&config, change)
//!                                   compact the journal when it has grown
//!                                   ◄── success reply (only now)
//! ```
//!
//! What it guarantees: a change is acknowledged only after it validated
//! against the whole configuration and its journal record was written and
//! synced by the [`Journal`], so an acknowledged change survives `kill -9`
//! and power loss; a rejected change leaves memory, disk and dataplane
//! untouched. Queries never change anything. The cost of a change in
//! here is the change's size plus one pass without allocation over the
//! other connections (uniqueness of inside CIDRs and address pairs): no
//! copy, re-validation or re-serialisation of the whole configuration.
//!
//! Persistence: the store (`<stem>.snapshot` + `<stem>.journal` next to
//! the TOML file, see [`crate::config::journal`]) is the configuration once
//! it exists; the TOML file is read only when there is no store (first
//! start, or an operator who removed the store to start from a file).
//! `config_export` renders the current configuration as TOML and
//! `config_import` replaces it (validated, written as a new snapshot).
//!
//! What it never does: read the clock or a socket. Randomness (generated
//! keys, inside CIDR allocation) comes from the injected `fill` function.
//! The only I/O is the store's files (and the TOML file at start).

use std::fmt;

use crate::api::{
    ApiError, BgpNeighbor, ConnectionView, CustomerGatewayPatch, DEFAULT_LOG_LINES, ErrorCode,
    Request, Response, TunnelStatus,
};
use crate::config::secrets::{SecretPaths, SecretStore};
use crate::config::{
    ApplianceConfig, Change, ConfigError, ConfigStore, CustomerGateway, Journal, JournalError,
    LoadedFrom, OpenReport, StoreError, StorePaths, TunnelInsideIpVersion, TunnelLogOptions,
    VpnConnection,
};
use crate::dataplane::{Dataplane, RouteEntry, TunnelKey, TunnelRuntimeState, TunnelUpDown};
use crate::download;
use crate::logs::{LogEntry, LogRing};
use crate::visibility::{HealthMonitor, secs_until};

/// Why the manager could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration file could not be read or parsed.
    #[error("cannot load the configuration: {0}")]
    Load(#[source] StoreError),
    /// The configuration breaks rules.
    #[error("the configuration is invalid ({} error(s)): {}", .0.len(), join_errors(.0))]
    Invalid(Vec<ConfigError>),
    /// The store cannot be opened or created.
    #[error("configuration store: {0}")]
    Store(#[source] JournalError),
    /// The pre-shared key store cannot be opened (its key is missing,
    /// too widely readable or wrong, or the store was modified), or the
    /// keys the configuration needs cannot be written.
    #[error("pre-shared key store: {0}")]
    Secrets(String),
}

/// Where [`Manager::start`] found the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// The store (snapshot + journal); what its opening found.
    Store(OpenReport),
    /// The TOML file (no store existed; one was created from it).
    Toml(LoadedFrom),
}

fn join_errors(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Random byte source injected into the manager.
pub type Fill = Box<dyn FnMut(&mut [u8]) + Send>;

/// Owns the configuration, its store, the dataplane handle and the log
/// ring; applies [`Request`]s.
pub struct Manager<D: Dataplane> {
    config: ApplianceConfig,
    journal: Journal,
    dataplane: D,
    warnings: Vec<String>,
    logs: LogRing,
    fill: Fill,
    bgp_neighbors: Vec<BgpNeighbor>,
    control_metrics: Vec<crate::metrics::ControlMetric>,
    health: HealthMonitor,
    secrets: SecretStore,
    /// The time the control core last gave (ms since the epoch), for the
    /// "seconds to rekey" of the replies.
    clock_ms: u64,
    client_vpn: client_vpn::ClientVpnRuntime,
}

impl<D: Dataplane + fmt::Debug> fmt::Debug for Manager<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("journal", &self.journal)
            .field("connections", &self.config.connections.len())
            .field("dataplane", &self.dataplane)
            .finish_non_exhaustive()
    }
}

/// First line of an exported configuration.
const EXPORT_HEADER: &str =
    "# Appliance configuration, exported by vpnd. Import with `vpnctl config import FILE`.\n";

fn not_found(what: &str, id: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("{what} {id:?} does not exist"))
}

impl<D: Dataplane> Manager<D> {
    /// Open the store next to `toml`'s file and load the configuration
    /// from it; without a store, load the TOML file (falling back to
    /// `<file>.prev` if it is damaged) and create the store from it. Then
    /// assign generated values (inside CIDRs, keys; persisted if any were
    /// assigned), validate, and apply it to `dataplane`.
    ///
    /// # Errors
    /// The store or the file cannot be read, the configuration breaks
    /// rules, or the store cannot be written.
    pub fn start(
        toml: &ConfigStore,
        dataplane: D,
        mut fill: Fill,
    ) -> Result<(Self, Loaded), StartError> {
        let paths = StorePaths::next_to(toml.path());
        let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(std::path::PathBuf::from);
        let secrets = SecretStore::open(SecretPaths::next_to(toml.path(), credentials.as_deref()))
            .map_err(|e| StartError::Secrets(e.to_string()))?;
        let (journal, mut config, loaded) =
            match Journal::open(paths.clone()).map_err(StartError::Store)? {
                Some((j, c, report)) => (Some(j), c, Loaded::Store(report)),
                None => {
                    let (c, from) = toml.load_or_prev().map_err(StartError::Load)?;
                    (None, c, Loaded::Toml(from))
                }
            };
        let mut assigned = config
            .assign_generated(&mut *fill)
            .map_err(StartError::Invalid)?;
        let mut pending = psk::Pending::new();
        for c in &mut config.connections {
            let before = pending.len();
            psk::take_inline_keys(c, &mut pending);
            if pending.len() > before {
                assigned.push(format!(
                    "connections[{}]: keys moved to the key store",
                    c.id
                ));
            }
        }
        config.validate().map_err(StartError::Invalid)?;
        let journal = match journal {
            Some(mut j) => {
                if !assigned.is_empty() {
                    j.compact(&config).map_err(StartError::Store)?;
                }
                j
            }
            None => Journal::create(paths, &config).map_err(StartError::Store)?,
        };
        let refs: Vec<String> = config.connections.iter().flat_map(psk::refs_of).collect();
        let mut m = Self::new(config, journal, dataplane, fill);
        m.secrets = secrets;
        m.store_keys(pending, &refs)
            .map_err(|e| StartError::Secrets(e.message))?;
        m.check_client_vpn_files();
        Ok((m, loaded))
    }

    /// A manager over an already valid `config` (not re-validated) that
    /// `journal` holds.
    #[must_use]
    pub fn new(config: ApplianceConfig, journal: Journal, mut dataplane: D, fill: Fill) -> Self {
        dataplane.apply(&config);
        Self {
            config,
            journal,
            dataplane,
            warnings: Vec::new(),
            logs: LogRing::default(),
            fill,
            bgp_neighbors: Vec::new(),
            control_metrics: Vec::new(),
            health: HealthMonitor::new(),
            secrets: SecretStore::empty(),
            clock_ms: 0,
            client_vpn: client_vpn::ClientVpnRuntime::default(),
        }
    }

    /// Problems that did not fail a request (a compaction that could not
    /// be written), oldest first, for the daemon to log; drained.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// The store's journal.
    #[must_use]
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The current (acknowledged) configuration.
    #[must_use]
    pub fn config(&self) -> &ApplianceConfig {
        &self.config
    }

    /// The dataplane.
    #[must_use]
    pub fn dataplane(&self) -> &D {
        &self.dataplane
    }

    /// Record a tunnel's runtime state (IKE and BGP write through here):
    /// the dataplane keeps it, the health monitor follows its DOWN time.
    pub fn record_tunnel_state(&mut self, key: TunnelKey, state: TunnelRuntimeState) {
        let before = self.dataplane.tunnel_state(&key).down_since_ms;
        if before != state.down_since_ms {
            let at = state.last_status_change_ms.unwrap_or(self.clock_ms);
            self.health.handle_down_since(&key, state.down_since_ms, at);
        }
        self.dataplane.set_tunnel_state(key, state);
    }

    /// The time, from the control core: raises the health events due
    /// (a tunnel DOWN past the threshold) and dates the replies.
    pub fn handle_clock(&mut self, now_ms: u64) {
        self.clock_ms = now_ms;
        if self.health.next_due_ms().is_some_and(|at| at <= now_ms) {
            self.health.handle_timeout(now_ms);
        }
    }

    /// The health events and the monitor that raises them (the
    /// maintenance work records endpoint replacements with
    /// [`HealthMonitor::record`]).
    pub fn health_mut(&mut self) -> &mut HealthMonitor {
        &mut self.health
    }

    /// The health monitor.
    #[must_use]
    pub fn health(&self) -> &HealthMonitor {
        &self.health
    }

    /// The dataplane, mutably (for the runtime to feed state in).
    pub fn dataplane_mut(&mut self) -> &mut D {
        &mut self.dataplane
    }

    /// Record a tunnel log entry in the ring `logs` reads (always), and
    /// write it to the daemon's log outputs when its tunnel's `log`
    /// options enable its stream, in that stream's format
    /// ([`logs::emit`](crate::logs::emit)).
    pub fn record_log(&mut self, entry: LogEntry) {
        if let Some(options) = self.tunnel_log_options(entry.resource_id()) {
            crate::logs::emit(&entry, options);
        }
        self.logs.push(entry);
    }

    /// The `log` options of the tunnel a record's resource id
    /// (`<connection-id>_<tunnel-outside-ip>`) names.
    pub(crate) fn tunnel_log_options(&self, resource_id: &str) -> Option<&TunnelLogOptions> {
        self.config.connections.iter().find_map(|c| {
            let ip = resource_id.strip_prefix(c.id.as_str())?.strip_prefix('_')?;
            let ip: Option<std::net::IpAddr> = ip.parse().ok();
            c.tunnels
                .iter()
                .find(|t| t.outside_ip_address == ip)
                .map(|t| &t.log)
        })
    }

    /// Record the BGP neighbours' state (the control core's speaker
    /// publishes it; `show_bgp` reads it).
    pub fn set_bgp_neighbors(&mut self, neighbors: Vec<BgpNeighbor>) {
        self.bgp_neighbors = neighbors;
    }

    /// The Prometheus text for the current configuration and counters.
    #[must_use]
    pub fn render_metrics(&self) -> String {
        let mut out = crate::metrics::render(&self.config, &self.dataplane);
        crate::metrics::render_control(&mut out, &self.control_metrics);
        crate::metrics::render_health(&mut out, &self.health);
        out
    }

    /// Record control-plane metrics the control core publishes (the IKE
    /// counters); they replace the previous ones.
    pub fn set_control_metrics(&mut self, metrics: Vec<crate::metrics::ControlMetric>) {
        self.control_metrics = metrics;
    }

    /// Persist `change` (validated by the caller), apply it, make it
    /// current.
    fn commit(&mut self, change: Change) -> Result<(), ApiError> {
        self.journal.append(&change).map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!("cannot save the change: {e}; nothing was changed"),
            )
        })?;
        self.config.apply_change(&change);
        self.dataplane.apply_change(&self.config, &change);
        if let Change::DeleteConnection { id } = &change {
            for tunnel in 0..2 {
                self.health.forget(&TunnelKey {
                    connection_id: id.clone(),
                    tunnel,
                });
            }
        }
        self.compact_if_due();
        Ok(())
    }

    /// Rewrite the snapshot once the journal has grown past it. The
    /// change that triggers it is already durable, so a failure is only a
    /// warning (the journal keeps growing, the next change retries).
    fn compact_if_due(&mut self) {
        if self.journal.wants_compaction()
            && let Err(e) = self.journal.compact(&self.config)
        {
            self.warnings
                .push(format!("cannot compact the configuration journal: {e}"));
        }
    }

    /// Replace the whole configuration (`config_import`): parse, assign
    /// generated values, validate, write it as the store's new snapshot,
    /// apply.
    fn import(&mut self, toml: &str) -> Result<Response, ApiError> {
        let mut next = ApplianceConfig::from_toml_str(toml).map_err(|e| {
            ApiError::new(
                ErrorCode::ValidationFailed,
                format!(
                    "the file is not a configuration: line {}, column {}: {}",
                    e.line, e.column, e.message
                ),
            )
        })?;
        next.assign_generated(&mut *self.fill)
            .map_err(|e| ApiError::validation(&e))?;
        let mut pending = psk::Pending::new();
        for c in &mut next.connections {
            psk::take_inline_keys(c, &mut pending);
        }
        next.validate().map_err(|e| ApiError::validation(&e))?;
        let refs: Vec<String> = next.connections.iter().flat_map(psk::refs_of).collect();
        self.store_keys(pending, &refs)?;
        let generation = self.journal.generation();
        if let Err(e) = self.journal.compact(&next) {
            if self.journal.generation() == generation {
                return Err(ApiError::new(
                    ErrorCode::Internal,
                    format!("cannot save the configuration: {e}; nothing was changed"),
                ));
            }
            // The snapshot is in place (only its fresh journal failed; the
            // next change retries it): the import is done.
            self.warnings
                .push(format!("configuration imported, but: {e}"));
        }
        self.dataplane.apply(&next);
        for c in &self.config.connections {
            if !next.connections.iter().any(|n| n.id == c.id) {
                for tunnel in 0..2 {
                    self.health.forget(&TunnelKey {
                        connection_id: c.id.clone(),
                        tunnel,
                    });
                }
            }
        }
        self.config = next;
        Ok(Response::Ok)
    }

    fn connection_view(&self, id: &str) -> Response {
        let c = self.config.connections.iter().find(|c| c.id == id);
        match c {
            Some(c) => Response::Connection {
                connection: Box::new(ConnectionView::redacted(c)),
            },
            None => Response::Ok,
        }
    }

    fn require_connection(&self, id: &str) -> Result<usize, ApiError> {
        self.config
            .connections
            .iter()
            .position(|c| c.id == id)
            .ok_or_else(|| not_found("connection", id))
    }

    /// Apply one request.
    ///
    /// # Errors
    /// The error reply: `not_found`, `already_exists`, `validation_failed`
    /// (with every broken rule), or `internal` when the configuration could
    /// not be saved. In every error case nothing changed.
    pub fn handle(&mut self, request: Request) -> Result<Response, ApiError> {
        match request {
            Request::Ping {} => Ok(Response::Pong {
                version: crate::api::PROTOCOL_VERSION,
                daemon: env!("CARGO_PKG_VERSION").to_owned(),
            }),
            Request::CreateCustomerGateway { customer_gateway } => {
                if self
                    .config
                    .customer_gateways
                    .iter()
                    .any(|g| g.id == customer_gateway.id)
                {
                    return Err(ApiError::new(
                        ErrorCode::AlreadyExists,
                        format!("customer gateway {:?} already exists", customer_gateway.id),
                    ));
                }
                self.config
                    .validate_put_customer_gateway(&customer_gateway)
                    .map_err(|e| ApiError::validation(&e))?;
                self.commit(Change::PutCustomerGateway {
                    customer_gateway: customer_gateway.clone(),
                })?;
                Ok(Response::CustomerGateway { customer_gateway })
            }
            Request::ModifyCustomerGateway { id, changes } => {
                let mut g: CustomerGateway = self
                    .config
                    .customer_gateways
                    .iter()
                    .find(|g| g.id == id)
                    .ok_or_else(|| not_found("customer gateway", &id))?
                    .clone();
                let CustomerGatewayPatch {
                    ip_address,
                    bgp_asn,
                    device_name,
                    certificate,
                } = changes;
                if ip_address.is_some() {
                    g.ip_address = ip_address;
                }
                if bgp_asn.is_some() {
                    g.bgp_asn = bgp_asn;
                }
                if device_name.is_some() {
                    g.device_name = device_name;
                }
                if certificate.is_some() {
                    g.certificate = certificate;
                }
                self.config
                    .validate_put_customer_gateway(&g)
                    .map_err(|e| ApiError::validation(&e))?;
                self.commit(Change::PutCustomerGateway {
                    customer_gateway: g.clone(),
                })?;
                Ok(Response::CustomerGateway {
                    customer_gateway: g,
                })
            }
            Request::DeleteCustomerGateway { id } => {
                if !self.config.customer_gateways.iter().any(|g| g.id == id) {
                    return Err(not_found("customer gateway", &id));
                }
                let users: Vec<&str> = self
                    .config
                    .connections
                    .iter()
                    .filter(|c| c.customer_gateway_id == id)
                    .map(|c| c.id.as_str())
                    .collect();
                if !users.is_empty() {
                    // Spec §12.4: a customer gateway cannot be deleted while
                    // a VPN connection uses it.
                    return Err(ApiError::validation(&[ConfigError::Conflict {
                        field: format!("customer_gateways[{id}]"),
                        value: id.clone(),
                        allowed: format!("connections {}: delete them first", users.join(", ")),
                    }]));
                }
                self.commit(Change::DeleteCustomerGateway { id })?;
                Ok(Response::Ok)
            }
            Request::ShowCustomerGateways { id } => {
                let gws: Vec<_> = self
                    .config
                    .customer_gateways
                    .iter()
                    .filter(|g| id.as_ref().is_none_or(|i| *i == g.id))
                    .cloned()
                    .collect();
                if let Some(i) = &id
                    && gws.is_empty()
                {
                    return Err(not_found("customer gateway", i));
                }
                Ok(Response::CustomerGateways {
                    customer_gateways: gws,
                })
            }
            Request::CreateConnection { connection } => self.create_connection(*connection),
            Request::ModifyConnectionOptions {
                connection_id,
                options,
            } => {
                let ci = self.require_connection(&connection_id)?;
                let conn = self.config.connections[ci].patched_options(options);
                self.put_connection(conn)?;
                Ok(self.connection_view(&connection_id))
            }
            Request::ModifyTunnelOptions {
                connection_id,
                tunnel,
                options,
            } => {
                let ci = self.require_connection(&connection_id)?;
                if tunnel > 1 {
                    return Err(ApiError::validation(&[ConfigError::OutOfRange {
                        field: format!("connections[{connection_id}].tunnels"),
                        value: tunnel.to_string(),
                        allowed: "tunnel index 0..=1".to_owned(),
                    }]));
                }
                let mut conn = self.config.connections[ci].clone();
                conn.tunnels[tunnel] = conn.tunnels[tunnel].patched(*options);
                self.put_connection(conn)?;
                Ok(self.connection_view(&connection_id))
            }
            Request::DeleteConnection { id } => {
                self.require_connection(&id)?;
                self.refuse_if_client_vpn_routes_into(&id)?;
                self.commit(Change::DeleteConnection { id })?;
                Ok(Response::Ok)
            }
            Request::ShowConnections { id } => {
                if let Some(i) = &id {
                    self.require_connection(i)?;
                }
                Ok(Response::Connections {
                    connections: self
                        .config
                        .connections
                        .iter()
                        .filter(|c| id.as_ref().is_none_or(|i| *i == c.id))
                        .map(ConnectionView::redacted)
                        .collect(),
                })
            }
            Request::AddStaticRoute {
                connection_id,
                prefix,
            } => {
                let ci = self.require_connection(&connection_id)?;
                if self.config.connections[ci].static_routes.contains(&prefix) {
                    return Err(ApiError::new(
                        ErrorCode::AlreadyExists,
                        format!("connection {connection_id:?} already has static route {prefix}"),
                    ));
                }
                let mut conn = self.config.connections[ci].clone();
                conn.static_routes.push(prefix);
                self.put_connection(conn)?;
                Ok(self.connection_view(&connection_id))
            }
            Request::DeleteStaticRoute {
                connection_id,
                prefix,
            } => {
                let ci = self.require_connection(&connection_id)?;
                let Some(ri) = self.config.connections[ci]
                    .static_routes
                    .iter()
                    .position(|p| *p == prefix)
                else {
                    return Err(not_found(
                        &format!("static route of connection {connection_id:?}"),
                        &prefix.to_string(),
                    ));
                };
                let mut conn = self.config.connections[ci].clone();
                conn.static_routes.remove(ri);
                self.put_connection(conn)?;
                Ok(self.connection_view(&connection_id))
            }
            Request::ShowTunnels { connection_id } => {
                if let Some(i) = &connection_id {
                    self.require_connection(i)?;
                }
                Ok(Response::Tunnels {
                    tunnels: self.tunnel_statuses(connection_id.as_deref()),
                })
            }
            Request::ShowTunnel {
                connection_id,
                outside_ip_address,
            } => {
                self.require_connection(&connection_id)?;
                let tunnel = self
                    .tunnel_statuses(Some(&connection_id))
                    .into_iter()
                    .find(|t| t.outside_ip_address == Some(outside_ip_address))
                    .ok_or_else(|| {
                        not_found(
                            &format!("tunnel of connection {connection_id:?} at"),
                            &outside_ip_address.to_string(),
                        )
                    })?;
                let health_events = self
                    .health
                    .events()
                    .filter(|e| e.connection_id == connection_id && e.tunnel == tunnel.tunnel)
                    .cloned()
                    .collect();
                Ok(Response::Tunnel {
                    tunnel: Box::new(tunnel),
                    health_events,
                })
            }
            Request::ShowHealthEvents { connection_id } => {
                if let Some(i) = &connection_id {
                    self.require_connection(i)?;
                }
                let events = self
                    .health
                    .events()
                    .filter(|e| connection_id.as_ref().is_none_or(|i| *i == e.connection_id))
                    .cloned()
                    .collect();
                Ok(Response::HealthEvents { events })
            }
            Request::ShowSas { connection_id } => {
                if let Some(i) = &connection_id {
                    self.require_connection(i)?;
                }
                let sas = self
                    .dataplane
                    .sas()
                    .into_iter()
                    .filter(|s| connection_id.as_ref().is_none_or(|i| *i == s.connection_id))
                    .collect();
                Ok(Response::Sas { sas })
            }
            Request::ShowRoutes { connection_id } => {
                if let Some(i) = &connection_id {
                    self.require_connection(i)?;
                }
                Ok(Response::Routes {
                    routes: self.routes(connection_id.as_deref()),
                })
            }
            Request::ShowBgp { connection_id } => {
                if let Some(i) = &connection_id {
                    self.require_connection(i)?;
                }
                let neighbors = self
                    .bgp_neighbors
                    .iter()
                    .filter(|n| connection_id.as_ref().is_none_or(|i| *i == n.connection_id))
                    .cloned()
                    .collect();
                Ok(Response::Bgp { neighbors })
            }
            Request::ShowStats {} => Ok(Response::Stats {
                stats: self.dataplane.stats(),
            }),
            Request::Logs {
                connection_id,
                lines,
            } => {
                let prefix = connection_id.map(|c| format!("{c}_"));
                Ok(Response::Logs {
                    entries: self
                        .logs
                        .tail(lines.unwrap_or(DEFAULT_LOG_LINES), prefix.as_deref()),
                })
            }
            Request::ConfigDownload {
                connection_id,
                device,
            } => {
                let ci = self.require_connection(&connection_id)?;
                // The device file carries the keys: those of the key store
                // are put inline in a copy.
                let keyed;
                let config = if psk::refs_of(&self.config.connections[ci]).is_empty() {
                    &self.config
                } else {
                    let mut c = self.config.clone();
                    c.connections[ci] = self.with_keys_inline(&self.config.connections[ci]);
                    keyed = c;
                    &keyed
                };
                let text = download::render(config, &connection_id, device).map_err(|e| {
                    // Unassigned values and options the device's file
                    // cannot express are the configuration's state, not a
                    // missing object.
                    let code = match e {
                        download::RenderError::UnknownConnection(_) => ErrorCode::NotFound,
                        _ => ErrorCode::ValidationFailed,
                    };
                    ApiError::new(code, e.to_string())
                })?;
                Ok(Response::ConfigText { device, text })
            }
            Request::ConfigExport {} => {
                let toml = self.config.to_toml_string().map_err(|e| {
                    ApiError::new(
                        ErrorCode::Internal,
                        format!("cannot render the configuration as TOML: {e}"),
                    )
                })?;
                Ok(Response::ConfigToml {
                    toml: format!("{EXPORT_HEADER}{toml}"),
                })
            }
            Request::ConfigImport { toml } => self.import(&toml),
            Request::PskSet {
                name,
                pre_shared_key,
            } => self.psk_put(&name, pre_shared_key, false),
            Request::PskRotate {
                name,
                pre_shared_key,
            } => self.psk_put(&name, pre_shared_key, true),
            Request::PskDelete { name } => self.psk_delete(&name),
            Request::PskList {} => Ok(self.psk_list()),
            r @ (Request::CreateClientVpnEndpoint { .. }
            | Request::ModifyClientVpnEndpoint { .. }
            | Request::DeleteClientVpnEndpoint { .. }
            | Request::ShowClientVpnEndpoints { .. }
            | Request::AuthorizeClientVpnIngress { .. }
            | Request::RevokeClientVpnIngress { .. }
            | Request::CreateClientVpnRoute { .. }
            | Request::DeleteClientVpnRoute { .. }
            | Request::ExportClientVpnConfig { .. }
            | Request::ShowClientVpnConnections { .. }
            | Request::TerminateClientVpnConnections { .. }) => self.handle_client_vpn(r),
        }
    }

    fn create_connection(&mut self, mut conn: VpnConnection) -> Result<Response, ApiError> {
        if self.config.connections.iter().any(|c| c.id == conn.id) {
            return Err(ApiError::new(
                ErrorCode::AlreadyExists,
                format!("connection {:?} already exists", conn.id),
            ));
        }
        if conn.target.is_empty() {
            conn.target.clone_from(&self.config.gateway.id);
        }
        // Tunnel i takes outside address i of the gateway when none is
        // given (the two tunnels must use different ones).
        for (i, t) in conn.tunnels.iter_mut().enumerate() {
            if t.outside_ip_address.is_none() {
                t.outside_ip_address = self.config.gateway.outside_addresses.get(i).copied();
            }
        }
        let id = conn.id.clone();
        self.config
            .assign_generated_for(&mut conn, &mut *self.fill)
            .map_err(|e| ApiError::validation(&e))?;
        self.put_connection(conn)?;
        Ok(self.connection_view(&id))
    }

    /// Validate `conn` (new, or replacing the one with its id) against
    /// the configuration and commit it.
    fn put_connection(&mut self, mut conn: VpnConnection) -> Result<(), ApiError> {
        let mut pending = psk::Pending::new();
        psk::take_inline_keys(&mut conn, &mut pending);
        self.config
            .validate_put_connection(&conn)
            .map_err(|e| ApiError::validation(&e))?;
        self.store_keys(pending, &psk::refs_of(&conn))?;
        self.commit(Change::PutConnection {
            connection: Box::new(conn),
        })
    }

    fn tunnel_statuses(&self, only: Option<&str>) -> Vec<TunnelStatus> {
        let mut out = Vec::new();
        let peers: std::collections::HashMap<&str, Option<std::net::IpAddr>> = self
            .config
            .customer_gateways
            .iter()
            .map(|g| (g.id.as_str(), g.ip_address))
            .collect();
        for c in &self.config.connections {
            if only.is_some_and(|o| o != c.id) {
                continue;
            }
            let peer = peers.get(c.customer_gateway_id.as_str()).copied().flatten();
            for (i, t) in c.tunnels.iter().enumerate() {
                let st = self.dataplane.tunnel_state(&TunnelKey {
                    connection_id: c.id.clone(),
                    tunnel: i,
                });
                let inside_cidr = match c.tunnel_inside_ip_version {
                    TunnelInsideIpVersion::Ipv4 => t.inside_ipv4_cidr.map(Into::into),
                    TunnelInsideIpVersion::Ipv6 => t.inside_ipv6_cidr.map(Into::into),
                };
                out.push(TunnelStatus {
                    connection_id: c.id.clone(),
                    tunnel: i,
                    outside_ip_address: t.outside_ip_address,
                    peer_ip_address: peer,
                    inside_cidr,
                    status: st.up_down(c.routing),
                    ike_phase1_state: st.ike_phase1_state,
                    ike_phase2_state: st.ike_phase2_state,
                    bgp_state: st.bgp_state,
                    nat_t_detected: st.nat_t_detected,
                    last_status_change_ms: st.last_status_change_ms,
                    last_status_change_reason: st.last_status_change_reason,
                    status_changes: st.status_changes,
                    flaps: st.flaps,
                    phase1_rekey_in_secs: st
                        .negotiated
                        .as_ref()
                        .and_then(|n| n.phase1_rekey_at_ms)
                        .map(|at| secs_until(at, self.clock_ms)),
                    phase2_rekey_in_secs: st
                        .negotiated
                        .as_ref()
                        .and_then(|n| n.phase2_rekey_at_ms)
                        .map(|at| secs_until(at, self.clock_ms)),
                    negotiated: st.negotiated,
                    ike_version: st.ike_version,
                    ike_refused: st.ike_refused,
                    status_detail: st.status_detail,
                    next_retry_ms: st.next_retry_ms,
                });
            }
        }
        out
    }

    fn routes(&self, only: Option<&str>) -> Vec<RouteEntry> {
        let statuses = self.tunnel_statuses(only);
        let mut out = Vec::new();
        for c in &self.config.connections {
            if only.is_some_and(|o| o != c.id) {
                continue;
            }
            // Spec § 10.2: a static connection sends through one tunnel,
            // its first UP one (no ECMP); with neither UP its routes are
            // withdrawn from the dataplane (§ 10.5), shown inactive.
            let primary = statuses
                .iter()
                .filter(|s| s.connection_id == c.id && s.status == TunnelUpDown::Up)
                .map(|s| s.tunnel)
                .min();
            for p in &c.static_routes {
                out.push(RouteEntry {
                    prefix: *p,
                    connection_id: c.id.clone(),
                    tunnel: primary,
                    source: "static".to_owned(),
                    active: primary.is_some(),
                    ecmp: Vec::new(),
                    as_path: None,
                    med: None,
                    next_hop: None,
                });
            }
        }
        out.extend(
            self.dataplane
                .dynamic_routes()
                .into_iter()
                .filter(|r| only.is_none_or(|o| o == r.connection_id)),
        );
        out
    }
}

mod client_vpn;
mod psk;
#[cfg(test)]
mod tests;
