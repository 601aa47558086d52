//! ARP: `arp::Packet::new_checked` on arbitrary bytes accepts exactly the Ethernet/IPv4 ARP
//! layout and no accessor panics after it; the duplicate-IP watcher (`ArpWatch`) fed arbitrary
//! ARP payloads on arbitrary ports, VLANs and advancing times never panics and stays bounded.
#![no_main]

use dnet::switch::arp_watch::{ArpWatch, CONFLICT_CAPACITY, TABLE_CAPACITY};
use dnet::wire::arp::Packet;
use dnet::wire::ethernet::MacAddr;
use libfuzzer_sys::fuzz_target;
use std::net::Ipv4Addr;

fuzz_target!(|data: &[u8]| {
    let expect_ok = data.len() >= 28
        && data[0..2] == [0, 1]
        && data[2..4] == [0x08, 0x00]
        && data[4] == 6
        && data[5] == 4;
    match Packet::new_checked(data) {
        Ok(p) => {
            assert!(expect_ok, "accepted a non Ethernet/IPv4 ARP packet");
            assert_eq!(p.htype(), 1);
            assert_eq!(p.ptype(), 0x0800);
            assert_eq!(p.operation(), u16::from_be_bytes([data[6], data[7]]));
            assert_eq!(p.sender_mac(), MacAddr::from_bytes(&data[8..14]));
            assert_eq!(
                p.sender_ip(),
                Ipv4Addr::new(data[14], data[15], data[16], data[17])
            );
            assert_eq!(p.target_mac(), MacAddr::from_bytes(&data[18..24]));
            assert_eq!(
                p.target_ip(),
                Ipv4Addr::new(data[24], data[25], data[26], data[27])
            );
        }
        Err(_) => assert!(!expect_ok, "refused a valid ARP packet"),
    }

    // The watcher: records of [time delta, vlan, port, len] + payload.
    let mut w = ArpWatch::new();
    let mut now = 0u64;
    let mut rest = data;
    while rest.len() >= 4 {
        let (h, tail) = rest.split_at(4);
        now += u64::from(h[0]) * 997;
        let len = usize::from(h[3]).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        w.observe(now, u16::from(h[1] & 0x0f), u16::from(h[2] % 4), payload);
        if h[0] & 0x80 != 0 {
            w.expire(now);
        }
        rest = tail;
    }
    let d = w.dump(now);
    assert!(d.conflicts.len() <= CONFLICT_CAPACITY);
    assert!(d.claims.len() <= TABLE_CAPACITY);
});
