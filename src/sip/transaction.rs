//! SIP transactions, sans-IO: RFC 3261 §17 (client and server, INVITE and
//! non-INVITE) with the RFC 6026 "Accepted" states, transaction matching
//! (§17.1.3, §17.2.3 incl. the RFC 2543 fallback), CANCEL construction (§9.1)
//! and matching (§9.2), response addressing (§18.2.2, RFC 3581 §4) and the
//! 100 Trying a stateful proxy sends when the TU stays silent for 200 ms
//! (§16.7 step 5 / §17.2.1).
//!
//! The caller feeds parsed messages and the time, and drains
//! [`TransactionLayer::poll_transmit`] / [`TransactionLayer::poll_event`];
//! [`TransactionLayer::poll_timeout`] says when to call
//! [`TransactionLayer::handle_timeout`].
//!
//! Capacity policy: at most [`TransactionConfig::max_transactions`] working
//! transactions (client + server). Transactions that only linger to absorb
//! retransmissions (non-INVITE Completed, INVITE Completed/Confirmed/Accepted:
//! Timers J, K, D, I, L, M) do not count: a registrar answering 1,000
//! REGISTERs a second would otherwise hold 64,000 of them for Timer J's 32 s
//! and refuse everyone. They are bounded separately by
//! [`TransactionConfig::max_lingering`]: beyond it the oldest ends early (a
//! late retransmission of its request is then handled as a new request).
//! A new request beyond the working cap is answered
//! statelessly with 503 Service Unavailable and a Retry-After
//! ([`RequestDisposition::Overloaded`]); ACKs are never refused (they create
//! no transaction), and a CANCEL for a live INVITE is admitted since it ends
//! work. [`TransactionLayer::send_request`] beyond the cap fails with
//! [`TxError::Overloaded`] (the TU answers 503 upstream); CANCEL client
//! transactions (at most one per INVITE) are admitted.
//!
//! Timer C (§16.8) belongs to the proxy core, not to this layer.
//!
//! Not done: `maddr` and DNS-based response addressing (§18.2.2 with a domain
//! sent-by falls back to the source IP), and the stateless retransmission of
//! 2xx by a UAS core (§13.3.1.4 — the TU's job).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::message::{Header, Method, ParseError, SipMessage, StatusCode, Via};

/// The RFC 3261 branch prefix (§8.1.1.7).
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// A SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// Reliable transports need no retransmissions (§17.1.1.2, §17.1.2.2).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// The Via transport token.
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
}

/// Where a message came from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransportAddr {
    pub transport: Transport,
    pub addr: SocketAddr,
    /// The connection a stream message arrived on, so responses reuse it
    /// (§18.2.2, RFC 5626 flows). `None` for UDP or "any connection".
    pub flow: Option<u64>,
}

/// Timer values (§17.1.1.1, Table 4) and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionConfig {
    /// RTT estimate, default 500 ms.
    pub t1: Duration,
    /// Maximum non-INVITE / response retransmit interval, default 4 s.
    pub t2: Duration,
    /// Maximum time a message stays in the network, default 5 s.
    pub t4: Duration,
    /// Timer D (client INVITE Completed, unreliable), default 32 s.
    pub timer_d: Duration,
    /// When an INVITE server transaction sends 100 Trying itself if the TU
    /// sent no provisional (§17.2.1); `None` disables it.
    pub auto_trying: Option<Duration>,
    /// Live transaction cap (see the module doc).
    pub max_transactions: usize,
    /// Retry-After seconds in the overload 503.
    pub retry_after_secs: u32,
    /// Lingering transactions kept before the oldest is ended early.
    pub max_lingering: usize,
}

impl Default for TransactionConfig {
    fn default() -> Self {
        TransactionConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            timer_d: Duration::from_secs(32),
            auto_trying: Some(Duration::from_millis(200)),
            max_transactions: 10_000,
            retry_after_secs: 5,
            max_lingering: 50_000,
        }
    }
}

/// A client transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientTxId(u64);

/// A server transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerTxId(u64);

/// Either kind of transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TxId {
    Client(ClientTxId),
    Server(ServerTxId),
}

impl TxId {
    /// The creation number (client and server ids share one sequence).
    fn seq(self) -> u64 {
        match self {
            TxId::Client(c) => c.0,
            TxId::Server(s) => s.0,
        }
    }
}

/// What the layer did with an incoming request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestDisposition {
    /// A new server transaction: the TU must answer through
    /// [`TransactionLayer::respond`].
    New(ServerTxId),
    /// A CANCEL, which is its own non-INVITE transaction `tx` (§9.2);
    /// `invite` is the INVITE server transaction it matches, if any.
    Cancel { tx: ServerTxId, invite: Option<ServerTxId> },
    /// An ACK for the TU: the ACK of a 2xx is its own transaction (§17.1.1.3),
    /// or, matching an INVITE in Accepted, "passed to the TU" (RFC 6026 §7.1).
    Ack { invite: Option<ServerTxId> },
    /// A retransmission, absorbed; the last response (if any) was re-sent.
    Retransmission,
    /// The ACK for a non-2xx final response, absorbed (§17.2.1).
    AckAbsorbed,
    /// Over the transaction cap: the layer queued a 503 itself.
    Overloaded,
    /// Unusable (no Via); dropped.
    Invalid(&'static str),
}

/// What the layer did with an incoming response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseDisposition {
    /// For the TU, belonging to this client transaction.
    Deliver(ClientTxId),
    /// A retransmission the transaction absorbed.
    Absorbed,
    /// Matches no transaction (§18.1.2): a proxy forwards it statelessly
    /// (§16.7, §16.11).
    Stray,
}

/// Something the TU must learn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxEvent {
    /// Client: Timer B/F fired — the TU acts as if a 408 arrived (§8.1.3.1).
    /// Server: Timer H fired — the ACK never came (§17.2.1).
    Timeout(TxId),
    /// [`TransactionLayer::transport_error`] was reported (§17.1.4, §17.2.4).
    TransportError(TxId),
    /// The transaction is gone; its id will not be seen again.
    Terminated(TxId),
}

/// Bytes to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: TransportAddr,
    pub payload: Bytes,
    /// The transaction sending it (`None` for stateless output), for
    /// [`TransactionLayer::transport_error`].
    pub tx: Option<TxId>,
}

/// Local API misuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("unknown or terminated transaction")]
    Unknown,
    #[error("not a request")]
    NotARequest,
    #[error("not a response")]
    NotAResponse,
    #[error("message has no Via")]
    NoVia,
    #[error("top Via has no RFC 3261 branch")]
    NoBranch,
    #[error("a transaction with this branch and method exists")]
    DuplicateBranch,
    #[error("ACK is not sent in a client transaction; use send_stateless")]
    AckIsNotATransaction,
    #[error("response does not belong to this transaction")]
    Mismatch,
    #[error("invalid in this state: {0}")]
    InvalidState(&'static str),
    #[error("transaction limit reached")]
    Overloaded,
    #[error("could not build message: {0}")]
    Build(#[from] ParseError),
}

/// Client transaction states (Figures 5 and 6, RFC 6026 Figure 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// A CANCEL waiting for its INVITE's first provisional (§9.1).
    Held,
    Calling,
    Trying,
    Proceeding,
    Completed,
    Accepted,
}

/// Server transaction states (Figures 7 and 8, RFC 6026 Figure 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    Trying,
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
}

/// The transaction layer.
#[derive(Debug)]
pub struct TransactionLayer {
    config: TransactionConfig,
    next_id: u64,
    // Boxed: a B-tree leaf holds 11 values, and a user agent has only a
    // few transactions, so inline values would cost ~10 KB each.
    clients: BTreeMap<ClientTxId, Box<ClientTx>>,
    servers: BTreeMap<ServerTxId, Box<ServerTx>>,
    client_keys: BTreeMap<(String, Method), ClientTxId>,
    server_keys: BTreeMap<ServerKey, ServerTxId>,
    /// (deadline, transaction): each live transaction's earliest timer.
    timers: BTreeSet<(Instant, TxId)>,
    /// Transactions past their final response, only absorbing
    /// retransmissions, keyed by creation order (oldest first).
    lingering: BTreeMap<u64, TxId>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TxEvent>,
}

