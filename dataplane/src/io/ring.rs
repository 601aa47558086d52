//! Plain GRE through `AF_PACKET` rings on the underlay device (`--packet-rings`), the fast
//! path the raw GRE socket cannot be: a raw socket sends each segment through routing and IP
//! output, and receives each packet with its own socket delivery.
//!
//! - [`RingTx`]: frames for a tunnel are written whole (outer Ethernet + IPv4 + GRE + frame)
//!   into a [`TxRing`] that bypasses the qdisc; one `sendto` sends a burst. The Ethernet
//!   destination and path MTU come from [`NextHops`]. A message goes through the raw socket
//!   instead (and is counted as `ring_fallback`) when its peer's next hop is not resolved, the
//!   neighbour entry needs confirming (one packet through the kernel per refresh does that),
//!   or the ring is full; one too large for the path goes through the raw socket uncounted,
//!   which fragments it (DF off) or refuses it (`too_big`), as before.
//! - [`RingRx`]: GRE packets for this host are copied into an [`RxRing`] per worker, in one
//!   fanout group (flow hash, reassembly first); the kernel filter keeps everything else out.
//!   Whatever the kernel's IP input would have refused (bad header, bad checksum, fragments,
//!   cut short) is dropped and counted here. The workers' raw GRE sockets stay open, so the
//!   kernel does not answer GRE with protocol-unreachable; their filters drop what the ring
//!   got, so nothing is handled twice. Packets the ring cannot hold whole (larger than a V2
//!   frame) or that arrive on another device are left to worker 0's raw socket.

use super::gre_socket::{self, OuterOptions};
use super::nexthop::{Link, NextHops, Rtnl, Unresolved};
use super::sys::mmsg;
use super::sys::packet::{Fanout, RxPacket, RxRing, Split, TxRing};
use crate::datapath::{Core, Datagram, NetId, SendOutcome, TunnelMsg};
use crate::switch::{Counters, DropReason, Event, Millis, PortId, PortKind, MAX_PORTS};
use crate::wire::{ethernet, ipv4};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::BorrowedFd;
use std::sync::Arc;

/// Which rings `--packet-rings` turns on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingMode {
    /// Send through a TX ring.
    pub tx: bool,
    /// Receive through RX rings.
    pub rx: bool,
}

impl RingMode {
    /// Neither.
    pub const OFF: RingMode = RingMode {
        tx: false,
        rx: false,
    };
    /// Both.
    pub const ON: RingMode = RingMode { tx: true, rx: true };

    /// Any at all.
    pub fn any(&self) -> bool {
        self.tx || self.rx
    }
}

/// TX slots per worker: two flushes' worth of messages.
const TX_SLOTS: usize = 256;
/// Committed frames per flush, as many as a send batch holds.
pub const TX_BATCH: usize = 128;
/// RX frames of all workers together (2 KiB each at MTU 1500: 16 MiB, all of it resident).
/// A raw socket's 4 MiB buffer held about 10k small packets; a ring holds one per frame, and
/// 2048 frames (the first choice) overflowed where the raw socket had not, under load
/// (`rx_ring_full`, in `tests/udp_encap.rs`'s bursts of small datagrams).
const RX_FRAMES_TOTAL: usize = 8192;
/// RX frames per worker at the least, however many workers share [`RX_FRAMES_TOTAL`].
const RX_FRAMES_MIN: usize = 2048;
/// Frames taken from an RX ring per turn of the loop.
const RX_BURST: usize = 64;

/// Setup errors.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// A step failed.
    #[error("packet ring: {op}: {source}")]
    Step {
        /// Step.
        op: String,
        /// errno.
        source: io::Error,
    },
    /// The underlay device cannot carry the ring's frames.
    #[error("packet ring: {0}")]
    Device(String),
}

fn step(op: impl Into<String>) -> impl FnOnce(io::Error) -> RingError {
    move |source| RingError::Step {
        op: op.into(),
        source,
    }
}

