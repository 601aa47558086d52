//! `dnetctl attach` and `dnetctl detach`: command-line front end of [`dnetctl::attach`].

use anyhow::Context;
use clap::Args;
use dnetctl::arp_probe::format_mac;
use dnetctl::attach::{self, AttachOptions, DEFAULT_IFNAME};
use signal_hook::consts::{SIGINT, SIGTERM};
use std::net::Ipv4Addr;
use std::path::PathBuf;

const DEFAULT_SOCKET: &str = "/run/dnet/dnet0.sock";

/// Plug a container into the overlay: veth + address + ARP probe (needs root).
///
/// Creates a veth pair with one end inside the container's network namespace (IFNAME, the
/// given address, a stable MAC, the switch's MTU, up), and plugs the host end into the Linux
/// bridge the running dnet-switch's TAP is a port of (the switch is started with --bridge;
/// attach uses that bridge rather than a switch port of its own). Before assigning the address
/// it probes for it across the overlay (RFC 5227 ARP probe) and refuses if anyone answers,
/// naming the MAC that did; afterwards it announces it with gratuitous ARP.
///
/// CONTAINER is a netns name (/run/netns/NAME), a netns path, pid:N (/proc/N/ns/net), or a
/// Docker container name or id, looked up through the engine on /var/run/docker.sock
/// ($DOCKER_HOST=unix://PATH overrides). Run dnetctl in the switch's network namespace.
///
/// Without IP/PREFIX, the switch (started with --network) allocates the next free address of
/// this host's range in its etcd network and records it there, so no host and no restart hands
/// it out again; attach prints it. With IP/PREFIX and a --network switch, the address is
/// checked against this host's range and recorded the same way. The ARP probe still runs.
///
/// If any step fails, everything made so far is removed (an allocated address freed), and the
/// error names the step.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  dnetctl attach web1                       (dnet-switch --network: next free address)\n  \
                  dnetctl attach web1 10.77.1.5/24 --gateway 10.77.1.1\n  \
                  dnetctl attach pid:4242 10.77.1.6/24 --ifname eth2 --mac 02:00:0a:4d:01:06"
)]
pub struct AttachArgs {
    /// netns name, netns path, pid:N, or Docker container name/id.
    #[arg(value_name = "CONTAINER")]
    container: String,
    /// Address for the container, e.g. 10.77.1.5/24 [default: the next free address of this
    /// host's range, from a switch started with --network].
    #[arg(value_name = "IP/PREFIX", value_parser = attach::parse_cidr)]
    addr: Option<(Ipv4Addr, u8)>,
    /// Control socket of the running dnet-switch (its --control-socket).
    #[arg(short, long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// The network to join, of a switch serving several (dnet-switch --network blue
    /// --network red) [default: its first].
    #[arg(short, long, value_name = "NAME")]
    network: Option<String>,
    /// Interface name inside the container.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_IFNAME)]
    ifname: String,
    /// MAC of the container's interface [default: a stable locally administered MAC derived
    /// from the container and interface name].
    #[arg(long, value_name = "MAC", value_parser = attach::parse_mac)]
    mac: Option<[u8; 6]>,
    /// MTU of both veth ends [default: the switch's TAP MTU, so encapsulated frames fit].
    #[arg(long, value_name = "N")]
    mtu: Option<u32>,
    /// Add a default route via this gateway in the container.
    #[arg(long, value_name = "IP")]
    gateway: Option<Ipv4Addr>,
    /// Name of the host end [default: dn + 8 hex digits derived from container and interface].
    #[arg(long, value_name = "NAME")]
    host_ifname: Option<String>,
    /// Skip the RFC 5227 duplicate address probe.
    #[arg(long)]
    no_probe: bool,
    /// Print the result as JSON.
    #[arg(short, long)]
    json: bool,
}

/// Remove an interface that `dnetctl attach` made (needs root).
///
/// Deletes IFNAME in CONTAINER (and with it the host end, its address and routes), and frees
/// the address the switch allocated for it (switch started with --network). Refuses an
/// interface that attach did not make (it marks its interfaces with the alias "dnet:attach").
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  dnetctl detach web1\n  dnetctl detach pid:4242 --ifname eth2")]
pub struct DetachArgs {
    /// netns name, netns path, pid:N, or Docker container name/id.
    #[arg(value_name = "CONTAINER")]
    container: String,
    /// Interface name inside the container.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_IFNAME)]
    ifname: String,
    /// Control socket of the running dnet-switch (its --control-socket), which frees the
    /// address it allocated.
    #[arg(short, long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// The network the interface was attached to, of a switch serving several.
    #[arg(short, long, value_name = "NAME")]
    network: Option<String>,
    /// Print the result as JSON.
    #[arg(short, long)]
    json: bool,
}

pub fn run_attach(a: AttachArgs) -> anyhow::Result<()> {
    // Ctrl-C or SIGTERM mid-attach stops at the next step and rolls back, instead of killing
    // the process with a half-made interface.
    // A second signal terminates at once (exit status 130).
    let flag = attach::interrupt_flag();
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, flag.clone())
            .and_then(|_| signal_hook::flag::register(sig, flag.clone()))
            .with_context(|| format!("installing a handler for signal {sig}"))?;
    }
    let o = AttachOptions {
        container: a.container,
        address: a.addr,
        socket: a.socket,
        network: a.network,
        ifname: a.ifname,
        mac: a.mac,
        mtu: a.mtu,
        gateway: a.gateway,
        host_ifname: a.host_ifname,
        probe: !a.no_probe,
    };
    let r = attach::attach(&o)?;
    if a.json {
        let v = serde_json::json!({
            "container": r.container,
            "ifname": r.ifname,
            "address": format!("{}/{}", r.address, r.prefix),
            "network": r.allocated.as_ref().map(|x| x.network.clone()),
            "range": r.allocated.as_ref().map(|x| x.range.clone()),
            "mac": format_mac(&r.mac),
            "mtu": r.mtu,
            "host_ifname": r.host_ifname,
            "bridge": r.bridge,
            "gateway": o.gateway.map(|g| g.to_string()),
        });
        println!("{v}");
        return Ok(());
    }
    println!(
        "attached {} {} {}/{}{} mac {} mtu {} (host end {} in bridge {}){}",
        r.container,
        r.ifname,
        r.address,
        r.prefix,
        r.allocated
            .as_ref()
            .map(|x| format!(" (network {}, range {})", x.network, x.range))
            .unwrap_or_default(),
        format_mac(&r.mac),
        r.mtu,
        r.host_ifname,
        r.bridge,
        o.gateway
            .map(|g| format!(", default via {g}"))
            .unwrap_or_default()
    );
    Ok(())
}

pub fn run_detach(a: DetachArgs) -> anyhow::Result<()> {
    let d = attach::detach(&a.container, &a.ifname, &a.socket, a.network.as_deref())?;
    if a.json {
        let v = serde_json::json!({
            "container": a.container,
            "ifname": d.ifname,
            "host_ifname": d.host_ifname,
            "released": d.released.map(|r| r.to_string()),
        });
        println!("{v}");
        return Ok(());
    }
    let freed = d
        .released
        .map(|r| format!(", {r} freed"))
        .unwrap_or_default();
    match (&d.ifname, &d.host_ifname) {
        (Some(i), Some(h)) => println!("detached {} {i} (host end {h}){freed}", a.container),
        (Some(i), None) => println!("detached {} {i}{freed}", a.container),
        (None, _) => println!("{} {} was gone already{freed}", a.container, a.ifname),
    }
    Ok(())
}
