//! `AF_PACKET` sockets with memory-mapped rings (packet(7)), for plain GRE at speed.
//!
//! - [`TxRing`]: a `PACKET_TX_RING` (TPACKET_V2) on the underlay device with
//!   `PACKET_QDISC_BYPASS`. The caller writes whole Ethernet frames into free slots; one
//!   `sendto` hands every committed slot to the driver, with no routing, IP output, netfilter
//!   or qdisc on the way.
//! - [`RxRing`]: a `PACKET_RX_RING` (TPACKET_V2: one frame per packet, handed over, and a
//!   sleeping reader woken, at once) bound to IPv4 on the underlay device, in a
//!   `PACKET_FANOUT` group (reassembly first, then a flow hash). A classic BPF filter decides
//!   in the kernel which packets are copied in. TPACKET_V3 blocks were measured too: they
//!   wake the reader once per block, saving a little CPU, but hand a packet over only when
//!   its block fills or times out (a 1 ms timeout is a 4 ms tick here), which added 1.4 to
//!   1.7 ms to every round trip.
//!
//! Slots and blocks are owned either by the kernel or by us, as their status word says; the
//! status is read and written atomically (acquire/release), the rest of a slot only while we
//! own it. Which slot is next, and what became of a flush, is kept by [`TxBook`], a plain
//! struct with no memory behind it, so the bookkeeping is unit-tested without a kernel.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

const TPACKET_V2: libc::c_int = libc::tpacket_versions::TPACKET_V2 as libc::c_int;
/// Where a TX slot's frame starts: the kernel reads it right after the TPACKET_V2 header
/// (without room for the address it does not use).
pub const TX_DATA_OFFSET: usize = libc::TPACKET2_HDRLEN - std::mem::size_of::<libc::sockaddr_ll>();
/// Where an RX frame's `sockaddr_ll` starts, after the aligned header.
const V2_SLL_OFFSET: usize = align16(std::mem::size_of::<libc::tpacket2_hdr>());
/// Offset of `sll_pkttype` inside `sockaddr_ll`.
const SLL_PKTTYPE: usize = 10;
/// Where the kernel puts an IPv4 packet in a V2 RX frame of a `SOCK_DGRAM` socket
/// (`TPACKET_ALIGN(TPACKET2_HDRLEN) + 16`); the frame size must leave room for the packet
/// after it.
pub const RX_V2_NET_OFFSET: usize = align16(libc::TPACKET2_HDRLEN) + 16;

const fn align16(x: usize) -> usize {
    (x + 15) & !15
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn setsockopt<T>(fd: BorrowedFd<'_>, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: passes a pointer to `v` and its exact size; the kernel only reads it.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            name,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

fn getsockopt_int(fd: BorrowedFd<'_>, name: libc::c_int) -> io::Result<u32> {
    let mut v: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: passes a pointer to one u32 and its size; the kernel writes at most that.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            name,
            (&mut v as *mut u32).cast(),
            &mut len,
        )
    })?;
    Ok(v)
}

fn sockaddr_ll(ifindex: u32, protocol: u16) -> libc::sockaddr_ll {
    libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: protocol.to_be(),
        sll_ifindex: ifindex as libc::c_int,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    }
}

