//! The ICMP errors the switch synthesises for path MTU discovery: ICMPv4 "fragmentation
//! needed" (type 3 code 4, RFC 1191) and ICMPv6 "Packet Too Big" (type 2, RFC 4443), built as
//! whole Ethernet frames addressed back to the sender of an oversize frame, as if from its
//! destination. Also the small classification the path MTU decision needs. No I/O.

use super::checksum::{accumulate, finish};
use super::ethernet::{ethertype, Frame};
use super::{ipv4, ipv6};

/// What an inner frame carries, as far as the path MTU decision cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inner {
    /// IPv4; `df` = Don't Fragment set.
    V4 {
        /// DF bit.
        df: bool,
    },
    /// IPv6 (never fragmented by routers).
    V6,
    /// Anything else (ARP, other ethertypes, malformed IP).
    Other,
}

/// Classifies `frame` (an Ethernet frame, optionally 802.1Q tagged).
pub fn classify(frame: &[u8]) -> Inner {
    let Ok(eth) = Frame::new_checked(frame) else {
        return Inner::Other;
    };
    match eth.ethertype() {
        ethertype::IPV4 => match ipv4::Packet::new_header_checked(eth.payload()) {
            Ok(ip) => Inner::V4 { df: ip.dont_frag() },
            Err(_) => Inner::Other,
        },
        ethertype::IPV6 if ipv6::Packet::new_header_checked(eth.payload()).is_ok() => Inner::V6,
        _ => Inner::Other,
    }
}

/// Length of the IPv6 packet a Packet Too Big may fill (the IPv6 minimum MTU).
pub const V6_MIN_MTU: usize = 1280;
/// Longest frame [`too_big`] can build: tagged Ethernet header + 1280.
pub const MAX_REPLY: usize = 18 + V6_MIN_MTU;

/// Builds into `out` the ICMP error telling the sender of `frame` that packets to its
/// destination must fit `mtu` bytes (the IP MTU): ICMPv4 fragmentation-needed for IPv4 (the
/// original IP header + 8 bytes quoted), ICMPv6 Packet Too Big for IPv6 (as much quoted as fits
/// in 1280 bytes). The reply goes from the original destination (MAC and IP) to the original
/// source, on the same VLAN. Returns its length, or `None` when no error may be sent about
/// `frame` (not IP, malformed, a non-first fragment, an ICMP error itself, a group or
/// unspecified address) or `out` is too small ([`MAX_REPLY`] always suffices).
pub fn too_big(frame: &[u8], mtu: u16, out: &mut [u8]) -> Option<usize> {
    let eth = Frame::new_checked(frame).ok()?;
    if eth.src().is_multicast() || eth.dst().is_multicast() {
        return None;
    }
    let hl = eth.header_len();
    // Ethernet: swap the addresses, keep the tag and ethertype.
    let head = out.get_mut(..hl)?;
    head.copy_from_slice(eth.header());
    let mut reply = Frame::new_unchecked(head);
    reply.set_dst(eth.src());
    reply.set_src(eth.dst());
    let ip = eth.payload();
    let n = match eth.ethertype() {
        ethertype::IPV4 => frag_needed_v4(ip, mtu, &mut out[hl..])?,
        ethertype::IPV6 => packet_too_big_v6(ip, u32::from(mtu), &mut out[hl..])?,
        _ => return None,
    };
    Some(hl + n)
}

