//! What the settings pipeline asks of the host: its addresses, its routes, its links. A trait,
//! so that every refusal of [`super::resolve`] and [`super::check_peer`] is unit-tested
//! against a fake host.

use crate::io::netdev;
use std::io;
use std::net::Ipv4Addr;

/// The host's network, as the settings pipeline sees it.
pub trait Host {
    /// The IPv4 addresses configured on this host.
    fn local_addrs(&self) -> io::Result<Vec<Ipv4Addr>>;
    /// The source address and path MTU the routing table gives for `peer`.
    fn route_to(&self, peer: Ipv4Addr) -> io::Result<(Ipv4Addr, u32)>;
    /// Does an interface of this name exist?
    fn link_exists(&self, name: &str) -> bool;
    /// Is `name` a Linux bridge?
    fn is_bridge(&self, name: &str) -> bool;
    /// CPUs this process may use (the default number of workers).
    fn cores(&self) -> usize;
    /// The IPv4 addresses a host name (or an address literal) stands for.
    fn lookup(&self, name: &str) -> io::Result<Vec<Ipv4Addr>>;
}

/// The real host.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemHost;

impl Host for SystemHost {
    fn local_addrs(&self) -> io::Result<Vec<Ipv4Addr>> {
        netdev::local_addrs()
    }

    fn route_to(&self, peer: Ipv4Addr) -> io::Result<(Ipv4Addr, u32)> {
        netdev::route_to(peer)
    }

    fn link_exists(&self, name: &str) -> bool {
        netdev::index(name).is_some()
    }

    fn is_bridge(&self, name: &str) -> bool {
        netdev::is_bridge(name)
    }

    fn cores(&self) -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    fn lookup(&self, name: &str) -> io::Result<Vec<Ipv4Addr>> {
        use std::net::{SocketAddr, ToSocketAddrs};
        Ok((name, 0)
            .to_socket_addrs()?
            .filter_map(|a| match a {
                SocketAddr::V4(a) => Some(*a.ip()),
                SocketAddr::V6(_) => None,
            })
            .collect())
    }
}

/// A host made of tables, for tests.
#[cfg(test)]
pub(crate) mod fake {
    use super::*;

    /// Addresses, routes (destination → source, MTU) and bridges.
    #[derive(Clone, Debug, Default)]
    pub struct FakeHost {
        pub addrs: Vec<Ipv4Addr>,
        pub routes: Vec<(Ipv4Addr, Ipv4Addr, u32)>,
        pub links: Vec<&'static str>,
        pub bridges: Vec<&'static str>,
        pub cores: usize,
        /// `local_addrs` fails (getifaddrs refused).
        pub addrs_fail: bool,
    }

    impl FakeHost {
        /// 10.200.0.1 with a 1500-byte route to 10.200.0.0/24; a bridge `br0` and an
        /// interface `eth0`; 2 cores.
        pub fn new() -> FakeHost {
            let local = Ipv4Addr::new(10, 200, 0, 1);
            FakeHost {
                addrs: vec![local, Ipv4Addr::LOCALHOST],
                routes: (2..=9)
                    .map(|i| (Ipv4Addr::new(10, 200, 0, i), local, 1500))
                    .collect(),
                links: vec!["eth0", "br0"],
                bridges: vec!["br0"],
                cores: 2,
                addrs_fail: false,
            }
        }
    }

    impl Host for FakeHost {
        fn local_addrs(&self) -> io::Result<Vec<Ipv4Addr>> {
            if self.addrs_fail {
                return Err(io::Error::from_raw_os_error(libc::ENOMEM));
            }
            Ok(self.addrs.clone())
        }

        fn route_to(&self, peer: Ipv4Addr) -> io::Result<(Ipv4Addr, u32)> {
            self.routes
                .iter()
                .find(|r| r.0 == peer)
                .map(|r| (r.1, r.2))
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENETUNREACH))
        }

        fn link_exists(&self, name: &str) -> bool {
            self.links.contains(&name)
        }

        fn is_bridge(&self, name: &str) -> bool {
            self.bridges.contains(&name)
        }

        fn cores(&self) -> usize {
            self.cores
        }

        fn lookup(&self, name: &str) -> io::Result<Vec<Ipv4Addr>> {
            match name {
                "etcd.example" => Ok(vec![Ipv4Addr::new(10, 200, 0, 9)]),
                _ => name
                    .parse()
                    .map(|a| vec![a])
                    .map_err(|_| io::Error::new(io::ErrorKind::NotFound, "unknown host")),
            }
        }
    }
}
