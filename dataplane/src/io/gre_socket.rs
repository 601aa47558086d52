//! Raw IPv4 sockets for protocol 47 (GRE): the kernel builds the outer IPv4 header on send
//! (TTL, TOS and DF via socket options) and hands us whole IPv4 packets on receive.
//!
//! With `--encap udp` the socket is a UDP socket on the GRE-in-UDP port instead (RFC 8086):
//! the datagram payload is the GRE header and frame, the sender is the datagram's source, and
//! `UDP_GRO` lets the kernel hand over several datagrams of one flow in one read. The workers'
//! UDP sockets share the port with `SO_REUSEPORT`; the kernel spreads peers over them.
//!
//! Every raw GRE socket receives a copy of every GRE packet. With several workers each socket
//! gets a classic BPF filter that keeps only its share, by a hash of the inner MAC pair, so
//! each packet is handled by exactly one worker and each conversation stays in order.

use super::sys::sockopt;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, BorrowedFd};

/// Socket setup errors, naming the step.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Raw sockets need CAP_NET_RAW.
    #[error("opening a raw GRE socket needs root or CAP_NET_RAW: run dnet-switch as root")]
    NotPermitted,
    /// `--local` is not an address of this host.
    #[error("cannot bind the GRE socket to {addr} (is --local {addr} an address of this host?)")]
    Bind {
        /// Address.
        addr: Ipv4Addr,
        /// errno.
        source: io::Error,
    },
    /// Another step failed.
    #[error("GRE socket: {op}")]
    Option {
        /// Step.
        op: &'static str,
        /// errno.
        source: io::Error,
    },
}

/// Options of the outer IPv4 header.
#[derive(Clone, Copy, Debug)]
pub struct OuterOptions {
    /// Outer TTL.
    pub ttl: u8,
    /// Outer TOS byte.
    pub tos: u8,
    /// Set DF on outer packets (else the kernel fragments oversize ones).
    pub df: bool,
}

fn opt(op: &'static str) -> impl FnOnce(io::Error) -> SocketError {
    move |source| SocketError::Option { op, source }
}

/// One classic BPF instruction (kept as plain fields so the program can be unit-tested).
#[derive(Clone, Copy, Debug)]
struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

