//! An in-memory [`Backend`]: fixed networks and an allocator per network over this host's
//! range. It keeps the same rules as the etcd allocator (lowest free first; network, broadcast
//! and gateway addresses never handed out), but forgets everything when the process ends, so
//! it suits tests and single-host setups without etcd. A plugin restarted in the same process
//! (the switch restarting its Docker plugin) finds its allocations again.

use crate::backend::{container_addresses, Allocation, Backend, BackendError, Network};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard};

/// Why [`MemoryBackend::new`] refused a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryBackendError {
    /// Its range is not inside its subnet.
    #[error("network {network}: range {range} is not inside subnet {subnet}; pick a range of the subnet")]
    RangeOutsideSubnet {
        /// The network.
        network: String,
        /// Its range.
        range: ipnet::Ipv4Net,
        /// Its subnet.
        subnet: ipnet::Ipv4Net,
    },
    /// Its gateway is not the range's first host address.
    #[error("network {network}: gateway {gateway} is not the first host address of range {range} ({expected}); use {expected}")]
    Gateway {
        /// The network.
        network: String,
        /// The gateway given.
        gateway: Ipv4Addr,
        /// Its range.
        range: ipnet::Ipv4Net,
        /// What it must be.
        expected: Ipv4Addr,
    },
    /// Two networks of one name.
    #[error("network {0} is given twice; give each network once")]
    Duplicate(String),
}

/// Networks and their allocations, in memory (see the module docs).
#[derive(Debug)]
pub struct MemoryBackend {
    networks: Vec<Network>,
    /// Per network: address -> owner.
    held: Mutex<BTreeMap<String, BTreeMap<Ipv4Addr, String>>>,
}

