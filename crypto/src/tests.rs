//! Endpoints wired back to back in memory (boringtun's `create_two_tuns`), on a fake clock:
//! handshakes, data both ways, forgeries, replays, reordering, rotation, restarts and
//! lost messages, with no socket and no sleep.

use crate::counts::{Counts, Event, Reject};
use crate::replay::WINDOW;
use crate::wire::{self, HEADER_LEN, MAX_MESSAGE_LEN, OVERHEAD, TAG_LEN};
use crate::*;
use std::collections::VecDeque;
use std::sync::Arc;

/// How A names B, and how B names A: ids are each host's own.
const B_AT_A: PeerId = 7;
const A_AT_B: PeerId = 3;
/// Wall-clock time at the fake clock's zero.
const WALL: u64 = 1_750_000_000_000;

struct Host {
    ep: Endpoint,
    s: Arc<Sessions>,
    /// Data received: (peer, GRE packet).
    got: Vec<(PeerId, Vec<u8>)>,
    /// What the data path counted.
    counts: Counts,
    /// Results of handshake messages handed to the endpoint.
    handshakes: Vec<Result<PeerId, Reject>>,
}

impl Host {
    fn new(key: PrivateKey, wall: u64, limits: Limits, cipher: CipherPreference) -> Host {
        let ep = Endpoint::new(Config {
            private_key: key,
            capacity: 16,
            cipher,
            wall_clock_at_zero: wall,
            limits,
        });
        let s = ep.sessions().clone();
        Host {
            ep,
            s,
            got: Vec::new(),
            counts: Counts::default(),
            handshakes: Vec::new(),
        }
    }

    fn peer(&mut self, id: PeerId, key: PublicKey) {
        self.ep
            .set_peer(
                id,
                Some(PeerConfig {
                    public_key: key,
                    psk: None,
                }),
            )
            .unwrap();
    }

    /// Seals `packets` (all one length) as one run for `peer`: (buffer, segment).
    fn seal(&self, now: Millis, peer: PeerId, packets: &[Vec<u8>]) -> Result<Vec<u8>, Reject> {
        let seg = packets[0].len() + OVERHEAD;
        let mut buf = vec![0u8; seg * packets.len()];
        for (d, p) in buf.chunks_mut(seg).zip(packets) {
            assert_eq!(p.len() + OVERHEAD, seg, "one length per run");
            d[HEADER_LEN..seg - TAG_LEN].copy_from_slice(p);
        }
        let n = self.s.seal_run(now, peer, &mut buf, seg)?;
        assert_eq!(n, packets.len());
        Ok(buf)
    }

    /// Receives a (coalesced) buffer; handshake messages go to the endpoint.
    fn receive(&mut self, now: Millis, mut buf: Vec<u8>, seg: usize, hint: Option<PeerId>) {
        let mut hs = Vec::new();
        let mut got = Vec::new();
        let c = self.s.open_run(now, &mut buf, seg, hint, |r| match r {
            Received::Data { peer, packet } => got.push((peer, packet.to_vec())),
            Received::Handshake(m) => hs.push(m.to_vec()),
            Received::Keepalive { .. } | Received::Rejected(_) => {}
        });
        self.counts.add(&c);
        self.got.extend(got);
        for m in hs {
            let r = self.ep.handle_handshake(now, &m);
            self.handshakes.push(r);
        }
    }

    /// Everything the endpoint wants to send now, after its timers ran.
    fn outgoing(&mut self, now: Millis) -> Vec<(PeerId, Vec<u8>)> {
        self.ep.handle_timeout(now);
        let mut buf = [0u8; MAX_MESSAGE_LEN];
        let mut v = Vec::new();
        while let Some(t) = self.ep.poll_transmit(now, &mut buf) {
            v.push((t.peer, buf[..t.len].to_vec()));
        }
        v
    }

    fn data(&self) -> Vec<Vec<u8>> {
        self.got.iter().map(|(_, p)| p.clone()).collect()
    }

    fn dropped(&self, r: Reject) -> u64 {
        self.counts.dropped(r) + self.ep.counts().dropped(r)
    }

    fn events(&self, e: Event) -> u64 {
        self.ep.counts().count(e) + self.counts.count(e)
    }
}

fn key() -> PrivateKey {
    PrivateKey::generate().unwrap()
}

fn pair_with(limits: Limits, ca: CipherPreference, cb: CipherPreference) -> (Host, Host) {
    let (ka, kb) = (key(), key());
    let (pa, pb) = (ka.public_key(), kb.public_key());
    let mut a = Host::new(ka, WALL, limits, ca);
    let mut b = Host::new(kb, WALL + 5, limits, cb);
    a.peer(B_AT_A, pb);
    b.peer(A_AT_B, pa);
    (a, b)
}

fn pair() -> (Host, Host) {
    pair_with(
        Limits::default(),
        CipherPreference::Auto,
        CipherPreference::Auto,
    )
}

