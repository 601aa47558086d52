//! Authenticated, encrypted GRE-in-UDP for dnet (`--encrypt`): a sans-io core, in the
//! shape of quinn-proto and boringtun's `noise/`. No sockets, no clock (time comes in as
//! milliseconds), no threads, no allocation per datagram.
//!
//! # Pieces
//!
//! - [`keys`]: each host's static X25519 key pair; public keys, in base64 as WireGuard
//!   writes them, are how peers are configured and published.
//! - [`Endpoint`]: the handshake side, one per switch (behind a lock if several workers
//!   share it): peers, a Noise IK handshake state machine per peer, timers; handshake
//!   messages in ([`Endpoint::handle_handshake`]), messages to send out
//!   ([`Endpoint::poll_transmit`]).
//! - [`Sessions`]: the data path, shared by all workers without that lock: seal a run of
//!   datagrams for a peer in place ([`Sessions::seal_run`]), open a coalesced receive in
//!   place ([`Sessions::open_run`]).
//!
//! # Packet format ([`wire`])
//!
//! ```text
//! outer IPv4 | UDP (dst 4754) | 0x44 0x07 0 0 | receiver index u32 | counter u64 | AEAD( GRE header | Ethernet frame ) | tag (16)
//! ```
//!
//! 32 bytes more than cleartext GRE-in-UDP. The first word is no valid GRE header (R bit
//! set, version 7), so cleartext and sealed datagrams on one port are told apart both ways:
//! a cleartext peer is counted as [`Reject::Cleartext`] here, and our datagrams are dropped
//! as bad GRE by a cleartext receiver. Handshake messages (129 and 77 bytes) go to the same
//! port.
//!
//! # Handshake ([`handshake`])
//!
//! `Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s` through the `snow` crate, as WireGuard: one round
//! trip, mutual authentication by static keys, forward secrecy from ephemeral keys, a
//! pre-shared key slot (zero unless configured). Only initiations from configured public
//! keys are answered; an initiation carries a timestamp that must grow, so replaying one
//! does nothing. A keyed BLAKE2s `mac1` (WireGuard's) and a token bucket come before any
//! Diffie-Hellman work. The data cipher is negotiated inside the handshake (so it is
//! authenticated): AES-256-GCM when both hosts have AES instructions, else
//! ChaCha20-Poly1305.
//!
//! # State machine ([`endpoint`])
//!
//! A peer with traffic and no session starts a handshake, retransmitted after 1, 2, 4 and
//! then every 5 s, given up after 90 s (and started again by traffic). The initiator of a
//! session starts a new one when it sends on a session 120 s old, or after 2^60 datagrams;
//! sessions are refused after 180 s or 2^64 − 2^13 datagrams, so a nonce never repeats.
//! The previous session keeps receiving, so datagrams in flight during a rotation are not
//! lost. A restarted peer simply handshakes again (its new session replaces the old), and
//! data sent without an answer for 15 s starts a handshake from the other side too.
//!
//! # Data path ([`session`])
//!
//! Counters are reserved per run with one atomic add, and a receive looks its session up
//! by receiver index once per run: the key, not the outer address, says who sent it. A
//! 32704-counter sliding window (RFC 6479) accepts reordering and drops duplicates
//! ([`Reject::Replayed`]); a bad tag is [`Reject::AuthFailed`]. Nothing unauthenticated is
//! ever delivered. Drops are returned as plain numbers ([`Counts`]).
//!
//! # Threat model
//!
//! Protected, with `--encrypt`, against an attacker anywhere on the path (who can read,
//! drop, replay, reorder and inject datagrams) and off it (who can only inject, with any
//! source address):
//! - confidentiality and integrity of the inner frames, GRE header included: without a
//!   configured key no frame gets into the overlay, whatever source address it forges;
//! - replays (the window) and stale handshakes (the timestamp);
//! - past traffic after a later theft of a static key (forward secrecy; sessions live at
//!   most 3 minutes).
//!
//! Not protected:
//! - traffic analysis: outer addresses, ports, sizes and timing are in clear, and so is
//!   which host talks to which;
//! - denial of service by an on-path attacker, who can always drop datagrams; an off-path
//!   one can make a host spend at most the handshake rate limit on Diffie-Hellman work
//!   (and can fill that limit, delaying real handshakes: there is no cookie exchange yet);
//! - a host whose private key is stolen: the thief can pose as it until its public key is
//!   removed from its peers;
//! - the GRE key (`--key`): a network id in the (now encrypted) GRE header, never a secret.
//!
//! Without `--encrypt` (cleartext GRE or GRE-in-UDP), anyone who can reach a host's
//! underlay address can inject frames with a forged source, and anyone on the path can
//! read and change them.

#![forbid(unsafe_code)]

pub mod aead;
pub mod counts;
pub mod endpoint;
pub mod handshake;
pub mod keys;
pub mod limits;
mod ratelimit;
pub mod replay;
pub mod session;
pub mod wire;

#[cfg(test)]
mod tests;

pub use aead::{has_aes_instructions, Cipher, CipherPreference};
pub use counts::{Counts, Event, Reject};
pub use endpoint::{Config, Endpoint, PeerConfig, PeerError, PeerStatus, Transmit};
pub use keys::{KeyError, PrivateKey, PublicKey};
pub use limits::Limits;
pub use session::{Received, SessionInfo, Sessions};

/// Milliseconds on the caller's monotonic clock.
pub type Millis = u64;

/// A peer, named by the caller: any number below [`Config::capacity`]. dnet uses the
/// tunnel's port id.
pub type PeerId = u16;
