//! Overlay links in the runtime (RFC 6940 §6.6): the sockets around the
//! sans-IO machines of [`crate::link`].
//!
//! DTLS ([`dtls`]): one task owns the node's UDP socket. It classifies
//! every datagram by its first byte (RFC 7983, [`crate::nat::demux`]),
//! hands DTLS records to the [`crate::link::DtlsLink`] of their source
//! address, drives the machines' timers, and sends their datagrams to each
//! link's current remote address. Dials go out from the same socket, so a
//! link's 5-tuple is the listener's port; a link is keyed by a [`LinkId`]
//! and can be moved to another remote address ([`LinkDialer::set_remote`]).
//!
//! TLS ([`tls`]): one task per TCP connection reads and writes the socket
//! around a [`crate::link::TlsLink`].
//!
//! A [`Link`] is what the control loop holds: a [`LinkSender`] and a
//! bounded receiver of [`LinkEvent`]s. Drop every clone of [`Link::tx`] to
//! close the link; the end, whoever caused it, arrives as a final
//! [`LinkEvent::Closed`] on [`Link::rx`].

pub mod dtls;
pub mod tls;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::{SendError, TrySendError};

pub use crate::link::{
    EVENT_QUEUE, HANDSHAKE_TIMEOUT, LinkError, LinkKind, LinkSecurity, MAX_PENDING_HANDSHAKES, PeerIdentity,
    base_context, handshake_error, private_key,
};
use crate::wire::NodeId;

/// Capacity of one socket's (or TLS connection's) command queue: messages
/// on their way from the control loop to the link machines. The machines
/// bound each link's own queue ([`crate::link::dtls::OUT_QUEUE`]).
pub const SEND_QUEUE: usize = 1024;

/// The id a socket gives each of its links (unique per process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId(pub u64);

impl std::fmt::Display for LinkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "link{}", self.0)
    }
}

/// Allocates the ids of one socket's or listener's links (ids only name
/// links within their owner; several nodes in one process share nothing).
#[derive(Clone, Debug, Default)]
pub(crate) struct LinkIds(Arc<AtomicU64>);

impl LinkIds {
    pub(crate) fn next(&self) -> LinkId {
        LinkId(self.0.fetch_add(1, Ordering::Relaxed).saturating_add(1))
    }
}

/// What a link reports to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// One whole RELOAD message (or a §6.7 fragment of one) as received.
    Message(Vec<u8>),
    /// The link is gone; the last event on the channel.
    Closed(String),
}

/// An authenticated overlay link.
#[derive(Debug)]
pub struct Link {
    pub id: LinkId,
    pub peer: PeerIdentity,
    /// The remote address when the link came up ([`LinkDialer::set_remote`]
    /// may move it later).
    pub remote: SocketAddr,
    pub kind: LinkKind,
    /// Messages to send, one RELOAD message each. Drop every clone to
    /// close the link (queued messages are sent, and on DTLS ACKed, first).
    pub tx: LinkSender,
    /// Received messages, then one final `Closed`. While it is full, DTLS
    /// stops ACKing (the peer's Simple Reliability backs off) and TLS stops
    /// reading (TCP pushes back).
    pub rx: mpsc::Receiver<LinkEvent>,
}

/// Commands from link handles to the task that owns the link's socket.
#[derive(Debug)]
pub(crate) enum Command {
    Send(LinkId, Vec<u8>),
    Dial { addr: SocketAddr, expected: Option<NodeId>, reply: tokio::sync::oneshot::Sender<Result<Link, LinkError>> },
    SetRemote { id: LinkId, addr: SocketAddr, reply: tokio::sync::oneshot::Sender<Result<(), LinkError>> },
}

/// The sending half of a [`Link`]; cloneable, the link closes when the
/// last clone is dropped.
#[derive(Debug, Clone)]
pub struct LinkSender(Arc<SenderInner>);

#[derive(Debug)]
struct SenderInner {
    id: LinkId,
    commands: mpsc::Sender<Command>,
    /// Unbounded, yet bounded by the number of links: one id per link, once.
    closes: mpsc::UnboundedSender<LinkId>,
}

impl Drop for SenderInner {
    fn drop(&mut self) {
        let _ = self.closes.send(self.id);
    }
}

impl LinkSender {
    pub(crate) fn new(id: LinkId, commands: mpsc::Sender<Command>, closes: mpsc::UnboundedSender<LinkId>) -> Self {
        LinkSender(Arc::new(SenderInner { id, commands, closes }))
    }

