//! TCP header views and options: `Packet::new_checked` on arbitrary bytes agrees with an
//! independent reading of the data offset; every accessor matches the bytes; the option
//! iterator never panics, ends at End or at its first error, and the options it yields
//! re-emit to exactly the bytes they were read from; `set_mss` rewrites only the MSS value
//! and the checksum, keeps a valid checksum valid, and agrees with `mss`; the RFC 1624
//! update of a changed sequence number equals a full recomputation.
#![no_main]

use dnet::wire::checksum::update32;
use dnet::wire::tcp::{OptionIter, Packet, TcpOption, HEADER_LEN};
use dnet::wire::WireError;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Any bytes as an option list: the walk ends, without panicking.
    check_options(data);

    // Two bytes of pseudo-header, then the segment. The protocol number (6) in the sum keeps
    // the covered words from all being zero, the one case where RFC 1624 eqn. 3 and a
    // recomputation disagree (0x0000 vs 0xffff).
    let Some((pseudo, seg)) = data.split_first_chunk::<2>() else {
        return;
    };
    let pseudo = u64::from(u16::from_be_bytes(*pseudo)) + 6 + seg.len() as u64;

    let expect = if seg.len() < HEADER_LEN {
        Err(WireError::Truncated)
    } else {
        let hl = usize::from(seg[12] >> 4) * 4;
        if hl < HEADER_LEN {
            Err(WireError::BadTcp)
        } else if seg.len() < hl {
            Err(WireError::Truncated)
        } else {
            Ok(hl)
        }
    };
    let p = match Packet::new_checked(seg) {
        Ok(p) => p,
        Err(e) => {
            assert_eq!(Err(e), expect);
            return;
        }
    };
    let Ok(hl) = expect else {
        panic!("accepted a segment that should be refused: {expect:?}");
    };
    let be16 = |i: usize| u16::from_be_bytes([seg[i], seg[i + 1]]);
    let be32 = |i: usize| u32::from_be_bytes([seg[i], seg[i + 1], seg[i + 2], seg[i + 3]]);
    assert_eq!((p.src_port(), p.dst_port()), (be16(0), be16(2)));
    assert_eq!((p.seq_number(), p.ack_number()), (be32(4), be32(8)));
    assert_eq!((p.header_len(), p.reserved(), p.flags()), (hl, seg[12] & 0x0f, seg[13]));
    assert_eq!((p.window_len(), p.checksum(), p.urgent_ptr()), (be16(14), be16(16), be16(18)));
    assert_eq!(p.header(), &seg[..hl]);
    assert_eq!(p.options(), &seg[HEADER_LEN..hl]);
    assert_eq!(p.payload(), &seg[hl..]);
    check_options(p.options());

    // The MSS is the first MSS option before any malformed one.
    let first_mss = p
        .iter_options()
        .map_while(Result::ok)
        .find_map(|o| match o {
            TcpOption::Mss(v) => Some(v),
            _ => None,
        });
    assert_eq!(p.mss(), first_mss);

    // Rewriting the MSS of a segment with a valid checksum keeps it valid, and touches only
    // the option's value and the checksum.
    let mut copy = seg.to_vec();
    let mut q = Packet::new_unchecked(&mut copy[..]);
    q.fill_checksum(pseudo);
    assert!(q.verify_checksum(pseudo));
    let before = copy.clone();
    let new_mss = be16(0) ^ 0x5a5a;
    let mut q = Packet::new_unchecked(&mut copy[..]);
    assert_eq!(q.set_mss(new_mss), first_mss);
    assert!(q.verify_checksum(pseudo), "checksum after set_mss");
    if first_mss.is_some() {
        assert_eq!(q.mss(), Some(new_mss));
    }
    let changed: Vec<usize> = (0..copy.len()).filter(|&i| copy[i] != before[i]).collect();
    assert!(changed.iter().all(|&i| i == 16 || i == 17 || (HEADER_LEN..hl).contains(&i)));
    assert!(changed.iter().filter(|&&i| i >= HEADER_LEN).count() <= 2);

    // An incremental update of a changed sequence number equals recomputing.
    let mut q = Packet::new_unchecked(&mut copy[..]);
    let (old_seq, hc) = (q.seq_number(), q.checksum());
    let new_seq = be32(0).rotate_left(7) ^ old_seq;
    q.set_seq_number(new_seq);
    let incremental = update32(hc, old_seq, new_seq);
    q.fill_checksum(pseudo);
    assert_eq!(incremental, q.checksum(), "RFC 1624 update vs recomputation");
});

/// Walks `opts`: at most one error, as the last item; nothing after End; the options
/// yielded re-emit to the bytes they came from.
fn check_options(opts: &[u8]) {
    let mut out = vec![0u8; opts.len()];
    let mut at = 0;
    let mut items = 0;
    for o in OptionIter::new(opts) {
        items += 1;
        assert!(items <= opts.len(), "every option consumes a byte");
        match o {
            Ok(o) => {
                let n = o.emit(&mut out[at..]);
                assert_eq!(n, o.buffer_len());
                assert_eq!(&out[at..at + n], &opts[at..at + n], "{o:?} re-emitted");
                at += n;
                if o == TcpOption::End {
                    assert_eq!(opts[at - 1], 0);
                }
            }
            Err(e) => {
                assert!(matches!(e, WireError::Truncated | WireError::BadTcpOption));
                assert!(at < opts.len());
            }
        }
    }
    // The walk stopped at End, at an error, or at the end of the bytes.
    let ended = OptionIter::new(opts).last();
    match ended {
        None => assert!(opts.is_empty()),
        Some(Ok(TcpOption::End)) | Some(Err(_)) => {}
        Some(Ok(_)) => assert_eq!(at, opts.len()),
    }
}
