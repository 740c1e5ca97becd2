//! Reading the store: Fetch (RFC 6940 §7.4.2), Stat (§7.4.3) and Find
//! (§7.4.4). Expired values that were not yet purged are never returned.

use sha2::{Digest, Sha256};

use super::store::{CertList, DataStore, EntryKey, Held, KindRecord, Resource};
use crate::time::WallTime;
use crate::wire::error::{ErrorCode, ErrorResponse};
use crate::wire::security_block::GenericCertificate;
use crate::wire::storage::{
    ArrayEntry, ArrayRange, DictionaryEntry, Entry, FetchAns, FetchKindResponse, FetchReq, FindAns, FindKindData,
    FindReq, MetaData, ModelSpecifier, StatAns, StatKindResponse, StatReq, StoredData, StoredDataSpecifier,
    StoredMetaData, StoredMetaDataValue,
};
use crate::wire::{KindId, ResourceId};

/// At most this many missing array entries are synthesized for one
/// specifier: an array's owner may store at indices far apart, and a
/// range across the gap must not turn into billions of answers.
pub const MAX_SYNTHESIZED: usize = 1024;

/// TLS HashAlgorithm sha256(4) (RFC 5246 §7.4.1.4.1), Stat's hash.
const SHA256: u8 = 4;

impl DataStore {
    /// Answers a Fetch (§7.4.2), with the certificates that verify the
    /// values returned (§6.3.4: the answer's security block carries them).
    pub fn fetch(&self, req: &FetchReq, wall: WallTime) -> Result<(FetchAns, Vec<GenericCertificate>), ErrorResponse> {
        self.check_kinds(&req.specifiers)?;
        let mut certs = CertList::default();
        let mut kind_responses = Vec::with_capacity(req.specifiers.len());
        for spec in &req.specifiers {
            let (record, picks) = self.pick(&req.resource, spec, wall)?;
            let values = picks
                .into_iter()
                .map(|p| match p {
                    Pick::Held(h) => {
                        certs.add(&h.certs);
                        h.at(wall)
                    }
                    Pick::Missing(key) => nonexistent(key),
                })
                .collect();
            kind_responses.push(FetchKindResponse { kind: spec.kind, generation: generation(record), values });
        }
        Ok((FetchAns { kind_responses }, certs.resolve(&self.certs)))
    }

    /// Answers a Stat (§7.4.3): Fetch's selection, described by metadata.
    pub fn stat(&self, req: &StatReq, wall: WallTime) -> Result<StatAns, ErrorResponse> {
        self.check_kinds(&req.specifiers)?;
        let mut kind_responses = Vec::with_capacity(req.specifiers.len());
        for spec in &req.specifiers {
            let (record, picks) = self.pick(&req.resource, spec, wall)?;
            let values = picks.into_iter().filter_map(|p| meta(p, wall)).collect();
            kind_responses.push(StatKindResponse { kind: spec.kind, generation: generation(record), values });
        }
        Ok(StatAns { kind_responses })
    }

    /// Answers a Find (§7.4.4): per kind, the first Resource-ID at or after
    /// the requested one (clockwise, wrapping) that we are `responsible`
    /// for and hold an existing value of that kind at; the empty id when
    /// there is none or the kind is unknown. The caller answers
    /// Error_Not_Found instead when not responsible for the requested id.
    /// Values count until [`DataStore::expire`] removes them.
    pub fn find(&self, req: &FindReq, responsible: impl Fn(&ResourceId) -> bool) -> FindAns {
        let results = req
            .kinds
            .iter()
            .map(|kind| {
                let holds = |(id, res): &(&ResourceId, &Resource)| {
                    res.kinds.get(kind).is_some_and(|k| {
                        k.entries.values().any(|h| h.data.value.data_value().is_some_and(|v| v.exists))
                    }) && responsible(id)
                };
                // §7.4.4.2: "0" when nothing is known: the empty Resource-ID.
                let closest = self
                    .resources
                    .range(req.resource.clone()..)
                    .chain(self.resources.range(..req.resource.clone()))
                    .find(holds)
                    .map(|(id, _)| id.clone())
                    .unwrap_or_default();
                FindKindData { kind: *kind, closest }
            })
            .collect();
        FindAns { results }
    }

    /// Unknown kinds are refused, all named at once (§6.3.3.1).
    fn check_kinds(&self, specs: &[StoredDataSpecifier]) -> Result<(), ErrorResponse> {
        let mut unknown: Vec<KindId> = Vec::new();
        for k in specs.iter().map(|s| s.kind) {
            if !self.kinds.contains_key(&k) && !unknown.contains(&k) {
                unknown.push(k);
            }
        }
        if unknown.is_empty() { Ok(()) } else { Err(ErrorResponse::unknown_kinds(&unknown)) }
    }

