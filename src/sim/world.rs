//! The simulated world: every node's machine, the event loop that feeds
//! them in virtual time, and the library API scenario tests drive it with.

use std::collections::BTreeMap;
use std::mem;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::SimError;
use super::fast_crypto::{FastCrypto, user_name};
use super::links::addr_of;
use super::net::{Ev, Micros, Network, Queue, SlotId, Step, US_PER_S};
use super::options::{CryptoMode, SimOptions};
use super::phones::{PhoneMetrics, Phones};
use super::real_crypto::SimPki;
use super::reference::{self, RingCheck};
use super::report::Metrics;
use super::scenario::Workload;
use crate::overlay::{ApiError, Command, Outcome, OverlayConfig, OverlayCrypto, OverlayNode, RequestId};
use crate::peer::{Peer, PeerConfig, PeerEvent, PeerState, Transmit};
use crate::time::WallTime;
use crate::wire::NodeId;
use crate::wire::attach::OverlayLinkType;

/// A user's (PKCS#8 key, DER certificate).
pub(super) type UserIdentity = (Vec<u8>, Vec<u8>);

/// Wall clock at virtual time zero: 2026-01-01T00:00:00Z, so certificate
/// validity and storage times are the same in every run.
pub const SIM_EPOCH: WallTime = WallTime::from_millis(1_767_225_600_000);

/// A node that has not joined this long after its last attempt tries again
/// through another bootstrap peer.
pub(super) const JOIN_RETRY: Micros = 60 * US_PER_S;

/// What the simulator waits for after asking a node to do something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pending {
    /// Issued through [`Simulation::command`]; the outcome is kept.
    External,
    /// The final check of where a phone's AOR is served.
    Resolve {
        phone: u32,
        home: SlotId,
    },
    Store {
        rec: usize,
    },
    Lookup {
        point: NodeId,
    },
    Fetch {
        rec: usize,
        last: bool,
    },
}

/// One simulated node; the slot outlives the node so stale events can be
/// recognised.
pub(super) struct Slot {
    pub id: NodeId,
    /// `None` once the node crashed or left.
    pub node: Option<Box<Peer>>,
    pub joined: bool,
    pub leaving: bool,
    /// Peers the simulator holds a link to, by slot.
    pub links: Vec<SlotId>,
    /// The earliest Timer event queued for this node.
    pub timer_at: Option<Micros>,
    /// A Rebootstrap step is queued.
    pub rebootstrap_queued: bool,
    /// Partition group (meaningful while a partition is in force).
    pub group: u8,
    /// Whether this node has issued its (single) workload store.
    pub stored: bool,
    pub spawned_at: Micros,
}

impl Slot {
    pub fn alive(&self) -> bool {
        self.node.is_some()
    }

    /// The live peer's overlay machine.
    pub fn overlay(&self) -> Option<&OverlayNode> {
        self.node.as_deref().map(Peer::overlay)
    }
}

/// N overlay nodes in one process, in virtual time.
pub struct Simulation {
    pub(super) opts: SimOptions,
    pub(super) config: OverlayConfig,
    base: Instant,
    pub(super) now: Micros,
    pub(super) queue: Queue,
    pub(super) net: Network,
    /// Scenario decisions (who joins where, who departs, what to look up).
    pub(super) rng: ChaCha8Rng,
    pub(super) slots: Vec<Slot>,
    /// Live nodes (leaving ones included).
    pub(super) alive: BTreeMap<NodeId, SlotId>,
    /// The reference ring: live, joined, not leaving.
    pub(super) ring: BTreeMap<NodeId, SlotId>,
    pub(super) partitioned: bool,
    /// Live nodes that are leaving.
    pub(super) leaving: usize,
    crypto: CryptoSource,
    pub(super) pending: BTreeMap<(SlotId, u64), Pending>,
    outcomes: BTreeMap<(NodeId, RequestId), Outcome>,
    pub(super) metrics: Metrics,
    pub(super) work: Workload,
    pub(super) phones: Phones,
    pub(super) phone_metrics: PhoneMetrics,
    ring_created: bool,
    last_live_change: Micros,
    scratch_tx: Vec<Transmit>,
    scratch_ev: Vec<PeerEvent>,
}

