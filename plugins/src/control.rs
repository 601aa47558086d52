//! The requests `dnet-cni` sends to a running switch over its control socket, the answers it
//! expects, and [`ControlClient`], a [`Backend`] that sends them.
//!
//! The framing is the switch's control protocol's (crate `dnet-proto`): one JSON object per
//! line, the request named by `"cmd"`, the answer by `"reply"`, then the switch closes the
//! connection. `allocate`, `release` and `allocations` have the field names of the allocation
//! requests `dnetctl attach` uses; `networks` is new. A refusal is `"reply":"error"` with the
//! human message and, in `refusal`, the [`BackendError`] itself, so the client gets back the
//! exact kind (which `dnet-cni` maps onto CNI error codes):
//!
//! ```text
//! → {"cmd":"allocate","network":"blue","container":"cni:c1/eth0","name":null,"address":null}
//! ← {"reply":"allocated","network":"blue","address":"10.77.3.2","prefix_len":16,"range":"10.77.3.0/24","gateway":"10.77.3.1","container":"cni:c1/eth0"}
//! ```
//!
//! [`answer`] is the switch's side: it turns a request into an answer with any [`Backend`];
//! the switch's control loop can call it for these commands (and the tests' stand-in switch
//! does).

use crate::backend::{Allocation, Backend, BackendError, Network};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the switch gets to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A request to the switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum ControlRequest {
    /// The networks this host serves.
    Networks,
    /// An address for a holder ([`Backend::allocate`]).
    Allocate {
        /// Network name.
        network: Option<String>,
        /// The holder's stable id (the owner).
        container: String,
        /// A name shown beside the id.
        #[serde(default)]
        name: Option<String>,
        /// The address wanted; `None`: the lowest free one.
        #[serde(default)]
        address: Option<Ipv4Addr>,
    },
    /// Frees a holder's address ([`Backend::release`]).
    Release {
        /// Network name.
        network: Option<String>,
        /// The holder.
        #[serde(default)]
        container: Option<String>,
        /// Not sent by this crate (kept for the shape `dnetctl detach` uses).
        #[serde(default)]
        address: Option<Ipv4Addr>,
    },
    /// This host's allocations in a network ([`Backend::allocations`]).
    Allocations {
        /// Network name.
        network: Option<String>,
    },
}

/// One allocation as listed in [`ControlResponse::Allocations`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationEntry {
    /// The address.
    pub address: Ipv4Addr,
    /// The holder.
    pub container: String,
    /// Its name, if one was given.
    #[serde(default)]
    pub name: Option<String>,
}

/// What the switch answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum ControlResponse {
    /// Answer to [`ControlRequest::Networks`].
    Networks {
        /// The networks.
        networks: Vec<Network>,
    },
    /// Answer to [`ControlRequest::Allocate`].
    Allocated {
        /// Network name.
        network: String,
        /// The address.
        address: Ipv4Addr,
        /// The subnet's prefix length.
        prefix_len: u8,
        /// This host's range.
        range: Ipv4Net,
        /// The range's gateway.
        gateway: Ipv4Addr,
        /// The holder.
        container: String,
    },
    /// Answer to [`ControlRequest::Release`].
    Released {
        /// Network name.
        network: String,
        /// The address freed; `None`: the holder held none.
        address: Option<Ipv4Addr>,
    },
    /// Answer to [`ControlRequest::Allocations`].
    Allocations {
        /// Network name.
        network: String,
        /// This host's range.
        range: Option<Ipv4Net>,
        /// The allocations.
        allocations: Vec<AllocationEntry>,
    },
    /// Refused or failed.
    Error {
        /// The human message.
        message: String,
        /// The refusal, when the backend gave one.
        #[serde(default)]
        refusal: Option<BackendError>,
    },
}

fn refused(e: BackendError) -> ControlResponse {
    ControlResponse::Error {
        message: e.to_string(),
        refusal: Some(e),
    }
}

fn network_name(network: Option<String>) -> Result<String, BackendError> {
    network.ok_or_else(|| {
        BackendError::Failed("the request names no network: add \"network\":\"NAME\"".into())
    })
}

