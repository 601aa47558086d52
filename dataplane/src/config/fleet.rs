//! [`FleetSettings`]: `--network` and the `--etcd*` options, validated. The switch hands them
//! to the cluster agent (crate `dnet-cluster`), which joins the network before the data path
//! starts; [`super::Settings::apply_network`] then takes the network's encapsulation, key and
//! MTU.
//!
//! `--etcd` defaults to `$DNET_ETCD` (below the flag and the file, as a default should be);
//! the etcd password comes from `--etcd-password-file` or `$DNET_ETCD_PASSWORD`, never from a
//! flag, where `ps` would show it.

use super::error::SettingsError;
use super::input::{Input, Sourced};
use super::options::Encap;
use super::sources::{get, Sources};
use std::path::PathBuf;
use std::time::Duration;

/// The environment variable `--etcd` defaults to.
pub const ETCD_ENV: &str = "DNET_ETCD";

/// The environment variable holding the password of `--etcd-user` when no
/// `--etcd-password-file` is given.
pub const PASSWORD_ENV: &str = "DNET_ETCD_PASSWORD";

/// Default member lease TTL.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

pub use super::limits::{MAX_TTL_SECS, MIN_TTL_SECS};

/// TLS files for etcd.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdTls {
    /// `--etcd-cacert`.
    pub ca: Option<PathBuf>,
    /// `--etcd-cert`.
    pub cert: Option<PathBuf>,
    /// `--etcd-key`.
    pub key: Option<PathBuf>,
}

/// Where the etcd password is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasswordSource {
    /// The first line of this file.
    File(PathBuf),
    /// This environment variable.
    Env(&'static str),
}

/// etcd user and where its password is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdAuth {
    /// `--etcd-user`.
    pub user: String,
    /// Where the password is.
    pub password: PasswordSource,
}

/// The data-path settings given on this host that the network's must agree with (`None`: not
/// given, take the network's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GivenNetworkSettings {
    /// `--encap`.
    pub encap: Option<Encap>,
    /// `--udp-port`.
    pub udp_port: Option<u16>,
    /// `--key`.
    pub key: Option<u32>,
    /// `--mtu`.
    pub mtu: Option<u32>,
}

/// `--network` and how to reach etcd, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetSettings {
    /// The network to join (the first one, with several).
    pub network: Sourced<String>,
    /// Every network to join, the first one first, each once.
    pub networks: Vec<String>,
    /// etcd client URLs, as given (flag, file or `$DNET_ETCD`).
    pub etcd: Input,
    /// The URLs, split.
    pub endpoints: Vec<String>,
    /// Key prefix; `None`: the cluster crate's default (`/dnet`).
    pub prefix: Option<String>,
    /// Member lease TTL.
    pub ttl: Duration,
    /// TLS files, when TLS is on.
    pub tls: Option<EtcdTls>,
    /// User and password, when etcd has auth on.
    pub auth: Option<EtcdAuth>,
    /// Local settings the network's must agree with.
    pub given: GivenNetworkSettings,
}

impl FleetSettings {
    /// The host part of each endpoint URL (`10.0.0.5` of `http://10.0.0.5:2379`), to find
    /// the underlay address from the route to etcd when there is no `--peer`.
    pub fn endpoint_hosts(&self) -> Vec<String> {
        self.endpoints.iter().filter_map(|u| url_host(u)).collect()
    }
}

