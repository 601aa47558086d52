//! Where each record lives in etcd (the layout is described in the crate doc).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/dnet";

/// Key names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    prefix: String,
}

/// What a key under a network's directory is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkKey<'a> {
    /// `config`.
    Config,
    /// `members/<host>`.
    Member(&'a str),
    /// `ranges/<a.b.c.d-len>` (the suffix, not yet parsed).
    Range(&'a str),
    /// `allocations/<a.b.c.d>` (the suffix, not yet parsed).
    Allocation(&'a str),
    /// Anything else (ignored, counted).
    Other(&'a str),
}

impl Layout {
    /// Keys under `prefix`; a trailing `/` is ignored and a missing leading `/` added.
    pub fn new(prefix: &str) -> Layout {
        let p = prefix.trim_end_matches('/');
        let prefix = if p.starts_with('/') {
            p.to_string()
        } else {
            format!("/{p}")
        };
        Layout { prefix }
    }

    /// The prefix, without a trailing `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>/networks/`: every network's directory.
    pub fn networks(&self) -> String {
        format!("{}/networks/", self.prefix)
    }

    /// `<prefix>/networks/<name>/`: everything a network owns.
    pub fn network_dir(&self, network: &str) -> String {
        format!("{}/networks/{network}/", self.prefix)
    }

    /// The network's settings record.
    pub fn config(&self, network: &str) -> String {
        format!("{}config", self.network_dir(network))
    }

    /// Directory of member records.
    pub fn members(&self, network: &str) -> String {
        format!("{}members/", self.network_dir(network))
    }

    /// One member record.
    pub fn member(&self, network: &str, host: &str) -> String {
        format!("{}{host}", self.members(network))
    }

    /// Directory of range claims.
    pub fn ranges(&self, network: &str) -> String {
        format!("{}ranges/", self.network_dir(network))
    }

    /// One range claim: `/` of the CIDR becomes `-`, as flannel's subnet keys.
    pub fn range(&self, network: &str, range: Ipv4Net) -> String {
        format!("{}{}", self.ranges(network), range_segment(range))
    }

    /// Directory of address allocations.
    pub fn allocations(&self, network: &str) -> String {
        format!("{}allocations/", self.network_dir(network))
    }

    /// One allocation.
    pub fn allocation(&self, network: &str, addr: Ipv4Addr) -> String {
        format!("{}{addr}", self.allocations(network))
    }

    /// Classifies `key` if it lies in `network`'s directory.
    pub fn classify<'k>(&self, network: &str, key: &'k str) -> Option<NetworkKey<'k>> {
        let dir = self.network_dir(network);
        let rest = key.strip_prefix(dir.as_str())?;
        Some(if rest == "config" {
            NetworkKey::Config
        } else if let Some(h) = rest.strip_prefix("members/") {
            NetworkKey::Member(h)
        } else if let Some(r) = rest.strip_prefix("ranges/") {
            NetworkKey::Range(r)
        } else if let Some(a) = rest.strip_prefix("allocations/") {
            NetworkKey::Allocation(a)
        } else {
            NetworkKey::Other(rest)
        })
    }

    /// The network name of a `<prefix>/networks/<name>/config` key.
    pub fn network_of_config<'k>(&self, key: &'k str) -> Option<&'k str> {
        let networks = self.networks();
        key.strip_prefix(networks.as_str())?
            .strip_suffix("/config")
            .filter(|n| !n.contains('/'))
    }
}

impl Default for Layout {
    fn default() -> Layout {
        Layout::new(DEFAULT_PREFIX)
    }
}

/// `10.77.3.0/24` → `10.77.3.0-24`.
pub fn range_segment(range: Ipv4Net) -> String {
    format!("{}-{}", range.network(), range.prefix_len())
}

/// `10.77.3.0-24` → `10.77.3.0/24`; `None` unless it is exactly that form.
pub fn parse_range_segment(s: &str) -> Option<Ipv4Net> {
    let (addr, len) = s.split_once('-')?;
    let net = Ipv4Net::new(addr.parse().ok()?, len.parse().ok()?).ok()?;
    // A segment naming a host bit (10.77.3.5-24) is not what we write.
    (net.network() == net.addr()).then_some(net)
}

/// Whether `name` can be a network name or host id: a single key segment that Docker and
/// shells also accept.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

/// The key that sorts right after every key starting with `prefix` (etcd's range end for a
/// prefix).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_normalises_the_prefix() {
        assert_eq!(Layout::new("/dnet/").prefix(), "/dnet");
        assert_eq!(Layout::new("dnet").prefix(), "/dnet");
        assert_eq!(
            Layout::new("/x/y").config("blue"),
            "/x/y/networks/blue/config"
        );
    }

    #[test]
    fn keys_round_trip_through_classify() {
        let l = Layout::default();
        let r: Ipv4Net = "10.77.3.0/24".parse().unwrap();
        assert_eq!(
            l.range("blue", r),
            "/dnet/networks/blue/ranges/10.77.3.0-24"
        );
        assert_eq!(
            l.classify("blue", &l.range("blue", r)),
            Some(NetworkKey::Range("10.77.3.0-24"))
        );
        assert_eq!(
            l.classify("blue", &l.member("blue", "10.200.0.1")),
            Some(NetworkKey::Member("10.200.0.1"))
        );
        assert_eq!(
            l.classify("blue", &l.config("blue")),
            Some(NetworkKey::Config)
        );
        assert_eq!(
            l.classify("blue", &l.allocation("blue", Ipv4Addr::new(10, 77, 3, 2))),
            Some(NetworkKey::Allocation("10.77.3.2"))
        );
        assert_eq!(
            l.classify("blue", "/dnet/networks/blue/junk"),
            Some(NetworkKey::Other("junk"))
        );
        // A network whose name starts like another's is not mixed up with it.
        assert_eq!(l.classify("blue", "/dnet/networks/blue2/config"), None);
        assert_eq!(
            l.network_of_config("/dnet/networks/blue/config"),
            Some("blue")
        );
        assert_eq!(l.network_of_config("/dnet/networks/blue/members/x"), None);
    }

    #[test]
    fn range_segments_parse_strictly() {
        assert_eq!(
            parse_range_segment("10.77.3.0-24"),
            Some("10.77.3.0/24".parse().unwrap())
        );
        for bad in [
            "10.77.3.5-24",
            "10.77.3.0/24",
            "10.77.3.0-33",
            "x-24",
            "10.77.3.0",
        ] {
            assert_eq!(parse_range_segment(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_are_single_safe_segments() {
        for ok in ["blue", "10.200.0.1", "net_1-a", "host:7"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "a/b", ".hidden", "sp ace", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end("/dnet/"), b"/dnet0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }
}
