//! The data storage structures (RFC 6940 §7): stored values and the
//! Store, Fetch, Stat and Find bodies that carry them.
//!
//! A value's data model is not on the wire (§7.2): it is part of the kind's
//! definition. Decoding therefore needs the kind's model. The standard kinds'
//! models are built in ([`DataModel::for_known_kind`], used by the `Codec`
//! impls); the configuration's kinds come in through the `decode_with`
//! functions. A value whose kind has no known model stays `Raw`, re-encodes
//! byte for byte, and `resolve` types it once the model is known.

use super::codec::{Codec, Reader, WireError, Writer, get_vec, put_vec};
use super::security_block::Signature;
use super::types::{KindId, NodeId, ResourceId};

/// How a kind organises its values (§7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataModel {
    /// §7.2.1: one value per (resource, kind).
    Single,
    /// §7.2.2: a sparse array indexed by `uint32`.
    Array,
    /// §7.2.3: a map from opaque keys to values.
    Dictionary,
}

impl DataModel {
    /// The model of a kind whose definition this implementation knows.
    pub fn for_known_kind(kind: KindId) -> Option<DataModel> {
        match kind {
            // RFC 7904 §3.2: one dictionary entry per registering Node-ID.
            KindId::SIP_REGISTRATION => Some(DataModel::Dictionary),
            // §9: a single TurnServer per H(Node-ID ‖ d).
            KindId::TURN_SERVICE => Some(DataModel::Single),
            // §8: arrays, so a renewed certificate can be appended.
            KindId::CERTIFICATE_BY_NODE | KindId::CERTIFICATE_BY_USER => Some(DataModel::Array),
            KindId::CHORDPHONE_TEST => Some(DataModel::Single),
            _ => None,
        }
    }
}

/// A kind → model table: [`DataModel::for_known_kind`], or one that also
/// consults the overlay configuration.
pub type ModelLookup<'a> = &'a dyn Fn(KindId) -> Option<DataModel>;

/// `DataValue` (§7.2.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataValue {
    pub exists: bool,
    pub value: Vec<u8>,
}

impl DataValue {
    /// A value that exists.
    pub fn new(value: Vec<u8>) -> Self {
        DataValue { exists: true, value }
    }

    /// §7.4.1.3: a deletion (and §7.4.2.2: a missing value) is
    /// `exists = False` with an empty value.
    pub fn nonexistent() -> Self {
        DataValue { exists: false, value: Vec::new() }
    }
}

/// `ArrayEntry` (§7.2.2); with [`MetaData`] inside it is `ArrayEntryMeta` (§7.4.3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayEntry<V = DataValue> {
    pub index: u32,
    pub value: V,
}

impl ArrayEntry {
    /// §7.2.2: storing at index 0xffffffff appends after the last entry.
    pub const APPEND: u32 = 0xffff_ffff;
}

/// `DictionaryEntry` (§7.2.3), keyed by `opaque DictionaryKey<0..2^16-1>`;
/// with [`MetaData`] inside it is `DictionaryEntryMeta` (§7.4.3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DictionaryEntry<V = DataValue> {
    pub key: Vec<u8>,
    pub value: V,
}

/// One entry of a (resource, kind), shaped by the kind's model: the
/// `select (model)` of `StoredDataValue` (§7.2) and of `MetaDataValue`
/// (§7.4.3.2), which differ only in what each entry carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry<V> {
    Single(V),
    Array(ArrayEntry<V>),
    Dictionary(DictionaryEntry<V>),
    /// The undecoded bytes of an entry whose kind's model is unknown. Inside
    /// a [`StoredData`] decoded that way they run to the end of the
    /// StoredData, signature included: the RFC puts no length between the
    /// value and its signature, so only the model can split them.
    Raw(Vec<u8>),
}

/// `StoredDataValue` (§7.2).
pub type StoredDataValue = Entry<DataValue>;
/// `MetaDataValue` (§7.4.3.2).
pub type StoredMetaDataValue = Entry<MetaData>;
/// `ArrayEntryMeta` (§7.4.3.2).
pub type ArrayEntryMeta = ArrayEntry<MetaData>;
/// `DictionaryEntryMeta` (§7.4.3.2).
pub type DictionaryEntryMeta = DictionaryEntry<MetaData>;

impl<V: Codec> Entry<V> {
    /// Decodes one entry of the given model.
    pub fn decode_as(r: &mut Reader<'_>, model: DataModel) -> Result<Self, WireError> {
        Ok(match model {
            DataModel::Single => Entry::Single(V::decode(r)?),
            DataModel::Array => Entry::Array(ArrayEntry { index: r.u32("array index")?, value: V::decode(r)? }),
            DataModel::Dictionary => {
                let key = r.opaque(2, "dictionary key")?.to_vec();
                Entry::Dictionary(DictionaryEntry { key, value: V::decode(r)? })
            }
        })
    }

    pub fn encode(&self, w: &mut Writer) {
        match self {
            Entry::Single(v) => v.encode(w),
            Entry::Array(e) => {
                w.u32(e.index);
                e.value.encode(w);
            }
            Entry::Dictionary(e) => {
                w.opaque(2, "dictionary key", &e.key);
                e.value.encode(w);
            }
            Entry::Raw(b) => w.bytes(b),
        }
    }

    /// Exactly the bytes this entry occupies on the wire: for a value, the
    /// `StoredDataValue` a stored-data signature covers (§7.1).
    pub fn to_bytes(&self) -> Result<Vec<u8>, WireError> {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.finish()
    }

    /// The model this entry was decoded as; `None` while still raw.
    pub fn model(&self) -> Option<DataModel> {
        match self {
            Entry::Single(_) => Some(DataModel::Single),
            Entry::Array(_) => Some(DataModel::Array),
            Entry::Dictionary(_) => Some(DataModel::Dictionary),
            Entry::Raw(_) => None,
        }
    }

    /// What the entry carries, whatever its model.
    pub fn inner(&self) -> Option<&V> {
        match self {
            Entry::Single(v) => Some(v),
            Entry::Array(e) => Some(&e.value),
            Entry::Dictionary(e) => Some(&e.value),
            Entry::Raw(_) => None,
        }
    }

