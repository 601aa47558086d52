//! Busy polling after traffic (`--busy-poll`): when a worker runs out of work it keeps
//! polling its TAP queues and sockets for a short window before it sleeps, so the answer of a
//! request-response exchange (a ping's reply, a TCP ACK, an RPC's response) is picked up
//! without a wake-up.
//!
//! Why: a round trip through two switches costs at least three thread wake-ups that kernel
//! VXLAN does not have (it runs the whole path in the sender's system call). On a VM each
//! wake-up of an idle vCPU is a hypervisor exit plus the host rescheduling the vCPU: on the
//! 2-vCPU test VM (`haltpoll.guest_halt_poll_ns=0`) that is most of dnet's extra round-trip
//! time (see `docs/internals/performance.md`).
//!
//! Cost is bounded three ways:
//! - the worker yields the CPU between polls and stops polling as soon as a yield lets another
//!   thread run, so it only uses a core nothing else wants (on a 2-core host, polling that
//!   merely yielded cost GRE-in-UDP one TCP stream ×0.8);
//! - polling draws on a credit that refills at 1/[`SHARE_DIV`] of wall time, so a pattern
//!   that leaves every window empty (a frame just after each) costs at most that share of a
//!   core;
//! - after a full burst (a flood) it does not poll for [`HEAVY_QUIET_US`].
//!
//! Pure: times are microseconds from the caller's clock, so the policy is unit-tested without
//! one.

/// Polling may use at most 1/`SHARE_DIV` of a worker's wall time (6.25 %).
pub const SHARE_DIV: u64 = 16;

/// After a full burst (more was waiting: a flood, not an exchange) the worker does not poll
/// for this long: under a flood, sleeping between bursts lets frames gather into batches that
/// polling would take one by one, and the flood needs no help with wake-ups.
pub const HEAVY_QUIET_US: u64 = 1_000;

/// Credit saved up while quiet, in windows: enough for a few exchanges in a row.
const CAP_WINDOWS: u64 = 4;

/// What a worker with nothing to do should do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idle {
    /// Poll again without sleeping (after yielding the CPU).
    Poll,
    /// Sleep until an event or a timer. `missed`: this ends a polling window that found no
    /// traffic (counted `busy_poll_miss`).
    Sleep {
        /// A window ended empty.
        missed: bool,
    },
}

/// One worker's busy-poll state.
#[derive(Clone, Debug)]
pub struct BusyPoll {
    window: u64,
    credit: u64,
    /// Elapsed-time remainder not yet turned into credit (keeps the refill exact).
    rest: u64,
    last_traffic: Option<u64>,
    last_heavy: Option<u64>,
    seen: u64,
    polling: bool,
}

impl BusyPoll {
    /// Polls for up to `window_us` after traffic; 0 turns polling off.
    pub fn new(window_us: u32) -> Self {
        let window = u64::from(window_us);
        BusyPoll {
            window,
            credit: window * CAP_WINDOWS,
            rest: 0,
            last_traffic: None,
            last_heavy: None,
            seen: 0,
            polling: false,
        }
    }

    /// Refills the credit for the time since the last call and charges it if it was spent
    /// polling.
    fn account(&mut self, now: u64) {
        let dt = now.saturating_sub(self.seen);
        self.seen = self.seen.max(now);
        let earned = self.rest + dt;
        self.rest = earned % SHARE_DIV;
        self.credit = (self.credit + earned / SHARE_DIV).min(self.window * CAP_WINDOWS);
        if self.polling {
            self.credit = self.credit.saturating_sub(dt);
        }
    }

    /// The worker handled traffic at `now`; `heavy`: a full burst, more was waiting. Returns
    /// whether it arrived while polling (a wake-up saved, counted `busy_poll_hit`).
    pub fn traffic(&mut self, now: u64, heavy: bool) -> bool {
        self.account(now);
        self.last_traffic = Some(now);
        if heavy {
            self.last_heavy = Some(now);
        }
        std::mem::take(&mut self.polling)
    }

    /// Another thread wanted this core while the worker polled (its yield did not return at
    /// once): the window ends, counted as a miss, so polling only ever uses an idle core.
    pub fn give_way(&mut self) {
        self.last_traffic = None;
    }

