//! The agent: one thread per joined network, with its own current-thread tokio runtime, that
//! claims this host's range, keeps its member record alive and turns etcd's member list into
//! [`Membership`] calls.
//!
//! Life of the thread:
//! 1. join: connect, read the network directory at revision R, reconcile local settings, claim
//!    a range (one transaction per attempt), register the member record under a TTL lease,
//!    report peers. [`Agent::start`] returns once this succeeded (or failed for good).
//! 2. serve: watch the directory from R+1 and keep the lease alive, each change re-judged by
//!    [`NetworkView::evaluate`] and applied as a diff.
//! 3. on any etcd failure: keep every peer ("fail static"), note `unreachable_since`, reconnect
//!    with capped, jittered backoff, and go back to 1 from a fresh read (re-registering if the
//!    lease ended meanwhile). A compacted watch or an expired lease go back to 1 at once.
//!
//! Stopping releases nothing: the member record ends with its lease, the range claim stays for
//! a restart.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use ipnet::Ipv4Net;
use serde::Serialize;
use tokio::sync::watch;

use crate::backoff::{Backoff, LogLimiter};
use crate::counters::{CounterSnapshot, Counters};
use crate::error::ClusterError;
use crate::etcd::{Conn, EtcdOptions};
use crate::keys::{valid_name, Layout};
use crate::membership::Membership;
use crate::ranges::{choose_range, gateway, RangeChoice};
use crate::records::{
    unix_now, ClaimRecord, LocalSettings, MemberRecord, NetworkRecord, Settings, FORMAT_VERSION,
};
use crate::view::{diff, validate_claim, Evaluation, Me, NetworkView, Peer, PeerChange, Touched};
use std::sync::atomic::Ordering::Relaxed;

/// Everything an agent needs to join one network.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// How to reach etcd.
    pub etcd: EtcdOptions,
    /// Network to join.
    pub network: String,
    /// Host id; `None` uses the underlay address (hosts may share /etc/machine-id and
    /// hostname, as test namespaces and cloned VMs do, but never an underlay address).
    pub host: Option<String>,
    /// This host's underlay address, where peers send tunnels.
    pub underlay: Ipv4Addr,
    /// Local flags, checked against the network's settings.
    pub settings: LocalSettings,
    /// This host's public key (issue 16), published in its member record.
    pub public_key: Option<String>,
    /// Software version published in the member record.
    pub software: String,
    /// Member lease TTL (`--etcd-ttl`): a host that stops keeping it alive leaves the peers'
    /// view this long after its last keepalive. Whole seconds, at least 2.
    pub ttl: Duration,
    /// Range claim lease TTL: a host gone this long loses its range (flannel: 24 h).
    pub range_ttl: Duration,
    /// How long [`Agent::start`] retries an unreachable etcd before giving up.
    pub join_timeout: Duration,
    /// First reconnect delay.
    pub backoff_base: Duration,
    /// Longest reconnect delay.
    pub backoff_cap: Duration,
}

impl AgentConfig {
    /// Defaults: host id = underlay, TTL 10 s, range TTL 24 h, join timeout 30 s, backoff
    /// 200 ms doubling to 5 s.
    pub fn new(etcd: EtcdOptions, network: &str, underlay: Ipv4Addr) -> AgentConfig {
        AgentConfig {
            etcd,
            network: network.into(),
            host: None,
            underlay,
            settings: LocalSettings::default(),
            public_key: None,
            software: env!("CARGO_PKG_VERSION").into(),
            ttl: Duration::from_secs(10),
            range_ttl: Duration::from_secs(24 * 3600),
            join_timeout: Duration::from_secs(30),
            backoff_base: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(5),
        }
    }

    /// The host id in use.
    pub fn host_id(&self) -> String {
        self.host
            .clone()
            .unwrap_or_else(|| self.underlay.to_string())
    }
}

/// What joining settled: the switch configures its data plane and bridge from this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Joined {
    /// Network name.
    pub network: String,
    /// This host's id.
    pub host: String,
    /// The network's subnet.
    pub subnet: Ipv4Net,
    /// This host's range.
    pub range: Ipv4Net,
    /// The range's gateway address, for the bridge.
    pub gateway: Ipv4Addr,
    /// Settings to run the data plane with.
    pub settings: Settings,
}

