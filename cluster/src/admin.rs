//! Synchronous administration: what `dnetctl network create|list|show|delete|leave` and
//! address allocation do. Every change that must not race is one etcd transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::Ipv4Addr;

use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use ipnet::Ipv4Net;
use serde::Serialize;

use crate::error::ClusterError;
use crate::etcd::{Conn, EtcdOptions};
use crate::keys::{valid_name, Layout, NetworkKey};
use crate::ranges::{check_plan, container_addresses, gateway, is_container_address, next_free};
use crate::records::{
    unix_now, Allocation, AllocationRecord, Encap, MemberRecord, NetworkRecord, Settings,
    FORMAT_VERSION, GRE_IN_UDP_PORT,
};
use crate::view::{parse_config, validate_claim, Me, NetworkView};

/// How many times a transaction that lost a race is retried.
const MAX_ATTEMPTS: u32 = 64;

/// etcd's default `--max-txn-ops` is 128; stay below it.
const TXN_CHUNK: usize = 100;

/// What `dnetctl network create` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    /// Container address space.
    pub subnet: Ipv4Net,
    /// Each host's range length (default [`crate::DEFAULT_HOST_PREFIX`]).
    pub host_prefix: u8,
    /// Data-plane settings; with [`Encap::Udp`] and no port, [`GRE_IN_UDP_PORT`].
    pub settings: Settings,
}

/// One network in `network list`.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkSummary {
    /// Name.
    pub name: String,
    /// Its settings, if the record is valid.
    pub config: Option<NetworkRecord>,
    /// Why the record is not valid.
    pub error: Option<String>,
    /// Member records present.
    pub members: usize,
}

/// One member in `network show`.
#[derive(Debug, Clone, Serialize)]
pub struct MemberInfo {
    /// Host id.
    pub host: String,
    /// Underlay address.
    pub underlay: Ipv4Addr,
    /// Its range.
    pub range: Ipv4Net,
    /// dnet version it runs.
    pub software: String,
    /// Unix seconds when its agent started.
    pub started: u64,
    /// Seconds since its last keepalive (lease granted TTL minus what is left).
    pub last_seen_secs: Option<i64>,
    /// Seconds until its lease ends without a keepalive.
    pub ttl_left_secs: Option<i64>,
}

/// One range claim in `network show`.
#[derive(Debug, Clone, Serialize)]
pub struct ClaimInfo {
    /// The range.
    pub range: Ipv4Net,
    /// Holder host id.
    pub host: String,
    /// Seconds until the claim lapses without renewal (`None`: no lease).
    pub ttl_left_secs: Option<i64>,
}

/// `network show`.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkInfo {
    /// Name.
    pub name: String,
    /// Settings.
    pub config: NetworkRecord,
    /// Valid members, by host id.
    pub members: Vec<MemberInfo>,
    /// Valid range claims, in address order.
    pub claims: Vec<ClaimInfo>,
    /// Allocated container addresses.
    pub allocations: usize,
    /// Records that are skipped, each as a sentence.
    pub rejected: Vec<String>,
}

/// What `network delete` removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeleteReport {
    /// Keys deleted.
    pub keys: i64,
    /// Range leases revoked (with `--force`).
    pub leases_revoked: usize,
}

/// What `network leave` released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaveReport {
    /// Whether a member record was removed.
    pub member: bool,
    /// Ranges released.
    pub ranges: Vec<Ipv4Net>,
    /// Addresses released.
    pub allocations: Vec<Ipv4Addr>,
}

/// A synchronous etcd client for administration (its own small runtime on the calling
/// thread; do not call from inside an async runtime).
pub struct Admin {
    rt: tokio::runtime::Runtime,
    conn: Conn,
    layout: Layout,
}

fn check_name(what: &'static str, name: &str) -> Result<(), ClusterError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(ClusterError::BadName {
            what,
            name: name.into(),
        })
    }
}

