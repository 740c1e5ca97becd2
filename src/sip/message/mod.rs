//! SIP messages as a proxy needs them (RFC 3261 §7, §8.2.6, §18.2.1, §20,
//! §25; RFC 3581 §4): a parsed start line and typed views of the headers a
//! proxy or registrar reads, while every header line keeps its raw text so
//! unknown headers are forwarded untouched.
//!
//! Parsing is our own rather than `ezk-sip-types`' typed API: ezk re-prints
//! headers from typed values (losing the raw text a proxy must forward), matches
//! methods case-insensitively, cannot read `Contact: *` or `tel:` URIs and
//! hides parameter lists. ezk is kept as a differential oracle in the tests.
//!
//! Invariant: a [`SipMessage`] always has a valid start line and exactly one
//! valid From, To, Call-ID and CSeq (whose method matches a request's), every
//! Via value parses, and Max-Forwards (if present) is a number. Parsing checks
//! it; every mutator re-checks it and leaves the message unchanged on error.
//! Content-Length is framing, not content: it is checked on parse, dropped
//! from the header list and recomputed by [`SipMessage::to_bytes`].

mod error;
mod headers;
mod lex;
mod start_line;
mod uri;

use std::net::SocketAddr;

pub use error::ParseError;
pub use headers::{CSeq, Contacts, Header, NameAddr, Via, expand_compact, header_name_eq};
pub use lex::split_list;
pub use start_line::{Method, StartLine, StatusCode};
pub use uri::{Host, Param, Params, SipUri, Uri};

use lex::{is_token, parse_delta_seconds};
use start_line::{parse_start_line, sanitize_reason};
use uri::check_uri_roundtrip;

/// Typed copies of the headers every message must carry (see the module
/// invariant); derived from the raw headers, never serialised.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Core {
    call_id: String,
    cseq: CSeq,
    from: NameAddr,
    to: NameAddr,
    vias: Vec<Via>,
    max_forwards: Option<u8>,
}

/// A parsed SIP request or response (see the module invariant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipMessage {
    start: StartLine,
    headers: Vec<Header>,
    body: Vec<u8>,
    core: Core,
}