/// What the agent knows now, for `dnetctl show`.
#[derive(Debug, Clone, Serialize)]
pub struct AgentStatus {
    /// Network name.
    pub network: String,
    /// This host's id.
    pub host: String,
    /// This host's range (it can change only if the claim was lost and re-made).
    pub range: Option<Ipv4Net>,
    /// Peers applied to the switch.
    pub peers: Vec<Peer>,
    /// Since when etcd has not answered (`None`: it answers).
    pub unreachable_since: Option<SystemTime>,
    /// The network's settings record is gone (deleted): no peers, no registration.
    pub network_absent: bool,
    /// The last error, if any, as logged.
    pub last_error: Option<String>,
    /// The counters.
    pub counters: CounterSnapshot,
}

#[derive(Debug, Default)]
struct Live {
    range: Option<Ipv4Net>,
    peers: Vec<Peer>,
    unreachable_since: Option<SystemTime>,
    network_absent: bool,
    last_error: Option<String>,
}

#[derive(Debug, Default)]
struct Shared {
    live: Mutex<Live>,
    counters: Counters,
}

/// A running agent. Dropping it stops it, as [`Agent::stop`].
pub struct Agent {
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    joined: Joined,
    network: String,
    host: String,
}

impl Agent {
    /// Joins `cfg.network` on a new thread and returns once this host holds a range and is
    /// registered. Fails at once on what retrying cannot fix (no such network, a contradicting
    /// flag, a full subnet), and after `cfg.join_timeout` if etcd does not answer.
    pub fn start(cfg: AgentConfig, membership: Box<dyn Membership>) -> Result<Agent, ClusterError> {
        if !valid_name(&cfg.network) {
            return Err(ClusterError::BadName {
                what: "network name",
                name: cfg.network,
            });
        }
        let host = cfg.host_id();
        if !valid_name(&host) {
            return Err(ClusterError::BadName {
                what: "host id",
                name: host,
            });
        }
        let network = cfg.network.clone();
        let shared = Arc::new(Shared::default());
        let (stop, stop_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("dnet-cluster-{network}"))
            .spawn(move || run(cfg, membership, thread_shared, stop_rx, ready_tx))
            .map_err(|e| ClusterError::Thread {
                network: network.clone(),
                what: format!("could not be started: {e}"),
            })?;
        let joined = match ready_rx.recv() {
            Ok(Ok(j)) => j,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(ClusterError::Thread {
                    network,
                    what: "ended before joining".into(),
                });
            }
        };
        Ok(Agent {
            stop,
            thread: Some(thread),
            shared,
            joined,
            network,
            host,
        })
    }

    /// What joining settled.
    pub fn joined(&self) -> &Joined {
        &self.joined
    }

    /// The current status and counters.
    pub fn status(&self) -> AgentStatus {
        let live = self.shared.live.lock().unwrap_or_else(|p| p.into_inner());
        AgentStatus {
            network: self.network.clone(),
            host: self.host.clone(),
            range: live.range,
            peers: live.peers.clone(),
            unreachable_since: live.unreachable_since,
            network_absent: live.network_absent,
            last_error: live.last_error.clone(),
            counters: self.shared.counters.snapshot(),
        }
    }

    /// Stops the thread. Releases nothing: the member record goes when its lease ends, the
    /// range stays claimed for a restart.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.shutdown();
    }
}

type Ready = std::sync::mpsc::Sender<Result<Joined, ClusterError>>;

fn run(
    cfg: AgentConfig,
    membership: Box<dyn Membership>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    ready: Ready,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(ClusterError::Thread {
                network: cfg.network.clone(),
                what: format!("could not build its runtime: {e}"),
            }));
            return;
        }
    };
    let mut runner = Runner::new(cfg, membership, shared);
    rt.block_on(runner.run(stop, ready));
}

/// Why serving stopped without an error.
enum Exit {
    Stop,
    /// Read everything again (compacted watch, lease gone, own record altered, network back).
    Resync,
}

