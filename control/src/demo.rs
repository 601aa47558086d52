//! `dnetctl demo`: two simulated hosts, one container each, joined by two `dnet-switch`
//! processes; pings and a verified TCP transfer across, then the switches' counters.

use crate::stats_cmd::{format_stats, human_bytes};
use anyhow::{bail, Context};
use clap::Args;
use dnet_testbed::{
    is_root, switch_binary, tap_port, traffic, tunnel_port, TeardownHandle, Testbed, BRIDGE,
};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Show dnet working: two simulated hosts joined by dnet-switch (needs root).
///
/// Builds two simulated hosts (network namespaces) with one container each, joins their
/// container bridges with two dnet-switch processes over GRE, and shows traffic flowing: pings,
/// a TCP transfer with every byte checked, and the switches' per-port counters. Everything is
/// torn down at the end, on error and on Ctrl-C.
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
    println!("\n[{n}/6] {msg}");
}

fn demo(a: &DemoArgs, bin: PathBuf, handle: TeardownHandle) -> anyhow::Result<()> {
    println!("dnet demo: two simulated hosts joined by dnet-switch over GRE");
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

    step(
        2,
        "starting one dnet-switch per host (TAP dnet0 joined to br0, GRE to the other host)",
    );
    let sa = tb
        .start_switch(0)
        .context("starting dnet-switch on host a")?;
    println!(
        "  host a: dnet-switch pid {} --peer {}  (control socket {})",
        sa.pid,
        hb.underlay_ip,
        sa.socket.display()
    );
    let sb = tb
        .start_switch(1)
        .context("starting dnet-switch on host b")?;
    println!(
        "  host b: dnet-switch pid {} --peer {}  (control socket {})",
        sb.pid,
        ha.underlay_ip,
        sb.socket.display()
    );
    let mtu = sa.stats()?.mtu;
    println!("  tunnel MTU {mtu}: container eth0 MTU set to match");

    step(
        3,
        &format!(
            "ping {} -> {} ({} echo requests)",
            ha.container_ip, hb.container_ip, a.pings
        ),
    );
    let p = traffic::ping(
        &ha.container_ns,
        hb.container_ip,
        a.pings,
        Duration::from_secs(2),
    )
    .context("ping from container a to container b")?;
    let ms = |d: Option<Duration>| {
        d.map_or_else(
            || "-".to_string(),
            |d| format!("{:.3}", d.as_secs_f64() * 1e3),
        )
    };
    println!(
        "  {}/{} replies, rtt min/avg/max = {}/{}/{} ms",
        p.received,
        p.sent,
        ms(p.min()),
        ms(p.avg()),
        ms(p.max())
    );
    if p.received < p.sent {
        bail!(
            "{} of {} pings got no reply (switch logs: {})",
            p.sent - p.received,
            p.sent,
            tb.dir().display()
        );
    }

    let transfer = if a.mib > 0 {
        step(
            4,
            &format!(
                "TCP transfer of {} MiB a -> b, every byte compared on arrival",
                a.mib
            ),
        );
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
        .context("TCP transfer from container a to container b")?;
        println!(
            "  {} verified in {:.2} s: {:.2} Gbit/s",
            human_bytes(r.bytes),
            r.elapsed.as_secs_f64(),
            r.gbit_per_s()
        );
        Some(r)
    } else {
        step(4, "TCP transfer skipped (--mib 0)");
        None
    };

    step(
        5,
        "switch counters (frames through each port; `dnetctl stats --socket PATH` shows the same)",
    );
    let (st_a, st_b) = (sa.stats()?, sb.stats()?);
    for (h, s) in [(&ha, &st_a), (&hb, &st_b)] {
        println!("  host {}:", h.letter);
        for l in format_stats(s).lines() {
            println!("    {l}");
        }
    }
    let tun_tx = tunnel_port(&st_a, hb.underlay_ip).map_or(0, |p| p.tx_packets);
    let tap_rx = tap_port(&st_a).map_or(0, |p| p.rx_packets);
    println!("  switch a took {tap_rx} frames from its TAP and sent {tun_tx} into the tunnel to b");

    step(
        6,
        "tearing down: SIGTERM to both switches, then deleting the namespaces",
    );
    let t = Instant::now();
    for (h, sw) in [(&ha, &sa), (&hb, &sb)] {
        match sw.terminate(Duration::from_secs(5)) {
            Ok(st) => println!("  dnet-switch on host {} exited: {st}", h.letter),
            Err(e) => println!(
                "  dnet-switch on host {}: {:#} (will be killed)",
                h.letter,
                anyhow::Error::new(e)
            ),
        }
    }
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

    println!("\nsummary:");
    println!(
        "  ping      {}/{} replies, avg rtt {} ms",
        p.received,
        p.sent,
        ms(p.avg())
    );
    if let Some(r) = transfer {
        println!(
            "  tcp       {} verified, {:.2} Gbit/s",
            human_bytes(r.bytes),
            r.gbit_per_s()
        );
    }
    println!("  switch a  tap rx {tap_rx} frames, tunnel tx {tun_tx} frames");
    let drops: u64 = st_a.drops.iter().chain(&st_b.drops).map(|d| d.count).sum();
    println!("  drops     {drops} (both switches)");
    println!("dnet demo: OK");
    Ok(())
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
