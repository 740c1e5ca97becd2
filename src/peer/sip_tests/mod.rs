//! The SIP edge's scenarios on the real overlay: three [`Peer`]s (each the
//! overlay machine, the RFC 7904 usage and a SIP edge) in one ring, in
//! virtual time. Overlay links and node-to-node SIP connections deliver in
//! memory, in order and at once, losing nothing unless a test cuts them;
//! phones are played by the test with the raw messages baresip and
//! Linphone send (`crate::sip::test_phones`).
//!
//! Node A (peer 0) serves Alice, node B (peer 1) Bob; node C (peer 2) holds
//! a third copy of every record (RFC 6940 §10.4: two replicas) and
//! answers the tests' own Fetches.

mod calls;
mod crypto;
mod register;
mod usage;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{DialId, LinkId, Peer, PeerConfig, PeerEvent, host_candidate};
use crate::overlay::{Command, Outcome, OverlayConfig, OverlayNode, RequestId};
use crate::sim::{FastCrypto, SIM_EPOCH};
use crate::sip::edge::{EdgeConfig, SipEdge};
use crate::sip::message::SipMessage;
use crate::sip::test_phones::{DOMAIN, PhoneNet, account, alice, bob, login};
use crate::sip::transaction::TransportAddr;
use crate::time::WallTime;
use crate::usage::{UsageCounters, UsageEvent, fetch_command, node_ref, serving_nodes};
use crate::wire::attach::{APPLICATION_SIP, OverlayLinkType};
use crate::wire::storage::StoredDataValue;
use crate::wire::{KindId, NodeId};
use crypto::TestCrypto;

/// Peers in the ring.
const PEERS: usize = 3;
/// Port of a peer's overlay link, and of its node-to-node SIP.
const LINK_PORT: u16 = 6084;
const NODE_SIP_PORT: u16 = 5061;

fn node_id(i: usize) -> NodeId {
    let i = i as u128 + 1;
    NodeId::from_u128(0x1111_0000_0000_0000_0000_0000_0000_0000 * i + i)
}

fn host(i: usize, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, i as u8 + 1), port))
}

