//! The cluster crate against a real etcd (Debian's 3.4), each test with its own etcd in its
//! own network namespace. Agents use fake underlay addresses (10.200.0.x): the cluster layer
//! never sends to them.

mod fixture;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use dnet_cluster::{
    Admin, Agent, AgentConfig, ClusterError, Encap, EtcdOptions, LocalSettings, NetworkSpec,
    PlanError, Settings,
};
use fixture::{wait_for, Etcd, Peers};

const NET: &str = "blue";
const WAIT: Duration = Duration::from_secs(20);

fn underlay(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 200, 0, i)
}

fn spec(subnet: &str) -> NetworkSpec {
    NetworkSpec {
        subnet: subnet.parse().unwrap(),
        host_prefix: 24,
        settings: Settings {
            key: Some(7),
            ..Default::default()
        },
    }
}

/// An agent config with a 2 s TTL (etcd's minimum) so lease tests stay short.
fn agent_config(opts: &EtcdOptions, i: u8) -> AgentConfig {
    let mut c = AgentConfig::new(opts.clone(), NET, underlay(i));
    c.ttl = Duration::from_secs(2);
    c.join_timeout = Duration::from_secs(15);
    c.backoff_base = Duration::from_millis(100);
    c.backoff_cap = Duration::from_millis(1000);
    c
}

fn start_agent(cfg: AgentConfig) -> (Agent, Peers) {
    let (tx, rx) = mpsc::channel();
    let a = Agent::start(cfg, Box::new(tx)).expect("agent joins");
    (a, Peers::new(rx))
}

fn ranges_disjoint(ranges: &[ipnet::Ipv4Net]) -> bool {
    ranges.iter().enumerate().all(|(i, a)| {
        ranges[i + 1..]
            .iter()
            .all(|b| !a.contains(b) && !b.contains(a))
    })
}

