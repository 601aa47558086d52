//! A token bucket over the injected clock: bounds how many handshake messages per second
//! get the expensive part (Diffie-Hellman operations) of their processing.

/// Up to `burst` at once, refilled at `per_sec` a second.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    /// Tokens, in thousandths, so refills of less than one token a millisecond add up.
    milli: u64,
    cap_milli: u64,
    per_sec: u64,
    last: u64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(per_sec: u32, burst: u32) -> TokenBucket {
        let cap_milli = u64::from(burst.max(1)) * 1000;
        TokenBucket {
            milli: cap_milli,
            cap_milli,
            per_sec: u64::from(per_sec),
            last: 0,
        }
    }

    /// Takes a token at `now` (milliseconds); false if none is left. A clock that goes back
    /// (two callers' `now`s a little apart) adds nothing.
    pub fn take(&mut self, now: u64) -> bool {
        if now > self.last {
            // per_sec tokens a second is per_sec thousandths a millisecond.
            let add = (now - self.last).saturating_mul(self.per_sec);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let mut b = TokenBucket::new(100, 5);
        let t0 = 1_000;
        assert_eq!((0..10).filter(|_| b.take(t0)).count(), 5);
        // 100 a second: one every 10 ms.
        assert!(!b.take(t0 + 9));
        assert!(b.take(t0 + 10));
        assert!(!b.take(t0 + 10));
        // A second later: at most the burst.
        assert_eq!((0..10).filter(|_| b.take(t0 + 2_000)).count(), 5);
        // Time going back adds nothing.
        assert!(!b.take(t0));
    }

    #[test]
    fn slow_rates_accumulate() {
        let mut b = TokenBucket::new(1, 1);
        assert!(b.take(0));
        assert!(!b.take(999));
        assert!(b.take(1_000));
    }
}
