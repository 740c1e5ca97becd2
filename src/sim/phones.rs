//! Scripted SIP phones for `chordphone sim`: each is the real sans-IO
//! [`UserAgent`] attached to a peer's SIP edge, in virtual time. Phones
//! REGISTER with digest (the edge stores RFC 7904 registrations signed as
//! the AOR), call each other (INVITE/180/200/ACK, BYE after a hold time)
//! and send MESSAGEs, at Poisson rates. Peers carry node-to-node SIP to
//! each other after AppAttach, as the daemon does over TLS.
//!
//! A phone whose serving peer dies notices after `--detect-ms` (as its
//! next transaction would time out) and registers at another ring member.
//! The final check asks the overlay, for every phone whose serving peer is
//! alive and that believes it is registered, where its AOR is served:
//! `registrations_lost` counts those that do not resolve to that peer.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use rand::RngExt;

use super::links::{addr_of, slot_of};
use super::net::{Ev, Micros, SlotId, Step, US_PER_S};
use super::world::{Pending, Simulation};
use crate::overlay::Outcome;
use crate::sip::SipUser;
use crate::sip::digest::{self, DigestAlgorithm};
use crate::sip::edge::{EdgeConfig, SipEdge};
use crate::sip::transaction::{Transport, TransportAddr};
use crate::sip::ua::{CallId, UaConfig, UaEvent, UserAgent};
use crate::usage::{self, UsageEvent, node_ref};
use crate::wire::NodeId;

/// The port of a simulated peer's SIP edge and of a phone.
const SIP_PORT: u16 = 5060;
/// The port of a simulated peer's node-to-node SIP.
const NODE_SIP_PORT: u16 = 5061;
/// Registrations the phones ask for.
const REGISTER_EXPIRES: u32 = 3600;
/// Phones start registering over this many seconds at least...
const REGISTER_SPREAD_S: f64 = 10.0;
/// ...and at most this many per simulated second (a million phones take
/// 100 s, as a network's phones would not all register in the same ten).
const REGISTER_RATE: f64 = 10_000.0;
/// How long an established call is held before the caller hangs up.
const HOLD: Micros = 5 * US_PER_S;
/// The final resolution checks get this long.
const RESOLVE_LIMIT: Micros = 120 * US_PER_S;

/// The address of phone `i` (100.64.0.0/10, shared address space).
pub(super) fn phone_addr(i: u32) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(0x6440_0000u32 | (i & 0x003F_FFFF)), SIP_PORT))
}

fn phone_of(addr: SocketAddr) -> Option<u32> {
    let SocketAddr::V4(a) = addr else { return None };
    let host = u32::from(*a.ip());
    (host & 0xFFC0_0000 == 0x6440_0000).then_some(host & 0x003F_FFFF)
}

/// Where peer `s` serves phones, and node-to-node SIP.
pub(super) fn sip_addr(s: SlotId) -> SocketAddr {
    with_port(addr_of(s), SIP_PORT)
}

fn node_sip_addr(s: SlotId) -> SocketAddr {
    with_port(addr_of(s), NODE_SIP_PORT)
}

fn with_port(mut a: SocketAddr, port: u16) -> SocketAddr {
    a.set_port(port);
    a
}

/// The slot behind a peer's SIP address (any port).
fn slot_of_sip(addr: SocketAddr) -> Option<SlotId> {
    slot_of(with_port(addr, addr_of(0).port()))
}

/// One phone.
pub(super) struct Phone {
    pub ua: UserAgent,
    /// `user@domain`.
    pub aor: String,
    password: String,
    /// The peer it registers at.
    pub home: Option<SlotId>,
    pub registered: bool,
    /// Registered at another peer after its first one died.
    rehomed: bool,
    timer_at: Option<Micros>,
    /// Calls this phone placed: callee, the callee's serving peer, start.
    outgoing: BTreeMap<CallId, (u32, SlotId, Micros)>,
}

/// The phones and what they measured.
#[derive(Default)]
pub(super) struct Phones {
    pub list: Vec<Phone>,
    /// Node-to-node SIP connections (smaller slot first).
    conns: BTreeSet<(SlotId, SlotId)>,
    pub resolve_pending: usize,
    /// Calls in flight to re-homed phones: (caller, call).
    to_rehomed: BTreeSet<(u32, u64)>,
    /// MESSAGEs in flight: (sender, id) → recipient.
    msg_targets: BTreeMap<(u32, u64), u32>,
}

