//! The SIP edge of one node (sans-IO): the registrar and stateful proxy that
//! lets unmodified phones register here and reach users registered on any
//! node of the overlay.
//!
//! Implements RFC 3261 §10.3 (registrar, [`super::registrar`]), §16
//! (stateful proxy, [`super::proxy`]: validation §16.3 here, loose routing
//! §16.4, forking and response selection §16.6–§16.7, CANCEL §16.10,
//! Record-Route §16.6 step 4 and RFC 5658 double Record-Route when the
//! transport changes), §22
//! (digest, 401/407) and the RFC 7904 §3–§4 SIP usage: a registration is an
//! overlay SIP-REGISTRATION record under the AOR pointing at this node, and a
//! call to an AOR not registered here is found with a Fetch and sent to the
//! serving node over the inter-node SIP connection (§4: AppAttach, then SIP).
//! RFC 3581 and RFC 5626 flows: requests to a phone go to the address and
//! stream connection its REGISTER came from.
//!
//! The edge itself is thin: it parses, validates (§16.3) and routes input to
//! the [`Registrar`] or the [`Proxy`], which own their state and answer and
//! forward through the shared [`EdgeCore`] (`shared.rs`).
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

mod malformed;
mod shared;

use crate::time::WallTime;
use std::fmt;
use std::time::{Duration, Instant};

use tracing::{debug, info_span, trace};

use super::account::{NodeRef, SipUser};
use super::message::{Method, ParseError, SipMessage, StatusCode, Uri};
use super::proxy::{Proxy, Target};
use super::registrar::{Binding, Registrar, status};
use super::transaction::{
    RequestDisposition, ResponseDisposition, ServerTxId, TransactionConfig, TransportAddr, TxEvent, TxId,
};

pub(super) use shared::{EdgeCore, node_of};

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

/// The registrar and stateful proxy of one node, composed: the edge parses
/// input, validates requests (§16.3) and routes them to the [`Registrar`] or
/// the [`Proxy`], which answer and forward through the shared [`EdgeCore`].
/// See the module doc.
#[derive(Debug)]
pub struct SipEdge {
    pub(super) core: EdgeCore,
    pub(super) registrar: Registrar,
    pub(super) proxy: Proxy,
}

impl SipEdge {
    /// An edge with no accounts and no bindings.
    pub fn new(cfg: EdgeConfig) -> Result<SipEdge, EdgeConfigError> {
        let registrar = Registrar::new(cfg.nonce_secret);
        let proxy = Proxy::new(cfg.location_cache);
        Ok(SipEdge { core: EdgeCore::new(cfg)?, registrar, proxy })
    }

    /// Replaces the account table.
    pub fn set_users(&mut self, users: Vec<SipUser>) {
        self.registrar.set_users(users);
    }

    /// Adds or replaces one account; false if its AOR is not `user@host`.
    pub fn add_user(&mut self, user: SipUser) -> bool {
        self.registrar.add_user(user)
    }

    /// Removes an account (its bindings stay until they expire).
    pub fn remove_user(&mut self, aor: &str) -> bool {
        self.registrar.remove_user(aor)
    }

    /// Makes every digest nonce issued before `wall` stale; call once at
    /// start-up (nonce counts are not persisted, see
    /// [`NonceKeeper`](super::digest::NonceKeeper)).
    pub fn retire_nonces_before(&mut self, wall: WallTime) {
        self.registrar.retire_nonces_before(wall.as_millis());
    }

    /// The bindings of `aor` (`user@host`).
    pub fn bindings(&self, aor: &str) -> &[Binding] {
        self.registrar.bindings(aor)
    }

    /// Stores every registration this edge serves again (RFC 7904 §3), for
    /// its remaining lifetime: the owner calls this when a mass failure may
    /// have taken every copy of some records (RFC 6940 §10.7 repairs only
    /// what a surviving replica still holds). Returns how many were sent.
    pub fn restore_registrations(&mut self, now: Instant) -> usize {
        self.registrar.restore(&mut self.core, now)
    }

    /// The counters.
    pub fn counters(&self) -> EdgeCounters {
        self.core.counters
    }

    /// Whether no proxy transaction and no SIP transaction is held (true
    /// again once the last transaction's timers ran out).
    pub fn is_idle(&self) -> bool {
        let p = &self.proxy;
        p.proxies.is_empty() && p.by_client.is_empty() && p.by_server.is_empty() && self.core.tl.is_empty()
    }

