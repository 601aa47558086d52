//! Traffic generators and probes that run in-process inside namespaces: ICMP echo, a verified
//! TCP bulk transfer, UDP broadcast/unicast counting and a GRE packet counter.
//!
//! Nothing here shells out to `ping`, `iperf3` or `tcpdump`: each helper opens its sockets on a
//! thread that has entered the namespace (see [`crate::netns`]), and every blocking call has a
//! timeout so a broken data plane fails a test instead of hanging it.

use crate::error::{Error, Result};
use crate::netns::{in_netns, spawn_in_netns};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Short read timeout used by loops that also watch a deadline or a stop flag.
const TICK: Duration = Duration::from_millis(50);

/// Per-process counter making ICMP ids and UDP tokens unique across concurrent calls.
static UNIQUE: AtomicU32 = AtomicU32::new(0);

fn unique() -> u32 {
    UNIQUE.fetch_add(1, Ordering::Relaxed)
}

fn netns_err(ns: &str) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Netns {
        ns: ns.to_string(),
        source,
    }
}

/// Internet checksum (RFC 1071): one's-complement sum of 16-bit big-endian words.
pub fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Outcome of [`ping`].
#[derive(Debug, Clone, Default)]
pub struct PingResult {
    /// Echo requests sent.
    pub sent: u32,
    /// Matching echo replies received.
    pub received: u32,
    /// Round-trip time of each received reply, in order.
    pub rtts: Vec<Duration>,
}

impl PingResult {
    /// Smallest RTT, if any reply came.
    pub fn min(&self) -> Option<Duration> {
        self.rtts.iter().min().copied()
    }
    /// Largest RTT, if any reply came.
    pub fn max(&self) -> Option<Duration> {
        self.rtts.iter().max().copied()
    }
    /// Mean RTT, if any reply came.
    pub fn avg(&self) -> Option<Duration> {
        let n = u32::try_from(self.rtts.len()).ok().filter(|&n| n > 0)?;
        Some(self.rtts.iter().sum::<Duration>() / n)
    }
}

/// Builds an ICMP echo request with identifier `id`, sequence `seq` and a fixed payload.
fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![8u8, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    // 56 payload bytes like ping(8), so the IP packet is 84 bytes.
    p.extend((0..56u8).map(|i| i.wrapping_mul(7)));
    let c = inet_checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// If `pkt` (an IPv4 packet as a raw ICMP socket delivers it) is a valid echo reply from `src`
/// with identifier `id`, returns its sequence number.
fn parse_echo_reply(pkt: &[u8], src: Ipv4Addr, id: u16) -> Option<u16> {
    let ihl = usize::from(pkt.first()? & 0x0f) * 4;
    if pkt.len() < ihl + 8
        || pkt[9] != 1
        || Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]) != src
    {
        return None;
    }
    let icmp = &pkt[ihl..];
    if icmp[0] != 0 || icmp[1] != 0 || inet_checksum(icmp) != 0 {
        return None;
    }
    (u16::from_be_bytes([icmp[4], icmp[5]]) == id).then(|| u16::from_be_bytes([icmp[6], icmp[7]]))
}

/// Sends `count` ICMP echo requests from namespace `ns` to `dst`, one after another, waiting up
/// to `timeout` for each reply (a lost one is counted and the next is sent).
pub fn ping(ns: &str, dst: Ipv4Addr, count: u32, timeout: Duration) -> Result<PingResult> {
    in_netns(ns, || ping_here(dst, count, timeout)).map_err(netns_err(ns))?
}

