//! The control core in virtual time (conventions §12 e): the appliance's
//! [`Core`] against a customer gateway made of the IKE engine
//! ([`TunnelSet`], initiating) and a BGP [`Session`], joined by in-memory
//! datagrams and "TCP" links. Nothing here sleeps or reads the clock
//! beyond the starting instant: a test's minutes run in milliseconds.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::*;
use crate::api::{ErrorCode, Request, Response};
use crate::bgp::{Advert, Direction, PeerConfig, Session};
use crate::config::{ApplianceConfig, ConfigStore, TunnelOptionsPatch, VpnConnection};
use crate::dataplane::{
    DataplaneStats, DynamicRoute, InMemoryDataplane, RouteDelta, RouteEntry, SaInfo,
};
use crate::logs::IkePhaseState;
use crate::manager::Fill;

/// The appliance: gateway, customer gateways, no connection yet.
const BASE: &str = r#"
[gateway]
id = "tgw-lab"
kind = "transit-gateway"
asn = 64512
outside_addresses = ["198.51.100.10", "198.51.100.11"]
local_networks = ["10.2.0.0/16"]

[dataplane]
worker_lcores = [1]

[[dataplane.ports]]
name = "outside"
device = "net_null0"
role = "outside"

[[dataplane.ports]]
name = "inside"
device = "net_null1"
role = "inside"

[management]
socket_path = "/nonexistent/vpnd.sock"

[metrics]
enabled = false

[[customer_gateways]]
id = "cgw-a"
ip_address = "203.0.113.20"
bgp_asn = 65000

[[customer_gateways]]
id = "cgw-b"
ip_address = "203.0.113.30"
bgp_asn = 65000
"#;

/// A dynamic connection of ours to `cgw`, tunnel 0 on `inside`.
fn connection(id: &str, cgw: &str, inside0: &str, inside1: &str) -> String {
    let psk = id.replace('-', "_");
    format!(
        r#"
[[connections]]
id = "{id}"
customer_gateway_id = "{cgw}"
target = "tgw-lab"
routing = "dynamic"

[[connections.tunnels]]
outside_ip_address = "198.51.100.10"
inside_ipv4_cidr = "{inside0}"
pre_shared_key = "Lab.key_for_{psk}_0"

[[connections.tunnels]]
outside_ip_address = "198.51.100.11"
inside_ipv4_cidr = "{inside1}"
pre_shared_key = "Lab.key_for_{psk}_1"
"#
    )
}

/// The customer gateway's side of connection `id`'s tunnel 0: it
/// initiates (startup action start).
fn peer_config(id: &str, local: &str, inside0: &str) -> String {
    let psk = id.replace('-', "_");
    format!(
        r#"
[gateway]
id = "cgw-side"
asn = 65000
outside_addresses = ["{local}"]

[dataplane]
worker_lcores = [1]
ports = []

[[customer_gateways]]
id = "appliance"
ip_address = "198.51.100.10"
bgp_asn = 64512

[[connections]]
id = "{id}"
customer_gateway_id = "appliance"
target = "cgw-side"
routing = "dynamic"

[[connections.tunnels]]
outside_ip_address = "{local}"
inside_ipv4_cidr = "{inside0}"
pre_shared_key = "Lab.key_for_{psk}_0"
startup_action = "start"

# Not run by this peer (no key).
[[connections.tunnels]]
outside_ip_address = "{local}"
"#
    )
}

fn parse_connection(text: &str) -> VpnConnection {
    let c = ApplianceConfig::from_toml_str(&format!("{BASE}{text}")).unwrap();
    c.connections.into_iter().next().unwrap()
}

fn fill() -> Fill {
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    Box::new(move |buf: &mut [u8]| {
        for b in buf {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            *b = s.to_le_bytes()[0];
        }
    })
}

/// The in-memory dataplane, with worker acknowledgements that can be lost:
/// while `lost_acks` > 0, an SA install fails as a stalled worker's does.
#[derive(Debug, Default)]
struct Workers {
    inner: InMemoryDataplane,
    lost_acks: usize,
    installs: usize,
    polls: u64,
    /// Reports the next poll hands over.
    reports: Vec<DataplaneEvent>,
}

impl Dataplane for Workers {
    fn apply(&mut self, config: &ApplianceConfig) {
        self.inner.apply(config);
    }
    fn apply_change(&mut self, config: &ApplianceConfig, change: &crate::config::Change) {
        self.inner.apply_change(config, change);
    }
    fn tunnel_state(&self, key: &TunnelKey) -> TunnelRuntimeState {
        self.inner.tunnel_state(key)
    }
    fn tunnel_id(&self, key: &TunnelKey) -> Option<fib::TunnelId> {
        self.inner.tunnel_id(key)
    }
    fn sas(&self) -> Vec<SaInfo> {
        self.inner.sas()
    }
    fn dynamic_routes(&self) -> Vec<RouteEntry> {
        self.inner.dynamic_routes()
    }
    fn set_dynamic_routes(&mut self, routes: Vec<DynamicRoute>) {
        self.inner.set_dynamic_routes(routes);
    }
    fn update_dynamic_routes(&mut self, delta: &RouteDelta, all: &[DynamicRoute]) {
        self.inner.update_dynamic_routes(delta, all);
    }
    fn stats(&self) -> DataplaneStats {
        self.inner.stats()
    }
    fn set_tunnel_state(&mut self, key: TunnelKey, state: TunnelRuntimeState) {
        Dataplane::set_tunnel_state(&mut self.inner, key, state);
    }
    fn install_child_sa(
        &mut self,
        key: &TunnelKey,
        pair: &ChildSaPair,
    ) -> Result<(), DataplaneError> {
        if self.lost_acks > 0 {
            self.lost_acks -= 1;
            return Err(DataplaneError::Timeout {
                what: "add SA".to_owned(),
                timeout_ms: 200,
            });
        }
        self.installs += 1;
        self.inner.install_child_sa(key, pair)
    }
    fn add_child_inbound(&mut self, key: &TunnelKey, sa: &SaConfig) -> Result<(), DataplaneError> {
        self.inner.add_child_inbound(key, sa)
    }
    fn remove_child_inbound(&mut self, key: &TunnelKey, spi: u32) -> Result<(), DataplaneError> {
        self.inner.remove_child_inbound(key, spi)
    }
    fn remove_child_sa(&mut self, key: &TunnelKey) -> Result<(), DataplaneError> {
        self.inner.remove_child_sa(key)
    }
    fn poll(&mut self) {
        self.polls += 1;
    }
    fn poll_events(&mut self) -> Vec<DataplaneEvent> {
        std::mem::take(&mut self.reports)
    }
}