/// Delivers handshake messages and keepalives back and forth until both are quiet.
fn settle(now: Millis, a: &mut Host, b: &mut Host) {
    for _ in 0..10 {
        let ab = a.outgoing(now);
        let ba = b.outgoing(now);
        if ab.is_empty() && ba.is_empty() {
            return;
        }
        for (_, m) in ab {
            b.receive(now, m, 0, None);
        }
        for (_, m) in ba {
            a.receive(now, m, 0, None);
        }
    }
    panic!("the endpoints never went quiet");
}

/// A GRE packet with a recognisable body.
fn packet(tag: u32, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[..4].copy_from_slice(&[0x00, 0x00, 0x65, 0x58]);
    for (i, b) in p[4..].iter_mut().enumerate() {
        *b = (tag as usize * 31 + i) as u8;
    }
    if len >= 8 {
        p[4..8].copy_from_slice(&tag.to_be_bytes());
    }
    p
}

/// Brings up a session A -> B (A initiates on traffic).
fn establish(now: Millis, a: &mut Host, b: &mut Host) {
    assert_eq!(
        a.seal(now, B_AT_A, &[packet(0, 100)]),
        Err(Reject::NoSession)
    );
    assert!(a.s.wants_attention());
    settle(now, a, b);
}

#[test]
fn two_peers_handshake_and_exchange_data_both_ways() {
    let (mut a, mut b) = pair();
    let now = 1_000;
    establish(now, &mut a, &mut b);
    assert_eq!(a.events(Event::InitiationSent), 1);
    assert_eq!(b.events(Event::ResponseSent), 1);
    assert_eq!(a.events(Event::SessionInitiated), 1);
    // A's keepalive confirmed B's session, so B can send at once.
    assert_eq!(b.events(Event::KeepaliveReceived), 1);

    // A run of 45 MSS-sized datagrams each way, plus single small ones.
    let run: Vec<_> = (0..45).map(|i| packet(i, 1448)).collect();
    let buf = a.seal(now, B_AT_A, &run).unwrap();
    // Every datagram is sealed: no plaintext left, a header each.
    for (i, d) in buf.chunks(1448 + OVERHEAD).enumerate() {
        assert_eq!(wire::classify(d), wire::Kind::Data);
        assert_eq!(
            wire::counter(d),
            Some(i as u64 + 1),
            "after the keepalive's 0"
        );
        assert!(
            !d.windows(8).any(|w| w == &run[i][4..12]),
            "plaintext visible"
        );
    }
    b.receive(now, buf, 1448 + OVERHEAD, None);
    assert_eq!(b.data(), run);
    assert!(b.got.iter().all(|(p, _)| *p == A_AT_B));

    let back: Vec<_> = (100..110).map(|i| packet(i, 60)).collect();
    let buf = b.seal(now, A_AT_B, &back).unwrap();
    a.receive(now, buf, 60 + OVERHEAD, None);
    assert_eq!(a.data(), back);
    assert!(a.got.iter().all(|(p, _)| *p == B_AT_A));
    for r in Reject::ALL {
        assert_eq!(a.dropped(r) + b.dropped(r), 0, "{r:?}");
    }
    // Both ended up on one session with the cipher both prefer.
    let sa = a.ep.peer_status(now, B_AT_A).unwrap().session.unwrap();
    let sb = b.ep.peer_status(now, A_AT_B).unwrap().session.unwrap();
    assert_eq!(sa.cipher, sb.cipher);
    let expect = if has_aes_instructions() {
        Cipher::Aes256Gcm
    } else {
        Cipher::ChaCha20Poly1305
    };
    assert_eq!(sa.cipher, expect);
    assert!(sa.initiator && !sb.initiator);
}

#[test]
fn the_cipher_is_aes_only_when_both_prefer_it() {
    use CipherPreference::{Aes256Gcm as Aes, ChaCha20Poly1305 as Cc};
    for (ca, cb, want) in [
        (Aes, Aes, Cipher::Aes256Gcm),
        (Aes, Cc, Cipher::Aes256Gcm), // the initiator offers AES only
        (Cc, Aes, Cipher::ChaCha20Poly1305),
        (Cc, Cc, Cipher::ChaCha20Poly1305),
    ] {
        let (mut a, mut b) = pair_with(Limits::default(), ca, cb);
        establish(0, &mut a, &mut b);
        let p = vec![packet(1, 200)];
        let buf = a.seal(0, B_AT_A, &p).unwrap();
        b.receive(0, buf, 0, None);
        assert_eq!(b.data(), p, "{ca:?} {cb:?}");
        let s = a.ep.peer_status(0, B_AT_A).unwrap().session.unwrap();
        assert_eq!(s.cipher, want, "{ca:?} {cb:?}");
    }
}

