//! Typed errors of the testbed and traffic helpers.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Result alias of this library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while building a testbed, running a switch in it or pushing
/// traffic through it. Messages name the failed command or input so a test failure is readable
/// without a debugger.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An external command (usually `ip`) ran but reported failure.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        /// The command line, space-joined.
        cmd: String,
        /// Exit status as printed by the OS.
        status: String,
        /// What the command wrote to stderr (trimmed).
        stderr: String,
    },
    /// An external command could not be started at all.
    #[error("cannot run `{cmd}` (is iproute2 installed and are you root?)")]
    Spawn {
        /// The command line, space-joined.
        cmd: String,
        /// Underlying error.
        source: io::Error,
    },
    /// A file or socket operation failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// Underlying error.
        source: io::Error,
    },
    /// Entering a network namespace failed.
    #[error("cannot enter network namespace {ns}")]
    Netns {
        /// Namespace name (under /run/netns).
        ns: String,
        /// Underlying error.
        source: io::Error,
    },
    /// The `dnet-switch` binary was not where we looked.
    #[error(
        "dnet-switch not found at {}: run `cargo build --workspace` first (or set DNET_SWITCH_BIN)",
        path.display()
    )]
    SwitchNotFound {
        /// Path tried.
        path: PathBuf,
    },
    /// `DNET_SWITCH_BIN` names no file.
    #[error("DNET_SWITCH_BIN={}: no such file (unset it to use target/<profile>/dnet-switch)", path.display())]
    SwitchEnvNotFound {
        /// Value of the variable.
        path: PathBuf,
    },
    /// A switch process ended while we waited for it to become ready.
    #[error("dnet-switch in {ns} exited with {status} before it was ready; its stderr:\n{stderr}")]
    SwitchExited {
        /// Host namespace it ran in.
        ns: String,
        /// Exit status.
        status: String,
        /// Its captured stderr.
        stderr: String,
    },
    /// A switch process kept running but never answered on its control socket.
    #[error(
        "dnet-switch in {ns} did not answer on {socket} within {timeout:?} (last error: {last}); its stderr:\n{stderr}"
    )]
    SwitchNotReady {
        /// Host namespace it runs in.
        ns: String,
        /// Control socket polled.
        socket: String,
        /// How long we waited.
        timeout: Duration,
        /// The last client error seen.
        last: String,
        /// Its captured stderr.
        stderr: String,
    },
    /// The control socket of a running switch failed.
    #[error(transparent)]
    Control(#[from] dnet_proto::ClientError),
    /// The testbed was torn down (e.g. by a signal) while still in use.
    #[error("testbed already torn down")]
    TornDown,
    /// An operation did not finish in time.
    #[error("{what} timed out after {timeout:?}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The limit.
        timeout: Duration,
    },
    /// A TCP transfer delivered a byte different from the one sent.
    #[error(
        "tcp transfer corrupted: byte at offset {offset} is {got:#04x}, expected {expected:#04x}"
    )]
    DataMismatch {
        /// Offset of the first differing byte in the stream.
        offset: u64,
        /// Pattern byte sent there.
        expected: u8,
        /// Byte received there.
        got: u8,
    },
    /// A TCP transfer ended before all bytes (or with more bytes than sent).
    #[error("tcp transfer: received {received} bytes, expected {expected}")]
    ShortTransfer {
        /// Bytes received before EOF.
        received: u64,
        /// Bytes that were sent.
        expected: u64,
    },
    /// A helper was called with arguments it cannot honour.
    #[error("invalid argument: {0}")]
    Invalid(String),
}

/// The messages of `e` and its causes, outermost first.
fn messages(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = vec![e.to_string()];
    let mut next = e.source();
    while let Some(c) = next {
        out.push(c.to_string());
        next = c.source();
    }
    out
}

/// `error: cause: cause of the cause` on one line, as anyhow's `{:#}` prints it: for errors
/// that are printed (teardown warnings, the last error seen while waiting) rather than returned.
pub(crate) fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    messages(e).join(": ")
}

impl Error {
    /// Builds an [`Error::Io`] with a context message.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cause_is_printed_once() {
        let errno = || io::Error::from_raw_os_error(libc::ENOENT);
        let errors: Vec<Box<dyn std::error::Error>> = vec![
            Box::new(Error::Spawn {
                cmd: "ip link".into(),
                source: errno(),
            }),
            Box::new(Error::io("reading /run/x.log", errno())),
            Box::new(Error::Netns {
                ns: "dnet-h0".into(),
                source: errno(),
            }),
            Box::new(Error::Control(dnet_proto::ClientError::Connect {
                path: "/run/dnet/dnet0.sock".into(),
                hint: "no such socket: start dnet-switch".into(),
                source: errno(),
            })),
        ];
        for e in errors {
            let msgs = messages(e.as_ref());
            for (i, m) in msgs.iter().enumerate() {
                for later in &msgs[i + 1..] {
                    assert!(!m.contains(later.as_str()), "{m:?} repeats {later:?}");
                }
            }
            let line = one_line(e.as_ref());
            assert_eq!(
                line.matches("No such file or directory").count(),
                1,
                "{line}"
            );
        }
    }
}
