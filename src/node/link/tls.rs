//! TLS-TCP-FH-NO-ICE links (RFC 6940 §6.6, §6.6.2): TLS 1.2 or 1.3 over
//! TCP, each RELOAD message in a framed DATA message.
//!
//! TCP is reliable, so nothing is retransmitted (§6.6.2). The receiver
//! still answers every DATA frame with an ACK: the framing header exists
//! so that a sender can time its messages and notice a dead link, and
//! deployed peers that wait for ACKs on TLS links too would otherwise
//! resend and finally drop the link. ACKs we receive are accepted and
//! ignored.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openssl::ssl::{SslContext, SslMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_openssl::SslStream;
use tracing::Instrument;

use super::{
    HANDSHAKE_TIMEOUT, Link, LinkChannels, LinkError, LinkEvent, LinkKind, LinkSecurity, MAX_PENDING_HANDSHAKES, Role,
    base_context, handshake_error, link_channels, new_ssl, peer_identity, peer_label, take_frames,
};
use crate::wire::framing::{AckTracker, FramedMessage};
use crate::wire::{Codec, NodeId};

/// Bytes of encoded frames buffered for writing before the link stops
/// taking messages from its queue.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// Largest single TLS write (one record).
const WRITE_CHUNK: usize = 16 * 1024;
/// How long a closing link waits for its close_notify to go out.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A TCP listener whose accept loop runs in its own task, so a slow or
/// hostile peer never holds up the next one.
pub(crate) struct TlsListener {
    local: SocketAddr,
    sec: Arc<LinkSecurity>,
    links: mpsc::Receiver<Link>,
    rejected: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsListener {
    pub(crate) async fn bind(addr: SocketAddr, sec: Arc<LinkSecurity>) -> io::Result<Self> {
        let ctx = context(&sec).map_err(io::Error::other)?;
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let (tx, links) = mpsc::channel(16);
        let rejected = Arc::new(AtomicU64::new(0));
        let acceptor = Acceptor { ctx, sec: sec.clone(), tx, rejected: rejected.clone() };
        let task = tokio::spawn(acceptor.run(listener).instrument(tracing::info_span!("tls_listener", %local)));
        Ok(TlsListener { local, sec, links, rejected, task })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub(crate) fn security(&self) -> Arc<LinkSecurity> {
        self.sec.clone()
    }

    pub(crate) fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
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
    rejected: Arc<AtomicU64>,
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
                this.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = %from, "refused TLS peer: too many handshakes in progress");
                continue;
            };
            let this = this.clone();
            tokio::spawn(async move {
                let outcome = tokio::time::timeout(
                    HANDSHAKE_TIMEOUT,
                    handshake(&this.ctx, &this.sec, tcp, from, Role::Server, None),
                )
                .await
                .unwrap_or(Err(LinkError::Timeout));
                drop(permit);
                match outcome {
                    Ok(link) => {
                        // The owner dropped the listener: the link just closes.
                        let _ = this.tx.send(link).await;
                    }
                    Err(e) => {
                        this.rejected.fetch_add(1, Ordering::Relaxed);
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
) -> Result<Link, LinkError> {
    let ctx = context(&sec)?;
    tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let tcp = TcpStream::connect(addr).await?;
        handshake(&ctx, &sec, tcp, addr, Role::Client, expected).await
    })
    .await
    .unwrap_or(Err(LinkError::Timeout))
}

fn context(sec: &LinkSecurity) -> Result<SslContext, LinkError> {
    let mut b = base_context(LinkKind::TlsTcpFhNoIce, sec)?;
    // Lets the link loop hand OpenSSL a growing buffer between retries.
    b.set_mode(SslMode::ENABLE_PARTIAL_WRITE | SslMode::ACCEPT_MOVING_WRITE_BUFFER);
    Ok(b.build())
}

/// Runs the handshake and the identity check, then starts the link task.
async fn handshake(
    ctx: &SslContext,
    sec: &Arc<LinkSecurity>,
    tcp: TcpStream,
    remote: SocketAddr,
    role: Role,
    expected: Option<NodeId>,
) -> Result<Link, LinkError> {
    tcp.set_nodelay(true)?;
    let (ssl, slot) = new_ssl(ctx, sec)?;
    let mut stream = SslStream::new(ssl, tcp)?;
    let done = match role {
        Role::Client => Pin::new(&mut stream).connect().await,
        Role::Server => Pin::new(&mut stream).accept().await,
    };
    done.map_err(|e| handshake_error(e, &slot))?;
    let peer = match peer_identity(stream.ssl(), sec, expected) {
        Ok(p) => p,
        Err(e) => {
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, stream.shutdown()).await;
            return Err(e);
        }
    };
    let span = tracing::info_span!("link", kind = "tls", %remote, peer = %peer_label(&peer));
    let (link, chans) = link_channels(peer, remote, LinkKind::TlsTcpFhNoIce);
    tracing::debug!(parent: &span, version = stream.ssl().version_str(), "TLS link up");
    tokio::spawn(run(stream, sec.max_message_size, chans).instrument(span));
    Ok(link)
}

/// Serves one established link until it closes, then reports why.
async fn run(stream: SslStream<TcpStream>, max_message: usize, chans: LinkChannels) {
    let LinkChannels { mut out_rx, ev_tx } = chans;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut inbuf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut wbuf: Vec<u8> = Vec::new();
    let mut pending: VecDeque<Vec<u8>> = VecDeque::new();
    let mut acks = AckTracker::default();
    let mut next_seq = 0u32;
    let mut closing = false;
    // Every branch is cancel-safe: `read`/`write` move bytes or not at all,
    // `recv` and `reserve` lose nothing when another branch wins.
    let reason = loop {
        if closing && wbuf.is_empty() {
            break "closed locally".to_owned();
        }
        let write_len = wbuf.len().min(WRITE_CHUNK);
        tokio::select! {
            // Reading stops while the owner lags or the peer does not take
            // our ACKs: both buffers stay bounded, TCP pushes back.
            r = rd.read(&mut chunk), if pending.len() < super::EVENT_QUEUE && wbuf.len() < 2 * WRITE_HIGH_WATER => match r {
                Ok(0) => break "peer closed the connection".to_owned(),
                Ok(n) => {
                    inbuf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                    let (frames, verdict) = take_frames(&mut inbuf, max_message);
                    on_frames(frames, &mut acks, &mut wbuf, &mut pending);
                    if let Err(reason) = verdict {
                        tracing::warn!(%reason, "closing TLS link");
                        break reason;
                    }
                }
                Err(e) => break format!("read failed: {e}"),
            },
            w = wr.write(wbuf.get(..write_len).unwrap_or_default()), if write_len > 0 => match w {
                Ok(0) => break "connection closed while writing".to_owned(),
                Ok(n) => { wbuf.drain(..n.min(wbuf.len())); }
                Err(e) => break format!("write failed: {e}"),
            },
            m = out_rx.recv(), if !closing && wbuf.len() < WRITE_HIGH_WATER => match m {
                Some(message) => frame_message(message, max_message, &mut next_seq, &mut wbuf),
                None => closing = true,
            },
            p = ev_tx.reserve(), if !pending.is_empty() => match p {
                Ok(permit) => {
                    if let Some(m) = pending.pop_front() {
                        permit.send(LinkEvent::Message(m));
                    }
                }
                // Nobody listens any more: treat as a local close.
                Err(_) => { pending.clear(); closing = true; }
            },
        }
    };
    tracing::debug!(%reason, "TLS link closed");
    // Best effort: what is still buffered (ACKs), then close_notify.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        wr.write_all(&wbuf).await?;
        wr.shutdown().await
    })
    .await;
    for m in pending {
        if ev_tx.send(LinkEvent::Message(m)).await.is_err() {
            return;
        }
    }
    let _ = ev_tx.send(LinkEvent::Closed(reason)).await;
}

