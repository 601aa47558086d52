//! IPv4 header views: `Packet::new_checked`, `new_header_checked`, every accessor and
//! `into_payload` on arbitrary bytes, checked against an independent reading of the header;
//! setting every field of a zeroed header from the parsed values rebuilds the header.
#![no_main]

use dnet::wire::ipv4::{Packet, MIN_HEADER_LEN};
use dnet::wire::WireError;
use libfuzzer_sys::fuzz_target;
use std::net::Ipv4Addr;

fuzz_target!(|data: &[u8]| {
    check_header(data);

    // What the header says, read independently.
    let expect = if data.len() < MIN_HEADER_LEN {
        Err(WireError::Truncated)
    } else {
        let ihl = usize::from(data[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([data[2], data[3]]));
        if data[0] >> 4 != 4 || ihl < MIN_HEADER_LEN || total < ihl {
            Err(WireError::BadIpv4)
        } else if data.len() < total {
            Err(WireError::Truncated)
        } else {
            Ok((ihl, total))
        }
    };

    let p = match Packet::new_checked(data) {
        Ok(p) => p,
        Err(e) => {
            assert_eq!(Err(e), expect);
            return;
        }
    };
    let Ok((ihl, total)) = expect else {
        panic!("accepted a packet that should be refused: {expect:?}");
    };

    // After new_checked no accessor may panic.
    assert_eq!(p.header_len(), ihl);
    assert_eq!(p.total_len(), total);
    assert_eq!(p.protocol(), data[9]);
    assert_eq!(p.src(), Ipv4Addr::new(data[12], data[13], data[14], data[15]));
    assert_eq!(p.dst(), Ipv4Addr::new(data[16], data[17], data[18], data[19]));
    let payload = p.payload();
    assert_eq!(payload, &data[ihl..total]);
    assert_eq!(p.into_payload(), payload);
    // The same through an owned buffer.
    let owned = Packet::new_checked(data.to_vec()).unwrap();
    assert_eq!(owned.payload(), payload);
    assert_eq!(owned.check_len(), Ok(()));
});

/// The header-only check and every field accessor, then a rebuild through the setters.
fn check_header(data: &[u8]) {
    let expect = if data.len() < MIN_HEADER_LEN {
        Err(WireError::Truncated)
    } else {
        let ihl = usize::from(data[0] & 0x0f) * 4;
        if data[0] >> 4 != 4 || ihl < MIN_HEADER_LEN {
            Err(WireError::BadIpv4)
        } else if data.len() < ihl {
            Err(WireError::Truncated)
        } else {
            Ok(ihl)
        }
    };
    let p = match Packet::new_header_checked(data) {
        Ok(p) => p,
        Err(e) => {
            assert_eq!(Err(e), expect);
            return;
        }
    };
    let Ok(ihl) = expect else {
        panic!("accepted a header that should be refused: {expect:?}");
    };
    let be16 = |i: usize| u16::from_be_bytes([data[i], data[i + 1]]);
    let frag = be16(6);
    assert_eq!((p.version(), p.header_len()), (4, ihl));
    assert_eq!((p.dscp(), p.ecn()), (data[1] >> 2, data[1] & 3));
    assert_eq!((p.total_len(), p.ident()), (usize::from(be16(2)), be16(4)));
    assert_eq!(p.reserved_flag(), frag & 0x8000 != 0);
    assert_eq!(p.dont_frag(), frag & 0x4000 != 0);
    assert_eq!(p.more_frags(), frag & 0x2000 != 0);
    assert_eq!(p.frag_offset(), (frag & 0x1fff) * 8);
    assert_eq!(p.is_fragment(), frag & 0x3fff != 0);
    assert_eq!((p.ttl(), p.protocol(), p.checksum()), (data[8], data[9], be16(10)));
    assert_eq!(p.header(), &data[..ihl]);
    assert_eq!(p.options(), &data[MIN_HEADER_LEN..ihl]);
    assert_eq!(p.rest(), &data[ihl..]);

    let mut b = vec![0u8; ihl];
    b[MIN_HEADER_LEN..].copy_from_slice(p.options());
    let mut q = Packet::new_unchecked(&mut b[..]);
    q.set_version_and_header_len(ihl);
    q.set_dscp_ecn(p.dscp(), p.ecn());
    q.set_total_len(p.total_len() as u16);
    q.set_ident(p.ident());
    q.set_frag(p.dont_frag(), p.more_frags(), p.frag_offset());
    q.set_ttl(p.ttl());
    q.set_protocol(p.protocol());
    q.set_src(p.src());
    q.set_dst(p.dst());
    q.set_checksum(p.checksum());
    let mut want = data[..ihl].to_vec();
    want[6] &= 0x7f; // the setter always clears the reserved flag
    assert_eq!(b, want);
    let mut q = Packet::new_unchecked(&mut b[..]);
    q.fill_checksum();
    assert!(q.verify_checksum());
}