#[derive(Debug)]
struct ClientTx {
    invite: bool,
    state: ClientState,
    request: SipMessage,
    payload: Bytes,
    to: TransportAddr,
    key: (String, Method),
    /// Timer A / E.
    retransmit_at: Option<Instant>,
    interval: Duration,
    /// Timer B / F.
    timeout_at: Option<Instant>,
    /// Timer D / K / M.
    end_at: Option<Instant>,
    /// The ACK for a non-2xx final response, re-sent on its retransmissions.
    ack: Option<Bytes>,
    /// INVITE: its CANCEL. CANCEL: the INVITE it cancels.
    partner: Option<ClientTxId>,
    scheduled: Option<Instant>,
}

#[derive(Debug)]
struct ServerTx {
    invite: bool,
    state: ServerState,
    request: SipMessage,
    reply_to: TransportAddr,
    key: ServerKey,
    last_response: Option<Bytes>,
    /// The automatic 100 Trying.
    trying_at: Option<Instant>,
    /// Timer G.
    retransmit_at: Option<Instant>,
    interval: Duration,
    /// Timer H.
    timeout_at: Option<Instant>,
    /// Timer I / J / L.
    end_at: Option<Instant>,
    scheduled: Option<Instant>,
}

/// §17.2.3 matching key; ACK and CANCEL look up with method INVITE.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum ServerKey {
    Branch {
        branch: String,
        sent_by: String,
        method: Method,
    },
    /// RFC 2543 peers (no magic cookie). The To tag is left out so the ACK,
    /// which carries the response's tag, still matches.
    Legacy {
        request_uri: String,
        from_tag: String,
        call_id: String,
        cseq: u32,
        top_via: String,
        method: Method,
    },
}

impl ServerKey {
    fn of(req: &SipMessage, via: &Via, method: Method) -> ServerKey {
        match via.branch().filter(|b| b.starts_with(MAGIC_COOKIE)) {
            Some(branch) => ServerKey::Branch {
                branch: branch.to_owned(),
                sent_by: format!("{}:{}", via.host.to_string().to_ascii_lowercase(), via.port_or_default()),
                method,
            },
            None => ServerKey::Legacy {
                request_uri: req.request_uri().map(|u| u.to_string()).unwrap_or_default(),
                from_tag: req.from().tag().unwrap_or_default().to_owned(),
                call_id: req.call_id().to_owned(),
                cseq: req.cseq().seq,
                top_via: via.to_string(),
                method,
            },
        }
    }

    fn with_method(&self, m: Method) -> ServerKey {
        let mut k = self.clone();
        match &mut k {
            ServerKey::Branch { method, .. } | ServerKey::Legacy { method, .. } => *method = m,
        }
        k
    }
}

