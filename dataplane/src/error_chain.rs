//! An error and its causes on one line, as anyhow's `{:#}` prints them: for messages that
//! leave the process as text (control-socket replies, log lines) rather than as an error.
//!
//! The convention this relies on, for every error type of the crate: a variant that exposes a
//! cause through `source()` does not also print it in its own message, so each cause is
//! printed once.

use std::error::Error;

/// `error: cause: cause of the cause`.
pub fn format(e: &(dyn Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

/// Panics if a message in `e`'s chain repeats the text of a cause further down.
#[cfg(test)]
pub fn assert_causes_once(e: &(dyn Error + 'static)) {
    let mut msgs = vec![e.to_string()];
    let mut next = e.source();
    while let Some(cause) = next {
        msgs.push(cause.to_string());
        next = cause.source();
    }
    for (i, m) in msgs.iter().enumerate() {
        for later in &msgs[i + 1..] {
            assert!(
                !m.contains(later.as_str()),
                "{m:?} repeats its cause {later:?} (chain: {})",
                format(e)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FileError, Input, PeerError, ResolveError};
    use crate::control::{PeerChangeError, ServerError};
    use crate::io::{gre_socket::SocketError, netdev::NetdevError, tap::TapError, StartError};
    use crate::privdrop::PrivError;
    use std::io;

    fn errno() -> io::Error {
        io::Error::from_raw_os_error(libc::EADDRNOTAVAIL)
    }

    fn peer() -> Input {
        Input::flag("peer", "10.9.9.9")
    }

    /// Every error of the crate that has a cause, each variant that can be built. (The control
    /// client's errors are crate `dnet_proto`'s and tested there.)
    fn with_causes() -> Vec<Box<dyn Error + 'static>> {
        let addr = std::net::Ipv4Addr::new(10, 0, 0, 1);
        vec![
            Box::new(TapError::SetIff {
                name: "dnet0".into(),
                source: errno(),
            }),
            Box::new(TapError::Open(errno())),
            Box::new(NetdevError::Ioctl {
                op: "SIOCSIFMTU",
                dev: "dnet0".into(),
                source: errno(),
            }),
            Box::new(SocketError::Bind {
                addr,
                source: errno(),
            }),
            Box::new(SocketError::Option {
                op: "IP_MTU_DISCOVER",
                source: errno(),
            }),
            Box::new(StartError::Socket(SocketError::Bind {
                addr,
                source: errno(),
            })),
            Box::new(StartError::Netdev(NetdevError::Ioctl {
                op: "SIOCSIFFLAGS",
                dev: "dnet0".into(),
                source: errno(),
            })),
            Box::new(StartError::Thread(errno())),
            Box::new(ServerError::Create {
                path: "/run/dnet/dnet0.sock".into(),
                source: errno(),
            }),
            Box::new(FileError::Read {
                path: "/etc/dnet/dnet.toml".into(),
                source: errno(),
            }),
            Box::new(PrivError::Syscall {
                user: "nobody".into(),
                what: "setresuid",
                source: errno(),
            }),
            Box::new(PeerError::NoRoute {
                input: peer(),
                source: errno(),
            }),
            Box::new(PeerError::Addresses {
                input: peer(),
                source: errno(),
            }),
            Box::new(ResolveError::Peer(PeerError::NoRoute {
                input: peer(),
                source: errno(),
            })),
            Box::new(ResolveError::Addresses {
                input: Input::flag("local", addr),
                source: errno(),
            }),
            Box::new(PeerChangeError::Check(PeerError::NoRoute {
                input: peer(),
                source: errno(),
            })),
        ]
    }

    #[test]
    fn every_cause_is_printed_once() {
        for e in with_causes() {
            assert_causes_once(e.as_ref());
            // And printed: the errno text appears in the chain exactly once.
            let line = format(e.as_ref());
            let cause = "Cannot assign requested address";
            assert_eq!(line.matches(cause).count(), 1, "{line}");
        }
    }

    #[test]
    fn a_repeated_cause_is_caught() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot open: {source}")]
        struct Repeats {
            source: io::Error,
        }
        let r = std::panic::catch_unwind(|| assert_causes_once(&Repeats { source: errno() }));
        assert!(r.is_err(), "a message that repeats its cause passed");
    }
}