/// What the customer gateway's IKE engine writes (it has no dataplane).
#[derive(Debug, Default)]
struct PeerSink {
    states: BTreeMap<TunnelKey, TunnelRuntimeState>,
}

impl TunnelSink for PeerSink {
    fn install_child_sa(&mut self, _: &TunnelKey, _: &ChildSaPair) -> Result<(), DataplaneError> {
        Ok(())
    }
    fn remove_child_sa(&mut self, _: &TunnelKey) -> Result<(), DataplaneError> {
        Ok(())
    }
    fn add_child_inbound(&mut self, _: &TunnelKey, _: &SaConfig) -> Result<(), DataplaneError> {
        Ok(())
    }
    fn remove_child_inbound(&mut self, _: &TunnelKey, _: u32) -> Result<(), DataplaneError> {
        Ok(())
    }
    fn tunnel_state(&self, key: &TunnelKey) -> TunnelRuntimeState {
        self.states.get(key).cloned().unwrap_or_default()
    }
    fn set_tunnel_state(&mut self, key: TunnelKey, state: TunnelRuntimeState) {
        self.states.insert(key, state);
    }
    fn record_log(&mut self, _: LogEntry) {}
}

/// The customer gateway's BGP speaker on one tunnel.
struct PeerBgp {
    session: Session,
    /// Our inside address (the connection's second host).
    addr: IpAddr,
    /// The appliance's (first host).
    appliance: IpAddr,
    /// Open links: the core's connection id → ours.
    links: BTreeMap<ConnId, ConnId>,
    next: u64,
}

impl PeerBgp {
    fn new(now: Instant, appliance: &str, addr: &str, prefix: &str) -> Self {
        let (appliance, addr): (IpAddr, IpAddr) =
            (appliance.parse().unwrap(), addr.parse().unwrap());
        let mut cfg = PeerConfig::new(65000, 64512, addr, appliance);
        cfg.connected = vec![
            format!("{appliance}/30")
                .parse::<ipnet::IpNet>()
                .unwrap()
                .trunc(),
        ];
        let mut session = Session::new(cfg);
        session.set_advertised(
            now,
            [Advert {
                prefix: prefix.parse().unwrap(),
                med: None,
                prepend: 0,
                communities: Vec::new(),
            }],
        );
        session.handle_start(now);
        Self {
            session,
            addr,
            appliance,
            links: BTreeMap::new(),
            next: 1,
        }
    }

    fn ours(&self, theirs: ConnId) -> Option<ConnId> {
        self.links
            .iter()
            .find(|(_, o)| **o == theirs)
            .map(|(c, _)| *c)
    }
}

/// The appliance and one customer gateway (IKE for the tunnels it runs,
/// BGP on each), in virtual time.
struct Lab {
    now: Instant,
    unix_ms: u64,
    core: Core<Workers>,
    peer_ike: TunnelSet,
    peer_sink: PeerSink,
    /// BGP peers by the appliance's inside address.
    peer_bgp: BTreeMap<IpAddr, PeerBgp>,
    replies: Vec<(u64, Result<Response, ApiError>)>,
    /// While set, BGP connections are refused and bytes lost.
    bgp_cut: bool,
    /// While set, IKE datagrams are lost both ways (the peer froze).
    ike_cut: bool,
    /// The customer gateway's configuration per connection.
    peer_cfg: BTreeMap<String, ApplianceConfig>,
    /// IKE datagrams crossed, both ways.
    datagrams: usize,
    _dir: tempfile::TempDir,
}

impl Lab {
    fn new(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vpnd.toml");
        std::fs::write(&path, format!("{BASE}{extra}")).unwrap();
        let (manager, _) =
            Manager::start(&ConfigStore::new(&path), Workers::default(), fill()).unwrap();
        let now = Instant::now();
        let mut lab = Self {
            now,
            unix_ms: 1_767_225_600_000,
            core: Core::new(manager),
            peer_ike: TunnelSet::new(),
            peer_sink: PeerSink::default(),
            peer_bgp: BTreeMap::new(),
            replies: Vec::new(),
            bgp_cut: false,
            ike_cut: false,
            peer_cfg: BTreeMap::new(),
            datagrams: 0,
            _dir: dir,
        };
        let at = lab.at();
        lab.core.start(at);
        lab.pump();
        lab
    }

    fn at(&self) -> Now {
        Now {
            instant: self.now,
            unix_ms: self.unix_ms,
        }
    }

