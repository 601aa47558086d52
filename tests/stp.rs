//! `--stp` end to end: three hosts whose tunnels form a ring (a triangle: every host peers with
//! both others) forward tunnel to tunnel with split horizon off. The spanning tree must block
//! exactly one tunnel end, deliver each broadcast exactly once with a bounded number of
//! tunnel frames, keep every container reachable, and route around a cut underlay link.

use dnet_e2e::{assert_each_broadcast_arrives_once, drop_count, settled_stats};
use dnet_proto::{Request, Response, Show};
use dnet_testbed::traffic::{ping, udp_broadcast};
use dnet_testbed::{tunnel_totals, Host, Switch, SwitchOptions, Testbed, CONTAINER_BROADCAST};
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

/// 802.1D's worst case for a lost link (max age + 2 × forward delay); RSTP does far better,
/// and the measured time is printed.
const PROTOCOL_BOUND: Duration = Duration::from_secs(50);

fn show(sw: &Switch) -> Show {
    match dnet_proto::request(&sw.socket, &Request::Show, Duration::from_secs(3)) {
        Ok(Response::Show(s)) => s,
        other => panic!("show: {other:?}\n{}", sw.stderr()),
    }
}

/// (peer, role, state) of every tunnel of a switch.
fn tree(sw: &Switch) -> Vec<(Ipv4Addr, String, String)> {
    show(sw)
        .ports
        .into_iter()
        .filter_map(|p| Some((p.peer?, p.stp_role?, p.stp_state?)))
        .collect()
}

fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// The ring has converged: every switch names host a's switch as root, and exactly one of the
/// six tunnel ends is blocked (alternate, discarding), all others forward.
fn converged(sw: &[Switch], root_id: &str) -> bool {
    let shows: Vec<Show> = sw.iter().map(show).collect();
    if !shows
        .iter()
        .all(|s| s.stp.as_ref().is_some_and(|t| t.root_id == root_id))
    {
        return false;
    }
    let ends: Vec<(String, String)> = shows
        .iter()
        .flat_map(|s| s.ports.iter())
        .filter_map(|p| Some((p.stp_role.clone()?, p.stp_state.clone()?)))
        .collect();
    ends.len() == 6
        && ends
            .iter()
            .filter(|(r, s)| r == "alternate" && s == "discarding")
            .count()
            == 1
        && ends.iter().filter(|(_, s)| s == "forwarding").count() == 5
}

fn all_pairs_ping(h: &[Host]) {
    for x in h {
        for y in h.iter().filter(|y| y.index != x.index) {
            let r = ping(&x.container_ns, y.container_ip, 3, Duration::from_secs(2))
                .unwrap_or_else(|e| panic!("ping {} -> {}: {e}", x.letter, y.letter));
            assert!(
                r.received >= 2,
                "{} -> {}: {} of 3 pings answered",
                x.letter,
                y.letter,
                r.received
            );
        }
    }
}

