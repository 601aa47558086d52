//! Duplicate-IP detection by watching ARP: which MAC claims which IPv4 address (the ARP
//! *sender* fields), and a record of addresses claimed by two different MACs within
//! [`WINDOW_MS`] of each other — e.g. the same container IP handed out on two hosts.
//!
//! Sans-io and bounded: at most [`TABLE_CAPACITY`] claims and [`CONFLICT_CAPACITY`] conflicts
//! per worker, both preallocated, so observing a frame never allocates. Each worker owns one
//! [`ArpWatch`]; the control plane asks every worker for a [`ArpDump`] and [`merge`]s them,
//! which also finds conflicts whose two claims were seen by different workers.

use super::fdb::Millis;
use super::port::PortId;
use crate::wire::arp;
use crate::wire::ethernet::MacAddr;
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// Most (VLAN, IP) claims remembered per worker. When full, new addresses are not tracked
/// until old ones expire (counted in [`ArpWatch::untracked`]).
pub const TABLE_CAPACITY: usize = 2048;
/// Most conflicts remembered per worker; when full, the least recently seen is replaced.
pub const CONFLICT_CAPACITY: usize = 64;
/// A second MAC claiming an address within this time of the previous claim is a conflict;
/// claims older than this are forgotten.
pub const WINDOW_MS: Millis = 120_000;
/// A conflict not seen again for this long is dropped from the list.
pub const CONFLICT_TTL_MS: Millis = 30 * 60_000;

/// One MAC's claim to an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The claiming station (ARP sender hardware address).
    pub mac: MacAddr,
    /// Port the ARP frame arrived on.
    pub port: PortId,
    /// When it last claimed the address.
    pub last_seen: Millis,
}

/// An address claimed by two MACs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The address.
    pub ip: Ipv4Addr,
    /// VLAN (0 untagged): the same IP on two VLANs is no conflict.
    pub vlan: u16,
    /// The two claims (the earlier holder first, as first detected).
    pub claims: [Claim; 2],
    /// When first detected.
    pub detected: Millis,
    /// When last seen (either MAC taking the address over from the other).
    pub last_seen: Millis,
    /// How often the address changed hands between these two MACs.
    pub count: u64,
}

impl Conflict {
    fn same_pair(&self, ip: Ipv4Addr, vlan: u16, a: MacAddr, b: MacAddr) -> bool {
        self.ip == ip
            && self.vlan == vlan
            && ((self.claims[0].mac == a && self.claims[1].mac == b)
                || (self.claims[0].mac == b && self.claims[1].mac == a))
    }

    /// Updates the matching claim of this pair with `c`.
    fn refresh(&mut self, c: Claim) {
        for k in &mut self.claims {
            if k.mac == c.mac && c.last_seen >= k.last_seen {
                *k = c;
            }
        }
        self.last_seen = self.last_seen.max(c.last_seen);
    }
}

/// One worker's copy of its ARP observations, for the control plane.
#[derive(Clone, Debug, Default)]
pub struct ArpDump {
    /// The worker's clock when copied.
    pub now: Millis,
    /// Current claims: (vlan, ip, claim).
    pub claims: Vec<(u16, Ipv4Addr, Claim)>,
    /// Conflicts recorded by this worker.
    pub conflicts: Vec<Conflict>,
    /// ARP senders not tracked because the table was full.
    pub untracked: u64,
}

/// The per-worker tracker.
pub struct ArpWatch {
    table: HashMap<u64, Claim>,
    conflicts: Vec<Conflict>,
    untracked: u64,
}

impl Default for ArpWatch {
    fn default() -> Self {
        Self::new()
    }
}

#[inline]
fn key(vlan: u16, ip: Ipv4Addr) -> u64 {
    (u64::from(vlan) << 32) | u64::from(u32::from(ip))
}

impl ArpWatch {
    /// An empty tracker with all its memory reserved.
    pub fn new() -> ArpWatch {
        ArpWatch {
            // Twice the bound, so inserts after removals rehash in place rather than grow.
            table: HashMap::with_capacity(2 * TABLE_CAPACITY),
            conflicts: Vec::with_capacity(CONFLICT_CAPACITY),
            untracked: 0,
        }
    }

    /// Looks at the Ethernet payload `payload` of an ARP frame (ethertype 0x0806) that
    /// arrived on `port` on `vlan` at `now`. Malformed ARP, probes (sender 0.0.0.0) and
    /// group sender MACs are ignored.
    #[inline]
    pub fn observe(&mut self, now: Millis, vlan: u16, port: PortId, payload: &[u8]) {
        let Ok(p) = arp::Packet::new_checked(payload) else {
            return;
        };
        let ip = p.sender_ip();
        let mac = p.sender_mac();
        if ip.is_unspecified() || !mac.is_valid_source() {
            return;
        }
        self.claim(now, vlan, ip, mac, port);
    }

