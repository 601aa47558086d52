//! The two handshake messages, built and read with `snow`:
//! `Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s`, WireGuard's pattern.
//!
//! - IK: the initiator knows the responder's static key beforehand (it is configured), sends
//!   its own static key encrypted in the first message, and the responder answers only if
//!   that key is a configured peer. One round trip; the session keys come from ephemeral
//!   keys as well (forward secrecy), and each side proves it holds its static private key.
//! - psk2: a pre-shared key mixed in at the end of the second message. dnet uses 32 zero
//!   bytes unless one is configured per peer (WireGuard's default too); a real one adds a
//!   layer that does not rest on X25519 (against a future quantum computer recording
//!   traffic today). Choosing psk2 now means adding such a setting later changes no wire
//!   format.
//! - The prologue names dnet, so a dnet handshake cannot be mistaken for another Noise
//!   protocol's (WireGuard's included).
//!
//! Payloads (encrypted and authenticated by the handshake):
//! - initiation: timestamp (u64 BE, milliseconds of wall-clock time, strictly increasing per
//!   sender: a replayed initiation is refused), sender index (u32 LE), cipher offer (bit 1
//!   ChaCha20-Poly1305, bit 2 AES-256-GCM: the ciphers the initiator would like);
//! - response: sender index (u32 LE), the chosen cipher (1 or 2).
//!
//! Each message ends with `mac1` = keyed BLAKE2s-128 over the bytes before it, keyed with
//! BLAKE2s-256("mac1----" ‖ the receiver's public key) (WireGuard's mac1). It proves nothing
//! secret, since public keys are public, but it lets a receiver throw away garbage and
//! messages meant for another key before spending any Diffie-Hellman operation on them.

use crate::aead::Cipher;
use crate::keys::{PrivateKey, PublicKey};
use crate::wire::{
    self, INITIATION_LEN, INITIATION_PAYLOAD, MAC_LEN, NOISE_INITIATION, NOISE_RESPONSE,
    RESPONSE_LEN, RESPONSE_PAYLOAD,
};
use blake2::digest::consts::U16;
use blake2::digest::{Digest, KeyInit, Mac};
use blake2::{Blake2s256, Blake2sMac};
use snow::params::NoiseParams;
use snow::HandshakeState;

/// The Noise protocol name.
pub const PROTOCOL: &str = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
/// Mixed into the handshake hash before the first message.
pub const PROLOGUE: &[u8] = b"dnet GRE-in-UDP encryption v1";
/// The psk2 position.
const PSK_POSITION: u8 = 2;

/// The parsed protocol name (parsing it once saves a little per handshake).
pub(crate) fn params() -> NoiseParams {
    PROTOCOL.parse().expect("a valid Noise protocol name")
}

/// The key of `mac1` for messages to the holder of `public`.
pub(crate) fn mac1_key(public: &PublicKey) -> [u8; 32] {
    let mut h = Blake2s256::new();
    h.update(b"mac1----");
    h.update(public.as_bytes());
    h.finalize().into()
}

fn mac1(key: &[u8; 32], msg: &[u8]) -> [u8; MAC_LEN] {
    let mut m = <Blake2sMac<U16> as KeyInit>::new_from_slice(key).expect("a 32-byte key");
    m.update(msg);
    m.finalize().into_bytes().into()
}

/// Whether the last [`MAC_LEN`] bytes of `msg` are its `mac1` under `key` (in constant time).
pub(crate) fn verify_mac1(key: &[u8; 32], msg: &[u8]) -> bool {
    let Some(body_len) = msg.len().checked_sub(MAC_LEN) else {
        return false;
    };
    let (body, tag) = msg.split_at(body_len);
    let mut m = <Blake2sMac<U16> as KeyInit>::new_from_slice(key).expect("a 32-byte key");
    m.update(body);
    m.verify_slice(tag).is_ok()
}

/// The two directions' data keys of a finished handshake.
pub(crate) struct SessionKeys {
    pub send: [u8; 32],
    pub recv: [u8; 32],
}

impl Drop for SessionKeys {
    fn drop(&mut self) {
        self.send.fill(0);
        self.recv.fill(0);
    }
}

fn split(hs: &mut HandshakeState, initiator: bool) -> SessionKeys {
    // Noise's Split: the first key is for the initiator's sending.
    let (i2r, r2i) = hs.dangerously_get_raw_split();
    if initiator {
        SessionKeys {
            send: i2r,
            recv: r2i,
        }
    } else {
        SessionKeys {
            send: r2i,
            recv: i2r,
        }
    }
}

/// What an initiator sends.
pub(crate) struct InitiationFields {
    pub timestamp: u64,
    pub sender_index: u32,
    pub offer: u8,
}

