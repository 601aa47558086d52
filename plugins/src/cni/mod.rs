//! `dnet-cni`: a CNI plugin (spec 1.0.0: ADD, DEL, CHECK, VERSION; from 1.1.0: STATUS, GC)
//! that plugs a container's network namespace into a dnet network's bridge with a veth pair,
//! with an address from the switch's allocator (the same one `dnetctl attach` and the Docker
//! plugin use), asked for over the switch's control socket ([`crate::control`]).
//!
//! An attachment is the pair (`CNI_CONTAINERID`, `CNI_IFNAME`); its allocation's owner is
//! `cni:CONTAINERID/IFNAME`, and its host-side veth end is named from a hash of that owner and
//! carries the alias `dnet:cni:NETWORK:CONTAINERID/IFNAME`, so DEL and GC find it again without
//! any state of their own.
//!
//! [`run`] is the whole plugin behind the binary's `main`: the invocation and stdin in, the
//! JSON to print (or nothing) out, or the CNI error.

pub mod types;

use crate::backend::{container_addresses, Backend, BackendError, Network};
use crate::veth::{self, derived_ifname, derived_mac, format_mac, Plug, VethError};
use dnet_netlink::Netlink;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::fs::File;
use std::net::Ipv4Addr;
pub use types::{code, CniError, Config, Invocation};

/// Interface-name prefix of the host end of a CNI attachment's veth.
const HOST_IF_PREFIX: &str = "dnv";
/// Prefix of an attachment's allocation owner.
pub const OWNER_PREFIX: &str = "cni:";

/// The allocation owner of attachment (`container_id`, `ifname`).
pub fn owner(container_id: &str, ifname: &str) -> String {
    format!("{OWNER_PREFIX}{container_id}/{ifname}")
}

/// The host end of an attachment's veth.
pub fn host_ifname(owner: &str) -> String {
    derived_ifname(HOST_IF_PREFIX, owner)
}

fn alias(network: &str, owner: &str) -> String {
    format!(
        "{}cni:{network}:{}",
        veth::ALIAS_PREFIX,
        &owner[OWNER_PREFIX.len()..]
    )
}

/// Maps a backend refusal onto the spec's codes.
fn backend_error(e: BackendError) -> CniError {
    let c = match &e {
        BackendError::Unavailable { .. } => code::TRY_AGAIN,
        BackendError::UnknownNetwork { .. } => code::INVALID_CONFIG,
        BackendError::OutsideRange { .. }
        | BackendError::Reserved { .. }
        | BackendError::InUse { .. }
        | BackendError::OwnerHolds { .. }
        | BackendError::RangeFull { .. } => code::ADDRESS_REFUSED,
        BackendError::Failed(_) => code::TRY_AGAIN,
    };
    let msg = match c {
        code::TRY_AGAIN => "the dnet switch cannot answer",
        code::INVALID_CONFIG => "unknown dnet network",
        _ => "address refused",
    };
    CniError::new(c, msg, e.to_string())
}

fn kernel(e: impl std::fmt::Display) -> CniError {
    CniError::new(
        code::KERNEL,
        "kernel refused a network change",
        e.to_string(),
    )
}

fn veth_error(e: VethError) -> CniError {
    match e {
        VethError::NoBridge { .. } => {
            CniError::new(code::TRY_AGAIN, "bridge missing", e.to_string())
        }
        e => kernel(e),
    }
}

fn open_netns(path: &str) -> Result<File, CniError> {
    File::open(path).map_err(|e| {
        CniError::new(
            code::UNKNOWN_CONTAINER,
            "container network namespace not found",
            format!("CNI_NETNS {path}: {e}"),
        )
    })
}

