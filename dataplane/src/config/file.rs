//! `dnet-switch --config FILE`: the [`Options`] in TOML, keys as the flags with `_` (`peer` is
//! a list). Flags win over the file; peers from both are used. SIGHUP re-reads the file's
//! `peer` list.
//!
//! ```toml
//! peer = ["172.31.7.240", "172.31.7.241"]
//! bridge = "docker0"
//! key = 42
//! metrics = "127.0.0.1:9464"
//! ```
//!
//! Unknown keys are refused, naming the key and the file, so a typo never silently falls back
//! to a default. Every value keeps its line, so a later refusal can name it.

use super::input::{Input, Origin, Sourced};
use super::options::Options;
use super::peer_spec::PeerSpec;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A parsed config file: its options, and where each value was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigFile {
    /// The file's path, as given.
    pub path: PathBuf,
    /// The settings it holds; absent keys are `None` (or empty).
    pub options: Options,
    /// Each top-level key's value: (1-based line, the value as written).
    values: BTreeMap<String, (usize, String)>,
    /// The same for each element of `peer`, in order.
    peers: Vec<(usize, String)>,
}

impl ConfigFile {
    /// How the value of `key` was given here (`None` if the file does not set it).
    pub fn input(&self, key: &str) -> Option<Input> {
        let (line, text) = self.values.get(key)?;
        Some(self.input_at(key, *line, text))
    }

    fn input_at(&self, key: &str, line: usize, text: &str) -> Input {
        Input {
            key: key.to_string(),
            value: text.to_string(),
            origin: Origin::File {
                path: self.path.clone(),
                line,
            },
        }
    }

    /// The file's peers, each with its line.
    pub fn peers(&self) -> Vec<Sourced<Ipv4Addr>> {
        self.peer_specs()
            .into_iter()
            .map(|p| Sourced {
                value: p.value.addr,
                input: p.input,
            })
            .collect()
    }

    /// The file's peers as written (`IP` or `IP=PUBKEY`), each with its line.
    pub fn peer_specs(&self) -> Vec<Sourced<PeerSpec>> {
        self.options
            .peer
            .iter()
            .zip(&self.peers)
            .map(|(p, (line, text))| Sourced {
                value: *p,
                input: self.input_at("peer", *line, text),
            })
            .collect()
    }
}

/// Why the file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Reading failed.
    #[error("cannot read config file {path} (check the path given to --config)")]
    Read {
        /// The file.
        path: String,
        /// errno.
        source: std::io::Error,
    },
    /// A key nobody knows (typo?).
    #[error("config file {path}, line {line}: unknown key `{key}` (known keys: {known})", known = Options::keys().join(", "))]
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

/// The 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

fn invalid(path: &Path, text: &str, e: &toml::de::Error) -> FileError {
    let line = e.span().map_or(1, |s| line_of(text, s.start));
    let path = path.display().to_string();
    let message = e.message().trim().to_string();
    // serde: "unknown field `foo`, expected one of ..."
    match message
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
    {
        Some(key) => FileError::UnknownKey {
            path,
            line,
            key: key.to_string(),
        },
        None => FileError::Invalid {
            path,
            line,
            message,
        },
    }
}

/// Parses `text` (read from `path`, which names it in errors and in every [`Input`]).
pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, FileError> {
    let options: Options = toml::from_str(text).map_err(|e| invalid(path, text, &e))?;
    // A second, untyped pass for where each value is written; it cannot fail where the typed
    // one succeeded, but if it did, the error is reported the same way.
    let table = toml::de::DeTable::parse(text).map_err(|e| invalid(path, text, &e))?;
    let at = |span: Range<usize>| {
        let raw = text
            .get(span.clone())
            .unwrap_or_default()
            .trim()
            .to_string();
        (line_of(text, span.start), raw)
    };
    let mut values = BTreeMap::new();
    let mut peers = Vec::new();
    for (key, value) in table.get_ref() {
        values.insert(key.get_ref().to_string(), at(value.span()));
        if key.get_ref() == "peer" {
            if let Some(list) = value.get_ref().as_array() {
                peers = list.iter().map(|v| at(v.span())).collect();
            }
        }
    }
    Ok(ConfigFile {
        path: path.to_path_buf(),
        options,
        values,
        peers,
    })
}

/// Reads and parses `path`.
pub fn load(path: &Path) -> Result<ConfigFile, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(path, &text)
}

