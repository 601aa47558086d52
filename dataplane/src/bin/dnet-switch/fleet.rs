//! `--network NAME --etcd URLS`: the cluster agent (crate `dnet-cluster`, its own thread and
//! runtime) joins the network before the data path starts, and once the switch runs, a thread
//! turns the agent's member changes into tunnels of origin `etcd` (and takes them away with
//! their learned MACs), exactly as `dnetctl peer add/del` would. The data path never waits on
//! etcd: it only ever sees ports come and go.

use anyhow::{Context, Result};
use dnet::config::fleet::{EtcdAuth, PasswordSource};
use dnet::config::{self, FleetSettings, Input, NetworkSettings, Sourced};
use dnet::control::{PeerOrigin, SwitchInfo};
use dnet_cluster::ranges::gateway;
use dnet_cluster::{
    Admin, Agent, AgentConfig, AgentStatus, ClusterError, Credentials, EtcdOptions, Joined,
    LocalSettings, MembershipEvent, Peer, TlsFiles,
};
use dnet_proto::{Allocated, AllocationEntry, AllocationList, FleetCounters, FleetInfo};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest wait for one etcd request: short enough that a dead member is left for another
/// well within the member TTL, long enough for a loaded etcd.
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach etcd, from the switch's settings.
pub fn etcd_options(f: &FleetSettings) -> Result<EtcdOptions> {
    let mut o = EtcdOptions::new(&f.endpoints.join(","));
    if let Some(p) = &f.prefix {
        o.prefix = p.clone();
    }
    o.request_timeout = (f.ttl / 2).clamp(Duration::from_secs(1), MAX_REQUEST_TIMEOUT);
    o.tls = f.tls.as_ref().map(|t| TlsFiles {
        ca: t.ca.clone(),
        cert: t.cert.clone(),
        key: t.key.clone(),
    });
    o.credentials = match &f.auth {
        None => None,
        Some(EtcdAuth { user, password }) => Some(match password {
            PasswordSource::File(p) => Credentials::from_file(user, p)?,
            PasswordSource::Env(var) => Credentials::from_env(user, var)?,
        }),
    };
    Ok(o)
}

/// The switch's membership of one etcd network.
pub struct Fleet {
    shared: Arc<Shared>,
    events: Option<Receiver<MembershipEvent>>,
    applier: Option<JoinHandle<()>>,
}

/// What the control server reaches through [`dnet::control::Fleet`].
struct Shared {
    /// `None` once stopped.
    agent: Mutex<Option<Agent>>,
    joined: Joined,
    network: String,
    etcd: EtcdOptions,
    ttl: Duration,
    /// Kept between allocation requests; dropped after an etcd failure, so the next request
    /// connects afresh.
    admin: Mutex<Option<Admin>>,
}

impl Fleet {
    /// Joins the network as `underlay`: claims this host's range, registers, and learns the
    /// members (kept until [`Fleet::apply_to`]). Fails on what retrying cannot fix (no such
    /// network, a flag that contradicts its settings, a full subnet) and when etcd does not
    /// answer within the join timeout.
    pub fn join(
        f: &FleetSettings,
        network: &str,
        underlay: Ipv4Addr,
        public_key: Option<dnet_crypto::PublicKey>,
    ) -> Result<Fleet> {
        let etcd = etcd_options(f)?;
        let network = network.to_string();
        let mut cfg = AgentConfig::new(etcd.clone(), &network, underlay);
        cfg.ttl = f.ttl;
        // Back within half a TTL after an etcd outage: etcd renews every lease for one TTL
        // when it comes back, so a host retrying less often could find its lease gone and
        // flap its tunnels on every other host.
        cfg.backoff_cap = (f.ttl / 2).clamp(Duration::from_secs(1), cfg.backoff_cap);
        cfg.settings = LocalSettings {
            encap: f.given.encap.map(|e| match e {
                config::Encap::Gre => dnet_cluster::Encap::Gre,
                config::Encap::Udp => dnet_cluster::Encap::Udp,
            }),
            udp_port: f.given.udp_port,
            key: f.given.key,
            mtu: f.given.mtu,
        };
        // Published in this host's member record: how the other members of an encrypted
        // network learn it.
        cfg.public_key = public_key.map(|k| k.to_string());
        log::info!(
            "joining network {network} through etcd at {} as host {underlay}",
            f.endpoints.join(",")
        );
        let (tx, rx) = channel();
        let agent = Agent::start(cfg, Box::new(tx))
            .with_context(|| format!("joining network {network} ({})", f.network.input))?;
        let joined = agent.joined().clone();
        log::info!(
            "joined network {network} as host {}: address range {} (gateway {}) of {}; {}",
            joined.host,
            joined.range,
            joined.gateway,
            joined.subnet,
            describe(&joined.settings)
        );
        Ok(Fleet {
            shared: Arc::new(Shared {
                agent: Mutex::new(Some(agent)),
                joined,
                network,
                etcd,
                ttl: f.ttl,
                admin: Mutex::new(None),
            }),
            events: Some(rx),
            applier: None,
        })
    }