    /// The record a specifier names and the entries it selects.
    fn pick(
        &self,
        resource: &ResourceId,
        spec: &StoredDataSpecifier,
        wall: WallTime,
    ) -> Result<(Option<&KindRecord>, Vec<Pick<'_>>), ErrorResponse> {
        let model =
            self.kinds.get(&spec.kind).map(|p| p.model).ok_or_else(|| ErrorResponse::unknown_kinds(&[spec.kind]))?;
        let specifier = spec.model.clone().resolve(model).map_err(|e| {
            ErrorResponse::with_reason(ErrorCode::INVALID_MESSAGE, &format!("specifier of {:?}: {e}", spec.kind))
        })?;
        let record = self.resources.get(resource).and_then(|r| r.kinds.get(&spec.kind));
        // §7.4.2.1: the requester already has this generation.
        if spec.generation != 0 && spec.generation == generation(record) {
            return Ok((record, Vec::new()));
        }
        let live = |key: &EntryKey| record.and_then(|r| r.entries.get(key)).filter(|h| h.live(wall));
        let one = |key: EntryKey| live(&key).map_or(Pick::Missing(key), Pick::Held);
        let picks = match specifier {
            ModelSpecifier::Single => vec![one(EntryKey::Single)],
            ModelSpecifier::Array(ranges) => pick_ranges(record, &ranges, wall)?,
            // §7.4.2.1: an empty key list asks for every key.
            ModelSpecifier::Dictionary(keys) if keys.is_empty() => record
                .map(|r| r.entries.values().filter(|h| h.live(wall)).map(Pick::Held).collect())
                .unwrap_or_default(),
            ModelSpecifier::Dictionary(keys) => keys.into_iter().map(|k| one(EntryKey::Key(k))).collect(),
            ModelSpecifier::Raw(_) => {
                return Err(ErrorResponse::with_reason(ErrorCode::INVALID_MESSAGE, "untyped specifier"));
            }
        };
        Ok((record, picks))
    }
}

/// A selected entry: held and live, or asked for and absent.
enum Pick<'a> {
    Held(&'a Held),
    Missing(EntryKey),
}

fn generation(record: Option<&KindRecord>) -> u64 {
    record.map_or(0, |r| r.generation)
}

/// §7.4.2.1: inclusive ranges, `last` = 0xffffffff meaning the end of the
/// array. Arrays are sparse and conceptually end at their last entry
/// (§7.4.1.1), so indices between entries are answered as nonexistent and
/// nothing is synthesized past the end.
fn pick_ranges<'a>(
    record: Option<&'a KindRecord>,
    ranges: &[ArrayRange],
    wall: WallTime,
) -> Result<Vec<Pick<'a>>, ErrorResponse> {
    let Some(record) = record else { return Ok(Vec::new()) };
    let index = |k: &EntryKey| match k {
        EntryKey::Index(i) => Some(*i),
        _ => None,
    };
    let Some(end) = record.entries.iter().rev().filter(|(_, h)| h.live(wall)).find_map(|(k, _)| index(k)) else {
        return Ok(Vec::new());
    };
    let mut picks = Vec::new();
    let mut budget = MAX_SYNTHESIZED;
    for r in ranges {
        let last = r.last.min(end);
        if r.first > last {
            continue;
        }
        let mut next = u64::from(r.first);
        let held = record.entries.range(EntryKey::Index(r.first)..=EntryKey::Index(last));
        for (i, h) in held.filter(|(_, h)| h.live(wall)).filter_map(|(k, h)| Some((index(k)?, h))) {
            fill_missing(&mut picks, next, u64::from(i), &mut budget)?;
            picks.push(Pick::Held(h));
            next = u64::from(i) + 1;
        }
        fill_missing(&mut picks, next, u64::from(last) + 1, &mut budget)?;
    }
    Ok(picks)
}

/// Pushes nonexistent entries for indices `from..to`, within `budget`.
fn fill_missing(picks: &mut Vec<Pick<'_>>, from: u64, to: u64, budget: &mut usize) -> Result<(), ErrorResponse> {
    let n = usize::try_from(to.saturating_sub(from)).unwrap_or(usize::MAX);
    *budget = budget
        .checked_sub(n)
        .ok_or_else(|| ErrorResponse::with_reason(ErrorCode::RESPONSE_TOO_LARGE, "array range spans too many gaps"))?;
    for i in from..to {
        picks.push(Pick::Missing(EntryKey::Index(u32::try_from(i).unwrap_or(u32::MAX))));
    }
    Ok(())
}