struct Runner {
    cfg: AgentConfig,
    layout: Layout,
    me: Me,
    membership: Box<dyn Membership>,
    shared: Arc<Shared>,
    view: NetworkView,
    applied: BTreeMap<String, Peer>,
    settings: Option<Settings>,
    range: Option<Ipv4Net>,
    range_lease: i64,
    member_lease: i64,
    registered: bool,
    own_record: Vec<u8>,
    started: u64,
    absent: bool,
    reported: HashMap<String, i64>,
    next_endpoint: usize,
    limiter: LogLimiter,
    backoff: Backoff,
    rng: fastrand::Rng,
}

impl Runner {
    fn new(cfg: AgentConfig, membership: Box<dyn Membership>, shared: Arc<Shared>) -> Runner {
        let layout = Layout::new(&cfg.etcd.prefix);
        let me = Me {
            host: cfg.host_id(),
            underlay: cfg.underlay,
        };
        Runner {
            view: NetworkView::new(layout.clone(), &cfg.network),
            backoff: Backoff::new(cfg.backoff_base, cfg.backoff_cap),
            layout,
            me,
            membership,
            shared,
            applied: BTreeMap::new(),
            settings: None,
            range: None,
            range_lease: 0,
            member_lease: 0,
            registered: false,
            own_record: Vec::new(),
            started: unix_now(),
            absent: false,
            reported: HashMap::new(),
            next_endpoint: 0,
            limiter: LogLimiter::new(Duration::from_secs(10)),
            rng: fastrand::Rng::new(),
            cfg,
        }
    }

    fn ttl_secs(&self) -> i64 {
        (self.cfg.ttl.as_secs_f64().ceil() as i64).max(2)
    }

    async fn run(&mut self, mut stop: watch::Receiver<bool>, ready: Ready) {
        // Join: retry transient failures until the join timeout.
        let deadline = Instant::now() + self.cfg.join_timeout;
        let (mut conn, mut rev) = loop {
            let attempt = async {
                let conn = Conn::connect(&self.cfg.etcd, self.next_endpoint).await?;
                let rev = self.resync(&conn, true).await?;
                Ok::<_, ClusterError>((conn, rev))
            };
            match attempt.await {
                Ok(x) => {
                    // A join that needed retries found etcd again: say so at once, not only
                    // after the next failure.
                    self.reachable();
                    break x;
                }
                Err(e) if !e.is_transient() || Instant::now() >= deadline => {
                    let _ = ready.send(Err(e));
                    return;
                }
                Err(e) => {
                    self.failed(&e);
                    self.next_endpoint += 1;
                    if self.pause(&mut stop).await {
                        return;
                    }
                }
            }
        };
        let range = self.range.expect("joined with a range");
        let settings = self.settings.clone().expect("joined with settings");
        let subnet = self.view.evaluate(&self.me).config.map(|c| c.subnet);
        let _ = ready.send(Ok(Joined {
            network: self.cfg.network.clone(),
            host: self.me.host.clone(),
            subnet: subnet.expect("joined with a config"),
            range,
            gateway: gateway(range),
            settings,
        }));
        self.backoff.reset();
        loop {
            let result = match self.serve(&conn, rev, &mut stop).await {
                Ok(Exit::Stop) => return,
                Ok(Exit::Resync) => self.resync(&conn, false).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(r) => rev = r,
                Err(e) => {
                    // Fail static: the applied peers stay as they are until a fresh read.
                    // The first reconnect is immediate and starts at the next endpoint, so a
                    // dead member of a cluster costs one failover, not an outage.
                    self.next_endpoint = conn.pinned() + 1;
                    self.noted(&e);
                    let mut first = true;
                    loop {
                        if !first && self.pause(&mut stop).await {
                            return;
                        }
                        first = false;
                        let attempt = async {
                            let conn = Conn::connect(&self.cfg.etcd, self.next_endpoint).await?;
                            let rev = self.resync(&conn, false).await?;
                            Ok::<_, ClusterError>((conn, rev))
                        };
                        match attempt.await {
                            Ok((c, r)) => {
                                conn = c;
                                rev = r;
                                break;
                            }
                            Err(e) => {
                                self.failed(&e);
                                self.next_endpoint += 1;
                            }
                        }
                    }
                    self.shared.counters.reconnects.fetch_add(1, Relaxed);
                    log::info!(
                        "network {}: etcd answers again after {} attempt(s); view re-read",
                        self.cfg.network,
                        self.backoff.attempts()
                    );
                    self.backoff.reset();
                }
            }
            self.reachable();
        }
    }

