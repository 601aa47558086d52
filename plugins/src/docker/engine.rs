//! A small Docker Engine API client over the engine's unix socket: make sure a `dnet` Docker
//! network exists for each network the switch serves, and read the engine's `dnet` networks
//! with their running endpoints, so a restarted plugin can take over (see
//! [`super::driver::Driver::restore`]).
//!
//! HTTP/1.1 through hyper's connection-level client on a private current-thread tokio runtime:
//! the calls are blocking and must not be made from inside another tokio runtime, nor from the
//! plugin's own request thread (creating a network makes the engine call the plugin back).

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the engine listens unless `DOCKER_HOST=unix://PATH` says otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// The driver and IPAM driver name of dnet's Docker networks.
pub const DRIVER: &str = "dnet";
/// How long one engine call may take. Creating a network includes the engine's calls to the
/// plugin, and the engine waits for a plugin socket that is not there yet for up to ~15 s.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The engine socket: `DOCKER_HOST` if it is a `unix://` URL, else [`DEFAULT_SOCKET`].
pub fn engine_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// What went wrong talking to the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Nothing answers on the socket.
    #[error("no Docker engine answers on {path} (is dockerd running? DOCKER_HOST=unix://PATH names another socket)")]
    NoEngine {
        /// The socket tried.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The HTTP exchange failed.
    #[error("Docker engine on {path}: {request} failed: {reason}")]
    Http {
        /// The socket.
        path: PathBuf,
        /// `GET /networks`.
        request: String,
        /// What failed.
        reason: String,
    },
    /// The engine refused.
    #[error("Docker engine on {path}: {request} answered HTTP {status}: {message}")]
    Api {
        /// The socket.
        path: PathBuf,
        /// `POST /networks/create`.
        request: String,
        /// HTTP status.
        status: u16,
        /// The engine's message.
        message: String,
    },
    /// A Docker network of that name exists but is not what dnet needs.
    #[error("Docker network {network} exists but {what}: remove it (`docker network rm {network}`) and let dnet create it, or rename the dnet network")]
    Mismatch {
        /// The name.
        network: String,
        /// How it differs.
        what: String,
    },
    /// The client's runtime could not be built.
    #[error("cannot start the Docker client's runtime")]
    Runtime(#[source] io::Error),
}

/// What a dnet network needs in Docker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    /// Name (the dnet network's).
    pub name: String,
    /// The network's whole subnet.
    pub subnet: ipnet::Ipv4Net,
    /// Its MTU.
    pub mtu: u32,
}

/// What [`Engine::ensure_network`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ensured {
    /// The network was there already, as needed; its id.
    Existed(String),
    /// It was created; its id.
    Created(String),
}

/// A running container's endpoint on a `dnet` network, as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineEndpoint {
    /// Container id.
    pub container: String,
    /// Endpoint id.
    pub endpoint_id: String,
    /// MAC address.
    pub mac: String,
    /// IPv4 address, CIDR.
    pub ipv4: String,
}

/// A Docker network with driver `dnet`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineNetwork {
    /// Docker's network id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its IPAM subnets.
    pub subnets: Vec<String>,
    /// Its driver options.
    pub options: BTreeMap<String, String>,
    /// Endpoints of running containers.
    pub endpoints: Vec<EngineEndpoint>,
}

/// A client for one engine (blocking; see the module docs).
#[derive(Debug)]
pub struct Engine {
    socket: PathBuf,
    rt: tokio::runtime::Runtime,
}

/// Escapes everything but unreserved URL characters.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn message_of(v: &Value) -> String {
    v.get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

