//! The peers' signatures: fast ones (`crate::sim::FastCrypto`, which signs
//! as any user), with a switch that makes signing as a user fail.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::overlay::{OverlayCrypto, Signer};
use crate::security::seam::CryptoError;
use crate::sim::FastCrypto;
use crate::time::WallTime;
use crate::wire::security_block::{GenericCertificate, SecurityBlock};
use crate::wire::storage::StoredData;
use crate::wire::{KindId, ResourceId};

/// Fast signatures (any user), except that signing as a user fails while
/// `refuse_users` is set: a node holding no certificate for the AOR.
pub(super) struct TestCrypto {
    pub inner: FastCrypto,
    pub refuse_users: Arc<AtomicBool>,
}

impl OverlayCrypto for TestCrypto {
    fn sign_message(&self, overlay: u32, tid: u64, contents: &[u8]) -> Result<SecurityBlock, CryptoError> {
        self.inner.sign_message(overlay, tid, contents)
    }

    fn verify_message(
        &self,
        overlay: u32,
        tid: u64,
        contents: &[u8],
        security: &SecurityBlock,
        wall: WallTime,
    ) -> Result<Signer, CryptoError> {
        self.inner.verify_message(overlay, tid, contents, security, wall)
    }

    fn sign_stored(&self, resource: &ResourceId, kind: KindId, data: &mut StoredData) -> Result<(), CryptoError> {
        self.inner.sign_stored(resource, kind, data)
    }

    fn verify_stored(
        &self,
        resource: &ResourceId,
        kind: KindId,
        data: &StoredData,
        security: &SecurityBlock,
        wall: WallTime,
    ) -> Result<Signer, CryptoError> {
        self.inner.verify_stored(resource, kind, data, security, wall)
    }

    fn sign_stored_as(
        &self,
        user: &str,
        resource: &ResourceId,
        kind: KindId,
        data: &mut StoredData,
    ) -> Result<GenericCertificate, CryptoError> {
        if self.refuse_users.load(Ordering::Relaxed) {
            return Err(CryptoError::UnknownUser(user.to_owned()));
        }
        self.inner.sign_stored_as(user, resource, kind, data)
    }

    fn sign_message_as(
        &self,
        user: &str,
        overlay: u32,
        tid: u64,
        contents: &[u8],
    ) -> Result<SecurityBlock, CryptoError> {
        self.inner.sign_message_as(user, overlay, tid, contents)
    }
}
