//! Path MTU per tunnel and what to do with a frame that does not fit it.
//!
//! The I/O edge learns each peer's path MTU from the kernel (after `EMSGSIZE`, and
//! periodically) and hands it in with [`super::Switch::set_path_mtu`]; the core keeps it per
//! port (never below [`MIN_PMTU`]) and decides, per frame about to enter a tunnel:
//!
//! | frame | fits | does not fit |
//! | --- | --- | --- |
//! | broadcast / multicast | send | drop, counted `too_big_group` |
//! | IPv4 with DF, IPv6 | send | ICMP frag-needed / Packet Too Big back to the sender, counted `too_big_icmp` |
//! | IPv4 without DF, anything else | send | send with outer DF off (the kernel fragments the outer packet), counted `fragmented` |
//!
//! TCP super-frames from the TAP are segmented to fit instead (see
//! [`PathMtu::max_frame`]), and `--clamp-mss` rewrites the MSS option of SYNs
//! ([`clamp_mss`]). Outer DF off for the whole switch (`--mtu` above what fits) turns the check
//! off: everything is fragmented by the kernel.

use super::{Counters, DropReason, Event, PortId};
use crate::offload::tcp_layout;
use crate::wire::ethernet::{self, Frame};
use crate::wire::icmp::{classify, Inner};
use crate::wire::{ipv4, ipv6, tcp};

/// Lowest path MTU believed (RFC 791's minimum datagram every host must accept).
pub const MIN_PMTU: u32 = 576;

/// What to do with a frame for a tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// It fits: send as usual.
    Send,
    /// Too big and may be fragmented: send with outer DF off.
    Fragment,
    /// Too big and must not be fragmented: answer the sender with an ICMP error.
    Icmp,
    /// Too big broadcast/multicast: drop.
    Drop,
}

/// Path MTUs of the tunnels (outer IPv4 MTU toward each peer).
#[derive(Clone, Debug)]
pub struct PathMtu {
    mtu: Vec<u32>,
    overhead: usize,
    df: bool,
}

impl PathMtu {
    /// `overhead`: outer IPv4 + GRE header bytes; `df`: outer DF is set (else nothing is
    /// checked: the kernel fragments).
    pub fn new(overhead: usize, df: bool) -> PathMtu {
        PathMtu {
            mtu: Vec::new(),
            overhead,
            df,
        }
    }

    /// Records `mtu` for `port` (raised to [`MIN_PMTU`]); returns the previous value when it
    /// changed (`Some(0)` if none was known).
    pub fn set(&mut self, port: PortId, mtu: u32) -> Option<u32> {
        let i = usize::from(port);
        if self.mtu.len() <= i {
            self.mtu.resize(i + 1, 0);
        }
        let mtu = mtu.max(MIN_PMTU);
        let old = std::mem::replace(&mut self.mtu[i], mtu);
        (old != mtu).then_some(old)
    }

    /// Forgets `port`'s path MTU.
    pub fn forget(&mut self, port: PortId) {
        if let Some(m) = self.mtu.get_mut(usize::from(port)) {
            *m = 0;
        }
    }

    /// The path MTU of `port`, if known.
    pub fn get(&self, port: PortId) -> Option<u32> {
        self.mtu.get(usize::from(port)).copied().filter(|m| *m != 0)
    }

    /// The longest inner Ethernet frame that fits `port`'s path with DF (`usize::MAX` when
    /// unknown or DF is off).
    #[inline]
    pub fn max_frame(&self, port: PortId) -> usize {
        match self.get(port) {
            Some(m) if self.df => (m as usize).saturating_sub(self.overhead),
            _ => usize::MAX,
        }
    }

    /// The longest inner frame that fits the narrowest known tunnel path, DF or not (for MSS
    /// clamping; `usize::MAX` if none is known).
    pub fn min_max_frame(&self) -> usize {
        self.mtu
            .iter()
            .filter(|m| **m != 0)
            .map(|m| (*m as usize).saturating_sub(self.overhead))
            .min()
            .unwrap_or(usize::MAX)
    }
}