impl Engine {
    /// A client for the engine on `socket` (nothing is sent yet).
    pub fn new(socket: impl Into<PathBuf>) -> Result<Engine, EngineError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(EngineError::Runtime)?;
        Ok(Engine {
            socket: socket.into(),
            rt,
        })
    }

    /// A client for [`engine_socket`].
    pub fn from_env() -> Result<Engine, EngineError> {
        Engine::new(engine_socket())
    }

    /// The socket it talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// One request; returns the status and the JSON body (`null` if empty).
    fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), EngineError> {
        let request = format!("{method} {path}");
        let http = |reason: String| EngineError::Http {
            path: self.socket.clone(),
            request: request.clone(),
            reason,
        };
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let fut = async {
            let stream = tokio::net::UnixStream::connect(&self.socket)
                .await
                .map_err(|source| EngineError::NoEngine {
                    path: self.socket.clone(),
                    source,
                })?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| http(e.to_string()))?;
            let conn = tokio::spawn(conn);
            let req = Request::builder()
                .method(method.clone())
                .uri(path)
                .header("Host", "docker")
                .header("Content-Type", "application/json")
                .header("User-Agent", "dnet")
                .body(Full::new(Bytes::from(bytes)))
                .map_err(|e| http(e.to_string()))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| http(e.to_string()))?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| http(e.to_string()))?
                .to_bytes();
            conn.abort();
            let v = if body.iter().all(u8::is_ascii_whitespace) {
                Value::Null
            } else {
                serde_json::from_slice(&body).map_err(|e| {
                    http(format!(
                        "HTTP {status} with a body that is not JSON ({e}): {:?}",
                        String::from_utf8_lossy(&body)
                    ))
                })?
            };
            Ok::<_, EngineError>((status, v))
        };
        self.rt.block_on(async {
            tokio::time::timeout(TIMEOUT, fut)
                .await
                .unwrap_or_else(|_| Err(http(format!("no answer within {TIMEOUT:?}"))))
        })
    }

    fn call_ok(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, EngineError> {
        let (status, v) = self.call(method.clone(), path, body)?;
        if (200..300).contains(&status) {
            Ok(v)
        } else {
            Err(EngineError::Api {
                path: self.socket.clone(),
                request: format!("{method} {path}"),
                status,
                message: message_of(&v),
            })
        }
    }

    /// The engine's version string (a liveness check).
    pub fn version(&self) -> Result<String, EngineError> {
        let v = self.call_ok(Method::GET, "/version", None)?;
        Ok(v.get("Version")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string())
    }

    /// The full inspect output of the network with exactly this name, if any.
    fn network_named(&self, name: &str) -> Result<Option<Value>, EngineError> {
        let filters = json!({ "name": { name: true } }).to_string();
        let list = self.call_ok(
            Method::GET,
            &format!("/networks?filters={}", percent_encode(&filters)),
            None,
        )?;
        let id = list.as_array().and_then(|a| {
            a.iter()
                .find(|n| n.get("Name").and_then(Value::as_str) == Some(name))
                .and_then(|n| n.get("Id").and_then(Value::as_str))
                .map(str::to_string)
        });
        match id {
            Some(id) => Ok(Some(self.call_ok(
                Method::GET,
                &format!("/networks/{}", percent_encode(&id)),
                None,
            )?)),
            None => Ok(None),
        }
    }

    /// Checks that an existing network is what `spec` needs.
    fn check_existing(spec: &NetworkSpec, n: &Value) -> Result<String, EngineError> {
        let mismatch = |what: String| EngineError::Mismatch {
            network: spec.name.clone(),
            what,
        };
        let s = |p: &str| n.pointer(p).and_then(Value::as_str).unwrap_or_default();
        if s("/Driver") != DRIVER {
            return Err(mismatch(format!(
                "has driver {:?}, not {DRIVER}",
                s("/Driver")
            )));
        }
        if s("/IPAM/Driver") != DRIVER {
            return Err(mismatch(format!(
                "has IPAM driver {:?}, not {DRIVER}",
                s("/IPAM/Driver")
            )));
        }
        let subnets: Vec<&str> = n
            .pointer("/IPAM/Config")
            .and_then(Value::as_array)
            .map(|c| {
                c.iter()
                    .filter_map(|x| x.get("Subnet").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default();
        let want = spec.subnet.to_string();
        if subnets != [want.as_str()] {
            return Err(mismatch(format!("has subnets {subnets:?}, not [{want}]")));
        }
        if let Some(mtu) = n
            .pointer(&format!(
                "/Options/{}",
                super::api::MTU_OPTION.replace('/', "~1")
            ))
            .and_then(Value::as_str)
        {
            if mtu.trim() != spec.mtu.to_string() {
                return Err(mismatch(format!("has MTU {mtu}, not {}", spec.mtu)));
            }
        }
        Ok(s("/Id").to_string())
    }

    /// Makes sure a Docker network named `spec.name` exists with driver and IPAM driver `dnet`,
    /// `spec.subnet` and `spec.mtu`; creates it if absent. An existing network of that name
    /// that differs is an error, never changed. The plugin must be serving already (the engine
    /// calls it while creating the network).
    pub fn ensure_network(&self, spec: &NetworkSpec) -> Result<Ensured, EngineError> {
        if let Some(n) = self.network_named(&spec.name)? {
            return Self::check_existing(spec, &n).map(Ensured::Existed);
        }
        let body = json!({
            "Name": spec.name,
            "Driver": DRIVER,
            "CheckDuplicate": true,
            "IPAM": {
                "Driver": DRIVER,
                "Config": [{ "Subnet": spec.subnet.to_string() }],
                "Options": { super::api::NETWORK_OPTION: spec.name },
            },
            "Options": {
                super::api::MTU_OPTION: spec.mtu.to_string(),
                super::api::NETWORK_OPTION: spec.name,
            },
        });
        let (status, v) = self.call(Method::POST, "/networks/create", Some(&body))?;
        match status {
            200..=299 => Ok(Ensured::Created(
                v.get("Id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            )),
            // Someone created it meanwhile: check theirs.
            409 => match self.network_named(&spec.name)? {
                Some(n) => Self::check_existing(spec, &n).map(Ensured::Existed),
                None => Err(EngineError::Api {
                    path: self.socket.clone(),
                    request: "POST /networks/create".into(),
                    status,
                    message: message_of(&v),
                }),
            },
            _ => Err(EngineError::Api {
                path: self.socket.clone(),
                request: "POST /networks/create".into(),
                status,
                message: message_of(&v),
            }),
        }
    }

    /// Every Docker network with driver `dnet`, with the endpoints of its running containers.
    pub fn dnet_networks(&self) -> Result<Vec<EngineNetwork>, EngineError> {
        let filters = json!({ "driver": { DRIVER: true } }).to_string();
        let list = self.call_ok(
            Method::GET,
            &format!("/networks?filters={}", percent_encode(&filters)),
            None,
        )?;
        let ids: Vec<String> = list
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|n| n.get("Driver").and_then(Value::as_str) == Some(DRIVER))
                    .filter_map(|n| n.get("Id").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let mut out = Vec::new();
        for id in ids {
            let n = self.call_ok(
                Method::GET,
                &format!("/networks/{}", percent_encode(&id)),
                None,
            )?;
            out.push(parse_network(&n));
        }
        Ok(out)
    }
}

/// Reads one network from the engine's `GET /networks/ID` answer.
fn parse_network(n: &Value) -> EngineNetwork {
    let s = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let subnets = n
        .pointer("/IPAM/Config")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .map(|x| s(x, "Subnet"))
                .filter(|x| !x.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let options = n
        .get("Options")
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let endpoints = n
        .get("Containers")
        .and_then(Value::as_object)
        .map(|c| {
            c.iter()
                .map(|(cid, e)| EngineEndpoint {
                    container: cid.clone(),
                    endpoint_id: s(e, "EndpointID"),
                    mac: s(e, "MacAddress"),
                    ipv4: s(e, "IPv4Address"),
                })
                .collect()
        })
        .unwrap_or_default();
    EngineNetwork {
        id: s(n, "Id"),
        name: s(n, "Name"),
        subnets,
        options,
        endpoints,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_inspected_network() {
        let n: Value = serde_json::from_str(
            r#"{"Name":"blue","Id":"4b1f","Driver":"dnet","IPAM":{"Driver":"dnet","Options":null,
                "Config":[{"Subnet":"10.77.0.0/16","Gateway":"10.77.3.1"}]},
                "Containers":{"c0ffee":{"Name":"web","EndpointID":"e1","MacAddress":"02:42:0a:4d:03:02",
                "IPv4Address":"10.77.3.2/16","IPv6Address":""}},
                "Options":{"com.docker.network.driver.mtu":"1450","dnet.network":"blue"}}"#,
        )
        .unwrap();
        let e = parse_network(&n);
        assert_eq!(e.id, "4b1f");
        assert_eq!(e.subnets, ["10.77.0.0/16"]);
        assert_eq!(e.options["dnet.network"], "blue");
        assert_eq!(e.endpoints.len(), 1);
        assert_eq!(e.endpoints[0].ipv4, "10.77.3.2/16");
        let spec = NetworkSpec {
            name: "blue".into(),
            subnet: "10.77.0.0/16".parse().unwrap(),
            mtu: 1450,
        };
        assert_eq!(Engine::check_existing(&spec, &n).unwrap(), "4b1f");
        let spec9000 = NetworkSpec {
            mtu: 9000,
            ..spec.clone()
        };
        let e = Engine::check_existing(&spec9000, &n).unwrap_err();
        assert!(e.to_string().contains("has MTU 1450, not 9000"), "{e}");
        let mut bridge = n.clone();
        bridge["Driver"] = json!("bridge");
        let e = Engine::check_existing(&spec, &bridge).unwrap_err();
        assert!(e.to_string().contains("docker network rm blue"), "{e}");
    }

    #[test]
    fn no_engine_names_the_socket_once() {
        use std::error::Error as _;
        let e = Engine::new("/nonexistent/docker.sock")
            .unwrap()
            .version()
            .unwrap_err();
        assert!(matches!(e, EngineError::NoEngine { .. }), "{e}");
        let msg = e.to_string();
        let cause = e.source().unwrap().to_string();
        assert!(msg.contains("/nonexistent/docker.sock"));
        assert!(!msg.contains(&cause), "{msg} repeats {cause}");
    }

    #[test]
    fn filters_are_escaped() {
        assert_eq!(
            percent_encode(r#"{"driver":{"dnet":true}}"#),
            "%7B%22driver%22%3A%7B%22dnet%22%3Atrue%7D%7D"
        );
    }
}
