//! The fixed IPv6 header (RFC 8200), as the offloads, the path-MTU code and the flow hash read
//! inner frames. Extension headers are not parsed: dnet segments and coalesces only TCP
//! directly after the fixed header.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |Version| Traffic Class |           Flow Label                  |
//! |         Payload Length        |  Next Header  |   Hop Limit   |
//! |                    Source Address (16 bytes)                  |
//! |                 Destination Address (16 bytes)                |
//! ```
//! As for IPv4, [`Packet::check_len`] also checks the payload length against the buffer and
//! [`Packet::check_header_len`] does not.

use super::{checksum, WireError};
use std::net::Ipv6Addr;

/// Length of the fixed header.
pub const HEADER_LEN: usize = 40;
/// Next header value of ICMPv6.
pub const NEXT_ICMPV6: u8 = 58;

mod field {
    use std::ops::Range;
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    pub const PAYLOAD_LEN: Range<usize> = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
    /// Both addresses, as the transport pseudo-header sums them.
    pub const ADDRS: Range<usize> = 8..40;
}

/// A zero-copy view of an IPv6 packet.
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

    /// Wraps and checks version and payload length against the buffer.
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

    /// Ensures the fixed header is present and says version 6, without looking at the
    /// payload length: then every accessor but [`Packet::payload`] is in bounds.
    #[inline]
    pub fn check_header_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 6 {
            return Err(WireError::BadIpv6);
        }
        Ok(())
    }

    /// [`Packet::check_header_len`], and the payload length fits the buffer.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        self.check_header_len()?;
        if self.buffer.as_ref().len() < HEADER_LEN + self.payload_len() {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    #[inline]
    fn first_word(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VER_TC_FLOW];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Version field (6 for any view that passed a check).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW.start] >> 4
    }

    /// Traffic class (DSCP and ECN).
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (self.first_word() >> 20) as u8
    }

    /// Flow label (20 bits).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        self.first_word() & 0x000f_ffff
    }

    /// Payload length field: the bytes after the fixed header, extension headers included.
    #[inline]
    pub fn payload_len(&self) -> usize {
        let b = &self.buffer.as_ref()[field::PAYLOAD_LEN];
        usize::from(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Next header (the protocol of the payload when there are no extension headers).
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    #[inline]
    pub fn src(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        Ipv6Addr::from(a)
    }

    /// Destination address.
    #[inline]
    pub fn dst(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        Ipv6Addr::from(a)
    }

    /// Does `other` carry the same fixed header apart from the payload length, the one field
    /// that changes from packet to packet of one flow? (What coalescing compares.)
    #[inline(always)]
    pub fn same_flow_fields<U: AsRef<[u8]>>(&self, other: &Packet<U>) -> bool {
        let (a, b) = (self.header(), other.header());
        a[field::VER_TC_FLOW] == b[field::VER_TC_FLOW]
            && a[field::NEXT_HEADER..] == b[field::NEXT_HEADER..]
    }

    /// The sum of the transport pseudo-header (addresses, `next_header`, `len`; RFC 8200
    /// §8.1) for an upper-layer packet of `len` bytes: not folded, not complemented, ready
    /// for [`checksum::accumulate`] over the packet.
    #[inline]
    pub fn pseudo_header_sum(&self, next_header: u8, len: usize) -> u64 {
        checksum::accumulate(0, &self.buffer.as_ref()[field::ADDRS])
            + u64::from(next_header)
            + len as u64
    }

    /// The fixed header.
    #[inline(always)]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..HEADER_LEN]
    }

    /// The payload, up to the payload length (link padding excluded). Needs
    /// [`Packet::check_len`].
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + self.payload_len()]
    }

    /// The bytes after the fixed header, to the end of the buffer, whatever the payload
    /// length says.
    #[inline(always)]
    pub fn rest(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    fn set_first_word(&mut self, w: u32) {
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&w.to_be_bytes());
    }

    /// Sets the version field to 6.
    #[inline]
    pub fn set_version(&mut self) {
        let w = self.first_word();
        self.set_first_word((w & 0x0fff_ffff) | (6 << 28));
    }

    /// Sets the traffic class.
    #[inline]
    pub fn set_traffic_class(&mut self, tc: u8) {
        let w = self.first_word();
        self.set_first_word((w & 0xf00f_ffff) | (u32::from(tc) << 20));
    }

    /// Sets the flow label (the low 20 bits of `label`).
    #[inline]
    pub fn set_flow_label(&mut self, label: u32) {
        let w = self.first_word();
        self.set_first_word((w & 0xfff0_0000) | (label & 0x000f_ffff));
    }

    /// Sets the payload length field.
    #[inline]
    pub fn set_payload_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::PAYLOAD_LEN].copy_from_slice(&len.to_be_bytes());
    }

    /// Sets the next header.
    #[inline]
    pub fn set_next_header(&mut self, n: u8) {
        self.buffer.as_mut()[field::NEXT_HEADER] = n;
    }

    /// Sets the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, h: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = h;
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.octets());
    }

    /// The bytes after the fixed header, writable.
    #[inline]
    pub fn rest_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fd77::1 > fd77::2, traffic class 0xb8 (EF), flow label 0x12345, TCP, 4 bytes of
    /// payload, hop limit 64; then 2 bytes of padding.
    const PKT: [u8; 46] = [
        0x6b, 0x81, 0x23, 0x45, 0x00, 0x04, 0x06, 0x40, 0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 1, 0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0xde, 0xad, 0xbe, 0xef,
        0, 0,
    ];

    #[test]
    fn parse_fields() {
        let p = Packet::new_checked(&PKT[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!((p.traffic_class(), p.flow_label()), (0xb8, 0x12345));
        assert_eq!(
            (p.payload_len(), p.next_header(), p.hop_limit()),
            (4, 6, 64)
        );
        assert_eq!(p.src(), "fd77::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst(), "fd77::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(p.rest().len(), 6);
        assert_eq!(p.header(), &PKT[..40]);
        // The addresses' words fd77 + 1 + fd77 + 2 fold to faf2 (the accumulator keeps the
        // address sum folded); then next header 6 and length 4.
        assert_eq!(p.pseudo_header_sum(6, 4), 0xfaf2 + 6 + 4);
    }

    #[test]
    fn build_through_setters() {
        let mut b = [0u8; 46];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_version();
        p.set_traffic_class(0xb8);
        p.set_flow_label(0xfff1_2345); // only the low 20 bits count
        p.set_payload_len(4);
        p.set_next_header(6);
        p.set_hop_limit(64);
        p.set_src("fd77::1".parse().unwrap());
        p.set_dst("fd77::2".parse().unwrap());
        p.rest_mut()[..4].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(b, PKT);
    }

    #[test]
    fn same_flow_fields_ignore_the_payload_length() {
        let a = Packet::new_unchecked(&PKT[..]);
        let mut b = PKT;
        b[4..6].copy_from_slice(&[0x05, 0xa0]);
        b[40..].fill(0); // payloads are not compared
        assert!(a.same_flow_fields(&Packet::new_unchecked(&b[..])));
        for i in [0, 3, 6, 7, 8, 39] {
            let mut o = b;
            o[i] ^= 1;
            assert!(
                !a.same_flow_fields(&Packet::new_unchecked(&o[..])),
                "byte {i}"
            );
        }
    }

    #[test]
    fn refusals() {
        assert_eq!(
            Packet::new_checked(&PKT[..39]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            Packet::new_checked(&PKT[..43]).unwrap_err(),
            WireError::Truncated,
            "payload length says 4"
        );
        assert!(Packet::new_header_checked(&PKT[..40]).is_ok());
        let mut b = PKT;
        b[0] = 0x45;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), WireError::BadIpv6);
        assert_eq!(
            Packet::new_header_checked(&b[..]).unwrap_err(),
            WireError::BadIpv6
        );
    }
}
