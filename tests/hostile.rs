//! Hostile input over a real underlay: crafted GRE packets sent from a raw socket in another
//! host's namespace to a running `dnet-switch`. Every bad-input class must move its named drop
//! counter and never reach the TAP (the switch's TAP tx counter stays put).

use dnet_e2e::{drop_count, settled_stats};
use dnet_testbed::cmd::ip_in;
use dnet_testbed::netns::in_netns;
use dnet_testbed::{tap_port, Switch, SwitchOptions, Testbed, UNDERLAY_IF};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

const KEY: u32 = 7;
/// A second underlay address on host b that is not a configured peer of host a's switch.
const STRANGER: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 99);

/// Raw GRE socket in `ns`, bound to `src`, fragmenting large packets rather than refusing.
fn gre_sender(ns: &str, src: Ipv4Addr) -> Socket {
    in_netns(ns, move || {
        let s = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_GRE)),
        )
        .expect("raw GRE socket");
        s.bind(&SockAddr::from(SocketAddrV4::new(src, 0)))
            .expect("bind raw GRE socket");
        let v: libc::c_int = libc::IP_PMTUDISC_DONT;
        // SAFETY: setsockopt on an open socket with a correctly sized int option.
        let r = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&s),
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "IP_MTU_DISCOVER");
        s
    })
    .expect("entering namespace")
}

/// An inner Ethernet frame: broadcast destination, source `src`, `len` bytes in all.
fn inner(src: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len.max(14)];
    f[..6].fill(0xff);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f.truncate(len);
    f
}

const GOOD_MAC: [u8; 6] = [0x02, 0, 0, 0xaa, 0, 1];

/// A GRE header with flags byte `flags`, version `ver`, protocol `proto` and the given
/// optional fields (checksum/reserved word, key), in RFC 2890 order.
fn gre(flags: u8, ver: u8, proto: u16, csum: Option<[u8; 4]>, key: Option<u32>) -> Vec<u8> {
    let mut h = vec![flags, ver, (proto >> 8) as u8, proto as u8];
    if let Some(c) = csum {
        h.extend_from_slice(&c);
    }
    if let Some(k) = key {
        h.extend_from_slice(&k.to_be_bytes());
    }
    h
}

fn valid_gre(frame: &[u8]) -> Vec<u8> {
    let mut p = gre(0x20, 0, 0x6558, None, Some(KEY));
    p.extend_from_slice(frame);
    p
}

fn tap_tx(sw: &Switch) -> u64 {
    tap_port(&sw.stats().expect("stats"))
        .expect("tap port")
        .tx_packets
}

