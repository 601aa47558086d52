//! TCP headers (RFC 9293) and their options, as the offloads and the MSS clamp read and
//! rewrite them: dnet never terminates TCP, it only cuts, merges and clamps segments passing
//! through.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |          Source Port          |       Destination Port        |
//! |                        Sequence Number                        |
//! |                    Acknowledgment Number                      |
//! |  Data |       |C|E|U|A|P|R|S|F|                               |
//! | Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
//! |           Checksum            |         Urgent Pointer        |
//! |                    Options                    |    Padding    |
//! ```
//! The four bits between the data offset and CWR ([`Packet::reserved`]) are three reserved
//! bits and AE (RFC 9768, once NS).
//!
//! Options are read by [`OptionIter`], which yields each option typed (or as
//! [`TcpOption::Unknown`] when its kind is unknown or its length does not fit its kind) and
//! stops, with an error, at the first option whose length is impossible.

use super::{checksum, WireError};

/// Length of the fixed header (data offset 5).
pub const HEADER_LEN: usize = 20;
/// Longest header (data offset 15).
pub const MAX_HEADER_LEN: usize = 60;
/// Where the checksum field is in the header (a virtio-net header's `csum_offset` for TCP).
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM.start;

/// Flag bits of [`Packet::flags`].
pub mod flags {
    /// No more data from the sender.
    pub const FIN: u8 = 0x01;
    /// Synchronise sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset.
    pub const RST: u8 = 0x04;
    /// Push.
    pub const PSH: u8 = 0x08;
    /// The acknowledgment number is significant.
    pub const ACK: u8 = 0x10;
    /// The urgent pointer is significant.
    pub const URG: u8 = 0x20;
    /// ECN echo (RFC 3168).
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced (RFC 3168).
    pub const CWR: u8 = 0x80;
}

mod field {
    use std::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const ACK: Range<usize> = 8..12;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: Range<usize> = 18..20;
}

/// Option kinds (IANA "TCP Option Kind Numbers").
mod kind {
    pub const END: u8 = 0;
    pub const NOP: u8 = 1;
    pub const MSS: u8 = 2;
    pub const WINDOW_SCALE: u8 = 3;
    pub const SACK_PERMITTED: u8 = 4;
    pub const SACK: u8 = 5;
    pub const TIMESTAMPS: u8 = 8;
}

