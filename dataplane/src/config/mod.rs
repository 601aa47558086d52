//! The settings pipeline of `dnet-switch`, one step per module:
//!
//! ```text
//! flags ──┐
//!         ├─ Options (options.rs: one struct, read by clap and by serde)
//! --config┘      │
//!  (file.rs)     ▼
//!             Sources: flags over file, each value with its origin (flag, or file + line)
//!                │  Settings::new (settings.rs): defaults, validation, user and group lookup
//!                ▼
//!             Settings ── resolve (resolve.rs): against the host (routes, addresses, bridge)
//!                             │
//!                             ▼
//!                         DataplaneConfig ── io::Dataplane::start
//! ```
//!
//! Peers are checked by one function, [`peer::check_peer`], at start, on `dnetctl peer add`
//! and on SIGHUP. Every refusal names its [`Input`] (`--ttl 0`, or `config file
//! /etc/dnet/dnet.toml, line 4: ttl = 0`) and the fix.

pub mod encrypt;
mod error;
pub mod file;
pub mod fleet;
mod host;
mod input;
mod limits;
pub mod options;
pub mod peer;
mod peer_spec;
mod resolve;
mod settings;
mod sources;

pub use encrypt::{EncryptSettings, PeerSpec};
pub use file::{ConfigFile, FileError};
pub use fleet::FleetSettings;
pub use host::{Host, SystemHost};
pub use input::{FlagText, Input, Origin, Sourced};
pub use options::{Encap, LogLevel, Options};
pub use peer::{check_peer, PeerError, PeerRoute};
pub use resolve::{check_privileges, resolve, ResolveError, Resolved};
pub use settings::{
    network_tap, seal_overhead, tap_mtu_for, ExtraNetwork, Group, NetworkSettings, Settings,
    SettingsError, MIN_MTU, SEVERAL_NETWORKS_SOCKET,
};
pub use sources::Sources;
