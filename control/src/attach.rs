//! `dnetctl attach` / `dnetctl detach`: plug a container (any network namespace) into the
//! overlay, pipework-style, and unplug it again.
//!
//! Attach creates a veth pair whose container end appears directly inside the container's
//! namespace (named `eth1` by default, with a stable MAC and the switch's MTU), plugs the host
//! end into the bridge the running switch's TAP is a port of, probes the address across the
//! overlay (RFC 5227), assigns it, optionally adds a default route, and announces it with
//! gratuitous ARP. Everything goes through netlink ([`crate::netlink`]) and raw ARP frames
//! ([`crate::arp_probe`]); nothing parses `ip` output.
//!
//! Every step that changes the system is recorded in a [`Rollback`] as it succeeds; if a later
//! step fails (or the user interrupts), the recorded steps are undone in reverse, so a failed
//! attach leaves nothing behind, and the error names the step that failed.
//!
//! Both veth ends carry an interface alias starting with [`ALIAS`]; detach refuses to delete an
//! interface without it, so it can only remove what attach made.

use crate::arp_probe::{format_mac, ArpSocket};
use crate::docker;
use crate::netlink::{in_netns_file, Link, Netlink, NlError};
use anyhow::{anyhow, bail};
use dnet_proto::{Allocated, Request, Response, Show};
use std::fmt;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Prefix of the interface alias that marks interfaces made by `dnetctl attach`.
pub const ALIAS: &str = "dnet:attach";
/// Default container-side interface name.
pub const DEFAULT_IFNAME: &str = "eth1";
/// How long the switch gets to answer its control socket.
const SWITCH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the switch gets to allocate or free an address (it asks etcd, which may be slow
/// to answer or fail over to another member).
const ALLOCATE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the new links get to become operational: long enough for a bridge running STP to
/// take a new port through listening and learning (2 x the default 15 s forward delay).
const LINK_UP_TIMEOUT: Duration = Duration::from_secs(35);
/// After this long without the links ready, say what is being waited for.
const LINK_UP_NOTICE: Duration = Duration::from_secs(2);
/// Longest interface name Linux accepts (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

/// What `dnetctl attach` was asked to do.
#[derive(Debug, Clone)]
pub struct AttachOptions {
    /// Netns name, netns path, `pid:N`, or a Docker container name or id.
    pub container: String,
    /// Address and prefix length to give the container; `None`: the switch allocates the next
    /// free address of its host's range in its etcd network (`--network`). With a network, an
    /// explicit address is checked against the range and recorded too.
    pub address: Option<(Ipv4Addr, u8)>,
    /// Control socket of the running switch.
    pub socket: PathBuf,
    /// The switch's network to join, of a switch serving several; `None`: its first.
    pub network: Option<String>,
    /// Container-side interface name.
    pub ifname: String,
    /// Container-side MAC; `None` derives a stable one ([`derived_mac`]).
    pub mac: Option<[u8; 6]>,
    /// MTU; `None` takes the switch's TAP MTU.
    pub mtu: Option<u32>,
    /// Default gateway to add in the container, if any.
    pub gateway: Option<Ipv4Addr>,
    /// Host-side interface name; `None` derives one ([`derived_host_ifname`]).
    pub host_ifname: Option<String>,
    /// Probe the address for conflicts before assigning it.
    pub probe: bool,
}

/// What an attach made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// How the container was named in messages.
    pub container: String,
    /// Container-side interface.
    pub ifname: String,
    /// Host-side interface.
    pub host_ifname: String,
    /// Bridge the host side was plugged into.
    pub bridge: String,
    /// Container-side MAC.
    pub mac: [u8; 6],
    /// MTU of both ends.
    pub mtu: u32,
    /// The address given.
    pub address: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// The allocation recorded in the switch's etcd network, if it is in one.
    pub allocated: Option<Allocated>,
}

impl fmt::Display for Attached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} mac {} mtu {}, host end {} in bridge {}",
            self.container,
            self.ifname,
            format_mac(&self.mac),
            self.mtu,
            self.host_ifname,
            self.bridge
        )
    }
}

