//! The access control policies of RFC 6940 §7.3: who may write a value of
//! a kind at a Resource-ID, given the identity its signature established.
//!
//! H is the overlay's hash ([`ResourceId::from_name`], CHORD-RELOAD §10.2).

use super::policy::{AccessPolicy, KindPolicy};
use crate::security::seam::Signer;
use crate::wire::kinds::turn_service_resource;
use crate::wire::storage::StoredDataValue;
use crate::wire::{NodeId, ResourceId};

/// Whether `signer` may write `value` of `policy.kind` at `resource` (§7.3).
pub fn authorized(policy: &KindPolicy, resource: &ResourceId, value: &StoredDataValue, signer: &Signer) -> bool {
    match policy.access {
        // §7.3.1: H(user name in the certificate) == Resource-ID.
        AccessPolicy::UserMatch => user_matches(resource, signer),
        // §7.3.2: H(a Node-ID in the certificate) == Resource-ID. The
        // verifier has already tied the signature to those Node-IDs.
        AccessPolicy::NodeMatch => signer.node_ids.iter().any(|n| ResourceId::from_name(&n.0) == *resource),
        // §7.3.3: dictionary only; H(user name) == Resource-ID and the
        // dictionary key is one of the certificate's Node-IDs (its 16 raw
        // bytes, as RFC 7904 §3.2 keys registrations).
        AccessPolicy::UserNodeMatch => match value {
            StoredDataValue::Dictionary(e) => {
                user_matches(resource, signer) && signer.node_ids.iter().any(|n| e.key == n.0)
            }
            _ => false,
        },
        // §7.3.4: H(Node-ID ‖ i) == Resource-ID for some 1 ≤ i ≤ max-node-multiple.
        AccessPolicy::NodeMultiple => {
            signer.node_ids.iter().any(|n| node_multiple_matches(n, resource, policy.max_node_multiple))
        }
    }
}

fn user_matches(resource: &ResourceId, signer: &Signer) -> bool {
    signer.user.as_ref().is_some_and(|u| ResourceId::from_name(u.as_bytes()) == *resource)
}

/// §7.3.4 does not say how `i` is encoded. TURN-SERVICE (§9), its only
/// standard user, names the resource H(Node-ID ‖ d) with `d` the one-byte
/// `TurnServer.iteration`, which is what this implementation writes
/// ([`turn_service_resource`]). Other implementations (java-reload) hash a
/// 4-byte big-endian `i`; both prove the same thing — the signer owns the
/// Node-ID and stays within the kind's maximum — so both are accepted.
fn node_multiple_matches(node: &NodeId, resource: &ResourceId, max: u32) -> bool {
    (1..=max).any(|i| {
        let one_byte = u8::try_from(i).is_ok_and(|d| turn_service_resource(*node, d) == *resource);
        one_byte || {
            let mut name = node.0.to_vec();
            name.extend_from_slice(&i.to_be_bytes());
            ResourceId::from_name(&name) == *resource
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::KindId;
    use crate::wire::storage::{ArrayEntry, DataModel, DataValue, DictionaryEntry};

    fn policy(access: AccessPolicy) -> KindPolicy {
        KindPolicy {
            kind: KindId(0xF000_0009),
            model: DataModel::Single,
            access,
            max_count: 8,
            max_size: 100,
            max_node_multiple: 3,
        }
    }

    fn alice() -> Signer {
        Signer { node_ids: vec![NodeId::from_u128(7), NodeId::from_u128(8)], user: Some("alice@example.org".into()) }
    }

    fn single() -> StoredDataValue {
        StoredDataValue::Single(DataValue::new(vec![1]))
    }

    fn dict(key: Vec<u8>) -> StoredDataValue {
        StoredDataValue::Dictionary(DictionaryEntry { key, value: DataValue::new(vec![1]) })
    }

    #[test]
    fn user_match() {
        let p = policy(AccessPolicy::UserMatch);
        let r = ResourceId::from_name(b"alice@example.org");
        assert!(authorized(&p, &r, &single(), &alice()));
        assert!(!authorized(&p, &ResourceId::from_name(b"bob@example.org"), &single(), &alice()));
        // A certificate without a user name matches no resource.
        let anonymous = Signer { user: None, ..alice() };
        assert!(!authorized(&p, &r, &single(), &anonymous));
        // The user name itself (unhashed) is not the Resource-ID.
        assert!(!authorized(&p, &ResourceId(b"alice@example.org".to_vec()), &single(), &alice()));
    }

    #[test]
    fn node_match() {
        let p = policy(AccessPolicy::NodeMatch);
        let r = ResourceId::from_name(&NodeId::from_u128(8).0);
        let array = StoredDataValue::Array(ArrayEntry { index: 0, value: DataValue::new(vec![]) });
        assert!(authorized(&p, &r, &array, &alice()));
        // CERTIFICATE_BY_NODE lives at H(Node-ID), not at the Node-ID itself (§8).
        assert!(!authorized(&p, &NodeId::from_u128(8).to_resource(), &array, &alice()));
        assert!(!authorized(&p, &ResourceId::from_name(&NodeId::from_u128(9).0), &array, &alice()));
    }

    #[test]
    fn user_node_match() {
        let p = policy(AccessPolicy::UserNodeMatch);
        let r = ResourceId::from_name(b"alice@example.org");
        assert!(authorized(&p, &r, &dict(NodeId::from_u128(7).0.to_vec()), &alice()));
        assert!(authorized(&p, &r, &dict(NodeId::from_u128(8).0.to_vec()), &alice()));
        // Another node's key, a hex key, or another user's resource.
        assert!(!authorized(&p, &r, &dict(NodeId::from_u128(9).0.to_vec()), &alice()));
        assert!(!authorized(&p, &r, &dict(NodeId::from_u128(7).to_hex().into_bytes()), &alice()));
        let bob = ResourceId::from_name(b"bob@example.org");
        assert!(!authorized(&p, &bob, &dict(NodeId::from_u128(7).0.to_vec()), &alice()));
        // Dictionary only.
        assert!(!authorized(&p, &r, &single(), &alice()));
    }

    #[test]
    fn node_multiple() {
        let p = policy(AccessPolicy::NodeMultiple);
        let n = NodeId::from_u128(7);
        for d in 1..=3 {
            assert!(authorized(&p, &turn_service_resource(n, d), &single(), &alice()), "d = {d}");
        }
        // 0 and max + 1 are out of range; another node's id never matches.
        assert!(!authorized(&p, &turn_service_resource(n, 0), &single(), &alice()));
        assert!(!authorized(&p, &turn_service_resource(n, 4), &single(), &alice()));
        assert!(!authorized(&p, &turn_service_resource(NodeId::from_u128(9), 1), &single(), &alice()));
        // The four-byte form of i is accepted as well.
        let mut name = n.0.to_vec();
        name.extend_from_slice(&2u32.to_be_bytes());
        assert!(authorized(&p, &ResourceId::from_name(&name), &single(), &alice()));
        // A kind without a maximum admits nothing.
        let none = KindPolicy { max_node_multiple: 0, ..p };
        assert!(!authorized(&none, &turn_service_resource(n, 1), &single(), &alice()));
    }
}
