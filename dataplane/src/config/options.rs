//! [`Options`]: every setting of `dnet-switch`, declared once. clap reads the struct as flags
//! (`--stp-priority`), serde as config-file keys (`stp_priority`): both names come from the
//! field name, so they cannot drift apart. A field is `None` (or empty) where that source did
//! not give it; [`super::Sources`] layers flags over the file and [`super::Settings`] applies
//! defaults and validates.
//!
//! The two negative flags are the exception to "key = flag with `_`": `--no-offload` and
//! `--no-loop-guard` set the keys `offload` and `loop_guard` to false, as
//! docs/reference/dnet-switch.md documents.
//! Adding a setting means adding a field here, reading (and validating) it in
//! [`super::Settings::new`], and a row in docs/reference/dnet-switch.md and a line in
//! dist/dnet.toml (tests/docs.rs fails until both are there).

use super::limits::MAX_BUSY_POLL_US;
use super::peer_spec::PeerSpec;
use clap::{Args, Command, ValueEnum};
use serde::Deserialize;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// The settings of `dnet-switch`, as flags and as config-file keys. Every field is optional:
/// defaults live in [`super::Settings`], so that "not given" can be told from "given as the
/// default" when flags are layered over the file.
#[derive(Args, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
// A doc comment here would become the about text of the command that flattens this struct.
#[command(about = None, long_about = None)]
pub struct Options {
    /// Underlay address of a peer host (repeat for each; at least one here or in --config,
    /// unless --network finds the peers in etcd). Peers form a full mesh: frames from one
    /// tunnel are never sent into another (split horizon), unless --stp is on. With
    /// --encrypt, IP=PUBKEY: the peer's public key (`dnetctl pubkey` on that host).
    #[arg(long, value_name = "IP[=PUBKEY]")]
    #[serde(default)]
    pub peer: Vec<PeerSpec>,

    /// Underlay source address [default: the address routing picks for the first peer, or
    /// with --network and no peer, for the first etcd URL].
    #[arg(long, value_name = "IP")]
    pub local: Option<Ipv4Addr>,

    /// Name of the TAP device to create (fails if it exists) [default: dnet0].
    #[arg(long, value_name = "NAME")]
    pub tap: Option<String>,

    /// Attach the TAP to this existing Linux bridge (e.g. docker0). With several --network,
    /// give each network's bridge as NET=BRIDGE, comma-separated (blue=br0,red=br1).
    #[arg(long, value_name = "NAME")]
    pub bridge: Option<String>,

    /// TAP MTU [default: underlay MTU minus the encapsulation actually emitted: 38 bytes
    /// without options (1500 → 1462), 4 more each for --key, --csum, --seq]. A larger value
    /// turns off DF so the kernel fragments outer packets rather than losing them.
    #[arg(long, value_name = "N")]
    pub mtu: Option<u32>,

