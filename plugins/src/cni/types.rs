//! CNI's data: the plugin's configuration on stdin, the invocation's environment, the result
//! and error objects (CNI spec 1.1.0, sections 1, 2 and 5). Pure: no I/O here.

use serde::Deserialize;
use serde_json::{json, Map, Value};

/// Spec versions this plugin speaks (result shapes differ only in `ips[].version` for 0.4.0
/// and `interfaces[].mtu` from 1.1.0 on).
pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];
/// The version used for answers when the input names none.
pub const LATEST: &str = "1.1.0";
/// The switch's control socket when the configuration names none (`dnet-switch --tap dnet0`).
pub const DEFAULT_SOCKET: &str = "/run/dnet/dnet0.sock";

/// Well-known error codes of the spec, and this plugin's own (100 and up).
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENVIRONMENT: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: the plugin cannot service ADD requests.
    pub const NOT_AVAILABLE: u32 = 50;
    /// ADD: the container interface exists already.
    pub const INTERFACE_EXISTS: u32 = 100;
    /// ADD: the switch refused the address (taken, outside this host's range, range full).
    pub const ADDRESS_REFUSED: u32 = 101;
    /// A kernel (netlink) step failed.
    pub const KERNEL: u32 = 102;
    /// CHECK: the attachment is not as ADD left it.
    pub const CHECK_FAILED: u32 = 103;
}

/// A CNI error result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CNI error {code}: {msg}: {details}")]
pub struct CniError {
    /// Error code ([`code`]).
    pub code: u32,
    /// Short message.
    pub msg: String,
    /// What happened and what to do.
    pub details: String,
}

impl CniError {
    /// An error with `code`.
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The error result object.
    pub fn to_json(&self, cni_version: &str) -> Value {
        json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
    }
}

/// One still-valid attachment in a GC request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    /// `CNI_CONTAINERID` of its ADD.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// `CNI_IFNAME` of its ADD.
    pub ifname: String,
}

/// The plugin configuration (the execution configuration the runtime writes to stdin).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Config {
    /// Spec version of this configuration.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Network name; also the dnet network's unless [`Config::network`] says otherwise.
    pub name: String,
    /// Plugin type (`dnet-cni`).
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// The switch's control socket.
    #[serde(default)]
    pub socket: Option<String>,
    /// The dnet network, when it is named differently from the CNI network.
    #[serde(default)]
    pub network: Option<String>,
    /// Also add a default route through the network's gateway (this host's bridge).
    #[serde(default, rename = "defaultRoute")]
    pub default_route: bool,
    /// An `ipam` section: unsupported, addresses come from the switch.
    #[serde(default)]
    pub ipam: Option<Value>,
    /// The previous result (chained ADD; CHECK and DEL get ADD's result).
    #[serde(default, rename = "prevResult")]
    pub prev_result: Option<Value>,
    /// GC: the attachments still valid.
    #[serde(default, rename = "cni.dev/attachments")]
    pub attachments: Option<Vec<Attachment>>,
}

impl Config {
    /// Parses and checks stdin's configuration.
    pub fn parse(stdin: &[u8]) -> Result<Config, CniError> {
        let c: Config = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                code::DECODE,
                "cannot decode the network configuration",
                format!("stdin is not a dnet-cni configuration: {e}"),
            )
        })?;
        if !SUPPORTED_VERSIONS.contains(&c.cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                "incompatible CNI version",
                format!(
                    "cniVersion {:?} is not supported; dnet-cni supports {}",
                    c.cni_version,
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        if let Some(ipam) = &c.ipam {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                "unsupported field ipam",
                format!(
                    "ipam: {ipam}: dnet-cni takes addresses from the dnet switch's allocator; remove the ipam section"
                ),
            ));
        }
        if !valid_name(&c.name) {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "invalid network name",
                format!("name {:?} must start with a letter or digit and hold only letters, digits, _ . -", c.name),
            ));
        }
        Ok(c)
    }

    /// The dnet network.
    pub fn dnet_network(&self) -> &str {
        self.network.as_deref().unwrap_or(&self.name)
    }

    /// The switch's control socket.
    pub fn socket(&self) -> &str {
        self.socket.as_deref().unwrap_or(DEFAULT_SOCKET)
    }
}

/// A container id or network name as the spec allows: alphanumeric first, then alphanumerics,
/// `_`, `.`, `-`.
pub fn valid_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
}

/// The `CNI_*` environment of one invocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invocation {
    /// `CNI_COMMAND`.
    pub command: Option<String>,
    /// `CNI_CONTAINERID`.
    pub container_id: Option<String>,
    /// `CNI_NETNS`.
    pub netns: Option<String>,
    /// `CNI_IFNAME`.
    pub ifname: Option<String>,
    /// `CNI_ARGS`.
    pub args: Option<String>,
}

impl Invocation {
    /// Reads the process environment.
    pub fn from_env() -> Invocation {
        let v = |k: &str| std::env::var(k).ok().filter(|s| !s.is_empty());
        Invocation {
            command: v("CNI_COMMAND"),
            container_id: v("CNI_CONTAINERID"),
            netns: v("CNI_NETNS"),
            ifname: v("CNI_IFNAME"),
            args: v("CNI_ARGS"),
        }
    }