/// The device the route to `peer` leaves by, which the rings bind to; it must be Ethernet.
pub fn underlay_device(peer: Ipv4Addr) -> Result<Link, RingError> {
    let mut nl = Rtnl::open().map_err(step("open rtnetlink"))?;
    let r = nl
        .route(peer)
        .map_err(step(format!("route to {peer}")))?
        .ok_or_else(|| RingError::Device(format!("no route to {peer}")))?;
    let l = nl
        .link(r.oif)
        .map_err(step(format!("device {}", r.oif)))?
        .ok_or_else(|| {
            RingError::Device(format!("device {} of the route to {peer} is gone", r.oif))
        })?;
    if !l.ethernet || l.mac == [0; 6] {
        return Err(RingError::Device(format!(
            "the route to {peer} leaves by {}, which is not an Ethernet device",
            l.name
        )));
    }
    Ok(l)
}

/// The device that holds the address `local`, for a switch that knows no peer yet (a fleet's
/// first member): its peers' routes most likely leave by it. It must be Ethernet.
pub fn device_holding(local: Ipv4Addr) -> Result<Link, RingError> {
    let mut nl = dnet_netlink::Netlink::open().map_err(step("open rtnetlink"))?;
    let lookup = |e: dnet_netlink::NlError| RingError::Device(format!("listing devices: {e}"));
    let mut found = None;
    for l in nl.links().map_err(lookup)? {
        if nl
            .ipv4_addrs(l.index)
            .map_err(lookup)?
            .iter()
            .any(|(a, _)| *a == local)
        {
            found = Some(l.index);
            break;
        }
    }
    let index =
        found.ok_or_else(|| RingError::Device(format!("no device holds the address {local}")))?;
    let mut rt = Rtnl::open().map_err(step("open rtnetlink"))?;
    let l = rt
        .link(index)
        .map_err(step(format!("device {index}")))?
        .ok_or_else(|| RingError::Device(format!("device {index} holding {local} is gone")))?;
    if !l.ethernet || l.mac == [0; 6] {
        return Err(RingError::Device(format!(
            "{local} is on {}, which is not an Ethernet device",
            l.name
        )));
    }
    Ok(l)
}

/// Outer Ethernet (14) + IPv4 (20) header length.
const OUTER: usize = ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN;

/// One worker's TX ring and next hops.
pub struct RingTx {
    ring: TxRing,
    hops: NextHops,
    local: Ipv4Addr,
    outer: OuterOptions,
    ident: u16,
    /// (network, port, inner length) of each frame committed since the last flush, in order.
    tags: Vec<(NetId, PortId, u32)>,
    /// Every network's tunnel peers, sorted, deduplicated (rebuilt when a port changes).
    peers: Vec<Ipv4Addr>,
    peers_stale: bool,
    counters: Arc<Counters>,
    worker: usize,
}

impl RingTx {
    /// A TX ring on `dev` for worker `worker`, sending from `local` with `outer`'s TTL, TOS
    /// and DF; fallbacks are counted in `counters` (the switch-wide ones: a next hop serves
    /// every network's tunnels to that peer).
    pub fn open(
        dev: &Link,
        local: Ipv4Addr,
        outer: OuterOptions,
        counters: Arc<Counters>,
        worker: usize,
    ) -> Result<RingTx, RingError> {
        // Room for the device MTU plus a VLAN tag (what the kernel accepts).
        let max_frame = ethernet::TAGGED_HEADER_LEN + dev.mtu as usize;
        let ring = TxRing::open(dev.index, max_frame, TX_SLOTS)
            .map_err(step(format!("TX ring on {}", dev.name)))?;
        let rtnl = Rtnl::open().map_err(step("open rtnetlink"))?;
        Ok(RingTx {
            ring,
            hops: NextHops::new(rtnl, dev.clone()),
            local,
            outer,
            // Like the kernel's per-socket counter: any start will do (RFC 6864).
            ident: (std::process::id() as u16)
                .wrapping_mul(251)
                .wrapping_add(worker as u16),
            tags: Vec::with_capacity(TX_SLOTS),
            peers: Vec::new(),
            peers_stale: true,
            counters,
            worker,
        })
    }

