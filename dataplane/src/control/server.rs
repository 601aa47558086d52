//! The control socket server: a thread at the edge answering [`Request`]s from counters the
//! workers publish. Only root (uid 0) may talk to it: the socket file is mode 0600 and every
//! peer's credentials are checked.

use super::fleet::{Fleet, NOT_IN_A_NETWORK};
use crate::config::{self, Input, Origin, PeerError, Sourced, SystemHost};
use crate::error_chain;
use crate::io::gre_socket::OuterOptions;
use crate::io::{ControlError, DataplaneControl};
use crate::switch::tunnel::GreOptions;
use crate::switch::{Counters, DropReason, Event, PortId, PortKind};
use dnet_proto::{
    ClaimEntry, ConflictEntry, ConflictList, DropCount, FdbEntry, FdbTable, FleetInfo, GreInfo,
    NetworkEntry, PortInfo, PortKind as WirePortKind, PortStats, Request, Response, Show, Stats,
};
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::{Mutex, OnceLock, Weak};
use std::time::Duration;
use std::time::Instant;

/// Longest request line accepted.
const MAX_REQUEST: u64 = 64 * 1024;

/// Control socket setup errors.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another switch answers on this path.
    #[error("control socket {0} is in use by a running dnet-switch: stop it or pass another --control-socket")]
    InUse(String),
    /// Creating the directory or socket failed.
    #[error("cannot create control socket {path} (choose another --control-socket)")]
    Create {
        /// Path.
        path: String,
        /// errno.
        source: io::Error,
    },
}

/// Why a peer could not be added at run time.
#[derive(Debug, thiserror::Error)]
pub enum PeerChangeError {
    /// The address cannot be a peer.
    #[error(transparent)]
    Check(#[from] PeerError),
    /// The data path refused it (port table full, or added meanwhile).
    #[error(transparent)]
    Dataplane(#[from] ControlError),
    /// No public key for a peer of a switch with `--encrypt`.
    #[error("{0}: this switch encrypts (--encrypt), so the peer needs its public key: dnetctl peer add {addr} --key PUBKEY (`dnetctl pubkey` on {addr} prints it)", addr = .0.value)]
    NoKey(Input),
    /// A public key for a switch without `--encrypt`.
    #[error("{0}: a public key is only used by a switch started with --encrypt: add the peer without --key, or restart this switch with --encrypt")]
    KeyWithoutEncrypt(Input),
    /// A public key the switch cannot take (its own, another peer's).
    #[error("{input}")]
    Key {
        /// The peer as given.
        input: Input,
        /// Why.
        source: ControlError,
    },
    /// A public key that is not one.
    #[error("{input}: {why}")]
    BadKey {
        /// The peer as given.
        input: Input,
        /// Why (the key parser's message).
        why: String,
    },
}

/// Where a peer came from; SIGHUP only adds and removes `Config` peers, etcd only `Etcd`
/// peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerOrigin {
    /// `--peer` on the command line.
    Flag,
    /// `peer = [...]` in the configuration file.
    Config,
    /// `dnetctl peer add`.
    Runtime,
    /// A member of the etcd network (`--network`).
    Etcd,
}

impl From<&Origin> for PeerOrigin {
    fn from(o: &Origin) -> Self {
        match o {
            // No setting read from the environment is a peer; the command line's it would be.
            Origin::Flag | Origin::Env { .. } => PeerOrigin::Flag,
            Origin::File { .. } => PeerOrigin::Config,
            Origin::Runtime => PeerOrigin::Runtime,
            Origin::Etcd { .. } => PeerOrigin::Etcd,
        }
    }
}

impl PeerOrigin {
    /// `flag`, `config` or `runtime`.
    pub fn name(self) -> &'static str {
        match self {
            PeerOrigin::Flag => "flag",
            PeerOrigin::Config => "config",
            PeerOrigin::Runtime => "runtime",
            PeerOrigin::Etcd => "etcd",
        }
    }
}

/// Settings shown by `dnetctl show` that the data path does not keep.
#[derive(Clone, Debug, Default)]
pub struct SwitchSettings {
    /// Bridge the TAP is attached to.
    pub bridge: Option<String>,
    /// GRE options.
    pub gre: GreOptions,
    /// Outer IPv4 options (`None` shows the defaults).
    pub outer: Option<OuterOptions>,
    /// Control socket path.
    pub control_socket: String,
    /// Prometheus endpoint, if enabled.
    pub metrics: Option<String>,
    /// Configuration file, if any.
    pub config_file: Option<String>,
}

