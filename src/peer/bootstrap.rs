//! Finding the ring (RFC 6940 §11.4): the host cache first, then the
//! configured bootstrap peers; the first that answers is joined through
//! (§10.5); a bootstrap node that reaches nobody starts the ring.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::links::Purpose;
use super::{BOOTSTRAP_MAX, OwnOp, Peer, PeerEvent, PeerState, host_candidate};
use crate::overlay::Command;
use crate::wire::NodeId;

/// The first wait between bootstrap rounds (doubling up to [`BOOTSTRAP_MAX`]).
pub const BOOTSTRAP_MIN: Duration = Duration::from_millis(500);

/// Bootstrap rounds.
#[derive(Debug)]
pub(super) struct Bootstrap {
    pub next: Option<Instant>,
    backoff: Duration,
    round: u64,
    outstanding: usize,
    joined_via: bool,
    /// Addresses remembered from an earlier run.
    pub host_cache: Vec<SocketAddr>,
    /// Addresses we reached peers at in this run, newest first: the
    /// in-memory host cache a re-join starts from.
    recent: VecDeque<SocketAddr>,
}

/// Addresses kept in [`Bootstrap::recent`].
const RECENT: usize = 16;

impl Bootstrap {
    pub fn new(now: Instant) -> Bootstrap {
        Bootstrap {
            next: Some(now),
            backoff: BOOTSTRAP_MIN,
            round: 0,
            outstanding: 0,
            joined_via: false,
            host_cache: Vec::new(),
            recent: VecDeque::new(),
        }
    }

    pub fn remember(&mut self, addr: SocketAddr) {
        self.recent.retain(|a| *a != addr);
        self.recent.push_front(addr);
        self.recent.truncate(RECENT);
    }

    pub fn schedule(&mut self, now: Instant) {
        self.next = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(BOOTSTRAP_MAX);
    }

    pub fn joined(&mut self) {
        self.backoff = BOOTSTRAP_MIN;
        self.next = None;
    }
}

impl Peer {
    /// Starts a bootstrap round now unless the peer is in the ring or
    /// leaving (the simulator's retry through another peer).
    pub fn bootstrap_now(&mut self, now: Instant) {
        if matches!(self.state, PeerState::Bootstrapping | PeerState::Joining) && !self.overlay.is_joined() {
            self.state = PeerState::Bootstrapping;
            self.boot.next = None;
            self.start_bootstrap(now);
            self.process(now);
        }
    }

    /// Where to look for the ring: peers reached in this run, the host
    /// cache, then the bootstrap list; never ourselves.
    fn bootstrap_candidates(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = Vec::new();
        for a in self.boot.recent.iter().chain(self.boot.host_cache.iter()).chain(self.cfg.bootstrap.iter()) {
            if !out.contains(a) && Some(*a) != self.cfg.advertise {
                out.push(*a);
            }
        }
        out
    }

    /// Whether this peer is one of the bootstrap nodes (which start the
    /// ring when they reach nobody).
    fn is_seed(&self) -> bool {
        self.cfg.advertise.is_some_and(|a| self.cfg.bootstrap.contains(&a))
    }

    pub(super) fn start_bootstrap(&mut self, now: Instant) {
        self.boot.round += 1;
        let round = self.boot.round;
        let candidates = self.bootstrap_candidates();
        // With no bootstrap list at all, a peer alone starts its own ring.
        let may_start_ring = self.is_seed() || (self.cfg.bootstrap.is_empty() && !self.cfg.client);
        if candidates.is_empty() {
            if may_start_ring {
                self.create_ring(now);
            } else {
                warn!("no bootstrap peer is configured and the host cache is empty; retrying");
                self.boot.schedule(now);
            }
            return;
        }
        info!(round, peers = candidates.len(), "bootstrapping");
        self.boot.outstanding = candidates.len();
        self.boot.joined_via = false;
        for addr in candidates {
            let dial = self.links.new_dial(Purpose::Bootstrap { round, addr });
            self.events.push_back(PeerEvent::Dial { dial, addr, expect: None });
        }
    }

    fn create_ring(&mut self, now: Instant) {
        match self.overlay.command(now, Command::CreateRing) {
            Ok(_) => info!(node = %self.id(), "no peer answered: this bootstrap node starts the ring"),
            Err(e) => warn!(error = %e, "cannot create the ring"),
        }
    }

    /// A bootstrap dial of `round` ended: with the peer it reached and the
    /// address dialed, or without.
    pub(super) fn bootstrap_dial_done(&mut self, now: Instant, round: u64, reached: Option<(NodeId, SocketAddr)>) {
        if round != self.boot.round {
            return;
        }
        self.boot.outstanding = self.boot.outstanding.saturating_sub(1);
        if let Some((peer, addr)) = reached
            && !self.boot.joined_via
            && self.joining_allowed()
        {
            self.boot.joined_via = true;
            self.overlay.add_known_peer(peer, vec![host_candidate(addr, self.cfg.link_type)]);
            match self.overlay.command(now, Command::Join { via: peer }) {
                Ok(id) => {
                    info!(via = %peer, %addr, "joining");
                    self.state = PeerState::Joining;
                    self.own.insert(id, OwnOp::Join);
                }
                Err(e) => {
                    warn!(error = %e, "cannot join");
                    self.boot.schedule(now);
                }
            }
        }
        if self.boot.outstanding == 0 && !self.boot.joined_via && self.state == PeerState::Bootstrapping {
            if self.is_seed() {
                self.create_ring(now);
            } else {
                self.boot.schedule(now);
            }
        }
    }
}
