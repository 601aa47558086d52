//! `--encap udp` (GRE-in-UDP, RFC 8086) end to end: two hosts, pings and verified TCP both
//! ways, and proof that the kernel batching it exists for happened: TCP super-frames left as
//! UDP GSO messages and arrived as `UDP_GRO` reads. A plain-GRE switch does not talk to it.

use dnet_e2e::{drop_count, event_count, settled_stats, skip_unless_root, total_drops};
use dnetctl::testbed::{tunnel_port, SwitchOptions, Testbed};
use dnetctl::traffic::{ping, tcp_transfer};
use std::time::Duration;

const MIB: u64 = 1 << 20;

fn udp() -> SwitchOptions {
    SwitchOptions {
        extra_args: vec!["--encap".into(), "udp".into()],
        ..SwitchOptions::default()
    }
}

#[test]
fn gre_in_udp_carries_verified_tcp_with_gso_and_gro() {
    if skip_unless_root("gre_in_udp_carries_verified_tcp_with_gso_and_gro") {
        return;
    }
    let tb = Testbed::new(2).expect("building testbed");
    let sw = [
        tb.start_switch_with(0, &udp()).expect("switch a"),
        tb.start_switch_with(1, &udp()).expect("switch b"),
    ];
    let (a, b) = (tb.host(0), tb.host(1));
    let st = sw[0].stats().expect("stats");
    assert_eq!(
        st.mtu, 1454,
        "TAP MTU: 1500 - IPv4 20 - UDP 8 - GRE 4 - Ethernet 14"
    );
    let t = Duration::from_secs(2);
    assert_eq!(
        ping(&a.container_ns, b.container_ip, 5, t)
            .expect("ping")
            .received,
        5
    );
    assert_eq!(
        ping(&b.container_ns, a.container_ip, 5, t)
            .expect("ping")
            .received,
        5
    );

    let bytes = 32 * MIB;
    for (from, to) in [(a, b), (b, a)] {
        let r = tcp_transfer(
            &from.container_ns,
            &to.container_ns,
            to.container_ip,
            bytes,
            Duration::from_secs(60),
        )
        .expect("tcp transfer");
        assert_eq!(r.bytes, bytes);
        eprintln!(
            "gre-in-udp tcp {}->{}: {:.2} Gbit/s",
            from.letter,
            to.letter,
            r.gbit_per_s()
        );
    }
    let st = settled_stats(&[&sw[0], &sw[1]]);
    for (i, s) in st.iter().enumerate() {
        let gso = event_count(s, "udp_gso_sent");
        let gro = event_count(s, "udp_gro_received");
        eprintln!("switch {i}: udp_gso_sent {gso}, udp_gro_received {gro}");
        assert!(gso > 0, "switch {i} never sent a UDP GSO message: {s:?}");
        assert!(gro > 0, "switch {i} never read coalesced datagrams: {s:?}");
        assert_eq!(total_drops(s), 0, "switch {i} dropped: {:?}", s.drops);
    }
    // What one tunnel end sent, the other received (segments counted on both sides).
    let ab = tunnel_port(&st[0], b.underlay_ip).expect("a's tunnel");
    let ba = tunnel_port(&st[1], a.underlay_ip).expect("b's tunnel");
    assert_eq!(ab.tx_packets, ba.rx_packets);
    assert_eq!(ba.tx_packets, ab.rx_packets);
}

#[test]
fn plain_gre_and_gre_in_udp_do_not_mix() {
    if skip_unless_root("plain_gre_and_gre_in_udp_do_not_mix") {
        return;
    }
    let tb = Testbed::new(2).expect("building testbed");
    let sw = [
        tb.start_switch_with(0, &udp()).expect("switch a"),
        tb.start_switch(1).expect("switch b"),
    ];
    let (a, b) = (tb.host(0), tb.host(1));
    let r = ping(
        &a.container_ns,
        b.container_ip,
        3,
        Duration::from_millis(500),
    )
    .expect("ping");
    assert_eq!(r.received, 0, "a GRE-in-UDP switch reached a plain GRE one");
    let st = settled_stats(&[&sw[0], &sw[1]]);
    // b's raw GRE socket never sees UDP; a's UDP port never sees protocol 47. Each side sent.
    assert!(tunnel_port(&st[0], b.underlay_ip).expect("port").tx_packets > 0);
    assert_eq!(
        tunnel_port(&st[1], a.underlay_ip).expect("port").rx_packets,
        0
    );
    assert_eq!(drop_count(&st[1], "unknown_peer"), 0);
}