/// A tunnel is `active` while it received a frame within this many seconds.
const ACTIVE_SECS: u64 = 60;

/// Per-port receive activity, sampled from the counters (GRE has no keepalive).
#[derive(Clone, Copy, Debug)]
struct Activity {
    kind: PortKind,
    rx_packets: u64,
    last_rx: Option<Instant>,
}

/// What the server reports about the switch, and the run-time changes it makes.
pub struct SwitchInfo {
    /// TAP name.
    pub tap: String,
    /// TAP MTU.
    pub mtu: u32,
    /// Underlay source.
    pub local: Ipv4Addr,
    /// The running data path.
    pub dataplane: Arc<DataplaneControl>,
    /// Further settings, for `show`.
    pub settings: SwitchSettings,
    started: Instant,
    origins: Mutex<HashMap<Ipv4Addr, PeerOrigin>>,
    activity: Mutex<Vec<Option<Activity>>>,
    fleet: OnceLock<Arc<dyn Fleet>>,
}

impl SwitchInfo {
    /// Describes a running switch whose initial peers came from `origins`.
    pub fn new(
        tap: String,
        mtu: u32,
        local: Ipv4Addr,
        dataplane: Arc<DataplaneControl>,
        settings: SwitchSettings,
        origins: impl IntoIterator<Item = (Ipv4Addr, PeerOrigin)>,
    ) -> SwitchInfo {
        SwitchInfo {
            tap,
            mtu,
            local,
            dataplane,
            settings,
            started: Instant::now(),
            origins: Mutex::new(origins.into_iter().collect()),
            activity: Mutex::new(Vec::new()),
            fleet: OnceLock::new(),
        }
    }

    /// Adds the etcd network the switch joined (`--network`), for `show`, metrics and address
    /// allocation. Set once; a second call is ignored.
    pub fn set_fleet(&self, fleet: Arc<dyn Fleet>) {
        let _ = self.fleet.set(fleet);
    }

    /// The etcd network's status, if the switch joined one.
    pub fn fleet_info(&self) -> Option<FleetInfo> {
        self.fleet.get().map(|f| f.info())
    }

    fn fleet(&self) -> Result<&Arc<dyn Fleet>, String> {
        self.fleet.get().ok_or_else(|| NOT_IN_A_NETWORK.to_string())
    }

    fn port_name(&self, k: PortKind) -> String {
        match k {
            PortKind::Local => self.tap.clone(),
            PortKind::Tunnel(a) => format!("gre-{a}"),
        }
    }

    fn port_name_by_id(&self, ports: &[Option<PortKind>], id: PortId) -> String {
        match ports.get(usize::from(id)).copied().flatten() {
            Some(k) => self.port_name(k),
            None => format!("port-{id}"),
        }
    }

    /// Frames received on port `id`, control frames (BPDUs, keepalives) included: for
    /// activity, where any sign of the peer counts.
    fn rx_packets(&self, id: usize) -> u64 {
        self.dataplane
            .counters
            .iter()
            .map(|c| c.ports[id].rx_packets.get() + c.ports[id].rx_control.get())
            .sum()
    }

    /// Notes which ports received frames since the last call (called every second by the
    /// server's monitor thread, and before `show` answers).
    pub fn sample_activity(&self) {
        let ports = self.dataplane.ports();
        let now = Instant::now();
        let mut act = self.activity.lock().unwrap_or_else(|e| e.into_inner());
        let len = ports.len().max(act.len());
        act.resize(len, None);
        for (i, k) in ports.iter().enumerate() {
            let Some(k) = *k else {
                act[i] = None;
                continue;
            };
            let rx = self.rx_packets(i);
            act[i] = Some(match act[i] {
                Some(a) if a.kind == k => Activity {
                    last_rx: if rx != a.rx_packets {
                        Some(now)
                    } else {
                        a.last_rx
                    },
                    rx_packets: rx,
                    kind: k,
                },
                // A new port: the worker zeroes its counters when it adds it, so anything
                // counted already was received on it.
                _ => Activity {
                    kind: k,
                    rx_packets: rx,
                    last_rx: (rx > 0).then_some(now),
                },
            });
        }
    }

