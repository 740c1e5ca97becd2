//! What a node does with a request delivered to it, and with the answers to
//! its own requests (RFC 6940 §6.4, §6.5, §7.4, §10).

use std::time::Instant;

use tracing::debug;

use super::api::{Event, Failure, Outcome};
use super::chord::{in_half_open, resource_point};
use super::crypto::Signer;
use super::node::{OverlayNode, Phase, Purpose, UserOp};
use crate::storage::verify_store;
use crate::wire::attach::AttachReqAns;
use crate::wire::error::ErrorCode;
use crate::wire::header::ForwardingHeader;
use crate::wire::message::Body;
use crate::wire::security_block::SecurityBlock;
use crate::wire::storage::{StoreReq, StoredDataValue};
use crate::wire::topology::{
    ChordLeaveData, ChordUpdateData, ConfigUpdateAns, JoinAns, LeaveAns, LeaveReq, PingAns, ProbeAns, ProbeInformation,
    ProbeInformationType, RouteQueryAns, UpdateAns, UpdateReq,
};
use crate::wire::{Destination, NodeId};

impl OverlayNode {
    /// A request delivered here whose signature verified as `signer`.
    pub(super) fn handle_request(
        &mut self,
        now: Instant,
        header: ForwardingHeader,
        body: Body,
        security: SecurityBlock,
        signer: Signer,
    ) {
        // The origin is the first Via entry; a request from ourselves has none.
        let origin = match header.via_list.first() {
            Some(Destination::Node(n)) => *n,
            _ => self.id,
        };
        match body {
            Body::PingReq(_) => {
                let response_id = rand::RngExt::random(&mut self.rng);
                let time = self.wall(now).as_millis();
                self.respond(now, &header, Body::PingAns(PingAns { response_id, time }), &[]);
            }
            Body::AttachReq(req) => self.on_attach_req(now, &header, req, origin, &signer),
            Body::JoinReq(req) => {
                // §6.4.2.1: the joining id must be the signer's.
                if !signer.node_ids.contains(&req.joining_peer_id) {
                    return self.respond_error(now, &header, ErrorCode::FORBIDDEN, "joining id is not the signer's");
                }
                // §10.5 at the admitting peer: the joining node becomes our predecessor.
                self.offer(req.joining_peer_id);
                self.respond(now, &header, Body::JoinAns(JoinAns::default()), &[]);
            }
            Body::UpdateReq(req) => {
                self.on_update(now, origin, req);
                self.respond(now, &header, Body::UpdateAns(UpdateAns::default()), &[]);
            }
            Body::LeaveReq(req) => {
                if !signer.node_ids.contains(&req.leaving_peer_id) {
                    return self.respond_error(now, &header, ErrorCode::FORBIDDEN, "leaving id is not the signer's");
                }
                self.on_leave(now, req);
                self.respond(now, &header, Body::LeaveAns(LeaveAns::default()), &[]);
            }
            Body::StoreReq(req) => self.on_store(now, &header, req, &security, &signer, origin),
            Body::FetchReq(req) => {
                if !self.responsible_for(&req.resource) && !self.holds_any(&req.resource) {
                    return self.respond_error(now, &header, ErrorCode::NOT_FOUND, "not responsible");
                }
                match self.store.fetch(&req, self.wall(now)) {
                    Ok((ans, certs)) => self.respond(now, &header, Body::FetchAns(ans), &certs),
                    Err(e) => self.respond(now, &header, Body::Error(e), &[]),
                }
            }
            Body::StatReq(req) => match self.store.stat(&req, self.wall(now)) {
                Ok(ans) => self.respond(now, &header, Body::StatAns(ans), &[]),
                Err(e) => self.respond(now, &header, Body::Error(e), &[]),
            },
            Body::FindReq(req) => {
                // §7.4.4: a peer not responsible for the id answers Not_Found.
                if !self.responsible_for(&req.resource) {
                    return self.respond_error(now, &header, ErrorCode::NOT_FOUND, "not responsible");
                }
                let range = self.table.neighbors().responsible_range();
                let ans = self.store.find(&req, |r| resource_point(r).is_ok_and(|p| in_half_open(p, range.0, range.1)));
                self.respond(now, &header, Body::FindAns(ans), &[]);
            }
            Body::ProbeReq(req) => {
                let probe_info = req
                    .requested_info
                    .iter()
                    .filter_map(|t| match t {
                        ProbeInformationType::ResponsibleSet => {
                            Some(ProbeInformation::ResponsibleSet { responsible_ppb: self.responsible_ppb() })
                        }
                        ProbeInformationType::NumResources => Some(ProbeInformation::NumResources {
                            num_resources: u32::try_from(self.store.resources().len()).unwrap_or(u32::MAX),
                        }),
                        ProbeInformationType::Uptime => Some(ProbeInformation::Uptime {
                            uptime: u32::try_from(self.uptime(now)).unwrap_or(u32::MAX),
                        }),
                        _ => None,
                    })
                    .collect();
                self.respond(now, &header, Body::ProbeAns(ProbeAns { probe_info }), &[]);
            }
            Body::RouteQueryReq(req) => {
                let next = match &req.destination {
                    Destination::Node(n) => Some(*n),
                    Destination::Resource(r) => resource_point(r).ok(),
                    _ => None,
                };
                let next_peer = next.and_then(|p| self.route_query(p)).unwrap_or(self.id);
                if req.send_update {
                    self.send_update(now, origin, true);
                }
                self.respond(now, &header, Body::RouteQueryAns(RouteQueryAns { next_peer }), &[]);
            }
            Body::AppAttachReq(req) => {
                // §6.5.2: answer with where the application listens; the
                // requester (the active side) connects there.
                let offered = self.config.app_candidates.iter().find(|(app, _)| *app == req.application);
                match offered {
                    Some((app, cands)) if !signer.node_ids.is_empty() => {
                        let ans = crate::wire::attach::AppAttachAns::new(
                            b"chordphone".to_vec(),
                            b"chordphone".to_vec(),
                            *app,
                            cands.clone(),
                        );
                        self.respond(now, &header, Body::AppAttachAns(ans), &[]);
                    }
                    _ => self.respond_error(now, &header, ErrorCode::NOT_FOUND, "application not served here"),
                }
            }
            Body::ConfigUpdateReq(_) => self.respond(now, &header, Body::ConfigUpdateAns(ConfigUpdateAns), &[]),
            _ => self.respond_error(now, &header, ErrorCode::INVALID_MESSAGE, "unsupported request"),
        }
    }

