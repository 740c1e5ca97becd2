//! CHORD-RELOAD ring arithmetic (RFC 6940 §10): intervals on the 2^128 ring,
//! finger ranges, the Neighbor and Finger Tables, next-hop selection and the
//! replica set.
//!
//! Pure and deterministic: no I/O, no clock, no hash-map iteration, and
//! randomness only from an injected [`Rng`]. The hot paths ([`distance`],
//! [`in_open`], [`in_half_open`], [`RoutingTable::next_hop`]) never allocate,
//! because the simulator runs this code for up to 100,000 peers.
//!
//! Ring points are [`NodeId`]s read as unsigned 128-bit integers; all
//! arithmetic is modulo 2^128 (§10.1) and every interval runs clockwise.

use rand::Rng;
use thiserror::Error;

use crate::wire::{NodeId, ResourceId};

/// §10.7: a peer MUST try to keep at least three successors and three
/// predecessors; smaller configured counts are raised to this.
pub const MIN_NEIGHBORS: usize = 3;
/// §10.7.4.3: a peer SHOULD keep at least 16 fingers.
pub const MIN_FINGERS: usize = 16;
/// §10.7.4.3: the table SHOULD be able to grow to one finger per bit.
pub const MAX_FINGERS: usize = 128;
/// §10.4: the responsible peer stores, then replicates to this many successors.
pub const REPLICAS: usize = 2;

/// Local misuse of the ring API.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChordError {
    /// A Resource-ID that is not exactly 128 bits names no point on the
    /// CHORD-RELOAD ring (§10.2); a request carrying one is malformed.
    #[error("resource id of {0} bytes is not a CHORD-RELOAD ring point (needs 16)")]
    ResourceIdLength(usize),
}

/// Clockwise distance from `from` to `to`: `to - from mod 2^128`.
/// Zero only when the two are equal; `distance(a, b) + distance(b, a)` wraps to 0.
pub fn distance(from: NodeId, to: NodeId) -> u128 {
    to.as_u128().wrapping_sub(from.as_u128())
}

/// Is `x` strictly inside the clockwise interval `(a, b)`?
///
/// When `a == b` the interval is the whole ring except `a`, so that a peer
/// whose only neighbor is itself treats every other point as "between".
pub fn in_open(x: NodeId, a: NodeId, b: NodeId) -> bool {
    let offset = distance(a, x);
    let span = distance(a, b);
    offset != 0 && (span == 0 || offset < span)
}

/// Is `x` in the clockwise interval `(a, b]`, the responsibility interval of
/// §10.1 (peer `b` with predecessor `a` is responsible for it)?
///
/// When `a == b` the interval is the whole ring: a peer that is its own
/// predecessor (alone on the ring) is responsible for every point.
pub fn in_half_open(x: NodeId, a: NodeId, b: NodeId) -> bool {
    let offset = distance(a, x);
    let span = distance(a, b);
    span == 0 || (offset != 0 && offset <= span)
}

/// The ring point a Resource-ID names. CHORD-RELOAD Resource-IDs are the
/// first 128 bits of SHA-1 (§10.2) and map one-to-one onto Node-IDs; any
/// other length is refused rather than padded or truncated.
pub fn resource_point(resource: &ResourceId) -> Result<NodeId, ChordError> {
    resource.as_u128().map(NodeId::from_u128).ok_or(ChordError::ResourceIdLength(resource.0.len()))
}

/// A finger number `i` in `1..=128`; finger 1 is half-way round the ring and
/// finger 128 is the very next point (§10.1, §10.7.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FingerIndex(u8);

impl FingerIndex {
    /// Finger 1: `self + 2^127`.
    pub const HALF_WAY: FingerIndex = FingerIndex(1);
    /// Finger 128: `self + 1`.
    pub const NEAREST: FingerIndex = FingerIndex(128);

    /// `None` outside `1..=128`.
    pub fn new(i: u8) -> Option<Self> {
        (1..=128).contains(&i).then_some(FingerIndex(i))
    }

    pub fn get(self) -> u8 {
        self.0
    }

    /// The one finger whose range holds `peer` as seen from `self_id`, or
    /// `None` for `self_id` itself. The ranges partition the ring minus
    /// `self_id`, so the answer is unique: `i = leading_zeros(distance) + 1`.
    pub fn of(self_id: NodeId, peer: NodeId) -> Option<Self> {
        let offset = distance(self_id, peer);
        // leading_zeros of a non-zero u128 is 0..=127, so i is 1..=128.
        (offset != 0).then(|| FingerIndex(offset.leading_zeros() as u8 + 1))
    }

    /// `2^(128-i)`: both the offset of the range start and the range size.
    fn span(self) -> u128 {
        1u128 << (128 - u32::from(self.0))
    }

    fn slot(self) -> usize {
        usize::from(self.0) - 1
    }
}

/// `self + 2^(128-i)`: the point a joining peer Attaches to for finger `i`
/// (§10.5), and the start of the finger's range.
pub fn finger_target(self_id: NodeId, i: FingerIndex) -> NodeId {
    NodeId::from_u128(self_id.as_u128().wrapping_add(i.span()))
}