fn frag_needed_v4(ip: &[u8], mtu: u16, out: &mut [u8]) -> Option<usize> {
    let orig = ipv4::Packet::new_header_checked(ip).ok()?;
    // Never about a non-first fragment.
    if orig.frag_offset() != 0 {
        return None;
    }
    let (src, dst) = (orig.src(), orig.dst());
    let group = |a: std::net::Ipv4Addr| a.octets()[0] >= 224 || a.is_unspecified();
    if group(src) || group(dst) {
        return None;
    }
    // Never about an ICMP error (RFC 1122 3.2.2): only echo/timestamp/info queries are answered.
    if orig.protocol() == ipv4::PROTO_ICMP {
        let t = *orig.rest().first()?;
        if !matches!(t, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18) {
            return None;
        }
    }
    // The original header and the first 8 bytes of its payload.
    let quote = &ip[..(orig.header_len() + 8).min(ip.len())];
    let total = ipv4::MIN_HEADER_LEN + 8 + quote.len();
    let o = out.get_mut(..total)?;
    let (hdr, icmp) = o.split_at_mut(ipv4::MIN_HEADER_LEN);
    let mut reply = ipv4::Packet::new_unchecked(hdr);
    reply.set_version_and_header_len(ipv4::MIN_HEADER_LEN);
    reply.set_dscp_ecn(48, 0); // CS6, internetwork control, as Linux sends ICMP errors
    reply.set_total_len(total as u16);
    reply.set_ident(0);
    reply.set_frag(false, false, 0);
    reply.set_ttl(64);
    reply.set_protocol(ipv4::PROTO_ICMP);
    reply.set_src(dst);
    reply.set_dst(src);
    reply.fill_checksum();
    // Type 3 (destination unreachable), code 4 (fragmentation needed), next-hop MTU.
    icmp[..8].copy_from_slice(&[3, 4, 0, 0, 0, 0, (mtu >> 8) as u8, mtu as u8]);
    icmp[8..].copy_from_slice(quote);
    let c = finish(accumulate(0, icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Some(total)
}

fn packet_too_big_v6(ip: &[u8], mtu: u32, out: &mut [u8]) -> Option<usize> {
    let orig = ipv6::Packet::new_header_checked(ip).ok()?;
    let (src, dst) = (orig.src(), orig.dst());
    if src.is_multicast() || src.is_unspecified() || dst.is_multicast() {
        return None;
    }
    // Never about an ICMPv6 error (types below 128), when it directly follows the header.
    if orig.next_header() == ipv6::NEXT_ICMPV6 && orig.rest().first().is_some_and(|t| *t < 128) {
        return None;
    }
    let quote = &ip[..ip.len().min(V6_MIN_MTU - ipv6::HEADER_LEN - 8)];
    let plen = 8 + quote.len();
    let total = ipv6::HEADER_LEN + plen;
    let o = out.get_mut(..total)?;
    let (hdr, icmp) = o.split_at_mut(ipv6::HEADER_LEN);
    let mut reply = ipv6::Packet::new_unchecked(hdr);
    reply.set_version();
    reply.set_traffic_class(0);
    reply.set_flow_label(0);
    reply.set_payload_len(plen as u16);
    reply.set_next_header(ipv6::NEXT_ICMPV6);
    reply.set_hop_limit(64);
    reply.set_src(dst);
    reply.set_dst(src);
    // Type 2 (packet too big), code 0, MTU.
    icmp[..4].copy_from_slice(&[2, 0, 0, 0]);
    icmp[4..8].copy_from_slice(&mtu.to_be_bytes());
    icmp[8..].copy_from_slice(quote);
    let s = reply.pseudo_header_sum(ipv6::NEXT_ICMPV6, plen);
    let c = finish(accumulate(s, icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_frame(df: bool, proto: u8, len: usize) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let tot = len - 14;
        f.extend_from_slice(&[
            0x45,
            0,
            (tot >> 8) as u8,
            tot as u8,
            0x12,
            0x34,
            if df { 0x40 } else { 0 },
            0,
            64,
            proto,
            0,
            0,
            10,
            77,
            0,
            1,
            10,
            77,
            0,
            2,
        ]);
        f.resize(len, 0xab);
        // ICMP echo request if proto 1.
        f[34] = 8;
        f
    }

    #[test]
    fn classifies_df_and_versions() {
        assert_eq!(classify(&v4_frame(true, 6, 100)), Inner::V4 { df: true });
        assert_eq!(classify(&v4_frame(false, 6, 100)), Inner::V4 { df: false });
        let mut f = vec![0u8; 80];
        f[12] = 0x86;
        f[13] = 0xdd;
        f[14] = 0x60;
        assert_eq!(classify(&f), Inner::V6);
        assert_eq!(classify(&[0u8; 10]), Inner::Other);
        let mut arp = v4_frame(true, 6, 60);
        arp[13] = 0x06;
        assert_eq!(classify(&arp), Inner::Other);
    }

    #[test]
    fn frag_needed_swaps_addresses_quotes_header_and_checksums() {
        let f = v4_frame(true, 1, 1476);
        let mut out = [0u8; MAX_REPLY];
        let n = too_big(&f, 1362, &mut out).unwrap();
        let r = &out[..n];
        assert_eq!(n, 14 + 20 + 8 + 28);
        assert_eq!(&r[0..6], &f[6..12]);
        assert_eq!(&r[6..12], &f[0..6]);
        assert_eq!(&r[12..14], &[0x08, 0x00]);
        let ip = &r[14..];
        assert_eq!(finish(accumulate(0, &ip[..20])), 0, "IP checksum");
        assert_eq!(
            &ip[12..16],
            &[10, 77, 0, 2],
            "from the original destination"
        );
        assert_eq!(&ip[16..20], &[10, 77, 0, 1], "to the original source");
        assert_eq!(ip[9], 1);
        let icmp = &ip[20..];
        assert_eq!((icmp[0], icmp[1]), (3, 4));
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1362);
        assert_eq!(finish(accumulate(0, icmp)), 0, "ICMP checksum");
        assert_eq!(&icmp[8..], &f[14..14 + 28]);
    }

    #[test]
    fn no_error_about_errors_fragments_or_groups() {
        let mut out = [0u8; MAX_REPLY];
        let mut e = v4_frame(true, 1, 200);
        e[34] = 3; // an ICMP error itself
        assert_eq!(too_big(&e, 1000, &mut out), None);
        let mut frag = v4_frame(false, 17, 200);
        frag[21] = 10; // offset 10
        assert_eq!(too_big(&frag, 1000, &mut out), None);
        let mut b = v4_frame(true, 17, 200);
        b[0] = 0xff;
        assert_eq!(too_big(&b, 1000, &mut out), None);
        assert_eq!(
            too_big(&v4_frame(true, 17, 200), 1000, &mut [0u8; 40]),
            None
        );
    }

    #[test]
    fn packet_too_big_v6_fits_1280_and_checksums() {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
        f.extend_from_slice(&[0x60, 0, 0, 0, 0x05, 0x8c, 17, 64]);
        f.extend_from_slice(&[0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&[0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        f.resize(14 + 1460, 0x5a);
        let mut out = [0u8; MAX_REPLY];
        let n = too_big(&f, 1342, &mut out).unwrap();
        assert_eq!(n, 14 + 1280);
        let ip = &out[14..n];
        assert_eq!(&ip[8..24], &f[14 + 24..14 + 40]);
        assert_eq!(&ip[24..40], &f[14 + 8..14 + 24]);
        let icmp = &ip[40..];
        assert_eq!(icmp[0], 2);
        assert_eq!(
            u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]),
            1342
        );
        let mut s = accumulate(0, &ip[8..40]);
        s += icmp.len() as u64 + 58;
        assert_eq!(finish(accumulate(s, icmp)), 0, "ICMPv6 checksum");
    }
}
