//! `--encrypt` end to end: real dnet-switches sealing GRE-in-UDP between network namespaces,
//! and an attacker on the underlay. Forged, replayed, wrongly keyed and unknown datagrams
//! deliver nothing (the frames that would carry them are watched for in the containers) and
//! are counted by name; sessions rotate under a running TCP transfer without losing a byte;
//! a restarted peer handshakes again by itself; an etcd network created with `--encrypt`
//! distributes the keys, keeps keyless members out, and a capture of the underlay shows no
//! inner Ethernet header in clear.

use dnet_crypto::PrivateKey;
use dnet_e2e::fleet_support::{
    create_network, dnetctl, dnetctl_ok, fleet, fleet_switch, peers, show, wait_etcd_peers,
    wait_for, Etcd,
};
use dnet_e2e::{drop_count, event_count};
use dnet_testbed::cmd::ip_in;
use dnet_testbed::netns::{in_netns, spawn_in_netns};
use dnet_testbed::traffic::{ping, tcp_transfer, Pattern};
use dnet_testbed::{tap_port, tunnel_port, Switch, SwitchOptions, Testbed, CONTAINER_IF};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// GRE-in-UDP's port.
const PORT: u16 = 4754;
/// Generous bounds for "it happened"; nothing here measures time.
const SETTLE: Duration = Duration::from_secs(20);

/// A host's key pair: the private key file (mode 0600) and the public key's text.
struct Keys {
    path: PathBuf,
    public: String,
}

fn keygen(tb: &Testbed, name: &str) -> Keys {
    let path = tb.dir().join(format!("{name}.key"));
    let key = PrivateKey::generate().expect("key");
    key.write(&path).expect("write key");
    Keys {
        path,
        public: key.public_key().to_string(),
    }
}

/// A switch sealing its tunnels with `keys`, to the given peers (address and public key).
fn sealed(keys: &Keys, peers: &[(Ipv4Addr, &str)], extra: &[&str]) -> SwitchOptions {
    let mut extra_args: Vec<String> = [
        "--encap",
        "udp",
        "--encrypt",
        "--private-key",
        &keys.path.display().to_string(),
        "--workers",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (addr, key) in peers {
        extra_args.push("--peer".into());
        extra_args.push(format!("{addr}={key}"));
    }
    extra_args.extend(extra.iter().map(|s| s.to_string()));
    SwitchOptions {
        peers: Some(Vec::new()),
        log_level: "info".into(),
        extra_args,
        ..SwitchOptions::default()
    }
}

/// Two hosts whose switches know each other's keys, up and sealing.
fn sealed_pair(tb: &Testbed, extra: &[&str]) -> (Vec<Keys>, Vec<Switch>, Vec<SwitchOptions>) {
    let keys = vec![keygen(tb, "a"), keygen(tb, "b")];
    let (a, b) = (tb.host(0).underlay_ip, tb.host(1).underlay_ip);
    let opts = vec![
        sealed(&keys[0], &[(b, &keys[1].public)], extra),
        sealed(&keys[1], &[(a, &keys[0].public)], extra),
    ];
    let sw = vec![
        tb.start_switch_with(0, &opts[0]).expect("switch a"),
        tb.start_switch_with(1, &opts[1]).expect("switch b"),
    ];
    (keys, sw, opts)
}

fn stat(sw: &Switch, what: &dyn Fn(&dnet_proto::Stats) -> u64) -> u64 {
    what(
        &sw.stats()
            .unwrap_or_else(|e| panic!("stats: {e}\n{}", sw.stderr())),
    )
}

fn drops(sw: &Switch, reason: &str) -> u64 {
    stat(sw, &|s| drop_count(s, reason))
}

fn events(sw: &Switch, name: &str) -> u64 {
    stat(sw, &|s| event_count(s, name))
}

fn wait_until(what: &str, sw: &[&Switch], cond: impl FnMut() -> bool) {
    if !wait_for(SETTLE, cond) {
        let logs: Vec<String> = sw.iter().map(|s| s.stderr()).collect();
        panic!("{what}: not within {SETTLE:?}\n{}", logs.join("\n----\n"));
    }
}

/// Pings until one round of `dst` answers (the first frames wait for the handshake).
fn wait_ping(ns: &str, dst: Ipv4Addr, sw: &[&Switch]) {
    wait_until(&format!("ping {dst} from {ns}"), sw, || {
        ping(ns, dst, 1, Duration::from_millis(500)).is_ok_and(|r| r.received == 1)
    });
}

/// A UDP socket in namespace `ns` on `port` of every address (broadcasts included).
fn udp_listener(ns: &str, port: u16) -> UdpSocket {
    in_netns(ns, move || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).expect("bind listener");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        s
    })
    .expect("netns")
}

