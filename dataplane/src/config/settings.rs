//! [`Settings`]: the options from every source, with defaults applied and validated. Nothing
//! here looks at the network (that is [`super::resolve`]); users and groups are looked up,
//! since a name that does not exist is a typo in the settings.

use super::encrypt::{encrypt_settings, EncryptSettings};
pub use super::error::SettingsError;
use super::fleet::{fleet_settings, FleetSettings};
use super::input::{Input, Sourced};
pub use super::limits::{MAX_BUSY_POLL_US, MAX_WORKERS, MIN_MTU};
use super::options::{Encap, PacketRings};
use super::sources::{get, Sources};
use crate::privdrop::{self, User};
use crate::switch::tunnel::GreOptions;
use crate::switch::{liveness, stp};
use crate::wire::ethernet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use crate::switch::tunnel::GRE_IN_UDP_PORT;

/// A group allowed to use the control socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// Its name.
    pub name: String,
    /// Its id.
    pub gid: u32,
}

/// Everything `dnet-switch` was asked to do, validated; what is still unknown depends on the
/// host (routes, addresses) and is settled by [`super::resolve`].
#[derive(Clone, Debug)]
pub struct Settings {
    /// Peers: the flags' first, then the file's, each once, with where each was given.
    pub peers: Vec<Sourced<Ipv4Addr>>,
    /// Underlay source address; `None`: the one routing picks for the first peer.
    pub local: Option<Sourced<Ipv4Addr>>,
    /// TAP name (may hold a `%d` template).
    pub tap: String,
    /// Bridge to attach the TAP to.
    pub bridge: Option<Sourced<String>>,
    /// TAP MTU, checked against the encapsulation; `None`: underlay MTU − overhead.
    pub mtu: Option<Sourced<u32>>,
    /// Encapsulation, key, checksums and sequence numbers.
    pub gre: GreOptions,
    /// Outer TTL (1..=255).
    pub ttl: u8,
    /// Outer TOS.
    pub tos: u8,
    /// Worker threads (1..=64); `None`: chosen by [`super::resolve::default_workers`].
    pub workers: Option<usize>,
    /// TAP offloads.
    pub offload: bool,
    /// Which AF_PACKET rings plain GRE uses.
    pub packet_rings: PacketRings,
    /// Busy-poll window after an exchange's traffic, microseconds (0: off).
    pub busy_poll_us: u32,
    /// Log level.
    pub log_level: log::LevelFilter,
    /// Control socket path; `None`: `/run/dnet/<TAP>.sock` once the TAP's name is known.
    pub control_socket: Option<PathBuf>,
    /// A group that may use the control socket besides root.
    pub control_group: Option<Group>,
    /// Prometheus endpoint.
    pub metrics: Option<SocketAddr>,
    /// Floods per second per port, for the whole switch (split between the workers).
    pub flood_limit: Option<u32>,
    /// User to become after setup.
    pub user: Option<User>,
    /// Lower the MSS of TCP SYNs entering the tunnels.
    pub clamp_mss: bool,
    /// Keepalives (interval 0: off).
    pub liveness: liveness::Config,
    /// Block a tunnel whose stations flap with the local port.
    pub loop_guard: bool,
    /// The spanning tree, if on.
    pub stp: Option<stp::Config>,
    /// The config file, if any (for `dnetctl show` and SIGHUP).
    pub config_file: Option<PathBuf>,
    /// The etcd network to join (`--network`), if any.
    pub fleet: Option<FleetSettings>,
    /// `--docker`: serve the Docker plugin, its socket in this directory.
    pub docker: Option<PathBuf>,
    /// With several `--network`: the bridges of the networks after the first (by name), from
    /// `--bridge NET=BRIDGE,...`.
    pub network_bridges: Vec<(String, Sourced<String>)>,
    /// With several `--network`: the networks after the first, as etcd defines them (filled
    /// by [`Settings::add_network`]); the first is this struct's own tap, bridge, key and MTU.
    pub extra_networks: Vec<ExtraNetwork>,
    /// Sealed tunnels (`--encrypt`): this host's key and the peers' keys given here.
    pub encrypt: Option<EncryptSettings>,
}