fn ping_here(dst: Ipv4Addr, count: u32, timeout: Duration) -> Result<PingResult> {
    let ctx = |what: &str| format!("ping {dst}: {what}");
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
        .map_err(|e| Error::io(ctx("raw ICMP socket (needs root)"), e))?;
    // Mix the PID in so pings from two test processes into one namespace never match.
    let id = (std::process::id() as u16) ^ (unique() as u16).rotate_left(8);
    let to = SockAddr::from(SocketAddrV4::new(dst, 0));
    let mut res = PingResult::default();
    let mut buf = [0u8; 2048];
    for seq in 1..=count {
        let seq = seq as u16;
        let start = Instant::now();
        sock.send_to(&echo_request(id, seq), &to)
            .map_err(|e| Error::io(ctx("send"), e))?;
        res.sent += 1;
        let deadline = start + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left))
                .map_err(|e| Error::io(ctx("set timeout"), e))?;
            let n = match (&sock).read(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(ctx("recv"), e)),
            };
            // Replies to an earlier (timed-out) request are ignored: only this seq counts.
            if parse_echo_reply(&buf[..n], dst, id) == Some(seq) {
                res.received += 1;
                res.rtts.push(start.elapsed());
                break;
            }
        }
    }
    Ok(res)
}

/// The deterministic byte stream of [`tcp_transfer`]: pseudo-random bytes repeating with a
/// prime period, so any reordering, loss or duplication of segments shifts the stream against
/// the pattern and is caught by the comparison.
#[derive(Debug)]
pub struct Pattern {
    /// Two periods back to back, so any window of up to one period is a contiguous slice.
    buf: Vec<u8>,
}

impl Pattern {
    /// Period of the pattern in bytes (a prime a little under 1 MiB).
    pub const PERIOD: usize = 1_048_573;

    /// Generates the pattern (xorshift64*, fixed seed).
    pub fn new() -> Self {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut one = Vec::with_capacity(Self::PERIOD);
        while one.len() < Self::PERIOD {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            let take = (Self::PERIOD - one.len()).min(8);
            one.extend_from_slice(&v[..take]);
        }
        let mut buf = one.clone();
        buf.extend_from_slice(&one);
        Pattern { buf }
    }

    /// The `len` pattern bytes starting at stream offset `offset` (`len` ≤ [`Pattern::PERIOD`]).
    pub fn slice(&self, offset: u64, len: usize) -> &[u8] {
        assert!(len <= Self::PERIOD, "pattern window larger than its period");
        let start = (offset % Self::PERIOD as u64) as usize;
        &self.buf[start..start + len]
    }
}

impl Default for Pattern {
    fn default() -> Self {
        Self::new()
    }
}

/// Outcome of a verified [`tcp_transfer`].
#[derive(Debug, Clone)]
pub struct TransferResult {
    /// Bytes received and verified equal to those sent.
    pub bytes: u64,
    /// Time from the receiver's accept to its reading end-of-stream.
    pub elapsed: Duration,
}

impl TransferResult {
    /// Goodput in Gbit/s.
    pub fn gbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e9
    }
}

/// Sends `bytes` bytes of [`Pattern`] over TCP from namespace `src_ns` to a listener in
/// `dst_ns` at `dst_ip`, and has the receiver compare every byte. Fails with
/// [`Error::DataMismatch`] at the first corrupted byte, [`Error::ShortTransfer`] if the stream
/// ends early, or [`Error::Timeout`] if the whole exchange takes longer than `timeout`.
pub fn tcp_transfer(
    src_ns: &str,
    dst_ns: &str,
    dst_ip: Ipv4Addr,
    bytes: u64,
    timeout: Duration,
) -> Result<TransferResult> {
    let pattern = Pattern::new();
    let deadline = Instant::now() + timeout;
    let (port_tx, port_rx) = mpsc::channel::<u16>();
    std::thread::scope(|s| {
        let pattern = &pattern;
        let server = s.spawn(move || {
            in_netns(dst_ns, || {
                tcp_receive(dst_ip, bytes, pattern, deadline, timeout, port_tx)
            })
            .map_err(netns_err(dst_ns))?
        });
        let client = s.spawn(move || -> Result<()> {
            // The receiver reports its port once listening; if it failed, the channel closes.
            let Ok(port) = port_rx.recv_timeout(timeout) else {
                return Ok(());
            };
            in_netns(src_ns, || {
                tcp_send(
                    SocketAddrV4::new(dst_ip, port),
                    bytes,
                    pattern,
                    deadline,
                    timeout,
                )
            })
            .map_err(netns_err(src_ns))?
        });
        let client = client
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        let server = server
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        match (client, server) {
            // A client that never connected explains the receiver's accept timeout better.
            (Err(c), Err(Error::Timeout { what, .. })) if what.contains("accept") => Err(c),
            // Otherwise the receiver knows best (mismatch, short stream); a client "broken
            // pipe" is only the echo of the receiver giving up.
            (_, Err(s)) => Err(s),
            (Err(c), Ok(_)) => Err(c),
            (Ok(()), Ok(r)) => Ok(r),
        }
    })
}

