//! TCP super-frames that the underlay's GRO made out of plain GRE packets.
//!
//! A NIC's receive path (NAPI) runs the kernel's generic receive offload before any socket
//! sees a packet, and the kernel's GRE offload (`gre_gro_receive`, built in, no tunnel device
//! needed) merges consecutive GRE packets of one inner TCP flow into one IPv4 packet of up to
//! 64 KiB. dnet's raw GRE socket then receives an inner frame far larger than the TAP's MTU.
//! The kernel verified every segment's TCP checksum before merging and left the merged
//! segment's checksum field holding the pseudo-header sum (`CHECKSUM_PARTIAL`), as a TAP
//! super-frame does. Such a frame goes on as a TCP super-frame: to the TAP with a virtio-net
//! header asking for segmentation, to other tunnels cut into segments.
//!
//! Only that exact shape is taken: an inner IPv4 or IPv6 TCP segment whose IP lengths match
//! the frame, whose IPv4 header checksum verifies, and whose TCP checksum field is the folded
//! pseudo-header sum. Anything else larger than the MTU stays a `giant` drop.

use super::{pseudo_header_sum, tcp_layout};
use crate::wire::checksum::finish;
use crate::wire::tcp;
use crate::wire::vnet::{self, VnetHdr};

/// The virtio-net header that describes `frame` as a TCP super-frame of segments whose IP
/// packets fit in `mtu` bytes, if `frame` is one the underlay's GRO coalesced (see the module
/// docs): its IP packet larger than `mtu`, lengths consistent, checksum field in the partial
/// form.
pub fn coalesced(frame: &[u8], mtu: usize) -> Option<VnetHdr> {
    let lay = tcp_layout(frame)?;
    if frame.len() - lay.l3 <= mtu {
        return None;
    }
    let tcp_len = frame.len() - lay.l4;
    let lengths_ok = if lay.v6 {
        lay.ipv6(frame).payload_len() == tcp_len
    } else {
        let ip = lay.ipv4(frame);
        ip.total_len() == frame.len() - lay.l3 && ip.verify_checksum()
    };
    if !lengths_ok {
        return None;
    }
    // The partial form: the folded pseudo-header sum, uncomplemented (`!finish` undoes the
    // complement `finish` applies).
    let partial = !finish(pseudo_header_sum(frame, &lay, tcp_len));
    if lay.tcp(frame).checksum() != partial {
        return None;
    }
    let payload = frame.len() - lay.payload;
    let mss = mtu.checked_sub(lay.payload - lay.l3).filter(|&m| m > 0)?;
    if payload <= mss || mss > usize::from(u16::MAX) {
        return None;
    }
    Some(VnetHdr {
        flags: vnet::F_NEEDS_CSUM,
        gso_type: if lay.v6 {
            vnet::gso::TCPV6
        } else {
            vnet::gso::TCPV4
        },
        hdr_len: lay.payload as u16,
        gso_size: mss as u16,
        csum_start: lay.l4 as u16,
        csum_offset: tcp::CHECKSUM_OFFSET as u16,
    })
}

#[cfg(test)]
mod tests {
    use super::super::gso::segment;
    use super::super::testframes::{checksums_ok, tcp4, tcp6};
    use super::super::IpMut;
    use super::*;
    use crate::wire::tcp::flags::{ACK, PSH};

    /// IP packets of up to 1500 bytes: 1514-byte frames.
    const MTU: usize = 1500;
    const MAX: usize = MTU + 14;

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    /// What the kernel's GRO hands over: one segment carrying all the payload, lengths
    /// updated, the TCP checksum field set to the pseudo-header sum.
    fn gro_form(mut f: Vec<u8>) -> Vec<u8> {
        let lay = tcp_layout(&f).unwrap();
        let tcp_len = f.len() - lay.l4;
        let (ip, mut tcp) = lay.split_mut(&mut f);
        let sum = ip.pseudo_header_sum(tcp_len);
        if let IpMut::V4(mut p) = ip {
            p.fill_checksum();
        }
        tcp.set_checksum(!finish(sum));
        f
    }

    #[test]
    fn a_coalesced_ipv4_segment_becomes_a_tcp_super_frame() {
        let body = payload(40_000);
        let f = gro_form(tcp4(1000, ACK | PSH, &body));
        let h = coalesced(&f, MTU).expect("a GRO super-frame");
        // Ethernet 14 + IPv4 20 + TCP 32 (timestamps) = 66 bytes of headers.
        assert_eq!(
            (h.gso_kind(), h.hdr_len, h.csum_start),
            (vnet::gso::TCPV4, 66, 34)
        );
        assert_eq!(usize::from(h.gso_size), MTU - 52);
        assert_eq!(h.flags, vnet::F_NEEDS_CSUM);
        // Cut up again, every segment fits and verifies, and the payload comes back whole.
        let mut got = Vec::new();
        let n = segment(&f, &h, |hd, pl| {
            let mut s = hd.to_vec();
            s.extend_from_slice(pl);
            assert!(s.len() <= MAX, "segment of {} bytes", s.len());
            assert!(checksums_ok(&s), "segment checksums");
            got.extend_from_slice(pl);
        })
        .expect("segments");
        assert_eq!(n, body.len().div_ceil(MTU - 52));
        assert_eq!(got, body);
    }

    #[test]
    fn a_coalesced_ipv6_segment_becomes_a_tcp_super_frame() {
        let f = gro_form(tcp6(7, ACK, &payload(9_000)));
        let h = coalesced(&f, MTU).expect("a GRO super-frame");
        assert_eq!(
            (h.gso_kind(), h.hdr_len, h.csum_start),
            (vnet::gso::TCPV6, 74, 54)
        );
        assert_eq!(usize::from(h.gso_size), MTU - 60);
    }

    #[test]
    fn anything_else_is_not_taken() {
        // Fits the MTU: nothing to do.
        assert!(coalesced(&gro_form(tcp4(1, ACK, &payload(1000))), MTU).is_none());
        // A complete (verified or not) checksum is not the partial form: an IP reassembly of
        // a peer's oversized frame, never checked by anyone.
        assert!(coalesced(&tcp4(1, ACK, &payload(4000)), MTU).is_none());
        // IPv4 total length disagrees with the frame.
        let mut f = gro_form(tcp4(1, ACK, &payload(4000)));
        f.truncate(f.len() - 1);
        assert!(coalesced(&f, MTU).is_none());
        // Bad IPv4 header checksum.
        let mut f = gro_form(tcp4(1, ACK, &payload(4000)));
        f[14 + 10] ^= 0xff;
        assert!(coalesced(&f, MTU).is_none());
        // IPv6 payload length disagrees.
        let mut f = gro_form(tcp6(1, ACK, &payload(4000)));
        f.push(0);
        assert!(coalesced(&f, MTU).is_none());
        // Not TCP: a UDP protocol number.
        let mut f = gro_form(tcp4(1, ACK, &payload(4000)));
        f[14 + 9] = 17;
        let lay_ip = 14;
        f[lay_ip + 10] = 0;
        f[lay_ip + 11] = 0;
        let c = crate::wire::checksum::checksum(&[&f[lay_ip..lay_ip + 20]]);
        f[lay_ip + 10..lay_ip + 12].copy_from_slice(&c.to_be_bytes());
        assert!(coalesced(&f, MTU).is_none());
        // No room for any payload in a segment.
        assert!(coalesced(&gro_form(tcp4(1, ACK, &payload(4000))), 52).is_none());
        // Not an IP frame at all.
        assert!(coalesced(&[0u8; 2000], MTU).is_none());
    }
}
