//! One worker: a `mio` event loop owning one TAP queue, its sockets, one sans-io
//! [`Core`] and its buffers. It decides nothing: it waits for readiness or the core's next
//! deadline, reads a burst, hands it to the core together with a [`Sink`] over its send batch
//! and TAP queue, then sends what the core made and passes on what it asks for.

use super::gre_socket::{self, Sockets};
use super::ring::{RingRx, RingTx};
use super::sys::mmsg::{self, RecvQueue, SendBatch, SendQueue};
use super::sys::sockopt;
use super::tap::TapQueue;
use crate::datapath::{
    outbox, Core, Datagram, Dest, FdbDump, Flushed, SendOutcome, Sink, TapWriteError, TunnelMsg,
};
use crate::offload::{gro, MAX_HEADERS};
use crate::switch::ratelimit::LogLimiter;
use crate::switch::tunnel::{self, GreOptions};
use crate::switch::{Event, Millis, PortId, PortKind, SyncUpdate};
use crate::wire::{gre, vnet};
use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::io::{self, IoSlice};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Frames read from one source per turn of the loop; bounds latency for the other source.
pub const BURST: usize = 32;
/// Messages per `sendmmsg`: a burst flooded to a few peers fits, and so does a 64 KiB TCP
/// super-frame cut into segments.
const TX_CAP: usize = 128;
/// Learning updates queued per worker before further ones are dropped (and counted).
pub const SYNC_QUEUE: usize = 4096;
/// Control-plane commands queued per worker (the control server blocks beyond that).
pub const CMD_QUEUE: usize = 64;
/// A TAP read: virtio-net header + the largest super-frame (Ethernet + tag + 64 KiB IP).
const TAP_SLOT: usize = vnet::LEN + mmsg::SLOT_LEN + 64;

// A message's header room holds a GRE header and a segment's own headers.
const _: () = assert!(gre::MAX_HEADER_LEN + MAX_HEADERS <= mmsg::HEADER_ROOM);

/// An all-zero virtio-net header: nothing for the kernel to do.
const NO_OFFLOAD: [u8; vnet::LEN] = [0; vnet::LEN];

const TAP: Token = Token(0);
const SOCK: Token = Token(1);
/// Token of the packet RX ring (`--packet-rings`).
const RING: Token = Token(3);
/// Token of the waker that interrupts `poll` for shutdown and control requests.
pub const WAKE: Token = Token(2);

/// A request from the control plane to one worker, applied between bursts.
#[derive(Debug)]
pub enum WorkerCommand {
    /// Add (`Some`) or remove (`None`) port `id`.
    SetPort {
        /// Port id.
        id: PortId,
        /// What it is.
        kind: Option<PortKind>,
    },
    /// Forget the stations learned on `port` (all when `None`); replies with how many.
    FlushFdb {
        /// Port, or all.
        port: Option<PortId>,
        /// Where the count goes.
        reply: Sender<usize>,
    },
    /// A copy of the MAC table and the worker's clock.
    DumpFdb {
        /// Where the copy goes.
        reply: Sender<FdbDump>,
    },
    /// A copy of the ARP watcher's claims and conflicts (duplicate-IP detection).
    DumpConflicts {
        /// Where the copy goes.
        reply: Sender<crate::switch::arp_watch::ArpDump>,
    },
}

/// Everything a worker owns, handed over at spawn.
pub struct Worker {
    /// Worker index (for logs).
    pub id: usize,
    /// Its TAP queue.
    pub tap: TapQueue,
    /// The TAP's name.
    pub tap_name: String,
    /// The TAP passes virtio-net headers (offloads on).
    pub vnet: bool,
    /// Its sockets.
    pub socks: Sockets,
    /// Its core.
    pub core: Core,
    /// GRE options (the GRE-in-UDP port peers listen on).
    pub gre: GreOptions,
    /// Where each tunnel port's peer is; `MAX_PORTS` long so adding a peer never moves it.
    pub dest: Box<[SocketAddrV4]>,
    /// Control-plane requests.
    pub cmd_rx: Receiver<WorkerCommand>,
    /// Learning updates from the other workers.
    pub sync_rx: Receiver<SyncUpdate>,
    /// Learning updates to the other workers.
    pub sync_tx: Vec<Sender<SyncUpdate>>,
    /// Shared clock origin.
    pub epoch: Instant,
    /// Set to stop.
    pub stop: Arc<AtomicBool>,
    /// The poll instance (created before spawn so the waker can be handed out).
    pub poll: Poll,
    /// Plain GRE leaves through this packet ring when it can (`--packet-rings`).
    pub ring_tx: Option<RingTx>,
    /// Plain GRE arrives through this packet ring (`--packet-rings`).
    pub ring_rx: Option<RingRx>,
}