    /// The network's data-path settings, for [`config::Settings::apply_network`].
    pub fn network_settings(&self) -> NetworkSettings {
        let s = &self.shared.joined.settings;
        NetworkSettings {
            name: self.shared.network.clone(),
            udp_port: match s.encap {
                dnet_cluster::Encap::Gre => None,
                dnet_cluster::Encap::Udp => {
                    Some(s.udp_port.unwrap_or(dnet_cluster::GRE_IN_UDP_PORT))
                }
            },
            key: s.key,
            mtu: s.mtu,
            encrypt: s.encrypt,
        }
    }

    /// Starts turning member changes (those seen while joining first) into tunnels of `info`,
    /// and answers `info`'s fleet requests (status, allocation).
    pub fn apply_to(&mut self, info: Arc<SwitchInfo>) -> Result<()> {
        info.set_fleet(self.shared.clone());
        let rx = self.events.take().expect("apply_to is called once");
        let t = std::thread::Builder::new()
            .name("dnet-fleet".into())
            .spawn(move || {
                // Ends when the agent stops (it owns the sending side).
                for ev in rx {
                    match ev {
                        MembershipEvent::Up { network, peer } => peer_up(&info, &network, &peer),
                        MembershipEvent::Down { network, peer } => {
                            peer_down(&info, &network, &peer)
                        }
                    }
                }
            })
            .context("starting the fleet thread")?;
        self.applier = Some(t);
        Ok(())
    }

    /// This network's allocator, for the container plugins (`--docker`).
    pub fn allocator(&self) -> Allocator {
        Allocator(self.shared.clone())
    }

    /// Stops the agent (the member record ends with its lease; the range stays claimed for a
    /// restart), then the thread applying its changes.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // The agent's thread holds the channel's sender: once it is joined, the applier's
        // loop ends and it can be joined too.
        let agent = lock(&self.shared.agent).take();
        drop(agent);
        if let Some(t) = self.applier.take() {
            let _ = t.join();
        }
    }
}

/// One network's address allocator in etcd, the same records `dnetctl attach` allocates
/// from, as the container plugins use it (owners are the plugins' holder ids).
#[derive(Clone)]
pub struct Allocator(Arc<Shared>);

impl Allocator {
    /// The network's name.
    pub fn network(&self) -> &str {
        &self.0.network
    }

    /// The network's whole subnet.
    pub fn subnet(&self) -> Ipv4Net {
        self.0.joined.subnet
    }

    /// This host's range now.
    pub fn range(&self) -> Ipv4Net {
        self.0.range()
    }