    fn missing(var: &str, why: &str) -> CniError {
        CniError::new(
            code::INVALID_ENVIRONMENT,
            format!("invalid {var}"),
            format!("{var} {why}"),
        )
    }

    /// `CNI_CONTAINERID`, checked.
    pub fn container_id(&self) -> Result<&str, CniError> {
        match self.container_id.as_deref() {
            None => Err(Self::missing("CNI_CONTAINERID", "is not set")),
            Some(c) if !valid_name(c) => Err(Self::missing(
                "CNI_CONTAINERID",
                &format!(
                    "{c:?} must start with a letter or digit and hold only letters, digits, _ . -"
                ),
            )),
            Some(c) => Ok(c),
        }
    }

    /// `CNI_IFNAME`, checked (a Linux interface name).
    pub fn ifname(&self) -> Result<&str, CniError> {
        match self.ifname.as_deref() {
            None => Err(Self::missing("CNI_IFNAME", "is not set")),
            Some(n)
                if n.len() > crate::veth::IFNAME_MAX
                    || n == "."
                    || n == ".."
                    || n.bytes().any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0) =>
            {
                Err(Self::missing(
                    "CNI_IFNAME",
                    &format!("{n:?} is not a Linux interface name (at most 15 bytes, no '/', ':' or spaces)"),
                ))
            }
            Some(n) => Ok(n),
        }
    }

    /// `CNI_NETNS`.
    pub fn netns(&self) -> Result<&str, CniError> {
        self.netns
            .as_deref()
            .ok_or_else(|| Self::missing("CNI_NETNS", "is not set"))
    }

    /// The `IP=` argument of `CNI_ARGS` (the convention host-local also reads), if any.
    pub fn requested_ip(&self) -> Result<Option<std::net::Ipv4Addr>, CniError> {
        let Some(args) = &self.args else {
            return Ok(None);
        };
        for kv in args.split(';').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                Self::missing("CNI_ARGS", &format!("entry {kv:?} is not KEY=VALUE"))
            })?;
            if k == "IP" {
                return v
                    .split('/')
                    .next()
                    .unwrap_or(v)
                    .parse()
                    .map(Some)
                    .map_err(|_| {
                        Self::missing("CNI_ARGS", &format!("IP={v} is not an IPv4 address"))
                    });
            }
        }
        Ok(None)
    }
}

/// What an ADD made, for its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// Host end of the veth.
    pub host_if: String,
    /// Its MAC.
    pub host_mac: String,
    /// Container interface.
    pub ifname: String,
    /// Its MAC.
    pub mac: String,
    /// MTU of both.
    pub mtu: u32,
    /// `CNI_NETNS`.
    pub netns: String,
    /// `address/prefix`.
    pub address: String,
    /// The gateway.
    pub gateway: String,
    /// A default route through the gateway was added.
    pub default_route: bool,
}

