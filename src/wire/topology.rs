//! Topology bodies (RFC 6940 §6.4.2, §6.5.3, §6.5.4) and their
//! CHORD-RELOAD contents (§10): Probe, Join, Leave, Update, RouteQuery,
//! Ping and ConfigUpdate.
//!
//! A few bodies are "topology plugin specific" and fill the whole
//! `message_body` (LeaveAns, UpdateReq of an unknown type, UpdateAns):
//! their decoders take everything left in the reader, so give them the
//! exact message body (as [`Codec::from_bytes`] does).

use super::codec::{Codec, Reader, WireError, Writer, get_vec, put_vec};
use super::types::{Destination, NodeId};

/// `ProbeInformationType` (§6.4.2.5.1). Decoding never puts
/// 1..=3 in `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeInformationType {
    ResponsibleSet,
    NumResources,
    Uptime,
    Unknown(u8),
}

impl ProbeInformationType {
    pub fn as_u8(self) -> u8 {
        match self {
            Self::ResponsibleSet => 1,
            Self::NumResources => 2,
            Self::Uptime => 3,
            Self::Unknown(v) => v,
        }
    }

    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::ResponsibleSet,
            2 => Self::NumResources,
            3 => Self::Uptime,
            v => Self::Unknown(v),
        }
    }
}

/// `ProbeReq` (§6.4.2.5.1): what the sender wants to learn.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProbeReq {
    pub requested_info: Vec<ProbeInformationType>,
}

/// `ProbeInformation` (§6.4.2.5.2): a type, a length, and a value. The
/// length lets a type we do not know be kept as raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeInformation {
    /// Share of the ring this peer is responsible for, in parts per billion.
    ResponsibleSet { responsible_ppb: u32 },
    /// Resources this peer stores.
    NumResources { num_resources: u32 },
    /// Seconds since this peer joined.
    Uptime { uptime: u32 },
    /// A type outside 1..=3 with its value as sent.
    Unknown { ty: u8, value: Vec<u8> },
}

impl ProbeInformation {
    pub fn info_type(&self) -> ProbeInformationType {
        match self {
            Self::ResponsibleSet { .. } => ProbeInformationType::ResponsibleSet,
            Self::NumResources { .. } => ProbeInformationType::NumResources,
            Self::Uptime { .. } => ProbeInformationType::Uptime,
            Self::Unknown { ty, .. } => ProbeInformationType::Unknown(*ty),
        }
    }
}

/// `ProbeAns` (§6.4.2.5.2): the requested items, in the requested order,
/// leaving out types the responder does not know.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProbeAns {
    pub probe_info: Vec<ProbeInformation>,
}

/// `JoinReq` (§6.4.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinReq {
    pub joining_peer_id: NodeId,
    pub overlay_specific_data: Vec<u8>,
}

/// `JoinAns` (§6.4.2.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinAns {
    pub overlay_specific_data: Vec<u8>,
}

/// `ChordLeaveData` (§10.9): the leaving peer's neighbors on the far side
/// of the receiver, so the receiver can patch its table at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChordLeaveData {
    /// Sent to a predecessor: the leaver's successors.
    FromSucc { successors: Vec<NodeId> },
    /// Sent to a successor: the leaver's predecessors.
    FromPred { predecessors: Vec<NodeId> },
    /// Another type; the enclosing opaque lets it be skipped.
    Unknown { ty: u8, data: Vec<u8> },
}

/// `LeaveReq` (§6.4.2.2). `overlay_specific_data<0..2^16-1>` holds a
/// [`ChordLeaveData`] (§10.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveReq {
    pub leaving_peer_id: NodeId,
    pub data: ChordLeaveData,
}

/// LeaveAns (§6.4.2.2): the whole body is left to the topology plugin;
/// CHORD-RELOAD sends none, so this is normally empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaveAns {
    pub overlay_specific_data: Vec<u8>,
}

/// `ChordUpdateType` and the lists that follow it (§10.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChordUpdateData {
    /// `peer_ready(1)`: the sender is ready to take traffic; no lists.
    PeerReady,
    /// `neighbors(2)`.
    Neighbors { predecessors: Vec<NodeId>, successors: Vec<NodeId> },
    /// `full(3)`: fingers in ascending order.
    Full { predecessors: Vec<NodeId>, successors: Vec<NodeId>, fingers: Vec<NodeId> },
    /// Another type, with the rest of the message body.
    Unknown { ty: u8, data: Vec<u8> },
}

