//! Spanning-tree BPDUs (IEEE 802.1D-2004 §9): configuration, topology-change notification
//! and rapid (RST) BPDUs, carried in 802.3/LLC frames to `01:80:c2:00:00:00`.
//!
//! Frame layout: destination, source, an 802.3 *length* (not an ethertype), LLC
//! `42 42 03`, then the BPDU:
//!
//! ```text
//!  0      protocol id (0x0000)         2 version (0 STP, 2 RSTP)   3 type (0x00, 0x80, 0x02)
//!  4 flags   5 root id (8)   13 root path cost (4)   17 bridge id (8)   25 port id (2)
//! 27 message age   29 max age   31 hello time   33 forward delay (each 1/256 s)
//! 35 version 1 length (RST only, 0)
//! ```
//!
//! [`Repr::parse`] accepts all three types (a TCN carries only the first four bytes);
//! [`Repr::emit`] writes RST BPDUs, which 802.1D bridges that speak only STP also accept as
//! configuration BPDUs.

use super::WireError;
use std::fmt;

/// Destination of every BPDU (the Bridge Group Address; bridges never forward it).
pub const DST: [u8; 6] = [0x01, 0x80, 0xc2, 0x00, 0x00, 0x00];
/// LLC header: DSAP 0x42, SSAP 0x42, UI.
pub const LLC: [u8; 3] = [0x42, 0x42, 0x03];
/// Bytes of an RST BPDU (after the LLC header).
pub const RST_LEN: usize = 36;
/// Bytes of a configuration BPDU.
pub const CONFIG_LEN: usize = 35;
/// Bytes of a topology change notification BPDU.
pub const TCN_LEN: usize = 4;
/// Length of an emitted frame: 14 + 3 + 36, padded to the Ethernet minimum.
pub const FRAME_LEN: usize = 60;

/// Flag bits of the BPDU flags octet (§9.3.3).
pub mod flags {
    /// Topology change.
    pub const TC: u8 = 0x01;
    /// Proposal (RST).
    pub const PROPOSAL: u8 = 0x02;
    /// Port role, two bits (RST); see [`super::Role`].
    pub const ROLE_MASK: u8 = 0x0c;
    /// Learning (RST).
    pub const LEARNING: u8 = 0x10;
    /// Forwarding (RST).
    pub const FORWARDING: u8 = 0x20;
    /// Agreement (RST).
    pub const AGREEMENT: u8 = 0x40;
    /// Topology change acknowledgment.
    pub const TC_ACK: u8 = 0x80;
}

/// BPDU type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// 802.1D configuration BPDU (type 0x00).
    Config,
    /// Topology change notification (type 0x80).
    Tcn,
    /// Rapid spanning tree BPDU (type 0x02, version 2).
    Rst,
}

/// Port role as encoded in an RST BPDU's flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// 0: unknown (also every configuration BPDU, which only designated ports send).
    Unknown,
    /// 1: alternate or backup.
    AlternateOrBackup,
    /// 2: root.
    Root,
    /// 3: designated.
    Designated,
}

impl Role {
    fn from_flags(f: u8) -> Role {
        match (f & flags::ROLE_MASK) >> 2 {
            1 => Role::AlternateOrBackup,
            2 => Role::Root,
            3 => Role::Designated,
            _ => Role::Unknown,
        }
    }

    /// The role's bits in the flags octet.
    pub fn bits(self) -> u8 {
        (match self {
            Role::Unknown => 0,
            Role::AlternateOrBackup => 1,
            Role::Root => 2,
            Role::Designated => 3,
        }) << 2
    }
}

/// A bridge identifier: 16-bit priority (in steps of 4096 plus a system id extension) then the
/// bridge's MAC address. Lower is better; the numeric order is the protocol's order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BridgeId(pub u64);

impl BridgeId {
    /// From a priority and a MAC address.
    pub fn new(priority: u16, mac: [u8; 6]) -> BridgeId {
        let mut b = [0u8; 8];
        b[0..2].copy_from_slice(&priority.to_be_bytes());
        b[2..8].copy_from_slice(&mac);
        BridgeId(u64::from_be_bytes(b))
    }

    /// The priority part.
    pub fn priority(self) -> u16 {
        (self.0 >> 48) as u16
    }

    /// The MAC address part.
    pub fn mac(self) -> [u8; 6] {
        let b = self.0.to_be_bytes();
        [b[2], b[3], b[4], b[5], b[6], b[7]]
    }
}

impl fmt::Display for BridgeId {
    /// `8000.02:64:6e:00:00:01`, the form `brctl`/OVS print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.mac();
        write!(
            f,
            "{:04x}.{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            self.priority(),
            m[0],
            m[1],
            m[2],
            m[3],
            m[4],
            m[5]
        )
    }
}

