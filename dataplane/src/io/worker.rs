//! One worker: a `mio` event loop owning one TAP queue, its sockets, one sans-io
//! [`Core`] and its buffers. It decides nothing: it waits for readiness or the core's next
//! deadline, reads a burst, hands it to the core together with a [`Sink`] over its send batch
//! and TAP queue, then sends what the core made and passes on what it asks for.

use super::busy_poll::{BusyPoll, Idle};
use super::gre_socket::Sockets;
use super::ring::{RingRx, RingTx};
use super::sys::mmsg::{self, RecvQueue, SendBatch, SendQueue};
use super::sys::sockopt;
use super::tap::TapQueue;
use crate::datapath::{
    outbox, Core, Crypto, Datagram, Dest, FdbDump, Flushed, NetId, SendOutcome, Sink,
    TapWriteError, TunnelMsg, OUTER_IP_UDP,
};
use crate::offload::{gro, MAX_HEADERS};
use crate::switch::ratelimit::LogLimiter;
use crate::switch::tunnel;
use crate::switch::{Event, Millis, PortId, PortKind, SyncUpdate};
use crate::wire::{gre, vnet};
use crossbeam_channel::{Receiver, Sender};
use dnet_crypto::wire::{HEADER_LEN as SEAL_HEADER, OVERHEAD as SEAL_OVERHEAD};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::io::{self, IoSlice};
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

/// Token of the tunnel socket; TAP queues have tokens 0.. by network.
const SOCK: Token = Token(usize::MAX - 1);
/// Token of the packet RX ring (`--packet-rings`).
const RING: Token = Token(usize::MAX - 2);
/// Token of the waker that interrupts `poll` for shutdown and control requests.
pub const WAKE: Token = Token(usize::MAX);

/// A request from the control plane to one worker, applied between bursts.
#[derive(Debug)]
pub enum WorkerCommand {
    /// Add (`Some`) or remove (`None`) port `id` of network `net`.
    SetPort {
        /// Network.
        net: NetId,
        /// Port id.
        id: PortId,
        /// What it is.
        kind: Option<PortKind>,
    },
    /// Forget the stations network `net` learned on `port` (all when `None`); replies with how
    /// many.
    FlushFdb {
        /// Network.
        net: NetId,
        /// Port, or all.
        port: Option<PortId>,
        /// Where the count goes.
        reply: Sender<usize>,
    },
    /// A copy of network `net`'s MAC table and the worker's clock.
    DumpFdb {
        /// Network.
        net: NetId,
        /// Where the copy goes.
        reply: Sender<FdbDump>,
    },
    /// Name peer host `addr` crypto peer `id` (`None`: forget it); `--encrypt`.
    SetHost {
        /// The host's underlay address.
        addr: std::net::Ipv4Addr,
        /// Its crypto peer id.
        id: Option<dnet_crypto::PeerId>,
    },
    /// A copy of network `net`'s ARP watcher's claims and conflicts (duplicate-IP detection).
    DumpConflicts {
        /// Network.
        net: NetId,
        /// Where the copy goes.
        reply: Sender<crate::switch::arp_watch::ArpDump>,
    },
}

/// Everything a worker owns, handed over at spawn.
pub struct Worker {
    /// Worker index (for logs).
    pub id: usize,
    /// Its queue of each network's TAP, by network.
    pub taps: Vec<TapQueue>,
    /// Each network's TAP name.
    pub tap_names: Vec<String>,
    /// The TAP passes virtio-net headers (offloads on).
    pub vnet: bool,
    /// Its sockets.
    pub socks: Sockets,
    /// Its core.
    pub core: Core,
    /// Control-plane requests.
    pub cmd_rx: Receiver<WorkerCommand>,
    /// Learning updates from the other workers.
    pub sync_rx: Receiver<(NetId, SyncUpdate)>,
    /// Learning updates to the other workers.
    pub sync_tx: Vec<Sender<(NetId, SyncUpdate)>>,
    /// Shared clock origin.
    pub epoch: Instant,
    /// Set to stop.
    pub stop: Arc<AtomicBool>,
    /// The poll instance (created before spawn so the waker can be handed out).
    pub poll: Poll,
    /// The tunnel encryption (`--encrypt`): tunnel messages are sealed on their way out.
    pub crypto: Option<Crypto>,
    /// Longest datagram a sealed message can be (largest TAP MTU + Ethernet header with a tag
    /// + GRE header + the seal's overhead).
    pub max_sealed: usize,
    /// Plain GRE leaves through this packet ring when it can (`--packet-rings`).
    pub ring_tx: Option<RingTx>,
    /// Plain GRE arrives through this packet ring (`--packet-rings`).
    pub ring_rx: Option<RingRx>,
    /// Polls a little longer after an exchange's traffic before sleeping (`--busy-poll`).
    pub busy_poll: BusyPoll,
}

