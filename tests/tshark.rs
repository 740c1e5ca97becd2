//! The proof independent of our own code: one message for every RFC 6940
//! message code, encoded by chordphone, framed (§6.6.2) into UDP datagrams
//! and written to a pcap file, must be decoded by Wireshark's RELOAD
//! dissector (tshark) without any malformed-packet or warning/error expert
//! info, and the fields tshark reports must equal what we encoded.
//!
//! tshark is required: the test fails, it does not skip, when it is
//! missing. How to run it and what it proves: interop/tshark/README.md.

// Integration tests drive real processes, sockets, files and clocks; clippy.toml's
// sans-IO lists are for the library's cores.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

#[path = "support/pcap.rs"]
mod pcap;
#[path = "support/reload_samples.rs"]
mod reload_samples;
#[path = "support/tshark.rs"]
mod tshark;

use std::collections::BTreeSet;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};

use chordphone::wire::attach::{AppAttachAns, AppAttachReq, IceCandidate};
use chordphone::wire::error::ErrorCode;
use chordphone::wire::framing::{AckTracker, FramedMessage, acked_sequences};
use chordphone::wire::header::FIXED_HEADER_LEN;
use chordphone::wire::kinds::SipRegistration;
use chordphone::wire::storage::{Entry, FetchReq, ModelSpecifier, StatReq, StoreAns, StoredData};
use chordphone::wire::topology::{ChordLeaveData, ChordUpdateData, ConfigUpdateReq, ProbeInformation};
use chordphone::wire::{Body, Codec, Destination, IpAddressPort, Message, MessageCode, NodeId};
use reload_samples::{CONFIG_ROOT, ping, sample_messages};
use serde_json::Value;
use tshark::{Tshark, acked_frames, find, norm, strings};

#[test]
fn tshark_decodes_every_message_code_as_encoded() {
    let capture = Capture::conversation(&sample_messages());
    let report = capture.dissect("all-messages.pcap");
    let problems = report.problems();
    assert!(problems.is_empty(), "tshark disagrees with our encoding:\n{}", problems.join("\n"));

    let seen: BTreeSet<u16> = report.message_codes().into_iter().collect();
    let missing: Vec<MessageCode> = MessageCode::ALL.iter().copied().filter(|c| !seen.contains(&c.0)).collect();
    assert!(missing.is_empty(), "message codes tshark never reported: {missing:?}");
}

/// The detector above must be able to fail: frames cut or corrupted in the
/// ways a codec bug would produce are flagged, each on its own frame, while
/// a good frame in the same capture is not.
#[test]
fn tshark_flags_truncated_and_corrupted_frames() {
    let good = ping(0x7777);
    let bytes = good.encode().unwrap();
    let mut capture = Capture::default();
    capture.push(Frame::data(A, 0, good.clone()));
    // 2: the datagram ends before the framed message does.
    let mut datagram = FramedMessage::Data { sequence: 1, message: bytes.clone() }.to_bytes().unwrap();
    datagram.truncate(datagram.len() - 10);
    capture.push(Frame::Raw { from: A, datagram });
    // 3: the framing agrees with the bytes, but the message is shorter than
    // its forwarding header's length says.
    let short = bytes.get(..bytes.len() - 7).unwrap().to_vec();
    capture.push(Frame::Raw {
        from: A,
        datagram: FramedMessage::Data { sequence: 2, message: short }.to_bytes().unwrap(),
    });
    // 4: the message body claims more bytes than the message holds.
    let mut long_body = bytes.clone();
    let body_len_at = FIXED_HEADER_LEN + 18 + 2; // header, one node destination, message_code
    long_body[body_len_at + 3] = long_body[body_len_at + 3].wrapping_add(100);
    capture.push(Frame::Raw {
        from: A,
        datagram: FramedMessage::Data { sequence: 3, message: long_body }.to_bytes().unwrap(),
    });
    // 5: not RELOAD at all (relo_token broken): tshark leaves it undissected.
    let mut token = bytes;
    token[0] ^= 0x01;
    capture.push(Frame::Raw {
        from: A,
        datagram: FramedMessage::Data { sequence: 4, message: token }.to_bytes().unwrap(),
    });

    let problems = capture.dissect("truncated.pcap").problems();
    for frame in 2..=5 {
        assert!(
            problems.iter().any(|p| p.starts_with(&format!("frame {frame}:"))),
            "frame {frame} was not flagged; problems found: {problems:#?}"
        );
    }
    assert!(!problems.iter().any(|p| p.starts_with("frame 1:")), "the good frame was flagged: {problems:#?}");
    assert!(problems.iter().any(|p| p.contains("malformed")), "no malformed-packet report: {problems:#?}");
    assert!(problems.iter().any(|p| p.contains("Truncated")), "no truncation expert info: {problems:#?}");
}

