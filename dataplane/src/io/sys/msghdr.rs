//! The one place that builds `msghdr`s and their control messages: the `UDP_SEGMENT` size of a
//! GSO send, and the `UDP_GRO` size of a coalesced receive.

use std::net::{Ipv4Addr, SocketAddrV4};

/// Room for the control messages of one message: one `cmsghdr` with an int (`CMSG_SPACE(4)`
/// is 24 bytes on 64-bit Linux). Eight-byte elements keep it aligned for `cmsghdr`.
#[derive(Clone, Copy, Debug, Default)]
pub struct CmsgBuf([u64; 4]);

impl CmsgBuf {
    /// Its size in bytes.
    pub const LEN: usize = 32;

    fn as_mut_ptr(&mut self) -> *mut libc::c_void {
        self.0.as_mut_ptr().cast()
    }
}

/// A `sockaddr_in` for `a`.
pub fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// The address in a `sockaddr_in`.
pub fn from_sockaddr(s: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(s.sin_addr.s_addr)),
        u16::from_be(s.sin_port),
    )
}

/// An all-empty `msghdr`.
pub fn empty() -> libc::msghdr {
    // SAFETY: msghdr is a plain C struct of pointers and integers (plus, on some libcs, private
    // padding fields), for which all-zero is the valid "no name, no data, no control" value.
    unsafe { std::mem::zeroed() }
}

/// An all-empty `mmsghdr`.
pub fn empty_mmsg() -> libc::mmsghdr {
    libc::mmsghdr {
        msg_hdr: empty(),
        msg_len: 0,
    }
}

/// A `msghdr` naming `name` and the buffers `iov`, without control data. The pointers are
/// only valid for as long as `name` and `iov` (and what `iov` points at) are.
pub fn header(name: *mut libc::sockaddr_in, iov: &mut [libc::iovec]) -> libc::msghdr {
    let mut h = empty();
    h.msg_name = name.cast();
    h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    h.msg_iov = iov.as_mut_ptr();
    h.msg_iovlen = iov.len();
    h
}

/// Points `h`'s control data at `buf` and writes one `UDP_SEGMENT` message into it: the kernel
/// splits the message's payload into datagrams of `segment` bytes.
pub fn set_udp_segment(h: &mut libc::msghdr, buf: &mut CmsgBuf, segment: u16) {
    set_int_cmsg(h, buf, libc::SOL_UDP, libc::UDP_SEGMENT, segment);
}

fn set_int_cmsg<T: Copy>(h: &mut libc::msghdr, buf: &mut CmsgBuf, level: i32, kind: i32, v: T) {
    const { assert!(std::mem::size_of::<T>() <= 8) };
    h.msg_control = buf.as_mut_ptr();
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<T>() as u32) } as usize;
    debug_assert!(space <= CmsgBuf::LEN);
    h.msg_controllen = space;
    // SAFETY: msg_control points at `buf`, 32 bytes aligned for cmsghdr and at least
    // CMSG_SPACE(size_of::<T>()) long, so CMSG_FIRSTHDR returns a header inside it and
    // CMSG_DATA a pointer with room for one T; both stay within `buf`.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(h);
        (*c).cmsg_level = level;
        (*c).cmsg_type = kind;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<T>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<T>(), v);
    }
}

/// Points `h`'s control data at `buf`, for the kernel to fill on receive.
pub fn set_control_room(h: &mut libc::msghdr, buf: &mut CmsgBuf) {
    h.msg_control = buf.as_mut_ptr();
    h.msg_controllen = CmsgBuf::LEN;
}

/// The segment size of a `UDP_GRO` control message in a received `h`, if any: the datagram
/// then holds several, all that size but the last.
pub fn udp_gro_segment(h: &libc::msghdr) -> Option<usize> {
    if h.msg_control.is_null() || h.msg_controllen < std::mem::size_of::<libc::cmsghdr>() {
        return None;
    }
    // SAFETY: the kernel wrote `msg_controllen` bytes of control messages where msg_control
    // points (a CmsgBuf, aligned for cmsghdr); CMSG_FIRSTHDR/CMSG_NXTHDR never step past
    // msg_controllen, and a UDP_GRO message carries one int.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == libc::UDP_GRO {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                return usize::try_from(v).ok().filter(|v| *v > 0);
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_segment_round_trips_through_the_cmsg_macros() {
        let mut h = empty();
        let mut buf = CmsgBuf::default();
        set_udp_segment(&mut h, &mut buf, 1400);
        // The reader looks for UDP_GRO; write one of those to read it back the same way.
        set_int_cmsg(&mut h, &mut buf, libc::SOL_UDP, libc::UDP_GRO, 1400i32);
        assert_eq!(udp_gro_segment(&h), Some(1400));
        set_int_cmsg(&mut h, &mut buf, libc::SOL_UDP, libc::UDP_GRO, 0i32);
        assert_eq!(udp_gro_segment(&h), None, "zero is not a segment size");
        set_int_cmsg(&mut h, &mut buf, libc::SOL_IP, libc::IP_TOS, 7i32);
        assert_eq!(udp_gro_segment(&h), None, "other messages are skipped");
        h.msg_controllen = 0;
        assert_eq!(udp_gro_segment(&h), None);
    }

    #[test]
    fn sockaddr_round_trips() {
        let a = SocketAddrV4::new(Ipv4Addr::new(10, 200, 0, 2), 4754);
        let s = sockaddr(a);
        assert_eq!(s.sin_port, 4754u16.to_be());
        assert_eq!(from_sockaddr(&s), a);
    }
}
