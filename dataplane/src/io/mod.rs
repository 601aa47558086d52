//! The syscall edge: TAP queues, raw GRE sockets and one event-loop thread per worker.
//! Nothing here decides where a frame goes; that is [`crate::switch`].

pub mod busy_poll;
pub mod gre_socket;
pub mod nexthop;
pub mod ring;
#[allow(unsafe_code)]
pub mod sys;
#[allow(unsafe_code)]
pub mod tap;
pub use sys::netdev;
pub mod watch;
pub mod worker;

use crate::datapath::{self, Core, FdbDump, NetId};
use crate::switch::tunnel::GreOptions;
use crate::switch::{self, Counters, Millis, PortId, PortKind};
use crossbeam_channel::Sender;
use gre_socket::{OuterOptions, Sockets};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use worker::WorkerCommand;

/// Everything needed to bring the data path up (already validated by [`crate::config`]).
#[derive(Clone, Debug)]
pub struct DataplaneConfig {
    /// Underlay source address.
    pub local: Ipv4Addr,
    /// GRE options every network shares (encapsulation, checksums, sequence numbers); each
    /// network has its own key.
    pub gre: GreOptions,
    /// Outer IPv4 options.
    pub outer: OuterOptions,
    /// Worker threads.
    pub workers: usize,
    /// Ask the kernel for TCP super-frames and partial checksums on the TAPs (segmented and
    /// coalesced in userspace, see [`crate::offload`]).
    pub offload: bool,
    /// Plain GRE through packet rings on the underlay device (`--packet-rings`).
    pub rings: ring::RingMode,
    /// After an exchange's traffic, poll this many microseconds before sleeping
    /// (`--busy-poll`, 0: off).
    pub busy_poll_us: u32,
    /// The overlay networks this switch serves, at least one, with distinct keys and TAPs.
    pub networks: Vec<NetworkConfig>,
    /// Seal every tunnel datagram (`--encrypt`, GRE-in-UDP only).
    pub encrypt: Option<EncryptConfig>,
}

/// `--encrypt`: this host's key and the peers' public keys.
#[derive(Clone, Debug)]
pub struct EncryptConfig {
    /// This host's static private key.
    pub private_key: dnet_crypto::PrivateKey,
    /// Peer hosts' public keys, by underlay address (more may come at run time).
    pub peer_keys: Vec<(Ipv4Addr, dnet_crypto::PublicKey)>,
    /// Which AEAD to ask for.
    pub cipher: dnet_crypto::CipherPreference,
    /// Session lifetimes and handshake timers ([`dnet_crypto::Limits::default`] but in
    /// tests).
    pub limits: dnet_crypto::Limits,
}

/// Peer hosts of a switch, across its networks, each with one crypto peer id (`--encrypt`):
/// keys and sessions belong to a host, whatever networks it shares with this one.
#[derive(Debug, Default)]
struct Hosts {
    /// By crypto peer id: the host and how many networks' tunnels lead to it.
    slots: Vec<Option<(Ipv4Addr, usize)>>,
}

impl Hosts {
    fn find(&self, addr: Ipv4Addr) -> Option<dnet_crypto::PeerId> {
        self.slots
            .iter()
            .position(|s| s.is_some_and(|(a, _)| a == addr))
            .map(|i| i as dnet_crypto::PeerId)
    }

    /// One more tunnel to `addr`: its id, and whether it is new.
    fn acquire(&mut self, addr: Ipv4Addr) -> (dnet_crypto::PeerId, bool) {
        if let Some(id) = self.find(addr) {
            if let Some((_, n)) = &mut self.slots[usize::from(id)] {
                *n += 1;
            }
            return (id, false);
        }
        let i = match self.slots.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.slots[i] = Some((addr, 1));
        (i as dnet_crypto::PeerId, true)
    }

    /// One tunnel to `addr` fewer: its id if that was the last.
    fn release(&mut self, addr: Ipv4Addr) -> Option<dnet_crypto::PeerId> {
        let id = self.find(addr)?;
        let slot = &mut self.slots[usize::from(id)];
        if let Some((_, n)) = slot {
            *n -= 1;
            if *n == 0 {
                *slot = None;
                return Some(id);
            }
        }
        None
    }
}

