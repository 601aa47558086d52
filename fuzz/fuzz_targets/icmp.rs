//! Path-MTU handling of arbitrary inner frames: `icmp::classify`, `icmp::too_big` (the ICMP
//! frag-needed / Packet Too Big reply builder), `pmtu::decide` and `pmtu::clamp_mss` never
//! panic, never write past the caller's buffer, and a reply is always a well-formed frame
//! addressed back to the sender.
#![no_main]

use dnet::switch::pmtu;
use dnet::wire::{ethernet::Frame, icmp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let mtu = u16::from_be_bytes([data[0], data[1]]);
    let max_frame = usize::from(u16::from_be_bytes([data[2], data[3]]));
    let frame = &data[4..];

    let _ = icmp::classify(frame);
    let _ = pmtu::decide(frame, frame.len(), max_frame);

    let mut out = [0u8; icmp::MAX_REPLY];
    if let Some(n) = icmp::too_big(frame, mtu, &mut out) {
        assert!(n <= out.len());
        let reply = Frame::new_checked(&out[..n]).expect("reply is an Ethernet frame");
        let orig = Frame::new_checked(frame).expect("only valid frames are answered");
        assert_eq!(reply.dst(), orig.src(), "reply goes back to the sender");
        assert_eq!(reply.src(), orig.dst(), "reply comes from the destination");
    }
    // A buffer too small for the reply is refused, never overrun.
    let mut small = [0u8; 40];
    if let Some(n) = icmp::too_big(frame, mtu, &mut small) {
        assert!(n <= small.len());
    }

    let mut copy = frame.to_vec();
    if let Some(mss) = pmtu::clamp_mss(&mut copy, max_frame) {
        assert!(usize::from(mss) <= max_frame);
        assert_eq!(copy.len(), frame.len());
    }
});
