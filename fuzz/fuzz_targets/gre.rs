//! GRE header parsing and the emit → parse round trip.
//!
//! Arbitrary bytes go through `Packet::new_checked`, every accessor and `Repr::parse`. When a
//! header parses, it is re-emitted with `Repr::emit` over the same payload, and the result must
//! parse back to the same `Repr` (so the checksum written by `emit` verifies). The input also
//! drives a second round trip from an arbitrary `Repr`, and checks `Repr::emit_parts` against
//! `Repr::emit`.
#![no_main]

use dnet::wire::gre::{Packet, Repr, BASE_LEN, MAX_HEADER_LEN, PROTO_TEB};
use dnet::wire::WireError;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    parse_and_reemit(data);
    emit_and_parse(data);
});

fn parse_and_reemit(data: &[u8]) {
    let p = match Packet::new_checked(data) {
        Ok(p) => p,
        Err(e) => {
            assert_eq!(e, WireError::Truncated);
            // parse re-checks the length itself: it must refuse too, not panic.
            assert_eq!(
                Repr::parse(&Packet::new_unchecked(data)),
                Err(WireError::Truncated)
            );
            return;
        }
    };

    // After new_checked no accessor may panic.
    let hl = p.header_len();
    assert!((BASE_LEN..=MAX_HEADER_LEN).contains(&hl) && hl % 4 == 0);
    assert!(hl <= data.len());
    let (c, k, s) = (p.has_checksum(), p.has_key(), p.has_seq());
    assert_eq!(hl, BASE_LEN + 4 * (c as usize + k as usize + s as usize));
    assert_eq!(p.checksum().is_some(), c);
    assert_eq!(p.key().is_some(), k);
    assert_eq!(p.seq().is_some(), s);
    let _ = (p.has_routing(), p.version(), p.protocol(), p.verify_checksum());
    let payload = p.payload();
    assert_eq!(payload, &data[hl..]);
    assert_eq!(p.into_payload(), payload);

    let r = match Repr::parse(&p) {
        Ok(r) => r,
        Err(e) => {
            // Refusals follow the documented receive rules, in order.
            let want = if p.version() != 0 {
                WireError::BadVersion
            } else if p.has_routing() {
                WireError::Routing
            } else if p.protocol() != PROTO_TEB {
                WireError::UnknownProtocol
            } else {
                WireError::BadChecksum
            };
            assert_eq!(e, want);
            return;
        }
    };
    assert_eq!(p.version(), 0);
    assert!(!p.has_routing());
    assert_eq!(p.protocol(), PROTO_TEB);
    assert!(p.verify_checksum());
    assert_eq!(r.csum, c);
    assert_eq!(r.key, p.key());
    assert_eq!(r.seq, p.seq());
    assert_eq!(r.header_len(), hl);

    // Re-emit over the same payload: the new header must parse to the same Repr.
    let mut hdr = [0u8; MAX_HEADER_LEN];
    r.emit(&mut hdr, payload);
    let hdr = &hdr[..hl];
    let mut pkt = Vec::with_capacity(data.len());
    pkt.extend_from_slice(hdr);
    pkt.extend_from_slice(payload);
    let q = Packet::new_checked(&pkt[..]).expect("re-emitted header is truncated");
    assert_eq!(q.header_len(), hl);
    assert_eq!(Repr::parse(&q), Ok(r), "re-emitted header does not parse back");
    assert_eq!(q.payload(), payload);

    // Where the received header had no ignored bits set (bits 6-12, Reserved1), emit reproduces
    // it byte for byte, except that a checksum may be written as 0x0000 where the sender wrote
    // 0xffff or vice versa (both are zero in one's complement).
    let reserved1_clear = !c || data[6..8] == [0, 0];
    if data[0] & 0x03 == 0 && data[1] == 0 && reserved1_clear {
        if c {
            let (a, b) = (
                u16::from_be_bytes([data[4], data[5]]),
                u16::from_be_bytes([hdr[4], hdr[5]]),
            );
            assert!(
                a == b || (a | b == 0xffff && a & b == 0),
                "checksum {a:#06x} re-emitted as {b:#06x}"
            );
            assert_eq!(&hdr[..4], &data[..4]);
            assert_eq!(&hdr[6..], &data[6..hl]);
        } else {
            assert_eq!(hdr, &data[..hl]);
        }
    }
}

fn emit_and_parse(data: &[u8]) {
    // An arbitrary Repr from the first 9 bytes, the rest is the payload.
    if data.len() < 9 {
        return;
    }
    let f = data[0];
    let k = u32::from_be_bytes([data[1], data[2], data[3], data[4]]);
    let s = u32::from_be_bytes([data[5], data[6], data[7], data[8]]);
    let r = Repr {
        csum: f & 1 != 0,
        key: (f & 2 != 0).then_some(k),
        seq: (f & 4 != 0).then_some(s),
    };
    let payload = &data[9..];
    let mut pkt = vec![0u8; r.header_len()];
    r.emit(&mut pkt, payload);
    // emit_parts over the payload cut into even-length pieces (and an empty one) writes the
    // same header as emit over the whole.
    let cut = usize::from(f >> 3) * 2;
    if cut <= payload.len() {
        let (a, b) = payload.split_at(cut);
        let (a1, a2) = a.split_at(cut / 4 * 2);
        let mut parts = vec![0u8; r.header_len()];
        r.emit_parts(&mut parts, &[a1, &[], a2, b]);
        assert_eq!(parts, pkt, "emit_parts differs from emit");
    }
    pkt.extend_from_slice(payload);
    let p = Packet::new_checked(&pkt[..]).expect("emitted header is truncated");
    assert_eq!(Repr::parse(&p), Ok(r));
    assert_eq!(p.payload(), payload);
}
