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

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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

    fn in_header(self, name: &'static str) -> ParseError {
        match self {
            ParseError::InvalidValue(reason) => ParseError::InvalidHeader { name, reason },
            other => other,
        }
    }
}

fn invalid(reason: &'static str) -> ParseError {
    ParseError::InvalidValue(reason)
}

// ---------------------------------------------------------------------------
// Method, status code

/// A request method. Methods are case-sensitive (§7.1): `invite` is an
/// extension method, not INVITE.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Register,
    Options,
    Info,
    Update,
    Prack,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    /// Any other token.
    Other(String),
}

impl Method {
    /// Parses a method token.
    pub fn parse(s: &str) -> Result<Method, ParseError> {
        Ok(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "REGISTER" => Method::Register,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other if is_token(other) => Method::Other(other.to_owned()),
            _ => return Err(ParseError::BadMethod),
        })
    }

    /// The method as written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A response status code, 100..=699 (§7.2, §21).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatusCode(u16);

impl StatusCode {
    pub const TRYING: StatusCode = StatusCode(100);
    pub const RINGING: StatusCode = StatusCode(180);
    pub const OK: StatusCode = StatusCode(200);
    pub const BAD_REQUEST: StatusCode = StatusCode(400);
    pub const UNAUTHORIZED: StatusCode = StatusCode(401);
    pub const FORBIDDEN: StatusCode = StatusCode(403);
    pub const NOT_FOUND: StatusCode = StatusCode(404);
    pub const PROXY_AUTH_REQUIRED: StatusCode = StatusCode(407);
    pub const REQUEST_TIMEOUT: StatusCode = StatusCode(408);
    pub const INTERVAL_TOO_BRIEF: StatusCode = StatusCode(423);
    pub const TEMPORARILY_UNAVAILABLE: StatusCode = StatusCode(480);
    pub const TRANSACTION_DOES_NOT_EXIST: StatusCode = StatusCode(481);
    pub const LOOP_DETECTED: StatusCode = StatusCode(482);
    pub const TOO_MANY_HOPS: StatusCode = StatusCode(483);
    pub const BUSY_HERE: StatusCode = StatusCode(486);
    pub const REQUEST_TERMINATED: StatusCode = StatusCode(487);
    pub const SERVER_ERROR: StatusCode = StatusCode(500);
    pub const SERVICE_UNAVAILABLE: StatusCode = StatusCode(503);
    pub const VERSION_NOT_SUPPORTED: StatusCode = StatusCode(505);

    /// `None` outside 100..=699.
    pub fn new(code: u16) -> Option<StatusCode> {
        (100..=699).contains(&code).then_some(StatusCode(code))
    }

    /// The numeric code.
    pub fn as_u16(self) -> u16 {
        self.0
    }

    /// 1xx.
    pub fn is_provisional(self) -> bool {
        self.0 < 200
    }

    /// 2xx.
    pub fn is_success(self) -> bool {
        (200..300).contains(&self.0)
    }

    /// 2xx..6xx.
    pub fn is_final(self) -> bool {
        self.0 >= 200
    }

    /// The RFC 3261 §21 reason phrase, or a class default.
    pub fn default_reason(self) -> &'static str {
        match self.0 {
            100 => "Trying",
            180 => "Ringing",
            181 => "Call Is Being Forwarded",
            182 => "Queued",
            183 => "Session Progress",
            200 => "OK",
            202 => "Accepted",
            301 => "Moved Permanently",
            302 => "Moved Temporarily",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            407 => "Proxy Authentication Required",
            408 => "Request Timeout",
            413 => "Request Entity Too Large",
            415 => "Unsupported Media Type",
            416 => "Unsupported URI Scheme",
            420 => "Bad Extension",
            423 => "Interval Too Brief",
            480 => "Temporarily Unavailable",
            481 => "Call/Transaction Does Not Exist",
            482 => "Loop Detected",
            483 => "Too Many Hops",
            484 => "Address Incomplete",
            486 => "Busy Here",
            487 => "Request Terminated",
            488 => "Not Acceptable Here",
            500 => "Server Internal Error",
            501 => "Not Implemented",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Server Time-out",
            505 => "Version Not Supported",
            513 => "Message Too Large",
            600 => "Busy Everywhere",
            603 => "Decline",
            604 => "Does Not Exist Anywhere",
            606 => "Not Acceptable",
            c if c < 200 => "Session Progress",
            c if c < 300 => "OK",
            c if c < 400 => "Redirection",
            c if c < 500 => "Client Error",
            c if c < 600 => "Server Error",
            _ => "Global Failure",
        }
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

// ---------------------------------------------------------------------------
// Host, URI, parameters

/// A host: IP literal or domain name (§25.1 `host`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
    /// A domain name as written (compare case-insensitively).
    Name(String),
}

impl Host {
    /// Parses `1.2.3.4`, `[2001:db8::1]` or a domain name.
    pub fn parse(s: &str) -> Result<Host, ParseError> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or(invalid("unterminated IPv6 reference"))?;
            return inner.parse().map(Host::Ipv6).map_err(|_| invalid("bad IPv6 address"));
        }
        if let Ok(v4) = s.parse::<Ipv4Addr>() {
            return Ok(Host::Ipv4(v4));
        }
        let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
        if s.is_empty() || !s.chars().all(name_char) {
            return Err(invalid("bad host"));
        }
        Ok(Host::Name(s.to_owned()))
    }

    /// The address if this is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Ipv4(a) => Some(IpAddr::V4(*a)),
            Host::Ipv6(a) => Some(IpAddr::V6(*a)),
            Host::Name(_) => None,
        }
    }

    /// Compares as §19.1.4 does: domain names case-insensitively.
    pub fn matches(&self, other: &Host) -> bool {
        match (self, other) {
            (Host::Name(a), Host::Name(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => a == b,
        }
    }
}

impl From<IpAddr> for Host {
    fn from(ip: IpAddr) -> Host {
        match ip {
            IpAddr::V4(a) => Host::Ipv4(a),
            IpAddr::V6(a) => Host::Ipv6(a),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ipv4(a) => write!(f, "{a}"),
            Host::Ipv6(a) => write!(f, "[{a}]"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

/// `host[:port]`.
fn parse_host_port(s: &str) -> Result<(Host, Option<u16>), ParseError> {
    let (host, port) = if s.starts_with('[') {
        let end = s.find(']').ok_or(invalid("unterminated IPv6 reference"))?;
        let (h, rest) = s.split_at_checked(end + 1).ok_or(invalid("bad host"))?;
        match rest {
            "" => (h, None),
            _ => (h, Some(rest.strip_prefix(':').ok_or(invalid("bad port"))?)),
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse().map_err(|_| invalid("bad port"))?)
        }
        Some(_) => return Err(invalid("bad port")),
    };
    Ok((Host::parse(host)?, port))
}

/// One `;name[=value]` parameter. `value` is raw: a quoted string keeps its
/// quotes, so re-serialising is exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub value: Option<String>,
}

/// An ordered parameter list (URI, Via or header parameters). Names compare
/// case-insensitively (§7.3.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Params(Vec<Param>);

impl Params {
    /// The parameter called `name`.
    pub fn get(&self, name: &str) -> Option<&Param> {
        self.0.iter().find(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// Whether `name` is present (with or without a value).
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The value of `name` with surrounding quotes removed.
    pub fn value(&self, name: &str) -> Option<&str> {
        let v = self.get(name)?.value.as_deref()?;
        Some(v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v))
    }

    /// Sets (replacing) or adds `name`; `value` is raw (quote it yourself if
    /// it needs quoting).
    pub fn set(&mut self, name: &str, value: Option<&str>) -> Result<(), ParseError> {
        let param = Param::checked(name, value)?;
        match self.0.iter_mut().find(|p| p.name.eq_ignore_ascii_case(name)) {
            Some(p) => *p = param,
            None => self.0.push(param),
        }
        Ok(())
    }

    /// Removes `name`; true if it was present.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|p| !p.name.eq_ignore_ascii_case(name));
        self.0.len() != before
    }

    /// All parameters in order.
    pub fn iter(&self) -> impl Iterator<Item = &Param> {
        self.0.iter()
    }

    /// No parameters.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Header/Via parameters: `*( SEMI param )` with optional LWS.
    fn parse_header(s: &str) -> Result<Params, ParseError> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(Params::default());
        }
        let rest = s.strip_prefix(';').ok_or(invalid("unexpected text after value"))?;
        let mut out = Vec::new();
        for piece in split_outside_quotes(rest, ';') {
            let piece = piece.trim();
            if piece.is_empty() {
                continue;
            }
            let (name, value) = match piece.split_once('=') {
                Some((n, v)) => (n.trim_end(), Some(v.trim_start())),
                None => (piece, None),
            };
            out.push(Param::checked(name, value)?);
        }
        Ok(Params(out))
    }

    /// URI parameters (after the first `;`), no whitespace allowed.
    fn parse_uri(s: &str) -> Result<Params, ParseError> {
        let mut out = Vec::new();
        for piece in s.split(';').filter(|p| !p.is_empty()) {
            let (name, value) = match piece.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (piece, None),
            };
            if value.is_some_and(|v| v.starts_with('"')) {
                return Err(invalid("quoted URI parameter"));
            }
            out.push(Param::checked(name, value)?);
        }
        Ok(Params(out))
    }
}

