//! Fixtures shared by dnet's criterion benches: learned tables and frames.

use dnet::switch::{Config, Counters, PortId, PortKind, Switch};
use dnet::wire::ethernet::MacAddr;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// MAC number `i` (locally administered, unique for i < 2^32).
pub fn mac(i: u32) -> MacAddr {
    let b = i.to_be_bytes();
    MacAddr([0x02, 0x42, b[0], b[1], b[2], b[3]])
}

/// A 60-byte IPv4 frame from `src` to `dst`.
pub fn frame(dst: MacAddr, src: MacAddr) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f
}

/// A switch with a TAP (port 0) and `peers` tunnels, whose table holds `stations` MACs:
/// even ones behind the TAP, odd ones spread over the tunnels.
pub fn learned_switch(peers: u16, stations: u32) -> Switch {
    let mut s = Switch::new(
        Config {
            fdb_capacity: stations.max(8192) as usize,
            ..Config::default()
        },
        Arc::new(Counters::default()),
    );
    s.set_port(0, PortKind::Local);
    for p in 1..=peers {
        s.set_port(p, PortKind::Tunnel(Ipv4Addr::new(10, 200, 0, p as u8)));
    }
    for i in 0..stations {
        let port: PortId = if i % 2 == 0 {
            0
        } else {
            1 + (i / 2 % u32::from(peers)) as PortId
        };
        s.handle(0, port, &frame(MacAddr::BROADCAST, mac(i)));
    }
    assert_eq!(s.fdb().len(), stations as usize);
    s
}