/// Phone counters for the report.
#[derive(Debug, Clone, Default)]
pub struct PhoneMetrics {
    pub registrations: u64,
    pub registrations_ok: u64,
    pub registrations_failed: u64,
    pub rehomed: u64,
    pub calls: u64,
    pub calls_ok: u64,
    pub calls_failed: u64,
    /// Calls that failed because a serving peer died meanwhile (not counted
    /// against the success rate).
    pub calls_failed_node_lost: u64,
    pub setup_us: Vec<Micros>,
    /// Calls to phones that had re-registered at another peer (placed
    /// after that REGISTER succeeded), and how many of those failed.
    pub calls_to_rehomed: u64,
    pub calls_to_rehomed_failed: u64,
    /// Start of the last failed call placed after the mass kill.
    pub last_failure_after_kill: Option<Micros>,
    pub messages: u64,
    pub messages_ok: u64,
    pub messages_failed: u64,
    pub messages_received: u64,
    pub resolved: u64,
    pub registrations_lost: u64,
    pub sip_dropped: u64,
}

impl Simulation {
    /// A peer's SIP edge (when the simulation has phones).
    pub(super) fn make_edge(&mut self, id: NodeId, s: SlotId) -> Result<Option<SipEdge>, super::SimError> {
        if self.opts.phones == 0 {
            return Ok(None);
        }
        let adv = sip_addr(s);
        let secret: [u8; 32] = self.rng.random();
        let domain = self.config.overlay_name.clone();
        let cfg = EdgeConfig::new(node_ref(id), &domain, (adv.ip().to_string(), adv.port()), secret);
        SipEdge::new(cfg).map(Some).map_err(|e| super::SimError::InvalidOption(e.to_string()))
    }

    /// The node-to-node SIP address a peer advertises in AppAttach answers.
    pub(super) fn app_candidates(s: SlotId) -> Vec<(u16, Vec<crate::wire::attach::IceCandidate>)> {
        let c = crate::peer::host_candidate(node_sip_addr(s), crate::wire::attach::OverlayLinkType::TLS_TCP_FH_NO_ICE);
        vec![(crate::wire::attach::APPLICATION_SIP, vec![c])]
    }

    /// Creates the phones, each homed at a random ring member, and spreads
    /// their first REGISTERs over the first seconds of the workload; then
    /// starts the call and message processes.
    pub(super) fn start_phones(&mut self) {
        let n = self.opts.phones;
        if n == 0 {
            return;
        }
        let domain = self.config.overlay_name.clone();
        let spread = REGISTER_SPREAD_S.max(n as f64 / REGISTER_RATE);
        for i in 0..n {
            let Ok(i) = u32::try_from(i) else { break };
            let aor = format!("phone{i}@{domain}");
            let password = format!("pw-{i}-{}", self.rng.random::<u32>());
            let seed: u64 = self.rng.random();
            let mut cfg =
                UaConfig::new(&format!("sip:{aor}"), &password, udp(sip_addr(0)), host_port(phone_addr(i)), seed);
            cfg.register_expires = REGISTER_EXPIRES;
            cfg.auto_answer = Some(Duration::ZERO);
            let Ok(ua) = UserAgent::new(cfg) else {
                self.phone_metrics.registrations_failed += 1;
                continue;
            };
            self.phones.list.push(Phone {
                ua,
                aor,
                password,
                home: None,
                registered: false,
                rehomed: false,
                timer_at: None,
                outgoing: BTreeMap::new(),
            });
            let at = self.now + super::world::secs_to_us(spread * f64::from(i) / n as f64);
            self.queue.push(at, Ev::Step(Step::Rehome { phone: i }));
        }
        if self.opts.calls_per_s > 0.0 {
            let at = self.now + super::world::secs_to_us(spread);
            self.queue.push(at, Ev::Step(Step::Call));
        }
        if self.opts.messages_per_s > 0.0 {
            let at = self.now + super::world::secs_to_us(spread);
            self.queue.push(at, Ev::Step(Step::Message));
        }
    }

