//! Whole cores in memory: hosts joined back to back by in-memory "tunnels" that carry the GRE
//! bytes each core produced, with the clock stepped by hand (boringtun's `create_two_tuns`
//! shape). No socket, no sleep.

use super::*;
use crate::switch::liveness::PeerState;
use crate::wire::checksum::{accumulate, finish};
use crate::wire::ethernet::MacAddr;

/// Underlay address of host `h`.
fn host(h: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 200, 0, h as u8 + 1)
}

fn mac(h: usize, n: u8) -> [u8; 6] {
    [0x02, 0x77, 0, 0, h as u8 + 1, n]
}

fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 packet (header checksum filled in) carrying `payload`.
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, df: bool, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 1, if df { 0x40 } else { 0 }, 0, 64, proto, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let c = finish(accumulate(0, &p));
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// A TCP segment (checksum filled in) from `src:1000` to `dst:2000` with sequence number `seq`.
fn tcp(src: Ipv4Addr, dst: Ipv4Addr, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut t = vec![0x03, 0xe8, 0x07, 0xd0];
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    let mut sum = accumulate(0, &src.octets());
    sum = accumulate(sum, &dst.octets());
    sum += 6 + t.len() as u64;
    let c = finish(accumulate(sum, &t));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

/// Container `n` of host `h`.
fn cip(h: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, h as u8 + 1)
}

/// What a sink was given: tunnel messages (port, outer DF off, GRE bytes) and TAP frames.
#[derive(Default)]
#[allow(clippy::type_complexity)]
struct MemSink {
    queued: Vec<(NetId, PortId, bool, Vec<u8>, usize, Option<u32>)>,
    sent: Vec<(PortId, bool, Vec<u8>)>,
    /// The network of each `sent` message.
    sent_net: Vec<NetId>,
    tap: Vec<Vec<u8>>,
    /// The network (TAP) of each `tap` frame.
    tap_net: Vec<NetId>,
    /// Room before the core must flush.
    cap: usize,
    /// What every send fares (default: sent).
    outcome: Option<SendOutcome>,
    /// Datagram lengths `fits` refused.
    unfit: Vec<usize>,
    /// `--encrypt`: seal with these sessions, at this time.
    seal: Option<(Arc<dnet_crypto::Sessions>, Millis)>,
    /// What sealing refused.
    refused: dnet_crypto::Counts,
}

impl MemSink {
    fn new() -> MemSink {
        MemSink {
            cap: 8,
            ..Default::default()
        }
    }
}

impl<'a> Sink<'a> for MemSink {
    fn push_tunnel(&mut self, msg: &TunnelMsg<'_>, payload: &'a [u8]) {
        assert!(self.queued.len() < self.cap, "pushed into a full sink");
        let mut g = vec![0u8; msg.gre.header_len()];
        msg.gre.emit_parts(&mut g, &[msg.headers, payload]);
        g.extend_from_slice(msg.headers);
        g.extend_from_slice(payload);
        let inner = msg.headers.len() + payload.len();
        if let (Some(peer), Some((sessions, now))) = (msg.seal, &self.seal) {
            let mut buf = vec![0u8; dnet_crypto::wire::HEADER_LEN];
            buf.extend_from_slice(&g);
            buf.resize(buf.len() + dnet_crypto::wire::TAG_LEN, 0);
            let len = buf.len();
            match sessions.seal_run(*now, peer, &mut buf, len) {
                Ok(_) => g = buf,
                Err(r) => {
                    self.refused.reject(r);
                    return;
                }
            }
        }
        self.queued
            .push((msg.net, msg.port, msg.fragmentable, g, inner, msg.path_mtu));
    }

    fn tunnel_full(&self) -> bool {
        self.queued.len() >= self.cap
    }

    fn tunnel_empty(&self) -> bool {
        self.queued.is_empty() && self.refused == dnet_crypto::Counts::default()
    }

    fn flush_tunnels(
        &mut self,
        mut done: impl FnMut(NetId, PortId, usize, SendOutcome),
    ) -> Flushed {
        for (net, port, frag, bytes, inner, mtu) in self.queued.drain(..) {
            if mtu.is_some_and(|m| bytes.len() + OUTER_IP_UDP > m as usize) {
                self.unfit.push(bytes.len());
            }
            let r = self.outcome.unwrap_or(SendOutcome::Sent);
            done(net, port, inner, r);
            if r == SendOutcome::Sent {
                self.sent.push((port, frag, bytes));
                self.sent_net.push(net);
            }
        }
        Flushed {
            crypto: std::mem::take(&mut self.refused),
            ..Flushed::default()
        }
    }

    fn write_tap(
        &mut self,
        net: NetId,
        head: &[u8],
        payloads: &[&[u8]],
    ) -> Result<(), TapWriteError> {
        let mut f = head.to_vec();
        for p in payloads {
            f.extend_from_slice(p);
        }
        self.tap.push(f);
        self.tap_net.push(net);
        Ok(())
    }
}

/// Hosts `0..n`, each one core (worker 0) with a tunnel to every host in `links`, joined by
/// in-memory tunnels.
struct Net {
    cores: Vec<Core>,
    /// `port[h][k]`: host `h`'s port toward host `k`.
    port: Vec<Vec<Option<PortId>>>,
    now: Millis,
    /// Tunnels that lose everything (`cut[h][k]`: from h to k).
    cut: Vec<Vec<bool>>,
    /// What reached each host's TAP.
    tap: Vec<Vec<Vec<u8>>>,
    udp: bool,
    /// `--encrypt`: each host's crypto core (crypto peer id of host k is k).
    crypto: Vec<Option<Crypto>>,
}

/// Host `h`'s static key, the same every run.
fn static_key(h: usize) -> dnet_crypto::PrivateKey {
    dnet_crypto::PrivateKey::from_bytes([h as u8 + 1; 32])
}

