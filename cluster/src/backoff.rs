//! Capped exponential backoff with jitter, and a rate limit for repeated log lines; both take
//! the time and the randomness from the caller.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Delays between reconnect attempts: `base · 2^n`, capped, with "equal jitter" (half the
/// delay fixed, half random) so that hosts cut off by the same etcd outage do not all return
/// in the same instant, yet none retries much sooner than planned.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// Backoff from `base` doubling up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap: cap.max(base),
            attempt: 0,
        }
    }

    /// The next delay; `unit` is a uniform random number in [0, 1).
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let exp = self.attempt.min(31);
        self.attempt = self.attempt.saturating_add(1);
        let full = self
            .base
            .checked_mul(1u32 << exp)
            .map_or(self.cap, |d| d.min(self.cap));
        let half = full / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// Attempts since the last [`Backoff::reset`].
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Back to `base` after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Lets one log line per kind through per interval and counts the rest, so a flood of hostile
/// records or a long outage cannot flood the log.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    last: HashMap<&'static str, (Instant, u64)>,
}

impl LogLimiter {
    /// At most one line per kind per `interval`.
    pub fn new(interval: Duration) -> LogLimiter {
        LogLimiter {
            interval,
            last: HashMap::new(),
        }
    }

    /// `Some(suppressed)` if a line of `kind` may be logged at `now` (with how many were
    /// suppressed since the last one), `None` if it must be dropped.
    pub fn admit(&mut self, kind: &'static str, now: Instant) -> Option<u64> {
        match self.last.get_mut(kind) {
            Some((at, suppressed)) if now.saturating_duration_since(*at) < self.interval => {
                *suppressed += 1;
                None
            }
            Some((at, suppressed)) => {
                let n = *suppressed;
                *at = now;
                *suppressed = 0;
                Some(n)
            }
            None => {
                self.last.insert(kind, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn backoff_doubles_to_the_cap_with_half_jitter() {
        let mut b = Backoff::new(100 * MS, 1000 * MS);
        // unit 0: the fixed half; unit ~1: the full delay.
        assert_eq!(b.next_delay(0.0), 50 * MS);
        assert_eq!(b.next_delay(0.0), 100 * MS);
        assert_eq!(
            b.next_delay(0.999_999),
            400 * MS - Duration::from_nanos(200)
        );
        assert_eq!(b.next_delay(0.0), 400 * MS);
        assert_eq!(b.next_delay(0.0), 500 * MS);
        for _ in 0..100 {
            assert!(b.next_delay(0.999) <= 1000 * MS);
        }
        assert_eq!(b.attempts(), 105);
        b.reset();
        assert_eq!(b.next_delay(0.5), 75 * MS);
    }

    #[test]
    fn jitter_spreads_attempts() {
        let mut rng = fastrand::Rng::with_seed(7);
        let delays: Vec<Duration> = (0..50)
            .map(|_| Backoff::new(100 * MS, 1000 * MS).next_delay(rng.f64()))
            .collect();
        assert!(delays.iter().all(|d| (50 * MS..=100 * MS).contains(d)));
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(distinct.len() > 40, "{distinct:?}");
    }

    #[test]
    fn limiter_passes_one_line_per_interval_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(Duration::from_secs(10));
        assert_eq!(l.admit("bad_json", t0), Some(0));
        assert_eq!(l.admit("bad_json", t0 + MS), None);
        assert_eq!(l.admit("bad_json", t0 + 2 * MS), None);
        assert_eq!(l.admit("other", t0 + 2 * MS), Some(0));
        assert_eq!(l.admit("bad_json", t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(l.admit("bad_json", t0 + Duration::from_secs(11)), None);
    }
}