/// The inclusive range `[self + 2^(128-i), self + 2^(128-i+1) - 1]` in which a
/// peer is a valid finger `i` (§10.7.4.2). Ranges for `i = 1..=128` are
/// disjoint, contiguous and cover every point except `self_id`.
pub fn finger_range(self_id: NodeId, i: FingerIndex) -> (NodeId, NodeId) {
    let start = finger_target(self_id, i);
    let end = NodeId::from_u128(start.as_u128().wrapping_add(i.span() - 1));
    (start, end)
}

/// A uniformly random point in finger `i`'s range, the Ping target used to
/// look for a new finger (§10.7.4.2).
pub fn random_in_finger_range<R: Rng + ?Sized>(self_id: NodeId, i: FingerIndex, rng: &mut R) -> NodeId {
    // The range size is a power of two, so masking keeps the draw uniform.
    let offset = random_u128(rng) & (i.span() - 1);
    NodeId::from_u128(finger_target(self_id, i).as_u128().wrapping_add(offset))
}

/// Sizes of the tables; counts below the RFC minimums are raised to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChordConfig {
    /// Successors kept (at least [`MIN_NEIGHBORS`]).
    pub successors: usize,
    /// Predecessors kept (at least [`MIN_NEIGHBORS`]).
    pub predecessors: usize,
    /// Fingers `1..=fingers` kept (clamped to [`MIN_FINGERS`]..=[`MAX_FINGERS`]).
    pub fingers: usize,
}

impl Default for ChordConfig {
    fn default() -> Self {
        ChordConfig { successors: MIN_NEIGHBORS, predecessors: MIN_NEIGHBORS, fingers: MIN_FINGERS }
    }
}

/// The Neighbor Table (§10.1, §10.7): the closest known peers clockwise
/// (successors) and counter-clockwise (predecessors).
///
/// Both lists are drawn from the same set of known neighbors: each holds the
/// closest ones in its direction, nearest first. On a ring smaller than the
/// two lists together a peer is in both (on a ring of two, the other peer is
/// both successor and predecessor). Never holds `self_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighborTable {
    self_id: NodeId,
    max_successors: usize,
    max_predecessors: usize,
    /// Ascending `distance(self, p)`.
    successors: Vec<NodeId>,
    /// Ascending `distance(p, self)`.
    predecessors: Vec<NodeId>,
}

impl NeighborTable {
    /// An empty table: the peer is alone and responsible for the whole ring.
    pub fn new(self_id: NodeId, successors: usize, predecessors: usize) -> Self {
        let max_successors = successors.max(MIN_NEIGHBORS);
        let max_predecessors = predecessors.max(MIN_NEIGHBORS);
        NeighborTable {
            self_id,
            max_successors,
            max_predecessors,
            // One spare slot: an insert goes in before the overflow is cut.
            successors: Vec::with_capacity(max_successors + 1),
            predecessors: Vec::with_capacity(max_predecessors + 1),
        }
    }

    pub fn self_id(&self) -> NodeId {
        self.self_id
    }

    pub fn successor(&self) -> Option<NodeId> {
        self.successors.first().copied()
    }

    pub fn predecessor(&self) -> Option<NodeId> {
        self.predecessors.first().copied()
    }

    /// Nearest first.
    pub fn successors(&self) -> &[NodeId] {
        &self.successors
    }

    /// Nearest first (the immediate predecessor is `predecessors()[0]`).
    pub fn predecessors(&self) -> &[NodeId] {
        &self.predecessors
    }

    pub fn is_empty(&self) -> bool {
        self.successors.is_empty() && self.predecessors.is_empty()
    }

    pub fn contains(&self, peer: NodeId) -> bool {
        self.successors.contains(&peer) || self.predecessors.contains(&peer)
    }

    /// Would inserting `peer` change the table? This is the §10.7.3 test for
    /// a peer listed in a received Update: Attach to it only if it improves
    /// the table. Never true for `self_id` (§10.7.3: never list yourself).
    pub fn would_improve(&self, peer: NodeId) -> bool {
        peer != self.self_id
            && !self.contains(peer)
            && (fits(&self.successors, self.max_successors, self.succ_key(peer), |p| self.succ_key(p))
                || fits(&self.predecessors, self.max_predecessors, self.pred_key(peer), |p| self.pred_key(p)))
    }

    /// Adds `peer` to whichever lists it belongs in, evicting the farthest
    /// entry of a full list. Returns whether the table changed.
    pub fn insert(&mut self, peer: NodeId) -> bool {
        if peer == self.self_id {
            return false;
        }
        let me = self.self_id;
        let succ = insert_sorted(&mut self.successors, self.max_successors, peer, |p| distance(me, p));
        let pred = insert_sorted(&mut self.predecessors, self.max_predecessors, peer, |p| distance(p, me));
        succ || pred
    }

    /// Drops `peer` (it failed or left, §10.7.1) and refills each list from
    /// the other one, the best match still known. Returns whether it was here.
    pub fn remove(&mut self, peer: NodeId) -> bool {
        let before = self.successors.len() + self.predecessors.len();
        self.successors.retain(|p| *p != peer);
        self.predecessors.retain(|p| *p != peer);
        if self.successors.len() + self.predecessors.len() == before {
            return false;
        }
        let me = self.self_id;
        for p in self.predecessors.iter().copied() {
            insert_sorted(&mut self.successors, self.max_successors, p, |q| distance(me, q));
        }
        for p in self.successors.iter().copied() {
            insert_sorted(&mut self.predecessors, self.max_predecessors, p, |q| distance(q, me));
        }
        true
    }