fn config(h: usize, udp: bool, f: &dyn Fn(&mut Config)) -> Config {
    let mut c = Config {
        id: 0,
        gre: GreOptions {
            udp_port: udp.then_some(tunnel::GRE_IN_UDP_PORT),
            ..Default::default()
        },
        df: true,
        vnet: false,
        udp_coalesce: false,
        nets: vec![NetConfig {
            key: Some(42),
            switch: switch::Config::default(),
        }],
    };
    let _ = h;
    f(&mut c);
    c
}

impl Net {
    fn new(n: usize, links: &[(usize, usize)], udp: bool, f: &dyn Fn(&mut Config)) -> Net {
        Net::build(n, links, udp, false, f)
    }

    /// Hosts that seal their tunnels, each knowing the others' public keys.
    fn encrypted(n: usize, links: &[(usize, usize)]) -> Net {
        Net::build(n, links, true, true, &|_| {})
    }

    fn build(
        n: usize,
        links: &[(usize, usize)],
        udp: bool,
        encrypt: bool,
        f: &dyn Fn(&mut Config),
    ) -> Net {
        let mut cores = Vec::new();
        let mut cryptos = Vec::new();
        let mut port = vec![vec![None; n]; n];
        #[allow(clippy::needless_range_loop)]
        for h in 0..n {
            let c = config(h, udp, f);
            let stp = c.nets[0]
                .switch
                .stp
                .map(|s| Arc::new(stp::Shared::new(s, mac(h, 0xfe))));
            let mut shared = Shared::new(vec![stp.clone()]);
            if encrypt {
                let mut e = dnet_crypto::Endpoint::new(dnet_crypto::Config {
                    private_key: static_key(h),
                    capacity: 64,
                    cipher: dnet_crypto::CipherPreference::Auto,
                    wall_clock_at_zero: 1_700_000_000_000,
                    limits: dnet_crypto::Limits::default(),
                });
                for k in (0..n).filter(|k| *k != h) {
                    let public_key = static_key(k).public_key();
                    e.set_peer(
                        k as dnet_crypto::PeerId,
                        Some(dnet_crypto::PeerConfig {
                            public_key,
                            psk: None,
                        }),
                    )
                    .unwrap();
                }
                shared.crypto = Some(Crypto::new(e));
            }
            cryptos.push(shared.crypto.clone());
            let mut core = Core::new(c, &shared, vec![Arc::default()], Arc::default());
            if encrypt {
                for k in (0..n).filter(|k| *k != h) {
                    core.set_host(host(k), Some(k as dnet_crypto::PeerId));
                }
            }
            let mut next: PortId = 1;
            for &(a, b) in links {
                let k = if a == h {
                    b
                } else if b == h {
                    a
                } else {
                    continue;
                };
                port[h][k] = Some(next);
                if let Some(s) = &stp {
                    s.with(|t| t.add_port(next));
                }
                core.set_port(0, next, Some(PortKind::Tunnel(host(k))));
                next += 1;
            }
            cores.push(core);
        }
        Net {
            cores,
            port,
            now: 0,
            cut: vec![vec![false; n]; n],
            tap: vec![Vec::new(); n],
            udp,
            crypto: cryptos,
        }
    }

    /// A sink for host `h` (sealing as its worker would).
    fn sink(&self, h: usize) -> MemSink {
        MemSink {
            seal: self.crypto[h]
                .as_ref()
                .map(|c| (c.sessions.clone(), self.now)),
            ..MemSink::new()
        }
    }

    fn peer_of(&self, h: usize, p: PortId) -> usize {
        self.port[h].iter().position(|x| *x == Some(p)).unwrap()
    }

    /// Delivers tunnel messages sent by host `h` to their peers, which handle them: each
    /// peer gets its messages as one receive burst.
    fn deliver(&mut self, h: usize, sent: Vec<(PortId, bool, Vec<u8>)>) {
        for k in 0..self.cores.len() {
            if self.cut[h][k] {
                continue;
            }
            let mut data: Vec<Vec<u8>> = sent
                .iter()
                .filter(|(p, _, _)| self.peer_of(h, *p) == k)
                .map(|(_, _, g)| {
                    if self.udp {
                        g.clone()
                    } else {
                        ipv4(host(h), host(k), 47, true, g)
                    }
                })
                .collect();
            if data.is_empty() {
                continue;
            }
            let mut out = self.sink(k);
            let burst = data.iter_mut().map(|d| Datagram {
                source: host(h),
                data: Payload::Owned(d),
                segment_size: None,
                truncated: false,
            });
            self.cores[k].handle_tunnel_datagrams(self.now, burst, &mut out);
            self.tap[k].append(&mut out.tap);
            self.deliver(k, out.sent);
        }
    }

    /// Host `h`'s TAP reads `frame`; everything it leads to is delivered.
    fn tap_reads(&mut self, h: usize, frame: &[u8]) {
        let mut f = frame.to_vec();
        let mut out = self.sink(h);
        self.cores[h].handle_tap_frames(self.now, 0, [&mut f[..]], &mut out);
        self.tap[h].append(&mut out.tap);
        self.deliver(h, out.sent);
        self.pump();
    }

    /// Runs every core's due timers and delivers the frames they made.
    fn pump(&mut self) {
        for h in 0..self.cores.len() {
            self.cores[h].handle_timeout(self.now);
            let mut buf = vec![0u8; outbox::MAX_FRAME];
            let mut sent = Vec::new();
            let mut raw = Vec::new();
            while let Some(t) = self.cores[h].poll_transmit(&mut buf) {
                match t.dest {
                    Dest::Tap => self.tap[h].push(buf[..t.len].to_vec()),
                    Dest::Handshake => raw.push((usize::from(t.port), buf[..t.len].to_vec())),
                    Dest::Tunnel { fragmentable } => {
                        let mut g = vec![0u8; t.gre.header_len()];
                        t.gre.emit_parts(&mut g, &[&buf[..t.len]]);
                        g.extend_from_slice(&buf[..t.len]);
                        if let (Some(peer), Some(c)) = (t.seal, &self.crypto[h]) {
                            let mut b = vec![0u8; dnet_crypto::wire::HEADER_LEN];
                            b.extend_from_slice(&g);
                            b.resize(b.len() + dnet_crypto::wire::TAG_LEN, 0);
                            let len = b.len();
                            if c.sessions.seal_run(self.now, peer, &mut b, len).is_err() {
                                continue;
                            }
                            g = b;
                        }
                        sent.push((t.port, fragmentable, g));
                    }
                }
                self.cores[h].handle_transmit_outcome(&t, SendOutcome::Sent);
            }
            self.deliver(h, sent);
            for (k, mut m) in raw {
                if self.cut[h][k] {
                    continue;
                }
                let mut out = self.sink(k);
                let d = Datagram {
                    source: host(h),
                    data: Payload::Owned(&mut m),
                    segment_size: None,
                    truncated: false,
                };
                self.cores[k].handle_tunnel_datagrams(self.now, [d], &mut out);
                self.tap[k].append(&mut out.tap);
                self.deliver(k, out.sent);
            }
        }
    }

