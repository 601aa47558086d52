//! The network-namespace testbed: simulated hosts, their containers and an underlay, all on one
//! machine, plus the `dnet-switch` processes that join them. Shared by `dnetctl demo` and the
//! end-to-end tests.
//!
//! Topology for `n` hosts (letters a, b, c, ...; host `i` gets number `i + 1`):
//!
//! ```text
//!  container ns <p>ac          host ns <p>ah                          host ns <p>bh
//!  eth0 10.77.0.1/24 ──veth── vc0 ┐                                 ...
//!                                 br0 (+ dnet0 TAP once a switch runs)
//!                             ul0 10.200.0.1/24 ──── underlay ──── ul0 10.200.0.2/24
//! ```
//!
//! With two hosts the underlay is one veth pair between the host namespaces. With three or more
//! it is a kernel bridge in an extra namespace `<p>u` with one veth per host, because a single
//! shared segment is what a real L2 underlay looks like to the switches.
//!
//! Everything the testbed creates is recorded in one place (one mutex-guarded list) *as it is created*,
//! and [`Testbed`]'s `Drop` (or a [`TeardownHandle`] from a signal handler) undoes exactly that:
//! it kills its own processes by PID and deletes only namespaces it created.

use crate::cmd::{ip, ip_in, ipn};
use crate::error::{one_line, Error, Result};
use crate::netns::in_netns;
use dnet_proto::{PortKind, PortStats, Stats};
use std::fs::{self, File};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Name of the kernel bridge in each host namespace (the `docker0` of a simulated host).
pub const BRIDGE: &str = "br0";
/// TAP name the testbed gives each switch unless told otherwise.
pub const DEFAULT_TAP: &str = "dnet0";
/// Underlay interface in each host namespace.
pub const UNDERLAY_IF: &str = "ul0";
/// Container-side interface in each container namespace.
pub const CONTAINER_IF: &str = "eth0";
/// Host-side end of the container veth, enslaved to [`BRIDGE`].
const CONTAINER_PEER_IF: &str = "vc0";
/// Bridge of the shared underlay segment (three or more hosts).
const UNDERLAY_BRIDGE: &str = "ulbr";
/// Where switches put their control sockets (the switch's own default directory).
const SOCKET_DIR: &str = "/run/dnet";
/// How long a switch gets to answer its control socket after start.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long teardown waits after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);
/// Poll period of the wait loops (process exit, control socket).
const POLL: Duration = Duration::from_millis(20);
/// Largest host count: addresses are `.1` to `.N` and letters `a` to `z`, then `A` to `Z`
/// (the fleet benchmark runs 32 hosts).
const MAX_HOSTS: usize = 52;

/// Distinguishes testbeds of one process (tests run in parallel threads).
static TESTBED_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Returns true if the effective user is root (the testbed needs CAP_NET_ADMIN and CAP_SYS_ADMIN).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Path of the `dnet-switch` binary to run: `$DNET_SWITCH_BIN` if set, else the one next to the
/// current executable's cargo profile directory (`target/<profile>/dnet-switch`).
pub fn switch_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("DNET_SWITCH_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::SwitchEnvNotFound { path: p })
        };
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("locating current executable", e))?;
    // Tests run as target/<profile>/deps/<name>-<hash>; dnetctl as target/<profile>/dnetctl.
    let mut dir = exe.parent().unwrap_or(Path::new("/")).to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let p = dir.join("dnet-switch");
    if p.is_file() {
        Ok(p)
    } else {
        Err(Error::SwitchNotFound { path: p })
    }
}

/// Flags from `$DNET_SWITCH_ARGS` (whitespace-separated) for every switch the testbed starts,
/// so a whole suite can run with a switch setting, e.g. `DNET_SWITCH_ARGS="--packet-rings on"`.
/// A flag the test passes itself (in `explicit`) wins: the variable's copy, and its value, are
/// left out.
pub fn env_switch_args(explicit: &[String]) -> Vec<String> {
    let Some(v) = std::env::var_os("DNET_SWITCH_ARGS") else {
        return Vec::new();
    };
    let words: Vec<String> = v
        .to_string_lossy()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        let takes_value = words.get(i + 1).is_some_and(|n| !n.starts_with("--"));
        let n = if takes_value { 2 } else { 1 };
        if !(w.starts_with("--") && explicit.contains(w)) {
            out.extend_from_slice(&words[i..i + n]);
        }
        i += n;
    }
    out
}

