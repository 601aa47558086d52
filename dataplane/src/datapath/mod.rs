//! The per-worker sans-io core, in quinn-proto's shape: every decision a worker makes, with no
//! socket, no file descriptor and no clock.
//!
//! Inputs (`handle_*`, time passed in): frames from the TAP, datagrams from a tunnel socket,
//! the outcome of a frame the core asked to send, a path MTU the edge read, a learning update
//! from another worker, and the passing of time. Outputs: forwarded frames go to the [`Sink`]
//! the edge passes in (borrowed, never copied); frames the core makes itself (hellos, BPDUs,
//! ICMP errors) come out of [`Core::poll_transmit`]; path MTUs to read out of
//! [`Core::poll_path_mtu_query`]; learning updates for the other workers out of
//! [`Core::poll_sync`]; and [`Core::poll_timeout`] says when to call [`Core::handle_timeout`].
//!
//! The edge ([`crate::io::worker`]) is then a loop: wait for readiness or the core's next
//! deadline, read a burst, feed it to the core, send what it returns, drain the `poll_*`
//! queues.
//!
//! One core serves every overlay network of the switch ([`NetId`]): each network has its own
//! TAP, GRE key, [`crate::switch::Switch`] (ports, MAC table, counters) and peers; the
//! tunnel sockets are shared, and a datagram's GRE key says which network it belongs to. No
//! frame crosses between networks.
//!
//! Inside, [`crate::switch::Switch`] makes the forwarding decision and holds the MAC table;
//! [`egress`] turns decisions into messages; [`outbox`] holds the frames the core made;
//! [`timers`] says when periodic work is due.

pub mod egress;
pub mod outbox;
pub mod sink;
pub mod timers;

#[cfg(test)]
mod tests;

pub use crate::switch::NetId;
pub use outbox::Dest;
pub use sink::{Flushed, SendOutcome, Sink, TapWriteError, TunnelMsg, OUTER_IP_UDP};

use crate::offload;
use crate::switch::fdb::Entry;
use crate::switch::ratelimit::LogLimiter;
use crate::switch::tunnel::{self, GreOptions, PeerTable};
use crate::switch::{
    self, arp_watch, liveness, loopguard, stp, Action, Counters, DropReason, Event, FdbKey, Millis,
    PortId, PortKind, Switch, SyncUpdate,
};
use crate::wire::vnet::{self, VnetHdr};
use crate::wire::{bpdu, gre, ipv4};
use egress::{Egress, NetView, TapRuns};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Arc;
use timers::{PmtuSchedule, AGING_MS, STP_TICK_MS};

/// A datagram from a tunnel socket.
#[derive(Debug)]
pub struct Datagram<'a> {
    /// The sender's underlay address.
    pub source: Ipv4Addr,
    /// For plain GRE the whole IPv4 packet; for GRE-in-UDP the UDP payload (GRE header and
    /// frame, or with `--encrypt` a sealed one, opened in place), possibly several datagrams
    /// of `segment_size` bytes each.
    pub data: Payload<'a>,
    /// Set when the kernel coalesced several GRE-in-UDP datagrams (`UDP_GRO`): each but the
    /// last is this long.
    pub segment_size: Option<usize>,
    /// It did not fit the receive buffer and was cut short.
    pub truncated: bool,
}

/// The bytes of a [`Datagram`]: the receive buffers of the sockets are the core's to change
/// (a sealed datagram is opened in place), a packet ring's frames (plain GRE, never sealed)
/// are only read.
#[derive(Debug)]
pub enum Payload<'a> {
    /// Read only (a packet ring's frame).
    Shared(&'a [u8]),
    /// May be changed in place (a socket's receive buffer).
    Owned(&'a mut [u8]),
}

impl<'a> Payload<'a> {
    /// The bytes, for reading, for as long as the buffer lives.
    pub fn into_shared(self) -> &'a [u8] {
        match self {
            Payload::Shared(d) => d,
            Payload::Owned(d) => d,
        }
    }
}

impl std::ops::Deref for Payload<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Payload::Shared(d) => d,
            Payload::Owned(d) => d,
        }
    }
}

impl<'a> From<&'a [u8]> for Payload<'a> {
    fn from(d: &'a [u8]) -> Self {
        Payload::Shared(d)
    }
}

impl<'a> From<&'a mut [u8]> for Payload<'a> {
    fn from(d: &'a mut [u8]) -> Self {
        Payload::Owned(d)
    }
}

impl PartialEq<&[u8]> for Payload<'_> {
    fn eq(&self, other: &&[u8]) -> bool {
        **self == **other
    }
}

/// A frame the core made, to be sent now (from [`Core::poll_transmit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The network it belongs to.
    pub net: NetId,
    /// The port it leaves by.
    pub port: PortId,
    /// The TAP, or a tunnel (with outer DF off or not).
    pub dest: Dest,
    /// For a tunnel: where the peer listens.
    pub to: SocketAddrV4,
    /// For a tunnel: the GRE header to put first.
    pub gre: gre::Repr,
    /// Bytes of the frame, at the start of the buffer given to `poll_transmit`.
    pub len: usize,
    /// Counted as port traffic (ICMP errors are; hellos and BPDUs count as control).
    pub counted: bool,
    /// For a tunnel with `--encrypt`: seal it for this crypto peer.
    pub seal: Option<dnet_crypto::PeerId>,
}

