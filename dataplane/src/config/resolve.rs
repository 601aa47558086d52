//! Turning [`Settings`] into a [`DataplaneConfig`] on this host: the underlay source address
//! and MTU come from the routing table, the TAP MTU from the header actually emitted, and
//! every peer passes [`check_peer`]. Every refusal names the input and the fix.

use super::host::Host;
use super::input::Input;
use super::input::Sourced;
use super::options::PacketRings;
use super::peer::{check_peer, PeerError};
use super::settings::{seal_overhead, tap_mtu_for, Settings, MAX_WORKERS, MIN_MTU};
use crate::io::gre_socket::OuterOptions;
use crate::io::ring::RingMode;
use crate::io::{DataplaneConfig, EncryptConfig, NetworkConfig};
use crate::switch;
use crate::wire::ethernet;
use std::net::Ipv4Addr;

/// A setting this host cannot carry out, with the fix.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Missing privileges.
    #[error("dnet-switch needs root (or CAP_NET_ADMIN and CAP_NET_RAW) to create a TAP and raw GRE sockets: run it with sudo")]
    NotPermitted,
    /// A peer that cannot be one.
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// `local` is not configured here.
    #[error("{0}: not an address of this host (see `ip -4 addr`)")]
    LocalNotFound(Input),
    /// Reading this host's addresses failed.
    #[error("cannot read this host's addresses to check {input}")]
    Addresses {
        /// The setting being checked.
        input: Input,
        /// Why.
        source: std::io::Error,
    },
    /// The underlay leaves too little room for a TAP MTU.
    #[error("the underlay MTU {underlay_mtu} leaves a TAP MTU of {fits} after {overhead} bytes of encapsulation, below the minimum {MIN_MTU}: raise the underlay MTU")]
    UnderlayMtuTooSmall {
        /// Smallest path MTU towards the peers.
        underlay_mtu: u32,
        /// What would be left for frames.
        fits: i64,
        /// Encapsulation bytes.
        overhead: u32,
    },
    /// The bridge does not exist.
    #[error("{0}: not found: create it (ip link add {name} type bridge) or fix the bridge name", name = .0.value.trim_matches('"'))]
    BridgeNotFound(Input),
    /// The bridge is not a Linux bridge.
    #[error("{0}: not a Linux bridge: give a bridge (ip -d link show type bridge)")]
    NotABridge(Input),
    /// Neither a peer nor etcd tells the underlay address.
    #[error("no --peer, and no route to etcd at {etcd} tells this host's underlay address ({why}): pass --local IP")]
    NoUnderlay {
        /// The etcd URLs as given.
        etcd: Input,
        /// What was tried.
        why: String,
    },
}

/// Does this process hold CAP_NET_ADMIN and CAP_NET_RAW (root has them)?
pub fn check_privileges() -> Result<(), ResolveError> {
    if crate::privdrop::has_net_privileges() {
        Ok(())
    } else {
        Err(ResolveError::NotPermitted)
    }
}

/// What [`resolve`] decided: the data path's configuration, and the numbers behind it for
/// the startup log.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The data path configuration.
    pub dataplane: DataplaneConfig,
    /// Underlay path MTU towards the peers (smallest).
    pub underlay_mtu: u32,
    /// Bytes added per frame: outer IPv4 + GRE + inner Ethernet.
    pub overhead: u32,
    /// Warnings worth logging.
    pub warnings: Vec<String>,
    /// How the worker count was chosen, for the startup log.
    pub workers_why: String,
}

/// The underlay MTU taken when nothing tells it (no peer, no route to etcd, `--local` given).
const ASSUMED_UNDERLAY_MTU: u32 = 1500;