    /// A datagram or deframed stream message from a phone.
    pub fn handle_local(&mut self, now: Instant, wall: WallTime, bytes: &[u8], from: TransportAddr) {
        match SipMessage::parse(bytes) {
            // Keep-alive CRLFs that reached us (RFC 5626 §3.5.1).
            Err(ParseError::Empty) => {}
            Err(e) => self.core.malformed(bytes, &e, Source::Local(from)),
            Ok(mut msg) if msg.is_request() => {
                // §18.2.1, RFC 3581 §4: record where it really came from.
                if let Err(e) = msg.stamp_received(from.addr) {
                    debug!(error = %e, "cannot stamp received");
                }
                self.on_request(now, wall.as_millis(), msg, Source::Local(from));
            }
            Ok(msg) => self.on_response(now, msg, Source::Local(from)),
        }
        self.settle(now);
    }

    /// A message from another node over the inter-node SIP connection
    /// (authenticated by node certificates: requests are trusted).
    pub fn handle_node(&mut self, now: Instant, wall: WallTime, from: NodeRef, bytes: &[u8]) {
        match SipMessage::parse(bytes) {
            Err(ParseError::Empty) => {}
            Err(e) => self.core.malformed(bytes, &e, Source::Node(from)),
            Ok(msg) if msg.is_request() => self.on_request(now, wall.as_millis(), msg, Source::Node(from)),
            Ok(msg) => self.on_response(now, msg, Source::Node(from)),
        }
        self.settle(now);
    }

    /// The answer to an overlay operation this edge asked for.
    pub fn handle_overlay(&mut self, now: Instant, wall: WallTime, op: OverlayOpId, result: OverlayResult) {
        let _ = wall;
        if self.registrar.owns(op) {
            self.registrar.handle_overlay(&mut self.core, now, op, result);
        } else if self.proxy.owns(op) {
            self.proxy.handle_overlay(&mut self.core, now, op, result);
        } else {
            trace!(%op, "answer to an unknown or timed-out overlay operation");
            return;
        }
        self.settle(now);
    }

    /// The runtime could not reach `node` (AppAttach or send failed): its
    /// branches fail as if it answered 503 (RFC 7904 §4 then yields 480).
    pub fn handle_node_unreachable(&mut self, now: Instant, wall: WallTime, node: NodeRef) {
        let _ = wall;
        self.proxy.fail_branches(&mut self.core, |t| *t == Target::Node(node));
        self.settle(now);
    }

    /// The runtime could not send to a phone (e.g. its stream flow is gone).
    pub fn handle_local_unreachable(&mut self, now: Instant, wall: WallTime, to: TransportAddr) {
        let _ = wall;
        self.proxy.fail_branches(&mut self.core, |t| matches!(t, Target::Local { to: a, .. } if *a == to));
        self.settle(now);
    }

    /// A phone's stream connection closed (RFC 5626 §5.2): bindings that
    /// use it are removed.
    pub fn handle_flow_closed(&mut self, now: Instant, wall: WallTime, flow: u64) {
        let _ = wall;
        self.registrar.flow_closed(&mut self.core, now, flow);
        self.settle(now);
    }

    /// Fires due timers.
    pub fn handle_timeout(&mut self, now: Instant, wall: WallTime) {
        let _ = wall;
        self.core.tl.handle_timeout(now);
        self.registrar.handle_timeout(&mut self.core, now);
        self.proxy.handle_timeout(&mut self.core, now);
        self.settle(now);
    }

    /// When [`SipEdge::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.core.tl.poll_timeout(), self.registrar.poll_timeout(), self.proxy.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next thing for the runtime to do; drain until `None`.
    pub fn poll_output(&mut self) -> Option<EdgeOutput> {
        self.core.out.pop_front()
    }

    // ---- requests

