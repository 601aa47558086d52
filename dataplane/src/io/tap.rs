//! TAP devices: one multi-queue device, one non-blocking fd per worker queue.
//!
//! Written against the kernel's TUN/TAP ioctls directly instead of the `tun-tap` crate, which
//! cannot open multi-queue devices (`IFF_MULTI_QUEUE`) or enable the virtio-net header that
//! offloads need, and pulls in an old async stack by default.

use super::netdev;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Errors of TAP setup, one per step.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// /dev/net/tun is missing.
    #[error("/dev/net/tun not found: load the tun module (modprobe tun) or, in a container, pass the device in (--device /dev/net/tun)")]
    NoTunDevice,
    /// Not allowed to create TAP devices.
    #[error("creating TAP {0} needs root or CAP_NET_ADMIN: run dnet-switch as root")]
    NotPermitted(String),
    /// Opening /dev/net/tun failed otherwise.
    #[error("open /dev/net/tun: {0}")]
    Open(io::Error),
    /// A device with this name already exists.
    #[error("interface {0} already exists (another dnet-switch running?): choose another --tap name or remove it")]
    Exists(String),
    /// The name is not usable.
    #[error(transparent)]
    Name(#[from] netdev::NetdevError),
    /// One TAP took offloads and another did not (they must agree: one virtio-net header
    /// setting per worker).
    #[error("one TAP took offloads and another refused them: run with --no-offload")]
    MixedOffloads,
    /// TUNSETIFF failed.
    #[error("TUNSETIFF for TAP {name} failed")]
    SetIff {
        /// Device name.
        name: String,
        /// errno.
        source: io::Error,
    },
}

/// Offloads requested with `TUNSETOFFLOAD`: the kernel may hand us frames with a partial
/// checksum and TCP (v4/v6) super-frames, which `offload::gso` finishes in userspace.
const OFFLOADS: libc::c_uint = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;

/// What the kernel agreed to for a TAP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offloads {
    /// Frames carry a virtio-net header; TCP super-frames and partial checksums both ways.
    pub on: bool,
    /// The kernel understands UDP GSO frames (`VIRTIO_NET_HDR_GSO_UDP_L4`) written to the TAP,
    /// so runs of UDP datagrams may be written as one (Linux ≥ 6.2; older kernels refuse them).
    pub udp_gso_write: bool,
}

/// One queue of a TAP device: reads and writes whole Ethernet frames (no packet-info header),
/// each preceded by a virtio-net header when the device was created with offloads.
#[derive(Debug)]
pub struct TapQueue {
    fd: OwnedFd,
}

impl TapQueue {
    /// Reads one frame into `buf`. `WouldBlock` when the queue is empty.
    #[inline]
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for writes of buf.len() bytes.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Writes one frame given in pieces (virtio-net header, headers, payloads).
    #[inline]
    pub fn writev(&self, parts: &[io::IoSlice<'_>]) -> io::Result<usize> {
        // SAFETY: IoSlice is ABI-compatible with iovec; each points to valid memory.
        let n = unsafe {
            libc::writev(
                self.fd.as_raw_fd(),
                parts.as_ptr().cast(),
                parts.len().min(libc::c_int::MAX as usize) as libc::c_int,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Writes one frame.
    #[inline]
    pub fn write(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: frame is valid for reads of frame.len() bytes.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl AsRawFd for TapQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn open_queue(name: &str, vnet: bool) -> Result<(TapQueue, String), TapError> {
    // SAFETY: the path is a valid C string; flags are plain constants.
    let fd = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENOENT) => TapError::NoTunDevice,
            Some(libc::EPERM) | Some(libc::EACCES) => TapError::NotPermitted(name.to_string()),
            _ => TapError::Open(e),
        });
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut ifr = netdev::ifreq(name)?;
    let mut flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE;
    if vnet {
        flags |= libc::IFF_VNET_HDR;
    }
    ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
    // SAFETY: TUNSETIFF reads and updates one ifreq.
    if unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETIFF,
            &mut ifr as *mut libc::ifreq,
        )
    } < 0
    {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => TapError::NotPermitted(name.to_string()),
            _ => TapError::SetIff {
                name: name.to_string(),
                source: e,
            },
        });
    }
    Ok((TapQueue { fd }, netdev::ifreq_name(&ifr)))
}

/// Creates TAP `name` with `queues` queues (one per worker). The device is not persistent:
/// the kernel removes it when the last queue is closed, so no exit path can leak it.
/// Refuses to attach to an existing interface, which would steal another switch's traffic.
///
/// With `offload`, frames carry a virtio-net header and the kernel may pass TCP super-frames
/// and partial checksums (`TUNSETOFFLOAD`); the returned [`Offloads`] say what took effect
/// (an old kernel may refuse, and then plain frames are used).
pub fn create(
    name: &str,
    queues: usize,
    offload: bool,
) -> Result<(String, Vec<TapQueue>, Offloads), TapError> {
    netdev::ifreq(name)?;
    if netdev::index(name).is_some() {
        return Err(TapError::Exists(name.to_string()));
    }
    let (first, real) = open_queue(name, offload)?;
    let mut got = Offloads::default();
    if offload {
        let set = |flags: libc::c_uint| {
            // SAFETY: TUNSETOFFLOAD takes the flags by value.
            let rc = unsafe {
                libc::ioctl(
                    first.as_raw_fd(),
                    libc::TUNSETOFFLOAD,
                    flags as libc::c_ulong,
                )
            };
            rc == 0
        };
        got.on = set(OFFLOADS);
        if !got.on {
            log::warn!(
                "TAP {real}: offloads refused ({}); running without them",
                io::Error::last_os_error()
            );
        } else if set(OFFLOADS | libc::TUN_F_USO4 | libc::TUN_F_USO6) {
            // A kernel that accepts the USO flags also accepts UDP GSO frames written to it.
            // Take the flags back: with them the kernel would also hand over UDP super-frames,
            // which dnet does not segment.
            got.udp_gso_write = set(OFFLOADS);
            if !got.udp_gso_write {
                log::warn!(
                    "TAP {real}: could not turn UDP offload back off ({}); UDP super-frames \
                     from containers will be dropped as bad_offload",
                    io::Error::last_os_error()
                );
            }
        }
    }
    let mut qs = Vec::with_capacity(queues);
    qs.push(first);
    for _ in 1..queues {
        qs.push(open_queue(&real, offload)?.0);
    }
    Ok((real, qs, got))
}