    /// The customer gateway runs its side of connection `id`'s tunnel 0
    /// from `local`, and a BGP session advertising `prefix`.
    fn peer_runs(&mut self, id: &str, local: &str, inside: &str, prefix: &str) {
        let cfg = ApplianceConfig::from_toml_str(&peer_config(id, local, inside)).unwrap();
        let (mut specs, _) = tunnel_specs(&cfg);
        // Keep the other connections' tunnels the peer already runs.
        let (others, _) = tunnel_specs(&self.peer_cfgs(id));
        specs.extend(others);
        let at = self.at();
        self.peer_ike
            .reconcile(at, specs, Vec::new(), &mut self.peer_sink);
        self.peer_cfg.insert(id.to_owned(), cfg);
        let net: ipnet::Ipv4Net = inside.parse().unwrap();
        let mut hosts = net.hosts();
        let (ours, theirs) = (hosts.next().unwrap(), hosts.next().unwrap());
        self.peer_bgp.insert(
            IpAddr::V4(ours),
            PeerBgp::new(self.now, &ours.to_string(), &theirs.to_string(), prefix),
        );
        self.pump();
    }

    fn api(&mut self, token: u64, request: Request) -> Result<Response, ApiError> {
        let at = self.at();
        self.core.handle(at, Event::Api { token, request });
        self.pump();
        let i = self
            .replies
            .iter()
            .position(|(t, _)| *t == token)
            .expect("a reply");
        self.replies.remove(i).1
    }

    /// Move everything in flight until nothing moves.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut progress = false;
            let at = self.at();
            while let Some(t) = self.core.poll_transmit() {
                progress = true;
                self.datagrams += 1;
                if self.ike_cut {
                    continue;
                }
                self.peer_ike.handle_datagram(
                    self.now,
                    Datagram {
                        local: t.remote,
                        remote: t.local,
                        payload: &t.payload,
                    },
                );
            }
            while let Some(o) = self.core.poll_action() {
                progress = true;
                self.output(o);
            }
            if self.peer_ike.collect_events(self.now) {
                self.peer_ike.apply(at, &mut self.peer_sink);
            }
            while let Some(t) = self.peer_ike.poll_transmit() {
                progress = true;
                self.datagrams += 1;
                if self.ike_cut {
                    continue;
                }
                self.core.handle(
                    at,
                    Event::IkeDatagram(Datagram {
                        local: t.remote,
                        remote: t.local,
                        payload: &t.payload,
                    }),
                );
            }
            let addrs: Vec<IpAddr> = self.peer_bgp.keys().copied().collect();
            for a in addrs {
                progress |= self.peer_bgp_outputs(a);
            }
            if !progress {
                return;
            }
        }
        panic!("the lab does not settle");
    }

    fn output(&mut self, o: Output) {
        let at = self.at();
        match o {
            Output::Reply { token, result } => self.replies.push((token, result)),
            Output::Bgp(SpeakerAction::Connect { conn, local, .. }) => {
                let Some(p) = self.peer_bgp.get_mut(&local) else {
                    self.core.handle(at, Event::BgpClosed { conn });
                    return;
                };
                if self.bgp_cut {
                    self.core.handle(at, Event::BgpClosed { conn });
                    return;
                }
                let theirs = ConnId(p.next);
                p.next += 1;
                p.links.insert(conn, theirs);
                p.session
                    .handle_connected(self.now, theirs, Direction::Incoming);
                self.core.handle(at, Event::BgpConnected { conn });
            }
            Output::Bgp(SpeakerAction::Send { conn, data }) => {
                if self.bgp_cut {
                    return;
                }
                for p in self.peer_bgp.values_mut() {
                    if let Some(theirs) = p.links.get(&conn).copied() {
                        p.session.handle_data(self.now, theirs, &data);
                    }
                }
            }
            Output::Bgp(SpeakerAction::Close(conn)) => {
                for p in self.peer_bgp.values_mut() {
                    if let Some(theirs) = p.links.remove(&conn) {
                        p.session.handle_closed(self.now, theirs);
                    }
                }
            }
            Output::Bgp(_)
            | Output::IkeListen(_)
            | Output::KernelPort
            | Output::Log(_)
            | Output::Warn(_)
            | Output::Stopped => {}
        }
    }

    /// The customer gateway's BGP outputs for the session facing `a`.
    fn peer_bgp_outputs(&mut self, a: IpAddr) -> bool {
        let at = self.at();
        let mut progress = false;
        loop {
            let p = self.peer_bgp.get_mut(&a).unwrap();
            if let Some(t) = p.session.poll_transmit() {
                progress = true;
                if let Some(ours) = p.ours(t.conn)
                    && !self.bgp_cut
                {
                    self.core.handle(
                        at,
                        Event::BgpBytes {
                            conn: ours,
                            data: &t.data,
                        },
                    );
                }
                continue;
            }
            let Some(action) = p.session.poll_action() else {
                break;
            };
            progress = true;
            match action {
                crate::bgp::Action::Connect => {
                    let theirs = ConnId(p.next);
                    p.next += 1;
                    let (local, remote) = (
                        SocketAddr::new(p.appliance, 179),
                        SocketAddr::new(p.addr, 40_000),
                    );
                    let accepted = if self.bgp_cut {
                        None
                    } else {
                        self.core.handle_bgp_accept(at, local, remote)
                    };
                    let p = self.peer_bgp.get_mut(&a).unwrap();
                    match accepted {
                        Some(ours) => {
                            p.links.insert(ours, theirs);
                            p.session
                                .handle_connected(self.now, theirs, Direction::Outgoing);
                        }
                        None => p.session.handle_closed(self.now, theirs),
                    }
                }
                crate::bgp::Action::Close(theirs) => {
                    if let Some(ours) = p.ours(theirs) {
                        p.links.remove(&ours);
                        self.core.handle(at, Event::BgpClosed { conn: ours });
                    }
                }
                _ => {}
            }
        }
        let p = self.peer_bgp.get_mut(&a).unwrap();
        while p.session.poll_log().is_some() {}
        progress
    }

    /// Advance virtual time by `d` in steps, firing every due timer.
    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            let next = [
                self.core.poll_timeout(),
                self.peer_ike.poll_timeout(),
                self.peer_bgp
                    .values()
                    .filter_map(|p| p.session.poll_timeout())
                    .min(),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(end)
            .clamp(self.now + Duration::from_millis(1), end);
            self.unix_ms += u64::try_from((next - self.now).as_millis()).unwrap();
            self.now = next;
            let at = self.at();
            if self.core.poll_timeout().is_some_and(|t| t <= self.now) {
                self.core.handle(at, Event::Timeout);
            }
            if self.peer_ike.poll_timeout().is_some_and(|t| t <= self.now) {
                self.peer_ike.handle_timeout(self.now);
            }
            for p in self.peer_bgp.values_mut() {
                if p.session.poll_timeout().is_some_and(|t| t <= self.now) {
                    p.session.handle_timeout(self.now);
                }
            }
            self.pump();
        }
    }

    /// Run until `done` holds (checked after every step), at most `limit`.
    fn run_until(&mut self, limit: Duration, done: impl Fn(&Self) -> bool) -> Duration {
        let start = self.now;
        while !done(self) {
            assert!(
                self.now - start < limit,
                "not done within {limit:?} of virtual time"
            );
            self.run_for(Duration::from_millis(50));
        }
        self.now - start
    }

    fn state(&self, id: &str, tunnel: usize) -> TunnelRuntimeState {
        self.core
            .manager()
            .dataplane()
            .tunnel_state(&key(id, tunnel))
    }

    fn fib(&self) -> Vec<(String, Vec<TunnelKey>)> {
        self.core
            .manager()
            .dataplane()
            .inner
            .routes()
            .iter()
            .map(|r| (r.prefix.to_string(), r.tunnels.clone()))
            .collect()
    }

    fn spis(&self, id: &str) -> Vec<u32> {
        self.core
            .manager()
            .dataplane()
            .sas()
            .iter()
            .filter(|s| s.connection_id == id)
            .map(|s| s.spi)
            .collect()
    }

    fn peer_cfgs(&self, except: &str) -> ApplianceConfig {
        let mut all: Option<ApplianceConfig> = None;
        for (id, c) in &self.peer_cfg {
            if id == except {
                continue;
            }
            match &mut all {
                None => all = Some(c.clone()),
                Some(a) => a.connections.extend(c.connections.iter().cloned()),
            }
        }
        all.unwrap_or_else(|| {
            ApplianceConfig::from_toml_str(&peer_config("none", "203.0.113.99", "169.254.99.0/30"))
                .map(|mut c| {
                    c.connections.clear();
                    c
                })
                .unwrap()
        })
    }
}

