//! The driver behind the plugin socket: one request (method name and JSON body) in, one reply
//! (HTTP status and JSON body) out, with the network and IPAM state in between. No HTTP and no
//! socket here; the veth work goes through [`Links`], so every reply of the API can be tested
//! without a Docker engine.
//!
//! How libnetwork drives it, for one `docker run --network blue`:
//! 1. `IpamDriver.RequestAddress` (pool `dnet:blue`, the endpoint's MAC in the options): the
//!    backend allocates an address for owner `docker-mac:MAC`, remembered as pending.
//! 2. `NetworkDriver.CreateEndpoint` (endpoint id, that address and MAC): the allocation is
//!    confirmed and the endpoint recorded.
//! 3. `NetworkDriver.Join`: a veth pair is made, the host end a port of blue's bridge, both ends
//!    with blue's MTU; the reply names the other end, which Docker moves into the container and
//!    configures, and blue's gateway (this host's bridge address).
//! 4. On stop or removal: `Leave` (the veth is deleted), `DeleteEndpoint`, then
//!    `IpamDriver.ReleaseAddress`, which frees the allocation.
//!
//! Refusals are `{"Err": "..."}` with status 500 (Docker shows the text, prefixed with the
//! method); an undecodable body is status 400; an unknown method is 404 (libnetwork then treats
//! the call as not implemented).

use super::api::{self, AddressRequest, CreateEndpoint, CreateNetwork, EndpointRef, RequestPool};
use super::engine::EngineNetwork;
use crate::backend::{Backend, BackendError, Network};
use crate::veth::{self, derived_ifname, format_mac, parse_mac, Plug, VethError};
use dnet_netlink::Netlink;
use ipnet::Ipv4Net;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// Address space names this IPAM driver reports (and checks `CreateNetwork` against, so a
/// `-d dnet` network with Docker's default IPAM is refused instead of handing out addresses
/// the switch never allocated).
pub const LOCAL_ADDRESS_SPACE: &str = "dnet-local";
/// See [`LOCAL_ADDRESS_SPACE`].
pub const GLOBAL_ADDRESS_SPACE: &str = "dnet-global";
/// Prefix of the pool ids: `dnet:NETWORK`.
const POOL_PREFIX: &str = "dnet:";
/// Prefix of the owner of a Docker endpoint's address.
pub const OWNER_PREFIX: &str = "docker-mac:";
/// Interface-name prefix of a veth's host end.
const HOST_IF_PREFIX: &str = "dnh";
/// Interface-name prefix of the end Docker moves into the container.
const PEER_IF_PREFIX: &str = "dnc";
/// Docker names the container's interface this plus an index (`eth1`).
const DST_PREFIX: &str = "eth";

/// The veth work the driver needs, in the host namespace.
pub trait Links: Send {
    /// Whether `bridge` exists.
    fn bridge_exists(&mut self, bridge: &str) -> Result<bool, VethError>;
    /// Makes a veth pair (both ends here), the host end a port of `bridge` and up.
    fn plug(&mut self, p: &PlugSpec) -> Result<(), VethError>;
    /// Deletes the veth whose host end is `host_if`; `Ok(false)` if absent.
    fn unplug(&mut self, host_if: &str) -> Result<bool, VethError>;
}

/// What [`Links::plug`] makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlugSpec {
    /// Host end.
    pub host_if: String,
    /// The end Docker moves into the container.
    pub peer_if: String,
    /// The container's MAC address.
    pub mac: [u8; 6],
    /// MTU of both ends.
    pub mtu: u32,
    /// The network's bridge.
    pub bridge: String,
    /// Alias of the host end.
    pub alias: String,
}

/// [`Links`] over a netlink socket of the namespace it was opened in.
#[derive(Debug)]
pub struct NetlinkLinks {
    nl: Netlink,
    ns: File,
}

impl NetlinkLinks {
    /// Opens a netlink socket in the calling thread's network namespace (the host's, where the
    /// bridges are), for the life of the driver.
    pub fn open() -> std::io::Result<NetlinkLinks> {
        Ok(NetlinkLinks {
            nl: Netlink::open()?,
            ns: veth::own_netns()?,
        })
    }
}

impl Links for NetlinkLinks {
    fn bridge_exists(&mut self, bridge: &str) -> Result<bool, VethError> {
        self.nl
            .link_by_name(bridge)
            .map(|l| l.is_some())
            .map_err(|error| VethError::Netlink {
                step: format!("looking up bridge {bridge}"),
                error,
            })
    }

    fn plug(&mut self, p: &PlugSpec) -> Result<(), VethError> {
        veth::plug(
            &mut self.nl,
            &Plug {
                host_if: &p.host_if,
                peer_if: &p.peer_if,
                peer_ns: &self.ns,
                peer_mac: p.mac,
                mtu: p.mtu,
                bridge: &p.bridge,
                alias: &p.alias,
            },
        )
        .map(|_| ())
    }

    fn unplug(&mut self, host_if: &str) -> Result<bool, VethError> {
        veth::unplug(&mut self.nl, host_if)
    }
}

