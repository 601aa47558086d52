//! A small synchronous rtnetlink client: links, addresses and routes, in this network namespace
//! or in another one. Shared by `dnetctl attach` and dnet's container plugins (`dnet-plugins`:
//! the Docker network driver and `dnet-cni`), which all plug veths into a bridge.
//!
//! # Crate choice
//!
//! Messages are built and parsed with `netlink-packet-route` (the message types `rtnetlink`
//! itself uses, maintained by the rust-netlink project) and sent over a plain blocking
//! `netlink-sys` socket. `rtnetlink` would add tokio, futures and about 25 more crates to a
//! command that makes a dozen requests in a row, and it would need a runtime per namespace
//! thread. The price is the request/acknowledge loop below ([`Netlink::request`]), about 60
//! lines. Nothing here parses `ip` output.
//!
//! # Namespaces
//!
//! A netlink socket talks to the namespace it was created in, for its whole life. To configure
//! a container, [`Netlink::open_in`] creates the socket on a short-lived thread that has entered
//! the container's namespace with `setns(CLONE_NEWNET)`; the socket is then used from the
//! calling thread like any other.

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    BridgePortState, InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage, State,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::fmt;
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd};

/// A failed netlink request: the errno, plus the kernel's extended-ack text when it gave one
/// (e.g. "Master device not found").
#[derive(Debug)]
pub struct NlError {
    /// The error as an errno.
    pub io: io::Error,
    /// The kernel's explanation (`NLMSGERR_ATTR_MSG`), if any.
    pub detail: Option<String>,
}

impl NlError {
    /// The errno, if the error came from the kernel or a syscall.
    pub fn errno(&self) -> Option<i32> {
        self.io.raw_os_error()
    }
}

impl fmt::Display for NlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.detail {
            Some(d) => write!(f, "{} ({d})", self.io),
            None => write!(f, "{}", self.io),
        }
    }
}

impl std::error::Error for NlError {}

impl From<io::Error> for NlError {
    fn from(io: io::Error) -> Self {
        NlError { io, detail: None }
    }
}

/// Result of a netlink request.
pub type NlResult<T> = Result<T, NlError>;

/// What the attach code needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index (in the namespace it was read from).
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// `IFLA_IFALIAS`, if set.
    pub alias: Option<String>,
    /// `IFLA_MASTER`: the bridge it is a port of, if any.
    pub master: Option<u32>,
    /// MTU.
    pub mtu: Option<u32>,
    /// Hardware address.
    pub mac: Option<[u8; 6]>,
    /// `IFLA_INFO_KIND` (e.g. `veth`, `bridge`, `tun`).
    pub kind: Option<String>,
    /// `IFF_UP` set.
    pub admin_up: bool,
    /// Operational state is `UP` (or `UNKNOWN`, what a TAP reports).
    pub oper_up: bool,
    /// `IFF_LOWER_UP` set.
    pub carrier: bool,
    /// Queueing discipline; `noop` until linkwatch attaches a real one after carrier-up.
    pub qdisc: Option<String>,
    /// For a bridge port: whether its STP state is forwarding (`None` if not a bridge port).
    pub bridge_forwarding: Option<bool>,
}

