//! Peer liveness: BFD-like keepalives over each tunnel (`--keepalive`).
//!
//! GRE is stateless, so a dead peer is invisible without them. With keepalives on, worker 0
//! sends a small hello frame into every tunnel each interval; every worker notes, per tunnel,
//! when *any* frame last arrived (data counts, so a saturated tunnel whose hellos are squeezed
//! out never flaps) and when a hello last arrived. Per tunnel:
//!
//! ```text
//!   unknown ──hello received──► up ──nothing for multiplier × interval──► down
//!                                ▲                                          │
//!                                └──────────── any frame received ──────────┘
//! ```
//!
//! A peer that never sent a hello (Open vSwitch, Linux gretap, dnet without `--keepalive`)
//! stays `unknown` and is never declared down, so keepalives cannot break such peers. The
//! detection time is the peer's announced interval × the multiplier (as BFD: the sender's
//! pace decides). Going down flushes the MACs learned through the tunnel in every worker and
//! is counted (`peer_down`) and logged; coming back is counted (`peer_up`).
//!
//! The state is shared by the workers through atomics ([`Shared`]): hellos and data from one
//! peer reach whichever worker the receive hash picks. Worker 0 (the leader) runs the state
//! machine; every worker flushes its own table when it sees a tunnel go down. Time is passed
//! in: nothing here reads a clock.
//!
//! Hello frame (never forwarded, never learned, not counted as port traffic):
//! `01:80:c2:00:00:0b` ← `02:64:6e:65:74:00`, ethertype 0x88b5 (IEEE local experimental),
//! payload `"dnet"`, version 1, type 1 (hello), interval in ms (u32), multiplier (u8), padded
//! to 60 bytes. The destination is in the IEEE link-local block that bridges (Linux, OVS) do
//! not forward, so a peer that does not speak it drops it.

use super::{Counters, Event, Millis, PortId, MAX_PORTS};
use crate::wire::ethernet::Frame;
use crate::wire::hello;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// Keepalive settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Hello interval in ms; 0 = keepalives off (the default, as OVS BFD is off by default).
    pub interval_ms: u64,
    /// Intervals without any frame before a peer is declared down.
    pub multiplier: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval_ms: 0,
            multiplier: 3,
        }
    }
}

/// Destination MAC of hellos.
pub const HELLO_DST: [u8; 6] = hello::DST;
/// Length of a hello frame (minimum Ethernet payload).
pub const HELLO_LEN: usize = hello::LEN;

/// Builds a hello announcing `cfg`.
pub fn hello(cfg: &Config) -> [u8; HELLO_LEN] {
    hello::emit(cfg.interval_ms, cfg.multiplier)
}

/// If `frame` is a hello, the (interval ms, multiplier) it announces.
pub fn parse_hello(frame: &[u8]) -> Option<(u64, u32)> {
    hello::parse(frame)
}

/// A peer's liveness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PeerState {
    /// Never sent a hello (keepalives off there, or not dnet): never declared down.
    Unknown = 0,
    /// Heard from within the detection time.
    Up = 1,
    /// Sent hellos once, silent for longer than the detection time.
    Down = 2,
}

impl PeerState {
    fn from_u8(v: u8) -> PeerState {
        match v {
            1 => PeerState::Up,
            2 => PeerState::Down,
            _ => PeerState::Unknown,
        }
    }

    /// Name shown by `dnetctl show`.
    pub fn name(self) -> &'static str {
        match self {
            PeerState::Unknown => "unknown",
            PeerState::Up => "up",
            PeerState::Down => "down",
        }
    }
}

