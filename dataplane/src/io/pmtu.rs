//! The I/O half of path MTU handling (the decisions are in [`crate::switch::pmtu`]):
//! reading each peer's path MTU from the kernel, and a send-only raw GRE socket with outer DF
//! off for frames that may be fragmented.
//!
//! The kernel learns path MTUs from the routers' ICMP "fragmentation needed" (the raw GRE
//! socket receives them and updates the per-destination route exception, shared by the whole
//! network namespace). A UDP socket connected to the peer (no packet is sent) then reads it with
//! `IP_MTU`. Each worker re-reads its peers' values after an `EMSGSIZE`, and every few seconds
//! so that a path MTU that grows again (the kernel forgets learned values after 10 minutes) is
//! noticed too.

use super::gre_socket::OuterOptions;
use crate::switch::pmtu::Outcome;
use crate::switch::{Millis, PortId};
use crate::wire::gre;
use crate::wire::vnet::VnetHdr;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::cell::Cell;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Periodic re-read of the path MTUs.
pub const REFRESH_MS: Millis = 5_000;
/// Soonest re-read after an `EMSGSIZE`.
pub const RETRY_MS: Millis = 20;

/// The kernel's current path MTU toward `peer` (its route's MTU, or what ICMP taught it).
pub fn query(peer: Ipv4Addr) -> io::Result<u32> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.connect(&SockAddr::from(SocketAddrV4::new(peer, 9)))?;
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: passes a pointer to one c_int and its size.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v as u32)
}

/// Per-worker path MTU state at the I/O edge.
pub struct PmtuIo {
    /// Raw GRE socket with `IP_PMTUDISC_DONT` (the kernel fragments), receiving nothing.
    nodf: Option<Socket>,
    /// An `EMSGSIZE` was seen: re-read soon.
    pub stale: Cell<bool>,
    /// Bumped by any worker that saw `EMSGSIZE`, so all of them re-read (each has its own
    /// core and would otherwise lose a packet of its own before learning).
    shared: Arc<AtomicU64>,
    seen: u64,
    /// Next periodic re-read.
    pub next_refresh: Millis,
    /// Last re-read.
    pub last: Millis,
}

impl PmtuIo {
    /// Opens the DF-off socket when outer DF is on (otherwise every send may fragment already
    /// and nothing is checked).
    pub fn new(
        local: Ipv4Addr,
        outer: OuterOptions,
        udp: bool,
        shared: Arc<AtomicU64>,
    ) -> io::Result<PmtuIo> {
        let nodf = if outer.df {
            Some(open_nodf(local, outer, udp)?)
        } else {
            None
        };
        Ok(PmtuIo {
            nodf,
            stale: Cell::new(false),
            seen: shared.load(Ordering::Relaxed),
            shared,
            next_refresh: 0,
            last: 0,
        })
    }

    /// True when the path MTUs should be re-read now.
    #[inline]
    pub fn due(&self, now: Millis) -> bool {
        now >= self.next_refresh
            || ((self.stale.get() || self.shared.load(Ordering::Relaxed) != self.seen)
                && now >= self.last + RETRY_MS)
    }

    /// An `EMSGSIZE`: every worker re-reads soon.
    pub fn too_big(&self) {
        if !self.stale.replace(true) {
            self.shared.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records a re-read at `now`.
    pub fn refreshed(&mut self, now: Millis) {
        self.stale.set(false);
        self.seen = self.shared.load(Ordering::Relaxed);
        self.last = now;
        self.next_refresh = now + REFRESH_MS;
    }

    /// Sends `headers` + `payload` (one inner frame) with GRE header `repr` to `dest` with
    /// outer DF off. Returns false if it could not be sent.
    pub fn send_fragmentable(
        &self,
        dest: &libc::sockaddr_in,
        repr: &gre::Repr,
        headers: &[u8],
        payload: &[u8],
    ) -> bool {
        let Some(s) = &self.nodf else {
            return false;
        };
        let mut g = [0u8; gre::MAX_HEADER_LEN];
        let gl = repr.header_len();
        repr.emit_parts(&mut g[..gl], &[headers, payload]);
        let mut iov = [
            libc::iovec {
                iov_base: g.as_mut_ptr().cast(),
                iov_len: gl,
            },
            libc::iovec {
                iov_base: headers.as_ptr() as *mut libc::c_void,
                iov_len: headers.len(),
            },
            libc::iovec {
                iov_base: payload.as_ptr() as *mut libc::c_void,
                iov_len: payload.len(),
            },
        ];
        // SAFETY (zeroed): msghdr is a plain C struct.
        let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
        m.msg_name = dest as *const libc::sockaddr_in as *mut libc::c_void;
        m.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        m.msg_iov = iov.as_mut_ptr();
        m.msg_iovlen = iov.len();
        // SAFETY: every pointer in `m` is valid for the duration of the call.
        let rc = unsafe { libc::sendmsg(s.as_raw_fd(), &m, libc::MSG_DONTWAIT) };
        rc >= 0
    }
}

fn open_nodf(local: Ipv4Addr, outer: OuterOptions, udp: bool) -> io::Result<Socket> {
    // GRE-in-UDP: any source port will do, the receiver names peers by address.
    let s = if udp {
        Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?
    } else {
        Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(47)))?
    };
    // Receive nothing: the worker's main socket does that.
    s.attach_filter(&[socket2::SockFilter::new(0x06, 0, 0, 0)])?;
    s.set_nonblocking(true)?;
    s.set_ttl_v4(u32::from(outer.ttl))?;
    s.set_tos_v4(u32::from(outer.tos))?;
    let v: libc::c_int = libc::IP_PMTUDISC_DONT;
    // SAFETY: passes a pointer to one c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    s.bind(&SockAddr::from(SocketAddrV4::new(local, 0)))?;
    Ok(s)
}