impl Link {
    fn from_message(m: &LinkMessage) -> Link {
        let mut l = Link {
            index: m.header.index,
            name: String::new(),
            alias: None,
            master: None,
            mtu: None,
            mac: None,
            kind: None,
            admin_up: m.header.flags.contains(LinkFlags::Up),
            oper_up: false,
            carrier: m.header.flags.contains(LinkFlags::LowerUp),
            qdisc: None,
            bridge_forwarding: None,
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n.clone(),
                LinkAttribute::IfAlias(n) => l.alias = Some(n.clone()),
                LinkAttribute::Controller(i) => l.master = Some(*i),
                LinkAttribute::Mtu(v) => l.mtu = Some(*v),
                LinkAttribute::Address(b) if b.len() == 6 => {
                    let mut mac = [0; 6];
                    mac.copy_from_slice(b);
                    l.mac = Some(mac);
                }
                LinkAttribute::OperState(s) => {
                    l.oper_up = matches!(s, State::Up | State::Unknown);
                }
                LinkAttribute::Qdisc(q) => l.qdisc = Some(q.clone()),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        match i {
                            LinkInfo::Kind(k) => l.kind = Some(k.to_string()),
                            LinkInfo::PortData(InfoPortData::BridgePort(attrs)) => {
                                for a in attrs {
                                    if let InfoBridgePort::State(st) = a {
                                        l.bridge_forwarding =
                                            Some(*st == BridgePortState::Forwarding);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        l
    }

    /// Up, with carrier, operational, with a real qdisc and, if it is a bridge port,
    /// forwarding: frames sent now are not dropped.
    pub fn ready(&self) -> bool {
        self.admin_up
            && self.carrier
            && self.oper_up
            && self.qdisc.as_deref() != Some("noop")
            && self.bridge_forwarding != Some(false)
    }
}

/// A blocking rtnetlink socket bound to one network namespace.
pub struct Netlink {
    sock: Socket,
    seq: u32,
}

impl fmt::Debug for Netlink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netlink")
            .field("fd", &self.sock.as_raw_fd())
            .finish()
    }
}

/// Runs `f` on a new thread that has entered the network namespace `ns` (an open
/// `/run/netns/NAME` or `/proc/PID/ns/net`), and returns its result.
pub fn in_netns_file<T: Send>(
    ns: &File,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    let fd = ns.as_fd();
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: `fd` is borrowed from an open File that outlives this scoped thread;
            // setns only changes this thread's network namespace.
            if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(e.kind(), format!("setns: {e}")));
            }
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Netlink> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        // Best effort: older kernels lack these, and they only improve error messages.
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        Ok(Netlink { sock, seq: 0 })
    }

    /// A socket in network namespace `ns` (see the module docs).
    pub fn open_in(ns: &File) -> io::Result<Netlink> {
        in_netns_file(ns, Netlink::open)
    }

    /// Sends `msg` and collects the replies: for a dump until `NLMSG_DONE`, otherwise until the
    /// acknowledgement (every non-dump request asks for one), failing with the kernel's error.
    pub fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> NlResult<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags | if dump { 0 } else { NLM_F_ACK };
        header.sequence_number = seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        self.sock.send(&buf, 0)?;

