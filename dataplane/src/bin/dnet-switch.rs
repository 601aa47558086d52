//! `dnet-switch`: flags → settings → start the data path and control socket → wait for a
//! signal → tear down. Nothing else lives here.
#![deny(unsafe_code)]

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, Parser};
use dnet::config::{self, Settings};
use dnet::config_file::{self, FileConfig};
use dnet::control::metrics::MetricsServer;
use dnet::control::{self, ControlServer, PeerOrigin, SwitchInfo, SwitchSettings};
use dnet::io::Dataplane;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
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
/// Settings may also come from a TOML file (--config; flags win); SIGHUP re-reads its peer
/// list. Inspect and change it at run time with `dnetctl show`, `dnetctl peer add`, ...
#[derive(Parser, Debug)]
#[command(name = "dnet-switch", version, about, long_about, verbatim_doc_comment)]
struct Args {
    /// Underlay address of a peer host (repeat for each; at least one here or in --config).
    /// Peers form a full mesh: frames from one tunnel are never sent into another (split
    /// horizon), unless --stp is on.
    #[arg(long = "peer", value_name = "IP")]
    peers: Vec<Ipv4Addr>,

    /// Underlay source address [default: the address routing picks for the first peer].
    #[arg(long, value_name = "IP")]
    local: Option<Ipv4Addr>,

    /// Name of the TAP device to create (fails if it exists) [default: dnet0].
    #[arg(long, value_name = "NAME")]
    tap: Option<String>,

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

    /// Outer IPv4 TTL [default: 64].
    #[arg(long, value_name = "N")]
    ttl: Option<u8>,

    /// Outer IPv4 TOS byte [default: 0].
    #[arg(long, value_name = "N")]
    tos: Option<u8>,

    /// Worker threads, each with its own TAP queue and GRE socket [default: number of cores].
    #[arg(long, value_name = "N")]
    workers: Option<usize>,

    /// Do not ask the kernel for TCP super-frames and partial checksums on the TAP (by default
    /// dnet segments and coalesces TCP, and coalesces runs of UDP datagrams, in userspace,
    /// which moves far fewer packets through the kernel).
    #[arg(long)]
    no_offload: bool,

    /// Log level: error, warn, info, debug or trace [default: info].
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<log::LevelFilter>,

    /// Path of the root-only control socket used by dnetctl [default: /run/dnet/<TAP>.sock].
    #[arg(long, value_name = "PATH")]
    control_socket: Option<PathBuf>,

    /// Also let members of this group use the control socket (it becomes mode 0660).
    #[arg(long, value_name = "NAME")]
    control_group: Option<String>,

    /// Serve Prometheus metrics (the `dnetctl stats` counters) over HTTP on this address,
    /// e.g. 127.0.0.1:9464 [default: off].
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<SocketAddr>,

    /// Read settings from this TOML file (keys as the flags: peer = [...], bridge, key, ...).
    /// Flags win; peers from both are used. SIGHUP re-reads the file's peer list.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Flood at most PPS frames per second (broadcast, multicast, unknown unicast) from each
    /// port; the rest are dropped and counted as flood_limit [default: unlimited].
    #[arg(long, value_name = "PPS", value_parser = clap::value_parser!(u32).range(1..))]
    flood_limit: Option<u32>,

    /// After setup, switch to this user (and its group), keeping only CAP_NET_ADMIN and
    /// CAP_NET_RAW [default: stay root].
    #[arg(long, value_name = "NAME")]
    user: Option<String>,

    /// Lower the MSS option of TCP SYNs entering the tunnels so segments fit the narrowest
    /// path MTU (for underlays that drop ICMP) [default: off].
    #[arg(long)]
    clamp_mss: bool,

    /// Send BFD-like keepalives over every tunnel and show peers as up/down; a dead peer's
    /// MACs are flushed. Implied by the two options below [default: off].
    #[arg(long)]
    keepalive: bool,