/// A classic BPF program written with labels; [`assemble`] resolves the jumps.
enum Op {
    /// A non-jump instruction.
    I(u16, u32),
    /// A conditional jump: code, constant, label if true, label if false ("" = next).
    J(u16, u32, &'static str, &'static str),
    /// Unconditional jump.
    Ja(&'static str),
    /// A jump target.
    L(&'static str),
}

fn assemble(prog: &[Op]) -> Vec<Insn> {
    let mut at = std::collections::HashMap::new();
    let mut pc = 0usize;
    for op in prog {
        match op {
            Op::L(l) => {
                at.insert(*l, pc);
            }
            _ => pc += 1,
        }
    }
    let rel = |pc: usize, l: &str| -> usize {
        if l.is_empty() {
            0
        } else {
            at[l] - (pc + 1)
        }
    };
    let mut out = Vec::with_capacity(pc);
    for op in prog {
        let pc = out.len();
        match op {
            Op::L(_) => {}
            Op::I(code, k) => out.push(Insn {
                code: *code,
                jt: 0,
                jf: 0,
                k: *k,
            }),
            Op::J(code, k, t, f) => out.push(Insn {
                code: *code,
                jt: rel(pc, t) as u8,
                jf: rel(pc, f) as u8,
                k: *k,
            }),
            Op::Ja(l) => out.push(Insn {
                code: 0x05,
                jt: 0,
                jf: 0,
                k: rel(pc, l) as u32,
            }),
        }
    }
    out
}

/// The BPF program keeping this worker's share of GRE packets: those whose flow hash mod `n`
/// equals `idx`. The hash is symmetric (the same both ways) and covers, as deep as the packet
/// allows, the inner IPv4 addresses and TCP/UDP ports, else the inner MAC pair, so separate
/// flows between the same two containers spread over workers while each flow stays in order.
/// Packets too short to hash go to worker 0, which counts them as truncated.
fn partition_filter(n: u32, idx: u32) -> Vec<Insn> {
    use Op::*;
    let mut prog = flow_hash();
    prog.extend([
        I(0x94, n), // mod #n
        J(0x15, idx, "", "drop"),
        I(0x06, 0x0004_0000), // ret accept
        L("drop"),
        I(0x06, 0), // ret drop
    ]);
    assemble(&prog)
}

/// The same split for a `PACKET_FANOUT_CBPF` group of packet rings: the program returns the
/// flow hash, and the kernel hands the packet to member hash mod members. The packet starts
/// at the outer IPv4 header there too. As (code, jt, jf, k).
pub fn fanout_program() -> Vec<(u16, u8, u8, u32)> {
    let mut prog = flow_hash();
    prog.push(Op::I(0x16, 0)); // ret a
    assemble(&prog)
        .into_iter()
        .map(|i| (i.code, i.jt, i.jf, i.k))
        .collect()
}

/// Computes the flow hash of a GRE packet (outer IPv4 header first) into A, ending at label
/// "pick" with the hash folded so that `mod n` sees all its bits (0 when too short to hash).
fn flow_hash() -> Vec<Op> {
    use Op::*;
    // Offsets below are from X = outer IHL + optional GRE fields; the inner frame starts at
    // X+4, its IPv4 header at X+18.
    let prog = [
        I(0xb1, 0),    // ldxb 4*([0]&0xf)      X = outer IHL
        I(0x03, 0),    // stx M[0]
        I(0x50, 0),    // ldb [x+0]             GRE flags
        I(0x54, 0x80), // and #C
        I(0x74, 5),    // rsh #5                4 if C
        I(0x02, 1),    // st M[1]
        I(0x50, 0),    // ldb [x+0]
        I(0x54, 0x20), // and #K
        I(0x74, 3),    // rsh #3                4 if K
        I(0x61, 1),    // ldx M[1]
        I(0x0c, 0),    // add x
        I(0x02, 1),    // st M[1]
        I(0x61, 0),    // ldx M[0]
        I(0x50, 0),    // ldb [x+0]
        I(0x54, 0x10), // and #S
        I(0x74, 2),    // rsh #2                4 if S
        I(0x61, 1),    // ldx M[1]
        I(0x0c, 0),    // add x                 optional GRE bytes
        I(0x61, 0),    // ldx M[0]
        I(0x0c, 0),    // add x                 IHL + optional
        I(0x07, 0),    // tax
        I(0x03, 4),    // stx M[4]
        I(0x80, 0),    // ld len
        I(0x14, 16),   // sub #16               room for GRE base + 12 MAC bytes?
        J(0x3d, 0, "mac", ""),
        I(0x00, 0), // ld #0                 too short: worker 0
        Ja("pick"),
        L("mac"),
        I(0x40, 6),  // ld [x+6]              inner dst MAC bytes 2..5
        I(0x02, 2),  // st M[2]
        I(0x40, 12), // ld [x+12]             inner src MAC bytes 2..5
        I(0x61, 2),  // ldx M[2]
        I(0xac, 0),  // xor x
        I(0x02, 2),  // st M[2]               hash = MAC pair
        I(0x80, 0),  // ld len
        I(0x14, 38), // sub #38               GRE 4 + Ethernet 14 + IPv4 20
        I(0x61, 4),  // ldx M[4]
        J(0x3d, 0, "", "done"),
        I(0x48, 16), // ldh [x+16]            inner ethertype
        J(0x15, 0x0800, "", "done"),
        I(0x40, 30),            // ld [x+30]             inner source IPv4
        I(0x02, 5),             // st M[5]
        I(0x40, 34),            // ld [x+34]             inner destination IPv4
        I(0x61, 5),             // ldx M[5]
        I(0xac, 0),             // xor x
        I(0x02, 2),             // st M[2]               hash = address pair
        I(0x61, 4),             // ldx M[4]
        I(0x48, 24),            // ldh [x+24]            flags + fragment offset
        I(0x54, 0x3fff),        // and #MF|offset
        J(0x15, 0, "", "done"), // fragments: addresses only
        I(0x50, 27),            // ldb [x+27]            protocol
        J(0x15, 6, "ports", ""),
        J(0x15, 17, "ports", "done"),
        L("ports"),
        I(0x50, 18),   // ldb [x+18]            inner version/IHL
        I(0x54, 0x0f), // and #0xf
        I(0x64, 2),    // lsh #2                inner IHL in bytes
        I(0x0c, 0),    // add x                 X + IHL
        I(0x02, 6),    // st M[6]
        I(0x80, 0),    // ld len
        I(0x14, 22),   // sub #22               ... + 4 port bytes after the IP header
        I(0x61, 6),    // ldx M[6]
        J(0x3d, 0, "", "done"),
        I(0x48, 18), // ldh [x+18]            source port
        I(0x02, 5),  // st M[5]
        I(0x48, 20), // ldh [x+20]            destination port
        I(0x61, 5),  // ldx M[5]
        I(0xac, 0),  // xor x
        I(0x61, 2),  // ldx M[2]
        I(0xac, 0),  // xor x
        I(0x02, 2),  // st M[2]               hash = addresses ^ ports
        L("done"),
        I(0x60, 2),  // ld M[2]
        I(0x02, 3),  // st M[3]               fold the high half in: mod n sees all bits
        I(0x74, 16), // rsh #16
        I(0x61, 3),  // ldx M[3]
        I(0xac, 0),  // xor x
        L("pick"),
    ];
    prog.into()
}

/// One worker's sockets: the one it receives on (raw GRE, or the shared GRE-in-UDP port), the
/// ones it sends from, and one with outer DF off for frames that may be fragmented.
#[derive(Debug)]
pub struct Sockets {
    /// Receives; with plain GRE also sends.
    main: Socket,
    udp: bool,
    /// GRE-in-UDP: sockets bound to ephemeral ports, one per source port a worker spreads its
    /// flows over. Empty for plain GRE.
    senders: Vec<Socket>,
    /// Outer DF off (`IP_PMTUDISC_DONT`), receiving nothing; `None` when DF is off anyway.
    nodf: Option<Socket>,
}

/// UDP source ports each worker spreads its GRE-in-UDP flows over (RFC 8086 §3.2.1: the
/// source port is entropy, fixed per flow), so the peers' receive-side hashing (their
/// `SO_REUSEPORT` workers, a NIC's RSS, ECMP on the way) can tell flows apart.
pub const UDP_SOURCE_PORTS: usize = 8;

impl Sockets {
    /// Opens a worker's sockets on `local`: raw GRE, or GRE-in-UDP on `udp_port` when given.
    /// With `share = Some((n, idx))` a raw socket only receives this worker's share of packets.
    pub fn open(
        local: Ipv4Addr,
        outer: OuterOptions,
        share: Option<(u32, u32)>,
        udp_port: Option<u16>,
    ) -> Result<Sockets, SocketError> {
        let (main, senders) = match udp_port {
            None => (open_raw(local, outer, share)?, Vec::new()),
            Some(port) => {
                let main = open_udp(local, port, outer)?;
                let senders = (0..UDP_SOURCE_PORTS)
                    .map(|_| open_udp_sender(local, outer))
                    .collect::<Result<_, _>>()?;
                (main, senders)
            }
        };
        let nodf = if outer.df {
            Some(open_nodf(local, outer, udp_port.is_some())?)
        } else {
            None
        };
        Ok(Sockets {
            main,
            udp: udp_port.is_some(),
            senders,
            nodf,
        })
    }

    /// True for GRE-in-UDP sockets.
    #[inline]
    pub fn is_udp(&self) -> bool {
        self.udp
    }

    /// The socket to receive from.
    #[inline]
    pub fn recv_fd(&self) -> BorrowedFd<'_> {
        self.main.as_fd()
    }

    /// The socket a message leaves from: the DF-off one when `fragmentable`, else with
    /// GRE-in-UDP the source-port socket of its flow (`flow`, see [`flow_hash`]), else the
    /// one raw socket.
    ///
    /// [`flow_hash`]: crate::switch::tunnel::flow_hash
    #[inline]
    pub fn send_fd(&self, flow: u32, fragmentable: bool) -> BorrowedFd<'_> {
        match (&self.nodf, fragmentable) {
            (Some(s), true) => s.as_fd(),
            _ if self.senders.is_empty() => self.main.as_fd(),
            _ => self.senders[flow as usize % self.senders.len()].as_fd(),
        }
    }

