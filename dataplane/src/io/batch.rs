//! Batched socket I/O: `recvmmsg` into preallocated slots, `sendmmsg` of GRE header + frame as
//! two iovecs per message (the frame is never copied to prepend a header). Over GRE-in-UDP,
//! runs of equal-sized datagrams to one peer leave as single UDP GSO messages.
//!
//! Everything is allocated once per worker; nothing here allocates per packet.

use crate::offload::MAX_HEADERS;
use crate::wire::gre;
use std::io;
use std::os::fd::RawFd;

/// Most datagrams per UDP GSO message (the kernel's `UDP_MAX_SEGMENTS` is 64 on older kernels).
pub const GSO_MAX_SEGS: usize = 64;
/// Largest UDP payload of one GSO message (65535 − IPv4 20 − UDP 8, with some room).
pub const GSO_MAX_BYTES: usize = 65_000;
/// `SOL_UDP` option / control message: the segment size of a GSO send.
pub const UDP_SEGMENT: i32 = 103;

/// Largest IPv4 packet (a reassembled one can be this big).
pub const SLOT_LEN: usize = 65_536;

/// Control-message room per receive slot: one `UDP_GRO` segment size (an int).
const CMSG_ROOM: usize = 32;

/// Receive slots for `recvmmsg`.
pub struct RxBatch {
    bufs: Box<[u8]>,
    iov: Box<[libc::iovec]>,
    msgs: Box<[libc::mmsghdr]>,
    /// Senders (GRE-in-UDP: the datagram's source names the peer).
    names: Box<[libc::sockaddr_in]>,
    /// Control messages, as u64 for cmsghdr alignment.
    cmsgs: Box<[[u64; CMSG_ROOM / 8]]>,
    n: usize,
}

// SAFETY: the raw pointers inside iovec/mmsghdr point into `bufs`, which moves with the batch;
// a batch is used by one thread at a time.
unsafe impl Send for RxBatch {}

impl RxBatch {
    /// `slots` receive slots of [`SLOT_LEN`] bytes.
    pub fn new(slots: usize) -> RxBatch {
        RxBatch {
            bufs: vec![0u8; slots * SLOT_LEN].into_boxed_slice(),
            // SAFETY (zeroed): iovec and mmsghdr are plain C structs; null/zero is valid.
            iov: (0..slots).map(|_| unsafe { std::mem::zeroed() }).collect(),
            msgs: (0..slots).map(|_| unsafe { std::mem::zeroed() }).collect(),
            // SAFETY (zeroed): plain C struct.
            names: (0..slots).map(|_| unsafe { std::mem::zeroed() }).collect(),
            cmsgs: vec![[0u64; CMSG_ROOM / 8]; slots].into_boxed_slice(),
            n: 0,
        }
    }

    /// Receives up to the number of slots without blocking; returns how many arrived.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let base = self.bufs.as_mut_ptr();
        for (i, (iov, m)) in self.iov.iter_mut().zip(self.msgs.iter_mut()).enumerate() {
            // SAFETY: i * SLOT_LEN is within bufs (slots * SLOT_LEN bytes).
            iov.iov_base = unsafe { base.add(i * SLOT_LEN) }.cast();
            iov.iov_len = SLOT_LEN;
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_in).cast();
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            m.msg_hdr.msg_control = self.cmsgs[i].as_mut_ptr().cast();
            m.msg_hdr.msg_controllen = CMSG_ROOM;
            m.msg_hdr.msg_flags = 0;
            m.msg_len = 0;
        }
        // SAFETY: msgs holds msgs.len() initialised headers whose iovecs point into bufs.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                self.msgs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            self.n = 0;
            return Err(io::Error::last_os_error());
        }
        self.n = n as usize;
        Ok(self.n)
    }

    /// Packet `i` of the last `recv`, or `None` when it was cut short (larger than a slot).
    #[inline]
    pub fn packet(&self, i: usize) -> Option<&[u8]> {
        let m = &self.msgs[i];
        if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        let len = (m.msg_len as usize).min(SLOT_LEN);
        Some(&self.bufs[i * SLOT_LEN..i * SLOT_LEN + len])
    }

    /// The sender of packet `i` of the last `recv`.
    #[inline]
    pub fn source(&self, i: usize) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::from(u32::from_be(self.names[i].sin_addr.s_addr))
    }

    /// For a GRE-in-UDP read that carries several datagrams coalesced by `UDP_GRO`: the size
    /// of each (the last may be shorter). `None`: one datagram.
    #[inline]
    pub fn segment_size(&self, i: usize) -> Option<usize> {
        let h = &self.msgs[i].msg_hdr;
        if h.msg_controllen < std::mem::size_of::<libc::cmsghdr>() {
            return None;
        }
        // SAFETY: the kernel wrote `msg_controllen` bytes of control messages into cmsgs[i],
        // which is aligned for cmsghdr; CMSG_FIRSTHDR/NXTHDR stay within that length.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == UDP_GRO_CMSG {
                    let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                    return (v > 0).then_some(v as usize);
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        None
    }
}

