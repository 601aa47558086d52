//! dnet's testbed: simulated hosts on one machine, the `dnet-switch` processes that join them,
//! and traffic to push through them. Used by the end-to-end tests (crate `dnet-e2e`), by
//! `dnetctl demo`, and by benches that need a running network.
//!
//! - [`Testbed`]: hosts and their containers as network namespaces, an underlay between them,
//!   and the switches and other processes started in them; everything it made is undone on
//!   `Drop` (or from a signal handler through a [`TeardownHandle`]), killing only its own
//!   processes, by PID.
//! - [`traffic`]: in-process traffic generators and probes (ICMP echo, verified TCP, UDP
//!   counting, DF probes, GRE capture) that run inside those namespaces.
//! - [`netns`]: running a closure on a thread inside a named namespace.
//! - [`cmd`]: running `ip` (iproute2) with errors that name the command.
//!
//! It talks to switches only through their control socket (crate `dnet_proto`) and runs the
//! `dnet-switch` binary as a process, so it links none of the data plane.

pub mod cmd;
mod error;
mod hosts;
pub mod netns;
pub mod traffic;

pub use error::{Error, Result};
pub use hosts::{
    is_root, switch_binary, tap_port, tunnel_port, tunnel_totals, wait_link_up, Host, Process,
    Switch, SwitchOptions, TeardownHandle, Testbed, BRIDGE, CONTAINER_BROADCAST, CONTAINER_IF,
    DEFAULT_TAP, READY_TIMEOUT, UNDERLAY_IF,
};
