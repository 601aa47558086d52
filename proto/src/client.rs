//! The blocking client: one connection per request, bounded in time.

use crate::message::{Request, Response, Stats};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Errors of the control-socket client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached (switch not running, wrong path, permissions).
    #[error("cannot connect to control socket {path}: {hint}")]
    Connect {
        /// Socket path tried.
        path: String,
        /// What the failure most likely means and what to do, from the error and the path.
        hint: String,
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
        hint: connect_hint(path, &source),
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

/// Why a connect to `path` failed, in an operator's terms, with the fix. `connect(2)` reports
/// a directory, a plain file and a stale socket all as "connection refused"; the path's type
/// tells them apart.
fn connect_hint(path: &Path, e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    use std::os::unix::fs::FileTypeExt;
    let kind = std::fs::metadata(path).map(|m| m.file_type());
    match (e.kind(), kind) {
        (_, Ok(t)) if t.is_dir() => {
            "a directory, not a socket: pass the socket file itself, e.g. /run/dnet/dnet0.sock"
                .into()
        }
        (_, Ok(t)) if !t.is_socket() => {
            "not a socket: pass the path dnet-switch's --control-socket names".into()
        }
        (NotFound, _) => "no such socket: start dnet-switch (it creates the socket; \
             --control-socket sets where), or pass --socket PATH / --tap NAME"
            .into(),
        (ConnectionRefused, _) => "nothing listens on it (a stopped switch's leftover?): \
             start dnet-switch, or pass the socket of one that runs"
            .into(),
        (PermissionDenied, _) => "permission denied: run as root, or start dnet-switch \
             with --control-group GROUP and use an account in that group"
            .into(),
        _ => "check that dnet-switch runs and that this is its --control-socket".into(),
    }
}

/// Convenience: fetch the switch's [`Stats`].
pub fn stats(path: &Path, timeout: Duration) -> Result<Stats, ClientError> {
    match request(path, &Request::Stats, timeout)? {
        Response::Stats(s) => Ok(s),
        other => Err(ClientError::Remote(format!("unexpected reply {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    /// The messages of `e` and its causes, outermost first.
    fn messages(e: &(dyn Error + 'static)) -> Vec<String> {
        let mut out = vec![e.to_string()];
        let mut next = e.source();
        while let Some(c) = next {
            out.push(c.to_string());
            next = c.source();
        }
        out
    }

    /// Each message names its input, and its cause is in the source chain, printed once (the
    /// message does not repeat it).
    #[test]
    fn every_cause_is_printed_once() {
        let path = "/run/dnet/dnet0.sock";
        let errno = || std::io::Error::from(std::io::ErrorKind::NotFound);
        let decode = || serde_json::from_str::<u8>("x").unwrap_err();
        let errors: Vec<(ClientError, String)> = vec![
            (
                ClientError::Connect {
                    path: path.into(),
                    hint: "no such socket: start dnet-switch".into(),
                    source: errno(),
                },
                errno().to_string(),
            ),
            (
                ClientError::Io {
                    path: path.into(),
                    source: errno(),
                },
                errno().to_string(),
            ),
            (
                ClientError::Decode {
                    path: path.into(),
                    source: decode(),
                },
                decode().to_string(),
            ),
        ];
        for (e, cause) in errors {
            let msgs = messages(&e);
            assert!(msgs[0].contains(path), "{msgs:?}");
            for (i, m) in msgs.iter().enumerate() {
                for later in &msgs[i + 1..] {
                    assert!(!m.contains(later.as_str()), "{m:?} repeats {later:?}");
                }
            }
            assert_eq!(msgs.join(": ").matches(&cause).count(), 1, "{msgs:?}");
        }
    }

    #[test]
    fn a_directory_is_not_called_a_refused_connection() {
        let dir = std::env::temp_dir();
        let msg = stats(&dir, Duration::from_millis(200))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("a directory, not a socket"), "{msg}");
    }

    #[test]
    fn a_missing_socket_names_the_path_and_the_fix() {
        let dir = std::env::temp_dir().join(format!("dnet-proto-test-{}", std::process::id()));
        let path = dir.join("absent.sock");
        let e = stats(&path, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("start dnet-switch"), "{msg}");
        let cause = e.source().expect("the OS error is the cause").to_string();
        assert!(cause.contains("No such file or directory"), "{cause}");
    }
}
