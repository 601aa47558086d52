//! Ports of the switch and their counters.
//!
//! Port 0 is the local TAP; ports 1.. are GRE tunnels to peers, in configuration order.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Index of a port.
pub type PortId = u16;

/// Index of an overlay network within a switch (0: the first, or only, one). Each network
/// has its own ports, numbered from 0 (its TAP).
pub type NetId = u16;

/// Most ports a switch can have (TAP + tunnels). Counters are preallocated for all of them so
/// nothing is allocated when a peer is added at run time.
pub const MAX_PORTS: usize = 1024;

/// What is behind a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortKind {
    /// A local TAP (containers on this host).
    Local,
    /// A GRE tunnel to the peer host at this underlay address.
    Tunnel(Ipv4Addr),
}

impl PortKind {
    /// True for tunnels.
    #[inline]
    pub fn is_tunnel(&self) -> bool {
        matches!(self, PortKind::Tunnel(_))
    }
}

/// A counter written by exactly one thread (its worker) and read by others (the control
/// socket). A relaxed load + store is a plain `mov` on x86: no locked instruction per frame.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker may call this (single writer).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Overwrites the value (single writer only; for gauges such as table size).
    #[inline]
    pub fn reset_to(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Per-port counters, from the switch's point of view (rx = frames into the switch on this
/// port; bytes are inner Ethernet frame bytes).
#[derive(Default, Debug)]
pub struct PortCounters {
    /// Frames received.
    pub rx_packets: Counter,
    /// Bytes received.
    pub rx_bytes: Counter,
    /// Frames sent.
    pub tx_packets: Counter,
    /// Bytes sent.
    pub tx_bytes: Counter,
    /// Control frames received and consumed (BPDUs, keepalive hellos): not traffic, but proof
    /// the peer is there.
    pub rx_control: Counter,
}

impl PortCounters {
    /// Zeroes the counters (single writer only: when a port id is reused).
    pub fn reset(&self) {
        for c in [
            &self.rx_packets,
            &self.rx_bytes,
            &self.tx_packets,
            &self.tx_bytes,
            &self.rx_control,
        ] {
            c.reset_to(0);
        }
    }
}

/// Every reason a frame or packet is dropped. The discriminant indexes the drop counters,
/// and [`DropReason::name`] is the stable name shown by `dnetctl stats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum DropReason {
    /// Outer IPv4 header truncated or malformed, or not GRE.
    BadOuterIp = 0,
    /// GRE header truncated.
    GreTruncated,
    /// GRE version ≠ 0.
    GreVersion,
    /// GRE routing / strict-source-route bits (RFC 1701 features).
    GreRouting,
    /// GRE protocol type other than 0x6558.
    GreProtocol,
    /// GRE checksum present and wrong.
    GreChecksum,
    /// GRE key absent or not the configured one.
    WrongKey,
    /// GRE from an address that is not a configured peer.
    UnknownPeer,
    /// Inner frame shorter than an Ethernet header.
    Runt,
    /// Inner frame longer than the local MTU allows.
    Giant,
    /// Source MAC is multicast, broadcast or zero.
    BadSourceMac,
    /// Destination is behind the port the frame came in on (normal bridge filtering).
    SamePort,
    /// Tunnel-to-tunnel forwarding refused by split horizon.
    SplitHorizon,
    /// Received GRE packet larger than the receive buffer.
    Oversize,
    /// Encapsulated packet does not fit the path (EMSGSIZE with DF set).
    TooBig,
    /// Sending to a peer failed (other than EMSGSIZE / a full queue).
    TxError,
    /// The socket's send queue was full (EAGAIN/ENOBUFS).
    TxQueueFull,
    /// Writing a frame to the TAP failed.
    TapWriteError,
    /// A frame from the TAP whose virtio-net offload header could not be honoured.
    BadOffload,
    /// A flooded frame over its ingress port's `--flood-limit`.
    FloodLimit,
    /// Did not fit the tunnel's path MTU and must not be fragmented (IPv4 with DF, IPv6): the
    /// sender was answered with ICMP fragmentation-needed / Packet Too Big.
    TooBigIcmp,
    /// A broadcast or multicast frame that did not fit a tunnel's path MTU.
    TooBigGroup,
    /// From or to a tunnel the loop guard blocked (stations flapping with the local port).
    LoopGuard,
    /// From or to a tunnel the spanning tree does not let forward (`--stp`).
    StpDiscarding,
    /// Addressed to the bridge group address but not a valid BPDU (`--stp`).
    BadBpdu,
    /// A BPDU from the local side: a bridge behind the TAP runs STP, and the TAP is an edge
    /// port, so dnet neither forwards nor obeys it (`--stp`).
    EdgeBpdu,
    /// A plain GRE packet the kernel could not copy into a full packet receive ring
    /// (`--packet-rings`): the worker fell behind, as a full socket buffer would have.
    RxRingFull,
}

