//! Where a GRE packet to a peer leaves, for the packet ring that bypasses the kernel's IP
//! output: the route's device, gateway and path MTU, and the gateway's Ethernet address, read
//! from the kernel's route and neighbour tables over rtnetlink. [`NextHops`] caches them per
//! peer address (every network's tunnels to one host share it) and reads them again every
//! [`REFRESH_MS`], so a new neighbour, a changed route or a path MTU learned from ICMP is
//! picked up within a second.
//!
//! # Crate choice
//!
//! `netlink-packet-route` + `netlink-sys` (already used by `dnetctl`, maintained by the
//! rust-netlink project) build and parse the messages over a plain blocking socket: a worker
//! thread asks a couple of questions a second and needs no async runtime.

use crate::switch::Millis;
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use netlink_packet_route::link::{LinkAttribute, LinkLayerType, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteMetric};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::io;
use std::net::Ipv4Addr;
use std::time::Duration;

/// How often every peer's next hop is read again.
pub const REFRESH_MS: Millis = 1000;
/// How soon again while a peer's neighbour is being resolved (the raw socket's packets make
/// the kernel send ARP; the answer takes a round trip).
pub const RETRY_MS: Millis = 20;

/// A network device, as far as the ring needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// MTU.
    pub mtu: u32,
    /// Hardware address (zero if it has none).
    pub mac: [u8; 6],
    /// It is an Ethernet device (frames start with a 14-byte Ethernet header).
    pub ethernet: bool,
}

/// The route the kernel picks toward an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// Output device.
    pub oif: u32,
    /// Who gets the frame on that device: the gateway, or the address itself.
    pub next_hop: Ipv4Addr,
    /// The route's MTU, or the path MTU learned from ICMP, if it has one (else the device's).
    pub mtu: Option<u32>,
}

/// A neighbour table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// Its Ethernet address, when known.
    pub mac: Option<[u8; 6]>,
    /// Usable as is: reachable, permanent or needing no resolution. A stale (or delayed, or
    /// probing) entry still holds an address, but the kernel wants a packet through it to
    /// confirm it.
    pub confirmed: bool,
    /// Holds an address that may be sent to.
    pub usable: bool,
}

/// The link from a `RTM_NEWLINK` reply.
pub fn link_from(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        mtu: 0,
        mac: [0; 6],
        ethernet: m.header.link_layer_type == LinkLayerType::Ether,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::Mtu(v) => l.mtu = *v,
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Address(b) if b.len() == 6 => l.mac.copy_from_slice(b),
            _ => {}
        }
    }
    l
}

/// The route from a `RTM_NEWROUTE` reply to a route lookup toward `dst`; `None` without an
/// output device (unreachable, blackhole, multipath).
pub fn route_from(m: &RouteMessage, dst: Ipv4Addr) -> Option<Route> {
    let mut r = Route {
        oif: 0,
        next_hop: dst,
        mtu: None,
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Oif(i) => r.oif = *i,
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => r.next_hop = *g,
            RouteAttribute::Metrics(ms) => {
                for x in ms {
                    if let RouteMetric::Mtu(v) = x {
                        r.mtu = Some(*v).filter(|v| *v > 0);
                    }
                }
            }
            _ => {}
        }
    }
    (r.oif != 0).then_some(r)
}

/// The entry from a `RTM_NEWNEIGH` reply.
pub fn neighbour_from(m: &NeighbourMessage) -> Neighbour {
    let mac = m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => {
            let mut mac = [0; 6];
            mac.copy_from_slice(b);
            Some(mac)
        }
        _ => None,
    });
    let s = m.header.state;
    let confirmed = matches!(
        s,
        NeighbourState::Reachable | NeighbourState::Permanent | NeighbourState::Noarp
    );
    let usable = mac.is_some()
        && (confirmed
            || matches!(
                s,
                NeighbourState::Stale | NeighbourState::Delay | NeighbourState::Probe
            ));
    Neighbour {
        mac,
        confirmed,
        usable,
    }
}

/// A blocking rtnetlink socket for lookups (route, neighbour, link), with a short timeout so
/// a worker never hangs on it.
pub struct Rtnl {
    sock: Socket,
    seq: u32,
}

