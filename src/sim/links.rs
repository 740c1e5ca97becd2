//! Links between simulated nodes: opening them when a node asks
//! (Event::Connect), closing them (Event::Disconnect, leave, crash,
//! partition), and carrying transmits over them.
//!
//! A link is a pair of entries in both slots' `links`. A crashed node's
//! entries stay at its peers until they notice (after `--detect-ms`, as a
//! keepalive or retransmission timeout would tell them); messages to it
//! are dropped meanwhile.

use super::net::{Ev, SlotId};
use super::world::{Pending, Simulation};
use crate::overlay::{Command, Transmit};
use crate::wire::NodeId;

/// How long a leaving node lingers if its Leave never completes.
const LEAVE_GRACE_US: u64 = 5_000_000;

impl Simulation {
    /// Whether messages can pass between two nodes (partitions only).
    pub(super) fn reachable(&self, a: SlotId, b: SlotId) -> bool {
        !self.partitioned || self.slot(a).map(|s| s.group) == self.slot(b).map(|s| s.group)
    }

    fn linked(&self, a: SlotId, b: SlotId) -> bool {
        self.slot(a).is_some_and(|s| s.links.contains(&b))
    }

    /// The slot `at` holds a link to under the Node-ID `peer`.
    fn link_to(&self, at: SlotId, peer: NodeId) -> Option<SlotId> {
        let sl = self.slot(at)?;
        sl.links.iter().copied().find(|&l| self.id_of(l) == peer)
    }

    /// Event::Connect: the link comes up after one-way latency, or the
    /// attempt fails after the detection delay.
    pub(super) fn connect(&mut self, a: SlotId, peer: NodeId) {
        self.metrics.connects += 1;
        tracing::debug!(t = self.now, node = %self.id_of(a), %peer, "sim: connect");
        if peer == self.id_of(a) {
            return;
        }
        match self.alive.get(&peer).copied() {
            Some(b) if self.reachable(a, b) => {
                let at = self.now + self.net.delay();
                self.queue.push(at, Ev::LinkUp { a, b });
            }
            _ => {
                self.metrics.connect_failures += 1;
                let at = self.now + self.net.detect();
                self.queue.push(at, Ev::LinkDown { at: a, peer });
            }
        }
    }

    pub(super) fn link_up(&mut self, a: SlotId, b: SlotId) {
        if !self.is_alive(a) {
            return;
        }
        if !self.is_alive(b) || !self.reachable(a, b) {
            self.metrics.connect_failures += 1;
            let at = self.now + self.net.detect();
            let peer = self.id_of(b);
            self.queue.push(at, Ev::LinkDown { at: a, peer });
            return;
        }
        if self.linked(a, b) {
            // Already up (the peer connected first): only the asker hears.
            let (now, peer) = (self.instant(), self.id_of(b));
            if let Some(node) = self.slot_mut(a).and_then(|s| s.node.as_deref_mut()) {
                node.handle_link_up(now, peer);
            }
            self.drive(a, false);
            return;
        }
        self.open_link(a, b);
        self.drive(a, false);
        self.drive(b, false);
    }

    /// Records a link and tells both ends; the caller drives them.
    pub(super) fn open_link(&mut self, a: SlotId, b: SlotId) {
        if self.linked(a, b) {
            return;
        }
        self.metrics.links_opened += 1;
        let now = self.instant();
        for (x, y) in [(a, b), (b, a)] {
            let peer = self.id_of(y);
            if let Some(sl) = self.slot_mut(x) {
                sl.links.push(y);
                if let Some(node) = sl.node.as_deref_mut() {
                    node.handle_link_up(now, peer);
                }
            }
        }
    }

    /// Event::Disconnect: closed at once on our side; the peer sees the
    /// close after one-way latency.
    pub(super) fn disconnect(&mut self, a: SlotId, peer: NodeId) {
        let Some(b) = self.link_to(a, peer) else { return };
        self.unlink(a, b);
        if self.is_alive(b) {
            let at = self.now + self.net.delay();
            let me = self.id_of(a);
            self.queue.push(at, Ev::LinkDown { at: b, peer: me });
        }
    }