fn key(id: &str, tunnel: usize) -> TunnelKey {
    TunnelKey {
        connection_id: id.to_owned(),
        tunnel,
    }
}

fn bgp_up(lab: &Lab, id: &str) -> bool {
    lab.state(id, 0).bgp_state.as_deref() == Some("Established")
}

fn create(lab: &mut Lab, token: u64, id: &str, cgw: &str, inside0: &str, inside1: &str) {
    let c = parse_connection(&connection(id, cgw, inside0, inside1));
    let r = lab.api(
        token,
        Request::CreateConnection {
            connection: Box::new(c),
        },
    );
    assert!(r.is_ok(), "{r:?}");
}

/// The whole path in virtual time: a connection created through the API
/// → IKE with the customer gateway (which initiates) → the Child SA
/// installed in the dataplane (the worker acknowledges) → the tunnel's BGP
/// session starts on IPsec up, reaches Established → the peer's prefix is
/// selected by the RIB and published to the FIB through the tunnel; the
/// tunnel is UP.
#[test]
fn a_config_change_brings_a_tunnel_through_ike_and_bgp_to_a_fib_route() {
    let mut lab = Lab::new("");
    lab.peer_runs("vpn-a", "203.0.113.20", "169.254.21.0/30", "10.66.0.0/16");
    assert!(lab.fib().is_empty());
    create(
        &mut lab,
        1,
        "vpn-a",
        "cgw-a",
        "169.254.21.0/30",
        "169.254.22.0/30",
    );
    let took = lab.run_until(Duration::from_secs(120), |l| !l.fib().is_empty());
    let st = lab.state("vpn-a", 0);
    assert_eq!(st.ike_phase2_state, IkePhaseState::Established);
    assert_eq!(st.bgp_state.as_deref(), Some("Established"));
    assert_eq!(
        st.up_down(crate::config::RoutingType::Dynamic),
        crate::dataplane::TunnelUpDown::Up
    );
    assert_eq!(lab.spis("vpn-a").len(), 2, "inbound and outbound SA");
    assert_eq!(
        lab.fib(),
        [("10.66.0.0/16".to_owned(), vec![key("vpn-a", 0)])]
    );
    assert!(lab.datagrams >= 4, "IKE_SA_INIT and IKE_AUTH both ways");
    // One number for the tunnel: the RIB's handle is the dataplane's.
    let k = key("vpn-a", 0);
    let id = lab.core.speaker().tunnel_id(&k);
    assert!(id.is_some());
    assert_eq!(id, lab.core.manager().dataplane().inner.tunnel_id(&k));
    assert_eq!(
        lab.core.speaker().tunnel_id(&key("vpn-a", 1)),
        lab.core
            .manager()
            .dataplane()
            .inner
            .tunnel_id(&key("vpn-a", 1))
    );
    // Virtual time: the peer's IKE retransmission (the connection did not
    // exist at its first IKE_SA_INIT) and BGP's timers, not wall time.
    assert!(took < Duration::from_secs(120), "{took:?}");
    // `show bgp` is live from the speaker.
    let Ok(Response::Bgp { neighbors }) = lab.api(
        2,
        Request::ShowBgp {
            connection_id: None,
        },
    ) else {
        panic!("show bgp");
    };
    let states: Vec<&str> = neighbors.iter().map(|n| n.state.as_str()).collect();
    assert_eq!(states, ["Established", "Idle"], "tunnel 1 has no IPsec");
}

