//! The Internet checksum (RFC 1071): one's-complement sum of 16-bit big-endian words.

/// Adds `data` to a running 32-bit one's-complement accumulator. An odd trailing byte is
/// padded with zero, so only the last slice fed may have odd length.
#[inline]
pub fn accumulate(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        // Fold early so the accumulator never overflows, whatever the length.
        if sum & 0x8000_0000 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
    }
    if let [b] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*b) << 8);
    }
    sum
}

/// Folds an accumulator to 16 bits and complements it: the value to store in a checksum field.
#[inline]
pub fn finish(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Checksum of the concatenation of `parts`; every part but the last must have even length.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    finish(parts.iter().fold(0, |s, p| accumulate(s, p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 worked example: words 0001 f203 f4f5 f6f7 sum to ddf2 (before complement).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&[&data]), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(
            checksum(&[&[0x12, 0x34, 0x56]]),
            checksum(&[&[0x12, 0x34, 0x56, 0x00]])
        );
    }

    #[test]
    fn split_equals_whole() {
        let data: Vec<u8> = (0..=255u8).collect();
        assert_eq!(checksum(&[&data[..64], &data[64..]]), checksum(&[&data]));
    }

    #[test]
    fn verifies_to_zero() {
        // An IPv4 header with its checksum filled in sums to 0xffff (complement 0).
        let hdr = [
            0x45, 0x00, 0x00, 0x7a, 0x00, 0x00, 0x40, 0x00, 0x40, 0x2f, 0x24, 0xc3, 0x0a, 0xc8,
            0x00, 0x01, 0x0a, 0xc8, 0x00, 0x02,
        ];
        assert_eq!(checksum(&[&hdr]), 0);
    }
}
