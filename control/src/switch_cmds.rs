//! `dnetctl show | fdb show | fdb flush | peer add | peer del | conflicts`: live control of a
//! running `dnet-switch` through its control socket. Every command prints an aligned table
//! (or a short sentence), or with `-j` the JSON documented in docs/reference/dnetctl.md.

use crate::stats_cmd::human_bytes;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use dnet_proto::{ConflictList, FdbTable, FleetInfo, PortKind, Request, Response, Show};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

/// How to reach the switch, and the output format (shared by every command).
#[derive(Debug, Args)]
pub struct Target {
    /// Control socket of the switch [default: /run/dnet/<TAP>.sock].
    #[arg(
        short,
        long,
        value_name = "PATH",
        conflicts_with = "tap",
        global = true
    )]
    socket: Option<PathBuf>,
    /// TAP name of the switch, to find its default control socket.
    #[arg(
        short,
        long,
        value_name = "NAME",
        default_value = "dnet0",
        global = true
    )]
    tap: String,
    /// Print JSON instead of a table.
    #[arg(short, long, global = true)]
    json: bool,
    /// Seconds to wait for the switch's reply.
    #[arg(long, value_name = "SECS", default_value_t = 2.0, global = true)]
    timeout: f64,
    /// Only this network of a switch serving several (`dnet-switch --network blue --network
    /// red`) [default: show, stats and fdb show every network; other commands the first].
    #[arg(short, long, value_name = "NAME", global = true)]
    network: Option<String>,
}

impl Target {
    /// `req` for the `--network` asked for, or as it is.
    fn ask(&self, req: Request) -> anyhow::Result<Response> {
        match &self.network {
            Some(n) => self.ask_raw(Request::In {
                network: n.clone(),
                request: Box::new(req),
            }),
            None => self.ask_raw(req),
        }
    }

    /// `req` asked of every network the switch serves (or of `--network` only): the network's
    /// name (`None` for a switch of one network, or one that does not list its networks) and
    /// its answer, first network first.
    pub fn ask_each(&self, req: Request) -> anyhow::Result<Vec<(Option<String>, Response)>> {
        if let Some(n) = &self.network {
            return Ok(vec![(Some(n.clone()), self.ask(req)?)]);
        }
        let names = match self.ask_raw(Request::Networks)? {
            Response::Networks { networks } if networks.len() > 1 => {
                networks.into_iter().map(|n| n.name).collect::<Vec<_>>()
            }
            // One network, or a switch older than the request: the plain request is it.
            _ => return Ok(vec![(None, self.ask_raw(req)?)]),
        };
        names
            .into_iter()
            .map(|n| {
                let r = self.ask_raw(Request::In {
                    network: n.clone(),
                    request: Box::new(req.clone()),
                })?;
                Ok((Some(n), r))
            })
            .collect()
    }

    fn ask_raw(&self, req: Request) -> anyhow::Result<Response> {
        let path = self
            .socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(dnet_proto::default_socket_path(&self.tap)));
        let timeout = Duration::try_from_secs_f64(self.timeout).with_context(|| {
            format!(
                "--timeout {} is not a valid number of seconds",
                self.timeout
            )
        })?;
        // The client's errors name the socket and the fix already.
        Ok(dnet_proto::request(&path, &req, timeout)?)
    }
}

/// Show the switch: settings, and every port and peer with its state and counters.
///
/// A tunnel's state comes from traffic unless --keepalive is on: `active` if a frame arrived
/// in the last 60 s, `idle` if not, `silent` if none ever did; with keepalives, `up` or
/// `down`. ORIGIN says where a peer came
/// from: `flag`, `config` (file; SIGHUP may remove it), `runtime` (`dnetctl peer add`) or
/// `etcd` (a member of the --network; it goes when the member leaves). With --network, a line
/// names the network, this host's address range, and since when etcd has not answered.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    target: Target,
}

/// The MAC table (forwarding database).
#[derive(Debug, Args)]
pub struct FdbArgs {
    #[command(subcommand)]
    cmd: FdbCmd,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Subcommand)]