/// A new `AF_PACKET` socket of `kind` (`SOCK_RAW` or `SOCK_DGRAM`) that receives nothing
/// until bound with a protocol.
fn packet_socket(kind: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the returned descriptor is owned by the OwnedFd below.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_PACKET,
            kind | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bind(fd: BorrowedFd<'_>, ifindex: u32, protocol: u16) -> io::Result<()> {
    let sll = sockaddr_ll(ifindex, protocol);
    // SAFETY: passes a sockaddr_ll and its exact size.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Attaches a classic BPF program (`SO_ATTACH_FILTER`).
fn attach_filter(fd: BorrowedFd<'_>, prog: &[libc::sock_filter]) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `prog`, alive for the call; the kernel copies the program.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// A shared mapping of a socket's ring, unmapped on drop.
struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory shared with the kernel; the owner (one worker thread at
// a time) accesses it only as the slot status protocol allows.
unsafe impl Send for Mapping {}

impl Mapping {
    fn new(fd: BorrowedFd<'_>, len: usize) -> io::Result<Mapping> {
        // SAFETY: maps `len` bytes of the socket's ring (set up just before); the result is
        // checked for MAP_FAILED and owned by the Mapping, which unmaps it exactly once.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Mapping { base, len })
    }

    /// The 32-bit word at `off`, shared with the kernel.
    #[inline]
    fn word(&self, off: usize) -> &AtomicU32 {
        assert!(off % 4 == 0 && off + 4 <= self.len);
        // SAFETY: in bounds and 4-aligned (the mapping is page-aligned); a frame's status word
        // is accessed atomically by us and (with its own barriers) the kernel, which writes
        // nothing else of a frame while we own it, so our plain reads of the rest never race.
        unsafe { &*self.base.as_ptr().add(off).cast::<AtomicU32>() }
    }

    /// `len` bytes at `off` of a slot we own.
    #[inline]
    fn bytes(&self, off: usize, len: usize) -> &[u8] {
        assert!(off.checked_add(len).is_some_and(|e| e <= self.len));
        // SAFETY: in bounds; the caller owns the slot, so the kernel does not write these bytes
        // while the borrow lives (it only takes the slot back after we release it).
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(off), len) }
    }

    /// `len` writable bytes at `off` of a slot we own.
    #[inline]
    fn bytes_mut(&mut self, off: usize, len: usize) -> &mut [u8] {
        assert!(off.checked_add(len).is_some_and(|e| e <= self.len));
        // SAFETY: in bounds and exclusive (`&mut self`); the kernel does not read the slot
        // until we commit it.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(off), len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region mmap returned, once; no borrow of it outlives
        // `self` (they all borrow the Mapping).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// Geometry of a ring: `frames` slots of `frame` bytes, `per_block` to a block of `block`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Bytes per slot (a multiple of 16).
    pub frame: usize,
    /// Bytes per block (a multiple of the page size).
    pub block: usize,
    /// Blocks.
    pub blocks: usize,
}

impl Geometry {
    /// Slots of at least `need` bytes, `want` of them (rounded up to fill whole blocks):
    /// power-of-two slots of up to a page share a page, larger ones get a block each.
    pub fn frames(need: usize, want: usize) -> Geometry {
        let page = 4096;
        let frame = need.next_power_of_two().max(64);
        let block = frame.max(page);
        let per = block / frame;
        Geometry {
            frame,
            block,
            blocks: want.div_ceil(per).max(1),
        }
    }

    /// Slots in all.
    pub fn count(&self) -> usize {
        self.blocks * (self.block / self.frame)
    }

    /// Byte offset of slot `i`.
    #[inline]
    pub fn offset(&self, i: usize) -> usize {
        let per = self.block / self.frame;
        (i / per) * self.block + (i % per) * self.frame
    }

    fn bytes(&self) -> usize {
        self.block * self.blocks
    }

    fn req(&self) -> libc::tpacket_req {
        libc::tpacket_req {
            tp_block_size: self.block as u32,
            tp_block_nr: self.blocks as u32,
            tp_frame_size: self.frame as u32,
            tp_frame_nr: self.count() as u32,
        }
    }
}

/// Where each TX slot stands, as far as we know: which is next to fill, and which were
/// committed since the last send. Knows nothing of memory: [`TxBook::settle`] is told each
/// committed slot's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxBook {
    slots: usize,
    head: usize,
    committed: usize,
}

/// What a send did with the committed slots, in commit order: the first `sent` were taken by
/// the kernel, the other `unsent` were given back (free again) and must be reported failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    /// Slots the kernel took.
    pub sent: usize,
    /// Slots it did not get to, now free again.
    pub unsent: usize,
    /// Why it stopped, when `unsent > 0` (an errno).
    pub errno: Option<i32>,
}

impl TxBook {
    /// A ring of `slots` slots, all free, the kernel's cursor at slot 0.
    pub fn new(slots: usize) -> TxBook {
        TxBook {
            slots,
            head: 0,
            committed: 0,
        }
    }

    /// The slot to fill next (free only if its status says so).
    #[inline]
    pub fn head(&self) -> usize {
        self.head
    }

    /// Slots committed since the last settle.
    #[inline]
    pub fn committed(&self) -> usize {
        self.committed
    }

    /// The head slot was filled and handed to the kernel.
    #[inline]
    pub fn commit(&mut self) {
        debug_assert!(self.committed < self.slots);
        self.head = (self.head + 1) % self.slots;
        self.committed += 1;
    }

    /// The committed slots in order, from the oldest.
    pub fn committed_slots(&self) -> impl Iterator<Item = usize> + '_ {
        let first = (self.head + self.slots - self.committed) % self.slots;
        (0..self.committed).map(move |k| (first + k) % self.slots)
    }

    /// After a send: `still_requested(slot)` says whether the kernel left a committed slot
    /// untouched. The kernel works through the ring in order and stops at the first slot it
    /// cannot send, so the untouched ones are a suffix; they are given back (the caller marks
    /// them free) and the head moves back to the first, where the kernel's own cursor stopped.
    /// Returns how many were sent and the untouched slots to free.
    pub fn settle(
        &mut self,
        mut still_requested: impl FnMut(usize) -> bool,
    ) -> (usize, Vec<usize>) {
        let slots: Vec<usize> = self.committed_slots().collect();
        let sent = slots
            .iter()
            .position(|&s| still_requested(s))
            .unwrap_or(slots.len());
        let unsent = slots[sent..].to_vec();
        if let Some(&first) = unsent.first() {
            self.head = first;
        }
        self.committed = 0;
        (sent, unsent)
    }
}