    /// The responsibility interval `(predecessor, self]` as `(a, b)` for
    /// [`in_half_open`]; `(self, self)`, the whole ring, when alone (§10.1).
    pub fn responsible_range(&self) -> (NodeId, NodeId) {
        (self.predecessor().unwrap_or(self.self_id), self.self_id)
    }

    /// Is this peer responsible for `point`, i.e. `point ∈ (predecessor, self]`
    /// (§10.1)? A peer with no neighbors is responsible for everything.
    pub fn responsible_for(&self, point: NodeId) -> bool {
        let (a, b) = self.responsible_range();
        in_half_open(point, a, b)
    }

    /// The peers that receive replicas of what this peer is responsible for:
    /// its first [`REPLICAS`] successors (§10.4). Fewer on a tiny ring.
    pub fn replica_peers(&self) -> &[NodeId] {
        let n = self.successors.len().min(REPLICAS);
        self.successors.get(..n).unwrap_or_default()
    }

    /// Is a replica Store of `point` from `sender` plausible (§10.4)? Only the
    /// responsible peer replicates, to its first two successors, so `sender`
    /// must be one of this peer's first [`REPLICAS`] predecessors and, by this
    /// peer's view, responsible for `point`.
    pub fn is_plausible_replica_sender(&self, sender: NodeId, point: NodeId) -> bool {
        let Some(at) = self.predecessors.iter().take(REPLICAS).position(|p| *p == sender) else {
            return false;
        };
        // Without a further predecessor, this peer itself bounds the range.
        let lower = self.predecessors.get(at + 1).copied().unwrap_or(self.self_id);
        in_half_open(point, lower, sender)
    }

    /// Should this peer hold a replica of `point`? True when the responsible
    /// peer is its first or second predecessor, i.e. `point ∈ (pred[2], pred[0]]`
    /// (§10.4: three copies). Storage may keep data a little longer: §10.4
    /// only says to delete once three predecessors lie in between.
    pub fn is_replica_holder_for(&self, point: NodeId) -> bool {
        let Some(first) = self.predecessor() else {
            return false;
        };
        let lower = self.predecessors.get(REPLICAS).copied().unwrap_or(self.self_id);
        in_half_open(point, lower, first)
    }

    fn succ_key(&self, peer: NodeId) -> u128 {
        distance(self.self_id, peer)
    }

    fn pred_key(&self, peer: NodeId) -> u128 {
        distance(peer, self.self_id)
    }
}

/// The Finger Table (§10.1, §10.7.4.2): entry `i` holds a peer from
/// [`finger_range`]`(self, i)` or is invalid (empty).
///
/// Every finger range is disjoint, so a peer fits at most one entry and
/// insert/remove/contains are O(1). The first valid peer found for an entry
/// keeps it until it is removed: any peer in the range is as good (§10.7.4.2
/// picks one at random), and keeping it keeps the connection set stable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FingerTable {
    self_id: NodeId,
    /// Slot `i - 1` is finger `i`.
    entries: Vec<Option<NodeId>>,
}

impl FingerTable {
    /// Fingers `1..=size`, all invalid; `size` is clamped to 16..=128.
    pub fn new(self_id: NodeId, size: usize) -> Self {
        FingerTable { self_id, entries: vec![None; size.clamp(MIN_FINGERS, MAX_FINGERS)] }
    }

    pub fn self_id(&self) -> NodeId {
        self.self_id
    }

    /// Number of fingers kept (valid or not).
    pub fn size(&self) -> usize {
        self.entries.len()
    }

    /// The peer in finger `i`, if valid.
    pub fn get(&self, i: FingerIndex) -> Option<NodeId> {
        self.entries.get(i.slot()).copied().flatten()
    }

    pub fn contains(&self, peer: NodeId) -> bool {
        FingerIndex::of(self.self_id, peer).is_some_and(|i| self.get(i) == Some(peer))
    }

    /// Offers `peer` to the finger whose range holds it. Returns the finger it
    /// filled; `None` if that finger was already valid, lies beyond the table
    /// size, or `peer` is `self_id`.
    pub fn insert(&mut self, peer: NodeId) -> Option<FingerIndex> {
        let i = FingerIndex::of(self.self_id, peer)?;
        let slot = self.entries.get_mut(i.slot())?;
        if slot.is_some() {
            return None;
        }
        *slot = Some(peer);
        Some(i)
    }

    /// Invalidates the finger holding `peer` (§10.7.2); returns which one.
    pub fn remove(&mut self, peer: NodeId) -> Option<FingerIndex> {
        let i = FingerIndex::of(self.self_id, peer)?;
        let slot = self.entries.get_mut(i.slot())?;
        if *slot != Some(peer) {
            return None;
        }
        *slot = None;
        Some(i)
    }