/// Polls until `cond` holds (at most 10 s).
fn wait_for(what: &str, sw: &Switch, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            sw.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn every_bad_gre_class_is_dropped_counted_and_never_forwarded() {
    let tb = Testbed::new(2).expect("building testbed");
    let opts = SwitchOptions {
        extra_args: vec!["--key".into(), KEY.to_string()],
        ..SwitchOptions::default()
    };
    let sw = tb.start_switch_with(0, &opts).expect("starting switch");
    let (a, b) = (tb.host(0), tb.host(1));
    ip_in(
        &b.ns,
        &["addr", "add", &format!("{STRANGER}/24"), "dev", UNDERLAY_IF],
    )
    .expect("second address on b");
    let peer = gre_sender(&b.ns, b.underlay_ip);
    let stranger = gre_sender(&b.ns, STRANGER);
    let dst = SockAddr::from(SocketAddrV4::new(a.underlay_ip, 0));

    // The harness itself: a valid packet from the peer does reach the TAP.
    let before = tap_tx(&sw);
    peer.send_to(&valid_gre(&inner(GOOD_MAC, 60)), &dst)
        .expect("send valid");
    wait_for("the valid frame on the TAP", &sw, || tap_tx(&sw) > before);

    let max_frame = 1458 + 18; // TAP MTU with --key + Ethernet header with one tag
    let good = inner(GOOD_MAC, 60);
    let cases: Vec<(&str, &str, &Socket, Vec<u8>)> = vec![
        ("truncated GRE", "gre_truncated", &peer, vec![0x20, 0x00]),
        (
            "GRE key field cut off",
            "gre_truncated",
            &peer,
            vec![0x20, 0, 0x65, 0x58, 0],
        ),
        (
            "version 1",
            "gre_version",
            &peer,
            [gre(0x20, 1, 0x6558, None, Some(KEY)), good.clone()].concat(),
        ),
        (
            "routing bit",
            "gre_routing",
            &peer,
            [gre(0x60, 0, 0x6558, None, Some(KEY)), good.clone()].concat(),
        ),
        (
            "strict source route bit",
            "gre_routing",
            &peer,
            [gre(0x28, 0, 0x6558, None, Some(KEY)), good.clone()].concat(),
        ),
        (
            "IPv4 protocol type",
            "gre_protocol",
            &peer,
            [gre(0x20, 0, 0x0800, None, Some(KEY)), good.clone()].concat(),
        ),
        (
            "unknown protocol type",
            "gre_protocol",
            &peer,
            [gre(0x20, 0, 0x1234, None, Some(KEY)), good.clone()].concat(),
        ),
        (
            "bad checksum",
            "gre_checksum",
            &peer,
            [
                gre(0xa0, 0, 0x6558, Some([0xde, 0xad, 0, 0]), Some(KEY)),
                good.clone(),
            ]
            .concat(),
        ),
        (
            "wrong key",
            "wrong_key",
            &peer,
            [gre(0x20, 0, 0x6558, None, Some(KEY + 1)), good.clone()].concat(),
        ),
        (
            "missing key",
            "wrong_key",
            &peer,
            [gre(0x00, 0, 0x6558, None, None), good.clone()].concat(),
        ),
        (
            "not a configured peer",
            "unknown_peer",
            &stranger,
            valid_gre(&good),
        ),
        ("runt inner frame", "runt", &peer, valid_gre(&good[..10])),
        ("empty inner frame", "runt", &peer, valid_gre(&[])),
        (
            "giant inner frame",
            "giant",
            &peer,
            valid_gre(&inner(GOOD_MAC, max_frame + 1)),
        ),
        (
            "jumbo inner frame",
            "giant",
            &peer,
            valid_gre(&inner(GOOD_MAC, 9000)),
        ),
        (
            "multicast source MAC",
            "bad_source_mac",
            &peer,
            valid_gre(&inner([0x01, 0, 0x5e, 0, 0, 1], 60)),
        ),
        (
            "broadcast source MAC",
            "bad_source_mac",
            &peer,
            valid_gre(&inner([0xff; 6], 60)),
        ),
        (
            "zero source MAC",
            "bad_source_mac",
            &peer,
            valid_gre(&inner([0; 6], 60)),
        ),
    ];
    const N: u64 = 3;
    let t0 = Instant::now();
    for (what, reason, sock, pkt) in &cases {
        let st = sw.stats().expect("stats");
        let (drops0, tx0) = (drop_count(&st, reason), tap_port(&st).unwrap().tx_packets);
        for _ in 0..N {
            sock.send_to(pkt, &dst)
                .unwrap_or_else(|e| panic!("sending {what}: {e}"));
        }
        wait_for(&format!("{reason} to count {what}"), &sw, || {
            drop_count(&sw.stats().expect("stats"), reason) >= drops0 + N
        });
        let st = sw.stats().expect("stats");
        assert_eq!(
            tap_port(&st).unwrap().tx_packets,
            tx0,
            "{what}: something reached the TAP"
        );
        eprintln!("{what}: {reason} {drops0} -> {}", drop_count(&st, reason));
    }
    // Still alive and still forwarding valid traffic afterwards.
    let before = tap_tx(&sw);
    peer.send_to(&valid_gre(&inner(GOOD_MAC, 60)), &dst)
        .expect("send valid");
    wait_for("a valid frame after the bad ones", &sw, || {
        tap_tx(&sw) > before
    });
    assert!(sw.try_status().expect("status").is_none(), "switch exited");
    // Drop logs (the testbed runs switches at debug level) are rate-limited: at most 5 lines
    // per 10 s per worker, however many packets were dropped.
    let windows = t0.elapsed().as_secs() / 10 + 1;
    let workers = sw.stats().expect("stats").workers as u64;
    let lines = sw
        .stderr()
        .lines()
        .filter(|l| l.contains("dropped a GRE packet"))
        .count() as u64;
    let dropped = N * cases.len() as u64;
    assert!(lines > 0, "no drop logged at debug level");
    assert!(
        lines <= 5 * workers * windows,
        "{lines} drop log lines for {dropped} drops"
    );
}

/// Sends `bytes` on a fresh connection to the control socket and returns the reply line.
fn raw_request(path: &std::path::Path, bytes: &[u8]) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(path).expect("connect control socket");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server stops reading at its limit, so a long write may fail half way: the reply is
    // what matters.
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).expect("reply");
    line
}

