//! chordphone: a standards-based peer-to-peer SIP stack.
//!
//! See `docs/architecture.md` for the module map and the sans-IO contract.

// Nothing read from the network or typed by a user may panic the process.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]
// clippy.toml's disallowed lists (clock, OS RNG, sockets, files, threads,
// HashMap iteration) guard the sans-IO cores; tests may use them freely.
#![cfg_attr(test, allow(clippy::disallowed_methods, clippy::disallowed_types))]

// The operator commands and the runtime are the modules that do I/O.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod cli;
pub mod link;
pub mod nat;
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod node;
pub mod overlay;
pub mod peer;
pub mod security;
pub mod sim;
pub mod sip;
pub mod storage;
pub mod time;
pub mod usage;
pub mod wire;
