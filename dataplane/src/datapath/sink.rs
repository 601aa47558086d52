//! Where the core puts the frames it forwards: the I/O edge implements [`Sink`] over its
//! batched socket layer and TAP queue; tests implement it over vectors.
//!
//! A forwarded frame is never copied: the core hands the sink the frame (or a segment's
//! payload) as a borrow of lifetime `'a`, the lifetime of the receive burst it came from, and
//! the sink keeps it until [`Sink::flush_tunnels`]. So whatever buffers the edge uses, the
//! borrow checker proves they outlive the send.

use crate::switch::NetId;
use crate::switch::PortId;
use crate::wire::gre;
use std::net::SocketAddrV4;

/// Outer IPv4 + UDP header bytes of a GRE-in-UDP datagram: a run of datagrams fits a path
/// when each datagram plus this fits its MTU.
pub const OUTER_IP_UDP: usize = 28;

/// One message for a tunnel, as the core decided it.
#[derive(Clone, Copy, Debug)]
pub struct TunnelMsg<'h> {
    /// The network it belongs to (comes back with the outcome).
    pub net: NetId,
    /// The tunnel port within that network (comes back with the outcome).
    pub port: PortId,
    /// Where the peer listens (its underlay address, and the GRE-in-UDP port).
    pub dest: SocketAddrV4,
    /// The path MTU toward the peer, if known: a GSO run of datagrams must fit it whole
    /// (the kernel cannot fragment one).
    pub path_mtu: Option<u32>,
    /// The GRE header to put first.
    pub gre: gre::Repr,
    /// Bytes that go between the GRE header and the payload (a segment's own Ethernet, IP
    /// and TCP headers; empty for a whole frame). The sink copies them.
    pub headers: &'h [u8],
    /// The flow's hash: with GRE-in-UDP it picks the source port (RFC 8086 §3.2.1); 0 when
    /// every flow leaves from one socket.
    pub flow: u32,
    /// Send with outer DF off (the kernel may fragment the outer packet).
    pub fragmentable: bool,
    /// Seal it for this crypto peer (`--encrypt`): the GRE packet becomes the ciphertext of
    /// a data message, [`dnet_crypto::wire::OVERHEAD`] bytes longer.
    pub seal: Option<dnet_crypto::PeerId>,
}

/// What became of one message handed to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// Sent.
    Sent,
    /// `EMSGSIZE`: larger than the path with DF set.
    TooBig,
    /// The socket buffer was full.
    QueueFull,
    /// Any other error.
    Error,
}

/// What a flush did besides sending each message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    /// UDP GSO messages sent (each carried several datagrams).
    pub gso_messages: u64,
    /// The kernel refused a GSO message as too large for the path: read the path MTU again.
    pub gso_too_big: bool,
    /// Messages that could not be sealed since the last flush (no session yet, ...).
    pub crypto: dnet_crypto::Counts,
}

/// Why a frame could not be written to the TAP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TapWriteError {
    /// `EINVAL`: the kernel refused the frame's offload header (a UDP GSO frame on a kernel
    /// before 6.2).
    Refused,
    /// Anything else (queue full, device gone).
    Failed,
}

/// The I/O edge, as far as forwarded frames go. Borrows for `'a`, one receive burst.
pub trait Sink<'a> {
    /// Queues one tunnel message: `msg.gre`, then `msg.headers`, then `payload`, sealed for
    /// `msg.seal` if set (a message that cannot be sealed is counted in the next
    /// [`Flushed::crypto`] and not sent). Only called when [`Sink::tunnel_full`] is false.
    fn push_tunnel(&mut self, msg: &TunnelMsg<'_>, payload: &'a [u8]);

    /// No more tunnel messages fit before a flush.
    fn tunnel_full(&self) -> bool;

    /// No tunnel message is waiting.
    fn tunnel_empty(&self) -> bool;

    /// Sends every queued tunnel message; calls `done(net, port, inner length, outcome)` once
    /// per message. Runs of equal-sized GRE-in-UDP datagrams to one peer may leave as one GSO
    /// message where each datagram plus [`OUTER_IP_UDP`] fits the message's `path_mtu`.
    fn flush_tunnels(&mut self, done: impl FnMut(NetId, PortId, usize, SendOutcome)) -> Flushed;

    /// Writes one frame to network `net`'s TAP now, made of `head` (the virtio-net header, if
    /// the TAP has one, and any rebuilt headers) followed by `payloads`.
    fn write_tap(
        &mut self,
        net: NetId,
        head: &[u8],
        payloads: &[&[u8]],
    ) -> Result<(), TapWriteError>;
}
