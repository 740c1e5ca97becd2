//! Which link carries each peer, the simultaneous-open tie-break, and
//! dials: the owner opens links; the peer decides which it keeps.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use tracing::debug;

use super::{DialId, LinkId, Peer, PeerEvent, PeerState, pick_candidate};
use crate::wire::NodeId;
use crate::wire::attach::IceCandidate;

/// One kept link.
#[derive(Clone, Copy, Debug)]
struct Held {
    link: LinkId,
    /// Who opened it: decides which link survives a simultaneous open.
    dialer: NodeId,
}

/// Why a dial was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Purpose {
    /// A bootstrap round: the first success is joined through.
    Bootstrap { round: u64, addr: SocketAddr },
    /// The overlay asked for a link to this peer, at this address.
    Connect(NodeId, SocketAddr),
}

/// The link table.
#[derive(Debug, Default)]
pub(super) struct Links {
    by_peer: BTreeMap<NodeId, Held>,
    by_link: BTreeMap<LinkId, NodeId>,
    dials: BTreeMap<DialId, Purpose>,
    next_dial: u64,
}

impl Links {
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, LinkId)> + '_ {
        self.by_peer.iter().map(|(n, h)| (*n, h.link))
    }

    pub fn link_of(&self, peer: NodeId) -> Option<LinkId> {
        self.by_peer.get(&peer).map(|h| h.link)
    }

    pub fn peer_of(&self, link: LinkId) -> Option<NodeId> {
        self.by_link.get(&link).copied()
    }

    pub fn is_empty(&self) -> bool {
        self.by_peer.is_empty()
    }

    pub fn remove_peer(&mut self, peer: NodeId) -> Option<LinkId> {
        let h = self.by_peer.remove(&peer)?;
        self.by_link.remove(&h.link);
        Some(h.link)
    }

    fn dialing(&self, peer: NodeId) -> bool {
        self.dials.values().any(|p| matches!(p, Purpose::Connect(n, _) if *n == peer))
    }

    pub fn new_dial(&mut self, purpose: Purpose) -> DialId {
        self.next_dial += 1;
        let id = DialId(self.next_dial);
        self.dials.insert(id, purpose);
        id
    }
}

impl Peer {
    /// The owner opened (or accepted) `link`, whose certificate proved it
    /// is `peer`; `dial` names our dial when we opened it. Returns whether
    /// the link is kept: when not, the owner closes it.
    pub fn handle_link_opened(&mut self, now: Instant, link: LinkId, peer: NodeId, dial: Option<DialId>) -> bool {
        let purpose = dial.and_then(|d| self.links.dials.remove(&d));
        if let Some(Purpose::Connect(want, _)) = purpose
            && want != peer
        {
            tracing::warn!(expected = %want, got = %peer, "link bound to another Node-ID; closed");
            self.overlay.handle_link_down(now, want);
            self.process(now);
            return false;
        }
        let keep = self.keep_link(now, link, peer, dial.is_some());
        if keep && let Some(Purpose::Connect(_, addr) | Purpose::Bootstrap { addr, .. }) = purpose {
            self.boot.remember(addr);
        }
        if let Some(Purpose::Bootstrap { round, addr }) = purpose {
            self.bootstrap_dial_done(now, round, keep.then_some((peer, addr)));
        }
        self.process(now);
        keep
    }

    /// A dial we asked for failed.
    pub fn handle_dial_failed(&mut self, now: Instant, dial: DialId, why: &str) {
        match self.links.dials.remove(&dial) {
            Some(Purpose::Connect(peer, _)) => {
                debug!(%peer, reason = why, "connect failed");
                if self.links.link_of(peer).is_none() {
                    self.overlay.handle_link_down(now, peer);
                }
            }
            Some(Purpose::Bootstrap { round, addr }) => {
                tracing::info!(%addr, reason = why, "bootstrap peer unreachable");
                self.bootstrap_dial_done(now, round, None);
            }
            None => {}
        }
        self.process(now);
    }

    /// A link closed (by the remote end, an error, or at our request).
    pub fn handle_link_closed(&mut self, now: Instant, link: LinkId) {
        let Some(peer) = self.links.by_link.remove(&link) else { return };
        if self.links.by_peer.get(&peer).is_some_and(|h| h.link == link) {
            self.links.by_peer.remove(&peer);
            tracing::info!(%peer, "link lost");
            if self.overlay.successors().contains(&peer) || self.overlay.predecessors().contains(&peer) {
                self.schedule_restore(now);
            }
            self.overlay.handle_link_down(now, peer);
            self.process(now);
        }
    }

    fn keep_link(&mut self, now: Instant, link: LinkId, peer: NodeId, dialed: bool) -> bool {
        if peer == self.id() {
            debug!("link to ourselves; closed");
            return false;
        }
        let dialer = if dialed { self.id() } else { peer };
        if let Some(existing) = self.links.by_peer.get(&peer).copied() {
            if existing.link == link {
                self.overlay.handle_link_up(now, peer);
                return true;
            }
            // Simultaneous open: both ends keep the link the smaller
            // Node-ID dialed; a re-dial by the same side replaces.
            let keep_new = existing.dialer == dialer || dialer < existing.dialer;
            if !keep_new {
                debug!(%peer, "duplicate link; keeping the existing one");
                return false;
            }
            self.links.by_link.remove(&existing.link);
            self.events.push_back(PeerEvent::CloseLink { link: existing.link });
        }
        let had = self.links.by_peer.insert(peer, Held { link, dialer }).is_some();
        self.links.by_link.insert(link, peer);
        debug!(%peer, ?link, dialed, "link up");
        if !had {
            self.overlay.handle_link_up(now, peer);
        }
        true
    }

    /// Event::Connect: dial the peer unless a link or a dial exists.
    pub(super) fn connect(&mut self, now: Instant, peer: NodeId, candidates: &[IceCandidate]) {
        if self.links.link_of(peer).is_some() {
            self.overlay.handle_link_up(now, peer);
            return;
        }
        if self.links.dialing(peer) {
            return;
        }
        match pick_candidate(candidates, self.cfg.link_type) {
            Some(addr) => {
                let dial = self.links.new_dial(Purpose::Connect(peer, addr));
                self.events.push_back(PeerEvent::Dial { dial, addr, expect: Some(peer) });
            }
            None => {
                debug!(%peer, "no candidate with our link type");
                self.overlay.handle_link_down(now, peer);
            }
        }
    }

    pub(super) fn joining_allowed(&self) -> bool {
        self.state == PeerState::Bootstrapping
    }
}
