//! Request and response types of the control socket, each serialized as one JSON line.

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Switch summary, per-port counters and drops by reason.
    Stats,
    /// Switch settings and every port with its state and counters.
    Show,
    /// The MAC table.
    FdbShow,
    /// Forget learned MACs, on one port (name, or peer address) or all.
    FdbFlush {
        /// Port name (`dnet0`, `gre-10.200.0.2`) or peer address; all ports when absent.
        #[serde(default)]
        port: Option<String>,
    },
    /// Add a GRE tunnel to a peer at run time.
    PeerAdd {
        /// Peer underlay address.
        addr: Ipv4Addr,
        /// The peer's public key (base64), for a switch with `--encrypt`; not sent when
        /// absent, so older switches still parse the request.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
    },
    /// Remove the GRE tunnel to a peer at run time.
    PeerDel {
        /// Peer underlay address.
        addr: Ipv4Addr,
    },
    /// IPv4 addresses claimed (in ARP) by two different MACs.
    Conflicts,
    /// A container address from this host's range of an etcd network (`dnetctl attach`):
    /// the next free one, or an explicit one checked against the range. The switch records it
    /// in etcd, so no host and no restart hands it out again; the same holder asking again
    /// gets the address it holds.
    Allocate {
        /// Network name; `None`: the switch's only network.
        #[serde(default)]
        network: Option<String>,
        /// Stable id of the holder (`netns:web`, `docker:<id>`).
        container: String,
        /// Name shown beside the id.
        #[serde(default)]
        name: Option<String>,
        /// The address wanted; `None`: the next free one.
        #[serde(default)]
        address: Option<Ipv4Addr>,
    },
    /// Frees an address (`dnetctl detach`), by holder or by address.
    Release {
        /// Network name; `None`: the switch's only network.
        #[serde(default)]
        network: Option<String>,
        /// The holder whose address on this host is freed.
        #[serde(default)]
        container: Option<String>,
        /// The address freed, whoever holds it.
        #[serde(default)]
        address: Option<Ipv4Addr>,
    },
    /// This host's allocations in a network.
    Allocations {
        /// Network name; `None`: the switch's only network.
        #[serde(default)]
        network: Option<String>,
    },
    /// The networks this switch serves (`dnetctl show` lists them all; `dnet-cni` finds its
    /// network's bridge, range and MTU here).
    Networks,
    /// `request` as asked of one network of a switch serving several (`dnetctl show
    /// --network red`). Requests not wrapped go to the switch's first network, except the
    /// allocation requests, which name their network themselves.
    In {
        /// Network name.
        network: String,
        /// The request for that network.
        request: Box<Request>,
    },
}

/// What the switch answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Response {
    /// Answer to [`Request::Stats`].
    Stats(Stats),
    /// Answer to [`Request::Show`].
    Show(Show),
    /// Answer to [`Request::FdbShow`].
    Fdb(FdbTable),
    /// Answer to [`Request::FdbFlush`].
    FdbFlushed {
        /// Entries removed (from the fullest worker table).
        removed: usize,
    },
    /// Answer to [`Request::PeerAdd`].
    PeerAdded {
        /// Peer address.
        addr: Ipv4Addr,
        /// Name of the new port.
        port: String,
        /// Things worth knowing (route source, path MTU).
        warnings: Vec<String>,
    },
    /// Answer to [`Request::PeerDel`].
    PeerRemoved {
        /// Peer address.
        addr: Ipv4Addr,
        /// Name of the removed port.
        port: String,
    },
    /// Answer to [`Request::Conflicts`].
    Conflicts(ConflictList),
    /// Answer to [`Request::Allocate`].
    Allocated(Allocated),
    /// Answer to [`Request::Release`].
    Released {
        /// Network name.
        network: String,
        /// The address freed (`None`: the holder held none).
        address: Option<Ipv4Addr>,
    },
    /// Answer to [`Request::Allocations`].
    Allocations(AllocationList),
    /// Answer to [`Request::Networks`].
    Networks {
        /// The networks, the first one first (the one unwrapped requests go to).
        networks: Vec<NetworkEntry>,
    },
    /// The request was malformed or failed.
    Error {
        /// Human-readable reason.
        message: String,
    },
}

