//! End-to-end test support; the netns testbed itself lives in `dnetctl::testbed`.

use dnetctl::ctl::Stats;
use dnetctl::testbed::Switch;
use std::io::Write;
use std::time::{Duration, Instant};

/// Returns true (after printing a visible notice) if the current user cannot build network
/// namespaces, in which case the calling test should return early.
///
/// The notice goes straight to the process's stderr rather than through `eprintln!`, which the
/// test harness captures and hides for passing tests: a skip must be seen.
pub fn skip_unless_root(test: &str) -> bool {
    if dnetctl::testbed::is_root() {
        return false;
    }
    let _ = writeln!(
        std::io::stderr(),
        "{test}: skipped: needs root (network namespaces)"
    );
    true
}

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