    /// Homes phone `i` at a random ring member: its account and (with real
    /// signatures) a user certificate binding its AOR to that peer's
    /// Node-ID are installed there (RFC 7904 USER-NODE-MATCH), then it
    /// registers.
    pub(super) fn rehome(&mut self, i: u32) {
        let Some(home) = self.pick_joined(None, None) else {
            self.queue.push(self.now + US_PER_S, Ev::Step(Step::Rehome { phone: i }));
            return;
        };
        let (now, wall) = (self.instant(), self.wall());
        let Some(ph) = self.phones.list.get(i as usize) else { return };
        let (aor, password, first) = (ph.aor.clone(), ph.password.clone(), ph.home.is_none());
        let node = self.id_of(home);
        let identity = match self.issue_user_identity(&aor, node) {
            Ok(id) => id,
            Err(e) => {
                self.metrics.note_failure("phone identity", e.to_string());
                return;
            }
        };
        let user = aor.split('@').next().unwrap_or_default().to_owned();
        let realm = self.config.overlay_name.clone();
        let account = SipUser {
            aor: aor.clone(),
            realm: realm.clone(),
            ha1_md5: digest::ha1(DigestAlgorithm::Md5, &user, &realm, &password),
            ha1_sha256: digest::ha1(DigestAlgorithm::Sha256, &user, &realm, &password),
            created_unix_s: wall.as_secs(),
        };
        let Some(peer) = self.slot_mut(home).and_then(|sl| sl.node.as_deref_mut()) else { return };
        if let Some((key, cert)) = identity
            && let Err(e) = peer.overlay_mut().add_user_identity(now, &key, &cert)
        {
            self.metrics.note_failure("phone identity", e.to_string());
            return;
        }
        if let Some(edge) = peer.sip_edge_mut() {
            edge.add_user(account);
        }
        if !first {
            self.phone_metrics.rehomed += 1;
        }
        let Some(ph) = self.phones.list.get_mut(i as usize) else { return };
        ph.home = Some(home);
        ph.registered = false;
        ph.rehomed |= !first;
        ph.ua.set_next_hop(udp(sip_addr(home)));
        let _ = ph.ua.register(now);
        self.phone_metrics.registrations += 1;
        self.drive_phone(i);
    }

    /// Phones homed at a removed peer notice after the detection delay.
    pub(super) fn phones_lost_home(&mut self, s: SlotId) {
        self.phones.conns.retain(|&(a, b)| a != s && b != s);
        let detect = self.net.detect();
        let orphans: Vec<u32> = (0..self.phones.list.len())
            .filter(|&i| self.phones.list.get(i).is_some_and(|p| p.home == Some(s)))
            .filter_map(|i| u32::try_from(i).ok())
            .collect();
        for i in orphans {
            if let Some(p) = self.phones.list.get_mut(i as usize) {
                p.registered = false;
            }
            self.queue.push(self.now + detect, Ev::Step(Step::Rehome { phone: i }));
        }
    }

    /// A peer's SIP side asks for something.
    pub(super) fn on_sip_event(&mut self, s: SlotId, ev: UsageEvent) {
        match ev {
            UsageEvent::SendLocal { to, bytes } => match phone_of(to.addr) {
                Some(phone) if !self.net.lost() => {
                    let at = self.now + self.net.delay();
                    self.queue.push(at, Ev::ToPhone { phone, from: s, bytes });
                }
                _ => self.phone_metrics.sip_dropped += 1,
            },
            UsageEvent::SendNode { node, bytes } => match self.alive.get(&node).copied() {
                Some(b) if self.phones.conns.contains(&pair(s, b)) && self.reachable(s, b) => {
                    let at = self.now + self.net.delay();
                    self.queue.push(at, Ev::SipNode { to: b, from: s, bytes });
                }
                _ => self.phone_metrics.sip_dropped += 1,
            },
            UsageEvent::DialNode { node, addr } => match slot_of_sip(addr) {
                Some(b) if self.is_alive(b) && self.reachable(s, b) && self.id_of(b) == node => {
                    let at = self.now + self.net.delay();
                    self.queue.push(at, Ev::SipConnect { a: s, b });
                }
                _ => {
                    let at = self.now + self.net.detect();
                    self.queue.push(at, Ev::SipDialFailed { a: s, node });
                }
            },
        }
    }

