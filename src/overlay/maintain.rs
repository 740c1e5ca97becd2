//! Keeping the ring: join (§10.5), updates and stabilisation (§10.7),
//! fingers (§10.7.4), replication and hand-over (§10.4), leave (§10.9).

use std::time::{Duration, Instant};

use rand::RngExt;
use tracing::{debug, info};

use super::api::{ApiError, Event, RequestId};

/// A join not finished in this time starts over (several reliability timers).
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Stray copies handed back per anti-entropy round at most.
const HAND_BACK_STRAYS: usize = 256;
/// Legitimate replica copies offered back per anti-entropy round.
const HAND_BACK_REPLICAS: usize = 32;
use super::chord::{FingerIndex, finger_target, in_half_open, in_open, random_in_finger_range, resource_point};
use super::node::{OverlayNode, Phase, Purpose, UserOp};
use crate::wire::attach::AttachReqAns;
use crate::wire::message::Body;
use crate::wire::security_block::Signature;
use crate::wire::storage::{StoreKindData, StoreReq, StoredData, StoredDataValue};
use crate::wire::topology::{ChordLeaveData, ChordUpdateData, JoinReq, LeaveReq, UpdateReq};
use crate::wire::{Destination, KindId, NodeId, ResourceId};

impl OverlayNode {
    pub(super) fn become_joined(&mut self, now: Instant) {
        let was_joined = self.phase == Phase::Joined;
        self.phase = Phase::Joined;
        self.attaching.clear();
        if !was_joined {
            self.joined_at.get_or_insert(now);
            info!(node = %self.id, "joined the overlay");
            self.emit(Event::Joined);
        }
        let jitter = self.jitter(self.config.update_interval);
        self.next_stabilize = Some(now + jitter);
        self.next_finger = Some(now);
        self.neighbors_dirty = true;
    }

    /// §10.5 step 2: Attach to our own id + 1 through the bootstrap peer.
    pub(super) fn start_join(&mut self, now: Instant, via: NodeId) {
        if self.config.client {
            // §4.2: a client routes everything through its admitting peer.
            self.admitting = Some(via);
            self.phase = Phase::Joined;
            self.emit(Event::Joined);
            return;
        }
        self.phase = Phase::Joining { via, ap: None, join_sent: false };
        self.join_deadline = Some(now + JOIN_TIMEOUT);
        self.ap_update_seen = false;
        self.early_update = None;
        let target = NodeId::from_u128(self.id.as_u128().wrapping_add(1)).to_resource();
        let req =
            AttachReqAns::request(b"chordphone".to_vec(), b"chordphone".to_vec(), self.config.candidates.clone(), true);
        if let Err(e) =
            self.send_request(now, vec![Destination::Resource(target)], Body::AttachReq(req), Purpose::JoinAttach)
        {
            debug!(node = %self.id, error = %e, "could not start the join");
        }
    }

    /// Starts the join again through a peer we still reach.
    /// Never through `avoid`, the peer just lost (a leaving peer's link may
    /// still be up when its Leave arrives).
    pub(super) fn restart_join(&mut self, now: Instant, avoid: Option<NodeId>) {
        if !matches!(self.phase, Phase::Joining { .. }) {
            return;
        }
        let next = self.join_candidate(avoid);
        self.phase = Phase::Idle;
        self.attaching.clear();
        match next {
            Some(peer) => self.start_join(now, peer),
            None => self.emit(Event::Rejoining),
        }
    }

    /// A linked peer to join through: the current bootstrap peer while it is
    /// linked, otherwise any other, never `avoid`.
    fn join_candidate(&self, avoid: Option<NodeId>) -> Option<NodeId> {
        let usable = |p: &NodeId| self.links.contains(p) && Some(*p) != avoid;
        let via = match self.phase {
            Phase::Joining { via, .. } => Some(via).filter(usable),
            _ => None,
        };
        via.or_else(|| self.links.iter().copied().find(usable))
    }