    /// Types a raw entry (exactly one entry, no signature) now that the
    /// configuration gives the kind's model.
    pub fn resolve(self, model: DataModel) -> Result<Self, WireError> {
        match self {
            Entry::Raw(bytes) => {
                let mut r = Reader::new(&bytes);
                let v = Entry::decode_as(&mut r, model)?;
                r.finish("stored data value")?;
                Ok(v)
            }
            typed => check_model(typed.model(), model).map(|()| typed),
        }
    }
}

impl Entry<DataValue> {
    /// The `DataValue` inside a typed entry.
    pub fn data_value(&self) -> Option<&DataValue> {
        self.inner()
    }
}

/// `StoredData` (§7): `length(4)` covers everything after itself; it is
/// computed on encode and must match exactly on decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredData {
    /// Milliseconds since the Unix epoch, set by the storing node (§7).
    pub storage_time: u64,
    /// Seconds, counted from receipt (§7).
    pub lifetime: u32,
    pub value: StoredDataValue,
    /// Ignored on encode while `value` is `Raw` (the raw bytes already hold
    /// the signature); [`Signature::none`] after decoding a raw value.
    pub signature: Signature,
}

impl StoredData {
    /// Decodes a StoredData whose kind has the given model (`None`: keep raw).
    pub fn decode_with(r: &mut Reader<'_>, model: Option<DataModel>) -> Result<Self, WireError> {
        let mut body = r.sub(4, "stored data")?;
        let storage_time = body.u64("storage time")?;
        let lifetime = body.u32("lifetime")?;
        let (value, signature) = match model {
            Some(m) => (StoredDataValue::decode_as(&mut body, m)?, Signature::decode(&mut body)?),
            None => (StoredDataValue::Raw(body.bytes(body.remaining(), "stored data")?.to_vec()), Signature::none()),
        };
        body.finish("stored data")?;
        Ok(StoredData { storage_time, lifetime, value, signature })
    }

    /// Decodes a StoredData of `kind`, using the built-in model table.
    pub fn decode_for(r: &mut Reader<'_>, kind: KindId) -> Result<Self, WireError> {
        Self::decode_with(r, DataModel::for_known_kind(kind))
    }

    pub fn encode(&self, w: &mut Writer) {
        w.vec(4, "stored data", |w| {
            w.u64(self.storage_time);
            w.u32(self.lifetime);
            self.value.encode(w);
            if self.value.model().is_some() {
                self.signature.encode(w);
            }
        });
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, WireError> {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.finish()
    }

    /// Splits a raw value into its entry and signature with the model the
    /// configuration supplies.
    pub fn resolve(self, model: DataModel) -> Result<StoredData, WireError> {
        let StoredData { storage_time, lifetime, value, signature } = self;
        match value {
            StoredDataValue::Raw(bytes) => {
                let mut r = Reader::new(&bytes);
                let value = StoredDataValue::decode_as(&mut r, model)?;
                let signature = Signature::decode(&mut r)?;
                r.finish("stored data")?;
                Ok(StoredData { storage_time, lifetime, value, signature })
            }
            typed => {
                check_model(typed.model(), model)?;
                Ok(StoredData { storage_time, lifetime, value: typed, signature })
            }
        }
    }

    /// §7.4.2.2: the answer for a requested single value that does not
    /// exist: `exists = False`, empty, signed by nobody (`none`, {0,0}).
    pub fn nonexistent_single() -> Self {
        Self::synthesized(StoredDataValue::Single(DataValue::nonexistent()))
    }

    /// §7.4.2.2: the same for a missing array index.
    pub fn nonexistent_array(index: u32) -> Self {
        Self::synthesized(StoredDataValue::Array(ArrayEntry { index, value: DataValue::nonexistent() }))
    }

    /// §7.4.2.2: the same for a missing dictionary key.
    pub fn nonexistent_dictionary(key: Vec<u8>) -> Self {
        Self::synthesized(StoredDataValue::Dictionary(DictionaryEntry { key, value: DataValue::nonexistent() }))
    }

    fn synthesized(value: StoredDataValue) -> Self {
        StoredData { storage_time: 0, lifetime: 0, value, signature: Signature::none() }
    }
}

/// `StoreKindData` (§7.4.1.1): the values of one kind in a StoreReq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreKindData {
    pub kind: KindId,
    pub generation_counter: u64,
    pub values: Vec<StoredData>,
}

impl StoreKindData {
    pub fn decode_with(r: &mut Reader<'_>, models: ModelLookup<'_>) -> Result<Self, WireError> {
        let kind = KindId::decode(r)?;
        let generation_counter = r.u64("generation counter")?;
        let values = get_stored_data(r, models(kind))?;
        Ok(StoreKindData { kind, generation_counter, values })
    }

    /// Types every raw value with the model the configuration supplies.
    pub fn resolve(self, model: DataModel) -> Result<Self, WireError> {
        let values = self.values.into_iter().map(|v| v.resolve(model)).collect::<Result<_, _>>()?;
        Ok(StoreKindData { values, ..self })
    }
}

impl Codec for StoreKindData {
    fn encode(&self, w: &mut Writer) {
        self.kind.encode(w);
        w.u64(self.generation_counter);
        put_stored_data(w, &self.values);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Self::decode_with(r, &DataModel::for_known_kind)
    }
}

/// `StoreReq` (§7.4.1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreReq {
    pub resource: ResourceId,
    /// 0 for the original store, 1, 2, … for replicas (§7.4.1.1).
    pub replica_number: u8,
    pub kind_data: Vec<StoreKindData>,
}

impl StoreReq {
    pub fn decode_with(r: &mut Reader<'_>, models: ModelLookup<'_>) -> Result<Self, WireError> {
        let resource = ResourceId::decode(r)?;
        let replica_number = r.u8("replica number")?;
        // `StoreKindData kind_data<0..2^32-1>`.
        let kind_data = r.vec(4, "kind data", |r| StoreKindData::decode_with(r, models))?;
        Ok(StoreReq { resource, replica_number, kind_data })
    }
}

impl Codec for StoreReq {
    fn encode(&self, w: &mut Writer) {
        self.resource.encode(w);
        w.u8(self.replica_number);
        put_vec(w, 4, "kind data", &self.kind_data);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Self::decode_with(r, &DataModel::for_known_kind)
    }
}

