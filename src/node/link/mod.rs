//! Overlay links (RFC 6940 §6.6): TLS-TCP-FH-NO-ICE ([`tls`]) and
//! DTLS-UDP-SR-NO-ICE ([`dtls`]).
//!
//! Both kinds authenticate both ends with overlay certificates (§6.6.1,
//! §11): OpenSSL runs the handshake, and the chain check is ours
//! ([`crate::security::verify_chain`]), run from OpenSSL's verify callback
//! (so a refused peer gets an alert) and again after the handshake to
//! extract the Node-IDs the link is bound to. Every RELOAD message travels
//! in a framed DATA message (§6.6.2, [`crate::wire::framing`]); each DATA
//! frame is answered by an ACK on both kinds. DTLS adds Simple Reliability
//! (§6.6.3.2) on top.
//!
//! A [`Link`] is a pair of bounded channels served by a spawned task:
//! drop [`Link::tx`] to close it; the task reports the end, whoever caused
//! it, as a final [`LinkEvent::Closed`] on [`Link::rx`].

pub mod dtls;
pub mod tls;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openssl::pkey::PKey;
use openssl::ssl::{Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslSessionCacheMode, SslVerifyMode};
use openssl::x509::X509;
use tokio::sync::mpsc;

use crate::security::{SecurityError, verify_chain};
use crate::wire::NodeId;
use crate::wire::framing::{FramedMessage, frame_len};
use crate::wire::{Codec, Reader};

/// How long a (D)TLS handshake and the certificate check may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Capacity of [`Link::tx`] (messages waiting to be framed and sent).
pub const SEND_QUEUE: usize = 64;
/// Capacity of [`Link::rx`]. When the runtime does not drain it, the link
/// stops reading: TCP pushes back, DTLS stops ACKing and the peer's
/// Simple Reliability backs off.
pub const EVENT_QUEUE: usize = 256;
/// Handshakes a listener runs at once; further peers are refused.
pub const MAX_PENDING_HANDSHAKES: usize = 256;
/// Bytes of the §6.6.2 DATA frame header (type, sequence, 24-bit length).
pub const DATA_FRAME_HEADER: usize = 1 + 4 + 3;

/// The two No-ICE link types of §6.6 (IANA OverlayLinkType 4 and 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkKind {
    /// TLS 1.2+ over TCP with the framing header ("TLS-TCP-FH-NO-ICE", §14.10).
    TlsTcpFhNoIce,
    /// DTLS 1.2 over UDP with framing header and Simple Reliability.
    DtlsUdpSrNoIce,
}

/// What a node needs to run links: its overlay certificate and key and
/// the overlay's root to check peers against.
#[derive(Clone)]
pub struct LinkSecurity {
    /// The overlay name peers' `reload://` URIs must carry.
    pub overlay: String,
    /// The overlay's root certificate (configuration `root-cert`), DER.
    pub ca_der: Vec<u8>,
    /// This node's certificate, DER.
    pub cert_der: Vec<u8>,
    /// This node's private key, PKCS#8 DER (P-256, Ed25519 or RSA).
    pub key_pkcs8: Vec<u8>,
    /// The overlay's `max-message-size`: a larger frame closes the link.
    pub max_message_size: usize,
}

impl std::fmt::Debug for LinkSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("LinkSecurity")
            .field("overlay", &self.overlay)
            .field("max_message_size", &self.max_message_size)
            .finish_non_exhaustive()
    }
}

/// Who is at the other end, as its verified certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The Node-IDs of the peer's certificate; the link is bound to them.
    pub node_ids: Vec<NodeId>,
    /// The certificate's user name (rfc822Name), when present.
    pub user: Option<String>,
    /// The peer's certificate, DER.
    pub cert_der: Vec<u8>,
}

/// What a link reports to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// One whole RELOAD message (or a §6.7 fragment of one) as received.
    Message(Vec<u8>),
    /// The link is gone; the last event on the channel.
    Closed(String),
}

/// An authenticated overlay link, served by its own task.
#[derive(Debug)]
pub struct Link {
    pub peer: PeerIdentity,
    pub remote: SocketAddr,
    pub kind: LinkKind,
    /// Messages to send, one RELOAD message each. Drop it to close the
    /// link (queued messages are sent, and on DTLS ACKed, first). Use
    /// `try_send` from an event loop that also drains [`Link::rx`]: the
    /// link stops reading while `rx` is full.
    pub tx: mpsc::Sender<Vec<u8>>,
    /// Received messages, then one final `Closed`.
    pub rx: mpsc::Receiver<LinkEvent>,
}