/// §7.4.2.2: a requested value that does not exist, signed by nobody.
fn nonexistent(key: EntryKey) -> StoredData {
    match key {
        EntryKey::Single => StoredData::nonexistent_single(),
        EntryKey::Index(i) => StoredData::nonexistent_array(i),
        EntryKey::Key(k) => StoredData::nonexistent_dictionary(k),
    }
}

/// §7.4.3.2: a value's metadata. The hash covers the DataValue's `value`
/// with its 4-byte length prefix. A missing value is described like the
/// nonexistent value Fetch would synthesize: no length, no hash.
fn meta(pick: Pick<'_>, wall: WallTime) -> Option<StoredMetaData> {
    let (storage_time, lifetime, metadata) = match pick {
        Pick::Held(h) => {
            let at = h.at(wall);
            let metadata = match &at.value {
                Entry::Single(v) => Entry::Single(describe(v)),
                Entry::Array(e) => Entry::Array(ArrayEntry { index: e.index, value: describe(&e.value) }),
                Entry::Dictionary(e) => {
                    Entry::Dictionary(DictionaryEntry { key: e.key.clone(), value: describe(&e.value) })
                }
                Entry::Raw(_) => return None,
            };
            (at.storage_time, at.lifetime, metadata)
        }
        Pick::Missing(key) => (0, 0, missing_meta(key)),
    };
    Some(StoredMetaData { storage_time, lifetime, metadata })
}

fn describe(v: &crate::wire::storage::DataValue) -> MetaData {
    let len = u32::try_from(v.value.len()).unwrap_or(u32::MAX);
    let hash_value = Sha256::new().chain_update(len.to_be_bytes()).chain_update(&v.value).finalize().to_vec();
    MetaData { exists: v.exists, value_length: len, hash_algorithm: SHA256, hash_value }
}

