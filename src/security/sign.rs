//! Signatures over messages (RFC 6940 §6.3.4) and stored data (§7.1),
//! and the SignerIdentity that tells a receiver which certificate to use.

use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};

use super::cert::VerifiedIdentity;
use super::error::SecurityError;
use super::keys::{KeyPair, verify};
use crate::wire::security_block::{Signature, SignerIdentity};
use crate::wire::{Codec, KindId, NodeId, ResourceId, Writer};

/// TLS HashAlgorithm code points (RFC 5246 §7.4.1.4.1) a SignerIdentity
/// may name; chordphone produces sha256 and understands the others.
const HASH_SHA1: u8 = 2;
const HASH_SHA256: u8 = 4;
const HASH_SHA384: u8 = 5;
const HASH_SHA512: u8 = 6;

/// §6.3.4 `cert_hash`: SHA-256 of the DER certificate. Used when the
/// certificate holds a single Node-ID.
pub fn cert_hash_identity(cert_der: &[u8]) -> SignerIdentity {
    SignerIdentity::CertHash { hash_alg: HASH_SHA256, certificate_hash: Sha256::digest(cert_der).to_vec() }
}

/// §6.3.4 `cert_hash_node_id`: SHA-256 of Node-ID ‖ DER certificate, which
/// names the certificate and the one of its Node-IDs that signs.
pub fn cert_hash_node_id_identity(cert_der: &[u8], node_id: &NodeId) -> SignerIdentity {
    let h = Sha256::new().chain_update(node_id.0).chain_update(cert_der).finalize();
    SignerIdentity::CertHashNodeId { hash_alg: HASH_SHA256, certificate_node_id_hash: h.to_vec() }
}

/// The identity `node_id` signs with under `cert`: `cert_hash` for a
/// single-Node-ID certificate, `cert_hash_node_id` otherwise (§6.3.4).
pub fn signer_identity_for(cert: &VerifiedIdentity, node_id: &NodeId) -> SignerIdentity {
    if cert.node_ids.len() == 1 {
        cert_hash_identity(&cert.cert_der)
    } else {
        cert_hash_node_id_identity(&cert.cert_der, node_id)
    }
}

/// A certificate a SignerIdentity points at, and the Node-ID it names
/// (`None` for `cert_hash` on a certificate with several Node-IDs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignerMatch<'a> {
    pub cert: &'a VerifiedIdentity,
    pub node_id: Option<NodeId>,
}

/// Finds the certificate `identity` names among `certs` (typically the
/// security block's bucket, already verified). `None` identities and
/// unknown hash algorithms match nothing.
pub fn find_signer<'a>(identity: &SignerIdentity, certs: &'a [VerifiedIdentity]) -> Option<SignerMatch<'a>> {
    match identity {
        SignerIdentity::CertHash { hash_alg, certificate_hash } => certs.iter().find_map(|c| {
            let h = hash(*hash_alg, &[&c.cert_der])?;
            let single = match c.node_ids.as_slice() {
                [only] => Some(*only),
                _ => None,
            };
            (h == *certificate_hash).then_some(SignerMatch { cert: c, node_id: single })
        }),
        SignerIdentity::CertHashNodeId { hash_alg, certificate_node_id_hash } => certs.iter().find_map(|c| {
            c.node_ids.iter().find_map(|n| {
                let h = hash(*hash_alg, &[&n.0, &c.cert_der])?;
                (h == *certificate_node_id_hash).then_some(SignerMatch { cert: c, node_id: Some(*n) })
            })
        }),
        SignerIdentity::None | SignerIdentity::Unknown { .. } => None,
    }
}

/// The bytes a message signature covers (§6.3.4):
/// `overlay(4) ‖ transaction_id(8) ‖ MessageContents ‖ SignerIdentity`,
/// the contents and identity exactly as they are on the wire.
pub fn message_signature_input(
    overlay: u32,
    txid: u64,
    contents: &[u8],
    identity: &SignerIdentity,
) -> Result<Vec<u8>, SecurityError> {
    let mut w = Writer::with_capacity(12 + contents.len() + 40);
    w.u32(overlay);
    w.u64(txid);
    w.bytes(contents);
    identity.encode(&mut w);
    Ok(w.finish()?)
}

