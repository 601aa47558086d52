//! The encrypted GRE-in-UDP receive path (`dnet-crypto`): arbitrary bytes into
//! `Sessions::open_run` and `Endpoint::handle_handshake` never panic, and nothing that was
//! not sealed by the peer is ever delivered, nor anything twice.
//!
//! Byte 0 picks a mode (low 2 bits); the rest is its input:
//! - 0, raw datagrams: records `[segment u16 LE][len u16 LE][bytes]`, each opened by host B
//!   as one (possibly coalesced) receive, with the handshake messages in it handed to B's
//!   endpoint;
//! - 1, raw handshake messages: records `[len u8][bytes]`, each to A's and B's endpoints,
//!   with the 4-byte type word of an initiation or response put first when the record's
//!   first byte is odd (so the fuzzer reaches the mac1 and length checks);
//! - 2, forged traffic: A seals a run of datagrams (count and size from the input), then
//!   the input flips bytes (`[pos u16 LE][xor u8]` records after a 4-byte prefix), drops,
//!   duplicates and reorders datagrams, and B opens the result with a segment size from the
//!   input. Every datagram B delivers must be one A sealed, byte for byte and at most once;
//!   one with a flipped byte anywhere must not be delivered;
//! - 3, timers: fresh hosts (AES-256-GCM if the first byte is odd, else ChaCha20-Poly1305),
//!   then records `[op u8][arg u16 LE]` advancing the clock, running
//!   `handle_timeout`, moving, dropping or corrupting handshake messages between them, and
//!   sealing data; the state machine never panics and its deadlines never go back in time.
//!
//! Modes 0–2 share one established pair of hosts across inputs (a handshake costs more
//! than most inputs), so their replay windows carry over; mode 3 builds its own.
#![no_main]

use dnet_crypto::wire::{self, HEADER_LEN, MAX_MESSAGE_LEN, OVERHEAD, TAG_LEN};
use dnet_crypto::{CipherPreference, Config, Endpoint, Limits, PeerConfig, PrivateKey, Received};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

struct Pair {
    a: Endpoint,
    b: Endpoint,
}

const A_AT_B: u16 = 0;
const B_AT_A: u16 = 1;

fn hosts(cipher: CipherPreference) -> Pair {
    let (ka, kb) = (
        PrivateKey::from_bytes([1; 32]),
        PrivateKey::from_bytes([2; 32]),
    );
    let (pa, pb) = (ka.public_key(), kb.public_key());
    let cfg = |k| Config {
        private_key: k,
        capacity: 4,
        cipher,
        wall_clock_at_zero: 1_750_000_000_000,
        limits: Limits::default(),
    };
    let mut a = Endpoint::new(cfg(ka));
    let mut b = Endpoint::new(cfg(kb));
    let peer = |k| {
        Some(PeerConfig {
            public_key: k,
            psk: None,
        })
    };
    a.set_peer(B_AT_A, peer(pb)).unwrap();
    b.set_peer(A_AT_B, peer(pa)).unwrap();
    Pair { a, b }
}

/// Everything `from` sends, handed to `to` (the handshake part of a receive).
fn deliver(now: u64, from: &mut Endpoint, to: &mut Endpoint) {
    let mut buf = [0u8; MAX_MESSAGE_LEN];
    while let Some(t) = from.poll_transmit(now, &mut buf) {
        assert!(t.len <= MAX_MESSAGE_LEN);
        receive(now, to, &mut buf[..t.len].to_vec(), 0, None);
    }
}

