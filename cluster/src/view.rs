//! One network as read from etcd, judged: which members are peers, which records are rejected.
//!
//! [`NetworkView`] holds the raw records of one network's directory (config, members, range
//! claims) exactly as etcd returned them; [`NetworkView::evaluate`] validates every record and
//! returns the peers plus a typed [`Rejection`] per record that failed. Nothing here does I/O,
//! so every rule is a unit test. A rejected record is never a peer and never a panic.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::keys::{parse_range_segment, valid_name, Layout, NetworkKey};
use crate::ranges::{check_plan, is_range_of};
use crate::records::{ClaimRecord, MemberRecord, NetworkRecord, FORMAT_VERSION};

/// Why a record was rejected; fieldless so it doubles as a counter index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectKind {
    /// Not JSON, or not the record's shape.
    BadJson,
    /// `version` above [`FORMAT_VERSION`].
    UnsupportedVersion,
    /// The key's last segment is not a valid host id or range.
    BadKey,
    /// The record's host differs from its key's.
    HostMismatch,
    /// The underlay is not a usable unicast IPv4 address.
    NotAnAddress,
    /// A member that is not this host names this host's underlay.
    ClaimsThisHost,
    /// Two members name the same underlay; the later one is rejected.
    DuplicateUnderlay,
    /// A range that is not one of the network's ranges.
    RangeOutsideSubnet,
    /// A member's range that no claim grants to anyone.
    RangeNotClaimed,
    /// A member's range that is claimed by another host.
    RangeOverlap,
    /// A member runs with settings other than the network's.
    SettingsMismatch,
    /// A member of an encrypted network publishes no public key.
    MissingPublicKey,
    /// A public key that is not 32 bytes of base64.
    BadPublicKey,
    /// The network's settings record is unusable (the last good one stays in force).
    BadNetworkConfig,
}

impl RejectKind {
    /// Every kind, in counter order.
    pub const ALL: [RejectKind; 14] = [
        RejectKind::BadJson,
        RejectKind::UnsupportedVersion,
        RejectKind::BadKey,
        RejectKind::HostMismatch,
        RejectKind::NotAnAddress,
        RejectKind::ClaimsThisHost,
        RejectKind::DuplicateUnderlay,
        RejectKind::RangeOutsideSubnet,
        RejectKind::RangeNotClaimed,
        RejectKind::RangeOverlap,
        RejectKind::SettingsMismatch,
        RejectKind::MissingPublicKey,
        RejectKind::BadPublicKey,
        RejectKind::BadNetworkConfig,
    ];

    /// Snake-case name, as in counters and logs.
    pub fn name(self) -> &'static str {
        match self {
            RejectKind::BadJson => "bad_json",
            RejectKind::UnsupportedVersion => "unsupported_version",
            RejectKind::BadKey => "bad_key",
            RejectKind::HostMismatch => "host_mismatch",
            RejectKind::NotAnAddress => "not_an_address",
            RejectKind::ClaimsThisHost => "claims_this_host",
            RejectKind::DuplicateUnderlay => "duplicate_underlay",
            RejectKind::RangeOutsideSubnet => "range_outside_subnet",
            RejectKind::RangeNotClaimed => "range_not_claimed",
            RejectKind::RangeOverlap => "range_overlap",
            RejectKind::SettingsMismatch => "settings_mismatch",
            RejectKind::MissingPublicKey => "missing_public_key",
            RejectKind::BadPublicKey => "bad_public_key",
            RejectKind::BadNetworkConfig => "bad_network_config",
        }
    }
}

/// A record that was skipped, with the key and revision it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Full etcd key.
    pub key: String,
    /// The record's mod revision: a record is counted once per version.
    pub mod_revision: i64,
    /// Why.
    pub kind: RejectKind,
    /// What was wrong, naming the value.
    pub detail: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "skipped record {} ({}): {}",
            self.key,
            self.kind.name(),
            self.detail
        )
    }
}

/// A member host that should have a tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Peer {
    /// Host id.
    pub host: String,
    /// Underlay address the tunnel goes to.
    pub underlay: Ipv4Addr,
    /// The host's container range.
    pub range: Ipv4Net,
    /// Its public key (issue 16), if it published one.
    pub public_key: Option<String>,
}

