//! The Prometheus endpoint (`dnet-switch --metrics 127.0.0.1:9464`): a tiny HTTP/1.0 responder
//! on its own thread serving the same counters as `dnetctl stats` in the text exposition
//! format. One request at a time, each bounded in size and time; off by default.

use super::server::SwitchInfo;
use dnet_proto::{PortKind, Stats};
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
        render(
            &info.stats(),
            info.dataplane.conflicts().ok().map(|(c, _)| c.len()),
        )
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