/// A `PACKET_TX_RING` on one device (see the module docs).
pub struct TxRing {
    fd: OwnedFd,
    map: Mapping,
    geo: Geometry,
    book: TxBook,
    ifindex: u32,
    max_frame: usize,
}

impl TxRing {
    /// A TX ring of at least `slots` slots for frames of up to `max_frame` bytes on device
    /// `ifindex`, bypassing the qdisc. It receives nothing.
    pub fn open(ifindex: u32, max_frame: usize, slots: usize) -> io::Result<TxRing> {
        let fd = packet_socket(libc::SOCK_RAW)?;
        let s = fd.as_fd();
        setsockopt(s, libc::PACKET_VERSION, &TPACKET_V2)?;
        setsockopt(s, libc::PACKET_QDISC_BYPASS, &1 as &libc::c_int)?;
        // A frame the kernel refuses (it cannot happen: lengths are checked before a commit) is
        // skipped rather than stopping the ring.
        setsockopt(s, libc::PACKET_LOSS, &1 as &libc::c_int)?;
        let big: libc::c_int = 4 << 20;
        // SAFETY: passes one c_int and its size.
        let _ = cvt(unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                (&big as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        });
        let geo = Geometry::frames(TX_DATA_OFFSET + max_frame, slots);
        setsockopt(s, libc::PACKET_TX_RING, &geo.req())?;
        let map = Mapping::new(s, geo.bytes())?;
        // Bound with protocol 0: the device is fixed, and nothing is received.
        bind(s, ifindex, 0)?;
        Ok(TxRing {
            book: TxBook::new(geo.count()),
            fd,
            map,
            geo,
            ifindex,
            max_frame,
        })
    }

    /// The socket, for tests.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Largest frame a slot takes.
    #[inline]
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Slots in the ring.
    pub fn slots(&self) -> usize {
        self.geo.count()
    }

    /// Frames committed and not sent yet.
    #[inline]
    pub fn committed(&self) -> usize {
        self.book.committed()
    }

    #[inline]
    fn status(&self, slot: usize) -> &AtomicU32 {
        self.map.word(self.geo.offset(slot))
    }

    /// The next free slot, [`TxRing::max_frame`] bytes long, to write one frame into; `None`
    /// when every slot is committed or still being sent.
    #[inline]
    pub fn slot(&mut self) -> Option<&mut [u8]> {
        let h = self.book.head();
        if self.book.committed() == self.slots()
            || self.status(h).load(Ordering::Acquire) != libc::TP_STATUS_AVAILABLE
        {
            return None;
        }
        let off = self.geo.offset(h) + TX_DATA_OFFSET;
        let max = self.max_frame;
        Some(self.map.bytes_mut(off, max))
    }