/// A further network of a switch serving several: its own TAP, bridge, key and MTU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtraNetwork {
    /// Its name.
    pub name: String,
    /// Its TAP (`dnet-NAME`).
    pub tap: String,
    /// Its bridge, if given.
    pub bridge: Option<Sourced<String>>,
    /// Its GRE key.
    pub key: Option<u32>,
    /// Its TAP MTU; `None`: underlay MTU − overhead.
    pub mtu: Option<Sourced<u32>>,
}

/// `--busy-poll` when not given, microseconds: covers a round trip's reply on the 2-vCPU test
/// VM. Since streams and steady traffic open no window, it costs neither encapsulation
/// throughput (`docs/internals/performance.md#round-trip-time`).
pub const DEFAULT_BUSY_POLL_US: u32 = 200;

/// Where Docker looks for plugin sockets (`--docker-plugin-dir`'s default).
pub const DEFAULT_PLUGIN_DIR: &str = "/run/docker/plugins";

/// The TAP of network `name` on a switch serving several: `dnet-NAME`.
pub fn network_tap(name: &str) -> String {
    format!("dnet-{name}")
}

/// The control socket of a switch serving several networks, whose TAPs are all named after
/// their network: the one a single-network switch has by default, so `dnet-cni` and
/// `dnetctl` find it without being told.
pub const SEVERAL_NETWORKS_SOCKET: &str = "/run/dnet/dnet0.sock";

/// A network's data-path settings as stored in etcd, for [`Settings::apply_network`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkSettings {
    /// The network's name.
    pub name: String,
    /// GRE-in-UDP's port; `None`: GRE.
    pub udp_port: Option<u16>,
    /// GRE key.
    pub key: Option<u32>,
    /// TAP MTU; `None`: derived from the underlay.
    pub mtu: Option<u32>,
    /// Tunnels are sealed (issue 16).
    pub encrypt: bool,
}

/// The TAP MTU for an underlay MTU, given the GRE options: underlay − IPv4 − GRE − Ethernet.
pub fn tap_mtu_for(underlay_mtu: u32, gre: &GreOptions) -> i64 {
    i64::from(underlay_mtu) - (gre.overhead() + ethernet::HEADER_LEN) as i64
}

/// Bytes `--encrypt` adds to each datagram (header and tag), 0 without it.
pub fn seal_overhead(encrypt: bool) -> usize {
    if encrypt {
        dnet_crypto::wire::OVERHEAD
    } else {
        0
    }
}

impl Settings {
    /// Applies the defaults to `sources` and validates every setting; `$DNET_ETCD` and
    /// `$DNET_ETCD_PASSWORD` come from the process's environment.
    pub fn new(sources: &Sources) -> Result<Settings, SettingsError> {
        Settings::with_env(sources, &|var| std::env::var(var).ok())
    }