impl SipMessage {
    /// Parses one message: a whole UDP datagram or one stream frame.
    ///
    /// Leading CRLFs are skipped (§7.5). Line ends may be CRLF or bare LF;
    /// folded lines are joined with one space. With a Content-Length, bytes
    /// beyond it are discarded and a shorter body is an error (§18.3);
    /// without one the rest of the input is the body (datagrams only —
    /// stream framing requires it, see `framing`).
    pub fn parse(input: &[u8]) -> Result<SipMessage, ParseError> {
        let start = input.iter().position(|b| !matches!(b, b'\r' | b'\n')).ok_or(ParseError::Empty)?;
        let input = input.get(start..).unwrap_or_default();
        let (head, rest) = split_head(input).ok_or(ParseError::IncompleteHead)?;
        let head = std::str::from_utf8(head).map_err(|_| ParseError::NotUtf8)?;
        let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let start = parse_start_line(lines.next().unwrap_or_default())?;

        // Unfold first (§7.3.1: a continuation line is equivalent to one SP),
        // appending in place so many short continuations stay linear.
        let mut logical: Vec<String> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                let prev = logical.last_mut().ok_or(ParseError::BadHeaderLine)?;
                prev.truncate(prev.trim_end_matches([' ', '\t']).len());
                prev.push(' ');
                prev.push_str(line.trim_matches([' ', '\t']));
            } else {
                logical.push(line.to_owned());
            }
        }
        let mut headers = Vec::with_capacity(logical.len());
        for line in &logical {
            let (name, value) = line.split_once(':').ok_or(ParseError::BadHeaderLine)?;
            headers.push(Header::new(name.trim_end_matches([' ', '\t']), value)?);
        }

        let mut content_length: Option<usize> = None;
        for h in headers.iter().filter(|h| h.is("Content-Length")) {
            let v = h.value.as_str();
            if v.is_empty() || v.len() > 9 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ParseError::InvalidHeader { name: "Content-Length", reason: "not a number" });
            }
            let n = v.parse().map_err(|_| ParseError::InvalidHeader { name: "Content-Length", reason: "too large" })?;
            if content_length.is_some_and(|c| c != n) {
                return Err(ParseError::DuplicateHeader("Content-Length"));
            }
            content_length = Some(n);
        }
        headers.retain(|h| !h.is("Content-Length"));
        let body = match content_length {
            Some(n) => rest.get(..n).ok_or(ParseError::BodyTruncated)?,
            None => rest,
        };
        let core = Core::index(&start, &headers)?;
        if core.vias.is_empty() {
            return Err(ParseError::MissingHeader("Via"));
        }
        Ok(SipMessage { start, headers, body: body.to_vec(), core })
    }

    /// Builds a request from header lines (checked like a parsed message;
    /// Content-Length is computed, any given one is an error).
    pub fn new_request(
        method: Method,
        uri: Uri,
        headers: Vec<Header>,
        body: Vec<u8>,
    ) -> Result<SipMessage, ParseError> {
        check_uri_roundtrip(&uri)?;
        Self::assemble(StartLine::Request { method, uri }, headers, body)
    }

    /// Builds a response from header lines (see [`SipMessage::new_request`]).
    pub fn new_response(
        status: StatusCode,
        reason: &str,
        headers: Vec<Header>,
        body: Vec<u8>,
    ) -> Result<SipMessage, ParseError> {
        Self::assemble(StartLine::Response { status, reason: sanitize_reason(reason) }, headers, body)
    }

    fn assemble(start: StartLine, headers: Vec<Header>, body: Vec<u8>) -> Result<SipMessage, ParseError> {
        if headers.iter().any(|h| h.is("Content-Length")) {
            return Err(ParseError::ComputedHeader("Content-Length"));
        }
        let core = Core::index(&start, &headers)?;
        if core.vias.is_empty() {
            return Err(ParseError::MissingHeader("Via"));
        }
        Ok(SipMessage { start, headers, body, core })
    }

    /// A response to `req` per §8.2.6.2: Via lines, From, Call-ID and CSeq
    /// copied verbatim, To copied with `to_tag` added if it has none (an
    /// invalid tag is ignored), Timestamp copied into a 100 (§8.2.6.1); no
    /// body. `reason` defaults to the §21 phrase.
    pub fn response_to(req: &SipMessage, status: StatusCode, reason: Option<&str>, to_tag: Option<&str>) -> SipMessage {
        let mut core = req.core.clone();
        core.max_forwards = None;
        let tag = to_tag.filter(|t| is_token(t) && req.core.to.tag().is_none());
        if let Some(t) = tag {
            core.to.params.0.push(Param { name: "tag".to_owned(), value: Some(t.to_owned()) });
        }
        let mut headers = Vec::new();
        for h in &req.headers {
            let name = expand_compact(&h.name);
            let copy = ["Via", "From", "Call-ID", "CSeq"].iter().any(|n| n.eq_ignore_ascii_case(name))
                || (status == StatusCode::TRYING && name.eq_ignore_ascii_case("Timestamp"));
            if copy {
                headers.push(h.clone());
            } else if name.eq_ignore_ascii_case("To") {
                let mut to = h.clone();
                if let Some(t) = tag {
                    to.value = format!("{};tag={t}", to.value);
                }
                headers.push(to);
            }
        }
        let reason = reason.map_or_else(|| status.default_reason().to_owned(), sanitize_reason);
        SipMessage { start: StartLine::Response { status, reason }, headers, body: Vec::new(), core }
    }

    /// Serialises with a correct Content-Length (last header).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.headers.len() * 48 + self.body.len());
        match &self.start {
            StartLine::Request { method, uri } => {
                out.extend_from_slice(format!("{method} {uri} SIP/2.0\r\n").as_bytes())
            }
            StartLine::Response { status, reason } => {
                out.extend_from_slice(format!("SIP/2.0 {status} {reason}\r\n").as_bytes())
            }
        }
        for h in &self.headers {
            out.extend_from_slice(h.name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", self.body.len()).as_bytes());
        out.extend_from_slice(&self.body);
        out
    }

    // ---- start line

    /// The start line.
    pub fn start_line(&self) -> &StartLine {
        &self.start
    }

    /// Whether this is a request.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// A request's method.
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// A request's Request-URI.
    pub fn request_uri(&self) -> Option<&Uri> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// A response's status code.
    pub fn status(&self) -> Option<StatusCode> {
        match &self.start {
            StartLine::Response { status, .. } => Some(*status),
            StartLine::Request { .. } => None,
        }
    }

    /// A response's reason phrase.
    pub fn reason(&self) -> Option<&str> {
        match &self.start {
            StartLine::Response { reason, .. } => Some(reason),
            StartLine::Request { .. } => None,
        }
    }

    // ---- typed headers

    /// Call-ID.
    pub fn call_id(&self) -> &str {
        &self.core.call_id
    }

    /// CSeq.
    pub fn cseq(&self) -> &CSeq {
        &self.core.cseq
    }

    /// From.
    pub fn from(&self) -> &NameAddr {
        &self.core.from
    }

    /// To.
    pub fn to(&self) -> &NameAddr {
        &self.core.to
    }

    /// All Via values, top first.
    pub fn vias(&self) -> &[Via] {
        &self.core.vias
    }

    /// The top Via (absent only after [`SipMessage::pop_via`] removed the last).
    pub fn top_via(&self) -> Option<&Via> {
        self.core.vias.first()
    }

    /// Max-Forwards (values above 255 read as 255).
    pub fn max_forwards(&self) -> Option<u8> {
        self.core.max_forwards
    }

    /// Contact values.
    pub fn contacts(&self) -> Result<Contacts, ParseError> {
        let values: Vec<&str> = self.header_list("Contact").collect();
        if values.contains(&"*") {
            return if values.len() == 1 {
                Ok(Contacts::Wildcard)
            } else {
                Err(ParseError::InvalidHeader { name: "Contact", reason: "'*' mixed with addresses" })
            };
        }
        let parsed = values.iter().map(|v| NameAddr::parse(v).map_err(|e| e.in_header("Contact")));
        Ok(Contacts::Bindings(parsed.collect::<Result<_, _>>()?))
    }

    /// Route values, in order.
    pub fn routes(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.name_addr_list("Route")
    }

    /// Record-Route values, in order.
    pub fn record_routes(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.name_addr_list("Record-Route")
    }

    fn name_addr_list(&self, name: &'static str) -> Result<Vec<NameAddr>, ParseError> {
        self.header_list(name).map(|v| NameAddr::parse(v).map_err(|e| e.in_header(name))).collect()
    }

    /// The Expires header (seconds, saturating; `None` if absent or malformed).
    pub fn expires(&self) -> Option<u32> {
        self.header("Expires").and_then(parse_delta_seconds)
    }

    /// The body length (what Content-Length says on the wire).
    pub fn content_length(&self) -> usize {
        self.body.len()
    }

    /// Content-Type.
    pub fn content_type(&self) -> Option<&str> {
        self.header("Content-Type")
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    // ---- raw headers

    /// The first line of header `name` (compact forms and case ignored).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|h| h.is(name)).map(|h| h.value.as_str())
    }

    /// Every line of header `name`, in order.
    pub fn headers<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |h| h.is(name)).map(|h| h.value.as_str())
    }

    /// Every comma-separated value of list header `name` across its lines.
    /// Only meaningful for list headers (Via, Contact, Route, Allow…), not
    /// for e.g. Authorization.
    pub fn header_list<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers(name).flat_map(split_list)
    }

    /// All header lines in order (Content-Length excluded).
    pub fn all_headers(&self) -> &[Header] {
        &self.headers
    }

    // ---- mutators (each keeps the invariant or changes nothing)

    /// Replaces every line of `name` with one line (at the first one's place,
    /// else appended).
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<(), ParseError> {
        let line = self.checked_line(name, value)?;
        let mut headers = self.headers.clone();
        let at = headers.iter().position(|h| h.is(name)).unwrap_or(headers.len());
        headers.retain(|h| !h.is(name));
        headers.insert(at.min(headers.len()), line);
        self.reindex(headers)
    }

    /// Appends a header line.
    pub fn add_header(&mut self, name: &str, value: &str) -> Result<(), ParseError> {
        let line = self.checked_line(name, value)?;
        let mut headers = self.headers.clone();
        headers.push(line);
        self.reindex(headers)
    }

    /// Inserts a header line first — above all existing values of the same
    /// header, as Via (§16.6 step 8) and Record-Route (§16.6 step 4) need.
    pub fn prepend_header(&mut self, name: &str, value: &str) -> Result<(), ParseError> {
        let line = self.checked_line(name, value)?;
        let mut headers = self.headers.clone();
        headers.insert(0, line);
        self.reindex(headers)
    }

    /// Removes every line of `name`; returns how many. Fails for From, To,
    /// Call-ID and CSeq.
    pub fn remove_header(&mut self, name: &str) -> Result<usize, ParseError> {
        let mut headers = self.headers.clone();
        headers.retain(|h| !h.is(name));
        let removed = self.headers.len() - headers.len();
        self.reindex(headers)?;
        Ok(removed)
    }

    /// Pushes a new top Via (§16.6 step 8).
    pub fn push_via(&mut self, via: &Via) -> Result<(), ParseError> {
        self.prepend_header("Via", &via.to_string())
    }

    /// Removes the top Via value (§16.7 step 3) and returns it.
    pub fn pop_via(&mut self) -> Option<Via> {
        let top = self.core.vias.first()?.clone();
        self.replace_first_value("Via", None).ok()?;
        Some(top)
    }

    /// Removes the first Route value (loose routing, §16.4, §16.12).
    pub fn pop_route(&mut self) -> Result<Option<NameAddr>, ParseError> {
        let Some(first) = self.header_list("Route").next() else { return Ok(None) };
        let route = NameAddr::parse(first).map_err(|e| e.in_header("Route"))?;
        self.replace_first_value("Route", None)?;
        Ok(Some(route))
    }

    /// Sets (or with `None` value, adds as a flag) a parameter on the top Via.
    pub fn set_top_via_param(&mut self, name: &str, value: Option<&str>) -> Result<(), ParseError> {
        let mut via = self.core.vias.first().ok_or(ParseError::MissingHeader("Via"))?.clone();
        via.params.set(name, value)?;
        self.replace_first_value("Via", Some(&via.to_string()))
    }

    /// What a server transport does on receipt (§18.2.1, RFC 3581 §4): if the
    /// top Via asks for `rport`, fill it with the source port and always add
    /// `received`; otherwise add `received` when sent-by is not the source IP.
    pub fn stamp_received(&mut self, source: SocketAddr) -> Result<(), ParseError> {
        let Some(via) = self.core.vias.first() else { return Ok(()) };
        let rport = via.params.contains("rport");
        let differs = !via.host.matches(&Host::from(source.ip()));
        let mut via = via.clone();
        if rport {
            via.params.set("rport", Some(&source.port().to_string()))?;
        }
        if rport || differs {
            via.params.set("received", Some(&source.ip().to_string()))?;
        }
        self.replace_first_value("Via", Some(&via.to_string()))
    }

    /// Decrements Max-Forwards (§16.6 step 3): adds `70` if absent; `None`
    /// (message unchanged) if it is already 0 — answer 483 (§16.3 step 3).
    pub fn decrement_max_forwards(&mut self) -> Option<u8> {
        let next = match self.core.max_forwards {
            Some(0) => return None,
            Some(n) => n - 1,
            None => 70,
        };
        self.set_header("Max-Forwards", &next.to_string()).ok()?;
        Some(next)
    }

    /// Replaces the Request-URI (requests only).
    pub fn set_request_uri(&mut self, new: Uri) -> Result<(), ParseError> {
        check_uri_roundtrip(&new)?;
        match &mut self.start {
            StartLine::Request { uri, .. } => {
                *uri = new;
                Ok(())
            }
            StartLine::Response { .. } => Err(ParseError::BadStartLine),
        }
    }

    /// Replaces the body (set Content-Type yourself).
    pub fn set_body(&mut self, body: Vec<u8>) {
        self.body = body;
    }

    fn checked_line(&self, name: &str, value: &str) -> Result<Header, ParseError> {
        if header_name_eq(name, "Content-Length") {
            return Err(ParseError::ComputedHeader("Content-Length"));
        }
        Header::new(name, value)
    }

    /// Replaces (or with `None` removes) the first value of the first line
    /// of `name`, keeping that line's other comma-separated values.
    fn replace_first_value(&mut self, name: &'static str, new: Option<&str>) -> Result<(), ParseError> {
        let mut headers = self.headers.clone();
        let idx = headers.iter().position(|h| h.is(name)).ok_or(ParseError::MissingHeader(name))?;
        let line = headers.get(idx).ok_or(ParseError::MissingHeader(name))?;
        let mut values: Vec<&str> = split_list(&line.value).collect();
        match new {
            Some(v) if values.is_empty() => values.push(v),
            Some(v) => {
                if let Some(first) = values.first_mut() {
                    *first = v;
                }
            }
            None if values.is_empty() => {}
            None => {
                values.remove(0);
            }
        }
        let joined = values.join(", ");
        if values.is_empty() {
            headers.remove(idx);
        } else if let Some(line) = headers.get_mut(idx) {
            line.value = joined;
        }
        self.reindex(headers)
    }

    fn reindex(&mut self, headers: Vec<Header>) -> Result<(), ParseError> {
        self.core = Core::index(&self.start, &headers)?;
        self.headers = headers;
        Ok(())
    }
}

