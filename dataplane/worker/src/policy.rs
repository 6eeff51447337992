//! Per-tunnel rate policy: the spec's per-tunnel caps (§ 21.3, § 11.2,
//! § 4) enforced by a policer per tunnel and direction.
//!
//! | bandwidth option | bits/s | packets/s | spec |
//! |---|---|---|---|
//! | `standard` | 1,250,000,000 | 140,000 | § 3.11, § 21.3 |
//! | `large` | 5,000,000,000 | 400,000 | § 4, § 21.3 |
//! | concentrator site | 100,000,000 | 10,000 | § 11.2, § 21.3 |
//!
//! Choices the spec leaves open, made here and documented once:
//!
//! * **Both bytes and packets are capped**: the spec gives a bandwidth
//!   and a packets-per-second limit for every class; a packet passes only
//!   when both buckets hold enough tokens (it takes from neither
//!   otherwise).
//! * **Each direction is capped on its own** at the full figure: the spec
//!   says "per tunnel" with no direction; traffic to the peer (encap,
//!   inner packets routed to the tunnel) and from it (decap) have
//!   separate buckets.
//! * **Bytes are inner IP bytes**, the bytes `TunnelDataIn` /
//!   `TunnelDataOut` count (spec § 20.7), so a customer reading the
//!   metrics sees the cap. Outbound is policed before fragmentation and
//!   encryption (no sequence number or crypto spent on a dropped packet);
//!   inbound after the ICV check and anti-replay, so forged or replayed
//!   packets cannot use up a tunnel's tokens.
//! * **One tunnel on several workers**: each worker polices its share.
//!   The control core builds one [`RatePolicy`] per worker with
//!   [`RatePolicy::share`]`(caps, workers, index)`: rate and burst divided
//!   by the number of workers carrying the tunnel, the remainder spread
//!   one unit each over the first workers, so the shares add up to the
//!   cap exactly. With RSS spreading a tunnel's flows unevenly a tunnel
//!   can then be held below its cap (never above it); the alternative, a
//!   shared atomic bucket, costs a contended read-modify-write per packet.
//!
//! The bucket is integer-only and exact: tokens are kept in thousandths
//! of a unit, and `elapsed_ms × rate_per_sec` *is* that many thousandths,
//! so refilling loses nothing however often or rarely it runs. It runs on
//! the worker's clock ([`Worker::handle_time_ms`](crate::Worker::handle_time_ms)),
//! lazily when a packet of the tunnel arrives: nothing per tunnel runs
//! between bursts, nothing is allocated or locked per packet. The
//! runtime must advance that clock at least once a millisecond for the
//! bursts below to hold.

/// A tunnel's bandwidth class (spec § 3.11 `tunnel_bandwidth`, and the
/// concentrator's per-site tunnels of § 11.2).
///
/// The control plane maps its configuration to it: a tunnel of a
/// `GatewayKind::Concentrator` gateway is [`Bandwidth::ConcentratorSite`],
/// otherwise `TunnelBandwidth::Standard` / `Large` (control
/// `config::names`) map to [`Bandwidth::Standard`] / [`Bandwidth::Large`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bandwidth {
    /// `standard`: 1.25 Gbps, 140,000 packets/s.
    Standard,
    /// `large`: 5 Gbps, 400,000 packets/s.
    Large,
    /// A VPN concentrator's site tunnel: 100 Mbps, 10,000 packets/s.
    ConcentratorSite,
}

/// A tunnel's caps, per direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Caps {
    /// Bits per second.
    pub bits_per_sec: u64,
    /// Packets per second.
    pub packets_per_sec: u64,
}

/// The spec's caps for a bandwidth class (spec § 21.3).
#[must_use]
pub const fn caps_for(bandwidth: Bandwidth) -> Caps {
    match bandwidth {
        Bandwidth::Standard => Caps {
            bits_per_sec: 1_250_000_000,
            packets_per_sec: 140_000,
        },
        Bandwidth::Large => Caps {
            bits_per_sec: 5_000_000_000,
            packets_per_sec: 400_000,
        },
        Bandwidth::ConcentratorSite => Caps {
            bits_per_sec: 100_000_000,
            packets_per_sec: 10_000,
        },
    }
}