    /// Every finger in ascending `i` (farthest first) with its peer if valid.
    pub fn entries(&self) -> impl Iterator<Item = (FingerIndex, Option<NodeId>)> + '_ {
        self.entries.iter().zip(1u8..).map(|(peer, i)| (FingerIndex(i), *peer))
    }

    /// The valid fingers' peers in ascending `i` (farthest first).
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.entries.iter().flatten().copied()
    }

    /// The invalid fingers in ascending `i`.
    pub fn invalid(&self) -> impl Iterator<Item = FingerIndex> + '_ {
        self.entries().filter(|(_, peer)| peer.is_none()).map(|(i, _)| i)
    }

    /// Picks an invalid finger to refresh and the random point in its range to
    /// Ping (§10.7.4.2, "Alternative 1"): walking the invalid entries from the
    /// lowest `i`, each is taken with probability 0.5; the last one takes the
    /// remainder. `None` when every finger is valid.
    pub fn refresh_candidate<R: Rng + ?Sized>(&self, rng: &mut R) -> Option<(FingerIndex, NodeId)> {
        let mut chosen = None;
        for i in self.invalid() {
            chosen = Some(i);
            if rng.next_u32() & 1 == 0 {
                break;
            }
        }
        let i = chosen?;
        Some((i, random_in_finger_range(self.self_id, i, rng)))
    }
}

/// Where [`RoutingTable::next_hop`] sends a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHop {
    /// This peer is responsible: deliver locally.
    Local,
    /// Forward over the connection to this peer.
    Forward(NodeId),
}

/// What an insert or remove changed, so the node machine knows whether to
/// send Updates (§10.7) or Attach/close connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableChange {
    /// The Neighbor Table changed (§10.7: reactive Updates are due).
    pub neighbors: bool,
    /// The finger that was filled or invalidated.
    pub finger: Option<FingerIndex>,
}

impl TableChange {
    pub fn is_changed(&self) -> bool {
        self.neighbors || self.finger.is_some()
    }
}

/// The Routing Table: the union of the Neighbor and Finger Tables (§10.3).
///
/// Every peer in it is one this peer holds a connection to; the node machine
/// inserts a peer only after its Attach succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingTable {
    neighbors: NeighborTable,
    fingers: FingerTable,
}

impl RoutingTable {
    pub fn new(self_id: NodeId, config: &ChordConfig) -> Self {
        RoutingTable {
            neighbors: NeighborTable::new(self_id, config.successors, config.predecessors),
            fingers: FingerTable::new(self_id, config.fingers),
        }
    }

    pub fn self_id(&self) -> NodeId {
        self.neighbors.self_id
    }

    pub fn neighbors(&self) -> &NeighborTable {
        &self.neighbors
    }

    pub fn fingers(&self) -> &FingerTable {
        &self.fingers
    }

    pub fn contains(&self, peer: NodeId) -> bool {
        self.neighbors.contains(peer) || self.fingers.contains(peer)
    }

    /// Would `peer` fill a neighbor slot or an invalid finger?
    pub fn would_improve(&self, peer: NodeId) -> bool {
        self.neighbors.would_improve(peer)
            || FingerIndex::of(self.self_id(), peer)
                .is_some_and(|i| i.slot() < self.fingers.size() && self.fingers.get(i).is_none())
    }

    /// Offers a connected peer to both tables (§10.5 step 4).
    pub fn insert(&mut self, peer: NodeId) -> TableChange {
        TableChange { neighbors: self.neighbors.insert(peer), finger: self.fingers.insert(peer) }
    }

    /// Drops a failed or departed peer from both tables. A lost neighbor is
    /// replaced by "the best match it has from the other peers in its Routing
    /// Table" (§10.7.1), so fingers are offered to the Neighbor Table again.
    pub fn remove(&mut self, peer: NodeId) -> TableChange {
        let change = TableChange { neighbors: self.neighbors.remove(peer), finger: self.fingers.remove(peer) };
        if change.neighbors {
            for p in self.fingers.peers() {
                self.neighbors.insert(p);
            }
        }
        change
    }

    /// Every routing-table entry: successors, predecessors, then valid
    /// fingers. A peer may appear more than once.
    pub fn entries(&self) -> impl Iterator<Item = NodeId> + '_ {
        let n = &self.neighbors;
        n.successors.iter().chain(n.predecessors.iter()).copied().chain(self.fingers.peers())
    }

    /// The CHORD-RELOAD routing decision for ring point `target` (§10.3):
    ///
    /// 1. `target ∈ (predecessor, self]`: this peer is responsible → `Local`.
    /// 2. A routing-table peer whose Node-ID is `target` → that peer.
    /// 3. The entry with the largest Node-ID in `(self, target)`, the closest
    ///    preceding peer.
    /// 4. Otherwise the entry with the smallest Node-ID after `target`. This
    ///    covers `target ∈ (self, successor]`: the successor is responsible.
    ///
    /// Rule 3 forwards to the responsible peer's predecessor, not to the
    /// responsible peer itself, even when the table happens to know both:
    /// the predecessor's successor list is authoritative, ours may miss a
    /// newly joined peer in between.
    ///
    /// The node machine checks its Connection Table (clients, joining peers
    /// that are not in the routing table) before calling this. A linear scan
    /// over at most `successors + predecessors + fingers` (≤ ~134 by default
    /// and 128 + 2·successors at most) entries, no allocation. Never returns
    /// `Forward(self)`. With no neighbors the peer is alone and always `Local`.
    pub fn next_hop(&self, target: NodeId) -> NextHop {
        if self.neighbors.responsible_for(target) {
            return NextHop::Local;
        }
        // §10.3: "directly connected to a node with Node-ID k".
        if self.contains(target) {
            return NextHop::Forward(target);
        }
        let me = self.self_id();
        let span = distance(me, target);
        // (distance from self, peer) of the best entry inside (self, target).
        let mut preceding: Option<(u128, NodeId)> = None;
        // (distance from target, peer) of the first entry after target.
        let mut following: Option<(u128, NodeId)> = None;
        for peer in self.entries() {
            let offset = distance(me, peer);
            if offset < span {
                if preceding.is_none_or(|(best, _)| offset > best) {
                    preceding = Some((offset, peer));
                }
            } else {
                let after = distance(target, peer);
                if following.is_none_or(|(best, _)| after < best) {
                    following = Some((after, peer));
                }
            }
        }
        match preceding.or(following) {
            Some((_, peer)) => NextHop::Forward(peer),
            // Unreachable while the tables hold anyone: a peer with no
            // predecessor is responsible for everything and returned above.
            None => NextHop::Local,
        }
    }
}