#[test]
fn a_third_party_gets_nothing_accepted_whatever_source_it_claims() {
    let (mut a, mut b) = pair();
    establish(0, &mut a, &mut b);
    let good = a.seal(0, B_AT_A, &[packet(1, 300)]).unwrap();

    // C has its own key and knows B's public key (it is public), but B does not know C.
    let mut c = Host::new(key(), WALL, Limits::default(), CipherPreference::Auto);
    c.peer(1, b.ep.public_key());
    assert_eq!(c.seal(0, 1, &[packet(2, 300)]), Err(Reject::NoSession));
    for (_, m) in c.outgoing(0) {
        // Claiming to come from A's address changes nothing.
        b.receive(0, m, 0, Some(A_AT_B));
    }
    assert_eq!(
        b.handshakes[1..],
        [Err(Reject::UnknownKey)],
        "after A's own"
    );
    assert_eq!(b.dropped(Reject::UnknownKey), 1);
    assert!(b.outgoing(0).is_empty(), "B answered an unknown key");

    // C forges data packets with the receiver index of A's session, seen on the wire.
    let index = wire::receiver_index(&good).unwrap();
    for ctr in [1u64, 2, 3, 1000] {
        let mut d = vec![0u8; 300 + OVERHEAD];
        wire::emit_data_header((&mut d[..HEADER_LEN]).try_into().unwrap(), index, ctr);
        d[HEADER_LEN..].iter_mut().for_each(|x| *x = 0x5a);
        b.receive(0, d, 0, Some(A_AT_B));
    }
    assert_eq!(b.dropped(Reject::AuthFailed), 4);
    // Or alters A's real one.
    let mut bad = good.clone();
    bad[HEADER_LEN + 10] ^= 1;
    b.receive(0, bad, 0, Some(A_AT_B));
    assert_eq!(b.dropped(Reject::AuthFailed), 5);
    // Or makes up an index.
    let mut other = good.clone();
    other[4..8].copy_from_slice(&(index ^ 0x8000_0000).to_le_bytes());
    b.receive(0, other, 0, None);
    assert_eq!(b.dropped(Reject::UnknownSession), 1);
    assert!(b.got.is_empty());
    // The genuine one is still accepted afterwards: the forgeries did not burn its counter.
    b.receive(0, good, 0, None);
    assert_eq!(b.data(), vec![packet(1, 300)]);
}

#[test]
fn a_wrong_or_unknown_static_key_gets_no_session() {
    // A has the wrong public key for B: B cannot even check the initiation's mac1.
    let (ka, kb) = (key(), key());
    let mut a = Host::new(ka.clone(), WALL, Limits::default(), CipherPreference::Auto);
    let mut b = Host::new(kb, WALL, Limits::default(), CipherPreference::Auto);
    a.peer(B_AT_A, key().public_key());
    b.peer(A_AT_B, ka.public_key());
    assert_eq!(a.seal(0, B_AT_A, &[packet(1, 64)]), Err(Reject::NoSession));
    for (_, m) in a.outgoing(0) {
        b.receive(0, m, 0, Some(A_AT_B));
    }
    assert_eq!(b.handshakes, vec![Err(Reject::BadMac)]);
    assert!(b.outgoing(0).is_empty());

    // B has the wrong public key for A: A's initiation reads, but its key is unknown.
    let (ka, kb) = (key(), key());
    let mut a = Host::new(ka, WALL, Limits::default(), CipherPreference::Auto);
    let mut b = Host::new(kb.clone(), WALL, Limits::default(), CipherPreference::Auto);
    a.peer(B_AT_A, kb.public_key());
    b.peer(A_AT_B, key().public_key());
    assert_eq!(a.seal(0, B_AT_A, &[packet(1, 64)]), Err(Reject::NoSession));
    for t in (0..=100_000).step_by(1_000) {
        for (_, m) in a.outgoing(t) {
            b.receive(t, m, 0, Some(A_AT_B));
        }
        assert!(b.outgoing(t).is_empty(), "B answered at {t}");
    }
    assert!(b.handshakes.iter().all(|r| *r == Err(Reject::UnknownKey)));
    assert!(
        b.handshakes.len() > 5,
        "A kept retrying: {}",
        b.handshakes.len()
    );
    assert_eq!(a.events(Event::HandshakeTimeout), 1, "A gave up after 90 s");
    assert!(a.ep.peer_status(100_000, B_AT_A).unwrap().session.is_none());
    assert_eq!(
        a.seal(100_000, B_AT_A, &[packet(1, 64)]),
        Err(Reject::NoSession)
    );
}

#[test]
fn replayed_datagrams_and_handshakes_are_refused() {
    let (mut a, mut b) = pair();
    // Keep A's initiation to replay it.
    assert_eq!(a.seal(0, B_AT_A, &[packet(0, 64)]), Err(Reject::NoSession));
    let init = a.outgoing(0);
    assert_eq!(init.len(), 1);
    b.receive(0, init[0].1.clone(), 0, None);
    for (_, m) in b.outgoing(0) {
        a.receive(0, m, 0, None);
    }
    settle(0, &mut a, &mut b);

    let run: Vec<_> = (0..8).map(|i| packet(i, 500)).collect();
    let buf = a.seal(10, B_AT_A, &run).unwrap();
    b.receive(10, buf.clone(), 500 + OVERHEAD, None);
    b.receive(11, buf.clone(), 500 + OVERHEAD, None);
    // One by one too.
    for d in buf.chunks(500 + OVERHEAD) {
        b.receive(12, d.to_vec(), 0, None);
    }
    assert_eq!(b.data(), run);
    assert_eq!(b.dropped(Reject::Replayed), 16);

    // The initiation again: refused as stale, and B's session is untouched.
    b.receive(20, init[0].1.clone(), 0, Some(A_AT_B));
    assert_eq!(b.handshakes.last(), Some(&Err(Reject::StaleInitiation)));
    assert!(b.outgoing(20).is_empty());
    let more = vec![packet(99, 500)];
    let buf = a.seal(30, B_AT_A, &more).unwrap();
    b.receive(30, buf, 0, None);
    assert_eq!(b.got.len(), 9);
}

