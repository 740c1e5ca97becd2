//! A SIP user agent (a phone), sans-IO: REGISTER with digest and refresh
//! (RFC 3261 §10.2, §22), calls as caller and callee (§13–§15: INVITE,
//! 180, 200, ACK, CANCEL, BYE, with dialogs per §12), MESSAGE (RFC 3428)
//! and OPTIONS (§11). One [`UserAgent`] per phone; the simulator drives
//! thousands of them in virtual time, a softphone drives one over sockets.
//!
//! Every request goes to one next hop (the registrar / outbound proxy,
//! [`UaConfig::next_hop`]); the owner delivers [`UaTransmit`]s and feeds
//! back what arrives ([`UserAgent::handle_input`]). Time is an input, the
//! randomness (tags, branches, Call-IDs, cnonces) comes from
//! [`UaConfig::seed`]: the same inputs give the same bytes.
//!
//! Retransmissions and timeouts are the transaction layer's
//! ([`crate::sip::transaction`]); the user agent core adds what RFC 3261
//! leaves to it: the end-to-end ACK of a 2xx (§13.2.2.4), the UAS's own 2xx
//! retransmission until the ACK (§13.3.1.4) and the registration refresh.
//!
//! Queues: events and transmissions are drained by the owner after each
//! input; beyond [`QUEUE_CAP`] entries the newest is dropped and counted (a
//! dropped datagram is recovered by retransmission).
//!
//! Not done: TCP/TLS flows and RFC 5626 outbound keep-alives, PRACK
//! (RFC 3262), early media, re-INVITEs we originate, strict routing
//! (§12.2.1.1 with a route set lacking `lr`), SDP negotiation (the media
//! module's job: bodies are passed through, or a fixed PCMU offer/answer).

mod auth;
mod build;
mod call;
mod pager;
mod register;

#[cfg(test)]
mod edge_tests;
#[cfg(test)]
mod tests;

pub use auth::{CachedAuth, Challenge, authorization, parse_challenge, pick_challenge};

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;

use self::build::{Dialog, Rng};
use self::call::Call;
use self::pager::Outgoing;
use self::register::Registration;
use super::digest::DigestAlgorithm;
use super::message::{Host, NameAddr, ParseError, SipMessage, Uri};
use super::transaction::{
    ClientTxId, RequestDisposition, ResponseDisposition, TransactionConfig, TransactionLayer, Transport, TransportAddr,
    TxEvent, TxId,
};

/// Events and transmissions kept at most before the newest is dropped.
pub const QUEUE_CAP: usize = 1024;

/// Methods we answer (§20.5 Allow).
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE";

/// One phone's configuration.
#[derive(Debug, Clone)]
pub struct UaConfig {
    /// Address of record, `sip:user@domain`.
    pub aor: String,
    /// Digest username (normally the AOR's user part).
    pub auth_user: String,
    pub password: String,
    /// Where every request goes: the registrar / outbound proxy. Its
    /// transport is the one the phone uses (UDP; stream flows later).
    pub next_hop: TransportAddr,
    /// Host and port in our Via and Contact.
    pub contact: (String, u16),
    /// RTP port of the default SDP.
    pub media_port: u16,
    /// Registration lifetime asked for (Expires).
    pub register_expires: u32,
    /// Answer incoming calls this long after they ring (`None`: wait for
    /// [`UserAgent::answer`]).
    pub auto_answer: Option<Duration>,
    /// Digest algorithms we answer, in the order the server lists them
    /// (RFC 8760 §2.4: first supported challenge wins).
    pub algorithms: Vec<DigestAlgorithm>,
    /// Wait before registering again after a REGISTER failed with a
    /// timeout or 5xx (no retry after 401/403: the password is wrong).
    pub register_retry: Duration,
    /// Seeds tags, branches, Call-IDs and cnonces.
    pub seed: u64,
    /// T1/T2/T4 and Timers B/D/F (the transaction cap is irrelevant here).
    pub timers: TransactionConfig,
}

