//! Static X25519 keys: each host has one private key, and peers are configured (and
//! published in etcd) by their public keys. Both are written as base64 of 32 bytes, as
//! WireGuard's `wg genkey` and `wg pubkey` write them, so the same tools and habits apply.
//!
//! A private key file must be readable by its owner only: [`PrivateKey::load`] refuses one
//! that group or others may read or write, and [`PrivateKey::write`] creates its file with
//! mode 0600.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use x25519_dalek::StaticSecret;

/// Length of a key in bytes.
pub const KEY_LEN: usize = 32;

/// Why a key could not be made, read, parsed or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text is not base64 of 32 bytes.
    #[error(
        "{what} is not a key: expected 44 characters of base64 for 32 bytes (as `dnetctl keygen` \
         or `wg genkey` writes)"
    )]
    Parse {
        /// What was parsed: a flag's value, a file.
        what: String,
    },
    /// The private key file could not be opened or read.
    #[error("cannot read the private key file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The private key file is open to group or others.
    #[error(
        "the private key file {} has mode {mode:03o}, so group or others may read or change it; \
         run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The private key file could not be created or written.
    #[error("cannot write the private key file {} (an existing file is never replaced: remove it or pick another path)", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The system's random number generator failed.
    #[error("cannot read random bytes from the operating system to make a key")]
    Random,
}

/// A host's static private key. Zeroed when dropped; never printed by `Debug`.
#[derive(Clone)]
pub struct PrivateKey(StaticSecret);

/// A static public key: how a peer is named in `--peer IP=PUBKEY`, the config file and etcd.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; KEY_LEN]);

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(public {})", self.public_key())
    }
}

fn decode(text: &str, what: &dyn Fn() -> String) -> Result<[u8; KEY_LEN], KeyError> {
    let mut out = [0u8; KEY_LEN];
    // 44 characters of padded base64 hold exactly 32 bytes (the last one ends in '=').
    let t = text.trim();
    match STANDARD.decode_slice(t, &mut out) {
        Ok(KEY_LEN) if t.len() == 44 => Ok(out),
        _ => Err(KeyError::Parse { what: what() }),
    }
}

impl PrivateKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Result<PrivateKey, KeyError> {
        let mut b = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut b)
            .map_err(|_| KeyError::Random)?;
        let k = PrivateKey::from_bytes(b);
        b.fill(0);
        Ok(k)
    }

    /// The key with these bytes (clamped when used, as X25519 says).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> PrivateKey {
        PrivateKey(StaticSecret::from(bytes))
    }

    /// The raw bytes (for the handshake).
    pub(crate) fn bytes(&self) -> [u8; KEY_LEN] {
        self.0.to_bytes()
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    /// Parses base64 text (surrounding whitespace ignored); `what` names the input in the
    /// error.
    pub fn from_base64(text: &str, what: &str) -> Result<PrivateKey, KeyError> {
        let mut b = decode(text, &|| what.to_string())?;
        let k = PrivateKey::from_bytes(b);
        b.fill(0);
        Ok(k)
    }

    /// The key as base64 text, for a key file.
    pub fn to_base64(&self) -> String {
        let mut b = self.bytes();
        let s = STANDARD.encode(b);
        b.fill(0);
        s
    }

    /// Loads the key from `path` (`--private-key FILE`): base64 text, as [`PrivateKey::write`]
    /// or `wg genkey` writes it. Refuses a file that group or others may read or write.
    pub fn load(path: &Path) -> Result<PrivateKey, KeyError> {
        let read = |source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let f = File::open(path).map_err(read)?;
        // The mode of the file actually opened, so it cannot be swapped after the check.
        let mode = f.metadata().map_err(read)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut text = String::new();
        // A key file is 45 bytes; read a little more so a wrong file is refused, not cut.
        f.take(4096).read_to_string(&mut text).map_err(read)?;
        let k = PrivateKey::from_base64(&text, &format!("the private key file {}", path.display()));
        // Do not leave the key text behind in freed memory.
        let mut bytes = text.into_bytes();
        bytes.fill(0);
        k
    }

    /// Writes the key to a new file at `path` with mode 0600 (`dnetctl keygen`). Never
    /// replaces an existing file.
    pub fn write(&self, path: &Path) -> Result<(), KeyError> {
        let write = |source| KeyError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(write)?;
        let mut line = self.to_base64();
        line.push('\n');
        let r = f.write_all(line.as_bytes()).and_then(|()| f.sync_all());
        let mut bytes = line.into_bytes();
        bytes.fill(0);
        r.map_err(write)
    }
}

