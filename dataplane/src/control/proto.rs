//! Request and response types of the control socket (serialized as one JSON line each).

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Switch summary, per-port counters and drops by reason.
    Stats,
}

/// What the switch answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Response {
    /// Answer to [`Request::Stats`].
    Stats(Stats),
    /// The request was malformed or failed.
    Error {
        /// Human-readable reason.
        message: String,
    },
}

/// A snapshot of a running switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// TAP device name.
    pub tap: String,
    /// TAP MTU in bytes.
    pub mtu: u32,
    /// Underlay source address.
    pub local: Ipv4Addr,
    /// Number of worker threads.
    pub workers: usize,
    /// Learned MAC addresses (the largest of the workers' copies of the table).
    pub fdb_entries: usize,
    /// One entry per port: the TAP first, then one per peer tunnel.
    pub ports: Vec<PortStats>,
    /// Frames dropped, by reason (every reason listed, zero or not).
    pub drops: Vec<DropCount>,
    /// Other counted events (MAC moves, floods, table full), every one listed.
    pub events: Vec<DropCount>,
}

/// Kind of a switch port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortKind {
    /// A local TAP port.
    Local,
    /// A GRE tunnel to a peer host.
    Tunnel,
}

/// Counters of one port, summed over workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStats {
    /// Port name: the TAP name, or `gre-<peer ip>`.
    pub name: String,
    /// Local or tunnel.
    pub kind: PortKind,
    /// Peer underlay address for tunnels.
    pub peer: Option<Ipv4Addr>,
    /// Frames received on this port.
    pub rx_packets: u64,
    /// Bytes of those frames (inner Ethernet frame length).
    pub rx_bytes: u64,
    /// Frames sent out of this port.
    pub tx_packets: u64,
    /// Bytes of those frames (inner Ethernet frame length).
    pub tx_bytes: u64,
}

/// One named counter (a drop reason or an event) and its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropCount {
    /// Stable snake_case reason name (see `dnet::switch::DropReason`).
    pub reason: String,
    /// Frames dropped for it.
    pub count: u64,
}