fn on_frames(frames: Vec<FramedMessage>, acks: &mut AckTracker, wbuf: &mut Vec<u8>, pending: &mut VecDeque<Vec<u8>>) {
    for f in frames {
        match f {
            FramedMessage::Data { sequence, message } => {
                // §6.6.2: answer every DATA frame with an ACK.
                if let Ok(ack) = acks.on_data(sequence).to_bytes() {
                    wbuf.extend_from_slice(&ack);
                }
                pending.push_back(message);
            }
            // No retransmission on TCP, so ACKs only tell us the peer lives.
            FramedMessage::Ack { ack_sequence, .. } => tracing::trace!(ack_sequence, "ACK"),
        }
    }
}

fn frame_message(message: Vec<u8>, max_message: usize, next_seq: &mut u32, wbuf: &mut Vec<u8>) {
    if message.len() > max_message {
        // The peer would close the link on it (§6.6.2 framing, max-message-size).
        tracing::warn!(len = message.len(), max_message, "dropped outgoing message larger than max-message-size");
        return;
    }
    let frame = FramedMessage::Data { sequence: *next_seq, message };
    match frame.to_bytes() {
        Ok(b) => {
            wbuf.extend_from_slice(&b);
            // §6.6.2: one sequence space per connection, +1 per frame.
            *next_seq = next_seq.wrapping_add(1);
        }
        Err(e) => tracing::warn!(error = %e, "dropped unframeable message"),
    }
}
