//! Segmentation and coalescing offloads, done in userspace because the TAP hands over (and
//! accepts) 64 KiB TCP super-frames while the GRE underlay carries MTU-sized packets.
//!
//! - [`gso`]: split a super-frame read from the TAP into MSS-sized TCP segments (headers fixed
//!   up, checksums computed) before encapsulation; complete partial checksums of plain frames.
//! - [`gro`]: merge consecutive in-order TCP segments of one flow received from a tunnel into
//!   one super-frame, so the kernel's bridge and TCP stack handle one packet instead of forty.
//!
//! Pure functions over byte slices; the TAP and sockets are in `io`.

pub mod gro;
pub mod gso;
pub mod udp_gro;

use crate::wire::ethernet::{ethertype, Frame};

/// Longest header run of a TCP frame: Ethernet + one tag (18), IPv4 with options (60) or IPv6
/// (40), TCP with options (60).
pub const MAX_HEADERS: usize = 18 + 60 + 60;

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
pub fn tcp_layout(f: &[u8]) -> Option<TcpLayout> {
    let eth = Frame::new_checked(f).ok()?;
    let l3 = eth.header_len();
    let (l4, v6) = match eth.ethertype() {
        ethertype::IPV4 => {
            let ip = f.get(l3..l3 + 20)?;
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff;
            if ip[0] >> 4 != 4 || ihl < 20 || ip[9] != 6 || frag != 0 {
                return None;
            }
            (l3 + ihl, false)
        }
        ethertype::IPV6 => {
            let ip = f.get(l3..l3 + 40)?;
            if ip[0] >> 4 != 6 || ip[6] != 6 {
                return None;
            }
            (l3 + 40, true)
        }
        _ => return None,
    };
    let th = f.get(l4..l4 + 20)?;
    let thl = usize::from(th[12] >> 4) * 4;
    if thl < 20 || f.len() < l4 + thl {
        return None;
    }
    Some(TcpLayout {
        l3,
        l4,
        payload: l4 + thl,
        v6,
    })
}

/// The TCP pseudo-header sum (not folded, not complemented) for a segment of `tcp_len` bytes.
pub fn pseudo_header_sum(f: &[u8], lay: &TcpLayout, tcp_len: usize) -> u64 {
    use crate::wire::checksum::accumulate;
    let ip = &f[lay.l3..];
    let addrs = if lay.v6 { &ip[8..40] } else { &ip[12..20] };
    let s = accumulate(0, addrs);
    s + 6 + tcp_len as u64
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
        use crate::wire::checksum::{accumulate, finish};
        let lay = super::tcp_layout(f).unwrap();
        if !lay.v6 {
            f[lay.l3 + 10..lay.l3 + 12].fill(0);
            let c = finish(accumulate(0, &f[lay.l3..lay.l4]));
            f[lay.l3 + 10..lay.l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
        f[lay.l4 + 16..lay.l4 + 18].fill(0);
        let s = super::pseudo_header_sum(f, &lay, f.len() - lay.l4);
        let c = finish(accumulate(s, &f[lay.l4..]));
        f[lay.l4 + 16..lay.l4 + 18].copy_from_slice(&c.to_be_bytes());
    }

    /// True when the IPv4 header checksum (if any) and the TCP checksum of `f` verify.
    pub fn checksums_ok(f: &[u8]) -> bool {
        use crate::wire::checksum::{accumulate, finish};
        let lay = super::tcp_layout(f).unwrap();
        let ip_ok = lay.v6 || finish(accumulate(0, &f[lay.l3..lay.l4])) == 0;
        let s = super::pseudo_header_sum(f, &lay, f.len() - lay.l4);
        ip_ok && finish(accumulate(s, &f[lay.l4..])) == 0
    }
}