/// One raw record as etcd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Value bytes.
    pub value: Vec<u8>,
    /// Revision that created the key (orders members for duplicate resolution).
    pub create_revision: i64,
    /// Revision of this value.
    pub mod_revision: i64,
    /// Lease the key is attached to (0: none).
    pub lease: i64,
}

/// This host, as the view must know it to leave itself out and spot impostors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me {
    /// This host's id.
    pub host: String,
    /// This host's underlay address.
    pub underlay: Ipv4Addr,
}

/// What changed for a key the view tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touched {
    /// The network's settings record.
    Config,
    /// A member record; the host id.
    Member,
    /// A range claim.
    Claim,
    /// Outside what the view tracks (allocations, unknown keys).
    Ignored,
}

/// The raw records of one network's directory.
#[derive(Debug, Clone)]
pub struct NetworkView {
    layout: Layout,
    network: String,
    config: Option<Entry>,
    last_good: Option<NetworkRecord>,
    members: BTreeMap<String, Entry>,
    claims: BTreeMap<String, Entry>,
}

/// The verdict on a view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evaluation {
    /// The settings in force: the config record if valid, else the last valid one seen.
    pub config: Option<NetworkRecord>,
    /// Accepted peers by host id (this host left out).
    pub peers: BTreeMap<String, Peer>,
    /// Valid claims: range → holder host id.
    pub claims: BTreeMap<Ipv4Net, String>,
    /// Records skipped.
    pub rejections: Vec<Rejection>,
}

/// A peer set change to apply to the switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerChange {
    /// Make a tunnel to this peer.
    Up(Peer),
    /// Remove this peer's tunnel.
    Down(Peer),
}

impl NetworkView {
    /// An empty view of `network` under `layout`.
    pub fn new(layout: Layout, network: &str) -> NetworkView {
        NetworkView {
            layout,
            network: network.to_string(),
            config: None,
            last_good: None,
            members: BTreeMap::new(),
            claims: BTreeMap::new(),
        }
    }

    /// Forgets every record (before a fresh read) but keeps the last good settings.
    pub fn clear(&mut self) {
        self.config = None;
        self.members.clear();
        self.claims.clear();
    }

    /// Records a put (`Some`) or delete (`None`) of `key`.
    pub fn apply(&mut self, key: &str, entry: Option<Entry>) -> Touched {
        let Some(kind) = self.layout.classify(&self.network, key) else {
            return Touched::Ignored;
        };
        let (map, segment, touched) = match kind {
            NetworkKey::Config => {
                if let Some(e) = &entry {
                    if let Ok(rec) = parse_config(&e.value) {
                        self.last_good = Some(rec);
                    }
                }
                self.config = entry;
                return Touched::Config;
            }
            NetworkKey::Member(h) => (&mut self.members, h, Touched::Member),
            NetworkKey::Range(r) => (&mut self.claims, r, Touched::Claim),
            NetworkKey::Allocation(_) | NetworkKey::Other(_) => return Touched::Ignored,
        };
        match entry {
            Some(e) => {
                map.insert(segment.to_string(), e);
            }
            None => {
                map.remove(segment);
            }
        }
        touched
    }

    /// The raw member entry of `host`, if any.
    pub fn member_entry(&self, host: &str) -> Option<&Entry> {
        self.members.get(host)
    }

    /// The raw claim entry of `range`, if any.
    pub fn claim_entry(&self, range: Ipv4Net) -> Option<&Entry> {
        self.claims.get(&crate::keys::range_segment(range))
    }

    /// Whether the settings record exists now.
    pub fn has_config(&self) -> bool {
        self.config.is_some()
    }

