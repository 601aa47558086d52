//! `dnetctl keygen` and `dnetctl pubkey`: this host's key pair for encrypted tunnels
//! (`dnet-switch --encrypt --private-key FILE`), in WireGuard's base64 form.

use anyhow::{Context, Result};
use clap::Args;
use dnet_crypto::PrivateKey;
use std::path::PathBuf;

/// Make a new private key for `dnet-switch --encrypt`, write it (mode 0600, never over an
/// existing file) and print its public key, which the other hosts configure
/// (`--peer THIS_HOST=PUBKEY`) or read from etcd.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the private key.
    #[arg(long, value_name = "FILE", default_value = "/etc/dnet/private.key")]
    pub out: PathBuf,
}

/// Print the public key of a private key file (what other hosts give as `--peer IP=PUBKEY`).
#[derive(Debug, Args)]
pub struct PubkeyArgs {
    /// The private key file (written by `dnetctl keygen`).
    #[arg(long, value_name = "FILE", default_value = "/etc/dnet/private.key")]
    pub key: PathBuf,
}

/// `dnetctl keygen`.
pub fn run_keygen(a: KeygenArgs) -> Result<()> {
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "creating {} for the key (or pass --out FILE elsewhere)",
                dir.display()
            )
        })?;
    }
    let key = PrivateKey::generate()?;
    key.write(&a.out)?;
    println!("{}", key.public_key());
    eprintln!(
        "private key written to {} (mode 0600); the line above is its public key: give it to \
         the other hosts as --peer THIS_HOST_IP=PUBKEY",
        a.out.display()
    );
    Ok(())
}

/// `dnetctl pubkey`.
pub fn run_pubkey(a: PubkeyArgs) -> Result<()> {
    let key = PrivateKey::load(&a.key)?;
    println!("{}", key.public_key());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keygen_writes_0600_refuses_to_overwrite_and_pubkey_reads_it_back() {
        let dir = std::env::temp_dir().join(format!("dnetctl-keygen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = dir.join("sub/private.key");
        run_keygen(KeygenArgs { out: out.clone() }).unwrap();
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let e = run_keygen(KeygenArgs { out: out.clone() }).unwrap_err();
        assert!(
            format!("{e:#}").contains(&out.display().to_string()),
            "{e:#}"
        );
        run_pubkey(PubkeyArgs { key: out.clone() }).unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = run_pubkey(PubkeyArgs { key: out.clone() }).unwrap_err();
        assert!(format!("{e:#}").contains("chmod 600"), "{e:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