    /// Keepalive interval in milliseconds [default: 1000 with --keepalive].
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(10..))]
    keepalive_interval: Option<u64>,

    /// Keepalive intervals without any frame from a peer before it is declared down
    /// [default: 3].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=255))]
    keepalive_multiplier: Option<u32>,

    /// Do not block a tunnel whose stations flap with the local port (a loop through the
    /// local side, e.g. two hosts' bridges joined directly) [default: loop guard on].
    #[arg(long)]
    no_loop_guard: bool,

    /// Encapsulation: `gre` (IP protocol 47, RFC 2784/2890, what OVS and Linux gretap speak)
    /// or `udp` (GRE-in-UDP, RFC 8086: crosses NAT and clouds that drop protocol 47, and lets
    /// the kernel send and receive 64 KiB batches of segments with UDP GSO/GRO). Every switch
    /// of the overlay must use the same [default: gre].
    #[arg(long, value_name = "KIND", value_parser = ["gre", "udp"])]
    encap: Option<String>,

    /// UDP port of GRE-in-UDP (--encap udp), on every host [default: 4754, IANA gre-in-udp].
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    udp_port: Option<u16>,

    /// Run a rapid spanning tree (802.1D BPDUs, hello 2 s, max age 20 s, forward delay 15 s)
    /// with the other switches over the tunnels and forward tunnel to tunnel, so the peers
    /// need not form a full mesh: redundant tunnels are blocked, a lost tunnel is routed
    /// around in about 6 s. Every switch of the overlay needs it [default: off, split horizon].
    #[arg(long)]
    stp: bool,

    /// Bridge priority with --stp, a multiple of 4096 from 0 to 61440; the lowest becomes the
    /// root [default: 32768].
    #[arg(long, value_name = "N")]
    stp_priority: Option<u16>,

    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) and exit.
    #[arg(long, value_name = "SHELL", hide = true)]
    completions: Option<clap_complete::Shell>,
}

fn main() {
    let args = Args::parse();
    if let Some(shell) = args.completions {
        clap_complete::generate(
            shell,
            &mut Args::command(),
            "dnet-switch",
            &mut std::io::stdout(),
        );
        return;
    }
    let file = args.config.as_deref().map(config_file::load).transpose();
    let file_level = match &file {
        Ok(Some(f)) => f.log_level.as_deref().map(str::parse::<log::LevelFilter>),
        _ => None,
    };
    let level = match (args.log_level, file_level) {
        (Some(l), _) => Ok(l),
        (None, Some(Ok(l))) => Ok(l),
        (None, Some(Err(_))) => Err(anyhow::anyhow!(
            "config file {}: log_level must be error, warn, info, debug or trace",
            args.config.as_deref().unwrap_or(Path::new("")).display()
        )),
        (None, None) => Ok(log::LevelFilter::Info),
    };
    env_logger::Builder::new()
        .filter_level(*level.as_ref().unwrap_or(&log::LevelFilter::Info))
        .format_target(false)
        .init();
    let r = level
        .and_then(|_| file.map_err(anyhow::Error::from))
        .and_then(|file| run(args, file.unwrap_or_default()));
    if let Err(e) = r {
        log::error!("{e:#}");
        std::process::exit(1);
    }
}

/// Flag peers first, then the file's peers not given as flags, each with its origin.
fn merged_peers(flags: &[Ipv4Addr], file: &[Ipv4Addr]) -> Vec<(Ipv4Addr, PeerOrigin)> {
    let mut out: Vec<(Ipv4Addr, PeerOrigin)> =
        flags.iter().map(|p| (*p, PeerOrigin::Flag)).collect();
    for p in file {
        if !flags.contains(p) && !out.iter().any(|(q, _)| q == p) {
            out.push((*p, PeerOrigin::Config));
        }
    }
    out
}

/// SIGHUP: re-reads the file's peer list and applies the difference.
fn reload(path: Option<&Path>, info: &SwitchInfo) {
    let Some(path) = path else {
        log::info!("SIGHUP: no --config file; nothing to reload");
        return;
    };
    let file = match config_file::load(path) {
        Ok(f) => f,
        Err(e) => {
            log::error!("SIGHUP: {e}; peers unchanged");
            return;
        }
    };
    let (added, removed, errors) = info.apply_config_peers(&file.peer);
    for e in &errors {
        log::error!("SIGHUP: {e}");
    }
    let list = |v: &[Ipv4Addr]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    log::info!(
        "SIGHUP: reloaded {}: peers added {}, removed {}",
        path.display(),
        list(&added),
        list(&removed)
    );
}

/// Tells systemd (Type=notify) about our state, if it asked ($NOTIFY_SOCKET): one datagram to
/// a path or, with a leading '@', an abstract socket address.
fn sd_notify(state: &str) {
    let Some(sock) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = sd_notify_to(Path::new(&sock), state) {
        log::warn!(
            "cannot notify systemd via {}: {e}",
            Path::new(&sock).display()
        );
    }
}

fn sd_notify_to(sock: &Path, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
    let bytes = sock.as_os_str().as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            UnixAddr::from_abstract_name(name)?
        }
        None => UnixAddr::from_pathname(sock)?,
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