/// One network a switch serves, as [`Request::Networks`] lists it. The etcd fields are present
/// only for a network joined through etcd (`--network`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkEntry {
    /// Network name (empty for the unnamed network of a switch given peers by hand).
    pub name: String,
    /// Its TAP.
    pub tap: String,
    /// The bridge its TAP is a port of (container interfaces join it).
    #[serde(default)]
    pub bridge: Option<String>,
    /// TAP MTU: the MTU of the network's container interfaces.
    pub mtu: u32,
    /// Its GRE key.
    #[serde(default)]
    pub key: Option<u32>,
    /// The network's whole subnet (etcd networks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// This host's range of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    /// The range's gateway (the bridge's address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
}

/// A snapshot of a running switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// TAP device name.
    pub tap: String,
    /// TAP MTU in bytes.
    pub mtu: u32,
    /// Underlay source address.
    pub local: Ipv4Addr,
    /// Number of worker threads.
    pub workers: usize,
    /// Learned MAC addresses (the largest of the workers' copies of the table).
    pub fdb_entries: usize,
    /// One entry per port: the TAP first, then one per peer tunnel.
    pub ports: Vec<PortStats>,
    /// Frames dropped, by reason (every reason listed, zero or not).
    pub drops: Vec<DropCount>,
    /// Other counted events (MAC moves, floods, table full), every one listed.
    pub events: Vec<DropCount>,
}

/// Kind of a switch port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortKind {
    /// A local TAP port.
    Local,
    /// A GRE tunnel to a peer host.
    Tunnel,
}

/// Counters of one port, summed over workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStats {
    /// Port name: the TAP name, or `gre-<peer ip>`.
    pub name: String,
    /// Local or tunnel.
    pub kind: PortKind,
    /// Peer underlay address for tunnels.
    pub peer: Option<Ipv4Addr>,
    /// Frames received on this port.
    pub rx_packets: u64,
    /// Bytes of those frames (inner Ethernet frame length).
    pub rx_bytes: u64,
    /// Frames sent out of this port.
    pub tx_packets: u64,
    /// Bytes of those frames (inner Ethernet frame length).
    pub tx_bytes: u64,
}

/// One named counter (a drop reason or an event) and its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropCount {
    /// Stable snake_case reason name (see `dnet::switch::DropReason`).
    pub reason: String,
    /// Frames dropped for it.
    pub count: u64,
}

/// Answer to `show`: the switch's settings and every port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Show {
    /// TAP device name.
    pub tap: String,
    /// Bridge the TAP is attached to.
    pub bridge: Option<String>,
    /// TAP MTU.
    pub mtu: u32,
    /// Underlay source address.
    pub local: Ipv4Addr,
    /// Worker threads.
    pub workers: usize,
    /// GRE and outer IPv4 options.
    pub gre: GreInfo,
    /// Control socket path.
    pub control_socket: String,
    /// Prometheus endpoint address, if enabled.
    pub metrics: Option<String>,
    /// Configuration file, if any.
    pub config_file: Option<String>,
    /// Seconds since the switch started.
    pub uptime_secs: u64,
    /// Learned MAC addresses.
    pub fdb_entries: usize,
    /// Ports: the TAP, then the tunnels by port id.
    pub ports: Vec<PortInfo>,
    /// Keepalive interval in ms (`None`: keepalives off).
    #[serde(default)]
    pub keepalive_ms: Option<u64>,
    /// The spanning tree (`None`: `--stp` off, split horizon).
    #[serde(default)]
    pub stp: Option<StpInfo>,
    /// The etcd network this switch joined (`None`: no `--network`; then not sent at all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<Box<FleetInfo>>,
    /// Tunnel encryption (`None`: no `--encrypt`; then not sent at all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Box<EncryptionInfo>>,
}

/// A switch's tunnel encryption (`--encrypt`), for `dnetctl show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionInfo {
    /// This host's public key (base64), what the other hosts configure.
    pub public_key: String,
    /// Datagrams whose authentication tag did not verify (forged, corrupted, or sealed
    /// under another key).
    pub auth_failed: u64,
    /// Datagrams already received, or older than the replay window.
    pub replayed: u64,
    /// Peers with an established session now.
    pub sessions: usize,
    /// Handshake initiations from keys that are no peer's.
    pub unknown_key: u64,
}

