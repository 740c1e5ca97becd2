//! The data store (RFC 6940 §7): the values a peer holds per Resource-ID
//! and kind, the stateful checks of §7.4.1.1, lifetimes, and the views
//! replication and data migration need. Fetch, Stat and Find are in
//! `query.rs`.
//!
//! Every change to a resource is computed on a copy and swapped in only
//! when it all succeeded, which makes a StoreReq atomic (§7.4.1.1).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::certs::{CertKey, CertPool, cert_key};
use super::policy::KindPolicy;
use super::verify::{VerifiedKind, VerifiedStore};
use crate::time::WallTime;
use crate::wire::error::{ErrorCode, ErrorResponse};
use crate::wire::security_block::GenericCertificate;
use crate::wire::storage::{
    ArrayEntry, StoreAns, StoreKindData, StoreKindResponse, StoreReq, StoredData, StoredDataValue,
};
use crate::wire::{Codec, KindId, ResourceId};

/// What a peer stores for others, keyed by Resource-ID then kind.
/// Two stores are equal when they hold the same things (the change
/// counter `version` is not part of that).
#[derive(Debug, Clone)]
pub struct DataStore {
    pub(super) kinds: BTreeMap<KindId, KindPolicy>,
    pub(super) resources: BTreeMap<ResourceId, Resource>,
    /// Each resource under its earliest expiry, for [`DataStore::expire`].
    expiry: BTreeSet<(WallTime, ResourceId)>,
    pub(super) certs: CertPool,
    /// Bumped on every change: lets a runtime skip persisting an unchanged store.
    version: u64,
}

impl PartialEq for DataStore {
    fn eq(&self, other: &Self) -> bool {
        self.kinds == other.kinds
            && self.resources == other.resources
            && self.expiry == other.expiry
            && self.certs == other.certs
    }
}

impl Eq for DataStore {}

/// One kind's values at one resource, as replication re-sends them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordView {
    pub resource: ResourceId,
    pub kind: KindId,
    pub generation: u64,
    /// Live values, each with the lifetime it has left (§7.4.1).
    pub values: Vec<StoredData>,
}

impl DataStore {
    /// A store accepting the kinds of the overlay configuration.
    pub fn new(kinds: Vec<KindPolicy>) -> Self {
        DataStore {
            kinds: kinds.into_iter().map(|k| (k.kind, k)).collect(),
            resources: BTreeMap::new(),
            expiry: BTreeSet::new(),
            certs: CertPool::default(),
            version: 0,
        }
    }

