//! The per-worker sans-io core, in quinn-proto's shape: every decision a worker makes, with no
//! socket, no file descriptor and no clock.
//!
//! Inputs (`handle_*`, time passed in): frames from the TAP, datagrams from a tunnel socket,
//! the outcome of a frame the core asked to send, a path MTU the edge read, a learning update
//! from another worker, and the passing of time. Outputs: forwarded frames go to the [`Sink`]
//! the edge passes in (borrowed, never copied); frames the core makes itself (hellos, BPDUs,
//! ICMP errors) come out of [`Core::poll_transmit`]; path MTUs to read out of
//! [`Core::poll_path_mtu_query`]; learning updates for the other workers out of
//! [`Core::poll_sync`]; and [`Core::poll_timeout`] says when to call [`Core::handle_timeout`].
//!
//! The edge ([`crate::io::worker`]) is then a loop: wait for readiness or the core's next
//! deadline, read a burst, feed it to the core, send what it returns, drain the `poll_*`
//! queues.
//!
//! Inside, [`crate::switch::Switch`] makes the forwarding decision and holds the MAC table;
//! [`egress`] turns decisions into messages; [`outbox`] holds the frames the core made;
//! [`timers`] says when periodic work is due.

pub mod egress;
pub mod outbox;
pub mod sink;
pub mod timers;

#[cfg(test)]
mod tests;

pub use outbox::Dest;
pub use sink::{Flushed, SendOutcome, Sink, TapWriteError, TunnelMsg};

use crate::offload;
use crate::switch::fdb::Entry;
use crate::switch::ratelimit::LogLimiter;
use crate::switch::tunnel::{self, GreOptions, PeerTable};
use crate::switch::{
    self, arp_watch, liveness, stp, Action, Counters, DropReason, Event, FdbKey, Millis, PortId,
    PortKind, Switch, SyncUpdate,
};
use crate::wire::vnet::{self, VnetHdr};
use crate::wire::{bpdu, gre, ipv4};
use egress::{Egress, TapRuns};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Arc;
use timers::{PmtuSchedule, AGING_MS, STP_TICK_MS};

/// A datagram from a tunnel socket.
#[derive(Clone, Copy, Debug)]
pub struct Datagram<'a> {
    /// The sender's underlay address.
    pub source: Ipv4Addr,
    /// For plain GRE the whole IPv4 packet; for GRE-in-UDP the UDP payload (GRE header and
    /// frame), possibly several datagrams of `segment_size` bytes each.
    pub data: &'a [u8],
    /// Set when the kernel coalesced several GRE-in-UDP datagrams (`UDP_GRO`): each but the
    /// last is this long.
    pub segment_size: Option<usize>,
    /// It did not fit the receive buffer and was cut short.
    pub truncated: bool,
}

/// A frame the core made, to be sent now (from [`Core::poll_transmit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The port it leaves by.
    pub port: PortId,
    /// The TAP, or a tunnel (with outer DF off or not).
    pub dest: Dest,
    /// For a tunnel: the GRE header to put first.
    pub gre: gre::Repr,
    /// Bytes of the frame, at the start of the buffer given to `poll_transmit`.
    pub len: usize,
    /// Counted as port traffic (ICMP errors are; hellos and BPDUs count as control).
    pub counted: bool,
}

/// One worker's MAC table, copied for display.
#[derive(Debug, Clone)]
pub struct FdbDump {
    /// The worker's clock when copied.
    pub now: Millis,
    /// Every entry.
    pub entries: Vec<(FdbKey, Entry)>,
}

/// State the cores of one switch share.
#[derive(Clone, Debug)]
pub struct Shared {
    /// Per-port GRE sequence numbers (`--seq`).
    pub seq: Arc<[AtomicU32]>,
    /// Bumped when any worker sees a send refused as too big, so every worker re-reads the
    /// path MTUs.
    pub pmtu_refusals: Arc<AtomicU64>,
    /// Peer liveness (`--keepalive`).
    pub liveness: Arc<liveness::Shared>,
    /// The spanning tree (`--stp`).
    pub stp: Option<Arc<stp::Shared>>,
    /// Tunnels the loop guard blocked.
    pub loop_guard: Arc<switch::loopguard::Shared>,
}