/// A zero-copy view of a TCP segment (header + payload).
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps without checking.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps and checks that the header, options included, is in the buffer.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ensures the fixed header is present, the data offset is at least 5, and the header it
    /// announces fits the buffer: then no accessor panics. The options are not checked
    /// ([`OptionIter`] never panics on them).
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.header_len() < HEADER_LEN {
            return Err(WireError::BadTcp);
        }
        if len < self.header_len() {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    #[inline]
    fn u16_at(&self, r: std::ops::Range<usize>) -> u16 {
        let b = &self.buffer.as_ref()[r];
        u16::from_be_bytes([b[0], b[1]])
    }

    #[inline]
    fn u32_at(&self, r: std::ops::Range<usize>) -> u32 {
        let b = &self.buffer.as_ref()[r];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        self.u16_at(field::SRC_PORT)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        self.u16_at(field::DST_PORT)
    }

    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        self.u32_at(field::SEQ)
    }

    /// Acknowledgment number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        self.u32_at(field::ACK)
    }

    /// Header length in bytes (data offset × 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// The four bits after the data offset: three reserved and AE (RFC 9768).
    #[inline]
    pub fn reserved(&self) -> u8 {
        self.buffer.as_ref()[field::DATA_OFF] & 0x0f
    }

    /// The flags byte (see [`flags`]).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Window size (unscaled).
    #[inline]
    pub fn window_len(&self) -> u16 {
        self.u16_at(field::WINDOW)
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM)
    }

    /// Urgent pointer.
    #[inline]
    pub fn urgent_ptr(&self) -> u16 {
        self.u16_at(field::URGENT)
    }

    /// The whole header, options included.
    #[inline(always)]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// The option bytes, unparsed.
    #[inline(always)]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// The options, parsed one by one.
    #[inline]
    pub fn iter_options(&self) -> OptionIter<'_> {
        OptionIter::new(self.options())
    }

    /// The value of the MSS option: the first one, if no malformed option comes before it.
    #[inline]
    pub fn mss(&self) -> Option<u16> {
        self.mss_at().map(|(_, v)| v)
    }

    /// Where the first MSS option's value is (offset in the header) and what it says.
    #[inline]
    fn mss_at(&self) -> Option<(usize, u16)> {
        let mut it = RawOptions::new(self.options());
        loop {
            match it.next()? {
                Ok((at, kind::MSS, &[a, b])) => {
                    return Some((HEADER_LEN + at + 2, u16::from_be_bytes([a, b])))
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Does `other` carry the same header apart from the fields that change from segment to
    /// segment of one flow: sequence number, flags, window and checksum? (What coalescing
    /// compares: ports, acknowledgment number, data offset and reserved bits, urgent pointer
    /// and options. Both views must have passed a check.)
    #[inline(always)]
    pub fn same_flow_fields<U: AsRef<[u8]>>(&self, other: &Packet<U>) -> bool {
        let (a, b) = (self.header(), other.header());
        a.len() == b.len()
            && a[field::SRC_PORT.start..field::DST_PORT.end]
                == b[field::SRC_PORT.start..field::DST_PORT.end]
            && a[field::ACK.start..=field::DATA_OFF] == b[field::ACK.start..=field::DATA_OFF]
            && a[field::URGENT.start..] == b[field::URGENT.start..]
    }

    /// The payload (after the header, to the end of the buffer).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// Does the checksum verify over the whole buffer, given the IP layer's
    /// pseudo-header sum (`ipv4::Packet::pseudo_header_sum` / `ipv6::...`)?
    #[inline(always)]
    pub fn verify_checksum(&self, pseudo_header_sum: u64) -> bool {
        checksum::finish(checksum::accumulate(
            pseudo_header_sum,
            self.buffer.as_ref(),
        )) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    fn set_u16_at(&mut self, r: std::ops::Range<usize>, v: u16) {
        self.buffer.as_mut()[r].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the source port.
    #[inline]
    pub fn set_src_port(&mut self, p: u16) {
        self.set_u16_at(field::SRC_PORT, p);
    }

    /// Sets the destination port.
    #[inline]
    pub fn set_dst_port(&mut self, p: u16) {
        self.set_u16_at(field::DST_PORT, p);
    }

    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, n: u32) {
        self.buffer.as_mut()[field::SEQ].copy_from_slice(&n.to_be_bytes());
    }

    /// Sets the acknowledgment number.
    #[inline]
    pub fn set_ack_number(&mut self, n: u32) {
        self.buffer.as_mut()[field::ACK].copy_from_slice(&n.to_be_bytes());
    }

    /// Sets the header length (a multiple of 4, 20 to 60), keeping the reserved bits.
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        let b = &mut self.buffer.as_mut()[field::DATA_OFF];
        *b = (((len / 4) as u8) << 4) | (*b & 0x0f);
    }

    /// Sets the reserved bits and AE (the low four bits of the data offset byte).
    #[inline]
    pub fn set_reserved(&mut self, bits: u8) {
        let b = &mut self.buffer.as_mut()[field::DATA_OFF];
        *b = (*b & 0xf0) | (bits & 0x0f);
    }

    /// Sets the flags byte.
    #[inline]
    pub fn set_flags(&mut self, f: u8) {
        self.buffer.as_mut()[field::FLAGS] = f;
    }

    /// Sets the window size.
    #[inline]
    pub fn set_window_len(&mut self, w: u16) {
        self.set_u16_at(field::WINDOW, w);
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        self.set_u16_at(field::CHECKSUM, c);
    }

    /// Sets the urgent pointer.
    #[inline]
    pub fn set_urgent_ptr(&mut self, p: u16) {
        self.set_u16_at(field::URGENT, p);
    }

    /// The option bytes, writable.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let h = self.header_len();
        &mut self.buffer.as_mut()[HEADER_LEN..h]
    }

    /// The payload, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let h = self.header_len();
        &mut self.buffer.as_mut()[h..]
    }

    /// Computes the checksum over the whole buffer with the IP layer's pseudo-header sum and
    /// stores it.
    #[inline]
    pub fn fill_checksum(&mut self, pseudo_header_sum: u64) {
        self.set_checksum(0);
        let c = checksum::finish(checksum::accumulate(
            pseudo_header_sum,
            self.buffer.as_ref(),
        ));
        self.set_checksum(c);
    }

    /// Rewrites the value of the MSS option (the one [`Packet::mss`] reads) in place and
    /// updates the checksum for it incrementally (RFC 1624), so a valid segment stays valid.
    /// Returns the old value, or `None` (nothing written) when there is no MSS option.
    pub fn set_mss(&mut self, mss: u16) -> Option<u16> {
        let (at, old) = self.mss_at()?;
        self.write_mss(at, old, mss);
        Some(old)
    }

    /// Lowers the MSS option to `max` if it says more (what a router clamping the MSS to its
    /// path MTU does), like [`Packet::set_mss`]. Returns the new value when it rewrote one.
    pub fn clamp_mss(&mut self, max: u16) -> Option<u16> {
        let (at, old) = self.mss_at()?;
        if old <= max {
            return None;
        }
        self.write_mss(at, old, max);
        Some(max)
    }

    #[inline]
    fn write_mss(&mut self, at: usize, old: u16, new: u16) {
        self.set_u16_at(at..at + 2, new);
        // The checksum sums 16-bit words from the start of the header. Options need no
        // alignment, so the value may straddle two words (NOP, then MSS): its bytes then
        // count swapped (RFC 1071 §2(B)), and so must the update.
        let (old, new) = if at % 2 == 0 {
            (old, new)
        } else {
            (old.swap_bytes(), new.swap_bytes())
        };
        let c = checksum::update16(self.checksum(), old, new);
        self.set_checksum(c);
    }
}

/// One TCP option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOption<'a> {
    /// End of option list (kind 0): the rest of the header is padding.
    End,
    /// No-operation (kind 1), for alignment.
    Nop,
    /// Maximum segment size (kind 2, length 4).
    Mss(u16),
    /// Window scale shift count (kind 3, length 3; RFC 7323).
    WindowScale(u8),
    /// SACK permitted (kind 4, length 2; RFC 2018).
    SackPermitted,
    /// Selective acknowledgment blocks, left and right edge (kind 5, length 2 + 8 × 1..=4;
    /// RFC 2018); the blocks present come first.
    Sack([Option<(u32, u32)>; 4]),
    /// Timestamps (kind 8, length 10; RFC 7323).
    Timestamps {
        /// TSval.
        tsval: u32,
        /// TSecr.
        tsecr: u32,
    },
    /// Any other kind, or a known kind whose length does not fit it: kind and the bytes after
    /// the length.
    Unknown {
        /// Option kind.
        kind: u8,
        /// Option data (length − 2 bytes).
        data: &'a [u8],
    },
}

