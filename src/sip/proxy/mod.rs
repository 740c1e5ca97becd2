//! The stateful-proxy half of the SIP edge (RFC 3261 §16): a proxy
//! transaction ties one server transaction to its branches (client
//! transactions to phones or to other nodes), forwards provisional and 2xx
//! responses at once, picks the best final answer when every branch has
//! one (§16.7 step 6), cancels the rest on 2xx or 6xx (§16.7 step 10,
//! step 5), relays CANCEL hop by hop (§16.10), runs Timer C (§16.6 step 11)
//! and forwards ACK for 2xx statelessly.
//!
//! RFC 7904 §4: when the callee is not registered here the edge fetches the
//! AOR's SIP-REGISTRATION entries and forks to every node serving it; a
//! request a node forwarded is delivered only to local bindings. When every
//! serving node fails (timeout, 408, 503, unreachable) the caller gets 480.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tracing::{Span, debug, trace};

use super::account::NodeRef;
use super::edge::{EdgeCore, EdgeOutput, Next, OverlayOpId, OverlayResult, Source, node_of};
use super::location_cache::LocationCache;
use super::message::{Contacts, Method, ParseError, SipMessage, StatusCode, Uri};
use super::registrar::{self, Registrar, Reject, status};
use super::transaction::{ClientTxId, MAGIC_COOKIE, ServerTxId, Transport, TransportAddr, TxError, TxId};

/// AORs whose serving nodes the proxy remembers at most.
const LOCATION_CACHE_ENTRIES: usize = 100_000;
/// Learned dialog targets kept at most, and for how long.
const LEARNED_CAP: usize = 4096;
const LEARNED_TTL: Duration = Duration::from_secs(6 * 3600);

/// The proxy's own deadlines besides the transaction layer's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Deadline {
    TimerC(u64),
    CancelWait(u64, usize),
    /// An overlay Fetch not answered by then has failed.
    Op(OverlayOpId),
}

/// A learned dialog target: a phone that sent a Contact in a dialog-creating
/// request or answer without being registered with that Contact.
#[derive(Debug, Clone)]
struct Learned {
    to: TransportAddr,
    seen: Instant,
}

/// The stateful proxy of one node: proxy transactions and their branches,
/// Timer C, the overlay Fetches they wait for, the location cache and the
/// dialog targets learned from phones. See the module doc.
#[derive(Debug)]
pub(super) struct Proxy {
    pub(super) proxies: BTreeMap<u64, ProxyTx>,
    pub(super) by_server: BTreeMap<ServerTxId, u64>,
    pub(super) by_client: BTreeMap<ClientTxId, (u64, usize)>,
    /// CANCEL client transactions we started (their answers are absorbed).
    cancels: BTreeSet<ClientTxId>,
    /// Overlay Fetches in flight → the proxy transaction waiting.
    fetches: BTreeMap<OverlayOpId, u64>,
    deadlines: BTreeSet<(Instant, Deadline)>,
    learned: BTreeMap<String, Learned>,
    locations: LocationCache,
}

/// Where one branch goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// A phone at `to`; `uri` replaces the Request-URI (a binding's Contact,
    /// §16.6 step 2) or keeps it (`None`: in-dialog, already the contact).
    Local { to: TransportAddr, uri: Option<Uri> },
    /// Another node, Request-URI unchanged.
    Node(NodeRef),
}

/// A branch's final outcome.
#[derive(Debug)]
struct Outcome {
    status: StatusCode,
    /// The real response (non-2xx), or `None` when synthesised (timeout,
    /// transport error, cancel timeout).
    response: Option<SipMessage>,
    reason: Option<String>,
    /// The next hop failed rather than answered (RFC 7904 §4 → 480).
    failed: bool,
}

#[derive(Debug)]
pub(super) struct Branch {
    target: Target,
    client: Option<ClientTxId>,
    outcome: Option<Outcome>,
    cancel_sent: bool,
}

/// One proxied request.
#[derive(Debug)]
pub(super) struct ProxyTx {
    server: ServerTxId,
    /// As received, Routes naming us removed, Max-Forwards decremented.
    request: SipMessage,
    source: Source,
    hash: String,
    record_route: bool,
    invite: bool,
    /// Targets came from an AOR lookup (the 480 rule applies).
    aor_lookup: bool,
    branches: Vec<Branch>,
    fetch: Option<OverlayOpId>,
    final_sent: bool,
    cancelled: bool,
    server_gone: bool,
    timer_c: Option<Instant>,
    /// The AOR whose overlay lookup chose the node branches: a failure
    /// there drops it from the location cache.
    looked_up: Option<String>,
    span: Span,
}

/// What goes upstream when all branches are done.
enum Choice {
    Forward(Box<SipMessage>),
    Generate(StatusCode, Option<String>),
}