/// A container's network namespace, opened.
#[derive(Debug)]
pub struct Container {
    /// What the user typed. (Also the name recorded with an allocation.)
    pub spec: String,
    /// The namespace in messages, e.g. `netns web1`, `pid 4242`, `container web1`.
    pub desc: String,
    /// Stable identity used to derive the MAC and host interface name: `netns:NAME`,
    /// `path:PATH`, `pid:N` or `docker:ID`.
    pub key: String,
    /// Path the namespace was opened from.
    pub path: PathBuf,
    /// The open namespace (kept open so it cannot vanish mid-attach).
    pub ns: File,
}

/// Resolves CONTAINER: `pid:N` (`/proc/N/ns/net`), a path (anything with a `/`), a netns name
/// (`/run/netns/NAME`), else a Docker container name or id through the engine's socket.
pub fn resolve_container(spec: &str) -> anyhow::Result<Container> {
    resolve_container_with(spec, Path::new("/run/netns"), &docker::engine_socket())
}

fn resolve_container_with(
    spec: &str,
    netns_dir: &Path,
    docker_sock: &Path,
) -> anyhow::Result<Container> {
    if spec.is_empty() {
        bail!("empty CONTAINER: pass a netns name, a path or pid:N");
    }
    let (desc, key, path) = if let Some(pid) = spec.strip_prefix("pid:") {
        let pid: u32 = pid
            .parse()
            .map_err(|_| anyhow!("{spec}: expected pid:N with N a process id"))?;
        (
            format!("pid {pid}"),
            format!("pid:{pid}"),
            PathBuf::from(format!("/proc/{pid}/ns/net")),
        )
    } else if spec.contains('/') {
        let p = PathBuf::from(spec);
        let canon = p.canonicalize().unwrap_or_else(|_| p.clone());
        (
            format!("netns {spec}"),
            format!("path:{}", canon.display()),
            p,
        )
    } else if netns_dir.join(spec).exists() {
        (
            format!("netns {spec}"),
            format!("netns:{spec}"),
            netns_dir.join(spec),
        )
    } else {
        match docker::inspect(docker_sock, spec) {
            Ok(c) => (
                format!("container {}", c.name),
                format!("docker:{}", c.id),
                PathBuf::from(format!("/proc/{}/ns/net", c.pid)),
            ),
            Err(docker::DockerError::NoEngine { path, .. }) => bail!(
                "no network namespace or process named {spec}, and no Docker engine answers \
                 on {}: pass a netns name, a path or pid:N",
                path.display()
            ),
            Err(e) => return Err(e.into()),
        }
    };
    let ns =
        File::open(&path).map_err(|e| anyhow!("{desc}: cannot open {}: {e}", path.display()))?;
    // Refuse what is not a network namespace, and this host's own namespace (a "container"
    // that is the host would get a veth pair with both ends here).
    in_netns_file(&ns, || Ok(())).map_err(|e| {
        anyhow!(
            "{desc}: {} is not a network namespace ({e})",
            path.display()
        )
    })?;
    let own = std::fs::metadata("/proc/thread-self/ns/net")
        .or_else(|_| std::fs::metadata("/proc/self/ns/net"));
    if let (Ok(own), Ok(target)) = (own, ns.metadata()) {
        if own.dev() == target.dev() && own.ino() == target.ino() {
            bail!("{desc} is dnetctl's own network namespace, not a container's");
        }
    }
    Ok(Container {
        spec: spec.to_string(),
        desc,
        key,
        path,
        ns,
    })
}

/// 64-bit FNV-1a: a stable hash (std's `DefaultHasher` may change between Rust releases, and
/// these values must not).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            // A separator byte no interface name or key contains.
            h ^= 0xff;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        for b in p.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

/// The default MAC of interface `ifname` in the container with identity `key`: locally
/// administered (`x2`, `x6`, `xa`, `xe` first octet), unicast, and the same on every attach.
pub fn derived_mac(key: &str, ifname: &str) -> [u8; 6] {
    let h = fnv1a(&["mac", key, ifname]).to_be_bytes();
    [(h[0] & 0xfc) | 0x02, h[1], h[2], h[3], h[4], h[5]]
}