/// Why a request was refused; the text goes to the user through Docker.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The body is not the JSON the method takes.
    #[error("dnet: the {method} request is not valid JSON for this method ({reason})")]
    BadJson {
        /// The method.
        method: String,
        /// The decoder's message.
        reason: String,
    },
    /// No such method.
    #[error("dnet: no method {0} (this plugin implements NetworkDriver and IpamDriver)")]
    UnknownMethod(String),
    /// A network id this driver does not know.
    #[error("dnet: unknown network {0}: it was not created through this plugin (recreate it with `docker network create -d dnet --ipam-driver dnet`)")]
    UnknownNetwork(String),
    /// An endpoint id this driver does not know.
    #[error("dnet: unknown endpoint {endpoint} in network {network}")]
    UnknownEndpoint {
        /// The network.
        network: String,
        /// The endpoint.
        endpoint: String,
    },
    /// A pool id this driver did not hand out.
    #[error("dnet: unknown address pool {0:?} (pools of this driver are named dnet:NETWORK)")]
    UnknownPool(String),
    /// An endpoint id given twice.
    #[error("dnet: endpoint {0} exists already")]
    DuplicateEndpoint(String),
    /// A request the driver understands but cannot honour.
    #[error("dnet: {0}")]
    Refused(String),
    /// The backend refused (its message is the whole story, so it is not also a `source()`).
    #[error("dnet: {0}")]
    Backend(BackendError),
    /// A veth step failed (likewise).
    #[error("dnet: {0}")]
    Veth(VethError),
}

impl From<BackendError> for DriverError {
    fn from(e: BackendError) -> Self {
        DriverError::Backend(e)
    }
}

impl From<VethError> for DriverError {
    fn from(e: VethError) -> Self {
        DriverError::Veth(e)
    }
}

impl DriverError {
    fn status(&self) -> u16 {
        match self {
            DriverError::BadJson { .. } => 400,
            DriverError::UnknownMethod(_) => 404,
            _ => 500,
        }
    }
}

/// An HTTP reply: status and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Value,
}

/// A Docker network this driver serves, by Docker's network id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DockerNetwork {
    /// The dnet network.
    dnet: String,
}

/// An endpoint (a container's attachment to a network).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    network_id: String,
    dnet: String,
    mac: [u8; 6],
    address: Ipv4Addr,
}

/// What [`Driver::restore`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Docker networks of this driver now known.
    pub networks: usize,
    /// Endpoints now known (running containers).
    pub endpoints: usize,
    /// Allocations released because no endpoint holds them any more: (network, address, owner).
    pub released: Vec<(String, Ipv4Addr, String)>,
    /// What could not be matched (logged; never fatal).
    pub problems: Vec<String>,
}

/// The remote network and IPAM driver (see the module docs).
pub struct Driver {
    backend: Arc<dyn Backend>,
    links: Box<dyn Links>,
    networks: BTreeMap<String, DockerNetwork>,
    endpoints: BTreeMap<String, Endpoint>,
    /// Addresses handed out by `RequestAddress` whose endpoint does not exist yet:
    /// (network, owner) -> address.
    pending: BTreeMap<(String, String), Ipv4Addr>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("networks", &self.networks)
            .field("endpoints", &self.endpoints)
            .field("pending", &self.pending)
            .finish()
    }
}

fn decode<T: serde::de::DeserializeOwned + Default>(
    method: &str,
    body: &[u8],
) -> Result<T, DriverError> {
    // Methods without a payload get an empty body (or `null`, `{}`) from Docker.
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice::<Option<T>>(body)
        .map(Option::unwrap_or_default)
        .map_err(|e| DriverError::BadJson {
            method: method.to_string(),
            reason: e.to_string(),
        })
}

/// Parses `a.b.c.d/len` (host bits allowed).
fn parse_cidr(what: &str, s: &str) -> Result<Ipv4Net, DriverError> {
    s.parse::<Ipv4Net>()
        .map_err(|_| DriverError::Refused(format!("{what} {s:?} is not an IPv4 address/prefix")))
}

fn parse_ip(what: &str, s: &str) -> Result<Ipv4Addr, DriverError> {
    s.parse::<Ipv4Addr>()
        .map_err(|_| DriverError::Refused(format!("{what} {s:?} is not an IPv4 address")))
}

/// The host end and container end names of an endpoint's veth.
pub fn veth_names(endpoint_id: &str) -> (String, String) {
    (
        derived_ifname(HOST_IF_PREFIX, endpoint_id),
        derived_ifname(PEER_IF_PREFIX, endpoint_id),
    )
}

/// The owner of a Docker endpoint's address.
pub fn owner_of(mac: &[u8; 6]) -> String {
    format!("{OWNER_PREFIX}{}", format_mac(mac))
}

impl Driver {
    /// A driver with no state yet; call [`Driver::restore`] to take over running containers.
    pub fn new(backend: Arc<dyn Backend>, links: Box<dyn Links>) -> Driver {
        Driver {
            backend,
            links,
            networks: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            pending: BTreeMap::new(),
        }
    }

    /// Answers one request: `method` is the URL path (`/NetworkDriver.Join`).
    pub fn handle(&mut self, method: &str, body: &[u8]) -> Reply {
        let m = method.trim_start_matches('/');
        match self.dispatch(m, body) {
            Ok(body) => Reply { status: 200, body },
            Err(e) => {
                log::warn!("docker plugin: {m} refused: {e}");
                Reply {
                    status: e.status(),
                    body: json!({ "Err": e.to_string() }),
                }
            }
        }
    }

