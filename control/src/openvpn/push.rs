//! What the server pushes to a client (`PUSH_REPLY`), and the client
//! address pool it draws from (`topology subnet`: the server takes the
//! pool's first host, clients the rest).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::data::DataCipher;

/// The client-facing settings of the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushConfig {
    /// The client CIDR pool (AWS allows /22 ... /12; any /30 or larger works here).
    pub pool: Ipv4Net,
    /// Routes pushed for split tunnel.
    pub routes: Vec<Ipv4Net>,
    /// Full tunnel: `redirect-gateway def1`.
    pub redirect_gateway: bool,
    /// DNS servers (`dhcp-option DNS`).
    pub dns: Vec<Ipv4Addr>,
    /// Keepalive interval pushed as `ping`, seconds.
    pub ping_secs: u32,
    /// Pushed `ping-restart`, seconds; the server itself waits twice as long.
    pub ping_restart_secs: u32,
    /// Data ciphers in our order of preference.
    pub ciphers: Vec<DataCipher>,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            pool: Ipv4Net::new(Ipv4Addr::new(192, 168, 100, 0), 22).unwrap_or_default(),
            routes: Vec::new(),
            redirect_gateway: false,
            dns: Vec::new(),
            ping_secs: 10,
            ping_restart_secs: 60,
            ciphers: vec![DataCipher::Aes256Gcm, DataCipher::Aes128Gcm],
        }
    }
}

impl PushConfig {
    /// The server's own tunnel address: the pool's first host.
    #[must_use]
    pub fn server_address(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.pool.network()).wrapping_add(1))
    }

    /// Picks the data cipher: the first of ours the client lists.
    #[must_use]
    pub fn negotiate(&self, client_ciphers: &[String]) -> Option<DataCipher> {
        self.ciphers.iter().copied().find(|c| {
            client_ciphers
                .iter()
                .any(|n| n.eq_ignore_ascii_case(c.name()))
        })
    }

    /// The `PUSH_REPLY` control message (without the trailing NUL).
    #[must_use]
    pub fn reply(
        &self,
        client: Ipv4Addr,
        peer_id: u32,
        cipher: DataCipher,
        cc_exit: bool,
    ) -> String {
        let mut s = String::from("PUSH_REPLY");
        let _ = write!(s, ",route-gateway {}", self.server_address());
        s.push_str(",topology subnet");
        let _ = write!(
            s,
            ",ping {},ping-restart {}",
            self.ping_secs, self.ping_restart_secs
        );
        if self.redirect_gateway {
            s.push_str(",redirect-gateway def1");
        }
        for r in &self.routes {
            let _ = write!(s, ",route {} {}", r.network(), r.netmask());
        }
        for d in &self.dns {
            let _ = write!(s, ",dhcp-option DNS {d}");
        }
        let _ = write!(s, ",ifconfig {client} {}", self.pool.netmask());
        let _ = write!(s, ",peer-id {peer_id},cipher {}", cipher.name());
        s.push_str(",key-derivation tls-ekm");
        if cc_exit {
            s.push_str(",protocol-flags cc-exit tls-ekm");
        }
        s
    }
}

/// The client address pool.
#[derive(Debug, Clone)]
pub struct AddressPool {
    net: Ipv4Net,
    in_use: BTreeSet<Ipv4Addr>,
    next: u32,
}

impl AddressPool {
    /// A pool over `net`, keeping the network, the server's first host and
    /// the broadcast address out.
    #[must_use]
    pub fn new(net: Ipv4Net) -> Self {
        Self {
            net,
            in_use: BTreeSet::new(),
            next: 2,
        }
    }

    /// Addresses a pool of this size can hand out.
    #[must_use]
    pub fn capacity(&self) -> u32 {
        let hosts = 1u64 << (32 - u32::from(self.net.prefix_len()));
        u32::try_from(hosts.saturating_sub(3)).unwrap_or(u32::MAX)
    }

    /// Takes a free address (round robin, so a released one is not reused at once).
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let cap = self.capacity();
        let base = u32::from(self.net.network());
        for _ in 0..cap {
            let off = self.next;
            self.next = if self.next > cap { 2 } else { self.next + 1 };
            let a = Ipv4Addr::from(base.wrapping_add(off));
            if self.in_use.insert(a) {
                return Some(a);
            }
        }
        None
    }

    /// Returns an address.
    pub fn release(&mut self, a: Ipv4Addr) {
        self.in_use.remove(&a);
    }

    /// Addresses in use.
    #[must_use]
    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_skips_network_server_and_broadcast() {
        let mut p = AddressPool::new("10.8.0.0/29".parse().unwrap());
        assert_eq!(p.capacity(), 5);
        let got: Vec<_> = std::iter::from_fn(|| p.allocate()).collect();
        assert_eq!(
            got,
            (2..=6)
                .map(|i| Ipv4Addr::new(10, 8, 0, i))
                .collect::<Vec<_>>()
        );
        p.release(Ipv4Addr::new(10, 8, 0, 4));
        assert_eq!(p.allocate(), Some(Ipv4Addr::new(10, 8, 0, 4)));
        assert_eq!(p.allocate(), None);
        assert_eq!(p.in_use(), 5);
    }

    #[test]
    fn reply_text() {
        let c = PushConfig {
            pool: "10.8.0.0/24".parse().unwrap(),
            routes: vec!["10.2.0.0/16".parse().unwrap()],
            redirect_gateway: true,
            dns: vec![Ipv4Addr::new(10, 2, 0, 2)],
            ..PushConfig::default()
        };
        assert_eq!(
            c.reply(Ipv4Addr::new(10, 8, 0, 2), 3, DataCipher::Aes128Gcm, true),
            "PUSH_REPLY,route-gateway 10.8.0.1,topology subnet,ping 10,ping-restart 60,\
             redirect-gateway def1,route 10.2.0.0 255.255.0.0,dhcp-option DNS 10.2.0.2,\
             ifconfig 10.8.0.2 255.255.255.0,peer-id 3,cipher AES-128-GCM,\
             key-derivation tls-ekm,protocol-flags cc-exit tls-ekm"
        );
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            c.negotiate(&names(&["CHACHA20-POLY1305", "AES-128-GCM", "AES-256-GCM"])),
            Some(DataCipher::Aes256Gcm)
        );
        assert_eq!(c.negotiate(&names(&["BF-CBC"])), None);
    }
}