    /// Steps the clock to `until` in `step` ms steps, running timers.
    fn run_until(&mut self, until: Millis, step: Millis) {
        while self.now < until {
            self.now = (self.now + step).min(until);
            self.pump();
        }
    }

    /// What host `h`'s encryption dropped.
    fn crypto_drops(&self, h: usize, why: dnet_crypto::Reject) -> u64 {
        self.cores[h].global_counters().crypto_drops[why as usize].get()
    }

    /// Drops of host `h`, its network's and the switch-wide ones.
    fn drops(&self, h: usize, why: DropReason) -> u64 {
        let c = &self.cores[h];
        c.counters(0).drops[why as usize].get() + c.global_counters().drops[why as usize].get()
    }

    fn events(&self, h: usize, what: Event) -> u64 {
        let c = &self.cores[h];
        c.counters(0).events[what as usize].get() + c.global_counters().events[what as usize].get()
    }
}

fn udp_frame(h: usize, dst_mac: [u8; 6], dst: Ipv4Addr, len: usize, df: bool) -> Vec<u8> {
    let mut udp = vec![0x30, 0x39, 0x30, 0x39, 0, 0, 0, 0];
    udp.resize(len, 0xab);
    let ulen = udp.len() as u16;
    udp[4..6].copy_from_slice(&ulen.to_be_bytes());
    eth(dst_mac, mac(h, 1), 0x0800, &ipv4(cip(h), dst, 17, df, &udp))
}

#[test]
fn two_cores_learn_flood_and_forward_over_either_encapsulation() {
    for udp in [false, true] {
        let mut net = Net::new(2, &[(0, 1)], udp, &|_| {});
        // a → broadcast: flooded to b's TAP, byte for byte.
        let bcast = udp_frame(0, [0xff; 6], Ipv4Addr::BROADCAST, 100, false);
        net.tap_reads(0, &bcast);
        assert_eq!(net.tap[1], vec![bcast.clone()], "udp={udp}");
        // b → a (learned behind the tunnel): unicast back to a's TAP.
        let reply = udp_frame(1, mac(0, 1), cip(0), 200, true);
        net.tap_reads(1, &reply);
        assert_eq!(net.tap[0], vec![reply.clone()]);
        // a → b again: b is known now; exactly one frame, no flood.
        let uni = udp_frame(0, mac(1, 1), cip(1), 300, true);
        net.tap_reads(0, &uni);
        assert_eq!(net.tap[1].len(), 2);
        assert_eq!(net.tap[1][1], uni);
        let c = net.cores[0].counters(0);
        assert_eq!(c.ports[1].tx_packets.get(), 2);
        assert_eq!(c.ports[1].rx_packets.get(), 1);
        assert_eq!(c.events[Event::Flood as usize].get(), 1);
        let fdb = net.cores[0].fdb_dump(0, net.now);
        assert!(fdb
            .entries
            .iter()
            .any(|(k, e)| k.mac() == MacAddr(mac(1, 1)) && e.port == 1));
    }
}

#[test]
fn split_horizon_keeps_tunnel_frames_off_other_tunnels() {
    let mut net = Net::new(3, &[(0, 1), (0, 2), (1, 2)], true, &|_| {});
    let bcast = udp_frame(0, [0xff; 6], Ipv4Addr::BROADCAST, 64, false);
    net.tap_reads(0, &bcast);
    assert_eq!(net.tap[1], vec![bcast.clone()]);
    assert_eq!(
        net.tap[2],
        vec![bcast],
        "each host once: no tunnel-to-tunnel copy"
    );
    for h in 0..3 {
        assert_eq!(net.drops(h, DropReason::UnknownPeer), 0);
    }
}

#[test]
fn frames_from_strangers_and_with_the_wrong_key_are_dropped_and_counted() {
    let mut net = Net::new(2, &[(0, 1)], false, &|_| {});
    let f = udp_frame(0, [0xff; 6], Ipv4Addr::BROADCAST, 64, false);
    let gre_hdr = |key: u32| {
        let mut g = vec![0x20, 0, 0x65, 0x58];
        g.extend_from_slice(&key.to_be_bytes());
        g.extend_from_slice(&f);
        g
    };
    let mut out = MemSink::new();
    let mut stranger = ipv4(
        Ipv4Addr::new(10, 200, 9, 9),
        host(1),
        47,
        true,
        &gre_hdr(42),
    );
    let mut stranger2 = stranger.clone();
    let mut wrong_key = ipv4(host(0), host(1), 47, true, &gre_hdr(7));
    let mut not_gre = ipv4(host(0), host(1), 17, true, &gre_hdr(42));
    let mut short = [0x45u8];
    fn d(data: &mut [u8]) -> Datagram<'_> {
        Datagram {
            source: host(0),
            data: data.into(),
            segment_size: None,
            truncated: false,
        }
    }
    let mut truncated = d(&mut stranger2[..]);
    truncated.truncated = true;
    net.cores[1].handle_tunnel_datagrams(
        0,
        [
            d(&mut stranger[..]),
            d(&mut wrong_key[..]),
            d(&mut not_gre[..]),
            truncated,
            d(&mut short),
        ],
        &mut out,
    );
    assert!(out.tap.is_empty() && out.sent.is_empty());
    assert_eq!(net.drops(1, DropReason::UnknownPeer), 1);
    assert_eq!(net.drops(1, DropReason::WrongKey), 1);
    assert_eq!(net.drops(1, DropReason::BadOuterIp), 2);
    assert_eq!(net.drops(1, DropReason::Oversize), 1);
}

