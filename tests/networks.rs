//! Several isolated networks in one switch, end to end: two hosts each run one dnet-switch
//! serving etcd networks blue (key 1) and red (key 2), each on its own bridge and TAP. Traffic
//! in one network leaves the other's ports and containers untouched (counters compared, not
//! just "no reply"), and a frame with a key no network has is dropped and counted.

use dnet_e2e::fleet_support::{create_network, dnetctl_ok, wait_for, Etcd, TTL};
use dnet_proto::{NetworkEntry, PortKind, Request, Response, Stats};
use dnet_testbed::cmd::ipn;
use dnet_testbed::traffic::{ping, udp_broadcast};
use dnet_testbed::{Process, SwitchOptions, Testbed};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const NETS: [(&str, &str, u32, u8); 2] = [
    ("blue", "10.77.0.0/16", 1, 77),
    ("red", "10.78.0.0/16", 2, 78),
];
const READY: Duration = Duration::from_secs(20);

fn ask(socket: &Path, req: Request) -> Option<Response> {
    dnet_proto::request(socket, &req, Duration::from_secs(5)).ok()
}

fn networks(socket: &Path) -> Option<Vec<NetworkEntry>> {
    match ask(socket, Request::Networks)? {
        Response::Networks { networks } => Some(networks),
        _ => None,
    }
}

fn stats_of(socket: &Path, net: &str) -> Stats {
    let req = Request::In {
        network: net.into(),
        request: Box::new(Request::Stats),
    };
    match ask(socket, req) {
        Some(Response::Stats(s)) => s,
        other => panic!("stats of {net} on {}: {other:?}", socket.display()),
    }
}

/// Every port's frame counters of `net` (rx, tx), in port order.
fn port_frames(socket: &Path, net: &str) -> Vec<(String, u64, u64)> {
    stats_of(socket, net)
        .ports
        .iter()
        .map(|p| (p.name.clone(), p.rx_packets, p.tx_packets))
        .collect()
}

fn drop_count(s: &Stats, reason: &str) -> u64 {
    s.drops
        .iter()
        .find(|d| d.reason == reason)
        .map_or_else(|| panic!("no drop reason {reason}"), |d| d.count)
}

fn tunnels(socket: &Path, net: &str) -> usize {
    stats_of(socket, net)
        .ports
        .iter()
        .filter(|p| p.kind == PortKind::Tunnel)
        .count()
}

/// Frames a container's interface received (from /sys, inside its namespace).
fn rx_frames(ns: &str) -> u64 {
    ipn(ns, "-s -j link show eth0")
        .ok()
        .and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok())
        .and_then(|v| v[0]["stats64"]["rx"]["packets"].as_u64())
        .unwrap_or_else(|| panic!("rx counter of eth0 in {ns}"))
}

fn mac(ns: &str) -> String {
    let j = ipn(ns, "-j link show eth0").unwrap();
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    v[0]["address"].as_str().unwrap().to_string()
}

/// Each container knows the other host's container of its network for good: no ARP of their
/// own comes and goes while the other network is being watched.
fn static_neighbours(a: &Side, b: &Side) {
    for i in 0..NETS.len() {
        for (x, y) in [(a, b), (b, a)] {
            let (ns, _) = &x.containers[i];
            let (peer_ns, peer) = &y.containers[i];
            let m = mac(peer_ns);
            ipn(
                ns,
                &format!("neigh replace {peer} lladdr {m} dev eth0 nud permanent"),
            )
            .unwrap();
        }
    }
}

/// No frames of the kernel's own on the test's segments: IPv6 autoconfiguration and IGMP
/// reports for link-local groups would put some there whenever an interface comes up.
fn quiet(ns: &str) {
    for k in [
        "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv6.conf.default.disable_ipv6=1",
        "net.ipv4.igmp_link_local_mcast_reports=0",
    ] {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "sysctl", "-qw", k])
            .status()
            .expect("sysctl");
        assert!(out.success(), "sysctl {k} in {ns}");
    }
}

struct Side {
    socket: PathBuf,
    _switch: Process,
    /// Container namespace per network, with its address.
    containers: Vec<(String, Ipv4Addr)>,
}