impl UaConfig {
    /// Defaults: username from the AOR, 3600 s registrations, no
    /// auto-answer, SHA-256 and MD5, retry after 30 s, RTP port 4000.
    pub fn new(aor: &str, password: &str, next_hop: TransportAddr, contact: (String, u16), seed: u64) -> UaConfig {
        let user = aor.strip_prefix("sip:").unwrap_or(aor).split('@').next().unwrap_or_default().to_owned();
        let timers = TransactionConfig { auto_trying: None, ..TransactionConfig::default() };
        UaConfig {
            aor: aor.to_owned(),
            auth_user: user,
            password: password.to_owned(),
            next_hop,
            contact,
            media_port: 4000,
            register_expires: 3600,
            auto_answer: None,
            algorithms: vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5],
            register_retry: Duration::from_secs(30),
            seed,
            timers,
        }
    }
}

/// Names a call; comes back in call events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

/// Names a MESSAGE we sent; comes back in its outcome event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub u64);

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "call{}", self.0)
    }
}

/// What happened, for the owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UaEvent {
    /// The registrar granted `expires` seconds (a refresh is scheduled at half).
    Registered {
        expires: u32,
    },
    /// REGISTER failed with this status (408 for a timeout, 503 for a
    /// transport error).
    RegistrationFailed {
        code: u16,
    },
    Unregistered,
    /// 180/183 for our call.
    Ringing {
        call: CallId,
    },
    /// Caller: 2xx received and ACKed, `setup` since the first INVITE.
    /// Callee: the ACK arrived, `setup` since the INVITE did.
    CallEstablished {
        call: CallId,
        setup: Duration,
    },
    /// Our call got a final non-2xx (487 after our CANCEL, 408 on timeout),
    /// or (callee) our 2xx was never ACKed.
    CallFailed {
        call: CallId,
        code: u16,
    },
    /// A call ended: by BYE, or (callee) cancelled by the caller
    /// (`by_remote`), or by [`UserAgent::hangup`].
    CallEnded {
        call: CallId,
        by_remote: bool,
    },
    /// An INVITE arrived and rings; `from` is the caller's URI.
    IncomingCall {
        call: CallId,
        from: String,
    },
    MessageReceived {
        from: String,
        body: Vec<u8>,
    },
    MessageDelivered {
        id: MessageId,
    },
    MessageFailed {
        id: MessageId,
        code: u16,
    },
}

/// Bytes to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UaTransmit {
    pub to: TransportAddr,
    pub payload: Bytes,
}

/// Local misuse or a bad argument.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UaError {
    #[error("AOR `{0}` is not sip:user@host")]
    BadAor(String),
    #[error("contact host `{0}` is not a host name or IP address")]
    BadContact(String),
    #[error("`{0}` is not a SIP URI")]
    BadTarget(String),
    #[error("no such call")]
    UnknownCall,
    #[error("not possible in this call state: {0}")]
    InvalidState(&'static str),
    #[error("could not build the request: {0}")]
    Build(#[from] ParseError),
    #[error("transaction refused: {0}")]
    Transaction(String),
}

/// Counters of input that was ignored or answered with an error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct UaCounters {
    /// Datagrams that did not parse (dropped).
    pub malformed: u64,
    /// Responses matching nothing we sent, and ACKs for no dialog (dropped).
    pub stray_responses: u64,
    /// In-dialog requests for a dialog we do not have (answered 481).
    pub unknown_dialog: u64,
    /// Requests we refused (405, 400, 481…).
    pub rejected_requests: u64,
    /// Our 2xx retransmissions (§13.3.1.4).
    pub retransmitted_2xx: u64,
    /// Events or transmissions dropped at [`QUEUE_CAP`].
    pub queue_drops: u64,
}

/// What a client transaction is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Register,
    Invite(CallId),
    Cancel(CallId),
    Bye(CallId),
    /// A BYE for a dialog we do not keep (a second fork's 2xx, an
    /// unacknowledged 2xx): no event.
    OrphanBye,
    Message(MessageId),
}

/// Deadlines besides the transaction layer's; checked against the state
/// they belong to when they fire (lazy invalidation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Refresh,
    Answer(CallId),
    Resend2xx(CallId),
}