// ---------------------------------------------------------------------------
// The capture: frames, pcap, tshark
// ---------------------------------------------------------------------------

/// Peers of the capture (RFC 5737 documentation addresses); 6084 is the
/// port Wireshark registers reload-framing on (also forced by
/// [`tshark::DISSECTOR_ARGS`]).
const A: SocketAddrV4 = SocketAddrV4::new(std::net::Ipv4Addr::new(192, 0, 2, 1), 6084);
const B: SocketAddrV4 = SocketAddrV4::new(std::net::Ipv4Addr::new(192, 0, 2, 2), 6084);

enum Frame {
    Data { from: SocketAddrV4, sequence: u32, message: Box<Message> },
    Ack { from: SocketAddrV4, ack_sequence: u32, received: u32 },
    Raw { from: SocketAddrV4, datagram: Vec<u8> },
}

impl Frame {
    fn data(from: SocketAddrV4, sequence: u32, message: Message) -> Frame {
        Frame::Data { from, sequence, message: Box::new(message) }
    }

    fn datagram(&self) -> (SocketAddrV4, Vec<u8>) {
        match self {
            Frame::Data { from, sequence, message } => {
                let framed = FramedMessage::Data { sequence: *sequence, message: message.encode().unwrap() };
                (*from, framed.to_bytes().unwrap())
            }
            Frame::Ack { from, ack_sequence, received } => {
                let ack = FramedMessage::Ack { ack_sequence: *ack_sequence, received: *received };
                (*from, ack.to_bytes().unwrap())
            }
            Frame::Raw { from, datagram } => (*from, datagram.clone()),
        }
    }
}

#[derive(Default)]
struct Capture {
    frames: Vec<Frame>,
}

impl Capture {
    fn push(&mut self, frame: Frame) {
        self.frames.push(frame);
    }

    /// Requests go A → B and answers B → A over one DTLS-UDP-SR link; each
    /// side numbers its frames and ACKs the other's at once (§6.6.3). One
    /// frame of A is lost, so B's ACK bitmaps have a hole.
    fn conversation(messages: &[Message]) -> Capture {
        /// The message before which A loses a frame.
        const LOST: usize = 4;
        let mut capture = Capture::default();
        let (mut seq_a, mut seq_b) = (0u32, 0u32);
        let (mut acks_by_a, mut acks_by_b) = (AckTracker::default(), AckTracker::default());
        for (i, message) in messages.iter().enumerate() {
            let from_a = message.contents.code().is_request();
            let (seq, acker, from, to) =
                if from_a { (&mut seq_a, &mut acks_by_b, A, B) } else { (&mut seq_b, &mut acks_by_a, B, A) };
            if i == LOST {
                *seq += 1; // lost on the way: neither the frame nor its ACK is captured
            }
            capture.push(Frame::data(from, *seq, message.clone()));
            let FramedMessage::Ack { ack_sequence, received } = acker.on_data(*seq) else { unreachable!() };
            capture.push(Frame::Ack { from: to, ack_sequence, received });
            *seq += 1;
        }
        capture
    }

    /// Writes the pcap under the test's target directory (kept, so it can
    /// be opened in Wireshark) and has tshark dissect it.
    fn dissect(&self, name: &str) -> Report<'_> {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tshark");
        std::fs::create_dir_all(&dir).unwrap();
        let mut pcap = pcap::PcapWriter::new();
        for frame in &self.frames {
            let (from, datagram) = frame.datagram();
            let to = if from == A { B } else { A };
            pcap.udp(from, to, &datagram);
        }
        let path = dir.join(name);
        std::fs::write(&path, pcap.into_bytes()).unwrap();