/// The host of an `http(s)://HOST[:PORT][/...]` URL (brackets of an IPv6 literal kept).
fn url_host(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let authority = rest.split('/').next()?;
    let host = if authority.starts_with('[') {
        &authority[..=authority.find(']')?]
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    (!host.is_empty()).then(|| host.to_string())
}

/// Reads the fleet options from `sources` (and `env` for `$DNET_ETCD`/`$DNET_ETCD_PASSWORD`).
/// `None` without `--network`; every `--etcd*` option without it is refused.
pub(crate) fn fleet_settings(
    s: &Sources,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<FleetSettings>, SettingsError> {
    let names = s.get("network", |o| {
        (!o.network.is_empty()).then(|| o.network.clone())
    });
    let Some(network) = names.as_ref().map(|n| Sourced {
        value: n.value[0].clone(),
        input: n.input.clone(),
    }) else {
        // Any etcd option alone is a mistake; $DNET_ETCD alone is just a default not used.
        let stray = [
            get!(s, etcd).map(|v| v.input),
            get!(s, etcd_prefix).map(|v| v.input),
            get!(s, etcd_ttl).map(|v| v.input),
            get!(s, etcd_cacert).map(|v| v.input),
            get!(s, etcd_cert).map(|v| v.input),
            get!(s, etcd_key).map(|v| v.input),
            get!(s, etcd_user).map(|v| v.input),
            get!(s, etcd_password_file).map(|v| v.input),
        ];
        if let Some(input) = stray.into_iter().flatten().next() {
            return Err(SettingsError::EtcdWithoutNetwork(input));
        }
        return Ok(None);
    };
    let (etcd, urls) = match get!(s, etcd) {
        Some(e) => (e.input, e.value),
        None => match env(ETCD_ENV).filter(|v| !v.trim().is_empty()) {
            Some(v) => (Input::env("etcd", ETCD_ENV, &v), v),
            None => return Err(SettingsError::NetworkWithoutEtcd(network.input)),
        },
    };
    let endpoints: Vec<String> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(String::from)
        .collect();
    if endpoints.is_empty() {
        return Err(SettingsError::EtcdUrl {
            input: etcd,
            url: String::new(),
        });
    }
    if let Some(bad) = endpoints.iter().find(|u| url_host(u).is_none()) {
        return Err(SettingsError::EtcdUrl {
            url: bad.clone(),
            input: etcd,
        });
    }

    let ttl = match get!(s, etcd_ttl) {
        Some(t) if !(MIN_TTL_SECS..=MAX_TTL_SECS).contains(&t.value) => {
            return Err(SettingsError::EtcdTtl(t.input))
        }
        Some(t) => Duration::from_secs(t.value),
        None => DEFAULT_TTL,
    };

    let (ca, cert, key) = (get!(s, etcd_cacert), get!(s, etcd_cert), get!(s, etcd_key));
    match (&cert, &key) {
        (Some(c), None) => return Err(SettingsError::EtcdCertWithoutKey(c.input.clone())),
        (None, Some(k)) => return Err(SettingsError::EtcdKeyWithoutCert(k.input.clone())),
        _ => {}
    }
    let tls_given = [&ca, &cert].into_iter().flatten().next().map(|v| &v.input);
    let tls = match tls_given {
        Some(flag) => {
            if let Some(u) = endpoints.iter().find(|u| u.starts_with("http://")) {
                return Err(SettingsError::EtcdTlsOverHttp {
                    input: flag.clone(),
                    url: u.clone(),
                });
            }
            Some(EtcdTls {
                ca: ca.map(|v| v.value),
                cert: cert.map(|v| v.value),
                key: key.map(|v| v.value),
            })
        }
        None => {
            if let Some(u) = endpoints.iter().find(|u| u.starts_with("https://")) {
                return Err(SettingsError::EtcdHttpsWithoutCa {
                    input: etcd,
                    url: u.clone(),
                });
            }
            None
        }
    };

    let password_file = get!(s, etcd_password_file);
    let auth = match (get!(s, etcd_user), password_file) {
        (Some(u), Some(f)) => Some(EtcdAuth {
            user: u.value,
            password: PasswordSource::File(f.value),
        }),
        (Some(u), None) => {
            if env(PASSWORD_ENV).is_none() {
                return Err(SettingsError::EtcdNoPassword(u.input));
            }
            Some(EtcdAuth {
                user: u.value,
                password: PasswordSource::Env(PASSWORD_ENV),
            })
        }
        (None, Some(f)) => return Err(SettingsError::EtcdPasswordWithoutUser(f.input)),
        (None, None) => None,
    };

    let networks = names.map(|n| n.value).unwrap_or_default();
    for (i, n) in networks.iter().enumerate() {
        if networks[..i].contains(n) {
            return Err(SettingsError::DuplicateNetwork {
                input: network.input.clone(),
                name: n.clone(),
            });
        }
    }
    if networks.len() > 1 {
        // Each network's key and MTU are its own, from etcd: one flag cannot say them all.
        let one = [get!(s, key).map(|v| v.input), get!(s, mtu).map(|v| v.input)];
        if let Some(input) = one.into_iter().flatten().next() {
            return Err(SettingsError::OneValueForSeveralNetworks(input));
        }
    }
    Ok(Some(FleetSettings {
        network,
        networks,
        etcd,
        endpoints,
        prefix: get!(s, etcd_prefix).map(|p| p.value),
        ttl,
        tls,
        auth,
        given: GivenNetworkSettings {
            encap: get!(s, encap).map(|v| v.value),
            udp_port: get!(s, udp_port).map(|v| v.value),
            key: get!(s, key).map(|v| v.value),
            mtu: get!(s, mtu).map(|v| v.value),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::super::file;
    use super::super::options::Options;
    use super::super::settings::Settings;
    use super::*;
    use std::path::Path;

    fn net(o: Options) -> Options {
        Options {
            network: vec!["blue".into()],
            ..o
        }
    }

    fn with_env(o: Options, vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::with_env(
            &Sources {
                flags: o,
                file: None,
            },
            &move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()),
        )
    }

    fn fleet(o: Options) -> FleetSettings {
        with_env(o, &[]).unwrap().fleet.expect("fleet settings")
    }

    fn refusal(o: Options, vars: &[(&str, &str)]) -> String {
        let e = with_env(o, vars).unwrap_err();
        crate::error_chain::assert_causes_once(&e);
        e.to_string()
    }

    #[test]
    fn a_network_needs_no_peer_and_takes_the_defaults() {
        let f = fleet(net(Options {
            etcd: Some("http://10.200.0.100:2379, http://10.200.0.101:2379".into()),
            ..Options::default()
        }));
        assert_eq!(f.network.value, "blue");
        assert_eq!(
            f.endpoints,
            ["http://10.200.0.100:2379", "http://10.200.0.101:2379"]
        );
        assert_eq!(f.endpoint_hosts(), ["10.200.0.100", "10.200.0.101"]);
        assert_eq!(
            (f.ttl, f.prefix, f.tls, f.auth),
            (DEFAULT_TTL, None, None, None)
        );
        assert_eq!(f.given, GivenNetworkSettings::default());
    }

    #[test]
    fn dnet_etcd_is_the_default_below_flag_and_file() {
        let s = with_env(
            net(Options::default()),
            &[(ETCD_ENV, "http://etcd.example:2379")],
        )
        .unwrap();
        let f = s.fleet.unwrap();
        assert_eq!(f.endpoint_hosts(), ["etcd.example"]);
        assert_eq!(
            f.etcd.to_string(),
            "environment variable DNET_ETCD=http://etcd.example:2379"
        );
        let s = with_env(
            net(Options {
                etcd: Some("http://10.0.0.1:2379".into()),
                ..Options::default()
            }),
            &[(ETCD_ENV, "http://etcd.example:2379")],
        )
        .unwrap();
        assert_eq!(s.fleet.unwrap().endpoints, ["http://10.0.0.1:2379"]);
        // Without --network, $DNET_ETCD is a default nobody uses: no refusal.
        let s = Settings::with_env(
            &Sources {
                flags: Options {
                    peer: vec![std::net::Ipv4Addr::new(10, 200, 0, 2).into()],
                    ..Options::default()
                },
                file: None,
            },
            &|_| Some("http://10.0.0.1:2379".into()),
        )
        .unwrap();
        assert!(s.fleet.is_none());
    }

    #[test]
    fn flags_that_must_agree_with_the_network_are_kept() {
        let f = fleet(net(Options {
            etcd: Some("http://10.0.0.1:2379".into()),
            encap: Some(Encap::Udp),
            udp_port: Some(5000),
            key: Some(7),
            mtu: Some(1400),
            etcd_ttl: Some(3),
            etcd_prefix: Some("/lab".into()),
            ..Options::default()
        }));
        assert_eq!(
            f.given,
            GivenNetworkSettings {
                encap: Some(Encap::Udp),
                udp_port: Some(5000),
                key: Some(7),
                mtu: Some(1400)
            }
        );
        assert_eq!((f.ttl.as_secs(), f.prefix.as_deref()), (3, Some("/lab")));
    }

    #[test]
    fn tls_and_auth_options() {
        let f = fleet(net(Options {
            etcd: Some("https://10.0.0.1:2379".into()),
            etcd_cacert: Some("/ca.pem".into()),
            etcd_cert: Some("/c.pem".into()),
            etcd_key: Some("/k.pem".into()),
            etcd_user: Some("root".into()),
            etcd_password_file: Some("/pw".into()),
            ..Options::default()
        }));
        assert_eq!(
            f.tls,
            Some(EtcdTls {
                ca: Some("/ca.pem".into()),
                cert: Some("/c.pem".into()),
                key: Some("/k.pem".into()),
            })
        );
        assert_eq!(
            f.auth,
            Some(EtcdAuth {
                user: "root".into(),
                password: PasswordSource::File("/pw".into())
            })
        );
        let s = with_env(
            net(Options {
                etcd: Some("http://10.0.0.1:2379".into()),
                etcd_user: Some("root".into()),
                ..Options::default()
            }),
            &[(PASSWORD_ENV, "x")],
        )
        .unwrap();
        assert_eq!(
            s.fleet.unwrap().auth.unwrap().password,
            PasswordSource::Env(PASSWORD_ENV)
        );
    }

    #[test]
    fn every_refusal_names_the_input_and_the_fix() {
        let e = || Some("http://10.0.0.1:2379".to_string());
        let cases: Vec<(Options, &str)> = vec![
            (
                Options {
                    peer: vec![std::net::Ipv4Addr::new(10, 200, 0, 2).into()],
                    etcd: e(),
                    ..Options::default()
                },
                "--etcd http://10.0.0.1:2379: only used with --network: add --network NAME",
            ),
            (
                Options {
                    peer: vec![std::net::Ipv4Addr::new(10, 200, 0, 2).into()],
                    etcd_ttl: Some(5),
                    ..Options::default()
                },
                "--etcd-ttl 5: only used with --network",
            ),
            (
                net(Options::default()),
                "--network blue: needs etcd: pass --etcd http://HOST:2379[,...] or set DNET_ETCD",
            ),
            (
                net(Options {
                    etcd: Some("10.0.0.1:2379".into()),
                    ..Options::default()
                }),
                "--etcd 10.0.0.1:2379: \"10.0.0.1:2379\" is not an etcd client URL: use http://HOST:PORT",
            ),
            (
                net(Options {
                    etcd: Some(" , ".into()),
                    ..Options::default()
                }),
                "--etcd  , : \"\" is not an etcd client URL",
            ),
            (
                net(Options {
                    etcd: e(),
                    etcd_ttl: Some(1),
                    ..Options::default()
                }),
                "--etcd-ttl 1: out of range: use 2 to 3600 seconds (default 10)",
            ),
            (
                net(Options {
                    etcd: Some("https://10.0.0.1:2379".into()),
                    etcd_cert: Some("/c.pem".into()),
                    ..Options::default()
                }),
                "--etcd-cert /c.pem: needs its private key: add --etcd-key FILE",
            ),
            (
                net(Options {
                    etcd: Some("https://10.0.0.1:2379".into()),
                    etcd_key: Some("/k.pem".into()),
                    ..Options::default()
                }),
                "--etcd-key /k.pem: needs its certificate: add --etcd-cert FILE",
            ),
            (
                net(Options {
                    etcd: e(),
                    etcd_cacert: Some("/ca.pem".into()),
                    ..Options::default()
                }),
                "--etcd-cacert /ca.pem: TLS, but etcd URL http://10.0.0.1:2379 is plain http: use https://",
            ),
            (
                net(Options {
                    etcd: Some("https://10.0.0.1:2379".into()),
                    ..Options::default()
                }),
                "--etcd https://10.0.0.1:2379: https://10.0.0.1:2379 needs the CA that signed etcd's certificate: add --etcd-cacert FILE",
            ),
            (
                net(Options {
                    etcd: e(),
                    etcd_user: Some("root".into()),
                    ..Options::default()
                }),
                "--etcd-user root: no password: put it in a file and add --etcd-password-file FILE, or export DNET_ETCD_PASSWORD",
            ),
            (
                net(Options {
                    etcd: e(),
                    etcd_password_file: Some("/pw".into()),
                    ..Options::default()
                }),
                "--etcd-password-file /pw: only used with --etcd-user: add --etcd-user NAME",
            ),
        ];
        for (o, want) in cases {
            let got = refusal(o, &[]);
            assert!(
                got.starts_with(want),
                "{got:?} does not start with {want:?}"
            );
        }
    }

    #[test]
    fn file_keys_work_and_are_named_with_their_line() {
        let s = Settings::with_env(
            &Sources {
                flags: Options::default(),
                file: Some(
                    file::parse(
                        Path::new("/etc/dnet.toml"),
                        "network = \"blue\"\netcd = \"http://10.0.0.1:2379\"\netcd_ttl = 0\n",
                    )
                    .unwrap(),
                ),
            },
            &|_| None,
        )
        .unwrap_err();
        assert_eq!(
            s.to_string(),
            "config file /etc/dnet.toml, line 3: etcd_ttl = 0: out of range: use 2 to 3600 seconds (default 10)"
        );
    }

    #[test]
    fn the_file_names_one_network_or_a_list() {
        for (text, want) in [
            ("network = \"blue\"\n", &["blue"][..]),
            ("network = [\"blue\", \"red\"]\n", &["blue", "red"][..]),
        ] {
            let s = Settings::with_env(
                &Sources {
                    flags: Options {
                        etcd: Some("http://10.0.0.1:2379".into()),
                        ..Options::default()
                    },
                    file: Some(file::parse(Path::new("/etc/dnet.toml"), text).unwrap()),
                },
                &|_| None,
            )
            .unwrap();
            let f = s.fleet.unwrap();
            assert_eq!(f.networks, want);
            assert_eq!(f.network.value, want[0]);
        }
    }

    #[test]
    fn url_hosts() {
        assert_eq!(url_host("http://a:1").as_deref(), Some("a"));
        assert_eq!(url_host("https://10.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(url_host("http://[::1]:2379/x").as_deref(), Some("[::1]"));
        assert_eq!(url_host("http://:2379"), None);
        assert_eq!(url_host("ftp://a"), None);
    }
}
