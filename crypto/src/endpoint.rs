//! The handshake side: one [`Endpoint`] per switch, holding the host's static key, the
//! configured peers, each peer's handshake state machine, and the [`Sessions`] the data
//! path uses. Sans-io in quinn-proto's shape: time comes in as `now`, handshake messages
//! come in through [`Endpoint::handle_handshake`], what to send comes out of
//! [`Endpoint::poll_transmit`], and [`Endpoint::poll_timeout`] says when to call
//! [`Endpoint::handle_timeout`].
//!
//! Per peer:
//!
//! ```text
//!            traffic, no session / session old or worn (rekey)
//!   Idle ───────────────────────────────────────────────────────▶ Initiating
//!    ▲  ◀── response accepted: session installed, keepalive sent ──   │  │
//!    │                                                               │  │ no response:
//!    └──────────── no response for rekey_attempt_time ◀──────────────┘  │ resend after
//!                  (starts again on traffic)                            ◀┘ 1, 2, 4, 5, 5.. s
//!
//!   any state: a valid initiation from the peer ─▶ answered; the new session is sent on
//!              once the peer's first datagram on it confirms it
//! ```
//!
//! Besides: a passive keepalive when data arrived but nothing went back for
//! `keepalive_timeout`, and a new handshake when data was sent but nothing came back for
//! `keepalive_timeout + rekey_timeout` (the peer restarted and lost its keys, say).

use crate::aead::{Cipher, CipherPreference};
use crate::counts::{Counts, Event, Reject};
use crate::handshake::{self, InitiationFields};
use crate::keys::{PrivateKey, PublicKey};
use crate::limits::Limits;
use crate::ratelimit::TokenBucket;
use crate::session::{unstamp, Activity, NewSession, Session, SessionInfo, Sessions};
use crate::wire::{self, Kind, INITIATION_LEN, MAX_MESSAGE_LEN, RESPONSE_LEN};
use crate::{Millis, PeerId};
use ring::rand::{SecureRandom, SystemRandom};
use snow::params::NoiseParams;
use snow::HandshakeState;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// How often the endpoint looks at every peer's activity (keepalives, unanswered data,
/// session expiry) when nothing else is due.
pub const TICK: Millis = 1_000;

/// Settings of an endpoint.
#[derive(Clone, Debug)]
pub struct Config {
    /// This host's static key.
    pub private_key: PrivateKey,
    /// Peer ids are below this (dnet: `MAX_PORTS`, and a peer's id is its tunnel's port id).
    pub capacity: usize,
    /// Which data cipher to ask for.
    pub cipher: CipherPreference,
    /// Wall-clock time (Unix milliseconds) at `now` = 0. Initiations carry a timestamp that
    /// must grow from one to the next of a sender, even across its restarts, so a replayed
    /// initiation is refused; a monotonic `now` alone cannot give that.
    pub wall_clock_at_zero: u64,
    /// Lifetimes and timers.
    pub limits: Limits,
}

/// A configured peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// Its static public key (`--peer IP=PUBKEY`, or its etcd record).
    pub public_key: PublicKey,
    /// A pre-shared key both hosts configured for each other, if any (else 32 zero bytes,
    /// as WireGuard).
    pub psk: Option<[u8; 32]>,
}

/// Why a peer could not be configured.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeerError {
    /// The id is not below [`Config::capacity`].
    #[error("peer id {id} is out of range: the endpoint holds peers 0..{capacity}")]
    OutOfRange {
        /// The id.
        id: PeerId,
        /// The endpoint's capacity.
        capacity: usize,
    },
    /// The key is this host's own.
    #[error(
        "peer {id}: public key {key} is this host's own key; give the peer's public key \
         (`dnetctl pubkey` on that host)"
    )]
    OwnKey {
        /// The id.
        id: PeerId,
        /// The key.
        key: PublicKey,
    },
    /// Another peer has that key.
    #[error(
        "peer {id}: public key {key} is already the key of peer {other}; each host needs its \
         own key pair (`dnetctl keygen`)"
    )]
    Duplicate {
        /// The id.
        id: PeerId,
        /// The key.
        key: PublicKey,
        /// The peer that has it.
        other: PeerId,
    },
}

