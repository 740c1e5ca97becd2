//! The values of the standard kinds and the resource names they live under:
//! SIP-REGISTRATION (RFC 7904 §3), TURN-SERVICE (RFC 6940 §9) and the two
//! certificate kinds (RFC 6940 §8).
//!
//! Each value here is the `value` opaque of a [`DataValue`]; the data model
//! around it comes from [`super::storage`].

use super::codec::{Codec, Reader, WireError, Writer};
use super::storage::{ArrayEntry, DataValue, DictionaryEntry};
use super::types::{Destination, IpAddressPort, NodeId, ResourceId};

/// `SipRegistration` (RFC 7904 §3.2): `type(1) length(2)` and a body the
/// length delimits, so unknown types can be carried unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipRegistration {
    /// `sip_registration_uri(1)`: `opaque uri<0..2^16-1>`, another AOR to
    /// look up in its place.
    Uri(Vec<u8>),
    /// `sip_registration_route(2)`: RFC 3840 feature parameters and the
    /// `Destination destination_list<1..2^16-1>` that reaches the device.
    Route { contact_prefs: Vec<u8>, destination_list: Vec<Destination> },
    /// A registration type this implementation does not know.
    Unknown { ty: u8, data: Vec<u8> },
}

impl SipRegistration {
    pub const URI: u8 = 1;
    pub const ROUTE: u8 = 2;

    /// The dictionary entry a device stores: RFC 7904 §3.2 keys it by the
    /// storing peer's Node-ID, so each device of an AOR has its own entry.
    pub fn to_entry(&self, node: NodeId) -> Result<DictionaryEntry, WireError> {
        Ok(DictionaryEntry { key: node.0.to_vec(), value: DataValue::new(self.to_bytes()?) })
    }
}

impl Codec for SipRegistration {
    fn encode(&self, w: &mut Writer) {
        let ty = match self {
            SipRegistration::Uri(_) => Self::URI,
            SipRegistration::Route { .. } => Self::ROUTE,
            SipRegistration::Unknown { ty, .. } => *ty,
        };
        w.u8(ty);
        w.vec(2, "sip registration", |w| match self {
            SipRegistration::Uri(uri) => w.opaque(2, "sip registration uri", uri),
            SipRegistration::Route { contact_prefs, destination_list } => {
                w.opaque(2, "contact prefs", contact_prefs);
                if destination_list.is_empty() {
                    w.fail(WireError::Malformed { what: "sip registration route", reason: "empty destination list" });
                }
                w.vec(2, "destination list", |w| destination_list.iter().for_each(|d| d.encode(w)));
            }
            SipRegistration::Unknown { data, .. } => w.bytes(data),
        });
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let ty = r.u8("sip registration type")?;
        let mut body = r.sub(2, "sip registration")?;
        let reg = match ty {
            Self::URI => SipRegistration::Uri(body.opaque(2, "sip registration uri")?.to_vec()),
            Self::ROUTE => {
                let contact_prefs = body.opaque(2, "contact prefs")?.to_vec();
                let destination_list = body.vec(2, "destination list", Destination::decode)?;
                // RFC 7904 §3.2: `destination_list<1..2^16-1>`.
                if destination_list.is_empty() {
                    return Err(WireError::Malformed {
                        what: "sip registration route",
                        reason: "empty destination list",
                    });
                }
                SipRegistration::Route { contact_prefs, destination_list }
            }
            ty => SipRegistration::Unknown { ty, data: body.bytes(body.remaining(), "sip registration")?.to_vec() },
        };
        body.finish("sip registration")?;
        Ok(reg)
    }
}

/// `TurnServer` (RFC 6940 §9): the value a TURN-capable peer stores at
/// H(Node-ID ‖ iteration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnServer {
    /// The `d` (1..=turn-density) whose resource this value is stored at.
    pub iteration: u8,
    pub server_address: IpAddressPort,
}