    /// GRE key (32-bit network id, as OVS `options:key`). Packets with another or no key are
    /// dropped; no key and key 0 are the same network.
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          value_parser = dnet_cli::int_in(0u32, u32::MAX, "GRE key"))]
    pub key: Option<u32>,

    /// Add GRE checksums to sent packets (received checksums are always verified).
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub csum: Option<bool>,

    /// Add GRE sequence numbers to sent packets (off by default: Linux peers with `iseq`
    /// drop reordered packets).
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub seq: Option<bool>,

    /// Outer IPv4 TTL [default: 64].
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          value_parser = dnet_cli::int_in(1u8, 255, "TTL"))]
    pub ttl: Option<u8>,

    /// Outer IPv4 TOS byte [default: 0].
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          value_parser = dnet_cli::int_in(0u8, 255, "TOS byte"))]
    pub tos: Option<u8>,

    /// Worker threads, each with its own TAP queue and GRE socket [default: half the cores,
    /// at least 1, with plain GRE; one per core with --encap udp].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,

    /// Do not ask the kernel for TCP super-frames and partial checksums on the TAP (by default
    /// dnet segments and coalesces TCP, and coalesces runs of UDP datagrams, in userspace,
    /// which moves far fewer packets through the kernel). Key: `offload = false`.
    #[arg(long = "no-offload", num_args = 0, default_missing_value = "false")]
    pub offload: Option<bool>,

    /// Log level [default: info].
    #[arg(long, value_name = "LEVEL", ignore_case = true)]
    pub log_level: Option<LogLevel>,

    /// Path of the root-only control socket used by dnetctl [default: /run/dnet/<TAP>.sock].
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,

    /// Also let members of this group use the control socket (it becomes mode 0660).
    #[arg(long, value_name = "NAME")]
    pub control_group: Option<String>,

    /// Serve Prometheus metrics (the `dnetctl stats` counters) over HTTP on this address,
    /// e.g. 127.0.0.1:9464 [default: off].
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<SocketAddr>,

    /// Flood at most PPS frames per second (broadcast, multicast, unknown unicast) from each
    /// port; the rest are dropped and counted as flood_limit [default: unlimited].
    #[arg(long, value_name = "PPS", value_parser = dnet_cli::int_in(1u32, u32::MAX, "flood limit in frames per second"))]
    pub flood_limit: Option<u32>,

    /// After setup, switch to this user (and its group), keeping only CAP_NET_ADMIN and
    /// CAP_NET_RAW [default: stay root].
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// Lower the MSS option of TCP SYNs entering the tunnels so segments fit the narrowest
    /// path MTU (for underlays that drop ICMP) [default: off].
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub clamp_mss: Option<bool>,

    /// Send BFD-like keepalives over every tunnel and show peers as up/down; a dead peer's
    /// MACs are flushed. Implied by the two options below [default: off].
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub keepalive: Option<bool>,

    /// Keepalive interval in milliseconds [default: 1000 with --keepalive].
    #[arg(long, value_name = "MS", value_parser = dnet_cli::int_in(10u64, u64::MAX, "keepalive interval in ms"))]
    pub keepalive_interval: Option<u64>,

    /// Keepalive intervals without any frame from a peer before it is declared down
    /// [default: 3].
    #[arg(long, value_name = "N", value_parser = dnet_cli::int_in(1u32, 255, "keepalive multiplier"))]
    pub keepalive_multiplier: Option<u32>,

    /// Do not block a tunnel whose stations flap with the local port (a loop through the
    /// local side, e.g. two hosts' bridges joined directly) [default: loop guard on].
    /// Key: `loop_guard = false`.
    #[arg(long = "no-loop-guard", num_args = 0, default_missing_value = "false")]
    pub loop_guard: Option<bool>,

    /// Encapsulation: `gre` (IP protocol 47, RFC 2784/2890, what OVS and Linux gretap speak)
    /// or `udp` (GRE-in-UDP, RFC 8086: crosses NAT and clouds that drop protocol 47, and lets
    /// the kernel send and receive 64 KiB batches of segments with UDP GSO/GRO). Every switch
    /// of the overlay must use the same [default: gre].
    #[arg(long, value_name = "KIND")]
    pub encap: Option<Encap>,

    /// Plain GRE through AF_PACKET rings on the underlay device: `tx` sends bursts through a
    /// TX ring that bypasses routing, IP output and the qdisc (the outer Ethernet header comes
    /// from the kernel's route and neighbour tables), `rx` receives through RX rings shared by
    /// the workers (fanout by flow), `on` both, `off` neither (raw GRE sockets only). Without
    /// an Ethernet underlay device the raw sockets are used [default: on].
    #[arg(long, value_name = "MODE")]
    pub packet_rings: Option<PacketRings>,

    /// After an exchange's traffic (after a quiet spell, or its answer), keep polling for up to
    /// USECS microseconds before sleeping, so the reply is picked up without a thread wake-up
    /// (on a VM, a wake-up of an idle vCPU is a hypervisor exit). Streams and steady traffic
    /// open no window; the worker stops polling as soon as another thread wants its core, and
    /// polls at most 1/16 of its time; `0` turns it off [default: 200].
    #[arg(long, value_name = "USECS", value_parser = dnet_cli::int_in(0u32, MAX_BUSY_POLL_US, "busy-poll window in microseconds"))]
    pub busy_poll: Option<u32>,

    /// UDP port of GRE-in-UDP (--encap udp), on every host [default: 4754, IANA gre-in-udp].
    #[arg(long, value_name = "PORT", value_parser = dnet_cli::int_in(1u16, u16::MAX, "UDP port"))]
    pub udp_port: Option<u16>,

    /// Run a rapid spanning tree (802.1D BPDUs, hello 2 s, max age 20 s, forward delay 15 s)
    /// with the other switches over the tunnels and forward tunnel to tunnel, so the peers
    /// need not form a full mesh: redundant tunnels are blocked, a lost tunnel is routed
    /// around in about 6 s. Every switch of the overlay needs it [default: off, split horizon].
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub stp: Option<bool>,

    /// Bridge priority with --stp, a multiple of 4096 from 0 to 61440; the lowest becomes the
    /// root [default: 32768].
    #[arg(long, value_name = "N")]
    pub stp_priority: Option<u16>,

    /// Seal every tunnel datagram (GRE-in-UDP only: needs --encap udp): authenticated and
    /// encrypted with keys from a Noise IK handshake between each pair of hosts, so a host
    /// without an accepted key cannot get a frame into the overlay or read one. Needs
    /// --private-key, and each --peer as IP=PUBKEY (or an etcd network created with
    /// --encrypt, whose members publish their keys).
    #[arg(
        long,
        num_args = 0,
        default_missing_value = "true",
        help_heading = "Encryption"
    )]
    pub encrypt: Option<bool>,

    /// This host's private key file (`dnetctl keygen` writes one, mode 0600; a file group or
    /// others may read is refused).
    #[arg(long, value_name = "FILE", help_heading = "Encryption")]
    pub private_key: Option<PathBuf>,

    /// New session keys after this many seconds, 1 to 120 [default: 120]. Meant for tests:
    /// shorter only adds handshakes.
    #[arg(long, value_name = "SECONDS", help_heading = "Encryption")]
    pub rekey_after: Option<u64>,

    /// Join this overlay network, defined once in etcd (`dnetctl network create`): its members
    /// become tunnels without --peer, this host claims its own container address range, and
    /// the encapsulation, key and MTU come from the network (a flag that contradicts them is
    /// refused). Needs --etcd. Repeat to serve several isolated networks (each its own GRE
    /// key, TAP `dnet-NAME` and bridge, see --bridge); in the file, `network = "blue"` or
    /// `network = ["blue", "red"]`.
    #[arg(long, value_name = "NAME", help_heading = "Fleet (etcd)")]
    #[serde(default, deserialize_with = "one_or_many")]
    pub network: Vec<String>,

    /// Serve Docker's network and IPAM plugin API (plugin `dnet`) for the --network(s), and
    /// make sure each has a Docker network of its name on this host's engine (at
    /// $DOCKER_HOST or /var/run/docker.sock). A network without --bridge gets bridge
    /// br-NAME, made if missing, with this host's gateway address. Needs --network.
    #[arg(
        long,
        num_args = 0,
        default_missing_value = "true",
        help_heading = "Containers"
    )]
    pub docker: Option<bool>,

    /// Directory of the Docker plugin socket dnet.sock [default: /run/docker/plugins].
    #[arg(long, value_name = "DIR", help_heading = "Containers")]
    pub docker_plugin_dir: Option<PathBuf>,

    /// etcd client URLs, comma-separated: every member of the etcd cluster, e.g.
    /// http://10.0.0.5:2379,http://10.0.0.6:2379 [default: $DNET_ETCD]. Only used with
    /// --network.
    #[arg(long, value_name = "URLS", help_heading = "Fleet (etcd)")]
    pub etcd: Option<String>,

    /// Key prefix of dnet's records in etcd [default: /dnet].
    #[arg(long, value_name = "PREFIX", help_heading = "Fleet (etcd)")]
    pub etcd_prefix: Option<String>,

    /// Seconds this host stays a member after its last keepalive to etcd: a crashed or cut-off
    /// host loses its tunnels on the other hosts this long after it stopped [default: 10].
    #[arg(long, value_name = "SECONDS", help_heading = "Fleet (etcd)")]
    pub etcd_ttl: Option<u64>,

    /// CA certificate (PEM) that signed etcd's server certificate; turns on TLS (https://
    /// URLs).
    #[arg(long, value_name = "FILE", help_heading = "Fleet (etcd)")]
    pub etcd_cacert: Option<PathBuf>,

    /// Client certificate (PEM) for etcd's --client-cert-auth; with --etcd-key.
    #[arg(long, value_name = "FILE", help_heading = "Fleet (etcd)")]
    pub etcd_cert: Option<PathBuf>,

    /// Private key (PEM) of --etcd-cert.
    #[arg(long, value_name = "FILE", help_heading = "Fleet (etcd)")]
    pub etcd_key: Option<PathBuf>,

    /// etcd user (etcd with `auth enable`). The password is the first line of
    /// --etcd-password-file, or else $DNET_ETCD_PASSWORD: never a flag, where `ps` shows it.
    #[arg(long, value_name = "NAME", help_heading = "Fleet (etcd)")]
    pub etcd_user: Option<String>,

    /// File whose first line is the password of --etcd-user (keep it mode 0600).
    #[arg(long, value_name = "FILE", help_heading = "Fleet (etcd)")]
    pub etcd_password_file: Option<PathBuf>,
}

