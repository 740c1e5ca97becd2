//! The SIP edge of one node (sans-IO): the registrar and stateful proxy that
//! lets unmodified phones register here and reach users registered on any
//! node of the overlay.
//!
//! Implements RFC 3261 §10.3 (registrar, through [`super::registrar`]),
//! §16 (stateful proxy: validation §16.3, loose routing §16.4, forking and
//! response selection §16.6–§16.7, CANCEL §16.10, Record-Route §16.6 step 4
//! and RFC 5658 double Record-Route when the transport changes), §22
//! (digest, 401/407) and the RFC 7904 §3–§4 SIP usage: a registration is an
//! overlay SIP-REGISTRATION record under the AOR pointing at this node, and a
//! call to an AOR not registered here is found with a Fetch and sent to the
//! serving node over the inter-node SIP connection (§4: AppAttach, then SIP).
//! RFC 3581 and RFC 5626 flows: requests to a phone go to the address and
//! stream connection its REGISTER came from.
//!
//! The runtime feeds datagrams/frames ([`SipEdge::handle_local`],
//! [`SipEdge::handle_node`]), overlay answers ([`SipEdge::handle_overlay`])
//! and time, and drains [`SipEdge::poll_output`].
//!
//! Not done: Path (RFC 3327), GRUU (RFC 5627) minting, redirect (3xx)
//! recursion, `SipRegistration::Uri` indirection, 401/407 aggregation from
//! several branches (§16.7 step 7), Proxy-Require checks (§16.3 step 5),
//! DNS-based next hops (a Route naming anything but a chordphone node is
//! refused with 404), stateless forwarding of stray responses (§16.11:
//! dropped and counted).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tracing::{debug, info_span, trace, warn};

use super::account::NodeRef;
use super::account::SipUser;
use super::digest::{self, NonceKeeper};
use super::message::{Host, Method, ParseError, SipMessage, SipUri, StatusCode, Uri, Via, expand_compact};
use super::proxy::{ProxyTx, Target};
use super::registrar::{self, Auth, Binding, Plan, Registrar, Reject, status};
use super::transaction::{
    MAGIC_COOKIE, RequestDisposition, ResponseDisposition, ServerTxId, TransactionConfig, TransactionLayer, Transport,
    TransportAddr, TxEvent, TxId,
};

/// AORs whose serving nodes the edge remembers at most.
const LOCATION_CACHE_ENTRIES: usize = 100_000;

/// Configuration of one node's SIP edge.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub node_id: NodeRef,
    /// The domains whose AORs this edge registers (`user@domain`); the
    /// overlay is one SIP domain, so every node normally lists the same.
    pub domains: Vec<String>,
    /// The digest realm of challenges; accounts must have been created with it.
    pub realm: String,
    /// Host and port phones reach this node at: Via sent-by and Record-Route.
    pub advertise: (String, u16),
    /// The port of the TLS listener, used in Via/Record-Route facing TLS
    /// phones (defaults to `advertise.1`).
    pub advertise_tls_port: Option<u16>,
    /// Shortest accepted registration (423 below it, §10.3 step 7).
    pub min_expires: u32,
    /// Longest granted registration; longer requests are shortened.
    pub max_expires: u32,
    /// Digest nonce HMAC key; keep it across restarts.
    pub nonce_secret: [u8; 32],
    /// Timers and the transaction cap (503 + Retry-After beyond it).
    pub transactions: TransactionConfig,
    /// Proxy Timer C (§16.6 step 11): an INVITE branch with no final answer
    /// this long after its last provisional is cancelled.
    pub timer_c: Duration,
    /// How long an overlay Store/Fetch may take before it counts as failed.
    pub overlay_timeout: Duration,
    /// Offer the MD5 challenge before the SHA-256 one. RFC 8760 §2.4 puts
    /// the preferred (SHA-256) first, but clients that read only the first
    /// challenge and know only MD5 (sipp, older phones) then fail.
    pub md5_first: bool,
    /// Offer only the MD5 challenge: for clients (baresip 1.0) that give up
    /// on a 401 carrying any algorithm they do not know.
    pub md5_only: bool,
    /// How long a fetched AOR's serving nodes are reused without a new
    /// overlay Fetch (forgotten at the first failure there); zero disables.
    pub location_cache: Duration,
}

impl EdgeConfig {
    /// Defaults for `domain` (also the realm): registrations 60..=3600 s,
    /// Timer C 180 s, overlay timeout 20 s.
    pub fn new(node_id: NodeRef, domain: &str, advertise: (String, u16), nonce_secret: [u8; 32]) -> EdgeConfig {
        EdgeConfig {
            node_id,
            domains: vec![domain.to_owned()],
            realm: domain.to_owned(),
            advertise,
            advertise_tls_port: None,
            min_expires: 60,
            max_expires: 3600,
            nonce_secret,
            transactions: TransactionConfig::default(),
            timer_c: Duration::from_secs(180),
            overlay_timeout: Duration::from_secs(20),
            md5_first: false,
            md5_only: false,
            location_cache: Duration::from_secs(5),
        }
    }
}

