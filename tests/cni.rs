//! `dnet-cni` through a running switch, end to end: two hosts join etcd network blue
//! (`dnet-switch --network blue --bridge br0`); on each, dnet-cni is called the way a runtime
//! calls it (CNI_* in the environment, the network config on stdin, config `socket` naming the
//! switch's control socket). ADD plugs a namespace into blue with an address from the switch's
//! etcd allocator (the one `dnetctl attach` uses), the two namespaces ping each other across
//! the hosts, CHECK verifies, DEL frees the address in etcd and is idempotent.

use dnet_e2e::fleet_support::{create_network, fleet_switch, wait_for, Etcd};
use dnet_proto::{PortKind, Request, Response};
use dnet_testbed::traffic::ping;
use dnet_testbed::{Switch, Testbed};
use serde_json::{json, Value};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const READY: Duration = Duration::from_secs(20);

fn cni_bin() -> PathBuf {
    let p = dnet_testbed::switch_binary()
        .expect("dnet-switch binary")
        .with_file_name("dnet-cni");
    assert!(
        p.is_file(),
        "{} not found: run `cargo build --workspace` first",
        p.display()
    );
    p
}

/// dnet-cni in host namespace `ns`, as a runtime runs it.
fn cni(ns: &str, command: &str, container: &str, netns: &str, conf: &Value) -> Output {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(cni_bin())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", format!("/run/netns/{netns}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dnet-cni");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    eprintln!(
        "dnet-cni {command} {container}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn held(sw: &Switch) -> Vec<(Ipv4Addr, String)> {
    let req = Request::Allocations {
        network: Some("blue".into()),
    };
    match dnet_proto::request(&sw.socket, &req, Duration::from_secs(5)) {
        Ok(Response::Allocations(l)) => l
            .allocations
            .into_iter()
            .map(|a| (a.address, a.container))
            .collect(),
        other => panic!("allocations: {other:?}"),
    }
}

fn tunnels(sw: &Switch) -> usize {
    sw.stats().map_or(0, |s| {
        s.ports
            .iter()
            .filter(|p| p.kind == PortKind::Tunnel)
            .count()
    })
}

#[test]
#[cfg_attr(not(dnet_e2e_root), ignore = "needs root: run cargo test as root")]
fn cni_add_check_del_through_the_switch_on_two_hosts() {
    let tb = Testbed::new(3).expect("testbed");
    let etcd = Etcd::single(&tb);
    create_network(&etcd, "blue", "10.78.0.0/16", &["--key", "1"]);
    let opts = fleet_switch(&etcd, "blue", &[]);
    let switches: Vec<Switch> = (0..2)
        .map(|i| tb.start_switch_with(i, &opts).expect("switch"))
        .collect();
    for sw in &switches {
        assert!(wait_for(READY, || tunnels(sw) == 1), "no tunnel");
    }

    let mut addrs = Vec::new();
    let mut pods = Vec::new();
    for (i, sw) in switches.iter().enumerate() {
        let ns = &tb.host(i).ns;
        let pod = tb.add_extra_netns(&format!("p{i}")).unwrap();
        let conf = json!({"cniVersion":"1.0.0","name":"blue","type":"dnet-cni",
            "socket": sw.socket.display().to_string()});
        let out = cni(ns, "ADD", &format!("pod{i}"), &pod, &conf);
        assert!(out.status.success(), "ADD failed");
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["cniVersion"], "1.0.0");
        let ip = r["ips"][0]["address"].as_str().unwrap();
        let addr: Ipv4Addr = ip.split('/').next().unwrap().parse().unwrap();
        assert!(ip.ends_with("/16"), "{ip}");
        // The address is the switch's allocation in etcd, held by this attachment.
        assert_eq!(held(sw), [(addr, format!("cni:pod{i}/eth0"))]);
        let show = dnet_proto::request(&sw.socket, &Request::Show, Duration::from_secs(5));
        let Ok(Response::Show(show)) = show else {
            panic!("show")
        };
        let range = show.fleet.unwrap().range.unwrap();
        let (net, len) = range.split_once('/').unwrap();
        let mask = u32::MAX << (32 - len.parse::<u32>().unwrap());
        assert_eq!(
            u32::from(addr) & mask,
            u32::from(net.parse::<Ipv4Addr>().unwrap()),
            "{addr} outside {range}"
        );
        let check = cni(ns, "CHECK", &format!("pod{i}"), &pod, &{
            let mut c = conf.clone();
            c["prevResult"] = r.clone();
            c
        });
        assert!(check.status.success(), "CHECK failed");
        addrs.push(addr);
        pods.push((pod, conf));
    }

    // Across the hosts, both ways.
    for (from, to) in [(0, 1), (1, 0)] {
        let r = ping(&pods[from].0, addrs[to], 3, Duration::from_secs(2)).expect("ping");
        assert_eq!(r.received, 3, "pod{from} -> {}", addrs[to]);
    }

    // A network this switch does not serve: a CNI error on stdout, exit status non-zero.
    let mut green = pods[0].1.clone();
    green["name"] = "green".into();
    let out = cni(&tb.host(0).ns, "ADD", "pod9", &pods[0].0, &green);
    assert!(!out.status.success());
    let e: Value = serde_json::from_slice(&out.stdout).expect("CNI error JSON");
    assert!(e["code"].as_u64().is_some_and(|c| c > 0), "{e}");
    assert!(
        e["details"]
            .as_str()
            .is_some_and(|m| m.contains("\"green\"")),
        "{e}"
    );
    assert_eq!(
        held(&switches[0]).len(),
        1,
        "a refused ADD changed the allocations"
    );

    // DEL frees the address in etcd; a second DEL is no error.
    for (i, sw) in switches.iter().enumerate() {
        let (pod, conf) = &pods[i];
        for _ in 0..2 {
            let out = cni(&tb.host(i).ns, "DEL", &format!("pod{i}"), pod, conf);
            assert!(out.status.success(), "DEL failed");
        }
        assert!(held(sw).is_empty(), "DEL kept {:?}", held(sw));
    }
}
