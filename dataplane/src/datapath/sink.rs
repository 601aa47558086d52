//! Where the core puts the frames it forwards: the I/O edge implements [`Sink`] over its
//! batched socket layer and TAP queue; tests implement it over vectors.
//!
//! A forwarded frame is never copied: the core hands the sink the frame (or a segment's
//! payload) as a borrow of lifetime `'a`, the lifetime of the receive burst it came from, and
//! the sink keeps it until [`Sink::flush_tunnels`]. So whatever buffers the edge uses, the
//! borrow checker proves they outlive the send.

use crate::switch::PortId;
use crate::wire::gre;

/// One message for a tunnel, as the core decided it.
#[derive(Clone, Copy, Debug)]
pub struct TunnelMsg<'h> {
    /// The tunnel port (the edge maps it to the peer's address).
    pub port: PortId,
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    /// UDP GSO messages sent (each carried several datagrams).
    pub gso_messages: u64,
    /// The kernel refused a GSO message as too large for the path: read the path MTU again.
    pub gso_too_big: bool,
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
    /// Queues one tunnel message: `msg.gre`, then `msg.headers`, then `payload`. Only called
    /// when [`Sink::tunnel_full`] is false.
    fn push_tunnel(&mut self, msg: &TunnelMsg<'_>, payload: &'a [u8]);

    /// No more tunnel messages fit before a flush.
    fn tunnel_full(&self) -> bool;

    /// No tunnel message is waiting.
    fn tunnel_empty(&self) -> bool;

    /// Sends every queued tunnel message; calls `done(port, inner length, outcome)` once per
    /// message. Runs of equal-sized GRE-in-UDP datagrams may leave as one GSO message if
    /// `fits(port, datagram length)` says they fit the path.
    fn flush_tunnels(
        &mut self,
        fits: impl Fn(PortId, usize) -> bool,
        done: impl FnMut(PortId, usize, SendOutcome),
    ) -> Flushed;

    /// Writes one frame to the TAP now, made of `head` (the virtio-net header, if the TAP has
    /// one, and any rebuilt headers) followed by `payloads`.
    fn write_tap(&mut self, head: &[u8], payloads: &[&[u8]]) -> Result<(), TapWriteError>;
}