        let tshark = Tshark::new(&dir);
        let json: Value = serde_json::from_str(&tshark.run(&path, &["-T", "json", "--no-duplicate-keys"])).unwrap();
        let packets = json.as_array().cloned().unwrap_or_default();
        let mut expert = tshark.expert(&path, None);
        if !expert.is_empty() {
            // Attribute every warning/error to its frame (keeping the file's
            // list should some belong to none).
            let per_frame: Vec<String> = (1..=self.frames.len())
                .flat_map(|n| tshark.expert(&path, Some(n)).into_iter().map(move |e| format!("frame {n}: {e}")))
                .collect();
            if !per_frame.is_empty() {
                expert = per_frame;
            }
        }
        let acked = acked_frames(&tshark.run(&path, &["-T", "pdml"]));
        Report { capture: self, path, packets, expert, acked }
    }
}

// ---------------------------------------------------------------------------
// What tshark reported, compared with what we sent
// ---------------------------------------------------------------------------

struct Report<'a> {
    capture: &'a Capture,
    path: PathBuf,
    packets: Vec<Value>,
    expert: Vec<String>,
    /// Per frame, the sequence numbers tshark says an ACK's bitmap covers.
    acked: Vec<BTreeSet<u32>>,
}

impl Report<'_> {
    /// Every disagreement, each starting with `frame N:` when it has a frame.
    fn problems(&self) -> Vec<String> {
        let mut problems = self.expert.clone();
        if self.packets.len() != self.capture.frames.len() {
            problems.push(format!("tshark read {} frames, we wrote {}", self.packets.len(), self.capture.frames.len()));
        }
        for (i, (frame, packet)) in self.capture.frames.iter().zip(&self.packets).enumerate() {
            let n = i + 1;
            let layers = &packet["_source"]["layers"];
            let mut p = Vec::new();
            if !find(layers, "_ws.malformed").is_empty() {
                p.push("malformed packet".to_string());
            }
            match frame {
                Frame::Data { sequence, message, .. } => check_data(layers, *sequence, message, &mut p),
                Frame::Ack { ack_sequence, received, .. } => {
                    let framing = &layers["reload-framing"];
                    expect(&mut p, framing, "", "reload_framing.type", [129]);
                    expect(&mut p, framing, "", "reload_framing.ack_sequence", [*ack_sequence]);
                    expect(&mut p, framing, "", "reload_framing.received", [*received]);
                    // §6.6.2: which earlier frames the bitmap acknowledges.
                    let ours: BTreeSet<u32> = acked_sequences(*ack_sequence, *received).skip(1).collect();
                    let theirs = self.acked.get(i).cloned().unwrap_or_default();
                    if ours != theirs {
                        p.push(format!("ACK bitmap {received:#010x}: tshark acks {theirs:?}, we meant {ours:?}"));
                    }
                }
                Frame::Raw { .. } => {
                    if layers.get("reload").is_none() {
                        p.push("not dissected as RELOAD".to_string());
                    }
                }
            }
            problems.extend(p.into_iter().map(|e| format!("frame {n}: {e}")));
        }
        if !problems.is_empty() {
            problems.push(format!("(capture kept at {})", self.path.display()));
        }
        problems
    }

    fn message_codes(&self) -> Vec<u16> {
        self.packets
            .iter()
            .flat_map(|p| strings(&p["_source"]["layers"], "", "reload.message.code"))
            .filter_map(|c| c.parse().ok())
            .collect()
    }
}

