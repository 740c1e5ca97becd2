//! Two peers (and a non-routing client) of the real node machine wired by
//! hand, with no simulator in between: every transmit is delivered at
//! once, in order, and every `Connect` becomes a link at both ends.

// Integration tests drive real processes, sockets, files and clocks; clippy.toml's
// sans-IO lists are for the library's cores.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chordphone::overlay::{Command, Event, Outcome, OverlayConfig, OverlayNode, RequestId};
use chordphone::sim::{FastCrypto, user_name};
use chordphone::time::WallTime;
use chordphone::wire::storage::{DataValue, StoredDataValue};
use chordphone::wire::{KindId, NodeId, ResourceId};

const WALL: WallTime = WallTime::from_millis(1_800_000_000_000);

struct Net {
    nodes: BTreeMap<NodeId, OverlayNode>,
    now: Instant,
    done: BTreeMap<(NodeId, RequestId), Outcome>,
    transmits: usize,
}

impl Net {
    fn new() -> Self {
        Net { nodes: BTreeMap::new(), now: Instant::now(), done: BTreeMap::new(), transmits: 0 }
    }

    fn add(&mut self, id: u128, client: bool) -> NodeId {
        let id = NodeId::from_u128(id);
        let config = OverlayConfig { client, ..OverlayConfig::default() };
        let crypto = Box::new(FastCrypto::new(id, &config.overlay_name));
        self.nodes.insert(id, OverlayNode::new(config, id, crypto, id.as_u128() as u64, self.now, WALL));
        id
    }

    /// Opens a link; a dial to a node that is gone fails silently.
    fn link(&mut self, a: NodeId, b: NodeId) {
        if !self.nodes.contains_key(&a) || !self.nodes.contains_key(&b) {
            return;
        }
        let now = self.now;
        self.node(a).handle_link_up(now, b);
        self.node(b).handle_link_up(now, a);
    }

    fn node(&mut self, id: NodeId) -> &mut OverlayNode {
        self.nodes.get_mut(&id).expect("known node")
    }

    /// Delivers everything queued until the network is quiet.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                let now = self.now;
                while let Some(t) = self.node(id).poll_transmit() {
                    moved = true;
                    self.transmits += 1;
                    if let Some(dst) = self.nodes.get_mut(&t.to) {
                        dst.handle_input(now, id, &t.bytes);
                    }
                }
                while let Some(e) = self.node(id).poll_event() {
                    moved = true;
                    match e {
                        Event::Connect { peer, .. } => self.link(id, peer),
                        Event::Completed { id: req, outcome } => {
                            self.done.insert((id, req), outcome);
                        }
                        _ => {}
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the network never went quiet");
    }

    /// Advances time by `secs`, firing every timer on the way.
    fn run_for(&mut self, secs: u64) {
        let end = self.now + Duration::from_secs(secs);
        loop {
            self.settle();
            let next = self.nodes.values().filter_map(|n| n.poll_timeout().map(|(t, _)| t)).min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    for n in self.nodes.values_mut() {
                        n.handle_timeout(now);
                    }
                }
                _ => break,
            }
        }
        self.now = end;
    }

    /// Issues a command without waiting for its outcome.
    fn start(&mut self, at: NodeId, cmd: Command) {
        let now = self.now;
        self.node(at).command(now, cmd).expect("command accepted");
    }

    fn command(&mut self, at: NodeId, cmd: Command) -> Outcome {
        let now = self.now;
        let req = self.node(at).command(now, cmd).expect("command accepted");
        self.run_for(20);
        self.done.remove(&(at, req)).expect("command completed")
    }
}

fn store(net: &mut Net, at: NodeId, value: &[u8]) -> Outcome {
    let name = user_name(&at, &OverlayConfig::default().overlay_name);
    let cmd = Command::Store {
        resource_name: name.into_bytes(),
        kind: KindId::CHORDPHONE_TEST,
        value: StoredDataValue::Single(DataValue::new(value.to_vec())),
        lifetime_s: 3600,
    };
    net.command(at, cmd)
}

fn fetch(net: &mut Net, at: NodeId, owner: NodeId) -> Vec<Vec<u8>> {
    let name = user_name(&owner, &OverlayConfig::default().overlay_name);
    let cmd = Command::Fetch { resource: ResourceId::from_name(name.as_bytes()), kind: KindId::CHORDPHONE_TEST };
    match net.command(at, cmd) {
        Outcome::Fetched { values } => values
            .into_iter()
            .filter_map(|v| match v {
                StoredDataValue::Single(d) if d.exists => Some(d.value),
                _ => None,
            })
            .collect(),
        other => panic!("fetch failed: {other:?}"),
    }
}