impl Proxy {
    /// No proxy transactions; serving nodes of a fetched AOR are reused for
    /// `location_ttl` (zero disables the cache).
    pub fn new(location_ttl: Duration) -> Proxy {
        Proxy {
            proxies: BTreeMap::new(),
            by_server: BTreeMap::new(),
            by_client: BTreeMap::new(),
            cancels: BTreeSet::new(),
            fetches: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            learned: BTreeMap::new(),
            locations: LocationCache::new(location_ttl, LOCATION_CACHE_ENTRIES),
        }
    }

    /// Whether `op` is one of our Fetches.
    pub fn owns(&self, op: OverlayOpId) -> bool {
        self.fetches.contains_key(&op)
    }

    /// The overlay answered (or timed out on) one of our Fetches.
    pub fn handle_overlay(&mut self, core: &mut EdgeCore, now: Instant, op: OverlayOpId, result: OverlayResult) {
        if let Some(pid) = self.fetches.remove(&op) {
            self.fetched(core, now, pid, result);
        }
    }

    /// When [`Proxy::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Fires Timer C, CANCEL waits and Fetch timeouts due at `now`.
    pub fn handle_timeout(&mut self, core: &mut EdgeCore, now: Instant) {
        while let Some(&(at, d)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            match d {
                Deadline::TimerC(pid) => self.timer_c(core, now, pid, at),
                Deadline::CancelWait(pid, b) => self.cancel_wait(core, now, pid, b),
                Deadline::Op(op) => {
                    if self.owns(op) {
                        self.handle_overlay(core, now, op, OverlayResult::Failed("timed out".into()));
                    }
                }
            }
        }
    }

    /// §16.4 and §16.5: strips Routes naming this node and says where the
    /// request goes next.
    pub fn resolve(
        &self,
        core: &EdgeCore,
        reg: &Registrar,
        now: Instant,
        req: &mut SipMessage,
        src: Source,
    ) -> Result<Next, Reject> {
        let bad_route = |e: ParseError| Reject::new(400, Some(e.to_string()));
        let mut routes = req.routes().map_err(bad_route)?;
        // §16.4: a strict router put our Record-Route into the Request-URI;
        // the real one is the last Route.
        let ruri_is_us = req.request_uri().and_then(Uri::as_sip).is_some_and(|u| core.names_us_by_id(u));
        if ruri_is_us && let Some(last) = routes.pop() {
            req.set_request_uri(last.uri).map_err(bad_route)?;
            req.remove_header("Route").map_err(bad_route)?;
            for r in &routes {
                req.add_header("Route", &r.to_string()).map_err(bad_route)?;
            }
        }
        while req.routes().map_err(bad_route)?.first().and_then(|r| r.uri.as_sip()).is_some_and(|u| core.names_us(u)) {
            req.pop_route().map_err(bad_route)?;
        }
        if let Some(first) = req.routes().map_err(bad_route)?.first() {
            return match first.uri.as_sip().and_then(node_of) {
                Some(node) if node != core.cfg.node_id => Ok(Next::Node(node)),
                _ => Err(Reject::new(404, Some("Route names an unknown next hop".into()))),
            };
        }
        let Some(Uri::Sip(ruri)) = req.request_uri() else {
            return Err(Reject::new(416, None));
        };
        if let Some(to) = self.contact_target(reg, now, req.request_uri()) {
            return Ok(Next::Contact(to));
        }
        match (registrar::aor_of(ruri), core.is_our_host(&ruri.host, ruri.port)) {
            (None, true) => Ok(Next::Us),
            // A node forwards only AORs it found in the overlay; its domain
            // list is trusted.
            (Some(aor), _) if core.is_our_domain(&ruri.host) || matches!(src, Source::Node(_)) => Ok(Next::Aor(aor)),
            (Some(aor), true) => Ok(Next::Aor(aor)),
            _ => Err(Reject::new(404, Some("Domain not served here".into()))),
        }
    }

    /// Where a phone's contact URI is reachable: a binding's source, else a
    /// contact learned from a dialog.
    fn contact_target(&self, reg: &Registrar, now: Instant, uri: Option<&Uri>) -> Option<TransportAddr> {
        let uri = uri?;
        if let Some(b) = reg.by_contact(uri) {
            return Some(b.source);
        }
        let l = self.learned.get(&registrar::contact_key(uri))?;
        (now.saturating_duration_since(l.seen) < LEARNED_TTL).then_some(l.to)
    }

    /// Records the Contact of a dialog-creating request from a phone so
    /// in-dialog requests reach it even if it registered another Contact
    /// (or none: sipp).
    pub fn learn_contact(&mut self, now: Instant, msg: &SipMessage, from: TransportAddr) {
        let dialog_method = matches!(
            msg.cseq().method,
            Method::Invite | Method::Subscribe | Method::Refer | Method::Notify | Method::Update
        );
        if !dialog_method {
            return;
        }
        let Ok(Contacts::Bindings(list)) = msg.contacts() else { return };
        let Some(c) = list.first() else { return };
        let key = registrar::contact_key(&c.uri);
        if self.learned.len() >= LEARNED_CAP && !self.learned.contains_key(&key) {
            // Bounded: forget the least recently seen.
            if let Some(oldest) = self.learned.iter().min_by_key(|(_, l)| l.seen).map(|(k, _)| k.clone()) {
                self.learned.remove(&oldest);
            }
        }
        self.learned.insert(key, Learned { to: from, seen: now });
    }

