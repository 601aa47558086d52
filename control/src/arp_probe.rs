//! RFC 5227 address conflict detection: ARP probes before an address is assigned, gratuitous
//! ARP announcements after. Frames are built by hand and sent on an `AF_PACKET` socket bound to
//! one interface, so there is no `arping` dependency.
//!
//! Timing is shortened from the RFC (3 probes 1–2 s apart, then 2 s of listening) to 3 probes
//! 200 ms apart and about 1 s of listening in total: the overlay is a switched LAN with
//! sub-millisecond to few-millisecond round trips, and `dnetctl attach` should not take 7 s.

use std::fs::File;
use std::io;
use std::mem;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// Length of an Ethernet/IPv4 ARP payload.
pub const ARP_LEN: usize = 28;
/// Frames are padded to the Ethernet minimum (without FCS).
pub const FRAME_LEN: usize = 60;
/// ARP request opcode.
pub const OP_REQUEST: u16 = 1;
/// ARP reply opcode.
pub const OP_REPLY: u16 = 2;

/// Number of probes sent.
pub const PROBE_NUM: u32 = 3;
/// Interval between probes.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// Total time from the first probe until the address is declared free.
pub const PROBE_WAIT_TOTAL: Duration = Duration::from_millis(1000);
/// Number of announcements.
pub const ANNOUNCE_NUM: u32 = 2;
/// Interval between announcements.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_millis(200);

const BROADCAST: [u8; 6] = [0xff; 6];

/// An Ethernet/IPv4 ARP packet (RFC 826).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    /// [`OP_REQUEST`] or [`OP_REPLY`].
    pub op: u16,
    /// Sender hardware address.
    pub sha: [u8; 6],
    /// Sender protocol address.
    pub spa: Ipv4Addr,
    /// Target hardware address.
    pub tha: [u8; 6],
    /// Target protocol address.
    pub tpa: Ipv4Addr,
}

impl Arp {
    /// An RFC 5227 probe for `ip` from `mac`: a request with sender IP 0.0.0.0, so that no
    /// neighbour cache learns anything from it, and an all-zero target hardware address.
    pub fn probe(mac: [u8; 6], ip: Ipv4Addr) -> Arp {
        Arp {
            op: OP_REQUEST,
            sha: mac,
            spa: Ipv4Addr::UNSPECIFIED,
            tha: [0; 6],
            tpa: ip,
        }
    }

    /// An RFC 5227 announcement: a request with sender and target IP both `ip`.
    pub fn announcement(mac: [u8; 6], ip: Ipv4Addr) -> Arp {
        Arp {
            op: OP_REQUEST,
            sha: mac,
            spa: ip,
            tha: [0; 6],
            tpa: ip,
        }
    }