impl Shared {
    /// Fresh shared state, with the spanning tree `stp` if any.
    pub fn new(stp: Option<Arc<stp::Shared>>) -> Shared {
        Shared {
            seq: (0..switch::MAX_PORTS).map(|_| AtomicU32::new(0)).collect(),
            pmtu_refusals: Arc::new(AtomicU64::new(0)),
            liveness: Arc::new(liveness::Shared::default()),
            stp,
            loop_guard: Arc::default(),
        }
    }
}

/// Settings of one core.
#[derive(Clone, Debug)]
pub struct Config {
    /// Worker index; worker 0 leads (keepalive state machine, spanning-tree timers).
    pub id: usize,
    /// The switch core's settings.
    pub switch: switch::Config,
    /// GRE options (and GRE-in-UDP when `udp_port` is set).
    pub gre: GreOptions,
    /// Outer DF is set (else frames are never checked against the path MTU).
    pub df: bool,
    /// TAP frames carry a virtio-net header (offloads on).
    pub vnet: bool,
    /// The TAP takes UDP GSO frames, so runs of datagrams may be written as one.
    pub udp_coalesce: bool,
}

/// One worker's core.
pub struct Core {
    id: usize,
    switch: Switch,
    egress: Egress,
    counters: Arc<Counters>,
    peers: PeerTable,
    gre: GreOptions,
    vnet: bool,
    next_aging: Millis,
    next_stp: Millis,
    stp_leader: bool,
    sync_out: Vec<SyncUpdate>,
    sync_next: usize,
    pmtu_queries: Vec<(PortId, Ipv4Addr)>,
    /// The loop guard blocked a tunnel: the local bridge should forget what it learned on
    /// the TAP.
    bridge_flush: bool,
    /// Keeps logs about dropped packets to a few lines a second.
    drop_log: LogLimiter,
}

impl Core {
    /// A core with the local port (0) and no tunnels; it writes its counters to `counters`.
    pub fn new(cfg: Config, shared: &Shared, counters: Arc<Counters>) -> Core {
        let mut sw = Switch::new(cfg.switch, counters.clone());
        sw.set_outer(cfg.gre.overhead(), cfg.df);
        sw.set_liveness(shared.liveness.clone(), cfg.id == 0);
        sw.set_loop_guard(shared.loop_guard.clone());
        if let Some(s) = &shared.stp {
            sw.set_stp(s.clone());
        }
        sw.set_port(0, PortKind::Local);
        Core {
            id: cfg.id,
            stp_leader: cfg.id == 0 && shared.stp.is_some(),
            switch: sw,
            egress: Egress::new(
                cfg.id,
                cfg.gre,
                shared.seq.clone(),
                cfg.vnet,
                cfg.udp_coalesce,
                PmtuSchedule::new(shared.pmtu_refusals.clone()),
            ),
            counters,
            peers: PeerTable::default(),
            gre: cfg.gre,
            vnet: cfg.vnet,
            next_aging: 0,
            next_stp: 0,
            sync_out: Vec::with_capacity(1024),
            sync_next: 0,
            pmtu_queries: Vec::new(),
            bridge_flush: false,
            drop_log: LogLimiter::new(5, 10_000),
        }
    }

    /// The switch core (MAC table, ports, path MTUs), read-only.
    pub fn switch(&self) -> &Switch {
        &self.switch
    }

    /// The counters this core writes.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Adds (`Some`) or removes (`None`) port `id`. A port's counters start from zero.
    pub fn set_port(&mut self, id: PortId, kind: Option<PortKind>) {
        if let Some(PortKind::Tunnel(old)) = self.switch.port(id) {
            self.peers.remove(old);
        }
        match kind {
            Some(k) => {
                if let Some(c) = self.counters.ports.get(usize::from(id)) {
                    c.reset();
                }
                if let PortKind::Tunnel(addr) = k {
                    self.peers.insert(addr, id);
                }
                self.switch.set_port(id, k);
            }
            None => self.switch.remove_port(id),
        }
    }

    /// Forgets the stations learned on `port` (all when `None`); returns how many.
    pub fn flush_fdb(&mut self, port: Option<PortId>) -> usize {
        self.switch.flush(port)
    }