/// A message the endpoint made, to send now as one UDP datagram to the peer's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// To whom.
    pub peer: PeerId,
    /// Bytes at the start of the buffer given to [`Endpoint::poll_transmit`].
    pub len: usize,
}

/// A peer's state, for display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// Its public key.
    pub public_key: PublicKey,
    /// The session sent on, if any.
    pub session: Option<SessionInfo>,
    /// An initiation is waiting for its response.
    pub handshaking: bool,
    /// When the last handshake this host initiated started.
    pub last_initiation: Option<Millis>,
}

/// An initiation waiting for its response.
struct Pending {
    /// `None` once a bad response spoiled it (a fresh one is sent at `retransmit_at`).
    hs: Option<HandshakeState>,
    index: u32,
    offer: u8,
    /// When this round of attempts began.
    started: Millis,
    attempts: u32,
    retransmit_at: Millis,
}

struct Peer {
    config: PeerConfig,
    psk: [u8; 32],
    activity: Arc<Activity>,
    pending: Option<Pending>,
    /// When the last round of initiations began (spaces rounds `rekey_timeout` apart).
    last_started: Option<Millis>,
    /// The newest initiation timestamp accepted from the peer.
    last_timestamp: Option<u64>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.psk.fill(0);
    }
}

/// A queued message.
enum Out {
    Message {
        peer: PeerId,
        len: usize,
        bytes: [u8; MAX_MESSAGE_LEN],
    },
    Keepalive {
        peer: PeerId,
    },
}

/// The handshake side of a switch's encryption. See the module doc.
pub struct Endpoint {
    private: PrivateKey,
    public: PublicKey,
    /// Key of `mac1` for messages to this host.
    mac1_key: [u8; 32],
    cipher: CipherPreference,
    wall_clock_at_zero: u64,
    limits: Limits,
    params: NoiseParams,
    peers: Vec<Option<Peer>>,
    by_key: HashMap<PublicKey, PeerId>,
    /// Index of each initiation in flight, to find it from its response.
    pending: HashMap<u32, PeerId>,
    sessions: Arc<Sessions>,
    outbox: VecDeque<Out>,
    bucket: TokenBucket,
    counts: Counts,
    rng: SystemRandom,
    last_timestamp: u64,
    next_tick: Millis,
    /// The earliest of `next_tick` and every retransmission time (never later than either).
    deadline: Millis,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("public", &self.public)
            .field("peers", &self.by_key.len())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// An endpoint with no peers.
    pub fn new(cfg: Config) -> Endpoint {
        let public = cfg.private_key.public_key();
        let l = cfg.limits;
        Endpoint {
            mac1_key: handshake::mac1_key(&public),
            private: cfg.private_key,
            public,
            cipher: cfg.cipher,
            wall_clock_at_zero: cfg.wall_clock_at_zero,
            limits: l,
            params: handshake::params(),
            peers: (0..cfg.capacity).map(|_| None).collect(),
            by_key: HashMap::new(),
            pending: HashMap::new(),
            sessions: Arc::new(Sessions::new(l, cfg.capacity)),
            outbox: VecDeque::new(),
            bucket: TokenBucket::new(l.handshakes_per_sec, l.handshake_burst),
            counts: Counts::default(),
            rng: SystemRandom::new(),
            last_timestamp: 0,
            next_tick: 0,
            deadline: 0,
        }
    }

