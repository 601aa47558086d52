//! Tunnel ports: which peer a received GRE packet belongs to, whether it is ours, and the GRE
//! header each peer gets. Pure functions over byte slices; the sockets live in `io`.

use super::{DropReason, PortId};
use crate::wire::ethernet::{ethertype, Frame};
use crate::wire::{gre, ipv4, ipv6, transport_ports, udp, WireError};
use std::net::Ipv4Addr;

/// Default UDP port of GRE-in-UDP (RFC 8086, IANA "gre-in-udp").
pub const GRE_IN_UDP_PORT: u16 = 4754;
/// Bytes of a UDP header.
pub const UDP_HEADER_LEN: usize = udp::HEADER_LEN;

/// GRE options shared by every tunnel of a switch (per-peer options can be added here).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GreOptions {
    /// `--encap udp`: GRE-in-UDP (RFC 8086) to this UDP port instead of plain GRE (IP protocol
    /// 47). `None`: plain GRE.
    pub udp_port: Option<u16>,
    /// 32-bit key identifying the overlay; `None` and `Some(0)` are the same network (as OVS).
    pub key: Option<u32>,
    /// Emit checksums (received ones are verified whenever present).
    pub csum: bool,
    /// Emit sequence numbers (received ones are accepted in any order).
    pub seq: bool,
}

impl GreOptions {
    /// GRE header bytes these options emit.
    pub fn header_len(&self) -> usize {
        self.repr(0).header_len()
    }

    /// Bytes added to each inner Ethernet frame on the underlay: outer IPv4 (20) + UDP (8,
    /// GRE-in-UDP only) + GRE.
    pub fn overhead(&self) -> usize {
        let udp = if self.udp_port.is_some() {
            UDP_HEADER_LEN
        } else {
            0
        };
        ipv4::MIN_HEADER_LEN + udp + self.header_len()
    }

    /// The header for a packet with sequence number `seq` (ignored unless enabled).
    #[inline]
    pub fn repr(&self, seq: u32) -> gre::Repr {
        gre::Repr {
            csum: self.csum,
            key: self.key,
            seq: self.seq.then_some(seq),
        }
    }
}

/// Configured peers: underlay address → tunnel port.
#[derive(Clone, Debug, Default)]
pub struct PeerTable {
    // Sorted by address: a binary search is a few compares for any realistic mesh size.
    by_addr: Vec<(u32, PortId)>,
}

impl PeerTable {
    /// Adds or replaces a peer.
    pub fn insert(&mut self, addr: Ipv4Addr, port: PortId) {
        let a = u32::from(addr);
        match self.by_addr.binary_search_by_key(&a, |e| e.0) {
            Ok(i) => self.by_addr[i].1 = port,
            Err(i) => self.by_addr.insert(i, (a, port)),
        }
    }

    /// Removes a peer; returns its port.
    pub fn remove(&mut self, addr: Ipv4Addr) -> Option<PortId> {
        let a = u32::from(addr);
        let i = self.by_addr.binary_search_by_key(&a, |e| e.0).ok()?;
        Some(self.by_addr.remove(i).1)
    }

    /// The port of the peer at `addr`.
    #[inline]
    pub fn get(&self, addr: Ipv4Addr) -> Option<PortId> {
        let a = u32::from(addr);
        self.by_addr
            .binary_search_by_key(&a, |e| e.0)
            .ok()
            .map(|i| self.by_addr[i].1)
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    /// True with no peers.
    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }
}

/// Opens a received IPv4 packet (as a raw GRE socket delivers it): checks it is GRE from a
/// configured peer, valid per RFC 2784/2890, carrying Ethernet, with our key. Returns the
/// peer's port and the inner frame, or the reason to drop it.
#[inline]
pub fn decap<'a>(
    packet: &'a [u8],
    peers: &PeerTable,
    opts: &GreOptions,
) -> Result<(PortId, &'a [u8]), DropReason> {
    let ip = ipv4::Packet::new_checked(packet).map_err(|_| DropReason::BadOuterIp)?;
    if ip.protocol() != ipv4::PROTO_GRE {
        return Err(DropReason::BadOuterIp);
    }
    decap_gre(ip.src(), ip.into_payload(), peers, opts)
}

/// Opens the GRE packet `gre_bytes` (the payload of an outer IPv4 packet, or of a GRE-in-UDP
/// datagram) sent by `src`: checks `src` is a configured peer, the header is valid per RFC
/// 2784/2890, carries Ethernet, with our key. Returns the peer's port and the inner frame.
#[inline]
pub fn decap_gre<'a>(
    src: Ipv4Addr,
    gre_bytes: &'a [u8],
    peers: &PeerTable,
    opts: &GreOptions,
) -> Result<(PortId, &'a [u8]), DropReason> {
    // Check the sender before spending a checksum on its packet.
    let port = peers.get(src).ok_or(DropReason::UnknownPeer)?;
    let (key, frame) = open_gre(gre_bytes)?;
    if key != opts.key.unwrap_or(0) {
        return Err(DropReason::WrongKey);
    }
    Ok((port, frame))
}