/// Why a link could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// Our certificate, key or OpenSSL settings are unusable.
    #[error("TLS setup failed: {0}")]
    Setup(String),
    #[error("handshake failed: {0}")]
    Handshake(String),
    #[error("handshake timed out")]
    Timeout,
    /// The peer's certificate failed our check (§11.3).
    #[error("peer certificate refused: {0}")]
    Certificate(#[from] SecurityError),
    #[error("peer presented no certificate")]
    NoCertificate,
    /// §6.6.1: the certificate does not carry the Node-ID we dialed.
    #[error("peer certificate is for {found:?}, not the expected Node-ID {expected}")]
    WrongNodeId { expected: NodeId, found: Vec<String> },
    /// DTLS: a session with that address already exists on this socket.
    #[error("a session with {0} already exists on this socket")]
    Busy(SocketAddr),
    #[error("too many sessions or handshakes in progress")]
    TooManySessions,
    /// The socket's demultiplexer has stopped (its listener was dropped).
    #[error("link socket is closed")]
    SocketClosed,
}

impl From<openssl::error::ErrorStack> for LinkError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        LinkError::Setup(e.to_string())
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
/// not carry that Node-ID. DTLS binds a fresh ephemeral UDP socket: prefer
/// [`LinkListener::dial`], which reuses the listener's port.
pub async fn dial(
    kind: LinkKind,
    addr: SocketAddr,
    sec: Arc<LinkSecurity>,
    expected: Option<NodeId>,
) -> Result<Link, LinkError> {
    match kind {
        LinkKind::TlsTcpFhNoIce => tls::dial(addr, sec, expected).await,
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
        match &self.inner {
            ListenerInner::Tls(l) => l.rejected(),
            ListenerInner::Dtls(l) => l.rejected(),
        }
    }

    /// DTLS: datagrams dropped because they came from an unknown address
    /// and were not a DTLS ClientHello. Always 0 for TLS.
    pub fn ignored_datagrams(&self) -> u64 {
        match &self.inner {
            ListenerInner::Tls(_) => 0,
            ListenerInner::Dtls(l) => l.ignored(),
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
            ListenerInner::Tls(l) => DialerInner::Tls(l.security()),
            ListenerInner::Dtls(l) => DialerInner::Dtls(l.dialer()),
        })
    }
}

/// Dials links from a listener's socket; see [`LinkListener::dialer`].
#[derive(Clone)]
pub struct LinkDialer(DialerInner);

#[derive(Clone)]
enum DialerInner {
    Tls(Arc<LinkSecurity>),
    Dtls(dtls::DtlsDialer),
}

impl LinkDialer {
    /// Dials `addr`, refusing a peer without the `expected` Node-ID.
    pub async fn dial(&self, addr: SocketAddr, expected: Option<NodeId>) -> Result<Link, LinkError> {
        match &self.0 {
            DialerInner::Tls(sec) => tls::dial(addr, sec.clone(), expected).await,
            DialerInner::Dtls(d) => d.dial(addr, expected).await,
        }
    }
}

/// Which end of the handshake we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Client,
    Server,
}

/// An OpenSSL context for `kind` carrying our certificate and key, asking
/// for (and accepting any) peer certificate: the real check is per
/// connection, see [`new_ssl`].
pub(crate) fn base_context(kind: LinkKind, sec: &LinkSecurity) -> Result<SslContextBuilder, LinkError> {
    let (method, min) = match kind {
        LinkKind::TlsTcpFhNoIce => (SslMethod::tls(), openssl::ssl::SslVersion::TLS1_2),
        LinkKind::DtlsUdpSrNoIce => (SslMethod::dtls(), openssl::ssl::SslVersion::DTLS1_2),
    };
    let mut b = SslContextBuilder::new(method)?;
    b.set_min_proto_version(Some(min))?;
    let cert = X509::from_der(&sec.cert_der)?;
    let key = private_key(&sec.key_pkcs8)?;
    b.set_certificate(&cert)?;
    b.set_private_key(&key)?;
    b.check_private_key()?;
    b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    // Every link shows its certificate afresh: no resumption, so the
    // identity check always sees the peer's current certificate.
    b.set_session_cache_mode(SslSessionCacheMode::OFF);
    b.set_options(SslOptions::NO_TICKET | SslOptions::NO_RENEGOTIATION);
    b.set_num_tickets(0)?;
    Ok(b)
}

