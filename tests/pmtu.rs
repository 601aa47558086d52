//! Path MTU end to end: two hosts joined through a router namespace whose link to b has MTU
//! 1400, while the containers keep MTU 1462 (what fits a 1500 underlay). dnet must learn the
//! 1400, answer DF packets that do not fit with ICMP fragmentation-needed carrying the usable
//! MTU (1400 − 24 outer − 14 Ethernet = 1362), let TCP through, and lose nothing uncounted.

use dnet_e2e::{drop_count, settled_stats, total_drops};
use dnet_testbed::traffic::{df_probe, nodf_echo, ping, tcp_transfer, DfProbe};
use dnet_testbed::{tunnel_port, SwitchOptions, Testbed};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

fn event(s: &dnet_testbed::Switch, name: &str) -> u64 {
    dnet_e2e::event_count(&s.stats().expect("stats"), name)
}
const LINK_MTU: u32 = 1400;
const CONTAINER_MTU: u32 = 1462;
/// 1400 − 20 (outer IPv4) − 4 (GRE) − 14 (inner Ethernet).
const USABLE: u16 = 1362;

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn pmtu_through_a_1400_router_link() {
    let tb = Testbed::routed(LINK_MTU).expect("building routed testbed");
    let opts = SwitchOptions {
        extra_args: vec!["--mtu".into(), CONTAINER_MTU.to_string()],
        ..SwitchOptions::default()
    };
    let sa = tb.start_switch_with(0, &opts).expect("switch a");
    let sb = tb.start_switch_with(1, &opts).expect("switch b");
    let (a, b) = (tb.host(0), tb.host(1));

    let p = ping(&a.container_ns, b.container_ip, 3, Duration::from_secs(2)).expect("ping");
    assert_eq!(p.received, 3, "small pings a->b: {p:?}");

    // 1. A large TCP transfer with nothing learned yet: the first full-size packets die at the
    //    router, which tells a's kernel; dnet picks the path MTU up and from then on answers or
    //    resegments.
    let bytes = 32 * MIB;
    let t0 = Instant::now();
    let r = tcp_transfer(
        &a.container_ns,
        &b.container_ns,
        b.container_ip,
        bytes,
        Duration::from_secs(90),
    )
    .expect("tcp transfer a->b across the 1400 link");
    assert_eq!(r.bytes, bytes);
    eprintln!(
        "tcp a->b (cold PMTU): {} MiB in {:.2?}, {:.2} Gbit/s",
        bytes / MIB,
        t0.elapsed(),
        r.gbit_per_s()
    );

    // 2. A DF echo that fits the container MTU but not the path gets fragmentation-needed with
    //    the usable MTU, from the destination's address.
    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        let p = df_probe(
            &a.container_ns,
            b.container_ip,
            CONTAINER_MTU as usize,
            Duration::from_secs(1),
        )
        .expect("DF probe");
        if matches!(p, DfProbe::FragNeeded { .. }) || Instant::now() >= deadline {
            break p;
        }
    };
    eprintln!("DF probe of {CONTAINER_MTU} bytes a->b: {got:?}");
    assert_eq!(
        got,
        DfProbe::FragNeeded {
            mtu: USABLE,
            from: b.container_ip
        }
    );
    // One that fits still gets through with DF.
    let fits = df_probe(
        &a.container_ns,
        b.container_ip,
        usize::from(USABLE),
        Duration::from_secs(2),
    )
    .expect("DF probe that fits");
    assert_eq!(
        fits,
        DfProbe::Reply,
        "a {USABLE}-byte DF echo fits the path"
    );
    // Without DF the same oversize echo is delivered: dnet sends it with outer DF off and the
    // kernel fragments the GRE packet. (The container forgets the path MTU it just learned, or
    // it would fragment the echo itself.)
    dnet_testbed::cmd::ip_in(&a.container_ns, &["route", "flush", "cache"]).expect("flush cache");
    let frag_before = event(&sa, "fragmented");
    let nodf = nodf_echo(
        &a.container_ns,
        b.container_ip,
        CONTAINER_MTU as usize,
        Duration::from_secs(3),
    )
    .expect("non-DF echo");
    assert_eq!(
        nodf,
        DfProbe::Reply,
        "an oversize echo without DF is delivered\na: {:?}\nb: {:?}",
        sa.stats(),
        sb.stats()
    );
    assert!(
        event(&sa, "fragmented") > frag_before,
        "counted as fragmented"
    );

    // 3. With the path MTU known, transfers both ways lose nothing on the wire: every frame a
    //    sends into the tunnel reaches b and vice versa (b's outer packets are fragmented by
    //    its kernel: --mtu 1462 does not fit its 1400 underlay, so it clears DF).
    let before = settled_stats(&[&sa, &sb]);
    for (from, to, ip) in [
        (&a.container_ns, &b.container_ns, b.container_ip),
        (&b.container_ns, &a.container_ns, a.container_ip),
    ] {
        let r = tcp_transfer(from, to, ip, 16 * MIB, Duration::from_secs(90))
            .expect("tcp transfer with PMTU known");
        assert_eq!(r.bytes, 16 * MIB);
        eprintln!("tcp {from}->{to}: {:.2} Gbit/s", r.gbit_per_s());
    }
    let after = settled_stats(&[&sa, &sb]);
    let tun = |s, ip| tunnel_port(s, ip).expect("tunnel port").clone();
    let d = |i: usize, peer| {
        let (x, y) = (tun(&after[i], peer), tun(&before[i], peer));
        (x.tx_packets - y.tx_packets, x.rx_packets - y.rx_packets)
    };
    let (a_tx, a_rx) = d(0, b.underlay_ip);
    let (b_tx, b_rx) = d(1, a.underlay_ip);
    eprintln!("wire: a->b sent {a_tx} received {b_rx}; b->a sent {b_tx} received {a_rx}");
    assert_eq!(a_tx, b_rx, "frames lost between a and b");
    assert_eq!(b_tx, a_rx, "frames lost between b and a");

    for (name, s) in [("a", &after[0]), ("b", &after[1])] {
        let nz = |v: &[dnet_proto::DropCount]| {
            v.iter()
                .filter(|d| d.count > 0)
                .map(|d| format!("{} {}", d.reason, d.count))
                .collect::<Vec<_>>()
                .join(", ")
        };
        eprintln!(
            "switch {name}: drops [{}] events [{}]",
            nz(&s.drops),
            nz(&s.events)
        );
        let explained = drop_count(s, "too_big_icmp") + drop_count(s, "too_big");
        assert_eq!(
            total_drops(s),
            explained,
            "switch {name} dropped frames for reasons other than the path MTU: {:?}",
            s.drops
        );
    }
    assert!(
        drop_count(&after[0], "too_big_icmp") >= 1,
        "a answered oversize DF frames with ICMP"
    );
}