/// `UDP_GRO` control message type (same number as the socket option).
const UDP_GRO_CMSG: i32 = 104;

/// Outcome of flushing a [`TxBatch`], per message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxResult {
    /// Sent.
    Sent,
    /// EMSGSIZE: does not fit the path with DF set.
    TooBig,
    /// The socket buffer was full.
    QueueFull,
    /// Another error.
    Error,
}

/// Per-message header room: GRE, then (for a segment of a super-frame) its own Ethernet + IP
/// + TCP headers.
const HDR_ROOM: usize = gre::MAX_HEADER_LEN + MAX_HEADERS;

/// Messages waiting for one `sendmmsg`.
pub struct TxBatch {
    hdrs: Box<[[u8; HDR_ROOM]]>,
    iov: Box<[[libc::iovec; 2]]>,
    msgs: Box<[libc::mmsghdr]>,
    tag: Box<[(u16, u32)]>,
    /// The socket each message leaves from.
    fds: Box<[RawFd]>,
    n: usize,
    /// [`TxBatch::flush_udp_gso`]'s messages, one per run, their `UDP_SEGMENT` control
    /// messages (as u64 for alignment) and their runs (first message, count).
    gso: Box<[libc::mmsghdr]>,
    gso_cmsg: Box<[[u64; 4]]>,
    gso_runs: Box<[(usize, usize)]>,
    /// Whether the worker flushes this batch with [`TxBatch::flush_udp_gso`] (GRE-in-UDP, until
    /// the kernel refuses UDP GSO on the route).
    pub udp_gso: bool,
}

/// What [`TxBatch::flush_udp_gso`] did beyond [`TxBatch::flush`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GsoFlush {
    /// UDP GSO messages sent (each carried two or more datagrams).
    pub messages: u64,
    /// The kernel refused a GSO message with this errno; that message and the rest of the
    /// batch went one datagram per message instead.
    pub refused: Option<i32>,
}

/// The run of messages from `start` (of `n`) that can leave as one UDP GSO message: consecutive
/// messages to the same destination from the same socket (`dest(i)`), all as long as the
/// first but the last, which may be shorter, within [`GSO_MAX_SEGS`] and [`GSO_MAX_BYTES`].
/// Returns (count, segment size).
pub fn gso_run<K: PartialEq>(
    start: usize,
    n: usize,
    dest: impl Fn(usize) -> K,
    len: impl Fn(usize) -> usize,
) -> (usize, usize) {
    let (d, seg) = (dest(start), len(start));
    let mut k = 1;
    while start + k < n && k < GSO_MAX_SEGS && seg * (k + 1) <= GSO_MAX_BYTES {
        let (j, l) = (start + k, len(start + k));
        if dest(j) != d || l > seg || l == 0 {
            break;
        }
        k += 1;
        if l < seg {
            break;
        }
    }
    (k, seg)
}