impl Simulation {
    /// A world with no nodes yet, at virtual time zero.
    pub fn new(opts: &SimOptions) -> Result<Self, SimError> {
        opts.validate()?;
        let config = OverlayConfig::default();
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        let net = Network::new(opts.latency_ms, opts.loss, opts.detect_ms, rng.random());
        let crypto = CryptoSource::new(opts.crypto, &config.overlay_name, &mut rng)?;
        Ok(Simulation {
            opts: opts.clone(),
            config,
            // The one clock read: a base that virtual offsets are added to;
            // never read again, so runs stay deterministic.
            #[allow(clippy::disallowed_methods)] // reviewed: the anchor for virtual time
            base: Instant::now(), // layering: allowed (anchor for virtual time)
            now: 0,
            queue: Queue::default(),
            net,
            rng,
            slots: Vec::new(),
            alive: BTreeMap::new(),
            ring: BTreeMap::new(),
            partitioned: false,
            leaving: 0,
            crypto,
            pending: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            metrics: Metrics::default(),
            work: Workload::default(),
            phones: Phones::default(),
            phone_metrics: PhoneMetrics::default(),
            ring_created: false,
            last_live_change: 0,
            scratch_tx: Vec::new(),
            scratch_ev: Vec::new(),
        })
    }

    /// Spawns the configured number of nodes at `--join-rate` and runs until
    /// all have joined (or a minute after the last spawn). Returns whether
    /// every node joined.
    pub fn build(&mut self) -> bool {
        self.build_ring()
    }

    /// Virtual seconds since the start.
    pub fn now_s(&self) -> f64 {
        self.now as f64 / US_PER_S as f64
    }

    /// Runs the world for `secs` virtual seconds.
    pub fn run_for(&mut self, secs: f64) {
        self.run_until(self.now + secs_to_us(secs));
    }

    /// Adds one node, which joins through a random joined peer (or creates
    /// the ring if it is the first).
    pub fn spawn(&mut self) -> Result<NodeId, SimError> {
        let s = self.spawn_node()?;
        Ok(self.slots.get(s as usize).map(|sl| sl.id).unwrap_or_default())
    }

    /// Live nodes, in ring order.
    pub fn live_ids(&self) -> Vec<NodeId> {
        self.alive.keys().copied().collect()
    }

    /// The reference ring: live joined nodes that are not leaving.
    pub fn ring_ids(&self) -> Vec<NodeId> {
        self.ring.keys().copied().collect()
    }

    /// A live node's machine, for introspection.
    pub fn node(&self, id: NodeId) -> Option<&OverlayNode> {
        let s = *self.alive.get(&id)?;
        self.slots.get(s as usize)?.overlay()
    }

    /// The user name a node's certificate carries.
    pub fn user_name(&self, id: NodeId) -> String {
        user_name(&id, &self.config.overlay_name)
    }

    pub fn overlay_config(&self) -> &OverlayConfig {
        &self.config
    }

    /// Gives a live node a command; its outcome is kept for [`Self::outcome`].
    pub fn command(&mut self, id: NodeId, cmd: Command) -> Result<RequestId, SimError> {
        let s = *self.alive.get(&id).ok_or(SimError::UnknownNode(id))?;
        self.issue(s, cmd, Pending::External).map_err(SimError::Api)
    }

    /// Takes the outcome of a command given through [`Self::command`].
    pub fn outcome(&mut self, id: NodeId, req: RequestId) -> Option<Outcome> {
        self.outcomes.remove(&(id, req))
    }

    /// Runs until the command completes or `max_s` virtual seconds pass.
    pub fn wait_for(&mut self, id: NodeId, req: RequestId, max_s: f64) -> Option<Outcome> {
        let end = self.now + secs_to_us(max_s);
        loop {
            if let Some(o) = self.outcome(id, req) {
                return Some(o);
            }
            if self.now >= end {
                return None;
            }
            self.run_until((self.now + US_PER_S / 10).min(end));
        }
    }

    /// Crashes a node: no Leave; its peers notice after `--detect-ms`.
    pub fn crash(&mut self, id: NodeId) {
        if let Some(&s) = self.alive.get(&id) {
            self.metrics.crashes += 1;
            self.remove_node(s, false);
        }
    }

    /// Makes a node leave gracefully (§10.9); it is gone once the Leave
    /// completes, or a few seconds later.
    pub fn leave(&mut self, id: NodeId) {
        if let Some(&s) = self.alive.get(&id) {
            self.metrics.leaves += 1;
            self.start_leave(s);
        }
    }

    /// Splits the network: `group` on one side, every other live node on
    /// the other. Messages across are dropped until [`Self::heal`]; links
    /// across go down at both ends after `--detect-ms` unless healed first.
    pub fn partition(&mut self, group: &[NodeId]) {
        self.partition_nodes(group);
    }

    /// Ends a partition; nodes reconnect on their own.
    pub fn heal(&mut self) {
        self.partitioned = false;
    }

