//! The tree in memory: bridges joined by links that carry BPDUs, with time stepped by hand.
//! Every step checks the safety property the data path relies on: the links on which both
//! ends forward never form a cycle.

use super::*;

/// Bridges and point-to-point links between them; link `k` joins `(a, port a)`–`(b, port b)`.
struct Net {
    br: Vec<Shared>,
    links: Vec<(usize, PortId, usize, PortId)>,
    cut: Vec<bool>,
    now: Millis,
    /// Bridges that never answer (a peer without STP).
    mute: Vec<bool>,
}

fn mac(i: usize) -> [u8; 6] {
    [2, 0, 0, 0, 0, i as u8 + 1]
}

impl Net {
    fn new(n: usize, links: &[(usize, usize)]) -> Net {
        let br: Vec<Shared> = (0..n)
            .map(|i| Shared::new(Config::default(), mac(i)))
            .collect();
        let mut next_port = vec![1 as PortId; n];
        let mut l = Vec::new();
        for &(a, b) in links {
            let (pa, pb) = (next_port[a], next_port[b]);
            next_port[a] += 1;
            next_port[b] += 1;
            br[a].with(|s| s.add_port(pa));
            br[b].with(|s| s.add_port(pb));
            l.push((a, pa, b, pb));
        }
        Net {
            br,
            cut: vec![false; l.len()],
            links: l,
            now: 0,
            mute: vec![false; n],
        }
    }

    fn peer_of(&self, node: usize, port: PortId) -> Option<(usize, PortId, usize)> {
        self.links
            .iter()
            .enumerate()
            .find_map(|(k, &(a, pa, b, pb))| {
                if a == node && pa == port {
                    Some((b, pb, k))
                } else if b == node && pb == port {
                    Some((a, pa, k))
                } else {
                    None
                }
            })
    }

    /// Delivers queued BPDUs until none are left (links have no delay).
    fn settle(&mut self) {
        for _ in 0..1000 {
            let mut q = Vec::new();
            for (i, b) in self.br.iter().enumerate() {
                b.with(|s| s.drain(|p, f| q.push((i, p, f.to_vec()))));
            }
            if q.is_empty() {
                return;
            }
            for (i, p, f) in q {
                if let Some((j, pj, k)) = self.peer_of(i, p) {
                    if !self.cut[k] && !self.mute[j] {
                        let now = self.now;
                        assert!(self.br[j].with(|s| s.receive(now, pj, &f)));
                    }
                }
            }
            self.assert_loop_free();
        }
        panic!("BPDUs never settled");
    }

    /// Advances time by `ms` in 100 ms ticks.
    fn run(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.now += 100;
            let now = self.now;
            for b in &self.br {
                b.with(|s| s.tick(now));
            }
            self.settle();
        }
    }

    fn state(&self, node: usize, port: PortId) -> (Role, State) {
        self.br[node].with(|s| s.port(port).unwrap())
    }

    /// Links whose both ends forward (data can cross them).
    fn active(&self) -> Vec<usize> {
        (0..self.links.len())
            .filter(|&k| {
                let (a, pa, b, pb) = self.links[k];
                !self.cut[k]
                    && self.br[a].state(pa) == State::Forwarding
                    && self.br[b].state(pb) == State::Forwarding
            })
            .collect()
    }

    fn assert_loop_free(&self) {
        let mut parent: Vec<usize> = (0..self.br.len()).collect();
        fn find(p: &mut [usize], x: usize) -> usize {
            let mut x = x;
            while p[x] != x {
                x = p[x];
            }
            x
        }
        for k in self.active() {
            let (a, _, b, _) = self.links[k];
            let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
            assert_ne!(ra, rb, "forwarding loop at t={} ms via link {k}", self.now);
            parent[ra] = rb;
        }
    }

    /// Every bridge reaches every other over active links.
    fn connected(&self) -> bool {
        let n = self.br.len();
        let mut seen = vec![false; n];
        let mut stack = vec![0];
        seen[0] = true;
        let act = self.active();
        while let Some(x) = stack.pop() {
            for &k in &act {
                let (a, _, b, _) = self.links[k];
                for (u, v) in [(a, b), (b, a)] {
                    if u == x && !seen[v] {
                        seen[v] = true;
                        stack.push(v);
                    }
                }
            }
        }
        seen.iter().all(|s| *s)
    }

    /// Runs until connected; returns how long it took (ms).
    fn converge(&mut self, limit: u64) -> u64 {
        let start = self.now;
        while !self.connected() {
            assert!(self.now - start < limit, "not connected after {limit} ms");
            self.run(100);
        }
        self.now - start
    }
}