/// `StoreKindResponse` (§7.4.1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreKindResponse {
    pub kind: KindId,
    pub generation_counter: u64,
    /// `NodeId replicas<0..2^16-1>`: where the storing peer replicated.
    pub replicas: Vec<NodeId>,
}

impl Codec for StoreKindResponse {
    fn encode(&self, w: &mut Writer) {
        self.kind.encode(w);
        w.u64(self.generation_counter);
        put_vec(w, 2, "replicas", &self.replicas);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let kind = KindId::decode(r)?;
        let generation_counter = r.u64("generation counter")?;
        let replicas = get_vec(r, 2, "replicas")?;
        Ok(StoreKindResponse { kind, generation_counter, replicas })
    }
}

/// `StoreAns` (§7.4.1.2); also the `error_info` of
/// Error_Generation_Counter_Too_Low.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreAns {
    pub kind_responses: Vec<StoreKindResponse>,
}

impl Codec for StoreAns {
    fn encode(&self, w: &mut Writer) {
        put_vec(w, 2, "kind responses", &self.kind_responses);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(StoreAns { kind_responses: get_vec(r, 2, "kind responses")? })
    }
}

/// `ArrayRange` (§7.4.2.1): inclusive; 0xffffffff as `last` means the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArrayRange {
    pub first: u32,
    pub last: u32,
}

impl Codec for ArrayRange {
    fn encode(&self, w: &mut Writer) {
        w.u32(self.first);
        w.u32(self.last);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(ArrayRange { first: r.u32("array range first")?, last: r.u32("array range last")? })
    }
}

/// The `model_specifier` of a StoredDataSpecifier (§7.4.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpecifier {
    /// Empty: the single value.
    Single,
    /// `ArrayRange indices<0..2^16-1>`.
    Array(Vec<ArrayRange>),
    /// `DictionaryKey keys<0..2^16-1>`; empty asks for every key.
    Dictionary(Vec<Vec<u8>>),
    /// The contents of the `length(2)` envelope for a kind whose model is unknown.
    Raw(Vec<u8>),
}

impl ModelSpecifier {
    fn decode_as(r: &mut Reader<'_>, model: DataModel) -> Result<Self, WireError> {
        Ok(match model {
            DataModel::Single => ModelSpecifier::Single,
            DataModel::Array => ModelSpecifier::Array(get_vec(r, 2, "array ranges")?),
            DataModel::Dictionary => ModelSpecifier::Dictionary(
                r.vec(2, "dictionary keys", |r| Ok(r.opaque(2, "dictionary key")?.to_vec()))?,
            ),
        })
    }

    fn encode(&self, w: &mut Writer) {
        match self {
            ModelSpecifier::Single => {}
            ModelSpecifier::Array(ranges) => put_vec(w, 2, "array ranges", ranges),
            ModelSpecifier::Dictionary(keys) => {
                w.vec(2, "dictionary keys", |w| keys.iter().for_each(|k| w.opaque(2, "dictionary key", k)))
            }
            ModelSpecifier::Raw(b) => w.bytes(b),
        }
    }

    fn model(&self) -> Option<DataModel> {
        match self {
            ModelSpecifier::Single => Some(DataModel::Single),
            ModelSpecifier::Array(_) => Some(DataModel::Array),
            ModelSpecifier::Dictionary(_) => Some(DataModel::Dictionary),
            ModelSpecifier::Raw(_) => None,
        }
    }

    /// Types a raw specifier with the model the configuration supplies.
    pub fn resolve(self, model: DataModel) -> Result<Self, WireError> {
        match self {
            ModelSpecifier::Raw(bytes) => {
                let mut r = Reader::new(&bytes);
                let spec = ModelSpecifier::decode_as(&mut r, model)?;
                r.finish("model specifier")?;
                Ok(spec)
            }
            typed => check_model(typed.model(), model).map(|()| typed),
        }
    }
}

/// `StoredDataSpecifier` (§7.4.2.1). Its `length(2)` lets a peer skip the
/// model specifier of a kind it does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDataSpecifier {
    pub kind: KindId,
    /// Non-zero: return nothing if the kind's counter still equals this.
    pub generation: u64,
    pub model: ModelSpecifier,
}

impl StoredDataSpecifier {
    pub fn decode_with(r: &mut Reader<'_>, models: ModelLookup<'_>) -> Result<Self, WireError> {
        let kind = KindId::decode(r)?;
        let generation = r.u64("generation")?;
        let mut body = r.sub(2, "model specifier")?;
        let model = match models(kind) {
            Some(m) => ModelSpecifier::decode_as(&mut body, m)?,
            None => ModelSpecifier::Raw(body.bytes(body.remaining(), "model specifier")?.to_vec()),
        };
        body.finish("model specifier")?;
        Ok(StoredDataSpecifier { kind, generation, model })
    }

    pub fn resolve(self, model: DataModel) -> Result<Self, WireError> {
        Ok(StoredDataSpecifier { model: self.model.resolve(model)?, ..self })
    }
}

impl Codec for StoredDataSpecifier {
    fn encode(&self, w: &mut Writer) {
        self.kind.encode(w);
        w.u64(self.generation);
        w.vec(2, "model specifier", |w| self.model.encode(w));
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Self::decode_with(r, &DataModel::for_known_kind)
    }
}

/// `FetchReq` (§7.4.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchReq {
    pub resource: ResourceId,
    pub specifiers: Vec<StoredDataSpecifier>,
}

impl FetchReq {
    pub fn decode_with(r: &mut Reader<'_>, models: ModelLookup<'_>) -> Result<Self, WireError> {
        let (resource, specifiers) = decode_specifiers(r, models)?;
        Ok(FetchReq { resource, specifiers })
    }
}

impl Codec for FetchReq {
    fn encode(&self, w: &mut Writer) {
        encode_specifiers(w, &self.resource, &self.specifiers);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Self::decode_with(r, &DataModel::for_known_kind)
    }
}

/// `FetchKindResponse` (§7.4.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchKindResponse {
    pub kind: KindId,
    pub generation: u64,
    pub values: Vec<StoredData>,
}

