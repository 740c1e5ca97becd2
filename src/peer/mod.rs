//! One sans-IO peer: the overlay machine, its store, the RFC 7904 usage and
//! the SIP edge composed into the thing a node is, plus the policy that
//! used to live in the runtime and (a second copy) in the simulator:
//! bootstrap, join, re-join, and which link survives a simultaneous open.
//!
//! The daemon (`crate::node`) drives one `Peer` with sockets, files and the
//! clock; the simulator (`crate::sim`) drives thousands in virtual time.
//! Both name links by a [`LinkId`] of their own and carry out what
//! [`Peer::poll_transmit`] and [`Peer::poll_event`] ask.

mod bootstrap;
mod links;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::overlay::{ApiError, Command, Event, Outcome, OverlayNode, RequestId};
use crate::sip::edge::SipEdge;
use crate::sip::transaction::TransportAddr;
use crate::time::WallTime;
use crate::usage::{SipUsage, UsageEvent, node_ref};
use crate::wire::NodeId;
use crate::wire::attach::{IceCandidate, OverlayLinkType};
use crate::wire::types::IpAddressPort;

pub use bootstrap::BOOTSTRAP_MIN;

/// The owner's name for one link (a socket session, a simulated pipe).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LinkId(pub u64);

/// Names a dial the peer asked for; it comes back with the link or failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DialId(pub u64);

/// How a peer finds and joins the ring.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// The overlay link type this peer dials (candidates of other types are ignored).
    pub link_type: OverlayLinkType,
    /// Where peers reach us; also what makes us a seed when the bootstrap
    /// list names it (§11.4: a bootstrap node starts the ring when it
    /// reaches nobody).
    pub advertise: Option<SocketAddr>,
    /// The overlay configuration's bootstrap peers.
    pub bootstrap: Vec<SocketAddr>,
    /// A non-routing client (§4.2): never starts a ring.
    pub client: bool,
}

/// Where the peer is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Not in the ring; a bootstrap round is running or waiting.
    Bootstrapping,
    Joining,
    Joined,
    Leaving,
}

/// Bytes for one link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub link: LinkId,
    pub peer: NodeId,
    pub bytes: Vec<u8>,
}

/// What the owner must do or know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    /// Open an overlay link to `addr`; `expect` is the Node-ID the link's
    /// certificate must carry (unknown for bootstrap peers). Report it with
    /// [`Peer::handle_link_opened`] or [`Peer::handle_dial_failed`].
    Dial {
        dial: DialId,
        addr: SocketAddr,
        expect: Option<NodeId>,
    },
    /// Close this link (the overlay no longer needs it, or a duplicate lost).
    CloseLink {
        link: LinkId,
    },
    Joined,
    /// Lost every successor; re-joining.
    Rejoining,
    /// A Join failed; the peer bootstraps again after a back-off.
    JoinFailed {
        reason: String,
    },
    /// A graceful leave finished.
    Left,
    /// A command the owner gave through [`Peer::command`] completed.
    Completed {
        id: RequestId,
        outcome: Outcome,
    },
    /// SIP traffic to carry (phones, other nodes) or a node to dial for SIP.
    Sip(UsageEvent),
}

/// One overlay peer, sans-IO.
pub struct Peer {
    cfg: PeerConfig,
    overlay: OverlayNode,
    sip: Option<(SipEdge, SipUsage)>,
    state: PeerState,
    links: links::Links,
    boot: bootstrap::Bootstrap,
    /// Requests the peer made for itself.
    own: BTreeMap<RequestId, OwnOp>,
    events: VecDeque<PeerEvent>,
    /// Wall clock at `wall_anchor.0`: wall time is derived from `now`.
    wall_anchor: (Instant, WallTime),
    /// When the SIP registrations this peer serves are stored again.
    restore_at: Option<Instant>,
    last_restore: Option<Instant>,
    /// Transmits to a peer with no link (dropped).
    pub unlinked_drops: u64,
}

/// Registrations are restored at most this often.
const RESTORE_EVERY: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OwnOp {
    Join,
    Leave,
}