#[test]
#[cfg_attr(not(dnet_cluster_root), ignore = "needs root: run cargo test as root")]
fn network_admin_create_list_show_delete_leave() {
    let etcd = Etcd::single();
    etcd.run(|| {
        let opts = etcd.options();
        let admin = Admin::connect(&opts).unwrap();
        let rec = admin.create_network(NET, &spec("10.77.0.0/16")).unwrap();
        assert_eq!(rec.host_prefix, 24);
        assert!(matches!(
            admin.create_network(NET, &spec("10.77.0.0/16")),
            Err(ClusterError::NetworkExists { .. })
        ));
        let e = admin
            .create_network("red", &spec("10.78.0.1/16"))
            .unwrap_err();
        assert!(
            matches!(e, ClusterError::Plan(PlanError::HostBits { .. })),
            "{e}"
        );
        let mut bad_prefix = spec("10.78.0.0/16");
        bad_prefix.host_prefix = 8;
        assert!(matches!(
            admin.create_network("red", &bad_prefix),
            Err(ClusterError::Plan(PlanError::HostPrefix { .. }))
        ));
        let mut udp = spec("10.78.0.0/16");
        udp.settings.encap = Encap::Udp;
        let red = admin.create_network("red", &udp).unwrap();
        assert_eq!(red.settings.udp_port, Some(4754));
        assert!(matches!(
            admin.create_network("a/b", &udp),
            Err(ClusterError::BadName { .. })
        ));

        let list = admin.list_networks().unwrap();
        let names: Vec<&str> = list.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["blue", "red"]);
        assert_eq!(list[1].config.as_ref().unwrap().settings.encap, Encap::Udp);

        // Joining: an absent network and a contradicting flag are refused, naming the fix.
        let (tx, _rx) = mpsc::channel();
        let mut cfg = agent_config(&opts, 1);
        cfg.network = "green".into();
        let e = Agent::start(cfg, Box::new(tx.clone())).err().unwrap();
        assert!(
            e.to_string().contains("dnetctl network create green"),
            "{e}"
        );
        let mut cfg = agent_config(&opts, 1);
        cfg.settings = LocalSettings {
            key: Some(9),
            ..Default::default()
        };
        let e = Agent::start(cfg, Box::new(tx)).err().unwrap();
        assert_eq!(
            e.to_string(),
            "--key 9 contradicts network blue's key 7: drop --key or set it to 7"
        );

        let (a, _pa) = start_agent(agent_config(&opts, 1));
        let (b, _pb) = start_agent(agent_config(&opts, 2));
        assert_eq!(a.joined().range, "10.77.0.0/24".parse().unwrap());
        assert_eq!(a.joined().gateway, Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(a.joined().settings.key, Some(7));
        assert_eq!(b.joined().range, "10.77.1.0/24".parse().unwrap());
        let addr = admin.allocate(NET, "10.200.0.2", "c1").unwrap();
        assert_eq!(addr, Ipv4Addr::new(10, 77, 1, 2));

        let info = admin.show_network(NET).unwrap();
        assert_eq!(info.members.len(), 2);
        assert_eq!(info.members[0].host, "10.200.0.1");
        assert_eq!(info.members[0].software, env!("CARGO_PKG_VERSION"));
        assert!(info.members[0].ttl_left_secs.is_some_and(|t| t <= 2));
        assert!(info.members[0].last_seen_secs.is_some_and(|t| t <= 2));
        assert_eq!(info.claims.len(), 2);
        assert!(info.claims[0].ttl_left_secs.is_some_and(|t| t > 3600));
        assert_eq!(info.allocations, 1);
        assert!(info.rejected.is_empty(), "{:?}", info.rejected);
        assert_eq!(admin.list_networks().unwrap()[0].members, 2);

        // Delete is refused while members exist, and names them.
        let e = admin.delete_network(NET, false).unwrap_err();
        match &e {
            ClusterError::HasMembers { members, .. } => {
                assert_eq!(members, &["10.200.0.1", "10.200.0.2"])
            }
            other => panic!("{other}"),
        }
        assert!(matches!(
            admin.delete_network("nope", false),
            Err(ClusterError::NoNetwork { .. })
        ));

        // Leave: B stops, then releases member record, range and allocation.
        b.stop();
        let left = admin.leave(NET, "10.200.0.2").unwrap();
        assert!(left.member);
        assert_eq!(left.ranges, vec!["10.77.1.0/24".parse().unwrap()]);
        assert_eq!(left.allocations, vec![addr]);
        assert!(admin.allocations(NET, None).unwrap().is_empty());
        assert_eq!(admin.show_network(NET).unwrap().claims.len(), 1);

        // A stops; once its lease ends the network has no member and deletes without force.
        a.stop();
        assert!(wait_for(WAIT, || admin
            .show_network(NET)
            .unwrap()
            .members
            .is_empty()));
        let d = admin.delete_network(NET, false).unwrap();
        assert!(d.keys >= 2, "{d:?}");
        // The range claim of A went with it.
        assert!(etcd
            .ctl(&["get", "--prefix", "/dnet/networks/blue/"])
            .is_empty());

        // --force deletes with members present and revokes the range leases.
        let (c, _pc) = start_agent({
            let mut c = agent_config(&opts, 3);
            c.network = "red".into();
            c
        });
        admin.allocate("red", "10.200.0.3", "x").unwrap();
        let d = admin.delete_network("red", true).unwrap();
        assert_eq!(d.leases_revoked, 1);
        assert!(d.keys >= 4, "{d:?}");
        assert!(admin.list_networks().unwrap().is_empty());
        // The agent sees its network gone and says so.
        assert!(wait_for(WAIT, || c.status().network_absent));
        c.stop();
    });
}

