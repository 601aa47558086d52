//! The sans-io switch core fed an arbitrary sequence of events, checked after every step
//! against its invariants and against a small reference model of the MAC table.
//!
//! Ports: 0 = TAP (`PortKind::Local`), 1..=N = tunnels (N = 2 or 3). Port ids up to 3 are used
//! as ingress, so with N = 2 port 3 is a port that does not exist.
//!
//! Input layout (all fields one byte unless said):
//!   header (4 bytes): flags (bit 0 split horizon OFF, bit 1 three tunnels), fdb capacity
//!   (0..=16), aging (1 + b × 8 ms), max frame from tunnels (14 + b bytes)
//!   then records, each: `op`, `dt`, and op-specific bytes:
//!     op & 3          ingress port (0..=3)
//!     (op >> 2) & 7   0-1: raw frame: `len` + len bytes
//!                     2-4: synthetic frame: `dst`, `src`, `vlan`, `pad` (see `mac()` and
//!                          `synth_frame()`; IPv4 or ARP, optionally VLAN-tagged)
//!                     5:   handle_timeout
//!                     6:   apply_sync of a station: `mac`, `vlan`, `age`
//!                     7:   remove the port, or add it back if absent
//!   `dt` advances the clock: b < 128 → b ms, else (b - 128) s. Whenever a whole second
//!   passes, handle_timeout runs too, as the worker loop does.
#![no_main]

use dnet::switch::fdb::Millis;
use dnet::switch::{
    Action, Config, Counters, DropReason, Event, FdbKey, PortId, PortKind, SyncUpdate, Switch,
};
use dnet::wire::ethernet::{ethertype, MacAddr};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};

/// Set DNET_FUZZ_TRACE=1 to print every step (for reading a reproducer).
fn trace() -> bool {
    static T: OnceLock<bool> = OnceLock::new();
    *T.get_or_init(|| std::env::var_os("DNET_FUZZ_TRACE").is_some())
}

/// Reference model of one MAC table entry.
#[derive(Clone, Copy, Debug)]
struct M {
    port: PortId,
    last_seen: Millis,
    synced: Millis,
}

struct Model {
    cfg: Config,
    ports: [Option<PortKind>; 4],
    fdb: BTreeMap<FdbKey, M>,
    sync_interval: Millis,
    rx: u64,
    fdb_counter_fresh: bool,
}

impl Model {
    fn kind(&self, p: PortId) -> Option<PortKind> {
        self.ports.get(usize::from(p)).copied().flatten()
    }

    /// Learn as documented in fdb.rs; returns (sync due, event).
    fn learn(&mut self, key: FdbKey, port: PortId, now: Millis) -> (bool, Option<Event>) {
        if let Some(e) = self.fdb.get_mut(&key) {
            e.last_seen = now;
            if e.port == port {
                let sync = now.saturating_sub(e.synced) >= self.sync_interval;
                if sync {
                    e.synced = now;
                }
                return (sync, None);
            }
            e.port = port;
            e.synced = now;
            return (true, Some(Event::MacMove));
        }
        if self.fdb.len() >= self.cfg.fdb_capacity {
            return (false, Some(Event::FdbFull));
        }
        self.fdb.insert(key, M { port, last_seen: now, synced: now });
        // A new entry refreshes the fdb_entries gauge.
        self.fdb_counter_fresh = true;
        (true, None)
    }

    fn lookup(&self, key: FdbKey, now: Millis) -> Option<PortId> {
        self.fdb
            .get(&key)
            .filter(|e| now.saturating_sub(e.last_seen) < self.cfg.aging_ms)
            .map(|e| e.port)
    }