impl Options {
    /// The flags, as clap builds them (for lookups; the binary flattens [`Options`] into its
    /// own command).
    fn command() -> Command {
        Options::augment_args(Command::new("dnet-switch"))
    }

    /// Every config-file key, in declaration order: the fields' names.
    pub fn keys() -> Vec<String> {
        Options::command()
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect()
    }

    /// The flag that sets `key` (`--stp-priority` for `stp_priority`, `--no-offload` for
    /// `offload`), or `None` for a key no flag sets.
    pub fn flag(key: &str) -> Option<String> {
        Options::command()
            .get_arguments()
            .find(|a| a.get_id() == key)
            .and_then(|a| a.get_long())
            .map(|l| format!("--{l}"))
    }
}

/// `network = "blue"` or `network = ["blue", "red"]` in the file.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// `--log-level`: the levels `log` knows, in any case (as `log::LevelFilter` parses them).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    /// Nothing at all.
    Off,
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// What was set up, and changes at run time.
    Info,
    /// Details for developers.
    Debug,
    /// Everything.
    Trace,
}

impl From<LogLevel> for log::LevelFilter {
    fn from(l: LogLevel) -> Self {
        match l {
            LogLevel::Off => log::LevelFilter::Off,
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        LogLevel::from_str(&s, true).map_err(|_| {
            serde::de::Error::custom(format!(
                "log_level {s:?}: use error, warn, info, debug, trace or off"
            ))
        })
    }
}

/// `--encap`: the tunnel encapsulation.
#[derive(ValueEnum, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Encap {
    /// GRE, IP protocol 47 (RFC 2784/2890), what OVS and Linux gretap speak.
    #[default]
    Gre,
    /// GRE-in-UDP (RFC 8086).
    Udp,
}