    /// Leaves received GRE to a packet ring on device `ring_if` holding packets of up to
    /// `max` bytes: the raw socket then only receives what the ring does not (packets from
    /// other devices, or longer ones), and only in the worker that takes `leftovers`; the
    /// others' raw sockets receive nothing. The socket stays open either way, so the kernel
    /// does not answer GRE with protocol-unreachable.
    pub fn leave_to_ring(
        &self,
        ring_if: u32,
        max: usize,
        leftovers: bool,
    ) -> Result<(), SocketError> {
        let prog = if leftovers {
            let ifindex = (libc::SKF_AD_OFF + libc::SKF_AD_IFINDEX) as u32;
            vec![
                socket2::SockFilter::new(0x20, 0, 0, ifindex), // ld ifindex
                socket2::SockFilter::new(0x15, 0, 2, ring_if), // jeq #ring_if
                socket2::SockFilter::new(0x80, 0, 0, 0),       // ld len
                socket2::SockFilter::new(0x25, 0, 1, max as u32), // jgt #max
                socket2::SockFilter::new(0x06, 0, 0, 0x0004_0000), // ret accept
                socket2::SockFilter::new(0x06, 0, 0, 0),       // ret drop
            ]
        } else {
            vec![socket2::SockFilter::new(0x06, 0, 0, 0)]
        };
        self.main
            .attach_filter(&prog)
            .map_err(opt("attach the filter that leaves GRE to the packet ring"))
    }

