//! The settings pipeline of `dnet-switch`, one step per module:
//!
//! ```text
//! flags ──┐
//!         ├─ Options (options.rs: one struct, read by clap and by serde)
//! --config┘      │
//!  (file.rs)     ▼
//!             Sources: flags over file, each value with its origin (flag, or file + line)
//!                │  Settings::new (settings.rs): defaults, validation, user and group lookup
//!                ▼
//!             Settings ── resolve (resolve.rs): against the host (routes, addresses, bridge)
//!                             │
//!                             ▼
//!                         DataplaneConfig ── io::Dataplane::start
//! ```
//!
//! Peers are checked by one function, [`peer::check_peer`], at start, on `dnetctl peer add`
//! and on SIGHUP. Every refusal names its [`Input`] (`--ttl 0`, or `config file
//! /etc/dnet/dnet.toml, line 4: ttl = 0`) and the fix.

pub mod file;
mod host;
pub mod options;
pub mod peer;
mod resolve;
mod settings;

pub use file::{ConfigFile, FileError};
pub use host::{Host, SystemHost};
pub use options::{Encap, LogLevel, Options};
pub use peer::{check_peer, PeerError, PeerRoute};
pub use resolve::{check_privileges, resolve, tap_mtu_for, ResolveError, Resolved, MIN_MTU};
pub use settings::{Group, Settings, SettingsError};

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A flag on the command line.
    Flag,
    /// A key of the config file.
    File {
        /// The file, as given to `--config`.
        path: PathBuf,
        /// 1-based line of the value.
        line: usize,
    },
    /// A request on the control socket (`dnetctl peer add`).
    Runtime,
}

/// One setting as the operator gave it: which, the value as written, and where. Its
/// `Display` is how refusals name it: `--ttl 0`, `config file /etc/dnet/dnet.toml, line 4:
/// ttl = 0`, or `peer 10.0.0.3` (control socket).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// The config-file key (the flag's name with `_`).
    pub key: String,
    /// The value as written (empty for a flag that takes none, e.g. `--no-offload`).
    pub value: String,
    /// Where.
    pub origin: Origin,
}

impl Input {
    /// A value given on the control socket.
    pub fn runtime(key: &str, value: impl fmt::Display) -> Input {
        Input {
            key: key.to_string(),
            value: value.to_string(),
            origin: Origin::Runtime,
        }
    }

    /// A value given as a flag.
    pub fn flag(key: &str, value: impl fmt::Display) -> Input {
        Input {
            key: key.to_string(),
            value: value.to_string(),
            origin: Origin::Flag,
        }
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::Flag => {
                let flag = Options::flag(&self.key)
                    .unwrap_or_else(|| format!("--{}", self.key.replace('_', "-")));
                if self.value.is_empty() {
                    write!(f, "{flag}")
                } else {
                    write!(f, "{flag} {}", self.value)
                }
            }
            Origin::File { path, line } => write!(
                f,
                "config file {}, line {line}: {} = {}",
                path.display(),
                self.key,
                self.value
            ),
            Origin::Runtime => write!(f, "{} {}", self.key, self.value),
        }
    }
}

/// A value and how it was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sourced<T> {
    /// The value.
    pub value: T,
    /// Where it came from, for refusals.
    pub input: Input,
}

/// How a value reads after its flag (`--ttl 0`); toggles read as nothing (`--no-offload`).
pub trait FlagText {
    /// The text.
    fn flag_text(&self) -> String;
}