/// Reads our PKCS#8 key. OpenSSL 3.0 cannot read the PKCS#8 v2
/// (RFC 5958, with the public key) that `ring` writes for Ed25519, so an
/// Ed25519 key it refuses is loaded from its 32-byte seed instead.
pub(crate) fn private_key(der: &[u8]) -> Result<PKey<openssl::pkey::Private>, LinkError> {
    match PKey::private_key_from_pkcs8(der) {
        Ok(k) => Ok(k),
        Err(e) => match ed25519_seed(der) {
            Some(seed) => Ok(PKey::private_key_from_raw_bytes(seed, openssl::pkey::Id::ED25519)?),
            None => Err(e.into()),
        },
    }
}

/// The seed of an Ed25519 PKCS#8 key (RFC 8410 §7): the algorithm OID
/// 1.3.101.112, then `privateKey OCTET STRING { CurvePrivateKey OCTET
/// STRING (32) }`.
fn ed25519_seed(der: &[u8]) -> Option<&[u8]> {
    const OID: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];
    const KEY: [u8; 4] = [0x04, 0x22, 0x04, 0x20];
    let after_oid = der.windows(OID.len()).position(|w| w == OID)? + OID.len();
    let rest = der.get(after_oid..)?;
    let at = rest.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    rest.get(at..at + 32)
}

/// Where the verify callback leaves the reason it refused a certificate.
pub(crate) type VerifySlot = Arc<Mutex<Option<SecurityError>>>;

/// A connection object whose verify callback runs our §11.3 check on the
/// peer's end-entity certificate, so a refused peer gets an alert.
pub(crate) fn new_ssl(ctx: &SslContext, sec: &Arc<LinkSecurity>) -> Result<(Ssl, VerifySlot), LinkError> {
    let mut ssl = Ssl::new(ctx)?;
    let slot: VerifySlot = Arc::new(Mutex::new(None));
    let (s, sec) = (slot.clone(), sec.clone());
    ssl.set_verify_callback(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT, move |_, store| {
        // OpenSSL has no trust store here and so always "fails"; only our
        // verdict on the peer's own certificate (depth 0) counts.
        if store.error_depth() != 0 {
            return true;
        }
        let Some(der) = store.current_cert().and_then(|c| c.to_der().ok()) else { return false };
        match verify_chain(&der, &sec.ca_der, unix_now(), &sec.overlay) {
            Ok(_) => true,
            Err(e) => {
                if let Ok(mut g) = s.lock() {
                    *g = Some(e);
                }
                false
            }
        }
    });
    Ok((ssl, slot))
}

/// A handshake error, replaced by the certificate verdict when that is
/// what failed it.
pub(crate) fn handshake_error(e: impl std::fmt::Display, slot: &VerifySlot) -> LinkError {
    match slot.lock().ok().and_then(|mut g| g.take()) {
        Some(reason) => LinkError::Certificate(reason),
        None => LinkError::Handshake(e.to_string()),
    }
}

/// The identity of a finished handshake's peer (§6.6.1: the link is bound
/// to the certificate's Node-IDs), checking `expected` when dialing.
pub(crate) fn peer_identity(
    ssl: &openssl::ssl::SslRef,
    sec: &LinkSecurity,
    expected: Option<NodeId>,
) -> Result<PeerIdentity, LinkError> {
    let cert = ssl.peer_certificate().ok_or(LinkError::NoCertificate)?;
    let der = cert.to_der()?;
    let id = verify_chain(&der, &sec.ca_der, unix_now(), &sec.overlay)?;
    if let Some(want) = expected
        && !id.node_ids.contains(&want)
    {
        return Err(LinkError::WrongNodeId { expected: want, found: id.node_ids.iter().map(|n| n.to_hex()).collect() });
    }
    Ok(PeerIdentity { node_ids: id.node_ids, user: id.user, cert_der: der })
}