/// Creates a poll instance and its waker.
pub fn poll_with_waker() -> io::Result<(Poll, Arc<Waker>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
    Ok((poll, waker))
}

/// A `dest` table with no peer yet.
pub fn no_destinations() -> Box<[SocketAddrV4]> {
    vec![SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0); crate::switch::MAX_PORTS].into_boxed_slice()
}

struct Buffers {
    tap_rx: Box<[u8]>,
    recv: RecvQueue,
    send: SendQueue,
    /// Where [`Core::poll_transmit`] puts the frames the core made.
    transmit: Box<[u8]>,
    /// Keeps logs about failed reads to a few lines a second.
    read_log: LogLimiter,
}

/// The core's view of this worker's I/O for one burst: tunnel messages go into a send batch
/// that borrows the burst's frames, TAP frames are written at once.
struct Out<'a> {
    batch: SendBatch<'a>,
    socks: &'a Sockets,
    dest: &'a [SocketAddrV4],
    tap: &'a TapQueue,
    id: usize,
    ring: Option<&'a mut RingTx>,
}

impl<'a> Sink<'a> for Out<'a> {
    #[inline]
    fn push_tunnel(&mut self, msg: &TunnelMsg<'_>, payload: &'a [u8]) {
        let dest = self.dest[usize::from(msg.port)];
        if let Some(r) = self.ring.as_deref_mut() {
            if r.push(msg, payload, *dest.ip()) {
                return;
            }
        }
        let fd = self.socks.send_fd(msg.flow, msg.fragmentable);
        let (repr, headers) = (msg.gre, msg.headers);
        let len = (headers.len() + payload.len()) as u32;
        self.batch.push(
            fd,
            dest,
            |room| {
                let gl = repr.header_len();
                let hl = gl + headers.len();
                room[gl..hl].copy_from_slice(headers);
                let (g, rest) = room.split_at_mut(gl);
                repr.emit_parts(g, &[&rest[..headers.len()], payload]);
                hl
            },
            payload,
            (msg.port, len),
        );
    }

    #[inline]
    fn tunnel_full(&self) -> bool {
        self.batch.is_full() || self.ring.as_deref().is_some_and(RingTx::is_full)
    }

    #[inline]
    fn tunnel_empty(&self) -> bool {
        self.batch.is_empty() && self.ring.as_deref().is_none_or(RingTx::is_empty)
    }

    fn flush_tunnels(
        &mut self,
        fits: impl Fn(PortId, usize) -> bool,
        mut done: impl FnMut(PortId, usize, SendOutcome),
    ) -> Flushed {
        let mut f = Flushed::default();
        if let Some(r) = self.ring.as_deref_mut() {
            r.flush(&mut done);
        }
        if !self.batch.udp_gso() {
            self.batch
                .flush(|(port, len), r| done(port, len as usize, r));
            return f;
        }
        let g = self.batch.flush_udp_gso(
            |(port, _), seg| fits(port, seg),
            |(port, len), r| done(port, len as usize, r),
        );
        f.gso_messages = g.messages;
        match g.refused {
            None => {}
            // Larger than the path now: the core re-reads it.
            Some(libc::EMSGSIZE | libc::EINVAL) => f.gso_too_big = true,
            Some(e) => {
                // No checksum offload on the way out (a real NIC without it): the kernel
                // cannot segment UDP for us.
                self.batch.disable_udp_gso();
                log::warn!(
                    "worker {}: UDP GSO refused ({}); sending GRE-in-UDP datagrams one by one",
                    self.id,
                    io::Error::from_raw_os_error(e)
                );
            }
        }
        f
    }

    #[inline]
    fn write_tap(&mut self, head: &[u8], payloads: &[&[u8]]) -> Result<(), TapWriteError> {
        let mut iov = [IoSlice::new(&[]); gro::MAX_SEGS + 2];
        let mut n = 0;
        if !head.is_empty() {
            iov[0] = IoSlice::new(head);
            n = 1;
        }
        for p in payloads.iter().take(iov.len() - n) {
            iov[n] = IoSlice::new(p);
            n += 1;
        }
        match self.tap.writev(&iov[..n]) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(TapWriteError::Refused),
            Err(_) => Err(TapWriteError::Failed),
        }
    }
}

/// A datagram borrowed for less long (the ring's batch outlives the burst's sink).
fn shorten<'s, 'l: 's>(d: Datagram<'l>) -> Datagram<'s> {
    d
}