    /// This host's public key.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// The sessions, for the data path (shared by every worker).
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    /// Handshake drops and events so far.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Adds, changes (`Some`) or removes (`None`) peer `id`. Setting the same key and
    /// pre-shared key again keeps its sessions; anything else drops them.
    pub fn set_peer(&mut self, id: PeerId, cfg: Option<PeerConfig>) -> Result<(), PeerError> {
        let i = usize::from(id);
        if i >= self.peers.len() {
            return Err(PeerError::OutOfRange {
                id,
                capacity: self.peers.len(),
            });
        }
        if let Some(c) = &cfg {
            if self.peers[i].as_ref().is_some_and(|p| p.config == *c) {
                return Ok(());
            }
            if c.public_key == self.public {
                return Err(PeerError::OwnKey {
                    id,
                    key: c.public_key,
                });
            }
            if let Some(&other) = self.by_key.get(&c.public_key) {
                if other != id {
                    return Err(PeerError::Duplicate {
                        id,
                        key: c.public_key,
                        other,
                    });
                }
            }
        }
        if let Some(old) = self.peers[i].take() {
            self.by_key.remove(&old.config.public_key);
            if let Some(p) = &old.pending {
                self.pending.remove(&p.index);
            }
        }
        let Some(c) = cfg else {
            self.sessions.set_peer(id, None);
            return Ok(());
        };
        let activity = Arc::new(Activity::default());
        self.sessions.set_peer(id, Some(activity.clone()));
        self.by_key.insert(c.public_key, id);
        self.peers[i] = Some(Peer {
            config: c,
            psk: c.psk.unwrap_or([0; 32]),
            activity,
            pending: None,
            last_started: None,
            last_timestamp: None,
        });
        Ok(())
    }

    /// Starts a handshake with `id` now unless one is in flight (e.g. when a peer is
    /// configured, so its first frames need not wait for one).
    pub fn connect(&mut self, now: Millis, id: PeerId) {
        if self
            .peers
            .get(usize::from(id))
            .is_some_and(|p| p.as_ref().is_some_and(|p| p.pending.is_none()))
        {
            self.initiate(now, id, false);
        }
    }

    /// A peer's state, for display.
    pub fn peer_status(&self, now: Millis, id: PeerId) -> Option<PeerStatus> {
        let p = self.peers.get(usize::from(id))?.as_ref()?;
        Some(PeerStatus {
            public_key: p.config.public_key,
            session: self.sessions.info(now, id),
            handshaking: p.pending.is_some(),
            last_initiation: p.last_started,
        })
    }

    /// A handshake message received (from [`crate::Received::Handshake`]). The answer, if
    /// any, comes out of [`Endpoint::poll_transmit`]. `Ok(peer)`: it was accepted as a
    /// message of `peer`. A refusal is counted.
    pub fn handle_handshake(&mut self, now: Millis, msg: &[u8]) -> Result<PeerId, Reject> {
        let r = match wire::classify(msg) {
            Kind::Initiation => self.initiation(now, msg),
            Kind::Response => self.response(now, msg),
            Kind::Truncated => Err(Reject::Truncated),
            Kind::Cleartext => Err(Reject::Cleartext),
            Kind::Data | Kind::Unknown => Err(Reject::UnknownType),
        };
        if let Err(why) = r {
            self.counts.reject(why);
        }
        r
    }