impl DropReason {
    /// Number of reasons.
    pub const COUNT: usize = DropReason::RxRingFull as usize + 1;
    /// Every reason, in counter order.
    pub const ALL: [DropReason; DropReason::COUNT] = [
        DropReason::BadOuterIp,
        DropReason::GreTruncated,
        DropReason::GreVersion,
        DropReason::GreRouting,
        DropReason::GreProtocol,
        DropReason::GreChecksum,
        DropReason::WrongKey,
        DropReason::UnknownPeer,
        DropReason::Runt,
        DropReason::Giant,
        DropReason::BadSourceMac,
        DropReason::SamePort,
        DropReason::SplitHorizon,
        DropReason::Oversize,
        DropReason::TooBig,
        DropReason::TxError,
        DropReason::TxQueueFull,
        DropReason::TapWriteError,
        DropReason::BadOffload,
        DropReason::FloodLimit,
        DropReason::TooBigIcmp,
        DropReason::TooBigGroup,
        DropReason::LoopGuard,
        DropReason::StpDiscarding,
        DropReason::BadBpdu,
        DropReason::EdgeBpdu,
        DropReason::RxRingFull,
    ];

    /// Stable snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::BadOuterIp => "bad_outer_ip",
            DropReason::GreTruncated => "gre_truncated",
            DropReason::GreVersion => "gre_version",
            DropReason::GreRouting => "gre_routing",
            DropReason::GreProtocol => "gre_protocol",
            DropReason::GreChecksum => "gre_checksum",
            DropReason::WrongKey => "wrong_key",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::Runt => "runt",
            DropReason::Giant => "giant",
            DropReason::BadSourceMac => "bad_source_mac",
            DropReason::SamePort => "same_port",
            DropReason::SplitHorizon => "split_horizon",
            DropReason::Oversize => "oversize",
            DropReason::TooBig => "too_big",
            DropReason::TxError => "tx_error",
            DropReason::TxQueueFull => "tx_queue_full",
            DropReason::TapWriteError => "tap_write_error",
            DropReason::BadOffload => "bad_offload",
            DropReason::FloodLimit => "flood_limit",
            DropReason::TooBigIcmp => "too_big_icmp",
            DropReason::TooBigGroup => "too_big_group",
            DropReason::LoopGuard => "loop_guard",
            DropReason::StpDiscarding => "stp_discarding",
            DropReason::BadBpdu => "bad_bpdu",
            DropReason::EdgeBpdu => "edge_bpdu",
            DropReason::RxRingFull => "rx_ring_full",
        }
    }
}

/// Things worth counting that are not drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Event {
    /// A source could not be learned because the MAC table is full (the frame still flooded).
    FdbFull = 0,
    /// A learned MAC appeared on another port.
    MacMove,
    /// A frame was flooded (unknown unicast, broadcast or multicast).
    Flood,
    /// A learning update for another worker was lost because its queue was full.
    LearnSyncLost,
    /// A frame larger than the path MTU sent with outer DF off (the kernel fragments it).
    Fragmented,
    /// A tunnel's path MTU changed.
    PathMtuChange,
    /// A peer stopped answering keepalives (its MACs were flushed).
    PeerDown,
    /// A peer (re)started answering keepalives.
    PeerUp,
    /// A MAC flapped between the local port and a tunnel (a loop through the local side).
    LoopDetected,
    /// A BPDU received on a tunnel (`--stp`).
    BpduRx,
    /// A BPDU sent on a tunnel (`--stp`).
    BpduTx,
    /// The spanning tree told the workers to forget stations learned on tunnels (a topology
    /// change or a port starting or stopping to forward).
    StpFlush,
    /// Several GRE-in-UDP datagrams sent as one UDP GSO message (`--encap udp`): segments of
    /// a TCP super-frame, or a run of equal-sized frames of one burst to the same peer.
    UdpGsoSent,
    /// A read that returned several GRE-in-UDP datagrams coalesced by `UDP_GRO`.
    UdpGroReceived,
    /// Several UDP datagrams of one flow from a tunnel written to the TAP as one UDP GSO
    /// frame (offloads on; the container's stack splits it back).
    UdpCoalesced,
    /// A plain GRE packet that could have left through the packet ring went through the raw
    /// socket instead: its peer's next hop was not resolved (yet), its neighbour entry needed
    /// confirming, or the ring was full (`--packet-rings`).
    RingFallback,
    /// A plain GRE packet that the underlay's GRO had merged from several TCP segments of one
    /// flow (a NIC's receive offload): passed on as one TCP super-frame, not dropped as giant.
    GreGroReceived,
    /// Traffic a worker found while busy polling after an exchange (`--busy-poll`): a wake-up
    /// saved.
    BusyPollHit,
    /// A busy-poll window that ended without traffic: up to `--busy-poll` microseconds of a
    /// core spent in vain (bounded to a share of the time, see [`crate::io::busy_poll`]).
    BusyPollMiss,
}

