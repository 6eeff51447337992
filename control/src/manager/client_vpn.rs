//! The manager's Client VPN requests: endpoint create/modify/delete, rules,
//! routes, `.ovpn` export, connections and termination.
//!
//! Same contract as the rest of the manager: a change is validated
//! against the whole configuration (pure rules with field paths, then the
//! endpoint's files when they are new or changed), journaled and synced
//! before the reply; on any error nothing changed. The client connections
//! themselves belong to the remote-access runtime, which publishes them
//! here ([`Manager::set_client_vpn_connections`]) and collects the
//! terminations requested ([`Manager::take_client_vpn_terminations`]);
//! until a runtime publishes, `show` lists none.

use ipnet::Ipv4Net;

use super::{Manager, not_found};
use crate::api::{ApiError, ErrorCode, Request, Response};
use crate::client_vpn::{
    self, AuthorizationRule, ClientVpnConnection, ClientVpnEndpoint, ClientVpnEndpointView,
    ClientVpnRoute, RouteTarget,
};
use crate::config::{Change, ConfigError};
use crate::dataplane::Dataplane;

/// Runtime state the manager keeps for the remote-access runtime.
#[derive(Debug, Default)]
pub(super) struct ClientVpnRuntime {
    connections: Vec<ClientVpnConnection>,
    terminations: Vec<ClientVpnConnection>,
}

impl<D: Dataplane> Manager<D> {
    /// Record the client connections (the remote-access runtime publishes
    /// them; `show_client_vpn_connections` reads them).
    pub fn set_client_vpn_connections(&mut self, connections: Vec<ClientVpnConnection>) {
        self.client_vpn.connections = connections;
    }

    /// The connections `terminate_client_vpn_connections` asked to
    /// disconnect since the last call, for the runtime; drained.
    pub fn take_client_vpn_terminations(&mut self) -> Vec<ClientVpnConnection> {
        std::mem::take(&mut self.client_vpn.terminations)
    }

    /// At start: a warning (see [`Manager::take_warnings`]) for every
    /// endpoint whose files no longer check out (changed on disk since
    /// they were accepted). The configuration still loads.
    pub(super) fn check_client_vpn_files(&mut self) {
        for ep in &self.config.client_vpn_endpoints {
            if let Err(errors) = client_vpn::check_files(ep) {
                for e in errors {
                    self.warnings
                        .push(format!("client VPN endpoint {}: {e}", ep.id));
                }
            }
        }
    }

    fn require_endpoint(&self, id: &str) -> Result<usize, ApiError> {
        self.config
            .client_vpn_endpoints
            .iter()
            .position(|e| e.id == id)
            .ok_or_else(|| not_found("client VPN endpoint", id))
    }

    fn endpoint_view(&self, id: &str) -> Response {
        match self.config.client_vpn_endpoints.iter().find(|e| e.id == id) {
            Some(e) => Response::ClientVpnEndpoint {
                endpoint: Box::new(ClientVpnEndpointView::of(e, &self.config)),
            },
            None => Response::Ok,
        }
    }

    /// Validate `ep` (new, or replacing the endpoint with its id) and
    /// commit it. `check_files`: the files are new or changed, read and
    /// check them.
    fn put_endpoint(&mut self, ep: ClientVpnEndpoint, check_files: bool) -> Result<(), ApiError> {
        self.config
            .validate_put_client_vpn_endpoint(&ep)
            .map_err(|e| ApiError::validation(&e))?;
        if check_files {
            client_vpn::check_files(&ep).map_err(|e| ApiError::validation(&e))?;
        }
        self.commit(Change::PutClientVpnEndpoint {
            endpoint: Box::new(ep),
        })
    }

    /// Refuses to delete connection `id` while an endpoint routes into it.
    pub(super) fn refuse_if_client_vpn_routes_into(&self, id: &str) -> Result<(), ApiError> {
        let users = self.config.client_vpn_users_of(id);
        if users.is_empty() {
            return Ok(());
        }
        Err(ApiError::validation(&[ConfigError::Conflict {
            field: format!("connections[{id}]"),
            value: id.to_owned(),
            allowed: format!(
                "client VPN endpoint(s) {} route into it: delete those routes first",
                users.join(", ")
            ),
        }]))
    }

