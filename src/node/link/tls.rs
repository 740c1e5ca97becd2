//! TLS-TCP-FH links in the runtime: one task per TCP connection reads and
//! writes the socket around a sans-IO [`TlsLink`].

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openssl::ssl::SslContext;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::{
    Command, Counters, EVENT_QUEUE, HANDSHAKE_TIMEOUT, Link, LinkError, LinkEvent, LinkId, LinkIds, LinkKind,
    LinkSecurity, MAX_PENDING_HANDSHAKES, SEND_QUEUE, new_link, unix_now,
};
use crate::link::tls::{WRITE_HIGH_WATER, tls_context};
use crate::link::{Event, PeerIdentity, TlsLink};
use crate::wire::NodeId;

/// How long a closing link waits for its close_notify to go out.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Bytes read from the socket at once.
const READ_CHUNK: usize = 16 * 1024;

/// A TCP listener whose accept loop runs in its own task, so a slow or
/// hostile peer never holds up the next one.
pub(crate) struct TlsListener {
    local: SocketAddr,
    sec: Arc<LinkSecurity>,
    links: mpsc::Receiver<Link>,
    counters: Arc<Counters>,
    ids: LinkIds,
    task: JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsListener {
    pub(crate) async fn bind(addr: SocketAddr, sec: Arc<LinkSecurity>) -> io::Result<Self> {
        let ctx = tls_context(&sec).map_err(io::Error::other)?;
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let (tx, links) = mpsc::channel(16);
        let counters = Arc::new(Counters::default());
        let ids = LinkIds::default();
        let acceptor = Acceptor { ctx, sec: sec.clone(), tx, counters: counters.clone(), ids: ids.clone() };
        let task = tokio::spawn(acceptor.run(listener).instrument(tracing::info_span!("tls_listener", %local)));
        Ok(TlsListener { local, sec, links, counters, ids, task })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub(crate) fn security(&self) -> Arc<LinkSecurity> {
        self.sec.clone()
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    pub(crate) fn ids(&self) -> LinkIds {
        self.ids.clone()
    }

    pub(crate) async fn accept(&mut self) -> Link {
        match self.links.recv().await {
            Some(link) => link,
            // The acceptor only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }
}

struct Acceptor {
    ctx: SslContext,
    sec: Arc<LinkSecurity>,
    tx: mpsc::Sender<Link>,
    counters: Arc<Counters>,
    ids: LinkIds,
}

impl Acceptor {
    async fn run(self, listener: TcpListener) {
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
        loop {
            let (tcp, from) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                Counters::bump(&this.counters.rejected);
                tracing::warn!(peer = %from, "refused TLS peer: too many handshakes in progress");
                continue;
            };
            let this = this.clone();
            tokio::spawn(async move {
                let machine = TlsLink::server(&this.ctx, &this.sec, Instant::now(), unix_now());
                let outcome = match machine {
                    Ok(m) => start(tcp, from, m, this.ids.next()).await,
                    Err(e) => Err(e),
                };
                drop(permit);
                match outcome {
                    Ok(link) => {
                        // The owner dropped the listener: the link just closes.
                        let _ = this.tx.send(link).await;
                    }
                    Err(e) => {
                        Counters::bump(&this.counters.rejected);
                        tracing::warn!(peer = %from, reason = %e, "refused TLS peer");
                    }
                }
            });
        }
    }
}

/// Dials a TLS-TCP-FH link (we are the TLS client).
pub(crate) async fn dial(
    addr: SocketAddr,
    sec: Arc<LinkSecurity>,
    expected: Option<NodeId>,
    ids: &LinkIds,
) -> Result<Link, LinkError> {
    let ctx = tls_context(&sec)?;
    let tcp =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(addr)).await.map_err(|_| LinkError::Timeout)??;
    let machine = TlsLink::client(&ctx, &sec, Instant::now(), unix_now(), expected)?;
    start(tcp, addr, machine, ids.next()).await
}

/// Runs the handshake, then hands the connection to its link task.
async fn start(tcp: TcpStream, remote: SocketAddr, mut machine: TlsLink, id: LinkId) -> Result<Link, LinkError> {
    tcp.set_nodelay(true)?;
    let (mut rd, mut wr) = tcp.into_split();
    let peer = handshake(&mut rd, &mut wr, &mut machine).await?;
    let (commands_tx, commands) = mpsc::channel(SEND_QUEUE);
    let (closes_tx, closes) = mpsc::unbounded_channel();
    let (link, events) = new_link(id, peer, remote, LinkKind::TlsTcpFhNoIce, commands_tx, closes_tx);
    let span = tracing::info_span!("link", kind = "tls", %remote, peer = %link.peer.label());
    tracing::debug!(parent: &span, version = machine.version(), "TLS link up");
    let conn = Conn { rd, wr, machine, commands, closes, events, pending: VecDeque::new(), wbuf: Vec::new() };
    tokio::spawn(conn.run().instrument(span));
    Ok(link)
}

async fn handshake(
    rd: &mut OwnedReadHalf,
    wr: &mut OwnedWriteHalf,
    m: &mut TlsLink,
) -> Result<PeerIdentity, LinkError> {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        while let Some(bytes) = m.poll_transmit() {
            wr.write_all(&bytes).await?;
        }
        if let Some(ev) = m.poll_event() {
            match ev {
                Event::Connected(peer) => return Ok(peer),
                Event::Failed(e) => {
                    // The alert, if any, goes out before we hang up.
                    while let Some(bytes) = m.poll_transmit() {
                        let _ = tokio::time::timeout(SHUTDOWN_GRACE, wr.write_all(&bytes)).await;
                    }
                    return Err(e);
                }
                Event::Message(_) | Event::Closed(_) => continue,
            }
        }
        let deadline = m.poll_timeout().map_or_else(tokio::time::Instant::now, tokio::time::Instant::from_std);
        match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
            Err(_) => m.handle_timeout(Instant::now()),
            Ok(Ok(0)) => m.handle_eof(Instant::now()),
            Ok(Ok(n)) => m.handle_bytes(Instant::now(), buf.get(..n).unwrap_or_default()),
            Ok(Err(e)) => return Err(e.into()),
        }
    }
}

/// One established connection and its machine.
struct Conn {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    machine: TlsLink,
    commands: mpsc::Receiver<Command>,
    closes: mpsc::UnboundedReceiver<LinkId>,
    events: mpsc::Sender<LinkEvent>,
    /// Events taken from the machine, waiting for room in `events`.
    pending: VecDeque<LinkEvent>,
    wbuf: Vec<u8>,
}

impl Conn {
    /// Serves the link until the machine is done, then reports why.
    async fn run(mut self) {
        let mut chunk = vec![0u8; READ_CHUNK];
        let mut closing = false;
        // Every branch is cancel-safe: `read`/`write` move bytes or not at
        // all, `recv` and `reserve` lose nothing when another branch wins.
        while !self.machine.is_done() {
            self.collect();
            let reading = self.machine.wants_input() && self.pending.len() < EVENT_QUEUE;
            tokio::select! {
                r = self.rd.read(&mut chunk), if reading => match r {
                    Ok(0) => self.machine.handle_eof(Instant::now()),
                    Ok(n) => self.machine.handle_bytes(Instant::now(), chunk.get(..n).unwrap_or_default()),
                    Err(e) => self.machine.abort(&format!("read failed: {e}")),
                },
                w = self.wr.write(&self.wbuf), if !self.wbuf.is_empty() => match w {
                    Ok(0) => self.machine.abort("connection closed while writing"),
                    Ok(n) => { self.wbuf.drain(..n.min(self.wbuf.len())); }
                    Err(e) => self.machine.abort(&format!("write failed: {e}")),
                },
                c = self.commands.recv(), if !closing && self.wbuf.len() < WRITE_HIGH_WATER => match c {
                    Some(Command::Send(_, message)) => {
                        if let Err(e) = self.machine.send(Instant::now(), message) {
                            tracing::debug!(error = %e, "message dropped");
                        }
                    }
                    Some(_) => {}
                    None => closing = true,
                },
                Some(_) = self.closes.recv(), if !closing => {
                    // Messages queued before the last sender went come first.
                    while let Ok(Command::Send(_, message)) = self.commands.try_recv() {
                        if let Err(e) = self.machine.send(Instant::now(), message) {
                            tracing::debug!(error = %e, "message dropped");
                        }
                    }
                    closing = true;
                }
                p = self.events.reserve(), if !self.pending.is_empty() => match p {
                    Ok(permit) => {
                        if let Some(ev) = self.pending.pop_front() {
                            permit.send(ev);
                        }
                    }
                    // Nobody listens any more: treat as a local close.
                    Err(_) => { self.pending.clear(); closing = true; }
                },
            }
            if closing {
                self.collect();
                if self.wbuf.is_empty() {
                    self.machine.close(Instant::now());
                }
            }
        }
        self.collect();
        // Best effort: what is still buffered (ACKs), then close_notify.
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
            self.wr.write_all(&self.wbuf).await?;
            self.wr.shutdown().await
        })
        .await;
        for ev in self.pending {
            if self.events.send(ev).await.is_err() {
                return;
            }
        }
    }

    /// Moves the machine's output into the write buffer and event queue.
    fn collect(&mut self) {
        while let Some(bytes) = self.machine.poll_transmit() {
            self.wbuf.extend_from_slice(&bytes);
        }
        while let Some(ev) = self.machine.poll_event() {
            match ev {
                Event::Message(m) => self.pending.push_back(LinkEvent::Message(m)),
                Event::Closed(reason) => {
                    tracing::debug!(%reason, "TLS link closed");
                    self.pending.push_back(LinkEvent::Closed(reason));
                }
                Event::Connected(_) | Event::Failed(_) => {}
            }
        }
    }
}
