//! The stateful proxy of one node (RFC 3261 §16): a proxy
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

use tracing::{Span, debug};

use super::account::NodeRef;
use super::edge::{EdgeCore, EdgeOutput, OverlayOpId, OverlayResult, Source};
use super::location_cache::LocationCache;
use super::message::{Method, SipMessage, StatusCode, Uri};
use super::transaction::{ClientTxId, ServerTxId, TransportAddr, TxId};

/// AORs whose serving nodes the proxy remembers at most.
const LOCATION_CACHE_ENTRIES: usize = 100_000;

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

mod forward;
mod response;
mod route;

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

    fn maybe_reap(&mut self, pid: u64) {
        let Some(p) = self.proxies.get(&pid) else { return };
        if p.server_gone && p.fetch.is_none() && p.branches.iter().all(|b| b.client.is_none()) {
            self.proxies.remove(&pid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::transaction::Transport;

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
