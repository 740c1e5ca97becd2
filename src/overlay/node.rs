//! The RELOAD node machine (RFC 6940 §6, §10): symmetric recursive routing,
//! end-to-end transactions, join/update/leave and replication, sans-IO.
//!
//! Entry points take `now`; wall time is derived from the [`WallTime`] given at
//! creation (resynchronised with [`OverlayNode::set_wall_clock`]). Request
//! handling lives in `handlers.rs`, topology maintenance in `maintain.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tracing::{debug, trace};

use super::api::{ApiError, Command, Event, Failure, Outcome, OverlayConfig, RequestId, TimerReason, Transmit};
use super::chord::{ChordConfig, NextHop, RoutingTable, in_half_open, resource_point};
use super::crypto::{CryptoError, OverlayCrypto, Signer};
use crate::storage::DataStore;
use crate::time::WallTime;
use crate::wire::codec::{Codec, Writer};
use crate::wire::error::{ErrorCode, ErrorResponse};
use crate::wire::fragment::{Reassembler, Reassembly};
use crate::wire::header::{ForwardingHeader, VERSION};
use crate::wire::message::{Body, MessageContents, RawMessage};
use crate::wire::security_block::SecurityBlock;
use crate::wire::{Destination, KindId, NodeId, ResourceId, overlay_hash};

/// Peers kept in the host cache (§11.4 suggests about ten).
const HOST_CACHE: usize = 16;

/// Requests answered within this window get the same answer again (§6.2.1).
const ANSWER_CACHE: Duration = Duration::from_secs(15);

/// Counters a runtime exports (Prometheus) and the simulator sums.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub messages_sent: u64,
    pub messages_received: u64,
    pub forwarded: u64,
    pub dropped_malformed: u64,
    pub dropped_signature: u64,
    pub dropped_unroutable: u64,
    pub retransmissions: u64,
    pub transactions_failed: u64,
    pub errors_sent: u64,
    /// Messages and values not sent because signing them failed (§6.3.4:
    /// nothing leaves unsigned).
    pub sign_failures: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    Idle,
    /// Attach to our own id + 1 sent through `via`; waiting for the
    /// admitting peer's answer, its Update, and our neighbors' links.
    Joining {
        via: NodeId,
        ap: Option<NodeId>,
        join_sent: bool,
    },
    Joined,
    Left,
}

/// Why a request was sent; decides what its answer does.
#[derive(Clone, Debug)]
pub(super) enum Purpose {
    User(RequestId, UserOp),
    JoinAttach,
    NeighborAttach(NodeId),
    FingerAttach,
    Join,
    /// §10.7.4.4: who does the rest of the ring think succeeds us?
    SuccessorCheck,
    /// Fire-and-forget maintenance (Update, Leave, replica Store).
    Maintenance,
}

#[derive(Clone, Debug)]
pub(super) enum UserOp {
    AppAttach,
    Store,
    Fetch(ResourceId, KindId),
    Lookup,
}

pub(super) struct Pending {
    pub bytes: Vec<u8>,
    pub retransmits: u32,
    pub deadline: Instant,
    pub purpose: Purpose,
}

/// One overlay peer (or client), sans-IO.
pub struct OverlayNode {
    pub(super) id: NodeId,
    pub(super) config: OverlayConfig,
    pub(super) crypto: Box<dyn OverlayCrypto>,
    pub(super) overlay: u32,
    pub(super) rng: ChaCha8Rng,
    pub(super) epoch: Instant,
    pub(super) wall_epoch: WallTime,
    pub(super) joined_at: Option<Instant>,
    pub(super) phase: Phase,
    pub(super) links: BTreeSet<NodeId>,
    pub(super) table: RoutingTable,
    /// Peers we are attaching to as neighbors (inserted when the link is up).
    pub(super) attaching: BTreeSet<NodeId>,
    /// Peers owed a full Update once their link is up (Attach send_update).
    pub(super) update_on_link: BTreeSet<NodeId>,
    /// A client's admitting peer (§4.2).
    pub(super) admitting: Option<NodeId>,
    /// While joining: the neighbor lists of the peer whose Update arrived
    /// (possibly before its Attach answer told us it is the admitting peer).
    pub(super) early_update: Option<(NodeId, Vec<NodeId>, Vec<NodeId>)>,
    /// Host cache (§11.4): peers we recently held a link to, newest last,
    /// with where to reach them. Re-contacted to detect partitions.
    pub(super) known: Vec<(NodeId, Vec<crate::wire::attach::IceCandidate>)>,
    /// Candidates learned from Attach for peers not (yet) in `known`.
    pub(super) candidates_seen: BTreeMap<NodeId, Vec<crate::wire::attach::IceCandidate>>,
    /// While joining: the admitting peer's neighbor lists have been seen.
    pub(super) ap_update_seen: bool,
    /// A join still unfinished at this time starts over.
    pub(super) join_deadline: Option<Instant>,
    pub(super) store: DataStore,
    /// The storage_time of our last Store: the next is later even if the
    /// wall clock is not (same millisecond, or stepped back).
    pub(super) last_storage_time: u64,
    /// Where the next anti-entropy round resumes among replica copies.
    pub(super) hand_back_cursor: Option<ResourceId>,
    pub(super) pending: BTreeMap<u64, Pending>,
    /// `pending`'s deadlines in time order, so the next one is found
    /// without a scan (thousands of requests can be in flight under load).
    pub(super) pending_deadlines: BTreeSet<(Instant, u64)>,
    pub(super) answered: BTreeMap<u64, (Instant, Vec<u8>)>,
    /// `answered`'s expiry times in insertion order: every entry lives the
    /// same `ANSWER_CACHE`, so the front is always the next to expire.
    pub(super) answered_order: VecDeque<(Instant, u64)>,
    pub(super) reassembler: Reassembler,
    pub(super) next_stabilize: Option<Instant>,
    pub(super) next_finger: Option<Instant>,
    pub(super) replicate_at: Option<Instant>,
    /// The replica set and predecessor our data was last arranged for.
    pub(super) replica_set: Vec<NodeId>,
    pub(super) last_predecessor: Option<NodeId>,
    pub(super) neighbors_dirty: bool,
    pub(super) transmits: VecDeque<Transmit>,
    pub(super) events: VecDeque<Event>,
    pub(super) next_request: u64,
    pub(super) counters: Counters,
}

