//! `dnet-switch`: flags → settings → start the data path and control socket → wait for a
//! signal → tear down. Nothing else lives here.

use anyhow::{bail, Context, Result};
use clap::Parser;
use dnet::config::{self, Settings};
use dnet::control::{self, ControlServer, SwitchInfo};
use dnet::io::Dataplane;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A userspace learning Ethernet switch joining this host's containers to other hosts' at
/// layer 2 over GRE tunnels (Ethernet over GRE, protocol 0x6558), replacing Open vSwitch +
/// GRE. Compatible with Open vSwitch GRE ports and Linux gretap.
///
/// Example, on each host (give the other hosts' underlay addresses):
///
///   dnet-switch --peer 172.31.7.240 --bridge docker0
///
/// Runs in the foreground; SIGINT/SIGTERM remove the TAP and the control socket and exit 0.
/// Counters: `dnetctl stats`.
#[derive(Parser, Debug)]
#[command(name = "dnet-switch", version, about, long_about, verbatim_doc_comment)]
struct Args {
    /// Underlay address of a peer host (repeat for each; at least one). Peers form a full
    /// mesh: frames from one tunnel are never sent into another (split horizon).
    #[arg(long = "peer", value_name = "IP", required = true)]
    peers: Vec<Ipv4Addr>,

    /// Underlay source address [default: the address routing picks for the first peer].
    #[arg(long, value_name = "IP")]
    local: Option<Ipv4Addr>,

    /// Name of the TAP device to create (fails if it exists).
    #[arg(long, value_name = "NAME", default_value = "dnet0")]
    tap: String,

    /// Attach the TAP to this existing Linux bridge (e.g. docker0).
    #[arg(long, value_name = "NAME")]
    bridge: Option<String>,

    /// TAP MTU [default: underlay MTU minus the encapsulation actually emitted: 38 bytes
    /// without options (1500 → 1462), 4 more each for --key, --csum, --seq]. A larger value
    /// turns off DF so the kernel fragments outer packets rather than losing them.
    #[arg(long, value_name = "N")]
    mtu: Option<u32>,

    /// GRE key (32-bit network id, as OVS `options:key`). Packets with another or no key are
    /// dropped; no key and key 0 are the same network.
    #[arg(long, value_name = "N")]
    key: Option<u32>,

    /// Add GRE checksums to sent packets (received checksums are always verified).
    #[arg(long)]
    csum: bool,

    /// Add GRE sequence numbers to sent packets (off by default: Linux peers with `iseq`
    /// drop reordered packets).
    #[arg(long)]
    seq: bool,

    /// Outer IPv4 TTL.
    #[arg(long, value_name = "N", default_value_t = 64)]
    ttl: u8,

    /// Outer IPv4 TOS byte.
    #[arg(long, value_name = "N", default_value_t = 0)]
    tos: u8,

    /// Worker threads, each with its own TAP queue and GRE socket [default: number of cores].
    #[arg(long, value_name = "N")]
    workers: Option<usize>,

    /// Log level: error, warn, info, debug or trace.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    log_level: log::LevelFilter,

