//! Parse errors: what is wrong with a message or a header value.

/// What is wrong with a message or a header value. The `Display` text is
/// short, fixed ASCII, suitable as the reason phrase of a 400 response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("Empty message")]
    Empty,
    #[error("Message head is not UTF-8")]
    NotUtf8,
    #[error("Incomplete message head")]
    IncompleteHead,
    #[error("Malformed start line")]
    BadStartLine,
    #[error("Version Not Supported")]
    BadVersion,
    #[error("Invalid method")]
    BadMethod,
    #[error("Invalid Request-URI: {0}")]
    BadRequestUri(&'static str),
    #[error("Invalid status code")]
    BadStatusCode,
    #[error("Malformed header line")]
    BadHeaderLine,
    #[error("Invalid header name")]
    BadHeaderName,
    #[error("Invalid characters in header value")]
    BadHeaderValue,
    #[error("Missing {0} header")]
    MissingHeader(&'static str),
    #[error("Multiple {0} headers")]
    DuplicateHeader(&'static str),
    #[error("Invalid {name} header: {reason}")]
    InvalidHeader { name: &'static str, reason: &'static str },
    #[error("CSeq method does not match request method")]
    CSeqMethodMismatch,
    #[error("Content-Length exceeds message body")]
    BodyTruncated,
    #[error("Invalid value: {0}")]
    InvalidValue(&'static str),
    #[error("{0} is computed, not set")]
    ComputedHeader(&'static str),
}

impl ParseError {
    /// The status code a server answers a request with this defect with:
    /// 505 for a foreign SIP version (§21.5.20), otherwise 400.
    pub fn status_code(&self) -> u16 {
        match self {
            ParseError::BadVersion => 505,
            _ => 400,
        }
    }

    pub(super) fn in_header(self, name: &'static str) -> ParseError {
        match self {
            ParseError::InvalidValue(reason) => ParseError::InvalidHeader { name, reason },
            other => other,
        }
    }
}

pub(super) fn invalid(reason: &'static str) -> ParseError {
    ParseError::InvalidValue(reason)
}