/// The source address and MTU of the route to the first etcd endpoint that has one.
fn route_to_etcd(
    fleet: &super::FleetSettings,
    host: &dyn Host,
) -> Result<(Ipv4Addr, u32), ResolveError> {
    let mut why = Vec::new();
    for name in fleet.endpoint_hosts() {
        let addrs = match host.lookup(name.trim_matches(|c| c == '[' || c == ']')) {
            Ok(a) if a.is_empty() => {
                why.push(format!("{name} has no IPv4 address"));
                continue;
            }
            Ok(a) => a,
            Err(e) => {
                why.push(format!("{name}: {e}"));
                continue;
            }
        };
        let locals = host.local_addrs().unwrap_or_default();
        for a in addrs {
            if a.is_loopback() || locals.contains(&a) {
                why.push(format!("{a} is this host"));
                continue;
            }
            match host.route_to(a) {
                Ok(r) => return Ok(r),
                Err(e) => why.push(format!("{a}: {e}")),
            }
        }
    }
    Err(ResolveError::NoUnderlay {
        etcd: fleet.etcd.clone(),
        why: why.join("; "),
    })
}

/// Checks `s` against `host` and derives the data path configuration.
pub fn resolve(s: &Settings, host: &dyn Host) -> Result<Resolved, ResolveError> {
    let (workers, workers_why) = match s.workers {
        Some(n) => (n, format!("{n} worker(s): --workers {n}")),
        None => default_workers(host.cores(), s.gre.udp_port.is_some()),
    };
    if let Some(b) = &s.bridge {
        if !host.link_exists(&b.value) {
            return Err(ResolveError::BridgeNotFound(b.input.clone()));
        }
        if !host.is_bridge(&b.value) {
            return Err(ResolveError::NotABridge(b.input.clone()));
        }
    }
    if let Some(l) = &s.local {
        let locals = host
            .local_addrs()
            .map_err(|source| ResolveError::Addresses {
                input: l.input.clone(),
                source,
            })?;
        if !locals.contains(&l.value) {
            return Err(ResolveError::LocalNotFound(l.input.clone()));
        }
    }
    let mut underlay_mtu = u32::MAX;
    let mut routed_src = None;
    let mut warnings = Vec::new();
    let mut peers: Vec<Ipv4Addr> = Vec::with_capacity(s.peers.len());
    for p in &s.peers {
        let route = check_peer(p, &peers, host)?;
        routed_src.get_or_insert(route.source);
        underlay_mtu = underlay_mtu.min(route.path_mtu);
        peers.push(p.value);
    }
    if peers.is_empty() {
        // A fleet host before its peers are known: etcd is on the underlay (or reached the
        // same way), so its route tells the source address and the MTU.
        let fleet = s.fleet.as_ref().expect("Settings has peers or a network");
        match (route_to_etcd(fleet, host), &s.local) {
            (Ok((src, mtu)), _) => {
                routed_src = Some(src);
                underlay_mtu = mtu;
            }
            (Err(e), Some(l)) => {
                underlay_mtu = ASSUMED_UNDERLAY_MTU;
                warnings.push(format!(
                    "{l}: {e}; assuming an underlay MTU of {ASSUMED_UNDERLAY_MTU} (set the network's MTU with `dnetctl network create --mtu`, or --mtu here)",
                    l = l.input
                ));
            }
            (Err(e), None) => return Err(e),
        }
    }
    let local = s
        .local
        .as_ref()
        .map(|l| l.value)
        .or(routed_src)
        .expect("a peer or etcd was routed");

    // Every network's MTU fits the largest header any of them sends (a key takes 4 bytes),
    // and with --encrypt each datagram also carries the seal's header and tag.
    let widest = crate::switch::tunnel::GreOptions {
        key: s.gre.key.or(s.extra_networks.iter().find_map(|e| e.key)),
        ..s.gre
    };
    let seal = seal_overhead(s.encrypt.is_some());
    let overhead = (widest.overhead() + ethernet::HEADER_LEN + seal) as u32;
    let fits = tap_mtu_for(underlay_mtu, &widest) - seal as i64;
    let mut df = true;
    let mut mtu_of = |given: Option<&Sourced<u32>>| -> Result<u32, ResolveError> {
        match given {
            None if fits < i64::from(MIN_MTU) => Err(ResolveError::UnderlayMtuTooSmall {
                underlay_mtu,
                fits,
                overhead,
            }),
            None => Ok(fits as u32),
            Some(m) => {
                if i64::from(m.value) > fits {
                    // Never black-hole: without DF the kernel fragments the outer packet.
                    df = false;
                    warnings.push(format!(
                        "{}: exceeds the {fits} that fits the underlay MTU {underlay_mtu} ({overhead} bytes of encapsulation): outer packets will be fragmented (DF off); raise the underlay MTU to {} to avoid that",
                        m.input,
                        i64::from(m.value) + i64::from(overhead)
                    ));
                }
                Ok(m.value)
            }
        }
    };
    let mtu = mtu_of(s.mtu.as_ref())?;
    let mut extra_mtus = Vec::with_capacity(s.extra_networks.len());
    for e in &s.extra_networks {
        extra_mtus.push(mtu_of(e.mtu.as_ref())?);
    }
    for b in s.extra_networks.iter().filter_map(|e| e.bridge.as_ref()) {
        if !host.link_exists(&b.value) {
            return Err(ResolveError::BridgeNotFound(b.input.clone()));
        }
        if !host.is_bridge(&b.value) {
            return Err(ResolveError::NotABridge(b.input.clone()));
        }
    }
    let core = switch::Config {
        max_frame: mtu as usize + ethernet::TAGGED_HEADER_LEN,
        // Each worker floods from its own core: split the budget between them.
        flood_limit_pps: s.flood_limit.map(|pps| pps.div_ceil(workers as u32)),
        clamp_mss: s.clamp_mss,
        liveness: s.liveness,
        loop_guard: s.loop_guard,
        stp: s.stp,
        // With the tree, not split horizon, keeping tunnel-to-tunnel forwarding loop-free.
        split_horizon: s.stp.is_none(),
        ..switch::Config::default()
    };
    let dataplane = DataplaneConfig {
        local,
        gre: s.gre,
        outer: OuterOptions {
            ttl: s.ttl,
            tos: s.tos,
            df,
        },
        workers,
        offload: s.offload,
        rings: rings(s.packet_rings),
        busy_poll_us: s.busy_poll_us,
        networks: vec![NetworkConfig {
            // The etcd network's name; unnamed with peers given by hand.
            name: s
                .fleet
                .as_ref()
                .map_or_else(String::new, |f| f.network.value.clone()),
            tap: s.tap.clone(),
            bridge: s.bridge.as_ref().map(|b| b.value.clone()),
            mtu,
            key: s.gre.key,
            peers: peers.clone(),
            core: core.clone(),
        }],
        encrypt: s.encrypt.as_ref().map(|e| EncryptConfig {
            private_key: e.private_key.clone(),
            peer_keys: e.peer_keys.iter().map(|p| p.value).collect(),
            cipher: dnet_crypto::CipherPreference::default(),
            limits: e.limits(),
        }),
    };
    let mut dataplane = dataplane;
    for (e, mtu) in s.extra_networks.iter().zip(extra_mtus) {
        // Static peers are the first network's; the others' members come from etcd.
        dataplane.networks.push(NetworkConfig {
            name: e.name.clone(),
            tap: e.tap.clone(),
            bridge: e.bridge.as_ref().map(|b| b.value.clone()),
            mtu,
            key: e.key,
            peers: Vec::new(),
            core: switch::Config {
                max_frame: mtu as usize + ethernet::TAGGED_HEADER_LEN,
                ..core.clone()
            },
        });
    }
    Ok(Resolved {
        dataplane,
        underlay_mtu,
        overhead,
        warnings,
        workers_why,
    })
}

