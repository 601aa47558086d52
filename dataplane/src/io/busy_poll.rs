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
//! Only an exchange opens a window: traffic after a quiet spell, or the answer that came while
//! polling. Streams and steady traffic do not, because their frames come anyway, and a core
//! spent polling between them is taken from the threads that send them: on 2 cores, windows
//! opened between the frames of a 64-byte UDP blast cost GRE-in-UDP ×0.76, and between those
//! of 20 Mbit/s of 1000-byte datagrams twice the switches' CPU.
//!
//! Cost is bounded three ways:
//! - a window opens only after a quiet spell of [`SHARE_DIV`] windows, so windows that end
//!   empty cost at most 1/[`SHARE_DIV`] of a core; an answer within [`STREAM_GAP_US`] is a
//!   stream's next frame and opens none, nor does the end of a full burst (a flood);
//! - polling draws on a credit that refills at 1/[`SHARE_DIV`] of wall time, so answers that
//!   keep a window open (a slow stream) cost at most that share too;
//! - the worker yields the CPU between polls and stops polling as soon as a yield lets another
//!   thread run, so it only uses a core nothing else wants (on a 2-core host, polling that
//!   merely yielded cost GRE-in-UDP one TCP stream ×0.8).
//!
//! Pure: times are microseconds from the caller's clock, so the policy is unit-tested without
//! one.

/// Polling may use at most 1/`SHARE_DIV` of a worker's wall time (6.25 %): a window opens
/// only after `SHARE_DIV` windows without traffic, and the credit refills at this share.
pub const SHARE_DIV: u64 = 16;

/// An answer this soon after the traffic before it is a stream's next frame, not the answer
/// of an exchange: that crosses the other host's switch, which was asleep, so it comes back
/// after tens of microseconds at least (100 µs and more on the test VM). Polling on would go
/// on for as long as the stream, taking its frames one by one.
pub const STREAM_GAP_US: u64 = 20;

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
    /// Polling is allowed until then (the last exchange's traffic plus the window).
    open_until: Option<u64>,
    seen: u64,
    polling: bool,
}