/// Signs a message's contents for the security block.
pub fn sign_message(
    key: &KeyPair,
    identity: &SignerIdentity,
    overlay: u32,
    txid: u64,
    contents: &[u8],
) -> Result<Signature, SecurityError> {
    let input = message_signature_input(overlay, txid, contents, identity)?;
    Ok(Signature { algorithm: key.signature_algorithm(), identity: identity.clone(), value: key.sign(&input)? })
}

/// Checks a message signature against the signer's key. Which key that
/// is comes from [`find_signer`] on `sig.identity`.
pub fn verify_message(
    sig: &Signature,
    spki_der: &[u8],
    overlay: u32,
    txid: u64,
    contents: &[u8],
) -> Result<(), SecurityError> {
    let input = message_signature_input(overlay, txid, contents, &sig.identity)?;
    verify(sig.algorithm, spki_der, &input, &sig.value)
}

/// The bytes a stored-data signature covers (§7.1), following the rule in
/// docs/security.md:
/// `ResourceId (with its 1-byte length) ‖ KindId(4) ‖ storage_time(8) ‖
/// StoredDataValue as on the wire ‖ SignerIdentity as on the wire`, where
/// an array entry's 4-byte index is zeroed first because the storer may
/// not know it (append with 0xffffffff, §7.2.2).
pub fn stored_data_signature_input(
    resource: &ResourceId,
    kind: KindId,
    storage_time: u64,
    value_wire_bytes: &[u8],
    is_array: bool,
    identity: &SignerIdentity,
) -> Result<Vec<u8>, SecurityError> {
    let mut w = Writer::with_capacity(value_wire_bytes.len() + 64);
    resource.encode(&mut w);
    kind.encode(&mut w);
    w.u64(storage_time);
    if is_array {
        // ArrayEntry = uint32 index ‖ DataValue (§7.2.2).
        let rest = value_wire_bytes.get(4..).ok_or(SecurityError::ValueTooShort)?;
        w.u32(0);
        w.bytes(rest);
    } else {
        w.bytes(value_wire_bytes);
    }
    identity.encode(&mut w);
    Ok(w.finish()?)
}

/// Signs a value for a StoreReq (§7.1).
#[allow(clippy::too_many_arguments)]
pub fn sign_stored_data(
    key: &KeyPair,
    identity: &SignerIdentity,
    resource: &ResourceId,
    kind: KindId,
    storage_time: u64,
    value_wire_bytes: &[u8],
    is_array: bool,
) -> Result<Signature, SecurityError> {
    let input = stored_data_signature_input(resource, kind, storage_time, value_wire_bytes, is_array, identity)?;
    Ok(Signature { algorithm: key.signature_algorithm(), identity: identity.clone(), value: key.sign(&input)? })
}

/// Checks a stored value's signature against the signer's key. The caller
/// also checks the certificate's validity at read time (§7.1,
/// [`VerifiedIdentity::is_valid_at`]).
#[allow(clippy::too_many_arguments)]
pub fn verify_stored_data(
    sig: &Signature,
    spki_der: &[u8],
    resource: &ResourceId,
    kind: KindId,
    storage_time: u64,
    value_wire_bytes: &[u8],
    is_array: bool,
) -> Result<(), SecurityError> {
    let input = stored_data_signature_input(resource, kind, storage_time, value_wire_bytes, is_array, &sig.identity)?;
    verify(sig.algorithm, spki_der, &input, &sig.value)
}

