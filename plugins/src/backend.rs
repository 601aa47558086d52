//! What the plugins need from the switch: the networks this host serves and an address
//! allocator over this host's range of each. `dnet-switch` implements [`Backend`] over its etcd
//! allocations (crate `dnet-cluster`); [`crate::memory::MemoryBackend`] implements it in memory
//! (tests, and hosts without etcd); [`crate::control::ControlClient`] implements it by asking a
//! running switch over its control socket (what `dnet-cni` does).
//!
//! Owners (holders) are stable strings that say who holds an address, so that a restart can
//! match allocations to what still exists: `docker-mac:MAC` for a Docker endpoint (libnetwork
//! asks for an address before it names the endpoint, but already knows its MAC address),
//! `cni:CONTAINERID/IFNAME` for a CNI attachment, and whatever `dnetctl attach` uses.

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// One network this host serves, with this host's share of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Network name (`blue`); the Docker network and the CNI network carry the same name.
    pub name: String,
    /// The whole overlay subnet; containers configure their address with its prefix length,
    /// so every container of every host is on-link.
    pub subnet: Ipv4Net,
    /// This host's range of the subnet; containers here get addresses from it.
    pub range: Ipv4Net,
    /// The range's gateway: the bridge's own address, never handed to a container.
    pub gateway: Ipv4Addr,
    /// The host bridge the switch's TAP for this network is a port of; container veths join it.
    pub bridge: String,
    /// MTU of the network's container interfaces (the switch's TAP MTU).
    pub mtu: u32,
}

impl Network {
    /// `address/subnet-prefix`, how a container address is configured.
    pub fn with_prefix(&self, address: Ipv4Addr) -> String {
        format!("{address}/{}", self.subnet.prefix_len())
    }
}

/// An address held in a network on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// The address.
    pub address: Ipv4Addr,
    /// Who holds it (see the module docs).
    pub owner: String,
}

/// Why a backend refused or failed a request. Serializable, so the control socket carries the
/// exact refusal to `dnet-cni`, which maps it onto a CNI error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BackendError {
    /// No network of that name is served here.
    #[error("this host serves no network named {network:?} (it serves: {served}); start dnet-switch with --network {network}")]
    UnknownNetwork {
        /// The name asked for.
        network: String,
        /// The names served, comma-separated.
        served: String,
    },
    /// The requested address is not in this host's range.
    #[error("address {address} is outside this host's range {range} of network {network}: ask for one inside it, or for none")]
    OutsideRange {
        /// The address asked for.
        address: Ipv4Addr,
        /// The network.
        network: String,
        /// This host's range.
        range: Ipv4Net,
    },
    /// The requested address is the range's network, broadcast or gateway address.
    #[error("address {address} is reserved in range {range} of network {network} (network, broadcast or gateway address): ask for another")]
    Reserved {
        /// The address asked for.
        address: Ipv4Addr,
        /// The network.
        network: String,
        /// This host's range.
        range: Ipv4Net,
    },
    /// The requested address is held by someone else.
    #[error("address {address} of network {network} is already held by {owner}: ask for another, or for none")]
    InUse {
        /// The address asked for.
        address: Ipv4Addr,
        /// The network.
        network: String,
        /// Its holder.
        owner: String,
    },
    /// The owner already holds another address than the one asked for.
    #[error("{owner} already holds {address} in network {network}: release it first")]
    OwnerHolds {
        /// The holder.
        owner: String,
        /// The address it holds.
        address: Ipv4Addr,
        /// The network.
        network: String,
    },
    /// Every container address of the range is held.
    #[error("range {range} of network {network} is full: every container address is held; remove a container")]
    RangeFull {
        /// The network.
        network: String,
        /// This host's range.
        range: Ipv4Net,
    },
    /// The backend cannot be reached now (switch not running, etcd unreachable).
    #[error("{what} is unreachable: {reason}")]
    Unavailable {
        /// What was tried (`the dnet switch on /run/dnet/dnet0.sock`).
        what: String,
        /// Why, as the OS or the switch said it.
        reason: String,
    },
    /// The backend answered something this crate cannot read, or failed otherwise.
    #[error("{0}")]
    Failed(String),
}