    /// §10.5 step 3: the admitting peer's full Update names our neighbors.
    pub(super) fn on_admitting_update(&mut self, now: Instant, ap: NodeId, preds: Vec<NodeId>, succs: Vec<NodeId>) {
        self.table.insert(ap);
        self.ap_update_seen = true;
        for peer in preds.into_iter().chain(succs) {
            if peer == self.id || self.links.contains(&peer) {
                if self.links.contains(&peer) {
                    self.table.insert(peer);
                }
                continue;
            }
            if self.table.would_improve(peer) && self.attaching.insert(peer) {
                // §10.6: neighbors learned from AP are reached through AP.
                self.attach_to(
                    now,
                    vec![Destination::Node(ap), Destination::Node(peer)],
                    Purpose::NeighborAttach(peer),
                );
            }
        }
        self.maybe_send_join(now);
    }

    /// §10.5 step 5: Join once every neighbor Attach has settled.
    pub(super) fn maybe_send_join(&mut self, now: Instant) {
        let Phase::Joining { via, ap: Some(ap), join_sent: false } = self.phase else { return };
        if !self.ap_update_seen || !self.links.contains(&ap) || self.attaching.iter().any(|p| !self.links.contains(p)) {
            return;
        }
        self.phase = Phase::Joining { via, ap: Some(ap), join_sent: true };
        let body = Body::JoinReq(JoinReq { joining_peer_id: self.id, overlay_specific_data: Vec::new() });
        if let Err(e) = self.send_request(now, vec![Destination::Node(ap)], body, Purpose::Join) {
            debug!(node = %self.id, error = %e, "could not send Join");
        }
    }

    pub(super) fn on_link_up(&mut self, now: Instant, peer: NodeId) {
        if self.update_on_link.remove(&peer) {
            self.send_update(now, peer, true);
        }
        match self.phase {
            Phase::Joining { .. } => {
                if self.attaching.contains(&peer) {
                    self.table.insert(peer);
                }
                self.maybe_send_join(now);
            }
            // Only peers we attached to as ring members (learned from a
            // neighbor's Update) enter the table on link-up; the other side
            // of an Attach waits for its Join or Update (§6.5.1).
            Phase::Joined if self.attaching.remove(&peer) => self.offer(peer),
            _ => {}
        }
    }

    /// A linked peer enters the routing table if it improves it.
    pub(super) fn offer(&mut self, peer: NodeId) {
        if self.config.client || peer == self.id || !self.links.contains(&peer) {
            return;
        }
        let change = self.table.insert(peer);
        if change.neighbors {
            self.neighbors_dirty = true;
        }
    }

    /// A peer a neighbor told us about: Attach to it if it would help.
    pub(super) fn consider(&mut self, now: Instant, told_by: NodeId, peer: NodeId) {
        if peer == self.id || self.table.contains(peer) || !self.table.would_improve(peer) {
            return;
        }
        if self.links.contains(&peer) {
            return self.offer(peer);
        }
        if self.attaching.insert(peer) {
            let route = if self.links.contains(&told_by) && told_by != peer {
                vec![Destination::Node(told_by), Destination::Node(peer)]
            } else {
                vec![Destination::Node(peer)]
            };
            self.attach_to(now, route, Purpose::NeighborAttach(peer));
        }
    }

    pub(super) fn consider_direct(&mut self, now: Instant, peer: NodeId) {
        self.consider(now, peer, peer);
    }

    fn attach_to(&mut self, now: Instant, route: Vec<Destination>, purpose: Purpose) {
        let req = AttachReqAns::request(
            b"chordphone".to_vec(),
            b"chordphone".to_vec(),
            self.config.candidates.clone(),
            false,
        );
        if let Err(e) = self.send_request(now, route, Body::AttachReq(req), purpose) {
            debug!(node = %self.id, error = %e, "could not send Attach");
        }
    }

