//! `dnetctl stats`: print a running switch's counters.

use clap::Args;
use dnet_proto::{PortKind, Stats};

/// Show a running dnet-switch's per-port counters and drops (via its control socket).
///
/// Ports are listed TAP first, then one GRE tunnel per peer, with frames and bytes received
/// and sent; drop reasons with a non-zero count follow.
///
/// A switch serving several networks shows each (or only `--network NAME`'s); frames with a
/// GRE key no network has are dropped and counted (`unknown_key`) in every network's list.
#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    target: crate::switch_cmds::Target,
}

pub fn run(a: StatsArgs) -> anyhow::Result<()> {
    crate::switch_cmds::run_stats(&a.target)
}

/// Bytes in binary units, e.g. `1.50 MiB`, exact below 1 KiB.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.2} {}", UNITS[u])
}

/// The human-readable rendering of `dnetctl stats`: a summary line, an aligned port table,
/// and the drop reasons and events that are non-zero.
pub fn format_stats(s: &Stats) -> String {
    let mut out = format!(
        "switch {}  mtu {}  local {}  workers {}  learned MACs {}\n",
        s.tap, s.mtu, s.local, s.workers, s.fdb_entries
    );
    let header = [
        "PORT", "KIND", "PEER", "RX PKTS", "RX BYTES", "TX PKTS", "TX BYTES",
    ];
    let rows: Vec<[String; 7]> = s
        .ports
        .iter()
        .map(|p| {
            [
                p.name.clone(),
                match p.kind {
                    PortKind::Local => "local".into(),
                    PortKind::Tunnel => "tunnel".into(),
                },
                p.peer.map_or_else(|| "-".into(), |ip| ip.to_string()),
                p.rx_packets.to_string(),
                human_bytes(p.rx_bytes),
                p.tx_packets.to_string(),
                human_bytes(p.tx_bytes),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    // Text columns left-aligned, numbers right-aligned.
    let line = |cells: [&str; 7]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            if i < 3 {
                l.push_str(&format!("{c:<w$}  "));
            } else {
                l.push_str(&format!("{c:>w$}  "));
            }
        }
        l.trim_end().to_string() + "\n"
    };
    out += &line(header);
    for r in &rows {
        out += &line(r.each_ref().map(String::as_str));
    }
    let drops: Vec<String> = s
        .drops
        .iter()
        .filter(|d| d.count > 0)
        .map(|d| format!("{} {}", d.reason, d.count))
        .collect();
    if drops.is_empty() {
        out += "drops: none\n";
    } else {
        out += &format!("drops: {}\n", drops.join(", "));
    }
    let events: Vec<String> = s
        .events
        .iter()
        .filter(|d| d.count > 0)
        .map(|d| format!("{} {}", d.reason, d.count))
        .collect();
    if !events.is_empty() {
        out += &format!("events: {}\n", events.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use dnet_proto::{DropCount, PortStats};

    #[test]
    fn table_is_aligned_and_lists_only_nonzero_drops() {
        let s = Stats {
            tap: "dnet0".into(),
            mtu: 1462,
            local: "10.200.0.1".parse().unwrap(),
            workers: 1,
            fdb_entries: 2,
            ports: vec![
                PortStats {
                    name: "dnet0".into(),
                    kind: PortKind::Local,
                    peer: None,
                    rx_packets: 12,
                    rx_bytes: 1200,
                    tx_packets: 3,
                    tx_bytes: 300,
                },
                PortStats {
                    name: "gre-10.200.0.2".into(),
                    kind: PortKind::Tunnel,
                    peer: Some("10.200.0.2".parse().unwrap()),
                    rx_packets: 3,
                    rx_bytes: 300,
                    tx_packets: 12,
                    tx_bytes: 1200,
                },
            ],
            drops: vec![
                DropCount {
                    reason: "no_route".into(),
                    count: 0,
                },
                DropCount {
                    reason: "too_big".into(),
                    count: 4,
                },
            ],
            events: vec![
                DropCount {
                    reason: "flood".into(),
                    count: 0,
                },
                DropCount {
                    reason: "mac_move".into(),
                    count: 1,
                },
            ],
        };
        let t = format_stats(&s);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].contains("mtu 1462"));
        assert!(lines[1].starts_with("PORT"));
        // Right-aligned numeric columns end at the same position on every row.
        assert_eq!(lines[2].len(), lines[3].len());
        assert!(lines[3].contains("10.200.0.2"));
        assert_eq!(lines[4], "drops: too_big 4");
        assert_eq!(lines[5], "events: mac_move 1");
    }

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(human_bytes(256 << 20), "256.00 MiB");
    }
}
