//! One worker: a `mio` event loop owning one TAP queue, one raw GRE socket, one switch core
//! and its buffers. Reads are drained in bursts (mio is edge-triggered), decisions come from
//! the core, tunnel output leaves in one `sendmmsg` per burst.

use super::batch::{RxBatch, TxBatch, TxResult, SLOT_LEN};
use super::gre_socket::GreSocket;
use super::tap::TapQueue;
use super::udp_gso::{GsoTx, OUTER_IP_UDP};
use crate::offload::udp_gro::{self, UdpGro};

// One iovec array serves both kinds of run.
const _: () = assert!(udp_gro::MAX_SEGS <= gro::MAX_SEGS);
use crate::offload::{self, gro, gro::Add, gro::Gro, MAX_HEADERS};
use crate::switch::fdb::Entry;
use crate::switch::tunnel::{self, GreOptions, PeerTable};
use crate::switch::{
    Action, DropReason, Event, FdbKey, Millis, PortId, PortKind, Switch, SyncUpdate,
};
use crate::wire::vnet::{self, VnetHdr};
use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::io;
use std::io::IoSlice;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Frames read from one source per turn of the loop; bounds latency for the other source.
pub const BURST: usize = 32;
/// Messages per `sendmmsg`: a burst flooded to a few peers fits.
const TX_CAP: usize = 128;
/// Learning updates queued per worker before further ones are dropped (and counted).
pub const SYNC_QUEUE: usize = 4096;
/// Control-plane commands queued per worker (the control server blocks beyond that).
pub const CMD_QUEUE: usize = 64;
const TICK_MS: u64 = 1000;
/// A TAP read: virtio-net header + the largest super-frame (Ethernet + tag + 64 KiB IP).
const TAP_SLOT: usize = vnet::LEN + SLOT_LEN + 64;

const TAP: Token = Token(0);
const SOCK: Token = Token(1);
/// Token of the waker that interrupts `poll` for shutdown.
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

/// One worker's MAC table, copied for display.
#[derive(Debug, Clone)]
pub struct FdbDump {
    /// The worker's clock when copied.
    pub now: Millis,
    /// Every entry.
    pub entries: Vec<(FdbKey, Entry)>,
}

/// Everything a worker owns, handed over at spawn.
pub struct Worker {
    /// Worker index (for logs).
    pub id: usize,
    /// Its TAP queue.
    pub tap: TapQueue,
    /// The TAP passes virtio-net headers (offloads on).
    pub vnet: bool,
    /// Runs of UDP datagrams for the TAP may be written as one UDP GSO frame (the kernel
    /// takes them; turned off for good if a write is refused anyway).
    pub udp_coalesce: std::cell::Cell<bool>,
    /// Its GRE socket.
    pub sock: GreSocket,
    /// Its switch core.
    pub core: Switch,
    /// Peer address → port.
    pub peers: PeerTable,
    /// Destination address per port id (unused for local ports); `MAX_PORTS` long so adding a
    /// peer never moves it.
    pub dest: Box<[libc::sockaddr_in]>,
    /// Control-plane requests.
    pub cmd_rx: Receiver<WorkerCommand>,
    /// GRE options.
    pub gre: GreOptions,
    /// Per-port GRE sequence numbers, shared by workers (only touched with `--seq`).
    pub seq: Arc<[AtomicU32]>,
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
    /// Path MTU learning and the DF-off socket (see [`super::pmtu`]).
    pub pmtu: super::pmtu::PmtuIo,
}

/// Creates a poll instance and its shutdown waker.
pub fn poll_with_waker() -> io::Result<(Poll, Arc<Waker>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
    Ok((poll, waker))
}

/// The frames of one receive burst being coalesced for the TAP: a TCP run and a UDP run
/// (each of one flow; frames of other kinds flush both and go after them).
#[derive(Default)]
struct Runs<'a> {
    tcp: Gro<'a>,
    udp: UdpGro<'a>,
}

struct Buffers {
    tap_rx: Box<[u8]>,
    tap_len: [usize; BURST],
    gre_rx: RxBatch,
    tx: TxBatch,
    /// Keeps logs about dropped packets to a few lines a second.
    drop_log: crate::switch::ratelimit::LogLimiter,
    /// A TAP read failed for good (the TAP was deleted): the worker stops with this error.
    tap_dead: Option<io::Error>,
    /// Scratch for UDP GSO sends (`--encap udp`).
    gso_tx: super::udp_gso::GsoTx,
}