fn io_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn tcp_receive(
    ip: Ipv4Addr,
    bytes: u64,
    pattern: &Pattern,
    deadline: Instant,
    timeout: Duration,
    port_tx: mpsc::Sender<u16>,
) -> Result<TransferResult> {
    let ctx = |what: &str| format!("tcp receiver on {ip}: {what}");
    let l = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| Error::io(ctx("socket"), e))?;
    l.set_reuse_address(true)
        .map_err(|e| Error::io(ctx("SO_REUSEADDR"), e))?;
    l.bind(&SockAddr::from(SocketAddrV4::new(ip, 0)))
        .map_err(|e| Error::io(ctx("bind"), e))?;
    l.listen(1).map_err(|e| Error::io(ctx("listen"), e))?;
    let port = l
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map(|a| a.port())
        .ok_or_else(|| Error::Invalid(ctx("listener has no port")))?;
    // On Linux SO_RCVTIMEO also bounds accept(2).
    l.set_read_timeout(Some(
        deadline.saturating_duration_since(Instant::now()).max(TICK),
    ))
    .map_err(|e| Error::io(ctx("set timeout"), e))?;
    let _ = port_tx.send(port);
    let (conn, _) = match l.accept() {
        Ok(c) => c,
        Err(e) if io_timeout(&e) => {
            return Err(Error::Timeout {
                what: ctx("accept"),
                timeout,
            })
        }
        Err(e) => return Err(Error::io(ctx("accept"), e)),
    };
    let start = Instant::now();
    let mut conn: TcpStream = conn.into();
    let mut buf = vec![0u8; 256 * 1024];
    let mut got: u64 = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout {
                what: ctx(&format!("receiving (got {got} of {bytes} bytes)")),
                timeout,
            });
        }
        conn.set_read_timeout(Some(left))
            .map_err(|e| Error::io(ctx("set timeout"), e))?;
        let n = match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if io_timeout(&e) => continue,
            Err(e) => return Err(Error::io(ctx(&format!("read after {got} bytes")), e)),
        };
        if got + n as u64 > bytes {
            return Err(Error::ShortTransfer {
                received: got + n as u64,
                expected: bytes,
            });
        }
        let want = pattern.slice(got, n);
        if want != &buf[..n] {
            let i = want
                .iter()
                .zip(&buf[..n])
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            return Err(Error::DataMismatch {
                offset: got + i as u64,
                expected: want[i],
                got: buf[i],
            });
        }
        got += n as u64;
    }
    let elapsed = start.elapsed();
    if got != bytes {
        return Err(Error::ShortTransfer {
            received: got,
            expected: bytes,
        });
    }
    Ok(TransferResult {
        bytes: got,
        elapsed,
    })
}

