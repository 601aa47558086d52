//! Segmentation and coalescing offloads, done in userspace because the TAP hands over (and
//! accepts) 64 KiB TCP super-frames while the GRE underlay carries MTU-sized packets.
//!
//! - [`gso`]: split a super-frame read from the TAP into MSS-sized TCP segments (headers fixed
//!   up, checksums computed) before encapsulation; complete partial checksums of plain frames.
//! - [`gro`]: merge consecutive in-order TCP segments of one flow received from a tunnel into
//!   one super-frame, so the kernel's bridge and TCP stack handle one packet instead of forty.
//! - [`underlay_gro`]: recognise the TCP super-frames the underlay's own GRO made out of plain
//!   GRE packets before dnet saw them, and describe them as TAP super-frames.
//!
//! Pure functions over byte slices; the TAP and sockets are in `io`.

pub mod gro;
pub mod gso;
pub mod udp_gro;
pub mod underlay_gro;

use crate::wire::ethernet::{ethertype, Frame, TAGGED_HEADER_LEN};
use crate::wire::{ipv4, ipv6, tcp};

// IPv6's next header and IPv4's protocol share one number space (IANA "Assigned Internet
// Protocol Numbers"), so ipv4::PROTO_TCP serves both below.

/// Longest header run of a TCP frame: Ethernet + one tag (18), IPv4 with options (60) or IPv6
/// (40), TCP with options (60).
pub const MAX_HEADERS: usize = TAGGED_HEADER_LEN + ipv4::MAX_HEADER_LEN + tcp::MAX_HEADER_LEN;

/// Where the layers of an Ethernet / IPv4-or-IPv6 / TCP frame start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpLayout {
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the TCP header.
    pub l4: usize,
    /// Offset of the TCP payload (end of all headers).
    pub payload: usize,
    /// IPv6 rather than IPv4.
    pub v6: bool,
}

/// Finds the TCP layers of `f`, or `None` if it is not plain TCP over IPv4 (any IHL) or IPv6
/// (no extension headers), or is a fragment, or its headers do not fit.
///
/// The IP lengths are not checked (a super-frame's may not be final): the IP header passed
/// `check_header_len` and the TCP header `check_len`, so the views the offloads build from
/// the layout over `f` (or over a copy of its headers) are in bounds.
#[inline]
pub fn tcp_layout(f: &[u8]) -> Option<TcpLayout> {
    let eth = Frame::new_checked(f).ok()?;
    let l3 = eth.header_len();
    let (l4, v6) = match eth.ethertype() {
        ethertype::IPV4 => {
            let ip = ipv4::Packet::new_header_checked(eth.payload()).ok()?;
            if ip.protocol() != ipv4::PROTO_TCP || ip.is_fragment() {
                return None;
            }
            (l3 + ip.header_len(), false)
        }
        ethertype::IPV6 => {
            let ip = ipv6::Packet::new_header_checked(eth.payload()).ok()?;
            if ip.next_header() != ipv4::PROTO_TCP {
                return None;
            }
            (l3 + ipv6::HEADER_LEN, true)
        }
        _ => return None,
    };
    let th = tcp::Packet::new_checked(f.get(l4..)?).ok()?;
    Some(TcpLayout {
        l3,
        l4,
        payload: l4 + th.header_len(),
        v6,
    })
}

impl TcpLayout {
    /// The IPv4 header of `f` (this layout's frame, or a copy of its headers).
    #[inline]
    pub(crate) fn ipv4<'f>(&self, f: &'f [u8]) -> ipv4::Packet<&'f [u8]> {
        ipv4::Packet::new_unchecked(&f[self.l3..self.l4])
    }

    /// The IPv6 header of `f`.
    #[inline]
    pub(crate) fn ipv6<'f>(&self, f: &'f [u8]) -> ipv6::Packet<&'f [u8]> {
        ipv6::Packet::new_unchecked(&f[self.l3..self.l4])
    }

    /// The TCP segment of `f` (header and whatever payload follows).
    #[inline]
    pub(crate) fn tcp<'f>(&self, f: &'f [u8]) -> tcp::Packet<&'f [u8]> {
        tcp::Packet::new_unchecked(&f[self.l4..])
    }

    /// The IP header of `h` (a frame's headers, rewritten in place) and its TCP part, as
    /// writable views.
    #[inline]
    pub(crate) fn split_mut<'h>(&self, h: &'h mut [u8]) -> (IpMut<'h>, tcp::Packet<&'h mut [u8]>) {
        let (ip, tcp) = h.split_at_mut(self.l4);
        let ip = &mut ip[self.l3..];
        let ip = if self.v6 {
            IpMut::V6(ipv6::Packet::new_unchecked(ip))
        } else {
            IpMut::V4(ipv4::Packet::new_unchecked(ip))
        };
        (ip, tcp::Packet::new_unchecked(tcp))
    }
}