    /// The answer to one of our requests (or its final failure).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_answer(
        &mut self,
        now: Instant,
        purpose: Purpose,
        body: Body,
        security: SecurityBlock,
        signer: Signer,
        hops: u32,
        route: Vec<NodeId>,
    ) {
        if let Body::Error(e) = &body {
            let reason = e.reason().unwrap_or_default().to_string();
            return self.on_failure(now, purpose, Failure::Error(e.error_code, reason));
        }
        let responder = signer.node_ids.first().copied();
        match (purpose, body) {
            (Purpose::User(id, UserOp::AppAttach), Body::AppAttachAns(ans)) => {
                let peer = responder.unwrap_or(self.id);
                self.complete(
                    id,
                    Outcome::AppAttached { peer, application: ans.application, candidates: ans.candidates },
                );
            }
            (Purpose::User(id, UserOp::Lookup), Body::PingAns(_)) => {
                let responsible = responder.unwrap_or(self.id);
                self.complete(id, Outcome::LookedUp { responsible, hops, route });
            }
            (Purpose::User(id, UserOp::Store), Body::StoreAns(ans)) => {
                let first = ans.kind_responses.first();
                let outcome = Outcome::Stored {
                    generation: first.map_or(0, |k| k.generation_counter),
                    replicas: first.map(|k| k.replicas.clone()).unwrap_or_default(),
                };
                self.complete(id, outcome);
            }
            (Purpose::User(id, UserOp::Fetch(resource, kind)), Body::FetchAns(ans)) => {
                let wall = self.wall(now);
                let mut values: Vec<StoredDataValue> = Vec::new();
                for kr in ans.kind_responses.iter().filter(|k| k.kind == kind) {
                    for v in &kr.values {
                        // §7.4.2: the reader verifies every value it gets.
                        if v.signature.is_none() {
                            continue;
                        }
                        if let Err(e) = self.crypto.verify_stored(&resource, kind, v, &security, wall) {
                            debug!(node = %self.id, error = %e, "fetched value with a bad signature");
                            let why = e.to_string();
                            return self.complete(id, Outcome::Failed(Failure::Error(ErrorCode::FORBIDDEN, why)));
                        }
                        values.push(v.value.clone());
                    }
                }
                self.complete(id, Outcome::Fetched { values });
            }
            (Purpose::JoinAttach, Body::AttachAns(ans)) => {
                if let Some(ap) = responder {
                    self.learn_candidates(ap, &ans.candidates);
                }
                if let (Phase::Joining { via, join_sent, .. }, Some(ap)) = (self.phase, responder) {
                    self.phase = Phase::Joining { via, ap: Some(ap), join_sent };
                    // Its Update may have overtaken this answer.
                    if let Some((from, preds, succs)) = self.early_update.take()
                        && from == ap
                    {
                        self.on_admitting_update(now, ap, preds, succs);
                    }
                }
            }
            (Purpose::NeighborAttach(_), Body::AttachAns(ans)) | (Purpose::FingerAttach, Body::AttachAns(ans)) => {
                if let Some(peer) = responder
                    && peer != self.id
                {
                    self.learn_candidates(peer, &ans.candidates);
                    self.attaching.insert(peer);
                    if self.links.contains(&peer) {
                        self.offer(peer);
                    }
                }
            }
            (Purpose::Join, Body::JoinAns(_)) => self.become_joined(now),
            (Purpose::SuccessorCheck, Body::PingAns(_)) => {
                // §10.7.4.4: a responder other than our successor, between us
                // and it, is a peer our tables missed: Attach to it.
                if let Some(r) = responder
                    && r != self.id
                    && self.table.neighbors().successor().is_none_or(|s| super::chord::in_open(r, self.id, s))
                {
                    self.consider_direct(now, r);
                }
            }
            _ => {}
        }
    }

    pub(super) fn on_failure(&mut self, now: Instant, purpose: Purpose, failure: Failure) {
        match purpose {
            Purpose::User(id, _) => self.complete(id, Outcome::Failed(failure)),
            Purpose::JoinAttach | Purpose::Join => {
                // Start over through whichever peer we still reach (§10.5 fallback).
                self.restart_join(now, None);
            }
            Purpose::NeighborAttach(peer) => {
                self.attaching.remove(&peer);
                self.maybe_send_join(now);
            }
            Purpose::FingerAttach | Purpose::Maintenance | Purpose::SuccessorCheck => {}
        }
    }

    fn on_attach_req(
        &mut self,
        now: Instant,
        header: &ForwardingHeader,
        req: AttachReqAns,
        origin: NodeId,
        signer: &Signer,
    ) {
        // §6.5.1: the requester must be who it signs as.
        if !signer.node_ids.contains(&origin) {
            return self.respond_error(now, header, ErrorCode::FORBIDDEN, "Attach origin is not the signer");
        }
        if origin == self.id {
            // Our own Attach came back to us (we own the target): no link.
            return self.respond_error(now, header, ErrorCode::NOT_FOUND, "Attach to self");
        }
        let ans =
            AttachReqAns::answer(b"chordphone".to_vec(), b"chordphone".to_vec(), self.config.candidates.clone(), false);
        self.respond(now, header, Body::AttachAns(ans), &[]);
        // Where the requester listens: what the host cache keeps (§11.4).
        self.learn_candidates(origin, &req.candidates);
        if req.send_update {
            self.update_on_link.insert(origin);
        }
        if self.links.contains(&origin) {
            if self.update_on_link.remove(&origin) {
                self.send_update(now, origin, true);
            }
        } else {
            // The answerer is the active side and opens the link (§6.5.1).
            self.emit(Event::Connect { peer: origin, candidates: req.candidates });
        }
    }

    fn on_store(
        &mut self,
        now: Instant,
        header: &ForwardingHeader,
        req: StoreReq,
        security: &SecurityBlock,
        signer: &Signer,
        origin: NodeId,
    ) {
        let replica = req.replica_number > 0;
        let responsible = self.responsible_for(&req.resource);
        if !replica && !responsible {
            return self.respond_error(now, header, ErrorCode::NOT_FOUND, "not responsible for this resource");
        }
        // Replica and hand-over Stores come from our neighbors (§10.4,
        // §10.5); a copy handed back to the responsible peer by a former
        // replica holder is accepted too. Either way every value's own
        // signature and access policy are checked by verify_store.
        let plausible = self.table.neighbors().contains(origin) || self.links.contains(&origin) || responsible;
        let wall = self.wall(now);
        let resource = req.resource.clone();
        let had = req.kind_data.iter().all(|k| self.store.holds(&resource, k.kind));
        let token = match verify_store(req, signer, security, self.crypto.as_ref(), &self.config.kinds, plausible, wall)
        {
            Ok(t) => t,
            Err(e) => return self.respond(now, header, Body::Error(e), &[]),
        };
        match self.store.apply(token, wall) {
            Ok(mut ans) => {
                let replicas: Vec<NodeId> = self.table.neighbors().replica_peers().to_vec();
                if !replica {
                    for k in &mut ans.kind_responses {
                        k.replicas = replicas.clone();
                    }
                }
                self.respond(now, header, Body::StoreAns(ans), &[]);
                // New data here, or an original store: pass it on (§10.4).
                if !replica || (responsible && !had) {
                    self.replicate_resource(now, &resource, &replicas);
                }
            }
            Err(e) => self.respond(now, header, Body::Error(e), &[]),
        }
    }

    /// §10.7: merge what a neighbor tells us about its neighborhood.
    pub(super) fn on_update(&mut self, now: Instant, sender: NodeId, req: UpdateReq) {
        let (preds, succs, fingers) = match req.data {
            ChordUpdateData::PeerReady => (Vec::new(), Vec::new(), Vec::new()),
            ChordUpdateData::Neighbors { predecessors, successors } => (predecessors, successors, Vec::new()),
            ChordUpdateData::Full { predecessors, successors, fingers } => (predecessors, successors, fingers),
            ChordUpdateData::Unknown { .. } => return,
        };
        if let Phase::Joining { ap, .. } = self.phase {
            if ap == Some(sender) {
                return self.on_admitting_update(now, sender, preds, succs);
            }
            if ap.is_none() {
                self.early_update = Some((sender, preds, succs));
            }
            return;
        }
        if self.phase != Phase::Joined {
            return;
        }
        if self.links.contains(&sender) && sender != self.id {
            self.offer(sender);
        }
        for peer in preds.into_iter().chain(succs).chain(fingers) {
            self.consider(now, sender, peer);
        }
    }

    /// §10.9: a departing neighbor; patch our table from what it says.
    fn on_leave(&mut self, now: Instant, req: LeaveReq) {
        let leaver = req.leaving_peer_id;
        self.forget_peer(now, leaver);
        let listed = match req.data {
            ChordLeaveData::FromSucc { successors } => successors,
            ChordLeaveData::FromPred { predecessors } => predecessors,
            ChordLeaveData::Unknown { .. } => Vec::new(),
        };
        for peer in listed {
            if peer != leaver {
                self.consider_direct(now, peer);
            }
        }
    }

    /// Parts per billion of the ring this peer is responsible for (§6.4.2.5.1).
    fn responsible_ppb(&self) -> u32 {
        let (a, b) = self.table.neighbors().responsible_range();
        let span = super::chord::distance(a, b);
        if span == 0 {
            return 1_000_000_000;
        }
        u32::try_from((span >> 64).saturating_mul(1_000_000_000) >> 64).unwrap_or(u32::MAX)
    }

    /// RouteQuery (§6.4.2.4): the next hop we would use for `point`.
    fn route_query(&self, point: NodeId) -> Option<NodeId> {
        if self.table.neighbors().responsible_for(point) {
            return Some(self.id);
        }
        match self.table.next_hop(point) {
            super::chord::NextHop::Forward(p) => Some(p),
            super::chord::NextHop::Local => Some(self.id),
        }
    }

    fn holds_any(&self, resource: &crate::wire::ResourceId) -> bool {
        self.config.kinds.iter().any(|k| self.store.holds(resource, k.kind))
    }
}