    /// The origin of each configured peer.
    pub fn peer_origins(&self) -> HashMap<Ipv4Addr, PeerOrigin> {
        self.origins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Adds a tunnel to `peer` at run time, after the same check as `--peer` at start
    /// ([`config::check_peer`]). Returns its port id and warnings about the route (logged
    /// here too). With `--encrypt` the peer needs a public key (see
    /// [`SwitchInfo::add_peer_keyed`]).
    pub fn add_peer(
        &self,
        peer: &Sourced<Ipv4Addr>,
    ) -> Result<(PortId, Vec<String>), PeerChangeError> {
        self.add_peer_keyed(peer, None)
    }

    /// [`SwitchInfo::add_peer`] with the peer's public key (`--encrypt`): refused without
    /// one (unless one is known already), and a key is refused by a switch that does not
    /// encrypt. The key is kept only if the tunnel is added.
    pub fn add_peer_keyed(
        &self,
        peer: &Sourced<Ipv4Addr>,
        key: Option<dnet_crypto::PublicKey>,
    ) -> Result<(PortId, Vec<String>), PeerChangeError> {
        let addr = peer.value;
        match key {
            Some(_) if !self.dataplane.encrypts() => {
                return Err(PeerChangeError::KeyWithoutEncrypt(peer.input.clone()))
            }
            None if self.dataplane.encrypts() && !self.dataplane.has_peer_key(addr) => {
                return Err(PeerChangeError::NoKey(peer.input.clone()))
            }
            _ => {}
        }
        let r = self.add_tunnel(peer, key);
        if r.is_err() && key.is_some() {
            // Not a peer after all: its key goes too (unless a tunnel to it exists already).
            if !self.peer_origins().contains_key(&addr) {
                let _ = self.dataplane.set_peer_key(addr, None);
            }
        }
        r
    }

    fn add_tunnel(
        &self,
        peer: &Sourced<Ipv4Addr>,
        key: Option<dnet_crypto::PublicKey>,
    ) -> Result<(PortId, Vec<String>), PeerChangeError> {
        let addr = peer.value;
        let configured: Vec<Ipv4Addr> = self
            .dataplane
            .ports()
            .into_iter()
            .filter_map(|k| match k {
                Some(PortKind::Tunnel(a)) => Some(a),
                _ => None,
            })
            .collect();
        let route = config::check_peer(peer, &configured, &SystemHost)?;
        let df = self.settings.outer.is_none_or(|o| o.df);
        let warnings = config::peer::route_warnings(
            addr,
            route,
            self.local,
            self.mtu,
            &self.settings.gre,
            config::seal_overhead(self.dataplane.encrypts()),
            df,
        );
        if let Some(k) = key {
            // Before the tunnel exists, so its first frames already go sealed.
            self.dataplane
                .set_peer_key(addr, Some(k))
                .map_err(|source| PeerChangeError::Key {
                    input: peer.input.clone(),
                    source,
                })?;
        }
        let id = self.dataplane.add_peer(addr)?;
        let origin = PeerOrigin::from(&peer.input.origin);
        self.origins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(addr, origin);
        log::info!(
            "peer {addr} added ({}): port gre-{addr} (id {id})",
            origin.name()
        );
        for w in &warnings {
            log::warn!("{w}");
        }
        Ok((id, warnings))
    }

    /// Removes the tunnel to `addr` and the stations learned through it.
    pub fn remove_peer(&self, addr: Ipv4Addr) -> Result<PortId, String> {
        let id = self
            .dataplane
            .remove_peer(addr)
            .map_err(|e| e.to_string())?;
        let origin = self
            .origins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&addr);
        log::info!(
            "peer {addr} removed ({}): port gre-{addr} (id {id})",
            origin.map_or("unknown", PeerOrigin::name)
        );
        Ok(id)
    }

