//! Coalescing of received UDP datagrams of one flow into one UDP GSO super-frame for the TAP
//! (what the kernel's UDP GRO does for forwarded traffic): the bridge, veth and the container's
//! IP input then run once per run instead of once per datagram, and the container's UDP
//! socket splits it back into the original datagrams.
//!
//! A run holds only datagrams that verify (IPv4 header and UDP checksums), are IPv4 without
//! options, not fragments, with DF set (atomic datagrams, whose IPv4 id carries no meaning —
//! RFC 6864 — so the kernel renumbering them is harmless), that share every header byte
//! except lengths, IPv4 id and checksums, and whose payloads are all as long as the first
//! but the last, which may be shorter. Anything else ends the run; the caller writes it on its
//! own, after the run. Payloads are not copied.

use super::MAX_HEADERS;
use crate::wire::checksum::finish;
use crate::wire::ethernet::{ethertype, Frame};
use crate::wire::ipv4::{self, PROTO_UDP};
use crate::wire::udp;
use crate::wire::vnet::{self, VnetHdr};

pub use super::gro::Add;

/// Most datagrams in one super-frame (the kernel's `UDP_MAX_SEGMENTS` is 64 on older kernels).
pub const MAX_SEGS: usize = 64;
/// Largest IPv4 datagram a super-frame may become.
const MAX_IP_LEN: usize = 65_535;

/// A run of datagrams being coalesced; lives for one receive burst.
pub struct UdpGro<'a> {
    head: [u8; MAX_HEADERS],
    /// Offsets of the IPv4 and UDP headers; the payload starts 8 bytes after `l4`.
    l3: usize,
    l4: usize,
    segs: [&'a [u8]; MAX_SEGS],
    n: usize,
    total: usize,
    seg: usize,
    /// A short datagram closed the run.
    closed: bool,
}

impl Default for UdpGro<'_> {
    fn default() -> Self {
        Self::new()
    }
}

/// The IPv4 and UDP offsets of `f` and its UDP payload length, if it is a datagram a run may
/// hold (see the module docs), checksums included. The payload ends at `l4 + 8 + length`.
#[inline]
fn layout(f: &[u8]) -> Option<(usize, usize, usize)> {
    let eth = Frame::new_checked(f).ok()?;
    if eth.ethertype() != ethertype::IPV4 {
        return None;
    }
    let l3 = eth.header_len();
    // The strict check: the total length must fit. Bytes after the datagram (Ethernet
    // padding of short frames) are left out, as the receiving IP layer would trim them.
    let ip = ipv4::Packet::new_checked(f.get(l3..)?).ok()?;
    // No options, UDP, DF set and no other flag or fragment bits.
    if ip.header_len() != ipv4::MIN_HEADER_LEN
        || ip.protocol() != PROTO_UDP
        || !ip.dont_frag()
        || ip.more_frags()
        || ip.reserved_flag()
        || ip.frag_offset() != 0
    {
        return None;
    }
    // The UDP length must say what the IPv4 total length says.
    let dgram = udp::Packet::new_checked(ip.rest()).ok()?;
    let ulen = usize::from(dgram.length());
    if ulen != ip.total_len() - ipv4::MIN_HEADER_LEN
        || ulen <= udp::HEADER_LEN
        || !ip.verify_checksum()
    {
        return None;
    }
    // A zero UDP checksum means "none"; the kernel will add one, which is harmless.
    if !dgram.verify_checksum(ip.pseudo_header_sum(PROTO_UDP, ulen)) {
        return None;
    }
    Some((l3, l3 + ipv4::MIN_HEADER_LEN, ulen - udp::HEADER_LEN))
}

/// The IPv4 pseudo-header sum for a UDP datagram of `udp_len` bytes.
#[cfg(test)]
fn pseudo_sum(f: &[u8], l3: usize, udp_len: usize) -> u64 {
    ipv4::Packet::new_unchecked(&f[l3..]).pseudo_header_sum(PROTO_UDP, udp_len)
}