    /// Reads the next hops of `core`'s tunnel peers again when due, logging what changed.
    pub fn maintain(&mut self, now: Millis, core: &Core) {
        if now < self.hops.deadline() {
            return;
        }
        if std::mem::take(&mut self.peers_stale) {
            self.peers = tunnel_peers(core);
        }
        let (worker, dev) = (self.worker, self.hops.device().name.clone());
        self.hops.refresh(now, &self.peers, |peer, r| {
            let level = if worker == 0 {
                log::Level::Info
            } else {
                log::Level::Debug
            };
            match r {
                Ok(h) => log::log!(
                    level,
                    "packet ring: peer {peer} via {} on {dev}, path MTU {}",
                    mac(&h.mac),
                    h.mtu
                ),
                Err(Unresolved::NoNeighbour) => log::log!(
                    level,
                    "packet ring: peer {peer}: next hop not resolved yet; sending through the raw socket meanwhile"
                ),
                Err(Unresolved::OtherDevice(d)) => log::log!(
                    level,
                    "packet ring: peer {peer} is routed by device {d}, not {dev}; sending through the raw socket"
                ),
                Err(Unresolved::NoRoute) => {
                    log::log!(level, "packet ring: no route to peer {peer}")
                }
                Err(Unresolved::Lookup(e)) => log::warn!(
                    "packet ring: looking up peer {peer}: {}",
                    io::Error::from_raw_os_error(*e)
                ),
            }
        });
    }

    /// Read the peers and their next hops again at the next [`RingTx::maintain`] (a tunnel
    /// was added or removed).
    pub fn invalidate(&mut self) {
        self.peers_stale = true;
        self.hops.invalidate();
    }

    /// No more frames fit before a flush.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.tags.len() >= TX_BATCH
    }

    /// Nothing waits for a flush.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// Writes one tunnel message (GRE header, `msg.headers`, `payload`) to its peer into the
    /// ring. Returns false if it must go through the raw socket instead: counted as
    /// `ring_fallback`, unless it is larger than the path (the raw socket fragments or
    /// refuses it, as always).
    #[inline]
    pub fn push(&mut self, msg: &TunnelMsg<'_>, payload: &[u8]) -> bool {
        let peer = *msg.dest.ip();
        let ip_len =
            ipv4::MIN_HEADER_LEN + msg.gre.header_len() + msg.headers.len() + payload.len();
        let Some(hop) = self.hops.get(peer) else {
            self.counters.event(Event::RingFallback);
            return false;
        };
        if ip_len > hop.mtu as usize {
            return false;
        }
        // One packet through the kernel lets it confirm a stale neighbour entry.
        let confirm = std::mem::take(&mut hop.confirm);
        let dst_mac = hop.mac;
        if confirm || self.is_full() {
            self.counters.event(Event::RingFallback);
            return false;
        }
        let Some(slot) = self.ring.slot() else {
            self.counters.event(Event::RingFallback);
            return false;
        };
        if ethernet::HEADER_LEN + ip_len > slot.len() {
            return false;
        }
        let ip = ipv4::Repr {
            src: self.local,
            dst: peer,
            protocol: ipv4::PROTO_GRE,
            ttl: self.outer.ttl,
            tos: self.outer.tos,
            df: self.outer.df && !msg.fragmentable,
            ident: self.ident,
            payload_len: ip_len - ipv4::MIN_HEADER_LEN,
        };
        self.ident = self.ident.wrapping_add(1);
        let hl = write_headers(slot, &dst_mac, &self.hops.device().mac, &ip, msg, payload);
        slot[hl..hl + payload.len()].copy_from_slice(payload);
        self.ring.commit(hl + payload.len());
        self.tags.push((
            msg.net,
            msg.port,
            (msg.headers.len() + payload.len()) as u32,
        ));
        true
    }

    /// Sends every frame written since the last flush with one system call; calls
    /// `done(network, port, inner length, outcome)` for each, in order.
    pub fn flush(&mut self, mut done: impl FnMut(NetId, PortId, usize, SendOutcome)) {
        if self.tags.is_empty() {
            return;
        }
        let s = self.ring.send();
        for (i, (net, port, len)) in self.tags.drain(..).enumerate() {
            let o = if i < s.sent {
                SendOutcome::Sent
            } else {
                mmsg::outcome(s.errno.unwrap_or(libc::EAGAIN))
            };
            done(net, port, len as usize, o);
        }
    }
}