impl Rtnl {
    /// A socket in this thread's network namespace.
    pub fn open() -> io::Result<Rtnl> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        socket2::SockRef::from(&sock).set_read_timeout(Some(Duration::from_millis(200)))?;
        Ok(Rtnl { sock, seq: 0 })
    }

    /// Sends one request and returns the first message of its answer, `None` when the kernel
    /// answers ENOENT/ENODEV/ENETUNREACH-like "no such thing", the errno otherwise.
    fn get(&mut self, msg: RouteNetlinkMessage) -> io::Result<Option<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST;
        header.sequence_number = seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        self.sock.send(&buf, 0)?;
        loop {
            let (data, _) = self.sock.recv_from_full()?;
            let mut off = 0;
            while off + 16 <= data.len() {
                let len =
                    u32::from_ne_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]])
                        as usize;
                if len < 16 || off + len > data.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink reply",
                    ));
                }
                let part = &data[off..off + len];
                off += (len + 3) & !3;
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(part).map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("netlink reply: {e}"))
                })?;
                if m.header.sequence_number != seq {
                    continue;
                }
                return match m.payload {
                    NetlinkPayload::InnerMessage(inner) => Ok(Some(inner)),
                    NetlinkPayload::Error(e) => match e.code {
                        None => Ok(None),
                        Some(_) => {
                            let io = e.to_io();
                            match io.raw_os_error() {
                                Some(
                                    libc::ENOENT
                                    | libc::ENODEV
                                    | libc::ENETUNREACH
                                    | libc::EHOSTUNREACH,
                                ) => Ok(None),
                                _ => Err(io),
                            }
                        }
                    },
                    _ => Ok(None),
                };
            }
        }
    }

    /// The link with index `index`.
    pub fn link(&mut self, index: u32) -> io::Result<Option<Link>> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        Ok(match self.get(RouteNetlinkMessage::GetLink(m))? {
            Some(RouteNetlinkMessage::NewLink(l)) => Some(link_from(&l)),
            _ => None,
        })
    }

    /// The route toward `dst` (as `ip route get`).
    pub fn route(&mut self, dst: Ipv4Addr) -> io::Result<Option<Route>> {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.destination_prefix_length = 32;
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
        Ok(match self.get(RouteNetlinkMessage::GetRoute(m))? {
            Some(RouteNetlinkMessage::NewRoute(r)) => route_from(&r, dst),
            _ => None,
        })
    }

    /// The neighbour entry of `ip` on device `ifindex` (as `ip neigh get`).
    pub fn neighbour(&mut self, ifindex: u32, ip: Ipv4Addr) -> io::Result<Option<Neighbour>> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = ifindex;
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        Ok(match self.get(RouteNetlinkMessage::GetNeighbour(m))? {
            Some(RouteNetlinkMessage::NewNeighbour(n)) => Some(neighbour_from(&n)),
            _ => None,
        })
    }
}

/// How to reach one tunnel's peer through the ring's device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// Ethernet destination.
    pub mac: [u8; 6],
    /// Largest IPv4 packet the path takes (route or learned path MTU, at most the device's).
    pub mtu: u32,
    /// The neighbour entry needs a packet through the kernel to be confirmed: send the next
    /// one through the raw socket.
    pub confirm: bool,
}

/// Why a peer has no next hop through the ring (logged once per change).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unresolved {
    /// The route leaves by another device.
    OtherDevice(u32),
    /// No route.
    NoRoute,
    /// The neighbour is not resolved (yet): the raw socket's packets make the kernel resolve
    /// it.
    NoNeighbour,
    /// The lookup failed (errno).
    Lookup(i32),
}

/// Next hops per peer through one device, refreshed every [`REFRESH_MS`].
pub struct NextHops {
    rtnl: Rtnl,
    dev: Link,
    /// Per peer (sorted by address, as a binary search wants): the outcome.
    hops: Vec<(u32, Result<NextHop, Unresolved>)>,
    next_refresh: Millis,
}

impl NextHops {
    /// Next hops through device `dev`, none resolved yet.
    pub fn new(rtnl: Rtnl, dev: Link) -> NextHops {
        NextHops {
            rtnl,
            dev,
            hops: Vec::new(),
            next_refresh: 0,
        }
    }

    /// The device.
    pub fn device(&self) -> &Link {
        &self.dev
    }

    /// When [`NextHops::refresh`] is next due.
    pub fn deadline(&self) -> Millis {
        self.next_refresh
    }

    /// Read everything again at the next [`NextHops::refresh`] (a peer was added or moved).
    pub fn invalidate(&mut self) {
        self.next_refresh = 0;
    }

    /// The next hop toward `peer`; `None` until resolved through this device.
    #[inline]
    pub fn get(&mut self, peer: Ipv4Addr) -> Option<&mut NextHop> {
        let a = u32::from(peer);
        let i = self.hops.binary_search_by_key(&a, |e| e.0).ok()?;
        self.hops[i].1.as_mut().ok()
    }

    /// Reads the route and neighbour of every peer in `peers` (sorted, no repeats) again if
    /// due at `now`, and forgets the others. Calls `changed(peer, outcome)` when a peer's
    /// outcome differs from before.
    pub fn refresh(
        &mut self,
        now: Millis,
        peers: &[Ipv4Addr],
        mut changed: impl FnMut(Ipv4Addr, &Result<NextHop, Unresolved>),
    ) {
        if now < self.next_refresh {
            return;
        }
        self.next_refresh = now + REFRESH_MS;
        let mut retry = false;
        if let Ok(Some(l)) = self.rtnl.link(self.dev.index) {
            self.dev = l;
        }
        let mut hops = Vec::with_capacity(peers.len());
        for &peer in peers.iter().filter(|p| !p.is_unspecified()) {
            let a = u32::from(peer);
            let r = self.resolve(peer);
            retry |= r == Err(Unresolved::NoNeighbour);
            let before = self
                .hops
                .binary_search_by_key(&a, |e| e.0)
                .ok()
                .map(|i| &self.hops[i].1);
            if !before.is_some_and(|b| same_outcome(b, &r)) {
                changed(peer, &r);
            }
            hops.push((a, r));
        }
        debug_assert!(hops.windows(2).all(|w| w[0].0 < w[1].0), "peers sorted");
        self.hops = hops;
        if retry {
            self.next_refresh = now + RETRY_MS;
        }
    }

