//! `dnet-switch --docker` end to end: two simulated hosts, each with its own real dockerd
//! (Debian's docker.io, shared/TESTBED.md), etcd on the underlay, and a switch that joins
//! network blue through etcd and serves Docker's plugin API. `docker run --network blue` on
//! both hosts: the containers ping each other across the hosts, their addresses come from
//! each host's range and are recorded in etcd exactly (rm frees), a switch restarted under a
//! running container keeps it connected, 16 MiB cross from one container to the other intact,
//! network red served beside blue never learns a frame of blue's, and hostile plugin requests
//! get the API's errors.

use dnet_e2e::fleet_support::{create_network, wait_for, Etcd, TTL};
use dnet_proto::{NetworkEntry, PortKind, Request, Response};
use dnet_testbed::{Process, Testbed};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const IMAGE: &str = "dnetbox";
const APPLETS: [&str; 8] = ["sh", "sleep", "ping", "cat", "nc", "dd", "md5sum", "wc"];
const READY: Duration = Duration::from_secs(30);

/// One dockerd inside a host namespace with a private plugin directory; on drop: containers
/// removed first (their shims outlive dockerd), the daemon stopped, its mounts undone.
struct Dockerd {
    child: Child,
    sock: PathBuf,
    root: PathBuf,
    plugins: PathBuf,
}

impl Dockerd {
    fn start(ns: &str, dir: &Path) -> Dockerd {
        let root = dir.join("docker");
        let plugins = dir.join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        let sock = root.join("docker.sock");
        let log = std::fs::File::create(root.join("dockerd.log")).unwrap();
        let script = format!(
            "mkdir -p /run/docker/plugins && mount --bind {plugins} /run/docker/plugins && \
             exec dockerd --data-root {root}/data --exec-root {root}/exec -H unix://{sock} \
             --pidfile {root}/dockerd.pid --iptables=false --ip6tables=false --ip-masq=false \
             --bridge=none",
            plugins = plugins.display(),
            root = root.display(),
            sock = sock.display()
        );
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .args([
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn dockerd");
        let d = Dockerd {
            child,
            sock,
            root,
            plugins,
        };
        let up = wait_for(READY, || d.docker(&["version"]).is_ok());
        assert!(up, "dockerd in {ns} does not answer:\n{}", d.log());
        d.import_busybox();
        d
    }

    fn command(&self) -> Command {
        let mut c = Command::new("docker");
        c.arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .env("DOCKER_CONFIG", self.root.join("cli"));
        c
    }

    fn docker(&self, args: &[&str]) -> Result<String, String> {
        let out = self.command().args(args).output().expect("run docker");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!(
                "docker {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        self.docker(args)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log()))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("dockerd.log"))
            .map(|l| {
                let lines: Vec<&str> = l.lines().collect();
                lines[lines.len().saturating_sub(30)..].join("\n")
            })
            .unwrap_or_default()
    }

    /// A busybox image from Debian's busybox-static (no registry is reachable).
    fn import_busybox(&self) {
        let img = self.root.join("image");
        std::fs::create_dir_all(img.join("bin")).unwrap();
        std::fs::create_dir_all(img.join("tmp")).unwrap();
        std::fs::copy("/bin/busybox", img.join("bin/busybox")).expect("busybox-static installed");
        for a in APPLETS {
            std::os::unix::fs::symlink("busybox", img.join("bin").join(a)).unwrap();
        }
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(&img)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = self
            .command()
            .args(["import", "-", IMAGE])
            .stdin(tar.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(tar.wait().unwrap().success(), "tar of the image directory");
        assert!(out.status.success(), "docker import: {out:?}");
    }

    fn run(&self, name: &str, network: &str) -> Ipv4Addr {
        self.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            network,
            IMAGE,
            "sleep",
            "600",
        ]);
        self.ok(&[
            "inspect",
            "-f",
            &format!("{{{{.NetworkSettings.Networks.{network}.IPAddress}}}}"),
            name,
        ])
        .parse()
        .unwrap()
    }

    /// Echoes from `container` to `dst` answered, of 3.
    fn ping(&self, container: &str, dst: Ipv4Addr) -> u32 {
        let out = self
            .docker(&[
                "exec",
                container,
                "ping",
                "-c",
                "3",
                "-W",
                "2",
                &dst.to_string(),
            ])
            .unwrap_or_else(|e| e);
        out.split(" packets received")
            .next()
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Ok(ids) = self.docker(&["ps", "-aq"]) {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = self.docker(&args);
            }
        }
        // SAFETY: kill only signals; the PID is our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                _ if start.elapsed() > Duration::from_secs(20) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        if let Ok(m) = std::fs::read_to_string("/proc/self/mounts") {
            let mut points: Vec<&str> = m
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|p| Path::new(p).starts_with(&self.root))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                let _ = Command::new("umount").args(["-l", p]).status();
            }
        }
    }
}

