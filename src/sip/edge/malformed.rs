//! Answers to requests `SipMessage::parse` refused (RFC 3261 §16.3 step 1,
//! §8.2): a 400 (505 for a foreign version) built from the raw lines.

use crate::sip::message::{ParseError, SipMessage, expand_compact};

/// Builds the error response for a request `SipMessage::parse` refused,
/// from its raw lines.
///
/// The answer echoes the request's Via, From, To, Call-ID and CSeq lines as
/// they came (the client matches it by them), even when one of those is
/// itself what made the request unparseable (e.g. a broken From); Via,
/// Call-ID and CSeq must be present.
pub(super) fn salvage_error_response(bytes: &[u8], err: &ParseError) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(bytes);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.lines().map(|l| l.trim_end_matches('\r')).skip_while(|l| l.is_empty());
    let start = lines.next()?;
    let mut words = start.split_whitespace();
    let (Some(method), Some(_uri), Some(version), None) = (words.next(), words.next(), words.next(), words.next())
    else {
        return None;
    };
    if method.starts_with("SIP/") || !version.starts_with("SIP/") {
        return None;
    }
    let reason = err.to_string();
    let mut out = format!("SIP/2.0 {} {}\r\n", err.status_code(), reason);
    let mut has_tag = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let full = expand_compact(name.trim());
        if ["Via", "From", "To", "Call-ID", "CSeq"].iter().any(|n| n.eq_ignore_ascii_case(full)) {
            let value = value.trim();
            if full.eq_ignore_ascii_case("To") && !has_tag {
                has_tag = true;
                if value.contains(";tag=") {
                    out.push_str(&format!("To: {value}\r\n"));
                } else {
                    out.push_str(&format!("To: {value};tag=bad-request\r\n"));
                }
                continue;
            }
            out.push_str(&format!("{}: {value}\r\n", full));
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    if let Ok(m) = SipMessage::parse(out.as_bytes()) {
        return Some(m.to_bytes());
    }
    let has = |name: &str| out.lines().any(|l| l.split(':').next().is_some_and(|n| n.eq_ignore_ascii_case(name)));
    (has("Via") && has("Call-ID") && has("CSeq")).then(|| out.into_bytes())
}
