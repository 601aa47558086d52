//! The Internet checksum (RFC 1071): one's-complement sum of 16-bit big-endian words.

/// Adds `data` to a running one's-complement accumulator. An odd trailing byte is padded with
/// zero, so only the last slice fed may have odd length.
///
/// Sums 32-bit big-endian words into a 64-bit accumulator (RFC 1071 §2(B): the sum may be
/// computed in wider words and folded at the end), so a 64 KiB payload cannot overflow it.
#[inline]
pub fn accumulate(sum: u64, data: &[u8]) -> u64 {
    let mut acc = sum;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        acc += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [b] = pairs.remainder() {
        acc += u64::from(*b) << 8;
    }
    acc
}

/// Folds an accumulator to 16 bits and complements it: the value to store in a checksum field.
#[inline]
pub fn finish(mut sum: u64) -> u16 {
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
    fn wide_words_equal_16_bit_reference() {
        // Compare with a plain 16-bit RFC 1071 sum over many lengths and contents.
        fn reference(d: &[u8]) -> u16 {
            let mut s: u32 = 0;
            for c in d.chunks(2) {
                let w = if c.len() == 2 {
                    u16::from_be_bytes([c[0], c[1]])
                } else {
                    u16::from(c[0]) << 8
                };
                s += u32::from(w);
                s = (s & 0xffff) + (s >> 16);
            }
            !(s as u16)
        }
        let data: Vec<u8> = (0..3000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in 0..200 {
            assert_eq!(
                checksum(&[&data[..len]]),
                reference(&data[..len]),
                "len {len}"
            );
        }
        assert_eq!(checksum(&[&data]), reference(&data));
        assert_eq!(checksum(&[&[0xff; 65535]]), reference(&[0xff; 65535]));
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
