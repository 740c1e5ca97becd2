//! DTLS-UDP-SR-NO-ICE links (RFC 6940 §6.6, §6.6.2, §6.6.3.2): DTLS 1.2
//! over one UDP socket per node, framed messages, Simple Reliability.
//!
//! One task reads the socket and hands each datagram to the DTLS session
//! of its source address ([`Demux`]); a new session starts only for a
//! DTLS ClientHello. Servers use DTLS cookies (RFC 6347 §4.2.1) so a
//! spoofed source gets one small HelloVerifyRequest, and sessions and
//! handshakes are capped ([`MAX_SESSIONS`], [`super::MAX_PENDING_HANDSHAKES`]).
//!
//! A ClientHello from an address whose session is established starts a
//! second session beside the first (the peer may have restarted on the same
//! port); if it authenticates it replaces the old one, if not the old one
//! lives on. Both get the address's datagrams meanwhile: each silently
//! drops records it cannot decrypt (RFC 6347 §4.1.2.7).
//!
//! Each DATA frame is ACKed at once with the §6.6.2 bitmap; the sender
//! ([`SrSender`]) keeps a small AIMD window of unACKed frames, retransmits
//! after an RTO of 500 ms doubling per try under a fresh sequence number,
//! and declares the peer unresponsive after [`SR_MAX_TRANSMISSIONS`]
//! transmissions went unACKed. So frames may arrive out of order after a
//! loss, and a lost ACK makes the peer see the message twice: RELOAD's
//! transaction layer deals with both.
//!
//! Messages longer than one datagram carries ([`MAX_FRAME_PAYLOAD`]) are
//! split into RELOAD fragments (§6.7, "any hop may fragment") before
//! framing; the receiving overlay reassembles them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use openssl::ex_data::Index;
use openssl::ssl::{Ssl, SslContext, SslOptions};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};
use tokio_openssl::SslStream;
use tracing::Instrument;

use super::{
    DATA_FRAME_HEADER, EVENT_QUEUE, HANDSHAKE_TIMEOUT, Link, LinkChannels, LinkError, LinkEvent, LinkKind,
    LinkSecurity, MAX_PENDING_HANDSHAKES, PeerIdentity, Role, base_context, handshake_error, link_channels, new_ssl,
    peer_identity, peer_label, take_frames,
};
use crate::wire::framing::{AckTracker, FramedMessage, acked_sequences};
use crate::wire::{Codec, NodeId};

/// The largest datagram we send (DTLS records included), a size that
/// crosses common paths and tunnels unfragmented.
pub const DTLS_MTU: u32 = 1200;
/// A bound on what DTLS 1.2 adds to a record: 13 bytes of header plus
/// IV, MAC or tag and padding of any cipher suite OpenSSL offers.
pub const DTLS_RECORD_OVERHEAD: usize = 100;
/// The longest RELOAD message (or fragment) one DATA frame carries.
pub const MAX_FRAME_PAYLOAD: usize = DTLS_MTU as usize - DTLS_RECORD_OVERHEAD - DATA_FRAME_HEADER;
/// Sessions (established or not) one socket serves.
pub const MAX_SESSIONS: usize = 4096;
/// §6.6.3.2: the initial retransmission timeout.
pub const SR_INITIAL_RTO: Duration = Duration::from_millis(500);
/// §6.6.3.2: transmissions of one frame (0, 0.5, 1.5, 3.5, 7.5 s) before
/// the link is given up, one RTO after the last.
pub const SR_MAX_TRANSMISSIONS: u32 = 5;
/// Unacknowledged frames a new link may have out at once.
const SR_INITIAL_WINDOW: usize = 4;
/// The window's cap: the ACK bitmap covers 32 frames.
const SR_MAX_WINDOW: usize = 32;
/// Datagrams queued for one session before further ones are dropped.
const DATAGRAM_QUEUE: usize = 64;
/// Messages (or fragments) waiting for room in the window.
const OUT_QUEUE: usize = 256;
/// How often a handshake in progress is woken so OpenSSL can retransmit
/// its flight when its own timer has run out.
const HANDSHAKE_TICK: Duration = Duration::from_millis(100);

/// The listener side: a UDP socket and its demultiplexer task.
pub(crate) struct DtlsListener {
    local: SocketAddr,
    demux: Arc<Demux>,
    links: mpsc::Receiver<Link>,
    task: JoinHandle<()>,
}

impl Drop for DtlsListener {
    fn drop(&mut self) {
        // The sessions depend on the socket's reader: end them all.
        self.task.abort();
        self.demux.closed.store(true, Ordering::Relaxed);
        self.demux.sessions().clear();
    }
}

