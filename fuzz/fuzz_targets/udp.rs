//! UDP header views: `Packet::new_checked` on arbitrary bytes agrees with an independent
//! reading of the length field; accessors and `payload()` / `into_payload()` match the bytes;
//! `fill_checksum` then `verify_checksum` holds for any pseudo-header sum, and a filled
//! checksum is never 0 (0 means "none").
#![no_main]

use dnet::wire::udp::{Packet, HEADER_LEN};
use dnet::wire::WireError;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((pseudo, d)) = data.split_first_chunk::<2>() else {
        return;
    };
    let pseudo = u64::from(u16::from_be_bytes(*pseudo)) + 17;
    let expect = if d.len() < HEADER_LEN {
        Err(WireError::Truncated)
    } else {
        let l = usize::from(u16::from_be_bytes([d[4], d[5]]));
        if l < HEADER_LEN {
            Err(WireError::BadUdp)
        } else if d.len() < l {
            Err(WireError::Truncated)
        } else {
            Ok(l)
        }
    };
    let p = match Packet::new_checked(d) {
        Ok(p) => p,
        Err(e) => {
            assert_eq!(Err(e), expect);
            return;
        }
    };
    let Ok(l) = expect else {
        panic!("accepted a datagram that should be refused: {expect:?}");
    };
    let be16 = |i: usize| u16::from_be_bytes([d[i], d[i + 1]]);
    assert_eq!((p.src_port(), p.dst_port()), (be16(0), be16(2)));
    assert_eq!((usize::from(p.length()), p.checksum()), (l, be16(6)));
    assert_eq!(p.payload(), &d[HEADER_LEN..l]);
    assert_eq!(p.into_payload(), &d[HEADER_LEN..l]);
    if p.checksum() == 0 {
        assert!(p.verify_checksum(pseudo), "no checksum: accepted");
    }

    let mut copy = d.to_vec();
    let mut q = Packet::new_unchecked(&mut copy[..]);
    q.fill_checksum(pseudo);
    assert_ne!(q.checksum(), 0);
    assert!(q.verify_checksum(pseudo));
    assert_eq!(&copy[..6], &d[..6]);
    assert_eq!(&copy[8..], &d[8..]);
});
