//! Per-frame costs of dnet's data path without I/O: the GRE codec, a MAC table lookup in a full
//! table, and the whole per-frame pipeline in both directions (TAP → learn → lookup → GRE
//! encap; GRE decap → learn → lookup → TAP). Reported as elements (frames) per second;
//! full-crossing counts one element per frame for both halves. Also the per-frame offloads
//! (TCP segmentation, TCP and UDP coalescing, MSS clamping, the flow hash), each fed what a
//! worker feeds it.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dnet::offload::gro::{Add, Gro};
use dnet::offload::udp_gro::UdpGro;
use dnet::offload::{gso, MAX_HEADERS};
use dnet::switch::tunnel::{decap, GreOptions, PeerTable};
use dnet::switch::{pmtu, tunnel::flow_hash};
use dnet::switch::{Action, FdbKey, Switch};
use dnet::wire::checksum::{accumulate, finish};
use dnet::wire::gre;
use dnet::wire::vnet::{self, VnetHdr};
use dnet_benches::{frame, learned_switch, mac};
use std::net::Ipv4Addr;

const STATIONS: u32 = 8192;
const BATCH: usize = 1024;

/// Frames between random-ish pairs of learned stations: src behind `src_even` side.
fn frames(src_even: bool) -> Vec<Vec<u8>> {
    (0..BATCH as u32)
        .map(|i| {
            let a = (i.wrapping_mul(2_654_435_761) % (STATIONS / 2)) * 2;
            let b = (i.wrapping_mul(40_503) % (STATIONS / 2)) * 2 + 1;
            if src_even {
                frame(mac(b), mac(a))
            } else {
                frame(mac(a), mac(b))
            }
        })
        .collect()
}

/// Outer IPv4 + GRE around `inner`, as a raw socket would deliver it from 10.200.0.1.
fn outer(inner: &[u8], opts: &GreOptions) -> Vec<u8> {
    let repr = opts.repr(0);
    let total = 20 + repr.header_len() + inner.len();
    let mut p = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        47,
        0,
        0,
    ];
    p.extend_from_slice(&[10, 200, 0, 1, 10, 200, 0, 2]);
    let mut h = [0u8; gre::MAX_HEADER_LEN];
    repr.emit(&mut h, inner);
    p.extend_from_slice(&h[..repr.header_len()]);
    p.extend_from_slice(inner);
    p
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("gre");
    g.throughput(Throughput::Elements(1));
    let inner = frame(mac(1), mac(2));
    for (name, opts) in [
        ("plain", GreOptions::default()),
        (
            "key",
            GreOptions {
                key: Some(42),
                ..GreOptions::default()
            },
        ),
        (
            "key+csum+seq",
            GreOptions {
                key: Some(42),
                csum: true,
                seq: true,
                udp_port: None,
            },
        ),
    ] {
        let pkt = outer(&inner, &opts);
        let gre_part = pkt[20..].to_vec();
        g.bench_function(format!("parse/{name}"), |b| {
            b.iter(|| {
                let p = gre::Packet::new_checked(black_box(&gre_part[..])).unwrap();
                black_box(gre::Repr::parse(&p).unwrap())
            })
        });
        let repr = opts.repr(7);
        let mut hdr = [0u8; gre::MAX_HEADER_LEN];
        g.bench_function(format!("emit/{name}"), |b| {
            b.iter(|| repr.emit(black_box(&mut hdr), black_box(&inner)))
        });
    }
    g.finish();
}

fn internet_checksum(c: &mut Criterion) {
    // One MSS segment and a whole TCP super-frame: what segmentation and coalescing sum.
    let mut g = c.benchmark_group("checksum");
    for len in [1448usize, 65_000] {
        let data: Vec<u8> = (0..len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("{len}B"), |b| {
            b.iter(|| dnet::wire::checksum::checksum(&[black_box(&data)]))
        });
    }
    // The incremental update (RFC 1624) that replaces a full sum when one field changes.
    g.throughput(Throughput::Elements(1));
    g.bench_function("update16", |b| {
        b.iter(|| dnet::wire::checksum::update16(black_box(0xdd2f), black_box(0x5555), 0x3285))
    });
    g.bench_function("update32", |b| {
        b.iter(|| {
            dnet::wire::checksum::update32(black_box(0xdd2f), black_box(0x0102_0304), 0x0a0b_0c0d)
        })
    });
    g.finish();
}

fn fdb(c: &mut Criterion) {
    let s = learned_switch(2, STATIONS);
    let keys: Vec<FdbKey> = (0..BATCH as u32)
        .map(|i| FdbKey::new(mac(i.wrapping_mul(2_654_435_761) % STATIONS), 0))
        .collect();
    let mut g = c.benchmark_group("fdb");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("lookup/8192", |b| {
        b.iter(|| {
            for k in &keys {
                black_box(s.fdb().lookup(*k, 1));
            }
        })
    });
    g.finish();
}