/// Wall time for certificate validity checks.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Cuts whole frames off the front of `buf` (a TCP byte stream or one
/// DTLS record). A partial frame stays in `buf`. The error, if any, names
/// why the link must close (a frame type that is not §6.6.2's, or a DATA
/// frame longer than `max_message`, seen from its header before it is
/// buffered); the frames before the bad one are returned with it.
pub(crate) fn take_frames(buf: &mut Vec<u8>, max_message: usize) -> (Vec<FramedMessage>, Result<(), String>) {
    let mut out = Vec::new();
    let mut used = 0usize;
    let verdict = loop {
        let rest = buf.get(used..).unwrap_or_default();
        let len = match frame_len(rest) {
            Ok(Some(n)) => n,
            Ok(None) => break Ok(()),
            Err(_) => {
                let ty = rest.first().copied().unwrap_or_default();
                break Err(format!("unknown frame type {ty}"));
            }
        };
        if len > max_message.saturating_add(DATA_FRAME_HEADER) {
            break Err(format!("oversized frame {len} bytes"));
        }
        let Some(frame) = rest.get(..len) else { break Ok(()) };
        let mut r = Reader::new(frame);
        match FramedMessage::decode(&mut r) {
            Ok(f) => out.push(f),
            Err(e) => break Err(format!("malformed frame: {e}")),
        }
        used += len;
    };
    buf.drain(..used);
    (out, verdict)
}

/// The pieces of a new [`Link`] and the task ends of its channels.
pub(crate) struct LinkChannels {
    pub out_rx: mpsc::Receiver<Vec<u8>>,
    pub ev_tx: mpsc::Sender<LinkEvent>,
}

pub(crate) fn link_channels(peer: PeerIdentity, remote: SocketAddr, kind: LinkKind) -> (Link, LinkChannels) {
    let (tx, out_rx) = mpsc::channel(SEND_QUEUE);
    let (ev_tx, rx) = mpsc::channel(EVENT_QUEUE);
    (Link { peer, remote, kind, tx, rx }, LinkChannels { out_rx, ev_tx })
}

/// A short label for logs: the first Node-ID of a peer.
pub(crate) fn peer_label(p: &PeerIdentity) -> String {
    p.node_ids.first().map(|n| n.to_hex()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(seq: u32, len: usize) -> Vec<u8> {
        FramedMessage::Data { sequence: seq, message: vec![7; len] }.to_bytes().unwrap()
    }

    #[test]
    fn every_key_type_loads_into_openssl() {
        use crate::security::{KeyAlgorithm, KeyPair};
        for alg in [KeyAlgorithm::EcdsaP256Sha256, KeyAlgorithm::Ed25519] {
            let k = KeyPair::generate(alg).unwrap();
            let pkey = private_key(&k.to_pkcs8_der()).unwrap();
            // The same key: OpenSSL derives the public half we know.
            assert_eq!(pkey.public_key_to_der().unwrap(), k.spki_der(), "{alg:?}");
        }
        assert!(private_key(b"not a key").is_err());
    }

    #[test]
    fn frames_are_cut_from_a_stream() {
        let mut stream = data(0, 10);
        stream.extend(FramedMessage::Ack { ack_sequence: 3, received: 1 }.to_bytes().unwrap());
        let second = data(1, 20);
        stream.extend(&second[..5]);
        let (got, ok) = take_frames(&mut stream, 100);
        assert_eq!(ok, Ok(()));
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], FramedMessage::Ack { ack_sequence: 3, received: 1 });
        assert_eq!(stream, second[..5].to_vec());
        stream.extend(&second[5..]);
        let (got, _) = take_frames(&mut stream, 100);
        assert_eq!(got, vec![FramedMessage::Data { sequence: 1, message: vec![7; 20] }]);
        assert!(stream.is_empty());
    }

    #[test]
    fn oversized_and_unknown_frames_are_refused_from_the_header() {
        // Only the 8-byte header of a 1 MB frame is needed to refuse it.
        let mut head = data(0, 1 << 20)[..8].to_vec();
        assert_eq!(take_frames(&mut head, 5000).1, Err(format!("oversized frame {} bytes", 8 + (1 << 20))));
        let mut exact = data(0, 5000);
        assert_eq!(
            take_frames(&mut exact, 5000),
            (vec![FramedMessage::Data { sequence: 0, message: vec![7; 5000] }], Ok(()))
        );
        // A good frame, then garbage: the good one is still handed over.
        let mut mixed = data(4, 1);
        mixed.extend(b"GET / HTTP/1.1\r\n");
        let (got, verdict) = take_frames(&mut mixed, 5000);
        assert_eq!(got, vec![FramedMessage::Data { sequence: 4, message: vec![7] }]);
        assert_eq!(verdict, Err("unknown frame type 71".to_owned()));
    }
}
