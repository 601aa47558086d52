//! Two hosts, one container each, joined by two dnet-switch processes: connectivity, a verified
//! TCP transfer, and switch counters that agree with what was sent.

use dnet_e2e::{drop_count, event_count, settled_stats, total_drops};
use dnet_testbed::traffic::{ping, tcp_transfer};
use dnet_testbed::{tap_port, tunnel_port, SwitchOptions, Testbed, BRIDGE, DEFAULT_TAP};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn ping_and_verified_tcp_between_containers() {
    let tb = Testbed::new(2).expect("building testbed");
    let sw = tb.start_switches().expect("starting switches");
    let (a, b) = (tb.host(0), tb.host(1));

    let p = ping(&a.container_ns, b.container_ip, 10, Duration::from_secs(2)).expect("ping a->b");
    assert_eq!(p.received, 10, "ping a->b lost replies: {p:?}");
    let p = ping(&b.container_ns, a.container_ip, 5, Duration::from_secs(2)).expect("ping b->a");
    assert_eq!(p.received, 5, "ping b->a lost replies: {p:?}");

    let bytes = 32 * MIB;
    let r = tcp_transfer(
        &a.container_ns,
        &b.container_ns,
        b.container_ip,
        bytes,
        Duration::from_secs(60),
    )
    .expect("tcp transfer a->b");
    assert_eq!(r.bytes, bytes);
    eprintln!("tcp a->b: {:.2} Gbit/s", r.gbit_per_s());

    let st = settled_stats(&[&sw[0], &sw[1]]);
    let (sa, sb) = (&st[0], &st[1]);
    eprintln!("switch a: {sa:#?}\nswitch b: {sb:#?}");
    let port =
        |s, ip| tunnel_port(s, ip).unwrap_or_else(|| panic!("no tunnel port to {ip} in {s:?}"));
    let (a_tap, a_tun) = (
        tap_port(sa).expect("tap port of a"),
        port(sa, b.underlay_ip),
    );
    let (b_tap, b_tun) = (
        tap_port(sb).expect("tap port of b"),
        port(sb, a.underlay_ip),
    );
    // At least one frame per full-size segment went a -> b.
    let min_frames = bytes / u64::from(sa.mtu);
    assert!(
        a_tap.rx_packets >= min_frames,
        "a TAP rx {} < {min_frames}",
        a_tap.rx_packets
    );
    assert!(
        a_tun.tx_bytes >= bytes,
        "a tunnel tx bytes {} < {bytes}",
        a_tun.tx_bytes
    );
    // With two hosts every tunnel frame of a came from its TAP, every TAP frame of b from its
    // tunnel, and b cannot receive more than a sent (and vice versa for the replies).
    assert!(
        a_tap.rx_packets >= a_tun.tx_packets,
        "a: TAP rx {} < tunnel tx {}",
        a_tap.rx_packets,
        a_tun.tx_packets
    );
    assert!(
        b_tun.rx_packets <= a_tun.tx_packets,
        "b tunnel rx {} > a tunnel tx {}",
        b_tun.rx_packets,
        a_tun.tx_packets
    );
    assert!(
        b_tun.rx_packets >= min_frames,
        "b tunnel rx {} < {min_frames}",
        b_tun.rx_packets
    );
    assert!(
        b_tap.tx_packets <= b_tun.rx_packets,
        "b TAP tx {} > tunnel rx {}",
        b_tap.tx_packets,
        b_tun.rx_packets
    );
    assert!(
        b_tap.tx_packets >= min_frames,
        "b TAP tx {} < {min_frames}",
        b_tap.tx_packets
    );
    assert!(b_tap.rx_packets >= b_tun.tx_packets && a_tun.rx_packets <= b_tun.tx_packets);
    assert!(
        a_tun.rx_packets > 0 && a_tap.tx_packets > 0,
        "no replies counted on a"
    );
    // Frames a's TAP took in are either in the tunnel or counted as dropped.
    assert!(
        a_tun.tx_packets + total_drops(sa) >= a_tap.rx_packets,
        "a lost frames uncounted: TAP rx {}, tunnel tx {}, drops {}",
        a_tap.rx_packets,
        a_tun.tx_packets,
        total_drops(sa)
    );
    assert!(
        sa.fdb_entries >= 2 && sb.fdb_entries >= 2,
        "MACs not learned: a {} b {}",
        sa.fdb_entries,
        sb.fdb_entries
    );
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn tap_mtu_and_bridge_membership() {
    let tb = Testbed::new(2).expect("building testbed");
    let sw = tb.start_switch(0).expect("starting switch");
    let st = sw.stats().expect("stats");
    // GRE over IPv4 on a 1500-byte underlay: 1500 - 20 (IP) - 4 (GRE) - 14 (inner Ethernet).
    assert_eq!(st.mtu, 1462, "default TAP MTU on a 1500 underlay");
    assert_eq!(st.tap, DEFAULT_TAP);
    assert_eq!(
        st.local,
        tb.host(0).underlay_ip,
        "local address picked from the route to the peer"
    );
    assert_eq!(
        st.ports.len(),
        2,
        "one TAP and one tunnel port: {:?}",
        st.ports
    );
    let link =
        dnet_testbed::cmd::ip_in(&tb.host(0).ns, &["-o", "link", "show", "dev", DEFAULT_TAP])
            .expect("TAP exists");
    assert!(
        link.contains(&format!("master {BRIDGE}")),
        "TAP not in {BRIDGE}: {link}"
    );
    assert!(link.contains("mtu 1462"), "TAP MTU: {link}");
}

/// Plain GRE leaves through the packet ring (the default) only once the kernel has resolved
/// the peer's next hop: the first frames go through the raw GRE socket, which makes the kernel
/// resolve it, and are counted as `ring_fallback`; then frames stop falling back.
#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn first_frames_fall_back_to_the_raw_socket_until_the_next_hop_resolves() {
    if std::env::var("DNET_SWITCH_ARGS").is_ok_and(|v| v.contains("--packet-rings")) {
        eprintln!("skipped: DNET_SWITCH_ARGS sets --packet-rings; this test is about the default");
        return;
    }
    let tb = Testbed::new(2).expect("building testbed");
    let sw = tb.start_switches().expect("starting switches");
    let (a, b) = (tb.host(0), tb.host(1));
    // (fallbacks of a, of b; tunnel frames sent by a, by b), once counters have settled (a
    // sender counts a frame after its send returns, which may be after the reply arrived).
    let counts = || {
        let st = settled_stats(&[&sw[0], &sw[1]]);
        let sent = |s, peer| tunnel_port(s, peer).expect("tunnel port").tx_packets;
        (
            event_count(&st[0], "ring_fallback"),
            event_count(&st[1], "ring_fallback"),
            sent(&st[0], b.underlay_ip),
            sent(&st[1], a.underlay_ip),
        )
    };
    // Fresh namespaces: nothing has resolved b's address on a's underlay yet.
    let neigh = dnet_testbed::cmd::ip_in(&a.ns, &["neigh", "show", &b.underlay_ip.to_string()])
        .expect("ip neigh");
    assert!(
        !neigh.contains("lladdr"),
        "b already resolved on a before any traffic: {neigh}"
    );
    let p = ping(&a.container_ns, b.container_ip, 1, Duration::from_secs(2)).expect("ping");
    assert_eq!(p.received, 1, "the first ping got no reply: {p:?}");
    assert!(
        counts().0 >= 1,
        "a's first frame to an unresolved next hop was not counted as ring_fallback"
    );
    // Now the neighbour resolves and the ring takes over: wait for a round of 20 pings in
    // which neither switch fell back, while both tunnels carried them.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let before = counts();
        let p = ping(&a.container_ns, b.container_ip, 20, Duration::from_secs(2)).expect("ping");
        assert_eq!(p.received, 20, "pings lost: {p:?}");
        let after = counts();
        let moved = (after.2 - before.2, after.3 - before.3);
        assert!(moved.0 >= 20 && moved.1 >= 20, "tunnels carried {moved:?}");
        if (after.0, after.1) == (before.0, before.1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "frames still fall back to the raw socket after 20 s: a {} b {}",
            after.0,
            after.1
        );
    }
}

