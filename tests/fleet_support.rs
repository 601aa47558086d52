//! Support for the fleet tests: real etcd members on the testbed's underlay (10.200.0.100 and
//! up, on the underlay bridge's namespace), dnet-switches that join a network through them, and
//! the real dnetctl to create networks and attach containers.
//!
//! etcd runs as processes of the [`Testbed`] (killed by PID at its teardown) with its data in
//! tmpfs; [`Etcd`]'s `Drop` stops them first and removes the data.

use dnet_proto::{FleetInfo, PortKind, Request, Response, Show};
use dnet_testbed::{Process, Switch, SwitchOptions, Testbed};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Underlay address of etcd member `i` (0-based).
pub fn etcd_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 200, 0, 100 + i as u8)
}

/// Paths of generated TLS files.
#[derive(Clone, Debug)]
pub struct Certs {
    /// CA certificate.
    pub ca: PathBuf,
    /// etcd's server certificate (for 10.200.0.100-102).
    pub server_cert: PathBuf,
    /// Its key.
    pub server_key: PathBuf,
    /// A client certificate (CN root).
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

/// Generates a CA, a server certificate for etcd's underlay addresses and a client
/// certificate into `dir`.
pub fn make_certs(dir: &Path) -> Certs {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "dnet e2e CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf = |cn: &str, sans: Vec<SanType>| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.subject_alt_names = sans;
        let cert = p.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_pem, server_key) = leaf(
        "etcd",
        (0..3)
            .map(|i| SanType::IpAddress(std::net::IpAddr::V4(etcd_ip(i))))
            .collect(),
    );
    let (client_pem, client_key) = leaf("root", vec![]);
    let w = |name: &str, s: &str| {
        let p = dir.join(name);
        std::fs::write(&p, s).unwrap();
        p
    };
    Certs {
        ca: w("ca.pem", &ca.pem()),
        server_cert: w("server.pem", &server_pem),
        server_key: w("server-key.pem", &server_key),
        client_cert: w("client.pem", &client_pem),
        client_key: w("client-key.pem", &client_key),
    }
}

struct Member {
    name: String,
    ip: Ipv4Addr,
    process: Option<Process>,
}

/// One or more etcd members on the testbed's underlay.
pub struct Etcd<'t> {
    tb: &'t Testbed,
    /// The underlay bridge's namespace, where etcd runs.
    pub ns: String,
    /// Data directories (tmpfs), removed on drop.
    pub dir: PathBuf,
    /// TLS files when started with TLS (client certificates required).
    pub certs: Option<Certs>,
    members: Vec<Member>,
}

impl<'t> Etcd<'t> {
    /// One member at 10.200.0.100:2379.
    pub fn single(tb: &'t Testbed) -> Etcd<'t> {
        Etcd::start(tb, 1, false)
    }

    /// `n` members at 10.200.0.100, .101, ...
    pub fn cluster(tb: &'t Testbed, n: usize) -> Etcd<'t> {
        Etcd::start(tb, n, false)
    }

    /// One member with TLS and client-certificate authentication.
    pub fn tls(tb: &'t Testbed) -> Etcd<'t> {
        Etcd::start(tb, 1, true)
    }

    fn start(tb: &'t Testbed, n: usize, tls: bool) -> Etcd<'t> {
        let mut ns = String::new();
        for i in 0..n {
            ns = tb
                .add_underlay_address(etcd_ip(i))
                .expect("etcd address on the underlay");
        }
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("{}-etcd", tb.prefix()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut e = Etcd {
            tb,
            ns,
            certs: tls.then(|| make_certs(&dir)),
            dir,
            members: (0..n)
                .map(|i| Member {
                    name: format!("e{i}"),
                    ip: etcd_ip(i),
                    process: None,
                })
                .collect(),
        };
        for i in 0..n {
            e.spawn(i);
        }
        e.wait_healthy();
        e
    }

    fn scheme(&self) -> &'static str {
        if self.certs.is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn spawn(&mut self, i: usize) {
        let cluster: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://{}:2380", m.name, m.ip))
            .collect();
        let m = &self.members[i];
        let client = format!("{}://{}:2379", self.scheme(), m.ip);
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", &m.name])
            .arg("--data-dir")
            .arg(self.dir.join(&m.name))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &format!("http://{}:2380", m.ip)])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://{}:2380", m.ip),
            ])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--initial-cluster-token", self.tb.prefix()])
            .args(["--log-level", "warn", "--logger", "zap"]);
        if let Some(c) = &self.certs {
            cmd.arg("--cert-file")
                .arg(&c.server_cert)
                .arg("--key-file")
                .arg(&c.server_key)
                .arg("--trusted-ca-file")
                .arg(&c.ca)
                .arg("--client-cert-auth");
        }
        let p = self
            .tb
            .spawn_in(&self.ns, "etcd", &cmd)
            .expect("start etcd");
        self.members[i].process = Some(p);
    }

    /// Client URLs of every member, comma-separated, as `--etcd` takes them.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}://{}:2379", self.scheme(), m.ip))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `--etcd URLS` and, with TLS, the certificate options: for dnet-switch and dnetctl.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec!["--etcd".to_string(), self.endpoints()];
        if let Some(c) = &self.certs {
            for (flag, p) in [
                ("--etcd-cacert", &c.ca),
                ("--etcd-cert", &c.client_cert),
                ("--etcd-key", &c.client_key),
            ] {
                a.push(flag.into());
                a.push(p.display().to_string());
            }
        }
        a
    }