/// One phone. See the module doc.
#[derive(Debug)]
pub struct UserAgent {
    cfg: UaConfig,
    /// `<sip:user@domain>` without tag.
    aor: NameAddr,
    /// `<sip:user@host:port>`.
    contact: String,
    via_prefix: String,
    tl: TransactionLayer,
    rng: Rng,
    reg: Registration,
    /// Values boxed: a B-tree leaf holds 11 of them and a phone has few.
    calls: BTreeMap<CallId, Box<Call>>,
    /// (Call-ID, local tag) → call: in-dialog requests and stray 2xx.
    dialogs: BTreeMap<(String, String), CallId>,
    messages: BTreeMap<MessageId, Box<Outgoing>>,
    clients: BTreeMap<ClientTxId, Purpose>,
    timers: BTreeSet<(Instant, Timer)>,
    /// The last 401 / 407 challenge, answered again with a higher `nc`.
    www_auth: Option<Box<CachedAuth>>,
    proxy_auth: Option<Box<CachedAuth>>,
    out: VecDeque<UaTransmit>,
    events: VecDeque<UaEvent>,
    counters: UaCounters,
    next_id: u64,
}

impl UserAgent {
    /// A phone that has not registered yet.
    pub fn new(cfg: UaConfig) -> Result<UserAgent, UaError> {
        let aor_uri = Uri::parse(&cfg.aor).map_err(|_| UaError::BadAor(cfg.aor.clone()))?;
        let sip = aor_uri.as_sip().filter(|u| u.user_name().is_some()).ok_or(UaError::BadAor(cfg.aor.clone()))?;
        let user = sip.user_name().unwrap_or_default().to_owned();
        let host = Host::parse(&cfg.contact.0).map_err(|_| UaError::BadContact(cfg.contact.0.clone()))?;
        let transport = cfg.next_hop.transport;
        let param = if transport == Transport::Udp {
            String::new()
        } else {
            format!(";transport={}", transport.via_name().to_ascii_lowercase())
        };
        let contact = format!("<sip:{user}@{host}:{}{param}>", cfg.contact.1);
        let via_prefix = format!("SIP/2.0/{} {host}:{}", transport.via_name(), cfg.contact.1);
        let mut rng = Rng::new(cfg.seed);
        let reg = Registration::new(&mut rng, &host.to_string(), cfg.register_expires);
        Ok(UserAgent {
            aor: NameAddr::new(aor_uri),
            contact,
            via_prefix,
            tl: TransactionLayer::new(cfg.timers.clone()),
            rng,
            reg,
            calls: BTreeMap::new(),
            dialogs: BTreeMap::new(),
            messages: BTreeMap::new(),
            clients: BTreeMap::new(),
            timers: BTreeSet::new(),
            www_auth: None,
            proxy_auth: None,
            out: VecDeque::new(),
            events: VecDeque::new(),
            counters: UaCounters::default(),
            next_id: 0,
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &UaConfig {
        &self.cfg
    }

    /// Sends later requests to `hop` (e.g. another serving node after the
    /// first died); cached digest challenges are forgotten. Call
    /// [`UserAgent::register`] to register there.
    pub fn set_next_hop(&mut self, hop: TransportAddr) {
        self.cfg.next_hop = hop;
        self.www_auth = None;
        self.proxy_auth = None;
    }

    /// A datagram (or deframed stream message) from `from`. Never fails:
    /// garbage is counted and dropped, requests we cannot serve are answered
    /// with the standard error.
    pub fn handle_input(&mut self, now: Instant, from: TransportAddr, bytes: &[u8]) {
        match SipMessage::parse(bytes) {
            // RFC 5626 §3.5.1 keep-alive CRLFs.
            Err(ParseError::Empty) => {}
            Err(e) => {
                tracing::debug!(error = %e, "unparseable SIP message dropped");
                self.counters.malformed += 1;
            }
            Ok(mut msg) if msg.is_request() => {
                // §18.2.1 / RFC 3581 §4: where it really came from.
                if msg.stamp_received(from.addr).is_err() {
                    self.counters.malformed += 1;
                    return;
                }
                self.on_request(now, msg, from);
            }
            Ok(msg) => self.on_response(now, msg, from),
        }
        self.settle(now);
    }

    /// Fires due timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tl.handle_timeout(now);
        self.settle(now);
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Refresh => self.refresh_due(now, at),
                Timer::Answer(call) => self.answer_due(now, call, at),
                Timer::Resend2xx(call) => self.resend_due(now, call, at),
            }
            self.settle(now);
        }
    }