#[test]
fn a_bpdu_from_the_tap_is_an_edge_bpdu_with_stp() {
    let mut net = Net::new(2, &[(0, 1)], true, &|c| {
        c.nets[0].switch.stp = Some(Default::default());
        c.nets[0].switch.split_horizon = false;
    });
    let bpdu = eth([0x01, 0x80, 0xc2, 0, 0, 0], mac(0, 9), 0x0026, &[0x42; 46]);
    net.tap_reads(0, &bpdu);
    assert_eq!(net.drops(0, DropReason::EdgeBpdu), 1);
    assert!(net.tap[1].is_empty());
}

/// A TCP super-frame as the TAP hands it over: virtio-net header (TCPv4, `mss`) + frame.
fn super_frame(h: usize, k: usize, payload: &[u8], mss: u16) -> Vec<u8> {
    let f = eth(
        mac(k, 1),
        mac(h, 1),
        0x0800,
        &ipv4(cip(h), cip(k), 6, true, &tcp(cip(h), cip(k), 1000, payload)),
    );
    let h = VnetHdr {
        flags: vnet::F_NEEDS_CSUM,
        gso_type: vnet::gso::TCPV4,
        hdr_len: 54,
        gso_size: mss,
        csum_start: 34,
        csum_offset: 16,
    };
    let mut b = vec![0u8; vnet::LEN];
    h.emit(&mut b);
    b.extend_from_slice(&f);
    b
}

#[test]
fn a_tcp_super_frame_is_cut_to_fit_the_path_and_coalesced_back_at_the_far_end() {
    let mut net = Net::new(2, &[(0, 1)], true, &|c| {
        c.vnet = true;
        c.udp_coalesce = true;
    });
    // Learn b's container on a first, so the super-frame is unicast.
    net.tap_reads(
        1,
        &[
            &[0u8; vnet::LEN][..],
            &udp_frame(1, mac(0, 1), cip(0), 64, true),
        ]
        .concat(),
    );
    // The path to b is 1400: inner frames may be 1400 - 20 (IPv4) - 8 (UDP) - 8 (GRE + key).
    net.cores[0].handle_path_mtu(0, 1, 1400);
    let max_inner = 1400 - 20 - 8 - 8;
    let payload: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut sf = super_frame(0, 1, &payload, 1448);
    let mut out = MemSink::new();
    out.cap = 128;
    net.cores[0].handle_tap_frames(0, 0, [&mut sf[..]], &mut out);
    assert!(
        out.unfit.is_empty(),
        "segments that do not fit: {:?}",
        out.unfit
    );
    assert!(out.sent.len() > 14, "cut into {} segments", out.sent.len());
    for (_, frag, g) in &out.sent {
        assert!(!frag);
        assert!(
            g.len() - 8 <= max_inner,
            "segment of {} inner bytes",
            g.len() - 8
        );
    }
    // Every segment counts as one frame sent; rx counts the segments too.
    let c = net.cores[0].counters(0);
    assert_eq!(c.ports[1].tx_packets.get(), out.sent.len() as u64);
    assert_eq!(
        c.ports[0].rx_packets.get(),
        14,
        "20000 bytes are 14 segments at MSS 1448"
    );
    // b coalesces the segments back into one super-frame for its TAP.
    net.deliver(0, out.sent);
    let got = net.tap[1].last().unwrap();
    let h = VnetHdr::parse(got).unwrap();
    assert_eq!(h.gso_kind(), vnet::gso::TCPV4);
    assert_eq!(
        &got[vnet::LEN + 54..],
        &payload[..],
        "payload intact and in order"
    );
}

#[test]
fn an_oversize_df_frame_is_answered_with_icmp_and_others_are_sent_fragmentable() {
    let mut net = Net::new(2, &[(0, 1)], true, &|_| {});
    net.tap_reads(1, &udp_frame(1, mac(0, 1), cip(0), 64, true));
    net.cores[0].handle_path_mtu(0, 1, 1400);
    // 1462-byte frame with DF: ICMP frag-needed back out of the TAP, nothing into the tunnel.
    let big_df = udp_frame(0, mac(1, 1), cip(1), 1428, true);
    assert_eq!(big_df.len(), 1462);
    let mut f = big_df.clone();
    let mut out = MemSink::new();
    net.cores[0].handle_tap_frames(0, 0, [&mut f[..]], &mut out);
    assert!(out.sent.is_empty());
    let mut buf = vec![0u8; outbox::MAX_FRAME];
    let t = net.cores[0].poll_transmit(&mut buf).expect("an ICMP error");
    assert_eq!((t.port, t.dest, t.counted), (0, Dest::Tap, true));
    let icmp = &buf[..t.len];
    assert_eq!(&icmp[0..6], &mac(0, 1), "to the sender");
    assert_eq!(&icmp[6..12], &mac(1, 1), "from the destination");
    assert_eq!(
        (icmp[14 + 20], icmp[14 + 21]),
        (3, 4),
        "fragmentation needed"
    );
    let next_hop = u16::from_be_bytes([icmp[14 + 26], icmp[14 + 27]]);
    assert_eq!(next_hop, 1400 - 20 - 8 - 8 - 14);
    net.cores[0].handle_transmit_outcome(&t, SendOutcome::Sent);
    assert_eq!(net.drops(0, DropReason::TooBigIcmp), 1);
    // Without DF the frame goes with outer DF off; a broadcast that big is dropped.
    let mut f = udp_frame(0, mac(1, 1), cip(1), 1428, false);
    let mut big_bcast = udp_frame(0, [0xff; 6], Ipv4Addr::BROADCAST, 1428, false);
    let mut out = MemSink::new();
    net.cores[0].handle_tap_frames(0, 0, [&mut f[..], &mut big_bcast[..]], &mut out);
    assert_eq!(out.sent.len(), 1);
    assert!(out.sent[0].1, "sent fragmentable");
    assert_eq!(net.events(0, Event::Fragmented), 1);
    assert_eq!(net.drops(0, DropReason::TooBigGroup), 1);
}

