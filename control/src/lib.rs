//! dnetctl: the control side of dnet.
//!
//! - [`testbed`]: simulated hosts and containers in network namespaces, joined by `dnet-switch`
//!   processes; shared by `dnetctl demo` and the end-to-end tests (crate `dnet-e2e`).
//! - [`traffic`]: in-process traffic generators (ICMP echo, verified TCP, UDP counting, GRE
//!   capture) that run inside those namespaces.
//! - The switch's control-socket client and its types are crate `dnet_proto`.
//! - [`attach`]: `dnetctl attach`/`detach`, plugging containers into the overlay, built on
//!   [`netlink`] (sync rtnetlink), [`arp_probe`] (RFC 5227) and [`docker`] (name lookup).

pub mod arp_probe;
pub mod attach;
pub mod cmd;
pub mod docker;
pub mod error;
pub mod netlink;
pub mod netns;
pub mod testbed;
pub mod traffic;

pub use error::{Error, Result};
