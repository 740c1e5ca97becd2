//! Attach and AppAttach bodies (RFC 6940 §6.5.1, §6.5.2): the ICE
//! parameters two nodes trade to open a direct (D)TLS link, or a link for
//! an application such as SIP.

use super::codec::{Codec, Reader, WireError, Writer, get_vec, put_vec};
use super::types::IpAddressPort;

/// `role` of an Attach/AppAttach request (§6.5.1.1): the sender is the
/// passive side of the (D)TLS exchange that follows ICE.
pub const ROLE_PASSIVE: &[u8] = b"passive";
/// `role` of an Attach/AppAttach answer (§6.5.1.1).
pub const ROLE_ACTIVE: &[u8] = b"active";

/// `application` of an AppAttach for SIP (§6.5.2, IANA "RELOAD Application-ID", §14.5).
pub const APPLICATION_SIP: u16 = 5060;
/// `application` of an AppAttach for SIP over TLS (§14.5).
pub const APPLICATION_SIPS: u16 = 5061;

/// `OverlayLinkType` (§6.5.1.1, IANA §14.10). Unknown values are kept so
/// they round-trip; the link layer decides whether it can use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OverlayLinkType(pub u8);

impl OverlayLinkType {
    /// DTLS over UDP with simple reliability, negotiated with ICE (the MTI link).
    pub const DTLS_UDP_SR: Self = Self(1);
    /// DTLS over UDP with simple reliability, without ICE.
    pub const DTLS_UDP_SR_NO_ICE: Self = Self(3);
    /// TLS over TCP with framing header, without ICE.
    pub const TLS_TCP_FH_NO_ICE: Self = Self(4);
    /// Reserved for experiments (§14.10).
    pub const EXP_LINK: Self = Self(5);

    /// Whether this link type skips ICE (§6.5.1.1: such candidates MUST
    /// NOT be mixed with ICE candidates in one message).
    pub fn is_no_ice(self) -> bool {
        self == Self::DTLS_UDP_SR_NO_ICE || self == Self::TLS_TCP_FH_NO_ICE
    }
}

/// `CandType` (§6.5.1.1). The `select` that follows it has no length, so
/// an unknown type cannot be skipped and is a decoding error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CandType {
    Host,
    /// Server reflexive.
    Srflx,
    /// Peer reflexive: value 3 is reserved in RFC 6940 (peer-reflexive
    /// candidates are learned, never signalled), but the drafts and
    /// Wireshark decode it, with a related address like srflx.
    Prflx,
    Relay,
}

impl CandType {
    pub fn as_u8(self) -> u8 {
        match self {
            CandType::Host => 1,
            CandType::Srflx => 2,
            CandType::Prflx => 3,
            CandType::Relay => 4,
        }
    }

    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => CandType::Host,
            2 => CandType::Srflx,
            3 => CandType::Prflx,
            4 => CandType::Relay,
            _ => return None,
        })
    }

    /// Whether `rel_addr_port` follows this type on the wire (§6.5.1.1:
    /// every type but host carries the base or mapped address).
    pub fn has_related_address(self) -> bool {
        self != CandType::Host
    }
}

/// `IceExtension` (§6.5.1.1): a name/value pair an ICE agent may ignore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceExtension {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

/// `IceCandidate` (§6.5.1.1). There is no component id: RELOAD links
/// always use component 1.
///
/// `rel_addr_port` must be `Some` exactly when `cand_type` is not host;
/// encoding an inconsistent candidate is a [`WireError::Malformed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCandidate {
    pub addr_port: IpAddressPort,
    pub overlay_link: OverlayLinkType,
    pub foundation: Vec<u8>,
    pub priority: u32,
    pub cand_type: CandType,
    pub rel_addr_port: Option<IpAddressPort>,
    pub extensions: Vec<IceExtension>,
}