fn error_message(reply: &str) -> String {
    match serde_json::from_str::<dnet_proto::Response>(reply) {
        Ok(dnet_proto::Response::Error { message }) => message,
        other => panic!("expected an error reply, got {other:?} from {reply:?}"),
    }
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn control_socket_rejects_malformed_oversized_and_non_root_and_keeps_serving() {
    let tb = Testbed::new(2).expect("building testbed");
    let sw = tb.start_switch(0).expect("starting switch");
    let path = sw.socket.clone();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not JSON", b"hello there\n".to_vec(), "malformed request"),
        (
            "unknown request",
            b"\"Reboot\"\n".to_vec(),
            "malformed request",
        ),
        (
            "wrong field type",
            b"{\"FdbFlush\":{\"port\":7}}\n".to_vec(),
            "malformed request",
        ),
        ("binary garbage", vec![0xff, 0xfe, 0, 1, b'\n'], "request"),
        (
            "no newline",
            b"\"Stats\"".to_vec(),
            "not newline-terminated",
        ),
        ("empty", Vec::new(), "not newline-terminated"),
        ("oversized (1 MiB)", vec![b'x'; 1 << 20], "too long"),
        (
            "oversized JSON string",
            [b"\"".as_slice(), &vec![b'a'; 100_000], b"\"\n"].concat(),
            "too long",
        ),
    ];
    for (what, req, expect) in &cases {
        let msg = error_message(&raw_request(&path, req));
        assert!(
            msg.contains(expect),
            "{what}: error {msg:?} lacks {expect:?}"
        );
        // Still serving well-formed requests afterwards.
        sw.stats()
            .unwrap_or_else(|e| panic!("stats after {what}: {e}"));
    }

    // A non-root client. The socket file is 0600 root, so first the file mode refuses it...
    let as_nobody = |f: Box<dyn FnOnce(&std::path::Path) -> String + Send>| {
        let p2 = path.clone();
        std::thread::spawn(move || {
            // The raw system call changes this thread's credentials only (glibc's wrapper
            // would change the whole test process).
            // SAFETY: setresuid with valid ids; affects only this thread.
            let r = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
            assert_eq!(r, 0, "setresuid");
            f(&p2)
        })
        .join()
        .expect("non-root thread")
    };
    let refused = as_nobody(Box::new(
        |p| match std::os::unix::net::UnixStream::connect(p) {
            Ok(_) => "connected".into(),
            Err(e) => format!("{e}"),
        },
    ));
    assert!(
        refused.to_lowercase().contains("permission denied"),
        "non-root connect: {refused}"
    );
    // ...and even with the mode loosened, the server checks the peer's credentials.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let reply = as_nobody(Box::new(|p| raw_request(p, b"\"Stats\"\n")));
    let msg = error_message(&reply);
    assert!(msg.contains("permission denied"), "non-root request: {msg}");
    sw.stats()
        .expect("root still served after a non-root client");
}