/// Runs one invocation: `stdin` is the configuration, `connect` makes the backend for it
/// (normally a [`crate::control::ControlClient`] on the configured socket). Returns what to
/// print on success (`None`: nothing), or the CNI error with the version to report it in.
pub fn run(
    inv: &Invocation,
    stdin: &[u8],
    connect: &dyn Fn(&Config) -> Box<dyn Backend>,
) -> Result<Option<Value>, (String, CniError)> {
    // The version to answer in, even when the rest of the configuration is unreadable.
    let version = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .filter(|v| types::SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| types::LATEST.to_string());
    let fail = |e: CniError| (version.clone(), e);
    let command = inv.command.as_deref().ok_or_else(|| {
        fail(CniError::new(
            code::INVALID_ENVIRONMENT,
            "invalid CNI_COMMAND",
            "CNI_COMMAND is not set: ADD, DEL, CHECK, STATUS, GC or VERSION",
        ))
    })?;
    if command == "VERSION" {
        return Ok(Some(json!({
            "cniVersion": version,
            "supportedVersions": types::SUPPORTED_VERSIONS,
        })));
    }
    let config = Config::parse(stdin).map_err(fail)?;
    let backend = connect(&config);
    let r = match command {
        "ADD" => add(inv, &config, backend.as_ref()).map(Some),
        "DEL" => del(inv, &config, backend.as_ref()).map(|_| None),
        "CHECK" => check(inv, &config, backend.as_ref()).map(|_| None),
        "STATUS" => status(&config, backend.as_ref()).map(|_| None),
        "GC" => gc(&config, backend.as_ref()).map(|_| None),
        other => Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            "invalid CNI_COMMAND",
            format!("CNI_COMMAND {other:?} is not ADD, DEL, CHECK, STATUS, GC or VERSION"),
        )),
    };
    r.map_err(fail)
}