/// Decides for `frame` whose on-wire inner length is `wire_len` (its own length, or a segment's
/// for a super-frame) when at most `max_frame` bytes fit.
pub fn decide(frame: &[u8], wire_len: usize, max_frame: usize) -> Fit {
    if wire_len <= max_frame {
        return Fit::Send;
    }
    if Frame::new_checked(frame).is_ok_and(|e| e.dst().is_multicast()) {
        return Fit::Drop;
    }
    match classify(frame) {
        Inner::V4 { df: true } | Inner::V6 => Fit::Icmp,
        Inner::V4 { df: false } | Inner::Other => Fit::Fragment,
    }
}

/// The largest TCP MSS for a frame shaped like `frame` that fits in `max_frame` bytes:
/// `max_frame` less the Ethernet, IP (20 or 40) and basic TCP (20) headers.
pub fn mss_for(frame: &[u8], max_frame: usize, v6: bool) -> usize {
    let eth = Frame::new_checked(frame).map_or(ethernet::HEADER_LEN, |e| e.header_len());
    let ip = if v6 {
        ipv6::HEADER_LEN
    } else {
        ipv4::MIN_HEADER_LEN
    };
    max_frame.saturating_sub(eth + ip + tcp::HEADER_LEN)
}

/// If `frame` is a TCP SYN (IPv4 or IPv6) whose MSS option exceeds what fits in `max_frame`,
/// lowers it and fixes the TCP checksum incrementally (RFC 1624). Returns the new MSS when it
/// rewrote one.
#[inline]
pub fn clamp_mss(frame: &mut [u8], max_frame: usize) -> Option<u16> {
    let lay = tcp_layout(frame)?;
    if lay.tcp(frame).flags() & tcp::flags::SYN == 0 {
        return None;
    }
    clamp_syn(frame, max_frame, lay.v6, lay.l4)
}

