//! Coalescing of received TCP segments (what a NIC's GRO does): consecutive, in-order segments
//! of one flow become one super-frame written to the TAP with a virtio-net header asking the
//! kernel to treat it as a GSO packet. The kernel's bridge and TCP stack then handle one packet
//! where they would have handled dozens.
//!
//! A run holds only segments that verify (IPv4 header and TCP checksums), carry only ACK (and
//! PSH on the last), follow each other in sequence, share every header byte except lengths,
//! IPv4 id, checksums, sequence number and window, and all but the last carry a full MSS.
//! Anything else ends the run; the caller writes it on its own, after the run, so order is
//! kept. Payloads are not copied: the run is a list of slices of the receive buffers.

use super::{pseudo_header_sum, tcp_layout, IpMut, TcpLayout, MAX_HEADERS};
use crate::wire::checksum::finish;
use crate::wire::tcp::{
    self,
    flags::{ACK, PSH},
};
use crate::wire::vnet::{self, VnetHdr};

/// Most segments in one super-frame (a 64 KiB frame of 1400-byte segments is 47).
pub const MAX_SEGS: usize = 64;
/// Largest IP datagram a super-frame may become.
const MAX_IP_LEN: usize = 65_535;

/// What [`Gro::add`] did with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Add {
    /// Joined (or started) the current run.
    Added,
    /// Mergeable TCP, but not with the current run: flush the run, then add it again.
    Mismatch,
    /// Not a candidate (not TCP data, bad checksum, flags): flush the run, write it alone.
    Alone,
}

/// A run of segments being coalesced; lives for one receive burst.
pub struct Gro<'a> {
    head: [u8; MAX_HEADERS],
    hl: usize,
    lay: TcpLayout,
    segs: [&'a [u8]; MAX_SEGS],
    n: usize,
    total: usize,
    mss: usize,
    next_seq: u32,
    window: u16,
    psh: bool,
}