fn add(inv: &Invocation, c: &Config, b: &dyn Backend) -> Result<Value, CniError> {
    let cid = inv.container_id()?;
    let ifname = inv.ifname()?;
    let netns_path = inv.netns()?;
    let requested = inv.requested_ip()?;
    let ns = open_netns(netns_path)?;
    let net = b.network(c.dnet_network()).map_err(backend_error)?;
    let mut cnl = Netlink::open_in(&ns).map_err(kernel)?;
    if cnl.link_by_name(ifname).map_err(kernel)?.is_some() {
        return Err(CniError::new(
            code::INTERFACE_EXISTS,
            "interface exists",
            format!("{netns_path} already has an interface {ifname}: pick another CNI_IFNAME, or DEL the old attachment"),
        ));
    }
    let own = owner(cid, ifname);
    let address = b
        .allocate(&net.name, &own, requested)
        .map_err(backend_error)?;
    match plug(c, &net, &own, &ns, netns_path, ifname, address, &mut cnl) {
        Ok(added) => Ok(types::add_result(
            &c.cni_version,
            c.prev_result.as_ref(),
            &added,
        )),
        Err(e) => {
            if let Err(re) = b.release(&net.name, &own) {
                log::warn!("dnet-cni: releasing {address} after a failed ADD: {re}");
            }
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn plug(
    c: &Config,
    net: &Network,
    own: &str,
    ns: &File,
    netns_path: &str,
    ifname: &str,
    address: Ipv4Addr,
    cnl: &mut Netlink,
) -> Result<types::Added, CniError> {
    let mut hnl = Netlink::open().map_err(kernel)?;
    let host_if = host_ifname(own);
    let mac = derived_mac(own);
    veth::plug(
        &mut hnl,
        &Plug {
            host_if: &host_if,
            peer_if: ifname,
            peer_ns: ns,
            peer_mac: mac,
            mtu: net.mtu,
            bridge: &net.bridge,
            alias: &alias(&net.name, own),
        },
    )
    .map_err(veth_error)?;
    let configured = (|| {
        let l = cnl
            .link_by_name(ifname)
            .map_err(kernel)?
            .ok_or_else(|| kernel(format!("{ifname} vanished from {netns_path}")))?;
        cnl.add_addr(l.index, address, net.subnet.prefix_len())
            .map_err(|e| kernel(format!("adding {address} to {ifname}: {e}")))?;
        cnl.set_up(l.index)
            .map_err(|e| kernel(format!("setting {ifname} up: {e}")))?;
        if c.default_route {
            cnl.add_default_route(l.index, net.gateway)
                .map_err(|e| kernel(format!("default route via {}: {e}", net.gateway)))?;
        }
        let host_mac = hnl
            .link_by_name(&host_if)
            .map_err(kernel)?
            .and_then(|l| l.mac)
            .map(|m| format_mac(&m))
            .unwrap_or_default();
        Ok(types::Added {
            host_if: host_if.clone(),
            host_mac,
            ifname: ifname.to_string(),
            mac: format_mac(&mac),
            mtu: net.mtu,
            netns: netns_path.to_string(),
            address: net.with_prefix(address),
            gateway: net.gateway.to_string(),
            default_route: c.default_route,
        })
    })();
    if configured.is_err() {
        let _ = veth::unplug(&mut hnl, &host_if);
    }
    configured
}

fn del(inv: &Invocation, c: &Config, b: &dyn Backend) -> Result<(), CniError> {
    let cid = inv.container_id()?;
    let ifname = inv.ifname()?;
    let own = owner(cid, ifname);
    match b.release(c.dnet_network(), &own) {
        // A network the switch no longer serves holds nothing to release.
        Ok(_) | Err(BackendError::UnknownNetwork { .. }) => {}
        Err(e) => return Err(backend_error(e)),
    }
    let mut hnl = Netlink::open().map_err(kernel)?;
    // Deleting the host end takes the container end along; both may be gone already (the
    // namespace was deleted), which is fine: DEL is idempotent.
    veth::unplug(&mut hnl, &host_ifname(&own)).map_err(veth_error)?;
    Ok(())
}

fn check(inv: &Invocation, c: &Config, b: &dyn Backend) -> Result<(), CniError> {
    let cid = inv.container_id()?;
    let ifname = inv.ifname()?;
    let netns_path = inv.netns()?;
    let prev = c.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            "CHECK without prevResult",
            "the runtime must pass ADD's result as prevResult",
        )
    })?;
    let ns = open_netns(netns_path)?;
    let net = b.network(c.dnet_network()).map_err(backend_error)?;
    let differs = |what: String| CniError::new(code::CHECK_FAILED, "attachment differs", what);
    let want = types::address_in_result(prev, ifname, netns_path).ok_or_else(|| {
        differs(format!(
            "prevResult has no address for {ifname} in {netns_path}"
        ))
    })?;
    let want_net: ipnet::Ipv4Net = want
        .parse()
        .map_err(|_| differs(format!("prevResult address {want:?} is not IPv4/prefix")))?;
    let own = owner(cid, ifname);

    let mut cnl = Netlink::open_in(&ns).map_err(kernel)?;
    let l = cnl
        .link_by_name(ifname)
        .map_err(kernel)?
        .ok_or_else(|| differs(format!("{ifname} is missing from {netns_path}")))?;
    if l.mtu != Some(net.mtu) {
        return Err(differs(format!(
            "{ifname} has MTU {:?}, network {} has {}",
            l.mtu, net.name, net.mtu
        )));
    }
    let addrs = cnl.ipv4_addrs(l.index).map_err(kernel)?;
    if !addrs.contains(&(want_net.addr(), want_net.prefix_len())) {
        return Err(differs(format!("{ifname} lacks {want} (it has {addrs:?})")));
    }
    let mut hnl = Netlink::open().map_err(kernel)?;
    let host_if = host_ifname(&own);
    let h = hnl
        .link_by_name(&host_if)
        .map_err(kernel)?
        .ok_or_else(|| differs(format!("host end {host_if} is missing")))?;
    let bridge = hnl
        .link_by_name(&net.bridge)
        .map_err(kernel)?
        .ok_or_else(|| differs(format!("bridge {} is missing", net.bridge)))?;
    if h.master != Some(bridge.index) {
        return Err(differs(format!(
            "{host_if} is not a port of {}",
            net.bridge
        )));
    }
    let held = b.allocations(&net.name).map_err(backend_error)?;
    if !held
        .iter()
        .any(|a| a.owner == own && a.address == want_net.addr())
    {
        return Err(differs(format!(
            "the switch does not hold {} for {own}",
            want_net.addr()
        )));
    }
    Ok(())
}

fn status(c: &Config, b: &dyn Backend) -> Result<(), CniError> {
    let na = |e: String| CniError::new(code::NOT_AVAILABLE, "dnet-cni cannot add containers", e);
    let net = b.network(c.dnet_network()).map_err(|e| na(e.to_string()))?;
    let held = b.allocations(&net.name).map_err(|e| na(e.to_string()))?;
    if container_addresses(net.range).count() <= held.len() {
        return Err(na(BackendError::RangeFull {
            network: net.name,
            range: net.range,
        }
        .to_string()));
    }
    Ok(())
}