/// One simulated host: a host namespace with a bridge and underlay address, and its container.
#[derive(Debug, Clone)]
pub struct Host {
    /// Position in [`Testbed::hosts`].
    pub index: usize,
    /// Short letter naming the host in messages ('a', 'b', ...).
    pub letter: char,
    /// Host network namespace (runs the switch, holds [`BRIDGE`] and [`UNDERLAY_IF`]).
    pub ns: String,
    /// Container network namespace (holds [`CONTAINER_IF`]).
    pub container_ns: String,
    /// Underlay address of the host, `10.200.0.<index+1>`.
    pub underlay_ip: Ipv4Addr,
    /// Address of the container, `10.77.0.<index+1>`.
    pub container_ip: Ipv4Addr,
}

/// Container subnet's broadcast address (what a container's `brd +` resolves to).
pub const CONTAINER_BROADCAST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 255);

/// Everything the testbed has created and must undo. Guarded by one mutex so a teardown from a
/// signal thread never races a half-finished creation step.
#[derive(Debug, Default)]
struct Resources {
    /// Set once torn down; later creation attempts fail with [`Error::TornDown`].
    torn_down: bool,
    /// Namespaces we created (successfully), in creation order.
    namespaces: Vec<String>,
    /// Processes we started; kept after exit so their PIDs are never signalled after reaping.
    children: Vec<Child>,
    /// Files we named (control sockets) that a killed switch may leave behind.
    files: Vec<PathBuf>,
    /// Switch logs, (label, path), printed if teardown happens during a panic.
    logs: Vec<(String, PathBuf)>,
    /// Our scratch directory (logs).
    dir: Option<PathBuf>,
}

fn lock(res: &Mutex<Resources>) -> MutexGuard<'_, Resources> {
    // A panic while holding the lock must not stop the teardown that follows it.
    res.lock().unwrap_or_else(|e| e.into_inner())
}

impl Resources {
    fn find_child(&mut self, pid: u32) -> Option<&mut Child> {
        self.children.iter_mut().find(|c| c.id() == pid)
    }

    /// Kills processes, removes leftovers and namespaces. Idempotent; never fails (reports to
    /// stderr instead) because it runs from `Drop`.
    fn teardown(&mut self, dump_logs: bool) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        // Processes first: a switch keeps its namespace alive and should remove its own TAP.
        for c in &mut self.children {
            if let Ok(None) = c.try_wait() {
                // SAFETY: kill(2) on a PID we spawned and have not reaped (try_wait just said it
                // is still running, and only we can reap it), so it cannot name another process.
                unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            }
        }
        let deadline = Instant::now() + TERM_GRACE;
        while self
            .children
            .iter_mut()
            .any(|c| matches!(c.try_wait(), Ok(None)))
            && Instant::now() < deadline
        {
            std::thread::sleep(POLL);
        }
        for c in &mut self.children {
            if let Ok(None) = c.try_wait() {
                eprintln!(
                    "testbed: pid {} ignored SIGTERM for {TERM_GRACE:?}; killing",
                    c.id()
                );
                // Child::kill sends SIGKILL and refuses if the child was already reaped.
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if dump_logs {
            for (label, path) in &self.logs {
                let text = fs::read_to_string(path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(60)..];
                eprintln!(
                    "---- {label} ({}), last {} lines ----",
                    path.display(),
                    tail.len()
                );
                for l in tail {
                    eprintln!("{l}");
                }
            }
        }
        for f in self.files.drain(..) {
            let _ = fs::remove_file(f);
        }
        for ns in self.namespaces.drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                eprintln!("testbed: {}", one_line(&e));
            }
        }
        if let Some(dir) = self.dir.take() {
            if std::env::var_os("DNET_KEEP_LOGS").is_some() {
                eprintln!("testbed: keeping logs in {}", dir.display());
            } else {
                let _ = fs::remove_dir_all(dir);
            }
        }
    }
}

/// A cloneable handle that tears a [`Testbed`] down from another thread (e.g. a signal thread)
/// while the testbed itself is still borrowed elsewhere.
///
/// Create it first with [`TeardownHandle::new`] and build the testbed with
/// [`Testbed::with_teardown`] to cover a signal that arrives while the testbed is being built.
#[derive(Debug, Clone, Default)]
pub struct TeardownHandle(Arc<Mutex<Resources>>);

impl TeardownHandle {
    /// A handle for a testbed not built yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Kills the testbed's processes and deletes its namespaces now. Later uses of the testbed
    /// fail with [`Error::TornDown`]; dropping it afterwards does nothing more.
    pub fn teardown(&self) {
        lock(&self.0).teardown(false);
    }
}