impl FetchKindResponse {
    pub fn decode_with(r: &mut Reader<'_>, models: ModelLookup<'_>) -> Result<Self, WireError> {
        let kind = KindId::decode(r)?;
        let generation = r.u64("generation")?;
        let values = get_stored_data(r, models(kind))?;
        Ok(FetchKindResponse { kind, generation, values })
    }

    pub fn resolve(self, model: DataModel) -> Result<Self, WireError> {
        let values = self.values.into_iter().map(|v| v.resolve(model)).collect::<Result<_, _>>()?;
        Ok(FetchKindResponse { values, ..self })
    }
}

impl Codec for FetchKindResponse {
    fn encode(&self, w: &mut Writer) {
        self.kind.encode(w);
        w.u64(self.generation);
        put_stored_data(w, &self.values);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Self::decode_with(r, &DataModel::for_known_kind)
    }
}

/// `FetchAns` (§7.4.2.2): one response per requested kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchAns {
    pub kind_responses: Vec<FetchKindResponse>,
}

impl FetchAns {
    pub fn decode_with(r: &mut Reader<'_>, models: ModelLookup<'_>) -> Result<Self, WireError> {
        let kind_responses = r.vec(4, "kind responses", |r| FetchKindResponse::decode_with(r, models))?;
        Ok(FetchAns { kind_responses })
    }
}

impl Codec for FetchAns {
    fn encode(&self, w: &mut Writer) {
        put_vec(w, 4, "kind responses", &self.kind_responses);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Self::decode_with(r, &DataModel::for_known_kind)
    }
}

/// `StatReq` (§7.4.3.1): laid out exactly like a FetchReq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatReq {
    pub resource: ResourceId,
    pub specifiers: Vec<StoredDataSpecifier>,
}

impl StatReq {
    pub fn decode_with(r: &mut Reader<'_>, models: ModelLookup<'_>) -> Result<Self, WireError> {
        let (resource, specifiers) = decode_specifiers(r, models)?;
        Ok(StatReq { resource, specifiers })
    }
}

impl Codec for StatReq {
    fn encode(&self, w: &mut Writer) {
        encode_specifiers(w, &self.resource, &self.specifiers);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Self::decode_with(r, &DataModel::for_known_kind)
    }
}

/// `MetaData` (§7.4.3.2): a stored value described by its length and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaData {
    pub exists: bool,
    pub value_length: u32,
    /// A TLS `HashAlgorithm` (RFC 5246 §7.4.1.4.1).
    pub hash_algorithm: u8,
    /// `opaque hash_value<0..255>`: the hash of the value including its
    /// 4-byte length prefix (§7.4.3.2).
    pub hash_value: Vec<u8>,
}

/// `StoredMetaData` (§7.4.3.2): a StoredData with metadata in place of the
/// value and no signature. Its leading `value_length(4)` is the counterpart
/// of StoredData's `length` — the size of what follows — as Wireshark reads
/// it too; it is computed on encode and checked on decode, which is what
/// lets a peer skip the metadata of a kind it does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMetaData {
    pub storage_time: u64,
    pub lifetime: u32,
    pub metadata: StoredMetaDataValue,
}

impl StoredMetaData {
    pub fn decode_with(r: &mut Reader<'_>, model: Option<DataModel>) -> Result<Self, WireError> {
        let mut body = r.sub(4, "stored metadata")?;
        let storage_time = body.u64("storage time")?;
        let lifetime = body.u32("lifetime")?;
        let metadata = match model {
            Some(m) => StoredMetaDataValue::decode_as(&mut body, m)?,
            None => StoredMetaDataValue::Raw(body.bytes(body.remaining(), "metadata value")?.to_vec()),
        };
        body.finish("stored metadata")?;
        Ok(StoredMetaData { storage_time, lifetime, metadata })
    }

    pub fn encode(&self, w: &mut Writer) {
        w.vec(4, "stored metadata", |w| {
            w.u64(self.storage_time);
            w.u32(self.lifetime);
            self.metadata.encode(w);
        });
    }

    pub fn resolve(self, model: DataModel) -> Result<Self, WireError> {
        Ok(StoredMetaData { metadata: self.metadata.resolve(model)?, ..self })
    }
}

/// `StatKindResponse` (§7.4.3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatKindResponse {
    pub kind: KindId,
    pub generation: u64,
    pub values: Vec<StoredMetaData>,
}

impl StatKindResponse {
    pub fn decode_with(r: &mut Reader<'_>, models: ModelLookup<'_>) -> Result<Self, WireError> {
        let kind = KindId::decode(r)?;
        let generation = r.u64("generation")?;
        let model = models(kind);
        // `StoredMetaData values<0..2^32-1>`.
        let values = r.vec(4, "stored metadata values", |r| StoredMetaData::decode_with(r, model))?;
        Ok(StatKindResponse { kind, generation, values })
    }

    pub fn resolve(self, model: DataModel) -> Result<Self, WireError> {
        let values = self.values.into_iter().map(|v| v.resolve(model)).collect::<Result<_, _>>()?;
        Ok(StatKindResponse { values, ..self })
    }
}

impl Codec for StatKindResponse {
    fn encode(&self, w: &mut Writer) {
        self.kind.encode(w);
        w.u64(self.generation);
        w.vec(4, "stored metadata values", |w| self.values.iter().for_each(|v| v.encode(w)));
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Self::decode_with(r, &DataModel::for_known_kind)
    }
}

/// `StatAns` (§7.4.3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatAns {
    pub kind_responses: Vec<StatKindResponse>,
}

impl StatAns {
    pub fn decode_with(r: &mut Reader<'_>, models: ModelLookup<'_>) -> Result<Self, WireError> {
        let kind_responses = r.vec(4, "kind responses", |r| StatKindResponse::decode_with(r, models))?;
        Ok(StatAns { kind_responses })
    }
}

impl Codec for StatAns {
    fn encode(&self, w: &mut Writer) {
        put_vec(w, 4, "kind responses", &self.kind_responses);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Self::decode_with(r, &DataModel::for_known_kind)
    }
}

/// `FindReq` (§7.4.4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindReq {
    pub resource: ResourceId,
    /// `KindId kinds<0..2^8-1>`.
    pub kinds: Vec<KindId>,
}

