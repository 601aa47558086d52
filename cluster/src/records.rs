//! The JSON records stored in etcd, and the settings a switch reconciles with them.
//!
//! Every record carries `version` ([`FORMAT_VERSION`]). Readers ignore fields they do not know,
//! so a later dnet can add fields (as issue 16 adds keys) without a version bump; the version
//! only changes when an old reader would misread a record, and a reader rejects a record whose
//! version is above the one it knows rather than guess.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Record format this code writes and the highest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// Default host prefix length: one /24 range of container addresses per host.
pub const DEFAULT_HOST_PREFIX: u8 = 24;

/// GRE-in-UDP's IANA port (RFC 8086), the switch's default for `--encap udp`.
pub const GRE_IN_UDP_PORT: u16 = 4754;

/// How frames travel between hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Encap {
    /// Ethernet over GRE (IP protocol 47, RFC 2784/2890).
    #[default]
    Gre,
    /// GRE-in-UDP (RFC 8086).
    Udp,
}

impl fmt::Display for Encap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encap::Gre => "gre",
            Encap::Udp => "udp",
        })
    }
}

impl std::str::FromStr for Encap {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "gre" => Ok(Encap::Gre),
            "udp" => Ok(Encap::Udp),
            other => Err(format!("encapsulation {other:?}: use gre or udp")),
        }
    }
}

/// Data-plane settings every member of a network must share: the network record holds the
/// truth, each member record repeats what that member runs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Settings {
    /// Encapsulation.
    pub encap: Encap,
    /// UDP port with [`Encap::Udp`]; `None` with GRE.
    #[serde(default)]
    pub udp_port: Option<u16>,
    /// GRE key (network id); `None` sends no key.
    #[serde(default)]
    pub key: Option<u32>,
    /// TAP MTU; `None` lets each host derive it from its underlay.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Tunnels are sealed (issue 16); members must then publish a public key.
    #[serde(default)]
    pub encrypt: bool,
}

/// The record at `<prefix>/networks/<name>/config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// Record format, [`FORMAT_VERSION`].
    pub version: u32,
    /// Container address space of the whole network.
    pub subnet: Ipv4Net,
    /// Prefix length of each host's range.
    pub host_prefix: u8,
    /// Settings every member runs with.
    pub settings: Settings,
    /// Unix seconds at creation.
    #[serde(default)]
    pub created: u64,
}

/// The record at `<prefix>/networks/<name>/members/<host>`, under the member's short lease.
///
/// Addresses are kept as strings so that a record with a bad address is told apart from a
/// record that is not JSON (two different rejections).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Record format, [`FORMAT_VERSION`].
    pub version: u32,
    /// Host id, the same as the last key segment.
    pub host: String,
    /// Underlay IPv4 address tunnels go to.
    pub underlay: String,
    /// The host's container address range, as `a.b.c.d/len`.
    pub range: String,
    /// dnet version the member runs.
    #[serde(default)]
    pub software: String,
    /// Unix seconds when the member's agent started.
    #[serde(default)]
    pub started: u64,
    /// Settings the member runs with.
    pub settings: Settings,
    /// The member's static public key (base64 X25519, issue 16); required when the network
    /// has `encrypt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

/// The record at `<prefix>/networks/<name>/ranges/<a.b.c.d-len>`, under the host's long
/// range lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRecord {
    /// Record format, [`FORMAT_VERSION`].
    pub version: u32,
    /// Host id holding the range.
    pub host: String,
    /// Underlay address of the holder when it claimed (informational).
    #[serde(default)]
    pub underlay: String,
    /// Unix seconds at claim.
    #[serde(default)]
    pub claimed: u64,
}

/// The record at `<prefix>/networks/<name>/allocations/<a.b.c.d>`, without a lease: an address
/// stays allocated across restarts until it is released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationRecord {
    /// Record format, [`FORMAT_VERSION`].
    pub version: u32,
    /// Host id whose range the address is in.
    pub host: String,
    /// Who holds the address: a container id, a CNI `containerid/ifname`, a Docker endpoint id.
    pub container: String,
    /// Optional human name (the container's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Unix seconds at allocation.
    #[serde(default)]
    pub allocated: u64,
}

/// One address allocation as read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Allocation {
    /// The allocated address.
    pub address: Ipv4Addr,
    /// Host id.
    pub host: String,
    /// Holder id.
    pub container: String,
    /// Holder name, if given.
    pub name: Option<String>,
    /// Unix seconds at allocation.
    pub allocated: u64,
}

