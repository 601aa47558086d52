//! The sans-io switch core: ports, MAC learning and the forwarding decision.
//!
//! It never sees a file descriptor or a clock. The I/O edge calls
//! [`Switch::handle`]`(now, ingress, frame)` for every frame and carries out the returned
//! [`Action`]; [`Switch::handle_timeout`] ages the MAC table. Each worker thread owns one
//! `Switch`; workers keep their tables in step by exchanging [`SyncUpdate`]s, which are only
//! produced when a station is new, moves, or is due for a periodic re-announcement — never per
//! frame — so workers do not contend.

pub mod arp_watch;
pub mod fdb;
pub mod forward;
pub mod liveness;
pub mod loopguard;
pub mod pmtu;
pub mod port;
pub mod ratelimit;
pub mod stp;
pub mod tunnel;

pub use fdb::{Fdb, FdbKey, Millis};
pub use forward::Action;
pub use port::{Counters, DropReason, Event, NetId, PortId, PortKind, MAX_PORTS};

use crate::wire::ethernet::{self, Frame};
use crate::wire::vnet::VnetHdr;
use fdb::Learned;
use std::sync::Arc;

/// Settings of the core.
#[derive(Clone, Debug)]
pub struct Config {
    /// Most MAC entries (default 8192, as OVS).
    pub fdb_capacity: usize,
    /// MAC aging time in ms (default 300 s).
    pub aging_ms: Millis,
    /// Never forward tunnel → tunnel (full mesh). Default on.
    pub split_horizon: bool,
    /// Longest inner Ethernet frame accepted from a tunnel: MTU + 18 (header with one 802.1Q
    /// tag).
    pub max_frame: usize,
    /// Most frames per second one port may flood (broadcast, multicast, unknown unicast);
    /// the rest are dropped as `flood_limit`. `None` (default): unlimited.
    pub flood_limit_pps: Option<u32>,
    /// `--clamp-mss`: lower the MSS of TCP SYNs from the TAP to fit the tunnels' path MTU.
    pub clamp_mss: bool,
    /// Peer liveness (keepalives); see [`liveness`].
    pub liveness: liveness::Config,
    /// Block a tunnel whose stations flap with the local port; see [`loopguard`].
    pub loop_guard: bool,
    /// Run the spanning tree over the tunnels (`--stp`); see [`stp`]. Needs `split_horizon`
    /// off to be of any use.
    pub stp: Option<stp::Config>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            fdb_capacity: 8192,
            aging_ms: 300_000,
            split_horizon: true,
            max_frame: 1500 + ethernet::TAGGED_HEADER_LEN,
            flood_limit_pps: None,
            clamp_mss: false,
            liveness: liveness::Config::default(),
            loop_guard: false,
            stp: None,
        }
    }
}

/// A MAC table change another worker should apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncUpdate {
    /// Station.
    pub key: FdbKey,
    /// Its port.
    pub port: PortId,
    /// When it was seen.
    pub seen: Millis,
}

/// The result of handling one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// What to do with the frame.
    pub action: Action,
    /// A learning update to pass to the other workers, if any.
    pub sync: Option<SyncUpdate>,
}

/// One switch core.
pub struct Switch {
    ports: Vec<Option<PortKind>>,
    fdb: Fdb,
    cfg: Config,
    counters: Arc<Counters>,
    arp: arp_watch::ArpWatch,
    /// Path MTU per tunnel (see [`pmtu`]).
    pmtu: pmtu::PathMtu,
    /// Peer liveness (see [`liveness`]).
    live: liveness::Liveness,
    /// Local-side loop guard (see [`loopguard`]).
    loops: loopguard::LoopGuard,
    /// Per-port flood budget (`Config::flood_limit_pps`), indexed by port; empty if unlimited.
    flood_budget: Vec<ratelimit::TokenBucket>,
    /// The spanning tree shared by the workers (`--stp`), and the flush generation this
    /// worker last acted on.
    stp: Option<(Arc<stp::Shared>, u64)>,
}

