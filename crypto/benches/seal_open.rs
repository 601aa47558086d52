//! Sealing and opening GRE-in-UDP datagrams through the data-path API, as the switch will:
//! one 1448-byte datagram (a full-size TCP segment's GRE packet), and a 64 KiB run of 45 of
//! them (a UDP GSO send / UDP GRO receive), under ChaCha20-Poly1305 and AES-256-GCM.
//!
//! `cargo bench -p dnet-crypto --bench seal_open`
//!
//! Times are the bench thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time: on a
//! shared machine wall time also counts the time the thread waited for a core, which says
//! nothing about the code. On an idle core the two agree (the work is single-threaded and
//! does no I/O). `ring-seal` is ring's AEAD alone, for the API's own cost.

use cpu_time::ThreadTime;
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use dnet_crypto::wire::{HEADER_LEN, MAX_MESSAGE_LEN, OVERHEAD, TAG_LEN};
use dnet_crypto::{
    CipherPreference, Config, Endpoint, Limits, PeerConfig, PrivateKey, Received, Sessions,
};
use ring::aead;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

/// Criterion's measurement as the bench thread's CPU time.
struct ThreadCpu;

/// For its formatter (durations are durations, whichever clock measured them).
static WALL: WallTime = WallTime;

impl Measurement for ThreadCpu {
    type Intermediate = ThreadTime;
    type Value = Duration;

    fn start(&self) -> ThreadTime {
        ThreadTime::now()
    }

    fn end(&self, i: ThreadTime) -> Duration {
        i.elapsed()
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        WALL.formatter()
    }
}

const LEN: usize = 1448;
const SEG: usize = LEN + OVERHEAD;

/// Two endpoints with a session using `cipher`: (sender's sessions, receiver's sessions).
fn session(cipher: CipherPreference) -> (Arc<Sessions>, Arc<Sessions>) {
    let (ka, kb) = (
        PrivateKey::generate().unwrap(),
        PrivateKey::generate().unwrap(),
    );
    let cfg = |k: PrivateKey| Config {
        private_key: k,
        capacity: 2,
        cipher,
        wall_clock_at_zero: 1_750_000_000_000,
        limits: Limits::default(),
    };
    let (pa, pb) = (ka.public_key(), kb.public_key());
    let mut a = Endpoint::new(cfg(ka));
    let mut b = Endpoint::new(cfg(kb));
    let peer = |k| {
        Some(PeerConfig {
            public_key: k,
            psk: None,
        })
    };
    a.set_peer(1, peer(pb)).unwrap();
    b.set_peer(0, peer(pa)).unwrap();
    a.connect(0, 1);
    // Initiation, response, keepalive.
    for _ in 0..2 {
        deliver(&mut a, &mut b);
        deliver(&mut b, &mut a);
    }
    let (sa, sb) = (a.sessions().clone(), b.sessions().clone());
    let info = a.peer_status(0, 1).unwrap().session.expect("a session");
    assert_eq!(
        info.cipher.name(),
        match cipher {
            CipherPreference::Aes256Gcm => "aes-256-gcm",
            _ => "chacha20-poly1305",
        }
    );
    (sa, sb)
}

/// Hands everything `from` has to send to `to`.
fn deliver(from: &mut Endpoint, to: &mut Endpoint) {
    let mut buf = [0u8; MAX_MESSAGE_LEN];
    while let Some(t) = from.poll_transmit(0, &mut buf) {
        let mut m = buf[..t.len].to_vec();
        let s = to.sessions().clone();
        let mut hs = Vec::new();
        s.open_run(0, &mut m, 0, None, |r| {
            if let Received::Handshake(h) = r {
                hs.push(h.to_vec());
            }
        });
        for h in hs {
            to.handle_handshake(0, &h).unwrap();
        }
    }
}

/// A run of `n` datagrams with room for header and tag around each packet.
fn run(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n * SEG];
    for (i, d) in buf.chunks_mut(SEG).enumerate() {
        for (j, b) in d[HEADER_LEN..SEG - TAG_LEN].iter_mut().enumerate() {
            *b = (i + j) as u8;
        }
    }
    buf
}

fn bench(c: &mut Criterion<ThreadCpu>) {
    for (name, cipher) in [
        ("chacha20-poly1305", CipherPreference::ChaCha20Poly1305),
        ("aes-256-gcm", CipherPreference::Aes256Gcm),
    ] {
        let (tx, rx) = session(cipher);
        // The AEAD alone, for the API's overhead (header, lookup, counter, replay window).
        let mut g = c.benchmark_group(format!("ring-seal/1x{LEN}"));
        g.throughput(Throughput::Bytes(LEN as u64));
        let alg = match cipher {
            CipherPreference::Aes256Gcm => &aead::AES_256_GCM,
            _ => &aead::CHACHA20_POLY1305,
        };
        let key = aead::LessSafeKey::new(aead::UnboundKey::new(alg, &[7; 32]).unwrap());
        let mut p = vec![0u8; LEN];
        let mut ctr = 0u64;
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                ctr += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&ctr.to_le_bytes());
                let n = aead::Nonce::assume_unique_for_key(nonce);
                black_box(key.seal_in_place_separate_tag(n, aead::Aad::empty(), &mut p))
            })
        });
        g.finish();
        for n in [1usize, 45] {
            let mut g = c.benchmark_group(format!("seal/{n}x{LEN}"));
            g.throughput(Throughput::Bytes((n * LEN) as u64));
            let mut buf = run(n);
            g.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| {
                    let k = tx.seal_run(0, 1, black_box(&mut buf), SEG).unwrap();
                    black_box(k)
                })
            });
            g.finish();

            let mut g = c.benchmark_group(format!("open/{n}x{LEN}"));
            g.throughput(Throughput::Bytes((n * LEN) as u64));
            // Each open needs datagrams with fresh counters: sealed in the (untimed) setup.
            let plain = run(n);
            g.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter_batched_ref(
                    || {
                        let mut s = plain.clone();
                        tx.seal_run(0, 1, &mut s, SEG).unwrap();
                        s
                    },
                    |s| {
                        let mut got = 0;
                        rx.open_run(0, s, SEG, None, |r| {
                            if let Received::Data { packet, .. } = r {
                                got += packet.len();
                            }
                        });
                        assert_eq!(got, n * LEN);
                    },
                    BatchSize::SmallInput,
                )
            });
            g.finish();
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = bench
}
criterion_main!(benches);