/// A receive at `to`: data delivered is returned, handshakes go to its endpoint.
fn receive(
    now: u64,
    to: &mut Endpoint,
    buf: &mut [u8],
    seg: usize,
    hint: Option<u16>,
) -> Vec<Vec<u8>> {
    let s = to.sessions().clone();
    let len = buf.len();
    let mut hs = Vec::new();
    let mut got = Vec::new();
    let mut n = 0;
    let c = s.open_run(now, buf, seg, hint, |r| {
        n += 1;
        match r {
            Received::Data { packet, .. } => got.push(packet.to_vec()),
            Received::Handshake(m) => hs.push(m.to_vec()),
            Received::Keepalive { .. } | Received::Rejected(_) => {}
        }
    });
    // One outcome per datagram.
    let per = if seg == 0 || seg >= len {
        len.max(1)
    } else {
        seg
    };
    assert_eq!(n, len.div_ceil(per), "one outcome per datagram");
    let dropped: u64 = c.drops.iter().sum();
    assert!(dropped as usize + got.len() <= n);
    for m in hs {
        let _ = to.handle_handshake(now, &m);
    }
    got
}

fn shared() -> &'static Mutex<Pair> {
    static PAIR: OnceLock<Mutex<Pair>> = OnceLock::new();
    PAIR.get_or_init(|| {
        let mut p = hosts(CipherPreference::Auto);
        p.a.connect(0, B_AT_A);
        for _ in 0..2 {
            deliver(0, &mut p.a, &mut p.b);
            deliver(0, &mut p.b, &mut p.a);
        }
        assert!(p.a.peer_status(0, B_AT_A).unwrap().session.is_some());
        Mutex::new(p)
    })
}

fn u16_at(d: &[u8], i: usize) -> usize {
    usize::from(u16::from_le_bytes([
        d.get(i).copied().unwrap_or(0),
        d.get(i + 1).copied().unwrap_or(0),
    ]))
}

fn raw(p: &mut Pair, mut d: &[u8]) {
    while d.len() >= 4 {
        let seg = u16_at(d, 0);
        let len = u16_at(d, 2).min(d.len() - 4);
        let mut buf = d[4..4 + len].to_vec();
        d = &d[4 + len..];
        let hint = (seg & 1 == 1).then_some(A_AT_B);
        receive(0, &mut p.b, &mut buf, seg, hint);
    }
    // Whatever B answered goes to A.
    deliver(0, &mut p.b, &mut p.a);
}

fn handshakes(p: &mut Pair, mut d: &[u8]) {
    while let Some((&len, rest)) = d.split_first() {
        let len = usize::from(len).min(rest.len());
        let mut m = rest[..len].to_vec();
        d = &rest[len..];
        if m.first().is_some_and(|b| b & 1 == 1) && m.len() >= 4 {
            let w = if m[0] & 2 == 0 {
                wire::INITIATION
            } else {
                wire::RESPONSE
            };
            m[..4].copy_from_slice(&w);
        }
        for e in [&mut p.a, &mut p.b] {
            // Made-up bytes cannot pass Noise.
            assert!(
                e.handle_handshake(0, &m).is_err(),
                "a made-up handshake message was accepted"
            );
        }
    }
}