/// The peer an address (overlay or node SIP) belongs to.
fn peer_at(addr: SocketAddr, port: u16) -> Option<usize> {
    (0..PEERS).find(|&i| host(i, port) == addr)
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

/// Something to deliver, in order.
enum Ev {
    Overlay { to: usize, from: usize, bytes: Vec<u8> },
    Dial { from: usize, dial: DialId, to: Option<usize> },
    LinkClosed { at: usize, peer: usize },
    SipConnect { from: usize, to: usize },
    SipDialFailed { from: usize, node: NodeId },
    SipNode { to: usize, from: usize, bytes: Vec<u8> },
}

/// Three peers, their links, and the phones' mailboxes.
pub(super) struct Net {
    /// `None` once killed.
    peers: Vec<Option<Peer>>,
    pub ids: Vec<NodeId>,
    base: Instant,
    pub now: Instant,
    links: BTreeSet<(usize, usize)>,
    sip_conns: BTreeSet<(usize, usize)>,
    queue: VecDeque<Ev>,
    /// Node-to-node SIP messages are held instead of delivered (a node
    /// that went silent); connections still open.
    pub cut: bool,
    pub held: Vec<(usize, NodeId, Vec<u8>)>,
    /// Overlay messages are lost (links stay up): requests time out.
    pub lose_overlay: bool,
    inbox: Vec<(usize, TransportAddr, SipMessage)>,
    outcomes: BTreeMap<(usize, RequestId), Outcome>,
    refuse_users: Arc<AtomicBool>,
}

impl Net {
    pub fn new() -> Net {
        Net::with(|_| {})
    }

    /// A ring of three joined peers whose edges' configuration `tune` adjusts.
    pub fn with(tune: impl Fn(&mut EdgeConfig)) -> Net {
        let base = Instant::now(); // layering: allowed (test-only: the fake clock's origin)
        let mut net = Net {
            peers: Vec::new(),
            ids: (0..PEERS).map(node_id).collect(),
            base,
            now: base,
            links: BTreeSet::new(),
            sip_conns: BTreeSet::new(),
            queue: VecDeque::new(),
            cut: false,
            held: Vec::new(),
            lose_overlay: false,
            inbox: Vec::new(),
            outcomes: BTreeMap::new(),
            refuse_users: Arc::new(AtomicBool::new(false)),
        };
        // One at a time: each joins a ring that is already whole.
        for i in 0..PEERS {
            net.spawn(i, &tune);
            let joined = net.run_until(Duration::from_secs(60), |n| n.peer(i).overlay().is_joined());
            assert!(joined, "peer {i} did not join");
        }
        let whole = net.run_until(Duration::from_secs(300), |n| {
            (0..PEERS)
                .all(|i| (0..PEERS).filter(|&j| j != i).all(|j| n.peer(i).overlay().successors().contains(&n.ids[j])))
        });
        assert!(whole, "the ring did not settle");
        net
    }

    fn spawn(&mut self, i: usize, tune: &impl Fn(&mut EdgeConfig)) {
        let id = self.ids[i];
        let (now, wall) = (self.now, self.wall());
        let crypto = TestCrypto { inner: FastCrypto::new(id, DOMAIN), refuse_users: Arc::clone(&self.refuse_users) };
        let config = OverlayConfig { overlay_name: DOMAIN.into(), ..OverlayConfig::default() };
        let mut overlay = OverlayNode::new(config, id, Box::new(crypto), i as u64 + 1, now, wall);
        // §4 of RFC 7904: where AppAttach says this node serves SIP.
        let sip = host_candidate(host(i, NODE_SIP_PORT), OverlayLinkType::TLS_TCP_FH_NO_ICE);
        overlay.set_app_candidates(vec![(APPLICATION_SIP, vec![sip])]);
        let advertise = (format!("198.51.100.{}", i + 1), 5060 + 10 * i as u16);
        let mut cfg = EdgeConfig::new(node_ref(id), DOMAIN, advertise, [i as u8 + 7; 32]);
        tune(&mut cfg);
        let mut edge = SipEdge::new(cfg).unwrap();
        edge.set_users(vec![account("alice", "wonderland"), account("bob", "builder"), account("carol", "c4r0l")]);
        let cfg = PeerConfig {
            link_type: OverlayLinkType::DTLS_UDP_SR_NO_ICE,
            advertise: Some(host(i, LINK_PORT)),
            bootstrap: vec![host(0, LINK_PORT)],
            client: false,
        };
        self.peers.push(Some(Peer::new(cfg, overlay, Some(edge), now, wall)));
        self.pump();
    }

    fn wall(&self) -> WallTime {
        SIM_EPOCH.saturating_add(self.now - self.base)
    }

    pub fn peer(&self, i: usize) -> &Peer {
        self.peers[i].as_ref().unwrap_or_else(|| panic!("peer {i} was killed"))
    }

    fn peer_mut(&mut self, i: usize) -> &mut Peer {
        self.peers[i].as_mut().unwrap_or_else(|| panic!("peer {i} was killed"))
    }

    pub fn edge(&self, i: usize) -> &SipEdge {
        self.peer(i).sip_edge().unwrap()
    }

    pub fn usage(&self, i: usize) -> UsageCounters {
        self.peer(i).sip_usage().unwrap().counters()
    }

    fn alive(&self, i: usize) -> bool {
        self.peers.get(i).is_some_and(Option::is_some)
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        self.links.contains(&pair(a, b))
    }

    fn index_of(&self, node: NodeId) -> usize {
        self.ids.iter().position(|n| *n == node).unwrap()
    }

    // ---- the tests' handles

    /// Makes signing as a user (every registration store) fail on every peer.
    pub fn refuse_user_signatures(&self, refuse: bool) {
        self.refuse_users.store(refuse, Ordering::Relaxed);
    }

    /// Gives peer `i` an overlay command; it completes at once, since
    /// links deliver without delay.
    pub fn command(&mut self, i: usize, cmd: Command) -> Outcome {
        let now = self.now;
        let id = self.peer_mut(i).command(now, cmd).unwrap();
        self.pump();
        self.outcomes.remove(&(i, id)).expect("the command completed")
    }

    /// Every SIP-REGISTRATION entry of `aor`, fetched through peer `via`.
    pub fn fetch(&mut self, via: usize, aor: &str) -> Vec<StoredDataValue> {
        match self.command(via, fetch_command(aor)) {
            Outcome::Fetched { values } => values,
            other => panic!("fetch of {aor}: {other:?}"),
        }
    }

    /// Whether the overlay resolves `aor` to node `node`, asked through
    /// another live peer.
    pub fn registered(&mut self, aor: &str, node: usize) -> bool {
        let via = (0..self.peers.len()).find(|&v| v != node && self.alive(v)).unwrap();
        serving_nodes(&self.fetch(via, aor)).contains(&node_ref(self.ids[node]))
    }

    /// SIP-REGISTRATION records held by all live peers together.
    pub fn registration_records(&self) -> usize {
        let per_peer = self.peers.iter().flatten().map(|p| p.overlay().records_by_kind());
        per_peer.flatten().filter(|(k, _)| *k == KindId::SIP_REGISTRATION).map(|(_, n)| n).sum()
    }

    /// Steps peer `i`'s wall clock back by `by` (an NTP correction).
    pub fn step_wall_clock_back(&mut self, i: usize, by: Duration) {
        let now = self.now;
        let wall = self.peer(i).wall(now);
        let earlier = WallTime::from_millis(wall.as_millis().saturating_sub(by.as_millis() as u64));
        self.peer_mut(i).set_wall_clock(now, earlier);
    }

    /// Peer `at` is told its SIP connection to peer `node` failed.
    pub fn sip_node_failed(&mut self, at: usize, node: usize) {
        let (now, id) = (self.now, self.ids[node]);
        self.peer_mut(at).handle_sip_node_failed(now, id, "unreachable");
        self.pump();
    }

    /// Bytes arrive at peer `to` over its SIP connection from peer `from`.
    pub fn sip_from_node(&mut self, to: usize, from: usize, bytes: &[u8]) {
        let (now, id) = (self.now, self.ids[from]);
        self.peer_mut(to).handle_sip_node(now, id, bytes);
        self.pump();
    }

    /// Kills peer `k`: its links and SIP connections close at the others.
    pub fn kill(&mut self, k: usize) {
        self.peers[k] = None;
        for (a, b) in std::mem::take(&mut self.links) {
            match (a == k, b == k) {
                (true, _) => self.queue.push_back(Ev::LinkClosed { at: b, peer: k }),
                (_, true) => self.queue.push_back(Ev::LinkClosed { at: a, peer: k }),
                _ => {
                    self.links.insert((a, b));
                }
            }
        }
        let gone = self.ids[k];
        for (a, b) in std::mem::take(&mut self.sip_conns) {
            if a != k && b != k {
                self.sip_conns.insert((a, b));
            } else {
                let other = if a == k { b } else { a };
                self.peer_mut(other).handle_sip_node_closed(gone);
            }
        }
        self.pump();
    }

    /// Moves the clock, firing every timer on the way.
    pub fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        self.run_until(by, |n| n.now >= end);
        self.now = end;
    }

    /// Runs timers until `done` holds or `limit` passes; whether it held.
    fn run_until(&mut self, limit: Duration, done: impl Fn(&Net) -> bool) -> bool {
        let end = self.now + limit;
        let mut fired_at = None;
        loop {
            if done(self) {
                return true;
            }
            let next = self.peers.iter().flatten().filter_map(Peer::poll_timeout).min();
            let Some(mut t) = next.map(|t| t.max(self.now)) else { break };
            // A deadline still due right after firing is retried 1 ms on.
            if fired_at == Some(t) {
                t += Duration::from_millis(1);
            }
            if t > end {
                break;
            }
            self.now = t;
            fired_at = Some(t);
            for i in 0..self.peers.len() {
                if let Some(p) = self.peers[i].as_mut()
                    && p.poll_timeout().is_some_and(|at| at <= t)
                {
                    p.handle_timeout(t);
                }
            }
            self.pump();
        }
        done(self)
    }

    // ---- delivery

    /// Delivers everything until nothing moves.
    fn pump(&mut self) {
        for i in 0..self.peers.len() {
            self.drive(i);
        }
        let mut steps = 0u32;
        while let Some(ev) = self.queue.pop_front() {
            steps += 1;
            assert!(steps < 1_000_000, "the peers never go quiet");
            self.handle(ev);
        }
    }

    /// Takes a peer's transmits and events.
    fn drive(&mut self, i: usize) {
        let Some(p) = self.peers.get_mut(i).and_then(Option::as_mut) else { return };
        let txs: Vec<_> = std::iter::from_fn(|| p.poll_transmit()).collect();
        let evs: Vec<_> = std::iter::from_fn(|| p.poll_event()).collect();
        for t in txs {
            let to = t.link.0 as usize;
            if self.linked(i, to) && !self.lose_overlay {
                self.queue.push_back(Ev::Overlay { to, from: i, bytes: t.bytes });
            }
        }
        for e in evs {
            self.on_event(i, e);
        }
    }

    fn on_event(&mut self, i: usize, e: PeerEvent) {
        match e {
            PeerEvent::Dial { dial, addr, .. } => {
                self.queue.push_back(Ev::Dial { from: i, dial, to: peer_at(addr, LINK_PORT) })
            }
            PeerEvent::CloseLink { link } => {
                let j = link.0 as usize;
                if self.links.remove(&pair(i, j)) {
                    self.queue.push_back(Ev::LinkClosed { at: j, peer: i });
                }
            }
            PeerEvent::Completed { id, outcome } => {
                self.outcomes.insert((i, id), outcome);
            }
            PeerEvent::Sip(UsageEvent::SendLocal { to, bytes }) => {
                self.inbox.push((i, to, SipMessage::parse(&bytes).unwrap()));
            }
            PeerEvent::Sip(UsageEvent::SendNode { node, bytes }) => {
                let j = self.index_of(node);
                assert!(self.sip_conns.contains(&pair(i, j)), "SendNode without a connection");
                if self.cut {
                    self.held.push((i, node, bytes));
                } else {
                    self.queue.push_back(Ev::SipNode { to: j, from: i, bytes });
                }
            }
            PeerEvent::Sip(UsageEvent::DialNode { node, addr }) => match peer_at(addr, NODE_SIP_PORT) {
                Some(j) if self.ids[j] == node => self.queue.push_back(Ev::SipConnect { from: i, to: j }),
                _ => self.queue.push_back(Ev::SipDialFailed { from: i, node }),
            },
            PeerEvent::Joined | PeerEvent::Rejoining | PeerEvent::JoinFailed { .. } | PeerEvent::Left => {}
        }
    }

    fn handle(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Overlay { to, from, bytes } => {
                if let Some(p) = self.peers[to].as_mut()
                    && self.links.contains(&pair(to, from))
                {
                    p.handle_input(now, LinkId(from as u64), &bytes);
                    self.drive(to);
                }
            }
            Ev::Dial { from, dial, to } => match to {
                Some(j) if j != from && self.alive(j) => self.link_up(from, j, dial),
                _ => {
                    if let Some(p) = self.peers[from].as_mut() {
                        p.handle_dial_failed(now, dial, "unreachable");
                    }
                    self.drive(from);
                }
            },
            Ev::LinkClosed { at, peer } => {
                if self.linked(at, peer) && self.alive(peer) {
                    return; // opened again meanwhile
                }
                self.links.remove(&pair(at, peer));
                if let Some(p) = self.peers[at].as_mut() {
                    p.handle_link_closed(now, LinkId(peer as u64));
                }
                self.drive(at);
            }
            Ev::SipConnect { from, to } => {
                if !self.alive(to) {
                    return self.handle(Ev::SipDialFailed { from, node: self.ids[to] });
                }
                self.sip_conns.insert(pair(from, to));
                for (x, other) in [(from, to), (to, from)] {
                    let id = self.ids[other];
                    if let Some(p) = self.peers[x].as_mut() {
                        p.handle_sip_node_connected(now, id);
                    }
                    self.drive(x);
                }
            }
            Ev::SipDialFailed { from, node } => {
                if let Some(p) = self.peers[from].as_mut() {
                    p.handle_sip_node_failed(now, node, "unreachable");
                }
                self.drive(from);
            }
            Ev::SipNode { to, from, bytes } => {
                let id = self.ids[from];
                if let Some(p) = self.peers[to].as_mut()
                    && self.sip_conns.contains(&pair(to, from))
                {
                    p.handle_sip_node(now, id, &bytes);
                    self.drive(to);
                }
            }
        }
    }

    /// A dial from `a` reached `b` (both ends learn it, as in `crate::sim`).
    fn link_up(&mut self, a: usize, b: usize, dial: DialId) {
        let now = self.now;
        let (id_a, id_b) = (self.ids[a], self.ids[b]);
        if self.linked(a, b) {
            self.peer_mut(a).handle_link_opened(now, LinkId(b as u64), id_b, Some(dial));
            return self.drive(a);
        }
        self.links.insert(pair(a, b));
        let kept_a = self.peer_mut(a).handle_link_opened(now, LinkId(b as u64), id_b, Some(dial));
        let kept_b = self.peer_mut(b).handle_link_opened(now, LinkId(a as u64), id_a, None);
        if !kept_a || !kept_b {
            self.links.remove(&pair(a, b));
            if kept_a {
                self.queue.push_back(Ev::LinkClosed { at: a, peer: b });
            }
            if kept_b {
                self.queue.push_back(Ev::LinkClosed { at: b, peer: a });
            }
        }
        self.drive(a);
        self.drive(b);
    }
}

impl PhoneNet for Net {
    fn local(&mut self, node: usize, from: TransportAddr, bytes: &[u8]) {
        let now = self.now;
        self.peer_mut(node).handle_sip_local(now, bytes, from);
        self.pump();
    }

    fn take(&mut self, to: TransportAddr) -> Vec<SipMessage> {
        let (mine, rest) = self.inbox.drain(..).partition(|(_, a, _)| *a == to);
        self.inbox = rest;
        mine.into_iter().map(|(_, _, m)| m).collect()
    }
}

/// Alice (baresip, UDP, behind NAT) registered on A, Bob (Linphone, TCP) on B.
pub(super) fn two_users() -> Net {
    let mut net = Net::new();
    assert_eq!(login(&mut net, 0, alice(), "alice", "wonderland", false).status().map(|s| s.as_u16()), Some(200));
    assert_eq!(login(&mut net, 1, bob(), "bob", "builder", true).status().map(|s| s.as_u16()), Some(200));
    net
}
