//! End-to-end test support; the netns testbed itself is crate `dnet_testbed`.

pub mod fleet_support;

use dnet_proto::Stats;
use dnet_testbed::Switch;
use std::time::{Duration, Instant};

/// Counters of `switches` once traffic has settled: polls until two snapshots 50 ms apart are
/// equal (in-flight ACKs and echo replies counted), at most 3 s, then returns the last one.
///
/// Comparing counters across switches right after a transfer would otherwise race frames
/// still in a socket buffer between them.
pub fn settled_stats(switches: &[&Switch]) -> Vec<Stats> {
    let snap = || -> Vec<Stats> {
        switches
            .iter()
            .map(|s| {
                s.stats()
                    .unwrap_or_else(|e| panic!("stats of switch in {}: {e}\n{}", s.ns, s.stderr()))
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut last = snap();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = snap();
        let same = now.iter().zip(&last).all(|(a, b)| a.ports == b.ports);
        last = now;
        if same || Instant::now() >= deadline {
            return last;
        }
    }
}

/// Sum of all drop counters of a switch.
pub fn total_drops(s: &Stats) -> u64 {
    s.drops.iter().map(|d| d.count).sum()
}

/// Count of the drop reason named `reason` (0 if the switch does not list it).
pub fn drop_count(s: &Stats, reason: &str) -> u64 {
    s.drops
        .iter()
        .find(|d| d.reason == reason)
        .map_or(0, |d| d.count)
}

/// Count of the event named `name` (0 if the switch does not list it).
pub fn event_count(s: &Stats, name: &str) -> u64 {
    s.events
        .iter()
        .find(|d| d.reason == name)
        .map_or(0, |d| d.count)
}

/// Resident set size of process `pid` in KiB (`VmRSS` from `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// User + system CPU time of process `pid` in clock ticks (`/proc/PID/stat` fields 14 and 15).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields are counted after its closing parenthesis.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Sends one UDP broadcast from each host's container in turn and asserts every other
/// container got exactly one copy within `window` (a second copy would mean a frame re-flooded
/// into another tunnel: a loop).
pub fn assert_each_broadcast_arrives_once(hosts: &[dnet_testbed::Host], window: Duration) {
    for src in hosts {
        let others: Vec<&str> = hosts
            .iter()
            .filter(|o| o.index != src.index)
            .map(|o| o.container_ns.as_str())
            .collect();
        let counts = dnet_testbed::traffic::udp_broadcast(
            &src.container_ns,
            dnet_testbed::CONTAINER_BROADCAST,
            9999,
            &others,
            window,
        )
        .expect("udp broadcast");
        assert_eq!(
            counts,
            vec![1; others.len()],
            "broadcast from container {} seen by {others:?}",
            src.letter
        );
    }
}
