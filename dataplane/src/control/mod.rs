//! The switch's side of the local control socket: the server answering requests of the control
//! protocol (crate `dnet_proto`: one JSON request line, one JSON reply line, on a unix stream
//! socket), and the Prometheus endpoint serving the same counters. Both are plain threads at
//! the edge; they read counters that the workers publish and never touch frames.

pub mod fleet;
pub mod metrics;
mod server;

pub use fleet::Fleet;
pub use server::{
    ControlServer, Networks, PeerChangeError, PeerOrigin, ServerError, SwitchInfo, SwitchSettings,
};
