//! MAC flood: one container sends frames from up to 1,000,000 random source MACs. The MAC
//! tables stay at their bound (8192: new stations are not learned once full and are
//! delivered by flooding, counted as `fdb_full`; learned stations are never evicted by
//! newcomers), stations learned before keep being forwarded without flooding, other
//! containers' traffic keeps flowing, and the switch's memory stays flat.
//!
//! `DNET_MACFLOOD_COUNT` (default 1,000,000), `DNET_MACFLOOD_PPS` (default 100,000) and
//! `DNET_MACFLOOD_SECS` (default 20) bound the flood; the test prints how many frames it sent and what the switches saw.

use dnet_e2e::{event_count, rss_kib, settled_stats};
use dnet_testbed::cmd::{ip_in, ipn};
use dnet_testbed::netns::in_netns;
use dnet_testbed::traffic::{ping, udp_unicast};
use dnet_testbed::{tap_port, Testbed, CONTAINER_IF, DEFAULT_TAP};
use std::time::{Duration, Instant};

const FDB_BOUND: usize = 8192;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mac_of(ns: &str, dev: &str) -> [u8; 6] {
    let out = ipn(ns, &format!("-o link show dev {dev}")).expect("ip link show");
    let s = out
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("link/ether in ip link output");
    let mut m = [0u8; 6];
    for (b, h) in m.iter_mut().zip(s.split(':')) {
        *b = u8::from_str_radix(h, 16).expect("hex");
    }
    m
}

/// An AF_PACKET socket on `dev` in `ns` that only sends.
fn packet_sender(ns: &str, dev: &str) -> std::os::fd::OwnedFd {
    let dev = dev.to_string();
    in_netns(ns, move || {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket/bind calls; the fd is owned right away.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
            let name = std::ffi::CString::new(dev).unwrap();
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
            assert!(sll.sll_ifindex > 0, "no such interface");
            let r = libc::bind(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
            fd
        }
    })
    .expect("netns")
}