fn ask(socket: &Path, req: Request) -> Option<Response> {
    dnet_proto::request(socket, &req, Duration::from_secs(5)).ok()
}

fn blue_or_red(socket: &Path, name: &str) -> NetworkEntry {
    match ask(socket, Request::Networks) {
        Some(Response::Networks { networks }) => networks
            .into_iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no network {name}")),
        other => panic!("networks: {other:?}"),
    }
}

fn blue(socket: &Path) -> Option<NetworkEntry> {
    match ask(socket, Request::Networks)? {
        Response::Networks { networks } => networks.into_iter().find(|n| n.name == "blue"),
        _ => None,
    }
}

/// This host's allocations in blue: (address, holder).
fn allocations(socket: &Path) -> Vec<(Ipv4Addr, String)> {
    let req = Request::Allocations {
        network: Some("blue".into()),
    };
    match ask(socket, req) {
        Some(Response::Allocations(l)) => l
            .allocations
            .into_iter()
            .map(|a| (a.address, a.container))
            .collect(),
        other => panic!("allocations: {other:?}"),
    }
}

/// The MACs network `net`'s table learned.
fn learned(socket: &Path, net: &str) -> Vec<String> {
    let req = Request::In {
        network: net.into(),
        request: Box::new(Request::FdbShow),
    };
    match ask(socket, req) {
        Some(Response::Fdb(t)) => t.entries.into_iter().map(|e| e.mac).collect(),
        other => panic!("fdb of {net}: {other:?}"),
    }
}

fn tunnels(socket: &Path) -> usize {
    let req = Request::In {
        network: "blue".into(),
        request: Box::new(Request::Stats),
    };
    match ask(socket, req) {
        Some(Response::Stats(s)) => s
            .ports
            .iter()
            .filter(|p| p.kind == PortKind::Tunnel)
            .count(),
        _ => 0,
    }
}

fn in_range(a: Ipv4Addr, range: &str) -> bool {
    let (net, len) = range.split_once('/').unwrap();
    let (net, len): (Ipv4Addr, u32) = (net.parse().unwrap(), len.parse().unwrap());
    let mask = u32::MAX << (32 - len);
    u32::from(a) & mask == u32::from(net)
}

struct DockerHost {
    ns: String,
    dir: PathBuf,
    socket: PathBuf,
    dockerd: Dockerd,
    switch: Option<Process>,
}

impl DockerHost {
    fn new(tb: &Testbed, i: usize) -> DockerHost {
        let ns = tb.host(i).ns.clone();
        let dir = tb.dir().join(format!("docker-{i}"));
        let dockerd = Dockerd::start(&ns, &dir);
        DockerHost {
            socket: dir.join("switch.sock"),
            ns,
            dir,
            dockerd,
            switch: None,
        }
    }

    fn start_switch(&mut self, tb: &Testbed, etcd: &Etcd) {
        let mut cmd = Command::new(dnet_testbed::switch_binary().unwrap());
        cmd.args(etcd.args())
            .args(["--network", "blue", "--network", "red", "--docker"])
            .arg("--docker-plugin-dir")
            .arg(&self.dockerd.plugins)
            .args(["--etcd-ttl", &TTL.to_string(), "--workers", "1"])
            .arg("--control-socket")
            .arg(&self.socket)
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.dockerd.sock.display()),
            );
        let sw = tb.spawn_in(&self.ns, "dnet-switch", &cmd).expect("switch");
        let ok = wait_for(READY, || blue(&self.socket).is_some());
        assert!(ok, "switch in {} not ready:\n{}", self.ns, sw.output());
        self.switch = Some(sw);
        let _ = &self.dir;
    }

    fn stop_switch(&mut self) {
        let sw = self.switch.take().expect("running");
        sw.signal(libc::SIGTERM).unwrap();
        let ok = wait_for(Duration::from_secs(10), || {
            sw.try_status().ok().flatten().is_some()
        });
        assert!(ok, "switch did not stop:\n{}", sw.output());
    }
}