/// Reads what arrived at `l` until `until` is among it (or `SETTLE` passes); returns all.
fn read_until(l: &UdpSocket, until: &[u8]) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + SETTLE;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        if let Ok(n) = l.recv(&mut buf) {
            got.push(buf[..n].to_vec());
            if &buf[..n] == until {
                return got;
            }
        }
    }
    panic!(
        "{:?} never arrived; got {got:?}",
        String::from_utf8_lossy(until)
    );
}

fn udp_send(ns: &str, from: Option<Ipv4Addr>, to: SocketAddrV4, payload: &[u8]) {
    in_netns(ns, || {
        let s = UdpSocket::bind((from.unwrap_or(Ipv4Addr::UNSPECIFIED), 0)).expect("bind");
        s.set_broadcast(true).unwrap();
        s.send_to(payload, to).expect("send");
    })
    .expect("netns");
}

/// A datagram's source and UDP payload.
type Captured = (Ipv4Addr, Vec<u8>);

/// Every UDP datagram to port 4754 that reaches a namespace, as (source, UDP payload): a raw
/// UDP socket gets a copy of each beside the switch's own socket. An observer independent of
/// the switch.
struct Capture {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Captured>>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Capture {
    fn start(ns: &str) -> Capture {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (st, sn) = (stop.clone(), seen.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = spawn_in_netns(ns, move || {
            let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP)).expect("raw UDP");
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = vec![0u8; 65536];
            while !st.load(Ordering::Relaxed) {
                let Ok(n) = (&s).read(&mut buf) else {
                    continue;
                };
                let p = &buf[..n];
                let ihl = usize::from(p[0] & 0x0f) * 4;
                if n < ihl + 8 || u16::from_be_bytes([p[ihl + 2], p[ihl + 3]]) != PORT {
                    continue;
                }
                let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
                sn.lock().unwrap().push((src, p[ihl + 8..].to_vec()));
            }
        })
        .expect("capture thread");
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("capture ready");
        Capture {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> Vec<Captured> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A sealed data datagram (not a handshake message, not a keepalive).
fn is_sealed_data(p: &[u8]) -> bool {
    p.len() > dnet_crypto::wire::OVERHEAD && p[..4] == dnet_crypto::wire::DATA
}

/// An Ethernet broadcast carrying IPv4/UDP to the containers' broadcast address, port
/// `port`, with `payload`: what a cleartext switch would flood to its containers.
fn broadcast_frame(port: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0x66, 0x66]);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = 20 + 8 + payload.len();
    let mut ip = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        17,
        0,
        0,
        10,
        77,
        0,
        66,
        10,
        77,
        0,
        255,
    ];
    let c = dnet_testbed::traffic::inet_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let ulen = 8 + payload.len();
    f.extend_from_slice(&[0x30, 0x39]);
    f.extend_from_slice(&port.to_be_bytes());
    f.extend_from_slice(&[(ulen >> 8) as u8, ulen as u8, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// Sends `payload` as a UDP datagram to `dst:4754` from namespace `ns` with the forged IPv4
/// source `src` (a raw socket writes the whole IPv4 header).
fn forge(ns: &str, src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) {
    let ulen = 8 + payload.len();
    let total = 20 + ulen;
    let mut p = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        17,
        0,
        0,
    ];
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&40000u16.to_be_bytes());
    p.extend_from_slice(&PORT.to_be_bytes());
    p.extend_from_slice(&[(ulen >> 8) as u8, ulen as u8, 0, 0]);
    p.extend_from_slice(payload);
    in_netns(ns, || {
        let s = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_RAW)),
        )
        .expect("raw socket");
        s.send_to(&p, &SockAddr::from(SocketAddrV4::new(dst, 0)))
            .expect("send forged");
    })
    .expect("netns");
}

