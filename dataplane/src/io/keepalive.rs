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
        let mut due: Vec<(PortId, [u8; HELLO_LEN])> = Vec::new();
        self.core.liveness_tick(now, |p, f| {
            let mut hello = [0u8; HELLO_LEN];
            hello.copy_from_slice(f);
            due.push((p, hello));
        });
        self.send_control(tx, &due);
    }

    pub(super) fn flush_quiet(&self, tx: &mut TxBatch) {
        tx.flush(|_, _, _| {});
    }
}
