//! IPv4 headers (RFC 791): the outer header of GRE packets, and the inner headers the offloads
//! rewrite and the path-MTU code reads. A raw socket hands us the whole, reassembled packet
//! and builds the outer header we send; a packet ring does neither, so [`Repr`] builds that
//! header and [`Packet::verify_checksum`] checks what the kernel's IP input would have.
//!
//! Two checks, as etherparse has strict and lax slices: [`Packet::check_len`] for a packet
//! whose total length must be right (received outer packets), [`Packet::check_header_len`]
//! for a header whose total length is not checked (TAP super-frames, frames classified
//! before anything trusts their lengths, header copies being rewritten).

use super::{checksum, WireError};
use std::net::Ipv4Addr;

/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IP protocol number of GRE.
pub const PROTO_GRE: u8 = 47;
/// IP protocol number of SCTP.
pub const PROTO_SCTP: u8 = 132;

mod field {
    use std::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const TOTAL_LEN: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
    /// Both addresses, as the transport pseudo-header sums them.
    pub const ADDRS: Range<usize> = 12..20;
}

/// Bits of the flags and fragment offset field.
mod flag {
    pub const RESERVED: u16 = 0x8000;
    pub const DF: u16 = 0x4000;
    pub const MF: u16 = 0x2000;
    pub const OFFSET: u16 = 0x1fff;
}

/// Minimum header length.
pub const MIN_HEADER_LEN: usize = 20;
/// Longest header (IHL 15: 40 bytes of options).
pub const MAX_HEADER_LEN: usize = 60;

/// An IPv4 header without options, to emit in front of a payload: what the kernel builds for
/// a raw socket (the same TTL, TOS and DF, a fresh identification).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol of the payload.
    pub protocol: u8,
    /// Time to live.
    pub ttl: u8,
    /// Type of service byte (DSCP and ECN).
    pub tos: u8,
    /// Set the don't-fragment flag.
    pub df: bool,
    /// Identification.
    pub ident: u16,
    /// Bytes of payload that follow the header.
    pub payload_len: usize,
}

impl Repr {
    /// Bytes [`Repr::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        MIN_HEADER_LEN
    }

    /// Writes the header, checksum included, into the first 20 bytes of `buf`.
    ///
    /// # Panics
    /// If `buf` is shorter than 20 bytes or the packet longer than 65535.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) {
        let total =
            u16::try_from(MIN_HEADER_LEN + self.payload_len).expect("IPv4 packet fits 64 KiB");
        let mut p = Packet::new_unchecked(&mut buf[..MIN_HEADER_LEN]);
        p.set_version_and_header_len(MIN_HEADER_LEN);
        p.set_dscp_ecn(self.tos >> 2, self.tos & 0x03);
        p.set_total_len(total);
        p.set_ident(self.ident);
        p.set_frag(self.df, false, 0);
        p.set_ttl(self.ttl);
        p.set_protocol(self.protocol);
        p.set_src(self.src);
        p.set_dst(self.dst);
        p.fill_checksum();
    }
}