/// One worker's MAC table of one network, copied for display.
#[derive(Debug, Clone)]
pub struct FdbDump {
    /// The worker's clock when copied.
    pub now: Millis,
    /// Every entry.
    pub entries: Vec<(FdbKey, Entry)>,
}

/// State the cores of one switch share for one network.
#[derive(Clone, Debug)]
pub struct NetShared {
    /// Per-port GRE sequence numbers (`--seq`).
    pub seq: Arc<[AtomicU32]>,
    /// Peer liveness (`--keepalive`).
    pub liveness: Arc<liveness::Shared>,
    /// The spanning tree (`--stp`).
    pub stp: Option<Arc<stp::Shared>>,
    /// Tunnels the loop guard blocked.
    pub loop_guard: Arc<loopguard::Shared>,
}

impl NetShared {
    /// Fresh shared state, with the spanning tree `stp` if any.
    pub fn new(stp: Option<Arc<stp::Shared>>) -> NetShared {
        NetShared {
            seq: (0..switch::MAX_PORTS).map(|_| AtomicU32::new(0)).collect(),
            liveness: Arc::new(liveness::Shared::default()),
            stp,
            loop_guard: Arc::default(),
        }
    }
}

/// The tunnel encryption of a switch (`--encrypt`), shared by its cores: the handshake
/// side behind a lock (touched a few times a minute), the sessions without one (every
/// datagram).
#[derive(Clone)]
pub struct Crypto {
    /// Handshakes, peers' keys, timers.
    pub endpoint: Arc<std::sync::Mutex<dnet_crypto::Endpoint>>,
    /// Sealing and opening.
    pub sessions: Arc<dnet_crypto::Sessions>,
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Crypto")
    }
}

impl Crypto {
    /// The shared state of `endpoint`.
    pub fn new(endpoint: dnet_crypto::Endpoint) -> Crypto {
        let sessions = endpoint.sessions().clone();
        Crypto {
            endpoint: Arc::new(std::sync::Mutex::new(endpoint)),
            sessions,
        }
    }

    /// Runs `f` on the endpoint (a poisoned lock is taken over: the endpoint's state is
    /// consistent between calls).
    pub fn with<R>(&self, f: impl FnOnce(&mut dnet_crypto::Endpoint) -> R) -> R {
        let mut g = self
            .endpoint
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut g)
    }
}

/// State the cores of one switch share.
#[derive(Clone, Debug)]
pub struct Shared {
    /// Per network, by [`NetId`].
    pub nets: Vec<NetShared>,
    /// The tunnel encryption, with `--encrypt`.
    pub crypto: Option<Crypto>,
    /// Bumped when any worker sees a send refused as too big, so every worker re-reads the
    /// path MTUs.
    pub pmtu_refusals: Arc<AtomicU64>,
}