#[test]
fn path_mtus_are_read_at_start_every_5_s_and_soon_after_a_refusal() {
    let mut net = Net::new(2, &[(0, 1)], true, &|_| {});
    let core = &mut net.cores[0];
    core.handle_timeout(0);
    assert_eq!(core.poll_path_mtu_query(), Some((0, 1, host(1))));
    assert_eq!(core.poll_path_mtu_query(), None);
    core.handle_path_mtu(0, 1, 1500);
    assert_eq!(core.poll_timeout(), timers::AGING_MS, "aging comes first");
    core.handle_timeout(1_000);
    assert_eq!(core.poll_path_mtu_query(), None, "not due yet");
    core.handle_timeout(5_000);
    assert_eq!(core.poll_path_mtu_query(), Some((0, 1, host(1))));
    // A send refused as too big brings the next read to 20 ms after the last one.
    let mut f = udp_frame(0, [0xff; 6], Ipv4Addr::BROADCAST, 64, false);
    let mut out = MemSink::new();
    out.outcome = Some(SendOutcome::TooBig);
    core.handle_tap_frames(5_001, 0, [&mut f[..]], &mut out);
    assert_eq!(core.counters(0).drops[DropReason::TooBig as usize].get(), 1);
    assert_eq!(core.poll_timeout(), 5_000 + timers::PMTU_RETRY_MS);
    core.handle_timeout(5_020);
    assert_eq!(core.poll_path_mtu_query(), Some((0, 1, host(1))));
    // A smaller path is believed (never below 576) and counted as a change.
    core.handle_path_mtu(0, 1, 1400);
    core.handle_path_mtu(0, 1, 100);
    assert_eq!(core.switch(0).path_mtu(1), Some(576));
    assert_eq!(
        core.counters(0).events[Event::PathMtuChange as usize].get(),
        2
    );
}

#[test]
fn keepalives_bring_peers_up_and_silence_takes_one_down_with_its_macs() {
    let mut net = Net::new(2, &[(0, 1)], true, &|c| {
        c.nets[0].switch.liveness = liveness::Config {
            interval_ms: 100,
            multiplier: 3,
        };
    });
    net.run_until(250, 10);
    for h in 0..2 {
        assert_eq!(
            net.cores[h].switch(0).liveness().state(1),
            PeerState::Up,
            "host {h}"
        );
    }
    // a learns b's container behind the tunnel.
    net.tap_reads(1, &udp_frame(1, [0xff; 6], Ipv4Addr::BROADCAST, 64, false));
    assert_eq!(net.cores[0].switch(0).fdb().len(), 1);
    // b goes silent: a declares it down within 3 intervals (+ one check period) and forgets
    // the MACs it learned through it.
    net.cut[1][0] = true;
    let silent_from = net.now;
    while net.cores[0].switch(0).liveness().state(1) == PeerState::Up {
        assert!(net.now < silent_from + 1_000, "never declared down");
        net.run_until(net.now + 5, 5);
    }
    let took = net.now - silent_from;
    assert!((300..=400).contains(&took), "declared down after {took} ms");
    assert_eq!(net.events(0, Event::PeerDown), 1);
    assert_eq!(net.cores[0].switch(0).fdb().len(), 0);
    // b speaks again: up at its next hello.
    net.cut[1][0] = false;
    net.run_until(net.now + 150, 10);
    assert_eq!(net.cores[0].switch(0).liveness().state(1), PeerState::Up);
    assert_eq!(net.events(0, Event::PeerUp), 2);
}

/// Ends of the ring's tunnels that forward (each host has two).
fn forwarding_ends(net: &Net) -> usize {
    net.cores
        .iter()
        .map(|c| {
            let st = c.switch(0).stp().unwrap().with(|s| s.status());
            st.ports
                .iter()
                .filter(|p| p.state == stp::State::Forwarding)
                .count()
        })
        .sum()
}

#[test]
fn three_cores_in_a_ring_block_one_tunnel_end_and_route_around_a_cut() {
    let mut net = Net::new(3, &[(0, 1), (1, 2), (0, 2)], true, &|c| {
        c.nets[0].switch.stp = Some(Default::default());
        c.nets[0].switch.split_horizon = false;
    });
    net.run_until(3_000, 100);
    assert_eq!(
        forwarding_ends(&net),
        5,
        "exactly one of six tunnel ends blocked"
    );
    // A broadcast reaches every other TAP exactly once.
    let bcast = udp_frame(0, [0xff; 6], Ipv4Addr::BROADCAST, 64, false);
    net.tap_reads(0, &bcast);
    assert_eq!(net.tap[1], vec![bcast.clone()]);
    assert_eq!(net.tap[2], vec![bcast.clone()]);
    // Cut a forwarding tunnel between the root (lowest MAC: host 0) and host 1, both ways:
    // within 3 hellos' aging the blocked end takes over and the broadcast arrives again.
    net.cut[0][1] = true;
    net.cut[1][0] = true;
    net.run_until(net.now + 8_000, 100);
    for t in &mut net.tap {
        t.clear();
    }
    net.tap_reads(0, &bcast);
    assert_eq!(net.tap[1], vec![bcast.clone()], "reached through host 2");
    assert_eq!(net.tap[2], vec![bcast]);
    assert!(net.events(0, Event::BpduTx) > 0 && net.events(1, Event::BpduRx) > 0);
}

