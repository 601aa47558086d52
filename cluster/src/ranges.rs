//! Address arithmetic: a network's subnet cut into equal host ranges, the choice of a free
//! range, and the next free container address in a range.
//!
//! Address rule in a range: the network address and the broadcast address are never handed
//! out, and the first host address (`a.b.c.1` in `a.b.c.0/24`) is the range's gateway, kept
//! for the host's bridge (docker0's `--bip`, the CNI/IPAM gateway). Containers get the rest,
//! lowest free first.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Longest host prefix: a /30 still leaves one container address beside the gateway.
pub const MAX_HOST_PREFIX: u8 = 30;

/// Most ranges a subnet may be cut into (host prefix at most 16 bits longer than the subnet's),
/// so that choosing a range stays a short scan.
pub const MAX_RANGE_BITS: u8 = 16;

/// A subnet/host-prefix pair or a range that cannot be used, or is used up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The subnet has bits set below its prefix.
    #[error("subnet {given} has host bits set: use {network}")]
    HostBits {
        /// As given.
        given: Ipv4Net,
        /// With the host bits cleared.
        network: Ipv4Net,
    },
    /// The host prefix is shorter than the subnet's or longer than [`MAX_HOST_PREFIX`].
    #[error(
        "host prefix /{host_prefix} does not fit subnet {subnet}: use a length from /{} to /{MAX_HOST_PREFIX}",
        subnet.prefix_len()
    )]
    HostPrefix {
        /// The subnet.
        subnet: Ipv4Net,
        /// The host prefix length given.
        host_prefix: u8,
    },
    /// More than 2^[`MAX_RANGE_BITS`] ranges.
    #[error(
        "subnet {subnet} cut into /{host_prefix} ranges makes more than {} ranges: use a host prefix of at most /{}",
        1u32 << MAX_RANGE_BITS,
        subnet.prefix_len() + MAX_RANGE_BITS
    )]
    TooManyRanges {
        /// The subnet.
        subnet: Ipv4Net,
        /// The host prefix length given.
        host_prefix: u8,
    },
    /// Every range is claimed.
    #[error(
        "subnet {subnet} is full: all {ranges} /{host_prefix} ranges are claimed by other hosts; \
         release one with `dnetctl network leave` on a host that left, or create a network with a larger subnet"
    )]
    SubnetFull {
        /// The subnet.
        subnet: Ipv4Net,
        /// The host prefix length.
        host_prefix: u8,
        /// How many ranges it has.
        ranges: u32,
    },
    /// Every container address of a range is allocated.
    #[error("range {range} is full: all {addresses} container addresses are allocated; detach a container")]
    RangeFull {
        /// The range.
        range: Ipv4Net,
        /// How many container addresses it has.
        addresses: u32,
    },
}

/// Checks that `subnet` can be cut into `/host_prefix` ranges and returns how many there are.
pub fn check_plan(subnet: Ipv4Net, host_prefix: u8) -> Result<u32, PlanError> {
    if subnet.addr() != subnet.network() {
        return Err(PlanError::HostBits {
            given: subnet,
            network: subnet.trunc(),
        });
    }
    if host_prefix < subnet.prefix_len() || host_prefix > MAX_HOST_PREFIX {
        return Err(PlanError::HostPrefix {
            subnet,
            host_prefix,
        });
    }
    let bits = host_prefix - subnet.prefix_len();
    if bits > MAX_RANGE_BITS {
        return Err(PlanError::TooManyRanges {
            subnet,
            host_prefix,
        });
    }
    Ok(1u32 << bits)
}

/// The `i`-th range of `subnet` in address order (`i` below [`check_plan`]'s count).
pub fn nth_range(subnet: Ipv4Net, host_prefix: u8, i: u32) -> Ipv4Net {
    let size = 1u32 << (32 - host_prefix);
    let base = u32::from(subnet.network());
    Ipv4Net::new(Ipv4Addr::from(base + i * size), host_prefix).expect("host prefix checked")
}

/// Whether `range` is one of `subnet`'s `/host_prefix` ranges.
pub fn is_range_of(subnet: Ipv4Net, host_prefix: u8, range: Ipv4Net) -> bool {
    range.prefix_len() == host_prefix && range.addr() == range.network() && subnet.contains(&range)
}