#[test]
fn reordering_within_the_window_is_accepted_and_older_is_not() {
    let (mut a, mut b) = pair();
    establish(0, &mut a, &mut b);
    let n = 300;
    let sealed: Vec<_> = (0..n)
        .map(|i| a.seal(0, B_AT_A, &[packet(i, 80)]).unwrap())
        .collect();
    // Reverse, then interleaved odd/even: each accepted once.
    let mut order: Vec<usize> = (0..n as usize).rev().collect();
    order.sort_by_key(|i| (i % 2, usize::MAX - i));
    for &i in &order {
        b.receive(0, sealed[i].clone(), 0, None);
    }
    assert_eq!(b.got.len(), n as usize);
    assert_eq!(b.dropped(Reject::Replayed), 0);
    let mut got = b.data();
    got.sort_by_key(|p| u32::from_be_bytes(p[4..8].try_into().unwrap()));
    assert_eq!(got, (0..n).map(|i| packet(i, 80)).collect::<Vec<_>>());

    // A datagram held back while more than the window went by is refused.
    let late = a.seal(0, B_AT_A, &[packet(1000, 80)]).unwrap();
    let flood: Vec<_> = (0..WINDOW as u32 + 1)
        .map(|i| packet(2000 + i, 20))
        .collect();
    for chunk in flood.chunks(64) {
        let buf = a.seal(0, B_AT_A, chunk).unwrap();
        b.receive(0, buf, 20 + OVERHEAD, None);
    }
    let before = b.got.len();
    b.receive(0, late, 0, None);
    assert_eq!(b.got.len(), before);
    assert_eq!(b.dropped(Reject::Replayed), 1);
}

/// Runs a steady stream both ways for `duration` ms in `step` ms steps, every datagram and
/// handshake message arriving `lag` steps after it was sent. Returns the hosts.
fn stream(
    limits: Limits,
    duration: Millis,
    step: Millis,
    per_step: u32,
    lag: usize,
) -> (Host, Host) {
    let (mut a, mut b) = pair_with(limits, CipherPreference::Auto, CipherPreference::Auto);
    establish(0, &mut a, &mut b);
    // In flight: (due step, to A?, bytes, segment).
    let mut wire: VecDeque<(usize, bool, Vec<u8>, usize)> = VecDeque::new();
    let (mut seq_a, mut seq_b) = (0u32, 0u32);
    let steps = (duration / step) as usize;
    for k in 1..=steps {
        let now = k as Millis * step;
        for (to_a, from) in [(false, &mut a), (true, &mut b)] {
            let (peer, seq) = if to_a {
                (A_AT_B, &mut seq_b)
            } else {
                (B_AT_A, &mut seq_a)
            };
            let run: Vec<_> = (0..per_step).map(|i| packet(*seq + i, 100)).collect();
            let buf = from.seal(now, peer, &run).unwrap_or_else(|r| {
                panic!("no session to send on at {now} ms (to_a {to_a}): {r:?}")
            });
            *seq += per_step;
            wire.push_back((k + lag, to_a, buf, 100 + OVERHEAD));
            for (_, m) in from.outgoing(now) {
                wire.push_back((k + lag, to_a, m, 0));
            }
        }
        while wire.front().is_some_and(|w| w.0 <= k) {
            let (_, to_a, buf, seg) = wire.pop_front().unwrap();
            let h = if to_a { &mut a } else { &mut b };
            h.receive(now, buf, seg, None);
        }
    }
    // Drain what is still in flight.
    let end = steps as Millis * step;
    for (_, to_a, buf, seg) in wire {
        let h = if to_a { &mut a } else { &mut b };
        h.receive(end, buf, seg, None);
    }
    // Everything sent arrived, once, in order per direction (the lag keeps order).
    let want_b: Vec<_> = (0..seq_a).map(|i| packet(i, 100)).collect();
    let want_a: Vec<_> = (0..seq_b).map(|i| packet(i, 100)).collect();
    assert_eq!(
        (b.data().len(), a.data().len()),
        (want_b.len(), want_a.len()),
        "A {:?} B {:?}",
        a.counts
            .nonzero()
            .chain(a.ep.counts().nonzero())
            .collect::<Vec<_>>(),
        b.counts
            .nonzero()
            .chain(b.ep.counts().nonzero())
            .collect::<Vec<_>>()
    );
    assert!(b.data() == want_b, "B lost or reordered data");
    assert!(a.data() == want_a, "A lost or reordered data");
    for r in Reject::ALL {
        assert_eq!(a.dropped(r) + b.dropped(r), 0, "{r:?}");
    }
    (a, b)
}

