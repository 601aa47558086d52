//! Ethernet frame views: `Frame::new_checked` and every accessor on arbitrary bytes, the
//! setters on a copy, and the `MacAddr` helpers (Display/FromStr round trip, FDB key packing).
#![no_main]

use dnet::switch::FdbKey;
use dnet::wire::ethernet::{ethertype, Frame, MacAddr, HEADER_LEN, TAGGED_HEADER_LEN};
use dnet::wire::WireError;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // FromStr never panics on any text.
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(m) = s.parse::<MacAddr>() {
            assert_eq!(m.to_string().parse::<MacAddr>(), Ok(m));
        }
    }

    let tagged = data.len() >= 14 && data[12..14] == ethertype::VLAN.to_be_bytes();
    let f = match Frame::new_checked(data) {
        Ok(f) => f,
        Err(e) => {
            assert_eq!(e, WireError::Truncated);
            assert!(data.len() < HEADER_LEN || (tagged && data.len() < TAGGED_HEADER_LEN));
            return;
        }
    };
    assert!(data.len() >= if tagged { TAGGED_HEADER_LEN } else { HEADER_LEN });

    let (dst, src) = (f.dst(), f.src());
    assert_eq!(dst.0, data[0..6]);
    assert_eq!(src.0, data[6..12]);
    let hl = f.header_len();
    assert_eq!(hl, if tagged { TAGGED_HEADER_LEN } else { HEADER_LEN });
    assert_eq!(f.payload(), &data[hl..]);
    match f.vlan() {
        Some(v) => {
            assert!(tagged);
            assert!(v <= 0x0fff);
            assert_eq!(f.ethertype(), u16::from_be_bytes([data[16], data[17]]));
        }
        None => {
            assert!(!tagged);
            assert_eq!(f.ethertype(), u16::from_be_bytes([data[12], data[13]]));
        }
    }

    for m in [dst, src] {
        assert_eq!(m.is_broadcast(), m == MacAddr::BROADCAST);
        assert_eq!(m.is_zero(), m == MacAddr::ZERO);
        if m.is_broadcast() {
            assert!(m.is_multicast());
        }
        assert_eq!(m.is_valid_source(), !m.is_multicast() && !m.is_zero());
        assert!(m.to_u64() < 1 << 48);
        assert_eq!(MacAddr::from_bytes(&m.to_u64().to_be_bytes()[2..]), m);
        let s = m.to_string();
        assert_eq!(s.len(), 17);
        assert_eq!(s.parse::<MacAddr>(), Ok(m));
        assert_eq!(format!("{m:?}"), s);
        let vlan = f.vlan().unwrap_or(0);
        let k = FdbKey::new(m, vlan);
        assert_eq!((k.mac(), k.vlan()), (m, vlan));
    }

    // Setters on a copy write exactly their fields.
    let mut buf = data.to_vec();
    let mut g = Frame::new_checked(&mut buf[..]).unwrap();
    g.set_dst(src);
    g.set_src(dst);
    assert_eq!((g.dst(), g.src()), (src, dst));
    let et = f.ethertype();
    g.set_ethertype(et);
    assert_eq!(g.header_len(), if et == ethertype::VLAN { TAGGED_HEADER_LEN } else { HEADER_LEN });
    let plen = g.payload().len();
    g.payload_mut().fill(0xa5);
    assert_eq!(g.payload_mut().len(), plen);
    let inner = g.into_inner();
    assert_eq!(inner.len(), data.len());
});