/// One dimension of a policy: a sustained rate and a burst, in units
/// (bytes or packets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    /// Units per second.
    pub per_sec: u64,
    /// Bucket size: how many units may pass at once after an idle period.
    pub burst: u64,
}

/// What one worker enforces for one tunnel, in each direction
/// separately. `None` leaves that dimension uncapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RatePolicy {
    /// Inner bytes.
    pub bytes: Option<Limit>,
    /// Packets.
    pub packets: Option<Limit>,
}

impl RatePolicy {
    /// Burst allowance: this much of the rate may pass at once.
    pub const BURST_MS: u64 = 10;
    /// Smallest byte burst a worker gets, so that a single maximum-size
    /// packet (jumbo inner packets are fragmented later) always fits.
    pub const MIN_BYTE_BURST: u64 = 16 * 1024;
    /// Smallest packet burst a worker gets.
    pub const MIN_PACKET_BURST: u64 = 8;

    /// The whole of `caps` on one worker, with a burst of
    /// [`Self::BURST_MS`] of traffic.
    #[must_use]
    pub fn from_caps(caps: Caps) -> Self {
        Self::share(caps, 1, 0)
    }

    /// Worker `index`'s share (of `workers` carrying the tunnel) of
    /// `caps`: rates and bursts divided by `workers`, the remainders
    /// spread one unit each over the lowest indices so the shares sum to
    /// the caps exactly; bursts are [`Self::BURST_MS`] of the share, at
    /// least [`Self::MIN_BYTE_BURST`] / [`Self::MIN_PACKET_BURST`].
    /// `workers` 0 is taken as 1.
    #[must_use]
    pub fn share(caps: Caps, workers: u32, index: u32) -> Self {
        let n = u64::from(workers.max(1));
        let i = u64::from(index);
        let part = |total: u64| total / n + u64::from(i < total % n);
        let bytes = part(caps.bits_per_sec / 8);
        let packets = part(caps.packets_per_sec);
        Self {
            bytes: Some(Limit {
                per_sec: bytes,
                burst: (bytes * Self::BURST_MS / 1000).max(Self::MIN_BYTE_BURST),
            }),
            packets: Some(Limit {
                per_sec: packets,
                burst: (packets * Self::BURST_MS / 1000).max(Self::MIN_PACKET_BURST),
            }),
        }
    }
}

/// Thousandths of a unit per unit.
const MILLI: u64 = 1000;

/// An integer token bucket on a millisecond clock. Tokens are kept in
/// thousandths of a unit, so `elapsed_ms × per_sec` adds exactly what
/// accrued (no rounding, no drift). Starts full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    per_sec: u64,
    capacity_milli: u64,
    tokens_milli: u64,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket for `limit` at time `now_ms`.
    #[must_use]
    pub fn new(limit: Limit, now_ms: u64) -> Self {
        let capacity_milli = limit.burst.saturating_mul(MILLI);
        Self {
            per_sec: limit.per_sec,
            capacity_milli,
            tokens_milli: capacity_milli,
            last_ms: now_ms,
        }
    }

    /// Whole units available now (after refilling to `now_ms`).
    pub fn available(&mut self, now_ms: u64) -> u64 {
        self.refill(now_ms);
        self.tokens_milli / MILLI
    }

    /// Adds what accrued since the last refill; a clock that goes back is
    /// ignored.
    #[inline]
    fn refill(&mut self, now_ms: u64) {
        if now_ms > self.last_ms {
            let add = (now_ms - self.last_ms).saturating_mul(self.per_sec);
            self.tokens_milli = self
                .tokens_milli
                .saturating_add(add)
                .min(self.capacity_milli);
            self.last_ms = now_ms;
        }
    }

    #[inline]
    fn has(&self, units: u64) -> bool {
        self.tokens_milli >= units.saturating_mul(MILLI)
    }

    #[inline]
    fn take_unchecked(&mut self, units: u64) {
        self.tokens_milli = self
            .tokens_milli
            .saturating_sub(units.saturating_mul(MILLI));
    }

    /// Takes `units` at `now_ms` if the bucket holds them.
    #[inline]
    pub fn try_take(&mut self, units: u64, now_ms: u64) -> bool {
        self.refill(now_ms);
        let ok = self.has(units);
        if ok {
            self.take_unchecked(units);
        }
        ok
    }
}

