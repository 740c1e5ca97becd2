//! The SIP side's own vocabulary for what it needs from the rest of the
//! node: accounts (digest credentials) and opaque references to other
//! nodes. `sip` knows neither RELOAD nor the runtime; the RFC 7904 usage
//! (`crate::usage`) translates these to and from overlay types.

use std::fmt;

/// A SIP digest account of the SIP edge (RFC 3261 §22.4, RFC 8760 hashes).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SipUser {
    /// Address of record, the table key.
    pub aor: String,
    pub realm: String,
    /// Hex MD5 of `user:realm:password`.
    pub ha1_md5: String,
    /// Hex SHA-256 of `user:realm:password`.
    pub ha1_sha256: String,
    pub created_unix_s: u64,
}

/// An opaque reference to another node of the overlay: the proxy forwards
/// to it and names it in Record-Route/Via (`sip:HEX@…`), without knowing
/// what it is. The usage maps it to a RELOAD Node-ID (16 bytes).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeRef(pub [u8; 16]);

impl NodeRef {
    /// Parses the 32 hex digits [`NodeRef`]'s `Display` writes.
    pub fn from_hex(s: &str) -> Option<NodeRef> {
        let v = hex::decode(s).ok()?;
        <[u8; 16]>::try_from(v.as_slice()).ok().map(NodeRef)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_u128(n: u128) -> NodeRef {
        NodeRef(n.to_be_bytes())
    }
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeRef({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::NodeRef;

    #[test]
    fn hex_round_trip() {
        let n = NodeRef::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!(n.to_string(), "0123456789abcdef0011223344556677");
        assert_eq!(NodeRef::from_hex(&n.to_string()), Some(n));
        assert_eq!(NodeRef::from_hex("0123"), None);
        assert_eq!(NodeRef::from_hex("zz23456789abcdef0011223344556677"), None);
    }
}