fn run(args: Args, file: FileConfig) -> Result<()> {
    if !config::has_privileges() {
        bail!(config::ConfigError::NotPermitted);
    }
    let peers = merged_peers(&args.peers, &file.peer);
    let settings = Settings {
        peers: peers.iter().map(|(p, _)| *p).collect(),
        local: args.local.or(file.local),
        tap: args
            .tap
            .clone()
            .or(file.tap.clone())
            .unwrap_or_else(|| "dnet0".into()),
        bridge: args.bridge.clone().or(file.bridge.clone()),
        mtu: args.mtu.or(file.mtu),
        key: args.key.or(file.key),
        csum: args.csum || file.csum.unwrap_or(false),
        seq: args.seq || file.seq.unwrap_or(false),
        ttl: args.ttl.or(file.ttl).unwrap_or(64),
        tos: args.tos.or(file.tos).unwrap_or(0),
        workers: args.workers.or(file.workers),
        offload: !args.no_offload && file.offload.unwrap_or(true),
        udp_port: {
            let port = args.udp_port.or(file.udp_port);
            match args
                .encap
                .as_deref()
                .or(file.encap.as_deref())
                .unwrap_or("gre")
            {
                "gre" if port.is_some() => bail!(
                    "--udp-port is only used with --encap udp (GRE-in-UDP): add --encap udp \
                     on every host, or drop --udp-port"
                ),
                "gre" => None,
                "udp" => Some(port.unwrap_or(dnet::switch::tunnel::GRE_IN_UDP_PORT)),
                other => bail!("encap = \"{other}\" in the config file: use \"gre\" or \"udp\""),
            }
        },
    };
    let (mut dp_cfg, resolved) = config::resolve(&settings)?;
    // Each worker floods from its own core: split the budget between them.
    let flood_limit = args.flood_limit.or(file.flood_limit).filter(|p| *p > 0);
    dp_cfg.core.flood_limit_pps = flood_limit.map(|pps| pps.div_ceil(dp_cfg.workers.max(1) as u32));
    dp_cfg.core.clamp_mss = args.clamp_mss || file.clamp_mss.unwrap_or(false);
    dp_cfg.core.loop_guard = !args.no_loop_guard && file.loop_guard.unwrap_or(true);
    let ka_interval = args.keepalive_interval.or(file.keepalive_interval);
    let ka_mult = args.keepalive_multiplier.or(file.keepalive_multiplier);
    if args.keepalive
        || file.keepalive.unwrap_or(false)
        || ka_interval.is_some()
        || ka_mult.is_some()
    {
        let interval = ka_interval.unwrap_or(1000);
        let mult = ka_mult.unwrap_or(3);
        if interval < 10 || !(1..=255).contains(&mult) {
            bail!("keepalive_interval must be at least 10 ms and keepalive_multiplier 1 to 255");
        }
        dp_cfg.core.liveness.interval_ms = interval;
        dp_cfg.core.liveness.multiplier = mult;
    }
    let stp_priority = args.stp_priority.or(file.stp_priority);
    if args.stp || file.stp.unwrap_or(false) {
        let priority = stp_priority.unwrap_or(32768);
        if priority % 4096 != 0 || priority > 61440 {
            bail!(
                "--stp-priority {priority}: must be a multiple of 4096 from 0 to 61440 \
                 (802.1D-2004), e.g. 28672 to prefer this switch as the root"
            );
        }
        dp_cfg.core.stp = Some(dnet::switch::stp::Config {
            priority,
            ..Default::default()
        });
        // The tree, not split horizon, keeps tunnel-to-tunnel forwarding loop-free.
        dp_cfg.core.split_horizon = false;
    } else if stp_priority.is_some() {
        bail!("--stp-priority needs --stp (or `stp = true` in the config file)");
    }
    let run_as = args
        .user
        .as_deref()
        .or(file.user.as_deref())
        .map(dnet::privdrop::lookup_user)
        .transpose()?;
    for w in &resolved.warnings {
        log::warn!("{w}");
    }

    // Signals are caught from here on, so a Ctrl-C during setup still tears down cleanly.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    // SIGHUP (reload) is caught from here on too, rather than killing a starting switch.
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())
        .context("installing the SIGHUP handler")?;

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
        "underlay {} → peers {}; {}, key {}, csum {}, seq {}, ttl {}, tos {}, DF {}; {} worker(s), TAP offloads {}",
        dp_cfg.local,
        dp_cfg
            .peers
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        match dp_cfg.gre.udp_port {
            None => "GRE (IP protocol 47)".to_string(),
            Some(p) => format!(
                "GRE-in-UDP port {p} (UDP GSO/GRO; each flow sent from one of {} source ports \
                 per worker)",
                dnet::io::gre_socket::UDP_SOURCE_PORTS
            ),
        },
        dp_cfg.gre.key.map_or("none".into(), |k| k.to_string()),
        on_off(dp_cfg.gre.csum),
        on_off(dp_cfg.gre.seq),
        dp_cfg.outer.ttl,
        dp_cfg.outer.tos,
        on_off(dp_cfg.outer.df),
        dp_cfg.workers,
        on_off(dp.offload),
    );

    if let Some(br) = &dp_cfg.bridge {
        warn_bridge_mtu(br, &dp.tap, dp_cfg.mtu, s.overhead);
    }

    let sock_path = args
        .control_socket
        .clone()
        .or(file.control_socket.clone())
        .unwrap_or_else(|| control::default_socket_path(&dp.tap).into());
    let metrics_addr = args.metrics.or(file.metrics);
    let info = Arc::new(SwitchInfo::new(
        dp.tap.clone(),
        dp_cfg.mtu,
        dp_cfg.local,
        dp.control.clone(),
        SwitchSettings {
            bridge: dp_cfg.bridge.clone(),
            gre: dp_cfg.gre,
            outer: Some(dp_cfg.outer),
            control_socket: sock_path.display().to_string(),
            metrics: metrics_addr.map(|a| a.to_string()),
            config_file: args.config.as_ref().map(|p| p.display().to_string()),
        },
        peers.iter().copied(),
    ));
    let control_gid = match args.control_group.as_ref().or(file.control_group.as_ref()) {
        Some(name) => match dnet::privdrop::group_id(name) {
            Some(g) => Some(g),
            None => {
                dp.stop();
                bail!("--control-group {name}: no such group (see /etc/group)");
            }
        },
        None => None,
    };
    let server = match ControlServer::start(&sock_path, info.clone(), control_gid) {
        Ok(s) => s,
        Err(e) => {
            dp.stop();
            return Err(e).context("starting the control socket");
        }
    };
    let _metrics = match metrics_addr.map(|a| MetricsServer::start(a, info.clone())) {
        None => None,
        Some(Ok(m)) => {
            log::info!("Prometheus metrics on http://{}/metrics", m.local_addr());
            Some(m)
        }
        Some(Err(e)) => {
            dp.stop();
            drop(server);
            return Err(e).with_context(|| {
                format!(
                    "serving metrics on {}: choose a free address with --metrics",
                    metrics_addr.expect("set")
                )
            });
        }
    };
    if let Some(u) = &run_as {
        if let Err(e) = dnet::privdrop::drop_to(u) {
            dp.stop();
            drop(server);
            return Err(e).context("dropping privileges (--user)");
        }
        log::info!(
            "running as user {} (uid {}, gid {}) with CAP_NET_ADMIN and CAP_NET_RAW only",
            u.name,
            u.uid,
            u.gid
        );
    }
    if let Some(pps) = flood_limit {
        log::info!("flood limit {pps} frames/s per port");
    }
    let live = dp_cfg.core.liveness;
    log::info!(
        "keepalives {}; loop guard {}; MSS clamping {}; {}; path MTU learned per peer",
        if live.interval_ms > 0 {
            format!(
                "every {} ms, down after {} missed",
                live.interval_ms, live.multiplier
            )
        } else {
            "off".into()
        },
        if dp_cfg.core.loop_guard { "on" } else { "off" },
        if dp_cfg.core.clamp_mss { "on" } else { "off" },
        match (&dp_cfg.core.stp, &dp.control.stp) {
            (Some(c), Some(s)) => format!(
                "spanning tree on (bridge id {}, priority {})",
                s.with(|m| m.bridge()),
                c.priority
            ),
            _ => "split horizon (full mesh, no spanning tree)".into(),
        },
    );
    let mut links = dnet::io::watch::LinkWatch::new(&dp.tap, dp_cfg.bridge.as_deref());
    log::info!("control socket {}; ready", server.path().display());
    sd_notify("READY=1\nSTATUS=forwarding");

    let mut link_error = None;
    while !stop.load(Ordering::Relaxed) && !dp.any_worker_exited() {
        if hup.swap(false, Ordering::Relaxed) {
            reload(args.config.as_deref(), &info);
        }
        if let Err(e) = links.check() {
            link_error = Some(e);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    sd_notify("STOPPING=1");
    let failed = !stop.load(Ordering::Relaxed);
    if failed && link_error.is_none() {
        // A worker stopped: if the TAP went away, say so rather than only "a worker stopped".
        link_error = links.check_now().err();
    }
    if let Some(e) = &link_error {
        log::error!("{e}");
    }
    log::info!(
        "shutting down: removing TAP {} and {}",
        dp.tap,
        server.path().display()
    );
    dp.stop();
    drop(server);
    log_totals(&info);
    if let Some(e) = link_error {
        bail!(e);
    }
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