    /// Apply one Client VPN request (the caller matched its type).
    pub(super) fn handle_client_vpn(&mut self, request: Request) -> Result<Response, ApiError> {
        match request {
            Request::CreateClientVpnEndpoint { endpoint } => {
                let mut ep = *endpoint;
                if self
                    .config
                    .client_vpn_endpoints
                    .iter()
                    .any(|e| e.id == ep.id)
                {
                    return Err(ApiError::new(
                        ErrorCode::AlreadyExists,
                        format!("client VPN endpoint {:?} already exists", ep.id),
                    ));
                }
                if ep.routes.is_empty() {
                    // As the cloud service does when a subnet is
                    // associated: a route to each (IPv4) VPC network.
                    ep.routes = self
                        .config
                        .gateway
                        .local_networks
                        .iter()
                        .filter_map(|n| match n {
                            ipnet::IpNet::V4(n) => Some(ClientVpnRoute {
                                destination: n.trunc(),
                                target: RouteTarget::Vpc,
                                description: Some("local network".to_owned()),
                            }),
                            ipnet::IpNet::V6(_) => None,
                        })
                        .collect();
                }
                let id = ep.id.clone();
                self.put_endpoint(ep, true)?;
                Ok(self.endpoint_view(&id))
            }
            Request::ModifyClientVpnEndpoint { id, changes } => {
                let i = self.require_endpoint(&id)?;
                let old = &self.config.client_vpn_endpoints[i];
                let ep = old
                    .patched(*changes)
                    .map_err(|e| ApiError::validation(&e))?;
                let files_changed = ep.server_certificate_file != old.server_certificate_file
                    || ep.server_private_key_file != old.server_private_key_file
                    || ep.client_ca_chain_file != old.client_ca_chain_file
                    || ep.tls_crypt_key_file != old.tls_crypt_key_file
                    || ep.crl_file != old.crl_file;
                self.put_endpoint(ep, files_changed)?;
                Ok(self.endpoint_view(&id))
            }
            Request::DeleteClientVpnEndpoint { id } => {
                self.require_endpoint(&id)?;
                self.commit(Change::DeleteClientVpnEndpoint { id: id.clone() })?;
                self.client_vpn.connections.retain(|c| c.endpoint_id != id);
                Ok(Response::Ok)
            }
            Request::ShowClientVpnEndpoints { id } => {
                if let Some(i) = &id {
                    self.require_endpoint(i)?;
                }
                Ok(Response::ClientVpnEndpoints {
                    endpoints: self
                        .config
                        .client_vpn_endpoints
                        .iter()
                        .filter(|e| id.as_ref().is_none_or(|i| *i == e.id))
                        .map(|e| ClientVpnEndpointView::of(e, &self.config))
                        .collect(),
                })
            }
            Request::AuthorizeClientVpnIngress {
                endpoint_id,
                destination,
                access,
                description,
            } => {
                let i = self.require_endpoint(&endpoint_id)?;
                let mut ep = self.config.client_vpn_endpoints[i].clone();
                if ep
                    .authorization_rules
                    .iter()
                    .any(|r| r.destination.trunc() == destination.trunc())
                {
                    return Err(ApiError::new(
                        ErrorCode::AlreadyExists,
                        format!(
                            "client VPN endpoint {endpoint_id:?} already has an authorization rule for {destination}"
                        ),
                    ));
                }
                ep.authorization_rules.push(AuthorizationRule {
                    destination,
                    access,
                    description,
                });
                self.put_endpoint(ep, false)?;
                Ok(self.endpoint_view(&endpoint_id))
            }
            Request::RevokeClientVpnIngress {
                endpoint_id,
                destination,
            } => {
                let i = self.require_endpoint(&endpoint_id)?;
                let mut ep = self.config.client_vpn_endpoints[i].clone();
                let ri = position(&endpoint_id, "authorization rule", destination, || {
                    ep.authorization_rules.iter().map(|r| r.destination)
                })?;
                ep.authorization_rules.remove(ri);
                self.put_endpoint(ep, false)?;
                Ok(self.endpoint_view(&endpoint_id))
            }
            Request::CreateClientVpnRoute {
                endpoint_id,
                destination,
                target,
                description,
            } => {
                let i = self.require_endpoint(&endpoint_id)?;
                let mut ep = self.config.client_vpn_endpoints[i].clone();
                if ep
                    .routes
                    .iter()
                    .any(|r| r.destination.trunc() == destination.trunc())
                {
                    return Err(ApiError::new(
                        ErrorCode::AlreadyExists,
                        format!(
                            "client VPN endpoint {endpoint_id:?} already has a route to {destination}"
                        ),
                    ));
                }
                ep.routes.push(ClientVpnRoute {
                    destination,
                    target,
                    description,
                });
                self.put_endpoint(ep, false)?;
                Ok(self.endpoint_view(&endpoint_id))
            }
            Request::DeleteClientVpnRoute {
                endpoint_id,
                destination,
            } => {
                let i = self.require_endpoint(&endpoint_id)?;
                let mut ep = self.config.client_vpn_endpoints[i].clone();
                let ri = position(&endpoint_id, "route", destination, || {
                    ep.routes.iter().map(|r| r.destination)
                })?;
                ep.routes.remove(ri);
                self.put_endpoint(ep, false)?;
                Ok(self.endpoint_view(&endpoint_id))
            }
            Request::ExportClientVpnConfig { endpoint_id } => {
                let i = self.require_endpoint(&endpoint_id)?;
                let ep = &self.config.client_vpn_endpoints[i];
                let remote = ep.effective_outside_address(&self.config).ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::ValidationFailed,
                        "the gateway has no outside address for clients to connect to",
                    )
                })?;
                // The files may have changed on disk since the endpoint
                // was saved: a file that no longer checks out is this
                // request's error, with its field path.
                let material = client_vpn::check_files(ep).map_err(|e| ApiError::validation(&e))?;
                Ok(Response::ClientVpnConfig {
                    text: client_vpn::ovpn::render(ep, remote, &material),
                    endpoint_id,
                })
            }
            Request::ShowClientVpnConnections { endpoint_id } => {
                if let Some(i) = &endpoint_id {
                    self.require_endpoint(i)?;
                }
                Ok(Response::ClientVpnConnections {
                    connections: self
                        .client_vpn
                        .connections
                        .iter()
                        .filter(|c| endpoint_id.as_ref().is_none_or(|i| *i == c.endpoint_id))
                        .cloned()
                        .collect(),
                })
            }
            Request::TerminateClientVpnConnections {
                endpoint_id,
                connection_id,
                common_name,
            } => {
                self.require_endpoint(&endpoint_id)?;
                let matches = |c: &ClientVpnConnection| {
                    c.endpoint_id == endpoint_id
                        && match (&connection_id, &common_name) {
                            (Some(id), _) => c.connection_id == *id,
                            (None, Some(cn)) => c.common_name == *cn,
                            (None, None) => false,
                        }
                };
                let chosen: Vec<ClientVpnConnection> = match (&connection_id, &common_name) {
                    (Some(_), Some(_)) | (None, None) => {
                        return Err(ApiError::new(
                            ErrorCode::BadRequest,
                            "give exactly one of connection_id and common_name",
                        ));
                    }
                    _ => self
                        .client_vpn
                        .connections
                        .iter()
                        .filter(|c| matches(c))
                        .cloned()
                        .collect(),
                };
                if let Some(id) = &connection_id
                    && chosen.is_empty()
                {
                    return Err(not_found(
                        &format!("connection of client VPN endpoint {endpoint_id:?}"),
                        id,
                    ));
                }
                self.client_vpn.terminations.extend(chosen.iter().cloned());
                Ok(Response::ClientVpnTerminated {
                    endpoint_id,
                    connections: chosen,
                })
            }
            other => Err(ApiError::new(
                ErrorCode::Internal,
                format!("not a client VPN request: {other:?}"),
            )),
        }
    }
}