/// Checks the outer IPv4 header of a packet a raw GRE socket delivered; returns its source
/// and the GRE packet it carries.
#[inline]
pub fn open_ipv4(packet: &[u8]) -> Result<(Ipv4Addr, &[u8]), DropReason> {
    let ip = ipv4::Packet::new_checked(packet).map_err(|_| DropReason::BadOuterIp)?;
    if ip.protocol() != ipv4::PROTO_GRE {
        return Err(DropReason::BadOuterIp);
    }
    Ok((ip.src(), ip.into_payload()))
}

/// Validates the GRE header of `gre_bytes` (RFC 2784/2890: version 0, no routing, Ethernet
/// inside, checksum if present) and returns its key (0 when absent: no key and key 0 are the
/// same network, as in OVS) and the inner frame. Which network and peer it belongs to is the
/// caller's business.
#[inline]
pub fn open_gre(gre_bytes: &[u8]) -> Result<(u32, &[u8]), DropReason> {
    let g = gre::Packet::new_unchecked(gre_bytes);
    let repr = gre::Repr::parse(&g).map_err(|e| match e {
        WireError::BadVersion => DropReason::GreVersion,
        WireError::Routing => DropReason::GreRouting,
        WireError::UnknownProtocol => DropReason::GreProtocol,
        WireError::BadChecksum => DropReason::GreChecksum,
        WireError::Truncated
        | WireError::BadIpv4
        | WireError::BadIpv6
        | WireError::BadTcp
        | WireError::BadTcpOption
        | WireError::BadUdp
        | WireError::Bpdu => DropReason::GreTruncated,
    })?;
    Ok((repr.key.unwrap_or(0), g.into_payload()))
}

/// [`open_gre`] without verifying the GRE checksum: for a packet whose checksum failed but
/// that may be one the underlay's GRO merged (its checksum is the first packet's, stale; the
/// kernel verified every merged packet's before merging). `None` when anything else is wrong.
pub fn open_gre_unverified(gre_bytes: &[u8]) -> Option<(u32, &[u8])> {
    let g = gre::Packet::new_unchecked(gre_bytes);
    g.check_len().ok()?;
    if g.version() != 0 || g.has_routing() || g.protocol() != gre::PROTO_TEB {
        return None;
    }
    let key = g.key().unwrap_or(0);
    Some((key, g.into_payload()))
}