    /// `at` is told its link to `peer` is down, unless a working link to
    /// it exists (again) by now: a re-opened link, or a partition that
    /// healed within the detection delay.
    pub(super) fn link_down(&mut self, at: SlotId, peer: NodeId) {
        if !self.is_alive(at) {
            return;
        }
        if let Some(b) = self.link_to(at, peer) {
            if self.is_alive(b) && self.reachable(at, b) {
                return;
            }
            self.unlink(at, b);
        }
        let now = self.instant();
        tracing::debug!(t = self.now, node = %self.id_of(at), %peer, "sim: link down");
        if let Some(node) = self.slot_mut(at).and_then(|s| s.node.as_deref_mut()) {
            node.handle_link_down(now, peer);
        }
        self.drive(at, false);
    }

    fn unlink(&mut self, a: SlotId, b: SlotId) {
        if let Some(sl) = self.slot_mut(a) {
            sl.links.retain(|&l| l != b);
        }
        if let Some(sl) = self.slot_mut(b) {
            sl.links.retain(|&l| l != a);
        }
    }

    /// Sends one transmit over the sender's link, subject to loss.
    pub(super) fn send(&mut self, from: SlotId, t: Transmit) {
        self.metrics.messages += 1;
        self.metrics.bytes += t.bytes.len() as u64;
        let Some(to) = self.alive.get(&t.to).copied() else {
            self.metrics.dropped_dead += 1;
            return;
        };
        if !self.linked(from, to) {
            self.metrics.dropped_no_link += 1;
            return;
        }
        if !self.reachable(from, to) {
            self.metrics.dropped_partition += 1;
            return;
        }
        if self.net.lost() {
            self.metrics.dropped_loss += 1;
            return;
        }
        let at = self.now + self.net.delay();
        self.queue.push(at, Ev::Deliver { to, from, bytes: t.bytes });
    }

    /// Asks a node to leave (§10.9); it is removed when the Leave
    /// completes or after a grace period.
    pub(super) fn start_leave(&mut self, s: SlotId) {
        let Some(sl) = self.slot_mut(s) else { return };
        if sl.leaving || !sl.alive() {
            return;
        }
        sl.leaving = true;
        let id = sl.id;
        self.leaving += 1;
        self.ring.remove(&id);
        if self.issue(s, Command::Leave, Pending::Leave).is_err() {
            self.metrics.command_errors += 1;
        }
        self.queue.push(self.now + LEAVE_GRACE_US, Ev::Retire { slot: s });
    }

    /// Removes a node: `graceful` (after Leave) closes its links so peers
    /// see it after one-way latency; a crash is noticed after `--detect-ms`.
    pub(super) fn remove_node(&mut self, s: SlotId, graceful: bool) {
        if !self.is_alive(s) {
            return;
        }
        self.note_live_change();
        let Some(sl) = self.slot_mut(s) else { return };
        if let Some(node) = sl.node.take() {
            self.metrics.departed_totals.add(&node.counters());
        }
        let Some(sl) = self.slot_mut(s) else { return };
        sl.joined = false;
        let was_leaving = sl.leaving;
        let id = sl.id;
        let links = std::mem::take(&mut sl.links);
        if was_leaving {
            self.leaving = self.leaving.saturating_sub(1);
        }
        self.alive.remove(&id);
        self.ring.remove(&id);
        for p in links {
            let delay = if graceful { self.net.delay() } else { self.net.detect() };
            self.queue.push(self.now + delay, Ev::LinkDown { at: p, peer: id });
        }
        let abandoned: Vec<(SlotId, u64)> = self.pending.range((s, 0)..=(s, u64::MAX)).map(|(k, _)| *k).collect();
        for k in abandoned {
            if let Some(p) = self.pending.remove(&k) {
                self.abandoned(p);
            }
        }
    }

    /// Puts `group` on one side of a partition and everyone else on the
    /// other. Messages across are dropped at once; a link across goes down
    /// at both ends after `--detect-ms` unless the partition healed first.
    pub(super) fn partition_nodes(&mut self, group: &[NodeId]) {
        for sl in self.slots.iter_mut() {
            sl.group = 0;
        }
        for id in group {
            if let Some(&s) = self.alive.get(id)
                && let Some(sl) = self.slot_mut(s)
            {
                sl.group = 1;
            }
        }
        self.partitioned = true;
        let at = self.now + self.net.detect();
        let live: Vec<SlotId> = self.alive.values().copied().collect();
        for a in live {
            let Some(sl) = self.slot(a) else { continue };
            let across: Vec<NodeId> = sl
                .links
                .iter()
                .filter(|&&b| self.is_alive(b) && !self.reachable(a, b))
                .map(|&b| self.id_of(b))
                .collect();
            for peer in across {
                self.queue.push(at, Ev::LinkDown { at: a, peer });
            }
        }
    }
}