/// Options for starting one switch; [`Default`] is what the tests and demo use.
#[derive(Debug, Clone)]
pub struct SwitchOptions {
    /// `--peer` values; `None` means every other host's underlay address (full mesh).
    pub peers: Option<Vec<Ipv4Addr>>,
    /// `--bridge` value; `None` omits the flag.
    pub bridge: Option<String>,
    /// `--tap` value.
    pub tap: String,
    /// `--log-level` value.
    pub log_level: String,
    /// Further arguments appended verbatim (e.g. `--key 7`).
    pub extra_args: Vec<String>,
}

impl Default for SwitchOptions {
    fn default() -> Self {
        SwitchOptions {
            peers: None,
            bridge: Some(BRIDGE.to_string()),
            tap: DEFAULT_TAP.to_string(),
            log_level: "debug".to_string(),
            extra_args: Vec::new(),
        }
    }
}

/// A `dnet-switch` process started by a [`Testbed`] inside one host namespace.
///
/// The process itself is owned by the testbed (so it is killed even if this handle leaks);
/// this handle queries and stops it.
#[derive(Debug)]
pub struct Switch {
    /// Index of the host it runs on.
    pub host: usize,
    /// Host namespace it runs in.
    pub ns: String,
    /// Its PID (`ip netns exec` execs the switch, so this is the switch itself).
    pub pid: u32,
    /// Its control socket.
    pub socket: PathBuf,
    /// File holding its stdout and stderr.
    pub log: PathBuf,
    res: Arc<Mutex<Resources>>,
}

impl Switch {
    /// Fetches its counters over the control socket (2 s timeout).
    pub fn stats(&self) -> Result<Stats> {
        Ok(dnet_proto::stats(&self.socket, Duration::from_secs(2))?)
    }

    /// What the switch has written to stdout/stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.log)
            .unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.log.display()))
    }

    /// Exit status if it has exited (reaping it), `None` while it runs.
    pub fn try_status(&self) -> Result<Option<ExitStatus>> {
        let mut res = lock(&self.res);
        match res.find_child(self.pid) {
            Some(c) => c
                .try_wait()
                .map_err(|e| Error::io(format!("waiting for dnet-switch pid {}", self.pid), e)),
            None => Err(Error::TornDown),
        }
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_exit(&self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_status()? {
                return Ok(st);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("exit of dnet-switch pid {} in {}", self.pid, self.ns),
                    timeout,
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub fn terminate(&self, timeout: Duration) -> Result<ExitStatus> {
        self.signal(libc::SIGTERM)?;
        self.wait_exit(timeout)
    }

    /// Sends `sig` to the switch if it is still running (no-op once exited).
    pub fn signal(&self, sig: libc::c_int) -> Result<()> {
        let mut res = lock(&self.res);
        let Some(c) = res.find_child(self.pid) else {
            return Err(Error::TornDown);
        };
        if let Ok(None) = c.try_wait() {
            // SAFETY: kill(2) on our own unreaped child (see Resources::teardown).
            if unsafe { libc::kill(self.pid as libc::pid_t, sig) } != 0 {
                return Err(Error::io(
                    format!("kill({}, {sig})", self.pid),
                    io::Error::last_os_error(),
                ));
            }
        }
        Ok(())
    }

    /// Polls the control socket until the switch answers (returning its first [`Stats`]),
    /// failing early with its stderr if the process exits, or after `timeout`.
    pub fn wait_ready(&self, timeout: Duration) -> Result<Stats> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_status()? {
                return Err(Error::SwitchExited {
                    ns: self.ns.clone(),
                    status: st.to_string(),
                    stderr: self.stderr(),
                });
            }
            let last = match dnet_proto::stats(&self.socket, Duration::from_millis(500)) {
                Ok(s) => return Ok(s),
                Err(e) => one_line(&e),
            };
            if Instant::now() >= deadline {
                return Err(Error::SwitchNotReady {
                    ns: self.ns.clone(),
                    socket: self.socket.display().to_string(),
                    timeout,
                    last,
                    stderr: self.stderr(),
                });
            }
            std::thread::sleep(POLL);
        }
    }
}

/// Any other process started by [`Testbed::spawn_in`] (e.g. a foreign switch daemon such as
/// ovs-vswitchd). Like [`Switch`], the process itself is owned by the testbed.
#[derive(Debug)]
pub struct Process {
    /// Its PID.
    pub pid: u32,
    /// Namespace it runs in.
    pub ns: String,
    /// File holding its stdout and stderr.
    pub log: PathBuf,
    res: Arc<Mutex<Resources>>,
}

impl Process {
    /// Exit status if it has exited (reaping it), `None` while it runs.
    pub fn try_status(&self) -> Result<Option<ExitStatus>> {
        let mut res = lock(&self.res);
        match res.find_child(self.pid) {
            Some(c) => c
                .try_wait()
                .map_err(|e| Error::io(format!("waiting for pid {}", self.pid), e)),
            None => Err(Error::TornDown),
        }
    }