    /// The UDP source ports GRE-in-UDP datagrams leave from (empty for plain GRE).
    pub fn source_ports(&self) -> Vec<u16> {
        self.senders
            .iter()
            .filter_map(|s| s.local_addr().ok()?.as_socket_ipv4().map(|a| a.port()))
            .collect()
    }
}

/// A GRE-in-UDP socket bound to `local:port`, shared with the other workers
/// (`SO_REUSEPORT`), with `UDP_GRO` on.
fn open_udp(local: Ipv4Addr, port: u16, outer: OuterOptions) -> Result<Socket, SocketError> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(opt("socket(AF_INET, SOCK_DGRAM, UDP)"))?;
    sock.set_reuse_port(true).map_err(opt("set SO_REUSEPORT"))?;
    sockopt::set_int(sock.as_fd(), libc::SOL_UDP, libc::UDP_GRO, 1)
        .map_err(opt("set UDP_GRO (needs Linux 5.0 or later)"))?;
    configure(&sock, outer)?;
    sock.bind(&SockAddr::from(SocketAddrV4::new(local, port)))
        .map_err(|source| {
            if source.raw_os_error() == Some(libc::EADDRINUSE) {
                SocketError::Option {
                    op: "bind the GRE-in-UDP port (another process, e.g. a second dnet-switch, holds it: stop it or pick --udp-port)",
                    source,
                }
            } else {
                SocketError::Bind {
                    addr: local,
                    source,
                }
            }
        })?;
    Ok(sock)
}

