//! Plugging a container into a network's bridge with a veth pair, through netlink (crate
//! `dnet-netlink`), and unplugging it. Shared by the Docker driver (both ends made here; Docker
//! moves the peer into the container) and `dnet-cni` (the peer made directly inside the
//! container's namespace).
//!
//! Every host end carries an interface alias starting with [`ALIAS_PREFIX`] that names its
//! holder, so a restarted plugin (or CNI GC) can tell its own interfaces from anyone else's.

use dnet_netlink::{Netlink, NlError};
use std::fs::File;

/// Prefix of the alias of every host-side veth end the plugins make.
pub const ALIAS_PREFIX: &str = "dnet:";

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// A failed veth step.
#[derive(Debug, thiserror::Error)]
pub enum VethError {
    /// The network's bridge does not exist in this namespace.
    #[error("bridge {bridge} does not exist on this host: is dnet-switch running and serving this network?")]
    NoBridge {
        /// The bridge name.
        bridge: String,
    },
    /// An interface of that name exists already.
    #[error("interface {name} exists already: remove it, or remove the attachment that made it")]
    Exists {
        /// The name.
        name: String,
    },
    /// A netlink request failed.
    #[error("{step}: {error}")]
    Netlink {
        /// What was being done, naming the interface.
        step: String,
        /// The kernel's error (printed above, hence not also returned by `source()`).
        error: NlError,
    },
}

/// What [`plug`] makes.
#[derive(Debug)]
pub struct Plug<'a> {
    /// Host-side end, made a port of `bridge`.
    pub host_if: &'a str,
    /// The other end's name.
    pub peer_if: &'a str,
    /// Namespace the other end is created in.
    pub peer_ns: &'a File,
    /// The other end's MAC address.
    pub peer_mac: [u8; 6],
    /// MTU of both ends.
    pub mtu: u32,
    /// The bridge.
    pub bridge: &'a str,
    /// Alias of the host end (starts with [`ALIAS_PREFIX`]).
    pub alias: &'a str,
}

fn nl_step(step: impl Into<String>) -> impl FnOnce(NlError) -> VethError {
    let step = step.into();
    move |error| VethError::Netlink { step, error }
}

/// Creates the veth pair of `p`, with the host end a port of the bridge and up; returns the
/// host end's interface index. Nothing is left behind on failure.
pub fn plug(nl: &mut Netlink, p: &Plug<'_>) -> Result<u32, VethError> {
    let bridge = nl
        .link_by_name(p.bridge)
        .map_err(nl_step(format!("looking up bridge {}", p.bridge)))?
        .ok_or_else(|| VethError::NoBridge {
            bridge: p.bridge.to_string(),
        })?;
    if let Err(e) = nl.add_veth(p.host_if, p.peer_if, p.peer_ns, p.mtu, p.peer_mac) {
        return Err(if e.errno() == Some(libc::EEXIST) {
            VethError::Exists {
                name: format!("{} (or {})", p.host_if, p.peer_if),
            }
        } else {
            VethError::Netlink {
                step: format!("creating veth pair {} / {}", p.host_if, p.peer_if),
                error: e,
            }
        });
    }
    let host = match nl.link_by_name(p.host_if) {
        Ok(Some(l)) => l,
        Ok(None) => {
            return Err(VethError::Netlink {
                step: format!("finding the new veth {}", p.host_if),
                error: std::io::Error::from_raw_os_error(libc::ENODEV).into(),
            })
        }
        Err(e) => return Err(nl_step(format!("finding the new veth {}", p.host_if))(e)),
    };
    let configured = nl
        .set_alias(host.index, p.alias)
        .map_err(nl_step(format!("setting the alias of {}", p.host_if)))
        .and_then(|_| {
            nl.set_master(host.index, bridge.index)
                .map_err(nl_step(format!(
                    "adding {} to bridge {}",
                    p.host_if, p.bridge
                )))
        })
        .and_then(|_| {
            nl.set_up(host.index)
                .map_err(nl_step(format!("setting {} up", p.host_if)))
        });
    if let Err(e) = configured {
        // Deleting one end deletes the pair.
        let _ = nl.del_link(host.index);
        return Err(e);
    }
    Ok(host.index)
}

/// Deletes the veth whose host end is `host_if` (both ends go). `Ok(false)` if it was not
/// there (already unplugged, or its container's namespace is gone, which takes the pair along).
pub fn unplug(nl: &mut Netlink, host_if: &str) -> Result<bool, VethError> {
    let Some(l) = nl
        .link_by_name(host_if)
        .map_err(nl_step(format!("looking up {host_if}")))?
    else {
        return Ok(false);
    };
    if l.alias
        .as_deref()
        .is_some_and(|a| a.starts_with(ALIAS_PREFIX))
    {
        match nl.del_link(l.index) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(nl_step(format!("deleting {host_if}"))(e)),
        }
    } else {
        // Not ours (no dnet alias): never delete someone else's interface.
        Err(VethError::Exists {
            name: format!("{host_if} (without a {ALIAS_PREFIX} alias, so not made by dnet)"),
        })
    }
}

/// A stable 64-bit hash (FNV-1a) of `s`: interface names and MACs derived from holder ids,
/// so a restarted plugin finds the same names again.
pub fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// An interface name `prefix` + 10 hex digits of [`stable_hash`]`(id)` (prefix at most 5
/// bytes, so the name fits [`IFNAME_MAX`]).
pub fn derived_ifname(prefix: &str, id: &str) -> String {
    let mut n = format!("{prefix}{:010x}", stable_hash(id) & 0xff_ffff_ffff);
    n.truncate(IFNAME_MAX);
    n
}

/// A locally administered unicast MAC address derived from `id`.
pub fn derived_mac(id: &str) -> [u8; 6] {
    let h = stable_hash(id).to_be_bytes();
    [0x02, h[3], h[4], h[5], h[6], h[7]]
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (either case).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The open network namespace of the calling thread (`/proc/thread-self/ns/net`).
pub fn own_netns() -> std::io::Result<File> {
    File::open("/proc/thread-self/ns/net")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_fit_and_are_stable() {
        let a = derived_ifname("dnh", "4fa6e0f0c6786287e131c3852c58a2e01cc6");
        assert_eq!(a.len(), 13);
        assert!(a.starts_with("dnh"));
        assert_eq!(
            a,
            derived_ifname("dnh", "4fa6e0f0c6786287e131c3852c58a2e01cc6")
        );
        assert_ne!(
            a,
            derived_ifname("dnh", "4fa6e0f0c6786287e131c3852c58a2e01cc7")
        );
        assert!(derived_ifname("dnh", "../../x\n")
            .bytes()
            .all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn netlink_errors_state_their_cause_once() {
        use std::error::Error as _;
        let e = VethError::Netlink {
            step: "adding dnh0 to bridge br-blue".into(),
            error: std::io::Error::from_raw_os_error(libc::ENODEV).into(),
        };
        assert!(e.source().is_none());
        assert!(
            e.to_string()
                .starts_with("adding dnh0 to bridge br-blue: No such device"),
            "{e}"
        );
    }

    #[test]
    fn macs() {
        let m = derived_mac("cni:c1/eth0");
        assert_eq!(m[0], 0x02);
        assert_eq!(parse_mac(&format_mac(&m)), Some(m));
        assert_eq!(
            parse_mac("02:42:AC:11:00:02"),
            Some([2, 0x42, 0xac, 0x11, 0, 2])
        );
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "0g:42:ac:11:00:02",
            "2:42:ac:11:00:02",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