    /// Validates everything and returns the peers of `me`.
    pub fn evaluate(&self, me: &Me) -> Evaluation {
        let mut ev = Evaluation::default();
        if let Some(e) = &self.config {
            if let Err((kind, detail)) = parse_config(&e.value) {
                ev.rejections.push(Rejection {
                    key: self.layout.config(&self.network),
                    mod_revision: e.mod_revision,
                    kind,
                    detail,
                });
            }
        }
        let Some(config) = self.config.as_ref().and(self.last_good.clone()) else {
            // No network: nobody is a peer (it was deleted, or not created yet).
            return ev;
        };
        for (segment, e) in &self.claims {
            match validate_claim(segment, &e.value, &config) {
                Ok((range, host)) => {
                    ev.claims.insert(range, host);
                }
                Err((kind, detail)) => ev.rejections.push(Rejection {
                    key: format!("{}{segment}", self.layout.ranges(&self.network)),
                    mod_revision: e.mod_revision,
                    kind,
                    detail,
                }),
            }
        }
        let mut candidates: Vec<(&Entry, Peer)> = Vec::new();
        for (host, e) in &self.members {
            if host == &me.host {
                continue;
            }
            let key = self.layout.member(&self.network, host);
            match validate_member(host, &e.value, &config, &ev.claims, me) {
                Ok(p) => candidates.push((e, p)),
                Err((kind, detail)) => ev.rejections.push(Rejection {
                    key,
                    mod_revision: e.mod_revision,
                    kind,
                    detail,
                }),
            }
        }
        // The first to register an underlay keeps it; a later record naming it is an impostor
        // or a stale twin.
        candidates.sort_by_key(|(e, p)| (e.create_revision, p.host.clone()));
        let mut seen: HashMap<Ipv4Addr, String> = HashMap::new();
        for (e, p) in candidates {
            if let Some(first) = seen.get(&p.underlay) {
                ev.rejections.push(Rejection {
                    key: self.layout.member(&self.network, &p.host),
                    mod_revision: e.mod_revision,
                    kind: RejectKind::DuplicateUnderlay,
                    detail: format!("underlay {} is already member {first}'s", p.underlay),
                });
                continue;
            }
            seen.insert(p.underlay, p.host.clone());
            ev.peers.insert(p.host.clone(), p);
        }
        ev.config = Some(config);
        ev
    }
}

type Reject = (RejectKind, String);

fn version_of(value: &[u8]) -> Result<u32, Reject> {
    #[derive(serde::Deserialize)]
    struct Versioned {
        version: u32,
    }
    let v: Versioned = serde_json::from_slice(value)
        .map_err(|e| (RejectKind::BadJson, format!("not a dnet record: {e}")))?;
    if v.version > FORMAT_VERSION {
        return Err((
            RejectKind::UnsupportedVersion,
            format!(
                "format version {} is newer than this dnet's {FORMAT_VERSION}: upgrade dnet on this host",
                v.version
            ),
        ));
    }
    Ok(v.version)
}

fn parse<T: serde::de::DeserializeOwned>(value: &[u8]) -> Result<T, Reject> {
    version_of(value)?;
    serde_json::from_slice(value).map_err(|e| (RejectKind::BadJson, format!("bad record: {e}")))
}

/// Parses and checks a network settings record.
pub fn parse_config(value: &[u8]) -> Result<NetworkRecord, Reject> {
    let rec: NetworkRecord =
        parse(value).map_err(|(k, d)| (RejectKind::BadNetworkConfig.or_version(k), d))?;
    check_plan(rec.subnet, rec.host_prefix)
        .map_err(|e| (RejectKind::BadNetworkConfig, e.to_string()))?;
    Ok(rec)
}

impl RejectKind {
    fn or_version(self, k: RejectKind) -> RejectKind {
        if k == RejectKind::UnsupportedVersion {
            k
        } else {
            self
        }
    }
}

/// Checks a claim record: its key segment must be one of the network's ranges and its value a
/// claim naming a valid host id.
pub fn validate_claim(
    segment: &str,
    value: &[u8],
    config: &NetworkRecord,
) -> Result<(Ipv4Net, String), Reject> {
    let range = parse_range_segment(segment).ok_or_else(|| {
        (
            RejectKind::BadKey,
            format!("{segment:?} is not a range key (a.b.c.d-len)"),
        )
    })?;
    if !is_range_of(config.subnet, config.host_prefix, range) {
        return Err((
            RejectKind::RangeOutsideSubnet,
            format!(
                "range {range} is not a /{} range of subnet {}",
                config.host_prefix, config.subnet
            ),
        ));
    }
    let claim: ClaimRecord = parse(value)?;
    if !valid_name(&claim.host) {
        return Err((
            RejectKind::BadKey,
            format!("claim holder {:?} is not a host id", claim.host),
        ));
    }
    Ok((range, claim.host))
}

fn usable_underlay(s: &str) -> Result<Ipv4Addr, Reject> {
    let a: Ipv4Addr = s.parse().map_err(|_| {
        (
            RejectKind::NotAnAddress,
            format!("underlay {s:?} is not an IPv4 address"),
        )
    })?;
    if a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_broadcast() {
        return Err((
            RejectKind::NotAnAddress,
            format!("underlay {a} is not a unicast host address"),
        ));
    }
    Ok(a)
}