    pub(super) fn sip_connect(&mut self, a: SlotId, b: SlotId) {
        let now = self.instant();
        if !(self.is_alive(a) && self.is_alive(b) && self.reachable(a, b)) {
            let node = self.id_of(b);
            return self.sip_dial_failed(a, node);
        }
        self.phones.conns.insert(pair(a, b));
        let (id_a, id_b) = (self.id_of(a), self.id_of(b));
        for (x, other) in [(a, id_b), (b, id_a)] {
            if let Some(p) = self.slot_mut(x).and_then(|sl| sl.node.as_deref_mut()) {
                p.handle_sip_node_connected(now, other);
            }
            self.drive(x, false);
        }
    }

    pub(super) fn sip_dial_failed(&mut self, a: SlotId, node: NodeId) {
        let now = self.instant();
        if let Some(p) = self.slot_mut(a).and_then(|sl| sl.node.as_deref_mut()) {
            p.handle_sip_node_failed(now, node, "unreachable");
        }
        self.drive(a, false);
    }

    pub(super) fn sip_node(&mut self, to: SlotId, from: SlotId, bytes: &[u8]) {
        if !self.phones.conns.contains(&pair(to, from)) {
            self.phone_metrics.sip_dropped += 1;
            return;
        }
        let (now, id) = (self.instant(), self.id_of(from));
        if let Some(p) = self.slot_mut(to).and_then(|sl| sl.node.as_deref_mut()) {
            p.handle_sip_node(now, id, bytes);
        }
        self.drive(to, false);
    }

    pub(super) fn deliver_to_peer_sip(&mut self, s: SlotId, phone: u32, bytes: &[u8]) {
        let now = self.instant();
        let from = TransportAddr { transport: Transport::Udp, addr: phone_addr(phone), flow: None };
        match self.slot_mut(s).and_then(|sl| sl.node.as_deref_mut()) {
            Some(p) => p.handle_sip_local(now, bytes, from),
            None => {
                self.phone_metrics.sip_dropped += 1;
                return;
            }
        }
        self.drive(s, false);
    }

    pub(super) fn deliver_to_phone(&mut self, phone: u32, from: SlotId, bytes: &[u8]) {
        let now = self.instant();
        if let Some(p) = self.phones.list.get_mut(phone as usize) {
            p.ua.handle_input(now, udp(sip_addr(from)), bytes);
        }
        self.drive_phone(phone);
    }

    pub(super) fn phone_timer(&mut self, phone: u32) {
        let (now, t) = (self.now, self.instant());
        let Some(p) = self.phones.list.get_mut(phone as usize) else { return };
        if p.timer_at != Some(now) {
            return;
        }
        p.timer_at = None;
        p.ua.handle_timeout(t);
        self.drive_phone(phone);
    }

    /// Drains a phone's transmissions and events and schedules its timer.
    fn drive_phone(&mut self, i: u32) {
        let (now, base) = (self.now, self.instant());
        let Some(p) = self.phones.list.get_mut(i as usize) else { return };
        let mut sends = Vec::new();
        while let Some(t) = p.ua.poll_transmit() {
            sends.push(t);
        }
        let mut events = Vec::new();
        while let Some(e) = p.ua.poll_event() {
            events.push(e);
        }
        if let Some(at) = p.ua.poll_timeout() {
            let at = now + Micros::try_from(at.saturating_duration_since(base).as_micros()).unwrap_or(Micros::MAX);
            if p.timer_at.is_none_or(|cur| at < cur) {
                p.timer_at = Some(at);
                self.queue.push(at, Ev::PhoneTimer { phone: i });
            }
        }
        for t in sends {
            match slot_of_sip(t.to.addr) {
                Some(s) if !self.net.lost() => {
                    let at = self.now + self.net.delay();
                    self.queue.push(at, Ev::ToPeerSip { slot: s, phone: i, bytes: t.payload.to_vec() });
                }
                _ => self.phone_metrics.sip_dropped += 1,
            }
        }
        for e in events {
            self.on_phone_event(i, e);
        }
    }