    pub fn id(&self) -> LinkId {
        self.0.id
    }

    /// Queues a message without waiting; `Full` when the socket's command
    /// queue is, `Closed` when its task has ended.
    pub fn try_send(&self, message: Vec<u8>) -> Result<(), TrySendError<Vec<u8>>> {
        self.0.commands.try_send(Command::Send(self.0.id, message)).map_err(|e| match e {
            TrySendError::Full(c) => TrySendError::Full(message_of(c)),
            TrySendError::Closed(c) => TrySendError::Closed(message_of(c)),
        })
    }

    /// Queues a message, waiting for room in the command queue.
    pub async fn send(&self, message: Vec<u8>) -> Result<(), SendError<Vec<u8>>> {
        self.0.commands.send(Command::Send(self.0.id, message)).await.map_err(|e| SendError(message_of(e.0)))
    }

    /// Waits until the command queue has room (e.g. to let queued messages
    /// drain before shutting down).
    pub async fn reserve(&self) -> Result<(), SendError<()>> {
        self.0.commands.reserve().await.map(drop)
    }
}

fn message_of(c: Command) -> Vec<u8> {
    match c {
        Command::Send(_, m) => m,
        Command::Dial { .. } | Command::SetRemote { .. } => Vec::new(),
    }
}

/// Counters a listener's socket task keeps.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub rejected: AtomicU64,
    pub ignored: AtomicU64,
    pub stun: AtomicU64,
    pub send_drops: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Accepts links of one kind on one local address.
pub struct LinkListener {
    inner: ListenerInner,
}

enum ListenerInner {
    Tls(tls::TlsListener),
    Dtls(dtls::DtlsListener),
}

/// Opens a listener (a TCP listener or the node's one UDP socket).
pub async fn listen(kind: LinkKind, addr: SocketAddr, sec: Arc<LinkSecurity>) -> io::Result<LinkListener> {
    let inner = match kind {
        LinkKind::TlsTcpFhNoIce => ListenerInner::Tls(tls::TlsListener::bind(addr, sec).await?),
        LinkKind::DtlsUdpSrNoIce => ListenerInner::Dtls(dtls::DtlsListener::bind(addr, sec).await?),
    };
    Ok(LinkListener { inner })
}

/// Dials `addr`; with `expected`, refuses a peer whose certificate does
/// not carry that Node-ID. DTLS binds a fresh ephemeral UDP socket (for
/// nodes that do not listen): prefer [`LinkListener::dial`], which uses
/// the listener's socket.
pub async fn dial(
    kind: LinkKind,
    addr: SocketAddr,
    sec: Arc<LinkSecurity>,
    expected: Option<NodeId>,
) -> Result<Link, LinkError> {
    match kind {
        LinkKind::TlsTcpFhNoIce => tls::dial(addr, sec, expected, &LinkIds::default()).await,
        LinkKind::DtlsUdpSrNoIce => dtls::dial_ephemeral(addr, sec, expected).await,
    }
}

