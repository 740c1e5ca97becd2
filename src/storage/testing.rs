//! Test fixtures for the storage module: a stand-in [`OverlayCrypto`]
//! (signature = SHA-256 of signer ‖ signed bytes, identities from a table)
//! and a small world of two users and three kinds.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::policy::{AccessPolicy, KindPolicy};
use super::verify::{VerifiedStore, verify_store};
use crate::security::seam::{CryptoError, OverlayCrypto, Signer};
use crate::time::WallTime;
use crate::wire::security_block::{
    GenericCertificate, SecurityBlock, Signature, SignatureAndHashAlgorithm, SignerIdentity,
};
use crate::wire::storage::{
    ArrayEntry, DataModel, DataValue, DictionaryEntry, StoreKindData, StoreReq, StoredData, StoredDataValue,
};
use crate::wire::{KindId, NodeId, ResourceId};

/// Wall time of the tests, ms since the epoch.
pub(crate) const T0: u64 = 1_700_000_000_000;

/// Wall time `ms` milliseconds since the epoch (tests count from [`T0`]).
pub(crate) fn wall(ms: u64) -> WallTime {
    WallTime::from_millis(ms)
}
pub(crate) const ALICE: &[u8] = b"certificate of alice";
pub(crate) const BOB: &[u8] = b"certificate of bob";
pub(crate) const ALICE_NODE: NodeId = NodeId([0xa1; 16]);
/// Alice's certificate binds two Node-IDs (two devices).
pub(crate) const ALICE_NODE2: NodeId = NodeId([0xa2; 16]);
pub(crate) const BOB_NODE: NodeId = NodeId([0xb0; 16]);
/// SINGLE, USER-MATCH, one value of at most 100 bytes.
pub(crate) const TEST: KindId = KindId::CHORDPHONE_TEST;
/// DICTIONARY, USER-NODE-MATCH, three entries.
pub(crate) const SIP: KindId = KindId::SIP_REGISTRATION;
/// ARRAY, USER-MATCH, four entries.
pub(crate) const CERTS: KindId = KindId::CERTIFICATE_BY_USER;
/// Lifetime of the fixtures' values, seconds.
pub(crate) const LIFETIME: u32 = 60;

pub(crate) fn alice_res() -> ResourceId {
    ResourceId::from_name(b"alice@example.org")
}

pub(crate) fn bob_res() -> ResourceId {
    ResourceId::from_name(b"bob@example.org")
}

pub(crate) fn cert(c: &[u8]) -> GenericCertificate {
    GenericCertificate::x509(c.to_vec())
}

/// Verifies stored values against certificates it has a table entry for.
#[derive(Debug, Default)]
pub(crate) struct TestCrypto {
    identities: BTreeMap<Vec<u8>, Signer>,
}

impl TestCrypto {
    pub(crate) fn enroll(&mut self, cert: &[u8], signer: Signer) {
        self.identities.insert(cert.to_vec(), signer);
    }

    pub(crate) fn sign(cert: &[u8], resource: &ResourceId, kind: KindId, data: &mut StoredData) {
        let certificate_hash = Sha256::digest(cert).to_vec();
        let value = Self::digest(&certificate_hash, resource, kind, data);
        let identity = SignerIdentity::CertHash { hash_alg: 4, certificate_hash };
        data.signature = Signature { algorithm: SignatureAndHashAlgorithm::RSA_PKCS1_SHA256, identity, value };
    }

    /// §7.1's input, with an array index zeroed, behind the signer's hash.
    fn digest(signer: &[u8], resource: &ResourceId, kind: KindId, data: &StoredData) -> Vec<u8> {
        let mut value = data.value.clone();
        if let StoredDataValue::Array(e) = &mut value {
            e.index = 0;
        }
        Sha256::new()
            .chain_update(signer)
            .chain_update(&resource.0)
            .chain_update(kind.0.to_be_bytes())
            .chain_update(data.storage_time.to_be_bytes())
            .chain_update(value.to_bytes().unwrap())
            .finalize()
            .to_vec()
    }
}

impl OverlayCrypto for TestCrypto {
    fn sign_message(&self, _: u32, _: u64, _: &[u8]) -> Result<SecurityBlock, CryptoError> {
        unimplemented!("storage tests sign no messages")
    }

    fn verify_message(&self, _: u32, _: u64, _: &[u8], _: &SecurityBlock, _: WallTime) -> Result<Signer, CryptoError> {
        unimplemented!("storage tests verify no messages")
    }

    fn sign_stored(&self, _: &ResourceId, _: KindId, _: &mut StoredData) -> Result<(), CryptoError> {
        unimplemented!("use TestCrypto::sign")
    }