impl Default for Gro<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> Gro<'a> {
    /// An empty run.
    pub fn new() -> Self {
        Gro {
            head: [0; MAX_HEADERS],
            hl: 0,
            lay: TcpLayout {
                l3: 0,
                l4: 0,
                payload: 0,
                v6: false,
            },
            segs: [&[]; MAX_SEGS],
            n: 0,
            total: 0,
            mss: 0,
            next_seq: 0,
            window: 0,
            psh: false,
        }
    }

    /// Number of segments in the run.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when no run is open.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Offers `frame` to the run.
    pub fn add(&mut self, frame: &'a [u8]) -> Add {
        let Some(lay) = tcp_layout(frame) else {
            return Add::Alone;
        };
        let hl = lay.payload;
        let p = frame.len() - hl;
        let tcp = lay.tcp(frame);
        let flags = tcp.flags();
        if p == 0 || hl > MAX_HEADERS || (flags != ACK && flags != ACK | PSH) {
            return Add::Alone;
        }
        let len_ok = if lay.v6 {
            frame.len() - lay.l4 <= MAX_IP_LEN
        } else {
            lay.ipv4(frame).total_len() == frame.len() - lay.l3
        };
        if !len_ok || !checksums_verify(frame, &lay) {
            return Add::Alone;
        }
        let seq = tcp.seq_number();
        if self.n == 0 {
            self.head[..hl].copy_from_slice(&frame[..hl]);
            self.hl = hl;
            self.lay = lay;
            self.mss = p;
        } else {
            let fits = if lay.v6 {
                hl - lay.l4 + self.total + p <= MAX_IP_LEN
            } else {
                hl - lay.l3 + self.total + p <= MAX_IP_LEN
            };
            if self.psh
                || lay != self.lay
                || seq != self.next_seq
                || p > self.mss
                || self.n == MAX_SEGS
                || !fits
                || !same_flow(&self.head[..hl], &frame[..hl], &lay)
            {
                return Add::Mismatch;
            }
        }
        self.segs[self.n] = &frame[hl..];
        self.n += 1;
        self.total += p;
        self.next_seq = seq.wrapping_add(p as u32);
        self.window = tcp.window_len();
        // A short segment or PSH ends the run: nothing may follow it in one super-frame.
        self.psh = flags & PSH != 0 || p < self.mss;
        Add::Added
    }

    /// Closes the run: writes the virtio-net header and the fixed-up headers into `head`
    /// (returns their length) and hands back the payload slices, to be written after it in
    /// one `writev`. A one-segment run is passed through unchanged with an empty GSO header.
    pub fn finish(&mut self, head: &mut [u8; vnet::LEN + MAX_HEADERS]) -> (usize, &[&'a [u8]]) {
        let n = std::mem::take(&mut self.n);
        let (hl, lay) = (self.hl, self.lay);
        let h = &mut head[vnet::LEN..vnet::LEN + hl];
        h.copy_from_slice(&self.head[..hl]);
        if n == 1 {
            VnetHdr::default().emit(&mut head[..vnet::LEN]);
            self.total = 0;
            self.psh = false;
            return (vnet::LEN + hl, &self.segs[..1]);
        }
        let tcp_len = hl - lay.l4 + self.total;
        let (mut ip, mut tcp) = lay.split_mut(h);
        match &mut ip {
            IpMut::V6(ip) => ip.set_payload_len(tcp_len as u16),
            IpMut::V4(ip) => {
                ip.set_total_len((hl - lay.l3 + self.total) as u16);
                ip.fill_checksum();
            }
        }
        if self.psh {
            tcp.set_flags(tcp.flags() | PSH);
        }
        tcp.set_window_len(self.window);
        // CHECKSUM_PARTIAL convention: the field holds the folded pseudo-header sum; the
        // kernel (or whoever segments the frame again) completes it.
        tcp.set_checksum(!finish(ip.pseudo_header_sum(tcp_len)));
        VnetHdr {
            flags: vnet::F_NEEDS_CSUM,
            gso_type: if lay.v6 {
                vnet::gso::TCPV6
            } else {
                vnet::gso::TCPV4
            },
            hdr_len: hl as u16,
            gso_size: self.mss as u16,
            csum_start: lay.l4 as u16,
            csum_offset: tcp::CHECKSUM_OFFSET as u16,
        }
        .emit(&mut head[..vnet::LEN]);
        self.total = 0;
        self.psh = false;
        (vnet::LEN + hl, &self.segs[..n])
    }
}

fn checksums_verify(f: &[u8], lay: &TcpLayout) -> bool {
    let ip_ok = lay.v6 || lay.ipv4(f).verify_checksum();
    ip_ok
        && lay
            .tcp(f)
            .verify_checksum(pseudo_header_sum(f, lay, f.len() - lay.l4))
}

/// Do two segments' headers agree on everything but lengths, IPv4 id and checksum, sequence
/// number, window and TCP checksum (and PSH, checked by the caller)? Both have layout `lay`.
fn same_flow(a: &[u8], b: &[u8], lay: &TcpLayout) -> bool {
    let ip = if lay.v6 {
        lay.ipv6(a).same_flow_fields(&lay.ipv6(b))
    } else {
        lay.ipv4(a).same_flow_fields(&lay.ipv4(b))
    };
    // The Ethernet headers are equal byte for byte: nothing in them varies along a flow.
    a[..lay.l3] == b[..lay.l3] && ip && lay.tcp(a).same_flow_fields(&lay.tcp(b))
}

