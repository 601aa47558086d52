//! Batched socket I/O: `recvmmsg` into preallocated slots, and `sendmmsg` of messages made of a
//! small header (copied next to the others) and a payload sent from where it lies, so a frame
//! is never copied to prepend a GRE header. Over GRE-in-UDP, runs of equal-sized datagrams to
//! one destination leave as single `UDP_SEGMENT` (GSO) messages.
//!
//! Lifetimes are the compiler's business: a [`SendBatch<'a>`] takes payloads of lifetime
//! `'a` and sockets borrowed for `'a`, and cannot outlive them, so every pointer handed to the
//! kernel is live when `sendmmsg` runs. Everything is allocated once per worker.

use super::msghdr::{self, CmsgBuf};
use crate::datapath::SendOutcome;
use std::io;
use std::marker::PhantomData;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// Most datagrams per UDP GSO message (the kernel's `UDP_MAX_SEGMENTS` is 64 on older kernels).
pub const GSO_MAX_SEGS: usize = 64;
/// Largest UDP payload of one GSO message (65535 − IPv4 20 − UDP 8, with some room).
pub const GSO_MAX_BYTES: usize = 65_000;
/// Bytes of header room per message (a GRE header plus a segment's own Ethernet, IP and TCP
/// headers).
pub const HEADER_ROOM: usize = 160;
/// Largest IPv4 packet (a reassembled one can be this big).
pub const SLOT_LEN: usize = 65_536;

/// What the kernel made of one send, by `errno`.
pub fn outcome(errno: i32) -> SendOutcome {
    match errno {
        libc::EMSGSIZE => SendOutcome::TooBig,
        libc::EAGAIN | libc::ENOBUFS => SendOutcome::QueueFull,
        _ => SendOutcome::Error,
    }
}

/// Storage for the messages of one [`SendBatch`] at a time. `T` is what the caller tags each
/// message with, to learn its outcome.
pub struct SendQueue<T: Copy + Default> {
    room: Box<[[u8; HEADER_ROOM]]>,
    room_len: Box<[usize]>,
    /// Payload of each message, valid while the batch that pushed it lives: borrowed from the
    /// caller, or in `owned`.
    payload: Box<[(*const u8, usize)]>,
    /// Per message, room for a whole datagram the queue holds itself (a sealed one: it is
    /// encrypted in place, so it cannot be sent from where the frame lies).
    owned: Box<[u8]>,
    owned_slot: usize,
    dest: Box<[libc::sockaddr_in]>,
    fd: Box<[RawFd]>,
    tag: Box<[T]>,
    n: usize,
    /// Rebuilt from the fields above by every flush; never read between flushes.
    iov: Box<[[libc::iovec; 2]]>,
    msgs: Box<[libc::mmsghdr]>,
    gso: Box<[libc::mmsghdr]>,
    gso_cmsg: Box<[CmsgBuf]>,
    gso_runs: Box<[(usize, usize)]>,
    udp_gso: bool,
}

// SAFETY: the raw pointers in a SendQueue point into buffers borrowed by the SendBatch that
// wrote them, and are only dereferenced (by the kernel) within that batch's flush, on the thread
// that holds the batch. Moving the empty queue to another thread moves no borrow.
unsafe impl<T: Copy + Default + Send> Send for SendQueue<T> {}

/// What [`SendBatch::flush_udp_gso`] did beyond a plain flush.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GsoFlush {
    /// UDP GSO messages sent (each carried two or more datagrams).
    pub messages: u64,
    /// The kernel refused a GSO message with this errno; that message and the rest of the
    /// batch went one datagram per message instead.
    pub refused: Option<i32>,
}

impl<T: Copy + Default> SendQueue<T> {
    /// Room for `cap` messages, borrowed from the caller ([`SendBatch::push`]).
    pub fn new(cap: usize) -> SendQueue<T> {
        SendQueue::with_owned(cap, 0)
    }