/// A worker that does not acknowledge the SA install in time: the install
/// fails, the tunnel stays DOWN with no route, and IKE retries after
/// [`crate::ike::tunnels`]' install retry through the core's timer table
/// (no other event comes); then the pair is in, BGP comes up and the
/// route reaches the FIB.
#[test]
fn a_lost_worker_ack_is_retried_on_the_timer_and_the_route_follows() {
    let mut lab = Lab::new("");
    lab.core.manager_mut().dataplane_mut().lost_acks = 1;
    lab.peer_runs("vpn-a", "203.0.113.20", "169.254.21.0/30", "10.66.0.0/16");
    create(
        &mut lab,
        1,
        "vpn-a",
        "cgw-a",
        "169.254.21.0/30",
        "169.254.22.0/30",
    );
    lab.run_until(Duration::from_secs(120), |l| {
        l.state("vpn-a", 0).ike_phase1_state == IkePhaseState::Established
    });
    let dp = lab.core.manager().dataplane();
    assert_eq!(
        (dp.lost_acks, dp.installs),
        (0, 0),
        "the one install failed"
    );
    assert_ne!(
        lab.state("vpn-a", 0).ike_phase2_state,
        IkePhaseState::Established
    );
    assert!(lab.fib().is_empty());
    let failed_at = lab.now;
    lab.run_until(Duration::from_secs(60), |l| !l.fib().is_empty());
    assert!(
        lab.now - failed_at >= Duration::from_secs(1),
        "retried after 1 s"
    );
    assert_eq!(lab.core.manager().dataplane().installs, 1);
    let Ok(Response::Logs { entries }) = lab.api(
        2,
        Request::Logs {
            connection_id: Some("vpn-a".to_owned()),
            lines: Some(100),
        },
    ) else {
        panic!("logs");
    };
    let text = format!("{entries:?}");
    assert!(
        text.contains("cannot be installed (retrying in 1 s)"),
        "{text}"
    );
    assert!(text.contains("established and installed"), "{text}");
}

/// A BGP flap while the configuration changes: the sessions' connections
/// drop and are refused while a second connection is created and the
/// first one's other tunnel is modified. The first tunnel's route leaves
/// the FIB at once (no polling); its IKE SA is not touched (the changes
/// reconcile only what they name: same SPIs); after the flap both
/// sessions come up and both prefixes are in the FIB.
#[test]
fn a_bgp_flap_during_a_config_change() {
    let mut lab = Lab::new("");
    lab.peer_runs("vpn-a", "203.0.113.20", "169.254.21.0/30", "10.66.0.0/16");
    create(
        &mut lab,
        1,
        "vpn-a",
        "cgw-a",
        "169.254.21.0/30",
        "169.254.22.0/30",
    );
    lab.run_until(Duration::from_secs(120), |l| !l.fib().is_empty());
    let spis = lab.spis("vpn-a");

    // The flap: every BGP connection drops, new ones are refused.
    lab.bgp_cut = true;
    let at = lab.at();
    for p in lab.peer_bgp.values_mut() {
        for (ours, theirs) in std::mem::take(&mut p.links) {
            p.session.handle_closed(lab.now, theirs);
            lab.core.handle(at, Event::BgpClosed { conn: ours });
        }
    }
    lab.pump();
    assert!(lab.fib().is_empty(), "withdrawn with the session");
    assert!(!bgp_up(&lab, "vpn-a"));

    // Meanwhile: a second connection, and the first one's tunnel 1.
    lab.peer_runs("vpn-b", "203.0.113.30", "169.254.23.0/30", "10.77.0.0/16");
    create(
        &mut lab,
        2,
        "vpn-b",
        "cgw-b",
        "169.254.23.0/30",
        "169.254.24.0/30",
    );
    let r = lab.api(
        3,
        Request::ModifyTunnelOptions {
            connection_id: "vpn-a".to_owned(),
            tunnel: 1,
            options: Box::new(TunnelOptionsPatch {
                dpd_timeout_secs: Some(60),
                ..TunnelOptionsPatch::default()
            }),
        },
    );
    assert!(r.is_ok(), "{r:?}");
    lab.run_for(Duration::from_secs(5));
    assert!(lab.fib().is_empty(), "no session while the flap lasts");

    lab.bgp_cut = false;
    lab.run_until(Duration::from_secs(300), |l| l.fib().len() == 2);
    assert_eq!(
        lab.fib(),
        [
            ("10.66.0.0/16".to_owned(), vec![key("vpn-a", 0)]),
            ("10.77.0.0/16".to_owned(), vec![key("vpn-b", 0)]),
        ]
    );
    assert_eq!(lab.spis("vpn-a"), spis, "vpn-a's IKE was not restarted");
    assert!(bgp_up(&lab, "vpn-a") && bgp_up(&lab, "vpn-b"));
}