fn tcp_send(
    to: SocketAddrV4,
    bytes: u64,
    pattern: &Pattern,
    deadline: Instant,
    timeout: Duration,
) -> Result<()> {
    let ctx = |what: &str| format!("tcp sender to {to}: {what}");
    let left = deadline.saturating_duration_since(Instant::now()).max(TICK);
    let mut conn = TcpStream::connect_timeout(&SocketAddr::V4(to), left)
        .map_err(|e| Error::io(ctx("connect"), e))?;
    const CHUNK: usize = 128 * 1024;
    let mut sent: u64 = 0;
    while sent < bytes {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout {
                what: ctx(&format!("sending (sent {sent} of {bytes} bytes)")),
                timeout,
            });
        }
        conn.set_write_timeout(Some(left))
            .map_err(|e| Error::io(ctx("set timeout"), e))?;
        let len = (bytes - sent).min(CHUNK as u64) as usize;
        match conn.write(pattern.slice(sent, len)) {
            Ok(n) => sent += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted || io_timeout(&e) => continue,
            Err(e) => return Err(Error::io(ctx(&format!("write after {sent} bytes")), e)),
        }
    }
    conn.shutdown(Shutdown::Write)
        .map_err(|e| Error::io(ctx("shutdown"), e))?;
    // Wait for the receiver to close, so "done" means "verified", not "queued".
    let left = deadline.saturating_duration_since(Instant::now()).max(TICK);
    conn.set_read_timeout(Some(left))
        .map_err(|e| Error::io(ctx("set timeout"), e))?;
    let _ = conn.read(&mut [0u8; 1]);
    Ok(())
}

/// A token unique to this process and call, carried in UDP payloads so stray datagrams (from
/// other tests or earlier calls) are never counted.
fn token(kind: &str) -> Vec<u8> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("dnet-{kind}-{}-{}-{nanos}", std::process::id(), unique()).into_bytes()
}

/// Binds UDP receivers on `port` in each of `receivers`, then runs `send` (which transmits
/// datagrams carrying `tok`), then counts, per receiver, the datagrams whose payload equals
/// `tok` until `window` has passed after `send` returned.
fn udp_count(
    receivers: &[&str],
    port: u16,
    tok: &[u8],
    window: Duration,
    send: impl FnOnce() -> Result<()> + Send,
) -> Result<Vec<u64>> {
    let sent_at: OnceLock<Instant> = OnceLock::new();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let handles: Vec<_> = receivers
            .iter()
            .map(|&ns| {
                let ready_tx = ready_tx.clone();
                let sent_at = &sent_at;
                s.spawn(move || {
                    in_netns(ns, || udp_receive(port, tok, window, sent_at, ready_tx))
                        .map_err(netns_err(ns))?
                })
            })
            .collect();
        drop(ready_tx);
        // All receivers bound (or one failed and dropped its sender without a message).
        let mut ready = 0;
        while ready < receivers.len() {
            match ready_rx.recv_timeout(Duration::from_secs(5)) {
                Ok(()) => ready += 1,
                Err(_) => break,
            }
        }
        let sent = if ready == receivers.len() {
            send()
        } else {
            Ok(())
        };
        let _ = sent_at.set(Instant::now());
        let counts: Vec<Result<u64>> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect();
        sent?;
        counts.into_iter().collect()
    })
}

/// Receive buffer of the test's UDP receivers.
const RECV_BUFFER: usize = 64 << 20;