/// A BPDU's content. Times are in the wire unit, 1/256 s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    /// Type.
    pub kind: Kind,
    /// Flags octet (see [`flags`]); 0 for a TCN.
    pub flags: u8,
    /// Root bridge.
    pub root: BridgeId,
    /// Cost from the sender to the root.
    pub root_cost: u32,
    /// Sending bridge.
    pub bridge: BridgeId,
    /// Sending port (4-bit priority, 12-bit number).
    pub port: u16,
    /// Age of the root's information.
    pub message_age: u16,
    /// Information older than this is discarded.
    pub max_age: u16,
    /// Interval between BPDUs.
    pub hello: u16,
    /// Time spent in each of discarding → learning → forwarding without an agreement.
    pub forward_delay: u16,
}

/// Converts milliseconds to the wire's 1/256 s (saturating).
pub fn ms_to_wire(ms: u64) -> u16 {
    u16::try_from(ms * 256 / 1000).unwrap_or(u16::MAX)
}

/// Converts the wire's 1/256 s to milliseconds.
pub fn wire_to_ms(t: u16) -> u64 {
    u64::from(t) * 1000 / 256
}

/// True if `frame` is addressed to the Bridge Group Address (it may still be malformed).
#[inline]
pub fn is_bpdu(frame: &[u8]) -> bool {
    frame.len() >= 6 && frame[..6] == DST
}

impl Repr {
    /// The role the sender gave its port (RST; `Unknown` for other types).
    pub fn role(&self) -> Role {
        match self.kind {
            Kind::Rst => Role::from_flags(self.flags),
            _ => Role::Unknown,
        }
    }

    /// Whether `bit` (one of [`flags`]) is set.
    pub fn has(&self, bit: u8) -> bool {
        self.flags & bit != 0
    }

