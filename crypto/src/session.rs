//! Sessions and the data path: sealing runs of datagrams for a peer and opening received
//! ones, in place, with no allocation and no lock on the handshake state.
//!
//! [`Sessions`] is shared (`Arc`) by every worker of a switch: its methods take `&self`.
//!
//! Each peer has up to [`SESSIONS_PER_PEER`] sessions, all of which receive. One made as
//! initiator can send at once (its maker has seen the response); one made as responder
//! only once a datagram arrived on it, proving the initiator has the keys (it is then
//! *confirmed*). A host sends on its newest confirmed session. Older sessions are not
//! dropped when a new one arrives, only when they reach `reject_after_time` (or, past the
//! cap, the oldest goes first): so datagrams sealed on the previous session and still in
//! flight during a rotation are accepted, and so are both sessions of two handshakes that
//! crossed (both hosts rekeying at once), which WireGuard's three fixed slots would lose
//! traffic on.
//!
//! A table from receiver index to session finds the key for a received datagram: the
//! sender is whoever holds that key, whatever the outer address says.
//!
//! What the [`crate::Endpoint`] must learn from the data path (a peer needs a handshake,
//! data waits for an answer, an answer is owed) goes through atomics here;
//! [`Sessions::wants_attention`] says when it should run.

use crate::aead::{Cipher, Key};
use crate::counts::{Counts, Event, Reject};
use crate::limits::Limits;
use crate::replay::ReplayWindow;
use crate::wire::{self, Kind, HEADER_LEN, OVERHEAD, TAG_LEN};
use crate::{Millis, PeerId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Datagrams of one session opened together: a coalesced receive holds at most 64 (the
/// kernel's `UDP_GRO` limit), and so does a UDP GSO send.
pub const MAX_RUN: usize = 64;

/// A time as stored in an atomic: milliseconds + 1, 0 for never.
#[inline]
fn stamp(now: Millis) -> u64 {
    now.saturating_add(1)
}

/// The time a [`stamp`] holds, if any.
#[inline]
pub(crate) fn unstamp(v: u64) -> Option<Millis> {
    v.checked_sub(1)
}

/// What the data path records about one peer, for the endpoint's timers. Outlives sessions.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// Last datagram accepted (data or keepalive).
    pub last_received: AtomicU64,
    /// When data was first sealed since anything was last received (we wait for an
    /// answer); 0 when answered.
    pub waiting_since: AtomicU64,
    /// When data was first received since anything was last sealed (we owe an answer); 0
    /// when answered.
    pub owed_since: AtomicU64,
    /// The data path wants a (new) session.
    pub wants_handshake: AtomicBool,
}

/// One session: a key each way, the send counter and the replay window.
pub(crate) struct Session {
    pub peer: PeerId,
    /// Index the peer puts in datagrams to us.
    pub local_index: u32,
    /// Index we put in datagrams to the peer.
    pub remote_index: u32,
    pub initiator: bool,
    pub created: Millis,
    /// Install order among all sessions: the newest confirmed one is sent on.
    order: u64,
    /// Initiated by the host with the larger public key (see `Slot::sending`).
    preferred: bool,
    pub cipher: Cipher,
    send: Key,
    recv: Key,
    next_counter: AtomicU64,
    replay: Mutex<ReplayWindow>,
    /// Initiator sessions start confirmed; responder ones when a datagram arrives on them.
    pub confirmed: AtomicBool,
    pub activity: Arc<Activity>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("peer", &self.peer)
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("initiator", &self.initiator)
            .field("created", &self.created)
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

/// How a new session is made.
pub(crate) struct NewSession<'k> {
    pub peer: PeerId,
    pub local_index: u32,
    pub remote_index: u32,
    pub initiator: bool,
    /// Initiated by the host with the larger public key.
    pub preferred: bool,
    pub now: Millis,
    pub cipher: Cipher,
    pub send: &'k [u8; 32],
    pub recv: &'k [u8; 32],
}

impl Session {
    pub(crate) fn new(n: &NewSession<'_>, activity: Arc<Activity>) -> Session {
        Session {
            peer: n.peer,
            local_index: n.local_index,
            remote_index: n.remote_index,
            initiator: n.initiator,
            created: n.now,
            order: 0,
            preferred: n.preferred,
            cipher: n.cipher,
            send: Key::new(n.cipher, n.send),
            recv: Key::new(n.cipher, n.recv),
            next_counter: AtomicU64::new(0),
            replay: Mutex::new(ReplayWindow::default()),
            confirmed: AtomicBool::new(n.initiator),
            activity,
        }
    }

    /// Reserves `n` consecutive counters below `limit`; the first, or `None` if the session
    /// has not that many left.
    #[inline]
    fn reserve(&self, n: u64, limit: u64) -> Option<u64> {
        let mut cur = self.next_counter.load(Ordering::Relaxed);
        loop {
            let end = cur.checked_add(n)?;
            if end > limit {
                return None;
            }
            match self.next_counter.compare_exchange_weak(
                cur,
                end,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(cur),
                Err(v) => cur = v,
            }
        }
    }

    /// Datagrams sealed so far.
    pub(crate) fn sent(&self) -> u64 {
        self.next_counter.load(Ordering::Relaxed)
    }

    fn replay(&self) -> std::sync::MutexGuard<'_, ReplayWindow> {
        self.replay.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One datagram's outcome from [`Sessions::open_run`], in the order received.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<'a> {
    /// An authenticated, fresh datagram from `peer`: its plaintext, the GRE packet, decrypted
    /// in place inside the receive buffer.
    Data {
        /// Whose key opened it.
        peer: PeerId,
        /// The GRE header and frame.
        packet: &'a mut [u8],
    },
    /// A keepalive (empty data packet) from `peer`: nothing to deliver.
    Keepalive {
        /// Whose key opened it.
        peer: PeerId,
    },
    /// A handshake message: hand it to [`crate::Endpoint::handle_handshake`].
    Handshake(&'a [u8]),
    /// Dropped (and counted in the returned [`Counts`]).
    Rejected(Reject),
}

/// Sessions kept per peer. A rotation makes one (two if both hosts start one at once) and
/// they live at most `reject_after_time` (180 s), while rounds of handshakes are at least
/// `rekey_timeout` (5 s) apart, normally `rekey_after_time` (120 s).
pub const SESSIONS_PER_PEER: usize = 8;

#[derive(Default)]
struct Slot {
    sessions: [Option<Arc<Session>>; SESSIONS_PER_PEER],
    /// Present while the peer is configured.
    activity: Option<Arc<Activity>>,
}

impl Slot {
    /// The session to send on: the newest confirmed one; but of two made in one round
    /// (their handshakes crossed: both hosts started one at once), the one the host with
    /// the larger public key initiated. Both hosts pick the same one then, and only that
    /// host rekeys it on time, so crossings do not repeat at every rotation.
    fn sending(&self, round: Millis) -> Option<&Arc<Session>> {
        let confirmed = || {
            self.sessions
                .iter()
                .flatten()
                .filter(|s| s.confirmed.load(Ordering::Acquire))
        };
        let newest = confirmed().max_by_key(|s| s.order)?;
        if newest.preferred {
            return Some(newest);
        }
        confirmed()
            .filter(|s| s.preferred && newest.created.saturating_sub(s.created) < round)
            .max_by_key(|s| s.order)
            .or(Some(newest))
    }

    /// Adds `s`; returns the sessions that went: a responder's unconfirmed sessions when
    /// `s` is a responder's too (the peer sent a new initiation, so it dropped the state
    /// that could have confirmed them), and the oldest session if there was no room.
    fn insert(&mut self, s: Arc<Session>, gone: &mut impl FnMut(Arc<Session>)) {
        if !s.initiator {
            for x in &mut self.sessions {
                if x.as_ref()
                    .is_some_and(|x| !x.initiator && !x.confirmed.load(Ordering::Acquire))
                {
                    if let Some(x) = x.take() {
                        gone(x);
                    }
                }
            }
        }
        if let Some(free) = self.sessions.iter_mut().find(|x| x.is_none()) {
            *free = Some(s);
            return;
        }
        let oldest = self
            .sessions
            .iter()
            .enumerate()
            .filter_map(|(i, x)| x.as_ref().map(|x| (i, x.order)))
            .min_by_key(|&(_, o)| o)
            .map_or(0, |(i, _)| i);
        if let Some(x) = self.sessions[oldest].replace(s) {
            gone(x);
        }
    }
}

struct Table {
    peers: Vec<Slot>,
    by_index: HashMap<u32, Arc<Session>>,
    /// Order of the next session installed.
    next_order: u64,
}

/// Every session of a switch, shared by its workers; the data path.
pub struct Sessions {
    table: RwLock<Table>,
    /// Set when the endpoint has something to do that the data path noticed.
    attention: AtomicBool,
    limits: Limits,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("sessions", &self.read().by_index.len())
            .finish_non_exhaustive()
    }
}

/// A peer's sessions, for display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// The cipher of the session sent on.
    pub cipher: Cipher,
    /// Its age.
    pub age: Millis,
    /// Datagrams sealed on it.
    pub sent: u64,
    /// This host initiated it.
    pub initiator: bool,
    /// When a datagram was last accepted from the peer, if ever.
    pub last_received: Option<Millis>,
}

impl Sessions {
    pub(crate) fn new(limits: Limits, capacity: usize) -> Sessions {
        Sessions {
            table: RwLock::new(Table {
                peers: (0..capacity).map(|_| Slot::default()).collect(),
                by_index: HashMap::new(),
                next_order: 0,
            }),
            attention: AtomicBool::new(false),
            limits,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// True when the endpoint should run ([`crate::Endpoint::handle_timeout`]) because the
    /// data path asked for a handshake. One relaxed load: check it after every burst.
    #[inline]
    pub fn wants_attention(&self) -> bool {
        self.attention.load(Ordering::Relaxed)
    }

    pub(crate) fn take_attention(&self) -> bool {
        self.attention.swap(false, Ordering::AcqRel)
    }

    #[inline]
    fn request_handshake(&self, a: &Activity) {
        if !a.wants_handshake.swap(true, Ordering::AcqRel) {
            self.attention.store(true, Ordering::Release);
        }
    }

    /// Asks for a handshake with `peer` (if it is configured), as traffic for it would.
    pub fn request(&self, peer: PeerId) {
        let a = self
            .read()
            .peers
            .get(usize::from(peer))
            .and_then(|s| s.activity.clone());
        if let Some(a) = a {
            self.request_handshake(&a);
        }
    }

    /// Seals a run of datagrams for `peer` in place: `buf` holds datagrams of `segment` bytes
    /// back to back (the last may be shorter, as in a UDP GSO send), each laid out as
    /// [`wire::HEADER_LEN`] bytes of room, the GRE packet, and [`wire::TAG_LEN`] bytes of
    /// room. Writes each header and tag and encrypts each packet under consecutive counters,
    /// with one session lookup for the whole run. Returns the number of datagrams.
    ///
    /// `Err(NoSession)`: nothing was sealed; a handshake was asked for (see
    /// [`Sessions::wants_attention`]). `Err(Truncated)`: `segment` or the last datagram is
    /// shorter than [`wire::OVERHEAD`] (a caller's mistake).
    pub fn seal_run(
        &self,
        now: Millis,
        peer: PeerId,
        buf: &mut [u8],
        segment: usize,
    ) -> Result<usize, Reject> {
        let segment = if segment == 0 { buf.len() } else { segment };
        if segment < OVERHEAD || buf.is_empty() {
            return Err(Reject::Truncated);
        }
        let tail = buf.len() % segment;
        if tail != 0 && tail < OVERHEAD {
            return Err(Reject::Truncated);
        }
        let n = buf.len().div_ceil(segment);
        let s = {
            let t = self.read();
            let Some(slot) = t.peers.get(usize::from(peer)) else {
                return Err(Reject::NoSession);
            };
            match (slot.sending(self.limits.first_retransmit), &slot.activity) {
                (Some(s), _) => s.clone(),
                (None, Some(a)) => {
                    self.request_handshake(a);
                    return Err(Reject::NoSession);
                }
                (None, None) => return Err(Reject::NoSession),
            }
        };
        let l = &self.limits;
        let age = now.saturating_sub(s.created);
        let first = match s.reserve(n as u64, l.reject_after_messages) {
            Some(c) if age < l.reject_after_time => c,
            // Past its time (counters reserved on it are never used) or out of counters.
            _ => {
                self.request_handshake(&s.activity);
                return Err(Reject::NoSession);
            }
        };
        if (s.initiator && age >= l.rekey_after_time) || first + n as u64 >= l.rekey_after_messages
        {
            self.request_handshake(&s.activity);
        }
        let mut data = false;
        for (i, d) in buf.chunks_mut(segment).enumerate() {
            data |= seal_one(&s, first + i as u64, d);
        }
        note_sent(&s.activity, now, data);
        Ok(n)
    }

    /// Seals a keepalive (an empty data packet) for `peer` into `buf` (at least
    /// [`wire::OVERHEAD`] bytes); its length, or `None` without a session to send on.
    pub(crate) fn seal_keepalive(
        &self,
        now: Millis,
        peer: PeerId,
        buf: &mut [u8],
    ) -> Option<usize> {
        let d = buf.get_mut(..OVERHEAD)?;
        self.seal_run(now, peer, d, OVERHEAD).ok().map(|_| OVERHEAD)
    }

    /// Opens the datagrams in `buf` in place: `segment` bytes each (the last may be shorter),
    /// as a coalesced (`UDP_GRO`) receive holds them; `segment` 0 means one datagram. Calls
    /// `out` once per datagram, in order, with what it was: data (decrypted in place, with
    /// the peer whose key opened it), a keepalive, a handshake message for the endpoint, or a
    /// drop. Consecutive datagrams of one session (a whole run, normally) share one lookup
    /// and one replay-window lock before and one after their AEAD work. Returns the counts
    /// of drops and keepalives.
    ///
    /// `hint` is the peer the outer source address claims: it decides nothing, but a data
    /// packet for an unknown session from a configured peer's address (that peer restarted,
    /// say) makes this host start a handshake with that peer.
    ///
    /// `out` may call into the endpoint (for handshake messages): no lock is held.
    pub fn open_run<'a>(
        &self,
        now: Millis,
        buf: &'a mut [u8],
        segment: usize,
        hint: Option<PeerId>,
        mut out: impl FnMut(Received<'a>),
    ) -> Counts {
        let mut counts = Counts::default();
        let segment = if segment == 0 {
            buf.len().max(1)
        } else {
            segment
        };
        let mut group = Group::new();
        for d in buf.chunks_mut(segment) {
            match wire::classify(d) {
                Kind::Data if d.len() >= OVERHEAD => {
                    let index = wire::receiver_index(d).unwrap_or(0);
                    if group.len > 0 && (group.index != index || group.len == MAX_RUN) {
                        self.open_group(now, &mut group, hint, &mut counts, &mut out);
                    }
                    group.index = index;
                    group.items[group.len] = Some(d);
                    group.len += 1;
                }
                k => {
                    self.open_group(now, &mut group, hint, &mut counts, &mut out);
                    let r = match k {
                        Kind::Initiation | Kind::Response => {
                            out(Received::Handshake(d));
                            continue;
                        }
                        Kind::Data | Kind::Truncated => Reject::Truncated,
                        Kind::Cleartext => Reject::Cleartext,
                        Kind::Unknown => Reject::UnknownType,
                    };
                    counts.reject(r);
                    out(Received::Rejected(r));
                }
            }
        }
        self.open_group(now, &mut group, hint, &mut counts, &mut out);
        counts
    }

    fn lookup(&self, index: u32) -> Option<Arc<Session>> {
        self.read().by_index.get(&index).cloned()
    }

    /// Opens the datagrams of one receiver index gathered in `g`, and empties it.
    fn open_group<'a>(
        &self,
        now: Millis,
        g: &mut Group<'a>,
        hint: Option<PeerId>,
        counts: &mut Counts,
        out: &mut impl FnMut(Received<'a>),
    ) {
        let n = std::mem::take(&mut g.len);
        if n == 0 {
            return;
        }
        let items = &mut g.items[..n];
        let l = &self.limits;
        let session = self.lookup(g.index);
        let verdict = match &session {
            None => {
                if let Some(p) = hint {
                    self.request(p);
                }
                Some(Reject::UnknownSession)
            }
            Some(s) if now.saturating_sub(s.created) >= l.reject_after_time => {
                Some(Reject::Expired)
            }
            Some(_) => None,
        };
        let (Some(s), None) = (&session, verdict) else {
            let r = verdict.unwrap_or(Reject::UnknownSession);
            for _ in 0..n {
                counts.reject(r);
                out(Received::Rejected(r));
            }
            items.fill_with(|| None);
            return;
        };
        let mut fate: [Option<Reject>; MAX_RUN] = [None; MAX_RUN];
        let mut ctr = [0u64; MAX_RUN];
        // The cheap check first, so replays cost no AEAD work.
        {
            let w = s.replay();
            for (i, d) in items.iter().enumerate() {
                let c = d.as_deref().and_then(wire::counter).unwrap_or(u64::MAX);
                ctr[i] = c;
                if c >= l.reject_after_messages || !w.check(c) {
                    fate[i] = Some(Reject::Replayed);
                }
            }
        }
        for (i, d) in items.iter_mut().enumerate() {
            if fate[i].is_some() {
                continue;
            }
            let Some(d) = d.as_deref_mut() else { continue };
            if s.recv.open(ctr[i], &mut d[HEADER_LEN..]).is_none() {
                fate[i] = Some(Reject::AuthFailed);
            }
        }
        // Record what authenticated; a counter another worker recorded meanwhile is a replay.
        let mut accepted = 0;
        let mut data = false;
        {
            let mut w = s.replay();
            for (i, d) in items.iter().enumerate() {
                if fate[i].is_none() {
                    if w.update(ctr[i]) {
                        accepted += 1;
                        data |= d.as_ref().is_some_and(|d| d.len() > OVERHEAD);
                    } else {
                        fate[i] = Some(Reject::Replayed);
                    }
                }
            }
        }
        if accepted > 0 {
            self.note_received(s, now, data, counts);
        }
        for (i, d) in items.iter_mut().enumerate() {
            let Some(d) = d.take() else { continue };
            if let Some(r) = fate[i] {
                counts.reject(r);
                out(Received::Rejected(r));
            } else if d.len() == OVERHEAD {
                counts.event(Event::KeepaliveReceived);
                out(Received::Keepalive { peer: s.peer });
            } else {
                let end = d.len() - TAG_LEN;
                out(Received::Data {
                    peer: s.peer,
                    packet: &mut d[HEADER_LEN..end],
                });
            }
        }
    }

    fn note_received(&self, s: &Session, now: Millis, data: bool, counts: &mut Counts) {
        let a = &s.activity;
        a.last_received.store(stamp(now), Ordering::Relaxed);
        answer(&a.waiting_since);
        if data {
            owe(&a.owed_since, now);
        }
        // The first datagram on a responder's session: the initiator has the keys, so
        // this host may send on it (it is the newest, so it will).
        if !s.confirmed.load(Ordering::Acquire) && !s.confirmed.swap(true, Ordering::AcqRel) {
            counts.event(Event::SessionConfirmed);
        }
        if s.initiator && now.saturating_sub(s.created) >= self.limits.rekey_on_receive() {
            self.request_handshake(a);
        }
    }

    // --- for the endpoint ---

    /// Starts (`Some`) or stops (`None`) tracking `peer`; stopping drops its sessions.
    pub(crate) fn set_peer(&self, peer: PeerId, activity: Option<Arc<Activity>>) {
        let mut t = self.write();
        let Table {
            peers, by_index, ..
        } = &mut *t;
        let Some(slot) = peers.get_mut(usize::from(peer)) else {
            return;
        };
        for s in slot.sessions.iter_mut().filter_map(Option::take) {
            by_index.remove(&s.local_index);
        }
        slot.activity = activity;
    }

    /// Whether `index` names a session.
    pub(crate) fn has_index(&self, index: u32) -> bool {
        self.read().by_index.contains_key(&index)
    }

    /// Installs a session just made.
    pub(crate) fn install(&self, mut s: Session) {
        let mut t = self.write();
        s.order = t.next_order;
        t.next_order += 1;
        let s = Arc::new(s);
        let Table {
            peers, by_index, ..
        } = &mut *t;
        let Some(slot) = peers.get_mut(usize::from(s.peer)) else {
            return;
        };
        slot.insert(s.clone(), &mut |old| {
            by_index.remove(&old.local_index);
        });
        by_index.insert(s.local_index, s);
    }

    /// How many sessions `peer` has.
    #[cfg(test)]
    pub(crate) fn count(&self, peer: PeerId) -> usize {
        self.read()
            .peers
            .get(usize::from(peer))
            .map_or(0, |p| p.sessions.iter().flatten().count())
    }

    /// Drops sessions past their time; returns how many.
    pub(crate) fn expire(&self, now: Millis) -> u64 {
        let limit = self.limits.reject_after_time;
        let old = |s: &Option<Arc<Session>>| {
            s.as_ref()
                .is_some_and(|s| now.saturating_sub(s.created) >= limit)
        };
        // Most calls change nothing: look first under the read lock.
        if !self.read().peers.iter().any(|p| p.sessions.iter().any(old)) {
            return 0;
        }
        let mut n = 0;
        let mut t = self.write();
        let Table {
            peers, by_index, ..
        } = &mut *t;
        for s in peers.iter_mut().flat_map(|p| p.sessions.iter_mut()) {
            if old(s) {
                if let Some(o) = s.take() {
                    by_index.remove(&o.local_index);
                    n += 1;
                }
            }
        }
        n
    }

    /// The session `peer` sends on, for display.
    pub(crate) fn info(&self, now: Millis, peer: PeerId) -> Option<SessionInfo> {
        let t = self.read();
        let slot = t.peers.get(usize::from(peer))?;
        let s = slot.sending(self.limits.first_retransmit)?;
        Some(SessionInfo {
            cipher: s.cipher,
            age: now.saturating_sub(s.created),
            sent: s.sent(),
            initiator: s.initiator,
            last_received: unstamp(s.activity.last_received.load(Ordering::Relaxed)),
        })
    }

    /// Whether `peer` has a session to send on.
    pub(crate) fn can_send(&self, peer: PeerId) -> bool {
        self.read()
            .peers
            .get(usize::from(peer))
            .is_some_and(|s| s.sending(self.limits.first_retransmit).is_some())
    }
}

/// Seals one datagram `d` (header room, packet, tag room) under `counter`; true if it
/// carried data (not a keepalive).
#[inline]
fn seal_one(s: &Session, counter: u64, d: &mut [u8]) -> bool {
    let (head, rest) = d.split_at_mut(HEADER_LEN);
    let head: &mut [u8; HEADER_LEN] = head.try_into().expect("HEADER_LEN bytes");
    wire::emit_data_header(head, s.remote_index, counter);
    let (body, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
    tag.copy_from_slice(&s.send.seal(counter, body));
    !body.is_empty()
}

fn note_sent(a: &Activity, now: Millis, data: bool) {
    answer(&a.owed_since);
    if data {
        owe(&a.waiting_since, now);
    }
}

/// Starts a "since" timer unless it runs (a plain load first: it mostly does).
#[inline]
fn owe(since: &AtomicU64, now: Millis) {
    if since.load(Ordering::Relaxed) == 0 {
        let _ = since.compare_exchange(0, stamp(now), Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// Stops a "since" timer (a plain load first, so the cache line is not written each time).
#[inline]
fn answer(since: &AtomicU64) {
    if since.load(Ordering::Relaxed) != 0 {
        since.store(0, Ordering::Relaxed);
    }
}

/// Consecutive data datagrams with one receiver index, waiting to be opened together.
struct Group<'a> {
    index: u32,
    len: usize,
    items: [Option<&'a mut [u8]>; MAX_RUN],
}

impl Group<'_> {
    fn new() -> Self {
        Group {
            index: 0,
            len: 0,
            items: [const { None }; MAX_RUN],
        }
    }
}