/// One data frame: framing, forwarding header, message code, body fields
/// and security block.
fn check_data(layers: &Value, sequence: u32, message: &Message, p: &mut Vec<String>) {
    let bytes = message.encode().unwrap();
    let framing = &layers["reload-framing"];
    expect(p, framing, "", "reload_framing.type", [128]);
    expect(p, framing, "", "reload_framing.sequence", [sequence]);
    expect(p, framing, "", "reload_framing.message.length", [bytes.len()]);
    let Some(reload) = layers.get("reload") else {
        p.push("framed message not dissected as RELOAD".to_string());
        return;
    };

    let h = &message.header;
    let fwd = &reload["reload.forwarding"];
    expect(p, fwd, "", "reload.forwarding.overlay", [h.overlay]);
    expect(p, fwd, "", "reload.forwarding.configuration_sequence", [h.configuration_sequence]);
    expect(p, fwd, "", "reload.forwarding.version", [h.version]);
    expect(p, fwd, "", "reload.forwarding.ttl", [h.ttl]);
    expect(p, fwd, "", "reload.forwarding.fragment", [h.fragment.raw()]);
    expect(p, fwd, "", "reload.forwarding.trans_id", [h.transaction_id]);
    expect(p, fwd, "", "reload.forwarding.max_response_length", [h.max_response_length]);
    let length: Vec<String> = fwd.get("reload.length.32").and_then(Value::as_str).map(norm).into_iter().collect();
    compare(p, "forwarding header length", length, vec![bytes.len().to_string()]);
    compare(p, "via list", destinations(&fwd["reload.forwarding.via_list"]), h.via_list.iter().map(dest).collect());
    compare(
        p,
        "destination list",
        destinations(&fwd["reload.forwarding.destination_list"]),
        h.destination_list.iter().map(dest).collect(),
    );

    let contents = &reload["reload.message.contents"];
    expect(p, contents, "", "reload.message.code", [message.contents.code().0]);
    let extensions: Vec<u16> = message.contents.extensions.iter().map(|e| e.extension_type).collect();
    expect(p, contents, "reload.message.extensions", "reload.message_extension.type", extensions);
    let body = &contents["reload.message.body"];
    for c in body_checks(&message.contents.body) {
        c.verify(body, p);
    }

    let sec = &message.security;
    let block = &reload["reload.security_block"];
    expect(p, block, "reload.certificates", "reload.certificate.type", sec.certificates.iter().map(|c| c.cert_type));
    let serials = sec.certificates.iter().map(|c| serial(&c.cert));
    expect(p, block, "reload.certificates", "x509af.serialNumber", serials);
    let sig = &sec.signature;
    expect(p, block, "reload.signatureandhashalgorithm", "reload.hash_algorithm", [sig.algorithm.hash]);
    expect(p, block, "reload.signatureandhashalgorithm", "reload.signature_algorithm", [sig.algorithm.signature]);
    expect(p, block, "reload.signature.identity", "reload.signature.identity.type", [sig.identity.identity_type()]);
    compare(
        p,
        "signature value",
        strings(block, "reload.signature.value", "reload.opaque.data"),
        vec![hex::encode(&sig.value)],
    );
}

/// A field to find in the message body: every value of `field` inside
/// every `within` subtree (the whole body when empty), in the order tshark
/// decoded them.
struct Check {
    within: &'static str,
    field: &'static str,
    want: Want,
}

#[derive(Debug)]
enum Want {
    /// Exactly these values, in this order.
    Values(Vec<String>),
    /// Either list (for a known dissector bug; see the README).
    Either(Vec<String>, Vec<String>),
    /// At least this value among others.
    Contains(String),
    /// This many occurrences (of a subtree).
    Count(usize),
}

fn check<T: ToString>(within: &'static str, field: &'static str, want: impl IntoIterator<Item = T>) -> Check {
    Check { within, field, want: Want::Values(want.into_iter().map(|v| norm(&v.to_string())).collect()) }
}

impl Check {
    fn verify(&self, body: &Value, p: &mut Vec<String>) {
        let what = format!("{} in {}", self.field, if self.within.is_empty() { "body" } else { self.within });
        let got = strings(body, self.within, self.field);
        let ok = match &self.want {
            Want::Values(want) => got == *want,
            Want::Either(true_values, misread) => got == *true_values || got == *misread,
            Want::Contains(one) => got.contains(one),
            Want::Count(n) => got.len() == *n,
        };
        if !ok {
            p.push(format!("{what}: tshark {got:?}, we encoded {:?}", self.want));
        }
    }
}

fn nodes<'a>(ids: impl IntoIterator<Item = &'a NodeId>) -> Vec<String> {
    ids.into_iter().map(NodeId::to_hex).collect()
}

