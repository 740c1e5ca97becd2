//! The Error response body (RFC 6940 §6.3.3.1) and the error codes of
//! RFC 6940 §14.9 and RFC 7851 §9.2.

use std::fmt;

use super::codec::{Codec, Reader, WireError, Writer, get_vec, put_vec};
use super::types::KindId;

/// `uint16 error_code` (§6.3.3.1, IANA "RELOAD Error Code"). Unknown codes
/// are kept as they are, so they can be relayed and logged.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    pub const FORBIDDEN: Self = Self(2);
    pub const NOT_FOUND: Self = Self(3);
    pub const REQUEST_TIMEOUT: Self = Self(4);
    pub const GENERATION_COUNTER_TOO_LOW: Self = Self(5);
    pub const INCOMPATIBLE_WITH_OVERLAY: Self = Self(6);
    pub const UNSUPPORTED_FORWARDING_OPTION: Self = Self(7);
    pub const DATA_TOO_LARGE: Self = Self(8);
    pub const DATA_TOO_OLD: Self = Self(9);
    pub const TTL_EXCEEDED: Self = Self(0xA);
    pub const MESSAGE_TOO_LARGE: Self = Self(0xB);
    pub const UNKNOWN_KIND: Self = Self(0xC);
    pub const UNKNOWN_EXTENSION: Self = Self(0xD);
    pub const RESPONSE_TOO_LARGE: Self = Self(0xE);
    pub const CONFIG_TOO_OLD: Self = Self(0xF);
    pub const CONFIG_TOO_NEW: Self = Self(0x10);
    pub const IN_PROGRESS: Self = Self(0x11);
    pub const EXP_A: Self = Self(0x12);
    pub const EXP_B: Self = Self(0x13);
    pub const INVALID_MESSAGE: Self = Self(0x14);
    // RFC 7851 §9.2: the diagnostics (Path_Track / Diagnostic_Ping) errors.
    pub const UNDERLAY_DESTINATION_UNREACHABLE: Self = Self(101);
    pub const UNDERLAY_TIME_EXCEEDED: Self = Self(102);
    pub const MESSAGE_EXPIRED: Self = Self(103);
    pub const UPSTREAM_MISROUTING: Self = Self(104);
    pub const LOOP_DETECTED: Self = Self(105);
    pub const TTL_HOPS_EXCEEDED: Self = Self(106);

    /// Every code RFC 6940 and RFC 7851 define, in numeric order.
    pub fn all() -> &'static [ErrorCode] {
        &ALL
    }

    /// The registry name (e.g. `Error_Not_Found`), `None` for codes not defined.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::FORBIDDEN => "Error_Forbidden",
            Self::NOT_FOUND => "Error_Not_Found",
            Self::REQUEST_TIMEOUT => "Error_Request_Timeout",
            Self::GENERATION_COUNTER_TOO_LOW => "Error_Generation_Counter_Too_Low",
            Self::INCOMPATIBLE_WITH_OVERLAY => "Error_Incompatible_with_Overlay",
            Self::UNSUPPORTED_FORWARDING_OPTION => "Error_Unsupported_Forwarding_Option",
            Self::DATA_TOO_LARGE => "Error_Data_Too_Large",
            Self::DATA_TOO_OLD => "Error_Data_Too_Old",
            Self::TTL_EXCEEDED => "Error_TTL_Exceeded",
            Self::MESSAGE_TOO_LARGE => "Error_Message_Too_Large",
            Self::UNKNOWN_KIND => "Error_Unknown_Kind",
            Self::UNKNOWN_EXTENSION => "Error_Unknown_Extension",
            Self::RESPONSE_TOO_LARGE => "Error_Response_Too_Large",
            Self::CONFIG_TOO_OLD => "Error_Config_Too_Old",
            Self::CONFIG_TOO_NEW => "Error_Config_Too_New",
            Self::IN_PROGRESS => "Error_In_Progress",
            Self::EXP_A => "Error_Exp_A",
            Self::EXP_B => "Error_Exp_B",
            Self::INVALID_MESSAGE => "Error_Invalid_Message",
            Self::UNDERLAY_DESTINATION_UNREACHABLE => "Error_Underlay_Destination_Unreachable",
            Self::UNDERLAY_TIME_EXCEEDED => "Error_Underlay_Time_Exceeded",
            Self::MESSAGE_EXPIRED => "Error_Message_Expired",
            Self::UPSTREAM_MISROUTING => "Error_Upstream_Misrouting",
            Self::LOOP_DETECTED => "Error_Loop_Detected",
            Self::TTL_HOPS_EXCEEDED => "Error_TTL_Hops_Exceeded",
            _ => return None,
        })
    }
}

