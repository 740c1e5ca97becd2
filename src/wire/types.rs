//! Identifiers and addresses shared by every RELOAD structure (RFC 6940 §6.3.1, §6.3.2.2).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use sha1::{Digest, Sha1};

use super::codec::{Codec, Reader, WireError, Writer};

/// Length of a Node-ID in bytes. CHORD-RELOAD (§10) uses a ring of 2^128,
/// so this implementation fixes `node-id-length` at 16 and refuses
/// configurations that ask for anything else.
pub const NODE_ID_LEN: usize = 16;

/// A 128-bit Node-ID, compared as an unsigned big-endian integer (§10).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(pub [u8; NODE_ID_LEN]);

impl NodeId {
    /// The all-ones wildcard Node-ID (§6.3.2.2): every node is responsible.
    pub const WILDCARD: NodeId = NodeId([0xff; NODE_ID_LEN]);

    pub fn from_u128(v: u128) -> Self {
        NodeId(v.to_be_bytes())
    }

    pub fn as_u128(&self) -> u128 {
        u128::from_be_bytes(self.0)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Result<Self, WireError> {
        let v = hex::decode(s).map_err(|_| WireError::Malformed { what: "node id", reason: "not hex" })?;
        let arr: [u8; NODE_ID_LEN] =
            v.try_into().map_err(|_| WireError::Malformed { what: "node id", reason: "not 16 bytes" })?;
        Ok(NodeId(arr))
    }

    /// The Resource-ID that names the same point on the ring.
    pub fn to_resource(&self) -> ResourceId {
        ResourceId(self.0.to_vec())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.to_hex())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Codec for NodeId {
    fn encode(&self, w: &mut Writer) {
        w.bytes(&self.0);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(NodeId(r.array("node id")?))
    }
}

/// `opaque ResourceId<0..2^8-1>` (§6.3.2.2). For CHORD-RELOAD it is the
/// first 128 bits of SHA-1 of the resource name (§10.2).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ResourceId(pub Vec<u8>);

impl ResourceId {
    /// Hashes a resource name the CHORD-RELOAD way (§10.2).
    pub fn from_name(name: &[u8]) -> Self {
        let digest = Sha1::digest(name);
        ResourceId(digest.get(..NODE_ID_LEN).unwrap_or_default().to_vec())
    }

    /// The ring point this id names, when it is exactly 128 bits long.
    pub fn as_u128(&self) -> Option<u128> {
        let arr: [u8; 16] = self.0.as_slice().try_into().ok()?;
        Some(u128::from_be_bytes(arr))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }
}

impl fmt::Debug for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResourceId({})", self.to_hex())
    }
}

impl Codec for ResourceId {
    fn encode(&self, w: &mut Writer) {
        w.opaque(1, "resource id", &self.0);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(ResourceId(r.opaque(1, "resource id")?.to_vec()))
    }
}

/// `uint32 KindId` (§7.2, IANA "RELOAD Data Kind-ID").
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct KindId(pub u32);

impl KindId {
    /// RFC 7904: SIP registrations, dictionary keyed by Node-ID.
    pub const SIP_REGISTRATION: KindId = KindId(0x1);
    /// §9: TURN servers, single value, NODE-MULTIPLE.
    pub const TURN_SERVICE: KindId = KindId(0x2);
    /// §8: certificates stored under H(Node-ID), array, NODE-MATCH.
    pub const CERTIFICATE_BY_NODE: KindId = KindId(0x3);
    /// §8: certificates stored under H(user name), array, USER-MATCH.
    pub const CERTIFICATE_BY_USER: KindId = KindId(0x10);
    /// First Kind-ID of the range private to an overlay's configuration.
    pub const PRIVATE_FIRST: KindId = KindId(0xF000_0001);
    /// chordphone's operator/test kind: a single value, USER-MATCH.
    pub const CHORDPHONE_TEST: KindId = KindId(0xF000_0001);

    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::SIP_REGISTRATION => "SIP-REGISTRATION",
            Self::TURN_SERVICE => "TURN-SERVICE",
            Self::CERTIFICATE_BY_NODE => "CERTIFICATE_BY_NODE",
            Self::CERTIFICATE_BY_USER => "CERTIFICATE_BY_USER",
            _ => return None,
        })
    }
}

impl fmt::Debug for KindId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "KindId({n})"),
            None => write!(f, "KindId({:#x})", self.0),
        }
    }
}

impl Codec for KindId {
    fn encode(&self, w: &mut Writer) {
        w.u32(self.0);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(KindId(r.u32("kind id")?))
    }
}

/// `IpAddressPort` (§6.3.1.1): type 1 = IPv4, 2 = IPv6, a length byte, the
/// address and a port. Other address types are a parse error (the RFC's
/// rule for an unknown `select`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct IpAddressPort(pub SocketAddr);

