//! Turning what the operator asked for ([`Settings`]) into a validated [`DataplaneConfig`]:
//! the underlay source address and MTU come from the routing table, the TAP MTU from the
//! header actually emitted. Every refusal names the input and the fix.

use crate::io::gre_socket::OuterOptions;
use crate::io::{netdev, DataplaneConfig};
use crate::switch::{self, tunnel::GreOptions};
use crate::wire::ethernet;
use std::net::Ipv4Addr;

/// Smallest TAP MTU accepted: the IPv4 minimum reassembly size every host must accept.
pub const MIN_MTU: u32 = 576;

/// The operator's settings, as given (flags or file).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Peer underlay addresses.
    pub peers: Vec<Ipv4Addr>,
    /// Underlay source; default from routing.
    pub local: Option<Ipv4Addr>,
    /// TAP name.
    pub tap: String,
    /// Bridge to attach to.
    pub bridge: Option<String>,
    /// TAP MTU; default underlay MTU − overhead.
    pub mtu: Option<u32>,
    /// GRE key.
    pub key: Option<u32>,
    /// GRE checksums.
    pub csum: bool,
    /// GRE sequence numbers.
    pub seq: bool,
    /// Outer TTL.
    pub ttl: u8,
    /// Outer TOS.
    pub tos: u8,
    /// Worker threads; default one per core.
    pub workers: Option<usize>,
    /// TAP offloads (TCP super-frames, partial checksums); default on.
    pub offload: bool,
    /// `--encap udp`: GRE-in-UDP to this port; `None`: plain GRE.
    pub udp_port: Option<u16>,
}

/// A setting that cannot work, with the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// No peers.
    #[error(
        "no peer given: pass --peer IP for each other host (or peer = [...] in --config FILE)"
    )]
    NoPeers,
    /// A peer is listed twice.
    #[error("--peer {0} is given twice")]
    DuplicatePeer(Ipv4Addr),
    /// A peer address that cannot be a host.
    #[error("--peer {0} is not a unicast host address")]
    BadPeer(Ipv4Addr),
    /// A peer address is one of ours.
    #[error("--peer {0} is an address of this host: give the other hosts' underlay addresses")]
    PeerIsLocal(Ipv4Addr),
    /// `--local` is not configured here.
    #[error("--local {0} is not an address of this host (see `ip -4 addr`)")]
    LocalNotFound(Ipv4Addr),
    /// No route to a peer.
    #[error("no route to peer {peer}: {reason} (check the underlay routes, or pass --local)")]
    NoRoute {
        /// Peer.
        peer: Ipv4Addr,
        /// Why.
        reason: String,
    },
    /// The TAP MTU would be too small.
    #[error("{0}")]
    MtuTooSmall(String),
    /// The TAP MTU is too large for any IPv4 packet.
    #[error("--mtu {mtu} is too large: at most {max} fits in one IPv4 packet with this header")]
    MtuTooLarge {
        /// Asked.
        mtu: u32,
        /// Largest possible.
        max: u32,
    },
    /// `--bridge` names nothing.
    #[error("bridge {0} not found: create it (ip link add {0} type bridge) or fix --bridge")]
    BridgeNotFound(String),
    /// `--bridge` names a non-bridge.
    #[error("--bridge {0} is not a Linux bridge")]
    NotABridge(String),
    /// `--workers` out of range.
    #[error("--workers {0} is out of range: use 1 to 64")]
    Workers(usize),
    /// `--ttl 0`.
    #[error("--ttl 0 would drop every packet at the first hop: use 1 to 255")]
    Ttl,
    /// Missing privileges.
    #[error("dnet-switch needs root (or CAP_NET_ADMIN and CAP_NET_RAW) to create a TAP and raw GRE sockets: run it with sudo")]
    NotPermitted,
    /// Reading local addresses failed.
    #[error("reading this host's addresses: {0}")]
    Addresses(String),
}

/// Does this process hold CAP_NET_ADMIN and CAP_NET_RAW (root has them)?
pub fn has_privileges() -> bool {
    crate::privdrop::has_net_privileges()
}

/// What [`resolve`] decided, for the startup log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The data path configuration.
    pub dataplane: DataplaneConfigSummary,
    /// Warnings worth logging.
    pub warnings: Vec<String>,
}

/// Numbers behind the TAP MTU, for the startup log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataplaneConfigSummary {
    /// Underlay path MTU towards the peers (smallest).
    pub underlay_mtu: u32,
    /// Bytes added per frame: outer IPv4 + GRE + inner Ethernet.
    pub overhead: u32,
    /// The TAP MTU chosen.
    pub mtu: u32,
}

/// The TAP MTU for an underlay MTU, given the GRE options: underlay − IPv4 − GRE − Ethernet.
pub fn tap_mtu_for(underlay_mtu: u32, gre: &GreOptions) -> i64 {
    i64::from(underlay_mtu) - (gre.overhead() + ethernet::HEADER_LEN) as i64
}

