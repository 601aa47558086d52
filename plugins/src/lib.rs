//! dnet's container plugins: how containers join a dnet network the way their runtime expects.
//!
//! - [`docker`]: libnetwork's remote **network driver** and **IPAM driver**, one plugin named
//!   `dnet` (`docker network create -d dnet --ipam-driver dnet --subnet CIDR NAME`), served as
//!   JSON over HTTP on `dnet.sock` in Docker's plugin directory; plus a Docker engine client
//!   that makes sure each served network has its Docker network and reads running endpoints
//!   back after a restart.
//! - [`cni`]: the `dnet-cni` plugin (CNI 1.0.0 ADD, DEL, CHECK, VERSION; 1.1.0 STATUS, GC).
//! - [`backend`]: the [`Backend`] trait both use: the networks this host serves (subnet, this
//!   host's range and gateway, bridge, MTU) and an address allocator per network.
//!   `dnet-switch` implements it over etcd; [`memory::MemoryBackend`] in memory;
//!   [`control::ControlClient`] over a running switch's control socket (for `dnet-cni`, which
//!   is a separate process).
//! - [`veth`]: the veth pair both plugins plug into a network's bridge, via netlink.
//!
//! Data flow. Docker: engine → plugin socket → [`docker::server`] (hyper, own thread) →
//! [`docker::driver::Driver`] (own thread, in the host namespace) → [`Backend`] for addresses,
//! netlink for veths. CNI: runtime → `dnet-cni` process → control socket → the switch's
//! [`Backend`] (through [`control::answer`]) for addresses; netlink for veths.
//!
//! # Wiring into dnet-switch
//! `dnet-switch --docker` implements [`Backend`] over each joined network's etcd allocator
//! (its `dnet-switch/docker.rs`) and calls [`docker::DockerPlugin::start`] from its main
//! thread in the host namespace, after the bridges exist; the plugin serves on its own
//! thread. `dnet-cni`'s [`control::ControlClient`] talks to the switch's control socket
//! directly: the switch answers `networks`, `allocate`, `release` and `allocations` with the
//! fields [`control::ControlRequest`] uses (its refusals come back as
//! [`BackendError::Failed`] with the switch's message).

#![warn(missing_docs)]

pub mod backend;
pub mod cni;
pub mod control;
pub mod docker;
pub mod memory;
pub mod veth;

pub use backend::{Allocation, Backend, BackendError, Network};