    /// Forwards `req` (server transaction `id`) to `targets`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_proxy(
        &mut self,
        core: &mut EdgeCore,
        now: Instant,
        id: ServerTxId,
        req: SipMessage,
        src: Source,
        hash: String,
        record_route: bool,
        targets: Vec<Target>,
        span: Span,
    ) {
        let aor_lookup = targets.iter().any(|t| matches!(t, Target::Local { uri: Some(_), .. }));
        let pid = self.new_proxy(core, id, req, src, hash, record_route, aor_lookup, span);
        for t in targets {
            self.fork(core, now, pid, t);
        }
        self.arm_timer_c(core, now, pid);
        self.check_complete(core, now, pid);
    }

    /// Holds `req` while the overlay is asked where `aor` is registered.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_fetch(
        &mut self,
        core: &mut EdgeCore,
        now: Instant,
        id: ServerTxId,
        req: SipMessage,
        src: Source,
        aor: String,
        hash: String,
        span: Span,
    ) {
        let pid = self.new_proxy(core, id, req, src, hash, true, true, span);
        if let Some(p) = self.proxies.get_mut(&pid) {
            p.looked_up = Some(aor.clone());
        }
        if let Some(nodes) = self.locations.get(now, &aor).map(<[NodeRef]>::to_vec) {
            debug!(%aor, nodes = nodes.len(), "serving nodes known from a recent fetch");
            return self.fork_to_nodes(core, now, pid, nodes);
        }
        let op = core.fresh_op();
        if let Some(p) = self.proxies.get_mut(&pid) {
            p.fetch = Some(op);
        }
        debug!(%aor, %op, "not registered here: fetching from the overlay");
        core.out.push_back(EdgeOutput::FetchRegistration { op, aor });
        self.fetches.insert(op, pid);
        self.deadlines.insert((now + core.cfg.overlay_timeout, Deadline::Op(op)));
    }

    #[allow(clippy::too_many_arguments)]
    fn new_proxy(
        &mut self,
        core: &mut EdgeCore,
        server: ServerTxId,
        request: SipMessage,
        source: Source,
        hash: String,
        record_route: bool,
        aor_lookup: bool,
        span: Span,
    ) -> u64 {
        let pid = core.fresh_proxy_id();
        let invite = request.method() == Some(&Method::Invite);
        let p = ProxyTx {
            server,
            request,
            source,
            hash,
            record_route,
            invite,
            aor_lookup,
            branches: Vec::new(),
            fetch: None,
            final_sent: false,
            cancelled: false,
            server_gone: false,
            timer_c: None,
            looked_up: None,
            span,
        };
        self.proxies.insert(pid, p);
        self.by_server.insert(server, pid);
        pid
    }

    /// RFC 7904 §4: the AOR's registrations arrived; fork to their nodes.
    pub(super) fn fetched(&mut self, core: &mut EdgeCore, now: Instant, pid: u64, result: OverlayResult) {
        let Some(p) = self.proxies.get_mut(&pid) else { return };
        p.fetch = None;
        let span = p.span.clone();
        let _guard = span.enter();
        if p.final_sent || p.cancelled {
            return self.maybe_reap(pid);
        }
        let located = match result {
            OverlayResult::Located(nodes) => nodes,
            OverlayResult::Failed(e) => {
                let reason = format!("overlay fetch failed: {e}");
                return self.generate_final(core, now, pid, StatusCode::SERVICE_UNAVAILABLE, Some(reason));
            }
            OverlayResult::Stored => {
                let reason = Some("overlay fetch failed: unexpected store result".to_owned());
                return self.generate_final(core, now, pid, StatusCode::SERVER_ERROR, reason);
            }
        };
        let exists = !located.is_empty();
        let mut nodes: Vec<NodeRef> = Vec::new();
        for node in located {
            // Our own entry without a local binding is stale: skip it.
            if node != core.cfg.node_id && !nodes.contains(&node) {
                nodes.push(node);
            }
        }
        if nodes.is_empty() {
            let (code, reason) = if exists {
                (StatusCode::TEMPORARILY_UNAVAILABLE, Some("Registration is stale".to_owned()))
            } else {
                (StatusCode::NOT_FOUND, None)
            };
            return self.generate_final(core, now, pid, code, reason);
        }
        if let Some(aor) = self.proxies.get(&pid).and_then(|p| p.looked_up.clone()) {
            self.locations.put(now, &aor, nodes.clone());
        }
        self.fork_to_nodes(core, now, pid, nodes);
    }

    fn fork_to_nodes(&mut self, core: &mut EdgeCore, now: Instant, pid: u64, nodes: Vec<NodeRef>) {
        for n in nodes {
            self.fork(core, now, pid, Target::Node(n));
        }
        self.arm_timer_c(core, now, pid);
        self.check_complete(core, now, pid);
    }

    /// A node branch failed or the node says the AOR is not (or no longer)
    /// there: the cached location is wrong, look it up again next time.
    fn distrust_location(&mut self, pid: u64, bi: usize, code: StatusCode) {
        let Some(p) = self.proxies.get(&pid) else { return };
        let to_node = matches!(p.branches.get(bi), Some(Branch { target: Target::Node(_), .. }));
        if to_node
            && matches!(code.as_u16(), 404 | 408 | 480 | 500 | 503)
            && let Some(aor) = p.looked_up.clone()
        {
            debug!(%aor, code = code.as_u16(), "forgetting the cached location");
            self.locations.forget(&aor);
        }
    }

    /// §16.6: one copy of the request to `target`, in a new client transaction.
    fn fork(&mut self, core: &mut EdgeCore, now: Instant, pid: u64, target: Target) {
        let to = match &target {
            Target::Local { to, .. } => *to,
            Target::Node(n) => core.node_addr(*n),
        };
        let Some(p) = self.proxies.get(&pid) else { return };
        let idx = p.branches.len();
        let built = Self::build_forward(core, p, &target, idx);
        let sent = built.map_err(TxError::from).and_then(|m| core.tl.send_request(now, m, to));
        let mut branch = Branch { target, client: None, outcome: None, cancel_sent: false };
        match sent {
            Ok(cid) => {
                self.by_client.insert(cid, (pid, idx));
                branch.client = Some(cid);
                match branch.target {
                    Target::Local { .. } => core.counters.requests_forwarded_local += 1,
                    Target::Node(_) => core.counters.requests_forwarded_node += 1,
                }
                trace!(?to, "request forwarded");
            }
            Err(e) => {
                debug!(error = %e, "branch not started");
                let (code, failed) = match e {
                    TxError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, true),
                    // Same branch hash: a merged or looped request (§8.2.2.2).
                    TxError::DuplicateBranch => (StatusCode::LOOP_DETECTED, false),
                    _ => (StatusCode::SERVER_ERROR, true),
                };
                branch.outcome = Some(Outcome { status: code, response: None, reason: Some(e.to_string()), failed });
            }
        }
        if let Some(p) = self.proxies.get_mut(&pid) {
            p.branches.push(branch);
        }
    }

    /// §16.6 steps 2, 4 and 8 (Max-Forwards was step 3, done on receipt).
    fn build_forward(core: &EdgeCore, p: &ProxyTx, target: &Target, idx: usize) -> Result<SipMessage, ParseError> {
        let mut m = p.request.clone();
        if let Target::Local { uri: Some(u), .. } = target {
            m.set_request_uri(u.clone())?;
        }
        if p.record_route {
            for rr in Self::record_routes(core, p.source, target, p.request.call_id()).iter().rev() {
                m.prepend_header("Record-Route", rr)?;
            }
        }
        let transport = match target {
            Target::Local { to, .. } => to.transport,
            Target::Node(_) => Transport::Tcp,
        };
        m.push_via(&core.our_via(transport, &format!("{MAGIC_COOKIE}{}.{idx}", p.hash))?)?;
        Ok(m)
    }

    /// Our Record-Route values, top first. Each phone uses the entry facing
    /// it, so a transport change gets two (RFC 5658 double
    /// Record-Route); the node side is reached by Node-ID, not address.
    fn record_routes(core: &EdgeCore, src: Source, target: &Target, call_id: &str) -> Vec<String> {
        let incoming = match src {
            Source::Local(a) => Some(a.transport),
            Source::Node(_) => None,
        };
        let outgoing = match target {
            Target::Local { to, .. } => Some(to.transport),
            Target::Node(_) => None,
        };
        match (incoming, outgoing) {
            (Some(i), Some(o)) if i != o => vec![core.record_route(o, call_id), core.record_route(i, call_id)],
            (Some(t), _) | (None, Some(t)) => vec![core.record_route(t, call_id)],
            (None, None) => vec![core.record_route(Transport::Tcp, call_id)],
        }
    }

    /// §16.7 for a response on branch client `cid`.
    pub(super) fn branch_response(&mut self, core: &mut EdgeCore, now: Instant, cid: ClientTxId, mut resp: SipMessage) {
        if self.cancels.contains(&cid) {
            return;
        }
        let Some(&(pid, bi)) = self.by_client.get(&cid) else { return };
        // §16.7 step 3: remove our Via; a response with none left was ours.
        resp.pop_via();
        let Some(code) = resp.status().filter(|_| resp.top_via().is_some()) else { return };
        let Some(p) = self.proxies.get(&pid) else { return };
        let span = p.span.clone();
        let _guard = span.enter();
        if let Some(Branch { target: Target::Local { to, .. }, .. }) = p.branches.get(bi)
            && code != StatusCode::TRYING
            && code.as_u16() < 300
        {
            let to = *to;
            self.learn_contact(now, &resp, to);
        }
        let Some(p) = self.proxies.get_mut(&pid) else { return };
        let server = p.server;
        if code == StatusCode::TRYING {
            return;
        }
        if code.is_provisional() {
            if p.final_sent {
                return;
            }
            if p.invite {
                // §16.7 step 2: Timer C restarts on every provisional.
                let at = now + core.cfg.timer_c;
                p.timer_c = Some(at);
                self.deadlines.insert((at, Deadline::TimerC(pid)));
            }
            return core.send_response(now, server, resp);
        }
        let invite = p.invite;
        let Some(branch) = p.branches.get_mut(bi) else { return };
        if code.is_success() {
            branch.outcome = Some(Outcome { status: code, response: None, reason: None, failed: false });
            let first = !p.final_sent;
            p.final_sent = true;
            // §16.7 step 9: every 2xx to an INVITE goes upstream.
            if invite || first {
                core.send_response(now, server, resp);
            }
            if first && invite {
                self.cancel_pending(core, now, pid);
            }
            return;
        }
        let failed = matches!(code.as_u16(), 408 | 503);
        branch.outcome = Some(Outcome { status: code, response: Some(resp), reason: None, failed });
        self.distrust_location(pid, bi, code);
        if code.as_u16() >= 600 && invite {
            self.cancel_pending(core, now, pid);
        }
        self.check_complete(core, now, pid);
    }

    /// A branch ended without a response: timeout (408) or transport error.
    pub(super) fn branch_failed(
        &mut self,
        core: &mut EdgeCore,
        now: Instant,
        cid: ClientTxId,
        code: StatusCode,
        reason: Option<&str>,
    ) {
        if self.cancels.contains(&cid) {
            return;
        }
        let Some(&(pid, bi)) = self.by_client.get(&cid) else { return };
        let Some(b) = self.proxies.get_mut(&pid).and_then(|p| p.branches.get_mut(bi)) else { return };
        if b.outcome.is_none() {
            debug!(code = code.as_u16(), "branch failed");
            b.outcome = Some(Outcome { status: code, response: None, reason: reason.map(str::to_owned), failed: true });
            self.distrust_location(pid, bi, StatusCode::SERVICE_UNAVAILABLE);
        }
        self.check_complete(core, now, pid);
    }

    pub(super) fn client_gone(&mut self, core: &mut EdgeCore, now: Instant, cid: ClientTxId) {
        if self.cancels.remove(&cid) {
            return;
        }
        let Some((pid, bi)) = self.by_client.remove(&cid) else { return };
        if let Some(b) = self.proxies.get_mut(&pid).and_then(|p| p.branches.get_mut(bi)) {
            b.client = None;
            if b.outcome.is_none() {
                let reason = Some("Branch ended without an answer".to_owned());
                b.outcome = Some(Outcome { status: StatusCode::REQUEST_TIMEOUT, response: None, reason, failed: true });
            }
        }
        self.check_complete(core, now, pid);
        self.maybe_reap(pid);
    }

    pub(super) fn server_gone(&mut self, sid: ServerTxId) {
        if let Some(pid) = self.by_server.remove(&sid) {
            if let Some(p) = self.proxies.get_mut(&pid) {
                p.server_gone = true;
            }
            self.maybe_reap(pid);
        }
    }

    /// Fails every live branch whose target matches (the runtime reported
    /// it unreachable).
    pub(super) fn fail_branches(&mut self, core: &mut EdgeCore, mut matches: impl FnMut(&Target) -> bool) {
        let mut dead = Vec::new();
        for p in self.proxies.values() {
            for b in &p.branches {
                if b.outcome.is_none()
                    && let Some(cid) = b.client
                    && matches(&b.target)
                {
                    dead.push(cid);
                }
            }
        }
        for cid in dead {
            core.tl.transport_error(TxId::Client(cid));
        }
    }

    /// §16.10: CANCEL for server INVITE `invite` (answered 200 hop by hop).
    pub(super) fn on_cancel(
        &mut self,
        core: &mut EdgeCore,
        now: Instant,
        tx: ServerTxId,
        cancel: &SipMessage,
        invite: Option<ServerTxId>,
    ) {
        let Some(invite) = invite else {
            return core.reply(now, tx, cancel, StatusCode::TRANSACTION_DOES_NOT_EXIST, None, &[]);
        };
        core.reply(now, tx, cancel, StatusCode::OK, None, &[]);
        let Some(&pid) = self.by_server.get(&invite) else { return };
        let Some(p) = self.proxies.get_mut(&pid) else { return };
        if p.final_sent {
            return;
        }
        p.cancelled = true;
        let pending = p.branches.iter().any(|b| b.outcome.is_none());
        if p.fetch.is_some() || !pending {
            return self.generate_final(core, now, pid, StatusCode::REQUEST_TERMINATED, None);
        }
        self.cancel_pending(core, now, pid);
    }

    /// CANCELs every branch still waiting for a final response (§9.1, run by
    /// the transaction layer); a branch silent 64*T1 later counts as 487.
    fn cancel_pending(&mut self, core: &mut EdgeCore, now: Instant, pid: u64) {
        let wait = 64 * core.cfg.transactions.t1;
        let Some(p) = self.proxies.get(&pid) else { return };
        let pending: Vec<(usize, ClientTxId)> = p
            .branches
            .iter()
            .enumerate()
            .filter(|(_, b)| b.outcome.is_none() && !b.cancel_sent)
            .filter_map(|(i, b)| Some((i, b.client?)))
            .collect();
        for (bi, cid) in pending {
            match core.tl.cancel_request(now, cid) {
                Ok(c) => {
                    self.cancels.insert(c);
                    if let Some(b) = self.proxies.get_mut(&pid).and_then(|p| p.branches.get_mut(bi)) {
                        b.cancel_sent = true;
                    }
                    self.deadlines.insert((now + wait, Deadline::CancelWait(pid, bi)));
                }
                Err(e) => debug!(error = %e, "branch not cancelled"),
            }
        }
    }

    pub(super) fn cancel_wait(&mut self, core: &mut EdgeCore, now: Instant, pid: u64, bi: usize) {
        let Some(b) = self.proxies.get_mut(&pid).and_then(|p| p.branches.get_mut(bi)) else { return };
        if b.outcome.is_some() {
            return;
        }
        b.outcome = Some(Outcome {
            status: StatusCode::REQUEST_TERMINATED,
            response: None,
            reason: Some("No answer to CANCEL".to_owned()),
            failed: false,
        });
        if let Some(cid) = b.client {
            // Ends the client transaction the layer would keep forever.
            core.tl.transport_error(TxId::Client(cid));
        }
        self.check_complete(core, now, pid);
    }

    fn arm_timer_c(&mut self, core: &mut EdgeCore, now: Instant, pid: u64) {
        let Some(p) = self.proxies.get_mut(&pid) else { return };
        if p.invite && !p.branches.is_empty() {
            let at = now + core.cfg.timer_c;
            p.timer_c = Some(at);
            self.deadlines.insert((at, Deadline::TimerC(pid)));
        }
    }

    /// §16.6 step 11: Timer C fired — cancel what is still ringing.
    pub(super) fn timer_c(&mut self, core: &mut EdgeCore, now: Instant, pid: u64, at: Instant) {
        let Some(p) = self.proxies.get(&pid) else { return };
        if p.timer_c != Some(at) || p.final_sent {
            return;
        }
        debug!("Timer C fired");
        self.cancel_pending(core, now, pid);
    }

    /// §16.7 step 4: once every branch is final, answer with the best.
    fn check_complete(&mut self, core: &mut EdgeCore, now: Instant, pid: u64) {
        let Some(p) = self.proxies.get(&pid) else { return };
        if p.final_sent || p.fetch.is_some() || p.branches.iter().any(|b| b.outcome.is_none()) {
            return;
        }
        let choice = choose(p);
        match choice {
            Choice::Forward(resp) => {
                let server = p.server;
                if let Some(p) = self.proxies.get_mut(&pid) {
                    p.final_sent = true;
                }
                core.send_response(now, server, *resp);
            }
            Choice::Generate(code, reason) => self.generate_final(core, now, pid, code, reason),
        }
    }

    fn generate_final(
        &mut self,
        core: &mut EdgeCore,
        now: Instant,
        pid: u64,
        code: StatusCode,
        reason: Option<String>,
    ) {
        let Some(p) = self.proxies.get_mut(&pid) else { return };
        p.final_sent = true;
        let (server, req) = (p.server, p.request.clone());
        core.reply(now, server, &req, code, reason.as_deref(), &[]);
        self.maybe_reap(pid);
    }

    fn maybe_reap(&mut self, pid: u64) {
        let Some(p) = self.proxies.get(&pid) else { return };
        if p.server_gone && p.fetch.is_none() && p.branches.iter().all(|b| b.client.is_none()) {
            self.proxies.remove(&pid);
        }
    }

    /// ACK for a 2xx (or any ACK no transaction absorbed): forwarded
    /// statelessly along its Route set (§16.4, §16.6, §16.11).
    pub(super) fn forward_ack(
        &mut self,
        core: &mut EdgeCore,
        reg: &Registrar,
        now: Instant,
        mut req: SipMessage,
        src: Source,
    ) {
        if req.max_forwards() == Some(0) {
            return;
        }
        let hash = core.branch_hash(&req);
        if core.is_loop(&req, &hash) {
            return;
        }
        let target = match self.resolve(core, reg, now, &mut req, src) {
            Ok(Next::Contact(to)) => Target::Local { to, uri: None },
            Ok(Next::Node(n)) => Target::Node(n),
            Ok(Next::Aor(aor)) => match reg.bindings_of(&aor).first() {
                Some(b) => Target::Local { to: b.source, uri: Some(b.contact.uri.clone()) },
                None => return trace!("ACK for an AOR with no binding dropped"),
            },
            Ok(Next::Us) => return,
            Err(r) => return trace!(status = r.status.as_u16(), "ACK dropped"),
        };
        if req.decrement_max_forwards().is_none() {
            return;
        }
        let (to, transport) = match &target {
            Target::Local { to, .. } => (*to, to.transport),
            Target::Node(n) => (core.node_addr(*n), Transport::Tcp),
        };
        if let Target::Local { uri: Some(u), .. } = &target
            && req.set_request_uri(u.clone()).is_err()
        {
            return;
        }
        let Ok(via) = core.our_via(transport, &format!("{MAGIC_COOKIE}{hash}.ack")) else { return };
        if req.push_via(&via).is_err() {
            return;
        }
        core.tl.send_stateless(&req, to);
        match target {
            Target::Local { .. } => core.counters.requests_forwarded_local += 1,
            Target::Node(_) => core.counters.requests_forwarded_node += 1,
        }
    }
}

