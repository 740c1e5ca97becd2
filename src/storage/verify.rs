//! Verified before stored: the checks of RFC 6940 §7.4.1.1 that need no
//! stored state, turning a StoreReq into the [`VerifiedStore`] token that
//! [`super::DataStore::apply`] requires. Unverified data has no way in.

use std::collections::BTreeSet;

use super::access::authorized;
use super::certs::certs_for;
use super::policy::KindPolicy;
use crate::security::seam::{OverlayCrypto, Signer};
use crate::time::WallTime;
use crate::wire::error::{ErrorCode, ErrorResponse};
use crate::wire::security_block::{GenericCertificate, SecurityBlock, SignatureAndHashAlgorithm};
use crate::wire::storage::{StoreKindData, StoreReq, StoredData};
use crate::wire::{KindId, ResourceId};

/// A StoreReq whose every value was verified and authorised. Only
/// [`verify_store`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedStore {
    resource: ResourceId,
    replica_number: u8,
    kinds: Vec<VerifiedKind>,
}

/// The values of one kind, typed with the kind's model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct VerifiedKind {
    pub(super) kind: KindId,
    pub(super) generation: u64,
    pub(super) values: Vec<VerifiedValue>,
}

/// A value and the certificates its signature needs (§6.3.4), kept so
/// Fetch answers and replica Stores can carry them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct VerifiedValue {
    pub(super) data: StoredData,
    pub(super) certs: Vec<GenericCertificate>,
}

impl VerifiedStore {
    pub fn resource(&self) -> &ResourceId {
        &self.resource
    }

    /// 0 for an original store, 1, 2, … for replicas (§7.4.1.1).
    pub fn replica_number(&self) -> u8 {
        self.replica_number
    }

    pub fn is_replica(&self) -> bool {
        self.replica_number > 0
    }

    /// The kinds stored, in request order.
    pub fn kinds(&self) -> impl Iterator<Item = KindId> + '_ {
        self.kinds.iter().map(|k| k.kind)
    }

    pub fn value_count(&self) -> usize {
        self.kinds.iter().map(|k| k.values.len()).sum()
    }

    pub(super) fn into_parts(self) -> (ResourceId, u8, Vec<VerifiedKind>) {
        (self.resource, self.replica_number, self.kinds)
    }
}

/// Performs every stateless check of §7.4.1.1 on a received StoreReq.
///
/// `request_signer` is who signed the StoreReq message; `security` is its
/// security block (the certificates verify the values' signatures too).
/// `sender_is_replica_peer` is the caller's judgement (§7.4.1.1, §10.4)
/// that the sender could plausibly hold a copy of this resource — the
/// responsible peer for a replica, a predecessor handing data over.
pub fn verify_store(
    req: StoreReq,
    request_signer: &Signer,
    security: &SecurityBlock,
    crypto: &dyn OverlayCrypto,
    kinds: &[KindPolicy],
    sender_is_replica_peer: bool,
    wall: WallTime,
) -> Result<VerifiedStore, ErrorResponse> {
    let StoreReq { resource, replica_number, kind_data } = req;
    // §7.4.1.1: unknown kinds are refused, all named at once (§6.3.3.1).
    let mut unknown: Vec<KindId> = Vec::new();
    for k in kind_data.iter().map(|k| k.kind) {
        if policy_for(kinds, k).is_none() && !unknown.contains(&k) {
            unknown.push(k);
        }
    }
    if !unknown.is_empty() {
        return Err(ErrorResponse::unknown_kinds(&unknown));
    }
    // §7.4.1.1: a kind appears at most once, which is what lets the
    // request be applied kind by kind.
    let mut seen = BTreeSet::new();
    if let Some(dup) = kind_data.iter().find(|k| !seen.insert(k.kind)) {
        return Err(reason(ErrorCode::INVALID_MESSAGE, format!("kind {:?} appears twice", dup.kind)));
    }
    // §7.4.1.1: replica stores come only from plausible replica-set members.
    if replica_number > 0 && !sender_is_replica_peer {
        return Err(reason(ErrorCode::FORBIDDEN, "replica store from a peer outside the replica set".into()));
    }
    let check = Check {
        resource: &resource,
        security,
        crypto,
        // §7.4.1.1: an original store's own signer must be authorised too.
        request_signer: (replica_number == 0).then_some(request_signer),
        wall,
    };
    let mut verified = Vec::with_capacity(kind_data.len());
    for kd in kind_data {
        let Some(policy) = policy_for(kinds, kd.kind) else {
            return Err(ErrorResponse::unknown_kinds(&[kd.kind]));
        };
        verified.push(check.kind(policy, kd)?);
    }
    Ok(VerifiedStore { resource, replica_number, kinds: verified })
}

