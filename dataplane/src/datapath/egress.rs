//! The sending half of a worker's core: from a forwarding verdict to messages in a [`Sink`].
//!
//! - A frame for the TAP is written as is; tunnel frames for the TAP may first be coalesced
//!   into one super-frame per flow ([`TapRuns`]).
//! - A frame for a tunnel gets its GRE header (with a sequence number when `--seq`) and the
//!   flow hash that picks its GRE-in-UDP source port. A TCP super-frame from the TAP is cut
//!   into segments that fit the tunnel's path, each one message; the edge sends runs of them
//!   as one UDP GSO message where it can.
//! - A frame too big for the path is answered with ICMP, sent with outer DF off, or dropped,
//!   as [`crate::switch::pmtu`] decides; the ICMP errors go to the [`Outbox`].
//! - Send outcomes come back here to be counted; a send refused as too big makes the path
//!   MTUs be read again ([`PmtuSchedule`]).

use super::outbox::{Dest, Outbox};
use super::sink::SendOutcome;
use super::sink::{Sink, TapWriteError, TunnelMsg};
use super::timers::PmtuSchedule;
use crate::offload::gro::{Add, Gro};
use crate::offload::udp_gro::UdpGro;
use crate::offload::{self, MAX_HEADERS};
use crate::switch::pmtu::Outcome;
use crate::switch::tunnel::{self, GreOptions, PeerTable};
use crate::switch::{Action, Counters, DropReason, Event, NetId, PortId, PortKind, Switch};
use crate::wire::vnet::{self, VnetHdr};
use crate::wire::{gre, icmp};
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// One `no_session` drop, as the crypto core counts it.
pub fn no_session() -> dnet_crypto::Counts {
    let mut c = dnet_crypto::Counts::default();
    c.reject(dnet_crypto::Reject::NoSession);
    c
}

/// An all-zero virtio-net header: nothing for the kernel to do.
const NO_OFFLOAD: [u8; vnet::LEN] = [0; vnet::LEN];

/// Frames from tunnels bound for a TAP, coalesced while one receive burst is handled: a TCP
/// run and a UDP run, each of one flow, all of one network.
#[derive(Default)]
pub struct TapRuns<'a> {
    net: Option<NetId>,
    tcp: Gro<'a>,
    udp: UdpGro<'a>,
}

/// One network's side of a send: its switch (ports, path MTUs, counters), its GRE options
/// (key) and its sequence numbers.
#[derive(Clone, Copy)]
pub struct NetView<'s> {
    /// Which network.
    pub id: NetId,
    /// Its switch core.
    pub sw: &'s Switch,
    /// Its GRE header options.
    pub gre: &'s GreOptions,
    /// Its per-port GRE sequence numbers, shared by the workers (only used with `--seq`).
    pub seq: &'s [AtomicU32],
    /// Every network's counters, by network id (a flush counts the messages of all).
    pub all: &'s [Arc<Counters>],
    /// The switch-wide counters (what belongs to no one network).
    pub global: &'s Counters,
    /// With `--encrypt`: peer hosts by address → crypto peer id, to seal for.
    pub hosts: Option<&'s PeerTable>,
}

impl NetView<'_> {
    /// The GRE header for the next message to `port`.
    #[inline]
    pub fn repr(&self, port: PortId) -> gre::Repr {
        let seq = if self.gre.seq {
            self.seq
                .get(usize::from(port))
                .map_or(0, |s| s.fetch_add(1, Ordering::Relaxed))
        } else {
            0
        };
        self.gre.repr(seq)
    }

    /// Where tunnel `port`'s peer listens.
    #[inline]
    pub fn dest(&self, port: PortId) -> Option<SocketAddrV4> {
        match self.sw.port(port) {
            Some(PortKind::Tunnel(a)) => Some(SocketAddrV4::new(a, self.gre.udp_port.unwrap_or(0))),
            _ => None,
        }
    }
}

