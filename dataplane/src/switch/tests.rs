//! Unit tests of the core, and two/three cores joined back to back in memory.

use super::*;
use crate::wire::ethernet::MacAddr;
use std::collections::VecDeque;
use std::net::Ipv4Addr;

const TAP: PortId = 0;

fn mac(host: u8, n: u8) -> MacAddr {
    MacAddr([0x02, 0x77, 0, 0, host, n])
}

fn frame(dst: MacAddr, src: MacAddr) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f
}

fn switch_with_peers(n_peers: u16) -> Switch {
    let mut s = Switch::new(Config::default(), Arc::new(Counters::default()));
    s.set_port(TAP, PortKind::Local);
    for p in 1..=n_peers {
        s.set_port(p, PortKind::Tunnel(Ipv4Addr::new(10, 200, 0, p as u8)));
    }
    s
}

#[test]
fn unknown_unicast_floods_then_learned_unicast_forwards() {
    let mut s = switch_with_peers(2);
    let a = mac(1, 1);
    let b = mac(2, 1);
    // a → b, b unknown: flood to both tunnels (not back to the TAP).
    let v = s.handle(0, TAP, &frame(b, a));
    assert_eq!(v.action, Action::Flood);
    assert_eq!(s.flood_targets(TAP).collect::<Vec<_>>(), vec![1, 2]);
    assert!(
        v.sync.is_some(),
        "a new station is announced to other workers"
    );
    // b answers from tunnel 1: a is known on the TAP.
    let v = s.handle(1, 1, &frame(a, b));
    assert_eq!(v.action, Action::Forward(TAP));
    // Now a → b goes only to tunnel 1.
    let v = s.handle(2, TAP, &frame(b, a));
    assert_eq!(v.action, Action::Forward(1));
    assert_eq!(v.sync, None, "a refresh is not announced per frame");
    let c = s.counters();
    assert_eq!(c.ports[0].rx_packets.get(), 2);
    assert_eq!(c.ports[0].rx_bytes.get(), 120);
    assert_eq!(c.ports[1].rx_packets.get(), 1);
    assert_eq!(c.events[Event::Flood as usize].get(), 1);
}

#[test]
fn broadcast_and_multicast_flood_except_ingress() {
    let mut s = switch_with_peers(2);
    let v = s.handle(0, TAP, &frame(MacAddr::BROADCAST, mac(1, 1)));
    assert_eq!(v.action, Action::Flood);
    let mcast = MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]);
    // Even if someone "learned" a group address it is never looked up.
    let v = s.handle(0, 2, &frame(mcast, mac(3, 1)));
    assert_eq!(v.action, Action::Flood);
}

#[test]
fn split_horizon_between_tunnels() {
    let mut s = switch_with_peers(2);
    // From a tunnel, floods reach only local ports.
    assert_eq!(s.flood_targets(1).collect::<Vec<_>>(), vec![TAP]);
    // A station learned on tunnel 2 is not reachable from tunnel 1.
    s.handle(0, 2, &frame(MacAddr::BROADCAST, mac(3, 1)));
    let v = s.handle(1, 1, &frame(mac(3, 1), mac(2, 1)));
    assert_eq!(v.action, Action::Drop(DropReason::SplitHorizon));
    assert_eq!(
        s.counters().drops[DropReason::SplitHorizon as usize].get(),
        1
    );
}

#[test]
fn split_horizon_off_allows_tunnel_to_tunnel() {
    let cfg = Config {
        split_horizon: false,
        ..Config::default()
    };
    let mut s = Switch::new(cfg, Arc::new(Counters::default()));
    s.set_port(0, PortKind::Local);
    s.set_port(1, PortKind::Tunnel(Ipv4Addr::new(10, 200, 0, 1)));
    s.set_port(2, PortKind::Tunnel(Ipv4Addr::new(10, 200, 0, 2)));
    assert_eq!(s.flood_targets(1).collect::<Vec<_>>(), vec![0, 2]);
    s.handle(0, 2, &frame(MacAddr::BROADCAST, mac(3, 1)));
    let v = s.handle(1, 1, &frame(mac(3, 1), mac(2, 1)));
    assert_eq!(v.action, Action::Forward(2));
}

#[test]
fn same_port_is_filtered() {
    let mut s = switch_with_peers(1);
    s.handle(0, TAP, &frame(MacAddr::BROADCAST, mac(1, 1)));
    let v = s.handle(0, TAP, &frame(mac(1, 1), mac(1, 2)));
    assert_eq!(v.action, Action::Drop(DropReason::SamePort));
}