impl Param {
    fn checked(name: &str, value: Option<&str>) -> Result<Param, ParseError> {
        if !is_token(name) {
            return Err(invalid("bad parameter name"));
        }
        if let Some(v) = value {
            let ok = if let Some(inner) = v.strip_prefix('"') {
                matches!(split_quoted(inner), Ok((_, "")))
            } else {
                !v.is_empty() && v.chars().all(|c| !c.is_control() && !" ;,\"<>?".contains(c))
            };
            if !ok {
                return Err(invalid("bad parameter value"));
            }
        }
        Ok(Param { name: name.to_owned(), value: value.map(str::to_owned) })
    }
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.0 {
            match &p.value {
                Some(v) => write!(f, ";{}={v}", p.name)?,
                None => write!(f, ";{}", p.name)?,
            }
        }
        Ok(())
    }
}

/// A `sip:`/`sips:` URI (§19.1), components kept as written (user part
/// still %-escaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// `sips:`.
    pub secure: bool,
    /// `user` or `user:password`, escaped as on the wire.
    pub user: Option<String>,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Params,
    /// The raw `?headers` part without the `?`.
    pub headers: Option<String>,
}

impl SipUri {
    /// A bare `sip:host[:port]` URI.
    pub fn new(host: Host, port: Option<u16>) -> SipUri {
        SipUri { secure: false, user: None, host, port, params: Params::default(), headers: None }
    }

    fn parse_rest(secure: bool, rest: &str) -> Result<SipUri, ParseError> {
        // The first '@' ends the userinfo: neither host, parameters nor
        // headers may contain an unescaped '@', while the user part may
        // contain ';', '?' and ',' (§25.1).
        let (user, rest) = match rest.split_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (host_part, headers) = match rest.split_once('?') {
            Some((m, h)) => (m, Some(h)),
            None => (rest, None),
        };
        let uri_text_ok = |s: &str| !s.is_empty() && s.chars().all(|c| !c.is_control() && !" \"<>".contains(c));
        if user.is_some_and(|u| !uri_text_ok(u)) {
            return Err(invalid("bad user part"));
        }
        if headers.is_some_and(|h| !uri_text_ok(h)) {
            return Err(invalid("bad URI headers"));
        }
        let (host_port, params) = match host_part.split_once(';') {
            Some((hp, p)) => (hp, Params::parse_uri(p)?),
            None => (host_part, Params::default()),
        };
        let (host, port) = parse_host_port(host_port)?;
        Ok(SipUri { secure, user: user.map(str::to_owned), host, port, params, headers: headers.map(str::to_owned) })
    }

    /// The user name without any `:password`.
    pub fn user_name(&self) -> Option<&str> {
        self.user.as_deref().map(|u| u.split_once(':').map_or(u, |(n, _)| n))
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)?;
        if let Some(h) = &self.headers {
            write!(f, "?{h}")?;
        }
        Ok(())
    }
}

/// Any URI: SIP/SIPS parsed, other schemes (`tel:`, `urn:`…) kept as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    Sip(SipUri),
    /// The whole URI text, e.g. `tel:+15551234`.
    Other(String),
}

impl Uri {
    /// Parses an absolute URI.
    pub fn parse(s: &str) -> Result<Uri, ParseError> {
        let (scheme, rest) = s.split_once(':').ok_or(invalid("no URI scheme"))?;
        let mut chars = scheme.chars();
        let scheme_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !scheme_ok {
            return Err(invalid("bad URI scheme"));
        }
        if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
            return SipUri::parse_rest(scheme.len() == 4, rest).map(Uri::Sip);
        }
        if rest.is_empty() || rest.chars().any(|c| c.is_control() || " \"<>".contains(c)) {
            return Err(invalid("bad URI"));
        }
        Ok(Uri::Other(s.to_owned()))
    }

    /// The SIP/SIPS view, if this is one.
    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            Uri::Other(_) => None,
        }
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(u) => u.fmt(f),
            Uri::Other(s) => f.write_str(s),
        }
    }
}

// ---------------------------------------------------------------------------
// Typed header values

/// `name-addr / addr-spec` with header parameters: From, To, Contact,
/// Route, Record-Route (§20.10, §20.20, §20.39).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name, unquoted.
    pub display: Option<String>,
    pub uri: Uri,
    /// Header parameters (`tag`, `expires`, `+sip.instance`…).
    pub params: Params,
}

impl NameAddr {
    /// A `<uri>` with no display name or parameters.
    pub fn new(uri: Uri) -> NameAddr {
        NameAddr { display: None, uri, params: Params::default() }
    }