/// The switch's side: answers `req` with `backend`.
pub fn answer(backend: &dyn Backend, req: ControlRequest) -> ControlResponse {
    let r = (|| match req {
        ControlRequest::Networks => Ok(ControlResponse::Networks {
            networks: backend.networks()?,
        }),
        ControlRequest::Allocate {
            network,
            container,
            address,
            ..
        } => {
            let net = backend.network(&network_name(network)?)?;
            let a = backend.allocate(&net.name, &container, address)?;
            Ok(ControlResponse::Allocated {
                prefix_len: net.subnet.prefix_len(),
                range: net.range,
                gateway: net.gateway,
                network: net.name,
                address: a,
                container,
            })
        }
        ControlRequest::Release {
            network,
            container,
            address,
        } => {
            let network = network_name(network)?;
            let owner = match (container, address) {
                (Some(c), _) => c,
                (None, Some(a)) => match backend
                    .allocations(&network)?
                    .into_iter()
                    .find(|x| x.address == a)
                {
                    Some(x) => x.owner,
                    None => {
                        return Ok(ControlResponse::Released {
                            network,
                            address: None,
                        })
                    }
                },
                (None, None) => {
                    return Err(BackendError::Failed(
                        "release names neither a container nor an address".into(),
                    ))
                }
            };
            let address = backend.release(&network, &owner)?;
            Ok(ControlResponse::Released { network, address })
        }
        ControlRequest::Allocations { network } => {
            let net = backend.network(&network_name(network)?)?;
            let allocations = backend
                .allocations(&net.name)?
                .into_iter()
                .map(|a| AllocationEntry {
                    address: a.address,
                    container: a.owner,
                    name: None,
                })
                .collect();
            Ok(ControlResponse::Allocations {
                network: net.name,
                range: Some(net.range),
                allocations,
            })
        }
    })();
    r.unwrap_or_else(refused)
}

/// Answers one request line (the stand-in switch of the tests, or a switch's control loop).
pub fn answer_line(backend: &dyn Backend, line: &str) -> String {
    let resp = match serde_json::from_str::<ControlRequest>(line) {
        Ok(req) => answer(backend, req),
        Err(e) => ControlResponse::Error {
            message: format!("unreadable request {:?}: {e}", line.trim()),
            refusal: None,
        },
    };
    serde_json::to_string(&resp).unwrap_or_else(|e| {
        format!(r#"{{"reply":"error","message":"cannot encode the answer: {e}"}}"#)
    })
}

/// A [`Backend`] that asks the switch listening on a control socket.
#[derive(Debug, Clone)]
pub struct ControlClient {
    socket: PathBuf,
}

impl ControlClient {
    /// A client for the switch on `socket` (nothing is sent yet).
    pub fn new(socket: impl Into<PathBuf>) -> ControlClient {
        ControlClient {
            socket: socket.into(),
        }
    }

    /// The socket it asks.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn unavailable(&self, reason: impl std::fmt::Display) -> BackendError {
        BackendError::Unavailable {
            what: format!("the dnet switch on {}", self.socket.display()),
            reason: reason.to_string(),
        }
    }

    /// Sends `req` and reads the answer; a refusal comes back as its [`BackendError`].
    pub fn request(&self, req: &ControlRequest) -> Result<ControlResponse, BackendError> {
        let mut s = UnixStream::connect(&self.socket).map_err(|e| self.unavailable(e))?;
        s.set_read_timeout(Some(TIMEOUT))
            .and_then(|_| s.set_write_timeout(Some(TIMEOUT)))
            .map_err(|e| self.unavailable(e))?;
        let mut line = serde_json::to_string(req)
            .map_err(|e| BackendError::Failed(format!("cannot encode {req:?}: {e}")))?;
        line.push('\n');
        s.write_all(line.as_bytes())
            .map_err(|e| self.unavailable(e))?;
        let mut reply = String::new();
        BufReader::new(&s)
            .read_line(&mut reply)
            .map_err(|e| self.unavailable(e))?;
        if reply.trim().is_empty() {
            return Err(self.unavailable("it closed the connection without an answer"));
        }
        match serde_json::from_str::<ControlResponse>(&reply) {
            Ok(ControlResponse::Error { message, refusal }) => {
                Err(refusal.unwrap_or(BackendError::Failed(message)))
            }
            Ok(r) => Ok(r),
            Err(e) => Err(BackendError::Failed(format!(
                "the dnet switch on {} answered {:?}, which is not an answer this plugin reads ({e}); \
                 is the switch older than dnet-cni?",
                self.socket.display(),
                reply.trim()
            ))),
        }
    }

    fn unexpected(&self, r: ControlResponse) -> BackendError {
        BackendError::Failed(format!(
            "the dnet switch on {} gave an answer to another request: {r:?}",
            self.socket.display()
        ))
    }
}