/// Would `peer` (at `key`) enter `list`, kept ascending by `key_of` and capped?
fn fits(list: &[NodeId], cap: usize, key: u128, key_of: impl Fn(NodeId) -> u128) -> bool {
    list.len() < cap || list.last().is_some_and(|last| key < key_of(*last))
}

/// Inserts `peer` into `list` kept ascending by `key_of`, dropping whatever
/// falls past `cap`. Returns whether `peer` went in.
fn insert_sorted(list: &mut Vec<NodeId>, cap: usize, peer: NodeId, key_of: impl Fn(NodeId) -> u128) -> bool {
    if list.contains(&peer) {
        return false;
    }
    let key = key_of(peer);
    let at = list.partition_point(|p| key_of(*p) < key);
    if at >= cap {
        return false;
    }
    list.insert(at, peer);
    list.truncate(cap);
    true
}

fn random_u128<R: Rng + ?Sized>(rng: &mut R) -> u128 {
    (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64())
}

#[cfg(test)]
pub(crate) mod strategies {
    use proptest::prelude::*;

    use super::FingerIndex;
    use crate::wire::NodeId;

    /// Any Node-ID, biased toward the wrap-around edges 0 and 2^128 − 1.
    pub(crate) fn node_id() -> impl Strategy<Value = NodeId> {
        prop_oneof![
            3 => any::<u128>(),
            1 => 0u128..4,
            1 => (u128::MAX - 3)..=u128::MAX,
        ]
        .prop_map(NodeId::from_u128)
    }

    pub(crate) fn finger_index() -> impl Strategy<Value = FingerIndex> {
        (1u8..=128).prop_map(FingerIndex)
    }

