//! [`PeerSpec`]: one `--peer`, `IP` or `IP=PUBKEY`. Its own module so that the options, the
//! file and the settings can all read peers without importing the encryption settings that
//! validate the keys (and that import them).

use dnet_crypto::PublicKey;
use serde::Deserialize;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// One `--peer`: an underlay address, and with `--encrypt` the peer's public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerSpec {
    /// The peer host's underlay address.
    pub addr: Ipv4Addr,
    /// Its static public key (`IP=PUBKEY`).
    pub key: Option<PublicKey>,
}

impl From<Ipv4Addr> for PeerSpec {
    fn from(addr: Ipv4Addr) -> Self {
        PeerSpec { addr, key: None }
    }
}

impl fmt::Display for PeerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(k) => write!(f, "{}={k}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

impl FromStr for PeerSpec {
    type Err = String;

    /// `10.0.0.2` or `10.0.0.2=PUBKEY` (the key is base64 and may itself end in `=`, so the
    /// first `=` splits).
    fn from_str(s: &str) -> Result<PeerSpec, String> {
        let (addr, key) = match s.split_once('=') {
            Some((a, k)) => (a, Some(k)),
            None => (s, None),
        };
        let addr: Ipv4Addr = addr.trim().parse().map_err(|_| {
            format!("{addr:?} is not an IPv4 address: write a peer as IP or IP=PUBKEY")
        })?;
        let key = key
            .map(|k| PublicKey::from_base64(k, &format!("the public key of peer {addr}")))
            .transpose()
            .map_err(|e| e.to_string())?;
        Ok(PeerSpec { addr, key })
    }
}

impl<'de> Deserialize<'de> for PeerSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
