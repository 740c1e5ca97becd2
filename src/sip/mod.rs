//! The SIP edge (sans-IO): message framing, RFC 3261 transactions, digest
//! authentication. The runtime (`crate::node`) owns the sockets.

pub mod digest;
pub mod framing;
pub mod message;
pub mod transaction;