    /// What the process has written to stdout/stderr so far.
    pub fn output(&self) -> String {
        fs::read_to_string(&self.log)
            .unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.log.display()))
    }

    /// Sends `sig` to the process if it is still running (no-op once exited).
    pub fn signal(&self, sig: libc::c_int) -> Result<()> {
        let mut res = lock(&self.res);
        let Some(c) = res.find_child(self.pid) else {
            return Err(Error::TornDown);
        };
        if let Ok(None) = c.try_wait() {
            // SAFETY: kill(2) on our own unreaped child (see Resources::teardown).
            if unsafe { libc::kill(self.pid as libc::pid_t, sig) } != 0 {
                return Err(Error::io(
                    format!("kill({}, {sig})", self.pid),
                    io::Error::last_os_error(),
                ));
            }
        }
        Ok(())
    }

    /// Kills the process (SIGKILL) and reaps it, e.g. to stop a service mid-test.
    pub fn kill(&self) -> Result<ExitStatus> {
        self.signal(libc::SIGKILL)?;
        let deadline = Instant::now() + TERM_GRACE;
        loop {
            if let Some(st) = self.try_status()? {
                return Ok(st);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("exit of pid {} in {} after SIGKILL", self.pid, self.ns),
                    timeout: TERM_GRACE,
                });
            }
            std::thread::sleep(POLL);
        }
    }
}

/// The RAII guard owning a whole simulated network. Dropping it (also during a panic) kills
/// every process it started and deletes every namespace it created — and nothing else.
#[derive(Debug)]
pub struct Testbed {
    prefix: String,
    dir: PathBuf,
    hosts: Vec<Host>,
    underlay_ns: Option<String>,
    /// Routed underlay (see [`Testbed::routed`]): router namespace and the MTU of its link to b.
    router: Option<(String, u32)>,
    bin: PathBuf,
    switch_counter: AtomicU32,
    res: Arc<Mutex<Resources>>,
}

impl Testbed {
    /// Builds `n` hosts (2 to 52), each with one container, joined by an underlay.
    ///
    /// Fails with [`Error::SwitchNotFound`] before touching the system if the `dnet-switch`
    /// binary is missing, so a forgotten build is reported first and cheaply.
    pub fn new(n: usize) -> Result<Testbed> {
        Self::with_switch_binary(n, switch_binary()?)
    }

    /// Like [`Testbed::new`] with an explicit switch binary (which may be absent if no switch is
    /// ever started, e.g. when validating the topology alone).
    pub fn with_switch_binary(n: usize, bin: PathBuf) -> Result<Testbed> {
        Self::with_teardown(n, bin, TeardownHandle::new())
    }

    /// Like [`Testbed::with_switch_binary`], recording everything it creates in `handle`, so
    /// another thread holding a clone of `handle` can tear down even a half-built testbed.
    /// Fails with [`Error::TornDown`] if `handle` was already used.
    pub fn with_teardown(n: usize, bin: PathBuf, handle: TeardownHandle) -> Result<Testbed> {
        Self::build_with(n, bin, handle, None)
    }

    /// Two hosts whose underlays are joined by a router namespace `<p>r` instead of one veth:
    /// a is `10.200.1.1/24` on the link 10.200.1.0/24 (MTU 1500), b is `10.200.2.2/24` on the
    /// link 10.200.2.0/24, whose MTU (both ends) is `link_mtu`. The router forwards and sends
    /// ICMP fragmentation-needed like any router, so path MTU discovery across it is real.
    pub fn routed(link_mtu: u32) -> Result<Testbed> {
        Self::build_with(2, switch_binary()?, TeardownHandle::new(), Some(link_mtu))
    }