/// Deleting a connection closes its tunnels (DELETE to the peer), removes
/// its SAs and, through IPsec down, its route; the other connection's
/// SAs, session and route stay as they were. Routes reach the dataplane
/// as deltas: the deletion is one update of one prefix.
#[test]
fn deleting_a_connection_touches_only_its_tunnels_and_routes() {
    let mut lab = Lab::new("");
    lab.peer_runs("vpn-a", "203.0.113.20", "169.254.21.0/30", "10.66.0.0/16");
    lab.peer_runs("vpn-b", "203.0.113.30", "169.254.23.0/30", "10.77.0.0/16");
    create(
        &mut lab,
        1,
        "vpn-a",
        "cgw-a",
        "169.254.21.0/30",
        "169.254.22.0/30",
    );
    create(
        &mut lab,
        2,
        "vpn-b",
        "cgw-b",
        "169.254.23.0/30",
        "169.254.24.0/30",
    );
    lab.run_until(Duration::from_secs(120), |l| l.fib().len() == 2);
    let spis = lab.spis("vpn-a");
    let (updates, _) = lab.core.manager().dataplane().inner.route_updates();
    let sent = lab.datagrams;

    let r = lab.api(
        3,
        Request::DeleteConnection {
            id: "vpn-b".to_owned(),
        },
    );
    assert!(r.is_ok(), "{r:?}");
    assert!(lab.datagrams > sent, "DELETE sent to vpn-b's peer");
    assert!(lab.spis("vpn-b").is_empty());
    assert_eq!(
        lab.fib(),
        [("10.66.0.0/16".to_owned(), vec![key("vpn-a", 0)])]
    );
    let (after, _) = lab.core.manager().dataplane().inner.route_updates();
    assert_eq!(after, updates + 1, "one delta");
    lab.run_for(Duration::from_secs(30));
    assert_eq!(lab.spis("vpn-a"), spis);
    assert!(bgp_up(&lab, "vpn-a"));
    assert_eq!(lab.fib().len(), 1);
}

/// A change that fails validation changes nothing and reconciles nothing.
#[test]
fn a_refused_change_reconciles_nothing() {
    let mut lab = Lab::new("");
    let mut c = parse_connection(&connection(
        "vpn-a",
        "cgw-none",
        "169.254.21.0/30",
        "169.254.22.0/30",
    ));
    c.customer_gateway_id = "cgw-none".to_owned();
    let r = lab.api(
        1,
        Request::CreateConnection {
            connection: Box::new(c),
        },
    );
    assert!(matches!(r, Err(e) if e.code != ErrorCode::Internal));
    assert_eq!(lab.core.tunnels().len(), 0);
    assert!(lab.core.speaker().is_empty());
}

/// Shutdown: a DELETE to every peer, the tunnels DOWN, then `Stopped`
/// after the flush time, and changes are refused meanwhile.
#[test]
fn shutdown_sends_deletes_then_stops() {
    let mut lab = Lab::new("");
    lab.peer_runs("vpn-a", "203.0.113.20", "169.254.21.0/30", "10.66.0.0/16");
    create(
        &mut lab,
        1,
        "vpn-a",
        "cgw-a",
        "169.254.21.0/30",
        "169.254.22.0/30",
    );
    lab.run_until(Duration::from_secs(120), |l| !l.fib().is_empty());
    let at = lab.at();
    lab.core.handle(at, Event::Shutdown);
    let mut deletes = 0;
    while lab.core.poll_transmit().is_some() {
        deletes += 1;
    }
    assert!(deletes >= 1);
    assert!(lab.spis("vpn-a").is_empty());
    let r = {
        lab.core.handle(
            at,
            Event::Api {
                token: 9,
                request: Request::DeleteConnection {
                    id: "vpn-a".to_owned(),
                },
            },
        );
        let mut reply = None;
        let mut stopped = false;
        while let Some(o) = lab.core.poll_action() {
            match o {
                Output::Reply { result, .. } => reply = Some(result),
                Output::Stopped => stopped = true,
                _ => {}
            }
        }
        assert!(!stopped, "not before the flush");
        reply.unwrap()
    };
    assert!(r.is_err(), "changes refused while stopping");
    assert_eq!(lab.core.poll_timeout(), Some(at.instant + DELETE_FLUSH));
    let later = Now {
        instant: at.instant + DELETE_FLUSH,
        unix_ms: at.unix_ms + 300,
    };
    lab.core.handle(later, Event::Timeout);
    let mut stopped = false;
    while let Some(o) = lab.core.poll_action() {
        stopped |= matches!(o, Output::Stopped);
    }
    assert!(stopped);
    assert_eq!(lab.core.poll_timeout(), None, "nothing left to wake for");
}

/// The peer freezes: the core's timers alone (no datagram comes) run DPD
/// (liveness checks, retransmissions, the timeout) and take the tunnel
/// down; BGP hears IPsec down and the route leaves the FIB.
#[test]
fn dpd_takes_a_silent_peer_down_on_the_timers_alone() {
    let mut lab = Lab::new("");
    lab.peer_runs("vpn-a", "203.0.113.20", "169.254.21.0/30", "10.66.0.0/16");
    create(
        &mut lab,
        1,
        "vpn-a",
        "cgw-a",
        "169.254.21.0/30",
        "169.254.22.0/30",
    );
    lab.run_until(Duration::from_secs(120), |l| !l.fib().is_empty());
    // vpnd initiates from now on (the e2e lab's shape): a changed tunnel
    // runner, the same addresses.
    let r = lab.api(
        2,
        Request::ModifyTunnelOptions {
            connection_id: "vpn-a".to_owned(),
            tunnel: 0,
            options: Box::new(TunnelOptionsPatch {
                startup_action: Some(crate::config::StartupAction::Start),
                dpd_timeout_secs: Some(30),
                ..TunnelOptionsPatch::default()
            }),
        },
    );
    assert!(r.is_ok(), "{r:?}");
    lab.run_until(Duration::from_secs(120), |l| !l.fib().is_empty());
    lab.run_for(Duration::from_secs(5));
    lab.ike_cut = true;
    lab.bgp_cut = true;
    let took = lab.run_until(Duration::from_secs(600), |l| {
        l.state("vpn-a", 0).ike_phase1_state == IkePhaseState::Down
    });
    assert!(
        took >= Duration::from_secs(30),
        "not before the DPD idle time: {took:?}"
    );
    assert!(lab.fib().is_empty());
    assert!(lab.spis("vpn-a").is_empty());
}

