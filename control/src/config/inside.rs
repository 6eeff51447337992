//! Inside tunnel addressing (spec §3.3, §10.4, §25.4).
//!
//! * IPv4: a /30 from 169.254.0.0/16, not one of the seven reserved /30s.
//!   The appliance uses the first host (network + 1), the customer gateway
//!   the second (network + 2) — every sample in the spec does so, and the
//!   Azure interop plan requires it.
//! * IPv6: a /126 from fd00::/8 (the spec's one mention of /128 is treated
//!   as the typo §24.4 says it is). The appliance uses the first address
//!   after the network address, the peer the second, as for IPv4.
//!
//! Allocation is deterministic: randomness is injected as a byte-filling
//! function, and [`next_free_inside_ipv4_cidr`] is a plain counter-style
//! scan for callers that want no randomness at all.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// The pool inside IPv4 CIDRs come from: 169.254.0.0/16.
pub const INSIDE_IPV4_POOL: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(169, 254, 0, 0), 16);

/// Prefix length of an inside IPv4 CIDR.
pub const INSIDE_IPV4_PREFIX_LEN: u8 = 30;

/// The pool inside IPv6 CIDRs come from: fd00::/8.
pub const INSIDE_IPV6_POOL: Ipv6Net =
    Ipv6Net::new_assert(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0), 8);

/// Prefix length of an inside IPv6 CIDR.
pub const INSIDE_IPV6_PREFIX_LEN: u8 = 126;

/// The /30s inside 169.254.0.0/16 that cannot be used (spec §3.3), as the
/// third and fourth octets of their network address.
const RESERVED_IPV4: [(u8, u8); 7] = [(0, 0), (1, 0), (2, 0), (3, 0), (4, 0), (5, 0), (169, 252)];

/// The reserved inside IPv4 /30s (spec §3.3).
#[must_use]
pub fn reserved_inside_ipv4_cidrs() -> [Ipv4Net; 7] {
    RESERVED_IPV4.map(|(c, d)| v4_30(Ipv4Addr::new(169, 254, c, d)))
}

/// The reserved blocks rendered for error messages.
pub(crate) fn reserved_rendered() -> String {
    reserved_inside_ipv4_cidrs()
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `net` is one of the reserved /30s.
#[must_use]
pub fn is_reserved_inside_ipv4_cidr(net: Ipv4Net) -> bool {
    let o = net.network().octets();
    net.prefix_len() == INSIDE_IPV4_PREFIX_LEN
        && o[..2] == [169, 254]
        && RESERVED_IPV4.contains(&(o[2], o[3]))
}

/// What is wrong with an inside IPv4 CIDR, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InsideV4Problem {
    /// Not a /30.
    PrefixLen,
    /// Host bits set.
    NotNetworkAddress,
    /// Outside 169.254.0.0/16.
    OutsidePool,
    /// One of the reserved /30s.
    Reserved,
}

pub(crate) fn check_inside_ipv4(net: Ipv4Net) -> Result<(), InsideV4Problem> {
    if net.prefix_len() != INSIDE_IPV4_PREFIX_LEN {
        return Err(InsideV4Problem::PrefixLen);
    }
    if net.addr() != net.network() {
        return Err(InsideV4Problem::NotNetworkAddress);
    }
    if !INSIDE_IPV4_POOL.contains(&net) {
        return Err(InsideV4Problem::OutsidePool);
    }
    if is_reserved_inside_ipv4_cidr(net) {
        return Err(InsideV4Problem::Reserved);
    }
    Ok(())
}

/// What is wrong with an inside IPv6 CIDR, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InsideV6Problem {
    /// Not a /126.
    PrefixLen,
    /// Host bits set.
    NotNetworkAddress,
    /// Outside fd00::/8.
    OutsidePool,
}

pub(crate) fn check_inside_ipv6(net: Ipv6Net) -> Result<(), InsideV6Problem> {
    if net.prefix_len() != INSIDE_IPV6_PREFIX_LEN {
        return Err(InsideV6Problem::PrefixLen);
    }
    if net.addr() != net.network() {
        return Err(InsideV6Problem::NotNetworkAddress);
    }
    if !INSIDE_IPV6_POOL.contains(&net) {
        return Err(InsideV6Problem::OutsidePool);
    }
    Ok(())
}

