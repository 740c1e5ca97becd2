//! Typed header values (From/To/Contact/Route, Via, CSeq) and raw header lines
//! (RFC 3261 §7.3, §20).

use std::fmt;

use super::error::{ParseError, invalid};
use super::lex::{is_token, is_token_char, parse_delta_seconds, split_quoted, strip_prefix_ci};
use super::start_line::Method;
use super::uri::{Host, Params, Uri, parse_host_port};

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
pub(super) fn bracketed(s: &str) -> Result<(&str, &str), ParseError> {
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

/// One header line as received (or added): the name as written (possibly
/// compact) and the value with folding undone and outer whitespace trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub(super) name: String,
    pub(super) value: String,
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