    fn verify_stored(
        &self,
        resource: &ResourceId,
        kind: KindId,
        data: &StoredData,
        security: &SecurityBlock,
        _wall: WallTime,
    ) -> Result<Signer, CryptoError> {
        let SignerIdentity::CertHash { certificate_hash, .. } = &data.signature.identity else {
            return Err(CryptoError::UnknownSigner);
        };
        let cert = security
            .certificates
            .iter()
            .find(|c| Sha256::digest(&c.cert).as_slice() == certificate_hash.as_slice())
            .ok_or(CryptoError::UnknownSigner)?;
        let signer = self.identities.get(&cert.cert).ok_or(CryptoError::UnknownSigner)?;
        if Self::digest(certificate_hash, resource, kind, data) != data.signature.value {
            return Err(CryptoError::BadSignature);
        }
        Ok(signer.clone())
    }
}

/// Two users (alice, bob), each with one node, and three kinds.
pub(crate) struct World {
    pub(crate) crypto: TestCrypto,
    pub(crate) kinds: Vec<KindPolicy>,
}

impl World {
    pub(crate) fn new() -> Self {
        let mut crypto = TestCrypto::default();
        crypto.enroll(ALICE, Self::signer(ALICE));
        crypto.enroll(BOB, Self::signer(BOB));
        let k = |kind, model, access, max_count| KindPolicy {
            kind,
            model,
            access,
            max_count,
            max_size: 100,
            max_node_multiple: 0,
        };
        let kinds = vec![
            k(TEST, DataModel::Single, AccessPolicy::UserMatch, 1),
            k(SIP, DataModel::Dictionary, AccessPolicy::UserNodeMatch, 3),
            k(CERTS, DataModel::Array, AccessPolicy::UserMatch, 4),
        ];
        World { crypto, kinds }
    }

    pub(crate) fn signer(cert: &[u8]) -> Signer {
        if cert == ALICE {
            Signer { node_ids: vec![ALICE_NODE, ALICE_NODE2], user: Some("alice@example.org".into()) }
        } else {
            Signer { node_ids: vec![BOB_NODE], user: Some("bob@example.org".into()) }
        }
    }

    pub(crate) fn alice(&self) -> Signer {
        Self::signer(ALICE)
    }

    pub(crate) fn bob(&self) -> Signer {
        Self::signer(BOB)
    }

    /// A StoreReq's security block: both certificates, a message signature
    /// the store never looks at.
    pub(crate) fn security(&self) -> SecurityBlock {
        SecurityBlock { certificates: vec![cert(ALICE), cert(BOB)], signature: Signature::none() }
    }

    pub(crate) fn value(
        &self,
        signer: &[u8],
        resource: &ResourceId,
        kind: KindId,
        value: StoredDataValue,
        storage_time: u64,
    ) -> StoredData {
        let mut data = StoredData { storage_time, lifetime: LIFETIME, value, signature: Signature::none() };
        TestCrypto::sign(signer, resource, kind, &mut data);
        data
    }

    pub(crate) fn single(&self, s: &[u8], r: &ResourceId, kind: KindId, v: &[u8], time: u64) -> StoredData {
        self.value(s, r, kind, StoredDataValue::Single(DataValue::new(v.to_vec())), time)
    }

    pub(crate) fn dict(&self, s: &[u8], r: &ResourceId, kind: KindId, key: &[u8], v: &[u8], time: u64) -> StoredData {
        let e = DictionaryEntry { key: key.to_vec(), value: DataValue::new(v.to_vec()) };
        self.value(s, r, kind, StoredDataValue::Dictionary(e), time)
    }

    pub(crate) fn array(&self, s: &[u8], r: &ResourceId, kind: KindId, index: u32, v: &[u8], time: u64) -> StoredData {
        let e = ArrayEntry { index, value: DataValue::new(v.to_vec()) };
        self.value(s, r, kind, StoredDataValue::Array(e), time)
    }

    /// A deletion (§7.4.1.3): `exists = False`, empty, signed.
    pub(crate) fn deleted(
        &self,
        s: &[u8],
        r: &ResourceId,
        kind: KindId,
        mut shape: StoredData,
        time: u64,
    ) -> StoredData {
        match &mut shape.value {
            StoredDataValue::Single(v) => *v = DataValue::nonexistent(),
            StoredDataValue::Array(e) => e.value = DataValue::nonexistent(),
            StoredDataValue::Dictionary(e) => e.value = DataValue::nonexistent(),
            StoredDataValue::Raw(_) => {}
        }
        self.value(s, r, kind, shape.value, time)
    }

    /// An original StoreReq (generation 0) of one kind.
    pub(crate) fn store_req(&self, resource: ResourceId, kind: KindId, values: Vec<StoredData>) -> StoreReq {
        StoreReq { resource, replica_number: 0, kind_data: vec![StoreKindData { kind, generation_counter: 0, values }] }
    }

    /// Verifies `req` as signed by `signer`, from a plausible replica peer.
    pub(crate) fn token(&self, req: StoreReq, signer: &Signer) -> VerifiedStore {
        verify_store(req, signer, &self.security(), &self.crypto, &self.kinds, true, wall(T0)).unwrap()
    }
}