/// The switch's side of the plugins: the networks this host serves, and an address allocator
/// per network over this host's range.
///
/// Rules every implementation keeps (the plugins rely on them):
/// - Allocations are per network and per host: [`Backend::allocations`] lists this host's.
/// - The range's network, broadcast and gateway addresses are never allocated.
/// - [`Backend::allocate`] is idempotent per owner: an owner that already holds an address gets
///   it again (if it asked for none or for that one), so a retried request never takes a second
///   address; asking for a different one is [`BackendError::OwnerHolds`].
/// - A requested address outside the range is [`BackendError::OutsideRange`]; one held by
///   another owner is [`BackendError::InUse`]. A live address is never handed out twice.
/// - [`Backend::release`] is idempotent: releasing what an owner does not hold is `Ok(None)`.
/// - Allocations outlive the plugins (a plugin restart finds them in [`Backend::allocations`]).
pub trait Backend: Send + Sync {
    /// The networks this host serves.
    fn networks(&self) -> Result<Vec<Network>, BackendError>;

    /// The network named `name`.
    fn network(&self, name: &str) -> Result<Network, BackendError> {
        let all = self.networks()?;
        let served = all
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        all.iter()
            .find(|n| n.name == name)
            .cloned()
            .ok_or_else(|| BackendError::UnknownNetwork {
                network: name.to_string(),
                served: if served.is_empty() {
                    "none".into()
                } else {
                    served
                },
            })
    }

    /// Allocates an address in `network` for `owner`: `requested` if given (checked against
    /// this host's range), else the lowest free one.
    fn allocate(
        &self,
        network: &str,
        owner: &str,
        requested: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, BackendError>;

    /// Frees the address `owner` holds in `network`; `Ok(None)` if it holds none.
    fn release(&self, network: &str, owner: &str) -> Result<Option<Ipv4Addr>, BackendError>;

    /// This host's allocations in `network`, in address order.
    fn allocations(&self, network: &str) -> Result<Vec<Allocation>, BackendError>;
}

impl<B: Backend + ?Sized> Backend for std::sync::Arc<B> {
    fn networks(&self) -> Result<Vec<Network>, BackendError> {
        (**self).networks()
    }
    fn network(&self, name: &str) -> Result<Network, BackendError> {
        (**self).network(name)
    }
    fn allocate(
        &self,
        network: &str,
        owner: &str,
        requested: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, BackendError> {
        (**self).allocate(network, owner, requested)
    }
    fn release(&self, network: &str, owner: &str) -> Result<Option<Ipv4Addr>, BackendError> {
        (**self).release(network, owner)
    }
    fn allocations(&self, network: &str) -> Result<Vec<Allocation>, BackendError> {
        (**self).allocations(network)
    }
}

/// The addresses of `range` a container may get: all but the network address, the broadcast
/// address and the first host address (the gateway), the same rule as the etcd allocator's.
pub fn container_addresses(range: Ipv4Net) -> impl Iterator<Item = Ipv4Addr> {
    let first = u32::from(range.network());
    let last = u32::from(range.broadcast());
    // A /31 or /32 has no room for a gateway and a container.
    let (lo, hi) = if last.saturating_sub(first) < 3 {
        (1, 0)
    } else {
        (first + 2, last - 1)
    };
    (lo..=hi).map(Ipv4Addr::from)
}

/// The gateway of `range`: its first host address.
pub fn range_gateway(range: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(range.network()).wrapping_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_addresses_skip_network_gateway_broadcast() {
        let r: Ipv4Net = "10.77.3.0/29".parse().unwrap();
        let v: Vec<_> = container_addresses(r).collect();
        assert_eq!(v.first(), Some(&Ipv4Addr::new(10, 77, 3, 2)));
        assert_eq!(v.last(), Some(&Ipv4Addr::new(10, 77, 3, 6)));
        assert_eq!(v.len(), 5);
        assert_eq!(range_gateway(r), Ipv4Addr::new(10, 77, 3, 1));
        assert_eq!(
            container_addresses("10.0.0.0/31".parse().unwrap()).count(),
            0
        );
        assert_eq!(
            container_addresses("10.0.0.0/30".parse().unwrap()).count(),
            1
        );
    }

    #[test]
    fn refusals_round_trip_as_json() {
        let e = BackendError::InUse {
            address: Ipv4Addr::new(10, 77, 3, 2),
            network: "blue".into(),
            owner: "cni:abc/eth0".into(),
        };
        let j = serde_json::to_string(&e).unwrap();
        assert!(j.contains(r#""kind":"in_use""#), "{j}");
        assert_eq!(serde_json::from_str::<BackendError>(&j).unwrap(), e);
        assert!(e.to_string().contains("cni:abc/eth0"));
    }
}