#[inline]
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl<'a> TcpOption<'a> {
    /// The typed option of `kind` whose data (after kind and length) is `data`.
    fn parse(kind: u8, data: &'a [u8]) -> TcpOption<'a> {
        match (kind, data.len()) {
            (kind::MSS, 2) => TcpOption::Mss(u16::from_be_bytes([data[0], data[1]])),
            (kind::WINDOW_SCALE, 1) => TcpOption::WindowScale(data[0]),
            (kind::SACK_PERMITTED, 0) => TcpOption::SackPermitted,
            (kind::SACK, 8 | 16 | 24 | 32) => {
                let mut blocks = [None; 4];
                for (slot, b) in blocks.iter_mut().zip(data.chunks_exact(8)) {
                    *slot = Some((be32(&b[..4]), be32(&b[4..])));
                }
                TcpOption::Sack(blocks)
            }
            (kind::TIMESTAMPS, 8) => TcpOption::Timestamps {
                tsval: be32(&data[..4]),
                tsecr: be32(&data[4..]),
            },
            _ => TcpOption::Unknown { kind, data },
        }
    }

    /// Bytes the option takes in a header.
    pub fn buffer_len(&self) -> usize {
        match self {
            TcpOption::End | TcpOption::Nop => 1,
            TcpOption::Mss(_) => 4,
            TcpOption::WindowScale(_) => 3,
            TcpOption::SackPermitted => 2,
            TcpOption::Sack(b) => 2 + 8 * b.iter().flatten().count(),
            TcpOption::Timestamps { .. } => 10,
            TcpOption::Unknown { data, .. } => 2 + data.len(),
        }
    }

    /// Writes the option into `buf[..self.buffer_len()]` and returns that length.
    ///
    /// # Panics
    /// If `buf` is shorter than [`TcpOption::buffer_len`], or an `Unknown` option's data is
    /// longer than 253 bytes (caller bugs).
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        let len = self.buffer_len();
        let b = &mut buf[..len];
        match *self {
            TcpOption::End => b[0] = kind::END,
            TcpOption::Nop => b[0] = kind::NOP,
            TcpOption::Mss(v) => {
                b[..2].copy_from_slice(&[kind::MSS, 4]);
                b[2..].copy_from_slice(&v.to_be_bytes());
            }
            TcpOption::WindowScale(s) => b.copy_from_slice(&[kind::WINDOW_SCALE, 3, s]),
            TcpOption::SackPermitted => b.copy_from_slice(&[kind::SACK_PERMITTED, 2]),
            TcpOption::Sack(blocks) => {
                b[..2].copy_from_slice(&[kind::SACK, len as u8]);
                for (c, (l, r)) in b[2..].chunks_exact_mut(8).zip(blocks.iter().flatten()) {
                    c[..4].copy_from_slice(&l.to_be_bytes());
                    c[4..].copy_from_slice(&r.to_be_bytes());
                }
            }
            TcpOption::Timestamps { tsval, tsecr } => {
                b[..2].copy_from_slice(&[kind::TIMESTAMPS, 10]);
                b[2..6].copy_from_slice(&tsval.to_be_bytes());
                b[6..].copy_from_slice(&tsecr.to_be_bytes());
            }
            TcpOption::Unknown { kind, data } => {
                let l = u8::try_from(len).expect("TCP option data of at most 253 bytes");
                b[..2].copy_from_slice(&[kind, l]);
                b[2..].copy_from_slice(data);
            }
        }
        len
    }
}

