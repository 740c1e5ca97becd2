//! Scenario tests of the data store (RFC 6940 §7.4): every stateful
//! check of §7.4.1.1 with its error code, atomicity, lifetimes,
//! tombstones and the replication views, plus a model-based property.

use std::collections::BTreeMap;

use super::store::{DataStore, RecordView};
use super::testing::*;
use super::{set_replicas, verify_store};
use crate::security::seam::OverlayCrypto;
use crate::wire::error::{ErrorCode, ErrorResponse};
use crate::wire::security_block::{SecurityBlock, Signature};
use crate::wire::storage::{ArrayEntry, ArrayRange, StoreAns, StoreKindResponse, StoredData, StoredDataValue};
use crate::wire::storage::{DataValue, FetchReq, ModelSpecifier, StoredDataSpecifier};
use crate::wire::{Codec, KindId, ResourceId};
use proptest::prelude::*;

fn store(w: &World) -> DataStore {
    DataStore::new(w.kinds.clone())
}

fn fetch_all(s: &DataStore, resource: &ResourceId, kind: KindId, model: ModelSpecifier, at: u64) -> Vec<StoredData> {
    let req =
        FetchReq { resource: resource.clone(), specifiers: vec![StoredDataSpecifier { kind, generation: 0, model }] };
    s.fetch(&req, wall(at)).unwrap().0.kind_responses.remove(0).values
}

fn single_value(s: &DataStore, at: u64) -> StoredData {
    fetch_all(s, &alice_res(), TEST, ModelSpecifier::Single, at).remove(0)
}

/// Stores `values` of `kind` at alice's resource as alice, originally.
fn put(
    w: &World,
    s: &mut DataStore,
    kind: KindId,
    gen_: u64,
    values: Vec<StoredData>,
) -> Result<StoreAns, ErrorResponse> {
    let mut req = w.store_req(alice_res(), kind, values);
    req.kind_data[0].generation_counter = gen_;
    s.apply(w.token(req, &w.alice()), wall(T0))
}

fn replica(
    w: &World,
    s: &mut DataStore,
    kind: KindId,
    gen_: u64,
    values: Vec<StoredData>,
) -> Result<StoreAns, ErrorResponse> {
    let mut req = w.store_req(alice_res(), kind, values);
    req.replica_number = 1;
    req.kind_data[0].generation_counter = gen_;
    s.apply(w.token(req, &w.bob()), wall(T0))
}

fn generation_of(ans: &StoreAns) -> u64 {
    ans.kind_responses[0].generation_counter
}

#[test]
fn original_stores_count_generations_from_one() {
    let w = World::new();
    let mut s = store(&w);
    let r = alice_res();
    let ans = put(&w, &mut s, TEST, 0, vec![w.single(ALICE, &r, TEST, b"a", 1)]).unwrap();
    assert_eq!(ans.kind_responses, vec![StoreKindResponse { kind: TEST, generation_counter: 1, replicas: vec![] }]);
    assert_eq!(generation_of(&put(&w, &mut s, TEST, 0, vec![w.single(ALICE, &r, TEST, b"b", 2)]).unwrap()), 2);
    // A matching non-zero counter succeeds (ETag-like) and moves on.
    assert_eq!(generation_of(&put(&w, &mut s, TEST, 2, vec![w.single(ALICE, &r, TEST, b"c", 3)]).unwrap()), 3);
    assert_eq!(single_value(&s, T0).value, StoredDataValue::Single(DataValue::new(b"c".to_vec())));
    assert_eq!(s.certificate_count(), 1);
}

#[test]
fn a_stale_generation_is_refused_with_the_current_counters() {
    let w = World::new();
    let mut s = store(&w);
    let r = alice_res();
    put(&w, &mut s, TEST, 0, vec![w.single(ALICE, &r, TEST, b"a", 1)]).unwrap();
    put(&w, &mut s, TEST, 0, vec![w.single(ALICE, &r, TEST, b"b", 2)]).unwrap();
    let before = s.clone();
    for stale in [1, 3] {
        let err = put(&w, &mut s, TEST, stale, vec![w.single(ALICE, &r, TEST, b"c", 3)]).unwrap_err();
        assert_eq!(err.error_code, ErrorCode::GENERATION_COUNTER_TOO_LOW);
        let info = StoreAns::from_bytes(&err.error_info).unwrap();
        assert_eq!(
            info.kind_responses,
            vec![StoreKindResponse { kind: TEST, generation_counter: 2, replicas: vec![] }]
        );
        assert_eq!(s, before);
    }
    // A first store with a non-zero counter: the current one is 0.
    let err = put(&w, &mut s, SIP, 4, vec![w.dict(ALICE, &r, SIP, &ALICE_NODE.0, b"x", 1)]).unwrap_err();
    assert_eq!(StoreAns::from_bytes(&err.error_info).unwrap().kind_responses[0].generation_counter, 0);
}

