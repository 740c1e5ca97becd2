//! Hosts, parameters and URIs (RFC 3261 §19.1, §25.1).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::error::{ParseError, invalid};
use super::lex::{is_token, split_outside_quotes, split_quoted};

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
pub(super) fn parse_host_port(s: &str) -> Result<(Host, Option<u16>), ParseError> {
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
pub struct Params(pub(super) Vec<Param>);

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
    pub(super) fn parse_header(s: &str) -> Result<Params, ParseError> {
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

/// A typed URI must print as text that parses back to it, or the message
/// would not survive `to_bytes`.
pub(super) fn check_uri_roundtrip(uri: &Uri) -> Result<(), ParseError> {
    match Uri::parse(&uri.to_string()) {
        Ok(back) if back == *uri => Ok(()),
        _ => Err(ParseError::BadRequestUri("does not round-trip")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
