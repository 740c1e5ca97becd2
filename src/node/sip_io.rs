//! SIP sockets of a node: UDP and TCP for phones (RFC 3261 §18, with
//! Content-Length framing and RFC 5626 CRLF keepalives on streams) and SIP
//! over mutually authenticated TLS between chordphone nodes (the connection
//! an AppAttach for application 5060 points at, RFC 7904 §4).
//!
//! Everything received goes to the event loop as a [`SipInput`]; the loop
//! owns the sans-IO SIP edge and sends through the per-connection queues
//! registered here. Queues are bounded: a full queue drops the message and
//! the SIP transaction layer's retransmissions (UDP) or the peer's timers
//! recover it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_openssl::SslStream;
use tracing::{debug, warn};

use super::link::{LinkKind, LinkSecurity, base_context, handshake_error, new_ssl, peer_identity};
use crate::sip::framing::{Frame, PONG, StreamDeframer, is_datagram_keepalive};
use crate::sip::transaction::{Transport, TransportAddr};
use crate::wire::NodeId;

/// Largest SIP message accepted on any transport.
pub const MAX_SIP_MESSAGE: usize = 64 * 1024;
/// Messages queued per connection before new ones are dropped.
const CONN_QUEUE: usize = 256;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the SIP sockets hand the event loop.
pub enum SipInput {
    /// A message from a phone (UDP datagram or deframed stream message).
    Local {
        bytes: Vec<u8>,
        from: TransportAddr,
    },
    /// A phone's stream connection opened: where to send on it.
    FlowOpened {
        flow: u64,
        tx: mpsc::Sender<Vec<u8>>,
    },
    FlowClosed {
        flow: u64,
    },
    /// A message from another chordphone node.
    Node {
        from: NodeId,
        conn: u64,
        bytes: Vec<u8>,
    },
    /// An authenticated connection to another node is up.
    NodeConnected {
        node: NodeId,
        conn: u64,
        tx: mpsc::Sender<Vec<u8>>,
    },
    NodeClosed {
        node: NodeId,
        conn: u64,
    },
    /// Dialing a node failed.
    NodeDialFailed {
        node: NodeId,
        reason: String,
    },
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Receives UDP datagrams into the loop; returns the socket for sending.
pub async fn udp(addr: SocketAddr, inputs: mpsc::Sender<SipInput>) -> std::io::Result<Arc<UdpSocket>> {
    let sock = Arc::new(UdpSocket::bind(addr).await?);
    let rx = Arc::clone(&sock);
    let local = sock.local_addr()?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_SIP_MESSAGE];
        loop {
            let (n, from) = match rx.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) => {
                    debug!(error = %e, "SIP UDP receive error");
                    continue;
                }
            };
            let bytes = buf.get(..n).unwrap_or_default();
            if is_datagram_keepalive(bytes) {
                continue;
            }
            let from = TransportAddr { transport: Transport::Udp, addr: from, flow: None };
            if inputs.send(SipInput::Local { bytes: bytes.to_vec(), from }).await.is_err() {
                return;
            }
        }
    });
    debug!(%local, "SIP UDP listening");
    Ok(sock)
}

/// Accepts phones' TCP connections (each a flow, RFC 5626).
pub async fn tcp(addr: SocketAddr, inputs: mpsc::Sender<SipInput>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let (stream, from) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "SIP TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let flow = next_id();
            let (tx, rx) = mpsc::channel(CONN_QUEUE);
            if inputs.send(SipInput::FlowOpened { flow, tx }).await.is_err() {
                return;
            }
            let inputs = inputs.clone();
            tokio::spawn(async move {
                let addr = TransportAddr { transport: Transport::Tcp, addr: from, flow: Some(flow) };
                let why = serve_stream(stream, rx, |bytes| SipInput::Local { bytes, from: addr }, &inputs).await;
                debug!(%from, flow, reason = %why, "SIP TCP flow closed");
                let _ = inputs.send(SipInput::FlowClosed { flow }).await;
            });
        }
    });
    Ok(local)
}

