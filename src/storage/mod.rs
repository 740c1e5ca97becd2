//! Data storage (RFC 6940 §7), sans-IO: verified tokens, the access
//! control policies, and the store that holds values for others.
//!
//! A received StoreReq goes through [`verify_store`] (signatures, access
//! policies, sizes: everything that needs no stored state) and only the
//! [`VerifiedStore`] it yields can reach [`DataStore::apply`] (generation
//! counters, storage times, counts: the stateful checks). Wall time in
//! milliseconds since the epoch is always a parameter; no clock is read.

mod access;
mod certs;
mod policy;
mod query;
mod store;
mod verify;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

pub use access::authorized;
pub use policy::{AccessPolicy, KindPolicy};
pub use query::MAX_SYNTHESIZED;
pub use store::{DataStore, RecordView};
pub use verify::{VerifiedStore, verify_store};

use crate::wire::NodeId;
use crate::wire::storage::StoreAns;

/// §7.4.1.2: names the peers a successful store was (or will be)
/// replicated to, in every kind's response.
pub fn set_replicas(ans: &mut StoreAns, replicas: &[NodeId]) {
    for r in &mut ans.kind_responses {
        r.replicas = replicas.to_vec();
    }
}