/// After an exchange's traffic, a worker keeps polling for `--busy-poll` microseconds before it
/// sleeps, so a reply that comes back within the window is taken without a wake-up
/// (`busy_poll_hit`); a window that ends empty counts as `busy_poll_miss`. `--busy-poll 0`
/// never polls.
#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn busy_polling_takes_replies_and_can_be_turned_off() {
    let tb = Testbed::new(2).expect("building testbed");
    let (a, b) = (tb.host(0), tb.host(1));
    let with = |args: &[&str]| SwitchOptions {
        extra_args: args.iter().map(|a| a.to_string()).collect(),
        ..SwitchOptions::default()
    };
    // a polls for 2 ms (ten times the default), so each reply falls inside the window however
    // loaded the machine is; b does not poll at all.
    let sw = [
        tb.start_switch_with(0, &with(&["--busy-poll", "2000"]))
            .expect("starting switch a"),
        tb.start_switch_with(1, &with(&["--busy-poll", "0"]))
            .expect("starting switch b"),
    ];
    // Exchanges after quiet spells, as a window needs: 16 windows (32 ms) without traffic
    // before each ping. The pause shapes the traffic; it waits for nothing.
    for i in 0..20 {
        std::thread::sleep(Duration::from_millis(40));
        let p = ping(&a.container_ns, b.container_ip, 1, Duration::from_secs(2)).expect("ping");
        assert_eq!(p.received, 1, "ping {i} a->b lost its reply: {p:?}");
    }

    // The last window ends empty 2 ms after the last reply: wait for that miss.
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        let st = settled_stats(&[&sw[0], &sw[1]]);
        if event_count(&st[0], "busy_poll_miss") > 0 || Instant::now() >= deadline {
            break st;
        }
    };
    let count = |i: usize, what| event_count(&st[i], what);
    eprintln!(
        "a: busy_poll_hit {} busy_poll_miss {}; b: {} {}",
        count(0, "busy_poll_hit"),
        count(0, "busy_poll_miss"),
        count(1, "busy_poll_hit"),
        count(1, "busy_poll_miss")
    );
    // a forwards each request and polls; the reply comes back from b within the window.
    assert!(
        count(0, "busy_poll_hit") >= 1,
        "a took no reply while polling"
    );
    assert!(
        count(0, "busy_poll_miss") >= 1,
        "a's last polling window never ended as a miss"
    );
    assert_eq!(
        (count(1, "busy_poll_hit"), count(1, "busy_poll_miss")),
        (0, 0),
        "b polled with --busy-poll 0"
    );
}

