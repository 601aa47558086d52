//! The control socket server: a thread at the edge answering [`Request`]s from counters the
//! workers publish. Only root (uid 0) may talk to it: the socket file is mode 0600 and every
//! peer's credentials are checked.

use super::proto::{DropCount, PortKind as WirePortKind, PortStats, Request, Response, Stats};
use crate::io::DataplaneControl;
use crate::switch::{Counters, DropReason, Event, PortKind};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Longest request line accepted.
const MAX_REQUEST: u64 = 64 * 1024;

/// Control socket setup errors.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another switch answers on this path.
    #[error("control socket {0} is in use by a running dnet-switch: stop it or pass another --control-socket")]
    InUse(String),
    /// Creating the directory or socket failed.
    #[error("cannot create control socket {path}: {source}")]
    Create {
        /// Path.
        path: String,
        /// errno.
        source: io::Error,
    },
}

/// What the server reports about the switch.
pub struct SwitchInfo {
    /// TAP name.
    pub tap: String,
    /// TAP MTU.
    pub mtu: u32,
    /// Underlay source.
    pub local: Ipv4Addr,
    /// The running data path.
    pub dataplane: Arc<DataplaneControl>,
}

impl SwitchInfo {
    /// Sums the workers' counters into a [`Stats`] snapshot.
    pub fn stats(&self) -> Stats {
        let counters = &self.dataplane.counters;
        let sum = |f: &dyn Fn(&Counters) -> u64| counters.iter().map(|c| f(c)).sum::<u64>();
        let ports = self
            .dataplane
            .ports()
            .into_iter()
            .enumerate()
            .filter_map(|(i, k)| Some((i, k?)))
            .map(|(i, k)| PortStats {
                name: match k {
                    PortKind::Local => self.tap.clone(),
                    PortKind::Tunnel(a) => format!("gre-{a}"),
                },
                kind: match k {
                    PortKind::Local => WirePortKind::Local,
                    PortKind::Tunnel(_) => WirePortKind::Tunnel,
                },
                peer: match k {
                    PortKind::Local => None,
                    PortKind::Tunnel(a) => Some(a),
                },
                rx_packets: sum(&|c| c.ports[i].rx_packets.get()),
                rx_bytes: sum(&|c| c.ports[i].rx_bytes.get()),
                tx_packets: sum(&|c| c.ports[i].tx_packets.get()),
                tx_bytes: sum(&|c| c.ports[i].tx_bytes.get()),
            })
            .collect();
        Stats {
            tap: self.tap.clone(),
            mtu: self.mtu,
            local: self.local,
            workers: counters.len(),
            fdb_entries: counters
                .iter()
                .map(|c| c.fdb_entries.get() as usize)
                .max()
                .unwrap_or(0),
            ports,
            drops: DropReason::ALL
                .iter()
                .map(|d| DropCount {
                    reason: d.name().to_string(),
                    count: sum(&|c| c.drops[*d as usize].get()),
                })
                .collect(),
            events: Event::ALL
                .iter()
                .map(|e| DropCount {
                    reason: e.name().to_string(),
                    count: sum(&|c| c.events[*e as usize].get()),
                })
                .collect(),
        }
    }

    /// Answers one request.
    pub fn answer(&self, req: &Request) -> Response {
        match req {
            Request::Stats => Response::Stats(self.stats()),
        }
    }
}

/// A listening control socket; the file is removed on drop.
pub struct ControlServer {
    path: PathBuf,
}

impl ControlServer {
    /// Binds `path` (creating its directory), replacing a stale socket left by a killed switch,
    /// and serves requests on a background thread.
    pub fn start(path: &Path, info: Arc<SwitchInfo>) -> Result<ControlServer, ServerError> {
        let p = path.display().to_string();
        let create = |source| ServerError::Create {
            path: p.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(create)?;
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(ServerError::InUse(p));
            }
            log::info!("removing stale control socket {p} left by a previous run");
            std::fs::remove_file(path).map_err(create)?;
        }
        let listener = UnixListener::bind(path).map_err(create)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(create)?;
        std::thread::Builder::new()
            .name("dnet-control".into())
            .spawn(move || serve(listener, info))
            .map_err(create)?;
        Ok(ControlServer {
            path: path.to_path_buf(),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl std::ops::Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn peer_uid(s: &UnixStream) -> Option<u32> {
    use std::os::fd::AsRawFd;
    // SAFETY (zeroed): ucred is plain data.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes one ucred; len holds its size.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

fn serve(listener: UnixListener, info: Arc<SwitchInfo>) {
    for conn in listener.incoming() {
        let Ok(mut s) = conn else { continue };
        // One client at a time, each bounded in time and size, so a stuck or hostile client
        // cannot pin the server.
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
        let reply = if peer_uid(&s) != Some(0) {
            Response::Error {
                message: "permission denied: the control socket is root-only".into(),
            }
        } else {
            let mut line = String::new();
            match BufReader::new((&s).take(MAX_REQUEST)).read_line(&mut line) {
                Ok(_) if !line.ends_with('\n') => Response::Error {
                    message: format!(
                        "request too long or not newline-terminated (limit {MAX_REQUEST} bytes)"
                    ),
                },
                Ok(_) => match serde_json::from_str::<Request>(&line) {
                    Ok(req) => info.answer(&req),
                    Err(e) => Response::Error {
                        message: format!("malformed request: {e}"),
                    },
                },
                Err(e) => Response::Error {
                    message: format!("reading request: {e}"),
                },
            }
        };
        let mut out = serde_json::to_string(&reply).unwrap_or_else(|_| "{}".into());
        out.push('\n');
        let _ = s.write_all(out.as_bytes());
    }
}