/// A yield longer than this let another thread run: the core is wanted, stop busy polling.
/// (A yield with nothing else runnable returns in about a microsecond; another thread runs
/// for a time slice, milliseconds, unless it blocks first.)
const GAVE_WAY: Duration = Duration::from_micros(20);

/// Creates a poll instance and its waker.
pub fn poll_with_waker() -> io::Result<(Poll, Arc<Waker>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
    Ok((poll, waker))
}

/// What a tunnel message is tagged with in the send batch.
#[derive(Clone, Copy, Debug, Default)]
struct Tag {
    net: NetId,
    port: PortId,
    /// Inner frame bytes (counted on success).
    len: u32,
    /// Path MTU toward the peer (0: unknown).
    path_mtu: u32,
}

struct Buffers {
    tap_rx: Box<[u8]>,
    recv: RecvQueue,
    send: SendQueue<Tag>,
    /// Where [`Core::poll_transmit`] puts the frames the core made.
    transmit: Box<[u8]>,
    /// Where such a frame is sealed (`--encrypt`).
    sealed: Box<[u8]>,
    /// Keeps logs about failed reads to a few lines a second.
    read_log: LogLimiter,
}

/// The core's view of this worker's I/O for one burst: tunnel messages go into a send batch
/// that borrows the burst's frames, TAP frames are written at once.
struct Out<'a> {
    batch: SendBatch<'a, Tag>,
    socks: &'a Sockets,
    taps: &'a [TapQueue],
    id: usize,
    /// With `--encrypt`: the sessions to seal with, and the time.
    seal: Option<(&'a dnet_crypto::Sessions, Millis)>,
    /// What sealing refused since the last flush.
    refused: dnet_crypto::Counts,
    ring: Option<&'a mut RingTx>,
}