/// §16.7 step 6: a 6xx wins; if every branch failed on an AOR lookup the
/// callee is unreachable (480, RFC 7904 §4); otherwise the lowest class,
/// real answers before synthesised ones, first come first; a chosen 503
/// becomes 500 so the caller does not back off from this proxy.
fn choose(p: &ProxyTx) -> Choice {
    let outs: Vec<&Outcome> = p.branches.iter().filter_map(|b| b.outcome.as_ref()).collect();
    let six = outs.iter().find(|o| o.status.as_u16() >= 600 && o.response.is_some());
    if p.aor_lookup && six.is_none() && outs.iter().all(|o| o.failed) {
        return Choice::Generate(StatusCode::TEMPORARILY_UNAVAILABLE, None);
    }
    let best = six.or_else(|| outs.iter().min_by_key(|o| (o.status.as_u16() / 100, o.response.is_none())));
    match best {
        Some(o) if o.status == StatusCode::SERVICE_UNAVAILABLE => Choice::Generate(StatusCode::SERVER_ERROR, None),
        Some(Outcome { response: Some(r), .. }) => Choice::Forward(Box::new(r.clone())),
        Some(o) => Choice::Generate(o.status, o.reason.clone()),
        None => Choice::Generate(status(480), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(code: u16, real: bool, failed: bool) -> Option<Outcome> {
        let resp = real.then(|| {
            let text = format!(
                "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\nFrom: <sip:a@x>;tag=1\r\n\
                 To: <sip:b@x>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            );
            SipMessage::parse(text.as_bytes()).unwrap()
        });
        Some(Outcome { status: StatusCode::new(code).unwrap(), response: resp, reason: None, failed })
    }

    fn proxy(aor_lookup: bool, outs: Vec<Option<Outcome>>) -> ProxyTx {
        let req = SipMessage::parse(
            b"INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\nFrom: <sip:a@x>;tag=1\r\n\
              To: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        let addr = TransportAddr { transport: Transport::Udp, addr: "192.0.2.1:5060".parse().unwrap(), flow: None };
        ProxyTx {
            server: crate::sip::transaction::TransactionLayer::new(Default::default())
                .handle_request(Instant::now(), &req, addr)
                .new_id(),
            request: req,
            source: Source::Local(addr),
            hash: String::new(),
            record_route: true,
            invite: true,
            aor_lookup,
            branches: outs
                .into_iter()
                .map(|outcome| Branch {
                    target: Target::Node(NodeRef::from_u128(1)),
                    client: None,
                    outcome,
                    cancel_sent: false,
                })
                .collect(),
            fetch: None,
            final_sent: false,
            cancelled: false,
            server_gone: false,
            timer_c: None,
            looked_up: None,
            span: Span::none(),
        }
    }

    trait NewId {
        fn new_id(self) -> ServerTxId;
    }
    impl NewId for crate::sip::transaction::RequestDisposition {
        fn new_id(self) -> ServerTxId {
            match self {
                crate::sip::transaction::RequestDisposition::New(id) => id,
                other => panic!("{other:?}"),
            }
        }
    }

    fn code(c: Choice) -> u16 {
        match c {
            Choice::Forward(r) => r.status().unwrap().as_u16(),
            Choice::Generate(s, _) => s.as_u16(),
        }
    }

    #[test]
    fn best_response_selection() {
        // Lowest class wins; real before synthesised.
        assert_eq!(code(choose(&proxy(false, vec![outcome(486, true, false), outcome(302, true, false)]))), 302);
        assert_eq!(code(choose(&proxy(false, vec![outcome(408, false, true), outcome(404, true, false)]))), 404);
        // 6xx beats everything.
        assert_eq!(code(choose(&proxy(false, vec![outcome(302, true, false), outcome(603, true, false)]))), 603);
        // A chosen 503 becomes 500.
        assert_eq!(code(choose(&proxy(false, vec![outcome(503, true, true)]))), 500);
        // Every serving node failed → 480; an answer among them is used.
        assert_eq!(code(choose(&proxy(true, vec![outcome(503, true, true), outcome(408, false, true)]))), 480);
        assert_eq!(code(choose(&proxy(true, vec![outcome(503, true, true), outcome(486, true, false)]))), 486);
    }

    fn edge_core() -> EdgeCore {
        let cfg = crate::sip::edge::EdgeConfig::new(
            NodeRef::from_u128(7),
            "chordphone.test",
            ("192.0.2.1".into(), 5060),
            [3; 32],
        );
        EdgeCore::new(cfg).unwrap()
    }

    fn invite_to(user: &str, n: u32) -> SipMessage {
        let text = format!(
            "INVITE sip:{user}@chordphone.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bKi{n}\r\n\
             Max-Forwards: 69\r\nFrom: <sip:alice@chordphone.test>;tag=a{n}\r\nTo: <sip:{user}@chordphone.test>\r\n\
             Call-ID: call-{n}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        SipMessage::parse(text.as_bytes()).unwrap()
    }

    /// Starts a fetch for `user` as the edge would for an AOR not registered here.
    fn fetch(core: &mut EdgeCore, proxy: &mut Proxy, now: Instant, user: &str, n: u32) {
        let phone = TransportAddr { transport: Transport::Udp, addr: "192.0.2.50:5060".parse().unwrap(), flow: None };
        let req = invite_to(user, n);
        let crate::sip::transaction::RequestDisposition::New(id) = core.tl.handle_request(now, &req, phone) else {
            panic!("not a new transaction")
        };
        let aor = format!("{user}@chordphone.test");
        proxy.start_fetch(core, now, id, req, Source::Local(phone), aor, format!("h{n}"), Span::none());
    }

    /// The requests sent to other nodes and the responses sent to phones.
    fn drain(core: &mut EdgeCore) -> (Vec<(NodeRef, SipMessage)>, Vec<SipMessage>) {
        while let Some(t) = core.tl.poll_transmit() {
            core.transmit(t);
        }
        let (mut nodes, mut phones) = (Vec::new(), Vec::new());
        for out in core.out.drain(..) {
            match out {
                EdgeOutput::SendNode { node, bytes } => nodes.push((node, SipMessage::parse(&bytes).unwrap())),
                EdgeOutput::SendLocal { bytes, .. } => phones.push(SipMessage::parse(&bytes).unwrap()),
                other => panic!("unexpected {other:?}"),
            }
        }
        (nodes, phones)
    }

    /// RFC 7904 §4 on the proxy alone: Fetch, fork to the serving node (our
    /// own stale entry skipped), reuse the cached location, 404 for an AOR
    /// nobody registered, 503 when the overlay does not answer.
    #[test]
    fn fetch_fork_cache_and_failures() {
        let (mut core, mut proxy, now) = (edge_core(), Proxy::new(Duration::from_secs(5)), Instant::now());
        let serving = NodeRef::from_u128(9);
        fetch(&mut core, &mut proxy, now, "bob", 1);
        let Some(EdgeOutput::FetchRegistration { op, aor }) = core.out.pop_front() else { panic!() };
        assert_eq!(aor, "bob@chordphone.test");
        assert!(proxy.owns(op));
        let located = OverlayResult::Located(vec![core.cfg.node_id, serving]);
        proxy.handle_overlay(&mut core, now, op, located);
        let (nodes, phones) = drain(&mut core);
        assert!(phones.is_empty());
        assert_eq!(nodes.len(), 1);
        let (node, fwd) = &nodes[0];
        assert_eq!(*node, serving);
        assert_eq!(fwd.top_via().and_then(crate::sip::message::Via::branch), Some("z9hG4bKh1.0"));
        assert!(fwd.header("Record-Route").is_some_and(|rr| rr.contains(&core.cfg.node_id.to_hex())));
        assert_eq!(core.counters.requests_forwarded_node, 1);

        // Within the cache TTL the same AOR is forked without a Fetch.
        fetch(&mut core, &mut proxy, now, "bob", 2);
        let (nodes, _) = drain(&mut core);
        assert_eq!(nodes.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![serving]);

        // Nobody registered carol: 404.
        fetch(&mut core, &mut proxy, now, "carol", 3);
        let Some(EdgeOutput::FetchRegistration { op, .. }) = core.out.pop_front() else { panic!() };
        proxy.handle_overlay(&mut core, now, op, OverlayResult::Located(Vec::new()));
        let (_, phones) = drain(&mut core);
        assert_eq!(phones.iter().map(|m| m.status().unwrap().as_u16()).collect::<Vec<_>>(), vec![404]);

        // The overlay never answers for dave: 503 at the deadline.
        fetch(&mut core, &mut proxy, now, "dave", 4);
        let Some(EdgeOutput::FetchRegistration { op, .. }) = core.out.pop_front() else { panic!() };
        let deadline = now + core.cfg.overlay_timeout;
        proxy.handle_timeout(&mut core, deadline);
        assert!(!proxy.owns(op));
        let (_, phones) = drain(&mut core);
        let busy = phones.iter().find(|m| m.call_id() == "call-4").unwrap();
        assert_eq!(busy.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(busy.reason(), Some("overlay fetch failed: timed out"));
    }
}
