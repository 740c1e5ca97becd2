//! The public face of the overlay node machine: its configuration, the
//! commands it takes, the events and transmits it produces.
//!
//! The machine never touches a socket. Links are named by the peer's
//! Node-ID: the runtime (or the simulator) opens a link when asked with
//! [`Event::Connect`], reports it with `handle_link_up`, and reports its loss
//! with `handle_link_down`. Every byte the machine wants sent comes out of
//! `poll_transmit` addressed to a linked peer.

use std::time::Duration;

use crate::security::seam::CryptoError;
pub use crate::storage::{AccessPolicy, KindPolicy};
use crate::wire::attach::IceCandidate;
use crate::wire::error::ErrorCode;
use crate::wire::storage::StoredDataValue;
use crate::wire::{KindId, NodeId, ResourceId};

/// Identifies a command; it comes back in [`Event::Completed`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct RequestId(pub u64);

/// Overlay parameters (RFC 6940 §11.1 configuration plus local tuning).
#[derive(Clone, Debug)]
pub struct OverlayConfig {
    /// Overlay name; its hash goes in every forwarding header (§6.3.2).
    pub overlay_name: String,
    pub configuration_sequence: u16,
    /// Successors and predecessors kept (§10.7: at least 3; O(log N) recommended).
    pub neighbors: usize,
    /// Finger entries (§10.7.4.3: at least 16, up to 128).
    pub fingers: usize,
    /// Copies beyond the responsible peer's own (§10.4: two).
    pub replicas: usize,
    /// `chord-update-interval` (§10.7.2).
    pub update_interval: Duration,
    /// How often an invalid finger is refreshed (`chord-ping-interval`, bounded).
    pub finger_interval: Duration,
    /// `overlay-reliability-timer` (§6.2.1, default 3 s, minimum 200 ms).
    pub reliability_timer: Duration,
    /// End-to-end retransmissions before a transaction fails (§6.2.1: 4).
    pub max_retransmits: u32,
    /// `initial-ttl` (§6.3.2).
    pub initial_ttl: u8,
    /// `max-message-size` (§11.1).
    pub max_message_size: usize,
    /// §10.7.1: wait before re-replicating after losing a successor.
    pub replication_holddown: Duration,
    /// Join as a non-routing client (§4.2).
    pub client: bool,
    /// Kinds this overlay accepts (§7.4.1.1: unknown kinds are refused).
    pub kinds: Vec<KindPolicy>,
    /// Where peers reach us: sent in Attach (§6.5.1); the runtime fills it in.
    pub candidates: Vec<IceCandidate>,
    /// Applications this node serves over AppAttach (§6.5.2), e.g. SIP
    /// (5060), and where each listens.
    pub app_candidates: Vec<(u16, Vec<IceCandidate>)>,
}

impl Default for OverlayConfig {
    fn default() -> Self {
        OverlayConfig {
            overlay_name: "chordphone.example".into(),
            configuration_sequence: 1,
            neighbors: 5,
            fingers: 32,
            replicas: 2,
            update_interval: Duration::from_secs(60),
            finger_interval: Duration::from_secs(60),
            reliability_timer: Duration::from_secs(3),
            max_retransmits: 4,
            initial_ttl: 100,
            max_message_size: 5000,
            replication_holddown: Duration::from_secs(30),
            client: false,
            kinds: KindPolicy::standard(),
            candidates: Vec::new(),
            app_candidates: Vec::new(),
        }
    }
}

/// What the owner of a node asks of it.
#[derive(Clone, Debug)]
pub enum Command {
    /// Be the first peer of a new ring (§6.4.2.1's "first node" flag).
    CreateRing,
    /// Join through `via`, a peer we already hold a link to (§10.5, §11.4).
    Join { via: NodeId },
    /// Leave gracefully: hand data over and tell the neighbors (§10.9).
    Leave,
    /// Store one value under the hash of `resource_name` (§7.4.1).
    Store { resource_name: Vec<u8>, kind: KindId, value: StoredDataValue, lifetime_s: u32 },
    /// Store signed as `user`, one of the user identities this node holds
    /// (RFC 7904: a SIP-REGISTRATION under an AOR is signed by the AOR).
    StoreAs { user: String, resource_name: Vec<u8>, kind: KindId, value: StoredDataValue, lifetime_s: u32 },
    /// Fetch every value of `kind` under `resource` (§7.4.2).
    Fetch { resource: ResourceId, kind: KindId },
    /// Ask `node` where it serves `application` (AppAttach, §6.5.2).
    AppAttach { node: NodeId, application: u16 },
    /// Route a Ping to whoever is responsible for `resource` (§6.4.2.5).
    Lookup { resource: ResourceId },
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The responder answered with a RELOAD error (§6.3.3.1).
    Error(ErrorCode, String),
    /// No answer after every retransmission (§6.2.1).
    Timeout,
    /// The node is not (yet) part of the overlay.
    NotJoined,
}

/// How a command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Stored {
        generation: u64,
        replicas: Vec<NodeId>,
    },
    /// Values (with `exists`) as the responsible peer returned them, after
    /// their signatures were verified.
    Fetched {
        values: Vec<StoredDataValue>,
    },
    /// Leave messages and hand-over Stores were sent (§10.9).
    Left,
    /// `peer` serves `application` at `candidates`.
    AppAttached {
        peer: NodeId,
        application: u16,
        candidates: Vec<IceCandidate>,
    },
    LookedUp {
        responsible: NodeId,
        hops: u32,
        /// The peers the request passed through, first hop first; the
        /// responsible peer is the last hop (empty when we are responsible).
        route: Vec<NodeId>,
    },
    Failed(Failure),
}

/// Something the owner should know or do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Open a link to `peer` at one of `candidates` (we are the active side).
    Connect {
        peer: NodeId,
        candidates: Vec<IceCandidate>,
    },
    /// The machine no longer needs its link to `peer`.
    Disconnect {
        peer: NodeId,
    },
    /// The node took its place in the ring.
    Joined,
    /// The node lost every successor and is re-joining (§10.7.1).
    Rejoining,
    Completed {
        id: RequestId,
        outcome: Outcome,
    },
}

/// Bytes for a linked peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub to: NodeId,
    pub bytes: Vec<u8>,
}

/// Why the machine wants to be woken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerReason {
    Retransmit,
    Stabilize,
    FingerRefresh,
    Expiry,
    Replication,
}

/// Misuse of the local API (never caused by network input).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("the node has not joined the overlay")]
    NotJoined,
    #[error("the node already joined or is joining")]
    AlreadyJoined,
    #[error("no link to {0}")]
    NoLink(NodeId),
    #[error("this node holds no certificate for user '{0}'")]
    UnknownUser(String),
    #[error("unknown kind {0:?}")]
    UnknownKind(KindId),
    #[error("cannot encode the request: {0}")]
    Encode(String),
    /// The message or value could not be signed, so nothing was sent.
    #[error("cannot sign: {0}")]
    Signing(CryptoError),
}

impl ApiError {
    /// A signing failure, with an unknown user kept apart (the caller's
    /// mistake, not the signer's).
    pub fn from_crypto(e: CryptoError) -> Self {
        match e {
            CryptoError::UnknownUser(u) => ApiError::UnknownUser(u),
            other => ApiError::Signing(other),
        }
    }
}