/// The encryption state the control side keeps: the shared crypto core, the hosts, and the
/// peers' public keys (which may arrive before or after their tunnels).
struct Encryption {
    crypto: datapath::Crypto,
    hosts: Mutex<(
        Hosts,
        std::collections::HashMap<Ipv4Addr, dnet_crypto::PublicKey>,
    )>,
    epoch: Instant,
}

impl Encryption {
    fn now(&self) -> Millis {
        self.epoch.elapsed().as_millis() as Millis
    }

    /// Gives crypto peer `id` (host `addr`) its key, if known, and starts a handshake.
    fn configure(&self, id: dnet_crypto::PeerId, key: Option<&dnet_crypto::PublicKey>) {
        let now = self.now();
        self.crypto.with(|e| {
            let cfg = key.map(|k| dnet_crypto::PeerConfig {
                public_key: *k,
                psk: None,
            });
            if let Err(err) = e.set_peer(id, cfg) {
                log::warn!("encryption: peer {id}: {err}");
            } else if key.is_some() {
                e.connect(now, id);
            }
        });
    }
}

/// One overlay network of a switch: its own layer-2 segment.
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// Its name (empty for the unnamed network of a switch given peers by hand).
    pub name: String,
    /// TAP name (may hold a `%d` template).
    pub tap: String,
    /// Bridge to attach the TAP to.
    pub bridge: Option<String>,
    /// TAP MTU.
    pub mtu: u32,
    /// Its GRE key (`None` and 0 are the same network).
    pub key: Option<u32>,
    /// Peer underlay addresses; peer `i` is port `i + 1`.
    pub peers: Vec<Ipv4Addr>,
    /// Switch core settings.
    pub core: switch::Config,
}