    /// Drops a failed or departed peer everywhere (§10.7.1).
    pub(super) fn forget_peer(&mut self, now: Instant, peer: NodeId) {
        self.attaching.remove(&peer);
        self.update_on_link.remove(&peer);
        let change = self.table.remove(peer);
        if change.neighbors {
            self.neighbors_dirty = true;
        }
        if self.admitting == Some(peer) {
            self.admitting = None;
            self.phase = Phase::Idle;
            self.emit(Event::Rejoining);
        }
        if let Phase::Joining { via, ap, .. } = self.phase
            && (via == peer || ap == Some(peer))
        {
            // Lost the peer we were joining through: start again elsewhere.
            self.restart_join(now, Some(peer));
        }
        if self.phase == Phase::Joined && !self.config.client && self.table.neighbors().is_empty() {
            self.rejoin(now, peer);
        }
    }

    /// §10.7.1: every successor lost; join again through any peer we reach.
    fn rejoin(&mut self, now: Instant, gone: NodeId) {
        let Some(via) = self.join_candidate(Some(gone)) else {
            // Nobody left: we are the ring.
            return;
        };
        info!(node = %self.id, "lost every neighbor, re-joining");
        self.emit(Event::Rejoining);
        self.phase = Phase::Idle;
        self.start_join(now, via);
    }

    /// §10.7: after the neighbor table changed, tell every neighbor, hand
    /// data to a new predecessor, and schedule re-replication.
    pub(super) fn on_neighbors_changed(&mut self, now: Instant) {
        if self.phase != Phase::Joined || self.config.client {
            return;
        }
        let neighbors = self.neighbor_set();
        for n in neighbors {
            self.send_update(now, n, false);
        }
        let pred = self.table.neighbors().predecessor();
        if pred != self.last_predecessor {
            if let (Some(new), Some(old)) = (pred, self.last_predecessor)
                && in_open(new, old, self.id)
            {
                self.hand_over(now, old, new);
            }
            self.last_predecessor = pred;
        }
        let replicas = self.table.neighbors().replica_peers().to_vec();
        if replicas != self.replica_set {
            // A new peer in the replica set gets our data at once; a lost
            // one waits out the hold-down (§10.7.1) before we re-replicate.
            let lost = self.replica_set.iter().any(|p| !replicas.contains(p));
            let delay = if lost { self.config.replication_holddown } else { Duration::ZERO };
            let at = now + delay;
            self.replicate_at = Some(self.replicate_at.map_or(at, |t| t.min(at)));
            self.replica_set = replicas;
        }
    }

    /// Successors and predecessors, each once.
    pub(super) fn neighbor_set(&self) -> Vec<NodeId> {
        let n = self.table.neighbors();
        let mut out: Vec<NodeId> = n.successors().to_vec();
        for p in n.predecessors() {
            if !out.contains(p) {
                out.push(*p);
            }
        }
        out
    }

    /// Sends our neighbor lists (and fingers when `full`) to `to` (§10.7.3).
    pub(super) fn send_update(&mut self, now: Instant, to: NodeId, full: bool) {
        let n = self.table.neighbors();
        let predecessors = n.predecessors().to_vec();
        let successors = n.successors().to_vec();
        let data = if full {
            ChordUpdateData::Full { predecessors, successors, fingers: self.fingers() }
        } else {
            ChordUpdateData::Neighbors { predecessors, successors }
        };
        let uptime = u32::try_from(self.uptime(now)).unwrap_or(u32::MAX);
        let body = Body::UpdateReq(UpdateReq { uptime, data });
        if let Err(e) = self.send_request(now, vec![Destination::Node(to)], body, Purpose::Maintenance) {
            debug!(node = %self.id, error = %e, "could not send Update");
        }
    }

    /// Periodic Update to every neighbor (§10.7.2), plus dropping copies we
    /// are no longer a replica holder for (§10.4).
    pub(super) fn stabilize(&mut self, now: Instant) {
        let jitter = self.jitter(self.config.update_interval);
        self.next_stabilize = Some(now + self.config.update_interval / 2 + jitter / 2);
        if self.phase != Phase::Joined || self.config.client {
            return;
        }
        for n in self.neighbor_set() {
            self.send_update(now, n, false);
        }
        self.reconnect_known();
        self.check_successor(now);
        self.hand_back_copies(now);
        self.drop_foreign_copies();
    }