    fn dispatch(&mut self, m: &str, body: &[u8]) -> Result<Value, DriverError> {
        match m {
            "Plugin.Activate" => Ok(json!({ "Implements": ["NetworkDriver", "IpamDriver"] })),
            "NetworkDriver.GetCapabilities" => {
                Ok(json!({ "Scope": "local", "ConnectivityScope": "global" }))
            }
            "NetworkDriver.CreateNetwork" => self.create_network(decode(m, body)?),
            "NetworkDriver.DeleteNetwork" => {
                let r: api::NetworkRef = decode(m, body)?;
                if self.networks.remove(&r.network_id).is_none() {
                    // Idempotent: a network this driver forgot must still be removable.
                    log::info!("docker plugin: DeleteNetwork of unknown {}", r.network_id);
                }
                Ok(json!({}))
            }
            "NetworkDriver.CreateEndpoint" => self.create_endpoint(decode(m, body)?),
            "NetworkDriver.EndpointOperInfo" => {
                let r: EndpointRef = decode(m, body)?;
                let ep = self.endpoint(&r)?;
                let (host_if, _) = veth_names(&r.endpoint_id);
                Ok(json!({ "Value": {
                    "network": ep.dnet,
                    "address": ep.address.to_string(),
                    "mac": format_mac(&ep.mac),
                    "host_veth": host_if,
                }}))
            }
            "NetworkDriver.DeleteEndpoint" => {
                let r: EndpointRef = decode(m, body)?;
                self.known_network(&r.network_id)?;
                if self.endpoints.remove(&r.endpoint_id).is_some() {
                    let (host_if, _) = veth_names(&r.endpoint_id);
                    self.links.unplug(&host_if)?;
                }
                // The address is freed by the ReleaseAddress libnetwork sends next.
                Ok(json!({}))
            }
            "NetworkDriver.Join" => self.join(decode(m, body)?),
            "NetworkDriver.Leave" => {
                let r: EndpointRef = decode(m, body)?;
                self.known_network(&r.network_id)?;
                let (host_if, _) = veth_names(&r.endpoint_id);
                self.links.unplug(&host_if)?;
                Ok(json!({}))
            }
            "NetworkDriver.DiscoverNew" | "NetworkDriver.DiscoverDelete" => {
                let _: api::Discovery = decode(m, body)?;
                Ok(json!({}))
            }
            "NetworkDriver.ProgramExternalConnectivity"
            | "NetworkDriver.RevokeExternalConnectivity" => {
                let _: EndpointRef = decode(m, body)?;
                Ok(json!({}))
            }
            "IpamDriver.GetCapabilities" => Ok(json!({
                "RequiresMACAddress": true,
                "RequiresRequestReplay": false,
            })),
            "IpamDriver.GetDefaultAddressSpaces" => Ok(json!({
                "LocalDefaultAddressSpace": LOCAL_ADDRESS_SPACE,
                "GlobalDefaultAddressSpace": GLOBAL_ADDRESS_SPACE,
            })),
            "IpamDriver.RequestPool" => self.request_pool(decode(m, body)?),
            "IpamDriver.ReleasePool" => {
                let r: api::ReleasePool = decode(m, body)?;
                self.pool_network(&r.pool_id)?;
                Ok(json!({}))
            }
            "IpamDriver.RequestAddress" => self.request_address(decode(m, body)?),
            "IpamDriver.ReleaseAddress" => self.release_address(decode(m, body)?),
            other => Err(DriverError::UnknownMethod(other.to_string())),
        }
    }

    fn known_network(&self, id: &str) -> Result<&DockerNetwork, DriverError> {
        self.networks
            .get(id)
            .ok_or_else(|| DriverError::UnknownNetwork(id.to_string()))
    }

    fn endpoint(&self, r: &EndpointRef) -> Result<&Endpoint, DriverError> {
        self.known_network(&r.network_id)?;
        self.endpoints
            .get(&r.endpoint_id)
            .filter(|e| e.network_id == r.network_id)
            .ok_or_else(|| DriverError::UnknownEndpoint {
                network: r.network_id.clone(),
                endpoint: r.endpoint_id.clone(),
            })
    }

    /// The served network with subnet `pool`; `name` picks one when several share it.
    fn network_for_pool(&self, pool: Ipv4Net, name: Option<&str>) -> Result<Network, DriverError> {
        let all = self.backend.networks()?;
        let served = || {
            all.iter()
                .map(|n| format!("{} {}", n.name, n.subnet))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let matching: Vec<&Network> = all
            .iter()
            .filter(|n| n.subnet == pool && name.is_none_or(|x| x == n.name))
            .collect();
        match matching.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(DriverError::Refused(format!(
                "this host serves no dnet network with subnet {pool}{}; it serves: {}",
                name.map(|n| format!(" named {n}")).unwrap_or_default(),
                served()
            ))),
            _ => Err(DriverError::Refused(format!(
                "several dnet networks have subnet {pool}: say which with --ipam-opt {}=NAME and -o {}=NAME",
                api::NETWORK_OPTION,
                api::NETWORK_OPTION
            ))),
        }
    }

    fn pool_network(&self, pool_id: &str) -> Result<Network, DriverError> {
        let name = pool_id
            .strip_prefix(POOL_PREFIX)
            .ok_or_else(|| DriverError::UnknownPool(pool_id.to_string()))?;
        self.backend.network(name).map_err(|e| match e {
            BackendError::UnknownNetwork { .. } => DriverError::UnknownPool(pool_id.to_string()),
            e => e.into(),
        })
    }

