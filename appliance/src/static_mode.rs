//! Static-SA mode: SAs, addresses and routes from a TOML file, for running
//! the dataplane before (or without) IKE, and for benchmarks.
//!
//! ```toml
//! [ports]
//! outside = "net_af_packet0,iface=wan0"   # ESP/IKE side
//! inside  = "net_af_packet1,iface=lan0"   # VPC side
//!
//! [addresses]
//! outside = ["192.0.2.1"]
//! inside = ["198.51.100.1"]
//! outside_gateway_mac = "02:00:00:00:00:02"
//! inside_gateway_mac = "02:00:00:00:01:01"
//!
//! [[tunnels]]
//! id = 0
//! algorithm = "aes128gcm16"       # aes{128,256}gcm16 | aes{128,256}cbc-sha{1,256,384,512}
//! local = "192.0.2.1"
//! remote = "192.0.2.2"
//! nat_t = false
//! outbound = { spi = 4097, key = "hex…" }               # GCM: key || 4-byte salt
//! inbound  = { spi = 8194, key = "hex…", auth_key = "hex…" }
//!
//! [[routes]]
//! prefix = "203.0.113.0/24"
//! target = "tunnel:0"            # tunnel:N | inside | local | blackhole
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use dataplane::crypto::{EspAlgorithm, Integrity};
use dataplane::esp::SaConfig;
use dataplane::esp::sa::{DfPolicy, Direction, Lifetimes, NatT, TunnelEndpoints};
use fib::{FibBuilder, Target, TunnelId};
use ipnet::IpNet;
use serde::Deserialize;
use zeroize::Zeroizing;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    /// The DPDK devices.
    pub ports: Ports,
    /// Addresses and next hops.
    pub addresses: AddressConfig,
    /// Tunnels with their two SAs.
    #[serde(default)]
    pub tunnels: Vec<TunnelConfig>,
    /// Routes.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// DPDK device arguments of each port.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ports {
    /// The outside (ESP/IKE) port.
    pub outside: String,
    /// The inside (VPC) port.
    pub inside: String,
    /// The exception port into the kernel (`net_tap…`), if any.
    pub kernel: Option<String>,
}

/// Addresses and next hops.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressConfig {
    /// Our outside addresses.
    pub outside: Vec<IpAddr>,
    /// Addresses answered for on the inside port.
    #[serde(default)]
    pub inside: Vec<Ipv4Addr>,
    /// MAC of the outside next hop.
    pub outside_gateway_mac: String,
    /// MAC of the inside next hop.
    pub inside_gateway_mac: String,
}

/// One tunnel.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelConfig {
    /// Tunnel id (routes name it).
    pub id: u32,
    /// ESP algorithm.
    pub algorithm: String,
    /// Our outer address.
    pub local: IpAddr,
    /// The peer's outer address.
    pub remote: IpAddr,
    /// UDP-encapsulate ESP on port 4500.
    #[serde(default)]
    pub nat_t: bool,
    /// Anti-replay window (64–2048).
    #[serde(default = "default_window")]
    pub replay_window: u32,
    /// Our sending SA.
    pub outbound: SaKeys,
    /// Our receiving SA.
    pub inbound: SaKeys,
}

fn default_window() -> u32 {
    1024
}

/// SPI and keys of one SA.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaKeys {
    /// SPI.
    pub spi: u32,
    /// Encryption key in hex (GCM: key followed by the 4-byte salt).
    pub key: String,
    /// Integrity key in hex (CBC suites).
    #[serde(default)]
    pub auth_key: String,
}

/// One route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Destination prefix.
    pub prefix: IpNet,
    /// `tunnel:N`, `inside`, `local` or `blackhole`.
    pub target: String,
}

/// A static configuration that cannot be used, and where.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct StaticError {
    /// The file.
    pub path: String,
    /// What is wrong, naming the field.
    pub message: String,
}

impl StaticConfig {
    /// Reads and parses a file.
    ///
    /// # Errors
    /// [`StaticError`] naming the file and the problem.
    pub fn load(path: &Path) -> Result<Self, StaticError> {
        let err = |message: String| StaticError {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        toml::from_str(&text).map_err(|e| err(e.to_string()))
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
///
/// # Errors
/// A message naming the bad value.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(format!("MAC address {s:?} must have six hex bytes"));
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).map_err(|_| format!("MAC address {s:?}: bad byte {p:?}"))?;
    }
    Ok(mac)
}

/// Parses the algorithm names of the file.
///
/// # Errors
/// A message listing the accepted names.
pub fn parse_algorithm(s: &str) -> Result<EspAlgorithm, String> {
    let integrity = |i: &str| match i {
        "sha1" => Ok(Integrity::HmacSha1_96),
        "sha256" => Ok(Integrity::HmacSha256_128),
        "sha384" => Ok(Integrity::HmacSha384_192),
        "sha512" => Ok(Integrity::HmacSha512_256),
        _ => Err(()),
    };
    let alg = match s {
        "aes128gcm16" => Ok(EspAlgorithm::Aes128Gcm16),
        "aes256gcm16" => Ok(EspAlgorithm::Aes256Gcm16),
        _ => match s.split_once('-') {
            Some(("aes128cbc", i)) => integrity(i).map(EspAlgorithm::Aes128Cbc),
            Some(("aes256cbc", i)) => integrity(i).map(EspAlgorithm::Aes256Cbc),
            _ => Err(()),
        },
    };
    alg.map_err(|()| {
        format!(
            "unknown algorithm {s:?}: use aes128gcm16, aes256gcm16, or aes128cbc-/aes256cbc- \
             followed by sha1, sha256, sha384 or sha512"
        )
    })
}

