//! Loop protection for partial meshes (`--stp`): a rapid spanning tree (RSTP, IEEE
//! 802.1D-2004 §17) over the tunnel ports, with 802.1D BPDUs and defaults.
//!
//! With `--stp`, split horizon is off, so a switch may forward tunnel → tunnel; the tree
//! keeps that loop-free by blocking redundant tunnels. The local TAP is an edge port: it is not
//! part of the tree, forwards at once and never carries BPDUs.
//!
//! What is implemented ("RSTP-lite": the standard's behaviour on point-to-point links,
//! written as one recomputation per event instead of its eight state machines):
//! - Priority vectors (root id, root path cost, designated bridge, designated port) and role
//!   selection (§17.21.25): root port, designated, alternate, backup.
//! - Rapid transitions (§17.29): a designated port proposes; the neighbour *syncs* (puts
//!   its other designated ports to discarding), forwards its new root port and answers with an
//!   agreement; the proposer forwards on the agreement. An alternate port answers a proposal
//!   with an agreement too. Without an agreement a designated port moves discarding →
//!   learning → forwarding after two forward delays, as 802.1D.
//! - Received information ages out after three hello times; a port whose neighbour went
//!   silent is re-evaluated, so a cut link reconverges in about `3 × hello`.
//! - Topology change: a tunnel going to forwarding sets TC on the BPDUs it sends for two hello
//!   times; a received TC is propagated. Either makes every worker flush the stations learned
//!   on tunnels ([`Shared::flush_generation`]) so traffic re-learns the new paths.
//!
//! Not implemented: 802.1D/STP-only neighbours (their configuration BPDUs are understood as
//! designated information but they are not answered in the old format), TCN handshakes,
//! per-port priorities and costs (every tunnel costs [`PATH_COST`]).
//!
//! Threads: one [`Stp`] per switch behind a mutex in [`Shared`], taken only for a BPDU or a
//! timer tick (a few times a second), never per data frame. Data frames read the per-port
//! state from atomics ([`Shared::state`]). Time is passed in; nothing here reads a clock.

use super::{Millis, PortId, MAX_PORTS};
use crate::wire::bpdu::{self, flags, BridgeId, Kind, Repr};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

/// Path cost of every tunnel (802.1D-2004's value for 1 Gbit/s).
pub const PATH_COST: u32 = 20_000;
/// Most BPDUs a port sends per hello time (802.1D-2004 Transmit Hold Count).
pub const TX_HOLD: u32 = 6;

/// Spanning-tree settings (802.1D defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Bridge priority, a multiple of 4096 (default 32768).
    pub priority: u16,
    /// BPDU interval in ms (default 2 s).
    pub hello_ms: u64,
    /// Information older than this is discarded (default 20 s).
    pub max_age_ms: u64,
    /// Each of discarding → learning → forwarding without an agreement (default 15 s).
    pub forward_delay_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            priority: 32768,
            hello_ms: 2_000,
            max_age_ms: 20_000,
            forward_delay_ms: 15_000,
        }
    }
}

/// A port's role in the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Towards the root.
    Root,
    /// Away from the root: this switch is the best bridge for the link.
    Designated,
    /// Blocked: another bridge offers a path to the root (a redundant tunnel).
    Alternate,
    /// Blocked: this switch's own BPDUs come back on it.
    Backup,
}

impl Role {
    /// Name shown by `dnetctl show`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Root => "root",
            Role::Designated => "designated",
            Role::Alternate => "alternate",
            Role::Backup => "backup",
        }
    }

    fn wire(self) -> bpdu::Role {
        match self {
            Role::Root => bpdu::Role::Root,
            Role::Designated => bpdu::Role::Designated,
            Role::Alternate | Role::Backup => bpdu::Role::AlternateOrBackup,
        }
    }
}

/// A port's forwarding state. The discriminant is what [`Shared`] stores; 0 (forwarding) is
/// what every port not in the tree reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Learns and forwards.
    Forwarding = 0,
    /// Learns, does not forward.
    Learning = 1,
    /// Neither learns nor forwards (BPDUs still pass).
    Discarding = 2,
}

impl State {
    fn from_u8(v: u8) -> State {
        match v {
            1 => State::Learning,
            2 => State::Discarding,
            _ => State::Forwarding,
        }
    }

