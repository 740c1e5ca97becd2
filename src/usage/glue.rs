//! The sans-IO glue between one node's SIP edge and its overlay machine.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use tracing::{debug, warn};

use super::records::{
    TOMBSTONE_S, fetch_command, node_id, node_ref, registration_value, serving_nodes, sip_candidate, store_command,
    tombstone_value,
};
use crate::overlay::{Command, Failure, Outcome, OverlayNode, RequestId};
use crate::sip::edge::{EdgeOutput, OverlayOpId, OverlayResult, SipEdge};
use crate::sip::transaction::TransportAddr;
use crate::time::WallTime;
use crate::wire::NodeId;
use crate::wire::attach::APPLICATION_SIP;
use crate::wire::storage::StoredDataValue;

/// Messages held for a node while its SIP connection is being set up.
const MAX_WAITING: usize = 64;

/// What an overlay request made for the edge answers.
#[derive(Clone, Copy, Debug)]
enum UsageOp {
    Store(OverlayOpId),
    Fetch(OverlayOpId),
    Attach(NodeId),
}

/// What the owner must carry out for the SIP side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageEvent {
    /// Send to a phone (stream transports: over `to.flow`).
    SendLocal { to: TransportAddr, bytes: Vec<u8> },
    /// Send over the open SIP connection to another node.
    SendNode { node: NodeId, bytes: Vec<u8> },
    /// Open a node-to-node SIP connection to `node` at `addr` (learned by
    /// AppAttach); report it with [`SipUsage::node_connected`] or
    /// [`SipUsage::node_failed`].
    DialNode { node: NodeId, addr: SocketAddr },
}

/// Overlay requests the usage made for the SIP side (accepted by the
/// overlay machine), for metrics: e.g. how often the edge's location cache
/// spared a Fetch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageCounters {
    /// Registrations stored (RFC 7904 §3), including restores.
    pub stores: u64,
    /// Tombstones stored for removed registrations.
    pub removals: u64,
    /// Fetches of an AOR's registrations (§3.2).
    pub fetches: u64,
    /// AppAttaches to find where a node serves SIP (§4).
    pub app_attaches: u64,
}

/// RFC 7904 glue state of one node.
#[derive(Debug, Default)]
pub struct SipUsage {
    pending: BTreeMap<RequestId, UsageOp>,
    counters: UsageCounters,
    /// Nodes with an open SIP connection (reported by the owner).
    connected: BTreeSet<NodeId>,
    /// Nodes being located or dialed, with what waits for them.
    waiting: BTreeMap<NodeId, Vec<Vec<u8>>>,
    out: VecDeque<UsageEvent>,
}

impl SipUsage {
    pub fn new() -> SipUsage {
        SipUsage::default()
    }

    /// Carries out one request of the edge against the overlay machine.
    pub fn on_edge_output(
        &mut self,
        now: Instant,
        wall: WallTime,
        out: EdgeOutput,
        overlay: &mut OverlayNode,
        edge: &mut SipEdge,
    ) {
        match out {
            EdgeOutput::SendLocal { to, bytes } => self.out.push_back(UsageEvent::SendLocal { to, bytes }),
            EdgeOutput::SendNode { node, bytes } => self.send_node(now, wall, node_id(node), bytes, overlay, edge),
            EdgeOutput::StoreRegistration { op, aor, expires_s } => match registration_value(overlay.node_id()) {
                Ok(value) => {
                    if self.store(now, wall, op, &aor, value, expires_s, overlay, edge) {
                        self.counters.stores += 1;
                    }
                }
                Err(e) => edge.handle_overlay(now, wall, op, OverlayResult::Failed(e.to_string())),
            },
            EdgeOutput::RemoveRegistration { op, aor } => {
                let value = tombstone_value(overlay.node_id());
                if self.store(now, wall, op, &aor, value, TOMBSTONE_S, overlay, edge) {
                    self.counters.removals += 1;
                }
            }
            EdgeOutput::FetchRegistration { op, aor } => match overlay.command(now, fetch_command(&aor)) {
                Ok(id) => {
                    self.counters.fetches += 1;
                    self.pending.insert(id, UsageOp::Fetch(op));
                }
                Err(e) => edge.handle_overlay(now, wall, op, OverlayResult::Failed(e.to_string())),
            },
        }
    }