    /// Makes the configuration file's peers `wanted` current: adds those not configured
    /// (checked as at start, each error naming its line), adopts runtime peers it now lists,
    /// and removes file peers it no longer lists. Peers from flags are left alone. Returns
    /// (added, removed, errors).
    pub fn apply_config_peers(
        &self,
        wanted: &[Sourced<Ipv4Addr>],
    ) -> (Vec<Ipv4Addr>, Vec<Ipv4Addr>, Vec<String>) {
        let (mut added, mut removed, mut errors) = (Vec::new(), Vec::new(), Vec::new());
        let origins = self.peer_origins();
        for p in wanted {
            match origins.get(&p.value) {
                Some(PeerOrigin::Flag | PeerOrigin::Config) => {}
                // Listed in the file now: it stays when it leaves etcd or `peer del` forgets it.
                Some(PeerOrigin::Runtime | PeerOrigin::Etcd) => {
                    self.origins
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(p.value, PeerOrigin::Config);
                }
                None => match self.add_peer(p) {
                    Ok(_) => added.push(p.value),
                    Err(e) => errors.push(error_chain::format(&e)),
                },
            }
        }
        for (p, o) in origins {
            if o == PeerOrigin::Config && !wanted.iter().any(|w| w.value == p) {
                match self.remove_peer(p) {
                    Ok(_) => removed.push(p),
                    // The message names the peer.
                    Err(e) => errors.push(e),
                }
            }
        }
        (added, removed, errors)
    }

    /// The `show` answer.
    pub fn show(&self) -> Show {
        self.sample_activity();
        let st = self.stats();
        let now = Instant::now();
        let act = self
            .activity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let origins = self.peer_origins();
        let tap_state = tap_state(&self.tap);
        let stp = self.dataplane.stp_status();
        let ports = self
            .dataplane
            .ports()
            .into_iter()
            .enumerate()
            .filter_map(|(i, k)| Some((i, k?)))
            .map(|(i, k)| {
                let ps = st.ports.iter().find(|p| p.name == self.port_name(k));
                let last_rx = act
                    .get(i)
                    .copied()
                    .flatten()
                    .filter(|a| a.kind == k)
                    .and_then(|a| a.last_rx)
                    .map(|t| now.duration_since(t).as_secs());
                let (state, origin, peer) = match k {
                    PortKind::Local => (tap_state.clone(), None, None),
                    PortKind::Tunnel(a) => (
                        match self.dataplane.liveness.state(i as u16) {
                            // Keepalives decide for peers that answer them (`--keepalive`).
                            s if self.dataplane.keepalive
                                && s != crate::switch::liveness::PeerState::Unknown =>
                            {
                                s.name().to_string()
                            }
                            _ => match last_rx {
                                None => "silent".to_string(),
                                Some(s) if s <= ACTIVE_SECS => "active".to_string(),
                                Some(_) => "idle".to_string(),
                            },
                        },
                        origins.get(&a).map(|o| o.name().to_string()),
                        Some(a),
                    ),
                };
                let tree = stp.as_ref().and_then(|(s, _)| {
                    s.ports
                        .iter()
                        .find(|p| usize::from(p.port) == i)
                        .map(|p| (p.role, p.state))
                });
                PortInfo {
                    id: i as u16,
                    name: self.port_name(k),
                    kind: if k.is_tunnel() {
                        WirePortKind::Tunnel
                    } else {
                        WirePortKind::Local
                    },
                    peer,
                    state,
                    origin,
                    last_rx_secs: last_rx,
                    rx_packets: ps.map_or(0, |p| p.rx_packets),
                    rx_bytes: ps.map_or(0, |p| p.rx_bytes),
                    tx_packets: ps.map_or(0, |p| p.tx_packets),
                    tx_bytes: ps.map_or(0, |p| p.tx_bytes),
                    stp_role: tree.map(|(r, _)| r.name().to_string()),
                    stp_state: tree.map(|(_, s)| s.name().to_string()),
                    path_mtu: match k {
                        PortKind::Tunnel(a) => crate::io::sys::sockopt::path_mtu(a).ok(),
                        PortKind::Local => None,
                    },
                }
            })
            .collect();
        let outer = self.settings.outer;
        Show {
            tap: self.tap.clone(),
            bridge: self.settings.bridge.clone(),
            mtu: self.mtu,
            local: self.local,
            workers: st.workers,
            gre: GreInfo {
                udp_port: self.settings.gre.udp_port,
                key: self.settings.gre.key,
                csum: self.settings.gre.csum,
                seq: self.settings.gre.seq,
                ttl: outer.map_or(64, |o| o.ttl),
                tos: outer.map_or(0, |o| o.tos),
                df: outer.is_none_or(|o| o.df),
            },
            control_socket: self.settings.control_socket.clone(),
            metrics: self.settings.metrics.clone(),
            config_file: self.settings.config_file.clone(),
            uptime_secs: self.started.elapsed().as_secs(),
            fdb_entries: st.fdb_entries,
            ports,
            keepalive_ms: (self.dataplane.keepalive_ms > 0).then_some(self.dataplane.keepalive_ms),
            stp: stp.map(|(s, now)| dnet_proto::StpInfo {
                bridge_id: s.bridge.to_string(),
                root_id: s.root.to_string(),
                is_root: s.root == s.bridge,
                root_cost: s.root_cost,
                root_port: s.root_port,
                topology_changes: s.topology_changes,
                last_change_secs: s.last_change.map(|t| now.saturating_sub(t) / 1000),
            }),
            fleet: self.fleet_info().map(Box::new),
            encryption: self.dataplane.public_key().map(|k| {
                let drops = |name: &str| {
                    st.drops
                        .iter()
                        .find(|d| d.reason == name)
                        .map_or(0, |d| d.count)
                };
                Box::new(dnet_proto::EncryptionInfo {
                    public_key: k.to_string(),
                    auth_failed: drops(dnet_crypto::Reject::AuthFailed.name()),
                    replayed: drops(dnet_crypto::Reject::Replayed.name()),
                    sessions: self.dataplane.crypto_sessions(),
                    unknown_key: drops(dnet_crypto::Reject::UnknownKey.name()),
                })
            }),
        }
    }