impl Counters {
    /// Adds another node's counters (totals over many nodes).
    pub fn add(&mut self, c: &Counters) {
        self.messages_sent += c.messages_sent;
        self.messages_received += c.messages_received;
        self.forwarded += c.forwarded;
        self.dropped_malformed += c.dropped_malformed;
        self.dropped_signature += c.dropped_signature;
        self.dropped_unroutable += c.dropped_unroutable;
        self.retransmissions += c.retransmissions;
        self.transactions_failed += c.transactions_failed;
        self.errors_sent += c.errors_sent;
        self.sign_failures += c.sign_failures;
    }
}

impl OverlayNode {
    /// `wall`: the wall clock at `now`
    /// (storage lifetimes and certificate validity need wall time).
    pub fn new(
        config: OverlayConfig,
        id: NodeId,
        crypto: Box<dyn OverlayCrypto>,
        seed: u64,
        now: Instant,
        wall: WallTime,
    ) -> Self {
        let chord =
            ChordConfig { successors: config.neighbors, predecessors: config.neighbors, fingers: config.fingers };
        let store = DataStore::new(config.kinds.clone());
        let reassembler = Reassembler::new(config.max_message_size.max(64 * 1024), 1 << 20);
        OverlayNode {
            id,
            overlay: overlay_hash(&config.overlay_name),
            crypto,
            rng: ChaCha8Rng::seed_from_u64(seed),
            epoch: now,
            wall_epoch: wall,
            joined_at: None,
            phase: Phase::Idle,
            links: BTreeSet::new(),
            table: RoutingTable::new(id, &chord),
            attaching: BTreeSet::new(),
            update_on_link: BTreeSet::new(),
            admitting: None,
            early_update: None,
            ap_update_seen: false,
            join_deadline: None,
            known: Vec::new(),
            candidates_seen: BTreeMap::new(),
            store,
            last_storage_time: 0,
            hand_back_cursor: None,
            pending: BTreeMap::new(),
            pending_deadlines: BTreeSet::new(),
            answered: BTreeMap::new(),
            answered_order: VecDeque::new(),
            reassembler,
            next_stabilize: None,
            next_finger: None,
            replicate_at: None,
            replica_set: Vec::new(),
            last_predecessor: None,
            neighbors_dirty: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_request: 1,
            counters: Counters::default(),
            config,
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.id
    }

    pub fn config(&self) -> &OverlayConfig {
        &self.config
    }

    pub fn is_joined(&self) -> bool {
        self.phase == Phase::Joined
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Re-anchors wall time (the runtime calls this when the clock jumps).
    pub fn set_wall_clock(&mut self, now: Instant, wall: WallTime) {
        self.epoch = now;
        self.wall_epoch = wall;
    }

    pub fn command(&mut self, now: Instant, cmd: Command) -> Result<RequestId, ApiError> {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        match cmd {
            Command::CreateRing => {
                if self.phase != Phase::Idle {
                    return Err(ApiError::AlreadyJoined);
                }
                self.become_joined(now);
            }
            Command::Join { via } => {
                if self.phase != Phase::Idle {
                    return Err(ApiError::AlreadyJoined);
                }
                if !self.links.contains(&via) {
                    return Err(ApiError::NoLink(via));
                }
                self.start_join(now, via);
            }
            Command::Leave => {
                self.leave(now)?;
                self.complete(id, Outcome::Left);
            }
            Command::Store { resource_name, kind, value, lifetime_s } => {
                self.require_joined()?;
                self.store_value(now, id, &resource_name, kind, value, lifetime_s, None)?;
            }
            Command::StoreAs { user, resource_name, kind, value, lifetime_s } => {
                self.require_joined()?;
                self.store_value(now, id, &resource_name, kind, value, lifetime_s, Some(&user))?;
            }
            Command::Fetch { resource, kind } => {
                self.require_joined()?;
                self.fetch(now, id, resource, kind)?;
            }
            Command::AppAttach { node, application } => {
                self.require_joined()?;
                let body = Body::AppAttachReq(crate::wire::attach::AppAttachReq::new(
                    b"chordphone".to_vec(),
                    b"chordphone".to_vec(),
                    application,
                    Vec::new(),
                ));
                self.send_request(now, vec![Destination::Node(node)], body, Purpose::User(id, UserOp::AppAttach))?;
            }
            Command::Lookup { resource } => {
                self.require_joined()?;
                let body = Body::PingReq(crate::wire::topology::PingReq::default());
                self.send_request(now, vec![Destination::Resource(resource)], body, Purpose::User(id, UserOp::Lookup))?;
            }
        }
        self.flush(now);
        Ok(id)
    }

    pub fn handle_link_up(&mut self, now: Instant, peer: NodeId) {
        if peer == self.id || !self.links.insert(peer) {
            return;
        }
        debug!(node = %self.id, %peer, "link up");
        self.remember(peer, None);
        self.on_link_up(now, peer);
        self.flush(now);
    }

    pub fn handle_link_down(&mut self, now: Instant, peer: NodeId) {
        if !self.links.remove(&peer) {
            return;
        }
        debug!(node = %self.id, %peer, "link down");
        self.forget_peer(now, peer);
        self.flush(now);
    }

    /// Bytes received on the link to `from`. Never fails: malformed input
    /// is counted and dropped, illegal requests get a RELOAD error.
    pub fn handle_input(&mut self, now: Instant, from: NodeId, bytes: &[u8]) {
        self.counters.messages_received += 1;
        match self.reassembler.push(now, bytes) {
            Ok(Reassembly::Complete(whole)) => self.process(now, Some(from), whole),
            Ok(Reassembly::Pending) => {}
            Err(e) => {
                self.counters.dropped_malformed += 1;
                debug!(node = %self.id, %from, error = %e, "dropped malformed message");
            }
        }
        self.flush(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.retransmit_due(now);
        if let (Phase::Joining { .. }, Some(deadline)) = (self.phase, self.join_deadline)
            && deadline <= now
        {
            // §10.5 gives no timer; without one a lost Update strands us.
            self.restart_join(now, None);
        }
        self.expire_answers(now);
        self.reassembler.handle_timeout(now);
        let wall = self.wall(now);
        self.store.expire(wall);
        if self.next_stabilize.is_some_and(|t| t <= now) {
            self.stabilize(now);
        }
        if self.next_finger.is_some_and(|t| t <= now) {
            self.refresh_fingers(now);
        }
        if self.replicate_at.is_some_and(|t| t <= now) {
            self.replicate_at = None;
            self.replicate_all(now);
        }
        self.flush(now);
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<(Instant, TimerReason)> {
        let mut best: Option<(Instant, TimerReason)> = None;
        let mut offer = |t: Option<Instant>, r: TimerReason| {
            if let Some(t) = t
                && best.is_none_or(|(b, _)| t < b)
            {
                best = Some((t, r));
            }
        };
        offer(self.pending_deadlines.first().map(|(t, _)| *t), TimerReason::Retransmit);
        offer(self.next_stabilize, TimerReason::Stabilize);
        offer(self.join_deadline.filter(|_| matches!(self.phase, Phase::Joining { .. })), TimerReason::Retransmit);
        offer(self.next_finger, TimerReason::FingerRefresh);
        offer(self.replicate_at, TimerReason::Replication);
        offer(self.answered_order.front().map(|(t, _)| *t), TimerReason::Expiry);
        offer(self.reassembler.poll_timeout(), TimerReason::Expiry);
        offer(self.store.next_expiry().map(|w| self.instant_at(w)), TimerReason::Expiry);
        best
    }

    /// Successors, nearest first.
    pub fn successors(&self) -> Vec<NodeId> {
        self.table.neighbors().successors().to_vec()
    }

    /// Predecessors, nearest first.
    pub fn predecessors(&self) -> Vec<NodeId> {
        self.table.neighbors().predecessors().to_vec()
    }

    /// Distinct finger peers, in finger order.
    pub fn fingers(&self) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = Vec::new();
        for p in self.table.fingers().peers() {
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }

    /// Peers we hold a link to.
    pub fn links(&self) -> Vec<NodeId> {
        self.links.iter().copied().collect()
    }

    /// Whether this node holds a copy of (resource, kind), as primary or replica.
    pub fn holds(&self, resource: &ResourceId, kind: KindId) -> bool {
        self.store.holds(resource, kind)
    }

    /// Number of (resource, kind) records held, by kind.
    pub fn records_by_kind(&self) -> Vec<(KindId, usize)> {
        self.store.counts_by_kind()
    }

    /// The host cache (§11.4): peers recently linked, newest last. The
    /// runtime persists it and dials these first on restart.
    pub fn known_peers(&self) -> Vec<NodeId> {
        self.known.iter().map(|(n, _)| *n).collect()
    }

    /// Applications served over AppAttach (§6.5.2) and where they listen.
    pub fn set_app_candidates(&mut self, apps: Vec<(u16, Vec<crate::wire::attach::IceCandidate>)>) {
        self.config.app_candidates = apps;
    }

    /// Adds a user identity to sign stores with ([`Command::StoreAs`]);
    /// returns the certificate's user name.
    pub fn add_user_identity(
        &mut self,
        now: Instant,
        key_pkcs8: &[u8],
        cert_der: &[u8],
    ) -> Result<String, CryptoError> {
        let wall = self.wall(now);
        self.crypto.add_user(key_pkcs8, cert_der, wall)
    }

    /// Where peers reach us (sent in Attach, §6.5.1): the runtime sets it
    /// once its listener is bound.
    pub fn set_candidates(&mut self, candidates: Vec<crate::wire::attach::IceCandidate>) {
        self.config.candidates = candidates;
    }

    /// Changes whenever the stored records change (see [`Self::export_records`]).
    pub fn store_version(&self) -> u64 {
        self.store.version()
    }

    /// The host cache with the candidates each peer advertised (what the
    /// runtime persists: an address to dial on restart).
    pub fn known_peer_candidates(&self) -> Vec<(NodeId, Vec<crate::wire::attach::IceCandidate>)> {
        self.known.clone()
    }

    /// Everything held, one row per Resource-ID, for persistence: the
    /// wall time of the snapshot, a replica StoreReq with the lifetimes
    /// left, and the certificates its signatures need.
    pub fn export_records(&self, now: Instant) -> Vec<(ResourceId, Vec<u8>)> {
        let wall = self.wall(now);
        self.store
            .resources()
            .into_iter()
            .filter_map(|r| {
                let (req, certs) = self.store.replica_store_for(&r, 1, wall)?;
                let mut w = Writer::new();
                w.u64(wall.as_millis());
                req.encode(&mut w);
                SecurityBlock { certificates: certs, signature: crate::wire::security_block::Signature::none() }
                    .encode(&mut w);
                w.finish().ok().map(|b| (r, b))
            })
            .collect()
    }

    /// Puts back rows [`export_records`](Self::export_records) produced,
    /// minus the time that passed since: values whose lifetime ran out
    /// are dropped. Every value's signature and access policy are checked
    /// again (the file could have been tampered with). Returns how many
    /// resources were restored; a row that fails is skipped with its reason.
    pub fn restore_records(&mut self, now: Instant, rows: &[Vec<u8>]) -> (usize, Vec<String>) {
        let wall = self.wall(now);
        let me = Signer { node_ids: vec![self.id], user: None };
        let mut restored = 0;
        let mut problems = Vec::new();
        for row in rows {
            let parsed = (|| {
                let mut r = crate::wire::codec::Reader::new(row);
                let saved = r.u64("snapshot time")?;
                let req = crate::wire::storage::StoreReq::decode(&mut r)?;
                let security = SecurityBlock::decode(&mut r)?;
                r.finish("record row")?;
                Ok::<_, crate::wire::codec::WireError>((saved, req, security))
            })();
            let (saved, mut req, security) = match parsed {
                Ok(p) => p,
                Err(e) => {
                    problems.push(format!("undecodable record row: {e}"));
                    continue;
                }
            };
            let gone = wall.saturating_duration_since(WallTime::from_millis(saved)).as_secs();
            let gone = u32::try_from(gone).unwrap_or(u32::MAX);
            for k in &mut req.kind_data {
                k.values.retain(|v| v.lifetime > gone);
                for v in &mut k.values {
                    v.lifetime -= gone;
                }
            }
            req.kind_data.retain(|k| !k.values.is_empty());
            if req.kind_data.is_empty() {
                continue;
            }
            let resource = req.resource.clone();
            let token =
                crate::storage::verify_store(req, &me, &security, self.crypto.as_ref(), &self.config.kinds, true, wall);
            match token.map(|t| self.store.apply(t, wall)) {
                Ok(Ok(_)) => restored += 1,
                Ok(Err(e)) | Err(e) => problems.push(format!(
                    "resource {}: {} {}",
                    hex::encode(&resource.0),
                    e.error_code,
                    e.reason().unwrap_or_default()
                )),
            }
        }
        (restored, problems)
    }

    /// Seeds the host cache (e.g. from disk or configured bootstrap peers).
    pub fn add_known_peer(&mut self, peer: NodeId, candidates: Vec<crate::wire::attach::IceCandidate>) {
        self.remember(peer, Some(candidates));
    }

    /// Seconds since this node joined.
    pub fn uptime(&self, now: Instant) -> u64 {
        self.joined_at.map_or(0, |t| now.saturating_duration_since(t).as_secs())
    }

    // ---- internals shared by the other files of this module ----

    /// The wall time at `now`, from the anchor the runtime gave us.
    pub(super) fn wall(&self, now: Instant) -> WallTime {
        self.wall_epoch.saturating_add(now.saturating_duration_since(self.epoch))
    }

    fn instant_at(&self, wall: WallTime) -> Instant {
        self.epoch + wall.saturating_duration_since(self.wall_epoch)
    }

    fn require_joined(&self) -> Result<(), ApiError> {
        match self.phase {
            Phase::Joined => Ok(()),
            _ => Err(ApiError::NotJoined),
        }
    }

    /// Records `peer` in the host cache (bounded, most recent last).
    /// Keeps a peer's advertised candidates without moving it in the
    /// host cache's recency order (only a link does that).
    pub(super) fn learn_candidates(&mut self, peer: NodeId, candidates: &[crate::wire::attach::IceCandidate]) {
        if candidates.is_empty() || peer == self.id {
            return;
        }
        match self.known.iter_mut().find(|(n, _)| *n == peer) {
            Some((_, c)) => *c = candidates.to_vec(),
            None => self.candidates_seen.insert(peer, candidates.to_vec()).map_or((), |_| ()),
        }
        if self.candidates_seen.len() > 4 * HOST_CACHE {
            self.candidates_seen.pop_first();
        }
    }

    pub(super) fn remember(&mut self, peer: NodeId, candidates: Option<Vec<crate::wire::attach::IceCandidate>>) {
        if peer == self.id {
            return;
        }
        let old = self.known.iter().position(|(n, _)| *n == peer).map(|i| self.known.remove(i));
        let cands =
            candidates.or_else(|| self.candidates_seen.remove(&peer)).or(old.map(|(_, c)| c)).unwrap_or_default();
        self.known.push((peer, cands));
        if self.known.len() > HOST_CACHE {
            self.known.remove(0);
        }
    }

    pub(super) fn emit(&mut self, event: Event) {
        self.events.push_back(event);
    }

    pub(super) fn complete(&mut self, id: RequestId, outcome: Outcome) {
        self.emit(Event::Completed { id, outcome });
    }

    /// Whether this peer is responsible for `resource` (§10.3).
    pub(super) fn responsible_for(&self, resource: &ResourceId) -> bool {
        // A joining peer (or a client) is responsible for nothing yet,
        // though its empty table would say "the whole ring" (§10.5).
        if self.config.client || self.phase != Phase::Joined {
            return false;
        }
        match resource_point(resource) {
            Ok(p) => self.table.neighbors().responsible_for(p),
            Err(_) => false,
        }
    }

    /// Signs and sends a request; its answer comes back through `purpose`.
    pub(super) fn send_request(
        &mut self,
        now: Instant,
        destination: Vec<Destination>,
        body: Body,
        purpose: Purpose,
    ) -> Result<u64, ApiError> {
        self.send_request_with(now, destination, body, purpose, &[])
    }

    /// [`Self::send_request`] with extra certificates in the security block.
    pub(super) fn send_request_with(
        &mut self,
        now: Instant,
        destination: Vec<Destination>,
        body: Body,
        purpose: Purpose,
        extra_certs: &[crate::wire::security_block::GenericCertificate],
    ) -> Result<u64, ApiError> {
        self.send_request_as(now, destination, body, purpose, extra_certs, None)
    }

    #[allow(clippy::too_many_arguments)]
    /// [`Self::send_request_with`] signed as one of our users (the request
    /// signer must be allowed to write what it stores, §7.4.1.1).
    pub(super) fn send_request_as(
        &mut self,
        now: Instant,
        destination: Vec<Destination>,
        body: Body,
        purpose: Purpose,
        extra_certs: &[crate::wire::security_block::GenericCertificate],
        as_user: Option<&str>,
    ) -> Result<u64, ApiError> {
        let txid = self.fresh_txid();
        let bytes = self.encode(txid, destination, Vec::new(), body, extra_certs, as_user)?;
        let deadline = now + self.config.reliability_timer;
        self.pending_insert(txid, Pending { bytes: bytes.clone(), retransmits: 0, deadline, purpose });
        self.process(now, None, bytes);
        Ok(txid)
    }

    /// Answers a request delivered here; the response retraces the Via
    /// list (§6.2.2) and is cached for retransmissions (§6.2.1).
    pub(super) fn respond(
        &mut self,
        now: Instant,
        request: &ForwardingHeader,
        body: Body,
        extra_certs: &[crate::wire::security_block::GenericCertificate],
    ) {
        if matches!(body, Body::Error(_)) {
            self.counters.errors_sent += 1;
        }
        let destination: Vec<Destination> = request.via_list.iter().rev().cloned().collect();
        match self.encode(request.transaction_id, destination, Vec::new(), body, extra_certs, None) {
            Ok(bytes) => {
                let until = now + ANSWER_CACHE;
                self.answered.insert(request.transaction_id, (until, bytes.clone()));
                self.answered_order.push_back((until, request.transaction_id));
                self.process(now, None, bytes);
            }
            // Not sent: the requester's retransmissions time out instead.
            Err(e) => debug!(node = %self.id, error = %e, "could not encode or sign a response"),
        }
    }

    pub(super) fn respond_error(&mut self, now: Instant, request: &ForwardingHeader, code: ErrorCode, reason: &str) {
        self.respond(now, request, Body::Error(ErrorResponse::with_reason(code, reason)), &[]);
    }

    fn fresh_txid(&mut self) -> u64 {
        loop {
            let t: u64 = self.rng.random();
            if t != 0 && !self.pending.contains_key(&t) {
                return t;
            }
        }
    }

    /// Counts a failure to sign (an unknown user is the caller's mistake,
    /// not the signer's, and is not counted).
    pub(super) fn count_signing_failure(&mut self, e: &CryptoError) {
        if !matches!(e, CryptoError::UnknownUser(_)) {
            self.counters.sign_failures += 1;
        }
    }

    fn encode(
        &mut self,
        txid: u64,
        destination: Vec<Destination>,
        via: Vec<Destination>,
        body: Body,
        extra_certs: &[crate::wire::security_block::GenericCertificate],
        as_user: Option<&str>,
    ) -> Result<Vec<u8>, ApiError> {
        let mut header = ForwardingHeader::new(self.overlay, self.config.configuration_sequence, txid, destination);
        header.ttl = self.config.initial_ttl;
        header.via_list = via;
        let contents = MessageContents::new(body).to_bytes().map_err(|e| ApiError::Encode(e.to_string()))?;
        // §6.3.4: every message is signed; one we cannot sign is not sent.
        let signed = match as_user {
            None => self.crypto.sign_message(self.overlay, txid, &contents),
            Some(u) => self.crypto.sign_message_as(u, self.overlay, txid, &contents),
        };
        let mut security: SecurityBlock = match signed {
            Ok(s) => s,
            Err(e) => {
                self.count_signing_failure(&e);
                return Err(ApiError::from_crypto(e));
            }
        };
        security.certificates.extend(extra_certs.iter().cloned());
        assemble(&header, &contents, &security).map_err(|e| ApiError::Encode(e.to_string()))
    }

    /// Routes a message (ours or received from `from`) per §6.1.2.
    pub(super) fn process(&mut self, now: Instant, from: Option<NodeId>, bytes: Vec<u8>) {
        let raw = match RawMessage::parse(&bytes) {
            Ok(r) => r,
            Err(e) => {
                self.counters.dropped_malformed += 1;
                debug!(node = %self.id, error = %e, "dropped malformed message");
                return;
            }
        };
        let mut header = raw.header.clone();
        // One span per transaction: every hop's and end's lines carry it.
        let _span = tracing::debug_span!("reload", txid = header.transaction_id, node = %self.id).entered();
        if header.overlay != self.overlay || header.version != VERSION {
            self.counters.dropped_malformed += 1;
            return;
        }
        // §6.3.2: a TTL above our initial TTL is refused outright.
        if header.ttl > self.config.initial_ttl {
            self.counters.dropped_malformed += 1;
            return;
        }
        if let Some(f) = from {
            // §6.2: symmetric recursive routing records the previous hop.
            header.via_list.push(Destination::Node(f));
        }
        loop {
            let Some(first) = header.destination_list.first().cloned() else {
                return self.deliver(now, header, raw.contents, raw.security);
            };
            match first {
                Destination::Node(n) if n == self.id => {
                    header.destination_list.remove(0);
                }
                Destination::Node(n) if n == NodeId::WILDCARD => {
                    return self.deliver(now, header, raw.contents, raw.security);
                }
                Destination::Resource(r) => {
                    if self.responsible_for(&r) {
                        if header.destination_list.len() == 1 {
                            return self.deliver(now, header, raw.contents, raw.security);
                        }
                        self.counters.dropped_unroutable += 1;
                        return;
                    }
                    let Ok(point) = resource_point(&r) else {
                        self.counters.dropped_unroutable += 1;
                        return;
                    };
                    return self.forward(now, header, &raw, point, None);
                }
                Destination::Node(n) => return self.forward(now, header, &raw, n, Some(n)),
                // We never mint compressed/opaque ids, so none can be ours.
                _ => {
                    self.counters.dropped_unroutable += 1;
                    return;
                }
            }
        }
    }

    /// Sends a message one hop closer to `point` (§6.1.2, §10.3).
    fn forward(
        &mut self,
        now: Instant,
        mut header: ForwardingHeader,
        raw: &RawMessage<'_>,
        point: NodeId,
        exact: Option<NodeId>,
    ) {
        // A peer that left forwards only its own outstanding requests.
        if self.phase == Phase::Left && !self.pending.contains_key(&header.transaction_id) {
            return;
        }
        let is_request = raw.code().is_some_and(|c| c.is_request());
        if header.ttl == 0 {
            if is_request {
                self.respond_error(now, &header, ErrorCode::TTL_EXCEEDED, "TTL exceeded");
            }
            return;
        }
        header.ttl -= 1;
        let Some(hop) = self.next_hop(point, exact) else {
            self.counters.dropped_unroutable += 1;
            trace!(node = %self.id, target = %point, "no route");
            return;
        };
        let mut w = Writer::with_capacity(raw.contents.len() + raw.security.len() + 128);
        header.encode_with_length(&mut w, 0);
        w.bytes(raw.contents);
        w.bytes(raw.security);
        let total = u32::try_from(w.len()).unwrap_or(u32::MAX);
        w.patch_u32(16, total);
        match w.finish() {
            Ok(bytes) => {
                self.counters.forwarded += 1;
                self.send_to(hop, bytes);
            }
            Err(_) => self.counters.dropped_malformed += 1,
        }
    }

    /// The peer to hand a message for `point` to.
    fn next_hop(&self, point: NodeId, exact: Option<NodeId>) -> Option<NodeId> {
        // Connection Table first: clients and joining peers are reachable
        // directly though absent from the Routing Table (§6.1.2).
        if let Some(n) = exact
            && self.links.contains(&n)
        {
            return Some(n);
        }
        if self.config.client || self.phase != Phase::Joined {
            return self.admitting.or(match self.phase {
                Phase::Joining { via, ap, .. } => ap.filter(|a| self.links.contains(a)).or(Some(via)),
                _ => None,
            });
        }
        // Our successor and predecessor lists are authoritative for the
        // arcs they span: hand the message straight to the peer responsible.
        let n = self.table.neighbors();
        let mut lower = self.id;
        for s in n.successors() {
            if in_half_open(point, lower, *s) {
                return Some(*s);
            }
            lower = *s;
        }
        let preds = n.predecessors();
        for (i, p) in preds.iter().enumerate() {
            if let Some(before) = preds.get(i + 1)
                && in_half_open(point, *before, *p)
            {
                return Some(*p);
            }
        }
        match self.table.next_hop(point) {
            NextHop::Forward(p) => Some(p),
            NextHop::Local => None,
        }
    }

    pub(super) fn send_to(&mut self, to: NodeId, bytes: Vec<u8>) {
        if to == self.id {
            return;
        }
        self.counters.messages_sent += 1;
        self.transmits.push_back(Transmit { to, bytes });
    }

    /// A message whose destination list is exhausted here (§6.1.2).
    fn deliver(&mut self, now: Instant, header: ForwardingHeader, contents: &[u8], security: &[u8]) {
        let (Ok(parsed), Ok(block)) = (MessageContents::from_bytes(contents), SecurityBlock::from_bytes(security))
        else {
            self.counters.dropped_malformed += 1;
            let code = RawMessage::parse_code(contents);
            if code.is_some_and(|c| c & 1 == 1 && c != 0xffff) {
                self.respond_error(now, &header, ErrorCode::INVALID_MESSAGE, "malformed message body");
            }
            return;
        };
        let wall = self.wall(now);
        // §6.3.4: the destination verifies every message and drops failures.
        let signer = match self.crypto.verify_message(self.overlay, header.transaction_id, contents, &block, wall) {
            Ok(s) => s,
            Err(e) => {
                self.counters.dropped_signature += 1;
                debug!(node = %self.id, error = %e, "dropped message with a bad signature");
                return;
            }
        };
        if parsed.code().is_request() {
            if self.phase == Phase::Left {
                return;
            }
            if let Some((_, cached)) = self.answered.get(&header.transaction_id) {
                let cached = cached.clone();
                return self.process(now, None, cached);
            }
            // §6.3.3: unknown critical extensions are refused.
            if parsed.extensions.iter().any(|e| e.critical) {
                return self.respond_error(now, &header, ErrorCode::UNKNOWN_EXTENSION, "unknown critical extension");
            }
            self.handle_request(now, header, parsed.body, block, signer);
        } else {
            self.handle_response(now, header, parsed.body, block, signer);
        }
    }

    fn handle_response(
        &mut self,
        now: Instant,
        header: ForwardingHeader,
        body: Body,
        security: SecurityBlock,
        signer: Signer,
    ) {
        let Some(pending) = self.pending_remove(header.transaction_id) else {
            return;
        };
        // Hops the answer travelled, i.e. the path length (symmetric routing).
        // The answer's via list names the peers that carried it back to
        // us: reversed, it is the route the request took (symmetric routing).
        let route: Vec<NodeId> = header
            .via_list
            .iter()
            .rev()
            .filter_map(|d| match d {
                Destination::Node(n) => Some(*n),
                _ => None,
            })
            .collect();
        let hops = u32::try_from(header.via_list.len()).unwrap_or(u32::MAX);
        self.on_answer(now, pending.purpose, body, security, signer, hops, route);
    }

    fn pending_insert(&mut self, txid: u64, p: Pending) {
        if let Some(old) = self.pending.remove(&txid) {
            self.pending_deadlines.remove(&(old.deadline, txid));
        }
        self.pending_deadlines.insert((p.deadline, txid));
        self.pending.insert(txid, p);
    }

    fn pending_remove(&mut self, txid: u64) -> Option<Pending> {
        let p = self.pending.remove(&txid)?;
        self.pending_deadlines.remove(&(p.deadline, txid));
        Some(p)
    }

    /// Drops cached answers whose window has closed (§6.2.1), oldest first.
    fn expire_answers(&mut self, now: Instant) {
        while let Some(&(until, txid)) = self.answered_order.front() {
            if until > now {
                break;
            }
            self.answered_order.pop_front();
            // A transaction answered again later has a newer entry: keep it.
            if self.answered.get(&txid).is_some_and(|(t, _)| *t <= now) {
                self.answered.remove(&txid);
            }
        }
    }

    fn retransmit_due(&mut self, now: Instant) {
        let due: Vec<u64> =
            self.pending_deadlines.iter().take_while(|(t, _)| *t <= now).map(|(_, txid)| *txid).collect();
        for txid in due {
            let Some(mut p) = self.pending_remove(txid) else { continue };
            if p.retransmits >= self.config.max_retransmits {
                self.counters.transactions_failed += 1;
                self.on_failure(now, p.purpose, Failure::Timeout);
                continue;
            }
            p.retransmits += 1;
            self.counters.retransmissions += 1;
            p.deadline = now + self.config.reliability_timer;
            let bytes = p.bytes.clone();
            self.pending_insert(txid, p);
            self.process(now, None, bytes);
        }
    }

    pub(super) fn fetch(
        &mut self,
        now: Instant,
        id: RequestId,
        resource: ResourceId,
        kind: KindId,
    ) -> Result<(), ApiError> {
        let model =
            self.config.kinds.iter().find(|k| k.kind == kind).map(|k| k.model).ok_or(ApiError::UnknownKind(kind))?;
        let specifier = crate::wire::storage::StoredDataSpecifier {
            kind,
            generation: 0,
            model: match model {
                crate::wire::storage::DataModel::Single => crate::wire::storage::ModelSpecifier::Single,
                crate::wire::storage::DataModel::Array => {
                    crate::wire::storage::ModelSpecifier::Array(vec![crate::wire::storage::ArrayRange {
                        first: 0,
                        last: u32::MAX,
                    }])
                }
                crate::wire::storage::DataModel::Dictionary => {
                    crate::wire::storage::ModelSpecifier::Dictionary(Vec::new())
                }
            },
        };
        let body =
            Body::FetchReq(crate::wire::storage::FetchReq { resource: resource.clone(), specifiers: vec![specifier] });
        self.send_request(
            now,
            vec![Destination::Resource(resource.clone())],
            body,
            Purpose::User(id, UserOp::Fetch(resource, kind)),
        )?;
        Ok(())
    }

    /// Drains queued Updates after a burst of table changes.
    fn flush(&mut self, now: Instant) {
        if self.neighbors_dirty {
            self.neighbors_dirty = false;
            self.on_neighbors_changed(now);
        }
    }
}

/// Header, contents and security block as one message with its length.
pub(super) fn assemble(
    header: &ForwardingHeader,
    contents: &[u8],
    security: &SecurityBlock,
) -> Result<Vec<u8>, crate::wire::WireError> {
    let mut w = Writer::with_capacity(contents.len() + 256);
    header.encode_with_length(&mut w, 0);
    w.bytes(contents);
    security.encode(&mut w);
    let total = u32::try_from(w.len()).unwrap_or(u32::MAX);
    w.patch_u32(16, total);
    w.finish()
}