/// The etcd network a switch joined (`--network`), and how etcd is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetInfo {
    /// Network name.
    pub network: String,
    /// This host's id in it (by default its underlay address).
    pub host: String,
    /// etcd client URLs.
    pub etcd: String,
    /// The network's subnet, `a.b.c.d/len`.
    pub subnet: String,
    /// This host's address range, `a.b.c.d/len`.
    pub range: Option<String>,
    /// The range's gateway (for the bridge).
    pub gateway: Option<Ipv4Addr>,
    /// Other members of the network that are tunnels now (this host not counted).
    pub members: usize,
    /// Unix seconds since which etcd has not answered (`None`: it answers).
    pub unreachable_since: Option<u64>,
    /// Seconds etcd has not answered (`None`: it answers).
    pub unreachable_secs: Option<u64>,
    /// The network's record is gone from etcd (deleted): no members.
    pub network_absent: bool,
    /// The last etcd error.
    pub last_error: Option<String>,
    /// Records skipped (never tunnels), by kind (`bad_json`, `claims_this_host`, ...).
    pub rejected: std::collections::BTreeMap<String, u64>,
    /// Other counters of the agent.
    pub counters: FleetCounters,
}

/// Counters of a switch's etcd agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetCounters {
    /// Failed etcd requests and streams.
    pub etcd_errors: u64,
    /// Views rebuilt after etcd answered again.
    pub reconnects: u64,
    /// Watches restarted because their revision was compacted.
    pub watch_compactions: u64,
    /// Member leases found expired and registered again.
    pub lease_reregistrations: u64,
    /// Range claims lost to another host's transaction (and retried).
    pub claim_conflicts: u64,
    /// This host's member record restored after someone else changed it.
    pub own_record_restored: u64,
    /// Members that came up.
    pub peer_up: u64,
    /// Members that went away.
    pub peer_down: u64,
}

/// An address allocated to a container (answer to [`Request::Allocate`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocated {
    /// Network name.
    pub network: String,
    /// The address.
    pub address: Ipv4Addr,
    /// Prefix length to configure it with: the network's subnet's.
    pub prefix_len: u8,
    /// This host's range it is from, `a.b.c.d/len`.
    pub range: String,
    /// The range's gateway.
    pub gateway: Ipv4Addr,
    /// The holder.
    pub container: String,
}

/// This host's allocations in a network (answer to [`Request::Allocations`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationList {
    /// Network name.
    pub network: String,
    /// This host's range.
    pub range: Option<String>,
    /// The allocations, in address order.
    pub allocations: Vec<AllocationEntry>,
}

/// One allocated address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationEntry {
    /// The address.
    pub address: Ipv4Addr,
    /// Holder id.
    pub container: String,
    /// Holder name.
    pub name: Option<String>,
    /// Unix seconds at allocation.
    pub allocated: u64,
}

/// The spanning tree as one switch sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StpInfo {
    /// This switch's bridge id, `8000.02:64:...`.
    pub bridge_id: String,
    /// The root bridge's id.
    pub root_id: String,
    /// True if this switch is the root.
    pub is_root: bool,
    /// Path cost to the root.
    pub root_cost: u32,
    /// Port towards the root (`None` at the root).
    pub root_port: Option<u16>,
    /// Topology changes seen.
    pub topology_changes: u64,
    /// Seconds since the last one (`None`: never).
    pub last_change_secs: Option<u64>,
}

/// GRE and outer IPv4 options of a switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GreInfo {
    /// GRE-in-UDP port (`--encap udp`); `None`: plain GRE.
    #[serde(default)]
    pub udp_port: Option<u16>,
    /// GRE key.
    pub key: Option<u32>,
    /// GRE checksums sent.
    pub csum: bool,
    /// GRE sequence numbers sent.
    pub seq: bool,
    /// Outer TTL.
    pub ttl: u8,
    /// Outer TOS.
    pub tos: u8,
    /// Don't-fragment set on outer packets.
    pub df: bool,
}

/// One port in [`Show`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortInfo {
    /// Port id (stable while the port exists).
    pub id: u16,
    /// Port name: the TAP name, or `gre-<peer ip>`.
    pub name: String,
    /// Local or tunnel.
    pub kind: PortKind,
    /// Peer underlay address for tunnels.
    pub peer: Option<Ipv4Addr>,
    /// TAP: its operational state (`up`, `down`, ...). Tunnel (GRE has no keepalive, so
    /// this is from traffic): `active` (received within 60 s), `idle`, or `silent` (nothing
    /// received since the port was added).
    pub state: String,
    /// Tunnels: where the peer came from: `flag`, `config` (file) or `runtime` (dnetctl).
    pub origin: Option<String>,
    /// Seconds since a frame was last received on the port (`None`: never).
    pub last_rx_secs: Option<u64>,
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Tunnels with `--stp`: spanning-tree role (`root`, `designated`, `alternate`, `backup`).
    #[serde(default)]
    pub stp_role: Option<String>,
    /// Tunnels with `--stp`: `forwarding`, `learning` or `discarding`.
    #[serde(default)]
    pub stp_state: Option<String>,
    /// Tunnels: the kernel's path MTU towards the peer (outer packets).
    #[serde(default)]
    pub path_mtu: Option<u32>,
}