/// Errors bringing the data path up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// TAP setup.
    #[error(transparent)]
    Tap(#[from] tap::TapError),
    /// Device configuration.
    #[error(transparent)]
    Netdev(#[from] netdev::NetdevError),
    /// Socket setup.
    #[error(transparent)]
    Socket(#[from] gre_socket::SocketError),
    /// Too many peers.
    #[error("{0} peers configured; at most {max} are supported", max = switch::MAX_PORTS - 1)]
    TooManyPeers(usize),
    /// No network, or more than a switch can tell apart.
    #[error("{0} networks configured: give 1 to {max}", max = MAX_NETWORKS)]
    Networks(usize),
    /// Thread or poll setup.
    #[error("starting worker threads: {0}")]
    Thread(std::io::Error),
}

/// Most networks one switch serves.
pub const MAX_NETWORKS: usize = 64;

/// A running data path. Dropping it stops the workers ([`Dataplane::stop`]).
pub struct Dataplane {
    /// The first network's TAP's actual name.
    pub tap: String,
    /// Whether TAP offloads took effect.
    pub offload: bool,
    /// The first network's handle for run-time changes and queries.
    pub control: Arc<DataplaneControl>,
    /// Every network's handle, by [`NetId`].
    pub networks: Vec<Arc<DataplaneControl>>,
    threads: Vec<JoinHandle<std::io::Result<()>>>,
    wakers: Vec<Arc<mio::Waker>>,
    stop: Arc<AtomicBool>,
}

/// Errors of run-time changes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    /// The peer is already configured.
    #[error("peer {0} is already configured")]
    PeerExists(Ipv4Addr),
    /// No such peer.
    #[error("peer {0} is not configured (see `dnetctl show`)")]
    NoSuchPeer(Ipv4Addr),
    /// Port table full.
    #[error("no free port: at most {max} peers", max = switch::MAX_PORTS - 1)]
    Full,
    /// A worker did not answer.
    #[error("a worker did not answer within 1 s")]
    Timeout,
    /// A key was given to a switch that does not encrypt.
    #[error("this switch does not encrypt: start it with --encrypt to give peers keys")]
    NotEncrypted,
    /// A peer was given this host's own public key.
    #[error("public key {0} is this host's own: give the peer's (`dnetctl pubkey` on the peer)")]
    OwnKey(dnet_crypto::PublicKey),
    /// A peer was given the key of another peer.
    #[error("public key {key} is already peer {other}'s: each host has its own key pair (`dnetctl keygen`)")]
    KeyInUse {
        /// The key.
        key: dnet_crypto::PublicKey,
        /// The peer that has it.
        other: Ipv4Addr,
    },
}

/// The control plane's view of one network of a running data path: ports, counters, and
/// channels to the workers. Requests reach workers between bursts; the forwarding path never
/// waits for it.
pub struct DataplaneControl {
    /// Which network.
    pub net: NetId,
    /// Its name (empty for the unnamed network of a switch given peers by hand).
    pub name: String,
    /// Its TAP's actual name.
    pub tap: String,
    /// Each worker's counters of this network (sum them for totals).
    pub counters: Vec<Arc<Counters>>,
    /// Each worker's switch-wide counters: what belongs to no one network (the same in every
    /// network's handle).
    pub global: Vec<Arc<Counters>>,
    ports: Mutex<Vec<Option<PortKind>>>,
    cmds: Vec<Sender<WorkerCommand>>,
    wakers: Vec<Arc<mio::Waker>>,
    /// Peer liveness shared with the workers (`--keepalive`).
    pub liveness: Arc<switch::liveness::Shared>,
    /// Tunnels the loop guard blocked, shared with the workers.
    loop_guard: Arc<switch::loopguard::Shared>,
    /// Keepalives are on.
    pub keepalive: bool,
    /// Keepalive interval (ms; 0 when off).
    pub keepalive_ms: u64,
    /// The spanning tree (`--stp`).
    pub stp: Option<Arc<switch::stp::Shared>>,
    /// The workers' clock origin (the tree's timers run on it).
    epoch: Instant,
    /// `--encrypt`: hosts and keys, shared by the networks' handles.
    encryption: Option<Arc<Encryption>>,
}

impl DataplaneControl {
    /// Ports by id (`None` where a removed peer left a hole).
    pub fn ports(&self) -> Vec<Option<PortKind>> {
        self.ports.lock().expect("port table lock").clone()
    }

    fn broadcast(&self, mk: impl Fn() -> WorkerCommand) {
        for (c, w) in self.cmds.iter().zip(&self.wakers) {
            // A worker that has exited is reported by the main loop; nothing to do here.
            let _ = c.send(mk());
            let _ = w.wake();
        }
    }

    /// A snapshot of the spanning tree and the workers' clock it refers to (`None` without
    /// `--stp`).
    pub fn stp_status(&self) -> Option<(switch::stp::Status, Millis)> {
        let sh = self.stp.as_ref()?;
        let now = self.epoch.elapsed().as_millis() as Millis;
        Some((sh.with(|s| s.status()), now))
    }

    /// Adds a tunnel to `addr` at run time; returns its port id.
    pub fn add_peer(&self, addr: Ipv4Addr) -> Result<PortId, ControlError> {
        let mut ports = self.ports.lock().expect("port table lock");
        if ports.contains(&Some(PortKind::Tunnel(addr))) {
            return Err(ControlError::PeerExists(addr));
        }
        let id = match ports.iter().position(Option::is_none) {
            Some(i) => i,
            None if ports.len() < switch::MAX_PORTS => {
                ports.push(None);
                ports.len() - 1
            }
            None => return Err(ControlError::Full),
        };
        let kind = PortKind::Tunnel(addr);
        ports[id] = Some(kind);
        let id = id as PortId;
        self.liveness.reset(id);
        self.loop_guard.reset(id);
        if let Some(stp) = &self.stp {
            // In the tree (discarding) before any worker can forward on it.
            stp.with(|s| s.add_port(id));
        }
        if let Some(enc) = &self.encryption {
            let mut g = enc.hosts.lock().expect("host table lock");
            let (host, new) = g.0.acquire(addr);
            if new {
                let key = g.1.get(&addr).copied();
                drop(g);
                enc.configure(host, key.as_ref());
                self.broadcast(|| WorkerCommand::SetHost {
                    addr,
                    id: Some(host),
                });
            }
        }
        self.broadcast(|| WorkerCommand::SetPort {
            net: self.net,
            id,
            kind: Some(kind),
        });
        Ok(id)
    }

    /// Sets (or, with `None`, forgets) peer host `addr`'s public key (`--encrypt`): its
    /// tunnels carry nothing until it has one. Refused without `--encrypt`.
    pub fn set_peer_key(
        &self,
        addr: Ipv4Addr,
        key: Option<dnet_crypto::PublicKey>,
    ) -> Result<(), ControlError> {
        let enc = self.encryption.as_ref().ok_or(ControlError::NotEncrypted)?;
        if let Some(k) = key {
            // Refused here rather than only logged by the endpoint: a tunnel whose key the
            // endpoint refused would carry nothing.
            if enc.crypto.with(|e| e.public_key()) == k {
                return Err(ControlError::OwnKey(k));
            }
        }
        let mut g = enc.hosts.lock().expect("host table lock");
        if let Some(k) = key {
            if let Some((other, _)) = g.1.iter().find(|(a, v)| **v == k && **a != addr) {
                return Err(ControlError::KeyInUse {
                    key: k,
                    other: *other,
                });
            }
        }
        match key {
            Some(k) => g.1.insert(addr, k),
            None => g.1.remove(&addr),
        };
        if let Some(id) = g.0.find(addr) {
            drop(g);
            enc.configure(id, key.as_ref());
        }
        Ok(())
    }

    /// This host's public key, with `--encrypt`.
    pub fn public_key(&self) -> Option<dnet_crypto::PublicKey> {
        let enc = self.encryption.as_ref()?;
        Some(enc.crypto.with(|e| e.public_key()))
    }

    /// Whether the switch encrypts (`--encrypt`).
    pub fn encrypts(&self) -> bool {
        self.encryption.is_some()
    }

    /// Whether peer host `addr` has a public key (`--encrypt`).
    pub fn has_peer_key(&self, addr: Ipv4Addr) -> bool {
        self.encryption.as_ref().is_some_and(|enc| {
            enc.hosts
                .lock()
                .expect("host table lock")
                .1
                .contains_key(&addr)
        })
    }

    /// How many peer hosts have an established session now (`--encrypt`).
    pub fn crypto_sessions(&self) -> usize {
        let Some(enc) = &self.encryption else {
            return 0;
        };
        let ids: Vec<dnet_crypto::PeerId> = {
            let g = enc.hosts.lock().expect("host table lock");
            (0..g.0.slots.len())
                .filter(|i| g.0.slots[*i].is_some())
                .map(|i| i as dnet_crypto::PeerId)
                .collect()
        };
        let now = enc.now();
        enc.crypto.with(|e| {
            ids.iter()
                .filter(|id| {
                    e.peer_status(now, **id)
                        .is_some_and(|p| p.session.is_some())
                })
                .count()
        })
    }

    /// What the encryption's handshake side counted (`--encrypt`).
    pub fn crypto_counts(&self) -> Option<dnet_crypto::Counts> {
        let enc = self.encryption.as_ref()?;
        Some(enc.crypto.with(|e| e.counts().clone()))
    }

    /// Removes the tunnel to `addr` and the stations learned through it.
    pub fn remove_peer(&self, addr: Ipv4Addr) -> Result<PortId, ControlError> {
        let mut ports = self.ports.lock().expect("port table lock");
        let id = ports
            .iter()
            .position(|p| *p == Some(PortKind::Tunnel(addr)))
            .ok_or(ControlError::NoSuchPeer(addr))?;
        ports[id] = None;
        let id = id as PortId;
        if let Some(stp) = &self.stp {
            let now = self.epoch.elapsed().as_millis() as Millis;
            stp.with(|s| s.remove_port(now, id));
        }
        self.broadcast(|| WorkerCommand::SetPort {
            net: self.net,
            id,
            kind: None,
        });
        if let Some(enc) = &self.encryption {
            let gone = enc.hosts.lock().expect("host table lock").0.release(addr);
            if let Some(host) = gone {
                enc.configure(host, None);
                self.broadcast(|| WorkerCommand::SetHost { addr, id: None });
            }
        }
        Ok(id)
    }

    /// Forgets learned stations on `port` (all when `None`) in every worker; returns how many
    /// entries the fullest worker table dropped.
    pub fn flush_fdb(&self, port: Option<PortId>) -> Result<usize, ControlError> {
        let (tx, rx) = crossbeam_channel::bounded(self.cmds.len());
        self.broadcast(|| WorkerCommand::FlushFdb {
            net: self.net,
            port,
            reply: tx.clone(),
        });
        let mut most = 0;
        for _ in 0..self.cmds.len() {
            most = most.max(
                rx.recv_timeout(Duration::from_secs(1))
                    .map_err(|_| ControlError::Timeout)?,
            );
        }
        Ok(most)
    }

    /// The MAC table: the union of the workers' copies, newest observation winning, with the
    /// age of each entry in ms.
    pub fn fdb(&self) -> Result<Vec<(switch::FdbKey, PortId, u64)>, ControlError> {
        let (tx, rx) = crossbeam_channel::bounded::<FdbDump>(self.cmds.len());
        self.broadcast(|| WorkerCommand::DumpFdb {
            net: self.net,
            reply: tx.clone(),
        });
        let mut merged = std::collections::BTreeMap::new();
        for _ in 0..self.cmds.len() {
            let d = rx
                .recv_timeout(Duration::from_secs(1))
                .map_err(|_| ControlError::Timeout)?;
            for (k, e) in d.entries {
                let age = d.now.saturating_sub(e.last_seen);
                merged
                    .entry(k)
                    .and_modify(|v: &mut (PortId, u64)| {
                        if age < v.1 {
                            *v = (e.port, age);
                        }
                    })
                    .or_insert((e.port, age));
            }
        }
        Ok(merged.into_iter().map(|(k, (p, a))| (k, p, a)).collect())
    }

    /// Duplicate IPv4 addresses seen in ARP, merged over the workers (see
    /// [`switch::arp_watch::merge`]), with the clock they are relative to (the latest worker's).
    pub fn conflicts(&self) -> Result<(Vec<switch::arp_watch::Conflict>, Millis), ControlError> {
        let (tx, rx) = crossbeam_channel::bounded(self.cmds.len());
        self.broadcast(|| WorkerCommand::DumpConflicts {
            net: self.net,
            reply: tx.clone(),
        });
        let mut dumps = Vec::with_capacity(self.cmds.len());
        for _ in 0..self.cmds.len() {
            dumps.push(
                rx.recv_timeout(Duration::from_secs(1))
                    .map_err(|_| ControlError::Timeout)?,
            );
        }
        let now = dumps.iter().map(|d| d.now).max().unwrap_or(0);
        Ok((switch::arp_watch::merge(&dumps), now))
    }
}

impl Dataplane {
    /// Creates each network's TAP (with one queue per worker), configures it, opens the
    /// sockets and starts the workers. On error everything made so far is released (a TAP
    /// goes away with its last queue).
    pub fn start(cfg: &DataplaneConfig) -> Result<Dataplane, StartError> {
        let k = cfg.networks.len();
        if k == 0 || k > MAX_NETWORKS {
            return Err(StartError::Networks(k));
        }
        if let Some(nc) = cfg
            .networks
            .iter()
            .find(|n| n.peers.len() >= switch::MAX_PORTS)
        {
            return Err(StartError::TooManyPeers(nc.peers.len()));
        }
        let n = cfg.workers.max(1);
        let mut names = Vec::with_capacity(k);
        // queues[worker][network]
        let mut queues: Vec<Vec<tap::TapQueue>> = (0..n).map(|_| Vec::with_capacity(k)).collect();
        let mut offloads = tap::Offloads {
            on: cfg.offload,
            udp_gso_write: true,
        };
        for nc in &cfg.networks {
            let (name, qs, got) = tap::create(&nc.tap, n, cfg.offload)?;
            offloads.on &= got.on;
            offloads.udp_gso_write &= got.udp_gso_write;
            if got.on && !got.udp_gso_write {
                log::info!("TAP {name}: this kernel takes no UDP GSO frames (Linux < 6.2); UDP datagrams go to it one by one");
            }
            netdev::set_mtu(&name, nc.mtu)?;
            if let Some(br) = &nc.bridge {
                netdev::bridge_add(br, &name)?;
            }
            netdev::set_up(&name)?;
            for (w, q) in qs.into_iter().enumerate() {
                queues[w].push(q);
            }
            names.push(name);
        }
        if !offloads.on && cfg.offload {
            // Offloads are all or nothing across the TAPs (one virtio-net header setting per
            // worker); a TAP that refused them makes every TAP run without.
            return Err(StartError::Tap(tap::TapError::MixedOffloads));
        }
        let vnet = offloads.on;

        let ports: Vec<Vec<PortKind>> = cfg
            .networks
            .iter()
            .map(|nc| {
                std::iter::once(PortKind::Local)
                    .chain(nc.peers.iter().map(|p| PortKind::Tunnel(*p)))
                    .collect()
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let chans: Vec<_> = (0..n)
            .map(|_| crossbeam_channel::bounded(worker::SYNC_QUEUE))
            .collect();
        let mut stps = Vec::with_capacity(k);
        for (i, nc) in cfg.networks.iter().enumerate() {
            stps.push(match nc.core.stp {
                Some(c) => {
                    // The bridge id needs a MAC of this switch's own: the TAP's.
                    let mac = netdev::hwaddr(&names[i])?;
                    let sh = Arc::new(switch::stp::Shared::new(c, mac));
                    sh.with(|s| {
                        for id in 1..ports[i].len() {
                            s.add_port(id as PortId);
                        }
                    });
                    Some(sh)
                }
                None => None,
            });
        }
        let mut shared = datapath::Shared::new(stps);
        let encryption = match &cfg.encrypt {
            None => None,
            Some(e) => {
                let wall = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let endpoint = dnet_crypto::Endpoint::new(dnet_crypto::Config {
                    private_key: e.private_key.clone(),
                    capacity: switch::MAX_PORTS,
                    cipher: e.cipher,
                    wall_clock_at_zero: wall.saturating_sub(epoch.elapsed().as_millis() as u64),
                    limits: e.limits,
                });
                let crypto = datapath::Crypto::new(endpoint);
                shared.crypto = Some(crypto.clone());
                Some(Arc::new(Encryption {
                    crypto,
                    hosts: Mutex::new((Hosts::default(), e.peer_keys.iter().copied().collect())),
                    epoch,
                }))
            }
        };
        // Every distinct peer host gets its crypto identity before a worker runs.
        let mut initial_hosts = Vec::new();
        if let Some(enc) = &encryption {
            let mut g = enc.hosts.lock().expect("host table lock");
            for nc in &cfg.networks {
                for p in &nc.peers {
                    let (id, new) = g.0.acquire(*p);
                    if new {
                        initial_hosts.push((*p, id, g.1.get(p).copied()));
                    }
                }
            }
            drop(g);
            for (_, id, key) in &initial_hosts {
                enc.configure(*id, key.as_ref());
            }
        }
        let max_sealed = cfg
            .networks
            .iter()
            .map(|n| n.mtu as usize)
            .max()
            .unwrap_or(1500)
            + crate::wire::ethernet::TAGGED_HEADER_LEN
            + crate::wire::gre::MAX_HEADER_LEN
            + dnet_crypto::wire::OVERHEAD;
        let ring_dev = ring_device(cfg);
        let mut rx_rings = match &ring_dev {
            Some(dev) if cfg.rings.rx => open_rx_rings(cfg, dev, n),
            _ => Vec::new(),
        }
        .into_iter();
        let mut workers = Vec::with_capacity(n);
        let mut wakers = Vec::with_capacity(n);
        let mut cmds = Vec::with_capacity(n);
        // counters[network][worker]
        let mut counters: Vec<Vec<Arc<Counters>>> = (0..k).map(|_| Vec::with_capacity(n)).collect();
        let mut global = Vec::with_capacity(n);
        for (id, qs) in queues.into_iter().enumerate() {
            let share = (n > 1).then_some((n as u32, id as u32));
            let socks = Sockets::open(cfg.local, cfg.outer, share, cfg.gre.udp_port)?;
            if socks.is_udp() {
                log::debug!(
                    "worker {id}: GRE-in-UDP flows leave from source ports {:?}",
                    socks.source_ports()
                );
            }
            let per_net: Vec<Arc<Counters>> = (0..k).map(|_| Arc::default()).collect();
            let g: Arc<Counters> = Arc::default();
            let mut core = Core::new(
                datapath::Config {
                    id,
                    gre: cfg.gre,
                    df: cfg.outer.df,
                    vnet,
                    udp_coalesce: offloads.udp_gso_write,
                    nets: cfg
                        .networks
                        .iter()
                        .map(|nc| datapath::NetConfig {
                            key: nc.key,
                            switch: nc.core.clone(),
                        })
                        .collect(),
                },
                &shared,
                per_net.clone(),
                g.clone(),
            );
            for (addr, id, _) in &initial_hosts {
                core.set_host(*addr, Some(*id));
            }
            for (net, ps) in ports.iter().enumerate() {
                for (pid, kind) in ps.iter().enumerate().skip(1) {
                    core.set_port(net as NetId, pid as PortId, Some(*kind));
                }
            }
            let ring_rx = rx_rings.next();
            if let (Some(r), Some(dev)) = (&ring_rx, &ring_dev) {
                socks.leave_to_ring(dev.index, r.max_packet(), id == 0)?;
            }
            let ring_tx = match &ring_dev {
                Some(dev) if cfg.rings.tx => {
                    ring::RingTx::open(dev, cfg.local, cfg.outer, g.clone(), id)
                        .map_err(|e| {
                            log::warn!("worker {id}: {e}; sending through the raw GRE socket")
                        })
                        .ok()
                }
                _ => None,
            };
            if let (0, Some(dev)) = (id, &ring_dev) {
                let via = |ring: bool| if ring { "ring" } else { "raw socket" };
                log::info!(
                    "plain GRE through packet rings on {} (MTU {}): send {}, receive {}",
                    dev.name,
                    dev.mtu,
                    via(ring_tx.is_some()),
                    via(ring_rx.is_some()),
                );
            }
            let (poll, waker) = worker::poll_with_waker().map_err(StartError::Thread)?;
            // Bounded: the control server sends a few commands per request and serves one
            // client at a time; the worker drains them every turn of its loop.
            let (cmd_tx, cmd_rx) = crossbeam_channel::bounded(worker::CMD_QUEUE);
            cmds.push(cmd_tx);
            workers.push(worker::Worker {
                id,
                taps: qs,
                tap_names: names.clone(),
                vnet,
                socks,
                core,
                cmd_rx,
                sync_rx: chans[id].1.clone(),
                sync_tx: (0..n)
                    .filter(|&j| j != id)
                    .map(|j| chans[j].0.clone())
                    .collect(),
                epoch,
                stop: stop.clone(),
                poll,
                crypto: shared.crypto.clone(),
                max_sealed,
                ring_tx,
                ring_rx,
                busy_poll: busy_poll::BusyPoll::new(cfg.busy_poll_us),
            });
            wakers.push(waker);
            for (net, c) in per_net.into_iter().enumerate() {
                counters[net].push(c);
            }
            global.push(g);
        }
        let mut threads = Vec::with_capacity(n);
        for w in workers {
            let spawned = std::thread::Builder::new()
                .name(format!("dnet-worker-{}", w.id))
                .spawn(move || w.run());
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    // Stop the workers already running before reporting.
                    stop.store(true, Ordering::Relaxed);
                    for w in &wakers {
                        let _ = w.wake();
                    }
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(StartError::Thread(e));
                }
            }
        }
        let networks: Vec<Arc<DataplaneControl>> = cfg
            .networks
            .iter()
            .zip(ports)
            .zip(counters)
            .zip(shared.nets.iter())
            .enumerate()
            .map(|(i, (((nc, ports), counters), sh))| {
                Arc::new(DataplaneControl {
                    net: i as NetId,
                    name: nc.name.clone(),
                    tap: names[i].clone(),
                    counters,
                    global: global.clone(),
                    ports: Mutex::new(ports.into_iter().map(Some).collect()),
                    cmds: cmds.clone(),
                    wakers: wakers.clone(),
                    liveness: sh.liveness.clone(),
                    loop_guard: sh.loop_guard.clone(),
                    keepalive: nc.core.liveness.interval_ms > 0,
                    keepalive_ms: nc.core.liveness.interval_ms,
                    stp: sh.stp.clone(),
                    epoch,
                    encryption: encryption.clone(),
                })
            })
            .collect();
        Ok(Dataplane {
            tap: names[0].clone(),
            offload: vnet,
            control: networks[0].clone(),
            networks,
            threads,
            wakers,
            stop,
        })
    }

    /// True once any worker has exited (it only does so on a fatal event-loop error).
    pub fn any_worker_exited(&self) -> bool {
        self.threads.iter().any(|t| t.is_finished())
    }

    /// Stops the workers and waits for them; closing their queues removes the TAP. Does
    /// nothing the second time.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in &self.wakers {
            let _ = w.wake();
        }
        for (i, t) in self.threads.drain(..).enumerate() {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => log::error!("worker {i} failed: {e}"),
                Err(_) => log::error!("worker {i} panicked"),
            }
        }
    }
}