/// The default host-side interface name: `dn` + 8 hex digits of a hash of the container's
/// identity and interface name (10 bytes; the same container and interface always map to the
/// same name, so a second attach of the same pair is caught before anything is made).
pub fn derived_host_ifname(key: &str, ifname: &str) -> String {
    format!("dn{:08x}", fnv1a(&["host", key, ifname]) as u32)
}

/// Checks an interface name the way the kernel will (dev_valid_name).
pub fn check_ifname(what: &str, name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.len() > IFNAME_MAX {
        bail!("{what} {name:?}: interface names are 1 to {IFNAME_MAX} bytes");
    }
    if name == "."
        || name == ".."
        || name.contains(['/', ':'])
        || name.contains(char::is_whitespace)
    {
        bail!("{what} {name:?}: not a valid interface name");
    }
    Ok(())
}

/// Parses `IP/PREFIX` (an IPv4 address with a prefix length 0..=32).
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (ip, prefix) = s
        .split_once('/')
        .ok_or_else(|| format!("{s}: expected IP/PREFIX, e.g. 10.77.1.5/24"))?;
    let ip: Ipv4Addr = ip
        .parse()
        .map_err(|_| format!("{s}: {ip} is not an IPv4 address"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or_else(|| format!("{s}: prefix length must be 0 to 32"))?;
    if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback() {
        return Err(format!("{s}: not a usable host address"));
    }
    if prefix < 31 {
        let host_mask = u32::MAX >> prefix;
        let host = u32::from(ip) & host_mask;
        if host == 0 || host == host_mask {
            return Err(format!(
                "{s}: that is the subnet's network or broadcast address"
            ));
        }
    }
    Ok((ip, prefix))
}

/// Parses `aa:bb:cc:dd:ee:ff`, refusing multicast and all-zero addresses.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(format!("{s}: expected a MAC like 02:00:0a:4d:01:05"));
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(&parts) {
        *m = u8::from_str_radix(p, 16)
            .ok()
            .filter(|_| (1..=2).contains(&p.len()))
            .ok_or_else(|| format!("{s}: {p} is not a hex byte"))?;
    }
    if mac[0] & 1 != 0 {
        return Err(format!(
            "{s}: multicast MAC (lowest bit of the first byte set)"
        ));
    }
    if mac == [0; 6] {
        return Err(format!("{s}: all-zero MAC"));
    }
    Ok(mac)
}

/// One undoable change.
#[derive(Debug)]
enum Undo {
    /// The veth pair, by its host end's index (deleting one end deletes both).
    Veth { host_index: u32, name: String },
    /// An address in the container.
    Addr {
        index: u32,
        ip: Ipv4Addr,
        prefix: u8,
    },
    /// A default route in the container.
    Route { index: u32, gateway: Ipv4Addr },
    /// An address the switch allocated (and recorded in etcd) for this attach.
    Allocation {
        socket: PathBuf,
        network: Option<String>,
        holder: String,
    },
}

/// The steps done so far, undone in reverse unless [`Rollback::commit`]ted (also on drop, so a
/// panic does not leave a half-made attachment either).
struct Rollback {
    host: Netlink,
    cont: Netlink,
    done: Vec<Undo>,
}

impl Rollback {
    fn commit(mut self) {
        self.done.clear();
    }