/// One direction's buckets.
#[derive(Debug, Clone, Copy, Default)]
struct DirectionPolicer {
    bytes: Option<TokenBucket>,
    packets: Option<TokenBucket>,
}

impl DirectionPolicer {
    fn new(policy: &RatePolicy, now_ms: u64) -> Self {
        Self {
            bytes: policy.bytes.map(|l| TokenBucket::new(l, now_ms)),
            packets: policy.packets.map(|l| TokenBucket::new(l, now_ms)),
        }
    }

    /// Whether a packet of `len` bytes conforms; takes its tokens if so,
    /// none otherwise.
    #[inline]
    fn admit(&mut self, len: u64, now_ms: u64) -> bool {
        if let Some(b) = &mut self.bytes {
            b.refill(now_ms);
            if !b.has(len) {
                return false;
            }
        }
        if let Some(p) = &mut self.packets
            && !p.try_take(1, now_ms)
        {
            return false;
        }
        if let Some(b) = &mut self.bytes {
            b.take_unchecked(len);
        }
        true
    }
}

/// A direction through a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    /// From the peer (decap).
    In = 0,
    /// To the peer (encap).
    Out = 1,
}

/// One tunnel's policer on one worker.
#[derive(Debug, Clone, Copy, Default)]
struct TunnelPolicer {
    dirs: Option<[DirectionPolicer; 2]>,
}

/// Every tunnel's policer on one worker, allocated once (one slot per
/// tunnel id below the worker's capacity).
#[derive(Debug)]
pub(crate) struct Policers {
    enabled: bool,
    tunnels: Box<[TunnelPolicer]>,
}

impl Policers {
    pub(crate) fn new(tunnels: usize) -> Self {
        Self {
            enabled: true,
            tunnels: vec![TunnelPolicer::default(); tunnels].into_boxed_slice(),
        }
    }