fn forged(p: &mut Pair, d: &[u8]) {
    if d.len() < 4 {
        return;
    }
    let count = usize::from(d[0] % 8) + 1;
    let plen = u16_at(d, 1) % 1600;
    let shuffle = d[3];
    let seg = plen + OVERHEAD;
    let mut buf = vec![0u8; seg * count];
    let mut sealed = HashMap::new();
    for (i, c) in buf.chunks_mut(seg).enumerate() {
        for (j, b) in c[HEADER_LEN..seg - TAG_LEN].iter_mut().enumerate() {
            *b = (i * 7 + j) as u8 ^ shuffle;
        }
    }
    let plain: Vec<Vec<u8>> = buf
        .chunks(seg)
        .map(|c| c[HEADER_LEN..seg - TAG_LEN].to_vec())
        .collect();
    p.a.sessions().seal_run(0, B_AT_A, &mut buf, seg).unwrap();
    let mut dgrams: Vec<Vec<u8>> = buf.chunks(seg).map(<[u8]>::to_vec).collect();
    for (i, g) in dgrams.iter().enumerate() {
        sealed.insert(plain[i].clone(), (i, false));
        assert_eq!(wire::classify(g), wire::Kind::Data);
    }
    let original = dgrams.clone();
    let mut r = &d[4..];
    let mut order: Vec<usize> = (0..count).collect();
    while r.len() >= 3 {
        let pos = u16_at(r, 0);
        let x = r[2];
        r = &r[3..];
        if pos & 0x8000 != 0 {
            // Reorder/duplicate/drop: pos's low bits pick an op.
            match pos % 3 {
                0 if !order.is_empty() => {
                    let k = usize::from(x) % order.len();
                    order.push(order[k]);
                }
                1 if !order.is_empty() => {
                    let k = usize::from(x) % order.len();
                    order.remove(k);
                }
                _ => {
                    let k = usize::from(x) % order.len().max(1);
                    order.rotate_left(k);
                }
            }
        } else {
            let i = pos / seg % count;
            dgrams[i][pos % seg] ^= x;
        }
    }
    // Flips may cancel out: what counts is whether the bytes differ.
    let flipped: Vec<bool> = dgrams.iter().zip(&original).map(|(d, o)| d != o).collect();
    let mut wire_buf: Vec<u8> = order.iter().flat_map(|&i| dgrams[i].clone()).collect();
    let got = receive(0, &mut p.b, &mut wire_buf, seg, None);
    for g in got {
        let e = sealed
            .get_mut(&g)
            .expect("B delivered a packet A never sealed");
        assert!(!flipped[e.0], "B delivered a datagram with a flipped byte");
        assert!(!e.1, "B delivered a datagram twice");
        e.1 = true;
    }
}

fn timers(d: &[u8]) {
    let mut p = hosts(if d.first().is_some_and(|b| b & 1 == 1) {
        CipherPreference::Aes256Gcm
    } else {
        CipherPreference::ChaCha20Poly1305
    });
    let mut now = 0u64;
    let mut in_flight: Vec<(bool, Vec<u8>)> = Vec::new();
    let mut buf = [0u8; MAX_MESSAGE_LEN];
    for r in d.get(1..).unwrap_or_default().chunks_exact(3) {
        let arg = u16_at(r, 1);
        match r[0] % 8 {
            0 => now += arg as u64 * 10,
            1 | 2 => {
                let (e, to_b) = if r[0] % 8 == 1 {
                    (&mut p.a, true)
                } else {
                    (&mut p.b, false)
                };
                e.handle_timeout(now);
                if let Some(t) = e.poll_timeout() {
                    assert!(t > now, "handle_timeout({now}) left a deadline due: {t}");
                }
                while let Some(t) = e.poll_transmit(now, &mut buf) {
                    in_flight.push((to_b, buf[..t.len].to_vec()));
                }
            }
            3 | 4 if !in_flight.is_empty() => {
                let (to_b, mut m) = in_flight.remove(arg % in_flight.len());
                if r[0] % 8 == 4 && !m.is_empty() {
                    let k = arg % m.len();
                    m[k] ^= (arg >> 8) as u8 | 1;
                }
                let e = if to_b { &mut p.b } else { &mut p.a };
                receive(now, e, &mut m, 0, None);
            }
            5 => {
                let (e, peer) = if arg & 1 == 0 {
                    (&mut p.a, B_AT_A)
                } else {
                    (&mut p.b, A_AT_B)
                };
                let n = (arg >> 1) % 4 + 1;
                let mut run = vec![0u8; n * (64 + OVERHEAD)];
                if e.sessions()
                    .seal_run(now, peer, &mut run, 64 + OVERHEAD)
                    .is_ok()
                {
                    in_flight.push((peer == B_AT_A, run));
                }
            }
            6 => {
                let e = if arg & 1 == 0 { &mut p.a } else { &mut p.b };
                e.connect(now, if arg & 1 == 0 { B_AT_A } else { A_AT_B });
            }
            _ => {
                in_flight.clear();
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        3 => timers(rest),
        m => {
            let mut p = shared().lock().unwrap_or_else(|e| e.into_inner());
            match m {
                0 => raw(&mut p, rest),
                1 => handshakes(&mut p, rest),
                _ => forged(&mut p, rest),
            }
        }
    }
});
