//! UDP headers (RFC 768), as UDP coalescing reads and rewrites them and as the GRE-in-UDP
//! encapsulation sizes them.
//!
//! ```text
//!  0      7 8     15 16    23 24    31
//! |   Source Port   | Destination Port|
//! |     Length      |    Checksum     |
//! ```

use super::{checksum, WireError};

/// Length of the header.
pub const HEADER_LEN: usize = 8;
/// Where the checksum field is in the header (a virtio-net header's `csum_offset` for UDP).
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM.start;

mod field {
    use std::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// A zero-copy view of a UDP datagram (header + payload).
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

    /// Wraps and checks the header and the length field.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ensures the header is present and the length field covers the header and fits the
    /// buffer: then no accessor panics. Bytes after the length (link padding) are allowed.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let l = usize::from(self.length());
        if l < HEADER_LEN {
            return Err(WireError::BadUdp);
        }
        if len < l {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    #[inline]
    fn u16_at(&self, r: std::ops::Range<usize>) -> u16 {
        let b = &self.buffer.as_ref()[r];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        self.u16_at(field::SRC_PORT)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        self.u16_at(field::DST_PORT)
    }

    /// Length field: header and payload in bytes.
    #[inline]
    pub fn length(&self) -> u16 {
        self.u16_at(field::LENGTH)
    }

    /// Checksum field (0: none was computed, IPv4 only).
    #[inline]
    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM)
    }

    /// The payload, up to the length field.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.length())]
    }

    /// Does the checksum verify over the datagram (to the length field), given the IP
    /// layer's pseudo-header sum? A zero checksum field (none sent) counts as verified.
    #[inline(always)]
    pub fn verify_checksum(&self, pseudo_header_sum: u64) -> bool {
        self.checksum() == 0
            || checksum::finish(checksum::accumulate(
                pseudo_header_sum,
                &self.buffer.as_ref()[..usize::from(self.length())],
            )) == 0
    }
}

impl<'a> Packet<&'a [u8]> {
    /// [`Packet::payload`] with the buffer's lifetime rather than the view's.
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        let l = usize::from(self.length());
        &self.buffer[HEADER_LEN..l]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    fn set_u16_at(&mut self, r: std::ops::Range<usize>, v: u16) {
        self.buffer.as_mut()[r].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the source port.
    #[inline]
    pub fn set_src_port(&mut self, p: u16) {
        self.set_u16_at(field::SRC_PORT, p);
    }

    /// Sets the destination port.
    #[inline]
    pub fn set_dst_port(&mut self, p: u16) {
        self.set_u16_at(field::DST_PORT, p);
    }

    /// Sets the length field.
    #[inline]
    pub fn set_length(&mut self, l: u16) {
        self.set_u16_at(field::LENGTH, l);
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        self.set_u16_at(field::CHECKSUM, c);
    }

    /// The payload up to the length field, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let l = usize::from(self.length());
        &mut self.buffer.as_mut()[HEADER_LEN..l]
    }

    /// Computes the checksum over the datagram (to the length field) with the IP layer's
    /// pseudo-header sum and stores it; a computed 0 is sent as 0xffff (RFC 768: 0 means
    /// "none").
    #[inline]
    pub fn fill_checksum(&mut self, pseudo_header_sum: u64) {
        self.set_checksum(0);
        let l = usize::from(self.length());
        let c = checksum::finish(checksum::accumulate(
            pseudo_header_sum,
            &self.buffer.as_ref()[..l],
        ));
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 5000 > 7777 carrying "hi!", checksummed in the pseudo-header of 10.77.0.1 > 10.77.0.2,
    /// followed by two bytes of link padding.
    const DGRAM: [u8; 13] = [
        0x13, 0x88, 0x1e, 0x61, 0x00, 0x0b, 0x2f, 0xe9, b'h', b'i', b'!', 0, 0,
    ];

    fn pseudo(len: usize) -> u64 {
        0x0a4d * 2 + 3 + 17 + len as u64
    }

    #[test]
    fn parse_fields() {
        let p = Packet::new_checked(&DGRAM[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (5000, 7777));
        assert_eq!((p.length(), p.checksum()), (11, 0x2fe9));
        assert_eq!(p.payload(), b"hi!");
        assert!(p.verify_checksum(pseudo(11)));
        assert!(!p.verify_checksum(pseudo(12)));
        assert_eq!(p.into_payload(), b"hi!");
    }

    #[test]
    fn build_through_setters() {
        let mut b = [0u8; 13];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_src_port(5000);
        p.set_dst_port(7777);
        p.set_length(11);
        p.payload_mut().copy_from_slice(b"hi!");
        p.fill_checksum(pseudo(11));
        assert_eq!(b, DGRAM);
        // A zero checksum field means none: accepted whatever the data.
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_checksum(0);
        assert!(p.verify_checksum(0));
    }

    #[test]
    fn refusals() {
        assert_eq!(
            Packet::new_checked(&DGRAM[..7]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            Packet::new_checked(&DGRAM[..10]).unwrap_err(),
            WireError::Truncated,
            "length says 11"
        );
        let mut b = DGRAM;
        b[5] = 7;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), WireError::BadUdp);
        b[5] = 8;
        assert!(Packet::new_checked(&b[..]).unwrap().payload().is_empty());
    }
}
