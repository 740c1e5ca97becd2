//! Sans-IO overlay link machines (RFC 6940 §6.6): DTLS-UDP-SR-NO-ICE
//! ([`DtlsLink`]) and TLS-TCP-FH-NO-ICE ([`TlsLink`]).
//!
//! Each machine runs OpenSSL over an in-memory transport: the owner feeds
//! it what arrived (`handle_datagram` / `handle_bytes`) with the current
//! `now`, drains what it must send (`poll_transmit`) and what happened
//! (`poll_event`), and calls `handle_timeout` at `poll_timeout`. A machine
//! knows no socket and no address, so the owner can key it by any id and
//! move it to whatever address pair ICE selects.
//!
//! Both kinds authenticate both ends with overlay certificates (§6.6.1,
//! §11): OpenSSL runs the handshake, and the chain check is ours
//! ([`crate::security::verify_chain`]), run from OpenSSL's verify callback
//! (so a refused peer gets an alert) and again after the handshake to
//! extract the Node-IDs the link is bound to. Every RELOAD message travels
//! in a framed DATA message (§6.6.2, [`crate::wire::framing`]); each DATA
//! frame is answered by an ACK on both kinds. DTLS adds Simple Reliability
//! (§6.6.3.2, [`sr`]) on top.
//!
//! What is not sans-IO: OpenSSL reads its own clock for the DTLS handshake
//! retransmission timer; `now` only decides when the machine asks it.

pub mod dtls;
mod frames;
pub mod sr;
pub mod tls;
mod verify;

use std::io;
use std::time::Duration;

use crate::security::SecurityError;
use crate::wire::NodeId;

pub use dtls::{DtlsContexts, DtlsLink, client_hello_random, is_client_hello};
pub use frames::take_frames;
pub use sr::{SrSender, Unresponsive};
pub use tls::TlsLink;
pub use verify::{VerifySlot, WallClock, base_context, handshake_error, new_ssl, peer_identity, private_key};

/// How long a (D)TLS handshake and the certificate check may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Received messages a machine holds for its owner. When the owner does
/// not drain them, DTLS stops ACKing (the peer's Simple Reliability backs
/// off) and the TLS owner should stop reading (TCP pushes back).
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

impl PeerIdentity {
    /// A short label for logs: the first Node-ID.
    pub fn label(&self) -> String {
        self.node_ids.first().map(|n| n.to_hex()).unwrap_or_default()
    }
}

/// Which end of the handshake a machine plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

/// What a link machine reports to its owner.
#[derive(Debug)]
pub enum Event {
    /// The handshake finished and the peer's certificate passed.
    Connected(PeerIdentity),
    /// One whole RELOAD message (or a §6.7 fragment of one) as received.
    Message(Vec<u8>),
    /// The handshake failed; the machine is finished.
    Failed(LinkError),
    /// An established link ended (locally or by the peer); the last event.
    Closed(String),
}

/// Why a link could not be set up, or a message not sent.
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
    Busy(std::net::SocketAddr),
    #[error("too many sessions or handshakes in progress")]
    TooManySessions,
    /// The socket's owner has stopped (its listener was dropped).
    #[error("link socket is closed")]
    SocketClosed,
    /// No such link (it closed, or the id was never issued).
    #[error("no such link")]
    NoSuchLink,
    /// `send`: the link's send queue is full; the message was not taken.
    #[error("link send queue full")]
    QueueFull,
    /// `send`: longer than the overlay's max-message-size, or not a RELOAD
    /// message where one datagram cannot carry it.
    #[error("message of {0} bytes cannot be sent on this link")]
    TooLarge(usize),
    /// `send` on a link that is closing or closed.
    #[error("link is closed")]
    Closed,
}

impl From<openssl::error::ErrorStack> for LinkError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        LinkError::Setup(e.to_string())
    }
}

#[cfg(test)]
pub(crate) mod testing;