    fn build_with(
        n: usize,
        bin: PathBuf,
        handle: TeardownHandle,
        router_mtu: Option<u32>,
    ) -> Result<Testbed> {
        if !(2..=MAX_HOSTS).contains(&n) {
            return Err(Error::Invalid(format!(
                "testbed needs 2 to {MAX_HOSTS} hosts, got {n}"
            )));
        }
        let pid = std::process::id();
        let k = TESTBED_COUNTER.fetch_add(1, Ordering::Relaxed);
        // "dn" + pid (≤ 7 digits) + "x" + counter + 2-byte suffix stays within 15 bytes for
        // realistic counters; the 'x' keeps pid 12/counter 3 distinct from pid 1/counter 23.
        let prefix = format!("dn{pid}x{k}");
        let dir = std::env::temp_dir().join(format!("dnet-{prefix}"));
        {
            let mut res = lock(&handle.0);
            if res.torn_down {
                return Err(Error::TornDown);
            }
            fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("mkdir {}", dir.display()), e))?;
            res.dir = Some(dir.clone());
        }
        let hosts = (0..n)
            .map(|i| {
                let letter = if i < 26 {
                    (b'a' + i as u8) as char
                } else {
                    (b'A' + (i - 26) as u8) as char
                };
                Host {
                    index: i,
                    letter,
                    ns: format!("{prefix}{letter}h"),
                    container_ns: format!("{prefix}{letter}c"),
                    underlay_ip: match router_mtu {
                        None => Ipv4Addr::new(10, 200, 0, i as u8 + 1),
                        Some(_) => Ipv4Addr::new(10, 200, i as u8 + 1, i as u8 + 1),
                    },
                    container_ip: Ipv4Addr::new(10, 77, 0, i as u8 + 1),
                }
            })
            .collect();
        let mut tb = Testbed {
            underlay_ns: (n > 2).then(|| format!("{prefix}u")),
            router: router_mtu.map(|m| (format!("{prefix}r"), m)),
            prefix,
            dir,
            hosts,
            bin,
            switch_counter: AtomicU32::new(0),
            res: handle.0,
        };
        // On error `tb` is dropped here, undoing whatever part was built.
        tb.build()?;
        Ok(tb)
    }

    fn build(&mut self) -> Result<()> {
        let hosts = self.hosts.clone();
        for h in &hosts {
            self.add_netns(&h.ns)?;
            self.add_netns(&h.container_ns)?;
        }
        // Underlay.
        match &self.underlay_ns {
            None if self.router.is_some() => {
                let (r, mtu) = self.router.clone().expect("router");
                self.add_netns(&r)?;
                in_netns(&r, || fs::write("/proc/sys/net/ipv4/ip_forward", "1"))
                    .map_err(|source| Error::Netns {
                        ns: r.clone(),
                        source,
                    })?
                    .map_err(|e| Error::io(format!("enable forwarding in {r}"), e))?;
                let ul = UNDERLAY_IF;
                for (i, h) in hosts.iter().enumerate() {
                    let port = format!("r{}", h.letter);
                    ipn(
                        &r,
                        &format!("link add {port} type veth peer name {ul} netns {}", h.ns),
                    )?;
                    ipn(&r, &format!("addr add 10.200.{}.254/24 dev {port}", i + 1))?;
                    if i == 1 {
                        ipn(&r, &format!("link set {port} mtu {mtu}"))?;
                        ipn(&h.ns, &format!("link set {ul} mtu {mtu}"))?;
                    }
                    ipn(&r, &format!("link set {port} up"))?;
                }
            }
            None => {
                let (a, b) = (&hosts[0], &hosts[1]);
                let ul = UNDERLAY_IF;
                ipn(
                    &a.ns,
                    &format!("link add {ul} type veth peer name {ul} netns {}", b.ns),
                )?;
            }
            Some(u) => {
                let u = u.clone();
                self.add_netns(&u)?;
                let br = UNDERLAY_BRIDGE;
                // Snooping off for the reason given for the host bridges below.
                ipn(
                    &u,
                    &format!("link add {br} type bridge stp_state 0 mcast_snooping 0"),
                )?;
                ipn(&u, &format!("link set {br} up"))?;
                for h in &hosts {
                    let (port, ul, ns) = (format!("p{}", h.letter), UNDERLAY_IF, &h.ns);
                    ipn(
                        &u,
                        &format!("link add {port} type veth peer name {ul} netns {ns}"),
                    )?;
                    ipn(&u, &format!("link set {port} master {br} up"))?;
                }
            }
        }
        let (ul, br, vc, eth) = (UNDERLAY_IF, BRIDGE, CONTAINER_PEER_IF, CONTAINER_IF);
        for h in &hosts {
            let (hns, cns) = (&h.ns, &h.container_ns);
            ipn(hns, &format!("addr add {}/24 dev {ul}", h.underlay_ip))?;
            ipn(hns, &format!("link set {ul} up"))?;
            // The container side: bridge br0 in the host, veth vc0 <-> eth0 in the container.
            // Multicast snooping off: a snooping bridge joins 224.0.0.106 (RFC 4286) and sends
            // IGMPv3 reports (retransmitted for ~1 s, again when the TAP joins), which dnet
            // rightly floods to every host, making frame counts of quiet hosts non-zero.
            ipn(
                hns,
                &format!("link add {br} type bridge stp_state 0 mcast_snooping 0"),
            )?;
            ipn(hns, &format!("link set {br} up"))?;
            ipn(
                hns,
                &format!("link add {vc} type veth peer name {eth} netns {cns}"),
            )?;
            ipn(hns, &format!("link set {vc} master {br} up"))?;
            // `brd +` installs the subnet broadcast route, without which 10.77.0.255 would be
            // treated as a unicast neighbour and ARPed for.
            ipn(
                cns,
                &format!("addr add {}/24 brd + dev {eth}", h.container_ip),
            )?;
            ipn(cns, &format!("link set {eth} up"))?;
        }
        if self.router.is_some() {
            for (i, h) in hosts.iter().enumerate() {
                ipn(
                    &h.ns,
                    &format!("route add default via 10.200.{}.254", i + 1),
                )?;
            }
        }
        // A link that was just set up drops what it is given until the kernel's linkwatch work
        // has attached its qdisc (up to a second later), which would eat a test's first ping.
        for h in &hosts {
            wait_link_up(&h.ns, UNDERLAY_IF)?;
            wait_link_up(&h.ns, CONTAINER_PEER_IF)?;
            wait_link_up(&h.ns, BRIDGE)?;
            wait_link_up(&h.container_ns, CONTAINER_IF)?;
        }
        if let Some((r, _)) = &self.router {
            for h in &hosts {
                wait_link_up(r, &format!("r{}", h.letter))?;
            }
        }
        if let Some(u) = &self.underlay_ns {
            wait_link_up(u, UNDERLAY_BRIDGE)?;
        }
        Ok(())
    }

    /// Creates namespace `name` (recording it only once created, so a name clash never leads
    /// us to delete someone else's namespace), disables IPv6 in it and brings `lo` up.
    fn add_netns(&self, name: &str) -> Result<()> {
        {
            let mut res = lock(&self.res);
            if res.torn_down {
                return Err(Error::TornDown);
            }
            ip(&["netns", "add", name])?;
            res.namespaces.push(name.to_string());
        }
        // IPv6 off before any link exists, so router solicitations, MLD reports and DAD never
        // add frames to the counts the tests compare.
        in_netns(name, || -> Result<()> {
            for which in ["default", "all"] {
                let p = format!("/proc/sys/net/ipv6/conf/{which}/disable_ipv6");
                match fs::write(&p, "1") {
                    Ok(()) => {}
                    // IPv6 compiled out or disabled at boot: nothing to silence.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(format!("write 1 to {p} in {name}"), e)),
                }
            }
            Ok(())
        })
        .map_err(|source| Error::Netns {
            ns: name.to_string(),
            source,
        })??;
        ip_in(name, &["link", "set", "lo", "up"])?;
        Ok(())
    }

    /// The hosts, in order a, b, c, ...
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Host `i` (panics if out of range, like indexing).
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// The unique name prefix of this testbed's namespaces.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Names of the namespaces created so far (and not yet deleted).
    pub fn namespaces(&self) -> Vec<String> {
        lock(&self.res).namespaces.clone()
    }

    /// Creates an extra, empty namespace named `<prefix><suffix>` (IPv6 off, `lo` up), deleted
    /// at teardown like the testbed's own: e.g. a bare container for `dnetctl attach`.
    pub fn add_extra_netns(&self, suffix: &str) -> Result<String> {
        let name = format!("{}{suffix}", self.prefix);
        self.add_netns(&name)?;
        Ok(name)
    }

    /// Adds `addr/24` to the shared underlay segment (three or more hosts: the underlay
    /// bridge's namespace) and returns that namespace: the place for a service every host
    /// reaches on the underlay, such as etcd at 10.200.0.100. Adding it twice is no error.
    pub fn add_underlay_address(&self, addr: Ipv4Addr) -> Result<String> {
        let Some(u) = &self.underlay_ns else {
            return Err(Error::Invalid(
                "an underlay address needs the shared underlay of three or more hosts".into(),
            ));
        };
        // `replace`: adding it again (a service restarted) is not an error.
        ipn(u, &format!("addr replace {addr}/24 dev {UNDERLAY_BRIDGE}"))?;
        Ok(u.clone())
    }

    /// Scratch directory holding switch logs (removed on teardown unless `DNET_KEEP_LOGS`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A handle that can tear this testbed down from another thread.
    pub fn teardown_handle(&self) -> TeardownHandle {
        TeardownHandle(self.res.clone())
    }

    /// Starts a switch on host `i` with default options (full mesh to all other hosts, TAP in
    /// [`BRIDGE`]), waits until it answers, and sets the container MTU to the switch's MTU.
    pub fn start_switch(&self, i: usize) -> Result<Switch> {
        self.start_switch_with(i, &SwitchOptions::default())
    }

    /// [`Testbed::start_switch`] with explicit options (e.g. `--key 42` in
    /// [`SwitchOptions::extra_args`]).
    pub fn start_switch_with(&self, i: usize, opts: &SwitchOptions) -> Result<Switch> {
        let sw = self.spawn_switch(i, opts)?;
        let stats = sw.wait_ready(READY_TIMEOUT)?;
        wait_link_up(&self.hosts[i].ns, &opts.tap)?;
        self.set_container_mtu(i, stats.mtu)?;
        Ok(sw)
    }

    /// [`Testbed::start_switch`] on every host, in order.
    pub fn start_switches(&self) -> Result<Vec<Switch>> {
        (0..self.hosts.len())
            .map(|i| self.start_switch(i))
            .collect()
    }

    /// Starts `dnet-switch` in host `i`'s namespace without waiting for it (see
    /// [`Switch::wait_ready`]). Its stdout and stderr go to a log file in [`Testbed::dir`].
    pub fn spawn_switch(&self, i: usize, opts: &SwitchOptions) -> Result<Switch> {
        let h = &self.hosts[i];
        if !self.bin.is_file() {
            return Err(Error::SwitchNotFound {
                path: self.bin.clone(),
            });
        }
        fs::create_dir_all(SOCKET_DIR).map_err(|e| Error::io(format!("mkdir {SOCKET_DIR}"), e))?;
        let k = self.switch_counter.fetch_add(1, Ordering::Relaxed);
        let socket = PathBuf::from(format!("{SOCKET_DIR}/{}{}{k}.sock", self.prefix, h.letter));
        let log = self.dir.join(format!("switch-{}{k}.log", h.letter));
        let peers = opts.peers.clone().unwrap_or_else(|| {
            self.hosts
                .iter()
                .filter(|o| o.index != i)
                .map(|o| o.underlay_ip)
                .collect()
        });
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &h.ns]).arg(&self.bin);
        for p in &peers {
            cmd.arg("--peer").arg(p.to_string());
        }
        if let Some(b) = &opts.bridge {
            cmd.args(["--bridge", b]);
        }
        cmd.args(["--tap", &opts.tap, "--log-level", &opts.log_level]);
        cmd.arg("--control-socket").arg(&socket);
        cmd.args(env_switch_args(&opts.extra_args));
        cmd.args(&opts.extra_args);
        let pid = self.spawn_logged(cmd, &log, "dnet-switch", &h.ns, Some(&socket))?;
        Ok(Switch {
            host: i,
            ns: h.ns.clone(),
            pid,
            socket,
            log,
            res: self.res.clone(),
        })
    }

    /// Starts `cmd` inside namespace `ns` (as `ip netns exec NS <cmd>`, which execs it, so the
    /// PID is the program's own) and tracks it like a switch: killed by PID at teardown (so it
    /// must stay in the foreground, not daemonize), its stdout and stderr in a log file in
    /// [`Testbed::dir`] that is printed if teardown happens during a panic. `cmd`'s program,
    /// arguments, environment and working directory are used; its stdio settings are not.
    /// `label` names the process in that log's file name and heading.
    pub fn spawn_in(&self, ns: &str, label: &str, cmd: &Command) -> Result<Process> {
        // Numbered from the switches' counter: one sequence keeps every log name unique.
        let k = self.switch_counter.fetch_add(1, Ordering::Relaxed);
        let log = self.dir.join(format!("{label}-{k}.log"));
        let mut full = Command::new("ip");
        full.args(["netns", "exec", ns])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (key, val) in cmd.get_envs() {
            match val {
                Some(v) => full.env(key, v),
                None => full.env_remove(key),
            };
        }
        if let Some(d) = cmd.get_current_dir() {
            full.current_dir(d);
        }
        let pid = self.spawn_logged(full, &log, label, ns, None)?;
        // `ip netns exec` enters the namespace after it starts: return once the process is
        // in it, so a caller that names the process (`pid:N`) finds it there.
        wait_in_netns(pid, ns)?;
        Ok(Process {
            pid,
            ns: ns.to_string(),
            log,
            res: self.res.clone(),
        })
    }

    /// Spawns `cmd` with stdout and stderr in a new log file `log` (headed by the command line),
    /// in its own process group (a terminal Ctrl-C reaches dnetctl only, which then stops
    /// children in order instead of having them race the teardown), and hands the child, the
    /// log and `file` (removed at teardown) to the guard. Returns the PID.
    fn spawn_logged(
        &self,
        mut cmd: Command,
        log: &Path,
        label: &str,
        ns: &str,
        file: Option<&Path>,
    ) -> Result<u32> {
        let mut out =
            File::create(log).map_err(|e| Error::io(format!("create {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io(format!("dup {}", log.display()), e))?;
        let cmdline = format!("{cmd:?}");
        // Written before the child starts because both share one file offset.
        let _ = writeln!(out, "# testbed: {cmdline}");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0);
        let mut res = lock(&self.res);
        if res.torn_down {
            return Err(Error::TornDown);
        }
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            cmd: cmdline,
            source,
        })?;
        let pid = child.id();
        res.children.push(child);
        if let Some(f) = file {
            res.files.push(f.to_path_buf());
        }
        res.logs
            .push((format!("{label} pid {pid} in {ns}"), log.to_path_buf()));
        Ok(pid)
    }

    /// Sets host `i`'s container interface MTU (to the switch's, so frames fit the tunnel).
    pub fn set_container_mtu(&self, i: usize, mtu: u32) -> Result<()> {
        let h = &self.hosts[i];
        ipn(
            &h.container_ns,
            &format!("link set {CONTAINER_IF} mtu {mtu}"),
        )?;
        Ok(())
    }

    /// True if interface `name` exists in namespace `ns`.
    pub fn link_exists(&self, ns: &str, name: &str) -> bool {
        ip_in(ns, &["link", "show", "dev", name]).is_ok()
    }

    /// Joins two hosts' container bridges with a plain veth (no switch): the reference path used
    /// to validate the harness itself and as a baseline.
    pub fn join_bridges_directly(&self, a: usize, b: usize) -> Result<()> {
        let (ha, hb) = (&self.hosts[a], &self.hosts[b]);
        let name = format!("x{}{}", ha.letter, hb.letter);
        ipn(
            &ha.ns,
            &format!("link add {name} type veth peer name {name} netns {}", hb.ns),
        )?;
        ipn(&ha.ns, &format!("link set {name} master {BRIDGE} up"))?;
        ipn(&hb.ns, &format!("link set {name} master {BRIDGE} up"))?;
        wait_link_up(&ha.ns, &name)?;
        wait_link_up(&hb.ns, &name)
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        lock(&self.res).teardown(std::thread::panicking());
    }
}

