//! Local-side loop guard.
//!
//! Split horizon keeps the tunnel mesh loop-free, but a loop can still close through the local
//! side: two hosts whose container bridges are also joined directly (bridged onto one LAN). A
//! broadcast then goes TAP → tunnel → other host → its LAN → back into our TAP, for ever. The
//! symptom the switch sees is MACs flapping between the local port and a tunnel. When stations
//! move between the local port and one tunnel [`THRESHOLD`] times within [`WINDOW_MS`] (a
//! migrating container moves once), that tunnel is blocked both ways for [`HOLD_MS`]: frames
//! from it and to it are dropped as `loop_guard`, the event `loop_detected` is counted and a
//! warning logged. The block holds for every worker of the switch ([`Shared`]). After the hold
//! the tunnel is tried again; a loop still there is caught
//! again within a second.
//!
//! On in `dnet-switch` (`--no-loop-guard` turns it off); off in [`super::Config::default`] so
//! the core's plain learning rules stay as documented in `fdb.rs`.

use super::forward::Action;
use super::{DropReason, Millis, PortId, PortKind, MAX_PORTS};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Window over which moves are counted.
pub const WINDOW_MS: Millis = 1_000;
/// Moves between the local port and one tunnel within the window that mean a loop.
pub const THRESHOLD: u32 = 5;
/// How long a tunnel stays blocked.
pub const HOLD_MS: Millis = 30_000;

#[derive(Clone, Copy, Debug, Default)]
struct PortGuard {
    window_start: Millis,
    moves: u32,
}