#[test]
fn bad_frames_are_dropped_and_not_learned() {
    let mut s = switch_with_peers(1);
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (vec![0u8; 13], DropReason::Runt),
        (
            frame(mac(1, 1), MacAddr::BROADCAST),
            DropReason::BadSourceMac,
        ),
        (frame(mac(1, 1), MacAddr::ZERO), DropReason::BadSourceMac),
        (
            frame(mac(1, 1), MacAddr([0x01, 0, 0x5e, 0, 0, 1])),
            DropReason::BadSourceMac,
        ),
        (vec![0x02; 1500 + 19], DropReason::Giant),
    ];
    for (f, why) in cases {
        let before = s.counters().drops[why as usize].get();
        assert_eq!(s.handle(0, 1, &f).action, Action::Drop(why));
        assert_eq!(
            s.counters().drops[why as usize].get(),
            before + 1,
            "{why:?}"
        );
    }
    assert!(s.fdb().is_empty());
    // Every frame counted as received, dropped or not.
    assert_eq!(s.counters().ports[1].rx_packets.get(), 5);
    // A frame on a port that does not exist is refused without touching counters.
    assert_eq!(
        s.handle(0, 7, &frame(mac(1, 1), mac(1, 2))).action,
        Action::Drop(DropReason::UnknownPeer)
    );
}

#[test]
fn vlan_tagged_frames_learn_per_vlan() {
    let mut s = switch_with_peers(1);
    let mut f = vec![0u8; 64];
    f[..6].copy_from_slice(&MacAddr::BROADCAST.0);
    f[6..12].copy_from_slice(&mac(1, 1).0);
    f[12..16].copy_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
    f[16..18].copy_from_slice(&[0x08, 0x06]);
    s.handle(0, TAP, &f);
    assert_eq!(s.fdb().lookup(FdbKey::new(mac(1, 1), 10), 0), Some(TAP));
    assert_eq!(s.fdb().lookup(FdbKey::new(mac(1, 1), 0), 0), None);
}

#[test]
fn mac_move_updates_and_counts() {
    let mut s = switch_with_peers(2);
    s.handle(0, 1, &frame(MacAddr::BROADCAST, mac(9, 9)));
    let v = s.handle(1, 2, &frame(MacAddr::BROADCAST, mac(9, 9)));
    assert!(v.sync.is_some());
    assert_eq!(s.fdb().lookup(FdbKey::new(mac(9, 9), 0), 1), Some(2));
    assert_eq!(s.counters().events[Event::MacMove as usize].get(), 1);
}

#[test]
fn aging_returns_to_flooding() {
    let mut s = switch_with_peers(1);
    s.handle(0, 1, &frame(MacAddr::BROADCAST, mac(2, 1)));
    assert_eq!(
        s.handle(1000, TAP, &frame(mac(2, 1), mac(1, 1))).action,
        Action::Forward(1)
    );
    s.handle_timeout(300_000);
    assert_eq!(s.fdb().len(), 1, "a's entry (seen at 1000) is still fresh");
    assert_eq!(
        s.handle(300_001, TAP, &frame(mac(2, 1), mac(1, 1))).action,
        Action::Flood
    );
}

#[test]
fn full_table_still_delivers_by_flooding() {
    let cfg = Config {
        fdb_capacity: 2,
        ..Config::default()
    };
    let mut s = Switch::new(cfg, Arc::new(Counters::default()));
    s.set_port(0, PortKind::Local);
    s.set_port(1, PortKind::Tunnel(Ipv4Addr::new(10, 200, 0, 1)));
    for n in 0..5 {
        s.handle(0, TAP, &frame(MacAddr::BROADCAST, mac(1, n)));
    }
    assert_eq!(s.fdb().len(), 2);
    assert_eq!(s.counters().events[Event::FdbFull as usize].get(), 3);
    // An unlearnable station's traffic is flooded, not lost.
    assert_eq!(
        s.handle(1, 1, &frame(mac(1, 4), mac(2, 1))).action,
        Action::Flood
    );
    // The early stations keep working.
    assert_eq!(
        s.handle(1, 1, &frame(mac(1, 0), mac(2, 1))).action,
        Action::Forward(TAP)
    );
}

#[test]
fn removed_port_forgets_its_stations() {
    let mut s = switch_with_peers(2);
    s.handle(0, 2, &frame(MacAddr::BROADCAST, mac(3, 1)));
    assert_eq!(s.counters().fdb_entries.get(), 1);
    s.remove_port(2);
    assert_eq!(
        s.counters().fdb_entries.get(),
        0,
        "table size gauge follows the flush"
    );
    assert_eq!(s.flood_targets(TAP).collect::<Vec<_>>(), vec![1]);
    assert_eq!(
        s.handle(1, TAP, &frame(mac(3, 1), mac(1, 1))).action,
        Action::Flood
    );
}