fn udp_receive(
    port: u16,
    tok: &[u8],
    window: Duration,
    sent_at: &OnceLock<Instant>,
    ready: mpsc::Sender<()>,
) -> Result<u64> {
    let ctx = |what: &str| format!("udp receiver on port {port}: {what}");
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| Error::io(ctx("socket"), e))?;
    s.set_reuse_address(true)
        .map_err(|e| Error::io(ctx("SO_REUSEADDR"), e))?;
    // Bound to the wildcard so both broadcast and unicast datagrams to the port arrive.
    s.bind(&SockAddr::from(SocketAddrV4::new(
        Ipv4Addr::UNSPECIFIED,
        port,
    )))
    .map_err(|e| Error::io(ctx("bind"), e))?;
    // A burst must not be lost in this socket while this thread waits for a core on a busy
    // machine: room for tens of thousands of small datagrams (root passes the sysctl cap).
    if s.set_recv_buffer_size(RECV_BUFFER).is_ok() {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&s);
        let v = RECV_BUFFER as libc::c_int;
        // SAFETY: passes a pointer to one c_int and its size; the kernel only reads it.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    let s: UdpSocket = s.into();
    s.set_read_timeout(Some(TICK))
        .map_err(|e| Error::io(ctx("set timeout"), e))?;
    let _ = ready.send(());
    // Until the sender is done we cannot know the window's end; 30 s bounds a stuck sender.
    let give_up = Instant::now() + Duration::from_secs(30) + window;
    let mut buf = [0u8; 2048];
    let mut count = 0;
    let mut last = None;
    loop {
        // The window runs from the later of the last send and the last datagram received:
        // datagrams still queued in a switch on a loaded machine are waited for, a silence of
        // `window` after both ends it.
        let end = sent_at
            .get()
            .map(|t| last.map_or(*t, |l: Instant| l.max(*t)) + window)
            .unwrap_or(give_up)
            .min(give_up + window);
        if Instant::now() >= end {
            return Ok(count);
        }
        match s.recv(&mut buf) {
            Ok(n) if &buf[..n] == tok => {
                count += 1;
                last = Some(Instant::now());
            }
            Ok(_) => {}
            Err(e) if io_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(ctx("recv"), e)),
        }
    }
}

fn udp_sender(ns: &str, broadcast: bool) -> Result<UdpSocket> {
    in_netns(ns, || -> Result<UdpSocket> {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
            .map_err(|e| Error::io("udp sender: bind", e))?;
        if broadcast {
            s.set_broadcast(true)
                .map_err(|e| Error::io("udp sender: SO_BROADCAST", e))?;
        }
        Ok(s)
    })
    .map_err(netns_err(ns))?
}

/// Sends one UDP datagram with a unique token from namespace `src_ns` to `dst` (e.g. the
/// containers' broadcast address) on `port`, and returns how many copies of that token each
/// namespace in `receivers` got within `window` — for "delivered exactly once" checks.
pub fn udp_broadcast(
    src_ns: &str,
    dst: Ipv4Addr,
    port: u16,
    receivers: &[&str],
    window: Duration,
) -> Result<Vec<u64>> {
    let tok = token("bcast");
    let sock = udp_sender(src_ns, true)?;
    udp_count(receivers, port, &tok, window, || {
        sock.send_to(&tok, (dst, port))
            .map_err(|e| Error::io(format!("udp send to {dst}:{port} from {src_ns}"), e))?;
        Ok(())
    })
}

