//! Soak: three hosts under mixed traffic (TCP transfers of several sizes, UDP datagrams of
//! every size from 1 to 1400 bytes, broadcasts, pings) for `DNET_SOAK_SECS` seconds (default
//! 6, the CI run; `tests/soak.sh 600` runs ten minutes), with one peer switch killed
//! (SIGKILL) and restarted half way. Asserts: no panic, every switch alive, the switches that
//! were not restarted keep a flat RSS, no bad-input drop reason moves (only legitimate
//! traffic is sent), and traffic through the restarted peer resumes. Prints RSS start/end and
//! drops by reason.

use dnet_e2e::rss_kib;
use dnet_testbed::netns::spawn_in_netns;
use dnet_testbed::traffic::{ping, tcp_transfer};
use dnet_testbed::{Testbed, CONTAINER_BROADCAST};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reasons that only hostile or broken input can cause: legitimate traffic never moves them.
const BAD_INPUT: &[&str] = &[
    "bad_outer_ip",
    "gre_truncated",
    "gre_version",
    "gre_routing",
    "gre_protocol",
    "gre_checksum",
    "wrong_key",
    "unknown_peer",
    "runt",
    "giant",
    "bad_source_mac",
    "bad_offload",
];

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn soak_mixed_traffic_with_a_peer_flap() {
    let secs: u64 = std::env::var("DNET_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
        .max(4);
    let tb = Testbed::new(3).expect("building testbed");
    let sw = tb.start_switches().expect("starting switches");
    for (x, y) in [(0, 1), (1, 2), (2, 0)] {
        let p = ping(
            &tb.host(x).container_ns,
            tb.host(y).container_ip,
            3,
            Duration::from_secs(2),
        )
        .expect("ping");
        assert!(p.received > 0, "no connectivity {x}->{y}");
    }
    let rss0: Vec<u64> = sw.iter().map(|s| rss_kib(s.pid).expect("rss")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let tcp = Arc::new(Tally::default());
    let pings = Arc::new(Tally::default());
    let mut threads = Vec::new();
    // TCP: a -> b, b -> c, c -> a, sizes cycling 64 KiB .. 8 MiB.
    for (x, y) in [(0usize, 1usize), (1, 2), (2, 0)] {
        let (src, dst, ip) = (
            tb.host(x).container_ns.clone(),
            tb.host(y).container_ns.clone(),
            tb.host(y).container_ip,
        );
        let (stop, tcp) = (stop.clone(), tcp.clone());
        threads.push(std::thread::spawn(move || {
            let sizes = [64 << 10, 1 << 20, 8 << 20, 256 << 10];
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = tcp_transfer(
                    &src,
                    &dst,
                    ip,
                    sizes[i % sizes.len()],
                    Duration::from_secs(10),
                );
                match r {
                    Ok(_) => tcp.ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => tcp.failed.fetch_add(1, Ordering::Relaxed),
                };
                i += 1;
            }
        }));
    }
    // UDP of every size 1..=1400 and broadcasts, c -> a and b (paced).
    {
        let stop = stop.clone();
        let (ia, ib) = (tb.host(0).container_ip, tb.host(1).container_ip);
        threads.push(
            spawn_in_netns(&tb.host(2).container_ns.clone(), move || {
                let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp");
                s.set_broadcast(true).expect("broadcast");
                let buf = vec![0x5au8; 1400];
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let len = 1 + n % 1400;
                    let dst = match n % 50 {
                        0 => CONTAINER_BROADCAST,
                        k if k % 2 == 0 => ia,
                        _ => ib,
                    };
                    let _ = s.send_to(&buf[..len], (dst, 9));
                    n += 1;
                    if n.is_multiple_of(100) {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            })
            .map(|h| {
                std::thread::spawn(move || {
                    let _ = h.join();
                })
            })
            .expect("udp thread"),
        );
    }
    // Pings b -> a, a -> c.
    for (x, y) in [(1usize, 0usize), (0, 2)] {
        let (src, ip) = (tb.host(x).container_ns.clone(), tb.host(y).container_ip);
        let (stop, pings) = (stop.clone(), pings.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(p) = ping(&src, ip, 5, Duration::from_millis(500)) {
                    pings.ok.fetch_add(u64::from(p.received), Ordering::Relaxed);
                    pings
                        .failed
                        .fetch_add(u64::from(p.sent - p.received), Ordering::Relaxed);
                }
            }
        }));
    }
    let start = Instant::now();
    let half = Duration::from_secs(secs / 2);
    // Steady state: by now every worker has touched its preallocated buffers (TAP reads of
    // up to 64 KiB super-frames, 32 per burst) and its MAC table holds every station.
    std::thread::sleep(Duration::from_secs((secs / 10).max(1)));
    let rss_warm: Vec<u64> = sw.iter().map(|s| rss_kib(s.pid).expect("rss")).collect();
    std::thread::sleep(half.saturating_sub(start.elapsed()));
    // Flap peer c once.
    sw[2].signal(libc::SIGKILL).expect("SIGKILL c");
    sw[2].wait_exit(Duration::from_secs(5)).expect("c exit");
    std::thread::sleep(Duration::from_secs(1));
    let c2 = tb.start_switch(2).expect("restarting c");
    eprintln!("soak: peer c killed and restarted at {:?}", start.elapsed());
    let tcp_before_end = tcp.ok.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(secs).saturating_sub(start.elapsed()));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("traffic thread panicked");
    }
    let rss1: Vec<u64> = [&sw[0], &sw[1], &c2]
        .iter()
        .map(|s| rss_kib(s.pid).expect("rss"))
        .collect();
    // Traffic through the restarted peer works.
    for (x, y) in [(0, 2), (2, 1)] {
        let p = ping(
            &tb.host(x).container_ns,
            tb.host(y).container_ip,
            3,
            Duration::from_secs(2),
        )
        .expect("ping");
        assert!(p.received > 0, "{x}->{y} after c's restart: {p:?}");
    }
    let mut bad = Vec::new();
    for (name, s) in [("a", &sw[0]), ("b", &sw[1]), ("c (restarted)", &c2)] {
        assert!(
            s.try_status().expect("status").is_none(),
            "switch {name} exited"
        );
        let log = s.stderr();
        assert!(!log.contains("panicked"), "switch {name} panicked:\n{log}");
        let st = s.stats().expect("stats");
        let drops: Vec<String> = st
            .drops
            .iter()
            .filter(|d| d.count > 0)
            .map(|d| format!("{} {}", d.reason, d.count))
            .collect();
        eprintln!(
            "soak: switch {name} drops: {}",
            if drops.is_empty() {
                "none".into()
            } else {
                drops.join(", ")
            }
        );
        bad.extend(
            st.drops
                .iter()
                .filter(|d| d.count > 0 && BAD_INPUT.contains(&d.reason.as_str()))
                .map(|d| format!("{name}: {} {}", d.reason, d.count)),
        );
    }
    eprintln!(
        "soak: {secs} s; TCP transfers ok {} failed {} ({} ok before the flap's end); pings ok {} lost {}",
        tcp.ok.load(Ordering::Relaxed),
        tcp.failed.load(Ordering::Relaxed),
        tcp_before_end,
        pings.ok.load(Ordering::Relaxed),
        pings.failed.load(Ordering::Relaxed)
    );
    eprintln!(
        "soak: RSS KiB at start / after warm-up ({} s) / at the end: a {} / {} / {}, b {} / {} / {}, c {} / {} / (restarted) {}",
        (secs / 10).max(1),
        rss0[0], rss_warm[0], rss1[0], rss0[1], rss_warm[1], rss1[1], rss0[2], rss_warm[2], rss1[2]
    );
    assert!(
        bad.is_empty(),
        "bad-input drops from legitimate traffic: {bad:?}"
    );
    assert!(
        tcp.ok.load(Ordering::Relaxed) > 0,
        "no TCP transfer completed"
    );
    for i in 0..2 {
        assert!(
            rss1[i] <= rss0[i] + 16 * 1024,
            "switch {i} RSS {} -> {} KiB",
            rss0[i],
            rss1[i]
        );
        assert!(
            rss1[i] <= rss_warm[i] + 4 * 1024,
            "switch {i} RSS grew in steady state: {} -> {} KiB",
            rss_warm[i],
            rss1[i]
        );
    }
}