#[cfg(test)]
mod tests {
    use super::super::gso::segment;
    use super::super::testframes::{checksums_ok, fix_checksums, tcp4, tcp6};
    use super::*;

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 13 + 1) as u8).collect()
    }

    /// Segments a super-frame, coalesces the segments again, and checks the result is the
    /// original frame (modulo the partial checksum) with a matching GSO header.
    fn round_trip(orig: &[u8], kind: u8, mss: u16) {
        let h = VnetHdr {
            flags: vnet::F_NEEDS_CSUM,
            gso_type: kind,
            gso_size: mss,
            ..VnetHdr::default()
        };
        let mut segs = Vec::new();
        segment(orig, &h, |hd, pl| {
            let mut f = hd.to_vec();
            f.extend_from_slice(pl);
            segs.push(f);
        })
        .unwrap();
        let mut g = Gro::new();
        for s in &segs {
            assert_eq!(g.add(s), Add::Added);
        }
        let mut head = [0u8; vnet::LEN + MAX_HEADERS];
        let (hl, parts) = g.finish(&mut head);
        let mut merged = head[vnet::LEN..hl].to_vec();
        for p in parts {
            merged.extend_from_slice(p);
        }
        let vh = VnetHdr::parse(&head).unwrap();
        assert_eq!(vh.gso_kind(), kind & !vnet::gso::ECN);
        assert_eq!(vh.gso_size, mss);
        assert_eq!(merged.len(), orig.len());
        // Completing the partial checksum gives back the original frame exactly.
        let mut done = merged.clone();
        super::super::gso::complete_checksum(&mut done, &vh).unwrap();
        assert_eq!(done, orig);
        assert!(checksums_ok(&done));
    }

    #[test]
    fn segments_coalesce_back_to_the_super_frame() {
        round_trip(&tcp4(1000, 0x18, &payload(20_000)), vnet::gso::TCPV4, 1410);
        round_trip(&tcp4(1000, 0x18, &payload(1411)), vnet::gso::TCPV4, 1410);
        round_trip(&tcp6(7, 0x18, &payload(9_999)), vnet::gso::TCPV6, 1220);
    }

    #[test]
    fn single_segment_passes_through() {
        let f = tcp4(1, 0x18, &payload(100));
        let mut g = Gro::new();
        assert_eq!(g.add(&f), Add::Added);
        let mut head = [0u8; vnet::LEN + MAX_HEADERS];
        let (hl, parts) = g.finish(&mut head);
        assert_eq!(VnetHdr::parse(&head).unwrap(), VnetHdr::default());
        let mut out = head[vnet::LEN..hl].to_vec();
        out.extend_from_slice(parts[0]);
        assert_eq!(out, f);
        assert!(g.is_empty());
    }

    #[test]
    fn run_boundaries() {
        let a = tcp4(0, 0x10, &payload(1000));
        let b = tcp4(1000, 0x10, &payload(1000));
        let gap = tcp4(3000, 0x10, &payload(1000));
        let syn = tcp4(2000, 0x02, &[]);
        let pure_ack = tcp4(2000, 0x10, &[]);
        let mut bad = tcp4(2000, 0x10, &payload(1000));
        let last = bad.len() - 1;
        bad[last] ^= 0xff; // payload corrupted: checksum no longer verifies
        let mut g = Gro::new();
        assert_eq!(g.add(&a), Add::Added);
        assert_eq!(g.add(&b), Add::Added);
        assert_eq!(g.add(&gap), Add::Mismatch, "out of sequence");
        assert_eq!(g.add(&syn), Add::Alone);
        assert_eq!(g.add(&pure_ack), Add::Alone);
        assert_eq!(g.add(&bad), Add::Alone);
        // A different flow (other port) does not join.
        let mut other = tcp4(2000, 0x10, &payload(1000));
        other[34] ^= 1;
        fix_checksums(&mut other);
        assert_eq!(g.add(&other), Add::Mismatch);
        // A longer segment than the run's MSS does not join; a shorter one joins and closes.
        let long = tcp4(2000, 0x10, &payload(1001));
        assert_eq!(g.add(&long), Add::Mismatch);
        let short = tcp4(2000, 0x10, &payload(10));
        assert_eq!(g.add(&short), Add::Added);
        let after_short = tcp4(2010, 0x10, &payload(10));
        assert_eq!(g.add(&after_short), Add::Mismatch);
        assert_eq!(g.len(), 3);
    }

    #[test]
    fn never_exceeds_an_ip_datagram() {
        let segs: Vec<Vec<u8>> = (0..60u32)
            .map(|i| tcp4(i * 1400, 0x10, &payload(1400)))
            .collect();
        let mut g = Gro::new();
        let mut added = 0;
        for s in &segs {
            if g.add(s) == Add::Added {
                added += 1;
            } else {
                break;
            }
        }
        assert!(added * 1400 + 52 <= MAX_IP_LEN && (added + 1) * 1400 + 52 > MAX_IP_LEN);
    }
}