/// The device the packet rings use, if `--packet-rings` asks for any and plain GRE is on:
/// the one the route to the first configured peer leaves by or, with no peer at start (a
/// fleet's first member), the one holding the underlay address. `None` (logged) where rings
/// cannot work, so plain GRE goes through the raw sockets.
fn ring_device(cfg: &DataplaneConfig) -> Option<nexthop::Link> {
    if !cfg.rings.any() || cfg.gre.udp_port.is_some() {
        return None;
    }
    let dev = match cfg.networks.iter().find_map(|n| n.peers.first().copied()) {
        Some(peer) => ring::underlay_device(peer),
        None => ring::device_holding(cfg.local),
    };
    match dev {
        Ok(d) => Some(d),
        Err(e) => {
            log::warn!("{e}; plain GRE goes through the raw GRE socket");
            None
        }
    }
}

/// One RX ring per worker on `dev`, in one fanout group; none at all (logged) if any cannot
/// be set up, since the raw sockets of workers with a ring leave its packets to the group,
/// which would then hand a missing worker's share to the others while its raw socket took it
/// too. Rings start receiving before the raw sockets' filters leave packets to them: at
/// start a packet may be handled twice, never lost.
fn open_rx_rings(cfg: &DataplaneConfig, dev: &nexthop::Link, n: usize) -> Vec<ring::RingRx> {
    let mut fanout = sys::packet::Fanout::New;
    let mut rings = Vec::with_capacity(n);
    for id in 0..n {
        let r = ring::RingRx::open(dev, cfg.local, fanout, n).and_then(|r| {
            let gid = r.fanout_id().map_err(|source| ring::RingError::Step {
                op: "read the fanout group id".into(),
                source,
            })?;
            Ok((r, gid))
        });
        match r {
            Ok((r, gid)) => {
                fanout = sys::packet::Fanout::Join(gid);
                rings.push(r);
            }
            Err(e) => {
                log::warn!("worker {id}: {e}; receiving plain GRE through the raw GRE sockets");
                return Vec::new();
            }
        }
    }
    rings
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.stop();
    }
}
