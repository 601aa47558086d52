//! `--encrypt`, `--private-key FILE` and `--peer IP=PUBKEY`: sealed GRE-in-UDP tunnels
//! (crate `dnet-crypto`), validated into [`EncryptSettings`].
//!
//! A peer is written `IP` or `IP=PUBKEY` ([`PeerSpec`]), as a flag and in the config file's
//! `peer` list; the key is the base64 public key `dnetctl pubkey` prints on that host. With
//! `--encrypt` every peer given here needs its key (a tunnel without one would carry
//! nothing); members of an etcd network publish theirs in their records.

use super::error::SettingsError;
use super::input::{Input, Sourced};
use super::options::Encap;
pub use super::peer_spec::PeerSpec;
use super::sources::{get, Sources};
use dnet_crypto::{PrivateKey, PublicKey};
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The encryption of a switch, validated: its key pair and the peers' keys given here.
#[derive(Clone, Debug)]
pub struct EncryptSettings {
    /// How encryption was asked for (`--encrypt`, or `--private-key` beside `--network`,
    /// where the network decides).
    pub input: Input,
    /// Encryption was asked for explicitly (`--encrypt`); otherwise only a key was given
    /// for an etcd network that may or may not be encrypted.
    pub requested: bool,
    /// This host's private key, loaded.
    pub private_key: PrivateKey,
    /// Where it was read from.
    pub key_file: PathBuf,
    /// Peers' public keys given with `--peer IP=PUBKEY` or the config file.
    pub peer_keys: Vec<Sourced<(Ipv4Addr, PublicKey)>>,
    /// Sessions are rekeyed after this many milliseconds (a testing knob, `rekey_after`;
    /// `None`: WireGuard's 120 s).
    pub rekey_after_ms: Option<u64>,
}

impl EncryptSettings {
    /// The crypto core's limits for these settings.
    pub fn limits(&self) -> dnet_crypto::Limits {
        let mut l = dnet_crypto::Limits::default();
        if let Some(ms) = self.rekey_after_ms {
            l.rekey_after_time = ms;
        }
        l
    }
}

pub use super::limits::{MAX_REKEY_AFTER_SECS, MIN_REKEY_AFTER_SECS};

/// Validates the encryption options. `udp` says whether GRE-in-UDP was chosen here; with
/// `fleet` the etcd network decides the encapsulation (and whether to encrypt) later, in
/// [`super::Settings::apply_network`].
pub fn encrypt_settings(
    s: &Sources,
    udp: bool,
    fleet: bool,
) -> Result<Option<EncryptSettings>, SettingsError> {
    let encrypt = get!(s, encrypt).filter(|e| e.value);
    let key_file = get!(s, private_key);
    let rekey = get!(s, rekey_after);
    let peer_keys = s.peer_keys();
    let Some(input) = encrypt
        .as_ref()
        .map(|e| e.input.clone())
        .or_else(|| key_file.as_ref().filter(|_| fleet).map(|k| k.input.clone()))
    else {
        if let Some(k) = key_file {
            return Err(SettingsError::PrivateKeyWithoutEncrypt(k.input));
        }
        if let Some(p) = peer_keys.into_iter().next() {
            return Err(SettingsError::PeerKeyWithoutEncrypt(p.input));
        }
        if let Some(r) = rekey {
            return Err(SettingsError::RekeyWithoutEncrypt(r.input));
        }
        return Ok(None);
    };
    let requested = encrypt.is_some();
    if requested && !udp && !fleet {
        let encap = get!(s, encap).filter(|e| e.value == Encap::Gre);
        return Err(SettingsError::EncryptWithoutUdp {
            input,
            encap: encap.map(|e| e.input.to_string()),
        });
    }
    let Some(key_file) = key_file else {
        return Err(SettingsError::EncryptWithoutKey(input));
    };
    if requested {
        if let Some(p) = s
            .peers()
            .into_iter()
            .find(|p| !peer_keys.iter().any(|k| k.value.0 == p.value))
        {
            return Err(SettingsError::PeerWithoutKey { input: p.input });
        }
    }
    if let Some(r) = rekey
        .as_ref()
        .filter(|r| !(MIN_REKEY_AFTER_SECS..=MAX_REKEY_AFTER_SECS).contains(&r.value))
    {
        return Err(SettingsError::RekeyAfter(r.input.clone()));
    }
    let private_key = PrivateKey::load(&key_file.value).map_err(|e| SettingsError::PrivateKey {
        input: key_file.input.clone(),
        why: crate::error_chain::format(&e),
    })?;
    let own = private_key.public_key();
    if let Some(p) = peer_keys.iter().find(|p| p.value.1 == own) {
        return Err(SettingsError::PeerKeyIsOwn(p.input.clone()));
    }
    for (i, p) in peer_keys.iter().enumerate() {
        if let Some(q) = peer_keys[..i].iter().find(|q| q.value.1 == p.value.1) {
            return Err(SettingsError::PeerKeyTwice {
                input: p.input.clone(),
                other: q.value.0,
            });
        }
    }
    Ok(Some(EncryptSettings {
        input,
        requested,
        private_key,
        key_file: key_file.value,
        peer_keys,
        rekey_after_ms: rekey.map(|r| r.value * 1000),
    }))
}