/// The worker count when `--workers` is not given, and why, for `cores` cores; `udp`: the
/// tunnels are GRE-in-UDP.
///
/// A worker is a busy thread, but so are the kernel's softirq work for the TAP and the
/// underlay, and the containers it serves. Plain GRE has the kernel cross the underlay once
/// per segment (with veth underlays the receiving namespace's work runs on the sending CPU
/// too), so each worker is given a second core's worth of room: on 2 cores one worker beat
/// two on one and four TCP streams, 64-byte UDP and CPU per Gbit/s. GRE-in-UDP crosses it
/// once per 64 KiB (UDP GSO and GRO) and leaves the cores to the workers: on a quiet 2-core
/// host two workers beat or tied one on every measure, four TCP streams ×1.19
/// (`docs/internals/performance.md#defaults`).
pub fn default_workers(cores: usize, udp: bool) -> (usize, String) {
    let (n, why) = if udp {
        (
            cores,
            "one per core, as GRE-in-UDP leaves the cores to the workers (on 2 cores two \
             workers beat or tied one on every measured path)",
        )
    } else {
        (
            cores / 2,
            "half of the cores, at least 1, leaving the rest to the kernel's per-segment \
             plain GRE work and the containers (on 2 cores one worker outran two)",
        )
    };
    let n = n.clamp(1, MAX_WORKERS);
    (
        n,
        format!("{n} worker(s) for {cores} core(s): {why}; --workers N overrides"),
    )
}