#[test]
fn two_peers_join_store_and_fetch_across() {
    let mut net = Net::new();
    let a = net.add(1 << 100, false);
    let b = net.add(3 << 120, false);
    net.start(a, Command::CreateRing);
    net.link(a, b);
    net.start(b, Command::Join { via: a });
    net.run_for(60);
    assert!(net.node(a).is_joined() && net.node(b).is_joined());
    // On a ring of two each is the other's successor and predecessor.
    assert_eq!(net.node(a).successors(), vec![b]);
    assert_eq!(net.node(a).predecessors(), vec![b]);
    assert_eq!(net.node(b).successors(), vec![a]);

    assert!(matches!(store(&mut net, a, b"from a"), Outcome::Stored { .. }));
    assert!(matches!(store(&mut net, b, b"from b"), Outcome::Stored { .. }));
    assert_eq!(fetch(&mut net, b, a), vec![b"from a".to_vec()]);
    assert_eq!(fetch(&mut net, a, b), vec![b"from b".to_vec()]);
    // With one other peer, every record is held by both (responsible + replica).
    for owner in [a, b] {
        let r = ResourceId::from_name(user_name(&owner, &OverlayConfig::default().overlay_name).as_bytes());
        assert!(net.node(a).holds(&r, KindId::CHORDPHONE_TEST) && net.node(b).holds(&r, KindId::CHORDPHONE_TEST));
    }

    // A lookup of a point just after `a` belongs to `b`.
    let point = NodeId::from_u128((1 << 100) + 1).to_resource();
    match net.command(a, Command::Lookup { resource: point }) {
        Outcome::LookedUp { responsible, hops, .. } => {
            assert_eq!(responsible, b);
            assert_eq!(hops, 1);
        }
        other => panic!("lookup failed: {other:?}"),
    }
}

#[test]
fn a_client_stores_and_fetches_through_its_peer_and_routes_nothing() {
    let mut net = Net::new();
    let a = net.add(1 << 100, false);
    let b = net.add(3 << 120, false);
    let c = net.add(2 << 120, true);
    net.start(a, Command::CreateRing);
    net.link(a, b);
    net.start(b, Command::Join { via: a });
    net.run_for(60);
    net.link(c, b);
    net.start(c, Command::Join { via: b });
    net.run_for(60);
    assert!(net.node(c).is_joined());

    assert!(matches!(store(&mut net, c, b"from the client"), Outcome::Stored { .. }));
    assert_eq!(fetch(&mut net, a, c), vec![b"from the client".to_vec()]);
    assert_eq!(fetch(&mut net, c, a).len(), 0);
    assert!(matches!(store(&mut net, a, b"from a"), Outcome::Stored { .. }));
    assert_eq!(fetch(&mut net, c, a), vec![b"from a".to_vec()]);

    // §4.2: the client is in nobody's routing table and stores nothing,
    // though its id (2<<120) lies between the peers on the ring.
    for p in [a, b] {
        let n = net.node(p);
        assert!(!n.successors().contains(&c) && !n.predecessors().contains(&c) && !n.fingers().contains(&c));
    }
    assert!(net.node(c).records_by_kind().iter().all(|(_, n)| *n == 0));
    assert!(net.transmits > 0);
}

#[test]
fn graceful_leave_hands_data_to_the_successor() {
    let mut net = Net::new();
    let ids: Vec<NodeId> = [1u128 << 100, 1 << 120, 1 << 125, 1 << 126].iter().map(|i| net.add(*i, false)).collect();
    net.start(ids[0], Command::CreateRing);
    for id in &ids[1..] {
        net.link(*id, ids[0]);
        net.start(*id, Command::Join { via: ids[0] });
        net.run_for(60);
    }
    assert!(ids.iter().all(|i| net.node(*i).is_joined()));
    assert!(matches!(store(&mut net, ids[1], b"kept"), Outcome::Stored { .. }));
    // Everyone leaves but ids[0], one by one; the record must survive.
    for id in [ids[3], ids[2], ids[1]] {
        assert_eq!(net.command(id, Command::Leave), Outcome::Left);
        let peers: Vec<NodeId> = net.nodes.keys().copied().filter(|p| *p != id).collect();
        for p in peers {
            let now = net.now;
            net.node(p).handle_link_down(now, id);
        }
        net.nodes.remove(&id);
        net.run_for(60);
    }
    assert_eq!(fetch(&mut net, ids[0], ids[1]), vec![b"kept".to_vec()]);
}