    /// Records that `mac` (on `port`) claims `ip` on `vlan` at `now`.
    pub fn claim(&mut self, now: Millis, vlan: u16, ip: Ipv4Addr, mac: MacAddr, port: PortId) {
        let new = Claim {
            mac,
            port,
            last_seen: now,
        };
        let full = self.table.len() >= TABLE_CAPACITY;
        match self.table.get_mut(&key(vlan, ip)) {
            Some(c) if c.mac == mac => *c = new,
            Some(c) => {
                let old = *c;
                *c = new;
                if now.saturating_sub(old.last_seen) <= WINDOW_MS {
                    self.record(ip, vlan, old, new);
                }
            }
            None if !full => {
                self.table.insert(key(vlan, ip), new);
            }
            None => self.untracked += 1,
        }
    }

    fn record(&mut self, ip: Ipv4Addr, vlan: u16, old: Claim, new: Claim) {
        if let Some(c) = self
            .conflicts
            .iter_mut()
            .find(|c| c.same_pair(ip, vlan, old.mac, new.mac))
        {
            c.refresh(old);
            c.refresh(new);
            c.count += 1;
            return;
        }
        let c = Conflict {
            ip,
            vlan,
            claims: [old, new],
            detected: new.last_seen,
            last_seen: new.last_seen,
            count: 1,
        };
        if self.conflicts.len() < CONFLICT_CAPACITY {
            self.conflicts.push(c);
        } else if let Some(stalest) = self.conflicts.iter_mut().min_by_key(|c| c.last_seen) {
            *stalest = c;
        }
    }

    /// Forgets claims older than [`WINDOW_MS`] and conflicts older than [`CONFLICT_TTL_MS`].
    /// Call about once a second.
    pub fn expire(&mut self, now: Millis) {
        self.table
            .retain(|_, c| now.saturating_sub(c.last_seen) <= WINDOW_MS);
        self.conflicts
            .retain(|c| now.saturating_sub(c.last_seen) <= CONFLICT_TTL_MS);
    }

    /// Forgets the claims made through `port` (a removed peer; its id may be reused).
    pub fn forget_port(&mut self, port: PortId) {
        self.table.retain(|_, c| c.port != port);
    }

    /// Number of tracked claims.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Recorded conflicts.
    pub fn conflicts(&self) -> &[Conflict] {
        &self.conflicts
    }

    /// ARP senders not tracked because the table was full.
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    /// A copy for the control plane (allocates; not on the forwarding path).
    pub fn dump(&self, now: Millis) -> ArpDump {
        ArpDump {
            now,
            claims: self
                .table
                .iter()
                .map(|(k, c)| ((k >> 32) as u16, Ipv4Addr::from(*k as u32), *c))
                .collect(),
            conflicts: self.conflicts.clone(),
            untracked: self.untracked,
        }
    }
}