/// The body fields tshark decodes, per message code.
fn body_checks(body: &Body) -> Vec<Check> {
    match body {
        Body::ProbeReq(b) => {
            vec![check("", "reload.probe_information.type", b.requested_info.iter().map(|t| t.as_u8()))]
        }
        Body::ProbeAns(b) => {
            let mut checks =
                vec![check("", "reload.probe_information.type", b.probe_info.iter().map(|i| i.info_type().as_u8()))];
            for info in &b.probe_info {
                match info {
                    ProbeInformation::ResponsibleSet { responsible_ppb } => {
                        checks.push(check("", "reload.responsible_set", [responsible_ppb]))
                    }
                    ProbeInformation::NumResources { num_resources } => {
                        checks.push(check("", "reload.num_resources", [num_resources]))
                    }
                    ProbeInformation::Uptime { uptime } => checks.push(check("", "reload.uptime", [uptime])),
                    ProbeInformation::Unknown { .. } => {}
                }
            }
            checks
        }
        Body::AttachReq(b) | Body::AttachAns(b) => {
            let mut checks = ice(&b.ufrag, &b.password, &b.role, &b.candidates);
            checks.push(check("", "reload.sendupdate", [u8::from(b.send_update)]));
            checks
        }
        Body::AppAttachReq(AppAttachReq { ufrag, password, application, role, candidates })
        | Body::AppAttachAns(AppAttachAns { ufrag, password, application, role, candidates }) => {
            let mut checks = ice(ufrag, password, role, candidates);
            checks.push(check("", "reload.application", [application]));
            checks
        }
        Body::StoreReq(b) => {
            let mut checks = vec![
                check("reload.resource", "reload.opaque.data", [b.resource.to_hex()]),
                check("", "reload.store.replica_number", [b.replica_number]),
                check("", "reload.kinddata.kind", b.kind_data.iter().map(|k| k.kind.0)),
                check("", "reload.generation_counter", b.kind_data.iter().map(|k| k.generation_counter)),
            ];
            checks.extend(stored_data_checks(b.kind_data.iter().flat_map(|k| &k.values)));
            checks
        }
        Body::StoreAns(b) => store_ans_checks(b),
        Body::FetchReq(FetchReq { resource, specifiers }) | Body::StatReq(StatReq { resource, specifiers }) => vec![
            check("reload.resource", "reload.opaque.data", [resource.to_hex()]),
            check("", "reload.kinddata.kind", specifiers.iter().map(|s| s.kind.0)),
            check("", "reload.generation_counter", specifiers.iter().map(|s| s.generation)),
            // ArrayRange values are only in the item text; dictionary keys are
            // misparsed by the dissector (see the README) and not checked.
            Check {
                within: "",
                field: "reload.arrayrange",
                want: Want::Count(
                    specifiers.iter().map(|s| if let ModelSpecifier::Array(r) = &s.model { r.len() } else { 0 }).sum(),
                ),
            },
        ],
        Body::FetchAns(b) => {
            let mut checks = vec![
                check("", "reload.kinddata.kind", b.kind_responses.iter().map(|k| k.kind.0)),
                check("", "reload.generation_counter", b.kind_responses.iter().map(|k| k.generation)),
            ];
            checks.extend(stored_data_checks(b.kind_responses.iter().flat_map(|k| &k.values)));
            checks
        }
        Body::StatAns(b) => {
            let values = || b.kind_responses.iter().flat_map(|k| &k.values);
            let meta = || values().filter_map(|v| v.metadata.inner());
            vec![
                check("", "reload.kinddata.kind", b.kind_responses.iter().map(|k| k.kind.0)),
                check("", "reload.generation_counter", b.kind_responses.iter().map(|k| k.generation)),
                check("", "reload.storeddata.lifetime", values().map(|v| v.lifetime)),
                check("", "reload.metadata.value_length", meta().map(|m| m.value_length)),
                check("reload.metadata.hash_value", "reload.opaque.data", meta().map(|m| hex::encode(&m.hash_value))),
            ]
        }
        Body::FindReq(b) => vec![
            check("reload.resource", "reload.opaque.data", [b.resource.to_hex()]),
            check("", "reload.kindid", b.kinds.iter().map(|k| k.0)),
        ],
        Body::FindAns(b) => vec![
            check("", "reload.kinddata.kind", b.results.iter().map(|r| r.kind.0)),
            check("reload.findkindata.closest", "reload.opaque.data", b.results.iter().map(|r| r.closest.to_hex())),
        ],
        Body::JoinReq(b) => vec![
            check("", "reload.joinreq.joining_peer_id", [b.joining_peer_id.to_hex()]),
            check("reload.overlay_specific_data", "reload.length.16", [b.overlay_specific_data.len()]),
        ],
        Body::JoinAns(b) => {
            vec![check("reload.overlay_specific_data", "reload.length.16", [b.overlay_specific_data.len()])]
        }
        Body::LeaveReq(b) => {
            let mut checks = vec![check("", "reload.leavereq.leaving_peer_id", [b.leaving_peer_id.to_hex()])];
            match &b.data {
                ChordLeaveData::FromSucc { successors } => {
                    checks.push(check("", "reload.chordleavedata.type", [1]));
                    checks.push(check("reload.chordleavedata.successors", "reload.nodeid", nodes(successors)));
                }
                ChordLeaveData::FromPred { predecessors } => {
                    checks.push(check("", "reload.chordleavedata.type", [2]));
                    checks.push(check("reload.chordleavedata.predecessors", "reload.nodeid", nodes(predecessors)));
                }
                ChordLeaveData::Unknown { .. } => {}
            }
            checks
        }
        Body::UpdateReq(b) => {
            let mut checks = vec![check("", "reload.uptime", [b.uptime])];
            let (ty, lists): (u8, Vec<(&'static str, &Vec<NodeId>)>) = match &b.data {
                ChordUpdateData::PeerReady => (1, vec![]),
                ChordUpdateData::Neighbors { predecessors, successors } => (
                    2,
                    vec![
                        ("reload.chordupdate.predecessors", predecessors),
                        ("reload.chordupdate.successors", successors),
                    ],
                ),
                ChordUpdateData::Full { predecessors, successors, fingers } => (
                    3,
                    vec![
                        ("reload.chordupdate.predecessors", predecessors),
                        ("reload.chordupdate.successors", successors),
                        ("reload.chordupdate.fingers", fingers),
                    ],
                ),
                ChordUpdateData::Unknown { ty, .. } => (*ty, vec![]),
            };
            checks.push(check("", "reload.chordupdate.type", [ty]));
            checks.extend(lists.into_iter().map(|(within, ids)| check(within, "reload.nodeid", nodes(ids))));
            checks
        }
        Body::RouteQueryReq(b) => {
            let mut checks = vec![check("", "reload.sendupdate", [u8::from(b.send_update)])];
            checks.extend(route_query_destination(&b.destination));
            checks
        }
        Body::RouteQueryAns(b) => vec![check("", "reload.chordroutequeryans.nodeid", [b.next_peer.to_hex()])],
        Body::PingReq(b) => vec![check("reload.padding", "reload.length.16", [b.padding.len()])],
        Body::PingAns(b) => vec![check("", "reload.ping.response_id", [b.response_id])],
        Body::ConfigUpdateReq(ConfigUpdateReq::Config { config_data }) => vec![
            check("", "reload.configupdatereq.type", [1]),
            check("reload.configupdatereq.config_data", "reload.length.24", [config_data.len()]),
            // The XML dissector found our document's root element there.
            Check {
                within: "reload.configupdatereq.config_data",
                field: "xml.tag",
                want: Want::Contains(CONFIG_ROOT.to_string()),
            },
        ],
        Body::ConfigUpdateReq(ConfigUpdateReq::Kinds { kinds }) => vec![
            check("", "reload.configupdatereq.type", [2]),
            check("reload.configupdatereq.kinddescription", "reload.length.16", kinds.iter().map(|k| k.0.len())),
        ],
        Body::Error(e) => {
            let mut checks = vec![check("", "reload.error_response.code", [e.error_code.0])];
            if e.error_code == ErrorCode::UNKNOWN_KIND {
                checks.push(check("", "reload.kindid", e.parse_unknown_kinds().unwrap().iter().map(|k| k.0)));
            }
            if e.error_code == ErrorCode::GENERATION_COUNTER_TOO_LOW {
                checks.extend(store_ans_checks(&StoreAns::from_bytes(&e.error_info).unwrap()));
            }
            checks
        }
        // Answers whose body is empty for CHORD-RELOAD: nothing to decode.
        Body::LeaveAns(_) | Body::UpdateAns(_) | Body::ConfigUpdateAns(_) => vec![],
        other => panic!("no tshark checks for {other:?}"),
    }
}

fn route_query_destination(d: &Destination) -> Vec<Check> {
    match d {
        Destination::Node(n) => {
            vec![check("reload.routequeryreq.destination", "reload.destination.data.nodeid", [n.to_hex()])]
        }
        Destination::Resource(r) => vec![check("reload.routequeryreq.destination", "reload.opaque.data", [r.to_hex()])],
        _ => vec![],
    }
}

fn store_ans_checks(b: &StoreAns) -> Vec<Check> {
    vec![
        check("", "reload.kinddata.kind", b.kind_responses.iter().map(|k| k.kind.0)),
        check("", "reload.generation_counter", b.kind_responses.iter().map(|k| k.generation_counter)),
        check(
            "reload.storekindresponse.replicas",
            "reload.nodeid",
            b.kind_responses.iter().flat_map(|k| nodes(&k.replicas)),
        ),
    ]
}

/// ICE parameters of Attach and AppAttach (§6.5.1.1, §6.5.2).
///
/// Wireshark reads `priority` four bytes too early (from the candidate's
/// first byte instead of after the foundation; see the README), so the
/// priority check accepts that reading besides the true value.
fn ice(ufrag: &[u8], password: &[u8], role: &[u8], candidates: &[IceCandidate]) -> Vec<Check> {
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    let addr = |a: &IpAddressPort| a.0.ip().to_string();
    let port = |a: &IpAddressPort| a.0.port();
    let related = || candidates.iter().filter_map(|c| c.rel_addr_port.as_ref());
    vec![
        check("reload.ufrag", "reload.opaque.string", [text(ufrag)]),
        check("reload.password", "reload.opaque.string", [text(password)]),
        check("reload.role", "reload.opaque.string", [text(role)]),
        check("", "reload.icecandidate.type", candidates.iter().map(|c| c.cand_type.as_u8())),
        check("", "reload.overlaylink.type", candidates.iter().map(|c| c.overlay_link.0)),
        check("reload.icecandidate.foundation", "reload.opaque.string", candidates.iter().map(|c| text(&c.foundation))),
        check("reload.icecandidate.addr_port", "reload.port", candidates.iter().map(|c| port(&c.addr_port))),
        check(
            "reload.icecandidate.addr_port",
            "reload.ipv4addr",
            candidates.iter().map(|c| &c.addr_port).filter(|a| a.0.is_ipv4()).map(addr),
        ),
        check(
            "reload.icecandidate.addr_port",
            "reload.ipv6addr",
            candidates.iter().map(|c| &c.addr_port).filter(|a| a.0.is_ipv6()).map(addr),
        ),
        check("reload.icecandidate.relay_addr", "reload.port", related().map(port)),
        check("reload.icecandidate.relay_addr", "reload.ipv4addr", related().filter(|a| a.0.is_ipv4()).map(addr)),
        Check {
            within: "",
            field: "reload.icecandidate.priority",
            want: Want::Either(
                candidates.iter().map(|c| c.priority.to_string()).collect(),
                candidates.iter().map(priority_as_wireshark_misreads_it).collect(),
            ),
        },
    ]
}

/// Wireshark's `dissect_icecandidates` reads `priority` at the candidate's
/// offset 0 instead of after the foundation, i.e. the IpAddressPort's type,
/// length and first two address bytes.
fn priority_as_wireshark_misreads_it(c: &IceCandidate) -> String {
    let b = c.to_bytes().unwrap();
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]).to_string()
}