impl Shared {
    /// Shared state for networks with these spanning trees (one entry per network).
    pub fn new(stps: Vec<Option<Arc<stp::Shared>>>) -> Shared {
        Shared {
            nets: stps.into_iter().map(NetShared::new).collect(),
            crypto: None,
            pmtu_refusals: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// Settings of one network within a core.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Its GRE key (`None` and 0 are the same network, as in OVS). Keys are distinct.
    pub key: Option<u32>,
    /// Its switch core's settings.
    pub switch: switch::Config,
}

/// Settings of one core.
#[derive(Clone, Debug)]
pub struct Config {
    /// Worker index; worker 0 leads (keepalive state machine, spanning-tree timers).
    pub id: usize,
    /// GRE options every network shares (GRE-in-UDP when `udp_port` is set, checksums,
    /// sequence numbers); each network's key comes from [`NetConfig`].
    pub gre: GreOptions,
    /// Outer DF is set (else frames are never checked against the path MTU).
    pub df: bool,
    /// TAP frames carry a virtio-net header (offloads on).
    pub vnet: bool,
    /// The TAPs take UDP GSO frames, so runs of datagrams may be written as one.
    pub udp_coalesce: bool,
    /// The networks, by [`NetId`]; at least one.
    pub nets: Vec<NetConfig>,
}

/// One network inside a core.
struct Net {
    switch: Switch,
    counters: Arc<Counters>,
    peers: PeerTable,
    gre: GreOptions,
    seq: Arc<[AtomicU32]>,
    stp_leader: bool,
    next_stp: Millis,
    /// The loop guard blocked a tunnel: the local bridge should forget what it learned on
    /// the TAP.
    bridge_flush: bool,
}

/// One worker's core.
pub struct Core {
    id: usize,
    nets: Vec<Net>,
    /// Each network's counters, by id (the egress counts sends on them).
    counters: Vec<Arc<Counters>>,
    /// What belongs to no one network: datagrams with an unknown key, from no network's
    /// peer, malformed before their key could be read; UDP GSO/GRO events.
    global: Arc<Counters>,
    /// GRE key → network, sorted by key.
    by_key: Vec<(u32, NetId)>,
    egress: Egress,
    udp: bool,
    vnet: bool,
    next_aging: Millis,
    sync_out: Vec<(NetId, SyncUpdate)>,
    sync_next: usize,
    pmtu_queries: Vec<(NetId, PortId, Ipv4Addr)>,
    /// Keeps logs about dropped packets to a few lines a second.
    drop_log: LogLimiter,
    /// The tunnel encryption (`--encrypt`).
    crypto: Option<Crypto>,
    /// Peer hosts by underlay address → crypto peer id (one per host, whatever networks it
    /// is in), and back.
    hosts: PeerTable,
    host_addr: Vec<Option<Ipv4Addr>>,
    /// When the crypto endpoint's timers are next due (worker 0 runs them).
    next_crypto: Millis,
}

impl Core {
    /// A core with each network's local port (0) and no tunnels. It writes each network's
    /// counters to `counters` (by id) and what belongs to no network to `global`.
    ///
    /// # Panics
    /// If `cfg.nets`, `shared.nets` and `counters` differ in length, or two networks share a
    /// key (the caller validates the configuration).
    pub fn new(
        cfg: Config,
        shared: &Shared,
        counters: Vec<Arc<Counters>>,
        global: Arc<Counters>,
    ) -> Core {
        assert_eq!(
            cfg.nets.len(),
            shared.nets.len(),
            "one shared state per network"
        );
        assert_eq!(
            cfg.nets.len(),
            counters.len(),
            "one counter set per network"
        );
        let mut by_key = Vec::new();
        let mut nets = Vec::new();
        for (i, ((nc, sh), c)) in cfg.nets.iter().zip(&shared.nets).zip(&counters).enumerate() {
            let gre = GreOptions {
                key: nc.key,
                ..cfg.gre
            };
            let mut sw = Switch::new(nc.switch.clone(), c.clone());
            let seal = if shared.crypto.is_some() {
                dnet_crypto::wire::OVERHEAD
            } else {
                0
            };
            sw.set_outer(gre.overhead() + seal, cfg.df);
            sw.set_liveness(sh.liveness.clone(), cfg.id == 0);
            sw.set_loop_guard(sh.loop_guard.clone());
            if let Some(s) = &sh.stp {
                sw.set_stp(s.clone());
            }
            sw.set_port(0, PortKind::Local);
            by_key.push((nc.key.unwrap_or(0), i as NetId));
            nets.push(Net {
                switch: sw,
                counters: c.clone(),
                peers: PeerTable::default(),
                gre,
                seq: sh.seq.clone(),
                stp_leader: cfg.id == 0 && sh.stp.is_some(),
                next_stp: 0,
                bridge_flush: false,
            });
        }
        by_key.sort_unstable();
        assert!(
            by_key.windows(2).all(|w| w[0].0 != w[1].0),
            "two networks with one key"
        );
        Core {
            id: cfg.id,
            nets,
            counters,
            global,
            by_key,
            egress: Egress::new(
                cfg.id,
                cfg.gre.udp_port.is_some(),
                cfg.vnet,
                cfg.udp_coalesce,
                PmtuSchedule::new(shared.pmtu_refusals.clone()),
            ),
            udp: cfg.gre.udp_port.is_some(),
            vnet: cfg.vnet,
            next_aging: 0,
            sync_out: Vec::with_capacity(1024),
            sync_next: 0,
            pmtu_queries: Vec::new(),
            drop_log: LogLimiter::new(5, 10_000),
            crypto: shared.crypto.clone(),
            hosts: PeerTable::default(),
            host_addr: Vec::new(),
            next_crypto: 0,
        }
    }

    /// How many networks it serves.
    pub fn nets(&self) -> usize {
        self.nets.len()
    }

    /// Network `net`'s switch core (MAC table, ports, path MTUs), read-only.
    ///
    /// # Panics
    /// If there is no network `net`.
    pub fn switch(&self, net: NetId) -> &Switch {
        &self.nets[usize::from(net)].switch
    }

    /// Network `net`'s counters.
    ///
    /// # Panics
    /// If there is no network `net`.
    pub fn counters(&self, net: NetId) -> &Arc<Counters> {
        &self.counters[usize::from(net)]
    }

    /// The switch-wide counters (what belongs to no one network).
    pub fn global_counters(&self) -> &Arc<Counters> {
        &self.global
    }

    /// Adds (`Some`) or removes (`None`) port `id` of network `net`. A port's counters start
    /// from zero.
    pub fn set_port(&mut self, net: NetId, id: PortId, kind: Option<PortKind>) {
        let Some(n) = self.nets.get_mut(usize::from(net)) else {
            return;
        };
        if let Some(PortKind::Tunnel(old)) = n.switch.port(id) {
            n.peers.remove(old);
        }
        match kind {
            Some(k) => {
                if let Some(c) = n.counters.ports.get(usize::from(id)) {
                    c.reset();
                }
                if let PortKind::Tunnel(addr) = k {
                    n.peers.insert(addr, id);
                }
                n.switch.set_port(id, k);
            }
            None => n.switch.remove_port(id),
        }
    }

    /// Names peer host `addr` crypto peer `id` (`None`: forgets it). With `--encrypt` only
    /// datagrams a known host sealed are accepted, and a tunnel's frames are sealed for its
    /// host.
    pub fn set_host(&mut self, addr: Ipv4Addr, id: Option<dnet_crypto::PeerId>) {
        if let Some(old) = self.hosts.remove(addr) {
            if let Some(a) = self.host_addr.get_mut(usize::from(old)) {
                *a = None;
            }
        }
        if let Some(id) = id {
            self.hosts.insert(addr, id);
            let i = usize::from(id);
            if self.host_addr.len() <= i {
                self.host_addr.resize(i + 1, None);
            }
            self.host_addr[i] = Some(addr);
        }
    }

    /// Forgets the stations network `net` learned on `port` (all when `None`); returns how
    /// many.
    pub fn flush_fdb(&mut self, net: NetId, port: Option<PortId>) -> usize {
        self.nets
            .get_mut(usize::from(net))
            .map_or(0, |n| n.switch.flush(port))
    }

    /// A copy of network `net`'s MAC table, as of `now`.
    pub fn fdb_dump(&self, net: NetId, now: Millis) -> FdbDump {
        FdbDump {
            now,
            entries: self
                .nets
                .get(usize::from(net))
                .map(|n| n.switch.fdb().iter().collect())
                .unwrap_or_default(),
        }
    }

    /// A copy of network `net`'s ARP watcher's claims and conflicts, as of `now`.
    pub fn conflicts(&self, net: NetId, now: Millis) -> arp_watch::ArpDump {
        match self.nets.get(usize::from(net)) {
            Some(n) => n.switch.arp_watch().dump(now),
            None => arp_watch::ArpWatch::new().dump(now),
        }
    }

    /// Handles frames read from network `net`'s TAP (each behind its virtio-net header when
    /// offloads are on) and sends what they become through `out`. Frames are modified in
    /// place (checksums completed, MSS clamped).
    pub fn handle_tap_frames<'a, S: Sink<'a>>(
        &mut self,
        now: Millis,
        net: NetId,
        frames: impl IntoIterator<Item = &'a mut [u8]>,
        out: &mut S,
    ) {
        if usize::from(net) >= self.nets.len() {
            return;
        }
        for f in frames {
            self.tap_frame(now, net, f, out);
        }
        self.egress.flush(&self.counters, &self.global, out);
        let n = &mut self.nets[usize::from(net)];
        n.bridge_flush |= n.switch.take_loop_blocked();
    }

    #[inline]
    fn tap_frame<'a, S: Sink<'a>>(
        &mut self,
        now: Millis,
        net: NetId,
        slot: &'a mut [u8],
        out: &mut S,
    ) {
        let i = usize::from(net);
        let (frame, gso): (&'a [u8], Option<VnetHdr>) = if self.vnet {
            let Ok(h) = VnetHdr::parse(slot) else {
                self.counters[i].dropped(DropReason::BadOffload);
                return;
            };
            let frame: &'a mut [u8] = &mut slot[vnet::LEN..];
            if h.gso_kind() == vnet::gso::NONE {
                if offload::gso::complete_checksum(frame, &h).is_err() {
                    self.counters[i].dropped(DropReason::BadOffload);
                    return;
                }
                self.nets[i].switch.clamp_mss(frame);
                (frame, None)
            } else {
                (frame, Some(h))
            }
        } else {
            self.nets[i].switch.clamp_mss(slot);
            (slot, None)
        };
        let sw = &mut self.nets[i].switch;
        if sw.stp().is_some() && bpdu::is_bpdu(frame) {
            // The TAP is an edge port: a bridge behind it does not join the tree.
            self.counters[i].dropped(DropReason::EdgeBpdu);
            return;
        }
        let v = sw.handle(now, 0, frame);
        if let Some(h) = &gso {
            count_segments_rx(&self.counters[i], 0, frame, h);
        }
        if let Some(u) = v.sync {
            self.sync_out.push((net, u));
        }
        let view = net_view(
            &self.nets,
            &self.counters,
            &self.global,
            self.crypto.as_ref().map(|_| &self.hosts),
            net,
        );
        self.egress
            .output(view, 0, v.action, frame, gso.as_ref(), out);
    }

    /// Handles a burst of datagrams from the tunnel socket and sends what they become through
    /// `out`. Each datagram's GRE key picks its network. Consecutive frames of one flow for a
    /// TAP are coalesced into one super-frame when offloads are on, which is why this takes a
    /// whole burst.
    pub fn handle_tunnel_datagrams<'a, S: Sink<'a>>(
        &mut self,
        now: Millis,
        datagrams: impl IntoIterator<Item = Datagram<'a>>,
        out: &mut S,
    ) {
        let mut runs = TapRuns::default();
        let crypto = self.crypto.clone();
        for d in datagrams {
            if d.truncated {
                self.global.dropped(DropReason::Oversize);
                continue;
            }
            if !self.udp {
                let data: &'a [u8] = d.data.into_shared();
                match tunnel::open_ipv4(data) {
                    Ok((src, gre_bytes)) => self.gre_packet(now, src, gre_bytes, &mut runs, out),
                    Err(why) => self.gre_drop(now, data, why),
                }
                continue;
            }
            if d.data.is_empty() {
                self.global.dropped(DropReason::GreTruncated);
                continue;
            }
            let seg = match d.segment_size {
                Some(s) if s < d.data.len() => {
                    self.global.event(Event::UdpGroReceived);
                    s
                }
                _ => d.data.len(),
            };
            if let Some(c) = &crypto {
                match d.data {
                    Payload::Owned(data) => {
                        self.open_sealed(now, c, d.source, data, seg, &mut runs, out)
                    }
                    // Sealed datagrams come from the UDP sockets only (packet rings carry
                    // plain GRE); one that cannot be opened in place is not accepted.
                    Payload::Shared(_) => {
                        let mut refused = dnet_crypto::Counts::default();
                        refused.reject(dnet_crypto::Reject::UnknownType);
                        self.global.add_crypto(&refused);
                    }
                }
                continue;
            }
            let data: &'a [u8] = d.data.into_shared();
            for chunk in data.chunks(seg) {
                self.gre_packet(now, d.source, chunk, &mut runs, out);
            }
        }
        self.egress.write_runs(&self.counters, &mut runs, out);
        self.egress.flush(&self.counters, &self.global, out);
        for n in &mut self.nets {
            n.bridge_flush |= n.switch.take_loop_blocked();
        }
    }

    /// Opens sealed GRE-in-UDP datagrams (`--encrypt`) in place: what a known host sealed
    /// goes on as a GRE packet from that host (whatever the outer source says), handshake
    /// messages go to the endpoint, everything else is dropped and counted.
    #[allow(clippy::too_many_arguments)]
    fn open_sealed<'a, S: Sink<'a>>(
        &mut self,
        now: Millis,
        c: &Crypto,
        source: Ipv4Addr,
        data: &'a mut [u8],
        seg: usize,
        runs: &mut TapRuns<'a>,
        out: &mut S,
    ) {
        let hint = self.hosts.get(source);
        let mut handshakes = false;
        // The first refusal of the run, for the (rate-limited) log.
        let mut refused: Option<dnet_crypto::Reject> = None;
        let counts = c.sessions.open_run(now, data, seg, hint, |r| match r {
            dnet_crypto::Received::Data { peer, packet } => {
                match self.host_addr.get(usize::from(peer)).copied().flatten() {
                    Some(addr) => self.gre_packet(now, addr, packet, runs, out),
                    None => self.global.dropped(DropReason::UnknownPeer),
                }
            }
            dnet_crypto::Received::Handshake(m) => {
                // Rare (a few a minute per peer): handled under the endpoint's lock. What it
                // rejects is counted by the endpoint itself.
                if let Err(why) = c.with(|e| e.handle_handshake(now, m)) {
                    refused.get_or_insert(why);
                }
                handshakes = true;
            }
            dnet_crypto::Received::Rejected(why) => {
                refused.get_or_insert(why);
            }
            dnet_crypto::Received::Keepalive { .. } => {}
        });
        self.global.add_crypto(&counts);
        if let Some(why) = refused {
            self.log_crypto_drop(now, source, why);
        }
        if handshakes {
            self.crypto_transmit(now, c);
        }
    }

    /// Logs a datagram the encryption refused, at most a few lines a second (a flood of
    /// forged datagrams must not become a flood of log lines); the counters have them all.
    fn log_crypto_drop(&mut self, now: Millis, src: Ipv4Addr, why: dnet_crypto::Reject) {
        use dnet_crypto::Reject;
        let level = match why {
            // What an attacker (or a misconfigured host) causes: worth a warning.
            Reject::AuthFailed
            | Reject::Replayed
            | Reject::UnknownKey
            | Reject::Cleartext
            | Reject::BadMac
            | Reject::HandshakeFailed
            | Reject::StaleInitiation => log::Level::Warn,
            // What restarts and rekeying cause in normal operation.
            _ => log::Level::Debug,
        };
        if !log::log_enabled!(level) {
            return;
        }
        if let Some(k) = self.drop_log.allow(now) {
            log::log!(
                level,
                "worker {}: dropped a sealed datagram from {src}: {}{}",
                self.id,
                why.name(),
                LogLimiter::suffix(k)
            );
        }
    }

    /// Runs the crypto endpoint's timers if due (or if a worker asked for a handshake), and
    /// queues the handshake messages it has to send.
    fn crypto_timeout(&mut self, now: Millis) {
        let Some(c) = self.crypto.clone() else {
            return;
        };
        let due = self.id == 0 && now >= self.next_crypto;
        if !due && !c.sessions.wants_attention() {
            return;
        }
        let next = c.with(|e| {
            e.handle_timeout(now);
            e.poll_timeout()
        });
        if self.id == 0 {
            self.next_crypto = next.unwrap_or(now + dnet_crypto::endpoint::TICK);
        }
        self.crypto_transmit(now, &c);
    }

    /// Queues the handshake messages the endpoint wants sent.
    fn crypto_transmit(&mut self, now: Millis, c: &Crypto) {
        let mut buf = [0u8; dnet_crypto::wire::MAX_MESSAGE_LEN];
        c.with(|e| {
            while let Some(t) = e.poll_transmit(now, &mut buf) {
                if !self
                    .egress
                    .outbox
                    .push(0, t.peer, Dest::Handshake, false, &buf[..t.len])
                {
                    self.global.dropped(DropReason::TxQueueFull);
                }
            }
        });
    }

    /// One GRE packet from `src`: its key picks the network, its source the tunnel port.
    #[inline]
    fn gre_packet<'a, S: Sink<'a>>(
        &mut self,
        now: Millis,
        src: Ipv4Addr,
        gre_bytes: &'a [u8],
        runs: &mut TapRuns<'a>,
        out: &mut S,
    ) {
        // Check the sender before spending a checksum on its packet.
        if !self.nets.iter().any(|n| n.peers.get(src).is_some()) {
            self.gre_drop_from(now, src, DropReason::UnknownPeer);
            return;
        }
        let (key, frame) = match tunnel::open_gre(gre_bytes) {
            Ok(x) => x,
            Err(DropReason::GreChecksum) => match self.merged_by_underlay(gre_bytes) {
                Some(x) => x,
                None => return self.gre_drop_from(now, src, DropReason::GreChecksum),
            },
            Err(why) => return self.gre_drop_from(now, src, why),
        };
        let Ok(k) = self.by_key.binary_search_by_key(&key, |e| e.0) else {
            return self.gre_drop_from(now, src, DropReason::WrongKey);
        };
        let net = self.by_key[k].1;
        let Some(port) = self.nets[usize::from(net)].peers.get(src) else {
            // A peer of another network, using this network's key.
            self.counters[usize::from(net)].dropped(DropReason::UnknownPeer);
            return;
        };
        self.tunnel_frame(now, net, port, frame, runs, out);
    }

    /// A GRE packet with a checksum that failed, taken after all if the underlay's GRO merged
    /// it (`--csum`): GRO keeps the first packet's GRE checksum, stale for the merged packet,
    /// after verifying every packet's. Recognised by its inner frame: a TCP super-frame in the
    /// form GRO leaves (see `offload::underlay_gro`), too large for its network's MTU.
    fn merged_by_underlay<'a>(&self, gre_bytes: &'a [u8]) -> Option<(u32, &'a [u8])> {
        let (key, frame) = tunnel::open_gre_unverified(gre_bytes)?;
        let k = self.by_key.binary_search_by_key(&key, |e| e.0).ok()?;
        let sw = &self.nets[usize::from(self.by_key[k].1)].switch;
        sw.merged_by_underlay(frame).map(|_| (key, frame))
    }

    /// One inner frame from tunnel `port` of network `net`: a hello, a BPDU, or data to
    /// forward.
    #[inline]
    fn tunnel_frame<'a, S: Sink<'a>>(
        &mut self,
        now: Millis,
        net: NetId,
        port: PortId,
        frame: &'a [u8],
        runs: &mut TapRuns<'a>,
        out: &mut S,
    ) {
        let i = usize::from(net);
        let sw = &mut self.nets[i].switch;
        if sw.keepalive_rx(now, port, frame) {
            return;
        }
        if sw.stp().is_some() && bpdu::is_bpdu(frame) {
            self.stp_rx(now, net, port, frame);
            return;
        }
        // Frames larger than the local MTU are giants, unless the underlay's GRO merged them
        // from segments that each fit: those go on as TCP super-frames.
        let gro = sw.merged_by_underlay(frame);
        let v = match &gro {
            None => sw.handle(now, port, frame),
            Some(h) => {
                let v = sw.handle_coalesced(now, port, frame);
                self.counters[i].event(Event::GreGroReceived);
                count_segments_rx(&self.counters[i], port, frame, h);
                v
            }
        };
        let to_tap = matches!(v.action, Action::Forward(p) if sw.port(p) == Some(PortKind::Local));
        if let Some(u) = v.sync {
            self.sync_out.push((net, u));
        }
        let view = net_view(
            &self.nets,
            &self.counters,
            &self.global,
            self.crypto.as_ref().map(|_| &self.hosts),
            net,
        );
        if let Some(h) = &gro {
            // Keep its place after the frames received before it.
            self.egress.write_runs(&self.counters, runs, out);
            self.egress
                .output(view, port, v.action, frame, Some(h), out);
            return;
        }
        if to_tap {
            if self.egress.coalesce(view, frame, runs, out) {
                return;
            }
        } else {
            // Anything else keeps its place after the frames received before it.
            self.egress.write_runs(&self.counters, runs, out);
        }
        let view = net_view(
            &self.nets,
            &self.counters,
            &self.global,
            self.crypto.as_ref().map(|_| &self.hosts),
            net,
        );
        self.egress.output(view, port, v.action, frame, None, out);
    }

    /// A BPDU arrived on tunnel `port` of network `net`: run the tree and queue what it
    /// answers.
    fn stp_rx(&mut self, now: Millis, net: NetId, port: PortId, frame: &[u8]) {
        let i = usize::from(net);
        let Some(sh) = self.nets[i].switch.stp().cloned() else {
            return;
        };
        let counters = &self.counters[i];
        counters.event(Event::BpduRx);
        if let Some(c) = counters.ports.get(usize::from(port)) {
            c.rx_control.add(1);
        }
        let egress = &mut self.egress;
        let ok = sh.with(|s| {
            let ok = s.receive(now, port, frame);
            s.drain(|p, f| queue_control(egress, counters, net, p, f));
            ok
        });
        if !ok {
            counters.dropped(DropReason::BadBpdu);
        }
        self.nets[i].switch.stp_sync();
    }

    fn gre_drop(&mut self, now: Millis, packet: &[u8], why: DropReason) {
        let src = ipv4::Packet::new_checked(packet).map(|p| p.src()).ok();
        self.log_drop(now, src, why);
    }

    fn gre_drop_from(&mut self, now: Millis, src: Ipv4Addr, why: DropReason) {
        self.log_drop(now, Some(src), why);
    }

    fn log_drop(&mut self, now: Millis, src: Option<Ipv4Addr>, why: DropReason) {
        self.global.dropped(why);
        if log::log_enabled!(log::Level::Debug) {
            if let Some(k) = self.drop_log.allow(now) {
                log::debug!(
                    "worker {}: dropped a GRE packet from {}: {}{}",
                    self.id,
                    src.map_or_else(|| "?".to_string(), |a| a.to_string()),
                    why.name(),
                    LogLimiter::suffix(k)
                );
            }
        }
    }

    /// A learning update from another worker, for network `net`.
    pub fn handle_sync(&mut self, net: NetId, u: SyncUpdate) {
        if let Some(n) = self.nets.get_mut(usize::from(net)) {
            n.switch.apply_sync(u);
        }
    }

    /// The kernel's path MTU toward tunnel `port` of network `net`, as asked by
    /// [`Core::poll_path_mtu_query`].
    pub fn handle_path_mtu(&mut self, net: NetId, port: PortId, mtu: u32) {
        let Some(n) = self.nets.get_mut(usize::from(net)) else {
            return;
        };
        let Some(PortKind::Tunnel(addr)) = n.switch.port(port) else {
            return;
        };
        if let Some(old) = n.switch.set_path_mtu(port, mtu) {
            let mtu = n.switch.path_mtu(port).unwrap_or(mtu);
            if old != 0 && self.id == 0 && net == 0 {
                log::info!("path MTU to peer {addr}: {old} -> {mtu}");
            } else {
                log::debug!("worker {}: path MTU to peer {addr}: {mtu}", self.id);
            }
        }
    }

    /// How a frame from [`Core::poll_transmit`] fared.
    pub fn handle_transmit_outcome(&mut self, t: &Transmit, outcome: SendOutcome) {
        if outcome == SendOutcome::TooBig {
            self.egress.pmtu.too_big();
        }
        if !t.counted {
            return;
        }
        let Some(c) = self.counters.get(usize::from(t.net)) else {
            return;
        };
        match (outcome, t.dest) {
            (SendOutcome::Sent, _) => c.tx(t.port, t.len),
            (_, Dest::Tap) => c.dropped(DropReason::TapWriteError),
            (SendOutcome::TooBig, _) => c.dropped(DropReason::TooBig),
            (SendOutcome::QueueFull, _) => c.dropped(DropReason::TxQueueFull),
            (SendOutcome::Error, _) => c.dropped(DropReason::TxError),
        }
    }

    /// Periodic work due at `now`: MAC aging, keepalives, the spanning trees' timers, path
    /// MTU re-reads, and acting on what the other workers changed in the shared trees. Cheap
    /// when nothing is due, so it may be called every turn of the event loop.
    pub fn handle_timeout(&mut self, now: Millis) {
        self.crypto_timeout(now);
        let aging = now >= self.next_aging;
        if aging {
            self.next_aging = now + AGING_MS;
        }
        let refresh = self.egress.pmtu.due(now);
        if refresh {
            self.egress.pmtu.refreshed(now);
            self.pmtu_queries.clear();
        }
        for (i, n) in self.nets.iter_mut().enumerate() {
            let net = i as NetId;
            n.switch.stp_sync();
            if aging {
                n.switch.handle_timeout(now);
            }
            if refresh {
                for id in 0..switch::MAX_PORTS {
                    if let Some(PortKind::Tunnel(a)) = n.switch.port(id as PortId) {
                        self.pmtu_queries.push((net, id as PortId, a));
                    }
                }
            }
            if n.switch.liveness_due().is_some_and(|d| now >= d) {
                let (egress, counters) = (&mut self.egress, &n.counters);
                n.switch
                    .liveness_tick(now, |p, f| queue_control(egress, counters, net, p, f));
                // A peer declared down may have changed the tree: send its news now.
                n.next_stp = n.next_stp.min(now);
            }
            if n.stp_leader && now >= n.next_stp {
                if let Some(sh) = n.switch.stp().cloned() {
                    let (egress, counters) = (&mut self.egress, &n.counters);
                    sh.with(|s| {
                        s.tick(now);
                        s.drain(|p, f| queue_control(egress, counters, net, p, f));
                    });
                    n.switch.stp_sync();
                }
                n.next_stp = now + STP_TICK_MS;
            }
        }
    }

    /// When [`Core::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Millis {
        let mut t = self.next_aging.min(self.egress.pmtu.deadline());
        if self.crypto.is_some() && self.id == 0 {
            t = t.min(self.next_crypto);
        }
        for n in &self.nets {
            if let Some(d) = n.switch.liveness_due() {
                t = t.min(d);
            }
            if n.stp_leader {
                t = t.min(n.next_stp);
            }
        }
        t
    }