    /// A number that changes whenever what is held changes.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn policy(&self, kind: KindId) -> Option<&KindPolicy> {
        self.kinds.get(&kind)
    }

    /// Applies a verified StoreReq: the stateful checks of §7.4.1.1, all
    /// kinds or none. The answer's `replicas` lists are empty; the caller,
    /// who knows where it replicates, fills them ([`super::set_replicas`]).
    ///
    /// Replication re-sends values a peer may already hold: a replica
    /// store of a value identical to the one held (same storage_time,
    /// value and signature) is accepted and changes nothing, where an
    /// original store of it would be Error_Data_Too_Old.
    pub fn apply(&mut self, token: VerifiedStore, wall: WallTime) -> Result<StoreAns, ErrorResponse> {
        let (resource, replica_number, kinds) = token.into_parts();
        let unknown: Vec<KindId> = kinds.iter().map(|k| k.kind).filter(|k| !self.kinds.contains_key(k)).collect();
        if !unknown.is_empty() {
            return Err(ErrorResponse::unknown_kinds(&unknown));
        }
        let replica = replica_number > 0;
        let mut next = self.resources.get(&resource).cloned().unwrap_or_default();
        next.purge(wall);
        // §7.4.1.1: a non-zero counter in an original store must equal
        // ours (like an HTTP ETag); replica stores are not checked.
        if !replica && kinds.iter().any(|k| k.generation != 0 && k.generation != next.generation(k.kind)) {
            return Err(generation_too_low(&next, &kinds));
        }
        let order: Vec<KindId> = kinds.iter().map(|k| k.kind).collect();
        let mut offered = Vec::new();
        for k in kinds {
            let Some(policy) = self.kinds.get(&k.kind) else {
                return Err(ErrorResponse::unknown_kinds(&[k.kind]));
            };
            merge(next.kinds.entry(k.kind).or_default(), k, policy, replica, wall, &mut offered)?;
        }
        // A kind whose request carried no values leaves no empty record.
        next.kinds.retain(|_, rec| !rec.entries.is_empty());
        let answer = StoreAns {
            kind_responses: order
                .into_iter()
                .map(|kind| StoreKindResponse { kind, generation_counter: next.generation(kind), replicas: vec![] })
                .collect(),
        };
        for (key, cert) in &offered {
            self.certs.offer(*key, cert);
        }
        self.put(resource, next);
        for (key, _) in &offered {
            self.certs.prune(key);
        }
        Ok(answer)
    }

    /// Drops every value whose lifetime ended at or before `wall`;
    /// returns how many. Tombstones go too, once their own lifetime ends.
    pub fn expire(&mut self, wall: WallTime) -> usize {
        let due: Vec<ResourceId> = self.expiry.iter().take_while(|(t, _)| *t <= wall).map(|(_, r)| r.clone()).collect();
        let mut removed = 0;
        for r in due {
            if let Some(mut res) = self.resources.get(&r).cloned() {
                removed += res.purge(wall);
                self.put(r, res);
            }
        }
        removed
    }

    /// When the next value expires: the caller's timer.
    pub fn next_expiry(&self) -> Option<WallTime> {
        self.expiry.first().map(|(t, _)| *t)
    }

    /// Every (resource, kind) with live values, in order, lifetimes as of `wall`.
    pub fn records(&self, wall: WallTime) -> impl Iterator<Item = RecordView> + '_ {
        self.resources.iter().flat_map(move |(resource, res)| {
            res.kinds.iter().filter_map(move |(kind, rec)| {
                let values = rec.live_values(wall);
                (!values.is_empty()).then(|| RecordView {
                    resource: resource.clone(),
                    kind: *kind,
                    generation: rec.generation,
                    values,
                })
            })
        })
    }

    /// The StoreReq that copies everything held at `resource` to another
    /// peer (replication §10.4, handover §10.5/§10.9), and the certificates
    /// its values' signatures need. Lifetimes are what is left (§7.4.1:
    /// decremented by the time held); counters are ours, which replica
    /// stores copy. `None` when nothing live is held there.
    pub fn replica_store_for(
        &self,
        resource: &ResourceId,
        replica_number: u8,
        wall: WallTime,
    ) -> Option<(StoreReq, Vec<GenericCertificate>)> {
        let res = self.resources.get(resource)?;
        let mut certs = CertList::default();
        let kind_data: Vec<StoreKindData> = res
            .kinds
            .iter()
            .filter_map(|(kind, rec)| {
                let live: Vec<&Held> = rec.entries.values().filter(|h| h.live(wall)).collect();
                live.iter().for_each(|h| certs.add(&h.certs));
                let values: Vec<StoredData> = live.iter().map(|h| h.at(wall)).collect();
                (!values.is_empty()).then_some(StoreKindData {
                    kind: *kind,
                    generation_counter: rec.generation,
                    values,
                })
            })
            .collect();
        if kind_data.is_empty() {
            return None;
        }
        Some((StoreReq { resource: resource.clone(), replica_number, kind_data }, certs.resolve(&self.certs)))
    }

    /// Forgets a resource (handed over to its new responsible peer).
    pub fn remove_resource(&mut self, resource: &ResourceId) {
        self.put(resource.clone(), Resource::default());
    }

    /// Whether anything (live or not yet expired away) is held for `kind` at `resource`.
    pub fn holds(&self, resource: &ResourceId, kind: KindId) -> bool {
        self.resources.get(resource).is_some_and(|r| r.kinds.contains_key(&kind))
    }

    /// Values held per configured kind (tombstones included), in kind order.
    pub fn counts_by_kind(&self) -> Vec<(KindId, usize)> {
        self.kinds
            .keys()
            .map(|kind| {
                let n = self.resources.values().filter_map(|r| r.kinds.get(kind)).map(|k| k.entries.len()).sum();
                (*kind, n)
            })
            .collect()
    }

    /// Every Resource-ID held, in order.
    pub fn resources(&self) -> Vec<ResourceId> {
        self.resources.keys().cloned().collect()
    }

    /// How many distinct signer certificates are kept.
    pub fn certificate_count(&self) -> usize {
        self.certs.len()
    }

    /// Swaps in a resource's new contents, keeping the expiry index and
    /// the certificate counts in step. Every change goes through here.
    fn put(&mut self, resource: ResourceId, new: Resource) {
        self.version = self.version.wrapping_add(1);
        // Count the new references first, so a certificate shared by old
        // and new values is never dropped in between.
        new.cert_keys().for_each(|k| self.certs.retain(k));
        if let Some(old) = self.resources.remove(&resource) {
            old.cert_keys().for_each(|k| self.certs.release(k));
            if let Some(t) = old.next_expiry() {
                self.expiry.remove(&(t, resource.clone()));
            }
        }
        if let Some(t) = new.next_expiry() {
            self.expiry.insert((t, resource.clone()));
            self.resources.insert(resource, new);
        }
    }
}

