//! A fleet without peer lists, end to end: real etcd on the testbed's underlay, real
//! dnet-switches started with `--etcd URLS --network NAME` and no `--peer`, real dnetctl
//! creating the network and attaching containers with addresses the switches allocate.
//!
//! Times asserted here are generous bounds that say "it happened"; the measured figures are
//! printed (`cargo test -p dnet-e2e --test fleet -- --nocapture`).

use dnet_e2e::fleet_support::{
    attach, create_network, dnetctl, dnetctl_ok, fleet, fleet_switch, in_cidr, paced_ping, peers,
    show, tunnels, wait_etcd_peers, wait_for, Etcd, TTL,
};
use dnet_testbed::traffic::ping;
use dnet_testbed::{Switch, Testbed};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const NET: &str = "blue";
const SUBNET: &str = "10.78.0.0/16";
/// Long enough for a loaded CI machine; the figures printed are what counts.
const JOIN: Duration = Duration::from_secs(20);

/// Starts the switch of every host in `which` at once (spawned back to back, then waited for).
fn start_all(tb: &Testbed, etcd: &Etcd, which: &[usize]) -> Vec<Switch> {
    let opts = fleet_switch(etcd, NET, &[]);
    let spawned: Vec<Switch> = which
        .iter()
        .map(|&i| tb.spawn_switch(i, &opts).expect("spawn switch"))
        .collect();
    for sw in &spawned {
        sw.wait_ready(JOIN).expect("switch ready");
    }
    spawned
}

fn underlays(tb: &Testbed, which: &[usize]) -> BTreeSet<Ipv4Addr> {
    which.iter().map(|&i| tb.host(i).underlay_ip).collect()
}

/// Waits until every switch has a tunnel (origin etcd) to every other and to no one else;
/// returns how long that took.
fn wait_full_mesh(tb: &Testbed, switches: &[&Switch]) -> Duration {
    let t0 = Instant::now();
    let all: Vec<usize> = switches.iter().map(|s| s.host).collect();
    for sw in switches {
        let mut want = underlays(tb, &all);
        want.remove(&tb.host(sw.host).underlay_ip);
        wait_etcd_peers(sw, &want, JOIN);
    }
    t0.elapsed()
}

/// Polls every switch of `switches` until none has a tunnel to `gone`; returns, per switch,
/// how long after `since` it was first seen without it. Panics after `timeout`.
fn wait_dropped(
    switches: &[&Switch],
    gone: Ipv4Addr,
    timeout: Duration,
    since: Instant,
) -> Vec<Duration> {
    let mut seen: Vec<Option<Duration>> = vec![None; switches.len()];
    let ok = wait_for(timeout, || {
        for (i, sw) in switches.iter().enumerate() {
            if seen[i].is_none() && !peers(sw).contains(&gone) {
                seen[i] = Some(since.elapsed());
            }
        }
        seen.iter().all(Option::is_some)
    });
    assert!(ok, "tunnels to {gone} still up after {timeout:?}: {seen:?}");
    seen.into_iter().flatten().collect()
}

fn ranges_disjoint(ranges: &[String]) -> bool {
    let first = |r: &str| r.split('/').next().unwrap().parse::<Ipv4Addr>().unwrap();
    ranges.iter().enumerate().all(|(i, a)| {
        ranges[i + 1..]
            .iter()
            .all(|b| !in_cidr(first(b), a) && !in_cidr(first(a), b))
    })
}

/// Pings every container from every other one (one echo each, in parallel per source);
/// returns the pairs that got no reply.
fn unreachable_pairs(containers: &[(String, Ipv4Addr)]) -> Vec<(String, Ipv4Addr)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = containers
            .iter()
            .map(|(ns, own)| {
                s.spawn(move || {
                    let mut lost = Vec::new();
                    for (_, dst) in containers.iter().filter(|(_, a)| a != own) {
                        // A first echo may wait for ARP across the overlay: allow a retry.
                        let r = ping(ns, *dst, 2, Duration::from_secs(1)).expect("ping");
                        if r.received == 0 {
                            lost.push((ns.clone(), *dst));
                        }
                    }
                    lost
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("ping thread"))
            .collect()
    })
}