/// Answer to `fdb show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbTable {
    /// Aging time in seconds.
    pub aging_secs: u64,
    /// Entries, ordered by VLAN and MAC.
    pub entries: Vec<FdbEntry>,
}

/// One learned station.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbEntry {
    /// MAC address, `02:77:00:00:00:01`.
    pub mac: String,
    /// VLAN id (0 untagged).
    pub vlan: u16,
    /// Port name.
    pub port: String,
    /// Port id.
    pub port_id: u16,
    /// Milliseconds since a frame from it was last seen.
    pub age_ms: u64,
}

/// Answer to `conflicts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictList {
    /// Newest first.
    pub conflicts: Vec<ConflictEntry>,
}

/// An IPv4 address claimed (ARP sender address) by two MACs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictEntry {
    /// The address.
    pub ip: Ipv4Addr,
    /// VLAN id (0 untagged).
    pub vlan: u16,
    /// The two claimants, earlier holder first.
    pub claims: Vec<ClaimEntry>,
    /// How often the address changed hands between them.
    pub count: u64,
    /// Milliseconds since first detected.
    pub detected_age_ms: u64,
    /// Milliseconds since last seen.
    pub last_seen_age_ms: u64,
}

/// One MAC's claim in a [`ConflictEntry`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimEntry {
    /// Claiming MAC.
    pub mac: String,
    /// Port its ARP arrived on (where the station is).
    pub port: String,
    /// Milliseconds since it last claimed the address.
    pub age_ms: u64,
}

#[cfg(test)]
mod tests {
    //! The wire format, byte for byte: these lines were produced by the switch and dnetctl
    //! before the protocol moved into this crate, so a change here breaks running peers.

    use super::*;