/// Which tunnels are blocked, shared by the workers of a switch: a loop seen by one worker is
/// blocked for all of them (each handles only its share of the frames, so the others might
/// never count enough moves, and would keep the loop open for their share).
#[derive(Debug)]
pub struct Shared {
    /// Per port: blocked while the worker clock is below this (ms).
    blocked_until: Box<[AtomicU64]>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            blocked_until: (0..MAX_PORTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Shared {
    fn until(&self, p: PortId) -> Millis {
        self.blocked_until
            .get(usize::from(p))
            .map_or(0, |b| b.load(Ordering::Relaxed))
    }

    /// Blocks `p` until `until` unless it is already blocked at `now`; true if it was not.
    fn block(&self, p: PortId, now: Millis, until: Millis) -> bool {
        let Some(b) = self.blocked_until.get(usize::from(p)) else {
            return false;
        };
        let cur = b.load(Ordering::Relaxed);
        now >= cur
            && b.compare_exchange(cur, until, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Forgets port `p` (removed or re-added).
    pub fn reset(&self, p: PortId) {
        if let Some(b) = self.blocked_until.get(usize::from(p)) {
            b.store(0, Ordering::Relaxed);
        }
    }
}

/// Per-worker loop guard state.
#[derive(Debug, Default)]
pub struct LoopGuard {
    ports: Vec<PortGuard>,
    shared: Arc<Shared>,
    now: Millis,
    /// A tunnel was blocked since [`LoopGuard::take_newly_blocked`] last said so.
    newly_blocked: bool,
}

impl LoopGuard {
    /// Shares the blocked tunnels with the other workers of the switch.
    pub fn set_shared(&mut self, shared: Arc<Shared>) {
        self.shared = shared;
    }

    fn guard(&mut self, p: PortId) -> &mut PortGuard {
        let i = usize::from(p);
        if self.ports.len() <= i {
            self.ports.resize(i + 1, PortGuard::default());
        }
        &mut self.ports[i]
    }

    /// True while tunnel `p` is blocked (as of the last frame handled), by any worker.
    #[inline]
    pub fn blocked(&self, p: PortId) -> bool {
        self.now < self.shared.until(p)
    }

    /// Notes that a station moved from port `from` to port `to` (of the kinds given) at
    /// `now`. Returns the tunnel (port, peer) it blocks when local ↔ tunnel moves exceed the
    /// threshold.
    pub fn moved(
        &mut self,
        now: Millis,
        from: (PortId, Option<PortKind>),
        to: (PortId, Option<PortKind>),
    ) -> Option<(PortId, Ipv4Addr)> {
        let tunnel = match (from.1, to.1) {
            (Some(PortKind::Local), Some(PortKind::Tunnel(a))) => (to.0, a),
            (Some(PortKind::Tunnel(a)), Some(PortKind::Local)) => (from.0, a),
            _ => return None,
        };
        let g = self.guard(tunnel.0);
        if now >= g.window_start + WINDOW_MS {
            g.window_start = now;
            g.moves = 0;
        }
        g.moves += 1;
        if g.moves < THRESHOLD {
            return None;
        }
        g.moves = 0;
        // Another worker may have blocked it already: then this one says nothing.
        if self.shared.block(tunnel.0, now, now + HOLD_MS) {
            self.newly_blocked = true;
            return Some(tunnel);
        }
        None
    }

    /// `action` for a frame from `ingress` at `now`, unless a blocked tunnel sends it or
    /// would receive it: then a `loop_guard` drop. `now` is remembered for
    /// [`LoopGuard::blocked`].
    pub fn filter(&mut self, now: Millis, ingress: PortId, action: Action) -> Action {
        self.now = now;
        let blocked = match action {
            Action::Drop(_) => false,
            Action::Forward(p) => self.blocked(ingress) || self.blocked(p),
            Action::Flood => self.blocked(ingress),
        };
        if blocked {
            Action::Drop(DropReason::LoopGuard)
        } else {
            action
        }
    }

    /// True once after this worker blocked a tunnel: the local bridge may still point
    /// stations at the TAP that are now reached the other way.
    pub fn take_newly_blocked(&mut self) -> bool {
        std::mem::take(&mut self.newly_blocked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::switch::{Config, Counters, Event, Switch};
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    fn frame(dst: u8, src: u8) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, dst, 2, 0, 0, 0, 0, src, 0x08, 0x00];
        f.resize(60, 0);
        f
    }

    fn bcast(src: u8) -> Vec<u8> {
        let mut f = frame(0, src);
        f[..6].fill(0xff);
        f
    }

    fn switch(on: bool) -> Switch {
        let cfg = Config {
            loop_guard: on,
            ..Config::default()
        };
        let mut s = Switch::new(cfg, Arc::new(Counters::default()));
        s.set_port(0, PortKind::Local);
        s.set_port(1, PortKind::Tunnel(Ipv4Addr::new(10, 200, 0, 2)));
        s.set_port(2, PortKind::Tunnel(Ipv4Addr::new(10, 200, 0, 3)));
        s
    }

    #[test]
    fn flapping_between_local_and_a_tunnel_blocks_that_tunnel() {
        let mut s = switch(true);
        // A broadcast looping: seen from the TAP, then back from tunnel 1, again and again.
        let mut t = 0;
        for _ in 0..THRESHOLD {
            s.handle(t, 0, &bcast(9));
            s.handle(t + 1, 1, &bcast(9));
            t += 10;
        }
        assert_eq!(s.counters().events[Event::LoopDetected as usize].get(), 1);
        assert!(s.loop_blocked(1));
        assert!(!s.loop_blocked(2), "only the tunnel involved");
        assert!(s.take_loop_blocked(), "the block is announced once");
        assert!(!s.take_loop_blocked());
        // Both ways blocked: nothing from tunnel 1, nothing flooded into it.
        assert_eq!(
            s.handle(t, 1, &bcast(9)).action,
            Action::Drop(DropReason::LoopGuard)
        );
        assert_eq!(s.handle(t, 0, &bcast(7)).action, Action::Flood);
        assert_eq!(s.flood_targets(0).collect::<Vec<_>>(), vec![2]);
        // Other tunnels keep working.
        assert_eq!(s.handle(t, 2, &frame(7, 8)).action, Action::Forward(0));
        // After the hold, tried again.
        let later = t + HOLD_MS + 1;
        assert_eq!(s.handle(later, 1, &frame(7, 5)).action, Action::Forward(0));
        assert!(!s.loop_blocked(1));
    }

    #[test]
    fn a_loop_one_worker_sees_is_blocked_for_every_worker() {
        let shared = Arc::new(Shared::default());
        let (mut w0, mut w1) = (switch(true), switch(true));
        w0.set_loop_guard(shared.clone());
        w1.set_loop_guard(shared);
        let mut t = 0;
        for _ in 0..THRESHOLD {
            w0.handle(t, 0, &bcast(9));
            w0.handle(t + 1, 1, &bcast(9));
            t += 10;
        }
        assert!(w0.take_loop_blocked());
        // Worker 1 never saw the flapping, but drops its share of the loop too.
        assert_eq!(
            w1.handle(t, 1, &bcast(8)).action,
            Action::Drop(DropReason::LoopGuard)
        );
        assert!(w1.loop_blocked(1));
        assert!(
            !w1.take_loop_blocked(),
            "announced by the worker that blocked it"
        );
        // Worker 1 counting its own moves later does not block it again.
        for _ in 0..THRESHOLD {
            w1.handle(t, 0, &bcast(9));
            w1.handle(t + 1, 1, &bcast(9));
            t += 10;
        }
        assert!(!w1.take_loop_blocked());
        assert_eq!(w1.counters().events[Event::LoopDetected as usize].get(), 0);
    }

    #[test]
    fn a_single_move_or_tunnel_to_tunnel_moves_are_not_a_loop() {
        let mut s = switch(true);
        s.handle(0, 0, &frame(1, 9));
        s.handle(5, 1, &frame(1, 9)); // migrated to another host
        for t in 0..20 {
            s.handle(10 + t, 1 + (t as u16 % 2), &frame(1, 4));
        }
        assert_eq!(s.counters().events[Event::LoopDetected as usize].get(), 0);
        assert!(!s.loop_blocked(1));
    }

    #[test]
    fn off_means_plain_learning() {
        let mut s = switch(false);
        for t in 0..20 {
            s.handle(t, (t % 2) as u16, &bcast(9));
        }
        assert!(!s.loop_blocked(1));
        assert_eq!(s.counters().events[Event::LoopDetected as usize].get(), 0);
    }
}