fn v4_30(a: Ipv4Addr) -> Ipv4Net {
    Ipv4Net::new_assert(a, INSIDE_IPV4_PREFIX_LEN)
}

fn v6_126(a: Ipv6Addr) -> Ipv6Net {
    Ipv6Net::new_assert(a, INSIDE_IPV6_PREFIX_LEN)
}

/// Number of /30 blocks in 169.254.0.0/16.
const V4_BLOCKS: u32 = 1 << (INSIDE_IPV4_PREFIX_LEN - 16);

fn v4_block(index: u32) -> Ipv4Net {
    let base = u32::from(INSIDE_IPV4_POOL.network());
    v4_30(Ipv4Addr::from(base + (index % V4_BLOCKS) * 4))
}

/// The appliance-side (first host) and peer-side (second host) addresses of
/// an inside IPv4 /30.
#[must_use]
pub fn inside_ipv4_hosts(net: Ipv4Net) -> (Ipv4Addr, Ipv4Addr) {
    let n = u32::from(net.network());
    (
        Ipv4Addr::from(n.wrapping_add(1)),
        Ipv4Addr::from(n.wrapping_add(2)),
    )
}

/// The appliance-side and peer-side addresses of an inside IPv6 /126.
#[must_use]
pub fn inside_ipv6_hosts(net: Ipv6Net) -> (Ipv6Addr, Ipv6Addr) {
    let n = u128::from(net.network());
    (
        Ipv6Addr::from(n.wrapping_add(1)),
        Ipv6Addr::from(n.wrapping_add(2)),
    )
}

/// The lowest free, non-reserved /30 strictly after `after` (or from the
/// start of the pool when `after` is `None`), wrapping around once.
///
/// This is the counter-style allocator: no randomness, the same inputs give
/// the same answer. `None` when the pool is exhausted.
#[must_use]
pub fn next_free_inside_ipv4_cidr(
    used: &HashSet<Ipv4Net>,
    after: Option<Ipv4Net>,
) -> Option<Ipv4Net> {
    let start = after.map_or(0, |a| {
        (u32::from(a.network()).wrapping_sub(u32::from(INSIDE_IPV4_POOL.network())) / 4)
            .wrapping_add(1)
    });
    scan_v4(used, start)
}

/// A free, non-reserved /30 chosen at a random place in the pool: two bytes
/// from `fill` pick a start block, and the scan moves up from there
/// (wrapping) to the first free block. `None` when the pool is exhausted.
#[must_use]
pub fn allocate_inside_ipv4_cidr(
    used: &HashSet<Ipv4Net>,
    fill: &mut dyn FnMut(&mut [u8]),
) -> Option<Ipv4Net> {
    allocate_inside_ipv4_cidr_with(&|n| used.contains(&n), fill)
}

/// [`allocate_inside_ipv4_cidr`] with the used blocks given by a test
/// (`used(n)` is true when `n` is taken), for callers without a set.
#[must_use]
pub fn allocate_inside_ipv4_cidr_with(
    used: &dyn Fn(Ipv4Net) -> bool,
    fill: &mut dyn FnMut(&mut [u8]),
) -> Option<Ipv4Net> {
    let mut b = [0u8; 2];
    fill(&mut b);
    scan_v4_with(used, u32::from(u16::from_be_bytes(b)))
}

fn scan_v4(used: &HashSet<Ipv4Net>, start: u32) -> Option<Ipv4Net> {
    scan_v4_with(&|n| used.contains(&n), start)
}

fn scan_v4_with(used: &dyn Fn(Ipv4Net) -> bool, start: u32) -> Option<Ipv4Net> {
    (0..V4_BLOCKS)
        .map(|i| v4_block(start.wrapping_add(i)))
        .find(|n| !is_reserved_inside_ipv4_cidr(*n) && !used(*n))
}

