//! Virtual time and the simulated network: the event queue ordered by
//! (time, sequence number), and the per-message latency, jitter and loss.
//!
//! Times are microseconds since the simulation's start. Nothing here reads
//! a clock; randomness comes from the network's own seeded stream, so
//! adding a workload draw elsewhere does not change which messages drop.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::peer::DialId;
use crate::wire::NodeId;

/// Index of a node in the simulation's slot table. Slots are never reused,
/// so a stale event naming a dead node's slot is recognised as such.
pub type SlotId = u32;

/// Microseconds of virtual time.
pub type Micros = u64;

pub const US_PER_S: Micros = 1_000_000;

/// Something that happens at a point of virtual time.
#[derive(Debug)]
pub enum Ev {
    /// Bytes `from` sent arrive at `to`.
    Deliver { to: SlotId, from: SlotId, bytes: Vec<u8> },
    /// The link `a` dialed (`dial`) comes up at both ends.
    LinkUp { a: SlotId, b: SlotId, dial: DialId },
    /// `a`'s dial found nobody (dead, unreachable, no such address).
    DialFailed { a: SlotId, dial: DialId },
    /// `at` learns that its link to `peer` is gone.
    LinkDown { at: SlotId, peer: SlotId },
    /// A node's own timer (lazily cancelled: see `Slot::timer_at`).
    Timer { slot: SlotId },
    /// A peer's SIP edge sends to a phone.
    ToPhone { phone: u32, from: SlotId, bytes: Vec<u8> },
    /// A phone sends to its serving peer's SIP edge.
    ToPeerSip { slot: SlotId, phone: u32, bytes: Vec<u8> },
    /// Node-to-node SIP between two peers.
    SipNode { to: SlotId, from: SlotId, bytes: Vec<u8> },
    /// The node-to-node SIP connection `a` dialed comes up.
    SipConnect { a: SlotId, b: SlotId },
    /// `a`'s node-to-node SIP dial to `node` failed.
    SipDialFailed { a: SlotId, node: NodeId },
    /// A phone's own timer (lazily cancelled like a peer's).
    PhoneTimer { phone: u32 },
    /// A leaving node is gone; its links close gracefully.
    Retire { slot: SlotId },
    /// A scenario step (churn, workload, checks).
    Step(Step),
}

/// Scenario steps; see `scenario.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Add one node (initial build or churn replacement).
    Spawn,
    /// Give a node without a ring a bootstrap link and Join again.
    Rebootstrap { slot: SlotId },
    /// A phone (re)registers at a random ring member.
    Rehome { phone: u32 },
    /// Place one call, and schedule the next.
    Call,
    /// Send one MESSAGE, and schedule the next.
    Message,
    /// A caller hangs up.
    Hangup { phone: u32, call: u64 },
    /// A node's session ends (churn).
    Depart { slot: SlotId },
    /// The mass failure.
    Kill,
    /// Issue store number `n`.
    Store { n: usize },
    /// Issue one lookup or fetch, and schedule the next.
    Lookup,
    /// Check the reference model during repair.
    RepairPoll,
    /// Note which live nodes hold each record.
    Survey,
}

/// The event queue: a min-heap on (time, sequence number), so events at
/// the same instant run in the order they were scheduled.
#[derive(Debug, Default)]
pub struct Queue {
    heap: BinaryHeap<Entry>,
    seq: u64,
}

impl Queue {
    pub fn push(&mut self, at: Micros, ev: Ev) {
        self.seq += 1;
        self.heap.push(Entry { at, seq: self.seq, ev });
    }

    /// The next event if it is due no later than `until`.
    pub fn pop_until(&mut self, until: Micros) -> Option<(Micros, Ev)> {
        if self.heap.peek()?.at > until {
            return None;
        }
        self.heap.pop().map(|e| (e.at, e.ev))
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[derive(Debug)]
struct Entry {
    at: Micros,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    // Reversed: BinaryHeap is a max-heap and we want the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Latency, jitter and loss of the simulated network.
#[derive(Debug)]
pub struct Network {
    latency_us: Micros,
    loss: f64,
    detect_us: Micros,
    rng: ChaCha8Rng,
}

/// One-way delays vary uniformly within ±20 % of the configured latency.
const JITTER_PERMILLE: u64 = 200;

impl Network {
    pub fn new(latency_ms: f64, loss: f64, detect_ms: u64, seed: u64) -> Self {
        Network {
            latency_us: (latency_ms.max(0.0) * 1000.0) as Micros,
            loss: loss.clamp(0.0, 1.0),
            detect_us: detect_ms.saturating_mul(1000),
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// One message's one-way delay.
    pub fn delay(&mut self) -> Micros {
        if self.latency_us == 0 {
            return 0;
        }
        let permille = 1000 - JITTER_PERMILLE + self.rng.random_range(0..=2 * JITTER_PERMILLE);
        self.latency_us * permille / 1000
    }

    /// Whether the next message is lost.
    pub fn lost(&mut self) -> bool {
        self.loss > 0.0 && self.rng.random_bool(self.loss)
    }

    /// How long a node takes to notice a dead peer (keepalive / RTO).
    pub fn detect(&self) -> Micros {
        self.detect_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_orders_by_time_then_insertion() {
        let mut q = Queue::default();
        q.push(5, Ev::Step(Step::Kill));
        q.push(1, Ev::Step(Step::Spawn));
        q.push(5, Ev::Step(Step::Lookup));
        q.push(1, Ev::Step(Step::RepairPoll));
        let order: Vec<_> = std::iter::from_fn(|| q.pop_until(u64::MAX)).collect();
        let steps: Vec<_> = order
            .iter()
            .map(|(t, e)| match e {
                Ev::Step(s) => (*t, *s),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(steps, vec![(1, Step::Spawn), (1, Step::RepairPoll), (5, Step::Kill), (5, Step::Lookup)]);
    }

    #[test]
    fn pop_until_stops_at_the_horizon() {
        let mut q = Queue::default();
        q.push(10, Ev::Step(Step::Kill));
        assert!(q.pop_until(9).is_none());
        assert_eq!(q.len(), 1);
        assert!(q.pop_until(10).is_some());
        assert!(q.is_empty());
    }

    #[test]
    fn delays_stay_within_jitter_and_are_seeded() {
        let mut a = Network::new(50.0, 0.0, 2000, 7);
        let mut b = Network::new(50.0, 0.0, 2000, 7);
        for _ in 0..1000 {
            let d = a.delay();
            assert!((40_000..=60_000).contains(&d));
            assert_eq!(d, b.delay());
        }
        assert!(!a.lost());
        let mut lossy = Network::new(1.0, 0.5, 0, 1);
        let lost = (0..10_000).filter(|_| lossy.lost()).count();
        assert!((4_500..5_500).contains(&lost), "{lost}");
    }
}