/// `--packet-rings`: which AF_PACKET rings plain GRE uses.
#[derive(ValueEnum, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PacketRings {
    /// Raw GRE sockets only.
    Off,
    /// Send through a TX ring.
    Tx,
    /// Receive through RX rings.
    Rx,
    /// Both rings.
    #[default]
    On,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    /// A command holding just the options, as the binary flattens them.
    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        options: Options,
    }

    fn flags(args: &[&str]) -> Result<Options, clap::Error> {
        let m = Options::command()
            .try_get_matches_from(std::iter::once("dnet-switch").chain(args.iter().copied()))?;
        Options::from_arg_matches(&m)
    }

    /// The names serde derives for [`Options`]: a deserializer that records the field list
    /// the derive hands to `deserialize_struct`.
    fn serde_fields() -> Vec<String> {
        struct Fields(Vec<String>);
        #[derive(Debug)]
        struct Stop;
        impl std::fmt::Display for Stop {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("stop")
            }
        }
        impl std::error::Error for Stop {}
        impl serde::de::Error for Stop {
            fn custom<T: std::fmt::Display>(_: T) -> Self {
                Stop
            }
        }
        impl<'de> serde::Deserializer<'de> for &mut Fields {
            type Error = Stop;
            fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
                Err(Stop)
            }
            fn deserialize_struct<V: serde::de::Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Stop> {
                self.0 = fields.iter().map(|f| f.to_string()).collect();
                Err(Stop)
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
                byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
                identifier ignored_any
            }
        }
        let mut f = Fields(Vec::new());
        let _ = Options::deserialize(&mut f);
        f.0
    }

    #[test]
    fn keys_are_the_flags_names() {
        let keys = Options::keys();
        assert_eq!(keys, serde_fields(), "clap ids and serde keys differ");
        assert_eq!(keys.len(), 43);
        for k in &keys {
            let flag = Options::flag(k).unwrap_or_else(|| panic!("no flag for {k}"));
            let expect = match k.as_str() {
                "offload" | "loop_guard" => format!("--no-{}", k.replace('_', "-")),
                _ => format!("--{}", k.replace('_', "-")),
            };
            assert_eq!(flag, expect);
        }
        Cli::command().debug_assert();
    }

    #[test]
    fn absent_flags_are_none_and_toggles_set_their_value() {
        assert_eq!(flags(&[]).unwrap(), Options::default());
        let o = flags(&["--csum", "--no-offload", "--no-loop-guard", "--stp"]).unwrap();
        assert_eq!(
            (o.csum, o.offload, o.loop_guard, o.stp, o.seq),
            (Some(true), Some(false), Some(false), Some(true), None)
        );
        // A toggle takes no value, and is given at most once, as before.
        assert!(flags(&["--csum=false"]).is_err());
        assert!(flags(&["--csum", "--csum"]).is_err());
        let o = flags(&[
            "--peer",
            "10.0.0.2",
            "--peer",
            "10.0.0.3",
            "--log-level",
            "DEBUG",
        ])
        .unwrap();
        assert_eq!(o.peer.len(), 2);
        assert_eq!(o.log_level, Some(LogLevel::Debug));
    }

    #[test]
    fn flag_values_keep_their_ranges() {
        for bad in [
            &["--flood-limit", "0"][..],
            &["--keepalive-interval", "9"],
            &["--keepalive-multiplier", "0"],
            &["--keepalive-multiplier", "256"],
            &["--udp-port", "0"],
            &["--ttl", "256"],
            &["--encap", "vxlan"],
            &["--log-level", "loud"],
        ] {
            assert!(flags(bad).is_err(), "{bad:?} accepted");
        }
        let o = flags(&["--encap", "udp", "--log-level", "off"]).unwrap();
        assert_eq!(
            (o.encap, o.log_level),
            (Some(Encap::Udp), Some(LogLevel::Off))
        );
    }
}