/// Which range a host should hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeChoice {
    /// The host already holds this claim: keep it.
    Held(Ipv4Net),
    /// Claim this free range.
    Free(Ipv4Net),
}

/// Picks the range for `host` given the current `claims` (range → holder): the lowest range
/// it already holds; else `preferred` (the range it held before) if free; else the lowest
/// free range. Deterministic, so a retry after a lost race moves on predictably.
pub fn choose_range(
    subnet: Ipv4Net,
    host_prefix: u8,
    claims: &BTreeMap<Ipv4Net, String>,
    host: &str,
    preferred: Option<Ipv4Net>,
) -> Result<RangeChoice, PlanError> {
    let ranges = check_plan(subnet, host_prefix)?;
    if let Some((r, _)) = claims
        .iter()
        .find(|(r, h)| h.as_str() == host && is_range_of(subnet, host_prefix, **r))
    {
        return Ok(RangeChoice::Held(*r));
    }
    if let Some(p) = preferred {
        if is_range_of(subnet, host_prefix, p) && !claims.contains_key(&p) {
            return Ok(RangeChoice::Free(p));
        }
    }
    (0..ranges)
        .map(|i| nth_range(subnet, host_prefix, i))
        .find(|r| !claims.contains_key(r))
        .map(RangeChoice::Free)
        .ok_or(PlanError::SubnetFull {
            subnet,
            host_prefix,
            ranges,
        })
}

/// The range's gateway address (its first host address), kept for the host's bridge.
pub fn gateway(range: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(range.network()) + 1)
}

/// First and last container address of `range` (network, gateway and broadcast excluded).
fn container_bounds(range: Ipv4Net) -> (u32, u32) {
    (
        u32::from(range.network()) + 2,
        u32::from(range.broadcast()) - 1,
    )
}

/// How many container addresses `range` has.
pub fn container_addresses(range: Ipv4Net) -> u32 {
    let (lo, hi) = container_bounds(range);
    (hi + 1).saturating_sub(lo)
}

/// Whether `addr` may be handed to a container in `range`.
pub fn is_container_address(range: Ipv4Net, addr: Ipv4Addr) -> bool {
    let (lo, hi) = container_bounds(range);
    (lo..=hi).contains(&u32::from(addr))
}