/// The injection: a host that is no peer forges a peer's underlay source address
/// and sends 5 GRE-in-UDP datagrams whose frames a cleartext switch would flood to its
/// containers. Sealed, none is delivered, and each is counted (`cleartext`); forged sealed
/// datagrams fare no better (`unknown_session`, `auth_failed` for a real session's index).
#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn forged_datagrams_deliver_nothing_and_are_counted() {
    let tb = Testbed::new(3).expect("testbed");
    let (_keys, sw, _) = sealed_pair(&tb, &[]);
    let (a, b) = (tb.host(0), tb.host(1));
    assert_eq!(
        sw[0].stats().unwrap().mtu,
        1500 - 20 - 8 - 4 - 14 - 32,
        "the seal's 32 bytes come off the TAP MTU"
    );
    wait_ping(&b.container_ns, a.container_ip, &[&sw[0], &sw[1]]);
    let listener = udp_listener(&a.container_ns, 9999);
    // The attacker: the underlay's shared segment, with an address of its own.
    let attacker = tb
        .add_underlay_address(Ipv4Addr::new(10, 200, 0, 99))
        .expect("attacker address");
    let before = drops(&sw[0], "cleartext");
    for i in 0..5u8 {
        let mut gre = vec![0, 0, 0x65, 0x58];
        gre.extend_from_slice(&broadcast_frame(9999, &[b'F', i]));
        forge(&attacker, b.underlay_ip, a.underlay_ip, &gre);
    }
    wait_until("5 cleartext datagrams counted", &[&sw[0]], || {
        drops(&sw[0], "cleartext") >= before + 5
    });
    // Forged sealed datagrams: an index no session has, then a real session's index with a
    // forged tag.
    let mut d = dnet_crypto::wire::DATA.to_vec();
    d.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    d.extend_from_slice(&[0; 8]);
    d.extend_from_slice(&broadcast_frame(9999, b"FS"));
    d.extend_from_slice(&[0; 16]);
    let unknown = drops(&sw[0], "unknown_session");
    for _ in 0..5 {
        forge(&attacker, b.underlay_ip, a.underlay_ip, &d);
    }
    wait_until("5 unknown sessions counted", &[&sw[0]], || {
        drops(&sw[0], "unknown_session") >= unknown + 5
    });
    // A real datagram from b to a, captured, with its ciphertext changed: a's session
    // index, counter beyond anything sent, so only the tag can refuse it.
    let cap = Capture::start(&a.ns);
    udp_send(
        &b.container_ns,
        None,
        SocketAddrV4::new(a.container_ip, 9999),
        b"probe",
    );
    let got = read_until(&listener, b"probe");
    assert_eq!(got, vec![b"probe".to_vec()], "a forged broadcast arrived");
    let real = cap
        .stop()
        .into_iter()
        .find(|(s, p)| *s == b.underlay_ip && is_sealed_data(p))
        .expect("a sealed datagram from b");
    let auth = drops(&sw[0], "auth_failed");
    for i in 0..5u8 {
        let mut p = real.1.clone();
        p[8..16].copy_from_slice(&(1u64 << 40 | u64::from(i)).to_le_bytes());
        let last = p.len() - 1;
        p[last] ^= 0x5a;
        forge(&attacker, b.underlay_ip, a.underlay_ip, &p);
    }
    wait_until("5 forged tags counted", &[&sw[0]], || {
        drops(&sw[0], "auth_failed") >= auth + 5
    });
    // A last legitimate datagram after all of them: once it is in, anything forged would
    // have been too.
    udp_send(
        &b.container_ns,
        None,
        SocketAddrV4::new(a.container_ip, 9999),
        b"after",
    );
    let got = read_until(&listener, b"after");
    assert_eq!(
        got,
        vec![b"after".to_vec()],
        "only the real datagram arrived, none of the 15 forged broadcasts"
    );
    // `dnetctl stats` and `show` name the counters.
    let sock = sw[0].socket.display().to_string();
    let stats = dnetctl_ok(&a.ns, &["stats", "--socket", &sock]);
    for name in ["auth_failed", "cleartext", "unknown_session"] {
        assert!(
            stats.contains(name),
            "{name} not in dnetctl stats:\n{stats}"
        );
    }
    let shown = dnetctl_ok(&a.ns, &["show", "--socket", &sock]);
    assert!(
        shown.contains(&format!("auth_failed {}", drops(&sw[0], "auth_failed")))
            && shown.contains("replayed 0"),
        "{shown}"
    );
}