    /// The expected action and sync flag for a frame.
    fn handle(&mut self, now: Millis, ingress: PortId, frame: &[u8]) -> (Action, bool) {
        let Some(in_kind) = self.kind(ingress) else {
            return (Action::Drop(DropReason::UnknownPeer), false);
        };
        self.rx += 1;
        if frame.len() < 14
            || (frame[12..14] == ethertype::VLAN.to_be_bytes() && frame.len() < 18)
        {
            return (Action::Drop(DropReason::Runt), false);
        }
        // Only frames from tunnels are bounded by max_frame (the TAP may hand over TCP
        // super-frames when offloads are on).
        if in_kind.is_tunnel() && frame.len() > self.cfg.max_frame {
            return (Action::Drop(DropReason::Giant), false);
        }
        let dst = MacAddr::from_bytes(&frame[0..6]);
        let src = MacAddr::from_bytes(&frame[6..12]);
        if src.0[0] & 1 != 0 || src.0 == [0; 6] {
            return (Action::Drop(DropReason::BadSourceMac), false);
        }
        let vlan = if frame[12..14] == ethertype::VLAN.to_be_bytes() {
            u16::from_be_bytes([frame[14], frame[15]]) & 0x0fff
        } else {
            0
        };
        let (sync, _) = self.learn(FdbKey::new(src, vlan), ingress, now);
        let out = if dst.0[0] & 1 != 0 {
            None
        } else {
            self.lookup(FdbKey::new(dst, vlan), now)
                .and_then(|p| self.kind(p).map(|k| (p, k)))
        };
        let action = match out {
            None => Action::Flood,
            Some((p, _)) if p == ingress => Action::Drop(DropReason::SamePort),
            Some((_, k)) if self.cfg.split_horizon && in_kind.is_tunnel() && k.is_tunnel() => {
                Action::Drop(DropReason::SplitHorizon)
            }
            Some((p, _)) => Action::Forward(p),
        };
        (action, sync)
    }

    fn expire(&mut self, now: Millis) {
        let aging = self.cfg.aging_ms;
        self.fdb.retain(|_, e| now.saturating_sub(e.last_seen) < aging);
    }

    fn merge(&mut self, u: SyncUpdate) {
        if self.kind(u.port).is_none() {
            return;
        }
        if let Some(e) = self.fdb.get_mut(&u.key) {
            if u.seen >= e.last_seen {
                *e = M { port: u.port, last_seen: u.seen, synced: u.seen };
            }
        } else if self.fdb.len() < self.cfg.fdb_capacity {
            self.fdb.insert(u.key, M { port: u.port, last_seen: u.seen, synced: u.seen });
        }
    }
}

/// Station addresses from one byte: a handful of unicast MACs so that learning, moves and
/// known-unicast forwarding happen often, plus broadcast, multicast, zero and raw values.
fn mac(b: u8) -> MacAddr {
    match b {
        0..=199 => MacAddr([0x02, 0x77, 0, 0, 0, b % 24]),
        200..=219 => MacAddr::BROADCAST,
        220..=234 => MacAddr([0x01, 0x00, 0x5e, 0, 0, b]),
        235..=239 => MacAddr::ZERO,
        _ => MacAddr([b, b, b, b, b, b]),
    }
}

/// A frame between two `mac()` stations. `vlan`: bit 7 adds an 802.1Q tag with VID bits 0-2;
/// bit 6 makes it an ARP request/reply (`pad` then picks the addresses) instead of IPv4.
fn synth_frame(dst: u8, src: u8, vlan: u8, pad: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&mac(dst).0);
    f.extend_from_slice(&mac(src).0);
    if vlan & 0x80 != 0 {
        f.extend_from_slice(&ethertype::VLAN.to_be_bytes());
        f.extend_from_slice(&u16::from(vlan & 0x07).to_be_bytes());
    }
    if vlan & 0x40 != 0 {
        // Sender MAC is usually the frame's source, sometimes another station (a conflict).
        let sha = if pad & 0x80 != 0 { mac(pad & 0x1f) } else { mac(src) };
        f.extend_from_slice(&ethertype::ARP.to_be_bytes());
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1 + (pad >> 6 & 1)]);
        f.extend_from_slice(&sha.0);
        f.extend_from_slice(&[10, 77, 0, pad & 0x07]);
        f.extend_from_slice(&mac(dst).0);
        f.extend_from_slice(&[10, 77, 0, (pad >> 3) & 0x07]);
        if pad & 0x20 != 0 {
            f.truncate(f.len() - 5); // a truncated ARP payload
        }
    } else {
        f.extend_from_slice(&ethertype::IPV4.to_be_bytes());
        f.resize(f.len() + usize::from(pad % 64), 0x45);
    }
    f
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, rest) = self.0.split_at(n);
        self.0 = rest;
        a
    }
}

