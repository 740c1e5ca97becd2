//! Real signatures for simulated peers: an overlay CA enrolls every node
//! with an Ed25519 certificate (RFC 6940 §11.3) and the node signs and
//! verifies through `crate::security`, exactly as the daemon does.
//!
//! Two things keep N = 1000 affordable and runs reproducible:
//! - keys come from the simulation's seeded RNG (Ed25519 signatures are
//!   deterministic, so the same seed gives byte-identical messages);
//! - a certificate chain is verified once per certificate for the whole
//!   simulation ([`SimPki`]'s cache). Each node still only believes the
//!   certificates it has been shown (in a security block) or remembers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};

use super::fast_crypto::user_name;
use crate::overlay::{OverlayCrypto, Signer};
use crate::security::{
    KeyPair, OverlayCa, SecurityError, VerifiedIdentity, find_signer, sign_message, sign_stored_data,
    signer_identity_for, verify_chain, verify_message, verify_stored_data,
};
use crate::wire::security_block::{GenericCertificate, SecurityBlock, Signature, SignerIdentity};
use crate::wire::storage::{StoredData, StoredDataValue};
use crate::wire::{KindId, NodeId, ResourceId};

/// Certificates are valid for ten years from the simulation's wall epoch.
const VALIDITY_S: u64 = 10 * 365 * 86_400;

/// PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410 §7); the 32-byte
/// seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// The simulated overlay's enrollment CA and the shared cache of verified
/// certificate chains.
pub struct SimPki {
    overlay: String,
    ca: OverlayCa,
    not_before: u64,
    verified: Mutex<BTreeMap<[u8; 32], Arc<VerifiedIdentity>>>,
}

impl SimPki {
    /// A CA for `overlay` whose key comes from `seed`, valid from `wall_s`.
    pub fn new(overlay: &str, seed: [u8; 32], wall_s: u64) -> Result<Arc<Self>, SecurityError> {
        let not_before = wall_s.saturating_sub(86_400);
        let ca = OverlayCa::create(overlay, ed25519_key(seed)?, not_before, not_before + VALIDITY_S)?;
        Ok(Arc::new(SimPki { overlay: overlay.to_owned(), ca, not_before, verified: Mutex::new(BTreeMap::new()) }))
    }

    /// Enrolls `node_id` with a key from `seed` and the user name
    /// [`user_name`] gives it.
    pub fn enroll(self: &Arc<Self>, node_id: NodeId, seed: [u8; 32]) -> Result<RealCrypto, SecurityError> {
        let key = ed25519_key(seed)?;
        let user = user_name(&node_id, &self.overlay);
        let cert_der =
            self.ca.issue(&key.spki_der(), Some(&user), &[node_id], self.not_before, self.not_before + VALIDITY_S)?;
        let own = self.verify(&cert_der, self.not_before + 1).map_err(SecurityError::Issue)?;
        let identity = signer_identity_for(&own, &node_id);
        let mut known = BTreeMap::new();
        known.insert(sha256(&cert_der), own);
        Ok(RealCrypto { pki: Arc::clone(self), key, cert_der, identity, known: Mutex::new(known) })
    }

    /// The chain check of `cert_der`, done once per certificate.
    fn verify(&self, cert_der: &[u8], wall_s: u64) -> Result<Arc<VerifiedIdentity>, String> {
        let h = sha256(cert_der);
        if let Some(v) = lock(&self.verified).get(&h) {
            return Ok(Arc::clone(v));
        }
        let v = Arc::new(verify_chain(cert_der, self.ca.cert_der(), wall_s, &self.overlay).map_err(|e| e.to_string())?);
        lock(&self.verified).insert(h, Arc::clone(&v));
        Ok(v)
    }
}

/// One node's key, certificate and remembered certificates.
pub struct RealCrypto {
    pki: Arc<SimPki>,
    key: KeyPair,
    cert_der: Vec<u8>,
    identity: SignerIdentity,
    /// Certificates this node has seen verified, by SHA-256 of their DER.
    known: Mutex<BTreeMap<[u8; 32], Arc<VerifiedIdentity>>>,
}