enum FdbCmd {
    /// List learned MACs: port, VLAN, MAC, age (like `ovs-appctl fdb/show`).
    Show,
    /// Forget learned MACs (all, or those on one port); they are relearned from traffic.
    Flush {
        /// Only this port: its name (dnet0, gre-10.200.0.2) or the peer's address.
        #[arg(long, value_name = "PORT")]
        port: Option<String>,
    },
}

/// Add or remove a peer (GRE tunnel) on the running switch; other peers are unaffected.
#[derive(Debug, Args)]
pub struct PeerArgs {
    #[command(subcommand)]
    cmd: PeerCmd,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Subcommand)]
enum PeerCmd {
    /// Add a tunnel to the host at this underlay address. The switch-wide GRE options (key,
    /// csum, seq, ttl, tos) apply. Lasts until the switch stops: add it to --peer or the
    /// config file to keep it.
    Add {
        /// Underlay address of the peer host.
        addr: Ipv4Addr,
        /// The peer's public key (`dnetctl pubkey` on that host), for a switch with
        /// --encrypt: without it the tunnel would carry nothing, so it is refused there.
        #[arg(long, value_name = "PUBKEY")]
        key: Option<String>,
    },
    /// Remove the tunnel to this peer and forget the MACs learned through it.
    Del {
        /// Underlay address of the peer host.
        addr: Ipv4Addr,
    },
}

/// IPv4 addresses claimed in ARP by two different MACs (duplicate container IPs), newest first.
///
/// A second MAC claiming an address within 2 minutes of the previous claim is listed; an
/// entry is dropped 30 minutes after it was last seen.
#[derive(Debug, Args)]
pub struct ConflictsArgs {
    #[command(flatten)]
    target: Target,
}

fn print(text: &str) -> anyhow::Result<()> {
    // Not println!: piping into `head` closes stdout early, which is not worth a panic.
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

fn json(v: &impl serde::Serialize) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(v)? + "\n")
}

fn unexpected(r: Response) -> anyhow::Error {
    anyhow::anyhow!("unexpected reply from the switch: {r:?}")
}

/// Prints one answer per network: as it was for a switch of one network; with several, each
/// under a `network NAME:` heading (JSON: an object by network name).
pub fn print_each<T: serde::Serialize>(
    target: &Target,
    answers: Vec<(Option<String>, T)>,
    text: impl Fn(&T) -> String,
) -> anyhow::Result<()> {
    if let [(None, one)] = &answers[..] {
        return print(&if target.json { json(one)? } else { text(one) });
    }
    if target.json {
        let map: serde_json::Map<String, serde_json::Value> = answers
            .iter()
            .map(|(n, v)| Ok((n.clone().unwrap_or_default(), serde_json::to_value(v)?)))
            .collect::<anyhow::Result<_>>()?;
        return print(&json(&map)?);
    }
    let mut out = String::new();
    for (i, (n, v)) in answers.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out += &format!("network {}:\n", n.as_deref().unwrap_or(""));
        out += &text(v);
    }
    print(&out)
}

/// The answers of [`Target::ask_each`], each the reply `pick` takes, or the switch's refusal.
fn expect_each<T>(
    answers: Vec<(Option<String>, Response)>,
    pick: impl Fn(Response) -> Option<T>,
) -> anyhow::Result<Vec<(Option<String>, T)>> {
    answers
        .into_iter()
        .map(|(n, r)| match r {
            Response::Error { message } => match &n {
                Some(n) => bail!("network {n}: {message}"),
                None => bail!("{message}"),
            },
            r => pick(r)
                .map(|v| (n, v))
                .ok_or_else(|| anyhow::anyhow!("unexpected reply from the switch")),
        })
        .collect()
}

/// `dnetctl show`.
pub fn run_show(a: ShowArgs) -> anyhow::Result<()> {
    let answers = expect_each(a.target.ask_each(Request::Show)?, |r| match r {
        Response::Show(s) => Some(s),
        _ => None,
    })?;
    print_each(&a.target, answers, format_show)
}