impl DtlsListener {
    pub(crate) async fn bind(addr: SocketAddr, sec: Arc<LinkSecurity>) -> io::Result<Self> {
        let (tx, links) = mpsc::channel(16);
        if super::private_key(&sec.key_pkcs8).is_ok_and(|k| k.id() == openssl::pkey::Id::ED25519) {
            // OpenSSL 3.0 offers no DTLS 1.2 cipher suite for an Ed25519
            // server certificate; dialing out from this socket still works.
            tracing::warn!("DTLS listener with an Ed25519 certificate: OpenSSL will refuse every incoming handshake");
        }
        let demux = Demux::bind(addr, sec, Some(tx)).await.map_err(|e| match e {
            LinkError::Io(e) => e,
            other => io::Error::other(other),
        })?;
        let local = demux.socket.local_addr()?;
        let task = tokio::spawn(demux.clone().run().instrument(tracing::info_span!("dtls_socket", %local)));
        Ok(DtlsListener { local, demux, links, task })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub(crate) fn rejected(&self) -> u64 {
        self.demux.rejected.load(Ordering::Relaxed)
    }

    pub(crate) fn ignored(&self) -> u64 {
        self.demux.ignored.load(Ordering::Relaxed)
    }

    pub(crate) async fn accept(&mut self) -> Link {
        match self.links.recv().await {
            Some(link) => link,
            None => std::future::pending().await,
        }
    }

    pub(crate) fn dialer(&self) -> DtlsDialer {
        DtlsDialer(self.demux.clone())
    }
}

/// Dials over a listener's own socket (we are the DTLS client).
#[derive(Clone)]
pub(crate) struct DtlsDialer(Arc<Demux>);

impl DtlsDialer {
    pub(crate) async fn dial(&self, addr: SocketAddr, expected: Option<NodeId>) -> Result<Link, LinkError> {
        self.0.dial(addr, expected).await
    }
}

/// Dials from a fresh ephemeral socket that lives as long as the link.
pub(crate) async fn dial_ephemeral(
    addr: SocketAddr,
    sec: Arc<LinkSecurity>,
    expected: Option<NodeId>,
) -> Result<Link, LinkError> {
    let any: SocketAddr =
        if addr.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
    let demux = Demux::bind(any, sec, None).await?;
    let local = demux.socket.local_addr()?;
    tokio::spawn(demux.clone().run().instrument(tracing::info_span!("dtls_socket", %local)));
    demux.dial(addr, expected).await
}

/// One UDP socket's sessions, keyed by remote address.
struct Demux {
    socket: Arc<UdpSocket>,
    sec: Arc<LinkSecurity>,
    server_ctx: SslContext,
    client_ctx: SslContext,
    table: Mutex<HashMap<SocketAddr, Entry>>,
    /// Where accepted links go; `None` on a dial-only ephemeral socket,
    /// which stops (`done`) when its one session ends.
    accepted: Option<mpsc::Sender<Link>>,
    done: Notify,
    /// Set when the listener is dropped: no new sessions.
    closed: AtomicBool,
    rejected: AtomicU64,
    ignored: AtomicU64,
    next_id: AtomicU64,
}

struct Entry {
    main: Handle,
    /// A new handshake from the address of an established session.
    candidate: Option<Handle>,
}

/// The demultiplexer's end of one session.
struct Handle {
    id: u64,
    role: Role,
    established: bool,
    datagrams: mpsc::Sender<Vec<u8>>,
    /// Ends the session with a reason; dropping it ends it too.
    stop: Option<oneshot::Sender<String>>,
}

impl Handle {
    fn deliver(&self, datagram: &[u8]) {
        // A full queue drops the datagram, as a congested path would.
        if self.datagrams.try_send(datagram.to_vec()).is_err() {
            tracing::trace!(id = self.id, "session queue full, datagram dropped");
        }
    }
}

/// What a session does with its handshake's result.
enum Outcome {
    Accept,
    Dial { expected: Option<NodeId>, reply: oneshot::Sender<Result<Link, LinkError>> },
}

impl Demux {
    async fn bind(
        addr: SocketAddr,
        sec: Arc<LinkSecurity>,
        accepted: Option<mpsc::Sender<Link>>,
    ) -> Result<Arc<Self>, LinkError> {
        let server_ctx = server_context(&sec)?;
        let client_ctx = client_context(&sec)?;
        let socket = UdpSocket::bind(addr).await?;
        // Sessions send with `try_send_to`, which only tries once tokio has
        // seen the socket writable: have it seen now, or the first
        // ClientHello would be dropped.
        socket.writable().await?;
        let socket = Arc::new(socket);
        Ok(Arc::new(Demux {
            socket,
            sec,
            server_ctx,
            client_ctx,
            table: Mutex::new(HashMap::new()),
            accepted,
            done: Notify::new(),
            closed: AtomicBool::new(false),
            rejected: AtomicU64::new(0),
            ignored: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
        }))
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<SocketAddr, Entry>> {
        // A panic elsewhere cannot leave the map inconsistent: use it as is.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn run(self: Arc<Self>) {
        let mut buf = vec![0u8; 65536];
        loop {
            let got = tokio::select! {
                r = self.socket.recv_from(&mut buf) => r,
                () = self.done.notified() => return,
            };
            match got {
                Ok((n, from)) => self.route(from, buf.get(..n).unwrap_or_default()),
                // E.g. an ICMP error reported on the socket: not fatal.
                Err(e) => tracing::debug!(error = %e, "UDP receive failed"),
            }
        }
    }

    /// Hands a datagram to its session, or starts a server session for a
    /// ClientHello, or drops it.
    fn route(self: &Arc<Self>, from: SocketAddr, datagram: &[u8]) {
        let hello = is_client_hello(datagram);
        let mut table = self.sessions();
        // Counted only for hellos: ordinary datagrams stay O(1).
        let pending = if hello { table.values().map(Entry::pending).sum::<usize>() } else { 0 };
        let sessions = table.len();
        if let Some(entry) = table.get_mut(&from) {
            if !hello {
                entry.main.deliver(datagram);
                if let Some(c) = &entry.candidate {
                    c.deliver(datagram);
                }
            } else if let Some(c) = &entry.candidate {
                c.deliver(datagram);
            } else if !entry.main.established {
                match entry.main.role {
                    Role::Server => entry.main.deliver(datagram),
                    // Both sides dialing each other on one address pair.
                    Role::Client => tracing::debug!(peer = %from, "ClientHello from a peer we are dialing, dropped"),
                }
            } else if self.accepted.is_some() && pending < MAX_PENDING_HANDSHAKES {
                tracing::debug!(peer = %from, "new handshake from the address of an established session");
                let h = self.spawn_session(from, Role::Server, Outcome::Accept);
                h.deliver(datagram);
                entry.candidate = Some(h);
            }
            return;
        }
        if !hello || self.accepted.is_none() {
            self.ignored.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(peer = %from, len = datagram.len(), "ignored datagram from an unknown address");
            return;
        }
        if sessions >= MAX_SESSIONS || pending >= MAX_PENDING_HANDSHAKES {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            // Could be a flood of spoofed hellos: no warning per datagram.
            tracing::debug!(peer = %from, sessions, pending, "ClientHello refused: session limit");
            return;
        }
        let h = self.spawn_session(from, Role::Server, Outcome::Accept);
        h.deliver(datagram);
        table.insert(from, Entry { main: h, candidate: None });
    }

    async fn dial(self: &Arc<Self>, addr: SocketAddr, expected: Option<NodeId>) -> Result<Link, LinkError> {
        let (reply, result) = oneshot::channel();
        {
            let mut table = self.sessions();
            if self.closed.load(Ordering::Relaxed) {
                return Err(LinkError::SocketClosed);
            }
            if table.contains_key(&addr) {
                return Err(LinkError::Busy(addr));
            }
            if table.len() >= MAX_SESSIONS {
                return Err(LinkError::TooManySessions);
            }
            let h = self.spawn_session(addr, Role::Client, Outcome::Dial { expected, reply });
            table.insert(addr, Entry { main: h, candidate: None });
        }
        result.await.unwrap_or(Err(LinkError::SocketClosed))
    }

    fn spawn_session(self: &Arc<Self>, peer: SocketAddr, role: Role, outcome: Outcome) -> Handle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (datagrams, rx) = mpsc::channel(DATAGRAM_QUEUE);
        let (stop, stop_rx) = oneshot::channel();
        let pipe = DatagramPipe {
            rx,
            socket: self.socket.clone(),
            peer,
            tick: Some(Box::pin(tokio::time::sleep(HANDSHAKE_TICK))),
        };
        let span = tracing::info_span!("dtls_session", %peer, ?role, id);
        tokio::spawn(self.clone().session(id, peer, role, pipe, stop_rx, outcome).instrument(span));
        Handle { id, role, established: false, datagrams, stop: Some(stop) }
    }

