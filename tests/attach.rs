//! `dnetctl attach` / `detach` end to end: the real dnetctl binary, run inside host namespaces
//! next to real dnet-switch processes, plugs bare "container" namespaces into the overlay.

use dnet_testbed::netns::netns_path;
use dnet_testbed::traffic::ping;
use dnet_testbed::{Switch, Testbed, CONTAINER_IF};
use dnetctl::attach::{derived_host_ifname, ALIAS};
use dnetctl::netlink::{Link, Netlink};
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The dnetctl binary: `$DNETCTL_BIN`, else `target/<profile>/dnetctl` next to this test's
/// `deps` directory (built by `cargo build --workspace` / `cargo test --workspace`).
fn dnetctl_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("DNETCTL_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().unwrap_or(Path::new("/")).to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let p = dir.join("dnetctl");
    assert!(
        p.is_file(),
        "{} not found: run `cargo build --workspace` first (or set DNETCTL_BIN)",
        p.display()
    );
    p
}

/// Runs `ip netns exec NS dnetctl ARGS...`.
fn dnetctl(ns: &str, args: &[&str]) -> Output {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(dnetctl_bin())
        .args(args)
        .output()
        .expect("running dnetctl");
    eprintln!(
        "$ ip netns exec {ns} dnetctl {}\n{}{}-> {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status
    );
    out
}

