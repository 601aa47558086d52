//! Watches the TAP and its bridge from the main thread while the switch runs, so that an
//! interface deleted under a running switch ends in a clear error (TAP) or a warning and an
//! automatic re-attach (bridge), never in a silent black hole or a busy loop.

use super::netdev;
use std::time::{Duration, Instant};

/// How often the links are looked at.
const PERIOD: Duration = Duration::from_millis(500);

/// State of the TAP and bridge as last seen.
#[derive(Debug)]
pub struct LinkWatch {
    tap: String,
    tap_index: Option<u32>,
    bridge: Option<String>,
    /// Index of the bridge the TAP was last attached to (`None` while it is gone).
    bridge_index: Option<u32>,
    /// The TAP was in the bridge at the last look.
    attached: bool,
    next: Instant,
}

impl LinkWatch {
    /// Starts watching `tap` (which must exist now) and, if given, its membership in `bridge`.
    pub fn new(tap: &str, bridge: Option<&str>) -> LinkWatch {
        LinkWatch {
            tap: tap.to_string(),
            tap_index: netdev::index(tap),
            bridge: bridge.map(str::to_string),
            bridge_index: bridge.and_then(netdev::index),
            attached: bridge.is_some(),
            next: Instant::now() + PERIOD,
        }
    }

    /// Looks at the links (at most every 500 ms; cheap otherwise). `Err` with a message naming
    /// the TAP if it is gone or was replaced: the switch cannot carry traffic any more and
    /// should exit. A lost bridge only logs a warning; when a bridge of that name comes back,
    /// the TAP is attached to it again.
    pub fn check(&mut self) -> Result<(), String> {
        if Instant::now() < self.next {
            return Ok(());
        }
        self.check_now()
    }

    /// [`LinkWatch::check`] without waiting for the period (e.g. when a worker stopped, to
    /// say why).
    pub fn check_now(&mut self) -> Result<(), String> {
        self.next = Instant::now() + PERIOD;
        let idx = netdev::index(&self.tap);
        if idx.is_none() || idx != self.tap_index {
            return Err(format!(
                "TAP {} was deleted under the running switch (ip link del?): no local port left, exiting; start dnet-switch again to recreate it",
                self.tap
            ));
        }
        let Some(br) = self.bridge.clone() else {
            return Ok(());
        };
        let br_idx = netdev::index(&br);
        let attached = br_idx.is_some() && netdev::bridge_ports(&br).contains(&self.tap);
        match (self.attached, attached) {
            (true, false) => {
                if br_idx.is_none() {
                    log::warn!(
                        "bridge {br} was deleted: TAP {} survives but this host's containers are cut off from the overlay; it is re-attached when {br} exists again",
                        self.tap
                    );
                } else {
                    log::warn!(
                        "TAP {} was removed from bridge {br}: this host's containers are cut off from the overlay until it is re-attached (ip link set {} master {br})",
                        self.tap, self.tap
                    );
                }
            }
            (false, true) => log::info!("TAP {} is in bridge {br} again", self.tap),
            _ => {}
        }
        self.attached = attached;
        if !attached && br_idx.is_some() && br_idx != self.bridge_index {
            // The bridge was re-created: attach again, as at start.
            match netdev::bridge_add(&br, &self.tap) {
                Ok(()) => {
                    log::info!(
                        "bridge {br} re-created: TAP {} attached to it again",
                        self.tap
                    );
                    self.attached = true;
                }
                Err(e) => log::warn!(
                    "bridge {br} re-created but attaching {} failed: {}",
                    self.tap,
                    crate::error_chain::format(&e)
                ),
            }
        }
        if br_idx.is_some() {
            self.bridge_index = br_idx;
        }
        Ok(())
    }
}

/// Is `e`, from reading a TAP queue, the sign that the TAP is gone for good? (After
/// `ip link del`, reads of a detached queue fail with EBADFD; ENODEV/ENXIO/EIO/EPIPE are
/// treated the same, as no later read can succeed.)
pub fn tap_gone(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADFD | libc::ENODEV | libc::ENXIO | libc::EIO | libc::EPIPE)
    )
}