    fn on_request(&mut self, now: Instant, wall_ms: u64, req: SipMessage, src: Source) {
        let method = req.method().cloned().unwrap_or(Method::Other(String::new()));
        let span = info_span!("sip", method = %method, call_id = %req.call_id());
        let _guard = span.enter();
        let from = self.core.addr_of(src);
        match self.core.tl.handle_request(now, &req, from) {
            RequestDisposition::New(id) => self.new_request(now, wall_ms, id, req, src, span.clone()),
            RequestDisposition::Cancel { tx, invite } => self.proxy.on_cancel(&mut self.core, now, tx, &req, invite),
            RequestDisposition::Ack { .. } => self.proxy.forward_ack(&mut self.core, &self.registrar, now, req, src),
            RequestDisposition::Retransmission | RequestDisposition::AckAbsorbed => {}
            RequestDisposition::Overloaded => {
                debug!("transaction cap reached: 503");
                self.core.counters.responses += 1;
            }
            RequestDisposition::Invalid(why) => {
                debug!(why, "request dropped");
                self.core.counters.malformed_dropped += 1;
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
            return self.core.reply(now, id, &req, status(416), None, &[]);
        }
        if req.method() == Some(&Method::Register) {
            return match src {
                Source::Local(from) => self.registrar.handle_register(&mut self.core, now, wall_ms, id, &req, from),
                Source::Node(_) => self.core.reply(now, id, &req, status(403), Some("REGISTER is not relayed"), &[]),
            };
        }
        // §16.3 step 3.
        if req.max_forwards() == Some(0) {
            return self.core.reply(now, id, &req, StatusCode::TOO_MANY_HOPS, None, &[]);
        }
        // §16.3 step 4: our Via with the branch we would compute again.
        let hash = self.core.branch_hash(&req);
        if self.core.is_loop(&req, &hash) {
            return self.core.reply(now, id, &req, StatusCode::LOOP_DETECTED, None, &[]);
        }
        let in_dialog = req.to().tag().is_some();
        let vouched = in_dialog && matches!(src, Source::Local(_)) && self.core.dialog_vouched(&req);
        let next = match self.proxy.resolve(&self.core, &self.registrar, now, &mut req, src) {
            Ok(n) => n,
            Err(r) => return self.core.reject(now, id, &req, r),
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
            if needs_auth && let Err(r) = self.registrar.proxy_auth(&mut self.core, wall_ms, &mut req) {
                return self.core.reject(now, id, &req, r);
            }
            self.proxy.learn_contact(now, &req, from);
        }
        if next != Next::Us && req.decrement_max_forwards().is_none() {
            return self.core.reply(now, id, &req, StatusCode::TOO_MANY_HOPS, None, &[]);
        }
        let invite = req.method() == Some(&Method::Invite);
        let record_route = !in_dialog;
        let targets = match next {
            Next::Us => return self.answer_ourselves(now, id, &req),
            Next::Contact(to) => vec![Target::Local { to, uri: None }],
            Next::Node(node) => vec![Target::Node(node)],
            Next::Aor(aor) => {
                let local: Vec<Target> = self
                    .registrar
                    .bindings_of(&aor)
                    .iter()
                    .map(|b| Target::Local { to: b.source, uri: Some(b.contact.uri.clone()) })
                    .collect();
                if local.is_empty() {
                    if let Source::Node(_) = src {
                        // RFC 7904 §4: the record named us but the phone is
                        // gone (stale record); tell the caller to retry later.
                        let why = Some("No binding here (stale registration)");
                        return self.core.reply(now, id, &req, StatusCode::TEMPORARILY_UNAVAILABLE, why, &[]);
                    }
                    if invite {
                        self.core.reply(now, id, &req, StatusCode::TRYING, None, &[]);
                    }
                    return self.proxy.start_fetch(&mut self.core, now, id, req, src, aor, hash, span);
                }
                local
            }
        };
        // §16.2: 100 Trying at once for an INVITE we are going to proxy.
        if invite {
            self.core.reply(now, id, &req, StatusCode::TRYING, None, &[]);
        }
        self.proxy.start_proxy(&mut self.core, now, id, req, src, hash, record_route, targets, span);
    }

    /// OPTIONS to the node itself (keep-alive probes) → 200; any other
    /// method to the registrar domain → 405.
    fn answer_ourselves(&mut self, now: Instant, id: ServerTxId, req: &SipMessage) {
        let allow = ("Allow", "REGISTER, OPTIONS, INVITE, ACK, BYE, CANCEL, MESSAGE, SUBSCRIBE, NOTIFY".to_owned());
        let code = if req.method() == Some(&Method::Options) { 200 } else { 405 };
        self.core.reply(now, id, req, status(code), None, &[allow]);
    }

    // ---- responses and transaction events

    fn on_response(&mut self, now: Instant, resp: SipMessage, src: Source) {
        let from = self.core.addr_of(src);
        match self.core.tl.handle_response(now, &resp, from) {
            ResponseDisposition::Deliver(cid) => self.proxy.branch_response(&mut self.core, now, cid, resp),
            ResponseDisposition::Absorbed => {}
            ResponseDisposition::Stray => {
                trace!(call_id = resp.call_id(), "stray response dropped");
                self.core.counters.stray_responses += 1;
            }
        }
    }

    /// Drains transaction events and transmissions into outputs.
    fn settle(&mut self, now: Instant) {
        let (core, proxy) = (&mut self.core, &mut self.proxy);
        while let Some(ev) = core.tl.poll_event() {
            match ev {
                TxEvent::Timeout(TxId::Client(c)) => {
                    proxy.branch_failed(core, now, c, StatusCode::REQUEST_TIMEOUT, None)
                }
                TxEvent::TransportError(TxId::Client(c)) => {
                    proxy.branch_failed(core, now, c, StatusCode::SERVICE_UNAVAILABLE, Some("Next hop unreachable"))
                }
                TxEvent::Terminated(TxId::Client(c)) => proxy.client_gone(core, now, c),
                TxEvent::Terminated(TxId::Server(s)) => proxy.server_gone(s),
                TxEvent::Timeout(TxId::Server(_)) | TxEvent::TransportError(TxId::Server(_)) => {}
            }
        }
        while let Some(t) = core.tl.poll_transmit() {
            core.transmit(t);
        }
    }
}