impl IceCandidate {
    /// A host candidate (no related address).
    pub fn host(addr_port: IpAddressPort, overlay_link: OverlayLinkType, foundation: Vec<u8>, priority: u32) -> Self {
        IceCandidate {
            addr_port,
            overlay_link,
            foundation,
            priority,
            cand_type: CandType::Host,
            rel_addr_port: None,
            extensions: Vec::new(),
        }
    }

    /// A srflx, prflx or relay candidate with its related address; `None`
    /// when `cand_type` is host, which has none.
    pub fn with_related(
        addr_port: IpAddressPort,
        overlay_link: OverlayLinkType,
        foundation: Vec<u8>,
        priority: u32,
        cand_type: CandType,
        rel_addr_port: IpAddressPort,
    ) -> Option<Self> {
        cand_type.has_related_address().then(|| IceCandidate {
            addr_port,
            overlay_link,
            foundation,
            priority,
            cand_type,
            rel_addr_port: Some(rel_addr_port),
            extensions: Vec::new(),
        })
    }

    /// Whether `rel_addr_port` agrees with `cand_type`.
    pub fn is_consistent(&self) -> bool {
        self.cand_type.has_related_address() == self.rel_addr_port.is_some()
    }
}

/// `AttachReqAns` (§6.5.1.1): the body of both AttachReq and AttachAns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachReqAns {
    pub ufrag: Vec<u8>,
    pub password: Vec<u8>,
    /// [`ROLE_PASSIVE`] in a request, [`ROLE_ACTIVE`] in an answer.
    pub role: Vec<u8>,
    pub candidates: Vec<IceCandidate>,
    /// Asks the receiver to send an Update once the link is up (§6.4.2.3).
    pub send_update: bool,
}

impl AttachReqAns {
    /// An AttachReq body: role "passive".
    pub fn request(ufrag: Vec<u8>, password: Vec<u8>, candidates: Vec<IceCandidate>, send_update: bool) -> Self {
        AttachReqAns { ufrag, password, role: ROLE_PASSIVE.to_vec(), candidates, send_update }
    }

    /// An AttachAns body: role "active".
    pub fn answer(ufrag: Vec<u8>, password: Vec<u8>, candidates: Vec<IceCandidate>, send_update: bool) -> Self {
        AttachReqAns { ufrag, password, role: ROLE_ACTIVE.to_vec(), candidates, send_update }
    }

    pub fn is_passive(&self) -> bool {
        self.role == ROLE_PASSIVE
    }

    pub fn is_active(&self) -> bool {
        self.role == ROLE_ACTIVE
    }

    /// Whether ICE and No-ICE candidates are mixed, which §6.5.1.1 forbids.
    pub fn mixes_ice_and_no_ice(&self) -> bool {
        mixes_ice_and_no_ice(&self.candidates)
    }
}

/// `AppAttachReq` (§6.5.2.1): like Attach, with an application port and
/// without `send_update`. An unsupported application is Error_Not_Found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppAttachReq {
    pub ufrag: Vec<u8>,
    pub password: Vec<u8>,
    pub application: u16,
    pub role: Vec<u8>,
    pub candidates: Vec<IceCandidate>,
}

/// `AppAttachAns` (§6.5.2.2): the same layout as [`AppAttachReq`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppAttachAns {
    pub ufrag: Vec<u8>,
    pub password: Vec<u8>,
    pub application: u16,
    pub role: Vec<u8>,
    pub candidates: Vec<IceCandidate>,
}

impl AppAttachReq {
    /// An AppAttachReq body: role "passive".
    pub fn new(ufrag: Vec<u8>, password: Vec<u8>, application: u16, candidates: Vec<IceCandidate>) -> Self {
        AppAttachReq { ufrag, password, application, role: ROLE_PASSIVE.to_vec(), candidates }
    }
}

impl AppAttachAns {
    /// An AppAttachAns body: role "active".
    pub fn new(ufrag: Vec<u8>, password: Vec<u8>, application: u16, candidates: Vec<IceCandidate>) -> Self {
        AppAttachAns { ufrag, password, application, role: ROLE_ACTIVE.to_vec(), candidates }
    }
}