    /// The `fdb show` answer.
    pub fn fdb_table(&self) -> Result<FdbTable, String> {
        let ports = self.dataplane.ports();
        let entries = self
            .dataplane
            .fdb()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(k, port, age)| FdbEntry {
                mac: k.mac().to_string(),
                vlan: k.vlan(),
                port: self.port_name_by_id(&ports, port),
                port_id: port,
                age_ms: age,
            })
            .collect();
        Ok(FdbTable {
            aging_secs: crate::switch::Config::default().aging_ms / 1000,
            entries,
        })
    }

    /// Resolves a port given by name (`dnet0`, `gre-10.0.0.2`) or peer address.
    fn find_port(&self, name: &str) -> Result<PortId, String> {
        let ports = self.dataplane.ports();
        let by_ip: Option<Ipv4Addr> = name.parse().ok();
        ports
            .iter()
            .position(|k| {
                k.is_some_and(|k| {
                    self.port_name(k) == name || by_ip.is_some_and(|a| k == PortKind::Tunnel(a))
                })
            })
            .map(|i| i as PortId)
            .ok_or_else(|| format!("no port {name} (see dnetctl show)"))
    }

    /// The `conflicts` answer.
    pub fn conflicts(&self) -> Result<ConflictList, String> {
        let ports = self.dataplane.ports();
        let (list, now) = self.dataplane.conflicts().map_err(|e| e.to_string())?;
        let age = |t: u64| now.saturating_sub(t);
        Ok(ConflictList {
            conflicts: list
                .into_iter()
                .map(|c| ConflictEntry {
                    ip: c.ip,
                    vlan: c.vlan,
                    claims: c
                        .claims
                        .iter()
                        .map(|k| ClaimEntry {
                            mac: k.mac.to_string(),
                            port: self.port_name_by_id(&ports, k.port),
                            age_ms: age(k.last_seen),
                        })
                        .collect(),
                    count: c.count,
                    detected_age_ms: age(c.detected),
                    last_seen_age_ms: age(c.last_seen),
                })
                .collect(),
        })
    }

    /// Sums the workers' counters into a [`Stats`] snapshot. Drops and events that belong to
    /// no one network (an unknown GRE key, a sender that is no network's peer) are counted
    /// with the network's own.
    pub fn stats(&self) -> Stats {
        // With --encrypt, what the encryption dropped and did, under its own names.
        let crypto = self.dataplane.crypto_counts();
        let counters = &self.dataplane.counters;
        let sum = |f: &dyn Fn(&Counters) -> u64| counters.iter().map(|c| f(c)).sum::<u64>();
        let with_global = |f: &dyn Fn(&Counters) -> u64| {
            counters
                .iter()
                .chain(&self.dataplane.global)
                .map(|c| f(c))
                .sum::<u64>()
        };
        let ports = self
            .dataplane
            .ports()
            .into_iter()
            .enumerate()
            .filter_map(|(i, k)| Some((i, k?)))
            .map(|(i, k)| PortStats {
                name: match k {
                    PortKind::Local => self.tap.clone(),
                    PortKind::Tunnel(a) => format!("gre-{a}"),
                },
                kind: match k {
                    PortKind::Local => WirePortKind::Local,
                    PortKind::Tunnel(_) => WirePortKind::Tunnel,
                },
                peer: match k {
                    PortKind::Local => None,
                    PortKind::Tunnel(a) => Some(a),
                },
                rx_packets: sum(&|c| c.ports[i].rx_packets.get()),
                rx_bytes: sum(&|c| c.ports[i].rx_bytes.get()),
                tx_packets: sum(&|c| c.ports[i].tx_packets.get()),
                tx_bytes: sum(&|c| c.ports[i].tx_bytes.get()),
            })
            .collect();
        Stats {
            tap: self.tap.clone(),
            mtu: self.mtu,
            local: self.local,
            workers: counters.len(),
            fdb_entries: counters
                .iter()
                .map(|c| c.fdb_entries.get() as usize)
                .max()
                .unwrap_or(0),
            ports,
            drops: DropReason::ALL
                .iter()
                .map(|d| DropCount {
                    reason: d.name().to_string(),
                    count: with_global(&|c| c.drops[*d as usize].get()),
                })
                .chain(crypto.iter().flat_map(|ep| {
                    dnet_crypto::Reject::ALL.iter().map(move |r| DropCount {
                        reason: r.name().to_string(),
                        count: with_global(&|c| c.crypto_drops[*r as usize].get()) + ep.dropped(*r),
                    })
                }))
                .collect(),
            events: Event::ALL
                .iter()
                .map(|e| DropCount {
                    reason: e.name().to_string(),
                    count: with_global(&|c| c.events[*e as usize].get()),
                })
                .chain(crypto.iter().flat_map(|ep| {
                    dnet_crypto::Event::ALL.iter().map(move |e| DropCount {
                        reason: e.name().to_string(),
                        count: with_global(&|c| c.crypto_events[*e as usize].get()) + ep.count(*e),
                    })
                }))
                .collect(),
        }
    }

    /// Answers one request.
    pub fn answer(&self, req: &Request) -> Response {
        let err = |message: String| Response::Error { message };
        match req {
            Request::Stats => Response::Stats(self.stats()),
            Request::Show => Response::Show(self.show()),
            Request::FdbShow => self.fdb_table().map_or_else(err, Response::Fdb),
            Request::FdbFlush { port } => {
                let id = match port.as_deref().map(|p| self.find_port(p)).transpose() {
                    Ok(id) => id,
                    Err(e) => return err(e),
                };
                match self.dataplane.flush_fdb(id) {
                    Ok(removed) => {
                        log::info!(
                            "MAC table flushed ({}): {removed} entries",
                            port.as_deref().unwrap_or("all ports")
                        );
                        Response::FdbFlushed { removed }
                    }
                    Err(e) => err(e.to_string()),
                }
            }
            Request::PeerAdd { addr, key } => {
                let peer = Sourced {
                    value: *addr,
                    input: Input::runtime("peer", addr),
                };
                let key = match key
                    .as_deref()
                    .map(|k| dnet_crypto::PublicKey::from_base64(k, &format!("--key {k}")))
                    .transpose()
                {
                    Ok(k) => k,
                    Err(e) => {
                        return err(PeerChangeError::BadKey {
                            input: peer.input,
                            why: e.to_string(),
                        }
                        .to_string())
                    }
                };
                match self.add_peer_keyed(&peer, key) {
                    Ok((_, warnings)) => Response::PeerAdded {
                        addr: *addr,
                        port: format!("gre-{addr}"),
                        warnings,
                    },
                    Err(e) => err(error_chain::format(&e)),
                }
            }
            Request::PeerDel { addr } => match self.remove_peer(*addr) {
                Ok(_) => Response::PeerRemoved {
                    addr: *addr,
                    port: format!("gre-{addr}"),
                },
                Err(e) => err(e),
            },
            Request::Conflicts => self.conflicts().map_or_else(err, Response::Conflicts),
            Request::Allocate {
                network,
                container,
                name,
                address,
            } => self
                .fleet()
                .and_then(|f| f.allocate(network.as_deref(), container, name.as_deref(), *address))
                .map_or_else(err, Response::Allocated),
            Request::Release {
                network,
                container,
                address,
            } => {
                if container.is_none() && address.is_none() {
                    return err("release: give the container or the address to free".into());
                }
                self.fleet()
                    .and_then(|f| f.release(network.as_deref(), container.as_deref(), *address))
                    .map_or_else(err, |(network, address)| Response::Released {
                        network,
                        address,
                    })
            }
            Request::Allocations { network } => self
                .fleet()
                .and_then(|f| f.allocations(network.as_deref()))
                .map_or_else(err, Response::Allocations),
            Request::Networks => Response::Networks {
                networks: vec![self.network_entry()],
            },
            Request::In { network, request } if *network == self.dataplane.name => match &**request
            {
                Request::In { .. } | Request::Networks => err(
                    "in: the wrapped request must be one of a network (show, stats, fdb_show, ...)"
                        .into(),
                ),
                r => self.answer(r),
            },
            Request::In { network, .. } => err(format!(
                "network {network:?}: this dnet-switch serves only {:?}",
                self.dataplane.name
            )),
        }
    }

    /// This network as [`Request::Networks`] lists it.
    pub fn network_entry(&self) -> NetworkEntry {
        let fleet = self.fleet_info();
        NetworkEntry {
            name: self.dataplane.name.clone(),
            tap: self.tap.clone(),
            bridge: self.settings.bridge.clone(),
            mtu: self.mtu,
            key: self.settings.gre.key,
            subnet: fleet.as_ref().map(|f| f.subnet.clone()),
            range: fleet.as_ref().and_then(|f| f.range.clone()),
            gateway: fleet.as_ref().and_then(|f| f.gateway),
        }
    }
}

