//! The management plane's owner of the configuration: applies API requests
//! to the [`ApplianceConfig`], persists, and tells the [`Dataplane`].
//!
//! ```text
//!   request ──► Manager::handle ──► next = f(current)      (a copy)
//!                                   next.validate()        ── Err ─► validation_failed, nothing changed
//!                                   store.save(&next)      ── Err ─► internal, nothing changed
//!                                   dataplane.apply(&next)
//!                                   current = next
//!                                   ◄── success reply (only now)
//! ```
//!
//! What it guarantees: a change is acknowledged only after the whole
//! resulting configuration validated and was written crash-safely by the
//! [`ConfigStore`] (temp file, fsync, rename, directory fsync), so an
//! acknowledged change survives `kill -9` and power loss; a rejected change
//! leaves memory, disk and dataplane untouched. Queries never change
//! anything.
//!
//! What it never does: read the clock or a socket. Randomness (generated
//! keys, inside CIDR allocation) comes from the injected `fill` function.
//! The only I/O is the store's file.

use std::fmt;

use crate::api::{
    ApiError, BgpNeighbor, ConnectionView, CustomerGatewayPatch, DEFAULT_LOG_LINES, ErrorCode,
    Request, Response, TunnelStatus,
};
use crate::config::{
    ApplianceConfig, ConfigError, ConfigStore, LoadedFrom, StoreError, TunnelInsideIpVersion,
    VpnConnection,
};
use crate::dataplane::{Dataplane, RouteEntry, TunnelKey, TunnelUpDown};
use crate::download;
use crate::logs::{LogEntry, LogRing};

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
    /// Generated values were assigned but could not be saved.
    #[error("cannot save generated values: {0}")]
    Save(#[source] StoreError),
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
    store: ConfigStore,
    dataplane: D,
    logs: LogRing,
    fill: Fill,
    bgp_neighbors: Vec<BgpNeighbor>,
    control_metrics: Vec<crate::metrics::ControlMetric>,
}

impl<D: Dataplane + fmt::Debug> fmt::Debug for Manager<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("store", &self.store)
            .field("connections", &self.config.connections.len())
            .field("dataplane", &self.dataplane)
            .finish_non_exhaustive()
    }
}

fn not_found(what: &str, id: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("{what} {id:?} does not exist"))
}

impl<D: Dataplane> Manager<D> {
    /// Load the configuration from `store` (falling back to `<file>.prev`
    /// if the file is damaged), assign generated values (inside CIDRs,
    /// keys) and save them if any were assigned, validate, and apply it to
    /// `dataplane`.
    ///
    /// # Errors
    /// The file cannot be loaded, breaks rules, or the generated values
    /// cannot be saved.
    pub fn start(
        store: ConfigStore,
        dataplane: D,
        mut fill: Fill,
    ) -> Result<(Self, LoadedFrom), StartError> {
        let (mut config, from) = store.load_or_prev().map_err(StartError::Load)?;
        let assigned = config
            .assign_generated(&mut *fill)
            .map_err(StartError::Invalid)?;
        config.validate().map_err(StartError::Invalid)?;
        if !assigned.is_empty() || from != LoadedFrom::Current {
            store.save(&config).map_err(StartError::Save)?;
        }
        Ok((Self::new(config, store, dataplane, fill), from))
    }