/// The receive direction over `rx`: decap → learn → lookup for each packet.
fn rx_frames(s: &mut Switch, rx: &[Vec<u8>], peers: &PeerTable, opts: &GreOptions) {
    for p in rx {
        let (port, inner) = decap(black_box(p), peers, opts).unwrap();
        let v = s.handle(1, port, inner);
        debug_assert_eq!(v.action, Action::Forward(0));
        black_box(v);
    }
}

/// The send direction over `tx`: learn → lookup → GRE encap (header into a side buffer; the
/// frame is not copied).
fn tx_frames(s: &mut Switch, tx: &[Vec<u8>], opts: &GreOptions) {
    let mut hdr = [0u8; gre::MAX_HEADER_LEN];
    for f in tx {
        let v = s.handle(1, 0, black_box(f));
        if let Action::Forward(_) = v.action {
            opts.repr(0).emit(&mut hdr, f);
        }
        black_box(&hdr);
    }
}

fn pipeline(c: &mut Criterion) {
    let opts = GreOptions::default();
    let mut peers = PeerTable::default();
    peers.insert(Ipv4Addr::new(10, 200, 0, 1), 1);
    peers.insert(Ipv4Addr::new(10, 200, 0, 3), 2);
    let rx: Vec<Vec<u8>> = frames(false).iter().map(|f| outer(f, &opts)).collect();
    let tx = frames(true);

    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BATCH as u64));

    // Steady state, as in a running worker: one switch whose table of 8192 stations stays
    // in its core's caches while frames between random pairs of them go by.
    // GRE from peer 1 → decap → learn → lookup → TAP; with `stp`, every frame also reads
    // its ports' tree states (tunnels outside the tree read forwarding, so the work is the
    // same apart from those loads).
    for (name, stp) in [
        ("decap+learn+lookup/8192", false),
        ("decap+learn+lookup/8192/stp", true),
    ] {
        let mut s = learned_switch(2, STATIONS);
        if stp {
            s.set_stp(std::sync::Arc::new(dnet::switch::stp::Shared::new(
                Default::default(),
                [2, 0, 0, 0, 0, 1],
            )));
        }
        g.bench_function(name, |b| b.iter(|| rx_frames(&mut s, &rx, &peers, &opts)));
    }
    let mut s = learned_switch(2, STATIONS);
    g.bench_function("learn+lookup+encap/8192", |b| {
        b.iter(|| tx_frames(&mut s, &tx, &opts))
    });

    // Cold: a freshly built table per batch of iterations, so most of it has left this
    // core's caches by the time its frames come (the worst case: a table of stations that
    // have been quiet for a while). The figure earlier sessions reported.
    g.bench_function("decap+learn+lookup/8192/cold", |b| {
        b.iter_batched_ref(
            || learned_switch(2, STATIONS),
            |s| rx_frames(s, &rx, &peers, &opts),
            BatchSize::LargeInput,
        )
    });

    // Both halves for one frame crossing a tunnel: encap on one switch, decap on the other.
    let (mut a, mut bsw) = (learned_switch(2, STATIONS), learned_switch(2, STATIONS));
    g.bench_function("full-crossing/8192", |b| {
        b.iter(|| {
            tx_frames(&mut a, &tx, &opts);
            rx_frames(&mut bsw, &rx, &peers, &opts);
        })
    });
    g.finish();
}

/// An Ethernet/IPv4/TCP frame (timestamp option, DF) carrying `payload`, checksums valid;
/// `flags` is the TCP flags byte and `opts` the 12 option bytes.
fn tcp4(seq: u32, flags: u8, opts: [u8; 12], payload: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let tot = 20 + 32 + payload.len();
    f.extend_from_slice(&[
        0x45,
        0,
        (tot >> 8) as u8,
        tot as u8,
        0x12,
        0x34,
        0x40,
        0,
        64,
        6,
    ]);
    f.extend_from_slice(&[0, 0, 10, 77, 0, 1, 10, 77, 0, 2, 0x9c, 0x40, 0x13, 0x89]);
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x10, 0x01, 0x80, flags, 0x01, 0xf5, 0, 0, 0, 0]);
    f.extend_from_slice(&opts);
    f.extend_from_slice(payload);
    let c = finish(accumulate(0, &f[14..34]));
    f[24..26].copy_from_slice(&c.to_be_bytes());
    let sum = accumulate(0, &f[26..34]) + 6 + (f.len() - 34) as u64;
    let c = finish(accumulate(sum, &f[34..]));
    f[50..52].copy_from_slice(&c.to_be_bytes());
    f
}