fn hex(field: &str, s: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    if !s.len().is_multiple_of(2) {
        return Err(format!("{field}: odd number of hex digits"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(s.get(i..i + 2).unwrap_or("x"), 16)
                .map_err(|_| format!("{field}: not hex"))
        })
        .collect::<Result<Vec<u8>, String>>()
        .map(Zeroizing::new)
}

impl TunnelConfig {
    /// The cold SA records of both directions.
    ///
    /// # Errors
    /// A message naming the tunnel and the field.
    pub fn sa_configs(&self) -> Result<(SaConfig, SaConfig), String> {
        let ctx = |m: String| format!("tunnels[id={}]: {m}", self.id);
        let algorithm = parse_algorithm(&self.algorithm).map_err(ctx)?;
        let endpoints = match (self.local, self.remote) {
            (IpAddr::V4(local), IpAddr::V4(remote)) => TunnelEndpoints::V4 { local, remote },
            (IpAddr::V6(local), IpAddr::V6(remote)) => TunnelEndpoints::V6 { local, remote },
            _ => return Err(ctx("local and remote must be the same IP version".into())),
        };
        let make = |keys: &SaKeys, direction, name: &str| -> Result<SaConfig, String> {
            let enc_key = hex(&format!("{name}.key"), &keys.key).map_err(ctx)?;
            let auth_key = hex(&format!("{name}.auth_key"), &keys.auth_key).map_err(ctx)?;
            // The CBC IV generator's seed: any per-SA secret will do; derive
            // it from the key material so static files stay two keys long.
            let mut seed = [0u8; 16];
            for (i, b) in enc_key.iter().chain(auth_key.iter()).enumerate() {
                seed[i % 16] ^= b.rotate_left(u32::try_from(i % 7).unwrap_or(0));
            }
            Ok(SaConfig {
                spi: keys.spi,
                direction,
                algorithm,
                enc_key,
                auth_key,
                iv_seed: Zeroizing::new(seed),
                tunnel: endpoints,
                nat_t: self.nat_t.then_some(NatT {
                    local_port: 4500,
                    remote_port: 4500,
                }),
                esn: false,
                replay_window: self.replay_window,
                lifetimes: Lifetimes::default(),
                df: DfPolicy::CopyFromInner,
            })
        };
        Ok((
            make(&self.outbound, Direction::Outbound, "outbound")?,
            make(&self.inbound, Direction::Inbound, "inbound")?,
        ))
    }
}

/// Builds the forwarding table of the routes.
///
/// # Errors
/// A message naming the route.
pub fn build_fib(routes: &[RouteConfig]) -> Result<FibBuilder, String> {
    let mut b = FibBuilder::new();
    for r in routes {
        let target = match r.target.as_str() {
            "inside" => Target::Inside,
            "local" => Target::Local,
            "blackhole" => Target::Blackhole,
            t => match t.strip_prefix("tunnel:").map(str::parse::<u32>) {
                Some(Ok(id)) => Target::Tunnel(TunnelId(id)),
                _ => {
                    return Err(format!(
                        "routes[{}]: target {t:?} must be tunnel:N, inside, local or blackhole",
                        r.prefix
                    ));
                }
            },
        };
        b.insert(r.prefix, target)
            .map_err(|e| format!("routes[{}]: {e}", r.prefix))?;
    }
    Ok(b)
}

/// Our IPv6 outside addresses among `addrs`.
#[must_use]
pub fn v6_only(addrs: &[IpAddr]) -> Vec<Ipv6Addr> {
    addrs
        .iter()
        .filter_map(|a| match a {
            IpAddr::V6(a) => Some(*a),
            IpAddr::V4(_) => None,
        })
        .collect()
}

/// Our IPv4 outside addresses among `addrs`.
#[must_use]
pub fn v4_only(addrs: &[IpAddr]) -> Vec<Ipv4Addr> {
    addrs
        .iter()
        .filter_map(|a| match a {
            IpAddr::V4(a) => Some(*a),
            IpAddr::V6(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_bad_ones_are_explained() {
        assert_eq!(
            parse_algorithm("aes128gcm16"),
            Ok(EspAlgorithm::Aes128Gcm16)
        );
        assert_eq!(
            parse_algorithm("aes256cbc-sha384"),
            Ok(EspAlgorithm::Aes256Cbc(Integrity::HmacSha384_192))
        );
        assert!(
            parse_algorithm("des-md5")
                .unwrap_err()
                .contains("aes128gcm16")
        );
        assert_eq!(parse_mac("02:00:00:00:00:0a"), Ok([2, 0, 0, 0, 0, 10]));
        assert!(parse_mac("02:00:00").is_err());
        assert!(parse_mac("02:00:00:00:00:zz").is_err());
    }

    #[test]
    fn routes_and_keys_are_checked() {
        let bad = [RouteConfig {
            prefix: "10.0.0.0/8".parse().unwrap(),
            target: "tunnel:x".into(),
        }];
        assert!(build_fib(&bad).unwrap_err().contains("10.0.0.0/8"));
        let t = TunnelConfig {
            id: 3,
            algorithm: "aes128gcm16".into(),
            local: "192.0.2.1".parse().unwrap(),
            remote: "2001:db8::1".parse().unwrap(),
            nat_t: false,
            replay_window: 1024,
            outbound: SaKeys {
                spi: 4096,
                key: "00".repeat(20),
                auth_key: String::new(),
            },
            inbound: SaKeys {
                spi: 4097,
                key: "zz".into(),
                auth_key: String::new(),
            },
        };
        assert!(t.sa_configs().unwrap_err().contains("same IP version"));
    }
}