impl Codec for IpAddressPort {
    fn encode(&self, w: &mut Writer) {
        match self.0.ip() {
            IpAddr::V4(a) => {
                w.u8(1);
                w.u8(6);
                w.bytes(&a.octets());
            }
            IpAddr::V6(a) => {
                w.u8(2);
                w.u8(18);
                w.bytes(&a.octets());
            }
        }
        w.u16(self.0.port());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let ty = r.u8("address type")?;
        let mut body = r.sub(1, "IpAddressPort")?;
        let ip = match ty {
            1 => IpAddr::V4(Ipv4Addr::from(body.array::<4>("ipv4 address")?)),
            2 => IpAddr::V6(Ipv6Addr::from(body.array::<16>("ipv6 address")?)),
            other => return Err(WireError::Invalid { what: "address type", value: other.into() }),
        };
        let port = body.u16("port")?;
        body.finish("IpAddressPort")?;
        Ok(IpAddressPort(SocketAddr::new(ip, port)))
    }
}

/// One entry of a Destination or Via list (§6.3.2.2).
#[derive(Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Destination {
    Node(NodeId),
    Resource(ResourceId),
    /// `opaque_id_type` (3): an id a peer minted to compress a list.
    OpaqueId(Vec<u8>),
    /// The 2-byte compressed form (first bit set) of an opaque id.
    Compressed(u16),
    /// A type this implementation does not know, kept so it round-trips.
    Unknown {
        ty: u8,
        data: Vec<u8>,
    },
}

impl Codec for Destination {
    fn encode(&self, w: &mut Writer) {
        let (ty, body): (u8, Vec<u8>) = match self {
            Destination::Compressed(v) => {
                w.u16(*v | 0x8000);
                return;
            }
            Destination::Node(n) => (1, n.0.to_vec()),
            Destination::Resource(rid) => {
                let mut inner = Writer::new();
                rid.encode(&mut inner);
                match inner.finish() {
                    Ok(b) => (2, b),
                    Err(e) => {
                        w.fail(e);
                        return;
                    }
                }
            }
            Destination::OpaqueId(v) => {
                let mut inner = Writer::new();
                inner.opaque(1, "opaque id", v);
                match inner.finish() {
                    Ok(b) => (3, b),
                    Err(e) => {
                        w.fail(e);
                        return;
                    }
                }
            }
            Destination::Unknown { ty, data } => (*ty & 0x7f, data.clone()),
        };
        w.u8(ty);
        w.opaque(1, "destination", &body);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let first = r.u8("destination type")?;
        if first & 0x80 != 0 {
            let second = r.u8("compressed destination")?;
            return Ok(Destination::Compressed(u16::from_be_bytes([first & 0x7f, second])));
        }
        let mut body = r.sub(1, "destination")?;
        let d = match first {
            1 => Destination::Node(NodeId::decode(&mut body)?),
            2 => Destination::Resource(ResourceId::decode(&mut body)?),
            3 => Destination::OpaqueId(body.opaque(1, "opaque id")?.to_vec()),
            ty => Destination::Unknown { ty, data: body.bytes(body.remaining(), "destination")?.to_vec() },
        };
        body.finish("destination")?;
        Ok(d)
    }
}

/// Overlay hash carried in every forwarding header: the low 32 bits of
/// SHA-1 of the overlay name (§6.3.2).
pub fn overlay_hash(name: &str) -> u32 {
    let d = Sha1::digest(name.as_bytes());
    let tail: [u8; 4] = d.get(16..20).and_then(|s| s.try_into().ok()).unwrap_or_default();
    u32::from_be_bytes(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_vectors() {
        // §10.2 / checklist: "test" hashes to a94a8fe5ccb19ba61c4c0873d391e987.
        assert_eq!(ResourceId::from_name(b"test").to_hex(), "a94a8fe5ccb19ba61c4c0873d391e987");
        // §6.3.2: overlay.example.org → 9aa32b8d.
        assert_eq!(overlay_hash("overlay.example.org"), 0x9aa3_2b8d);
        // §6.3.1.1: 192.0.2.1:6084.
        let a = IpAddressPort("192.0.2.1:6084".parse().unwrap_or(SocketAddr::from(([0; 4], 0))));
        assert_eq!(a.to_bytes().unwrap_or_default(), hex::decode("0106c000020117c4").unwrap_or_default());
    }

    #[test]
    fn destination_forms() {
        let n = Destination::Node(NodeId::from_u128(7));
        let b = n.to_bytes().unwrap_or_default();
        assert_eq!(&b[..2], &[1, 16]);
        let r = Destination::Resource(ResourceId(vec![0xaa; 16]));
        let b = r.to_bytes().unwrap_or_default();
        assert_eq!(&b[..3], &[2, 17, 16]);
        let c = Destination::Compressed(0x1234);
        assert_eq!(c.to_bytes().unwrap_or_default(), vec![0x92, 0x34]);
        for d in [n, r, c, Destination::OpaqueId(vec![1, 2, 3]), Destination::Unknown { ty: 9, data: vec![4] }] {
            let b = d.to_bytes().unwrap_or_default();
            assert_eq!(Destination::from_bytes(&b), Ok(d));
        }
    }

    #[test]
    fn unknown_address_type_is_an_error() {
        assert!(IpAddressPort::from_bytes(&[3, 0]).is_err());
    }
}