// SAFETY: see RxBatch; the pointers are only dereferenced by the kernel during `flush`.
unsafe impl Send for TxBatch {}

impl TxBatch {
    /// Room for `cap` messages.
    pub fn new(cap: usize) -> TxBatch {
        TxBatch {
            hdrs: vec![[0u8; HDR_ROOM]; cap].into_boxed_slice(),
            // SAFETY (zeroed): plain C structs.
            iov: (0..cap).map(|_| unsafe { std::mem::zeroed() }).collect(),
            msgs: (0..cap).map(|_| unsafe { std::mem::zeroed() }).collect(),
            tag: vec![(0, 0); cap].into_boxed_slice(),
            fds: vec![-1; cap].into_boxed_slice(),
            n: 0,
            gso: (0..cap).map(|_| unsafe { std::mem::zeroed() }).collect(),
            gso_cmsg: vec![[0u64; 4]; cap].into_boxed_slice(),
            gso_runs: vec![(0, 0); cap].into_boxed_slice(),
            udp_gso: false,
        }
    }

    /// True when no more messages fit.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.n == self.msgs.len()
    }

    /// Number of queued messages.
    #[inline]
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Queues `frame` with GRE header `repr` to `dest`, to leave from socket `fd`; `tag`
    /// (port, frame length) comes back from [`TxBatch::flush`] for counting.
    ///
    /// # Safety
    /// `frame` and `*dest` must stay valid and unchanged until the next `flush`, and `fd` open.
    #[inline]
    pub unsafe fn push(
        &mut self,
        fd: RawFd,
        dest: *const libc::sockaddr_in,
        repr: &gre::Repr,
        frame: &[u8],
        tag: u16,
    ) {
        // SAFETY: forwarded contract.
        unsafe { self.push_parts(fd, dest, repr, &[], frame, tag) }
    }

    /// Queues a frame given as `headers` (copied next to the GRE header: at most
    /// [`MAX_HEADERS`] bytes) and `payload` (sent from where it is).
    ///
    /// # Safety
    /// `payload` and `*dest` must stay valid and unchanged until the next `flush`, and `fd`
    /// open.
    #[inline]
    pub unsafe fn push_parts(
        &mut self,
        fd: RawFd,
        dest: *const libc::sockaddr_in,
        repr: &gre::Repr,
        headers: &[u8],
        payload: &[u8],
        tag: u16,
    ) {
        debug_assert!(!self.is_full());
        let i = self.n;
        let gl = repr.header_len();
        let room = &mut self.hdrs[i];
        room[gl..gl + headers.len()].copy_from_slice(headers);
        let (g, rest) = room.split_at_mut(gl);
        repr.emit_parts(g, &[&rest[..headers.len()], payload]);
        self.iov[i] = [
            libc::iovec {
                iov_base: self.hdrs[i].as_mut_ptr().cast(),
                iov_len: gl + headers.len(),
            },
            libc::iovec {
                iov_base: payload.as_ptr() as *mut libc::c_void,
                iov_len: payload.len(),
            },
        ];
        let h = &mut self.msgs[i].msg_hdr;
        h.msg_name = dest as *mut libc::c_void;
        h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        h.msg_iov = self.iov[i].as_mut_ptr();
        h.msg_iovlen = 2;
        h.msg_control = std::ptr::null_mut();
        h.msg_controllen = 0;
        h.msg_flags = 0;
        self.tag[i] = (tag, (headers.len() + payload.len()) as u32);
        self.fds[i] = fd;
        self.n += 1;
    }

    /// Sends everything queued, one `sendmmsg` per run of messages from the same socket;
    /// calls `done(tag, frame_len, result)` once per message, then empties the batch. A
    /// message the kernel refuses is reported and skipped; the rest are still sent.
    pub fn flush(&mut self, done: impl FnMut(u16, u32, TxResult)) {
        self.flush_from(0, done);
    }

    /// Like [`TxBatch::flush`] on a UDP socket, but each run of equal-sized datagrams to one
    /// destination ([`gso_run`]) leaves as one message with `UDP_SEGMENT`: one pass through
    /// the kernel's UDP and IP output for the run, and, where the path passes GSO packets on
    /// (veth) and the peer reads with `UDP_GRO`, one receive on the other side too. `fits(tag,
    /// segment size)` says whether a run's segments fit its path (the kernel cannot fragment
    /// a GSO datagram). `done` is called once per datagram, as by `flush`.
    pub fn flush_udp_gso(
        &mut self,
        fits: impl Fn(u16, usize) -> bool,
        mut done: impl FnMut(u16, u32, TxResult),
    ) -> GsoFlush {
        let mut out = GsoFlush::default();
        let (mut runs, mut i, mut any) = (0, 0, false);
        while i < self.n {
            let (mut k, seg) = gso_run(
                i,
                self.n,
                |j| (self.msgs[j].msg_hdr.msg_name as usize, self.fds[j]),
                |j| self.iov[j][0].iov_len + self.iov[j][1].iov_len,
            );
            if k > 1 && !fits(self.tag[i].0, seg) {
                k = 1;
            }
            let m = &mut self.gso[runs].msg_hdr;
            *m = self.msgs[i].msg_hdr;
            if k > 1 {
                any = true;
                // The runs' [header, payload] iovec pairs lie next to each other in `iov`.
                m.msg_iov = self.iov[i].as_mut_ptr();
                m.msg_iovlen = 2 * k;
                set_udp_segment(m, &mut self.gso_cmsg[runs], seg as u16);
            }
            self.gso_runs[runs] = (i, k);
            runs += 1;
            i += k;
        }
        if !any {
            self.flush_from(0, done);
            return out;
        }
        let mut s = 0;
        while s < runs {
            // One call per stretch of runs leaving from the same socket.
            let fd = self.fds[self.gso_runs[s].0];
            let same = self.gso_runs[s..runs]
                .iter()
                .take_while(|r| self.fds[r.0] == fd)
                .count();
            // SAFETY: gso[s..s + same] were built above from messages whose pointers are
            // valid per push's contract until this flush returns.
            let e = match unsafe { sendmmsg(fd, &mut self.gso[s..s + same]) } {
                Ok(sent) => {
                    for &(first, k) in &self.gso_runs[s..s + sent] {
                        for &(t, l) in &self.tag[first..first + k] {
                            done(t, l, TxResult::Sent);
                        }
                        out.messages += u64::from(k > 1);
                    }
                    s += sent;
                    continue;
                }
                Err(e) => e,
            };
            let (first, k) = self.gso_runs[s];
            if k > 1
                && matches!(
                    e,
                    libc::EMSGSIZE | libc::EINVAL | libc::EIO | libc::EOPNOTSUPP
                )
            {
                out.refused = Some(e);
                self.flush_from(first, done);
                return out;
            }
            let r = TxResult::from_errno(e);
            // A full socket will not drain within this call: drop the rest of its stretch.
            let skip = if r == TxResult::QueueFull { same } else { 1 };
            let (end_first, end_k) = self.gso_runs[s + skip - 1];
            for &(t, l) in &self.tag[first..end_first + end_k] {
                done(t, l, r);
            }
            s += skip;
        }
        self.n = 0;
        out
    }

    /// Sends messages `start..` one datagram each, then empties the batch.
    fn flush_from(&mut self, mut start: usize, mut done: impl FnMut(u16, u32, TxResult)) {
        while start < self.n {
            let fd = self.fds[start];
            let same = self.fds[start..self.n]
                .iter()
                .take_while(|&&f| f == fd)
                .count();
            // SAFETY: msgs[start..start + same] were filled by push; their pointers are valid
            // per push's contract until this flush returns.
            let r = match unsafe { sendmmsg(fd, &mut self.msgs[start..start + same]) } {
                Ok(sent) => {
                    for &(t, l) in &self.tag[start..start + sent] {
                        done(t, l, TxResult::Sent);
                    }
                    start += sent;
                    continue;
                }
                Err(e) => TxResult::from_errno(e),
            };
            if r == TxResult::QueueFull {
                // A full socket will not drain within this call: drop the rest of its stretch.
                for &(t, l) in &self.tag[start..start + same] {
                    done(t, l, r);
                }
                start += same;
                continue;
            }
            let (t, l) = self.tag[start];
            done(t, l, r);
            start += 1;
        }
        self.n = 0;
    }
}