impl MemoryBackend {
    /// A backend serving `networks`, each with no allocation yet.
    pub fn new(networks: Vec<Network>) -> Result<MemoryBackend, MemoryBackendError> {
        let mut held = BTreeMap::new();
        for n in &networks {
            if !n.subnet.contains(&n.range) {
                return Err(MemoryBackendError::RangeOutsideSubnet {
                    network: n.name.clone(),
                    range: n.range,
                    subnet: n.subnet,
                });
            }
            let expected = crate::backend::range_gateway(n.range);
            if n.gateway != expected {
                return Err(MemoryBackendError::Gateway {
                    network: n.name.clone(),
                    gateway: n.gateway,
                    range: n.range,
                    expected,
                });
            }
            if held.insert(n.name.clone(), BTreeMap::new()).is_some() {
                return Err(MemoryBackendError::Duplicate(n.name.clone()));
            }
        }
        Ok(MemoryBackend {
            networks,
            held: Mutex::new(held),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, BTreeMap<Ipv4Addr, String>>> {
        // A panic while holding the lock cannot leave a half-made allocation (every change is
        // one insert or one remove), so the data is still consistent.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Backend for MemoryBackend {
    fn networks(&self) -> Result<Vec<Network>, BackendError> {
        Ok(self.networks.clone())
    }

    fn allocate(
        &self,
        network: &str,
        owner: &str,
        requested: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, BackendError> {
        let net = self.network(network)?;
        let mut all = self.lock();
        let held = all.entry(net.name.clone()).or_default();
        if let Some((&address, _)) = held.iter().find(|(_, o)| o.as_str() == owner) {
            return match requested {
                None => Ok(address),
                Some(r) if r == address => Ok(address),
                Some(_) => Err(BackendError::OwnerHolds {
                    owner: owner.to_string(),
                    address,
                    network: net.name,
                }),
            };
        }
        let address = match requested {
            Some(r) => {
                if !net.range.contains(&r) {
                    return Err(BackendError::OutsideRange {
                        address: r,
                        network: net.name,
                        range: net.range,
                    });
                }
                if !container_addresses(net.range).any(|a| a == r) {
                    return Err(BackendError::Reserved {
                        address: r,
                        network: net.name,
                        range: net.range,
                    });
                }
                if let Some(o) = held.get(&r) {
                    return Err(BackendError::InUse {
                        address: r,
                        network: net.name,
                        owner: o.clone(),
                    });
                }
                r
            }
            None => container_addresses(net.range)
                .find(|a| !held.contains_key(a))
                .ok_or(BackendError::RangeFull {
                    network: net.name.clone(),
                    range: net.range,
                })?,
        };
        held.insert(address, owner.to_string());
        Ok(address)
    }

    fn release(&self, network: &str, owner: &str) -> Result<Option<Ipv4Addr>, BackendError> {
        let net = self.network(network)?;
        let mut all = self.lock();
        let held = all.entry(net.name).or_default();
        let found = held
            .iter()
            .find(|(_, o)| o.as_str() == owner)
            .map(|(a, _)| *a);
        if let Some(a) = found {
            held.remove(&a);
        }
        Ok(found)
    }

    fn allocations(&self, network: &str) -> Result<Vec<Allocation>, BackendError> {
        let net = self.network(network)?;
        let all = self.lock();
        Ok(all
            .get(&net.name)
            .map(|h| {
                h.iter()
                    .map(|(a, o)| Allocation {
                        address: *a,
                        owner: o.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blue() -> Network {
        Network {
            name: "blue".into(),
            subnet: "10.77.0.0/16".parse().unwrap(),
            range: "10.77.3.0/29".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 77, 3, 1),
            bridge: "br-blue".into(),
            mtu: 1450,
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn lowest_free_first_idempotent_per_owner_and_exact_release() {
        let b = MemoryBackend::new(vec![blue()]).unwrap();
        assert_eq!(b.allocate("blue", "a", None).unwrap(), ip("10.77.3.2"));
        assert_eq!(b.allocate("blue", "b", None).unwrap(), ip("10.77.3.3"));
        assert_eq!(b.allocate("blue", "a", None).unwrap(), ip("10.77.3.2"));
        assert_eq!(
            b.allocate("blue", "a", Some(ip("10.77.3.2"))).unwrap(),
            ip("10.77.3.2")
        );
        assert!(matches!(
            b.allocate("blue", "a", Some(ip("10.77.3.5"))),
            Err(BackendError::OwnerHolds { .. })
        ));
        assert_eq!(b.release("blue", "a").unwrap(), Some(ip("10.77.3.2")));
        assert_eq!(b.release("blue", "a").unwrap(), None);
        assert_eq!(b.allocate("blue", "c", None).unwrap(), ip("10.77.3.2"));
        let owners: Vec<_> = b
            .allocations("blue")
            .unwrap()
            .into_iter()
            .map(|a| a.owner)
            .collect();
        assert_eq!(owners, ["c", "b"]);
    }

    #[test]
    fn refusals() {
        let b = MemoryBackend::new(vec![blue()]).unwrap();
        b.allocate("blue", "a", Some(ip("10.77.3.4"))).unwrap();
        assert!(matches!(
            b.allocate("blue", "x", Some(ip("10.77.3.4"))),
            Err(BackendError::InUse { ref owner, .. }) if owner == "a"
        ));
        assert!(matches!(
            b.allocate("blue", "x", Some(ip("10.77.4.4"))),
            Err(BackendError::OutsideRange { .. })
        ));
        for r in ["10.77.3.0", "10.77.3.1", "10.77.3.7"] {
            assert!(matches!(
                b.allocate("blue", "x", Some(ip(r))),
                Err(BackendError::Reserved { .. })
            ));
        }
        assert!(matches!(
            b.allocate("red", "x", None),
            Err(BackendError::UnknownNetwork { ref served, .. }) if served == "blue"
        ));
        for o in ["p", "q", "r", "s"] {
            b.allocate("blue", o, None).unwrap();
        }
        assert!(matches!(
            b.allocate("blue", "t", None),
            Err(BackendError::RangeFull { .. })
        ));
    }

    #[test]
    fn bad_networks_are_refused() {
        let mut n = blue();
        n.range = "10.78.3.0/24".parse().unwrap();
        assert!(matches!(
            MemoryBackend::new(vec![n]),
            Err(MemoryBackendError::RangeOutsideSubnet { .. })
        ));
        let mut n = blue();
        n.gateway = ip("10.77.3.9");
        assert!(matches!(
            MemoryBackend::new(vec![n]),
            Err(MemoryBackendError::Gateway { .. })
        ));
        assert!(matches!(
            MemoryBackend::new(vec![blue(), blue()]),
            Err(MemoryBackendError::Duplicate(_))
        ));
    }
}