    /// Name shown by `dnetctl show`.
    pub fn name(self) -> &'static str {
        match self {
            State::Forwarding => "forwarding",
            State::Learning => "learning",
            State::Discarding => "discarding",
        }
    }
}

/// A spanning-tree priority vector; smaller is better (§17.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Vector {
    root: BridgeId,
    cost: u32,
    bridge: BridgeId,
    port: u16,
}

/// Designated information last received on a port.
#[derive(Clone, Copy, Debug)]
struct Info {
    vector: Vector,
    message_age: u16,
    expires: Millis,
}

#[derive(Clone, Debug)]
struct Port {
    role: Role,
    state: State,
    info: Option<Info>,
    /// A designated port asking its neighbour for permission to forward.
    proposing: bool,
    /// The neighbour agreed to our information: this port need not block on a sync.
    agreed: bool,
    /// Next discarding → learning → forwarding step without an agreement.
    fd_at: Option<Millis>,
    /// Send a BPDU at the next opportunity.
    send: bool,
    /// The next BPDU carries an agreement.
    agree: bool,
    next_hello: Millis,
    /// BPDUs carry TC until then.
    tc_until: Millis,
    /// BPDUs sent in the current hello time (rate limit).
    tx_count: u32,
    tx_window: Millis,
}

impl Port {
    fn new() -> Port {
        Port {
            role: Role::Designated,
            state: State::Discarding,
            info: None,
            proposing: true,
            agreed: false,
            fd_at: None,
            send: true,
            agree: false,
            next_hello: 0,
            tc_until: 0,
            tx_count: 0,
            tx_window: 0,
        }
    }
}

/// Snapshot of one port for display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortStatus {
    /// Port id.
    pub port: PortId,
    /// Role.
    pub role: Role,
    /// State.
    pub state: State,
    /// Designated bridge on the link (this switch when designated).
    pub designated_bridge: BridgeId,
}

/// Snapshot of the tree for display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This switch.
    pub bridge: BridgeId,
    /// The root bridge.
    pub root: BridgeId,
    /// Cost to the root (0 at the root).
    pub root_cost: u32,
    /// Port towards the root (`None` at the root).
    pub root_port: Option<PortId>,
    /// Topology changes seen (detected here or received).
    pub topology_changes: u64,
    /// When the last one happened (ms, switch clock), if any.
    pub last_change: Option<Millis>,
    /// Tunnel ports in the tree.
    pub ports: Vec<PortStatus>,
}

/// The spanning-tree state machine of one switch.
#[derive(Debug)]
pub struct Stp {
    cfg: Config,
    bridge: BridgeId,
    mac: [u8; 6],
    ports: Vec<Option<Port>>,
    root: Vector,
    root_port: Option<PortId>,
    topology_changes: u64,
    last_change: Option<Millis>,
    /// BPDUs to send: (port, frame).
    outbox: Vec<(PortId, [u8; bpdu::FRAME_LEN])>,
    /// Stations learned on tunnels must be forgotten.
    flush: bool,
    /// The latest time seen (for changes that come without one, like adding a port).
    now: Millis,
}

/// What the data path shares with the tree: per-port states (read per frame) and the flush
/// generation, plus the machine itself.
#[derive(Debug)]
pub struct Shared {
    state: Box<[AtomicU8]>,
    flush_gen: AtomicU64,
    /// The state machine; lock only for BPDUs, ticks and display.
    pub machine: Mutex<Stp>,
}

impl Shared {
    /// A tree for the bridge whose MAC is `mac`.
    pub fn new(cfg: Config, mac: [u8; 6]) -> Shared {
        Shared {
            state: (0..MAX_PORTS).map(|_| AtomicU8::new(0)).collect(),
            flush_gen: AtomicU64::new(0),
            machine: Mutex::new(Stp::new(cfg, mac)),
        }
    }

    /// The forwarding state of port `p` (ports outside the tree forward).
    #[inline]
    pub fn state(&self, p: PortId) -> State {
        self.state
            .get(usize::from(p))
            .map_or(State::Forwarding, |s| {
                State::from_u8(s.load(Ordering::Relaxed))
            })
    }

