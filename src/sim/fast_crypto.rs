//! A cheap, deterministic stand-in for real signatures, for simulations
//! of tens of thousands of peers where ECDSA/Ed25519 would dominate.
//!
//! It is NOT secure: anyone can compute a signature for any Node-ID. It
//! keeps the shape the node machine relies on, though: every message and
//! stored value carries a signature naming its signer, the verifier
//! learns the signer's Node-ID and user name from it, and a tampered
//! signature, input or signer is rejected.
//!
//! - SignerIdentity: `cert_hash_node_id` whose "hash" is the Node-ID itself.
//! - Signature: the first 16 bytes of SHA-256(Node-ID ‖ signature input).
//! - Algorithm: {sha256(4), 224}, from the TLS private-use range, so a real
//!   verifier never mistakes it for a real signature.
//! - User name: [`user_name`] of the Node-ID (what an enrollment server
//!   would have put in the certificate).

use sha2::{Digest, Sha256};

use crate::overlay::{OverlayCrypto, Signer};
use crate::security::SecurityError;
use crate::security::seam::CryptoError;
use crate::time::WallTime;
use crate::wire::security_block::{
    GenericCertificate, SecurityBlock, Signature, SignatureAndHashAlgorithm, SignerIdentity,
};
use crate::wire::storage::{StoredData, StoredDataValue};
use crate::wire::{Codec, KindId, NODE_ID_LEN, NodeId, ResourceId, WireError, Writer};

/// The algorithm code points a fast signature carries.
pub const FAST_ALGORITHM: SignatureAndHashAlgorithm = SignatureAndHashAlgorithm { hash: 4, signature: 224 };

/// Bytes of SHA-256 kept as the signature value.
const SIG_LEN: usize = 16;

/// The user name the simulator gives a node: `node-<hex id>@<overlay>`.
/// Real and fast crypto both use it, so USER-MATCH resource names are the
/// same under either.
pub fn user_name(node_id: &NodeId, overlay: &str) -> String {
    // Built by hand: this runs for every verified message.
    let mut hex = [0u8; 2 * NODE_ID_LEN];
    let mut s = String::with_capacity(6 + hex.len() + overlay.len());
    s.push_str("node-");
    if hex::encode_to_slice(node_id.0, &mut hex).is_ok() {
        s.push_str(std::str::from_utf8(&hex).unwrap_or_default());
    }
    s.push('@');
    s.push_str(overlay);
    s
}

/// Fast signatures for one node.
#[derive(Debug, Clone)]
pub struct FastCrypto {
    node_id: NodeId,
    overlay: String,
}

impl FastCrypto {
    pub fn new(node_id: NodeId, overlay_name: &str) -> Self {
        FastCrypto { node_id, overlay: overlay_name.to_owned() }
    }

    fn identity(&self) -> SignerIdentity {
        SignerIdentity::CertHashNodeId { hash_alg: 4, certificate_node_id_hash: self.node_id.0.to_vec() }
    }

    fn sign(&self, input: &[u8]) -> Signature {
        Signature { algorithm: FAST_ALGORITHM, identity: self.identity(), value: digest(&self.node_id, input) }
    }

    /// A signature as `user` on this node: the identity carries the
    /// Node-ID and the user name (a user certificate binding both, RFC 7904).
    fn sign_as(&self, user: &str, input: &[u8]) -> Signature {
        let mut who = self.node_id.0.to_vec();
        who.extend_from_slice(user.as_bytes());
        let value = digest(&self.node_id, &[user.as_bytes(), input].concat());
        Signature {
            algorithm: FAST_ALGORITHM,
            identity: SignerIdentity::CertHash { hash_alg: 4, certificate_hash: who },
            value,
        }
    }