/// Eight hosts join one network with no `--peer`; every container reaches every other; the
/// ranges are disjoint and `attach` without an address gives each container an address from
/// its host's range. A switch killed with SIGKILL loses its tunnels on the others within the
/// TTL, gets its range back when restarted, and is reached again.
#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn eight_hosts_join_without_peers_and_a_crashed_host_leaves_and_returns() {
    let tb = Testbed::new(8).expect("testbed");
    let etcd = Etcd::single(&tb);
    create_network(&etcd, NET, SUBNET, &["--key", "7"]);

    // A flag that contradicts the network is refused, naming both values.
    let bad = tb
        .spawn_switch(0, &fleet_switch(&etcd, NET, &["--key", "9"]))
        .expect("spawn");
    let st = bad.wait_exit(JOIN).expect("refused switch exits");
    assert_eq!(st.code(), Some(1), "{}", bad.stderr());
    assert!(
        bad.stderr()
            .contains("--key 9 contradicts network blue's key 7: drop --key or set it to 7"),
        "{}",
        bad.stderr()
    );

    // Eight switches started at once.
    let all: Vec<usize> = (0..8).collect();
    let spawned_at = Instant::now();
    let switches = start_all(&tb, &etcd, &all);
    let refs: Vec<&Switch> = switches.iter().collect();
    let mesh = wait_full_mesh(&tb, &refs);
    eprintln!(
        "full mesh of 8 within {:?} of the first start ({:?} after all answered)",
        spawned_at.elapsed(),
        mesh
    );
    let infos: Vec<_> = switches.iter().map(fleet).collect();
    let ranges: Vec<String> = infos.iter().map(|f| f.range.clone().unwrap()).collect();
    assert!(ranges_disjoint(&ranges), "ranges overlap: {ranges:?}");
    assert!(ranges
        .iter()
        .all(|r| in_cidr(r.split('/').next().unwrap().parse().unwrap(), SUBNET)));
    let races: u64 = infos.iter().map(|f| f.counters.claim_conflicts).sum();
    eprintln!("ranges {ranges:?}; claim transactions lost to a racing host: {races}");
    for (sw, f) in switches.iter().zip(&infos) {
        assert_eq!(f.network, NET);
        assert_eq!(f.host, tb.host(sw.host).underlay_ip.to_string());
        assert_eq!(f.unreachable_secs, None);
        assert_eq!(show(sw).gre.key, Some(7), "the network's key is used");
    }

    // attach without an address: each container gets one from its host's range.
    let mut containers = Vec::new();
    for (sw, f) in switches.iter().zip(&infos) {
        let h = tb.host(sw.host);
        let c = tb
            .add_extra_netns(&format!("{}x", h.letter))
            .expect("netns");
        let a = attach(&h.ns, sw, &c, None);
        assert_eq!(a.prefix, 16, "the subnet's prefix");
        assert_eq!(a.range.as_deref(), f.range.as_deref());
        assert!(
            in_cidr(a.address, f.range.as_ref().unwrap()),
            "{} not in {:?}",
            a.address,
            f.range
        );
        containers.push((c, a.address, a.mac));
    }
    let addrs: BTreeSet<Ipv4Addr> = containers.iter().map(|c| c.1).collect();
    assert_eq!(
        addrs.len(),
        8,
        "addresses not all different: {containers:?}"
    );

    let pairs: Vec<(String, Ipv4Addr)> =
        containers.iter().map(|(n, a, _)| (n.clone(), *a)).collect();
    let lost = unreachable_pairs(&pairs);
    assert!(lost.is_empty(), "no reply between {lost:?}");

    // kill -9 of host d's switch: the others drop its tunnel (and what they learned through
    // it) once its lease ends.
    let victim = 3;
    let gone = tb.host(victim).underlay_ip;
    let victim_mac = containers[victim].2.clone();
    for sw in switches.iter().filter(|s| s.host != victim) {
        let fdb = dnetctl_ok(
            &tb.host(sw.host).ns,
            &["fdb", "show", "--socket", &sw.socket.display().to_string()],
        );
        assert!(
            fdb.contains(&victim_mac),
            "{victim_mac} not learned:\n{fdb}"
        );
    }
    let killed = Instant::now();
    switches[victim].signal(libc::SIGKILL).expect("kill -9");
    let others: Vec<&Switch> = switches.iter().filter(|s| s.host != victim).collect();
    let dropped = wait_dropped(&others, gone, Duration::from_secs(TTL + 10), killed);
    eprintln!(
        "tunnel to the killed switch dropped by the 7 others {:?} to {:?} after kill -9 (TTL {TTL} s)",
        dropped.iter().min().unwrap(),
        dropped.iter().max().unwrap()
    );
    for sw in &others {
        let fdb = dnetctl_ok(
            &tb.host(sw.host).ns,
            &["fdb", "show", "--socket", &sw.socket.display().to_string()],
        );
        assert!(
            !fdb.contains(&victim_mac),
            "{victim_mac} still learned:\n{fdb}"
        );
    }

    // Restarted, it gets its range back and is reached again.
    let again = tb
        .start_switch_with(victim, &fleet_switch(&etcd, NET, &[]))
        .expect("restart");
    assert_eq!(fleet(&again).range, infos[victim].range, "same range back");
    let mut all_now: Vec<&Switch> = switches.iter().filter(|s| s.host != victim).collect();
    all_now.push(&again);
    wait_full_mesh(&tb, &all_now);
    let to_victim: Vec<(String, Ipv4Addr)> = pairs.clone();
    let lost = unreachable_pairs(&to_victim);
    assert!(
        lost.is_empty(),
        "after the restart, no reply between {lost:?}"
    );

    // detach frees the address; the next attach on that host may get it again.
    let h = tb.host(0);
    let out = dnetctl_ok(
        &h.ns,
        &[
            "detach",
            &containers[0].0,
            "--socket",
            &switches[0].socket.display().to_string(),
            "-j",
        ],
    );
    assert!(
        out.contains(&format!("\"released\":\"{}\"", containers[0].1)),
        "{out}"
    );
    let args: Vec<String> = etcd.args();
    let mut show_net = vec!["network", "show", NET, "-j"];
    show_net.extend(args.iter().map(String::as_str));
    let o = dnetctl(&etcd.ns, &show_net);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("network show -j");
    assert_eq!(v["allocations"], 7, "{v}");
    assert_eq!(v["members"].as_array().map(Vec::len), Some(8), "{v}");

    // Deleting a network with members is refused, naming them.
    let mut del = vec!["network", "delete", NET];
    del.extend(args.iter().map(String::as_str));
    let o = dnetctl(&etcd.ns, &del);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("still has 8 member(s)"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// etcd stopped: traffic among the existing hosts goes on for 60 s with nothing lost beyond
/// noise, and every switch says since when etcd has not answered. etcd started again: the
/// switches see it again, and a ninth host joins and is reached by all.
#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn etcd_outage_keeps_traffic_and_a_ninth_host_joins_after() {
    let tb = Testbed::new(9).expect("testbed");
    let mut etcd = Etcd::single(&tb);
    create_network(&etcd, NET, SUBNET, &[]);
    let eight: Vec<usize> = (0..8).collect();
    let switches = start_all(&tb, &etcd, &eight);
    let refs: Vec<&Switch> = switches.iter().collect();
    wait_full_mesh(&tb, &refs);
    let containers: Vec<(String, Ipv4Addr)> = switches
        .iter()
        .map(|sw| {
            let h = tb.host(sw.host);
            let c = tb
                .add_extra_netns(&format!("{}x", h.letter))
                .expect("netns");
            let a = attach(&h.ns, sw, &c, None);
            (c, a.address)
        })
        .collect();
    let flows: Vec<(&str, Ipv4Addr)> = (0..4)
        .map(|k| (containers[2 * k].0.as_str(), containers[2 * k + 1].1))
        .collect();
    for (ns, dst) in &flows {
        let r = ping(ns, *dst, 3, Duration::from_secs(1)).expect("ping");
        assert!(
            r.received > 0,
            "{ns} does not reach {dst} before the outage"
        );
    }

    etcd.kill(0);
    let down = Instant::now();
    for sw in &switches {
        assert!(
            wait_for(Duration::from_secs(15), || fleet(sw)
                .unreachable_secs
                .is_some()),
            "switch in {} does not report etcd unreachable\n{}",
            sw.ns,
            sw.stderr()
        );
    }
    eprintln!(
        "all switches report etcd unreachable {:?} after it was killed",
        down.elapsed()
    );
    // 60 s of echoes at 10 per second on four flows between different hosts.
    let count = 600;
    let results: Vec<(u32, u32)> = std::thread::scope(|s| {
        let h: Vec<_> = flows
            .iter()
            .map(|(ns, dst)| {
                s.spawn(move || paced_ping(ns, *dst, count, Duration::from_millis(100)))
            })
            .collect();
        h.into_iter()
            .map(|h| h.join().expect("ping thread"))
            .collect()
    });
    let sent: u32 = results.iter().map(|r| r.0).sum();
    let lost: u32 = results.iter().map(|r| r.0 - r.1).sum();
    let outage = down.elapsed();
    eprintln!(
        "etcd down for {outage:?}: {lost} of {sent} echoes lost ({:.3} %), per flow {results:?}",
        f64::from(lost) * 100.0 / f64::from(sent)
    );
    assert_eq!(sent, 4 * count);
    assert!(
        lost * 200 <= sent,
        "more than 0.5 % lost while etcd was down: {results:?}"
    );
    for sw in &switches {
        let f = fleet(sw);
        assert!(
            // Since when: about since etcd was killed (whole seconds, sampled).
            f.unreachable_secs
                .is_some_and(|s| s + 2 >= down.elapsed().as_secs()),
            "switch in {}: {f:?}",
            sw.ns
        );
        assert_eq!(peers(sw).len(), 7, "switch in {} lost tunnels", sw.ns);
        let text = dnetctl_ok(
            &tb.host(sw.host).ns,
            &["show", "--socket", &sw.socket.display().to_string()],
        );
        assert!(text.contains("UNREACHABLE for "), "{text}");
    }

    etcd.restart(0);
    let up = Instant::now();
    for sw in &switches {
        assert!(
            wait_for(Duration::from_secs(30), || fleet(sw)
                .unreachable_secs
                .is_none()),
            "switch in {} does not see etcd again\n{}",
            sw.ns,
            sw.stderr()
        );
    }
    eprintln!(
        "all switches reach etcd again {:?} after its restart",
        up.elapsed()
    );

    let ninth = tb
        .start_switch_with(8, &fleet_switch(&etcd, NET, &[]))
        .expect("ninth switch");
    let mut all: Vec<&Switch> = switches.iter().collect();
    all.push(&ninth);
    eprintln!(
        "full mesh of 9 {:?} after the ninth answered",
        wait_full_mesh(&tb, &all)
    );
    let h = tb.host(8);
    let c = tb
        .add_extra_netns(&format!("{}x", h.letter))
        .expect("netns");
    let a = attach(&h.ns, &ninth, &c, None);
    for (ns, _) in &containers {
        let r = ping(ns, a.address, 3, Duration::from_secs(1)).expect("ping");
        assert!(
            r.received > 0,
            "{ns} does not reach the ninth host's {}",
            a.address
        );
    }
}