/// Per-worker sending state, shared by its networks.
pub struct Egress {
    /// Worker index, for logs.
    id: usize,
    /// Frames of different flows leave from different sockets (GRE-in-UDP source ports).
    spread_flows: bool,
    /// TAP frames carry a virtio-net header.
    vnet: bool,
    /// Runs of UDP datagrams may be written to the TAP as one UDP GSO frame (until the kernel
    /// refuses one).
    udp_coalesce: bool,
    /// Frames the core made itself.
    pub outbox: Outbox,
    /// When to re-read the path MTUs.
    pub pmtu: PmtuSchedule,
}

impl Egress {
    /// Sending state for worker `id`.
    pub fn new(id: usize, udp: bool, vnet: bool, udp_coalesce: bool, pmtu: PmtuSchedule) -> Egress {
        Egress {
            id,
            spread_flows: udp,
            vnet,
            udp_coalesce: vnet && udp_coalesce,
            outbox: Outbox::default(),
            pmtu,
        }
    }

    /// Sends `frame` (from `ingress`) wherever `action` says, within network `n`. `gso`
    /// describes a TCP super-frame from the TAP, which tunnels get as segments that fit their
    /// path.
    #[inline]
    pub fn output<'a, S: Sink<'a>>(
        &mut self,
        n: NetView<'_>,
        ingress: PortId,
        action: Action,
        frame: &'a [u8],
        gso: Option<&VnetHdr>,
        out: &mut S,
    ) {
        match action {
            Action::Drop(_) => {}
            Action::Forward(p) => self.output_one(n, ingress, p, frame, gso, out),
            Action::Flood => {
                for p in n.sw.flood_targets(ingress) {
                    self.output_one(n, ingress, p, frame, gso, out);
                }
            }
        }
    }

    #[inline]
    fn output_one<'a, S: Sink<'a>>(
        &mut self,
        n: NetView<'_>,
        ingress: PortId,
        port: PortId,
        frame: &'a [u8],
        gso: Option<&VnetHdr>,
        out: &mut S,
    ) {
        match n.sw.port(port) {
            Some(PortKind::Local) => match gso {
                None => self.write_tap_frame(n, frame, out),
                Some(h) => self.write_tap_super(n, frame, h, out),
            },
            Some(PortKind::Tunnel(_)) => match gso {
                None => {
                    let mut fragmentable = false;
                    if frame.len() > n.sw.max_tunnel_frame(port) {
                        match self.oversize(n, ingress, port, frame) {
                            Some(f) => fragmentable = f,
                            None => return,
                        }
                    }
                    let flow = self.flow(frame);
                    self.queue_tunnel(n, port, flow, &[], frame, fragmentable, out);
                }
                Some(h) => {
                    let h = fit_gso(n.sw, port, frame, h);
                    // Every segment is of the super-frame's flow.
                    let flow = self.flow(frame);
                    let r = offload::gso::segment(frame, &h, |headers, payload| {
                        self.queue_tunnel(n, port, flow, headers, payload, false, out);
                    });
                    if r.is_err() {
                        n.sw.counters().dropped(DropReason::BadOffload);
                    }
                }
            },
            None => {}
        }
    }

    #[inline]
    fn flow(&self, frame: &[u8]) -> u32 {
        if self.spread_flows {
            tunnel::flow_hash(frame)
        } else {
            0
        }
    }