    pub(crate) fn set_enabled(&mut self, on: bool) {
        self.enabled = on;
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// Installs (or replaces, with full buckets) `tunnel`'s policy.
    pub(crate) fn set(&mut self, tunnel: usize, policy: &RatePolicy, now_ms: u64) -> bool {
        let Some(t) = self.tunnels.get_mut(tunnel) else {
            return false;
        };
        let d = DirectionPolicer::new(policy, now_ms);
        t.dirs = Some([d, d]);
        true
    }

    /// Removes `tunnel`'s policy; whether it had one.
    pub(crate) fn clear(&mut self, tunnel: usize) -> bool {
        self.tunnels
            .get_mut(tunnel)
            .and_then(|t| t.dirs.take())
            .is_some()
    }

    /// Whether `tunnel` has a policy.
    pub(crate) fn has(&self, tunnel: usize) -> bool {
        self.tunnels.get(tunnel).is_some_and(|t| t.dirs.is_some())
    }

    /// Prefetches `tunnel`'s policer (nothing when policing is off).
    #[inline]
    pub(crate) fn prefetch(&self, tunnel: usize) {
        if self.enabled
            && let Some(t) = self.tunnels.get(tunnel)
        {
            prefetch::read_all(t);
        }
    }

    /// Whether a packet of `len` inner bytes through `tunnel` in `dir`
    /// conforms (always, when policing is off or the tunnel has no
    /// policy).
    #[inline]
    pub(crate) fn admit(&mut self, tunnel: usize, dir: Dir, len: usize, now_ms: u64) -> bool {
        if !self.enabled {
            return true;
        }
        match self.tunnels.get_mut(tunnel).and_then(|t| t.dirs.as_mut()) {
            Some(dirs) => dirs[dir as usize].admit(u64::try_from(len).unwrap_or(u64::MAX), now_ms),
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_are_the_spec_figures() {
        assert_eq!(
            caps_for(Bandwidth::Standard),
            Caps {
                bits_per_sec: 1_250_000_000,
                packets_per_sec: 140_000
            }
        );
        assert_eq!(
            caps_for(Bandwidth::Large),
            Caps {
                bits_per_sec: 5_000_000_000,
                packets_per_sec: 400_000
            }
        );
        assert_eq!(
            caps_for(Bandwidth::ConcentratorSite),
            Caps {
                bits_per_sec: 100_000_000,
                packets_per_sec: 10_000
            }
        );
    }

    #[test]
    fn bucket_arithmetic_is_exact() {
        // 3 units/s: 1 ms adds 3 thousandths; after 333 ms there are 0.999
        // units, after 334 ms 1.002.
        let mut b = TokenBucket::new(
            Limit {
                per_sec: 3,
                burst: 2,
            },
            0,
        );
        assert!(b.try_take(2, 0));
        assert!(!b.try_take(1, 0));
        assert!(!b.try_take(1, 333));
        assert_eq!(b.tokens_milli, 999);
        assert!(b.try_take(1, 334));
        assert_eq!(b.tokens_milli, 2);
        // Refilling in 1 ms steps or in one step gives the same tokens.
        let mut stepwise = TokenBucket::new(
            Limit {
                per_sec: 7,
                burst: 100,
            },
            0,
        );
        let mut once = stepwise;
        assert!(stepwise.try_take(100, 0) && once.try_take(100, 0));
        for t in 1..=1000 {
            stepwise.refill(t);
        }
        once.refill(1000);
        assert_eq!(stepwise.tokens_milli, 7000);
        assert_eq!(once.tokens_milli, 7000);
        // Capped at the burst; a clock going back changes nothing.
        assert_eq!(once.available(1_000_000), 100);
        assert_eq!(once.available(5), 100);
        assert!(!once.try_take(101, 1_000_000));
        assert!(once.try_take(100, 1_000_000));
        assert_eq!(once.available(1_000_000), 0);
    }

    #[test]
    fn bucket_survives_huge_gaps_and_rates() {
        let mut b = TokenBucket::new(
            Limit {
                per_sec: u64::MAX,
                burst: u64::MAX,
            },
            0,
        );
        assert!(b.try_take(u64::MAX / MILLI, u64::MAX));
        assert!(b.available(u64::MAX) <= u64::MAX / MILLI);
    }

    #[test]
    fn burst_then_sustained_rate() {
        // 10,000 packets/s, burst 100: 100 pass at once, then 10 per ms.
        let mut d = DirectionPolicer::new(
            &RatePolicy {
                bytes: None,
                packets: Some(Limit {
                    per_sec: 10_000,
                    burst: 100,
                }),
            },
            0,
        );
        let passed = (0..1000).filter(|_| d.admit(64, 0)).count();
        assert_eq!(passed, 100);
        let passed = (0..1000).filter(|_| d.admit(64, 1)).count();
        assert_eq!(passed, 10);
        // Idle for a second: back to a full burst, not more.
        let passed = (0..1000).filter(|_| d.admit(64, 1001)).count();
        assert_eq!(passed, 100);
    }

    #[test]
    fn a_packet_needs_both_buckets_and_takes_from_neither_when_refused() {
        let mut d = DirectionPolicer::new(
            &RatePolicy {
                bytes: Some(Limit {
                    per_sec: 1000,
                    burst: 1500,
                }),
                packets: Some(Limit {
                    per_sec: 10,
                    burst: 2,
                }),
            },
            0,
        );
        // Too big for the byte bucket: refused, the packet token is kept.
        assert!(!d.admit(1501, 0));
        assert!(d.admit(1000, 0));
        assert!(d.admit(500, 0));
        // Bytes exhausted, packets exhausted.
        assert!(!d.admit(1, 0));
        // 100 ms later: 100 bytes and 1 packet.
        assert!(!d.admit(101, 100));
        assert!(d.admit(100, 100));
        assert!(!d.admit(0, 100));
    }

    #[test]
    fn shares_sum_to_the_cap() {
        let caps = Caps {
            bits_per_sec: 1_000_000_007 * 8,
            packets_per_sec: 140_003,
        };
        for workers in 1..=7u32 {
            let shares: Vec<_> = (0..workers)
                .map(|i| RatePolicy::share(caps, workers, i))
                .collect();
            let bytes: u64 = shares.iter().map(|s| s.bytes.unwrap().per_sec).sum();
            let packets: u64 = shares.iter().map(|s| s.packets.unwrap().per_sec).sum();
            assert_eq!(bytes, 1_000_000_007, "{workers}");
            assert_eq!(packets, 140_003, "{workers}");
        }
        let one = RatePolicy::from_caps(caps_for(Bandwidth::Standard));
        assert_eq!(
            one.bytes,
            Some(Limit {
                per_sec: 156_250_000,
                burst: 1_562_500
            })
        );
        assert_eq!(
            one.packets,
            Some(Limit {
                per_sec: 140_000,
                burst: 1400
            })
        );
        // Small shares keep a burst that fits a big packet.
        let tiny = RatePolicy::share(caps_for(Bandwidth::ConcentratorSite), 64, 0);
        assert_eq!(tiny.bytes.unwrap().burst, RatePolicy::MIN_BYTE_BURST);
        assert_eq!(tiny.packets.unwrap().burst, RatePolicy::MIN_PACKET_BURST);
    }

    /// Offered twice the cap for 10 s of virtual time in 1 ms ticks,
    /// with 1400-byte packets: what passes is the binding cap (bytes for
    /// standard and concentrator tunnels, packets for large ones) × time,
    /// within 1 % (the one initial burst included).
    #[test]
    fn long_run_rate_within_one_percent() {
        for bw in [
            Bandwidth::Standard,
            Bandwidth::Large,
            Bandwidth::ConcentratorSite,
        ] {
            let caps = caps_for(bw);
            let policy = RatePolicy::from_caps(caps);
            let mut d = DirectionPolicer::new(&policy, 0);
            let len = 1400u64;
            let offered_per_ms = 2 * caps.bits_per_sec / 8 / len / 1000 + 1;
            let mut bytes = 0u64;
            let mut packets = 0u64;
            let secs = 10;
            for ms in 1..=secs * 1000 {
                for _ in 0..offered_per_ms {
                    if d.admit(len, ms) {
                        bytes += len;
                        packets += 1;
                    }
                }
            }
            let expect_bytes = (caps.bits_per_sec / 8).min(caps.packets_per_sec * len) * secs;
            let rel = bytes.abs_diff(expect_bytes) as f64 / expect_bytes as f64;
            assert!(rel < 0.01, "{bw:?}: {bytes} vs {expect_bytes}");
            assert!(packets <= caps.packets_per_sec * secs + policy.packets.unwrap().burst);
        }
        // Small packets: the packet cap binds.
        let caps = caps_for(Bandwidth::Standard);
        let mut d = DirectionPolicer::new(&RatePolicy::from_caps(caps), 0);
        let mut packets = 0u64;
        for ms in 1..=10_000 {
            for _ in 0..300 {
                packets += u64::from(d.admit(64, ms));
            }
        }
        let expect = caps.packets_per_sec * 10;
        let rel = packets.abs_diff(expect) as f64 / expect as f64;
        assert!(rel < 0.01, "{packets} vs {expect}");
    }
}