    /// Reads the BPDU in an Ethernet `frame`. Never panics; rejects anything not addressed to
    /// the bridge group address, not 802.3/LLC 42 42 03, with a protocol id other than 0, an
    /// unknown type, or shorter than its type requires. Trailing padding is ignored.
    pub fn parse(frame: &[u8]) -> Result<Repr, WireError> {
        if frame.len() < 14 + 3 + TCN_LEN || !is_bpdu(frame) {
            return Err(WireError::Truncated);
        }
        let len = usize::from(u16::from_be_bytes([frame[12], frame[13]]));
        // An ethertype (≥ 0x600) is not 802.3; a length must cover what it claims.
        if !(3 + TCN_LEN..=1500).contains(&len) || frame.len() < 14 + len {
            return Err(WireError::Bpdu);
        }
        if frame[14..17] != LLC {
            return Err(WireError::Bpdu);
        }
        let b = &frame[17..14 + len];
        if b[0] != 0 || b[1] != 0 {
            return Err(WireError::Bpdu);
        }
        let kind = match b[3] {
            0x00 => Kind::Config,
            0x80 => Kind::Tcn,
            0x02 if b[2] >= 2 => Kind::Rst,
            _ => return Err(WireError::Bpdu),
        };
        if kind == Kind::Tcn {
            return Ok(Repr {
                kind,
                flags: 0,
                root: BridgeId(0),
                root_cost: 0,
                bridge: BridgeId(0),
                port: 0,
                message_age: 0,
                max_age: 0,
                hello: 0,
                forward_delay: 0,
            });
        }
        let need = if kind == Kind::Rst {
            RST_LEN
        } else {
            CONFIG_LEN
        };
        if b.len() < need {
            return Err(WireError::Truncated);
        }
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let u64_at = |i: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[i..i + 8]);
            u64::from_be_bytes(x)
        };
        Ok(Repr {
            kind,
            flags: b[4],
            root: BridgeId(u64_at(5)),
            root_cost: u32::from_be_bytes([b[13], b[14], b[15], b[16]]),
            bridge: BridgeId(u64_at(17)),
            port: u16_at(25),
            message_age: u16_at(27),
            max_age: u16_at(29),
            hello: u16_at(31),
            forward_delay: u16_at(33),
        })
    }

    /// Writes this BPDU as an RST BPDU in a frame from `src` (the kind is ignored: dnet only
    /// sends RST BPDUs).
    pub fn emit(&self, src: [u8; 6]) -> [u8; FRAME_LEN] {
        let mut f = [0u8; FRAME_LEN];
        f[0..6].copy_from_slice(&DST);
        f[6..12].copy_from_slice(&src);
        f[12..14].copy_from_slice(&((3 + RST_LEN) as u16).to_be_bytes());
        f[14..17].copy_from_slice(&LLC);
        let b = &mut f[17..17 + RST_LEN];
        b[2] = 2; // version: RSTP
        b[3] = 0x02;
        b[4] = self.flags;
        b[5..13].copy_from_slice(&self.root.0.to_be_bytes());
        b[13..17].copy_from_slice(&self.root_cost.to_be_bytes());
        b[17..25].copy_from_slice(&self.bridge.0.to_be_bytes());
        b[25..27].copy_from_slice(&self.port.to_be_bytes());
        b[27..29].copy_from_slice(&self.message_age.to_be_bytes());
        b[29..31].copy_from_slice(&self.max_age.to_be_bytes());
        b[31..33].copy_from_slice(&self.hello.to_be_bytes());
        b[33..35].copy_from_slice(&self.forward_delay.to_be_bytes());
        // b[35]: version 1 length = 0.
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// A configuration BPDU as a Linux bridge (802.1D, priority 0x8000) sends it: root and
    /// bridge 8000.52:54:00:12:34:56, cost 0, port 0x8001, max age 20 s, hello 2 s, forward
    /// delay 15 s.
    const LINUX_CONFIG: &str = "0180c2000000 525400123456 0026 424203
        0000 00 00 00 8000525400123456 00000000 8000525400123456 8001
        0000 1400 0200 0f00 0000000000000000";

    #[test]
    fn parses_an_8021d_configuration_bpdu() {
        let f = hex(LINUX_CONFIG);
        let r = Repr::parse(&f).unwrap();
        assert_eq!(r.kind, Kind::Config);
        assert_eq!(
            r.root,
            BridgeId::new(0x8000, [0x52, 0x54, 0, 0x12, 0x34, 0x56])
        );
        assert_eq!(r.bridge, r.root);
        assert_eq!(r.root_cost, 0);
        assert_eq!(r.port, 0x8001);
        assert_eq!(wire_to_ms(r.max_age), 20_000);
        assert_eq!(wire_to_ms(r.hello), 2_000);
        assert_eq!(wire_to_ms(r.forward_delay), 15_000);
        assert_eq!(r.role(), Role::Unknown);
        assert_eq!(r.root.to_string(), "8000.52:54:00:12:34:56");
    }

    #[test]
    fn rst_round_trips_with_every_field() {
        let r = Repr {
            kind: Kind::Rst,
            flags: flags::PROPOSAL | Role::Designated.bits() | flags::TC,
            root: BridgeId::new(0x1000, [2, 0, 0, 0, 0, 1]),
            root_cost: 20_000,
            bridge: BridgeId::new(0x8000, [2, 0, 0, 0, 0, 2]),
            port: 0x8003,
            message_age: 256,
            max_age: ms_to_wire(20_000),
            hello: ms_to_wire(2_000),
            forward_delay: ms_to_wire(15_000),
        };
        let f = r.emit([2, 0, 0, 0, 0, 2]);
        assert_eq!(&f[12..17], &[0, 39, 0x42, 0x42, 0x03]);
        assert_eq!(f[17 + 2], 2, "version");
        assert_eq!(f[17 + 3], 2, "type");
        let p = Repr::parse(&f).unwrap();
        assert_eq!(p, r);
        assert_eq!(p.role(), Role::Designated);
        assert!(p.has(flags::PROPOSAL) && p.has(flags::TC) && !p.has(flags::AGREEMENT));
    }

    #[test]
    fn parses_a_tcn() {
        let f = hex("0180c2000000 525400123456 0007 424203 0000 00 80 000000000000000000000000000000000000000000000000000000");
        assert_eq!(Repr::parse(&f).unwrap().kind, Kind::Tcn);
    }

    #[test]
    fn rejects_what_is_not_a_bpdu() {
        let good = hex(LINUX_CONFIG);
        let mut other_dst = good.clone();
        other_dst[5] = 1;
        assert!(Repr::parse(&other_dst).is_err());
        let mut ethertype = good.clone();
        ethertype[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(Repr::parse(&ethertype), Err(WireError::Bpdu));
        let mut llc = good.clone();
        llc[14] = 0xaa;
        assert_eq!(Repr::parse(&llc), Err(WireError::Bpdu));
        let mut proto = good.clone();
        proto[17] = 1;
        assert_eq!(Repr::parse(&proto), Err(WireError::Bpdu));
        let mut kind = good.clone();
        kind[20] = 0x55;
        assert_eq!(Repr::parse(&kind), Err(WireError::Bpdu));
        // A length longer than the frame, and a config BPDU cut short.
        let mut long = good.clone();
        long[13] = 200;
        assert_eq!(Repr::parse(&long), Err(WireError::Bpdu));
        let mut short = good[..14 + 3 + 20].to_vec();
        short[12..14].copy_from_slice(&23u16.to_be_bytes());
        assert_eq!(Repr::parse(&short), Err(WireError::Truncated));
        for n in 0..good.len() {
            let _ = Repr::parse(&good[..n]);
        }
    }

    #[test]
    fn time_units_convert_both_ways() {
        assert_eq!(ms_to_wire(2_000), 512);
        assert_eq!(wire_to_ms(512), 2_000);
        assert_eq!(ms_to_wire(u64::MAX / 1000), u16::MAX);
    }
}