impl<'a> UdpGro<'a> {
    /// An empty run.
    pub fn new() -> Self {
        UdpGro {
            head: [0; MAX_HEADERS],
            l3: 0,
            l4: 0,
            segs: [&[]; MAX_SEGS],
            n: 0,
            total: 0,
            seg: 0,
            closed: false,
        }
    }

    /// True when no run is open.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Offers `frame` to the run.
    pub fn add(&mut self, frame: &'a [u8]) -> Add {
        let Some((l3, l4, p)) = layout(frame) else {
            return Add::Alone;
        };
        let hl = l4 + udp::HEADER_LEN;
        if self.n == 0 {
            self.head[..hl].copy_from_slice(&frame[..hl]);
            (self.l3, self.l4, self.seg) = (l3, l4, p);
        } else if self.closed
            || l4 != self.l4
            || p > self.seg
            || self.n == MAX_SEGS
            || hl - l3 + self.total + p > MAX_IP_LEN
            || !same_flow(&self.head[..hl], &frame[..hl], l3, l4)
        {
            return Add::Mismatch;
        }
        self.segs[self.n] = &frame[hl..hl + p];
        self.n += 1;
        self.total += p;
        self.closed = p < self.seg;
        Add::Added
    }

    /// Closes the run: writes the virtio-net header and the fixed-up headers into `head`
    /// (returns their length) and hands back the payload slices, to be written after it in
    /// one `writev`. A one-datagram run is passed through unchanged with an empty GSO header.
    pub fn finish(&mut self, head: &mut [u8; vnet::LEN + MAX_HEADERS]) -> (usize, &[&'a [u8]]) {
        let n = std::mem::take(&mut self.n);
        let (l3, l4) = (self.l3, self.l4);
        let hl = l4 + udp::HEADER_LEN;
        let h = &mut head[vnet::LEN..vnet::LEN + hl];
        h.copy_from_slice(&self.head[..hl]);
        let total = std::mem::take(&mut self.total);
        self.closed = false;
        if n == 1 {
            VnetHdr::default().emit(&mut head[..vnet::LEN]);
            return (vnet::LEN + hl, &self.segs[..1]);
        }
        let udp_len = udp::HEADER_LEN + total;
        // The headers of a datagram `layout` accepted: IPv4 without options, then UDP.
        let (ip, dgram) = h.split_at_mut(l4);
        let mut ip = ipv4::Packet::new_unchecked(&mut ip[l3..]);
        ip.set_total_len((ipv4::MIN_HEADER_LEN + udp_len) as u16);
        ip.fill_checksum();
        let mut dgram = udp::Packet::new_unchecked(dgram);
        dgram.set_length(udp_len as u16);
        // CHECKSUM_PARTIAL convention: the field holds the folded pseudo-header sum; the
        // kernel completes it per datagram when it splits the frame.
        dgram.set_checksum(!finish(ip.pseudo_header_sum(PROTO_UDP, udp_len)));
        VnetHdr {
            flags: vnet::F_NEEDS_CSUM,
            gso_type: vnet::gso::UDP_L4,
            hdr_len: hl as u16,
            gso_size: self.seg as u16,
            csum_start: l4 as u16,
            csum_offset: udp::CHECKSUM_OFFSET as u16,
        }
        .emit(&mut head[..vnet::LEN]);
        (vnet::LEN + hl, &self.segs[..n])
    }
}

/// Do two datagrams' headers agree on everything but lengths, IPv4 id and the checksums?
/// Both passed `layout` with the same offsets, so version, header length, flags and
/// protocol are already equal.
fn same_flow(a: &[u8], b: &[u8], l3: usize, l4: usize) -> bool {
    // Views over slices of constant length (IPv4 without options, UDP): the accessors'
    // bounds checks fold away. Field by field: this runs once per datagram.
    let (ip, dgram) = (l3..l3 + ipv4::MIN_HEADER_LEN, l4..l4 + udp::HEADER_LEN);
    let (x, y) = (
        ipv4::Packet::new_unchecked(&a[ip.clone()]),
        ipv4::Packet::new_unchecked(&b[ip]),
    );
    let (u, v) = (
        udp::Packet::new_unchecked(&a[dgram.clone()]),
        udp::Packet::new_unchecked(&b[dgram]),
    );
    // The Ethernet headers are equal byte for byte: nothing in them varies along a flow.
    a[..l3] == b[..l3]
        && x.dscp() == y.dscp()
        && x.ecn() == y.ecn()
        && x.ttl() == y.ttl()
        && x.src() == y.src()
        && x.dst() == y.dst()
        && u.src_port() == v.src_port()
        && u.dst_port() == v.dst_port()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::{accumulate, checksum};

    /// An Ethernet/IPv4/UDP datagram with valid checksums, DF set, padded to 60 bytes.
    fn udp4(id: u16, sport: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let ulen = 8 + payload.len();
        let tot = 20 + ulen;
        f.extend_from_slice(&[0x45, 0, (tot >> 8) as u8, tot as u8]);
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&[0x40, 0, 64, 17, 0, 0, 10, 77, 0, 1, 10, 77, 0, 2]);
        let c = checksum(&[&f[14..34]]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&[0x1e, 0x61, (ulen >> 8) as u8, ulen as u8, 0, 0]);
        f.extend_from_slice(payload);
        let s = pseudo_sum(&f, 14, ulen);
        let c = finish(accumulate(s, &f[34..]));
        f[40..42].copy_from_slice(&c.to_be_bytes());
        // Ethernet pads short frames to 60 bytes; the padding is not part of the datagram.
        if f.len() < 60 {
            f.resize(60, 0);
        }
        f
    }