    /// Undoes everything recorded; returns what could not be undone.
    fn undo_all(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        // An object already gone (removed with its link) is not a problem.
        let gone = |e: &NlError| {
            matches!(
                e.errno(),
                Some(libc::ENODEV | libc::ESRCH | libc::EADDRNOTAVAIL | libc::ENOENT)
            )
        };
        while let Some(u) = self.done.pop() {
            let (what, r) = match &u {
                Undo::Route { index, gateway } => (
                    format!("removing default route via {gateway}"),
                    self.cont.del_default_route(*index, *gateway),
                ),
                Undo::Addr { index, ip, prefix } => (
                    format!("removing {ip}/{prefix}"),
                    self.cont.del_addr(*index, *ip, *prefix),
                ),
                Undo::Veth { host_index, name } => (
                    format!("deleting veth {name}"),
                    self.host.del_link(*host_index),
                ),
                Undo::Allocation {
                    socket,
                    network,
                    holder,
                } => {
                    let what = format!("freeing the address allocated to {holder}");
                    match release(socket, network.as_deref(), holder) {
                        Ok(_) => log::info!("rolled back: {what}"),
                        Err(e) => problems.push(format!(
                            "{what}: {:#}; free it with `dnetctl detach` once the switch answers",
                            anyhow::Error::from(e)
                        )),
                    }
                    continue;
                }
            };
            match r {
                Ok(()) => log::info!("rolled back: {what}"),
                Err(e) if gone(&e) => {}
                Err(e) => problems.push(format!("{what}: {e}")),
            }
        }
        problems
    }
}

impl Drop for Rollback {
    fn drop(&mut self) {
        for p in self.undo_all() {
            eprintln!("dnetctl: rollback: {p}");
        }
    }
}

/// Set by SIGINT/SIGTERM handlers while an attach runs; checked between steps.
static INTERRUPTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// The flag that makes a running attach stop before its next step and roll back; register it
/// for SIGINT/SIGTERM with `signal_hook::flag::register`.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    INTERRUPTED.get_or_init(Default::default).clone()
}

/// Runs one step: its error becomes "STEP failed: ERROR", and an interrupt before it stops the
/// attach.
fn step<T, E: Into<anyhow::Error>>(
    what: &str,
    f: impl FnOnce() -> Result<T, E>,
) -> anyhow::Result<T> {
    if INTERRUPTED.get().is_some_and(|f| f.load(Ordering::Relaxed)) {
        bail!("interrupted before {what}");
    }
    log::info!("{what}");
    f().map_err(|e| e.into().context(format!("{what} failed")))
}

