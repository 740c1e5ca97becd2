//! Links between simulated peers: dials the peers ask for
//! ([`PeerEvent::Dial`](crate::peer::PeerEvent)), closes
//! ([`PeerEvent::CloseLink`](crate::peer::PeerEvent), leave, crash,
//! partition), and transmits over them.
//!
//! A simulated peer's address is derived from its slot (10.x.y.z:6084), so
//! the candidates peers exchange in Attach resolve to slots. A link is a
//! pair of entries in both slots' `links`; each end names it by the other
//! end's slot ([`LinkId`] = slot number). A crashed peer's entries stay at
//! its peers until they notice (after `--detect-ms`, as a keepalive or
//! retransmission timeout would tell them); messages to it are dropped
//! meanwhile.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use super::net::{Ev, SlotId};
use super::world::Simulation;
use crate::peer::{DialId, LinkId, Transmit};

/// How long a leaving node lingers if its Leave never completes.
const LEAVE_GRACE_US: u64 = 5_000_000;
/// The port every simulated peer listens on.
const SIM_PORT: u16 = 6084;

/// The address of the peer in slot `s`.
pub(super) fn addr_of(s: SlotId) -> SocketAddr {
    let host = 0x0A00_0000u32 | (s.wrapping_add(1) & 0x00FF_FFFF);
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(host), SIM_PORT))
}

/// The slot an address names, if it is a simulated peer's.
pub(super) fn slot_of(addr: SocketAddr) -> Option<SlotId> {
    let SocketAddr::V4(a) = addr else { return None };
    let host = u32::from(*a.ip());
    if a.port() != SIM_PORT || host >> 24 != 0x0A {
        return None;
    }
    (host & 0x00FF_FFFF).checked_sub(1)
}

impl Simulation {
    /// Whether messages can pass between two nodes (partitions only).
    pub(super) fn reachable(&self, a: SlotId, b: SlotId) -> bool {
        !self.partitioned || self.slot(a).map(|s| s.group) == self.slot(b).map(|s| s.group)
    }

    fn linked(&self, a: SlotId, b: SlotId) -> bool {
        self.slot(a).is_some_and(|s| s.links.contains(&b))
    }

    /// A peer asked to dial `addr`: the link comes up after one-way
    /// latency, or the attempt fails after the detection delay.
    pub(super) fn dial(&mut self, a: SlotId, dial: DialId, addr: SocketAddr) {
        self.metrics.connects += 1;
        tracing::debug!(t = self.now, node = %self.id_of(a), %addr, "sim: dial");
        match slot_of(addr) {
            Some(b) if b != a && self.is_alive(b) && self.reachable(a, b) => {
                let at = self.now + self.net.delay();
                self.queue.push(at, Ev::LinkUp { a, b, dial });
            }
            _ => {
                self.metrics.connect_failures += 1;
                let at = self.now + self.net.detect();
                self.queue.push(at, Ev::DialFailed { a, dial });
            }
        }
    }

    pub(super) fn dial_failed(&mut self, a: SlotId, dial: DialId) {
        let now = self.instant();
        if let Some(peer) = self.slot_mut(a).and_then(|s| s.node.as_deref_mut()) {
            peer.handle_dial_failed(now, dial, "unreachable");
        }
        self.drive(a, false);
    }

    pub(super) fn link_up(&mut self, a: SlotId, b: SlotId, dial: DialId) {
        if !self.is_alive(a) {
            return;
        }
        if !self.is_alive(b) || !self.reachable(a, b) {
            self.metrics.connect_failures += 1;
            let at = self.now + self.net.detect();
            self.queue.push(at, Ev::DialFailed { a, dial });
            return;
        }
        let now = self.instant();
        let (id_a, id_b) = (self.id_of(a), self.id_of(b));
        if self.linked(a, b) {
            // Already up (the peer connected first): only the dialer hears.
            if let Some(peer) = self.slot_mut(a).and_then(|s| s.node.as_deref_mut()) {
                peer.handle_link_opened(now, LinkId(u64::from(b)), id_b, Some(dial));
            }
            self.drive(a, false);
            return;
        }
        self.metrics.links_opened += 1;
        for (x, y) in [(a, b), (b, a)] {
            if let Some(sl) = self.slot_mut(x) {
                sl.links.push(y);
            }
        }
        let kept_a = self
            .slot_mut(a)
            .and_then(|s| s.node.as_deref_mut())
            .is_some_and(|p| p.handle_link_opened(now, LinkId(u64::from(b)), id_b, Some(dial)));
        let kept_b = self
            .slot_mut(b)
            .and_then(|s| s.node.as_deref_mut())
            .is_some_and(|p| p.handle_link_opened(now, LinkId(u64::from(a)), id_a, None));
        if !kept_a || !kept_b {
            // One end refused it (a tie-break or an identity mismatch):
            // it closes, and the other end hears after one-way latency.
            self.unlink(a, b);
            let at = self.now + self.net.delay();
            if kept_a {
                self.queue.push(at, Ev::LinkDown { at: a, peer: b });
            }
            if kept_b {
                self.queue.push(at, Ev::LinkDown { at: b, peer: a });
            }
        }
        self.drive(a, false);
        self.drive(b, false);
    }