/// Validates `s` against this host and derives the data path configuration.
pub fn resolve(s: &Settings) -> Result<(DataplaneConfig, Resolved), ConfigError> {
    if s.peers.is_empty() {
        return Err(ConfigError::NoPeers);
    }
    for (i, p) in s.peers.iter().enumerate() {
        if p.is_unspecified() || p.is_multicast() || p.is_broadcast() || p.is_loopback() {
            return Err(ConfigError::BadPeer(*p));
        }
        if s.peers[..i].contains(p) {
            return Err(ConfigError::DuplicatePeer(*p));
        }
    }
    if s.ttl == 0 {
        return Err(ConfigError::Ttl);
    }
    let workers = s.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if !(1..=64).contains(&workers) {
        return Err(ConfigError::Workers(workers));
    }
    if let Some(b) = &s.bridge {
        if netdev::index(b).is_none() {
            return Err(ConfigError::BridgeNotFound(b.clone()));
        }
        if !netdev::is_bridge(b) {
            return Err(ConfigError::NotABridge(b.clone()));
        }
    }
    let locals = netdev::local_addrs().map_err(|e| ConfigError::Addresses(e.to_string()))?;
    if let Some(p) = s.peers.iter().find(|p| locals.contains(p)) {
        return Err(ConfigError::PeerIsLocal(*p));
    }
    if let Some(l) = s.local {
        if !locals.contains(&l) {
            return Err(ConfigError::LocalNotFound(l));
        }
    }
    let mut underlay_mtu = u32::MAX;
    let mut routed_src = None;
    for p in &s.peers {
        let (src, mtu) = netdev::route_to(*p).map_err(|e| ConfigError::NoRoute {
            peer: *p,
            reason: e.to_string(),
        })?;
        routed_src.get_or_insert(src);
        underlay_mtu = underlay_mtu.min(mtu);
    }
    let local = s
        .local
        .or(routed_src)
        .expect("at least one peer was routed");

    let gre = GreOptions {
        udp_port: s.udp_port,
        key: s.key,
        csum: s.csum,
        seq: s.seq,
    };
    let overhead = (gre.overhead() + ethernet::HEADER_LEN) as u32;
    let fits = tap_mtu_for(underlay_mtu, &gre);
    let mut warnings = Vec::new();
    let mut df = true;
    let mtu = match s.mtu {
        None => {
            if fits < i64::from(MIN_MTU) {
                return Err(ConfigError::MtuTooSmall(format!(
                    "the underlay MTU {underlay_mtu} leaves a TAP MTU of {fits} after {overhead} bytes of encapsulation, below the minimum {MIN_MTU}: raise the underlay MTU"
                )));
            }
            fits as u32
        }
        Some(m) => {
            if m < MIN_MTU {
                return Err(ConfigError::MtuTooSmall(format!(
                    "--mtu {m} is below the minimum {MIN_MTU}"
                )));
            }
            let max = 65_535 - overhead;
            if m > max {
                return Err(ConfigError::MtuTooLarge { mtu: m, max });
            }
            if i64::from(m) > fits {
                // Never black-hole: without DF the kernel fragments the outer packet.
                df = false;
                warnings.push(format!(
                    "--mtu {m} exceeds the {fits} that fits the underlay MTU {underlay_mtu} ({overhead} bytes of encapsulation): outer packets will be fragmented (DF off); raise the underlay MTU to {} to avoid that",
                    i64::from(m) + i64::from(overhead)
                ));
            }
            m
        }
    };
    let dp = DataplaneConfig {
        tap: s.tap.clone(),
        bridge: s.bridge.clone(),
        mtu,
        local,
        peers: s.peers.clone(),
        gre,
        outer: OuterOptions {
            ttl: s.ttl,
            tos: s.tos,
            df,
        },
        workers,
        core: switch::Config {
            max_frame: mtu as usize + ethernet::TAGGED_HEADER_LEN,
            ..switch::Config::default()
        },
        offload: s.offload,
    };
    let summary = DataplaneConfigSummary {
        underlay_mtu,
        overhead,
        mtu,
    };
    Ok((
        dp,
        Resolved {
            dataplane: summary,
            warnings,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            peers: vec![Ipv4Addr::new(10, 200, 0, 2)],
            local: None,
            tap: "dnet0".into(),
            bridge: None,
            mtu: None,
            key: None,
            csum: false,
            seq: false,
            ttl: 64,
            tos: 0,
            workers: Some(1),
            offload: true,
            udp_port: None,
        }
    }

    #[test]
    fn tap_mtu_follows_emitted_header() {
        let none = GreOptions::default();
        assert_eq!(tap_mtu_for(1500, &none), 1462);
        let key = GreOptions {
            key: Some(42),
            ..none
        };
        assert_eq!(tap_mtu_for(1500, &key), 1458);
        assert_eq!(tap_mtu_for(1542, &key), 1500);
        let all = GreOptions {
            key: Some(1),
            csum: true,
            seq: true,
            udp_port: None,
        };
        assert_eq!(tap_mtu_for(1500, &all), 1450);
        let udp = GreOptions {
            udp_port: Some(4754),
            ..none
        };
        assert_eq!(tap_mtu_for(1500, &udp), 1454);
    }

    #[test]
    fn refusals_name_the_input() {
        let mut s = settings();
        s.peers = vec![];
        assert_eq!(resolve(&s).unwrap_err(), ConfigError::NoPeers);
        let mut s = settings();
        s.peers.push(s.peers[0]);
        assert!(resolve(&s).unwrap_err().to_string().contains("given twice"));
        let mut s = settings();
        s.peers = vec![Ipv4Addr::LOCALHOST];
        assert_eq!(
            resolve(&s).unwrap_err(),
            ConfigError::BadPeer(Ipv4Addr::LOCALHOST)
        );
        let mut s = settings();
        s.ttl = 0;
        assert_eq!(resolve(&s).unwrap_err(), ConfigError::Ttl);
        let mut s = settings();
        s.workers = Some(0);
        assert_eq!(resolve(&s).unwrap_err(), ConfigError::Workers(0));
        let mut s = settings();
        s.bridge = Some("nosuchbr0".into());
        let e = resolve(&s).unwrap_err().to_string();
        assert!(e.contains("bridge nosuchbr0 not found"), "{e}");
        let mut s = settings();
        s.bridge = Some("lo".into());
        assert_eq!(
            resolve(&s).unwrap_err(),
            ConfigError::NotABridge("lo".into())
        );
    }
}
