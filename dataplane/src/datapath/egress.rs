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
use super::sink::{Sink, TapWriteError, TunnelMsg};
use super::timers::PmtuSchedule;
use super::SendOutcome;
use crate::offload::gro::{Add, Gro};
use crate::offload::udp_gro::UdpGro;
use crate::offload::{self, MAX_HEADERS};
use crate::switch::pmtu::Outcome;
use crate::switch::tunnel::{self, GreOptions};
use crate::switch::{Action, DropReason, Event, PortId, PortKind, Switch};
use crate::wire::vnet::{self, VnetHdr};
use crate::wire::{gre, icmp};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Outer IPv4 + UDP header bytes of a GRE-in-UDP datagram.
pub const OUTER_IP_UDP: usize = 28;

/// An all-zero virtio-net header: nothing for the kernel to do.
const NO_OFFLOAD: [u8; vnet::LEN] = [0; vnet::LEN];

/// Frames from tunnels bound for the TAP, coalesced while one receive burst is handled: a TCP
/// run and a UDP run, each of one flow.
#[derive(Default)]
pub struct TapRuns<'a> {
    tcp: Gro<'a>,
    udp: UdpGro<'a>,
}

/// Per-worker sending state.
pub struct Egress {
    /// Worker index, for logs.
    id: usize,
    gre: GreOptions,
    /// Per-port GRE sequence numbers, shared by the workers (only used with `--seq`).
    seq: Arc<[AtomicU32]>,
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
    pub fn new(
        id: usize,
        gre: GreOptions,
        seq: Arc<[AtomicU32]>,
        vnet: bool,
        udp_coalesce: bool,
        pmtu: PmtuSchedule,
    ) -> Egress {
        Egress {
            id,
            gre,
            seq,
            spread_flows: gre.udp_port.is_some(),
            vnet,
            udp_coalesce: vnet && udp_coalesce,
            outbox: Outbox::default(),
            pmtu,
        }
    }

    /// The GRE header for the next message to `port`.
    #[inline]
    fn repr(&self, port: PortId) -> gre::Repr {
        let seq = if self.gre.seq {
            self.seq
                .get(usize::from(port))
                .map_or(0, |s| s.fetch_add(1, Ordering::Relaxed))
        } else {
            0
        };
        self.gre.repr(seq)
    }

    /// The GRE header for a frame the core made (see [`super::Core::poll_transmit`]).
    pub fn control_repr(&self, port: PortId) -> gre::Repr {
        self.repr(port)
    }

    /// Sends `frame` (from `ingress`) wherever `action` says. `gso` describes a TCP super-frame
    /// from the TAP, which tunnels get as segments that fit their path.
    #[inline]
    pub fn output<'a, S: Sink<'a>>(
        &mut self,
        sw: &Switch,
        ingress: PortId,
        action: Action,
        frame: &'a [u8],
        gso: Option<&VnetHdr>,
        out: &mut S,
    ) {
        match action {
            Action::Drop(_) => {}
            Action::Forward(p) => self.output_one(sw, ingress, p, frame, gso, out),
            Action::Flood => {
                for p in sw.flood_targets(ingress) {
                    self.output_one(sw, ingress, p, frame, gso, out);
                }
            }
        }
    }