impl Core {
    fn index(start: &StartLine, headers: &[Header]) -> Result<Core, ParseError> {
        let (mut call_id, mut cseq, mut from, mut to, mut max_forwards) = (None, None, None, None, None);
        let mut vias = Vec::new();
        fn once<T>(slot: &mut Option<T>, name: &'static str, v: T) -> Result<(), ParseError> {
            if slot.is_some() {
                return Err(ParseError::DuplicateHeader(name));
            }
            *slot = Some(v);
            Ok(())
        }
        for h in headers {
            let v = h.value.as_str();
            match expand_compact(&h.name).to_ascii_lowercase().as_str() {
                "via" => {
                    for value in split_list(v) {
                        vias.push(Via::parse(value).map_err(|e| e.in_header("Via"))?);
                    }
                }
                "call-id" => {
                    if v.is_empty() || v.contains([' ', '\t']) {
                        return Err(ParseError::InvalidHeader { name: "Call-ID", reason: "bad value" });
                    }
                    once(&mut call_id, "Call-ID", v.to_owned())?;
                }
                "cseq" => once(&mut cseq, "CSeq", CSeq::parse(v).map_err(|e| e.in_header("CSeq"))?)?,
                "from" => once(&mut from, "From", NameAddr::parse(v).map_err(|e| e.in_header("From"))?)?,
                "to" => once(&mut to, "To", NameAddr::parse(v).map_err(|e| e.in_header("To"))?)?,
                "max-forwards" => {
                    if v.is_empty() || v.len() > 9 || !v.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(ParseError::InvalidHeader { name: "Max-Forwards", reason: "not a number" });
                    }
                    let n: u32 = v.parse().unwrap_or(u32::MAX);
                    once(&mut max_forwards, "Max-Forwards", u8::try_from(n).unwrap_or(u8::MAX))?;
                }
                _ => {}
            }
        }
        let cseq = cseq.ok_or(ParseError::MissingHeader("CSeq"))?;
        if let StartLine::Request { method, .. } = start
            && *method != cseq.method
        {
            return Err(ParseError::CSeqMethodMismatch);
        }
        Ok(Core {
            call_id: call_id.ok_or(ParseError::MissingHeader("Call-ID"))?,
            cseq,
            from: from.ok_or(ParseError::MissingHeader("From"))?,
            to: to.ok_or(ParseError::MissingHeader("To"))?,
            vias,
            max_forwards,
        })
    }
}

/// Splits at the first empty line: (head without the final line end, body).
fn split_head(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut line_start = 0;
    for (i, b) in input.iter().enumerate() {
        if *b != b'\n' {
            continue;
        }
        let line = input.get(line_start..i)?;
        if line.is_empty() || line == b"\r" {
            let head_end = line_start.saturating_sub(1);
            let head = input.get(..head_end)?;
            let head = head.strip_suffix(b"\r").unwrap_or(head);
            return Some((head, input.get(i + 1..)?));
        }
        line_start = i + 1;
    }
    None
}

#[cfg(test)]
mod tests;