/// A raw GRE socket bound to `local`. With `share = Some((n, idx))` it only receives this
/// worker's share of packets.
fn open_raw(
    local: Ipv4Addr,
    outer: OuterOptions,
    share: Option<(u32, u32)>,
) -> Result<Socket, SocketError> {
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(47))).map_err(|e| {
        if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
            SocketError::NotPermitted
        } else {
            SocketError::Option {
                op: "socket(AF_INET, SOCK_RAW, 47)",
                source: e,
            }
        }
    })?;
    // Install the filter before binding, so no packet of another worker's share is queued.
    if let Some((n, idx)) = share {
        if n > 1 {
            let prog: Vec<socket2::SockFilter> = partition_filter(n, idx)
                .iter()
                .map(|i| socket2::SockFilter::new(i.code, i.jt, i.jf, i.k))
                .collect();
            sock.attach_filter(&prog)
                .map_err(opt("attach BPF partition filter"))?;
        }
    }
    configure(&sock, outer)?;
    sock.bind(&SockAddr::from(SocketAddrV4::new(local, 0)))
        .map_err(|source| SocketError::Bind {
            addr: local,
            source,
        })?;
    Ok(sock)
}

/// The filter that makes a socket receive nothing (it only sends).
fn receive_nothing() -> [socket2::SockFilter; 1] {
    [socket2::SockFilter::new(0x06, 0, 0, 0)]
}

/// A socket that only sends GRE-in-UDP, from an ephemeral port the kernel picks on `local`.
/// Nothing reads it, so a filter drops whatever is sent to its port before it is queued.
fn open_udp_sender(local: Ipv4Addr, outer: OuterOptions) -> Result<Socket, SocketError> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(opt("socket(AF_INET, SOCK_DGRAM, UDP)"))?;
    configure(&sock, outer)?;
    sock.attach_filter(&receive_nothing()).map_err(opt(
        "attach the receive-nothing filter to a GRE-in-UDP sender",
    ))?;
    sock.bind(&SockAddr::from(SocketAddrV4::new(local, 0)))
        .map_err(|source| SocketError::Bind {
            addr: local,
            source,
        })?;
    Ok(sock)
}

/// A send-only socket with outer DF off (`IP_PMTUDISC_DONT`), for frames that may be
/// fragmented: raw GRE, or UDP from an ephemeral port (the receiver names peers by address).
fn open_nodf(local: Ipv4Addr, outer: OuterOptions, udp: bool) -> Result<Socket, SocketError> {
    let sock = if udp {
        Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
    } else {
        Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(47)))
    }
    .map_err(opt("open the DF-off GRE socket"))?;
    sock.attach_filter(&receive_nothing()).map_err(opt(
        "attach the receive-nothing filter to the DF-off socket",
    ))?;
    configure(&sock, OuterOptions { df: false, ..outer })?;
    sock.bind(&SockAddr::from(SocketAddrV4::new(local, 0)))
        .map_err(|source| SocketError::Bind {
            addr: local,
            source,
        })?;
    Ok(sock)
}

/// Non-blocking, outer TTL/TOS/DF, and big buffers.
fn configure(sock: &Socket, outer: OuterOptions) -> Result<(), SocketError> {
    sock.set_nonblocking(true)
        .map_err(opt("set non-blocking"))?;
    sock.set_ttl_v4(u32::from(outer.ttl))
        .map_err(opt("set TTL"))?;
    sock.set_tos_v4(u32::from(outer.tos))
        .map_err(opt("set TOS"))?;
    let pmtu = if outer.df {
        libc::IP_PMTUDISC_DO
    } else {
        libc::IP_PMTUDISC_DONT
    };
    sockopt::set_int(sock.as_fd(), libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, pmtu)
        .map_err(opt("set IP_MTU_DISCOVER"))?;
    // Bursts of 64 KiB GRE packets overflow the default buffers; ask for more. The FORCE
    // variants (root) pass the sysctl caps; fall back to the capped ones.
    let big = 4 << 20;
    if sockopt::set_int(sock.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, big).is_err() {
        let _ = sock.set_recv_buffer_size(big as usize);
    }
    if sockopt::set_int(sock.as_fd(), libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, big).is_err() {
        let _ = sock.set_send_buffer_size(big as usize);
    }
    Ok(())
}