    #[inline]
    fn output_one<'a, S: Sink<'a>>(
        &mut self,
        sw: &Switch,
        ingress: PortId,
        port: PortId,
        frame: &'a [u8],
        gso: Option<&VnetHdr>,
        out: &mut S,
    ) {
        match sw.port(port) {
            Some(PortKind::Local) => self.write_tap_frame(sw, frame, out),
            Some(PortKind::Tunnel(_)) => match gso {
                None => {
                    let mut fragmentable = false;
                    if frame.len() > sw.max_tunnel_frame(port) {
                        match self.oversize(sw, ingress, port, frame) {
                            Some(f) => fragmentable = f,
                            None => return,
                        }
                    }
                    let flow = self.flow(frame);
                    self.queue_tunnel(sw, port, flow, &[], frame, fragmentable, out);
                }
                Some(h) => {
                    let h = fit_gso(sw, port, frame, h);
                    // Every segment is of the super-frame's flow.
                    let flow = self.flow(frame);
                    let r = offload::gso::segment(frame, &h, |headers, payload| {
                        self.queue_tunnel(sw, port, flow, headers, payload, false, out);
                    });
                    if r.is_err() {
                        sw.counters().dropped(DropReason::BadOffload);
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
        sw: &Switch,
        port: PortId,
        flow: u32,
        headers: &[u8],
        payload: &'a [u8],
        fragmentable: bool,
        out: &mut S,
    ) {
        if out.tunnel_full() {
            self.flush(sw, out);
        }
        let msg = TunnelMsg {
            port,
            gre: self.repr(port),
            headers,
            flow,
            fragmentable,
        };
        out.push_tunnel(&msg, payload);
    }

    /// `frame` (from `ingress`) does not fit tunnel `port` with DF: answers with ICMP through
    /// the ingress port, or drops it, as the core says. `Some(fragmentable)` when it is to be
    /// sent after all.
    #[cold]
    fn oversize(
        &mut self,
        sw: &Switch,
        ingress: PortId,
        port: PortId,
        frame: &[u8],
    ) -> Option<bool> {
        let mut reply = [0u8; icmp::MAX_REPLY];
        match sw.fit(port, frame, frame.len(), &mut reply) {
            Outcome::Send => Some(false),
            Outcome::Fragment => Some(true),
            Outcome::Drop => None,
            Outcome::Reply(n) => {
                let dest = match sw.port(ingress) {
                    Some(PortKind::Local) => Some(Dest::Tap),
                    Some(PortKind::Tunnel(_)) => Some(Dest::Tunnel { fragmentable: true }),
                    None => None,
                };
                if let Some(d) = dest {
                    if !self.outbox.push(ingress, d, true, &reply[..n]) {
                        sw.counters().dropped(DropReason::TxQueueFull);
                    }
                }
                None
            }
        }
    }

    /// Writes one frame to the TAP as is (behind an empty virtio-net header when offloads are
    /// on).
    #[inline]
    pub fn write_tap_frame<'a, S: Sink<'a>>(&mut self, sw: &Switch, frame: &[u8], out: &mut S) {
        let head: &[u8] = if self.vnet { &NO_OFFLOAD } else { &[] };
        match out.write_tap(head, &[frame]) {
            Ok(()) => sw.counters().tx(0, frame.len()),
            Err(_) => sw.counters().dropped(DropReason::TapWriteError),
        }
    }

    /// A frame from a tunnel, for the TAP: coalesced into `runs` if it continues one (TCP
    /// segments, or UDP datagrams of one flow, when offloads are on), else written after
    /// whatever `runs` held. Returns false when it was not taken (the caller sends it as
    /// usual, after the runs were written).
    pub fn coalesce<'a, S: Sink<'a>>(
        &mut self,
        sw: &Switch,
        frame: &'a [u8],
        runs: &mut TapRuns<'a>,
        out: &mut S,
    ) -> bool {
        if !self.vnet {
            return false;
        }
        let udp = self.udp_coalesce;
        let mut add = runs.tcp.add(frame);
        if add == Add::Alone && udp {
            add = runs.udp.add(frame);
        }
        match add {
            Add::Added => true,
            Add::Mismatch => {
                self.write_runs(sw, runs, out);
                runs.tcp.add(frame) == Add::Added || (udp && runs.udp.add(frame) == Add::Added)
            }
            Add::Alone => {
                self.write_runs(sw, runs, out);
                false
            }
        }
    }

    /// Writes the coalesced runs in `runs` (if any) to the TAP, one frame each.
    pub fn write_runs<'a, S: Sink<'a>>(
        &mut self,
        sw: &Switch,
        runs: &mut TapRuns<'_>,
        out: &mut S,
    ) {
        let mut head = [0u8; vnet::LEN + MAX_HEADERS];
        if !runs.tcp.is_empty() {
            let (hl, parts) = runs.tcp.finish(&mut head);
            // A failed write is counted there.
            let _ = write_run(sw, &head[..hl], parts, out);
        }
        if !runs.udp.is_empty() {
            let (hl, parts) = runs.udp.finish(&mut head);
            let n = parts.len();
            match write_run(sw, &head[..hl], parts, out) {
                Ok(()) if n > 1 => sw.counters().event(Event::UdpCoalesced),
                Err(TapWriteError::Refused) if n > 1 => {
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

    /// Sends what the sink holds for the tunnels and counts the outcomes.
    pub fn flush<'a, S: Sink<'a>>(&mut self, sw: &Switch, out: &mut S) {
        if out.tunnel_empty() {
            return;
        }
        let c = sw.counters();
        let mut too_big = false;
        let f = out.flush_tunnels(
            |port, len| {
                sw.path_mtu(port)
                    .is_none_or(|m| len + OUTER_IP_UDP <= m as usize)
            },
            |port, len, r| match r {
                SendOutcome::Sent => c.tx(port, len),
                SendOutcome::TooBig => {
                    c.dropped(DropReason::TooBig);
                    too_big = true;
                }
                SendOutcome::QueueFull => c.dropped(DropReason::TxQueueFull),
                SendOutcome::Error => c.dropped(DropReason::TxError),
            },
        );
        c.events_add(Event::UdpGsoSent, f.gso_messages);
        if too_big || f.gso_too_big {
            self.pmtu.too_big();
        }
    }
}

/// Writes a run's headers (`head`, virtio-net header first) and payloads as one frame, counted
/// as the segments that arrived, so counters read the same with offloads off.
fn write_run<'a, S: Sink<'a>>(
    sw: &Switch,
    head: &[u8],
    parts: &[&[u8]],
    out: &mut S,
) -> Result<(), TapWriteError> {
    let per_part = head.len() - vnet::LEN;
    let wire: usize = parts.iter().map(|p| per_part + p.len()).sum();
    let r = out.write_tap(head, parts);
    match r {
        Ok(()) => sw.counters().tx_many(0, parts.len() as u64, wire),
        Err(_) => {
            for _ in parts {
                sw.counters().dropped(DropReason::TapWriteError);
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