    /// Hands the frame written into the current slot (its first `len` bytes) to the kernel
    /// for the next [`TxRing::send`]. Only after [`TxRing::slot`] returned a slot.
    #[inline]
    pub fn commit(&mut self, len: usize) {
        assert!(len <= self.max_frame);
        let base = self.geo.offset(self.book.head());
        // tp_len is the second word of tpacket2_hdr.
        self.map.word(base + 4).store(len as u32, Ordering::Relaxed);
        // Release: the frame's bytes and length are visible before the kernel sees the request.
        self.map
            .word(base)
            .store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.book.commit();
    }

    /// Sends every committed frame with one system call. Frames the kernel did not take (its
    /// socket buffer full, the device down) are given back and reported in [`Sent::unsent`].
    pub fn send(&mut self) -> Sent {
        if self.book.committed() == 0 {
            return Sent::default();
        }
        let sll = sockaddr_ll(self.ifindex, libc::ETH_P_IP as u16);
        let errno = loop {
            // SAFETY: a zero-length sendto with a sockaddr_ll and its size: the kernel sends
            // the ring's requested slots, which we do not touch during the call.
            let rc = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if rc >= 0 {
                break None;
            }
            match io::Error::last_os_error().raw_os_error().unwrap_or(0) {
                libc::EINTR => continue,
                e => break Some(e),
            }
        };
        let (map, geo) = (&self.map, self.geo);
        let (sent, unsent) = self.book.settle(|slot| {
            map.word(geo.offset(slot)).load(Ordering::Acquire) == libc::TP_STATUS_SEND_REQUEST
        });
        for &slot in &unsent {
            // The kernel only looks at requested slots inside send(), which has returned:
            // taking the request back cannot race it.
            map.word(geo.offset(slot))
                .store(libc::TP_STATUS_AVAILABLE, Ordering::Release);
        }
        Sent {
            sent,
            unsent: unsent.len(),
            errno: if unsent.is_empty() {
                None
            } else {
                Some(errno.unwrap_or(libc::EAGAIN))
            },
        }
    }
}

/// The `PACKET_FANOUT` group of an RX ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fanout {
    /// Start a new group with an id the kernel picks (read it back with [`RxRing::fanout_id`]).
    New,
    /// Join the group with this id.
    Join(u16),
}

/// How a fanout group splits packets between its rings.
#[derive(Clone, Copy, Debug)]
pub enum Split<'p> {
    /// One ring takes everything (no flow hash computed).
    Single,
    /// A classic BPF program returns a hash; the packet goes to ring hash mod rings.
    Program(&'p [libc::sock_filter]),
}

/// One packet from an RX ring.
#[derive(Clone, Copy, Debug)]
pub struct RxPacket<'a> {
    /// What was copied in: from the network header, at most the slot's room.
    pub data: &'a [u8],
    /// The packet's length on the wire (more than `data.len()` if it was cut short).
    pub wire_len: usize,
    /// `PACKET_HOST`, `PACKET_BROADCAST`, ... (`sll_pkttype`).
    pub pkttype: u8,
}

/// A `PACKET_RX_RING` on one device, receiving IPv4 (see the module docs).
pub struct RxRing {
    fd: OwnedFd,
    map: Mapping,
    geo: Geometry,
    /// Next frame to look at.
    cursor: usize,
    /// Largest packet that fits a frame whole.
    max_packet: usize,
}