/// Every network of a running switch, as its control socket serves them: requests wrapped in
/// [`Request::In`] (and allocation requests naming their network) go to that network; others
/// to the first, so a switch of one network answers exactly as before.
pub struct Networks {
    nets: Vec<Arc<SwitchInfo>>,
}

impl Networks {
    /// The networks, the first one first. Panics on an empty list (a switch serves at least
    /// one network).
    pub fn new(nets: Vec<Arc<SwitchInfo>>) -> Networks {
        assert!(!nets.is_empty(), "a switch serves at least one network");
        Networks { nets }
    }

    /// The networks, first one first.
    pub fn all(&self) -> &[Arc<SwitchInfo>] {
        &self.nets
    }

    /// The network named `name`, or a refusal listing the ones served.
    pub fn find(&self, name: &str) -> Result<&Arc<SwitchInfo>, String> {
        self.nets
            .iter()
            .find(|n| n.dataplane.name == name)
            .ok_or_else(|| {
                format!(
                    "network {name:?}: this dnet-switch serves {}: use one of those names",
                    self.names()
                )
            })
    }

    fn names(&self) -> String {
        self.nets
            .iter()
            .map(|n| {
                if n.dataplane.name.is_empty() {
                    "one unnamed network (no --network)".to_string()
                } else {
                    n.dataplane.name.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Answers one request.
    pub fn answer(&self, req: &Request) -> Response {
        let err = |message: String| Response::Error { message };
        let named = |n: &Option<String>| -> &Arc<SwitchInfo> {
            // An unknown name goes to the first network, whose fleet refuses it by name.
            n.as_deref()
                .and_then(|n| self.find(n).ok())
                .unwrap_or(&self.nets[0])
        };
        match req {
            Request::Networks => Response::Networks {
                networks: self.nets.iter().map(|n| n.network_entry()).collect(),
            },
            Request::In { network, request } => match (self.find(network), &**request) {
                (Err(e), _) => err(e),
                (Ok(_), Request::In { .. } | Request::Networks) => err(
                    "in: the wrapped request must be one of a network (show, stats, fdb_show, ...)"
                        .into(),
                ),
                (Ok(n), r) => n.answer(r),
            },
            Request::Allocate { network, .. }
            | Request::Release { network, .. }
            | Request::Allocations { network } => named(network).answer(req),
            _ => self.nets[0].answer(req),
        }
    }
}

/// A listening control socket; the file is removed on drop.
pub struct ControlServer {
    path: PathBuf,
}

impl ControlServer {
    /// Binds `path` (creating its directory), replacing a stale socket left by a killed switch,
    /// and serves requests on a background thread. Only root may use it, plus members of
    /// `group` (a gid) when given: the socket is then group-owned and mode 0660, and each
    /// client's credentials are checked again on every connection.
    pub fn start(
        path: &Path,
        info: Arc<SwitchInfo>,
        group: Option<u32>,
    ) -> Result<ControlServer, ServerError> {
        ControlServer::start_networks(path, Networks::new(vec![info]), group)
    }

    /// [`ControlServer::start`] for a switch serving several networks.
    pub fn start_networks(
        path: &Path,
        nets: Networks,
        group: Option<u32>,
    ) -> Result<ControlServer, ServerError> {
        let p = path.display().to_string();
        let create = |source| ServerError::Create {
            path: p.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(create)?;
        }
        if path.exists() {
            ControlServer::check_free(path)?;
            log::info!("removing stale control socket {p} left by a previous run");
            std::fs::remove_file(path).map_err(create)?;
        }
        let listener = UnixListener::bind(path).map_err(create)?;
        let mode = match group {
            Some(gid) => {
                std::os::unix::fs::chown(path, None, Some(gid)).map_err(create)?;
                0o660
            }
            None => 0o600,
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(create)?;
        let weak = nets.nets.iter().map(Arc::downgrade).collect();
        std::thread::Builder::new()
            .name("dnet-monitor".into())
            .spawn(move || monitor(weak))
            .map_err(create)?;
        std::thread::Builder::new()
            .name("dnet-control".into())
            .spawn(move || serve(listener, nets, group))
            .map_err(create)?;
        Ok(ControlServer {
            path: path.to_path_buf(),
        })
    }

    /// Refuses a path another running switch answers on, so a switch can find that out
    /// before it joins anything (a stale socket left by a killed switch is free).
    pub fn check_free(path: &Path) -> Result<(), ServerError> {
        if UnixStream::connect(path).is_ok() {
            return Err(ServerError::InUse(path.display().to_string()));
        }
        Ok(())
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl std::ops::Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Samples port activity once a second until the networks' switch infos are dropped.
fn monitor(nets: Vec<Weak<SwitchInfo>>) {
    loop {
        let live: Vec<Arc<SwitchInfo>> = nets.iter().filter_map(Weak::upgrade).collect();
        if live.is_empty() {
            return;
        }
        for i in &live {
            i.sample_activity();
        }
        drop(live);
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `up` or `down` from the interface flags (`unknown` if unreadable).
fn tap_state(tap: &str) -> String {
    let p = format!("/sys/class/net/{tap}/flags");
    match std::fs::read_to_string(p)
        .ok()
        .and_then(|s| u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok())
    {
        Some(f) if f & libc::IFF_UP as u32 != 0 => "up".into(),
        Some(_) => "down".into(),
        None => "unknown".into(),
    }
}

fn peer_cred(s: &UnixStream) -> Option<libc::ucred> {
    crate::io::sys::sockopt::peer_cred(std::os::fd::AsFd::as_fd(s)).ok()
}

/// Supplementary groups of process `pid` (from /proc; empty if it is gone).
fn supplementary_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// May this client use the socket? Root always; members of the configured group too.
fn allowed(cred: Option<libc::ucred>, group: Option<u32>) -> bool {
    match (cred, group) {
        (Some(c), _) if c.uid == 0 => true,
        (Some(c), Some(g)) => c.gid == g || supplementary_groups(c.pid).contains(&g),
        _ => false,
    }
}

fn serve(listener: UnixListener, info: Networks, group: Option<u32>) {
    for conn in listener.incoming() {
        let Ok(mut s) = conn else { continue };
        // One client at a time, each bounded in time and size, so a stuck or hostile client
        // cannot pin the server.
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
        let reply = if !allowed(peer_cred(&s), group) {
            Response::Error {
                message: "permission denied: the control socket is for root (and the --control-group, if one is set)".into(),
            }
        } else {
            let mut line = String::new();
            match BufReader::new((&s).take(MAX_REQUEST)).read_line(&mut line) {
                Ok(_) if !line.ends_with('\n') => Response::Error {
                    message: format!(
                        "request too long or not newline-terminated (limit {MAX_REQUEST} bytes)"
                    ),
                },
                Ok(_) => match serde_json::from_str::<Request>(&line) {
                    Ok(req) => info.answer(&req),
                    Err(e) => Response::Error {
                        message: format!("malformed request: {e}"),
                    },
                },
                Err(e) => Response::Error {
                    message: format!("reading request: {e}"),
                },
            }
        };
        let mut out = serde_json::to_string(&reply).unwrap_or_else(|_| "{}".into());
        out.push('\n');
        let _ = s.write_all(out.as_bytes());
    }
}