    /// [`Settings::new`] with the environment read through `env`.
    pub fn with_env(
        sources: &Sources,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, SettingsError> {
        let s = sources;
        let peers = s.peers();
        let fleet = fleet_settings(s, env)?;
        if peers.is_empty() && fleet.is_none() {
            return Err(SettingsError::NoPeers);
        }

        let udp = get!(s, encap).is_some_and(|e| e.value == Encap::Udp);
        let udp_port = match (udp, get!(s, udp_port)) {
            (false, Some(p)) => return Err(SettingsError::UdpPortWithoutUdp(p.input)),
            (false, None) => None,
            (true, Some(p)) if p.value == 0 => return Err(SettingsError::UdpPortZero(p.input)),
            (true, p) => Some(p.map_or(GRE_IN_UDP_PORT, |p| p.value)),
        };
        let encrypt = encrypt_settings(s, udp, fleet.is_some())?;
        let flag = |v: Option<Sourced<bool>>, default: bool| v.map_or(default, |v| v.value);
        let gre = GreOptions {
            udp_port,
            key: get!(s, key).map(|k| k.value),
            csum: flag(get!(s, csum), false),
            seq: flag(get!(s, seq), false),
        };

        let ttl = get!(s, ttl);
        if let Some(t) = ttl.as_ref().filter(|t| t.value == 0) {
            return Err(SettingsError::Ttl(t.input.clone()));
        }
        let workers = get!(s, workers);
        if let Some(w) = workers
            .as_ref()
            .filter(|w| !(1..=MAX_WORKERS).contains(&w.value))
        {
            return Err(SettingsError::Workers(w.input.clone()));
        }
        let busy_poll = get!(s, busy_poll);
        if let Some(b) = busy_poll.as_ref().filter(|b| b.value > MAX_BUSY_POLL_US) {
            return Err(SettingsError::BusyPoll(b.input.clone()));
        }
        let mtu = get!(s, mtu);
        if let Some(m) = &mtu {
            check_mtu(m, &gre, encrypt.is_some())?;
        }

        let interval = get!(s, keepalive_interval);
        let multiplier = get!(s, keepalive_multiplier);
        let mut liveness = liveness::Config::default();
        if flag(get!(s, keepalive), false) || interval.is_some() || multiplier.is_some() {
            if let Some(i) = interval.as_ref().filter(|i| i.value < 10) {
                return Err(SettingsError::KeepaliveInterval(i.input.clone()));
            }
            if let Some(m) = multiplier
                .as_ref()
                .filter(|m| !(1..=255).contains(&m.value))
            {
                return Err(SettingsError::KeepaliveMultiplier(m.input.clone()));
            }
            liveness.interval_ms = interval.map_or(1000, |i| i.value);
            liveness.multiplier = multiplier.map_or(3, |m| m.value);
        }

        let priority = get!(s, stp_priority);
        let stp = if flag(get!(s, stp), false) {
            if let Some(p) = priority
                .as_ref()
                .filter(|p| p.value % 4096 != 0 || p.value > 61440)
            {
                return Err(SettingsError::StpPriority(p.input.clone()));
            }
            Some(stp::Config {
                priority: priority.map_or(32768, |p| p.value),
                ..stp::Config::default()
            })
        } else if let Some(p) = priority {
            return Err(SettingsError::StpPriorityWithoutStp(p.input));
        } else {
            None
        };

        let names = fleet.as_ref().map_or(&[][..], |f| &f.networks[..]);
        let mut tap = get!(s, tap).map_or_else(|| "dnet0".to_string(), |t| t.value);
        let mut bridge = get!(s, bridge);
        let mut network_bridges = Vec::new();
        let mut control_socket = get!(s, control_socket).map(|p| p.value);
        if names.len() > 1 {
            if let Some(t) = get!(s, tap) {
                return Err(SettingsError::TapWithSeveralNetworks(t.input));
            }
            for n in names {
                let t = network_tap(n);
                if t.len() > 15 {
                    return Err(SettingsError::NetworkNameTooLong {
                        input: fleet.as_ref().expect("names").network.input.clone(),
                        name: n.clone(),
                    });
                }
            }
            tap = network_tap(&names[0]);
            control_socket.get_or_insert_with(|| SEVERAL_NETWORKS_SOCKET.into());
        }
        if let Some(b) = bridge.take() {
            if b.value.contains('=') {
                let mut map = Vec::new();
                for pair in b.value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let (net, br) = pair.split_once('=').unwrap_or((pair, ""));
                    if !names.iter().any(|n| n == net) || br.is_empty() {
                        return Err(SettingsError::BridgeMap {
                            input: b.input.clone(),
                            pair: pair.to_string(),
                        });
                    }
                    map.push((net.to_string(), br.to_string()));
                }
                for (net, br) in map {
                    let v = Sourced {
                        value: br,
                        input: b.input.clone(),
                    };
                    if net == names[0] {
                        bridge = Some(v);
                    } else {
                        network_bridges.push((net, v));
                    }
                }
            } else if names.len() > 1 {
                // One bridge for two networks would join their segments.
                return Err(SettingsError::OneBridgeForSeveralNetworks(b.input));
            } else {
                bridge = Some(b);
            }
        }

        let docker = match (get!(s, docker), get!(s, docker_plugin_dir)) {
            (Some(d), dir) if d.value => {
                if fleet.is_none() {
                    return Err(SettingsError::DockerWithoutNetwork(d.input));
                }
                Some(dir.map_or_else(|| PathBuf::from(DEFAULT_PLUGIN_DIR), |d| d.value))
            }
            (_, Some(dir)) => return Err(SettingsError::PluginDirWithoutDocker(dir.input)),
            _ => None,
        };

        let user = match get!(s, user) {
            Some(u) => {
                Some(privdrop::lookup_user(&u.value).ok_or(SettingsError::NoSuchUser(u.input))?)
            }
            None => None,
        };
        let control_group = match get!(s, control_group) {
            Some(g) => Some(Group {
                gid: privdrop::lookup_group(&g.value).ok_or(SettingsError::NoSuchGroup(g.input))?,
                name: g.value,
            }),
            None => None,
        };

        Ok(Settings {
            peers,
            local: get!(s, local),
            tap,
            bridge,
            mtu,
            gre,
            ttl: ttl.map_or(64, |t| t.value),
            tos: get!(s, tos).map_or(0, |t| t.value),
            workers: workers.map(|w| w.value),
            offload: flag(get!(s, offload), true),
            packet_rings: get!(s, packet_rings).map_or(PacketRings::default(), |r| r.value),
            busy_poll_us: busy_poll.map_or(DEFAULT_BUSY_POLL_US, |b| b.value),
            log_level: s.log_level(),
            control_socket,
            control_group,
            metrics: get!(s, metrics).map(|m| m.value),
            // A file's `flood_limit = 0` is "unlimited" (the flag refuses 0).
            flood_limit: get!(s, flood_limit).map(|f| f.value).filter(|f| *f > 0),
            user,
            clamp_mss: flag(get!(s, clamp_mss), false),
            liveness,
            loop_guard: flag(get!(s, loop_guard), true),
            stp,
            config_file: s.config_path().map(|p| p.to_path_buf()),
            fleet,
            docker,
            network_bridges,
            extra_networks: Vec::new(),
            encrypt,
        })
    }