    /// A copy of the MAC table, as of `now`.
    pub fn fdb_dump(&self, now: Millis) -> FdbDump {
        FdbDump {
            now,
            entries: self.switch.fdb().iter().collect(),
        }
    }

    /// A copy of the ARP watcher's claims and conflicts, as of `now`.
    pub fn conflicts(&self, now: Millis) -> arp_watch::ArpDump {
        self.switch.arp_watch().dump(now)
    }

    /// Handles frames read from the TAP (each behind its virtio-net header when offloads are
    /// on) and sends what they become through `out`. Frames are modified in place (checksums
    /// completed, MSS clamped).
    pub fn handle_tap_frames<'a, S: Sink<'a>>(
        &mut self,
        now: Millis,
        frames: impl IntoIterator<Item = &'a mut [u8]>,
        out: &mut S,
    ) {
        for f in frames {
            self.tap_frame(now, f, out);
        }
        self.egress.flush(&self.switch, out);
        self.bridge_flush |= self.switch.take_loop_blocked();
    }

    #[inline]
    fn tap_frame<'a, S: Sink<'a>>(&mut self, now: Millis, slot: &'a mut [u8], out: &mut S) {
        let (frame, gso): (&'a [u8], Option<VnetHdr>) = if self.vnet {
            let Ok(h) = VnetHdr::parse(slot) else {
                self.counters.dropped(DropReason::BadOffload);
                return;
            };
            let frame: &'a mut [u8] = &mut slot[vnet::LEN..];
            if h.gso_kind() == vnet::gso::NONE {
                if offload::gso::complete_checksum(frame, &h).is_err() {
                    self.counters.dropped(DropReason::BadOffload);
                    return;
                }
                self.switch.clamp_mss(frame);
                (frame, None)
            } else {
                (frame, Some(h))
            }
        } else {
            self.switch.clamp_mss(slot);
            (slot, None)
        };
        if self.switch.stp().is_some() && bpdu::is_bpdu(frame) {
            // The TAP is an edge port: a bridge behind it does not join the tree.
            self.counters.dropped(DropReason::EdgeBpdu);
            return;
        }
        let v = self.switch.handle(now, 0, frame);
        if let Some(h) = &gso {
            // The core counted one frame; count the segments it stands for instead.
            if let Some((n, wire)) = offload::gso::wire_size(frame, h) {
                self.counters
                    .rx_many(0, n - 1, wire.saturating_sub(frame.len()));
            }
        }
        self.publish(v.sync);
        self.egress
            .output(&self.switch, 0, v.action, frame, gso.as_ref(), out);
    }

    /// Handles a burst of datagrams from the tunnel socket and sends what they become through
    /// `out`. Consecutive frames of one flow for the TAP are coalesced into one super-frame
    /// when offloads are on, which is why this takes a whole burst.
    pub fn handle_tunnel_datagrams<'a, S: Sink<'a>>(
        &mut self,
        now: Millis,
        datagrams: impl IntoIterator<Item = Datagram<'a>>,
        out: &mut S,
    ) {
        let mut runs = TapRuns::default();
        let udp = self.gre.udp_port.is_some();
        for d in datagrams {
            if d.truncated {
                self.counters.dropped(DropReason::Oversize);
                continue;
            }
            if !udp {
                match tunnel::decap(d.data, &self.peers, &self.gre) {
                    Ok((port, frame)) => self.tunnel_frame(now, port, frame, &mut runs, out),
                    Err(why) => self.gre_drop(now, d.data, why),
                }
                continue;
            }
            if d.data.is_empty() {
                self.counters.dropped(DropReason::GreTruncated);
                continue;
            }
            let seg = match d.segment_size {
                Some(s) if s < d.data.len() => {
                    self.counters.event(Event::UdpGroReceived);
                    s
                }
                _ => d.data.len(),
            };
            for chunk in d.data.chunks(seg) {
                match tunnel::decap_gre(d.source, chunk, &self.peers, &self.gre) {
                    Ok((port, frame)) => self.tunnel_frame(now, port, frame, &mut runs, out),
                    Err(why) => self.counters.dropped(why),
                }
            }
        }
        self.egress.write_runs(&self.switch, &mut runs, out);
        self.egress.flush(&self.switch, out);
        self.bridge_flush |= self.switch.take_loop_blocked();
    }