    /// Path of the root-only control socket used by dnetctl [default: /run/dnet/<TAP>.sock].
    #[arg(long, value_name = "PATH")]
    control_socket: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    env_logger::Builder::new()
        .filter_level(args.log_level)
        .format_target(false)
        .init();
    if let Err(e) = run(args) {
        log::error!("{e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    if !config::has_privileges() {
        bail!(config::ConfigError::NotPermitted);
    }
    let settings = Settings {
        peers: args.peers,
        local: args.local,
        tap: args.tap,
        bridge: args.bridge,
        mtu: args.mtu,
        key: args.key,
        csum: args.csum,
        seq: args.seq,
        ttl: args.ttl,
        tos: args.tos,
        workers: args.workers,
    };
    let (dp_cfg, resolved) = config::resolve(&settings)?;
    for w in &resolved.warnings {
        log::warn!("{w}");
    }

    // Signals are caught from here on, so a Ctrl-C during setup still tears down cleanly.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }

    let dp = Dataplane::start(&dp_cfg).context("starting the data path")?;
    let s = &resolved.dataplane;
    log::info!(
        "TAP {} up, MTU {} (underlay MTU {} − {} bytes of encapsulation){}",
        dp.tap,
        s.mtu,
        s.underlay_mtu,
        s.overhead,
        dp_cfg
            .bridge
            .as_deref()
            .map(|b| format!(", attached to bridge {b}"))
            .unwrap_or_default()
    );
    log::info!(
        "underlay {} → peers {}; GRE key {}, csum {}, seq {}, ttl {}, tos {}, DF {}; {} worker(s)",
        dp_cfg.local,
        dp_cfg
            .peers
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        dp_cfg.gre.key.map_or("none".into(), |k| k.to_string()),
        on_off(dp_cfg.gre.csum),
        on_off(dp_cfg.gre.seq),
        dp_cfg.outer.ttl,
        dp_cfg.outer.tos,
        on_off(dp_cfg.outer.df),
        dp_cfg.workers,
    );

    if let Some(br) = &dp_cfg.bridge {
        warn_bridge_mtu(br, &dp.tap, dp_cfg.mtu, s.overhead);
    }

    let info = Arc::new(SwitchInfo {
        tap: dp.tap.clone(),
        mtu: dp_cfg.mtu,
        local: dp_cfg.local,
        dataplane: dp.control.clone(),
    });
    let sock_path = args
        .control_socket
        .unwrap_or_else(|| control::default_socket_path(&dp.tap).into());
    let server = match ControlServer::start(&sock_path, info.clone()) {
        Ok(s) => s,
        Err(e) => {
            dp.stop();
            return Err(e).context("starting the control socket");
        }
    };
    log::info!("control socket {}; ready", server.path().display());

    while !stop.load(Ordering::Relaxed) && !dp.any_worker_exited() {
        std::thread::sleep(Duration::from_millis(100));
    }
    let failed = !stop.load(Ordering::Relaxed);
    log::info!(
        "shutting down: removing TAP {} and {}",
        dp.tap,
        server.path().display()
    );
    dp.stop();
    drop(server);
    log_totals(&info);
    if failed {
        bail!("a worker stopped unexpectedly (see the log above)");
    }
    Ok(())
}

/// The bridge drops frames bigger than the MTU of the port they leave by, silently. Say so now
/// for every port already on the bridge whose MTU is larger than the TAP's.
fn warn_bridge_mtu(bridge: &str, tap: &str, mtu: u32, overhead: u32) {
    for port in dnet::io::netdev::bridge_ports(bridge) {
        if port == tap {
            continue;
        }
        if let Ok(m) = dnet::io::netdev::mtu(&port) {
            if m > mtu {
                log::warn!(
                    "bridge {bridge} port {port} has MTU {m}, above {tap}'s {mtu}: the bridge will drop its frames larger than {mtu} bytes on the way to other hosts; set the containers' MTU to {mtu} (docker: com.docker.network.driver.mtu) or raise the underlay MTU to {}",
                    m + overhead
                );
            }
        }
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

fn log_totals(info: &SwitchInfo) {
    let st = info.stats();
    for p in &st.ports {
        log::info!(
            "port {}: rx {} frames / {} bytes, tx {} frames / {} bytes",
            p.name,
            p.rx_packets,
            p.rx_bytes,
            p.tx_packets,
            p.tx_bytes
        );
    }
    let drops: Vec<String> = st
        .drops
        .iter()
        .filter(|d| d.count > 0)
        .map(|d| format!("{} {}", d.reason, d.count))
        .collect();
    if !drops.is_empty() {
        log::info!("dropped: {}", drops.join(", "));
    }
}
