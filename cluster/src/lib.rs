//! dnet's fleet membership through etcd v3: network settings defined once, hosts that join
//! without peer lists, one address range per host, and container addresses never handed out
//! twice.
//!
//! The cluster code never touches a frame. An [`Agent`] runs on its own thread with its own
//! current-thread tokio runtime (the etcd client is async) and talks to the switch only
//! through [`Membership`]: `peer_up` / `peer_down`, the equivalent of `dnetctl peer add/del`.
//! [`Admin`] is the synchronous side for `dnetctl network ...` and address allocation.
//!
//! # Key layout
//! Under a prefix (default `/dnet`, `--etcd-prefix`), every key of a network sits in its own
//! directory, so one watch covers it and one range delete removes it:
//!
//! | key | value | lease |
//! |---|---|---|
//! | `/dnet/networks/NAME/config` | [`NetworkRecord`]: `version`, `subnet`, `host_prefix` (24), `settings` {`encap` gre\|udp, `udp_port`, `key`, `mtu`, `encrypt`}, `created` | none |
//! | `/dnet/networks/NAME/members/HOST` | [`MemberRecord`]: `version`, `host`, `underlay`, `range`, `software`, `started`, `settings` it runs with, `public_key` (issue 16) | the member lease, TTL `--etcd-ttl` (10 s), kept alive every TTL/3 |
//! | `/dnet/networks/NAME/ranges/A.B.C.D-LEN` | [`ClaimRecord`]: `version`, `host`, `underlay`, `claimed` | the range lease, 24 h, renewed hourly while the host runs |
//! | `/dnet/networks/NAME/allocations/A.B.C.D` | [`AllocationRecord`]: `version`, `host`, `container`, `name`, `allocated` | none: survives restarts until released |
//!
//! Values are JSON. Readers ignore unknown fields, so later issues add fields (per-member
//! public keys, several networks per switch, Docker/CNI holders) without a format change;
//! `version` moves only for a change an old reader would misread, and a newer version is
//! rejected, not guessed at. Timestamps are Unix seconds; "last seen" is not written (that
//! would be a write per keepalive) but read from the member lease's remaining TTL.
//!
//! **Host identity.** A member is keyed by its host id, which defaults to its underlay IPv4
//! address: simulated hosts (and cloned VMs) share `/etc/machine-id` and hostname, but an
//! underlay address is unique by construction, and it is what peers tunnel to anyway. An
//! explicit id may be given instead (it must then be stable across restarts, since the range
//! claim is found by it).
//!
//! **Ranges.** The subnet is cut into `/host_prefix` ranges in address order. A host keeps a
//! range it holds, else takes the lowest free one, with a transaction "create the range key if
//! it does not exist" — two hosts starting at the same instant can never hold one range. In a
//! range, the network and broadcast addresses are never used and the first host address is the
//! gateway (the bridge's address); containers get the others, lowest free first, each with a
//! transaction "create the allocation key if it does not exist, and the host still holds the
//! range".
//!
//! **Trust.** Every record read is validated ([`view`]); one that fails (bad JSON, a member
//! naming this host's underlay or no address, a range outside the subnet or claimed by someone
//! else, settings other than the network's, ...) is skipped, counted by [`RejectKind`] and
//! logged at most once per kind per 10 s. It never becomes a peer and never panics.
//!
//! **etcd trouble.** The agent keeps its peers when etcd fails ("fail static"), reports
//! [`AgentStatus::unreachable_since`], reconnects with capped jittered backoff, and rebuilds
//! its view from a fresh read, registering again if its lease ended meanwhile.

//!
//! # Wiring
//! `dnet-switch --etcd URLS --network NAME`: build [`EtcdOptions`] (endpoints from `--etcd` or
//! `DNET_ETCD`, `--etcd-prefix`, [`TlsFiles`] from `--etcd-cacert/--etcd-cert/--etcd-key`,
//! [`Credentials::from_file`] or [`Credentials::from_env`]), then [`Agent::start`] with an
//! [`AgentConfig`] (underlay address, the flags as [`LocalSettings`], `--etcd-ttl`) before the
//! data plane starts: [`Joined`] carries the settings to run with and the range and gateway
//! for the bridge. [`Membership`] turns into the switch's own peer add/del; [`Agent::status`]
//! feeds `dnetctl show` and metrics. `dnetctl network ...` uses [`Admin`] directly (fleet-wide
//! administration); `dnetctl attach`/`detach` ask the running switch over its control socket,
//! and the switch calls [`Admin`] with its own host id (it owns its host's records). The switch
//! side of all this is `dataplane/src/bin/dnet-switch/fleet.rs`.

#![warn(missing_docs)]

pub mod admin;
pub mod agent;
pub mod backoff;
pub mod counters;
pub mod error;
pub mod etcd;
pub mod keys;
pub mod membership;
pub mod ranges;
pub mod records;
pub mod view;

pub use admin::{
    Admin, ClaimInfo, DeleteReport, LeaveReport, MemberInfo, NetworkInfo, NetworkSpec,
    NetworkSummary,
};
pub use agent::{Agent, AgentConfig, AgentStatus, Joined};
pub use counters::CounterSnapshot;
pub use error::ClusterError;
pub use etcd::{Credentials, EtcdOptions, TlsFiles};
pub use keys::{Layout, DEFAULT_PREFIX};
pub use membership::{Membership, MembershipEvent};
pub use ranges::PlanError;
pub use records::{
    Allocation, AllocationRecord, ClaimRecord, Encap, LocalSettings, MemberRecord, NetworkRecord,
    Settings, DEFAULT_HOST_PREFIX, FORMAT_VERSION, GRE_IN_UDP_PORT,
};
pub use view::{Peer, RejectKind, Rejection};
