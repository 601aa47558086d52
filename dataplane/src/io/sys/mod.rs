//! The system-call layer: every `unsafe` block of the data plane outside the TAP module lives
//! here, behind safe types (quinn-udp's shape). The crate denies `unsafe_code` everywhere
//! else, so that is checked by the compiler.
//!
//! - [`mmsg`]: batched socket I/O. A [`mmsg::SendBatch`] borrows every payload pushed into it
//!   for as long as the batch lives, so the compiler (not a comment) proves that the buffers
//!   `sendmmsg` points at are still there when it runs; [`mmsg::RecvQueue`] hands out
//!   received datagrams as borrows of its slots.
//! - [`msghdr`]: the one `msghdr`/control-message builder (`UDP_SEGMENT` out, `UDP_GRO` in).
//! - [`sockopt`]: integer socket options, the one `IP_MTU` reader, unix peer credentials.
//! - [`netdev`]: interface ioctls and address lookups (MTU, flags, MAC, bridge ports).
//! - [`packet`]: `AF_PACKET` sockets with memory-mapped TX and RX rings (plain GRE at speed).
//! - [`privdrop`]: user and group lookups, and dropping root for `--user`.
//!
//! Constants come from `libc`; none is copied here.

pub mod mmsg;
pub mod msghdr;
pub mod netdev;
pub mod packet;
pub mod privdrop;
pub mod sockopt;