/// Writes a GRE packet's headers into `buf`: Ethernet to `dst_mac` from `src_mac`, the IPv4
/// header `ip`, `msg`'s GRE header (its checksum, if any, over the rest and `payload`, which
/// follows) and `msg.headers`. Returns how many bytes; the payload goes right after.
#[inline]
pub fn write_headers(
    buf: &mut [u8],
    dst_mac: &[u8; 6],
    src_mac: &[u8; 6],
    ip: &ipv4::Repr,
    msg: &TunnelMsg<'_>,
    payload: &[u8],
) -> usize {
    let gl = msg.gre.header_len();
    let hl = msg.headers.len();
    buf[0..6].copy_from_slice(dst_mac);
    buf[6..12].copy_from_slice(src_mac);
    buf[12..14].copy_from_slice(&ethernet::ethertype::IPV4.to_be_bytes());
    ip.emit(&mut buf[ethernet::HEADER_LEN..OUTER]);
    let (gre, rest) = buf[OUTER..].split_at_mut(gl);
    rest[..hl].copy_from_slice(msg.headers);
    msg.gre.emit_parts(gre, &[&rest[..hl], payload]);
    OUTER + gl + hl
}

/// The underlay addresses of every network's tunnels, sorted and without repeats: one next
/// hop serves a peer whatever network the frame belongs to.
fn tunnel_peers(core: &Core) -> Vec<Ipv4Addr> {
    let mut peers: Vec<Ipv4Addr> = (0..core.nets())
        .flat_map(|net| {
            let sw = core.switch(net as NetId);
            (1..MAX_PORTS).filter_map(move |id| match sw.port(id as PortId) {
                Some(PortKind::Tunnel(a)) => Some(a),
                _ => None,
            })
        })
        .collect();
    peers.sort_unstable();
    peers.dedup();
    peers
}

fn mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The kernel filter of an RX ring: IPv4 GRE addressed to `local` and to this host's MAC,
/// no longer than `max` (the ring's room). The socket hands over packets from the network
/// header on, so offsets are into the IPv4 header.
pub fn rx_filter(local: Ipv4Addr, max: usize) -> Vec<libc::sock_filter> {
    const LD_B_ABS: u16 = 0x30;
    const LD_W_ABS: u16 = 0x20;
    const LD_LEN: u16 = 0x80;
    const JEQ: u16 = 0x15;
    const JGT: u16 = 0x25;
    const RET: u16 = 0x06;
    let f = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let pkttype = (libc::SKF_AD_OFF + libc::SKF_AD_PKTTYPE) as u32;
    vec![
        f(LD_B_ABS, 0, 0, pkttype),
        f(JEQ, 0, 7, u32::from(libc::PACKET_HOST)), // to our MAC
        f(LD_B_ABS, 0, 0, 9),
        f(JEQ, 0, 5, u32::from(ipv4::PROTO_GRE)), // GRE
        f(LD_W_ABS, 0, 0, 16),
        f(JEQ, 0, 3, u32::from(local)), // to our address
        f(LD_LEN, 0, 0, 0),
        f(JGT, 1, 0, max as u32), // fits whole
        f(RET, 0, 0, 0x0004_0000),
        f(RET, 0, 0, 0),
    ]
}

