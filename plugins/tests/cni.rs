//! `dnet-cni` invoked the way a container runtime does: `CNI_*` in the environment, the network
//! configuration on stdin, run in the host's namespace, against a stand-in switch that serves
//! the allocation requests on a control socket with the in-memory backend
//! (`dnet_plugins::control::answer_line`, what the switch's control loop would call).

mod fixture;

use dnet_plugins::control::answer_line;
use dnet_plugins::Backend;
use fixture::{blue, Host};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The switch's control socket, answering the allocation requests with the host's backend.
struct StandInSwitch {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StandInSwitch {
    fn start(host: &Host) -> StandInSwitch {
        let path = host.dir.join("dnet0.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let backend: Arc<dyn Backend> = host.backend.clone();
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut c) = conn else { continue };
                let mut line = String::new();
                if BufReader::new(&c).read_line(&mut line).is_ok() {
                    let _ = writeln!(c, "{}", answer_line(backend.as_ref(), &line));
                }
            }
        });
        StandInSwitch {
            path,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for StandInSwitch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.path); // wakes the accept loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What one plugin run printed and how it exited.
#[derive(Debug)]
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
    /// The CNI error code (the run must have failed with an error object on stdout).
    fn code(&self) -> u64 {
        assert!(!self.ok, "expected a failure: {self:?}");
        assert!(self.stderr.starts_with("dnet-cni: "), "{self:?}");
        let v = self.json();
        assert!(v["msg"].is_string() && v["details"].is_string(), "{v}");
        v["code"].as_u64().unwrap()
    }
}

/// Runs dnet-cni in the host namespace with `env` and `stdin`, as a runtime does.
fn cni(host: &Host, env: &[(&str, &str)], stdin: &str) -> Run {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", host.ns_path().display()))
        .arg(env!("CARGO_BIN_EXE_dnet-cni"))
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    }
}

fn conf(socket: &Path, extra: Value) -> String {
    let mut c = json!({"cniVersion":"1.0.0","name":"blue","type":"dnet-cni","socket":socket});
    if let (Some(o), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    c.to_string()
}

fn env<'a>(cmd: &'a str, cid: &'a str, netns: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", cid),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
    ]
}