    /// One session from handshake to close.
    async fn session(
        self: Arc<Self>,
        id: u64,
        peer: SocketAddr,
        role: Role,
        pipe: DatagramPipe,
        mut stop: oneshot::Receiver<String>,
        outcome: Outcome,
    ) {
        let expected = match &outcome {
            Outcome::Dial { expected, .. } => *expected,
            Outcome::Accept => None,
        };
        let ctx = match role {
            Role::Server => &self.server_ctx,
            Role::Client => &self.client_ctx,
        };
        let shake = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(ctx, &self.sec, pipe, role, peer, expected));
        let result = tokio::select! {
            r = shake => r.unwrap_or(Err(LinkError::Timeout)),
            s = &mut stop => Err(LinkError::Handshake(s.unwrap_or_else(|_| "socket closed".into()))),
        };
        let (stream, identity) = match result {
            Ok(ok) => ok,
            Err(e) => {
                self.remove(peer, id);
                match outcome {
                    Outcome::Accept => {
                        self.rejected.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%peer, reason = %e, "refused DTLS peer");
                    }
                    Outcome::Dial { reply, .. } => {
                        let _ = reply.send(Err(e));
                    }
                }
                return;
            }
        };
        if !self.mark_established(peer, id) {
            return;
        }
        tracing::debug!(peer_node = %peer_label(&identity), version = stream.ssl().version_str(), "DTLS link up");
        let (link, chans) = link_channels(identity, peer, LinkKind::DtlsUdpSrNoIce);
        let handed_over = match outcome {
            Outcome::Accept => match &self.accepted {
                Some(tx) => tx.send(link).await.is_ok(),
                None => false,
            },
            Outcome::Dial { reply, .. } => reply.send(Ok(link)).is_ok(),
        };
        if handed_over {
            run_link(stream, self.sec.max_message_size, chans, stop).await;
        }
        self.remove(peer, id);
    }

    /// Records a finished handshake; a candidate replaces the old session.
    /// False if the session was removed meanwhile.
    fn mark_established(&self, peer: SocketAddr, id: u64) -> bool {
        let mut table = self.sessions();
        let Some(entry) = table.get_mut(&peer) else { return false };
        if entry.main.id == id {
            entry.main.established = true;
            return true;
        }
        match entry.candidate.take() {
            Some(mut c) if c.id == id => {
                c.established = true;
                let mut old = std::mem::replace(&mut entry.main, c);
                if let Some(stop) = old.stop.take() {
                    let _ = stop.send("replaced by a new session from the same address".into());
                }
                true
            }
            other => {
                entry.candidate = other;
                false
            }
        }
    }

    fn remove(&self, peer: SocketAddr, id: u64) {
        let mut table = self.sessions();
        if let Some(entry) = table.get_mut(&peer) {
            if entry.main.id == id {
                match entry.candidate.take() {
                    Some(c) => entry.main = c,
                    None => {
                        table.remove(&peer);
                    }
                }
            } else if entry.candidate.as_ref().is_some_and(|c| c.id == id) {
                entry.candidate = None;
            }
        }
        if self.accepted.is_none() && table.is_empty() {
            self.done.notify_one();
        }
    }
}

