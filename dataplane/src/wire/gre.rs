//! GRE (RFC 2784) with the key and sequence extensions (RFC 2890), as used for Ethernet over
//! GRE: protocol type 0x6558, Transparent Ethernet Bridging.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |C|R|K|S|s|Rec|  Flags  | Ver |         Protocol Type         |
//! |      Checksum (optional)      |      Reserved1 (optional)     |
//! |                         Key (optional)                        |
//! |                 Sequence Number (optional)                    |
//! ```
//! Receive rules: version must be 0; R, s and the top recursion bit (bits 1, 4, 5: RFC 1701
//! features RFC 2784 tells receivers to discard) are refused; bits 6-12 are ignored; a present
//! checksum must verify over header and payload. Parsing never panics on any input.

use super::{checksum, WireError};

/// Protocol type of Transparent Ethernet Bridging: the payload is an Ethernet frame without FCS.
pub const PROTO_TEB: u16 = 0x6558;
/// Base header length (flags, version, protocol).
pub const BASE_LEN: usize = 4;
/// Longest header: base + checksum + key + sequence.
pub const MAX_HEADER_LEN: usize = 16;

mod flag {
    pub const CSUM: u8 = 0x80;
    pub const ROUTING: u8 = 0x40;
    pub const KEY: u8 = 0x20;
    pub const SEQ: u8 = 0x10;
    pub const STRICT_ROUTE: u8 = 0x08;
    pub const RECUR_HIGH: u8 = 0x04;
    pub const VERSION: u8 = 0x07;
}

mod field {
    use std::ops::Range;
    pub const FLAGS: usize = 0;
    pub const VERSION: usize = 1;
    pub const PROTOCOL: Range<usize> = 2..4;
}

/// A zero-copy view of a GRE packet (header + payload).
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

    /// Wraps and checks that the header (with its optional fields) fits.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ensures the base header and every optional field the flags announce are present.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < BASE_LEN || len < self.header_len() {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    #[inline]
    fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// C bit: checksum present.
    #[inline]
    pub fn has_checksum(&self) -> bool {
        self.flags() & flag::CSUM != 0
    }

    /// K bit: key present.
    #[inline]
    pub fn has_key(&self) -> bool {
        self.flags() & flag::KEY != 0
    }

    /// S bit: sequence number present.
    #[inline]
    pub fn has_seq(&self) -> bool {
        self.flags() & flag::SEQ != 0
    }

    /// Any of the RFC 1701 routing features (R, s, recursion bit 5) is set.
    #[inline]
    pub fn has_routing(&self) -> bool {
        self.flags() & (flag::ROUTING | flag::STRICT_ROUTE | flag::RECUR_HIGH) != 0
    }

    /// Version field (must be 0).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION] & flag::VERSION
    }

    /// Protocol type of the payload.
    #[inline]
    pub fn protocol(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::PROTOCOL];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Header length implied by the flags: 4 plus 4 per optional field.
    #[inline]
    pub fn header_len(&self) -> usize {
        let f = self.flags();
        BASE_LEN
            + 4 * (usize::from(f & flag::CSUM != 0)
                + usize::from(f & flag::KEY != 0)
                + usize::from(f & flag::SEQ != 0))
    }

    #[inline]
    fn word_at(&self, off: usize) -> u32 {
        let b = &self.buffer.as_ref()[off..off + 4];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The checksum field, if present.
    #[inline]
    pub fn checksum(&self) -> Option<u16> {
        self.has_checksum()
            .then(|| (self.word_at(BASE_LEN) >> 16) as u16)
    }

    /// The key, if present.
    #[inline]
    pub fn key(&self) -> Option<u32> {
        let off = BASE_LEN + 4 * usize::from(self.has_checksum());
        self.has_key().then(|| self.word_at(off))
    }

    /// The sequence number, if present.
    #[inline]
    pub fn seq(&self) -> Option<u32> {
        let off = BASE_LEN + 4 * (usize::from(self.has_checksum()) + usize::from(self.has_key()));
        self.has_seq().then(|| self.word_at(off))
    }

    /// Does the checksum (over header and payload) verify? True when none is present.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        !self.has_checksum() || checksum::checksum(&[self.buffer.as_ref()]) == 0
    }

    /// The encapsulated bytes.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<'a> Packet<&'a [u8]> {
    /// [`Packet::payload`] with the buffer's lifetime rather than the view's.
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        let h = self.header_len();
        &self.buffer[h..]
    }
}

