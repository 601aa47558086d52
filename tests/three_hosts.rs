//! Three hosts in a full mesh: flooding delivers broadcasts exactly once (split horizon, no
//! loops), and learned unicast goes only to the host that needs it.

use dnet_e2e::{assert_each_broadcast_arrives_once, settled_stats};
use dnet_testbed::traffic::{ping, udp_unicast, GreCapture};
use dnet_testbed::{tunnel_port, tunnel_totals, Testbed};
use std::time::Duration;

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn broadcast_reaches_each_other_container_exactly_once() {
    let tb = Testbed::new(3).expect("building testbed");
    let _sw = tb.start_switches().expect("starting switches");
    let h = tb.hosts();
    // A second copy (a tunnel frame re-flooded into another tunnel) would arrive within
    // microseconds; 700 ms also catches a slow loop.
    assert_each_broadcast_arrives_once(h, Duration::from_millis(700));
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn learned_unicast_is_not_flooded_to_third_host() {
    let tb = Testbed::new(3).expect("building testbed");
    let sw = tb.start_switches().expect("starting switches");
    let (a, b, c) = (tb.host(0), tb.host(1), tb.host(2));
    // Learning: a's ARP request floods (so every switch learns a), b's reply is unicast back
    // (so a's switch learns b), and pings both ways confirm the path.
    let t = Duration::from_secs(2);
    assert_eq!(
        ping(&a.container_ns, b.container_ip, 3, t)
            .expect("ping a->b")
            .received,
        3
    );
    assert_eq!(
        ping(&b.container_ns, a.container_ip, 3, t)
            .expect("ping b->a")
            .received,
        3
    );

    let before = settled_stats(&[&sw[0], &sw[1], &sw[2]]);
    let cap = GreCapture::start(&c.ns).expect("GRE capture on host c");
    // ARP entries of a and b stay REACHABLE for 15-45 s after the pings, and a refresh would be
    // a unicast probe anyway, so no frame of this burst has a reason to reach c.
    const N: u64 = 1000;
    let got = udp_unicast(
        &a.container_ns,
        &b.container_ns,
        b.container_ip,
        7777,
        N,
        Duration::from_millis(300),
    )
    .expect("udp burst a->b");
    let after = settled_stats(&[&sw[0], &sw[1], &sw[2]]);
    let gre_at_c = cap.stop().expect("GRE capture");

    assert!(got >= N / 2, "only {got} of {N} datagrams reached b");
    let delta = |i: usize, peer| {
        let p0 = tunnel_port(&before[i], peer).expect("tunnel port");
        let p1 = tunnel_port(&after[i], peer).expect("tunnel port");
        (p1.rx_packets - p0.rx_packets, p1.tx_packets - p0.tx_packets)
    };
    let (a_to_b_rx, _) = delta(1, a.underlay_ip);
    assert!(
        a_to_b_rx >= got,
        "b's tunnel from a received {a_to_b_rx} < {got} delivered"
    );
    let (c_rx_before, _) = tunnel_totals(&before[2]);
    let (c_rx_after, _) = tunnel_totals(&after[2]);
    assert_eq!(
        c_rx_after - c_rx_before,
        0,
        "host c's tunnels received frames of the a->b burst"
    );
    assert_eq!(
        delta(0, c.underlay_ip).1,
        0,
        "a sent frames of the a->b burst to c"
    );
    assert_eq!(
        delta(1, c.underlay_ip).1,
        0,
        "b sent frames to c during the a->b burst"
    );
    assert_eq!(
        gre_at_c, 0,
        "GRE packets reached host c during the a->b burst"
    );
}