    /// `owner`'s address: the one it holds, else `requested` (checked), else the next free.
    pub fn allocate(
        &self,
        owner: &str,
        requested: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, AllocError> {
        self.0
            .admin_typed(|a, net, host| a.allocate_with(net, host, owner, None, requested))
    }

    /// Frees `owner`'s address on this host.
    pub fn release(&self, owner: &str) -> Result<Option<Ipv4Addr>, AllocError> {
        self.0
            .admin_typed(|a, net, host| a.release(net, host, owner))
    }

    /// This host's allocations: (address, owner), in address order.
    pub fn allocations(&self) -> Result<Vec<(Ipv4Addr, String)>, AllocError> {
        let mut v: Vec<(Ipv4Addr, String)> = self
            .0
            .admin_typed(|a, net, host| a.allocations(net, Some(host)))?
            .into_iter()
            .map(|a| (a.address, a.container))
            .collect();
        v.sort();
        Ok(v)
    }
}

/// Why an [`Allocator`] request failed.
#[derive(Debug)]
pub enum AllocError {
    /// etcd did not answer (or has not for longer than the member TTL): the message says so.
    Unavailable(String),
    /// etcd answered with a refusal.
    Refused(ClusterError),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Shared {
    fn status(&self) -> Option<AgentStatus> {
        lock(&self.agent).as_ref().map(Agent::status)
    }

    /// The network a request names: this switch's only one.
    fn network(&self, asked: Option<&str>) -> Result<&str, String> {
        match asked {
            Some(n) if n != self.network => Err(format!(
                "network {n}: this dnet-switch is in network {}: ask the switch of network {n} (its --control-socket)",
                self.network
            )),
            _ => Ok(&self.network),
        }
    }

    /// This host's range now (it moves only if the claim was lost and made again).
    fn range(&self) -> Ipv4Net {
        self.status()
            .and_then(|s| s.range)
            .unwrap_or(self.joined.range)
    }

    /// Runs `f` with an admin connection. Once the agent has found etcd unreachable for
    /// longer than the member TTL (an outage, not a leader election), it refuses at once: a
    /// request would only wait out its timeouts while the control socket waits with it.
    fn admin<T>(
        &self,
        f: impl FnOnce(&Admin, &str, &str) -> Result<T, ClusterError>,
    ) -> Result<T, String> {
        match self.admin_typed(f) {
            Ok(v) => Ok(v),
            Err(AllocError::Unavailable(m)) => Err(m),
            Err(AllocError::Refused(e)) => Err(e.to_string()),
        }
    }

    /// [`Shared::admin`] with etcd's refusals kept typed, for the container plugins.
    fn admin_typed<T>(
        &self,
        f: impl FnOnce(&Admin, &str, &str) -> Result<T, ClusterError>,
    ) -> Result<T, AllocError> {
        let down = self
            .status()
            .and_then(|s| s.unreachable_since)
            .and_then(|t| t.elapsed().ok());
        if let Some(d) = down.filter(|d| *d > self.ttl) {
            return Err(AllocError::Unavailable(format!(
                "etcd at {} has not answered for {} s: addresses are recorded in etcd, so none can be allocated or freed until it answers (existing containers keep working); retry then",
                self.etcd.endpoints.join(","),
                d.as_secs()
            )));
        }
        let unreached = |e: ClusterError| {
            if e.is_transient() {
                AllocError::Unavailable(format!("{e}: addresses are recorded in etcd, so none can be allocated or freed until it answers (existing containers keep working); retry then"))
            } else {
                AllocError::Refused(e)
            }
        };
        let mut admin = lock(&self.admin);
        if admin.is_none() {
            *admin = Some(Admin::connect(&self.etcd).map_err(unreached)?);
        }
        let a = admin.as_ref().expect("connected above");
        let r = f(a, &self.network, &self.joined.host);
        if matches!(&r, Err(e) if e.is_transient()) {
            *admin = None;
        }
        r.map_err(unreached)
    }
}

impl dnet::control::Fleet for Shared {
    fn info(&self) -> FleetInfo {
        let st = self.status();
        let j = &self.joined;
        let range = st.as_ref().and_then(|s| s.range).unwrap_or(j.range);
        let c = st.as_ref().map(|s| s.counters.clone()).unwrap_or_default();
        let since = st.as_ref().and_then(|s| s.unreachable_since);
        FleetInfo {
            network: self.network.clone(),
            host: j.host.clone(),
            etcd: self.etcd.endpoints.join(","),
            subnet: j.subnet.to_string(),
            range: Some(range.to_string()),
            gateway: Some(gateway(range)),
            members: st.as_ref().map_or(0, |s| s.peers.len()),
            unreachable_since: since.map(unix_secs),
            unreachable_secs: since.map(|t| t.elapsed().map_or(0, |d| d.as_secs())),
            network_absent: st.as_ref().is_some_and(|s| s.network_absent),
            last_error: st.as_ref().and_then(|s| s.last_error.clone()),
            rejected: c
                .rejected
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            counters: FleetCounters {
                etcd_errors: c.etcd_errors,
                reconnects: c.reconnects,
                watch_compactions: c.watch_compactions,
                lease_reregistrations: c.lease_reregistrations,
                claim_conflicts: c.claim_conflicts,
                own_record_restored: c.own_record_restored,
                peer_up: c.peer_up,
                peer_down: c.peer_down,
            },
        }
    }

