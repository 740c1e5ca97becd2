//! The SIP edge (sans-IO): message framing, RFC 3261 transactions, digest
//! authentication, the registrar and the proxy. It knows neither RELOAD nor
//! the runtime: the RFC 7904 usage (`crate::usage`) connects it to the
//! overlay and the runtime owns the sockets.

pub mod account;

pub mod digest;
pub mod edge;
pub mod framing;
pub mod location_cache;
pub mod message;
pub mod proxy;
pub mod registrar;
pub mod transaction;
pub mod ua;

pub use account::{NodeRef, SipUser};

#[cfg(test)]
mod edge_tests;
#[cfg(test)]
pub(crate) mod test_phones;
