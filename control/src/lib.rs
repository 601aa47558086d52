//! dnetctl: the control side of dnet, as a library for its binary and the end-to-end tests.
//!
//! - [`attach`]: `dnetctl attach`/`detach`, plugging containers into the overlay, built on
//!   [`netlink`] (sync rtnetlink), [`arp_probe`] (RFC 5227) and [`docker`] (name lookup).
//!
//! The switch's control protocol and its client are crate `dnet_proto`; the demo's simulated
//! hosts are crate `dnet_testbed`.

pub mod arp_probe;
pub mod attach;
pub mod docker;
/// The sync rtnetlink client, shared with dnet's container plugins (crate `dnet_netlink`).
pub use dnet_netlink as netlink;