/// Polls until process `pid` is in network namespace `ns` (or has exited).
fn wait_in_netns(pid: u32, ns: &str) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let want = fs::metadata(format!("/run/netns/{ns}"))
        .map_err(|e| Error::io(format!("stat /run/netns/{ns}"), e))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match fs::metadata(format!("/proc/{pid}/ns/net")) {
            Ok(m) if m.dev() == want.dev() && m.ino() == want.ino() => return Ok(()),
            // Gone already: nothing to wait for (its log says why).
            Err(_) => return Ok(()),
            Ok(_) if Instant::now() >= deadline => {
                return Err(Error::Timeout {
                    what: format!("process {pid} entering namespace {ns}"),
                    timeout: Duration::from_secs(5),
                })
            }
            Ok(_) => std::thread::sleep(POLL),
        }
    }
}

/// How long a freshly configured link may take to report operational state UP.
const LINK_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// Polls until link `dev` in namespace `ns` can carry frames: carrier (`LOWER_UP`), a real
/// qdisc instead of the dropping `noop` one, and operational state `UP` (or `UNKNOWN`, which is
/// what a TAP reports). Both follow the kernel's linkwatch work, which may run a second after
/// the link was set up.
pub fn wait_link_up(ns: &str, dev: &str) -> Result<()> {
    let deadline = Instant::now() + LINK_UP_TIMEOUT;
    loop {
        let out = ip_in(ns, &["-o", "link", "show", "dev", dev])?;
        if out.contains("LOWER_UP")
            && !out.contains("qdisc noop")
            && (out.contains("state UP") || out.contains("state UNKNOWN"))
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!("link {dev} in {ns} coming up (last: {})", out.trim()),
                timeout: LINK_UP_TIMEOUT,
            });
        }
        std::thread::sleep(POLL);
    }
}

/// The TAP (local) port of a switch's stats.
pub fn tap_port(s: &Stats) -> Option<&PortStats> {
    s.ports.iter().find(|p| p.kind == PortKind::Local)
}

/// The tunnel port towards `peer` in a switch's stats.
pub fn tunnel_port(s: &Stats, peer: Ipv4Addr) -> Option<&PortStats> {
    s.ports
        .iter()
        .find(|p| p.kind == PortKind::Tunnel && p.peer == Some(peer))
}

/// Sum of all tunnel ports' counters: (rx_packets, tx_packets).
pub fn tunnel_totals(s: &Stats) -> (u64, u64) {
    s.ports
        .iter()
        .filter(|p| p.kind == PortKind::Tunnel)
        .fold((0, 0), |(rx, tx), p| (rx + p.rx_packets, tx + p.tx_packets))
}
