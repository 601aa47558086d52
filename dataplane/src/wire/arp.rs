//! ARP for IPv4 over Ethernet (RFC 826): a zero-copy view of the 28-byte payload that follows
//! the Ethernet header. Only what the switch needs to watch for duplicate addresses: who
//! (sender MAC) claims which address (sender IP).

use super::ethernet::MacAddr;
use std::net::Ipv4Addr;

/// Why a buffer is not an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ArpError {
    /// Shorter than 28 bytes.
    #[error("truncated")]
    Truncated,
    /// Another hardware or protocol type, or address lengths other than 6 and 4.
    #[error("not Ethernet/IPv4 ARP")]
    NotEthernetIpv4,
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;
/// Hardware type Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;
/// Protocol type IPv4.
pub const PTYPE_IPV4: u16 = 0x0800;
/// Operation: request.
pub const OP_REQUEST: u16 = 1;
/// Operation: reply.
pub const OP_REPLY: u16 = 2;

mod field {
    use std::ops::Range;
    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// A zero-copy view of an ARP packet (the Ethernet payload).
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps without checking; accessors may panic on short buffers.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps and checks that this is Ethernet/IPv4 ARP and every accessor is in bounds.
    /// Trailing bytes (Ethernet padding) are allowed.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, ArpError> {
        let p = Self::new_unchecked(buffer);
        let b = p.buffer.as_ref();
        if b.len() < PACKET_LEN {
            return Err(ArpError::Truncated);
        }
        let lengths_ok = b[field::HLEN] == 6 && b[field::PLEN] == 4;
        if p.htype() != HTYPE_ETHERNET || p.ptype() != PTYPE_IPV4 || !lengths_ok {
            return Err(ArpError::NotEthernetIpv4);
        }
        Ok(p)
    }

    #[inline]
    fn u16_at(&self, r: std::ops::Range<usize>) -> u16 {
        let b = &self.buffer.as_ref()[r];
        u16::from_be_bytes([b[0], b[1]])
    }

    #[inline]
    fn ip_at(&self, r: std::ops::Range<usize>) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[r];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Hardware type (1 = Ethernet).
    #[inline]
    pub fn htype(&self) -> u16 {
        self.u16_at(field::HTYPE)
    }

    /// Protocol type (0x0800 = IPv4).
    #[inline]
    pub fn ptype(&self) -> u16 {
        self.u16_at(field::PTYPE)
    }

    /// Operation (1 request, 2 reply).
    #[inline]
    pub fn operation(&self) -> u16 {
        self.u16_at(field::OPER)
    }

    /// Sender hardware address: the station claiming [`Packet::sender_ip`].
    #[inline]
    pub fn sender_mac(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::SHA])
    }

    /// Sender protocol address (0.0.0.0 in an RFC 5227 probe).
    #[inline]
    pub fn sender_ip(&self) -> Ipv4Addr {
        self.ip_at(field::SPA)
    }

    /// Target hardware address.
    #[inline]
    pub fn target_mac(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::THA])
    }

    /// Target protocol address.
    #[inline]
    pub fn target_ip(&self) -> Ipv4Addr {
        self.ip_at(field::TPA)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tcpdump -xx of `ARP, Request who-has 10.77.0.2 tell 10.77.0.1, length 28` from
    /// 02:77:00:00:00:01 (Ethernet header stripped), followed by 18 bytes of Ethernet padding.
    const REQUEST: [u8; 46] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // htype, ptype, hlen, plen, op
        0x02, 0x77, 0x00, 0x00, 0x00, 0x01, 0x0a, 0x4d, 0x00, 0x01, // sha, spa
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x4d, 0x00, 0x02, // tha, tpa
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // padding
    ];

    #[test]
    fn parses_a_request() {
        let p = Packet::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(p.operation(), OP_REQUEST);
        assert_eq!(p.sender_mac().to_string(), "02:77:00:00:00:01");
        assert_eq!(p.sender_ip(), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(p.target_mac(), MacAddr::ZERO);
        assert_eq!(p.target_ip(), Ipv4Addr::new(10, 77, 0, 2));
    }

    #[test]
    fn parses_a_reply_without_padding() {
        let reply: [u8; 28] = [
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02, 0x02, 0x77, 0x00, 0x00, 0x00, 0x02,
            0x0a, 0x4d, 0x00, 0x02, 0x02, 0x77, 0x00, 0x00, 0x00, 0x01, 0x0a, 0x4d, 0x00, 0x01,
        ];
        let p = Packet::new_checked(&reply[..]).unwrap();
        assert_eq!(p.operation(), OP_REPLY);
        assert_eq!(p.sender_mac().to_string(), "02:77:00:00:00:02");
        assert_eq!(p.sender_ip(), Ipv4Addr::new(10, 77, 0, 2));
        assert_eq!(p.target_mac().to_string(), "02:77:00:00:00:01");
    }

    #[test]
    fn refuses_short_or_foreign_packets() {
        for n in 0..PACKET_LEN {
            assert_eq!(
                Packet::new_checked(&REQUEST[..n]).unwrap_err(),
                ArpError::Truncated
            );
        }
        for (i, v) in [(1, 0x06), (3, 0xdd), (4, 8), (5, 16)] {
            let mut b = REQUEST;
            b[i] = v;
            assert_eq!(
                Packet::new_checked(&b[..]).unwrap_err(),
                ArpError::NotEthernetIpv4,
                "byte {i} = {v:#x}"
            );
        }
    }
}