#[test]
fn learning_updates_are_polled_once_each() {
    let mut net = Net::new(2, &[(0, 1)], true, &|_| {});
    net.tap_reads(0, &udp_frame(0, [0xff; 6], Ipv4Addr::BROADCAST, 64, false));
    let (n, u) = net.cores[0]
        .poll_sync()
        .expect("a new station is announced");
    assert_eq!((n, u.port, u.key.mac()), (0, 0, MacAddr(mac(0, 1))));
    assert_eq!(net.cores[0].poll_sync(), None);
    // Another worker's update is applied.
    let other = SyncUpdate {
        key: FdbKey::new(MacAddr(mac(1, 7)), 0),
        port: 1,
        seen: 0,
    };
    net.cores[0].handle_sync(0, other);
    assert_eq!(net.cores[0].switch(0).fdb().len(), 2);
}

#[test]
fn a_removed_port_takes_its_queued_frames_and_peer_with_it() {
    let mut net = Net::new(2, &[(0, 1)], true, &|c| {
        c.nets[0].switch.liveness = liveness::Config {
            interval_ms: 100,
            multiplier: 3,
        };
    });
    net.cores[0].handle_timeout(0);
    net.cores[0].set_port(0, 1, None);
    let mut buf = vec![0u8; outbox::MAX_FRAME];
    assert_eq!(
        net.cores[0].poll_transmit(&mut buf),
        None,
        "the hello for port 1 is gone"
    );
    // Frames from the removed peer are strangers now.
    let mut out = MemSink::new();
    let mut g = [
        &[0x20u8, 0, 0x65, 0x58, 0, 0, 0, 42][..],
        &udp_frame(1, [0xff; 6], Ipv4Addr::BROADCAST, 64, false),
    ]
    .concat();
    let d = Datagram {
        source: host(1),
        data: Payload::Owned(&mut g),
        segment_size: None,
        truncated: false,
    };
    net.cores[0].handle_tunnel_datagrams(0, [d], &mut out);
    assert_eq!(net.drops(0, DropReason::UnknownPeer), 1);
    assert!(out.tap.is_empty());
}

#[test]
fn a_loop_the_guard_blocks_asks_the_edge_to_flush_the_bridge_once() {
    let mut net = Net::new(2, &[(0, 1)], true, &|c| c.nets[0].switch.loop_guard = true);
    let looping = udp_frame(0, [0xff; 6], Ipv4Addr::BROADCAST, 64, false);
    let from_tunnel = [&[0x20u8, 0, 0x65, 0x58, 0, 0, 0, 42][..], &looping].concat();
    let core = &mut net.cores[0];
    let mut out = MemSink::new();
    for t in 0..switch::loopguard::THRESHOLD as u64 {
        // The same station, seen from the TAP and back from the tunnel: a loop.
        let mut f = looping.clone();
        core.handle_tap_frames(t * 10, 0, [&mut f[..]], &mut out);
        let mut g = from_tunnel.clone();
        let d = Datagram {
            source: host(1),
            data: Payload::Owned(&mut g),
            segment_size: None,
            truncated: false,
        };
        core.handle_tunnel_datagrams(t * 10 + 1, [d], &mut out);
    }
    assert!(core.switch(0).loop_blocked(1));
    assert_eq!(
        core.poll_bridge_flush(),
        Some(0),
        "flush the bridge's TAP entries"
    );
    assert_eq!(core.poll_bridge_flush(), None, "once");
}

/// Host `h` with networks blue (key 1, peers `blue`) and red (key 2, peers `red`).
fn two_network_core(h: usize, blue: &[usize], red: &[usize]) -> Core {
    let cfg = Config {
        id: 0,
        gre: GreOptions {
            udp_port: Some(tunnel::GRE_IN_UDP_PORT),
            ..Default::default()
        },
        df: true,
        vnet: false,
        udp_coalesce: false,
        nets: [1, 2]
            .iter()
            .map(|k| NetConfig {
                key: Some(*k),
                switch: switch::Config::default(),
            })
            .collect(),
    };
    let shared = Shared::new(vec![None, None]);
    let mut core = Core::new(
        cfg,
        &shared,
        vec![Arc::default(), Arc::default()],
        Arc::default(),
    );
    for (net, peers) in [blue, red].iter().enumerate() {
        for (i, p) in peers.iter().enumerate() {
            core.set_port(
                net as NetId,
                i as PortId + 1,
                Some(PortKind::Tunnel(host(*p))),
            );
        }
    }
    let _ = h;
    core
}

fn gre_in_udp(key: u32, frame: &[u8]) -> Vec<u8> {
    [&[0x20u8, 0, 0x65, 0x58][..], &key.to_be_bytes(), frame].concat()
}

