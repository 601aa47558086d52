//! Sending a TCP super-frame from the TAP over GRE-in-UDP as one UDP GSO message.
//!
//! With plain GRE every segment is its own `sendmmsg` entry and the kernel runs IP output once
//! per segment (raw sockets cannot do GSO) — about half of dnet's time. With `--encap udp`
//! the segments are cut in userspace as before (TCP/IP headers fixed up per segment, payload
//! not copied) and handed over as one message with `UDP_SEGMENT`: the kernel builds one
//! 64 KiB UDP packet and splits it into datagrams at the device, or not at all when the device
//! (veth) passes GSO packets on and the receiver reads them with `UDP_GRO`.

use super::batch::TxBatch;
use super::worker::Worker;
use crate::offload::{self, MAX_HEADERS};
use crate::switch::{DropReason, Event, PortId};
use crate::wire::gre;
use crate::wire::vnet::VnetHdr;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;

use super::batch::{set_udp_segment, GSO_MAX_BYTES as MAX_GSO_BYTES, GSO_MAX_SEGS as MAX_SEGS};

const HDR_ROOM: usize = gre::MAX_HEADER_LEN + MAX_HEADERS;
/// Outer IPv4 + UDP header bytes.
pub(super) const OUTER_IP_UDP: usize = 28;

/// Per-worker scratch for one GSO message: a GRE + Ethernet/IP/TCP header per segment, and
/// two iovecs per segment (header, payload in place). Allocated once.
pub struct GsoTx {
    hdrs: Box<[[u8; HDR_ROOM]]>,
    iov: Box<[libc::iovec]>,
    /// Set after the kernel refused a GSO send (no checksum offload on the route's device):
    /// this worker then sends segments one by one.
    pub broken: bool,
}

// SAFETY: the iovec pointers are only filled and used within one `send` call.
unsafe impl Send for GsoTx {}

impl Default for GsoTx {
    fn default() -> Self {
        GsoTx {
            hdrs: vec![[0u8; HDR_ROOM]; MAX_SEGS].into_boxed_slice(),
            // SAFETY (zeroed): plain C struct.
            iov: (0..2 * MAX_SEGS)
                .map(|_| unsafe { std::mem::zeroed() })
                .collect(),
            broken: false,
        }
    }
}

/// One message being filled.
struct Msg {
    segs: usize,
    seg_len: usize,
    bytes: usize,
}

impl Worker {
    /// Sends the TCP super-frame `frame` (offload header `h`) to tunnel `port` as UDP GSO
    /// messages. Anything queued in `tx` is sent first, so frames keep their order.
    pub(super) fn send_udp_gso(
        &self,
        gso: &mut GsoTx,
        tx: &mut TxBatch,
        port: PortId,
        frame: &[u8],
        h: &VnetHdr,
    ) {
        if !tx.is_empty() {
            self.flush(tx);
        }
        let h = self.fit_gso(port, frame, h);
        let dest = &self.dest[usize::from(port)];
        let fd = self.send_fd(frame);
        let mut m = Msg {
            segs: 0,
            seg_len: 0,
            bytes: 0,
        };
        let GsoTx { hdrs, iov, broken } = gso;
        let r = offload::gso::segment(frame, &h, |headers, payload| {
            let seq = if self.gre.seq {
                self.seq[usize::from(port)].fetch_add(1, Ordering::Relaxed)
            } else {
                0
            };
            let repr = self.gre.repr(seq);
            let gl = repr.header_len();
            let len = gl + headers.len() + payload.len();
            // A message holds equal segments (the last may be shorter) up to the size limit.
            if m.segs > 0
                && (m.segs == MAX_SEGS
                    || len > m.seg_len
                    || m.bytes + len > MAX_GSO_BYTES
                    || m.seg_len * (m.segs + 1) > MAX_GSO_BYTES)
            {
                self.send_msg(fd, dest, iov, &mut m, port, broken);
            }
            let room = &mut hdrs[m.segs];
            room[gl..gl + headers.len()].copy_from_slice(headers);
            let (g, rest) = room.split_at_mut(gl);
            repr.emit_parts(g, &[&rest[..headers.len()], payload]);
            iov[2 * m.segs] = libc::iovec {
                iov_base: room.as_mut_ptr().cast(),
                iov_len: gl + headers.len(),
            };
            iov[2 * m.segs + 1] = libc::iovec {
                iov_base: payload.as_ptr() as *mut libc::c_void,
                iov_len: payload.len(),
            };
            if m.segs == 0 {
                m.seg_len = len;
            }
            m.segs += 1;
            m.bytes += len;
            if len < m.seg_len {
                // A short segment ends a message.
                self.send_msg(fd, dest, iov, &mut m, port, broken);
            }
        });
        if m.segs > 0 {
            self.send_msg(fd, dest, iov, &mut m, port, broken);
        }
        if r.is_err() {
            self.core.counters().dropped(DropReason::BadOffload);
        }
    }