    /// Room for `cap` messages, each of which may also be a datagram of up to `owned_slot`
    /// bytes that the queue holds itself ([`SendBatch::push_owned`]).
    pub fn with_owned(cap: usize, owned_slot: usize) -> SendQueue<T> {
        let zero_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        SendQueue {
            room: vec![[0u8; HEADER_ROOM]; cap].into_boxed_slice(),
            room_len: vec![0; cap].into_boxed_slice(),
            payload: vec![(std::ptr::null(), 0); cap].into_boxed_slice(),
            owned: vec![0u8; cap * owned_slot].into_boxed_slice(),
            owned_slot,
            dest: vec![msghdr::sockaddr(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)); cap]
                .into_boxed_slice(),
            fd: vec![-1; cap].into_boxed_slice(),
            tag: vec![T::default(); cap].into_boxed_slice(),
            n: 0,
            iov: vec![[zero_iov; 2]; cap].into_boxed_slice(),
            msgs: (0..cap).map(|_| msghdr::empty_mmsg()).collect(),
            gso: (0..cap).map(|_| msghdr::empty_mmsg()).collect(),
            gso_cmsg: vec![CmsgBuf::default(); cap].into_boxed_slice(),
            gso_runs: vec![(0, 0); cap].into_boxed_slice(),
            udp_gso: false,
        }
    }

    /// An empty batch that may hold payloads and sockets borrowed for `'a`.
    pub fn batch<'a>(&'a mut self) -> SendBatch<'a, T> {
        self.n = 0;
        SendBatch {
            q: self,
            _borrows: PhantomData,
        }
    }

    /// Whether runs of equal datagrams may be sent as UDP GSO messages (GRE-in-UDP sockets,
    /// until the kernel refuses).
    pub fn set_udp_gso(&mut self, on: bool) {
        self.udp_gso = on;
    }
}

/// Messages waiting for `sendmmsg`, borrowing their payloads and sockets for `'a`.
pub struct SendBatch<'a, T: Copy + Default> {
    q: &'a mut SendQueue<T>,
    _borrows: PhantomData<(&'a [u8], BorrowedFd<'a>)>,
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