/// A base64 X25519 public key: 44 characters ending in one `=`. Decoding is issue 16's.
fn plausible_public_key(k: &str) -> bool {
    k.len() == 44
        && k.ends_with('=')
        && k[..43]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Checks a member record against the network's settings and claims.
pub fn validate_member(
    key_host: &str,
    value: &[u8],
    config: &NetworkRecord,
    claims: &BTreeMap<Ipv4Net, String>,
    me: &Me,
) -> Result<Peer, Reject> {
    if !valid_name(key_host) {
        return Err((RejectKind::BadKey, format!("{key_host:?} is not a host id")));
    }
    let rec: MemberRecord = parse(value)?;
    if rec.host != key_host {
        return Err((
            RejectKind::HostMismatch,
            format!("record names host {:?} under key {key_host:?}", rec.host),
        ));
    }
    let underlay = usable_underlay(&rec.underlay)?;
    if underlay == me.underlay {
        return Err((
            RejectKind::ClaimsThisHost,
            format!("member {key_host} names this host's underlay {underlay}"),
        ));
    }
    let range: Ipv4Net = rec.range.parse().map_err(|_| {
        (
            RejectKind::RangeOutsideSubnet,
            format!("range {:?} is not a CIDR", rec.range),
        )
    })?;
    if !is_range_of(config.subnet, config.host_prefix, range) {
        return Err((
            RejectKind::RangeOutsideSubnet,
            format!(
                "range {range} is not a /{} range of subnet {}",
                config.host_prefix, config.subnet
            ),
        ));
    }
    match claims.get(&range) {
        Some(h) if h == key_host => {}
        Some(h) => {
            return Err((
                RejectKind::RangeOverlap,
                format!("range {range} is claimed by {h}"),
            ))
        }
        None => {
            return Err((
                RejectKind::RangeNotClaimed,
                format!("range {range} has no claim"),
            ))
        }
    }
    let (n, m) = (&config.settings, &rec.settings);
    let mismatch = if n.encap != m.encap {
        Some(("encap", m.encap.to_string(), n.encap.to_string()))
    } else if n.udp_port != m.udp_port {
        Some((
            "udp_port",
            format!("{:?}", m.udp_port),
            format!("{:?}", n.udp_port),
        ))
    } else if n.key.unwrap_or(0) != m.key.unwrap_or(0) {
        Some(("key", format!("{:?}", m.key), format!("{:?}", n.key)))
    } else if n.mtu != m.mtu {
        Some(("mtu", format!("{:?}", m.mtu), format!("{:?}", n.mtu)))
    } else if n.encrypt != m.encrypt {
        Some(("encrypt", m.encrypt.to_string(), n.encrypt.to_string()))
    } else {
        None
    };
    if let Some((field, member, network)) = mismatch {
        return Err((
            RejectKind::SettingsMismatch,
            format!("member runs {field} {member}, the network has {network}"),
        ));
    }
    match &rec.public_key {
        Some(k) if !plausible_public_key(k) => {
            return Err((
                RejectKind::BadPublicKey,
                format!("public key {k:?} is not 32 bytes of base64"),
            ))
        }
        None if config.settings.encrypt => {
            return Err((
                RejectKind::MissingPublicKey,
                "the network is encrypted and the member publishes no public key".into(),
            ))
        }
        _ => {}
    }
    Ok(Peer {
        host: rec.host,
        underlay,
        range,
        public_key: rec.public_key,
    })
}

/// The changes that take the switch from `applied` to `desired`: downs first (a peer whose
/// record changed goes down, then up with its new record), then ups, each in host order.
pub fn diff(applied: &BTreeMap<String, Peer>, desired: &BTreeMap<String, Peer>) -> Vec<PeerChange> {
    let mut changes = Vec::new();
    for (h, p) in applied {
        if desired.get(h) != Some(p) {
            changes.push(PeerChange::Down(p.clone()));
        }
    }
    for (h, p) in desired {
        if applied.get(h) != Some(p) {
            changes.push(PeerChange::Up(p.clone()));
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Encap, Settings};

    const NET: &str = "blue";

    fn layout() -> Layout {
        Layout::default()
    }

    fn config_json() -> String {
        r#"{"version":1,"subnet":"10.77.0.0/16","host_prefix":24,
            "settings":{"encap":"gre","key":7}}"#
            .into()
    }

    fn entry(value: &str, rev: i64) -> Option<Entry> {
        Some(Entry {
            value: value.as_bytes().to_vec(),
            create_revision: rev,
            mod_revision: rev,
            lease: 0,
        })
    }

    fn member_json(host: &str, underlay: &str, range: &str) -> String {
        format!(
            r#"{{"version":1,"host":"{host}","underlay":"{underlay}","range":"{range}",
                "software":"0.1.0","started":1,"settings":{{"encap":"gre","key":7}}}}"#
        )
    }

    fn claim_json(host: &str) -> String {
        format!(r#"{{"version":1,"host":"{host}","underlay":"{host}","claimed":1}}"#)
    }

    fn me() -> Me {
        Me {
            host: "10.200.0.1".into(),
            underlay: "10.200.0.1".parse().unwrap(),
        }
    }

    /// A view with the config, this host and one good peer `10.200.0.2` on 10.77.1.0/24.
    fn base() -> NetworkView {
        let l = layout();
        let mut v = NetworkView::new(l.clone(), NET);
        v.apply(&l.config(NET), entry(&config_json(), 1));
        v.apply(
            &format!("{}10.77.0.0-24", l.ranges(NET)),
            entry(&claim_json("10.200.0.1"), 2),
        );
        v.apply(
            &l.member(NET, "10.200.0.1"),
            entry(&member_json("10.200.0.1", "10.200.0.1", "10.77.0.0/24"), 3),
        );
        v.apply(
            &format!("{}10.77.1.0-24", l.ranges(NET)),
            entry(&claim_json("10.200.0.2"), 4),
        );
        v.apply(
            &l.member(NET, "10.200.0.2"),
            entry(&member_json("10.200.0.2", "10.200.0.2", "10.77.1.0/24"), 5),
        );
        v
    }

    fn kinds(ev: &Evaluation) -> Vec<RejectKind> {
        ev.rejections.iter().map(|r| r.kind).collect()
    }

    #[test]
    fn a_valid_member_is_a_peer_and_this_host_is_not() {
        let ev = base().evaluate(&me());
        assert_eq!(kinds(&ev), vec![]);
        assert_eq!(ev.peers.len(), 1);
        let p = &ev.peers["10.200.0.2"];
        assert_eq!(p.underlay, Ipv4Addr::new(10, 200, 0, 2));
        assert_eq!(p.range, "10.77.1.0/24".parse::<Ipv4Net>().unwrap());
        assert_eq!(ev.claims.len(), 2);
        assert_eq!(ev.config.unwrap().settings.key, Some(7));
    }

    /// Adds one hostile member record `evil` (with a claim for `claim_range` if given) and
    /// returns the single rejection kind.
    fn reject_member(value: &str, claim_range: Option<&str>) -> RejectKind {
        let l = layout();
        let mut v = base();
        if let Some(r) = claim_range {
            v.apply(
                &format!("{}{r}", l.ranges(NET)),
                entry(&claim_json("evil"), 10),
            );
        }
        v.apply(&l.member(NET, "evil"), entry(value, 11));
        let ev = v.evaluate(&me());
        assert_eq!(ev.peers.len(), 1, "{:?}", ev.peers);
        assert!(ev.peers.contains_key("10.200.0.2"));
        assert_eq!(ev.rejections.len(), 1, "{:?}", ev.rejections);
        let r = &ev.rejections[0];
        assert_eq!(r.key, "/dnet/networks/blue/members/evil");
        assert_eq!(r.mod_revision, 11);
        r.kind
    }

    #[test]
    fn every_hostile_member_kind_is_rejected_and_not_a_peer() {
        let c = Some("10.77.9.0-24");
        let cases: Vec<(String, Option<&str>, RejectKind)> = vec![
            ("{not json".into(), c, RejectKind::BadJson),
            (r#"{"version":1}"#.into(), c, RejectKind::BadJson),
            (
                member_json("evil", "10.200.0.9", "10.77.9.0/24")
                    .replace("\"version\":1", "\"version\":2"),
                c,
                RejectKind::UnsupportedVersion,
            ),
            (
                member_json("other", "10.200.0.9", "10.77.9.0/24"),
                c,
                RejectKind::HostMismatch,
            ),
            (
                member_json("evil", "not-an-ip", "10.77.9.0/24"),
                c,
                RejectKind::NotAnAddress,
            ),
            (
                member_json("evil", "127.0.0.1", "10.77.9.0/24"),
                c,
                RejectKind::NotAnAddress,
            ),
            (
                member_json("evil", "224.0.0.1", "10.77.9.0/24"),
                c,
                RejectKind::NotAnAddress,
            ),
            (
                member_json("evil", "10.200.0.1", "10.77.9.0/24"),
                c,
                RejectKind::ClaimsThisHost,
            ),
            (
                member_json("evil", "10.200.0.9", "10.78.9.0/24"),
                c,
                RejectKind::RangeOutsideSubnet,
            ),
            (
                member_json("evil", "10.200.0.9", "10.77.9.0/25"),
                c,
                RejectKind::RangeOutsideSubnet,
            ),
            (
                member_json("evil", "10.200.0.9", "bogus"),
                c,
                RejectKind::RangeOutsideSubnet,
            ),
            (
                member_json("evil", "10.200.0.9", "10.77.1.0/24"),
                c,
                RejectKind::RangeOverlap,
            ),
            (
                member_json("evil", "10.200.0.9", "10.77.9.0/24"),
                None,
                RejectKind::RangeNotClaimed,
            ),
            (
                member_json("evil", "10.200.0.9", "10.77.9.0/24").replace("\"key\":7", "\"key\":8"),
                c,
                RejectKind::SettingsMismatch,
            ),
            (
                member_json("evil", "10.200.0.9", "10.77.9.0/24")
                    .replace("\"encap\":\"gre\"", "\"encap\":\"udp\""),
                c,
                RejectKind::SettingsMismatch,
            ),
            (
                member_json("evil", "10.200.0.9", "10.77.9.0/24")
                    .replace("\"started\":1", "\"started\":1,\"public_key\":\"short\""),
                c,
                RejectKind::BadPublicKey,
            ),
        ];
        for (value, claim, want) in cases {
            assert_eq!(reject_member(&value, claim), want, "{value}");
        }
    }

    #[test]
    fn an_encrypted_network_rejects_a_member_without_a_public_key() {
        let l = layout();
        let mut v = base();
        let cfg = config_json().replace("\"key\":7", "\"key\":7,\"encrypt\":true");
        v.apply(&l.config(NET), entry(&cfg, 20));
        let ev = v.evaluate(&me());
        // The peer runs without encrypt: a settings mismatch before the key is even looked at.
        assert_eq!(kinds(&ev), vec![RejectKind::SettingsMismatch]);
        let key = "A".repeat(43) + "=";
        let m = member_json("10.200.0.2", "10.200.0.2", "10.77.1.0/24")
            .replace("\"key\":7}", "\"key\":7,\"encrypt\":true}");
        v.apply(&l.member(NET, "10.200.0.2"), entry(&m, 21));
        assert_eq!(
            kinds(&v.evaluate(&me())),
            vec![RejectKind::MissingPublicKey]
        );
        let m = m.replace(
            "\"started\":1",
            &format!("\"started\":1,\"public_key\":\"{key}\""),
        );
        v.apply(&l.member(NET, "10.200.0.2"), entry(&m, 22));
        let ev = v.evaluate(&me());
        assert_eq!(kinds(&ev), vec![]);
        assert_eq!(
            ev.peers["10.200.0.2"].public_key.as_deref(),
            Some(key.as_str())
        );
    }

    #[test]
    fn a_later_member_with_a_taken_underlay_is_rejected() {
        let l = layout();
        let mut v = base();
        v.apply(
            &format!("{}10.77.5.0-24", l.ranges(NET)),
            entry(&claim_json("twin"), 30),
        );
        v.apply(
            &l.member(NET, "twin"),
            entry(&member_json("twin", "10.200.0.2", "10.77.5.0/24"), 31),
        );
        let ev = v.evaluate(&me());
        assert_eq!(kinds(&ev), vec![RejectKind::DuplicateUnderlay]);
        assert_eq!(ev.rejections[0].key, "/dnet/networks/blue/members/twin");
        assert!(ev.peers.contains_key("10.200.0.2"));
    }

    #[test]
    fn hostile_claims_are_rejected_and_grant_nothing() {
        let l = layout();
        let mut v = base();
        v.apply(
            &format!("{}garbage", l.ranges(NET)),
            entry(&claim_json("x"), 40),
        );
        v.apply(
            &format!("{}10.78.0.0-24", l.ranges(NET)),
            entry(&claim_json("x"), 41),
        );
        v.apply(&format!("{}10.77.7.0-24", l.ranges(NET)), entry("[]", 42));
        v.apply(
            &format!("{}10.77.8.0-24", l.ranges(NET)),
            entry(&claim_json("a/b"), 43),
        );
        let ev = v.evaluate(&me());
        let mut k = kinds(&ev);
        k.sort();
        assert_eq!(
            k,
            vec![
                RejectKind::BadJson,
                RejectKind::BadKey,
                RejectKind::BadKey,
                RejectKind::RangeOutsideSubnet
            ]
        );
        assert_eq!(ev.claims.len(), 2);
        assert_eq!(ev.peers.len(), 1);
    }

    #[test]
    fn a_bad_config_keeps_the_last_good_one_and_no_config_means_no_peers() {
        let l = layout();
        let mut v = base();
        v.apply(
            &l.config(NET),
            entry("{\"version\":1,\"subnet\":\"x\"}", 50),
        );
        let ev = v.evaluate(&me());
        assert_eq!(kinds(&ev), vec![RejectKind::BadNetworkConfig]);
        assert_eq!(ev.peers.len(), 1);
        assert_eq!(
            ev.config.unwrap().subnet,
            "10.77.0.0/16".parse::<Ipv4Net>().unwrap()
        );
        let bad_plan = config_json().replace("\"host_prefix\":24", "\"host_prefix\":8");
        v.apply(&l.config(NET), entry(&bad_plan, 51));
        assert_eq!(
            kinds(&v.evaluate(&me())),
            vec![RejectKind::BadNetworkConfig]
        );
        v.apply(&l.config(NET), None);
        let ev = v.evaluate(&me());
        assert!(ev.peers.is_empty());
        assert_eq!(ev.config, None);
    }

    #[test]
    fn a_config_with_a_new_settings_value_is_applied_to_members() {
        let l = layout();
        let mut v = base();
        let cfg = config_json().replace("\"key\":7", "\"key\":8");
        v.apply(&l.config(NET), entry(&cfg, 60));
        assert_eq!(
            kinds(&v.evaluate(&me())),
            vec![RejectKind::SettingsMismatch]
        );
    }

    #[test]
    fn deletes_and_ignored_keys() {
        let l = layout();
        let mut v = base();
        assert_eq!(v.apply(&l.member(NET, "10.200.0.2"), None), Touched::Member);
        assert!(v.evaluate(&me()).peers.is_empty());
        assert_eq!(
            v.apply(
                &l.allocation(NET, Ipv4Addr::new(10, 77, 0, 2)),
                entry("{}", 70)
            ),
            Touched::Ignored
        );
        assert_eq!(
            v.apply("/dnet/networks/red/config", entry("{}", 71)),
            Touched::Ignored
        );
        v.clear();
        assert!(!v.has_config());
        assert!(v.evaluate(&me()).peers.is_empty());
    }

    fn peer(h: &str, u: [u8; 4]) -> Peer {
        Peer {
            host: h.into(),
            underlay: u.into(),
            range: "10.77.1.0/24".parse().unwrap(),
            public_key: None,
        }
    }

    #[test]
    fn diff_emits_downs_then_ups_and_a_changed_peer_as_both() {
        let a = peer("a", [10, 200, 0, 2]);
        let b = peer("b", [10, 200, 0, 3]);
        let c = peer("c", [10, 200, 0, 4]);
        let b2 = peer("b", [10, 200, 0, 5]);
        let applied: BTreeMap<_, _> = [("a".into(), a.clone()), ("b".into(), b.clone())].into();
        let desired: BTreeMap<_, _> = [("b".into(), b2.clone()), ("c".into(), c.clone())].into();
        assert_eq!(
            diff(&applied, &desired),
            vec![
                PeerChange::Down(a),
                PeerChange::Down(b),
                PeerChange::Up(b2),
                PeerChange::Up(c)
            ]
        );
        assert_eq!(diff(&desired, &desired), vec![]);
    }

    #[test]
    fn settings_serialise_as_the_layout_documents() {
        let s = Settings {
            encap: Encap::Udp,
            udp_port: Some(4754),
            key: None,
            mtu: None,
            encrypt: false,
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"encap":"udp","udp_port":4754,"key":null,"mtu":null,"encrypt":false}"#
        );
    }
}
