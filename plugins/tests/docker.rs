//! The Docker plugin against a real Docker engine (Debian's docker.io), one dockerd per test
//! inside a host namespace with a private plugin directory (shared/TESTBED.md), and the
//! in-memory backend over real bridges.
//!
//! What is checked: `docker network create -d dnet --ipam-driver dnet` (by the plugin through
//! the engine API and by hand); `docker run --network` gives an interface on the bridge with
//! the network's MTU and an address of this host's range; two containers ping each other and
//! the gateway; allocations stay exact through connect/disconnect, stop/start and rm; hostile
//! requests get the API's error replies and the plugin keeps serving; a plugin restarted under
//! running containers keeps them connected and rebuilds its state.

mod fixture;

use dnet_plugins::docker::engine::{Engine, Ensured};
use dnet_plugins::docker::{DockerOptions, DockerPlugin};
use dnet_plugins::Backend;
use fixture::{blue, red, wait_for, Host};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const IMAGE: &str = "dnetbox";
const APPLETS: [&str; 6] = ["sh", "sleep", "ping", "ip", "cat", "true"];

/// One dockerd inside a host namespace with its own plugin directory; on drop: containers
/// removed first (their shims outlive dockerd), then the daemon stopped (SIGTERM, wait), then
/// whatever it left mounted is unmounted.
struct Dockerd {
    child: Child,
    sock: PathBuf,
    root: PathBuf,
    cli_config: PathBuf,
}