impl Peer {
    /// A peer that starts bootstrapping at `now`; `wall` is the wall
    /// clock at `now`. `sip`: the SIP edge this peer serves, if any.
    pub fn new(cfg: PeerConfig, overlay: OverlayNode, sip: Option<SipEdge>, now: Instant, wall: WallTime) -> Peer {
        let mut overlay = overlay;
        if let Some(a) = cfg.advertise {
            overlay.set_candidates(vec![host_candidate(a, cfg.link_type)]);
        }
        Peer {
            boot: bootstrap::Bootstrap::new(now),
            cfg,
            overlay,
            sip: sip.map(|e| (e, SipUsage::new())),
            state: PeerState::Bootstrapping,
            links: links::Links::default(),
            own: BTreeMap::new(),
            events: VecDeque::new(),
            wall_anchor: (now, wall),
            restore_at: None,
            last_restore: None,
            unlinked_drops: 0,
        }
    }

    pub fn id(&self) -> NodeId {
        self.overlay.node_id()
    }

    pub fn state(&self) -> PeerState {
        self.state
    }

    pub fn config(&self) -> &PeerConfig {
        &self.cfg
    }

    /// The overlay machine, for status and persistence.
    pub fn overlay(&self) -> &OverlayNode {
        &self.overlay
    }

    pub fn overlay_mut(&mut self) -> &mut OverlayNode {
        &mut self.overlay
    }

    pub fn sip_edge(&self) -> Option<&SipEdge> {
        self.sip.as_ref().map(|(e, _)| e)
    }

    pub fn sip_edge_mut(&mut self) -> Option<&mut SipEdge> {
        self.sip.as_mut().map(|(e, _)| e)
    }

    /// The RFC 7904 glue (its counters: what the SIP side asked the overlay).
    pub fn sip_usage(&self) -> Option<&SipUsage> {
        self.sip.as_ref().map(|(_, u)| u)
    }