    /// Parses one value (not a comma list).
    pub fn parse(s: &str) -> Result<NameAddr, ParseError> {
        let s = s.trim();
        let (display, uri, rest) = if let Some(after) = s.strip_prefix('"') {
            let (display, after) = split_quoted(after)?;
            let (uri, rest) = bracketed(after.trim_start())?;
            (Some(display), uri, rest)
        } else if let Some(lt) = s.find('<') {
            let (before, after) = s.split_at_checked(lt).ok_or(invalid("bad name-addr"))?;
            let before = before.trim();
            if before.chars().any(|c| c.is_control() || "\",;>".contains(c)) {
                return Err(invalid("bad display name"));
            }
            let (uri, rest) = bracketed(after)?;
            ((!before.is_empty()).then(|| before.to_owned()), uri, rest)
        } else {
            // addr-spec: a URI in this form cannot contain ';' (§20.10), so
            // the first ';' starts the header parameters.
            match s.find(';') {
                Some(i) => {
                    let (uri, rest) = s.split_at_checked(i).ok_or(invalid("bad addr-spec"))?;
                    (None, uri, rest)
                }
                None => (None, s, ""),
            }
        };
        Ok(NameAddr { display, uri: Uri::parse(uri)?, params: Params::parse_header(rest)? })
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        self.params.value("tag")
    }

    /// The `expires` parameter (seconds, saturating; `None` if absent or
    /// malformed).
    pub fn expires(&self) -> Option<u32> {
        self.params.value("expires").and_then(parse_delta_seconds)
    }
}

/// `<uri>rest` → (uri, rest).
fn bracketed(s: &str) -> Result<(&str, &str), ParseError> {
    let inner = s.strip_prefix('<').ok_or(invalid("expected '<'"))?;
    inner.split_once('>').ok_or(invalid("missing '>'"))
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            f.write_str("\"")?;
            for c in d.chars() {
                if matches!(c, '"' | '\\') {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
            f.write_str("\" ")?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

/// A Contact header's values: `*` or a list of bindings (§10.2.2, §20.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contacts {
    /// `Contact: *` (remove all bindings; only with Expires: 0).
    Wildcard,
    Bindings(Vec<NameAddr>),
}

/// One Via value (§20.42): `SIP/2.0/UDP host:port;branch=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// As written (`UDP`, `TCP`, `TLS`, `WS`…); compare case-insensitively.
    pub transport: String,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Params,
}

impl Via {
    /// `SIP/2.0/{transport} {host}[:{port}];branch={branch}`.
    pub fn new(transport: &str, host: Host, port: Option<u16>, branch: &str) -> Result<Via, ParseError> {
        if !is_token(transport) {
            return Err(invalid("bad transport"));
        }
        let mut params = Params::default();
        params.set("branch", Some(branch))?;
        Ok(Via { transport: transport.to_owned(), host, port, params })
    }

    /// Parses one Via value (not a comma list). LWS is allowed around the
    /// slashes of the protocol (§25.1 `sent-protocol`).
    pub fn parse(s: &str) -> Result<Via, ParseError> {
        let bad = invalid("bad sent-protocol");
        let s = s.trim();
        let rest = strip_prefix_ci(s, "SIP").ok_or(bad.clone())?.trim_start();
        let rest = rest.strip_prefix('/').ok_or(bad.clone())?.trim_start();
        let rest = rest.strip_prefix("2.0").ok_or(bad.clone())?.trim_start();
        let rest = rest.strip_prefix('/').ok_or(bad.clone())?.trim_start();
        let end = rest.find(|c: char| !is_token_char(c)).unwrap_or(rest.len());
        let (transport, rest) = rest.split_at_checked(end).ok_or(bad.clone())?;
        if transport.is_empty() || !rest.starts_with([' ', '\t']) {
            return Err(bad);
        }
        let rest = rest.trim_start();
        let (sent_by, params) = match rest.find(';') {
            Some(i) => rest.split_at_checked(i).ok_or(invalid("bad sent-by"))?,
            None => (rest, ""),
        };
        let (host, port) = parse_host_port(sent_by.trim_end())?;
        Ok(Via { transport: transport.to_owned(), host, port, params: Params::parse_header(params)? })
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&str> {
        self.params.value("branch")
    }

    /// The `received` parameter.
    pub fn received(&self) -> Option<&str> {
        self.params.value("received")
    }

    /// RFC 3581 `rport`: `None` absent, `Some(None)` requested (no value),
    /// `Some(Some(p))` filled in. A malformed value counts as requested.
    pub fn rport(&self) -> Option<Option<u16>> {
        let p = self.params.get("rport")?;
        Some(p.value.as_deref().and_then(|v| v.parse().ok()))
    }

    /// The sent-by port, or the transport's default (5061 for TLS, §18.2.2).
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(if self.transport.eq_ignore_ascii_case("TLS") { 5061 } else { 5060 })
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)
    }
}

/// CSeq (§20.16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    /// Parses `1 INVITE`.
    pub fn parse(s: &str) -> Result<CSeq, ParseError> {
        let mut parts = s.split_whitespace();
        let (Some(num), Some(method), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(invalid("expected number and method"));
        };
        if num.is_empty() || num.len() > 10 || !num.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("bad sequence number"));
        }
        let seq = num.parse().map_err(|_| invalid("sequence number too large"))?;
        Ok(CSeq { seq, method: Method::parse(method).map_err(|_| invalid("bad method"))? })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

// ---------------------------------------------------------------------------
// Header lines

/// One header line as received (or added): the name as written (possibly
/// compact) and the value with folding undone and outer whitespace trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    name: String,
    value: String,
}

impl Header {
    /// A header line; the name must be a token and the value free of
    /// control characters (no CR/LF injection). The value is trimmed.
    pub fn new(name: &str, value: &str) -> Result<Header, ParseError> {
        if !is_token(name) {
            return Err(ParseError::BadHeaderName);
        }
        let value = value.trim_matches([' ', '\t']);
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(ParseError::BadHeaderValue);
        }
        Ok(Header { name: name.to_owned(), value: value.to_owned() })
    }

    /// The name as written.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The raw value.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Whether this line is header `name` (compact forms and case ignored).
    pub fn is(&self, name: &str) -> bool {
        header_name_eq(&self.name, name)
    }
}

/// The full name for a compact form (§7.3.3 and later RFCs), else `name`.
pub fn expand_compact(name: &str) -> &str {
    let mut chars = name.chars();
    let (Some(c), None) = (chars.next(), chars.next()) else { return name };
    match c.to_ascii_lowercase() {
        'a' => "Accept-Contact",
        'b' => "Referred-By",
        'c' => "Content-Type",
        'd' => "Request-Disposition",
        'e' => "Content-Encoding",
        'f' => "From",
        'i' => "Call-ID",
        'j' => "Reject-Contact",
        'k' => "Supported",
        'l' => "Content-Length",
        'm' => "Contact",
        'o' => "Event",
        'r' => "Refer-To",
        's' => "Subject",
        't' => "To",
        'u' => "Allow-Events",
        'v' => "Via",
        'x' => "Session-Expires",
        'y' => "Identity",
        _ => name,
    }
}

/// Header-name equality: case-insensitive, compact forms expanded.
pub fn header_name_eq(a: &str, b: &str) -> bool {
    expand_compact(a).eq_ignore_ascii_case(expand_compact(b))
}