impl BusyPoll {
    /// Polls for up to `window_us` after an exchange; 0 turns polling off.
    pub fn new(window_us: u32) -> Self {
        let window = u64::from(window_us);
        BusyPoll {
            window,
            credit: window * CAP_WINDOWS,
            rest: 0,
            last_traffic: None,
            open_until: None,
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
        let hit = std::mem::take(&mut self.polling);
        let gap = self
            .last_traffic
            .map_or(u64::MAX, |t| now.saturating_sub(t));
        self.last_traffic = Some(now);
        let exchange = !heavy
            && if hit {
                gap >= STREAM_GAP_US
            } else {
                gap >= self.window * SHARE_DIV
            };
        self.open_until = exchange.then(|| now + self.window);
        hit
    }

    /// Another thread wanted this core while the worker polled (its yield did not return at
    /// once): the window ends, counted as a miss, so polling only ever uses an idle core.
    pub fn give_way(&mut self) {
        self.open_until = None;
    }

    /// Nothing is ready at `now`: poll or sleep.
    pub fn idle(&mut self, now: u64) -> Idle {
        self.account(now);
        if self.open_until.is_some_and(|end| now < end) && self.credit > 0 {
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

    /// Traffic at `t` that found no polling worker opens a window (an exchange after quiet).
    fn opens_a_window(b: &mut BusyPoll, t: u64) {
        assert!(!b.traffic(t, false), "traffic at {t} was a hit");
        assert_eq!(b.idle(t + 1), Idle::Poll, "no window after traffic at {t}");
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

    /// The worst case for windows that end empty: a frame just after each window, as soon
    /// after the last as still opens one. Polling is held to 1/SHARE_DIV of the time; frames
    /// any closer together open no windows at all.
    #[test]
    fn windows_that_end_empty_cost_at_most_the_share() {
        let window = 200;
        let end = 2_000_000;
        let polled_with_gap = |gap: u64| {
            let mut b = BusyPoll::new(window);
            let (mut t, mut polled) = (0u64, 0u64);
            while t < end {
                b.traffic(t, false);
                let (stop, _) = poll_until_sleep(&mut b, t + 1, 1);
                polled += stop - (t + 1);
                t += gap;
            }
            polled
        };
        let limit = end / SHARE_DIV + u64::from(window) * CAP_WINDOWS;
        let polled = polled_with_gap(u64::from(window) * SHARE_DIV);
        assert!(
            polled <= limit,
            "polled {polled} µs of {end}, limit {limit}"
        );
        assert!(polled >= end / SHARE_DIV / 2, "still polls: {polled}");
        let polled = polled_with_gap(u64::from(window) + 5);
        assert!(
            polled < u64::from(window),
            "only the first window: {polled}"
        );
    }

    /// Answers that keep coming while polling, each a little over STREAM_GAP_US after the
    /// last (a slow stream that looks like exchanges), are held to the share by the credit.
    #[test]
    fn answers_that_keep_a_window_open_cost_at_most_the_share() {
        let mut b = BusyPoll::new(200);
        let (mut t, mut polled) = (0u64, 0u64);
        let end = 2_000_000;
        b.traffic(t, false);
        while t < end {
            let mut p = t + 1;
            while p < t + STREAM_GAP_US + 5 {
                if b.idle(p) != Idle::Poll {
                    break;
                }
                polled += 1;
                p += 1;
            }
            t += STREAM_GAP_US + 5;
            b.traffic(t, false);
        }
        let limit = end / SHARE_DIV + 200 * CAP_WINDOWS;
        assert!(
            polled <= limit,
            "polled {polled} µs of {end}, limit {limit}"
        );
        assert!(polled >= 200, "polled for the first answers: {polled}");
    }

    #[test]
    fn the_end_of_a_full_burst_opens_no_window() {
        let mut b = BusyPoll::new(200);
        b.traffic(0, true);
        assert_eq!(b.idle(1), Idle::Sleep { missed: false }, "a flood: sleep");
        // An exchange after a quiet spell is polled for again.
        opens_a_window(&mut b, 10_000);
    }

    /// An answer a few µs after the traffic before it is a stream's: no window. One after
    /// 50 µs is an exchange's.
    #[test]
    fn a_quick_answer_is_a_stream_and_opens_no_window() {
        let mut b = BusyPoll::new(200);
        opens_a_window(&mut b, 0);
        assert!(b.traffic(STREAM_GAP_US - 1, false), "still a hit");
        assert_eq!(b.idle(STREAM_GAP_US), Idle::Sleep { missed: false });
        opens_a_window(&mut b, 10_000);
        assert!(b.traffic(10_050, false), "an answer after 50 µs is a hit");
        assert_eq!(b.idle(10_051), Idle::Poll, "and opens the window again");
    }

    /// Steady traffic (a frame every 400 µs: 20 Mbit/s of 1000-byte datagrams) wakes the
    /// worker for each frame anyway: after the first, no window opens, and none ends empty.
    #[test]
    fn steady_traffic_opens_no_windows() {
        let mut b = BusyPoll::new(200);
        let mut polled = 0;
        for i in 0..1_000u64 {
            let t = i * 400;
            assert!(!b.traffic(t, false), "frame {i} found no polling worker");
            if b.idle(t + 1) == Idle::Poll {
                polled += 1;
                let (_, missed) = poll_until_sleep(&mut b, t + 2, 1);
                assert!(missed);
            }
        }
        assert_eq!(polled, 1, "only the first frame came after a quiet spell");
        // A quiet spell later, the next exchange is polled for again.
        opens_a_window(&mut b, 999 * 400 + 200 * SHARE_DIV);
    }

    #[test]
    fn giving_way_ends_the_window_as_a_miss() {
        let mut b = BusyPoll::new(200);
        opens_a_window(&mut b, 0);
        b.give_way();
        assert_eq!(b.idle(2), Idle::Sleep { missed: true });
        assert_eq!(b.idle(3), Idle::Sleep { missed: false });
        // The next exchange opens a new window.
        opens_a_window(&mut b, 10_000);
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