        let mut out = Vec::new();
        loop {
            let (data, _) = self.sock.recv_from_full()?;
            let mut off = 0;
            while off + 16 <= data.len() {
                let len =
                    u32::from_ne_bytes(data[off..off + 4].try_into().expect("4 bytes")) as usize;
                if len < 16 || off + len > data.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("truncated netlink message ({len} bytes at {off})"),
                    )
                    .into());
                }
                let part = &data[off..off + len];
                off += (len + 3) & !3;
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(part).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("undecodable netlink reply: {e}"),
                    )
                })?;
                if m.header.sequence_number != seq {
                    continue; // a late reply to an earlier request
                }
                let outer_flags = m.header.flags;
                match m.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(_) => Err(NlError {
                                io: e.to_io(),
                                detail: ext_ack_message(&e.header, outer_flags),
                            }),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(inner) => out.push(inner),
                    _ => {}
                }
            }
        }
    }

    /// The link named `name`, or `None` if there is none.
    pub fn link_by_name(&mut self, name: &str) -> NlResult<Option<Link>> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.get_link(m)
    }

    /// Every link of the namespace.
    pub fn links(&mut self) -> NlResult<Vec<Link>> {
        let replies = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
                _ => None,
            })
            .collect())
    }

    /// The link with index `index`, or `None` if there is none.
    pub fn link_by_index(&mut self, index: u32) -> NlResult<Option<Link>> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.get_link(m)
    }

    fn get_link(&mut self, m: LinkMessage) -> NlResult<Option<Link>> {
        match self.request(RouteNetlinkMessage::GetLink(m), 0) {
            Ok(replies) => Ok(replies.iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
                _ => None,
            })),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a veth pair: `name` here and `peer` in the namespace `peer_ns` (both ends get
    /// `mtu`; the peer gets `peer_mac`). Creating the peer directly in its namespace makes the
    /// pair appear atomically: no moment with both ends in this namespace, no name clash here.
    pub fn add_veth(
        &mut self,
        name: &str,
        peer: &str,
        peer_ns: &File,
        mtu: u32,
        peer_mac: [u8; 6],
    ) -> NlResult<()> {
        let mut p = LinkMessage::default();
        p.attributes = vec![
            LinkAttribute::IfName(peer.to_string()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::Address(peer_mac.to_vec()),
            LinkAttribute::NetNsFd(peer_ns.as_raw_fd()),
        ];
        let mut m = LinkMessage::default();
        m.attributes = vec![
            LinkAttribute::IfName(name.to_string()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
            ]),
        ];
        self.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)?;
        Ok(())
    }

    /// Creates a Linux bridge `name` (`ip link add NAME type bridge`), down. No MTU is set,
    /// so the kernel keeps the bridge's at its ports' smallest.
    pub fn add_bridge(&mut self, name: &str) -> NlResult<()> {
        let mut m = LinkMessage::default();
        m.attributes = vec![
            LinkAttribute::IfName(name.to_string()),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]),
        ];
        self.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)?;
        Ok(())
    }

    fn set_link(&mut self, index: u32, f: impl FnOnce(&mut LinkMessage)) -> NlResult<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        f(&mut m);
        self.request(RouteNetlinkMessage::SetLink(m), 0)?;
        Ok(())
    }

    /// Sets the interface alias (`ip link set DEV alias TEXT`).
    pub fn set_alias(&mut self, index: u32, alias: &str) -> NlResult<()> {
        self.set_link(index, |m| {
            m.attributes.push(LinkAttribute::IfAlias(alias.to_string()))
        })
    }

    /// Makes the link a port of bridge `master`.
    pub fn set_master(&mut self, index: u32, master: u32) -> NlResult<()> {
        self.set_link(index, |m| {
            m.attributes.push(LinkAttribute::Controller(master))
        })
    }

    /// Sets the link administratively up.
    pub fn set_up(&mut self, index: u32) -> NlResult<()> {
        self.set_link(index, |m| {
            m.header.flags = LinkFlags::Up;
            m.header.change_mask = LinkFlags::Up;
        })
    }

    /// Deletes the link (for a veth, both ends).
    pub fn del_link(&mut self, index: u32) -> NlResult<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(m), 0)?;
        Ok(())
    }

    fn addr_message(index: u32, ip: Ipv4Addr, prefix: u8) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = prefix;
        m.header.index = index;
        m.attributes = vec![
            AddressAttribute::Local(IpAddr::V4(ip)),
            AddressAttribute::Address(IpAddr::V4(ip)),
        ];
        m
    }

    /// Adds `ip/prefix` to the link, with the subnet broadcast address (`ip addr add ... brd +`;
    /// without it the kernel treats the broadcast address as a unicast neighbour).
    pub fn add_addr(&mut self, index: u32, ip: Ipv4Addr, prefix: u8) -> NlResult<()> {
        let mut m = Self::addr_message(index, ip, prefix);
        if prefix < 31 {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            let brd = Ipv4Addr::from(u32::from(ip) | !mask);
            m.attributes.push(AddressAttribute::Broadcast(brd));
        }
        self.request(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )?;
        Ok(())
    }

    /// The IPv4 addresses of the link with index `index`, as `(address, prefix length)`.
    pub fn ipv4_addrs(&mut self, index: u32) -> NlResult<Vec<(Ipv4Addr, u8)>> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        let replies = self.request(RouteNetlinkMessage::GetAddress(m), NLM_F_DUMP)?;
        Ok(replies
            .iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
                    a.attributes.iter().find_map(|at| match at {
                        AddressAttribute::Local(IpAddr::V4(ip)) => Some((*ip, a.header.prefix_len)),
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Removes `ip/prefix` from the link.
    pub fn del_addr(&mut self, index: u32, ip: Ipv4Addr, prefix: u8) -> NlResult<()> {
        let m = Self::addr_message(index, ip, prefix);
        self.request(RouteNetlinkMessage::DelAddress(m), 0)?;
        Ok(())
    }

    fn default_route(index: u32, gateway: Ipv4Addr) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.destination_prefix_length = 0;
        m.header.table = netlink_packet_route::route::RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Static;
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
        m.attributes = vec![
            RouteAttribute::Gateway(RouteAddress::Inet(gateway)),
            RouteAttribute::Oif(index),
        ];
        m
    }

    /// Adds a default route via `gateway` out of the link (`ip route add default via GW dev`).
    pub fn add_default_route(&mut self, index: u32, gateway: Ipv4Addr) -> NlResult<()> {
        let m = Self::default_route(index, gateway);
        self.request(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL)?;
        Ok(())
    }

    /// Removes the default route added by [`Netlink::add_default_route`].
    pub fn del_default_route(&mut self, index: u32, gateway: Ipv4Addr) -> NlResult<()> {
        let m = Self::default_route(index, gateway);
        self.request(RouteNetlinkMessage::DelRoute(m), 0)?;
        Ok(())
    }
}

/// The `NLMSGERR_ATTR_MSG` string from an error message's payload (after the `error` field):
/// the echoed request, only its 16-byte header if the reply's flags say `NLM_F_CAPPED`, then
/// TLVs if they say `NLM_F_ACK_TLVS` (the kernel adds them when `NETLINK_EXT_ACK` is on).
fn ext_ack_message(payload: &[u8], reply_flags: u16) -> Option<String> {
    const NLMSGERR_ATTR_MSG: u16 = 1;
    const NLM_F_CAPPED: u16 = 0x100;
    const NLM_F_ACK_TLVS: u16 = 0x200;
    if reply_flags & NLM_F_ACK_TLVS == 0 || payload.len() < 16 {
        return None;
    }
    let echoed = u32::from_ne_bytes(payload[0..4].try_into().ok()?) as usize;
    let mut off = if reply_flags & NLM_F_CAPPED != 0 {
        16
    } else {
        (echoed + 3) & !3
    };
    while off + 4 <= payload.len() {
        let len = u16::from_ne_bytes([payload[off], payload[off + 1]]) as usize;
        let ty = u16::from_ne_bytes([payload[off + 2], payload[off + 3]]) & 0x3fff;
        if len < 4 || off + len > payload.len() {
            return None;
        }
        if ty == NLMSGERR_ATTR_MSG {
            let s = &payload[off + 4..off + len];
            let s = s.split(|&b| b == 0).next().unwrap_or(s);
            return Some(String::from_utf8_lossy(s).into_owned());
        }
        off += (len + 3) & !3;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext_ack_message_after_capped_header() {
        let mut p = vec![0u8; 16];
        p[0..4].copy_from_slice(&40u32.to_ne_bytes()); // original request was 40 bytes long
        let msg = b"Master device not found\0";
        let len = (4 + msg.len()) as u16;
        p.extend_from_slice(&len.to_ne_bytes());
        p.extend_from_slice(&1u16.to_ne_bytes());
        p.extend_from_slice(msg);
        assert_eq!(
            ext_ack_message(&p, 0x300).as_deref(),
            Some("Master device not found")
        );
        assert_eq!(ext_ack_message(&p[..16], 0x300), None);
        assert_eq!(ext_ack_message(&p, 0x100), None, "no TLVs flagged");
    }

    #[test]
    fn broadcast_of_prefix() {
        let m = |p: u8| u32::MAX.checked_shl(32 - u32::from(p)).unwrap_or(0);
        assert_eq!(m(24), 0xffff_ff00);
        assert_eq!(m(0), 0);
        assert_eq!(m(30), 0xffff_fffc);
    }
}