fn tunnel(i: u16) -> PortKind {
    PortKind::Tunnel(Ipv4Addr::new(10, 200, 0, i as u8))
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let (Some(flags), Some(cap), Some(aging), Some(maxf)) =
        (inp.byte(), inp.byte(), inp.byte(), inp.byte())
    else {
        return;
    };
    let cfg = Config {
        fdb_capacity: usize::from(cap % 17),
        aging_ms: 1 + Millis::from(aging) * 8,
        split_horizon: flags & 1 == 0,
        max_frame: 14 + usize::from(maxf),
        ..Config::default()
    };
    let n_tunnels: u16 = if flags & 2 != 0 { 3 } else { 2 };
    let counters = Arc::new(Counters::default());
    let mut sw = Switch::new(cfg.clone(), counters.clone());
    let mut model = Model {
        sync_interval: (cfg.aging_ms / 4).max(1),
        cfg: cfg.clone(),
        ports: [None; 4],
        fdb: BTreeMap::new(),
        rx: 0,
        fdb_counter_fresh: true,
    };
    let original: [Option<PortKind>; 4] = std::array::from_fn(|i| match i as u16 {
        0 => Some(PortKind::Local),
        i if i <= n_tunnels => Some(tunnel(i)),
        _ => None,
    });
    for (i, k) in original.iter().enumerate() {
        if let Some(k) = k {
            sw.set_port(i as PortId, *k);
            model.ports[i] = Some(*k);
        }
    }

    let mut now: Millis = 1_000_000;
    while let (Some(op), Some(dt)) = (inp.byte(), inp.byte()) {
        let before = now;
        now += if dt < 128 { Millis::from(dt) } else { Millis::from(dt - 128) * 1000 };
        if now / 1000 != before / 1000 {
            sw.handle_timeout(now);
            model.expire(now);
            model.fdb_counter_fresh = true;
        }
        let ingress = PortId::from(op & 3);
        match (op >> 2) & 7 {
            kind @ 0..=4 => {
                let frame = if kind < 2 {
                    let len = inp.byte().unwrap_or(0);
                    inp.bytes(usize::from(len)).to_vec()
                } else {
                    let b = inp.bytes(4);
                    let g = |i: usize| b.get(i).copied().unwrap_or(0);
                    synth_frame(g(0), g(1), g(2), g(3))
                };
                let v = sw.handle(now, ingress, &frame);
                let (want, want_sync) = model.handle(now, ingress, &frame);
                if trace() {
                    eprintln!("t={now} port {ingress} frame {frame:02x?} -> {v:?}");
                }
                check_verdict(&sw, &cfg, now, ingress, &frame, v.action, v.sync);
                assert_eq!(v.action, want, "action for {frame:02x?} from port {ingress}");
                assert_eq!(v.sync.is_some(), want_sync, "sync for {frame:02x?}");
            }
            5 => {
                sw.handle_timeout(now);
                model.expire(now);
                model.fdb_counter_fresh = true;
            }
            6 => {
                let b = inp.bytes(3);
                let g = |i: usize| b.get(i).copied().unwrap_or(0);
                let u = SyncUpdate {
                    key: FdbKey::new(mac(g(0)), u16::from(g(1) & 7)),
                    port: ingress,
                    seen: now.saturating_sub(Millis::from(g(2)) * 4),
                };
                sw.apply_sync(u);
                model.merge(u);
                model.fdb_counter_fresh = true;
            }
            _ => {
                let i = usize::from(ingress);
                if sw.port(ingress).is_some() {
                    sw.remove_port(ingress);
                    model.ports[i] = None;
                    model.fdb.retain(|_, e| e.port != ingress);
                    model.fdb_counter_fresh = true;
                } else if let Some(k) = original[i] {
                    sw.set_port(ingress, k);
                    model.ports[i] = Some(k);
                }
            }
        }
        if trace() {
            eprintln!("t={now} op {op:#04x}: fdb {:?}", sw.fdb().iter().collect::<Vec<_>>());
        }
        check_state(&sw, &model, &cfg, now);
    }
    assert!(counters.ports[4..].iter().all(|c| c.rx_packets.get() == 0));
});

