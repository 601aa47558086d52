//! The outer IPv4 header of GRE packets. A raw socket hands us the whole IPv4 packet
//! (reassembled), and builds the header itself when we send; a packet ring does neither, so
//! [`Repr`] builds it and [`Packet::verify_checksum`] checks what the kernel's IP input
//! would have.

use super::WireError;
use std::net::Ipv4Addr;

/// IP protocol number of GRE.
pub const PROTO_GRE: u8 = 47;

mod field {
    use std::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const TOTAL_LEN: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLAGS_FRAG: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

/// Minimum header length.
pub const MIN_HEADER_LEN: usize = 20;
/// Don't-fragment flag (in the flags/fragment-offset word).
pub const FLAG_DF: u16 = 0x4000;
/// More-fragments flag.
pub const FLAG_MF: u16 = 0x2000;
/// Fragment offset bits.
pub const FRAG_OFFSET: u16 = 0x1fff;

/// An IPv4 header without options, to emit in front of a payload (what the kernel builds for
/// a raw socket: the same TTL, TOS and DF, a fresh identification).
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
    /// Type of service byte.
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
        let h = &mut buf[..MIN_HEADER_LEN];
        h[field::VER_IHL] = 0x45;
        h[field::TOS] = self.tos;
        h[field::TOTAL_LEN].copy_from_slice(&total.to_be_bytes());
        h[field::IDENT].copy_from_slice(&self.ident.to_be_bytes());
        let flags = if self.df { FLAG_DF } else { 0 };
        h[field::FLAGS_FRAG].copy_from_slice(&flags.to_be_bytes());
        h[field::TTL] = self.ttl;
        h[field::PROTOCOL] = self.protocol;
        h[field::CHECKSUM].fill(0);
        h[field::SRC].copy_from_slice(&self.src.octets());
        h[field::DST].copy_from_slice(&self.dst.octets());
        let c = super::checksum::checksum(&[h]);
        h[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
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

    /// A fragment: more fragments follow, or the offset is not zero.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        let b = &self.buffer.as_ref()[field::FLAGS_FRAG];
        u16::from_be_bytes([b[0], b[1]]) & (FLAG_MF | FRAG_OFFSET) != 0
    }

    /// The header checksum verifies (options included).
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        let h = &self.buffer.as_ref()[..self.header_len()];
        super::checksum::checksum(&[h]) == 0
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

    /// The outer header of the first record of `shared/vectors/ovs-netdev-gre-icmp.txt`
    /// (OVS 3.1 userspace GRE): 10.200.0.1 > 10.200.0.2, 122 bytes, DF, TTL 64, id 0.
    const OVS_OUTER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x7a, 0x00, 0x00, 0x40, 0x00, 0x40, 0x2f, 0x24, 0xc3, 0x0a, 0xc8, 0x00,
        0x01, 0x0a, 0xc8, 0x00, 0x02,
    ];

    #[test]
    fn emit_builds_the_header_ovs_sends() {
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
    fn emit_sets_tos_ttl_id_and_clears_df() {
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

    #[test]
    fn fragments_are_told_apart() {
        let mut h = OVS_OUTER;
        assert!(!Packet::new_unchecked(&h[..]).is_fragment());
        h[6] = 0x20; // MF
        assert!(Packet::new_unchecked(&h[..]).is_fragment());
        h[6] = 0x00;
        h[7] = 0xb9; // offset 185 * 8
        assert!(Packet::new_unchecked(&h[..]).is_fragment());
    }
}
