//! Just enough of a Docker Engine API client to turn a container name or id into the PID whose
//! network namespace is the container's: one `GET /containers/NAME/json` over the engine's Unix
//! socket, HTTP/1.0 so the engine closes the connection after the (unchunked) body.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the engine listens unless `DOCKER_HOST=unix://PATH` says otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// How long to wait for the engine.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The engine socket: `DOCKER_HOST` if it is a `unix://` URL, else [`DEFAULT_SOCKET`].
pub fn engine_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// A running container as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Full container id.
    pub id: String,
    /// Name, without the leading `/`.
    pub name: String,
    /// PID of its init process (its network namespace is `/proc/PID/ns/net`).
    pub pid: u32,
}

/// Why a container could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// Nothing answers on the socket.
    #[error("no Docker engine answers on {path} (is dockerd running? DOCKER_HOST=unix://PATH names another socket)")]
    NoEngine {
        /// The socket tried.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The engine does not know the container.
    #[error("the Docker engine on {path} has no container named {name}")]
    NoSuchContainer {
        /// The socket asked.
        path: PathBuf,
        /// The name asked for.
        name: String,
    },
    /// The container exists but has no process (hence no network namespace).
    #[error("container {name} is not running: start it first")]
    NotRunning {
        /// Its name.
        name: String,
    },
    /// Anything else the engine said.
    #[error("Docker engine on {path}: {message}")]
    Engine {
        /// The socket asked.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Looks up container `name` (a name or an id, as `docker inspect` takes) on the engine at
/// `socket`.
pub fn inspect(socket: &Path, name: &str) -> Result<Container, DockerError> {
    let no_engine = |source| DockerError::NoEngine {
        path: socket.to_path_buf(),
        source,
    };
    let mut s = UnixStream::connect(socket).map_err(no_engine)?;
    s.set_read_timeout(Some(TIMEOUT)).map_err(no_engine)?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(no_engine)?;
    let req = format!(
        "GET /containers/{}/json HTTP/1.0\r\nHost: docker\r\nUser-Agent: dnetctl\r\n\r\n",
        percent_encode(name)
    );
    s.write_all(req.as_bytes()).map_err(no_engine)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).map_err(no_engine)?;
    parse_inspect(&resp, name).map_err(|e| match e {
        ParseError::NotFound => DockerError::NoSuchContainer {
            path: socket.to_path_buf(),
            name: name.to_string(),
        },
        ParseError::NotRunning(n) => DockerError::NotRunning { name: n },
        ParseError::Other(message) => DockerError::Engine {
            path: socket.to_path_buf(),
            message,
        },
    })
}

/// What [`parse_inspect`] can fail with.
#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    /// HTTP 404.
    NotFound,
    /// `State.Pid` is 0; carries the container name.
    NotRunning(String),
    /// Anything else.
    Other(String),
}

/// Parses the engine's HTTP response to `GET /containers/NAME/json`.
pub fn parse_inspect(resp: &[u8], asked: &str) -> Result<Container, ParseError> {
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| ParseError::Other("malformed HTTP response (no header end)".into()))?;
    let head = String::from_utf8_lossy(&resp[..split]);
    let body = &resp[split + 4..];
    let status_line = head.lines().next().unwrap_or_default();
    let code: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| ParseError::Other(format!("malformed status line {status_line:?}")))?;
    if code == 404 {
        return Err(ParseError::NotFound);
    }
    let json: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ParseError::Other(format!("HTTP {code}, body is not JSON ({e})")))?;
    if code != 200 {
        let msg = json
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or("no message");
        return Err(ParseError::Other(format!("HTTP {code}: {msg}")));
    }
    let id = json
        .get("Id")
        .and_then(|v| v.as_str())
        .ok_or_else(|| ParseError::Other("reply has no Id".into()))?
        .to_string();
    let name = json
        .get("Name")
        .and_then(|v| v.as_str())
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_else(|| asked.to_string());
    let pid = json
        .pointer("/State/Pid")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| ParseError::Other("reply has no State.Pid".into()))?;
    if pid == 0 {
        return Err(ParseError::NotRunning(name));
    }
    let pid = u32::try_from(pid).map_err(|_| ParseError::Other(format!("State.Pid {pid}")))?;
    Ok(Container { id, name, pid })
}