impl RealCrypto {
    /// Learns the block's certificates, then finds and checks the one the
    /// signature names (§6.3.4).
    fn signer(&self, sig: &Signature, security: &SecurityBlock, wall_s: u64) -> Result<Arc<VerifiedIdentity>, String> {
        let mut known = lock(&self.known);
        for c in security.certificates.iter().filter(|c| c.cert_type == GenericCertificate::X509) {
            // A certificate that does not chain to the root is ignored;
            // a signature naming it then finds no signer.
            if let std::collections::btree_map::Entry::Vacant(e) = known.entry(sha256(&c.cert))
                && let Ok(v) = self.pki.verify(&c.cert, wall_s)
            {
                e.insert(v);
            }
        }
        let found = match &sig.identity {
            // cert_hash with SHA-256 is the hash the map is keyed by.
            SignerIdentity::CertHash { hash_alg: 4, certificate_hash } => {
                <[u8; 32]>::try_from(certificate_hash.as_slice()).ok().and_then(|h| known.get(&h)).map(Arc::clone)
            }
            other => {
                let certs: Vec<VerifiedIdentity> = known.values().map(|v| VerifiedIdentity::clone(v)).collect();
                find_signer(other, &certs).map(|m| Arc::new(m.cert.clone()))
            }
        };
        let cert = found.ok_or_else(|| "no certificate for the signer".to_owned())?;
        if !cert.is_valid_at(wall_s) {
            return Err(format!("signer certificate not valid at {wall_s}"));
        }
        Ok(cert)
    }
}

impl OverlayCrypto for RealCrypto {
    fn sign_message(&self, overlay: u32, transaction_id: u64, contents: &[u8]) -> SecurityBlock {
        let signature = sign_message(&self.key, &self.identity, overlay, transaction_id, contents)
            .unwrap_or_else(|_| Signature::none());
        SecurityBlock { certificates: vec![GenericCertificate::x509(self.cert_der.clone())], signature }
    }

    fn verify_message(
        &self,
        overlay: u32,
        transaction_id: u64,
        contents: &[u8],
        security: &SecurityBlock,
        wall_s: u64,
    ) -> Result<Signer, String> {
        let cert = self.signer(&security.signature, security, wall_s)?;
        verify_message(&security.signature, &cert.spki_der, overlay, transaction_id, contents)
            .map_err(|e| e.to_string())?;
        Ok(Signer { node_ids: cert.node_ids.clone(), user: cert.user.clone() })
    }

    fn sign_stored(&self, resource: &ResourceId, kind: KindId, data: &mut StoredData) {
        let (bytes, is_array) = value_bytes(&data.value);
        data.signature =
            sign_stored_data(&self.key, &self.identity, resource, kind, data.storage_time, &bytes, is_array)
                .unwrap_or_else(|_| Signature::none());
    }

    fn verify_stored(
        &self,
        resource: &ResourceId,
        kind: KindId,
        data: &StoredData,
        security: &SecurityBlock,
        wall_s: u64,
    ) -> Result<Signer, String> {
        let cert = self.signer(&data.signature, security, wall_s)?;
        let (bytes, is_array) = value_bytes(&data.value);
        verify_stored_data(&data.signature, &cert.spki_der, resource, kind, data.storage_time, &bytes, is_array)
            .map_err(|e| e.to_string())?;
        Ok(Signer { node_ids: cert.node_ids.clone(), user: cert.user.clone() })
    }
}

/// A deterministic Ed25519 key from a 32-byte seed.
fn ed25519_key(seed: [u8; 32]) -> Result<KeyPair, SecurityError> {
    let mut der = ED25519_PKCS8_PREFIX.to_vec();
    der.extend_from_slice(&seed);
    KeyPair::from_pkcs8_der(&der)
}

fn value_bytes(value: &StoredDataValue) -> (Vec<u8>, bool) {
    (value.to_bytes().unwrap_or_default(), matches!(value, StoredDataValue::Array(_)))
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::storage::DataValue;

    const WALL: u64 = 1_767_225_600;

    #[test]
    fn enrolled_nodes_verify_each_other() {
        let pki = SimPki::new("o.example", [1; 32], WALL).unwrap();
        let a = pki.enroll(NodeId::from_u128(1), [2; 32]).unwrap();
        let b = pki.enroll(NodeId::from_u128(2), [3; 32]).unwrap();
        let block = a.sign_message(9, 10, b"hello");
        let s = b.verify_message(9, 10, b"hello", &block, WALL).unwrap();
        assert_eq!(s.node_ids, vec![NodeId::from_u128(1)]);
        assert_eq!(s.user, Some(user_name(&NodeId::from_u128(1), "o.example")));
        assert!(b.verify_message(9, 10, b"hellp", &block, WALL).is_err());
        let mut bad = block.clone();
        bad.signature.value[0] ^= 1;
        assert!(b.verify_message(9, 10, b"hello", &bad, WALL).is_err());
        // Same seed, same bytes.
        let a2 = pki.enroll(NodeId::from_u128(1), [2; 32]).unwrap();
        assert_eq!(a2.sign_message(9, 10, b"hello"), block);
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
        a.sign_stored(&r, KindId::CHORDPHONE_TEST, &mut data);
        let carried = a.sign_message(0, 0, b"");
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
        let block = mallory.sign_message(0, 1, b"x");
        assert!(b.verify_message(0, 1, b"x", &block, WALL).is_err());
    }
}
