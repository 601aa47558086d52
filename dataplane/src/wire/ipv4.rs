//! The outer IPv4 header of received GRE packets. A raw socket hands us the whole IPv4 packet
//! (reassembled); sending needs no IPv4 code because the kernel builds that header.

use super::WireError;
use std::net::Ipv4Addr;

/// IP protocol number of GRE.
pub const PROTO_GRE: u8 = 47;

mod field {
    use std::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const TOTAL_LEN: Range<usize> = 2..4;
    pub const PROTOCOL: usize = 9;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

/// Minimum header length.
pub const MIN_HEADER_LEN: usize = 20;

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

    /// Ensures the header is well-formed enough for every accessor.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 || self.header_len() < MIN_HEADER_LEN {
            return Err(WireError::BadIpv4);
        }
        let total = self.total_len();
        if total < self.header_len() {
            return Err(WireError::BadIpv4);
        }
        if b.len() < total {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// Header length in bytes (IHL × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Total length field.
    #[inline]
    pub fn total_len(&self) -> usize {
        let b = &self.buffer.as_ref()[field::TOTAL_LEN];
        usize::from(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Protocol number.
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
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

    /// The bytes after the header, up to the total length (link padding excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..self.total_len()]
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
}
