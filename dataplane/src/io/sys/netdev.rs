//! Network device ioctls (MTU, up/down, bridge membership) and address lookups, on the calling
//! thread's network namespace. Small enough that netlink is not worth a dependency here.

use std::ffi::CStr;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Errors of device configuration. Each names the device and the step.
#[derive(Debug, thiserror::Error)]
pub enum NetdevError {
    /// The interface name is empty or longer than 15 bytes.
    #[error("interface name {0:?} is invalid: use 1 to 15 characters")]
    BadName(String),
    /// No such interface.
    #[error("interface {0} not found")]
    NotFound(String),
    /// An ioctl failed.
    #[error("{op} on {dev} failed")]
    Ioctl {
        /// What was attempted.
        op: &'static str,
        /// Device name.
        dev: String,
        /// errno.
        source: io::Error,
    },
}

/// Builds an `ifreq` for `name`.
pub fn ifreq(name: &str) -> Result<libc::ifreq, NetdevError> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(NetdevError::BadName(name.to_string()));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(ifr)
}

/// The name stored in an `ifreq` (after the kernel filled in a `%d` template).
pub fn ifreq_name(ifr: &libc::ifreq) -> String {
    // SAFETY: ifr_name is NUL-terminated: we wrote at most IFNAMSIZ-1 bytes into a zeroed array
    // and the kernel always terminates the names it writes.
    unsafe { CStr::from_ptr(ifr.ifr_name.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn ctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before being wrapped.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ioctl(
    op: &'static str,
    dev: &str,
    req: libc::Ioctl,
    ifr: &mut libc::ifreq,
) -> Result<(), NetdevError> {
    let err = |source| NetdevError::Ioctl {
        op,
        dev: dev.to_string(),
        source,
    };
    let s = ctl_socket().map_err(err)?;
    // SAFETY: every request used here reads/writes one `ifreq`, which `ifr` points to.
    if unsafe { libc::ioctl(s.as_raw_fd(), req, ifr as *mut libc::ifreq) } < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(())
}

/// Interface index of `name`, if it exists in this namespace.
pub fn index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: c is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// Current MTU of `name`.
pub fn mtu(name: &str) -> Result<u32, NetdevError> {
    let mut ifr = ifreq(name)?;
    ioctl("read MTU", name, libc::SIOCGIFMTU, &mut ifr)?;
    // SAFETY: SIOCGIFMTU filled the ifru_mtu member.
    Ok(unsafe { ifr.ifr_ifru.ifru_mtu } as u32)
}

/// The hardware (MAC) address of `name`.
pub fn hwaddr(name: &str) -> Result<[u8; 6], NetdevError> {
    let mut ifr = ifreq(name)?;
    ioctl("read MAC address", name, libc::SIOCGIFHWADDR, &mut ifr)?;
    // SAFETY: SIOCGIFHWADDR filled the ifru_hwaddr member.
    let sa = unsafe { ifr.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (m, b) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *m = *b as u8;
    }
    Ok(mac)
}

/// Sets the MTU of `name`.
pub fn set_mtu(name: &str, mtu: u32) -> Result<(), NetdevError> {
    let mut ifr = ifreq(name)?;
    ifr.ifr_ifru.ifru_mtu = mtu as libc::c_int;
    ioctl("set MTU", name, libc::SIOCSIFMTU, &mut ifr)
}

/// Brings `name` up.
pub fn set_up(name: &str) -> Result<(), NetdevError> {
    let mut ifr = ifreq(name)?;
    ioctl("read flags", name, libc::SIOCGIFFLAGS, &mut ifr)?;
    // SAFETY: SIOCGIFFLAGS filled the ifru_flags member.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    ioctl("bring up", name, libc::SIOCSIFFLAGS, &mut ifr)
}

/// Is `name` a Linux bridge? (Only bridges answer the bridge-info ioctl path in sysfs.)
pub fn is_bridge(name: &str) -> bool {
    std::path::Path::new("/sys/class/net")
        .join(name)
        .join("bridge")
        .exists()
}

/// Names of the interfaces enslaved to `bridge` (empty if it has none or is not a bridge).
pub fn bridge_ports(bridge: &str) -> Vec<String> {
    let dir = std::path::Path::new("/sys/class/net")
        .join(bridge)
        .join("brif");
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}

/// Makes the bridge that `port` belongs to forget the stations it learned on `port`
/// (`brport/flush`). Returns false when `port` is in no bridge.
pub fn flush_bridge_port(port: &str) -> io::Result<bool> {
    let p = std::path::Path::new("/sys/class/net")
        .join(port)
        .join("brport/flush");
    match std::fs::write(p, "1") {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Adds interface `port` to bridge `bridge`.
pub fn bridge_add(bridge: &str, port: &str) -> Result<(), NetdevError> {
    let idx = index(port).ok_or_else(|| NetdevError::NotFound(port.to_string()))?;
    let mut ifr = ifreq(bridge)?;
    ifr.ifr_ifru.ifru_ifindex = idx as libc::c_int;
    // <linux/sockios.h>; libc exports it for Android only.
    const SIOCBRADDIF: libc::Ioctl = 0x89a2;
    ioctl("add port to bridge", bridge, SIOCBRADDIF, &mut ifr)
}

/// Every IPv4 address configured on this host (this namespace).
pub fn local_addrs() -> io::Result<Vec<Ipv4Addr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below.
    if unsafe { libc::getifaddrs(&mut head) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned, valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr is non-null and points to a sockaddr of the family it names.
            let fam = unsafe { (*ifa.ifa_addr).sa_family };
            if i32::from(fam) == libc::AF_INET {
                // SAFETY: AF_INET addresses are sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// The source address and path MTU the routing table picks towards `peer`.
pub fn route_to(peer: Ipv4Addr) -> io::Result<(Ipv4Addr, u32)> {
    super::sockopt::route_to(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(matches!(ifreq(""), Err(NetdevError::BadName(_))));
        assert!(matches!(
            ifreq("sixteen-chars-xx"),
            Err(NetdevError::BadName(_))
        ));
        let r = ifreq("fifteen-chars-x").unwrap();
        assert_eq!(ifreq_name(&r), "fifteen-chars-x");
    }

    #[test]
    fn loopback_is_visible() {
        assert!(index("lo").is_some());
        assert!(mtu("lo").unwrap() >= 1500);
        assert!(local_addrs().unwrap().contains(&Ipv4Addr::LOCALHOST));
        assert!(matches!(
            mtu("no-such-dev0"),
            Err(NetdevError::Ioctl { .. })
        ));
    }

    #[test]
    fn route_to_loopback() {
        let (src, mtu) = route_to(Ipv4Addr::LOCALHOST).unwrap();
        assert_eq!(src, Ipv4Addr::LOCALHOST);
        assert!(mtu >= 1500);
    }
}