fn host_side(tb: &Testbed, etcd: &Etcd, i: usize) -> Side {
    let h = tb.host(i);
    quiet(&h.ns);
    let mut containers = Vec::new();
    for (net, _, _, second) in NETS {
        let br = format!("br-{net}");
        ipn(&h.ns, &format!("link add {br} type bridge")).unwrap();
        ipn(&h.ns, &format!("link set {br} up")).unwrap();
        let c = tb
            .add_extra_netns(&format!("{}{}", h.letter, &net[..1]))
            .unwrap();
        quiet(&c);
        let host_if = format!("v{}{}{}", h.letter, &net[..1], std::process::id() % 10000);
        ipn(
            &h.ns,
            &format!("link add {host_if} type veth peer name eth0 netns {c}"),
        )
        .unwrap();
        ipn(&h.ns, &format!("link set {host_if} master {br} up")).unwrap();
        let addr = Ipv4Addr::new(10, second, 0, i as u8 + 1);
        ipn(&c, &format!("addr add {addr}/16 dev eth0")).unwrap();
        ipn(&c, "link set eth0 up").unwrap();
        containers.push((c, addr));
    }
    let socket = tb.dir().join(format!("{}-nets.sock", h.letter));
    let mut cmd = Command::new(dnet_testbed::switch_binary().unwrap());
    cmd.args(etcd.args())
        .args(["--network", "blue", "--network", "red"])
        .args(["--bridge", "blue=br-blue,red=br-red"])
        .args(["--etcd-ttl", &TTL.to_string(), "--workers", "1"])
        .arg("--control-socket")
        .arg(&socket);
    let sw = tb
        .spawn_in(&h.ns, "dnet-switch", &cmd)
        .expect("start switch");
    let ok = wait_for(READY, || networks(&socket).is_some_and(|n| n.len() == 2));
    assert!(ok, "switch on {} not ready:\n{}", h.ns, sw.output());
    for (c, _) in &containers {
        let mtu = networks(&socket).unwrap()[0].mtu;
        ipn(c, &format!("link set eth0 mtu {mtu}")).unwrap();
    }
    Side {
        socket,
        _switch: sw,
        containers,
    }
}