impl Codec for FindReq {
    fn encode(&self, w: &mut Writer) {
        self.resource.encode(w);
        put_vec(w, 1, "find kinds", &self.kinds);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let resource = ResourceId::decode(r)?;
        let kinds = get_vec(r, 1, "find kinds")?;
        Ok(FindReq { resource, kinds })
    }
}

/// `FindKindData` (§7.4.4.2): the stored Resource-ID of `kind` closest to
/// the requested one; 0 when the peer stores none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindKindData {
    pub kind: KindId,
    pub closest: ResourceId,
}

impl Codec for FindKindData {
    fn encode(&self, w: &mut Writer) {
        self.kind.encode(w);
        self.closest.encode(w);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(FindKindData { kind: KindId::decode(r)?, closest: ResourceId::decode(r)? })
    }
}

/// `FindAns` (§7.4.4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindAns {
    pub results: Vec<FindKindData>,
}

impl Codec for FindAns {
    fn encode(&self, w: &mut Writer) {
        put_vec(w, 2, "find results", &self.results);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(FindAns { results: get_vec(r, 2, "find results")? })
    }
}

impl Codec for DataValue {
    fn encode(&self, w: &mut Writer) {
        w.boolean(self.exists);
        // §7.2.1: `opaque value<0..2^32-1>`.
        w.opaque(4, "data value", &self.value);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let exists = r.boolean("exists")?;
        let value = r.opaque(4, "data value")?.to_vec();
        Ok(DataValue { exists, value })
    }
}

impl Codec for MetaData {
    fn encode(&self, w: &mut Writer) {
        w.boolean(self.exists);
        w.u32(self.value_length);
        w.u8(self.hash_algorithm);
        w.opaque(1, "hash value", &self.hash_value);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let exists = r.boolean("exists")?;
        let value_length = r.u32("value length")?;
        let hash_algorithm = r.u8("hash algorithm")?;
        let hash_value = r.opaque(1, "hash value")?.to_vec();
        Ok(MetaData { exists, value_length, hash_algorithm, hash_value })
    }
}

/// A typed value must have the model the kind says it has.
fn check_model(have: Option<DataModel>, want: DataModel) -> Result<(), WireError> {
    match have {
        Some(m) if m != want => {
            Err(WireError::Malformed { what: "stored data value", reason: "data model does not match the kind" })
        }
        _ => Ok(()),
    }
}

/// `StoredData values<0..2^32-1>` of one kind.
fn get_stored_data(r: &mut Reader<'_>, model: Option<DataModel>) -> Result<Vec<StoredData>, WireError> {
    r.vec(4, "stored data values", |r| StoredData::decode_with(r, model))
}

fn put_stored_data(w: &mut Writer, values: &[StoredData]) {
    w.vec(4, "stored data values", |w| values.iter().for_each(|v| v.encode(w)));
}

/// The body shared by FetchReq and StatReq: a resource and
/// `StoredDataSpecifier specifiers<0..2^16-1>`.
fn decode_specifiers(
    r: &mut Reader<'_>,
    models: ModelLookup<'_>,
) -> Result<(ResourceId, Vec<StoredDataSpecifier>), WireError> {
    let resource = ResourceId::decode(r)?;
    let specifiers = r.vec(2, "specifiers", |r| StoredDataSpecifier::decode_with(r, models))?;
    Ok((resource, specifiers))
}

fn encode_specifiers(w: &mut Writer, resource: &ResourceId, specifiers: &[StoredDataSpecifier]) {
    resource.encode(w);
    put_vec(w, 2, "specifiers", specifiers);
}