    /// Checks `sig` over `input` and names the signer.
    fn check(&self, sig: &Signature, input: &[u8]) -> Result<Signer, CryptoError> {
        if sig.algorithm != FAST_ALGORITHM {
            let SignatureAndHashAlgorithm { hash, signature } = sig.algorithm;
            return Err(CryptoError::UnsupportedAlgorithm(SecurityError::UnsupportedAlgorithm { hash, signature }));
        }
        if let SignerIdentity::CertHash { certificate_hash: who, .. } = &sig.identity {
            let (id, user) = who.split_at_checked(NODE_ID_LEN).ok_or(CryptoError::UnknownSigner)?;
            let signer = NodeId(id.try_into().map_err(|_| CryptoError::UnknownSigner)?);
            if digest(&signer, &[user, input].concat()) != sig.value {
                return Err(CryptoError::BadSignature);
            }
            let user = String::from_utf8(user.to_vec()).map_err(|_| CryptoError::UnknownSigner)?;
            return Ok(Signer { node_ids: vec![signer], user: Some(user) });
        }
        let signer = match &sig.identity {
            SignerIdentity::CertHashNodeId { certificate_node_id_hash: h, .. } => {
                let id: [u8; NODE_ID_LEN] = h.as_slice().try_into().map_err(|_| CryptoError::UnknownSigner)?;
                NodeId(id)
            }
            _ => return Err(CryptoError::UnknownSigner),
        };
        if digest(&signer, input) != sig.value {
            return Err(CryptoError::BadSignature);
        }
        Ok(Signer { node_ids: vec![signer], user: Some(user_name(&signer, &self.overlay)) })
    }
}

impl OverlayCrypto for FastCrypto {
    fn sign_message(&self, overlay: u32, transaction_id: u64, contents: &[u8]) -> Result<SecurityBlock, CryptoError> {
        let input = message_input(overlay, transaction_id, contents);
        Ok(SecurityBlock { certificates: Vec::new(), signature: self.sign(&input) })
    }

    fn verify_message(
        &self,
        overlay: u32,
        transaction_id: u64,
        contents: &[u8],
        security: &SecurityBlock,
        _wall: WallTime,
    ) -> Result<Signer, CryptoError> {
        self.check(&security.signature, &message_input(overlay, transaction_id, contents))
    }

    fn sign_stored(&self, resource: &ResourceId, kind: KindId, data: &mut StoredData) -> Result<(), CryptoError> {
        let input = stored_input(resource, kind, data.storage_time, &data.value)
            .map_err(|e| CryptoError::SigningFailed(SecurityError::Wire(e)))?;
        data.signature = self.sign(&input);
        Ok(())
    }

    fn verify_stored(
        &self,
        resource: &ResourceId,
        kind: KindId,
        data: &StoredData,
        _security: &SecurityBlock,
        _wall: WallTime,
    ) -> Result<Signer, CryptoError> {
        // A value that cannot be encoded cannot carry a valid signature.
        let input =
            stored_input(resource, kind, data.storage_time, &data.value).map_err(|_| CryptoError::BadSignature)?;
        self.check(&data.signature, &input)
    }

    /// Any user: the stand-in holds no user certificates (it is not
    /// secure); the identity names the user so access control works.
    fn sign_stored_as(
        &self,
        user: &str,
        resource: &ResourceId,
        kind: KindId,
        data: &mut StoredData,
    ) -> Result<GenericCertificate, CryptoError> {
        let input = stored_input(resource, kind, data.storage_time, &data.value)
            .map_err(|e| CryptoError::SigningFailed(SecurityError::Wire(e)))?;
        data.signature = self.sign_as(user, &input);
        Ok(GenericCertificate::x509(Vec::new()))
    }

    fn sign_message_as(
        &self,
        user: &str,
        overlay: u32,
        transaction_id: u64,
        contents: &[u8],
    ) -> Result<SecurityBlock, CryptoError> {
        let input = message_input(overlay, transaction_id, contents);
        Ok(SecurityBlock { certificates: Vec::new(), signature: self.sign_as(user, &input) })
    }
}

fn digest(node_id: &NodeId, input: &[u8]) -> Vec<u8> {
    let d = Sha256::new().chain_update(node_id.0).chain_update(input).finalize();
    d.get(..SIG_LEN).map(<[u8]>::to_vec).unwrap_or_default()
}

