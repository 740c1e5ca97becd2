//! The node runtime: the only module with tokio, sockets, files, signals
//! and the clock. It drives the sans-IO overlay machine (`crate::overlay`)
//! and, later, the SIP edge, ICE links, TURN relays and media legs.

pub mod cli;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod db;
pub mod enroll;
pub mod forward_cli;
pub mod link;
pub mod metrics;
pub mod overlay_doc;
pub mod runtime;
pub mod sip_io;