#[cfg(test)]
pub(crate) mod strategies {
    use super::*;
    use crate::wire::security_block::strategies::signature;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        vec(any::<u8>(), 0..32)
    }

    pub(crate) fn resource_id() -> impl Strategy<Value = ResourceId> {
        bytes().prop_map(ResourceId)
    }

    /// Mostly standard kinds, sometimes one whose model is unknown.
    pub(crate) fn kind() -> impl Strategy<Value = KindId> {
        prop_oneof![
            Just(KindId::SIP_REGISTRATION),
            Just(KindId::TURN_SERVICE),
            Just(KindId::CERTIFICATE_BY_NODE),
            Just(KindId::CERTIFICATE_BY_USER),
            Just(KindId::CHORDPHONE_TEST),
            any::<u32>().prop_map(KindId),
        ]
    }

    pub(crate) fn data_value() -> impl Strategy<Value = DataValue> {
        (any::<bool>(), bytes()).prop_map(|(exists, value)| DataValue { exists, value })
    }

    pub(crate) fn array_entry() -> impl Strategy<Value = ArrayEntry> {
        (any::<u32>(), data_value()).prop_map(|(index, value)| ArrayEntry { index, value })
    }

    pub(crate) fn dictionary_entry() -> impl Strategy<Value = DictionaryEntry> {
        (bytes(), data_value()).prop_map(|(key, value)| DictionaryEntry { key, value })
    }

    /// A value shaped the way `kind`'s model says (raw bytes when unknown).
    pub(crate) fn stored_data_value(kind: KindId) -> BoxedStrategy<StoredDataValue> {
        match DataModel::for_known_kind(kind) {
            Some(DataModel::Single) => data_value().prop_map(StoredDataValue::Single).boxed(),
            Some(DataModel::Array) => array_entry().prop_map(StoredDataValue::Array).boxed(),
            Some(DataModel::Dictionary) => dictionary_entry().prop_map(StoredDataValue::Dictionary).boxed(),
            None => bytes().prop_map(StoredDataValue::Raw).boxed(),
        }
    }

    /// A StoredData of `kind` as decoding produces it.
    pub(crate) fn stored_data(kind: KindId) -> impl Strategy<Value = StoredData> {
        (any::<u64>(), any::<u32>(), stored_data_value(kind), signature()).prop_map(
            |(storage_time, lifetime, value, signature)| {
                let signature = if value.model().is_some() { signature } else { Signature::none() };
                StoredData { storage_time, lifetime, value, signature }
            },
        )
    }

    pub(crate) fn store_kind_data() -> impl Strategy<Value = StoreKindData> {
        (kind(), any::<u64>()).prop_flat_map(|(kind, generation_counter)| {
            vec(stored_data(kind), 0..4).prop_map(move |values| StoreKindData { kind, generation_counter, values })
        })
    }

    pub(crate) fn store_req() -> impl Strategy<Value = StoreReq> {
        (resource_id(), any::<u8>(), vec(store_kind_data(), 0..4))
            .prop_map(|(resource, replica_number, kind_data)| StoreReq { resource, replica_number, kind_data })
    }

    pub(crate) fn store_kind_response() -> impl Strategy<Value = StoreKindResponse> {
        (kind(), any::<u64>(), vec(any::<[u8; 16]>().prop_map(NodeId), 0..4))
            .prop_map(|(kind, generation_counter, replicas)| StoreKindResponse { kind, generation_counter, replicas })
    }

    pub(crate) fn store_ans() -> impl Strategy<Value = StoreAns> {
        vec(store_kind_response(), 0..4).prop_map(|kind_responses| StoreAns { kind_responses })
    }

    pub(crate) fn array_range() -> impl Strategy<Value = ArrayRange> {
        (any::<u32>(), any::<u32>()).prop_map(|(first, last)| ArrayRange { first, last })
    }

    pub(crate) fn stored_data_specifier() -> impl Strategy<Value = StoredDataSpecifier> {
        (kind(), any::<u64>()).prop_flat_map(|(kind, generation)| {
            let model = match DataModel::for_known_kind(kind) {
                Some(DataModel::Single) => Just(ModelSpecifier::Single).boxed(),
                Some(DataModel::Array) => vec(array_range(), 0..4).prop_map(ModelSpecifier::Array).boxed(),
                Some(DataModel::Dictionary) => vec(bytes(), 0..4).prop_map(ModelSpecifier::Dictionary).boxed(),
                None => bytes().prop_map(ModelSpecifier::Raw).boxed(),
            };
            model.prop_map(move |model| StoredDataSpecifier { kind, generation, model })
        })
    }

    pub(crate) fn fetch_req() -> impl Strategy<Value = FetchReq> {
        (resource_id(), vec(stored_data_specifier(), 0..4))
            .prop_map(|(resource, specifiers)| FetchReq { resource, specifiers })
    }

    pub(crate) fn fetch_kind_response() -> impl Strategy<Value = FetchKindResponse> {
        (kind(), any::<u64>()).prop_flat_map(|(kind, generation)| {
            vec(stored_data(kind), 0..4).prop_map(move |values| FetchKindResponse { kind, generation, values })
        })
    }

    pub(crate) fn fetch_ans() -> impl Strategy<Value = FetchAns> {
        vec(fetch_kind_response(), 0..4).prop_map(|kind_responses| FetchAns { kind_responses })
    }

    pub(crate) fn stat_req() -> impl Strategy<Value = StatReq> {
        fetch_req().prop_map(|f| StatReq { resource: f.resource, specifiers: f.specifiers })
    }

    pub(crate) fn meta_data() -> impl Strategy<Value = MetaData> {
        (any::<bool>(), any::<u32>(), any::<u8>(), bytes()).prop_map(
            |(exists, value_length, hash_algorithm, hash_value)| MetaData {
                exists,
                value_length,
                hash_algorithm,
                hash_value,
            },
        )
    }

    pub(crate) fn stored_meta_data(kind: KindId) -> impl Strategy<Value = StoredMetaData> {
        let metadata = match DataModel::for_known_kind(kind) {
            Some(DataModel::Single) => meta_data().prop_map(StoredMetaDataValue::Single).boxed(),
            Some(DataModel::Array) => (any::<u32>(), meta_data())
                .prop_map(|(index, value)| StoredMetaDataValue::Array(ArrayEntryMeta { index, value }))
                .boxed(),
            Some(DataModel::Dictionary) => (bytes(), meta_data())
                .prop_map(|(key, value)| StoredMetaDataValue::Dictionary(DictionaryEntryMeta { key, value }))
                .boxed(),
            None => bytes().prop_map(StoredMetaDataValue::Raw).boxed(),
        };
        (any::<u64>(), any::<u32>(), metadata).prop_map(|(storage_time, lifetime, metadata)| StoredMetaData {
            storage_time,
            lifetime,
            metadata,
        })
    }

    pub(crate) fn stat_kind_response() -> impl Strategy<Value = StatKindResponse> {
        (kind(), any::<u64>()).prop_flat_map(|(kind, generation)| {
            vec(stored_meta_data(kind), 0..4).prop_map(move |values| StatKindResponse { kind, generation, values })
        })
    }

    pub(crate) fn stat_ans() -> impl Strategy<Value = StatAns> {
        vec(stat_kind_response(), 0..4).prop_map(|kind_responses| StatAns { kind_responses })
    }

    pub(crate) fn find_req() -> impl Strategy<Value = FindReq> {
        (resource_id(), vec(kind(), 0..4)).prop_map(|(resource, kinds)| FindReq { resource, kinds })
    }

    pub(crate) fn find_kind_data() -> impl Strategy<Value = FindKindData> {
        (kind(), resource_id()).prop_map(|(kind, closest)| FindKindData { kind, closest })
    }

    pub(crate) fn find_ans() -> impl Strategy<Value = FindAns> {
        vec(find_kind_data(), 0..4).prop_map(|results| FindAns { results })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::security_block::{SignatureAndHashAlgorithm, SignerIdentity};
    use proptest::prelude::*;

    /// The seven bytes of the synthesized signature: {0,0}, none(3), empty.
    const NONE_SIG: [u8; 7] = [0, 0, 3, 0, 0, 0, 0];
    const PRIVATE: KindId = KindId(0xF000_0042);

    fn signed() -> Signature {
        Signature {
            algorithm: SignatureAndHashAlgorithm::RSA_PKCS1_SHA256,
            identity: SignerIdentity::CertHash { hash_alg: 4, certificate_hash: vec![0xcc] },
            value: vec![0x5a, 0x5b],
        }
    }

    fn turn_value() -> StoredData {
        StoredData {
            storage_time: 0x0102_0304_0506_0708,
            lifetime: 60,
            value: StoredDataValue::Single(DataValue::new(vec![0xab])),
            signature: Signature::none(),
        }
    }

    #[test]
    fn stored_data_single_hand_checked() {
        let mut expected = vec![0, 0, 0, 25]; // length: 8 + 4 + 6 + 7
        expected.extend([1, 2, 3, 4, 5, 6, 7, 8]); // storage_time
        expected.extend([0, 0, 0, 60]); // lifetime
        expected.extend([1, 0, 0, 0, 1, 0xab]); // exists, value<0..2^32-1>
        expected.extend(NONE_SIG);
        let v = turn_value();
        assert_eq!(v.to_bytes().unwrap(), expected);
        let mut r = Reader::new(&expected);
        assert_eq!(StoredData::decode_for(&mut r, KindId::TURN_SERVICE).unwrap(), v);
        assert!(r.is_empty());
    }

    #[test]
    fn entries_hand_checked() {
        let a = StoredDataValue::Array(ArrayEntry { index: ArrayEntry::APPEND, value: DataValue::new(vec![7]) });
        assert_eq!(a.to_bytes().unwrap(), [0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0, 1, 7]);
        let d = StoredDataValue::Dictionary(DictionaryEntry { key: vec![9, 9], value: DataValue::nonexistent() });
        assert_eq!(d.to_bytes().unwrap(), [0, 2, 9, 9, 0, 0, 0, 0, 0]);
        assert_eq!(StoredDataValue::Raw(vec![0, 2, 9, 9, 0, 0, 0, 0, 0]).resolve(DataModel::Dictionary).unwrap(), d);
    }

    #[test]
    fn store_req_and_ans_hand_checked() {
        let req = StoreReq {
            resource: ResourceId(vec![0xaa, 0xbb]),
            replica_number: 1,
            kind_data: vec![StoreKindData {
                kind: KindId::TURN_SERVICE,
                generation_counter: 5,
                values: vec![turn_value()],
            }],
        };
        let mut expected = vec![2, 0xaa, 0xbb, 1]; // resource, replica_number
        expected.extend([0, 0, 0, 4 + 8 + 4 + 29]); // kind_data<0..2^32-1>
        expected.extend([0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 29]); // kind, generation, values length
        expected.extend(turn_value().to_bytes().unwrap());
        assert_eq!(req.to_bytes().unwrap(), expected);
        assert_eq!(StoreReq::from_bytes(&expected).unwrap(), req);

        let ans = StoreAns {
            kind_responses: vec![StoreKindResponse {
                kind: KindId::CERTIFICATE_BY_USER,
                generation_counter: 1,
                replicas: vec![NodeId::from_u128(3)],
            }],
        };
        let mut expected = vec![0, 30, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 1, 0, 16];
        expected.extend(NodeId::from_u128(3).0);
        assert_eq!(ans.to_bytes().unwrap(), expected);
        assert_eq!(StoreAns::from_bytes(&expected).unwrap(), ans);
    }

    #[test]
    fn fetch_req_hand_checked() {
        let req = FetchReq {
            resource: ResourceId(vec![1]),
            specifiers: vec![
                StoredDataSpecifier { kind: KindId::TURN_SERVICE, generation: 0, model: ModelSpecifier::Single },
                StoredDataSpecifier {
                    kind: KindId::CERTIFICATE_BY_NODE,
                    generation: 2,
                    model: ModelSpecifier::Array(vec![ArrayRange { first: 0, last: 0xffff_ffff }]),
                },
                StoredDataSpecifier {
                    kind: KindId::SIP_REGISTRATION,
                    generation: 0,
                    model: ModelSpecifier::Dictionary(vec![vec![1, 2]]),
                },
            ],
        };
        let expected: Vec<u8> = [
            &[1, 1][..],                                        // resource
            &[0, 14 + 24 + 20],                                 // specifiers<0..2^16-1>
            &[0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],        // single: empty specifier
            &[0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 2, 0, 10, 0, 8], // array: length 10, ranges<8>
            &[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
            &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 4, 0, 2, 1, 2], // keys<4> of key<2>
        ]
        .concat();
        assert_eq!(req.to_bytes().unwrap(), expected);
        assert_eq!(FetchReq::from_bytes(&expected).unwrap(), req);
        // StatReq shares the layout.
        let stat = StatReq::from_bytes(&expected).unwrap();
        assert_eq!(stat.specifiers, req.specifiers);
    }

    #[test]
    fn stat_ans_hand_checked() {
        let meta = MetaData { exists: true, value_length: 5, hash_algorithm: 2, hash_value: vec![0xee, 0xff] };
        let ans = StatAns {
            kind_responses: vec![StatKindResponse {
                kind: KindId::CHORDPHONE_TEST,
                generation: 7,
                values: vec![StoredMetaData {
                    storage_time: 1,
                    lifetime: 2,
                    metadata: StoredMetaDataValue::Single(meta),
                }],
            }],
        };
        let expected: Vec<u8> = [
            &[0, 0, 0, 41][..],                       // kind_responses<0..2^32-1>
            &[0xf0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7], // kind, generation
            &[0, 0, 0, 25, 0, 0, 0, 21],              // values<25>, value_length 21
            &[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2],    // storage_time, lifetime
            &[1, 0, 0, 0, 5, 2, 2, 0xee, 0xff],       // MetaData
        ]
        .concat();
        assert_eq!(ans.to_bytes().unwrap(), expected);
        assert_eq!(StatAns::from_bytes(&expected).unwrap(), ans);
    }

    #[test]
    fn find_hand_checked() {
        let req = FindReq { resource: ResourceId(vec![5]), kinds: vec![KindId::TURN_SERVICE] };
        assert_eq!(req.to_bytes().unwrap(), [1, 5, 4, 0, 0, 0, 2]);
        let ans = FindAns { results: vec![FindKindData { kind: KindId::TURN_SERVICE, closest: ResourceId(vec![6]) }] };
        let bytes = ans.to_bytes().unwrap();
        assert_eq!(bytes, [0, 6, 0, 0, 0, 2, 1, 6]);
        assert_eq!(FindAns::from_bytes(&bytes).unwrap(), ans);
    }

    #[test]
    fn unknown_kind_stays_raw_and_resolves_with_the_configured_model() {
        let typed = StoreKindData {
            kind: PRIVATE,
            generation_counter: 1,
            values: vec![StoredData { signature: signed(), ..turn_value() }],
        };
        let bytes = typed.to_bytes().unwrap();
        let raw = StoreKindData::from_bytes(&bytes).unwrap();
        assert!(matches!(raw.values.first().map(|v| &v.value), Some(StoredDataValue::Raw(_))));
        assert_eq!(raw.to_bytes().unwrap(), bytes, "raw round-trips byte for byte");
        assert_eq!(raw.clone().resolve(DataModel::Single).unwrap(), typed);
        // The configured model can also be threaded in at decode time.
        let lookup = |k: KindId| {
            if k == PRIVATE { Some(DataModel::Single) } else { DataModel::for_known_kind(k) }
        };
        assert_eq!(StoreKindData::decode_with(&mut Reader::new(&bytes), &lookup).unwrap(), typed);
        // The wrong model fails rather than mis-splitting value and signature.
        assert!(raw.resolve(DataModel::Dictionary).is_err());
    }

    #[test]
    fn unknown_specifier_and_metadata_resolve() {
        let spec = StoredDataSpecifier { kind: PRIVATE, generation: 0, model: ModelSpecifier::Array(vec![]) };
        let raw = StoredDataSpecifier::from_bytes(&spec.to_bytes().unwrap()).unwrap();
        assert_eq!(raw.model, ModelSpecifier::Raw(vec![0, 0]));
        assert_eq!(raw.resolve(DataModel::Array).unwrap(), spec);

        let meta = StoredMetaData {
            storage_time: 3,
            lifetime: 4,
            metadata: StoredMetaDataValue::Array(ArrayEntryMeta {
                index: 1,
                value: MetaData { exists: false, value_length: 0, hash_algorithm: 0, hash_value: vec![] },
            }),
        };
        let resp = StatKindResponse { kind: PRIVATE, generation: 1, values: vec![meta] };
        let bytes = resp.to_bytes().unwrap();
        let raw = StatKindResponse::from_bytes(&bytes).unwrap();
        assert_eq!(raw.to_bytes().unwrap(), bytes);
        assert_eq!(raw.resolve(DataModel::Array).unwrap(), resp);
    }

    #[test]
    fn typed_values_refuse_another_model() {
        assert!(turn_value().resolve(DataModel::Single).is_ok());
        assert!(turn_value().resolve(DataModel::Array).is_err());
        assert!(ModelSpecifier::Single.resolve(DataModel::Dictionary).is_err());
    }

    #[test]
    fn nonexistent_values_are_synthesized() {
        let v = StoredData::nonexistent_array(4);
        assert!(v.signature.is_none());
        assert_eq!(v.value.data_value(), Some(&DataValue::nonexistent()));
        let bytes = v.to_bytes().unwrap();
        let mut r = Reader::new(&bytes);
        assert_eq!(StoredData::decode_for(&mut r, KindId::CERTIFICATE_BY_NODE).unwrap(), v);
        assert_eq!(&bytes[bytes.len() - 7..], NONE_SIG);
        assert_eq!(StoredData::nonexistent_single().value.model(), Some(DataModel::Single));
        assert_eq!(StoredData::nonexistent_dictionary(vec![1]).value.model(), Some(DataModel::Dictionary));
    }

    #[test]
    fn stored_data_length_must_match() {
        let mut bytes = turn_value().to_bytes().unwrap();
        // A byte left inside the declared length.
        bytes.push(0);
        bytes[3] += 1;
        let err = StoredData::decode_for(&mut Reader::new(&bytes), KindId::TURN_SERVICE);
        assert!(matches!(err, Err(WireError::Trailing { .. })));
        // A length longer than the input.
        bytes[3] += 1;
        let err = StoredData::decode_for(&mut Reader::new(&bytes), KindId::TURN_SERVICE);
        assert!(matches!(err, Err(WireError::Truncated { .. })));
        // A Boolean that is neither 0 nor 1.
        let mut bytes = turn_value().to_bytes().unwrap();
        bytes[16] = 2;
        assert!(StoredData::decode_for(&mut Reader::new(&bytes), KindId::TURN_SERVICE).is_err());
    }

    proptest! {
        #[test]
        fn store_req_round_trips(v in strategies::store_req()) {
            prop_assert_eq!(StoreReq::from_bytes(&v.to_bytes().unwrap()).unwrap(), v);
        }

        #[test]
        fn store_ans_round_trips(v in strategies::store_ans()) {
            prop_assert_eq!(StoreAns::from_bytes(&v.to_bytes().unwrap()).unwrap(), v);
        }

        #[test]
        fn fetch_req_round_trips(v in strategies::fetch_req()) {
            prop_assert_eq!(FetchReq::from_bytes(&v.to_bytes().unwrap()).unwrap(), v);
        }

        #[test]
        fn fetch_ans_round_trips(v in strategies::fetch_ans()) {
            prop_assert_eq!(FetchAns::from_bytes(&v.to_bytes().unwrap()).unwrap(), v);
        }

        #[test]
        fn stat_round_trips(req in strategies::stat_req(), ans in strategies::stat_ans()) {
            prop_assert_eq!(StatReq::from_bytes(&req.to_bytes().unwrap()).unwrap(), req);
            prop_assert_eq!(StatAns::from_bytes(&ans.to_bytes().unwrap()).unwrap(), ans);
        }

        #[test]
        fn find_round_trips(req in strategies::find_req(), ans in strategies::find_ans()) {
            prop_assert_eq!(FindReq::from_bytes(&req.to_bytes().unwrap()).unwrap(), req);
            prop_assert_eq!(FindAns::from_bytes(&ans.to_bytes().unwrap()).unwrap(), ans);
        }

        #[test]
        fn every_truncation_is_an_error(req in strategies::store_req(), ans in strategies::fetch_ans()) {
            let bytes = req.to_bytes().unwrap();
            for n in 0..bytes.len() {
                prop_assert!(StoreReq::from_bytes(&bytes[..n]).is_err());
            }
            let bytes = ans.to_bytes().unwrap();
            for n in 0..bytes.len() {
                prop_assert!(FetchAns::from_bytes(&bytes[..n]).is_err());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            let _ = StoreReq::from_bytes(&bytes);
            let _ = FetchReq::from_bytes(&bytes);
            let _ = FetchAns::from_bytes(&bytes);
            let _ = StatAns::from_bytes(&bytes);
            let _ = FindAns::from_bytes(&bytes);
        }
    }
}