/// Settings given on this host's command line or config file; `None` means "take the
/// network's".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalSettings {
    /// `--encap`.
    pub encap: Option<Encap>,
    /// `--udp-port`.
    pub udp_port: Option<u16>,
    /// `--key`.
    pub key: Option<u32>,
    /// `--mtu`.
    pub mtu: Option<u32>,
}

/// A local flag that contradicts the network's settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--{flag} {local} contradicts network {network}'s {flag} {stored}: drop --{flag} or set it to {stored}")]
pub struct Contradiction {
    /// Network name.
    pub network: String,
    /// Flag name without dashes (`key`, `mtu`, `encap`, `udp-port`).
    pub flag: &'static str,
    /// The flag's value.
    pub local: String,
    /// The network's value (`none` when it has none).
    pub stored: String,
}

fn show<T: fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "none".to_string(), |v| v.to_string())
}

impl LocalSettings {
    /// The settings this host runs with in `network`: the network's, once every flag given
    /// agrees with them.
    pub fn reconcile(&self, network: &str, net: &Settings) -> Result<Settings, Contradiction> {
        let clash = |flag, local: String, stored: String| Contradiction {
            network: network.to_string(),
            flag,
            local,
            stored,
        };
        if let Some(e) = self.encap {
            if e != net.encap {
                return Err(clash("encap", e.to_string(), net.encap.to_string()));
            }
        }
        if let Some(p) = self.udp_port {
            if Some(p) != net.udp_port {
                return Err(clash("udp-port", p.to_string(), show(net.udp_port)));
            }
        }
        if let Some(k) = self.key {
            // No key and key 0 are the same network on the wire.
            if k != net.key.unwrap_or(0) {
                return Err(clash("key", k.to_string(), show(net.key)));
            }
        }
        if let Some(m) = self.mtu {
            if Some(m) != net.mtu {
                return Err(clash("mtu", m.to_string(), show(net.mtu)));
            }
        }
        Ok(net.clone())
    }
}

/// Unix seconds now, for the informational timestamps in records.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> Settings {
        Settings {
            encap: Encap::Udp,
            udp_port: Some(4754),
            key: Some(7),
            mtu: Some(1400),
            encrypt: false,
        }
    }

    #[test]
    fn reconcile_takes_the_network_settings_when_no_flag_is_given() {
        assert_eq!(
            LocalSettings::default().reconcile("blue", &net()),
            Ok(net())
        );
    }

    #[test]
    fn reconcile_accepts_agreeing_flags() {
        let local = LocalSettings {
            encap: Some(Encap::Udp),
            udp_port: Some(4754),
            key: Some(7),
            mtu: Some(1400),
        };
        assert_eq!(local.reconcile("blue", &net()), Ok(net()));
    }

    #[test]
    fn reconcile_names_both_values_of_a_contradiction() {
        let local = LocalSettings {
            key: Some(9),
            ..Default::default()
        };
        let e = local.reconcile("blue", &net()).unwrap_err();
        assert_eq!(e.flag, "key");
        assert_eq!(
            e.to_string(),
            "--key 9 contradicts network blue's key 7: drop --key or set it to 7"
        );
        let local = LocalSettings {
            encap: Some(Encap::Gre),
            ..Default::default()
        };
        assert_eq!(local.reconcile("blue", &net()).unwrap_err().flag, "encap");
        let local = LocalSettings {
            mtu: Some(1500),
            ..Default::default()
        };
        let e = local.reconcile("blue", &net()).unwrap_err();
        assert_eq!((e.local.as_str(), e.stored.as_str()), ("1500", "1400"));
    }

    #[test]
    fn key_zero_is_no_key() {
        let mut s = net();
        s.key = None;
        let local = LocalSettings {
            key: Some(0),
            ..Default::default()
        };
        assert!(local.reconcile("blue", &s).is_ok());
    }

    #[test]
    fn records_ignore_unknown_fields_and_default_optional_ones() {
        let m: MemberRecord = serde_json::from_str(
            r#"{"version":1,"host":"h","underlay":"10.200.0.1","range":"10.77.0.0/24",
                "settings":{"encap":"gre"},"future":"field"}"#,
        )
        .unwrap();
        assert_eq!(m.settings, Settings::default());
        assert_eq!(m.public_key, None);
        let n = NetworkRecord {
            version: FORMAT_VERSION,
            subnet: "10.77.0.0/16".parse().unwrap(),
            host_prefix: 24,
            settings: net(),
            created: 1,
        };
        let s = serde_json::to_string(&n).unwrap();
        assert_eq!(serde_json::from_str::<NetworkRecord>(&s).unwrap(), n);
        assert!(s.contains(r#""subnet":"10.77.0.0/16""#), "{s}");
    }
}