    fn initiation(&mut self, now: Millis, msg: &[u8]) -> Result<PeerId, Reject> {
        if msg.len() != INITIATION_LEN {
            return Err(Reject::Truncated);
        }
        // Cheap checks before any Diffie-Hellman work.
        if !handshake::verify_mac1(&self.mac1_key, msg) {
            return Err(Reject::BadMac);
        }
        if !self.bucket.take(now) {
            return Err(Reject::RateLimited);
        }
        let mut r = handshake::read_initiation(&self.params, &self.private, msg)
            .ok_or(Reject::HandshakeFailed)?;
        let id = *self.by_key.get(&r.remote).ok_or(Reject::UnknownKey)?;
        let cipher = self.choose(r.fields.offer).ok_or(Reject::HandshakeFailed)?;
        let local_index = self.new_index().ok_or(Reject::HandshakeFailed)?;
        let Some(peer) = self.peers[usize::from(id)].as_mut() else {
            return Err(Reject::UnknownKey);
        };
        if peer.last_timestamp.is_some_and(|t| r.fields.timestamp <= t) {
            return Err(Reject::StaleInitiation);
        }
        let mut bytes = [0u8; MAX_MESSAGE_LEN];
        let out: &mut [u8; RESPONSE_LEN] = (&mut bytes[..RESPONSE_LEN])
            .try_into()
            .expect("RESPONSE_LEN bytes");
        let keys = handshake::write_response(
            &mut r.hs,
            &peer.psk,
            &peer.config.public_key,
            r.fields.sender_index,
            local_index,
            cipher,
            out,
        )
        .map_err(|_| Reject::HandshakeFailed)?;
        peer.last_timestamp = Some(r.fields.timestamp);
        let s = Session::new(
            &NewSession {
                peer: id,
                local_index,
                remote_index: r.fields.sender_index,
                initiator: false,
                preferred: peer.config.public_key > self.public,
                now,
                cipher,
                send: &keys.send,
                recv: &keys.recv,
            },
            peer.activity.clone(),
        );
        self.sessions.install(s);
        self.queue(Out::Message {
            peer: id,
            len: RESPONSE_LEN,
            bytes,
        });
        self.counts.event(Event::ResponseSent);
        Ok(id)
    }

    fn response(&mut self, now: Millis, msg: &[u8]) -> Result<PeerId, Reject> {
        if msg.len() != RESPONSE_LEN {
            return Err(Reject::Truncated);
        }
        if !handshake::verify_mac1(&self.mac1_key, msg) {
            return Err(Reject::BadMac);
        }
        let index = wire::receiver_index(msg).ok_or(Reject::Truncated)?;
        let id = *self.pending.get(&index).ok_or(Reject::UnexpectedResponse)?;
        if !self.bucket.take(now) {
            return Err(Reject::RateLimited);
        }
        let Some(peer) = self.peers[usize::from(id)].as_mut() else {
            return Err(Reject::UnexpectedResponse);
        };
        let Some(p) = peer.pending.as_mut().filter(|p| p.index == index) else {
            return Err(Reject::UnexpectedResponse);
        };
        let Some(mut hs) = p.hs.take() else {
            return Err(Reject::UnexpectedResponse);
        };
        let Some(rr) = handshake::read_response(&mut hs, p.offer, msg) else {
            // A failed read spoils the Noise state: this attempt is over, and the
            // retransmission timer sends a fresh one.
            self.pending.remove(&index);
            return Err(Reject::HandshakeFailed);
        };
        self.pending.remove(&index);
        peer.pending = None;
        // This session answers whatever the data path asked for meanwhile.
        peer.activity
            .wants_handshake
            .store(false, Ordering::Release);
        let s = Session::new(
            &NewSession {
                peer: id,
                local_index: index,
                remote_index: rr.sender_index,
                initiator: true,
                preferred: self.public > peer.config.public_key,
                now,
                cipher: rr.cipher,
                send: &rr.keys.send,
                recv: &rr.keys.recv,
            },
            peer.activity.clone(),
        );
        self.sessions.install(s);
        self.counts.event(Event::SessionInitiated);
        // Confirms the session to the responder at once, so it can send on it.
        self.queue(Out::Keepalive { peer: id });
        Ok(id)
    }

    /// The data cipher for an initiator's offer.
    fn choose(&self, offer: u8) -> Option<Cipher> {
        let aes = Cipher::Aes256Gcm.bit();
        let chacha = Cipher::ChaCha20Poly1305.bit();
        if offer & aes != 0 && (self.cipher.wants_aes() || offer & chacha == 0) {
            Some(Cipher::Aes256Gcm)
        } else if offer & chacha != 0 {
            Some(Cipher::ChaCha20Poly1305)
        } else {
            None
        }
    }

