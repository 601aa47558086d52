//! Self-test of the testbed and traffic helpers without dnet: the two container bridges are
//! joined by a plain veth, the reference path every dnet test is compared against. If these
//! fail, a dnet test failure says nothing about dnet.

use dnet_testbed::netns::in_netns;
use dnet_testbed::traffic::{ping, tcp_transfer, udp_broadcast, udp_unicast, GreCapture};
use dnet_testbed::{Testbed, CONTAINER_BROADCAST};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

/// A testbed that never starts a switch, so the binary need not exist.
fn testbed(n: usize) -> Testbed {
    Testbed::with_switch_binary(n, "/nonexistent/dnet-switch".into()).expect("building testbed")
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn helpers_work_over_a_direct_veth() {
    let tb = testbed(2);
    tb.join_bridges_directly(0, 1).expect("joining bridges");
    let (a, b) = (tb.host(0), tb.host(1));

    let p = ping(&a.container_ns, b.container_ip, 5, Duration::from_secs(1)).expect("ping");
    assert_eq!(p.received, 5, "{p:?}");
    assert!(p.min() <= p.avg() && p.avg() <= p.max());

    let r = tcp_transfer(
        &a.container_ns,
        &b.container_ns,
        b.container_ip,
        16 << 20,
        Duration::from_secs(30),
    )
    .expect("tcp transfer");
    assert_eq!(r.bytes, 16 << 20);

    let c = udp_broadcast(
        &a.container_ns,
        CONTAINER_BROADCAST,
        9999,
        &[&b.container_ns],
        Duration::from_millis(300),
    )
    .expect("broadcast");
    assert_eq!(c, vec![1]);
    let n = udp_unicast(
        &a.container_ns,
        &b.container_ns,
        b.container_ip,
        7777,
        200,
        Duration::from_millis(300),
    )
    .expect("unicast");
    assert_eq!(n, 200);

    // Nobody answers at an unused address, and the helpers say so instead of hanging.
    let nobody = "10.77.0.99".parse().unwrap();
    let p = ping(&a.container_ns, nobody, 2, Duration::from_millis(200)).expect("ping to nobody");
    assert_eq!((p.sent, p.received), (2, 0));
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn gre_capture_counts_gre_packets() {
    let tb = testbed(2);
    let (a, b) = (tb.host(0), tb.host(1));
    let cap = GreCapture::start(&b.ns).expect("capture");
    let dst = SockAddr::from(SocketAddrV4::new(b.underlay_ip, 0));
    in_netns(&a.ns, || {
        let s = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_GRE)),
        )
        .expect("raw GRE socket");
        // A minimal GRE header carrying transparent Ethernet bridging (0x6558) and 3 bytes.
        for _ in 0..3 {
            s.send_to(&[0, 0, 0x65, 0x58, 1, 2, 3], &dst)
                .expect("send GRE");
        }
    })
    .expect("netns");
    let t = Instant::now();
    while cap.count() < 3 && t.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(cap.stop().expect("capture"), 3);
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn three_hosts_chain_floods_once() {
    let tb = testbed(3);
    tb.join_bridges_directly(0, 1).expect("a-b");
    tb.join_bridges_directly(1, 2).expect("b-c");
    let h = tb.hosts();
    let c = udp_broadcast(
        &h[0].container_ns,
        CONTAINER_BROADCAST,
        9999,
        &[&h[1].container_ns, &h[2].container_ns],
        Duration::from_millis(300),
    )
    .expect("broadcast");
    assert_eq!(c, vec![1, 1]);
    // The shared underlay segment reaches every host.
    let p = ping(&h[0].ns, h[2].underlay_ip, 2, Duration::from_secs(1)).expect("underlay ping");
    assert_eq!(p.received, 2);
}