    fn on_phone_event(&mut self, i: u32, e: UaEvent) {
        let now = self.now;
        let kill = self.work.kill_time;
        let Some(p) = self.phones.list.get_mut(i as usize) else { return };
        match e {
            UaEvent::Registered { .. } => {
                if !p.registered {
                    p.registered = true;
                    self.phone_metrics.registrations_ok += 1;
                }
            }
            UaEvent::RegistrationFailed { code } => {
                p.registered = false;
                self.phone_metrics.registrations_failed += 1;
                self.metrics.note_failure("register", code.to_string());
            }
            UaEvent::CallEstablished { call, setup } => {
                if p.outgoing.contains_key(&call) {
                    self.phone_metrics.calls_ok += 1;
                    self.phone_metrics.setup_us.push(Micros::try_from(setup.as_micros()).unwrap_or(Micros::MAX));
                    self.queue.push(now + HOLD, Ev::Step(Step::Hangup { phone: i, call: call.0 }));
                }
            }
            UaEvent::CallFailed { call, code } => {
                let to_rehomed = self.phones.to_rehomed.remove(&(i, call.0));
                let Some(p) = self.phones.list.get_mut(i as usize) else { return };
                if let Some((callee, callee_home, started)) = p.outgoing.remove(&call) {
                    let caller_home = p.home;
                    let lost = !caller_home.is_some_and(|h| self.is_alive(h))
                        || !self.is_alive(callee_home)
                        || self.phones.list.get(callee as usize).and_then(|c| c.home) != Some(callee_home);
                    if lost {
                        self.phone_metrics.calls_failed_node_lost += 1;
                    } else {
                        self.phone_metrics.calls_failed += 1;
                        self.phone_metrics.calls_to_rehomed_failed += u64::from(to_rehomed);
                        self.metrics.note_failure("call", code.to_string());
                        if kill.is_some_and(|k| started >= k) {
                            let last = self.phone_metrics.last_failure_after_kill.get_or_insert(started);
                            *last = (*last).max(started);
                        }
                    }
                }
            }
            UaEvent::CallEnded { call, .. } => {
                p.outgoing.remove(&call);
                self.phones.to_rehomed.remove(&(i, call.0));
            }
            UaEvent::MessageDelivered { id } => {
                self.phones.msg_targets.remove(&(i, id.0));
                self.phone_metrics.messages_ok += 1;
            }
            UaEvent::MessageFailed { id, code } => {
                let to = self.phones.msg_targets.remove(&(i, id.0));
                tracing::debug!(t = now, from = i, ?to, code, "sim: MESSAGE failed");
                self.phone_metrics.messages_failed += 1;
                self.metrics.note_failure("message", code.to_string());
            }
            UaEvent::MessageReceived { .. } => self.phone_metrics.messages_received += 1,
            UaEvent::Ringing { .. } | UaEvent::IncomingCall { .. } | UaEvent::Unregistered => {}
        }
    }

    /// Two registered phones whose serving peers are alive, or none.
    fn pick_pair(&mut self) -> Option<(u32, u32)> {
        let n = self.phones.list.len();
        if n < 2 {
            return None;
        }
        for _ in 0..16 {
            let a = self.rng.random_range(0..n);
            let b = self.rng.random_range(0..n);
            if a != b && self.reachable_phone(a) && self.reachable_phone(b) {
                return Some((u32::try_from(a).ok()?, u32::try_from(b).ok()?));
            }
        }
        None
    }

    fn reachable_phone(&self, i: usize) -> bool {
        self.phones.list.get(i).is_some_and(|p| p.registered && p.home.is_some_and(|h| self.is_alive(h)))
    }

    /// One call between random registered phones; the next after an
    /// exponential gap.
    pub(super) fn place_call(&mut self) {
        if self.work.phase != super::scenario::Phase::Workload {
            return;
        }
        let gap = self.exp_gap(self.opts.calls_per_s);
        self.queue.push(self.now + gap, Ev::Step(Step::Call));
        let Some((a, b)) = self.pick_pair() else { return };
        let now = self.instant();
        let Some(callee) = self.phones.list.get(b as usize) else { return };
        let (target, callee_home) = (format!("sip:{}", callee.aor), callee.home.unwrap_or_default());
        let to_rehomed = callee.rehomed;
        let Some(caller) = self.phones.list.get_mut(a as usize) else { return };
        if let Ok(call) = caller.ua.call(now, &target, None) {
            caller.outgoing.insert(call, (b, callee_home, self.now));
            self.phone_metrics.calls += 1;
            if to_rehomed {
                self.phone_metrics.calls_to_rehomed += 1;
                self.phones.to_rehomed.insert((a, call.0));
            }
        }
        self.drive_phone(a);
    }