#[cfg(test)]
mod tests {
    use super::super::file;
    use super::super::options::Options;
    use super::super::settings::Settings;
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    /// A private key file in a scratch directory, removed on drop.
    struct KeyFile {
        dir: PathBuf,
        path: PathBuf,
        key: PrivateKey,
    }

    impl KeyFile {
        fn new(mode: u32) -> KeyFile {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "dnet-encrypt-cfg-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("private.key");
            let key = PrivateKey::generate().unwrap();
            key.write(&path).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            KeyFile { dir, path, key }
        }
    }

    impl Drop for KeyFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn pubkey() -> PublicKey {
        PrivateKey::generate().unwrap().public_key()
    }

    fn peer(key: Option<PublicKey>) -> PeerSpec {
        PeerSpec {
            addr: Ipv4Addr::new(10, 200, 0, 2),
            key,
        }
    }

    fn settings(o: Options) -> Result<Settings, SettingsError> {
        Settings::with_env(
            &Sources {
                flags: o,
                file: None,
            },
            &|_| None,
        )
    }

    fn refusal(o: Options) -> String {
        let e = settings(o).unwrap_err();
        crate::error_chain::assert_causes_once(&e);
        crate::error_chain::format(&e)
    }

    #[test]
    fn peer_specs_parse_with_and_without_a_key() {
        let k = pubkey();
        let p: PeerSpec = format!("10.200.0.2={k}").parse().unwrap();
        assert_eq!(p, peer(Some(k)));
        assert_eq!(p.to_string(), format!("10.200.0.2={k}"));
        assert_eq!("10.200.0.2".parse::<PeerSpec>().unwrap(), peer(None));
        let e = "10.200.0.2=short".parse::<PeerSpec>().unwrap_err();
        assert!(
            e.starts_with("the public key of peer 10.200.0.2 is not a key"),
            "{e}"
        );
        let e = "host=abc".parse::<PeerSpec>().unwrap_err();
        assert!(e.contains("\"host\" is not an IPv4 address"), "{e}");
    }

    #[test]
    fn encrypt_loads_the_key_and_the_peers_keys() {
        let f = KeyFile::new(0o600);
        let k = pubkey();
        let s = settings(Options {
            peer: vec![peer(Some(k))],
            encap: Some(Encap::Udp),
            encrypt: Some(true),
            private_key: Some(f.path.clone()),
            rekey_after: Some(3),
            ..Options::default()
        })
        .unwrap();
        let e = s.encrypt.expect("encrypting");
        assert_eq!(e.private_key.public_key(), f.key.public_key());
        assert_eq!(
            e.peer_keys.iter().map(|p| p.value).collect::<Vec<_>>(),
            vec![(Ipv4Addr::new(10, 200, 0, 2), k)]
        );
        assert_eq!(e.limits().rekey_after_time, 3000);
        // The config file's peers carry keys the same way.
        let text = format!(
            "peer = [\"10.200.0.2={k}\"]\nencap = \"udp\"\nencrypt = true\nprivate_key = {:?}\n",
            f.path.display().to_string()
        );
        let file = file::parse(Path::new("/etc/dnet.toml"), &text).unwrap();
        let s = Settings::with_env(
            &Sources {
                flags: Options::default(),
                file: Some(file),
            },
            &|_| None,
        )
        .unwrap();
        assert_eq!(s.encrypt.unwrap().peer_keys[0].value.1, k);
    }