/// The index of the entry for `destination` among `entries()`, or
/// `not_found` naming the endpoint and what was looked for.
fn position<I: Iterator<Item = Ipv4Net>>(
    endpoint_id: &str,
    what: &str,
    destination: Ipv4Net,
    entries: impl FnOnce() -> I,
) -> Result<usize, ApiError> {
    entries()
        .position(|d| d.trunc() == destination.trunc())
        .ok_or_else(|| {
            not_found(
                &format!("{what} of client VPN endpoint {endpoint_id:?}"),
                &destination.to_string(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_vpn::tests::{Pki, with_files};
    use crate::client_vpn::{Access, ClientVpnEndpointPatch};
    use crate::manager::tests::{fill, on_disk, start};

    fn view(r: Response) -> ClientVpnEndpointView {
        match r {
            Response::ClientVpnEndpoint { endpoint } => *endpoint,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn endpoint_lifecycle_is_validated_persisted_and_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path(), "client-ca");
        let ep = with_files(dir.path(), &pki);
        let ep_files = ep.clone();
        let mut m = start(&dir);

        // Created with the default route to the local network (10.2.0.0/16).
        let v = view(
            m.handle(Request::CreateClientVpnEndpoint {
                endpoint: Box::new(ep.clone()),
            })
            .unwrap(),
        );
        assert_eq!(v.endpoint.routes.len(), 1);
        assert_eq!(v.endpoint.routes[0].destination.to_string(), "10.2.0.0/16");
        assert_eq!(v.endpoint.routes[0].target, RouteTarget::Vpc);
        assert_eq!(v.server_tunnel_address.to_string(), "192.168.100.1");
        assert_eq!(
            v.effective_outside_address,
            Some("198.51.100.10".parse().unwrap())
        );
        assert_eq!(on_disk(&dir).client_vpn_endpoints.len(), 1);
        let e = m
            .handle(Request::CreateClientVpnEndpoint {
                endpoint: Box::new(ep.clone()),
            })
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::AlreadyExists);

        // Rules and routes; a route into a connection pins it.
        let dst = |s: &str| s.parse::<Ipv4Net>().unwrap();
        m.handle(Request::AuthorizeClientVpnIngress {
            endpoint_id: "cvpn-1".into(),
            destination: dst("10.0.0.0/8"),
            access: Access::Allow,
            description: None,
        })
        .unwrap();
        m.handle(Request::AuthorizeClientVpnIngress {
            endpoint_id: "cvpn-1".into(),
            destination: dst("10.2.9.0/24"),
            access: Access::Deny,
            description: Some("lab".into()),
        })
        .unwrap();
        let v = view(
            m.handle(Request::CreateClientVpnRoute {
                endpoint_id: "cvpn-1".into(),
                destination: dst("10.10.0.0/16"),
                target: RouteTarget::Connection("vpn-branch1".into()),
                description: None,
            })
            .unwrap(),
        );
        assert!(client_vpn::authorize(
            &v.endpoint.authorization_rules,
            "10.2.0.5".parse().unwrap()
        ));
        assert!(!client_vpn::authorize(
            &v.endpoint.authorization_rules,
            "10.2.9.5".parse().unwrap()
        ));
        let e = m
            .handle(Request::DeleteConnection {
                id: "vpn-branch1".into(),
            })
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::ValidationFailed);
        assert!(e.errors[0].allowed.contains("cvpn-1"), "{e:?}");
        // A route to a connection that does not exist, with its field path.
        let e = m
            .handle(Request::CreateClientVpnRoute {
                endpoint_id: "cvpn-1".into(),
                destination: dst("10.11.0.0/16"),
                target: RouteTarget::Connection("vpn-nope".into()),
                description: None,
            })
            .unwrap_err();
        assert_eq!(
            e.errors[0].field,
            "client_vpn_endpoints[cvpn-1].routes[2].target"
        );
        // The client CIDR cannot change; other fields can.
        let e = m
            .handle(Request::ModifyClientVpnEndpoint {
                id: "cvpn-1".into(),
                changes: Box::new(ClientVpnEndpointPatch {
                    client_cidr: Some(dst("192.168.200.0/22")),
                    ..ClientVpnEndpointPatch::default()
                }),
            })
            .unwrap_err();
        assert_eq!(
            e.errors[0].field,
            "client_vpn_endpoints[cvpn-1].client_cidr"
        );
        let v = view(
            m.handle(Request::ModifyClientVpnEndpoint {
                id: "cvpn-1".into(),
                changes: Box::new(ClientVpnEndpointPatch {
                    split_tunnel: Some(true),
                    max_connections: Some(600),
                    ..ClientVpnEndpointPatch::default()
                }),
            })
            .unwrap(),
        );
        assert!(v.endpoint.split_tunnel);
        assert_eq!(v.warnings.len(), 1, "pool < 2 × 600: {v:?}");
        // A file that does not check out is refused, nothing changes.
        let before = m.config().clone();
        let e = m
            .handle(Request::ModifyClientVpnEndpoint {
                id: "cvpn-1".into(),
                changes: Box::new(ClientVpnEndpointPatch {
                    server_private_key_file: Some(dir.path().join("absent.key")),
                    ..ClientVpnEndpointPatch::default()
                }),
            })
            .unwrap_err();
        assert_eq!(
            e.errors[0].field,
            "client_vpn_endpoints[cvpn-1].server_private_key_file"
        );
        assert_eq!(m.config(), &before);
        m.handle(Request::RevokeClientVpnIngress {
            endpoint_id: "cvpn-1".into(),
            destination: dst("10.2.9.0/24"),
        })
        .unwrap();
        let e = m
            .handle(Request::RevokeClientVpnIngress {
                endpoint_id: "cvpn-1".into(),
                destination: dst("10.2.9.0/24"),
            })
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);

        // Restart: the store has every acknowledged change.
        let config = m.config().clone();
        drop(m);
        let path = dir.path().join("vpnd.toml");
        let (mut m, from) = Manager::start(
            &crate::config::ConfigStore::new(&path),
            crate::dataplane::InMemoryDataplane::new(),
            fill(),
        )
        .unwrap();
        assert!(matches!(from, super::super::Loaded::Store(_)));
        assert_eq!(m.config(), &config);
        assert!(m.take_warnings().is_empty());
        let ep = &m.config().client_vpn_endpoints[0];
        assert_eq!(ep.authorization_rules.len(), 1);
        assert_eq!(ep.routes.len(), 2);
        assert!(ep.split_tunnel);

        // Export, show, terminate, delete.
        let Response::ClientVpnConfig { text, .. } = m
            .handle(Request::ExportClientVpnConfig {
                endpoint_id: "cvpn-1".into(),
            })
            .unwrap()
        else {
            panic!()
        };
        assert!(text.contains("\nremote 198.51.100.10 443\n"), "{text}");
        let Response::ClientVpnConnections { connections } = m
            .handle(Request::ShowClientVpnConnections { endpoint_id: None })
            .unwrap()
        else {
            panic!()
        };
        assert!(connections.is_empty());
        let c = ClientVpnConnection {
            endpoint_id: "cvpn-1".into(),
            connection_id: "cvpn-connection-1".into(),
            common_name: "alice".into(),
            client_address: "192.168.100.2".parse().unwrap(),
            public_address: "203.0.113.9:50000".parse().unwrap(),
            bytes_in: 1,
            bytes_out: 2,
            since_ms: 3,
        };
        m.set_client_vpn_connections(vec![c.clone()]);
        let e = m
            .handle(Request::TerminateClientVpnConnections {
                endpoint_id: "cvpn-1".into(),
                connection_id: Some("cvpn-connection-9".into()),
                common_name: None,
            })
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
        let r = m
            .handle(Request::TerminateClientVpnConnections {
                endpoint_id: "cvpn-1".into(),
                connection_id: None,
                common_name: Some("alice".into()),
            })
            .unwrap();
        assert!(
            matches!(r, Response::ClientVpnTerminated { ref connections, .. } if connections.len() == 1)
        );
        assert_eq!(m.take_client_vpn_terminations(), vec![c]);
        // A file that went away is a warning at the next start.
        std::fs::remove_file(&ep_files.tls_crypt_key_file).unwrap();
        drop(m);
        let (mut m, _) = Manager::start(
            &crate::config::ConfigStore::new(&path),
            crate::dataplane::InMemoryDataplane::new(),
            fill(),
        )
        .unwrap();
        let w = m.take_warnings();
        assert!(
            w.len() == 1 && w[0].contains("client_vpn_endpoints[cvpn-1].tls_crypt_key_file"),
            "{w:?}"
        );
        m.handle(Request::DeleteClientVpnEndpoint {
            id: "cvpn-1".into(),
        })
        .unwrap();
        assert!(on_disk(&dir).client_vpn_endpoints.is_empty());
        m.handle(Request::DeleteConnection {
            id: "vpn-branch1".into(),
        })
        .unwrap();
    }
}
