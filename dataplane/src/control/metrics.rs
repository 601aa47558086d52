//! The Prometheus endpoint (`dnet-switch --metrics 127.0.0.1:9464`): a tiny HTTP/1.0 responder
//! on its own thread serving the same counters as `dnetctl stats` in the text exposition
//! format. One request at a time, each bounded in size and time; off by default.

use super::server::SwitchInfo;
use dnet_proto::{FleetInfo, PortKind, Stats};
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// Longest request head read (request line and headers).
const MAX_REQUEST: usize = 8 * 1024;
/// Read and write timeout per connection.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Escapes a label value (backslash, double quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders `st` (and the number of duplicate-IP conflicts, if known) in the Prometheus text
/// format, version 0.0.4.
pub fn render(st: &Stats, conflicts: Option<usize>) -> String {
    let mut o = String::new();
    let info = format!("tap=\"{}\",local=\"{}\"", label(&st.tap), st.local);
    let _ = writeln!(o, "# HELP dnet_info Switch identity (value is always 1).");
    let _ = writeln!(o, "# TYPE dnet_info gauge");
    let _ = writeln!(o, "dnet_info{{{info}}} 1");
    for (name, help, v) in [
        ("dnet_mtu_bytes", "TAP MTU.", st.mtu as u64),
        ("dnet_workers", "Worker threads.", st.workers as u64),
        (
            "dnet_fdb_entries",
            "Learned MAC addresses.",
            st.fdb_entries as u64,
        ),
    ] {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} gauge");
        let _ = writeln!(o, "{name} {v}");
    }
    type Get = fn(&dnet_proto::PortStats) -> u64;
    let port_metrics: [(&str, &str, Get); 4] = [
        ("rx_packets", "Frames received on the port.", |p| {
            p.rx_packets
        }),
        ("rx_bytes", "Bytes of frames received on the port.", |p| {
            p.rx_bytes
        }),
        ("tx_packets", "Frames sent out of the port.", |p| {
            p.tx_packets
        }),
        ("tx_bytes", "Bytes of frames sent out of the port.", |p| {
            p.tx_bytes
        }),
    ];
    for (m, help, get) in port_metrics {
        let _ = writeln!(o, "# HELP dnet_port_{m}_total {help}");
        let _ = writeln!(o, "# TYPE dnet_port_{m}_total counter");
        for p in &st.ports {
            let kind = match p.kind {
                PortKind::Local => "local",
                PortKind::Tunnel => "tunnel",
            };
            let peer = p.peer.map(|a| a.to_string()).unwrap_or_default();
            let _ = writeln!(
                o,
                "dnet_port_{m}_total{{port=\"{}\",kind=\"{kind}\",peer=\"{peer}\"}} {}",
                label(&p.name),
                get(p)
            );
        }
    }
    let _ = writeln!(
        o,
        "# HELP dnet_drops_total Frames or packets not forwarded, by reason."
    );
    let _ = writeln!(o, "# TYPE dnet_drops_total counter");
    for d in &st.drops {
        let _ = writeln!(
            o,
            "dnet_drops_total{{reason=\"{}\"}} {}",
            label(&d.reason),
            d.count
        );
    }
    let _ = writeln!(
        o,
        "# HELP dnet_events_total Counted events (floods, MAC moves, table full, lost syncs)."
    );
    let _ = writeln!(o, "# TYPE dnet_events_total counter");
    for e in &st.events {
        let _ = writeln!(
            o,
            "dnet_events_total{{event=\"{}\"}} {}",
            label(&e.reason),
            e.count
        );
    }
    if let Some(n) = conflicts {
        let _ = writeln!(
            o,
            "# HELP dnet_arp_conflicts IPv4 addresses currently claimed by two MACs (dnetctl conflicts)."
        );
        let _ = writeln!(o, "# TYPE dnet_arp_conflicts gauge");
        let _ = writeln!(o, "dnet_arp_conflicts {n}");
    }
    o
}