/// A configuration the edge cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EdgeConfigError {
    #[error("no SIP domain configured")]
    NoDomain,
    #[error("advertised host `{0}` is not a host name or IP address")]
    BadAdvertiseHost(String),
    #[error("min_expires {min} is above max_expires {max}")]
    BadExpires { min: u32, max: u32 },
}

/// Names an overlay operation the edge asked for; it comes back with the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OverlayOpId(pub u64);

impl fmt::Display for OverlayOpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op{}", self.0)
    }
}

/// The answer to an overlay operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverlayResult {
    /// A Store (or a store with exists=false) succeeded.
    Stored,
    /// Fetch result: the nodes serving the AOR's live registrations, in
    /// the order the overlay returned them (empty: nobody registered it).
    /// The usage (RFC 7904 §3.2) has already resolved each registration's
    /// destination list to its serving node.
    Located(Vec<NodeRef>),
    Failed(String),
}

/// What the edge asks the runtime to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeOutput {
    /// Send to a phone; for stream transports `to.flow` is the connection.
    SendLocal { to: TransportAddr, bytes: Vec<u8> },
    /// Send over the SIP connection to another node (AppAttach first if none).
    SendNode { node: NodeRef, bytes: Vec<u8> },
    /// Store SIP-REGISTRATION Route {key: this node, destinations: [this
    /// node]} under `aor` with lifetime `expires_s` (RFC 7904 §3).
    StoreRegistration { op: OverlayOpId, aor: String, expires_s: u32 },
    /// Store this node's entry under `aor` with exists=false.
    RemoveRegistration { op: OverlayOpId, aor: String },
    /// Fetch every SIP-REGISTRATION entry under `aor`.
    FetchRegistration { op: OverlayOpId, aor: String },
}

/// Counters for metrics (and, serialised, `chordphone status --json`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EdgeCounters {
    /// REGISTERs answered 200.
    pub register_ok: u64,
    /// REGISTERs refused (403, 4xx, 500 after a failed overlay store); 401
    /// challenges are not failures.
    pub register_fail: u64,
    /// Requests (including stateless ACKs) sent to phones.
    pub requests_forwarded_local: u64,
    /// Requests (including stateless ACKs) sent to other nodes.
    pub requests_forwarded_node: u64,
    /// Responses the edge sent upstream, relayed or generated.
    pub responses: u64,
    /// Messages dropped: unparseable, and nothing to answer a 400 to.
    pub malformed_dropped: u64,
    /// Unparseable requests answered with 400.
    pub malformed_rejected: u64,
    /// 401/407 challenges sent.
    pub auth_challenges: u64,
    /// Responses matching no transaction, dropped (§16.11 not done).
    pub stray_responses: u64,
}

/// Where a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    Local(TransportAddr),
    Node(NodeRef),
}

/// Work waiting for the overlay.
#[derive(Debug)]
pub(super) enum PendingOp {
    /// A REGISTER held until its record is stored (or removed).
    Register { server: ServerTxId, request: Box<SipMessage>, plan: Plan },
    /// The last binding expired or its flow closed.
    Unregister { aor: String },
    /// A registration stored again after a failure elsewhere.
    Restore { aor: String },
    /// A proxy waiting for the AOR's registrations.
    Fetch { proxy: u64 },
}

/// Lazily checked deadlines besides the transaction layer's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Deadline {
    TimerC(u64),
    CancelWait(u64, usize),
    Op(OverlayOpId),
}

/// Where the next hop of a request is (§16.4, §16.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Next {
    /// Addressed to this node itself (e.g. OPTIONS keep-alives).
    Us,
    /// A phone's contact known here.
    Contact(TransportAddr),
    /// The next Route names another node.
    Node(NodeRef),
    /// An address of record.
    Aor(String),
}

/// Learned dialog targets: phones that sent a Contact in a dialog-creating
/// request or answer without being registered with that Contact.
#[derive(Debug, Clone)]
pub(super) struct Learned {
    pub to: TransportAddr,
    pub seen: Instant,
}

const LEARNED_CAP: usize = 4096;
const LEARNED_TTL: Duration = Duration::from_secs(6 * 3600);

/// The sentinel address standing for "the SIP connection to node N" inside
/// the transaction layer; `flow` is the node's index in `node_flows`.
const NODE_ADDR: SocketAddr = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0);

/// The registrar and stateful proxy of one node. See the module doc.
#[derive(Debug)]
pub struct SipEdge {
    pub(super) cfg: EdgeConfig,
    pub(super) host: Host,
    pub(super) tl: TransactionLayer,
    pub(super) nonces: NonceKeeper,
    pub(super) reg: Registrar,
    pub(super) proxies: BTreeMap<u64, ProxyTx>,
    pub(super) by_server: BTreeMap<ServerTxId, u64>,
    pub(super) by_client: BTreeMap<super::transaction::ClientTxId, (u64, usize)>,
    pub(super) cancels: BTreeSet<super::transaction::ClientTxId>,
    pub(super) ops: BTreeMap<OverlayOpId, PendingOp>,
    pub(super) deadlines: BTreeSet<(Instant, Deadline)>,
    node_flows: BTreeMap<NodeRef, u64>,
    flow_nodes: BTreeMap<u64, NodeRef>,
    pub(super) learned: BTreeMap<String, Learned>,
    pub(super) out: VecDeque<EdgeOutput>,
    pub(super) counters: EdgeCounters,
    pub(super) locations: super::location_cache::LocationCache,
    /// Keys the Record-Route token that lets in-dialog requests through
    /// without a new challenge (derived from the nonce secret).
    dialog_key: ring::hmac::Key,
    next_id: u64,
}

