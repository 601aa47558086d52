//! `--network NAME --etcd URLS`: the cluster agent (crate `dnet-cluster`, its own thread and
//! runtime) joins the network before the data path starts, and once the switch runs, a thread
//! turns the agent's member changes into tunnels of origin `etcd` (and takes them away with
//! their learned MACs), exactly as `dnetctl peer add/del` would. The data path never waits on
//! etcd: it only ever sees ports come and go.

use anyhow::{Context, Result};
use dnet::config::fleet::{EtcdAuth, PasswordSource};
use dnet::config::{self, FleetSettings, Input, NetworkSettings, Sourced};
use dnet::control::{PeerOrigin, SwitchInfo};
use dnet_cluster::{
    Agent, AgentConfig, Credentials, EtcdOptions, Joined, LocalSettings, MembershipEvent, Peer,
    TlsFiles,
};
use std::net::Ipv4Addr;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

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
    /// `None` only while dropping.
    agent: Option<Agent>,
    network: String,
    events: Option<Receiver<MembershipEvent>>,
    applier: Option<JoinHandle<()>>,
}

impl Fleet {
    /// Joins the network as `underlay`: claims this host's range, registers, and learns the
    /// members (kept until [`Fleet::apply_to`]). Fails on what retrying cannot fix (no such
    /// network, a flag that contradicts its settings, a full subnet) and when etcd does not
    /// answer within the join timeout.
    pub fn join(f: &FleetSettings, underlay: Ipv4Addr) -> Result<Fleet> {
        let etcd = etcd_options(f)?;
        let network = f.network.value.clone();
        let mut cfg = AgentConfig::new(etcd, &network, underlay);
        cfg.ttl = f.ttl;
        cfg.settings = LocalSettings {
            encap: f.given.encap.map(|e| match e {
                config::Encap::Gre => dnet_cluster::Encap::Gre,
                config::Encap::Udp => dnet_cluster::Encap::Udp,
            }),
            udp_port: f.given.udp_port,
            key: f.given.key,
            mtu: f.given.mtu,
        };
        log::info!(
            "joining network {network} through etcd at {} as host {underlay}",
            f.endpoints.join(",")
        );
        let (tx, rx) = channel();
        let agent = Agent::start(cfg, Box::new(tx))
            .with_context(|| format!("joining network {network} ({})", f.network.input))?;
        let j = agent.joined();
        log::info!(
            "joined network {network} as host {}: address range {} (gateway {}) of {}; {}",
            j.host,
            j.range,
            j.gateway,
            j.subnet,
            describe(&j.settings)
        );
        Ok(Fleet {
            agent: Some(agent),
            network,
            events: Some(rx),
            applier: None,
        })
    }

    /// What joining settled.
    pub fn joined(&self) -> &Joined {
        self.agent().joined()
    }

    /// The network's data-path settings, for [`config::Settings::apply_network`].
    pub fn network_settings(&self) -> NetworkSettings {
        let s = &self.joined().settings;
        NetworkSettings {
            name: self.network.clone(),
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

    /// The agent, for status.
    pub fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("the agent runs until drop")
    }

    /// Starts turning member changes (those seen while joining first) into tunnels of `info`.
    pub fn apply_to(&mut self, info: Arc<SwitchInfo>) -> Result<()> {
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
        drop(self.agent.take());
        if let Some(t) = self.applier.take() {
            let _ = t.join();
        }
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
    if let Err(e) = info.add_peer(&p) {
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
