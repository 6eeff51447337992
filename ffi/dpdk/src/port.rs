//! Ethernet ports (ethdev) and their rx/tx queues.

use std::ffi::{CStr, CString};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::burst::Burst;
use crate::eal::Eal;
use crate::error::{Error, Result, check};
use crate::mempool::Mempool;

/// An ethdev port id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortId(pub u16);

impl std::fmt::Display for PortId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "port {}", self.0)
    }
}

/// Number of ports the EAL probed (virtual devices included).
#[must_use]
pub fn port_count(_eal: &Eal) -> u16 {
    // SAFETY: the EAL is initialised.
    unsafe { dpdk_sys::rte_eth_dev_count_avail() }
}

/// The port of a device by its name (`net_ring0`, `net_tap0`, …).
///
/// # Errors
/// [`Error::NoDevice`] when no port has that name.
pub fn port_by_name(_eal: &Eal, name: &str) -> Result<PortId> {
    let cname = CString::new(name).map_err(|_| Error::NulInArgument {
        op: "rte_eth_dev_get_port_by_name",
    })?;
    let mut id = 0u16;
    // SAFETY: cname is a valid C string and id a valid out-pointer.
    let rc = unsafe { dpdk_sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
    check("rte_eth_dev_get_port_by_name", rc)?;
    Ok(PortId(id))
}

/// The most rx and tx queues the driver of port `id` offers (for
/// `net_af_packet`, its `qpairs=` argument).
///
/// # Errors
/// What `rte_eth_dev_info_get` reported.
pub fn max_queues(_eal: &Eal, id: PortId) -> Result<(u16, u16)> {
    let info = dev_info(id)?;
    Ok((info.max_rx_queues, info.max_tx_queues))
}

/// How to set up a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    /// Receive queues (one per worker that polls the port).
    pub rx_queues: u16,
    /// Transmit queues (one per worker that sends on the port).
    pub tx_queues: u16,
    /// Descriptors per rx queue.
    pub rx_descriptors: u16,
    /// Descriptors per tx queue.
    pub tx_descriptors: u16,
    /// Spread flows over the rx queues by RSS hash (when there are several
    /// and the driver can).
    pub rss: bool,
    /// Hash functions to add to RSS where the driver offers them
    /// ([`RSS_ESP`]: the SPI on the outside port).
    pub rss_extra: u64,
    /// MTU to set, if any (drivers that cannot change it keep theirs).
    pub mtu: Option<u16>,
    /// Receive every frame regardless of destination MAC.
    pub promiscuous: bool,
    /// Use the driver's IPv4 header checksum offloads where it offers
    /// them ([`Port::offloads`]); false: all checksums in software.
    pub checksum_offload: bool,
}

/// The offloads a port was configured with (those the driver offers and
/// [`PortConfig`] asked for); the rest is done in software.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offloads {
    /// The NIC verifies received IPv4 header checksums
    /// (`RTE_ETH_RX_OFFLOAD_IPV4_CKSUM`; the verdict is in each mbuf).
    pub rx_ipv4_checksum: bool,
    /// The NIC fills the IPv4 header checksum of packets marked so
    /// (`RTE_ETH_TX_OFFLOAD_IPV4_CKSUM`).
    pub tx_ipv4_checksum: bool,
}

