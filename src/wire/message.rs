//! A whole RELOAD message (RFC 6940 §6.3): forwarding header, message
//! contents (code, body, extensions; §6.3.3) and security block (§6.3.4).

use std::fmt;

use super::attach::{AppAttachAns, AppAttachReq, AttachReqAns};
use super::codec::{Codec, Reader, WireError, Writer, get_vec, put_vec};
use super::error::ErrorResponse;
use super::header::ForwardingHeader;
use super::security_block::SecurityBlock;
use super::storage::{FetchAns, FetchReq, FindAns, FindReq, StatAns, StatReq, StoreAns, StoreReq};
use super::topology::{
    ConfigUpdateAns, ConfigUpdateReq, JoinAns, JoinReq, LeaveAns, LeaveReq, PingAns, PingReq, ProbeAns, ProbeReq,
    RouteQueryAns, RouteQueryReq, UpdateAns, UpdateReq,
};

/// `message_code` (§6.3.3, §14.8): requests are odd, their answer is the
/// next even number, 0xffff is Error.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageCode(pub u16);

impl MessageCode {
    pub const ERROR: MessageCode = MessageCode(0xffff);

    pub fn is_request(self) -> bool {
        self.0 & 1 == 1 && self != Self::ERROR
    }

    /// The answer code of a request code.
    pub fn answer(self) -> MessageCode {
        MessageCode(self.0.wrapping_add(1))
    }
}

/// A message extension (§6.3.3): unknown extensions are kept so the
/// receiver can answer Error_Unknown_Extension for critical ones.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MessageExtension {
    pub extension_type: u16,
    pub critical: bool,
    pub content: Vec<u8>,
}

impl Codec for MessageExtension {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.extension_type);
        w.boolean(self.critical);
        w.opaque(4, "extension content", &self.content);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(MessageExtension {
            extension_type: r.u16("extension type")?,
            critical: r.boolean("extension critical")?,
            content: r.opaque(4, "extension content")?.to_vec(),
        })
    }
}

macro_rules! bodies {
    ($( $code:literal $name:literal => $variant:ident($ty:ty) ),* $(,)?) => {
        /// A typed message body, one variant per message code.
        #[derive(Clone, PartialEq, Eq, Debug)]
        pub enum Body {
            $( $variant($ty), )*
            Error(ErrorResponse),
            /// A code this implementation does not know (kept verbatim).
            Unknown { code: u16, body: Vec<u8> },
        }

        impl MessageCode {
            /// Every method code of RFC 6940 plus Error, in numeric order.
            pub const ALL: &'static [MessageCode] = &[$( MessageCode($code), )* MessageCode::ERROR];

            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $code => Some($name), )*
                    0xffff => Some("error"),
                    _ => None,
                }
            }
        }

        impl Body {
            pub fn code(&self) -> MessageCode {
                match self {
                    $( Body::$variant(_) => MessageCode($code), )*
                    Body::Error(_) => MessageCode::ERROR,
                    Body::Unknown { code, .. } => MessageCode(*code),
                }
            }

            fn encode_body(&self, w: &mut Writer) {
                match self {
                    $( Body::$variant(b) => b.encode(w), )*
                    Body::Error(b) => b.encode(w),
                    Body::Unknown { body, .. } => w.bytes(body),
                }
            }

            /// Decodes the body bytes of a message with the given code.
            pub fn decode_body(code: MessageCode, bytes: &[u8]) -> Result<Body, WireError> {
                Ok(match code.0 {
                    $( $code => Body::$variant(<$ty>::from_bytes(bytes)?), )*
                    0xffff => Body::Error(ErrorResponse::from_bytes(bytes)?),
                    other => Body::Unknown { code: other, body: bytes.to_vec() },
                })
            }
        }
    };
}

bodies! {
    0x01 "probe_req" => ProbeReq(ProbeReq),
    0x02 "probe_ans" => ProbeAns(ProbeAns),
    0x03 "attach_req" => AttachReq(AttachReqAns),
    0x04 "attach_ans" => AttachAns(AttachReqAns),
    0x07 "store_req" => StoreReq(StoreReq),
    0x08 "store_ans" => StoreAns(StoreAns),
    0x09 "fetch_req" => FetchReq(FetchReq),
    0x0a "fetch_ans" => FetchAns(FetchAns),
    0x0d "find_req" => FindReq(FindReq),
    0x0e "find_ans" => FindAns(FindAns),
    0x0f "join_req" => JoinReq(JoinReq),
    0x10 "join_ans" => JoinAns(JoinAns),
    0x11 "leave_req" => LeaveReq(LeaveReq),
    0x12 "leave_ans" => LeaveAns(LeaveAns),
    0x13 "update_req" => UpdateReq(UpdateReq),
    0x14 "update_ans" => UpdateAns(UpdateAns),
    0x15 "route_query_req" => RouteQueryReq(RouteQueryReq),
    0x16 "route_query_ans" => RouteQueryAns(RouteQueryAns),
    0x17 "ping_req" => PingReq(PingReq),
    0x18 "ping_ans" => PingAns(PingAns),
    0x19 "stat_req" => StatReq(StatReq),
    0x1a "stat_ans" => StatAns(StatAns),
    0x1d "app_attach_req" => AppAttachReq(AppAttachReq),
    0x1e "app_attach_ans" => AppAttachAns(AppAttachAns),
    0x21 "config_update_req" => ConfigUpdateReq(ConfigUpdateReq),
    0x22 "config_update_ans" => ConfigUpdateAns(ConfigUpdateAns),
}