const ALL: [ErrorCode; 25] = [
    ErrorCode::FORBIDDEN,
    ErrorCode::NOT_FOUND,
    ErrorCode::REQUEST_TIMEOUT,
    ErrorCode::GENERATION_COUNTER_TOO_LOW,
    ErrorCode::INCOMPATIBLE_WITH_OVERLAY,
    ErrorCode::UNSUPPORTED_FORWARDING_OPTION,
    ErrorCode::DATA_TOO_LARGE,
    ErrorCode::DATA_TOO_OLD,
    ErrorCode::TTL_EXCEEDED,
    ErrorCode::MESSAGE_TOO_LARGE,
    ErrorCode::UNKNOWN_KIND,
    ErrorCode::UNKNOWN_EXTENSION,
    ErrorCode::RESPONSE_TOO_LARGE,
    ErrorCode::CONFIG_TOO_OLD,
    ErrorCode::CONFIG_TOO_NEW,
    ErrorCode::IN_PROGRESS,
    ErrorCode::EXP_A,
    ErrorCode::EXP_B,
    ErrorCode::INVALID_MESSAGE,
    ErrorCode::UNDERLAY_DESTINATION_UNREACHABLE,
    ErrorCode::UNDERLAY_TIME_EXCEEDED,
    ErrorCode::MESSAGE_EXPIRED,
    ErrorCode::UPSTREAM_MISROUTING,
    ErrorCode::LOOP_DETECTED,
    ErrorCode::TTL_HOPS_EXCEEDED,
];

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "ErrorCode({n})"),
            None => write!(f, "ErrorCode({:#x})", self.0),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "error {:#x}", self.0),
        }
    }
}

/// `ErrorResponse` (§6.3.3.1): the body of a message with code 0xFFFF.
/// `error_info` is a UTF-8 reason unless the code gives it a structure
/// (Error_Unknown_Kind here, Error_Generation_Counter_Too_Low in storage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    pub error_code: ErrorCode,
    pub error_info: Vec<u8>,
}

/// How many Kind-IDs fit in `KindId unknown_kinds<0..2^8-1>` (4 bytes each).
pub const MAX_UNKNOWN_KINDS: usize = 0xff / 4;

impl ErrorResponse {
    /// An error whose `error_info` is a human-readable UTF-8 reason
    /// (§6.3.3.1). A reason longer than the 64 KiB field is cut at a
    /// character boundary rather than failing the whole answer.
    pub fn with_reason(error_code: ErrorCode, reason: &str) -> Self {
        let mut end = reason.len().min(0xffff);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let error_info = reason.get(..end).unwrap_or_default().as_bytes().to_vec();
        ErrorResponse { error_code, error_info }
    }

    /// Error_Unknown_Kind listing the kinds the receiver lacks (§6.3.3.1):
    /// `KindId unknown_kinds<0..2^8-1>`. Only the first
    /// [`MAX_UNKNOWN_KINDS`] fit; the sender's ConfigUpdate then brings
    /// them, and a retry names any still missing.
    pub fn unknown_kinds(kinds: &[KindId]) -> Self {
        let kinds = kinds.get(..kinds.len().min(MAX_UNKNOWN_KINDS)).unwrap_or_default();
        let mut w = Writer::new();
        put_vec(&mut w, 1, "unknown kinds", kinds);
        ErrorResponse { error_code: ErrorCode::UNKNOWN_KIND, error_info: w.finish().unwrap_or_default() }
    }

    /// The Kind-IDs of an Error_Unknown_Kind (§6.3.3.1); a different code
    /// or a malformed list is an error.
    pub fn parse_unknown_kinds(&self) -> Result<Vec<KindId>, WireError> {
        if self.error_code != ErrorCode::UNKNOWN_KIND {
            return Err(WireError::Invalid { what: "error code for unknown kinds", value: self.error_code.0.into() });
        }
        let mut r = Reader::new(&self.error_info);
        let kinds = get_vec(&mut r, 1, "unknown kinds")?;
        r.finish("unknown kinds")?;
        Ok(kinds)
    }

    /// `error_info` as a UTF-8 reason, when it is one.
    pub fn reason(&self) -> Option<&str> {
        std::str::from_utf8(&self.error_info).ok()
    }
}

impl Codec for ErrorCode {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.0);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(ErrorCode(r.u16("error code")?))
    }
}