macro_rules! flag_text_by_display {
    ($($t:ty),*) => {$(
        impl FlagText for $t {
            fn flag_text(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
flag_text_by_display!(u8, u16, u32, u64, usize, String, Ipv4Addr, SocketAddr);

impl FlagText for bool {
    fn flag_text(&self) -> String {
        String::new()
    }
}

impl FlagText for PathBuf {
    fn flag_text(&self) -> String {
        self.display().to_string()
    }
}

macro_rules! flag_text_by_value_name {
    ($($t:ty),*) => {$(
        impl FlagText for $t {
            fn flag_text(&self) -> String {
                clap::ValueEnum::to_possible_value(self)
                    .map(|v| v.get_name().to_string())
                    .unwrap_or_default()
            }
        }
    )*};
}
flag_text_by_value_name!(LogLevel, Encap);

/// The operator's options from every source: the flags, layered over the config file.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// Options given as flags.
    pub flags: Options,
    /// The config file, if `--config` named one.
    pub file: Option<ConfigFile>,
}

/// `sources.get("name", |o| o.name.clone())`, with the key spelled once, by the compiler.
macro_rules! get {
    ($sources:expr, $field:ident) => {
        $sources.get(stringify!($field), |o| o.$field.clone())
    };
}
pub(crate) use get;

impl Sources {
    /// The flags, and the file at `config` if given.
    pub fn load(flags: Options, config: Option<&Path>) -> Result<Sources, FileError> {
        Ok(Sources {
            flags,
            file: config.map(file::load).transpose()?,
        })
    }

    /// The value of `key` (read from an [`Options`] by `field`): the flag's if given, else
    /// the file's, with where it came from.
    pub fn get<T: FlagText>(
        &self,
        key: &str,
        field: impl Fn(&Options) -> Option<T>,
    ) -> Option<Sourced<T>> {
        if let Some(value) = field(&self.flags) {
            let input = Input::flag(key, value.flag_text());
            return Some(Sourced { value, input });
        }
        let file = self.file.as_ref()?;
        let value = field(&file.options)?;
        let input = file.input(key)?;
        Some(Sourced { value, input })
    }

    /// The peers: the flags' in order, then the file's that no flag gave (each once).
    pub fn peers(&self) -> Vec<Sourced<Ipv4Addr>> {
        let mut out: Vec<Sourced<Ipv4Addr>> = self
            .flags
            .peer
            .iter()
            .map(|p| Sourced {
                value: *p,
                input: Input::flag("peer", p),
            })
            .collect();
        let file_peers = self
            .file
            .as_ref()
            .map(ConfigFile::peers)
            .unwrap_or_default();
        for p in file_peers {
            if !out.iter().any(|q| q.value == p.value) {
                out.push(p);
            }
        }
        out
    }

    /// The log level (flag, file, or `info`), needed before anything is validated.
    pub fn log_level(&self) -> log::LevelFilter {
        get!(self, log_level).map_or(log::LevelFilter::Info, |l| l.value.into())
    }

    /// The config file's path, if any.
    pub fn config_path(&self) -> Option<&Path> {
        self.file.as_ref().map(|f| f.path.as_path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(flags: Options, text: &str) -> Sources {
        Sources {
            flags,
            file: Some(file::parse(Path::new("/etc/dnet.toml"), text).unwrap()),
        }
    }

    #[test]
    fn flags_win_over_the_file_and_keep_their_origin() {
        let s = sources(
            Options {
                ttl: Some(9),
                ..Options::default()
            },
            "ttl = 33\ntos = 4\n",
        );
        let ttl = get!(s, ttl).unwrap();
        assert_eq!(
            (ttl.value, ttl.input.to_string()),
            (9, "--ttl 9".to_string())
        );
        let tos = get!(s, tos).unwrap();
        assert_eq!(
            (tos.value, tos.input.to_string()),
            (4, "config file /etc/dnet.toml, line 2: tos = 4".to_string())
        );
        assert!(get!(s, mtu).is_none());
        let off = Sources {
            flags: Options {
                offload: Some(false),
                ..Options::default()
            },
            file: None,
        };
        assert_eq!(
            get!(off, offload).unwrap().input.to_string(),
            "--no-offload"
        );
    }

    #[test]
    fn peers_merge_flags_first_each_once() {
        let a = Ipv4Addr::new(10, 0, 0, 2);
        let b = Ipv4Addr::new(10, 0, 0, 3);
        let s = sources(
            Options {
                peer: vec![b],
                ..Options::default()
            },
            "peer = [\"10.0.0.2\", \"10.0.0.3\", \"10.0.0.2\"]\n",
        );
        let p = s.peers();
        assert_eq!(p.iter().map(|p| p.value).collect::<Vec<_>>(), vec![b, a]);
        assert_eq!(p[0].input.origin, Origin::Flag);
        assert!(matches!(p[1].input.origin, Origin::File { line: 1, .. }));
    }

    #[test]
    fn log_level_defaults_to_info() {
        assert_eq!(Sources::default().log_level(), log::LevelFilter::Info);
        let s = sources(Options::default(), "log_level = \"warn\"\n");
        assert_eq!(s.log_level(), log::LevelFilter::Warn);
    }
}