/// A NIC's receive path runs GRO before any socket sees a packet, and the kernel's GRE
/// offload merges consecutive plain GRE packets of one inner TCP flow into one packet of up to
/// 64 KiB, far larger than the TAP's MTU. Modelled here on b's underlay veth: GRO on, its
/// NAPI in a thread of its own (so packets wait and arrive in batches, as from a NIC's ring),
/// and TSO off on a's end (veth hands its peer's GRO only packets that are not already GSO).
/// b must pass such packets on as TCP super-frames, not drop them as giants: before, TCP
/// over plain GRE collapsed to a few hundred kbit/s here, every merged packet a `giant`.
#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn tcp_survives_an_underlay_that_merges_gre_packets() {
    underlay_gro(&[]);
}

/// The same with GRE checksums: GRO keeps the first packet's checksum, stale for the merged
/// packet, after verifying every packet's; dnet must not drop it as `gre_checksum`.
#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn tcp_survives_an_underlay_that_merges_gre_packets_with_checksums() {
    underlay_gro(&["--csum"]);
}

fn underlay_gro(args: &[&str]) {
    let tb = Testbed::new(2).expect("building testbed");
    let (a, b) = (tb.host(0), tb.host(1));
    let ul = dnet_testbed::UNDERLAY_IF;
    let in_ns = |ns: &str, cmd: &str| {
        dnet_testbed::cmd::run("ip", &["netns", "exec", ns, "sh", "-c", cmd])
            .unwrap_or_else(|e| panic!("`{cmd}` in {ns}: {e}"))
    };
    in_ns(&a.ns, &format!("ethtool -K {ul} tso off"));
    in_ns(&b.ns, &format!("ethtool -K {ul} gro on"));
    in_ns(&b.ns, &format!("echo 1 > /sys/class/net/{ul}/threaded"));
    let opts = SwitchOptions {
        extra_args: args.iter().map(|a| a.to_string()).collect(),
        ..SwitchOptions::default()
    };
    let sw: Vec<_> = (0..2)
        .map(|i| tb.start_switch_with(i, &opts).expect("starting switch"))
        .collect();

    let bytes = 64 * MIB;
    let r = tcp_transfer(
        &a.container_ns,
        &b.container_ns,
        b.container_ip,
        bytes,
        Duration::from_secs(120),
    )
    .expect("tcp transfer a->b over an underlay with GRO");
    assert_eq!(r.bytes, bytes);
    eprintln!(
        "tcp a->b with underlay GRO {args:?}: {:.2} Gbit/s",
        r.gbit_per_s()
    );

    let st = settled_stats(&[&sw[0], &sw[1]]);
    let merged = event_count(&st[1], "gre_gro_received");
    let giants = drop_count(&st[1], "giant");
    // Anything b dropped but a full ring (which load may cause) means mishandled packets.
    let dropped: Vec<_> = st[1]
        .drops
        .iter()
        .filter(|d| d.count > 0 && d.reason != "rx_ring_full")
        .map(|d| (d.reason.clone(), d.count))
        .collect();
    eprintln!("b: gre_gro_received {merged}, giant {giants}, other drops {dropped:?}");
    assert!(
        merged > 0,
        "b saw no merged GRE packet: the underlay's GRO did not run, so this test tested nothing"
    );
    assert_eq!(giants, 0, "b dropped merged packets as giants");
    assert!(dropped.is_empty(), "b dropped packets: {dropped:?}");
}
