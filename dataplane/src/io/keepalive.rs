//! The I/O half of peer liveness (the state machine is in [`crate::switch::liveness`]):
//! sending the hellos the core asks for.

use super::batch::TxBatch;
use super::worker::Worker;
use crate::switch::liveness::HELLO_LEN;
use crate::switch::{Millis, PortId};

impl Worker {
    /// Runs the core's liveness tick and sends the hellos it asks for (not counted as port
    /// traffic).
    pub(super) fn keepalive_tick(&mut self, now: Millis, tx: &mut TxBatch) {
        let mut hello = [0u8; HELLO_LEN];
        let mut due: Vec<PortId> = Vec::new();
        self.core.liveness_tick(now, |p, f| {
            hello.copy_from_slice(f);
            due.push(p);
        });
        if due.is_empty() {
            return;
        }
        if !tx.is_empty() {
            self.flush_quiet(tx);
        }
        for p in due {
            if tx.is_full() {
                self.flush_quiet(tx);
            }
            let repr = self.gre.repr(0);
            // SAFETY: `hello` and `dest` outlive the flush below.
            unsafe { tx.push_parts(&self.dest[usize::from(p)], &repr, &[], &hello, p) };
        }
        self.flush_quiet(tx);
    }

    fn flush_quiet(&self, tx: &mut TxBatch) {
        tx.flush(self.sock.as_raw_fd(), |_, _, _| {});
    }
}

use std::os::fd::AsRawFd;
