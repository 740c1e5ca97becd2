//! Real signatures with certificates from the overlay's enrollment CA
//! (RFC 6940 §6.3.4, §7.1, §11.3): what the daemon signs and verifies with,
//! and what the simulator uses unless told to trade them for a stand-in.
//!
//! A certificate chain is verified once per certificate per
//! [`TrustAnchor`] (shared by everything that trusts the same root); each
//! node still only believes the certificates it has been shown in a
//! security block or remembers from earlier ones.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};

use super::{OverlayCrypto, Signer};
use crate::security::seam::CryptoError;
use crate::security::{
    KeyPair, SecurityError, VerifiedIdentity, find_signer, sign_message, sign_stored_data, signer_identity_for,
    verify_chain, verify_message, verify_stored_data,
};
use crate::time::WallTime;
use crate::wire::security_block::{GenericCertificate, SecurityBlock, Signature, SignerIdentity};
use crate::wire::storage::{StoredData, StoredDataValue};
use crate::wire::{KindId, NodeId, ResourceId, WireError};

/// Verified chains a [`TrustAnchor`] remembers before it starts over
/// (a bound on memory; forgetting only costs a re-verification).
const ANCHOR_CACHE: usize = 100_000;
/// Certificates one node remembers before it starts over.
const NODE_CACHE: usize = 20_000;

/// The overlay's root certificate and the chains verified against it.
pub struct TrustAnchor {
    overlay: String,
    ca_der: Vec<u8>,
    verified: Mutex<BTreeMap<[u8; 32], Arc<VerifiedIdentity>>>,
}

impl TrustAnchor {
    pub fn new(overlay: &str, ca_der: Vec<u8>) -> Arc<Self> {
        Arc::new(TrustAnchor { overlay: overlay.to_owned(), ca_der, verified: Mutex::new(BTreeMap::new()) })
    }

    pub fn overlay(&self) -> &str {
        &self.overlay
    }

    pub fn ca_der(&self) -> &[u8] {
        &self.ca_der
    }

    /// The chain check of `cert_der` (§11.3), done once per certificate.
    pub fn verify(&self, cert_der: &[u8], wall: WallTime) -> Result<Arc<VerifiedIdentity>, CryptoError> {
        let h = sha256(cert_der);
        if let Some(v) = lock(&self.verified).get(&h) {
            return Ok(Arc::clone(v));
        }
        let v = Arc::new(
            verify_chain(cert_der, &self.ca_der, wall.as_secs(), &self.overlay).map_err(CryptoError::from_verify)?,
        );
        let mut cache = lock(&self.verified);
        if cache.len() >= ANCHOR_CACHE {
            cache.clear();
        }
        cache.insert(h, Arc::clone(&v));
        Ok(v)
    }
}

/// One node's key, certificate and remembered certificates.
pub struct CertCrypto {
    anchor: Arc<TrustAnchor>,
    key: KeyPair,
    cert_der: Vec<u8>,
    identity: SignerIdentity,
    /// Certificates this node has seen verified, by SHA-256 of their DER.
    known: Mutex<BTreeMap<[u8; 32], Arc<VerifiedIdentity>>>,
    /// Users this node signs for (RFC 7904 USER-NODE-MATCH), by user name.
    users: Mutex<BTreeMap<String, UserIdentity>>,
    node_id: NodeId,
}

struct UserIdentity {
    key: KeyPair,
    cert_der: Vec<u8>,
    identity: SignerIdentity,
}