    /// Anti-entropy: copies we hold of resources we are not responsible
    /// for are offered to the peer that is; it keeps nothing new twice
    /// (identical replica stores are no-ops) and re-replicates what it
    /// lacked. Closes the gaps joins and crashes leave in hand-over.
    ///
    /// Stray copies (outside the range we hold replicas for) all go back
    /// every round, up to [`HAND_BACK_STRAYS`]. Our legitimate replicas go
    /// back [`HAND_BACK_REPLICAS`] per round, resuming where the last round
    /// stopped: offering every replica every round sent thousands of signed
    /// Stores per peer per round under SIP load (10,000 registrations on
    /// three peers), more than the link queues hold.
    fn hand_back_copies(&mut self, now: Instant) {
        let wall = self.wall(now);
        let n = self.table.neighbors();
        let replica_range = match (n.predecessors().get(self.config.replicas), n.predecessors().first()) {
            (Some(lower), Some(upper)) => Some((*lower, *upper)),
            _ => None,
        };
        let (mut strays, mut replicas) = (Vec::new(), Vec::new());
        for resource in self.store.resources() {
            if self.responsible_for(&resource) {
                continue;
            }
            let ours =
                replica_range.is_some_and(|(lo, hi)| resource_point(&resource).is_ok_and(|p| in_half_open(p, lo, hi)));
            if ours { replicas.push(resource) } else { strays.push(resource) }
        }
        // Resume after the cursor, wrapping around.
        replicas.sort();
        let start = self.hand_back_cursor.as_ref().map_or(0, |c| replicas.partition_point(|r| r <= c));
        let len = replicas.len();
        let slice: Vec<ResourceId> =
            (0..len.min(HAND_BACK_REPLICAS)).filter_map(|i| replicas.get((start + i) % len.max(1)).cloned()).collect();
        self.hand_back_cursor = slice.last().cloned();
        for resource in strays.into_iter().take(HAND_BACK_STRAYS).chain(slice) {
            if let Some((req, certs)) = self.store.replica_store_for(&resource, 1, wall) {
                self.send_store(now, vec![Destination::Resource(resource)], req, &certs);
            }
        }
    }

    /// §10.7.4.4: re-open a link to one cached peer we lost, so a partition
    /// that has healed is noticed by the successor check.
    fn reconnect_known(&mut self) {
        let lost: Vec<usize> = (0..self.known.len())
            .filter(|i| self.known.get(*i).is_some_and(|(n, _)| !self.links.contains(n)))
            .collect();
        if lost.is_empty() {
            return;
        }
        let pick = lost.get(self.rng.random_range(0..lost.len())).copied().unwrap_or(0);
        if let Some((peer, candidates)) = self.known.get(pick).cloned() {
            self.emit(Event::Connect { peer, candidates });
        }
    }

    /// §10.7.4.4: route a Ping for our own id + 1 through a peer other than
    /// our successor; whoever answers is our successor as the ring sees it.
    fn check_successor(&mut self, now: Instant) {
        let succ = self.table.neighbors().successor();
        // Routing-table peers normally; one check in four goes through a
        // linked host-cache peer outside our tables, the kind that can see
        // across a healed partition.
        let outsiders: Vec<NodeId> =
            self.known.iter().map(|(n, _)| *n).filter(|n| self.links.contains(n) && !self.table.contains(*n)).collect();
        let others: Vec<NodeId> = if !outsiders.is_empty() && self.rng.random_range(0..4u8) == 0 {
            outsiders
        } else {
            self.table.entries().filter(|p| Some(*p) != succ && self.links.contains(p)).collect()
        };
        if others.is_empty() {
            return;
        }
        let via = others.get(self.rng.random_range(0..others.len())).copied().unwrap_or(self.id);
        let target = NodeId::from_u128(self.id.as_u128().wrapping_add(1)).to_resource();
        let body = Body::PingReq(crate::wire::topology::PingReq::default());
        let route = vec![Destination::Node(via), Destination::Resource(target)];
        if let Err(e) = self.send_request(now, route, body, Purpose::SuccessorCheck) {
            debug!(node = %self.id, error = %e, "could not check our successor");
        }
    }