    fn trimmed(f: &[u8]) -> &[u8] {
        &f[..14 + usize::from(u16::from_be_bytes([f[16], f[17]]))]
    }

    /// Splits a super-frame back into datagrams as the kernel would (id + i, lengths and
    /// checksums recomputed) for comparison with the originals.
    fn split(head: &[u8], parts: &[&[u8]]) -> Vec<Vec<u8>> {
        let h = VnetHdr::parse(head).unwrap();
        assert_eq!(h.gso_type, vnet::gso::UDP_L4);
        assert_eq!((h.csum_start, h.csum_offset), (34, 6));
        let hdr = &head[vnet::LEN..];
        // The partial checksum seed covers the pseudo-header of the whole frame.
        let ulen_all = 8 + parts.iter().map(|p| p.len()).sum::<usize>();
        assert_eq!(
            !u16::from_be_bytes([hdr[40], hdr[41]]),
            finish(pseudo_sum(hdr, 14, ulen_all))
        );
        let id0 = u16::from_be_bytes([hdr[18], hdr[19]]);
        let data: Vec<u8> = parts.concat();
        data.chunks(usize::from(h.gso_size))
            .enumerate()
            .map(|(i, p)| {
                let mut f = hdr.to_vec();
                let ulen = 8 + p.len();
                f[16..18].copy_from_slice(&((20 + ulen) as u16).to_be_bytes());
                f[18..20].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
                f[24..26].fill(0);
                let c = checksum(&[&f[14..34]]);
                f[24..26].copy_from_slice(&c.to_be_bytes());
                f[38..40].copy_from_slice(&(ulen as u16).to_be_bytes());
                f[40..42].fill(0);
                f.extend_from_slice(p);
                let c = finish(accumulate(pseudo_sum(&f, 14, ulen), &f[34..]));
                f[40..42].copy_from_slice(&c.to_be_bytes());
                f
            })
            .collect()
    }