    /// Bumped whenever stations learned on tunnels must be forgotten (topology change, a port
    /// stopping or starting to forward). Each worker flushes when it sees a new value.
    #[inline]
    pub fn flush_generation(&self) -> u64 {
        self.flush_gen.load(Ordering::Relaxed)
    }

    /// Runs `f` on the machine, then publishes its port states and flush generation.
    pub fn with<R>(&self, f: impl FnOnce(&mut Stp) -> R) -> R {
        let mut m = self.machine.lock().unwrap_or_else(|e| e.into_inner());
        let r = f(&mut m);
        // Any port starting or stopping to forward invalidates what was learned on tunnels.
        // A tunnel just removed from the tree reads discarding, not forwarding: the workers may
        // still have it for a moment, and it must not carry a flood meanwhile. (Port 0, the
        // TAP, is never in the tree and always forwards.)
        let mut changed = false;
        for (i, p) in m.ports.iter().enumerate() {
            let v = match p {
                Some(p) => p.state,
                None if i == 0 => State::Forwarding,
                None => State::Discarding,
            } as u8;
            changed |= self.state[i].swap(v, Ordering::Relaxed) != v;
        }
        if m.take_flush() || changed {
            self.flush_gen.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl Stp {
    /// A tree with no ports, for the bridge whose MAC is `mac`.
    pub fn new(cfg: Config, mac: [u8; 6]) -> Stp {
        let bridge = BridgeId::new(cfg.priority, mac);
        Stp {
            cfg,
            bridge,
            mac,
            ports: Vec::new(),
            root: Vector {
                root: bridge,
                cost: 0,
                bridge,
                port: 0,
            },
            root_port: None,
            topology_changes: 0,
            last_change: None,
            outbox: Vec::new(),
            flush: false,
            now: 0,
        }
    }

    /// This switch's bridge id.
    pub fn bridge(&self) -> BridgeId {
        self.bridge
    }

    /// Adds tunnel port `id` to the tree: it starts designated and discarding, proposing.
    pub fn add_port(&mut self, id: PortId) {
        let i = usize::from(id);
        if i >= MAX_PORTS {
            return;
        }
        if self.ports.len() <= i {
            self.ports.resize(i + 1, None);
        }
        let was = self.ports[i].replace(Port::new());
        if was.is_some() {
            // Re-added: whatever it was (maybe the root port) is forgotten.
            self.recompute(self.now);
        }
    }

    /// Removes tunnel port `id` from the tree (its state reads discarding until the id is
    /// reused).
    pub fn remove_port(&mut self, now: Millis, id: PortId) {
        self.now = self.now.max(now);
        if let Some(p) = self.ports.get_mut(usize::from(id)) {
            if p.take().is_some() {
                self.recompute(now);
            }
        }
    }

    /// Keepalives declared the peer behind `id` dead: forget what it said now instead of
    /// waiting three hello times for it to age out.
    pub fn peer_down(&mut self, now: Millis, id: PortId) {
        self.now = self.now.max(now);
        if let Some(p) = self.ports.get_mut(usize::from(id)).and_then(Option::as_mut) {
            if p.info.take().is_some() {
                self.recompute(now);
                self.transmit(now);
            }
        }
    }

    /// The role and state of tunnel port `id`, if it is in the tree.
    pub fn port(&self, id: PortId) -> Option<(Role, State)> {
        self.ports
            .get(usize::from(id))
            .and_then(Option::as_ref)
            .map(|p| (p.role, p.state))
    }

    /// A snapshot for display.
    pub fn status(&self) -> Status {
        Status {
            bridge: self.bridge,
            root: self.root.root,
            root_cost: self.root.cost,
            root_port: self.root_port,
            topology_changes: self.topology_changes,
            last_change: self.last_change,
            ports: self
                .ports
                .iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    let p = p.as_ref()?;
                    Some(PortStatus {
                        port: i as PortId,
                        role: p.role,
                        state: p.state,
                        designated_bridge: match (p.role, p.info) {
                            (Role::Designated, _) | (_, None) => self.bridge,
                            (_, Some(i)) => i.vector.bridge,
                        },
                    })
                })
                .collect(),
        }
    }

    /// Hands every queued BPDU to `send(port, frame)`.
    pub fn drain(&mut self, mut send: impl FnMut(PortId, &[u8])) {
        for (p, f) in self.outbox.drain(..) {
            send(p, &f);
        }
    }

    /// The BPDU `frame` arrived on tunnel port `port` at `now`. Returns false if it was not a
    /// valid BPDU (the caller counts it).
    pub fn receive(&mut self, now: Millis, port: PortId, frame: &[u8]) -> bool {
        self.now = self.now.max(now);
        let Ok(b) = Repr::parse(frame) else {
            return false;
        };
        let i = usize::from(port);
        if self.ports.get(i).and_then(Option::as_ref).is_none() {
            return true; // not a tree port (yet): ignore
        }
        if b.kind == Kind::Tcn {
            self.topology_change(now, Some(port));
            self.recompute(now);
            self.transmit(now);
            return true;
        }
        if bpdu::wire_to_ms(b.message_age) >= bpdu::wire_to_ms(b.max_age).max(1) {
            return true; // too old to trust (§17.21.8)
        }
        let designated = matches!(b.role(), bpdu::Role::Designated | bpdu::Role::Unknown);
        if designated {
            // The neighbour's hello time decides how long its word lasts, within sane bounds.
            let hello = bpdu::wire_to_ms(b.hello).clamp(1_000, 10_000);
            let p = self.ports[i].as_mut().expect("checked above");
            p.info = Some(Info {
                vector: Vector {
                    root: b.root,
                    cost: b.root_cost,
                    bridge: b.bridge,
                    port: b.port,
                },
                message_age: b.message_age,
                expires: now + 3 * hello,
            });
        }
        self.recompute(now);
        let our_root = self.root.root;
        let role = self.ports[i].as_ref().map_or(Role::Designated, |p| p.role);
        // Only the active tree carries topology changes; a blocked port ignores them, which
        // keeps a TC from circling a ring (§17.25).
        if b.has(flags::TC) && matches!(role, Role::Root | Role::Designated) {
            self.topology_change(now, Some(port));
        }
        if designated && b.has(flags::PROPOSAL) {
            match role {
                Role::Root => {
                    // Sync: nothing else may forward towards a new upstream until it agrees.
                    self.sync(now, Some(port));
                    let old = self.ports[i]
                        .as_ref()
                        .map_or(State::Discarding, |p| p.state);
                    self.set_state(now, port, State::Forwarding, old);
                    self.answer(i, true);
                }
                Role::Alternate | Role::Backup => self.answer(i, true),
                // It is we who are better: say so now.
                Role::Designated => self.answer(i, false),
            }
        } else if designated && role == Role::Designated {
            // Inferior information from the link's other end: answer with ours at once.
            self.answer(i, false);
        }
        let p = self.ports[i].as_mut().expect("checked above");
        if !designated && b.has(flags::AGREEMENT) && b.root == our_root && role == Role::Designated
        {
            p.proposing = false;
            p.agreed = true;
            p.fd_at = None;
            let old = p.state;
            if old != State::Forwarding {
                self.set_state(now, port, State::Forwarding, old);
            }
        }
        self.transmit(now);
        true
    }

    fn answer(&mut self, i: usize, agree: bool) {
        if let Some(p) = self.ports[i].as_mut() {
            p.agree |= agree;
            p.send = true;
        }
    }

    /// Periodic work (call every ~100 ms): ages out information, runs forward-delay timers
    /// and sends hellos.
    pub fn tick(&mut self, now: Millis) {
        self.now = self.now.max(now);
        let mut expired = false;
        for p in self.ports.iter_mut().flatten() {
            if p.info.is_some_and(|i| now >= i.expires) {
                p.info = None;
                expired = true;
            }
        }
        if expired {
            self.recompute(now);
        }
        for i in 0..self.ports.len() {
            let Some(p) = self.ports[i].as_mut() else {
                continue;
            };
            if p.role != Role::Designated || p.state == State::Forwarding {
                p.fd_at = None;
                continue;
            }
            let fd = self.cfg.forward_delay_ms;
            match p.fd_at {
                None => p.fd_at = Some(now + fd),
                Some(t) if now >= t => {
                    let old = p.state;
                    let next = if old == State::Discarding {
                        State::Learning
                    } else {
                        State::Forwarding
                    };
                    p.fd_at = (next != State::Forwarding).then_some(now + fd);
                    if next == State::Forwarding {
                        p.proposing = false;
                    }
                    self.set_state(now, i as PortId, next, old);
                }
                Some(_) => {}
            }
        }
        self.transmit(now);
    }

    /// Picks the root port and every port's role (§17.21.25), then applies the transitions.
    fn recompute(&mut self, now: Millis) {
        let own = Vector {
            root: self.bridge,
            cost: 0,
            bridge: self.bridge,
            port: 0,
        };
        let mut best = (own, None::<PortId>);
        for (i, p) in self.ports.iter().enumerate() {
            let Some(info) = p.as_ref().and_then(|p| p.info) else {
                continue;
            };
            if info.vector.bridge == self.bridge {
                continue; // our own BPDU come back: a backup port, never a way to the root
            }
            let cand = Vector {
                cost: info.vector.cost.saturating_add(PATH_COST),
                ..info.vector
            };
            let id = i as PortId;
            if (cand, id) < (best.0, best.1.unwrap_or(PortId::MAX)) {
                best = (cand, Some(id));
            }
        }
        let old_root = self.root;
        let old_root_port = self.root_port;
        self.root = best.0;
        self.root_port = best.1;
        let rerooted = old_root_port != self.root_port;
        if old_root != self.root {
            // Everything we tell our neighbours changed: tell them now. An agreement given to
            // better or equal information still holds; to worse, it does not (§17.21.23).
            let worse = self.root.root > old_root.root
                || (self.root.root == old_root.root && self.root.cost > old_root.cost);
            for p in self.ports.iter_mut().flatten() {
                p.send = true;
                p.agreed &= !worse;
            }
        }
        for i in 0..self.ports.len() {
            let id = i as PortId;
            let Some(p) = self.ports[i].as_mut() else {
                continue;
            };
            let designated = Vector {
                root: self.root.root,
                cost: self.root.cost,
                bridge: self.bridge,
                port: port_id(id),
            };
            let role = if self.root_port == Some(id) {
                Role::Root
            } else {
                match p.info {
                    Some(info) if info.vector < designated => {
                        if info.vector.bridge == self.bridge {
                            Role::Backup
                        } else {
                            Role::Alternate
                        }
                    }
                    _ => Role::Designated,
                }
            };
            if role == p.role {
                continue;
            }
            log::info!(
                "stp: port {id} {} -> {} (root {} cost {})",
                p.role.name(),
                role.name(),
                self.root.root,
                self.root.cost
            );
            let old_state = p.state;
            p.role = role;
            p.fd_at = None;
            p.send = true;
            p.agreed = false;
            match role {
                Role::Alternate | Role::Backup => {
                    p.proposing = false;
                    self.set_state(now, id, State::Discarding, old_state);
                }
                Role::Designated => {
                    // A new designated port must earn forwarding from its neighbour.
                    p.proposing = true;
                    self.set_state(now, id, State::Discarding, old_state);
                }
                Role::Root => {}
            }
        }
        if rerooted {
            if let Some(rp) = self.root_port {
                // Loop-free by construction: every other designated port discards until its
                // neighbour agrees, so the new root port may forward at once (§17.29.2).
                self.sync(now, Some(rp));
                let old = self.ports[usize::from(rp)]
                    .as_ref()
                    .map_or(State::Discarding, |p| p.state);
                self.set_state(now, rp, State::Forwarding, old);
            }
        }
    }

    /// Puts every designated port but `except` that is not already blocked to discarding and
    /// makes it propose.
    fn sync(&mut self, now: Millis, except: Option<PortId>) {
        for i in 0..self.ports.len() {
            let id = i as PortId;
            if Some(id) == except {
                continue;
            }
            let Some(p) = self.ports[i].as_mut() else {
                continue;
            };
            if p.role == Role::Designated && p.state != State::Discarding && !p.agreed {
                let old = p.state;
                p.proposing = true;
                p.fd_at = None;
                p.send = true;
                self.set_state(now, id, State::Discarding, old);
            }
        }
    }

    fn set_state(&mut self, now: Millis, id: PortId, new: State, old: State) {
        if let Some(p) = self.ports.get_mut(usize::from(id)).and_then(Option::as_mut) {
            p.state = new;
            if new != old {
                log::info!(
                    "stp: port {id} ({}) {} -> {}",
                    p.role.name(),
                    old.name(),
                    new.name()
                );
            }
        }
        if new == State::Forwarding && old != State::Forwarding {
            // A tunnel starting to forward changes the topology (§17.29.3, edge ports excepted).
            self.topology_change(now, None);
        }
    }

    /// Counts a topology change and makes every port but `from` carry TC for two hello times.
    fn topology_change(&mut self, now: Millis, from: Option<PortId>) {
        // One event may be reported by several BPDUs: count it once per hello time.
        if self
            .last_change
            .is_none_or(|t| now >= t + self.cfg.hello_ms)
        {
            self.topology_changes += 1;
            match from {
                Some(p) => log::info!("stp: topology change reported on port {p}"),
                None => log::info!("stp: topology change"),
            }
        }
        self.last_change = Some(now);
        let until = now + 2 * self.cfg.hello_ms;
        for (i, p) in self.ports.iter_mut().enumerate() {
            let Some(p) = p.as_mut() else { continue };
            let active = matches!(p.role, Role::Root | Role::Designated);
            if Some(i as PortId) != from && active && p.tc_until < now {
                p.tc_until = until;
                p.send = true;
            }
        }
        self.flush = true;
    }

    fn take_flush(&mut self) -> bool {
        std::mem::take(&mut self.flush)
    }

    /// Queues the BPDUs that are due: designated ports every hello time, and any port with
    /// news (a role or root change, an agreement to give, a topology change to report).
    fn transmit(&mut self, now: Millis) {
        for i in 0..self.ports.len() {
            let id = i as PortId;
            let Some(p) = self.ports[i].as_mut() else {
                continue;
            };
            // Designated ports send every hello time; a root port too while it reports a
            // topology change towards the root.
            let periodic = p.role == Role::Designated || (p.role == Role::Root && now < p.tc_until);
            let hello_due = periodic && now >= p.next_hello;
            // Root ports report topology changes towards the root; blocked ports only answer.
            let news = p.send
                && (p.agree
                    || p.role == Role::Designated
                    || (p.role == Role::Root && now < p.tc_until));
            p.send = false;
            if !hello_due && !news {
                continue;
            }
            if now >= p.tx_window + self.cfg.hello_ms {
                p.tx_window = now;
                p.tx_count = 0;
            }
            if p.tx_count >= TX_HOLD {
                p.send = true; // try again at the next tick
                continue;
            }
            p.tx_count += 1;
            if periodic {
                p.next_hello = now + self.cfg.hello_ms;
            }
            let mut f = p.role.wire().bits();
            if p.proposing && p.role == Role::Designated && p.state != State::Forwarding {
                f |= flags::PROPOSAL;
            }
            if std::mem::take(&mut p.agree) {
                f |= flags::AGREEMENT;
            }
            if now < p.tc_until {
                f |= flags::TC;
            }
            match p.state {
                State::Forwarding => f |= flags::FORWARDING | flags::LEARNING,
                State::Learning => f |= flags::LEARNING,
                State::Discarding => {}
            }
            // Designated ports speak for the root; root and blocked ports echo what they
            // hold, which is what an agreement must match.
            let (root, cost, message_age) = match (p.role, self.root_port) {
                (_, Some(rp)) => {
                    let age = self.ports[usize::from(rp)]
                        .as_ref()
                        .and_then(|r| r.info)
                        .map_or(0, |i| i.message_age)
                        .saturating_add(256);
                    (self.root.root, self.root.cost, age)
                }
                (_, None) => (self.bridge, 0, 0),
            };
            let r = Repr {
                kind: Kind::Rst,
                flags: f,
                root,
                root_cost: cost,
                bridge: self.bridge,
                port: port_id(id),
                message_age,
                max_age: bpdu::ms_to_wire(self.cfg.max_age_ms),
                hello: bpdu::ms_to_wire(self.cfg.hello_ms),
                forward_delay: bpdu::ms_to_wire(self.cfg.forward_delay_ms),
            };
            self.outbox.push((id, r.emit(self.mac)));
        }
    }
}

/// The 16-bit port identifier: default priority 0x80 in the top four bits, then the number.
fn port_id(id: PortId) -> u16 {
    0x8000 | (id & 0x0fff)
}

#[cfg(test)]
mod tests;
