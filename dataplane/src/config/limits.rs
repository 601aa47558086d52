//! The bounds settings are checked against, apart from the checks, so that the error type
//! ([`super::error`]) and every module that validates (settings, fleet, resolve) can name
//! them without depending on each other.

/// Workers at most.
pub const MAX_WORKERS: usize = 64;

/// Smallest TAP MTU accepted: the IPv4 minimum reassembly size every host must accept.
pub const MIN_MTU: u32 = 576;

/// Shortest member TTL accepted: etcd refuses leases much shorter than its election timeout.
pub const MIN_TTL_SECS: u64 = 2;

/// Longest member TTL accepted: a crashed host's tunnels stay on the others this long.
pub const MAX_TTL_SECS: u64 = 3600;

/// Shortest `rekey_after` accepted: rekeying spaces handshakes at least 5 s apart anyway.
pub const MIN_REKEY_AFTER_SECS: u64 = 1;

/// Longest `rekey_after`: sessions are refused after 180 s, so rekeying must start before.
pub const MAX_REKEY_AFTER_SECS: u64 = 120;

/// Longest `--busy-poll` window, microseconds: a window opens only after 16 windows without
/// traffic, so a longer one would poll only for exchanges more than 160 ms apart.
pub const MAX_BUSY_POLL_US: u32 = 10_000;