    fn addr(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// Serializes `v` and checks the exact line, then parses that line back to `v`.
    fn assert_wire<T>(v: &T, line: &str)
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
    {
        assert_eq!(serde_json::to_string(v).unwrap(), line);
        assert_eq!(&serde_json::from_str::<T>(line).unwrap(), v);
    }

    #[test]
    fn networks_list_their_etcd_fields_only_when_joined() {
        assert_wire(
            &Response::Networks {
                networks: vec![
                    NetworkEntry {
                        name: "blue".into(),
                        tap: "dnet-blue".into(),
                        bridge: Some("br-blue".into()),
                        mtu: 1450,
                        key: Some(1),
                        subnet: Some("10.77.0.0/16".into()),
                        range: Some("10.77.3.0/24".into()),
                        gateway: Some(addr("10.77.3.1")),
                    },
                    NetworkEntry {
                        name: String::new(),
                        tap: "dnet0".into(),
                        bridge: None,
                        mtu: 1462,
                        key: None,
                        subnet: None,
                        range: None,
                        gateway: None,
                    },
                ],
            },
            concat!(
                r#"{"reply":"networks","networks":[{"name":"blue","tap":"dnet-blue","bridge":"br-blue","mtu":1450,"key":1,"#,
                r#""subnet":"10.77.0.0/16","range":"10.77.3.0/24","gateway":"10.77.3.1"},"#,
                r#"{"name":"","tap":"dnet0","bridge":null,"mtu":1462,"key":null}]}"#
            ),
        );
    }

    #[test]
    fn every_request_is_one_tagged_object() {
        assert_wire(&Request::Stats, r#"{"cmd":"stats"}"#);
        assert_wire(&Request::Show, r#"{"cmd":"show"}"#);
        assert_wire(&Request::FdbShow, r#"{"cmd":"fdb_show"}"#);
        assert_wire(&Request::Networks, r#"{"cmd":"networks"}"#);
        assert_wire(
            &Request::In {
                network: "red".into(),
                request: Box::new(Request::Show),
            },
            r#"{"cmd":"in","network":"red","request":{"cmd":"show"}}"#,
        );
        assert_wire(
            &Request::FdbFlush { port: None },
            r#"{"cmd":"fdb_flush","port":null}"#,
        );
        assert_wire(
            &Request::FdbFlush {
                port: Some("dnet0".into()),
            },
            r#"{"cmd":"fdb_flush","port":"dnet0"}"#,
        );
        assert_wire(
            &Request::PeerAdd {
                addr: addr("10.200.0.2"),
                key: None,
            },
            r#"{"cmd":"peer_add","addr":"10.200.0.2"}"#,
        );
        assert_wire(
            &Request::PeerDel {
                addr: addr("10.200.0.2"),
            },
            r#"{"cmd":"peer_del","addr":"10.200.0.2"}"#,
        );
        assert_wire(&Request::Conflicts, r#"{"cmd":"conflicts"}"#);
        assert_wire(
            &Request::Allocate {
                network: None,
                container: "netns:web".into(),
                name: Some("web".into()),
                address: None,
            },
            r#"{"cmd":"allocate","network":null,"container":"netns:web","name":"web","address":null}"#,
        );
        assert_wire(
            &Request::Release {
                network: Some("blue".into()),
                container: None,
                address: Some(addr("10.78.1.2")),
            },
            r#"{"cmd":"release","network":"blue","container":null,"address":"10.78.1.2"}"#,
        );
        assert_wire(
            &Request::Allocations { network: None },
            r#"{"cmd":"allocations","network":null}"#,
        );
        // Optional fields may be left out.
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"allocate","container":"pid:7"}"#).unwrap(),
            Request::Allocate {
                network: None,
                container: "pid:7".into(),
                name: None,
                address: None
            }
        );
    }

    #[test]
    fn fleet_replies_are_tagged_objects() {
        assert_wire(
            &Response::Allocated(Allocated {
                network: "blue".into(),
                address: addr("10.78.1.2"),
                prefix_len: 16,
                range: "10.78.1.0/24".into(),
                gateway: addr("10.78.1.1"),
                container: "netns:web".into(),
            }),
            r#"{"reply":"allocated","network":"blue","address":"10.78.1.2","prefix_len":16,"range":"10.78.1.0/24","gateway":"10.78.1.1","container":"netns:web"}"#,
        );
        assert_wire(
            &Response::Released {
                network: "blue".into(),
                address: None,
            },
            r#"{"reply":"released","network":"blue","address":null}"#,
        );
        assert_wire(
            &Response::Allocations(AllocationList {
                network: "blue".into(),
                range: Some("10.78.1.0/24".into()),
                allocations: vec![AllocationEntry {
                    address: addr("10.78.1.2"),
                    container: "netns:web".into(),
                    name: None,
                    allocated: 5,
                }],
            }),
            r#"{"reply":"allocations","network":"blue","range":"10.78.1.0/24","allocations":[{"address":"10.78.1.2","container":"netns:web","name":null,"allocated":5}]}"#,
        );
        let fleet = FleetInfo {
            network: "blue".into(),
            host: "10.200.0.1".into(),
            etcd: "http://10.200.0.100:2379".into(),
            subnet: "10.78.0.0/16".into(),
            range: Some("10.78.1.0/24".into()),
            gateway: Some(addr("10.78.1.1")),
            members: 2,
            unreachable_since: Some(1700000000),
            unreachable_secs: Some(3),
            network_absent: false,
            last_error: Some("e".into()),
            rejected: [("bad_json".to_string(), 1)].into_iter().collect(),
            counters: FleetCounters {
                peer_up: 2,
                ..FleetCounters::default()
            },
        };
        let line = serde_json::to_string(&fleet).unwrap();
        assert_eq!(
            line,
            r#"{"network":"blue","host":"10.200.0.1","etcd":"http://10.200.0.100:2379","subnet":"10.78.0.0/16","range":"10.78.1.0/24","gateway":"10.78.1.1","members":2,"unreachable_since":1700000000,"unreachable_secs":3,"network_absent":false,"last_error":"e","rejected":{"bad_json":1},"counters":{"etcd_errors":0,"reconnects":0,"watch_compactions":0,"lease_reregistrations":0,"claim_conflicts":0,"own_record_restored":0,"peer_up":2,"peer_down":0}}"#
        );
        assert_eq!(serde_json::from_str::<FleetInfo>(&line).unwrap(), fleet);
    }

    #[test]
    fn every_response_is_one_tagged_object() {
        assert_wire(
            &Response::Stats(Stats {
                tap: "dnet0".into(),
                mtu: 1462,
                local: addr("10.200.0.1"),
                workers: 2,
                fdb_entries: 3,
                ports: vec![
                    PortStats {
                        name: "dnet0".into(),
                        kind: PortKind::Local,
                        peer: None,
                        rx_packets: 1,
                        rx_bytes: 2,
                        tx_packets: 3,
                        tx_bytes: 4,
                    },
                    PortStats {
                        name: "gre-10.200.0.2".into(),
                        kind: PortKind::Tunnel,
                        peer: Some(addr("10.200.0.2")),
                        rx_packets: 5,
                        rx_bytes: 6,
                        tx_packets: 7,
                        tx_bytes: 8,
                    },
                ],
                drops: vec![DropCount {
                    reason: "runt".into(),
                    count: 9,
                }],
                events: vec![DropCount {
                    reason: "mac_move".into(),
                    count: 10,
                }],
            }),
            r#"{"reply":"stats","tap":"dnet0","mtu":1462,"local":"10.200.0.1","workers":2,"fdb_entries":3,"ports":[{"name":"dnet0","kind":"local","peer":null,"rx_packets":1,"rx_bytes":2,"tx_packets":3,"tx_bytes":4},{"name":"gre-10.200.0.2","kind":"tunnel","peer":"10.200.0.2","rx_packets":5,"rx_bytes":6,"tx_packets":7,"tx_bytes":8}],"drops":[{"reason":"runt","count":9}],"events":[{"reason":"mac_move","count":10}]}"#,
        );
        assert_wire(
            &Response::Show(Show {
                tap: "dnet0".into(),
                bridge: Some("br0".into()),
                mtu: 1462,
                local: addr("10.200.0.1"),
                workers: 2,
                gre: GreInfo {
                    udp_port: Some(4754),
                    key: Some(42),
                    csum: true,
                    seq: false,
                    ttl: 64,
                    tos: 0,
                    df: true,
                },
                control_socket: "/run/dnet/dnet0.sock".into(),
                metrics: None,
                config_file: Some("/etc/dnet.toml".into()),
                uptime_secs: 11,
                fdb_entries: 3,
                ports: vec![PortInfo {
                    id: 1,
                    name: "gre-10.200.0.2".into(),
                    kind: PortKind::Tunnel,
                    peer: Some(addr("10.200.0.2")),
                    state: "active".into(),
                    origin: Some("flag".into()),
                    last_rx_secs: Some(0),
                    rx_packets: 1,
                    rx_bytes: 2,
                    tx_packets: 3,
                    tx_bytes: 4,
                    stp_role: Some("root".into()),
                    stp_state: Some("forwarding".into()),
                    path_mtu: Some(1500),
                }],
                keepalive_ms: Some(1000),
                stp: Some(StpInfo {
                    bridge_id: "8000.02:00:00:00:00:01".into(),
                    root_id: "8000.02:00:00:00:00:01".into(),
                    is_root: true,
                    root_cost: 0,
                    root_port: None,
                    topology_changes: 2,
                    last_change_secs: Some(5),
                }),
                fleet: None,
                encryption: None,
            }),
            r#"{"reply":"show","tap":"dnet0","bridge":"br0","mtu":1462,"local":"10.200.0.1","workers":2,"gre":{"udp_port":4754,"key":42,"csum":true,"seq":false,"ttl":64,"tos":0,"df":true},"control_socket":"/run/dnet/dnet0.sock","metrics":null,"config_file":"/etc/dnet.toml","uptime_secs":11,"fdb_entries":3,"ports":[{"id":1,"name":"gre-10.200.0.2","kind":"tunnel","peer":"10.200.0.2","state":"active","origin":"flag","last_rx_secs":0,"rx_packets":1,"rx_bytes":2,"tx_packets":3,"tx_bytes":4,"stp_role":"root","stp_state":"forwarding","path_mtu":1500}],"keepalive_ms":1000,"stp":{"bridge_id":"8000.02:00:00:00:00:01","root_id":"8000.02:00:00:00:00:01","is_root":true,"root_cost":0,"root_port":null,"topology_changes":2,"last_change_secs":5}}"#,
        );
        assert_wire(
            &Response::Fdb(FdbTable {
                aging_secs: 300,
                entries: vec![FdbEntry {
                    mac: "02:77:00:00:00:01".into(),
                    vlan: 0,
                    port: "dnet0".into(),
                    port_id: 0,
                    age_ms: 12,
                }],
            }),
            r#"{"reply":"fdb","aging_secs":300,"entries":[{"mac":"02:77:00:00:00:01","vlan":0,"port":"dnet0","port_id":0,"age_ms":12}]}"#,
        );
        assert_wire(
            &Response::FdbFlushed { removed: 4 },
            r#"{"reply":"fdb_flushed","removed":4}"#,
        );
        assert_wire(
            &Response::PeerAdded {
                addr: addr("10.200.0.2"),
                port: "gre-10.200.0.2".into(),
                warnings: vec!["w".into()],
            },
            r#"{"reply":"peer_added","addr":"10.200.0.2","port":"gre-10.200.0.2","warnings":["w"]}"#,
        );
        assert_wire(
            &Response::PeerRemoved {
                addr: addr("10.200.0.2"),
                port: "gre-10.200.0.2".into(),
            },
            r#"{"reply":"peer_removed","addr":"10.200.0.2","port":"gre-10.200.0.2"}"#,
        );
        assert_wire(
            &Response::Conflicts(ConflictList {
                conflicts: vec![ConflictEntry {
                    ip: addr("10.77.0.9"),
                    vlan: 0,
                    claims: vec![
                        ClaimEntry {
                            mac: "02:77:00:00:00:01".into(),
                            port: "dnet0".into(),
                            age_ms: 1,
                        },
                        ClaimEntry {
                            mac: "02:77:00:00:00:02".into(),
                            port: "gre-10.200.0.2".into(),
                            age_ms: 2,
                        },
                    ],
                    count: 3,
                    detected_age_ms: 4,
                    last_seen_age_ms: 5,
                }],
            }),
            r#"{"reply":"conflicts","conflicts":[{"ip":"10.77.0.9","vlan":0,"claims":[{"mac":"02:77:00:00:00:01","port":"dnet0","age_ms":1},{"mac":"02:77:00:00:00:02","port":"gre-10.200.0.2","age_ms":2}],"count":3,"detected_age_ms":4,"last_seen_age_ms":5}]}"#,
        );
        assert_wire(
            &Response::Error {
                message: "bad".into(),
            },
            r#"{"reply":"error","message":"bad"}"#,
        );
    }

    /// A `show` reply as a switch wrote it before keepalives, STP, GRE-in-UDP and path MTU.
    const SHOW_WITHOUT_OPTIONALS: &str = r#"{"reply":"show","tap":"dnet0","bridge":"br0","mtu":1462,"local":"10.200.0.1","workers":2,"gre":{"key":42,"csum":true,"seq":false,"ttl":64,"tos":0,"df":true},"control_socket":"/run/dnet/dnet0.sock","metrics":null,"config_file":"/etc/dnet.toml","uptime_secs":11,"fdb_entries":3,"ports":[{"id":1,"name":"gre-10.200.0.2","kind":"tunnel","peer":"10.200.0.2","state":"active","origin":"flag","last_rx_secs":0,"rx_packets":1,"rx_bytes":2,"tx_packets":3,"tx_bytes":4}]}"#;

    #[test]
    fn fields_added_later_may_be_absent() {
        // A request or reply written before these fields existed still parses.
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"fdb_flush"}"#).unwrap(),
            Request::FdbFlush { port: None }
        );
        let Response::Show(show) =
            serde_json::from_str::<Response>(SHOW_WITHOUT_OPTIONALS).unwrap()
        else {
            panic!("not a show reply");
        };
        assert_eq!(show.keepalive_ms, None);
        assert_eq!(show.stp, None);
        assert_eq!(show.gre.udp_port, None);
        assert_eq!(show.ports[0].stp_role, None);
        assert_eq!(show.ports[0].stp_state, None);
        assert_eq!(show.ports[0].path_mtu, None);
        assert_eq!(show.fleet, None);
    }

    #[test]
    fn unknown_commands_and_missing_fields_are_refused() {
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"reboot"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"peer_add"}"#).is_err());
        assert!(
            serde_json::from_str::<Request>(r#"{"cmd":"peer_add","addr":"10.200.0"}"#).is_err()
        );
        assert!(serde_json::from_str::<Request>(r#"{"stats":null}"#).is_err());
    }
}