/// Everything held at one Resource-ID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Resource {
    pub(super) kinds: BTreeMap<KindId, KindRecord>,
}

/// One kind at one resource: its generation counter and entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct KindRecord {
    pub(super) generation: u64,
    pub(super) entries: BTreeMap<EntryKey, Held>,
}

/// Where an entry sits in its kind's model (§7.2).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum EntryKey {
    Single,
    Index(u32),
    Key(Vec<u8>),
}

/// A stored value, when it expires, and the certificates it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Held {
    /// As received, array index assigned; `lifetime` is the one it came with.
    pub(super) data: StoredData,
    /// §7: lifetime counts from receipt.
    pub(super) expires: WallTime,
    pub(super) certs: Vec<CertKey>,
}

impl Held {
    pub(super) fn live(&self, wall: WallTime) -> bool {
        self.expires > wall
    }

    /// The value with the whole seconds of lifetime it has left.
    pub(super) fn at(&self, wall: WallTime) -> StoredData {
        let left = self.expires.saturating_duration_since(wall).as_secs();
        StoredData { lifetime: u32::try_from(left).unwrap_or(u32::MAX), ..self.data.clone() }
    }
}

impl Resource {
    pub(super) fn generation(&self, kind: KindId) -> u64 {
        self.kinds.get(&kind).map_or(0, |k| k.generation)
    }

    /// Removes expired entries, and kinds left empty; returns how many went.
    fn purge(&mut self, wall: WallTime) -> usize {
        let mut removed = 0;
        for rec in self.kinds.values_mut() {
            let before = rec.entries.len();
            rec.entries.retain(|_, h| h.live(wall));
            removed += before - rec.entries.len();
        }
        self.kinds.retain(|_, rec| !rec.entries.is_empty());
        removed
    }

    fn next_expiry(&self) -> Option<WallTime> {
        self.kinds.values().flat_map(|k| k.entries.values()).map(|h| h.expires).min()
    }

    fn cert_keys(&self) -> impl Iterator<Item = &CertKey> {
        self.kinds.values().flat_map(|k| k.entries.values()).flat_map(|h| h.certs.iter())
    }
}

impl KindRecord {
    fn live_values(&self, wall: WallTime) -> Vec<StoredData> {
        self.entries.values().filter(|h| h.live(wall)).map(|h| h.at(wall)).collect()
    }

    /// §7.4.1.1 array store at 0xffffffff: the index after the last one.
    fn append_index(&self) -> Option<u32> {
        let last = self.entries.keys().rev().find_map(|k| match k {
            EntryKey::Index(i) => Some(*i),
            _ => None,
        });
        match last {
            None => Some(0),
            Some(i) => i.checked_add(1).filter(|n| *n != ArrayEntry::APPEND),
        }
    }
}