impl fmt::Debug for MessageCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}({:#x})", self.0),
            None => write!(f, "MessageCode({:#x})", self.0),
        }
    }
}

/// `MessageContents` (§6.3.3): what the signature covers (with the overlay
/// hash and transaction id).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MessageContents {
    pub body: Body,
    pub extensions: Vec<MessageExtension>,
}

impl MessageContents {
    pub fn new(body: Body) -> Self {
        MessageContents { body, extensions: Vec::new() }
    }

    pub fn code(&self) -> MessageCode {
        self.body.code()
    }
}

impl Codec for MessageContents {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.code().0);
        w.vec(4, "message body", |w| self.body.encode_body(w));
        put_vec(w, 4, "message extensions", &self.extensions);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let code = MessageCode(r.u16("message code")?);
        let body_bytes = r.opaque(4, "message body")?;
        let body = Body::decode_body(code, body_bytes)?;
        let extensions = get_vec(r, 4, "message extensions")?;
        Ok(MessageContents { body, extensions })
    }
}

/// A complete, unfragmented message.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Message {
    pub header: ForwardingHeader,
    pub contents: MessageContents,
    pub security: SecurityBlock,
}

impl Message {
    /// Encodes the message, writing the true total length into the header.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut w = Writer::with_capacity(256);
        self.header.encode_with_length(&mut w, 0);
        self.contents.encode(&mut w);
        self.security.encode(&mut w);
        let total = w.len();
        let len = u32::try_from(total).map_err(|_| WireError::TooLong {
            what: "message",
            len: total,
            max: u32::MAX as usize,
        })?;
        w.patch_u32(16, len);
        w.finish()
    }

    /// Decodes a whole message: the header's length must match the bytes
    /// and the message must not be a fragment (reassemble first, §6.7).
    pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
        let raw = RawMessage::parse(bytes)?;
        if !raw.header.fragment.is_whole() {
            return Err(WireError::Malformed { what: "message", reason: "is a fragment; reassemble first" });
        }
        let contents = MessageContents::from_bytes(raw.contents)?;
        let security = SecurityBlock::from_bytes(raw.security)?;
        Ok(Message { header: raw.header, contents, security })
    }
}

/// A message split into its three parts without decoding the body: what a
/// forwarding peer needs (§6.1: intermediate peers do not verify), and the
/// exact contents bytes a signature covers.
#[derive(Clone, Debug)]
pub struct RawMessage<'a> {
    pub header: ForwardingHeader,
    /// Bytes of the forwarding header as received.
    pub header_len: usize,
    pub contents: &'a [u8],
    pub security: &'a [u8],
}