    /// §10.7.4.2: Attach to the peer responsible for each missing finger.
    pub(super) fn refresh_fingers(&mut self, now: Instant) {
        self.next_finger = Some(now + self.config.finger_interval);
        if self.phase != Phase::Joined || self.config.client {
            return;
        }
        let Some(succ) = self.table.neighbors().successor() else { return };
        let missing: Vec<FingerIndex> = self.table.fingers().invalid().collect();
        for i in missing {
            let target = finger_target(self.id, i);
            // Fingers inside (self, successor] are the successor itself.
            if in_half_open(target, self.id, succ) {
                continue;
            }
            let point = random_in_finger_range(self.id, i, &mut self.rng);
            if self.responsible_for(&point.to_resource()) {
                continue;
            }
            self.attach_to(now, vec![Destination::Resource(point.to_resource())], Purpose::FingerAttach);
        }
    }

    /// §10.4: re-store everything we are responsible for on the replica set.
    pub(super) fn replicate_all(&mut self, now: Instant) {
        let replicas = self.table.neighbors().replica_peers().to_vec();
        for resource in self.store.resources() {
            if self.responsible_for(&resource) {
                self.replicate_resource(now, &resource, &replicas);
            }
        }
    }

    /// Stores our copy of `resource` on each of `targets` (replica_number i).
    pub(super) fn replicate_resource(&mut self, now: Instant, resource: &ResourceId, targets: &[NodeId]) {
        let wall = self.wall(now);
        let Some((req, certs)) = self.store.replica_store_for(resource, 1, wall) else { return };
        for (i, peer) in targets.iter().enumerate() {
            if *peer == self.id {
                continue;
            }
            let replica_number = u8::try_from(i + 1).unwrap_or(u8::MAX);
            self.send_store(now, vec![Destination::Node(*peer)], StoreReq { replica_number, ..req.clone() }, &certs);
        }
    }

    /// §10.5 step 6 / §10.7: the data in (old, new] is no longer ours. It
    /// usually belongs to `new`, but when `old` was stale (right after a
    /// ring forms, or a partition heals) part of it belongs to peers
    /// between them: each record is routed to whoever is responsible for
    /// it, not sent to `new` blindly, or it would stay a stray copy there
    /// until the next anti-entropy round.
    fn hand_over(&mut self, now: Instant, old: NodeId, new: NodeId) {
        let wall = self.wall(now);
        for resource in self.store.resources() {
            let Ok(point) = resource_point(&resource) else { continue };
            if in_half_open(point, old, new)
                && let Some((req, certs)) = self.store.replica_store_for(&resource, 1, wall)
            {
                self.send_store(now, vec![Destination::Resource(resource)], req, &certs);
            }
        }
    }

    fn send_store(
        &mut self,
        now: Instant,
        route: Vec<Destination>,
        req: StoreReq,
        certs: &[crate::wire::security_block::GenericCertificate],
    ) {
        // Replica stores carry the value signers' certificates (§6.3.4).
        let body = Body::StoreReq(req);
        if let Err(e) = self.send_request_with(now, route, body, Purpose::Maintenance, certs) {
            debug!(node = %self.id, error = %e, "could not send a replica Store");
        }
    }