    /// Queues one message for tunnel `port`, flushing first if the sink is full.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn queue_tunnel<'a, S: Sink<'a>>(
        &mut self,
        n: NetView<'_>,
        port: PortId,
        flow: u32,
        headers: &[u8],
        payload: &'a [u8],
        fragmentable: bool,
        out: &mut S,
    ) {
        let Some(dest) = n.dest(port) else {
            return;
        };
        let seal = match n.hosts {
            None => None,
            Some(h) => match h.get(*dest.ip()) {
                Some(id) => Some(id),
                None => {
                    // A host with no crypto identity gets nothing in clear.
                    n.global.add_crypto(&no_session());
                    return;
                }
            },
        };
        if out.tunnel_full() {
            self.flush(n.all, n.global, out);
        }
        let msg = TunnelMsg {
            net: n.id,
            port,
            dest,
            path_mtu: n.sw.path_mtu(port),
            gre: n.repr(port),
            headers,
            flow,
            fragmentable,
            seal,
        };
        out.push_tunnel(&msg, payload);
    }

    /// `frame` (from `ingress`) does not fit tunnel `port` with DF: answers with ICMP through
    /// the ingress port, or drops it, as the core says. `Some(fragmentable)` when it is to be
    /// sent after all.
    #[cold]
    fn oversize(
        &mut self,
        n: NetView<'_>,
        ingress: PortId,
        port: PortId,
        frame: &[u8],
    ) -> Option<bool> {
        let mut reply = [0u8; icmp::MAX_REPLY];
        match n.sw.fit(port, frame, frame.len(), &mut reply) {
            Outcome::Send => Some(false),
            Outcome::Fragment => Some(true),
            Outcome::Drop => None,
            Outcome::Reply(len) => {
                let dest = match n.sw.port(ingress) {
                    Some(PortKind::Local) => Some(Dest::Tap),
                    Some(PortKind::Tunnel(_)) => Some(Dest::Tunnel { fragmentable: true }),
                    None => None,
                };
                if let Some(d) = dest {
                    if !self.outbox.push(n.id, ingress, d, true, &reply[..len]) {
                        n.sw.counters().dropped(DropReason::TxQueueFull);
                    }
                }
                None
            }
        }
    }

    /// Writes one frame to network `n`'s TAP as is (behind an empty virtio-net header when
    /// offloads are on).
    #[inline]
    pub fn write_tap_frame<'a, S: Sink<'a>>(&mut self, n: NetView<'_>, frame: &[u8], out: &mut S) {
        let head: &[u8] = if self.vnet { &NO_OFFLOAD } else { &[] };
        match out.write_tap(n.id, head, &[frame]) {
            Ok(()) => n.sw.counters().tx(0, frame.len()),
            Err(_) => n.sw.counters().dropped(DropReason::TapWriteError),
        }
    }

    /// Writes TCP super-frame `frame` (described by `h`, which asks for a completed checksum)
    /// to network `n`'s TAP: whole behind `h` when offloads are on, else cut into segments
    /// written one by one.
    fn write_tap_super<'a, S: Sink<'a>>(
        &mut self,
        n: NetView<'_>,
        frame: &[u8],
        h: &VnetHdr,
        out: &mut S,
    ) {
        if self.vnet {
            let mut head = [0u8; vnet::LEN];
            h.emit(&mut head);
            match out.write_tap(n.id, &head, &[frame]) {
                Ok(()) => {
                    let (k, wire) = offload::gso::wire_size(frame, h).unwrap_or((1, frame.len()));
                    n.sw.counters().tx_many(0, k, wire);
                }
                Err(_) => n.sw.counters().dropped(DropReason::TapWriteError),
            }
            return;
        }
        let r = offload::gso::segment(frame, h, |headers, payload| {
            match out.write_tap(n.id, &[], &[headers, payload]) {
                Ok(()) => n.sw.counters().tx(0, headers.len() + payload.len()),
                Err(_) => n.sw.counters().dropped(DropReason::TapWriteError),
            }
        });
        if r.is_err() {
            n.sw.counters().dropped(DropReason::BadOffload);
        }
    }

    /// A frame from a tunnel, for network `n`'s TAP: coalesced into `runs` if it continues
    /// one (TCP segments, or UDP datagrams of one flow, when offloads are on), else written
    /// after whatever `runs` held. Returns false when it was not taken (the caller sends it as
    /// usual, after the runs were written).
    pub fn coalesce<'a, S: Sink<'a>>(
        &mut self,
        n: NetView<'_>,
        frame: &'a [u8],
        runs: &mut TapRuns<'a>,
        out: &mut S,
    ) -> bool {
        if !self.vnet {
            return false;
        }
        if runs.net != Some(n.id) {
            // Runs hold one network's frames.
            self.write_runs(n.all, runs, out);
            runs.net = Some(n.id);
        }
        let udp = self.udp_coalesce;
        let mut add = runs.tcp.add(frame);
        if add == Add::Alone && udp {
            add = runs.udp.add(frame);
        }
        match add {
            Add::Added => true,
            Add::Mismatch => {
                self.write_runs(n.all, runs, out);
                runs.net = Some(n.id);
                runs.tcp.add(frame) == Add::Added || (udp && runs.udp.add(frame) == Add::Added)
            }
            Add::Alone => {
                self.write_runs(n.all, runs, out);
                false
            }
        }
    }

    /// Writes the coalesced runs in `runs` (if any) to their network's TAP, one frame each;
    /// `all` are the networks' counters, by id.
    pub fn write_runs<'a, S: Sink<'a>>(
        &mut self,
        all: &[Arc<Counters>],
        runs: &mut TapRuns<'_>,
        out: &mut S,
    ) {
        let Some(net) = runs.net.take() else {
            return;
        };
        let Some(counters) = all.get(usize::from(net)) else {
            return;
        };
        let mut head = [0u8; vnet::LEN + MAX_HEADERS];
        if !runs.tcp.is_empty() {
            let (hl, parts) = runs.tcp.finish(&mut head);
            // A failed write is counted there.
            let _ = write_run(counters, net, &head[..hl], parts, out);
        }
        if !runs.udp.is_empty() {
            let (hl, parts) = runs.udp.finish(&mut head);
            let k = parts.len();
            match write_run(counters, net, &head[..hl], parts, out) {
                Ok(()) if k > 1 => counters.event(Event::UdpCoalesced),
                Err(TapWriteError::Refused) if k > 1 => {
                    self.udp_coalesce = false;
                    log::warn!(
                        "worker {}: the TAP refused a UDP GSO frame; writing UDP datagrams one \
                         by one from now on",
                        self.id
                    );
                }
                _ => {}
            }
        }
    }

    /// Sends what the sink holds for the tunnels and counts each outcome on its network's
    /// counters (`all`, by network id), and GSO messages on the switch-wide `global` ones.
    pub fn flush<'a, S: Sink<'a>>(
        &mut self,
        all: &[Arc<Counters>],
        global: &Counters,
        out: &mut S,
    ) {
        if out.tunnel_empty() {
            return;
        }
        let mut too_big = false;
        let f = out.flush_tunnels(|net, port, len, r| {
            let Some(c) = all.get(usize::from(net)) else {
                return;
            };
            match r {
                SendOutcome::Sent => c.tx(port, len),
                SendOutcome::TooBig => {
                    c.dropped(DropReason::TooBig);
                    too_big = true;
                }
                SendOutcome::QueueFull => c.dropped(DropReason::TxQueueFull),
                SendOutcome::Error => c.dropped(DropReason::TxError),
            }
        });
        global.events_add(Event::UdpGsoSent, f.gso_messages);
        global.add_crypto(&f.crypto);
        if too_big || f.gso_too_big {
            self.pmtu.too_big();
        }
    }
}

