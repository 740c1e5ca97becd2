//! Real signatures for simulated peers: an overlay CA enrolls every node
//! with an Ed25519 certificate (RFC 6940 §11.3) and the node signs and
//! verifies with [`CertCrypto`], exactly as the daemon does.
//!
//! Two things keep N = 1000 affordable and runs reproducible:
//! - keys come from the simulation's seeded RNG (Ed25519 signatures are
//!   deterministic, so the same seed gives byte-identical messages);
//! - a certificate chain is verified once per certificate for the whole
//!   simulation (the shared [`TrustAnchor`]'s cache).

use std::sync::Arc;

use super::fast_crypto::user_name;
pub use crate::overlay::cert_crypto::CertCrypto as RealCrypto;
use crate::overlay::cert_crypto::TrustAnchor;
use crate::security::{KeyPair, OverlayCa, SecurityError};
use crate::time::WallTime;
use crate::wire::NodeId;

/// Certificates are valid for ten years from the simulation's wall epoch.
const VALIDITY_S: u64 = 10 * 365 * 86_400;

/// PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410 §7); the 32-byte
/// seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// The simulated overlay's enrollment CA and the shared trust anchor.
pub struct SimPki {
    overlay: String,
    ca: OverlayCa,
    not_before: u64,
    anchor: Arc<TrustAnchor>,
}

impl SimPki {
    /// A CA for `overlay` whose key comes from `seed`, valid from a day before `wall`.
    pub fn new(overlay: &str, seed: [u8; 32], wall: WallTime) -> Result<Arc<Self>, SecurityError> {
        let not_before = wall.as_secs().saturating_sub(86_400);
        let ca = OverlayCa::create(overlay, ed25519_key(seed)?, not_before, not_before + VALIDITY_S)?;
        let anchor = TrustAnchor::new(overlay, ca.cert_der().to_vec());
        Ok(Arc::new(SimPki { overlay: overlay.to_owned(), ca, not_before, anchor }))
    }

    /// Enrolls `node_id` with a key from `seed` and the user name
    /// [`user_name`] gives it.
    pub fn enroll(self: &Arc<Self>, node_id: NodeId, seed: [u8; 32]) -> Result<RealCrypto, SecurityError> {
        let key = ed25519_key(seed)?;
        let user = user_name(&node_id, &self.overlay);
        let cert_der =
            self.ca.issue(&key.spki_der(), Some(&user), &[node_id], self.not_before, self.not_before + VALIDITY_S)?;
        RealCrypto::new(Arc::clone(&self.anchor), key, cert_der, node_id, WallTime::from_secs(self.not_before + 1))
            .map_err(|e| SecurityError::Issue(e.to_string()))
    }

    /// A user certificate binding `user` and `node_id` (RFC 7904: what a
    /// node signs SIP registrations for that user with): (PKCS#8 key, DER).
    pub fn issue_user(&self, user: &str, node_id: NodeId, seed: [u8; 32]) -> Result<(Vec<u8>, Vec<u8>), SecurityError> {
        let key = ed25519_key(seed)?;
        let cert =
            self.ca.issue(&key.spki_der(), Some(user), &[node_id], self.not_before, self.not_before + VALIDITY_S)?;
        Ok((key.to_pkcs8_der(), cert))
    }
}

/// A deterministic Ed25519 key from a 32-byte seed.
fn ed25519_key(seed: [u8; 32]) -> Result<KeyPair, SecurityError> {
    let mut der = ED25519_PKCS8_PREFIX.to_vec();
    der.extend_from_slice(&seed);
    KeyPair::from_pkcs8_der(&der)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::OverlayCrypto;
    use crate::wire::security_block::{SecurityBlock, Signature};
    use crate::wire::storage::DataValue;
    use crate::wire::storage::{StoredData, StoredDataValue};
    use crate::wire::{KindId, ResourceId};

    const WALL: WallTime = WallTime::from_secs(1_767_225_600);

    #[test]
    fn enrolled_nodes_verify_each_other() {
        let pki = SimPki::new("o.example", [1; 32], WALL).unwrap();
        let a = pki.enroll(NodeId::from_u128(1), [2; 32]).unwrap();
        let b = pki.enroll(NodeId::from_u128(2), [3; 32]).unwrap();
        let block = a.sign_message(9, 10, b"hello").unwrap();
        let s = b.verify_message(9, 10, b"hello", &block, WALL).unwrap();
        assert_eq!(s.node_ids, vec![NodeId::from_u128(1)]);
        assert_eq!(s.user, Some(user_name(&NodeId::from_u128(1), "o.example")));
        assert!(b.verify_message(9, 10, b"hellp", &block, WALL).is_err());
        let mut bad = block.clone();
        bad.signature.value[0] ^= 1;
        assert!(b.verify_message(9, 10, b"hello", &bad, WALL).is_err());
        // Same seed, same bytes.
        let a2 = pki.enroll(NodeId::from_u128(1), [2; 32]).unwrap();
        assert_eq!(a2.sign_message(9, 10, b"hello").unwrap(), block);
    }

    #[test]
    fn stored_values_verify_from_remembered_certificates() {
        let pki = SimPki::new("o.example", [1; 32], WALL).unwrap();
        let a = pki.enroll(NodeId::from_u128(1), [2; 32]).unwrap();
        let b = pki.enroll(NodeId::from_u128(2), [3; 32]).unwrap();
        let r = ResourceId::from_name(b"r");
        let mut data = StoredData {
            storage_time: 1,
            lifetime: 10,
            value: StoredDataValue::Single(DataValue::new(b"v".to_vec())),
            signature: Signature::none(),
        };
        a.sign_stored(&r, KindId::CHORDPHONE_TEST, &mut data).unwrap();
        let carried = a.sign_message(0, 0, b"").unwrap();
        let empty = SecurityBlock { certificates: vec![], signature: Signature::none() };
        // b has never seen a's certificate.
        assert!(b.verify_stored(&r, KindId::CHORDPHONE_TEST, &data, &empty, WALL).is_err());
        b.verify_stored(&r, KindId::CHORDPHONE_TEST, &data, &carried, WALL).unwrap();
        // Now remembered.
        b.verify_stored(&r, KindId::CHORDPHONE_TEST, &data, &empty, WALL).unwrap();
        data.storage_time = 2;
        assert!(b.verify_stored(&r, KindId::CHORDPHONE_TEST, &data, &empty, WALL).is_err());
    }

    #[test]
    fn certificates_of_another_ca_are_refused() {
        let pki = SimPki::new("o.example", [1; 32], WALL).unwrap();
        let other = SimPki::new("o.example", [7; 32], WALL).unwrap();
        let mallory = other.enroll(NodeId::from_u128(5), [8; 32]).unwrap();
        let b = pki.enroll(NodeId::from_u128(2), [3; 32]).unwrap();
        let block = mallory.sign_message(0, 1, b"x").unwrap();
        assert!(b.verify_message(0, 1, b"x", &block, WALL).is_err());
    }
}