#[test]
fn rotation_by_time_under_a_continuous_stream_loses_nothing() {
    // 400 s of traffic both ways: A rekeys at 120 s and 240 s and 360 s; datagrams sealed
    // on the old session just before each switch arrive afterwards (150 ms later).
    let (a, b) = stream(Limits::default(), 400_000, 50, 2, 3);
    let rekeys = a.events(Event::SessionInitiated) + b.events(Event::SessionInitiated);
    assert_eq!(rekeys, 4, "the first session and three rotations");
    assert!(b.events(Event::SessionConfirmed) + a.events(Event::SessionConfirmed) >= 4);
}

#[test]
fn datagrams_sealed_before_a_rotation_and_arriving_after_it_are_accepted() {
    let (mut a, mut b) = pair();
    establish(0, &mut a, &mut b);
    let t = 121_000;
    // Sealed on the first session; A's seal finds it 121 s old and asks for a new one.
    let a_old = a.seal(t, B_AT_A, &[packet(1, 90)]).unwrap();
    let b_old = b.seal(t, A_AT_B, &[packet(2, 90)]).unwrap();
    let b_older = b.seal(t, A_AT_B, &[packet(5, 90)]).unwrap();
    assert!(a.s.wants_attention());
    settle(t, &mut a, &mut b);
    assert_eq!(a.events(Event::SessionInitiated), 2);
    let a_new = a.seal(t, B_AT_A, &[packet(3, 90)]).unwrap();
    let b_new = b.seal(t, A_AT_B, &[packet(4, 90)]).unwrap();
    assert_ne!(wire::receiver_index(&a_old), wire::receiver_index(&a_new));
    assert_ne!(wire::receiver_index(&b_old), wire::receiver_index(&b_new));
    // The new ones overtake the old ones.
    b.receive(t + 10, a_new, 0, None);
    b.receive(t + 20, a_old, 0, None);
    a.receive(t + 10, b_new, 0, None);
    a.receive(t + 20, b_old, 0, None);
    assert_eq!(b.data(), vec![packet(3, 90), packet(1, 90)]);
    assert_eq!(a.data(), vec![packet(4, 90), packet(2, 90)]);
    // The old session lasts until 180 s after it was made, and no longer.
    a.receive(180_000, b_older, 0, None);
    assert_eq!(a.dropped(Reject::Expired), 1);
    assert_eq!(a.got.len(), 2);
}

#[test]
fn rotation_by_message_count_under_a_continuous_stream_loses_nothing() {
    let limits = Limits {
        rekey_after_messages: 400,
        reject_after_messages: 800,
        ..Limits::default()
    };
    // 10 datagrams each way every 100 ms for 60 s: 6000 each way, a new session every
    // ~400 datagrams (spaced at least rekey_timeout apart), never running out.
    let (a, b) = stream(limits, 60_000, 100, 10, 2);
    let sessions = a.events(Event::SessionInitiated) + b.events(Event::SessionInitiated);
    assert!(sessions >= 10, "{sessions} sessions");
}

#[test]
fn a_restarted_peer_handshakes_again_and_traffic_resumes() {
    for b_sends_first in [true, false] {
        let (ka, kb) = (key(), key());
        let mut a = Host::new(ka.clone(), WALL, Limits::default(), CipherPreference::Auto);
        let mut b = Host::new(kb.clone(), WALL, Limits::default(), CipherPreference::Auto);
        a.peer(B_AT_A, kb.public_key());
        b.peer(A_AT_B, ka.public_key());
        establish(0, &mut a, &mut b);
        let p = vec![packet(1, 100)];
        let buf = a.seal(1_000, B_AT_A, &p).unwrap();
        b.receive(1_000, buf, 0, None);
        assert_eq!(b.got.len(), 1);
        // B acknowledges with a keepalive 10 s later, so A is not waiting for an answer.
        settle(11_000, &mut a, &mut b);
        assert_eq!(b.events(Event::KeepaliveSent), 1);

        // B restarts at 60 s: same key, no sessions, its wall clock moved on.
        let t = 60_000;
        let mut b2 = Host::new(
            kb.clone(),
            WALL + t,
            Limits::default(),
            CipherPreference::Auto,
        );
        b2.peer(A_AT_B, a.ep.public_key());
        // A still has its session and sends: B drops it (no such session).
        let buf = a.seal(t, B_AT_A, &p).unwrap();
        b2.receive(0, buf, 0, None);
        assert_eq!(b2.dropped(Reject::UnknownSession), 1);
        if b_sends_first {
            // B has traffic for A: it initiates, A accepts the newer timestamp.
            assert_eq!(b2.seal(0, A_AT_B, &p), Err(Reject::NoSession));
            for (_, m) in b2.outgoing(0) {
                a.receive(t, m, 0, None);
            }
            assert_eq!(a.handshakes.last(), Some(&Ok(B_AT_A)));
            for (_, m) in a.outgoing(t) {
                b2.receive(0, m, 0, None);
            }
            for (_, m) in b2.outgoing(0) {
                a.receive(t, m, 0, None); // the keepalive confirms A's new session
            }
            let buf = b2.seal(0, A_AT_B, &p).unwrap();
            a.receive(t, buf, 0, None);
            assert_eq!(a.got.len(), 1);
        } else {
            // Only A sends. Nothing comes back, so within keepalive + rekey timeouts
            // A handshakes again by itself.
            let mut k = 0;
            while a
                .ep
                .peer_status(t + k, B_AT_A)
                .unwrap()
                .session
                .unwrap()
                .age
                > 1_000
            {
                k += 500;
                assert!(k <= 20_000, "A never re-handshook");
                let buf = a.seal(t + k, B_AT_A, &p).unwrap();
                b2.receive(k, buf, 0, None);
                for (_, m) in a.outgoing(t + k) {
                    b2.receive(k, m, 0, None);
                }
                for (_, m) in b2.outgoing(k) {
                    a.receive(t + k, m, 0, None);
                }
                for (_, m) in a.outgoing(t + k) {
                    b2.receive(k, m, 0, None);
                }
            }
            assert!(k >= 15_000 - 500, "re-handshook after {k} ms");
        }
        // Traffic resumes A -> B.
        let now = t + 30_000;
        let buf = a.seal(now, B_AT_A, &[packet(7, 100)]).unwrap();
        b2.receive(now - t, buf, 0, None);
        assert_eq!(
            b2.data(),
            vec![packet(7, 100)],
            "b_sends_first {b_sends_first}"
        );
    }
}

