//! When the core's periodic work is due: MAC aging, the spanning tree's timers, and re-reading
//! the tunnels' path MTUs. Keepalive deadlines live with the liveness state machine
//! ([`crate::switch::liveness`]). All times are the worker clock in ms, passed in.

use crate::switch::Millis;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// MAC table aging runs this often.
pub const AGING_MS: Millis = 1_000;
/// The spanning tree's timers run this often (leader only).
pub const STP_TICK_MS: Millis = 100;
/// Path MTUs are re-read this often, so one that grows again is noticed (the kernel forgets
/// learned values after 10 minutes).
pub const PMTU_REFRESH_MS: Millis = 5_000;
/// Soonest re-read after a send was refused as too big.
pub const PMTU_RETRY_MS: Millis = 20;

/// When to re-read the path MTUs: every [`PMTU_REFRESH_MS`], and soon after any worker saw a
/// send refused as too big (each worker has its own core and would otherwise lose a packet of
/// its own before learning).
#[derive(Debug)]
pub struct PmtuSchedule {
    stale: bool,
    /// Bumped by any worker that saw a refusal.
    shared: Arc<AtomicU64>,
    seen: u64,
    next_refresh: Millis,
    last: Millis,
}

impl PmtuSchedule {
    /// Due at once, sharing refusals through `shared`.
    pub fn new(shared: Arc<AtomicU64>) -> PmtuSchedule {
        PmtuSchedule {
            stale: false,
            seen: shared.load(Ordering::Relaxed),
            shared,
            next_refresh: 0,
            last: 0,
        }
    }

    fn wants_retry(&self) -> bool {
        self.stale || self.shared.load(Ordering::Relaxed) != self.seen
    }

    /// When the next re-read is due.
    pub fn deadline(&self) -> Millis {
        if self.wants_retry() {
            self.next_refresh.min(self.last + PMTU_RETRY_MS)
        } else {
            self.next_refresh
        }
    }

    /// True when the path MTUs should be re-read at `now`.
    #[inline]
    pub fn due(&self, now: Millis) -> bool {
        now >= self.deadline()
    }

    /// A send was refused as too big: every worker re-reads soon.
    pub fn too_big(&mut self) {
        if !self.stale {
            self.stale = true;
            self.shared.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records a re-read at `now`.
    pub fn refreshed(&mut self, now: Millis) {
        self.stale = false;
        self.seen = self.shared.load(Ordering::Relaxed);
        self.last = now;
        self.next_refresh = now + PMTU_REFRESH_MS;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_is_periodic_and_a_refusal_anywhere_brings_it_forward() {
        let shared = Arc::new(AtomicU64::new(0));
        let mut a = PmtuSchedule::new(shared.clone());
        let mut b = PmtuSchedule::new(shared);
        assert!(a.due(0), "due at start");
        a.refreshed(0);
        b.refreshed(0);
        assert_eq!(a.deadline(), PMTU_REFRESH_MS);
        assert!(!a.due(PMTU_REFRESH_MS - 1));
        assert!(a.due(PMTU_REFRESH_MS));
        a.refreshed(1000);
        b.refreshed(1000);
        // A refusal in `a` makes both re-read 20 ms after their last read, not 5 s later.
        a.too_big();
        a.too_big();
        assert_eq!(a.deadline(), 1000 + PMTU_RETRY_MS);
        assert_eq!(b.deadline(), 1000 + PMTU_RETRY_MS);
        b.refreshed(1030);
        assert_eq!(b.deadline(), 1030 + PMTU_REFRESH_MS, "b has caught up");
        assert!(a.due(1030));
        a.refreshed(1030);
        assert_eq!(a.deadline(), 1030 + PMTU_REFRESH_MS);
    }
}
