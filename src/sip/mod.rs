//! The SIP edge (sans-IO): message framing, RFC 3261 transactions, digest
//! authentication. The runtime (`crate::node`) owns the sockets.

pub mod digest;
pub mod edge;
pub mod framing;
pub mod location_cache;
pub mod message;
pub mod proxy;
pub mod registrar;
pub mod transaction;
pub mod ua;

#[cfg(test)]
mod edge_tests;
