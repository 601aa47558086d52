//! Fleet benchmark: how long a fleet of 2, 8, 16 and 32 simulated hosts takes to mesh through
//! etcd, what a join costs etcd, and what a switch with 31 peers weighs.
//!
//! For each fleet size N (one namespace testbed of N hosts, etcd on the underlay at
//! 10.200.0.100, one `dnet-switch --network bench --workers 1` per host, no `--peer`):
//! - **all at once**: the N switches spawned back to back; the time from the last spawn until
//!   every switch has a tunnel to every other (polling every switch's `show`);
//! - **one more**: N-1 switches meshed, then the last started; the time from its start until
//!   every switch has every tunnel; the etcd revisions that join wrote (keys created or
//!   changed), the watch events one `etcdctl watch --prefix` on the network saw for it, and
//!   the keys under the network afterwards;
//! - **RSS** (VmRSS) of each switch once meshed: median and largest (N = 32: 31 peers).
//!
//! Goal (issue 11): a full mesh of 32 within 3 s of the last start. No timing is asserted; the
//! table is printed. Measured with the release build of the switch, so build it first:
//!
//! ```text
//! cargo build --release -p dnet -p dnetctl
//! sudo cargo bench -p dnet-benches --bench fleet            # SIZES=2,8,16,32 REPS=3
//! ```
//!
//! Needs root (namespaces), etcd and etcdctl (Debian's etcd-server and etcd-client).
//! `SIZES` and `REPS` (repetitions per size; medians are printed) may be set in the
//! environment.

use dnet_e2e::fleet_support::{create_network, fleet_switch, peers, try_peers, wait_for, Etcd};
use dnet_e2e::rss_kib;
use dnet_testbed::{Switch, Testbed};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

const NET: &str = "bench";
const MESH_TIMEOUT: Duration = Duration::from_secs(60);

/// Polls every switch until each has a tunnel to every other host of `hosts`; returns when.
fn wait_mesh(tb: &Testbed, switches: &[&Switch], hosts: &[usize]) -> Instant {
    let all: BTreeSet<Ipv4Addr> = hosts.iter().map(|&i| tb.host(i).underlay_ip).collect();
    let mut done = vec![false; switches.len()];
    let ok = wait_for(MESH_TIMEOUT, || {
        for (k, sw) in switches.iter().enumerate() {
            if !done[k] {
                let mut want = all.clone();
                want.remove(&tb.host(sw.host).underlay_ip);
                // The switch just started may not answer yet.
                done[k] = try_peers(sw).is_some_and(|p| p == want);
            }
        }
        done.iter().all(|d| *d)
    });
    assert!(ok, "no full mesh within {MESH_TIMEOUT:?}");
    Instant::now()
}

fn revision(etcd: &Etcd) -> i64 {
    let out = etcd.ctl(&["endpoint", "status", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("endpoint status json");
    v[0]["Status"]["header"]["revision"]
        .as_i64()
        .expect("revision")
}

/// Keys under the network (the benchmark's marker left out).
fn keys(etcd: &Etcd) -> usize {
    etcd.ctl(&[
        "get",
        "--prefix",
        "--keys-only",
        &format!("/dnet/networks/{NET}/"),
    ])
    .lines()
    .filter(|l| !l.is_empty() && !l.ends_with("bench-marker"))
    .count()
}

/// `etcdctl watch --prefix` on the network, its events read as they come.
struct Watcher {
    child: Child,
    events: Receiver<Vec<String>>,
}

impl Watcher {
    /// Starts the watcher and returns once it sees a marker key written after it started (so
    /// no event of the join can be missed).
    fn start(etcd: &Etcd) -> Watcher {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &etcd.ns, "etcdctl"])
            .args(["--endpoints", &etcd.endpoints()])
            .args(["watch", "--prefix", "-w", "json"])
            .arg(format!("/dnet/networks/{NET}/"))
            .env("ETCDCTL_API", "3")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcdctl watch");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let keys: Vec<String> = v["Events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| e["kv"]["key"].as_str().unwrap_or("").to_string())
                    .collect();
                if tx.send(keys).is_err() {
                    return;
                }
            }
        });
        let w = Watcher { child, events: rx };
        // The agents ignore keys they do not know, so the marker changes nothing else.
        let marker = format!("/dnet/networks/{NET}/bench-marker");
        let deadline = Instant::now() + MESH_TIMEOUT;
        loop {
            etcd.ctl(&["put", &marker, "x"]);
            if let Ok(keys) = w.events.recv_timeout(Duration::from_millis(500)) {
                // etcd sends keys base64-encoded in JSON.
                if !keys.is_empty() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "etcdctl watch never started");
        }
        while w.events.try_recv().is_ok() {}
        w
    }

    /// Stops the watcher and counts the events it delivered since [`Watcher::start`].
    fn events(mut self) -> usize {
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
        self.events.try_iter().map(|k| k.len()).sum()
    }
}

