//! `dnet-switch --config FILE`: the same settings as the flags, in TOML. Flags win over the
//! file; peers from both are used. SIGHUP re-reads the file's `peer` list.
//!
//! ```toml
//! peer = ["172.31.7.240", "172.31.7.241"]
//! bridge = "docker0"
//! key = 42
//! metrics = "127.0.0.1:9464"
//! ```
//!
//! Unknown keys are refused, naming the key and the file, so a typo never silently falls back
//! to a default.

use serde::Deserialize;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// Every key the file may hold (the flags' long names, with `-` as `_`; `peer` is a list).
pub const KEYS: [&str; 27] = [
    "peer",
    "local",
    "tap",
    "bridge",
    "mtu",
    "key",
    "csum",
    "seq",
    "ttl",
    "tos",
    "workers",
    "log_level",
    "control_socket",
    "control_group",
    "metrics",
    "offload",
    "flood_limit",
    "user",
    "clamp_mss",
    "keepalive",
    "keepalive_interval",
    "keepalive_multiplier",
    "loop_guard",
    "stp",
    "stp_priority",
    "encap",
    "udp_port",
];

/// The file's settings; absent keys are `None` (or empty).
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Peer underlay addresses.
    #[serde(default)]
    pub peer: Vec<Ipv4Addr>,
    /// Underlay source address.
    pub local: Option<Ipv4Addr>,
    /// TAP name.
    pub tap: Option<String>,
    /// Bridge to attach the TAP to.
    pub bridge: Option<String>,
    /// TAP MTU.
    pub mtu: Option<u32>,
    /// GRE key.
    pub key: Option<u32>,
    /// GRE checksums.
    pub csum: Option<bool>,
    /// GRE sequence numbers.
    pub seq: Option<bool>,
    /// Outer TTL.
    pub ttl: Option<u8>,
    /// Outer TOS.
    pub tos: Option<u8>,
    /// Worker threads.
    pub workers: Option<usize>,
    /// Log level.
    pub log_level: Option<String>,
    /// Control socket path.
    pub control_socket: Option<PathBuf>,
    /// Group allowed to use the control socket besides root.
    pub control_group: Option<String>,
    /// Prometheus endpoint address.
    pub metrics: Option<SocketAddr>,
    /// TAP offloads (`offload = false` is `--no-offload`).
    pub offload: Option<bool>,
    /// Floods per second per port (`--flood-limit`).
    pub flood_limit: Option<u32>,
    /// User to run as after setup (`--user`).
    pub user: Option<String>,
    /// `--clamp-mss`.
    pub clamp_mss: Option<bool>,
    /// `--keepalive`.
    pub keepalive: Option<bool>,
    /// `--keepalive-interval` (ms).
    pub keepalive_interval: Option<u64>,
    /// `--keepalive-multiplier`.
    pub keepalive_multiplier: Option<u32>,
    /// `loop_guard = false` is `--no-loop-guard`.
    pub loop_guard: Option<bool>,
    /// `--stp`.
    pub stp: Option<bool>,
    /// `--stp-priority`.
    pub stp_priority: Option<u16>,
    /// `--encap`: `"gre"` or `"udp"`.
    pub encap: Option<String>,
    /// `--udp-port`.
    pub udp_port: Option<u16>,
}

/// Why the file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// Reading failed.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// errno.
        source: std::io::Error,
    },
    /// A key nobody knows (typo?).
    #[error("config file {path}, line {line}: unknown key `{key}` (known keys: {known})", known = KEYS.join(", "))]
    UnknownKey {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// The key.
        key: String,
    },
    /// Not TOML, or a value of the wrong type.
    #[error("config file {path}, line {line}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Parses `text` (read from `path`, which only names it in errors).
pub fn parse(path: &Path, text: &str) -> Result<FileConfig, ConfigFileError> {
    toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| {
            text[..s.start.min(text.len())].matches('\n').count() + 1
        });
        let path = path.display().to_string();
        let message = e.message().trim().to_string();
        // serde: "unknown field `foo`, expected one of ..."
        match message
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
        {
            Some(key) => ConfigFileError::UnknownKey {
                path,
                line,
                key: key.to_string(),
            },
            None => ConfigFileError::Invalid {
                path,
                line,
                message,
            },
        }
    })
}