impl TurnServer {
    /// The single value to store under [`turn_service_resource`].
    pub fn to_data_value(&self) -> Result<DataValue, WireError> {
        Ok(DataValue::new(self.to_bytes()?))
    }
}

impl Codec for TurnServer {
    fn encode(&self, w: &mut Writer) {
        w.u8(self.iteration);
        self.server_address.encode(w);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(TurnServer { iteration: r.u8("turn iteration")?, server_address: IpAddressPort::decode(r)? })
    }
}

/// A certificate-kind entry (§8): the value is one DER X.509 certificate,
/// stored at [`ArrayEntry::APPEND`] so a renewed certificate joins the
/// array instead of replacing the old one.
pub fn certificate_entry(der: Vec<u8>) -> ArrayEntry {
    ArrayEntry { index: ArrayEntry::APPEND, value: DataValue::new(der) }
}

/// The DER certificate an entry of a certificate kind holds, if it exists.
pub fn certificate_der(entry: &ArrayEntry) -> Option<&[u8]> {
    entry.value.exists.then_some(entry.value.value.as_slice())
}

/// CERTIFICATE_BY_NODE (§8): the resource name is the Node-ID itself, so
/// the certificate lives at H(Node-ID), not at the Node-ID's ring point.
pub fn certificate_by_node_resource(node: NodeId) -> ResourceId {
    ResourceId::from_name(&node.0)
}

/// CERTIFICATE_BY_USER (§8): the resource name is the user name (the
/// certificate's rfc822Name).
pub fn certificate_by_user_resource(user: &str) -> ResourceId {
    ResourceId::from_name(user.as_bytes())
}

/// TURN-SERVICE (§9, NODE-MULTIPLE §7.3.4): H(Node-ID ‖ d) for d in
/// 1..=turn-density; `d` is one byte, as in `TurnServer.iteration`.
pub fn turn_service_resource(node: NodeId, d: u8) -> ResourceId {
    let mut name = node.0.to_vec();
    name.push(d);
    ResourceId::from_name(&name)
}

/// SIP-REGISTRATION (RFC 7904 §3.2): H(AOR), the AOR as `user@domain`
/// without a scheme.
pub fn sip_registration_resource(aor: &str) -> ResourceId {
    ResourceId::from_name(aor.as_bytes())
}

#[cfg(test)]
pub(crate) mod strategies {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use std::net::{IpAddr, SocketAddr};

    pub(crate) fn destination() -> impl Strategy<Value = Destination> {
        prop_oneof![
            any::<[u8; 16]>().prop_map(|b| Destination::Node(NodeId(b))),
            vec(any::<u8>(), 0..20).prop_map(|b| Destination::Resource(ResourceId(b))),
            (0u16..0x8000).prop_map(Destination::Compressed),
        ]
    }

    pub(crate) fn sip_registration() -> impl Strategy<Value = SipRegistration> {
        prop_oneof![
            vec(any::<u8>(), 0..32).prop_map(SipRegistration::Uri),
            (vec(any::<u8>(), 0..32), vec(destination(), 1..4)).prop_map(|(contact_prefs, destination_list)| {
                SipRegistration::Route { contact_prefs, destination_list }
            }),
            (3u8..=255, vec(any::<u8>(), 0..32)).prop_map(|(ty, data)| SipRegistration::Unknown { ty, data }),
        ]
    }

