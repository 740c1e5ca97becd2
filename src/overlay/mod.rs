//! The RELOAD overlay: the CHORD-RELOAD topology plug-in (RFC 6940 §10) and
//! the sans-IO node machine that routes, joins, updates and leaves with it,
//! and the signed configuration document every node of an overlay agrees on
//! (§11.1, [`document`]).

pub mod api;
pub mod cert_crypto;
pub mod chord;
pub mod document;
pub use crate::security::seam as crypto;
mod handlers;
mod maintain;
pub mod node;

pub use api::{ApiError, Command, Event, Failure, Outcome, OverlayConfig, RequestId, TimerReason, Transmit};
pub use cert_crypto::{CertCrypto, TrustAnchor};
pub use crypto::{CryptoError, OverlayCrypto, Signer};
pub use node::OverlayNode;
