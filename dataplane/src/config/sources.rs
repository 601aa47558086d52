//! [`Sources`]: the flags layered over the config file, each value with where it came from.

use super::file::{self, ConfigFile, FileError};
use super::input::{FlagText, Input, Sourced};
use super::options::Options;
use super::peer_spec::PeerSpec;
use dnet_crypto::PublicKey;
use std::net::Ipv4Addr;
use std::path::Path;

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
        self.peer_specs()
            .into_iter()
            .map(|p| Sourced {
                value: p.value.addr,
                input: p.input,
            })
            .collect()
    }

    /// The peers' public keys given with them (`--peer IP=PUBKEY`, or the file's `peer`
    /// list), for the peers [`Sources::peers`] lists.
    pub fn peer_keys(&self) -> Vec<Sourced<(Ipv4Addr, PublicKey)>> {
        self.peer_specs()
            .into_iter()
            .filter_map(|p| {
                Some(Sourced {
                    value: (p.value.addr, p.value.key?),
                    input: p.input,
                })
            })
            .collect()
    }

    /// The peers as given (`IP` or `IP=PUBKEY`): the flags' in order, then the file's whose
    /// address no flag gave (each address once).
    fn peer_specs(&self) -> Vec<Sourced<PeerSpec>> {
        let mut out: Vec<Sourced<PeerSpec>> = self
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
            .map(ConfigFile::peer_specs)
            .unwrap_or_default();
        for p in file_peers {
            if !out.iter().any(|q| q.value.addr == p.value.addr) {
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
    use super::super::input::Origin;
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
                peer: vec![b.into()],
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