/// How often the kernel's count of packets a full RX ring lost is read.
const RX_STATS_MS: Millis = 250;

/// One worker's RX ring.
pub struct RingRx {
    ring: RxRing,
    local: Ipv4Addr,
    next_stats: Millis,
}

impl RingRx {
    /// An RX ring on `dev` for packets to `local`, in the fanout group `fanout`.
    /// `workers` rings share the group, split by flow as the raw sockets' filters split. A
    /// (reassembled) packet larger than a frame is left to the raw socket.
    pub fn open(
        dev: &Link,
        local: Ipv4Addr,
        fanout: Fanout,
        workers: usize,
    ) -> Result<RingRx, RingError> {
        let prog: Vec<libc::sock_filter> = gre_socket::fanout_program()
            .into_iter()
            .map(|(code, jt, jf, k)| libc::sock_filter { code, jt, jf, k })
            .collect();
        let split = if workers > 1 {
            Split::Program(&prog)
        } else {
            Split::Single
        };
        let ring = RxRing::open(
            dev.index,
            dev.mtu as usize,
            (RX_FRAMES_TOTAL / workers.max(1)).max(RX_FRAMES_MIN),
            &|room| rx_filter(local, room),
            fanout,
            split,
        )
        .map_err(step(format!("RX ring on {}", dev.name)))?;
        Ok(RingRx {
            ring,
            local,
            next_stats: 0,
        })
    }

    /// The fanout group id, for the other workers to join.
    pub fn fanout_id(&self) -> io::Result<u16> {
        self.ring.fanout_id()
    }

    /// Largest packet the ring holds whole; longer ones are left to the raw socket.
    pub fn max_packet(&self) -> usize {
        self.ring.max_packet()
    }

    /// The socket to wait on.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.ring.fd()
    }

    /// Hands the packets waiting to `f` as datagrams (what the kernel's IP input would have
    /// refused is counted in `counters` and left out), then gives their room back. Returns
    /// true if more may be waiting.
    pub fn burst(
        &mut self,
        counters: &Counters,
        f: impl FnOnce(&mut dyn Iterator<Item = Datagram<'_>>),
    ) -> bool {
        let local = self.local;
        let batch = self.ring.batch(RX_BURST);
        if batch.is_empty() {
            return false;
        }
        let full = batch.len() == RX_BURST;
        let mut datagrams = batch.packets().filter_map(|p| admit(p, local, counters));
        f(&mut datagrams);
        full
    }

    /// Counts the packets the kernel could not copy in for want of room (`rx_ring_full`), at
    /// most every [`RX_STATS_MS`] (reading them is a system call).
    pub fn count_drops(&mut self, now: Millis, counters: &Counters) {
        if now < self.next_stats {
            return;
        }
        self.next_stats = now + RX_STATS_MS;
        if let Ok(n) = self.ring.take_drops() {
            counters.drops[DropReason::RxRingFull as usize].add(u64::from(n));
        }
    }
}

/// The datagram in a packet from the ring, or `None` with the drop counted in `counters`.
#[inline]
pub fn admit<'a>(p: RxPacket<'a>, local: Ipv4Addr, counters: &Counters) -> Option<Datagram<'a>> {
    match check(p.data, p.wire_len, p.pkttype, local) {
        Ok(d) => Some(d),
        Err(why) => {
            counters.dropped(why);
            None
        }
    }
}