/// `--etcd` lists every member of a 3-member etcd cluster; with one member killed mid-test,
/// joins, departures and allocations go on through the other two.
#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn a_three_member_etcd_with_one_member_killed_keeps_the_fleet_working() {
    let tb = Testbed::new(4).expect("testbed");
    let mut etcd = Etcd::cluster(&tb, 3);
    create_network(&etcd, NET, SUBNET, &[]);
    let three = start_all(&tb, &etcd, &[0, 1, 2]);
    let refs: Vec<&Switch> = three.iter().collect();
    wait_full_mesh(&tb, &refs);

    // The first URL is the member every client starts with.
    etcd.kill(0);
    let killed = Instant::now();

    // A join, by a host that also has a static --peer (to a): that tunnel stays a flag
    // tunnel beside the etcd ones.
    let a_ip = tb.host(0).underlay_ip.to_string();
    let d = tb
        .start_switch_with(3, &fleet_switch(&etcd, NET, &["--peer", &a_ip]))
        .expect("fourth switch joins through the other members");
    let all: Vec<&Switch> = three.iter().chain([&d]).collect();
    let joined = wait_for(JOIN, || {
        all.iter().all(|s| {
            let mut want = underlays(&tb, &[0, 1, 2, 3]);
            want.remove(&tb.host(s.host).underlay_ip);
            peers(s) == want
        })
    });
    assert!(joined, "no full mesh with the fourth host\n{}", d.stderr());
    eprintln!(
        "a fourth host joined {:?} after etcd member 0 was killed",
        killed.elapsed()
    );
    let want: BTreeSet<(Ipv4Addr, String)> = (0..3)
        .map(|i| {
            let o = if i == 0 { "flag" } else { "etcd" };
            (tb.host(i).underlay_ip, o.to_string())
        })
        .collect();
    assert_eq!(tunnels(&d), want, "origins of the fourth host's tunnels");

    // An allocation, on a host whose switch was pinned to the dead member (once it has
    // found the others: the kill may cost an election).
    for sw in &all {
        assert!(
            wait_for(JOIN, || fleet(sw).unreachable_secs.is_none()),
            "switch in {} does not find the other etcd members\n{}",
            sw.ns,
            sw.stderr()
        );
    }
    let h = tb.host(0);
    let c = tb.add_extra_netns("ax").expect("netns");
    let a = attach(&h.ns, &three[0], &c, None);
    assert!(in_cidr(a.address, fleet(&three[0]).range.as_ref().unwrap()));
    let hd = tb.host(3);
    let cd = tb.add_extra_netns("dx").expect("netns");
    let ad = attach(&hd.ns, &d, &cd, None);
    let r = ping(&c, ad.address, 3, Duration::from_secs(1)).expect("ping");
    assert!(r.received > 0, "{c} does not reach {}", ad.address);

    // A departure: c stops; a, b and d drop its tunnel once its lease ends.
    let gone = tb.host(2).underlay_ip;
    three[2].terminate(Duration::from_secs(10)).expect("stop c");
    let stopped = Instant::now();
    let rest: Vec<&Switch> = [&three[0], &three[1], &d].into_iter().collect();
    let dropped = wait_dropped(&rest, gone, Duration::from_secs(TTL + 10), stopped);
    eprintln!(
        "with etcd member 0 dead, a departure reached the others {:?} after the switch stopped",
        dropped.iter().max().unwrap()
    );
    for sw in &rest {
        assert_eq!(fleet(sw).unreachable_secs, None, "switch in {}", sw.ns);
    }
}