    /// Writes the 28-byte payload.
    pub fn emit(&self, b: &mut [u8; ARP_LEN]) {
        b[0..2].copy_from_slice(&1u16.to_be_bytes()); // hardware type: Ethernet
        b[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol type: IPv4
        b[4] = 6;
        b[5] = 4;
        b[6..8].copy_from_slice(&self.op.to_be_bytes());
        b[8..14].copy_from_slice(&self.sha);
        b[14..18].copy_from_slice(&self.spa.octets());
        b[18..24].copy_from_slice(&self.tha);
        b[24..28].copy_from_slice(&self.tpa.octets());
    }

    /// Parses an Ethernet/IPv4 ARP payload; `None` for anything else.
    pub fn parse(b: &[u8]) -> Option<Arp> {
        if b.len() < ARP_LEN || b[0..6] != [0, 1, 8, 0, 6, 4] {
            return None;
        }
        let mac = |o: usize| -> [u8; 6] { b[o..o + 6].try_into().expect("6 bytes") };
        let ip = |o: usize| Ipv4Addr::new(b[o], b[o + 1], b[o + 2], b[o + 3]);
        Some(Arp {
            op: u16::from_be_bytes([b[6], b[7]]),
            sha: mac(8),
            spa: ip(14),
            tha: mac(18),
            tpa: ip(24),
        })
    }

    /// A broadcast Ethernet frame carrying this packet from `self.sha`, padded to 60 bytes.
    pub fn broadcast_frame(&self) -> [u8; FRAME_LEN] {
        let mut f = [0u8; FRAME_LEN];
        f[0..6].copy_from_slice(&BROADCAST);
        f[6..12].copy_from_slice(&self.sha);
        f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        let arp: &mut [u8; ARP_LEN] = (&mut f[14..14 + ARP_LEN]).try_into().expect("28 bytes");
        self.emit(arp);
        f
    }
}

/// If `frame` (an Ethernet frame received while probing for `ip` from `our_mac`) shows that
/// another station uses or is claiming `ip`, that station's MAC (RFC 5227 §2.1.1): any ARP
/// packet whose sender IP is `ip`, or another host's probe for `ip`.
pub fn conflicting_mac(frame: &[u8], our_mac: [u8; 6], ip: Ipv4Addr) -> Option<[u8; 6]> {
    if frame.len() < 14 + ARP_LEN || frame[12..14] != ETHERTYPE_ARP.to_be_bytes() {
        return None;
    }
    let a = Arp::parse(&frame[14..])?;
    if a.sha == our_mac {
        return None;
    }
    let in_use = a.spa == ip;
    let other_probe = a.op == OP_REQUEST && a.spa.is_unspecified() && a.tpa == ip;
    (in_use || other_probe).then_some(a.sha)
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An `AF_PACKET` socket receiving and sending ARP on one interface.
#[derive(Debug)]
pub struct ArpSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl ArpSocket {
    /// Opens the socket on interface `ifindex` of the calling thread's network namespace.
    pub fn open(ifindex: u32) -> io::Result<ArpSocket> {
        let proto = ETHERTYPE_ARP.to_be() as libc::c_int;
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                proto,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let ifindex = ifindex as i32;
        let sll = sockaddr_ll(ifindex, &[0; 6]);
        // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ArpSocket { fd, ifindex })
    }

    /// Opens the socket on interface `ifindex` of network namespace `ns`.
    pub fn open_in(ns: &File, ifindex: u32) -> io::Result<ArpSocket> {
        crate::netlink::in_netns_file(ns, || ArpSocket::open(ifindex))
    }

    /// Sends one frame.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let sll = sockaddr_ll(self.ifindex, &BROADCAST);
        // SAFETY: `frame` and `sll` are valid for the lengths passed.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits until `deadline` for one incoming frame (frames this host sent are skipped).
    /// `Ok(None)` when the deadline passes.
    pub fn recv_until(&self, buf: &mut [u8], deadline: Instant) -> io::Result<Option<usize>> {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let ms = (deadline - now).as_millis().clamp(1, i32::MAX as u128) as i32;
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if rc == 0 {
                continue;
            }
            // SAFETY: zeroed sockaddr_ll is a valid value; recvfrom fills at most its size.
            let mut from: libc::sockaddr_ll = unsafe { mem::zeroed() };
            let mut fromlen = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: `buf` is valid for writes of its length; `from` as above.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    &mut from as *mut libc::sockaddr_ll as *mut libc::sockaddr,
                    &mut fromlen,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) {
                    continue;
                }
                return Err(e);
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            return Ok(Some(n as usize));
        }
    }

    /// RFC 5227 probing: sends [`PROBE_NUM`] probes for `ip` from `mac` and listens for
    /// [`PROBE_WAIT_TOTAL`]. Returns the MAC of a station that uses or claims `ip`, if any.
    pub fn probe(&self, mac: [u8; 6], ip: Ipv4Addr) -> io::Result<Option<[u8; 6]>> {
        let frame = Arp::probe(mac, ip).broadcast_frame();
        let start = Instant::now();
        let end = start + PROBE_WAIT_TOTAL;
        let mut buf = [0u8; 2048];
        for k in 0..PROBE_NUM {
            self.send(&frame)?;
            let next = if k + 1 < PROBE_NUM {
                start + PROBE_INTERVAL * (k + 1)
            } else {
                end
            };
            while let Some(n) = self.recv_until(&mut buf, next)? {
                if let Some(other) = conflicting_mac(&buf[..n], mac, ip) {
                    return Ok(Some(other));
                }
            }
        }
        Ok(None)
    }