#[test]
#[cfg_attr(not(dnet_cluster_root), ignore = "needs root: run cargo test as root")]
fn eight_agents_started_at_once_hold_disjoint_ranges_and_see_each_other() {
    let etcd = Etcd::single();
    etcd.run(|| {
        let opts = etcd.options();
        let admin = Admin::connect(&opts).unwrap();
        admin.create_network(NET, &spec("10.77.0.0/16")).unwrap();
        let barrier = Arc::new(Barrier::new(8));
        let t0 = Instant::now();
        let mut agents: Vec<(Agent, Peers)> = std::thread::scope(|s| {
            let hs: Vec<_> = (1..=8u8)
                .map(|i| {
                    let cfg = agent_config(&opts, i);
                    let b = barrier.clone();
                    s.spawn(move || {
                        b.wait();
                        start_agent(cfg)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let ranges: Vec<_> = agents.iter().map(|(a, _)| a.joined().range).collect();
        assert!(ranges_disjoint(&ranges), "{ranges:?}");
        assert_eq!(
            ranges.iter().collect::<BTreeSet<_>>().len(),
            8,
            "{ranges:?}"
        );
        for (a, p) in agents.iter_mut() {
            assert!(
                p.wait(WAIT, |p| p.up.len() == 7),
                "{} sees {:?}",
                a.joined().host,
                p.up.keys()
            );
            assert!(!p.up.contains_key(&a.joined().host));
        }
        let conflicts: u64 = agents
            .iter()
            .map(|(a, _)| a.status().counters.claim_conflicts)
            .sum();
        eprintln!(
            "8 agents: full mesh {:?} after the barrier, {conflicts} lost claim races",
            t0.elapsed()
        );

        // Restarted (within its TTL or not), an agent gets its range back.
        let (a8, _) = agents.pop().unwrap();
        let old = a8.joined().range;
        a8.stop();
        let (a8, _p8) = start_agent(agent_config(&opts, 8));
        assert_eq!(a8.joined().range, old);

        // An agent that stops keeping its lease alive leaves the others' view within
        // TTL + 1 s.
        let (a7, _) = agents.pop().unwrap();
        let stopped = Instant::now();
        a7.stop();
        let mut delays = Vec::new();
        for (_, p) in agents.iter_mut() {
            assert!(p.wait(WAIT, |p| !p.up.contains_key("10.200.0.7")));
            let (at, peer) = p.downs.last().expect("a down event");
            assert_eq!(peer.host, "10.200.0.7");
            delays.push(at.duration_since(stopped));
        }
        delays.sort();
        eprintln!(
            "lease end (TTL 2 s) seen by 6 agents after {:?} .. {:?}",
            delays[0],
            delays[delays.len() - 1]
        );
        // No one else went down.
        for (_, p) in agents.iter() {
            assert!(p.downs.iter().all(|(_, d)| d.host == "10.200.0.7"));
        }

        // A newcomer is a peer everywhere shortly after it starts.
        let joined = Instant::now();
        let (a9, _p9) = start_agent(agent_config(&opts, 9));
        let start_took = joined.elapsed();
        let mut delays = Vec::new();
        for (_, p) in agents.iter_mut() {
            assert!(p.wait(WAIT, |p| p.up.contains_key("10.200.0.9")));
            delays.push(joined.elapsed());
        }
        eprintln!(
            "9th agent: Agent::start took {start_took:?}, seen by all 6 within {:?} of its start",
            delays.iter().max().unwrap()
        );
        drop(a9);
        drop(a8);
    });
}

#[test]
#[cfg_attr(not(dnet_cluster_root), ignore = "needs root: run cargo test as root")]
fn allocations_are_unique_under_concurrency_and_survive_an_agent_restart() {
    let etcd = Etcd::single();
    etcd.run(|| {
        let opts = etcd.options();
        let admin = Admin::connect(&opts).unwrap();
        admin.create_network(NET, &spec("10.77.0.0/16")).unwrap();
        let (a, _pa) = start_agent(agent_config(&opts, 1));
        let range = a.joined().range;
        assert!(matches!(
            admin.allocate(NET, "10.200.0.9", "c"),
            Err(ClusterError::NoRange { .. })
        ));

        // 4 threads × 50 containers on one host, each thread with its own client.
        let t0 = Instant::now();
        let got: Vec<(String, Ipv4Addr)> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|t| {
                    let opts = opts.clone();
                    s.spawn(move || {
                        let admin = Admin::connect(&opts).unwrap();
                        (0..50)
                            .map(|i| {
                                let c = format!("c{t}-{i}");
                                let addr = admin.allocate(NET, "10.200.0.1", &c).unwrap();
                                (c, addr)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        eprintln!("200 concurrent allocations in {:?}", t0.elapsed());
        let addrs: BTreeSet<Ipv4Addr> = got.iter().map(|(_, a)| *a).collect();
        assert_eq!(addrs.len(), 200, "an address was handed out twice");
        for a in &addrs {
            assert!(dnet_cluster::ranges::is_container_address(range, *a), "{a}");
        }
        let stored = admin.allocations(NET, Some("10.200.0.1")).unwrap();
        assert_eq!(stored.len(), 200);
        for (c, addr) in &got {
            assert!(stored
                .iter()
                .any(|s| &s.container == c && s.address == *addr));
        }
        // The same container again gets its address back.
        assert_eq!(
            admin.allocate(NET, "10.200.0.1", &got[0].0).unwrap(),
            got[0].1
        );

        // Explicit addresses: checked against the range and against live allocations.
        let last = Ipv4Addr::new(10, 77, 0, 254);
        assert_eq!(
            admin
                .allocate_with(NET, "10.200.0.1", "fixed", Some("web"), Some(last))
                .unwrap(),
            last
        );
        assert!(matches!(
            admin.allocate_with(NET, "10.200.0.1", "dup", None, Some(last)),
            Err(ClusterError::AddressTaken { .. })
        ));
        let e = admin
            .allocate_with(
                NET,
                "10.200.0.1",
                "gw",
                None,
                Some(Ipv4Addr::new(10, 77, 0, 1)),
            )
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("use one from 10.77.0.2 to 10.77.0.254"),
            "{e}"
        );

        // Released addresses are free again; a release of nothing is None.
        let (c0, a0) = got[0].clone();
        assert_eq!(admin.release(NET, "10.200.0.1", &c0).unwrap(), Some(a0));
        assert_eq!(admin.release(NET, "10.200.0.1", &c0).unwrap(), None);
        assert_eq!(admin.release_address(NET, last).unwrap(), Some(last));
        let before = admin.allocations(NET, None).unwrap();
        assert_eq!(before.len(), 199);

        // Restart: same range, allocations untouched, and a new allocation takes no live one.
        a.stop();
        let (a, _pa) = start_agent(agent_config(&opts, 1));
        assert_eq!(a.joined().range, range);
        let after = admin.allocations(NET, None).unwrap();
        assert_eq!(before, after);
        let live: BTreeSet<Ipv4Addr> = after.iter().map(|a| a.address).collect();
        let fresh = admin.allocate(NET, "10.200.0.1", "after-restart").unwrap();
        assert!(!live.contains(&fresh));
        assert_eq!(fresh, a0, "the lowest free address is the released one");
        a.stop();
    });
}

/// A lease id of `key` as etcdctl shows it (decimal in JSON; revoke wants hex).
fn lease_of(etcd: &Etcd, key: &str) -> i64 {
    let out = etcd.ctl(&["get", key, "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["kvs"][0]["lease"].as_i64().expect("key has a lease")
}

#[test]
#[cfg_attr(not(dnet_cluster_root), ignore = "needs root: run cargo test as root")]
fn etcd_outage_keeps_peers_and_recovery_rereads_and_reregisters() {
    let mut etcd = Etcd::single();
    let opts = etcd.options();
    let (a, mut pa, b, mut pb) = etcd.run(|| {
        Admin::connect(&opts)
            .unwrap()
            .create_network(NET, &spec("10.77.0.0/16"))
            .unwrap();
        let (a, mut pa) = start_agent(agent_config(&opts, 1));
        let (b, mut pb) = start_agent(agent_config(&opts, 2));
        assert!(pa.wait(WAIT, |p| p.up.len() == 1));
        assert!(pb.wait(WAIT, |p| p.up.len() == 1));
        (a, pa, b, pb)
    });
    assert!(a.status().unreachable_since.is_none());

    // etcd gone for longer than the TTL: both report it and keep their peer.
    etcd.kill(0);
    let t0 = Instant::now();
    assert!(wait_for(WAIT, || a.status().unreachable_since.is_some()));
    eprintln!("unreachable noticed after {:?}", t0.elapsed());
    // The outage lasts past the 2 s TTL, with several failed reconnects on each side.
    assert!(wait_for(WAIT, || {
        t0.elapsed() > Duration::from_secs(3)
            && a.status().counters.etcd_errors >= 3
            && b.status().counters.etcd_errors >= 3
    }));
    pa.drain();
    pb.drain();
    assert!(
        pa.downs.is_empty() && pb.downs.is_empty(),
        "peer_down while etcd was away"
    );
    assert_eq!(a.status().peers.len(), 1);
    assert!(a.status().last_error.is_some());

    // A host that starts while etcd is away retries, joins once it is back, and from then
    // on says etcd answers (not only after a later failure).
    let ns = etcd.ns.name.clone();
    let late_opts = opts.clone();
    let late = std::thread::spawn(move || {
        let f = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
        // SAFETY: `f` is an open namespace file for the whole call; setns only changes this
        // thread's network namespace.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        start_agent(agent_config(&late_opts, 4))
    });

    // etcd back: both re-read, the outage clears, and a new member is seen by both.
    etcd.restart(0);
    let (d, _pd) = late.join().expect("late agent");
    assert!(d.status().counters.etcd_errors >= 1, "{:?}", d.status());
    assert_eq!(d.status().unreachable_since, None, "{:?}", d.status());
    drop(d);
    etcd.run(|| {
        assert!(wait_for(WAIT, || {
            let (sa, sb) = (a.status(), b.status());
            sa.unreachable_since.is_none()
                && sb.unreachable_since.is_none()
                && sa.counters.reconnects >= 1
                && sb.counters.reconnects >= 1
        }));
        eprintln!("recovered {:?} after the outage began", t0.elapsed());
        let (c, _pc) = start_agent(agent_config(&opts, 3));
        assert!(pa.wait(WAIT, |p| p.up.contains_key("10.200.0.3")));
        assert!(pb.wait(WAIT, |p| p.up.contains_key("10.200.0.3")));
        assert!(pa.downs.is_empty() && pb.downs.is_empty());

        // A's lease ends behind its back (as after a long partition): B sees A leave, A
        // registers again under a new lease and B sees it come back.
        let key = "/dnet/networks/blue/members/10.200.0.1";
        let lease = lease_of(&etcd, key);
        etcd.ctl(&["lease", "revoke", &format!("{lease:x}")]);
        assert!(pb.wait(WAIT, |p| !p.downs.is_empty()));
        assert!(pb.wait(WAIT, |p| p.up.contains_key("10.200.0.1")));
        assert!(wait_for(WAIT, || a.status().counters.lease_reregistrations == 1));
        assert_ne!(lease_of(&etcd, key), lease);
        drop(c);
        a.stop();
        b.stop();
    });
}

/// A membership whose `peer_up` waits while the gate is closed, to hold the agent's thread
/// still at a chosen point.
struct Gated {
    tx: mpsc::Sender<dnet_cluster::MembershipEvent>,
    gate: Arc<Gate>,
}

#[derive(Default)]
struct Gate {
    closed: std::sync::Mutex<bool>,
    cv: std::sync::Condvar,
    waiting: std::sync::atomic::AtomicBool,
}

impl Gate {
    fn set(&self, closed: bool) {
        *self.closed.lock().unwrap() = closed;
        self.cv.notify_all();
    }

    fn pass(&self) {
        let mut closed = self.closed.lock().unwrap();
        while *closed {
            self.waiting
                .store(true, std::sync::atomic::Ordering::SeqCst);
            closed = self.cv.wait(closed).unwrap();
        }
    }
}

impl dnet_cluster::Membership for Gated {
    fn peer_up(&mut self, network: &str, peer: &dnet_cluster::Peer) {
        self.gate.pass();
        self.tx.peer_up(network, peer);
    }

    fn peer_down(&mut self, network: &str, peer: &dnet_cluster::Peer) {
        self.tx.peer_down(network, peer);
    }
}

fn revision(etcd: &Etcd) -> i64 {
    let out = etcd.ctl(&["get", "/dnet", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["header"]["revision"].as_i64().unwrap()
}

#[test]
#[cfg_attr(not(dnet_cluster_root), ignore = "needs root: run cargo test as root")]
fn a_compacted_watch_revision_is_read_again_from_scratch() {
    let etcd = Etcd::single();
    etcd.run(|| {
        let opts = etcd.options();
        Admin::connect(&opts)
            .unwrap()
            .create_network(NET, &spec("10.77.0.0/16"))
            .unwrap();
        let (_b, _pb) = start_agent(agent_config(&opts, 2));

        // A reads the network at revision R, then stops in peer_up(B) before it opens its
        // watch at R+1. Meanwhile C joins and the history is compacted past R+1: the watch
        // etcd then gives A is cancelled as compacted, and A must read everything again.
        let gate = Arc::new(Gate::default());
        gate.set(true);
        let (tx, rx) = mpsc::channel();
        let mut cfg = agent_config(&opts, 1);
        // Keepalives share the held thread: a TTL that outlasts the hold.
        cfg.ttl = Duration::from_secs(10);
        let gated = Gated {
            tx,
            gate: gate.clone(),
        };
        std::thread::scope(|s| {
            let starting = s.spawn(|| Agent::start(cfg, Box::new(gated)).unwrap());
            assert!(wait_for(WAIT, || gate
                .waiting
                .load(std::sync::atomic::Ordering::SeqCst)));
            let (c, _pc) = start_agent(agent_config(&opts, 3));
            etcd.ctl(&["compact", &revision(&etcd).to_string()]);
            gate.set(false);
            let a = starting.join().unwrap();
            let mut pa = Peers::new(rx);
            assert!(pa.wait(WAIT, |p| p.up.len() == 2), "{:?}", pa.up.keys());
            assert!(a.status().counters.watch_compactions >= 1);

            // Compaction under running watches: a watch that is caught up goes on, one that
            // etcd has not yet moved to its synced group (it does so every 100 ms) is
            // cancelled and re-read; either way D is seen and nobody goes down.
            etcd.ctl(&["compact", &revision(&etcd).to_string()]);
            let (_d, _pd) = start_agent(agent_config(&opts, 4));
            assert!(pa.wait(WAIT, |p| p.up.len() == 3));
            assert!(pa.downs.is_empty());
            drop(c);
            a.stop();
        });
    });
}

#[test]
#[cfg_attr(not(dnet_cluster_root), ignore = "needs root: run cargo test as root")]
fn a_three_member_etcd_keeps_working_with_one_member_killed() {
    let mut etcd = Etcd::cluster(3);
    let opts = etcd.options();
    let (a, mut pa, b, mut pb) = etcd.run(|| {
        let admin = Admin::connect(&opts).unwrap();
        admin.create_network(NET, &spec("10.77.0.0/16")).unwrap();
        let (a, mut pa) = start_agent(agent_config(&opts, 1));
        let (b, mut pb) = start_agent(agent_config(&opts, 2));
        assert!(pa.wait(WAIT, |p| p.up.len() == 1));
        assert!(pb.wait(WAIT, |p| p.up.len() == 1));
        for i in 0..5 {
            admin
                .allocate(NET, "10.200.0.1", &format!("before{i}"))
                .unwrap();
        }
        (a, pa, b, pb)
    });
    etcd.kill(0);
    etcd.run(|| {
        // Joins, allocations and departures go through the other two members.
        let (c, mut pc) = start_agent(agent_config(&opts, 3));
        assert!(pa.wait(WAIT, |p| p.up.contains_key("10.200.0.3")));
        assert!(pb.wait(WAIT, |p| p.up.contains_key("10.200.0.3")));
        assert!(pc.wait(WAIT, |p| p.up.len() == 2));
        let admin = Admin::connect(&opts).unwrap();
        for i in 0..5 {
            admin
                .allocate(NET, "10.200.0.3", &format!("after{i}"))
                .unwrap();
            admin
                .allocate(NET, "10.200.0.1", &format!("after{i}"))
                .unwrap();
        }
        let all = admin.allocations(NET, None).unwrap();
        assert_eq!(all.len(), 15);
        let distinct: BTreeSet<_> = all.iter().map(|a| a.address).collect();
        assert_eq!(distinct.len(), 15);
        b.stop();
        assert!(pa.wait(WAIT, |p| !p.up.contains_key("10.200.0.2")));
        assert!(pc.wait(WAIT, |p| !p.up.contains_key("10.200.0.2")));
        assert!(pa.downs.iter().all(|(_, p)| p.host == "10.200.0.2"));
        c.stop();
        a.stop();
    });
}

#[test]
#[cfg_attr(not(dnet_cluster_root), ignore = "needs root: run cargo test as root")]
fn tls_with_generated_certificates() {
    let etcd = Etcd::tls();
    etcd.run(|| {
        let opts = etcd.options();
        assert!(opts.endpoints[0].starts_with("https://"));
        let admin = Admin::connect(&opts).unwrap();
        admin.create_network(NET, &spec("10.77.0.0/16")).unwrap();
        let (a, mut pa) = start_agent(agent_config(&opts, 1));
        let (b, _pb) = start_agent(agent_config(&opts, 2));
        assert!(pa.wait(WAIT, |p| p.up.contains_key("10.200.0.2")));
        assert_eq!(
            admin.allocate(NET, "10.200.0.2", "c").unwrap(),
            Ipv4Addr::new(10, 77, 1, 2)
        );
        // etcd asks for a client certificate: without one nothing gets through.
        let mut anon = opts.clone();
        anon.tls.as_mut().unwrap().cert = None;
        anon.tls.as_mut().unwrap().key = None;
        anon.request_timeout = Duration::from_secs(1);
        let e = Admin::connect(&anon)
            .and_then(|a| a.list_networks())
            .unwrap_err();
        assert!(e.is_transient(), "{e}");
        b.stop();
        a.stop();
    });
}

#[test]
#[cfg_attr(not(dnet_cluster_root), ignore = "needs root: run cargo test as root")]
fn user_and_password_auth() {
    let etcd = Etcd::single();
    etcd.ctl(&["user", "add", "root:s3cret"]);
    etcd.ctl(&["auth", "enable"]);
    let pw = etcd.dir.join("password");
    std::fs::write(&pw, "s3cret\n").unwrap();
    etcd.run(|| {
        let mut opts = etcd.options();
        // No credentials: refused.
        let e = Admin::connect(&opts)
            .and_then(|a| a.create_network(NET, &spec("10.77.0.0/16")))
            .unwrap_err();
        assert!(e.to_string().contains("user name"), "{e}");
        // A wrong password: refused at connect.
        opts.credentials = Some(dnet_cluster::Credentials::new("root", "wrong"));
        let e = Admin::connect(&opts).err().unwrap();
        assert!(e.to_string().contains("authentication failed"), "{e}");
        // From a file: works for admin and agents.
        opts.credentials = Some(dnet_cluster::Credentials::from_file("root", &pw).unwrap());
        let admin = Admin::connect(&opts).unwrap();
        admin.create_network(NET, &spec("10.77.0.0/16")).unwrap();
        let (a, mut pa) = start_agent(agent_config(&opts, 1));
        let (b, _pb) = start_agent(agent_config(&opts, 2));
        assert!(pa.wait(WAIT, |p| p.up.contains_key("10.200.0.2")));
        assert_eq!(
            admin.allocate(NET, "10.200.0.1", "c").unwrap(),
            Ipv4Addr::new(10, 77, 0, 2)
        );
        b.stop();
        a.stop();
    });
}

fn member_json(host: &str, underlay: &str, range: &str, key: u32) -> String {
    serde_json::json!({
        "version": 1, "host": host, "underlay": underlay, "range": range,
        "software": "evil", "started": 1,
        "settings": {"encap": "gre", "key": key}
    })
    .to_string()
}

fn claim_json(host: &str) -> String {
    serde_json::json!({"version": 1, "host": host}).to_string()
}

#[test]
#[cfg_attr(not(dnet_cluster_root), ignore = "needs root: run cargo test as root")]
fn hostile_records_are_skipped_counted_and_never_peers() {
    let etcd = Etcd::single();
    etcd.run(|| {
        let opts = etcd.options();
        let admin = Admin::connect(&opts).unwrap();
        admin.create_network(NET, &spec("10.77.0.0/16")).unwrap();
        let (a, mut pa) = start_agent(agent_config(&opts, 1));
        let (_b, _pb) = start_agent(agent_config(&opts, 2));
        assert!(pa.wait(WAIT, |p| p.up.contains_key("10.200.0.2")));

        let m = |h: &str| format!("/dnet/networks/blue/members/{h}");
        let r = |seg: &str| format!("/dnet/networks/blue/ranges/{seg}");
        let puts: Vec<(String, String)> = vec![
            (m("evil-json"), "{not json".into()),
            (
                m("evil-version"),
                member_json("evil-version", "10.200.0.50", "10.77.50.0/24", 7)
                    .replace("\"version\":1", "\"version\":9"),
            ),
            (
                m("evil-host"),
                member_json("other", "10.200.0.51", "10.77.51.0/24", 7),
            ),
            (
                m("evil-addr"),
                member_json("evil-addr", "not-an-ip", "10.77.52.0/24", 7),
            ),
            (
                m("evil-me"),
                member_json("evil-me", "10.200.0.1", "10.77.53.0/24", 7),
            ),
            (
                m("evil-out"),
                member_json("evil-out", "10.200.0.54", "10.99.0.0/24", 7),
            ),
            (
                m("evil-overlap"),
                member_json("evil-overlap", "10.200.0.55", "10.77.1.0/24", 7),
            ),
            (
                m("evil-unclaimed"),
                member_json("evil-unclaimed", "10.200.0.56", "10.77.56.0/24", 7),
            ),
            (r("10.77.57.0-24"), claim_json("evil-settings")),
            (
                m("evil-settings"),
                member_json("evil-settings", "10.200.0.57", "10.77.57.0/24", 8),
            ),
            (r("10.77.58.0-24"), claim_json("evil-dup")),
            (
                m("evil-dup"),
                member_json("evil-dup", "10.200.0.2", "10.77.58.0/24", 7),
            ),
            (r("garbage"), claim_json("x")),
            (r("10.77.59.0-24"), "[]".into()),
        ];
        for (k, v) in &puts {
            etcd.ctl(&["put", k, v]);
        }
        // A legitimate host joins after them: once A sees it, A has judged them all.
        let (c, mut pc) = start_agent(agent_config(&opts, 3));
        assert!(pa.wait(WAIT, |p| p.up.contains_key("10.200.0.3")));
        let hosts: Vec<&String> = pa.up.keys().collect();
        assert_eq!(hosts, ["10.200.0.2", "10.200.0.3"]);
        assert!(pa.downs.is_empty());
        // The newcomer's range skips the ranges hostile claims hold, and it trusts no one
        // the others rejected.
        assert!(pc.wait(WAIT, |p| p.up.len() == 2));
        let hosts: Vec<&String> = pc.up.keys().collect();
        assert_eq!(hosts, ["10.200.0.1", "10.200.0.2"]);

        let expect = [
            ("bad_json", 2),
            ("unsupported_version", 1),
            ("host_mismatch", 1),
            ("not_an_address", 1),
            ("claims_this_host", 1),
            ("range_outside_subnet", 1),
            ("range_overlap", 1),
            ("range_not_claimed", 1),
            ("settings_mismatch", 1),
            ("duplicate_underlay", 1),
            ("bad_key", 1),
            ("bad_network_config", 0),
        ];
        let counters = a.status().counters;
        for (kind, n) in expect {
            assert_eq!(counters.rejected[kind], n, "{kind}");
        }
        assert_eq!(counters.rejected_total(), 12);
        // To C, the record naming A's underlay is no impostor of C; it fails on its unclaimed
        // range instead.
        let counters = c.status().counters;
        for (kind, n) in expect {
            let n = match kind {
                "claims_this_host" => 0,
                "range_not_claimed" => 2,
                _ => n,
            };
            assert_eq!(counters.rejected[kind], n, "{kind} at C");
        }
        assert_eq!(admin.show_network(NET).unwrap().rejected.len(), 12);

        // A broken settings record keeps the last good one in force: counted, no peer lost.
        let good = etcd.ctl(&["get", "/dnet/networks/blue/config", "--print-value-only"]);
        etcd.ctl(&["put", "/dnet/networks/blue/config", "{\"version\":1"]);
        assert!(wait_for(WAIT, || a.status().counters.rejected
            ["bad_network_config"]
            == 1));
        etcd.ctl(&["put", "/dnet/networks/blue/config", good.trim_end()]);
        // Someone overwrites A's own member record: A writes it back.
        etcd.ctl(&[
            "put",
            &m("10.200.0.1"),
            &member_json("10.200.0.1", "10.200.0.99", "10.77.0.0/24", 7),
        ]);
        assert!(wait_for(WAIT, || a.status().counters.own_record_restored == 1));
        assert!(wait_for(WAIT, || {
            etcd.ctl(&["get", &m("10.200.0.1"), "--print-value-only"])
                .contains("\"underlay\":\"10.200.0.1\"")
        }));
        pa.drain();
        assert!(pa.downs.is_empty());
        assert_eq!(pa.up.len(), 2);
        a.stop();
    });
}