/// The rings `--packet-rings` asks for.
fn rings(r: PacketRings) -> RingMode {
    match r {
        PacketRings::Off => RingMode::OFF,
        PacketRings::Tx => RingMode {
            tx: true,
            rx: false,
        },
        PacketRings::Rx => RingMode {
            tx: false,
            rx: true,
        },
        PacketRings::On => RingMode::ON,
    }
}

#[cfg(test)]
mod tests {
    use super::super::host::fake::FakeHost;
    use super::super::options::{Encap, Options};
    use super::super::sources::Sources;
    use super::*;
    use crate::error_chain;
    use crate::switch::tunnel::GreOptions;

    fn settings(o: Options) -> Settings {
        let peer = if o.peer.is_empty() {
            vec![Ipv4Addr::new(10, 200, 0, 2).into()]
        } else {
            o.peer.clone()
        };
        Settings::new(&Sources {
            flags: Options { peer, ..o },
            file: None,
        })
        .unwrap()
    }

    fn refusal(o: Options, host: &FakeHost) -> String {
        let e = resolve(&settings(o), host).unwrap_err();
        error_chain::assert_causes_once(&e);
        error_chain::format(&e)
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
    fn resolves_from_the_routes() {
        let host = FakeHost::new();
        let r = resolve(
            &settings(Options {
                peer: vec![
                    Ipv4Addr::new(10, 200, 0, 2).into(),
                    Ipv4Addr::new(10, 200, 0, 3).into(),
                ],
                key: Some(1),
                flood_limit: Some(1001),
                stp: Some(true),
                bridge: Some("br0".into()),
                ..Options::default()
            }),
            &host,
        )
        .unwrap();
        let d = &r.dataplane;
        let net = &d.networks[0];
        assert_eq!(d.local, Ipv4Addr::new(10, 200, 0, 1));
        assert_eq!((net.mtu, r.underlay_mtu, r.overhead), (1458, 1500, 42));
        // FakeHost has 2 cores: one worker, which takes the whole flood limit.
        assert_eq!(d.workers, 1);
        assert!(r
            .workers_why
            .starts_with("1 worker(s) for 2 core(s): half of the cores"));
        assert_eq!(net.core.flood_limit_pps, Some(1001));
        assert!(net.core.stp.is_some() && !net.core.split_horizon && net.core.loop_guard);
        assert!(d.outer.df && r.warnings.is_empty());
        assert_eq!(net.bridge.as_deref(), Some("br0"));
        // Too big an MTU fragments rather than black-holes, and says so.
        let r = resolve(
            &settings(Options {
                mtu: Some(1500),
                ..Options::default()
            }),
            &host,
        )
        .unwrap();
        assert!(!r.dataplane.outer.df);
        assert!(
            r.warnings[0].starts_with("--mtu 1500: exceeds the 1462"),
            "{:?}",
            r.warnings
        );
        // More cores than workers allowed: the default stops at the most allowed; two cores
        // or one get one worker; --workers wins and says so.
        for (cores, want) in [(200, 64), (2, 1), (1, 1), (3, 1)] {
            let host = FakeHost {
                cores,
                ..FakeHost::new()
            };
            let r = resolve(&settings(Options::default()), &host).unwrap();
            assert_eq!(r.dataplane.workers, want, "{cores} cores");
        }
        // GRE-in-UDP: one worker per core, up to the most allowed.
        for (cores, want) in [(200, 64), (2, 2), (1, 1), (3, 3)] {
            let host = FakeHost {
                cores,
                ..FakeHost::new()
            };
            let udp = settings(Options {
                encap: Some(Encap::Udp),
                ..Options::default()
            });
            let r = resolve(&udp, &host).unwrap();
            assert_eq!(r.dataplane.workers, want, "GRE-in-UDP, {cores} cores");
            assert!(r.workers_why.contains("one per core"), "{}", r.workers_why);
        }
        let r = resolve(
            &settings(Options {
                workers: Some(3),
                ..Options::default()
            }),
            &host,
        )
        .unwrap();
        assert_eq!(
            (r.dataplane.workers, r.workers_why.as_str()),
            (3, "3 worker(s): --workers 3")
        );
    }

    #[test]
    fn every_refusal_names_the_input_and_the_fix() {
        let host = FakeHost::new();
        let p = |a: u8| Ipv4Addr::new(10, 200, 0, a);
        for (o, want) in [
            (Options { peer: vec![p(2).into(), p(2).into()], ..Options::default() }, "--peer 10.200.0.2: already configured"),
            (Options { peer: vec![Ipv4Addr::LOCALHOST.into()], ..Options::default() }, "--peer 127.0.0.1: a loopback address"),
            (Options { peer: vec![p(1).into()], ..Options::default() }, "--peer 10.200.0.1: an address of this host: give another host's underlay address"),
            (Options { peer: vec![p(2).into(), Ipv4Addr::new(10, 9, 0, 1).into()], ..Options::default() }, "--peer 10.9.0.1: no route to it (check the underlay routes): Network is unreachable"),
            (Options { local: Some(p(7)), ..Options::default() }, "--local 10.200.0.7: not an address of this host (see `ip -4 addr`)"),
            (Options { bridge: Some("nosuchbr0".into()), ..Options::default() }, "--bridge nosuchbr0: not found: create it (ip link add nosuchbr0 type bridge) or fix the bridge name"),
            (Options { bridge: Some("eth0".into()), ..Options::default() }, "--bridge eth0: not a Linux bridge"),
        ] {
            let got = refusal(o, &host);
            assert!(got.starts_with(want), "{got:?} does not start with {want:?}");
        }
        let blind = FakeHost {
            addrs_fail: true,
            ..FakeHost::new()
        };
        let got = refusal(Options::default(), &blind);
        assert_eq!(
            got,
            "cannot read this host's addresses to check --peer 10.200.0.2: Cannot allocate memory (os error 12)"
        );
        let got = refusal(
            Options {
                local: Some(p(1)),
                ..Options::default()
            },
            &blind,
        );
        assert!(
            got.starts_with(
                "cannot read this host's addresses to check --local 10.200.0.1: Cannot allocate"
            ),
            "{got}"
        );
        let narrow = FakeHost {
            routes: vec![(p(2), p(1), 600)],
            ..FakeHost::new()
        };
        let got = refusal(Options::default(), &narrow);
        assert!(
            got.starts_with("the underlay MTU 600 leaves a TAP MTU of 562 after 38 bytes of encapsulation, below the minimum 576: raise the underlay MTU"),
            "{got}"
        );
    }

    fn fleet_settings(etcd: &str, local: Option<Ipv4Addr>) -> Settings {
        Settings::with_env(
            &Sources {
                flags: Options {
                    network: vec!["blue".into()],
                    etcd: Some(etcd.into()),
                    local,
                    ..Options::default()
                },
                file: None,
            },
            &|_| None,
        )
        .unwrap()
    }

    #[test]
    fn without_peers_the_route_to_etcd_gives_the_underlay() {
        let host = FakeHost::new();
        for etcd in [
            "http://10.200.0.9:2379",
            "http://etcd.example:2379",
            "http://127.0.0.1:2379,http://10.200.0.9:2379",
        ] {
            let r = resolve(&fleet_settings(etcd, None), &host).unwrap();
            assert_eq!(r.dataplane.local, Ipv4Addr::new(10, 200, 0, 1), "{etcd}");
            assert_eq!((r.dataplane.networks[0].mtu, r.underlay_mtu), (1462, 1500));
            assert!(r.dataplane.networks[0].peers.is_empty());
        }
        let e = resolve(
            &fleet_settings("http://10.9.9.9:2379,http://10.200.0.1:2379", None),
            &host,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "no --peer, and no route to etcd at --etcd http://10.9.9.9:2379,http://10.200.0.1:2379 tells this host's underlay address (10.9.9.9: Network is unreachable (os error 101); 10.200.0.1 is this host): pass --local IP"
        );
        // With --local, the MTU is assumed and the warning says how to set it.
        let r = resolve(
            &fleet_settings("http://10.200.0.1:2379", Some(Ipv4Addr::new(10, 200, 0, 1))),
            &host,
        )
        .unwrap();
        assert_eq!((r.dataplane.networks[0].mtu, r.underlay_mtu), (1462, 1500));
        assert!(
            r.warnings[0].starts_with("--local 10.200.0.1: no --peer, and no route to etcd"),
            "{:?}",
            r.warnings
        );
    }

    fn two_networks(bridge: Option<&str>) -> Result<Settings, crate::config::SettingsError> {
        Settings::with_env(
            &Sources {
                flags: Options {
                    network: vec!["blue".into(), "red".into()],
                    etcd: Some("http://10.200.0.9:2379".into()),
                    bridge: bridge.map(String::from),
                    ..Options::default()
                },
                file: None,
            },
            &|_| None,
        )
    }

    #[test]
    fn several_networks_each_get_their_tap_bridge_key_and_mtu() {
        let mut s = two_networks(Some("blue=br-blue, red=br-red")).unwrap();
        assert_eq!(s.tap, "dnet-blue");
        assert_eq!(
            s.control_socket.as_deref(),
            Some(std::path::Path::new("/run/dnet/dnet0.sock"))
        );
        let net = |name: &str, key, mtu| super::super::NetworkSettings {
            name: name.into(),
            key,
            mtu,
            ..Default::default()
        };
        s.apply_network(&net("blue", Some(1), None)).unwrap();
        s.add_network(&net("red", Some(2), Some(1400))).unwrap();
        let host = FakeHost {
            links: vec!["eth0", "br-blue", "br-red"],
            bridges: vec!["br-blue", "br-red"],
            ..FakeHost::new()
        };
        let r = resolve(&s, &host).unwrap();
        let nets: Vec<_> = r
            .dataplane
            .networks
            .iter()
            .map(|n| {
                (
                    n.name.as_str(),
                    n.tap.as_str(),
                    n.bridge.as_deref(),
                    n.key,
                    n.mtu,
                )
            })
            .collect();
        assert_eq!(
            nets,
            [
                ("blue", "dnet-blue", Some("br-blue"), Some(1), 1458),
                ("red", "dnet-red", Some("br-red"), Some(2), 1400)
            ]
        );
        assert_eq!(r.dataplane.networks[1].core.max_frame, 1400 + 18);
        // A key two networks share could not tell their frames apart.
        let e = s.add_network(&net("green", Some(2), None)).unwrap_err();
        assert!(
            e.to_string().contains("GRE key 2 is network red's too"),
            "{e}"
        );
        // Another encapsulation needs another switch.
        let e = s
            .add_network(&super::super::NetworkSettings {
                udp_port: Some(4754),
                ..net("green", Some(3), None)
            })
            .unwrap_err();
        assert!(e.to_string().contains("run another dnet-switch"), "{e}");
    }

    #[test]
    fn several_networks_refuse_what_would_join_them() {
        for (bridge, want) in [
            (
                Some("br0"),
                "--bridge br0: with several --network, give each network's bridge: --bridge blue=br0,red=br1",
            ),
            (
                Some("blue=br0,green=br1"),
                "--bridge blue=br0,green=br1: \"green=br1\" is not NET=BRIDGE with NET one of the --network names",
            ),
        ] {
            let e = two_networks(bridge).unwrap_err();
            assert_eq!(e.to_string(), want);
        }
        let twice = Settings::with_env(
            &Sources {
                flags: Options {
                    network: vec!["blue".into(), "blue".into()],
                    etcd: Some("http://10.200.0.9:2379".into()),
                    ..Options::default()
                },
                file: None,
            },
            &|_| None,
        )
        .unwrap_err();
        assert_eq!(
            twice.to_string(),
            "--network blue,blue: network blue is given twice: give each network once"
        );
        let key = Settings::with_env(
            &Sources {
                flags: Options {
                    network: vec!["blue".into(), "red".into()],
                    etcd: Some("http://10.200.0.9:2379".into()),
                    key: Some(5),
                    ..Options::default()
                },
                file: None,
            },
            &|_| None,
        )
        .unwrap_err();
        assert!(key.to_string().starts_with(
            "--key 5: with several --network, each network's key and MTU come from etcd"
        ));
    }

    #[test]
    fn the_network_settings_replace_the_flags() {
        let mut s = fleet_settings("http://10.200.0.9:2379", None);
        s.apply_network(&super::super::NetworkSettings {
            name: "blue".into(),
            udp_port: Some(4754),
            key: Some(7),
            mtu: Some(1400),
            encrypt: false,
        })
        .unwrap();
        let r = resolve(&s, &FakeHost::new()).unwrap();
        assert_eq!(r.dataplane.gre.udp_port, Some(4754));
        assert_eq!(
            (r.dataplane.gre.key, r.dataplane.networks[0].mtu),
            (Some(7), 1400)
        );
        let e = s
            .apply_network(&super::super::NetworkSettings {
                name: "blue".into(),
                mtu: Some(100),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "mtu 100 (from network blue in etcd): below the minimum 576: use 576 or more, or leave it out to derive it from the underlay MTU"
        );
        let e = s
            .apply_network(&super::super::NetworkSettings {
                name: "blue".into(),
                encrypt: true,
                ..Default::default()
            })
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("network blue in etcd: its tunnels are sealed"),
            "{e}"
        );
    }

    #[test]
    fn a_file_bridge_is_named_with_its_line() {
        let s = Settings::new(&Sources {
            flags: Options::default(),
            file: Some(
                super::super::file::parse(
                    std::path::Path::new("/etc/dnet.toml"),
                    "peer = [\"10.200.0.2\"]\nbridge = \"docker1\"\n",
                )
                .unwrap(),
            ),
        })
        .unwrap();
        let e = resolve(&s, &FakeHost::new()).unwrap_err().to_string();
        assert_eq!(
            e,
            "config file /etc/dnet.toml, line 2: bridge = \"docker1\": not found: create it (ip link add docker1 type bridge) or fix the bridge name"
        );
    }
}