    fn request_pool(&mut self, r: RequestPool) -> Result<Value, DriverError> {
        if r.v6 {
            return Err(DriverError::Refused(
                "dnet networks are IPv4 only: create the network without --ipv6".into(),
            ));
        }
        let name = r.options.get(api::NETWORK_OPTION).map(String::as_str);
        let net = if r.pool.is_empty() {
            if !r.sub_pool.is_empty() {
                return Err(DriverError::Refused(
                    "--ip-range needs --subnet (libnetwork sent a sub-pool without a pool)".into(),
                ));
            }
            let all = self.backend.networks()?;
            match (name, all.as_slice()) {
                (Some(n), _) => self.backend.network(n)?,
                (None, [one]) => one.clone(),
                (None, _) => {
                    return Err(DriverError::Refused(format!(
                        "say which dnet network: --subnet CIDR (served: {})",
                        all.iter()
                            .map(|n| format!("{} {}", n.name, n.subnet))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                }
            }
        } else {
            let pool = parse_cidr("subnet", &r.pool)?;
            if pool.addr() != pool.network() {
                return Err(DriverError::Refused(format!(
                    "subnet {pool} has host bits set: use {}",
                    pool.trunc()
                )));
            }
            self.network_for_pool(pool, name)?
        };
        if !r.sub_pool.is_empty() {
            let sub = parse_cidr("--ip-range", &r.sub_pool)?;
            if sub.trunc() != net.range {
                return Err(DriverError::Refused(format!(
                    "--ip-range {sub} is not this host's range {} of {}: dnet hands out addresses of this host's range only; drop --ip-range",
                    net.range, net.name
                )));
            }
        }
        Ok(json!({
            "PoolID": format!("{POOL_PREFIX}{}", net.name),
            "Pool": net.subnet.to_string(),
            "Data": { api::POOL_GATEWAY_DATA: net.with_prefix(net.gateway) },
        }))
    }

    fn request_address(&mut self, r: AddressRequest) -> Result<Value, DriverError> {
        let net = self.pool_network(&r.pool_id)?;
        let requested = if r.address.is_empty() {
            None
        } else {
            Some(parse_ip("address", &r.address)?)
        };
        if r.options.get(api::REQUEST_ADDRESS_TYPE).map(String::as_str) == Some(api::GATEWAY_TYPE) {
            return match requested {
                Some(g) if g != net.gateway => Err(DriverError::Refused(format!(
                    "gateway {g} is not this host's gateway {} of network {}: drop --gateway, or use {}",
                    net.gateway, net.name, net.gateway
                ))),
                _ => Ok(json!({ "Address": net.with_prefix(net.gateway), "Data": {} })),
            };
        }
        let mac = r
            .options
            .get(api::MAC_OPTION)
            .ok_or_else(|| {
                DriverError::Refused(format!(
                    "address request without the endpoint's MAC address ({}); dnet hands out addresses to container endpoints only (--aux-address is not supported)",
                    api::MAC_OPTION
                ))
            })
            .and_then(|m| {
                parse_mac(m).ok_or_else(|| {
                    DriverError::Refused(format!("MAC address {m:?} is not aa:bb:cc:dd:ee:ff"))
                })
            })?;
        let owner = owner_of(&mac);
        if let Some((id, ep)) = self
            .endpoints
            .iter()
            .find(|(_, e)| e.dnet == net.name && e.mac == mac)
        {
            return Err(DriverError::Refused(format!(
                "MAC address {} is already used by endpoint {id} ({}) in network {}: give each container its own MAC address",
                format_mac(&mac),
                ep.address,
                net.name
            )));
        }
        let key = (net.name.clone(), owner.clone());
        if let Some(a) = self.pending.get(&key) {
            return Err(DriverError::Refused(format!(
                "MAC address {} already has address {a} in network {} for an endpoint being created: give each container its own MAC address",
                format_mac(&mac),
                net.name
            )));
        }
        let address = self.backend.allocate(&net.name, &owner, requested)?;
        self.pending.insert(key, address);
        Ok(json!({ "Address": net.with_prefix(address), "Data": {} }))
    }

    fn release_address(&mut self, r: AddressRequest) -> Result<Value, DriverError> {
        let net = self.pool_network(&r.pool_id)?;
        let address = parse_ip("address", &r.address)?;
        if address == net.gateway {
            return Ok(json!({}));
        }
        if let Some((id, _)) = self
            .endpoints
            .iter()
            .find(|(_, e)| e.dnet == net.name && e.address == address)
        {
            return Err(DriverError::Refused(format!(
                "address {address} of network {} is in use by endpoint {id}: not released",
                net.name
            )));
        }
        let holder = self
            .backend
            .allocations(&net.name)?
            .into_iter()
            .find(|a| a.address == address);
        let Some(holder) = holder else {
            return Ok(json!({})); // already free: idempotent
        };
        if !holder.owner.starts_with(OWNER_PREFIX) {
            return Err(DriverError::Refused(format!(
                "address {address} of network {} is held by {}, not by a Docker endpoint: not released",
                net.name, holder.owner
            )));
        }
        self.backend.release(&net.name, &holder.owner)?;
        self.pending.remove(&(net.name, holder.owner));
        Ok(json!({}))
    }

    fn create_network(&mut self, r: CreateNetwork) -> Result<Value, DriverError> {
        if r.network_id.is_empty() {
            return Err(DriverError::Refused(
                "CreateNetwork without a NetworkID".into(),
            ));
        }
        if r.ipv6_data.iter().any(|d| !d.pool.is_empty()) {
            return Err(DriverError::Refused(
                "dnet networks are IPv4 only: create the network without --ipv6".into(),
            ));
        }
        let [v4] = r.ipv4_data.as_slice() else {
            return Err(DriverError::Refused(format!(
                "a dnet network has exactly one IPv4 subnet; this request has {}",
                r.ipv4_data.len()
            )));
        };
        if v4.address_space != LOCAL_ADDRESS_SPACE && v4.address_space != GLOBAL_ADDRESS_SPACE {
            return Err(DriverError::Refused(format!(
                "the network's addresses come from address space {:?}, not from dnet's IPAM: create it with --ipam-driver dnet",
                v4.address_space
            )));
        }
        let generic = r
            .options
            .get(api::GENERIC_OPTION)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let name = generic.get(api::NETWORK_OPTION).and_then(Value::as_str);
        let net = self.network_for_pool(parse_cidr("subnet", &v4.pool)?.trunc(), name)?;
        let gw = parse_cidr("gateway", &v4.gateway)?;
        if gw.addr() != net.gateway {
            return Err(DriverError::Refused(format!(
                "gateway {} is not this host's gateway {} of network {}: drop --gateway",
                gw.addr(),
                net.gateway,
                net.name
            )));
        }
        if let Some(mtu) = generic.get(api::MTU_OPTION) {
            let given = match mtu {
                Value::String(s) => s.trim().parse::<u32>().ok(),
                Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
                _ => None,
            };
            if given != Some(net.mtu) {
                return Err(DriverError::Refused(format!(
                    "MTU {mtu} differs from network {}'s MTU {}: drop -o {}, or set it to {}",
                    net.name,
                    net.mtu,
                    api::MTU_OPTION,
                    net.mtu
                )));
            }
        }
        if !self.links.bridge_exists(&net.bridge)? {
            return Err(VethError::NoBridge { bridge: net.bridge }.into());
        }
        if let Some(old) = self.networks.get(&r.network_id) {
            if old.dnet != net.name {
                return Err(DriverError::Refused(format!(
                    "network {} exists already (on dnet network {})",
                    r.network_id, old.dnet
                )));
            }
        }
        self.networks
            .insert(r.network_id, DockerNetwork { dnet: net.name });
        Ok(json!({}))
    }

    fn create_endpoint(&mut self, r: CreateEndpoint) -> Result<Value, DriverError> {
        let dnet = self.known_network(&r.network_id)?.dnet.clone();
        if r.endpoint_id.is_empty() {
            return Err(DriverError::Refused(
                "CreateEndpoint without an EndpointID".into(),
            ));
        }
        if self.endpoints.contains_key(&r.endpoint_id) {
            return Err(DriverError::DuplicateEndpoint(r.endpoint_id));
        }
        let iface = r.interface.unwrap_or_default();
        if !iface.address_ipv6.is_empty() {
            return Err(DriverError::Refused(
                "dnet networks are IPv4 only: the endpoint has an IPv6 address".into(),
            ));
        }
        if iface.address.is_empty() {
            return Err(DriverError::Refused(
                "the endpoint has no IPv4 address: the network must use --ipam-driver dnet".into(),
            ));
        }
        let net = self.backend.network(&dnet)?;
        let address = parse_cidr("endpoint address", &iface.address)?.addr();
        if !net.range.contains(&address) {
            return Err(BackendError::OutsideRange {
                address,
                network: net.name,
                range: net.range,
            }
            .into());
        }
        let mac = parse_mac(&iface.mac_address).ok_or_else(|| {
            DriverError::Refused(format!(
                "endpoint MAC address {:?} is not aa:bb:cc:dd:ee:ff",
                iface.mac_address
            ))
        })?;
        if let Some((id, _)) = self
            .endpoints
            .iter()
            .find(|(_, e)| e.dnet == net.name && (e.address == address || e.mac == mac))
        {
            return Err(DriverError::Refused(format!(
                "address {address} or MAC address {} is already used by endpoint {id} in network {}",
                format_mac(&mac),
                net.name
            )));
        }
        let owner = owner_of(&mac);
        // Confirms the pending allocation, or takes the address again if the plugin restarted
        // between RequestAddress and CreateEndpoint; refused if someone else holds it.
        self.backend.allocate(&net.name, &owner, Some(address))?;
        self.pending.remove(&(net.name.clone(), owner));
        self.endpoints.insert(
            r.endpoint_id,
            Endpoint {
                network_id: r.network_id,
                dnet: net.name,
                mac,
                address,
            },
        );
        Ok(json!({}))
    }

    fn join(&mut self, r: EndpointRef) -> Result<Value, DriverError> {
        let ep = self.endpoint(&r)?.clone();
        let net = self.backend.network(&ep.dnet)?;
        let (host_if, peer_if) = veth_names(&r.endpoint_id);
        // A veth left by an earlier Join of this endpoint (a retry) is replaced.
        self.links.unplug(&host_if)?;
        self.links.plug(&PlugSpec {
            host_if,
            peer_if: peer_if.clone(),
            mac: ep.mac,
            mtu: net.mtu,
            bridge: net.bridge.clone(),
            alias: format!("{}docker:{}", veth::ALIAS_PREFIX, r.endpoint_id),
        })?;
        Ok(json!({
            "InterfaceName": { "SrcName": peer_if, "DstPrefix": DST_PREFIX },
            "Gateway": net.gateway.to_string(),
        }))
    }

    /// Takes over what the engine reports (after a restart): its `dnet` networks and their
    /// running endpoints, confirming each endpoint's allocation with the backend; then releases
    /// every Docker allocation that no endpoint holds any more (a container removed while the
    /// plugin was down). Without the engine's view (`None`), nothing is released.
    pub fn restore(&mut self, engine: Option<&[EngineNetwork]>) -> RestoreReport {
        let mut rep = RestoreReport::default();
        let Some(engine) = engine else {
            return rep;
        };
        let served = match self.backend.networks() {
            Ok(s) => s,
            Err(e) => {
                rep.problems.push(format!("backend: {e}"));
                return rep;
            }
        };
        for en in engine {
            let net = en.subnets.iter().find_map(|s| {
                let s = s.parse::<Ipv4Net>().ok()?.trunc();
                let name = en.options.get(api::NETWORK_OPTION).map(String::as_str);
                served
                    .iter()
                    .find(|n| n.subnet == s && name.is_none_or(|x| x == n.name))
            });
            let Some(net) = net else {
                rep.problems.push(format!(
                    "Docker network {} ({}) has no subnet this host serves ({:?})",
                    en.name, en.id, en.subnets
                ));
                continue;
            };
            self.networks.insert(
                en.id.clone(),
                DockerNetwork {
                    dnet: net.name.clone(),
                },
            );
            rep.networks += 1;
            for ep in &en.endpoints {
                let (Some(mac), Ok(addr)) = (
                    parse_mac(&ep.mac),
                    ep.ipv4
                        .parse::<Ipv4Net>()
                        .map(|n| n.addr())
                        .or_else(|_| ep.ipv4.parse::<Ipv4Addr>()),
                ) else {
                    rep.problems.push(format!(
                        "endpoint {} of {} has MAC {:?} and address {:?}, which this plugin cannot read",
                        ep.endpoint_id, en.name, ep.mac, ep.ipv4
                    ));
                    continue;
                };
                if let Err(e) = self
                    .backend
                    .allocate(&net.name, &owner_of(&mac), Some(addr))
                {
                    rep.problems.push(format!(
                        "endpoint {} ({}) of container {}: {e}",
                        ep.endpoint_id, addr, ep.container
                    ));
                }
                self.endpoints.insert(
                    ep.endpoint_id.clone(),
                    Endpoint {
                        network_id: en.id.clone(),
                        dnet: net.name.clone(),
                        mac,
                        address: addr,
                    },
                );
                rep.endpoints += 1;
            }
        }
        for net in &served {
            let held = match self.backend.allocations(&net.name) {
                Ok(h) => h,
                Err(e) => {
                    rep.problems
                        .push(format!("allocations of {}: {e}", net.name));
                    continue;
                }
            };
            for a in held {
                if !a.owner.starts_with(OWNER_PREFIX) {
                    continue;
                }
                let live = self.endpoints.values().any(|e| {
                    e.dnet == net.name && e.address == a.address && owner_of(&e.mac) == a.owner
                });
                if live {
                    continue;
                }
                match self.backend.release(&net.name, &a.owner) {
                    Ok(_) => rep.released.push((net.name.clone(), a.address, a.owner)),
                    Err(e) => rep
                        .problems
                        .push(format!("releasing {} of {}: {e}", a.address, net.name)),
                }
            }
        }
        rep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryBackend;
    use std::sync::Mutex;

    /// Links that record what the driver asked for, with a real bridge list.
    #[derive(Default)]
    struct FakeLinks {
        plugged: Arc<Mutex<Vec<String>>>,
    }

    impl Links for FakeLinks {
        fn bridge_exists(&mut self, bridge: &str) -> Result<bool, VethError> {
            Ok(bridge == "br-blue")
        }
        fn plug(&mut self, p: &PlugSpec) -> Result<(), VethError> {
            let mut v = self.plugged.lock().unwrap();
            if v.contains(&p.host_if) {
                return Err(VethError::Exists {
                    name: p.host_if.clone(),
                });
            }
            v.push(p.host_if.clone());
            Ok(())
        }
        fn unplug(&mut self, host_if: &str) -> Result<bool, VethError> {
            let mut v = self.plugged.lock().unwrap();
            let before = v.len();
            v.retain(|x| x != host_if);
            Ok(v.len() != before)
        }
    }

    fn blue() -> Network {
        Network {
            name: "blue".into(),
            subnet: "10.77.0.0/16".parse().unwrap(),
            range: "10.77.3.0/24".parse().unwrap(),
            gateway: "10.77.3.1".parse().unwrap(),
            bridge: "br-blue".into(),
            mtu: 1450,
        }
    }

    fn driver() -> (Driver, Arc<MemoryBackend>, Arc<Mutex<Vec<String>>>) {
        let b = Arc::new(MemoryBackend::new(vec![blue()]).unwrap());
        let links = FakeLinks::default();
        let plugged = links.plugged.clone();
        (Driver::new(b.clone(), Box::new(links)), b, plugged)
    }

    fn call(d: &mut Driver, m: &str, body: Value) -> Reply {
        d.handle(m, body.to_string().as_bytes())
    }

    fn ok(d: &mut Driver, m: &str, body: Value) -> Value {
        let r = call(d, m, body);
        assert_eq!(r.status, 200, "{m}: {:?}", r.body);
        r.body
    }

    fn err(d: &mut Driver, m: &str, body: Value) -> (u16, String) {
        let r = call(d, m, body);
        assert_ne!(r.status, 200, "{m} should fail: {:?}", r.body);
        (
            r.status,
            r.body["Err"].as_str().unwrap_or_default().to_string(),
        )
    }

    const MAC1: &str = "02:42:0a:4d:03:02";

    fn create_network(d: &mut Driver) {
        let pool = ok(
            d,
            "/IpamDriver.RequestPool",
            json!({"AddressSpace":"dnet-local","Pool":"10.77.0.0/16","SubPool":"","Options":{},"V6":false}),
        );
        assert_eq!(pool["PoolID"], "dnet:blue");
        assert_eq!(pool["Data"][api::POOL_GATEWAY_DATA], "10.77.3.1/16");
        ok(
            d,
            "/NetworkDriver.CreateNetwork",
            json!({"NetworkID":"n1","IPv4Data":[{"AddressSpace":"dnet-local","Pool":"10.77.0.0/16","Gateway":"10.77.3.1/16"}],
                   "Options":{"com.docker.network.generic":{"com.docker.network.driver.mtu":"1450"}}}),
        );
    }

    fn run_container(d: &mut Driver, ep: &str, mac: &str) -> String {
        let a = ok(
            d,
            "/IpamDriver.RequestAddress",
            json!({"PoolID":"dnet:blue","Address":"","Options":{api::MAC_OPTION: mac}}),
        );
        let addr = a["Address"].as_str().unwrap().to_string();
        ok(
            d,
            "/NetworkDriver.CreateEndpoint",
            json!({"NetworkID":"n1","EndpointID":ep,"Interface":{"Address":addr,"MacAddress":mac}}),
        );
        let j = ok(
            d,
            "/NetworkDriver.Join",
            json!({"NetworkID":"n1","EndpointID":ep,"SandboxKey":"/var/run/docker/netns/x"}),
        );
        assert_eq!(j["InterfaceName"]["SrcName"], veth_names(ep).1);
        assert_eq!(j["InterfaceName"]["DstPrefix"], "eth");
        assert_eq!(j["Gateway"], "10.77.3.1");
        addr
    }

    fn remove_container(d: &mut Driver, ep: &str, addr: &str) {
        ok(
            d,
            "/NetworkDriver.Leave",
            json!({"NetworkID":"n1","EndpointID":ep}),
        );
        ok(
            d,
            "/NetworkDriver.DeleteEndpoint",
            json!({"NetworkID":"n1","EndpointID":ep}),
        );
        let ip = addr.split('/').next().unwrap();
        ok(
            d,
            "/IpamDriver.ReleaseAddress",
            json!({"PoolID":"dnet:blue","Address":ip}),
        );
    }

    #[test]
    fn handshake() {
        let (mut d, _, _) = driver();
        let a = ok(&mut d, "/Plugin.Activate", Value::Null);
        assert_eq!(a["Implements"], json!(["NetworkDriver", "IpamDriver"]));
        assert_eq!(
            d.handle("/NetworkDriver.GetCapabilities", b"").body["Scope"],
            "local"
        );
        let c = ok(&mut d, "/IpamDriver.GetCapabilities", Value::Null);
        assert_eq!(c["RequiresMACAddress"], true);
        let s = ok(&mut d, "/IpamDriver.GetDefaultAddressSpaces", json!({}));
        assert_eq!(s["LocalDefaultAddressSpace"], LOCAL_ADDRESS_SPACE);
    }

    #[test]
    fn container_life_cycle_keeps_allocations_exact() {
        let (mut d, b, plugged) = driver();
        create_network(&mut d);
        let a1 = run_container(&mut d, "e1", MAC1);
        let a2 = run_container(&mut d, "e2", "02:42:0a:4d:03:03");
        assert_eq!(a1, "10.77.3.2/16");
        assert_eq!(a2, "10.77.3.3/16");
        assert_eq!(plugged.lock().unwrap().len(), 2);
        remove_container(&mut d, "e1", &a1);
        assert_eq!(plugged.lock().unwrap().len(), 1);
        let held: Vec<_> = b.allocations("blue").unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].address.to_string(), "10.77.3.3");
        // The freed address is reused, the live one is not.
        assert_eq!(
            run_container(&mut d, "e3", "02:42:0a:4d:03:09"),
            "10.77.3.2/16"
        );
    }

    #[test]
    fn hostile_requests_get_error_replies() {
        let (mut d, b, _) = driver();
        create_network(&mut d);
        let addr = run_container(&mut d, "e1", MAC1);

        let r = d.handle("/NetworkDriver.CreateEndpoint", b"{not json");
        assert_eq!(r.status, 400);
        assert!(r.body["Err"].as_str().unwrap().contains("not valid JSON"));
        let (s, e) = err(&mut d, "/NetworkDriver.Frobnicate", json!({}));
        assert_eq!(s, 404);
        assert!(e.contains("no method NetworkDriver.Frobnicate"), "{e}");
        let (_, e) = err(
            &mut d,
            "/NetworkDriver.CreateEndpoint",
            json!({"NetworkID":"nope","EndpointID":"e9","Interface":{"Address":"10.77.3.9/16","MacAddress":"02:00:00:00:00:09"}}),
        );
        assert!(e.contains("unknown network nope"), "{e}");
        let (_, e) = err(
            &mut d,
            "/NetworkDriver.CreateEndpoint",
            json!({"NetworkID":"n1","EndpointID":"e1","Interface":{"Address":"10.77.3.9/16","MacAddress":"02:00:00:00:00:09"}}),
        );
        assert!(e.contains("endpoint e1 exists already"), "{e}");
        let (_, e) = err(
            &mut d,
            "/IpamDriver.RequestAddress",
            json!({"PoolID":"dnet:blue","Address":"10.77.9.9","Options":{api::MAC_OPTION:"02:00:00:00:00:0a"}}),
        );
        assert!(e.contains("outside this host's range 10.77.3.0/24"), "{e}");
        let (_, e) = err(
            &mut d,
            "/IpamDriver.RequestAddress",
            json!({"PoolID":"dnet:blue","Address":addr.split('/').next().unwrap(),"Options":{api::MAC_OPTION:"02:00:00:00:00:0b"}}),
        );
        assert!(
            e.contains("already held by docker-mac:02:42:0a:4d:03:02"),
            "{e}"
        );
        let (_, e) = err(
            &mut d,
            "/IpamDriver.RequestAddress",
            json!({"PoolID":"dnet:blue","Address":"","Options":{api::MAC_OPTION:MAC1}}),
        );
        assert!(e.contains("already used by endpoint e1"), "{e}");
        let (_, e) = err(
            &mut d,
            "/IpamDriver.RequestPool",
            json!({"AddressSpace":"dnet-local","Pool":"10.99.0.0/16"}),
        );
        assert!(
            e.contains("no dnet network with subnet 10.99.0.0/16"),
            "{e}"
        );
        let (_, e) = err(&mut d, "/IpamDriver.RequestAddress", json!({"PoolID":"x"}));
        assert!(e.contains("unknown address pool"), "{e}");
        let (_, e) = err(
            &mut d,
            "/IpamDriver.ReleaseAddress",
            json!({"PoolID":"dnet:blue","Address":addr.split('/').next().unwrap()}),
        );
        assert!(e.contains("in use by endpoint e1"), "{e}");
        let (_, e) = err(
            &mut d,
            "/NetworkDriver.Join",
            json!({"NetworkID":"n1","EndpointID":"e7"}),
        );
        assert!(e.contains("unknown endpoint e7"), "{e}");
        // Nothing above changed the allocations, and the driver still serves.
        assert_eq!(b.allocations("blue").unwrap().len(), 1);
        assert_eq!(
            run_container(&mut d, "e2", "02:42:0a:4d:03:03"),
            "10.77.3.3/16"
        );
    }

    #[test]
    fn networks_not_made_for_dnet_are_refused() {
        let (mut d, _, _) = driver();
        let (_, e) = err(
            &mut d,
            "/NetworkDriver.CreateNetwork",
            json!({"NetworkID":"n2","IPv4Data":[{"AddressSpace":"LocalDefault","Pool":"10.77.0.0/16","Gateway":"10.77.0.1/16"}]}),
        );
        assert!(e.contains("--ipam-driver dnet"), "{e}");
        let (_, e) = err(
            &mut d,
            "/NetworkDriver.CreateNetwork",
            json!({"NetworkID":"n2","IPv4Data":[{"AddressSpace":"dnet-local","Pool":"10.77.0.0/16","Gateway":"10.77.3.1/16"}],
                   "Options":{"com.docker.network.generic":{"com.docker.network.driver.mtu":"9000"}}}),
        );
        assert!(e.contains("MTU \"9000\" differs"), "{e}");
        let (_, e) = err(
            &mut d,
            "/IpamDriver.RequestPool",
            json!({"AddressSpace":"dnet-local","Pool":"10.77.0.0/16","V6":true}),
        );
        assert!(e.contains("IPv4 only"), "{e}");
    }

    #[test]
    fn restore_takes_over_running_endpoints_and_frees_the_rest() {
        let (mut d, b, _) = driver();
        create_network(&mut d);
        let a1 = run_container(&mut d, "e1", MAC1);
        let _a2 = run_container(&mut d, "e2", "02:42:0a:4d:03:03");
        // The plugin restarts; meanwhile e2's container was removed.
        let links = FakeLinks::default();
        let mut d2 = Driver::new(b.clone(), Box::new(links));
        let engine = vec![EngineNetwork {
            id: "n1".into(),
            name: "blue".into(),
            subnets: vec!["10.77.0.0/16".into()],
            options: Default::default(),
            endpoints: vec![super::super::engine::EngineEndpoint {
                container: "c1".into(),
                endpoint_id: "e1".into(),
                mac: MAC1.into(),
                ipv4: a1.clone(),
            }],
        }];
        let rep = d2.restore(Some(&engine));
        assert_eq!((rep.networks, rep.endpoints), (1, 1), "{rep:?}");
        assert_eq!(rep.released.len(), 1, "{rep:?}");
        assert_eq!(rep.released[0].1.to_string(), "10.77.3.3");
        let held = b.allocations("blue").unwrap();
        assert_eq!(held.len(), 1);
        // e1 is known again: its removal frees its address.
        d2.links
            .plug(&PlugSpec {
                host_if: veth_names("e1").0,
                peer_if: veth_names("e1").1,
                mac: [2, 0, 0, 0, 0, 1],
                mtu: 1450,
                bridge: "br-blue".into(),
                alias: "dnet:docker:e1".into(),
            })
            .unwrap();
        remove_container(&mut d2, "e1", &a1);
        assert!(b.allocations("blue").unwrap().is_empty());
    }
}