impl CertCrypto {
    /// A node signing with `key` as `node_id`; `cert_der` must chain to
    /// the anchor, be valid at `wall` and bind `node_id`.
    pub fn new(
        anchor: Arc<TrustAnchor>,
        key: KeyPair,
        cert_der: Vec<u8>,
        node_id: NodeId,
        wall: WallTime,
    ) -> Result<Self, CryptoError> {
        let own = anchor.verify(&cert_der, wall)?;
        if !own.node_ids.contains(&node_id) {
            return Err(CryptoError::WrongIdentity(format!("the certificate does not bind Node-ID {node_id}")));
        }
        if own.spki_der != key.spki_der() {
            return Err(CryptoError::WrongIdentity("the certificate is for another key".to_owned()));
        }
        let identity = signer_identity_for(&own, &node_id);
        let mut known = BTreeMap::new();
        known.insert(sha256(&cert_der), own);
        Ok(CertCrypto {
            anchor,
            key,
            cert_der,
            identity,
            known: Mutex::new(known),
            users: Mutex::new(BTreeMap::new()),
            node_id,
        })
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Learns the block's certificates, then finds and checks the one the
    /// signature names (§6.3.4).
    fn signer(
        &self,
        sig: &Signature,
        security: &SecurityBlock,
        wall: WallTime,
    ) -> Result<Arc<VerifiedIdentity>, CryptoError> {
        let mut known = lock(&self.known);
        if known.len() >= NODE_CACHE {
            known.retain(|_, v| v.cert_der == self.cert_der);
        }
        for c in security.certificates.iter().filter(|c| c.cert_type == GenericCertificate::X509) {
            // A certificate that does not chain to the root is ignored;
            // a signature naming it then finds no signer.
            if let std::collections::btree_map::Entry::Vacant(e) = known.entry(sha256(&c.cert))
                && let Ok(v) = self.anchor.verify(&c.cert, wall)
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
        let cert = found.ok_or(CryptoError::UnknownSigner)?;
        cert.check_valid_at(wall.as_secs()).map_err(CryptoError::CertificateExpired)?;
        Ok(cert)
    }
}

impl OverlayCrypto for CertCrypto {
    fn sign_stored_as(
        &self,
        user: &str,
        resource: &ResourceId,
        kind: KindId,
        data: &mut StoredData,
    ) -> Result<GenericCertificate, CryptoError> {
        let users = lock(&self.users);
        let u = users.get(user).ok_or_else(|| CryptoError::UnknownUser(user.to_owned()))?;
        let (bytes, is_array) = value_bytes(&data.value).map_err(signing_failed)?;
        data.signature = sign_stored_data(&u.key, &u.identity, resource, kind, data.storage_time, &bytes, is_array)
            .map_err(CryptoError::SigningFailed)?;
        Ok(GenericCertificate::x509(u.cert_der.clone()))
    }

    fn sign_message_as(
        &self,
        user: &str,
        overlay: u32,
        transaction_id: u64,
        contents: &[u8],
    ) -> Result<SecurityBlock, CryptoError> {
        let users = lock(&self.users);
        let u = users.get(user).ok_or_else(|| CryptoError::UnknownUser(user.to_owned()))?;
        let signature =
            sign_message(&u.key, &u.identity, overlay, transaction_id, contents).map_err(CryptoError::SigningFailed)?;
        Ok(SecurityBlock { certificates: vec![GenericCertificate::x509(u.cert_der.clone())], signature })
    }

    fn add_user(&self, key_pkcs8: &[u8], cert_der: &[u8], wall: WallTime) -> Result<String, CryptoError> {
        let key = KeyPair::from_pkcs8_der(key_pkcs8).map_err(CryptoError::CertificateInvalid)?;
        let cert = self.anchor.verify(cert_der, wall)?;
        if !cert.node_ids.contains(&self.node_id) {
            let why = format!("the user certificate does not bind this node ({})", self.node_id);
            return Err(CryptoError::WrongIdentity(why));
        }
        if cert.spki_der != key.spki_der() {
            return Err(CryptoError::WrongIdentity("the user certificate is for another key".to_owned()));
        }
        let user =
            cert.user.clone().ok_or_else(|| CryptoError::WrongIdentity("the certificate names no user".to_owned()))?;
        let identity = signer_identity_for(&cert, &self.node_id);
        lock(&self.known).insert(sha256(cert_der), Arc::clone(&cert));
        lock(&self.users).insert(user.clone(), UserIdentity { key, cert_der: cert_der.to_vec(), identity });
        Ok(user)
    }

    fn sign_message(&self, overlay: u32, transaction_id: u64, contents: &[u8]) -> Result<SecurityBlock, CryptoError> {
        let signature = sign_message(&self.key, &self.identity, overlay, transaction_id, contents)
            .map_err(CryptoError::SigningFailed)?;
        Ok(SecurityBlock { certificates: vec![GenericCertificate::x509(self.cert_der.clone())], signature })
    }

    fn verify_message(
        &self,
        overlay: u32,
        transaction_id: u64,
        contents: &[u8],
        security: &SecurityBlock,
        wall: WallTime,
    ) -> Result<Signer, CryptoError> {
        let cert = self.signer(&security.signature, security, wall)?;
        verify_message(&security.signature, &cert.spki_der, overlay, transaction_id, contents)
            .map_err(CryptoError::from_verify)?;
        Ok(Signer { node_ids: cert.node_ids.clone(), user: cert.user.clone() })
    }

    fn sign_stored(&self, resource: &ResourceId, kind: KindId, data: &mut StoredData) -> Result<(), CryptoError> {
        let (bytes, is_array) = value_bytes(&data.value).map_err(signing_failed)?;
        data.signature =
            sign_stored_data(&self.key, &self.identity, resource, kind, data.storage_time, &bytes, is_array)
                .map_err(CryptoError::SigningFailed)?;
        Ok(())
    }

    fn verify_stored(
        &self,
        resource: &ResourceId,
        kind: KindId,
        data: &StoredData,
        security: &SecurityBlock,
        wall: WallTime,
    ) -> Result<Signer, CryptoError> {
        let cert = self.signer(&data.signature, security, wall)?;
        // A value that cannot be encoded cannot carry a valid signature.
        let (bytes, is_array) = value_bytes(&data.value).map_err(|_| CryptoError::BadSignature)?;
        verify_stored_data(&data.signature, &cert.spki_der, resource, kind, data.storage_time, &bytes, is_array)
            .map_err(CryptoError::from_verify)?;
        Ok(Signer { node_ids: cert.node_ids.clone(), user: cert.user.clone() })
    }
}

fn value_bytes(value: &StoredDataValue) -> Result<(Vec<u8>, bool), WireError> {
    Ok((value.to_bytes()?, matches!(value, StoredDataValue::Array(_))))
}

fn signing_failed(e: WireError) -> CryptoError {
    CryptoError::SigningFailed(SecurityError::Wire(e))
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