impl Entry {
    fn pending(&self) -> usize {
        usize::from(!self.main.established) + self.candidate.as_ref().map_or(0, |c| usize::from(!c.established))
    }
}

/// RFC 6347 §4.1/§4.2.2: handshake record (22), a DTLS version (0xfe..),
/// epoch 0, and a client_hello (1) message.
fn is_client_hello(d: &[u8]) -> bool {
    d.len() > 25
        && d.first() == Some(&22)
        && d.get(1) == Some(&0xfe)
        && d.get(3..5) == Some(&[0, 0])
        && d.get(13) == Some(&1)
}

fn client_context(sec: &LinkSecurity) -> Result<SslContext, LinkError> {
    let mut b = base_context(LinkKind::DtlsUdpSrNoIce, sec)?;
    // The MTU is ours to set (see `DTLS_MTU`); the in-memory pipe knows none.
    b.set_options(SslOptions::NO_QUERY_MTU);
    Ok(b.build())
}

fn server_context(sec: &LinkSecurity) -> Result<SslContext, LinkError> {
    let mut b = base_context(LinkKind::DtlsUdpSrNoIce, sec)?;
    b.set_options(SslOptions::NO_QUERY_MTU | SslOptions::COOKIE_EXCHANGE);
    // Stateless cookies (RFC 6347 §4.2.1): HMAC of the client's address
    // under a per-socket secret.
    let mut secret = [0u8; 32];
    openssl::rand::rand_bytes(&mut secret)?;
    let key = Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret));
    let k = key.clone();
    b.set_cookie_generate_cb(move |ssl, out| {
        let tag = cookie(&k, ssl);
        let dst = out.get_mut(..tag.len()).ok_or_else(openssl::error::ErrorStack::get)?;
        dst.copy_from_slice(&tag);
        Ok(tag.len())
    });
    b.set_cookie_verify_cb(move |ssl, got| cookie(&key, ssl) == got);
    Ok(b.build())
}