    /// Takes a further network of a switch serving several (`--network` repeated), as etcd
    /// defines it. Its encapsulation must be the first network's: the switch has one tunnel
    /// socket, and the key is what tells its networks apart.
    pub fn add_network(&mut self, net: &NetworkSettings) -> Result<(), SettingsError> {
        let input = |key: &str, v: &dyn std::fmt::Display| Input::etcd(key, &net.name, v);
        let first = self
            .fleet
            .as_ref()
            .map_or_else(String::new, |f| f.network.value.clone());
        // The seal is switch-wide (one key pair, one session per host): all networks or none.
        if net.encrypt != self.encrypt.is_some() {
            let sealed = |b: bool| if b { "sealed" } else { "cleartext" };
            return Err(SettingsError::Network {
                network: net.name.clone(),
                what: format!(
                    "its tunnels are {}, network {first}'s are {}: one switch seals all its tunnels or none; run another dnet-switch for it",
                    sealed(net.encrypt),
                    sealed(self.encrypt.is_some())
                ),
            });
        }
        if net.udp_port != self.gre.udp_port {
            let encap = |p: Option<u16>| p.map_or("gre".to_string(), |p| format!("udp port {p}"));
            return Err(SettingsError::Network {
                network: net.name.clone(),
                what: format!(
                    "its encapsulation is {}, network {first}'s is {}: one switch serves networks of one encapsulation; run another dnet-switch for it",
                    encap(net.udp_port),
                    encap(self.gre.udp_port)
                ),
            });
        }
        let key = net.key.unwrap_or(0);
        let taken = std::iter::once((first.as_str(), self.gre.key))
            .chain(self.extra_networks.iter().map(|e| (e.name.as_str(), e.key)))
            .find(|(_, k)| k.unwrap_or(0) == key);
        if let Some((other, _)) = taken {
            return Err(SettingsError::Network {
                network: net.name.clone(),
                what: format!(
                    "its GRE key {key} is network {other}'s too, so their frames could not be told apart: give one of them another key (dnetctl network create --key)"
                ),
            });
        }
        let mtu = match net.mtu {
            Some(m) => {
                let m = Sourced {
                    value: m,
                    input: input("mtu", &m),
                };
                check_mtu(&m, &self.gre, self.encrypt.is_some())?;
                Some(m)
            }
            None => None,
        };
        self.extra_networks.push(ExtraNetwork {
            name: net.name.clone(),
            tap: network_tap(&net.name),
            bridge: self
                .network_bridges
                .iter()
                .find(|(n, _)| *n == net.name)
                .map(|(_, b)| b.clone()),
            key: net.key,
            mtu,
        });
        Ok(())
    }