/// §6.3.4's input without the identity (the identity is the Node-ID the
/// digest is keyed with, so it is covered anyway).
fn message_input(overlay: u32, transaction_id: u64, contents: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + contents.len());
    v.extend_from_slice(&overlay.to_be_bytes());
    v.extend_from_slice(&transaction_id.to_be_bytes());
    v.extend_from_slice(contents);
    v
}

/// §7.1's input: resource, kind, storage time and the value as on the wire.
fn stored_input(
    resource: &ResourceId,
    kind: KindId,
    storage_time: u64,
    value: &StoredDataValue,
) -> Result<Vec<u8>, WireError> {
    let mut w = Writer::new();
    resource.encode(&mut w);
    kind.encode(&mut w);
    w.u64(storage_time);
    value.encode(&mut w);
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::storage::DataValue;

    fn id(n: u128) -> NodeId {
        NodeId::from_u128(n)
    }

    #[test]
    fn user_name_format() {
        assert_eq!(user_name(&id(0xab), "o.example"), "node-000000000000000000000000000000ab@o.example");
    }

    #[test]
    fn message_signature_round_trip_and_tamper() {
        let a = FastCrypto::new(id(7), "o.example");
        let b = FastCrypto::new(id(9), "o.example");
        let block = a.sign_message(1, 2, b"contents").unwrap();
        let signer = b.verify_message(1, 2, b"contents", &block, WallTime::UNIX_EPOCH).unwrap();
        assert_eq!(signer.node_ids, vec![id(7)]);
        assert_eq!(signer.user.as_deref(), Some(user_name(&id(7), "o.example").as_str()));
        assert!(b.verify_message(1, 3, b"contents", &block, WallTime::UNIX_EPOCH).is_err());
        assert!(b.verify_message(1, 2, b"contentz", &block, WallTime::UNIX_EPOCH).is_err());
        let mut bad = block.clone();
        bad.signature.value[0] ^= 1;
        assert!(b.verify_message(1, 2, b"contents", &bad, WallTime::UNIX_EPOCH).is_err());
        // Claiming another signer without recomputing the digest fails.
        let mut forged = block.clone();
        forged.signature.identity =
            SignerIdentity::CertHashNodeId { hash_alg: 4, certificate_node_id_hash: id(9).0.to_vec() };
        assert!(b.verify_message(1, 2, b"contents", &forged, WallTime::UNIX_EPOCH).is_err());
        let mut wrong_alg = block;
        wrong_alg.signature.algorithm = SignatureAndHashAlgorithm::ED25519;
        assert!(b.verify_message(1, 2, b"contents", &wrong_alg, WallTime::UNIX_EPOCH).is_err());
    }

    #[test]
    fn stored_signature_round_trip_and_tamper() {
        let a = FastCrypto::new(id(7), "o.example");
        let r = ResourceId::from_name(b"x");
        let mut data = StoredData {
            storage_time: 5,
            lifetime: 60,
            value: StoredDataValue::Single(DataValue::new(b"v".to_vec())),
            signature: Signature::none(),
        };
        a.sign_stored(&r, KindId::CHORDPHONE_TEST, &mut data).unwrap();
        let empty = SecurityBlock { certificates: vec![], signature: Signature::none() };
        let s = a.verify_stored(&r, KindId::CHORDPHONE_TEST, &data, &empty, WallTime::UNIX_EPOCH).unwrap();
        assert_eq!(s.node_ids, vec![id(7)]);
        assert!(a.verify_stored(&r, KindId::SIP_REGISTRATION, &data, &empty, WallTime::UNIX_EPOCH).is_err());
        let mut changed = data.clone();
        changed.value = StoredDataValue::Single(DataValue::new(b"w".to_vec()));
        assert!(a.verify_stored(&r, KindId::CHORDPHONE_TEST, &changed, &empty, WallTime::UNIX_EPOCH).is_err());
        let mut older = data;
        older.storage_time = 4;
        assert!(a.verify_stored(&r, KindId::CHORDPHONE_TEST, &older, &empty, WallTime::UNIX_EPOCH).is_err());
    }
}
