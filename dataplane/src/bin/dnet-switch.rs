//! `dnet-switch`: flags (and `--config`) → [`Settings`] → (with `--network`: join the etcd
//! network, take its settings) → start the data path, the control socket, metrics and the
//! privilege drop → wait for a signal → stop. Nothing else lives here: the settings pipeline is
//! [`dnet::config`], the etcd side [`fleet`] over crate `dnet_cluster`.
#![deny(unsafe_code)]

// Beside the binary, not in src/bin/ (where cargo would take it for a binary of its own).
#[path = "dnet-switch/docker.rs"]
mod docker;
#[path = "dnet-switch/fleet.rs"]
mod fleet;

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, Parser};
use dnet::config::{self, Host, Options, Resolved, Settings, Sources, SystemHost};
use dnet::control::metrics::MetricsServer;
use dnet::control::{ControlServer, Networks, PeerOrigin, SwitchInfo, SwitchSettings};
use dnet::error_chain;
use dnet::io::watch::LinkWatch;
use dnet::io::Dataplane;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
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
/// or, with the hosts' network defined once in etcd (`dnetctl network create`), on each host:
///
///   dnet-switch --etcd http://10.0.0.5:2379 --network blue --bridge docker0
///
/// Runs in the foreground; SIGINT/SIGTERM remove the TAP and the control socket and exit 0.
/// Settings may also come from a TOML file (--config; flags win); SIGHUP re-reads its peer
/// list. Inspect and change it at run time with `dnetctl show`, `dnetctl peer add`, ...
/// Exit status: 0 after a signal, 1 on an error, 2 on a usage error.
#[derive(Parser, Debug)]
#[command(name = "dnet-switch", version, about, long_about, verbatim_doc_comment)]
struct Cli {
    #[command(flatten)]
    options: Options,

    /// Read settings from this TOML file (keys as the flags: peer = [...], bridge, key, ...;
    /// `offload = false` and `loop_guard = false` for --no-offload and --no-loop-guard).
    /// Flags win; peers from both are used. SIGHUP re-reads the file's peer list.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) and exit.
    #[arg(long, value_name = "SHELL", hide = true)]
    completions: Option<clap_complete::Shell>,
}