impl PublicKey {
    /// The key with these bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> PublicKey {
        PublicKey(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Parses base64 text (surrounding whitespace ignored); `what` names the input in the
    /// error (`--peer 10.200.0.2=...`, a config line, an etcd record).
    pub fn from_base64(text: &str, what: &str) -> Result<PublicKey, KeyError> {
        decode(text, &|| what.to_string()).map(PublicKey)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<PublicKey, KeyError> {
        PublicKey::from_base64(s, &format!("{s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Scratch {
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "dnet-crypto-keys-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn rfc_7748_public_key() {
        // RFC 7748 §6.1: Alice's private and public keys.
        let hex = |s: &str| -> [u8; 32] {
            let v: Vec<u8> = (0..64)
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect();
            v.try_into().unwrap()
        };
        let k = PrivateKey::from_bytes(hex(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ));
        assert_eq!(
            k.public_key().as_bytes(),
            &hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
    }

    #[test]
    fn base64_round_trips_and_matches_wireguard_form() {
        let k = PrivateKey::generate().unwrap();
        let text = k.to_base64();
        assert_eq!(text.len(), 44);
        assert!(text.ends_with('='));
        let back = PrivateKey::from_base64(&format!("  {text}\n"), "t").unwrap();
        assert_eq!(back.public_key(), k.public_key());
        let p = k.public_key();
        assert_eq!(p.to_string().parse::<PublicKey>().unwrap(), p);
        assert_ne!(PrivateKey::generate().unwrap().public_key(), p);
        // Fixed example: 32 zero bytes.
        assert_eq!(
            PublicKey::from_bytes([0; 32]).to_string(),
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
        );
    }

    #[test]
    fn bad_text_is_refused_naming_the_input() {
        for bad in [
            "",
            "AAAA",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", // no padding
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==", // 33 bytes
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA!=",
        ] {
            let e = PublicKey::from_base64(bad, "--peer 10.200.0.2").unwrap_err();
            assert!(
                e.to_string().starts_with("--peer 10.200.0.2 is not a key"),
                "{e}"
            );
            assert!(bad.parse::<PublicKey>().is_err());
            assert!(PrivateKey::from_base64(bad, "x").is_err());
        }
    }

    #[test]
    fn write_then_load_with_mode_0600() {
        let d = Scratch::new();
        let path = d.0.join("key");
        let k = PrivateKey::generate().unwrap();
        k.write(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{}\n", k.to_base64()));
        assert_eq!(
            PrivateKey::load(&path).unwrap().public_key(),
            k.public_key()
        );
        // Never replaces a key.
        let e = PrivateKey::generate().unwrap().write(&path).unwrap_err();
        assert!(matches!(e, KeyError::Write { .. }), "{e:?}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        assert_eq!(
            PrivateKey::load(&path).unwrap().public_key(),
            k.public_key()
        );
    }

    #[test]
    fn load_refuses_a_file_group_or_others_may_read() {
        let d = Scratch::new();
        let path = d.0.join("key");
        PrivateKey::generate().unwrap().write(&path).unwrap();
        for mode in [0o640, 0o604, 0o660, 0o602] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = PrivateKey::load(&path).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, KeyError::Permissions { .. }), "{e:?}");
            assert!(
                msg.contains(&format!("chmod 600 {}", path.display())),
                "{msg}"
            );
            assert!(msg.contains(&format!("{mode:03o}")), "{msg}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(PrivateKey::load(&path).is_ok());
    }

    #[test]
    fn load_errors_name_the_file() {
        let d = Scratch::new();
        let missing = d.0.join("missing");
        let e = PrivateKey::load(&missing).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("cannot read the private key file {}", missing.display())
        );
        // The cause is the source, not repeated in the message.
        assert!(e.source().is_some());
        let garbage = d.0.join("garbage");
        std::fs::write(&garbage, "not a key\n").unwrap();
        std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = PrivateKey::load(&garbage).unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "the private key file {} is not a key",
                garbage.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn debug_never_prints_the_private_key() {
        let k = PrivateKey::generate().unwrap();
        let d = format!("{k:?}");
        assert!(!d.contains(&k.to_base64()));
        assert!(d.contains(&k.public_key().to_string()));
    }
}
