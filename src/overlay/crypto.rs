//! How the overlay machine signs and verifies, injected so the simulator
//! can trade real signatures for a cheap stand-in at very large N.

use crate::wire::security_block::SecurityBlock;
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
}