    /// etcdctl against the running members; panics on failure, returns stdout.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = self.ctl_command(args).output().expect("run etcdctl");
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ctl_command(&self, args: &[&str]) -> Command {
        let live: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.process.is_some())
            .map(|m| format!("{}://{}:2379", self.scheme(), m.ip))
            .collect();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "etcdctl"])
            .args(["--endpoints", &live.join(",")])
            .args(["--command-timeout", "3s"]);
        if let Some(c) = &self.certs {
            cmd.arg("--cacert")
                .arg(&c.ca)
                .arg("--cert")
                .arg(&c.client_cert)
                .arg("--key")
                .arg(&c.client_key);
        }
        cmd.args(args).env("ETCDCTL_API", "3");
        cmd
    }

    /// Polls until every running member reports healthy.
    pub fn wait_healthy(&self) {
        let ok = wait_for(Duration::from_secs(20), || {
            self.ctl_command(&["endpoint", "health"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        assert!(ok, "etcd in {} not healthy within 20 s", self.ns);
    }

    /// Kills member `i` (SIGKILL), keeping its data.
    pub fn kill(&mut self, i: usize) {
        if let Some(p) = self.members[i].process.take() {
            p.kill().expect("kill etcd");
        }
    }

    /// Starts member `i` again on its data and waits until the members are healthy.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_healthy();
    }
}

impl Drop for Etcd<'_> {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            if let Some(p) = self.members[i].process.take() {
                let _ = p.kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it holds.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The dnetctl binary next to dnet-switch in the target directory.
pub fn dnetctl_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("DNETCTL_BIN") {
        return PathBuf::from(p);
    }
    let p = dnet_testbed::switch_binary()
        .expect("dnet-switch binary")
        .with_file_name("dnetctl");
    assert!(
        p.is_file(),
        "{} not found: run `cargo build --workspace` first",
        p.display()
    );
    p
}

/// Runs `ip netns exec NS dnetctl ARGS...` and returns its output (echoed to the test log).
pub fn dnetctl(ns: &str, args: &[&str]) -> Output {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(dnetctl_bin())
        .args(args)
        .env_remove("DNET_ETCD")
        .output()
        .expect("running dnetctl");
    eprintln!(
        "$ dnetctl {}\n{}{}-> {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status
    );
    out
}

/// Runs dnetctl, expects success, returns stdout.
pub fn dnetctl_ok(ns: &str, args: &[&str]) -> String {
    let out = dnetctl(ns, args);
    assert!(
        out.status.success(),
        "dnetctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dnetctl network create NAME --subnet SUBNET ARGS...` against `etcd`, from its namespace.
pub fn create_network(etcd: &Etcd, name: &str, subnet: &str, args: &[&str]) {
    let mut a: Vec<String> = vec![
        "network".into(),
        "create".into(),
        name.into(),
        "--subnet".into(),
        subnet.into(),
    ];
    a.extend(args.iter().map(|s| s.to_string()));
    a.extend(etcd.args());
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    dnetctl_ok(&etcd.ns, &a);
}

/// Member TTL the fleet tests run with (seconds): short, so departures are quick to see.
pub const TTL: u64 = 3;

/// Options for a switch that joins `network` through `etcd` and has no `--peer`.
pub fn fleet_switch(etcd: &Etcd, network: &str, extra: &[&str]) -> SwitchOptions {
    let mut extra_args = etcd.args();
    extra_args.extend(
        [
            "--network",
            network,
            "--etcd-ttl",
            &TTL.to_string(),
            "--workers",
            "1",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    extra_args.extend(extra.iter().map(|s| s.to_string()));
    SwitchOptions {
        peers: Some(Vec::new()),
        log_level: "info".into(),
        extra_args,
        ..SwitchOptions::default()
    }
}

/// The switch's `show`.
pub fn show(sw: &Switch) -> Show {
    match dnet_proto::request(&sw.socket, &Request::Show, Duration::from_secs(5)) {
        Ok(Response::Show(s)) => s,
        other => panic!("show of switch in {}: {other:?}\n{}", sw.ns, sw.stderr()),
    }
}

/// The switch's etcd status.
pub fn fleet(sw: &Switch) -> FleetInfo {
    *show(sw)
        .fleet
        .unwrap_or_else(|| panic!("switch in {} is in no network", sw.ns))
}

/// The switch's tunnels, by peer address, with their origin.
pub fn tunnels(sw: &Switch) -> BTreeSet<(Ipv4Addr, String)> {
    show(sw)
        .ports
        .into_iter()
        .filter(|p| p.kind == PortKind::Tunnel)
        .map(|p| (p.peer.expect("tunnel peer"), p.origin.unwrap_or_default()))
        .collect()
}

/// The peers the switch has a tunnel to, or `None` while it does not answer (yet).
pub fn try_peers(sw: &Switch) -> Option<BTreeSet<Ipv4Addr>> {
    match dnet_proto::request(&sw.socket, &Request::Show, Duration::from_secs(5)) {
        Ok(Response::Show(s)) => Some(
            s.ports
                .into_iter()
                .filter(|p| p.kind == PortKind::Tunnel)
                .filter_map(|p| p.peer)
                .collect(),
        ),
        _ => None,
    }
}

/// The peers the switch has a tunnel to, whatever their origin.
pub fn peers(sw: &Switch) -> BTreeSet<Ipv4Addr> {
    tunnels(sw).into_iter().map(|(a, _)| a).collect()
}

/// Waits until `sw` has tunnels of origin etcd to exactly `want`; panics with its log if not
/// within `timeout`.
pub fn wait_etcd_peers(sw: &Switch, want: &BTreeSet<Ipv4Addr>, timeout: Duration) {
    let ok = wait_for(timeout, || {
        let t = tunnels(sw);
        t.iter().all(|(_, o)| o == "etcd")
            && t.iter().map(|(a, _)| *a).collect::<BTreeSet<_>>() == *want
    });
    assert!(
        ok,
        "switch in {} has tunnels {:?}, not {want:?} (origin etcd), after {timeout:?}\n{}",
        sw.ns,
        tunnels(sw),
        sw.stderr()
    );
}

/// What `dnetctl attach -j` printed.
#[derive(Debug, Clone)]
pub struct AttachedInfo {
    /// The address.
    pub address: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// The host's range it came from.
    pub range: Option<String>,
    /// The container interface's MAC.
    pub mac: String,
}

/// `dnetctl attach CONTAINER [ADDR] --socket S -j` in host namespace `host_ns`.
pub fn attach(host_ns: &str, sw: &Switch, container: &str, addr: Option<&str>) -> AttachedInfo {
    let sock = sw.socket.display().to_string();
    let mut args = vec!["attach", container];
    if let Some(a) = addr {
        args.push(a);
    }
    args.extend(["--socket", &sock, "-j"]);
    let out = dnetctl_ok(host_ns, &args);
    let v: serde_json::Value = serde_json::from_str(&out).expect("attach -j prints JSON");
    let (a, p) = v["address"]
        .as_str()
        .and_then(|s| s.split_once('/'))
        .expect("address a.b.c.d/len");
    AttachedInfo {
        address: a.parse().unwrap(),
        prefix: p.parse().unwrap(),
        range: v["range"].as_str().map(String::from),
        mac: v["mac"].as_str().unwrap_or_default().to_string(),
    }
}

/// Whether `addr` is inside `cidr` (`a.b.c.d/len`).
pub fn in_cidr(addr: Ipv4Addr, cidr: &str) -> bool {
    let (net, len) = cidr.split_once('/').expect("a.b.c.d/len");
    let net: Ipv4Addr = net.parse().unwrap();
    let len: u32 = len.parse().unwrap();
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(addr) & mask == u32::from(net) & mask
}

/// `count` ICMP echoes from namespace `ns` to `dst`, one every `interval` (each waiting at
/// most 1 s for its reply, so a lost one does not shift the schedule by more than that);
/// returns (sent, received).
pub fn paced_ping(ns: &str, dst: Ipv4Addr, count: u32, interval: Duration) -> (u32, u32) {
    let start = Instant::now();
    let (mut sent, mut received) = (0, 0);
    for k in 0..count {
        // Pacing, not waiting for a condition: echo k leaves at start + k * interval.
        let at = start + interval * k;
        if let Some(d) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let r = dnet_testbed::traffic::ping(ns, dst, 1, Duration::from_secs(1)).expect("ping");
        sent += r.sent;
        received += r.received;
    }
    (sent, received)
}