/// An iterator over the options of a TCP header. Yields each option; after
/// [`TcpOption::End`] or an error it yields nothing more. An option whose length byte is
/// missing or runs past the options is `Err(Truncated)`; one whose length is below 2 (which
/// would never advance) is `Err(BadTcpOption)`. Never panics, whatever the bytes.
#[derive(Debug, Clone)]
pub struct OptionIter<'a> {
    raw: RawOptions<'a>,
}

impl<'a> OptionIter<'a> {
    /// Iterates over `options` (the bytes after a TCP header's fixed 20).
    #[inline]
    pub fn new(options: &'a [u8]) -> Self {
        OptionIter {
            raw: RawOptions::new(options),
        }
    }
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = Result<TcpOption<'a>, WireError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        Some(self.raw.next()?.map(|(_, k, data)| match k {
            kind::END => TcpOption::End,
            kind::NOP => TcpOption::Nop,
            _ => TcpOption::parse(k, data),
        }))
    }
}

/// The option walk under [`OptionIter`]: each option's offset, kind and data (after kind
/// and length; empty for End and NOP), untyped.
#[derive(Debug, Clone)]
struct RawOptions<'a> {
    data: &'a [u8],
    /// Offset of the next option in `data`.
    pos: usize,
}

impl<'a> RawOptions<'a> {
    #[inline]
    fn new(data: &'a [u8]) -> Self {
        RawOptions { data, pos: 0 }
    }

    #[inline]
    fn stop(&mut self) {
        self.pos = self.data.len();
    }
}