/// The owned meaning of a GRE header as dnet sends and accepts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Repr {
    /// Emit (or: was present) a checksum.
    pub csum: bool,
    /// Key, if any.
    pub key: Option<u32>,
    /// Sequence number, if any.
    pub seq: Option<u32>,
}

impl Repr {
    /// Validates a received packet per the module's receive rules and returns its header.
    /// The protocol type must be TEB; the checksum is verified when present.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr, WireError> {
        p.check_len()?;
        if p.version() != 0 {
            return Err(WireError::BadVersion);
        }
        if p.has_routing() {
            return Err(WireError::Routing);
        }
        if p.protocol() != PROTO_TEB {
            return Err(WireError::UnknownProtocol);
        }
        if !p.verify_checksum() {
            return Err(WireError::BadChecksum);
        }
        Ok(Repr {
            csum: p.has_checksum(),
            key: p.key(),
            seq: p.seq(),
        })
    }

    /// Length of the header this repr emits.
    #[inline]
    pub fn header_len(&self) -> usize {
        BASE_LEN
            + 4 * (usize::from(self.csum)
                + usize::from(self.key.is_some())
                + usize::from(self.seq.is_some()))
    }

    /// Writes the header into `hdr[..self.header_len()]`. The checksum, if enabled, covers the
    /// header and `payload`, which the caller sends right after it (no copy of the payload).
    ///
    /// # Panics
    /// If `hdr` is shorter than [`Repr::header_len`] (a caller bug, not an input condition).
    #[inline]
    pub fn emit(&self, hdr: &mut [u8], payload: &[u8]) {
        self.emit_parts(hdr, &[payload]);
    }

    /// [`Repr::emit`] for a payload sent in several pieces (all but the last of even length,
    /// as Ethernet/IP/TCP header runs are).
    #[inline]
    pub fn emit_parts(&self, hdr: &mut [u8], payload: &[&[u8]]) {
        let len = self.header_len();
        let hdr = &mut hdr[..len];
        let mut flags = 0;
        let mut off = BASE_LEN;
        if self.csum {
            flags |= flag::CSUM;
            hdr[off..off + 4].fill(0);
            off += 4;
        }
        if let Some(k) = self.key {
            flags |= flag::KEY;
            hdr[off..off + 4].copy_from_slice(&k.to_be_bytes());
            off += 4;
        }
        if let Some(s) = self.seq {
            flags |= flag::SEQ;
            hdr[off..off + 4].copy_from_slice(&s.to_be_bytes());
        }
        hdr[field::FLAGS] = flags;
        hdr[field::VERSION] = 0;
        hdr[field::PROTOCOL].copy_from_slice(&PROTO_TEB.to_be_bytes());
        if self.csum {
            let sum = payload.iter().fold(checksum::accumulate(0, hdr), |s, p| {
                checksum::accumulate(s, p)
            });
            let c = checksum::finish(sum);
            hdr[BASE_LEN..BASE_LEN + 2].copy_from_slice(&c.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn ovs_key42_header_vector() {
        // ../shared/vectors/ovs-gre-key42-header.txt: Open vSwitch 3.1, options:key=42.
        let b = hex("200065580000002a0277000000020277");
        let p = Packet::new_checked(&b[..]).unwrap();
        let r = Repr::parse(&p).unwrap();
        assert_eq!(
            r,
            Repr {
                csum: false,
                key: Some(42),
                seq: None
            }
        );
        assert_eq!(p.header_len(), 8);
        assert_eq!(&p.payload()[..6], &[0x02, 0x77, 0, 0, 0, 0x02]);
        let mut out = [0u8; 8];
        r.emit(&mut out, p.payload());
        assert_eq!(&out[..], &b[..8]);
    }

    #[test]
    fn minimal_header() {
        let b = [0x00, 0x00, 0x65, 0x58, 0xaa];
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&p).unwrap(), Repr::default());
        assert_eq!(p.payload(), &[0xaa]);
    }

    #[test]
    fn all_options_round_trip_with_checksum() {
        let payload: Vec<u8> = (0..61u8).collect(); // odd length on purpose
        let r = Repr {
            csum: true,
            key: Some(0xdead_beef),
            seq: Some(7),
        };
        let mut pkt = vec![0u8; r.header_len()];
        r.emit(&mut pkt, &payload);
        assert_eq!(&pkt[..4], &[0xb0, 0x00, 0x65, 0x58]);
        pkt.extend_from_slice(&payload);
        let p = Packet::new_checked(&pkt[..]).unwrap();
        assert_eq!(Repr::parse(&p).unwrap(), r);
        assert_eq!(p.payload(), &payload[..]);
        assert!(p.verify_checksum());
        // Flip one payload bit: the checksum must catch it.
        let last = pkt.len() - 1;
        pkt[last] ^= 0x01;
        let p = Packet::new_checked(&pkt[..]).unwrap();
        assert_eq!(Repr::parse(&p), Err(WireError::BadChecksum));
    }

    #[test]
    fn checksum_known_value() {
        // Header C=1 proto TEB, payload 0x0102: sum = 0x8000 + 0x6558 + 0x0102 = 0xe65a -> !0x19a5.
        let r = Repr {
            csum: true,
            ..Repr::default()
        };
        let mut h = [0u8; 8];
        r.emit(&mut h, &[0x01, 0x02]);
        assert_eq!(h, [0x80, 0x00, 0x65, 0x58, 0x19, 0xa5, 0x00, 0x00]);
    }

    #[test]
    fn refusals() {
        let cases: &[(&[u8], WireError)] = &[
            (&[], WireError::Truncated),
            (&[0x00, 0x00, 0x65], WireError::Truncated),
            (&[0x20, 0x00, 0x65, 0x58, 0x00, 0x00], WireError::Truncated), // key cut short
            (
                &[0xb0, 0x00, 0x65, 0x58, 0, 0, 0, 0, 0, 0, 0, 0],
                WireError::Truncated,
            ),
            (&[0x00, 0x01, 0x65, 0x58], WireError::BadVersion),
            (&[0x40, 0x00, 0x65, 0x58], WireError::Routing),
            (&[0x08, 0x00, 0x65, 0x58], WireError::Routing),
            (&[0x04, 0x00, 0x65, 0x58], WireError::Routing),
            (&[0x00, 0x00, 0x08, 0x00], WireError::UnknownProtocol),
            (
                &[0x80, 0x00, 0x65, 0x58, 0x12, 0x34, 0, 0],
                WireError::BadChecksum,
            ),
        ];
        for (bytes, want) in cases {
            let got = Repr::parse(&Packet::new_unchecked(*bytes));
            assert_eq!(got, Err(*want), "input {bytes:02x?}");
        }
    }

    #[test]
    fn ignored_bits_are_ignored() {
        // Bits 6-12 (0x03 in byte 0, 0xf8 in byte 1) must be ignored on receipt (RFC 2784).
        let b = [0x03, 0xf8, 0x65, 0x58];
        assert!(Repr::parse(&Packet::new_unchecked(&b[..])).is_ok());
    }

    #[test]
    fn never_panics_on_any_two_byte_prefix() {
        // Exhaustive over the flag bytes with short tails: parse must return, not panic.
        for f0 in 0..=255u8 {
            for f1 in [0u8, 1, 7, 0xff] {
                for tail in 0..16 {
                    let mut b = vec![f0, f1, 0x65, 0x58];
                    b.resize(4 + tail, 0);
                    let _ = Repr::parse(&Packet::new_unchecked(&b[..]));
                    let _ = Repr::parse(&Packet::new_unchecked(&b[..tail.min(4)]));
                }
            }
        }
    }
}
