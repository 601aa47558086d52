//! Token buckets, sans-io (time is passed in, in ms): the per-port flood limit
//! (`--flood-limit PPS`) and the limiter that keeps logs about dropped packets to a few lines
//! per interval however many packets are dropped.

use super::Millis;

/// A token bucket: `rate` tokens per second, holding at most `burst`. Integer arithmetic in
/// thousandths of a token, so any rate from 1/s up is exact and nothing allocates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    /// Tokens per second.
    rate: u64,
    /// Capacity, in thousandths of a token.
    cap_milli: u64,
    /// Tokens held, in thousandths.
    milli: u64,
    /// Time of the last refill.
    last: Millis,
}

impl TokenBucket {
    /// A full bucket refilled at `rate` per second holding at most `burst` (both at least 1).
    pub fn new(rate: u32, burst: u32) -> TokenBucket {
        let cap_milli = u64::from(burst.max(1)) * 1000;
        TokenBucket {
            rate: u64::from(rate.max(1)),
            cap_milli,
            milli: cap_milli,
            last: 0,
        }
    }

    /// Takes one token at `now` if there is one. Time going backwards refills nothing.
    #[inline]
    pub fn take(&mut self, now: Millis) -> bool {
        if now > self.last {
            // ms × tokens/s = thousandths of a token.
            let add = (now - self.last).saturating_mul(self.rate);
            self.milli = self.milli.saturating_add(add).min(self.cap_milli);
            self.last = now;
        }
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// Lets at most `lines` log lines through per `interval_ms` and counts the rest, so the next
/// line that passes can say how many were suppressed.
#[derive(Clone, Copy, Debug)]
pub struct LogLimiter {
    lines: u32,
    interval_ms: Millis,
    window_start: Millis,
    used: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// At most `lines` per `interval_ms`.
    pub const fn new(lines: u32, interval_ms: Millis) -> LogLimiter {
        LogLimiter {
            lines,
            interval_ms,
            window_start: 0,
            used: 0,
            suppressed: 0,
        }
    }

    /// `Some(k)` if a line may be logged at `now`, `k` being the number suppressed since the
    /// last one that passed; `None` (and one more suppressed) otherwise.
    #[inline]
    pub fn allow(&mut self, now: Millis) -> Option<u64> {
        if now >= self.window_start.saturating_add(self.interval_ms) {
            self.window_start = now;
            self.used = 0;
        }
        if self.used < self.lines {
            self.used += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }

    /// Text to append to a line that passed with `k` suppressed before it.
    pub fn suffix(k: u64) -> String {
        if k == 0 {
            String::new()
        } else {
            format!(" ({k} more suppressed)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let mut b = TokenBucket::new(10, 10);
        assert_eq!((0..20).filter(|_| b.take(0)).count(), 10, "burst");
        assert!(!b.take(50), "half a token after 50 ms");
        assert!(b.take(100), "one token after 100 ms at 10/s");
        assert!(!b.take(100));
        // One second refills everything but never more than the burst.
        assert_eq!((0..50).filter(|_| b.take(10_000)).count(), 10);
    }

    #[test]
    fn bucket_survives_time_going_backwards_and_huge_gaps() {
        let mut b = TokenBucket::new(u32::MAX, 1);
        assert!(b.take(u64::MAX));
        assert!(!b.take(5), "time went back: nothing refilled");
        assert!(!b.take(u64::MAX));
        let mut z = TokenBucket::new(0, 0);
        assert!(z.take(0), "rate and burst are at least 1");
        assert!(!z.take(999));
        assert!(z.take(1000));
    }

    #[test]
    fn bucket_long_run_rate_is_exact() {
        let mut b = TokenBucket::new(1000, 1);
        let passed = (0..10_000u64).filter(|ms| b.take(*ms)).count();
        // One per ms over 10 s (the first from the initial full bucket).
        assert_eq!(passed, 10_000);
        let mut b = TokenBucket::new(3, 1);
        let passed = (0..10_000u64).filter(|ms| b.take(*ms)).count();
        assert!((29..=31).contains(&passed), "{passed}");
    }

    #[test]
    fn log_limiter_counts_suppressed_lines() {
        let mut l = LogLimiter::new(2, 1000);
        assert_eq!(l.allow(0), Some(0));
        assert_eq!(l.allow(1), Some(0));
        for t in 2..100 {
            assert_eq!(l.allow(t), None);
        }
        assert_eq!(l.allow(1000), Some(98));
        assert_eq!(LogLimiter::suffix(98), " (98 more suppressed)");
        assert_eq!(LogLimiter::suffix(0), "");
        assert_eq!(l.allow(1001), Some(0));
        assert_eq!(l.allow(1002), None);
    }
}

#[cfg(test)]
mod flood_limit_tests {
    use crate::switch::{Action, Config, Counters, DropReason, PortKind, Switch};
    use crate::wire::ethernet::MacAddr;
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f
    }

    fn switch(limit: Option<u32>) -> (Switch, Arc<Counters>) {
        let c = Arc::new(Counters::default());
        let mut s = Switch::new(
            Config {
                flood_limit_pps: limit,
                ..Config::default()
            },
            c.clone(),
        );
        s.set_port(0, PortKind::Local);
        s.set_port(1, PortKind::Tunnel(Ipv4Addr::new(10, 200, 0, 2)));
        s.set_port(2, PortKind::Tunnel(Ipv4Addr::new(10, 200, 0, 3)));
        (s, c)
    }

    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

    #[test]
    fn floods_over_the_limit_are_dropped_and_counted_unicast_is_not() {
        let (mut s, c) = switch(Some(100));
        // B is learned behind tunnel 1.
        s.handle(0, 1, &frame(MacAddr::BROADCAST.0, B));
        let bcast = frame(MacAddr::BROADCAST.0, A);
        let floods = (0..1000)
            .filter(|_| s.handle(10, 0, &bcast).action == Action::Flood)
            .count();
        assert_eq!(floods, 100, "one second's burst from the TAP");
        assert_eq!(c.drops[DropReason::FloodLimit as usize].get(), 900);
        // Known unicast is never limited.
        for _ in 0..1000 {
            assert_eq!(s.handle(10, 0, &frame(B, A)).action, Action::Forward(1));
        }
        // The budget is per port: tunnel 2 still floods (to the TAP).
        let from_t2 = frame(MacAddr::BROADCAST.0, [2, 0, 0, 0, 0, 0xc]);
        assert_eq!(s.handle(10, 2, &from_t2).action, Action::Flood);
        // And refills with time: 100/s → 10 more after 100 ms.
        let later = (0..50)
            .filter(|_| s.handle(110, 0, &bcast).action == Action::Flood)
            .count();
        assert_eq!(later, 10);
    }

    #[test]
    fn unlimited_by_default() {
        let (mut s, c) = switch(None);
        let bcast = frame(MacAddr::BROADCAST.0, A);
        assert!((0..10_000).all(|_| s.handle(0, 0, &bcast).action == Action::Flood));
        assert_eq!(c.drops[DropReason::FloodLimit as usize].get(), 0);
    }
}