fn gc(c: &Config, b: &dyn Backend) -> Result<(), CniError> {
    let valid: BTreeSet<String> = c
        .attachments
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|a| owner(&a.container_id, &a.ifname))
        .collect();
    let network = c.dnet_network();
    let mut errors = Vec::new();
    match b.allocations(network) {
        Ok(held) => {
            for a in held {
                if a.owner.starts_with(OWNER_PREFIX) && !valid.contains(&a.owner) {
                    if let Err(e) = b.release(network, &a.owner) {
                        errors.push(format!("releasing {} ({}): {e}", a.address, a.owner));
                    }
                }
            }
        }
        Err(BackendError::UnknownNetwork { .. }) => {}
        Err(e) => return Err(backend_error(e)),
    }
    // Host ends of attachments that no longer exist (their namespace may be gone already,
    // which took the veth along; any left are deleted).
    let prefix = format!("{}cni:{network}:", veth::ALIAS_PREFIX);
    let mut hnl = Netlink::open().map_err(kernel)?;
    for l in hnl.links().map_err(kernel)? {
        let Some(rest) = l.alias.as_deref().and_then(|a| a.strip_prefix(&prefix)) else {
            continue;
        };
        if !valid.contains(&format!("{OWNER_PREFIX}{rest}")) {
            if let Err(e) = veth::unplug(&mut hnl, &l.name) {
                errors.push(e.to_string());
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            code::KERNEL,
            "GC left some resources",
            errors.join("; "),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryBackend;

    fn backend() -> Box<dyn Backend> {
        Box::new(
            MemoryBackend::new(vec![Network {
                name: "blue".into(),
                subnet: "10.77.0.0/16".parse().unwrap(),
                range: "10.77.3.0/24".parse().unwrap(),
                gateway: "10.77.3.1".parse().unwrap(),
                bridge: "br-blue".into(),
                mtu: 1450,
            }])
            .unwrap(),
        )
    }

    fn inv(cmd: &str) -> Invocation {
        Invocation {
            command: Some(cmd.into()),
            container_id: Some("c1".into()),
            netns: Some("/nonexistent/netns".into()),
            ifname: Some("eth0".into()),
            args: None,
        }
    }

    const CONF: &[u8] = br#"{"cniVersion":"1.0.0","name":"blue","type":"dnet-cni"}"#;

    #[test]
    fn version_answers_without_a_full_configuration() {
        let v = run(&inv("VERSION"), br#"{"cniVersion":"1.0.0"}"#, &|_| {
            backend()
        })
        .unwrap()
        .unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["supportedVersions"], json!(["0.4.0", "1.0.0", "1.1.0"]));
    }

    #[test]
    fn errors_carry_spec_codes() {
        let e = |i: &Invocation, s: &[u8]| run(i, s, &|_| backend()).unwrap_err().1.code;
        assert_eq!(e(&Invocation::default(), CONF), code::INVALID_ENVIRONMENT);
        assert_eq!(e(&inv("FROB"), CONF), code::INVALID_ENVIRONMENT);
        assert_eq!(e(&inv("ADD"), b"not json"), code::DECODE);
        assert_eq!(e(&inv("ADD"), CONF), code::UNKNOWN_CONTAINER);
        assert_eq!(
            e(&inv("CHECK"), CONF),
            code::INVALID_CONFIG,
            "no prevResult"
        );
        let red = br#"{"cniVersion":"1.1.0","name":"red","type":"dnet-cni"}"#;
        assert_eq!(e(&inv("STATUS"), red), code::NOT_AVAILABLE);
        let (v, err) = run(&inv("ADD"), red, &|_| backend()).unwrap_err();
        assert_eq!(v, "1.1.0");
        assert_eq!(
            err.code,
            code::UNKNOWN_CONTAINER,
            "the namespace is checked first"
        );
    }

    #[test]
    fn status_reports_ready_when_addresses_remain() {
        assert_eq!(run(&inv("STATUS"), CONF, &|_| backend()).unwrap(), None);
    }

    #[test]
    fn backend_refusals_map_to_codes() {
        let c = backend_error(BackendError::Unavailable {
            what: "x".into(),
            reason: "y".into(),
        });
        assert_eq!(c.code, code::TRY_AGAIN);
        let c = backend_error(BackendError::RangeFull {
            network: "blue".into(),
            range: "10.77.3.0/24".parse().unwrap(),
        });
        assert_eq!(c.code, code::ADDRESS_REFUSED);
    }

    #[test]
    fn names_fit() {
        let o = owner("0123456789abcdef0123456789abcdef", "eth0");
        assert_eq!(o, "cni:0123456789abcdef0123456789abcdef/eth0");
        assert!(host_ifname(&o).len() <= veth::IFNAME_MAX);
        assert_eq!(
            alias("blue", &o),
            "dnet:cni:blue:0123456789abcdef0123456789abcdef/eth0"
        );
    }
}