/// What the kernel's IP input checks before a raw socket sees a packet, for one from the
/// ring: whole, a sane IPv4 header with a valid checksum, not a fragment, for `local`, for
/// this host. Returns the packet as a datagram, trimmed of link padding.
pub fn check(
    data: &[u8],
    wire_len: usize,
    pkttype: u8,
    local: Ipv4Addr,
) -> Result<Datagram<'_>, DropReason> {
    if data.len() < wire_len {
        return Err(DropReason::Oversize);
    }
    if pkttype != libc::PACKET_HOST {
        return Err(DropReason::BadOuterIp);
    }
    let p = ipv4::Packet::new_checked(data).map_err(|_| DropReason::BadOuterIp)?;
    if !p.verify_checksum()
        || p.is_fragment()
        || p.dst() != local
        || p.protocol() != ipv4::PROTO_GRE
    {
        return Err(DropReason::BadOuterIp);
    }
    Ok(Datagram {
        source: p.src(),
        data: (&data[..p.total_len()]).into(),
        segment_size: None,
        truncated: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::gre;

    const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
    const PEER: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);

    fn msg<'h>(gre: gre::Repr, headers: &'h [u8], fragmentable: bool) -> TunnelMsg<'h> {
        TunnelMsg {
            net: 0,
            port: 1,
            dest: std::net::SocketAddrV4::new(PEER, 0),
            path_mtu: None,
            gre,
            headers,
            flow: 0,
            fragmentable,
            seal: None,
        }
    }

    fn ip(payload_len: usize, df: bool) -> ipv4::Repr {
        ipv4::Repr {
            src: LOCAL,
            dst: PEER,
            protocol: ipv4::PROTO_GRE,
            ttl: 64,
            tos: 0,
            df,
            ident: 7,
            payload_len,
        }
    }

    #[test]
    fn a_frame_is_what_ovs_puts_on_the_wire() {
        // The inner frame of shared/vectors/ovs-netdev-gre-icmp.txt's first record.
        let hex = "4500007a00004000402f24c30ac800010ac8000200006558027700000002027700000001080045000054f05a4000400135b20a4d00010a4d000208002f591c210001b0040b6b000000002b42070000000000101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f3031323334353637";
        let wire: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let inner = &wire[24..];
        let repr = gre::Repr::default();
        let m = msg(repr, &[], false);
        let mut frame = vec![0u8; 14 + wire.len()];
        let mut r = ip(4 + inner.len(), true);
        r.ident = 0;
        let (dmac, smac) = ([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1]);
        let hl = write_headers(&mut frame, &dmac, &smac, &r, &m, inner);
        frame[hl..].copy_from_slice(inner);
        assert_eq!(&frame[..6], &dmac);
        assert_eq!(&frame[6..12], &smac);
        assert_eq!(&frame[12..14], &[0x08, 0x00]);
        assert_eq!(&frame[14..], &wire[..], "byte for byte what OVS sent");
        // And it reads back as it would from the ring.
        let d = check(&frame[14..], wire.len(), libc::PACKET_HOST, PEER).expect("valid");
        assert_eq!((d.source, &*d.data), (LOCAL, &wire[..]));
    }

    #[test]
    fn headers_go_between_gre_and_payload_and_the_gre_checksum_covers_them() {
        let repr = gre::Repr {
            csum: true,
            key: Some(7),
            ..gre::Repr::default()
        };
        let headers = [0xaau8; 54];
        let payload = [0x55u8; 100];
        let m = msg(repr, &headers, true);
        let gl = repr.header_len();
        let len = OUTER + gl + headers.len() + payload.len();
        let mut frame = vec![0u8; len];
        let hl = write_headers(
            &mut frame,
            &[1; 6],
            &[2; 6],
            &ip(len - OUTER, false),
            &m,
            &payload,
        );
        assert_eq!(hl, OUTER + gl + headers.len());
        frame[hl..].copy_from_slice(&payload);
        let ipv = ipv4::Packet::new_checked(&frame[14..]).unwrap();
        assert_eq!(ipv.total_len(), len - 14);
        assert!(ipv.verify_checksum());
        assert_eq!(&frame[14 + 6..14 + 8], &[0, 0], "DF off when fragmentable");
        let g = gre::Packet::new_unchecked(ipv.payload());
        let back = gre::Repr::parse(&g).expect("GRE checksum verifies over headers and payload");
        assert_eq!(back.key, Some(7));
        let inner = g.into_payload();
        assert_eq!(&inner[..54], &headers[..]);
        assert_eq!(&inner[54..], &payload[..]);
    }

    fn good() -> Vec<u8> {
        let mut p = vec![0u8; 20 + 4 + 60];
        ip(64, true).emit(&mut p);
        p[20..24].copy_from_slice(&[0, 0, 0x65, 0x58]);
        p
    }

    #[test]
    fn ring_input_the_kernel_would_refuse_is_dropped_with_a_reason() {
        let p = good();
        let d = check(&p, p.len(), libc::PACKET_HOST, PEER).expect("valid");
        assert_eq!(d.data.len(), p.len());
        // Link padding after the packet is trimmed.
        let mut padded = p.clone();
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(check(&padded, padded.len(), 0, PEER).unwrap().data, &p[..]);
        // Cut short by the ring.
        assert_eq!(
            check(&p[..40], p.len(), 0, PEER).unwrap_err(),
            DropReason::Oversize
        );
        let bad = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut q = good();
            f(&mut q);
            check(&q, q.len(), libc::PACKET_HOST, PEER).unwrap_err()
        };
        // Header says more than arrived; too short for a header; not IPv4.
        assert_eq!(bad(&|q| q.truncate(30)), DropReason::BadOuterIp);
        assert_eq!(bad(&|q| q.truncate(12)), DropReason::BadOuterIp);
        assert_eq!(bad(&|q| q[0] = 0x65), DropReason::BadOuterIp);
        // Bad checksum; a fragment; someone else's; another protocol.
        assert_eq!(bad(&|q| q[8] = 3), DropReason::BadOuterIp);
        let refix = |q: &mut Vec<u8>| {
            q[10..12].fill(0);
            let c = crate::wire::checksum::checksum(&[&q[..20]]);
            q[10..12].copy_from_slice(&c.to_be_bytes());
        };
        assert_eq!(
            bad(&|q| {
                q[6] = 0x20;
                refix(q)
            }),
            DropReason::BadOuterIp
        );
        assert_eq!(
            bad(&|q| {
                q[19] = 9;
                refix(q)
            }),
            DropReason::BadOuterIp
        );
        assert_eq!(
            bad(&|q| {
                q[9] = 17;
                refix(q)
            }),
            DropReason::BadOuterIp
        );
        // Not for this host's MAC.
        assert_eq!(
            check(&p, p.len(), libc::PACKET_OTHERHOST, PEER).unwrap_err(),
            DropReason::BadOuterIp
        );
    }

    /// Runs the RX filter on a packet the way the kernel would (only the opcodes it uses).
    fn run(prog: &[libc::sock_filter], p: &[u8], pkttype: u8) -> u32 {
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                0x30 if i.k == (libc::SKF_AD_OFF + libc::SKF_AD_PKTTYPE) as u32 => {
                    a = u32::from(pkttype)
                }
                0x30 => match p.get(i.k as usize) {
                    Some(b) => a = u32::from(*b),
                    None => return 0,
                },
                0x20 => match p.get(i.k as usize..i.k as usize + 4) {
                    Some(b) => a = u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                    None => return 0,
                },
                0x80 => a = p.len() as u32,
                0x15 => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                0x25 => pc += usize::from(if a > i.k { i.jt } else { i.jf }),
                0x06 => return i.k,
                c => panic!("opcode {c:#x} not modelled"),
            }
        }
    }

    #[test]
    fn the_rx_filter_keeps_only_whole_gre_for_this_host() {
        let prog = rx_filter(PEER, 1500);
        let p = good();
        assert!(run(&prog, &p, libc::PACKET_HOST) > 0);
        assert_eq!(run(&prog, &p, libc::PACKET_OTHERHOST), 0);
        assert_eq!(run(&prog, &p, libc::PACKET_BROADCAST), 0);
        let mut udp = p.clone();
        udp[9] = 17;
        assert_eq!(run(&prog, &udp, libc::PACKET_HOST), 0);
        let mut other = p.clone();
        other[19] = 3;
        assert_eq!(run(&prog, &other, libc::PACKET_HOST), 0);
        let mut big = p.clone();
        big.resize(1501, 0);
        assert_eq!(
            run(&prog, &big, libc::PACKET_HOST),
            0,
            "left to the raw socket"
        );
        big.truncate(1500);
        assert!(run(&prog, &big, libc::PACKET_HOST) > 0);
    }

    #[test]
    fn bad_ring_frames_are_dropped_and_counted_and_good_ones_pass() {
        use crate::io::sys::packet::{rx_frame, tests::hand_built_rx_frame, RX_V2_NET_OFFSET};
        let net = RX_V2_NET_OFFSET as u16;
        let c = Counters::default();
        let drops = |why: DropReason| c.drops[why as usize].get();
        let p = good();
        let len = p.len() as u32;
        let admit_frame = |f: &[u8]| admit(rx_frame(f), PEER, &c).map(|d| d.data.to_vec());

        let f = hand_built_rx_frame(len, len, net, libc::PACKET_HOST, &p);
        assert_eq!(admit_frame(&f), Some(p.clone()));
        assert_eq!(
            (drops(DropReason::Oversize), drops(DropReason::BadOuterIp)),
            (0, 0)
        );

        // Cut short by the ring: longer on the wire than what was copied in.
        let f = hand_built_rx_frame(len + 1000, len, net, libc::PACKET_HOST, &p);
        assert_eq!(admit_frame(&f), None);
        assert_eq!(drops(DropReason::Oversize), 1);

        // A header that points outside the frame: nothing of the packet was copied in.
        let f = hand_built_rx_frame(len, len, 600, libc::PACKET_HOST, &p);
        assert_eq!(admit_frame(&f), None);
        assert_eq!(drops(DropReason::Oversize), 2);

        // A foreign protocol on the device (UDP, checksum fixed), another host's frame, a
        // packet cut inside its IPv4 header.
        let mut udp = p.clone();
        udp[9] = 17;
        udp[10..12].fill(0);
        let sum = crate::wire::checksum::checksum(&[&udp[..20]]);
        udp[10..12].copy_from_slice(&sum.to_be_bytes());
        let bad = [
            hand_built_rx_frame(len, len, net, libc::PACKET_HOST, &udp),
            hand_built_rx_frame(len, len, net, libc::PACKET_OTHERHOST, &p),
            hand_built_rx_frame(12, 12, net, libc::PACKET_HOST, &p[..12]),
        ];
        for (i, f) in bad.iter().enumerate() {
            assert_eq!(admit_frame(f), None, "frame {i}");
            assert_eq!(drops(DropReason::BadOuterIp), i as u64 + 1, "frame {i}");
        }
        assert_eq!(drops(DropReason::Oversize), 2);
    }

    #[test]
    fn with_no_peer_the_rings_take_the_device_holding_the_underlay_address() {
        crate::io::sys::packet::tests::in_private_netns(|_| {
            let ip = |args: &[&str]| {
                let st = std::process::Command::new("ip")
                    .args(args)
                    .status()
                    .expect("run ip");
                assert!(st.success(), "ip {args:?}");
            };
            // A child of this thread runs in its namespace.
            ip(&["link", "add", "ul0", "type", "veth", "peer", "name", "ul1"]);
            ip(&["addr", "add", "10.250.0.1/24", "dev", "ul0"]);
            let local = Ipv4Addr::new(10, 250, 0, 1);
            let d = device_holding(local).expect("ul0 holds it");
            assert_eq!((d.name.as_str(), d.ethernet), ("ul0", true));
            let e = device_holding(Ipv4Addr::LOCALHOST).unwrap_err().to_string();
            assert!(
                e.contains("127.0.0.1 is on lo, which is not an Ethernet"),
                "{e}"
            );
            let e = device_holding(Ipv4Addr::new(10, 250, 0, 9))
                .unwrap_err()
                .to_string();
            assert!(e.contains("no device holds the address 10.250.0.9"), "{e}");
        });
    }
}