/// Escapes everything but unreserved URL characters (container names are `[a-zA-Z0-9_.-]`
/// anyway; this keeps a stray `/` or `?` from changing the request).
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

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "HTTP/1.0 200 OK\r\nApi-Version: 1.45\r\nContent-Type: application/json\r\n\
        Docker-Experimental: false\r\nOstype: linux\r\nServer: Docker/26.1.5 (linux)\r\n\
        Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n\
        {\"Id\":\"4fa6e0f0c6786287e131c3852c58a2e01cc697a68231826813597e4994f1d6e2\",\
        \"Created\":\"2024-01-01T00:00:00Z\",\"Path\":\"nginx\",\"Args\":[],\
        \"State\":{\"Status\":\"running\",\"Running\":true,\"Paused\":false,\"Pid\":4242,\
        \"ExitCode\":0},\"Name\":\"/web1\",\"HostConfig\":{\"NetworkMode\":\"bridge\"}}\n";

    #[test]
    fn parses_running_container() {
        let c = parse_inspect(OK.as_bytes(), "web1").unwrap();
        assert_eq!(c.pid, 4242);
        assert_eq!(c.name, "web1");
        assert!(c.id.starts_with("4fa6e0f0"));
    }

    #[test]
    fn not_found() {
        let r = "HTTP/1.0 404 Not Found\r\nContent-Type: application/json\r\n\r\n\
                 {\"message\":\"No such container: web9\"}\n";
        assert_eq!(
            parse_inspect(r.as_bytes(), "web9"),
            Err(ParseError::NotFound)
        );
    }

    #[test]
    fn stopped_container() {
        let r = "HTTP/1.0 200 OK\r\n\r\n{\"Id\":\"abc\",\"Name\":\"/db\",\
                 \"State\":{\"Running\":false,\"Pid\":0}}";
        assert_eq!(
            parse_inspect(r.as_bytes(), "db"),
            Err(ParseError::NotRunning("db".into()))
        );
    }

    #[test]
    fn server_error_and_garbage() {
        let r = "HTTP/1.0 500 Internal Server Error\r\n\r\n{\"message\":\"boom\"}";
        assert_eq!(
            parse_inspect(r.as_bytes(), "x"),
            Err(ParseError::Other("HTTP 500: boom".into()))
        );
        assert!(matches!(
            parse_inspect(b"garbage", "x"),
            Err(ParseError::Other(_))
        ));
        assert!(matches!(
            parse_inspect(b"HTTP/1.0 200 OK\r\n\r\nnot json", "x"),
            Err(ParseError::Other(_))
        ));
    }

    #[test]
    fn escapes_names() {
        assert_eq!(percent_encode("web_1.a-b"), "web_1.a-b");
        assert_eq!(percent_encode("../x?y"), "..%2Fx%3Fy");
    }

    #[test]
    fn no_engine_is_reported() {
        let e = inspect(Path::new("/nonexistent/docker.sock"), "web1").unwrap_err();
        assert!(matches!(e, DockerError::NoEngine { .. }), "{e}");
    }

    /// The engine error names the socket and the fix; its cause is the source, not repeated.
    #[test]
    fn no_engine_prints_its_cause_once() {
        use std::error::Error as _;
        let e = DockerError::NoEngine {
            path: "/var/run/docker.sock".into(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        let msg = e.to_string();
        let cause = e.source().expect("the OS error is the cause").to_string();
        assert!(msg.contains("/var/run/docker.sock"), "{msg}");
        assert!(!msg.contains(&cause), "{msg:?} repeats {cause:?}");
        assert!(cause.contains("No such file or directory"), "{cause}");
    }
}