fn missing_meta(key: EntryKey) -> StoredMetaDataValue {
    let none = MetaData { exists: false, value_length: 0, hash_algorithm: 0, hash_value: Vec::new() };
    match key {
        EntryKey::Single => Entry::Single(none),
        EntryKey::Index(index) => Entry::Array(ArrayEntry { index, value: none }),
        EntryKey::Key(key) => Entry::Dictionary(DictionaryEntry { key, value: none }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testing::*;
    use crate::wire::NodeId;
    use crate::wire::storage::{StoreAns, StoredDataValue};

    fn spec(kind: KindId, generation: u64, model: ModelSpecifier) -> StoredDataSpecifier {
        StoredDataSpecifier { kind, generation, model }
    }

    fn fetch(s: &DataStore, specs: Vec<StoredDataSpecifier>) -> Result<FetchAns, ErrorResponse> {
        s.fetch(&FetchReq { resource: alice_res(), specifiers: specs }, wall(T0)).map(|(a, _)| a)
    }

    fn ranges(r: &[(u32, u32)]) -> ModelSpecifier {
        ModelSpecifier::Array(r.iter().map(|&(first, last)| ArrayRange { first, last }).collect())
    }

    fn put(w: &World, s: &mut DataStore, kind: KindId, values: Vec<StoredData>) -> StoreAns {
        s.apply(w.token(w.store_req(alice_res(), kind, values), &w.alice()), wall(T0)).unwrap()
    }

    /// Alice's array with entries at 0, 1 and 4.
    fn with_array(w: &World) -> DataStore {
        let mut s = DataStore::new(w.kinds.clone());
        let r = alice_res();
        let vals = [(0, b"c0"), (1, b"c1"), (4, b"c4")].map(|(i, v)| w.array(ALICE, &r, CERTS, i, v, 1));
        put(w, &mut s, CERTS, vals.to_vec());
        s
    }

    fn indices(values: &[StoredData]) -> Vec<(u32, bool)> {
        values
            .iter()
            .map(|v| match &v.value {
                StoredDataValue::Array(e) => (e.index, e.value.exists),
                other => panic!("not an array entry: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn missing_single_values_are_synthesized() {
        let w = World::new();
        let s = DataStore::new(w.kinds.clone());
        let ans = fetch(&s, vec![spec(TEST, 0, ModelSpecifier::Single)]).unwrap();
        assert_eq!(
            ans.kind_responses,
            vec![FetchKindResponse { kind: TEST, generation: 0, values: vec![StoredData::nonexistent_single()] }]
        );
    }

    #[test]
    fn array_ranges_fill_gaps_and_stop_at_the_end() {
        let w = World::new();
        let s = with_array(&w);
        let got =
            |r: &[(u32, u32)]| indices(&fetch(&s, vec![spec(CERTS, 0, ranges(r))]).unwrap().kind_responses[0].values);
        let all = vec![(0, true), (1, true), (2, false), (3, false), (4, true)];
        assert_eq!(got(&[(0, 0xffff_ffff)]), all);
        assert_eq!(got(&[(0, 100)]), all, "nothing past the last entry");
        assert_eq!(got(&[(1, 2)]), vec![(1, true), (2, false)]);
        assert_eq!(got(&[(4, 4), (0, 0)]), vec![(4, true), (0, true)]);
        assert_eq!(got(&[(5, 0xffff_ffff), (3, 1)]), vec![]);
        // Values come back with their index and signature.
        let v = &fetch(&s, vec![spec(CERTS, 0, ranges(&[(4, 4)]))]).unwrap().kind_responses[0].values[0];
        assert_eq!(v, &StoredData { lifetime: LIFETIME, ..w.array(ALICE, &alice_res(), CERTS, 4, b"c4", 1) });
    }

    #[test]
    fn huge_gaps_are_not_synthesized() {
        let w = World::new();
        let mut s = with_array(&w);
        put(&w, &mut s, CERTS, vec![w.array(ALICE, &alice_res(), CERTS, 0xffff_0000, b"far", 2)]);
        let err = fetch(&s, vec![spec(CERTS, 0, ranges(&[(0, 0xffff_ffff)]))]).unwrap_err();
        assert_eq!(err.error_code, ErrorCode::RESPONSE_TOO_LARGE);
        // Ranges around the gap are fine.
        let ans = fetch(&s, vec![spec(CERTS, 0, ranges(&[(0xffff_0000, 0xffff_ffff)]))]).unwrap();
        assert_eq!(indices(&ans.kind_responses[0].values), vec![(0xffff_0000, true)]);
    }

    #[test]
    fn dictionaries_return_all_or_the_keys_asked_for() {
        let w = World::new();
        let mut s = DataStore::new(w.kinds.clone());
        let r = alice_res();
        let a = w.dict(ALICE, &r, SIP, &ALICE_NODE.0, b"one", 1);
        let b = w.dict(ALICE, &r, SIP, &ALICE_NODE2.0, b"two", 1);
        put(&w, &mut s, SIP, vec![b.clone(), a.clone()]);
        let all = fetch(&s, vec![spec(SIP, 0, ModelSpecifier::Dictionary(vec![]))]).unwrap();
        assert_eq!(all.kind_responses[0].values, vec![a.clone(), b.clone()], "in key order");
        let missing = NodeId([0xcc; 16]).0.to_vec();
        let some =
            fetch(&s, vec![spec(SIP, 0, ModelSpecifier::Dictionary(vec![ALICE_NODE2.0.to_vec(), missing.clone()]))]);
        assert_eq!(some.unwrap().kind_responses[0].values, vec![b, StoredData::nonexistent_dictionary(missing)]);
    }

    #[test]
    fn a_matching_generation_returns_no_values() {
        let w = World::new();
        let s = with_array(&w);
        let model = ranges(&[(0, 0xffff_ffff)]);
        let same = fetch(&s, vec![spec(CERTS, 1, model.clone())]).unwrap();
        assert_eq!(same.kind_responses, vec![FetchKindResponse { kind: CERTS, generation: 1, values: vec![] }]);
        let older = fetch(&s, vec![spec(CERTS, 7, model)]).unwrap();
        assert_eq!(older.kind_responses[0].values.len(), 5);
    }

    #[test]
    fn fetch_carries_the_signers_certificates() {
        let w = World::new();
        let s = with_array(&w);
        let req = FetchReq { resource: alice_res(), specifiers: vec![spec(CERTS, 0, ranges(&[(0, 0)]))] };
        assert_eq!(s.fetch(&req, wall(T0)).unwrap().1, vec![cert(ALICE)]);
        let req = FetchReq { resource: alice_res(), specifiers: vec![spec(CERTS, 0, ranges(&[(2, 3)]))] };
        assert_eq!(s.fetch(&req, wall(T0)).unwrap().1, vec![], "synthesized values need no certificate");
    }

    #[test]
    fn unknown_kinds_and_wrong_specifiers_are_refused() {
        let w = World::new();
        let s = with_array(&w);
        let unknown = [KindId(0xF000_0050), KindId(0xF000_0051)];
        let specs = vec![
            spec(unknown[0], 0, ModelSpecifier::Single),
            spec(CERTS, 0, ranges(&[])),
            spec(unknown[1], 0, ModelSpecifier::Single),
        ];
        let err = fetch(&s, specs).unwrap_err();
        assert_eq!(err.parse_unknown_kinds().unwrap(), unknown.to_vec());
        let err = fetch(&s, vec![spec(CERTS, 0, ModelSpecifier::Single)]).unwrap_err();
        assert_eq!(err.error_code, ErrorCode::INVALID_MESSAGE);
        // A raw specifier is typed with the kind's model.
        let ans = fetch(&s, vec![spec(CERTS, 0, ModelSpecifier::Raw(vec![0, 8, 0, 0, 0, 4, 0, 0, 0, 4]))]).unwrap();
        assert_eq!(indices(&ans.kind_responses[0].values), vec![(4, true)]);
    }

    #[test]
    fn stat_hashes_the_value_with_its_length() {
        let w = World::new();
        let mut s = DataStore::new(w.kinds.clone());
        let r = alice_res();
        put(&w, &mut s, TEST, vec![w.single(ALICE, &r, TEST, b"hi", 9)]);
        let req = StatReq { resource: r, specifiers: vec![spec(TEST, 0, ModelSpecifier::Single)] };
        let ans = s.stat(&req, wall(T0 + 1000)).unwrap();
        // SHA-256(00000002 ‖ "hi"), computed independently.
        let hash = hex::decode("9433d14ce5c09a74447607c173c9639bc5aa660876624d57454dec7b2b60822b").unwrap();
        let meta = MetaData { exists: true, value_length: 2, hash_algorithm: 4, hash_value: hash };
        assert_eq!(
            ans.kind_responses,
            vec![StatKindResponse {
                kind: TEST,
                generation: 1,
                values: vec![StoredMetaData { storage_time: 9, lifetime: LIFETIME - 1, metadata: Entry::Single(meta) }],
            }]
        );
        // A missing dictionary key is described as nonexistent.
        let req = StatReq {
            resource: alice_res(),
            specifiers: vec![spec(SIP, 0, ModelSpecifier::Dictionary(vec![vec![1]]))],
        };
        let ans = s.stat(&req, wall(T0)).unwrap();
        let none = MetaData { exists: false, value_length: 0, hash_algorithm: 0, hash_value: vec![] };
        assert_eq!(
            ans.kind_responses[0].values[0].metadata,
            Entry::Dictionary(DictionaryEntry { key: vec![1], value: none })
        );
    }

    #[test]
    fn find_returns_the_next_held_resource_in_range() {
        let w = World::new();
        let mut s = DataStore::new(w.kinds.clone());
        let (a, b) = (alice_res(), bob_res());
        put(&w, &mut s, TEST, vec![w.single(ALICE, &a, TEST, b"a", 1)]);
        let bob_req = w.store_req(b.clone(), TEST, vec![w.single(BOB, &b, TEST, b"b", 1)]);
        s.apply(w.token(bob_req, &w.bob()), wall(T0)).unwrap();
        let (lo, hi) = if a < b { (a.clone(), b.clone()) } else { (b.clone(), a.clone()) };
        let everything = |_: &ResourceId| true;
        let find = |from: &ResourceId, kinds: Vec<KindId>, resp: &dyn Fn(&ResourceId) -> bool| {
            s.find(&FindReq { resource: from.clone(), kinds }, resp).results
        };
        let closest =
            |from: &ResourceId, resp: &dyn Fn(&ResourceId) -> bool| find(from, vec![TEST], resp)[0].closest.clone();
        assert_eq!(closest(&lo, &everything), lo, "at or after the requested id");
        let mut after_lo = lo.0.clone();
        *after_lo.last_mut().unwrap() += 1;
        assert_eq!(closest(&ResourceId(after_lo), &everything), hi);
        // Past the last one it wraps around the ring.
        assert_eq!(closest(&ResourceId(vec![0xff; 16]), &everything), lo);
        // Only resources in our range count.
        assert_eq!(closest(&lo, &|r: &ResourceId| *r == hi), hi);
        // No such data, and unknown kinds: the empty id.
        let results = find(&lo, vec![SIP, KindId(0xF000_0050)], &everything);
        assert!(results.iter().all(|r| r.closest == ResourceId::default()));
        // Deleted values are not found.
        let old = w.single(ALICE, &a, TEST, b"a", 1);
        put(&w, &mut s, TEST, vec![w.deleted(ALICE, &a, TEST, old, 2)]);
        let req = FindReq { resource: ResourceId(vec![0; 16]), kinds: vec![TEST] };
        assert_eq!(s.find(&req, everything).results[0].closest, b);
    }
}