impl Admin {
    /// Connects to etcd.
    pub fn connect(opts: &EtcdOptions) -> Result<Admin, ClusterError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClusterError::Thread {
                network: "-".into(),
                what: format!("could not build the admin runtime: {e}"),
            })?;
        let conn = rt.block_on(Conn::connect(opts, 0))?;
        Ok(Admin {
            rt,
            conn,
            layout: Layout::new(&opts.prefix),
        })
    }

    fn block<T>(&self, f: impl Future<Output = T>) -> T {
        self.rt.block_on(f)
    }

    async fn get_prefix(&self, prefix: String) -> Result<(Vec<KeyValue>, i64), ClusterError> {
        let mut r = self
            .conn
            .call("get", |mut c| {
                let prefix = prefix.clone();
                async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let rev = r.header().map_or(0, |h| h.revision());
        Ok((r.take_kvs(), rev))
    }

    async fn txn(
        &self,
        op: &'static str,
        txn: Txn,
    ) -> Result<etcd_client::TxnResponse, ClusterError> {
        self.conn
            .call(op, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await
    }

    fn no_network(&self, network: &str) -> ClusterError {
        ClusterError::NoNetwork {
            network: network.into(),
            prefix: self.layout.prefix().into(),
        }
    }

    /// Reads a network's settings record.
    async fn config(&self, network: &str, kvs: &[KeyValue]) -> Result<NetworkRecord, ClusterError> {
        let key = self.layout.config(network);
        let kv = kvs
            .iter()
            .find(|kv| kv.key() == key.as_bytes())
            .ok_or_else(|| self.no_network(network))?;
        parse_config(kv.value()).map_err(|(_, detail)| ClusterError::BadNetwork {
            network: network.into(),
            detail,
        })
    }

    /// Stores a new network; refuses an existing one or a subnet/prefix that cannot be cut.
    pub fn create_network(
        &self,
        name: &str,
        spec: &NetworkSpec,
    ) -> Result<NetworkRecord, ClusterError> {
        check_name("network name", name)?;
        check_plan(spec.subnet, spec.host_prefix)?;
        let mut settings = spec.settings.clone();
        match settings.encap {
            Encap::Gre if settings.udp_port.is_some() => return Err(ClusterError::BadNetwork {
                network: name.into(),
                detail:
                    "--udp-port is only used with --encap udp: add --encap udp or drop --udp-port"
                        .into(),
            }),
            Encap::Udp => {
                settings.udp_port.get_or_insert(GRE_IN_UDP_PORT);
            }
            Encap::Gre => {}
        }
        let rec = NetworkRecord {
            version: FORMAT_VERSION,
            subnet: spec.subnet,
            host_prefix: spec.host_prefix,
            settings,
            created: unix_now(),
        };
        let key = self.layout.config(name);
        let value = serde_json::to_vec(&rec).expect("network record serialises");
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, None)]);
        let r = self.block(self.txn("txn create network", txn))?;
        if !r.succeeded() {
            return Err(ClusterError::NetworkExists {
                network: name.into(),
                prefix: self.layout.prefix().into(),
            });
        }
        Ok(rec)
    }

    /// Every network under the prefix, in name order.
    pub fn list_networks(&self) -> Result<Vec<NetworkSummary>, ClusterError> {
        self.block(async {
            let (kvs, _) = self.get_prefix(self.layout.networks()).await?;
            let mut out: BTreeMap<String, NetworkSummary> = BTreeMap::new();
            for kv in &kvs {
                let Ok(key) = kv.key_str() else { continue };
                if let Some(name) = self.layout.network_of_config(key) {
                    let (config, error) = match parse_config(kv.value()) {
                        Ok(c) => (Some(c), None),
                        Err((_, d)) => (None, Some(d)),
                    };
                    out.insert(
                        name.to_string(),
                        NetworkSummary {
                            name: name.to_string(),
                            config,
                            error,
                            members: 0,
                        },
                    );
                }
            }
            for kv in &kvs {
                let Ok(key) = kv.key_str() else { continue };
                for (name, s) in out.iter_mut() {
                    if let Some(NetworkKey::Member(_)) = self.layout.classify(name, key) {
                        s.members += 1;
                    }
                }
            }
            Ok(out.into_values().collect())
        })
    }

    /// A network's settings, members (with last-seen from their leases), claims and
    /// allocation count.
    pub fn show_network(&self, name: &str) -> Result<NetworkInfo, ClusterError> {
        check_name("network name", name)?;
        self.block(async {
            let (kvs, _) = self.get_prefix(self.layout.network_dir(name)).await?;
            let config = self.config(name, &kvs).await?;
            let mut view = NetworkView::new(self.layout.clone(), name);
            let mut allocations = 0;
            for kv in &kvs {
                let Ok(key) = kv.key_str() else { continue };
                if let Some(NetworkKey::Allocation(_)) = self.layout.classify(name, key) {
                    allocations += 1;
                }
                view.apply(key, Some(crate::etcd::entry(kv)));
            }
            // Nobody is "this host" here: every valid member is listed.
            let nobody = Me {
                host: String::new(),
                underlay: Ipv4Addr::UNSPECIFIED,
            };
            let ev = view.evaluate(&nobody);
            let mut members = Vec::new();
            for p in ev.peers.values() {
                let e = view.member_entry(&p.host).expect("peer has an entry");
                let rec: Option<MemberRecord> = serde_json::from_slice(&e.value).ok();
                let (left, granted) = self.lease_ttl(e.lease).await?;
                members.push(MemberInfo {
                    host: p.host.clone(),
                    underlay: p.underlay,
                    range: p.range,
                    software: rec
                        .as_ref()
                        .map_or_else(String::new, |r| r.software.clone()),
                    started: rec.as_ref().map_or(0, |r| r.started),
                    last_seen_secs: left.zip(granted).map(|(l, g)| (g - l).max(0)),
                    ttl_left_secs: left,
                });
            }
            let mut claims = Vec::new();
            for (range, host) in &ev.claims {
                let lease = view.claim_entry(*range).map_or(0, |e| e.lease);
                let (left, _) = self.lease_ttl(lease).await?;
                claims.push(ClaimInfo {
                    range: *range,
                    host: host.clone(),
                    ttl_left_secs: left,
                });
            }
            Ok(NetworkInfo {
                name: name.into(),
                config,
                members,
                claims,
                allocations,
                rejected: ev.rejections.iter().map(|r| r.to_string()).collect(),
            })
        })
    }

    /// (seconds left, seconds granted) of a lease; `None`s without a lease or once it ended.
    async fn lease_ttl(&self, lease: i64) -> Result<(Option<i64>, Option<i64>), ClusterError> {
        if lease == 0 {
            return Ok((None, None));
        }
        let r = self
            .conn
            .call("lease time-to-live", |mut c| async move {
                c.lease_time_to_live(lease, None).await
            })
            .await?;
        Ok(if r.ttl() < 0 {
            (None, None)
        } else {
            (Some(r.ttl()), Some(r.granted_ttl()))
        })
    }

    /// Deletes a network. Without `force`, refused while any member record exists (checked in
    /// the same transaction as the delete). With `force`, members, range claims and
    /// allocations go too, and the range leases are revoked.
    pub fn delete_network(&self, name: &str, force: bool) -> Result<DeleteReport, ClusterError> {
        check_name("network name", name)?;
        let dir = self.layout.network_dir(name);
        let config = self.layout.config(name);
        let members = self.layout.members(name);
        self.block(async {
            let mut leases = BTreeSet::new();
            let mut when = vec![Compare::create_revision(
                config.clone(),
                CompareOp::Greater,
                0,
            )];
            if force {
                let (kvs, _) = self.get_prefix(self.layout.ranges(name)).await?;
                leases.extend(kvs.iter().map(|kv| kv.lease()).filter(|l| *l != 0));
            } else {
                // Over a range, a compare holds when it holds for every key in it, and an empty
                // range compares as one absent key: "no member exists".
                when.push(
                    Compare::create_revision(members.clone(), CompareOp::Equal, 0).with_prefix(),
                );
            }
            let txn = Txn::new()
                .when(when)
                .and_then([TxnOp::delete(dir, Some(DeleteOptions::new().with_prefix()))])
                .or_else([
                    TxnOp::get(config.clone(), Some(GetOptions::new().with_count_only())),
                    TxnOp::get(
                        members.clone(),
                        Some(GetOptions::new().with_prefix().with_keys_only()),
                    ),
                ]);
            let r = self.txn("txn delete network", txn).await?;
            let ops = r.op_responses();
            if r.succeeded() {
                let keys = match ops.first() {
                    Some(TxnOpResponse::Delete(d)) => d.deleted(),
                    _ => 0,
                };
                let mut revoked = 0;
                for id in leases {
                    // A lease already gone is fine: what it held is deleted.
                    if self
                        .conn
                        .call(
                            "lease revoke",
                            |mut c| async move { c.lease_revoke(id).await },
                        )
                        .await
                        .is_ok()
                    {
                        revoked += 1;
                    }
                }
                return Ok(DeleteReport {
                    keys,
                    leases_revoked: revoked,
                });
            }
            let exists = matches!(ops.first(), Some(TxnOpResponse::Get(g)) if g.count() > 0);
            if !exists {
                return Err(self.no_network(name));
            }
            let hosts = match ops.get(1) {
                Some(TxnOpResponse::Get(g)) => g
                    .kvs()
                    .iter()
                    .filter_map(|kv| kv.key_str().ok())
                    .filter_map(|k| k.strip_prefix(members.as_str()))
                    .map(String::from)
                    .collect(),
                _ => Vec::new(),
            };
            Err(ClusterError::HasMembers {
                network: name.into(),
                members: hosts,
            })
        })
    }

    /// Releases everything `host` holds in `network`: its member record, its range claims
    /// (and their leases) and its address allocations. Run it once the host's switch is
    /// stopped: a running one registers again.
    pub fn leave(&self, network: &str, host: &str) -> Result<LeaveReport, ClusterError> {
        check_name("network name", network)?;
        check_name("host id", host)?;
        self.block(async {
            for _ in 0..MAX_ATTEMPTS {
                let (kvs, _) = self.get_prefix(self.layout.network_dir(network)).await?;
                let config = self.config(network, &kvs).await?;
                let mut report = LeaveReport {
                    member: false,
                    ranges: Vec::new(),
                    allocations: Vec::new(),
                };
                let mut doomed: Vec<&KeyValue> = Vec::new();
                let mut leases = BTreeSet::new();
                for kv in &kvs {
                    let Ok(key) = kv.key_str() else { continue };
                    match self.layout.classify(network, key) {
                        Some(NetworkKey::Member(h)) if h == host => {
                            report.member = true;
                            doomed.push(kv);
                        }
                        Some(NetworkKey::Range(seg)) => {
                            if let Ok((r, h)) = validate_claim(seg, kv.value(), &config) {
                                if h == host {
                                    report.ranges.push(r);
                                    if kv.lease() != 0 {
                                        leases.insert(kv.lease());
                                    }
                                    doomed.push(kv);
                                }
                            }
                        }
                        Some(NetworkKey::Allocation(a)) => {
                            if let (Ok(addr), Ok(rec)) = (
                                a.parse::<Ipv4Addr>(),
                                serde_json::from_slice::<AllocationRecord>(kv.value()),
                            ) {
                                if rec.host == host {
                                    report.allocations.push(addr);
                                    doomed.push(kv);
                                }
                            }
                        }
                        _ => {}
                    }
                }
                let mut raced = false;
                for chunk in doomed.chunks(TXN_CHUNK) {
                    let when: Vec<Compare> = chunk
                        .iter()
                        .map(|kv| {
                            Compare::mod_revision(kv.key(), CompareOp::Equal, kv.mod_revision())
                        })
                        .collect();
                    let ops: Vec<TxnOp> = chunk
                        .iter()
                        .map(|kv| TxnOp::delete(kv.key(), None))
                        .collect();
                    let r = self
                        .txn("txn leave", Txn::new().when(when).and_then(ops))
                        .await?;
                    if !r.succeeded() {
                        raced = true;
                        break;
                    }
                }
                if raced {
                    continue;
                }
                for id in leases {
                    let _ = self
                        .conn
                        .call(
                            "lease revoke",
                            |mut c| async move { c.lease_revoke(id).await },
                        )
                        .await;
                }
                report.allocations.sort();
                return Ok(report);
            }
            Err(ClusterError::Contention {
                network: network.into(),
                what: "leaving",
                attempts: MAX_ATTEMPTS,
            })
        })
    }

    /// Allocates the next free container address of `host`'s range to `container`; the same
    /// container on the same host gets its existing address back.
    pub fn allocate(
        &self,
        network: &str,
        host: &str,
        container: &str,
    ) -> Result<Ipv4Addr, ClusterError> {
        self.allocate_with(network, host, container, None, None)
    }

    /// [`Admin::allocate`] with a name recorded beside the id, and optionally an explicit
    /// address (checked against the host's range and existing allocations).
    pub fn allocate_with(
        &self,
        network: &str,
        host: &str,
        container: &str,
        name: Option<&str>,
        address: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, ClusterError> {
        check_name("network name", network)?;
        check_name("host id", host)?;
        self.block(async {
            for _ in 0..MAX_ATTEMPTS {
                let (kvs, _) = self.get_prefix(self.layout.network_dir(network)).await?;
                let config = self.config(network, &kvs).await?;
                let mut held: Option<(Ipv4Net, &KeyValue)> = None;
                let mut taken: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
                for kv in &kvs {
                    let Ok(key) = kv.key_str() else { continue };
                    match self.layout.classify(network, key) {
                        Some(NetworkKey::Range(seg)) => {
                            if let Ok((r, h)) = validate_claim(seg, kv.value(), &config) {
                                if h == host && held.is_none_or(|(old, _)| r < old) {
                                    held = Some((r, kv));
                                }
                            }
                        }
                        Some(NetworkKey::Allocation(a)) => {
                            let Ok(addr) = a.parse::<Ipv4Addr>() else {
                                continue;
                            };
                            // A record we cannot read still holds its address.
                            let rec = serde_json::from_slice::<AllocationRecord>(kv.value()).ok();
                            if let Some(rec) = &rec {
                                if rec.host == host && rec.container == container {
                                    return Ok(addr);
                                }
                            }
                            let holder = rec.map_or_else(
                                || "an unreadable record".to_string(),
                                |r| format!("{} on host {}", r.container, r.host),
                            );
                            taken.insert(addr, holder);
                        }
                        _ => {}
                    }
                }
                let Some((range, claim)) = held else {
                    return Err(ClusterError::NoRange {
                        network: network.into(),
                        host: host.into(),
                    });
                };
                let addr = match address {
                    Some(a) => {
                        if !is_container_address(range, a) {
                            let first = u32::from(gateway(range)) + 1;
                            return Err(ClusterError::NotInRange {
                                network: network.into(),
                                host: host.into(),
                                address: a,
                                range,
                                first: first.into(),
                                last: (first + container_addresses(range).max(1) - 1).into(),
                                gateway: gateway(range),
                            });
                        }
                        if let Some(holder) = taken.get(&a) {
                            return Err(ClusterError::AddressTaken {
                                network: network.into(),
                                address: a,
                                holder: holder.clone(),
                            });
                        }
                        a
                    }
                    None => next_free(range, &taken.keys().copied().collect())?,
                };
                let rec = AllocationRecord {
                    version: FORMAT_VERSION,
                    host: host.into(),
                    container: container.into(),
                    name: name.map(String::from),
                    allocated: unix_now(),
                };
                let key = self.layout.allocation(network, addr);
                let txn = Txn::new()
                    .when([
                        Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                        // The host still holds the range it allocates from.
                        Compare::mod_revision(claim.key(), CompareOp::Equal, claim.mod_revision()),
                    ])
                    .and_then([TxnOp::put(
                        key,
                        serde_json::to_vec(&rec).expect("allocation serialises"),
                        None::<PutOptions>,
                    )]);
                if self.txn("txn allocate", txn).await?.succeeded() {
                    return Ok(addr);
                }
            }
            Err(ClusterError::Contention {
                network: network.into(),
                what: "allocating an address",
                attempts: MAX_ATTEMPTS,
            })
        })
    }

    /// Releases `container`'s address on `host`; `None` if it held none.
    pub fn release(
        &self,
        network: &str,
        host: &str,
        container: &str,
    ) -> Result<Option<Ipv4Addr>, ClusterError> {
        self.release_where(network, |_, rec| {
            rec.host == host && rec.container == container
        })
    }

    /// Releases `address` whoever holds it (Docker's IPAM releases by address); `None` if it
    /// was not allocated.
    pub fn release_address(
        &self,
        network: &str,
        address: Ipv4Addr,
    ) -> Result<Option<Ipv4Addr>, ClusterError> {
        self.release_where(network, |a, _| a == address)
    }

    fn release_where(
        &self,
        network: &str,
        pick: impl Fn(Ipv4Addr, &AllocationRecord) -> bool,
    ) -> Result<Option<Ipv4Addr>, ClusterError> {
        check_name("network name", network)?;
        self.block(async {
            for _ in 0..MAX_ATTEMPTS {
                let Some((addr, kv)) =
                    self.read_allocations(network)
                        .await?
                        .into_iter()
                        .find(|(a, kv)| {
                            serde_json::from_slice::<AllocationRecord>(kv.value())
                                .is_ok_and(|r| pick(*a, &r))
                        })
                else {
                    return Ok(None);
                };
                // Delete only the record we read, never one re-issued meanwhile.
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        kv.key(),
                        CompareOp::Equal,
                        kv.mod_revision(),
                    )])
                    .and_then([TxnOp::delete(kv.key(), None)]);
                if self.txn("txn release", txn).await?.succeeded() {
                    return Ok(Some(addr));
                }
            }
            Err(ClusterError::Contention {
                network: network.into(),
                what: "releasing an address",
                attempts: MAX_ATTEMPTS,
            })
        })
    }

    async fn read_allocations(
        &self,
        network: &str,
    ) -> Result<Vec<(Ipv4Addr, KeyValue)>, ClusterError> {
        let dir = self.layout.allocations(network);
        let (kvs, _) = self.get_prefix(dir.clone()).await?;
        Ok(kvs
            .into_iter()
            .filter_map(|kv| {
                let a = kv
                    .key_str()
                    .ok()?
                    .strip_prefix(dir.as_str())?
                    .parse()
                    .ok()?;
                Some((a, kv))
            })
            .collect())
    }

    /// Allocations in `network` (of `host` only, if given), in address order. Unreadable
    /// records are left out.
    pub fn allocations(
        &self,
        network: &str,
        host: Option<&str>,
    ) -> Result<Vec<Allocation>, ClusterError> {
        check_name("network name", network)?;
        self.block(async {
            let mut out: Vec<Allocation> = self
                .read_allocations(network)
                .await?
                .into_iter()
                .filter_map(|(address, kv)| {
                    let r: AllocationRecord = serde_json::from_slice(kv.value()).ok()?;
                    Some(Allocation {
                        address,
                        host: r.host,
                        container: r.container,
                        name: r.name,
                        allocated: r.allocated,
                    })
                })
                .filter(|a| host.is_none_or(|h| a.host == h))
                .collect();
            out.sort_by_key(|a| a.address);
            Ok(out)
        })
    }
}