/// A zero-copy view of an IPv4 packet.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps without checking.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps and checks version, header length and total length against the buffer.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Wraps and checks only the header ([`Packet::check_header_len`]).
    #[inline]
    pub fn new_header_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_header_len()?;
        Ok(p)
    }

    /// Ensures the header is well-formed (version 4, IHL at least 5) and wholly in the buffer,
    /// without looking at the total length: then every accessor but [`Packet::payload`] is in
    /// bounds.
    #[inline]
    pub fn check_header_len(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let hl = self.header_len();
        if self.version() != 4 || hl < MIN_HEADER_LEN {
            return Err(WireError::BadIpv4);
        }
        if b.len() < hl {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// Ensures the header is well-formed enough for every accessor, and the total length
    /// covers the header and fits the buffer.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let hl = self.header_len();
        if self.version() != 4 || hl < MIN_HEADER_LEN {
            return Err(WireError::BadIpv4);
        }
        let total = self.total_len();
        if total < hl {
            return Err(WireError::BadIpv4);
        }
        if b.len() < total {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    #[inline]
    fn u16_at(&self, r: std::ops::Range<usize>) -> u16 {
        let b = &self.buffer.as_ref()[r];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Version field (4 for any view that passed a check).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Differentiated services code point (the upper six bits of the old TOS byte).
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    /// Explicit congestion notification bits (RFC 3168).
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    /// Total length field.
    #[inline]
    pub fn total_len(&self) -> usize {
        usize::from(self.u16_at(field::TOTAL_LEN))
    }

    /// Identification field.
    #[inline]
    pub fn ident(&self) -> u16 {
        self.u16_at(field::IDENT)
    }

    /// The reserved flag (bit 0 of the flags), which must be zero.
    #[inline]
    pub fn reserved_flag(&self) -> bool {
        self.u16_at(field::FLG_OFF) & flag::RESERVED != 0
    }

    /// Don't Fragment.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.u16_at(field::FLG_OFF) & flag::DF != 0
    }

    /// More Fragments.
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.u16_at(field::FLG_OFF) & flag::MF != 0
    }

    /// Fragment offset in bytes (the field counts 8-byte units).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (self.u16_at(field::FLG_OFF) & flag::OFFSET) << 3
    }

    /// Part of a fragmented datagram (MF set or a non-zero offset): the transport header is
    /// in the first fragment only.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.u16_at(field::FLG_OFF) & (flag::MF | flag::OFFSET) != 0
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol number.
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM)
    }

    /// Does `other` carry the same header apart from the fields that change from packet to
    /// packet of one flow: total length, identification and checksum? (What coalescing
    /// compares; both views must have passed a check.)
    #[inline(always)]
    pub fn same_flow_fields<U: AsRef<[u8]>>(&self, other: &Packet<U>) -> bool {
        let (a, b) = (self.header(), other.header());
        a.len() == b.len()
            && a[field::VER_IHL..=field::DSCP_ECN] == b[field::VER_IHL..=field::DSCP_ECN]
            && a[field::FLG_OFF.start..=field::PROTOCOL]
                == b[field::FLG_OFF.start..=field::PROTOCOL]
            && a[field::SRC.start..] == b[field::SRC.start..]
    }

    /// Does the header checksum verify?
    #[inline(always)]
    pub fn verify_checksum(&self) -> bool {
        checksum::finish(checksum::accumulate(0, self.header())) == 0
    }

    /// The sum of the transport pseudo-header (addresses, `protocol`, `len`) for a transport
    /// segment of `len` bytes: not folded, not complemented, ready for
    /// [`checksum::accumulate`] over the segment.
    #[inline]
    pub fn pseudo_header_sum(&self, protocol: u8, len: usize) -> u64 {
        checksum::accumulate(0, &self.buffer.as_ref()[field::ADDRS])
            + u64::from(protocol)
            + len as u64
    }

    /// Source address.
    #[inline]
    pub fn src(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::SRC];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Destination address.
    #[inline]
    pub fn dst(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::DST];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The whole header, options included.
    #[inline(always)]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// The options (the header after its fixed 20 bytes).
    #[inline(always)]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[MIN_HEADER_LEN..self.header_len()]
    }

    /// The bytes after the header, up to the total length (link padding excluded). Needs
    /// [`Packet::check_len`].
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..self.total_len()]
    }

    /// The bytes after the header, up to the end of the buffer, whatever the total length
    /// says (a super-frame's, or a truncated packet's).
    #[inline(always)]
    pub fn rest(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    fn set_u16_at(&mut self, r: std::ops::Range<usize>, v: u16) {
        self.buffer.as_mut()[r].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets version 4 and the header length (a multiple of 4, 20 to 60).
    #[inline]
    pub fn set_version_and_header_len(&mut self, len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((len / 4) as u8 & 0x0f);
    }

    /// Sets the DSCP and ECN bits.
    #[inline]
    pub fn set_dscp_ecn(&mut self, dscp: u8, ecn: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = (dscp << 2) | (ecn & 0x03);
    }

    /// Sets the total length field.
    #[inline]
    pub fn set_total_len(&mut self, len: u16) {
        self.set_u16_at(field::TOTAL_LEN, len);
    }

    /// Sets the identification field.
    #[inline]
    pub fn set_ident(&mut self, id: u16) {
        self.set_u16_at(field::IDENT, id);
    }

    /// Sets the flags (reserved bit clear) and the fragment offset (in bytes, a multiple
    /// of 8).
    #[inline]
    pub fn set_frag(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let mut v = (offset >> 3) & flag::OFFSET;
        if dont_frag {
            v |= flag::DF;
        }
        if more_frags {
            v |= flag::MF;
        }
        self.set_u16_at(field::FLG_OFF, v);
    }

    /// Sets the time to live.
    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the protocol number.
    #[inline]
    pub fn set_protocol(&mut self, p: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = p;
    }

    /// Sets the header checksum field.
    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        self.set_u16_at(field::CHECKSUM, c);
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.octets());
    }

    /// Computes the header checksum and stores it.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::finish(checksum::accumulate(0, self.header()));
        self.set_checksum(c);
    }

    /// The bytes after the header, writable.
    #[inline]
    pub fn rest_mut(&mut self) -> &mut [u8] {
        let h = self.header_len();
        &mut self.buffer.as_mut()[h..]
    }
}