    /// An overlay request completed. Returns the outcome back when the
    /// request was not one of ours.
    pub fn on_completed(
        &mut self,
        now: Instant,
        wall: WallTime,
        id: RequestId,
        outcome: Outcome,
        edge: &mut SipEdge,
    ) -> Option<Outcome> {
        let Some(op) = self.pending.remove(&id) else { return Some(outcome) };
        match (op, outcome) {
            (UsageOp::Store(op), Outcome::Stored { .. }) => edge.handle_overlay(now, wall, op, OverlayResult::Stored),
            (UsageOp::Fetch(op), Outcome::Fetched { values }) => {
                edge.handle_overlay(now, wall, op, OverlayResult::Located(serving_nodes(&values)));
            }
            (UsageOp::Attach(node), Outcome::AppAttached { peer, candidates, .. }) => {
                match sip_candidate(&candidates) {
                    Some(addr) if peer == node => self.out.push_back(UsageEvent::DialNode { node, addr }),
                    _ => self.node_failed(now, wall, node, "no usable SIP candidate in the AppAttach answer", edge),
                }
            }
            (UsageOp::Attach(node), Outcome::Failed(f)) => self.node_failed(now, wall, node, &failure_text(&f), edge),
            (UsageOp::Store(op) | UsageOp::Fetch(op), Outcome::Failed(f)) => {
                edge.handle_overlay(now, wall, op, OverlayResult::Failed(failure_text(&f)));
            }
            (UsageOp::Store(op) | UsageOp::Fetch(op), other) => {
                let why = format!("unexpected outcome {other:?}");
                edge.handle_overlay(now, wall, op, OverlayResult::Failed(why));
            }
            (UsageOp::Attach(node), other) => {
                self.node_failed(now, wall, node, &format!("unexpected outcome {other:?}"), edge);
            }
        }
        None
    }

    /// The owner opened the SIP connection to `node`: what waited goes out.
    pub fn node_connected(&mut self, node: NodeId) {
        self.connected.insert(node);
        for bytes in self.waiting.remove(&node).unwrap_or_default() {
            self.out.push_back(UsageEvent::SendNode { node, bytes });
        }
        debug!(%node, "node SIP connection up");
    }

    /// The SIP connection to `node` closed.
    pub fn node_closed(&mut self, node: NodeId) {
        self.connected.remove(&node);
    }

    /// `node` could not be reached for SIP: what waited for it fails.
    pub fn node_failed(&mut self, now: Instant, wall: WallTime, node: NodeId, why: &str, edge: &mut SipEdge) {
        warn!(%node, reason = why, "cannot reach the node for SIP");
        self.connected.remove(&node);
        self.waiting.remove(&node);
        edge.handle_node_unreachable(now, wall, node_ref(node));
    }

    pub fn poll_event(&mut self) -> Option<UsageEvent> {
        self.out.pop_front()
    }

    /// Overlay requests in flight for the SIP side.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// The overlay requests made so far.
    pub fn counters(&self) -> UsageCounters {
        self.counters
    }

    fn send_node(
        &mut self,
        now: Instant,
        wall: WallTime,
        node: NodeId,
        bytes: Vec<u8>,
        overlay: &mut OverlayNode,
        edge: &mut SipEdge,
    ) {
        if self.connected.contains(&node) {
            self.out.push_back(UsageEvent::SendNode { node, bytes });
            return;
        }
        let first = !self.waiting.contains_key(&node);
        let q = self.waiting.entry(node).or_default();
        // Bounded: beyond it the request is dropped; its transaction's
        // retransmission or timeout deals with it.
        if q.len() < MAX_WAITING {
            q.push(bytes);
        }
        if first {
            match overlay.command(now, Command::AppAttach { node, application: APPLICATION_SIP }) {
                Ok(id) => {
                    self.counters.app_attaches += 1;
                    self.pending.insert(id, UsageOp::Attach(node));
                }
                Err(e) => self.node_failed(now, wall, node, &e.to_string(), edge),
            }
        }
    }

    /// Whether the overlay took the request (its outcome comes later).
    #[allow(clippy::too_many_arguments)]
    fn store(
        &mut self,
        now: Instant,
        wall: WallTime,
        op: OverlayOpId,
        aor: &str,
        value: StoredDataValue,
        lifetime_s: u32,
        overlay: &mut OverlayNode,
        edge: &mut SipEdge,
    ) -> bool {
        match overlay.command(now, store_command(aor, value, lifetime_s)) {
            Ok(id) => {
                self.pending.insert(id, UsageOp::Store(op));
                true
            }
            Err(e) => {
                edge.handle_overlay(now, wall, op, OverlayResult::Failed(e.to_string()));
                false
            }
        }
    }
}

fn failure_text(f: &Failure) -> String {
    match f {
        Failure::Error(code, reason) => format!("{code}: {reason}"),
        Failure::Timeout => "overlay timeout".into(),
        Failure::NotJoined => "not joined to the overlay".into(),
    }
}