impl Dockerd {
    fn start(host: &Host) -> Dockerd {
        let root = host.dir.join("docker");
        let plugins = host.dir.join("plugins");
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
            .arg(format!("--net={}", host.ns_path().display()))
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
            cli_config: root.join("cli"),
            root,
        };
        let engine = Engine::new(&d.sock).unwrap();
        wait_for("dockerd to answer", Duration::from_secs(30), || {
            engine.version().ok()
        });
        d.import_busybox();
        d
    }

    fn docker(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .args(args)
            .env("DOCKER_CONFIG", &self.cli_config)
            .output()
            .expect("run docker");
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
        let out = Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .args(["import", "-", IMAGE])
            .env("DOCKER_CONFIG", &self.cli_config)
            .stdin(tar.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(tar.wait().unwrap().success(), "tar of the image directory");
        assert!(out.status.success(), "docker import: {:?}", out);
    }

    fn inspect(&self, container: &str, format: &str) -> String {
        self.ok(&["inspect", "-f", format, container])
    }

    /// The container's network namespace path.
    fn netns(&self, container: &str) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/ns/net",
            self.inspect(container, "{{.State.Pid}}")
        ))
    }

    /// Address, MAC and endpoint id of `container` on `network`.
    fn endpoint(&self, container: &str, network: &str) -> (Ipv4Addr, String, String) {
        let f = |k: &str| {
            self.inspect(
                container,
                &format!("{{{{.NetworkSettings.Networks.{network}.{k}}}}}"),
            )
        };
        (
            f("IPAddress").parse().unwrap(),
            f("MacAddress"),
            f("EndpointID"),
        )
    }

    fn run(&self, name: &str, network: &str) {
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
    }

    /// `ping -c 2` from `container` to `dst`: both answered.
    fn pings(&self, container: &str, dst: Ipv4Addr) {
        let out = self.ok(&[
            "exec",
            container,
            "ping",
            "-c",
            "2",
            "-W",
            "2",
            &dst.to_string(),
        ]);
        assert!(
            out.contains("2 packets received"),
            "{container} -> {dst}: {out}"
        );
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
        // Whatever the daemon left mounted under its directory (its own mounts were in its
        // private mount namespace, which ended with it).
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

fn start_plugin(host: &Host, d: &Dockerd) -> DockerPlugin {
    let backend: Arc<dyn Backend> = host.backend.clone();
    let opts = DockerOptions {
        plugin_dir: host.dir.join("plugins"),
        engine: Some(d.sock.clone()),
        ensure_networks: true,
    };
    let p = dnet_testbed::netns::in_netns(&host.ns, move || DockerPlugin::start(backend, &opts))
        .unwrap()
        .unwrap();
    assert!(p.engine_error.is_none(), "{:?}", p.engine_error);
    assert!(p.restored.problems.is_empty(), "{:?}", p.restored);
    p
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

/// The host end of an endpoint's veth, found by its alias, must be a port of `bridge`.
fn assert_on_bridge(host: &Host, endpoint: &str, bridge_index: u32) {
    let alias = format!("dnet:docker:{endpoint}");
    let l = Host::links_in(&host.ns_path())
        .into_iter()
        .find(|l| l.alias.as_deref() == Some(alias.as_str()))
        .unwrap_or_else(|| panic!("no host veth with alias {alias}"));
    assert_eq!(l.master, Some(bridge_index), "{} not on the bridge", l.name);
}

fn owners(host: &Host, network: &str) -> Vec<(Ipv4Addr, String)> {
    host.held(network)
}

#[test]
#[cfg_attr(
    not(dnet_plugins_root),
    ignore = "needs root: network namespaces and dockerd; run cargo test as root"
)]
fn docker_networks_containers_and_hostile_requests() {
    let t0 = Instant::now();
    let host = Host::new("dd", vec![blue(), red()]);
    let plugin: Option<DockerPlugin>;
    let d = Dockerd::start(&host);
    let (b, r) = (blue(), red());
    plugin = Some(start_plugin(&host, &d));
    let p = plugin.as_ref().unwrap();
    // The plugin made both Docker networks through the engine.
    assert!(
        p.ensured
            .iter()
            .all(|(_, e)| matches!(e, Ok(Ensured::Created(_)))),
        "{:?}",
        p.ensured
    );
    assert_eq!(
        d.ok(&[
            "network",
            "inspect",
            "-f",
            "{{.Driver}} {{.IPAM.Driver}}",
            "blue"
        ]),
        "dnet dnet"
    );
    assert_eq!(
        d.ok(&[
            "network",
            "inspect",
            "-f",
            "{{index .Options \"com.docker.network.driver.mtu\"}}",
            "blue"
        ]),
        "1450"
    );
    // By hand, too.
    d.ok(&["network", "rm", "red"]);
    d.ok(&[
        "network",
        "create",
        "-d",
        "dnet",
        "--ipam-driver",
        "dnet",
        "--subnet",
        "10.78.0.0/16",
        "red",
    ]);

    // Two containers on blue: interface on the bridge, blue's MTU, addresses of this range.
    d.run("c1", "blue");
    d.run("c2", "blue");
    let (a1, mac1, ep1) = d.endpoint("c1", "blue");
    let (a2, mac2, ep2) = d.endpoint("c2", "blue");
    for (c, a, ep) in [("c1", a1, &ep1), ("c2", a2, &ep2)] {
        assert!(b.range.contains(&a), "{c} got {a}, outside {}", b.range);
        let ns = d.netns(c);
        let eth = Host::link_in(&ns, "eth0").expect("eth0 in the container");
        assert_eq!(eth.mtu, Some(b.mtu), "{c} MTU");
        assert_eq!(Host::addrs_in(&ns, "eth0"), vec![(a, 16)], "{c} address");
        assert_on_bridge(&host, ep, host.bridge_index(&b));
    }
    assert_ne!(a1, a2);
    assert_eq!(
        owners(&host, "blue"),
        vec![
            (a1, format!("docker-mac:{mac1}")),
            (a2, format!("docker-mac:{mac2}"))
        ]
    );
    d.pings("c1", a2);
    d.pings("c2", a1);
    d.pings("c1", b.gateway);

    // connect / disconnect: red gets an allocation and an interface, then loses both.
    d.ok(&["network", "connect", "red", "c1"]);
    let (ar, _, epr) = d.endpoint("c1", "red");
    assert!(r.range.contains(&ar), "{ar}");
    assert_eq!(
        Host::link_in(&d.netns("c1"), "eth1").unwrap().mtu,
        Some(r.mtu)
    );
    assert_on_bridge(&host, &epr, host.bridge_index(&r));
    assert_eq!(owners(&host, "red").len(), 1);
    d.pings("c1", r.gateway);
    d.ok(&["network", "disconnect", "red", "c1"]);
    assert!(owners(&host, "red").is_empty());
    assert!(Host::link_in(&d.netns("c1"), "eth1").is_none());
    assert_eq!(owners(&host, "blue").len(), 2);

    // stop releases, start allocates again; rm frees; a freed address is reused, a live never.
    d.ok(&["stop", "-t", "0", "c2"]);
    assert_eq!(
        owners(&host, "blue"),
        vec![(a1, format!("docker-mac:{mac1}"))]
    );
    d.ok(&["start", "c2"]);
    let (a2b, _, _) = d.endpoint("c2", "blue");
    assert_ne!(a2b, a1);
    assert_eq!(owners(&host, "blue").len(), 2);
    d.ok(&["rm", "-f", "c2"]);
    assert_eq!(owners(&host, "blue").len(), 1);
    d.run("c3", "blue");
    let (a3, _, _) = d.endpoint("c3", "blue");
    assert_eq!(a3, a2b, "the freed address is the lowest free one");
    assert_ne!(a3, a1);
    d.pings("c3", a1);

    // Hostile requests, straight to the plugin socket.
    let sock = plugin.as_ref().unwrap().socket().to_path_buf();
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
    let blue_id = d.ok(&["network", "inspect", "-f", "{{.Id}}", "blue"]);
    let (s, v) = raw(
        &sock,
        "NetworkDriver.CreateEndpoint",
        &json!({"NetworkID":blue_id,"EndpointID":ep1,
        "Interface":{"Address":"10.77.3.99/16","MacAddress":"02:00:00:00:00:99"}})
        .to_string(),
    );
    assert_eq!(s, 500);
    assert!(err_of(&v).contains("exists already"), "{v}");
    let (s, v) = raw(
        &sock,
        "IpamDriver.RequestAddress",
        &json!({"PoolID":"dnet:blue","Address":"10.77.9.9",
        "Options":{"com.docker.network.endpoint.macaddress":"02:00:00:00:00:98"}})
        .to_string(),
    );
    assert_eq!(s, 500);
    assert!(
        err_of(&v).contains("outside this host's range 10.77.3.0/24"),
        "{v}"
    );
    let (s, v) = raw(
        &sock,
        "IpamDriver.RequestAddress",
        &json!({"PoolID":"dnet:blue","Address":a1.to_string(),
        "Options":{"com.docker.network.endpoint.macaddress":"02:00:00:00:00:97"}})
        .to_string(),
    );
    assert_eq!(s, 500);
    assert!(err_of(&v).contains("already held by"), "{v}");
    let (s, v) = raw(
        &sock,
        "IpamDriver.ReleaseAddress",
        &json!({"PoolID":"dnet:blue","Address":a1.to_string()}).to_string(),
    );
    assert_eq!(s, 500);
    assert!(err_of(&v).contains("in use by endpoint"), "{v}");
    let (s, v) = raw(&sock, "NetworkDriver.Frobnicate", "{}");
    assert_eq!(s, 404, "{v}");
    let (s, v) = raw(&sock, "Plugin.Activate", "");
    assert_eq!(
        (s, &v["Implements"]),
        (200, &json!(["NetworkDriver", "IpamDriver"]))
    );
    // Nothing changed, and the plugin still serves Docker.
    assert_eq!(owners(&host, "blue").len(), 2);
    d.run("c4", "blue");
    let (a4, _, _) = d.endpoint("c4", "blue");
    assert!(![a1, a3].contains(&a4));
    d.pings("c4", a1);
    assert_eq!(owners(&host, "blue").len(), 3);

    d.ok(&["rm", "-f", "c1", "c3", "c4"]);
    assert!(
        owners(&host, "blue").is_empty(),
        "{:?}",
        owners(&host, "blue")
    );
    drop(d);
    drop(plugin);
    eprintln!(
        "docker_networks_containers_and_hostile_requests: {:?}",
        t0.elapsed()
    );
}