impl LinkListener {
    pub fn kind(&self) -> LinkKind {
        match self.inner {
            ListenerInner::Tls(_) => LinkKind::TlsTcpFhNoIce,
            ListenerInner::Dtls(_) => LinkKind::DtlsUdpSrNoIce,
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        match &self.inner {
            ListenerInner::Tls(l) => l.local_addr(),
            ListenerInner::Dtls(l) => l.local_addr(),
        }
    }

    /// The next authenticated peer. Peers that fail the handshake or the
    /// certificate check are logged, counted in [`Self::rejected`] and
    /// never returned.
    pub async fn accept(&mut self) -> Link {
        match &mut self.inner {
            ListenerInner::Tls(l) => l.accept().await,
            ListenerInner::Dtls(l) => l.accept().await,
        }
    }

    /// Incoming peers refused so far (failed handshake, bad certificate,
    /// timeout, too many handshakes).
    pub fn rejected(&self) -> u64 {
        self.counters().map_or(0, |c| c.rejected.load(Ordering::Relaxed))
    }

    /// DTLS: datagrams not handed to any link (not DTLS by RFC 7983, or
    /// DTLS from an unknown address that is no ClientHello). 0 for TLS.
    pub fn ignored_datagrams(&self) -> u64 {
        self.counters().map_or(0, |c| c.ignored.load(Ordering::Relaxed))
    }

    /// DTLS: STUN datagrams seen on the socket (counted and dropped until
    /// ICE runs here); they are part of [`Self::ignored_datagrams`].
    pub fn stun_datagrams(&self) -> u64 {
        self.counters().map_or(0, |c| c.stun.load(Ordering::Relaxed))
    }

    /// Messages dropped because a link's send queue was full.
    pub fn send_drops(&self) -> u64 {
        self.counters().map_or(0, |c| c.send_drops.load(Ordering::Relaxed))
    }

    fn counters(&self) -> Option<&Counters> {
        match &self.inner {
            ListenerInner::Tls(l) => Some(l.counters()),
            ListenerInner::Dtls(l) => Some(l.counters()),
        }
    }

    /// Dials from this listener: for DTLS over the listener's own UDP
    /// socket (one port per node), for TLS like [`dial`].
    pub async fn dial(&self, addr: SocketAddr, expected: Option<NodeId>) -> Result<Link, LinkError> {
        self.dialer().dial(addr, expected).await
    }

    /// A handle that dials like [`Self::dial`] and can be cloned into
    /// other tasks while this listener sits in its accept loop. It fails
    /// with [`LinkError::SocketClosed`] once the listener is dropped.
    pub fn dialer(&self) -> LinkDialer {
        LinkDialer(match &self.inner {
            ListenerInner::Tls(l) => DialerInner::Tls(l.security(), l.ids()),
            ListenerInner::Dtls(l) => DialerInner::Dtls(l.commands()),
        })
    }
}

/// Dials links from a listener's socket; see [`LinkListener::dialer`].
#[derive(Clone)]
pub struct LinkDialer(DialerInner);

#[derive(Clone)]
enum DialerInner {
    Tls(Arc<LinkSecurity>, LinkIds),
    Dtls(mpsc::Sender<Command>),
}

impl LinkDialer {
    /// Dials `addr`, refusing a peer without the `expected` Node-ID.
    ///
    /// DTLS simultaneous open: when the peer dials us from its listening
    /// socket at the same time, both ClientHellos share one 5-tuple. The
    /// side whose ClientHello random is the smaller keeps the client role;
    /// the other turns its dial into the server side of the peer's
    /// handshake, and this call returns that link. Both ends see one link.
    pub async fn dial(&self, addr: SocketAddr, expected: Option<NodeId>) -> Result<Link, LinkError> {
        match &self.0 {
            DialerInner::Tls(sec, ids) => tls::dial(addr, sec.clone(), expected, ids).await,
            DialerInner::Dtls(c) => dtls::dial_on(c, addr, expected).await,
        }
    }

    /// Moves a DTLS link to another remote address (e.g. the pair ICE
    /// selected): its datagrams go there from now on, and datagrams from
    /// there reach it. TLS links are bound to their connection.
    pub async fn set_remote(&self, id: LinkId, addr: SocketAddr) -> Result<(), LinkError> {
        match &self.0 {
            DialerInner::Tls(..) => Err(LinkError::Setup("a TLS link cannot change its address".into())),
            DialerInner::Dtls(c) => dtls::set_remote_on(c, id, addr).await,
        }
    }
}

/// The pieces of a new [`Link`] and the task ends of its channels.
pub(crate) fn new_link(
    id: LinkId,
    peer: PeerIdentity,
    remote: SocketAddr,
    kind: LinkKind,
    commands: mpsc::Sender<Command>,
    closes: mpsc::UnboundedSender<LinkId>,
) -> (Link, mpsc::Sender<LinkEvent>) {
    let (ev_tx, rx) = mpsc::channel(EVENT_QUEUE);
    let tx = LinkSender::new(id, commands, closes);
    (Link { id, peer, remote, kind, tx, rx }, ev_tx)
}

/// Wall time for certificate validity checks.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// [`crate::link::new_ssl`] at the current wall time (SIP over TLS).
pub(crate) fn new_ssl(
    ctx: &openssl::ssl::SslContext,
    sec: &Arc<LinkSecurity>,
) -> Result<(openssl::ssl::Ssl, crate::link::VerifySlot), LinkError> {
    crate::link::new_ssl(ctx, sec, &crate::link::WallClock::new(unix_now()))
}

/// [`crate::link::peer_identity`] at the current wall time (SIP over TLS).
pub(crate) fn peer_identity(
    ssl: &openssl::ssl::SslRef,
    sec: &LinkSecurity,
    expected: Option<NodeId>,
) -> Result<PeerIdentity, LinkError> {
    crate::link::peer_identity(ssl, sec, expected, unix_now())
}