impl<'a, T: Copy + Default> SendBatch<'a, T> {
    /// True when no more messages fit.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.q.n == self.q.msgs.len()
    }

    /// True when empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.q.n == 0
    }

    /// Number of queued messages.
    #[inline]
    pub fn len(&self) -> usize {
        self.q.n
    }

    /// Whether flushes send runs as UDP GSO messages.
    #[inline]
    pub fn udp_gso(&self) -> bool {
        self.q.udp_gso
    }

    /// Turns UDP GSO off for good (the kernel refused it on this route).
    pub fn disable_udp_gso(&mut self) {
        self.q.udp_gso = false;
    }

    /// Queues a message to `dest` from socket `fd`: first the header bytes `header` writes
    /// into the room it is given (returning how many), then `payload`, sent from where it is.
    /// `tag` comes back from the flush with the message's outcome. The caller checks
    /// [`SendBatch::is_full`] first.
    ///
    /// # Panics
    /// If the batch is full.
    #[inline]
    pub fn push(
        &mut self,
        fd: BorrowedFd<'a>,
        dest: SocketAddrV4,
        header: impl FnOnce(&mut [u8; HEADER_ROOM]) -> usize,
        payload: &'a [u8],
        tag: T,
    ) {
        let q = &mut *self.q;
        let i = q.n;
        assert!(i < q.msgs.len(), "push into a full SendBatch");
        let hl = header(&mut q.room[i]);
        q.room_len[i] = hl.min(HEADER_ROOM);
        q.payload[i] = (payload.as_ptr(), payload.len());
        q.dest[i] = msghdr::sockaddr(dest);
        q.fd[i] = fd.as_raw_fd();
        q.tag[i] = tag;
        q.n += 1;
    }

    /// Largest datagram [`SendBatch::push_owned`] takes.
    #[inline]
    pub fn owned_room(&self) -> usize {
        self.q.owned_slot
    }

    /// Queues a datagram of up to [`SendBatch::owned_room`] bytes that the queue holds itself:
    /// `fill` writes it into the room it is given and returns its length (`None`: nothing is
    /// queued). For datagrams that must be changed after they are laid out (sealed in place).
    ///
    /// # Panics
    /// If the batch is full.
    #[inline]
    pub fn push_owned(
        &mut self,
        fd: BorrowedFd<'a>,
        dest: SocketAddrV4,
        fill: impl FnOnce(&mut [u8]) -> Option<usize>,
        tag: T,
    ) -> bool {
        let q = &mut *self.q;
        let i = q.n;
        assert!(i < q.msgs.len(), "push into a full SendBatch");
        let slot = &mut q.owned[i * q.owned_slot..(i + 1) * q.owned_slot];
        let Some(len) = fill(slot) else {
            return false;
        };
        let len = len.min(slot.len());
        q.room_len[i] = 0;
        q.payload[i] = (slot.as_ptr(), len);
        q.dest[i] = msghdr::sockaddr(dest);
        q.fd[i] = fd.as_raw_fd();
        q.tag[i] = tag;
        q.n += 1;
        true
    }

    /// Points message `i`'s `msghdr` (and iovecs) at its stored header, payload and address.
    fn build(&mut self, i: usize) {
        let q = &mut *self.q;
        q.iov[i] = [
            libc::iovec {
                iov_base: q.room[i].as_mut_ptr().cast(),
                iov_len: q.room_len[i],
            },
            libc::iovec {
                iov_base: q.payload[i].0 as *mut libc::c_void,
                iov_len: q.payload[i].1,
            },
        ];
        q.msgs[i].msg_hdr = msghdr::header(&mut q.dest[i], &mut q.iov[i]);
    }

    fn msg_len(&self, i: usize) -> usize {
        self.q.room_len[i] + self.q.payload[i].1
    }

    /// Sends everything queued, one `sendmmsg` per stretch of messages from the same socket;
    /// calls `done(tag, outcome)` once per message, then empties the batch. A message the
    /// kernel refuses is reported and skipped; the rest are still sent.
    pub fn flush(&mut self, done: impl FnMut(T, SendOutcome)) {
        for i in 0..self.q.n {
            self.build(i);
        }
        self.flush_from(0, done);
    }

    /// Like [`SendBatch::flush`], but each run of equal-sized datagrams to one destination
    /// ([`gso_run`]) leaves as one message with `UDP_SEGMENT`: one pass through the kernel's
    /// UDP and IP output for the run and, where the path passes GSO packets on (veth) and the
    /// peer reads with `UDP_GRO`, one receive on the other side too. `fits(tag, segment size)`
    /// says whether a run's datagrams fit its path (the kernel cannot fragment a GSO
    /// datagram). Without UDP GSO ([`SendBatch::udp_gso`]) this is a plain flush.
    pub fn flush_udp_gso(
        &mut self,
        fits: impl Fn(T, usize) -> bool,
        mut done: impl FnMut(T, SendOutcome),
    ) -> GsoFlush {
        let mut out = GsoFlush::default();
        for i in 0..self.q.n {
            self.build(i);
        }
        if !self.q.udp_gso {
            self.flush_from(0, done);
            return out;
        }
        let n = self.q.n;
        let (mut runs, mut i, mut any) = (0, 0, false);
        while i < n {
            let (mut k, seg) = {
                let q = &*self.q;
                gso_run(
                    i,
                    n,
                    |j| {
                        let d = &q.dest[j];
                        (d.sin_addr.s_addr, d.sin_port, q.fd[j])
                    },
                    |j| self.msg_len(j),
                )
            };
            if k > 1 && !fits(self.q.tag[i], seg) {
                k = 1;
            }
            let q = &mut *self.q;
            q.gso[runs].msg_hdr = q.msgs[i].msg_hdr;
            if k > 1 {
                any = true;
                let m = &mut q.gso[runs].msg_hdr;
                // The run's [header, payload] iovec pairs lie next to each other in `iov`.
                m.msg_iov = q.iov[i].as_mut_ptr();
                m.msg_iovlen = 2 * k;
                msghdr::set_udp_segment(m, &mut q.gso_cmsg[runs], seg as u16);
            }
            q.gso_runs[runs] = (i, k);
            runs += 1;
            i += k;
        }
        if !any {
            self.flush_from(0, done);
            return out;
        }
        let q = &mut *self.q;
        let mut s = 0;
        while s < runs {
            // One call per stretch of runs leaving from the same socket.
            let fd = q.fd[q.gso_runs[s].0];
            let same = q.gso_runs[s..runs]
                .iter()
                .take_while(|r| q.fd[r.0] == fd)
                .count();
            // SAFETY: gso[s..s + same] were built above from this batch's messages; every
            // pointer in them is to the queue's own arrays or to payloads borrowed for 'a,
            // all alive and unchanged during the call.
            let e = match unsafe { sendmmsg(fd, &mut q.gso[s..s + same]) } {
                Ok(sent) => {
                    for &(first, k) in &q.gso_runs[s..s + sent] {
                        for &t in &q.tag[first..first + k] {
                            done(t, SendOutcome::Sent);
                        }
                        out.messages += u64::from(k > 1);
                    }
                    s += sent;
                    continue;
                }
                Err(e) => e,
            };
            let (first, k) = q.gso_runs[s];
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
            let r = outcome(e);
            // A full socket will not drain within this call: drop the rest of its stretch.
            let skip = if r == SendOutcome::QueueFull { same } else { 1 };
            let (end_first, end_k) = q.gso_runs[s + skip - 1];
            for &t in &q.tag[first..end_first + end_k] {
                done(t, r);
            }
            s += skip;
        }
        self.q.n = 0;
        out
    }

    /// Sends built messages `start..` one datagram each, then empties the batch.
    fn flush_from(&mut self, mut start: usize, mut done: impl FnMut(T, SendOutcome)) {
        let q = &mut *self.q;
        while start < q.n {
            let fd = q.fd[start];
            let same = q.fd[start..q.n].iter().take_while(|&&f| f == fd).count();
            // SAFETY: msgs[start..start + same] were built by `build` from this batch's
            // messages: their pointers are to the queue's own arrays or to payloads borrowed
            // for 'a, all alive and unchanged during the call.
            let r = match unsafe { sendmmsg(fd, &mut q.msgs[start..start + same]) } {
                Ok(sent) => {
                    for &t in &q.tag[start..start + sent] {
                        done(t, SendOutcome::Sent);
                    }
                    start += sent;
                    continue;
                }
                Err(e) => outcome(e),
            };
            if r == SendOutcome::QueueFull {
                // A full socket will not drain within this call: drop the rest of its stretch.
                for &t in &q.tag[start..start + same] {
                    done(t, r);
                }
                start += same;
                continue;
            }
            done(q.tag[start], r);
            start += 1;
        }
        q.n = 0;
    }
}