/// What the workers report about queued commands is collected on the
/// dataplane timer: a refusal and a stalled worker become warnings, an
/// applied command nothing.
#[test]
fn worker_reports_are_collected_on_the_dataplane_timer() {
    let mut lab = Lab::new("");
    lab.core.manager_mut().dataplane_mut().reports = vec![
        DataplaneEvent::Applied {
            what: "routes".to_owned(),
            tunnel: None,
        },
        DataplaneEvent::Late {
            what: "SetOutbound 0x2001".to_owned(),
            tunnel: Some(key("vpn-a", 0)),
            after_ms: 250,
        },
        DataplaneEvent::Failed {
            what: "AddInbound 0x2002".to_owned(),
            tunnel: Some(key("vpn-a", 1)),
            reason: "SA table full".to_owned(),
        },
    ];
    let polls = lab.core.manager().dataplane().polls;
    let next = lab.core.poll_timeout().unwrap();
    assert!(next <= lab.now + DATAPLANE_POLL);
    let at = Now {
        instant: next,
        unix_ms: lab.unix_ms,
    };
    lab.core.handle(at, Event::Timeout);
    assert_eq!(lab.core.manager().dataplane().polls, polls + 1);
    let mut warnings = Vec::new();
    while let Some(o) = lab.core.poll_action() {
        if let Output::Warn(w) = o {
            warnings.push(w);
        }
    }
    assert_eq!(
        warnings,
        [
            "dataplane: SetOutbound 0x2001 of vpn-a/0 not applied after 250 ms (a worker is stalled)",
            "dataplane: a worker refused AddInbound 0x2002 of vpn-a/1: SA table full",
        ]
    );
}

/// Visibility (issue 21 item 6): once UP the tunnel shows what IKE
/// negotiated and one status change; a DELETE from the peer is a flap
/// with its reason; DOWN past the threshold raises `tunnel_unhealthy`;
/// the metrics carry the counters and the suite.
#[test]
fn negotiated_parameters_flaps_and_health_events() {
    let mut lab = Lab::new("");
    lab.peer_runs("vpn-a", "203.0.113.20", "169.254.21.0/30", "10.66.0.0/16");
    create(
        &mut lab,
        1,
        "vpn-a",
        "cgw-a",
        "169.254.21.0/30",
        "169.254.22.0/30",
    );
    lab.run_until(Duration::from_secs(120), |l| !l.fib().is_empty());
    let st = lab.state("vpn-a", 0);
    assert_eq!(st.status_changes, 1, "{st:?}");
    assert_eq!(st.flaps, 0);
    assert_eq!(
        st.last_status_change_reason.as_deref(),
        Some("BGP session Established")
    );
    assert_eq!(st.down_since_ms, None);
    let n = st.negotiated.clone().expect("negotiated parameters");
    assert_eq!(n.ike_version, crate::config::IkeVersion::Ikev2);
    // Ours wins: the strongest of the default lists both sides hold.
    assert_eq!(
        n.phase1_encryption,
        crate::config::EncryptionAlgorithm::Aes256Gcm16
    );
    assert_eq!(n.phase1_integrity, None, "GCM");
    assert_eq!(n.phase1_prf, crate::config::IntegrityAlgorithm::Sha2_256);
    assert_eq!(n.phase1_dh_group, 19);
    assert_eq!(n.phase1_lifetime_secs, 28_800);
    assert_eq!(
        n.phase2_encryption,
        Some(crate::config::EncryptionAlgorithm::Aes256Gcm16)
    );
    assert_eq!(n.phase2_pfs_dh_group, None, "first Child SA: no PFS");
    assert_eq!(n.phase2_lifetime_secs, Some(3_600));
    let rekey1 = n.phase1_rekey_at_ms.unwrap();
    let rekey2 = n.phase2_rekey_at_ms.unwrap();
    assert!(rekey2 > lab.unix_ms && rekey2 <= lab.unix_ms + 3_600_000);
    assert!(rekey1 > rekey2);
    // The API adds the seconds to rekey at the time of the reply.
    let Ok(Response::Tunnel {
        tunnel,
        health_events,
    }) = lab.api(
        2,
        Request::ShowTunnel {
            connection_id: "vpn-a".to_owned(),
            outside_ip_address: "198.51.100.10".parse().unwrap(),
        },
    )
    else {
        panic!("show tunnel");
    };
    assert_eq!(tunnel.tunnel, 0);
    assert_eq!(tunnel.negotiated.as_ref(), Some(&n));
    assert_eq!(
        tunnel.phase2_rekey_in_secs,
        Some((rekey2 - lab.unix_ms) / 1000)
    );
    assert!(health_events.is_empty());

    // The customer gateway deletes its IKE SA and goes silent.
    let at = lab.at();
    lab.peer_ike.close_all(at, &mut lab.peer_sink);
    lab.pump();
    lab.ike_cut = true;
    let st = lab.state("vpn-a", 0);
    assert_eq!((st.status_changes, st.flaps), (2, 1), "{st:?}");
    assert_eq!(
        st.last_status_change_reason.as_deref(),
        Some("IKE_SA down: DeletedByPeer")
    );
    assert_eq!(st.down_since_ms, Some(lab.unix_ms));
    assert_eq!(st.negotiated, None);

    // An hour DOWN: unhealthy, once.
    lab.run_for(Duration::from_secs(3_590));
    let events = |lab: &mut Lab| {
        let Ok(Response::HealthEvents { events }) = lab.api(
            3,
            Request::ShowHealthEvents {
                connection_id: Some("vpn-a".to_owned()),
            },
        ) else {
            panic!("show health events");
        };
        events
            .into_iter()
            .filter(|e| e.tunnel == 0)
            .collect::<Vec<_>>()
    };
    assert!(events(&mut lab).is_empty());
    lab.run_for(Duration::from_secs(20));
    let ev = events(&mut lab);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(
        ev[0].kind,
        crate::visibility::HealthEventKind::TunnelUnhealthy
    );
    lab.run_for(Duration::from_secs(60));
    assert_eq!(events(&mut lab).len(), 1);

    let m = lab.core.manager().render_metrics();
    assert!(
        m.contains(
            "vpn_tunnel_flaps_total{vpn_id=\"vpn-a\",tunnel_ip_address=\"198.51.100.10\"} 1"
        ),
        "{m}"
    );
    assert!(m.contains(
        "vpn_tunnel_state_changes_total{vpn_id=\"vpn-a\",tunnel_ip_address=\"198.51.100.10\"} 2"
    ));
    assert!(m.contains("vpn_health_events_total{kind=\"tunnel_unhealthy\"} "));
    assert!(
        !m.contains("vpn_tunnel_negotiated_info{vpn_id=\"vpn-a\""),
        "down"
    );
}