    /// Sends [`ANNOUNCE_NUM`] gratuitous ARP announcements of `ip` at `mac`, so neighbours
    /// and switches across the overlay update their caches and tables at once.
    pub fn announce(&self, mac: [u8; 6], ip: Ipv4Addr) -> io::Result<()> {
        let frame = Arp::announcement(mac, ip).broadcast_frame();
        for k in 0..ANNOUNCE_NUM {
            if k > 0 {
                std::thread::sleep(ANNOUNCE_INTERVAL);
            }
            self.send(&frame)?;
        }
        Ok(())
    }
}

fn sockaddr_ll(ifindex: i32, dst: &[u8; 6]) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = ETHERTYPE_ARP.to_be();
    sll.sll_ifindex = ifindex;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(dst);
    sll
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
    const OTHER: [u8; 6] = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];
    const IP: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 5);

    #[test]
    fn probe_frame_bytes() {
        let f = Arp::probe(MAC, IP).broadcast_frame();
        #[rustfmt::skip]
        let want: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,     // dst: broadcast
            0x02, 0x11, 0x22, 0x33, 0x44, 0x55,     // src
            0x08, 0x06,                             // ARP
            0x00, 0x01, 0x08, 0x00, 6, 4,           // Ethernet, IPv4, hlen, plen
            0x00, 0x01,                             // request
            0x02, 0x11, 0x22, 0x33, 0x44, 0x55,     // sha
            0, 0, 0, 0,                             // spa 0.0.0.0 (probe)
            0, 0, 0, 0, 0, 0,                       // tha
            10, 77, 1, 5,                           // tpa
        ];
        assert_eq!(&f[..42], &want);
        assert!(f[42..].iter().all(|&b| b == 0), "zero padding to 60 bytes");
    }

    #[test]
    fn announcement_bytes() {
        let mut b = [0u8; ARP_LEN];
        Arp::announcement(MAC, IP).emit(&mut b);
        #[rustfmt::skip]
        let want: [u8; ARP_LEN] = [
            0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01,
            0x02, 0x11, 0x22, 0x33, 0x44, 0x55, 10, 77, 1, 5,
            0, 0, 0, 0, 0, 0, 10, 77, 1, 5,
        ];
        assert_eq!(b, want);
        assert_eq!(Arp::parse(&b), Some(Arp::announcement(MAC, IP)));
    }

    /// The reply Linux sends to a probe (arp_process, "sip == 0" case): sender IP is the
    /// probed address, target IP 0, unicast to the prober.
    #[test]
    fn linux_reply_to_probe_is_a_conflict() {
        #[rustfmt::skip]
        let frame: [u8; 42] = [
            0x02, 0x11, 0x22, 0x33, 0x44, 0x55,
            0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
            0x08, 0x06,
            0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x02,
            0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 10, 77, 1, 5,
            0x02, 0x11, 0x22, 0x33, 0x44, 0x55, 0, 0, 0, 0,
        ];
        assert_eq!(conflicting_mac(&frame, MAC, IP), Some(OTHER));
        assert_eq!(
            conflicting_mac(&frame, MAC, Ipv4Addr::new(10, 77, 1, 6)),
            None
        );
    }

    #[test]
    fn other_probe_for_same_address_is_a_conflict_but_ours_is_not() {
        let theirs = Arp::probe(OTHER, IP).broadcast_frame();
        assert_eq!(conflicting_mac(&theirs, MAC, IP), Some(OTHER));
        let ours = Arp::probe(MAC, IP).broadcast_frame();
        assert_eq!(conflicting_mac(&ours, MAC, IP), None);
        // A request from someone else asking for another address is harmless.
        let unrelated = Arp {
            op: OP_REQUEST,
            sha: OTHER,
            spa: Ipv4Addr::new(10, 77, 1, 9),
            tha: [0; 6],
            tpa: Ipv4Addr::new(10, 77, 1, 1),
        }
        .broadcast_frame();
        assert_eq!(conflicting_mac(&unrelated, MAC, IP), None);
    }

    #[test]
    fn non_arp_is_ignored() {
        let mut f = Arp::probe(OTHER, IP).broadcast_frame();
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        assert_eq!(conflicting_mac(&f, MAC, IP), None);
        assert_eq!(conflicting_mac(&f[..20], MAC, IP), None);
        assert_eq!(Arp::parse(&[0u8; 10]), None);
    }

    #[test]
    fn mac_format() {
        assert_eq!(format_mac(&MAC), "02:11:22:33:44:55");
    }
}