    /// PeerEvent::CloseLink: closed at once on our side; the peer sees the
    /// close after one-way latency.
    pub(super) fn disconnect(&mut self, a: SlotId, b: SlotId) {
        if !self.linked(a, b) {
            return;
        }
        self.unlink(a, b);
        if self.is_alive(b) {
            let at = self.now + self.net.delay();
            self.queue.push(at, Ev::LinkDown { at: b, peer: a });
        }
    }

    /// `at` is told its link to `peer` is down, unless a working link to
    /// it exists (again) by now: a re-opened link, or a partition that
    /// healed within the detection delay.
    pub(super) fn link_down(&mut self, at: SlotId, peer: SlotId) {
        if !self.is_alive(at) {
            return;
        }
        if self.linked(at, peer) {
            if self.is_alive(peer) && self.reachable(at, peer) {
                return;
            }
            self.unlink(at, peer);
        }
        let now = self.instant();
        tracing::debug!(t = self.now, node = %self.id_of(at), peer = %self.id_of(peer), "sim: link down");
        if let Some(p) = self.slot_mut(at).and_then(|s| s.node.as_deref_mut()) {
            p.handle_link_closed(now, LinkId(u64::from(peer)));
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
        let Ok(to) = SlotId::try_from(t.link.0) else { return };
        if !self.is_alive(to) {
            self.metrics.dropped_dead += 1;
            return;
        }
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
        let now = self.instant();
        let Some(sl) = self.slot_mut(s) else { return };
        if sl.leaving || !sl.alive() {
            return;
        }
        sl.leaving = true;
        let id = sl.id;
        let leaving = sl.node.as_deref_mut().is_some_and(|p| p.leave(now));
        self.leaving += 1;
        self.ring.remove(&id);
        if leaving {
            self.drive(s, false);
            self.queue.push(self.now + LEAVE_GRACE_US, Ev::Retire { slot: s });
        } else {
            self.queue.push(self.now, Ev::Retire { slot: s });
        }
    }

    /// Removes a node: `graceful` (after Leave) closes its links so peers
    /// see it after one-way latency; a crash is noticed after `--detect-ms`.
    pub(super) fn remove_node(&mut self, s: SlotId, graceful: bool) {
        if !self.is_alive(s) {
            return;
        }
        self.note_live_change();
        let Some(sl) = self.slot_mut(s) else { return };
        if let Some(peer) = sl.node.take() {
            self.metrics.departed_totals.add(&peer.overlay().counters());
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
            self.queue.push(self.now + delay, Ev::LinkDown { at: p, peer: s });
        }
        self.phones_lost_home(s);
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
    pub(super) fn partition_nodes(&mut self, group: &[crate::wire::NodeId]) {
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
            let across: Vec<SlotId> =
                sl.links.iter().copied().filter(|&b| self.is_alive(b) && !self.reachable(a, b)).collect();
            for peer in across {
                self.queue.push(at, Ev::LinkDown { at: a, peer });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{addr_of, slot_of};

    #[test]
    fn addresses_name_their_slots() {
        for s in [0u32, 1, 255, 256, 65_535, 1_000_000] {
            assert_eq!(slot_of(addr_of(s)), Some(s));
        }
        assert_eq!(slot_of("127.0.0.1:6084".parse().unwrap()), None);
        assert_eq!(slot_of("10.0.0.1:5060".parse().unwrap()), None);
    }
}