#[test]
fn older_or_equal_storage_times_are_too_old() {
    let w = World::new();
    let mut s = store(&w);
    let r = alice_res();
    put(&w, &mut s, TEST, 0, vec![w.single(ALICE, &r, TEST, b"a", 10)]).unwrap();
    for t in [9, 10] {
        let err = put(&w, &mut s, TEST, 0, vec![w.single(ALICE, &r, TEST, b"b", t)]).unwrap_err();
        assert_eq!(err.error_code, ErrorCode::DATA_TOO_OLD);
    }
    // The identical value again: an original store is too old...
    let same = w.single(ALICE, &r, TEST, b"a", 10);
    assert_eq!(put(&w, &mut s, TEST, 0, vec![same.clone()]).unwrap_err().error_code, ErrorCode::DATA_TOO_OLD);
    // ...a replica store is an idempotent success that copies the counter.
    let before = single_value(&s, T0);
    assert_eq!(generation_of(&replica(&w, &mut s, TEST, 7, vec![same]).unwrap()), 7);
    assert_eq!(single_value(&s, T0), before);
    // A replica store of a different value at the same time is not.
    let other = w.single(ALICE, &r, TEST, b"z", 10);
    assert_eq!(replica(&w, &mut s, TEST, 8, vec![other]).unwrap_err().error_code, ErrorCode::DATA_TOO_OLD);
}

#[test]
fn replica_stores_copy_the_counter_they_carry() {
    let w = World::new();
    let mut s = store(&w);
    let r = alice_res();
    assert_eq!(generation_of(&replica(&w, &mut s, TEST, 41, vec![w.single(ALICE, &r, TEST, b"a", 1)]).unwrap()), 41);
    // Not checked against ours, even when lower.
    assert_eq!(generation_of(&replica(&w, &mut s, TEST, 5, vec![w.single(ALICE, &r, TEST, b"b", 2)]).unwrap()), 5);
    // A replica without a counter (which it must not send) still counts up.
    assert_eq!(generation_of(&replica(&w, &mut s, TEST, 0, vec![w.single(ALICE, &r, TEST, b"c", 3)]).unwrap()), 6);
}

#[test]
fn a_failing_kind_rolls_the_whole_store_back() {
    let w = World::new();
    let mut s = store(&w);
    let r = alice_res();
    put(&w, &mut s, SIP, 0, vec![w.dict(ALICE, &r, SIP, &ALICE_NODE.0, b"old", 5)]).unwrap();
    let before = s.clone();
    let mut req = w.store_req(r.clone(), TEST, vec![w.single(ALICE, &r, TEST, b"new", 6)]);
    let sip = w.store_req(r.clone(), SIP, vec![w.dict(ALICE, &r, SIP, &ALICE_NODE.0, b"older", 4)]);
    req.kind_data.extend(sip.kind_data);
    let err = s.apply(w.token(req, &w.alice()), wall(T0)).unwrap_err();
    assert_eq!(err.error_code, ErrorCode::DATA_TOO_OLD);
    assert_eq!(s, before, "the first kind was not stored");
    assert!(!s.holds(&r, TEST));
}

#[test]
fn counts_are_checked_after_merging() {
    let w = World::new();
    let mut s = store(&w);
    let r = alice_res();
    let append = |t| w.array(ALICE, &r, CERTS, ArrayEntry::APPEND, b"cert", t);
    put(&w, &mut s, CERTS, 0, vec![append(1), append(2), append(3)]).unwrap();
    let before = s.clone();
    let err = put(&w, &mut s, CERTS, 0, vec![append(4), append(5)]).unwrap_err();
    assert_eq!(err.error_code, ErrorCode::DATA_TOO_LARGE);
    assert_eq!(s, before);
    // Replacing an entry does not add one.
    put(&w, &mut s, CERTS, 0, vec![w.array(ALICE, &r, CERTS, 0, b"renewed", 6), append(7)]).unwrap();
    assert_eq!(s.counts_by_kind(), vec![(SIP, 0), (CERTS, 4), (TEST, 0)]);
}