#[cfg(test)]
mod tests {
    use super::super::options::{Encap, LogLevel};
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
encap = "udp"
"#,
        )
        .unwrap();
        let o = &f.options;
        assert_eq!(
            o.peer,
            vec![
                Ipv4Addr::new(10, 200, 0, 2).into(),
                Ipv4Addr::new(10, 200, 0, 3).into()
            ]
        );
        assert_eq!(o.local, Some(Ipv4Addr::new(10, 200, 0, 1)));
        assert_eq!(o.tap.as_deref(), Some("dnet1"));
        assert_eq!(o.bridge.as_deref(), Some("docker0"));
        assert_eq!(
            (o.mtu, o.key, o.csum, o.seq),
            (Some(1400), Some(42), Some(true), Some(false))
        );
        assert_eq!((o.ttl, o.tos, o.workers), (Some(32), Some(16), Some(2)));
        assert_eq!(o.log_level, Some(LogLevel::Debug));
        assert_eq!(o.control_socket, Some(PathBuf::from("/run/dnet/x.sock")));
        assert_eq!(o.metrics, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(o.encap, Some(Encap::Udp));
        assert_eq!(
            parse(Path::new("e.toml"), "").unwrap().options,
            Options::default()
        );
    }

    #[test]
    fn values_keep_their_line() {
        let f = parse(
            Path::new("/etc/dnet.toml"),
            "# peers\npeer = [\n  \"10.0.0.2\",\n  \"10.0.0.3\",\n]\nstp_priority = 300\n",
        )
        .unwrap();
        assert_eq!(
            f.input("stp_priority").unwrap().to_string(),
            "config file /etc/dnet.toml, line 6: stp_priority = 300"
        );
        let peers = f.peers();
        assert_eq!(peers[1].value, Ipv4Addr::new(10, 0, 0, 3));
        assert_eq!(
            peers[1].input.to_string(),
            "config file /etc/dnet.toml, line 4: peer = \"10.0.0.3\""
        );
        assert_eq!(f.input("mtu"), None);
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
            matches!(&e, FileError::UnknownKey { key, line: 2, .. } if key == "brige"),
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
        assert!(matches!(e, FileError::Invalid { .. }), "{e:?}");
        let e = parse(Path::new("c.toml"), "\nencap = \"GRE\"\n").unwrap_err();
        assert!(
            e.to_string().starts_with("config file c.toml, line 2:"),
            "{e}"
        );
        assert!(e.to_string().contains("`gre`"), "{e}");
        let e = parse(Path::new("c.toml"), "log_level = \"loud\"\n").unwrap_err();
        assert!(e.to_string().contains("use error, warn, info"), "{e}");
        // As `log` parses levels: any case.
        let f = parse(Path::new("c.toml"), "log_level = \"INFO\"\n").unwrap();
        assert_eq!(f.options.log_level, Some(LogLevel::Info));
    }

    #[test]
    fn unreadable_file_names_it_and_its_cause_once() {
        let e = load(Path::new("/nonexistent/dnet.toml")).unwrap_err();
        assert!(matches!(e, FileError::Read { .. }));
        crate::error_chain::assert_causes_once(&e);
        let chain = crate::error_chain::format(&e);
        assert!(chain.contains("/nonexistent/dnet.toml"), "{chain}");
        assert!(chain.contains("No such file"), "{chain}");
    }

    #[test]
    fn shipped_example_parses() {
        let f = parse(
            Path::new("dist/dnet.toml"),
            include_str!("../../../dist/dnet.toml"),
        )
        .unwrap();
        assert_eq!(f.options.peer.len(), 2);
        assert_eq!(f.options.bridge.as_deref(), Some("docker0"));
    }

    #[test]
    fn shipped_example_shows_every_key_and_its_lines_parse() {
        let text = include_str!("../../../dist/dnet.toml");
        for key in Options::keys() {
            // Each key appears as a setting, given or commented out: `key = ...`.
            let line = text
                .lines()
                .map(|l| l.trim_start_matches('#').trim())
                .find(|l| l.starts_with(&format!("{key} =")))
                .unwrap_or_else(|| panic!("dist/dnet.toml does not show `{key}`"));
            // And uncommented, it is accepted as written.
            let setting = line.split(" #").next().unwrap_or(line);
            parse(Path::new("dist/dnet.toml"), &format!("{setting}\n"))
                .unwrap_or_else(|e| panic!("dist/dnet.toml's {setting:?}: {e}"));
        }
    }

    #[test]
    fn every_key_is_accepted() {
        // Every key parses on its own with a value of its type: the key list and the
        // struct are one.
        for k in Options::keys() {
            let v = match k.as_str() {
                "peer" => "[]",
                "csum" | "seq" | "offload" | "clamp_mss" | "keepalive" | "loop_guard" | "stp"
                | "docker" | "encrypt" => "true",
                "mtu" | "key" | "ttl" | "tos" | "workers" | "flood_limit" | "etcd_ttl"
                | "rekey_after" | "busy_poll" => "1",
                "keepalive_interval" | "keepalive_multiplier" | "stp_priority" | "udp_port" => "1",
                "local" => "\"10.0.0.1\"",
                "metrics" => "\"127.0.0.1:1\"",
                "log_level" => "\"info\"",
                "encap" => "\"gre\"",
                "packet_rings" => "\"on\"",
                _ => "\"x\"",
            };
            parse(Path::new("k.toml"), &format!("{k} = {v}\n"))
                .unwrap_or_else(|e| panic!("{k}: {e}"));
        }
    }
}