impl TransactionLayer {
    /// An empty layer.
    pub fn new(config: TransactionConfig) -> TransactionLayer {
        TransactionLayer {
            config,
            next_id: 0,
            clients: BTreeMap::new(),
            servers: BTreeMap::new(),
            client_keys: BTreeMap::new(),
            server_keys: BTreeMap::new(),
            timers: BTreeSet::new(),
            lingering: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Live transactions.
    pub fn len(&self) -> usize {
        self.clients.len() + self.servers.len()
    }

    /// Live transactions still doing work (what the cap counts).
    pub fn working(&self) -> usize {
        self.len().saturating_sub(self.lingering.len())
    }

    /// Live transactions that only absorb retransmissions.
    pub fn lingering(&self) -> usize {
        self.lingering.len()
    }

    /// Records that `id` now only lingers (its states never go back), and
    /// ends the oldest lingering transactions beyond the bound.
    fn note_lingering(&mut self, id: TxId) {
        let lingers = match id {
            TxId::Client(c) => {
                self.clients.get(&c).is_some_and(|t| matches!(t.state, ClientState::Completed | ClientState::Accepted))
            }
            TxId::Server(sv) => self.servers.get(&sv).is_some_and(|t| {
                matches!(t.state, ServerState::Completed | ServerState::Confirmed | ServerState::Accepted)
            }),
        };
        if !lingers {
            return;
        }
        self.lingering.insert(id.seq(), id);
        while self.lingering.len() > self.config.max_lingering {
            let Some((_, oldest)) = self.lingering.pop_first() else { break };
            tracing::debug!(tx = ?oldest, "lingering transaction ended early (bound reached)");
            self.terminate(oldest);
        }
    }

    /// No live transactions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The request that created a server transaction.
    pub fn server_request(&self, tx: ServerTxId) -> Option<&SipMessage> {
        self.servers.get(&tx).map(|t| &t.request)
    }

    /// The request a client transaction sends.
    pub fn client_request(&self, tx: ClientTxId) -> Option<&SipMessage> {
        self.clients.get(&tx).map(|t| &t.request)
    }

    /// A server transaction's state.
    pub fn server_state(&self, tx: ServerTxId) -> Option<ServerState> {
        self.servers.get(&tx).map(|t| t.state)
    }

    /// A client transaction's state.
    pub fn client_state(&self, tx: ClientTxId) -> Option<ClientState> {
        self.clients.get(&tx).map(|t| t.state)
    }

    // ---- server side

    /// A request from the network (already parsed and, per §18.2.1, with
    /// `received`/`rport` stamped on its top Via).
    pub fn handle_request(&mut self, now: Instant, req: &SipMessage, from: TransportAddr) -> RequestDisposition {
        let Some(method) = req.method().cloned() else { return RequestDisposition::Invalid("not a request") };
        let Some(via) = req.top_via() else { return RequestDisposition::Invalid("no Via") };
        let key = ServerKey::of(req, via, method.clone());

        if method == Method::Ack {
            let id = self.server_keys.get(&key.with_method(Method::Invite)).copied();
            return self.server_ack(now, id);
        }
        if let Some(&id) = self.server_keys.get(&key) {
            // §17.2.1/§17.2.2: re-send the last response; RFC 6026 §7.1: in
            // Accepted the INVITE is absorbed without one (the UAS core
            // retransmits its 2xx end to end).
            if let Some(tx) = self.servers.get(&id)
                && tx.state != ServerState::Accepted
                && let Some(last) = tx.last_response.clone()
            {
                self.transmits.push_back(Transmit { to: tx.reply_to, payload: last, tx: Some(TxId::Server(id)) });
            }
            return RequestDisposition::Retransmission;
        }
        let target = match method {
            Method::Cancel => self.server_keys.get(&key.with_method(Method::Invite)).copied(),
            _ => None,
        };
        if self.working() >= self.config.max_transactions && target.is_none() {
            self.reject_overload(req, via, from);
            return RequestDisposition::Overloaded;
        }
        let id = ServerTxId(self.fresh_id());
        let invite = method == Method::Invite;
        let tx = ServerTx {
            invite,
            state: if invite { ServerState::Proceeding } else { ServerState::Trying },
            request: req.clone(),
            reply_to: response_target(via, from),
            key: key.clone(),
            last_response: None,
            trying_at: self.config.auto_trying.filter(|_| invite).map(|d| now + d),
            retransmit_at: None,
            interval: self.config.t1,
            timeout_at: None,
            end_at: None,
            scheduled: None,
        };
        self.server_keys.insert(key, id);
        self.servers.insert(id, Box::new(tx));
        self.reschedule(TxId::Server(id));
        tracing::trace!(tx = ?id, %method, "new server transaction");
        match method {
            Method::Cancel => RequestDisposition::Cancel { tx: id, invite: target },
            _ => RequestDisposition::New(id),
        }
    }

    fn server_ack(&mut self, now: Instant, id: Option<ServerTxId>) -> RequestDisposition {
        let Some((id, tx)) = id.and_then(|id| Some((id, self.servers.get_mut(&id)?))) else {
            return RequestDisposition::Ack { invite: None };
        };
        match tx.state {
            ServerState::Accepted => RequestDisposition::Ack { invite: Some(id) },
            ServerState::Completed => {
                // §17.2.1: Confirmed; Timer I = T4 (0 on reliable transports).
                tx.state = ServerState::Confirmed;
                tx.retransmit_at = None;
                tx.timeout_at = None;
                if tx.reply_to.transport.is_reliable() {
                    self.terminate(TxId::Server(id));
                } else {
                    tx.end_at = Some(now + self.config.t4);
                    self.reschedule(TxId::Server(id));
                    self.note_lingering(TxId::Server(id));
                }
                RequestDisposition::AckAbsorbed
            }
            _ => RequestDisposition::AckAbsorbed,
        }
    }

    /// Sends the TU's response on server transaction `tx`.
    pub fn respond(&mut self, now: Instant, tx: ServerTxId, resp: SipMessage) -> Result<(), TxError> {
        let status = resp.status().ok_or(TxError::NotAResponse)?;
        let cfg = self.config.clone();
        let t = self.servers.get_mut(&tx).ok_or(TxError::Unknown)?;
        let method = t.request.method().cloned().ok_or(TxError::NotARequest)?;
        if resp.cseq().method != method {
            return Err(TxError::Mismatch);
        }
        if let ServerKey::Branch { branch, .. } = &t.key
            && resp.top_via().and_then(Via::branch) != Some(branch.as_str())
        {
            return Err(TxError::Mismatch);
        }
        let reliable = t.reply_to.transport.is_reliable();
        let mut terminate = false;
        match (t.invite, t.state) {
            (true, ServerState::Proceeding) if status.is_provisional() => {}
            (true, ServerState::Proceeding) if status.is_success() => {
                // RFC 6026 §8.5: Accepted, Timer L = 64*T1.
                t.state = ServerState::Accepted;
                t.end_at = Some(now + 64 * cfg.t1);
            }
            (true, ServerState::Proceeding) => {
                t.state = ServerState::Completed;
                if !reliable {
                    t.retransmit_at = Some(now + cfg.t1);
                    t.interval = cfg.t1;
                }
                t.timeout_at = Some(now + 64 * cfg.t1);
            }
            (true, ServerState::Accepted) if status.is_success() => {}
            (false, ServerState::Trying | ServerState::Proceeding) if status.is_provisional() => {
                t.state = ServerState::Proceeding;
            }
            (false, ServerState::Trying | ServerState::Proceeding) => {
                t.state = ServerState::Completed;
                // Timer J: 64*T1 unreliable, 0 reliable.
                if reliable {
                    terminate = true;
                } else {
                    t.end_at = Some(now + 64 * cfg.t1);
                }
            }
            _ => return Err(TxError::InvalidState("final response already sent")),
        }
        t.trying_at = None;
        let payload = Bytes::from(resp.to_bytes());
        t.last_response = Some(payload.clone());
        self.transmits.push_back(Transmit { to: t.reply_to, payload, tx: Some(TxId::Server(tx)) });
        if terminate {
            self.terminate(TxId::Server(tx));
        } else {
            self.reschedule(TxId::Server(tx));
            self.note_lingering(TxId::Server(tx));
        }
        Ok(())
    }

    fn reject_overload(&mut self, req: &SipMessage, via: &Via, from: TransportAddr) {
        let tag = format!("ovl{}", self.next_id);
        let mut resp = SipMessage::response_to(req, StatusCode::SERVICE_UNAVAILABLE, None, Some(&tag));
        if resp.add_header("Retry-After", &self.config.retry_after_secs.to_string()).is_err() {
            return;
        }
        tracing::debug!(call_id = req.call_id(), "transaction limit reached: 503");
        let payload = Bytes::from(resp.to_bytes());
        self.transmits.push_back(Transmit { to: response_target(via, from), payload, tx: None });
    }

    // ---- client side

    /// Starts a client transaction for `req`, whose top Via must carry a
    /// fresh RFC 3261 branch (the TU chooses it, e.g. per §16.6 step 8).
    pub fn send_request(&mut self, now: Instant, req: SipMessage, to: TransportAddr) -> Result<ClientTxId, TxError> {
        let method = req.method().cloned().ok_or(TxError::NotARequest)?;
        if method == Method::Ack {
            return Err(TxError::AckIsNotATransaction);
        }
        if self.working() >= self.config.max_transactions {
            return Err(TxError::Overloaded);
        }
        self.start_client(now, req, to, ClientState::Calling, None)
    }

    fn start_client(
        &mut self,
        now: Instant,
        req: SipMessage,
        to: TransportAddr,
        state: ClientState,
        partner: Option<ClientTxId>,
    ) -> Result<ClientTxId, TxError> {
        let method = req.method().cloned().ok_or(TxError::NotARequest)?;
        let branch = req.top_via().ok_or(TxError::NoVia)?.branch().ok_or(TxError::NoBranch)?;
        if !branch.starts_with(MAGIC_COOKIE) {
            return Err(TxError::NoBranch);
        }
        let key = (branch.to_owned(), method.clone());
        if self.client_keys.contains_key(&key) {
            return Err(TxError::DuplicateBranch);
        }
        let id = ClientTxId(self.fresh_id());
        let invite = method == Method::Invite;
        let state = match state {
            ClientState::Held => ClientState::Held,
            _ if invite => ClientState::Calling,
            _ => ClientState::Trying,
        };
        let tx = ClientTx {
            invite,
            state,
            payload: Bytes::from(req.to_bytes()),
            request: req,
            to,
            key: key.clone(),
            retransmit_at: None,
            interval: self.config.t1,
            timeout_at: None,
            end_at: None,
            ack: None,
            partner,
            scheduled: None,
        };
        self.client_keys.insert(key, id);
        self.clients.insert(id, Box::new(tx));
        if state != ClientState::Held {
            self.launch(now, id);
        }
        tracing::trace!(tx = ?id, %method, "new client transaction");
        Ok(id)
    }

    /// First transmission and Timers A/B or E/F.
    fn launch(&mut self, now: Instant, id: ClientTxId) {
        let (t1, invite_timeout) = (self.config.t1, 64 * self.config.t1);
        let Some(tx) = self.clients.get_mut(&id) else { return };
        if tx.state == ClientState::Held {
            tx.state = ClientState::Trying;
        }
        if !tx.to.transport.is_reliable() {
            tx.retransmit_at = Some(now + t1);
            tx.interval = t1;
        }
        tx.timeout_at = Some(now + invite_timeout);
        self.transmits.push_back(Transmit { to: tx.to, payload: tx.payload.clone(), tx: Some(TxId::Client(id)) });
        self.reschedule(TxId::Client(id));
    }

    /// A response from the network.
    pub fn handle_response(&mut self, now: Instant, resp: &SipMessage, _from: TransportAddr) -> ResponseDisposition {
        let Some(status) = resp.status() else { return ResponseDisposition::Stray };
        let Some(branch) = resp.top_via().and_then(Via::branch) else { return ResponseDisposition::Stray };
        let key = (branch.to_owned(), resp.cseq().method.clone());
        let Some(&id) = self.client_keys.get(&key) else { return ResponseDisposition::Stray };
        let (t4, timer_d, timer_m) = (self.config.t4, self.config.timer_d, 64 * self.config.t1);
        let Some(tx) = self.clients.get_mut(&id) else { return ResponseDisposition::Stray };
        let reliable = tx.to.transport.is_reliable();
        let mut release_cancel = false;
        let mut drop_cancel = false;
        let mut end_now = false;
        let disposition = match (tx.invite, tx.state) {
            (_, ClientState::Held) => ResponseDisposition::Absorbed,
            (true, ClientState::Calling | ClientState::Proceeding) => {
                tx.retransmit_at = None;
                tx.timeout_at = None;
                if status.is_provisional() {
                    tx.state = ClientState::Proceeding;
                    release_cancel = true;
                } else if status.is_success() {
                    // RFC 6026 §8.4: Accepted, Timer M = 64*T1.
                    tx.state = ClientState::Accepted;
                    tx.end_at = Some(now + timer_m);
                    drop_cancel = true;
                } else {
                    // §17.1.1.3: ACK the failure; Timer D.
                    tx.state = ClientState::Completed;
                    drop_cancel = true;
                    if let Ok(ack) = build_ack(&tx.request, resp) {
                        let ack = Bytes::from(ack.to_bytes());
                        self.transmits.push_back(Transmit {
                            to: tx.to,
                            payload: ack.clone(),
                            tx: Some(TxId::Client(id)),
                        });
                        tx.ack = Some(ack);
                    }
                    if reliable {
                        end_now = true;
                    } else {
                        tx.end_at = Some(now + timer_d);
                    }
                }
                ResponseDisposition::Deliver(id)
            }
            (true, ClientState::Accepted) if status.is_success() => ResponseDisposition::Deliver(id),
            (true, ClientState::Completed) if status.is_final() && !status.is_success() => {
                if let Some(ack) = tx.ack.clone() {
                    self.transmits.push_back(Transmit { to: tx.to, payload: ack, tx: Some(TxId::Client(id)) });
                }
                ResponseDisposition::Absorbed
            }
            (false, ClientState::Trying | ClientState::Proceeding) => {
                if status.is_provisional() {
                    tx.state = ClientState::Proceeding;
                } else {
                    tx.state = ClientState::Completed;
                    tx.retransmit_at = None;
                    tx.timeout_at = None;
                    // Timer K: T4 unreliable, 0 reliable.
                    if reliable {
                        end_now = true;
                    } else {
                        tx.end_at = Some(now + t4);
                    }
                }
                ResponseDisposition::Deliver(id)
            }
            _ => ResponseDisposition::Absorbed,
        };
        let partner = tx.partner;
        if let Some(cancel) = partner.filter(|_| release_cancel || drop_cancel)
            && self.clients.get(&cancel).is_some_and(|c| c.state == ClientState::Held)
        {
            if release_cancel {
                self.launch(now, cancel);
            } else {
                self.terminate(TxId::Client(cancel));
            }
        }
        if end_now {
            self.terminate(TxId::Client(id));
        } else {
            self.reschedule(TxId::Client(id));
            self.note_lingering(TxId::Client(id));
        }
        disposition
    }

    /// Cancels client INVITE `invite` (§9.1): builds the CANCEL and runs it
    /// as its own non-INVITE transaction to the same destination. Before a
    /// provisional response it is held and sent when one arrives (dropped if
    /// a final response comes first). Calling again while that CANCEL lives
    /// returns the same id.
    pub fn cancel_request(&mut self, now: Instant, invite: ClientTxId) -> Result<ClientTxId, TxError> {
        let tx = self.clients.get(&invite).ok_or(TxError::Unknown)?;
        if !tx.invite {
            return Err(TxError::InvalidState("only INVITE can be cancelled"));
        }
        if let Some(existing) = tx.partner.filter(|c| self.clients.contains_key(c)) {
            return Ok(existing);
        }
        let held = match tx.state {
            ClientState::Calling => ClientState::Held,
            ClientState::Proceeding => ClientState::Trying,
            _ => return Err(TxError::InvalidState("final response already received")),
        };
        let cancel = build_cancel(&tx.request)?;
        let to = tx.to;
        let id = self.start_client(now, cancel, to, held, Some(invite))?;
        if let Some(tx) = self.clients.get_mut(&invite) {
            tx.partner = Some(id);
        }
        Ok(id)
    }

    /// Queues a message outside any transaction (a proxy forwarding an ACK
    /// for 2xx or a stray response, §16.7, §16.11).
    pub fn send_stateless(&mut self, msg: &SipMessage, to: TransportAddr) {
        self.transmits.push_back(Transmit { to, payload: Bytes::from(msg.to_bytes()), tx: None });
    }

    /// The runtime could not send for `tx` (§17.1.4, §17.2.4): the
    /// transaction ends with [`TxEvent::TransportError`].
    pub fn transport_error(&mut self, tx: TxId) {
        let live = match tx {
            TxId::Client(id) => self.clients.contains_key(&id),
            TxId::Server(id) => self.servers.contains_key(&id),
        };
        if live {
            self.events.push_back(TxEvent::TransportError(tx));
            self.terminate(tx);
        }
    }

    // ---- driving

    /// The next datagram/stream write.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the TU.
    pub fn poll_event(&mut self) -> Option<TxEvent> {
        self.events.pop_front()
    }

    /// When [`TransactionLayer::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, id));
            match id {
                TxId::Client(c) => {
                    if let Some(tx) = self.clients.get_mut(&c) {
                        tx.scheduled = None;
                    }
                    self.client_timers(now, c);
                }
                TxId::Server(s) => {
                    if let Some(tx) = self.servers.get_mut(&s) {
                        tx.scheduled = None;
                    }
                    self.server_timers(now, s);
                }
            }
        }
    }