/// TLS etcd with certificates the test generates (client certificates required), then etcd
/// with user and password: switches and dnetctl reach both; a wrong password is refused with
/// a message that names the user.
#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn tls_and_password_protected_etcd() {
    let tb = Testbed::new(3).expect("testbed");
    {
        let etcd = Etcd::tls(&tb);
        assert!(etcd.endpoints().starts_with("https://"));
        create_network(&etcd, NET, SUBNET, &["--encap", "udp"]);
        let sw = start_all(&tb, &etcd, &[0, 1]);
        let refs: Vec<&Switch> = sw.iter().collect();
        wait_full_mesh(&tb, &refs);
        assert_eq!(show(&sw[0]).gre.udp_port, Some(4754), "the network's encap");
        let c = tb.add_extra_netns("ax").expect("netns");
        let a = attach(&tb.host(0).ns, &sw[0], &c, None);
        let c2 = tb.add_extra_netns("bx").expect("netns");
        let b = attach(&tb.host(1).ns, &sw[1], &c2, None);
        let r = ping(&c, b.address, 3, Duration::from_secs(1)).expect("ping");
        assert!(r.received > 0, "no reply over TLS-configured fleet");
        assert!(a.range.is_some());
        for s in &sw {
            s.terminate(Duration::from_secs(10)).expect("stop");
        }
    }

    // Plain etcd with auth: user root, password from a file.
    let etcd = Etcd::single(&tb);
    etcd.ctl(&["user", "add", "root:s3cret"]);
    etcd.ctl(&["auth", "enable"]);
    let pw = tb.dir().join("etcd-password");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let pw_s = pw.display().to_string();
    let auth = ["--etcd-user", "root", "--etcd-password-file", pw_s.as_str()];
    create_network(&etcd, NET, SUBNET, &auth);
    let mut o = fleet_switch(&etcd, NET, &auth);
    let sw: Vec<Switch> = [0, 1]
        .iter()
        .map(|&i| tb.spawn_switch(i, &o).expect("spawn"))
        .collect();
    for s in &sw {
        s.wait_ready(JOIN).expect("ready");
    }
    let refs: Vec<&Switch> = sw.iter().collect();
    wait_full_mesh(&tb, &refs);
    let bad = tb.dir().join("wrong-password");
    std::fs::write(&bad, "nope\n").unwrap();
    let n = o.extra_args.len();
    o.extra_args[n - 1] = bad.display().to_string();
    let refused = tb.spawn_switch(2, &o).expect("spawn");
    // Refused at once: retrying cannot fix a wrong password.
    let st = refused.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(st.code(), Some(1), "{}", refused.stderr());
    let err = refused.stderr();
    assert!(err.contains("authentication failed"), "{err}");
    assert!(err.contains("joining network blue"), "{err}");
    assert!(
        !err.contains("nope"),
        "the password is never printed: {err}"
    );
}