impl TxResult {
    /// What a failed send's `errno` means for its message.
    fn from_errno(e: i32) -> TxResult {
        match e {
            libc::EMSGSIZE => TxResult::TooBig,
            libc::EAGAIN | libc::ENOBUFS => TxResult::QueueFull,
            _ => TxResult::Error,
        }
    }
}

/// One `sendmmsg` of `msgs` on `fd` (retried on `EINTR`): how many left, or the errno of the
/// first that could not (none left).
///
/// # Safety
/// Every pointer in `msgs` must be valid for the call.
unsafe fn sendmmsg(fd: RawFd, msgs: &mut [libc::mmsghdr]) -> Result<usize, i32> {
    loop {
        // SAFETY: forwarded contract.
        let rc = unsafe {
            libc::sendmmsg(
                fd,
                msgs.as_mut_ptr(),
                msgs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if rc > 0 {
            return Ok(rc as usize);
        }
        match io::Error::last_os_error().raw_os_error().unwrap_or(0) {
            libc::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// Points `h`'s control data at `cbuf` and writes one `UDP_SEGMENT` message into it: the
/// kernel splits the message's payload into datagrams of `seg` bytes.
pub fn set_udp_segment(h: &mut libc::msghdr, cbuf: &mut [u64; 4], seg: u16) {
    h.msg_control = cbuf.as_mut_ptr().cast();
    // SAFETY: cbuf is 32 aligned bytes, more than CMSG_SPACE(2); the header and the segment
    // size are written inside it, through the pointers the CMSG macros derive from `h`.
    unsafe {
        h.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) as usize;
        let c = libc::CMSG_FIRSTHDR(h);
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs over messages given as (destination, length).
    fn runs(msgs: &[(usize, usize)]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < msgs.len() {
            let (k, seg) = gso_run(i, msgs.len(), |j| msgs[j].0, |j| msgs[j].1);
            out.push((k, seg));
            i += k;
        }
        out
    }

    #[test]
    fn runs_are_equal_sized_datagrams_to_one_peer_with_a_shorter_last() {
        assert_eq!(
            runs(&[(1, 80), (1, 80), (1, 80), (1, 50), (1, 80)]),
            vec![(4, 80), (1, 80)]
        );
        // A longer datagram or another peer starts a new run; so does anything after a short one.
        assert_eq!(
            runs(&[(1, 80), (1, 90), (2, 90), (2, 90), (1, 90)]),
            vec![(1, 80), (1, 90), (2, 90), (1, 90)]
        );
        assert_eq!(runs(&[(1, 80)]), vec![(1, 80)]);
    }

    #[test]
    fn runs_respect_the_kernels_segment_and_size_bounds() {
        let small = vec![(1, 60); 150];
        assert_eq!(runs(&small), vec![(64, 60), (64, 60), (22, 60)]);
        // 1400-byte segments: 46 fit in 65000 bytes.
        let big = vec![(1, 1400); 50];
        assert_eq!(runs(&big), vec![(46, 1400), (4, 1400)]);
        for (k, seg) in runs(&big).into_iter().chain(runs(&small)) {
            assert!(k <= GSO_MAX_SEGS && k * seg <= GSO_MAX_BYTES);
        }
    }
}