fn cookie(key: &ring::hmac::Key, ssl: &openssl::ssl::SslRef) -> Vec<u8> {
    let peer = peer_index().ok().and_then(|i| ssl.ex_data(i)).map(|a| a.to_string()).unwrap_or_default();
    ring::hmac::sign(key, peer.as_bytes()).as_ref().to_vec()
}

/// Where a server session keeps its peer's address for the cookie callbacks.
fn peer_index() -> Result<Index<Ssl, SocketAddr>, LinkError> {
    static INDEX: OnceLock<Index<Ssl, SocketAddr>> = OnceLock::new();
    if let Some(i) = INDEX.get() {
        return Ok(*i);
    }
    let i = Ssl::new_ex_index()?;
    Ok(*INDEX.get_or_init(|| i))
}

async fn handshake(
    ctx: &SslContext,
    sec: &Arc<LinkSecurity>,
    pipe: DatagramPipe,
    role: Role,
    peer: SocketAddr,
    expected: Option<NodeId>,
) -> Result<(SslStream<DatagramPipe>, PeerIdentity), LinkError> {
    let (mut ssl, slot) = new_ssl(ctx, sec)?;
    ssl.set_mtu(DTLS_MTU)?;
    ssl.set_ex_data(peer_index()?, peer);
    let mut stream = SslStream::new(ssl, pipe)?;
    let done = match role {
        Role::Client => Pin::new(&mut stream).connect().await,
        Role::Server => Pin::new(&mut stream).accept().await,
    };
    done.map_err(|e| handshake_error(e, &slot))?;
    match peer_identity(stream.ssl(), sec, expected) {
        Ok(id) => {
            stream.get_mut().tick = None;
            Ok((stream, id))
        }
        Err(e) => {
            let _ = stream.shutdown().await;
            Err(e)
        }
    }
}

/// Serves an established session until it closes, then reports why.
async fn run_link(
    mut stream: SslStream<DatagramPipe>,
    max_message: usize,
    chans: LinkChannels,
    mut stop: oneshot::Receiver<String>,
) {
    let LinkChannels { mut out_rx, ev_tx } = chans;
    let mut sender = SrSender::new();
    let mut acks = AckTracker::default();
    let mut buf = vec![0u8; 65536];
    let mut outq: VecDeque<Vec<u8>> = VecDeque::new();
    let mut pending: VecDeque<Vec<u8>> = VecDeque::new();
    let mut closing = false;
    let reason = 'link: loop {
        while sender.can_send() {
            let Some(m) = outq.pop_front() else { break };
            let frame = sender.send(Instant::now().into_std(), m);
            if let Err(e) = write_frame(&mut stream, &frame).await {
                break 'link e;
            }
        }
        if closing && outq.is_empty() && sender.is_idle() {
            let _ = stream.shutdown().await;
            break "closed locally".to_owned();
        }
        let deadline = sender.poll_timeout().map(Instant::from_std);
        tokio::select! {
            r = stream.read(&mut buf), if pending.len() < EVENT_QUEUE => {
                let mut record = match r {
                    // The demultiplexer ends a session by dropping its queue
                    // right after sending the reason: prefer the reason, and
                    // tell the peer (the socket outlives the demultiplexer
                    // while a session holds it), whichever branch saw it first.
                    Ok(0) => {
                        let local = match stop.try_recv() {
                            Ok(reason) => Some(reason),
                            Err(oneshot::error::TryRecvError::Closed) => Some("socket closed".to_owned()),
                            Err(oneshot::error::TryRecvError::Empty) => None,
                        };
                        match local {
                            Some(reason) => {
                                let _ = stream.shutdown().await;
                                break reason;
                            }
                            None => break "peer closed the session".to_owned(),
                        }
                    }
                    Ok(n) => buf.get(..n).unwrap_or_default().to_vec(),
                    Err(e) => break format!("DTLS read failed: {e}"),
                };
                let (frames, mut verdict) = take_frames(&mut record, max_message);
                if verdict.is_ok() && !record.is_empty() {
                    verdict = Err("truncated frame in a DTLS record".to_owned());
                }
                for f in frames {
                    match f {
                        FramedMessage::Data { sequence, message } => {
                            // §6.6.3.2: the receiver ACKs every frame at once.
                            if let Err(e) = write_frame(&mut stream, &acks.on_data(sequence)).await {
                                break 'link e;
                            }
                            pending.push_back(message);
                        }
                        FramedMessage::Ack { ack_sequence, received } => sender.on_ack(ack_sequence, received),
                    }
                }
                if let Err(reason) = verdict {
                    tracing::warn!(%reason, "closing DTLS link");
                    let _ = stream.shutdown().await;
                    break reason;
                }
            }
            () = sleep_until(deadline), if deadline.is_some() => {
                match sender.handle_timeout(Instant::now().into_std()) {
                    Ok(frames) => {
                        for f in frames {
                            if let Err(e) = write_frame(&mut stream, &f).await {
                                break 'link e;
                            }
                        }
                    }
                    Err(Unresponsive) => {
                        tracing::warn!("DTLS peer unresponsive");
                        break "peer unresponsive".to_owned();
                    }
                }
            }
            m = out_rx.recv(), if !closing && outq.len() < OUT_QUEUE => match m {
                Some(message) => enqueue(message, max_message, &mut outq),
                None => closing = true,
            },
            p = ev_tx.reserve(), if !pending.is_empty() => match p {
                Ok(permit) => {
                    if let Some(m) = pending.pop_front() {
                        permit.send(LinkEvent::Message(m));
                    }
                }
                Err(_) => { pending.clear(); closing = true; }
            },
            s = &mut stop => {
                let _ = stream.shutdown().await;
                break s.unwrap_or_else(|_| "socket closed".into());
            }
        }
    };
    tracing::debug!(%reason, "DTLS link closed");
    for m in pending {
        if ev_tx.send(LinkEvent::Message(m)).await.is_err() {
            return;
        }
    }
    let _ = ev_tx.send(LinkEvent::Closed(reason)).await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn write_frame(stream: &mut SslStream<DatagramPipe>, frame: &FramedMessage) -> Result<(), String> {
    let bytes = frame.to_bytes().map_err(|e| format!("cannot encode frame: {e}"))?;
    // One frame per record, one record per datagram.
    match stream.write(&bytes).await {
        Ok(n) if n == bytes.len() => Ok(()),
        Ok(n) => Err(format!("DTLS wrote {n} of {} bytes", bytes.len())),
        Err(e) => Err(format!("DTLS write failed: {e}")),
    }
}

