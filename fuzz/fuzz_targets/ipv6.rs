//! IPv6 header views: `Packet::new_checked` and `new_header_checked` on arbitrary bytes agree
//! with an independent reading of version and payload length; every accessor matches the
//! bytes; setting every field of a zeroed header from the parsed values rebuilds the header.
#![no_main]

use dnet::wire::ipv6::{Packet, HEADER_LEN};
use dnet::wire::WireError;
use libfuzzer_sys::fuzz_target;
use std::net::Ipv6Addr;

fuzz_target!(|data: &[u8]| {
    let header_ok = if data.len() < HEADER_LEN {
        Err(WireError::Truncated)
    } else if data[0] >> 4 != 6 {
        Err(WireError::BadIpv6)
    } else {
        Ok(())
    };
    assert_eq!(Packet::new_header_checked(data).map(|_| ()), header_ok);
    let plen = data
        .get(4..6)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])));
    let expect = header_ok.and_then(|()| match plen {
        Some(l) if data.len() >= HEADER_LEN + l => Ok(l),
        _ => Err(WireError::Truncated),
    });
    assert_eq!(Packet::new_checked(data).map(|p| p.payload_len()), expect);
    let Ok(p) = Packet::new_header_checked(data) else {
        return;
    };

    let addr = |r: std::ops::Range<usize>| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&data[r]);
        Ipv6Addr::from(a)
    };
    let w = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    assert_eq!(p.version(), 6);
    assert_eq!(p.traffic_class(), (w >> 20) as u8);
    assert_eq!(p.flow_label(), w & 0xf_ffff);
    assert_eq!(Some(p.payload_len()), plen);
    assert_eq!((p.next_header(), p.hop_limit()), (data[6], data[7]));
    assert_eq!((p.src(), p.dst()), (addr(8..24), addr(24..40)));
    assert_eq!(p.header(), &data[..HEADER_LEN]);
    assert_eq!(p.rest(), &data[HEADER_LEN..]);
    if let Ok(l) = expect {
        assert_eq!(p.payload(), &data[HEADER_LEN..HEADER_LEN + l]);
    }

    let mut b = [0xffu8; HEADER_LEN];
    let mut q = Packet::new_unchecked(&mut b[..]);
    q.set_version();
    q.set_traffic_class(p.traffic_class());
    q.set_flow_label(p.flow_label());
    q.set_payload_len(p.payload_len() as u16);
    q.set_next_header(p.next_header());
    q.set_hop_limit(p.hop_limit());
    q.set_src(p.src());
    q.set_dst(p.dst());
    assert_eq!(&b[..], &data[..HEADER_LEN]);
});