#[test]
fn networks_side_by_side_never_see_each_others_frames() {
    let mut a = two_network_core(0, &[1, 2], &[1]);
    let mut b = two_network_core(1, &[0], &[0]);
    // A broadcast on a's blue TAP reaches b's blue TAP, and red not at all.
    let bcast = udp_frame(0, [0xff; 6], Ipv4Addr::BROADCAST, 80, false);
    let mut f = bcast.clone();
    let mut out = MemSink::new();
    a.handle_tap_frames(0, 0, [&mut f[..]], &mut out);
    assert_eq!(out.sent.len(), 2, "to blue's two peers");
    assert!(out.sent_net.iter().all(|n| *n == 0));
    let mut to_b: Vec<Vec<u8>> = out
        .sent
        .iter()
        .filter(|m| m.0 == 1)
        .map(|m| m.2.clone())
        .collect();
    assert_eq!(
        &to_b[0][..4],
        &[0x20, 0, 0x65, 0x58],
        "a GRE header with a key"
    );
    assert_eq!(&to_b[0][4..8], &1u32.to_be_bytes(), "blue's key");
    let mut got = MemSink::new();
    let d = Datagram {
        source: host(0),
        data: Payload::Owned(&mut to_b[0]),
        segment_size: None,
        truncated: false,
    };
    b.handle_tunnel_datagrams(0, [d], &mut got);
    assert_eq!(got.tap, vec![bcast.clone()]);
    assert_eq!(got.tap_net, vec![0], "blue's TAP");
    assert_eq!(b.switch(0).fdb().len(), 1);
    assert_eq!(b.switch(1).fdb().len(), 0, "red learned nothing");
    assert_eq!(b.counters(1).ports[0].tx_packets.get(), 0);

    // The same station on red is another station: each network has its own table.
    let mut f = bcast.clone();
    let mut out = MemSink::new();
    a.handle_tap_frames(0, 1, [&mut f[..]], &mut out);
    assert_eq!(out.sent.len(), 1, "red has one peer");
    assert_eq!(&out.sent[0].2[4..8], &2u32.to_be_bytes(), "red's key");
    assert_eq!(a.switch(0).fdb().len(), 1);
    assert_eq!(a.switch(1).fdb().len(), 1);

    // A key no network has is dropped and counted switch-wide; so is a sender that is no
    // network's peer. A blue-only peer (host 2) using red's key is no peer of red.
    let mut unknown_key = gre_in_udp(7, &bcast);
    let mut from_red = gre_in_udp(2, &bcast);
    let mut from_red2 = from_red.clone();
    let mut out = MemSink::new();
    fn dg(src: usize, data: &mut [u8]) -> Datagram<'_> {
        Datagram {
            source: host(src),
            data: data.into(),
            segment_size: None,
            truncated: false,
        }
    }
    a.handle_tunnel_datagrams(
        0,
        [
            dg(1, &mut unknown_key),
            dg(9, &mut from_red),
            dg(2, &mut from_red2),
        ],
        &mut out,
    );
    assert!(out.tap.is_empty(), "nothing delivered: {:?}", out.tap_net);
    let g = a.global_counters();
    assert_eq!(g.drops[DropReason::WrongKey as usize].get(), 1);
    assert_eq!(g.drops[DropReason::UnknownPeer as usize].get(), 1);
    assert_eq!(
        a.counters(1).drops[DropReason::UnknownPeer as usize].get(),
        1
    );
}

#[test]
fn encrypted_cores_handshake_on_first_traffic_then_forward_sealed_frames() {
    let mut net = Net::encrypted(2, &[(0, 1)]);
    let bcast = udp_frame(0, [0xff; 6], Ipv4Addr::BROADCAST, 100, false);
    // No session yet: the first frame is dropped (counted) and a handshake is asked for.
    net.tap_reads(0, &bcast);
    assert!(net.tap[1].is_empty());
    assert_eq!(net.crypto_drops(0, dnet_crypto::Reject::NoSession), 1);
    // The initiation and response cross during the pumps; then frames go through, sealed.
    net.run_until(50, 10);
    net.tap_reads(0, &bcast);
    assert_eq!(net.tap[1], vec![bcast.clone()]);
    let reply = udp_frame(1, mac(0, 1), cip(0), 300, true);
    net.tap_reads(1, &reply);
    assert_eq!(net.tap[0], vec![reply]);
    // What crossed was sealed: no GRE header, no inner frame in clear.
    let mut f = bcast.clone();
    let mut out = net.sink(0);
    net.cores[0].handle_tap_frames(net.now, 0, [&mut f[..]], &mut out);
    let wire = &out.sent[0].2;
    assert_eq!(wire.len(), bcast.len() + 8 + dnet_crypto::wire::OVERHEAD);
    assert_ne!(&wire[..4], &[0x20, 0, 0x65, 0x58]);
    assert!(
        !wire.windows(12).any(|w| w == &bcast[..12]),
        "no MACs in clear"
    );
}

#[test]
fn forged_cleartext_and_replayed_datagrams_deliver_nothing() {
    let mut net = Net::encrypted(2, &[(0, 1)]);
    net.tap_reads(0, &udp_frame(0, [0xff; 6], Ipv4Addr::BROADCAST, 64, false));
    net.run_until(50, 10);
    // A cleartext GRE-in-UDP datagram with host 0's source address: the address is no key.
    let frame = udp_frame(0, [0xff; 6], Ipv4Addr::BROADCAST, 64, false);
    let mut forged = gre_in_udp(42, &frame);
    let mut out = net.sink(1);
    let d = Datagram {
        source: host(0),
        data: Payload::Owned(&mut forged),
        segment_size: None,
        truncated: false,
    };
    net.cores[1].handle_tunnel_datagrams(net.now, [d], &mut out);
    assert!(out.tap.is_empty());
    assert_eq!(net.crypto_drops(1, dnet_crypto::Reject::Cleartext), 1);
    // A sealed datagram, replayed: delivered once.
    let mut f = frame.clone();
    let mut out = net.sink(0);
    net.cores[0].handle_tap_frames(net.now, 0, [&mut f[..]], &mut out);
    let sealed = out.sent[0].2.clone();
    let mut delivered = 0;
    for _ in 0..3 {
        let mut m = sealed.clone();
        let mut got = net.sink(1);
        let d = Datagram {
            source: host(0),
            data: Payload::Owned(&mut m),
            segment_size: None,
            truncated: false,
        };
        net.cores[1].handle_tunnel_datagrams(net.now, [d], &mut got);
        delivered += got.tap.len();
    }
    assert_eq!(delivered, 1);
    assert_eq!(net.crypto_drops(1, dnet_crypto::Reject::Replayed), 2);
    // One flipped bit in a fresh datagram: not authentic.
    let mut f = frame.clone();
    let mut out = net.sink(0);
    net.cores[0].handle_tap_frames(net.now, 0, [&mut f[..]], &mut out);
    let mut bad = out.sent[0].2.clone();
    let i = bad.len() - 20;
    bad[i] ^= 1;
    let mut got = net.sink(1);
    let d = Datagram {
        source: host(0),
        data: Payload::Owned(&mut bad),
        segment_size: None,
        truncated: false,
    };
    net.cores[1].handle_tunnel_datagrams(net.now, [d], &mut got);
    assert!(got.tap.is_empty());
    assert_eq!(net.crypto_drops(1, dnet_crypto::Reject::AuthFailed), 1);
}

