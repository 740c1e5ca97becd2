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

mod client;
mod server;
mod transport;

#[cfg(test)]
mod test_support;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::message::{Method, ParseError, SipMessage};

pub use client::ClientState;
pub use server::ServerState;
pub use transport::{Transport, TransportAddr};

use client::ClientTx;
use server::{ServerKey, ServerTx};

/// The RFC 3261 branch prefix (§8.1.1.7).
pub const MAGIC_COOKIE: &str = "z9hG4bK";

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::StatusCode;
    use crate::sip::transaction::test_support::*;

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
}