impl RxRing {
    /// An RX ring on device `ifindex` for IPv4 packets of up to `max_packet` bytes (network
    /// header on), at least `slots` frames, keeping what `filter(room)` accepts (`room`: the
    /// largest packet a frame holds whole, at least `max_packet`), in fanout group `fanout`
    /// (fragments reassembled first) split by `split`; every ring of a group must be opened
    /// with the same split.
    pub fn open(
        ifindex: u32,
        max_packet: usize,
        slots: usize,
        filter: &dyn Fn(usize) -> Vec<libc::sock_filter>,
        fanout: Fanout,
        split: Split<'_>,
    ) -> io::Result<RxRing> {
        let fd = packet_socket(libc::SOCK_DGRAM)?;
        let s = fd.as_fd();
        setsockopt(s, libc::PACKET_VERSION, &TPACKET_V2)?;
        let geo = Geometry::frames(RX_V2_NET_OFFSET + max_packet, slots);
        setsockopt(s, libc::PACKET_RX_RING, &geo.req())?;
        let max_packet = geo.frame - RX_V2_NET_OFFSET;
        let map = Mapping::new(s, geo.bytes())?;
        // Filter first: nothing the filter refuses is ever queued.
        attach_filter(s, &filter(max_packet))?;
        bind(s, ifindex, libc::ETH_P_IP as u16)?;
        // Queue mapping needs no flow dissection: the cheapest way to one ring with reassembly.
        let kind = match split {
            Split::Single => libc::PACKET_FANOUT_QM,
            Split::Program(_) => libc::PACKET_FANOUT_CBPF,
        };
        let flags = kind | libc::PACKET_FANOUT_FLAG_DEFRAG;
        let arg: u32 = match fanout {
            Fanout::New => (flags | libc::PACKET_FANOUT_FLAG_UNIQUEID) << 16,
            Fanout::Join(id) => u32::from(id) | (flags << 16),
        };
        setsockopt(s, libc::PACKET_FANOUT, &arg)?;
        if let Split::Program(prog) = split {
            let fprog = libc::sock_fprog {
                len: prog.len() as u16,
                filter: prog.as_ptr() as *mut libc::sock_filter,
            };
            // The group's program; the kernel copies it.
            setsockopt(s, libc::PACKET_FANOUT_DATA, &fprog)?;
        }
        Ok(RxRing {
            fd,
            map,
            geo,
            cursor: 0,
            max_packet,
        })
    }

    /// The socket, to wait for readiness on.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The id of this ring's fanout group.
    pub fn fanout_id(&self) -> io::Result<u16> {
        getsockopt_int(self.fd.as_fd(), libc::PACKET_FANOUT).map(|v| v as u16)
    }

    /// Largest packet a frame holds whole.
    pub fn max_packet(&self) -> usize {
        self.max_packet
    }

    /// Packets dropped by the kernel for want of room, since the last call
    /// (`PACKET_STATISTICS`, which resets them).
    pub fn take_drops(&self) -> io::Result<u32> {
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes, the size of `st`.
        cvt(unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        })?;
        Ok(st.tp_drops)
    }

    fn ready(&self, i: usize) -> bool {
        self.map.word(self.geo.offset(i)).load(Ordering::Acquire) & libc::TP_STATUS_USER != 0
    }

    /// The packets waiting, at most `max`. They are ours until the batch is dropped, which
    /// hands their frames back to the kernel.
    pub fn batch(&mut self, max: usize) -> RxBatch<'_> {
        let n = self.geo.count();
        let count = (0..max.min(n))
            .take_while(|k| self.ready((self.cursor + k) % n))
            .count();
        RxBatch { ring: self, count }
    }
}

/// Packets taken from an [`RxRing`]; dropping the batch gives their frames back.
pub struct RxBatch<'r> {
    ring: &'r mut RxRing,
    count: usize,
}

impl RxBatch<'_> {
    /// True when nothing was waiting.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Packets this batch holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// The packets, in arrival order.
    pub fn packets(&self) -> RxPackets<'_> {
        RxPackets {
            ring: self.ring,
            slot: self.ring.cursor,
            left: self.count,
        }
    }
}

impl Drop for RxBatch<'_> {
    fn drop(&mut self) {
        let r = &mut *self.ring;
        for _ in 0..self.count {
            r.map
                .word(r.geo.offset(r.cursor))
                .store(libc::TP_STATUS_KERNEL, Ordering::Release);
            r.cursor = (r.cursor + 1) % r.geo.count();
        }
    }
}

/// Iterator over an [`RxBatch`]'s packets.
pub struct RxPackets<'b> {
    ring: &'b RxRing,
    slot: usize,
    left: usize,
}

