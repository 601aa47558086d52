//! `dnetctl demo`: two simulated hosts, one container each, joined by two `dnet-switch`
//! processes, over plain GRE and then over GRE-in-UDP: pings and a verified TCP transfer
//! across each, the switches' counters, and the two side by side.

use crate::stats_cmd::{format_stats, human_bytes};
use anyhow::{bail, Context};
use clap::Args;
use dnet_testbed::{
    is_root, switch_binary, tap_port, traffic, tunnel_port, SwitchOptions, TeardownHandle, Testbed,
    BRIDGE,
};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Show dnet working: two simulated hosts joined by dnet-switch (needs root).
///
/// Builds two simulated hosts (network namespaces) with one container each, joins their
/// container bridges with two dnet-switch processes over plain GRE, then over GRE-in-UDP, and
/// shows traffic flowing over each: pings, a TCP transfer with every byte checked, and the
/// switches' per-port counters; then RTT and throughput side by side. Everything is torn
/// down at the end, on error and on Ctrl-C.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of pings from container a to container b.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pings: u32,
    /// Size of the TCP transfer in MiB (0 skips it).
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    mib: u64,
    /// dnet-switch binary to run [default: $DNET_SWITCH_BIN, else next to dnetctl].
    #[arg(long, value_name = "PATH")]
    switch_bin: Option<PathBuf>,
}

/// Runs the demo on a worker thread while this thread waits for it or for SIGINT/SIGTERM; on a
/// signal it tears the testbed down (through a handle shared before anything is built) and
/// exits 130, so Ctrl-C never leaves namespaces or switches behind.
pub fn run(a: DemoArgs) -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "dnetctl demo needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN for namespaces): run with sudo"
        );
    }
    let bin = match a.switch_bin.clone() {
        Some(p) if p.is_file() => p,
        Some(p) => bail!(
            "--switch-bin {}: no such file (build it with `cargo build --release`)",
            p.display()
        ),
        None => switch_binary()?,
    };
    let handle = TeardownHandle::new();
    let mut signals =
        Signals::new([SIGINT, SIGTERM]).context("installing SIGINT/SIGTERM handlers")?;
    let sig_handle = handle.clone();
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
            eprintln!("\ndnetctl: {name}: tearing down the demo network ...");
            sig_handle.teardown();
            eprintln!("dnetctl: torn down");
            std::process::exit(130);
        }
    });
    let worker = std::thread::spawn(move || demo(&a, bin, handle));
    worker
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

fn step(n: u32, msg: &str) {
    println!("\n[{n}/4] {msg}");
}

/// The two encapsulations the demo runs, one after the other on the same hosts: the name,
/// what to know when choosing, and the switch flags.
const ENCAPS: [(&str, &str, &[&str]); 2] = [
    (
        "plain GRE",
        "IP protocol 47, what Open vSwitch and Linux gretap speak (the default)",
        &[],
    ),
    (
        "GRE-in-UDP",
        "--encap udp: crosses NAT and clouds that drop protocol 47, and moves 64 KiB batches",
        &["--encap", "udp"],
    ),
];

/// What one encapsulation's run measured.
struct Run {
    name: &'static str,
    ping: traffic::PingResult,
    transfer: Option<traffic::TransferResult>,
    tap_rx: u64,
    tun_tx: u64,
    drops: u64,
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".to_string(),
        |d| format!("{:.3}", d.as_secs_f64() * 1e3),
    )
}

fn demo(a: &DemoArgs, bin: PathBuf, handle: TeardownHandle) -> anyhow::Result<()> {
    println!(
        "dnet demo: two simulated hosts joined by dnet-switch, over plain GRE, then GRE-in-UDP"
    );
    println!("switch binary: {}", bin.display());

    step(
        1,
        "building two hosts, each with a container, in network namespaces",
    );
    let tb = Testbed::with_teardown(2, bin, handle).context("building the demo network")?;
    let (ha, hb) = (tb.host(0).clone(), tb.host(1).clone());
    for h in [&ha, &hb] {
        println!(
            "  host {}: netns {:<14} underlay {}  bridge {}   container netns {:<14} eth0 {}",
            h.letter, h.ns, h.underlay_ip, BRIDGE, h.container_ns, h.container_ip
        );
    }

    let mut runs = Vec::with_capacity(ENCAPS.len());
    for (i, (name, about, flags)) in ENCAPS.into_iter().enumerate() {
        step(2 + i as u32, &format!("{name}: {about}"));
        runs.push(run_encap(a, &tb, name, flags)?);
    }

    step(
        4,
        "tearing down: deleting the namespaces (the switches were stopped after each run)",
    );
    let t = Instant::now();
    let names = tb.namespaces();
    drop(tb);
    let left = leftover_namespaces(&names);
    if !left.is_empty() {
        bail!(
            "namespaces still present after teardown: {}",
            left.join(" ")
        );
    }
    println!(
        "  removed {} namespaces in {:.1} s",
        names.len(),
        t.elapsed().as_secs_f64()
    );

    println!("\nsummary, the same two hosts, one encapsulation after the other:");
    println!(
        "  {:<12} {:>9} {:>13} {:>14} {:>8}",
        "", "pings", "avg rtt", "tcp", "drops"
    );
    for r in &runs {
        println!(
            "  {:<12} {:>9} {:>13} {:>14} {:>8}",
            r.name,
            format!("{}/{}", r.ping.received, r.ping.sent),
            format!("{} ms", ms(r.ping.avg())),
            r.transfer.as_ref().map_or_else(
                || "-".to_string(),
                |t| format!("{:.2} Gbit/s", t.gbit_per_s())
            ),
            r.drops
        );
        println!(
            "  {:<12} switch a: tap rx {} frames, tunnel tx {} frames",
            "", r.tap_rx, r.tun_tx
        );
    }
    println!(
        "  Every switch of an overlay uses the same encapsulation; plain GRE is the one Open \
         vSwitch and gretap hosts understand."
    );
    println!("dnet demo: OK");
    Ok(())
}