/// Builds an initiation to `peer` into `out`; returns the state that reads the response.
pub(crate) fn write_initiation(
    params: &NoiseParams,
    local: &PrivateKey,
    peer: &PublicKey,
    psk: &[u8; 32],
    f: &InitiationFields,
    out: &mut [u8; INITIATION_LEN],
) -> Result<HandshakeState, snow::Error> {
    let private = zeroing(local.bytes());
    let mut hs = snow::Builder::new(params.clone())
        .local_private_key(&private.0)?
        .remote_public_key(peer.as_bytes())?
        .psk(PSK_POSITION, psk)?
        .prologue(PROLOGUE)?
        .build_initiator()?;
    let mut payload = [0u8; INITIATION_PAYLOAD];
    payload[..8].copy_from_slice(&f.timestamp.to_be_bytes());
    payload[8..12].copy_from_slice(&f.sender_index.to_le_bytes());
    payload[12] = f.offer;
    out[..4].copy_from_slice(&wire::INITIATION);
    let n = hs.write_message(&payload, &mut out[4..4 + NOISE_INITIATION])?;
    debug_assert_eq!(n, NOISE_INITIATION);
    let body = INITIATION_LEN - MAC_LEN;
    let m = mac1(&mac1_key(peer), &out[..body]);
    out[body..].copy_from_slice(&m);
    Ok(hs)
}

/// An initiation, read by a responder.
pub(crate) struct ReadInitiation {
    pub hs: HandshakeState,
    pub remote: PublicKey,
    pub fields: InitiationFields,
}

/// Reads an initiation (whose `mac1` was checked). `None` if Noise refuses it.
pub(crate) fn read_initiation(
    params: &NoiseParams,
    local: &PrivateKey,
    msg: &[u8],
) -> Option<ReadInitiation> {
    let noise = msg.get(4..4 + NOISE_INITIATION)?;
    let private = zeroing(local.bytes());
    let mut hs = snow::Builder::new(params.clone())
        .local_private_key(&private.0)
        .ok()?
        .prologue(PROLOGUE)
        .ok()?
        .build_responder()
        .ok()?;
    let mut payload = [0u8; NOISE_INITIATION];
    let n = hs.read_message(noise, &mut payload).ok()?;
    if n != INITIATION_PAYLOAD {
        return None;
    }
    let remote: [u8; 32] = hs.get_remote_static()?.try_into().ok()?;
    let fields = InitiationFields {
        timestamp: u64::from_be_bytes(payload[..8].try_into().ok()?),
        sender_index: u32::from_le_bytes(payload[8..12].try_into().ok()?),
        offer: payload[12],
    };
    Some(ReadInitiation {
        hs,
        remote: PublicKey::from_bytes(remote),
        fields,
    })
}

/// Answers a read initiation: builds the response into `out` and returns the session keys.
pub(crate) fn write_response(
    hs: &mut HandshakeState,
    psk: &[u8; 32],
    peer: &PublicKey,
    receiver_index: u32,
    sender_index: u32,
    cipher: Cipher,
    out: &mut [u8; RESPONSE_LEN],
) -> Result<SessionKeys, snow::Error> {
    hs.set_psk(usize::from(PSK_POSITION), psk)?;
    let mut payload = [0u8; RESPONSE_PAYLOAD];
    payload[..4].copy_from_slice(&sender_index.to_le_bytes());
    payload[4] = cipher.bit();
    out[..4].copy_from_slice(&wire::RESPONSE);
    out[4..8].copy_from_slice(&receiver_index.to_le_bytes());
    let n = hs.write_message(&payload, &mut out[8..8 + NOISE_RESPONSE])?;
    debug_assert_eq!(n, NOISE_RESPONSE);
    let body = RESPONSE_LEN - MAC_LEN;
    let m = mac1(&mac1_key(peer), &out[..body]);
    out[body..].copy_from_slice(&m);
    Ok(split(hs, false))
}

/// A response, read by its initiator.
pub(crate) struct ReadResponse {
    pub keys: SessionKeys,
    pub sender_index: u32,
    pub cipher: Cipher,
}

/// Reads a response (whose `mac1` was checked) with the state its initiation left. `None`
/// if Noise refuses it or the cipher is not one `offer` allowed.
pub(crate) fn read_response(
    hs: &mut HandshakeState,
    offer: u8,
    msg: &[u8],
) -> Option<ReadResponse> {
    let noise = msg.get(8..8 + NOISE_RESPONSE)?;
    let mut payload = [0u8; NOISE_RESPONSE];
    let n = hs.read_message(noise, &mut payload).ok()?;
    if n != RESPONSE_PAYLOAD || !hs.is_handshake_finished() {
        return None;
    }
    let cipher = Cipher::from_bit(payload[4])?;
    // The responder may always fall back to ChaCha20-Poly1305; AES only if offered.
    if cipher == Cipher::Aes256Gcm && offer & Cipher::Aes256Gcm.bit() == 0 {
        return None;
    }
    Some(ReadResponse {
        keys: split(hs, true),
        sender_index: u32::from_le_bytes(payload[..4].try_into().ok()?),
        cipher,
    })
}

