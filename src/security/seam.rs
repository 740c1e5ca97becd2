//! The crypto seam: how the overlay machine and its store sign and verify,
//! injected so the simulator
//! can trade real signatures for a cheap stand-in at very large N.

use thiserror::Error;

use super::SecurityError;
use crate::time::WallTime;
use crate::wire::security_block::{GenericCertificate, SecurityBlock};
use crate::wire::storage::StoredData;
use crate::wire::{KindId, NodeId, ResourceId};

/// Why the seam refused to sign or to believe a signature. A signing
/// failure means nothing is sent (never an unsigned message, §6.3.4); a
/// verification failure means the message or value is dropped.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CryptoError {
    /// The signature does not verify over the data (or names an algorithm
    /// the signer's key cannot produce).
    #[error("bad signature")]
    BadSignature,
    /// No certificate we know or were shown belongs to the signer.
    #[error("no certificate for the signer")]
    UnknownSigner,
    /// The certificate does not chain to the overlay root, or is malformed,
    /// or binds another node or key than it must.
    #[error("certificate invalid: {0}")]
    CertificateInvalid(SecurityError),
    /// The certificate is outside its validity period at the wall time given.
    #[error("certificate not valid now: {0}")]
    CertificateExpired(SecurityError),
    /// A {hash, signature} pair or key type this implementation does not handle.
    #[error("unsupported algorithm: {0}")]
    UnsupportedAlgorithm(SecurityError),
    /// Signing itself failed (the key could not be used, the input could
    /// not be encoded).
    #[error("signing failed: {0}")]
    SigningFailed(SecurityError),
    /// This node holds no certificate for the user asked to sign as.
    #[error("no certificate for user '{0}'")]
    UnknownUser(String),
    /// The certificate binds another node, another key, or no user.
    #[error("certificate not usable here: {0}")]
    WrongIdentity(String),
    /// The implementation signs only as the node (no user identities).
    #[error("this signer holds no user identities")]
    NoUserIdentities,
}

impl CryptoError {
    /// Sorts a verification failure of the security module.
    pub fn from_verify(e: SecurityError) -> Self {
        match e {
            SecurityError::BadSignature | SecurityError::AlgorithmMismatch => CryptoError::BadSignature,
            SecurityError::UnsupportedAlgorithm { .. } | SecurityError::UnsupportedKey => {
                CryptoError::UnsupportedAlgorithm(e)
            }
            SecurityError::Expired { .. } | SecurityError::NotYetValid { .. } | SecurityError::RootNotValid { .. } => {
                CryptoError::CertificateExpired(e)
            }
            other => CryptoError::CertificateInvalid(other),
        }
    }
}

/// Who signed something, as established by verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signer {
    /// The Node-IDs the signer's certificate binds.
    pub node_ids: Vec<NodeId>,
    /// The certificate's user name (rfc822Name), if any.
    pub user: Option<String>,
}

/// Signatures for one node (§6.3.4, §7.1).
pub trait OverlayCrypto {
    /// Signs message contents (§6.3.4) and returns the whole security block
    /// (with the certificates a verifier needs). On error nothing is sent.
    fn sign_message(&self, overlay: u32, transaction_id: u64, contents: &[u8]) -> Result<SecurityBlock, CryptoError>;
    /// Verifies a received message's signature; `wall` checks validity periods.
    fn verify_message(
        &self,
        overlay: u32,
        transaction_id: u64,
        contents: &[u8],
        security: &SecurityBlock,
        wall: WallTime,
    ) -> Result<Signer, CryptoError>;
    /// Signs a value to be stored (§7.1); `data.signature` is replaced. On
    /// error `data` must not be stored.
    fn sign_stored(&self, resource: &ResourceId, kind: KindId, data: &mut StoredData) -> Result<(), CryptoError>;
    /// Verifies a stored value's signature against the certificates carried
    /// in `security` (the message that brought it) or remembered earlier.
    fn verify_stored(
        &self,
        resource: &ResourceId,
        kind: KindId,
        data: &StoredData,
        security: &SecurityBlock,
        wall: WallTime,
    ) -> Result<Signer, CryptoError>;

    /// Signs a value as one of the users this node holds a certificate
    /// for (RFC 7904: a SIP-REGISTRATION is signed with the AOR's own
    /// certificate, which also binds this node's Node-ID). Returns the
    /// certificate the verifier needs; [`CryptoError::UnknownUser`] for a
    /// user we hold no certificate for.
    fn sign_stored_as(
        &self,
        user: &str,
        _resource: &ResourceId,
        _kind: KindId,
        _data: &mut StoredData,
    ) -> Result<GenericCertificate, CryptoError> {
        Err(CryptoError::UnknownUser(user.to_owned()))
    }

    /// Signs message contents as one of our users (its certificate binds
    /// our Node-ID, so it is a valid message signer for this node).
    fn sign_message_as(
        &self,
        user: &str,
        _overlay: u32,
        _transaction_id: u64,
        _contents: &[u8],
    ) -> Result<SecurityBlock, CryptoError> {
        Err(CryptoError::UnknownUser(user.to_owned()))
    }

    /// Adds a user identity (PKCS#8 key and certificate) to sign with;
    /// returns the certificate's user name.
    fn add_user(&self, _key_pkcs8: &[u8], _cert_der: &[u8], _wall: WallTime) -> Result<String, CryptoError> {
        Err(CryptoError::NoUserIdentities)
    }
}