    fn client_timers(&mut self, now: Instant, id: ClientTxId) {
        let t2 = self.config.t2;
        let Some(tx) = self.clients.get_mut(&id) else { return };
        if tx.end_at.is_some_and(|t| t <= now) {
            return self.terminate(TxId::Client(id));
        }
        if tx.timeout_at.is_some_and(|t| t <= now) {
            tracing::debug!(tx = ?id, "client transaction timed out");
            self.events.push_back(TxEvent::Timeout(TxId::Client(id)));
            return self.terminate(TxId::Client(id));
        }
        if tx.retransmit_at.is_some_and(|t| t <= now) {
            // Timer A doubles without bound; Timer E doubles up to T2, and
            // is T2 once Proceeding (§17.1.2.2).
            tx.interval = match (tx.invite, tx.state) {
                (true, _) => tx.interval * 2,
                (false, ClientState::Proceeding) => t2,
                (false, _) => (tx.interval * 2).min(t2),
            };
            tx.retransmit_at = Some(now + tx.interval);
            self.transmits.push_back(Transmit { to: tx.to, payload: tx.payload.clone(), tx: Some(TxId::Client(id)) });
        }
        self.reschedule(TxId::Client(id));
    }

    fn server_timers(&mut self, now: Instant, id: ServerTxId) {
        let t2 = self.config.t2;
        let Some(tx) = self.servers.get_mut(&id) else { return };
        if tx.end_at.is_some_and(|t| t <= now) {
            return self.terminate(TxId::Server(id));
        }
        if tx.timeout_at.is_some_and(|t| t <= now) {
            tracing::debug!(tx = ?id, "no ACK (Timer H)");
            self.events.push_back(TxEvent::Timeout(TxId::Server(id)));
            return self.terminate(TxId::Server(id));
        }
        if tx.trying_at.is_some_and(|t| t <= now) {
            tx.trying_at = None;
            let trying = SipMessage::response_to(&tx.request, StatusCode::TRYING, None, None);
            let payload = Bytes::from(trying.to_bytes());
            tx.last_response = Some(payload.clone());
            self.transmits.push_back(Transmit { to: tx.reply_to, payload, tx: Some(TxId::Server(id)) });
        }
        if tx.retransmit_at.is_some_and(|t| t <= now) {
            // Timer G: doubles up to T2 (§17.2.1).
            tx.interval = (tx.interval * 2).min(t2);
            tx.retransmit_at = Some(now + tx.interval);
            if let Some(last) = tx.last_response.clone() {
                self.transmits.push_back(Transmit { to: tx.reply_to, payload: last, tx: Some(TxId::Server(id)) });
            }
        }
        self.reschedule(TxId::Server(id));
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Re-files a transaction under its earliest pending timer.
    fn reschedule(&mut self, id: TxId) {
        let (old, new) = match id {
            TxId::Client(c) => {
                let Some(tx) = self.clients.get_mut(&c) else { return };
                let new = [tx.retransmit_at, tx.timeout_at, tx.end_at].into_iter().flatten().min();
                (std::mem::replace(&mut tx.scheduled, new), new)
            }
            TxId::Server(s) => {
                let Some(tx) = self.servers.get_mut(&s) else { return };
                let new = [tx.trying_at, tx.retransmit_at, tx.timeout_at, tx.end_at].into_iter().flatten().min();
                (std::mem::replace(&mut tx.scheduled, new), new)
            }
        };
        if let Some(at) = old {
            self.timers.remove(&(at, id));
        }
        if let Some(at) = new {
            self.timers.insert((at, id));
        }
    }

    fn terminate(&mut self, id: TxId) {
        let scheduled = match id {
            TxId::Client(c) => {
                let Some(tx) = self.clients.remove(&c) else { return };
                self.client_keys.remove(&tx.key);
                // A held CANCEL dies with its INVITE.
                if let Some(p) = tx.partner
                    && self.clients.get(&p).is_some_and(|t| t.state == ClientState::Held)
                {
                    self.terminate(TxId::Client(p));
                }
                tx.scheduled
            }
            TxId::Server(s) => {
                let Some(tx) = self.servers.remove(&s) else { return };
                self.server_keys.remove(&tx.key);
                tx.scheduled
            }
        };
        self.lingering.remove(&id.seq());
        if let Some(at) = scheduled {
            self.timers.remove(&(at, id));
        }
        tracing::trace!(tx = ?id, "transaction terminated");
        self.events.push_back(TxEvent::Terminated(id));
    }
}

/// §18.2.2 with RFC 3581 §4: streams answer on the same connection; UDP
/// answers the source when `rport` was requested, else `received` (or the
/// sent-by IP, or the source IP when sent-by is a name) at the sent-by port.
fn response_target(via: &Via, from: TransportAddr) -> TransportAddr {
    if from.transport.is_reliable() || via.rport().is_some() {
        return from;
    }
    let ip = via.received().and_then(|r| r.parse::<IpAddr>().ok()).or(via.host.ip()).unwrap_or(from.addr.ip());
    TransportAddr { transport: from.transport, addr: SocketAddr::new(ip, via.port_or_default()), flow: None }
}

/// Lines of `name` copied verbatim from `msg`.
fn copy_lines(msg: &SipMessage, name: &str, out: &mut Vec<Header>) {
    out.extend(msg.all_headers().iter().filter(|h| h.is(name)).cloned());
}

/// The ACK for a non-2xx final response (§17.1.1.3): Request-URI, Call-ID,
/// From, top Via and Route of the INVITE, To of the response, CSeq number
/// with method ACK.
fn build_ack(invite: &SipMessage, resp: &SipMessage) -> Result<SipMessage, ParseError> {
    let uri = invite.request_uri().cloned().ok_or(ParseError::BadStartLine)?;
    let via = invite.top_via().ok_or(ParseError::MissingHeader("Via"))?;
    let mut h = vec![Header::new("Via", &via.to_string())?, Header::new("Max-Forwards", "70")?];
    copy_lines(invite, "From", &mut h);
    copy_lines(resp, "To", &mut h);
    copy_lines(invite, "Call-ID", &mut h);
    h.push(Header::new("CSeq", &format!("{} ACK", invite.cseq().seq))?);
    copy_lines(invite, "Route", &mut h);
    SipMessage::new_request(Method::Ack, uri, h, Vec::new())
}

/// A CANCEL for `invite` (§9.1): same Request-URI, Call-ID, To, From, CSeq
/// number and a single Via equal to the INVITE's top Via; Route copied.
fn build_cancel(invite: &SipMessage) -> Result<SipMessage, ParseError> {
    let uri = invite.request_uri().cloned().ok_or(ParseError::BadStartLine)?;
    let via = invite.top_via().ok_or(ParseError::MissingHeader("Via"))?;
    let mut h = vec![Header::new("Via", &via.to_string())?, Header::new("Max-Forwards", "70")?];
    copy_lines(invite, "From", &mut h);
    copy_lines(invite, "To", &mut h);
    copy_lines(invite, "Call-ID", &mut h);
    h.push(Header::new("CSeq", &format!("{} CANCEL", invite.cseq().seq))?);
    copy_lines(invite, "Route", &mut h);
    SipMessage::new_request(Method::Cancel, uri, h, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Contacts;

    fn udp(port: u16) -> TransportAddr {
        TransportAddr { transport: Transport::Udp, addr: SocketAddr::new([192, 0, 2, 10].into(), port), flow: None }
    }

    fn tcp(port: u16) -> TransportAddr {
        TransportAddr { transport: Transport::Tcp, addr: SocketAddr::new([192, 0, 2, 10].into(), port), flow: Some(7) }
    }

    fn request(method: &str, branch: &str, transport: &str, extra: &str) -> SipMessage {
        let text = format!(
            "{method} sip:bob@example.com SIP/2.0\r\n\
             Via: SIP/2.0/{transport} 192.0.2.10:5060;branch={branch}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=fa\r\nTo: <sip:bob@example.com>\r\n\
             Call-ID: call-1\r\nCSeq: 7 {method}\r\n{extra}\r\n"
        );
        SipMessage::parse(text.as_bytes()).unwrap()
    }

    fn invite(branch: &str) -> SipMessage {
        request("INVITE", branch, "UDP", "Route: <sip:edge.example.net;lr>\r\nContact: <sip:alice@192.0.2.10>\r\n")
    }

    fn reply(req: &SipMessage, code: u16) -> SipMessage {
        let tag = (code > 100).then_some("tb");
        SipMessage::response_to(req, StatusCode::new(code).unwrap(), None, tag)
    }

    fn layer() -> TransactionLayer {
        TransactionLayer::new(TransactionConfig::default())
    }

    fn transmits(l: &mut TransactionLayer) -> Vec<Transmit> {
        std::iter::from_fn(|| l.poll_transmit()).collect()
    }

    fn events(l: &mut TransactionLayer) -> Vec<TxEvent> {
        std::iter::from_fn(|| l.poll_event()).collect()
    }

    fn parsed(t: &Transmit) -> SipMessage {
        SipMessage::parse(&t.payload).unwrap()
    }

    /// Fires every timer up to `end`; returns (time since t0, transmit).
    fn run(l: &mut TransactionLayer, t0: Instant, end: Instant) -> Vec<(Duration, Transmit)> {
        let mut out = Vec::new();
        while let Some(at) = l.poll_timeout().filter(|at| *at <= end) {
            l.handle_timeout(at);
            out.extend(transmits(l).into_iter().map(|t| (at - t0, t)));
        }
        out
    }

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    #[test]
    fn client_invite_udp_timer_a_doubles_until_b() {
        let (mut l, t0) = (layer(), Instant::now());
        let id = l.send_request(t0, invite("z9hG4bKa1"), udp(5060)).unwrap();
        assert_eq!(transmits(&mut l).len(), 1);
        assert_eq!(l.client_state(id), Some(ClientState::Calling));
        let sent = run(&mut l, t0, t0 + Duration::from_secs(40));
        let times: Vec<Duration> = sent.iter().map(|(t, _)| *t).collect();
        assert_eq!(times, ms(&[500, 1500, 3500, 7500, 15500, 31500]));
        assert!(sent.iter().all(|(_, t)| parsed(t).method() == Some(&Method::Invite)));
        assert_eq!(events(&mut l), vec![TxEvent::Timeout(TxId::Client(id)), TxEvent::Terminated(TxId::Client(id))]);
        assert_eq!(l.poll_timeout(), None);
        assert!(l.is_empty());
    }

    #[test]
    fn client_non_invite_timer_e_capped_at_t2() {
        let (mut l, t0) = (layer(), Instant::now());
        let id = l.send_request(t0, request("REGISTER", "z9hG4bKr1", "UDP", ""), udp(5060)).unwrap();
        transmits(&mut l);
        let times: Vec<Duration> = run(&mut l, t0, t0 + Duration::from_secs(40)).into_iter().map(|(t, _)| t).collect();
        assert_eq!(times, ms(&[500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]));
        assert_eq!(events(&mut l)[0], TxEvent::Timeout(TxId::Client(id)));
    }

    #[test]
    fn client_non_invite_proceeding_retransmits_every_t2_then_k() {
        let (mut l, t0) = (layer(), Instant::now());
        let req = request("OPTIONS", "z9hG4bKo1", "UDP", "");
        let id = l.send_request(t0, req.clone(), udp(5060)).unwrap();
        transmits(&mut l);
        let at = t0 + Duration::from_millis(200);
        assert_eq!(l.handle_response(at, &reply(&req, 180), udp(5060)), ResponseDisposition::Deliver(id));
        assert_eq!(l.client_state(id), Some(ClientState::Proceeding));
        let times: Vec<Duration> = run(&mut l, t0, t0 + Duration::from_secs(9)).into_iter().map(|(t, _)| t).collect();
        assert_eq!(times, ms(&[500, 4500, 8500]));
        let done = t0 + Duration::from_secs(9);
        assert_eq!(l.handle_response(done, &reply(&req, 200), udp(5060)), ResponseDisposition::Deliver(id));
        assert_eq!(l.handle_response(done, &reply(&req, 200), udp(5060)), ResponseDisposition::Absorbed);
        assert_eq!(l.poll_timeout(), Some(done + Duration::from_secs(5)), "Timer K = T4");
        assert!(run(&mut l, t0, done + Duration::from_secs(5)).is_empty());
        assert_eq!(events(&mut l), vec![TxEvent::Terminated(TxId::Client(id))]);
    }

    #[test]
    fn reliable_transport_never_retransmits() {
        let (mut l, t0) = (layer(), Instant::now());
        let inv = l.send_request(t0, invite("z9hG4bKt1"), tcp(5060)).unwrap();
        let req = request("MESSAGE", "z9hG4bKt2", "TCP", "");
        let msg = l.send_request(t0, req.clone(), tcp(5060)).unwrap();
        assert_eq!(transmits(&mut l).len(), 2);
        assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(32)), "only Timers B and F");
        // Final response on a reliable transport: Timer K is zero.
        assert_eq!(l.handle_response(t0, &reply(&req, 200), tcp(5060)), ResponseDisposition::Deliver(msg));
        assert_eq!(events(&mut l), vec![TxEvent::Terminated(TxId::Client(msg))]);
        assert!(run(&mut l, t0, t0 + Duration::from_secs(40)).is_empty());
        assert_eq!(events(&mut l), vec![TxEvent::Timeout(TxId::Client(inv)), TxEvent::Terminated(TxId::Client(inv))]);
    }

