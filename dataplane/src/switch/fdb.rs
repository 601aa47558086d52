//! The MAC table (forwarding database): which port each (VLAN, MAC) was last seen on.
//!
//! - Bounded: at most `capacity` entries. **Policy when full:** an unknown source is not learned
//!   (counted as `fdb_full`); its frames are still delivered, by flooding, and existing entries
//!   keep working until they age out. This keeps legitimate, already learned stations reachable
//!   under a MAC flood instead of letting the flood evict them.
//! - Entries age out `aging` after they were last seen (default 300 s, as OVS and Linux).
//! - No allocation after construction: the map reserves twice the bound up front, so inserts
//!   after removals rehash in place rather than grow.
//! - The hash is keyed with a per-table random seed, so remote senders cannot aim source MACs
//!   at one bucket chain.

use super::port::PortId;
use crate::wire::ethernet::MacAddr;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// Milliseconds on a monotonic clock chosen by the caller (the core never reads a clock).
pub type Millis = u64;

/// Table key: the MAC in the low 48 bits, the VLAN id (0 = untagged) above it, so stations
/// are learned per VLAN (independent VLAN learning, as 802.1Q bridges and OVS do).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct FdbKey(u64);

impl FdbKey {
    /// Key for `mac` on `vlan` (0 when untagged).
    #[inline]
    pub fn new(mac: MacAddr, vlan: u16) -> FdbKey {
        FdbKey(mac.to_u64() | (u64::from(vlan & 0x0fff) << 48))
    }

    /// The MAC part.
    pub fn mac(&self) -> MacAddr {
        let b = self.0.to_be_bytes();
        MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    /// The VLAN part.
    pub fn vlan(&self) -> u16 {
        (self.0 >> 48) as u16
    }
}

/// One learned station.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Where the station is.
    pub port: PortId,
    /// When a frame from it was last seen.
    pub last_seen: Millis,
    /// When this entry was last announced to the other workers.
    pub synced: Millis,
}

/// What [`Fdb::learn`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    /// Already known on that port; timestamp refreshed. `sync` is set when the refresh is
    /// due to be announced to the other workers (at most once per sync interval).
    Refreshed {
        /// Announce this refresh.
        sync: bool,
    },
    /// A new entry.
    New,
    /// Known on another port; moved.
    Moved {
        /// The port it was on.
        from: PortId,
    },
    /// Not learned: the table is at its bound.
    Full,
}

/// A seeded, fast 64-bit hasher for [`FdbKey`]s (a splitmix64 finalizer over key ^ seed).
#[derive(Clone, Copy)]
pub struct SeededHash {
    seed: u64,
}

impl SeededHash {
    fn random() -> SeededHash {
        // RandomState is seeded from the OS; borrow its entropy instead of adding a dependency.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x646e_6574);
        SeededHash { seed: h.finish() }
    }
}

impl BuildHasher for SeededHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(self.seed)
    }
}

/// Hasher state of [`SeededHash`].
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    #[inline]
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.0 ^= v;
    }
}

/// The MAC table.
pub struct Fdb {
    map: HashMap<FdbKey, Entry, SeededHash>,
    capacity: usize,
    aging: Millis,
    sync_interval: Millis,
}

impl Fdb {
    /// A table holding at most `capacity` entries that age out after `aging` ms.
    pub fn new(capacity: usize, aging: Millis) -> Fdb {
        Fdb {
            map: HashMap::with_capacity_and_hasher(2 * capacity.max(1), SeededHash::random()),
            capacity,
            aging,
            // Other workers age their copy of an entry on their own clock; re-announcing a
            // live station every quarter of the aging time keeps it alive everywhere.
            sync_interval: (aging / 4).max(1),
        }
    }

    /// Records that `key` was seen on `port` at `now`.
    #[inline]
    pub fn learn(&mut self, key: FdbKey, port: PortId, now: Millis) -> Learned {
        if let Some(e) = self.map.get_mut(&key) {
            e.last_seen = now;
            if e.port == port {
                let sync = now.saturating_sub(e.synced) >= self.sync_interval;
                if sync {
                    e.synced = now;
                }
                return Learned::Refreshed { sync };
            }
            let from = e.port;
            e.port = port;
            e.synced = now;
            return Learned::Moved { from };
        }
        if self.map.len() >= self.capacity {
            return Learned::Full;
        }
        self.map.insert(
            key,
            Entry {
                port,
                last_seen: now,
                synced: now,
            },
        );
        Learned::New
    }

    /// Applies an entry learned by another worker at `seen`. An older update never overrides
    /// a newer local observation. Returns false when the table is full.
    pub fn merge(&mut self, key: FdbKey, port: PortId, seen: Millis) -> bool {
        if let Some(e) = self.map.get_mut(&key) {
            if seen >= e.last_seen {
                e.port = port;
                e.last_seen = seen;
                e.synced = seen;
            }
            return true;
        }
        if self.map.len() >= self.capacity {
            return false;
        }
        self.map.insert(
            key,
            Entry {
                port,
                last_seen: seen,
                synced: seen,
            },
        );
        true
    }

    /// Where `key` is, if known and not yet aged out at `now`.
    #[inline]
    pub fn lookup(&self, key: FdbKey, now: Millis) -> Option<PortId> {
        self.map
            .get(&key)
            .filter(|e| now.saturating_sub(e.last_seen) < self.aging)
            .map(|e| e.port)
    }

    /// The entry for `key`, aged or not.
    pub fn get(&self, key: FdbKey) -> Option<Entry> {
        self.map.get(&key).copied()
    }