/// One raw HTTP request to the plugin socket: (status, JSON body).
fn raw(socket: &Path, method: &str, body: &str) -> (u16, Value) {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /{method} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {resp:?}"));
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn err_of(v: &Value) -> &str {
    v["Err"].as_str().unwrap_or_default()
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn docker_containers_on_two_hosts_share_blue_through_the_switches() {
    let tb = Testbed::new(3).expect("testbed");
    let etcd = Etcd::single(&tb);
    create_network(&etcd, "blue", "10.77.0.0/16", &["--key", "1"]);
    create_network(&etcd, "red", "10.78.0.0/16", &["--key", "2"]);
    let mut a = DockerHost::new(&tb, 0);
    let mut b = DockerHost::new(&tb, 1);
    a.start_switch(&tb, &etcd);
    b.start_switch(&tb, &etcd);
    for h in [&a, &b] {
        // The switch made Docker network blue, driver and IPAM dnet, the network's subnet.
        let v = h.dockerd.ok(&[
            "network",
            "inspect",
            "-f",
            "{{.Driver}} {{.IPAM.Driver}} {{(index .IPAM.Config 0).Subnet}}",
            "blue",
        ]);
        assert_eq!(v, "dnet dnet 10.77.0.0/16");
        assert!(wait_for(READY, || tunnels(&h.socket) == 1), "no tunnel");
    }

    let ra = blue(&a.socket).unwrap();
    let rb = blue(&b.socket).unwrap();
    let c1 = a.dockerd.run("c1", "blue");
    let c2 = b.dockerd.run("c2", "blue");
    assert!(
        in_range(c1, ra.range.as_deref().unwrap()),
        "{c1} not in {ra:?}"
    );
    assert!(
        in_range(c2, rb.range.as_deref().unwrap()),
        "{c2} not in {rb:?}"
    );
    assert_eq!(a.dockerd.ping("c1", c2), 3, "c1 -> c2");
    assert_eq!(b.dockerd.ping("c2", c1), 3, "c2 -> c1");
    // The container's MTU is blue's.
    let mtu = a
        .dockerd
        .ok(&["exec", "c1", "cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(mtu, ra.mtu.to_string());

    // etcd records exactly the running endpoints.
    let held = |s: &Path| {
        allocations(s)
            .into_iter()
            .map(|(a, _)| a)
            .collect::<Vec<_>>()
    };
    assert_eq!(held(&a.socket), [c1]);
    assert_eq!(held(&b.socket), [c2]);
    a.dockerd.ok(&["network", "disconnect", "blue", "c1"]);
    assert!(
        wait_for(READY, || held(&a.socket).is_empty()),
        "disconnect kept {:?}",
        held(&a.socket)
    );
    a.dockerd.ok(&["network", "connect", "blue", "c1"]);
    let c1 = a
        .dockerd
        .ok(&[
            "inspect",
            "-f",
            "{{.NetworkSettings.Networks.blue.IPAddress}}",
            "c1",
        ])
        .parse::<Ipv4Addr>()
        .unwrap();
    assert_eq!(held(&a.socket), [c1]);
    a.dockerd.ok(&["rm", "-f", "c1"]);
    assert!(
        wait_for(READY, || held(&a.socket).is_empty()),
        "rm kept {:?}",
        held(&a.socket)
    );
    let c3 = a.dockerd.run("c3", "blue");
    assert_eq!(held(&a.socket), [c3]);

    // b's switch restarted under c2: c2 stays reachable, its allocation is kept, nothing else.
    b.stop_switch();
    b.start_switch(&tb, &etcd);
    assert!(
        wait_for(READY, || tunnels(&b.socket) == 1),
        "no tunnel after restart"
    );
    assert_eq!(a.dockerd.ping("c3", c2), 3, "c3 -> c2 after b's restart");
    assert_eq!(held(&b.socket), [c2]);

    // 16 MiB from c3 (host a) to c2 (host b) over TCP, compared by digest.
    b.dockerd.ok(&[
        "exec",
        "-d",
        "c2",
        "sh",
        "-c",
        "sleep 60 | nc -l -p 5000 > /tmp/got",
    ]);
    a.dockerd.ok(&[
        "exec",
        "c3",
        "sh",
        "-c",
        "dd if=/dev/urandom of=/tmp/sent bs=1048576 count=16 2>/dev/null",
    ]);
    let size = |h: &DockerHost, c: &str, f: &str| {
        h.dockerd
            .docker(&["exec", c, "sh", "-c", &format!("wc -c < {f}")])
            .ok()
            .and_then(|n| n.trim().parse::<u64>().ok())
    };
    // Listening: port 5000 (0x1388) in state LISTEN (0A) in c2's /proc/net/tcp or tcp6.
    let listening = || {
        b.dockerd
            .docker(&[
                "exec",
                "c2",
                "sh",
                "-c",
                "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null; true",
            ])
            .is_ok_and(|t| {
                t.lines()
                    .any(|l| l.contains(":1388 ") && l.contains(" 0A "))
            })
    };
    assert!(wait_for(READY, listening), "no listener in c2");
    let sent = a.dockerd.docker(&[
        "exec",
        "c3",
        "sh",
        "-c",
        &format!("nc -w 5 {c2} 5000 < /tmp/sent"),
    ]);
    assert!(sent.is_ok(), "{sent:?}");
    let ok = wait_for(READY, || size(&b, "c2", "/tmp/got") == Some(16 << 20));
    assert!(
        ok,
        "c2 got {:?} bytes of 16 MiB",
        size(&b, "c2", "/tmp/got")
    );
    let digest = |h: &DockerHost, c: &str, f: &str| h.dockerd.ok(&["exec", c, "md5sum", f]);
    assert_eq!(
        digest(&a, "c3", "/tmp/sent").split_whitespace().next(),
        digest(&b, "c2", "/tmp/got").split_whitespace().next(),
        "the 16 MiB arrived changed"
    );

    // Red, beside blue on the same switches: its container is not reachable from blue, and
    // not one frame of blue's (16 MiB above) was learned in red's tables, nor red's in blue's.
    let r2 = b.dockerd.run("r2", "red");
    assert!(in_range(
        r2,
        blue_or_red(&b.socket, "red").range.as_deref().unwrap()
    ));
    let mac_of = |h: &DockerHost, c: &str, net: &str| {
        h.dockerd.ok(&[
            "inspect",
            "-f",
            &format!("{{{{.NetworkSettings.Networks.{net}.MacAddress}}}}"),
            c,
        ])
    };
    let blue_macs = [mac_of(&a, "c3", "blue"), mac_of(&b, "c2", "blue")];
    let red_mac = mac_of(&b, "r2", "red");
    assert!(
        learned(&b.socket, "blue").contains(&blue_macs[0]),
        "blue learned nothing"
    );
    for h in [&a, &b] {
        let red = learned(&h.socket, "red");
        assert!(
            blue_macs.iter().all(|m| !red.contains(m)),
            "blue MACs in red: {red:?}"
        );
        assert!(
            !learned(&h.socket, "blue").contains(&red_mac),
            "red's MAC in blue"
        );
    }
    assert_eq!(a.dockerd.ping("c3", r2), 0, "blue reached red's container");

    // Hostile requests to the plugin socket: API errors, and the switch keeps serving.
    let sock = a.dockerd.plugins.join("dnet.sock");
    let (s, v) = raw(&sock, "NetworkDriver.CreateEndpoint", "{\"NetworkID\": ");
    assert_eq!(s, 400, "{v}");
    assert!(err_of(&v).contains("not valid JSON"), "{v}");
    let (s, v) = raw(
        &sock,
        "NetworkDriver.CreateEndpoint",
        &json!({"NetworkID":"f00","EndpointID":"e9",
        "Interface":{"Address":"10.77.3.99/16","MacAddress":"02:00:00:00:00:99"}})
        .to_string(),
    );
    assert_eq!(s, 500);
    assert!(err_of(&v).contains("unknown network f00"), "{v}");
    let outside = if in_range(Ipv4Addr::new(10, 77, 200, 9), ra.range.as_deref().unwrap()) {
        "10.77.201.9"
    } else {
        "10.77.200.9"
    };
    let (s, v) = raw(
        &sock,
        "IpamDriver.RequestAddress",
        &json!({"PoolID":"dnet:blue","Address":outside,
        "Options":{"com.docker.network.endpoint.macaddress":"02:00:00:00:00:98"}})
        .to_string(),
    );
    assert_eq!(s, 500);
    assert!(err_of(&v).contains("outside this host's range"), "{v}");
    let (s, v) = raw(
        &sock,
        "IpamDriver.RequestAddress",
        &json!({"PoolID":"dnet:blue","Address":c3.to_string(),
        "Options":{"com.docker.network.endpoint.macaddress":"02:00:00:00:00:97"}})
        .to_string(),
    );
    assert_eq!(s, 500);
    assert!(err_of(&v).contains("already held by"), "{v}");
    let (s, v) = raw(&sock, "NetworkDriver.Frobnicate", "{}");
    assert_eq!(s, 404, "{v}");
    assert_eq!(
        held(&a.socket),
        [c3],
        "a hostile request changed the allocations"
    );
    assert!(a.switch.as_ref().unwrap().try_status().unwrap().is_none());
    assert_eq!(a.dockerd.ping("c3", c2), 3, "after the hostile requests");
}