    /// Takes the encapsulation, key and MTU of the network this host joined (the cluster
    /// agent has already refused flags that contradict them), checked as if given here.
    pub fn apply_network(&mut self, net: &NetworkSettings) -> Result<(), SettingsError> {
        let input = |key: &str, v: &dyn std::fmt::Display| Input::etcd(key, &net.name, v);
        let network = |what: String| SettingsError::Network {
            network: net.name.clone(),
            what,
        };
        match (&self.encrypt, net.encrypt) {
            (None, true) => return Err(network(
                "its tunnels are sealed (created with --encrypt): start this host with --private-key FILE (`dnetctl keygen --out FILE` makes one); its public key is published in etcd for the other members".into(),
            )),
            (Some(_), true) if net.udp_port.is_none() => return Err(network(
                "it is marked encrypted but uses plain GRE, which cannot be sealed: recreate it with --encap udp --encrypt".into(),
            )),
            (Some(e), false) if e.requested => return Err(network(format!(
                "{}: the network's tunnels are not sealed, so this host could reach no member: drop --encrypt here, or recreate the network with `dnetctl network create --encap udp --encrypt`",
                e.input
            ))),
            // A key for a network that does not encrypt: unused.
            (Some(_), false) => self.encrypt = None,
            (Some(e), true) => {
                // A --peer beside the network's members must bring its key too.
                if let Some(p) = self
                    .peers
                    .iter()
                    .find(|p| !e.peer_keys.iter().any(|k| k.value.0 == p.value))
                {
                    return Err(SettingsError::PeerWithoutKey {
                        input: p.input.clone(),
                    });
                }
            }
            _ => {}
        }
        self.gre.udp_port = net.udp_port;
        if self.gre.udp_port == Some(0) {
            return Err(SettingsError::UdpPortZero(input("udp_port", &0)));
        }
        self.gre.key = net.key;
        if let Some(m) = net.mtu {
            let m = Sourced {
                value: m,
                input: input("mtu", &m),
            };
            check_mtu(&m, &self.gre, self.encrypt.is_some())?;
            self.mtu = Some(m);
        }
        Ok(())
    }
}