/// Runs `f` on a thread whose credentials are uid 65534 with primary group `gid` and no
/// supplementary groups (raw system calls: glibc's wrappers would change the whole process).
fn as_user_in_group(gid: u32, path: &std::path::Path, f: fn(&std::path::Path) -> String) -> String {
    let p = path.to_path_buf();
    std::thread::spawn(move || {
        // SAFETY: setgroups(0, NULL), setresgid and setresuid with valid ids; raw syscalls
        // change this thread's credentials only.
        unsafe {
            assert_eq!(
                libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
                0
            );
            assert_eq!(
                libc::syscall(libc::SYS_setresgid, gid, gid, gid),
                0,
                "setresgid"
            );
            assert_eq!(
                libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534),
                0,
                "setresuid"
            );
        }
        f(&p)
    })
    .join()
    .expect("unprivileged thread")
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn control_group_members_are_served_and_others_refused() {
    let tb = Testbed::new(2).expect("building testbed");
    let opts = SwitchOptions {
        extra_args: vec!["--control-group".into(), "nogroup".into()],
        ..SwitchOptions::default()
    };
    let sw = tb.spawn_switch(0, &opts).expect("starting switch");
    sw.wait_ready(Duration::from_secs(10))
        .expect("switch ready");
    let path = sw.socket.clone();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(&path).expect("socket metadata");
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o660,
        "group-accessible socket"
    );
    assert_eq!(meta.gid(), 65534, "socket owned by group nogroup");
    // A member of the group gets real answers.
    let reply = as_user_in_group(65534, &path, |p| raw_request(p, b"{\"cmd\":\"stats\"}\n"));
    let st: dnet_proto::Response = serde_json::from_str(&reply).expect("JSON reply");
    assert!(
        matches!(st, dnet_proto::Response::Stats(_)),
        "group member refused: {reply}"
    );
    // Someone outside it cannot even connect (mode 0660), and the server would refuse anyway.
    let refused = as_user_in_group(
        65533,
        &path,
        |p| match std::os::unix::net::UnixStream::connect(p) {
            Ok(_) => "connected".into(),
            Err(e) => format!("{e}"),
        },
    );
    assert!(
        refused.to_lowercase().contains("permission denied"),
        "non-member connect: {refused}"
    );
    sw.stats().expect("root still served");
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn flood_limit_drops_and_counts_excess_floods_unicast_keeps_flowing() {
    let tb = Testbed::new(2).expect("building testbed");
    let opts = SwitchOptions {
        extra_args: vec!["--flood-limit".into(), "100".into()],
        ..SwitchOptions::default()
    };
    let sa = tb.start_switch_with(0, &opts).expect("starting switch a");
    let _sb = tb.start_switch(1).expect("starting switch b");
    let (a, b) = (tb.host(0), tb.host(1));
    // Warm up ARP and the MAC tables.
    let p = dnet_testbed::traffic::ping(&a.container_ns, b.container_ip, 3, Duration::from_secs(2))
        .expect("ping");
    assert!(p.received >= 1, "no connectivity before the flood: {p:?}");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st2 = stop.clone();
    let flooder = dnet_testbed::netns::spawn_in_netns(&a.container_ns, move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp");
        s.set_broadcast(true).expect("SO_BROADCAST");
        let mut sent = 0u64;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !st2.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
            if s.send_to(&[0u8; 64], "10.77.0.255:9").is_ok() {
                sent += 1;
            }
            if sent.is_multiple_of(256) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        sent
    })
    .expect("flooder");
    wait_for("flood_limit drops", &sa, || {
        drop_count(&sa.stats().expect("stats"), "flood_limit") > 1000
    });
    // Known unicast is not limited: pings keep getting through during the flood.
    let p = dnet_testbed::traffic::ping(&a.container_ns, b.container_ip, 5, Duration::from_secs(2))
        .expect("ping during flood");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = flooder.join().expect("flooder thread").expect("netns");
    let st = sa.stats().expect("stats");
    eprintln!(
        "broadcasts sent {sent}, flood_limit drops {}, ping during flood {p:?}",
        drop_count(&st, "flood_limit")
    );
    assert!(p.received >= 3, "unicast starved by a limited flood: {p:?}");
}