#[test]
fn keepalives_and_stp_go_sealed_too() {
    let mut net = Net::build(2, &[(0, 1)], true, true, &|c| {
        c.nets[0].switch.liveness = liveness::Config {
            interval_ms: 100,
            multiplier: 3,
        };
    });
    net.run_until(500, 10);
    for h in 0..2 {
        assert_eq!(
            net.cores[h].switch(0).liveness().state(1),
            PeerState::Up,
            "host {h} hears sealed hellos"
        );
    }
    assert_eq!(net.crypto_drops(1, dnet_crypto::Reject::AuthFailed), 0);
}

/// One GRE packet (key 42) from host 1 to host 0 carrying a 40,000-byte TCP segment from
/// container 1 to container 0: with `gro`, in the form the underlay's GRO leaves a merged
/// packet (TCP checksum field = pseudo-header sum), else with a complete checksum.
fn underlay_packet(payload: &[u8], gro: bool) -> Vec<u8> {
    let mut t = tcp(cip(1), cip(0), 5000, payload);
    if gro {
        let mut sum = accumulate(0, &cip(1).octets());
        sum = accumulate(sum, &cip(0).octets());
        sum += 6 + t.len() as u64;
        t[16..18].copy_from_slice(&(!finish(sum)).to_be_bytes());
    }
    let f = eth(
        mac(0, 1),
        mac(1, 1),
        0x0800,
        &ipv4(cip(1), cip(0), 6, true, &t),
    );
    let mut g = vec![0x20, 0, 0x65, 0x58, 0, 0, 0, 42];
    g.extend_from_slice(&f);
    ipv4(host(1), host(0), 47, true, &g)
}

fn receive(net: &mut Net, mut packet: Vec<u8>) -> MemSink {
    let mut out = MemSink::new();
    let d = Datagram {
        source: host(1),
        data: Payload::Owned(&mut packet),
        segment_size: None,
        truncated: false,
    };
    net.cores[0].handle_tunnel_datagrams(0, [d], &mut out);
    out
}

#[test]
fn a_segment_the_underlay_gro_merged_reaches_the_tap_as_one_tcp_super_frame() {
    let mut net = Net::new(2, &[(0, 1)], false, &|c| c.vnet = true);
    let payload: Vec<u8> = (0..40_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let out = receive(&mut net, underlay_packet(&payload, true));
    assert_eq!(out.tap.len(), 1, "one TAP write");
    let got = &out.tap[0];
    let h = VnetHdr::parse(got).unwrap();
    // IPv4 20 + TCP 20 of headers below the 1500-byte MTU.
    assert_eq!(
        (h.gso_kind(), h.gso_size, h.flags, h.csum_start, h.hdr_len),
        (vnet::gso::TCPV4, 1460, vnet::F_NEEDS_CSUM, 34, 54)
    );
    assert_eq!(&got[vnet::LEN + 54..], &payload[..], "payload intact");
    assert_eq!(net.events(0, Event::GreGroReceived), 1);
    assert_eq!(net.drops(0, DropReason::Giant), 0);
    // Counted as the 28 segments it stands for, both ways.
    let c = net.cores[0].counters(0);
    assert_eq!(c.ports[1].rx_packets.get(), 28);
    assert_eq!(c.ports[0].tx_packets.get(), 28);
}

#[test]
fn without_offloads_a_merged_segment_is_written_cut_into_segments() {
    let mut net = Net::new(2, &[(0, 1)], false, &|_| {});
    let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 5 % 251) as u8).collect();
    let out = receive(&mut net, underlay_packet(&payload, true));
    assert_eq!(out.tap.len(), 7, "10000 bytes at MSS 1460");
    let mut got = Vec::new();
    for f in &out.tap {
        assert!(f.len() <= 1514, "a {}-byte frame", f.len());
        assert!(crate::offload::testframes::checksums_ok(f), "checksums");
        got.extend_from_slice(&f[54..]);
    }
    assert_eq!(got, payload);
}

#[test]
fn an_oversize_frame_in_any_other_form_is_a_giant() {
    let mut net = Net::new(2, &[(0, 1)], false, &|c| c.vnet = true);
    // A complete checksum: not something GRO made (an IP reassembly, say), so not taken.
    let out = receive(&mut net, underlay_packet(&[7u8; 4000], false));
    assert!(out.tap.is_empty());
    assert_eq!(net.drops(0, DropReason::Giant), 1);
    assert_eq!(net.events(0, Event::GreGroReceived), 0);
}

/// [`underlay_packet`] with a GRE checksum field holding `csum` (GRO leaves the first merged
/// packet's, wrong for the whole).
fn underlay_packet_with_csum(payload: &[u8], gro: bool, csum: u16) -> Vec<u8> {
    let p = underlay_packet(payload, gro);
    let inner = &p[20 + 8..];
    let mut g = vec![0xa0, 0, 0x65, 0x58];
    g.extend_from_slice(&csum.to_be_bytes());
    g.extend_from_slice(&[0, 0, 0, 0, 0, 42]);
    g.extend_from_slice(inner);
    ipv4(host(1), host(0), 47, true, &g)
}

#[test]
fn a_merged_packet_with_a_stale_gre_checksum_is_taken_and_no_other() {
    let mut net = Net::new(2, &[(0, 1)], false, &|c| c.vnet = true);
    let payload: Vec<u8> = (0..20_000u32).map(|i| (i * 3 % 251) as u8).collect();
    let out = receive(&mut net, underlay_packet_with_csum(&payload, true, 0x1234));
    assert_eq!(out.tap.len(), 1);
    assert_eq!(&out.tap[0][vnet::LEN + 54..], &payload[..]);
    assert_eq!(net.events(0, Event::GreGroReceived), 1);
    // A bad checksum on anything else is still a bad checksum: a frame that fits, and an
    // oversize one with a complete TCP checksum.
    let out = receive(
        &mut net,
        underlay_packet_with_csum(&payload[..1000], false, 0x1234),
    );
    assert!(out.tap.is_empty());
    let out = receive(&mut net, underlay_packet_with_csum(&payload, false, 0x1234));
    assert!(out.tap.is_empty());
    assert_eq!(net.drops(0, DropReason::GreChecksum), 2);
    assert_eq!(net.events(0, Event::GreGroReceived), 1);
}