    fn offer(&self) -> u8 {
        match self.cipher {
            CipherPreference::Aes256Gcm => Cipher::Aes256Gcm.bit(),
            c if c.wants_aes() => Cipher::Aes256Gcm.bit() | Cipher::ChaCha20Poly1305.bit(),
            _ => Cipher::ChaCha20Poly1305.bit(),
        }
    }

    fn random_u32(&self) -> Option<u32> {
        let mut b = [0u8; 4];
        self.rng.fill(&mut b).ok()?;
        Some(u32::from_le_bytes(b))
    }

    /// A receiver index no session or initiation uses.
    fn new_index(&self) -> Option<u32> {
        loop {
            let i = self.random_u32()?;
            if !self.pending.contains_key(&i) && !self.sessions.has_index(i) {
                return Some(i);
            }
        }
    }

    fn timestamp(&mut self, now: Millis) -> u64 {
        let t = self
            .wall_clock_at_zero
            .saturating_add(now)
            .max(self.last_timestamp.saturating_add(1));
        self.last_timestamp = t;
        t
    }

    fn queue(&mut self, o: Out) {
        // Two messages per peer at most are ever useful; beyond that, drop the oldest.
        if self.outbox.len() >= 2 * self.peers.len() + 16 {
            self.outbox.pop_front();
        }
        self.outbox.push_back(o);
    }

    /// Sends an initiation to `id`: the first of a round, or a retransmission.
    fn initiate(&mut self, now: Millis, id: PeerId, retransmit: bool) {
        let (Some(index), Some(jitter)) = (self.new_index(), self.random_u32()) else {
            return;
        };
        let timestamp = self.timestamp(now);
        let offer = self.offer();
        let l = self.limits;
        let Some(peer) = self.peers.get_mut(usize::from(id)).and_then(Option::as_mut) else {
            return;
        };
        let mut bytes = [0u8; MAX_MESSAGE_LEN];
        let out: &mut [u8; INITIATION_LEN] = (&mut bytes[..INITIATION_LEN])
            .try_into()
            .expect("INITIATION_LEN bytes");
        let fields = InitiationFields {
            timestamp,
            sender_index: index,
            offer,
        };
        let Ok(hs) = handshake::write_initiation(
            &self.params,
            &self.private,
            &peer.config.public_key,
            &peer.psk,
            &fields,
            out,
        ) else {
            return;
        };
        let (started, attempts) = match (&peer.pending, retransmit) {
            (Some(p), true) => (p.started, p.attempts + 1),
            _ => (now, 0),
        };
        if let Some(old) = peer.pending.take() {
            self.pending.remove(&old.index);
        }
        let backoff = l
            .first_retransmit
            .saturating_mul(1 << attempts.min(16))
            .min(l.rekey_timeout);
        // Up to a third of the first wait, so peers that lost the same packet do not all
        // retry in step.
        let jitter = Millis::from(jitter) % (l.first_retransmit / 3 + 1);
        let retransmit_at = now + backoff + jitter;
        self.deadline = self.deadline.min(retransmit_at);
        peer.pending = Some(Pending {
            hs: Some(hs),
            index,
            offer,
            started,
            attempts,
            retransmit_at,
        });
        if !retransmit {
            peer.last_started = Some(now);
        }
        self.pending.insert(index, id);
        self.queue(Out::Message {
            peer: id,
            len: INITIATION_LEN,
            bytes,
        });
        self.counts.event(if retransmit {
            Event::InitiationRetransmit
        } else {
            Event::InitiationSent
        });
    }