/// A TAP MTU must carry an IPv4 minimum-size packet and fit one outer packet.
fn check_mtu(m: &Sourced<u32>, gre: &GreOptions, sealed: bool) -> Result<(), SettingsError> {
    if m.value < MIN_MTU {
        return Err(SettingsError::MtuTooSmall(m.input.clone()));
    }
    let max = 65_535 - (gre.overhead() + ethernet::HEADER_LEN + seal_overhead(sealed)) as u32;
    if m.value > max {
        return Err(SettingsError::MtuTooLarge {
            input: m.input.clone(),
            max,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::file;
    use super::super::input::Origin;
    use super::super::options::Options;
    use super::*;
    use std::path::Path;

    const PEER: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);

    fn flags(o: Options) -> Sources {
        Sources {
            flags: Options {
                peer: vec![PEER.into()],
                ..o
            },
            file: None,
        }
    }

    fn file(text: &str) -> Sources {
        Sources {
            flags: Options::default(),
            file: Some(file::parse(Path::new("/etc/dnet.toml"), text).unwrap()),
        }
    }

    fn refusal(s: Sources) -> String {
        let e = Settings::new(&s).unwrap_err();
        crate::error_chain::assert_causes_once(&e);
        e.to_string()
    }

    #[test]
    fn busy_polling_defaults_alike_on_both_encapsulations() {
        let udp = |busy_poll| {
            Settings::new(&flags(Options {
                encap: Some(Encap::Udp),
                busy_poll,
                ..Options::default()
            }))
            .unwrap()
            .busy_poll_us
        };
        assert_eq!(udp(None), DEFAULT_BUSY_POLL_US);
        assert_eq!(udp(Some(0)), 0);
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let s = Settings::new(&flags(Options::default())).unwrap();
        assert_eq!(s.peers.len(), 1);
        assert_eq!(s.tap, "dnet0");
        assert_eq!(s.gre, GreOptions::default());
        assert_eq!((s.ttl, s.tos, s.workers), (64, 0, None));
        assert_eq!(s.busy_poll_us, DEFAULT_BUSY_POLL_US);
        assert!(s.offload && s.loop_guard && !s.clamp_mss);
        assert_eq!(s.liveness, liveness::Config::default());
        assert_eq!(s.stp, None);
        assert_eq!(s.log_level, log::LevelFilter::Info);
        assert_eq!((s.flood_limit, s.user.is_none()), (None, true));
    }

    #[test]
    fn options_become_settings() {
        let s = Settings::new(&flags(Options {
            encap: Some(Encap::Udp),
            key: Some(7),
            csum: Some(true),
            keepalive_interval: Some(200),
            stp: Some(true),
            stp_priority: Some(4096),
            offload: Some(false),
            loop_guard: Some(false),
            user: Some("root".into()),
            control_group: Some("root".into()),
            ..Options::default()
        }))
        .unwrap();
        assert_eq!(
            s.gre,
            GreOptions {
                udp_port: Some(GRE_IN_UDP_PORT),
                key: Some(7),
                csum: true,
                seq: false
            }
        );
        assert_eq!((s.liveness.interval_ms, s.liveness.multiplier), (200, 3));
        assert_eq!(s.stp.map(|c| c.priority), Some(4096));
        assert!(!s.offload && !s.loop_guard);
        assert_eq!(s.user.map(|u| u.uid), Some(0));
        assert_eq!(s.control_group.map(|g| g.gid), Some(0));
        // A file's zero flood limit is no limit.
        let s = Settings::new(&file("peer = [\"10.200.0.2\"]\nflood_limit = 0\n")).unwrap();
        assert_eq!(s.flood_limit, None);
        assert_eq!(s.config_file.as_deref(), Some(Path::new("/etc/dnet.toml")));
        assert!(matches!(
            s.peers[0].input.origin,
            Origin::File { line: 1, .. }
        ));
    }

    #[test]
    fn every_refusal_names_the_flag_and_the_fix() {
        let cases: Vec<(Options, &str)> = vec![
            (
                Options {
                    ttl: Some(0),
                    ..Options::default()
                },
                "--ttl 0: would drop every packet at the first hop: use 1 to 255",
            ),
            (
                Options {
                    workers: Some(0),
                    ..Options::default()
                },
                "--workers 0: out of range: use 1 to 64",
            ),
            (
                Options {
                    workers: Some(65),
                    ..Options::default()
                },
                "--workers 65: out of range",
            ),
            (
                Options {
                    busy_poll: Some(10_001),
                    ..Options::default()
                },
                "--busy-poll 10001: out of range: use 0 (off) to 10000 microseconds",
            ),
            (
                Options {
                    mtu: Some(400),
                    ..Options::default()
                },
                "--mtu 400: below the minimum 576: use 576 or more",
            ),
            (
                Options {
                    mtu: Some(65_500),
                    ..Options::default()
                },
                "--mtu 65500: too large: at most 65497 fits",
            ),
            (
                Options {
                    udp_port: Some(5000),
                    ..Options::default()
                },
                "--udp-port 5000: only used with GRE-in-UDP: add --encap udp",
            ),
            (
                Options {
                    keepalive_interval: Some(5),
                    ..Options::default()
                },
                "--keepalive-interval 5: below 10 ms: use 10 or more",
            ),
            (
                Options {
                    keepalive_multiplier: Some(300),
                    ..Options::default()
                },
                "--keepalive-multiplier 300: out of range: use 1 to 255",
            ),
            (
                Options {
                    stp: Some(true),
                    stp_priority: Some(300),
                    ..Options::default()
                },
                "--stp-priority 300: must be a multiple of 4096 from 0 to 61440",
            ),
            (
                Options {
                    stp: Some(true),
                    stp_priority: Some(65535),
                    ..Options::default()
                },
                "--stp-priority 65535: must be a multiple of 4096",
            ),
            (
                Options {
                    stp_priority: Some(4096),
                    ..Options::default()
                },
                "--stp-priority 4096: only used with the spanning tree: add --stp",
            ),
            (
                Options {
                    user: Some("no-such-user-dnet".into()),
                    ..Options::default()
                },
                "--user no-such-user-dnet: no such user (see /etc/passwd)",
            ),
            (
                Options {
                    control_group: Some("no-such-group-dnet".into()),
                    ..Options::default()
                },
                "--control-group no-such-group-dnet: no such group (see /etc/group)",
            ),
        ];
        for (o, want) in cases {
            let got = refusal(flags(o));
            assert!(
                got.starts_with(want),
                "{got:?} does not start with {want:?}"
            );
        }
        assert_eq!(
            refusal(Sources::default()),
            SettingsError::NoPeers.to_string()
        );
    }

    #[test]
    fn file_refusals_name_the_file_and_line() {
        let p = "peer = [\"10.200.0.2\"]\n";
        for (text, want) in [
            ("ttl = 0\n", "config file /etc/dnet.toml, line 2: ttl = 0: would drop"),
            ("encap = \"udp\"\nudp_port = 0\n", "config file /etc/dnet.toml, line 3: udp_port = 0: port 0 cannot be sent to"),
            ("keepalive_interval = 5\n", "config file /etc/dnet.toml, line 2: keepalive_interval = 5: below 10 ms"),
            ("keepalive_multiplier = 0\n", "config file /etc/dnet.toml, line 2: keepalive_multiplier = 0: out of range"),
            ("stp = true\n\nstp_priority = 100\n", "config file /etc/dnet.toml, line 4: stp_priority = 100: must be a multiple of 4096"),
            ("user = \"no-such-user-dnet\"\n", "config file /etc/dnet.toml, line 2: user = \"no-such-user-dnet\": no such user"),
        ] {
            let got = refusal(file(&format!("{p}{text}")));
            assert!(got.starts_with(want), "{got:?} does not start with {want:?}");
        }
    }

    #[test]
    fn a_flag_overrides_the_file_value_it_names() {
        let mut s = file("peer = [\"10.200.0.2\"]\nttl = 0\n");
        s.flags.ttl = Some(3);
        assert_eq!(Settings::new(&s).unwrap().ttl, 3);
        s.flags.ttl = Some(0);
        assert!(refusal(s).starts_with("--ttl 0:"));
    }
}
