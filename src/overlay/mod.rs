//! The RELOAD overlay: the CHORD-RELOAD topology plug-in (RFC 6940 §10) and
//! the sans-IO node machine that routes, joins, updates and leaves with it.

pub mod api;
pub mod cert_crypto;
pub mod chord;
pub use crate::security::seam as crypto;
mod handlers;
mod maintain;
pub mod node;

pub use api::{ApiError, Command, Event, Failure, Outcome, OverlayConfig, RequestId, TimerReason, Transmit};
pub use cert_crypto::{CertCrypto, TrustAnchor};
pub use crypto::{CryptoError, OverlayCrypto, Signer};
pub use node::OverlayNode;
