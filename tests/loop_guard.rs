//! The local-side loop guard: two hosts whose container bridges are also joined directly (as
//! if bridged onto one LAN) close a loop through the tunnel. One broadcast would circulate for
//! ever; the switches must notice the flapping MACs, block the tunnel and stop the storm, while
//! the containers keep talking over the direct link.
//!
//! During the storm each kernel bridge learns the looping station (and any other) on whichever
//! port its frames came in last, often the TAP. Once the tunnel is blocked, a bridge that still
//! points a station at the TAP sends its frames into a dead end until the entry ages out (300 s)
//! or the station happens to speak through the direct link: a ping then fails, or not,
//! depending on the order of the last looping frames. So a switch that blocks a tunnel makes
//! its bridge forget what it learned on the TAP, and the containers are reached over the direct
//! link at once.

use dnet_e2e::{event_count, settled_stats};
use dnet_testbed::cmd::run;
use dnet_testbed::traffic::{ping, udp_broadcast};
use dnet_testbed::{tunnel_port, Testbed, CONTAINER_BROADCAST};
use std::time::{Duration, Instant};

/// Stations host namespace `ns`'s bridge learned on the TAP `dnet0` (not its own address).
fn learned_on_tap(ns: &str) -> Vec<String> {
    run(
        "bridge",
        &["-n", ns, "fdb", "show", "br", "br0", "brport", "dnet0"],
    )
    .expect("bridge fdb show")
    .lines()
    .filter(|l| !l.contains("permanent") && !l.starts_with("33:33") && !l.starts_with("01:"))
    .map(str::to_string)
    .collect()
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn a_loop_through_the_local_side_is_stopped() {
    let tb = Testbed::new(2).expect("testbed");
    let sw = tb.start_switches().expect("switches");
    let (a, b) = (tb.host(0), tb.host(1));
    tb.join_bridges_directly(0, 1)
        .expect("joining the bridges directly");

    let t0 = Instant::now();
    udp_broadcast(
        &a.container_ns,
        CONTAINER_BROADCAST,
        9999,
        &[&b.container_ns],
        Duration::from_millis(200),
    )
    .expect("broadcast");
    // Poll until a switch reports the loop.
    let detected = loop {
        let n: u64 = sw
            .iter()
            .map(|s| event_count(&s.stats().expect("stats"), "loop_detected"))
            .sum();
        if n > 0 {
            break t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no loop detected\n{}\n{}",
            sw[0].stderr(),
            sw[1].stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // The storm is over: tunnel counters stand still.
    let tx = || {
        let st = settled_stats(&[&sw[0], &sw[1]]);
        tunnel_port(&st[0], b.underlay_ip).unwrap().tx_packets
            + tunnel_port(&st[1], a.underlay_ip).unwrap().tx_packets
    };
    let before = tx();
    std::thread::sleep(Duration::from_secs(1));
    let after = tx();
    let st = settled_stats(&[&sw[0], &sw[1]]);
    eprintln!(
        "loop detected {detected:.2?} after the broadcast; tunnel frames sent before it stopped: {before}; in the next second: {}; loop_guard drops a {} b {}",
        after - before,
        dnet_e2e::drop_count(&st[0], "loop_guard"),
        dnet_e2e::drop_count(&st[1], "loop_guard"),
    );
    assert!(
        after - before <= 4,
        "storm goes on: {} frames in 1 s",
        after - before
    );
    // The bridge of every switch that blocked the tunnel forgets what it learned on the TAP.
    let hosts = [&a.ns, &b.ns];
    for (i, s) in st.iter().enumerate() {
        if event_count(s, "loop_detected") == 0 {
            continue;
        }
        let t = Instant::now();
        while !learned_on_tap(hosts[i]).is_empty() {
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "host {i}'s bridge still points at the TAP: {:?}",
                learned_on_tap(hosts[i])
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // The first ping after the storm is answered over the direct link (bound: 1 s, generous
    // for one round trip on a veth), and so are the next three.
    let t = Instant::now();
    let first = ping(&a.container_ns, b.container_ip, 1, Duration::from_secs(1)).expect("ping");
    eprintln!(
        "first ping after the storm: {} of 1 answered in {:.2?}",
        first.received,
        t.elapsed()
    );
    assert_eq!(
        first.received, 1,
        "the first ping after the storm is answered"
    );
    let p = ping(&a.container_ns, b.container_ip, 3, Duration::from_secs(2)).expect("ping");
    assert_eq!(
        p.received, 3,
        "containers still reach each other over the direct link"
    );
}
