//! dnet: a userspace learning Ethernet switch whose ports are local TAP devices and
//! Ethernet-over-GRE tunnels (RFC 2784/2890, protocol 0x6558) to peer hosts.
//!
//! The packet path, in words: a container's frame reaches the host bridge (e.g. `docker0`), which
//! hands it to dnet's TAP. A worker thread (one `mio` loop per core, each owning one TAP queue
//! and one raw GRE socket) reads a burst of frames and asks the [`switch`] core where each goes
//! (`handle(now, port, frame)` → forward / flood / drop). Frames for tunnels get a GRE header
//! ([`wire::gre`]) written into a small side buffer and leave with `sendmmsg` as two iovecs, so
//! the frame is never copied. In the other direction the raw socket delivers outer IPv4 + GRE;
//! [`switch::tunnel::decap`] checks peer, header and key, the core decides, and the inner frame
//! is written to the TAP.
//!
//! Layers: [`wire`] (packet formats, no I/O), [`switch`] (sans-io decisions and state, time
//! passed in), [`io`] (TAP, sockets, event loops), [`control`] (the local control socket).

#![deny(unsafe_code)]

pub mod config;
pub mod control;
pub mod datapath;
pub mod error_chain;
pub mod io;
pub mod offload;
pub mod switch;
pub mod wire;

pub use io::sys::privdrop;
