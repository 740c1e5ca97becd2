//! SIP sockets of a node: UDP, TCP and TLS for phones (RFC 3261 §18 and
//! §26.2.1, with Content-Length framing and RFC 5626 CRLF keepalives on
//! streams; TLS authenticates only the server, [`tls_context`]) and SIP
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

use openssl::ssl::{Ssl, SslAcceptor};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, mpsc};
use tokio_openssl::SslStream;
use tracing::{debug, warn};

use super::link::{
    LinkKind, LinkSecurity, MAX_PENDING_HANDSHAKES, base_context, handshake_error, new_ssl, peer_identity,
};
use crate::sip::framing::{Frame, PONG, StreamDeframer, is_datagram_keepalive};
use crate::sip::transaction::{Transport, TransportAddr};
use crate::wire::NodeId;

#[path = "sip_tls.rs"]
pub mod tls_context;

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

/// The way into the node's loop for every SIP socket task, with the
/// node's own allocator of flow and connection ids (per node, not per
/// process: several nodes may run in one process).
#[derive(Clone, Debug)]
pub struct SipInputs {
    tx: mpsc::Sender<SipInput>,
    ids: Arc<AtomicU64>,
}

impl SipInputs {
    pub fn new(tx: mpsc::Sender<SipInput>) -> SipInputs {
        SipInputs { tx, ids: Arc::new(AtomicU64::new(1)) }
    }

    async fn send(&self, input: SipInput) -> Result<(), mpsc::error::SendError<SipInput>> {
        self.tx.send(input).await
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }
}

/// Receives UDP datagrams into the loop; returns the socket for sending.
pub async fn udp(addr: SocketAddr, inputs: SipInputs) -> std::io::Result<Arc<UdpSocket>> {
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
pub async fn tcp(addr: SocketAddr, inputs: SipInputs) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        while !inputs.is_closed() {
            let Some((stream, from)) = accept(&listener, "TCP").await else { continue };
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve_phone_flow(stream, from, Transport::Tcp, inputs.clone()));
        }
    });
    Ok(local)
}

/// Accepts phones' SIP-over-TLS connections (RFC 3261 §26.2.1 "sips", RFC
/// 5630 §3): the server shows `acceptor`'s certificate and asks phones for
/// none; after the handshake a connection is a flow exactly like a TCP one,
/// with [`Transport::Tls`] so Via and Record-Route say TLS. A handshake
/// that fails or takes longer than 10 s closes the connection, is logged at
/// debug and counted in `failures` (phones' TLS connections refused: failed
/// or timed-out handshakes, or too many at once). The counter belongs to the
/// node's SIP sockets, not to the process, so several nodes in one process
/// count apart.
pub async fn tls(
    addr: SocketAddr,
    acceptor: SslAcceptor,
    inputs: SipInputs,
    failures: Arc<AtomicU64>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let handshakes = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    tokio::spawn(async move {
        while !inputs.is_closed() {
            let Some((tcp, from)) = accept(&listener, "TLS").await else { continue };
            // Bounded: a flood of idle connections cannot hold more than
            // this many handshakes (and their 10 s timers) at once.
            let Ok(permit) = Arc::clone(&handshakes).try_acquire_owned() else {
                failures.fetch_add(1, Ordering::Relaxed);
                debug!(%from, "SIP TLS connection refused: too many handshakes in progress");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, inputs, failures) = (acceptor.clone(), inputs.clone(), Arc::clone(&failures));
            tokio::spawn(async move {
                let outcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, phone_handshake(&acceptor, tcp)).await;
                drop(permit);
                let why = match outcome {
                    Ok(Ok(stream)) => return serve_phone_flow(stream, from, Transport::Tls, inputs).await,
                    Ok(Err(e)) => e,
                    Err(_) => "handshake timeout".to_owned(),
                };
                failures.fetch_add(1, Ordering::Relaxed);
                debug!(%from, reason = %why, "phone's SIP TLS handshake failed");
            });
        }
    });
    Ok(local)
}