/// A writable IPv4 or IPv6 header (see [`TcpLayout::split_mut`]).
pub(crate) enum IpMut<'h> {
    V4(ipv4::Packet<&'h mut [u8]>),
    V6(ipv6::Packet<&'h mut [u8]>),
}

impl IpMut<'_> {
    /// The transport pseudo-header sum for `len` bytes of TCP.
    #[inline]
    pub(crate) fn pseudo_header_sum(&self, len: usize) -> u64 {
        match self {
            IpMut::V4(p) => p.pseudo_header_sum(ipv4::PROTO_TCP, len),
            IpMut::V6(p) => p.pseudo_header_sum(ipv4::PROTO_TCP, len),
        }
    }
}

/// The TCP pseudo-header sum (not folded, not complemented) for a segment of `tcp_len` bytes.
#[inline]
pub fn pseudo_header_sum(f: &[u8], lay: &TcpLayout, tcp_len: usize) -> u64 {
    if lay.v6 {
        lay.ipv6(f).pseudo_header_sum(ipv4::PROTO_TCP, tcp_len)
    } else {
        lay.ipv4(f).pseudo_header_sum(ipv4::PROTO_TCP, tcp_len)
    }
}

#[cfg(test)]
pub(crate) mod testframes {
    //! Hand-built TCP frames for the offload tests.

    /// An Ethernet/IPv4/TCP frame (with a timestamp option) carrying `payload`, checksums
    /// valid. `seq` is the TCP sequence number, `flags` the TCP flags byte.
    pub fn tcp4(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let tcp_len = 32 + payload.len();
        let tot = 20 + tcp_len;
        f.extend_from_slice(&[
            0x45,
            0,
            (tot >> 8) as u8,
            tot as u8,
            0x12,
            0x34,
            0x40,
            0,
            64,
            6,
            0,
            0,
        ]);
        f.extend_from_slice(&[10, 77, 0, 1, 10, 77, 0, 2]);
        f.extend_from_slice(&[0x9c, 0x40, 0x13, 0x89]);
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x10, 0x01, 0x80, flags, 0x01, 0xf5, 0, 0, 0, 0]);
        f.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0x30, 0x39, 0, 0, 0x10, 0x92]);
        f.extend_from_slice(payload);
        fix_checksums(&mut f);
        f
    }

    /// The same over IPv6.
    pub fn tcp6(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
        let tcp_len = 20 + payload.len();
        f.extend_from_slice(&[0x60, 0, 0, 0, (tcp_len >> 8) as u8, tcp_len as u8, 6, 64]);
        f.extend_from_slice(&[0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&[0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        f.extend_from_slice(&[0x9c, 0x40, 0x13, 0x89]);
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x10, 0x01, 0x50, flags, 0x01, 0xf5, 0, 0, 0, 0]);
        f.extend_from_slice(payload);
        fix_checksums(&mut f);
        f
    }

    /// Recomputes the IPv4 header and TCP checksums of `f` in place.
    pub fn fix_checksums(f: &mut [u8]) {
        use super::IpMut;
        let lay = super::tcp_layout(f).unwrap();
        let tcp_len = f.len() - lay.l4;
        let (mut ip, mut tcp) = lay.split_mut(f);
        if let IpMut::V4(p) = &mut ip {
            p.fill_checksum();
        }
        tcp.fill_checksum(ip.pseudo_header_sum(tcp_len));
    }

    /// True when the IPv4 header checksum (if any) and the TCP checksum of `f` verify.
    pub fn checksums_ok(f: &[u8]) -> bool {
        let lay = super::tcp_layout(f).unwrap();
        let ip_ok = lay.v6 || lay.ipv4(f).verify_checksum();
        let s = super::pseudo_header_sum(f, &lay, f.len() - lay.l4);
        ip_ok && lay.tcp(f).verify_checksum(s)
    }
}
