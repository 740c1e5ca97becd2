//! The node runtime: the only module with tokio, sockets, files, signals
//! and the clock. It drives one sans-IO [`crate::peer::Peer`] (overlay,
//! usage, SIP edge; later ICE links, TURN relays and media legs).

pub mod accounts;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod db;
pub mod enroll;
pub mod link;
mod lookups;
pub mod metrics;
mod ops;
pub mod runtime;
pub mod sip_io;