impl Codec for ErrorResponse {
    fn encode(&self, w: &mut Writer) {
        self.error_code.encode(w);
        // §6.3.3.1: `opaque error_info<0..2^16-1>`.
        w.opaque(2, "error info", &self.error_info);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let error_code = ErrorCode::decode(r)?;
        let error_info = r.opaque(2, "error info")?.to_vec();
        Ok(ErrorResponse { error_code, error_info })
    }
}

#[cfg(test)]
pub(crate) mod strategies {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    pub(crate) fn error_code() -> impl Strategy<Value = ErrorCode> {
        prop_oneof![proptest::sample::select(ErrorCode::all()), any::<u16>().prop_map(ErrorCode)]
    }

    pub(crate) fn error_response() -> impl Strategy<Value = ErrorResponse> {
        (error_code(), vec(any::<u8>(), 0..32))
            .prop_map(|(error_code, error_info)| ErrorResponse { error_code, error_info })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn codes_match_the_registries() {
        // RFC 6940 §14.9: 2..=0x14 are contiguous; RFC 7851 §9.2: 101..=106.
        let values: Vec<u16> = ErrorCode::all().iter().map(|c| c.0).collect();
        let expected: Vec<u16> = (2..=0x14).chain(101..=106).collect();
        assert_eq!(values, expected);
        for c in ErrorCode::all() {
            assert!(c.name().is_some_and(|n| n.starts_with("Error_")), "{c:?}");
        }
        assert_eq!(ErrorCode(0).name(), None);
        assert_eq!(ErrorCode::NOT_FOUND.to_string(), "Error_Not_Found");
        assert_eq!(format!("{:?}", ErrorCode(0x99)), "ErrorCode(0x99)");
    }

    #[test]
    fn reason_bytes() {
        let e = ErrorResponse::with_reason(ErrorCode::FORBIDDEN, "no");
        assert_eq!(hex::encode(e.to_bytes().unwrap()), "000200026e6f");
        assert_eq!(e.reason(), Some("no"));
        let long = "é".repeat(40_000); // 80,000 bytes, 2 per character
        let cut = ErrorResponse::with_reason(ErrorCode::INVALID_MESSAGE, &long);
        assert_eq!(cut.error_info.len(), 0xfffe);
        assert!(cut.to_bytes().is_ok());
    }

    #[test]
    fn unknown_kinds_bytes() {
        let e = ErrorResponse::unknown_kinds(&[KindId(1), KindId(0xF000_0001)]);
        // code 0x000c, info length 9, list length 8, two Kind-IDs.
        assert_eq!(hex::encode(e.to_bytes().unwrap()), "000c00090800000001f0000001");
        assert_eq!(e.parse_unknown_kinds().unwrap(), vec![KindId(1), KindId(0xF000_0001)]);
        let many: Vec<KindId> = (0..100).map(KindId).collect();
        assert_eq!(ErrorResponse::unknown_kinds(&many).parse_unknown_kinds().unwrap().len(), MAX_UNKNOWN_KINDS);
    }

    #[test]
    fn parse_unknown_kinds_rejects_other_codes_and_bad_lists() {
        assert!(ErrorResponse::with_reason(ErrorCode::NOT_FOUND, "").parse_unknown_kinds().is_err());
        let bad = ErrorResponse { error_code: ErrorCode::UNKNOWN_KIND, error_info: vec![3, 0, 0, 1] };
        assert!(bad.parse_unknown_kinds().is_err());
        let trailing = ErrorResponse { error_code: ErrorCode::UNKNOWN_KIND, error_info: vec![0, 9] };
        assert!(trailing.parse_unknown_kinds().is_err());
    }

    #[test]
    fn unknown_code_round_trips_and_truncation_fails() {
        let e = ErrorResponse { error_code: ErrorCode(0x7777), error_info: vec![1, 2, 3] };
        let b = e.to_bytes().unwrap();
        assert_eq!(ErrorResponse::from_bytes(&b).unwrap(), e);
        for n in 0..b.len() {
            assert!(ErrorResponse::from_bytes(&b[..n]).is_err());
        }
    }

    proptest! {
        #[test]
        fn error_response_round_trips(e in strategies::error_response()) {
            prop_assert_eq!(ErrorResponse::from_bytes(&e.to_bytes().unwrap()).unwrap(), e);
        }

        #[test]
        fn unknown_kinds_round_trip(kinds in proptest::collection::vec(any::<u32>().prop_map(KindId), 0..4)) {
            prop_assert_eq!(ErrorResponse::unknown_kinds(&kinds).parse_unknown_kinds().unwrap(), kinds);
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(e) = ErrorResponse::from_bytes(&b) {
                let _ = e.parse_unknown_kinds();
            }
        }
    }
}