/// The rare half of [`clamp_mss`], out of line: the SYN's option walk and rewrite.
#[inline(never)]
fn clamp_syn(frame: &mut [u8], max_frame: usize, v6: bool, l4: usize) -> Option<u16> {
    let limit = mss_for(frame, max_frame, v6).min(usize::from(u16::MAX)) as u16;
    // tcp_layout checked this header (check_len), so the view's accessors are in bounds.
    tcp::Packet::new_unchecked(&mut frame[l4..]).clamp_mss(limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::testframes::{checksums_ok, fix_checksums, tcp4, tcp6};

    #[test]
    fn path_mtu_is_never_below_576_and_reports_changes() {
        let mut p = PathMtu::new(24, true);
        assert_eq!(p.max_frame(1), usize::MAX);
        assert_eq!(p.set(1, 1500), Some(0));
        assert_eq!(p.set(1, 1500), None);
        assert_eq!(p.max_frame(1), 1476);
        assert_eq!(p.set(1, 300), Some(1500));
        assert_eq!(p.get(1), Some(576));
        assert_eq!(p.max_frame(1), 552);
        p.forget(1);
        assert_eq!(p.get(1), None);
        let mut off = PathMtu::new(24, false);
        off.set(1, 1400);
        assert_eq!(off.max_frame(1), usize::MAX, "DF off: never checked");
    }

    #[test]
    fn decision_per_kind() {
        let df = tcp4(1, 0x10, &[0; 1400]); // tcp4 sets DF
        assert_eq!(decide(&df, df.len(), 2000), Fit::Send);
        assert_eq!(decide(&df, df.len(), 1376), Fit::Icmp);
        let mut nodf = df.clone();
        nodf[20] = 0;
        assert_eq!(decide(&nodf, nodf.len(), 1376), Fit::Fragment);
        let v6 = tcp6(1, 0x10, &[0; 1400]);
        assert_eq!(decide(&v6, v6.len(), 1376), Fit::Icmp);
        let mut bc = df.clone();
        bc[..6].fill(0xff);
        assert_eq!(decide(&bc, bc.len(), 1376), Fit::Drop);
        let mut other = df.clone();
        other[12..14].copy_from_slice(&[0x88, 0xb5]);
        assert_eq!(decide(&other, other.len(), 1376), Fit::Fragment);
        // A super-frame's segments are what counts.
        assert_eq!(decide(&df, 1376, 1376), Fit::Send);
    }

    fn syn_with_mss(mss: u16, v6: bool) -> Vec<u8> {
        let mut f = if v6 {
            tcp6(1, 0x02, &[])
        } else {
            tcp4(1, 0x02, &[])
        };
        if !v6 {
            // tcp4 carries a timestamp option (NOP NOP TS); make the first one MSS + NOP NOP..
            let l4 = 34;
            f[l4 + 20..l4 + 24].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
            f[l4 + 24..l4 + 32].copy_from_slice(&[1, 1, 1, 1, 1, 1, 1, 1]);
            fix_checksums(&mut f);
        }
        f
    }

    #[test]
    fn clamps_syn_mss_with_a_valid_checksum() {
        let mut f = syn_with_mss(1422, false);
        assert!(checksums_ok(&f));
        assert_eq!(clamp_mss(&mut f, 1376), Some(1376 - 54));
        assert_eq!(u16::from_be_bytes([f[56], f[57]]), 1322);
        assert!(checksums_ok(&f), "incremental checksum");
        // Already small enough, or not a SYN, or no MSS option: untouched.
        assert_eq!(clamp_mss(&mut f, 1376), None);
        let mut ack = syn_with_mss(1422, false);
        ack[34 + 13] = 0x10;
        assert_eq!(clamp_mss(&mut ack, 1000), None);
        let mut v6 = syn_with_mss(0, true);
        assert_eq!(clamp_mss(&mut v6, 1000), None);
    }

    #[test]
    fn clamps_an_mss_option_at_an_odd_offset() {
        // NOP, MSS 1422, then NOPs: the MSS value straddles two 16-bit checksum words.
        let mut f = tcp4(1, 0x02, &[]);
        f[34 + 20..34 + 32].copy_from_slice(&[1, 2, 4, 0x05, 0x8e, 1, 1, 1, 1, 1, 1, 1]);
        fix_checksums(&mut f);
        assert_eq!(clamp_mss(&mut f, 1376), Some(1322));
        assert_eq!(&f[34 + 21..34 + 25], &[2, 4, 0x05, 0x2a]);
        assert!(checksums_ok(&f), "incremental checksum across two words");
    }
}

/// What the I/O edge does with a frame for a tunnel (see [`PathMtu::fit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send as usual.
    Send,
    /// Send with outer DF off.
    Fragment,
    /// Do not send; write the ICMP error now in the reply buffer (this many bytes) back out of
    /// the ingress port.
    Reply(usize),
    /// Do not send.
    Drop,
}

impl PathMtu {
    /// Decides for `frame` going into tunnel `port` as inner frames of `wire_len` bytes, and
    /// counts the outcome in `counters`. For [`Outcome::Reply`], the ICMP error addressed to
    /// the sender is in `reply` (at least [`crate::wire::icmp::MAX_REPLY`] bytes). A frame
    /// that ought to be answered but cannot be (e.g. it is an ICMP error itself) is
    /// fragmented instead, so nothing is lost silently.
    pub fn fit(
        &self,
        port: PortId,
        frame: &[u8],
        wire_len: usize,
        reply: &mut [u8],
        counters: &Counters,
    ) -> Outcome {
        let max = self.max_frame(port);
        match decide(frame, wire_len, max) {
            Fit::Send => Outcome::Send,
            Fit::Drop => {
                counters.dropped(DropReason::TooBigGroup);
                Outcome::Drop
            }
            Fit::Icmp => {
                let hl = Frame::new_checked(frame).map_or(ethernet::HEADER_LEN, |e| e.header_len());
                let mtu = max.saturating_sub(hl).min(usize::from(u16::MAX)) as u16;
                match crate::wire::icmp::too_big(frame, mtu, reply) {
                    Some(n) => {
                        counters.dropped(DropReason::TooBigIcmp);
                        Outcome::Reply(n)
                    }
                    None => {
                        counters.event(Event::Fragmented);
                        Outcome::Fragment
                    }
                }
            }
            Fit::Fragment => {
                counters.event(Event::Fragmented);
                Outcome::Fragment
            }
        }
    }
}