fn member_json(host: &str, underlay: &str, range: &str, key: u32) -> String {
    serde_json::json!({
        "version": 1, "host": host, "underlay": underlay, "range": range,
        "settings": {"encap": "gre", "key": key}
    })
    .to_string()
}

/// Each kind of hostile or broken record written into etcd reaches no tunnel, is counted (in
/// `dnetctl show -j`), and crashes nothing.
#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn hostile_records_reach_no_tunnel_and_are_counted() {
    let tb = Testbed::new(4).expect("testbed");
    let etcd = Etcd::single(&tb);
    create_network(&etcd, NET, SUBNET, &["--key", "7"]);
    let sw = start_all(&tb, &etcd, &[0, 1]);
    let refs: Vec<&Switch> = sw.iter().collect();
    wait_full_mesh(&tb, &refs);
    let a_range = fleet(&sw[0]).range.unwrap();
    // Host c (10.200.0.3) exists on the underlay and runs no switch: every record below
    // names it, so a tunnel to it would be a tunnel to a non-member.
    let c = "10.200.0.3";
    let m = |h: &str| format!("/dnet/networks/{NET}/members/{h}");
    let r = |seg: &str| format!("/dnet/networks/{NET}/ranges/{seg}");
    let puts: Vec<(String, String, &str)> = vec![
        (m("evil-json"), "{not json".into(), "bad_json"),
        (
            m("evil-version"),
            member_json("evil-version", c, "10.78.50.0/24", 7)
                .replace("\"version\":1", "\"version\":9"),
            "unsupported_version",
        ),
        (
            m("evil-host"),
            member_json("someone-else", c, "10.78.51.0/24", 7),
            "host_mismatch",
        ),
        (
            m("evil-addr"),
            member_json("evil-addr", "10.200.0.3.1", "10.78.52.0/24", 7),
            "not_an_address",
        ),
        (
            r("10.78.53.0-24"),
            serde_json::json!({"version": 1, "host": "evil-me"}).to_string(),
            "",
        ),
        (
            m("evil-me"),
            member_json("evil-me", "10.200.0.1", "10.78.53.0/24", 7),
            "claims_this_host",
        ),
        (
            m("evil-out"),
            member_json("evil-out", c, "10.99.0.0/24", 7),
            "range_outside_subnet",
        ),
        (
            m("evil-overlap"),
            member_json("evil-overlap", c, &a_range, 7),
            "range_overlap",
        ),
        (
            m("evil-unclaimed"),
            member_json("evil-unclaimed", c, "10.78.56.0/24", 7),
            "range_not_claimed",
        ),
        (
            r("10.78.57.0-24"),
            serde_json::json!({"version": 1, "host": "evil-settings"}).to_string(),
            "",
        ),
        (
            m("evil-settings"),
            member_json("evil-settings", c, "10.78.57.0/24", 9),
            "settings_mismatch",
        ),
        (r("garbage"), "{}".into(), "bad_key"),
        (r("10.99.1.0-24"), "{}".into(), "range_outside_subnet"),
    ];
    for (k, v, _) in &puts {
        etcd.ctl(&["put", k, v]);
    }
    // A legitimate host joins after them: once a has its tunnel, a has judged them all.
    let d = tb
        .start_switch_with(3, &fleet_switch(&etcd, NET, &[]))
        .expect("fourth switch");
    let all: Vec<&Switch> = sw.iter().chain([&d]).collect();
    wait_full_mesh(&tb, &all);
    let f = fleet(&sw[0]);
    for (k, _, kind) in puts.iter().filter(|p| !p.2.is_empty()) {
        assert!(
            f.rejected.get(*kind).copied().unwrap_or(0) >= 1,
            "{k}: {kind} not counted: {:?}",
            f.rejected
        );
    }
    // b sees "evil-me" (its range claimed) as a second member with a's underlay.
    assert!(fleet(&sw[1]).rejected["duplicate_underlay"] >= 1);
    for s in &all {
        assert!(
            !peers(s).contains(&c.parse().unwrap()),
            "switch in {} tunnels to non-member {c}",
            s.ns
        );
        assert_eq!(s.try_status().unwrap(), None, "switch in {} died", s.ns);
    }
    // The counts are in `dnetctl show -j` as the operator reads them.
    let j = dnetctl_ok(
        &tb.host(0).ns,
        &[
            "show",
            "-j",
            "--socket",
            &sw[0].socket.display().to_string(),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert!(
        v["fleet"]["rejected"]["bad_json"].as_u64() >= Some(1),
        "{v}"
    );
}