/// Sends `count` UDP datagrams (same unique token) from `src_ns` to `dst:port`, and returns how
/// many arrived in `dst_ns` within `window` after the last was sent. Sending is paced lightly
/// (a yield every 64 datagrams) so the burst measures forwarding, not socket-buffer overflow.
pub fn udp_unicast(
    src_ns: &str,
    dst_ns: &str,
    dst: Ipv4Addr,
    port: u16,
    count: u64,
    window: Duration,
) -> Result<u64> {
    let tok = token("ucast");
    let sock = udp_sender(src_ns, false)?;
    let counts = udp_count(&[dst_ns], port, &tok, window, || {
        for i in 0..count {
            sock.send_to(&tok, (dst, port)).map_err(|e| {
                Error::io(format!("udp send #{i} to {dst}:{port} from {src_ns}"), e)
            })?;
            if i % 64 == 63 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        Ok(())
    })?;
    Ok(counts[0])
}

/// Counts GRE packets (IP protocol 47) delivered to a namespace, via a raw GRE socket, which
/// gets a copy of every incoming GRE packet alongside the switch's own socket. An observer
/// independent of the switch's counters.
#[derive(Debug)]
pub struct GreCapture {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
    thread: Option<JoinHandle<io::Result<Result<()>>>>,
}

impl GreCapture {
    /// Starts counting in namespace `ns`; returns once the socket is open.
    pub fn start(ns: &str) -> Result<GreCapture> {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let (st, ct) = (stop.clone(), count.clone());
        let thread = spawn_in_netns(ns, move || -> Result<()> {
            let opened = Socket::new(
                Domain::IPV4,
                Type::RAW,
                Some(Protocol::from(libc::IPPROTO_GRE)),
            )
            .and_then(|s| s.set_read_timeout(Some(TICK)).map(|()| s))
            .map_err(|e| Error::io("raw GRE socket", e));
            let s = match opened {
                Ok(s) => s,
                Err(e) => {
                    // The error is reported through the channel; start() returns it.
                    let _ = ready_tx.send(Err(e));
                    return Ok(());
                }
            };
            let _ = ready_tx.send(Ok(()));
            let mut buf = [0u8; 65536];
            while !st.load(Ordering::Relaxed) {
                match (&s).read(&mut buf) {
                    Ok(_) => {
                        ct.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if io_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Error::io("raw GRE socket recv", e)),
                }
            }
            Ok(())
        })
        .map_err(|e| Error::io("spawning GRE capture thread", e))?;
        let mut cap = GreCapture {
            stop,
            count,
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(cap),
            Ok(Err(e)) => Err(e),
            // The thread could not enter the namespace: report that error.
            Err(_) => match cap.thread.take().map(JoinHandle::join) {
                Some(Ok(Err(source))) => Err(Error::Netns {
                    ns: ns.to_string(),
                    source,
                }),
                _ => Err(Error::Timeout {
                    what: format!("GRE capture start in {ns}"),
                    timeout: Duration::from_secs(5),
                }),
            },
        }
    }

    /// Packets counted so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Stops the capture and returns the final count.
    pub fn stop(mut self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Ok(r)) => r?,
                Ok(Err(e)) => return Err(Error::io("GRE capture thread", e)),
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        Ok(self.count())
    }
}

impl Drop for GreCapture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_rfc1071_example() {
        // The worked example of RFC 1071 section 3: sum 0xddf2, checksum its complement.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(inet_checksum(&data), !0xddf2);
    }

    #[test]
    fn echo_request_checks_out_and_reply_parses() {
        let req = echo_request(0x1234, 7);
        assert_eq!(inet_checksum(&req), 0);
        // Turn it into a reply inside a minimal IPv4 header from 10.77.0.2.
        let mut icmp = req.clone();
        icmp[0] = 0;
        icmp[2] = 0;
        icmp[3] = 0;
        let c = inet_checksum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let mut pkt = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 77, 0, 2, 10, 77, 0, 1,
        ];
        pkt.extend_from_slice(&icmp);
        let src = Ipv4Addr::new(10, 77, 0, 2);
        assert_eq!(parse_echo_reply(&pkt, src, 0x1234), Some(7));
        assert_eq!(parse_echo_reply(&pkt, src, 0x1235), None);
        assert_eq!(
            parse_echo_reply(&pkt, Ipv4Addr::new(10, 77, 0, 3), 0x1234),
            None
        );
        pkt[30] ^= 1; // corrupt the payload: checksum must reject it
        assert_eq!(parse_echo_reply(&pkt, src, 0x1234), None);
    }

    #[test]
    fn pattern_is_periodic_and_windowed() {
        let p = Pattern::new();
        let per = Pattern::PERIOD as u64;
        assert_eq!(p.slice(5, 100), p.slice(per + 5, 100));
        assert_eq!(p.slice(per - 3, 6)[3..], p.slice(0, 3)[..]);
        assert_ne!(p.slice(0, 64), p.slice(64, 64));
    }
}