    /// Waits the next backoff delay; true if asked to stop meanwhile.
    async fn pause(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        let d = self.backoff.next_delay(self.rng.f64());
        tokio::select! {
            _ = stop.changed() => true,
            _ = tokio::time::sleep(d) => *stop.borrow(),
        }
    }

    /// A failure with no endpoint left to try: etcd counts as unreachable from now on.
    fn failed(&mut self, e: &ClusterError) {
        if e.is_transient() {
            let mut live = self.shared.live.lock().unwrap_or_else(|p| p.into_inner());
            live.unreachable_since.get_or_insert_with(SystemTime::now);
        }
        self.noted(e);
    }

    /// Counts and logs (rate-limited) a failure.
    fn noted(&mut self, e: &ClusterError) {
        let msg = e.to_string();
        {
            let mut live = self.shared.live.lock().unwrap_or_else(|p| p.into_inner());
            if e.is_transient() {
                self.shared.counters.etcd_errors.fetch_add(1, Relaxed);
            }
            live.last_error = Some(msg.clone());
        }
        if let Some(suppressed) = self.limiter.admit("etcd_error", Instant::now()) {
            log::warn!(
                "network {}: {msg}; keeping the {} known peer(s) and retrying{}",
                self.cfg.network,
                self.applied.len(),
                suppressed_note(suppressed)
            );
        }
    }

    fn reachable(&mut self) {
        let mut live = self.shared.live.lock().unwrap_or_else(|p| p.into_inner());
        live.unreachable_since = None;
    }

