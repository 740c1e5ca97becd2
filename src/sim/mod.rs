//! `chordphone sim`: N peers of the real overlay node machine in one
//! process, in virtual time, deterministically (style.md: the sans-IO
//! cores are what make this possible).
//!
//! - [`net`]: the event queue ordered by (time, sequence) and the
//!   network's latency, jitter and loss.
//! - [`Simulation`] (world.rs, links.rs): the nodes, their links, crashes,
//!   partitions, and the API scenario tests drive.
//! - [`SimOptions`] (options.rs): `--nodes/--duration/...`, clap-derived.
//! - [`scenario`]: ring building, churn, mass failure, quiescence and the
//!   final checks; [`run`] is what the CLI calls. The workload's requests
//!   and their accounting are in workload.rs.
//! - [`reference`]: the ring and replica placement as they should be.
//! - [`report`]: counters and the JSON report.
//! - [`FastCrypto`] and [`SimPki`]/[`RealCrypto`]: the signatures nodes use.
//!
//! Determinism: one seeded ChaCha stream for scenario choices and one for
//! the network; BTreeMaps only; virtual `Instant`s are a base captured
//! once plus offsets. The same options give a byte-identical report
//! (`wall_s` and `peak_rss_mb` are left for the CLI to fill in).

mod fast_crypto;
mod links;
pub mod net;
mod options;
mod phones;
mod real_crypto;
pub mod reference;
pub mod report;
pub mod scenario;
mod workload;
mod world;

pub use fast_crypto::{FAST_ALGORITHM, FastCrypto, user_name};
pub use options::{CryptoMode, SimOptions};
pub use phones::PhoneMetrics;
pub use real_crypto::{RealCrypto, SimPki};
pub use reference::RingCheck;
pub use report::{Metrics, SimReport};
pub use scenario::{run, try_run};
pub use world::{SIM_EPOCH, Simulation};

use crate::overlay::ApiError;
use crate::wire::NodeId;

/// Why a simulation, or a request to it, could not go ahead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    #[error("invalid option: {0}")]
    InvalidOption(String),
    #[error("crypto not available: {0}")]
    Crypto(String),
    #[error("no live node {0}")]
    UnknownNode(NodeId),
    #[error(transparent)]
    Api(ApiError),
}
