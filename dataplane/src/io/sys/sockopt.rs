//! Integer socket options, and the one `IP_MTU` reader (the route's MTU toward an address,
//! including what ICMP "fragmentation needed" taught the kernel).

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Sets an integer socket option.
pub fn set_int(fd: BorrowedFd<'_>, level: i32, name: i32, v: i32) -> io::Result<()> {
    // SAFETY: passes a pointer to one c_int and its size; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&v as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads an integer socket option.
pub fn get_int(fd: BorrowedFd<'_>, level: i32, name: i32) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: passes a pointer to one c_int and its size; the kernel writes at most that.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// The credentials (pid, uid, gid) of the process at the other end of a unix socket.
pub fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<libc::ucred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes one ucred; `len` holds its size.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred)
}

/// The source address and path MTU the routing table picks toward `peer` (its route's MTU, or
/// what ICMP taught the kernel). Connecting a UDP socket sends nothing; it only resolves the
/// route.
pub fn route_to(peer: Ipv4Addr) -> io::Result<(Ipv4Addr, u32)> {
    let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
    s.connect(SocketAddrV4::new(peer, 9))?;
    let local = match s.local_addr()? {
        std::net::SocketAddr::V4(a) => *a.ip(),
        std::net::SocketAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    };
    let fd = std::os::fd::AsFd::as_fd(&s);
    let mtu = get_int(fd, libc::IPPROTO_IP, libc::IP_MTU)?;
    Ok((local, u32::try_from(mtu).unwrap_or(0)))
}

/// The kernel's current path MTU toward `peer`.
pub fn path_mtu(peer: Ipv4Addr) -> io::Result<u32> {
    route_to(peer).map(|(_, mtu)| mtu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_to_loopback() {
        let (src, mtu) = route_to(Ipv4Addr::LOCALHOST).unwrap();
        assert_eq!(src, Ipv4Addr::LOCALHOST);
        assert!(mtu >= 1500);
        assert_eq!(path_mtu(Ipv4Addr::LOCALHOST).unwrap(), mtu);
    }

    #[test]
    fn peer_credentials_are_ours_on_a_socketpair() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let c = peer_cred(std::os::fd::AsFd::as_fd(&a)).unwrap();
        assert_eq!(c.pid as u32, std::process::id());
    }

    #[test]
    fn int_options_round_trip() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsFd::as_fd(&s);
        set_int(fd, libc::IPPROTO_IP, libc::IP_TTL, 33).unwrap();
        assert_eq!(get_int(fd, libc::IPPROTO_IP, libc::IP_TTL).unwrap(), 33);
        assert!(set_int(fd, libc::IPPROTO_IP, 0x7fff, 1).is_err());
    }
}