/// Datagrams captured on the underlay and sent again, from the real sender's address,
/// deliver nothing: each is counted as `replayed`.
#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn replayed_datagrams_deliver_nothing() {
    let tb = Testbed::new(2).expect("testbed");
    let (_keys, sw, _) = sealed_pair(&tb, &[]);
    let (a, b) = (tb.host(0), tb.host(1));
    wait_ping(&a.container_ns, b.container_ip, &[&sw[0], &sw[1]]);
    let listener = udp_listener(&b.container_ns, 9999);
    let cap = Capture::start(&b.ns);
    // One at a time, each received before the next, so each travels as its own datagram.
    for i in 0..5 {
        let tok = format!("original-{i}");
        udp_send(
            &a.container_ns,
            None,
            SocketAddrV4::new(b.container_ip, 9999),
            tok.as_bytes(),
        );
        read_until(&listener, tok.as_bytes());
    }
    let captured: Vec<Vec<u8>> = cap
        .stop()
        .into_iter()
        .filter(|(s, p)| *s == a.underlay_ip && is_sealed_data(p))
        .map(|(_, p)| p)
        .collect();
    assert!(captured.len() >= 5, "captured {}", captured.len());
    let replayed = drops(&sw[1], "replayed");
    for p in &captured {
        udp_send(
            &a.ns,
            Some(a.underlay_ip),
            SocketAddrV4::new(b.underlay_ip, PORT),
            p,
        );
    }
    wait_until("every replay counted", &[&sw[1]], || {
        drops(&sw[1], "replayed") >= replayed + captured.len() as u64
    });
    udp_send(
        &a.container_ns,
        None,
        SocketAddrV4::new(b.container_ip, 9999),
        b"after",
    );
    let got = read_until(&listener, b"after");
    assert_eq!(got, vec![b"after".to_vec()], "no replayed datagram arrived");
    assert_eq!(
        drops(&sw[1], "replayed"),
        replayed + captured.len() as u64,
        "each replay counted once"
    );
    let j = dnetctl_ok(
        &b.ns,
        &[
            "show",
            "-j",
            "--socket",
            &sw[1].socket.display().to_string(),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(
        v["encryption"]["replayed"].as_u64(),
        Some(replayed + captured.len() as u64),
        "{v}"
    );
}

/// A host whose key its peer does not accept gets no frame in, either way: one configured
/// with a wrong key for its peer, and one whose key is no peer's at all.
#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn wrong_or_unknown_keys_get_no_frame_in() {
    let tb = Testbed::new(3).expect("testbed");
    let keys = [keygen(&tb, "a"), keygen(&tb, "b"), keygen(&tb, "c")];
    let wrong = PrivateKey::generate().unwrap().public_key().to_string();
    let (a, b, c) = (tb.host(0), tb.host(1), tb.host(2));
    // a takes b for another key; b and c know a's real one; a does not know c at all.
    let sa = tb
        .start_switch_with(0, &sealed(&keys[0], &[(b.underlay_ip, &wrong)], &[]))
        .expect("switch a");
    let sc = tb
        .start_switch_with(
            2,
            &sealed(&keys[2], &[(a.underlay_ip, &keys[0].public)], &[]),
        )
        .expect("switch c");
    let t = Duration::from_millis(300);
    assert_eq!(
        ping(&c.container_ns, a.container_ip, 3, t)
            .unwrap()
            .received,
        0
    );
    wait_until("a refuses c's unknown key", &[&sa, &sc], || {
        drops(&sa, "unknown_key") >= 1
    });
    let sb = tb
        .start_switch_with(
            1,
            &sealed(&keys[1], &[(a.underlay_ip, &keys[0].public)], &[]),
        )
        .expect("switch b");
    let from_c = drops(&sa, "unknown_key");
    assert_eq!(
        ping(&b.container_ns, a.container_ip, 3, t)
            .unwrap()
            .received,
        0
    );
    assert_eq!(
        ping(&a.container_ns, b.container_ip, 3, t)
            .unwrap()
            .received,
        0
    );
    wait_until("both sides refuse the handshake", &[&sa, &sb], || {
        // b's initiation names a key a does not take for b; a's is made for a key b does
        // not have, so its mac1 fails at b.
        drops(&sa, "unknown_key") > from_c && drops(&sb, "handshake_bad_mac") >= 1
    });
    for (sw, peer) in [
        (&sa, b.underlay_ip),
        (&sb, a.underlay_ip),
        (&sc, a.underlay_ip),
    ] {
        let st = sw.stats().unwrap();
        assert_eq!(
            tap_port(&st).unwrap().tx_packets,
            0,
            "{}: a frame got in",
            sw.ns
        );
        assert_eq!(
            tunnel_port(&st, peer).unwrap().rx_packets,
            0,
            "{}: a frame came through the tunnel",
            sw.ns
        );
        let s = show(sw);
        assert_eq!(s.encryption.unwrap().sessions, 0, "{}", sw.ns);
    }
}

