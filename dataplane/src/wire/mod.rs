//! Packet formats: zero-copy views over byte slices and small owned `Repr`s that emit into a
//! caller's buffer. Nothing here does I/O or allocates.
//!
//! Contract (as in smoltcp): untrusted bytes go through `new_checked`; after it succeeds no
//! accessor of that view panics.
//!
//! Accessors are `#[inline]`; the few the offloads call per frame (checksum verification,
//! `header`, `rest`, `options`, `same_flow_fields`) are `#[inline(always)]`: LLVM left them out
//! of line in `UdpGro::add` and `Gro::add`, which cost 5-10% per datagram (measured with
//! callgrind and an interleaved A/B against the byte-offset code they replaced).

pub mod arp;
pub mod bpdu;
pub mod checksum;
pub mod ethernet;
pub mod gre;
pub mod hello;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;
pub mod vnet;

/// Why a buffer could not be read as a given format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than the header (or than the header's own length fields say).
    #[error("truncated")]
    Truncated,
    /// GRE version field is not 0.
    #[error("GRE version is not 0")]
    BadVersion,
    /// GRE routing (R) or strict source route bit set (RFC 1701 features RFC 2784 forbids).
    #[error("GRE routing or strict-source-route bit set")]
    Routing,
    /// GRE protocol type is not Transparent Ethernet Bridging (0x6558).
    #[error("GRE protocol type is not 0x6558")]
    UnknownProtocol,
    /// A present GRE checksum does not verify.
    #[error("GRE checksum mismatch")]
    BadChecksum,
    /// The IPv4 header is malformed (version, header length, total length), or an outer
    /// packet is not GRE.
    #[error("malformed IPv4 header")]
    BadIpv4,
    /// The IPv6 header's version is not 6.
    #[error("IPv6 version is not 6")]
    BadIpv6,
    /// The TCP data offset is below 5 (a header shorter than 20 bytes).
    #[error("TCP data offset below 5")]
    BadTcp,
    /// A TCP option's length is below 2.
    #[error("TCP option length below 2")]
    BadTcpOption,
    /// The UDP length field is below the header's 8 bytes.
    #[error("UDP length below 8")]
    BadUdp,
    /// Addressed to the bridge group address but not a valid 802.3/LLC BPDU.
    #[error("malformed BPDU")]
    Bpdu,
}

/// The source and destination ports at the start of `l4`, the header of a transport that
/// begins with them (TCP, UDP, SCTP, DCCP, UDP-Lite), if it is that long.
#[inline]
pub fn transport_ports(l4: &[u8]) -> Option<(u16, u16)> {
    match l4 {
        [a, b, c, d, ..] => Some((u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d]))),
        _ => None,
    }
}

#[cfg(test)]
mod vectors {
    //! Whole-packet vectors captured from Open vSwitch (../shared/vectors/).
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// `ovs-netdev-gre-icmp.txt`, first record: OVS 3.1 userspace GRE, default options, carrying
    /// `02:77:00:00:00:01 > 02:77:00:00:00:02, IPv4, 10.77.0.1 > 10.77.0.2: ICMP echo request,
    /// id 7201, seq 1, length 64`.
    const OVS_ICMP_REQUEST: &str = "4500007a00004000402f24c30ac800010ac8000200006558027700000002027700000001080045000054f05a4000400135b20a4d00010a4d000208002f591c210001b0040b6b000000002b42070000000000101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f3031323334353637";

    #[test]
    fn ovs_netdev_gre_icmp_decodes_to_the_inner_frame() {
        let b = hex(OVS_ICMP_REQUEST);
        let ip = ipv4::Packet::new_checked(&b[..]).unwrap();
        assert_eq!(ip.protocol(), ipv4::PROTO_GRE);
        assert_eq!(ip.src(), std::net::Ipv4Addr::new(10, 200, 0, 1));
        assert_eq!(ip.dst(), std::net::Ipv4Addr::new(10, 200, 0, 2));
        assert_eq!(ip.total_len(), 122);

        let g = gre::Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(gre::Repr::parse(&g).unwrap(), gre::Repr::default());
        assert_eq!(g.protocol(), gre::PROTO_TEB);

        let f = ethernet::Frame::new_checked(g.payload()).unwrap();
        assert_eq!(f.dst().to_string(), "02:77:00:00:00:02");
        assert_eq!(f.src().to_string(), "02:77:00:00:00:01");
        assert_eq!(f.vlan(), None);
        assert_eq!(f.ethertype(), ethernet::ethertype::IPV4);
        assert_eq!(g.payload().len(), 98); // tcpdump: "length 98"

        // Inner IPv4/ICMP: 10.77.0.1 > 10.77.0.2, echo request id 7201 (0x1c21) seq 1.
        let inner = ipv4::Packet::new_checked(f.payload()).unwrap();
        assert_eq!(inner.src(), std::net::Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(inner.dst(), std::net::Ipv4Addr::new(10, 77, 0, 2));
        assert_eq!(inner.protocol(), 1);
        let icmp = inner.payload();
        assert_eq!(icmp[0], 8);
        assert_eq!(u16::from_be_bytes([icmp[4], icmp[5]]), 7201);
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1);
        assert_eq!(icmp.len(), 64);

        // Re-encapsulating the inner frame with dnet's default header reproduces OVS's bytes.
        let mut hdr = [0u8; 4];
        gre::Repr::default().emit(&mut hdr, g.payload());
        assert_eq!(&hdr[..], &b[20..24]);
    }
}