/// Liveness state shared by the workers, indexed by port.
#[derive(Debug)]
pub struct Shared {
    /// When any frame last arrived (ms, +1 so 0 means never).
    last_rx: Box<[AtomicU64]>,
    /// Detection time the peer asked for in its last hello (0: never sent one).
    detect: Box<[AtomicU64]>,
    /// [`PeerState`], written by the leader only.
    state: Box<[AtomicU8]>,
    /// When the state last changed (ms).
    since: Box<[AtomicU64]>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            last_rx: (0..MAX_PORTS).map(|_| AtomicU64::new(0)).collect(),
            detect: (0..MAX_PORTS).map(|_| AtomicU64::new(0)).collect(),
            state: (0..MAX_PORTS).map(|_| AtomicU8::new(0)).collect(),
            since: (0..MAX_PORTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Shared {
    /// The state of port `p`.
    pub fn state(&self, p: PortId) -> PeerState {
        self.state
            .get(usize::from(p))
            .map_or(PeerState::Unknown, |s| {
                PeerState::from_u8(s.load(Ordering::Relaxed))
            })
    }

    /// When port `p`'s state last changed (worker clock, ms).
    pub fn since(&self, p: PortId) -> Millis {
        self.since
            .get(usize::from(p))
            .map_or(0, |s| s.load(Ordering::Relaxed))
    }

    /// Forgets port `p` (removed or re-added).
    pub fn reset(&self, p: PortId) {
        let i = usize::from(p);
        if i < MAX_PORTS {
            self.last_rx[i].store(0, Ordering::Relaxed);
            self.detect[i].store(0, Ordering::Relaxed);
            self.state[i].store(0, Ordering::Relaxed);
        }
    }

    #[inline]
    fn touch(&self, p: PortId, now: Millis) {
        if let Some(c) = self.last_rx.get(usize::from(p)) {
            // Written at most once per ms per worker: no cache-line storm under load.
            if c.load(Ordering::Relaxed) != now + 1 {
                c.store(now + 1, Ordering::Relaxed);
            }
        }
    }
}

/// One worker's liveness state.
#[derive(Debug)]
pub struct Liveness {
    cfg: Config,
    shared: std::sync::Arc<Shared>,
    leader: bool,
    /// The state this worker last acted on, per port.
    seen: Vec<PeerState>,
    next: Millis,
    next_hello: Millis,
}

impl Liveness {
    /// Shares nothing until [`Liveness::set_shared`].
    pub fn new(cfg: Config) -> Liveness {
        Liveness {
            cfg,
            shared: Default::default(),
            leader: true,
            seen: Vec::new(),
            next: 0,
            next_hello: 0,
        }
    }
}

impl Liveness {
    /// Shares liveness state `shared` with the other workers; `leader` (exactly one worker)
    /// runs the state machine and sends the hellos.
    pub fn set_shared(&mut self, shared: std::sync::Arc<Shared>, leader: bool) {
        self.shared = shared;
        self.leader = leader;
    }

    /// Keepalives are on.
    #[inline]
    pub fn on(&self) -> bool {
        self.cfg.interval_ms > 0
    }

    /// The shared liveness state.
    pub fn shared(&self) -> &std::sync::Arc<Shared> {
        &self.shared
    }

    /// This worker runs the state machine.
    pub fn leader(&self) -> bool {
        self.leader
    }

    /// For every frame from tunnel `port`: notes that the peer is alive, and returns true if
    /// the frame was a hello (counted as control traffic in `counters`; not to be handled).
    #[inline]
    pub fn rx(&self, now: Millis, port: PortId, frame: &[u8], counters: &Counters) -> bool {
        // One compare for every other frame: hellos go to a group address starting 01.
        let hello = if frame.first() == Some(&HELLO_DST[0]) {
            parse_hello(frame)
        } else {
            None
        };
        if hello.is_some() {
            if let Some(c) = counters.ports.get(usize::from(port)) {
                c.rx_control.add(1);
            }
        }
        if !self.on() {
            // A peer's hellos are still never learned or flooded, only ignored.
            return hello.is_some();
        }
        let sh = &self.shared;
        sh.touch(port, now);
        let Some((iv, mult)) = hello else {
            return false;
        };
        let d = iv.max(1) * u64::from(mult.max(1));
        if let Some(c) = sh.detect.get(usize::from(port)) {
            if c.load(Ordering::Relaxed) != d {
                c.store(d, Ordering::Relaxed);
            }
        }
        true
    }

    /// When [`Liveness::tick`] is next due (`None`: keepalives off).
    pub fn due(&self) -> Option<Millis> {
        self.on().then_some(self.next)
    }

    /// Periodic liveness work at `now` for the tunnels in `tunnels` (port, peer): the leader
    /// updates peer states and calls `send_hello(port, frame)` for each tunnel that gets a
    /// hello now. Returns the tunnels this worker sees go down since it last looked (the
    /// caller forgets their MACs).
    pub fn tick(
        &mut self,
        now: Millis,
        tunnels: &[(PortId, Ipv4Addr)],
        counters: &Counters,
        mut send_hello: impl FnMut(PortId, &[u8]),
    ) -> Vec<(PortId, Ipv4Addr)> {
        let mut down = Vec::new();
        if !self.on() {
            return down;
        }
        let iv = self.cfg.interval_ms;
        // States are checked four times per interval, hellos go out once per interval.
        let due_hello = self.leader && now >= self.next_hello;
        if due_hello {
            self.next_hello = now + iv;
        }
        self.next = now + (iv / 4).max(5);
        let hello = hello(&self.cfg);
        for &(p, addr) in tunnels {
            let i = usize::from(p);
            if self.seen.len() <= i {
                self.seen.resize(i + 1, PeerState::Unknown);
            }
            if self.leader {
                self.update_state(now, p, addr, counters);
                if due_hello {
                    send_hello(p, &hello);
                }
            }
            let st = self.shared.state(p);
            if st != self.seen[i] {
                if st == PeerState::Down {
                    down.push((p, addr));
                }
                self.seen[i] = st;
            }
        }
        down
    }

    fn update_state(&self, now: Millis, p: PortId, addr: Ipv4Addr, counters: &Counters) {
        let sh = &self.shared;
        let i = usize::from(p);
        let detect = sh.detect[i].load(Ordering::Relaxed);
        if detect == 0 {
            return; // never sent a hello: unknown, never down
        }
        let last = sh.last_rx[i].load(Ordering::Relaxed);
        let old = sh.state(p);
        let alive = last != 0 && now.saturating_sub(last - 1) <= detect;
        let new = if alive {
            PeerState::Up
        } else {
            PeerState::Down
        };
        if new == old {
            return;
        }
        sh.state[i].store(new as u8, Ordering::Relaxed);
        sh.since[i].store(now, Ordering::Relaxed);
        match new {
            PeerState::Down => {
                counters.event(Event::PeerDown);
                log::warn!(
                    "peer {addr} down: nothing received for {} ms (detection time {detect} ms); its MACs are flushed",
                    now.saturating_sub(last.saturating_sub(1))
                );
            }
            _ => {
                counters.event(Event::PeerUp);
                log::info!("peer {addr} up (keepalives, detection time {detect} ms)");
            }
        }
    }
}

/// Whether `frame` looks like a hello by its header alone (for callers without a core).
pub fn is_hello(frame: &[u8]) -> bool {
    Frame::new_checked(frame).is_ok() && parse_hello(frame).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::switch::{Config as SwConfig, PortKind, Switch};

    use std::sync::Arc;

    const PEER: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);

    fn data(src: u8) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, src, 0x08, 0x00];
        f.resize(60, 0);
        f
    }

    fn switches(n: usize) -> Vec<Switch> {
        let shared = Arc::new(Shared::default());
        (0..n)
            .map(|w| {
                let cfg = SwConfig {
                    liveness: Config {
                        interval_ms: 1000,
                        multiplier: 3,
                    },
                    ..SwConfig::default()
                };
                let mut s = Switch::new(cfg, Arc::new(Counters::default()));
                s.set_port(0, PortKind::Local);
                s.set_port(1, PortKind::Tunnel(PEER));
                s.set_liveness(shared.clone(), w == 0);
                s
            })
            .collect()
    }

    fn tick(s: &mut Switch, now: Millis) -> usize {
        let mut n = 0;
        s.liveness_tick(now, |p, f| {
            assert_eq!(p, 1);
            assert!(is_hello(f));
            n += 1;
        });
        n
    }

    #[test]
    fn hello_round_trips_and_data_is_not_a_hello() {
        let h = hello(&Config {
            interval_ms: 300,
            multiplier: 5,
        });
        assert_eq!(parse_hello(&h), Some((300, 5)));
        assert!(parse_hello(&data(1)).is_none());
        let mut other = h;
        other[14] = b'x';
        assert!(parse_hello(&other).is_none());
    }

    #[test]
    fn off_by_default_tracks_nothing() {
        let mut s = Switch::new(SwConfig::default(), Arc::new(Counters::default()));
        s.set_port(1, PortKind::Tunnel(PEER));
        assert!(!s.keepalive_rx(0, 1, &data(1)));
        assert!(
            s.keepalive_rx(0, 1, &hello(&Config::default())),
            "a peer's hellos are dropped quietly"
        );
        assert_eq!(s.liveness().state(1), PeerState::Unknown);
        assert_eq!(s.liveness_due(), None);
    }

    #[test]
    fn peer_without_hellos_stays_unknown_forever() {
        let mut sw = switches(1);
        let s = &mut sw[0];
        assert_eq!(tick(s, 0), 1, "hello sent");
        assert!(!s.keepalive_rx(10, 1, &data(9)));
        for t in (1000..100_000).step_by(1000) {
            tick(s, t);
        }
        assert_eq!(s.liveness().state(1), PeerState::Unknown);
    }

    #[test]
    fn down_after_detection_time_flushes_every_worker_then_recovers() {
        let mut sw = switches(2);
        let h = hello(&Config {
            interval_ms: 1000,
            multiplier: 3,
        });
        // A station behind the peer, learned by both workers.
        for s in sw.iter_mut() {
            s.handle(0, 1, &data(7));
            assert_eq!(s.fdb().len(), 1);
        }
        assert!(
            sw[1].keepalive_rx(0, 1, &h),
            "hello consumed by a non-leader"
        );
        tick(&mut sw[0], 500);
        assert_eq!(sw[0].liveness().state(1), PeerState::Up);
        assert_eq!(sw[0].counters().events[Event::PeerUp as usize].get(), 1);
        // Silence: still up at 2.9 s, down after 3 s.
        tick(&mut sw[0], 2900);
        assert_eq!(sw[0].liveness().state(1), PeerState::Up);
        tick(&mut sw[0], 3001);
        assert_eq!(sw[0].liveness().state(1), PeerState::Down);
        assert_eq!(sw[0].fdb().len(), 0, "leader flushed");
        assert_eq!(sw[1].fdb().len(), 1);
        tick(&mut sw[1], 3100);
        assert_eq!(sw[1].fdb().len(), 0, "other worker flushed");
        assert_eq!(sw[0].counters().events[Event::PeerDown as usize].get(), 1);
        // Back: any frame (here data, to the other worker) brings it up again.
        assert!(!sw[1].keepalive_rx(5000, 1, &data(7)));
        tick(&mut sw[0], 5100);
        assert_eq!(sw[0].liveness().state(1), PeerState::Up);
        assert_eq!(sw[0].counters().events[Event::PeerUp as usize].get(), 2);
    }

    #[test]
    fn data_alone_keeps_a_saturated_peer_up() {
        let mut sw = switches(1);
        let s = &mut sw[0];
        s.keepalive_rx(
            0,
            1,
            &hello(&Config {
                interval_ms: 1000,
                multiplier: 3,
            }),
        );
        // Hellos lost in the load; data keeps flowing every 10 ms for a minute.
        for t in (0..60_000).step_by(10) {
            s.keepalive_rx(t, 1, &data(3));
            if t % 250 == 0 {
                tick(s, t);
            }
            assert_eq!(s.liveness().state(1), PeerState::Up, "flapped at {t} ms");
        }
    }
}
