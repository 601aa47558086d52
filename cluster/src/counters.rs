//! Counters of what the agent skipped, retried or changed, for `dnetctl show` and metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use crate::view::RejectKind;

/// Live counters, shared between the agent's thread and readers.
#[derive(Debug, Default)]
pub struct Counters {
    rejected: [AtomicU64; RejectKind::ALL.len()],
    /// Requests or streams that failed (each failure, not each outage).
    pub etcd_errors: AtomicU64,
    /// Successful resynchronisations after a failure.
    pub reconnects: AtomicU64,
    /// Watches cancelled because their revision was compacted.
    pub watch_compactions: AtomicU64,
    /// Member leases found expired and registered anew.
    pub lease_reregistrations: AtomicU64,
    /// Range claims lost to another host's transaction.
    pub claim_conflicts: AtomicU64,
    /// This host's member record found deleted or altered by someone else, and restored.
    pub own_record_restored: AtomicU64,
    /// `peer_up` calls.
    pub peer_up: AtomicU64,
    /// `peer_down` calls.
    pub peer_down: AtomicU64,
}

impl Counters {
    /// Counts one rejected record.
    pub fn reject(&self, kind: RejectKind) {
        self.rejected[kind as usize].fetch_add(1, Relaxed);
    }

    /// Rejected records of `kind` so far.
    pub fn rejected(&self, kind: RejectKind) -> u64 {
        self.rejected[kind as usize].load(Relaxed)
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            rejected: RejectKind::ALL
                .iter()
                .map(|k| (k.name(), self.rejected(*k)))
                .collect(),
            etcd_errors: self.etcd_errors.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            watch_compactions: self.watch_compactions.load(Relaxed),
            lease_reregistrations: self.lease_reregistrations.load(Relaxed),
            claim_conflicts: self.claim_conflicts.load(Relaxed),
            own_record_restored: self.own_record_restored.load(Relaxed),
            peer_up: self.peer_up.load(Relaxed),
            peer_down: self.peer_down.load(Relaxed),
        }
    }
}

/// A point-in-time copy of [`Counters`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CounterSnapshot {
    /// Rejected records by [`RejectKind::name`].
    pub rejected: BTreeMap<&'static str, u64>,
    /// See [`Counters::etcd_errors`].
    pub etcd_errors: u64,
    /// See [`Counters::reconnects`].
    pub reconnects: u64,
    /// See [`Counters::watch_compactions`].
    pub watch_compactions: u64,
    /// See [`Counters::lease_reregistrations`].
    pub lease_reregistrations: u64,
    /// See [`Counters::claim_conflicts`].
    pub claim_conflicts: u64,
    /// See [`Counters::own_record_restored`].
    pub own_record_restored: u64,
    /// See [`Counters::peer_up`].
    pub peer_up: u64,
    /// See [`Counters::peer_down`].
    pub peer_down: u64,
}

impl CounterSnapshot {
    /// Total rejected records.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}
