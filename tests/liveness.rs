//! Peer liveness end to end (`--keepalive`, defaults: 1 s interval, multiplier 3): a peer
//! comes up, a saturated tunnel stays up, a killed peer is marked down within the detection
//! time and its MACs are flushed, and a restarted one comes back with traffic.

use dnet_e2e::event_count;
use dnet_proto::{Request, Response, Show};
use dnet_testbed::traffic::{ping, tcp_transfer};
use dnet_testbed::{Switch, SwitchOptions, Testbed};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
/// Default detection time: 3 × 1 s.
const DETECT: Duration = Duration::from_secs(3);

fn show(sw: &Switch) -> Show {
    match dnet_proto::request(&sw.socket, &Request::Show, Duration::from_secs(3)) {
        Ok(Response::Show(s)) => s,
        other => panic!("show: {other:?}\n{}", sw.stderr()),
    }
}

fn state(sw: &Switch, peer: Ipv4Addr) -> String {
    show(sw)
        .ports
        .into_iter()
        .find(|p| p.peer == Some(peer))
        .map(|p| p.state)
        .unwrap_or_default()
}

fn macs_on(sw: &Switch, peer: Ipv4Addr) -> usize {
    match dnet_proto::request(&sw.socket, &Request::FdbShow, Duration::from_secs(3)) {
        Ok(Response::Fdb(t)) => t
            .entries
            .iter()
            .filter(|e| e.port == format!("gre-{peer}"))
            .count(),
        other => panic!("fdb: {other:?}"),
    }
}

/// Polls `f` every 20 ms until true or `limit`; returns the time it took.
fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn keepalives_detect_a_dead_peer_and_its_return() {
    let tb = Testbed::new(2).expect("testbed");
    let opts = SwitchOptions {
        extra_args: vec!["--keepalive".into()],
        ..SwitchOptions::default()
    };
    let sa = tb.start_switch_with(0, &opts).expect("switch a");
    let sb = tb.start_switch_with(1, &opts).expect("switch b");
    let (a, b) = (tb.host(0), tb.host(1));

    let up = wait_for(Duration::from_secs(10), || {
        state(&sa, b.underlay_ip) == "up"
    })
    .expect("a sees b up");
    eprintln!("b up at a after {up:.2?}");
    let up = wait_for(Duration::from_secs(10), || {
        state(&sb, a.underlay_ip) == "up"
    })
    .expect("b sees a up");
    eprintln!("a up at b {up:.2?} later");
    let p = ping(&a.container_ns, b.container_ip, 3, Duration::from_secs(2)).expect("ping");
    assert_eq!(p.received, 3);

    // A saturated tunnel (bulk TCP both ways) never goes down.
    let stop = Arc::new(AtomicBool::new(false));
    let watch = {
        let (stop, sock_a, sock_b) = (stop.clone(), sa.socket.clone(), sb.socket.clone());
        let (pa, pb) = (a.underlay_ip, b.underlay_ip);
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for (sock, peer) in [(&sock_a, pb), (&sock_b, pa)] {
                    if let Ok(Response::Show(s)) =
                        dnet_proto::request(sock, &Request::Show, Duration::from_secs(3))
                    {
                        if let Some(p) = s.ports.iter().find(|p| p.peer == Some(peer)) {
                            seen.push(p.state.clone());
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            seen
        })
    };
    let t0 = Instant::now();
    let both = std::thread::scope(|s| {
        let h = s.spawn(|| {
            tcp_transfer(
                &b.container_ns,
                &a.container_ns,
                a.container_ip,
                96 * MIB,
                Duration::from_secs(120),
            )
        });
        let r1 = tcp_transfer(
            &a.container_ns,
            &b.container_ns,
            b.container_ip,
            96 * MIB,
            Duration::from_secs(120),
        );
        (r1, h.join().expect("transfer thread"))
    });
    stop.store(true, Ordering::Relaxed);
    let seen = watch.join().expect("watcher");
    both.0.expect("tcp a->b");
    both.1.expect("tcp b->a");
    eprintln!(
        "saturated both ways for {:.2?}: {} state samples, states seen {:?}",
        t0.elapsed(),
        seen.len(),
        seen.iter().collect::<std::collections::BTreeSet<_>>()
    );
    assert!(
        seen.iter().all(|s| s == "up"),
        "flapped under load: {seen:?}"
    );
    assert_eq!(event_count(&sa.stats().unwrap(), "peer_down"), 0);
    assert_eq!(event_count(&sb.stats().unwrap(), "peer_down"), 0);

    // Kill b's switch: a marks it down within the detection time and flushes its MACs.
    assert!(macs_on(&sa, b.underlay_ip) > 0, "a learned b's container");
    sb.signal(libc::SIGKILL).expect("kill b");
    let killed = Instant::now();
    let down = wait_for(DETECT * 4, || state(&sa, b.underlay_ip) == "down")
        .unwrap_or_else(|| panic!("a never marked b down\n{}", sa.stderr()));
    eprintln!(
        "b killed: marked down after {down:.2?} (detection time {DETECT:?} + up to a quarter interval)"
    );
    wait_for(Duration::from_secs(3), || macs_on(&sa, b.underlay_ip) == 0)
        .expect("b's MACs flushed");
    eprintln!(
        "b's MACs flushed at a {:.2?} after the kill",
        killed.elapsed()
    );
    assert_eq!(event_count(&sa.stats().unwrap(), "peer_down"), 1);

    // Restart it: up again, traffic resumes.
    let restarted = Instant::now();
    let _sb2 = tb.start_switch_with(1, &opts).expect("restart b");
    let ready = restarted.elapsed();
    wait_for(Duration::from_secs(15), || {
        state(&sa, b.underlay_ip) == "up"
    })
    .expect("b up again at a");
    let back = restarted.elapsed();
    wait_for(Duration::from_secs(10), || {
        ping(
            &a.container_ns,
            b.container_ip,
            1,
            Duration::from_millis(500),
        )
        .is_ok_and(|p| p.received == 1)
    })
    .expect("ping after restart");
    eprintln!(
        "b restarted (ready after {ready:.2?}): up at a after {back:.2?}, ping answered after {:.2?}",
        restarted.elapsed()
    );
    assert!(event_count(&sa.stats().unwrap(), "peer_up") >= 2);
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn peer_without_keepalives_is_never_marked_down() {
    // Like an OVS or gretap peer: b sends no hellos. a must keep working with it.
    let tb = Testbed::new(2).expect("testbed");
    let sa = tb
        .start_switch_with(
            0,
            &SwitchOptions {
                extra_args: vec![
                    "--keepalive".into(),
                    "--keepalive-interval".into(),
                    "100".into(),
                ],
                ..SwitchOptions::default()
            },
        )
        .expect("switch a");
    let _sb = tb.start_switch(1).expect("switch b");
    let (a, b) = (tb.host(0), tb.host(1));
    let p = ping(&a.container_ns, b.container_ip, 3, Duration::from_secs(2)).expect("ping");
    assert_eq!(p.received, 3);
    // Well past the 300 ms detection time, silent.
    std::thread::sleep(Duration::from_secs(2));
    let st = state(&sa, b.underlay_ip);
    assert_ne!(st, "down");
    assert_ne!(st, "up", "b never sent a hello");
    assert_eq!(event_count(&sa.stats().unwrap(), "peer_down"), 0);
    let p = ping(&a.container_ns, b.container_ip, 3, Duration::from_secs(2)).expect("ping");
    assert_eq!(p.received, 3);
}