/// Cuts (or restores) the underlay between hosts `x` and `y` only: each gets a blackhole route
/// to the other's underlay address.
fn cut(x: &Host, y: &Host, on: bool) {
    for (from, to) in [(x, y), (y, x)] {
        let verb = if on { "add" } else { "del" };
        let st = Command::new("ip")
            .args(["-n", &from.ns, "route", verb, "blackhole"])
            .arg(format!("{}/32", to.underlay_ip))
            .status()
            .expect("running ip");
        assert!(st.success(), "ip route {verb} blackhole in {}", from.ns);
    }
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn a_ring_blocks_one_tunnel_delivers_once_and_routes_around_a_cut() {
    // Without keepalives a cut link is noticed when the neighbour's information ages out
    // (3 × hello = 6 s after its last BPDU).
    ring(&[], "stp");
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn with_keepalives_a_cut_link_fails_over_within_the_detection_time() {
    // Keepalives every 200 ms × 3: the dead peer's tree information is dropped at once.
    ring(&["--keepalive-interval", "200"], "stp+keepalive 200 ms x 3");
}

fn ring(extra: &[&str], label: &str) {
    let tb = Testbed::new(3).expect("building testbed");
    let start = Instant::now();
    let sw: Vec<Switch> = (0..3)
        .map(|i| {
            let mut o = SwitchOptions::default();
            o.extra_args.push("--stp".into());
            o.extra_args.extend(extra.iter().map(|s| s.to_string()));
            if i == 0 {
                // Host a is the root whatever the TAPs' random MACs are.
                o.extra_args
                    .extend(["--stp-priority".into(), "4096".into()]);
            }
            tb.start_switch_with(i, &o).expect("starting switch")
        })
        .collect();
    let h = tb.hosts();
    let root_id = show(&sw[0]).stp.expect("stp info on a").bridge_id;
    assert!(
        root_id.starts_with("1000."),
        "priority 4096 is 0x1000: {root_id}"
    );

    let t = wait_for(Duration::from_secs(20), || converged(&sw, &root_id)).unwrap_or_else(|| {
        panic!(
            "no convergence: {:?}",
            sw.iter().map(tree).collect::<Vec<_>>()
        )
    });
    eprintln!(
        "{label}: converged {} ms after the switches were ready ({} ms after the first started)",
        t.as_millis(),
        start.elapsed().as_millis()
    );
    // The blocked end is on the b–c link (a, the root, forwards on both its tunnels).
    let blocked = (1..3)
        .find(|&i| tree(&sw[i]).iter().any(|(_, r, _)| r == "alternate"))
        .expect("a switch with an alternate port");
    let other = 3 - blocked;
    let tb_blocked = tree(&sw[blocked]);
    assert!(tb_blocked.contains(&(
        h[other].underlay_ip,
        "alternate".into(),
        "discarding".into()
    )));
    assert!(tb_blocked.contains(&(h[0].underlay_ip, "root".into(), "forwarding".into())));

    // The operator's view: `dnetctl show` names the blocked tunnel's role and state.
    let dnetctl = dnet_testbed::switch_binary()
        .expect("switch binary")
        .with_file_name("dnetctl");
    let out = Command::new(&dnetctl)
        .args(["show", "--socket"])
        .arg(&sw[blocked].socket)
        .output()
        .expect("running dnetctl show");
    let txt = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "{label}: dnetctl show on host {}:\n{txt}",
        h[blocked].letter
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        txt.contains("alternate/discarding") && txt.contains("root/forwarding"),
        "{txt}"
    );
    // BPDUs arrived on both tunnels: they show as active even before any data.
    assert!(!txt.contains("silent"), "{txt}");
    all_pairs_ping(h);
    // Let the start-up topology changes run out (TC is carried for 2 × hello = 4 s and makes
    // every switch forget its tunnel stations, so unicast would flood meanwhile).
    wait_for(Duration::from_secs(15), || {
        sw.iter().all(|s| {
            show(s)
                .stp
                .is_some_and(|t| t.last_change_secs.is_some_and(|x| x >= 5))
        })
    })
    .expect("topology changes never stopped");
    all_pairs_ping(h);

    // Broadcasts: each other container gets exactly one copy, and each costs exactly three
    // tunnel frames (two tree links, plus the designated end of the blocked link, whose far
    // end discards it).
    let before = settled_stats(&[&sw[0], &sw[1], &sw[2]]);
    const ROUNDS: u64 = 5;
    for _ in 0..ROUNDS {
        assert_each_broadcast_arrives_once(h, Duration::from_millis(300));
    }
    let after = settled_stats(&[&sw[0], &sw[1], &sw[2]]);
    let sent: u64 = (0..3)
        .map(|i| tunnel_totals(&after[i]).1 - tunnel_totals(&before[i]).1)
        .sum();
    let discarded = drop_count(&after[blocked], "stp_discarding")
        - drop_count(&before[blocked], "stp_discarding");
    eprintln!(
        "{label}: {} broadcasts -> {sent} tunnel frames, {discarded} discarded at the blocked end",
        3 * ROUNDS
    );
    // A loop would multiply these without bound. A little slack: a container may revalidate
    // a neighbour entry (ARP) while the broadcasts run.
    let n = 3 * ROUNDS;
    assert!(
        (3 * n..=3 * n + 6).contains(&sent),
        "{sent} tunnel frames for {n} broadcasts (3 each expected)"
    );
    assert!(
        (n..=n + 2).contains(&discarded),
        "{discarded} frames discarded at the blocked end for {n} broadcasts"
    );

    // Cut the blocked switch's root link: its alternate tunnel must take over.
    let changes_before = show(&sw[0]).stp.expect("stp").topology_changes;
    cut(&h[0], &h[blocked], true);
    let t0 = Instant::now();
    let failover = wait_for(PROTOCOL_BOUND, || {
        tree(&sw[blocked]).contains(&(h[other].underlay_ip, "root".into(), "forwarding".into()))
    })
    .unwrap_or_else(|| panic!("no failover: {:?}", tree(&sw[blocked])));
    let reach = wait_for(PROTOCOL_BOUND, || {
        ping(
            &h[blocked].container_ns,
            h[0].container_ip,
            1,
            Duration::from_millis(300),
        )
        .is_ok_and(|r| r.received == 1)
    })
    .expect("container behind the cut link never reached a's again");
    let _ = reach;
    eprintln!(
        "{label}: link a–{} cut: alternate forwarding after {} ms, ping a's container answered {} ms after the cut",
        h[blocked].letter,
        failover.as_millis(),
        t0.elapsed().as_millis()
    );
    all_pairs_ping(h);
    let heard = wait_for(Duration::from_secs(10), || {
        show(&sw[0]).stp.expect("stp").topology_changes > changes_before
    })
    .expect("the root never heard of the topology change");
    eprintln!(
        "{label}: the root counted the topology change {} ms after the pings",
        heard.as_millis()
    );
    assert_each_broadcast_arrives_once(h, Duration::from_millis(300));

    // Restore it: the direct path wins again.
    cut(&h[0], &h[blocked], false);
    let back = wait_for(PROTOCOL_BOUND, || {
        converged(&sw, &root_id)
            && tree(&sw[blocked]).contains(&(h[0].underlay_ip, "root".into(), "forwarding".into()))
    })
    .unwrap_or_else(|| panic!("no return: {:?}", sw.iter().map(tree).collect::<Vec<_>>()));
    eprintln!(
        "{label}: link restored: tree back to the direct path after {} ms",
        back.as_millis()
    );
    all_pairs_ping(h);
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn a_partial_mesh_forwards_through_the_middle_host() {
    // a — b — c: a and c are not peers; with --stp, b forwards tunnel to tunnel.
    let tb = Testbed::new(3).expect("building testbed");
    let h = tb.hosts();
    let peers = [
        vec![h[1].underlay_ip],
        vec![h[0].underlay_ip, h[2].underlay_ip],
        vec![h[1].underlay_ip],
    ];
    let sw: Vec<Switch> = (0..3)
        .map(|i| {
            let o = SwitchOptions {
                peers: Some(peers[i].clone()),
                extra_args: vec!["--stp".into()],
                ..SwitchOptions::default()
            };
            tb.start_switch_with(i, &o).expect("starting switch")
        })
        .collect();
    let t = wait_for(Duration::from_secs(20), || {
        sw.iter()
            .flat_map(tree)
            .all(|(_, _, state)| state == "forwarding")
    })
    .unwrap_or_else(|| {
        panic!(
            "no convergence: {:?}",
            sw.iter().map(tree).collect::<Vec<_>>()
        )
    });
    eprintln!(
        "stp line a-b-c: all four tunnel ends forwarding after {} ms",
        t.as_millis()
    );
    let r = ping(
        &h[0].container_ns,
        h[2].container_ip,
        5,
        Duration::from_secs(2),
    )
    .expect("ping a->c");
    assert_eq!(r.received, 5, "a -> c through b");
    let counts = udp_broadcast(
        &h[0].container_ns,
        CONTAINER_BROADCAST,
        9999,
        &[&h[1].container_ns, &h[2].container_ns],
        Duration::from_millis(500),
    )
    .expect("udp broadcast");
    assert_eq!(counts, vec![1, 1]);
    // b really forwarded tunnel to tunnel: its tunnel to c sent what its tunnel from a got.
    let st = settled_stats(&[&sw[1]]);
    let to_c = dnet_testbed::tunnel_port(&st[0], h[2].underlay_ip).expect("port to c");
    assert!(
        to_c.tx_packets >= 6,
        "b sent {} frames to c",
        to_c.tx_packets
    );

    // Close the ring at run time (`dnetctl peer add` on a and c): the tree must block one
    // end of the new loop at once, and broadcasts still arrive once.
    for (i, peer) in [(0, h[2].underlay_ip), (2, h[0].underlay_ip)] {
        match dnet_proto::request(
            &sw[i].socket,
            &Request::PeerAdd {
                addr: peer,
                key: None,
            },
            Duration::from_secs(3),
        ) {
            Ok(Response::PeerAdded { .. }) => {}
            other => panic!("peer add {peer} on host {}: {other:?}", h[i].letter),
        }
    }
    let t = wait_for(Duration::from_secs(20), || {
        let ends: Vec<_> = sw.iter().flat_map(tree).collect();
        ends.len() == 6
            && ends.iter().filter(|(_, r, _)| r == "alternate").count() == 1
            && ends.iter().filter(|(_, _, s)| s == "forwarding").count() == 5
    })
    .unwrap_or_else(|| {
        panic!(
            "ring not converged: {:?}",
            sw.iter().map(tree).collect::<Vec<_>>()
        )
    });
    eprintln!(
        "stp: ring closed at run time, one end blocked after {} ms",
        t.as_millis()
    );
    assert_each_broadcast_arrives_once(h, Duration::from_millis(300));
}
