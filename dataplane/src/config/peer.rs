//! The one check a peer address passes, wherever it comes from: `--peer` and the config file
//! at start, the file again on SIGHUP, and `dnetctl peer add` at run time.

use super::host::Host;
use super::input::{Input, Sourced};
use super::settings::tap_mtu_for;
use crate::switch::tunnel::GreOptions;
use std::io;
use std::net::Ipv4Addr;

/// What the underlay says about a peer that passed [`check_peer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerRoute {
    /// The source address the route to the peer leaves from.
    pub source: Ipv4Addr,
    /// The path MTU of that route.
    pub path_mtu: u32,
}

/// Why an address cannot be a peer.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Not a unicast host address.
    #[error("{input}: {what}, not a host: give another host's underlay address")]
    NotUnicast {
        /// The peer as given.
        input: Input,
        /// What the address is instead ("a loopback address", ...).
        what: &'static str,
    },
    /// Already a peer (or listed twice).
    #[error("{input}: already configured: give each peer once (see `dnetctl show`)")]
    Duplicate {
        /// The peer as given.
        input: Input,
    },
    /// One of this host's own addresses.
    #[error("{input}: an address of this host: give another host's underlay address")]
    Local {
        /// The peer as given.
        input: Input,
    },
    /// The routing table has no route to it.
    #[error("{input}: no route to it (check the underlay routes)")]
    NoRoute {
        /// The peer as given.
        input: Input,
        /// Why routing refused.
        source: io::Error,
    },
    /// This host's addresses could not be read.
    #[error("cannot read this host's addresses to check {input}")]
    Addresses {
        /// The peer being checked.
        input: Input,
        /// Why.
        source: io::Error,
    },
}

impl PeerError {
    /// The peer as given.
    pub fn input(&self) -> &Input {
        match self {
            PeerError::NotUnicast { input, .. }
            | PeerError::Duplicate { input }
            | PeerError::Local { input }
            | PeerError::NoRoute { input, .. }
            | PeerError::Addresses { input, .. } => input,
        }
    }
}

/// What `addr` is if it is not a unicast host address.
fn not_unicast(addr: Ipv4Addr) -> Option<&'static str> {
    if addr.is_unspecified() {
        Some("the unspecified address")
    } else if addr.is_loopback() {
        Some("a loopback address")
    } else if addr.is_multicast() {
        Some("a multicast address")
    } else if addr.is_broadcast() {
        Some("the broadcast address")
    } else {
        None
    }
}

/// Checks that `peer` can be a tunnel endpoint: a unicast address, not among `configured`,
/// not one of this host's, and routed. Returns the route it would take.
pub fn check_peer(
    peer: &Sourced<Ipv4Addr>,
    configured: &[Ipv4Addr],
    host: &dyn Host,
) -> Result<PeerRoute, PeerError> {
    let addr = peer.value;
    let input = || peer.input.clone();
    if let Some(what) = not_unicast(addr) {
        return Err(PeerError::NotUnicast {
            input: input(),
            what,
        });
    }
    if configured.contains(&addr) {
        return Err(PeerError::Duplicate { input: input() });
    }
    let locals = host.local_addrs().map_err(|source| PeerError::Addresses {
        input: input(),
        source,
    })?;
    if locals.contains(&addr) {
        return Err(PeerError::Local { input: input() });
    }
    let (source, path_mtu) = host.route_to(addr).map_err(|source| PeerError::NoRoute {
        input: input(),
        source,
    })?;
    Ok(PeerRoute { source, path_mtu })
}

