//! The local control socket: a running `dnet-switch` answers requests on a unix stream socket.
//!
//! Wire format: the client sends one JSON [`Request`] on one line and reads one JSON
//! [`Response`] line back. The server is a plain thread at the edge; it reads counters that the
//! workers publish and never touches frames.

pub mod metrics;
mod proto;
mod server;

pub use proto::{
    ClaimEntry, ConflictEntry, ConflictList, DropCount, FdbEntry, FdbTable, GreInfo, PortInfo,
    PortKind, PortStats, Request, Response, Show, Stats, StpInfo,
};
pub use server::{
    ControlServer, PeerChangeError, PeerOrigin, ServerError, SwitchInfo, SwitchSettings,
};

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Errors of the control-socket client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached (switch not running, wrong path, permissions).
    #[error("cannot connect to control socket {path} (is dnet-switch running with --control-socket {path}?)")]
    Connect {
        /// Socket path tried.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Reading or writing the socket failed.
    #[error("control socket {path}")]
    Io {
        /// Socket path.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The reply was not valid JSON of the expected shape.
    #[error("control socket {path}: malformed reply")]
    Decode {
        /// Socket path.
        path: String,
        /// Underlying error.
        source: serde_json::Error,
    },
    /// The switch answered with an error.
    #[error("switch refused the request: {0}")]
    Remote(String),
}

/// Default control socket path for a switch whose TAP is `tap`.
pub fn default_socket_path(tap: &str) -> String {
    format!("/run/dnet/{tap}.sock")
}

/// Sends one request and waits (at most `timeout`) for its reply.
pub fn request(path: &Path, req: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let p = path.display().to_string();
    let io = |source| ClientError::Io {
        path: p.clone(),
        source,
    };
    let mut s = UnixStream::connect(path).map_err(|source| ClientError::Connect {
        path: p.clone(),
        source,
    })?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_string(req).expect("requests always serialize");
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(io)?;
    let mut reply = String::new();
    BufReader::new(&s).read_line(&mut reply).map_err(io)?;
    let resp: Response = serde_json::from_str(&reply).map_err(|source| ClientError::Decode {
        path: p.clone(),
        source,
    })?;
    if let Response::Error { message } = resp {
        return Err(ClientError::Remote(message));
    }
    Ok(resp)
}

/// Convenience: fetch the switch's [`Stats`].
pub fn stats(path: &Path, timeout: Duration) -> Result<Stats, ClientError> {
    match request(path, &Request::Stats, timeout)? {
        Response::Stats(s) => Ok(s),
        other => Err(ClientError::Remote(format!("unexpected reply {other:?}"))),
    }
}
