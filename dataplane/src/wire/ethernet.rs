//! Ethernet II frames with at most one 802.1Q tag (no FCS: TAP and GRE/TEB carry none).

use super::WireError;
use std::fmt;

/// A 48-bit MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// 00:00:00:00:00:00.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Group (multicast or broadcast) address: the I/G bit of the first octet.
    #[inline]
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// All ones.
    #[inline]
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// All zeros.
    #[inline]
    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }

    /// May this address appear as a frame's *source*? Group and all-zero addresses may not
    /// (IEEE 802.3); learning them would poison the table.
    #[inline]
    pub fn is_valid_source(&self) -> bool {
        !self.is_multicast() && !self.is_zero()
    }

    /// Reads six bytes; `b` must be at least 6 long.
    #[inline]
    pub fn from_bytes(b: &[u8]) -> MacAddr {
        let mut m = [0; 6];
        m.copy_from_slice(&b[..6]);
        MacAddr(m)
    }

    /// The address as a 48-bit integer (cheap hashing and packing).
    #[inline]
    pub fn to_u64(self) -> u64 {
        let b = self.0;
        u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut m = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut m {
            let p = parts
                .next()
                .ok_or_else(|| format!("MAC {s:?}: expected 6 octets"))?;
            *b = u8::from_str_radix(p, 16)
                .map_err(|_| format!("MAC {s:?}: {p:?} is not a hex octet"))?;
        }
        if parts.next().is_some() {
            return Err(format!("MAC {s:?}: expected 6 octets"));
        }
        Ok(MacAddr(m))
    }
}

/// Ethertype values the switch cares about.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// 802.1Q VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
}

mod field {
    use std::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const TYPE: Range<usize> = 12..14;
    pub const TCI: Range<usize> = 14..16;
    pub const INNER_TYPE: Range<usize> = 16..18;
}

/// Length of an untagged Ethernet header.
pub const HEADER_LEN: usize = 14;
/// Length of a header with one 802.1Q tag.
pub const TAGGED_HEADER_LEN: usize = 18;

/// A zero-copy view of an Ethernet frame.
#[derive(Debug, Clone, Copy)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps without checking; accessors may panic on short buffers.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        Frame { buffer }
    }

    /// Wraps and checks that every accessor is in bounds.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// Ensures the buffer holds the whole header (including the tag, if one is announced).
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.outer_ethertype() == ethertype::VLAN && b.len() < TAGGED_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// Destination address.
    #[inline]
    pub fn dst(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::DST])
    }

    /// Source address.
    #[inline]
    pub fn src(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::SRC])
    }

    #[inline]
    fn outer_ethertype(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::TYPE];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The 802.1Q VLAN id, if the frame carries a tag.
    #[inline]
    pub fn vlan(&self) -> Option<u16> {
        if self.outer_ethertype() != ethertype::VLAN {
            return None;
        }
        let b = &self.buffer.as_ref()[field::TCI];
        Some(u16::from_be_bytes([b[0], b[1]]) & 0x0fff)
    }

    /// The ethertype of the payload (after the tag, if any).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        if self.outer_ethertype() == ethertype::VLAN {
            let b = &self.buffer.as_ref()[field::INNER_TYPE];
            u16::from_be_bytes([b[0], b[1]])
        } else {
            self.outer_ethertype()
        }
    }

    /// Header length: 14, or 18 with a tag.
    #[inline]
    pub fn header_len(&self) -> usize {
        if self.outer_ethertype() == ethertype::VLAN {
            TAGGED_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// The whole header: addresses, tag if any, ethertype.
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// Bytes after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// The underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the destination address.
    #[inline]
    pub fn set_dst(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&m.0);
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&m.0);
    }

    /// Sets the (outer) ethertype field.
    #[inline]
    pub fn set_ethertype(&mut self, t: u16) {
        self.buffer.as_mut()[field::TYPE].copy_from_slice(&t.to_be_bytes());
    }

    /// Payload after an untagged header, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let h = self.header_len();
        &mut self.buffer.as_mut()[h..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNTAGGED: [u8; 16] = [
        0x02, 0x77, 0, 0, 0, 0x02, 0x02, 0x77, 0, 0, 0, 0x01, 0x08, 0x00, 0x45, 0x00,
    ];
    const TAGGED: [u8; 20] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x77, 0, 0, 0, 0x01, 0x81, 0x00, 0x20, 0x2a,
        0x08, 0x06, 0x00, 0x01,
    ];

    #[test]
    fn parse_untagged() {
        let f = Frame::new_checked(&UNTAGGED[..]).unwrap();
        assert_eq!(f.dst().to_string(), "02:77:00:00:00:02");
        assert_eq!(f.src().to_string(), "02:77:00:00:00:01");
        assert_eq!(f.vlan(), None);
        assert_eq!(f.ethertype(), ethertype::IPV4);
        assert_eq!(f.payload(), &[0x45, 0x00]);
    }

    #[test]
    fn parse_tagged() {
        let f = Frame::new_checked(&TAGGED[..]).unwrap();
        assert!(f.dst().is_broadcast());
        assert_eq!(f.vlan(), Some(42)); // TCI 0x202a: PCP 1, VID 42
        assert_eq!(f.ethertype(), ethertype::ARP);
        assert_eq!(f.header_len(), 18);
        assert_eq!(f.header(), &TAGGED[..18]);
        assert_eq!(f.payload(), &[0x00, 0x01]);
    }

    #[test]
    fn truncated() {
        assert_eq!(
            Frame::new_checked(&UNTAGGED[..13]).unwrap_err(),
            WireError::Truncated
        );
        // A tag is announced but cut short.
        assert_eq!(
            Frame::new_checked(&TAGGED[..16]).unwrap_err(),
            WireError::Truncated
        );
    }

    #[test]
    fn build_through_setters() {
        let mut buf = [0u8; 16];
        let mut f = Frame::new_unchecked(&mut buf[..]);
        f.set_dst("02:77:00:00:00:02".parse().unwrap());
        f.set_src("02:77:00:00:00:01".parse().unwrap());
        f.set_ethertype(ethertype::IPV4);
        f.payload_mut().copy_from_slice(&[0x45, 0x00]);
        assert_eq!(buf, UNTAGGED);
    }

    #[test]
    fn mac_classes() {
        assert!(!MacAddr::BROADCAST.is_valid_source());
        assert!(!MacAddr::ZERO.is_valid_source());
        assert!(!"01:00:5e:00:00:01"
            .parse::<MacAddr>()
            .unwrap()
            .is_valid_source());
        assert!("02:77:00:00:00:01"
            .parse::<MacAddr>()
            .unwrap()
            .is_valid_source());
        assert!("02:77:00:00:00".parse::<MacAddr>().is_err());
        assert!("02:77:00:00:00:zz".parse::<MacAddr>().is_err());
    }
}