/// The MAC address of `dev` in namespace `ns` (from `ip -o link`).
fn mac_of(ns: &str, dev: &str) -> [u8; 6] {
    let out = ip_in(ns, &["-o", "link", "show", dev]).expect("ip link");
    let hex = out
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC in {out:?}"));
    let mut mac = [0u8; 6];
    for (m, h) in mac.iter_mut().zip(hex.split(':')) {
        *m = u8::from_str_radix(h, 16).expect("hex");
    }
    mac
}

/// An `AF_PACKET` socket on `dev` in namespace `ns` that sends whole Ethernet frames as given:
/// what reaches the other side's packet ring before the kernel's IP input has looked at it.
fn frame_sender(ns: &str, dev: &str) -> (std::os::fd::OwnedFd, libc::sockaddr_ll) {
    let dev = std::ffi::CString::new(dev).expect("name");
    in_netns(ns, move || {
        // SAFETY: plain socket(2); the descriptor is owned by the OwnedFd below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        // SAFETY: `dev` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(dev.as_ptr()) };
        assert!(ifindex > 0, "no such device");
        let sll = libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as u16,
            sll_protocol: (libc::ETH_P_IP as u16).to_be(),
            sll_ifindex: ifindex as i32,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 6,
            sll_addr: [0; 8],
        };
        (fd, sll)
    })
    .expect("entering namespace")
}

fn send_frame(s: &(std::os::fd::OwnedFd, libc::sockaddr_ll), frame: &[u8]) {
    use std::os::fd::AsRawFd;
    // SAFETY: sends `frame` (alive for the call) to the address in `s.1`, with its size.
    let n = unsafe {
        libc::sendto(
            s.0.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&s.1 as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    assert_eq!(
        n,
        frame.len() as isize,
        "{}",
        std::io::Error::last_os_error()
    );
}

/// RFC 1071 checksum of an IPv4 header.
fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet frame from `src_mac` to `dst_mac` carrying an IPv4 packet `src` > `dst` of
/// protocol `proto` with `payload`; `fix` may change the header after the checksum is set.
fn ipv4_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    payload: &[u8],
    fix: impl Fn(&mut [u8]),
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + payload.len()) as u16;
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let c = ip_checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    fix(&mut h);
    f.extend_from_slice(&h);
    f.extend_from_slice(payload);
    f
}