impl<'a> Packet<&'a [u8]> {
    /// [`Packet::payload`] with the buffer's lifetime rather than the view's.
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        let (h, t) = (self.header_len(), self.total_len());
        &self.buffer[h..t]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals() {
        assert_eq!(
            Packet::new_checked(&[0x45u8; 10][..]).unwrap_err(),
            WireError::Truncated
        );
        let mut h = [0u8; 20];
        h[0] = 0x65; // version 6
        assert_eq!(Packet::new_checked(&h[..]).unwrap_err(), WireError::BadIpv4);
        h[0] = 0x44; // IHL 4 (16 bytes) is impossible
        assert_eq!(Packet::new_checked(&h[..]).unwrap_err(), WireError::BadIpv4);
        h[0] = 0x45;
        h[3] = 40; // says 40 bytes, buffer has 20
        assert_eq!(
            Packet::new_checked(&h[..]).unwrap_err(),
            WireError::Truncated
        );
        h[3] = 20;
        assert!(Packet::new_checked(&h[..]).unwrap().payload().is_empty());
    }

    /// A TCP SYN's IPv4 header: 10.77.0.1 > 10.77.0.2, id 0x1234, DF, TTL 64, total 60.
    const SYN_HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x3c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x13, 0xec, 0x0a, 0x4d, 0x00,
        0x01, 0x0a, 0x4d, 0x00, 0x02,
    ];

    #[test]
    fn parse_fields() {
        let p = Packet::new_header_checked(&SYN_HEADER[..]).unwrap();
        assert_eq!(
            (p.version(), p.header_len(), p.dscp(), p.ecn()),
            (4, 20, 0, 0)
        );
        assert_eq!((p.total_len(), p.ident(), p.ttl()), (60, 0x1234, 64));
        assert!(p.dont_frag() && !p.more_frags() && !p.reserved_flag() && !p.is_fragment());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.protocol(), PROTO_TCP);
        assert_eq!(p.checksum(), 0x13ec);
        assert!(p.verify_checksum());
        assert_eq!(p.src(), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(p.dst(), Ipv4Addr::new(10, 77, 0, 2));
        assert!(p.options().is_empty());
        assert_eq!(p.header(), &SYN_HEADER[..]);
        // The total length (60) is more than the buffer: only the strict check minds.
        assert_eq!(p.check_len(), Err(WireError::Truncated));
        // Pseudo-header: 0a4d + 0001 + 0a4d + 0002 + 6 + 40.
        assert_eq!(p.pseudo_header_sum(PROTO_TCP, 40), 0x0a4d * 2 + 3 + 6 + 40);
    }

    #[test]
    fn fragments() {
        let mut h = SYN_HEADER;
        h[6..8].copy_from_slice(&[0x20, 0x00]); // MF, offset 0: the first fragment
        let p = Packet::new_unchecked(&h[..]);
        assert!(p.more_frags() && p.is_fragment() && !p.dont_frag());
        h[6..8].copy_from_slice(&[0x80, 0xb9]); // reserved bit, offset 185 × 8
        let p = Packet::new_unchecked(&h[..]);
        assert!(p.reserved_flag() && p.is_fragment() && !p.more_frags());
        assert_eq!(p.frag_offset(), 1480);
    }

    #[test]
    fn build_through_setters() {
        let mut b = [0u8; 20];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_version_and_header_len(20);
        p.set_dscp_ecn(0, 0);
        p.set_total_len(60);
        p.set_ident(0x1234);
        p.set_frag(true, false, 0);
        p.set_ttl(64);
        p.set_protocol(PROTO_TCP);
        p.set_src(Ipv4Addr::new(10, 77, 0, 1));
        p.set_dst(Ipv4Addr::new(10, 77, 0, 2));
        p.fill_checksum();
        assert_eq!(b, SYN_HEADER);
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_frag(false, true, 1480);
        p.set_dscp_ecn(46, 2);
        assert_eq!(&b[6..8], &[0x20, 0xb9]);
        assert_eq!(b[1], 0xba);
    }

    #[test]
    fn header_check_wants_the_options_but_not_the_total() {
        let mut h = [0u8; 24];
        h[..20].copy_from_slice(&SYN_HEADER);
        h[0] = 0x46; // 4 bytes of options
        assert!(Packet::new_header_checked(&h[..]).is_ok());
        assert_eq!(
            Packet::new_header_checked(&h[..23]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            Packet::new_header_checked(&h[..19]).unwrap_err(),
            WireError::Truncated
        );
        h[0] = 0x44;
        assert_eq!(
            Packet::new_header_checked(&h[..]).unwrap_err(),
            WireError::BadIpv4
        );
        h[0] = 0x65;
        assert_eq!(
            Packet::new_header_checked(&h[..]).unwrap_err(),
            WireError::BadIpv4
        );
        h[0] = 0x46;
        let p = Packet::new_header_checked(&h[..]).unwrap();
        assert_eq!(p.options(), &[0, 0, 0, 0]);
        assert!(p.rest().is_empty());
    }

    #[test]
    fn same_flow_fields_ignore_length_id_and_checksum() {
        let a = Packet::new_unchecked(&SYN_HEADER[..]);
        let mut h = SYN_HEADER;
        let mut p = Packet::new_unchecked(&mut h[..]);
        p.set_total_len(1500);
        p.set_ident(7);
        p.fill_checksum();
        assert!(a.same_flow_fields(&Packet::new_unchecked(&h[..])));
        for (i, v) in [(1, 0x04), (6, 0x00), (8, 63), (9, 17), (15, 9), (19, 9)] {
            let mut o = h;
            o[i] = v;
            assert!(
                !a.same_flow_fields(&Packet::new_unchecked(&o[..])),
                "byte {i}"
            );
        }
        // Options count too, and so does their length.
        let mut long = [0u8; 24];
        long[..20].copy_from_slice(&h);
        long[0] = 0x46;
        assert!(!a.same_flow_fields(&Packet::new_unchecked(&long[..])));
    }

    /// The outer header of the first record of `shared/vectors/ovs-netdev-gre-icmp.txt`
    /// (OVS 3.1 userspace GRE): 10.200.0.1 > 10.200.0.2, 122 bytes, DF, TTL 64, id 0.
    const OVS_OUTER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x7a, 0x00, 0x00, 0x40, 0x00, 0x40, 0x2f, 0x24, 0xc3, 0x0a, 0xc8, 0x00,
        0x01, 0x0a, 0xc8, 0x00, 0x02,
    ];

    #[test]
    fn repr_emits_the_header_ovs_sends() {
        let r = Repr {
            src: Ipv4Addr::new(10, 200, 0, 1),
            dst: Ipv4Addr::new(10, 200, 0, 2),
            protocol: PROTO_GRE,
            ttl: 64,
            tos: 0,
            df: true,
            ident: 0,
            payload_len: 122 - 20,
        };
        let mut b = [0xaau8; 24];
        r.emit(&mut b);
        assert_eq!(b[..20], OVS_OUTER);
        assert_eq!(b[20..], [0xaa; 4], "nothing written past the header");
        let p = Packet::new_unchecked(&b[..20]);
        assert!(p.verify_checksum());
        assert!(!p.is_fragment());
    }

    #[test]
    fn repr_sets_tos_ttl_id_and_clears_df() {
        let r = Repr {
            src: Ipv4Addr::new(192, 0, 2, 1),
            dst: Ipv4Addr::new(198, 51, 100, 7),
            protocol: PROTO_GRE,
            ttl: 33,
            tos: 0xb8,
            df: false,
            ident: 0xbeef,
            payload_len: 1480,
        };
        let mut b = [0u8; 20];
        r.emit(&mut b);
        let p = Packet::new_unchecked(&b[..]);
        assert_eq!(p.total_len(), 1500);
        assert_eq!(
            (b[1], b[8], &b[4..6], &b[6..8]),
            (0xb8, 33, &[0xbe, 0xef][..], &[0, 0][..])
        );
        assert_eq!((p.src(), p.dst(), p.protocol()), (r.src, r.dst, 47));
        assert!(p.verify_checksum());
        // Any changed bit breaks it.
        b[8] ^= 1;
        assert!(!Packet::new_unchecked(&b[..]).verify_checksum());
    }
}
