//! dnet's keepalive hello: an Ethernet frame to `01:80:c2:00:00:0b` (IEEE link-local, which
//! Linux bridges and OVS do not forward), ethertype 0x88b5 (IEEE local experimental 1),
//! payload `dnet`, version 1, type 1 (hello), the sender's interval in ms (u32), its
//! multiplier (u8), padded to the 60-byte minimum frame.

use super::ethernet;

/// Destination MAC of hellos.
pub const DST: [u8; 6] = [0x01, 0x80, 0xc2, 0x00, 0x00, 0x0b];
/// Source MAC of hellos.
pub const SRC: [u8; 6] = [0x02, 0x64, 0x6e, 0x65, 0x74, 0x00];
/// Ethertype of hellos.
pub const ETHERTYPE: u16 = 0x88b5;
/// Length of a hello frame (minimum Ethernet payload).
pub const LEN: usize = 60;

mod field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 14..18;
    pub const VERSION: usize = 18;
    pub const KIND: usize = 19;
    pub const INTERVAL: Range<usize> = 20..24;
    pub const MULTIPLIER: usize = 24;
}

const MAGIC: &[u8; 4] = b"dnet";
const VERSION: u8 = 1;
const KIND_HELLO: u8 = 1;

/// A hello announcing `interval_ms` (saturated to u32) and `multiplier` (saturated to u8).
pub fn emit(interval_ms: u64, multiplier: u32) -> [u8; LEN] {
    let mut f = [0u8; LEN];
    let mut eth = ethernet::Frame::new_unchecked(&mut f[..]);
    eth.set_dst(ethernet::MacAddr(DST));
    eth.set_src(ethernet::MacAddr(SRC));
    eth.set_ethertype(ETHERTYPE);
    f[field::MAGIC].copy_from_slice(MAGIC);
    f[field::VERSION] = VERSION;
    f[field::KIND] = KIND_HELLO;
    let iv = u32::try_from(interval_ms).unwrap_or(u32::MAX);
    f[field::INTERVAL].copy_from_slice(&iv.to_be_bytes());
    f[field::MULTIPLIER] = u8::try_from(multiplier).unwrap_or(u8::MAX);
    f
}

/// If `frame` is a hello, the (interval ms, multiplier) it announces. Never panics.
pub fn parse(frame: &[u8]) -> Option<(u64, u32)> {
    let eth = ethernet::Frame::new_checked(frame).ok()?;
    if frame.len() <= field::MULTIPLIER
        || eth.dst().0 != DST
        || eth.ethertype() != ETHERTYPE
        || &frame[field::MAGIC] != MAGIC
        || frame[field::VERSION] != VERSION
        || frame[field::KIND] != KIND_HELLO
    {
        return None;
    }
    let iv = u32::from_be_bytes(frame[field::INTERVAL].try_into().ok()?);
    Some((u64::from(iv), u32::from(frame[field::MULTIPLIER])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_round_trip() {
        let f = emit(1000, 3);
        assert_eq!(
            &f[..25],
            &[
                0x01, 0x80, 0xc2, 0, 0, 0x0b, 0x02, 0x64, 0x6e, 0x65, 0x74, 0, 0x88, 0xb5, b'd',
                b'n', b'e', b't', 1, 1, 0, 0, 0x03, 0xe8, 3
            ]
        );
        assert!(f[25..].iter().all(|b| *b == 0));
        assert_eq!(parse(&f), Some((1000, 3)));
        assert_eq!(
            parse(&emit(u64::MAX, 999)),
            Some((u64::from(u32::MAX), 255))
        );
    }

    #[test]
    fn anything_else_is_not_a_hello() {
        let f = emit(10, 1);
        for n in 0..25 {
            assert_eq!(parse(&f[..n]), None, "truncated at {n}");
        }
        for i in [0, 12, 14, 18, 19] {
            let mut g = f;
            g[i] ^= 0x40;
            assert_eq!(parse(&g), None, "byte {i} changed");
        }
    }
}