/// A copy of a private key that is zeroed when dropped.
struct Zeroing([u8; 32]);

fn zeroing(b: [u8; 32]) -> Zeroing {
    Zeroing(b)
}

impl Drop for Zeroing {
    fn drop(&mut self) {
        self.0.fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (PrivateKey, PrivateKey) {
        (
            PrivateKey::generate().unwrap(),
            PrivateKey::generate().unwrap(),
        )
    }

    #[test]
    fn both_sides_derive_mirrored_keys_and_the_payloads_arrive() {
        let p = params();
        let (a, b) = pair();
        let psk = [3u8; 32];
        let mut m1 = [0u8; INITIATION_LEN];
        let f = InitiationFields {
            timestamp: 1_700_000_000_000,
            sender_index: 0xdead_beef,
            offer: 3,
        };
        let mut ahs = write_initiation(&p, &a, &b.public_key(), &psk, &f, &mut m1).unwrap();
        assert_eq!(wire::classify(&m1), wire::Kind::Initiation);
        assert!(verify_mac1(&mac1_key(&b.public_key()), &m1));
        assert!(!verify_mac1(&mac1_key(&a.public_key()), &m1));
        let mut r = read_initiation(&p, &b, &m1).unwrap();
        assert_eq!(r.remote, a.public_key());
        assert_eq!(r.fields.timestamp, f.timestamp);
        assert_eq!(r.fields.sender_index, f.sender_index);
        assert_eq!(r.fields.offer, 3);
        let mut m2 = [0u8; RESPONSE_LEN];
        let bk = write_response(
            &mut r.hs,
            &psk,
            &a.public_key(),
            0xdead_beef,
            42,
            Cipher::Aes256Gcm,
            &mut m2,
        )
        .unwrap();
        assert_eq!(wire::receiver_index(&m2), Some(0xdead_beef));
        assert!(verify_mac1(&mac1_key(&a.public_key()), &m2));
        let ar = read_response(&mut ahs, 3, &m2).unwrap();
        assert_eq!(ar.sender_index, 42);
        assert_eq!(ar.cipher, Cipher::Aes256Gcm);
        assert_eq!(ar.keys.send, bk.recv);
        assert_eq!(ar.keys.recv, bk.send);
        assert_ne!(ar.keys.send, ar.keys.recv);
    }

    #[test]
    fn a_different_psk_fails_the_response() {
        let p = params();
        let (a, b) = pair();
        let mut m1 = [0u8; INITIATION_LEN];
        let f = InitiationFields {
            timestamp: 1,
            sender_index: 1,
            offer: 1,
        };
        let mut ahs = write_initiation(&p, &a, &b.public_key(), &[0; 32], &f, &mut m1).unwrap();
        let mut r = read_initiation(&p, &b, &m1).unwrap();
        let mut m2 = [0u8; RESPONSE_LEN];
        write_response(
            &mut r.hs,
            &[1; 32],
            &a.public_key(),
            1,
            2,
            Cipher::ChaCha20Poly1305,
            &mut m2,
        )
        .unwrap();
        assert!(read_response(&mut ahs, 1, &m2).is_none());
    }

    #[test]
    fn an_initiation_for_another_key_does_not_read_and_aes_needs_an_offer() {
        let p = params();
        let (a, b) = pair();
        let c = PrivateKey::generate().unwrap();
        let mut m1 = [0u8; INITIATION_LEN];
        let f = InitiationFields {
            timestamp: 1,
            sender_index: 1,
            offer: Cipher::ChaCha20Poly1305.bit(),
        };
        let mut ahs = write_initiation(&p, &a, &b.public_key(), &[0; 32], &f, &mut m1).unwrap();
        assert!(read_initiation(&p, &c, &m1).is_none());
        let mut r = read_initiation(&p, &b, &m1).unwrap();
        let mut m2 = [0u8; RESPONSE_LEN];
        write_response(
            &mut r.hs,
            &[0; 32],
            &a.public_key(),
            1,
            2,
            Cipher::Aes256Gcm,
            &mut m2,
        )
        .unwrap();
        assert!(
            read_response(&mut ahs, f.offer, &m2).is_none(),
            "AES chosen though not offered"
        );
    }

    #[test]
    fn mac1_covers_every_byte() {
        let k = mac1_key(&PrivateKey::generate().unwrap().public_key());
        let mut msg = [7u8; 40];
        let m = mac1(&k, &msg[..24]);
        msg[24..].copy_from_slice(&m);
        assert!(verify_mac1(&k, &msg));
        for i in 0..msg.len() {
            let mut bad = msg;
            bad[i] ^= 0x80;
            assert!(!verify_mac1(&k, &bad), "byte {i}");
        }
        assert!(!verify_mac1(&k, &msg[..10]));
    }
}
