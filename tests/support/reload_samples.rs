//! Sample RELOAD messages with realistic contents: one for every message
//! code of RFC 6940, signed by a peer with a real X.509 certificate.

use chordphone::security::{
    KeyAlgorithm, KeyPair, cert_hash_identity, self_signed_certificate, sign_message, sign_stored_data,
};
use chordphone::wire::attach::{
    APPLICATION_SIP, AppAttachAns, AppAttachReq, AttachReqAns, CandType, IceCandidate, OverlayLinkType,
};
use chordphone::wire::error::{ErrorCode, ErrorResponse};
use chordphone::wire::kinds::{SipRegistration, TurnServer, certificate_by_user_resource, sip_registration_resource};
use chordphone::wire::security_block::{GenericCertificate, SecurityBlock};
use chordphone::wire::storage::{
    ArrayEntry, ArrayRange, DataValue, DictionaryEntry, Entry, FetchAns, FetchKindResponse, FetchReq, FindAns,
    FindKindData, FindReq, MetaData, ModelSpecifier, StatAns, StatKindResponse, StatReq, StoreAns, StoreKindData,
    StoreKindResponse, StoreReq, StoredData, StoredDataSpecifier, StoredMetaData,
};
use chordphone::wire::topology::{
    ChordLeaveData, ChordUpdateData, ConfigUpdateAns, ConfigUpdateReq, JoinAns, JoinReq, KindDescription, LeaveAns,
    LeaveReq, PingAns, PingReq, ProbeAns, ProbeInformation, ProbeInformationType, ProbeReq, RouteQueryAns,
    RouteQueryReq, UpdateAns, UpdateReq,
};
use chordphone::wire::{
    Body, Codec, Destination, ForwardingHeader, IpAddressPort, KindId, Message, MessageCode, MessageContents,
    MessageExtension, NodeId, ResourceId, overlay_hash,
};
use sha2::{Digest, Sha256};

pub const OVERLAY: &str = "chordphone.example";
pub const CONFIG_ROOT: &str = r#"<overlay xmlns="urn:ietf:params:xml:ns:p2p:config-base">"#;
pub const AOR: &str = "alice@chordphone.example";

