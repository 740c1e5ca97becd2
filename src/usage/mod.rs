//! The SIP usage of RELOAD (RFC 7904): the only module that knows both
//! `sip` and `overlay`.
//!
//! - [`records`]: what a registration is in the overlay — a
//!   SIP-REGISTRATION dictionary entry under the AOR, keyed by the storing
//!   node's Node-ID, whose destination list ends at the serving node
//!   (§3.2); tombstones (exists=false) for removals (RFC 6940 §7.2.1); how
//!   a Fetch result resolves to serving nodes.
//! - [`SipUsage`]: the sans-IO glue between one node's [`SipEdge`] and its
//!   [`OverlayNode`]: the edge's Store/Fetch requests become overlay
//!   commands signed as the AOR, their outcomes come back to the edge, and
//!   a message for another node waits while an AppAttach (§4, application
//!   5060) finds where that node serves SIP.
//!
//! [`SipEdge`]: crate::sip::edge::SipEdge
//! [`OverlayNode`]: crate::overlay::OverlayNode

mod glue;
pub mod records;

pub use glue::{SipUsage, UsageCounters, UsageEvent};
pub use records::{
    TOMBSTONE_S, aor_resource, describe_registration, fetch_command, node_id, node_ref, registration_value,
    serving_nodes, sip_candidate, store_command, tombstone_value,
};