#[test]
fn a_data_packet_for_an_unknown_session_from_a_peers_address_starts_a_handshake() {
    let (mut a, mut b) = pair();
    establish(0, &mut a, &mut b);
    let buf = a.seal(0, B_AT_A, &[packet(1, 100)]).unwrap();
    // A stranger to B's sessions (B restarted, say), hinted to come from A's address.
    let mut b2 = Host::new(key(), WALL, Limits::default(), CipherPreference::Auto);
    b2.peer(A_AT_B, a.ep.public_key());
    b2.receive(0, buf, 0, Some(A_AT_B));
    assert!(b2.s.wants_attention());
    let out = b2.outgoing(0);
    assert_eq!(out.len(), 1);
    assert_eq!(wire::classify(&out[0].1), wire::Kind::Initiation);
    assert_eq!(out[0].0, A_AT_B);
}

/// Runs `h`'s timers at each deadline it asks for until it sends something.
fn next_send(h: &mut Host) -> (Millis, Vec<(PeerId, Vec<u8>)>) {
    for _ in 0..100 {
        let t = h.ep.poll_timeout().unwrap();
        let out = h.outgoing(t);
        if !out.is_empty() {
            return (t, out);
        }
    }
    panic!("nothing sent");
}

#[test]
fn a_lost_initiation_or_response_is_retransmitted() {
    let (mut a, mut b) = pair();
    assert_eq!(a.seal(0, B_AT_A, &[packet(0, 64)]), Err(Reject::NoSession));
    let lost = a.outgoing(0);
    assert_eq!(lost.len(), 1, "the initiation, lost");
    // Nothing more until the first retransmission, 1 s later (plus up to 1/3 s jitter).
    let (due, again) = next_send(&mut a);
    assert!((1_000..=1_334).contains(&due), "{due}");
    assert_eq!(again.len(), 1);
    assert_eq!(a.events(Event::InitiationRetransmit), 1);
    // Deliver it, lose the response.
    b.receive(due, again[0].1.clone(), 0, None);
    let lost = b.outgoing(due);
    assert_eq!(lost.len(), 1);
    // The next retransmission backs off (2 s + jitter).
    let (due2, again) = next_send(&mut a);
    assert!((due + 2_000..=due + 2_334).contains(&due2), "{due} {due2}");
    assert_eq!(again.len(), 1);
    b.receive(due2, again[0].1.clone(), 0, None);
    assert_eq!(b.handshakes, vec![Ok(A_AT_B), Ok(A_AT_B)]);
    // The session of the first answer can never be confirmed (A dropped that attempt's
    // state when it sent again): the second replaced it.
    assert_eq!(b.s.count(A_AT_B), 1);
    for (_, m) in b.outgoing(due2) {
        a.receive(due2, m, 0, None);
    }
    settle(due2, &mut a, &mut b);
    let p = vec![packet(5, 64)];
    let buf = a.seal(due2, B_AT_A, &p).unwrap();
    b.receive(due2, buf, 0, None);
    assert_eq!(b.data(), p);
    // A late copy of the lost response finds no initiation waiting.
    a.receive(due2, lost[0].1.clone(), 0, None);
    assert_eq!(a.handshakes.last(), Some(&Err(Reject::UnexpectedResponse)));
}