/// UpdateReq: for CHORD-RELOAD the body is the `ChordUpdate` itself
/// (§6.4.2.3 leaves it to the plugin; §10.7), not wrapped in an opaque.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateReq {
    /// Seconds since the sender joined.
    pub uptime: u32,
    pub data: ChordUpdateData,
}

/// The §10.7 name of [`UpdateReq`].
pub type ChordUpdate = UpdateReq;

/// UpdateAns (§6.4.2.3): plugin specific and empty for CHORD-RELOAD.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpdateAns {
    pub overlay_specific_data: Vec<u8>,
}

/// `RouteQueryReq` (§6.4.2.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteQueryReq {
    /// Ask the responder for a full Update.
    pub send_update: bool,
    pub destination: Destination,
    pub overlay_specific_data: Vec<u8>,
}

/// RouteQueryAns for CHORD-RELOAD (`ChordRouteQueryAns`, §10.8): the body
/// is the next hop's Node-ID and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteQueryAns {
    pub next_peer: NodeId,
}

/// `PingReq` (§6.5.3): padding only, e.g. for path MTU discovery.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PingReq {
    pub padding: Vec<u8>,
}

/// `PingAns` (§6.5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingAns {
    /// Random, so a sender can tell answers from different peers apart.
    pub response_id: u64,
    /// The responder's clock, in milliseconds since the Unix epoch.
    pub time: u64,
}

/// `KindDescription` (§6.5.4): `opaque<0..2^16-1>` holding one UTF-8 XML
/// `<kind>` block of the configuration document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindDescription(pub Vec<u8>);

impl KindDescription {
    pub fn from_xml(xml: &str) -> Self {
        KindDescription(xml.as_bytes().to_vec())
    }

    /// The XML text, when it is UTF-8.
    pub fn xml(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

/// `ConfigUpdateReq` (§6.5.4): `type`, a `uint32 length`, then the
/// contents. The length lets an unknown type be kept as raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigUpdateReq {
    /// `config(1)`: a whole signed configuration document.
    Config {
        config_data: Vec<u8>,
    },
    /// `kind(2)`: kind descriptions signed by a kind-signer.
    Kinds {
        kinds: Vec<KindDescription>,
    },
    Unknown {
        ty: u8,
        data: Vec<u8>,
    },
}

/// ConfigUpdateAns (§6.5.4): an empty body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConfigUpdateAns;

impl Codec for ProbeInformationType {
    fn encode(&self, w: &mut Writer) {
        w.u8(self.as_u8());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Self::from_u8(r.u8("probe information type")?))
    }
}

impl Codec for ProbeReq {
    fn encode(&self, w: &mut Writer) {
        // §6.4.2.5.1: `ProbeInformationType requested_info<0..2^8-1>`.
        put_vec(w, 1, "requested info", &self.requested_info);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(ProbeReq { requested_info: get_vec(r, 1, "requested info")? })
    }
}

impl Codec for ProbeInformation {
    fn encode(&self, w: &mut Writer) {
        let ty = self.info_type().as_u8();
        if let Self::Unknown { .. } = self {
            reject_known_type(w, "probe information", ty, 1..=3);
        }
        w.u8(ty);
        // §6.4.2.5.2: `uint8 length` then the value.
        w.vec(1, "probe information", |w| match self {
            Self::ResponsibleSet { responsible_ppb: v }
            | Self::NumResources { num_resources: v }
            | Self::Uptime { uptime: v } => w.u32(*v),
            Self::Unknown { value, .. } => w.bytes(value),
        });
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let ty = r.u8("probe information type")?;
        let mut body = r.sub(1, "probe information")?;
        let info = match ProbeInformationType::from_u8(ty) {
            ProbeInformationType::ResponsibleSet => {
                Self::ResponsibleSet { responsible_ppb: body.u32("responsible_ppb")? }
            }
            ProbeInformationType::NumResources => Self::NumResources { num_resources: body.u32("num_resources")? },
            ProbeInformationType::Uptime => Self::Uptime { uptime: body.u32("uptime")? },
            ProbeInformationType::Unknown(ty) => {
                Self::Unknown { ty, value: take_rest(&mut body, "probe information")? }
            }
        };
        body.finish("probe information")?;
        Ok(info)
    }
}