/// Renders the etcd network's status (`--network`) in the same format, to follow [`render`].
pub fn render_fleet(f: &FleetInfo) -> String {
    let mut o = String::new();
    let net = format!("network=\"{}\"", label(&f.network));
    let c = &f.counters;
    let gauges: [(&str, &str, u64); 3] = [
        (
            "dnet_etcd_reachable",
            "1 while etcd answers, 0 while it does not (forwarding goes on with the last known members).",
            u64::from(f.unreachable_since.is_none()),
        ),
        (
            "dnet_etcd_unreachable_seconds",
            "Seconds since etcd last answered (0 while it answers).",
            f.unreachable_secs.unwrap_or(0),
        ),
        (
            "dnet_fleet_members",
            "Members of the network that are tunnels now.",
            f.members as u64,
        ),
    ];
    for (name, help, v) in gauges {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} gauge");
        let _ = writeln!(o, "{name}{{{net}}} {v}");
    }
    let counters: [(&str, &str, u64); 5] = [
        (
            "dnet_etcd_errors_total",
            "Failed etcd requests and streams.",
            c.etcd_errors,
        ),
        (
            "dnet_etcd_reconnects_total",
            "Views rebuilt from a fresh read after etcd answered again.",
            c.reconnects,
        ),
        (
            "dnet_etcd_watch_compactions_total",
            "Watches restarted because their revision was compacted.",
            c.watch_compactions,
        ),
        (
            "dnet_etcd_lease_reregistrations_total",
            "Member leases found expired and registered again.",
            c.lease_reregistrations,
        ),
        (
            "dnet_etcd_claim_conflicts_total",
            "Range claims lost to another host's transaction (and retried).",
            c.claim_conflicts,
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} counter");
        let _ = writeln!(o, "{name}{{{net}}} {v}");
    }
    let _ = writeln!(
        o,
        "# HELP dnet_fleet_member_changes_total Members that came up or went away."
    );
    let _ = writeln!(o, "# TYPE dnet_fleet_member_changes_total counter");
    for (change, v) in [("up", c.peer_up), ("down", c.peer_down)] {
        let _ = writeln!(
            o,
            "dnet_fleet_member_changes_total{{{net},change=\"{change}\"}} {v}"
        );
    }
    let _ = writeln!(
        o,
        "# HELP dnet_etcd_rejected_records_total Records in etcd skipped as broken or hostile, by kind (never tunnels)."
    );
    let _ = writeln!(o, "# TYPE dnet_etcd_rejected_records_total counter");
    for (kind, v) in &f.rejected {
        let _ = writeln!(
            o,
            "dnet_etcd_rejected_records_total{{{net},kind=\"{}\"}} {v}",
            label(kind)
        );
    }
    o
}

/// A running metrics endpoint.
pub struct MetricsServer {
    addr: SocketAddr,
}

impl MetricsServer {
    /// Binds `addr` and serves on a background thread.
    pub fn start(addr: SocketAddr, info: Arc<SwitchInfo>) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        std::thread::Builder::new()
            .name("dnet-metrics".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    let Ok(s) = conn else { continue };
                    let _ = serve_one(s, &info);
                }
            })?;
        Ok(MetricsServer { addr })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Reads the request head (bounded) and answers it.
fn serve_one(mut s: TcpStream, info: &SwitchInfo) -> io::Result<()> {
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut n = 0;
    while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        if buf[..n].windows(2).any(|w| w == b"\n\n") {
            break;
        }
        match s.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let (status, ctype, body) = respond(head.lines().next().unwrap_or(""), || {
        let mut text = render(
            &info.stats(),
            info.dataplane.conflicts().ok().map(|(c, _)| c.len()),
        );
        if let Some(f) = info.fleet_info() {
            text.push_str(&render_fleet(&f));
        }
        text
    });
    let resp = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(resp.as_bytes())?;
    s.write_all(body.as_bytes())?;
    Ok(())
}