/// Checks on the StoredData values of Store and Fetch answers: lifetimes,
/// model-specific entries and the kind-specific values tshark decodes
/// (SIP-REGISTRATION, TURN-SERVICE, certificates), and one signature each.
fn stored_data_checks<'a>(values: impl Iterator<Item = &'a StoredData> + Clone) -> Vec<Check> {
    let entries = || values.clone().map(|v| &v.value);
    let dictionary = || entries().filter_map(|e| if let Entry::Dictionary(d) = e { Some(d) } else { None });
    let array = || entries().filter_map(|e| if let Entry::Array(a) = e { Some(a) } else { None });
    let registrations: Vec<SipRegistration> =
        dictionary().filter_map(|d| SipRegistration::from_bytes(&d.value.value).ok()).collect();
    let route_destinations = registrations.iter().flat_map(|r| match r {
        SipRegistration::Route { destination_list, .. } => destination_list.clone(),
        _ => vec![],
    });
    vec![
        check("", "reload.storeddata.lifetime", values.clone().map(|v| v.lifetime)),
        check("", "reload.datavalue.exists", entries().filter_map(|e| e.data_value()).map(|d| u8::from(d.exists))),
        // SIP-REGISTRATION is keyed by Node-ID (RFC 7904 §3.2).
        check("reload.dictionarykey", "reload.nodeid", dictionary().map(|d| hex::encode(&d.key))),
        check("", "reload.arrayentry.index", array().map(|a| a.index)),
        check(
            "",
            "reload.sipregistration.type",
            registrations.iter().map(|r| match r {
                SipRegistration::Uri(_) => SipRegistration::URI,
                SipRegistration::Route { .. } => SipRegistration::ROUTE,
                SipRegistration::Unknown { ty, .. } => *ty,
            }),
        ),
        check(
            "reload.sipregistration.data.destination_list",
            "reload.destination.data.nodeid",
            route_destinations.filter_map(|d| match d {
                Destination::Node(n) => Some(n.to_hex()),
                _ => None,
            }),
        ),
        // One signature per stored value (§7).
        Check { within: "", field: "reload.signature.value", want: Want::Count(values.clone().count()) },
    ]
}