    fn allocate(
        &self,
        network: Option<&str>,
        container: &str,
        name: Option<&str>,
        address: Option<Ipv4Addr>,
    ) -> Result<Allocated, String> {
        let network = self.network(network)?;
        let got =
            self.admin(|a, net, host| a.allocate_with(net, host, container, name, address))?;
        if let Some(want) = address {
            if got != want {
                return Err(format!(
                    "{container} already holds {got} in network {network}: detach it first (dnetctl detach), or attach it without an address to get {got} again"
                ));
            }
        }
        let range = self.range();
        log::info!("network {network}: {got} allocated to {container}");
        Ok(Allocated {
            network: network.to_string(),
            address: got,
            prefix_len: self.joined.subnet.prefix_len(),
            range: range.to_string(),
            gateway: gateway(range),
            container: container.to_string(),
        })
    }

    fn release(
        &self,
        network: Option<&str>,
        container: Option<&str>,
        address: Option<Ipv4Addr>,
    ) -> Result<(String, Option<Ipv4Addr>), String> {
        let network = self.network(network)?.to_string();
        let freed = self.admin(|a, net, host| match (container, address) {
            (Some(c), _) => a.release(net, host, c),
            (None, Some(addr)) => {
                // Only this host's own: another host's addresses are that host's to free.
                if a.allocations(net, Some(host))?
                    .iter()
                    .any(|x| x.address == addr)
                {
                    a.release_address(net, addr)
                } else {
                    Ok(None)
                }
            }
            (None, None) => Ok(None),
        })?;
        if let Some(a) = freed {
            log::info!("network {network}: {a} released");
        }
        Ok((network, freed))
    }

    fn allocations(&self, network: Option<&str>) -> Result<AllocationList, String> {
        let network = self.network(network)?.to_string();
        let list = self.admin(|a, net, host| a.allocations(net, Some(host)))?;
        Ok(AllocationList {
            network,
            range: Some(self.range().to_string()),
            allocations: list
                .into_iter()
                .map(|a| AllocationEntry {
                    address: a.address,
                    container: a.container,
                    name: a.name,
                    allocated: a.allocated,
                })
                .collect(),
        })
    }
}

fn describe(s: &dnet_cluster::Settings) -> String {
    format!(
        "{}{}, key {}, MTU {}",
        s.encap,
        s.udp_port.map(|p| format!(" port {p}")).unwrap_or_default(),
        s.key.map_or("none".to_string(), |k| k.to_string()),
        s.mtu
            .map_or("from the underlay".to_string(), |m| m.to_string())
    )
}

/// A member joined: a tunnel to it, unless one exists already (a `--peer` of the same host
/// stays as it was given).
fn peer_up(info: &SwitchInfo, network: &str, peer: &Peer) {
    let addr = peer.underlay;
    if let Some(o) = info.peer_origins().get(&addr) {
        if *o != PeerOrigin::Etcd {
            log::info!(
                "network {network}: member {} at {addr} is already a peer ({}); kept as it is",
                peer.host,
                o.name()
            );
        }
        return;
    }
    let p = Sourced {
        value: addr,
        input: Input::etcd("peer", network, addr),
    };
    // The record's key, for a switch that seals its tunnels (the network's members were
    // checked to have one when it is encrypted; a cleartext network's are not used).
    let key = match peer.public_key.as_deref() {
        Some(k) if info.dataplane.encrypts() => {
            match dnet_crypto::PublicKey::from_base64(
                k,
                &format!("member {}'s public key", peer.host),
            ) {
                Ok(k) => Some(k),
                Err(e) => {
                    log::warn!(
                        "network {network}: member {} gets no tunnel: {e}",
                        peer.host
                    );
                    return;
                }
            }
        }
        _ => None,
    };
    if let Err(e) = info.add_peer_keyed(&p, key) {
        log::warn!(
            "network {network}: member {} gets no tunnel: {}",
            peer.host,
            dnet::error_chain::format(&e)
        );
    }
}

/// A member left (its lease ended, or it was removed): its tunnel goes, and with it the MACs
/// learned through it. Tunnels of other origins stay.
fn peer_down(info: &SwitchInfo, network: &str, peer: &Peer) {
    let addr = peer.underlay;
    if info.peer_origins().get(&addr) != Some(&PeerOrigin::Etcd) {
        return;
    }
    if let Err(e) = info.remove_peer(addr) {
        log::warn!(
            "network {network}: member {} at {addr} left, but its tunnel could not be removed: {e}",
            peer.host
        );
    }
}
