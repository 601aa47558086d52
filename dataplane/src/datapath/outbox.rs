//! Frames the core makes itself — keepalive hellos, BPDUs, ICMP errors for path MTU
//! discovery — waiting for the I/O edge to take them with `Core::poll_transmit`. They are
//! few (a handful per second, or one per oversize frame), so they are copied.

use crate::switch::NetId;
use crate::switch::PortId;

/// Where a queued frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// Out of the TAP.
    Tap,
    /// Into a tunnel; `fragmentable`: with outer DF off.
    Tunnel {
        /// Outer DF off.
        fragmentable: bool,
    },
    /// A handshake message of the tunnel encryption, as the UDP payload to a peer host (no
    /// GRE header); `port` then names the crypto peer, not a switch port.
    Handshake,
}

/// One queued frame, as [`Outbox::pop`] returns it (its bytes are in the caller's buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Queued {
    /// The network.
    pub net: NetId,
    /// The port within it.
    pub port: PortId,
    /// Where it goes.
    pub dest: Dest,
    /// Counted as port traffic when sent (ICMP errors are; hellos and BPDUs are control).
    pub counted: bool,
    /// Its length.
    pub len: usize,
}

/// Longest frame queued: an ICMPv6 Packet Too Big (the longest frame the core makes).
pub const MAX_FRAME: usize = crate::wire::icmp::MAX_REPLY;

/// Most bytes queued at once: two small frames for every possible port plus some ICMP errors.
/// Beyond it new frames are refused (and counted by the caller).
pub const LIMIT: usize = 256 * 1024;

/// A FIFO of owned frames. Its storage grows once to what is needed and is then reused.
#[derive(Debug, Default)]
pub struct Outbox {
    meta: Vec<(Queued, usize)>,
    bytes: Vec<u8>,
    next: usize,
}

impl Outbox {
    /// Queues a copy of `frame`; false (nothing queued) when the outbox is full or the frame
    /// longer than [`MAX_FRAME`].
    pub fn push(
        &mut self,
        net: NetId,
        port: PortId,
        dest: Dest,
        counted: bool,
        frame: &[u8],
    ) -> bool {
        if frame.len() > MAX_FRAME {
            return false;
        }
        if self.next == self.meta.len() {
            self.meta.clear();
            self.bytes.clear();
            self.next = 0;
        }
        if self.bytes.len() + frame.len() > LIMIT {
            return false;
        }
        let q = Queued {
            net,
            port,
            dest,
            counted,
            len: frame.len(),
        };
        self.meta.push((q, self.bytes.len()));
        self.bytes.extend_from_slice(frame);
        true
    }

    /// The oldest frame, copied into `buf` (which should hold [`MAX_FRAME`] bytes; a
    /// longer frame is cut there).
    pub fn pop(&mut self, buf: &mut [u8]) -> Option<Queued> {
        let (mut q, at) = *self.meta.get(self.next)?;
        self.next += 1;
        let n = q.len.min(buf.len());
        buf[..n].copy_from_slice(&self.bytes[at..at + n]);
        q.len = n;
        Some(q)
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.next == self.meta.len()
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.meta.len() - self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_out_in_order_and_storage_is_reused() {
        let mut o = Outbox::default();
        let mut buf = [0u8; 16];
        for round in 0..3u8 {
            assert!(o.push(0, 1, Dest::Tap, true, &[round, 1]));
            assert!(o.push(
                0,
                2,
                Dest::Tunnel { fragmentable: true },
                false,
                &[round, 2, 2]
            ));
            assert_eq!(o.len(), 2);
            let a = o.pop(&mut buf).unwrap();
            assert_eq!(
                (a.port, a.dest, a.counted, &buf[..a.len]),
                (1, Dest::Tap, true, &[round, 1][..])
            );
            let b = o.pop(&mut buf).unwrap();
            assert_eq!(&buf[..b.len], &[round, 2, 2]);
            assert_eq!(b.dest, Dest::Tunnel { fragmentable: true });
            assert!(o.pop(&mut buf).is_none());
            assert!(o.is_empty());
        }
        assert!(o.bytes.capacity() >= 3);
    }

    #[test]
    fn a_full_outbox_refuses() {
        let mut o = Outbox::default();
        let big = vec![0u8; MAX_FRAME];
        let fit = LIMIT / MAX_FRAME;
        for _ in 0..fit {
            assert!(o.push(0, 1, Dest::Tap, false, &big));
        }
        assert!(!o.push(0, 1, Dest::Tap, false, &big));
        assert!(!o.push(0, 1, Dest::Tap, false, &vec![0u8; MAX_FRAME + 1]));
        let mut buf = vec![0u8; MAX_FRAME];
        assert!(o.pop(&mut buf).is_some());
        // Space comes back once everything queued has been taken.
        assert!(!o.push(0, 1, Dest::Tap, false, &big));
        while o.pop(&mut buf).is_some() {}
        assert!(o.push(0, 1, Dest::Tap, false, &big));
    }
}
