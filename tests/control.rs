//! Live control of running switches through the real `dnetctl` binary: `show`, `fdb`,
//! `stats -j`, `peer add/del` under traffic, `conflicts` for a planted duplicate IP, the
//! Prometheus endpoint, the config file with SIGHUP reload, and systemd readiness.

use dnet_testbed::cmd::ipn;
use dnet_testbed::netns::in_netns;
use dnet_testbed::traffic::ping;
use dnet_testbed::{switch_binary, Switch, SwitchOptions, Testbed, BRIDGE};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The dnetctl binary next to dnet-switch in target/<profile>/.
fn dnetctl_bin() -> PathBuf {
    let p = switch_binary()
        .expect("dnet-switch binary")
        .with_file_name("dnetctl");
    assert!(
        p.is_file(),
        "{} not found: run `cargo build --workspace` first",
        p.display()
    );
    p
}

fn dnetctl(sw: &Switch, args: &[&str]) -> Output {
    Command::new(dnetctl_bin())
        .args(args)
        .arg("--socket")
        .arg(&sw.socket)
        .output()
        .expect("running dnetctl")
}

/// Runs `dnetctl ARGS --socket S`, expects success, returns stdout.
fn ctl_text(sw: &Switch, args: &[&str]) -> String {
    let out = dnetctl(sw, args);
    assert!(
        out.status.success(),
        "dnetctl {args:?} failed: {}\nswitch log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        sw.stderr()
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs `dnetctl ARGS -j --socket S` and parses its JSON.
fn ctl_json(sw: &Switch, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("-j");
    let t = ctl_text(sw, &a);
    serde_json::from_str(&t).unwrap_or_else(|e| panic!("dnetctl {args:?} -j: {e}\n{t}"))
}

fn mac_of(ns: &str, dev: &str) -> String {
    let out = ipn(ns, &format!("-o link show dev {dev}")).expect("ip link show");
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("link/ether in ip link output")
        .to_string()
}

/// Polls `f` every 100 ms until it returns Some, at most `timeout`.
fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tunnel_names(show: &Value) -> Vec<String> {
    show["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter(|p| p["kind"] == "tunnel")
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn conflicts_reports_a_planted_duplicate_ip() {
    let tb = Testbed::new(2).expect("building testbed");
    let sw = tb.start_switches().expect("starting switches");
    let (a, b) = (tb.host(0), tb.host(1));
    assert_eq!(
        ctl_json(&sw[0], &["conflicts"])["conflicts"],
        Value::Array(vec![]),
        "conflicts before any duplicate"
    );
    // Plant the duplicate: b's container takes a's address, as when two hosts' IPAMs hand out
    // the same container IP.
    let dup = a.container_ip;
    ipn(
        &b.container_ns,
        &format!("addr del {}/24 dev eth0", b.container_ip),
    )
    .unwrap();
    ipn(
        &b.container_ns,
        &format!("addr add {dup}/24 brd + dev eth0"),
    )
    .unwrap();
    let (mac_a, mac_b) = (
        mac_of(&a.container_ns, "eth0"),
        mac_of(&b.container_ns, "eth0"),
    );
    // Each container ARPs ("who-has 10.77.0.99 tell <dup>") for an absent neighbour; the
    // broadcasts cross both switches.
    let absent = Ipv4Addr::new(10, 77, 0, 99);
    for ns in [&a.container_ns, &b.container_ns] {
        let _ = ping(ns, absent, 1, Duration::from_millis(300)).expect("ping");
    }
    for (i, s) in sw.iter().enumerate() {
        let c = eventually(Duration::from_secs(5), || {
            let v = ctl_json(s, &["conflicts"]);
            let list = v["conflicts"].as_array().unwrap().clone();
            list.into_iter()
                .find(|c| c["ip"] == dup.to_string().as_str())
        })
        .unwrap_or_else(|| panic!("switch {i} lists no conflict for {dup}"));
        let macs: Vec<&str> = c["claims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["mac"].as_str().unwrap())
            .collect();
        assert!(
            macs.contains(&mac_a.as_str()) && macs.contains(&mac_b.as_str()),
            "switch {i}: {c}"
        );
        for k in c["claims"].as_array().unwrap() {
            assert!(k["port"].is_string() && k["age_ms"].is_u64(), "{k}");
        }
        assert!(c["count"].as_u64().unwrap() >= 1);
        assert_eq!(c["vlan"], 0);
        let text = ctl_text(s, &["conflicts"]);
        eprintln!(
            "dnetctl conflicts (switch {i}):\n{text}{}",
            serde_json::to_string_pretty(&c).unwrap()
        );
        assert!(text.starts_with("IP "), "{text}");
        assert!(
            text.contains(&dup.to_string()) && text.contains(&mac_a) && text.contains(&mac_b),
            "{text}"
        );
    }
    // On a's switch, a's container is local and b's is behind the tunnel.
    let v = ctl_json(&sw[0], &["conflicts"]);
    let ports: Vec<(String, String)> = v["conflicts"][0]["claims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["mac"].as_str().unwrap().into(),
                k["port"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        ports.contains(&(mac_a.clone(), "dnet0".into())),
        "{ports:?}"
    );
    assert!(
        ports.contains(&(mac_b.clone(), format!("gre-{}", b.underlay_ip))),
        "{ports:?}"
    );
}

/// Pings `dst` from `ns` every 20 ms until stopped; returns (sent, received).
fn steady_ping(
    ns: String,
    dst: Ipv4Addr,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u32, u32)> {
    std::thread::spawn(move || {
        let (mut sent, mut got) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            let r = ping(&ns, dst, 1, Duration::from_secs(1)).expect("ping");
            sent += r.sent;
            got += r.received;
            std::thread::sleep(Duration::from_millis(20));
        }
        (sent, got)
    })
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn peer_add_and_del_at_run_time_leave_other_peers_flowing() {
    let tb = Testbed::new(3).expect("building testbed");
    let (a, b, c) = (tb.host(0), tb.host(1), tb.host(2));
    // a knows only b; b and c know everyone.
    let sa = tb
        .start_switch_with(
            0,
            &SwitchOptions {
                peers: Some(vec![b.underlay_ip]),
                ..SwitchOptions::default()
            },
        )
        .expect("switch a");
    let _sb = tb.start_switch(1).expect("switch b");
    let _sc = tb.start_switch(2).expect("switch c");
    let t = Duration::from_secs(2);
    assert_eq!(
        ping(&a.container_ns, b.container_ip, 3, t)
            .unwrap()
            .received,
        3
    );
    // Without the peer, c is unreachable from a (b never relays tunnel to tunnel).
    assert_eq!(
        ping(
            &a.container_ns,
            c.container_ip,
            1,
            Duration::from_millis(700)
        )
        .unwrap()
        .received,
        0
    );

    let stop = Arc::new(AtomicBool::new(false));
    let bg = steady_ping(a.container_ns.clone(), b.container_ip, stop.clone());
    std::thread::sleep(Duration::from_millis(300));

    let c_ip = c.underlay_ip.to_string();
    let r = ctl_json(&sa, &["peer", "add", &c_ip]);
    assert_eq!(r["addr"], c_ip.as_str());
    assert_eq!(r["port"], format!("gre-{c_ip}").as_str());
    assert!(r["warnings"].as_array().unwrap().is_empty(), "{r}");
    let show = ctl_json(&sa, &["show"]);
    assert!(
        tunnel_names(&show).contains(&format!("gre-{c_ip}")),
        "{show}"
    );
    let port_c = show["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer"] == c_ip.as_str())
        .unwrap();
    assert_eq!(port_c["origin"], "runtime");
    // Adding it twice is refused.
    let dup = dnetctl(&sa, &["peer", "add", &c_ip]);
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already configured"));

    let reached = eventually(Duration::from_secs(6), || {
        (ping(
            &a.container_ns,
            c.container_ip,
            1,
            Duration::from_millis(500),
        )
        .unwrap()
        .received
            == 1)
            .then_some(())
    });
    assert!(
        reached.is_some(),
        "a cannot reach c after peer add\n{}",
        sa.stderr()
    );
    assert_eq!(
        ping(&a.container_ns, c.container_ip, 3, t)
            .unwrap()
            .received,
        3
    );

    let r = ctl_json(&sa, &["peer", "del", &c_ip]);
    assert_eq!(r["addr"], c_ip.as_str());
    assert!(!tunnel_names(&ctl_json(&sa, &["show"])).contains(&format!("gre-{c_ip}")));
    let p = ping(
        &a.container_ns,
        c.container_ip,
        3,
        Duration::from_millis(500),
    )
    .unwrap();
    assert_eq!(p.received, 0, "a still reaches c after peer del");
    let gone = dnetctl(&sa, &["peer", "del", &c_ip]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("not configured"));

    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (sent, got) = bg.join().unwrap();
    assert!(sent >= 20, "only {sent} pings a->b sent");
    assert_eq!(got, sent, "a<->b lost pings while c was added and removed");
    // Every change is in the switch's log.
    let log = sa.stderr();
    assert!(
        log.contains(&format!("peer {c_ip} added (runtime)")),
        "{log}"
    );
    assert!(
        log.contains(&format!("peer {c_ip} removed (runtime)")),
        "{log}"
    );
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn fdb_stats_and_show_outputs() {
    let tb = Testbed::new(2).expect("building testbed");
    let sw = tb.start_switches().expect("starting switches");
    let (a, b) = (tb.host(0), tb.host(1));
    let t = Duration::from_secs(2);
    assert_eq!(
        ping(&a.container_ns, b.container_ip, 3, t)
            .unwrap()
            .received,
        3
    );
    let (mac_a, mac_b) = (
        mac_of(&a.container_ns, "eth0"),
        mac_of(&b.container_ns, "eth0"),
    );
    let tunnel = format!("gre-{}", b.underlay_ip);

    // fdb show -j: documented fields.
    let fdb = ctl_json(&sw[0], &["fdb", "show"]);
    assert_eq!(fdb["aging_secs"], 300);
    let entries = fdb["entries"].as_array().expect("entries");
    for e in entries {
        for f in ["mac", "vlan", "port", "port_id", "age_ms"] {
            assert!(!e[f].is_null(), "fdb entry lacks {f}: {e}");
        }
    }
    let find = |mac: &str| {
        entries
            .iter()
            .find(|e| e["mac"] == mac)
            .unwrap_or_else(|| panic!("{mac} not in {fdb}"))
    };
    assert_eq!(find(&mac_a)["port"], "dnet0");
    assert_eq!(find(&mac_a)["port_id"], 0);
    assert_eq!(find(&mac_b)["port"], tunnel.as_str());
    assert!(find(&mac_b)["age_ms"].as_u64().unwrap() < 10_000);
    let text = ctl_text(&sw[0], &["fdb", "show"]);
    assert!(text.starts_with("PORT"), "{text}");
    assert!(text.contains(&mac_a) && text.contains(&mac_b), "{text}");

    // stats -j: documented fields.
    let st = ctl_json(&sw[0], &["stats"]);
    for f in [
        "tap",
        "mtu",
        "local",
        "workers",
        "fdb_entries",
        "ports",
        "drops",
        "events",
    ] {
        assert!(!st[f].is_null(), "stats lacks {f}: {st}");
    }
    for p in st["ports"].as_array().unwrap() {
        for f in [
            "name",
            "kind",
            "rx_packets",
            "rx_bytes",
            "tx_packets",
            "tx_bytes",
        ] {
            assert!(p[f].is_string() || p[f].is_u64(), "port lacks {f}: {p}");
        }
    }
    assert!(st["drops"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["reason"] == "unknown_peer" && d["count"].is_u64()));

    // show: human table and JSON.
    let text = ctl_text(&sw[0], &["show"]);
    eprintln!(
        "dnetctl show:\n{text}\ndnetctl fdb show:\n{}",
        ctl_text(&sw[0], &["fdb", "show"])
    );
    eprintln!(
        "{}\n{}",
        serde_json::to_string_pretty(&ctl_json(&sw[0], &["show"])).unwrap(),
        serde_json::to_string_pretty(&ctl_json(&sw[0], &["fdb", "show"])).unwrap()
    );
    assert!(text.starts_with("switch dnet0"), "{text}");
    assert!(text.contains(&format!("bridge {BRIDGE}")), "{text}");
    let row = text
        .lines()
        .find(|l| l.contains(&tunnel))
        .unwrap_or_else(|| panic!("no {tunnel} row in\n{text}"));
    assert!(row.contains("active") && row.contains("flag"), "{row}");
    assert!(text
        .lines()
        .any(|l| l.contains("dnet0") && l.contains("local")));
    let show = ctl_json(&sw[0], &["show"]);
    assert_eq!(show["tap"], "dnet0");
    assert_eq!(show["gre"]["ttl"], 64);
    assert_eq!(show["ports"][0]["state"], "up");
    assert_eq!(show["ports"][1]["state"], "active");

    // fdb flush --port, then everything.
    let r = ctl_json(
        &sw[0],
        &["fdb", "flush", "--port", &b.underlay_ip.to_string()],
    );
    assert!(r["removed"].as_u64().unwrap() >= 1, "{r}");
    let fdb = ctl_json(&sw[0], &["fdb", "show"]);
    assert!(
        fdb["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["port"] != tunnel.as_str()),
        "{fdb}"
    );
    let text = ctl_text(&sw[0], &["fdb", "flush"]);
    assert!(text.starts_with("flushed "), "{text}");
    let fdb = ctl_json(&sw[0], &["fdb", "show"]);
    assert_eq!(fdb["entries"], Value::Array(vec![]), "{fdb}");
    let bad = dnetctl(&sw[0], &["fdb", "flush", "--port", "nosuchport"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no port nosuchport"));
    // Still forwarding after the flush (relearned by flooding).
    assert_eq!(
        ping(&a.container_ns, b.container_ip, 2, t)
            .unwrap()
            .received,
        2
    );
}

fn http_get(ns: &str, addr: &str, path: &str) -> String {
    let (addr, path) = (addr.to_string(), path.to_string());
    in_netns(ns, move || {
        let mut s = std::net::TcpStream::connect(&addr).expect("connect to metrics");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read metrics");
        out
    })
    .expect("entering namespace")
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn metrics_endpoint_serves_the_counters() {
    let tb = Testbed::new(2).expect("building testbed");
    let addr = "127.0.0.1:9464";
    let sa = tb
        .start_switch_with(
            0,
            &SwitchOptions {
                extra_args: vec!["--metrics".into(), addr.into()],
                ..SwitchOptions::default()
            },
        )
        .expect("switch a");
    let _sb = tb.start_switch(1).expect("switch b");
    let (a, b) = (tb.host(0), tb.host(1));
    assert_eq!(
        ping(&a.container_ns, b.container_ip, 3, Duration::from_secs(2))
            .unwrap()
            .received,
        3
    );
    assert_eq!(ctl_json(&sa, &["show"])["metrics"], addr);
    let body = http_get(&a.ns, addr, "/metrics");
    assert!(body.starts_with("HTTP/1.0 200 OK\r\n"), "{body}");
    assert!(
        body.contains("Content-Type: text/plain; version=0.0.4"),
        "{body}"
    );
    let value = |prefix: &str| -> u64 {
        body.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{body}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(value("dnet_port_rx_packets_total{port=\"dnet0\"") >= 3);
    let tunnel = format!("dnet_port_tx_packets_total{{port=\"gre-{}\"", b.underlay_ip);
    assert!(value(&tunnel) >= 3);
    assert_eq!(value("dnet_drops_total{reason=\"wrong_key\"}"), 0);
    assert_eq!(value("dnet_arp_conflicts"), 0);
    let nf = http_get(&a.ns, addr, "/nope");
    assert!(nf.starts_with("HTTP/1.0 404"), "{nf}");
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn config_file_peers_follow_sighup_and_unknown_keys_are_refused() {
    let tb = Testbed::new(3).expect("building testbed");
    let (a, b, c) = (tb.host(0), tb.host(1), tb.host(2));
    let file = tb.dir().join("a.toml");
    let write = |peers: &[Ipv4Addr]| {
        let list: Vec<String> = peers.iter().map(|p| format!("\"{p}\"")).collect();
        std::fs::write(
            &file,
            format!(
                "# dnet-switch on host a\npeer = [{}]\nttl = 33\n",
                list.join(", ")
            ),
        )
        .unwrap();
    };
    write(&[b.underlay_ip]);
    let sa = tb
        .start_switch_with(
            0,
            &SwitchOptions {
                peers: Some(vec![]),
                extra_args: vec!["--config".into(), file.display().to_string()],
                ..SwitchOptions::default()
            },
        )
        .expect("switch a from a config file");
    let _sc = tb.start_switch(2).expect("switch c");
    let show = ctl_json(&sa, &["show"]);
    assert_eq!(show["gre"]["ttl"], 33, "ttl from the file");
    assert_eq!(show["config_file"], file.display().to_string().as_str());
    assert_eq!(tunnel_names(&show), vec![format!("gre-{}", b.underlay_ip)]);
    assert_eq!(show["ports"][1]["origin"], "config");

    let has = |names: &[String]| {
        let want: Vec<String> = names.to_vec();
        eventually(Duration::from_secs(5), || {
            let mut t = tunnel_names(&ctl_json(&sa, &["show"]));
            t.sort();
            (t == want).then_some(())
        })
        .is_some()
    };
    // Add c.
    write(&[b.underlay_ip, c.underlay_ip]);
    sa.signal(libc::SIGHUP).unwrap();
    let (gb, gc) = (
        format!("gre-{}", b.underlay_ip),
        format!("gre-{}", c.underlay_ip),
    );
    assert!(
        has(&[gb.clone(), gc.clone()]),
        "c not added on SIGHUP\n{}",
        sa.stderr()
    );
    let reached = eventually(Duration::from_secs(6), || {
        (ping(
            &a.container_ns,
            c.container_ip,
            1,
            Duration::from_millis(500),
        )
        .unwrap()
        .received
            == 1)
            .then_some(())
    });
    assert!(reached.is_some(), "a cannot reach c after the reload");
    // Drop b.
    write(&[c.underlay_ip]);
    sa.signal(libc::SIGHUP).unwrap();
    assert!(
        has(std::slice::from_ref(&gc)),
        "b not removed on SIGHUP\n{}",
        sa.stderr()
    );
    assert!(sa.stderr().contains(&format!("removed {}", b.underlay_ip)));
    // A broken file leaves the peers alone.
    std::fs::write(&file, "peer = [\"10.200.0.2\"\n").unwrap();
    sa.signal(libc::SIGHUP).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(has(&[gc]));
    assert!(
        sa.try_status().unwrap().is_none(),
        "switch died on a bad reload"
    );

    // An unknown key stops a starting switch, naming key and file.
    let bad = tb.dir().join("bad.toml");
    std::fs::write(&bad, "peer = [\"10.200.0.1\"]\nbrige = \"br0\"\n").unwrap();
    let sb = tb
        .spawn_switch(
            1,
            &SwitchOptions {
                peers: Some(vec![]),
                extra_args: vec!["--config".into(), bad.display().to_string()],
                ..SwitchOptions::default()
            },
        )
        .unwrap();
    let st = sb.wait_exit(Duration::from_secs(10)).unwrap();
    assert_eq!(st.code(), Some(1));
    let log = sb.stderr();
    assert!(log.contains("unknown key `brige`"), "{log}");
    assert!(log.contains(&bad.display().to_string()), "{log}");
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn systemd_readiness_is_notified_once_serving() {
    let tb = Testbed::new(2).expect("building testbed");
    let (a, b) = (tb.host(0), tb.host(1));
    // An abstract address, as systemd uses: abstract sockets belong to a network namespace,
    // so bind it inside host a's.
    let name = format!("{}-notify", tb.prefix());
    let n2 = name.clone();
    let sock = in_netns(&a.ns, move || {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(n2.as_bytes()).unwrap();
        std::os::unix::net::UnixDatagram::bind_addr(&addr).expect("bind notify socket")
    })
    .unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let ctl = PathBuf::from(format!("/run/dnet/{}-sd.sock", tb.prefix()));
    let mut cmd = Command::new(switch_binary().unwrap());
    cmd.env("NOTIFY_SOCKET", format!("@{name}"))
        .args(["--peer", &b.underlay_ip.to_string(), "--bridge", BRIDGE])
        .arg("--control-socket")
        .arg(&ctl);
    let _p = tb.spawn_in(&a.ns, "dnet-switch-notify", &cmd).unwrap();
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("READY=1 from dnet-switch");
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}");
    // Ready means serving: the control socket answers at once.
    let st = dnet_proto::stats(&ctl, Duration::from_secs(2)).expect("stats right after READY");
    assert_eq!(st.tap, "dnet0");
}
