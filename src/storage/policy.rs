//! The overlay's kinds and their access policies (RFC 6940 §7.3, §11.1
//! kind-block): what the store enforces.

use crate::wire::KindId;
use crate::wire::storage::DataModel;

/// A kind's definition in the overlay configuration (§11.1 kind-block).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindPolicy {
    pub kind: KindId,
    pub model: DataModel,
    pub access: AccessPolicy,
    pub max_count: u32,
    pub max_size: u32,
    /// For NODE-MULTIPLE (§7.3.4).
    pub max_node_multiple: u32,
}

/// Access control policies (§7.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessPolicy {
    UserMatch,
    NodeMatch,
    UserNodeMatch,
    NodeMultiple,
}

impl KindPolicy {
    /// The kinds of RFC 6940 §8–§9 and RFC 7904, plus chordphone's test kind.
    pub fn standard() -> Vec<KindPolicy> {
        let k = |kind, model, access, max_count, max_size| KindPolicy {
            kind,
            model,
            access,
            max_count,
            max_size,
            max_node_multiple: 20,
        };
        vec![
            k(KindId::SIP_REGISTRATION, DataModel::Dictionary, AccessPolicy::UserNodeMatch, 64, 4096),
            k(KindId::TURN_SERVICE, DataModel::Single, AccessPolicy::NodeMultiple, 1, 64),
            k(KindId::CERTIFICATE_BY_NODE, DataModel::Array, AccessPolicy::NodeMatch, 8, 8192),
            k(KindId::CERTIFICATE_BY_USER, DataModel::Array, AccessPolicy::UserMatch, 8, 8192),
            k(KindId::CHORDPHONE_TEST, DataModel::Single, AccessPolicy::UserMatch, 1, 4096),
        ]
    }
}