    /// Timers and requests from the data path: retransmissions, handshakes asked for,
    /// keepalives, expired sessions. Cheap when nothing is due; call it when
    /// [`Endpoint::poll_timeout`] passes or [`Sessions::wants_attention`] is set. `now` may
    /// lag a little behind an earlier call's (several workers call it).
    pub fn handle_timeout(&mut self, now: Millis) {
        let attention = self.sessions.take_attention();
        if !attention && now < self.deadline {
            return;
        }
        let tick = now >= self.next_tick;
        let expired = self.sessions.expire(now);
        self.counts.events[Event::SessionExpired as usize] += expired;
        let l = self.limits;
        for i in 0..self.peers.len() {
            let Some(peer) = self.peers[i].as_mut() else {
                continue;
            };
            let id = i as PeerId;
            let a = peer.activity.clone();
            // An unanswered initiation: send it again, or give up.
            if let Some(p) = peer.pending.as_ref().filter(|p| now >= p.retransmit_at) {
                if now.saturating_sub(p.started) >= l.rekey_attempt_time {
                    self.pending.remove(&p.index);
                    peer.pending = None;
                    a.wants_handshake.store(false, Ordering::Release);
                    self.counts.event(Event::HandshakeTimeout);
                } else {
                    self.initiate(now, id, true);
                }
                continue;
            }
            if !tick && !attention {
                continue;
            }
            // Data sent and nothing back for long: the peer may have lost its keys.
            let waiting = unstamp(a.waiting_since.load(Ordering::Relaxed));
            if waiting
                .is_some_and(|t| now.saturating_sub(t) >= l.keepalive_timeout + l.rekey_timeout)
            {
                a.waiting_since.store(0, Ordering::Relaxed);
                a.wants_handshake.store(true, Ordering::Release);
            }
            if a.wants_handshake.load(Ordering::Acquire) {
                if peer.pending.is_some() {
                    a.wants_handshake.store(false, Ordering::Release);
                } else if peer
                    .last_started
                    .is_none_or(|t| now.saturating_sub(t) >= l.rekey_timeout)
                {
                    a.wants_handshake.store(false, Ordering::Release);
                    self.initiate(now, id, false);
                }
                // Else too soon after the last round: the flag stays for a later tick.
            }
            // Passive keepalive: data came in and nothing went out for long, so the sender
            // would take the silence for a lost session.
            let owed = unstamp(a.owed_since.load(Ordering::Relaxed));
            if owed.is_some_and(|t| now.saturating_sub(t) >= l.keepalive_timeout)
                && self.sessions.can_send(id)
            {
                a.owed_since.store(0, Ordering::Relaxed);
                self.queue(Out::Keepalive { peer: id });
            }
        }
        if tick {
            self.next_tick = now + TICK;
        }
        self.deadline = self
            .peers
            .iter()
            .flatten()
            .filter_map(|p| p.pending.as_ref().map(|p| p.retransmit_at))
            .fold(self.next_tick, Millis::min);
    }

    /// When [`Endpoint::handle_timeout`] is next due (`None`: no peer). Besides, it is due
    /// whenever [`Sessions::wants_attention`] is set.
    pub fn poll_timeout(&self) -> Option<Millis> {
        (!self.by_key.is_empty()).then_some(self.deadline)
    }

    /// The next message to send, copied to the start of `buf` (at least
    /// [`wire::MAX_MESSAGE_LEN`] bytes), as one UDP datagram to the peer's address and the
    /// GRE-in-UDP port. Keepalives are sealed now, on the session current at `now`.
    pub fn poll_transmit(&mut self, now: Millis, buf: &mut [u8]) -> Option<Transmit> {
        while let Some(o) = self.outbox.pop_front() {
            match o {
                Out::Message { peer, len, bytes } => {
                    let configured = self
                        .peers
                        .get(usize::from(peer))
                        .is_some_and(Option::is_some);
                    if let (true, Some(b)) = (configured, buf.get_mut(..len)) {
                        b.copy_from_slice(&bytes[..len]);
                        return Some(Transmit { peer, len });
                    }
                }
                Out::Keepalive { peer } => {
                    if let Some(len) = self.sessions.seal_keepalive(now, peer, buf) {
                        self.counts.event(Event::KeepaliveSent);
                        return Some(Transmit { peer, len });
                    }
                }
            }
        }
        None
    }
}
