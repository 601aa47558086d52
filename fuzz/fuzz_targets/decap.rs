//! `switch::tunnel::decap` on arbitrary outer IPv4 packets, plus an encap → decap round trip.
//!
//! Input layout: byte 0 = GRE option flags (bit 0 key, bit 1 csum, bit 2 seq), bytes 1..5 =
//! key (big endian), rest = the received IPv4 packet. Peers: 10.200.0.1 → port 1,
//! 10.200.0.3 → port 2, 10.200.0.2 → port 3.
#![no_main]

use dnet::switch::tunnel::{decap, decap_gre, GreOptions, PeerTable};
use dnet::switch::DropReason;
use dnet::wire::{gre, ipv4};
use libfuzzer_sys::fuzz_target;
use std::net::Ipv4Addr;

const PEERS: [([u8; 4], u16); 3] = [([10, 200, 0, 1], 1), ([10, 200, 0, 3], 2), ([10, 200, 0, 2], 3)];

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let f = data[0];
    let opts = GreOptions {
        key: (f & 1 != 0).then(|| u32::from_be_bytes([data[1], data[2], data[3], data[4]])),
        csum: f & 2 != 0,
        seq: f & 4 != 0,
        udp_port: None,
    };
    let packet = &data[5..];
    let mut peers = PeerTable::default();
    for (a, p) in PEERS {
        peers.insert(Ipv4Addr::from(a), p);
    }

    check_decap(packet, &peers, &opts);
    round_trip(packet, &peers, &opts);
});

/// decap's answer must agree with an independent reading of the layers.
fn check_decap(packet: &[u8], peers: &PeerTable, opts: &GreOptions) {
    let got = decap(packet, peers, opts);

    let want: Result<(u16, &[u8]), DropReason> = (|| {
        let ip = ipv4::Packet::new_checked(packet).map_err(|_| DropReason::BadOuterIp)?;
        if ip.protocol() != ipv4::PROTO_GRE {
            return Err(DropReason::BadOuterIp);
        }
        let port = PEERS
            .iter()
            .find(|(a, _)| Ipv4Addr::from(*a) == ip.src())
            .map(|e| e.1)
            .ok_or(DropReason::UnknownPeer)?;
        let g = ip.into_payload();
        let pkt = gre::Packet::new_checked(g).map_err(|_| DropReason::GreTruncated)?;
        let r = gre::Repr::parse(&pkt).map_err(|e| {
            use dnet::wire::WireError::*;
            match e {
                BadVersion => DropReason::GreVersion,
                Routing => DropReason::GreRouting,
                UnknownProtocol => DropReason::GreProtocol,
                BadChecksum => DropReason::GreChecksum,
                Truncated | BadIpv4 | BadIpv6 | BadTcp | BadTcpOption | BadUdp | Bpdu => {
                    DropReason::GreTruncated
                }
            }
        })?;
        if r.key.unwrap_or(0) != opts.key.unwrap_or(0) {
            return Err(DropReason::WrongKey);
        }
        Ok((port, &g[r.header_len()..]))
    })();
    assert_eq!(got, want);

    // Reading without the checksum agrees with open_gre wherever that one succeeds.
    if let Ok(ip) = ipv4::Packet::new_checked(packet) {
        let g = ip.into_payload();
        let unverified = dnet::switch::tunnel::open_gre_unverified(g);
        if let Ok(x) = dnet::switch::tunnel::open_gre(g) {
            assert_eq!(unverified, Some(x));
        }
    }

    // GRE-in-UDP hands decap_gre the datagram payload and its source: the same GRE bytes
    // from the same sender must give the same answer.
    if let Ok(ip) = ipv4::Packet::new_checked(packet) {
        if ip.protocol() == ipv4::PROTO_GRE {
            let src = ip.src();
            assert_eq!(decap_gre(src, ip.into_payload(), peers, opts), got);
        }
    }

    if let Ok((_, inner)) = got {
        // The inner frame is a sub-slice of the packet, ending at the IPv4 total length.
        let start = inner.as_ptr() as usize - packet.as_ptr() as usize;
        assert!(start + inner.len() <= packet.len());
        let total = ipv4::Packet::new_checked(packet).unwrap().total_len();
        assert_eq!(start + inner.len(), total);
    }
}

/// Whatever the options, a packet encapsulated with them from a known peer decapsulates to
/// exactly the frame that went in. The frame is the fuzz packet (any bytes).
fn round_trip(frame: &[u8], peers: &PeerTable, opts: &GreOptions) {
    let frame = &frame[..frame.len().min(1500)];
    let seq = frame.len() as u32 ^ 0x5a5a_0000;
    let repr = opts.repr(seq);
    assert_eq!(repr.header_len(), opts.header_len());
    assert_eq!(opts.overhead(), ipv4::MIN_HEADER_LEN + opts.header_len());
    let total = opts.overhead() + frame.len();
    let mut pkt = vec![
        0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, ipv4::PROTO_GRE, 0, 0,
        10, 200, 0, 3, 10, 200, 0, 1,
    ];
    let mut hdr = [0u8; gre::MAX_HEADER_LEN];
    repr.emit(&mut hdr, frame);
    pkt.extend_from_slice(&hdr[..repr.header_len()]);
    pkt.extend_from_slice(frame);
    // Link-layer padding after the IPv4 total length is ignored.
    pkt.extend_from_slice(&[0xee; 3]);
    assert_eq!(decap(&pkt, peers, opts), Ok((2, frame)));
}