#[test]
#[cfg_attr(
    not(dnet_plugins_root),
    ignore = "needs root: network namespaces and dockerd; run cargo test as root"
)]
fn docker_plugin_restart_keeps_containers_and_rebuilds_state() {
    let t0 = Instant::now();
    let host = Host::new("dr", vec![blue()]);
    let b = blue();
    let mut plugin: Option<DockerPlugin>;
    let d = Dockerd::start(&host);
    plugin = Some(start_plugin(&host, &d));
    d.run("c1", "blue");
    d.run("c2", "blue");
    let (a1, mac1, _) = d.endpoint("c1", "blue");
    let (a2, _, ep2) = d.endpoint("c2", "blue");
    d.pings("c1", a2);

    // The plugin goes away; the containers stay connected.
    plugin.take().unwrap().stop();
    assert!(!host.dir.join("plugins/dnet.sock").exists());
    d.pings("c1", a2);
    d.pings("c2", b.gateway);
    // Meanwhile an address was left held with no endpoint (a crash between RequestAddress and
    // CreateEndpoint): the restart must free it.
    let leaked = host
        .backend
        .allocate("blue", "docker-mac:02:00:00:00:00:ee", None)
        .unwrap();

    // Restarted: takes over both endpoints, frees the leaked address, keeps the Docker network.
    plugin = Some(start_plugin(&host, &d));
    let p = plugin.as_ref().unwrap();
    assert_eq!(
        (p.restored.networks, p.restored.endpoints),
        (1, 2),
        "{:?}",
        p.restored
    );
    assert_eq!(
        p.restored.released,
        vec![(
            "blue".to_string(),
            leaked,
            "docker-mac:02:00:00:00:00:ee".to_string()
        )]
    );
    assert!(
        matches!(p.ensured[0].1, Ok(Ensured::Existed(_))),
        "{:?}",
        p.ensured
    );
    assert_eq!(owners(&host, "blue").len(), 2);
    d.pings("c1", a2);

    // The rebuilt state is exact: removing c2 frees its address and its veth.
    d.ok(&["rm", "-f", "c2"]);
    assert_eq!(
        owners(&host, "blue"),
        vec![(a1, format!("docker-mac:{mac1}"))]
    );
    let alias = format!("dnet:docker:{ep2}");
    assert!(Host::links_in(&host.ns_path())
        .iter()
        .all(|l| l.alias.as_deref() != Some(alias.as_str())));
    // A new container never gets the live address, and reaches the old one.
    d.run("c3", "blue");
    let (a3, _, _) = d.endpoint("c3", "blue");
    assert_ne!(a3, a1);
    d.pings("c3", a1);
    d.ok(&["rm", "-f", "c1", "c3"]);
    assert!(owners(&host, "blue").is_empty());
    drop(d);
    drop(plugin);
    eprintln!(
        "docker_plugin_restart_keeps_containers_and_rebuilds_state: {:?}",
        t0.elapsed()
    );
}