/// Polls until both links are ready to carry frames (see [`Link::ready`]).
fn wait_ready(nl: &mut Netlink, index: u32, name: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut noticed = false;
    loop {
        let l = nl
            .link_by_index(index)?
            .ok_or_else(|| anyhow!("{name} disappeared"))?;
        if l.ready() {
            return Ok(());
        }
        if start.elapsed() >= LINK_UP_TIMEOUT {
            bail!(
                "{name} not operational after {LINK_UP_TIMEOUT:?} (up {}, carrier {}, qdisc \
                 {:?}, bridge port forwarding {:?})",
                l.admin_up,
                l.carrier,
                l.qdisc,
                l.bridge_forwarding
            );
        }
        if !noticed && start.elapsed() >= LINK_UP_NOTICE {
            noticed = true;
            if l.bridge_forwarding == Some(false) {
                eprintln!(
                    "dnetctl: waiting for bridge port {name} to reach the forwarding state \
                     (the bridge runs STP; up to {LINK_UP_TIMEOUT:?})"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Who holds an address allocated for interface `ifname` of the container with stable
/// identity `key`: one address per interface, as CNI's `containerid/ifname`.
pub fn holder(key: &str, ifname: &str) -> String {
    format!("{key}/{ifname}")
}

/// `dnetctl attach`. On error nothing it made is left behind; the error names the step.
pub fn attach(o: &AttachOptions) -> anyhow::Result<Attached> {
    let c =
        resolve_container(&o.container).map_err(|e| anyhow!("attach {}: {e:#}", o.container))?;
    attach_resolved(&c, o).map_err(|e| anyhow!("attach {}: {e:#}", o.container))
}

fn attach_resolved(c: &Container, o: &AttachOptions) -> anyhow::Result<Attached> {
    let (ifname, cdesc) = (o.ifname.as_str(), c.desc.as_str());
    check_ifname("--ifname", ifname)?;
    let host_ifname = match &o.host_ifname {
        Some(n) => n.clone(),
        None => derived_host_ifname(&c.key, ifname),
    };
    check_ifname("--host-ifname", &host_ifname)?;
    let sock = o.socket.display();
    let stats = step(
        &format!("asking the switch on {sock} for its TAP, MTU and network"),
        || show(&o.socket, o.network.as_deref()),
    )
    .map_err(|e| {
        if format!("{e:#}").contains("cannot connect to control socket") {
            e // the client's message already says what to check
        } else {
            anyhow!("{e:#} (is dnet-switch running? pass its --control-socket as --socket)")
        }
    })?;
    let mtu = o.mtu.unwrap_or(stats.mtu);
    if !(68..=65535).contains(&mtu) {
        bail!("--mtu {mtu} is out of range (68 to 65535)");
    }
    let mac = o.mac.unwrap_or_else(|| derived_mac(&c.key, ifname));

    let mut host = step("opening a netlink socket", Netlink::open)?;
    let tap = step(
        &format!("looking up the switch's TAP {}", stats.tap),
        || host.link_by_name(&stats.tap),
    )?
    .ok_or_else(|| {
        anyhow!(
            "the switch's TAP {} is not in dnetctl's network namespace: run dnetctl where \
             dnet-switch runs",
            stats.tap
        )
    })?;
    let bridge_index = tap.master.ok_or_else(|| {
        anyhow!(
            "the switch's TAP {} is not a port of a bridge: start dnet-switch with --bridge \
             BRIDGE (attach plugs containers into that bridge)",
            stats.tap
        )
    })?;
    let bridge: Link = step("looking up the TAP's bridge", || {
        host.link_by_index(bridge_index)
    })?
    .ok_or_else(|| anyhow!("the TAP's bridge (index {bridge_index}) vanished"))?;
    if bridge.kind.as_deref() != Some("bridge") {
        bail!(
            "the switch's TAP {} is a port of {} (a {}), not of a Linux bridge",
            stats.tap,
            bridge.name,
            bridge.kind.as_deref().unwrap_or("device of unknown kind")
        );
    }
    if step(&format!("checking for {host_ifname}"), || {
        host.link_by_name(&host_ifname)
    })?
    .is_some()
    {
        bail!(
            "host interface {host_ifname} already exists (is {} {ifname} already attached? \
             `dnetctl detach {} --ifname {ifname}`), or pass another --host-ifname",
            c.spec,
            c.spec
        );
    }
    let cont = step(&format!("opening a netlink socket in {cdesc}"), || {
        Netlink::open_in(&c.ns)
    })?;
    let mut rb = Rollback {
        host,
        cont,
        done: Vec::new(),
    };
    if step(&format!("checking for {ifname} in {cdesc}"), || {
        rb.cont.link_by_name(ifname)
    })?
    .is_some()
    {
        bail!(
            "{cdesc} already has an interface {ifname}: pass another --ifname (or detach it: \
             `dnetctl detach {} --ifname {ifname}`)",
            c.spec
        );
    }

    // From here on every change is recorded in `rb` and undone if a later step fails.
    let (addr, prefix, allocated) = match (o.address, &stats.fleet) {
        (Some((a, p)), None) => (a, p, None),
        // The switch owns its host's allocations in etcd: it is asked, and records them.
        (want, _) => {
            let who = holder(&c.key, ifname);
            let what = match want {
                Some((a, _)) => format!("recording {a} for {who} with the switch on {sock}"),
                None => format!("asking the switch on {sock} for an address for {who}"),
            };
            let got = step(&what, || {
                allocate(
                    &o.socket,
                    o.network.as_deref(),
                    &who,
                    &c.spec,
                    want.map(|(a, _)| a),
                )
            })?;
            rb.done.push(Undo::Allocation {
                socket: o.socket.clone(),
                network: o.network.clone(),
                holder: who,
            });
            (
                got.address,
                want.map_or(got.prefix_len, |(_, p)| p),
                Some(got),
            )
        }
    };
    // Created and looked up in one step, so an interrupt cannot fall between the two and
    // leave a veth that the rollback does not know about.
    let hl = step(
        &format!("creating veth {host_ifname} <-> {ifname} in {cdesc}"),
        || -> anyhow::Result<_> {
            rb.host.add_veth(&host_ifname, ifname, &c.ns, mtu, mac)?;
            rb.host
                .link_by_name(&host_ifname)?
                .ok_or_else(|| anyhow!("{host_ifname} vanished right after creation"))
        },
    )?;
    rb.done.push(Undo::Veth {
        host_index: hl.index,
        name: host_ifname.clone(),
    });
    let cl = step(&format!("looking up {ifname} in {cdesc}"), || {
        rb.cont.link_by_name(ifname)
    })?
    .ok_or_else(|| anyhow!("{ifname} did not appear in {cdesc}"))?;
    step(&format!("labelling {ifname} in {cdesc}"), || {
        rb.cont
            .set_alias(cl.index, &format!("{ALIAS} host={host_ifname}"))
    })?;
    step(&format!("labelling {host_ifname}"), || {
        rb.host
            .set_alias(hl.index, &format!("{ALIAS} {} {ifname}", c.spec))
    })?;
    step(
        &format!("plugging {host_ifname} into bridge {}", bridge.name),
        || rb.host.set_master(hl.index, bridge.index),
    )?;
    step(&format!("bringing {host_ifname} up"), || {
        rb.host.set_up(hl.index)
    })?;
    step(&format!("bringing {ifname} up in {cdesc}"), || {
        rb.cont.set_up(cl.index)
    })?;
    step(
        &format!("waiting for {host_ifname} and {ifname} to come up"),
        || {
            wait_ready(&mut rb.host, hl.index, &host_ifname)?;
            wait_ready(&mut rb.cont, cl.index, ifname)
        },
    )?;
    let arp = step(
        &format!("opening an ARP socket on {ifname} in {cdesc}"),
        || ArpSocket::open_in(&c.ns, cl.index),
    )?;
    let cidr = format!("{}/{}", addr, prefix);
    if o.probe {
        step(
            &format!("probing {} across the overlay (RFC 5227 ARP probe)", addr),
            || match arp.probe(mac, addr) {
                Ok(None) => Ok(()),
                Ok(Some(other)) if allocated.is_some() && o.address.is_none() => Err(anyhow!(
                    "{addr} is already in use: {} answered the probe, although etcd records \
                     no holder for it (a station with a hand-picked address?): give that \
                     station an address outside the ranges, or attach with an explicit free \
                     address",
                    format_mac(&other)
                )),
                Ok(Some(other)) => Err(anyhow!(
                    "{} is already in use: {} answered the probe (choose another address, \
                     or stop the station that has it)",
                    addr,
                    format_mac(&other)
                )),
                Err(e) => Err(e.into()),
            },
        )?;
    }
    step(&format!("adding {cidr} to {ifname} in {cdesc}"), || {
        rb.cont.add_addr(cl.index, addr, prefix)
    })?;
    rb.done.push(Undo::Addr {
        index: cl.index,
        ip: addr,
        prefix,
    });
    if let Some(gw) = o.gateway {
        step(
            &format!("adding a default route via {gw} in {cdesc}"),
            || rb.cont.add_default_route(cl.index, gw),
        )?;
        rb.done.push(Undo::Route {
            index: cl.index,
            gateway: gw,
        });
    }
    step(&format!("announcing {} (gratuitous ARP)", addr), || {
        arp.announce(mac, addr)
    })?;
    rb.commit();
    Ok(Attached {
        container: c.spec.clone(),
        ifname: ifname.to_string(),
        host_ifname,
        bridge: bridge.name,
        mac,
        mtu,
        address: addr,
        prefix,
        allocated,
    })
}

/// The switch's `show` (TAP, MTU, and its etcd network if any) of `network` (`None`: its
/// first).
fn show(socket: &Path, network: Option<&str>) -> Result<Show, dnet_proto::ClientError> {
    let req = match network {
        Some(n) => Request::In {
            network: n.to_string(),
            request: Box::new(Request::Show),
        },
        None => Request::Show,
    };
    match dnet_proto::request(socket, &req, SWITCH_TIMEOUT)? {
        Response::Show(s) => Ok(s),
        other => Err(dnet_proto::ClientError::Remote(format!(
            "unexpected reply {other:?}"
        ))),
    }
}

/// Asks the switch for an address for `holder` (or to record `address`).
fn allocate(
    socket: &Path,
    network: Option<&str>,
    holder: &str,
    name: &str,
    address: Option<Ipv4Addr>,
) -> Result<Allocated, dnet_proto::ClientError> {
    let req = Request::Allocate {
        network: network.map(String::from),
        container: holder.to_string(),
        name: Some(name.to_string()),
        address,
    };
    match dnet_proto::request(socket, &req, ALLOCATE_TIMEOUT)? {
        Response::Allocated(a) => Ok(a),
        other => Err(dnet_proto::ClientError::Remote(format!(
            "unexpected reply {other:?}"
        ))),
    }
}

/// Asks the switch to free `holder`'s address; returns it (`None`: it held none).
fn release(
    socket: &Path,
    network: Option<&str>,
    holder: &str,
) -> Result<Option<Ipv4Addr>, dnet_proto::ClientError> {
    let req = Request::Release {
        network: network.map(String::from),
        container: Some(holder.to_string()),
        address: None,
    };
    match dnet_proto::request(socket, &req, ALLOCATE_TIMEOUT)? {
        Response::Released { address, .. } => Ok(address),
        other => Err(dnet_proto::ClientError::Remote(format!(
            "unexpected reply {other:?}"
        ))),
    }
}

/// What a detach removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detached {
    /// Container-side interface removed (`None`: it was gone already, only its address was
    /// freed).
    pub ifname: Option<String>,
    /// Host end named in its alias (removed with it), if recorded.
    pub host_ifname: Option<String>,
    /// The address freed in the switch's etcd network, if it had allocated one.
    pub released: Option<Ipv4Addr>,
}

/// `dnetctl detach`: deletes the veth that attach made as `ifname` in the container (its host
/// end goes with it, and with it the address and route), and asks the switch on `socket` to
/// free the address it allocated for it. Refuses interfaces attach did not make. An interface
/// already gone whose address is still allocated only has its address freed.
pub fn detach(
    container: &str,
    ifname: &str,
    socket: &Path,
    network: Option<&str>,
) -> anyhow::Result<Detached> {
    let ctx = |e: anyhow::Error| anyhow!("detach {container}: {e:#}");
    let c = resolve_container(container).map_err(ctx)?;
    detach_resolved(&c, ifname, socket, network).map_err(ctx)
}

fn detach_resolved(
    c: &Container,
    ifname: &str,
    socket: &Path,
    network: Option<&str>,
) -> anyhow::Result<Detached> {
    check_ifname("--ifname", ifname)?;
    let cdesc = &c.desc;
    // Only a switch in an etcd network has allocations; one that does not answer is told
    // about below, once the interface is gone.
    let fleet = show(socket, network).map(|s| s.fleet.is_some());
    let who = holder(&c.key, ifname);
    let free = || -> anyhow::Result<Option<Ipv4Addr>> {
        match &fleet {
            Ok(false) => Ok(None),
            Ok(true) => step(
                &format!(
                    "asking the switch on {} to free {who}'s address",
                    socket.display()
                ),
                || release(socket, network, &who),
            ),
            // Without a switch there is nothing to free, unless it runs with --network
            // somewhere else: say so, and leave the interface's removal a success.
            Err(e) => {
                eprintln!(
                    "dnetctl: note: the switch on {} does not answer ({e}): if it runs with --network, the address it allocated for {who} stays allocated; run this detach again once it answers (pass its --control-socket as --socket)",
                    socket.display()
                );
                Ok(None)
            }
        }
    };
    let mut nl = step(&format!("opening a netlink socket in {cdesc}"), || {
        Netlink::open_in(&c.ns)
    })?;
    let Some(l) = step(&format!("looking up {ifname} in {cdesc}"), || {
        nl.link_by_name(ifname)
    })?
    else {
        // A detach whose release failed, run again: only the address is left to free.
        return match free()? {
            Some(a) => Ok(Detached {
                ifname: None,
                host_ifname: None,
                released: Some(a),
            }),
            None => bail!("{cdesc} has no interface {ifname}: nothing to detach"),
        };
    };
    let alias = l.alias.clone().unwrap_or_default();
    if !alias.starts_with(ALIAS) || l.kind.as_deref() != Some("veth") {
        bail!(
            "{ifname} in {cdesc} was not made by dnetctl attach (no \"{ALIAS}\" alias on a \
             veth): refusing to delete it"
        );
    }
    let host_ifname = alias
        .split_whitespace()
        .find_map(|w| w.strip_prefix("host="))
        .map(str::to_string);
    step(&format!("deleting {ifname} in {cdesc}"), || {
        nl.del_link(l.index)
    })?;
    let released = free().map_err(|e| anyhow!("{ifname} in {cdesc} deleted, but {e:#}"))?;
    Ok(Detached {
        ifname: Some(ifname.to_string()),
        host_ifname,
        released,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_is_stable_local_unicast_and_distinct() {
        let a = derived_mac("netns:web1", "eth1");
        assert_eq!(a, derived_mac("netns:web1", "eth1"));
        assert_eq!(a[0] & 0x03, 0x02, "locally administered unicast: {a:02x?}");
        assert_ne!(a, derived_mac("netns:web2", "eth1"));
        assert_ne!(a, derived_mac("netns:web1", "eth2"));
        // Parts are separated: ("ab","c") and ("a","bc") differ.
        assert_ne!(derived_mac("ab", "c"), derived_mac("a", "bc"));
        // Pinned: these must never change between releases.
        assert_eq!(fnv1a(&["a"]), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn host_ifname_shape() {
        let n = derived_host_ifname("docker:4fa6e0f0", "eth1");
        assert_eq!(n.len(), 10);
        assert!(n.starts_with("dn"));
        check_ifname("x", &n).unwrap();
        assert_eq!(n, derived_host_ifname("docker:4fa6e0f0", "eth1"));
        assert_ne!(n, derived_host_ifname("docker:4fa6e0f0", "eth2"));
    }

    #[test]
    fn cidr_parsing() {
        assert_eq!(
            parse_cidr("10.77.1.5/24"),
            Ok((Ipv4Addr::new(10, 77, 1, 5), 24))
        );
        assert_eq!(
            parse_cidr("10.77.1.0/31"),
            Ok((Ipv4Addr::new(10, 77, 1, 0), 31))
        );
        assert!(parse_cidr("10.77.1.5").is_err());
        assert!(parse_cidr("10.77.1.5/33").is_err());
        assert!(parse_cidr("10.77.1.0/24").unwrap_err().contains("network"));
        assert!(parse_cidr("10.77.1.255/24").is_err());
        assert!(parse_cidr("0.0.0.0/0").is_err());
        assert!(parse_cidr("fe80::1/64").is_err());
    }

    #[test]
    fn mac_parsing() {
        assert_eq!(
            parse_mac("02:00:0A:4d:1:05"),
            Ok([0x02, 0x00, 0x0a, 0x4d, 0x01, 0x05])
        );
        assert!(parse_mac("01:00:5e:00:00:01")
            .unwrap_err()
            .contains("multicast"));
        assert!(parse_mac("00:00:00:00:00:00").is_err());
        assert!(parse_mac("02:00:00:00:00").is_err());
        assert!(parse_mac("02:00:00:00:00:xyz").is_err());
    }

    #[test]
    fn ifname_checks() {
        check_ifname("x", "eth1").unwrap();
        check_ifname("x", "a23456789012345").unwrap();
        assert!(check_ifname("x", "a234567890123456").is_err());
        assert!(check_ifname("x", "").is_err());
        assert!(check_ifname("x", "a/b").is_err());
        assert!(check_ifname("x", "a b").is_err());
    }

    #[test]
    fn unknown_container_without_engine_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("dnet-attach-test-{}", std::process::id()));
        let e = resolve_container_with("web1", &dir, Path::new("/nonexistent/docker.sock"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no network namespace or process named web1")
                && e.contains("/nonexistent/docker.sock")
                && e.contains("pid:N"),
            "{e}"
        );
        let e = resolve_container_with("pid:abc", &dir, Path::new("/x")).unwrap_err();
        assert!(e.to_string().contains("pid:N"), "{e}");
    }
}