/// Sessions rotate every few seconds (`--rekey-after 1`, spaced by the 5 s rekey timeout)
/// while TCP streams through the tunnel: the receiver compares every byte with what was
/// sent, and nothing is lost across at least two new sessions.
#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn sessions_rotate_under_a_running_tcp_transfer() {
    let tb = Testbed::new(2).expect("testbed");
    let (_keys, sw, _) = sealed_pair(&tb, &["--rekey-after", "1"]);
    let (a, b) = (tb.host(0), tb.host(1));
    wait_ping(&a.container_ns, b.container_ip, &[&sw[0], &sw[1]]);
    let pattern = Arc::new(Pattern::new());
    let listener = in_netns(&b.container_ns, || {
        TcpListener::bind((b.container_ip, 0)).expect("listen")
    })
    .unwrap();
    let port = listener.local_addr().unwrap().port();
    let p = pattern.clone();
    let receiver = std::thread::spawn(move || -> u64 {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 16];
        let mut at = 0u64;
        loop {
            let n = s.read(&mut buf).expect("read");
            if n == 0 {
                return at;
            }
            assert!(
                buf[..n] == *p.slice(at, n),
                "stream differs within bytes {at}..{}",
                at + n as u64
            );
            at += n as u64;
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let (st, p) = (stop.clone(), pattern.clone());
    let dst = SocketAddrV4::new(b.container_ip, port);
    let sender = spawn_in_netns(&a.container_ns, move || -> u64 {
        let mut s = TcpStream::connect(dst).expect("connect");
        let mut at = 0u64;
        while !st.load(Ordering::Relaxed) {
            let chunk = p.slice(at, 64 * 1024);
            s.write_all(chunk).expect("write");
            at += chunk.len() as u64;
        }
        s.shutdown(std::net::Shutdown::Write).unwrap();
        at
    })
    .unwrap();
    let started = events(&sw[0], "session_initiated") + events(&sw[1], "session_initiated");
    wait_until("two rotations", &[&sw[0], &sw[1]], || {
        events(&sw[0], "session_initiated") + events(&sw[1], "session_initiated") >= started + 2
    });
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap().unwrap();
    let received = receiver.join().unwrap();
    assert_eq!(received, sent, "bytes received = bytes sent");
    assert!(sent > 0);
    eprintln!(
        "rotation: {} MiB across {} new sessions",
        sent >> 20,
        events(&sw[0], "session_initiated") + events(&sw[1], "session_initiated") - started
    );
    for s in &sw {
        assert_eq!(drops(s, "auth_failed"), 0, "{}", s.ns);
        assert_eq!(drops(s, "replayed"), 0, "{}", s.ns);
    }
}

/// A peer that restarts (new process, same key, no session state) is reached again without
/// anyone doing anything: the survivor's datagrams for the old session make the restarted
/// host handshake, and the survivor's own timers would too.
#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn a_restarted_peer_handshakes_again_by_itself() {
    let tb = Testbed::new(2).expect("testbed");
    let (_keys, mut sw, opts) = sealed_pair(&tb, &[]);
    let (a, b) = (tb.host(0), tb.host(1));
    wait_ping(&a.container_ns, b.container_ip, &[&sw[0], &sw[1]]);
    let r = tcp_transfer(
        &a.container_ns,
        &b.container_ns,
        b.container_ip,
        4 << 20,
        Duration::from_secs(60),
    )
    .expect("transfer before the restart");
    assert_eq!(r.bytes, 4 << 20);
    sw[1].terminate(Duration::from_secs(10)).expect("stop b");
    sw[1] = tb.start_switch_with(1, &opts[1]).expect("restart b");
    wait_ping(&a.container_ns, b.container_ip, &[&sw[0], &sw[1]]);
    wait_ping(&b.container_ns, a.container_ip, &[&sw[0], &sw[1]]);
    let r = tcp_transfer(
        &b.container_ns,
        &a.container_ns,
        a.container_ip,
        4 << 20,
        Duration::from_secs(60),
    )
    .expect("transfer after the restart");
    assert_eq!(r.bytes, 4 << 20);
    assert!(show(&sw[0]).encryption.unwrap().sessions >= 1);
}