    /// A manager over an already valid `config` (not re-validated).
    #[must_use]
    pub fn new(config: ApplianceConfig, store: ConfigStore, mut dataplane: D, fill: Fill) -> Self {
        dataplane.apply(&config);
        Self {
            config,
            store,
            dataplane,
            logs: LogRing::default(),
            fill,
            bgp_neighbors: Vec::new(),
            control_metrics: Vec::new(),
        }
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

    /// The dataplane, mutably (for the runtime to feed state in).
    pub fn dataplane_mut(&mut self) -> &mut D {
        &mut self.dataplane
    }

    /// Record a tunnel log entry in the ring `logs` reads.
    pub fn record_log(&mut self, entry: LogEntry) {
        self.logs.push(entry);
    }

    /// Record the BGP neighbours' state (the daemon's BGP thread publishes
    /// it; `show_bgp` reads it).
    pub fn set_bgp_neighbors(&mut self, neighbors: Vec<BgpNeighbor>) {
        self.bgp_neighbors = neighbors;
    }

    /// The Prometheus text for the current configuration and counters.
    #[must_use]
    pub fn render_metrics(&self) -> String {
        let mut out = crate::metrics::render(&self.config, &self.dataplane);
        crate::metrics::render_control(&mut out, &self.control_metrics);
        out
    }

    /// Record control-plane metrics a daemon thread publishes (the IKE
    /// service's counters); they replace the previous ones.
    pub fn set_control_metrics(&mut self, metrics: Vec<crate::metrics::ControlMetric>) {
        self.control_metrics = metrics;
    }

    /// Validate `next`, persist it, apply it, make it current.
    fn commit(&mut self, next: ApplianceConfig) -> Result<(), ApiError> {
        next.validate().map_err(|e| ApiError::validation(&e))?;
        self.store.save(&next).map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!(
                    "cannot save the configuration to {}: {e}; nothing was changed",
                    self.store.path().display()
                ),
            )
        })?;
        self.dataplane.apply(&next);
        self.config = next;
        Ok(())
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
                let mut next = self.config.clone();
                next.customer_gateways.push(customer_gateway.clone());
                self.commit(next)?;
                Ok(Response::CustomerGateway { customer_gateway })
            }
            Request::ModifyCustomerGateway { id, changes } => {
                let gi = self
                    .config
                    .customer_gateways
                    .iter()
                    .position(|g| g.id == id)
                    .ok_or_else(|| not_found("customer gateway", &id))?;
                let mut next = self.config.clone();
                let g = &mut next.customer_gateways[gi];
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
                let customer_gateway = g.clone();
                self.commit(next)?;
                Ok(Response::CustomerGateway { customer_gateway })
            }
            Request::DeleteCustomerGateway { id } => {
                let gi = self
                    .config
                    .customer_gateways
                    .iter()
                    .position(|g| g.id == id)
                    .ok_or_else(|| not_found("customer gateway", &id))?;
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
                let mut next = self.config.clone();
                next.customer_gateways.remove(gi);
                self.commit(next)?;
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
                self.require_connection(&connection_id)?;
                let next = self
                    .config
                    .modify_connection_options(&connection_id, options)
                    .map_err(|e| ApiError::validation(&e))?;
                self.commit(next)?;
                Ok(self.connection_view(&connection_id))
            }
            Request::ModifyTunnelOptions {
                connection_id,
                tunnel,
                options,
            } => {
                self.require_connection(&connection_id)?;
                let next = self
                    .config
                    .modify_tunnel_options(&connection_id, tunnel, *options)
                    .map_err(|e| ApiError::validation(&e))?;
                self.commit(next)?;
                Ok(self.connection_view(&connection_id))
            }
            Request::DeleteConnection { id } => {
                let ci = self.require_connection(&id)?;
                let mut next = self.config.clone();
                next.connections.remove(ci);
                self.commit(next)?;
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
                let mut next = self.config.clone();
                next.connections[ci].static_routes.push(prefix);
                self.commit(next)?;
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
                let mut next = self.config.clone();
                next.connections[ci].static_routes.remove(ri);
                self.commit(next)?;
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
                self.require_connection(&connection_id)?;
                let text = download::render(&self.config, &connection_id, device)
                    .map_err(|e| ApiError::new(ErrorCode::NotFound, e.to_string()))?;
                Ok(Response::ConfigText { device, text })
            }
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
        let mut next = self.config.clone();
        next.connections.push(conn);
        next.assign_generated(&mut *self.fill)
            .map_err(|e| ApiError::validation(&e))?;
        self.commit(next)?;
        Ok(self.connection_view(&id))
    }

    fn tunnel_statuses(&self, only: Option<&str>) -> Vec<TunnelStatus> {
        let mut out = Vec::new();
        for c in &self.config.connections {
            if only.is_some_and(|o| o != c.id) {
                continue;
            }
            let peer = self
                .config
                .customer_gateways
                .iter()
                .find(|g| g.id == c.customer_gateway_id)
                .and_then(|g| g.ip_address);
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
            // The dataplane spreads a static route over the connection's UP
            // tunnels (ECMP, hashed per flow): show them as its members.
            let up: Vec<usize> = statuses
                .iter()
                .filter(|s| s.connection_id == c.id && s.status == TunnelUpDown::Up)
                .map(|s| s.tunnel)
                .collect();
            let ecmp: Vec<String> = if up.len() > 1 {
                up.iter().map(|t| format!("{}/{t}", c.id)).collect()
            } else {
                Vec::new()
            };
            for p in &c.static_routes {
                out.push(RouteEntry {
                    prefix: *p,
                    connection_id: c.id.clone(),
                    tunnel: up.first().copied(),
                    source: "static".to_owned(),
                    active: !up.is_empty(),
                    ecmp: ecmp.clone(),
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

#[cfg(test)]
mod tests;