impl Codec for OverlayLinkType {
    fn encode(&self, w: &mut Writer) {
        w.u8(self.0);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(OverlayLinkType(r.u8("overlay link type")?))
    }
}

impl Codec for CandType {
    fn encode(&self, w: &mut Writer) {
        w.u8(self.as_u8());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let v = r.u8("candidate type")?;
        // §6.3.1.1: an unknown `select` type is a parse error.
        CandType::from_u8(v).ok_or(WireError::Invalid { what: "candidate type", value: v.into() })
    }
}

impl Codec for IceExtension {
    fn encode(&self, w: &mut Writer) {
        // §6.5.1.1: `opaque name<0..2^16-1>; opaque value<0..2^16-1>`.
        w.opaque(2, "ice extension name", &self.name);
        w.opaque(2, "ice extension value", &self.value);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let name = r.opaque(2, "ice extension name")?.to_vec();
        let value = r.opaque(2, "ice extension value")?.to_vec();
        Ok(IceExtension { name, value })
    }
}

impl Codec for IceCandidate {
    fn encode(&self, w: &mut Writer) {
        if !self.is_consistent() {
            w.fail(WireError::Malformed {
                what: "ice candidate",
                reason: "rel_addr_port must be present exactly when the type is not host",
            });
        }
        self.addr_port.encode(w);
        self.overlay_link.encode(w);
        w.opaque(1, "foundation", &self.foundation);
        w.u32(self.priority);
        self.cand_type.encode(w);
        // §6.5.1.1: `select (type)`: only non-host types carry rel_addr_port.
        if let Some(rel) = &self.rel_addr_port {
            rel.encode(w);
        }
        put_vec(w, 2, "ice extensions", &self.extensions);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let addr_port = IpAddressPort::decode(r)?;
        let overlay_link = OverlayLinkType::decode(r)?;
        let foundation = r.opaque(1, "foundation")?.to_vec();
        let priority = r.u32("priority")?;
        let cand_type = CandType::decode(r)?;
        let rel_addr_port = if cand_type.has_related_address() { Some(IpAddressPort::decode(r)?) } else { None };
        let extensions = get_vec(r, 2, "ice extensions")?;
        Ok(IceCandidate { addr_port, overlay_link, foundation, priority, cand_type, rel_addr_port, extensions })
    }
}

impl Codec for AttachReqAns {
    fn encode(&self, w: &mut Writer) {
        // §6.5.1.1: ufrag, password and role are `opaque<0..2^8-1>`.
        w.opaque(1, "ufrag", &self.ufrag);
        w.opaque(1, "password", &self.password);
        w.opaque(1, "role", &self.role);
        put_vec(w, 2, "candidates", &self.candidates);
        w.boolean(self.send_update);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let ufrag = r.opaque(1, "ufrag")?.to_vec();
        let password = r.opaque(1, "password")?.to_vec();
        let role = r.opaque(1, "role")?.to_vec();
        let candidates = get_vec(r, 2, "candidates")?;
        let send_update = r.boolean("send_update")?;
        Ok(AttachReqAns { ufrag, password, role, candidates, send_update })
    }
}

impl Codec for AppAttachReq {
    fn encode(&self, w: &mut Writer) {
        encode_app_attach(w, &self.ufrag, &self.password, self.application, &self.role, &self.candidates);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let (ufrag, password, application, role, candidates) = decode_app_attach(r)?;
        Ok(AppAttachReq { ufrag, password, application, role, candidates })
    }
}

impl Codec for AppAttachAns {
    fn encode(&self, w: &mut Writer) {
        encode_app_attach(w, &self.ufrag, &self.password, self.application, &self.role, &self.candidates);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let (ufrag, password, application, role, candidates) = decode_app_attach(r)?;
        Ok(AppAttachAns { ufrag, password, application, role, candidates })
    }
}

fn mixes_ice_and_no_ice(candidates: &[IceCandidate]) -> bool {
    let no_ice = candidates.iter().filter(|c| c.overlay_link.is_no_ice()).count();
    no_ice != 0 && no_ice != candidates.len()
}