impl<'b> Iterator for RxPackets<'b> {
    type Item = RxPacket<'b>;

    fn next(&mut self) -> Option<RxPacket<'b>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let r = self.ring;
        let base = r.geo.offset(self.slot);
        self.slot = (self.slot + 1) % r.geo.count();
        Some(rx_frame(r.map.bytes(base, r.geo.frame)))
    }
}

/// Offsets in a `tpacket2_hdr`.
mod v2 {
    pub const LEN: usize = 4;
    pub const SNAPLEN: usize = 8;
    pub const NET: usize = 14;
}

/// The packet in one RX frame we own (`frame`: the whole frame, TPACKET_V2 header first), as
/// its header describes it. Whatever the header says, the packet stays inside the frame: a
/// header that points outside it gives an empty packet, which the caller refuses like any
/// other malformed input.
#[inline]
pub fn rx_frame(frame: &[u8]) -> RxPacket<'_> {
    let u32_at = |off: usize| {
        frame
            .get(off..off + 4)
            .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let net = frame
        .get(v2::NET..v2::NET + 2)
        .map_or(frame.len(), |b| {
            usize::from(u16::from_ne_bytes([b[0], b[1]]))
        })
        .min(frame.len());
    let snap = u32_at(v2::SNAPLEN).min(frame.len() - net);
    RxPacket {
        data: &frame[net..net + snap],
        wire_len: u32_at(v2::LEN),
        pkttype: frame
            .get(V2_SLL_OFFSET + SLL_PKTTYPE)
            .copied()
            .unwrap_or(libc::PACKET_OTHERHOST),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A simulated kernel side of a TX ring: statuses per slot, and a send that takes
    /// requested slots in order from its own cursor until `budget` runs out.
    struct Kernel {
        status: Vec<u32>,
        cursor: usize,
    }

    impl Kernel {
        fn send(&mut self, mut budget: usize) {
            while budget > 0 && self.status[self.cursor] == libc::TP_STATUS_SEND_REQUEST {
                self.status[self.cursor] = libc::TP_STATUS_SENDING;
                self.cursor = (self.cursor + 1) % self.status.len();
                budget -= 1;
            }
        }
    }

    #[test]
    fn a_full_send_settles_every_committed_slot() {
        let mut k = Kernel {
            status: vec![0; 4],
            cursor: 0,
        };
        let mut b = TxBook::new(4);
        for _ in 0..3 {
            k.status[b.head()] = libc::TP_STATUS_SEND_REQUEST;
            b.commit();
        }
        assert_eq!(b.committed_slots().collect::<Vec<_>>(), vec![0, 1, 2]);
        k.send(usize::MAX);
        let (sent, unsent) = b.settle(|s| k.status[s] == libc::TP_STATUS_SEND_REQUEST);
        assert_eq!((sent, unsent), (3, vec![]));
        assert_eq!((b.head(), b.committed()), (3, 0));
    }

    #[test]
    fn a_partial_send_gives_back_the_rest_and_stays_in_step_with_the_kernel() {
        let mut k = Kernel {
            status: vec![0; 4],
            cursor: 0,
        };
        let mut b = TxBook::new(4);
        // Wrap around: slots 3, 0, 1 after one earlier frame.
        k.status[0] = libc::TP_STATUS_SEND_REQUEST;
        b.commit();
        k.send(1);
        assert_eq!(b.settle(|s| k.status[s] == 1), (1, vec![]));
        k.status[0] = libc::TP_STATUS_AVAILABLE; // the skb was freed
        for _ in 0..4 {
            k.status[b.head()] = libc::TP_STATUS_SEND_REQUEST;
            b.commit();
        }
        assert_eq!(b.committed_slots().collect::<Vec<_>>(), vec![1, 2, 3, 0]);
        k.send(2); // the socket buffer filled after two
        let (sent, unsent) = b.settle(|s| k.status[s] == libc::TP_STATUS_SEND_REQUEST);
        assert_eq!((sent, unsent.clone()), (2, vec![3, 0]));
        for s in unsent {
            k.status[s] = libc::TP_STATUS_AVAILABLE;
        }
        // Our head is where the kernel's cursor stopped: the next frames go out in order.
        assert_eq!((b.head(), k.cursor), (3, 3));
        k.status[b.head()] = libc::TP_STATUS_SEND_REQUEST;
        b.commit();
        k.send(usize::MAX);
        assert_eq!(b.settle(|s| k.status[s] == 1), (1, vec![]));
        assert_eq!(k.cursor, 0);
    }

    /// Runs `f` on a thread in a network namespace of its own with only `lo` (up); returns
    /// false, doing nothing, where namespaces cannot be made (not root).
    pub(crate) fn in_private_netns(f: impl FnOnce(u32) + Send + 'static) -> bool {
        std::thread::spawn(move || {
            // SAFETY: unshare(2) changes only this thread's network namespace; the thread ends
            // with the test.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                eprintln!("skipped: making a network namespace needs root");
                return false;
            }
            super::super::netdev::set_up("lo").expect("lo up");
            f(super::super::netdev::index("lo").expect("lo"));
            true
        })
        .join()
        .expect("test thread")
    }

    /// An Ethernet frame to 00:00:00:00:00:00 (lo's address) carrying an IPv4 GRE packet
    /// whose payload is `n` repeated.
    fn frame(n: u8, payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let mut ip = [0u8; 20];
        crate::wire::ipv4::Repr {
            src: std::net::Ipv4Addr::new(127, 0, 0, 2),
            dst: std::net::Ipv4Addr::new(127, 0, 0, 1),
            protocol: 47,
            ttl: 64,
            tos: 0,
            df: true,
            ident: u16::from(n),
            payload_len: payload,
        }
        .emit(&mut ip);
        f.extend_from_slice(&ip);
        f.resize(14 + 20 + payload, n);
        f
    }

    fn accept_all(_: usize) -> Vec<libc::sock_filter> {
        vec![libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0x0004_0000,
        }]
    }

    #[test]
    fn frames_sent_through_a_tx_ring_arrive_whole_and_in_order_in_an_rx_ring() {
        in_private_netns(|lo| {
            // Room for every frame of the test: they all arrive before the first read.
            let mut rx = RxRing::open(lo, 1500, 32, &accept_all, Fanout::New, Split::Single)
                .expect("RX ring");
            assert!(rx.fanout_id().is_ok());
            let mut tx = TxRing::open(lo, 1514, 8).expect("TX ring");
            assert_eq!(tx.slots(), 8);
            // Three sends of up to 7 frames: the ring wraps, and every slot comes back.
            let total = 20u8;
            let mut sent = 0;
            for n in 0..total {
                let f = frame(n, 100 + usize::from(n) * 50);
                let slot = tx.slot().expect("a free slot");
                slot[..f.len()].copy_from_slice(&f);
                tx.commit(f.len());
                if tx.committed() == 7 || n + 1 == total {
                    let s = tx.send();
                    assert_eq!((s.unsent, s.errno), (0, None));
                    sent += s.sent;
                }
            }
            assert_eq!(sent, usize::from(total));
            let mut got = Vec::new();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while got.len() < usize::from(total) && std::time::Instant::now() < deadline {
                let b = rx.batch(64);
                got.extend(
                    b.packets()
                        .map(|p| (p.data.to_vec(), p.wire_len, p.pkttype)),
                );
                drop(b);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            assert_eq!(got.len(), usize::from(total));
            for (n, (data, wire_len, pkttype)) in got.into_iter().enumerate() {
                let f = frame(n as u8, 100 + n * 50);
                assert_eq!(data, f[14..], "packet {n} from the network header on");
                assert_eq!((wire_len, pkttype), (f.len() - 14, libc::PACKET_HOST));
            }
            assert_eq!(rx.take_drops().expect("stats"), 0);
        });
    }

    #[test]
    fn a_frame_longer_than_an_rx_frame_is_cut_and_says_so() {
        in_private_netns(|lo| {
            let mut rx =
                RxRing::open(lo, 200, 4, &accept_all, Fanout::New, Split::Single).expect("RX");
            let room = rx.max_packet();
            assert_eq!(room, 512 - RX_V2_NET_OFFSET, "slots are powers of two");
            let mut tx = TxRing::open(lo, 1514, 4).expect("TX");
            let f = frame(1, 600);
            tx.slot().expect("slot")[..f.len()].copy_from_slice(&f);
            tx.commit(f.len());
            assert_eq!(tx.send().sent, 1);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            loop {
                let b = rx.batch(4);
                if let Some(p) = b.packets().next() {
                    assert_eq!((p.data.len(), p.wire_len), (room, 620));
                    assert_eq!(p.data, &f[14..14 + room]);
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "nothing arrived");
            }
        });
    }

    #[test]
    fn geometry_packs_small_slots_into_pages() {
        let g = Geometry::frames(TX_DATA_OFFSET + 1514, 256);
        assert_eq!((g.frame, g.block, g.count()), (2048, 4096, 256));
        assert_eq!(g.offset(0), 0);
        assert_eq!(g.offset(1), 2048);
        assert_eq!(g.offset(2), 4096);
        let j = Geometry::frames(TX_DATA_OFFSET + 9014, 10);
        assert_eq!((j.frame, j.block, j.count()), (16384, 16384, 10));
        assert_eq!(j.offset(3), 3 * 16384);
        assert_eq!(TX_DATA_OFFSET, 32);
        assert_eq!(RX_V2_NET_OFFSET, 80);
    }

    /// A 512-byte RX frame as the kernel fills it: TPACKET_V2 header (status, len, snaplen,
    /// mac, net), `sockaddr_ll` with `pkttype`, then `data` at `net`.
    pub(crate) fn hand_built_rx_frame(
        wire_len: u32,
        snaplen: u32,
        net: u16,
        pkttype: u8,
        data: &[u8],
    ) -> Vec<u8> {
        let mut f = vec![0u8; 512];
        f[0..4].copy_from_slice(&libc::TP_STATUS_USER.to_ne_bytes());
        f[v2::LEN..v2::LEN + 4].copy_from_slice(&wire_len.to_ne_bytes());
        f[v2::SNAPLEN..v2::SNAPLEN + 4].copy_from_slice(&snaplen.to_ne_bytes());
        f[v2::NET..v2::NET + 2].copy_from_slice(&net.to_ne_bytes());
        f[V2_SLL_OFFSET + SLL_PKTTYPE] = pkttype;
        let at = usize::from(net).min(f.len());
        let n = data.len().min(f.len() - at);
        f[at..at + n].copy_from_slice(&data[..n]);
        f
    }

    #[test]
    fn an_rx_frame_gives_the_packet_its_header_describes() {
        let data: Vec<u8> = (0..100u8).collect();
        let net = RX_V2_NET_OFFSET as u16;
        let f = hand_built_rx_frame(100, 100, net, libc::PACKET_HOST, &data);
        let p = rx_frame(&f);
        assert_eq!(
            (p.data, p.wire_len, p.pkttype),
            (&data[..], 100, libc::PACKET_HOST)
        );
        // Cut short by the kernel (longer on the wire than the frame's room): says so.
        let f = hand_built_rx_frame(3000, 100, net, libc::PACKET_HOST, &data);
        let p = rx_frame(&f);
        assert_eq!((p.data.len(), p.wire_len), (100, 3000));
    }

    #[test]
    fn an_rx_frame_header_pointing_outside_the_frame_gives_an_empty_or_clamped_packet() {
        let data = [0x45u8; 64];
        // Packet start past the end of the frame.
        let f = hand_built_rx_frame(64, 64, 600, libc::PACKET_HOST, &data);
        assert!(rx_frame(&f).data.is_empty());
        // A snap length longer than the frame: what is in the frame, no more.
        let f = hand_built_rx_frame(64, 4096, 480, libc::PACKET_HOST, &data);
        assert_eq!(rx_frame(&f).data, &data[..32]);
        // A frame too short for its own header (no kernel makes one): empty, not for us.
        let p = rx_frame(&f[..12]);
        assert!(p.data.is_empty());
        assert_eq!(p.pkttype, libc::PACKET_OTHERHOST);
    }
}
