//! One worker: a `mio` event loop owning one TAP queue, one raw GRE socket, one switch core
//! and its buffers. Reads are drained in bursts (mio is edge-triggered), decisions come from
//! the core, tunnel output leaves in one `sendmmsg` per burst.

use super::batch::{RxBatch, TxBatch, TxResult, SLOT_LEN};
use super::gre_socket::GreSocket;
use super::tap::TapQueue;
use crate::switch::fdb::Entry;
use crate::switch::tunnel::{self, GreOptions, PeerTable};
use crate::switch::{
    Action, DropReason, Event, FdbKey, Millis, PortId, PortKind, Switch, SyncUpdate,
};
use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::io;
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
const TICK_MS: u64 = 1000;

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
}

/// Creates a poll instance and its shutdown waker.
pub fn poll_with_waker() -> io::Result<(Poll, Arc<Waker>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
    Ok((poll, waker))
}

struct Buffers {
    tap_rx: Box<[u8]>,
    tap_len: [usize; BURST],
    gre_rx: RxBatch,
    tx: TxBatch,
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
            tap_rx: vec![0u8; BURST * SLOT_LEN].into_boxed_slice(),
            tap_len: [0; BURST],
            gre_rx: RxBatch::new(BURST),
            tx: TxBatch::new(TX_CAP),
        };
        // Drain anything that arrived before registration.
        let (mut tap_ready, mut sock_ready) = (true, true);
        let mut next_tick: u64 = 0;
        log::debug!("worker {} running", self.id);
        loop {
            let timeout = if tap_ready || sock_ready {
                Duration::ZERO
            } else {
                Duration::from_millis(next_tick.saturating_sub(self.now()).max(1))
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
            let now = self.now();
            while let Ok(c) = self.cmd_rx.try_recv() {
                self.command(now, c);
            }
            if tap_ready {
                tap_ready = self.tap_burst(now, &mut b);
            }
            if sock_ready {
                sock_ready = self.gre_burst(now, &mut b);
            }
            if now >= next_tick {
                self.core.handle_timeout(now);
                next_tick = now + TICK_MS;
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
                            self.dest[i] = super::gre_socket::sockaddr(addr);
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

    /// Queues `frame` for tunnel port `port`.
    #[inline]
    fn to_tunnel(&self, tx: &mut TxBatch, port: PortId, frame: &[u8]) {
        let seq = if self.gre.seq {
            self.seq[usize::from(port)].fetch_add(1, Ordering::Relaxed)
        } else {
            0
        };
        let repr = self.gre.repr(seq);
        // SAFETY: `frame` lives in this worker's receive buffers and `dest` in `self`; neither
        // is touched again before the batch is flushed at the end of this burst.
        unsafe { tx.push(&self.dest[usize::from(port)], &repr, frame, port) };
    }

    #[inline]
    fn to_tap(&self, frame: &[u8]) {
        match self.tap.write(frame) {
            Ok(_) => self.core.counters().tx(0, frame.len()),
            Err(_) => self.core.counters().dropped(DropReason::TapWriteError),
        }
    }

    fn flush(&self, tx: &mut TxBatch) {
        let c = self.core.counters();
        tx.flush(self.sock.as_raw_fd(), |port, len, r| match r {
            TxResult::Sent => c.tx(port, len as usize),
            TxResult::TooBig => c.dropped(DropReason::TooBig),
            TxResult::QueueFull => c.dropped(DropReason::TxQueueFull),
            TxResult::Error => c.dropped(DropReason::TxError),
        });
    }

    /// Sends `frame` (from `ingress`) wherever the verdict says.
    #[inline]
    fn output(&self, tx: &mut TxBatch, ingress: PortId, action: Action, frame: &[u8]) {
        match action {
            Action::Drop(_) => {}
            Action::Forward(p) => self.output_one(tx, p, frame),
            Action::Flood => {
                for p in self.core.flood_targets(ingress) {
                    self.output_one(tx, p, frame);
                }
            }
        }
    }

    #[inline]
    fn output_one(&self, tx: &mut TxBatch, port: PortId, frame: &[u8]) {
        match self.core.port(port) {
            Some(PortKind::Local) => self.to_tap(frame),
            Some(PortKind::Tunnel(_)) => {
                if tx.is_full() {
                    self.flush(tx);
                }
                self.to_tunnel(tx, port, frame);
            }
            None => {}
        }
    }

    /// Reads up to a burst from the TAP and forwards it. Returns true if more may be waiting.
    fn tap_burst(&mut self, now: u64, b: &mut Buffers) -> bool {
        let mut n = 0;
        let mut more = true;
        while n < BURST {
            let slot = &mut b.tap_rx[n * SLOT_LEN..(n + 1) * SLOT_LEN];
            match self.tap.read(slot) {
                Ok(len) => {
                    b.tap_len[n] = len;
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        log::warn!("worker {}: reading the TAP failed: {e}", self.id);
                    }
                    more = false;
                    break;
                }
            }
        }
        for i in 0..n {
            let frame = &b.tap_rx[i * SLOT_LEN..i * SLOT_LEN + b.tap_len[i]];
            let v = self.core.handle(now, 0, frame);
            self.publish(v.sync);
            self.output(&mut b.tx, 0, v.action, frame);
        }
        if !b.tx.is_empty() {
            self.flush(&mut b.tx);
        }
        more
    }

    /// Receives up to a burst of GRE packets and forwards their frames. Returns true if more
    /// may be waiting.
    fn gre_burst(&mut self, now: u64, b: &mut Buffers) -> bool {
        let n = match b.gre_rx.recv(self.sock.as_raw_fd()) {
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
        for i in 0..n {
            let Some(pkt) = b.gre_rx.packet(i) else {
                self.core.counters().dropped(DropReason::Oversize);
                continue;
            };
            match tunnel::decap(pkt, &self.peers, &self.gre) {
                Err(why) => self.core.counters().dropped(why),
                Ok((port, frame)) => {
                    let v = self.core.handle(now, port, frame);
                    self.publish(v.sync);
                    self.output(&mut b.tx, port, v.action, frame);
                }
            }
        }
        if !b.tx.is_empty() {
            self.flush(&mut b.tx);
        }
        n == BURST
    }
}