impl SipEdge {
    /// An edge with no accounts and no bindings.
    pub fn new(cfg: EdgeConfig) -> Result<SipEdge, EdgeConfigError> {
        if cfg.domains.is_empty() {
            return Err(EdgeConfigError::NoDomain);
        }
        if cfg.min_expires > cfg.max_expires {
            return Err(EdgeConfigError::BadExpires { min: cfg.min_expires, max: cfg.max_expires });
        }
        let host =
            Host::parse(&cfg.advertise.0).map_err(|_| EdgeConfigError::BadAdvertiseHost(cfg.advertise.0.clone()))?;
        Ok(SipEdge {
            host,
            tl: TransactionLayer::new(cfg.transactions.clone()),
            nonces: NonceKeeper::new(cfg.nonce_secret),
            dialog_key: {
                let base = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &cfg.nonce_secret);
                let derived = ring::hmac::sign(&base, b"chordphone record-route token");
                ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref())
            },
            reg: Registrar::default(),
            proxies: BTreeMap::new(),
            by_server: BTreeMap::new(),
            by_client: BTreeMap::new(),
            cancels: BTreeSet::new(),
            ops: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            node_flows: BTreeMap::new(),
            flow_nodes: BTreeMap::new(),
            learned: BTreeMap::new(),
            out: VecDeque::new(),
            counters: EdgeCounters::default(),
            locations: super::location_cache::LocationCache::new(cfg.location_cache, LOCATION_CACHE_ENTRIES),
            next_id: 0,
            cfg,
        })
    }

    /// Replaces the account table.
    pub fn set_users(&mut self, users: Vec<SipUser>) {
        self.reg.set_users(users);
    }

    /// Adds or replaces one account; false if its AOR is not `user@host`.
    pub fn add_user(&mut self, user: SipUser) -> bool {
        self.reg.add_user(user)
    }

    /// Removes an account (its bindings stay until they expire).
    pub fn remove_user(&mut self, aor: &str) -> bool {
        self.reg.remove_user(aor)
    }

    /// Makes every digest nonce issued before `wall_ms` stale; call once at
    /// start-up (nonce counts are not persisted, see [`NonceKeeper`]).
    pub fn retire_nonces_before(&mut self, wall_ms: u64) {
        self.nonces.retire_before(wall_ms);
    }

    /// The bindings of `aor` (`user@host`).
    pub fn bindings(&self, aor: &str) -> &[Binding] {
        registrar::normalize_aor(aor).map_or(&[], |a| self.reg.bindings(&a))
    }

    /// The counters.
    pub fn counters(&self) -> EdgeCounters {
        self.counters
    }

    /// A datagram or deframed stream message from a phone.
    pub fn handle_local(&mut self, now: Instant, wall_ms: u64, bytes: &[u8], from: TransportAddr) {
        match SipMessage::parse(bytes) {
            // Keep-alive CRLFs that reached us (RFC 5626 §3.5.1).
            Err(ParseError::Empty) => {}
            Err(e) => self.malformed(bytes, &e, Source::Local(from)),
            Ok(mut msg) if msg.is_request() => {
                // §18.2.1, RFC 3581 §4: record where it really came from.
                if let Err(e) = msg.stamp_received(from.addr) {
                    debug!(error = %e, "cannot stamp received");
                }
                self.on_request(now, wall_ms, msg, Source::Local(from));
            }
            Ok(msg) => self.on_response(now, msg, Source::Local(from)),
        }
        self.settle(now);
    }

    /// A message from another node over the inter-node SIP connection
    /// (authenticated by node certificates: requests are trusted).
    pub fn handle_node(&mut self, now: Instant, wall_ms: u64, from: NodeRef, bytes: &[u8]) {
        match SipMessage::parse(bytes) {
            Err(ParseError::Empty) => {}
            Err(e) => self.malformed(bytes, &e, Source::Node(from)),
            Ok(msg) if msg.is_request() => self.on_request(now, wall_ms, msg, Source::Node(from)),
            Ok(msg) => self.on_response(now, msg, Source::Node(from)),
        }
        self.settle(now);
    }

    /// The answer to an overlay operation this edge asked for.
    pub fn handle_overlay(&mut self, now: Instant, wall_ms: u64, op: OverlayOpId, result: OverlayResult) {
        let _ = wall_ms;
        let Some(pending) = self.ops.remove(&op) else {
            trace!(%op, "answer to an unknown or timed-out overlay operation");
            return;
        };
        match pending {
            PendingOp::Register { server, request, plan } => self.register_done(now, server, &request, &plan, result),
            PendingOp::Unregister { aor } => match result {
                OverlayResult::Failed(e) => {
                    warn!(%aor, error = %e, "overlay remove failed; the record expires on its own")
                }
                _ => debug!(%aor, "registration removed from the overlay"),
            },
            PendingOp::Restore { aor } => match result {
                OverlayResult::Failed(e) => warn!(%aor, error = %e, "registration not restored"),
                _ => debug!(%aor, "registration restored in the overlay"),
            },
            PendingOp::Fetch { proxy } => self.fetched(now, proxy, result),
        }
        self.settle(now);
    }

    /// The runtime could not reach `node` (AppAttach or send failed): its
    /// branches fail as if it answered 503 (RFC 7904 §4 then yields 480).
    pub fn handle_node_unreachable(&mut self, now: Instant, wall_ms: u64, node: NodeRef) {
        let _ = wall_ms;
        self.fail_branches(|t| *t == Target::Node(node));
        self.settle(now);
    }

    /// The runtime could not send to a phone (e.g. its stream flow is gone).
    pub fn handle_local_unreachable(&mut self, now: Instant, wall_ms: u64, to: TransportAddr) {
        let _ = wall_ms;
        self.fail_branches(|t| matches!(t, Target::Local { to: a, .. } if *a == to));
        self.settle(now);
    }

    /// A phone's stream connection closed (RFC 5626 §5.2): bindings that
    /// use it are removed.
    pub fn handle_flow_closed(&mut self, now: Instant, wall_ms: u64, flow: u64) {
        let _ = wall_ms;
        for aor in self.reg.flow_closed(flow) {
            self.unregister(now, aor);
        }
        self.settle(now);
    }

    /// Fires due timers.
    pub fn handle_timeout(&mut self, now: Instant, wall_ms: u64) {
        let _ = wall_ms;
        self.tl.handle_timeout(now);
        for aor in self.reg.expire(now) {
            debug!(%aor, "last binding expired");
            self.unregister(now, aor);
        }
        while let Some(&(at, d)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            match d {
                Deadline::TimerC(pid) => self.timer_c(now, pid, at),
                Deadline::CancelWait(pid, b) => self.cancel_wait(now, pid, b),
                Deadline::Op(op) => {
                    if self.ops.contains_key(&op) {
                        self.handle_overlay(now, wall_ms, op, OverlayResult::Failed("timed out".into()));
                    }
                }
            }
        }
        self.settle(now);
    }

    /// When [`SipEdge::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.tl.poll_timeout(), self.reg.next_expiry(), self.deadlines.first().map(|(at, _)| *at)]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next thing for the runtime to do; drain until `None`.
    pub fn poll_output(&mut self) -> Option<EdgeOutput> {
        self.out.pop_front()
    }

    // ---- requests

    fn on_request(&mut self, now: Instant, wall_ms: u64, req: SipMessage, src: Source) {
        let method = req.method().cloned().unwrap_or(Method::Other(String::new()));
        let span = info_span!("sip", method = %method, call_id = %req.call_id());
        let _guard = span.enter();
        let from = self.addr_of(src);
        match self.tl.handle_request(now, &req, from) {
            RequestDisposition::New(id) => self.new_request(now, wall_ms, id, req, src, span.clone()),
            RequestDisposition::Cancel { tx, invite } => self.on_cancel(now, tx, &req, invite),
            RequestDisposition::Ack { .. } => self.forward_ack(now, req, src),
            RequestDisposition::Retransmission | RequestDisposition::AckAbsorbed => {}
            RequestDisposition::Overloaded => {
                debug!("transaction cap reached: 503");
                self.counters.responses += 1;
            }
            RequestDisposition::Invalid(why) => {
                debug!(why, "request dropped");
                self.counters.malformed_dropped += 1;
            }
        }
    }

    /// §16.3 validation, then the registrar or the proxy.
    fn new_request(
        &mut self,
        now: Instant,
        wall_ms: u64,
        id: ServerTxId,
        mut req: SipMessage,
        src: Source,
        span: tracing::Span,
    ) {
        // §16.3 step 2 / §8.2.2.1: only SIP URIs are routed here.
        if !matches!(req.request_uri(), Some(Uri::Sip(_))) {
            return self.reply(now, id, &req, status(416), None, &[]);
        }
        if req.method() == Some(&Method::Register) {
            return match src {
                Source::Local(from) => self.register(now, wall_ms, id, &req, from),
                Source::Node(_) => self.reply(now, id, &req, status(403), Some("REGISTER is not relayed"), &[]),
            };
        }
        // §16.3 step 3.
        if req.max_forwards() == Some(0) {
            return self.reply(now, id, &req, StatusCode::TOO_MANY_HOPS, None, &[]);
        }
        // §16.3 step 4: our Via with the branch we would compute again.
        let hash = self.branch_hash(&req);
        if self.is_loop(&req, &hash) {
            return self.reply(now, id, &req, StatusCode::LOOP_DETECTED, None, &[]);
        }
        let in_dialog = req.to().tag().is_some();
        let vouched = in_dialog && matches!(src, Source::Local(_)) && self.dialog_vouched(&req);
        let next = match self.resolve(now, &mut req, src) {
            Ok(n) => n,
            Err(r) => return self.reject(now, id, &req, r),
        };
        if let Source::Local(from) = src {
            // §22.3: out-of-dialog requests and anything aimed at an AOR
            // must come from an authenticated user in From. In-dialog
            // requests that carry our Record-Route token are not
            // challenged again; other in-dialog requests are.
            let needs_auth = match &next {
                Next::Us => false,
                Next::Aor(_) => true,
                Next::Contact(_) | Next::Node(_) => !vouched,
            };
            if needs_auth && let Err(r) = self.proxy_auth(wall_ms, &mut req) {
                return self.reject(now, id, &req, r);
            }
            self.learn_contact(now, &req, from);
        }
        if next != Next::Us && req.decrement_max_forwards().is_none() {
            return self.reply(now, id, &req, StatusCode::TOO_MANY_HOPS, None, &[]);
        }
        let invite = req.method() == Some(&Method::Invite);
        let record_route = !in_dialog;
        let targets = match next {
            Next::Us => return self.answer_ourselves(now, id, &req),
            Next::Contact(to) => vec![Target::Local { to, uri: None }],
            Next::Node(node) => vec![Target::Node(node)],
            Next::Aor(aor) => {
                let local: Vec<Target> = self
                    .reg
                    .bindings(&aor)
                    .iter()
                    .map(|b| Target::Local { to: b.source, uri: Some(b.contact.uri.clone()) })
                    .collect();
                if local.is_empty() {
                    if let Source::Node(_) = src {
                        // RFC 7904 §4: the record named us but the phone is
                        // gone (stale record); tell the caller to retry later.
                        let why = Some("No binding here (stale registration)");
                        return self.reply(now, id, &req, StatusCode::TEMPORARILY_UNAVAILABLE, why, &[]);
                    }
                    if invite {
                        self.reply(now, id, &req, StatusCode::TRYING, None, &[]);
                    }
                    return self.start_fetch(now, id, req, src, aor, hash, span);
                }
                local
            }
        };
        // §16.2: 100 Trying at once for an INVITE we are going to proxy.
        if invite {
            self.reply(now, id, &req, StatusCode::TRYING, None, &[]);
        }
        self.start_proxy(now, id, req, src, hash, record_route, targets, span);
    }

    /// §16.4 and §16.5: strips Routes naming this node and says where the
    /// request goes next.
    pub(super) fn resolve(&self, now: Instant, req: &mut SipMessage, src: Source) -> Result<Next, Reject> {
        let bad_route = |e: ParseError| Reject::new(400, Some(e.to_string()));
        let mut routes = req.routes().map_err(bad_route)?;
        // §16.4: a strict router put our Record-Route into the Request-URI;
        // the real one is the last Route.
        let ruri_is_us = req.request_uri().and_then(Uri::as_sip).is_some_and(|u| self.names_us_by_id(u));
        if ruri_is_us && let Some(last) = routes.pop() {
            req.set_request_uri(last.uri).map_err(bad_route)?;
            req.remove_header("Route").map_err(bad_route)?;
            for r in &routes {
                req.add_header("Route", &r.to_string()).map_err(bad_route)?;
            }
        }
        while req.routes().map_err(bad_route)?.first().and_then(|r| r.uri.as_sip()).is_some_and(|u| self.names_us(u)) {
            req.pop_route().map_err(bad_route)?;
        }
        if let Some(first) = req.routes().map_err(bad_route)?.first() {
            return match first.uri.as_sip().and_then(node_of) {
                Some(node) if node != self.cfg.node_id => Ok(Next::Node(node)),
                _ => Err(Reject::new(404, Some("Route names an unknown next hop".into()))),
            };
        }
        let Some(Uri::Sip(ruri)) = req.request_uri() else {
            return Err(Reject::new(416, None));
        };
        if let Some(to) = self.contact_target(now, req.request_uri()) {
            return Ok(Next::Contact(to));
        }
        match (registrar::aor_of(ruri), self.is_our_host(&ruri.host, ruri.port)) {
            (None, true) => Ok(Next::Us),
            // A node forwards only AORs it found in the overlay; its domain
            // list is trusted.
            (Some(aor), _) if self.is_our_domain(&ruri.host) || matches!(src, Source::Node(_)) => Ok(Next::Aor(aor)),
            (Some(aor), true) => Ok(Next::Aor(aor)),
            _ => Err(Reject::new(404, Some("Domain not served here".into()))),
        }
    }

    /// Where a phone's contact URI is reachable: a binding's source, else a
    /// contact learned from a dialog.
    fn contact_target(&self, now: Instant, uri: Option<&Uri>) -> Option<TransportAddr> {
        let uri = uri?;
        if let Some(b) = self.reg.by_contact(uri) {
            return Some(b.source);
        }
        let l = self.learned.get(&registrar::contact_key(uri))?;
        (now.saturating_duration_since(l.seen) < LEARNED_TTL).then_some(l.to)
    }

    /// Proxy-Authorization (§22.3) for a request from a local phone; on
    /// success our credentials are removed before forwarding.
    fn proxy_auth(&mut self, wall_ms: u64, req: &mut SipMessage) -> Result<(), Reject> {
        let Some(from) = req.from().uri.as_sip() else {
            return Err(Reject::new(403, Some("From is not a SIP URI".into())));
        };
        let host = match &from.host {
            Host::Name(n) => n.to_ascii_lowercase(),
            other => other.to_string(),
        };
        let from_aor = registrar::aor_of(from);
        let realm = self.cfg.realm.clone();
        match self.reg.authorize(&mut self.nonces, req, "Proxy-Authorization", &realm, &host, wall_ms) {
            Auth::Ok(aor) if Some(&aor) == from_aor.as_ref() => {
                let keep: Vec<String> = req
                    .headers("Proxy-Authorization")
                    .filter(|v| !digest::parse_credentials(v).is_ok_and(|c| c.realm == realm))
                    .map(str::to_owned)
                    .collect();
                let fix = |e: ParseError| Reject::new(500, Some(e.to_string()));
                req.remove_header("Proxy-Authorization").map_err(fix)?;
                for v in keep {
                    req.add_header("Proxy-Authorization", &v).map_err(fix)?;
                }
                Ok(())
            }
            Auth::Ok(_) => Err(Reject::new(403, Some("From does not match the authenticated user".into()))),
            Auth::Challenge { stale } => Err(self.challenge(407, stale, wall_ms)),
            Auth::Forbidden => Err(Reject::new(403, None)),
            Auth::Malformed(e) => Err(Reject::new(400, Some(format!("Malformed Proxy-Authorization: {e}")))),
        }
    }

    pub(super) fn challenge(&mut self, code: u16, stale: bool, wall_ms: u64) -> Reject {
        let nonce = self.nonces.issue(wall_ms);
        let name = if code == 401 { "WWW-Authenticate" } else { "Proxy-Authenticate" };
        let mut r = Reject::new(code, None);
        let mut offered = digest::challenges(&self.cfg.realm, &nonce, stale);
        if self.cfg.md5_only {
            offered.retain(|c| !c.contains("SHA-256"));
        } else if self.cfg.md5_first {
            offered.reverse();
        }
        r.headers = offered.into_iter().map(|c| (name, c)).collect();
        self.counters.auth_challenges += 1;
        r
    }

    /// OPTIONS to the node itself (keep-alive probes) → 200; any other
    /// method to the registrar domain → 405.
    fn answer_ourselves(&mut self, now: Instant, id: ServerTxId, req: &SipMessage) {
        let allow = ("Allow", "REGISTER, OPTIONS, INVITE, ACK, BYE, CANCEL, MESSAGE, SUBSCRIBE, NOTIFY".to_owned());
        let code = if req.method() == Some(&Method::Options) { 200 } else { 405 };
        self.reply(now, id, req, status(code), None, &[allow]);
    }

    /// Records the Contact of a dialog-creating request from a phone so
    /// in-dialog requests reach it even if it registered another Contact
    /// (or none: sipp).
    pub(super) fn learn_contact(&mut self, now: Instant, msg: &SipMessage, from: TransportAddr) {
        let dialog_method = matches!(
            msg.cseq().method,
            Method::Invite | Method::Subscribe | Method::Refer | Method::Notify | Method::Update
        );
        if !dialog_method {
            return;
        }
        let Ok(super::message::Contacts::Bindings(list)) = msg.contacts() else { return };
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

    // ---- responses and transaction events

    fn on_response(&mut self, now: Instant, resp: SipMessage, src: Source) {
        let from = self.addr_of(src);
        match self.tl.handle_response(now, &resp, from) {
            ResponseDisposition::Deliver(cid) => self.branch_response(now, cid, resp),
            ResponseDisposition::Absorbed => {}
            ResponseDisposition::Stray => {
                trace!(call_id = resp.call_id(), "stray response dropped");
                self.counters.stray_responses += 1;
            }
        }
    }

    /// Drains transaction events and transmissions into outputs.
    fn settle(&mut self, now: Instant) {
        while let Some(ev) = self.tl.poll_event() {
            match ev {
                TxEvent::Timeout(TxId::Client(c)) => self.branch_failed(now, c, StatusCode::REQUEST_TIMEOUT, None),
                TxEvent::TransportError(TxId::Client(c)) => {
                    self.branch_failed(now, c, StatusCode::SERVICE_UNAVAILABLE, Some("Next hop unreachable"))
                }
                TxEvent::Terminated(TxId::Client(c)) => self.client_gone(now, c),
                TxEvent::Terminated(TxId::Server(s)) => self.server_gone(s),
                TxEvent::Timeout(TxId::Server(_)) | TxEvent::TransportError(TxId::Server(_)) => {}
            }
        }
        while let Some(t) = self.tl.poll_transmit() {
            let bytes = t.payload.to_vec();
            let node = (t.to.addr == NODE_ADDR).then(|| t.to.flow.and_then(|f| self.flow_nodes.get(&f))).flatten();
            match node {
                Some(&node) => self.out.push_back(EdgeOutput::SendNode { node, bytes }),
                None => self.out.push_back(EdgeOutput::SendLocal { to: t.to, bytes }),
            }
        }
    }

    // ---- helpers shared with the proxy

    /// A generated response on server transaction `id`. A To tag is added
    /// to everything but 100 (§8.2.6.2).
    pub(super) fn reply(
        &mut self,
        now: Instant,
        id: ServerTxId,
        req: &SipMessage,
        code: StatusCode,
        reason: Option<&str>,
        headers: &[(&'static str, String)],
    ) {
        let tag = (code != StatusCode::TRYING).then(|| self.fresh_tag());
        let mut resp = SipMessage::response_to(req, code, reason, tag.as_deref());
        for (name, value) in headers {
            if let Err(e) = resp.add_header(name, value) {
                debug!(error = %e, name, "header left out of a response");
            }
        }
        self.send_response(now, id, resp);
    }

    pub(super) fn send_response(&mut self, now: Instant, id: ServerTxId, resp: SipMessage) {
        let code = resp.status().map_or(0, StatusCode::as_u16);
        match self.tl.respond(now, id, resp) {
            Ok(()) => {
                self.counters.responses += 1;
                trace!(code, "response sent");
            }
            Err(e) => debug!(code, error = %e, "response not sent"),
        }
    }

    pub(super) fn reject(&mut self, now: Instant, id: ServerTxId, req: &SipMessage, r: Reject) {
        self.reply(now, id, req, r.status, r.reason.as_deref(), &r.headers);
    }

    /// The transaction-layer address of a source.
    pub(super) fn addr_of(&mut self, src: Source) -> TransportAddr {
        match src {
            Source::Local(a) => a,
            Source::Node(n) => self.node_addr(n),
        }
    }

    pub(super) fn node_addr(&mut self, node: NodeRef) -> TransportAddr {
        let flow = match self.node_flows.get(&node) {
            Some(&f) => f,
            None => {
                let f = self.node_flows.len() as u64;
                self.node_flows.insert(node, f);
                self.flow_nodes.insert(f, node);
                f
            }
        };
        TransportAddr { transport: Transport::Tcp, addr: NODE_ADDR, flow: Some(flow) }
    }

    /// Via sent-by / Record-Route port for `t`.
    pub(super) fn port_for(&self, t: Transport) -> u16 {
        match t {
            Transport::Tls => self.cfg.advertise_tls_port.unwrap_or(self.cfg.advertise.1),
            _ => self.cfg.advertise.1,
        }
    }

    /// Our Via for a request sent over `t` (node links are nominally TCP).
    pub(super) fn our_via(&self, t: Transport, branch: &str) -> Result<Via, ParseError> {
        Via::new(t.via_name(), self.host.clone(), Some(self.port_for(t)), branch)
    }

    /// `<sip:NODEID@host:port;transport=…;lr>`: names this node for loose
    /// routing (the user part) and for phones (host and port).
    /// Our Record-Route facing transport `t` for a dialog with `call_id`.
    /// Its `cpt` parameter is an HMAC of the Call-ID: a phone's in-dialog
    /// request that carries it back in its Route set was routed through a
    /// dialog we authorised, so it is not challenged again (§22.3 allows
    /// challenging any request; this spares phones a 407 per BYE).
    pub(super) fn record_route(&self, t: Transport, call_id: &str) -> String {
        let name = match t {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        };
        format!(
            "<sip:{}@{}:{};transport={name};cpt={};lr>",
            self.cfg.node_id.to_hex(),
            self.host,
            self.port_for(t),
            self.dialog_token(call_id)
        )
    }

    fn dialog_token(&self, call_id: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ring::hmac::sign(&self.dialog_key, call_id.as_bytes()))
    }

    /// Whether `req` names us (in a Route, or in the Request-URI after a
    /// strict router) with the token of our Record-Route for its Call-ID.
    fn dialog_vouched(&self, req: &SipMessage) -> bool {
        use base64::Engine as _;
        let mut uris: Vec<SipUri> =
            req.routes().unwrap_or_default().into_iter().filter_map(|r| r.uri.as_sip().cloned()).collect();
        if let Some(Uri::Sip(u)) = req.request_uri() {
            uris.push(u.clone());
        }
        uris.iter().filter(|u| self.names_us_by_id(u)).any(|u| {
            u.params
                .value("cpt")
                .and_then(|t| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t).ok())
                .is_some_and(|tag| ring::hmac::verify(&self.dialog_key, req.call_id().as_bytes(), &tag).is_ok())
        })
    }

    /// §16.6 step 8 with §16.3 step 4 in mind: a hash of everything that
    /// affects routing of the received request, so that a looped request
    /// yields the same value and a spiral a different one.
    pub(super) fn branch_hash(&self, req: &SipMessage) -> String {
        let mut h = Sha256::new();
        let method = req.method().map_or("", |m| m.as_str()).to_owned();
        let ruri = req.request_uri().map(|u| u.to_string()).unwrap_or_default();
        let seq = req.cseq().seq.to_string();
        let parts = [
            self.cfg.node_id.to_hex(),
            method,
            ruri,
            req.from().tag().unwrap_or("").to_owned(),
            req.to().tag().unwrap_or("").to_owned(),
            req.call_id().to_owned(),
            seq,
        ];
        for p in &parts {
            h.update(p.as_bytes());
            h.update([0u8]);
        }
        // Proxy-Authorization is left out: we strip our credentials before
        // forwarding, and a looped copy must hash the same.
        for name in ["Route", "Proxy-Require"] {
            for v in req.headers(name) {
                h.update(v.as_bytes());
                h.update([0u8]);
            }
        }
        let full = hex::encode(h.finalize());
        format!("cp{}", full.get(..20).unwrap_or(&full))
    }

    pub(super) fn is_loop(&self, req: &SipMessage, hash: &str) -> bool {
        let prefix = format!("{MAGIC_COOKIE}{hash}.");
        req.vias().iter().any(|v| {
            let ours = v.host.matches(&self.host)
                && (v.port == Some(self.cfg.advertise.1) || v.port == self.cfg.advertise_tls_port);
            ours && v.branch().is_some_and(|b| b.starts_with(&prefix))
        })
    }

    /// A Route/Request-URI naming this node by its Node-ID user part.
    fn names_us_by_id(&self, uri: &SipUri) -> bool {
        node_of(uri) == Some(self.cfg.node_id)
    }

    /// A Route naming this node: our Node-ID, or (a phone's preloaded
    /// outbound-proxy Route) our advertised address or a domain of ours.
    fn names_us(&self, uri: &SipUri) -> bool {
        self.names_us_by_id(uri) || (uri.user.is_none() && self.is_our_host(&uri.host, uri.port))
    }

    pub(super) fn is_our_domain(&self, host: &Host) -> bool {
        let Host::Name(name) = host else { return false };
        self.cfg.domains.iter().any(|d| d.eq_ignore_ascii_case(name))
    }

    pub(super) fn is_our_host(&self, host: &Host, port: Option<u16>) -> bool {
        let port_ok = port.is_none_or(|p| p == self.cfg.advertise.1 || Some(p) == self.cfg.advertise_tls_port);
        self.is_our_domain(host) || (host.matches(&self.host) && port_ok)
    }

    pub(super) fn fresh_op(&mut self) -> OverlayOpId {
        self.next_id += 1;
        OverlayOpId(self.next_id)
    }

    pub(super) fn fresh_tag(&mut self) -> String {
        self.next_id += 1;
        let node = self.cfg.node_id.to_hex();
        format!("{}-{:x}", node.get(..8).unwrap_or(&node), self.next_id)
    }

    pub(super) fn fresh_proxy_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    // ---- malformed input

    /// §16.3 step 1 / §8.2: answer an unparseable request with 400 (505 for
    /// a foreign version) when its Via, From, To, Call-ID and CSeq can be
    /// salvaged; otherwise drop it.
    fn malformed(&mut self, bytes: &[u8], err: &ParseError, src: Source) {
        debug!(error = %err, "malformed SIP message");
        let Some(bytes) = salvage_error_response(bytes, err) else {
            self.counters.malformed_dropped += 1;
            return;
        };
        self.counters.malformed_rejected += 1;
        self.counters.responses += 1;
        match src {
            Source::Local(to) => self.out.push_back(EdgeOutput::SendLocal { to, bytes }),
            Source::Node(node) => self.out.push_back(EdgeOutput::SendNode { node, bytes }),
        }
    }
}

