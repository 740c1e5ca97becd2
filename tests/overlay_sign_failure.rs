//! A failed signature never sends an unsigned message (RFC 6940 §6.3.4,
//! §7.1): two peers of the real node machine, each signing through a crypto
//! seam whose message or stored-value signing can be made to fail. A
//! command that cannot be signed fails locally with `ApiError::Signing` and
//! transmits nothing; a response that cannot be signed is not sent, so the
//! requester times out; every byte that does leave is signed.

// Integration tests drive real processes, sockets, files and clocks; clippy.toml's
// sans-IO lists are for the library's cores.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chordphone::overlay::{ApiError, Command, Event, Failure, Outcome, OverlayConfig, OverlayCrypto, OverlayNode};
use chordphone::security::SecurityError;
use chordphone::security::seam::{CryptoError, Signer};
use chordphone::sim::{FastCrypto, user_name};
use chordphone::time::WallTime;
use chordphone::wire::security_block::{SecurityBlock, SignatureAndHashAlgorithm};
use chordphone::wire::storage::{DataValue, StoredData, StoredDataValue};
use chordphone::wire::{Codec, KindId, NodeId, RawMessage, ResourceId};

const WALL: WallTime = WallTime::from_millis(1_800_000_000_000);

/// Switches that make one node's signing fail.
#[derive(Clone, Default)]
struct Faults {
    message: Arc<AtomicBool>,
    stored: Arc<AtomicBool>,
}

/// [`FastCrypto`] whose signing fails while a switch is on.
struct Flaky {
    inner: FastCrypto,
    faults: Faults,
}

fn refused() -> CryptoError {
    CryptoError::SigningFailed(SecurityError::Key("test: the key is unusable".into()))
}

impl OverlayCrypto for Flaky {
    fn sign_message(&self, overlay: u32, txid: u64, contents: &[u8]) -> Result<SecurityBlock, CryptoError> {
        if self.faults.message.load(Ordering::SeqCst) {
            return Err(refused());
        }
        self.inner.sign_message(overlay, txid, contents)
    }

    fn verify_message(
        &self,
        overlay: u32,
        txid: u64,
        contents: &[u8],
        security: &SecurityBlock,
        wall: WallTime,
    ) -> Result<Signer, CryptoError> {
        self.inner.verify_message(overlay, txid, contents, security, wall)
    }

    fn sign_stored(&self, resource: &ResourceId, kind: KindId, data: &mut StoredData) -> Result<(), CryptoError> {
        if self.faults.stored.load(Ordering::SeqCst) {
            return Err(refused());
        }
        self.inner.sign_stored(resource, kind, data)
    }

    fn verify_stored(
        &self,
        resource: &ResourceId,
        kind: KindId,
        data: &StoredData,
        security: &SecurityBlock,
        wall: WallTime,
    ) -> Result<Signer, CryptoError> {
        self.inner.verify_stored(resource, kind, data, security, wall)
    }
}

struct Net {
    nodes: BTreeMap<NodeId, OverlayNode>,
    faults: BTreeMap<NodeId, Faults>,
    done: BTreeMap<NodeId, Vec<Outcome>>,
    now: Instant,
    /// Messages sent, by sender.
    sent: BTreeMap<NodeId, usize>,
}

impl Net {
    fn new(ids: &[u128]) -> Self {
        let now = Instant::now();
        let mut net =
            Net { nodes: BTreeMap::new(), faults: BTreeMap::new(), done: BTreeMap::new(), now, sent: BTreeMap::new() };
        for &n in ids {
            let id = NodeId::from_u128(n);
            let config = OverlayConfig::default();
            let faults = Faults::default();
            let crypto = Box::new(Flaky { inner: FastCrypto::new(id, &config.overlay_name), faults: faults.clone() });
            net.nodes.insert(id, OverlayNode::new(config, id, crypto, n as u64, now, WALL));
            net.faults.insert(id, faults);
        }
        net
    }

    fn node(&mut self, id: NodeId) -> &mut OverlayNode {
        self.nodes.get_mut(&id).expect("known node")
    }