/// Digest of the concatenated `parts` under a TLS HashAlgorithm code.
fn hash(alg: u8, parts: &[&[u8]]) -> Option<Vec<u8>> {
    fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
        let mut d = D::new();
        for p in parts {
            d.update(p);
        }
        d.finalize().to_vec()
    }
    Some(match alg {
        HASH_SHA1 => run::<Sha1>(parts),
        HASH_SHA256 => run::<Sha256>(parts),
        HASH_SHA384 => run::<Sha384>(parts),
        HASH_SHA512 => run::<Sha512>(parts),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::ca::OverlayCa;
    use super::super::cert::verify_chain;
    use super::super::keys::KeyAlgorithm;
    use super::super::keys::test_keys::{ALL, key};
    use super::*;

    const OVERLAY: &str = "overlay.example.org";
    const T0: u64 = 1_700_000_000;

    fn enrolled(alg: KeyAlgorithm, ids: &[NodeId]) -> (KeyPair, VerifiedIdentity) {
        let ca = OverlayCa::create(OVERLAY, key(KeyAlgorithm::Ed25519), T0, T0 + 1000).unwrap();
        let k = key(alg);
        let der = ca.issue(&k.spki_der(), Some("alice@example.org"), ids, T0, T0 + 1000).unwrap();
        let id = verify_chain(&der, ca.cert_der(), T0, OVERLAY).unwrap();
        (k, id)
    }

    #[test]
    fn message_signature_input_layout() {
        let id = SignerIdentity::CertHash { hash_alg: 4, certificate_hash: vec![0xaa, 0xbb] };
        let input = message_signature_input(0x9aa3_2b8d, 0x0102_0304_0506_0708, &[0xc0, 0xde], &id).unwrap();
        // overlay ‖ txid ‖ contents ‖ SignerIdentity{1, len 4, sha256, <2> aabb}
        assert_eq!(hex::encode(input), "9aa32b8d0102030405060708c0de0100040402aabb");
    }

    #[test]
    fn messages_sign_and_verify_for_every_algorithm() {
        for alg in ALL {
            let n = NodeId::from_u128(77);
            let (k, cert) = enrolled(alg, &[n]);
            let identity = signer_identity_for(&cert, &n);
            assert!(matches!(identity, SignerIdentity::CertHash { hash_alg: 4, .. }));
            let sig = sign_message(&k, &identity, 0x9aa3_2b8d, 42, b"contents").unwrap();
            assert_eq!(sig.algorithm, k.signature_algorithm());
            let found = find_signer(&sig.identity, std::slice::from_ref(&cert)).unwrap();
            assert_eq!(found.node_id, Some(n));
            verify_message(&sig, &found.cert.spki_der, 0x9aa3_2b8d, 42, b"contents").unwrap();
            for (ov, tx, body) in
                [(1, 42, &b"contents"[..]), (0x9aa3_2b8d, 43, b"contents"), (0x9aa3_2b8d, 42, b"content!")]
            {
                assert_eq!(verify_message(&sig, &cert.spki_der, ov, tx, body), Err(SecurityError::BadSignature));
            }
            // A swapped identity changes the signed bytes too.
            let mut forged = sig.clone();
            forged.identity = SignerIdentity::CertHash { hash_alg: 4, certificate_hash: vec![0; 32] };
            assert!(verify_message(&forged, &cert.spki_der, 0x9aa3_2b8d, 42, b"contents").is_err());
        }
    }

    #[test]
    fn multi_node_id_certificates_use_cert_hash_node_id() {
        let ids = [NodeId::from_u128(1), NodeId::from_u128(2)];
        let (_, cert) = enrolled(KeyAlgorithm::Ed25519, &ids);
        let (_, other) = enrolled(KeyAlgorithm::EcdsaP256Sha256, &[NodeId::from_u128(3)]);
        let bucket = [other.clone(), cert.clone()];
        let identity = signer_identity_for(&cert, &ids[1]);
        let mut expected_input = ids[1].0.to_vec();
        expected_input.extend_from_slice(&cert.cert_der);
        assert_eq!(
            identity,
            SignerIdentity::CertHashNodeId {
                hash_alg: 4,
                certificate_node_id_hash: Sha256::digest(&expected_input).to_vec()
            }
        );
        let m = find_signer(&identity, &bucket).unwrap();
        assert_eq!((m.cert, m.node_id), (&cert, Some(ids[1])));
        // cert_hash on a multi-id certificate finds it but names no Node-ID.
        let m = find_signer(&cert_hash_identity(&cert.cert_der), &bucket).unwrap();
        assert_eq!((m.cert, m.node_id), (&cert, None));
        assert!(find_signer(&SignerIdentity::None, &bucket).is_none());
        let sha1 = SignerIdentity::CertHash { hash_alg: 2, certificate_hash: Sha1::digest(&other.cert_der).to_vec() };
        assert_eq!(find_signer(&sha1, &bucket).map(|m| m.cert), Some(&other));
    }

    #[test]
    fn stored_data_signature_input_fixed_vector() {
        let resource = ResourceId::from_name(b"test");
        let identity = SignerIdentity::CertHash { hash_alg: 4, certificate_hash: vec![0xaa; 3] };
        // A single value: DataValue{exists=true, value="hi"}.
        let value = hex::decode("01000000026869").unwrap();
        let input =
            stored_data_signature_input(&resource, KindId(1), 0x0000_018c_1a2b_3c4d, &value, false, &identity).unwrap();
        let expected = concat!(
            "10a94a8fe5ccb19ba61c4c0873d391e987", // ResourceId<0..2^8-1>
            "00000001",                           // KindId
            "0000018c1a2b3c4d",                   // storage_time
            "01000000026869",                     // StoredDataValue
            "0100050403aaaaaa",                   // SignerIdentity
        );
        assert_eq!(hex::encode(&input), expected);
        // An array entry: index 5 is signed as 0.
        let entry = hex::decode("0000000501000000026869").unwrap();
        let input =
            stored_data_signature_input(&resource, KindId(1), 0x0000_018c_1a2b_3c4d, &entry, true, &identity).unwrap();
        assert_eq!(hex::encode(&input), expected.replace("01000000026869", "0000000001000000026869"));
        assert_eq!(
            stored_data_signature_input(&resource, KindId(1), 0, &[0, 0, 0], true, &identity),
            Err(SecurityError::ValueTooShort)
        );
    }

    #[test]
    fn stored_data_sign_and_verify() {
        for alg in ALL {
            let n = NodeId::from_u128(5);
            let (k, cert) = enrolled(alg, &[n]);
            let identity = signer_identity_for(&cert, &n);
            let rid = n.to_resource();
            let entry = hex::decode("ffffffff01000000026869").unwrap();
            let sig = sign_stored_data(&k, &identity, &rid, KindId(3), 99, &entry, true).unwrap();
            // The storing peer replaced the append index with the real one.
            let stored = hex::decode("0000000701000000026869").unwrap();
            verify_stored_data(&sig, &cert.spki_der, &rid, KindId(3), 99, &stored, true).unwrap();
            assert!(verify_stored_data(&sig, &cert.spki_der, &rid, KindId(3), 100, &stored, true).is_err());
            assert!(verify_stored_data(&sig, &cert.spki_der, &rid, KindId(4), 99, &stored, true).is_err());
            let other = ResourceId(vec![1; 16]);
            assert!(verify_stored_data(&sig, &cert.spki_der, &other, KindId(3), 99, &stored, true).is_err());
            let mut tampered = stored.clone();
            if let Some(b) = tampered.last_mut() {
                *b ^= 1;
            }
            assert!(verify_stored_data(&sig, &cert.spki_der, &rid, KindId(3), 99, &tampered, true).is_err());
            assert!(cert.is_valid_at(T0 + 1) && !cert.is_valid_at(T0 + 1001));
        }
        // The synthesized "nonexistent" signature verifies against nothing.
        let (_, cert) = enrolled(KeyAlgorithm::Ed25519, &[NodeId::from_u128(1)]);
        assert!(
            verify_stored_data(&Signature::none(), &cert.spki_der, &ResourceId(vec![]), KindId(1), 0, &[], false)
                .is_err()
        );
    }
}