impl Backend for ControlClient {
    fn networks(&self) -> Result<Vec<Network>, BackendError> {
        match self.request(&ControlRequest::Networks)? {
            ControlResponse::Networks { networks } => Ok(networks),
            r => Err(self.unexpected(r)),
        }
    }

    fn allocate(
        &self,
        network: &str,
        owner: &str,
        requested: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, BackendError> {
        match self.request(&ControlRequest::Allocate {
            network: Some(network.to_string()),
            container: owner.to_string(),
            name: None,
            address: requested,
        })? {
            ControlResponse::Allocated { address, .. } => Ok(address),
            r => Err(self.unexpected(r)),
        }
    }

    fn release(&self, network: &str, owner: &str) -> Result<Option<Ipv4Addr>, BackendError> {
        match self.request(&ControlRequest::Release {
            network: Some(network.to_string()),
            container: Some(owner.to_string()),
            address: None,
        })? {
            ControlResponse::Released { address, .. } => Ok(address),
            r => Err(self.unexpected(r)),
        }
    }

    fn allocations(&self, network: &str) -> Result<Vec<Allocation>, BackendError> {
        match self.request(&ControlRequest::Allocations {
            network: Some(network.to_string()),
        })? {
            ControlResponse::Allocations { allocations, .. } => Ok(allocations
                .into_iter()
                .map(|a| Allocation {
                    address: a.address,
                    owner: a.container,
                })
                .collect()),
            r => Err(self.unexpected(r)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryBackend;

    fn backend() -> MemoryBackend {
        MemoryBackend::new(vec![Network {
            name: "blue".into(),
            subnet: "10.77.0.0/16".parse().unwrap(),
            range: "10.77.3.0/24".parse().unwrap(),
            gateway: "10.77.3.1".parse().unwrap(),
            bridge: "br-blue".into(),
            mtu: 1450,
        }])
        .unwrap()
    }

    #[test]
    fn wire_shapes() {
        let b = backend();
        let r = answer_line(
            &b,
            r#"{"cmd":"allocate","network":"blue","container":"cni:c1/eth0","name":null,"address":null}"#,
        );
        assert_eq!(
            r,
            r#"{"reply":"allocated","network":"blue","address":"10.77.3.2","prefix_len":16,"range":"10.77.3.0/24","gateway":"10.77.3.1","container":"cni:c1/eth0"}"#
        );
        let r = answer_line(&b, r#"{"cmd":"allocations","network":"blue"}"#);
        assert_eq!(
            r,
            r#"{"reply":"allocations","network":"blue","range":"10.77.3.0/24","allocations":[{"address":"10.77.3.2","container":"cni:c1/eth0","name":null}]}"#
        );
        let r = answer_line(
            &b,
            r#"{"cmd":"release","network":"blue","address":"10.77.3.2"}"#,
        );
        assert_eq!(
            r,
            r#"{"reply":"released","network":"blue","address":"10.77.3.2"}"#
        );
    }

    #[test]
    fn refusals_carry_their_kind() {
        let b = backend();
        let r = answer_line(
            &b,
            r#"{"cmd":"allocate","network":"red","container":"x","address":null}"#,
        );
        let resp: ControlResponse = serde_json::from_str(&r).unwrap();
        assert!(
            matches!(
                resp,
                ControlResponse::Error {
                    refusal: Some(BackendError::UnknownNetwork { .. }),
                    ..
                }
            ),
            "{r}"
        );
        let r = answer_line(&b, "{not json");
        assert!(
            r.starts_with(r#"{"reply":"error","message":"unreadable request"#),
            "{r}"
        );
    }

    #[test]
    fn client_without_switch_is_unavailable() {
        let c = ControlClient::new("/nonexistent/dnet.sock");
        assert!(matches!(
            c.networks(),
            Err(BackendError::Unavailable { ref what, .. }) if what.contains("/nonexistent/dnet.sock")
        ));
    }
}