#[test]
fn two_bridges_agree_without_waiting_for_forward_delay() {
    let mut n = Net::new(2, &[(0, 1)]);
    n.settle();
    let t = n.converge(1_000);
    assert!(t <= 100, "took {t} ms");
    assert_eq!(n.state(0, 1), (Role::Designated, State::Forwarding));
    assert_eq!(n.state(1, 1), (Role::Root, State::Forwarding));
    let st = n.br[1].with(|s| s.status());
    assert_eq!(st.root, BridgeId::new(32768, mac(0)));
    assert_eq!(st.root_cost, PATH_COST);
    assert_eq!(st.root_port, Some(1));
}

#[test]
fn a_ring_blocks_exactly_one_port_on_the_far_link() {
    // 0 (root, lowest MAC) — 1 — 2 — 0.
    let mut n = Net::new(3, &[(0, 1), (1, 2), (2, 0)]);
    n.settle();
    n.converge(1_000);
    n.run(5_000);
    assert_eq!(
        n.active().len(),
        2,
        "a spanning tree of three bridges has two links"
    );
    // Link 1–2: bridge 1 (lower id) is designated, bridge 2 blocks.
    assert_eq!(n.state(1, 2), (Role::Designated, State::Forwarding));
    assert_eq!(n.state(2, 1), (Role::Alternate, State::Discarding));
    assert_eq!(n.state(2, 2).0, Role::Root);
    assert_eq!(n.state(0, 1).0, Role::Designated);
    assert_eq!(n.state(0, 2).0, Role::Designated);
}

#[test]
fn losing_the_root_port_fails_over_to_the_alternate_in_three_hellos() {
    let mut n = Net::new(3, &[(0, 1), (1, 2), (2, 0)]);
    n.settle();
    n.run(5_000);
    let gen = n.br[0].flush_generation();
    n.cut[2] = true; // 2–0: bridge 2's root port
    let t = n.converge(30_000);
    // Information ages out after 3 × hello (6 s); then the alternate forwards at once.
    assert!((5_000..=7_000).contains(&t), "reconverged in {t} ms");
    assert_eq!(n.state(2, 1), (Role::Root, State::Forwarding));
    // The change reached the root, which flushed what it had learned.
    assert!(n.br[0].flush_generation() > gen);
    assert!(n.br[0].with(|s| s.status().topology_changes) >= 1);
    // The link comes back: the shorter path wins again, still loop-free at every step.
    n.cut[2] = false;
    n.run(8_000);
    assert!(n.connected());
    assert_eq!(n.state(2, 2).0, Role::Root);
    assert_eq!(n.state(2, 1), (Role::Alternate, State::Discarding));
}

#[test]
fn losing_a_designated_bridges_root_port_turns_the_blocked_end_around() {
    let mut n = Net::new(3, &[(0, 1), (1, 2), (2, 0)]);
    n.settle();
    n.run(5_000);
    n.cut[0] = true; // 0–1: bridge 1 now reaches the root only through bridge 2
    let t = n.converge(30_000);
    assert!((5_000..=7_000).contains(&t), "reconverged in {t} ms");
    assert_eq!(n.state(1, 2), (Role::Root, State::Forwarding));
    assert_eq!(n.state(2, 1), (Role::Designated, State::Forwarding));
    assert_eq!(n.br[1].with(|s| s.status().root_cost), 2 * PATH_COST);
}