    /// Compares every node's neighbors with the reference ring.
    pub fn check_ring(&self) -> RingCheck {
        reference::check_ring(self)
    }

    /// Counters so far.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Events waiting in the queue.
    pub fn queued_events(&self) -> usize {
        self.queue.len()
    }
}

impl Simulation {
    pub(super) fn instant(&self) -> Instant {
        self.base + Duration::from_micros(self.now)
    }

    pub(super) fn wall(&self) -> WallTime {
        SIM_EPOCH.saturating_add(Duration::from_micros(self.now))
    }

    pub(super) fn slot(&self, s: SlotId) -> Option<&Slot> {
        self.slots.get(s as usize)
    }

    pub(super) fn slot_mut(&mut self, s: SlotId) -> Option<&mut Slot> {
        self.slots.get_mut(s as usize)
    }

    pub(super) fn is_alive(&self, s: SlotId) -> bool {
        self.slot(s).is_some_and(Slot::alive)
    }

    pub(super) fn id_of(&self, s: SlotId) -> NodeId {
        self.slot(s).map(|sl| sl.id).unwrap_or_default()
    }

    /// Runs every event due up to `until`.
    pub(super) fn run_until(&mut self, until: Micros) {
        while let Some((at, ev)) = self.queue.pop_until(until) {
            self.now = at;
            self.metrics.events += 1;
            self.handle(ev);
        }
        self.now = self.now.max(until);
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver { to, from, bytes } => self.deliver(to, from, &bytes),
            Ev::LinkUp { a, b, dial } => self.link_up(a, b, dial),
            Ev::DialFailed { a, dial } => self.dial_failed(a, dial),
            Ev::LinkDown { at, peer } => self.link_down(at, peer),
            Ev::Timer { slot } => self.timer(slot),
            Ev::ToPhone { phone, from, bytes } => self.deliver_to_phone(phone, from, &bytes),
            Ev::ToPeerSip { slot, phone, bytes } => self.deliver_to_peer_sip(slot, phone, &bytes),
            Ev::SipNode { to, from, bytes } => self.sip_node(to, from, &bytes),
            Ev::SipConnect { a, b } => self.sip_connect(a, b),
            Ev::SipDialFailed { a, node } => self.sip_dial_failed(a, node),
            Ev::PhoneTimer { phone } => self.phone_timer(phone),
            Ev::Retire { slot } => self.remove_node(slot, true),
            Ev::Step(step) => self.step(step),
        }
    }

    /// Creates a node; the first creates the ring, the others bootstrap.
    pub(super) fn spawn_node(&mut self) -> Result<SlotId, SimError> {
        let id = loop {
            let id = NodeId::from_u128(self.rng.random());
            if id != NodeId::WILDCARD && !self.alive.contains_key(&id) {
                break id;
            }
        };
        let seed: u64 = self.rng.random();
        let key_seed: [u8; 32] = self.rng.random();
        let crypto = self.crypto.make(id, key_seed)?;
        let s = SlotId::try_from(self.slots.len()).map_err(|_| SimError::InvalidOption("too many nodes".into()))?;
        let mut node = OverlayNode::new(self.config.clone(), id, crypto, seed, self.instant(), self.wall());
        let edge = self.make_edge(id, s)?;
        if edge.is_some() {
            node.set_app_candidates(Self::app_candidates(s));
        }
        // The first peer is the overlay's bootstrap node (it starts the
        // ring); every other one is given a random ring member to bootstrap
        // through, as an operator's configuration would list one.
        let me = addr_of(s);
        let bootstrap = if self.ring_created {
            // Never an empty list: a peer with none starts a ring of its own.
            let via = self.pick_joined(None, None).or_else(|| self.alive.values().next().copied());
            via.map(addr_of).into_iter().collect()
        } else {
            self.ring_created = true;
            vec![me]
        };
        let cfg = PeerConfig {
            link_type: OverlayLinkType::DTLS_UDP_SR_NO_ICE,
            advertise: Some(me),
            bootstrap,
            client: false,
        };
        let peer = Peer::new(cfg, node, edge, self.instant(), self.wall());
        self.note_live_change();
        self.slots.push(Slot {
            id,
            node: Some(Box::new(peer)),
            joined: false,
            leaving: false,
            links: Vec::new(),
            timer_at: None,
            rebootstrap_queued: false,
            group: 0,
            stored: false,
            spawned_at: self.now,
        });
        self.alive.insert(id, s);
        self.metrics.spawned += 1;
        self.drive(s, false);
        self.queue_rebootstrap(s, JOIN_RETRY);
        self.on_spawned(s);
        Ok(s)
    }

    /// Points a peer that has no ring at a random joined member and makes
    /// it bootstrap now; retried later while nobody is joined.
    pub(super) fn bootstrap_later(&mut self, s: SlotId, retry_after: Micros) {
        if retry_after > 0 {
            self.queue_rebootstrap(s, retry_after);
            return;
        }
        let group = self.slot(s).map(|sl| sl.group);
        match self.pick_joined(group, Some(s)) {
            Some(via) => {
                let now = self.instant();
                if let Some(peer) = self.slot_mut(s).and_then(|sl| sl.node.as_deref_mut()) {
                    peer.set_bootstrap(vec![addr_of(via)]);
                    peer.bootstrap_now(now);
                }
                self.drive(s, false);
                self.queue_rebootstrap(s, JOIN_RETRY);
            }
            None => self.queue_rebootstrap(s, US_PER_S),
        }
    }

    pub(super) fn queue_rebootstrap(&mut self, s: SlotId, after: Micros) {
        let at = self.now + after;
        if let Some(sl) = self.slot_mut(s)
            && !sl.rebootstrap_queued
        {
            sl.rebootstrap_queued = true;
            self.queue.push(at, Ev::Step(Step::Rebootstrap { slot: s }));
        }
    }

    /// Gives node `s` a command and drives it.
    pub(super) fn issue(&mut self, s: SlotId, cmd: Command, pending: Pending) -> Result<RequestId, ApiError> {
        let now = self.instant();
        let node = self.slots.get_mut(s as usize).and_then(|sl| sl.node.as_deref_mut());
        let Some(node) = node else { return Err(ApiError::NotJoined) };
        let r = node.command(now, cmd);
        if let Ok(id) = r {
            self.pending.insert((s, id.0), pending);
        }
        self.drive(s, false);
        r
    }

    fn deliver(&mut self, to: SlotId, from: SlotId, bytes: &[u8]) {
        if !self.reachable(from, to) {
            self.metrics.dropped_partition += 1;
            return;
        }
        let now = self.instant();
        let Some(node) = self.slots.get_mut(to as usize).and_then(|sl| sl.node.as_deref_mut()) else {
            self.metrics.dropped_dead += 1;
            return;
        };
        node.handle_input(now, crate::peer::LinkId(u64::from(from)), bytes);
        self.metrics.delivered += 1;
        self.drive(to, false);
    }

    fn timer(&mut self, s: SlotId) {
        let (now, base, t) = (self.now, self.base, self.instant());
        let Some(sl) = self.slots.get_mut(s as usize) else { return };
        if sl.timer_at != Some(now) {
            return; // superseded by an earlier timer
        }
        sl.timer_at = None;
        let Some(node) = sl.node.as_deref_mut() else { return };
        let due = node.poll_timeout().is_some_and(|at| to_us(base, at) <= now);
        if due {
            node.handle_timeout(t);
            self.metrics.timeouts += 1;
        }
        self.drive(s, due);
    }

    /// Drains a node's transmits and events and (re)schedules its timer.
    /// `after_timeout`: a deadline still in the past right after
    /// `handle_timeout` is a stalled timer; it is pushed 1 ms on.
    pub(super) fn drive(&mut self, s: SlotId, after_timeout: bool) {
        let (now, base) = (self.now, self.base);
        let Some(sl) = self.slots.get_mut(s as usize) else { return };
        let Some(node) = sl.node.as_deref_mut() else { return };
        let mut txs = mem::take(&mut self.scratch_tx);
        let mut evs = mem::take(&mut self.scratch_ev);
        while let Some(t) = node.poll_transmit() {
            txs.push(t);
        }
        while let Some(e) = node.poll_event() {
            evs.push(e);
        }
        if let Some(at) = node.poll_timeout() {
            let mut at = to_us(base, at).max(now);
            if after_timeout && at <= now {
                at = now + 1000;
                self.metrics.timer_stalls += 1;
            }
            if sl.timer_at.is_none_or(|cur| at < cur) {
                sl.timer_at = Some(at);
                self.queue.push(at, Ev::Timer { slot: s });
            }
        }
        let joined = node.overlay().is_joined() && node.state() != PeerState::Leaving;
        if joined != sl.joined {
            sl.joined = joined;
            if joined && !sl.leaving {
                self.ring.insert(sl.id, s);
                self.metrics.note_join(now.saturating_sub(sl.spawned_at));
            } else {
                self.ring.remove(&sl.id);
            }
        }
        for t in txs.drain(..) {
            self.send(s, t);
        }
        for e in evs.drain(..) {
            self.on_node_event(s, e);
        }
        self.scratch_tx = txs;
        self.scratch_ev = evs;
    }

    fn on_node_event(&mut self, s: SlotId, e: PeerEvent) {
        match e {
            PeerEvent::Dial { dial, addr, .. } => self.dial(s, dial, addr),
            PeerEvent::CloseLink { link } => {
                if let Ok(b) = SlotId::try_from(link.0) {
                    self.disconnect(s, b);
                }
            }
            PeerEvent::Joined => self.metrics.joined_events += 1,
            PeerEvent::Rejoining => {
                self.metrics.rejoins += 1;
                // A node that lost every link cannot find the ring alone.
                if self.slot(s).is_some_and(|sl| sl.links.is_empty()) {
                    self.queue_rebootstrap(s, US_PER_S);
                }
            }
            PeerEvent::Left => self.queue.push(self.now, Ev::Retire { slot: s }),
            PeerEvent::JoinFailed { reason } => {
                self.metrics.join_failures += 1;
                self.metrics.note_failure("join", reason);
            }
            PeerEvent::Completed { id, outcome } => match self.pending.remove(&(s, id.0)) {
                Some(Pending::External) => {
                    let node = self.id_of(s);
                    self.outcomes.insert((node, id), outcome);
                }
                Some(p) => self.completed(s, p, outcome),
                None => self.metrics.unmatched_completions += 1,
            },
            PeerEvent::Sip(ev) => self.on_sip_event(s, ev),
        }
    }

    /// A user certificate binding `user` (an AOR) and `node`, for real
    /// signatures; `None` with fast ones (which sign as any user).
    pub(super) fn issue_user_identity(&mut self, user: &str, node: NodeId) -> Result<Option<UserIdentity>, SimError> {
        let seed: [u8; 32] = self.rng.random();
        match &self.crypto {
            CryptoSource::Fast { .. } => Ok(None),
            CryptoSource::Real { pki } => {
                pki.issue_user(user, node, seed).map(Some).map_err(|e| SimError::Crypto(e.to_string()))
            }
        }
    }

    /// A random ring member in `group` (when partitioned), chosen as the
    /// responsible node of a random point: O(log N), slightly favouring
    /// nodes with long arcs.
    pub(super) fn pick_joined(&mut self, group: Option<u8>, exclude: Option<SlotId>) -> Option<SlotId> {
        for _ in 0..32 {
            let point = NodeId::from_u128(self.rng.random());
            let (_, &s) = self.ring.range(point..).next().or_else(|| self.ring.iter().next())?;
            let same_group = !self.partitioned || group.is_none() || self.slot(s).map(|sl| sl.group) == group;
            if Some(s) != exclude && same_group {
                return Some(s);
            }
        }
        None
    }

    /// Accounts node-seconds before the live population changes.
    pub(super) fn note_live_change(&mut self) {
        let live = self.alive.len() as u128;
        self.metrics.node_us += live * u128::from(self.now - self.last_live_change);
        self.last_live_change = self.now;
    }
}