/// The lowest free /126 strictly after `after` (or from fd00::/126 when
/// `after` is `None`): the counter-style IPv6 allocator. `None` if the scan
/// of the next 4096 blocks finds nothing free or leaves fd00::/8.
#[must_use]
pub fn next_free_inside_ipv6_cidr(
    used: &HashSet<Ipv6Net>,
    after: Option<Ipv6Net>,
) -> Option<Ipv6Net> {
    let start = after.map_or(u128::from(INSIDE_IPV6_POOL.network()), |a| {
        u128::from(a.network()).wrapping_add(4)
    });
    (0..4096u128)
        .map(|i| v6_126(Ipv6Addr::from(start.wrapping_add(4 * i))))
        .take_while(|n| INSIDE_IPV6_POOL.contains(n))
        .find(|n| !used.contains(n))
}

/// A free /126 from fd00::/8 chosen at random: 15 bytes from `fill` give the
/// 118 free bits between /8 and /126. If that block is taken the next
/// blocks up are tried. `None` only if the 2^118-block pool were full.
#[must_use]
pub fn allocate_inside_ipv6_cidr(
    used: &HashSet<Ipv6Net>,
    fill: &mut dyn FnMut(&mut [u8]),
) -> Option<Ipv6Net> {
    allocate_inside_ipv6_cidr_with(&|n| used.contains(&n), fill)
}