impl std::fmt::Display for Offloads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = [
            (self.rx_ipv4_checksum, "rx-ipv4-cksum"),
            (self.tx_ipv4_checksum, "tx-ipv4-cksum"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

/// `RTE_ETH_RX_OFFLOAD_IPV4_CKSUM` (`RTE_BIT64(1)`, a macro bindgen cannot
/// evaluate).
const RX_OFFLOAD_IPV4_CKSUM: u64 = 1 << 1;
/// `RTE_ETH_TX_OFFLOAD_IPV4_CKSUM` (`RTE_BIT64(1)`).
const TX_OFFLOAD_IPV4_CKSUM: u64 = 1 << 1;

impl Default for PortConfig {
    fn default() -> Self {
        Self {
            rx_queues: 1,
            tx_queues: 1,
            rx_descriptors: 1024,
            tx_descriptors: 1024,
            rss: true,
            rss_extra: 0,
            mtu: None,
            promiscuous: true,
            checksum_offload: true,
        }
    }
}

/// RSS over IPv4/IPv6 addresses and TCP/UDP ports (`RTE_ETH_RSS_IP |
/// RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP`; those are function-like macros
/// bindgen cannot evaluate, so the bits are spelled out from rte_ethdev.h).
const RSS_IP_TCP_UDP: u64 = (1 << 2) // IPV4
    | (1 << 3) // FRAG_IPV4
    | (1 << 4) // NONFRAG_IPV4_TCP
    | (1 << 5) // NONFRAG_IPV4_UDP
    | (1 << 7) // NONFRAG_IPV4_OTHER
    | (1 << 8) // IPV6
    | (1 << 9) // FRAG_IPV6
    | (1 << 10) // NONFRAG_IPV6_TCP
    | (1 << 11) // NONFRAG_IPV6_UDP
    | (1 << 13); // NONFRAG_IPV6_OTHER

/// RSS over the ESP SPI (`RTE_ETH_RSS_ESP`, bit 27 in DPDK 22.11 rte_ethdev.h), for
/// [`PortConfig::rss_extra`]; used only where the driver offers it.
pub const RSS_ESP: u64 = 1 << 27;

/// A configured ethdev port. Stopped and closed when the last handle (the
/// port or one of its queues) is dropped.
#[derive(Debug, Clone)]
pub struct Port {
    inner: Arc<PortInner>,
}

#[derive(Debug)]
struct PortInner {
    id: PortId,
    config: PortConfig,
    /// The RSS hash functions enabled (`rss_hf`; 0: the driver spreads
    /// packets over its queues by its own means, or there is one queue).
    rss_hf: u64,
    /// The checksum offloads enabled.
    offloads: Offloads,
    /// Bit q set: rx queue q was handed out (bits 0..63).
    rx_taken: AtomicU64,
    /// Bit q set: tx queue q was handed out.
    tx_taken: AtomicU64,
    /// The NUMA socket the device is attached to (`None`: the driver does
    /// not say, as for virtual devices).
    socket: Option<u32>,
    /// The pools the rx queues draw from (kept alive with the port).
    _pools: Vec<Mempool>,
    _eal: Eal,
}

/// Link state of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkStatus {
    /// Link up.
    pub up: bool,
    /// Speed in Mbit/s (0 when unknown).
    pub speed_mbps: u32,
}

/// Basic counters of a port (`rte_eth_stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PortStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets the NIC dropped for lack of rx descriptors.
    pub rx_missed: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// Receives that failed for lack of mbufs.
    pub rx_no_mbuf: u64,
}

impl Port {
    /// Configures port `id` with `config`, rx queues drawing from `pool`.
    /// The port is left stopped: call [`Port::start`].
    ///
    /// # Errors
    /// What `rte_eth_dev_configure` or the queue set-up reported, or
    /// [`Error::InvalidArgument`] for more than 64 queues or zero queues.
    pub fn configure(eal: &Eal, id: PortId, config: &PortConfig, pool: &Mempool) -> Result<Self> {
        let pools = vec![pool; usize::from(config.rx_queues)];
        Self::configure_per_queue(eal, id, config, &pools)
    }