struct Run {
    all_at_once: Duration,
    one_more: Duration,
    revisions: i64,
    events: usize,
    keys: usize,
    rss_median: u64,
    rss_max: u64,
}

fn run(n: usize) -> Run {
    // etcd sits on the shared underlay segment, which takes at least three hosts: with two,
    // the third stays idle.
    let tb = Testbed::new(n.max(3)).expect("testbed");
    let etcd = Etcd::single(&tb);
    create_network(&etcd, NET, "10.78.0.0/16", &[]);
    let mut opts = fleet_switch(&etcd, NET, &[]);
    opts.log_level = "warn".into();
    let hosts: Vec<usize> = (0..n).collect();

    // All at once.
    let spawned: Vec<Switch> = hosts
        .iter()
        .map(|&i| tb.spawn_switch(i, &opts).expect("spawn"))
        .collect();
    let last_start = Instant::now();
    let refs: Vec<&Switch> = spawned.iter().collect();
    for sw in &refs {
        sw.wait_ready(MESH_TIMEOUT).expect("ready");
    }
    let all_at_once = wait_mesh(&tb, &refs, &hosts) - last_start;
    let mut rss: Vec<u64> = spawned.iter().filter_map(|s| rss_kib(s.pid)).collect();
    rss.sort_unstable();

    // One more: the last host leaves (its record is deleted at once by `leave --force`, so
    // the others drop it without waiting for the TTL), then joins again.
    let last = n - 1;
    spawned[last]
        .terminate(Duration::from_secs(10))
        .expect("stop the last switch");
    let host = tb.host(last).underlay_ip.to_string();
    let mut leave = vec!["network", "leave", NET, "--host", &host, "--force"];
    let args = etcd.args();
    leave.extend(args.iter().map(String::as_str));
    dnet_e2e::fleet_support::dnetctl_ok(&etcd.ns, &leave);
    let rest: Vec<&Switch> = spawned[..last].iter().collect();
    let ok = wait_for(MESH_TIMEOUT, || {
        rest.iter()
            .all(|s| !peers(s).contains(&tb.host(last).underlay_ip))
    });
    assert!(ok, "the others keep the departed host");
    let watcher = Watcher::start(&etcd);
    let before = revision(&etcd);
    let again = tb.spawn_switch(last, &opts).expect("spawn last");
    let start = Instant::now();
    let mut all: Vec<&Switch> = rest.clone();
    all.push(&again);
    let one_more = wait_mesh(&tb, &all, &hosts) - start;
    let revisions = revision(&etcd) - before;
    let events = watcher.events();
    Run {
        all_at_once,
        one_more,
        revisions,
        events,
        keys: keys(&etcd),
        rss_median: rss[rss.len() / 2],
        rss_max: *rss.last().unwrap(),
    }
}

fn median<T: Copy + Ord>(mut v: Vec<T>) -> T {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing we need.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("fleet benchmark: skipped: needs root (network namespaces)");
        return;
    }
    let sizes: Vec<usize> = std::env::var("SIZES")
        .unwrap_or_else(|_| "2,8,16,32".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("SIZES: comma-separated host counts")
        })
        .collect();
    let reps: usize = std::env::var("REPS")
        .ok()
        .map_or(3, |r| r.parse().expect("REPS: a number"));
    println!("fleet join benchmark ({reps} run(s) per size; medians)");
    println!(
        "{:>5}  {:>12}  {:>12}  {:>13}  {:>12}  {:>9}  {:>10}  {:>10}",
        "hosts",
        "all at once",
        "one more",
        "etcd writes",
        "watch events",
        "keys",
        "RSS median",
        "RSS max"
    );
    for n in sizes {
        let runs: Vec<Run> = (0..reps).map(|_| run(n)).collect();
        let ms = |d: Duration| format!("{} ms", d.as_millis());
        println!(
            "{n:>5}  {:>12}  {:>12}  {:>13}  {:>12}  {:>9}  {:>7} KiB  {:>7} KiB",
            ms(median(runs.iter().map(|r| r.all_at_once).collect())),
            ms(median(runs.iter().map(|r| r.one_more).collect())),
            median(runs.iter().map(|r| r.revisions).collect()),
            median(runs.iter().map(|r| r.events).collect()),
            median(runs.iter().map(|r| r.keys).collect()),
            median(runs.iter().map(|r| r.rss_median).collect()),
            median(runs.iter().map(|r| r.rss_max).collect()),
        );
        for (k, r) in runs.iter().enumerate() {
            eprintln!(
                "  n={n} run {k}: all at once {:?}, one more {:?}, writes {}, events {}",
                r.all_at_once, r.one_more, r.revisions, r.events
            );
        }
    }
}