/// An etcd network created with `--encrypt`: members publish their public keys and find each
/// other's; traffic between them is sealed (a capture of the underlay holds no inner
/// Ethernet header: neither container's MAC appears in any payload); a host without a key
/// is refused, and a member record without a key gets no tunnel and is counted.
#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn an_encrypted_etcd_network_distributes_keys_and_seals_traffic() {
    let tb = Testbed::new(3).expect("testbed");
    let etcd = Etcd::single(&tb);
    let net = "sealed";
    create_network(&etcd, net, "10.78.0.0/16", &["--encap", "udp", "--encrypt"]);
    let keys = [keygen(&tb, "a"), keygen(&tb, "b")];
    let ka = keys[0].path.display().to_string();
    let kb = keys[1].path.display().to_string();
    // a gives only its key (the network turns encryption on); b says --encrypt too.
    let sw = [
        tb.start_switch_with(0, &fleet_switch(&etcd, net, &["--private-key", &ka]))
            .expect("switch a"),
        tb.start_switch_with(
            1,
            &fleet_switch(&etcd, net, &["--encrypt", "--private-key", &kb]),
        )
        .expect("switch b"),
    ];
    let (a, b, c) = (tb.host(0), tb.host(1), tb.host(2));
    wait_etcd_peers(&sw[0], &BTreeSet::from([b.underlay_ip]), SETTLE);
    wait_etcd_peers(&sw[1], &BTreeSet::from([a.underlay_ip]), SETTLE);
    // Each record carries its host's public key.
    for (i, k) in keys.iter().enumerate() {
        let host = tb.host(i).underlay_ip.to_string();
        let rec = etcd.ctl(&[
            "get",
            "--print-value-only",
            &format!("/dnet/networks/{net}/members/{host}"),
        ]);
        let v: serde_json::Value = serde_json::from_str(rec.trim()).expect("member record");
        assert_eq!(v["public_key"].as_str(), Some(k.public.as_str()), "{v}");
    }
    // A host without a key is refused before it joins.
    let refused = tb
        .spawn_switch(2, &fleet_switch(&etcd, net, &[]))
        .expect("spawn c");
    let st = refused.wait_exit(SETTLE).expect("c exits");
    assert_eq!(st.code(), Some(1), "{}", refused.stderr());
    assert!(
        refused.stderr().contains("--private-key FILE"),
        "{}",
        refused.stderr()
    );
    // A record without a key (c's address, a claimed range, the network's settings) is
    // skipped by every member and counted.
    let cfg = etcd.ctl(&[
        "get",
        "--print-value-only",
        &format!("/dnet/networks/{net}/config"),
    ]);
    let cfg: serde_json::Value = serde_json::from_str(cfg.trim()).unwrap();
    etcd.ctl(&[
        "put",
        &format!("/dnet/networks/{net}/ranges/10.78.77.0-24"),
        &serde_json::json!({"version": 1, "host": "nokey"}).to_string(),
    ]);
    etcd.ctl(&[
        "put",
        &format!("/dnet/networks/{net}/members/nokey"),
        &serde_json::json!({
            "version": 1, "host": "nokey", "underlay": c.underlay_ip.to_string(),
            "range": "10.78.77.0/24", "settings": cfg["settings"]
        })
        .to_string(),
    ]);
    wait_until("the keyless record counted", &[&sw[0], &sw[1]], || {
        sw.iter().all(|s| {
            fleet(s)
                .rejected
                .get("missing_public_key")
                .is_some_and(|n| *n >= 1)
        })
    });
    for s in &sw {
        assert!(!peers(s).contains(&c.underlay_ip), "{}: tunnel to c", s.ns);
    }
    // Traffic is sealed: no container MAC in any payload on the underlay.
    let mac = |ns: &str| -> Vec<u8> {
        let out = ip_in(ns, &["-j", "link", "show", CONTAINER_IF]).expect("ip link");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0]["address"]
            .as_str()
            .unwrap()
            .split(':')
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect()
    };
    let macs = [mac(&a.container_ns), mac(&b.container_ns)];
    let cap = Capture::start(&b.ns);
    wait_ping(&a.container_ns, b.container_ip, &[&sw[0], &sw[1]]);
    let r = ping(&a.container_ns, b.container_ip, 5, Duration::from_secs(2)).expect("ping");
    assert_eq!(r.received, 5);
    let seen = cap.stop();
    let from_a: Vec<&Vec<u8>> = seen
        .iter()
        .filter(|(s, _)| *s == a.underlay_ip)
        .map(|(_, p)| p)
        .collect();
    let data = from_a.iter().filter(|p| is_sealed_data(p)).count();
    assert!(data >= 5, "{data} sealed data datagrams from a");
    for p in &from_a {
        for m in &macs {
            assert!(
                !p.windows(6).any(|w| w == m.as_slice()),
                "a container MAC in clear on the underlay: {p:02x?}"
            );
        }
        assert_ne!(&p[..4], &[0, 0, 0x65, 0x58], "a cleartext GRE header");
    }
    let e = show(&sw[0]).encryption.expect("encryption shown");
    assert_eq!(e.sessions, 1);
    let pubkey = String::from_utf8(dnetctl(&a.ns, &["pubkey", "--key", &ka]).stdout).unwrap();
    assert_eq!(e.public_key, pubkey.trim());
}