/// Reads and parses `path`.
pub fn load(path: &Path) -> Result<FileConfig, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_key() {
        let f = parse(
            Path::new("t.toml"),
            r#"
peer = ["10.200.0.2", "10.200.0.3"]
local = "10.200.0.1"
tap = "dnet1"
bridge = "docker0"
mtu = 1400
key = 42
csum = true
seq = false
ttl = 32
tos = 16
workers = 2
log_level = "debug"
control_socket = "/run/dnet/x.sock"
metrics = "127.0.0.1:9464"
"#,
        )
        .unwrap();
        assert_eq!(
            f.peer,
            vec![Ipv4Addr::new(10, 200, 0, 2), Ipv4Addr::new(10, 200, 0, 3)]
        );
        assert_eq!(f.local, Some(Ipv4Addr::new(10, 200, 0, 1)));
        assert_eq!(f.tap.as_deref(), Some("dnet1"));
        assert_eq!(f.bridge.as_deref(), Some("docker0"));
        assert_eq!(
            (f.mtu, f.key, f.csum, f.seq),
            (Some(1400), Some(42), Some(true), Some(false))
        );
        assert_eq!((f.ttl, f.tos, f.workers), (Some(32), Some(16), Some(2)));
        assert_eq!(f.log_level.as_deref(), Some("debug"));
        assert_eq!(f.control_socket, Some(PathBuf::from("/run/dnet/x.sock")));
        assert_eq!(f.metrics, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(
            parse(Path::new("e.toml"), "").unwrap(),
            FileConfig::default()
        );
    }

    #[test]
    fn unknown_key_names_key_file_and_line() {
        let e = parse(
            Path::new("/etc/dnet/dnet.toml"),
            "peer = [\"10.0.0.2\"]\nbrige = \"docker0\"\n",
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(&e, ConfigFileError::UnknownKey { key, line: 2, .. } if key == "brige"),
            "{e:?}"
        );
        assert!(msg.contains("/etc/dnet/dnet.toml"), "{msg}");
        assert!(msg.contains("`brige`"), "{msg}");
        assert!(msg.contains("bridge"), "{msg}");
    }

    #[test]
    fn bad_values_name_the_line() {
        let e = parse(Path::new("c.toml"), "ttl = 64\npeer = [\"10.0.0.300\"]\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("config file c.toml, line 2:"), "{msg}");
        let e = parse(Path::new("c.toml"), "ttl = 999\n").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        let e = parse(Path::new("c.toml"), "peer = [\n").unwrap_err();
        assert!(matches!(e, ConfigFileError::Invalid { .. }), "{e:?}");
    }

    #[test]
    fn shipped_example_parses() {
        let f = parse(
            Path::new("dist/dnet.toml"),
            include_str!("../../dist/dnet.toml"),
        )
        .unwrap();
        assert_eq!(f.peer.len(), 2);
        assert_eq!(f.bridge.as_deref(), Some("docker0"));
    }

    #[test]
    fn keys_list_matches_the_struct() {
        // Every listed key is accepted on its own.
        for k in KEYS {
            let v = match k {
                "peer" => "[]",
                "csum" | "seq" | "offload" | "clamp_mss" | "keepalive" | "loop_guard" | "stp" => {
                    "true"
                }
                "mtu" | "key" | "ttl" | "tos" | "workers" | "flood_limit" => "1",
                "keepalive_interval" | "keepalive_multiplier" | "stp_priority" | "udp_port" => "1",
                "local" => "\"10.0.0.1\"",
                "metrics" => "\"127.0.0.1:1\"",
                _ => "\"x\"",
            };
            parse(Path::new("k.toml"), &format!("{k} = {v}\n"))
                .unwrap_or_else(|e| panic!("{k}: {e}"));
        }
    }
}