/// Splits a list-valued header value at top-level commas — not inside
/// quoted strings or `<…>` (§7.3.1). Empty elements are skipped.
pub fn split_list(value: &str) -> impl Iterator<Item = &str> {
    split_unquoted(value, ',', true).into_iter().map(str::trim).filter(|p| !p.is_empty())
}

/// Splits `s` at each `sep` outside double quotes (with `\` escapes) and,
/// when `angle_brackets` is set, outside `<...>` too.
fn split_unquoted(s: &str, sep: char, angle_brackets: bool) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut in_quotes, mut escaped, mut in_angle) = (0, false, false, false);
    for (i, c) in s.char_indices() {
        if in_quotes {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_quotes = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_quotes = true,
            '<' if angle_brackets => in_angle = true,
            '>' if angle_brackets => in_angle = false,
            _ if c == sep && !in_angle => {
                parts.push(s.get(start..i).unwrap_or_default());
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(s.get(start..).unwrap_or_default());
    parts
}

// ---------------------------------------------------------------------------
// The message

/// The first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Method, uri: Uri },
    Response { status: StatusCode, reason: String },
}

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

// ---------------------------------------------------------------------------
// Helpers

/// RFC 3261 §25.1 `token` characters.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_token_char)
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| s.get(prefix.len()..)).flatten()
}

/// Splits at `sep` outside double-quoted strings.
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    split_unquoted(s, sep, false)
}

/// `s` starts just after an opening quote: returns the unescaped content and
/// the text after the closing quote.
fn split_quoted(s: &str) -> Result<(String, &str), ParseError> {
    let mut out = String::new();
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if c == '\r' || c == '\n' {
            break;
        }
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            return Ok((out, s.get(i + 1..).unwrap_or_default()));
        } else {
            out.push(c);
        }
    }
    Err(invalid("unterminated quoted string"))
}

/// `delta-seconds`, saturating at u32::MAX (§20.19, §10.2.1.1).
fn parse_delta_seconds(s: &str) -> Option<u32> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse().unwrap_or(u32::MAX))
}

fn sanitize_reason(reason: &str) -> String {
    reason.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>().trim().to_owned()
}

/// A typed URI must print as text that parses back to it, or the message
/// would not survive `to_bytes`.
fn check_uri_roundtrip(uri: &Uri) -> Result<(), ParseError> {
    match Uri::parse(&uri.to_string()) {
        Ok(back) if back == *uri => Ok(()),
        _ => Err(ParseError::BadRequestUri("does not round-trip")),
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

fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    if strip_prefix_ci(line, "SIP/").is_some() {
        let (version, rest) = line.split_once([' ', '\t']).ok_or(ParseError::BadStartLine)?;
        if !version.eq_ignore_ascii_case("SIP/2.0") {
            return Err(ParseError::BadVersion);
        }
        let rest = rest.trim_start();
        let (code, reason) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::BadStatusCode);
        }
        let status = code.parse().ok().and_then(StatusCode::new).ok_or(ParseError::BadStatusCode)?;
        if reason.chars().any(|c| c.is_control() && c != '\t') {
            return Err(ParseError::BadStartLine);
        }
        return Ok(StartLine::Response { status, reason: sanitize_reason(reason) });
    }
    let mut parts = line.split([' ', '\t']).filter(|p| !p.is_empty());
    let (Some(method), Some(uri), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::BadStartLine);
    };
    let method = Method::parse(method)?;
    if strip_prefix_ci(version, "SIP/").is_none() {
        return Err(ParseError::BadStartLine);
    }
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(ParseError::BadVersion);
    }
    let uri = Uri::parse(uri).map_err(|e| match e {
        ParseError::InvalidValue(r) => ParseError::BadRequestUri(r),
        other => other,
    })?;
    Ok(StartLine::Request { method, uri })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// CRLF line ends for hand-written captures.
    fn crlf(s: &str) -> Vec<u8> {
        s.replace('\n', "\r\n").into_bytes()
    }

    const BARESIP_REGISTER: &str = "REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK4b3a8c1f2d9e;rport
Contact: <sip:alice-0x55d3a1@192.168.1.20:5060;transport=udp>;expires=3600;+sip.instance=\"<urn:uuid:6e4ad4a3-1c2b-4f5e-8a9b-0c1d2e3f4a5b>\";reg-id=1
Max-Forwards: 70
To: <sip:alice@example.com>
From: <sip:alice@example.com>;tag=a8f3c2e1b0d94f7e
Call-ID: 3c2f8e1a9b7d4c6e
CSeq: 35113 REGISTER
User-Agent: baresip v3.10.1 (x86_64/Linux)
Allow: INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSCRIBE,INFO,MESSAGE,UPDATE,REFER
Supported: outbound,path,gruu,replaces
Content-Length: 0

";

    const LINPHONE_REGISTER: &str = "REGISTER sip:sip.example.org;transport=tcp SIP/2.0
Via: SIP/2.0/TCP 10.0.0.7:40123;alias;branch=z9hG4bK.Jd9s~2kQx;rport
From: <sip:bob@sip.example.org>;tag=Zq8Ue~0pX
To: sip:bob@sip.example.org
CSeq: 20 REGISTER
Call-ID: kSd8-1QnR0
Max-Forwards: 70
Supported: replaces, outbound, gruu, path
Accept: application/sdp
Accept: text/plain
Accept: application/vnd.gsma.rcs-ft-http+xml
Contact: <sip:bob@10.0.0.7:40123;transport=tcp>;+sip.instance=\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\";+org.linphone.specs=\"lime\"
Expires: 600
User-Agent: Linphone-Desktop/5.2.4 (ubuntu) LinphoneSDK/5.3.14
Content-Length: 0

";

    const SDP: &str = "v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n";

    /// Compact forms, a two-value Via line, a folded To, a quoted display
    /// name with a comma and escaped quotes.
    fn compact_invite() -> Vec<u8> {
        let head = "INVITE sip:bob@biloxi.example.com SIP/2.0
v: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds , SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds8;received=192.0.2.1
Max-Forwards: 70
t: Bob
 <sip:bob@biloxi.example.com>
f: \"Alice, the \\\"first\\\"\" <sip:alice@atlanta.example.com>;tag=1928301774
i: a84b4c76e66710@pc33.atlanta.example.com
CSeq: 314159 INVITE
m: <sip:alice@pc33.atlanta.example.com>
Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>
c: application/sdp
k: 100rel
s: Lunch
X-Custom-Thing:   keep   this  spacing
";
        let mut out = crlf(head);
        out.extend_from_slice(format!("l: {}\r\n\r\n{SDP}", SDP.len()).as_bytes());
        out
    }

    const RESPONSE_401: &str = "SIP/2.0 401 Unauthorized
Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK4b3a8c1f2d9e;rport=5060;received=203.0.113.5
From: <sip:alice@example.com>;tag=a8f3c2e1b0d94f7e
To: <sip:alice@example.com>;tag=srv-77
Call-ID: 3c2f8e1a9b7d4c6e
CSeq: 35113 REGISTER
WWW-Authenticate: Digest realm=\"example.com\", nonce=\"abc,def\", algorithm=MD5, qop=\"auth\"
Content-Length: 0