/// Sends up to `count` frames to `dst`, each from a new random unicast source MAC, at most
/// `pps` a second, for at most `secs`. Returns how many were sent.
fn flood(fd: &std::os::fd::OwnedFd, dst: [u8; 6], count: u64, pps: u64, secs: u64) -> u64 {
    use std::os::fd::AsRawFd;
    let mut f = [0u8; 60];
    f[..6].copy_from_slice(&dst);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut sent = 0;
    while sent < count {
        if sent.is_multiple_of(1024) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            // Paced, so the bridge and TAP queues in front of the switch do not drop most of
            // it: the switch itself should see (nearly) every source MAC.
            let due = Duration::from_secs_f64(sent as f64 / pps.max(1) as f64);
            if let Some(wait) = due.checked_sub(now - start) {
                std::thread::sleep(wait);
            }
        }
        // xorshift64: a different source MAC for every frame.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_be_bytes();
        f[6..12].copy_from_slice(&b[2..8]);
        f[6] = (f[6] & 0xfc) | 0x02; // unicast, locally administered
                                     // SAFETY: sending a valid buffer on an open socket.
        let r = unsafe { libc::send(fd.as_raw_fd(), f.as_ptr().cast(), f.len(), 0) };
        if r == f.len() as isize {
            sent += 1;
        } else {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    sent
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn mac_flood_keeps_table_bounded_learned_stations_working_and_memory_flat() {
    let count = env_num("DNET_MACFLOOD_COUNT", 1_000_000);
    let secs = env_num("DNET_MACFLOOD_SECS", 20);
    let pps = env_num("DNET_MACFLOOD_PPS", 100_000);
    let tb = Testbed::new(3).expect("building testbed");
    let sw = tb.start_switches().expect("starting switches");
    let (a, b, c) = (tb.host(0), tb.host(1), tb.host(2));
    // The kernel bridges would learn every random MAC too (they have no bound by default):
    // keep them out of the experiment, it is dnet's table that is under test.
    ip_in(
        &a.ns,
        &[
            "link",
            "set",
            "vc0",
            "type",
            "bridge_slave",
            "learning",
            "off",
        ],
    )
    .expect("learning off on a");
    for h in [b, c] {
        ip_in(
            &h.ns,
            &[
                "link",
                "set",
                DEFAULT_TAP,
                "type",
                "bridge_slave",
                "learning",
                "off",
            ],
        )
        .expect("learning off");
    }
    // Legitimate stations learned first.
    for (x, y) in [(0, 1), (1, 0), (1, 2), (2, 1), (0, 2)] {
        let p = ping(
            &tb.host(x).container_ns,
            tb.host(y).container_ip,
            3,
            Duration::from_secs(2),
        )
        .expect("ping");
        assert!(p.received > 0, "no connectivity {x}->{y} before the flood");
    }
    let rss_before: Vec<u64> = sw.iter().map(|s| rss_kib(s.pid).expect("rss")).collect();

    let fd = packet_sender(&a.container_ns, CONTAINER_IF);
    let dst = mac_of(&b.container_ns, CONTAINER_IF);
    let t0 = Instant::now();
    let flooder = std::thread::spawn(move || flood(&fd, dst, count, pps, secs));
    // Other containers keep talking during the flood.
    std::thread::sleep(Duration::from_millis(500));
    let during = ping(&c.container_ns, b.container_ip, 5, Duration::from_secs(2)).expect("ping");
    // The tables are full by now: from here on memory must not grow with more MACs.
    let rss_mid: Vec<u64> = sw.iter().map(|s| rss_kib(s.pid).expect("rss")).collect();
    let sent = flooder.join().expect("flooder");
    let elapsed = t0.elapsed();
    let st = settled_stats(&[&sw[0], &sw[1], &sw[2]]);
    let rss_after: Vec<u64> = sw.iter().map(|s| rss_kib(s.pid).expect("rss")).collect();
    eprintln!(
        "MAC flood: {sent} frames from random source MACs in {elapsed:.1?}; switch a took {} from its TAP",
        tap_port(&st[0]).unwrap().rx_packets
    );
    for (i, s) in st.iter().enumerate() {
        eprintln!(
            "switch {}: fdb_entries {} fdb_full {} flood {} RSS {} KiB before, {} KiB mid-flood, {} KiB after",
            tb.host(i).letter,
            s.fdb_entries,
            event_count(s, "fdb_full"),
            event_count(s, "flood"),
            rss_before[i],
            rss_mid[i],
            rss_after[i]
        );
    }
    eprintln!("ping c->b during the flood: {during:?}");
    assert!(sent >= 20_000, "only {sent} frames sent");
    for (i, s) in st.iter().enumerate() {
        assert!(
            s.fdb_entries <= FDB_BOUND,
            "switch {i}: {} entries",
            s.fdb_entries
        );
        assert!(
            rss_after[i] <= rss_before[i] + 16 * 1024,
            "switch {i} RSS grew {} KiB -> {} KiB",
            rss_before[i],
            rss_after[i]
        );
        assert!(
            rss_after[i] <= rss_mid[i] + 2 * 1024,
            "switch {i} RSS kept growing with a full table: {} KiB -> {} KiB",
            rss_mid[i],
            rss_after[i]
        );
    }
    assert!(
        st[0].fdb_entries >= FDB_BOUND / 2,
        "a did not fill up: {}",
        st[0].fdb_entries
    );
    assert!(event_count(&st[0], "fdb_full") > 0, "fdb_full not counted");
    assert!(
        during.received >= 3,
        "c->b starved during the flood: {during:?}"
    );
    assert!(sw.iter().all(|s| s.try_status().expect("status").is_none()));

    // Stations learned before the flood are still forwarded, not flooded: a -> b unicast
    // does not move a's flood counter (beyond the odd ARP refresh).
    let flood0 = event_count(&st[0], "flood");
    let got = udp_unicast(
        &a.container_ns,
        &b.container_ns,
        b.container_ip,
        9999,
        200,
        Duration::from_secs(2),
    )
    .expect("udp a->b");
    let flood1 = event_count(&sw[0].stats().expect("stats"), "flood");
    eprintln!(
        "after the flood: udp a->b {got}/200, a's flood counter +{}",
        flood1 - flood0
    );
    assert!(got >= 190, "a->b unicast after the flood: {got}/200");
    assert!(
        flood1 - flood0 < 20,
        "learned station flooded: +{}",
        flood1 - flood0
    );
    for (x, y) in [(0, 1), (2, 1), (1, 2)] {
        let p = ping(
            &tb.host(x).container_ns,
            tb.host(y).container_ip,
            3,
            Duration::from_secs(2),
        )
        .expect("ping");
        assert_eq!(p.received, 3, "{x}->{y} after the flood: {p:?}");
    }
}