#[test]
fn a_one_way_stream_gets_keepalives_and_needs_no_new_handshake() {
    let (mut a, mut b) = pair();
    establish(0, &mut a, &mut b);
    // 100 s of A -> B only (less than the rekey time).
    for k in 1..=1000u64 {
        let now = k * 100;
        let buf = a.seal(now, B_AT_A, &[packet(k as u32, 100)]).unwrap();
        b.receive(now, buf, 0, None);
        for (_, m) in b.outgoing(now) {
            a.receive(now, m, 0, None);
        }
        for (_, m) in a.outgoing(now) {
            b.receive(now, m, 0, None);
        }
    }
    assert_eq!(b.got.len(), 1000);
    assert_eq!(
        a.events(Event::InitiationSent),
        1,
        "only the first handshake"
    );
    let k = b.events(Event::KeepaliveSent);
    assert!((9..=11).contains(&k), "B sent {k} keepalives in 100 s");
    assert_eq!(a.events(Event::KeepaliveReceived), k);
}

#[test]
fn cleartext_and_unknown_datagrams_are_counted_not_delivered() {
    let (mut a, mut b) = pair();
    establish(0, &mut a, &mut b);
    // A cleartext GRE-in-UDP datagram (key 42), as a peer without --encrypt sends it.
    let mut gre = vec![0x20, 0x00, 0x65, 0x58, 0, 0, 0, 42];
    gre.extend_from_slice(&[0xff; 6]);
    gre.extend_from_slice(&[0x02; 50]);
    b.receive(0, gre, 0, Some(A_AT_B));
    b.receive(0, vec![0x44, 0x07], 0, None);
    b.receive(0, vec![0x44, 0x07, 0, 0, 1, 2, 3], 0, None);
    b.receive(0, vec![0xc0, 0x01, 0, 0, 1, 2, 3, 4], 0, None);
    assert_eq!(b.dropped(Reject::Cleartext), 1);
    assert_eq!(b.dropped(Reject::Truncated), 2);
    assert_eq!(b.dropped(Reject::UnknownType), 1);
    assert!(b.got.is_empty());
    // A handshake-typed message of the wrong length.
    b.receive(0, vec![0x41, 0x07, 0, 0, 9, 9], 0, None);
    assert_eq!(
        b.handshakes[1..],
        [Err(Reject::Truncated)],
        "after A's initiation"
    );
}

#[test]
fn a_coalesced_receive_keeps_order_across_sessions_and_kinds() {
    let (mut a, mut b) = pair();
    establish(0, &mut a, &mut b);
    let p = |i| packet(i, 60);
    let first = a.seal(0, B_AT_A, &[p(0), p(1)]).unwrap();
    // A rotates (B initiates this time, so B gets a second session)...
    b.ep.connect(5_000, A_AT_B);
    settle(5_000, &mut a, &mut b);
    let second = a.seal(5_000, B_AT_A, &[p(2), p(3)]).unwrap();
    assert_ne!(
        wire::receiver_index(&first),
        wire::receiver_index(&second),
        "sealed on the new session"
    );
    // ...and the receiver gets both runs and a cleartext datagram of the same size in one
    // coalesced buffer.
    let mut gro = first.clone();
    let mut clear = vec![0u8; 60 + OVERHEAD];
    clear[2..4].copy_from_slice(&[0x65, 0x58]);
    gro.extend_from_slice(&clear);
    gro.extend_from_slice(&second);
    let mut kinds = Vec::new();
    let c = b.s.open_run(5_000, &mut gro, 60 + OVERHEAD, None, |r| {
        kinds.push(match r {
            Received::Data { packet, .. } => format!("data {}", packet[7]),
            Received::Rejected(r) => r.name().to_string(),
            other => format!("{other:?}"),
        })
    });
    assert_eq!(
        kinds,
        vec!["data 0", "data 1", "cleartext", "data 2", "data 3"]
    );
    assert_eq!(c.dropped(Reject::Cleartext), 1);
}

#[test]
fn garbage_handshakes_cost_no_diffie_hellman_beyond_the_rate_limit() {
    let limits = Limits {
        handshakes_per_sec: 10,
        handshake_burst: 5,
        ..Limits::default()
    };
    let (_a, mut b) = pair_with(limits, CipherPreference::Auto, CipherPreference::Auto);
    // Garbage with no valid mac1: refused before the bucket.
    for i in 0..100u8 {
        let mut m = vec![i; wire::INITIATION_LEN];
        m[..4].copy_from_slice(&wire::INITIATION);
        b.receive(0, m, 0, None);
    }
    assert_eq!(b.dropped(Reject::BadMac), 100);
    // Garbage with a valid mac1 (B's public key is public): 5 reach Noise, the rest wait.
    for i in 0..100u8 {
        let mut m = vec![i; wire::INITIATION_LEN];
        m[..4].copy_from_slice(&wire::INITIATION);
        let body = wire::INITIATION_LEN - wire::MAC_LEN;
        let k = crate::handshake::mac1_key(&b.ep.public_key());
        let tag = mac_for_test(&k, &m[..body]);
        m[body..].copy_from_slice(&tag);
        b.receive(0, m, 0, None);
    }
    assert_eq!(b.dropped(Reject::HandshakeFailed), 5);
    assert_eq!(b.dropped(Reject::RateLimited), 95);
    assert!(b.outgoing(0).is_empty());
}

fn mac_for_test(key: &[u8; 32], msg: &[u8]) -> [u8; 16] {
    use blake2::digest::consts::U16;
    use blake2::digest::{KeyInit, Mac};
    let mut m = <blake2::Blake2sMac<U16> as KeyInit>::new_from_slice(key).unwrap();
    m.update(msg);
    m.finalize().into_bytes().into()
}