fn attach(host_ns: &str, sw: &Switch, container: &str, cidr: &str) -> Output {
    let sock = sw.socket.to_string_lossy().into_owned();
    dnetctl(host_ns, &["attach", container, cidr, "--socket", &sock])
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// All links of a namespace, read through netlink.
fn links(ns: &str) -> Vec<Link> {
    let f = File::open(netns_path(ns)).expect("open netns");
    let mut nl = Netlink::open_in(&f).expect("netlink in netns");
    nl.links().expect("link dump")
}

fn link(ns: &str, name: &str) -> Option<Link> {
    let f = File::open(netns_path(ns)).expect("open netns");
    let mut nl = Netlink::open_in(&f).expect("netlink in netns");
    nl.link_by_name(name).expect("link lookup")
}

/// Links carrying dnetctl's alias (made by attach).
fn attach_links(ns: &str) -> Vec<String> {
    links(ns)
        .into_iter()
        .filter(|l| l.alias.as_deref().is_some_and(|a| a.starts_with(ALIAS)))
        .map(|l| l.name)
        .collect()
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn attach_two_containers_ping_detach_and_reattach() {
    let tb = Testbed::new(2).expect("building testbed");
    let sw = tb.start_switches().expect("starting switches");
    let mtu = sw[0].stats().expect("stats").mtu;
    let (ha, hb) = (tb.host(0).ns.clone(), tb.host(1).ns.clone());
    let ca = tb.add_extra_netns("xa").expect("container a");
    let cb = tb.add_extra_netns("xb").expect("container b");
    let (ip_a, ip_b) = (Ipv4Addr::new(10, 77, 1, 1), Ipv4Addr::new(10, 77, 1, 2));

    let o = attach(&ha, &sw[0], &ca, "10.77.1.1/24");
    assert!(o.status.success(), "attach a: {}", stderr(&o));
    let sock_b = sw[1].socket.display().to_string();
    let o = dnetctl(
        &hb,
        &["attach", &cb, "10.77.1.2/24", "--socket", &sock_b, "-j"],
    );
    assert!(o.status.success(), "attach b: {}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("attach -j prints JSON");
    assert_eq!(j["address"], "10.77.1.2/24");
    assert_eq!(j["ifname"], "eth1");
    assert_eq!(j["mtu"], mtu);
    assert_eq!(j["bridge"], dnet_testbed::BRIDGE);

    let p = ping(&ca, ip_b, 5, Duration::from_secs(2)).expect("ping a->b");
    assert_eq!(p.received, 5, "ping a->b: {p:?}");
    let p = ping(&cb, ip_a, 5, Duration::from_secs(2)).expect("ping b->a");
    assert_eq!(p.received, 5, "ping b->a: {p:?}");

    // The container end: the switch's MTU, a locally administered MAC, the ownership mark;
    // the host end: in the TAP's bridge, same MTU.
    let eth1 = link(&ca, "eth1").expect("eth1 in container a");
    assert_eq!(eth1.mtu, Some(mtu), "container MTU is the switch's");
    let mac = eth1.mac.expect("eth1 MAC");
    assert_eq!(mac[0] & 3, 2, "locally administered unicast MAC {mac:02x?}");
    assert!(eth1.alias.as_deref().unwrap_or("").starts_with(ALIAS));
    let host_if = derived_host_ifname(&format!("netns:{ca}"), "eth1");
    let hl = link(&ha, &host_if).expect("host end in host a");
    let br = link(&ha, dnet_testbed::BRIDGE).expect("bridge");
    assert_eq!(
        hl.master,
        Some(br.index),
        "host end is a port of the bridge"
    );
    assert_eq!(hl.mtu, Some(mtu));
    assert_eq!(hl.bridge_forwarding, Some(true), "bridge port forwarding");

    // A second attach of the same interface is refused and changes nothing.
    let o = attach(&ha, &sw[0], &ca, "10.77.1.3/24");
    assert!(!o.status.success(), "double attach succeeded");
    assert!(stderr(&o).contains("already"), "{}", stderr(&o));
    assert!(link(&ca, "eth1").is_some(), "double attach removed eth1");

    // Detach removes both ends.
    let o = dnetctl(&ha, &["detach", &ca, "-j"]);
    assert!(o.status.success(), "detach: {}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("detach -j prints JSON");
    assert_eq!(j["ifname"], "eth1");
    assert_eq!(j["host_ifname"], host_if.as_str());
    assert!(link(&ca, "eth1").is_none(), "eth1 left in the container");
    assert!(link(&ha, &host_if).is_none(), "host end {host_if} left");
    assert!(attach_links(&ha).is_empty() && attach_links(&ca).is_empty());

    // Attach again: same MAC, and traffic flows again.
    let o = attach(&ha, &sw[0], &ca, "10.77.1.1/24");
    assert!(o.status.success(), "re-attach: {}", stderr(&o));
    assert_eq!(
        link(&ca, "eth1").and_then(|l| l.mac),
        Some(mac),
        "MAC stable"
    );
    let p = ping(&ca, ip_b, 3, Duration::from_secs(2)).expect("ping after re-attach");
    assert_eq!(p.received, 3, "ping after re-attach: {p:?}");

    // Detach refuses an interface attach did not make (the testbed's own eth0).
    let cn = tb.host(0).container_ns.clone();
    let o = dnetctl(&ha, &["detach", &cn, "--ifname", CONTAINER_IF]);
    assert!(!o.status.success(), "detached a foreign interface");
    assert!(
        stderr(&o).contains("not made by dnetctl attach"),
        "{}",
        stderr(&o)
    );
    assert!(link(&cn, CONTAINER_IF).is_some(), "foreign eth0 deleted");

    for (h, c) in [(&ha, &ca), (&hb, &cb)] {
        let o = dnetctl(h, &["detach", c]);
        assert!(o.status.success(), "final detach: {}", stderr(&o));
        assert!(attach_links(h).is_empty() && attach_links(c).is_empty());
    }
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn attach_with_address_used_on_other_host_fails_and_leaves_nothing() {
    let tb = Testbed::new(2).expect("building testbed");
    let sw = tb.start_switches().expect("starting switches");
    let ha = tb.host(0).ns.clone();
    let b = tb.host(1).clone();
    let ca = tb.add_extra_netns("xa").expect("container a");
    let before_host = links(&ha);
    let before_cont = links(&ca);
    let b_mac = link(&b.container_ns, CONTAINER_IF)
        .and_then(|l| l.mac)
        .expect("MAC of b's container");
    let b_mac = b_mac
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":");

    // Host b's container already has 10.77.0.2: the probe crosses the overlay and it answers.
    let o = attach(&ha, &sw[0], &ca, &format!("{}/24", b.container_ip));
    let err = stderr(&o);
    assert!(!o.status.success(), "attach of a used address succeeded");
    assert!(
        err.contains("already in use") && err.contains(&b_mac),
        "error does not name the conflicting MAC {b_mac}:\n{err}"
    );
    assert!(
        err.contains("probing"),
        "error does not name the step:\n{err}"
    );

    // Nothing left behind, in either namespace.
    let names = |v: &[Link]| v.iter().map(|l| l.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&links(&ca)), names(&before_cont), "container changed");
    assert_eq!(names(&links(&ha)), names(&before_host), "host changed");
    assert!(attach_links(&ha).is_empty() && attach_links(&ca).is_empty());

    // The same container with a free address attaches fine afterwards.
    let o = attach(&ha, &sw[0], &ca, "10.77.0.50/24");
    assert!(o.status.success(), "attach after refusal: {}", stderr(&o));
    let p = ping(&ca, b.container_ip, 3, Duration::from_secs(2)).expect("ping");
    assert_eq!(p.received, 3, "ping from the attached container: {p:?}");
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn attach_errors_are_clear_without_a_switch_or_container() {
    let tb = Testbed::new(2).expect("building testbed");
    let ha = tb.host(0).ns.clone();
    let ca = tb.add_extra_netns("xa").expect("container a");
    let before = links(&ca);

    // No switch: the error names the socket and the step; nothing is made.
    let o = dnetctl(
        &ha,
        &[
            "attach",
            &ca,
            "10.77.1.1/24",
            "--socket",
            "/run/dnet/nonexistent.sock",
        ],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("/run/dnet/nonexistent.sock") && err.contains("failed"),
        "{err}"
    );
    assert_eq!(links(&ca).len(), before.len());

    // An unknown container, no Docker engine: the documented hint.
    let o = Command::new(dnetctl_bin())
        .args(["attach", "dnet-no-such-container-7", "10.77.1.1/24"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .expect("dnetctl");
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("no network namespace or process named dnet-no-such-container-7")
            && err.contains("pid:N"),
        "{err}"
    );
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn options_are_applied_and_a_late_failure_rolls_everything_back() {
    let tb = Testbed::new(2).expect("building testbed");
    let sw = tb.start_switch(0).expect("starting switch a");
    let ha = tb.host(0).ns.clone();
    let ca = tb.add_extra_netns("xa").expect("container a");
    let sock = sw.socket.to_string_lossy().into_owned();
    let before_host = links(&ha).len();

    // The gateway is outside the subnet, so the last netlink step (the default route) fails
    // after the veth, its labels, bridge port and address were made: all must be undone.
    let o = dnetctl(
        &ha,
        &[
            "attach",
            &ca,
            "10.77.2.5/24",
            "--socket",
            &sock,
            "--gateway",
            "192.0.2.1",
            "--no-probe",
        ],
    );
    let err = stderr(&o);
    assert!(
        !o.status.success(),
        "attach with an unreachable gateway succeeded"
    );
    assert!(
        err.contains("adding a default route via 192.0.2.1") && err.contains("failed"),
        "error does not name the step:\n{err}"
    );
    assert!(link(&ca, "eth1").is_none(), "eth1 left behind:\n{err}");
    assert_eq!(links(&ha).len(), before_host, "host links changed");
    assert!(attach_links(&ha).is_empty());

    // Every option at once.
    let o = dnetctl(
        &ha,
        &[
            "attach",
            &ca,
            "10.77.2.5/24",
            "--socket",
            &sock,
            "--ifname",
            "eth7",
            "--mac",
            "02:00:0a:4d:02:05",
            "--mtu",
            "1400",
            "--host-ifname",
            "dnopt0",
            "--gateway",
            "10.77.2.1",
        ],
    );
    assert!(o.status.success(), "attach with options: {}", stderr(&o));
    let l = link(&ca, "eth7").expect("eth7");
    assert_eq!(l.mac, Some([0x02, 0x00, 0x0a, 0x4d, 0x02, 0x05]));
    assert_eq!(l.mtu, Some(1400));
    assert_eq!(link(&ha, "dnopt0").and_then(|l| l.mtu), Some(1400));
    let routes = dnet_testbed::cmd::ip_in(&ca, &["-4", "route", "show"]).expect("ip route");
    assert!(
        routes.contains("default via 10.77.2.1 dev eth7"),
        "no default route:\n{routes}"
    );
    let addrs =
        dnet_testbed::cmd::ip_in(&ca, &["-4", "addr", "show", "dev", "eth7"]).expect("ip addr");
    assert!(
        addrs.contains("inet 10.77.2.5/24 brd 10.77.2.255"),
        "address:\n{addrs}"
    );
    let o = dnetctl(&ha, &["detach", &ca, "--ifname", "eth7"]);
    assert!(o.status.success(), "detach eth7: {}", stderr(&o));
    assert!(link(&ha, "dnopt0").is_none() && link(&ca, "eth7").is_none());

    // pid:N names the namespace of a process running in it.
    let mut sleeper = Command::new("sleep");
    sleeper.arg("60");
    let p = tb
        .spawn_in(&ca, "sleep", &sleeper)
        .expect("process in container");
    let spec = format!("pid:{}", p.pid);
    let o = dnetctl(&ha, &["attach", &spec, "10.77.2.6/24", "--socket", &sock]);
    assert!(o.status.success(), "attach {spec}: {}", stderr(&o));
    assert!(link(&ca, "eth1").is_some(), "attach {spec} went elsewhere");
    let o = dnetctl(&ha, &["detach", &spec]);
    assert!(o.status.success(), "detach {spec}: {}", stderr(&o));
    assert!(attach_links(&ha).is_empty() && attach_links(&ca).is_empty());
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn interrupted_attach_rolls_back() {
    let tb = Testbed::new(2).expect("building testbed");
    let sw = tb.start_switch(0).expect("starting switch a");
    let ha = tb.host(0).ns.clone();
    let ca = tb.add_extra_netns("xa").expect("container a");
    let sock = sw.socket.to_string_lossy().into_owned();
    let before_host = links(&ha).len();
    // `ip netns exec` execs dnetctl, so the child's PID is dnetctl's own.
    let child = Command::new("ip")
        .args(["netns", "exec", &ha])
        .arg(dnetctl_bin())
        .args(["attach", &ca, "10.77.3.5/24", "--socket", &sock])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn dnetctl");
    // Wait until the veth exists (the attach is then in its 1 s probe), then interrupt.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while link(&ca, "eth1").is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: kill(2) on our own child, not yet waited for.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let out = child.wait_with_output().expect("wait dnetctl");
    let err = stderr(&out);
    eprintln!("{err}");
    assert!(!out.status.success(), "interrupted attach succeeded");
    assert!(err.contains("interrupted"), "{err}");
    assert!(link(&ca, "eth1").is_none(), "eth1 left behind");
    assert_eq!(links(&ha).len(), before_host, "host links changed");
}
