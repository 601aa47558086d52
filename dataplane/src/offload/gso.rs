//! Segmentation of TCP super-frames (what a NIC does for TSO), and completion of partial
//! checksums, for frames read from a TAP with offloads on.

use super::{pseudo_header_sum, tcp_layout, IpMut, MAX_HEADERS};
use crate::wire::checksum::{accumulate, finish};
use crate::wire::tcp::flags::{CWR, FIN, PSH};
use crate::wire::vnet::{self, VnetHdr};

/// Why a frame from the TAP could not be prepared for the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GsoError {
    /// The virtio-net header contradicts the frame (offsets out of range, zero MSS, wrong IP
    /// version for the GSO type).
    #[error("virtio-net header does not match the frame")]
    Malformed,
    /// A super-frame of a kind dnet does not segment (UDP, IPv6 extension headers).
    #[error("unsupported super-frame")]
    Unsupported,
}

/// Completes a partial checksum (`F_NEEDS_CSUM`): the kernel left the pseudo-header sum in the
/// checksum field; the sum from `csum_start` to the end, folded and complemented, replaces it.
pub fn complete_checksum(frame: &mut [u8], h: &VnetHdr) -> Result<(), GsoError> {
    if h.flags & vnet::F_NEEDS_CSUM == 0 {
        return Ok(());
    }
    let start = usize::from(h.csum_start);
    let at = start + usize::from(h.csum_offset);
    if start >= frame.len() || at + 2 > frame.len() {
        return Err(GsoError::Malformed);
    }
    let c = finish(accumulate(0, &frame[start..]));
    // As the kernel does: a computed 0 goes on the wire as 0xffff (UDP reads 0 as "none").
    let c = if c == 0 { 0xffff } else { c };
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// How many segments `segment` makes of a super-frame, and their total size in bytes (each
/// with its own headers): what the frame amounts to on the wire.
pub fn wire_size(frame: &[u8], h: &VnetHdr) -> Option<(u64, usize)> {
    let lay = tcp_layout(frame)?;
    let mss = usize::from(h.gso_size).max(1);
    let payload = frame.len() - lay.payload;
    let n = payload.div_ceil(mss).max(1);
    Some((n as u64, n * lay.payload + payload))
}

/// Splits the TCP super-frame `frame` (described by `h`) into segments of at most
/// `h.gso_size` payload bytes. For each, `out(headers, payload)` gets the fixed-up Ethernet +
/// IP + TCP headers (lengths, IPv4 id and checksum, sequence number, flags, TCP checksum) and a
/// slice of `frame`'s payload (borrowed for as long as `frame` is), so the payload is never
/// copied. Returns the segment count.
pub fn segment<'f>(
    frame: &'f [u8],
    h: &VnetHdr,
    mut out: impl FnMut(&[u8], &'f [u8]),
) -> Result<usize, GsoError> {
    let lay = tcp_layout(frame).ok_or(GsoError::Unsupported)?;
    let want_v6 = match h.gso_kind() {
        vnet::gso::TCPV4 => false,
        vnet::gso::TCPV6 => true,
        _ => return Err(GsoError::Unsupported),
    };
    if lay.v6 != want_v6 {
        return Err(GsoError::Malformed);
    }
    let mss = usize::from(h.gso_size);
    if mss == 0 {
        return Err(GsoError::Malformed);
    }
    let hl = lay.payload;
    if hl > MAX_HEADERS {
        return Err(GsoError::Unsupported);
    }
    let l4 = lay.l4;
    let payload = &frame[hl..];
    let tcp0 = lay.tcp(frame);
    let (seq0, flags0) = (tcp0.seq_number(), tcp0.flags());
    let id0 = if lay.v6 { 0 } else { lay.ipv4(frame).ident() };
    // The addresses are the same in every segment; only the length changes.
    let pseudo0 = pseudo_header_sum(frame, &lay, 0);
    let n = payload.len().div_ceil(mss).max(1);
    let mut hdr = [0u8; MAX_HEADERS];
    for i in 0..n {
        let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        let h = &mut hdr[..hl];
        h.copy_from_slice(&frame[..hl]);
        let tcp_len = hl - l4 + chunk.len();
        let (ip, mut tcp) = lay.split_mut(h);
        match ip {
            IpMut::V6(mut ip) => ip.set_payload_len(tcp_len as u16),
            IpMut::V4(mut ip) => {
                ip.set_total_len((hl - lay.l3 + chunk.len()) as u16);
                ip.set_ident(id0.wrapping_add(i as u16));
                ip.fill_checksum();
            }
        }
        tcp.set_seq_number(seq0.wrapping_add((i * mss) as u32));
        let mut flags = flags0;
        if i + 1 < n {
            flags &= !(FIN | PSH);
        }
        if i > 0 {
            flags &= !CWR;
        }
        tcp.set_flags(flags);
        tcp.set_checksum(0);
        let sum = accumulate(pseudo0 + tcp_len as u64, tcp.header());
        tcp.set_checksum(finish(accumulate(sum, chunk)));
        out(h, chunk);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::super::testframes::{checksums_ok, tcp4, tcp6};
    use super::*;
    use crate::wire::tcp::flags::{FIN as TCP_FIN, PSH as TCP_PSH};

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    fn gso(kind: u8, mss: u16) -> VnetHdr {
        VnetHdr {
            flags: vnet::F_NEEDS_CSUM,
            gso_type: kind,
            gso_size: mss,
            ..VnetHdr::default()
        }
    }

    fn check_split(super_frame: &[u8], h: &VnetHdr, mss: usize) {
        let lay = tcp_layout(super_frame).unwrap();
        let data = &super_frame[lay.payload..];
        let mut segs: Vec<Vec<u8>> = Vec::new();
        let n = segment(super_frame, h, |hd, pl| {
            let mut f = hd.to_vec();
            f.extend_from_slice(pl);
            segs.push(f);
        })
        .unwrap();
        assert_eq!(n, data.len().div_ceil(mss));
        let wire: usize = segs.iter().map(Vec::len).sum();
        assert_eq!(wire_size(super_frame, h), Some((n as u64, wire)));
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            assert!(checksums_ok(s), "segment {i} checksums");
            let l = tcp_layout(s).unwrap();
            let seq = u32::from_be_bytes(s[l.l4 + 4..l.l4 + 8].try_into().unwrap());
            assert_eq!(seq, 1000 + (i * mss) as u32);
            let flags = s[l.l4 + 13];
            if i + 1 < n {
                assert_eq!(flags & (TCP_PSH | TCP_FIN), 0);
                assert_eq!(s.len() - l.payload, mss);
            } else {
                assert_eq!(flags & TCP_PSH, TCP_PSH, "PSH stays on the last segment");
            }
            if !l.v6 {
                let id = u16::from_be_bytes([s[l.l3 + 4], s[l.l3 + 5]]);
                assert_eq!(id, 0x1234 + i as u16);
                let tot = u16::from_be_bytes([s[l.l3 + 2], s[l.l3 + 3]]) as usize;
                assert_eq!(tot, s.len() - l.l3);
            } else {
                let plen = u16::from_be_bytes([s[l.l3 + 4], s[l.l3 + 5]]) as usize;
                assert_eq!(plen, s.len() - l.l4);
            }
            joined.extend_from_slice(&s[l.payload..]);
        }
        assert_eq!(joined, data, "payload survives byte for byte");
    }

    #[test]
    fn splits_ipv4_super_frame() {
        let f = tcp4(1000, 0x18, &payload(10_000));
        check_split(&f, &gso(vnet::gso::TCPV4, 1410), 1410);
        // Odd sizes: MSS not a multiple of 2 or 4, payload not a multiple of the MSS.
        let f = tcp4(1000, 0x18, &payload(4_567));
        check_split(&f, &gso(vnet::gso::TCPV4 | vnet::gso::ECN, 999), 999);
    }

    #[test]
    fn splits_ipv6_super_frame() {
        let f = tcp6(1000, 0x18, &payload(7_001));
        check_split(&f, &gso(vnet::gso::TCPV6, 1440), 1440);
    }

    #[test]
    fn refusals() {
        let f = tcp4(1000, 0x18, &payload(3000));
        assert_eq!(
            segment(&f, &gso(vnet::gso::TCPV6, 1400), |_, _| {}),
            Err(GsoError::Malformed)
        );
        assert_eq!(
            segment(&f, &gso(vnet::gso::TCPV4, 0), |_, _| {}),
            Err(GsoError::Malformed)
        );
        assert_eq!(
            segment(&f, &gso(vnet::gso::UDP, 1400), |_, _| {}),
            Err(GsoError::Unsupported)
        );
        assert_eq!(
            segment(&f[..30], &gso(vnet::gso::TCPV4, 1400), |_, _| {}),
            Err(GsoError::Unsupported)
        );
    }

    #[test]
    fn completes_partial_checksum() {
        let good = tcp4(5, 0x18, &payload(333));
        let lay = tcp_layout(&good).unwrap();
        // What the kernel hands over: the TCP checksum field holds the pseudo-header sum.
        let mut partial = good.clone();
        let seed = finish(pseudo_header_sum(&partial, &lay, partial.len() - lay.l4));
        partial[lay.l4 + 16..lay.l4 + 18].copy_from_slice(&(!seed).to_be_bytes());
        let h = VnetHdr {
            flags: vnet::F_NEEDS_CSUM,
            csum_start: lay.l4 as u16,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        complete_checksum(&mut partial, &h).unwrap();
        assert_eq!(partial, good);
        let bad = VnetHdr {
            csum_start: 5000,
            ..h
        };
        assert_eq!(
            complete_checksum(&mut partial, &bad),
            Err(GsoError::Malformed)
        );
    }
}