    /// Reads the whole network directory and brings this host's claim and registration up to
    /// date; returns the revision read.
    async fn resync(&mut self, conn: &Conn, joining: bool) -> Result<i64, ClusterError> {
        let dir = self.layout.network_dir(&self.cfg.network);
        let resp = conn
            .call("get network", |mut c| {
                let dir = dir.clone();
                async move { c.get(dir, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let rev = resp.header().map_or(0, |h| h.revision());
        self.view.clear();
        for kv in resp.kvs() {
            if let Ok(k) = kv.key_str() {
                self.view.apply(k, Some(crate::etcd::entry(kv)));
            }
        }
        let ev = self.view.evaluate(&self.me);
        let config = match (&ev.config, self.view.has_config()) {
            (Some(c), true) => c.clone(),
            (_, present) => {
                if joining {
                    return Err(if present {
                        ClusterError::BadNetwork {
                            network: self.cfg.network.clone(),
                            detail: ev
                                .rejections
                                .first()
                                .map_or_else(String::new, |r| r.detail.clone()),
                        }
                    } else {
                        ClusterError::NoNetwork {
                            network: self.cfg.network.clone(),
                            prefix: self.layout.prefix().into(),
                        }
                    });
                }
                self.network_absent(true);
                self.apply_evaluation(Evaluation::default());
                return Ok(rev);
            }
        };
        if joining && config.settings.encrypt && self.cfg.public_key.is_none() {
            // Its record would be skipped by every member (missing_public_key): refused
            // before it is written.
            return Err(ClusterError::NoPublicKey {
                network: self.cfg.network.clone(),
            });
        }
        if joining {
            self.settings = Some(
                self.cfg
                    .settings
                    .reconcile(&self.cfg.network, &config.settings)?,
            );
        }
        self.network_absent(false);
        self.ensure_range(conn, &config, ev.claims.clone()).await?;
        self.ensure_member(conn).await?;
        self.apply_evaluation(ev);
        Ok(rev)
    }

    fn network_absent(&mut self, absent: bool) {
        if absent && !self.absent {
            log::error!(
                "network {} is gone from etcd (deleted?): its peers are removed; this host re-registers when it is created again",
                self.cfg.network
            );
        }
        self.absent = absent;
        let mut live = self.shared.live.lock().unwrap_or_else(|p| p.into_inner());
        live.network_absent = absent;
    }

    /// Keeps the range this host holds, or claims one: compare "the range key does not exist",
    /// then put it under the range lease, in one transaction, so two hosts can never both win.
    async fn ensure_range(
        &mut self,
        conn: &Conn,
        config: &NetworkRecord,
        mut claims: BTreeMap<Ipv4Net, String>,
    ) -> Result<(), ClusterError> {
        let ranges = crate::ranges::check_plan(config.subnet, config.host_prefix)?;
        let attempts = ranges.saturating_add(1).min(1024);
        for _ in 0..attempts {
            match choose_range(
                config.subnet,
                config.host_prefix,
                &claims,
                &self.me.host,
                self.range,
            )? {
                RangeChoice::Held(r) => {
                    let lease = self.view.claim_entry(r).map_or(0, |e| e.lease);
                    self.range_lease = lease;
                    if lease != 0 {
                        self.renew_range(conn).await?;
                    }
                    self.set_range(r);
                    return Ok(());
                }
                RangeChoice::Free(r) => {
                    if self.range_lease == 0 || !self.lease_alive(conn, self.range_lease).await? {
                        let ttl = self.cfg.range_ttl.as_secs().max(2) as i64;
                        let g = conn
                            .call("lease grant", |mut c| async move {
                                c.lease_grant(ttl, None).await
                            })
                            .await?;
                        self.range_lease = g.id();
                    }
                    let key = self.layout.range(&self.cfg.network, r);
                    let rec = ClaimRecord {
                        version: FORMAT_VERSION,
                        host: self.me.host.clone(),
                        underlay: self.me.underlay.to_string(),
                        claimed: unix_now(),
                    };
                    let value = serde_json::to_vec(&rec).expect("claim serialises");
                    let lease = self.range_lease;
                    let ranges_dir = self.layout.ranges(&self.cfg.network);
                    let txn = Txn::new()
                        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(
                            key,
                            value,
                            Some(PutOptions::new().with_lease(lease)),
                        )])
                        .or_else([TxnOp::get(
                            ranges_dir,
                            Some(GetOptions::new().with_prefix()),
                        )]);
                    let resp = conn
                        .call("txn claim range", |mut c| {
                            let txn = txn.clone();
                            async move { c.txn(txn).await }
                        })
                        .await?;
                    if resp.succeeded() {
                        log::info!(
                            "network {}: host {} claimed range {r}",
                            self.cfg.network,
                            self.me.host
                        );
                        self.set_range(r);
                        return Ok(());
                    }
                    self.shared.counters.claim_conflicts.fetch_add(1, Relaxed);
                    claims = BTreeMap::new();
                    for op in resp.op_responses() {
                        if let TxnOpResponse::Get(g) = op {
                            for kv in g.kvs() {
                                let Ok(k) = kv.key_str() else { continue };
                                let seg = k.rsplit('/').next().unwrap_or("");
                                if let Ok((range, host)) = validate_claim(seg, kv.value(), config) {
                                    claims.insert(range, host);
                                }
                                // An invalid claim still blocks its range key.
                                if let Some(range) = crate::keys::parse_range_segment(seg) {
                                    claims.entry(range).or_insert_with(|| "?".into());
                                }
                            }
                        }
                    }
                }
            }
        }
        Err(ClusterError::Contention {
            network: self.cfg.network.clone(),
            what: "claiming a range",
            attempts,
        })
    }

    fn set_range(&mut self, r: Ipv4Net) {
        if let Some(old) = self.range {
            if old != r {
                log::warn!(
                    "network {}: host {}'s range moved from {old} to {r} (its claim was lost); containers on {old} keep their addresses but new ones come from {r}",
                    self.cfg.network,
                    self.me.host
                );
            }
        }
        self.range = Some(r);
        let mut live = self.shared.live.lock().unwrap_or_else(|p| p.into_inner());
        live.range = Some(r);
    }

    async fn lease_alive(&self, conn: &Conn, id: i64) -> Result<bool, ClusterError> {
        let r = conn
            .call("lease time-to-live", |mut c| async move {
                c.lease_time_to_live(id, None).await
            })
            .await?;
        Ok(r.ttl() > 0)
    }

    /// One keepalive of the long range lease (it needs renewing only every few hours).
    async fn renew_range(&self, conn: &Conn) -> Result<(), ClusterError> {
        let id = self.range_lease;
        conn.call("range lease keepalive", |mut c| async move {
            let (mut keeper, mut stream) = c.lease_keep_alive(id).await?;
            keeper.keep_alive().await?;
            stream.message().await.map(|_| ())
        })
        .await
    }

    /// Writes this host's member record under a live member lease: the one it had, the one a
    /// previous run left (a restart within the TTL is invisible to peers), or a new one.
    async fn ensure_member(&mut self, conn: &Conn) -> Result<(), ClusterError> {
        if self.member_lease != 0 && !self.lease_alive(conn, self.member_lease).await? {
            self.member_lease = 0;
            if self.registered {
                self.shared
                    .counters
                    .lease_reregistrations
                    .fetch_add(1, Relaxed);
                log::warn!(
                    "network {}: host {}'s member lease ended meanwhile; registering again",
                    self.cfg.network,
                    self.me.host
                );
            }
        }
        if self.member_lease == 0 {
            let left = self.view.member_entry(&self.me.host).map_or(0, |e| e.lease);
            if left != 0 && self.lease_alive(conn, left).await? {
                self.member_lease = left;
            } else {
                let ttl = self.ttl_secs();
                let g = conn
                    .call("lease grant", |mut c| async move {
                        c.lease_grant(ttl, None).await
                    })
                    .await?;
                self.member_lease = g.id();
            }
        }
        let rec = MemberRecord {
            version: FORMAT_VERSION,
            host: self.me.host.clone(),
            underlay: self.me.underlay.to_string(),
            range: self.range.expect("range before member").to_string(),
            software: self.cfg.software.clone(),
            started: self.started,
            settings: self.settings.clone().unwrap_or_default(),
            public_key: self.cfg.public_key.clone(),
        };
        let value = serde_json::to_vec(&rec).expect("member serialises");
        let key = self.layout.member(&self.cfg.network, &self.me.host);
        let lease = self.member_lease;
        let v = value.clone();
        conn.call("put member", |mut c| {
            let (key, v) = (key.clone(), v.clone());
            async move {
                c.put(key, v, Some(PutOptions::new().with_lease(lease)))
                    .await
            }
        })
        .await?;
        self.own_record = value;
        self.registered = true;
        Ok(())
    }

    /// Counts and logs new rejections, then applies the peer diff.
    fn apply_evaluation(&mut self, ev: Evaluation) {
        let now = Instant::now();
        let mut still = HashMap::new();
        for r in &ev.rejections {
            if self.reported.get(&r.key) != Some(&r.mod_revision) {
                self.shared.counters.reject(r.kind);
                if let Some(s) = self.limiter.admit(r.kind.name(), now) {
                    log::warn!("network {}: {r}{}", self.cfg.network, suppressed_note(s));
                }
            }
            still.insert(r.key.clone(), r.mod_revision);
        }
        self.reported = still;
        for change in diff(&self.applied, &ev.peers) {
            match change {
                PeerChange::Up(p) => {
                    log::info!(
                        "network {}: peer {} up at {} (range {})",
                        self.cfg.network,
                        p.host,
                        p.underlay,
                        p.range
                    );
                    self.shared.counters.peer_up.fetch_add(1, Relaxed);
                    self.membership.peer_up(&self.cfg.network, &p);
                }
                PeerChange::Down(p) => {
                    log::info!(
                        "network {}: peer {} at {} down",
                        self.cfg.network,
                        p.host,
                        p.underlay
                    );
                    self.shared.counters.peer_down.fetch_add(1, Relaxed);
                    self.membership.peer_down(&self.cfg.network, &p);
                }
            }
        }
        self.applied = ev.peers;
        let mut live = self.shared.live.lock().unwrap_or_else(|p| p.into_inner());
        live.peers = self.applied.values().cloned().collect();
    }

    /// Watches from `rev + 1` and keeps the member lease alive until stopped, told to resync,
    /// or failing.
    async fn serve(
        &mut self,
        conn: &Conn,
        rev: i64,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Exit, ClusterError> {
        let dir = self.layout.network_dir(&self.cfg.network);
        let mut watch = conn
            .call("watch", |mut c| {
                let dir = dir.clone();
                async move {
                    c.watch(
                        dir,
                        Some(
                            WatchOptions::new()
                                .with_prefix()
                                .with_start_revision(rev + 1),
                        ),
                    )
                    .await
                }
            })
            .await?;
        let ttl = Duration::from_secs(self.ttl_secs() as u64);
        // Without a registration (network absent) there is no lease to keep alive.
        let mut keepalive = if self.registered && !self.absent {
            let id = self.member_lease;
            Some(
                conn.call("lease keepalive", |mut c| async move {
                    c.lease_keep_alive(id).await
                })
                .await?,
            )
        } else {
            None
        };
        let mut tick = tokio::time::interval(ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut answered = Instant::now();
        let range_every = (self.cfg.range_ttl / 4).min(Duration::from_secs(3600));
        let mut range_renewed = Instant::now();
        let own_key = self.layout.member(&self.cfg.network, &self.me.host);
        loop {
            tokio::select! {
                _ = stop.changed() => return Ok(Exit::Stop),
                _ = tick.tick() => {
                    if let Some((keeper, _)) = keepalive.as_mut() {
                        if answered.elapsed() > ttl {
                            return Err(conn.timeout("lease keepalive", ttl));
                        }
                        keeper.keep_alive().await.map_err(|e| conn.error("lease keepalive", e))?;
                    }
                    if self.range_lease != 0 && range_renewed.elapsed() >= range_every {
                        self.renew_range(conn).await?;
                        range_renewed = Instant::now();
                    }
                }
                msg = next_keepalive(&mut keepalive) => {
                    match msg.map_err(|e| conn.error("lease keepalive", e))? {
                        Some(r) if r.ttl() > 0 => answered = Instant::now(),
                        Some(_) => {
                            // The lease is gone: registering again is a fresh read's job.
                            return Ok(Exit::Resync);
                        }
                        None => return Err(conn.error("lease keepalive", etcd_client::Error::LeaseKeepAliveError("stream closed".into()))),
                    }
                }
                msg = watch.message() => {
                    let resp = msg
                        .map_err(|e| conn.error("watch", e))?
                        .ok_or_else(|| conn.error("watch", etcd_client::Error::WatchError("stream closed".into())))?;
                    if resp.compact_revision() > 0 {
                        self.shared.counters.watch_compactions.fetch_add(1, Relaxed);
                        log::warn!(
                            "network {}: watch revision {} was compacted (oldest kept {}); reading everything again",
                            self.cfg.network, rev + 1, resp.compact_revision()
                        );
                        return Ok(Exit::Resync);
                    }
                    if resp.canceled() {
                        return Err(conn.error("watch", etcd_client::Error::WatchError(format!("cancelled by etcd: {}", resp.cancel_reason()))));
                    }
                    let was_absent = self.absent;
                    let mut own_touched = false;
                    let mut config_touched = false;
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let Ok(key) = kv.key_str() else { continue };
                        let e = match ev.event_type() {
                            EventType::Put => Some(crate::etcd::entry(kv)),
                            EventType::Delete => None,
                        };
                        if key == own_key && e.as_ref().map(|e| &e.value) != Some(&self.own_record) {
                            own_touched = true;
                        }
                        if self.view.apply(key, e) == Touched::Config {
                            config_touched = true;
                        }
                    }
                    if config_touched && was_absent && self.view.has_config() {
                        return Ok(Exit::Resync);
                    }
                    let ev = self.view.evaluate(&self.me);
                    if ev.config.is_none() || !self.view.has_config() {
                        self.network_absent(true);
                        self.apply_evaluation(Evaluation::default());
                        continue;
                    }
                    self.apply_evaluation(ev);
                    if own_touched && !self.absent {
                        self.shared.counters.own_record_restored.fetch_add(1, Relaxed);
                        log::warn!(
                            "network {}: this host's member record {own_key} was deleted or changed by someone else; writing it again",
                            self.cfg.network
                        );
                        return Ok(Exit::Resync);
                    }
                }
            }
        }
    }
}

async fn next_keepalive(
    ka: &mut Option<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)>,
) -> Result<Option<etcd_client::LeaseKeepAliveResponse>, etcd_client::Error> {
    match ka {
        Some((_, stream)) => stream.message().await,
        None => std::future::pending().await,
    }
}

fn suppressed_note(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} similar lines suppressed)")
    }
}