    /// [`Port::configure`] with rx queue `q` drawing from `pools[q]`: on
    /// a box with several NUMA sockets each worker's queue takes its
    /// mbufs from a pool on the worker's socket.
    ///
    /// # Errors
    /// As [`Port::configure`]; [`Error::InvalidArgument`] when there is
    /// not one pool per rx queue.
    pub fn configure_per_queue(
        eal: &Eal,
        id: PortId,
        config: &PortConfig,
        pools: &[&Mempool],
    ) -> Result<Self> {
        if pools.len() != usize::from(config.rx_queues) {
            return Err(Error::InvalidArgument {
                op: "port configure: one mempool per rx queue",
            });
        }
        if config.rx_queues == 0
            || config.tx_queues == 0
            || config.rx_queues > 64
            || config.tx_queues > 64
        {
            return Err(Error::InvalidArgument {
                op: "port configure: queues must be 1..=64",
            });
        }
        let info = dev_info(id)?;
        let mut conf = dpdk_sys::rte_eth_conf::default();
        let mut rss_hf = 0;
        if config.rss && config.rx_queues > 1 {
            let hf = (RSS_IP_TCP_UDP | (config.rss_extra & RSS_ESP)) & info.flow_type_rss_offloads;
            if hf != 0 {
                conf.rxmode.mq_mode = dpdk_sys::rte_eth_rx_mq_mode::RTE_ETH_MQ_RX_RSS;
                conf.rx_adv_conf.rss_conf.rss_hf = hf;
                rss_hf = hf;
            }
        }
        let offloads = Offloads {
            rx_ipv4_checksum: config.checksum_offload
                && info.rx_offload_capa & RX_OFFLOAD_IPV4_CKSUM != 0,
            tx_ipv4_checksum: config.checksum_offload
                && info.tx_offload_capa & TX_OFFLOAD_IPV4_CKSUM != 0,
        };
        if offloads.rx_ipv4_checksum {
            conf.rxmode.offloads |= RX_OFFLOAD_IPV4_CKSUM;
        }
        if offloads.tx_ipv4_checksum {
            conf.txmode.offloads |= TX_OFFLOAD_IPV4_CKSUM;
        }
        // SAFETY: conf is a fully initialised rte_eth_conf that outlives
        // the call; the port id is checked by DPDK.
        let rc = unsafe {
            dpdk_sys::rte_eth_dev_configure(id.0, config.rx_queues, config.tx_queues, &conf)
        };
        check("rte_eth_dev_configure", rc)?;

        let mut rx_desc = config.rx_descriptors;
        let mut tx_desc = config.tx_descriptors;
        // SAFETY: valid port id and out-pointers.
        let rc =
            unsafe { dpdk_sys::rte_eth_dev_adjust_nb_rx_tx_desc(id.0, &mut rx_desc, &mut tx_desc) };
        check("rte_eth_dev_adjust_nb_rx_tx_desc", rc)?;
        // SAFETY: valid port id.
        let device_socket = u32::try_from(unsafe { dpdk_sys::rte_eth_dev_socket_id(id.0) }).ok();
        let socket = device_socket.unwrap_or(0);
        for (q, pool) in (0..config.rx_queues).zip(pools) {
            // SAFETY: the pool outlives the port (PortInner keeps a clone);
            // a null rxconf selects the driver defaults.
            let rc = unsafe {
                dpdk_sys::rte_eth_rx_queue_setup(
                    id.0,
                    q,
                    rx_desc,
                    socket,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            };
            check("rte_eth_rx_queue_setup", rc)?;
        }
        for q in 0..config.tx_queues {
            // SAFETY: valid port and queue; null txconf = driver defaults.
            let rc = unsafe {
                dpdk_sys::rte_eth_tx_queue_setup(id.0, q, tx_desc, socket, std::ptr::null())
            };
            check("rte_eth_tx_queue_setup", rc)?;
        }
        if let Some(mtu) = config.mtu {
            // SAFETY: valid port id.
            let rc = unsafe { dpdk_sys::rte_eth_dev_set_mtu(id.0, mtu) };
            match check("rte_eth_dev_set_mtu", rc) {
                Ok(_) | Err(Error::NotSupported { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if config.promiscuous {
            // SAFETY: valid port id. Drivers without the feature say so;
            // that is not an error for us.
            unsafe { dpdk_sys::rte_eth_promiscuous_enable(id.0) };
        }
        Ok(Self {
            inner: Arc::new(PortInner {
                id,
                config: config.clone(),
                rss_hf,
                offloads,
                rx_taken: AtomicU64::new(0),
                tx_taken: AtomicU64::new(0),
                socket: device_socket,
                _pools: pools.iter().map(|&p| p.clone()).collect(),
                _eal: eal.clone(),
            }),
        })
    }

    /// The port id.
    #[must_use]
    pub fn id(&self) -> PortId {
        self.inner.id
    }

    /// The configuration it was set up with.
    #[must_use]
    pub fn config(&self) -> &PortConfig {
        &self.inner.config
    }

    /// The RSS hash functions enabled at configuration (`rss_hf` bits; 0
    /// when RSS is off: one queue, or a driver without RSS that spreads
    /// packets by its own means, such as `net_af_packet`'s fanout hash).
    #[must_use]
    pub fn rss_hf(&self) -> u64 {
        self.inner.rss_hf
    }

    /// The checksum offloads the port was configured with.
    #[must_use]
    pub fn offloads(&self) -> Offloads {
        self.inner.offloads
    }

    /// Starts the port.
    ///
    /// # Errors
    /// What `rte_eth_dev_start` reported.
    pub fn start(&self) -> Result<()> {
        // SAFETY: the port is configured with all its queues set up.
        check("rte_eth_dev_start", unsafe {
            dpdk_sys::rte_eth_dev_start(self.inner.id.0)
        })
        .map(drop)
    }

    /// Stops the port (its queues keep their mbufs until it is closed).
    ///
    /// # Errors
    /// What `rte_eth_dev_stop` reported.
    pub fn stop(&self) -> Result<()> {
        // SAFETY: valid port id.
        check("rte_eth_dev_stop", unsafe {
            dpdk_sys::rte_eth_dev_stop(self.inner.id.0)
        })
        .map(drop)
    }

    /// Receive queue `q`, handed out once.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a queue the port does not have,
    /// [`Error::Busy`] for one already handed out.
    pub fn rx_queue(&self, q: u16) -> Result<RxQueue> {
        take_queue(&self.inner.rx_taken, q, self.inner.config.rx_queues)?;
        Ok(RxQueue {
            port: self.clone(),
            queue: q,
        })
    }

    /// Transmit queue `q`, handed out once.
    ///
    /// # Errors
    /// As for [`Port::rx_queue`].
    pub fn tx_queue(&self, q: u16) -> Result<TxQueue> {
        take_queue(&self.inner.tx_taken, q, self.inner.config.tx_queues)?;
        Ok(TxQueue {
            port: self.clone(),
            queue: q,
            dropped_full: 0,
        })
    }

    /// Link status, without waiting.
    ///
    /// # Errors
    /// The NUMA socket the device is attached to (`None` when the driver
    /// does not say, e.g. a virtual device).
    #[must_use]
    pub fn socket(&self) -> Option<u32> {
        self.inner.socket
    }

    /// What `rte_eth_link_get_nowait` reported.
    pub fn link(&self) -> Result<LinkStatus> {
        let mut link = dpdk_sys::rte_eth_link::default();
        // SAFETY: valid port id and out-pointer.
        let rc = unsafe { dpdk_sys::rte_eth_link_get_nowait(self.inner.id.0, &mut link) };
        check("rte_eth_link_get_nowait", rc)?;
        Ok(LinkStatus {
            up: u32::from(link.link_status()) == dpdk_sys::RTE_ETH_LINK_UP,
            speed_mbps: link.link_speed,
        })
    }

    /// The port's MAC address.
    ///
    /// # Errors
    /// What `rte_eth_macaddr_get` reported.
    pub fn mac(&self) -> Result<[u8; 6]> {
        let mut mac = dpdk_sys::rte_ether_addr::default();
        // SAFETY: valid port id and out-pointer.
        let rc = unsafe { dpdk_sys::rte_eth_macaddr_get(self.inner.id.0, &mut mac) };
        check("rte_eth_macaddr_get", rc)?;
        Ok(mac.addr_bytes)
    }

    /// Basic counters.
    ///
    /// # Errors
    /// What `rte_eth_stats_get` reported.
    pub fn stats(&self) -> Result<PortStats> {
        let mut s = dpdk_sys::rte_eth_stats::default();
        // SAFETY: valid port id and out-pointer.
        let rc = unsafe { dpdk_sys::rte_eth_stats_get(self.inner.id.0, &mut s) };
        check("rte_eth_stats_get", rc)?;
        Ok(PortStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_no_mbuf: s.rx_nombuf,
        })
    }

    /// The driver's extended counters, by name.
    ///
    /// # Errors
    /// What `rte_eth_xstats_get_names`/`rte_eth_xstats_get` reported.
    pub fn xstats(&self) -> Result<Vec<(String, u64)>> {
        let id = self.inner.id.0;
        // SAFETY: a null array with size 0 asks for the count.
        let n = unsafe { dpdk_sys::rte_eth_xstats_get_names(id, std::ptr::null_mut(), 0) };
        let n = check("rte_eth_xstats_get_names", n)?;
        let len = usize::try_from(n).unwrap_or(0);
        let mut names = vec![dpdk_sys::rte_eth_xstat_name::default(); len];
        let mut values = vec![dpdk_sys::rte_eth_xstat::default(); len];
        let cap = u32::try_from(len).unwrap_or(0);
        // SAFETY: both arrays hold `len` elements.
        let got = unsafe { dpdk_sys::rte_eth_xstats_get_names(id, names.as_mut_ptr(), cap) };
        check("rte_eth_xstats_get_names", got)?;
        // SAFETY: as above.
        let got = unsafe { dpdk_sys::rte_eth_xstats_get(id, values.as_mut_ptr(), cap) };
        let got = usize::try_from(check("rte_eth_xstats_get", got)?).unwrap_or(0);
        Ok(values
            .iter()
            .take(got.min(len))
            .filter_map(|v| {
                let name = names.get(usize::try_from(v.id).ok()?)?;
                // SAFETY: DPDK NUL-terminates names within the array.
                let name = unsafe { CStr::from_ptr(name.name.as_ptr()) };
                Some((name.to_string_lossy().into_owned(), v.value))
            })
            .collect())
    }
}

impl Drop for PortInner {
    fn drop(&mut self) {
        // SAFETY: no queue handle is left (each holds a Port clone), so no
        // lcore polls the port; stopping and closing releases its mbufs.
        unsafe {
            dpdk_sys::rte_eth_dev_stop(self.id.0);
            dpdk_sys::rte_eth_dev_close(self.id.0);
        }
    }
}

fn take_queue(taken: &AtomicU64, q: u16, count: u16) -> Result<()> {
    if q >= count {
        return Err(Error::InvalidArgument {
            op: "queue index beyond the configured queues",
        });
    }
    let bit = 1u64 << q;
    if taken.fetch_or(bit, Ordering::AcqRel) & bit != 0 {
        return Err(Error::Busy {
            op: "queue already handed out",
        });
    }
    Ok(())
}

fn dev_info(id: PortId) -> Result<dpdk_sys::rte_eth_dev_info> {
    let mut info = dpdk_sys::rte_eth_dev_info::default();
    // SAFETY: valid out-pointer; DPDK checks the port id.
    let rc = unsafe { dpdk_sys::rte_eth_dev_info_get(id.0, &mut info) };
    check("rte_eth_dev_info_get", rc)?;
    Ok(info)
}

/// One receive queue of a port, polled by one lcore.
#[derive(Debug)]
pub struct RxQueue {
    port: Port,
    queue: u16,
}

impl RxQueue {
    /// Receives into the burst's free slots; returns how many arrived.
    #[inline]
    pub fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        self.rx_burst_max(burst, crate::MAX_BURST)
    }

    /// Receives at most `max` packets into the burst's free slots.
    #[inline]
    pub fn rx_burst_max(&mut self, burst: &mut Burst, max: usize) -> usize {
        let (slots, spare) = burst.spare_raw();
        let spare = u16::try_from(spare.min(max)).unwrap_or(u16::MAX);
        // SAFETY: slots points at `spare` writable mbuf-pointer slots; this
        // queue is polled only through &mut self (one lcore).
        let n = unsafe { dpdk_sys::rte_eth_rx_burst_w(self.port.id().0, self.queue, slots, spare) };
        // SAFETY: DPDK wrote n valid mbufs that we now own.
        unsafe { burst.commit(usize::from(n)) };
        usize::from(n)
    }

    /// The port.
    #[must_use]
    pub fn port(&self) -> &Port {
        &self.port
    }

    /// The queue index.
    #[must_use]
    pub fn queue(&self) -> u16 {
        self.queue
    }
}

/// What one [`TxQueue::tx_burst`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[must_use]
pub struct TxStats {
    /// Packets the driver took.
    pub sent: usize,
    /// Packets freed because the tx ring was full.
    pub dropped: usize,
}

/// One transmit queue of a port, used by one lcore.
#[derive(Debug)]
pub struct TxQueue {
    port: Port,
    queue: u16,
    dropped_full: u64,
}

impl TxQueue {
    /// Sends the whole burst: the driver takes what fits in its ring, the
    /// rest is freed and counted ([`TxQueue::dropped_full`]). The burst is
    /// empty afterwards.
    #[inline]
    pub fn tx_burst(&mut self, burst: &mut Burst) -> TxStats {
        let (pkts, len) = burst.live_raw();
        let n16 = u16::try_from(len).unwrap_or(u16::MAX);
        // SAFETY: pkts holds `len` owned, valid mbufs; this queue is used
        // only through &mut self (one lcore).
        let sent = unsafe { dpdk_sys::rte_eth_tx_burst_w(self.port.id().0, self.queue, pkts, n16) };
        let sent = usize::from(sent);
        // SAFETY: the driver took ownership of exactly the first `sent`.
        unsafe { burst.forget_front(sent) };
        let dropped = burst.len();
        burst.clear();
        self.dropped_full += dropped as u64;
        TxStats { sent, dropped }
    }

    /// Sends what the driver takes now and keeps the rest in `burst`, in
    /// order, for the caller to retry (a traffic source that must not
    /// skip packets). Returns how many were sent.
    #[inline]
    pub fn tx_burst_retain(&mut self, burst: &mut Burst) -> usize {
        let (pkts, len) = burst.live_raw();
        let n16 = u16::try_from(len).unwrap_or(u16::MAX);
        // SAFETY: as in `tx_burst`: `len` owned, valid mbufs; one lcore.
        let sent = unsafe { dpdk_sys::rte_eth_tx_burst_w(self.port.id().0, self.queue, pkts, n16) };
        let sent = usize::from(sent);
        // SAFETY: the driver took ownership of exactly the first `sent`.
        unsafe { burst.forget_front(sent) };
        sent
    }

    /// Packets freed so far because the tx ring was full.
    #[must_use]
    pub fn dropped_full(&self) -> u64 {
        self.dropped_full
    }

    /// The port.
    #[must_use]
    pub fn port(&self) -> &Port {
        &self.port
    }

    /// The queue index.
    #[must_use]
    pub fn queue(&self) -> u16 {
        self.queue
    }
}