    #[test]
    fn every_refusal_names_the_flags_and_the_fix() {
        let good = KeyFile::new(0o600);
        let open = KeyFile::new(0o644);
        let k = pubkey();
        let udp = |o: Options| Options {
            encap: Some(Encap::Udp),
            encrypt: Some(true),
            ..o
        };
        let cases: Vec<(Options, String)> = vec![
            (
                Options {
                    peer: vec![peer(Some(k))],
                    encrypt: Some(true),
                    private_key: Some(good.path.clone()),
                    ..Options::default()
                },
                "--encrypt: seals GRE-in-UDP only: use --encap udp (encap = \"udp\") with --encrypt on every host, or drop --encrypt (plain GRE stays cleartext".into(),
            ),
            (
                Options {
                    peer: vec![peer(Some(k))],
                    encrypt: Some(true),
                    encap: Some(Encap::Gre),
                    private_key: Some(good.path.clone()),
                    ..Options::default()
                },
                "--encrypt: seals GRE-in-UDP only, not --encap gre: use --encap udp".into(),
            ),
            (
                udp(Options {
                    peer: vec![peer(Some(k))],
                    ..Options::default()
                }),
                "--encrypt: needs this host's private key: add --private-key FILE".into(),
            ),
            (
                udp(Options {
                    peer: vec![peer(None)],
                    private_key: Some(good.path.clone()),
                    ..Options::default()
                }),
                "--peer 10.200.0.2: with --encrypt a peer needs its public key: --peer 10.200.0.2=PUBKEY".into(),
            ),
            (
                udp(Options {
                    peer: vec![peer(Some(k))],
                    private_key: Some(open.path.clone()),
                    ..Options::default()
                }),
                format!(
                    "--private-key {p}: the private key file {p} has mode 644, so group or others may read or change it; run `chmod 600 {p}`",
                    p = open.path.display()
                ),
            ),
            (
                udp(Options {
                    peer: vec![peer(Some(k))],
                    private_key: Some(good.dir.join("absent.key")),
                    ..Options::default()
                }),
                format!(
                    "--private-key {p}: cannot read the private key file {p}: No such file",
                    p = good.dir.join("absent.key").display()
                ),
            ),
            (
                udp(Options {
                    peer: vec![peer(Some(good.key.public_key()))],
                    private_key: Some(good.path.clone()),
                    ..Options::default()
                }),
                "is this host's own public key".into(),
            ),
            (
                udp(Options {
                    peer: vec![
                        peer(Some(k)),
                        PeerSpec {
                            addr: Ipv4Addr::new(10, 200, 0, 3),
                            key: Some(k),
                        },
                    ],
                    private_key: Some(good.path.clone()),
                    ..Options::default()
                }),
                format!("--peer 10.200.0.3={k}: the same public key as peer 10.200.0.2: each host has its own key pair"),
            ),
            (
                udp(Options {
                    peer: vec![peer(Some(k))],
                    private_key: Some(good.path.clone()),
                    rekey_after: Some(500),
                    ..Options::default()
                }),
                "--rekey-after 500: out of range: use 1 to 120 seconds".into(),
            ),
            (
                Options {
                    peer: vec![peer(None)],
                    private_key: Some(good.path.clone()),
                    ..Options::default()
                },
                format!(
                    "--private-key {}: only used with --encrypt",
                    good.path.display()
                ),
            ),
            (
                Options {
                    peer: vec![peer(Some(k))],
                    ..Options::default()
                },
                format!("--peer 10.200.0.2={k}: a public key is only used with --encrypt"),
            ),
        ];
        for (o, want) in cases {
            let got = refusal(o);
            assert!(got.contains(&want), "{got:?} does not contain {want:?}");
        }
    }

    #[test]
    fn the_seal_comes_off_the_tap_mtu() {
        let f = KeyFile::new(0o600);
        let s = settings(Options {
            peer: vec![peer(Some(pubkey()))],
            encap: Some(Encap::Udp),
            encrypt: Some(true),
            private_key: Some(f.path.clone()),
            ..Options::default()
        })
        .unwrap();
        let r = super::super::resolve(&s, &super::super::host::fake::FakeHost::new()).unwrap();
        // IPv4 20 + UDP 8 + GRE 4 + inner Ethernet 14 + seal 32.
        assert_eq!(r.dataplane.networks[0].mtu, 1500 - 78);
        assert_eq!(r.overhead, 78);
        assert_eq!(r.dataplane.encrypt.map(|e| e.peer_keys.len()), Some(1));
    }

    #[test]
    fn an_etcd_network_decides_whether_a_key_is_used() {
        let f = KeyFile::new(0o600);
        let fleet = |encrypt: Option<bool>, key: bool| {
            Settings::with_env(
                &Sources {
                    flags: Options {
                        network: vec!["blue".into()],
                        etcd: Some("http://10.200.0.100:2379".into()),
                        encrypt,
                        private_key: key.then(|| f.path.clone()),
                        ..Options::default()
                    },
                    file: None,
                },
                &|_| None,
            )
            .unwrap()
        };
        let net = |encrypt: bool| super::super::NetworkSettings {
            name: "blue".into(),
            udp_port: Some(4754),
            encrypt,
            ..Default::default()
        };
        // Encrypted network: the key is needed, and enough (no --encrypt, no --encap here).
        let mut s = fleet(None, true);
        s.apply_network(&net(true)).unwrap();
        assert!(s.encrypt.is_some());
        let e = fleet(None, false).apply_network(&net(true)).unwrap_err();
        assert!(
            e.to_string()
                .contains("start this host with --private-key FILE"),
            "{e}"
        );
        // A static --peer beside the members needs its key in an encrypted network.
        let mut s = fleet(None, true);
        s.peers.push(Sourced {
            value: Ipv4Addr::new(10, 200, 0, 9),
            input: Input::flag("peer", "10.200.0.9"),
        });
        let e = s.apply_network(&net(true)).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--peer 10.200.0.9: with --encrypt a peer needs its public key"),
            "{e}"
        );
        // Cleartext network: a key alone is unused, --encrypt is refused.
        let mut s = fleet(None, true);
        s.apply_network(&net(false)).unwrap();
        assert!(s.encrypt.is_none());
        let e = fleet(Some(true), true)
            .apply_network(&net(false))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("--encrypt: the network's tunnels are not sealed"),
            "{e}"
        );
    }
}