#[test]
fn seal_refuses_a_layout_without_room() {
    let (mut a, mut b) = pair();
    establish(0, &mut a, &mut b);
    let s = &a.s;
    assert_eq!(
        s.seal_run(0, B_AT_A, &mut [0u8; 31], 0),
        Err(Reject::Truncated)
    );
    assert_eq!(s.seal_run(0, B_AT_A, &mut [], 0), Err(Reject::Truncated));
    assert_eq!(
        s.seal_run(0, B_AT_A, &mut [0u8; 100], 20),
        Err(Reject::Truncated)
    );
    // 2 × 50 + a last one of 31: too short; of 32 (a keepalive-sized one): fine.
    assert_eq!(
        s.seal_run(0, B_AT_A, &mut [0u8; 131], 50),
        Err(Reject::Truncated)
    );
    assert_eq!(s.seal_run(0, B_AT_A, &mut [0u8; 132], 50), Ok(3));
    // An unconfigured or out-of-range peer has no session.
    assert_eq!(s.seal_run(0, 2, &mut [0u8; 64], 0), Err(Reject::NoSession));
    assert_eq!(
        s.seal_run(0, 999, &mut [0u8; 64], 0),
        Err(Reject::NoSession)
    );
}

#[test]
fn sessions_expire_without_rekeying_and_a_removed_peer_loses_them() {
    let (mut a, mut b) = pair();
    establish(0, &mut a, &mut b);
    let p = vec![packet(1, 64)];
    let old = a.seal(1_000, B_AT_A, &p).unwrap();
    // Nothing for 3 minutes: both sessions are dropped. (A also starts a handshake: its
    // datagram at 1 s was never answered.)
    a.ep.handle_timeout(180_000);
    b.ep.handle_timeout(180_000);
    assert_eq!(a.events(Event::SessionExpired), 1);
    assert_eq!(b.events(Event::SessionExpired), 1);
    b.receive(180_000, old, 0, None);
    assert_eq!(b.dropped(Reject::UnknownSession), 1);
    assert_eq!(a.seal(180_000, B_AT_A, &p), Err(Reject::NoSession));
    settle(180_000, &mut a, &mut b);
    assert!(a.seal(180_000, B_AT_A, &p).is_ok());
    // Removing the peer drops its sessions at once.
    b.ep.set_peer(A_AT_B, None).unwrap();
    let buf = a.seal(180_001, B_AT_A, &p).unwrap();
    b.receive(180_001, buf, 0, None);
    assert_eq!(b.dropped(Reject::UnknownSession), 2);
    assert!(b.ep.peer_status(0, A_AT_B).is_none());
}

#[test]
fn peer_configuration_errors_name_the_peer_and_the_fix() {
    let (mut a, b) = pair();
    let own = a.ep.public_key();
    let e =
        a.ep.set_peer(
            1,
            Some(PeerConfig {
                public_key: own,
                psk: None,
            }),
        )
        .unwrap_err();
    assert!(e.to_string().contains("this host's own key"), "{e}");
    let e =
        a.ep.set_peer(
            2,
            Some(PeerConfig {
                public_key: b.ep.public_key(),
                psk: None,
            }),
        )
        .unwrap_err();
    assert_eq!(
        e,
        PeerError::Duplicate {
            id: 2,
            key: b.ep.public_key(),
            other: B_AT_A
        }
    );
    assert!(e.to_string().contains("dnetctl keygen"), "{e}");
    assert!(matches!(
        a.ep.set_peer(16, None),
        Err(PeerError::OutOfRange {
            id: 16,
            capacity: 16
        })
    ));
    // Setting the same peer again keeps its sessions.
    let (mut a, mut b) = pair();
    establish(0, &mut a, &mut b);
    a.peer(B_AT_A, b.ep.public_key());
    assert!(a.seal(0, B_AT_A, &[packet(1, 64)]).is_ok());
}

#[test]
fn workers_sealing_one_session_at_once_never_share_a_counter() {
    let (mut a, mut b) = pair();
    establish(0, &mut a, &mut b);
    let runs: Vec<Vec<u8>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..4)
            .map(|w| {
                let s = a.s.clone();
                sc.spawn(move || {
                    let mut out = Vec::new();
                    for r in 0..50u32 {
                        let seg = 200 + OVERHEAD;
                        let mut buf = vec![0u8; seg * 8];
                        for (i, d) in buf.chunks_mut(seg).enumerate() {
                            d[HEADER_LEN..seg - TAG_LEN]
                                .copy_from_slice(&packet(w * 10_000 + r * 8 + i as u32, 200));
                        }
                        s.seal_run(0, B_AT_A, &mut buf, seg).unwrap();
                        out.push(buf);
                    }
                    out
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    for r in runs {
        b.receive(0, r, 200 + OVERHEAD, None);
    }
    assert_eq!(b.got.len(), 4 * 50 * 8);
    assert_eq!(b.dropped(Reject::Replayed), 0);
}