/// Status line, content type and body for a request line.
fn respond(
    request_line: &str,
    metrics: impl FnOnce() -> String,
) -> (&'static str, &'static str, String) {
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let text = "text/plain; charset=utf-8";
    match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics(),
        ),
        ("GET", "/") => ("200 OK", text, "dnet-switch: metrics at /metrics\n".into()),
        ("GET", _) => ("404 Not Found", text, "not found: try /metrics\n".into()),
        _ => (
            "405 Method Not Allowed",
            text,
            "only GET is supported\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dnet_proto::{DropCount, PortStats};

    fn stats() -> Stats {
        Stats {
            tap: "dnet0".into(),
            mtu: 1462,
            local: "10.200.0.1".parse().unwrap(),
            workers: 2,
            fdb_entries: 3,
            ports: vec![
                PortStats {
                    name: "dnet0".into(),
                    kind: PortKind::Local,
                    peer: None,
                    rx_packets: 5,
                    rx_bytes: 500,
                    tx_packets: 6,
                    tx_bytes: 600,
                },
                PortStats {
                    name: "gre-10.200.0.2".into(),
                    kind: PortKind::Tunnel,
                    peer: Some("10.200.0.2".parse().unwrap()),
                    rx_packets: 6,
                    rx_bytes: 600,
                    tx_packets: 5,
                    tx_bytes: 500,
                },
            ],
            drops: vec![DropCount {
                reason: "wrong_key".into(),
                count: 7,
            }],
            events: vec![DropCount {
                reason: "flood".into(),
                count: 2,
            }],
        }
    }

    #[test]
    fn renders_counters_with_labels() {
        let t = render(&stats(), Some(1));
        assert!(t.contains("dnet_info{tap=\"dnet0\",local=\"10.200.0.1\"} 1\n"));
        assert!(t.contains("# TYPE dnet_port_rx_packets_total counter\n"));
        assert!(
            t.contains("dnet_port_rx_packets_total{port=\"dnet0\",kind=\"local\",peer=\"\"} 5\n")
        );
        assert!(t.contains(
            "dnet_port_tx_bytes_total{port=\"gre-10.200.0.2\",kind=\"tunnel\",peer=\"10.200.0.2\"} 500\n"
        ));
        assert!(t.contains("dnet_drops_total{reason=\"wrong_key\"} 7\n"));
        assert!(t.contains("dnet_events_total{event=\"flood\"} 2\n"));
        assert!(t.contains("dnet_fdb_entries 3\n"));
        assert!(t.contains("dnet_arp_conflicts 1\n"));
        // Every sample line is `name{labels} value` or `name value`; every name is typed.
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            assert!(t.contains(&format!("# TYPE {name} ")), "{l}");
            assert!(l.rsplit(' ').next().unwrap().parse::<u64>().is_ok(), "{l}");
        }
        assert!(!render(&stats(), None).contains("dnet_arp_conflicts"));
    }

    #[test]
    fn renders_the_fleet_status() {
        let f = FleetInfo {
            network: "blue".into(),
            host: "10.200.0.1".into(),
            etcd: "http://10.200.0.100:2379".into(),
            subnet: "10.78.0.0/16".into(),
            range: Some("10.78.1.0/24".into()),
            gateway: None,
            members: 7,
            unreachable_since: Some(1),
            unreachable_secs: Some(42),
            network_absent: false,
            last_error: None,
            rejected: [
                ("bad_json".to_string(), 2),
                ("claims_this_host".to_string(), 1),
            ]
            .into_iter()
            .collect(),
            counters: dnet_proto::FleetCounters {
                peer_up: 9,
                reconnects: 1,
                ..Default::default()
            },
        };
        let t = render_fleet(&f);
        for line in [
            "dnet_etcd_reachable{network=\"blue\"} 0\n",
            "dnet_etcd_unreachable_seconds{network=\"blue\"} 42\n",
            "dnet_fleet_members{network=\"blue\"} 7\n",
            "dnet_etcd_reconnects_total{network=\"blue\"} 1\n",
            "dnet_fleet_member_changes_total{network=\"blue\",change=\"up\"} 9\n",
            "dnet_etcd_rejected_records_total{network=\"blue\",kind=\"bad_json\"} 2\n",
            "dnet_etcd_rejected_records_total{network=\"blue\",kind=\"claims_this_host\"} 1\n",
        ] {
            assert!(t.contains(line), "{line} not in\n{t}");
        }
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            assert!(t.contains(&format!("# TYPE {name} ")), "{l}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn routes_requests() {
        let m = || "m".to_string();
        assert_eq!(respond("GET /metrics HTTP/1.1", m).0, "200 OK");
        assert_eq!(respond("GET /metrics HTTP/1.1", m).2, "m");
        assert_eq!(respond("GET /metrics?x=1 HTTP/1.0", m).2, "m");
        assert_eq!(respond("GET /nope HTTP/1.0", m).0, "404 Not Found");
        assert_eq!(
            respond("POST /metrics HTTP/1.0", m).0,
            "405 Method Not Allowed"
        );
        assert_eq!(respond("", m).0, "405 Method Not Allowed");
    }
}