fn main() -> ExitCode {
    let cli: Cli = dnet_cli::parse();
    if let Some(shell) = cli.completions {
        let mut cmd = Cli::command();
        clap_complete::generate(shell, &mut cmd, "dnet-switch", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    // The file's log level is known only once it is read: log everything the level lets
    // through, and set the level as soon as it is known.
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Trace)
        .format_target(false)
        .init();
    let flags_only = Sources {
        flags: cli.options.clone(),
        file: None,
    };
    log::set_max_level(flags_only.log_level());
    let result = Sources::load(cli.options, cli.config.as_deref())
        .map_err(anyhow::Error::from)
        .and_then(|sources| {
            log::set_max_level(sources.log_level());
            run(&sources)
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dnet-switch: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(sources: &Sources) -> Result<()> {
    let mut settings = Settings::new(sources)?;
    config::check_privileges()?;
    // Everything the host can refuse is refused before etcd is touched.
    let mut resolved = config::resolve(&settings, &SystemHost)?;
    // Signals are caught from here on, so a Ctrl-C during setup still tears down cleanly.
    let signals = Signals::install()?;
    let fleet = match settings.fleet.clone() {
        Some(f) => {
            // What would stop this switch after it joined is refused before: a member that
            // joins and dies at once is a tunnel on every other host until its lease ends.
            preflight(&settings)?;
            let public_key = settings
                .encrypt
                .as_ref()
                .map(|e| e.private_key.public_key());
            let mut fleets = Vec::with_capacity(f.networks.len());
            for (i, name) in f.networks.iter().enumerate() {
                let fleet = fleet::Fleet::join(&f, name, resolved.dataplane.local, public_key)?;
                if i == 0 {
                    settings.apply_network(&fleet.network_settings())?;
                } else {
                    settings.add_network(&fleet.network_settings())?;
                }
                fleets.push(fleet);
            }
            if settings.docker.is_some() {
                docker_bridges(&mut settings, &fleets)?;
            }
            resolved = config::resolve(&settings, &SystemHost)?;
            fleets
        }
        None => Vec::new(),
    };
    for w in &resolved.warnings {
        log::warn!("{w}");
    }
    let mut switch = Running::start(&settings, &resolved, fleet)?;
    sd_notify("READY=1\nSTATUS=forwarding");
    let outcome = switch.wait(&signals, settings.config_file.as_deref());
    sd_notify("STOPPING=1");
    switch.stop();
    outcome
}

/// `--docker`: every network gets a bridge (`br-NAME` unless `--bridge` names one) carrying
/// this host's gateway address, for the containers' veths.
fn docker_bridges(s: &mut Settings, fleets: &[fleet::Fleet]) -> Result<()> {
    for (i, f) in fleets.iter().enumerate() {
        let a = f.allocator();
        let given = if i == 0 {
            s.bridge.as_ref()
        } else {
            s.extra_networks[i - 1].bridge.as_ref()
        };
        let name = given.map_or_else(|| docker::default_bridge(a.network()), |b| b.value.clone());
        if name.len() > 15 {
            bail!(
                "bridge {name} for network {}: longer than 15 bytes: name a bridge with --bridge",
                a.network()
            );
        }
        let range = a.range();
        docker::ensure_bridge(
            &name,
            dnet_cluster::ranges::gateway(range),
            a.subnet().prefix_len(),
        )?;
        let b = Some(config::Sourced {
            input: given.map_or_else(|| config::Input::flag("docker", &name), |b| b.input.clone()),
            value: name,
        });
        if i == 0 {
            s.bridge = b;
        } else {
            s.extra_networks[i - 1].bridge = b;
        }
    }
    Ok(())
}

/// The TAP name and the control socket are free (they are taken for good only later).
fn preflight(s: &Settings) -> Result<()> {
    let several = s.fleet.as_ref().is_some_and(|f| f.networks.len() > 1);
    let taps = s.fleet.as_ref().filter(|_| several).map_or_else(
        || vec![s.tap.clone()],
        |f| f.networks.iter().map(|n| config::network_tap(n)).collect(),
    );
    for tap in taps {
        if !tap.contains('%') && SystemHost.link_exists(&tap) {
            bail!(
                "interface {tap} already exists (another dnet-switch running?): {}",
                if several {
                    "stop the switch that serves that network, or remove the interface"
                } else {
                    "choose another --tap name or remove it"
                }
            );
        }
    }
    let socket = s
        .control_socket
        .clone()
        .unwrap_or_else(|| dnet_proto::default_socket_path(&s.tap).into());
    ControlServer::check_free(&socket).context("checking the control socket")?;
    Ok(())
}

/// SIGINT/SIGTERM (stop) and SIGHUP (reload), as flags the main loop polls.
struct Signals {
    stop: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
}

impl Signals {
    fn install() -> Result<Signals> {
        let stop = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
        }
        // Caught rather than left to kill a switch that is still starting.
        let hup = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())
            .context("installing the SIGHUP handler")?;
        Ok(Signals { stop, hup })
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn take_hup(&self) -> bool {
        self.hup.swap(false, Ordering::Relaxed)
    }
}

/// A running switch. Each part stops itself when dropped, so a failure half-way through
/// [`Running::start`] undoes what was started; [`Running::stop`] adds the shutdown log.
struct Running {
    /// First to go: stopping the workers removes the TAP.
    dataplane: Dataplane,
    control: ControlServer,
    _metrics: Option<MetricsServer>,
    /// The first network's (SIGHUP's peers and the metrics are its).
    info: Arc<SwitchInfo>,
    /// Every network's, first one first.
    infos: Vec<Arc<SwitchInfo>>,
    links: LinkWatch,
    /// One per network joined through etcd; stopped first, so no member change reaches a
    /// stopping data path.
    fleet: Vec<fleet::Fleet>,
    /// `--docker`: the plugin; stopped before anything else.
    docker: Option<dnet_plugins::docker::DockerPlugin>,
}

impl Running {
    fn start(s: &Settings, r: &Resolved, mut fleet: Vec<fleet::Fleet>) -> Result<Running> {
        let cfg = &r.dataplane;
        let dataplane = Dataplane::start(cfg).context("starting the data path")?;
        log_dataplane(&dataplane, r);
        log_more_networks(&dataplane, r);
        for (net, dc) in cfg.networks.iter().zip(&dataplane.networks) {
            if let Some(br) = &net.bridge {
                warn_bridge_mtu(br, &dc.tap, net.mtu, r.overhead);
            }
        }
        let socket = s
            .control_socket
            .clone()
            .unwrap_or_else(|| dnet_proto::default_socket_path(&dataplane.tap).into());
        let infos: Vec<Arc<SwitchInfo>> = cfg
            .networks
            .iter()
            .zip(&dataplane.networks)
            .enumerate()
            .map(|(i, (net, dc))| {
                Arc::new(SwitchInfo::new(
                    dc.tap.clone(),
                    net.mtu,
                    cfg.local,
                    dc.clone(),
                    SwitchSettings {
                        bridge: net.bridge.clone(),
                        gre: dnet::switch::tunnel::GreOptions {
                            key: net.key,
                            ..cfg.gre
                        },
                        outer: Some(cfg.outer),
                        control_socket: socket.display().to_string(),
                        metrics: s.metrics.map(|a| a.to_string()),
                        config_file: s.config_file.as_ref().map(|p| p.display().to_string()),
                    },
                    // Static peers (flags, file) are the first network's.
                    s.peers
                        .iter()
                        .filter(|_| i == 0)
                        .map(|p| (p.value, PeerOrigin::from(&p.input.origin))),
                ))
            })
            .collect();
        let info = infos[0].clone();
        let gid = s.control_group.as_ref().map(|g| g.gid);
        let control = ControlServer::start_networks(&socket, Networks::new(infos.clone()), gid)
            .context("starting the control socket")?;
        let metrics = match s.metrics {
            Some(addr) => {
                let m = MetricsServer::start(addr, info.clone()).with_context(|| {
                    format!("serving metrics on {addr}: choose a free address with --metrics")
                })?;
                log::info!("Prometheus metrics on http://{}/metrics", m.local_addr());
                Some(m)
            }
            None => None,
        };
        if let Some(u) = &s.user {
            dnet::privdrop::drop_to(u).context("dropping privileges (--user)")?;
            log::info!(
                "running as user {} (uid {}, gid {}) with CAP_NET_ADMIN and CAP_NET_RAW only",
                u.name,
                u.uid,
                u.gid
            );
        }
        if let Some(pps) = s.flood_limit {
            log::info!("flood limit {pps} frames/s per port");
        }
        log_protection(&dataplane, r);
        if let Some(k) = dataplane.control.public_key() {
            log::info!(
                "tunnels sealed (--encrypt, {} bytes per datagram): this host's public key is {k}",
                dnet_crypto::wire::OVERHEAD
            );
        }
        let links = LinkWatch::new(&dataplane.tap, cfg.networks[0].bridge.as_deref());
        for (f, i) in fleet.iter_mut().zip(&infos) {
            f.apply_to(i.clone())?;
        }
        let docker = match &s.docker {
            Some(dir) => {
                let served = fleet
                    .iter()
                    .zip(&cfg.networks)
                    .map(|(f, n)| docker::Served {
                        alloc: f.allocator(),
                        bridge: n.bridge.clone().unwrap_or_default(),
                        mtu: n.mtu,
                    })
                    .collect();
                Some(docker::start(served, dir.clone())?)
            }
            None => None,
        };
        log::info!("control socket {}; ready", control.path().display());
        Ok(Running {
            dataplane,
            control,
            _metrics: metrics,
            info,
            infos,
            links,
            fleet,
            docker,
        })
    }

    /// Runs until a signal (`Ok`), a worker's exit or the TAP's loss (`Err`, saying why).
    /// SIGHUP re-reads the config file's peers.
    fn wait(&mut self, signals: &Signals, config: Option<&Path>) -> Result<()> {
        while !signals.stopping() && !self.dataplane.any_worker_exited() {
            if signals.take_hup() {
                reload(config, &self.info);
            }
            if let Err(e) = self.links.check() {
                bail!(e);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if signals.stopping() {
            return Ok(());
        }
        // A worker stopped: if the TAP went away, say so rather than only "a worker stopped".
        self.links.check_now().map_err(anyhow::Error::msg)?;
        bail!("a worker stopped unexpectedly (see the log above)")
    }

    /// Stops the workers (removing the TAP) and the control socket, then logs the totals.
    fn stop(self) {
        log::info!(
            "shutting down: removing TAP {} and {}",
            self.dataplane.tap,
            self.control.path().display()
        );
        let Running {
            dataplane,
            control,
            _metrics,
            info: _,
            infos,
            links: _,
            fleet,
            docker,
        } = self;
        drop(docker);
        for f in fleet {
            f.stop();
        }
        drop(dataplane);
        drop(control);
        for i in &infos {
            log_totals(i);
        }
    }
}

/// SIGHUP: re-reads the file's peer list and applies the difference, each new peer checked
/// as at start.
fn reload(path: Option<&Path>, info: &SwitchInfo) {
    let Some(path) = path else {
        log::info!("SIGHUP: no --config file; nothing to reload");
        return;
    };
    let file = match config::file::load(path) {
        Ok(f) => f,
        Err(e) => {
            log::error!("SIGHUP: {}; peers unchanged", error_chain::format(&e));
            return;
        }
    };
    // Keys first, so a peer added below is sealed from its first frame.
    if info.dataplane.encrypts() {
        for p in file.peer_specs() {
            if let Some(k) = p.value.key {
                if let Err(e) = info.dataplane.set_peer_key(p.value.addr, Some(k)) {
                    log::error!("SIGHUP: {}: {e}", p.input);
                }
            }
        }
    }
    let (added, removed, errors) = info.apply_config_peers(&file.peers());
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

/// The TAP, its MTU and the tunnels' settings, once the data path is up.
fn log_dataplane(dp: &Dataplane, r: &Resolved) {
    let cfg = &r.dataplane;
    log::info!("{}", r.workers_why);
    log::info!(
        "TAP {} up, MTU {} (underlay MTU {} − {} bytes of encapsulation){}",
        dp.tap,
        cfg.networks[0].mtu,
        r.underlay_mtu,
        r.overhead,
        cfg.networks[0]
            .bridge
            .as_deref()
            .map(|b| format!(", attached to bridge {b}"))
            .unwrap_or_default()
    );
    log::info!(
        "underlay {} → peers {}; {}, key {}, csum {}, seq {}, ttl {}, tos {}, DF {}; {} worker(s), TAP offloads {}",
        cfg.local,
        if cfg.networks[0].peers.is_empty() {
            "from etcd only".to_string()
        } else {
            cfg.networks[0]
                .peers
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        },
        match cfg.gre.udp_port {
            None => "GRE (IP protocol 47)".to_string(),
            Some(p) => format!(
                "GRE-in-UDP port {p} (UDP GSO/GRO; each flow sent from one of {} source ports \
                 per worker)",
                dnet::io::gre_socket::UDP_SOURCE_PORTS
            ),
        },
        cfg.gre.key.map_or("none".into(), |k| k.to_string()),
        on_off(cfg.gre.csum),
        on_off(cfg.gre.seq),
        cfg.outer.ttl,
        cfg.outer.tos,
        on_off(cfg.outer.df),
        cfg.workers,
        on_off(dp.offload),
    );
}

/// The networks after the first, one line each.
fn log_more_networks(dp: &Dataplane, r: &Resolved) {
    for (net, dc) in r.dataplane.networks.iter().zip(&dp.networks).skip(1) {
        log::info!(
            "network {}: TAP {} up, MTU {}, key {}{}",
            net.name,
            dc.tap,
            net.mtu,
            net.key.map_or("none".into(), |k| k.to_string()),
            net.bridge
                .as_deref()
                .map(|b| format!(", attached to bridge {b}"))
                .unwrap_or_default()
        );
    }
}

/// Keepalives, loop guard, MSS clamping and the spanning tree.
fn log_protection(dp: &Dataplane, r: &Resolved) {
    let core = &r.dataplane.networks[0].core;
    let live = core.liveness;
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
        on_off(core.loop_guard),
        on_off(core.clamp_mss),
        match (&core.stp, &dp.control.stp) {
            (Some(c), Some(s)) => format!(
                "spanning tree on (bridge id {}, priority {})",
                s.with(|m| m.bridge()),
                c.priority
            ),
            _ => "split horizon (full mesh, no spanning tree)".into(),
        },
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
            "{}port {}: rx {} frames / {} bytes, tx {} frames / {} bytes",
            network_prefix(info),
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
        log::info!("{}dropped: {}", network_prefix(info), drops.join(", "));
    }
}

/// `network blue: ` for a named network's log lines.
fn network_prefix(info: &SwitchInfo) -> String {
    if info.dataplane.name.is_empty() {
        String::new()
    } else {
        format!("network {}: ", info.dataplane.name)
    }
}