    /// Nothing is ready at `now`: poll or sleep.
    pub fn idle(&mut self, now: u64) -> Idle {
        self.account(now);
        let recent = self
            .last_traffic
            .is_some_and(|t| now.saturating_sub(t) < self.window);
        let flood = self
            .last_heavy
            .is_some_and(|h| now.saturating_sub(h) < HEAVY_QUIET_US);
        if recent && !flood && self.credit > 0 {
            self.polling = true;
            Idle::Poll
        } else {
            Idle::Sleep {
                missed: std::mem::take(&mut self.polling),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs idle() every `step` µs from `from` until it says sleep; returns when, and whether
    /// the window was missed.
    fn poll_until_sleep(b: &mut BusyPoll, from: u64, step: u64) -> (u64, bool) {
        let mut t = from;
        loop {
            match b.idle(t) {
                Idle::Poll => t += step,
                Idle::Sleep { missed } => return (t, missed),
            }
        }
    }

    #[test]
    fn off_never_polls() {
        let mut b = BusyPoll::new(0);
        assert!(!b.traffic(10, false));
        assert_eq!(b.idle(10), Idle::Sleep { missed: false });
        assert_eq!(b.idle(11), Idle::Sleep { missed: false });
    }

    #[test]
    fn no_polling_before_any_traffic() {
        let mut b = BusyPoll::new(200);
        assert_eq!(b.idle(5), Idle::Sleep { missed: false });
    }

    #[test]
    fn polls_for_the_window_after_traffic_then_sleeps_as_a_miss() {
        let mut b = BusyPoll::new(200);
        assert!(!b.traffic(1_000, false));
        let (t, missed) = poll_until_sleep(&mut b, 1_001, 1);
        assert_eq!(t, 1_200);
        assert!(missed);
        // Only the ending of a window is a miss; sleeping on is not.
        assert_eq!(b.idle(50_000), Idle::Sleep { missed: false });
    }

    #[test]
    fn traffic_during_the_window_is_a_hit_and_restarts_it() {
        let mut b = BusyPoll::new(200);
        b.traffic(0, false);
        assert_eq!(b.idle(10), Idle::Poll);
        assert_eq!(b.idle(120), Idle::Poll);
        assert!(b.traffic(150, false), "arrived while polling");
        assert_eq!(b.idle(340), Idle::Poll, "the window restarts at 150");
        // Traffic after a sleep is not a hit.
        assert_eq!(b.idle(350), Idle::Sleep { missed: true });
        assert!(!b.traffic(60_000, false));
    }

    /// A ping every 50 ms: each worker polls after the request (reply comes 100 µs later)
    /// and after the reply (nothing until the next ping). The credit never runs dry.
    #[test]
    fn an_exchange_every_50_ms_is_always_covered() {
        let mut b = BusyPoll::new(200);
        let (mut hits, mut misses) = (0, 0);
        for i in 0..1_000u64 {
            let t0 = i * 50_000;
            b.traffic(t0, false);
            assert_eq!(b.idle(t0 + 1), Idle::Poll, "ping {i}");
            hits += u32::from(b.traffic(t0 + 100, false));
            let (_, missed) = poll_until_sleep(&mut b, t0 + 101, 1);
            misses += u32::from(missed);
        }
        assert_eq!((hits, misses), (1_000, 1_000));
    }

    /// The worst case: a frame arrives just after every window has ended, so every window is
    /// spent in vain. Polling is held to 1/SHARE_DIV of the time.
    #[test]
    fn a_frame_just_after_each_window_costs_at_most_the_share() {
        let window = 200;
        let mut b = BusyPoll::new(window);
        let (mut t, mut polled) = (0u64, 0u64);
        let end = 2_000_000;
        while t < end {
            b.traffic(t, false);
            let (stop, _) = poll_until_sleep(&mut b, t + 1, 1);
            polled += stop - (t + 1);
            t += u64::from(window) + 5;
        }
        let limit = end / SHARE_DIV + u64::from(window) * CAP_WINDOWS;
        assert!(
            polled <= limit,
            "polled {polled} µs of {end}, limit {limit}"
        );
        assert!(
            polled >= end / SHARE_DIV / 2,
            "still polls within its share: {polled}"
        );
    }

    #[test]
    fn no_polling_for_a_while_after_a_full_burst() {
        let mut b = BusyPoll::new(200);
        b.traffic(0, true);
        b.traffic(10, false);
        assert_eq!(b.idle(11), Idle::Sleep { missed: false }, "a flood: sleep");
        // Light traffic long after the last full burst opens windows again.
        b.traffic(HEAVY_QUIET_US, false);
        assert_eq!(b.idle(HEAVY_QUIET_US + 1), Idle::Poll);
    }

    #[test]
    fn giving_way_ends_the_window_as_a_miss() {
        let mut b = BusyPoll::new(200);
        b.traffic(0, false);
        assert_eq!(b.idle(1), Idle::Poll);
        b.give_way();
        assert_eq!(b.idle(2), Idle::Sleep { missed: true });
        assert_eq!(b.idle(3), Idle::Sleep { missed: false });
        // The next traffic opens a new window.
        assert!(!b.traffic(10, false));
        assert_eq!(b.idle(11), Idle::Poll);
    }

    #[test]
    fn a_clock_that_steps_back_neither_panics_nor_mints_credit() {
        let mut b = BusyPoll::new(100);
        b.traffic(1_000, false);
        assert_eq!(b.idle(500), Idle::Poll);
        let credit = b.credit;
        b.idle(400);
        assert!(b.credit <= credit);
    }
}