    /// One inner frame from tunnel `port`: a hello, a BPDU, or data to forward.
    #[inline]
    fn tunnel_frame<'a, S: Sink<'a>>(
        &mut self,
        now: Millis,
        port: PortId,
        frame: &'a [u8],
        runs: &mut TapRuns<'a>,
        out: &mut S,
    ) {
        if self.switch.keepalive_rx(now, port, frame) {
            return;
        }
        if self.switch.stp().is_some() && bpdu::is_bpdu(frame) {
            self.stp_rx(now, port, frame);
            return;
        }
        let v = self.switch.handle(now, port, frame);
        self.publish(v.sync);
        let to_tap =
            matches!(v.action, Action::Forward(p) if self.switch.port(p) == Some(PortKind::Local));
        if to_tap {
            if self.egress.coalesce(&self.switch, frame, runs, out) {
                return;
            }
        } else {
            // Anything else keeps its place after the frames received before it.
            self.egress.write_runs(&self.switch, runs, out);
        }
        self.egress
            .output(&self.switch, port, v.action, frame, None, out);
    }

    /// A BPDU arrived on tunnel `port`: run the tree and queue what it answers.
    fn stp_rx(&mut self, now: Millis, port: PortId, frame: &[u8]) {
        let Some(sh) = self.switch.stp().cloned() else {
            return;
        };
        self.counters.event(Event::BpduRx);
        if let Some(c) = self.counters.ports.get(usize::from(port)) {
            c.rx_control.add(1);
        }
        let (egress, counters) = (&mut self.egress, &self.counters);
        let ok = sh.with(|s| {
            let ok = s.receive(now, port, frame);
            s.drain(|p, f| queue_control(egress, counters, p, f));
            ok
        });
        if !ok {
            self.counters.dropped(DropReason::BadBpdu);
        }
        self.switch.stp_sync();
    }

    fn gre_drop(&mut self, now: Millis, packet: &[u8], why: DropReason) {
        self.counters.dropped(why);
        if log::log_enabled!(log::Level::Debug) {
            if let Some(k) = self.drop_log.allow(now) {
                let src = ipv4::Packet::new_checked(packet)
                    .map_or_else(|_| "?".to_string(), |p| p.src().to_string());
                log::debug!(
                    "worker {}: dropped a GRE packet from {src}: {}{}",
                    self.id,
                    why.name(),
                    LogLimiter::suffix(k)
                );
            }
        }
    }

    #[inline]
    fn publish(&mut self, u: Option<SyncUpdate>) {
        if let Some(u) = u {
            self.sync_out.push(u);
        }
    }

    /// A learning update from another worker.
    pub fn handle_sync(&mut self, u: SyncUpdate) {
        self.switch.apply_sync(u);
    }

    /// The kernel's path MTU toward tunnel `port`, as asked by
    /// [`Core::poll_path_mtu_query`].
    pub fn handle_path_mtu(&mut self, port: PortId, mtu: u32) {
        let Some(PortKind::Tunnel(addr)) = self.switch.port(port) else {
            return;
        };
        if let Some(old) = self.switch.set_path_mtu(port, mtu) {
            let mtu = self.switch.path_mtu(port).unwrap_or(mtu);
            if old != 0 && self.id == 0 {
                log::info!("path MTU to peer {addr}: {old} -> {mtu}");
            } else {
                log::debug!("worker {}: path MTU to peer {addr}: {mtu}", self.id);
            }
        }
    }

    /// How a frame from [`Core::poll_transmit`] fared.
    pub fn handle_transmit_outcome(&mut self, t: &Transmit, outcome: SendOutcome) {
        if outcome == SendOutcome::TooBig {
            self.egress.pmtu.too_big();
        }
        if !t.counted {
            return;
        }
        let c = &self.counters;
        match (outcome, t.dest) {
            (SendOutcome::Sent, _) => c.tx(t.port, t.len),
            (_, Dest::Tap) => c.dropped(DropReason::TapWriteError),
            (SendOutcome::TooBig, _) => c.dropped(DropReason::TooBig),
            (SendOutcome::QueueFull, _) => c.dropped(DropReason::TxQueueFull),
            (SendOutcome::Error, _) => c.dropped(DropReason::TxError),
        }
    }