impl Worker {
    /// Runs until `stop` is set. Errors only if the event loop itself fails.
    pub fn run(mut self) -> io::Result<()> {
        let reg = self.poll.registry();
        reg.register(
            &mut SourceFd(&self.tap.as_raw_fd()),
            TAP,
            Interest::READABLE,
        )?;
        reg.register(
            &mut SourceFd(&self.sock.as_raw_fd()),
            SOCK,
            Interest::READABLE,
        )?;
        let mut events = Events::with_capacity(16);
        let mut b = Buffers {
            tap_rx: vec![0u8; BURST * TAP_SLOT].into_boxed_slice(),
            tap_len: [0; BURST],
            gre_rx: RxBatch::new(BURST),
            tx: TxBatch::new(TX_CAP),
            drop_log: crate::switch::ratelimit::LogLimiter::new(5, 10_000),
            tap_dead: None,
            gso_tx: Default::default(),
        };
        b.tx.udp_gso = self.sock.is_udp();
        // Drain anything that arrived before registration.
        let (mut tap_ready, mut sock_ready) = (true, true);
        let mut next_tick: u64 = 0;
        // Only one worker (the leader) runs the spanning tree's timers.
        let stp_leader = self.id == 0 && self.core.stp().is_some();
        let mut next_stp: u64 = 0;
        log::debug!("worker {} running", self.id);
        loop {
            let timeout = if tap_ready || sock_ready {
                Duration::ZERO
            } else {
                let mut wake = next_tick.min(self.core.liveness_due().unwrap_or(u64::MAX));
                if stp_leader {
                    wake = wake.min(next_stp);
                }
                Duration::from_millis(wake.saturating_sub(self.now()).max(1))
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
                    _ => {}
                }
            }
            if self.stop.load(Ordering::Relaxed) {
                log::debug!("worker {} stopping", self.id);
                return Ok(());
            }
            while let Ok(u) = self.sync_rx.try_recv() {
                self.core.apply_sync(u);
            }
            self.core.stp_sync();
            let now = self.now();
            while let Ok(c) = self.cmd_rx.try_recv() {
                self.command(now, c);
            }
            if tap_ready {
                tap_ready = self.tap_burst(now, &mut b);
                if let Some(e) = b.tap_dead.take() {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("reading the TAP failed: {e} (was the TAP deleted?)"),
                    ));
                }
            }
            if sock_ready {
                sock_ready = self.gre_burst(now, &mut b);
            }
            if now >= next_tick {
                self.core.handle_timeout(now);
                next_tick = now + TICK_MS;
            }
            if self.pmtu.due(now) {
                self.refresh_pmtu(now);
            }
            if self.core.liveness_due().is_some_and(|d| now >= d) {
                self.keepalive_tick(now, &mut b.tx);
                // A peer declared down may have changed the tree: send its news now.
                next_stp = next_stp.min(now);
            }
            if stp_leader && now >= next_stp {
                self.stp_tick(now, &mut b.tx);
                next_stp = now + super::stp::TICK_MS;
            }
        }
    }

    fn command(&mut self, now: Millis, c: WorkerCommand) {
        match c {
            WorkerCommand::SetPort { id, kind } => {
                let i = usize::from(id);
                if let Some(PortKind::Tunnel(old)) = self.core.port(id) {
                    self.peers.remove(old);
                }
                match kind {
                    Some(k) => {
                        self.core.counters().ports[i].reset();
                        if let PortKind::Tunnel(addr) = k {
                            self.peers.insert(addr, id);
                            self.dest[i] = super::gre_socket::dest(addr, &self.gre);
                        }
                        self.core.set_port(id, k);
                    }
                    None => self.core.remove_port(id),
                }
            }
            WorkerCommand::FlushFdb { port, reply } => {
                let _ = reply.send(self.core.flush(port));
            }
            WorkerCommand::DumpFdb { reply } => {
                let _ = reply.send(FdbDump {
                    now,
                    entries: self.core.fdb().iter().collect(),
                });
            }
            WorkerCommand::DumpConflicts { reply } => {
                let _ = reply.send(self.core.arp_watch().dump(now));
            }
        }
    }

    #[inline]
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn publish(&self, u: Option<SyncUpdate>) {
        if let Some(u) = u {
            for s in &self.sync_tx {
                if s.try_send(u).is_err() {
                    self.core.counters().event(Event::LearnSyncLost);
                }
            }
        }
    }

    /// Queues a frame (`headers` + `payload`) for tunnel port `port`.
    #[inline]
    fn to_tunnel(&self, tx: &mut TxBatch, port: PortId, headers: &[u8], payload: &[u8]) {
        let seq = if self.gre.seq {
            self.seq[usize::from(port)].fetch_add(1, Ordering::Relaxed)
        } else {
            0
        };
        let repr = self.gre.repr(seq);
        // A segment's flow is in its headers; a whole frame's in the frame.
        let fd = self.send_fd(if headers.is_empty() { payload } else { headers });
        // SAFETY: `frame` lives in this worker's receive buffers and `dest` in `self`; neither
        // is touched again before the batch is flushed at the end of this burst; `fd` is
        // this worker's.
        unsafe {
            tx.push_parts(
                fd,
                &self.dest[usize::from(port)],
                &repr,
                headers,
                payload,
                port,
            )
        };
    }

    /// The socket `frame` (or a segment with these headers) leaves from: with GRE-in-UDP,
    /// the source port of its flow.
    #[inline]
    pub(super) fn send_fd(&self, frame: &[u8]) -> std::os::fd::RawFd {
        if self.sock.spreads_flows() {
            self.sock.send_fd(tunnel::flow_hash(frame))
        } else {
            self.sock.as_raw_fd()
        }
    }

    /// Writes one frame to the TAP as is (behind an empty virtio-net header when offloads are
    /// on).
    #[inline]
    pub(super) fn to_tap(&self, frame: &[u8]) {
        let r = if self.vnet {
            self.tap
                .writev(&[IoSlice::new(&[0u8; vnet::LEN]), IoSlice::new(frame)])
        } else {
            self.tap.write(frame)
        };
        match r {
            Ok(_) => self.core.counters().tx(0, frame.len()),
            Err(_) => self.core.counters().dropped(DropReason::TapWriteError),
        }
    }

    /// Writes the coalesced runs in `runs` (if any) to the TAP, one frame each.
    fn flush_gro(&self, runs: &mut Runs<'_>) {
        let mut head = [0u8; vnet::LEN + MAX_HEADERS];
        if !runs.tcp.is_empty() {
            let (hl, parts) = runs.tcp.finish(&mut head);
            // A failed write is counted there.
            let _ = self.write_run(&head[..hl], parts);
        }
        if !runs.udp.is_empty() {
            let (hl, parts) = runs.udp.finish(&mut head);
            let n = parts.len();
            match self.write_run(&head[..hl], parts) {
                Ok(()) if n > 1 => self.core.counters().event(Event::UdpCoalesced),
                Err(e) if n > 1 && e.raw_os_error() == Some(libc::EINVAL) => {
                    self.udp_coalesce.set(false);
                    log::warn!(
                        "worker {}: the TAP refused a UDP GSO frame ({e}); writing UDP \
                         datagrams one by one from now on",
                        self.id
                    );
                }
                _ => {}
            }
        }
    }

    /// Writes a run's headers (`head`, virtio-net header first) and payloads as one frame.
    fn write_run(&self, head: &[u8], parts: &[&[u8]]) -> io::Result<()> {
        let hl = head.len();
        let mut iov = [IoSlice::new(&[]); gro::MAX_SEGS + 1];
        iov[0] = IoSlice::new(head);
        // Counted as the segments that arrived, so counters read the same with offloads off.
        let mut wire = 0;
        for (slot, p) in iov[1..].iter_mut().zip(parts) {
            *slot = IoSlice::new(p);
            wire += hl - vnet::LEN + p.len();
        }
        match self.tap.writev(&iov[..parts.len() + 1]) {
            Ok(_) => {
                self.core.counters().tx_many(0, parts.len() as u64, wire);
                Ok(())
            }
            Err(e) => {
                for _ in 0..parts.len() {
                    self.core.counters().dropped(DropReason::TapWriteError);
                }
                Err(e)
            }
        }
    }

    pub(super) fn flush(&self, tx: &mut TxBatch) {
        let c = self.core.counters();
        let done = |port, len, r| match r {
            TxResult::Sent => c.tx(port, len as usize),
            TxResult::TooBig => {
                c.dropped(DropReason::TooBig);
                self.pmtu.too_big();
            }
            TxResult::QueueFull => c.dropped(DropReason::TxQueueFull),
            TxResult::Error => c.dropped(DropReason::TxError),
        };
        if !tx.udp_gso {
            tx.flush(done);
            return;
        }
        let fits = |port, seg: usize| {
            self.core
                .path_mtu(port)
                .map_or(true, |m| seg + OUTER_IP_UDP <= m as usize)
        };
        let f = tx.flush_udp_gso(fits, done);
        c.events_add(Event::UdpGsoSent, f.messages);
        match f.refused {
            None => {}
            // Larger than the path now: re-read it; `fits` keeps later runs within it.
            Some(libc::EMSGSIZE | libc::EINVAL) => self.pmtu.too_big(),
            Some(e) => {
                tx.udp_gso = false;
                log::warn!(
                    "worker {}: UDP GSO refused ({}); sending small GRE-in-UDP datagrams one by one",
                    self.id,
                    io::Error::from_raw_os_error(e)
                );
            }
        }
    }

    /// Sends `frame` (from `ingress`) wherever the verdict says. `gso` describes a TCP
    /// super-frame from the TAP, which tunnels get as MSS-sized segments.
    #[inline]
    fn output(
        &self,
        tx: &mut TxBatch,
        gtx: &mut GsoTx,
        ingress: PortId,
        action: Action,
        frame: &[u8],
        gso: Option<&VnetHdr>,
    ) {
        match action {
            Action::Drop(_) => {}
            Action::Forward(p) => self.output_one(tx, gtx, ingress, p, frame, gso),
            Action::Flood => {
                for p in self.core.flood_targets(ingress) {
                    self.output_one(tx, gtx, ingress, p, frame, gso);
                }
            }
        }
    }

    #[inline]
    fn output_one(
        &self,
        tx: &mut TxBatch,
        gtx: &mut GsoTx,
        ingress: PortId,
        port: PortId,
        frame: &[u8],
        gso: Option<&VnetHdr>,
    ) {
        match self.core.port(port) {
            Some(PortKind::Local) => self.to_tap(frame),
            Some(PortKind::Tunnel(_)) => match gso {
                None => {
                    if frame.len() > self.core.max_tunnel_frame(port)
                        && !self.oversize(ingress, port, frame)
                    {
                        return;
                    }
                    if tx.is_full() {
                        self.flush(tx);
                    }
                    self.to_tunnel(tx, port, &[], frame);
                }
                Some(h) if self.sock.is_udp() && !gtx.broken => {
                    self.send_udp_gso(gtx, tx, port, frame, h);
                }
                Some(h) => {
                    let h = &self.fit_gso(port, frame, h);
                    let r = offload::gso::segment(frame, h, |hdrs, payload| {
                        if tx.is_full() {
                            self.flush(tx);
                        }
                        self.to_tunnel(tx, port, hdrs, payload);
                    });
                    if r.is_err() {
                        self.core.counters().dropped(DropReason::BadOffload);
                    }
                }
            },
            None => {}
        }
    }

    /// Reads up to a burst from the TAP and forwards it. Returns true if more may be waiting.
    fn tap_burst(&mut self, now: u64, b: &mut Buffers) -> bool {
        let mut n = 0;
        let mut more = true;
        while n < BURST {
            let slot = &mut b.tap_rx[n * TAP_SLOT..(n + 1) * TAP_SLOT];
            match self.tap.read(slot) {
                Ok(len) => {
                    b.tap_len[n] = len;
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if crate::io::watch::tap_gone(&e) {
                        b.tap_dead = Some(e);
                    } else if e.kind() != io::ErrorKind::WouldBlock {
                        if let Some(k) = b.drop_log.allow(now) {
                            log::warn!(
                                "worker {}: reading the TAP failed: {e}{}",
                                self.id,
                                crate::switch::ratelimit::LogLimiter::suffix(k)
                            );
                        }
                    }
                    more = false;
                    break;
                }
            }
        }
        for i in 0..n {
            let slot = &mut b.tap_rx[i * TAP_SLOT..i * TAP_SLOT + b.tap_len[i]];
            let (frame, gso) = if self.vnet {
                let Ok(h) = VnetHdr::parse(slot) else {
                    self.core.counters().dropped(DropReason::BadOffload);
                    continue;
                };
                let frame = &mut slot[vnet::LEN..];
                if h.gso_kind() == vnet::gso::NONE {
                    if offload::gso::complete_checksum(frame, &h).is_err() {
                        self.core.counters().dropped(DropReason::BadOffload);
                        continue;
                    }
                    self.core.clamp_mss(frame);
                    (&*frame, None)
                } else {
                    (&*frame, Some(h))
                }
            } else {
                self.core.clamp_mss(slot);
                (&*slot, None)
            };
            if self.core.stp().is_some() && crate::wire::bpdu::is_bpdu(frame) {
                // The TAP is an edge port: a bridge behind it does not join the tree.
                self.core.counters().dropped(DropReason::EdgeBpdu);
                continue;
            }
            let v = self.core.handle(now, 0, frame);
            if let Some(h) = &gso {
                // The core counted one frame; count the segments it stands for instead.
                if let Some((n, wire)) = offload::gso::wire_size(frame, h) {
                    self.core
                        .counters()
                        .rx_many(0, n - 1, wire.saturating_sub(frame.len()));
                }
            }
            self.publish(v.sync);
            self.output(&mut b.tx, &mut b.gso_tx, 0, v.action, frame, gso.as_ref());
        }
        if !b.tx.is_empty() {
            self.flush(&mut b.tx);
        }
        more
    }

    /// Receives up to a burst of GRE packets (or GRE-in-UDP reads, each possibly several
    /// datagrams) and forwards their frames; consecutive TCP segments for the TAP are
    /// coalesced into super-frames when offloads are on. Returns true if more may be waiting.
    fn gre_burst(&mut self, now: u64, b: &mut Buffers) -> bool {
        let Buffers {
            gre_rx,
            tx,
            gso_tx,
            drop_log,
            ..
        } = b;
        let n = match gre_rx.recv(self.sock.as_raw_fd()) {
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
        let gre_rx: &RxBatch = gre_rx;
        let udp = self.sock.is_udp();
        let mut run = Runs::default();
        for i in 0..n {
            let Some(pkt) = gre_rx.packet(i) else {
                self.core.counters().dropped(DropReason::Oversize);
                continue;
            };
            if !udp {
                match tunnel::decap(pkt, &self.peers, &self.gre) {
                    Ok((port, frame)) => self.tunnel_frame(now, port, frame, &mut run, tx, gso_tx),
                    Err(why) => self.gre_drop(now, drop_log, pkt, why),
                }
                continue;
            }
            let src = gre_rx.source(i);
            if pkt.is_empty() {
                self.core.counters().dropped(DropReason::GreTruncated);
                continue;
            }
            let seg = match gre_rx.segment_size(i) {
                Some(s) if s < pkt.len() => {
                    self.core.counters().event(Event::UdpGroReceived);
                    s
                }
                _ => pkt.len().max(1),
            };
            for d in pkt.chunks(seg) {
                match tunnel::decap_gre(src, d, &self.peers, &self.gre) {
                    Ok((port, frame)) => self.tunnel_frame(now, port, frame, &mut run, tx, gso_tx),
                    Err(why) => self.core.counters().dropped(why),
                }
            }
        }
        self.flush_gro(&mut run);
        if !tx.is_empty() {
            self.flush(tx);
        }
        n == BURST
    }

    fn gre_drop(
        &self,
        now: u64,
        drop_log: &mut crate::switch::ratelimit::LogLimiter,
        pkt: &[u8],
        why: DropReason,
    ) {
        self.core.counters().dropped(why);
        if log::log_enabled!(log::Level::Debug) {
            if let Some(k) = drop_log.allow(now) {
                crate::io::watch::log_gre_drop(self.id, pkt, why, k);
            }
        }
    }

    /// One inner frame from tunnel `port`: keepalive, BPDU, or data to forward (coalesced into
    /// `run` when it is a TCP segment for the TAP).
    fn tunnel_frame<'a>(
        &mut self,
        now: u64,
        port: PortId,
        frame: &'a [u8],
        run: &mut Runs<'a>,
        tx: &mut TxBatch,
        gtx: &mut GsoTx,
    ) {
        if self.core.keepalive_rx(now, port, frame) {
            return;
        }
        if self.core.stp().is_some() && crate::wire::bpdu::is_bpdu(frame) {
            self.flush_gro(run);
            self.stp_rx(now, port, frame, tx);
            return;
        }
        let v = self.core.handle(now, port, frame);
        self.publish(v.sync);
        let to_tap =
            matches!(v.action, Action::Forward(p) if self.core.port(p) == Some(PortKind::Local));
        if self.vnet && to_tap {
            let udp = self.udp_coalesce.get();
            let mut add = run.tcp.add(frame);
            if add == Add::Alone && udp {
                add = run.udp.add(frame);
            }
            match add {
                Add::Added => return,
                Add::Mismatch => {
                    self.flush_gro(run);
                    if run.tcp.add(frame) == Add::Added || (udp && run.udp.add(frame) == Add::Added)
                    {
                        return;
                    }
                }
                Add::Alone => self.flush_gro(run),
            }
        } else {
            // Anything else keeps its place after the segments received before it.
            self.flush_gro(run);
        }
        self.output(tx, gtx, port, v.action, frame, None);
    }
}