/// What a Don't-Fragment echo request got back (see [`df_probe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DfProbe {
    /// An echo reply: the packet fitted.
    Reply,
    /// ICMP fragmentation-needed quoting our request, with this next-hop MTU, from this
    /// address.
    FragNeeded {
        /// Next-hop MTU in the ICMP error.
        mtu: u16,
        /// Source of the error.
        from: Ipv4Addr,
    },
    /// Nothing within the timeout.
    Nothing,
}

/// Sends from namespace `ns` one ICMP echo request to `dst` whose IP packet is `ip_len` bytes,
/// with DF set (like `ping -M do -s ip_len-28`, but `IP_PMTUDISC_PROBE`, so the sender's own
/// cached path MTU does not stop it locally), and waits up to `timeout` for the echo reply or an
/// ICMP fragmentation-needed about it.
pub fn df_probe(ns: &str, dst: Ipv4Addr, ip_len: usize, timeout: Duration) -> Result<DfProbe> {
    in_netns(ns, || sized_echo_here(dst, ip_len, true, timeout)).map_err(netns_err(ns))?
}

/// [`df_probe`] with DF clear (`IP_PMTUDISC_DONT`): routers and tunnels may fragment it, so
/// the answer should be [`DfProbe::Reply`] whatever the path MTU.
pub fn nodf_echo(ns: &str, dst: Ipv4Addr, ip_len: usize, timeout: Duration) -> Result<DfProbe> {
    in_netns(ns, || sized_echo_here(dst, ip_len, false, timeout)).map_err(netns_err(ns))?
}

fn sized_echo_here(dst: Ipv4Addr, ip_len: usize, df: bool, timeout: Duration) -> Result<DfProbe> {
    use std::os::fd::AsRawFd;
    let ctx = |what: &str| format!("DF probe {dst}: {what}");
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
        .map_err(|e| Error::io(ctx("raw ICMP socket (needs root)"), e))?;
    let v: libc::c_int = if df {
        libc::IP_PMTUDISC_PROBE
    } else {
        libc::IP_PMTUDISC_DONT
    };
    // SAFETY: passes a pointer to one c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(Error::io(
            ctx("IP_MTU_DISCOVER"),
            io::Error::last_os_error(),
        ));
    }
    let id = (std::process::id() as u16) ^ (unique() as u16).rotate_left(8) ^ 0x5a5a;
    let mut p = vec![8u8, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    p.resize(ip_len.saturating_sub(20).max(8), 0x42);
    let c = inet_checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    let to = SockAddr::from(SocketAddrV4::new(dst, 0));
    sock.send_to(&p, &to)
        .map_err(|e| Error::io(ctx("send"), e))?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(DfProbe::Nothing);
        }
        sock.set_read_timeout(Some(left))
            .map_err(|e| Error::io(ctx("set timeout"), e))?;
        let n = match (&sock).read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(DfProbe::Nothing)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(ctx("recv"), e)),
        };
        let pkt = &buf[..n];
        if pkt.len() < 20 {
            continue;
        }
        let ihl = usize::from(pkt[0] & 0x0f) * 4;
        let from = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
        let Some(icmp) = pkt.get(ihl..) else { continue };
        if icmp.len() < 8 {
            continue;
        }
        if icmp[0] == 0 && from == dst && icmp[4..6] == id.to_be_bytes() {
            return Ok(DfProbe::Reply);
        }
        if icmp[0] == 3 && icmp[1] == 4 {
            // The quoted request: its IP header, then type 8 and our id.
            let q = &icmp[8..];
            let Some(qihl) = q.first().map(|b| usize::from(b & 0x0f) * 4) else {
                continue;
            };
            if q.len() >= qihl + 8 && q[qihl] == 8 && q[qihl + 4..qihl + 6] == id.to_be_bytes() {
                let mtu = u16::from_be_bytes([icmp[6], icmp[7]]);
                return Ok(DfProbe::FragNeeded { mtu, from });
            }
        }
    }
}