    /// The peers we hold a link to, with the link.
    pub fn links(&self) -> impl Iterator<Item = (NodeId, LinkId)> + '_ {
        self.links.iter()
    }

    pub fn link_of(&self, peer: NodeId) -> Option<LinkId> {
        self.links.link_of(peer)
    }

    /// Addresses of linked peers, as the host cache to persist (§11.4 says
    /// a node should remember peers it has seen).
    pub fn linked_addresses(&self) -> Vec<(NodeId, SocketAddr)> {
        self.overlay
            .known_peer_candidates()
            .into_iter()
            .filter(|(n, _)| self.links.link_of(*n).is_some())
            .filter_map(|(n, c)| Some((n, pick_candidate(&c, self.cfg.link_type)?)))
            .collect()
    }

    /// Peers remembered from an earlier run, tried before the configured
    /// bootstrap list (newest first).
    pub fn set_host_cache(&mut self, peers: Vec<(NodeId, SocketAddr)>) {
        let me = self.id();
        self.boot.host_cache = peers.into_iter().filter(|(n, _)| *n != me).map(|(_, a)| a).collect();
    }

    /// Replaces the bootstrap list (a reloaded configuration).
    pub fn set_bootstrap(&mut self, list: Vec<SocketAddr>) {
        self.cfg.bootstrap = list;
    }

    /// Wall time at `now`.
    pub fn wall(&self, now: Instant) -> WallTime {
        let (at, wall) = self.wall_anchor;
        wall.saturating_add(now.saturating_duration_since(at))
    }

    /// Re-anchors wall time (the runtime calls this every second so a
    /// stepped system clock is followed).
    pub fn set_wall_clock(&mut self, now: Instant, wall: WallTime) {
        self.wall_anchor = (now, wall);
        self.overlay.set_wall_clock(now, wall);
    }

    /// An owner's request of the overlay (operator commands); its outcome
    /// comes back as [`PeerEvent::Completed`].
    pub fn command(&mut self, now: Instant, cmd: Command) -> Result<RequestId, ApiError> {
        let r = self.overlay.command(now, cmd);
        self.process(now);
        r
    }

    /// Starts a graceful leave (§10.9). Returns false when there is nothing
    /// to leave (not joined): the owner may stop at once.
    pub fn leave(&mut self, now: Instant) -> bool {
        let joined = self.state == PeerState::Joined;
        self.state = PeerState::Leaving;
        self.boot.next = None;
        if !joined {
            return false;
        }
        match self.overlay.command(now, Command::Leave) {
            Ok(id) => {
                self.own.insert(id, OwnOp::Leave);
                self.process(now);
                true
            }
            Err(e) => {
                warn!(error = %e, "cannot leave gracefully");
                false
            }
        }
    }

    /// Whether a started leave has finished (or there was none to wait for).
    pub fn leave_done(&self) -> bool {
        self.state == PeerState::Leaving && !self.own.values().any(|o| *o == OwnOp::Leave)
    }

    /// Bytes that arrived on `link`.
    pub fn handle_input(&mut self, now: Instant, link: LinkId, bytes: &[u8]) {
        if let Some(peer) = self.links.peer_of(link) {
            self.overlay.handle_input(now, peer, bytes);
            self.process(now);
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.overlay.poll_timeout().is_some_and(|(t, _)| t <= now) {
            self.overlay.handle_timeout(now);
        }
        let wall = self.wall(now);
        if let Some((edge, _)) = self.sip.as_mut()
            && edge.poll_timeout().is_some_and(|t| t <= now)
        {
            edge.handle_timeout(now, wall);
        }
        if self.boot.next.is_some_and(|t| t <= now) {
            self.boot.next = None;
            if self.state == PeerState::Bootstrapping {
                self.start_bootstrap(now);
            }
        }
        if self.restore_at.is_some_and(|t| t <= now) {
            self.restore_at = None;
            self.last_restore = Some(now);
            if let Some((edge, _)) = self.sip.as_mut() {
                let n = edge.restore_registrations(now);
                if n > 0 {
                    info!(registrations = n, "neighbors lost: storing served registrations again");
                }
            }
        }
        self.process(now);
    }

    /// A neighbor was lost: if it was a mass failure, some records may
    /// have lost every copy (RFC 6940 §10.7 repairs only from surviving
    /// replicas), so the registrations served here are stored again, after
    /// a delay that spreads peers out (derived from the Node-ID, as the
    /// peer has no RNG) and at most every [`RESTORE_EVERY`].
    pub(super) fn schedule_restore(&mut self, now: Instant) {
        if self.sip.is_none() || self.restore_at.is_some() {
            return;
        }
        let spread = Duration::from_millis(1000 + u64::from(self.id().0[15]) * 8);
        let earliest = self.last_restore.map_or(now, |t| t + RESTORE_EVERY);
        self.restore_at = Some((now + spread).max(earliest));
    }

    /// The earliest time [`Peer::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let overlay = self.overlay.poll_timeout().map(|(t, _)| t);
        let sip = self.sip.as_ref().and_then(|(e, _)| e.poll_timeout());
        [overlay, sip, self.boot.next, self.restore_at].into_iter().flatten().min()
    }

    /// The next overlay transmit, addressed to its link. Transmits to a
    /// peer with no link are dropped (the machine's retransmission or link
    /// loss handling deals with them).
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        while let Some(t) = self.overlay.poll_transmit() {
            match self.links.link_of(t.to) {
                Some(link) => return Some(Transmit { link, peer: t.to, bytes: t.bytes }),
                None => {
                    self.unlinked_drops += 1;
                    tracing::debug!(peer = %t.to, "no link for a transmit");
                }
            }
        }
        None
    }

    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        self.events.pop_front()
    }

    // ---- SIP inputs -------------------------------------------------

    /// A SIP message from a phone.
    pub fn handle_sip_local(&mut self, now: Instant, bytes: &[u8], from: TransportAddr) {
        let wall = self.wall(now);
        if let Some((edge, _)) = self.sip.as_mut() {
            edge.handle_local(now, wall, bytes, from);
            self.process(now);
        }
    }

    /// A SIP message from another node over its node-to-node connection.
    pub fn handle_sip_node(&mut self, now: Instant, from: NodeId, bytes: &[u8]) {
        let wall = self.wall(now);
        if let Some((edge, _)) = self.sip.as_mut() {
            edge.handle_node(now, wall, node_ref(from), bytes);
            self.process(now);
        }
    }

    /// A phone's stream connection (flow) closed.
    pub fn handle_sip_flow_closed(&mut self, now: Instant, flow: u64) {
        let wall = self.wall(now);
        if let Some((edge, _)) = self.sip.as_mut() {
            edge.handle_flow_closed(now, wall, flow);
            self.process(now);
        }
    }

    /// A message for a phone could not be sent.
    pub fn handle_sip_local_unreachable(&mut self, now: Instant, to: TransportAddr) {
        let wall = self.wall(now);
        if let Some((edge, _)) = self.sip.as_mut() {
            edge.handle_local_unreachable(now, wall, to);
            self.process(now);
        }
    }

    /// The SIP connection to `node` is open (either side opened it).
    pub fn handle_sip_node_connected(&mut self, now: Instant, node: NodeId) {
        if let Some((_, usage)) = self.sip.as_mut() {
            usage.node_connected(node);
            self.process(now);
        }
    }

    pub fn handle_sip_node_closed(&mut self, node: NodeId) {
        if let Some((_, usage)) = self.sip.as_mut() {
            usage.node_closed(node);
        }
    }

    /// A SIP dial to `node` failed.
    pub fn handle_sip_node_failed(&mut self, now: Instant, node: NodeId, why: &str) {
        let wall = self.wall(now);
        if let Some((edge, usage)) = self.sip.as_mut() {
            usage.node_failed(now, wall, node, why, edge);
            self.process(now);
        }
    }

    // ---- internals ---------------------------------------------------

    /// Runs the machines against each other until neither has more to say.
    fn process(&mut self, now: Instant) {
        let wall = self.wall(now);
        loop {
            let mut progressed = false;
            while let Some(ev) = self.overlay.poll_event() {
                progressed = true;
                self.on_overlay_event(now, wall, ev);
            }
            if let Some((edge, usage)) = self.sip.as_mut() {
                while let Some(out) = edge.poll_output() {
                    progressed = true;
                    usage.on_edge_output(now, wall, out, &mut self.overlay, edge);
                }
                while let Some(ev) = usage.poll_event() {
                    self.events.push_back(PeerEvent::Sip(ev));
                }
            }
            if !progressed {
                break;
            }
        }
    }

    fn on_overlay_event(&mut self, now: Instant, wall: WallTime, ev: Event) {
        match ev {
            Event::Connect { peer, candidates } => self.connect(now, peer, &candidates),
            Event::Disconnect { peer } => {
                if let Some(link) = self.links.remove_peer(peer) {
                    self.events.push_back(PeerEvent::CloseLink { link });
                }
            }
            Event::Joined => {
                info!(node = %self.id(), successors = ?self.overlay.successors(), "joined the overlay");
                if self.state != PeerState::Leaving {
                    self.state = PeerState::Joined;
                }
                self.boot.joined();
                // A re-join after losing the ring: what we serve may be gone.
                self.schedule_restore(now);
                self.events.push_back(PeerEvent::Joined);
            }
            Event::Rejoining => {
                warn!(node = %self.id(), "lost every successor; re-joining");
                if self.state != PeerState::Leaving {
                    self.state = PeerState::Joining;
                    if self.links.is_empty() {
                        self.state = PeerState::Bootstrapping;
                        self.boot.schedule(now);
                    }
                }
                self.events.push_back(PeerEvent::Rejoining);
            }
            Event::Completed { id, outcome } => match self.own.remove(&id) {
                Some(OwnOp::Join) => {
                    if let Outcome::Failed(f) = outcome {
                        warn!(failure = ?f, "join failed; bootstrapping again");
                        self.events.push_back(PeerEvent::JoinFailed { reason: format!("{f:?}") });
                        if self.state != PeerState::Leaving && self.state != PeerState::Joined {
                            self.state = PeerState::Bootstrapping;
                            self.boot.schedule(now);
                        }
                    }
                }
                Some(OwnOp::Leave) => {
                    info!(outcome = ?outcome, "left the overlay");
                    self.events.push_back(PeerEvent::Left);
                }
                None => {
                    let back = match self.sip.as_mut() {
                        Some((edge, usage)) => usage.on_completed(now, wall, id, outcome, edge),
                        None => Some(outcome),
                    };
                    if let Some(outcome) = back {
                        self.events.push_back(PeerEvent::Completed { id, outcome });
                    }
                }
            },
        }
    }
}

/// Our host candidate for `addr` (§6.5.1; NO-ICE link types carry one).
pub fn host_candidate(addr: SocketAddr, link: OverlayLinkType) -> IceCandidate {
    IceCandidate::host(IpAddressPort(addr), link, b"1".to_vec(), 1)
}

/// The address of the first candidate of our link type.
pub fn pick_candidate(c: &[IceCandidate], link: OverlayLinkType) -> Option<SocketAddr> {
    c.iter().find(|c| c.overlay_link == link).map(|c| c.addr_port.0)
}

/// How long between bootstrap rounds at most.
pub const BOOTSTRAP_MAX: Duration = Duration::from_secs(15);

#[cfg(test)]
mod sip_tests;
#[cfg(test)]
mod tests;