    /// §10.4: a peer with more than `replicas` predecessors between itself
    /// and a resource holds no copy of it.
    fn drop_foreign_copies(&mut self) {
        let n = self.table.neighbors();
        let Some(lower) = n.predecessors().get(self.config.replicas).copied() else { return };
        let keep_from = lower;
        for resource in self.store.resources() {
            let Ok(point) = resource_point(&resource) else { continue };
            if !in_half_open(point, keep_from, self.id) {
                self.store.remove_resource(&resource);
            }
        }
    }

    /// §10.9: hand our data to the successor and tell the neighbors.
    pub(super) fn leave(&mut self, now: Instant) -> Result<(), ApiError> {
        if self.phase != Phase::Joined {
            return Err(ApiError::NotJoined);
        }
        if !self.config.client {
            if let Some(succ) = self.table.neighbors().successor() {
                let wall = self.wall(now);
                for resource in self.store.resources() {
                    if let Some((req, certs)) = self.store.replica_store_for(&resource, 1, wall) {
                        self.send_store(now, vec![Destination::Node(succ)], req, &certs);
                    }
                }
            }
            let n = self.table.neighbors();
            let successors = n.successors().to_vec();
            let predecessors = n.predecessors().to_vec();
            for p in &predecessors {
                let data = ChordLeaveData::FromSucc { successors: successors.clone() };
                self.send_leave(now, *p, data);
            }
            for s in &successors {
                let data = ChordLeaveData::FromPred { predecessors: predecessors.clone() };
                self.send_leave(now, *s, data);
            }
        }
        // Pending Leave and hand-over Stores keep retransmitting (§6.2.1).
        self.phase = Phase::Left;
        Ok(())
    }

    fn send_leave(&mut self, now: Instant, to: NodeId, data: ChordLeaveData) {
        let body = Body::LeaveReq(LeaveReq { leaving_peer_id: self.id, data });
        if let Err(e) = self.send_request(now, vec![Destination::Node(to)], body, Purpose::Maintenance) {
            debug!(node = %self.id, error = %e, "could not send Leave");
        }
    }

    /// Signs and stores one value under `resource_name` (§7.4.1).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn store_value(
        &mut self,
        now: Instant,
        id: RequestId,
        resource_name: &[u8],
        kind: KindId,
        value: StoredDataValue,
        lifetime_s: u32,
        as_user: Option<&str>,
    ) -> Result<(), ApiError> {
        if !self.config.kinds.iter().any(|k| k.kind == kind) {
            return Err(ApiError::UnknownKind(kind));
        }
        let resource = ResourceId::from_name(resource_name);
        // §7.4.1.1: a value replaces one only with a newer storage_time, so
        // two stores of the same value within one millisecond (a second
        // device registering) or after the clock stepped back would be
        // refused with Error_Data_Too_Old; ours only ever increase.
        let storage_time = self.wall(now).as_millis().max(self.last_storage_time.saturating_add(1));
        self.last_storage_time = storage_time;
        let mut data = StoredData { storage_time, lifetime: lifetime_s, value, signature: Signature::none() };
        let mut extra = Vec::new();
        // §7.1: a value we cannot sign is not stored (nor sent unsigned).
        let signed = match as_user {
            None => self.crypto.sign_stored(&resource, kind, &mut data),
            Some(user) => self.crypto.sign_stored_as(user, &resource, kind, &mut data).map(|cert| extra.push(cert)),
        };
        if let Err(e) = signed {
            self.count_signing_failure(&e);
            return Err(ApiError::from_crypto(e));
        }
        let req = StoreReq {
            resource: resource.clone(),
            replica_number: 0,
            kind_data: vec![StoreKindData { kind, generation_counter: 0, values: vec![data] }],
        };
        self.send_request_as(
            now,
            vec![Destination::Resource(resource)],
            Body::StoreReq(req),
            Purpose::User(id, UserOp::Store),
            &extra,
            as_user,
        )?;
        Ok(())
    }

    fn jitter(&mut self, span: Duration) -> Duration {
        let ms = u64::try_from(span.as_millis()).unwrap_or(u64::MAX).max(1);
        Duration::from_millis(self.rng.random_range(0..ms))
    }
}