";

    fn parse(s: &str) -> SipMessage {
        SipMessage::parse(&crlf(s)).unwrap()
    }

    fn roundtrips(m: &SipMessage) {
        assert_eq!(&SipMessage::parse(&m.to_bytes()).unwrap(), m);
    }

    #[test]
    fn baresip_register() {
        let m = parse(BARESIP_REGISTER);
        assert_eq!(m.method(), Some(&Method::Register));
        let Some(Uri::Sip(ruri)) = m.request_uri() else { panic!() };
        assert_eq!(ruri.host, Host::Name("example.com".into()));
        let via = m.top_via().unwrap();
        assert_eq!(via.transport, "UDP");
        assert_eq!(via.host, Host::Ipv4("192.168.1.20".parse().unwrap()));
        assert_eq!(via.port, Some(5060));
        assert_eq!(via.branch(), Some("z9hG4bK4b3a8c1f2d9e"));
        assert_eq!(via.rport(), Some(None));
        assert_eq!(m.call_id(), "3c2f8e1a9b7d4c6e");
        assert_eq!(m.cseq(), &CSeq { seq: 35113, method: Method::Register });
        assert_eq!(m.from().tag(), Some("a8f3c2e1b0d94f7e"));
        assert_eq!(m.to().tag(), None);
        assert_eq!(m.max_forwards(), Some(70));
        assert_eq!(m.expires(), None);
        let Contacts::Bindings(c) = m.contacts().unwrap() else { panic!() };
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].expires(), Some(3600));
        assert_eq!(c[0].params.value("+sip.instance"), Some("<urn:uuid:6e4ad4a3-1c2b-4f5e-8a9b-0c1d2e3f4a5b>"));
        assert_eq!(c[0].params.value("reg-id"), Some("1"));
        let Uri::Sip(cu) = &c[0].uri else { panic!() };
        assert_eq!(cu.user_name(), Some("alice-0x55d3a1"));
        assert_eq!(cu.params.value("transport"), Some("udp"));
        assert_eq!(m.header("user-agent"), Some("baresip v3.10.1 (x86_64/Linux)"));
        assert_eq!(m.header_list("Allow").count(), 11);
        assert_eq!(m.content_length(), 0);
        roundtrips(&m);
    }

    #[test]
    fn linphone_register() {
        let m = parse(LINPHONE_REGISTER);
        let via = m.top_via().unwrap();
        assert_eq!(via.transport, "TCP");
        assert!(via.params.contains("alias"));
        assert_eq!(via.branch(), Some("z9hG4bK.Jd9s~2kQx"));
        // addr-spec form To.
        assert_eq!(m.to().uri.to_string(), "sip:bob@sip.example.org");
        assert_eq!(m.to().display, None);
        assert_eq!(m.headers("Accept").count(), 3);
        assert_eq!(m.expires(), Some(600));
        let Contacts::Bindings(c) = m.contacts().unwrap() else { panic!() };
        assert_eq!(c[0].params.value("+sip.instance"), Some("<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"));
        assert_eq!(c[0].params.get("+org.linphone.specs").unwrap().value.as_deref(), Some("\"lime\""));
        assert_eq!(c[0].expires(), None);
        roundtrips(&m);
    }

    #[test]
    fn compact_folded_invite_with_sdp() {
        let m = SipMessage::parse(&compact_invite()).unwrap();
        assert_eq!(m.vias().len(), 2);
        assert_eq!(m.vias()[1].received(), Some("192.0.2.1"));
        assert_eq!(m.to().display.as_deref(), Some("Bob"));
        assert_eq!(m.header("To"), Some("Bob <sip:bob@biloxi.example.com>"));
        assert_eq!(m.from().display.as_deref(), Some("Alice, the \"first\""));
        assert_eq!(m.from().tag(), Some("1928301774"));
        assert_eq!(m.call_id(), "a84b4c76e66710@pc33.atlanta.example.com");
        assert_eq!(m.content_type(), Some("application/sdp"));
        assert_eq!(m.header("Supported"), Some("100rel"));
        assert_eq!(m.header("Subject"), Some("Lunch"));
        assert_eq!(m.body(), SDP.as_bytes());
        assert_eq!(m.record_routes().unwrap().len(), 2);
        let Contacts::Bindings(c) = m.contacts().unwrap() else { panic!() };
        assert_eq!(c.len(), 1);
        // Raw text (compact names, inner spacing) survives re-serialisation.
        let text = String::from_utf8(m.to_bytes()).unwrap();
        assert!(text.contains("\r\nv: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds , SIP/2.0/UDP"));
        assert!(text.contains("\r\nX-Custom-Thing: keep   this  spacing\r\n"));
        assert!(text.contains(&format!("\r\nContent-Length: {}\r\n\r\nv=0", SDP.len())));
        roundtrips(&m);
    }

    #[test]
    fn lf_only_ipv6_and_tel() {
        let raw = "INVITE sip:b@[2001:db8::2] SIP/2.0\nVia: SIP/2.0/UDP [2001:db8::9]:5060;received=2001:db8::9;branch=z9hG4bKv6\nFrom: <tel:+15551234>;tag=1\nTo: <sip:b@[2001:db8::2]>\nCall-ID: v6\nCSeq: 1 INVITE\nl: 0\n\n";
        let m = SipMessage::parse(raw.as_bytes()).unwrap();
        let via = m.top_via().unwrap();
        assert_eq!(via.host, Host::Ipv6("2001:db8::9".parse().unwrap()));
        assert_eq!(via.received(), Some("2001:db8::9"));
        assert_eq!(m.from().uri, Uri::Other("tel:+15551234".into()));
        let Some(Uri::Sip(u)) = m.request_uri() else { panic!() };
        assert_eq!(u.host.ip(), Some("2001:db8::2".parse().unwrap()));
        roundtrips(&m);
    }

    #[test]
    fn datagram_content_length_rules() {
        // Bytes past Content-Length are discarded (§18.3).
        let mut d = crlf(&BARESIP_REGISTER.replace("Content-Length: 0", "Content-Length: 3"));
        d.extend_from_slice(b"abcdef");
        assert_eq!(SipMessage::parse(&d).unwrap().body(), b"abc");
        // Without Content-Length the rest of the datagram is the body.
        let mut d = crlf(&BARESIP_REGISTER.replace("Content-Length: 0\n", ""));
        d.extend_from_slice(b"xyz");
        assert_eq!(SipMessage::parse(&d).unwrap().body(), b"xyz");
        // Leading CRLFs are ignored (§7.5).
        let mut d = b"\r\n\r\n".to_vec();
        d.extend(crlf(BARESIP_REGISTER));
        assert!(SipMessage::parse(&d).is_ok());
    }

    #[test]
    fn many_folded_lines_stay_linear() {
        // 30,000 continuation lines in a 64 KiB datagram must not be quadratic.
        let folded = format!("Subject: a   {}", "\r\n x".repeat(30_000));
        let raw = BARESIP_REGISTER.replace("Supported: outbound,path,gruu,replaces", "X-Placeholder: 1");
        let raw = String::from_utf8(crlf(&raw)).unwrap().replace("X-Placeholder: 1", &folded);
        let start = std::time::Instant::now();
        let m = SipMessage::parse(raw.as_bytes()).unwrap();
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        let subject = m.header("Subject").unwrap();
        assert!(subject.starts_with("a x x"));
        assert_eq!(subject.len(), 1 + 2 * 30_000);
    }

    #[test]
    fn response_keeps_raw_auth_header() {
        let m = parse(RESPONSE_401);
        assert_eq!(m.status(), Some(StatusCode::UNAUTHORIZED));
        assert_eq!(m.reason(), Some("Unauthorized"));
        assert_eq!(m.method(), None);
        assert_eq!(m.top_via().unwrap().rport(), Some(Some(5060)));
        assert_eq!(
            m.header("www-authenticate"),
            Some("Digest realm=\"example.com\", nonce=\"abc,def\", algorithm=MD5, qop=\"auth\"")
        );
        roundtrips(&m);
    }

    #[track_caller]
    fn rejects(input: &[u8], want: ParseError) {
        assert_eq!(SipMessage::parse(input), Err(want));
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let base = BARESIP_REGISTER;
        rejects(&crlf(&base.replace("Call-ID: 3c2f8e1a9b7d4c6e\n", "")), ParseError::MissingHeader("Call-ID"));
        rejects(
            &crlf(&base.replace("CSeq: 35113 REGISTER", "CSeq: abc REGISTER")),
            ParseError::InvalidHeader { name: "CSeq", reason: "bad sequence number" },
        );
        rejects(
            &crlf(&base.replace("CSeq: 35113 REGISTER", "CSeq: 99999999999 REGISTER")),
            ParseError::InvalidHeader { name: "CSeq", reason: "bad sequence number" },
        );
        rejects(&crlf(&base.replace("CSeq: 35113 REGISTER", "CSeq: 1 INVITE")), ParseError::CSeqMethodMismatch);
        rejects(&crlf(&base.replace("Content-Length: 0", "Content-Length: 10")), ParseError::BodyTruncated);
        rejects(&crlf(&base.replace("Via: ", "X-Via: ")), ParseError::MissingHeader("Via"));
        rejects(&crlf(&base.replace("Max-Forwards: 70\n", "From: <sip:x@y>\n")), ParseError::DuplicateHeader("From"));
        rejects(
            &crlf(&base.replace("Max-Forwards: 70", "Max-Forwards: seventy")),
            ParseError::InvalidHeader { name: "Max-Forwards", reason: "not a number" },
        );
        rejects(&crlf(&base.replace("User-Agent:", "User-Agent")), ParseError::BadHeaderLine);
        rejects(&crlf(&base.replace("SIP/2.0\n", "SIP/3.0\n")), ParseError::BadVersion);
        rejects(b"SIP/1.0 200 OK\r\n\r\n", ParseError::BadVersion);
        rejects(b"SIP/2.0 2000 OK\r\n\r\n", ParseError::BadStatusCode);
        rejects(b"SIP/2.0 099 Low\r\n\r\n", ParseError::BadStatusCode);
        rejects(
            &crlf(&base.replace("REGISTER sip:example.com", "REGISTER example.com")),
            ParseError::BadRequestUri("no URI scheme"),
        );
        rejects(
            &crlf(&base.replace("From: <sip:alice@example.com>", "From: <sip:alice@example.com")),
            ParseError::InvalidHeader { name: "From", reason: "missing '>'" },
        );
        rejects(&crlf(&base.replace("baresip", "bare\u{1}sip")), ParseError::BadHeaderValue);
        rejects(&crlf(base)[..60], ParseError::IncompleteHead);
        rejects(b"\r\n\r\n", ParseError::Empty);
        rejects(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n", ParseError::NotUtf8);
        rejects(b"\x00\x01garbage\r\n\r\n", ParseError::BadStartLine);
        rejects(b"IN\x00VITE sip:a@b SIP/2.0\r\n\r\n", ParseError::BadMethod);
        // Reason phrases are fit for a status line and map to a status code.
        let e = SipMessage::parse(&crlf(&base.replace("Call-ID: 3c2f8e1a9b7d4c6e\n", ""))).unwrap_err();
        assert_eq!(e.to_string(), "Missing Call-ID header");
        assert_eq!(e.status_code(), 400);
        assert_eq!(ParseError::BadVersion.status_code(), 505);
    }

    #[test]
    fn response_to_copies_per_8_2_6() {
        let mut req = SipMessage::parse(&compact_invite()).unwrap();
        req.add_header("Timestamp", "54").unwrap();
        let ok = SipMessage::response_to(&req, StatusCode::OK, None, Some("as83kd9b"));
        assert_eq!(ok.status(), Some(StatusCode::OK));
        assert_eq!(ok.reason(), Some("OK"));
        assert_eq!(ok.vias(), req.vias());
        assert_eq!(ok.headers("Via").collect::<Vec<_>>(), req.headers("Via").collect::<Vec<_>>());
        assert_eq!(ok.to().tag(), Some("as83kd9b"));
        assert_eq!(ok.header("To"), Some("Bob <sip:bob@biloxi.example.com>;tag=as83kd9b"));
        assert_eq!(ok.from(), req.from());
        assert_eq!(ok.call_id(), req.call_id());
        assert_eq!(ok.cseq(), req.cseq());
        assert_eq!(ok.header("Record-Route"), None);
        assert_eq!(ok.header("Timestamp"), None);
        assert_eq!(ok.max_forwards(), None);
        assert!(ok.body().is_empty());
        roundtrips(&ok);

        let trying = SipMessage::response_to(&req, StatusCode::TRYING, None, None);
        assert_eq!(trying.header("Timestamp"), Some("54"));
        assert_eq!(trying.to().tag(), None);
        roundtrips(&trying);

        // An existing To tag is kept; a bad tag argument is ignored.
        let again = SipMessage::response_to(&ok, StatusCode::new(486).unwrap(), Some("Busy\r\nX: y"), Some("other"));
        assert_eq!(again.to().tag(), Some("as83kd9b"));
        assert_eq!(again.reason(), Some("Busy  X: y"));
        let bad_tag = SipMessage::response_to(&req, StatusCode::OK, None, Some("a b"));
        assert_eq!(bad_tag.to().tag(), None);
        roundtrips(&again);
    }

    #[test]
    fn via_mutators() {
        let mut m = SipMessage::parse(&compact_invite()).unwrap();
        let mine = Via::new("TCP", Host::Name("proxy.example.net".into()), Some(5070), "z9hG4bKproxy1").unwrap();
        m.push_via(&mine).unwrap();
        assert_eq!(m.vias().len(), 3);
        assert_eq!(m.top_via(), Some(&mine));
        assert_eq!(m.all_headers()[0].value(), "SIP/2.0/TCP proxy.example.net:5070;branch=z9hG4bKproxy1");
        assert_eq!(m.pop_via(), Some(mine));
        // Popping from a two-value line keeps the second value on that line.
        let popped = m.pop_via().unwrap();
        assert_eq!(popped.branch(), Some("z9hG4bK776asdhds"));
        assert_eq!(m.header("Via"), Some("SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds8;received=192.0.2.1"));
        assert!(m.pop_via().is_some());
        assert!(m.top_via().is_none());
        assert!(m.pop_via().is_none());
    }

    #[test]
    fn stamp_received_rfc3581() {
        // RFC 3581 §4 example: rport requested → received + rport always.
        let mut m = parse(BARESIP_REGISTER);
        let nat: SocketAddr = "203.0.113.5:61234".parse().unwrap();
        m.stamp_received(nat).unwrap();
        let via = m.top_via().unwrap();
        assert_eq!(via.rport(), Some(Some(61234)));
        assert_eq!(via.received(), Some("203.0.113.5"));
        assert!(
            m.header("Via").unwrap().starts_with(
                "SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK4b3a8c1f2d9e;rport=61234;received=203.0.113.5"
            )
        );
        roundtrips(&m);

        // No rport, sent-by equals the source: nothing added (§18.2.1).
        let mut m = parse(&BARESIP_REGISTER.replace(";rport", ""));
        m.stamp_received("192.168.1.20:5060".parse().unwrap()).unwrap();
        assert_eq!(m.top_via().unwrap().received(), None);
        // No rport, different source: received only.
        m.stamp_received("198.51.100.1:5060".parse().unwrap()).unwrap();
        assert_eq!(m.top_via().unwrap().received(), Some("198.51.100.1"));
        assert_eq!(m.top_via().unwrap().rport(), None);
        // IPv6 source: received is an unbracketed address.
        m.stamp_received("[2001:db8::7]:5060".parse().unwrap()).unwrap();
        assert_eq!(m.top_via().unwrap().received(), Some("2001:db8::7"));
        roundtrips(&m);
    }

    #[test]
    fn max_forwards_and_header_edits() {
        let mut m = parse(BARESIP_REGISTER);
        assert_eq!(m.decrement_max_forwards(), Some(69));
        assert_eq!(m.header("Max-Forwards"), Some("69"));
        m.set_header("Max-Forwards", "0").unwrap();
        assert_eq!(m.decrement_max_forwards(), None);
        m.remove_header("max-forwards").unwrap();
        assert_eq!(m.decrement_max_forwards(), Some(70));

        let before = m.clone();
        assert!(m.set_header("From", "not a uri").is_err());
        assert_eq!(m.remove_header("i"), Err(ParseError::MissingHeader("Call-ID")));
        assert_eq!(m.add_header("X-Evil", "a\r\nVia: x"), Err(ParseError::BadHeaderValue));
        assert_eq!(m.add_header("Bad Name", "x"), Err(ParseError::BadHeaderName));
        assert_eq!(m.set_header("l", "5"), Err(ParseError::ComputedHeader("Content-Length")));
        assert_eq!(m.add_header("CSeq", "1 REGISTER"), Err(ParseError::DuplicateHeader("CSeq")));
        assert_eq!(m, before, "failed edits leave the message unchanged");

        m.set_header("f", "\"Al\" <sip:alice@example.com>;tag=new").unwrap();
        assert_eq!(m.from().tag(), Some("new"));
        assert_eq!(m.headers("From").count(), 1);
        m.set_body(b"hello".to_vec());
        assert_eq!(m.content_length(), 5);
        roundtrips(&m);
    }

    #[test]
    fn routes_and_record_routes() {
        let mut m = SipMessage::parse(&compact_invite()).unwrap();
        m.add_header("Route", "<sip:p1.example.com;lr>,<sip:p2.example.com;lr>").unwrap();
        m.prepend_header("Record-Route", "<sip:me.example.net;lr>").unwrap();
        let rr = m.record_routes().unwrap();
        assert_eq!(rr.len(), 3);
        assert_eq!(rr[0].uri.to_string(), "sip:me.example.net;lr");
        let first = m.pop_route().unwrap().unwrap();
        assert!(first.uri.as_sip().unwrap().params.contains("lr"));
        assert_eq!(first.uri.as_sip().unwrap().host, Host::Name("p1.example.com".into()));
        assert_eq!(m.routes().unwrap().len(), 1);
        m.pop_route().unwrap();
        assert_eq!(m.pop_route().unwrap(), None);
        assert_eq!(m.header("Route"), None);
        m.set_request_uri(Uri::parse("sip:bob@192.0.2.99:5062;transport=tcp").unwrap()).unwrap();
        roundtrips(&m);
    }

    #[test]
    fn contact_wildcard_and_errors() {
        let m = parse(&BARESIP_REGISTER.replace(
            "Contact: <sip:alice-0x55d3a1@192.168.1.20:5060;transport=udp>;expires=3600;",
            "Contact: *\nX-Old: ",
        ));
        assert_eq!(m.contacts().unwrap(), Contacts::Wildcard);
        let mut m2 = m.clone();
        m2.add_header("m", "<sip:a@b>").unwrap();
        assert!(m2.contacts().is_err());
        let mut m3 = m.clone();
        m3.set_header("Contact", "<sip:a@b").unwrap();
        assert_eq!(m3.contacts(), Err(ParseError::InvalidHeader { name: "Contact", reason: "missing '>'" }));
    }

    #[test]
    fn list_splitting_respects_quotes_and_brackets() {
        let v = r#""A, \"B\"" <sip:a@x;foo=1,2>;p="x,y" , <sip:b@y>,, sip:c@z"#;
        let parts: Vec<&str> = split_list(v).collect();
        assert_eq!(parts, vec![r#""A, \"B\"" <sip:a@x;foo=1,2>;p="x,y""#, "<sip:b@y>", "sip:c@z"]);
    }

    #[test]
    fn uri_forms() {
        let u = Uri::parse("sips:+1234;phone-context=example.com@gw.example.com:5061;user=phone?Subject=x").unwrap();
        let Uri::Sip(s) = &u else { panic!() };
        assert!(s.secure);
        assert_eq!(s.user.as_deref(), Some("+1234;phone-context=example.com"));
        assert_eq!(s.port, Some(5061));
        assert_eq!(s.params.value("USER"), Some("phone"));
        assert_eq!(s.headers.as_deref(), Some("Subject=x"));
        assert_eq!(Uri::parse(&u.to_string()).unwrap(), u);
        assert!(Uri::parse("sip:").is_err());
        assert!(Uri::parse("sip:host:99999").is_err());
        assert!(Uri::parse("sip:[::1").is_err());
        assert!(Uri::parse("sip:a b@host").is_err());
        assert!(Uri::parse("1sip:x").is_err());
    }

    /// ezk-sip-types as an oracle: it must read the same Via, From/To tags,
    /// CSeq and Contact hosts from the captures. (ezk rejects escaped quotes
    /// inside a quoted display name, legal per §25.1 `quoted-pair`, so the
    /// compact INVITE goes in with a plain display name.)
    #[test]
    fn agrees_with_ezk_sip_types() {
        use ezk_sip_types::header::typed;
        use ezk_sip_types::{Headers, Name};
        let plain = String::from_utf8(compact_invite()).unwrap().replace(r#""Alice, the \"first\"""#, "Alice");
        let corpus = [crlf(BARESIP_REGISTER), crlf(LINPHONE_REGISTER), plain.into_bytes(), crlf(RESPONSE_401)];
        for raw in corpus {
            let ours = SipMessage::parse(&raw).unwrap();
            let mut h = Headers::new();
            for line in ours.all_headers() {
                h.insert(Name::from(expand_compact(line.name()).to_owned()), line.value().to_owned());
            }
            let vias: Vec<typed::Via> = h.get_named().unwrap();
            assert_eq!(vias.len(), ours.vias().len());
            for (e, o) in vias.iter().zip(ours.vias()) {
                assert_eq!(e.transport.as_ref(), o.transport);
                assert_eq!(e.sent_by.host.to_string(), o.host.to_string());
                assert_eq!(e.sent_by.port, o.port);
                assert_eq!(e.params.get_val("branch").map(|b| b.to_string()).as_deref(), o.branch());
            }
            let from: typed::FromTo = h.get(Name::FROM).unwrap();
            let to: typed::FromTo = h.get(Name::TO).unwrap();
            assert_eq!(from.tag.as_deref(), ours.from().tag());
            assert_eq!(to.tag.as_deref(), ours.to().tag());
            let cseq: typed::CSeq = h.get_named().unwrap();
            assert_eq!((cseq.cseq, cseq.method.to_string()), (ours.cseq().seq, ours.cseq().method.to_string()));
            if let Ok(Contacts::Bindings(c)) = ours.contacts()
                && !c.is_empty()
            {
                let theirs: Vec<typed::Contact> = h.get_named().unwrap();
                assert_eq!(theirs.len(), c.len());
                for (e, o) in theirs.iter().zip(&c) {
                    assert_eq!(e.uri.uri.host_port.host.to_string(), o.uri.as_sip().unwrap().host.to_string());
                }
            }
        }
    }

    fn corpus() -> Vec<Vec<u8>> {
        vec![crlf(BARESIP_REGISTER), crlf(LINPHONE_REGISTER), compact_invite(), crlf(RESPONSE_401)]
    }

    fn token() -> impl Strategy<Value = String> {
        "[A-Za-z0-9][A-Za-z0-9.!%*_+`'~-]{0,11}"
    }

    fn host() -> impl Strategy<Value = Host> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|b| Host::Ipv4(b.into())),
            any::<[u16; 8]>().prop_map(|b| Host::Ipv6(b.into())),
            "[a-z][a-z0-9-]{0,8}(\\.[a-z]{2,5}){0,2}".prop_map(Host::Name),
        ]
    }

    fn params() -> impl Strategy<Value = Vec<(String, Option<String>)>> {
        proptest::collection::vec((token(), proptest::option::of("[A-Za-z0-9:.\\[\\]/_-]{1,10}")), 0..3)
    }

    fn sip_uri() -> impl Strategy<Value = Uri> {
        (any::<bool>(), proptest::option::of("[a-z0-9+._-]{1,8}"), host(), proptest::option::of(any::<u16>()), params())
            .prop_map(|(secure, user, host, port, ps)| {
                let mut u = SipUri::new(host, port);
                u.secure = secure;
                u.user = user;
                for (n, v) in ps {
                    u.params.set(&n, v.as_deref()).unwrap();
                }
                Uri::Sip(u)
            })
    }

    fn name_addr() -> impl Strategy<Value = NameAddr> {
        (proptest::option::of("[A-Za-z \"\\\\,é]{0,10}"), sip_uri(), params()).prop_map(|(d, uri, ps)| {
            let mut n = NameAddr::new(uri);
            n.display = d;
            for (k, v) in ps {
                n.params.set(&k, v.as_deref()).unwrap();
            }
            n
        })
    }

    fn method() -> impl Strategy<Value = Method> {
        prop_oneof![
            Just(Method::Invite),
            Just(Method::Ack),
            Just(Method::Register),
            Just(Method::Cancel),
            token().prop_map(|t| Method::parse(&t).unwrap()),
        ]
    }

    prop_compose! {
        fn message()(
            request in any::<bool>(),
            method in method(),
            ruri in sip_uri(),
            status in 100u16..700,
            reason in "[A-Za-z ]{0,12}",
            vias in proptest::collection::vec((prop_oneof![Just("UDP"), Just("TCP"), Just("tls")], host(),
                proptest::option::of(any::<u16>()), token(), any::<bool>()), 1..4),
            from in name_addr(),
            to in name_addr(),
            call_id in "[A-Za-z0-9@.-]{1,20}",
            seq in any::<u32>(),
            max_fwd in proptest::option::of(0u8..=255),
            extra in proptest::collection::vec(("X-[A-Za-z0-9-]{1,8}", "[ -~]{0,20}"), 0..4),
            compact in any::<bool>(),
            body in proptest::collection::vec(any::<u8>(), 0..40),
        ) -> SipMessage {
            let mut headers = Vec::new();
            let mut line: Vec<String> = Vec::new();
            for (t, h, p, b, same_line) in vias {
                let via = Via::new(t, h, p, &format!("z9hG4bK{b}")).unwrap().to_string();
                if same_line && !line.is_empty() {
                    line.push(via);
                } else {
                    if !line.is_empty() {
                        headers.push(Header::new(if compact { "v" } else { "Via" }, &line.join(", ")).unwrap());
                    }
                    line = vec![via];
                }
            }
            headers.push(Header::new("Via", &line.join(",")).unwrap());
            headers.push(Header::new(if compact { "f" } else { "From" }, &from.to_string()).unwrap());
            headers.push(Header::new("TO", &to.to_string()).unwrap());
            headers.push(Header::new(if compact { "i" } else { "Call-ID" }, &call_id).unwrap());
            headers.push(Header::new("CSeq", &format!("{seq} {method}")).unwrap());
            if let Some(mf) = max_fwd {
                headers.push(Header::new("Max-Forwards", &mf.to_string()).unwrap());
            }
            for (n, v) in extra {
                headers.push(Header::new(&n, &v).unwrap());
            }
            if request {
                SipMessage::new_request(method, ruri, headers, body).unwrap()
            } else {
                SipMessage::new_response(StatusCode::new(status).unwrap(), &reason, headers, body).unwrap()
            }
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = SipMessage::parse(&bytes);
        }

        #[test]
        fn never_panics_on_mutated_captures(
            which in 0usize..4,
            edits in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<proptest::sample::Index>(),
        ) {
            let mut bytes = corpus().swap_remove(which);
            for (at, b) in edits {
                let i = at.index(bytes.len());
                bytes[i] = b;
            }
            let _ = SipMessage::parse(&bytes);
            let n = cut.index(bytes.len());
            if let Ok(m) = SipMessage::parse(&bytes[..n]) {
                prop_assert_eq!(SipMessage::parse(&m.to_bytes()).unwrap(), m);
            }
        }

        #[test]
        fn generated_messages_roundtrip(m in message()) {
            prop_assert_eq!(SipMessage::parse(&m.to_bytes()).unwrap(), m.clone());
            let resp = SipMessage::response_to(&m, StatusCode::OK, None, Some("t1"));
            prop_assert_eq!(SipMessage::parse(&resp.to_bytes()).unwrap(), resp);
        }
    }
}