impl<'a> RawMessage<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<RawMessage<'a>, WireError> {
        let mut r = Reader::new(bytes);
        let header = ForwardingHeader::decode(&mut r)?;
        if usize::try_from(header.length).ok() != Some(bytes.len()) {
            return Err(WireError::Malformed {
                what: "forwarding header",
                reason: "length does not match the message",
            });
        }
        let header_len = r.position();
        if !header.fragment.is_whole() {
            // A fragment's payload is an arbitrary slice of the message.
            return Ok(RawMessage { header, header_len, contents: r.rest(), security: &[] });
        }
        let start = r.position();
        r.u16("message code")?;
        r.opaque(4, "message body")?;
        r.opaque(4, "message extensions")?;
        let end = r.position();
        let contents = bytes.get(start..end).unwrap_or_default();
        Ok(RawMessage { header, header_len, contents, security: r.rest() })
    }

    /// The message code, read without decoding the body.
    pub fn code(&self) -> Option<MessageCode> {
        Self::parse_code(self.contents).map(MessageCode)
    }

    /// The first two bytes of message contents as a code.
    pub fn parse_code(contents: &[u8]) -> Option<u16> {
        Some(u16::from_be_bytes([*contents.first()?, *contents.get(1)?]))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::wire::attach::strategies as at;
    use crate::wire::error::strategies as er;
    use crate::wire::security_block::strategies as sb;
    use crate::wire::storage::strategies as st;
    use crate::wire::topology::strategies as tp;
    use crate::wire::types::{Destination, NodeId, ResourceId};

    /// Every body variant, so the property covers every message code.
    fn body() -> impl Strategy<Value = Body> {
        prop_oneof![
            tp::probe_req().prop_map(Body::ProbeReq),
            tp::probe_ans().prop_map(Body::ProbeAns),
            at::attach_req_ans().prop_map(Body::AttachReq),
            at::attach_req_ans().prop_map(Body::AttachAns),
            st::store_req().prop_map(Body::StoreReq),
            st::store_ans().prop_map(Body::StoreAns),
            st::fetch_req().prop_map(Body::FetchReq),
            st::fetch_ans().prop_map(Body::FetchAns),
            st::find_req().prop_map(Body::FindReq),
            st::find_ans().prop_map(Body::FindAns),
            tp::join_req().prop_map(Body::JoinReq),
            tp::join_ans().prop_map(Body::JoinAns),
            tp::leave_req().prop_map(Body::LeaveReq),
            tp::leave_ans().prop_map(Body::LeaveAns),
            tp::update_req().prop_map(Body::UpdateReq),
            tp::update_ans().prop_map(Body::UpdateAns),
            tp::route_query_req().prop_map(Body::RouteQueryReq),
            tp::route_query_ans().prop_map(Body::RouteQueryAns),
            tp::ping_req().prop_map(Body::PingReq),
            tp::ping_ans().prop_map(Body::PingAns),
            st::stat_req().prop_map(Body::StatReq),
            st::stat_ans().prop_map(Body::StatAns),
            at::app_attach_req().prop_map(Body::AppAttachReq),
            at::app_attach_ans().prop_map(Body::AppAttachAns),
            tp::config_update_req().prop_map(Body::ConfigUpdateReq),
            tp::config_update_ans().prop_map(Body::ConfigUpdateAns),
            er::error_response().prop_map(Body::Error),
            // Unassigned codes (0x05, 0x0b, 0x1b, 0x23) are kept verbatim.
            (prop::sample::select(vec![0x05u16, 0x0b, 0x1b, 0x23]), prop::collection::vec(any::<u8>(), 0..16))
                .prop_map(|(code, body)| Body::Unknown { code, body }),
        ]
    }

    fn message() -> impl Strategy<Value = Message> {
        let dest = prop_oneof![
            any::<u128>().prop_map(|v| Destination::Node(NodeId::from_u128(v))),
            prop::array::uniform16(any::<u8>()).prop_map(|b| Destination::Resource(ResourceId(b.to_vec()))),
        ];
        (
            any::<u32>(),
            any::<u64>(),
            1u8..=100,
            prop::collection::vec(dest.clone(), 0..3),
            prop::collection::vec(dest, 1..3),
            body(),
            prop::collection::vec(
                (any::<u16>(), any::<bool>(), prop::collection::vec(any::<u8>(), 0..8)).prop_map(
                    |(extension_type, critical, content)| MessageExtension { extension_type, critical, content },
                ),
                0..2,
            ),
            sb::security_block(),
        )
            .prop_map(|(overlay, txid, ttl, via, dest, body, extensions, security)| {
                let mut header = ForwardingHeader::new(overlay, 1, txid, dest);
                header.ttl = ttl;
                header.via_list = via;
                Message { header, contents: MessageContents { body, extensions }, security }
            })
    }

    proptest! {
        #[test]
        fn every_message_round_trips(m in message()) {
            let bytes = m.encode().unwrap();
            let back = Message::decode(&bytes).unwrap();
            // The header's length is filled in by encode.
            prop_assert_eq!(back.header.length as usize, bytes.len());
            let mut expected = m.clone();
            expected.header.length = back.header.length;
            prop_assert_eq!(&back, &expected);
            prop_assert_eq!(back.encode().unwrap(), bytes);
        }

        #[test]
        fn truncations_and_garbage_are_errors_not_panics(m in message(), cut in any::<prop::sample::Index>(), junk in prop::collection::vec(any::<u8>(), 0..64)) {
            let bytes = m.encode().unwrap();
            let n = cut.index(bytes.len());
            prop_assert!(Message::decode(&bytes[..n]).is_err());
            let _ = Message::decode(&junk);
            let _ = RawMessage::parse(&junk);
        }
    }

    #[test]
    fn every_code_is_named_and_requests_pair_with_answers() {
        for code in MessageCode::ALL {
            assert!(code.name().is_some(), "{code:?}");
            if code.is_request() {
                assert!(MessageCode::ALL.contains(&code.answer()), "{code:?} has no answer code");
            }
        }
        assert_eq!(MessageCode::ALL.len(), 27);
    }

    #[test]
    fn a_fragment_must_be_reassembled_first() {
        let h = ForwardingHeader::new(1, 1, 9, vec![Destination::Node(NodeId::from_u128(1))]);
        let m = Message {
            header: h,
            contents: MessageContents::new(Body::PingReq(crate::wire::topology::PingReq { padding: vec![0; 600] })),
            security: crate::wire::security_block::SecurityBlock {
                certificates: vec![],
                signature: crate::wire::security_block::Signature::none(),
            },
        };
        let bytes = m.encode().unwrap();
        let frags = crate::wire::fragment::fragment(&bytes, 400).unwrap();
        assert!(frags.len() > 1);
        assert!(Message::decode(&frags[0]).is_err());
    }
}