/// Where nodes get their signatures from.
enum CryptoSource {
    Fast { overlay: String },
    Real { pki: Arc<SimPki> },
}

impl CryptoSource {
    fn new(mode: CryptoMode, overlay: &str, rng: &mut ChaCha8Rng) -> Result<Self, SimError> {
        let ca_seed: [u8; 32] = rng.random();
        Ok(match mode {
            CryptoMode::Fast => CryptoSource::Fast { overlay: overlay.to_owned() },
            CryptoMode::Real => {
                let pki = SimPki::new(overlay, ca_seed, SIM_EPOCH).map_err(|e| SimError::Crypto(e.to_string()))?;
                CryptoSource::Real { pki }
            }
        })
    }

    fn make(&self, id: NodeId, key_seed: [u8; 32]) -> Result<Box<dyn OverlayCrypto>, SimError> {
        Ok(match self {
            CryptoSource::Fast { overlay } => Box::new(FastCrypto::new(id, overlay)),
            CryptoSource::Real { pki } => {
                Box::new(pki.enroll(id, key_seed).map_err(|e| SimError::Crypto(e.to_string()))?)
            }
        })
    }
}

pub(super) fn secs_to_us(secs: f64) -> Micros {
    (secs.max(0.0) * US_PER_S as f64).round() as Micros
}

fn to_us(base: Instant, at: Instant) -> Micros {
    Micros::try_from(at.saturating_duration_since(base).as_micros()).unwrap_or(Micros::MAX)
}