/// Starts a switch on each host with `flags`, pings, moves `a.mib` MiB of verified TCP,
/// prints the switches' counters and stops them.
fn run_encap(
    a: &DemoArgs,
    tb: &Testbed,
    name: &'static str,
    flags: &[&str],
) -> anyhow::Result<Run> {
    let (ha, hb) = (tb.host(0), tb.host(1));
    let opts = SwitchOptions {
        extra_args: flags.iter().map(|f| f.to_string()).collect(),
        ..SwitchOptions::default()
    };
    let shown = if flags.is_empty() {
        String::new()
    } else {
        format!(" {}", flags.join(" "))
    };
    let sa = tb
        .start_switch_with(0, &opts)
        .with_context(|| format!("starting dnet-switch{shown} on host a"))?;
    let sb = tb
        .start_switch_with(1, &opts)
        .with_context(|| format!("starting dnet-switch{shown} on host b"))?;
    for (h, peer, sw) in [(ha, hb, &sa), (hb, ha, &sb)] {
        println!(
            "  host {}: dnet-switch pid {} --peer {}{shown}  (control socket {})",
            h.letter,
            sw.pid,
            peer.underlay_ip,
            sw.socket.display()
        );
    }
    let mtu = sa.stats()?.mtu;
    println!("  tunnel MTU {mtu}: container eth0 MTU set to match");

    let p = traffic::ping(
        &ha.container_ns,
        hb.container_ip,
        a.pings,
        Duration::from_secs(2),
    )
    .with_context(|| format!("ping from container a to container b over {name}"))?;
    println!(
        "  ping {} -> {}: {}/{} replies, rtt min/avg/max = {}/{}/{} ms",
        ha.container_ip,
        hb.container_ip,
        p.received,
        p.sent,
        ms(p.min()),
        ms(p.avg()),
        ms(p.max())
    );
    if p.received < p.sent {
        bail!(
            "{} of {} pings over {name} got no reply (switch logs: {})",
            p.sent - p.received,
            p.sent,
            tb.dir().display()
        );
    }

    let transfer = if a.mib > 0 {
        let bytes = a.mib << 20;
        // Generous: a debug build of the switch may move only tens of MB/s.
        let timeout = Duration::from_secs(60 + a.mib / 4);
        let r = traffic::tcp_transfer(
            &ha.container_ns,
            &hb.container_ns,
            hb.container_ip,
            bytes,
            timeout,
        )
        .with_context(|| format!("TCP transfer from container a to container b over {name}"))?;
        println!(
            "  TCP a -> b: {} verified byte for byte in {:.2} s: {:.2} Gbit/s",
            human_bytes(r.bytes),
            r.elapsed.as_secs_f64(),
            r.gbit_per_s()
        );
        Some(r)
    } else {
        println!("  TCP transfer skipped (--mib 0)");
        None
    };

    println!("  switch counters (`dnetctl stats --socket PATH` shows the same):");
    let (st_a, st_b) = (sa.stats()?, sb.stats()?);
    for (h, s) in [(ha, &st_a), (hb, &st_b)] {
        println!("    host {}:", h.letter);
        for l in format_stats(s).lines() {
            println!("      {l}");
        }
    }
    let tun_tx = tunnel_port(&st_a, hb.underlay_ip).map_or(0, |p| p.tx_packets);
    let tap_rx = tap_port(&st_a).map_or(0, |p| p.rx_packets);
    let drops: u64 = st_a.drops.iter().chain(&st_b.drops).map(|d| d.count).sum();
    for (h, sw) in [(ha, &sa), (hb, &sb)] {
        match sw.terminate(Duration::from_secs(5)) {
            Ok(st) => println!("  dnet-switch on host {} exited: {st}", h.letter),
            Err(e) => println!(
                "  dnet-switch on host {}: {:#} (will be killed)",
                h.letter,
                anyhow::Error::new(e)
            ),
        }
    }
    Ok(Run {
        name,
        ping: p,
        transfer,
        tap_rx,
        tun_tx,
        drops,
    })
}

/// Which of `names` `ip netns list` still shows.
fn leftover_namespaces(names: &[String]) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output();
    let Ok(out) = out else { return Vec::new() };
    let listed = String::from_utf8_lossy(&out.stdout);
    names
        .iter()
        .filter(|n| {
            listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(n.as_str()))
        })
        .cloned()
        .collect()
}