/// One accepted connection; `None` (after a pause, so a persistent error
/// such as EMFILE does not spin) when accepting failed.
async fn accept(listener: &TcpListener, what: &str) -> Option<(TcpStream, SocketAddr)> {
    match listener.accept().await {
        Ok(c) => Some(c),
        Err(e) => {
            warn!(error = %e, "SIP {what} accept failed");
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

async fn phone_handshake(acceptor: &SslAcceptor, tcp: TcpStream) -> Result<SslStream<TcpStream>, String> {
    let ssl = Ssl::new(acceptor.context()).map_err(|e| e.to_string())?;
    let mut stream = SslStream::new(ssl, tcp).map_err(|e| e.to_string())?;
    Pin::new(&mut stream).accept().await.map_err(|e| e.to_string())?;
    Ok(stream)
}

/// Serves one phone's stream connection (TCP or TLS) as an RFC 5626 flow:
/// announces it, hands its messages to the loop tagged with the flow, and
/// reports its end.
async fn serve_phone_flow<S>(stream: S, from: SocketAddr, transport: Transport, inputs: SipInputs)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let flow = inputs.next_id();
    let (tx, rx) = mpsc::channel(CONN_QUEUE);
    if inputs.send(SipInput::FlowOpened { flow, tx }).await.is_err() {
        return;
    }
    let addr = TransportAddr { transport, addr: from, flow: Some(flow) };
    let why = serve_stream(stream, rx, |bytes| SipInput::Local { bytes, from: addr }, &inputs).await;
    debug!(%from, flow, ?transport, reason = %why, "SIP flow closed");
    let _ = inputs.send(SipInput::FlowClosed { flow }).await;
}

/// Reads SIP messages from a stream until it closes, writing what `rx`
/// brings; answers CRLFCRLF pings with a CRLF pong. Returns why it ended.
async fn serve_stream<S, F>(stream: S, mut rx: mpsc::Receiver<Vec<u8>>, wrap: F, inputs: &SipInputs) -> String
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
pub async fn node_tls(addr: SocketAddr, sec: Arc<LinkSecurity>, inputs: SipInputs) -> anyhow::Result<SocketAddr> {
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
pub fn dial_node(addr: SocketAddr, node: NodeId, sec: Arc<LinkSecurity>, inputs: SipInputs) {
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

async fn run_node_conn(stream: SslStream<TcpStream>, node: NodeId, inputs: SipInputs) {
    let conn = inputs.next_id();
    let (tx, rx) = mpsc::channel(CONN_QUEUE);
    if inputs.send(SipInput::NodeConnected { node, conn, tx }).await.is_err() {
        return;
    }
    let why = serve_stream(stream, rx, |bytes| SipInput::Node { from: node, conn, bytes }, &inputs).await;
    debug!(%node, conn, reason = %why, "node SIP connection closed");
    let _ = inputs.send(SipInput::NodeClosed { node, conn }).await;
}

#[cfg(test)]
mod tests {
    use openssl::ssl::{SslConnector, SslMethod};
    use openssl::x509::X509;

    use super::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:example.org SIP/2.0\r\nContent-Length: 0\r\n\r\n";
    const OK: &[u8] = b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n";

    /// A listener with a fresh self-signed certificate for "sip.test".
    async fn listener() -> (SocketAddr, X509, mpsc::Receiver<SipInput>, Arc<AtomicU64>) {
        let k = rcgen::KeyPair::generate().unwrap();
        let c = rcgen::CertificateParams::new(vec!["sip.test".to_owned()]).unwrap().self_signed(&k).unwrap();
        let cert = X509::from_der(c.der()).unwrap();
        let key = openssl::pkey::PKey::private_key_from_pem(k.serialize_pem().as_bytes()).unwrap();
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
        b.set_certificate(&cert).unwrap();
        b.set_private_key(&key).unwrap();
        let (tx, rx) = mpsc::channel(16);
        let failures = Arc::new(AtomicU64::new(0));
        let local =
            tls("127.0.0.1:0".parse().unwrap(), b.build(), SipInputs::new(tx), Arc::clone(&failures)).await.unwrap();
        (local, cert, rx, failures)
    }

    async fn phone(addr: SocketAddr, trusted: &X509) -> Result<SslStream<TcpStream>, openssl::ssl::Error> {
        let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
        b.cert_store_mut().add_cert(trusted.clone()).unwrap();
        let ssl = b.build().configure().unwrap().into_ssl("sip.test").unwrap();
        let mut s = SslStream::new(ssl, TcpStream::connect(addr).await.unwrap()).unwrap();
        Pin::new(&mut s).connect().await?;
        Ok(s)
    }

    async fn read_some(s: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await.unwrap().unwrap_or(0);
        buf.truncate(n);
        buf
    }

    async fn failures_above(failures: &AtomicU64, before: u64) -> bool {
        tokio::time::timeout(Duration::from_secs(2), async {
            while failures.load(Ordering::Relaxed) <= before {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .is_ok()
    }

    #[tokio::test]
    async fn a_tls_flow_carries_messages_both_ways_and_answers_keepalives() {
        let (addr, cert, mut rx, _) = listener().await;
        let mut s = phone(addr, &cert).await.unwrap();
        s.write_all(OPTIONS).await.unwrap();
        let Some(SipInput::FlowOpened { flow, tx }) = rx.recv().await else { panic!("no FlowOpened") };
        let Some(SipInput::Local { bytes, from }) = rx.recv().await else { panic!("no message") };
        assert_eq!(bytes, OPTIONS);
        assert_eq!(
            (from.transport, from.flow, from.addr),
            (Transport::Tls, Some(flow), s.get_ref().local_addr().unwrap())
        );
        tx.send(OK.to_vec()).await.unwrap();
        assert_eq!(read_some(&mut s).await, OK);
        s.write_all(b"\r\n\r\n").await.unwrap();
        assert_eq!(read_some(&mut s).await, PONG);
        drop(s);
        assert!(matches!(rx.recv().await, Some(SipInput::FlowClosed { flow: f }) if f == flow));
    }

    #[tokio::test]
    async fn failed_handshakes_are_counted_and_the_listener_keeps_serving() {
        let (addr, cert, mut rx, failures) = listener().await;
        // Plain SIP on the TLS port: no SIP answer, the connection closes.
        let before = failures.load(Ordering::Relaxed);
        let mut plain = TcpStream::connect(addr).await.unwrap();
        plain.write_all(OPTIONS).await.unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), plain.read_to_end(&mut got)).await.unwrap();
        assert!(!got.windows(7).any(|w| w == b"SIP/2.0"), "{got:?}");
        assert!(failures_above(&failures, before).await);
        // A phone that does not trust the certificate gives up.
        let before = failures.load(Ordering::Relaxed);
        let stranger = X509::from_der(
            rcgen::CertificateParams::new(vec!["x".to_owned()])
                .unwrap()
                .self_signed(&rcgen::KeyPair::generate().unwrap())
                .unwrap()
                .der(),
        )
        .unwrap();
        assert!(phone(addr, &stranger).await.is_err());
        assert!(failures_above(&failures, before).await);
        assert!(rx.try_recv().is_err(), "a refused connection reached the loop");
        // A phone that does trust it is served.
        let mut s = phone(addr, &cert).await.unwrap();
        s.write_all(OPTIONS).await.unwrap();
        assert!(matches!(rx.recv().await, Some(SipInput::FlowOpened { .. })));
        assert!(matches!(rx.recv().await, Some(SipInput::Local { bytes, .. }) if bytes == OPTIONS));
    }
}