#[test]
fn workers_converge_through_sync_updates() {
    let mut w0 = switch_with_peers(1);
    let mut w1 = switch_with_peers(1);
    // Station learned by worker 0 only.
    let v = w0.handle(5, 1, &frame(MacAddr::BROADCAST, mac(2, 1)));
    w1.apply_sync(v.sync.unwrap());
    // Worker 1 now forwards to it without flooding.
    assert_eq!(
        w1.handle(6, TAP, &frame(mac(2, 1), mac(1, 1))).action,
        Action::Forward(1)
    );
}

/// Several switch cores joined by in-memory tunnels (full mesh), each with one local port.
struct Mesh {
    sw: Vec<Switch>,
    /// Frames delivered to each host's local port.
    delivered: Vec<Vec<Vec<u8>>>,
    /// Frames sent over each (from, to) tunnel.
    tunnel_frames: Vec<Vec<usize>>,
}

impl Mesh {
    fn new(n: usize) -> Mesh {
        let mut sw = Vec::new();
        for i in 0..n {
            let mut s = Switch::new(Config::default(), Arc::new(Counters::default()));
            s.set_port(TAP, PortKind::Local);
            // Port of peer j on switch i: j+1 (the port for itself is simply absent).
            for j in 0..n {
                if j != i {
                    s.set_port(
                        j as PortId + 1,
                        PortKind::Tunnel(Ipv4Addr::new(10, 200, 0, j as u8 + 1)),
                    );
                }
            }
            sw.push(s);
        }
        Mesh {
            sw,
            delivered: vec![Vec::new(); n],
            tunnel_frames: vec![vec![0; n]; n],
        }
    }

    /// Host `h` sends `f` on its local port; runs until no frame is in flight.
    fn send(&mut self, now: Millis, h: usize, f: Vec<u8>) {
        let mut q = VecDeque::from([(h, TAP, f)]);
        let mut steps = 0;
        while let Some((i, port, f)) = q.pop_front() {
            steps += 1;
            assert!(steps < 1000, "forwarding loop");
            let v = self.sw[i].handle(now, port, &f);
            let outs: Vec<PortId> = match v.action {
                Action::Forward(p) => vec![p],
                Action::Flood => self.sw[i].flood_targets(port).collect(),
                Action::Drop(_) => vec![],
            };
            for p in outs {
                if p == TAP {
                    self.delivered[i].push(f.clone());
                } else {
                    let j = usize::from(p) - 1;
                    self.tunnel_frames[i][j] += 1;
                    q.push_back((j, i as PortId + 1, f.clone()));
                }
            }
        }
    }
}

#[test]
fn two_cores_back_to_back() {
    let mut m = Mesh::new(2);
    let (a, b) = (mac(1, 1), mac(2, 1));
    m.send(0, 0, frame(MacAddr::BROADCAST, a));
    assert_eq!(m.delivered[1].len(), 1);
    assert!(m.delivered[0].is_empty(), "never echoed to the sender");
    m.send(1, 1, frame(a, b));
    assert_eq!(m.delivered[0], vec![frame(a, b)]);
    m.send(2, 0, frame(b, a));
    assert_eq!(m.delivered[1].last(), Some(&frame(b, a)));
}

#[test]
fn three_cores_full_mesh_broadcast_once_and_unicast_not_to_third() {
    let mut m = Mesh::new(3);
    let (a, b) = (mac(1, 1), mac(2, 1));
    // A broadcast from host 0 reaches hosts 1 and 2 exactly once each (split horizon: no loop).
    m.send(0, 0, frame(MacAddr::BROADCAST, a));
    assert_eq!(
        m.delivered.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![0, 1, 1]
    );
    assert_eq!(m.tunnel_frames[1][2] + m.tunnel_frames[2][1], 0);
    // b answers a (a learned everywhere): unicast goes only 1 → 0.
    m.send(1, 1, frame(a, b));
    assert_eq!(m.tunnel_frames[1], vec![1, 0, 0]);
    // After learning, a → b travels 0 → 1 only; host 2 sees nothing more.
    let before = m.tunnel_frames[0][2];
    for t in 0..10 {
        m.send(2 + t, 0, frame(b, a));
    }
    assert_eq!(
        m.tunnel_frames[0][2], before,
        "nothing sent to the third host"
    );
    assert_eq!(m.delivered[1].len(), 1 + 10);
    assert_eq!(m.delivered[2].len(), 1);
}