impl Switch {
    /// A switch with no ports; its counters are written to `counters`.
    pub fn new(cfg: Config, counters: Arc<Counters>) -> Switch {
        Switch {
            ports: Vec::with_capacity(MAX_PORTS),
            fdb: Fdb::new(cfg.fdb_capacity, cfg.aging_ms),
            live: liveness::Liveness::new(cfg.liveness),
            loops: loopguard::LoopGuard::default(),
            cfg,
            counters,
            arp: arp_watch::ArpWatch::new(),
            pmtu: pmtu::PathMtu::new(24, true),
            flood_budget: Vec::new(),
            stp: None,
        }
    }

    /// Joins the spanning tree `shared` (one per switch, shared by the workers).
    pub fn set_stp(&mut self, shared: Arc<stp::Shared>) {
        let g = shared.flush_generation();
        self.stp = Some((shared, g));
    }

    /// The spanning tree, if `--stp` is on.
    #[inline]
    pub fn stp(&self) -> Option<&Arc<stp::Shared>> {
        self.stp.as_ref().map(|s| &s.0)
    }

    /// Whether port `p` may carry data (always, without `--stp`).
    #[inline]
    fn stp_forwarding(&self, p: PortId) -> bool {
        self.stp
            .as_ref()
            .is_none_or(|s| s.0.state(p) == stp::State::Forwarding)
    }

    /// Forgets the stations learned on tunnels if the spanning tree asked for it since the
    /// last call (one atomic load when it did not). Call once per turn of the event loop.
    #[inline]
    pub fn stp_sync(&mut self) {
        let Some((sh, seen)) = &mut self.stp else {
            return;
        };
        let g = sh.flush_generation();
        if g == *seen {
            return;
        }
        *seen = g;
        for i in 0..self.ports.len() {
            if self.ports[i].is_some_and(|k| k.is_tunnel()) {
                self.fdb.flush(Some(i as PortId));
            }
        }
        self.counters.fdb_entries.reset_to(self.fdb.len() as u64);
        self.counters.event(Event::StpFlush);
    }

    /// Adds a port at index `id` (ids are chosen by the caller so that every worker agrees).
    ///
    /// # Panics
    /// If `id >= MAX_PORTS` (a configuration bug: the caller validates the peer count).
    pub fn set_port(&mut self, id: PortId, kind: PortKind) {
        let i = usize::from(id);
        assert!(i < MAX_PORTS, "port id {id} out of range");
        if self.ports.len() <= i {
            self.ports.resize(i + 1, None);
        }
        self.ports[i] = Some(kind);
        if let Some(pps) = self.cfg.flood_limit_pps {
            // A burst of one second's worth; a fresh bucket when a port id is reused.
            if self.flood_budget.len() <= i {
                self.flood_budget
                    .resize(i + 1, ratelimit::TokenBucket::new(pps, pps));
            }
            self.flood_budget[i] = ratelimit::TokenBucket::new(pps, pps);
        }
    }

    /// Removes a port and forgets the stations learned on it.
    pub fn remove_port(&mut self, id: PortId) {
        if let Some(p) = self.ports.get_mut(usize::from(id)) {
            *p = None;
        }
        self.flush(Some(id));
        self.arp.forget_port(id);
        self.pmtu.forget(id);
    }

    /// The kind of port `id`, if it exists.
    #[inline]
    pub fn port(&self, id: PortId) -> Option<PortKind> {
        self.ports.get(usize::from(id)).copied().flatten()
    }

    /// The counters this core writes.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// The MAC table (read-only).
    pub fn fdb(&self) -> &Fdb {
        &self.fdb
    }

    /// The ARP watcher (duplicate-IP detection; read-only).
    pub fn arp_watch(&self) -> &arp_watch::ArpWatch {
        &self.arp
    }

    /// Decides what to do with `frame`, received on `ingress` at `now`, and learns its source.
    /// Counts the frame as received and counts the drop reason, if any. Never panics.
    pub fn handle(&mut self, now: Millis, ingress: PortId, frame: &[u8]) -> Verdict {
        self.handle_sized(now, ingress, frame, self.cfg.max_frame)
    }

