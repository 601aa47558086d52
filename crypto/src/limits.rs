//! Session lifetimes and handshake timing. The defaults are WireGuard's (its whitepaper, §6),
//! except the first handshake retransmission, which comes after 1 s and backs off to 5 s:
//! a lost first message then costs a second, not five, of a new peer's traffic.

use crate::Millis;

/// Limits and timers; [`Limits::default`] is what dnet uses. Tests shrink them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The initiator of a session starts a new handshake when it sends on a session this old.
    pub rekey_after_time: Millis,
    /// A session this old is used no more, in either direction.
    pub reject_after_time: Millis,
    /// A new handshake is started when a session has sealed this many datagrams.
    pub rekey_after_messages: u64,
    /// A session seals no more than this many datagrams (so a nonce never repeats), and no
    /// counter at or above it is accepted.
    pub reject_after_messages: u64,
    /// Wait before the first retransmission of an unanswered initiation; it doubles on
    /// each further one, up to `rekey_timeout`.
    pub first_retransmit: Millis,
    /// The longest wait between retransmissions, and the least time between two handshakes
    /// started for traffic.
    pub rekey_timeout: Millis,
    /// A handshake is given up after trying for this long (it starts again on traffic).
    pub rekey_attempt_time: Millis,
    /// A keepalive is sent when data arrived this long ago and nothing was sent since, so a
    /// one-way stream still tells its sender the session works.
    pub keepalive_timeout: Millis,
    /// Handshake messages processed per second beyond the burst (Diffie-Hellman work is
    /// bounded by this; more are dropped and counted).
    pub handshakes_per_sec: u32,
    /// Handshake messages processed at once after a quiet spell.
    pub handshake_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            rekey_after_time: 120_000,
            reject_after_time: 180_000,
            rekey_after_messages: 1 << 60,
            // 2^64 - 2^13 - 1: room above the limit for counters reserved at once by several
            // workers before the limit check sees them.
            reject_after_messages: u64::MAX - (1 << 13),
            first_retransmit: 1_000,
            rekey_timeout: 5_000,
            rekey_attempt_time: 90_000,
            keepalive_timeout: 10_000,
            handshakes_per_sec: 200,
            handshake_burst: 64,
        }
    }
}

impl Limits {
    /// How old a session may get, as its initiator receives on it, before a new handshake is
    /// started: late enough not to race the sender's own rekey, early enough to finish
    /// before the session is rejected.
    pub(crate) fn rekey_on_receive(&self) -> Millis {
        self.reject_after_time
            .saturating_sub(self.keepalive_timeout)
            .saturating_sub(self.rekey_timeout)
    }
}