impl super::worker::Worker {
    /// Re-reads the path MTU of every tunnel and hands changes to the core.
    pub(super) fn refresh_pmtu(&mut self, now: Millis) {
        self.pmtu.refreshed(now);
        for id in 0..crate::switch::MAX_PORTS {
            let id = id as PortId;
            let Some(crate::switch::PortKind::Tunnel(addr)) = self.core.port(id) else {
                continue;
            };
            match query(addr) {
                Ok(mtu) => {
                    if let Some(old) = self.core.set_path_mtu(id, mtu) {
                        let mtu = self.core.path_mtu(id).unwrap_or(mtu);
                        if old != 0 && self.id == 0 {
                            log::info!("path MTU to peer {addr}: {old} -> {mtu}");
                        } else {
                            log::debug!("worker {}: path MTU to peer {addr}: {mtu}", self.id);
                        }
                    }
                }
                Err(e) => log::debug!("worker {}: path MTU to {addr}: {e}", self.id),
            }
        }
    }

    /// A super-frame's segmentation header with the segment size lowered, if needed, so each
    /// segment fits tunnel `port`'s path (TCP is resegmented rather than refused).
    #[inline]
    pub(super) fn fit_gso(&self, port: PortId, frame: &[u8], h: &VnetHdr) -> VnetHdr {
        let mut h = *h;
        let max = self.core.max_tunnel_frame(port);
        if max != usize::MAX {
            if let Some(lay) = crate::offload::tcp_layout(frame) {
                let room = max.saturating_sub(lay.payload);
                if (64..usize::from(h.gso_size)).contains(&room) {
                    h.gso_size = room as u16;
                }
            }
        }
        h
    }

    /// Handles `frame` (from `ingress`) that does not fit tunnel `port` unfragmented: answers
    /// with ICMP through the ingress port, sends it fragmentable, or drops it, as the core says.
    /// Returns true when the caller should send it normally after all.
    #[cold]
    pub(super) fn oversize(&self, ingress: PortId, port: PortId, frame: &[u8]) -> bool {
        let mut reply = [0u8; crate::wire::icmp::MAX_REPLY];
        match self.core.fit(port, frame, frame.len(), &mut reply) {
            Outcome::Send => true,
            Outcome::Drop => false,
            Outcome::Reply(n) => {
                match self.core.port(ingress) {
                    Some(crate::switch::PortKind::Local) => self.to_tap(&reply[..n]),
                    Some(crate::switch::PortKind::Tunnel(_)) => {
                        self.fragmentable(ingress, &reply[..n]);
                    }
                    None => {}
                }
                false
            }
            Outcome::Fragment => {
                self.fragmentable(port, frame);
                false
            }
        }
    }

    fn fragmentable(&self, port: PortId, frame: &[u8]) {
        let seq = if self.gre.seq {
            self.seq[usize::from(port)].fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        } else {
            0
        };
        let c = self.core.counters();
        if self.pmtu.send_fragmentable(
            &self.dest[usize::from(port)],
            &self.gre.repr(seq),
            &[],
            frame,
        ) {
            c.tx(port, frame.len());
        } else {
            c.dropped(crate::switch::DropReason::TxError);
        }
    }
}