/// `dnetctl stats`.
pub fn run_stats(target: &Target) -> anyhow::Result<()> {
    let answers = expect_each(target.ask_each(Request::Stats)?, |r| match r {
        Response::Stats(s) => Some(s),
        _ => None,
    })?;
    print_each(target, answers, crate::stats_cmd::format_stats)
}

/// `dnetctl fdb ...`.
pub fn run_fdb(a: FdbArgs) -> anyhow::Result<()> {
    match a.cmd {
        FdbCmd::Show => {
            let answers = expect_each(a.target.ask_each(Request::FdbShow)?, |r| match r {
                Response::Fdb(t) => Some(t),
                _ => None,
            })?;
            print_each(&a.target, answers, format_fdb)
        }
        FdbCmd::Flush { port } => match a.target.ask(Request::FdbFlush { port: port.clone() })? {
            Response::FdbFlushed { removed } => print(&if a.target.json {
                json(&serde_json::json!({ "removed": removed }))?
            } else {
                format!(
                    "flushed {removed} MAC entries ({})\n",
                    port.as_deref().unwrap_or("all ports")
                )
            }),
            r => Err(unexpected(r)),
        },
    }
}

/// `dnetctl peer ...`.
pub fn run_peer(a: PeerArgs) -> anyhow::Result<()> {
    match a.cmd {
        PeerCmd::Add { addr, key } => match a.target.ask(Request::PeerAdd { addr, key })? {
            Response::PeerAdded {
                addr,
                port,
                warnings,
            } => print(&if a.target.json {
                json(&serde_json::json!({ "addr": addr, "port": port, "warnings": warnings }))?
            } else {
                let mut t = format!("added peer {addr}: port {port}\n");
                for w in warnings {
                    t += &format!("warning: {w}\n");
                }
                t
            }),
            r => Err(unexpected(r)),
        },
        PeerCmd::Del { addr } => match a.target.ask(Request::PeerDel { addr })? {
            Response::PeerRemoved { addr, port } => print(&if a.target.json {
                json(&serde_json::json!({ "addr": addr, "port": port }))?
            } else {
                format!("removed peer {addr}: port {port}\n")
            }),
            r => Err(unexpected(r)),
        },
    }
}

/// `dnetctl conflicts`.
pub fn run_conflicts(a: ConflictsArgs) -> anyhow::Result<()> {
    match a.target.ask(Request::Conflicts)? {
        Response::Conflicts(c) => print(&if a.target.json {
            json(&c)?
        } else {
            format_conflicts(&c)
        }),
        r => Err(unexpected(r)),
    }
}

/// An aligned table: columns flagged in `right` are right-aligned (numbers), the rest left.
pub fn table(header: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, c) in cells.enumerate() {
            let w = width[i];
            if right.get(i).copied().unwrap_or(false) {
                l += &format!("{c:>w$}  ");
            } else {
                l += &format!("{c:<w$}  ");
            }
        }
        l.trim_end().to_string() + "\n"
    };
    let mut out = line(&mut header.iter().copied());
    for r in rows {
        out += &line(&mut r.iter().map(String::as_str));
    }
    out
}

