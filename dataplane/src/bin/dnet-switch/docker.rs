//! `--docker`: the switch serves Docker's network and IPAM plugin API (crate `dnet-plugins`)
//! for the networks it joined through etcd. Addresses come from the same etcd allocator as
//! `dnetctl attach` ([`crate::fleet::Allocator`]); each network's containers join its bridge,
//! which this module makes (`br-NAME`) when no `--bridge` names one, and which carries the
//! range's gateway address. The plugin's HTTP server runs on its own thread and runtime; the
//! data path never waits on it or on the engine.

use crate::fleet::{AllocError, Allocator};
use anyhow::{Context, Result};
use dnet_cluster::ranges::PlanError;
use dnet_cluster::ClusterError;
use dnet_netlink::Netlink;
use dnet_plugins::backend::{container_addresses, range_gateway};
use dnet_plugins::docker::{engine, DockerOptions, DockerPlugin};
use dnet_plugins::{Allocation, Backend, BackendError, Network};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

/// The bridge made for network `name` when no `--bridge` names one.
pub fn default_bridge(name: &str) -> String {
    format!("br-{name}")
}

/// Makes sure `bridge` exists and is up (created if missing; its MTU follows its ports'),
/// carries `gateway/prefix` (the containers' gateway: the host itself), and that the host
/// routes nothing received on it.
pub fn ensure_bridge(bridge: &str, gateway: Ipv4Addr, prefix: u8) -> Result<()> {
    let ctx = || format!("preparing bridge {bridge} for the Docker plugin");
    let mut nl = Netlink::open().with_context(ctx)?;
    let link = match nl.link_by_name(bridge).with_context(ctx)? {
        Some(l) => l,
        None => {
            nl.add_bridge(bridge).with_context(ctx)?;
            log::info!("created bridge {bridge}");
            nl.link_by_name(bridge)
                .with_context(ctx)?
                .with_context(|| format!("bridge {bridge} vanished right after it was made"))?
        }
    };
    if link.kind.as_deref() != Some("bridge") {
        anyhow::bail!(
            "{bridge} exists and is not a bridge: remove it, or name another with --bridge"
        );
    }
    nl.set_up(link.index).with_context(ctx)?;
    // A dnet network is one layer-2 segment: the host must not route its containers into
    // another network (or anywhere), which it would with the gateway address on every bridge
    // and IP forwarding on (dockerd turns it on). IPv4's per-interface switch governs packets
    // received on the bridge; the containers still reach the host itself.
    let fwd = format!("/proc/sys/net/ipv4/conf/{bridge}/forwarding");
    std::fs::write(&fwd, "0")
        .with_context(|| format!("turning off IP forwarding from {bridge} ({fwd})"))?;
    let addrs = nl.ipv4_addrs(link.index).with_context(ctx)?;
    if !addrs.iter().any(|(a, _)| *a == gateway) {
        nl.add_addr(link.index, gateway, prefix).with_context(ctx)?;
        log::info!("bridge {bridge}: gateway {gateway}/{prefix}");
    }
    Ok(())
}

/// One network the plugin serves.
pub struct Served {
    /// Its allocator in etcd.
    pub alloc: Allocator,
    /// Its bridge.
    pub bridge: String,
    /// Its TAP MTU (the containers' MTU).
    pub mtu: u32,
}

/// [`Backend`] over the switch's etcd networks.
pub struct SwitchBackend {
    nets: Vec<Served>,
}

impl SwitchBackend {
    /// The backend of `nets`.
    pub fn new(nets: Vec<Served>) -> SwitchBackend {
        SwitchBackend { nets }
    }