/// Lays out `gre`, `parts` as a sealed data message in `buf` (room for the seal's header
/// before and tag after) and seals it for `peer`. Returns its length, or counts why not.
fn seal_into(
    buf: &mut [u8],
    sessions: &dnet_crypto::Sessions,
    now: Millis,
    peer: dnet_crypto::PeerId,
    gre: &gre::Repr,
    parts: &[&[u8]],
    refused: &mut dnet_crypto::Counts,
) -> Option<usize> {
    let gl = gre.header_len();
    let body: usize = parts.iter().map(|p| p.len()).sum();
    let len = SEAL_OVERHEAD + gl + body;
    if len > buf.len() {
        refused.reject(dnet_crypto::Reject::Truncated);
        return None;
    }
    let mut at = SEAL_HEADER + gl;
    for p in parts {
        buf[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    let (head, rest) = buf.split_at_mut(SEAL_HEADER + gl);
    gre.emit_parts(&mut head[SEAL_HEADER..], &[&rest[..body]]);
    match sessions.seal_run(now, peer, &mut buf[..len], len) {
        Ok(_) => Some(len),
        Err(r) => {
            refused.reject(r);
            None
        }
    }
}

impl<'a> Sink<'a> for Out<'a> {
    #[inline]
    fn push_tunnel(&mut self, msg: &TunnelMsg<'_>, payload: &'a [u8]) {
        if let Some(r) = self.ring.as_deref_mut() {
            if r.push(msg, payload) {
                return;
            }
        }
        let fd = self.socks.send_fd(msg.flow, msg.fragmentable);
        let (repr, headers) = (msg.gre, msg.headers);
        let tag = Tag {
            net: msg.net,
            port: msg.port,
            len: (headers.len() + payload.len()) as u32,
            path_mtu: msg.path_mtu.unwrap_or(0),
        };
        if let (Some(peer), Some((sessions, now))) = (msg.seal, self.seal) {
            let refused = &mut self.refused;
            self.batch.push_owned(
                fd,
                msg.dest,
                |buf| {
                    seal_into(
                        buf,
                        sessions,
                        now,
                        peer,
                        &repr,
                        &[headers, payload],
                        refused,
                    )
                },
                tag,
            );
            return;
        }
        self.batch.push(
            fd,
            msg.dest,
            |room| {
                let gl = repr.header_len();
                let hl = gl + headers.len();
                room[gl..hl].copy_from_slice(headers);
                let (g, rest) = room.split_at_mut(gl);
                repr.emit_parts(g, &[&rest[..headers.len()], payload]);
                hl
            },
            payload,
            tag,
        );
    }

    #[inline]
    fn tunnel_full(&self) -> bool {
        self.batch.is_full() || self.ring.as_deref().is_some_and(RingTx::is_full)
    }

    #[inline]
    fn tunnel_empty(&self) -> bool {
        // Refused seals are reported by a flush too.
        self.batch.is_empty()
            && self.refused == dnet_crypto::Counts::default()
            && self.ring.as_deref().is_none_or(RingTx::is_empty)
    }

    fn flush_tunnels(
        &mut self,
        mut done: impl FnMut(NetId, PortId, usize, SendOutcome),
    ) -> Flushed {
        let mut f = Flushed::default();
        if let Some(r) = self.ring.as_deref_mut() {
            r.flush(&mut done);
        }
        let mut report = |t: Tag, r| done(t.net, t.port, t.len as usize, r);
        if !self.batch.udp_gso() {
            self.batch.flush(report);
            return f;
        }
        // The kernel cannot fragment a GSO datagram: a run must fit its path whole.
        let fits =
            |t: Tag, seg: usize| t.path_mtu == 0 || seg + OUTER_IP_UDP <= t.path_mtu as usize;
        let g = self.batch.flush_udp_gso(fits, &mut report);
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
    fn write_tap(
        &mut self,
        net: NetId,
        head: &[u8],
        payloads: &[&[u8]],
    ) -> Result<(), TapWriteError> {
        let Some(tap) = self.taps.get(usize::from(net)) else {
            return Err(TapWriteError::Failed);
        };
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
        match tap.writev(&iov[..n]) {
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
        for (i, tap) in self.taps.iter().enumerate() {
            reg.register(
                &mut SourceFd(&tap.as_raw_fd()),
                Token(i),
                Interest::READABLE,
            )?;
        }
        reg.register(
            &mut SourceFd(&self.socks.recv_fd().as_raw_fd()),
            SOCK,
            Interest::READABLE,
        )?;
        if let Some(r) = &self.ring_rx {
            reg.register(&mut SourceFd(&r.fd().as_raw_fd()), RING, Interest::READABLE)?;
        }
        let mut events = Events::with_capacity(16);
        let owned = if self.crypto.is_some() {
            self.max_sealed
        } else {
            0
        };
        let mut send = SendQueue::with_owned(TX_CAP, owned);
        send.set_udp_gso(self.socks.is_udp());
        let mut b = Buffers {
            tap_rx: vec![0u8; BURST * TAP_SLOT].into_boxed_slice(),
            recv: RecvQueue::new(BURST),
            send,
            transmit: vec![0u8; outbox::MAX_FRAME].into_boxed_slice(),
            sealed: vec![0u8; outbox::MAX_FRAME + gre::MAX_HEADER_LEN + SEAL_OVERHEAD]
                .into_boxed_slice(),
            read_log: LogLimiter::new(5, 10_000),
        };
        // Drain anything that arrived before registration.
        let mut tap_ready = vec![true; self.taps.len()];
        let mut sock_ready = true;
        let mut ring_ready = self.ring_rx.is_some();
        log::debug!("worker {} running", self.id);
        loop {
            let busy = sock_ready || ring_ready || tap_ready.iter().any(|r| *r);
            let timeout = if busy {
                Duration::ZERO
            } else {
                let now_us = self.now_us();
                match self.busy_poll.idle(now_us) {
                    Idle::Poll => {
                        // Only a core nothing else wants: a yield that lets another thread
                        // run takes far longer than one that returns at once.
                        let t = Instant::now();
                        std::thread::yield_now();
                        if t.elapsed() > GAVE_WAY {
                            self.busy_poll.give_way();
                        }
                        Duration::ZERO
                    }
                    Idle::Sleep { missed } => {
                        if missed {
                            self.core.global_counters().event(Event::BusyPollMiss);
                        }
                        let now = (now_us / 1000) as Millis;
                        let wait = self.core.poll_timeout().saturating_sub(now);
                        Duration::from_millis(wait.max(1))
                    }
                }
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            let mut traffic = busy;
            for ev in events.iter() {
                match ev.token() {
                    SOCK => sock_ready = true,
                    RING => ring_ready = true,
                    WAKE => continue,
                    Token(i) => {
                        if let Some(r) = tap_ready.get_mut(i) {
                            *r = true;
                        }
                    }
                }
                traffic = true;
            }
            // One clock read per turn: the µs for busy polling, the ms for the core.
            let now_us = self.now_us();
            let now = (now_us / 1000) as Millis;
            // `busy`: the last bursts filled up and more was waiting.
            if traffic && self.busy_poll.traffic(now_us, busy) {
                self.core.global_counters().event(Event::BusyPollHit);
            }
            if self.stop.load(Ordering::Relaxed) {
                log::debug!("worker {} stopping", self.id);
                return Ok(());
            }
            while let Ok((net, u)) = self.sync_rx.try_recv() {
                self.core.handle_sync(net, u);
            }
            while let Ok(c) = self.cmd_rx.try_recv() {
                self.command(now, c);
            }
            if let Some(r) = &mut self.ring_tx {
                r.maintain(now, &self.core);
            }
            if let Some(r) = &mut self.ring_rx {
                r.count_drops(now, self.core.global_counters());
            }
            for (i, ready) in tap_ready.iter_mut().enumerate() {
                if *ready {
                    *ready = self.tap_burst(now, i as NetId, &mut b)?;
                }
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
            WorkerCommand::SetPort { net, id, kind } => {
                self.core.set_port(net, id, kind);
                if let Some(r) = &mut self.ring_tx {
                    r.invalidate();
                }
            }
            WorkerCommand::SetHost { addr, id } => self.core.set_host(addr, id),
            WorkerCommand::FlushFdb { net, port, reply } => {
                let _ = reply.send(self.core.flush_fdb(net, port));
            }
            WorkerCommand::DumpFdb { net, reply } => {
                let _ = reply.send(self.core.fdb_dump(net, now));
            }
            WorkerCommand::DumpConflicts { net, reply } => {
                let _ = reply.send(self.core.conflicts(net, now));
            }
        }
    }

    #[inline]
    fn now(&self) -> Millis {
        self.epoch.elapsed().as_millis() as Millis
    }

    #[inline]
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Reads up to a burst from network `net`'s TAP and hands it to the core. Returns whether
    /// more may be waiting, or the error that says the TAP is gone.
    fn tap_burst(&mut self, now: Millis, net: NetId, b: &mut Buffers) -> io::Result<bool> {
        let Buffers {
            tap_rx,
            send,
            read_log,
            ..
        } = b;
        let (id, tap) = (self.id, &self.taps[usize::from(net)]);
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
                                "worker {id}: reading TAP {} failed: {e}{}",
                                self.tap_names[usize::from(net)],
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
            taps: &self.taps,
            id,
            seal: self.crypto.as_ref().map(|c| (&*c.sessions, now)),
            refused: Default::default(),
            ring: self.ring_tx.as_mut(),
        };
        self.core.handle_tap_frames(now, net, frames, &mut out);
        match gone {
            Some(e) => Err(io::Error::new(
                e.kind(),
                format!(
                    "reading TAP {} failed: {e} (was the TAP deleted?)",
                    self.tap_names[usize::from(net)]
                ),
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
        let datagrams = recv.iter_mut().map(|m| Datagram {
            source: m.source,
            data: m.data.into(),
            segment_size: m.segment_size,
            truncated: m.truncated,
        });
        let mut out = Out {
            batch: send.batch(),
            socks: &self.socks,
            taps: &self.taps,
            id: self.id,
            seal: self.crypto.as_ref().map(|c| (&*c.sessions, now)),
            refused: Default::default(),
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
        // Packets not yet known to belong to any network count switch-wide, as the core
        // counts what it refuses before reading the GRE key.
        let counters = core.global_counters().clone();
        let (socks, taps, id) = (&self.socks, &self.taps, self.id);
        let ring_tx = &mut self.ring_tx;
        let seal = self.crypto.as_ref().map(|c| (&*c.sessions, now));
        rx.burst(&counters, |datagrams| {
            let mut out = Out {
                batch: send.batch(),
                socks,
                taps,
                id,
                seal,
                refused: Default::default(),
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
                    let Some(tap) = self.taps.get(usize::from(t.net)) else {
                        continue;
                    };
                    let r = if self.vnet {
                        tap.writev(&[IoSlice::new(&NO_OFFLOAD), IoSlice::new(frame)])
                    } else {
                        tap.write(frame)
                    };
                    match r {
                        Ok(_) => SendOutcome::Sent,
                        Err(_) => SendOutcome::Error,
                    }
                }
                Dest::Handshake => {
                    let fd = self.socks.send_fd(0, false);
                    match mmsg::send_one(fd, t.to, &[frame], None) {
                        Ok(()) => SendOutcome::Sent,
                        Err(e) => mmsg::outcome(e),
                    }
                }
                Dest::Tunnel { fragmentable } => {
                    let flow = if self.socks.is_udp() {
                        tunnel::flow_hash(frame)
                    } else {
                        0
                    };
                    let fd = self.socks.send_fd(flow, fragmentable);
                    match (t.seal, &self.crypto) {
                        (Some(peer), Some(c)) => {
                            let mut refused = dnet_crypto::Counts::default();
                            let sealed = seal_into(
                                &mut b.sealed,
                                &c.sessions,
                                self.now(),
                                peer,
                                &t.gre,
                                &[frame],
                                &mut refused,
                            );
                            self.core.global_counters().add_crypto(&refused);
                            match sealed {
                                Some(len) => {
                                    match mmsg::send_one(fd, t.to, &[&b.sealed[..len]], None) {
                                        Ok(()) => SendOutcome::Sent,
                                        Err(e) => mmsg::outcome(e),
                                    }
                                }
                                None => SendOutcome::Error,
                            }
                        }
                        _ => {
                            let mut g = [0u8; gre::MAX_HEADER_LEN];
                            let gl = t.gre.header_len();
                            t.gre.emit_parts(&mut g[..gl], &[frame]);
                            match mmsg::send_one(fd, t.to, &[&g[..gl], frame], None) {
                                Ok(()) => SendOutcome::Sent,
                                Err(e) => mmsg::outcome(e),
                            }
                        }
                    }
                }
            };
            self.core.handle_transmit_outcome(&t, outcome);
        }
        while let Some((net, port, addr)) = self.core.poll_path_mtu_query() {
            match sockopt::path_mtu(addr) {
                Ok(mtu) => self.core.handle_path_mtu(net, port, mtu),
                Err(e) => log::debug!("worker {}: path MTU to {addr}: {e}", self.id),
            }
        }
        while let Some(net) = self.core.poll_bridge_flush() {
            let tap = &self.tap_names[usize::from(net)];
            match super::netdev::flush_bridge_port(tap) {
                Ok(true) => log::info!(
                    "the local bridge forgot the stations it had learned on {tap} (they are \
                     reached around the loop now)"
                ),
                Ok(false) => {}
                Err(e) => log::warn!("could not flush the bridge's entries for {tap}: {e}"),
            }
        }
        while let Some((net, u)) = self.core.poll_sync() {
            for s in &self.sync_tx {
                if s.try_send((net, u)).is_err() {
                    self.core.counters(net).event(Event::LearnSyncLost);
                }
            }
        }
    }
}