/// [`allocate_inside_ipv6_cidr`] with the used blocks given by a test.
#[must_use]
pub fn allocate_inside_ipv6_cidr_with(
    used: &dyn Fn(Ipv6Net) -> bool,
    fill: &mut dyn FnMut(&mut [u8]),
) -> Option<Ipv6Net> {
    let mut b = [0u8; 16];
    fill(&mut b[1..]);
    b[0] = 0xfd;
    let mut n = u128::from_be_bytes(b) & !0b11;
    // Bounded probe; in practice the first candidate is free.
    for _ in 0..4096 {
        let net = v6_126(Ipv6Addr::from(n));
        if INSIDE_IPV6_POOL.contains(&net) && !used(net) {
            return Some(net);
        }
        n = n.wrapping_add(4);
        if !INSIDE_IPV6_POOL.contains(&Ipv6Addr::from(n)) {
            n = u128::from(INSIDE_IPV6_POOL.network());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_and_rules() {
        for r in reserved_inside_ipv4_cidrs() {
            assert_eq!(check_inside_ipv4(r), Err(InsideV4Problem::Reserved));
        }
        assert_eq!(check_inside_ipv4("169.254.6.0/30".parse().unwrap()), Ok(()));
        assert_eq!(
            check_inside_ipv4("169.254.169.248/30".parse().unwrap()),
            Ok(())
        );
        assert_eq!(
            check_inside_ipv4("169.254.255.252/30".parse().unwrap()),
            Ok(())
        );
        assert_eq!(
            check_inside_ipv4("169.254.10.0/29".parse().unwrap()),
            Err(InsideV4Problem::PrefixLen)
        );
        assert_eq!(
            check_inside_ipv4("169.254.10.1/30".parse().unwrap()),
            Err(InsideV4Problem::NotNetworkAddress)
        );
        assert_eq!(
            check_inside_ipv4("10.0.0.0/30".parse().unwrap()),
            Err(InsideV4Problem::OutsidePool)
        );
        assert_eq!(check_inside_ipv6("fd00::/126".parse().unwrap()), Ok(()));
        assert_eq!(
            check_inside_ipv6("fdff:ffff::fffc/126".parse().unwrap()),
            Ok(())
        );
        assert_eq!(
            check_inside_ipv6("fd00::/128".parse().unwrap()),
            Err(InsideV6Problem::PrefixLen)
        );
        assert_eq!(
            check_inside_ipv6("fd00::1/126".parse().unwrap()),
            Err(InsideV6Problem::NotNetworkAddress)
        );
        assert_eq!(
            check_inside_ipv6("fc00::/126".parse().unwrap()),
            Err(InsideV6Problem::OutsidePool)
        );
    }

    #[test]
    fn counter_allocation_skips_reserved_and_used() {
        let mut used = HashSet::new();
        let first = next_free_inside_ipv4_cidr(&used, None).unwrap();
        // 169.254.0.0/30 is reserved, 169.254.0.4/30 is not.
        assert_eq!(first, "169.254.0.4/30".parse().unwrap());
        used.insert(first);
        let second = next_free_inside_ipv4_cidr(&used, None).unwrap();
        assert_eq!(second, "169.254.0.8/30".parse().unwrap());
        assert_eq!(
            next_free_inside_ipv4_cidr(&used, Some(second)).unwrap(),
            "169.254.0.12/30".parse().unwrap()
        );
        // 169.254.1.0/30 is reserved.
        let after =
            next_free_inside_ipv4_cidr(&used, Some("169.254.0.252/30".parse().unwrap())).unwrap();
        assert_eq!(after, "169.254.1.4/30".parse().unwrap());
        // Reserved 169.254.169.252/30 is skipped.
        let after =
            next_free_inside_ipv4_cidr(&used, Some("169.254.169.248/30".parse().unwrap())).unwrap();
        assert_eq!(after, "169.254.170.0/30".parse().unwrap());
    }

    #[test]
    fn pool_exhaustion() {
        // Everything but three blocks in use: exactly those three come out,
        // then nothing.
        let free = ["169.254.7.8/30", "169.254.100.0/30", "169.254.255.252/30"]
            .map(|s| s.parse::<Ipv4Net>().unwrap());
        let mut used: HashSet<Ipv4Net> = (0..V4_BLOCKS)
            .map(v4_block)
            .filter(|n| !free.contains(n))
            .collect();
        let mut zero = |b: &mut [u8]| b.fill(0);
        let mut got = Vec::new();
        while let Some(n) = allocate_inside_ipv4_cidr(&used, &mut zero) {
            assert_eq!(check_inside_ipv4(n), Ok(()));
            assert!(used.insert(n));
            got.push(n);
        }
        assert_eq!(got, free);
        assert_eq!(next_free_inside_ipv4_cidr(&used, None), None);
    }

    #[test]
    fn random_allocation_is_deterministic_and_valid() {
        let used = HashSet::new();
        let mut a = |b: &mut [u8]| b.fill(0xab);
        let x = allocate_inside_ipv4_cidr(&used, &mut a).unwrap();
        assert_eq!(x, allocate_inside_ipv4_cidr(&used, &mut a).unwrap());
        assert_eq!(check_inside_ipv4(x), Ok(()));
        let y = allocate_inside_ipv6_cidr(&HashSet::new(), &mut a).unwrap();
        assert_eq!(check_inside_ipv6(y), Ok(()));
        let mut used6 = HashSet::new();
        used6.insert(y);
        let z = allocate_inside_ipv6_cidr(&used6, &mut a).unwrap();
        assert_ne!(y, z);
        assert_eq!(check_inside_ipv6(z), Ok(()));
        let mut ff = |b: &mut [u8]| b.fill(0xff);
        let top = allocate_inside_ipv6_cidr(&HashSet::new(), &mut ff).unwrap();
        assert_eq!(check_inside_ipv6(top), Ok(()));
    }

    #[test]
    fn counter_allocation_v6() {
        let mut used = HashSet::new();
        let a = next_free_inside_ipv6_cidr(&used, None).unwrap();
        assert_eq!(a, "fd00::/126".parse().unwrap());
        used.insert(a);
        assert_eq!(
            next_free_inside_ipv6_cidr(&used, None).unwrap(),
            "fd00::4/126".parse().unwrap()
        );
        assert_eq!(
            next_free_inside_ipv6_cidr(&used, Some(a)).unwrap(),
            "fd00::4/126".parse().unwrap()
        );
        let last = "fdff:ffff:ffff:ffff:ffff:ffff:ffff:fffc/126"
            .parse()
            .unwrap();
        assert_eq!(next_free_inside_ipv6_cidr(&used, Some(last)), None);
    }

    #[test]
    fn hosts() {
        let (a, c) = inside_ipv4_hosts("169.254.21.0/30".parse().unwrap());
        assert_eq!(
            (a, c),
            (
                Ipv4Addr::new(169, 254, 21, 1),
                Ipv4Addr::new(169, 254, 21, 2)
            )
        );
        let (a, c) = inside_ipv6_hosts("fd00::4/126".parse().unwrap());
        assert_eq!(
            (a.to_string(), c.to_string()),
            ("fd00::5".into(), "fd00::6".into())
        );
    }
}
