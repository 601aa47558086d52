//! The control protocol of a running `dnet-switch`: its request and response types and a
//! blocking client.
//!
//! The switch listens on a unix stream socket (by default [`default_socket_path`], mode 0600:
//! root only, plus the `--control-group` when one is set; the switch checks each client's
//! credentials). A client connects, writes one [`Request`] as a JSON object on one line (ended
//! by `\n`), and reads one [`Response`] line back; the switch then closes the connection. The
//! request names itself in a `"cmd"` field, the response in a `"reply"` field; a refused or
//! failed request gets [`Response::Error`]:
//!
//! ```text
//! → {"cmd":"peer_add","addr":"10.200.0.2"}
//! ← {"reply":"peer_added","addr":"10.200.0.2","port":"gre-10.200.0.2","warnings":[]}
//! ```
//!
//! Users: the switch (crate `dnet`, its `control` module) answers requests and renders
//! [`Stats`] for Prometheus; `dnetctl` sends them and prints the answers; the network-namespace
//! testbed (`dnet-testbed`) waits on and reads switches with [`request`] and [`stats`].
//!
//! A new request is one new variant of [`Request`] and, if its answer has a new shape, one of
//! [`Response`]: the switch's `match` on requests is exhaustive, so it cannot forget one.
//! Fields added to an existing message take `#[serde(default)]`, so older peers still parse.

mod client;
mod message;

pub use client::{default_socket_path, request, stats, ClientError};
pub use message::{
    Allocated, AllocationEntry, AllocationList, ClaimEntry, ConflictEntry, ConflictList, DropCount,
    EncryptionInfo, FdbEntry, FdbTable, FleetCounters, FleetInfo, GreInfo, NetworkEntry, PortInfo,
    PortKind, PortStats, Request, Response, Show, Stats, StpInfo,
};
