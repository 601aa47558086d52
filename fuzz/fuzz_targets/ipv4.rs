//! Outer IPv4 header views: `Packet::new_checked`, every accessor and `into_payload` on
//! arbitrary bytes, checked against an independent reading of the header.
#![no_main]

use dnet::wire::ipv4::{Packet, MIN_HEADER_LEN};
use dnet::wire::WireError;
use libfuzzer_sys::fuzz_target;
use std::net::Ipv4Addr;

fuzz_target!(|data: &[u8]| {
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