    /// Periodic work due at `now`: MAC aging, keepalives, the spanning tree's timers, path
    /// MTU re-reads, and acting on what the other workers changed in the shared tree. Cheap
    /// when nothing is due, so it may be called every turn of the event loop.
    pub fn handle_timeout(&mut self, now: Millis) {
        self.switch.stp_sync();
        if now >= self.next_aging {
            self.switch.handle_timeout(now);
            self.next_aging = now + AGING_MS;
        }
        if self.egress.pmtu.due(now) {
            self.egress.pmtu.refreshed(now);
            self.pmtu_queries.clear();
            for id in 0..switch::MAX_PORTS {
                if let Some(PortKind::Tunnel(a)) = self.switch.port(id as PortId) {
                    self.pmtu_queries.push((id as PortId, a));
                }
            }
        }
        if self.switch.liveness_due().is_some_and(|d| now >= d) {
            let (egress, counters) = (&mut self.egress, &self.counters);
            self.switch
                .liveness_tick(now, |p, f| queue_control(egress, counters, p, f));
            // A peer declared down may have changed the tree: send its news now.
            self.next_stp = self.next_stp.min(now);
        }
        if self.stp_leader && now >= self.next_stp {
            if let Some(sh) = self.switch.stp().cloned() {
                let (egress, counters) = (&mut self.egress, &self.counters);
                sh.with(|s| {
                    s.tick(now);
                    s.drain(|p, f| queue_control(egress, counters, p, f));
                });
                self.switch.stp_sync();
            }
            self.next_stp = now + STP_TICK_MS;
        }
    }

    /// When [`Core::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Millis {
        let mut t = self.next_aging.min(self.egress.pmtu.deadline());
        if let Some(d) = self.switch.liveness_due() {
            t = t.min(d);
        }
        if self.stp_leader {
            t = t.min(self.next_stp);
        }
        t
    }

    /// The next frame the core made (a hello, a BPDU, an ICMP error), copied to the start of
    /// `buf` (at least [`outbox::MAX_FRAME`] bytes); report how it fared with
    /// [`Core::handle_transmit_outcome`]. Frames for ports removed since are skipped.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        loop {
            let q = self.egress.outbox.pop(buf)?;
            if self.switch.port(q.port).is_none() {
                continue;
            }
            return Some(Transmit {
                port: q.port,
                dest: q.dest,
                gre: self.egress.control_repr(q.port),
                len: q.len,
                counted: q.counted,
            });
        }
    }

    /// The next learning update to hand to every other worker.
    pub fn poll_sync(&mut self) -> Option<SyncUpdate> {
        let u = self.sync_out.get(self.sync_next).copied();
        match u {
            Some(_) => self.sync_next += 1,
            None => {
                self.sync_out.clear();
                self.sync_next = 0;
            }
        }
        u
    }

    /// True once after the loop guard blocked a tunnel. The stations the local bridge (e.g.
    /// `docker0`) learned on the TAP are then reached another way, around the loop; until
    /// the bridge forgets them it keeps sending their frames into the TAP, where the blocked
    /// tunnel drops them. So the edge flushes the bridge's entries for the TAP.
    pub fn poll_bridge_flush(&mut self) -> bool {
        std::mem::take(&mut self.bridge_flush)
    }

    /// The next tunnel whose path MTU the edge should read from the kernel and hand back with
    /// [`Core::handle_path_mtu`].
    pub fn poll_path_mtu_query(&mut self) -> Option<(PortId, Ipv4Addr)> {
        self.pmtu_queries.pop()
    }
}

/// Queues a control frame (hello or BPDU) for tunnel `p`, counting BPDUs sent and frames the
/// outbox had no room for.
fn queue_control(egress: &mut Egress, counters: &Counters, p: PortId, f: &[u8]) {
    if !egress.outbox.push(
        p,
        Dest::Tunnel {
            fragmentable: false,
        },
        false,
        f,
    ) {
        counters.dropped(DropReason::TxQueueFull);
    } else if bpdu::is_bpdu(f) {
        counters.event(Event::BpduTx);
    }
}
