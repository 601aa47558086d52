//! [`SettingsError`]: a setting that cannot work. Its own module, so that both the settings
//! pipeline and the fleet settings it calls can return it without importing each other.

use super::input::Input;
use super::limits::{
    MAX_BUSY_POLL_US, MAX_REKEY_AFTER_SECS, MAX_TTL_SECS, MAX_WORKERS, MIN_MTU,
    MIN_REKEY_AFTER_SECS, MIN_TTL_SECS,
};
use crate::switch::tunnel::GRE_IN_UDP_PORT;
use std::net::Ipv4Addr;

/// A setting that cannot work, naming it (flag, or file and line) and the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    /// No peers.
    #[error(
        "no peer given: pass --peer IP for each other host (or peer = [...] in --config FILE), or join an etcd network with --network NAME --etcd URLS"
    )]
    NoPeers,
    /// The same network twice.
    #[error("{input}: network {name} is given twice: give each network once")]
    DuplicateNetwork {
        /// The networks as given.
        input: Input,
        /// The repeated name.
        name: String,
    },
    /// `--key` or `--mtu` with several networks.
    #[error("{0}: with several --network, each network's key and MTU come from etcd: drop it (`dnetctl network create --key/--mtu` sets them per network)")]
    OneValueForSeveralNetworks(Input),
    /// `--docker` without a network.
    #[error("{0}: serves the networks joined through etcd: add --network NAME --etcd URLS")]
    DockerWithoutNetwork(Input),
    /// `--docker-plugin-dir` without `--docker`.
    #[error("{0}: only used with --docker: add --docker, or drop it")]
    PluginDirWithoutDocker(Input),
    /// `--tap` with several networks.
    #[error("{0}: with several --network, each network's TAP is dnet-NAME: drop --tap")]
    TapWithSeveralNetworks(Input),
    /// A network name too long for its TAP's name.
    #[error("{input}: network name {name:?} is too long for its TAP dnet-{name} (at most 15 bytes): serve it from its own dnet-switch with --tap, or use a shorter name")]
    NetworkNameTooLong {
        /// The networks as given.
        input: Input,
        /// The name.
        name: String,
    },
    /// A plain `--bridge` with several networks.
    #[error("{0}: with several --network, give each network's bridge: --bridge blue=br0,red=br1")]
    OneBridgeForSeveralNetworks(Input),
    /// A bad `NET=BRIDGE` pair.
    #[error("{input}: {pair:?} is not NET=BRIDGE with NET one of the --network names")]
    BridgeMap {
        /// The flag.
        input: Input,
        /// The bad pair.
        pair: String,
    },
    /// An etcd option without `--network`.
    #[error("{0}: only used with --network: add --network NAME (network = \"NAME\"), or drop it")]
    EtcdWithoutNetwork(Input),
    /// `--network` without etcd.
    #[error("{0}: needs etcd: pass --etcd http://HOST:2379[,...] or set DNET_ETCD")]
    NetworkWithoutEtcd(Input),
    /// An etcd URL that is not one.
    #[error("{input}: {url:?} is not an etcd client URL: use http://HOST:PORT (https:// with --etcd-cacert), comma-separated for several members")]
    EtcdUrl {
        /// The URLs as given.
        input: Input,
        /// The bad one.
        url: String,
    },
    /// Member TTL out of range.
    #[error("{0}: out of range: use {MIN_TTL_SECS} to {MAX_TTL_SECS} seconds (default 10)")]
    EtcdTtl(Input),
    /// A client certificate without its key.
    #[error("{0}: needs its private key: add --etcd-key FILE")]
    EtcdCertWithoutKey(Input),
    /// A client key without its certificate.
    #[error("{0}: needs its certificate: add --etcd-cert FILE")]
    EtcdKeyWithoutCert(Input),
    /// TLS files with a plain-http URL.
    #[error("{input}: TLS, but etcd URL {url} is plain http: use https:// URLs, or drop the TLS options")]
    EtcdTlsOverHttp {
        /// The TLS option.
        input: Input,
        /// The http URL.
        url: String,
    },
    /// An https URL without a CA.
    #[error("{input}: {url} needs the CA that signed etcd's certificate: add --etcd-cacert FILE")]
    EtcdHttpsWithoutCa {
        /// The URLs as given.
        input: Input,
        /// The https URL.
        url: String,
    },
    /// A user without a password.
    #[error("{0}: no password: put it in a file and add --etcd-password-file FILE, or export DNET_ETCD_PASSWORD")]
    EtcdNoPassword(Input),
    /// A password file without a user.
    #[error("{0}: only used with --etcd-user: add --etcd-user NAME")]
    EtcdPasswordWithoutUser(Input),
    /// The network's settings ask for something this dnet-switch cannot do.
    #[error("network {network} in etcd: {what}")]
    Network {
        /// The network.
        network: String,
        /// What, and the fix.
        what: String,
    },
    /// TTL 0.
    #[error("{0}: would drop every packet at the first hop: use 1 to 255")]
    Ttl(Input),
    /// Workers out of range.
    #[error("{0}: out of range: use 1 to {MAX_WORKERS} worker threads")]
    Workers(Input),
    /// Busy-poll window out of range (a file's value; the flag checks its own).
    #[error("{0}: out of range: use 0 (off) to {MAX_BUSY_POLL_US} microseconds")]
    BusyPoll(Input),
    /// TAP MTU below the IPv4 minimum.
    #[error("{0}: below the minimum {MIN_MTU}: use {MIN_MTU} or more, or leave it out to derive it from the underlay MTU")]
    MtuTooSmall(Input),
    /// TAP MTU that no IPv4 packet can carry with this encapsulation.
    #[error("{input}: too large: at most {max} fits in one IPv4 packet with this encapsulation")]
    MtuTooLarge {
        /// The MTU as given.
        input: Input,
        /// The largest that fits.
        max: u32,
    },
    /// A UDP port without GRE-in-UDP.
    #[error("{0}: only used with GRE-in-UDP: add --encap udp (encap = \"udp\") on every host, or drop it")]
    UdpPortWithoutUdp(Input),
    /// UDP port 0.
    #[error("{0}: port 0 cannot be sent to: use 1 to 65535 (default {GRE_IN_UDP_PORT})")]
    UdpPortZero(Input),
    /// Keepalive interval too short.
    #[error("{0}: below 10 ms: use 10 or more (default 1000)")]
    KeepaliveInterval(Input),
    /// Keepalive multiplier out of range.
    #[error("{0}: out of range: use 1 to 255 missed intervals (default 3)")]
    KeepaliveMultiplier(Input),
    /// STP priority not a multiple of 4096 up to 61440.
    #[error("{0}: must be a multiple of 4096 from 0 to 61440 (802.1D-2004), e.g. 28672 to prefer this switch as the root")]
    StpPriority(Input),
    /// STP priority without STP.
    #[error("{0}: only used with the spanning tree: add --stp (stp = true), or drop it")]
    StpPriorityWithoutStp(Input),
    /// No such user.
    #[error("{0}: no such user (see /etc/passwd)")]
    NoSuchUser(Input),
    /// No such group.
    #[error("{0}: no such group (see /etc/group)")]
    NoSuchGroup(Input),
    /// `--encrypt` with plain GRE.
    #[error("{input}: seals GRE-in-UDP only{}: use --encap udp (encap = \"udp\") with --encrypt on every host, or drop --encrypt (plain GRE stays cleartext, as OVS and Linux gretap speak it)", encap.as_ref().map(|e| format!(", not {e}")).unwrap_or_default())]
    EncryptWithoutUdp {
        /// `--encrypt` as given.
        input: Input,
        /// `--encap gre` as given (its text), if given.
        encap: Option<String>,
    },
    /// `--encrypt` without a key.
    #[error("{0}: needs this host's private key: add --private-key FILE (`dnetctl keygen --out FILE` makes one)")]
    EncryptWithoutKey(Input),
    /// A key file without `--encrypt`.
    #[error("{0}: only used with --encrypt: add --encrypt (and --encap udp), or drop it")]
    PrivateKeyWithoutEncrypt(Input),
    /// A peer's key without `--encrypt`.
    #[error("{0}: a public key is only used with --encrypt: add --encrypt (and --encap udp, --private-key FILE), or give the peer as IP alone")]
    PeerKeyWithoutEncrypt(Input),
    /// `rekey_after` without `--encrypt`.
    #[error("{0}: only used with --encrypt: add --encrypt, or drop it")]
    RekeyWithoutEncrypt(Input),
    /// `rekey_after` out of range.
    #[error("{0}: out of range: use {MIN_REKEY_AFTER_SECS} to {MAX_REKEY_AFTER_SECS} seconds (default 120)")]
    RekeyAfter(Input),
    /// A peer without its key, with `--encrypt`.
    #[error("{input}: with --encrypt a peer needs its public key: --peer {addr}=PUBKEY (peer = [\"{addr}=PUBKEY\"]), where PUBKEY is what `dnetctl pubkey` prints on {addr}", addr = input.value.split('=').next().unwrap_or_default())]
    PeerWithoutKey {
        /// The peer as given.
        input: Input,
    },
    /// Two peers given one public key.
    #[error("{input}: the same public key as peer {other}: each host has its own key pair (`dnetctl keygen` on each)")]
    PeerKeyTwice {
        /// The second peer as given.
        input: Input,
        /// The first peer with that key.
        other: Ipv4Addr,
    },
    /// A peer given this host's own public key.
    #[error(
        "{0}: that is this host's own public key: give the peer's (`dnetctl pubkey` on the peer)"
    )]
    PeerKeyIsOwn(Input),
    /// The private key file cannot be used.
    #[error("{input}: {why}")]
    PrivateKey {
        /// `--private-key` as given.
        input: Input,
        /// Why (its message is part of this one, so it is no `source`).
        why: String,
    },
}