fn policy_for(kinds: &[KindPolicy], kind: KindId) -> Option<&KindPolicy> {
    kinds.iter().find(|p| p.kind == kind)
}

fn reason(code: ErrorCode, why: String) -> ErrorResponse {
    ErrorResponse::with_reason(code, &why)
}

struct Check<'a> {
    resource: &'a ResourceId,
    security: &'a SecurityBlock,
    crypto: &'a dyn OverlayCrypto,
    request_signer: Option<&'a Signer>,
    wall: WallTime,
}

impl Check<'_> {
    fn kind(&self, policy: &KindPolicy, kd: StoreKindData) -> Result<VerifiedKind, ErrorResponse> {
        // §7.4.1.1 max-count. One request cannot carry more values of a
        // kind than the kind holds; refusing here spares the signature
        // checks. The count after merging is checked by the store.
        if kd.values.len() > usize::try_from(policy.max_count).unwrap_or(usize::MAX) {
            return Err(reason(ErrorCode::DATA_TOO_LARGE, format!("more than {} values", policy.max_count)));
        }
        let values = kd.values.into_iter().map(|v| self.value(policy, v)).collect::<Result<_, _>>()?;
        Ok(VerifiedKind { kind: kd.kind, generation: kd.generation_counter, values })
    }

    fn value(&self, policy: &KindPolicy, data: StoredData) -> Result<VerifiedValue, ErrorResponse> {
        // §7.2: the model is the kind's; a raw value is typed with it now.
        let data = data
            .resolve(policy.model)
            .map_err(|e| reason(ErrorCode::INVALID_MESSAGE, format!("value of {:?}: {e}", policy.kind)))?;
        // §6.3.4: `none` / {0,0} only sign synthesized Fetch answers.
        if data.signature.is_none() || data.signature.algorithm == SignatureAndHashAlgorithm::NONE {
            return Err(reason(ErrorCode::FORBIDDEN, "unsigned value".into()));
        }
        // §7.4.1.1 max-size, on the value's bytes.
        let size = data.value.data_value().map_or(0, |v| v.value.len());
        if size > usize::try_from(policy.max_size).unwrap_or(usize::MAX) {
            return Err(reason(ErrorCode::DATA_TOO_LARGE, format!("value of {size} bytes > {}", policy.max_size)));
        }
        // §7.4.1.1: a valid signature, by a signer the access policy admits.
        let signer = self
            .crypto
            .verify_stored(self.resource, policy.kind, &data, self.security, self.wall)
            .map_err(|e| reason(ErrorCode::FORBIDDEN, format!("value signature: {e}")))?;
        if !authorized(policy, self.resource, &data.value, &signer) {
            return Err(reason(ErrorCode::FORBIDDEN, format!("value signer may not write {:?} here", policy.kind)));
        }
        if let Some(rs) = self.request_signer
            && !authorized(policy, self.resource, &data.value, rs)
        {
            return Err(reason(ErrorCode::FORBIDDEN, format!("request signer may not write {:?} here", policy.kind)));
        }
        let certs = certs_for(&data.signature.identity, &signer, &self.security.certificates);
        Ok(VerifiedValue { data, certs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testing::*;
    use crate::wire::Codec;
    use crate::wire::security_block::Signature;
    use crate::wire::storage::{DataValue, StoredDataValue};

    fn verify(w: &World, req: StoreReq, signer: &Signer, replica_peer: bool) -> Result<VerifiedStore, ErrorResponse> {
        verify_store(req, signer, &w.security(), &w.crypto, &w.kinds, replica_peer, wall(T0))
    }

    #[test]
    fn a_good_store_verifies_and_keeps_the_signer_certificate() {
        let w = World::new();
        let req = w.store_req(alice_res(), TEST, vec![w.single(ALICE, &alice_res(), TEST, b"hi", 1)]);
        let token = verify(&w, req, &w.alice(), false).unwrap();
        assert_eq!(token.resource(), &alice_res());
        assert!(!token.is_replica());
        assert_eq!(token.kinds().collect::<Vec<_>>(), vec![TEST]);
        let (_, _, kinds) = token.into_parts();
        assert_eq!(kinds[0].values[0].certs, vec![cert(ALICE)]);
    }

    #[test]
    fn unknown_kinds_are_all_named() {
        let w = World::new();
        let mut req = w.store_req(alice_res(), TEST, vec![w.single(ALICE, &alice_res(), TEST, b"hi", 1)]);
        for k in [KindId(0xF000_0077), KindId(0xF000_0078), KindId(0xF000_0077)] {
            req.kind_data.push(StoreKindData { kind: k, generation_counter: 0, values: vec![] });
        }
        let err = verify(&w, req, &w.alice(), false).unwrap_err();
        assert_eq!(err.error_code, ErrorCode::UNKNOWN_KIND);
        assert_eq!(err.parse_unknown_kinds().unwrap(), vec![KindId(0xF000_0077), KindId(0xF000_0078)]);
    }

    #[test]
    fn the_same_kind_twice_is_invalid() {
        let w = World::new();
        let mut req = w.store_req(alice_res(), TEST, vec![w.single(ALICE, &alice_res(), TEST, b"hi", 1)]);
        req.kind_data.push(req.kind_data[0].clone());
        assert_eq!(verify(&w, req, &w.alice(), false).unwrap_err().error_code, ErrorCode::INVALID_MESSAGE);
    }

    #[test]
    fn bad_signatures_and_wrong_signers_are_forbidden() {
        let w = World::new();
        let r = alice_res();
        // Tampered value.
        let mut v = w.single(ALICE, &r, TEST, b"hi", 1);
        v.value = StoredDataValue::Single(DataValue::new(b"ho".to_vec()));
        assert_forbidden(&w, w.store_req(r.clone(), TEST, vec![v]), &w.alice());
        // Signed by bob, stored at alice's resource (USER-MATCH).
        assert_forbidden(&w, w.store_req(r.clone(), TEST, vec![w.single(BOB, &r, TEST, b"hi", 1)]), &w.bob());
        // Alice's value, but the StoreReq is signed by bob (original store).
        assert_forbidden(&w, w.store_req(r.clone(), TEST, vec![w.single(ALICE, &r, TEST, b"hi", 1)]), &w.bob());
        // Signer identity `none` and algorithm {0,0}.
        let mut v = w.single(ALICE, &r, TEST, b"hi", 1);
        v.signature = Signature::none();
        assert_forbidden(&w, w.store_req(r.clone(), TEST, vec![v]), &w.alice());
        let mut v = w.single(ALICE, &r, TEST, b"hi", 1);
        v.signature.algorithm = SignatureAndHashAlgorithm::NONE;
        assert_forbidden(&w, w.store_req(r.clone(), TEST, vec![v]), &w.alice());
        // A certificate missing from the security block.
        let req = w.store_req(r.clone(), TEST, vec![w.single(ALICE, &r, TEST, b"hi", 1)]);
        let mut sec = w.security();
        sec.certificates.retain(|c| c != &cert(ALICE));
        let err = verify_store(req, &w.alice(), &sec, &w.crypto, &w.kinds, false, wall(T0)).unwrap_err();
        assert_eq!(err.error_code, ErrorCode::FORBIDDEN);
    }

    #[test]
    fn user_node_match_checks_the_key_for_both_signers() {
        let w = World::new();
        let r = alice_res();
        let key = ALICE_NODE.0.to_vec();
        let v = w.dict(ALICE, &r, SIP, &key, b"reg", 1);
        assert!(verify(&w, w.store_req(r.clone(), SIP, vec![v]), &w.alice(), false).is_ok());
        // Alice signs an entry keyed by a node that is not hers.
        let v = w.dict(ALICE, &r, SIP, &BOB_NODE.0, b"reg", 1);
        assert_forbidden(&w, w.store_req(r.clone(), SIP, vec![v]), &w.alice());
    }

    #[test]
    fn replica_stores_need_a_plausible_sender_but_not_an_authorised_one() {
        let w = World::new();
        let r = alice_res();
        let mut req = w.store_req(r.clone(), TEST, vec![w.single(ALICE, &r, TEST, b"hi", 1)]);
        req.replica_number = 1;
        // Bob's node forwards alice's value as a replica.
        assert_eq!(verify(&w, req.clone(), &w.bob(), false).unwrap_err().error_code, ErrorCode::FORBIDDEN);
        assert!(verify(&w, req, &w.bob(), true).unwrap().is_replica());
    }

    #[test]
    fn size_and_count_limits() {
        let w = World::new();
        let r = alice_res();
        let big = vec![0u8; 101]; // TEST's max_size is 100
        let err = verify(&w, w.store_req(r.clone(), TEST, vec![w.single(ALICE, &r, TEST, &big, 1)]), &w.alice(), false);
        assert_eq!(err.unwrap_err().error_code, ErrorCode::DATA_TOO_LARGE);
        let two = vec![w.single(ALICE, &r, TEST, b"a", 1), w.single(ALICE, &r, TEST, b"b", 2)];
        let err = verify(&w, w.store_req(r.clone(), TEST, two), &w.alice(), false).unwrap_err();
        assert_eq!(err.error_code, ErrorCode::DATA_TOO_LARGE);
    }

    #[test]
    fn raw_values_are_typed_with_the_kind_model() {
        let w = World::new();
        let r = alice_res();
        let key = ALICE_NODE.0.to_vec();
        // A dictionary value re-decoded without a model stays raw.
        let typed = w.dict(ALICE, &r, SIP, &key, b"reg", 1);
        let raw_kd = StoreKindData { kind: KindId(0xF000_0099), generation_counter: 0, values: vec![typed.clone()] };
        let mut kd = StoreKindData::from_bytes(&raw_kd.to_bytes().unwrap()).unwrap();
        assert!(matches!(kd.values[0].value, StoredDataValue::Raw(_)));
        kd.kind = SIP;
        let req = StoreReq { resource: r.clone(), replica_number: 0, kind_data: vec![kd] };
        let (_, _, kinds) = verify(&w, req, &w.alice(), false).unwrap().into_parts();
        assert_eq!(kinds[0].values[0].data, typed);
        // A value of the wrong model is invalid.
        let wrong = w.single(ALICE, &r, SIP, b"x", 1);
        let req = w.store_req(r, SIP, vec![wrong]);
        assert_eq!(verify(&w, req, &w.alice(), false).unwrap_err().error_code, ErrorCode::INVALID_MESSAGE);
    }

    fn assert_forbidden(w: &World, req: StoreReq, signer: &Signer) {
        assert_eq!(verify(w, req, signer, false).unwrap_err().error_code, ErrorCode::FORBIDDEN);
    }
}