/// An Ethernet/IPv4/UDP datagram (DF, valid checksums) from source port `sport`.
fn udp4(id: u16, sport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let ulen = 8 + payload.len();
    let tot = 20 + ulen;
    f.extend_from_slice(&[0x45, 0, (tot >> 8) as u8, tot as u8]);
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&[0x40, 0, 64, 17, 0, 0, 10, 77, 0, 1, 10, 77, 0, 2]);
    let c = finish(accumulate(0, &f[14..34]));
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&[0x1e, 0x61, (ulen >> 8) as u8, ulen as u8, 0, 0]);
    f.extend_from_slice(payload);
    let sum = accumulate(0, &f[26..34]) + 17 + ulen as u64;
    let c = finish(accumulate(sum, &f[34..]));
    f[40..42].copy_from_slice(&c.to_be_bytes());
    f
}

const TS_OPTS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0x30, 0x39, 0, 0, 0x10, 0x92];

/// Adds every frame to a run, flushing as the worker does; returns the runs closed.
fn coalesce<'a>(g: &mut Gro<'a>, frames: &'a [Vec<u8>]) -> usize {
    let mut head = [0u8; vnet::LEN + MAX_HEADERS];
    let mut runs = 0;
    for f in frames {
        if g.add(f) != Add::Added {
            runs += 1;
            black_box(g.finish(&mut head));
            if g.add(f) != Add::Added {
                unreachable!("a bench segment starts a run");
            }
        }
    }
    black_box(g.finish(&mut head));
    runs + 1
}

fn offload(c: &mut Criterion) {
    let mut g = c.benchmark_group("offload");
    // TSO: a 64 KiB super-frame from the TAP cut into 1448-byte segments (46 of them), headers
    // fixed up and TCP checksums computed over each payload. One element per segment.
    let data: Vec<u8> = (0..64_000u32).map(|i| (i * 7 + 3) as u8).collect();
    let sup = tcp4(1000, 0x18, TS_OPTS, &data);
    let h = VnetHdr {
        flags: vnet::F_NEEDS_CSUM,
        gso_type: vnet::gso::TCPV4,
        gso_size: 1448,
        ..VnetHdr::default()
    };
    let mut segs: Vec<Vec<u8>> = Vec::new();
    let n = gso::segment(&sup, &h, |hd, pl| segs.push([hd, pl].concat())).unwrap();
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("gso/segment/64KiB", |b| {
        b.iter(|| {
            gso::segment(black_box(&sup), &h, |hd, pl| {
                black_box((hd, pl));
            })
        })
    });
    // GRO: those segments (checksums verified, headers compared) back into one super-frame.
    g.bench_function("gro/coalesce/64KiB", |b| {
        b.iter(|| coalesce(&mut Gro::new(), black_box(&segs)))
    });
    // UDP GRO: runs of 32 small datagrams (64-byte payloads) of one flow.
    let dgrams: Vec<Vec<u8>> = (0..BATCH as u16)
        .map(|i| udp4(i, 5000 + i / 32, &[i as u8; 64]))
        .collect();
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("udp_gro/coalesce/64B", |b| {
        b.iter(|| {
            let mut u = UdpGro::new();
            let mut head = [0u8; vnet::LEN + MAX_HEADERS];
            for d in black_box(&dgrams) {
                if u.add(d) != Add::Added {
                    black_box(u.finish(&mut head));
                    let _ = u.add(d);
                }
            }
            black_box(u.finish(&mut head));
        })
    });
    g.throughput(Throughput::Elements(1));
    // MSS clamp on every frame from the TAP: mostly data segments (a flag test), and a SYN
    // whose MSS option is rewritten (the option walk and the incremental checksum).
    g.bench_function("clamp_mss/data", |b| {
        let mut f = segs[0].clone();
        b.iter(|| black_box(pmtu::clamp_mss(black_box(&mut f), 1400)))
    });
    let syn = tcp4(1, 0x02, [1, 1, 1, 1, 2, 4, 0x05, 0xb4, 1, 3, 3, 7], &[]);
    g.bench_function("clamp_mss/syn", |b| {
        let mut f = syn.clone();
        b.iter(|| {
            f.copy_from_slice(&syn);
            black_box(pmtu::clamp_mss(black_box(&mut f), 1400))
        })
    });
    // The GRE-in-UDP source port of each frame: addresses, protocol and ports hashed.
    g.bench_function("flow_hash/tcp4", |b| {
        b.iter(|| black_box(flow_hash(black_box(&segs[0]))))
    });
    g.finish();
}

criterion_group!(benches, codec, internet_checksum, fdb, pipeline, offload);
criterion_main!(benches);