    /// Delivers everything queued until the network is quiet; every
    /// message on the wire must carry a real signature.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                let now = self.now;
                while let Some(t) = self.node(id).poll_transmit() {
                    moved = true;
                    assert_signed(&t.bytes);
                    *self.sent.entry(id).or_default() += 1;
                    if let Some(dst) = self.nodes.get_mut(&t.to) {
                        dst.handle_input(now, id, &t.bytes);
                    }
                }
                while let Some(e) = self.node(id).poll_event() {
                    moved = true;
                    match e {
                        Event::Connect { peer, .. } => {
                            self.node(id).handle_link_up(now, peer);
                            self.node(peer).handle_link_up(now, id);
                        }
                        Event::Completed { outcome, .. } => self.done.entry(id).or_default().push(outcome),
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

    fn run_for(&mut self, secs: u64) {
        let end = self.now + Duration::from_secs(secs);
        loop {
            self.settle();
            match self.nodes.values().filter_map(|n| n.poll_timeout().map(|(t, _)| t)).min() {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    self.nodes.values_mut().for_each(|n| n.handle_timeout(now));
                }
                _ => break,
            }
        }
        self.now = end;
    }

    fn sent(&self, id: NodeId) -> usize {
        self.sent.get(&id).copied().unwrap_or(0)
    }
}

fn assert_signed(bytes: &[u8]) {
    let raw = RawMessage::parse(bytes).expect("a well-formed message");
    let block = SecurityBlock::from_bytes(raw.security).expect("a security block");
    assert!(!block.signature.is_none(), "an unsigned message left a node");
    assert_ne!(block.signature.algorithm, SignatureAndHashAlgorithm::NONE);
    assert!(!block.signature.value.is_empty(), "a message with an empty signature left a node");
}

/// The test kind is USER-MATCH: a node writes under its own user name.
fn name(owner: NodeId) -> String {
    user_name(&owner, &OverlayConfig::default().overlay_name)
}

fn store_cmd(owner: NodeId) -> Command {
    Command::Store {
        resource_name: name(owner).into_bytes(),
        kind: KindId::CHORDPHONE_TEST,
        value: StoredDataValue::Single(DataValue::new(b"v".to_vec())),
        lifetime_s: 3600,
    }
}

fn fetch_cmd(owner: NodeId) -> Command {
    Command::Fetch { resource: ResourceId::from_name(name(owner).as_bytes()), kind: KindId::CHORDPHONE_TEST }
}

/// A (id 100) and B (id 200) in one ring: A is responsible for almost the
/// whole ring, so B's stores and fetches go to A.
fn ring() -> (Net, NodeId, NodeId) {
    let (a, b) = (NodeId::from_u128(100), NodeId::from_u128(200));
    let mut net = Net::new(&[100, 200]);
    let now = net.now;
    net.node(a).command(now, Command::CreateRing).expect("create");
    net.node(a).handle_link_up(now, b);
    net.node(b).handle_link_up(now, a);
    net.node(b).command(now, Command::Join { via: a }).expect("join");
    net.run_for(30);
    assert!(net.node(a).is_joined() && net.node(b).is_joined(), "the ring formed");
    (net, a, b)
}

#[test]
fn a_store_that_cannot_be_signed_fails_locally_and_sends_nothing() {
    let (mut net, _a, b) = ring();
    let before = net.sent(b);
    let now = net.now;

    // The stored value's signature fails (§7.1).
    net.faults[&b].stored.store(true, Ordering::SeqCst);
    let got = net.node(b).command(now, store_cmd(b));
    assert!(matches!(got, Err(ApiError::Signing(CryptoError::SigningFailed(_)))), "{got:?}");
    assert!(net.node(b).poll_transmit().is_none(), "nothing is transmitted");
    assert_eq!(net.node(b).counters().sign_failures, 1);

    // The message signature fails (§6.3.4), for a store and for a fetch.
    net.faults[&b].stored.store(false, Ordering::SeqCst);
    net.faults[&b].message.store(true, Ordering::SeqCst);
    for cmd in [store_cmd(b), fetch_cmd(b)] {
        let got = net.node(b).command(now, cmd);
        assert!(matches!(got, Err(ApiError::Signing(_))), "{got:?}");
        assert!(net.node(b).poll_transmit().is_none(), "nothing is transmitted");
    }
    assert_eq!(net.node(b).counters().sign_failures, 3);
    // A failed command has no outcome to report later: the error was it.
    let events: Vec<Event> = std::iter::from_fn(|| net.node(b).poll_event()).collect();
    assert!(!events.iter().any(|e| matches!(e, Event::Completed { .. })), "{events:?}");
    assert_eq!(net.sent(b), before);

    // Control: with signing back, the same store leaves B and succeeds.
    net.faults[&b].message.store(false, Ordering::SeqCst);
    net.node(b).command(now, store_cmd(b)).expect("store accepted");
    net.run_for(10);
    assert!(net.sent(b) > before, "a signed store is sent");
    assert!(matches!(net.done[&b].last(), Some(Outcome::Stored { .. })), "{:?}", net.done.get(&b));
}

#[test]
fn a_response_that_cannot_be_signed_is_not_sent() {
    let (mut net, a, b) = ring();
    let now = net.now;
    net.node(b).command(now, store_cmd(b)).expect("store accepted");
    net.run_for(10);
    assert!(matches!(net.done[&b].last(), Some(Outcome::Stored { .. })));

    // A holds "beta" but can no longer sign: its answer must not leave.
    net.faults[&a].message.store(true, Ordering::SeqCst);
    let failures_before = net.node(a).counters().sign_failures;
    let now = net.now;
    net.node(b).command(now, fetch_cmd(b)).expect("fetch accepted");
    net.run_for(60);
    assert!(net.node(a).counters().sign_failures > failures_before, "A counted its failures");
    assert_eq!(net.done[&b].last(), Some(&Outcome::Failed(Failure::Timeout)), "B got no (unsigned) answer");
    for n in net.nodes.values() {
        assert_eq!(n.counters().dropped_signature, 0, "no unsigned message reached a peer");
    }
}
