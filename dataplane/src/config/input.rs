//! [`Input`]: a setting as the operator gave it (which, the value as written, and where),
//! the way every refusal names it.

use super::options::{Encap, LogLevel, Options, PacketRings};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

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
    /// An environment variable (`DNET_ETCD`, the default of `--etcd`).
    Env {
        /// The variable.
        var: &'static str,
    },
    /// A network's record in etcd (`--network`): its settings, or one of its members.
    Etcd {
        /// The network.
        network: String,
    },
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

    /// A value read from environment variable `var`.
    pub fn env(key: &str, var: &'static str, value: impl fmt::Display) -> Input {
        Input {
            key: key.to_string(),
            value: value.to_string(),
            origin: Origin::Env { var },
        }
    }

    /// A value read from network `network`'s records in etcd.
    pub fn etcd(key: &str, network: &str, value: impl fmt::Display) -> Input {
        Input {
            key: key.to_string(),
            value: value.to_string(),
            origin: Origin::Etcd {
                network: network.to_string(),
            },
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
            Origin::Env { var } => write!(f, "environment variable {var}={}", self.value),
            Origin::Etcd { network } => write!(
                f,
                "{} {} (from network {network} in etcd)",
                self.key, self.value
            ),
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

/// Repeated flags (`--network blue --network red`), shown as one comma-separated value.
impl FlagText for Vec<String> {
    fn flag_text(&self) -> String {
        self.join(",")
    }
}

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
flag_text_by_value_name!(LogLevel, Encap, PacketRings);

impl FlagText for super::peer_spec::PeerSpec {
    fn flag_text(&self) -> String {
        self.to_string()
    }
}
