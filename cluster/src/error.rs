//! The crate's error type: each variant names the input and the fix, and states its cause once
//! (causes are embedded in the message, not chained).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::ranges::PlanError;
use crate::records::Contradiction;

/// Everything the cluster layer can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// An etcd request failed.
    #[error("etcd at {endpoints}: {op} failed: {error}")]
    Etcd {
        /// The endpoints tried.
        endpoints: String,
        /// What was asked (`get`, `txn`, `lease grant`...).
        op: &'static str,
        /// The client's error.
        error: etcd_client::Error,
    },
    /// An etcd request got no answer in time.
    #[error(
        "etcd at {endpoints}: {op} got no answer within {timeout:?}: check that etcd runs there and --etcd lists its client URLs"
    )]
    Timeout {
        /// The endpoints tried.
        endpoints: String,
        /// What was asked.
        op: &'static str,
        /// How long we waited.
        timeout: Duration,
    },
    /// No endpoint given.
    #[error("no etcd endpoint given: pass --etcd http://HOST:2379[,...] or set DNET_ETCD")]
    NoEndpoints,
    /// A name that cannot be a key segment.
    #[error(
        "{what} {name:?} is not valid: use 1 to 64 of A-Z a-z 0-9 . _ - :, not starting with '.'"
    )]
    BadName {
        /// `network name` or `host id`.
        what: &'static str,
        /// As given.
        name: String,
    },
    /// The network has no settings record.
    #[error(
        "network {network} does not exist in etcd under {prefix}: create it with `dnetctl network create {network} --subnet CIDR`"
    )]
    NoNetwork {
        /// Network name.
        network: String,
        /// Key prefix.
        prefix: String,
    },
    /// `network create` of an existing network.
    #[error(
        "network {network} already exists under {prefix}: `dnetctl network show {network}` prints it, `dnetctl network delete {network}` removes it"
    )]
    NetworkExists {
        /// Network name.
        network: String,
        /// Key prefix.
        prefix: String,
    },
    /// The network's settings record cannot be used.
    #[error(
        "network {network}'s settings record in etcd is unusable ({detail}): recreate it with `dnetctl network delete {network} --force` and `dnetctl network create`"
    )]
    BadNetwork {
        /// Network name.
        network: String,
        /// What is wrong.
        detail: String,
    },
    /// A subnet/prefix that cannot be cut into ranges, a full subnet or a full range.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A local flag contradicts the network's settings.
    #[error(transparent)]
    Contradiction(#[from] Contradiction),
    /// Joining an encrypted network without a public key to publish.
    #[error(
        "network {network} is encrypted (created with --encrypt) and this host has no key pair: start dnet-switch with --private-key FILE (`dnetctl keygen --out FILE` makes one); its public key is published for the other members"
    )]
    NoPublicKey {
        /// Network name.
        network: String,
    },
    /// `network delete` without `--force` while hosts are members.
    #[error(
        "network {network} still has {} member(s) ({}): stop dnet-switch there and wait for their leases to end, or delete with --force",
        members.len(), members.join(", ")
    )]
    HasMembers {
        /// Network name.
        network: String,
        /// Member host ids.
        members: Vec<String>,
    },
    /// Allocation on a host that holds no range.
    #[error(
        "host {host} holds no address range in network {network}: start `dnet-switch --network {network}` on it first"
    )]
    NoRange {
        /// Network name.
        network: String,
        /// Host id.
        host: String,
    },
    /// An explicit address outside the host's container addresses.
    #[error(
        "address {address} is not a container address of host {host}'s range {range} in network {network}: use one from {first} to {last} (the gateway {gateway} is the bridge's)"
    )]
    NotInRange {
        /// Network name.
        network: String,
        /// Host id.
        host: String,
        /// The address asked for.
        address: Ipv4Addr,
        /// The host's range.
        range: Ipv4Net,
        /// First container address.
        first: Ipv4Addr,
        /// Last container address.
        last: Ipv4Addr,
        /// The range's gateway.
        gateway: Ipv4Addr,
    },
    /// An explicit address someone else holds.
    #[error("address {address} in network {network} is already allocated to {holder}: detach it there first or pick another")]
    AddressTaken {
        /// Network name.
        network: String,
        /// The address.
        address: Ipv4Addr,
        /// Who holds it.
        holder: String,
    },
    /// Concurrent writers kept winning a transaction.
    #[error("network {network}: {what} lost {attempts} transaction races in a row to other hosts; retry")]
    Contention {
        /// Network name.
        network: String,
        /// What was being done.
        what: &'static str,
        /// How many attempts.
        attempts: u32,
    },
    /// The password file could not be read.
    #[error("reading the etcd password file {path}: {error}")]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The password variable is not set.
    #[error("environment variable {var} (the etcd password) is not set or not UTF-8: export it, or use a password file")]
    PasswordEnv {
        /// Variable name.
        var: String,
    },
    /// A TLS file could not be read.
    #[error("reading {flag} {path}: {error}")]
    TlsFile {
        /// `--etcd-cacert`, `--etcd-cert` or `--etcd-key`.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// Only one of certificate and key given.
    #[error("--etcd-cert and --etcd-key go together: give both or neither")]
    TlsPair,
    /// TLS options with an `http://` endpoint.
    #[error("etcd endpoint {endpoint} is http:// but TLS options are given: use https://")]
    TlsNeedsHttps {
        /// The endpoint.
        endpoint: String,
    },
    /// The agent's thread could not be started or ended before it joined.
    #[error("the cluster thread for network {network} {what}")]
    Thread {
        /// Network name.
        network: String,
        /// What happened.
        what: String,
    },
}

impl ClusterError {
    /// Whether this is etcd being unreachable or failing (worth retrying), as opposed to a
    /// problem retrying cannot fix. etcd refusing the credentials (a wrong password answers
    /// "invalid argument", a user without rights "permission denied") is not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            ClusterError::Etcd {
                error: etcd_client::Error::GRpcStatus(s),
                ..
            } => !matches!(
                s.code(),
                tonic::Code::InvalidArgument | tonic::Code::PermissionDenied
            ),
            ClusterError::Etcd { .. }
            | ClusterError::Timeout { .. }
            | ClusterError::Contention { .. } => true,
            _ => false,
        }
    }
}