/// The Node-ID a `sip:NODEIDHEX@…` URI names.
pub(super) fn node_of(uri: &SipUri) -> Option<NodeRef> {
    let user = uri.user_name()?;
    (user.len() == 32).then(|| NodeRef::from_hex(user)).flatten()
}

/// Builds the error response for a request `SipMessage::parse` refused,
/// from its raw lines.
///
/// The answer echoes the request's Via, From, To, Call-ID and CSeq lines as
/// they came (the client matches it by them), even when one of those is
/// itself what made the request unparseable (e.g. a broken From); Via,
/// Call-ID and CSeq must be present.
fn salvage_error_response(bytes: &[u8], err: &ParseError) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(bytes);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.lines().map(|l| l.trim_end_matches('\r')).skip_while(|l| l.is_empty());
    let start = lines.next()?;
    let mut words = start.split_whitespace();
    let (Some(method), Some(_uri), Some(version), None) = (words.next(), words.next(), words.next(), words.next())
    else {
        return None;
    };
    if method.starts_with("SIP/") || !version.starts_with("SIP/") {
        return None;
    }
    let reason = err.to_string();
    let mut out = format!("SIP/2.0 {} {}\r\n", err.status_code(), reason);
    let mut has_tag = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let full = expand_compact(name.trim());
        if ["Via", "From", "To", "Call-ID", "CSeq"].iter().any(|n| n.eq_ignore_ascii_case(full)) {
            let value = value.trim();
            if full.eq_ignore_ascii_case("To") && !has_tag {
                has_tag = true;
                if value.contains(";tag=") {
                    out.push_str(&format!("To: {value}\r\n"));
                } else {
                    out.push_str(&format!("To: {value};tag=bad-request\r\n"));
                }
                continue;
            }
            out.push_str(&format!("{}: {value}\r\n", full));
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    if let Ok(m) = SipMessage::parse(out.as_bytes()) {
        return Some(m.to_bytes());
    }
    let has = |name: &str| out.lines().any(|l| l.split(':').next().is_some_and(|n| n.eq_ignore_ascii_case(name)));
    (has("Via") && has("Call-ID") && has("CSeq")).then(|| out.into_bytes())
}