/// The lowest container address of `range` not in `taken`.
pub fn next_free(range: Ipv4Net, taken: &BTreeSet<Ipv4Addr>) -> Result<Ipv4Addr, PlanError> {
    let (lo, hi) = container_bounds(range);
    (lo..=hi)
        .map(Ipv4Addr::from)
        .find(|a| !taken.contains(a))
        .ok_or(PlanError::RangeFull {
            range,
            addresses: container_addresses(range),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn plan_checks_name_the_fix() {
        assert_eq!(check_plan(net("10.77.0.0/16"), 24), Ok(256));
        assert_eq!(check_plan(net("10.77.0.0/24"), 24), Ok(1));
        let e = check_plan(net("10.77.1.0/16"), 24).unwrap_err();
        assert_eq!(
            e.to_string(),
            "subnet 10.77.1.0/16 has host bits set: use 10.77.0.0/16"
        );
        assert!(matches!(
            check_plan(net("10.77.0.0/16"), 8),
            Err(PlanError::HostPrefix { .. })
        ));
        assert!(matches!(
            check_plan(net("10.77.0.0/16"), 31),
            Err(PlanError::HostPrefix { .. })
        ));
        assert!(matches!(
            check_plan(net("10.0.0.0/8"), 25),
            Err(PlanError::TooManyRanges { .. })
        ));
    }

    #[test]
    fn ranges_are_cut_in_address_order() {
        let s = net("10.77.0.0/16");
        assert_eq!(nth_range(s, 24, 0), net("10.77.0.0/24"));
        assert_eq!(nth_range(s, 24, 255), net("10.77.255.0/24"));
        assert_eq!(nth_range(s, 26, 5), net("10.77.1.64/26"));
        assert!(is_range_of(s, 24, net("10.77.3.0/24")));
        assert!(!is_range_of(s, 24, net("10.78.3.0/24")));
        assert!(!is_range_of(s, 24, net("10.77.3.0/25")));
        assert!(!is_range_of(s, 24, net("10.77.3.7/24")));
    }

    #[test]
    fn choose_prefers_a_held_claim_then_the_previous_range_then_the_lowest() {
        let s = net("10.77.0.0/16");
        let mut claims = BTreeMap::new();
        claims.insert(net("10.77.0.0/24"), "a".to_string());
        claims.insert(net("10.77.2.0/24"), "b".to_string());
        assert_eq!(
            choose_range(s, 24, &claims, "b", None),
            Ok(RangeChoice::Held(net("10.77.2.0/24")))
        );
        assert_eq!(
            choose_range(s, 24, &claims, "c", None),
            Ok(RangeChoice::Free(net("10.77.1.0/24")))
        );
        assert_eq!(
            choose_range(s, 24, &claims, "c", Some(net("10.77.9.0/24"))),
            Ok(RangeChoice::Free(net("10.77.9.0/24")))
        );
        // A preferred range someone else holds, or one of another plan, is passed over.
        assert_eq!(
            choose_range(s, 24, &claims, "c", Some(net("10.77.2.0/24"))),
            Ok(RangeChoice::Free(net("10.77.1.0/24")))
        );
        assert_eq!(
            choose_range(s, 24, &claims, "c", Some(net("10.77.9.0/25"))),
            Ok(RangeChoice::Free(net("10.77.1.0/24")))
        );
    }

    #[test]
    fn a_claim_of_another_plan_is_not_held() {
        let s = net("10.77.0.0/16");
        let mut claims = BTreeMap::new();
        claims.insert(net("10.77.0.0/25"), "a".to_string());
        assert_eq!(
            choose_range(s, 24, &claims, "a", None),
            Ok(RangeChoice::Free(net("10.77.0.0/24")))
        );
    }

    #[test]
    fn a_full_subnet_names_the_subnet_and_its_range_count() {
        let s = net("10.77.0.0/23");
        let mut claims = BTreeMap::new();
        claims.insert(net("10.77.0.0/24"), "a".to_string());
        claims.insert(net("10.77.1.0/24"), "b".to_string());
        let e = choose_range(s, 24, &claims, "c", None).unwrap_err();
        assert_eq!(
            e,
            PlanError::SubnetFull {
                subnet: s,
                host_prefix: 24,
                ranges: 2
            }
        );
        assert!(e
            .to_string()
            .starts_with("subnet 10.77.0.0/23 is full: all 2 /24 ranges are claimed"));
    }

    #[test]
    fn container_addresses_skip_network_gateway_and_broadcast() {
        let r = net("10.77.3.0/24");
        assert_eq!(gateway(r), Ipv4Addr::new(10, 77, 3, 1));
        assert_eq!(container_addresses(r), 253);
        assert_eq!(
            next_free(r, &BTreeSet::new()),
            Ok(Ipv4Addr::new(10, 77, 3, 2))
        );
        for a in [0, 1, 255] {
            assert!(!is_container_address(r, Ipv4Addr::new(10, 77, 3, a)), "{a}");
        }
        assert!(is_container_address(r, Ipv4Addr::new(10, 77, 3, 254)));
        assert!(!is_container_address(r, Ipv4Addr::new(10, 77, 4, 2)));
        let taken: BTreeSet<_> = [2, 3, 5].map(|a| Ipv4Addr::new(10, 77, 3, a)).into();
        assert_eq!(next_free(r, &taken), Ok(Ipv4Addr::new(10, 77, 3, 4)));
    }

    #[test]
    fn a_full_range_is_an_error_and_a_slash_30_has_one_address() {
        let r = net("10.77.3.0/30");
        assert_eq!(container_addresses(r), 1);
        let taken: BTreeSet<_> = [Ipv4Addr::new(10, 77, 3, 2)].into();
        assert_eq!(
            next_free(r, &taken),
            Err(PlanError::RangeFull {
                range: r,
                addresses: 1
            })
        );
    }
}