/// Hosts a and b serve blue and red; host c runs a switch of its own with key 99 that host b
/// takes as a peer of blue, so its frames reach b with a key no network of b has.
#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn two_networks_never_exchange_a_frame_and_unknown_keys_are_counted() {
    let tb = Testbed::new(3).expect("testbed");
    let etcd = Etcd::single(&tb);
    for (net, subnet, key, _) in NETS {
        create_network(&etcd, net, subnet, &["--key", &key.to_string()]);
    }
    let a = host_side(&tb, &etcd, 0);
    let b = host_side(&tb, &etcd, 1);

    // Each network: its own TAP, bridge and key; one etcd tunnel each (the other host).
    let listed = networks(&a.socket).unwrap();
    let names: Vec<(&str, &str, Option<&str>, Option<u32>)> = listed
        .iter()
        .map(|n| (n.name.as_str(), n.tap.as_str(), n.bridge.as_deref(), n.key))
        .collect();
    assert_eq!(
        names,
        [
            ("blue", "dnet-blue", Some("br-blue"), Some(1)),
            ("red", "dnet-red", Some("br-red"), Some(2))
        ]
    );
    for n in &listed {
        assert!(n.range.is_some() && n.gateway.is_some(), "{n:?}");
    }
    for s in [&a, &b] {
        for (net, ..) in NETS {
            let ok = wait_for(READY, || tunnels(&s.socket, net) == 1);
            assert!(ok, "no tunnel in {net} on {}", s.socket.display());
        }
    }

    static_neighbours(&a, &b);
    // Traffic in one network, then the other: it crosses the hosts, and the other network's
    // ports and containers see not one frame of it.
    for (which, other) in [(0, 1), (1, 0)] {
        let (net, other_net) = (NETS[which].0, NETS[other].0);
        let before: Vec<_> = [&a, &b]
            .iter()
            .map(|s| port_frames(&s.socket, other_net))
            .collect();
        let rx_before: Vec<u64> = [&a, &b]
            .iter()
            .map(|s| rx_frames(&s.containers[other].0))
            .collect();
        let (src, _) = &a.containers[which];
        let (_, dst) = b.containers[which];
        let r = ping(src, dst, 20, Duration::from_secs(2)).expect("ping");
        assert!(
            r.received >= 19,
            "{net}: {} of 20 echoes answered",
            r.received
        );
        // A broadcast reaches its own network's container on the other host only.
        let bcast = Ipv4Addr::new(10, NETS[which].3, 255, 255);
        let got = udp_broadcast(
            src,
            bcast,
            5353,
            &[
                &b.containers[which].0,
                &b.containers[other].0,
                &a.containers[other].0,
            ],
            Duration::from_millis(500),
        )
        .expect("broadcast");
        assert_eq!(
            got,
            [1, 0, 0],
            "{net}'s broadcast reached (own, other, other)"
        );
        let after: Vec<_> = [&a, &b]
            .iter()
            .map(|s| port_frames(&s.socket, other_net))
            .collect();
        let rx_after: Vec<u64> = [&a, &b]
            .iter()
            .map(|s| rx_frames(&s.containers[other].0))
            .collect();
        assert_eq!(
            before, after,
            "{net}'s traffic moved {other_net}'s counters"
        );
        assert_eq!(
            rx_before, rx_after,
            "{other_net}'s containers received frames of {net}"
        );
        // And it did go through this network's tunnel.
        let tunnel_rx: u64 = stats_of(&b.socket, net)
            .ports
            .iter()
            .filter(|p| p.kind == PortKind::Tunnel)
            .map(|p| p.rx_packets)
            .sum();
        assert!(
            tunnel_rx >= 20,
            "{net}: only {tunnel_rx} frames through b's tunnel"
        );
    }

    // A sender with a key no network has: host c, which b takes as a peer of blue.
    let c_ip = tb.host(2).underlay_ip;
    let b_ip = tb.host(1).underlay_ip;
    let sock = b.socket.display().to_string();
    dnetctl_ok(
        &tb.host(1).ns,
        &[
            "peer",
            "add",
            &c_ip.to_string(),
            "--network",
            "blue",
            "--socket",
            &sock,
        ],
    );
    let c = tb
        .start_switch_with(
            2,
            &SwitchOptions {
                peers: Some(vec![b_ip]),
                log_level: "info".into(),
                extra_args: vec!["--key".into(), "99".into(), "--workers".into(), "1".into()],
                ..SwitchOptions::default()
            },
        )
        .expect("switch c");
    let wrong_before = drop_count(&stats_of(&b.socket, "blue"), "wrong_key");
    let red_before = port_frames(&b.socket, "red");
    // c's container pings a blue address: its ARP requests leave c with key 99.
    let r = ping(
        &tb.host(2).container_ns,
        b.containers[0].1,
        3,
        Duration::from_millis(500),
    )
    .expect("ping from c");
    assert_eq!(r.received, 0, "a frame with key 99 was answered");
    // The kernel may still be resending ARP: compare both counts at one moment.
    let c_sent = || {
        c.stats()
            .unwrap()
            .ports
            .iter()
            .find(|p| p.peer == Some(b_ip))
            .map_or(0, |p| p.tx_packets)
    };
    let dropped = |net: &str| drop_count(&stats_of(&b.socket, net), "wrong_key") - wrong_before;
    // The drop is the switch's, not a network's: red's view counts it too.
    let mut seen = (0, 0, 0);
    let ok = wait_for(Duration::from_secs(10), || {
        seen = (c_sent(), dropped("blue"), dropped("red"));
        seen.0 >= 1 && seen.0 == seen.1 && seen.1 == seen.2
    });
    assert!(
        ok,
        "c sent {} frames with key 99, b counted {} wrong_key drops (red's view: {})",
        seen.0, seen.1, seen.2
    );
    assert_eq!(port_frames(&b.socket, "red"), red_before);

    // dnetctl attach --network red: an address of red's range on this host, on red's bridge;
    // detach frees it.
    let pod = tb.add_extra_netns("pr").unwrap();
    let out = dnetctl_ok(
        &tb.host(1).ns,
        &[
            "attach",
            &pod,
            "--network",
            "red",
            "--socket",
            &sock,
            "--no-probe",
            "-j",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["network"], "red", "{out}");
    assert_eq!(v["bridge"], "br-red", "{out}");
    let red_range = networks(&b.socket).unwrap()[1].range.clone().unwrap();
    let addr: Ipv4Addr = v["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let (net, len) = red_range.split_once('/').unwrap();
    let mask = u32::MAX << (32 - len.parse::<u32>().unwrap());
    assert_eq!(
        u32::from(addr) & mask,
        u32::from(net.parse::<Ipv4Addr>().unwrap()),
        "{addr} not in {red_range}"
    );
    dnetctl_ok(
        &tb.host(1).ns,
        &["detach", &pod, "--network", "red", "--socket", &sock],
    );
    let req = Request::Allocations {
        network: Some("red".into()),
    };
    match ask(&b.socket, req) {
        Some(Response::Allocations(l)) => assert!(l.allocations.is_empty(), "{l:?}"),
        other => panic!("allocations of red: {other:?}"),
    }

    // dnetctl shows every network by default, one with --network.
    let sh = dnetctl_ok(&tb.host(1).ns, &["show", "--socket", &sock]);
    assert!(
        sh.contains("network blue:") && sh.contains("network red:"),
        "{sh}"
    );
    let sh = dnetctl_ok(
        &tb.host(1).ns,
        &["stats", "--network", "red", "--socket", &sock],
    );
    assert!(sh.contains("dnet-red") && !sh.contains("dnet-blue"), "{sh}");
    let j = dnetctl_ok(&tb.host(1).ns, &["fdb", "show", "-j", "--socket", &sock]);
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert!(v["blue"].is_object() && v["red"].is_object(), "{j}");
}