/// Writes a run's headers (`head`, virtio-net header first) and payloads as one frame to
/// network `net`'s TAP, counted as the segments that arrived, so counters read the same with
/// offloads off.
fn write_run<'a, S: Sink<'a>>(
    counters: &Counters,
    net: NetId,
    head: &[u8],
    parts: &[&[u8]],
    out: &mut S,
) -> Result<(), TapWriteError> {
    let per_part = head.len() - vnet::LEN;
    let wire: usize = parts.iter().map(|p| per_part + p.len()).sum();
    let r = out.write_tap(net, head, parts);
    match r {
        Ok(()) => counters.tx_many(0, parts.len() as u64, wire),
        Err(_) => {
            for _ in parts {
                counters.dropped(DropReason::TapWriteError);
            }
        }
    }
    r
}

/// A super-frame's segmentation header with the segment size lowered, if needed, so each
/// segment fits tunnel `port`'s path (TCP is resegmented rather than refused).
#[inline]
fn fit_gso(sw: &Switch, port: PortId, frame: &[u8], h: &VnetHdr) -> VnetHdr {
    let mut h = *h;
    let max = sw.max_tunnel_frame(port);
    if max != usize::MAX {
        if let Some(lay) = offload::tcp_layout(frame) {
            let room = max.saturating_sub(lay.payload);
            if (64..usize::from(h.gso_size)).contains(&room) {
                h.gso_size = room as u16;
            }
        }
    }
    h
}