/// Keys from the key store (issue 21 item 9): a `SecretsManager`
/// connection created with inline keys keeps only their names (the keys
/// move to the store), comes up with them, shows and exports no key; a
/// rotation takes effect at once (the tunnel re-authenticates, and fails
/// while the customer gateway has the old key), and the tunnel comes back
/// when the customer gateway takes the new key.
#[test]
fn keys_from_the_store_and_rotation_reauthenticates_at_once() {
    let mut lab = Lab::new("");
    lab.peer_runs("vpn-a", "203.0.113.20", "169.254.21.0/30", "10.66.0.0/16");
    let mut c = parse_connection(&connection(
        "vpn-a",
        "cgw-a",
        "169.254.21.0/30",
        "169.254.22.0/30",
    ));
    c.pre_shared_key_storage = crate::config::PreSharedKeyStorage::SecretsManager;
    let r = lab.api(
        1,
        Request::CreateConnection {
            connection: Box::new(c),
        },
    );
    assert!(r.is_ok(), "{r:?}");
    lab.run_until(Duration::from_secs(120), |l| !l.fib().is_empty());
    let stored = &lab.core.manager().config().connections[0];
    assert!(stored.tunnels.iter().all(|t| t.pre_shared_key.is_none()));
    assert_eq!(
        stored.tunnels[0].pre_shared_key_ref.as_deref(),
        Some("vpn-a/0")
    );
    let Ok(Response::ConfigToml { toml }) = lab.api(2, Request::ConfigExport {}) else {
        panic!("export");
    };
    assert!(!toml.contains("Lab.key_for"), "{toml}");
    assert!(toml.contains("pre_shared_key_ref = \"vpn-a/0\""), "{toml}");
    let Ok(Response::Psks { secrets }) = lab.api(3, Request::PskList {}) else {
        panic!("list");
    };
    let listed: Vec<_> = secrets
        .iter()
        .map(|s| (s.name.as_str(), s.version, s.used_by.clone()))
        .collect();
    assert_eq!(
        listed,
        [
            ("vpn-a/0", 1, vec!["vpn-a/0".to_owned()]),
            ("vpn-a/1", 1, vec!["vpn-a/1".to_owned()])
        ]
    );
    let spis = lab.spis("vpn-a");

    // Rotation: the tunnel re-authenticates now, with a key the peer
    // does not have.
    let r = lab.api(
        4,
        Request::PskRotate {
            name: "vpn-a/0".to_owned(),
            pre_shared_key: Some(crate::config::PreSharedKey::new("Lab.rotated_0").unwrap()),
        },
    );
    let Ok(Response::Psk { secret }) = r else {
        panic!("{r:?}");
    };
    assert_eq!(secret.version, 2);
    lab.run_for(Duration::from_secs(20));
    assert!(lab.fib().is_empty(), "the old key is out of use");
    assert_ne!(lab.spis("vpn-a"), spis);
    assert_eq!(
        lab.state("vpn-a", 0).ike_phase2_state,
        IkePhaseState::Down,
        "the peer's AUTH with the old key fails"
    );

    // The customer gateway takes the new key.
    let cfg = ApplianceConfig::from_toml_str(
        &peer_config("vpn-a", "203.0.113.20", "169.254.21.0/30")
            .replace("Lab.key_for_vpn_a_0", "Lab.rotated_0"),
    )
    .unwrap();
    let (specs, _) = tunnel_specs(&cfg);
    let at = lab.at();
    lab.peer_ike
        .reconcile(at, specs, Vec::new(), &mut lab.peer_sink);
    lab.pump();
    lab.run_until(Duration::from_secs(180), |l| !l.fib().is_empty());
    assert_eq!(
        lab.state("vpn-a", 0).ike_phase2_state,
        IkePhaseState::Established
    );

    // A secret in use cannot be deleted; the device file has the key.
    let r = lab.api(
        5,
        Request::PskDelete {
            name: "vpn-a/0".to_owned(),
        },
    );
    assert_eq!(r.unwrap_err().code, ErrorCode::ValidationFailed);
    let Ok(Response::ConfigText { text, .. }) = lab.api(
        6,
        Request::ConfigDownload {
            connection_id: "vpn-a".to_owned(),
            device: crate::download::Device::Generic,
        },
    ) else {
        panic!("download");
    };
    assert!(text.contains("Lab.rotated_0"));
}
