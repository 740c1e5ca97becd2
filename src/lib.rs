//! chordphone: a standards-based peer-to-peer SIP stack.
//!
//! See `docs/architecture.md` for the module map and the sans-IO contract.

// Nothing read from the network or typed by a user may panic the process.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod cli;
pub mod link;
pub mod nat;
pub mod node;
pub mod overlay;
pub mod peer;
pub mod security;
pub mod sim;
pub mod sip;
pub mod storage;
pub mod usage;
pub mod wire;