/// A hash of the flow `frame` belongs to, for GRE-in-UDP source ports (RFC 8086 §3.2.1: the
/// source port is an entropy value, the same for every packet of a flow). IPv4 and IPv6
/// frames hash their addresses and protocol, plus the ports of unfragmented TCP, UDP and SCTP
/// (fragments leave them out, so a datagram's pieces stay together); anything else hashes
/// its MAC addresses. Frames of one flow always get the same value.
///
/// Malformed IP headers (a version or header length the ethertype contradicts, a header
/// cut short) are hashed by MAC addresses.
pub fn flow_hash(frame: &[u8]) -> u32 {
    let mut h = FlowHasher(0x9e37_79b9_7f4a_7c15);
    let Ok(eth) = Frame::new_checked(frame) else {
        h.mix(frame.get(..12).unwrap_or(frame));
        return fold(h.0);
    };
    let ports = |proto: u8, l4: &[u8]| {
        matches!(proto, ipv4::PROTO_TCP | ipv4::PROTO_UDP | ipv4::PROTO_SCTP)
            .then(|| transport_ports(l4))
            .flatten()
    };
    match eth.ethertype() {
        ethertype::IPV4 => match ipv4::Packet::new_header_checked(eth.payload()) {
            Ok(ip) => {
                // Source then destination, as on the wire (one little-endian word).
                let (s, d) = (ip.src().octets(), ip.dst().octets());
                h.mix_u64(
                    u64::from(u32::from_le_bytes(s)) | (u64::from(u32::from_le_bytes(d)) << 32),
                );
                h.mix_u64(u64::from(ip.protocol()));
                if !ip.is_fragment() {
                    if let Some(p) = ports(ip.protocol(), ip.rest()) {
                        h.mix_ports(p);
                    }
                }
            }
            Err(_) => h.mix_macs(&eth),
        },
        ethertype::IPV6 => match ipv6::Packet::new_header_checked(eth.payload()) {
            Ok(ip) => {
                for a in [ip.src().octets(), ip.dst().octets()] {
                    h.mix_word([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
                    h.mix_word([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]);
                }
                h.mix_u64(u64::from(ip.next_header()));
                if let Some(p) = ports(ip.next_header(), ip.rest()) {
                    h.mix_ports(p);
                }
            }
            Err(_) => h.mix_macs(&eth),
        },
        _ => h.mix_macs(&eth),
    }
    fold(h.0)
}

/// The running state of [`flow_hash`]: input is taken 8 bytes at a time, a shorter piece
/// zero-padded to 8.
struct FlowHasher(u64);

impl FlowHasher {
    /// Mixes in one 8-byte word.
    #[inline]
    fn mix_word(&mut self, w: [u8; 8]) {
        self.mix_u64(u64::from_le_bytes(w));
    }

    /// Mixes in one 8-byte word, already read as little-endian.
    #[inline]
    fn mix_u64(&mut self, w: u64) {
        self.0 = (self.0 ^ w).wrapping_mul(0xff51_afd7_ed55_8ccd);
        self.0 ^= self.0 >> 32;
    }

    /// Mixes `bytes` in, 8 at a time.
    #[inline]
    fn mix(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.mix_word(w);
        }
    }

    /// Mixes in source and destination port, as they appear on the wire.
    #[inline]
    fn mix_ports(&mut self, (s, d): (u16, u16)) {
        self.mix_u64(u64::from(s.swap_bytes()) | (u64::from(d.swap_bytes()) << 16));
    }

    /// Mixes in the destination and source MAC addresses, as they appear on the wire.
    #[inline]
    fn mix_macs(&mut self, eth: &Frame<&[u8]>) {
        let (d, s) = (eth.dst().0, eth.src().0);
        self.mix_word([d[0], d[1], d[2], d[3], d[4], d[5], s[0], s[1]]);
        self.mix_word([s[2], s[3], s[4], s[5], 0, 0, 0, 0]);
    }
}

/// A splitmix64 finalizer folded to 32 bits: every input bit reaches every output bit.
fn fold(mut z: u64) -> u32 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(src: [u8; 4], gre_hdr: &[u8], inner: &[u8]) -> Vec<u8> {
        let total = 20 + gre_hdr.len() + inner.len();
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
        p.extend_from_slice(&src);
        p.extend_from_slice(&[10, 200, 0, 2]);
        p.extend_from_slice(gre_hdr);
        p.extend_from_slice(inner);
        p
    }

    fn peers() -> PeerTable {
        let mut t = PeerTable::default();
        t.insert(Ipv4Addr::new(10, 200, 0, 1), 1);
        t.insert(Ipv4Addr::new(10, 200, 0, 3), 2);
        t
    }

    const INNER: [u8; 14] = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0];

    #[test]
    fn gre_in_udp_payload_decaps_by_source_address() {
        // A GRE-in-UDP datagram's payload is the GRE header + frame; the peer is the
        // datagram's source.
        let mut d = vec![0, 0, 0x65, 0x58];
        d.extend_from_slice(&INNER);
        let o = GreOptions {
            udp_port: Some(GRE_IN_UDP_PORT),
            ..GreOptions::default()
        };
        let (port, inner) = decap_gre(Ipv4Addr::new(10, 200, 0, 1), &d, &peers(), &o).unwrap();
        assert_eq!((port, inner), (1, &INNER[..]));
        assert_eq!(
            decap_gre(Ipv4Addr::new(10, 200, 0, 9), &d, &peers(), &o),
            Err(DropReason::UnknownPeer)
        );
    }

    /// An Ethernet/IPv4 frame with protocol `proto`, ports `sp` → `dp`, fragment field `frag`.
    fn ip4(proto: u8, sp: u16, dp: u16, frag: u16, payload: u8) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0];
        f.extend_from_slice(&[0x45, 0, 0, 40, 0, 0]);
        f.extend_from_slice(&frag.to_be_bytes());
        f.extend_from_slice(&[64, proto, 0, 0, 10, 77, 0, 1, 10, 77, 0, 2]);
        f.extend_from_slice(&sp.to_be_bytes());
        f.extend_from_slice(&dp.to_be_bytes());
        f.extend_from_slice(&[payload; 16]);
        f
    }

    #[test]
    fn flow_hash_follows_flows_not_payloads() {
        let a = flow_hash(&ip4(6, 40000, 80, 0x4000, 1));
        assert_eq!(
            a,
            flow_hash(&ip4(6, 40000, 80, 0x4000, 2)),
            "payload is not hashed"
        );
        assert_ne!(
            a,
            flow_hash(&ip4(6, 40001, 80, 0x4000, 1)),
            "source port is"
        );
        assert_ne!(a, flow_hash(&ip4(17, 40000, 80, 0x4000, 1)), "protocol is");
        // Fragments of one datagram hash alike, whatever their offset.
        assert_eq!(
            flow_hash(&ip4(17, 1, 2, 0x2000, 1)),
            flow_hash(&ip4(17, 3, 4, 0x0010, 1))
        );
        // Many flows spread over 8 source ports.
        let mut seen = [0u32; 8];
        for sp in 0..800u16 {
            seen[(flow_hash(&ip4(6, 30000 + sp, 80, 0, 0)) % 8) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "uneven spread {seen:?}");
        // Never a panic, on anything.
        let f = ip4(6, 1, 2, 0, 0);
        for n in 0..f.len() {
            flow_hash(&f[..n]);
        }
    }

    #[test]
    fn accepts_configured_peer() {
        let p = packet([10, 200, 0, 3], &[0, 0, 0x65, 0x58], &INNER);
        let (port, inner) = decap(&p, &peers(), &GreOptions::default()).unwrap();
        assert_eq!(port, 2);
        assert_eq!(inner, &INNER);
    }

    #[test]
    fn key_rules() {
        let keyed = packet([10, 200, 0, 1], &[0x20, 0, 0x65, 0x58, 0, 0, 0, 42], &INNER);
        let key0 = packet([10, 200, 0, 1], &[0x20, 0, 0x65, 0x58, 0, 0, 0, 0], &INNER);
        let plain = packet([10, 200, 0, 1], &[0, 0, 0x65, 0x58], &INNER);
        let k42 = GreOptions {
            key: Some(42),
            ..Default::default()
        };
        let none = GreOptions::default();
        assert!(decap(&keyed, &peers(), &k42).is_ok());
        assert_eq!(decap(&plain, &peers(), &k42), Err(DropReason::WrongKey));
        assert_eq!(decap(&keyed, &peers(), &none), Err(DropReason::WrongKey));
        // "No key" and key 0 are the same network.
        assert!(decap(&key0, &peers(), &none).is_ok());
        let k0 = GreOptions {
            key: Some(0),
            ..Default::default()
        };
        assert!(decap(&plain, &peers(), &k0).is_ok());
    }

    #[test]
    fn refusals_map_to_drop_reasons() {
        let o = GreOptions::default();
        let t = peers();
        let cases: Vec<(Vec<u8>, DropReason)> = vec![
            (
                packet([10, 200, 0, 9], &[0, 0, 0x65, 0x58], &INNER),
                DropReason::UnknownPeer,
            ),
            (
                packet([10, 200, 0, 1], &[0, 1, 0x65, 0x58], &INNER),
                DropReason::GreVersion,
            ),
            (
                packet([10, 200, 0, 1], &[0x40, 0, 0x65, 0x58], &INNER),
                DropReason::GreRouting,
            ),
            (
                packet([10, 200, 0, 1], &[0, 0, 0x08, 0x00], &INNER),
                DropReason::GreProtocol,
            ),
            (
                packet([10, 200, 0, 1], &[0x80, 0, 0x65, 0x58, 1, 2, 0, 0], &INNER),
                DropReason::GreChecksum,
            ),
            (
                packet([10, 200, 0, 1], &[0x20, 0], &[]),
                DropReason::GreTruncated,
            ),
            (vec![0x45, 0, 0], DropReason::BadOuterIp),
        ];
        for (p, want) in cases {
            assert_eq!(decap(&p, &t, &o), Err(want), "{p:02x?}");
        }
        let mut not_gre = packet([10, 200, 0, 1], &[0, 0, 0x65, 0x58], &INNER);
        not_gre[9] = 17;
        assert_eq!(decap(&not_gre, &t, &o), Err(DropReason::BadOuterIp));
    }

    #[test]
    fn overhead_follows_options() {
        assert_eq!(GreOptions::default().overhead(), 24);
        let all = GreOptions {
            key: Some(1),
            csum: true,
            seq: true,
            udp_port: None,
        };
        assert_eq!(all.overhead(), 36);
        let udp = GreOptions {
            udp_port: Some(GRE_IN_UDP_PORT),
            ..GreOptions::default()
        };
        assert_eq!(udp.overhead(), 32, "IPv4 20 + UDP 8 + GRE 4");
    }

    #[test]
    fn peer_table() {
        let mut t = peers();
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(Ipv4Addr::new(10, 200, 0, 3)), Some(2));
        assert_eq!(t.remove(Ipv4Addr::new(10, 200, 0, 3)), Some(2));
        assert_eq!(t.get(Ipv4Addr::new(10, 200, 0, 3)), None);
        assert_eq!(t.remove(Ipv4Addr::new(10, 200, 0, 3)), None);
    }
}