    /// Between `min` and `max` distinct ring points, sorted ascending.
    pub(crate) fn ring(min: usize, max: usize) -> impl Strategy<Value = Vec<NodeId>> {
        prop::collection::btree_set(node_id(), min..=max)
            .prop_map(|ids| ids.into_iter().collect())
            .prop_filter("enough distinct ids", move |ids: &Vec<NodeId>| ids.len() >= min)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::strategies::{finger_index, node_id, ring};
    use super::*;

    fn id(v: u128) -> NodeId {
        NodeId::from_u128(v)
    }

    const MAX: u128 = u128::MAX;

    /// Every simulated peer's routing table, by Node-ID.
    type Tables = BTreeMap<NodeId, RoutingTable>;

    /// The responsible node for `point` on a sorted ring: the first id ≥ point.
    fn owner(ring: &[NodeId], point: NodeId) -> NodeId {
        let at = ring.partition_point(|n| *n < point);
        *ring.get(at).unwrap_or(&ring[0])
    }

    /// A table that knows `ring`'s true neighbors plus every `extra` peer.
    fn table_for(ring: &[NodeId], me: NodeId, config: &ChordConfig, extra: &[NodeId]) -> RoutingTable {
        let mut t = RoutingTable::new(me, config);
        let n = ring.len();
        let at = ring.iter().position(|x| *x == me).unwrap();
        for k in 1..=config.successors.max(config.predecessors).min(n) {
            t.insert(ring[(at + k) % n]);
            t.insert(ring[(at + n - k) % n]);
        }
        for p in extra {
            t.insert(*p);
        }
        t
    }

    /// Follows next_hop from `from` until Local; returns (final node, hops).
    fn walk(tables: &Tables, from: NodeId, target: NodeId) -> (NodeId, usize) {
        let mut at = from;
        for hops in 0..=tables.len() + 2 {
            match tables[&at].next_hop(target) {
                NextHop::Local => return (at, hops),
                NextHop::Forward(next) => at = next,
            }
        }
        panic!("routing loop from {from} to {target}");
    }

    #[test]
    fn distance_wraps() {
        assert_eq!(distance(id(MAX), id(0)), 1);
        assert_eq!(distance(id(0), id(MAX)), MAX);
        assert_eq!(distance(id(7), id(7)), 0);
        assert_eq!(distance(id(5), id(3)), MAX - 1);
    }

    #[test]
    fn intervals_at_the_edges() {
        assert!(in_open(id(0), id(MAX), id(1)));
        assert!(!in_open(id(MAX), id(MAX), id(1)));
        assert!(in_half_open(id(0), id(MAX), id(0)));
        assert!(!in_half_open(id(MAX), id(MAX), id(0)));
        assert!(in_half_open(id(MAX), id(0), id(MAX)));
        // a == b: whole ring for (a, a], ring minus a for (a, a).
        assert!(in_half_open(id(42), id(42), id(42)));
        assert!(!in_open(id(42), id(42), id(42)));
        assert!(in_open(id(43), id(42), id(42)));
    }

    #[test]
    fn resource_points() {
        let test = ResourceId::from_name(b"test");
        assert_eq!(resource_point(&test).unwrap(), NodeId::from_hex("a94a8fe5ccb19ba61c4c0873d391e987").unwrap());
        assert_eq!(resource_point(&ResourceId(vec![1; 20])), Err(ChordError::ResourceIdLength(20)));
        assert_eq!(resource_point(&ResourceId(vec![])), Err(ChordError::ResourceIdLength(0)));
    }

    #[test]
    fn finger_examples() {
        assert_eq!(FingerIndex::new(0), None);
        assert_eq!(FingerIndex::new(129), None);
        assert_eq!(finger_target(id(0), FingerIndex::HALF_WAY), id(1 << 127));
        assert_eq!(finger_range(id(0), FingerIndex::HALF_WAY), (id(1 << 127), id(MAX)));
        assert_eq!(finger_range(id(0), FingerIndex::NEAREST), (id(1), id(1)));
        assert_eq!(finger_range(id(0), FingerIndex::new(127).unwrap()), (id(2), id(3)));
        // Wrapping from the top of the ring.
        assert_eq!(finger_range(id(MAX), FingerIndex::HALF_WAY), (id((1 << 127) - 1), id(MAX - 1)));
        assert_eq!(finger_range(id(MAX), FingerIndex::NEAREST), (id(0), id(0)));
        assert_eq!(FingerIndex::of(id(MAX), id(0)), Some(FingerIndex::NEAREST));
        assert_eq!(FingerIndex::of(id(0), id(MAX)), Some(FingerIndex::HALF_WAY));
        assert_eq!(FingerIndex::of(id(9), id(9)), None);
    }

    #[test]
    fn ring_of_one_owns_everything() {
        let t = RoutingTable::new(id(1000), &ChordConfig::default());
        for k in [0, 999, 1000, 1001, MAX] {
            assert!(t.neighbors().responsible_for(id(k)));
            assert_eq!(t.next_hop(id(k)), NextHop::Local);
        }
        assert_eq!(t.neighbors().successor(), None);
        assert!(t.neighbors().replica_peers().is_empty());
        assert!(!t.neighbors().is_replica_holder_for(id(5)));
    }

    #[test]
    fn ring_of_two_at_the_edges() {
        let cfg = ChordConfig::default();
        let mut zero = RoutingTable::new(id(0), &cfg);
        let mut top = RoutingTable::new(id(MAX), &cfg);
        zero.insert(id(MAX));
        top.insert(id(0));
        assert_eq!(zero.neighbors().successors(), &[id(MAX)]);
        assert_eq!(zero.neighbors().predecessors(), &[id(MAX)]);
        // 0's range is (MAX, 0] = {0}; MAX owns everything else.
        assert!(zero.neighbors().responsible_for(id(0)));
        assert!(!zero.neighbors().responsible_for(id(1)));
        assert!(top.neighbors().responsible_for(id(1)));
        assert!(top.neighbors().responsible_for(id(MAX)));
        assert_eq!(zero.next_hop(id(5)), NextHop::Forward(id(MAX)));
        assert_eq!(top.next_hop(id(0)), NextHop::Forward(id(0)));
        assert_eq!(zero.neighbors().replica_peers(), &[id(MAX)]);
        assert!(zero.neighbors().is_plausible_replica_sender(id(MAX), id(77)));
        assert!(!zero.neighbors().is_plausible_replica_sender(id(MAX), id(0)));
    }

    #[test]
    fn ring_of_three() {
        let ring = [id(100), id(200), id(300)];
        let cfg = ChordConfig::default();
        let t: Vec<RoutingTable> = ring.iter().map(|me| table_for(&ring, *me, &cfg, &[])).collect();
        assert_eq!(t[0].neighbors().successors(), &[id(200), id(300)]);
        assert_eq!(t[0].neighbors().predecessors(), &[id(300), id(200)]);
        assert!(t[0].neighbors().responsible_for(id(5))); // (300, 100] wraps
        assert_eq!(t[0].next_hop(id(250)), NextHop::Forward(id(200))); // closest preceding
        assert_eq!(t[1].next_hop(id(250)), NextHop::Forward(id(300))); // successor owns it
        assert_eq!(t[2].next_hop(id(250)), NextHop::Local);
        assert_eq!(t[0].next_hop(id(300)), NextHop::Forward(id(300))); // direct
        let n300 = t[2].neighbors();
        assert_eq!(n300.replica_peers(), &[id(100), id(200)]);
        assert!(n300.is_plausible_replica_sender(id(200), id(150)));
        assert!(n300.is_plausible_replica_sender(id(100), id(50)));
        assert!(!n300.is_plausible_replica_sender(id(100), id(150)));
        assert!(!n300.is_plausible_replica_sender(id(300), id(250)));
        assert!(n300.is_replica_holder_for(id(150)) && n300.is_replica_holder_for(id(50)));
        assert!(!n300.is_replica_holder_for(id(250)));
    }

    #[test]
    fn neighbor_table_keeps_the_closest_and_refills() {
        let mut n = NeighborTable::new(id(1000), 1, 0); // raised to 3 and 3
        for p in (1..=10).map(|k| id(1000 + k * 10)).chain((1..=10).map(|k| id(1000 - k * 10))) {
            n.insert(p);
        }
        assert_eq!(n.successors(), &[id(1010), id(1020), id(1030)]);
        assert_eq!(n.predecessors(), &[id(990), id(980), id(970)]);
        assert!(!n.would_improve(id(1040)) && !n.would_improve(id(1000)) && !n.would_improve(id(1010)));
        assert!(n.would_improve(id(1005)) && n.would_improve(id(995)));
        assert!(!n.insert(id(1040)));
        assert!(n.remove(id(1010)));
        assert!(!n.remove(id(1010)));
        // Best match left: the farthest predecessor, counting clockwise.
        assert_eq!(n.successors(), &[id(1020), id(1030), id(970)]);
        assert!(n.insert(id(1040)));
        assert_eq!(n.successors(), &[id(1020), id(1030), id(1040)]);
    }

    #[test]
    fn routing_table_refills_neighbors_from_fingers() {
        let me = id(0);
        let mut t = RoutingTable::new(me, &ChordConfig::default());
        for p in [1u128 << 120, 1 << 121, 1 << 122, 1 << 126] {
            t.insert(id(p));
        }
        assert_eq!(t.neighbors().successors(), &[id(1 << 120), id(1 << 121), id(1 << 122)]);
        let change = t.remove(id(1 << 120));
        assert!(change.neighbors);
        assert_eq!(change.finger, FingerIndex::new(8));
        assert_eq!(t.neighbors().successors(), &[id(1 << 121), id(1 << 122), id(1 << 126)]);
        assert!(!t.remove(id(5)).is_changed());
    }

    #[test]
    fn finger_table_insert_remove_invalid() {
        let me = id(MAX - 1);
        let mut f = FingerTable::new(me, 4); // raised to 16
        assert_eq!(f.size(), MIN_FINGERS);
        assert_eq!(f.invalid().count(), 16);
        let half = id((1 << 127) - 1); // distance 2^127 + 1: finger 1
        assert_eq!(f.insert(half), Some(FingerIndex::HALF_WAY));
        assert_eq!(f.insert(id((1 << 127) + 5)), None); // finger 1 already valid
        assert_eq!(f.insert(id(3)), None); // finger 126: beyond 16 entries
        assert_eq!(f.insert(me), None);
        assert!(f.contains(half));
        assert_eq!(f.invalid().next(), FingerIndex::new(2));
        assert_eq!(f.remove(half), Some(FingerIndex::HALF_WAY));
        assert_eq!(f.remove(half), None);
        assert_eq!(f.peers().count(), 0);
    }

    #[test]
    fn refresh_prefers_low_invalid_fingers() {
        let me = id(12345);
        let mut f = FingerTable::new(me, 16);
        f.insert(finger_target(me, FingerIndex::HALF_WAY));
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut counts = [0u32; 17];
        for _ in 0..4000 {
            let (i, point) = f.refresh_candidate(&mut rng).unwrap();
            let (start, end) = finger_range(me, i);
            assert!(distance(start, point) <= distance(start, end));
            counts[usize::from(i.get())] += 1;
        }
        assert_eq!(counts[1], 0);
        // Finger 2 ~ 1/2, finger 3 ~ 1/4.
        assert!((1800..2200).contains(&counts[2]), "{counts:?}");
        assert!((850..1150).contains(&counts[3]), "{counts:?}");
        let mut full = FingerTable::new(me, 16);
        for i in 1..=16 {
            full.insert(finger_target(me, FingerIndex::new(i).unwrap()));
        }
        assert_eq!(full.refresh_candidate(&mut rng), None);
    }

    /// Greedy routing over 1,000 random ids with successors, predecessors and
    /// 16 fingers found the §10.7.4.2 way (Ping a random point in the range).
    #[test]
    fn greedy_routing_over_a_thousand_peers() {
        let mut rng = ChaCha8Rng::seed_from_u64(6940);
        let mut ring: Vec<NodeId> = (0..1000).map(|_| NodeId::from_u128(random_u128(&mut rng))).collect();
        ring.sort();
        ring.dedup();
        let cfg = ChordConfig::default();
        let tables: Tables = ring
            .iter()
            .map(|me| {
                let mut t = table_for(&ring, *me, &cfg, &[]);
                for i in 1..=16 {
                    let i = FingerIndex::new(i).unwrap();
                    t.insert(owner(&ring, random_in_finger_range(*me, i, &mut rng)));
                    t.insert(owner(&ring, finger_target(*me, i)));
                }
                (*me, t)
            })
            .collect();
        let lookups = 2000;
        let mut total = 0;
        for _ in 0..lookups {
            let from = ring[(rng.next_u32() as usize) % ring.len()];
            let target = NodeId::from_u128(random_u128(&mut rng));
            let (end, hops) = walk(&tables, from, target);
            assert_eq!(end, owner(&ring, target));
            total += hops;
        }
        let mean = total as f64 / f64::from(lookups);
        let bound = (ring.len() as f64).log2() + 2.0;
        assert!(mean <= bound, "mean {mean} hops > {bound}");
    }

    proptest! {
        #[test]
        fn open_interval_trichotomy(x in node_id(), a in node_id(), b in node_id()) {
            prop_assume!(a != b);
            let cases = [x == a, x == b, in_open(x, a, b), in_open(x, b, a)];
            prop_assert_eq!(cases.iter().filter(|c| **c).count(), 1);
        }

        #[test]
        fn half_open_intervals_split_the_ring(x in node_id(), a in node_id(), b in node_id()) {
            prop_assume!(a != b);
            prop_assert_ne!(in_half_open(x, a, b), in_half_open(x, b, a));
            prop_assert_eq!(in_half_open(x, a, b), in_open(x, a, b) || x == b);
        }

        #[test]
        fn degenerate_intervals(x in node_id(), a in node_id()) {
            prop_assert!(in_half_open(x, a, a));
            prop_assert_eq!(in_open(x, a, a), x != a);
        }

        #[test]
        fn intervals_survive_rotation(x in node_id(), a in node_id(), b in node_id(), c in any::<u128>()) {
            let r = |n: NodeId| NodeId::from_u128(n.as_u128().wrapping_add(c));
            prop_assert_eq!(in_open(x, a, b), in_open(r(x), r(a), r(b)));
            prop_assert_eq!(in_half_open(x, a, b), in_half_open(r(x), r(a), r(b)));
            prop_assert_eq!(distance(a, b), distance(r(a), r(b)));
            prop_assert_eq!(distance(a, b).wrapping_add(distance(b, a)), 0);
        }

        #[test]
        fn finger_ranges_partition_the_ring(me in node_id(), x in node_id()) {
            let holders: Vec<u8> = (1..=128u8)
                .filter(|i| {
                    let (start, end) = finger_range(me, FingerIndex(*i));
                    distance(start, x) <= distance(start, end)
                })
                .collect();
            if x == me {
                prop_assert!(holders.is_empty());
                prop_assert_eq!(FingerIndex::of(me, x), None);
            } else {
                prop_assert_eq!(holders.len(), 1);
                prop_assert_eq!(FingerIndex::of(me, x).map(FingerIndex::get), holders.first().copied());
            }
        }

        #[test]
        fn finger_ranges_are_contiguous(me in node_id(), i in finger_index()) {
            let (start, end) = finger_range(me, i);
            if let Some(wider) = FingerIndex::new(i.get().wrapping_sub(1)) {
                prop_assert_eq!(distance(end, finger_range(me, wider).0), 1);
            } else {
                prop_assert_eq!(distance(end, me), 1); // finger 1 ends just before self
            }
            if i == FingerIndex::NEAREST {
                prop_assert_eq!(distance(me, start), 1);
            }
        }

        #[test]
        fn random_finger_points_stay_in_range(me in node_id(), i in finger_index(), seed in any::<u64>()) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let point = random_in_finger_range(me, i, &mut rng);
            prop_assert_eq!(FingerIndex::of(me, point), Some(i));
        }

        /// Each hop moves clockwise toward the responsible node and never past it.
        #[test]
        fn next_hop_progresses_without_overshoot(
            ring in ring(2, 40),
            known in prop::collection::vec(any::<bool>(), 40),
            from in any::<prop::sample::Index>(),
            target in node_id(),
        ) {
            let cfg = ChordConfig::default();
            let extra: Vec<NodeId> = ring.iter().zip(&known).filter(|(_, k)| **k).map(|(p, _)| *p).collect();
            let tables: Tables =
                ring.iter().map(|me| (*me, table_for(&ring, *me, &cfg, &extra))).collect();
            let responsible = owner(&ring, target);
            let me = *from.get(&ring);
            match tables[&me].next_hop(target) {
                NextHop::Local => prop_assert_eq!(me, responsible),
                NextHop::Forward(next) => {
                    prop_assert_ne!(next, me);
                    prop_assert!(distance(next, responsible) < distance(me, responsible));
                    prop_assert!(in_half_open(next, me, responsible));
                }
            }
            prop_assert_eq!(walk(&tables, me, target).0, responsible);
        }

        /// With every peer in every table, a lookup takes at most two hops:
        /// to the responsible node's predecessor (§10.3 closest preceding),
        /// then to the responsible node.
        #[test]
        fn full_knowledge_reaches_the_owner_in_two_hops(ring in ring(1, 24), target in node_id(), from in any::<prop::sample::Index>()) {
            let n = ring.len();
            let cfg = ChordConfig { successors: n, predecessors: n, fingers: MAX_FINGERS };
            let tables: Tables =
                ring.iter().map(|me| (*me, table_for(&ring, *me, &cfg, &ring))).collect();
            let responsible = owner(&ring, target);
            let before = ring[(ring.iter().position(|p| *p == responsible).unwrap() + n - 1) % n];
            let me = *from.get(&ring);
            let expected = if me == responsible {
                NextHop::Local
            } else if target == responsible || me == before {
                NextHop::Forward(responsible)
            } else {
                NextHop::Forward(before)
            };
            prop_assert_eq!(tables[&me].next_hop(target), expected);
            let (end, hops) = walk(&tables, me, target);
            prop_assert_eq!(end, responsible);
            prop_assert!(hops <= 2);
        }
    }
}
