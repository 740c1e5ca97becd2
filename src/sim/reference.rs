//! The reference model the simulated overlay is checked against: the ring
//! as it should be (the sorted Node-IDs of the live joined peers) and
//! where each stored record should live (RFC 6940 §10.1: the first peer at
//! or after the Resource-ID clockwise, plus its next two successors §10.4).
//!
//! Checks are O(N log N) at most and run once per simulated second during
//! repair polling and once at the end, never per event.

use std::collections::BTreeMap;

use super::net::SlotId;
use super::world::Simulation;
use crate::wire::{KindId, NodeId};

/// Up to this many live nodes, every node is asked whether it holds a
/// record; above it only the nodes near the record's place on the ring
/// (where every copy should be: the responsible peer and its successors,
/// or a predecessor that has not handed over yet).
const FULL_SCAN_MAX_NODES: usize = 64;
/// The neighbourhood searched above [`FULL_SCAN_MAX_NODES`]: live nodes
/// clockwise from the record's point, and counter-clockwise before it.
const WINDOW_AFTER: usize = 32;
const WINDOW_BEFORE: usize = 8;

/// How the nodes' neighbor tables compare with the reference ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct RingCheck {
    /// Every live node joined, and every joined node's first successor and
    /// first predecessor are its neighbors in the reference ring.
    pub correct: bool,
    pub live: usize,
    pub joined: usize,
    /// Live nodes (not leaving) that are not part of the ring.
    pub unjoined: usize,
    pub wrong_successor: usize,
    pub wrong_predecessor: usize,
}

/// The reference ring check.
pub(super) fn check_ring(sim: &Simulation) -> RingCheck {
    let ids: Vec<(NodeId, SlotId)> = sim.ring.iter().map(|(id, s)| (*id, *s)).collect();
    let n = ids.len();
    let mut check = RingCheck {
        live: sim.alive.len(),
        joined: n,
        unjoined: sim.alive.len().saturating_sub(n + sim.leaving),
        ..RingCheck::default()
    };
    for (i, (id, s)) in ids.iter().enumerate() {
        let Some(node) = sim.slot(*s).and_then(|sl| sl.overlay()) else { continue };
        let succ = ids.get((i + 1) % n).map(|p| p.0);
        let pred = ids.get((i + n - 1) % n).map(|p| p.0);
        if !neighbor_ok(node.successors().first(), succ, *id) {
            check.wrong_successor += 1;
        }
        if !neighbor_ok(node.predecessors().first(), pred, *id) {
            check.wrong_predecessor += 1;
        }
    }
    check.correct = n > 0 && check.unjoined == 0 && check.wrong_successor == 0 && check.wrong_predecessor == 0;
    check
}

/// A lone peer may list nobody or itself.
fn neighbor_ok(actual: Option<&NodeId>, expected: Option<NodeId>, me: NodeId) -> bool {
    match (actual, expected) {
        (Some(a), Some(e)) if *a == e => true,
        (None, Some(e)) => e == me,
        _ => false,
    }
}

/// The node responsible for `point` (§10.1): the first ring member at or
/// after it, clockwise.
pub(super) fn responsible(ring: &BTreeMap<NodeId, SlotId>, point: NodeId) -> Option<(NodeId, SlotId)> {
    ring.range(point..).next().or_else(|| ring.iter().next()).map(|(id, s)| (*id, *s))
}

/// The responsible node and the next `replicas` ring members (§10.4).
pub(super) fn replica_set(ring: &BTreeMap<NodeId, SlotId>, point: NodeId, replicas: usize) -> Vec<SlotId> {
    let want = (replicas + 1).min(ring.len());
    ring.range(point..).chain(ring.range(..point)).take(want).map(|(_, s)| *s).collect()
}

/// Whether the responsible node holds record `rec`.
pub(super) fn responsible_holds(sim: &Simulation, rec: usize) -> bool {
    let Some(r) = sim.work.records.get(rec) else { return false };
    responsible(&sim.ring, r.point).is_some_and(|(_, s)| holds(sim, s, rec))
}

/// How many of the responsible node and its replicas hold record `rec`.
pub(super) fn replicas_holding(sim: &Simulation, rec: usize) -> usize {
    let Some(r) = sim.work.records.get(rec) else { return 0 };
    replica_set(&sim.ring, r.point, sim.config.replicas).into_iter().filter(|&s| holds(sim, s, rec)).count()
}

/// The live nodes that hold a copy of record `rec` (every node is asked
/// for small N, the ring neighbourhood of the record above that).
pub(super) fn holder_slots(sim: &Simulation, rec: usize) -> Vec<SlotId> {
    let Some(r) = sim.work.records.get(rec) else { return Vec::new() };
    if sim.alive.len() <= FULL_SCAN_MAX_NODES {
        return sim.alive.values().copied().filter(|&s| holds(sim, s, rec)).collect();
    }
    let after = sim.alive.range(r.point..).chain(sim.alive.range(..r.point)).take(WINDOW_AFTER);
    let before = sim.alive.range(..r.point).rev().chain(sim.alive.range(r.point..).rev()).take(WINDOW_BEFORE);
    let mut slots: Vec<SlotId> = after.chain(before).map(|(_, s)| *s).collect();
    slots.sort_unstable();
    slots.dedup();
    slots.retain(|&s| holds(sim, s, rec));
    slots
}

fn holds(sim: &Simulation, s: SlotId, rec: usize) -> bool {
    let (Some(node), Some(r)) = (sim.slot(s).and_then(|sl| sl.overlay()), sim.work.records.get(rec)) else {
        return false;
    };
    node.holds(&r.resource, KindId::CHORDPHONE_TEST)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(ids: &[u128]) -> BTreeMap<NodeId, SlotId> {
        ids.iter().enumerate().map(|(i, &v)| (NodeId::from_u128(v), i as SlotId)).collect()
    }

    #[test]
    fn responsible_is_first_at_or_after_clockwise() {
        let r = ring(&[10, 20, 30]);
        assert_eq!(responsible(&r, NodeId::from_u128(10)).unwrap().1, 0);
        assert_eq!(responsible(&r, NodeId::from_u128(11)).unwrap().1, 1);
        assert_eq!(responsible(&r, NodeId::from_u128(30)).unwrap().1, 2);
        // Past the last node the ring wraps to the first.
        assert_eq!(responsible(&r, NodeId::from_u128(31)).unwrap().1, 0);
        assert_eq!(responsible(&r, NodeId::from_u128(0)).unwrap().1, 0);
        assert!(responsible(&BTreeMap::new(), NodeId::from_u128(1)).is_none());
    }

    #[test]
    fn replica_set_wraps_and_is_capped_by_ring_size() {
        let r = ring(&[10, 20, 30, 40]);
        assert_eq!(replica_set(&r, NodeId::from_u128(25), 2), vec![2, 3, 0]);
        assert_eq!(replica_set(&r, NodeId::from_u128(41), 2), vec![0, 1, 2]);
        assert_eq!(replica_set(&ring(&[5, 6]), NodeId::from_u128(1), 2), vec![0, 1]);
    }

    #[test]
    fn neighbor_check_accepts_a_lone_peer() {
        let me = NodeId::from_u128(1);
        assert!(neighbor_ok(None, Some(me), me));
        assert!(neighbor_ok(Some(&me), Some(me), me));
        assert!(!neighbor_ok(None, Some(NodeId::from_u128(2)), me));
        assert!(!neighbor_ok(Some(&me), Some(NodeId::from_u128(2)), me));
    }
}
