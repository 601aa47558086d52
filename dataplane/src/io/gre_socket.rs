//! Raw IPv4 sockets for protocol 47 (GRE): the kernel builds the outer IPv4 header on send
//! (TTL, TOS and DF via socket options) and hands us whole IPv4 packets on receive.
//!
//! Every raw GRE socket receives a copy of every GRE packet. With several workers each socket
//! gets a classic BPF filter that keeps only its share, by a hash of the inner MAC pair, so
//! each packet is handled by exactly one worker and each conversation stays in order.

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};

/// Socket setup errors, naming the step.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Raw sockets need CAP_NET_RAW.
    #[error("opening a raw GRE socket needs root or CAP_NET_RAW: run dnet-switch as root")]
    NotPermitted,
    /// `--local` is not an address of this host.
    #[error("cannot bind the GRE socket to {addr}: {source} (is --local {addr} an address of this host?)")]
    Bind {
        /// Address.
        addr: Ipv4Addr,
        /// errno.
        source: io::Error,
    },
    /// Another step failed.
    #[error("GRE socket: {op}: {source}")]
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

fn setsockopt_int(fd: RawFd, level: i32, name: i32, v: i32) -> io::Result<()> {
    // SAFETY: passes a pointer to one c_int with its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &v as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One classic BPF instruction (kept as plain fields so the program can be unit-tested).
#[derive(Clone, Copy, Debug)]
struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

/// The BPF program keeping packets whose inner-MAC hash mod `n` equals `idx`. Packets too
/// short to hash go to worker 0, which counts them as truncated.
fn partition_filter(n: u32, idx: u32) -> Vec<Insn> {
    let i = |code: u16, jt: u8, jf: u8, k: u32| Insn { code, jt, jf, k };
    vec![
        i(0xb1, 0, 0, 0),           // 0  ldxb 4*([0]&0xf)   X = outer IHL
        i(0x03, 0, 0, 0),           // 1  stx M[0]
        i(0x50, 0, 0, 0),           // 2  ldb [x+0]          GRE flags
        i(0x54, 0, 0, 0x80),        // 3  and #C
        i(0x74, 0, 0, 5),           // 4  rsh #5             4 if C
        i(0x02, 0, 0, 1),           // 5  st M[1]
        i(0x50, 0, 0, 0),           // 6  ldb [x+0]
        i(0x54, 0, 0, 0x20),        // 7  and #K
        i(0x74, 0, 0, 3),           // 8  rsh #3             4 if K
        i(0x61, 0, 0, 1),           // 9  ldx M[1]
        i(0x0c, 0, 0, 0),           // 10 add x
        i(0x02, 0, 0, 1),           // 11 st M[1]
        i(0x61, 0, 0, 0),           // 12 ldx M[0]
        i(0x50, 0, 0, 0),           // 13 ldb [x+0]
        i(0x54, 0, 0, 0x10),        // 14 and #S
        i(0x74, 0, 0, 2),           // 15 rsh #2             4 if S
        i(0x61, 0, 0, 1),           // 16 ldx M[1]
        i(0x0c, 0, 0, 0),           // 17 add x              optional GRE bytes
        i(0x61, 0, 0, 0),           // 18 ldx M[0]
        i(0x0c, 0, 0, 0),           // 19 add x              IHL + optional
        i(0x07, 0, 0, 0),           // 20 tax                inner frame at X+4
        i(0x03, 0, 0, 4),           // 21 stx M[4]
        i(0x80, 0, 0, 0),           // 22 ld len
        i(0x14, 0, 0, 16),          // 23 sub #16
        i(0x3d, 2, 0, 0),           // 24 jge x → 27         long enough to hash
        i(0x00, 0, 0, 0),           // 25 ld #0              too short: worker 0
        i(0x05, 0, 0, 7),           // 26 ja → 34
        i(0x61, 0, 0, 4),           // 27 ldx M[4]
        i(0x40, 0, 0, 4 + 2),       // 28 ld [x+6]           inner dst MAC bytes 2..5
        i(0x02, 0, 0, 2),           // 29 st M[2]
        i(0x40, 0, 0, 4 + 8),       // 30 ld [x+12]          inner src MAC bytes 2..5
        i(0x61, 0, 0, 2),           // 31 ldx M[2]
        i(0xac, 0, 0, 0),           // 32 xor x              same hash both directions
        i(0x94, 0, 0, n),           // 33 mod #n
        i(0x15, 0, 1, idx),         // 34 jeq #idx
        i(0x06, 0, 0, 0x0004_0000), // 35 ret accept
        i(0x06, 0, 0, 0),           // 36 ret drop
    ]
}

/// One worker's raw GRE socket (unconnected; sends name the peer per message).
#[derive(Debug)]
pub struct GreSocket {
    sock: Socket,
}

impl GreSocket {
    /// Opens, configures and binds a socket on `local`. With `share = Some((n, idx))` it only
    /// receives this worker's share of packets.
    pub fn open(
        local: Ipv4Addr,
        outer: OuterOptions,
        share: Option<(u32, u32)>,
    ) -> Result<GreSocket, SocketError> {
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
        setsockopt_int(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            pmtu,
        )
        .map_err(opt("set IP_MTU_DISCOVER"))?;
        // Bursts of 64 KiB GRE packets overflow the default buffers; ask for more. The FORCE
        // variants (root) pass the sysctl caps; fall back to the capped ones.
        let big = 4 << 20;
        if setsockopt_int(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            big,
        )
        .is_err()
        {
            let _ = sock.set_recv_buffer_size(big as usize);
        }
        if setsockopt_int(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            big,
        )
        .is_err()
        {
            let _ = sock.set_send_buffer_size(big as usize);
        }
        sock.bind(&SockAddr::from(SocketAddrV4::new(local, 0)))
            .map_err(|source| SocketError::Bind {
                addr: local,
                source,
            })?;
        Ok(GreSocket { sock })
    }
}

impl AsRawFd for GreSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// A `sockaddr_in` for `addr` (port 0: raw sockets have none).
pub fn sockaddr(addr: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    }
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
                c => panic!("opcode {c:#x} not modelled"),
            }
        }
    }

    fn gre_packet(gre_hdr: &[u8], dst_last: u8, src_last: u8) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 47, 0, 0, 10, 200, 0, 1, 10, 200, 0, 2,
        ];
        p.extend_from_slice(gre_hdr);
        p.extend_from_slice(&[2, 0, 0, 0, 0, dst_last, 2, 0, 0, 0, 0, src_last, 8, 0]);
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