impl Codec for ProbeAns {
    fn encode(&self, w: &mut Writer) {
        // §6.4.2.5.2: `ProbeInformation probe_info<0..2^16-1>`.
        put_vec(w, 2, "probe info", &self.probe_info);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(ProbeAns { probe_info: get_vec(r, 2, "probe info")? })
    }
}

impl Codec for JoinReq {
    fn encode(&self, w: &mut Writer) {
        self.joining_peer_id.encode(w);
        w.opaque(2, "overlay specific data", &self.overlay_specific_data);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let joining_peer_id = NodeId::decode(r)?;
        let overlay_specific_data = r.opaque(2, "overlay specific data")?.to_vec();
        Ok(JoinReq { joining_peer_id, overlay_specific_data })
    }
}

impl Codec for JoinAns {
    fn encode(&self, w: &mut Writer) {
        w.opaque(2, "overlay specific data", &self.overlay_specific_data);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(JoinAns { overlay_specific_data: r.opaque(2, "overlay specific data")?.to_vec() })
    }
}

/// Decoding takes the rest of the reader for an unknown type: give it the
/// contents of the enclosing `overlay_specific_data` only.
impl Codec for ChordLeaveData {
    fn encode(&self, w: &mut Writer) {
        match self {
            // §10.9: `NodeId successors<0..2^16-1>` / `predecessors<0..2^16-1>`.
            Self::FromSucc { successors } => {
                w.u8(1);
                put_vec(w, 2, "successors", successors);
            }
            Self::FromPred { predecessors } => {
                w.u8(2);
                put_vec(w, 2, "predecessors", predecessors);
            }
            Self::Unknown { ty, data } => {
                reject_known_type(w, "chord leave type", *ty, 1..=2);
                w.u8(*ty);
                w.bytes(data);
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(match r.u8("chord leave type")? {
            1 => Self::FromSucc { successors: get_vec(r, 2, "successors")? },
            2 => Self::FromPred { predecessors: get_vec(r, 2, "predecessors")? },
            ty => Self::Unknown { ty, data: take_rest(r, "chord leave data")? },
        })
    }
}

impl Codec for LeaveReq {
    fn encode(&self, w: &mut Writer) {
        self.leaving_peer_id.encode(w);
        // §6.4.2.2: the Chord data sits inside `opaque overlay_specific_data<0..2^16-1>`.
        w.vec(2, "overlay specific data", |w| self.data.encode(w));
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let leaving_peer_id = NodeId::decode(r)?;
        let mut body = r.sub(2, "overlay specific data")?;
        let data = ChordLeaveData::decode(&mut body)?;
        body.finish("chord leave data")?;
        Ok(LeaveReq { leaving_peer_id, data })
    }
}

impl Codec for LeaveAns {
    fn encode(&self, w: &mut Writer) {
        w.bytes(&self.overlay_specific_data);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(LeaveAns { overlay_specific_data: take_rest(r, "leave answer")? })
    }
}

impl Codec for UpdateReq {
    fn encode(&self, w: &mut Writer) {
        w.u32(self.uptime);
        // §10.7: `ChordUpdateType type` then a `select` with no length.
        match &self.data {
            ChordUpdateData::PeerReady => w.u8(1),
            ChordUpdateData::Neighbors { predecessors, successors } => {
                w.u8(2);
                put_vec(w, 2, "predecessors", predecessors);
                put_vec(w, 2, "successors", successors);
            }
            ChordUpdateData::Full { predecessors, successors, fingers } => {
                w.u8(3);
                put_vec(w, 2, "predecessors", predecessors);
                put_vec(w, 2, "successors", successors);
                put_vec(w, 2, "fingers", fingers);
            }
            ChordUpdateData::Unknown { ty, data } => {
                reject_known_type(w, "chord update type", *ty, 1..=3);
                w.u8(*ty);
                w.bytes(data);
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let uptime = r.u32("uptime")?;
        let data = match r.u8("chord update type")? {
            1 => ChordUpdateData::PeerReady,
            2 => ChordUpdateData::Neighbors {
                predecessors: get_vec(r, 2, "predecessors")?,
                successors: get_vec(r, 2, "successors")?,
            },
            3 => ChordUpdateData::Full {
                predecessors: get_vec(r, 2, "predecessors")?,
                successors: get_vec(r, 2, "successors")?,
                fingers: get_vec(r, 2, "fingers")?,
            },
            // The message body's own length bounds an unknown type.
            ty => ChordUpdateData::Unknown { ty, data: take_rest(r, "chord update")? },
        };
        Ok(UpdateReq { uptime, data })
    }
}

impl Codec for UpdateAns {
    fn encode(&self, w: &mut Writer) {
        w.bytes(&self.overlay_specific_data);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(UpdateAns { overlay_specific_data: take_rest(r, "update answer")? })
    }
}

impl Codec for RouteQueryReq {
    fn encode(&self, w: &mut Writer) {
        w.boolean(self.send_update);
        self.destination.encode(w);
        w.opaque(2, "overlay specific data", &self.overlay_specific_data);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let send_update = r.boolean("send_update")?;
        let destination = Destination::decode(r)?;
        let overlay_specific_data = r.opaque(2, "overlay specific data")?.to_vec();
        Ok(RouteQueryReq { send_update, destination, overlay_specific_data })
    }
}

impl Codec for RouteQueryAns {
    fn encode(&self, w: &mut Writer) {
        self.next_peer.encode(w);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(RouteQueryAns { next_peer: NodeId::decode(r)? })
    }
}

impl Codec for PingReq {
    fn encode(&self, w: &mut Writer) {
        w.opaque(2, "padding", &self.padding);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(PingReq { padding: r.opaque(2, "padding")?.to_vec() })
    }
}

impl Codec for PingAns {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.response_id);
        w.u64(self.time);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let response_id = r.u64("response_id")?;
        let time = r.u64("time")?;
        Ok(PingAns { response_id, time })
    }
}

impl Codec for KindDescription {
    fn encode(&self, w: &mut Writer) {
        w.opaque(2, "kind description", &self.0);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(KindDescription(r.opaque(2, "kind description")?.to_vec()))
    }
}

impl Codec for ConfigUpdateReq {
    fn encode(&self, w: &mut Writer) {
        let ty = match self {
            Self::Config { .. } => 1,
            Self::Kinds { .. } => 2,
            Self::Unknown { ty, .. } => {
                reject_known_type(w, "config update type", *ty, 1..=2);
                *ty
            }
        };
        w.u8(ty);
        // §6.5.4: `uint32 length` covers the `select` that follows, whose
        // own vectors carry 3-byte lengths.
        w.vec(4, "config update", |w| match self {
            Self::Config { config_data } => w.opaque(3, "config data", config_data),
            Self::Kinds { kinds } => put_vec(w, 3, "kinds", kinds),
            Self::Unknown { data, .. } => w.bytes(data),
        });
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let ty = r.u8("config update type")?;
        let mut body = r.sub(4, "config update")?;
        let req = match ty {
            1 => Self::Config { config_data: body.opaque(3, "config data")?.to_vec() },
            2 => Self::Kinds { kinds: get_vec(&mut body, 3, "kinds")? },
            ty => Self::Unknown { ty, data: take_rest(&mut body, "config update")? },
        };
        body.finish("config update")?;
        Ok(req)
    }
}

impl Codec for ConfigUpdateAns {
    fn encode(&self, _w: &mut Writer) {}
    fn decode(_r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(ConfigUpdateAns)
    }
}

fn take_rest(r: &mut Reader<'_>, what: &'static str) -> Result<Vec<u8>, WireError> {
    Ok(r.bytes(r.remaining(), what)?.to_vec())
}

/// An `Unknown` variant holding a type we do know would decode as
/// something else, so it is refused rather than silently reshaped.
fn reject_known_type(w: &mut Writer, what: &'static str, ty: u8, known: std::ops::RangeInclusive<u8>) {
    if known.contains(&ty) {
        w.fail(WireError::Malformed { what, reason: "a known type in an Unknown variant" });
    }
}

#[cfg(test)]
pub(crate) mod strategies {
    use super::*;
    use crate::wire::types::ResourceId;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        vec(any::<u8>(), 0..32)
    }

    fn node_ids() -> impl Strategy<Value = Vec<NodeId>> {
        vec(node_id(), 0..4)
    }

    fn unknown_type(known: std::ops::RangeInclusive<u8>) -> impl Strategy<Value = u8> {
        any::<u8>().prop_filter("unknown type", move |t| !known.contains(t))
    }

    pub(crate) fn node_id() -> impl Strategy<Value = NodeId> {
        any::<u128>().prop_map(NodeId::from_u128)
    }

    pub(crate) fn destination() -> impl Strategy<Value = Destination> {
        prop_oneof![
            node_id().prop_map(Destination::Node),
            bytes().prop_map(|b| Destination::Resource(ResourceId(b))),
            bytes().prop_map(Destination::OpaqueId),
            (0u16..0x8000).prop_map(Destination::Compressed),
            (4u8..0x80, bytes()).prop_map(|(ty, data)| Destination::Unknown { ty, data }),
        ]
    }

    pub(crate) fn probe_information_type() -> impl Strategy<Value = ProbeInformationType> {
        any::<u8>().prop_map(ProbeInformationType::from_u8)
    }

    pub(crate) fn probe_req() -> impl Strategy<Value = ProbeReq> {
        vec(probe_information_type(), 0..4).prop_map(|requested_info| ProbeReq { requested_info })
    }

    pub(crate) fn probe_information() -> impl Strategy<Value = ProbeInformation> {
        prop_oneof![
            any::<u32>().prop_map(|responsible_ppb| ProbeInformation::ResponsibleSet { responsible_ppb }),
            any::<u32>().prop_map(|num_resources| ProbeInformation::NumResources { num_resources }),
            any::<u32>().prop_map(|uptime| ProbeInformation::Uptime { uptime }),
            (unknown_type(1..=3), bytes()).prop_map(|(ty, value)| ProbeInformation::Unknown { ty, value }),
        ]
    }

    pub(crate) fn probe_ans() -> impl Strategy<Value = ProbeAns> {
        vec(probe_information(), 0..4).prop_map(|probe_info| ProbeAns { probe_info })
    }

    pub(crate) fn join_req() -> impl Strategy<Value = JoinReq> {
        (node_id(), bytes())
            .prop_map(|(joining_peer_id, overlay_specific_data)| JoinReq { joining_peer_id, overlay_specific_data })
    }

    pub(crate) fn join_ans() -> impl Strategy<Value = JoinAns> {
        bytes().prop_map(|overlay_specific_data| JoinAns { overlay_specific_data })
    }

    pub(crate) fn chord_leave_data() -> impl Strategy<Value = ChordLeaveData> {
        prop_oneof![
            node_ids().prop_map(|successors| ChordLeaveData::FromSucc { successors }),
            node_ids().prop_map(|predecessors| ChordLeaveData::FromPred { predecessors }),
            (unknown_type(1..=2), bytes()).prop_map(|(ty, data)| ChordLeaveData::Unknown { ty, data }),
        ]
    }

    pub(crate) fn leave_req() -> impl Strategy<Value = LeaveReq> {
        (node_id(), chord_leave_data()).prop_map(|(leaving_peer_id, data)| LeaveReq { leaving_peer_id, data })
    }

    pub(crate) fn leave_ans() -> impl Strategy<Value = LeaveAns> {
        bytes().prop_map(|overlay_specific_data| LeaveAns { overlay_specific_data })
    }

    pub(crate) fn chord_update_data() -> impl Strategy<Value = ChordUpdateData> {
        prop_oneof![
            Just(ChordUpdateData::PeerReady),
            (node_ids(), node_ids())
                .prop_map(|(predecessors, successors)| ChordUpdateData::Neighbors { predecessors, successors }),
            (node_ids(), node_ids(), node_ids()).prop_map(|(predecessors, successors, fingers)| {
                ChordUpdateData::Full { predecessors, successors, fingers }
            }),
            (unknown_type(1..=3), bytes()).prop_map(|(ty, data)| ChordUpdateData::Unknown { ty, data }),
        ]
    }

    pub(crate) fn update_req() -> impl Strategy<Value = UpdateReq> {
        (any::<u32>(), chord_update_data()).prop_map(|(uptime, data)| UpdateReq { uptime, data })
    }

    pub(crate) fn update_ans() -> impl Strategy<Value = UpdateAns> {
        bytes().prop_map(|overlay_specific_data| UpdateAns { overlay_specific_data })
    }

    pub(crate) fn route_query_req() -> impl Strategy<Value = RouteQueryReq> {
        (any::<bool>(), destination(), bytes()).prop_map(|(send_update, destination, overlay_specific_data)| {
            RouteQueryReq { send_update, destination, overlay_specific_data }
        })
    }

    pub(crate) fn route_query_ans() -> impl Strategy<Value = RouteQueryAns> {
        node_id().prop_map(|next_peer| RouteQueryAns { next_peer })
    }

    pub(crate) fn ping_req() -> impl Strategy<Value = PingReq> {
        bytes().prop_map(|padding| PingReq { padding })
    }

    pub(crate) fn ping_ans() -> impl Strategy<Value = PingAns> {
        (any::<u64>(), any::<u64>()).prop_map(|(response_id, time)| PingAns { response_id, time })
    }

    pub(crate) fn kind_description() -> impl Strategy<Value = KindDescription> {
        bytes().prop_map(KindDescription)
    }

    pub(crate) fn config_update_req() -> impl Strategy<Value = ConfigUpdateReq> {
        prop_oneof![
            bytes().prop_map(|config_data| ConfigUpdateReq::Config { config_data }),
            vec(kind_description(), 0..4).prop_map(|kinds| ConfigUpdateReq::Kinds { kinds }),
            (unknown_type(1..=2), bytes()).prop_map(|(ty, data)| ConfigUpdateReq::Unknown { ty, data }),
        ]
    }

    pub(crate) fn config_update_ans() -> impl Strategy<Value = ConfigUpdateAns> {
        Just(ConfigUpdateAns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(v: u128) -> NodeId {
        NodeId::from_u128(v)
    }

    fn h(v: u128) -> String {
        format!("{v:032x}")
    }

    fn check<T: Codec + PartialEq + std::fmt::Debug>(value: &T, expected_hex: &str) {
        let b = value.to_bytes().unwrap();
        assert_eq!(hex::encode(&b), expected_hex);
        assert_eq!(&T::from_bytes(&b).unwrap(), value);
    }

    #[test]
    fn probe_bytes() {
        use ProbeInformationType::*;
        check(&ProbeReq { requested_info: vec![ResponsibleSet, Uptime, Unknown(9)] }, "03010309");
        let ans = ProbeAns {
            probe_info: vec![
                ProbeInformation::ResponsibleSet { responsible_ppb: 1_000_000 },
                ProbeInformation::Uptime { uptime: 60 },
                ProbeInformation::Unknown { ty: 9, value: vec![0xaa] },
            ],
        };
        check(&ans, "000f0104000f424003040000003c0901aa");
        // A known type must hold exactly a uint32.
        assert!(ProbeAns::from_bytes(&hex::decode("0005010300000a").unwrap()).is_err());
    }

    #[test]
    fn join_bytes() {
        check(
            &JoinReq { joining_peer_id: n(1), overlay_specific_data: vec![0xde, 0xad] },
            &format!("{}0002dead", h(1)),
        );
        check(&JoinAns::default(), "0000");
    }

    #[test]
    fn leave_bytes() {
        let req = LeaveReq { leaving_peer_id: n(0x11), data: ChordLeaveData::FromSucc { successors: vec![n(2)] } };
        // overlay_specific_data is 19 bytes: type 1, list length 16, one Node-ID.
        check(&req, &format!("{}0013010010{}", h(0x11), h(2)));
        let pred = LeaveReq { leaving_peer_id: n(3), data: ChordLeaveData::FromPred { predecessors: vec![] } };
        check(&pred, &format!("{}0003020000", h(3)));
        let unknown = LeaveReq { leaving_peer_id: n(3), data: ChordLeaveData::Unknown { ty: 7, data: vec![1, 2] } };
        check(&unknown, &format!("{}0003070102", h(3)));
        // A known type must fill the opaque exactly.
        assert!(LeaveReq::from_bytes(&hex::decode(format!("{}000402000000", h(3))).unwrap()).is_err());
        check(&LeaveAns::default(), "");
    }

    #[test]
    fn update_bytes() {
        check(&UpdateReq { uptime: 0, data: ChordUpdateData::PeerReady }, "0000000001");
        let neighbors = UpdateReq {
            uptime: 100,
            data: ChordUpdateData::Neighbors { predecessors: vec![n(1)], successors: vec![n(2), n(3)] },
        };
        check(&neighbors, &format!("0000006402{}{}{}{}{}", "0010", h(1), "0020", h(2), h(3)));
        let full = UpdateReq {
            uptime: 1,
            data: ChordUpdateData::Full { predecessors: vec![], successors: vec![], fingers: vec![n(9)] },
        };
        check(&full, &format!("000000010300000000{}{}", "0010", h(9)));
        check(&UpdateReq { uptime: 2, data: ChordUpdateData::Unknown { ty: 8, data: vec![5] } }, "000000020805");
        check(&UpdateAns::default(), "");
        // A peer_ready update carries nothing after its type.
        assert!(UpdateReq::from_bytes(&hex::decode("000000000100").unwrap()).is_err());
    }

    #[test]
    fn route_query_bytes() {
        let req =
            RouteQueryReq { send_update: true, destination: Destination::Node(n(5)), overlay_specific_data: vec![] };
        check(&req, &format!("010110{}0000", h(5)));
        check(&RouteQueryAns { next_peer: n(6) }, &h(6));
    }

    #[test]
    fn ping_bytes() {
        check(&PingReq { padding: vec![0; 3] }, "0003000000");
        check(
            &PingAns { response_id: 0x0102_0304_0506_0708, time: 0x1122_3344_5566_7788 },
            "01020304050607081122334455667788",
        );
    }

    #[test]
    fn config_update_bytes() {
        // type 1, length 7 = 3-byte length + 4 bytes of "<x/>".
        check(
            &ConfigUpdateReq::Config { config_data: b"<x/>".to_vec() },
            "0100000007000004 3c782f3e".replace(' ', "").as_str(),
        );
        // type 2, length 9 = 3-byte list length + one 2-byte-prefixed "<k/>".
        let kinds = ConfigUpdateReq::Kinds { kinds: vec![KindDescription::from_xml("<k/>")] };
        check(&kinds, "0200000009000006 0004 3c6b2f3e".replace(' ', "").as_str());
        check(&ConfigUpdateReq::Unknown { ty: 0x30, data: vec![1] }, "300000000101");
        check(&ConfigUpdateAns, "");
        assert!(ConfigUpdateAns::from_bytes(&[0]).is_err());
        if let ConfigUpdateReq::Kinds { kinds } = kinds {
            assert_eq!(kinds.first().and_then(KindDescription::xml), Some("<k/>"));
        }
    }

    #[test]
    fn unknown_variants_with_known_types_are_refused() {
        assert!(ProbeInformation::Unknown { ty: 1, value: vec![0; 4] }.to_bytes().is_err());
        assert!(ChordLeaveData::Unknown { ty: 2, data: vec![] }.to_bytes().is_err());
        assert!(UpdateReq { uptime: 0, data: ChordUpdateData::Unknown { ty: 3, data: vec![] } }.to_bytes().is_err());
        assert!(ConfigUpdateReq::Unknown { ty: 1, data: vec![] }.to_bytes().is_err());
    }

    type Decoder = fn(&[u8]) -> bool;

    #[test]
    fn truncated_bodies_are_errors() {
        let nodes = vec![n(1), n(2)];
        let cases: Vec<(Vec<u8>, Decoder)> = vec![
            (ProbeReq { requested_info: vec![ProbeInformationType::Uptime] }.to_bytes().unwrap(), |b| {
                ProbeReq::from_bytes(b).is_err()
            }),
            (ProbeAns { probe_info: vec![ProbeInformation::Uptime { uptime: 1 }] }.to_bytes().unwrap(), |b| {
                ProbeAns::from_bytes(b).is_err()
            }),
            (JoinReq { joining_peer_id: n(1), overlay_specific_data: vec![1] }.to_bytes().unwrap(), |b| {
                JoinReq::from_bytes(b).is_err()
            }),
            (JoinAns { overlay_specific_data: vec![1] }.to_bytes().unwrap(), |b| JoinAns::from_bytes(b).is_err()),
            (
                LeaveReq { leaving_peer_id: n(1), data: ChordLeaveData::FromPred { predecessors: nodes.clone() } }
                    .to_bytes()
                    .unwrap(),
                |b| LeaveReq::from_bytes(b).is_err(),
            ),
            (
                UpdateReq {
                    uptime: 1,
                    data: ChordUpdateData::Full {
                        predecessors: nodes.clone(),
                        successors: nodes.clone(),
                        fingers: nodes,
                    },
                }
                .to_bytes()
                .unwrap(),
                |b| UpdateReq::from_bytes(b).is_err(),
            ),
            (
                RouteQueryReq {
                    send_update: false,
                    destination: Destination::Node(n(1)),
                    overlay_specific_data: vec![2],
                }
                .to_bytes()
                .unwrap(),
                |b| RouteQueryReq::from_bytes(b).is_err(),
            ),
            (RouteQueryAns { next_peer: n(1) }.to_bytes().unwrap(), |b| RouteQueryAns::from_bytes(b).is_err()),
            (PingReq { padding: vec![0; 4] }.to_bytes().unwrap(), |b| PingReq::from_bytes(b).is_err()),
            (PingAns { response_id: 1, time: 2 }.to_bytes().unwrap(), |b| PingAns::from_bytes(b).is_err()),
            (ConfigUpdateReq::Kinds { kinds: vec![KindDescription::from_xml("<k/>")] }.to_bytes().unwrap(), |b| {
                ConfigUpdateReq::from_bytes(b).is_err()
            }),
            (ConfigUpdateReq::Config { config_data: b"<c/>".to_vec() }.to_bytes().unwrap(), |b| {
                ConfigUpdateReq::from_bytes(b).is_err()
            }),
        ];
        // LeaveAns, UpdateAns and ConfigUpdateAns have no structure to cut:
        // any body is a whole one (the first two) or none is (the last).
        for (i, (bytes, fails)) in cases.iter().enumerate() {
            for len in 0..bytes.len() {
                assert!(fails(&bytes[..len]), "case {i}: a {len}-byte prefix decoded");
            }
        }
    }

    proptest! {
        #[test]
        fn probe_round_trips(q in strategies::probe_req(), a in strategies::probe_ans()) {
            prop_assert_eq!(ProbeReq::from_bytes(&q.to_bytes().unwrap()).unwrap(), q);
            prop_assert_eq!(ProbeAns::from_bytes(&a.to_bytes().unwrap()).unwrap(), a);
        }

        #[test]
        fn join_leave_round_trip(
            jq in strategies::join_req(), ja in strategies::join_ans(),
            lq in strategies::leave_req(), la in strategies::leave_ans(),
        ) {
            prop_assert_eq!(JoinReq::from_bytes(&jq.to_bytes().unwrap()).unwrap(), jq);
            prop_assert_eq!(JoinAns::from_bytes(&ja.to_bytes().unwrap()).unwrap(), ja);
            prop_assert_eq!(LeaveReq::from_bytes(&lq.to_bytes().unwrap()).unwrap(), lq);
            prop_assert_eq!(LeaveAns::from_bytes(&la.to_bytes().unwrap()).unwrap(), la);
        }

        #[test]
        fn update_route_query_round_trip(
            uq in strategies::update_req(), ua in strategies::update_ans(),
            rq in strategies::route_query_req(), ra in strategies::route_query_ans(),
        ) {
            prop_assert_eq!(UpdateReq::from_bytes(&uq.to_bytes().unwrap()).unwrap(), uq);
            prop_assert_eq!(UpdateAns::from_bytes(&ua.to_bytes().unwrap()).unwrap(), ua);
            prop_assert_eq!(RouteQueryReq::from_bytes(&rq.to_bytes().unwrap()).unwrap(), rq);
            prop_assert_eq!(RouteQueryAns::from_bytes(&ra.to_bytes().unwrap()).unwrap(), ra);
        }

        #[test]
        fn ping_config_round_trip(
            pq in strategies::ping_req(), pa in strategies::ping_ans(),
            cq in strategies::config_update_req(), ca in strategies::config_update_ans(),
        ) {
            prop_assert_eq!(PingReq::from_bytes(&pq.to_bytes().unwrap()).unwrap(), pq);
            prop_assert_eq!(PingAns::from_bytes(&pa.to_bytes().unwrap()).unwrap(), pa);
            prop_assert_eq!(ConfigUpdateReq::from_bytes(&cq.to_bytes().unwrap()).unwrap(), cq);
            prop_assert_eq!(ConfigUpdateAns::from_bytes(&ca.to_bytes().unwrap()).unwrap(), ca);
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..96)) {
            let _ = ProbeReq::from_bytes(&b);
            let _ = ProbeAns::from_bytes(&b);
            let _ = JoinReq::from_bytes(&b);
            let _ = JoinAns::from_bytes(&b);
            let _ = LeaveReq::from_bytes(&b);
            let _ = LeaveAns::from_bytes(&b);
            let _ = UpdateReq::from_bytes(&b);
            let _ = UpdateAns::from_bytes(&b);
            let _ = RouteQueryReq::from_bytes(&b);
            let _ = RouteQueryAns::from_bytes(&b);
            let _ = PingReq::from_bytes(&b);
            let _ = PingAns::from_bytes(&b);
            let _ = ConfigUpdateReq::from_bytes(&b);
            let _ = ConfigUpdateAns::from_bytes(&b);
        }
    }
}