/// Queues a message for sending, split into §6.7 fragments when one
/// datagram cannot carry it.
fn enqueue(message: Vec<u8>, max_message: usize, outq: &mut VecDeque<Vec<u8>>) {
    if message.len() > max_message {
        tracing::warn!(len = message.len(), max_message, "dropped outgoing message larger than max-message-size");
        return;
    }
    if message.len() <= MAX_FRAME_PAYLOAD {
        outq.push_back(message);
        return;
    }
    match crate::wire::fragment::fragment(&message, MAX_FRAME_PAYLOAD) {
        Ok(pieces) => outq.extend(pieces),
        Err(e) => tracing::warn!(len = message.len(), error = %e, "dropped message too long for a datagram"),
    }
}

/// The in-memory transport under a DTLS session: each read yields one
/// received datagram, each write sends one datagram on the shared socket.
struct DatagramPipe {
    rx: mpsc::Receiver<Vec<u8>>,
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    /// While handshaking: wakes the task so OpenSSL can check its timer.
    tick: Option<Pin<Box<Sleep>>>,
}

impl AsyncRead for DatagramPipe {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(d)) => {
                let n = d.len().min(buf.remaining());
                buf.put_slice(d.get(..n).unwrap_or_default());
                Poll::Ready(Ok(()))
            }
            // The demultiplexer dropped us: end of stream.
            Poll::Ready(None) => Poll::Ready(Ok(())),
            Poll::Pending => {
                if let Some(t) = this.tick.as_mut() {
                    while t.as_mut().poll(cx).is_ready() {
                        t.as_mut().reset(Instant::now() + HANDSHAKE_TICK);
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for DatagramPipe {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        // UDP may lose datagrams anyway: a full send buffer is one more
        // loss for DTLS or Simple Reliability to repair, never a wait.
        if let Err(e) = self.socket.try_send_to(buf, self.peer) {
            tracing::trace!(error = %e, len = buf.len(), "datagram not sent");
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// No ACK came for a frame after its last transmission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unresponsive;

/// The Simple Reliability sender (§6.6.3.2), sans-IO: time comes in as
/// `now`. Frames are retransmitted under new sequence numbers, so every
/// ACK names exactly one transmission.
#[derive(Debug)]
pub struct SrSender {
    next_seq: u32,
    next_id: u64,
    inflight: BTreeMap<u64, InFlight>,
    by_seq: BTreeMap<u32, u64>,
    window: usize,
}

#[derive(Debug)]
struct InFlight {
    message: Vec<u8>,
    seqs: Vec<u32>,
    sent: u32,
    rto: Duration,
    deadline: std::time::Instant,
}

impl Default for SrSender {
    fn default() -> Self {
        Self::new()
    }
}

impl SrSender {
    pub fn new() -> Self {
        SrSender {
            next_seq: 0,
            next_id: 0,
            inflight: BTreeMap::new(),
            by_seq: BTreeMap::new(),
            window: SR_INITIAL_WINDOW,
        }
    }

    /// Whether the window has room for another frame.
    pub fn can_send(&self) -> bool {
        self.inflight.len() < self.window
    }

    /// Whether every frame sent was ACKed.
    pub fn is_idle(&self) -> bool {
        self.inflight.is_empty()
    }

    /// Frames a message for its first transmission.
    pub fn send(&mut self, now: std::time::Instant, message: Vec<u8>) -> FramedMessage {
        let id = self.next_id;
        self.next_id += 1;
        let seq = self.take_seq(id);
        let frame = FramedMessage::Data { sequence: seq, message: message.clone() };
        self.inflight.insert(
            id,
            InFlight { message, seqs: vec![seq], sent: 1, rto: SR_INITIAL_RTO, deadline: now + SR_INITIAL_RTO },
        );
        frame
    }

    /// An ACK arrived: every transmission it covers is done. Each newly
    /// ACKed frame widens the window by one (additive increase).
    pub fn on_ack(&mut self, ack_sequence: u32, received: u32) {
        for seq in acked_sequences(ack_sequence, received) {
            let Some(id) = self.by_seq.remove(&seq) else { continue };
            if let Some(done) = self.inflight.remove(&id) {
                for s in done.seqs {
                    self.by_seq.remove(&s);
                }
                self.window = (self.window + 1).min(SR_MAX_WINDOW);
            }
        }
    }

    /// When the next retransmission is due.
    pub fn poll_timeout(&self) -> Option<std::time::Instant> {
        self.inflight.values().map(|f| f.deadline).min()
    }

    /// Retransmits what is due, doubling each one's RTO and halving the
    /// window; fails once a frame's last transmission went unACKed.
    pub fn handle_timeout(&mut self, now: std::time::Instant) -> Result<Vec<FramedMessage>, Unresponsive> {
        let due: Vec<u64> = self.inflight.iter().filter(|(_, f)| f.deadline <= now).map(|(id, _)| *id).collect();
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(due.len());
        for id in due {
            let sent = self.inflight.get(&id).map_or(0, |f| f.sent);
            if sent >= SR_MAX_TRANSMISSIONS {
                return Err(Unresponsive);
            }
            let seq = self.take_seq(id);
            if let Some(f) = self.inflight.get_mut(&id) {
                f.sent += 1;
                f.rto *= 2;
                f.deadline = now + f.rto;
                f.seqs.push(seq);
                out.push(FramedMessage::Data { sequence: seq, message: f.message.clone() });
            }
        }
        self.window = (self.window / 2).max(1);
        Ok(out)
    }

    fn take_seq(&mut self, id: u64) -> u32 {
        let seq = self.next_seq;
        // §6.6.2: one sequence space per connection, +1 per frame.
        self.next_seq = self.next_seq.wrapping_add(1);
        self.by_seq.insert(seq, id);
        seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant as StdInstant;

    fn seq_of(f: &FramedMessage) -> u32 {
        match f {
            FramedMessage::Data { sequence, .. } => *sequence,
            FramedMessage::Ack { .. } => panic!("not data"),
        }
    }

    #[test]
    fn window_limits_frames_in_flight_and_acks_open_it() {
        let t0 = StdInstant::now();
        let mut s = SrSender::new();
        let mut seqs = Vec::new();
        while s.can_send() {
            seqs.push(seq_of(&s.send(t0, vec![1])));
        }
        assert_eq!(seqs, vec![0, 1, 2, 3]);
        // One ACK for 3 whose bitmap says 2 and 0 arrived too; 1 is missing.
        s.on_ack(3, 0b101);
        assert!(s.can_send());
        assert_eq!(s.inflight.len(), 1);
        s.on_ack(1, 0);
        assert!(s.is_idle());
        assert_eq!(s.window, SR_INITIAL_WINDOW + 4);
    }

    #[test]
    fn retransmits_with_new_sequence_and_backoff_then_gives_up() {
        let t0 = StdInstant::now();
        let mut s = SrSender::new();
        s.send(t0, b"hello".to_vec());
        assert_eq!(s.poll_timeout(), Some(t0 + SR_INITIAL_RTO));
        assert!(s.handle_timeout(t0 + Duration::from_millis(499)).unwrap().is_empty());
        // Transmissions at 0, 0.5, 1.5, 3.5, 7.5 s; unresponsive at 15.5 s.
        let mut at = Vec::new();
        let gave_up = loop {
            let Some(now) = s.poll_timeout() else { panic!("nothing in flight") };
            match s.handle_timeout(now) {
                Ok(frames) => {
                    assert_eq!(frames.len(), 1);
                    assert_eq!(seq_of(&frames[0]), at.len() as u32 + 1);
                    at.push((now - t0).as_millis());
                }
                Err(Unresponsive) => break now,
            }
        };
        assert_eq!(at, vec![500, 1500, 3500, 7500]);
        assert_eq!((gave_up - t0).as_millis(), 15_500);
    }

    #[test]
    fn an_ack_for_any_transmission_completes_the_frame() {
        let t0 = StdInstant::now();
        let mut s = SrSender::new();
        s.send(t0, vec![9]);
        let re = s.handle_timeout(t0 + SR_INITIAL_RTO).unwrap();
        assert_eq!(seq_of(&re[0]), 1);
        assert_eq!(s.window, SR_INITIAL_WINDOW / 2);
        // The first transmission was only late: its ACK settles it.
        s.on_ack(0, 0);
        assert!(s.is_idle());
        assert!(s.by_seq.is_empty());
        assert_eq!(s.poll_timeout(), None);
        // An ACK for a sequence never sent changes nothing.
        s.on_ack(77, u32::MAX);
        assert!(s.is_idle());
    }

    #[test]
    fn a_lossy_path_delivers_everything_with_sr() {
        // Sender and receiver machines over a channel that loses 15 % of
        // DATA frames and 15 % of ACKs (seeded), in virtual time.
        use rand::rngs::StdRng;
        use rand::{RngExt, SeedableRng};
        let mut rng = StdRng::seed_from_u64(6940);
        let t0 = StdInstant::now();
        let mut s = SrSender::new();
        let mut r = AckTracker::default();
        let mut to_send: VecDeque<Vec<u8>> = (0u8..40).map(|i| vec![i]).collect();
        let mut got = std::collections::BTreeSet::new();
        let mut lost = 0u32;
        let mut now = t0;
        let mut deliver = |f: FramedMessage, s: &mut SrSender, got: &mut std::collections::BTreeSet<u8>| {
            if rng.random::<f64>() < 0.15 {
                lost += 1;
                return;
            }
            let FramedMessage::Data { sequence, message } = f else { panic!() };
            got.insert(message[0]);
            let FramedMessage::Ack { ack_sequence, received } = r.on_data(sequence) else { panic!() };
            if rng.random::<f64>() < 0.15 {
                lost += 1;
            } else {
                s.on_ack(ack_sequence, received);
            }
        };
        for _ in 0..1000 {
            while s.can_send() {
                let Some(m) = to_send.pop_front() else { break };
                let f = s.send(now, m);
                deliver(f, &mut s, &mut got);
            }
            if to_send.is_empty() && s.is_idle() {
                break;
            }
            now = s.poll_timeout().unwrap();
            for f in s.handle_timeout(now).unwrap() {
                deliver(f, &mut s, &mut got);
            }
        }
        assert!(s.is_idle() && to_send.is_empty());
        assert_eq!(got, (0u8..40).collect());
        assert!(lost > 5, "the channel lost only {lost}");
    }

    #[test]
    fn client_hello_detection() {
        let mut hello = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 100, 1];
        hello.resize(120, 0);
        assert!(is_client_hello(&hello));
        let mut later_epoch = hello.clone();
        later_epoch[4] = 1;
        assert!(!is_client_hello(&later_epoch));
        assert!(!is_client_hello(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!is_client_hello(&hello[..14]));
    }

    #[test]
    fn oversized_messages_are_fragmented_or_dropped() {
        let mut q = VecDeque::new();
        enqueue(vec![0; MAX_FRAME_PAYLOAD], 5000, &mut q);
        assert_eq!(q.len(), 1);
        // Not a RELOAD message: cannot be fragmented, dropped.
        enqueue(vec![0; MAX_FRAME_PAYLOAD + 1], 5000, &mut q);
        assert_eq!(q.len(), 1);
        enqueue(vec![0; 6000], 5000, &mut q);
        assert_eq!(q.len(), 1);
    }
}
