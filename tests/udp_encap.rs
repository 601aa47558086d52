//! `--encap udp` (GRE-in-UDP, RFC 8086) end to end: two hosts, pings and verified TCP both
//! ways, and proof that the kernel batching it exists for happened: TCP super-frames left as
//! UDP GSO messages and arrived as `UDP_GRO` reads; runs of small datagrams travel the same
//! way and reach the TAP as UDP super-frames (with plain GRE too). A plain-GRE switch does not
//! talk to a GRE-in-UDP one.

use dnet_e2e::{drop_count, event_count, settled_stats, total_drops};
use dnet_testbed::netns::spawn_in_netns;
use dnet_testbed::traffic::{ping, tcp_transfer, udp_unicast};
use dnet_testbed::{tap_port, tunnel_port, SwitchOptions, Testbed};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

const MIB: u64 = 1 << 20;

fn udp() -> SwitchOptions {
    SwitchOptions {
        extra_args: vec!["--encap".into(), "udp".into()],
        ..SwitchOptions::default()
    }
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn gre_in_udp_carries_verified_tcp_with_gso_and_gro() {
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
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn gre_in_udp_batches_runs_of_small_datagrams_at_both_ends() {
    small_datagram_burst(&udp(), true);
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn plain_gre_coalesces_runs_of_small_datagrams_into_the_tap() {
    small_datagram_burst(&SwitchOptions::default(), false);
}

/// 20000 small token-checked datagrams from a's container to b's. With GRE-in-UDP, a sends
/// runs of them as UDP GSO messages; with either encapsulation, b writes runs of them to its
/// TAP as UDP super-frames, which b's container splits back.
fn small_datagram_burst(opts: &SwitchOptions, gre_in_udp: bool) {
    let tb = Testbed::new(2).expect("building testbed");
    let sw = [
        tb.start_switch_with(0, opts).expect("switch a"),
        tb.start_switch_with(1, opts).expect("switch b"),
    ];
    let (a, b) = (tb.host(0), tb.host(1));
    let t = Duration::from_secs(2);
    assert_eq!(
        ping(&a.container_ns, b.container_ip, 3, t)
            .expect("ping")
            .received,
        3
    );
    let before = settled_stats(&[&sw[0], &sw[1]]);
    // Small equal datagrams in quick bursts: whenever a worker reads two or more in one
    // burst, they travel and reach the TAP together. Every one that arrives carries the
    // test's token.
    const N: u64 = 20_000;
    let got = udp_unicast(
        &a.container_ns,
        &b.container_ns,
        b.container_ip,
        7777,
        N,
        Duration::from_millis(500),
    )
    .expect("udp burst a->b");
    let after = settled_stats(&[&sw[0], &sw[1]]);
    let d = |i: usize, f: &dyn Fn(&dnet_proto::Stats) -> u64| f(&after[i]) - f(&before[i]);
    let gso = d(0, &|s| event_count(s, "udp_gso_sent"));
    let gro = d(1, &|s| event_count(s, "udp_gro_received"));
    let a_tx = d(0, &|s| {
        tunnel_port(s, b.underlay_ip)
            .expect("a's tunnel")
            .tx_packets
    });
    let b_rx = d(1, &|s| {
        tunnel_port(s, a.underlay_ip)
            .expect("b's tunnel")
            .rx_packets
    });
    let coalesced = d(1, &|s| event_count(s, "udp_coalesced"));
    eprintln!(
        "{got} of {N} datagrams arrived; a sent {a_tx} frames in {gso} GSO messages (and \
         single datagrams), b read {gro} coalesced and wrote {coalesced} UDP super-frames"
    );
    // How many of the N arrive depends on CPU time: a sender that outruns a switch the
    // scheduler left waiting loses datagrams at the TAP's queue, before any switch sees them.
    // So the test asserts what the switches did with every frame they took, not a share of N.
    assert!(got > 0, "none of {N} datagrams reached b");
    let a_read = d(0, &|s| tap_port(s).expect("a's TAP").rx_packets);
    assert_eq!(
        a_read, a_tx,
        "a read {a_read} frames from its TAP but sent {a_tx} into the tunnel"
    );
    if gre_in_udp {
        assert!(
            gso > 0,
            "a never sent a run of small frames as one GSO message"
        );
    } else {
        assert_eq!(gso + gro, 0, "UDP GSO/GRO counted without --encap udp");
    }
    // The receiving container's stack split b's super-frames back: the tokens counted above
    // are whole, checked datagrams.
    assert!(
        coalesced > 0,
        "b never wrote a UDP run to its TAP as one frame"
    );
    // Each datagram of a GSO message arrived and was counted as its own frame, or, when b's
    // worker was not scheduled in time for a burst, the kernel found b's receive ring full
    // and b counted that (as a NIC counts an overrun ring): nothing goes missing uncounted.
    let ring_full = d(1, &|s| drop_count(s, "rx_ring_full"));
    assert_eq!(
        a_tx,
        b_rx + ring_full,
        "a sent {a_tx} frames, b received {b_rx} and counted {ring_full} lost to a full ring"
    );
    assert!(b_rx >= got);
    assert_eq!(
        total_drops(&after[1]) - ring_full,
        total_drops(&before[1]),
        "b dropped"
    );
    assert_eq!(total_drops(&after[0]), total_drops(&before[0]), "a dropped");
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn gre_in_udp_gives_each_flow_its_own_source_port() {
    let tb = Testbed::new(2).expect("building testbed");
    let mut opts = udp();
    opts.extra_args.extend(["--workers".into(), "2".into()]);
    let sw = [
        tb.start_switch_with(0, &opts).expect("switch a"),
        tb.start_switch_with(1, &opts).expect("switch b"),
    ];
    let (a, b) = (tb.host(0), tb.host(1));
    // Watch the underlay at b: the UDP source port of every datagram from a to 4754.
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let (st, from) = (stop.clone(), a.underlay_ip);
    let watcher = spawn_in_netns(&b.ns, move || -> BTreeMap<u16, u64> {
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP)).expect("raw UDP");
        s.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        ready_tx.send(()).expect("ready");
        let mut ports = BTreeMap::new();
        let mut buf = [0u8; 65536];
        while !st.load(Ordering::Relaxed) {
            let Ok(n) = (&s).read(&mut buf) else {
                continue;
            };
            let ihl = usize::from(buf[0] & 0x0f) * 4;
            if n >= ihl + 8
                && buf[12..16] == from.octets()
                && buf[ihl + 2..ihl + 4] == 4754u16.to_be_bytes()
            {
                *ports
                    .entry(u16::from_be_bytes([buf[ihl], buf[ihl + 1]]))
                    .or_insert(0) += 1;
            }
        }
        ports
    })
    .expect("watcher thread");
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("watcher ready");
    // Eight TCP connections, one after the other: eight flows, each from its own port.
    for _ in 0..8 {
        let r = tcp_transfer(
            &a.container_ns,
            &b.container_ns,
            b.container_ip,
            MIB,
            Duration::from_secs(30),
        )
        .expect("tcp transfer");
        assert_eq!(r.bytes, MIB);
    }
    stop.store(true, Ordering::Relaxed);
    let ports = watcher.join().expect("join").expect("netns");
    eprintln!("UDP source ports of a's datagrams seen at b (port: datagrams): {ports:?}");
    assert!(
        ports.len() >= 2,
        "eight flows left from one source port: {ports:?}"
    );
    assert!(
        !ports.contains_key(&4754),
        "data left from the listening port, not a flow's port: {ports:?}"
    );
    let st = settled_stats(&[&sw[0], &sw[1]]);
    for (i, s) in st.iter().enumerate() {
        assert_eq!(total_drops(s), 0, "switch {i} dropped: {:?}", s.drops);
    }
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn plain_gre_and_gre_in_udp_do_not_mix() {
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

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn gre_in_udp_learns_the_path_mtu_and_segments_to_it() {
    // A router link of MTU 1400 between the hosts while the containers keep 1454 (what fits a
    // 1500 underlay): GSO messages must be cut to the path, and DF packets answered with the
    // usable MTU, 1400 − IPv4 20 − UDP 8 − GRE 4 − Ethernet 14 = 1354.
    let tb = Testbed::routed(1400).expect("building routed testbed");
    let mut opts = udp();
    opts.extra_args.extend(["--mtu".into(), "1454".into()]);
    let sa = tb.start_switch_with(0, &opts).expect("switch a");
    let sb = tb.start_switch_with(1, &opts).expect("switch b");
    let (a, b) = (tb.host(0), tb.host(1));
    assert_eq!(
        ping(&a.container_ns, b.container_ip, 3, Duration::from_secs(2))
            .expect("ping")
            .received,
        3
    );
    let bytes = 16 * MIB;
    let r = tcp_transfer(
        &a.container_ns,
        &b.container_ns,
        b.container_ip,
        bytes,
        Duration::from_secs(90),
    )
    .expect("tcp transfer across the 1400 link");
    assert_eq!(r.bytes, bytes);
    // The transfer may already have taught a's container the path MTU (dnet answered a DF
    // segment with frag-needed), so its kernel may refuse the probe locally: forget the
    // learned MTU and ask again.
    let flush = || {
        let st = std::process::Command::new("ip")
            .args(["-n", &a.container_ns, "route", "flush", "cache"])
            .status()
            .expect("ip route flush cache");
        assert!(st.success());
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let got = loop {
        flush();
        let p = dnet_testbed::traffic::df_probe(
            &a.container_ns,
            b.container_ip,
            1454,
            Duration::from_secs(1),
        );
        match p {
            Ok(p @ dnet_testbed::traffic::DfProbe::FragNeeded { .. }) => break p,
            other if std::time::Instant::now() >= deadline => {
                panic!("no frag-needed for a 1454-byte DF echo: {other:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    assert_eq!(
        got,
        dnet_testbed::traffic::DfProbe::FragNeeded {
            mtu: 1354,
            from: b.container_ip
        }
    );
    let st = settled_stats(&[&sa, &sb]);
    eprintln!(
        "gre-in-udp over a 1400 link: udp_gso_sent {}, drops a {:?}",
        event_count(&st[0], "udp_gso_sent"),
        st[0]
            .drops
            .iter()
            .filter(|d| d.count > 0)
            .collect::<Vec<_>>()
    );
    assert!(event_count(&st[0], "udp_gso_sent") > 0);
    // Only the expected kinds of drops: answered DF frames and the sends refused before the
    // path MTU was re-read.
    for d in st.iter().flat_map(|s| s.drops.iter()) {
        assert!(
            d.count == 0 || d.reason == "too_big_icmp" || d.reason == "too_big",
            "unexpected drops {}: {}",
            d.reason,
            d.count
        );
    }
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn gre_in_udp_with_outer_df_off_fragments_instead_of_stalling() {
    // --mtu 1462 does not fit a 1500 underlay with 46 bytes of GRE-in-UDP, so outer DF is off
    // and the kernel must fragment: GSO messages (which it cannot fragment) give way to one
    // datagram per segment.
    let tb = Testbed::routed(1400).expect("building routed testbed");
    let mut opts = udp();
    opts.extra_args.extend(["--mtu".into(), "1462".into()]);
    let _sa = tb.start_switch_with(0, &opts).expect("switch a");
    let _sb = tb.start_switch_with(1, &opts).expect("switch b");
    let (a, b) = (tb.host(0), tb.host(1));
    let bytes = 8 * MIB;
    let r = tcp_transfer(
        &a.container_ns,
        &b.container_ns,
        b.container_ip,
        bytes,
        Duration::from_secs(60),
    )
    .expect("tcp transfer with outer fragmentation");
    assert_eq!(r.bytes, bytes);
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn the_gre_in_udp_port_drops_and_counts_hostile_datagrams() {
    let tb = Testbed::new(2).expect("building testbed");
    let sa = tb.start_switch_with(0, &udp()).expect("switch a");
    let _sb = tb.start_switch_with(1, &udp()).expect("switch b");
    let (a, b) = (tb.host(0), tb.host(1));
    // Sent from host b's namespace (a configured peer of a), to a's GRE-in-UDP port.
    let send = |payloads: &[&[u8]]| {
        let s = dnet_testbed::netns::in_netns(&b.ns, || {
            std::net::UdpSocket::bind((b.underlay_ip, 0)).expect("udp socket")
        })
        .expect("entering host b");
        for p in payloads {
            s.send_to(p, (a.underlay_ip, 4754)).expect("send");
        }
    };
    let before = sa.stats().expect("stats");
    let tap_tx = |s: &dnet_proto::Stats| dnet_testbed::tap_port(s).expect("tap").tx_packets;
    let mut frame = vec![0u8, 0, 0x65, 0x58];
    frame.extend_from_slice(&[0xff; 6]); // broadcast destination
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x99, 0x08, 0x00]);
    frame.resize(64, 0);
    let mut bad_version = frame.clone();
    bad_version[1] = 1;
    let mut wrong_proto = frame.clone();
    wrong_proto[2..4].copy_from_slice(&[0x08, 0x00]);
    let mut keyed = vec![0x20u8, 0, 0x65, 0x58, 0, 0, 0, 7];
    keyed.extend_from_slice(&frame[4..]);
    send(&[&[], &[0x00, 0x00], &bad_version, &wrong_proto, &keyed]);
    std::thread::sleep(Duration::from_millis(300));
    let after = sa.stats().expect("stats");
    let moved = |r: &str| drop_count(&after, r) - drop_count(&before, r);
    assert_eq!(moved("gre_truncated"), 2, "empty and 2-byte datagrams");
    assert_eq!(moved("gre_version"), 1);
    assert_eq!(moved("gre_protocol"), 1);
    assert_eq!(moved("wrong_key"), 1);
    assert_eq!(
        tap_tx(&after),
        tap_tx(&before),
        "a hostile datagram reached the TAP"
    );
    // The same well-formed frame from an address that is not a peer.
    let dev = dnet_testbed::UNDERLAY_IF;
    dnet_testbed::cmd::ip_in(&b.ns, &["addr", "add", "10.200.0.99/24", "dev", dev])
        .expect("ip addr");
    let s = dnet_testbed::netns::in_netns(&b.ns, || {
        std::net::UdpSocket::bind((std::net::Ipv4Addr::new(10, 200, 0, 99), 0)).expect("udp socket")
    })
    .expect("entering host b");
    s.send_to(&frame, (a.underlay_ip, 4754)).expect("send");
    std::thread::sleep(Duration::from_millis(300));
    let last = sa.stats().expect("stats");
    assert_eq!(
        drop_count(&last, "unknown_peer") - drop_count(&after, "unknown_peer"),
        1
    );
    assert_eq!(tap_tx(&last), tap_tx(&before));
}