    #[test]
    fn client_invite_failure_is_acked_and_timer_d() {
        let (mut l, t0) = (layer(), Instant::now());
        let req = invite("z9hG4bKf1");
        let id = l.send_request(t0, req.clone(), udp(5060)).unwrap();
        transmits(&mut l);
        let busy = reply(&req, 486);
        assert_eq!(l.handle_response(t0, &busy, udp(5060)), ResponseDisposition::Deliver(id));
        let ack = transmits(&mut l);
        assert_eq!(ack.len(), 1);
        let ack = parsed(&ack[0]);
        assert_eq!(ack.method(), Some(&Method::Ack));
        assert_eq!(ack.cseq().seq, 7);
        assert_eq!(ack.cseq().method, Method::Ack);
        assert_eq!(ack.top_via().unwrap().branch(), Some("z9hG4bKf1"));
        assert_eq!(ack.to().tag(), Some("tb"));
        assert_eq!(ack.request_uri(), req.request_uri());
        assert_eq!(ack.routes().unwrap().len(), 1);
        assert_eq!(ack.header("Contact"), None);
        // A retransmitted 486 is absorbed and re-ACKed.
        assert_eq!(l.handle_response(t0, &busy, udp(5060)), ResponseDisposition::Absorbed);
        assert_eq!(parsed(&transmits(&mut l)[0]).method(), Some(&Method::Ack));
        assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(32)), "Timer D");
        assert!(run(&mut l, t0, t0 + Duration::from_secs(32)).is_empty(), "no retransmits in Completed");
        assert_eq!(events(&mut l), vec![TxEvent::Terminated(TxId::Client(id))]);

        // On TCP Timer D is zero.
        let id = l.send_request(t0, req.clone(), tcp(5060)).unwrap();
        transmits(&mut l);
        assert_eq!(l.handle_response(t0, &busy, tcp(5060)), ResponseDisposition::Deliver(id));
        assert_eq!(transmits(&mut l).len(), 1, "the ACK");
        assert_eq!(events(&mut l), vec![TxEvent::Terminated(TxId::Client(id))]);
    }

    #[test]
    fn client_invite_2xx_accepted_passes_retransmissions_then_m() {
        let (mut l, t0) = (layer(), Instant::now());
        let req = invite("z9hG4bKs1");
        let id = l.send_request(t0, req.clone(), udp(5060)).unwrap();
        transmits(&mut l);
        assert_eq!(l.handle_response(t0, &reply(&req, 180), udp(5060)), ResponseDisposition::Deliver(id));
        let ok = reply(&req, 200);
        let at = t0 + Duration::from_secs(1);
        assert_eq!(l.handle_response(at, &ok, udp(5060)), ResponseDisposition::Deliver(id));
        assert_eq!(l.client_state(id), Some(ClientState::Accepted));
        assert!(transmits(&mut l).is_empty(), "the TU ACKs a 2xx");
        assert_eq!(l.handle_response(at, &ok, udp(5060)), ResponseDisposition::Deliver(id));
        assert_eq!(l.handle_response(at, &reply(&req, 180), udp(5060)), ResponseDisposition::Absorbed);
        assert_eq!(l.poll_timeout(), Some(at + Duration::from_secs(32)), "Timer M = 64*T1");
        run(&mut l, t0, at + Duration::from_secs(32));
        assert_eq!(events(&mut l), vec![TxEvent::Terminated(TxId::Client(id))]);
        assert_eq!(l.handle_response(at, &ok, udp(5060)), ResponseDisposition::Stray);
    }

    #[test]
    fn response_matching_uses_branch_and_cseq_method() {
        let (mut l, t0) = (layer(), Instant::now());
        let req = invite("z9hG4bKm1");
        l.send_request(t0, req.clone(), udp(5060)).unwrap();
        let mut other = reply(&req, 200);
        other.set_header("CSeq", "7 BYE").unwrap();
        assert_eq!(l.handle_response(t0, &other, udp(5060)), ResponseDisposition::Stray);
        let wrong_branch = reply(&invite("z9hG4bKzz"), 200);
        assert_eq!(l.handle_response(t0, &wrong_branch, udp(5060)), ResponseDisposition::Stray);
        assert!(matches!(l.send_request(t0, req, udp(5060)), Err(TxError::DuplicateBranch)));
        let legacy = request("OPTIONS", "1234", "UDP", "");
        assert!(matches!(l.send_request(t0, legacy, udp(5060)), Err(TxError::NoBranch)));
        let ack = request("ACK", "z9hG4bKack", "UDP", "");
        assert!(matches!(l.send_request(t0, ack, udp(5060)), Err(TxError::AckIsNotATransaction)));
    }

    #[test]
    fn server_non_invite_absorbs_retransmissions_and_timer_j() {
        let (mut l, t0) = (layer(), Instant::now());
        let req = request("REGISTER", "z9hG4bKsr1", "UDP", "Contact: <sip:alice@192.0.2.10>\r\n");
        let RequestDisposition::New(id) = l.handle_request(t0, &req, udp(5060)) else { panic!() };
        assert!(matches!(l.server_request(id).unwrap().contacts(), Ok(Contacts::Bindings(_))));
        assert_eq!(l.server_state(id), Some(ServerState::Trying));
        // Retransmission before any response: absorbed silently.
        assert_eq!(l.handle_request(t0, &req, udp(5060)), RequestDisposition::Retransmission);
        assert!(transmits(&mut l).is_empty());
        l.respond(t0, id, reply(&req, 200)).unwrap();
        let sent = transmits(&mut l);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].to, udp(5060));
        assert_eq!(parsed(&sent[0]).status(), Some(StatusCode::OK));
        // Retransmission after the final: the 200 is re-sent by the layer.
        let at = t0 + Duration::from_secs(2);
        assert_eq!(l.handle_request(at, &req, udp(5060)), RequestDisposition::Retransmission);
        assert_eq!(transmits(&mut l)[0].payload, sent[0].payload);
        assert!(matches!(l.respond(at, id, reply(&req, 500)), Err(TxError::InvalidState(_))));
        assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(32)), "Timer J = 64*T1");
        run(&mut l, t0, t0 + Duration::from_secs(32));
        assert_eq!(events(&mut l), vec![TxEvent::Terminated(TxId::Server(id))]);
        // After J a retransmission is a new request.
        assert!(matches!(l.handle_request(at, &req, udp(5060)), RequestDisposition::New(_)));

        // Reliable: J is zero.
        let req = request("REGISTER", "z9hG4bKsr2", "TCP", "");
        let RequestDisposition::New(id) = l.handle_request(t0, &req, tcp(40000)) else { panic!() };
        l.respond(t0, id, reply(&req, 200)).unwrap();
        assert_eq!(transmits(&mut l)[0].to, tcp(40000), "same connection");
        assert_eq!(events(&mut l), vec![TxEvent::Terminated(TxId::Server(id))]);
    }

    #[test]
    fn server_invite_automatic_trying_and_provisional_resend() {
        let (mut l, t0) = (layer(), Instant::now());
        let req = invite("z9hG4bKsi1");
        let RequestDisposition::New(id) = l.handle_request(t0, &req, udp(5060)) else { panic!() };
        assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_millis(200)));
        let sent = run(&mut l, t0, t0 + Duration::from_millis(300));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, Duration::from_millis(200));
        let trying = parsed(&sent[0].1);
        assert_eq!(trying.status(), Some(StatusCode::TRYING));
        assert_eq!(trying.to().tag(), None);
        assert_eq!(l.handle_request(t0, &req, udp(5060)), RequestDisposition::Retransmission);
        assert_eq!(parsed(&transmits(&mut l)[0]).status(), Some(StatusCode::TRYING));
        l.respond(t0, id, reply(&req, 180)).unwrap();
        transmits(&mut l);
        assert_eq!(l.handle_request(t0, &req, udp(5060)), RequestDisposition::Retransmission);
        assert_eq!(parsed(&transmits(&mut l)[0]).status(), Some(StatusCode::RINGING));
        assert_eq!(l.poll_timeout(), None, "Proceeding has no timers");

        // A TU that answers within 200 ms suppresses the automatic 100.
        let req = invite("z9hG4bKsi2");
        let RequestDisposition::New(id) = l.handle_request(t0, &req, udp(5060)) else { panic!() };
        l.respond(t0 + Duration::from_millis(50), id, reply(&req, 180)).unwrap();
        transmits(&mut l);
        assert!(run(&mut l, t0, t0 + Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn server_invite_failure_timer_g_then_ack_and_timer_i() {
        let (mut l, t0) = (layer(), Instant::now());
        let req = invite("z9hG4bKsf1");
        let RequestDisposition::New(id) = l.handle_request(t0, &req, udp(5060)) else { panic!() };
        l.respond(t0, id, reply(&req, 486)).unwrap();
        assert_eq!(transmits(&mut l).len(), 1);
        assert_eq!(l.server_state(id), Some(ServerState::Completed));
        let times: Vec<Duration> =
            run(&mut l, t0, t0 + Duration::from_millis(12_000)).into_iter().map(|(t, _)| t).collect();
        assert_eq!(times, ms(&[500, 1500, 3500, 7500, 11500]), "Timer G capped at T2");
        // The ACK (same branch) is absorbed: Confirmed, Timer I = T4.
        let at = t0 + Duration::from_secs(12);
        let ack = request("ACK", "z9hG4bKsf1", "UDP", "");
        assert_eq!(l.handle_request(at, &ack, udp(5060)), RequestDisposition::AckAbsorbed);
        assert_eq!(l.server_state(id), Some(ServerState::Confirmed));
        assert_eq!(l.handle_request(at, &ack, udp(5060)), RequestDisposition::AckAbsorbed);
        assert_eq!(l.poll_timeout(), Some(at + Duration::from_secs(5)));
        assert!(run(&mut l, t0, at + Duration::from_secs(5)).is_empty());
        assert_eq!(events(&mut l), vec![TxEvent::Terminated(TxId::Server(id))]);
    }

    #[test]
    fn server_invite_failure_without_ack_timer_h() {
        let (mut l, t0) = (layer(), Instant::now());
        let req = request("INVITE", "z9hG4bKsh1", "TCP", "");
        let RequestDisposition::New(id) = l.handle_request(t0, &req, tcp(5060)) else { panic!() };
        l.respond(t0, id, reply(&req, 603)).unwrap();
        transmits(&mut l);
        assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(32)), "reliable: no G, only H");
        assert!(run(&mut l, t0, t0 + Duration::from_secs(32)).is_empty());
        assert_eq!(events(&mut l), vec![TxEvent::Timeout(TxId::Server(id)), TxEvent::Terminated(TxId::Server(id))]);

        // On TCP the ACK ends the transaction at once (Timer I = 0).
        let req = request("INVITE", "z9hG4bKsh2", "TCP", "");
        let RequestDisposition::New(id) = l.handle_request(t0, &req, tcp(5060)) else { panic!() };
        l.respond(t0, id, reply(&req, 486)).unwrap();
        let ack = request("ACK", "z9hG4bKsh2", "TCP", "");
        assert_eq!(l.handle_request(t0, &ack, tcp(5060)), RequestDisposition::AckAbsorbed);
        assert_eq!(events(&mut l), vec![TxEvent::Terminated(TxId::Server(id))]);
    }

    #[test]
    fn server_invite_2xx_accepted_and_ack_to_tu() {
        let (mut l, t0) = (layer(), Instant::now());
        let req = invite("z9hG4bKsa1");
        let RequestDisposition::New(id) = l.handle_request(t0, &req, udp(5060)) else { panic!() };
        let ok = reply(&req, 200);
        l.respond(t0, id, ok.clone()).unwrap();
        transmits(&mut l);
        assert_eq!(l.server_state(id), Some(ServerState::Accepted));
        // RFC 6026: retransmitted INVITE absorbed without a re-sent 2xx.
        assert_eq!(l.handle_request(t0, &req, udp(5060)), RequestDisposition::Retransmission);
        assert!(transmits(&mut l).is_empty());
        // Further 2xx from the TU (forked answers, UAS retransmits) go out.
        l.respond(t0, id, ok.clone()).unwrap();
        assert_eq!(transmits(&mut l).len(), 1);
        assert!(matches!(l.respond(t0, id, reply(&req, 486)), Err(TxError::InvalidState(_))));
        // The 2xx ACK is its own transaction (new branch) → TU.
        let ack = request("ACK", "z9hG4bKnewbranch", "UDP", "");
        assert_eq!(l.handle_request(t0, &ack, udp(5060)), RequestDisposition::Ack { invite: None });
        let same = request("ACK", "z9hG4bKsa1", "UDP", "");
        assert_eq!(l.handle_request(t0, &same, udp(5060)), RequestDisposition::Ack { invite: Some(id) });
        assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(32)), "Timer L");
        run(&mut l, t0, t0 + Duration::from_secs(32));
        assert_eq!(events(&mut l), vec![TxEvent::Terminated(TxId::Server(id))]);
    }

    #[test]
    fn server_cancel_matches_invite_but_is_its_own_transaction() {
        let (mut l, t0) = (layer(), Instant::now());
        let inv = invite("z9hG4bKc1");
        let RequestDisposition::New(iid) = l.handle_request(t0, &inv, udp(5060)) else { panic!() };
        let cancel = request("CANCEL", "z9hG4bKc1", "UDP", "");
        let RequestDisposition::Cancel { tx, invite: Some(target) } = l.handle_request(t0, &cancel, udp(5060)) else {
            panic!()
        };
        assert_eq!(target, iid);
        assert_ne!(tx, iid);
        assert_eq!(l.handle_request(t0, &cancel, udp(5060)), RequestDisposition::Retransmission);
        l.respond(t0, tx, reply(&cancel, 200)).unwrap();
        l.respond(t0, iid, reply(&inv, 487)).unwrap();
        let sent: Vec<SipMessage> = transmits(&mut l).iter().map(parsed).collect();
        assert_eq!(sent[0].cseq().method, Method::Cancel);
        assert_eq!(sent[1].status(), Some(StatusCode::REQUEST_TERMINATED));
        // Response for the wrong transaction is refused.
        assert_eq!(l.respond(t0, tx, reply(&inv, 200)), Err(TxError::Mismatch));
        // A CANCEL matching nothing (other sent-by) carries no target.
        let mut stray = request("CANCEL", "z9hG4bKc1", "UDP", "");
        stray.pop_via();
        stray.push_via(&Via::parse("SIP/2.0/UDP 198.51.100.1;branch=z9hG4bKc1").unwrap()).unwrap();
        assert!(matches!(l.handle_request(t0, &stray, udp(5060)), RequestDisposition::Cancel { invite: None, .. }));
    }

    #[test]
    fn client_cancel_waits_for_provisional() {
        let (mut l, t0) = (layer(), Instant::now());
        let req = invite("z9hG4bKcc1");
        let inv = l.send_request(t0, req.clone(), udp(5060)).unwrap();
        transmits(&mut l);
        let cancel = l.cancel_request(t0, inv).unwrap();
        assert_eq!(l.cancel_request(t0, inv).unwrap(), cancel, "idempotent");
        assert!(transmits(&mut l).is_empty(), "no CANCEL before a provisional (§9.1)");
        assert_eq!(l.client_state(cancel), Some(ClientState::Held));
        let at = t0 + Duration::from_millis(100);
        assert_eq!(l.handle_response(at, &reply(&req, 180), udp(5060)), ResponseDisposition::Deliver(inv));
        let sent = transmits(&mut l);
        assert_eq!(sent.len(), 1);
        let c = parsed(&sent[0]);
        assert_eq!(c.method(), Some(&Method::Cancel));
        assert_eq!(c.cseq().seq, 7);
        assert_eq!(c.cseq().method, Method::Cancel);
        assert_eq!(c.request_uri(), req.request_uri());
        assert_eq!(c.vias(), &req.vias()[..1]);
        assert_eq!(c.to(), req.to());
        assert_eq!(c.from(), req.from());
        assert_eq!(c.routes().unwrap(), req.routes().unwrap());
        assert_eq!(c.header("Contact"), None);
        // Its 200 goes to the CANCEL transaction, the 487 to the INVITE's.
        let ok = SipMessage::response_to(&c, StatusCode::OK, None, Some("tb"));
        assert_eq!(l.handle_response(at, &ok, udp(5060)), ResponseDisposition::Deliver(cancel));
        assert_eq!(l.handle_response(at, &reply(&req, 487), udp(5060)), ResponseDisposition::Deliver(inv));
        assert!(matches!(l.cancel_request(at, inv), Ok(id) if id == cancel));

        // A final response before any provisional drops the held CANCEL.
        let req = invite("z9hG4bKcc2");
        let inv = l.send_request(t0, req.clone(), udp(5060)).unwrap();
        let cancel = l.cancel_request(t0, inv).unwrap();
        transmits(&mut l);
        events(&mut l);
        l.handle_response(t0, &reply(&req, 404), udp(5060));
        let sent = transmits(&mut l);
        assert_eq!(sent.len(), 1, "only the ACK");
        assert_eq!(parsed(&sent[0]).method(), Some(&Method::Ack));
        assert_eq!(events(&mut l), vec![TxEvent::Terminated(TxId::Client(cancel))]);
        assert!(matches!(l.cancel_request(t0, inv), Err(TxError::InvalidState(_))));
    }

    #[test]
    fn lingering_transactions_do_not_count_and_are_bounded() {
        let config = TransactionConfig { max_transactions: 2, max_lingering: 3, ..TransactionConfig::default() };
        let (mut l, t0) = (TransactionLayer::new(config), Instant::now());
        let mut answered = Vec::new();
        // Five REGISTERs over UDP, each answered at once: every one enters
        // Completed (Timer J, 32 s), yet the working cap of 2 is never hit.
        for i in 0..5 {
            let r = request("REGISTER", &format!("z9hG4bKling{i}"), "UDP", "");
            let RequestDisposition::New(tx) = l.handle_request(t0, &r, udp(5060)) else {
                panic!("request {i} refused with {} working, {} lingering", l.working(), l.lingering())
            };
            l.respond(t0, tx, reply(&r, 200)).unwrap();
            answered.push((r, tx));
        }
        transmits(&mut l);
        assert_eq!(l.working(), 0);
        // At most 3 linger: the two oldest ended early, the newest remain.
        assert_eq!((l.lingering(), l.len()), (3, 3));
        let ended: Vec<TxEvent> = events(&mut l);
        assert!(ended.contains(&TxEvent::Terminated(TxId::Server(answered[0].1))), "{ended:?}");
        assert!(ended.contains(&TxEvent::Terminated(TxId::Server(answered[1].1))), "{ended:?}");
        // A retransmission of a lingering one is still absorbed with its answer.
        let (r4, _) = &answered[4];
        assert_eq!(l.handle_request(t0, r4, udp(5060)), RequestDisposition::Retransmission);
        assert_eq!(parsed(&transmits(&mut l)[0]).status(), Some(StatusCode::OK));
        // One ended early is a new request again.
        let (r0, _) = &answered[0];
        assert!(matches!(l.handle_request(t0, r0, udp(5060)), RequestDisposition::New(_)));
        // Working transactions still hit the cap.
        let inv = invite("z9hG4bKling-inv");
        assert!(matches!(l.handle_request(t0, &inv, udp(5060)), RequestDisposition::New(_)));
        let o = request("OPTIONS", "z9hG4bKling-opt", "UDP", "");
        assert_eq!(l.handle_request(t0, &o, udp(5060)), RequestDisposition::Overloaded);
        // Timer J ends the rest; nothing lingers afterwards.
        l.handle_timeout(t0 + Duration::from_secs(33));
        assert_eq!(l.lingering(), 0);
    }

    #[test]
    fn capacity_limit_answers_503() {
        let config = TransactionConfig { max_transactions: 2, ..TransactionConfig::default() };
        let (mut l, t0) = (TransactionLayer::new(config), Instant::now());
        let a = request("REGISTER", "z9hG4bKcap1", "UDP", "");
        let inv = invite("z9hG4bKcap2");
        let RequestDisposition::New(first) = l.handle_request(t0, &a, udp(5060)) else { panic!() };
        assert!(matches!(l.handle_request(t0, &inv, udp(5060)), RequestDisposition::New(_)));
        let c = request("OPTIONS", "z9hG4bKcap3", "UDP", "");
        assert_eq!(l.handle_request(t0, &c, udp(5060)), RequestDisposition::Overloaded);
        let sent = transmits(&mut l);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].tx, None);
        let busy = parsed(&sent[0]);
        assert_eq!(busy.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(busy.header("Retry-After"), Some("5"));
        assert!(busy.to().tag().is_some());
        assert_eq!(l.len(), 2);
        // ACKs and a CANCEL for a live INVITE still get through.
        let ack = request("ACK", "z9hG4bKother", "UDP", "");
        assert_eq!(l.handle_request(t0, &ack, udp(5060)), RequestDisposition::Ack { invite: None });
        let cancel = request("CANCEL", "z9hG4bKcap2", "UDP", "");
        let RequestDisposition::Cancel { tx: cancel_tx, invite: Some(_) } = l.handle_request(t0, &cancel, udp(5060))
        else {
            panic!()
        };
        assert!(matches!(
            l.send_request(t0, request("OPTIONS", "z9hG4bKout", "UDP", ""), udp(5060)),
            Err(TxError::Overloaded)
        ));
        // Room again once transactions end.
        l.transport_error(TxId::Server(first));
        assert_eq!(
            events(&mut l),
            vec![TxEvent::TransportError(TxId::Server(first)), TxEvent::Terminated(TxId::Server(first))]
        );
        l.transport_error(TxId::Server(first));
        assert!(events(&mut l).is_empty(), "reported once");
        let c = request("OPTIONS", "z9hG4bKcap4", "UDP", "");
        assert_eq!(l.respond(t0, ServerTxId(999), reply(&c, 200)), Err(TxError::Unknown));
        // Still full (INVITE + CANCEL) until another one ends.
        assert_eq!(l.handle_request(t0, &c, udp(5060)), RequestDisposition::Overloaded);
        l.transport_error(TxId::Server(cancel_tx));
        assert!(matches!(l.handle_request(t0, &c, udp(5060)), RequestDisposition::New(_)));
    }

    #[test]
    fn response_addressing() {
        let (mut l, t0) = (layer(), Instant::now());
        let nat = TransportAddr { transport: Transport::Udp, addr: "203.0.113.9:61000".parse().unwrap(), flow: None };
        // rport requested: answer the source address and port (RFC 3581).
        let mut req = request("OPTIONS", "z9hG4bKad1", "UDP", "");
        req.set_top_via_param("rport", None).unwrap();
        req.stamp_received(nat.addr).unwrap();
        let RequestDisposition::New(id) = l.handle_request(t0, &req, nat) else { panic!() };
        l.respond(t0, id, reply(&req, 200)).unwrap();
        assert_eq!(transmits(&mut l)[0].to, nat);
        // No rport: received address, sent-by port (§18.2.2).
        let mut req = request("OPTIONS", "z9hG4bKad2", "UDP", "");
        req.stamp_received(nat.addr).unwrap();
        let RequestDisposition::New(id) = l.handle_request(t0, &req, nat) else { panic!() };
        l.respond(t0, id, reply(&req, 200)).unwrap();
        assert_eq!(transmits(&mut l)[0].to.addr, "203.0.113.9:5060".parse().unwrap());
    }

    #[test]
    fn server_matching_uses_sent_by_and_rfc2543_fallback() {
        let (mut l, t0) = (layer(), Instant::now());
        let a = request("OPTIONS", "z9hG4bKsame", "UDP", "");
        let mut b = a.clone();
        b.pop_via();
        b.push_via(&Via::parse("SIP/2.0/UDP 198.51.100.2:5060;branch=z9hG4bKsame").unwrap()).unwrap();
        assert!(matches!(l.handle_request(t0, &a, udp(5060)), RequestDisposition::New(_)));
        assert!(matches!(l.handle_request(t0, &b, udp(5060)), RequestDisposition::New(_)));

        // RFC 2543 peer: no magic cookie; matched on Request-URI, tags, Call-ID, CSeq, Via.
        let old = request("INVITE", "oldbranch", "UDP", "");
        let RequestDisposition::New(id) = l.handle_request(t0, &old, udp(5060)) else { panic!() };
        assert_eq!(l.handle_request(t0, &old, udp(5060)), RequestDisposition::Retransmission);
        l.respond(t0, id, reply(&old, 404)).unwrap();
        let mut ack = request("ACK", "oldbranch", "UDP", "");
        ack.set_header("To", "<sip:bob@example.com>;tag=tb").unwrap();
        assert_eq!(l.handle_request(t0, &ack, udp(5060)), RequestDisposition::AckAbsorbed);
        assert_eq!(l.server_state(id), Some(ServerState::Confirmed));
    }

    #[test]
    fn transport_error_ends_client_transaction() {
        let (mut l, t0) = (layer(), Instant::now());
        let id = l.send_request(t0, invite("z9hG4bKte"), tcp(5060)).unwrap();
        let t = transmits(&mut l).remove(0);
        assert_eq!(t.tx, Some(TxId::Client(id)));
        l.transport_error(TxId::Client(id));
        assert_eq!(
            events(&mut l),
            vec![TxEvent::TransportError(TxId::Client(id)), TxEvent::Terminated(TxId::Client(id))]
        );
        assert_eq!(l.poll_timeout(), None);
        assert!(matches!(l.cancel_request(t0, id), Err(TxError::Unknown)));
    }
}