/// Invariants of one verdict, independent of the model.
fn check_verdict(
    sw: &Switch,
    cfg: &Config,
    now: Millis,
    ingress: PortId,
    frame: &[u8],
    action: Action,
    sync: Option<SyncUpdate>,
) {
    let in_kind = sw.port(ingress);
    match action {
        Action::Forward(p) => {
            assert_ne!(p, ingress, "forwarded back out of the ingress port");
            let k = sw.port(p).expect("forwarded to a port that does not exist");
            if cfg.split_horizon && in_kind.is_some_and(|k| k.is_tunnel()) {
                assert!(!k.is_tunnel(), "split horizon: tunnel {ingress} forwarded to tunnel {p}");
            }
            // Only known unicast is forwarded.
            assert_eq!(frame[0] & 1, 0, "group address forwarded, not flooded");
        }
        Action::Flood => assert!(in_kind.is_some()),
        Action::Drop(DropReason::UnknownPeer) => assert!(in_kind.is_none()),
        Action::Drop(_) => assert!(in_kind.is_some()),
    }
    if let Some(u) = sync {
        assert_eq!(u.port, ingress);
        assert_eq!(u.seen, now);
        assert_eq!(u.key.mac(), MacAddr::from_bytes(&frame[6..12]));
        assert!(!matches!(
            action,
            Action::Drop(
                DropReason::UnknownPeer
                    | DropReason::Runt
                    | DropReason::Giant
                    | DropReason::BadSourceMac
            )
        ));
    }
}

/// Invariants of the whole switch after a step, and agreement with the model.
fn check_state(sw: &Switch, model: &Model, cfg: &Config, now: Millis) {
    let fdb = sw.fdb();
    assert!(fdb.len() <= cfg.fdb_capacity, "fdb has {} > {}", fdb.len(), cfg.fdb_capacity);
    assert_eq!(fdb.capacity(), cfg.fdb_capacity);
    assert_eq!(fdb.len(), model.fdb.len(), "fdb size differs from the model");
    for (k, e) in fdb.iter() {
        assert!(sw.port(e.port).is_some(), "fdb entry {k:?} on missing port {}", e.port);
        assert!(e.last_seen <= now && e.synced <= now);
        let m = model.fdb.get(&k).unwrap_or_else(|| panic!("{k:?} not in the model"));
        assert_eq!((e.port, e.last_seen, e.synced), (m.port, m.last_seen, m.synced), "{k:?}");
        assert_eq!(fdb.lookup(k, now), model.lookup(k, now));
    }
    if model.fdb_counter_fresh {
        assert_eq!(sw.counters().fdb_entries.get(), fdb.len() as u64);
    }
    // Only ports 0..4 ever receive (summing all MAX_PORTS counters per step would dominate
    // the run time); the rest are checked once at the end.
    let rx: u64 = sw.counters().ports[..4].iter().map(|c| c.rx_packets.get()).sum();
    assert_eq!(rx, model.rx);

    for ingress in 0..5u16 {
        let targets: Vec<PortId> = sw.flood_targets(ingress).collect();
        let from_tunnel = sw.port(ingress).is_some_and(|k| k.is_tunnel());
        let want: Vec<PortId> = (0..4u16)
            .filter(|&p| {
                model.kind(p).is_some_and(|k| {
                    p != ingress && !(cfg.split_horizon && from_tunnel && k.is_tunnel())
                })
            })
            .collect();
        assert_eq!(targets, want, "flood targets of {ingress}");
        for p in targets {
            assert_ne!(p, ingress);
            if cfg.split_horizon && from_tunnel {
                assert!(!sw.port(p).unwrap().is_tunnel());
            }
        }
    }
}