    /// [`Switch::handle`] for a TCP super-frame from a tunnel that the underlay's GRO merged
    /// (see `offload::underlay_gro`): larger than the local MTU, but its segments are not.
    pub fn handle_coalesced(&mut self, now: Millis, ingress: PortId, frame: &[u8]) -> Verdict {
        self.handle_sized(now, ingress, frame, usize::MAX)
    }

    /// The virtio-net header that makes `frame`, from a tunnel, a TCP super-frame, if it is too
    /// large for the local MTU because the underlay's GRO merged it (see
    /// `offload::underlay_gro`); `None` for every frame that fits, and for other giants.
    pub fn merged_by_underlay(&self, frame: &[u8]) -> Option<VnetHdr> {
        if frame.len() <= self.cfg.max_frame {
            return None;
        }
        let mtu = self.cfg.max_frame - ethernet::TAGGED_HEADER_LEN;
        crate::offload::underlay_gro::coalesced(frame, mtu)
    }

    fn handle_sized(
        &mut self,
        now: Millis,
        ingress: PortId,
        frame: &[u8],
        max_frame: usize,
    ) -> Verdict {
        let mut verdict = self.decide(now, ingress, frame, max_frame);
        if self.cfg.loop_guard {
            verdict.action = self.loops.filter(now, ingress, verdict.action);
        }
        if verdict.action == Action::Flood {
            if let Some(b) = self.flood_budget.get_mut(usize::from(ingress)) {
                if !b.take(now) {
                    verdict.action = Action::Drop(DropReason::FloodLimit);
                }
            }
        }
        match verdict.action {
            Action::Drop(why) => self.counters.dropped(why),
            Action::Flood => self.counters.event(Event::Flood),
            Action::Forward(_) => {}
        }
        verdict
    }

    fn decide(&mut self, now: Millis, ingress: PortId, frame: &[u8], max_frame: usize) -> Verdict {
        let drop = |why| Verdict {
            action: Action::Drop(why),
            sync: None,
        };
        let Some(in_kind) = self.port(ingress) else {
            // A frame for a port removed a moment ago: nothing to learn or forward.
            return drop(DropReason::UnknownPeer);
        };
        self.counters.rx(ingress, frame.len());
        let Ok(eth) = Frame::new_checked(frame) else {
            return drop(DropReason::Runt);
        };
        // Only tunnels can bring frames the local side cannot carry; the TAP's own frames are
        // bounded by the TAP (and may be TCP super-frames when offloads are on).
        if in_kind.is_tunnel() && frame.len() > max_frame {
            return drop(DropReason::Giant);
        }
        // A discarding port neither learns nor forwards; a learning one only learns.
        let in_state = match &self.stp {
            Some((sh, _)) if in_kind.is_tunnel() => sh.state(ingress),
            _ => stp::State::Forwarding,
        };
        if in_state == stp::State::Discarding {
            return drop(DropReason::StpDiscarding);
        }
        let src = eth.src();
        if !src.is_valid_source() {
            return drop(DropReason::BadSourceMac);
        }
        let vlan = eth.vlan().unwrap_or(0);
        let src_key = FdbKey::new(src, vlan);
        let sync = match self.fdb.learn(src_key, ingress, now) {
            Learned::New => {
                self.counters.fdb_entries.reset_to(self.fdb.len() as u64);
                true
            }
            Learned::Refreshed { sync: true } => true,
            Learned::Moved { from } => {
                self.counters.event(Event::MacMove);
                if self.cfg.loop_guard {
                    self.loop_moved(now, from, ingress);
                }
                true
            }
            Learned::Refreshed { sync: false } => false,
            Learned::Full => {
                self.counters.event(Event::FdbFull);
                false
            }
        };
        let sync = sync.then_some(SyncUpdate {
            key: src_key,
            port: ingress,
            seen: now,
        });
        if in_state != stp::State::Forwarding {
            return Verdict {
                action: Action::Drop(DropReason::StpDiscarding),
                sync,
            };
        }
        // Duplicate-IP watch: every other frame pays this one compare.
        if eth.ethertype() == ethernet::ethertype::ARP {
            self.arp
                .observe(now, vlan, ingress, &frame[eth.header_len()..]);
        }
        let dst = eth.dst();
        let out = if dst.is_multicast() {
            None
        } else {
            self.fdb
                .lookup(FdbKey::new(dst, vlan), now)
                .filter(|p| self.port(*p).is_some())
        };
        let mut action = forward::decide(
            ingress,
            in_kind,
            out.map(|p| (p, self.port(p))),
            self.cfg.split_horizon,
        );
        if let Action::Forward(p) = action {
            if !self.stp_forwarding(p) {
                action = Action::Drop(DropReason::StpDiscarding);
            }
        }
        Verdict { action, sync }
    }