    #[test]
    fn a_run_of_one_flow_becomes_one_super_frame_that_splits_back() {
        let d: Vec<Vec<u8>> = (0..5)
            .map(|i| udp4(100 + i, 5000, &[i as u8; 18][..if i == 4 { 7 } else { 18 }]))
            .collect();
        let mut g = UdpGro::new();
        for f in &d {
            assert_eq!(g.add(f), Add::Added);
        }
        // After the short one the run is closed.
        let more = udp4(105, 5000, &[9; 18]);
        assert_eq!(g.add(&more), Add::Mismatch);
        let mut head = [0u8; vnet::LEN + MAX_HEADERS];
        let (hl, parts) = g.finish(&mut head);
        assert_eq!(hl, vnet::LEN + 42);
        assert_eq!(parts.len(), 5);
        let back = split(&head[..hl], parts);
        for (orig, b) in d.iter().zip(&back) {
            assert_eq!(trimmed(orig), &b[..]);
        }
        assert!(g.is_empty());
    }

    #[test]
    fn one_datagram_passes_through_without_padding_or_gso() {
        let f = udp4(1, 5000, &[1, 2, 3]);
        let mut g = UdpGro::new();
        assert_eq!(g.add(&f), Add::Added);
        let mut head = [0u8; vnet::LEN + MAX_HEADERS];
        let (hl, parts) = g.finish(&mut head);
        assert_eq!(head[..vnet::LEN], [0; vnet::LEN]);
        let mut out = head[vnet::LEN..hl].to_vec();
        out.extend_from_slice(parts[0]);
        assert_eq!(&out[..], trimmed(&f));
    }

    #[test]
    fn other_flows_bad_checksums_and_non_atomic_datagrams_are_not_merged() {
        let first = udp4(1, 5000, &[1; 18]);
        let mut g = UdpGro::new();
        assert_eq!(g.add(&first), Add::Added);
        let (port, longer) = (udp4(2, 5001, &[1; 18]), udp4(2, 5000, &[1; 19]));
        assert_eq!(g.add(&port), Add::Mismatch, "other port");
        assert_eq!(g.add(&longer), Add::Mismatch, "longer");
        let mut bad = udp4(2, 5000, &[1; 18]);
        bad[45] ^= 1;
        assert_eq!(g.add(&bad), Add::Alone, "bad UDP checksum");
        let mut nodf = udp4(2, 5000, &[1; 18]);
        nodf[20] = 0;
        assert_eq!(g.add(&nodf), Add::Alone, "DF off");
        let mut ttl = udp4(2, 5000, &[1; 18]);
        ttl[22] = 63;
        ttl[24..26].fill(0);
        let c = checksum(&[&ttl[14..34]]);
        ttl[24..26].copy_from_slice(&c.to_be_bytes());
        assert_eq!(g.add(&ttl), Add::Mismatch, "other TTL");
        let mut tcp = udp4(2, 5000, &[1; 18]);
        tcp[23] = 6;
        assert_eq!(g.add(&tcp), Add::Alone, "not UDP");
        let next = udp4(3, 5000, &[2; 18]);
        assert_eq!(g.add(&next), Add::Added);
        for n in 0..first.len() {
            let _ = UdpGro::new().add(&first[..n]);
        }
        // An IPv4 total length shorter than its own header (found by fuzzing).
        let mut short = udp4(4, 5000, &[1; 18]);
        short[16..18].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(UdpGro::new().add(&short), Add::Alone);
    }

    #[test]
    fn runs_stop_at_the_segment_bound() {
        let d: Vec<Vec<u8>> = (0..MAX_SEGS as u16 + 1)
            .map(|i| udp4(i, 5000, &[3; 18]))
            .collect();
        let mut g = UdpGro::new();
        for f in &d[..MAX_SEGS] {
            assert_eq!(g.add(f), Add::Added);
        }
        assert_eq!(g.add(&d[MAX_SEGS]), Add::Mismatch);
    }
}