/// One `sendmmsg` of `msgs` on `fd` (retried on `EINTR`): how many left, or the errno of the
/// first that could not (none left).
///
/// # Safety
/// Every pointer in `msgs` must be valid for the call.
unsafe fn sendmmsg(fd: RawFd, msgs: &mut [libc::mmsghdr]) -> Result<usize, i32> {
    loop {
        // SAFETY: the caller guarantees every pointer in `msgs` is valid.
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

/// Sends one message made of `parts` to `dest` from `fd` now, with a `UDP_SEGMENT` size when
/// `segment` is given. Returns the errno on failure.
pub fn send_one(
    fd: BorrowedFd<'_>,
    dest: SocketAddrV4,
    parts: &[&[u8]],
    segment: Option<u16>,
) -> Result<(), i32> {
    const MAX_PARTS: usize = 4;
    let empty = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    let mut iov = [empty; MAX_PARTS];
    let n = parts.len().min(MAX_PARTS);
    for (v, p) in iov.iter_mut().zip(parts) {
        v.iov_base = p.as_ptr() as *mut libc::c_void;
        v.iov_len = p.len();
    }
    let mut name = msghdr::sockaddr(dest);
    let mut h = msghdr::header(&mut name, &mut iov[..n]);
    let mut cbuf = CmsgBuf::default();
    if let Some(s) = segment {
        msghdr::set_udp_segment(&mut h, &mut cbuf, s);
    }
    loop {
        // SAFETY: `h` points at `name`, `iov` (whose entries point into `parts`) and `cbuf`,
        // all alive on this stack frame for the duration of the call.
        let rc = unsafe { libc::sendmsg(fd.as_raw_fd(), &h, libc::MSG_DONTWAIT) };
        if rc >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        if e != libc::EINTR {
            return Err(e);
        }
    }
}

/// One received message.
#[derive(Debug)]
pub struct RecvMsg<'a> {
    /// What arrived (for a raw socket, the whole IPv4 packet), to read or change in place.
    pub data: &'a mut [u8],
    /// The sender's address.
    pub source: Ipv4Addr,
    /// For a UDP read that carries several datagrams coalesced by `UDP_GRO`: the size of each
    /// (the last may be shorter).
    pub segment_size: Option<usize>,
    /// It was longer than a slot and was cut short.
    pub truncated: bool,
}

/// Receive slots for `recvmmsg`.
pub struct RecvQueue {
    bufs: Box<[u8]>,
    iov: Box<[libc::iovec]>,
    msgs: Box<[libc::mmsghdr]>,
    names: Box<[libc::sockaddr_in]>,
    cmsgs: Box<[CmsgBuf]>,
    n: usize,
}

// SAFETY: the raw pointers inside the iovecs and mmsghdrs are rebuilt by every `recv` to point
// into the queue's own boxed arrays, which move with it; a queue is used by one thread at a time.
unsafe impl Send for RecvQueue {}

impl RecvQueue {
    /// `slots` receive slots of [`SLOT_LEN`] bytes.
    pub fn new(slots: usize) -> RecvQueue {
        let zero_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        RecvQueue {
            bufs: vec![0u8; slots * SLOT_LEN].into_boxed_slice(),
            iov: vec![zero_iov; slots].into_boxed_slice(),
            msgs: (0..slots).map(|_| msghdr::empty_mmsg()).collect(),
            names: vec![msghdr::sockaddr(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)); slots]
                .into_boxed_slice(),
            cmsgs: vec![CmsgBuf::default(); slots].into_boxed_slice(),
            n: 0,
        }
    }

    /// Receives up to the number of slots from `fd` without blocking; returns how many
    /// arrived (read them with [`RecvQueue::get`]).
    pub fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.n = 0;
        for (i, slot) in self.bufs.chunks_exact_mut(SLOT_LEN).enumerate() {
            self.iov[i] = libc::iovec {
                iov_base: slot.as_mut_ptr().cast(),
                iov_len: SLOT_LEN,
            };
            let m = &mut self.msgs[i];
            m.msg_hdr = msghdr::header(&mut self.names[i], std::slice::from_mut(&mut self.iov[i]));
            msghdr::set_control_room(&mut m.msg_hdr, &mut self.cmsgs[i]);
            m.msg_len = 0;
        }
        // SAFETY: every header points at its own name, iovec (into `bufs`) and control room,
        // all owned by `self` and not touched during the call.
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                self.msgs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.n = n as usize;
        Ok(self.n)
    }

    /// The messages of the last `recv`, each writable in place (to open a sealed datagram).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = RecvMsg<'_>> {
        let n = self.n;
        self.bufs
            .chunks_exact_mut(SLOT_LEN)
            .zip(self.msgs.iter())
            .zip(self.names.iter())
            .take(n)
            .map(|((slot, m), name)| {
                let len = (m.msg_len as usize).min(SLOT_LEN);
                RecvMsg {
                    data: &mut slot[..len],
                    source: *msghdr::from_sockaddr(name).ip(),
                    segment_size: msghdr::udp_gro_segment(&m.msg_hdr),
                    truncated: m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

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

    fn pair() -> (UdpSocket, UdpSocket, SocketAddrV4) {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = match rx.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        (tx, rx, to)
    }

    fn recv_all(q: &mut RecvQueue, rx: &UdpSocket, want: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        for _ in 0..1000 {
            if got.len() >= want {
                break;
            }
            match q.recv(rx.as_fd()) {
                Ok(_) => got.extend(q.iter_mut().map(|m| m.data.to_vec())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::yield_now();
                }
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    #[test]
    fn a_batch_sends_header_and_payload_as_one_datagram_each() {
        let (tx, rx, to) = pair();
        let payloads: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 10 + usize::from(i)]).collect();
        let mut q = SendQueue::new(4);
        let mut outcomes = Vec::new();
        {
            let mut b = q.batch();
            for (i, p) in payloads.iter().enumerate() {
                if b.is_full() {
                    b.flush(|t, r| outcomes.push((t, r)));
                }
                b.push(
                    tx.as_fd(),
                    to,
                    |room| {
                        room[..2].copy_from_slice(&[0xab, i as u8]);
                        2
                    },
                    p,
                    (i as u16, p.len() as u32),
                );
            }
            b.flush(|t, r| outcomes.push((t, r)));
        }
        assert_eq!(outcomes.len(), 5);
        assert!(outcomes.iter().all(|(_, r)| *r == SendOutcome::Sent));
        let mut rq = RecvQueue::new(8);
        let got = recv_all(&mut rq, &rx, 5);
        for (i, (g, p)) in got.iter().zip(&payloads).enumerate() {
            assert_eq!(&g[..2], &[0xab, i as u8]);
            assert_eq!(&g[2..], &p[..]);
        }
    }

    #[test]
    fn udp_gso_runs_arrive_as_separate_datagrams() {
        let (tx, rx, to) = pair();
        let payload = [7u8; 100];
        let mut q = SendQueue::new(16);
        q.set_udp_gso(true);
        let mut sent = 0;
        let f = {
            let mut b = q.batch();
            for i in 0..10u8 {
                b.push(
                    tx.as_fd(),
                    to,
                    |room| {
                        room[0] = i;
                        1
                    },
                    if i == 9 { &payload[..50] } else { &payload },
                    (0, 0),
                );
            }
            b.flush_udp_gso(
                |_, _| true,
                |_, r| sent += usize::from(r == SendOutcome::Sent),
            )
        };
        assert_eq!(sent, 10);
        assert_eq!(f.refused, None, "loopback takes UDP GSO");
        assert_eq!(f.messages, 1, "one GSO message for the whole run");
        let mut rq = RecvQueue::new(16);
        let got = recv_all(&mut rq, &rx, 10);
        assert_eq!(got.len(), 10);
        for (i, g) in got.iter().enumerate() {
            assert_eq!(g[0], i as u8);
            assert_eq!(g.len(), if i == 9 { 51 } else { 101 });
        }
    }

    #[test]
    fn send_one_joins_its_parts() {
        let (tx, rx, to) = pair();
        send_one(tx.as_fd(), to, &[b"ab", b"", b"cde"], None).unwrap();
        let mut rq = RecvQueue::new(2);
        let got = recv_all(&mut rq, &rx, 1);
        assert_eq!(got, vec![b"abcde".to_vec()]);
        let m = rq.iter_mut().next().unwrap();
        assert!(!m.truncated);
        assert_eq!(m.source, Ipv4Addr::LOCALHOST);
    }
}
