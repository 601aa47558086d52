//! The syscall edge: TAP queues, raw GRE sockets and one event-loop thread per worker.
//! Nothing here decides where a frame goes; that is [`crate::switch`].

pub mod batch;
pub mod gre_socket;
pub mod netdev;
pub mod tap;
pub mod worker;

use crate::switch::tunnel::{GreOptions, PeerTable};
use crate::switch::{self, Counters, PortId, PortKind, Switch};
use gre_socket::{GreSocket, OuterOptions};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

/// Everything needed to bring the data path up (already validated by [`crate::config`]).
#[derive(Clone, Debug)]
pub struct DataplaneConfig {
    /// TAP name (may hold a `%d` template).
    pub tap: String,
    /// Bridge to attach the TAP to.
    pub bridge: Option<String>,
    /// TAP MTU.
    pub mtu: u32,
    /// Underlay source address.
    pub local: Ipv4Addr,
    /// Peer underlay addresses; peer `i` is port `i + 1`.
    pub peers: Vec<Ipv4Addr>,
    /// GRE options.
    pub gre: GreOptions,
    /// Outer IPv4 options.
    pub outer: OuterOptions,
    /// Worker threads.
    pub workers: usize,
    /// Switch core settings.
    pub core: switch::Config,
}

/// Errors bringing the data path up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// TAP setup.
    #[error(transparent)]
    Tap(#[from] tap::TapError),
    /// Device configuration.
    #[error(transparent)]
    Netdev(#[from] netdev::NetdevError),
    /// Socket setup.
    #[error(transparent)]
    Socket(#[from] gre_socket::SocketError),
    /// Too many peers.
    #[error("{0} peers configured; at most {max} are supported", max = switch::MAX_PORTS - 1)]
    TooManyPeers(usize),
    /// Thread or poll setup.
    #[error("starting worker threads: {0}")]
    Thread(std::io::Error),
}

/// A running data path. Dropping it without [`Dataplane::stop`] leaves threads running.
pub struct Dataplane {
    /// The TAP's actual name.
    pub tap: String,
    /// Each worker's counters (sum them for totals).
    pub counters: Vec<Arc<Counters>>,
    /// Ports by id: the TAP, then one tunnel per peer.
    pub ports: Vec<PortKind>,
    threads: Vec<JoinHandle<std::io::Result<()>>>,
    wakers: Vec<Arc<mio::Waker>>,
    stop: Arc<AtomicBool>,
}

impl Dataplane {
    /// Creates the TAP (with one queue per worker), configures it, opens the sockets and
    /// starts the workers. On error everything made so far is released (the TAP goes away
    /// with its last queue).
    pub fn start(cfg: &DataplaneConfig) -> Result<Dataplane, StartError> {
        if cfg.peers.len() >= switch::MAX_PORTS {
            return Err(StartError::TooManyPeers(cfg.peers.len()));
        }
        let n = cfg.workers.max(1);
        let (name, queues) = tap::create(&cfg.tap, n)?;
        netdev::set_mtu(&name, cfg.mtu)?;
        if let Some(br) = &cfg.bridge {
            netdev::bridge_add(br, &name)?;
        }
        netdev::set_up(&name)?;

        let mut ports = vec![PortKind::Local];
        let mut peers = PeerTable::default();
        // SAFETY (zeroed): sockaddr_in is plain data; slot 0 (the TAP) is never used.
        let mut dest = vec![unsafe { std::mem::zeroed::<libc::sockaddr_in>() }];
        for (i, p) in cfg.peers.iter().enumerate() {
            let id = (i + 1) as PortId;
            ports.push(PortKind::Tunnel(*p));
            peers.insert(*p, id);
            dest.push(gre_socket::sockaddr(*p));
        }
        let seq: Arc<[AtomicU32]> = (0..ports.len()).map(|_| AtomicU32::new(0)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let chans: Vec<_> = (0..n)
            .map(|_| crossbeam_channel::bounded(worker::SYNC_QUEUE))
            .collect();

        let mut workers = Vec::with_capacity(n);
        let mut wakers = Vec::with_capacity(n);
        let mut counters = Vec::with_capacity(n);
        for (id, q) in queues.into_iter().enumerate() {
            let share = (n > 1).then_some((n as u32, id as u32));
            let sock = GreSocket::open(cfg.local, cfg.outer, share)?;
            let c = Arc::new(Counters::default());
            let mut core = Switch::new(cfg.core.clone(), c.clone());
            for (pid, k) in ports.iter().enumerate() {
                core.set_port(pid as PortId, *k);
            }
            let (poll, waker) = worker::poll_with_waker().map_err(StartError::Thread)?;
            workers.push(worker::Worker {
                id,
                tap: q,
                sock,
                core,
                peers: peers.clone(),
                dest: dest.clone().into_boxed_slice(),
                gre: cfg.gre,
                seq: seq.clone(),
                sync_rx: chans[id].1.clone(),
                sync_tx: (0..n)
                    .filter(|&j| j != id)
                    .map(|j| chans[j].0.clone())
                    .collect(),
                epoch,
                stop: stop.clone(),
                poll,
            });
            wakers.push(waker);
            counters.push(c);
        }
        let mut threads = Vec::with_capacity(n);
        for w in workers {
            let t = std::thread::Builder::new()
                .name(format!("dnet-worker-{}", w.id))
                .spawn(move || w.run())
                .map_err(StartError::Thread)?;
            threads.push(t);
        }
        Ok(Dataplane {
            tap: name,
            counters,
            ports,
            threads,
            wakers,
            stop,
        })
    }

    /// True once any worker has exited (it only does so on a fatal event-loop error).
    pub fn any_worker_exited(&self) -> bool {
        self.threads.iter().any(|t| t.is_finished())
    }

    /// Stops the workers and waits for them; closing their queues removes the TAP.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in &self.wakers {
            let _ = w.wake();
        }
        for (i, t) in self.threads.into_iter().enumerate() {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => log::error!("worker {i} failed: {e}"),
                Err(_) => log::error!("worker {i} panicked"),
            }
        }
    }
}