/// Merges the workers' dumps into one conflict list, newest first: conflicts any worker
/// recorded (the same pair seen by several workers counted once, with the largest count), plus
/// addresses whose current claims by two MACs sit in *different* workers' tables within
/// [`WINDOW_MS`] of each other (each worker sees only its share of the frames).
pub fn merge(dumps: &[ArpDump]) -> Vec<Conflict> {
    let mut out: Vec<Conflict> = Vec::new();
    let mut add = |c: Conflict| {
        if let Some(o) = out
            .iter_mut()
            .find(|o| o.same_pair(c.ip, c.vlan, c.claims[0].mac, c.claims[1].mac))
        {
            o.refresh(c.claims[0]);
            o.refresh(c.claims[1]);
            o.detected = o.detected.min(c.detected);
            o.count = o.count.max(c.count);
        } else {
            out.push(c);
        }
    };
    for d in dumps {
        for c in &d.conflicts {
            add(*c);
        }
    }
    let mut claims: Vec<(u16, Ipv4Addr, Claim)> = dumps
        .iter()
        .flat_map(|d| d.claims.iter().copied())
        .collect();
    claims.sort_by_key(|(v, ip, c)| (*v, *ip, c.last_seen));
    for group in claims.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
        for (i, (vlan, ip, a)) in group.iter().enumerate() {
            for (_, _, b) in &group[i + 1..] {
                if a.mac != b.mac && b.last_seen - a.last_seen <= WINDOW_MS {
                    add(Conflict {
                        ip: *ip,
                        vlan: *vlan,
                        claims: [*a, *b],
                        detected: b.last_seen,
                        last_seen: b.last_seen,
                        count: 1,
                    });
                }
            }
        }
    }
    out.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.ip.cmp(&b.ip)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x02, 0x77, 0, 0, 0, n])
    }
    const IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

    /// An ARP request "who-has 10.77.0.9 tell <ip>" from `sha`.
    fn request(sha: MacAddr, ip: Ipv4Addr) -> Vec<u8> {
        let mut b = vec![0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01];
        b.extend_from_slice(&sha.0);
        b.extend_from_slice(&ip.octets());
        b.extend_from_slice(&[0; 6]);
        b.extend_from_slice(&[10, 77, 0, 9]);
        b
    }

    #[test]
    fn same_mac_again_is_no_conflict() {
        let mut w = ArpWatch::new();
        w.observe(0, 0, 0, &request(mac(1), IP));
        w.observe(1000, 0, 0, &request(mac(1), IP));
        assert_eq!(w.len(), 1);
        assert!(w.conflicts().is_empty());
    }

    #[test]
    fn second_mac_within_window_is_a_conflict() {
        let mut w = ArpWatch::new();
        w.observe(1000, 0, 0, &request(mac(1), IP));
        w.observe(2000, 0, 3, &request(mac(2), IP));
        let c = w.conflicts();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].ip, IP);
        assert_eq!(c[0].claims[0].mac, mac(1));
        assert_eq!(c[0].claims[0].port, 0);
        assert_eq!(c[0].claims[1].mac, mac(2));
        assert_eq!(c[0].claims[1].port, 3);
        assert_eq!((c[0].detected, c[0].last_seen, c[0].count), (2000, 2000, 1));
        // Flapping back and forth updates the same record.
        w.observe(3000, 0, 0, &request(mac(1), IP));
        w.observe(4000, 0, 3, &request(mac(2), IP));
        let c = w.conflicts();
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].detected, c[0].last_seen, c[0].count), (2000, 4000, 3));
    }

    #[test]
    fn a_move_after_the_window_is_no_conflict() {
        let mut w = ArpWatch::new();
        w.observe(0, 0, 0, &request(mac(1), IP));
        w.observe(WINDOW_MS + 1, 0, 0, &request(mac(2), IP));
        assert!(w.conflicts().is_empty());
    }

    #[test]
    fn vlans_probes_and_garbage_are_separate_or_ignored() {
        let mut w = ArpWatch::new();
        w.observe(0, 1, 0, &request(mac(1), IP));
        w.observe(0, 2, 0, &request(mac(2), IP));
        w.observe(0, 1, 0, &request(mac(3), Ipv4Addr::UNSPECIFIED));
        w.observe(0, 1, 0, &request(MacAddr::BROADCAST, IP));
        w.observe(0, 1, 0, &request(mac(3), IP)[..27]);
        assert!(w.conflicts().is_empty());
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn bounded_and_never_grows() {
        let mut w = ArpWatch::new();
        let cap = w.table.capacity();
        for i in 0..(TABLE_CAPACITY as u32 + 100) {
            w.claim(0, 0, Ipv4Addr::from(0x0a00_0000 + i), mac(1), 0);
        }
        assert_eq!(w.len(), TABLE_CAPACITY);
        assert_eq!(w.untracked(), 100);
        for i in 0..(CONFLICT_CAPACITY as u32 + 10) {
            let ip = Ipv4Addr::from(0x0a00_0000 + i);
            w.claim(u64::from(i) + 1, 0, ip, mac(2), 1);
        }
        assert_eq!(w.conflicts().len(), CONFLICT_CAPACITY);
        // The stalest were replaced: the newest address is listed.
        let newest = Ipv4Addr::from(0x0a00_0000 + CONFLICT_CAPACITY as u32 + 9);
        assert!(w.conflicts().iter().any(|c| c.ip == newest));
        assert_eq!(w.table.capacity(), cap);
        assert!(w.conflicts.capacity() == CONFLICT_CAPACITY);
        // Expiry empties both.
        w.expire(CONFLICT_TTL_MS + 1000);
        assert!(w.is_empty());
        assert!(w.conflicts().is_empty());
    }

    #[test]
    fn merge_finds_claims_split_across_workers_and_dedups() {
        let mut w0 = ArpWatch::new();
        let mut w1 = ArpWatch::new();
        w0.claim(1000, 0, IP, mac(1), 0);
        w1.claim(1500, 0, IP, mac(2), 1);
        // Unrelated addresses with one MAC each.
        w0.claim(1000, 0, Ipv4Addr::new(10, 77, 0, 2), mac(3), 0);
        w1.claim(1000, 0, Ipv4Addr::new(10, 77, 0, 2), mac(3), 0);
        let m = merge(&[w0.dump(2000), w1.dump(2000)]);
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m[0].ip, IP);
        assert_eq!(m[0].claims[0].mac, mac(1));
        assert_eq!(m[0].claims[1].mac, mac(2));

        // The same pair recorded by both workers (and visible in the tables) is listed once.
        w0.claim(1600, 0, IP, mac(2), 1);
        w1.claim(1700, 0, IP, mac(1), 0);
        w1.claim(1800, 0, IP, mac(2), 1);
        let m = merge(&[w0.dump(2000), w1.dump(2000)]);
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m[0].count, 2);
        assert_eq!(m[0].last_seen, 1800);
    }
}