impl Event {
    /// Number of events.
    pub const COUNT: usize = Event::BusyPollMiss as usize + 1;
    /// Every event, in counter order.
    pub const ALL: [Event; Event::COUNT] = [
        Event::FdbFull,
        Event::MacMove,
        Event::Flood,
        Event::LearnSyncLost,
        Event::Fragmented,
        Event::PathMtuChange,
        Event::PeerDown,
        Event::PeerUp,
        Event::LoopDetected,
        Event::BpduRx,
        Event::BpduTx,
        Event::StpFlush,
        Event::UdpGsoSent,
        Event::UdpGroReceived,
        Event::UdpCoalesced,
        Event::RingFallback,
        Event::GreGroReceived,
        Event::BusyPollHit,
        Event::BusyPollMiss,
    ];

    /// Stable snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Event::FdbFull => "fdb_full",
            Event::MacMove => "mac_move",
            Event::Flood => "flood",
            Event::LearnSyncLost => "learn_sync_lost",
            Event::Fragmented => "fragmented",
            Event::PathMtuChange => "path_mtu_change",
            Event::PeerDown => "peer_down",
            Event::PeerUp => "peer_up",
            Event::LoopDetected => "loop_detected",
            Event::BpduRx => "bpdu_rx",
            Event::BpduTx => "bpdu_tx",
            Event::StpFlush => "stp_flush",
            Event::UdpGsoSent => "udp_gso_sent",
            Event::UdpGroReceived => "udp_gro_received",
            Event::UdpCoalesced => "udp_coalesced",
            Event::RingFallback => "ring_fallback",
            Event::GreGroReceived => "gre_gro_received",
            Event::BusyPollHit => "busy_poll_hit",
            Event::BusyPollMiss => "busy_poll_miss",
        }
    }
}

/// All counters of one worker. Allocated once; the worker writes, anyone reads.
#[derive(Debug)]
pub struct Counters {
    /// Indexed by [`PortId`].
    pub ports: Box<[PortCounters]>,
    /// Indexed by [`DropReason`].
    pub drops: [Counter; DropReason::COUNT],
    /// Indexed by [`Event`].
    pub events: [Counter; Event::COUNT],
    /// MAC table size as last seen by the worker.
    pub fdb_entries: Counter,
    /// Datagrams and handshake messages the tunnel encryption dropped (`--encrypt`), indexed
    /// by [`dnet_crypto::Reject`].
    pub crypto_drops: [Counter; dnet_crypto::Reject::COUNT],
    /// What the tunnel encryption did (handshakes, sessions), indexed by
    /// [`dnet_crypto::Event`].
    pub crypto_events: [Counter; dnet_crypto::Event::COUNT],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            ports: (0..MAX_PORTS).map(|_| PortCounters::default()).collect(),
            drops: Default::default(),
            events: Default::default(),
            fdb_entries: Counter::default(),
            crypto_drops: Default::default(),
            crypto_events: Default::default(),
        }
    }
}

impl Counters {
    /// Counts one drop.
    #[inline]
    pub fn dropped(&self, why: DropReason) {
        self.drops[why as usize].add(1);
    }

    /// Counts one event.
    #[inline]
    pub fn event(&self, what: Event) {
        self.events[what as usize].add(1);
    }

    /// Counts `n` events of one kind.
    #[inline]
    pub fn events_add(&self, what: Event, n: u64) {
        if n > 0 {
            self.events[what as usize].add(n);
        }
    }

    /// Adds what the tunnel encryption counted.
    pub fn add_crypto(&self, c: &dnet_crypto::Counts) {
        for r in dnet_crypto::Reject::ALL {
            let n = c.dropped(r);
            if n > 0 {
                self.crypto_drops[r as usize].add(n);
            }
        }
        for e in dnet_crypto::Event::ALL {
            let n = c.count(e);
            if n > 0 {
                self.crypto_events[e as usize].add(n);
            }
        }
    }

    /// Counts a received frame.
    #[inline]
    pub fn rx(&self, port: PortId, bytes: usize) {
        self.rx_many(port, 1, bytes);
    }

    /// Counts `packets` received frames totalling `bytes`.
    #[inline]
    pub fn rx_many(&self, port: PortId, packets: u64, bytes: usize) {
        if let Some(c) = self.ports.get(usize::from(port)) {
            c.rx_packets.add(packets);
            c.rx_bytes.add(bytes as u64);
        }
    }

    /// Counts a sent frame.
    #[inline]
    pub fn tx(&self, port: PortId, bytes: usize) {
        self.tx_many(port, 1, bytes);
    }

    /// Counts `packets` sent frames totalling `bytes`.
    #[inline]
    pub fn tx_many(&self, port: PortId, packets: u64, bytes: usize) {
        if let Some(c) = self.ports.get(usize::from(port)) {
            c.tx_packets.add(packets);
            c.tx_bytes.add(bytes as u64);
        }
    }
}