#[test]
fn appends_get_the_next_index_and_still_verify() {
    let w = World::new();
    let mut s = store(&w);
    let r = alice_res();
    put(&w, &mut s, CERTS, 0, vec![w.array(ALICE, &r, CERTS, 5, b"five", 1)]).unwrap();
    put(&w, &mut s, CERTS, 0, vec![w.array(ALICE, &r, CERTS, ArrayEntry::APPEND, b"six", 2)]).unwrap();
    let req = FetchReq {
        resource: r.clone(),
        specifiers: vec![StoredDataSpecifier {
            kind: CERTS,
            generation: 0,
            model: ModelSpecifier::Array(vec![ArrayRange { first: 6, last: 6 }]),
        }],
    };
    let (ans, certs) = s.fetch(&req, wall(T0)).unwrap();
    let v = &ans.kind_responses[0].values[0];
    assert_eq!(v.value, StoredDataValue::Array(ArrayEntry { index: 6, value: DataValue::new(b"six".to_vec()) }));
    let sec = SecurityBlock { certificates: certs, signature: Signature::none() };
    assert_eq!(w.crypto.verify_stored(&r, CERTS, v, &sec, wall(0)).unwrap(), w.alice());
    // Nothing can be appended after index 0xfffffffe.
    put(&w, &mut s, CERTS, 0, vec![w.array(ALICE, &r, CERTS, 0xffff_fffe, b"last", 3)]).unwrap();
    let err = put(&w, &mut s, CERTS, 0, vec![w.array(ALICE, &r, CERTS, ArrayEntry::APPEND, b"x", 4)]);
    assert_eq!(err.unwrap_err().error_code, ErrorCode::DATA_TOO_LARGE);
}

#[test]
fn values_expire_with_their_lifetime_and_take_their_certificates() {
    let w = World::new();
    let mut s = store(&w);
    let r = alice_res();
    put(&w, &mut s, TEST, 0, vec![w.single(ALICE, &r, TEST, b"a", 1)]).unwrap();
    let end = T0 + u64::from(LIFETIME) * 1000;
    assert_eq!(s.next_expiry(), Some(wall(end)));
    // Remaining lifetimes are whole seconds left.
    assert_eq!(single_value(&s, T0 + 10_500).lifetime, LIFETIME - 11);
    assert_eq!(s.expire(wall(end - 1)), 0);
    assert!(single_value(&s, end - 1).value.data_value().unwrap().exists);
    // Past its end a value is gone from answers even before expire() runs.
    assert_eq!(single_value(&s, end), StoredData::nonexistent_single());
    assert_eq!(s.expire(wall(end)), 1);
    assert_eq!(s.next_expiry(), None);
    assert!(s.resources().is_empty());
    assert_eq!(s.certificate_count(), 0);
}

#[test]
fn a_tombstone_keeps_older_values_out_until_it_expires() {
    let w = World::new();
    let mut s = store(&w);
    let r = alice_res();
    let old = w.single(ALICE, &r, TEST, b"a", 1);
    put(&w, &mut s, TEST, 0, vec![old.clone()]).unwrap();
    let mut tomb = w.deleted(ALICE, &r, TEST, old.clone(), 2);
    tomb.lifetime = 2 * LIFETIME;
    TestCrypto::sign(ALICE, &r, TEST, &mut tomb);
    put(&w, &mut s, TEST, 0, vec![tomb.clone()]).unwrap();
    // The deletion is returned as stored: signed, exists = False.
    let got = single_value(&s, T0);
    assert_eq!(got.value.data_value(), Some(&DataValue::nonexistent()));
    assert_eq!(got.signature, tomb.signature);
    // The old value, re-sent by a lagging replica, cannot come back.
    let err = replica(&w, &mut s, TEST, 1, vec![old.clone()]).unwrap_err();
    assert_eq!(err.error_code, ErrorCode::DATA_TOO_OLD);
    // Once the tombstone's own lifetime is over, it goes too.
    assert_eq!(s.expire(wall(T0 + u64::from(2 * LIFETIME) * 1000)), 1);
    assert!(!s.holds(&r, TEST));
}