    /// Removes entries not seen for `aging`; returns how many.
    pub fn expire(&mut self, now: Millis) -> usize {
        let before = self.map.len();
        let aging = self.aging;
        self.map
            .retain(|_, e| now.saturating_sub(e.last_seen) < aging);
        before - self.map.len()
    }

    /// Removes every entry on `port` (or all entries when `None`); returns how many.
    pub fn flush(&mut self, port: Option<PortId>) -> usize {
        let before = self.map.len();
        self.map.retain(|_, e| port.is_some_and(|p| e.port != p));
        before - self.map.len()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The bound.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Aging time in ms.
    pub fn aging(&self) -> Millis {
        self.aging
    }

    /// Every entry (for display; not on the hot path).
    pub fn iter(&self) -> impl Iterator<Item = (FdbKey, Entry)> + '_ {
        self.map.iter().map(|(k, e)| (*k, *e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x02, 0, 0, 0, 0, n])
    }

    #[test]
    fn learn_lookup_move_age() {
        let mut t = Fdb::new(4, 300_000);
        let k = FdbKey::new(mac(1), 0);
        assert_eq!(t.lookup(k, 0), None);
        assert_eq!(t.learn(k, 1, 0), Learned::New);
        assert_eq!(t.learn(k, 1, 10), Learned::Refreshed { sync: false });
        // A quarter of the aging time later the refresh is due for announcement, once.
        assert_eq!(t.learn(k, 1, 75_000), Learned::Refreshed { sync: true });
        assert_eq!(t.learn(k, 1, 75_001), Learned::Refreshed { sync: false });
        assert_eq!(t.lookup(k, 10), Some(1));
        assert_eq!(t.learn(k, 2, 20), Learned::Moved { from: 1 });
        assert_eq!(t.lookup(k, 20), Some(2));
        // Aged: invisible to lookup at once, removed by expire.
        assert_eq!(t.lookup(k, 20 + 300_000), None);
        assert_eq!(t.lookup(k, 20 + 299_999), Some(2));
        assert_eq!(t.expire(20 + 300_000), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn merge_keeps_newest() {
        let mut t = Fdb::new(1, 1000);
        let k = FdbKey::new(mac(1), 0);
        assert!(t.merge(k, 3, 50));
        assert_eq!(t.lookup(k, 50), Some(3));
        t.learn(k, 1, 100);
        assert!(t.merge(k, 3, 60)); // stale: ignored
        assert_eq!(t.lookup(k, 100), Some(1));
        assert!(t.merge(k, 3, 120));
        assert_eq!(t.lookup(k, 120), Some(3));
        assert!(!t.merge(FdbKey::new(mac(2), 0), 1, 120)); // full
    }

    #[test]
    fn vlans_are_separate() {
        let mut t = Fdb::new(4, 1000);
        t.learn(FdbKey::new(mac(1), 10), 1, 0);
        t.learn(FdbKey::new(mac(1), 20), 2, 0);
        assert_eq!(t.lookup(FdbKey::new(mac(1), 10), 0), Some(1));
        assert_eq!(t.lookup(FdbKey::new(mac(1), 20), 0), Some(2));
        assert_eq!(t.lookup(FdbKey::new(mac(1), 0), 0), None);
        let k = FdbKey::new(mac(9), 4095);
        assert_eq!((k.mac(), k.vlan()), (mac(9), 4095));
    }

    #[test]
    fn full_table_keeps_old_entries() {
        let mut t = Fdb::new(2, 1000);
        assert_eq!(t.learn(FdbKey::new(mac(1), 0), 1, 0), Learned::New);
        assert_eq!(t.learn(FdbKey::new(mac(2), 0), 1, 0), Learned::New);
        assert_eq!(t.learn(FdbKey::new(mac(3), 0), 1, 0), Learned::Full);
        assert_eq!(t.len(), 2);
        // Known stations still refresh and move while full.
        assert_eq!(
            t.learn(FdbKey::new(mac(1), 0), 2, 1),
            Learned::Moved { from: 1 }
        );
        // Once something ages out there is room again.
        t.learn(FdbKey::new(mac(1), 0), 2, 900);
        assert_eq!(t.expire(1000), 1);
        assert_eq!(t.learn(FdbKey::new(mac(3), 0), 1, 1000), Learned::New);
    }

    #[test]
    fn flush_by_port() {
        let mut t = Fdb::new(8, 1000);
        for n in 0..6 {
            t.learn(FdbKey::new(mac(n), 0), PortId::from(n % 2), 0);
        }
        assert_eq!(t.flush(Some(1)), 3);
        assert_eq!(t.len(), 3);
        assert_eq!(t.flush(None), 3);
        assert!(t.is_empty());
    }

    #[test]
    fn churn_stays_bounded_without_growing() {
        // Many more distinct MACs than the bound, with expiry in between: the map never grows
        // past its reservation (no allocation on the hot path). `capacity()` is items plus
        // room before the next rehash, so removals' tombstones lower it while the allocation
        // stays; a grown table would read about twice `cap0` right after learning, before
        // this round's expiry leaves any tombstones.
        let mut t = Fdb::new(64, 10);
        let cap0 = t.map.capacity();
        for round in 0..200u64 {
            for n in 0..100u64 {
                let m = MacAddr::from_bytes(&(round * 1000 + n + 1).to_be_bytes()[2..]);
                t.learn(FdbKey::new(m, 0), 1, round * 10);
            }
            assert!(t.len() <= 64);
            assert!(
                t.map.capacity() <= cap0,
                "round {round}: the map grew from {cap0} to {}",
                t.map.capacity()
            );
            t.expire(round * 10 + 10);
        }
    }
}
