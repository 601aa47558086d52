//! The virtio-net header (`struct virtio_net_hdr`, 10 bytes, little-endian on x86) that a TAP
//! opened with `IFF_VNET_HDR` puts before every frame. It carries what the kernel left undone:
//! a checksum to complete (`NEEDS_CSUM`) and, for TCP super-frames, the segmentation to do
//! (`gso_type`, `gso_size`).

use super::WireError;

/// Header length (no `num_buffers`: dnet does not ask for mergeable buffers).
pub const LEN: usize = 10;

/// `flags`: the checksum from `csum_start` to the end must be completed and stored at
/// `csum_start + csum_offset`.
pub const F_NEEDS_CSUM: u8 = 1;
/// `flags`: the checksum is known good.
pub const F_DATA_VALID: u8 = 2;

/// `gso_type` values.
pub mod gso {
    /// Not a super-frame.
    pub const NONE: u8 = 0;
    /// TCP over IPv4.
    pub const TCPV4: u8 = 1;
    /// UDP fragmentation offload (never requested by dnet).
    pub const UDP: u8 = 3;
    /// TCP over IPv6.
    pub const TCPV6: u8 = 4;
    /// UDP segmentation at layer 4 (`VIRTIO_NET_HDR_GSO_UDP_L4`): datagrams of `gso_size`
    /// payload bytes each, UDP and IPv4 headers rebuilt per datagram.
    pub const UDP_L4: u8 = 5;
    /// Flag: the ECN CWR bit must be kept on the first segment only.
    pub const ECN: u8 = 0x80;
}

/// The owned header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM` / `F_DATA_VALID`.
    pub flags: u8,
    /// One of [`gso`], possibly with [`gso::ECN`].
    pub gso_type: u8,
    /// Length of the headers (Ethernet + IP + TCP) of a super-frame.
    pub hdr_len: u16,
    /// Payload bytes per segment (the MSS).
    pub gso_size: u16,
    /// Where checksumming starts.
    pub csum_start: u16,
    /// Where, after `csum_start`, the checksum is stored.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Reads the header at the start of `b`.
    pub fn parse(b: &[u8]) -> Result<VnetHdr, WireError> {
        if b.len() < LEN {
            return Err(WireError::Truncated);
        }
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Ok(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    /// Writes the header into `b[..LEN]`.
    ///
    /// # Panics
    /// If `b` is shorter than [`LEN`] (a caller bug).
    pub fn emit(&self, b: &mut [u8]) {
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
    }

    /// The GSO type without the ECN flag.
    #[inline]
    pub fn gso_kind(&self) -> u8 {
        self.gso_type & !gso::ECN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        // A TCPv4 super-frame as a TAP hands it over: NEEDS_CSUM, hdr_len 66, MSS 1410,
        // checksum from byte 34 stored 16 bytes further.
        let b = [0x01, 0x01, 66, 0, 0x82, 0x05, 34, 0, 16, 0];
        let h = VnetHdr::parse(&b).unwrap();
        assert_eq!(h.flags, F_NEEDS_CSUM);
        assert_eq!(h.gso_kind(), gso::TCPV4);
        assert_eq!(
            (h.hdr_len, h.gso_size, h.csum_start, h.csum_offset),
            (66, 1410, 34, 16)
        );
        let mut out = [0u8; LEN];
        h.emit(&mut out);
        assert_eq!(out, b);
        assert_eq!(VnetHdr::parse(&b[..9]), Err(WireError::Truncated));
        let ecn = VnetHdr {
            gso_type: gso::TCPV6 | gso::ECN,
            ..h
        };
        assert_eq!(ecn.gso_kind(), gso::TCPV6);
    }
}
