//! The crypto seam: how the overlay machine and its store sign and verify,
//! injected so the simulator
//! can trade real signatures for a cheap stand-in at very large N.

use crate::wire::security_block::{GenericCertificate, SecurityBlock};
use crate::wire::storage::StoredData;
use crate::wire::{KindId, NodeId, ResourceId};

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
    /// (with the certificates a verifier needs).
    fn sign_message(&self, overlay: u32, transaction_id: u64, contents: &[u8]) -> SecurityBlock;
    /// Verifies a received message's signature; `wall_s` checks validity periods.
    fn verify_message(
        &self,
        overlay: u32,
        transaction_id: u64,
        contents: &[u8],
        security: &SecurityBlock,
        wall_s: u64,
    ) -> Result<Signer, String>;
    /// Signs a value to be stored (§7.1); `data.signature` is replaced.
    fn sign_stored(&self, resource: &ResourceId, kind: KindId, data: &mut StoredData);
    /// Verifies a stored value's signature against the certificates carried
    /// in `security` (the message that brought it) or remembered earlier.
    fn verify_stored(
        &self,
        resource: &ResourceId,
        kind: KindId,
        data: &StoredData,
        security: &SecurityBlock,
        wall_s: u64,
    ) -> Result<Signer, String>;

    /// Signs a value as one of the users this node holds a certificate
    /// for (RFC 7904: a SIP-REGISTRATION is signed with the AOR's own
    /// certificate, which also binds this node's Node-ID). Returns the
    /// certificate the verifier needs, or `None` for an unknown user.
    fn sign_stored_as(
        &self,
        _user: &str,
        _resource: &ResourceId,
        _kind: KindId,
        _data: &mut StoredData,
    ) -> Option<GenericCertificate> {
        None
    }

    /// Signs message contents as one of our users (its certificate binds
    /// our Node-ID, so it is a valid message signer for this node).
    fn sign_message_as(
        &self,
        _user: &str,
        _overlay: u32,
        _transaction_id: u64,
        _contents: &[u8],
    ) -> Option<SecurityBlock> {
        None
    }

    /// Adds a user identity (PKCS#8 key and certificate) to sign with;
    /// returns the certificate's user name.
    fn add_user(&self, _key_pkcs8: &[u8], _cert_der: &[u8], _wall_s: u64) -> Result<String, String> {
        Err("this signer holds no user identities".to_owned())
    }
}