pub fn node(i: u128) -> NodeId {
    NodeId::from_u128(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
}

/// A peer's identity: a self-signed certificate naming its Node-ID and
/// user (RFC 6940 §11.3.1) and its key, signing with `crate::security`.
struct Signer {
    der: Vec<u8>,
    key: KeyPair,
}

impl Signer {
    /// Valid from 2023-11-14 for a year.
    const NOT_BEFORE: u64 = 1_700_000_000;

    fn new(node: NodeId, algorithm: KeyAlgorithm) -> Signer {
        let key = KeyPair::generate(algorithm).unwrap();
        let not_after = Self::NOT_BEFORE + 365 * 86_400;
        let der = self_signed_certificate(&key, OVERLAY, Some(AOR), &[node], Self::NOT_BEFORE, not_after).unwrap();
        Signer { der, key }
    }

    /// A message signed over overlay ‖ transaction_id ‖ contents (§6.3.4).
    fn message(&self, header: ForwardingHeader, contents: MessageContents) -> Message {
        let identity = cert_hash_identity(&self.der);
        let bytes = contents.to_bytes().unwrap();
        let signature = sign_message(&self.key, &identity, header.overlay, header.transaction_id, &bytes).unwrap();
        let certificates = vec![GenericCertificate::x509(self.der.clone())];
        Message { header, contents, security: SecurityBlock { certificates, signature } }
    }

    /// A value stored by this peer, signed as §7.1 says.
    fn stored(&self, resource: &ResourceId, kind: KindId, value: Entry<DataValue>, lifetime: u32) -> StoredData {
        let storage_time = Self::NOT_BEFORE * 1000;
        let identity = cert_hash_identity(&self.der);
        let is_array = matches!(value, Entry::Array(_));
        let bytes = value.to_bytes().unwrap();
        let signature = sign_stored_data(&self.key, &identity, resource, kind, storage_time, &bytes, is_array).unwrap();
        StoredData { storage_time, lifetime, value, signature }
    }
}

pub fn ping(txid: u64) -> Message {
    let header = ForwardingHeader::new(overlay_hash(OVERLAY), 1, txid, vec![Destination::Node(node(2))]);
    let contents = MessageContents::new(Body::PingReq(PingReq { padding: vec![0; 16] }));
    Signer::new(node(1), KeyAlgorithm::EcdsaP256Sha256).message(header, contents)
}

fn v4(s: &str) -> IpAddressPort {
    IpAddressPort(s.parse().unwrap())
}

fn candidates(host: &str, reflexive: &str, kind: CandType) -> Vec<IceCandidate> {
    let link = OverlayLinkType::DTLS_UDP_SR;
    vec![
        IceCandidate::host(v4(host), link, b"1".to_vec(), 0x7e00_00ff),
        IceCandidate::host(IpAddressPort("[2001:db8::1]:6084".parse().unwrap()), link, b"2".to_vec(), 0x7e00_00fe),
        IceCandidate::with_related(v4(reflexive), link, b"3".to_vec(), 0x6400_00ff, kind, v4(host)).unwrap(),
    ]
}

/// Every message code in `MessageCode::ALL`, requests from peer 1 (A) and
/// answers from peer 2 (B); several error codes at the end.
pub fn sample_messages() -> Vec<Message> {
    // RSA PKCS#1 v1.5 with SHA-256 is the algorithm every node must
    // implement (§6.3.4); the other peer signs with ECDSA P-256.
    let (a, b) =
        (Signer::new(node(1), KeyAlgorithm::RsaPkcs1Sha256), Signer::new(node(2), KeyAlgorithm::EcdsaP256Sha256));
    let overlay = overlay_hash(OVERLAY);
    let aor = sip_registration_resource(AOR);
    let user = certificate_by_user_resource("alice@chordphone.example");
    let route = SipRegistration::Route {
        contact_prefs: b"+sip.instance=\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\"".to_vec(),
        destination_list: vec![Destination::Node(node(3)), Destination::Node(node(1))],
    };
    let reg_route = a.stored(&aor, KindId::SIP_REGISTRATION, Entry::Dictionary(route.to_entry(node(1)).unwrap()), 3600);
    let uri = SipRegistration::Uri(b"sip:alice@office.chordphone.example".to_vec());
    let reg_uri = a.stored(&aor, KindId::SIP_REGISTRATION, Entry::Dictionary(uri.to_entry(node(4)).unwrap()), 3600);
    let cert_entry = a.stored(
        &user,
        KindId::CERTIFICATE_BY_USER,
        Entry::Array(ArrayEntry { index: 0, value: DataValue::new(a.der.clone()) }),
        86_400,
    );
    let turn = TurnServer { iteration: 1, server_address: v4("192.0.2.1:3478") };
    let turn_value = a.stored(&aor, KindId::TURN_SERVICE, Entry::Single(turn.to_data_value().unwrap()), 600);
    let test_resource = ResourceId::from_name(b"chordphone-test");
    let test_value =
        a.stored(&test_resource, KindId::CHORDPHONE_TEST, Entry::Single(DataValue::new(b"hello".to_vec())), 60);
    let store_ans = StoreAns {
        kind_responses: vec![StoreKindResponse {
            kind: KindId::SIP_REGISTRATION,
            generation_counter: 8,
            replicas: vec![node(5), node(6)],
        }],
    };
    let meta =
        MetaData { exists: true, value_length: 120, hash_algorithm: 4, hash_value: Sha256::digest(b"value").to_vec() };
    let config = r#"<?xml version="1.0" encoding="UTF-8"?><overlay xmlns="urn:ietf:params:xml:ns:p2p:config-base"><configuration instance-name="chordphone.example" sequence="2"><topology-plugin>CHORD-RELOAD</topology-plugin><node-id-length>16</node-id-length></configuration></overlay>"#;
    let kind_xml = r#"<kind name="SIP-REGISTRATION"><data-model>DICTIONARY</data-model><access-control>USER-NODE-MATCH</access-control><max-count>1</max-count><max-size>1000</max-size></kind>"#;

    let bodies: Vec<(Destination, Body)> = vec![
        (
            Destination::Node(node(2)),
            Body::ProbeReq(ProbeReq {
                requested_info: vec![
                    ProbeInformationType::ResponsibleSet,
                    ProbeInformationType::NumResources,
                    ProbeInformationType::Uptime,
                ],
            }),
        ),
        (
            Destination::Node(node(1)),
            Body::ProbeAns(ProbeAns {
                probe_info: vec![
                    ProbeInformation::ResponsibleSet { responsible_ppb: 250_000_000 },
                    ProbeInformation::NumResources { num_resources: 42 },
                    ProbeInformation::Uptime { uptime: 3600 },
                ],
            }),
        ),
        (
            Destination::Resource(node(2).to_resource()),
            Body::AttachReq(AttachReqAns::request(
                b"ufragA1".to_vec(),
                b"passwordA-0123456789ab".to_vec(),
                candidates("192.0.2.1:6084", "203.0.113.7:40000", CandType::Srflx),
                true,
            )),
        ),
        (
            Destination::Node(node(1)),
            Body::AttachAns(AttachReqAns::answer(
                b"ufragB2".to_vec(),
                b"passwordB-0123456789ab".to_vec(),
                candidates("192.0.2.2:6084", "198.51.100.9:3478", CandType::Relay),
                false,
            )),
        ),
        (
            Destination::Resource(aor.clone()),
            Body::StoreReq(StoreReq {
                resource: aor.clone(),
                replica_number: 0,
                kind_data: vec![StoreKindData {
                    kind: KindId::SIP_REGISTRATION,
                    generation_counter: 7,
                    values: vec![reg_route.clone(), reg_uri],
                }],
            }),
        ),
        (Destination::Node(node(1)), Body::StoreAns(store_ans.clone())),
        // Our private kind, declared to tshark through its Kind-ID table.
        (
            Destination::Resource(test_resource.clone()),
            Body::StoreReq(StoreReq {
                resource: test_resource.clone(),
                replica_number: 1,
                kind_data: vec![StoreKindData {
                    kind: KindId::CHORDPHONE_TEST,
                    generation_counter: 1,
                    values: vec![test_value],
                }],
            }),
        ),
        (
            Destination::Node(node(1)),
            Body::StoreAns(StoreAns {
                kind_responses: vec![StoreKindResponse {
                    kind: KindId::CHORDPHONE_TEST,
                    generation_counter: 1,
                    replicas: vec![],
                }],
            }),
        ),
        (
            Destination::Resource(aor.clone()),
            Body::FetchReq(FetchReq {
                resource: aor.clone(),
                specifiers: vec![
                    StoredDataSpecifier {
                        kind: KindId::SIP_REGISTRATION,
                        generation: 0,
                        model: ModelSpecifier::Dictionary(vec![node(1).0.to_vec()]),
                    },
                    StoredDataSpecifier {
                        kind: KindId::CERTIFICATE_BY_USER,
                        generation: 0,
                        model: ModelSpecifier::Array(vec![ArrayRange { first: 0, last: 0xffff_ffff }]),
                    },
                    StoredDataSpecifier { kind: KindId::TURN_SERVICE, generation: 0, model: ModelSpecifier::Single },
                ],
            }),
        ),
        (
            Destination::Node(node(1)),
            Body::FetchAns(FetchAns {
                kind_responses: vec![
                    FetchKindResponse { kind: KindId::SIP_REGISTRATION, generation: 8, values: vec![reg_route] },
                    FetchKindResponse { kind: KindId::CERTIFICATE_BY_USER, generation: 2, values: vec![cert_entry] },
                    FetchKindResponse { kind: KindId::TURN_SERVICE, generation: 1, values: vec![turn_value] },
                ],
            }),
        ),
        (
            Destination::Resource(aor.clone()),
            Body::FindReq(FindReq {
                resource: aor.clone(),
                kinds: vec![KindId::SIP_REGISTRATION, KindId::TURN_SERVICE],
            }),
        ),
        (
            Destination::Node(node(1)),
            Body::FindAns(FindAns {
                results: vec![
                    FindKindData { kind: KindId::SIP_REGISTRATION, closest: aor.clone() },
                    FindKindData { kind: KindId::TURN_SERVICE, closest: ResourceId(vec![]) },
                ],
            }),
        ),
        (
            Destination::Node(node(2)),
            Body::JoinReq(JoinReq { joining_peer_id: node(1), overlay_specific_data: vec![] }),
        ),
        (Destination::Node(node(1)), Body::JoinAns(JoinAns::default())),
        (
            Destination::Node(node(2)),
            Body::LeaveReq(LeaveReq {
                leaving_peer_id: node(1),
                data: ChordLeaveData::FromSucc { successors: vec![node(2), node(3), node(4)] },
            }),
        ),
        (Destination::Node(node(1)), Body::LeaveAns(LeaveAns::default())),
        (
            Destination::Node(node(2)),
            Body::UpdateReq(UpdateReq {
                uptime: 3600,
                data: ChordUpdateData::Full {
                    predecessors: vec![node(7), node(8), node(9)],
                    successors: vec![node(2), node(3), node(4)],
                    fingers: {
                        let mut f: Vec<NodeId> = (10..26).map(node).collect();
                        f.sort();
                        f
                    },
                },
            }),
        ),
        (Destination::Node(node(1)), Body::UpdateAns(UpdateAns::default())),
        (
            Destination::Node(node(2)),
            Body::RouteQueryReq(RouteQueryReq {
                send_update: true,
                destination: Destination::Resource(aor.clone()),
                overlay_specific_data: vec![],
            }),
        ),
        (Destination::Node(node(1)), Body::RouteQueryAns(RouteQueryAns { next_peer: node(3) })),
        (Destination::Node(node(2)), Body::PingReq(PingReq { padding: vec![0; 64] })),
        (
            Destination::Node(node(1)),
            Body::PingAns(PingAns { response_id: 0x0123_4567_89ab_cdef, time: 1_700_000_000_123 }),
        ),
        (
            Destination::Resource(aor.clone()),
            Body::StatReq(StatReq {
                resource: aor.clone(),
                specifiers: vec![StoredDataSpecifier {
                    kind: KindId::SIP_REGISTRATION,
                    generation: 0,
                    model: ModelSpecifier::Dictionary(vec![]),
                }],
            }),
        ),
        (
            Destination::Node(node(1)),
            Body::StatAns(StatAns {
                kind_responses: vec![StatKindResponse {
                    kind: KindId::SIP_REGISTRATION,
                    generation: 8,
                    values: vec![StoredMetaData {
                        storage_time: 1_700_000_000_000,
                        lifetime: 3600,
                        metadata: Entry::Dictionary(DictionaryEntry { key: node(1).0.to_vec(), value: meta }),
                    }],
                }],
            }),
        ),
        (
            Destination::Node(node(2)),
            Body::AppAttachReq(AppAttachReq::new(
                b"ufragA3".to_vec(),
                b"passwordA-3456789abcde".to_vec(),
                APPLICATION_SIP,
                candidates("192.0.2.1:5060", "203.0.113.7:45060", CandType::Srflx),
            )),
        ),
        (
            Destination::Node(node(1)),
            Body::AppAttachAns(AppAttachAns::new(
                b"ufragB4".to_vec(),
                b"passwordB-3456789abcde".to_vec(),
                APPLICATION_SIP,
                candidates("192.0.2.2:5060", "203.0.113.8:45060", CandType::Srflx),
            )),
        ),
        (
            Destination::Node(node(2)),
            Body::ConfigUpdateReq(ConfigUpdateReq::Config { config_data: config.as_bytes().to_vec() }),
        ),
        (Destination::Node(node(1)), Body::ConfigUpdateAns(ConfigUpdateAns)),
        (
            Destination::Node(node(2)),
            Body::ConfigUpdateReq(ConfigUpdateReq::Kinds { kinds: vec![KindDescription::from_xml(kind_xml)] }),
        ),
        (Destination::Node(node(1)), Body::ConfigUpdateAns(ConfigUpdateAns)),
        (
            Destination::Node(node(1)),
            Body::Error(ErrorResponse::with_reason(ErrorCode::FORBIDDEN, "signer is not the owner of the resource")),
        ),
        (Destination::Node(node(1)), Body::Error(ErrorResponse::with_reason(ErrorCode::NOT_FOUND, ""))),
        (
            Destination::Node(node(1)),
            Body::Error(ErrorResponse {
                error_code: ErrorCode::GENERATION_COUNTER_TOO_LOW,
                error_info: store_ans.to_bytes().unwrap(),
            }),
        ),
        (
            Destination::Node(node(1)),
            Body::Error(ErrorResponse::unknown_kinds(&[KindId(0xf000_0002), KindId(0xf000_0003)])),
        ),
        (
            Destination::Node(node(1)),
            Body::Error(ErrorResponse::with_reason(ErrorCode::CONFIG_TOO_OLD, "configuration sequence 1 < 2")),
        ),
        (
            Destination::Node(node(1)),
            Body::Error(ErrorResponse::with_reason(ErrorCode::IN_PROGRESS, "attach in progress")),
        ),
        (Destination::Node(node(1)), Body::Error(ErrorResponse::with_reason(ErrorCode::TTL_EXCEEDED, ""))),
        (Destination::Node(node(1)), Body::Error(ErrorResponse::with_reason(ErrorCode::MESSAGE_EXPIRED, "expired"))),
    ];

    let mut txid = 0x2f1d_7c3a_9b40_0000u64;
    bodies
        .into_iter()
        .map(|(to, body)| {
            let code = body.code();
            // An answer reuses its request's transaction id; each error
            // answers a request that is not in the capture.
            if code.is_request() || code == MessageCode::ERROR {
                txid += 1;
            }
            let mut header = ForwardingHeader::new(overlay, 2, txid, vec![to]);
            let mut contents = MessageContents::new(body);
            match code.0 {
                // The Attach reached B through peer 3, which put the previous
                // hop (A) on the Via List (§6.2.2)…
                0x03 => header.via_list = vec![Destination::Node(node(1))],
                // …so the answer goes back through peer 3 to A.
                0x04 => header.destination_list.insert(0, Destination::Node(node(3))),
                0x17 => contents.extensions.push(MessageExtension {
                    extension_type: 0x8001,
                    critical: false,
                    content: b"chordphone".to_vec(),
                }),
                _ => {}
            }
            if code.is_request() { a.message(header, contents) } else { b.message(header, contents) }
        })
        .collect()
}