impl<'a> Iterator for RawOptions<'a> {
    type Item = Result<(usize, u8, &'a [u8]), WireError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let at = self.pos;
        let rest = self.data.get(at..)?;
        let (&k, tail) = rest.split_first()?;
        match k {
            kind::END => {
                self.stop();
                Some(Ok((at, k, &[])))
            }
            kind::NOP => {
                self.pos += 1;
                Some(Ok((at, k, &[])))
            }
            _ => {
                let Some(&len) = tail.first() else {
                    self.stop();
                    return Some(Err(WireError::Truncated));
                };
                let len = usize::from(len);
                if len < 2 {
                    self.stop();
                    return Some(Err(WireError::BadTcpOption));
                }
                let Some(opt) = rest.get(2..len) else {
                    self.stop();
                    return Some(Err(WireError::Truncated));
                };
                self.pos += len;
                Some(Ok((at, k, opt)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SYN from 40000 to 5001, seq 0x01020304, window 64240, checksum 0xbeef, with options
    /// MSS 1460, SACK permitted, timestamps 12345/0, NOP, window scale 7.
    const SYN: [u8; 40] = [
        0x9c, 0x40, 0x13, 0x89, 0x01, 0x02, 0x03, 0x04, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xfa,
        0xf0, 0xbe, 0xef, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x00, 0x00,
        0x30, 0x39, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x07,
    ];

    #[test]
    fn parse_syn() {
        let p = Packet::new_checked(&SYN[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (40000, 5001));
        assert_eq!((p.seq_number(), p.ack_number()), (0x0102_0304, 0));
        assert_eq!((p.header_len(), p.reserved()), (40, 0));
        assert_eq!(p.flags(), flags::SYN);
        assert_eq!(p.window_len(), 64240);
        assert_eq!((p.checksum(), p.urgent_ptr()), (0xbeef, 0));
        assert_eq!(p.options(), &SYN[20..]);
        assert!(p.payload().is_empty());
        let opts: Vec<_> = p.iter_options().collect();
        assert_eq!(
            opts,
            vec![
                Ok(TcpOption::Mss(1460)),
                Ok(TcpOption::SackPermitted),
                Ok(TcpOption::Timestamps {
                    tsval: 12345,
                    tsecr: 0
                }),
                Ok(TcpOption::Nop),
                Ok(TcpOption::WindowScale(7)),
            ]
        );
        assert_eq!(p.mss(), Some(1460));
    }

    #[test]
    fn build_through_setters() {
        let mut b = [0u8; 40];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_src_port(40000);
        p.set_dst_port(5001);
        p.set_seq_number(0x0102_0304);
        p.set_ack_number(0);
        p.set_header_len(40);
        p.set_flags(flags::SYN);
        p.set_window_len(64240);
        p.set_checksum(0xbeef);
        p.set_urgent_ptr(0);
        let mut at = 0;
        for o in [
            TcpOption::Mss(1460),
            TcpOption::SackPermitted,
            TcpOption::Timestamps {
                tsval: 12345,
                tsecr: 0,
            },
            TcpOption::Nop,
            TcpOption::WindowScale(7),
        ] {
            at += o.emit(&mut p.options_mut()[at..]);
        }
        assert_eq!(at, 20);
        assert_eq!(b, SYN);
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_reserved(0x01);
        p.set_header_len(20);
        assert_eq!(b[12], 0x51);
    }

    #[test]
    fn same_flow_fields_ignore_seq_flags_window_and_checksum() {
        let a = Packet::new_unchecked(&SYN[..]);
        let mut b = SYN;
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_seq_number(99);
        p.set_flags(flags::ACK | flags::PSH);
        p.set_window_len(1);
        p.set_checksum(2);
        assert!(a.same_flow_fields(&Packet::new_unchecked(&b[..])));
        for i in [0, 3, 8, 11, 12, 18, 19, 20, 39] {
            let mut o = b;
            o[i] ^= 1;
            assert!(
                !a.same_flow_fields(&Packet::new_unchecked(&o[..])),
                "byte {i}"
            );
        }
        let mut short = SYN;
        short[12] = 0x90; // 36 bytes of header
        assert!(
            !a.same_flow_fields(&Packet::new_unchecked(&short[..36])),
            "header length"
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(
            Packet::new_checked(&SYN[..19]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            Packet::new_checked(&SYN[..39]).unwrap_err(),
            WireError::Truncated,
            "options announced but cut short"
        );
        let mut b = SYN;
        b[12] = 0x40; // data offset 4
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), WireError::BadTcp);
        b[12] = 0x50;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload(), &SYN[20..]);
        assert_eq!(p.iter_options().count(), 0);
    }

    #[test]
    fn sack_and_unknown_options() {
        let bytes = [
            5, 18, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, // two SACK blocks
            2, 3, 9, // MSS with length 3: not an MSS
            30, 4, 0xab, 0xcd, // MPTCP, unparsed
            5, 6, 1, 2, 3, 4, // SACK of 4 bytes: not a SACK
            0, 0xff, 0xff, // End, then padding never read
        ];
        let got: Vec<_> = OptionIter::new(&bytes).collect();
        assert_eq!(
            got,
            vec![
                Ok(TcpOption::Sack([Some((1, 2)), Some((3, 4)), None, None])),
                Ok(TcpOption::Unknown {
                    kind: 2,
                    data: &[9]
                }),
                Ok(TcpOption::Unknown {
                    kind: 30,
                    data: &[0xab, 0xcd]
                }),
                Ok(TcpOption::Unknown {
                    kind: 5,
                    data: &[1, 2, 3, 4]
                }),
                Ok(TcpOption::End),
            ]
        );
        // Each re-emits to its own bytes.
        let mut out = [0u8; 40];
        let mut at = 0;
        for o in &got {
            at += o.as_ref().unwrap().emit(&mut out[at..]);
        }
        assert_eq!(&out[..at], &bytes[..at]);
        assert_eq!(at, bytes.len() - 2);
    }

    #[test]
    fn malformed_options_end_the_walk() {
        let cases: &[(&[u8], WireError)] = &[
            (&[2], WireError::Truncated),                // no length byte
            (&[2, 4, 5], WireError::Truncated),          // runs past the options
            (&[1, 8, 1], WireError::BadTcpOption),       // length 1
            (&[3, 0, 3, 3, 7], WireError::BadTcpOption), // length 0 would never advance
        ];
        for (bytes, want) in cases {
            let got: Vec<_> = OptionIter::new(bytes).collect();
            assert_eq!(got.last(), Some(&Err(*want)), "{bytes:?}");
            assert!(got[..got.len() - 1].iter().all(Result::is_ok));
        }
        // Every 3-byte string (a few third bytes): the walk ends and never panics.
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                for c in [0u8, 1, 2, 3, 4, 10, 255] {
                    let n = OptionIter::new(&[a, b, c]).count();
                    assert!(n <= 3);
                }
            }
        }
    }

    #[test]
    fn set_mss_rewrites_in_place_and_keeps_the_checksum_valid() {
        // The SYN above in an IPv4 pseudo-header 10.77.0.1 > 10.77.0.2, checksum filled in.
        let pseudo = |len: usize| 0x0a4d * 2 + 3 + 6 + len as u64;
        let mut b = SYN;
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.fill_checksum(pseudo(40));
        assert!(p.verify_checksum(pseudo(40)));
        assert_eq!(p.checksum(), 0x546a);
        assert_eq!(p.set_mss(1360), Some(1460));
        assert_eq!(&b[20..24], &[2, 4, 0x05, 0x50]);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.mss(), Some(1360));
        assert!(p.verify_checksum(pseudo(40)), "incremental update");
        // No MSS option, or a malformed option before it: nothing is written.
        let mut none = SYN;
        none[20..24].copy_from_slice(&[1, 1, 1, 1]);
        let before = none;
        assert_eq!(Packet::new_unchecked(&mut none[..]).set_mss(1000), None);
        assert_eq!(none, before);
        // clamp_mss lowers only: 1360 stays under 1400, and goes down to 1200.
        let mut b2 = b;
        let mut p = Packet::new_unchecked(&mut b2[..]);
        assert_eq!(p.clamp_mss(1400), None);
        assert_eq!(p.clamp_mss(1200), Some(1200));
        assert_eq!(p.mss(), Some(1200));
        assert!(p.verify_checksum(pseudo(40)));
        // An MSS option at an odd offset (after one NOP), found by fuzzing: the value
        // straddles two checksum words, and the checksum must still verify.
        let mut odd = SYN;
        odd[20..28].copy_from_slice(&[1, 2, 4, 0x05, 0xb4, 1, 1, 1]);
        let mut p = Packet::new_unchecked(&mut odd[..]);
        p.fill_checksum(pseudo(40));
        assert_eq!(p.set_mss(1360), Some(1460));
        assert_eq!(&odd[21..25], &[2, 4, 0x05, 0x50]);
        let mut p = Packet::new_unchecked(&mut odd[..]);
        assert!(p.verify_checksum(pseudo(40)), "odd offset");
        assert_eq!(p.clamp_mss(1000), Some(1000));
        assert!(p.verify_checksum(pseudo(40)), "odd offset, clamped");
        let mut bad = SYN;
        bad[20..24].copy_from_slice(&[1, 1, 3, 1]);
        bad[36..40].copy_from_slice(&[2, 4, 1, 0]);
        assert_eq!(Packet::new_unchecked(&mut bad[..]).set_mss(1000), None);
    }
}
