//! Local-side loop guard.
//!
//! Split horizon keeps the tunnel mesh loop-free, but a loop can still close through the local
//! side: two hosts whose container bridges are also joined directly (bridged onto one LAN). A
//! broadcast then goes TAP → tunnel → other host → its LAN → back into our TAP, for ever. The
//! symptom the switch sees is MACs flapping between the local port and a tunnel. When stations
//! move between the local port and one tunnel [`THRESHOLD`] times within [`WINDOW_MS`] (a
//! migrating container moves once), that tunnel is blocked both ways for [`HOLD_MS`]: frames
//! from it and to it are dropped as `loop_guard`, the event `loop_detected` is counted and a
//! warning logged. After the hold the tunnel is tried again; a loop still there is caught
//! again within a second.
//!
//! On in `dnet-switch` (`--no-loop-guard` turns it off); off in [`super::Config::default`] so
//! the core's plain learning rules stay as documented in `fdb.rs`.

use super::{Action, DropReason, Event, Millis, PortId, PortKind, Switch, Verdict};

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
    /// Blocked while `now < blocked_until`.
    blocked_until: Millis,
}

/// Per-worker loop guard state.
#[derive(Debug, Default)]
pub struct LoopGuard {
    ports: Vec<PortGuard>,
    now: Millis,
}

impl LoopGuard {
    fn guard(&mut self, p: PortId) -> &mut PortGuard {
        let i = usize::from(p);
        if self.ports.len() <= i {
            self.ports.resize(i + 1, PortGuard::default());
        }
        &mut self.ports[i]
    }

    /// True while tunnel `p` is blocked (as of the last frame handled).
    #[inline]
    pub fn blocked(&self, p: PortId) -> bool {
        self.ports
            .get(usize::from(p))
            .is_some_and(|g| self.now < g.blocked_until)
    }
}

impl Switch {
    /// Notes that a station moved from `from` to `to` at `now`; blocks the tunnel involved
    /// when local ↔ tunnel moves exceed the threshold.
    pub(super) fn loop_moved(&mut self, now: Millis, from: PortId, to: PortId) {
        if !self.cfg.loop_guard {
            return;
        }
        let tunnel = match (self.port(from), self.port(to)) {
            (Some(PortKind::Local), Some(PortKind::Tunnel(a))) => (to, a),
            (Some(PortKind::Tunnel(a)), Some(PortKind::Local)) => (from, a),
            _ => return,
        };
        let g = self.loops.guard(tunnel.0);
        if now >= g.window_start + WINDOW_MS {
            g.window_start = now;
            g.moves = 0;
        }
        g.moves += 1;
        if g.moves >= THRESHOLD && now >= g.blocked_until {
            g.blocked_until = now + HOLD_MS;
            g.moves = 0;
            self.counters.event(Event::LoopDetected);
            log::warn!(
                "loop through the local side: stations flap between the local port and the tunnel to {} ({THRESHOLD} moves within {WINDOW_MS} ms; are two hosts' bridges joined directly?); blocking that tunnel for {} s",
                tunnel.1,
                HOLD_MS / 1000
            );
        }
    }

    /// Drops what a blocked tunnel sends or would receive. Call after the decision; `now` is
    /// remembered for [`Switch::flood_targets`].
    pub(super) fn loop_filter(&mut self, now: Millis, ingress: PortId, v: &mut Verdict) {
        if !self.cfg.loop_guard {
            return;
        }
        self.loops.now = now;
        let blocked = match v.action {
            Action::Drop(_) => false,
            Action::Forward(p) => self.loops.blocked(ingress) || self.loops.blocked(p),
            Action::Flood => self.loops.blocked(ingress),
        };
        if blocked {
            v.action = Action::Drop(DropReason::LoopGuard);
        }
    }

    /// True while tunnel `p` is blocked by the loop guard.
    #[inline]
    pub fn loop_blocked(&self, p: PortId) -> bool {
        self.cfg.loop_guard && self.loops.blocked(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::switch::{Config, Counters};
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