type AppAttachFields = (Vec<u8>, Vec<u8>, u16, Vec<u8>, Vec<IceCandidate>);

// §6.5.2.1/§6.5.2.2: ufrag, password, application, role, candidates; the
// request and the answer share this layout.
fn encode_app_attach(
    w: &mut Writer,
    ufrag: &[u8],
    password: &[u8],
    application: u16,
    role: &[u8],
    candidates: &[IceCandidate],
) {
    w.opaque(1, "ufrag", ufrag);
    w.opaque(1, "password", password);
    w.u16(application);
    w.opaque(1, "role", role);
    put_vec(w, 2, "candidates", candidates);
}

fn decode_app_attach(r: &mut Reader<'_>) -> Result<AppAttachFields, WireError> {
    let ufrag = r.opaque(1, "ufrag")?.to_vec();
    let password = r.opaque(1, "password")?.to_vec();
    let application = r.u16("application")?;
    let role = r.opaque(1, "role")?.to_vec();
    let candidates = get_vec(r, 2, "candidates")?;
    Ok((ufrag, password, application, role, candidates))
}

#[cfg(test)]
pub(crate) mod strategies {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use std::net::{IpAddr, SocketAddr};

    pub(crate) fn ip_address_port() -> impl Strategy<Value = IpAddressPort> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(a, p)| IpAddressPort(SocketAddr::new(IpAddr::from(a), p))),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(a, p)| IpAddressPort(SocketAddr::new(IpAddr::from(a), p))),
        ]
    }

    pub(crate) fn overlay_link_type() -> impl Strategy<Value = OverlayLinkType> {
        any::<u8>().prop_map(OverlayLinkType)
    }

    pub(crate) fn cand_type() -> impl Strategy<Value = CandType> {
        prop_oneof![Just(CandType::Host), Just(CandType::Srflx), Just(CandType::Prflx), Just(CandType::Relay)]
    }

    pub(crate) fn ice_extension() -> impl Strategy<Value = IceExtension> {
        (vec(any::<u8>(), 0..32), vec(any::<u8>(), 0..32)).prop_map(|(name, value)| IceExtension { name, value })
    }

    /// Always consistent: `rel_addr_port` is drawn only for non-host types.
    pub(crate) fn ice_candidate() -> impl Strategy<Value = IceCandidate> {
        (
            ip_address_port(),
            overlay_link_type(),
            vec(any::<u8>(), 0..32),
            any::<u32>(),
            cand_type(),
            ip_address_port(),
            vec(ice_extension(), 0..4),
        )
            .prop_map(|(addr_port, overlay_link, foundation, priority, cand_type, rel, extensions)| {
                IceCandidate {
                    addr_port,
                    overlay_link,
                    foundation,
                    priority,
                    cand_type,
                    rel_addr_port: cand_type.has_related_address().then_some(rel),
                    extensions,
                }
            })
    }

    pub(crate) fn attach_req_ans() -> impl Strategy<Value = AttachReqAns> {
        (
            vec(any::<u8>(), 0..32),
            vec(any::<u8>(), 0..32),
            vec(any::<u8>(), 0..32),
            vec(ice_candidate(), 0..4),
            any::<bool>(),
        )
            .prop_map(|(ufrag, password, role, candidates, send_update)| AttachReqAns {
                ufrag,
                password,
                role,
                candidates,
                send_update,
            })
    }

    pub(crate) fn app_attach_req() -> impl Strategy<Value = AppAttachReq> {
        (
            vec(any::<u8>(), 0..32),
            vec(any::<u8>(), 0..32),
            any::<u16>(),
            vec(any::<u8>(), 0..32),
            vec(ice_candidate(), 0..4),
        )
            .prop_map(|(ufrag, password, application, role, candidates)| AppAttachReq {
                ufrag,
                password,
                application,
                role,
                candidates,
            })
    }

    pub(crate) fn app_attach_ans() -> impl Strategy<Value = AppAttachAns> {
        app_attach_req().prop_map(|r| AppAttachAns {
            ufrag: r.ufrag,
            password: r.password,
            application: r.application,
            role: r.role,
            candidates: r.candidates,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(s: &str) -> IpAddressPort {
        IpAddressPort(s.parse().unwrap())
    }

    fn host() -> IceCandidate {
        IceCandidate::host(addr("192.0.2.1:6084"), OverlayLinkType::DTLS_UDP_SR, b"f1".to_vec(), 0x7e00_01ff)
    }

    fn relay() -> IceCandidate {
        let mut c = IceCandidate::with_related(
            addr("198.51.100.7:3478"),
            OverlayLinkType::DTLS_UDP_SR,
            b"r".to_vec(),
            5,
            CandType::Relay,
            addr("203.0.113.9:1000"),
        )
        .unwrap();
        c.extensions.push(IceExtension { name: b"n".to_vec(), value: b"v".to_vec() });
        c
    }

    // Hand-assembled from §6.5.1.1 and §6.3.1.1.
    const HOST_BYTES: &str = concat!(
        "0106c000020117c4", // addr_port: ipv4, len 6, 192.0.2.1, port 6084
        "01",               // DTLS-UDP-SR
        "026631",           // foundation "f1"
        "7e0001ff",         // priority
        "01",               // host: no rel_addr_port
        "0000",             // no extensions
    );

    const RELAY_BYTES: &str = concat!(
        "0106c63364070d96", // 198.51.100.7:3478
        "01",               // DTLS-UDP-SR
        "0172",             // foundation "r"
        "00000005",         // priority
        "04",               // relay
        "0106cb00710903e8", // rel_addr_port 203.0.113.9:1000
        "000600016e000176", // one extension: name "n", value "v"
    );

    #[test]
    fn host_candidate_bytes() {
        let b = host().to_bytes().unwrap();
        assert_eq!(hex::encode(&b), HOST_BYTES);
        assert_eq!(IceCandidate::from_bytes(&b).unwrap(), host());
    }

    #[test]
    fn relay_candidate_bytes() {
        let b = relay().to_bytes().unwrap();
        assert_eq!(hex::encode(&b), RELAY_BYTES);
        assert_eq!(IceCandidate::from_bytes(&b).unwrap(), relay());
    }

    #[test]
    fn attach_request_bytes() {
        let req = AttachReqAns::request(b"uf".to_vec(), b"pw".to_vec(), vec![host()], true);
        assert!(req.is_passive());
        let expected = [
            "027566",           // ufrag "uf"
            "027077",           // password "pw"
            "0770617373697665", // role "passive"
            "0013",             // candidates: 19 bytes
            HOST_BYTES,
            "01", // send_update
        ]
        .concat();
        let b = req.to_bytes().unwrap();
        assert_eq!(hex::encode(&b), expected);
        assert_eq!(AttachReqAns::from_bytes(&b).unwrap(), req);
        let ans = AttachReqAns::answer(vec![], vec![], vec![], false);
        assert!(ans.is_active());
        assert_eq!(hex::encode(ans.to_bytes().unwrap()), "000006616374697665000000");
    }

    #[test]
    fn app_attach_bytes() {
        let req = AppAttachReq::new(b"u".to_vec(), b"p".to_vec(), APPLICATION_SIP, vec![]);
        // "u", "p", 5060 = 0x13c4, "passive", empty candidate list.
        assert_eq!(hex::encode(req.to_bytes().unwrap()), "01750170 13c4 0770617373697665 0000".replace(' ', ""));
        let ans = AppAttachAns::new(vec![], vec![], APPLICATION_SIPS, vec![relay()]);
        let b = ans.to_bytes().unwrap();
        assert_eq!(hex::encode(&b[..4]), "000013c5");
        assert_eq!(AppAttachAns::from_bytes(&b).unwrap(), ans);
    }

    #[test]
    fn inconsistent_candidate_is_an_encoding_error() {
        let mut c = host();
        c.rel_addr_port = Some(addr("192.0.2.2:1"));
        assert!(matches!(c.to_bytes(), Err(WireError::Malformed { .. })));
        let mut c = relay();
        c.rel_addr_port = None;
        assert!(matches!(c.to_bytes(), Err(WireError::Malformed { .. })));
        assert!(
            IceCandidate::with_related(
                addr("192.0.2.2:1"),
                OverlayLinkType(1),
                vec![],
                0,
                CandType::Host,
                addr("192.0.2.2:1")
            )
            .is_none()
        );
    }

    #[test]
    fn unknown_candidate_type_is_a_parse_error() {
        let mut b = hex::decode(HOST_BYTES).unwrap();
        b[16] = 9; // the CandType byte
        assert_eq!(IceCandidate::from_bytes(&b), Err(WireError::Invalid { what: "candidate type", value: 9 }));
    }

    #[test]
    fn prflx_carries_a_related_address() {
        let c = IceCandidate::with_related(
            addr("[2001:db8::1]:9"),
            OverlayLinkType(1),
            vec![],
            1,
            CandType::Prflx,
            addr("10.0.0.1:9"),
        )
        .unwrap();
        let b = c.to_bytes().unwrap();
        assert_eq!(IceCandidate::from_bytes(&b).unwrap(), c);
    }

    #[test]
    fn unknown_link_type_round_trips_and_mixing_is_detected() {
        let mut c = host();
        c.overlay_link = OverlayLinkType(0x42);
        assert_eq!(IceCandidate::from_bytes(&c.to_bytes().unwrap()).unwrap(), c);
        let mut no_ice = host();
        no_ice.overlay_link = OverlayLinkType::TLS_TCP_FH_NO_ICE;
        assert!(AttachReqAns::request(vec![], vec![], vec![host(), no_ice.clone()], false).mixes_ice_and_no_ice());
        assert!(!AttachReqAns::request(vec![], vec![], vec![no_ice], false).mixes_ice_and_no_ice());
    }

    #[test]
    fn truncated_bodies_are_errors() {
        let bodies = [
            AttachReqAns::request(b"uf".to_vec(), b"pw".to_vec(), vec![host(), relay()], true).to_bytes().unwrap(),
            AppAttachReq::new(b"u".to_vec(), b"p".to_vec(), 5060, vec![relay()]).to_bytes().unwrap(),
            AppAttachAns::new(b"u".to_vec(), b"p".to_vec(), 5061, vec![host()]).to_bytes().unwrap(),
        ];
        for (i, b) in bodies.iter().enumerate() {
            for n in 0..b.len() {
                let p = &b[..n];
                let err = match i {
                    0 => AttachReqAns::from_bytes(p).is_err(),
                    1 => AppAttachReq::from_bytes(p).is_err(),
                    _ => AppAttachAns::from_bytes(p).is_err(),
                };
                assert!(err, "body {i} prefix {n} decoded");
            }
        }
    }

    proptest! {
        #[test]
        fn ice_candidate_round_trips(c in strategies::ice_candidate()) {
            prop_assert_eq!(IceCandidate::from_bytes(&c.to_bytes().unwrap()).unwrap(), c);
        }

        #[test]
        fn attach_round_trips(a in strategies::attach_req_ans()) {
            prop_assert_eq!(AttachReqAns::from_bytes(&a.to_bytes().unwrap()).unwrap(), a);
        }

        #[test]
        fn app_attach_round_trips(q in strategies::app_attach_req(), a in strategies::app_attach_ans()) {
            prop_assert_eq!(AppAttachReq::from_bytes(&q.to_bytes().unwrap()).unwrap(), q);
            prop_assert_eq!(AppAttachAns::from_bytes(&a.to_bytes().unwrap()).unwrap(), a);
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..96)) {
            let _ = AttachReqAns::from_bytes(&b);
            let _ = AppAttachReq::from_bytes(&b);
            let _ = AppAttachAns::from_bytes(&b);
            let _ = IceCandidate::from_bytes(&b);
        }
    }
}