    /// The next frame the core made (a hello, a BPDU, an ICMP error), copied to the start of
    /// `buf` (at least [`outbox::MAX_FRAME`] bytes); report how it fared with
    /// [`Core::handle_transmit_outcome`]. Frames for ports removed since are skipped.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        loop {
            let q = self.egress.outbox.pop(buf)?;
            let udp_port = self.egress_udp_port();
            if q.dest == Dest::Handshake {
                let Some(addr) = self.host_addr.get(usize::from(q.port)).copied().flatten() else {
                    continue;
                };
                return Some(Transmit {
                    net: 0,
                    port: q.port,
                    dest: q.dest,
                    to: SocketAddrV4::new(addr, udp_port),
                    gre: gre::Repr::default(),
                    len: q.len,
                    counted: false,
                    seal: None,
                });
            }
            let Some(n) = self.nets.get(usize::from(q.net)) else {
                continue;
            };
            let to = match n.switch.port(q.port) {
                None => continue,
                Some(PortKind::Local) => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
                Some(PortKind::Tunnel(a)) => SocketAddrV4::new(a, n.gre.udp_port.unwrap_or(0)),
            };
            let view = net_view(&self.nets, &self.counters, &self.global, None, q.net);
            let seal = match (&self.crypto, q.dest) {
                (Some(_), Dest::Tunnel { .. }) => {
                    let Some(id) = self.hosts.get(*to.ip()) else {
                        // A host with no crypto identity gets nothing in clear.
                        self.global.add_crypto(&egress::no_session());
                        continue;
                    };
                    Some(id)
                }
                _ => None,
            };
            return Some(Transmit {
                net: q.net,
                port: q.port,
                dest: q.dest,
                to,
                gre: view.repr(q.port),
                len: q.len,
                counted: q.counted,
                seal,
            });
        }
    }

    fn egress_udp_port(&self) -> u16 {
        self.nets.first().and_then(|n| n.gre.udp_port).unwrap_or(0)
    }

    /// The next learning update to hand to every other worker, with its network.
    pub fn poll_sync(&mut self) -> Option<(NetId, SyncUpdate)> {
        let u = self.sync_out.get(self.sync_next).copied();
        match u {
            Some(_) => self.sync_next += 1,
            None => {
                self.sync_out.clear();
                self.sync_next = 0;
            }
        }
        u
    }

    /// The next tunnel whose path MTU the edge should read from the kernel and hand back with
    /// [`Core::handle_path_mtu`].
    pub fn poll_path_mtu_query(&mut self) -> Option<(NetId, PortId, Ipv4Addr)> {
        self.pmtu_queries.pop()
    }

    /// A network whose loop guard blocked a tunnel since the last call. The stations its
    /// local bridge (e.g. `docker0`) learned on the TAP are then reached another way, around
    /// the loop; until the bridge forgets them it keeps sending their frames into the TAP,
    /// where the blocked tunnel drops them. So the edge flushes the bridge's entries for that
    /// network's TAP.
    pub fn poll_bridge_flush(&mut self) -> Option<NetId> {
        let i = self.nets.iter().position(|n| n.bridge_flush)?;
        self.nets[i].bridge_flush = false;
        Some(i as NetId)
    }
}

