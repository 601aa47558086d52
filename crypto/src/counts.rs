//! What the crypto core counts, as plain numbers the switch adds to its own statistics.
//!
//! [`Reject`] is every reason a datagram or handshake message is dropped, and [`Event`] every
//! thing worth counting that is not a drop. Both double as indices into [`Counts`].

/// Why a received datagram, a handshake message or a run to seal was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reject {
    /// Shorter than its message type needs (or than 4 bytes).
    Truncated = 0,
    /// A cleartext GRE header where a sealed datagram was expected: the sender runs without
    /// `--encrypt`.
    Cleartext,
    /// Neither a message of ours nor a GRE header.
    UnknownType,
    /// A data packet for a receiver index that names no live session (a restarted peer, an
    /// expired session, or forged).
    UnknownSession,
    /// A data packet for a session past its time or message limit.
    Expired,
    /// A counter already received, or older than the replay window.
    Replayed,
    /// The AEAD tag did not verify: forged, corrupted, or under another key.
    AuthFailed,
    /// A run to seal for a peer with no session yet; a handshake was asked for.
    NoSession,
    /// A handshake message whose `mac1` does not verify: garbage, or not meant for this
    /// host's public key. Cheap to check, so checked first.
    BadMac,
    /// A handshake message over the handshake rate limit.
    RateLimited,
    /// A handshake message that passed `mac1` but failed in Noise (or had a bad payload).
    HandshakeFailed,
    /// A handshake initiation from a static key that is no configured peer. Not answered.
    UnknownKey,
    /// A handshake initiation no newer than the last one accepted from its peer (a replay).
    StaleInitiation,
    /// A handshake response for no initiation in flight.
    UnexpectedResponse,
}

impl Reject {
    /// Number of reasons.
    pub const COUNT: usize = Reject::UnexpectedResponse as usize + 1;
    /// Every reason, in counter order.
    pub const ALL: [Reject; Reject::COUNT] = [
        Reject::Truncated,
        Reject::Cleartext,
        Reject::UnknownType,
        Reject::UnknownSession,
        Reject::Expired,
        Reject::Replayed,
        Reject::AuthFailed,
        Reject::NoSession,
        Reject::BadMac,
        Reject::RateLimited,
        Reject::HandshakeFailed,
        Reject::UnknownKey,
        Reject::StaleInitiation,
        Reject::UnexpectedResponse,
    ];

    /// Stable snake_case name (for `dnetctl stats` and metrics).
    pub fn name(self) -> &'static str {
        match self {
            Reject::Truncated => "crypto_truncated",
            Reject::Cleartext => "cleartext",
            Reject::UnknownType => "crypto_unknown_type",
            Reject::UnknownSession => "unknown_session",
            Reject::Expired => "expired_session",
            Reject::Replayed => "replayed",
            Reject::AuthFailed => "auth_failed",
            Reject::NoSession => "no_session",
            Reject::BadMac => "handshake_bad_mac",
            Reject::RateLimited => "handshake_rate_limited",
            Reject::HandshakeFailed => "handshake_failed",
            Reject::UnknownKey => "unknown_key",
            Reject::StaleInitiation => "stale_initiation",
            Reject::UnexpectedResponse => "unexpected_response",
        }
    }
}

/// Things worth counting that are not drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Event {
    /// A handshake initiation sent (first try).
    InitiationSent = 0,
    /// A handshake initiation sent again after no response.
    InitiationRetransmit,
    /// A handshake given up after trying for the attempt time.
    HandshakeTimeout,
    /// A handshake response sent (this host answered an initiation).
    ResponseSent,
    /// A session established as initiator (a response was accepted).
    SessionInitiated,
    /// A session established as responder was confirmed by its first data packet.
    SessionConfirmed,
    /// A session dropped at the end of its life.
    SessionExpired,
    /// A keepalive (empty data packet) sent.
    KeepaliveSent,
    /// A keepalive received.
    KeepaliveReceived,
}

impl Event {
    /// Number of events.
    pub const COUNT: usize = Event::KeepaliveReceived as usize + 1;
    /// Every event, in counter order.
    pub const ALL: [Event; Event::COUNT] = [
        Event::InitiationSent,
        Event::InitiationRetransmit,
        Event::HandshakeTimeout,
        Event::ResponseSent,
        Event::SessionInitiated,
        Event::SessionConfirmed,
        Event::SessionExpired,
        Event::KeepaliveSent,
        Event::KeepaliveReceived,
    ];

    /// Stable snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Event::InitiationSent => "handshake_initiation_sent",
            Event::InitiationRetransmit => "handshake_initiation_retransmit",
            Event::HandshakeTimeout => "handshake_timeout",
            Event::ResponseSent => "handshake_response_sent",
            Event::SessionInitiated => "session_initiated",
            Event::SessionConfirmed => "session_confirmed",
            Event::SessionExpired => "session_expired",
            Event::KeepaliveSent => "keepalive_sent",
            Event::KeepaliveReceived => "keepalive_received",
        }
    }
}

/// Drop and event counts, plain numbers. The data path returns one per call (for the caller
/// to add to its own counters); the [`crate::Endpoint`] keeps a running one for handshakes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Indexed by [`Reject`].
    pub drops: [u64; Reject::COUNT],
    /// Indexed by [`Event`].
    pub events: [u64; Event::COUNT],
}

impl Counts {
    /// Counts one drop.
    #[inline]
    pub fn reject(&mut self, why: Reject) {
        self.drops[why as usize] += 1;
    }

    /// Counts one event.
    #[inline]
    pub fn event(&mut self, what: Event) {
        self.events[what as usize] += 1;
    }

    /// Drops counted for `why`.
    pub fn dropped(&self, why: Reject) -> u64 {
        self.drops[why as usize]
    }

    /// Times `what` happened.
    pub fn count(&self, what: Event) -> u64 {
        self.events[what as usize]
    }

    /// Adds every count of `other`.
    pub fn add(&mut self, other: &Counts) {
        for (a, b) in self.drops.iter_mut().zip(other.drops) {
            *a += b;
        }
        for (a, b) in self.events.iter_mut().zip(other.events) {
            *a += b;
        }
    }

    /// Every non-zero count with its name, drops first.
    pub fn nonzero(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        let d = Reject::ALL.iter().map(|r| (r.name(), self.dropped(*r)));
        let e = Event::ALL.iter().map(|e| (e.name(), self.count(*e)));
        d.chain(e).filter(|(_, n)| *n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_all_lists_every_variant_in_order() {
        let mut names: Vec<_> = Reject::ALL.iter().map(|r| r.name()).collect();
        names.extend(Event::ALL.iter().map(|e| e.name()));
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
        for (i, r) in Reject::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        for (i, e) in Event::ALL.iter().enumerate() {
            assert_eq!(*e as usize, i);
        }
    }

    #[test]
    fn add_sums_every_count() {
        let mut a = Counts::default();
        a.reject(Reject::Replayed);
        a.event(Event::KeepaliveSent);
        let mut b = Counts::default();
        b.reject(Reject::Replayed);
        b.reject(Reject::AuthFailed);
        a.add(&b);
        assert_eq!(a.dropped(Reject::Replayed), 2);
        assert_eq!(a.dropped(Reject::AuthFailed), 1);
        assert_eq!(a.count(Event::KeepaliveSent), 1);
        let v: Vec<_> = a.nonzero().collect();
        assert_eq!(
            v,
            vec![("replayed", 2), ("auth_failed", 1), ("keepalive_sent", 1)]
        );
    }
}