/// RFC 7904 USER-NODE-MATCH through the real certificate crypto: a node
/// stores a SIP registration signed with the AOR's certificate (which binds
/// the node's Node-ID), keyed by its own Node-ID; anything else is refused.
#[test]
fn sip_registration_is_stored_as_the_user() {
    use chordphone::overlay::{ApiError, Failure};
    use chordphone::sim::SimPki;
    use chordphone::wire::kinds::SipRegistration;
    use chordphone::wire::{Destination, error::ErrorCode};

    let pki = SimPki::new("chordphone.example", [9; 32], WALL).unwrap();
    let mut net = Net::new();
    let (a, b) = (NodeId::from_u128(10 << 100), NodeId::from_u128(20 << 100));
    for (id, seed) in [(a, 1u8), (b, 2u8)] {
        let crypto = Box::new(pki.enroll(id, [seed; 32]).unwrap());
        net.nodes.insert(id, OverlayNode::new(OverlayConfig::default(), id, crypto, seed.into(), net.now, WALL));
    }
    net.start(a, Command::CreateRing);
    net.link(a, b);
    net.start(b, Command::Join { via: a });
    net.run_for(10);
    let (key, cert) = pki.issue_user("alice@example.org", a, [3; 32]).unwrap();
    let now = net.now;
    assert_eq!(net.node(a).add_user_identity(now, &key, &cert).as_deref(), Ok("alice@example.org"));
    // A user certificate for another node is refused.
    let (key_b, cert_b) = pki.issue_user("bob@example.org", b, [4; 32]).unwrap();
    assert!(net.node(a).add_user_identity(now, &key_b, &cert_b).is_err());

    let reg = |node: NodeId| {
        let r = SipRegistration::Route { contact_prefs: vec![], destination_list: vec![Destination::Node(node)] };
        StoredDataValue::Dictionary(r.to_entry(node).unwrap())
    };
    let store = |user: &str, value| Command::StoreAs {
        user: user.into(),
        resource_name: b"alice@example.org".to_vec(),
        kind: KindId::SIP_REGISTRATION,
        value,
        lifetime_s: 600,
    };
    let ok = net.command(a, store("alice@example.org", reg(a)));
    // Keyed by another node's Node-ID: Forbidden at the responsible peer.
    let wrong_key = net.command(a, store("alice@example.org", reg(b)));
    // Signed by the node's own identity instead of the user's: Forbidden.
    let as_node = net.command(
        a,
        Command::Store {
            resource_name: b"alice@example.org".to_vec(),
            kind: KindId::SIP_REGISTRATION,
            value: reg(a),
            lifetime_s: 600,
        },
    );
    assert!(matches!(ok, Outcome::Stored { .. }), "{ok:?}");
    for r in [wrong_key, as_node] {
        match r {
            Outcome::Failed(Failure::Error(code, _)) => assert_eq!(code, ErrorCode::FORBIDDEN),
            other => panic!("expected Forbidden, got {other:?}"),
        }
    }
    let now = net.now;
    let unknown = net.node(a).command(now, store("carol@example.org", reg(a)));
    assert_eq!(unknown.err(), Some(ApiError::UnknownUser("carol@example.org".into())));
    let f = net.command(
        b,
        Command::Fetch { resource: ResourceId::from_name(b"alice@example.org"), kind: KindId::SIP_REGISTRATION },
    );
    match f {
        Outcome::Fetched { values } => assert_eq!(values, vec![reg(a)]),
        other => panic!("fetch: {other:?}"),
    }
}

/// AppAttach (§6.5.2): a node tells where it serves SIP; an application it
/// does not serve is Error_Not_Found.
#[test]
fn app_attach_returns_the_sip_listener() {
    use chordphone::overlay::Failure;
    use chordphone::wire::attach::{APPLICATION_SIP, IceCandidate, OverlayLinkType};
    use chordphone::wire::error::ErrorCode;
    use chordphone::wire::types::IpAddressPort;

    let mut net = Net::new();
    let a = net.add(1 << 100, false);
    let b = net.add(2 << 100, false);
    let sip = IceCandidate::host(
        IpAddressPort("127.0.0.1:15062".parse().unwrap()),
        OverlayLinkType::TLS_TCP_FH_NO_ICE,
        b"1".to_vec(),
        1,
    );
    net.node(b).set_app_candidates(vec![(APPLICATION_SIP, vec![sip.clone()])]);
    net.start(a, Command::CreateRing);
    net.link(a, b);
    net.start(b, Command::Join { via: a });
    net.run_for(10);
    match net.command(a, Command::AppAttach { node: b, application: APPLICATION_SIP }) {
        Outcome::AppAttached { peer, application, candidates } => {
            assert_eq!((peer, application, candidates), (b, APPLICATION_SIP, vec![sip]));
        }
        other => panic!("{other:?}"),
    }
    match net.command(a, Command::AppAttach { node: b, application: 9999 }) {
        Outcome::Failed(Failure::Error(code, _)) => assert_eq!(code, ErrorCode::NOT_FOUND),
        other => panic!("{other:?}"),
    }
}
