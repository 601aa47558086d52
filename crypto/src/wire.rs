//! The formats of the datagrams on an encrypted GRE-in-UDP port.
//!
//! Every message starts with a 4-byte word: byte 0 is `0x40 | type`, byte 1 is `0x07`, bytes
//! 2 and 3 are zero. Read as a GRE header (RFC 2784, RFC 2890) that word has the R bit (bit 1)
//! set, which a GRE receiver must discard a packet for, and version 7 (bits 13–15), which
//! is no GRE version. So a cleartext dnet peer drops our datagrams (as `gre_version`), and a
//! cleartext GRE header reaching us (R clear, version 0) is told apart and counted
//! ([`Kind::Cleartext`]) rather than "decrypted".
//!
//! ```text
//! data (type 4), 16 + n + 16 bytes:
//!   | 0x44 0x07 0 0 | receiver index (u32 LE) | counter (u64 LE) | AEAD(GRE packet, n) | tag (16) |
//! initiation (type 1), 129 bytes:
//!   | 0x41 0x07 0 0 | Noise IK message 1 (109) | mac1 (16) |
//! response (type 2), 77 bytes:
//!   | 0x42 0x07 0 0 | receiver index (u32 LE) | Noise IK message 2 (53) | mac1 (16) |
//! ```
//!
//! The Noise payloads carry the sender's index and the data cipher (see
//! [`crate::handshake`]), so both are authenticated; the response's receiver index is in
//! clear because the initiator needs it to find its handshake state.

/// The first word of a data packet.
pub const DATA: [u8; 4] = [0x44, 0x07, 0, 0];
/// The first word of a handshake initiation.
pub const INITIATION: [u8; 4] = [0x41, 0x07, 0, 0];
/// The first word of a handshake response.
pub const RESPONSE: [u8; 4] = [0x42, 0x07, 0, 0];

/// Bytes before a data packet's ciphertext: type word, receiver index, counter.
pub const HEADER_LEN: usize = 16;
/// Bytes of the AEAD tag after the ciphertext.
pub const TAG_LEN: usize = 16;
/// What sealing adds to a GRE packet.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Length of `mac1`, the keyed BLAKE2s over a handshake message.
pub const MAC_LEN: usize = 16;

/// Noise payload of an initiation: timestamp (8), sender index (4), cipher offer (1).
pub const INITIATION_PAYLOAD: usize = 13;
/// Noise payload of a response: sender index (4), chosen cipher (1).
pub const RESPONSE_PAYLOAD: usize = 5;
/// Noise IK message 1: e (32), s encrypted (32 + 16), payload encrypted (+ 16).
pub const NOISE_INITIATION: usize = 32 + 48 + INITIATION_PAYLOAD + 16;
/// Noise IK message 2: e (32), payload encrypted (+ 16).
pub const NOISE_RESPONSE: usize = 32 + RESPONSE_PAYLOAD + 16;
/// A whole initiation datagram.
pub const INITIATION_LEN: usize = 4 + NOISE_INITIATION + MAC_LEN;
/// A whole response datagram.
pub const RESPONSE_LEN: usize = 4 + 4 + NOISE_RESPONSE + MAC_LEN;
/// The largest message the handshake sends (a buffer for `poll_transmit` needs this much).
pub const MAX_MESSAGE_LEN: usize = INITIATION_LEN;

/// What a received datagram is, from its first word alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A sealed data packet (length not yet checked).
    Data,
    /// A handshake initiation.
    Initiation,
    /// A handshake response.
    Response,
    /// A cleartext GRE header (R bit clear, version 0): a peer without `--encrypt`.
    Cleartext,
    /// Anything else.
    Unknown,
    /// Shorter than the 4-byte word.
    Truncated,
}

/// Classifies a datagram by its first word. Never panics.
#[inline]
pub fn classify(d: &[u8]) -> Kind {
    let Some(w) = d.first_chunk::<4>() else {
        return Kind::Truncated;
    };
    match *w {
        DATA => Kind::Data,
        INITIATION => Kind::Initiation,
        RESPONSE => Kind::Response,
        // GRE: R (0x40 in byte 0) must be clear and the version (low 3 bits of byte 1) 0.
        [b0, b1, _, _] if b0 & 0x40 == 0 && b1 & 0x07 == 0 => Kind::Cleartext,
        _ => Kind::Unknown,
    }
}

/// The receiver index of a data packet or response (bytes 4..8). `None` if too short.
#[inline]
pub fn receiver_index(d: &[u8]) -> Option<u32> {
    d.get(4..8)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
}

/// The counter of a data packet (bytes 8..16). `None` if too short.
#[inline]
pub fn counter(d: &[u8]) -> Option<u64> {
    d.get(8..16)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
}

/// Writes a data header into `h`.
#[inline]
pub fn emit_data_header(h: &mut [u8; HEADER_LEN], receiver: u32, counter: u64) {
    h[..4].copy_from_slice(&DATA);
    h[4..8].copy_from_slice(&receiver.to_le_bytes());
    h[8..].copy_from_slice(&counter.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_lengths() {
        assert_eq!(INITIATION_LEN, 129);
        assert_eq!(RESPONSE_LEN, 77);
        assert_eq!(OVERHEAD, 32);
    }

    #[test]
    fn every_gre_header_a_receiver_accepts_is_cleartext_and_ours_are_not_gre() {
        // Every first word with R clear and version 0 (any C/K/S, flags, protocol).
        for b0 in 0..=255u8 {
            for b1 in 0..=255u8 {
                let k = classify(&[b0, b1, 0x65, 0x58]);
                if b0 & 0x40 == 0 && b1 & 7 == 0 {
                    assert_eq!(k, Kind::Cleartext, "{b0:#x} {b1:#x}");
                } else {
                    assert_ne!(k, Kind::Cleartext, "{b0:#x} {b1:#x}");
                }
            }
        }
        // The OVS key=42 header from shared/vectors, and a plain one.
        assert_eq!(
            classify(&[0x20, 0x00, 0x65, 0x58, 0, 0, 0, 42]),
            Kind::Cleartext
        );
        assert_eq!(classify(&[0x00, 0x00, 0x65, 0x58]), Kind::Cleartext);
        for (w, k) in [
            (DATA, Kind::Data),
            (INITIATION, Kind::Initiation),
            (RESPONSE, Kind::Response),
        ] {
            assert_eq!(classify(&w), k);
            assert_ne!(w[0] & 0x40, 0, "R bit set");
            assert_eq!(w[1] & 7, 7, "GRE version 7");
        }
        // Our type byte with other bytes is unknown, not ours.
        assert_eq!(classify(&[0x44, 0x07, 0, 1]), Kind::Unknown);
        assert_eq!(classify(&[0x44, 0x07, 0]), Kind::Truncated);
        assert_eq!(classify(&[]), Kind::Truncated);
    }

    #[test]
    fn data_header_fields() {
        let mut h = [0u8; HEADER_LEN];
        emit_data_header(&mut h, 0x0403_0201, 0x0c0b_0a09_0807_0605);
        assert_eq!(h, [0x44, 0x07, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(receiver_index(&h), Some(0x0403_0201));
        assert_eq!(counter(&h), Some(0x0c0b_0a09_0807_0605));
        assert_eq!(counter(&h[..15]), None);
        assert_eq!(receiver_index(&h[..7]), None);
    }
}