#[test]
fn replica_store_for_re_stores_with_decremented_lifetimes() {
    let w = World::new();
    let mut s = store(&w);
    let r = alice_res();
    put(&w, &mut s, TEST, 0, vec![w.single(ALICE, &r, TEST, b"a", 1)]).unwrap();
    put(&w, &mut s, SIP, 0, vec![w.dict(ALICE, &r, SIP, &ALICE_NODE.0, b"reg", 1)]).unwrap();
    let later = wall(T0 + 20_000);
    let (req, certs) = s.replica_store_for(&r, 2, later).unwrap();
    assert_eq!(req.replica_number, 2);
    assert_eq!(req.kind_data.iter().map(|k| (k.kind, k.generation_counter)).collect::<Vec<_>>(), [(SIP, 1), (TEST, 1)]);
    assert!(req.kind_data.iter().flat_map(|k| &k.values).all(|v| v.lifetime == LIFETIME - 20));
    assert_eq!(certs, vec![cert(ALICE)]);
    let records: Vec<RecordView> = s.records(later).collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].values, req.kind_data[1].values);
    // Another peer accepts it (the replica flag copies our counters).
    let sec = SecurityBlock { certificates: certs, signature: Signature::none() };
    let token = verify_store(req, &w.bob(), &sec, &w.crypto, &w.kinds, true, later).unwrap();
    let mut other = store(&w);
    other.apply(token, later).unwrap();
    assert_eq!(other.records(later).collect::<Vec<_>>(), records);
    // It holds the values for what was left of their lifetime.
    assert_eq!(other.next_expiry(), Some(wall(T0 + 20_000 + u64::from(LIFETIME - 20) * 1000)));
    assert_eq!(s.replica_store_for(&bob_res(), 1, later), None);
}

#[test]
fn removing_a_resource_releases_everything() {
    let w = World::new();
    let mut s = store(&w);
    let r = alice_res();
    put(&w, &mut s, TEST, 0, vec![w.single(ALICE, &r, TEST, b"a", 1)]).unwrap();
    assert!(s.holds(&r, TEST) && !s.holds(&r, SIP));
    assert_eq!(s.resources(), vec![r.clone()]);
    s.remove_resource(&r);
    assert_eq!(s, store(&w));
}

#[test]
fn kinds_the_store_does_not_know_are_refused() {
    let w = World::new();
    let mut s = DataStore::new(vec![]);
    let r = alice_res();
    let err = put(&w, &mut s, TEST, 0, vec![w.single(ALICE, &r, TEST, b"a", 1)]).unwrap_err();
    assert_eq!(err.parse_unknown_kinds().unwrap(), vec![TEST]);
}

#[test]
fn set_replicas_names_them_in_every_kind() {
    let w = World::new();
    let mut s = store(&w);
    let r = alice_res();
    let mut ans = put(&w, &mut s, TEST, 0, vec![w.single(ALICE, &r, TEST, b"a", 1)]).unwrap();
    set_replicas(&mut ans, &[BOB_NODE]);
    assert_eq!(ans.kind_responses[0].replicas, vec![BOB_NODE]);
}

proptest! {
    /// Against a reference model: a store wins iff it is newer than what
    /// is held (or a replica of exactly it); failures change nothing;
    /// each successful original store adds one to the counter.
    #[test]
    fn dictionary_stores_follow_the_reference(
        ops in proptest::collection::vec((0..2usize, 1..12u64, any::<bool>(), any::<bool>()), 1..24)
    ) {
        let w = World::new();
        let mut s = store(&w);
        let r = alice_res();
        let keys = [ALICE_NODE.0, ALICE_NODE2.0];
        let mut model: BTreeMap<usize, StoredData> = BTreeMap::new();
        let mut generation = 0;
        for (k, time, exists, is_replica) in ops {
            let mut v = w.dict(ALICE, &r, SIP, &keys[k], &time.to_be_bytes(), time);
            if !exists {
                v = w.deleted(ALICE, &r, SIP, v, time);
            }
            let before = s.clone();
            let result = if is_replica {
                replica(&w, &mut s, SIP, generation + 1, vec![v.clone()])
            } else {
                put(&w, &mut s, SIP, 0, vec![v.clone()])
            };
            let held = model.get(&k);
            let wins = held.is_none_or(|h| time > h.storage_time);
            let idempotent = is_replica && held == Some(&v);
            match result {
                Ok(ans) => {
                    prop_assert!(wins || idempotent);
                    generation += 1;
                    prop_assert_eq!(generation_of(&ans), generation);
                    model.insert(k, v);
                }
                Err(e) => {
                    prop_assert!(!wins && !idempotent);
                    prop_assert_eq!(e.error_code, ErrorCode::DATA_TOO_OLD);
                    prop_assert_eq!(&s, &before);
                }
            }
            let got = fetch_all(&s, &r, SIP, ModelSpecifier::Dictionary(vec![]), T0);
            prop_assert_eq!(got, model.values().cloned().collect::<Vec<_>>());
        }
    }
}