/// What a running switch should know about a peer added at run time: the route leaves from
/// another source address than the switch's, or its path MTU is below the TAP MTU. `seal` is
/// what `--encrypt` adds to each datagram (0 without it).
pub fn route_warnings(
    addr: Ipv4Addr,
    route: PeerRoute,
    local: Ipv4Addr,
    tap_mtu: u32,
    gre: &GreOptions,
    seal: usize,
    df: bool,
) -> Vec<String> {
    let mut warnings = Vec::new();
    if route.source != local {
        warnings.push(format!(
            "the route to {addr} leaves from {}, not from the switch's underlay address {local}: {addr} must accept GRE from {local}",
            route.source
        ));
    }
    let fits = tap_mtu_for(route.path_mtu, gre) - seal as i64;
    if fits < i64::from(tap_mtu) {
        warnings.push(format!(
            "the path MTU to {addr} is {}, which fits frames of at most {fits} bytes, below the TAP MTU {tap_mtu}: larger frames to {addr} will be {}",
            route.path_mtu,
            if df { "dropped (too_big)" } else { "fragmented" }
        ));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::super::host::fake::FakeHost;
    use super::super::input::Origin;
    use super::*;
    use crate::error_chain;
    use std::path::PathBuf;

    fn runtime(a: [u8; 4]) -> Sourced<Ipv4Addr> {
        let addr = Ipv4Addr::from(a);
        Sourced {
            value: addr,
            input: Input::runtime("peer", addr),
        }
    }

    #[test]
    fn a_routed_unicast_peer_passes() {
        let route = check_peer(&runtime([10, 200, 0, 2]), &[], &FakeHost::new()).unwrap();
        assert_eq!(
            route,
            PeerRoute {
                source: Ipv4Addr::new(10, 200, 0, 1),
                path_mtu: 1500
            }
        );
    }

    #[test]
    fn every_refusal_names_the_peer_and_the_fix() {
        let host = FakeHost::new();
        let configured = [Ipv4Addr::new(10, 200, 0, 3)];
        for (addr, what, text) in [
            ([127, 0, 0, 1], "not unicast", "peer 127.0.0.1: a loopback address, not a host: give another host's underlay address"),
            ([0, 0, 0, 0], "not unicast", "peer 0.0.0.0: the unspecified address, not a host"),
            ([224, 0, 0, 5], "not unicast", "peer 224.0.0.5: a multicast address"),
            ([255, 255, 255, 255], "not unicast", "peer 255.255.255.255: the broadcast address"),
            ([10, 200, 0, 3], "duplicate", "peer 10.200.0.3: already configured: give each peer once"),
            ([10, 200, 0, 1], "local", "peer 10.200.0.1: an address of this host: give another host's underlay address"),
            ([10, 9, 9, 9], "no route", "peer 10.9.9.9: no route to it (check the underlay routes): Network is unreachable"),
        ] {
            let e = check_peer(&runtime(addr), &configured, &host).unwrap_err();
            let kind = match &e {
                PeerError::NotUnicast { .. } => "not unicast",
                PeerError::Duplicate { .. } => "duplicate",
                PeerError::Local { .. } => "local",
                PeerError::NoRoute { .. } => "no route",
                PeerError::Addresses { .. } => "addresses",
            };
            assert_eq!(kind, what, "{addr:?}: {e}");
            let msg = error_chain::format(&e);
            assert!(msg.starts_with(text), "{msg:?} does not start with {text:?}");
            error_chain::assert_causes_once(&e);
        }
    }

    #[test]
    fn refusals_name_the_flag_or_the_file_line() {
        let host = FakeHost::new();
        let flag = Sourced {
            value: Ipv4Addr::LOCALHOST,
            input: Input::flag("peer", Ipv4Addr::LOCALHOST),
        };
        let e = check_peer(&flag, &[], &host).unwrap_err();
        assert!(
            e.to_string().starts_with("--peer 127.0.0.1: a loopback"),
            "{e}"
        );
        let file = Sourced {
            value: Ipv4Addr::new(10, 200, 0, 1),
            input: Input {
                key: "peer".into(),
                value: "\"10.200.0.1\"".into(),
                origin: Origin::File {
                    path: PathBuf::from("/etc/dnet/dnet.toml"),
                    line: 3,
                },
            },
        };
        let e = check_peer(&file, &[], &host).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "config file /etc/dnet/dnet.toml, line 3: peer = \"10.200.0.1\": an address of this host"
            ),
            "{e}"
        );
    }

    #[test]
    fn warnings_name_another_source_and_a_narrow_path() {
        let gre = GreOptions::default();
        let local = Ipv4Addr::new(10, 200, 0, 1);
        let peer = Ipv4Addr::new(10, 200, 0, 2);
        let ok = PeerRoute {
            source: local,
            path_mtu: 1500,
        };
        assert!(route_warnings(peer, ok, local, 1462, &gre, 0, true).is_empty());
        // Sealed GRE-in-UDP: the seal's 32 bytes count against the path too.
        let udp = GreOptions {
            udp_port: Some(4754),
            ..gre
        };
        assert!(route_warnings(peer, ok, local, 1422, &udp, 32, true).is_empty());
        let w = route_warnings(peer, ok, local, 1454, &udp, 32, true);
        assert!(w.len() == 1 && w[0].contains("at most 1422 bytes"), "{w:?}");
        let other = PeerRoute {
            source: Ipv4Addr::new(10, 201, 0, 1),
            path_mtu: 1400,
        };
        let w = route_warnings(peer, other, local, 1462, &gre, 0, true);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("leaves from 10.201.0.1"), "{}", w[0]);
        assert!(
            w[1].contains("at most 1362 bytes") && w[1].contains("dropped (too_big)"),
            "{}",
            w[1]
        );
        let w = route_warnings(
            peer,
            PeerRoute {
                source: local,
                ..other
            },
            local,
            1462,
            &gre,
            0,
            false,
        );
        assert!(w[0].contains("fragmented"), "{w:?}");
    }
}