/// A peer added at run time brings its key (`dnetctl peer add IP --key PUBKEY`); without one
/// a switch that encrypts refuses it, naming the fix.
#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn peers_added_at_run_time_bring_their_key() {
    let tb = Testbed::new(3).expect("testbed");
    let keys = [keygen(&tb, "a"), keygen(&tb, "b"), keygen(&tb, "c")];
    let (a, b, c) = (tb.host(0), tb.host(1), tb.host(2));
    let sa = tb
        .start_switch_with(
            0,
            &sealed(&keys[0], &[(b.underlay_ip, &keys[1].public)], &[]),
        )
        .expect("switch a");
    let sc = tb
        .start_switch_with(
            2,
            &sealed(&keys[2], &[(a.underlay_ip, &keys[0].public)], &[]),
        )
        .expect("switch c");
    let sock = sa.socket.display().to_string();
    let cip = c.underlay_ip.to_string();
    let out = dnetctl(&a.ns, &["peer", "add", &cip, "--socket", &sock]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("dnetctl peer add {cip} --key PUBKEY")),
        "{err}"
    );
    assert!(!peers(&sa).contains(&c.underlay_ip));
    // A's own key, or b's, is no key for c.
    for (key, why) in [
        (&keys[0].public, "is this host's own".to_string()),
        (
            &keys[1].public,
            format!("is already peer {}'s", b.underlay_ip),
        ),
    ] {
        let out = dnetctl(
            &a.ns,
            &["peer", "add", &cip, "--key", key, "--socket", &sock],
        );
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("peer {cip}: public key {key} {why}")),
            "{err}"
        );
        assert!(!peers(&sa).contains(&c.underlay_ip));
    }
    dnetctl_ok(
        &a.ns,
        &[
            "peer",
            "add",
            &cip,
            "--key",
            &keys[2].public,
            "--socket",
            &sock,
        ],
    );
    wait_ping(&a.container_ns, c.container_ip, &[&sa, &sc]);
    wait_ping(&c.container_ns, a.container_ip, &[&sa, &sc]);
    assert_eq!(show(&sa).encryption.unwrap().sessions, 1);
}