    fn served(&self, network: &str) -> Result<&Served, BackendError> {
        self.nets
            .iter()
            .find(|n| n.alloc.network() == network)
            .ok_or_else(|| BackendError::UnknownNetwork {
                network: network.to_string(),
                served: self
                    .nets
                    .iter()
                    .map(|n| n.alloc.network())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// etcd's answer, as the plugins' refusals.
fn refusal(network: &str, range: Ipv4Net, e: AllocError) -> BackendError {
    match e {
        AllocError::Unavailable(reason) => BackendError::Unavailable {
            what: "etcd".into(),
            reason,
        },
        AllocError::Refused(ClusterError::AddressTaken {
            address, holder, ..
        }) => BackendError::InUse {
            address,
            network: network.to_string(),
            owner: holder,
        },
        AllocError::Refused(ClusterError::NotInRange { address, range, .. }) => {
            BackendError::OutsideRange {
                address,
                network: network.to_string(),
                range,
            }
        }
        AllocError::Refused(ClusterError::Plan(PlanError::RangeFull { .. })) => {
            BackendError::RangeFull {
                network: network.to_string(),
                range,
            }
        }
        AllocError::Refused(e) => BackendError::Failed(e.to_string()),
    }
}

impl Backend for SwitchBackend {
    fn networks(&self) -> Result<Vec<Network>, BackendError> {
        Ok(self
            .nets
            .iter()
            .map(|n| {
                let range = n.alloc.range();
                Network {
                    name: n.alloc.network().to_string(),
                    subnet: n.alloc.subnet(),
                    range,
                    gateway: range_gateway(range),
                    bridge: n.bridge.clone(),
                    mtu: n.mtu,
                }
            })
            .collect())
    }

    fn allocate(
        &self,
        network: &str,
        owner: &str,
        requested: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, BackendError> {
        let n = self.served(network)?;
        let range = n.alloc.range();
        if let Some(a) = requested {
            if !range.contains(&a) {
                return Err(BackendError::OutsideRange {
                    address: a,
                    network: network.into(),
                    range,
                });
            }
            if !container_addresses(range).any(|c| c == a) {
                return Err(BackendError::Reserved {
                    address: a,
                    network: network.into(),
                    range,
                });
            }
        }
        let got = n
            .alloc
            .allocate(owner, requested)
            .map_err(|e| refusal(network, range, e))?;
        match requested {
            Some(want) if want != got => Err(BackendError::OwnerHolds {
                owner: owner.into(),
                address: got,
                network: network.into(),
            }),
            _ => Ok(got),
        }
    }

    fn release(&self, network: &str, owner: &str) -> Result<Option<Ipv4Addr>, BackendError> {
        let n = self.served(network)?;
        n.alloc
            .release(owner)
            .map_err(|e| refusal(network, n.alloc.range(), e))
    }

    fn allocations(&self, network: &str) -> Result<Vec<Allocation>, BackendError> {
        let n = self.served(network)?;
        Ok(n.alloc
            .allocations()
            .map_err(|e| refusal(network, n.alloc.range(), e))?
            .into_iter()
            .map(|(address, owner)| Allocation { address, owner })
            .collect())
    }
}

/// Serves the plugin socket `dnet.sock` in `plugin_dir` for `nets`, after taking over what
/// the engine (at `DOCKER_HOST` or /var/run/docker.sock) already runs on them, and makes
/// sure each network has its Docker network.
pub fn start(nets: Vec<Served>, plugin_dir: PathBuf) -> Result<DockerPlugin> {
    let opts = DockerOptions {
        plugin_dir,
        engine: Some(engine::engine_socket()),
        ensure_networks: true,
    };
    let p = DockerPlugin::start(Arc::new(SwitchBackend::new(nets)), &opts)
        .context("starting the Docker plugin (--docker)")?;
    if let Some(e) = &p.engine_error {
        log::warn!("docker plugin: {e}; serving anyway: `docker network create -d dnet --ipam-driver dnet` works once the engine runs");
    }
    for (net, r) in &p.ensured {
        match r {
            Ok(engine::Ensured::Created(id)) => {
                log::info!("docker plugin: created Docker network {net} (id {id:.12})")
            }
            Ok(engine::Ensured::Existed(id)) => {
                log::info!("docker plugin: Docker network {net} exists (id {id:.12})")
            }
            Err(e) => log::warn!("docker plugin: network {net}: {e}"),
        }
    }
    log::info!(
        "docker plugin {} on {}; took over {} endpoint(s) from the engine",
        dnet_plugins::docker::PLUGIN_NAME,
        p.socket().display(),
        p.restored.endpoints
    );
    Ok(p)
}