#[test]
#[cfg_attr(
    not(dnet_plugins_root),
    ignore = "needs root: network namespaces; run cargo test as root"
)]
fn cni_add_check_del_round_trip_and_errors() {
    let t0 = Instant::now();
    let host = Host::new("dc", vec![blue()]);
    let b = blue();
    let switch = StandInSwitch::start(&host);
    let ns = host.add_netns("c");
    let netns = format!("/run/netns/{ns}");
    let c = conf(&switch.path, json!({"defaultRoute": true}));

    // VERSION.
    let v = cni(
        &host,
        &[("CNI_COMMAND", "VERSION")],
        r#"{"cniVersion":"1.0.0"}"#,
    );
    assert!(v.ok, "{v:?}");
    assert_eq!(
        v.json()["supportedVersions"],
        json!(["0.4.0", "1.0.0", "1.1.0"])
    );

    // ADD: a spec-conformant result, an interface in the namespace with blue's MTU and an
    // address of this host's range, its host end on blue's bridge.
    let add = cni(&host, &env("ADD", "ctr1", &netns), &c);
    assert!(add.ok, "{add:?}");
    let r = add.json();
    assert_eq!(r["cniVersion"], "1.0.0");
    assert_eq!(r["interfaces"][1]["name"], "eth0");
    assert_eq!(r["interfaces"][1]["sandbox"], netns.as_str());
    assert_eq!(r["ips"][0]["interface"], 1);
    assert_eq!(r["ips"][0]["gateway"], "10.77.3.1");
    assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
    let cidr = r["ips"][0]["address"].as_str().unwrap();
    let addr: Ipv4Addr = cidr.split('/').next().unwrap().parse().unwrap();
    assert!(cidr.ends_with("/16") && b.range.contains(&addr), "{cidr}");
    assert_eq!(host.held("blue"), vec![(addr, "cni:ctr1/eth0".to_string())]);
    let eth0 = Host::link_in(Path::new(&netns), "eth0").unwrap();
    assert_eq!(eth0.mtu, Some(b.mtu));
    assert_eq!(
        eth0.mac
            .map(|m| dnet_plugins::veth::format_mac(&m))
            .as_deref(),
        r["interfaces"][1]["mac"].as_str()
    );
    let host_if = r["interfaces"][0]["name"].as_str().unwrap();
    let hl = Host::link_in(&host.ns_path(), host_if).unwrap();
    assert_eq!(hl.master, Some(host.bridge_index(&b)));
    dnet_testbed::wait_link_up(&ns, "eth0").unwrap();
    let p = dnet_testbed::traffic::ping(&ns, b.gateway, 3, Duration::from_secs(5)).unwrap();
    assert_eq!(p.received, 3, "{p:?}");

    // CHECK with ADD's result.
    let mut checked: Value = serde_json::from_str(&c).unwrap();
    checked["prevResult"] = r.clone();
    let check = cni(&host, &env("CHECK", "ctr1", &netns), &checked.to_string());
    assert!(check.ok && check.stdout.is_empty(), "{check:?}");

    // Errors, each with its code; none of them changes the allocation.
    assert_eq!(
        cni(&host, &env("ADD", "ctr1", &netns), &c).code(),
        100,
        "eth0 exists"
    );
    assert_eq!(cni(&host, &[("CNI_COMMAND", "ADD")], &c).code(), 4);
    assert_eq!(
        cni(&host, &env("ADD", "ctr2", &netns), "{\"cniVersion\":").code(),
        6
    );
    let old = c.replace("\"1.0.0\"", "\"0.2.0\"");
    assert_eq!(cni(&host, &env("ADD", "ctr2", &netns), &old).code(), 1);
    let ipam = conf(&switch.path, json!({"ipam": {"type": "host-local"}}));
    assert_eq!(cni(&host, &env("ADD", "ctr2", &netns), &ipam).code(), 2);
    assert_eq!(
        cni(
            &host,
            &env("ADD", "ctr2", "/run/netns/nonexistent-dnet"),
            &c
        )
        .code(),
        3
    );
    let red = conf(&switch.path, json!({"name": "red"}));
    assert_eq!(cni(&host, &env("ADD", "ctr2", &netns), &red).code(), 7);
    let down = conf(&host.dir.join("no-switch.sock"), json!({}));
    assert_eq!(cni(&host, &env("ADD", "ctr2", &netns), &down).code(), 11);
    let ns2 = host.add_netns("d");
    let netns2 = format!("/run/netns/{ns2}");
    let mut far = env("ADD", "ctr2", &netns2);
    far.push(("CNI_ARGS", "IgnoreUnknown=1;IP=10.77.9.9"));
    let refused = cni(&host, &far, &c);
    assert_eq!(refused.code(), 101);
    assert!(refused.json()["details"]
        .as_str()
        .unwrap()
        .contains("outside this host's range"));
    assert_eq!(host.held("blue").len(), 1);

    // CHECK notices a change.
    dnet_testbed::cmd::ipn(&ns, &format!("addr del {cidr} dev eth0")).unwrap();
    assert_eq!(
        cni(&host, &env("CHECK", "ctr1", &netns), &checked.to_string()).code(),
        103
    );

    // DEL frees the address and the interfaces; DEL again is fine.
    let del = cni(&host, &env("DEL", "ctr1", &netns), &c);
    assert!(del.ok && del.stdout.is_empty(), "{del:?}");
    assert!(host.held("blue").is_empty());
    assert!(Host::link_in(&host.ns_path(), host_if).is_none());
    assert!(Host::link_in(Path::new(&netns), "eth0").is_none());
    let del = cni(&host, &env("DEL", "ctr1", &netns), &c);
    assert!(del.ok, "{del:?}");

    // STATUS (1.1.0) says ready; GC frees attachments the runtime no longer lists.
    let c11 = c.replace("\"1.0.0\"", "\"1.1.0\"");
    let st = cni(&host, &[("CNI_COMMAND", "STATUS")], &c11);
    assert!(st.ok, "{st:?}");
    for (cid, n) in [("keep", &netns), ("gone", &netns2)] {
        let a = cni(&host, &env("ADD", cid, n), &c11);
        assert!(a.ok, "{a:?}");
        assert!(
            a.json()["interfaces"][1]["mtu"] == b.mtu,
            "1.1.0 results carry the MTU"
        );
    }
    assert_eq!(host.held("blue").len(), 2);
    let mut gc: Value = serde_json::from_str(&c11).unwrap();
    gc["cni.dev/attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    let g = cni(&host, &[("CNI_COMMAND", "GC")], &gc.to_string());
    assert!(g.ok, "{g:?}");
    let held = host.held("blue");
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].1, "cni:keep/eth0");
    assert!(
        Host::link_in(Path::new(&netns2), "eth0").is_none(),
        "GC removed the veth"
    );
    assert!(Host::link_in(Path::new(&netns), "eth0").is_some());
    let del = cni(&host, &env("DEL", "keep", &netns), &c11);
    assert!(del.ok, "{del:?}");
    assert!(host.held("blue").is_empty());
    drop(switch);
    eprintln!(
        "cni_add_check_del_round_trip_and_errors: {:?}",
        t0.elapsed()
    );
}