/// Merges one kind's verified values into its record (§7.4.1.1).
fn merge(
    record: &mut KindRecord,
    kind: VerifiedKind,
    policy: &KindPolicy,
    replica: bool,
    wall: WallTime,
    offered: &mut Vec<(CertKey, GenericCertificate)>,
) -> Result<(), ErrorResponse> {
    let VerifiedKind { kind, generation, values } = kind;
    let mut changed = false;
    for v in values {
        let mut data = v.data;
        let key = match &mut data.value {
            StoredDataValue::Single(_) => EntryKey::Single,
            StoredDataValue::Array(e) => {
                if e.index == ArrayEntry::APPEND {
                    e.index = record.append_index().ok_or_else(|| too_large(kind, "the array is full"))?;
                }
                EntryKey::Index(e.index)
            }
            StoredDataValue::Dictionary(e) => EntryKey::Key(e.key.clone()),
            StoredDataValue::Raw(_) => return Err(error(ErrorCode::INVALID_MESSAGE, kind, "untyped value")),
        };
        if let Some(old) = record.entries.get(&key) {
            let same = old.data.storage_time == data.storage_time
                && old.data.value == data.value
                && old.data.signature == data.signature;
            if replica && same {
                continue;
            }
            // §7.4.1.1: a value replaces only an older one.
            if data.storage_time <= old.data.storage_time {
                return Err(error(ErrorCode::DATA_TOO_OLD, kind, "storage_time not newer than the stored value"));
            }
        }
        let certs = v
            .certs
            .into_iter()
            .map(|c| {
                let k = cert_key(&c);
                offered.push((k, c));
                k
            })
            .collect();
        let expires = wall.saturating_add(Duration::from_secs(u64::from(data.lifetime)));
        record.entries.insert(key, Held { data, expires, certs });
        changed = true;
    }
    // §7.4.1.1 max-count, after merging; tombstones count, so deleted
    // entries cannot pile up beyond what the kind allows.
    if record.entries.len() > usize::try_from(policy.max_count).unwrap_or(usize::MAX) {
        return Err(too_large(kind, "more values than the kind's max-count"));
    }
    // §7.4.1.1: replica stores copy the counter (which they must not send
    // as 0); a store that changed data increments it, so every stored
    // counter is ≥ 1.
    if replica && generation != 0 {
        record.generation = generation;
    } else if changed {
        record.generation = record.generation.saturating_add(1);
    }
    Ok(())
}

/// §7.4.1.2: Error_Generation_Counter_Too_Low carries a StoreAns with the
/// current counters of the request's kinds and empty replica lists.
fn generation_too_low(current: &Resource, kinds: &[VerifiedKind]) -> ErrorResponse {
    let ans = StoreAns {
        kind_responses: kinds
            .iter()
            .map(|k| StoreKindResponse {
                kind: k.kind,
                generation_counter: current.generation(k.kind),
                replicas: vec![],
            })
            .collect(),
    };
    ErrorResponse { error_code: ErrorCode::GENERATION_COUNTER_TOO_LOW, error_info: ans.to_bytes().unwrap_or_default() }
}

fn error(code: ErrorCode, kind: KindId, why: &str) -> ErrorResponse {
    ErrorResponse::with_reason(code, &format!("{kind:?}: {why}"))
}

fn too_large(kind: KindId, why: &str) -> ErrorResponse {
    error(ErrorCode::DATA_TOO_LARGE, kind, why)
}

/// Certificates named by a set of values: each once, in first-seen order.
#[derive(Default)]
pub(super) struct CertList {
    keys: Vec<CertKey>,
    seen: BTreeSet<CertKey>,
}

impl CertList {
    pub(super) fn add(&mut self, keys: &[CertKey]) {
        for k in keys {
            if self.seen.insert(*k) {
                self.keys.push(*k);
            }
        }
    }

    pub(super) fn resolve(&self, pool: &CertPool) -> Vec<GenericCertificate> {
        self.keys.iter().filter_map(|k| pool.get(k).cloned()).collect()
    }
}
