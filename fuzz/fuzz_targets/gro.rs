//! TAP offloads, receive side: arbitrary frames (2-byte length prefix each) added to a `Gro`
//! (TCP) and a `UdpGro` run, flushed as the worker does on `Mismatch`/`Alone`, never panic;
//! every finished run has at most `MAX_SEGS` parts, headers within the head buffer, and at
//! most 64 KiB of IP. Each frame is also offered to `underlay_gro::coalesced` at a few MTUs:
//! a frame it takes segments without error into pieces whose IP fits that MTU, in order.
#![no_main]

use dnet::offload::gro::{Add, Gro, MAX_SEGS};
use dnet::offload::udp_gro::UdpGro;
use dnet::offload::{gso, underlay_gro, MAX_HEADERS};
use dnet::wire::vnet;
use libfuzzer_sys::fuzz_target;

fn check(run: &mut Gro<'_>) {
    if run.is_empty() {
        return;
    }
    let mut head = [0u8; vnet::LEN + MAX_HEADERS];
    let (hl, parts) = run.finish(&mut head);
    assert!(hl >= vnet::LEN && hl <= head.len());
    assert!(!parts.is_empty() && parts.len() <= MAX_SEGS);
    let total: usize = parts.iter().map(|p| p.len()).sum::<usize>() + hl - vnet::LEN;
    assert!(total <= 14 + 4 + 40 + 65_535, "{total} bytes in one run");
}

fn check_udp(run: &mut UdpGro<'_>) {
    if run.is_empty() {
        return;
    }
    let mut head = [0u8; vnet::LEN + MAX_HEADERS];
    let (hl, parts) = run.finish(&mut head);
    assert!(hl >= vnet::LEN && hl <= head.len());
    assert!(!parts.is_empty() && parts.len() <= dnet::offload::udp_gro::MAX_SEGS);
    let ip: usize = parts.iter().map(|p| p.len()).sum::<usize>() + 28;
    assert!(ip <= 65_535, "{ip} bytes of IP in one UDP run");
    if parts.len() > 1 {
        // Every datagram but the last is as long as the GSO size says.
        let h = vnet::VnetHdr::parse(&head[..hl]).expect("own header parses");
        let seg = usize::from(h.gso_size);
        assert!(parts[..parts.len() - 1].iter().all(|p| p.len() == seg));
        assert!(parts[parts.len() - 1].len() <= seg);
    }
}

fn check_underlay(f: &[u8]) {
    for mtu in [576, 1400, 1500] {
        let Some(h) = underlay_gro::coalesced(f, mtu) else {
            continue;
        };
        let hl = usize::from(h.hdr_len);
        let mut tiled = 0;
        let n = gso::segment(f, &h, |headers, payload| {
            // Headers start with the Ethernet header (14, or 18 with a tag).
            assert!(
                headers.len() + payload.len() <= mtu + 18,
                "segment over MTU {mtu}"
            );
            assert_eq!(payload, &f[hl + tiled..hl + tiled + payload.len()]);
            tiled += payload.len();
        })
        .expect("a frame coalesced() takes segments");
        assert!(n > 1);
        assert_eq!(hl + tiled, f.len());
    }
}

fuzz_target!(|data: &[u8]| {
    let mut frames = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])) % 2048;
        let len = len.min(rest.len() - 2);
        frames.push(&rest[2..2 + len]);
        rest = &rest[2 + len..];
    }
    for &f in &frames {
        check_underlay(f);
    }
    let mut udp = UdpGro::new();
    for &f in &frames {
        match udp.add(f) {
            Add::Added => {}
            Add::Mismatch => {
                check_udp(&mut udp);
                if udp.add(f) != Add::Added {
                    check_udp(&mut udp);
                }
            }
            Add::Alone => check_udp(&mut udp),
        }
    }
    check_udp(&mut udp);
    let mut run = Gro::new();
    for f in frames {
        match run.add(f) {
            Add::Added => {}
            Add::Mismatch => {
                check(&mut run);
                if run.add(f) != Add::Added {
                    check(&mut run);
                }
            }
            Add::Alone => check(&mut run),
        }
        assert!(run.len() <= MAX_SEGS);
    }
    check(&mut run);
});