/// Bad input on the receive ring (`--packet-rings rx`): frames crafted below IP, which the
/// kernel's IP input would have refused before a raw socket saw them, reach the ring and must
/// be dropped and counted there; foreign protocols on the device, and GRE for other hosts,
/// never enter the ring (its kernel filter) and change nothing; valid GRE still gets through.
#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn ring_receive_drops_and_counts_what_ip_input_would_refuse() {
    let tb = Testbed::new(2).expect("building testbed");
    let opts = SwitchOptions {
        extra_args: vec!["--packet-rings".into(), "rx".into()],
        ..SwitchOptions::default()
    };
    let sw = tb.start_switch_with(0, &opts).expect("starting switch");
    let (a, b) = (tb.host(0), tb.host(1));
    let (a_mac, b_mac) = (mac_of(&a.ns, UNDERLAY_IF), mac_of(&b.ns, UNDERLAY_IF));
    let tx = frame_sender(&b.ns, UNDERLAY_IF);
    let gre = |inner: &[u8]| {
        let mut p = gre(0x00, 0, 0x6558, None, None);
        p.extend_from_slice(inner);
        p
    };
    let good = gre(&inner(GOOD_MAC, 60));
    let frame = |fix: &dyn Fn(&mut [u8])| {
        ipv4_frame(a_mac, b_mac, b.underlay_ip, a.underlay_ip, 47, &good, fix)
    };

    // The harness: a valid GRE frame sent this way reaches the TAP through the ring.
    let before = tap_tx(&sw);
    send_frame(&tx, &frame(&|_| {}));
    wait_for("the valid frame on the TAP", &sw, || tap_tx(&sw) > before);

    let mut cut = frame(&|_| {});
    cut.truncate(14 + 40); // the IPv4 header says 108 bytes; 40 arrive
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("IPv4 packet cut short", "bad_outer_ip", cut),
        (
            "bad IPv4 header checksum",
            "bad_outer_ip",
            frame(&|h| h[10] ^= 0x55),
        ),
        (
            "IPv4 header length below 20",
            "bad_outer_ip",
            frame(&|h| {
                h[0] = 0x44;
                h[10..12].fill(0);
                let c = ip_checksum(h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
            }),
        ),
        (
            "total length shorter than the header",
            "bad_outer_ip",
            frame(&|h| {
                h[2..4].copy_from_slice(&12u16.to_be_bytes());
                h[10..12].fill(0);
                let c = ip_checksum(h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
            }),
        ),
        (
            "GRE header cut off",
            "gre_truncated",
            ipv4_frame(
                a_mac,
                b_mac,
                b.underlay_ip,
                a.underlay_ip,
                47,
                &[0, 0],
                |_| {},
            ),
        ),
    ];
    const N: u64 = 3;
    for (what, reason, f) in &cases {
        let st = sw.stats().expect("stats");
        let (drops0, tx0) = (drop_count(&st, reason), tap_port(&st).unwrap().tx_packets);
        for _ in 0..N {
            send_frame(&tx, f);
        }
        wait_for(&format!("{reason} to count {what}"), &sw, || {
            drop_count(&sw.stats().expect("stats"), reason) >= drops0 + N
        });
        let st = sw.stats().expect("stats");
        assert_eq!(
            tap_port(&st).unwrap().tx_packets,
            tx0,
            "{what}: reached the TAP"
        );
        eprintln!("{what}: {reason} {drops0} -> {}", drop_count(&st, reason));
    }

    // Foreign protocols and other hosts' packets: the ring's filter keeps them out, the kernel
    // handles them as ever, and no counter of the switch moves.
    let st0 = sw.stats().expect("stats");
    let drops0 = dnet_e2e::total_drops(&st0);
    let tx0 = tap_port(&st0).unwrap().tx_packets;
    let mut arp = Vec::new();
    arp.extend_from_slice(&[0xff; 6]);
    arp.extend_from_slice(&b_mac);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.resize(60, 0);
    let mut ipv6 = Vec::new();
    ipv6.extend_from_slice(&a_mac);
    ipv6.extend_from_slice(&b_mac);
    ipv6.extend_from_slice(&[0x86, 0xdd]);
    ipv6.resize(80, 0);
    let udp = ipv4_frame(
        a_mac,
        b_mac,
        b.underlay_ip,
        a.underlay_ip,
        17,
        &[0; 28],
        |_| {},
    );
    let other_mac = ipv4_frame(
        [0x02, 0, 0, 0, 0x99, 0x99],
        b_mac,
        b.underlay_ip,
        a.underlay_ip,
        47,
        &good,
        |_| {},
    );
    let other_ip = ipv4_frame(a_mac, b_mac, b.underlay_ip, STRANGER, 47, &good, |_| {});
    for f in [&arp, &ipv6, &udp, &other_mac, &other_ip] {
        for _ in 0..N {
            send_frame(&tx, f);
        }
    }
    // A valid frame after them: once it is through, they were all seen (or ignored).
    send_frame(&tx, &frame(&|_| {}));
    wait_for("a valid frame after the foreign ones", &sw, || {
        tap_tx(&sw) > tx0
    });
    let st = settled_stats(&[&sw]).remove(0);
    assert_eq!(
        dnet_e2e::total_drops(&st),
        drops0,
        "foreign frames moved a drop counter: {:?}",
        st.drops
    );
    assert_eq!(
        tap_port(&st).unwrap().tx_packets,
        tx0 + 1,
        "only the valid frame reached the TAP"
    );
    assert!(sw.try_status().expect("status").is_none(), "switch exited");
}
