//! The data-path AEADs, from `ring`: ChaCha20-Poly1305, or AES-256-GCM where both hosts have
//! AES instructions. The handshake picks one per session (see [`crate::handshake`]).
//!
//! The nonce is 4 zero bytes then the packet's 64-bit counter, little-endian (as WireGuard):
//! a counter is never used twice under one key, because the sender reserves counters with
//! an atomic add and a session refuses to seal past its message limit. No additional data:
//! the counter is in the nonce and the receiver index chose the key, so the header has
//! nothing left to authenticate.

use crate::wire::TAG_LEN;
use ring::aead::{self, Aad, LessSafeKey, Nonce, Tag, UnboundKey};

/// A data-path AEAD.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cipher {
    /// ChaCha20-Poly1305 (RFC 8439): fast everywhere, constant-time without special
    /// instructions.
    ChaCha20Poly1305,
    /// AES-256-GCM: fastest where the CPU has AES and carry-less multiply instructions.
    Aes256Gcm,
}

impl Cipher {
    /// Its bit in a handshake's cipher offer, and its value as the choice.
    pub(crate) fn bit(self) -> u8 {
        match self {
            Cipher::ChaCha20Poly1305 => 1,
            Cipher::Aes256Gcm => 2,
        }
    }

    /// The cipher a handshake's choice byte names.
    pub(crate) fn from_bit(b: u8) -> Option<Cipher> {
        match b {
            1 => Some(Cipher::ChaCha20Poly1305),
            2 => Some(Cipher::Aes256Gcm),
            _ => None,
        }
    }

    /// Name for logs and `dnetctl show`.
    pub fn name(self) -> &'static str {
        match self {
            Cipher::ChaCha20Poly1305 => "chacha20-poly1305",
            Cipher::Aes256Gcm => "aes-256-gcm",
        }
    }

    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Cipher::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
            Cipher::Aes256Gcm => &aead::AES_256_GCM,
        }
    }
}

/// Which data cipher this host asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CipherPreference {
    /// AES-256-GCM if this CPU has AES instructions, else ChaCha20-Poly1305. A session uses
    /// AES-256-GCM only when both hosts prefer it.
    #[default]
    Auto,
    /// Always ChaCha20-Poly1305 (e.g. to measure it).
    ChaCha20Poly1305,
    /// AES-256-GCM even without AES instructions (slow there; for tests and measurements).
    Aes256Gcm,
}

impl CipherPreference {
    /// Whether this host asks for AES-256-GCM.
    pub(crate) fn wants_aes(self) -> bool {
        match self {
            CipherPreference::Auto => has_aes_instructions(),
            CipherPreference::ChaCha20Poly1305 => false,
            CipherPreference::Aes256Gcm => true,
        }
    }
}

/// Whether this CPU has the instructions that make AES-GCM fast and constant-time (AES-NI
/// and PCLMULQDQ on x86, AES and PMULL on Arm).
pub fn has_aes_instructions() -> bool {
    #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "x86", target_arch = "aarch64")))]
    {
        false
    }
}

/// One direction's key.
pub(crate) struct Key(LessSafeKey);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

#[inline]
fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

impl Key {
    /// A key for `cipher` from 32 bytes of handshake output.
    pub(crate) fn new(cipher: Cipher, bytes: &[u8; 32]) -> Key {
        // Both algorithms take 32-byte keys, so this cannot fail.
        let k = UnboundKey::new(cipher.algorithm(), bytes).expect("a 32-byte key");
        Key(LessSafeKey::new(k))
    }

    /// Encrypts `in_out` in place under `counter`; returns the tag.
    #[inline]
    pub(crate) fn seal(&self, counter: u64, in_out: &mut [u8]) -> [u8; TAG_LEN] {
        let tag: Tag = self
            .0
            .seal_in_place_separate_tag(nonce(counter), Aad::empty(), in_out)
            // ring refuses only inputs longer than the algorithm's limit (~256 GiB).
            .expect("a datagram is within the AEAD's length limit");
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(tag.as_ref());
        t
    }

    /// Decrypts `in_out` (ciphertext then tag) in place under `counter`. `Some(n)`: the first
    /// `n` bytes are the plaintext. `None`: the tag did not verify (the bytes are then
    /// unspecified).
    #[inline]
    pub(crate) fn open(&self, counter: u64, in_out: &mut [u8]) -> Option<usize> {
        self.0
            .open_in_place(nonce(counter), Aad::empty(), in_out)
            .ok()
            .map(|p| p.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bytes_open_only_under_the_same_key_and_counter() {
        for c in [Cipher::ChaCha20Poly1305, Cipher::Aes256Gcm] {
            let k = Key::new(c, &[9; 32]);
            let mut m = *b"Ladies and Gentlemen of the class of '99";
            let orig = m;
            let tag = k.seal(7, &mut m);
            assert_ne!(m, orig);
            let mut ct = m.to_vec();
            ct.extend_from_slice(&tag);
            let mut bad = ct.clone();
            bad[3] ^= 1;
            assert_eq!(k.open(7, &mut bad), None, "{c:?}: a flipped bit");
            assert_eq!(k.open(8, &mut ct.clone()), None, "{c:?}: another counter");
            let other = Key::new(c, &[8; 32]);
            assert_eq!(other.open(7, &mut ct.clone()), None, "{c:?}: another key");
            assert_eq!(k.open(7, &mut ct), Some(orig.len()));
            assert_eq!(&ct[..orig.len()], &orig);
        }
    }

    #[test]
    fn aes_256_gcm_matches_a_known_vector() {
        // NIST GCM test case 13 (AES-256, zero key, zero 96-bit IV, empty plaintext): tag
        // 530f8afbc74536b9a963b4f1c4cb738b. Counter 0 gives the all-zero nonce.
        let k = Key::new(Cipher::Aes256Gcm, &[0; 32]);
        let tag = k.seal(0, &mut []);
        assert_eq!(
            tag,
            [
                0x53, 0x0f, 0x8a, 0xfb, 0xc7, 0x45, 0x36, 0xb9, 0xa9, 0x63, 0xb4, 0xf1, 0xc4, 0xcb,
                0x73, 0x8b
            ]
        );
        // Test case 14: one zero block -> cea7403d4d606b6e074ec5d3baf39d18, tag
        // d0d1c8a799996bf0265b98b5d48ab919.
        let mut p = [0u8; 16];
        let tag = k.seal(0, &mut p);
        assert_eq!(
            p,
            [
                0xce, 0xa7, 0x40, 0x3d, 0x4d, 0x60, 0x6b, 0x6e, 0x07, 0x4e, 0xc5, 0xd3, 0xba, 0xf3,
                0x9d, 0x18
            ]
        );
        assert_eq!(
            tag,
            [
                0xd0, 0xd1, 0xc8, 0xa7, 0x99, 0x99, 0x6b, 0xf0, 0x26, 0x5b, 0x98, 0xb5, 0xd4, 0x8a,
                0xb9, 0x19
            ]
        );
    }

    #[test]
    fn cipher_bits_round_trip() {
        for c in [Cipher::ChaCha20Poly1305, Cipher::Aes256Gcm] {
            assert_eq!(Cipher::from_bit(c.bit()), Some(c));
        }
        assert_eq!(Cipher::from_bit(0), None);
        assert_eq!(Cipher::from_bit(3), None);
    }
}