/// Reads SIP messages from a stream until it closes, writing what `rx`
/// brings; answers CRLFCRLF pings with a CRLF pong. Returns why it ended.
async fn serve_stream<S, F>(
    stream: S,
    mut rx: mpsc::Receiver<Vec<u8>>,
    wrap: F,
    inputs: &mpsc::Sender<SipInput>,
) -> String
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Fn(Vec<u8>) -> SipInput,
{
    let (mut r, mut w) = tokio::io::split(stream);
    let mut deframer = StreamDeframer::new(MAX_SIP_MESSAGE);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(bytes) => {
                    if let Err(e) = w.write_all(&bytes).await {
                        return format!("write failed: {e}");
                    }
                }
                None => {
                    let _ = w.shutdown().await;
                    return "closed locally".into();
                }
            },
            n = r.read(&mut buf) => {
                let n = match n {
                    Ok(0) => return "closed by the peer".into(),
                    Ok(n) => n,
                    Err(e) => return format!("read failed: {e}"),
                };
                deframer.push(buf.get(..n).unwrap_or_default());
                loop {
                    match deframer.next_frame() {
                        Ok(None) => break,
                        Ok(Some(Frame::Message(m))) => {
                            if inputs.send(wrap(m)).await.is_err() {
                                return "node stopping".into();
                            }
                        }
                        Ok(Some(Frame::KeepAlivePing)) => {
                            if let Err(e) = w.write_all(PONG).await {
                                return format!("write failed: {e}");
                            }
                        }
                        Ok(Some(Frame::KeepAlivePong)) => {}
                        Err(e) => {
                            warn!(error = %e, "closing a SIP stream: bad framing");
                            return format!("bad framing: {e}");
                        }
                    }
                }
            }
        }
    }
}

/// Accepts other nodes' SIP-over-TLS connections (certificates checked as
/// for overlay links: overlay root, Node-ID).
pub async fn node_tls(
    addr: SocketAddr,
    sec: Arc<LinkSecurity>,
    inputs: mpsc::Sender<SipInput>,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let ctx = base_context(LinkKind::TlsTcpFhNoIce, &sec)?.build();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, from)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let (ctx, sec, inputs) = (ctx.clone(), Arc::clone(&sec), inputs.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls_handshake(&ctx, &sec, tcp, false, None)).await {
                    Ok(Ok((stream, node))) => run_node_conn(stream, node, inputs).await,
                    Ok(Err(e)) => warn!(%from, reason = %e, "refused a node's SIP connection"),
                    Err(_) => warn!(%from, "refused a node's SIP connection: handshake timeout"),
                }
            });
        }
    });
    Ok(local)
}

/// Dials another node's SIP-over-TLS listener (found through AppAttach).
pub fn dial_node(addr: SocketAddr, node: NodeId, sec: Arc<LinkSecurity>, inputs: mpsc::Sender<SipInput>) {
    tokio::spawn(async move {
        let attempt = async {
            let ctx = base_context(LinkKind::TlsTcpFhNoIce, &sec).map_err(|e| e.to_string())?.build();
            let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            tls_handshake(&ctx, &sec, tcp, true, Some(node)).await
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, attempt).await {
            Ok(Ok((stream, peer))) => run_node_conn(stream, peer, inputs).await,
            Ok(Err(reason)) => {
                let _ = inputs.send(SipInput::NodeDialFailed { node, reason }).await;
            }
            Err(_) => {
                let _ = inputs.send(SipInput::NodeDialFailed { node, reason: "handshake timeout".into() }).await;
            }
        }
    });
}

async fn tls_handshake(
    ctx: &openssl::ssl::SslContext,
    sec: &Arc<LinkSecurity>,
    tcp: TcpStream,
    client: bool,
    expected: Option<NodeId>,
) -> Result<(SslStream<TcpStream>, NodeId), String> {
    let _ = tcp.set_nodelay(true);
    let (ssl, slot) = new_ssl(ctx, sec).map_err(|e| e.to_string())?;
    let mut stream = SslStream::new(ssl, tcp).map_err(|e| e.to_string())?;
    let done = if client { Pin::new(&mut stream).connect().await } else { Pin::new(&mut stream).accept().await };
    done.map_err(|e| handshake_error(e, &slot).to_string())?;
    let peer = peer_identity(stream.ssl(), sec, expected).map_err(|e| e.to_string())?;
    let node = match expected {
        Some(n) => n,
        None => *peer.node_ids.first().ok_or("the certificate binds no Node-ID")?,
    };
    Ok((stream, node))
}

async fn run_node_conn(stream: SslStream<TcpStream>, node: NodeId, inputs: mpsc::Sender<SipInput>) {
    let conn = next_id();
    let (tx, rx) = mpsc::channel(CONN_QUEUE);
    if inputs.send(SipInput::NodeConnected { node, conn, tx }).await.is_err() {
        return;
    }
    let why = serve_stream(stream, rx, |bytes| SipInput::Node { from: node, conn, bytes }, &inputs).await;
    debug!(%node, conn, reason = %why, "node SIP connection closed");
    let _ = inputs.send(SipInput::NodeClosed { node, conn }).await;
}