/// Seconds as `45s`, `12m03s`, `3h05m`, `2d04h`.
pub fn human_secs(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The human rendering of `dnetctl show`.
pub fn format_show(s: &Show) -> String {
    let on = |b: bool| if b { "on" } else { "off" };
    let mut out = format!(
        "switch {}  bridge {}  mtu {}  local {}  workers {}  up {}\n",
        s.tap,
        s.bridge.as_deref().unwrap_or("-"),
        s.mtu,
        s.local,
        s.workers,
        human_secs(s.uptime_secs)
    );
    out += &format!(
        "{}  key {}  csum {}  seq {}  ttl {}  tos {}  df {}\n",
        s.gre
            .udp_port
            .map_or_else(|| "encap gre".to_string(), |p| format!("encap udp:{p}")),
        s.gre.key.map_or("none".to_string(), |k| k.to_string()),
        on(s.gre.csum),
        on(s.gre.seq),
        s.gre.ttl,
        s.gre.tos,
        on(s.gre.df)
    );
    out += &format!(
        "control {}  metrics {}  config {}\n",
        s.control_socket,
        s.metrics.as_deref().unwrap_or("off"),
        s.config_file.as_deref().unwrap_or("-")
    );
    out += &format!(
        "learned MACs {}  peers {}  keepalives {}\n",
        s.fdb_entries,
        s.ports
            .iter()
            .filter(|p| p.kind == PortKind::Tunnel)
            .count(),
        s.keepalive_ms
            .map_or_else(|| "off".to_string(), |ms| format!("every {ms} ms"))
    );
    out += &match &s.stp {
        None => "spanning tree off (split horizon: full mesh)\n".to_string(),
        Some(t) => format!(
            "spanning tree: bridge {}  root {}{}  cost {}  root port {}  topology changes {} (last {})\n",
            t.bridge_id,
            t.root_id,
            if t.is_root { " (this switch)" } else { "" },
            t.root_cost,
            t.root_port.map_or_else(|| "-".to_string(), |p| p.to_string()),
            t.topology_changes,
            t.last_change_secs
                .map_or_else(|| "never".to_string(), |s| format!("{} ago", human_secs(s)))
        ),
    };
    if let Some(f) = &s.fleet {
        out += &format_fleet(f);
    }
    if let Some(e) = &s.encryption {
        out += &format!(
            "encryption on  public key {}  sessions {}  auth_failed {}  replayed {}  unknown_key {}\n",
            e.public_key, e.sessions, e.auth_failed, e.replayed, e.unknown_key
        );
    }
    let rows: Vec<Vec<String>> = s
        .ports
        .iter()
        .map(|p| {
            vec![
                p.id.to_string(),
                p.name.clone(),
                match p.kind {
                    PortKind::Local => "local".into(),
                    PortKind::Tunnel => "tunnel".into(),
                },
                p.peer.map_or_else(|| "-".into(), |a| a.to_string()),
                p.state.clone(),
                match (&p.stp_role, &p.stp_state) {
                    (Some(r), Some(st)) => format!("{r}/{st}"),
                    _ => "-".into(),
                },
                p.path_mtu.map_or_else(|| "-".into(), |m| m.to_string()),
                p.origin.clone().unwrap_or_else(|| "-".into()),
                p.last_rx_secs
                    .map_or_else(|| "never".into(), |s| format!("{} ago", human_secs(s))),
                p.rx_packets.to_string(),
                human_bytes(p.rx_bytes),
                p.tx_packets.to_string(),
                human_bytes(p.tx_bytes),
            ]
        })
        .collect();
    out += &table(
        &[
            "ID", "PORT", "KIND", "PEER", "STATE", "STP", "PMTU", "ORIGIN", "LAST RX", "RX PKTS",
            "RX BYTES", "TX PKTS", "TX BYTES",
        ],
        &rows,
        &[
            true, false, false, false, false, false, true, false, true, true, true, true, true,
        ],
    );
    out
}

/// The network lines of `dnetctl show` for a switch with `--network`.
pub fn format_fleet(f: &FleetInfo) -> String {
    let mut out = format!(
        "network {}  host {}  range {}  gateway {}  subnet {}  etcd peers {}\n",
        f.network,
        f.host,
        f.range.as_deref().unwrap_or("-"),
        f.gateway.map_or_else(|| "-".to_string(), |g| g.to_string()),
        f.subnet,
        f.members
    );
    out += &format!(
        "etcd {}  {}\n",
        f.etcd,
        match f.unreachable_secs {
            None if f.network_absent => {
                "answers, but the network was deleted (no members)".to_string()
            }
            None => "reachable".to_string(),
            Some(secs) => format!(
                "UNREACHABLE for {} (forwarding goes on with the last known members){}",
                human_secs(secs),
                f.last_error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
        }
    );
    let rejected: Vec<String> = f
        .rejected
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    if !rejected.is_empty() {
        out += &format!(
            "etcd records skipped (never tunnels): {}\n",
            rejected.join(", ")
        );
    }
    out
}

/// The human rendering of `dnetctl fdb show`.
pub fn format_fdb(t: &FdbTable) -> String {
    let rows: Vec<Vec<String>> = t
        .entries
        .iter()
        .map(|e| {
            vec![
                e.port.clone(),
                e.vlan.to_string(),
                e.mac.clone(),
                human_secs(e.age_ms / 1000),
            ]
        })
        .collect();
    let mut out = table(
        &["PORT", "VLAN", "MAC", "AGE"],
        &rows,
        &[false, true, false, true],
    );
    out += &format!(
        "{} entries, aging time {}\n",
        t.entries.len(),
        human_secs(t.aging_secs)
    );
    out
}

/// The human rendering of `dnetctl conflicts`.
pub fn format_conflicts(c: &ConflictList) -> String {
    if c.conflicts.is_empty() {
        return "no IPv4 address claimed by two MACs (ARP) in the last 30 minutes\n".into();
    }
    let claim = |e: &dnet_proto::ConflictEntry, i: usize| {
        e.claims
            .get(i)
            .map(|k| (k.mac.clone(), k.port.clone()))
            .unwrap_or_else(|| ("-".into(), "-".into()))
    };
    let rows: Vec<Vec<String>> = c
        .conflicts
        .iter()
        .map(|e| {
            let (ma, pa) = claim(e, 0);
            let (mb, pb) = claim(e, 1);
            vec![
                e.ip.to_string(),
                e.vlan.to_string(),
                ma,
                pa,
                mb,
                pb,
                e.count.to_string(),
                format!("{} ago", human_secs(e.last_seen_age_ms / 1000)),
            ]
        })
        .collect();
    table(
        &[
            "IP",
            "VLAN",
            "MAC A",
            "PORT A",
            "MAC B",
            "PORT B",
            "CHANGES",
            "LAST SEEN",
        ],
        &rows,
        &[false, true, false, false, false, false, true, true],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use dnet_proto::{ClaimEntry, ConflictEntry, FdbEntry, GreInfo, PortInfo};

    #[test]
    fn tables_align() {
        let t = table(
            &["A", "NUM"],
            &[
                vec!["long-name".into(), "1".into()],
                vec!["x".into(), "12345".into()],
            ],
            &[false, true],
        );
        let l: Vec<&str> = t.lines().collect();
        assert_eq!(l[0], "A            NUM");
        assert_eq!(l[1], "long-name      1");
        assert_eq!(l[2], "x          12345");
    }

    #[test]
    fn human_secs_units() {
        assert_eq!(human_secs(5), "5s");
        assert_eq!(human_secs(65), "1m05s");
        assert_eq!(human_secs(3700), "1h01m");
        assert_eq!(human_secs(90_000), "1d01h");
    }

    #[test]
    fn show_lists_ports_and_state() {
        let s = Show {
            tap: "dnet0".into(),
            bridge: Some("docker0".into()),
            mtu: 1462,
            local: "10.200.0.1".parse().unwrap(),
            workers: 2,
            gre: GreInfo {
                udp_port: None,
                key: Some(7),
                csum: false,
                seq: false,
                ttl: 64,
                tos: 0,
                df: true,
            },
            control_socket: "/run/dnet/dnet0.sock".into(),
            metrics: None,
            config_file: None,
            uptime_secs: 61,
            fdb_entries: 2,
            ports: vec![
                PortInfo {
                    id: 0,
                    name: "dnet0".into(),
                    kind: PortKind::Local,
                    peer: None,
                    state: "up".into(),
                    origin: None,
                    last_rx_secs: Some(1),
                    rx_packets: 10,
                    rx_bytes: 1000,
                    tx_packets: 9,
                    tx_bytes: 900,
                    stp_role: None,
                    stp_state: None,
                    path_mtu: None,
                },
                PortInfo {
                    id: 1,
                    name: "gre-10.200.0.2".into(),
                    kind: PortKind::Tunnel,
                    peer: Some("10.200.0.2".parse().unwrap()),
                    state: "silent".into(),
                    origin: Some("runtime".into()),
                    last_rx_secs: None,
                    rx_packets: 0,
                    rx_bytes: 0,
                    tx_packets: 10,
                    tx_bytes: 1000,
                    stp_role: Some("alternate".into()),
                    stp_state: Some("discarding".into()),
                    path_mtu: Some(1500),
                },
            ],
            keepalive_ms: None,
            stp: Some(dnet_proto::StpInfo {
                bridge_id: "8000.02:00:00:00:00:02".into(),
                root_id: "8000.02:00:00:00:00:01".into(),
                is_root: false,
                root_cost: 40_000,
                root_port: Some(2),
                topology_changes: 3,
                last_change_secs: Some(5),
            }),
            fleet: None,
            encryption: None,
        };
        let t = format_show(&s);
        assert!(t.contains("encap gre  key 7"), "{t}");
        let l: Vec<&str> = t.lines().collect();
        assert!(
            l[4].contains("root 8000.02:00:00:00:00:01  cost 40000  root port 2"),
            "{t}"
        );
        assert!(l[5].starts_with("ID  PORT"), "{t}");
        assert!(
            l[7].contains("gre-10.200.0.2")
                && l[7].contains("silent")
                && l[7].contains("alternate/discarding")
                && l[7].contains("1500")
                && l[7].contains("never"),
            "{t}"
        );
        assert_eq!(l[6].len(), l[7].len(), "{t}");
    }

    #[test]
    fn show_names_the_network_and_etcd_trouble() {
        let mut f = FleetInfo {
            network: "blue".into(),
            host: "10.200.0.1".into(),
            etcd: "http://10.200.0.100:2379".into(),
            subnet: "10.78.0.0/16".into(),
            range: Some("10.78.1.0/24".into()),
            gateway: Some("10.78.1.1".parse().unwrap()),
            members: 7,
            unreachable_since: None,
            unreachable_secs: None,
            network_absent: false,
            last_error: None,
            rejected: [("bad_json".to_string(), 0)].into_iter().collect(),
            counters: Default::default(),
        };
        assert_eq!(
            format_fleet(&f),
            "network blue  host 10.200.0.1  range 10.78.1.0/24  gateway 10.78.1.1  subnet 10.78.0.0/16  etcd peers 7\n\
             etcd http://10.200.0.100:2379  reachable\n"
        );
        f.unreachable_since = Some(1);
        f.unreachable_secs = Some(75);
        f.last_error = Some("timeout".into());
        f.rejected.insert("claims_this_host".into(), 2);
        let t = format_fleet(&f);
        assert!(
            t.contains("etcd http://10.200.0.100:2379  UNREACHABLE for 1m15s (forwarding goes on with the last known members): timeout\n"),
            "{t}"
        );
        assert!(
            t.ends_with("etcd records skipped (never tunnels): claims_this_host 2\n"),
            "{t}"
        );
    }

    #[test]
    fn fdb_and_conflicts_render() {
        let t = format_fdb(&FdbTable {
            aging_secs: 300,
            entries: vec![FdbEntry {
                mac: "02:77:00:00:00:01".into(),
                vlan: 0,
                port: "dnet0".into(),
                port_id: 0,
                age_ms: 2500,
            }],
        });
        assert!(
            t.lines().nth(1).unwrap().contains("02:77:00:00:00:01"),
            "{t}"
        );
        assert!(t.ends_with("1 entries, aging time 5m00s\n"), "{t}");
        let c = format_conflicts(&ConflictList {
            conflicts: vec![ConflictEntry {
                ip: "10.77.0.1".parse().unwrap(),
                vlan: 0,
                claims: vec![
                    ClaimEntry {
                        mac: "02:77:00:00:00:01".into(),
                        port: "dnet0".into(),
                        age_ms: 1000,
                    },
                    ClaimEntry {
                        mac: "02:77:00:00:00:02".into(),
                        port: "gre-10.200.0.2".into(),
                        age_ms: 0,
                    },
                ],
                count: 1,
                detected_age_ms: 0,
                last_seen_age_ms: 0,
            }],
        });
        let l: Vec<&str> = c.lines().collect();
        assert!(l[1].starts_with("10.77.0.1"), "{c}");
        assert!(l[1].contains("02:77:00:00:00:02") && l[1].contains("gre-10.200.0.2"));
        assert!(format_conflicts(&ConflictList { conflicts: vec![] }).starts_with("no IPv4"));
    }
}