/// The ADD result: `prev` (a chained plugin's result, if any) with this attachment's
/// interfaces, address and route added, in the shape of `version`.
pub fn add_result(version: &str, prev: Option<&Value>, a: &Added) -> Value {
    let list = |k: &str| -> Vec<Value> {
        prev.and_then(|p| p.get(k))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mut interfaces = list("interfaces");
    let mut ips = list("ips");
    let mut routes = list("routes");
    let base = interfaces.len();
    interfaces.push(json!({ "name": a.host_if, "mac": a.host_mac }));
    let mut cont = Map::new();
    cont.insert("name".into(), json!(a.ifname));
    cont.insert("mac".into(), json!(a.mac));
    if version == "1.1.0" {
        cont.insert("mtu".into(), json!(a.mtu));
    }
    cont.insert("sandbox".into(), json!(a.netns));
    interfaces.push(Value::Object(cont));
    let mut ip = Map::new();
    if version == "0.4.0" {
        ip.insert("version".into(), json!("4"));
    }
    ip.insert("address".into(), json!(a.address));
    ip.insert("gateway".into(), json!(a.gateway));
    ip.insert("interface".into(), json!(base + 1));
    ips.push(Value::Object(ip));
    if a.default_route {
        routes.push(json!({ "dst": "0.0.0.0/0", "gw": a.gateway }));
    }
    let mut out = Map::new();
    out.insert("cniVersion".into(), json!(version));
    out.insert("interfaces".into(), Value::Array(interfaces));
    out.insert("ips".into(), Value::Array(ips));
    if !routes.is_empty() {
        out.insert("routes".into(), Value::Array(routes));
    }
    out.insert(
        "dns".into(),
        prev.and_then(|p| p.get("dns"))
            .cloned()
            .unwrap_or(json!({})),
    );
    Value::Object(out)
}

/// From ADD's result: the address (CIDR) it gave interface `ifname` in `netns`.
pub fn address_in_result(prev: &Value, ifname: &str, netns: &str) -> Option<String> {
    let ifaces = prev.get("interfaces")?.as_array()?;
    let idx = ifaces.iter().position(|i| {
        i.get("name").and_then(Value::as_str) == Some(ifname)
            && i.get("sandbox").and_then(Value::as_str) == Some(netns)
    })?;
    prev.get("ips")?
        .as_array()?
        .iter()
        .find(|ip| ip.get("interface").and_then(Value::as_u64) == Some(idx as u64))
        .and_then(|ip| ip.get("address")?.as_str().map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str =
        r#"{"cniVersion":"1.0.0","name":"blue","type":"dnet-cni","socket":"/run/dnet/dnet0.sock"}"#;

    #[test]
    fn parses_the_documented_configuration() {
        let c = Config::parse(CONF.as_bytes()).unwrap();
        assert_eq!(c.dnet_network(), "blue");
        assert_eq!(c.socket(), "/run/dnet/dnet0.sock");
        assert!(!c.default_route);
    }

    #[test]
    fn configuration_errors_have_the_spec_codes() {
        let e = |s: &str| Config::parse(s.as_bytes()).unwrap_err().code;
        assert_eq!(e("{"), code::DECODE);
        assert_eq!(e(r#"{"name":"blue","type":"dnet-cni"}"#), code::DECODE);
        assert_eq!(
            e(r#"{"cniVersion":"0.2.0","name":"blue","type":"dnet-cni"}"#),
            code::INCOMPATIBLE_VERSION
        );
        let err = Config::parse(
            br#"{"cniVersion":"1.0.0","name":"blue","type":"dnet-cni","ipam":{"type":"host-local"}}"#,
        )
        .unwrap_err();
        assert_eq!(err.code, code::UNSUPPORTED_FIELD);
        assert!(err.details.contains("host-local"), "{err}");
        assert_eq!(
            e(r#"{"cniVersion":"1.0.0","name":"-blue","type":"dnet-cni"}"#),
            code::INVALID_CONFIG
        );
    }

    #[test]
    fn environment_checks_name_the_variable() {
        let inv = Invocation {
            command: Some("ADD".into()),
            container_id: Some("../x".into()),
            ifname: Some("eth0/1".into()),
            args: Some("IgnoreUnknown=1;IP=10.77.3.9".into()),
            ..Default::default()
        };
        let e = inv.container_id().unwrap_err();
        assert_eq!(e.code, code::INVALID_ENVIRONMENT);
        assert!(e.msg.contains("CNI_CONTAINERID"));
        assert!(inv.ifname().unwrap_err().msg.contains("CNI_IFNAME"));
        assert!(inv.netns().unwrap_err().msg.contains("CNI_NETNS"));
        assert_eq!(
            inv.requested_ip().unwrap(),
            Some("10.77.3.9".parse().unwrap())
        );
        let bad = Invocation {
            args: Some("IP=nope".into()),
            ..Default::default()
        };
        assert!(bad.requested_ip().unwrap_err().msg.contains("CNI_ARGS"));
    }

    fn added() -> Added {
        Added {
            host_if: "dnv0123456789".into(),
            host_mac: "aa:bb:cc:dd:ee:ff".into(),
            ifname: "eth0".into(),
            mac: "02:11:22:33:44:55".into(),
            mtu: 1450,
            netns: "/run/netns/c1".into(),
            address: "10.77.3.2/16".into(),
            gateway: "10.77.3.1".into(),
            default_route: true,
        }
    }

    #[test]
    fn results_in_each_version() {
        let r = add_result("1.0.0", None, &added());
        assert_eq!(r["cniVersion"], "1.0.0");
        assert_eq!(r["interfaces"][1]["sandbox"], "/run/netns/c1");
        assert!(r["interfaces"][1].get("mtu").is_none());
        assert_eq!(r["ips"][0]["interface"], 1);
        assert_eq!(r["routes"][0]["gw"], "10.77.3.1");
        assert_eq!(
            address_in_result(&r, "eth0", "/run/netns/c1").as_deref(),
            Some("10.77.3.2/16")
        );
        assert_eq!(address_in_result(&r, "eth1", "/run/netns/c1"), None);
        let r = add_result("1.1.0", None, &added());
        assert_eq!(r["interfaces"][1]["mtu"], 1450);
        let r = add_result("0.4.0", None, &added());
        assert_eq!(r["ips"][0]["version"], "4");
    }

    #[test]
    fn chained_result_keeps_the_previous_one() {
        let prev = json!({"cniVersion":"1.0.0","interfaces":[{"name":"lo0"}],
                          "ips":[{"address":"192.0.2.5/24","interface":0}],"dns":{"nameservers":["192.0.2.1"]}});
        let r = add_result("1.0.0", Some(&prev), &added());
        assert_eq!(r["interfaces"].as_array().unwrap().len(), 3);
        assert_eq!(r["ips"][0]["address"], "192.0.2.5/24");
        assert_eq!(r["ips"][1]["interface"], 2);
        assert_eq!(r["dns"]["nameservers"][0], "192.0.2.1");
    }
}