/// Compares the values tshark reported under `within`/`field` with ours.
fn expect<T: ToString>(p: &mut Vec<String>, v: &Value, within: &str, field: &str, want: impl IntoIterator<Item = T>) {
    let want = want.into_iter().map(|w| norm(&w.to_string())).collect();
    compare(p, field, strings(v, within, field), want);
}

fn compare(p: &mut Vec<String>, what: &str, got: Vec<String>, want: Vec<String>) {
    if got != want {
        p.push(format!("{what}: tshark {got:?}, we encoded {want:?}"));
    }
}

/// Destination lists as `node:<hex>`, `resource:<hex>`, `opaque:<hex>` or
/// `compressed:<n>`, as tshark decoded them.
fn destinations(list: &Value) -> Vec<String> {
    find(list, "reload.destination")
        .into_iter()
        .map(|d| {
            if let Some(n) = d.get("reload.destination.data.nodeid").and_then(Value::as_str) {
                format!("node:{}", norm(n))
            } else if let Some(r) = d.get("reload.destination.data.resourceid") {
                format!("resource:{}", strings(r, "", "reload.opaque.data").concat())
            } else if let Some(o) = d.get("reload.destination.data.compressed_id") {
                format!("opaque:{}", strings(o, "", "reload.opaque.data").concat())
            } else if let Some(c) = d.get("reload.forwarding.destination.compressed_id").and_then(Value::as_str) {
                format!("compressed:{}", norm(c).parse::<u64>().unwrap_or(0) & 0x7fff)
            } else {
                format!("undecoded:{d}")
            }
        })
        .collect()
}

fn dest(d: &Destination) -> String {
    match d {
        Destination::Node(n) => format!("node:{}", n.to_hex()),
        Destination::Resource(r) => format!("resource:{}", r.to_hex()),
        Destination::OpaqueId(o) => format!("opaque:{}", hex::encode(o)),
        Destination::Compressed(c) => format!("compressed:{}", c & 0x7fff),
        Destination::Unknown { ty, data } => format!("unknown:{ty}:{}", hex::encode(data)),
    }
}

/// A certificate's serial number as tshark's x509 dissector prints it.
fn serial(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    hex::encode(cert.tbs_certificate.raw_serial())
}
