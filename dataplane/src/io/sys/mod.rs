//! The system-call layer: every `unsafe` block of the data plane outside the TAP module lives
//! here, behind safe types (quinn-udp's shape).
//!
//! - [`mmsg`]: batched socket I/O. A [`mmsg::SendBatch`] borrows every payload pushed into it
//!   for as long as the batch lives, so the compiler (not a comment) proves that the buffers
//!   `sendmmsg` points at are still there when it runs; [`mmsg::RecvQueue`] hands out
//!   received datagrams as borrows of its slots.
//! - [`msghdr`]: the one `msghdr`/control-message builder (`UDP_SEGMENT` out, `UDP_GRO` in).
//! - [`sockopt`]: integer socket options and the one `IP_MTU` reader.
//!
//! Constants come from `libc`; none is copied here.

pub mod mmsg;
pub mod msghdr;
pub mod sockopt;