#[test]
fn a_peer_declared_dead_fails_over_at_once() {
    let mut n = Net::new(3, &[(0, 1), (1, 2), (2, 0)]);
    n.settle();
    n.run(5_000);
    n.cut[2] = true;
    let now = n.now;
    n.br[2].with(|s| s.peer_down(now, 2));
    n.settle();
    assert_eq!(n.state(2, 1), (Role::Root, State::Forwarding));
    assert!(n.connected());
}

#[test]
fn without_agreements_a_designated_port_waits_two_forward_delays() {
    let mut n = Net::new(2, &[(0, 1)]);
    n.mute[1] = true;
    n.settle();
    n.run(14_000);
    assert_eq!(n.state(0, 1).1, State::Discarding);
    n.run(2_000);
    assert_eq!(n.state(0, 1).1, State::Learning);
    n.run(13_000);
    assert_eq!(n.state(0, 1).1, State::Learning);
    n.run(2_000);
    assert_eq!(n.state(0, 1).1, State::Forwarding);
}

#[test]
fn a_lower_priority_value_wins_the_root() {
    let cfg = Config {
        priority: 4096,
        ..Config::default()
    };
    let mut n = Net::new(2, &[(0, 1)]);
    n.br[1] = Shared::new(cfg, mac(1));
    n.br[1].with(|s| s.add_port(1));
    n.settle();
    n.converge(1_000);
    assert_eq!(n.state(0, 1).0, Role::Root);
    assert_eq!(
        n.br[0].with(|s| s.status().root),
        BridgeId::new(4096, mac(1))
    );
}

#[test]
fn garbage_and_stale_bpdus_are_refused_or_ignored() {
    let sh = Shared::new(Config::default(), mac(0));
    sh.with(|s| s.add_port(1));
    assert!(!sh.with(|s| s.receive(0, 1, &[0u8; 60])));
    let mut f = [0u8; 60];
    f[..6].copy_from_slice(&bpdu::DST);
    assert!(!sh.with(|s| s.receive(0, 1, &f)));
    // A superior BPDU whose message age reached max age is ignored.
    let r = Repr {
        kind: Kind::Rst,
        flags: bpdu::Role::Designated.bits(),
        root: BridgeId(1),
        root_cost: 0,
        bridge: BridgeId(1),
        port: 0x8001,
        message_age: bpdu::ms_to_wire(20_000),
        max_age: bpdu::ms_to_wire(20_000),
        hello: bpdu::ms_to_wire(2_000),
        forward_delay: bpdu::ms_to_wire(15_000),
    };
    assert!(sh.with(|s| s.receive(0, 1, &r.emit([2, 0, 0, 0, 0, 9]))));
    assert_eq!(sh.with(|s| s.status().root_port), None);
    // A BPDU on a port outside the tree is accepted and ignored.
    assert!(sh.with(|s| s.receive(0, 7, &r.emit([2, 0, 0, 0, 0, 9]))));
}

#[test]
fn ports_outside_the_tree_forward_and_removed_ports_are_forgotten() {
    let mut n = Net::new(3, &[(0, 1), (1, 2), (2, 0)]);
    n.settle();
    n.run(3_000);
    assert_eq!(
        n.br[2].state(0),
        State::Forwarding,
        "the TAP is not in the tree"
    );
    let now = n.now;
    n.br[2].with(|s| s.remove_port(now, 2)); // bridge 2 drops its root port's tunnel
    n.cut[2] = true;
    n.run(1_000);
    assert_eq!(n.state(2, 1), (Role::Root, State::Forwarding));
    assert!(n.br[2].with(|s| s.port(2)).is_none());
    assert_eq!(
        n.br[2].state(2),
        State::Discarding,
        "a removed tunnel carries nothing while the workers still have it"
    );
}
