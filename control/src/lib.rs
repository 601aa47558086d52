//! dnetctl: the control side of dnet.
//!
//! - [`testbed`]: simulated hosts and containers in network namespaces, joined by `dnet-switch`
//!   processes; shared by `dnetctl demo` and the end-to-end tests (crate `dnet-e2e`).
//! - [`traffic`]: in-process traffic generators (ICMP echo, verified TCP, UDP counting, GRE
//!   capture) that run inside those namespaces.
//! - [`ctl`]: the switch's control-socket client, re-exported from the data plane crate.
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

/// The switch's control-socket client and its types (`dnet::control`), re-exported so users of
/// the testbed need not depend on the data plane crate themselves.
pub use dnet::control as ctl;

pub use error::{Error, Result};
