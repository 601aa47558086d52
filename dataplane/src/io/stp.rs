//! The I/O half of the spanning tree (the machine is [`crate::switch::stp`]): handing it the
//! BPDUs that arrive and sending the ones it queues.

use super::batch::TxBatch;
use super::worker::Worker;
use crate::switch::{DropReason, Event, Millis, PortId};
use crate::wire::bpdu;

/// How often the leader runs the tree's timers (ms).
pub const TICK_MS: Millis = 100;

impl Worker {
    /// A BPDU arrived on tunnel `port`: run the tree and send what it answers.
    pub(super) fn stp_rx(&mut self, now: Millis, port: PortId, frame: &[u8], tx: &mut TxBatch) {
        let Some(sh) = self.core.stp().cloned() else {
            return;
        };
        self.core.counters().event(Event::BpduRx);
        if let Some(c) = self.core.counters().ports.get(usize::from(port)) {
            c.rx_control.add(1);
        }
        let mut out = Vec::new();
        let ok = sh.with(|s| {
            let ok = s.receive(now, port, frame);
            s.drain(|p, f| out.push((p, to_frame(f))));
            ok
        });
        if !ok {
            self.core.counters().dropped(DropReason::BadBpdu);
        }
        self.send_control(tx, &out);
        self.core.stp_sync();
    }

    /// The tree's timers (leader only, every [`TICK_MS`]).
    pub(super) fn stp_tick(&mut self, now: Millis, tx: &mut TxBatch) {
        let Some(sh) = self.core.stp().cloned() else {
            return;
        };
        let mut out = Vec::new();
        sh.with(|s| {
            s.tick(now);
            s.drain(|p, f| out.push((p, to_frame(f))));
        });
        self.send_control(tx, &out);
        self.core.stp_sync();
    }

    /// Sends small control frames (BPDUs, keepalives) to tunnels right away; they are not
    /// counted as port traffic. Rare (a few a second), so the list may allocate.
    pub(super) fn send_control(
        &self,
        tx: &mut TxBatch,
        frames: &[(PortId, [u8; bpdu::FRAME_LEN])],
    ) {
        if frames.is_empty() {
            return;
        }
        if !tx.is_empty() {
            self.flush_quiet(tx);
        }
        for (p, f) in frames {
            if self.core.port(*p).is_none() {
                continue;
            }
            if tx.is_full() {
                self.flush_quiet(tx);
            }
            let repr = self.gre.repr(0);
            // SAFETY: `frames` and `dest` outlive the flush below.
            let fd = self.send_fd(f);
            unsafe { tx.push_parts(fd, &self.dest[usize::from(*p)], &repr, &[], f, *p) };
            if bpdu::is_bpdu(f) {
                self.core.counters().event(Event::BpduTx);
            }
        }
        self.flush_quiet(tx);
    }
}

fn to_frame(f: &[u8]) -> [u8; bpdu::FRAME_LEN] {
    let mut b = [0u8; bpdu::FRAME_LEN];
    let n = f.len().min(bpdu::FRAME_LEN);
    b[..n].copy_from_slice(&f[..n]);
    b
}