/// Where to send to peer `addr`: its address, and the GRE-in-UDP port with `--encap udp`
/// (port 0 for raw sockets, which have none).
pub fn dest(addr: Ipv4Addr, opts: &crate::switch::tunnel::GreOptions) -> SocketAddrV4 {
    SocketAddrV4::new(addr, opts.udp_port.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the partition filter the way the kernel would, on a packet, to check the jumps.
    fn run(prog: &[Insn], p: &[u8]) -> u32 {
        let (mut a, mut x, mut m) = (0u32, 0u32, [0u32; 16]);
        let mut pc = 0;
        let ld = |off: u32, n: usize| -> Option<u32> {
            let o = off as usize;
            let b = p.get(o..o + n)?;
            Some(b.iter().fold(0, |acc, v| (acc << 8) | u32::from(*v)))
        };
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                0xb1 => x = 4 * (u32::from(p[i.k as usize]) & 0xf),
                0x03 => m[i.k as usize] = x,
                0x02 => m[i.k as usize] = a,
                0x50 => match ld(x + i.k, 1) {
                    Some(v) => a = v,
                    None => return 0,
                },
                0x40 => match ld(x + i.k, 4) {
                    Some(v) => a = v,
                    None => return 0,
                },
                0x48 => match ld(x + i.k, 2) {
                    Some(v) => a = v,
                    None => return 0,
                },
                0x60 => a = m[i.k as usize],
                0x64 => a <<= i.k,
                0x54 => a &= i.k,
                0x74 => a >>= i.k,
                0x61 => x = m[i.k as usize],
                0x0c => a = a.wrapping_add(x),
                0x07 => x = a,
                0x80 => a = p.len() as u32,
                0x14 => a = a.wrapping_sub(i.k),
                0x3d => pc += if a >= x { i.jt } else { i.jf } as usize,
                0x00 => a = i.k,
                0x05 => pc += i.k as usize,
                0xac => a ^= x,
                0x94 => a %= i.k,
                0x15 => pc += if a == i.k { i.jt } else { i.jf } as usize,
                0x06 => return i.k,
                0x16 => return a,
                c => panic!("opcode {c:#x} not modelled"),
            }
        }
    }

    fn gre_packet(gre_hdr: &[u8], dst_last: u8, src_last: u8) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 47, 0, 0, 10, 200, 0, 1, 10, 200, 0, 2,
        ];
        p.extend_from_slice(gre_hdr);
        // ARP: not IPv4, so the MAC pair is what gets hashed.
        p.extend_from_slice(&[2, 0, 0, 0, 0, dst_last, 2, 0, 0, 0, 0, src_last, 8, 6]);
        p.resize(p.len() + 46, 0);
        p
    }

    #[test]
    fn each_packet_goes_to_exactly_one_worker() {
        let n = 3;
        let progs: Vec<_> = (0..n).map(|i| partition_filter(n, i)).collect();
        let mut per_worker = [0usize; 3];
        for hdr in [
            &[0u8, 0, 0x65, 0x58][..],
            &[0xb0, 0, 0x65, 0x58, 0, 0, 0, 0, 0, 0, 0, 42, 0, 0, 0, 1],
        ] {
            for d in 0..40u8 {
                for s in 0..10u8 {
                    let p = gre_packet(hdr, d, s);
                    let takers: Vec<_> = (0..n as usize)
                        .filter(|&w| run(&progs[w], &p) > 0)
                        .collect();
                    assert_eq!(takers.len(), 1, "hdr {hdr:02x?} d {d} s {s}");
                    per_worker[takers[0]] += 1;
                    // Both directions of a conversation land on the same worker.
                    let back = gre_packet(hdr, s, d);
                    assert!(run(&progs[takers[0]], &back) > 0);
                }
            }
        }
        assert!(per_worker.iter().all(|&c| c > 100), "spread {per_worker:?}");
    }

    /// An outer IPv4 + GRE packet carrying inner IPv4/`proto` between 10.77.0.1:sport and
    /// 10.77.0.2:dport (or reversed), padded to `len` bytes of inner IP payload.
    fn flow_packet(proto: u8, a_to_b: bool, sport: u16, dport: u16, frag: u16) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 47, 0, 0, 10, 200, 0, 1, 10, 200, 0, 2,
        ];
        p.extend_from_slice(&[0, 0, 0x65, 0x58]);
        let (sm, dm) = if a_to_b { (1u8, 2u8) } else { (2, 1) };
        p.extend_from_slice(&[2, 0, 0, 0, 0, dm, 2, 0, 0, 0, 0, sm, 8, 0]);
        let (si, di) = if a_to_b { (1u8, 2u8) } else { (2, 1) };
        let (sp, dp) = if a_to_b {
            (sport, dport)
        } else {
            (dport, sport)
        };
        p.extend_from_slice(&[0x45, 0, 0, 40, 0, 0]);
        p.extend_from_slice(&frag.to_be_bytes());
        p.extend_from_slice(&[64, proto, 0, 0, 10, 77, 0, si, 10, 77, 0, di]);
        p.extend_from_slice(&sp.to_be_bytes());
        p.extend_from_slice(&dp.to_be_bytes());
        p.resize(p.len() + 16, 0);
        p
    }

    #[test]
    fn flows_between_two_containers_spread_and_stay_symmetric() {
        let n = 2;
        let progs: Vec<_> = (0..n).map(|i| partition_filter(n, i)).collect();
        let take = |p: &[u8]| -> Vec<usize> {
            (0..n as usize).filter(|&w| run(&progs[w], p) > 0).collect()
        };
        let mut per_worker = [0usize; 2];
        for proto in [6u8, 17] {
            for sport in 40_000..40_064u16 {
                let fwd = flow_packet(proto, true, sport, 5201, 0x4000);
                let back = flow_packet(proto, false, sport, 5201, 0x4000);
                let w = take(&fwd);
                assert_eq!(w.len(), 1);
                assert_eq!(take(&back), w, "both directions of a flow on one worker");
                per_worker[w[0]] += 1;
            }
        }
        assert!(per_worker.iter().all(|&c| c >= 32), "spread {per_worker:?}");
        // A non-first fragment hashes on addresses only: same worker as offset 0 with no ports.
        let frag = flow_packet(17, true, 1, 2, 0x0010);
        assert_eq!(take(&frag).len(), 1);
    }

    #[test]
    fn packet_ring_fanout_splits_flows_as_the_raw_sockets_do() {
        let fan: Vec<Insn> = fanout_program()
            .into_iter()
            .map(|(code, jt, jf, k)| Insn { code, jt, jf, k })
            .collect();
        for n in [2u32, 3] {
            let progs: Vec<_> = (0..n).map(|i| partition_filter(n, i)).collect();
            for proto in [6u8, 17] {
                for sport in 40_000..40_032u16 {
                    for fwd in [true, false] {
                        let p = flow_packet(proto, fwd, sport, 5201, 0x4000);
                        let raw: Vec<u32> = (0..n)
                            .filter(|&w| run(&progs[w as usize], &p) > 0)
                            .collect();
                        assert_eq!(
                            raw,
                            vec![run(&fan, &p) % n],
                            "n {n} proto {proto} sport {sport}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn short_packets_go_to_worker_zero() {
        let p = {
            let mut p = vec![
                0x45, 0, 0, 0, 0, 0, 0, 0, 64, 47, 0, 0, 10, 200, 0, 1, 10, 200, 0, 2,
            ];
            p.extend_from_slice(&[0, 0, 0x65, 0x58, 1, 2, 3]);
            p
        };
        assert!(run(&partition_filter(2, 0), &p) > 0);
        assert_eq!(run(&partition_filter(2, 1), &p), 0);
    }
}