    /// The ports a flooded frame from `ingress` goes to: every port but the ingress, and with
    /// split horizon no tunnel when the frame came from a tunnel.
    #[inline]
    pub fn flood_targets(&self, ingress: PortId) -> impl Iterator<Item = PortId> + '_ {
        let from_tunnel = self.port(ingress).is_some_and(|k| k.is_tunnel());
        let sh = self.cfg.split_horizon && from_tunnel;
        self.ports.iter().enumerate().filter_map(move |(i, k)| {
            let k = (*k)?;
            let id = i as PortId;
            (id != ingress
                && !(sh && k.is_tunnel())
                && !self.loop_blocked(id)
                && self.stp_forwarding(id))
            .then_some(id)
        })
    }

    /// A station moved from `from` to `to`: the loop guard may block a tunnel.
    fn loop_moved(&mut self, now: Millis, from: PortId, to: PortId) {
        let blocked = self
            .loops
            .moved(now, (from, self.port(from)), (to, self.port(to)));
        if let Some((_, addr)) = blocked {
            self.counters.event(Event::LoopDetected);
            log::warn!(
                "loop through the local side: stations flap between the local port and the \
                 tunnel to {addr} ({} moves within {} ms; are two hosts' bridges joined \
                 directly?); blocking that tunnel for {} s",
                loopguard::THRESHOLD,
                loopguard::WINDOW_MS,
                loopguard::HOLD_MS / 1000
            );
        }
    }

    /// Shares the loop guard's blocked tunnels with the other workers of the switch.
    pub fn set_loop_guard(&mut self, shared: Arc<loopguard::Shared>) {
        self.loops.set_shared(shared);
    }

    /// True while tunnel `p` is blocked by the loop guard.
    #[inline]
    pub fn loop_blocked(&self, p: PortId) -> bool {
        self.cfg.loop_guard && self.loops.blocked(p)
    }

    /// True once after the loop guard blocked a tunnel: the stations the local bridge
    /// learned on the TAP are reached another way now, and it should forget them.
    pub fn take_loop_blocked(&mut self) -> bool {
        self.loops.take_newly_blocked()
    }

    /// Shares liveness state `shared` with the other workers; `leader` (exactly one worker)
    /// runs the state machine and sends the hellos.
    pub fn set_liveness(&mut self, shared: Arc<liveness::Shared>, leader: bool) {
        self.live.set_shared(shared, leader);
    }

    /// Keepalives are on.
    #[inline]
    pub fn keepalive(&self) -> bool {
        self.live.on()
    }

    /// The shared liveness state.
    pub fn liveness(&self) -> &Arc<liveness::Shared> {
        self.live.shared()
    }

    /// Call for every frame from tunnel `port` before [`Switch::handle`]: notes that the peer
    /// is alive, and returns true if the frame was a hello (consumed: do not handle it).
    #[inline]
    pub fn keepalive_rx(&self, now: Millis, port: PortId, frame: &[u8]) -> bool {
        self.live.rx(now, port, frame, &self.counters)
    }

    /// When [`Switch::liveness_tick`] is next due (`None`: keepalives off).
    pub fn liveness_due(&self) -> Option<Millis> {
        self.live.due()
    }

    /// Periodic liveness work at `now` (call when [`Switch::liveness_due`] has passed): the
    /// leader updates peer states; every worker flushes the MACs of tunnels that went down.
    /// Calls `send_hello(port, frame)` for each tunnel that gets a hello now (leader only).
    pub fn liveness_tick(&mut self, now: Millis, send_hello: impl FnMut(PortId, &[u8])) {
        if !self.live.on() {
            return;
        }
        let tunnels: Vec<(PortId, std::net::Ipv4Addr)> = self
            .ports
            .iter()
            .enumerate()
            .filter_map(|(i, k)| match k {
                Some(PortKind::Tunnel(a)) => Some((i as PortId, *a)),
                _ => None,
            })
            .collect();
        for (p, addr) in self.live.tick(now, &tunnels, &self.counters, send_hello) {
            let n = self.flush(Some(p));
            log::debug!("peer {addr} down: flushed {n} MACs");
            if self.live.leader() {
                if let Some(stp) = self.stp() {
                    // The tree routes around the dead peer at once (with --stp).
                    stp.with(|s| s.peer_down(now, p));
                }
            }
        }
    }

    /// Sets the outer header size (IPv4 + GRE) and whether outer DF is set; forgets known path
    /// MTUs.
    pub fn set_outer(&mut self, overhead: usize, df: bool) {
        self.pmtu = pmtu::PathMtu::new(overhead, df);
    }

    /// Records the path MTU toward tunnel `port` (at least [`pmtu::MIN_PMTU`]); returns the
    /// previous value if it changed (0 if none was known). A change of a known value is
    /// counted.
    pub fn set_path_mtu(&mut self, port: PortId, mtu: u32) -> Option<u32> {
        let old = self.pmtu.set(port, mtu);
        if matches!(old, Some(o) if o != 0) {
            self.counters.event(Event::PathMtuChange);
        }
        old
    }

    /// The path MTU toward `port`, if known.
    pub fn path_mtu(&self, port: PortId) -> Option<u32> {
        self.pmtu.get(port)
    }

    /// The longest inner frame that may enter tunnel `port` unfragmented (`usize::MAX` if
    /// unknown or outer DF is off).
    #[inline]
    pub fn max_tunnel_frame(&self, port: PortId) -> usize {
        self.pmtu.max_frame(port)
    }

    /// Decides for `frame` going into tunnel `port` as inner frames of `wire_len` bytes, and
    /// counts the outcome (see [`pmtu::PathMtu::fit`]).
    pub fn fit(
        &self,
        port: PortId,
        frame: &[u8],
        wire_len: usize,
        reply: &mut [u8],
    ) -> pmtu::Outcome {
        self.pmtu.fit(port, frame, wire_len, reply, &self.counters)
    }

    /// With `--clamp-mss` ([`Config::clamp_mss`]): lowers the MSS of a TCP SYN in `frame` to
    /// fit the narrowest known tunnel path.
    #[inline]
    pub fn clamp_mss(&self, frame: &mut [u8]) -> Option<u16> {
        if !self.cfg.clamp_mss {
            return None;
        }
        match self.pmtu.min_max_frame() {
            usize::MAX => None,
            m => pmtu::clamp_mss(frame, m),
        }
    }

    /// Applies another worker's learning update.
    pub fn apply_sync(&mut self, u: SyncUpdate) {
        if self.port(u.port).is_some() && !self.fdb.merge(u.key, u.port, u.seen) {
            self.counters.event(Event::FdbFull);
        }
        self.counters.fdb_entries.reset_to(self.fdb.len() as u64);
    }

    /// Periodic work: ages out stations. Call about once a second.
    pub fn handle_timeout(&mut self, now: Millis) {
        self.fdb.expire(now);
        self.arp.expire(now);
        self.counters.fdb_entries.reset_to(self.fdb.len() as u64);
    }

    /// Forgets stations on `port` (or all).
    pub fn flush(&mut self, port: Option<PortId>) -> usize {
        let n = self.fdb.flush(port);
        self.counters.fdb_entries.reset_to(self.fdb.len() as u64);
        n
    }
}

#[cfg(test)]
mod tests;