    /// Sends the `m.segs` segments in `iov` as one message (with `UDP_SEGMENT` when there are
    /// several) and counts them.
    fn send_msg(
        &self,
        fd: RawFd,
        dest: &libc::sockaddr_in,
        iov: &mut [libc::iovec],
        m: &mut Msg,
        port: PortId,
        broken: &mut bool,
    ) {
        let c = self.core.counters();
        let gre_len = self.gre.header_len();
        let segs = m.segs;
        let seg_len = m.seg_len as u16;
        let inner = m.bytes - segs * gre_len;
        *m = Msg {
            segs: 0,
            seg_len: 0,
            bytes: 0,
        };
        // The kernel cannot fragment a GSO datagram: segments that do not fit the path (outer
        // DF off, or a path MTU that just shrank) go one by one, fragmented or refused there.
        let fits = self
            .core
            .path_mtu(port)
            .map_or(true, |m| usize::from(seg_len) + OUTER_IP_UDP <= m as usize);
        if segs > 1 && !*broken && fits {
            match sendmsg(fd, dest, &mut iov[..2 * segs], Some(seg_len)) {
                Ok(()) => {
                    c.tx_many(port, segs as u64, inner);
                    c.event(Event::UdpGsoSent);
                    return;
                }
                Err(libc::EMSGSIZE | libc::EINVAL) => {
                    // Larger than the path now: re-read it, and let each segment meet it.
                    self.pmtu.too_big();
                }
                Err(e @ (libc::EIO | libc::EOPNOTSUPP)) => {
                    // No checksum offload on the way out (a real NIC without it): the kernel
                    // cannot segment UDP for us. Send one by one from now on.
                    *broken = true;
                    log::warn!(
                        "worker {}: UDP GSO refused ({}); sending GRE-in-UDP segments one by one",
                        self.id,
                        std::io::Error::from_raw_os_error(e)
                    );
                }
                Err(e) => {
                    self.count_tx_error(e, segs);
                    return;
                }
            }
        }
        for s in 0..segs {
            let len = iov[2 * s].iov_len + iov[2 * s + 1].iov_len;
            match sendmsg(fd, dest, &mut iov[2 * s..2 * s + 2], None) {
                Ok(()) => c.tx(port, len - gre_len),
                Err(e) => self.count_tx_error(e, 1),
            }
        }
    }

    fn count_tx_error(&self, errno: i32, n: usize) {
        let c = self.core.counters();
        let why = match errno {
            libc::EMSGSIZE => {
                self.pmtu.too_big();
                DropReason::TooBig
            }
            libc::EAGAIN | libc::ENOBUFS => DropReason::TxQueueFull,
            _ => DropReason::TxError,
        };
        for _ in 0..n {
            c.dropped(why);
        }
    }
}

/// One `sendmsg` of `iov` on `fd` to `dest`, with a `UDP_SEGMENT` control message when
/// `segment` is given. Returns the errno on failure.
fn sendmsg(
    fd: RawFd,
    dest: &libc::sockaddr_in,
    iov: &mut [libc::iovec],
    segment: Option<u16>,
) -> Result<(), i32> {
    // Room for one cmsghdr + u16, aligned.
    let mut cbuf = [0u64; 4];
    // SAFETY (zeroed): msghdr is a plain C struct.
    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
    h.msg_name = dest as *const libc::sockaddr_in as *mut libc::c_void;
    h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    h.msg_iov = iov.as_mut_ptr();
    h.msg_iovlen = iov.len();
    if let Some(sz) = segment {
        set_udp_segment(&mut h, &mut cbuf, sz);
    }
    loop {
        // SAFETY: every pointer in `h` is valid for the call (iov entries point into the
        // caller's header room and frame).
        let rc = unsafe { libc::sendmsg(fd, &h, libc::MSG_DONTWAIT) };
        if rc >= 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        if e != libc::EINTR {
            return Err(e);
        }
    }
}