    pub(crate) fn turn_server() -> impl Strategy<Value = TurnServer> {
        // The wire form has no flow label or scope, so build plain addresses.
        (any::<u8>(), any::<IpAddr>(), any::<u16>()).prop_map(|(iteration, ip, port)| TurnServer {
            iteration,
            server_address: IpAddressPort(SocketAddr::new(ip, port)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node() -> NodeId {
        NodeId::from_u128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10)
    }

    #[test]
    fn sip_registration_uri_hand_checked() {
        let reg = SipRegistration::Uri(b"bob@x".to_vec());
        let bytes = [1, 0, 7, 0, 5, b'b', b'o', b'b', b'@', b'x'];
        assert_eq!(reg.to_bytes().unwrap(), bytes);
        assert_eq!(SipRegistration::from_bytes(&bytes).unwrap(), reg);
    }

    #[test]
    fn sip_registration_route_hand_checked() {
        let reg = SipRegistration::Route { contact_prefs: vec![], destination_list: vec![Destination::Node(node())] };
        let mut bytes = vec![2, 0, 22, 0, 0, 0, 18, 1, 16];
        bytes.extend(node().0);
        assert_eq!(reg.to_bytes().unwrap(), bytes);
        assert_eq!(SipRegistration::from_bytes(&bytes).unwrap(), reg);
        let entry = reg.to_entry(node()).unwrap();
        assert_eq!(entry.key, node().0);
        assert_eq!(entry.value, DataValue::new(bytes));
    }

    #[test]
    fn sip_registration_rejects_empty_routes_and_keeps_unknown_types() {
        assert!(SipRegistration::from_bytes(&[2, 0, 4, 0, 0, 0, 0]).is_err());
        let empty = SipRegistration::Route { contact_prefs: vec![], destination_list: vec![] };
        assert!(empty.to_bytes().is_err());
        let unknown = [9, 0, 2, 0xde, 0xad];
        let reg = SipRegistration::from_bytes(&unknown).unwrap();
        assert_eq!(reg, SipRegistration::Unknown { ty: 9, data: vec![0xde, 0xad] });
        assert_eq!(reg.to_bytes().unwrap(), unknown);
        // A uri whose own length overruns the envelope.
        assert!(SipRegistration::from_bytes(&[1, 0, 2, 0, 5]).is_err());
    }

    #[test]
    fn turn_server_hand_checked() {
        let t = TurnServer { iteration: 1, server_address: IpAddressPort("192.0.2.1:3478".parse().unwrap()) };
        let bytes = [1, 1, 6, 192, 0, 2, 1, 0x0d, 0x96];
        assert_eq!(t.to_bytes().unwrap(), bytes);
        assert_eq!(TurnServer::from_bytes(&bytes).unwrap(), t);
        assert_eq!(t.to_data_value().unwrap(), DataValue::new(bytes.to_vec()));
    }

    #[test]
    fn resource_names() {
        // SHA-1 truncated to 128 bits (§10.2), computed independently.
        assert_eq!(sip_registration_resource("test").to_hex(), "a94a8fe5ccb19ba61c4c0873d391e987");
        assert_eq!(certificate_by_user_resource("alice@example.com").to_hex(), "fc2398a73dd54d6237c4fdb58fd7d753");
        assert_eq!(certificate_by_node_resource(NodeId::default()).to_hex(), "e129f27c5103bc5cc44bcdf0a15e160d");
        assert_eq!(turn_service_resource(NodeId::default(), 1).to_hex(), "1b69d765862555d95cdd99e762a68895");
        assert_ne!(certificate_by_node_resource(node()), node().to_resource());
    }

    #[test]
    fn certificate_entries_append() {
        let e = certificate_entry(vec![0x30, 0x00]);
        assert_eq!(e.index, ArrayEntry::APPEND);
        assert_eq!(certificate_der(&e), Some(&[0x30, 0x00][..]));
        let gone = ArrayEntry { index: 0, value: DataValue::nonexistent() };
        assert_eq!(certificate_der(&gone), None);
    }

    proptest! {
        #[test]
        fn sip_registration_round_trips(v in strategies::sip_registration()) {
            prop_assert_eq!(SipRegistration::from_bytes(&v.to_bytes().unwrap()).unwrap(), v);
        }

        #[test]
        fn turn_server_round_trips(v in strategies::turn_server()) {
            prop_assert_eq!(TurnServer::from_bytes(&v.to_bytes().unwrap()).unwrap(), v);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = SipRegistration::from_bytes(&bytes);
            let _ = TurnServer::from_bytes(&bytes);
        }
    }
}