    fn resolve(&mut self, peer: Ipv4Addr) -> Result<NextHop, Unresolved> {
        let errno = |e: io::Error| Unresolved::Lookup(e.raw_os_error().unwrap_or(libc::EIO));
        let route = self.rtnl.route(peer).map_err(errno)?;
        let route = route.ok_or(Unresolved::NoRoute)?;
        let dev = &self.dev;
        if route.oif != dev.index {
            return Err(Unresolved::OtherDevice(route.oif));
        }
        let n = self
            .rtnl
            .neighbour(route.oif, route.next_hop)
            .map_err(errno)?
            .filter(|n| n.usable)
            .ok_or(Unresolved::NoNeighbour)?;
        Ok(NextHop {
            mac: n.mac.ok_or(Unresolved::NoNeighbour)?,
            mtu: route.mtu.map_or(dev.mtu, |m| m.min(dev.mtu)),
            confirm: !n.confirmed,
        })
    }
}

/// The same next hop for logging's sake: a change of the confirm flag alone is not news.
fn same_outcome(a: &Result<NextHop, Unresolved>, b: &Result<NextHop, Unresolved>) -> bool {
    match (a, b) {
        (Ok(x), Ok(y)) => x.mac == y.mac && x.mtu == y.mtu,
        (x, y) => x == y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_names_its_device_gateway_and_path_mtu() {
        let dst = Ipv4Addr::new(10, 200, 1, 2);
        let mut m = RouteMessage::default();
        m.attributes = vec![
            RouteAttribute::Destination(RouteAddress::Inet(dst)),
            RouteAttribute::Oif(7),
            RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(10, 200, 0, 254))),
            RouteAttribute::Metrics(vec![RouteMetric::Mtu(1400)]),
        ];
        assert_eq!(
            route_from(&m, dst),
            Some(Route {
                oif: 7,
                next_hop: Ipv4Addr::new(10, 200, 0, 254),
                mtu: Some(1400)
            })
        );
        // On-link: the destination itself is the next hop; no MTU metric.
        m.attributes = vec![RouteAttribute::Oif(3)];
        assert_eq!(
            route_from(&m, dst),
            Some(Route {
                oif: 3,
                next_hop: dst,
                mtu: None
            })
        );
        // No device (unreachable, blackhole): nothing to send through.
        m.attributes.clear();
        assert_eq!(route_from(&m, dst), None);
    }

    #[test]
    fn neighbour_states_decide_whether_to_send_and_whether_to_confirm() {
        let mac = vec![2, 0, 0, 0, 0, 9];
        let entry = |state, lladdr: Option<Vec<u8>>| {
            let mut m = NeighbourMessage::default();
            m.header.state = state;
            if let Some(a) = lladdr {
                m.attributes.push(NeighbourAttribute::LinkLayerAddress(a));
            }
            neighbour_from(&m)
        };
        let n = entry(NeighbourState::Reachable, Some(mac.clone()));
        assert!(n.usable && n.confirmed);
        assert_eq!(n.mac, Some([2, 0, 0, 0, 0, 9]));
        let n = entry(NeighbourState::Stale, Some(mac.clone()));
        assert!(n.usable && !n.confirmed);
        for s in [NeighbourState::Incomplete, NeighbourState::Failed] {
            assert!(!entry(s, Some(mac.clone())).usable, "{s:?}");
        }
        assert!(!entry(NeighbourState::Reachable, None).usable);
        assert!(entry(NeighbourState::Permanent, Some(mac)).confirmed);
    }

    #[test]
    fn links_say_whether_they_carry_ethernet() {
        let mut m = LinkMessage::default();
        m.header.index = 4;
        m.header.link_layer_type = LinkLayerType::Ether;
        m.attributes = vec![
            LinkAttribute::Mtu(1500),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1]),
        ];
        let l = link_from(&m);
        assert_eq!(
            (l.index, l.mtu, l.mac, l.ethernet),
            (4, 1500, [2, 0, 0, 0, 0, 1], true)
        );
        m.header.link_layer_type = LinkLayerType::Loopback;
        assert!(!link_from(&m).ethernet);
    }

    #[test]
    fn the_loopback_route_is_found_and_is_not_ethernet() {
        let Ok(mut nl) = Rtnl::open() else {
            return; // no netlink here (a sandbox): nothing to check against
        };
        let r = nl
            .route(Ipv4Addr::LOCALHOST)
            .expect("route lookup")
            .expect("a route to 127.0.0.1");
        let l = nl.link(r.oif).expect("link lookup").expect("its device");
        assert!(!l.ethernet, "lo carries no Ethernet header");
        assert_eq!(nl.link(0x7fff_fff0).expect("lookup"), None);
    }
}