    pub(super) fn hangup(&mut self, phone: u32, call: u64) {
        let now = self.instant();
        if let Some(p) = self.phones.list.get_mut(phone as usize) {
            let _ = p.ua.hangup(now, CallId(call));
        }
        self.drive_phone(phone);
    }

    /// One MESSAGE between random registered phones.
    pub(super) fn send_message(&mut self) {
        if self.work.phase != super::scenario::Phase::Workload {
            return;
        }
        let gap = self.exp_gap(self.opts.messages_per_s);
        self.queue.push(self.now + gap, Ev::Step(Step::Message));
        let Some((a, b)) = self.pick_pair() else { return };
        let now = self.instant();
        let Some(to) = self.phones.list.get(b as usize).map(|p| format!("sip:{}", p.aor)) else { return };
        let Some(p) = self.phones.list.get_mut(a as usize) else { return };
        if let Ok(id) = p.ua.send_message(now, &to, b"hello".to_vec()) {
            self.phones.msg_targets.insert((a, id.0), b);
            self.phone_metrics.messages += 1;
        }
        self.drive_phone(a);
    }

    fn exp_gap(&mut self, rate: f64) -> Micros {
        let u: f64 = 1.0 - self.rng.random::<f64>();
        super::world::secs_to_us(-u.ln() / rate.max(1e-9))
    }

    /// The final check: every phone that believes it is registered at a
    /// live peer must resolve to that peer through the overlay.
    pub(super) fn check_phone_resolution(&mut self) {
        let n = self.phones.list.len();
        for i in 0..n {
            let Some(p) = self.phones.list.get(i) else { continue };
            let Some(home) = p.home.filter(|&h| p.registered && self.is_alive(h)) else { continue };
            let cmd = usage::fetch_command(&p.aor);
            let Some(asker) = self.pick_joined(None, None) else { break };
            let Ok(phone) = u32::try_from(i) else { break };
            // Counted first: an answer may complete within `issue`.
            self.phones.resolve_pending += 1;
            if self.issue(asker, cmd, Pending::Resolve { phone, home }).is_err() {
                self.phones.resolve_pending -= 1;
                self.phone_metrics.registrations_lost += 1;
            }
        }
        let limit = self.now + RESOLVE_LIMIT;
        while self.phones.resolve_pending > 0 && self.now < limit {
            self.run_until((self.now + US_PER_S).min(limit));
        }
        self.phone_metrics.registrations_lost += self.phones.resolve_pending as u64;
    }

    /// A resolution Fetch completed.
    pub(super) fn resolved(&mut self, home: SlotId, outcome: Outcome) {
        self.phones.resolve_pending = self.phones.resolve_pending.saturating_sub(1);
        let want = node_ref(self.id_of(home));
        match outcome {
            Outcome::Fetched { values } if usage::serving_nodes(&values).contains(&want) => {
                self.phone_metrics.resolved += 1;
            }
            other => {
                tracing::warn!(home = %self.id_of(home), outcome = ?other, "sim: a registered phone does not resolve");
                self.phone_metrics.registrations_lost += 1;
            }
        }
    }
}

fn pair(a: SlotId, b: SlotId) -> (SlotId, SlotId) {
    (a.min(b), a.max(b))
}

fn udp(addr: SocketAddr) -> TransportAddr {
    TransportAddr { transport: Transport::Udp, addr, flow: None }
}

fn host_port(a: SocketAddr) -> (String, u16) {
    (a.ip().to_string(), a.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_and_peer_addresses_round_trip() {
        for i in [0u32, 1, 70_000, 1_000_000] {
            assert_eq!(phone_of(phone_addr(i)), Some(i));
            assert_eq!(slot_of(phone_addr(i)), None);
        }
        for s in [0u32, 5, 99_999] {
            assert_eq!(slot_of_sip(sip_addr(s)), Some(s));
            assert_eq!(slot_of_sip(node_sip_addr(s)), Some(s));
            assert_eq!(phone_of(sip_addr(s)), None);
        }
    }
}