    /// When [`UserAgent::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.tl.poll_timeout(), self.timers.first().map(|(at, _)| *at)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next datagram to send; drain until `None`.
    pub fn poll_transmit(&mut self) -> Option<UaTransmit> {
        self.out.pop_front()
    }

    /// The next event; drain until `None`.
    pub fn poll_event(&mut self) -> Option<UaEvent> {
        self.events.pop_front()
    }

    /// Counters of ignored or refused input.
    pub fn counters(&self) -> UaCounters {
        self.counters
    }

    /// Whether the last REGISTER succeeded and no unregister followed.
    pub fn is_registered(&self) -> bool {
        self.reg.registered
    }

    /// Calls in progress (ringing, established or ending).
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    // ---- plumbing shared by the parts

    /// `sip:domain`, the REGISTER Request-URI (§10.2).
    fn registrar_uri(&self) -> Uri {
        match self.aor.uri.as_sip() {
            Some(u) => Uri::Sip(super::message::SipUri::new(u.host.clone(), u.port)),
            None => self.aor.uri.clone(),
        }
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn via(&mut self) -> String {
        format!("{};branch={};rport", self.via_prefix, self.rng.branch())
    }

    fn emit(&mut self, ev: UaEvent) {
        if self.events.len() >= QUEUE_CAP {
            self.counters.queue_drops += 1;
            return;
        }
        self.events.push_back(ev);
    }

    /// Queues bytes outside any transaction (2xx ACKs and retransmissions).
    fn send_raw(&mut self, to: TransportAddr, payload: Bytes) {
        self.drain_tl();
        self.push_out(UaTransmit { to, payload });
    }

    fn push_out(&mut self, t: UaTransmit) {
        if self.out.len() >= QUEUE_CAP {
            self.counters.queue_drops += 1;
            return;
        }
        self.out.push_back(t);
    }

    fn drain_tl(&mut self) {
        while let Some(t) = self.tl.poll_transmit() {
            self.push_out(UaTransmit { to: t.to, payload: t.payload });
        }
    }

    /// Starts a client transaction to the next hop for `purpose`.
    fn start(&mut self, now: Instant, req: SipMessage, purpose: Purpose) -> Result<ClientTxId, UaError> {
        let tx = self.tl.send_request(now, req, self.cfg.next_hop).map_err(|e| UaError::Transaction(e.to_string()))?;
        self.clients.insert(tx, purpose);
        Ok(tx)
    }

    fn schedule(&mut self, at: Instant, timer: Timer) {
        self.timers.insert((at, timer));
    }

    /// Credentials for an out-of-dialog request from the cached challenge
    /// (RFC 7616 §3.4: the nonce is reused with an increasing `nc`).
    fn credentials(&mut self, proxy: bool, method: &str, uri: &Uri) -> Option<(&'static str, String)> {
        let cnonce = self.rng.hex();
        let (user, password) = (&self.cfg.auth_user, &self.cfg.password);
        let uri = uri.to_string();
        if proxy {
            let c = self.proxy_auth.as_mut()?;
            Some(("Proxy-Authorization", c.answer(user, password, method, &uri, &cnonce)))
        } else {
            let c = self.www_auth.as_mut()?;
            Some(("Authorization", c.answer(user, password, method, &uri, &cnonce)))
        }
    }

    /// Learns the challenge of a 401/407 and says whether to retry: the
    /// first challenge of a request always, a `stale=true` one twice more;
    /// a second fresh challenge means the password is wrong (§22.2).
    fn take_challenge(&mut self, resp: &SipMessage, tries: &mut u8) -> bool {
        let Some(ch) = auth::pick_challenge(resp, &self.cfg.algorithms) else { return false };
        let retry = *tries == 0 || (ch.stale && *tries < 3);
        if retry {
            *tries += 1;
            let slot =
                if resp.status().map(|s| s.as_u16()) == Some(401) { &mut self.www_auth } else { &mut self.proxy_auth };
            // The same nonce again continues its count: the server refuses
            // an `nc` it has seen (RFC 7616 §3.4, replay protection).
            let nc = slot
                .as_ref()
                .filter(|c| c.challenge.nonce == ch.nonce && c.challenge.realm == ch.realm)
                .map_or(0, |c| c.nc);
            *slot = Some(Box::new(CachedAuth { challenge: ch, nc }));
        }
        retry
    }

    fn on_request(&mut self, now: Instant, req: SipMessage, from: TransportAddr) {
        match self.tl.handle_request(now, &req, from) {
            RequestDisposition::New(tx) => self.new_request(now, tx, req, from),
            RequestDisposition::Cancel { tx, invite } => self.on_cancel(now, tx, &req, invite),
            RequestDisposition::Ack { .. } => self.on_ack(now, &req),
            RequestDisposition::Retransmission | RequestDisposition::AckAbsorbed => {}
            RequestDisposition::Overloaded | RequestDisposition::Invalid(_) => self.counters.rejected_requests += 1,
        }
    }

    fn on_response(&mut self, now: Instant, resp: SipMessage, from: TransportAddr) {
        match self.tl.handle_response(now, &resp, from) {
            ResponseDisposition::Deliver(tx) => match self.clients.get(&tx).copied() {
                Some(purpose) => self.dispatch(now, tx, purpose, &resp),
                None => self.counters.stray_responses += 1,
            },
            ResponseDisposition::Absorbed => {}
            // A 2xx retransmission after the INVITE transaction ended
            // (Timer M): the ACK is ours to repeat (§13.2.2.4).
            ResponseDisposition::Stray => self.stray_response(now, &resp),
        }
    }

    fn dispatch(&mut self, now: Instant, tx: ClientTxId, purpose: Purpose, resp: &SipMessage) {
        match purpose {
            Purpose::Register => self.register_response(now, tx, resp),
            Purpose::Invite(call) => self.invite_response(now, call, tx, resp),
            Purpose::Bye(call) => self.bye_response(now, call, resp),
            Purpose::Message(id) => self.message_response(now, id, tx, resp),
            Purpose::Cancel(_) | Purpose::OrphanBye => {}
        }
    }

    /// A transaction failed without a response: as if `code` arrived
    /// (§8.1.3.1: a timeout is a 408; a transport error a 503).
    fn tx_failed(&mut self, now: Instant, tx: ClientTxId, code: u16) {
        let Some(purpose) = self.clients.get(&tx).copied() else { return };
        match purpose {
            Purpose::Register => self.register_failed(now, tx, code),
            Purpose::Invite(call) => self.invite_failed(call, tx, code),
            Purpose::Bye(call) => self.end_call(call, false),
            Purpose::Message(id) => self.message_failed(id, tx, code),
            Purpose::Cancel(_) | Purpose::OrphanBye => {}
        }
    }

    /// Drains transaction events into the parts, then transmissions.
    fn settle(&mut self, now: Instant) {
        while let Some(ev) = self.tl.poll_event() {
            match ev {
                TxEvent::Timeout(TxId::Client(tx)) => self.tx_failed(now, tx, 408),
                TxEvent::TransportError(TxId::Client(tx)) => self.tx_failed(now, tx, 503),
                TxEvent::Terminated(TxId::Client(tx)) => {
                    self.clients.remove(&tx);
                }
                TxEvent::Timeout(TxId::Server(_))
                | TxEvent::TransportError(TxId::Server(_))
                | TxEvent::Terminated(TxId::Server(_)) => {}
            }
        }
        self.drain_tl();
    }

    fn dialog_of(&self, call_id: &str, local_tag: &str) -> Option<CallId> {
        self.dialogs.get(&(call_id.to_owned(), local_tag.to_owned())).copied()
    }

    fn forget_dialog(&mut self, d: &Dialog) {
        self.dialogs.remove(&(d.call_id.clone(), d.local_tag().to_owned()));
    }
}