/// Network `net`'s side of a send (borrowing only what the egress does not own).
fn net_view<'s>(
    nets: &'s [Net],
    counters: &'s [Arc<Counters>],
    global: &'s Counters,
    hosts: Option<&'s PeerTable>,
    net: NetId,
) -> NetView<'s> {
    let n = &nets[usize::from(net)];
    NetView {
        id: net,
        sw: &n.switch,
        gre: &n.gre,
        seq: &n.seq,
        all: counters,
        global,
        hosts,
    }
}

/// A super-frame `frame` (described by `h`) came in on `port` and the switch counted it as
/// one frame: count the segments it stands for instead.
fn count_segments_rx(c: &Counters, port: PortId, frame: &[u8], h: &VnetHdr) {
    if let Some((k, wire)) = offload::gso::wire_size(frame, h) {
        c.rx_many(port, k - 1, wire.saturating_sub(frame.len()));
    }
}

/// Queues a control frame (hello or BPDU) for tunnel `p` of network `net`, counting BPDUs sent
/// and frames the outbox had no room for.
fn queue_control(egress: &mut Egress, counters: &Counters, net: NetId, p: PortId, f: &[u8]) {
    if !egress.outbox.push(
        net,
        p,
        Dest::Tunnel {
            fragmentable: false,
        },
        false,
        f,
    ) {
        counters.dropped(DropReason::TxQueueFull);
    } else if bpdu::is_bpdu(f) {
        counters.event(Event::BpduTx);
    }
}