impl Worker {
    /// Runs until `stop` is set. Errors if the event loop fails or the TAP is gone.
    pub fn run(mut self) -> io::Result<()> {
        let reg = self.poll.registry();
        reg.register(
            &mut SourceFd(&self.tap.as_raw_fd()),
            TAP,
            Interest::READABLE,
        )?;
        reg.register(
            &mut SourceFd(&self.socks.recv_fd().as_raw_fd()),
            SOCK,
            Interest::READABLE,
        )?;
        if let Some(r) = &self.ring_rx {
            reg.register(&mut SourceFd(&r.fd().as_raw_fd()), RING, Interest::READABLE)?;
        }
        let mut events = Events::with_capacity(16);
        let mut send = SendQueue::new(TX_CAP);
        send.set_udp_gso(self.socks.is_udp());
        let mut b = Buffers {
            tap_rx: vec![0u8; BURST * TAP_SLOT].into_boxed_slice(),
            recv: RecvQueue::new(BURST),
            send,
            transmit: vec![0u8; outbox::MAX_FRAME].into_boxed_slice(),
            read_log: LogLimiter::new(5, 10_000),
        };
        // Drain anything that arrived before registration.
        let (mut tap_ready, mut sock_ready) = (true, true);
        let mut ring_ready = self.ring_rx.is_some();
        log::debug!("worker {} running", self.id);
        loop {
            let timeout = if tap_ready || sock_ready || ring_ready {
                Duration::ZERO
            } else {
                let wait = self.core.poll_timeout().saturating_sub(self.now());
                Duration::from_millis(wait.max(1))
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            for ev in events.iter() {
                match ev.token() {
                    TAP => tap_ready = true,
                    SOCK => sock_ready = true,
                    RING => ring_ready = true,
                    _ => {}
                }
            }
            if self.stop.load(Ordering::Relaxed) {
                log::debug!("worker {} stopping", self.id);
                return Ok(());
            }
            while let Ok(u) = self.sync_rx.try_recv() {
                self.core.handle_sync(u);
            }
            let now = self.now();
            while let Ok(c) = self.cmd_rx.try_recv() {
                self.command(now, c);
            }
            if let Some(r) = &mut self.ring_tx {
                r.maintain(now, &self.dest);
            }
            if tap_ready {
                tap_ready = self.tap_burst(now, &mut b)?;
            }
            if sock_ready {
                sock_ready = self.sock_burst(now, &mut b);
            }
            if ring_ready {
                ring_ready = self.ring_burst(now, &mut b);
            }
            self.core.handle_timeout(now);
            self.drain(&mut b);
        }
    }

    fn command(&mut self, now: Millis, c: WorkerCommand) {
        match c {
            WorkerCommand::SetPort { id, kind } => {
                if let Some(PortKind::Tunnel(addr)) = kind {
                    if let Some(d) = self.dest.get_mut(usize::from(id)) {
                        *d = gre_socket::dest(addr, &self.gre);
                    }
                }
                if let Some(r) = &mut self.ring_tx {
                    r.invalidate();
                }
                self.core.set_port(id, kind);
            }
            WorkerCommand::FlushFdb { port, reply } => {
                let _ = reply.send(self.core.flush_fdb(port));
            }
            WorkerCommand::DumpFdb { reply } => {
                let _ = reply.send(self.core.fdb_dump(now));
            }
            WorkerCommand::DumpConflicts { reply } => {
                let _ = reply.send(self.core.conflicts(now));
            }
        }
    }

    #[inline]
    fn now(&self) -> Millis {
        self.epoch.elapsed().as_millis() as Millis
    }

    /// Reads up to a burst from the TAP and hands it to the core. Returns whether more may be
    /// waiting, or the error that says the TAP is gone.
    fn tap_burst(&mut self, now: Millis, b: &mut Buffers) -> io::Result<bool> {
        let Buffers {
            tap_rx,
            send,
            read_log,
            ..
        } = b;
        let (id, tap) = (self.id, &self.tap);
        let (mut more, mut gone) = (true, None);
        let frames = tap_rx.chunks_mut(TAP_SLOT).map_while(|slot| loop {
            match tap.read(slot) {
                Ok(len) => return Some(&mut slot[..len]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if crate::io::watch::tap_gone(&e) {
                        gone = Some(e);
                    } else if e.kind() != io::ErrorKind::WouldBlock {
                        if let Some(k) = read_log.allow(now) {
                            log::warn!(
                                "worker {id}: reading the TAP failed: {e}{}",
                                LogLimiter::suffix(k)
                            );
                        }
                    }
                    more = false;
                    return None;
                }
            }
        });
        let mut out = Out {
            batch: send.batch(),
            socks: &self.socks,
            dest: &self.dest,
            tap,
            id,
            ring: self.ring_tx.as_mut(),
        };
        self.core.handle_tap_frames(now, frames, &mut out);
        match gone {
            Some(e) => Err(io::Error::new(
                e.kind(),
                format!("reading the TAP failed: {e} (was the TAP deleted?)"),
            )),
            None => Ok(more),
        }
    }

    /// Receives up to a burst of GRE packets (or GRE-in-UDP reads, each possibly several
    /// datagrams) and hands them to the core. Returns true if more may be waiting.
    fn sock_burst(&mut self, now: Millis, b: &mut Buffers) -> bool {
        let Buffers { recv, send, .. } = b;
        let n = match recv.recv(self.socks.recv_fd()) {
            Ok(n) => n,
            Err(e) => {
                return match e.kind() {
                    io::ErrorKind::Interrupted => true,
                    io::ErrorKind::WouldBlock => false,
                    _ => {
                        log::warn!("worker {}: receiving GRE failed: {e}", self.id);
                        false
                    }
                };
            }
        };
        let recv: &RecvQueue = recv;
        let datagrams = recv.iter().map(|m| Datagram {
            source: m.source,
            data: m.data,
            segment_size: m.segment_size,
            truncated: m.truncated,
        });
        let mut out = Out {
            batch: send.batch(),
            socks: &self.socks,
            dest: &self.dest,
            tap: &self.tap,
            id: self.id,
            ring: self.ring_tx.as_mut(),
        };
        self.core.handle_tunnel_datagrams(now, datagrams, &mut out);
        n == BURST
    }

    /// Hands the packets waiting in the RX ring to the core. Returns true if more may be
    /// waiting.
    fn ring_burst(&mut self, now: Millis, b: &mut Buffers) -> bool {
        let Some(rx) = self.ring_rx.as_mut() else {
            return false;
        };
        let Buffers { send, .. } = b;
        let core = &mut self.core;
        let counters = core.counters().clone();
        let (socks, dest, tap, id) = (&self.socks, &self.dest, &self.tap, self.id);
        let ring_tx = &mut self.ring_tx;
        rx.burst(&counters, |datagrams| {
            let mut out = Out {
                batch: send.batch(),
                socks,
                dest,
                tap,
                id,
                ring: ring_tx.as_mut(),
            };
            core.handle_tunnel_datagrams(now, datagrams.map(shorten), &mut out)
        })
    }

    /// Sends the frames the core made, reads the path MTUs it asks for, and passes its
    /// learning updates to the other workers.
    fn drain(&mut self, b: &mut Buffers) {
        while let Some(t) = self.core.poll_transmit(&mut b.transmit) {
            let frame = &b.transmit[..t.len];
            let outcome = match t.dest {
                Dest::Tap => {
                    let r = if self.vnet {
                        self.tap
                            .writev(&[IoSlice::new(&NO_OFFLOAD), IoSlice::new(frame)])
                    } else {
                        self.tap.write(frame)
                    };
                    match r {
                        Ok(_) => SendOutcome::Sent,
                        Err(_) => SendOutcome::Error,
                    }
                }
                Dest::Tunnel { fragmentable } => {
                    let mut g = [0u8; gre::MAX_HEADER_LEN];
                    let gl = t.gre.header_len();
                    t.gre.emit_parts(&mut g[..gl], &[frame]);
                    let flow = if self.socks.is_udp() {
                        tunnel::flow_hash(frame)
                    } else {
                        0
                    };
                    let fd = self.socks.send_fd(flow, fragmentable);
                    let dest = self.dest[usize::from(t.port)];
                    match mmsg::send_one(fd, dest, &[&g[..gl], frame], None) {
                        Ok(()) => SendOutcome::Sent,
                        Err(e) => mmsg::outcome(e),
                    }
                }
            };
            self.core.handle_transmit_outcome(&t, outcome);
        }
        while let Some((port, addr)) = self.core.poll_path_mtu_query() {
            match sockopt::path_mtu(addr) {
                Ok(mtu) => self.core.handle_path_mtu(port, mtu),
                Err(e) => log::debug!("worker {}: path MTU to {addr}: {e}", self.id),
            }
        }
        if self.core.poll_bridge_flush() {
            match super::netdev::flush_bridge_port(&self.tap_name) {
                Ok(true) => log::info!(
                    "the local bridge forgot the stations it had learned on {} (they are \
                     reached around the loop now)",
                    self.tap_name
                ),
                Ok(false) => {}
                Err(e) => log::warn!(
                    "could not flush the bridge's entries for {}: {e}",
                    self.tap_name
                ),
            }
        }
        while let Some(u) = self.core.poll_sync() {
            for s in &self.sync_tx {
                if s.try_send(u).is_err() {
                    self.core.counters().event(Event::LearnSyncLost);
                }
            }
        }
    }
}
