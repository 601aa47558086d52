//! What the control server asks of the etcd side of a switch (`--network`): its status for
//! `show` and metrics, and container addresses for `dnetctl attach`/`detach`. The binary
//! implements it over crate `dnet-cluster`; the library only sees this trait, so the data path
//! and the control server never depend on the etcd client.
//!
//! The switch is the one owner of its host's state in etcd: `dnetctl` asks the switch for an
//! address, and the switch records it, rather than writing to etcd behind its back.

use dnet_proto::{Allocated, AllocationList, FleetInfo};
use std::net::Ipv4Addr;

/// The etcd network a switch joined.
pub trait Fleet: Send + Sync {
    /// Status and counters, now. Never waits on etcd.
    fn info(&self) -> FleetInfo;

    /// Allocates the next free address of this host's range to `container` (or records
    /// `address`, checked against the range). `network` `None` is the switch's network.
    /// Errors name the input and the fix.
    fn allocate(
        &self,
        network: Option<&str>,
        container: &str,
        name: Option<&str>,
        address: Option<Ipv4Addr>,
    ) -> Result<Allocated, String>;

    /// Frees `container`'s address on this host, or `address`; returns (network, address
    /// freed).
    fn release(
        &self,
        network: Option<&str>,
        container: Option<&str>,
        address: Option<Ipv4Addr>,
    ) -> Result<(String, Option<Ipv4Addr>), String>;

    /// This host's allocations.
    fn allocations(&self, network: Option<&str>) -> Result<AllocationList, String>;
}

/// The refusal of an allocation request by a switch without `--network`.
pub const NOT_IN_A_NETWORK: &str = "this dnet-switch is not in an etcd network (it was started without --network), so it has no address range to allocate from: give the address (dnetctl attach CONTAINER 10.77.0.5/24), or start dnet-switch with --etcd URLS --network NAME";
