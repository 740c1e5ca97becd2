//! Client-side Digest (RFC 3261 §22.2–§22.3, RFC 7616 §3.3–§3.4, RFC 8760):
//! reading a `WWW-Authenticate`/`Proxy-Authenticate` challenge and
//! computing the matching `Authorization`/`Proxy-Authorization` value.
//!
//! The hashing is [`crate::sip::digest::compute_response`], the same code
//! the registrar verifies with, so both sides cannot drift apart.
//!
//! Not done: `auth-int` (we answer `auth`, or RFC 2069 style when the
//! challenge offers no qop), `userhash`, `charset`/`username*`.

use crate::sip::digest::{self, Credentials, DigestAlgorithm, DigestError, NonceCount, Qop};
use crate::sip::message::{SipMessage, StatusCode};

/// One parsed Digest challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: DigestAlgorithm,
    /// A `-sess` algorithm variant.
    pub session: bool,
    /// The server offered `qop=auth` (RFC 7616 §3.3: a list of tokens).
    pub qop_auth: bool,
    /// `stale=true`: our credentials were right but the nonce expired
    /// (RFC 7616 §3.3), so retrying with the new nonce is not a new failure.
    pub stale: bool,
}

/// Parses one challenge value (`Digest realm=…, nonce=…, …`).
pub fn parse_challenge(value: &str) -> Result<Challenge, DigestError> {
    let params = digest::parse_params(value)?;
    let need = |name: &'static str| params.get(name).cloned().ok_or(DigestError::Missing(name));
    let (algorithm, session) = match params.get("algorithm") {
        None => (DigestAlgorithm::Md5, false),
        Some(a) => digest::parse_algorithm(a)?,
    };
    let qop_auth =
        params.get("qop").is_some_and(|q| q.split(',').any(|t| t.trim().eq_ignore_ascii_case(Qop::Auth.as_str())));
    // RFC 7616 §3.3: a qop list that excludes `auth` leaves us nothing we
    // do (no auth-int support), while no qop at all is RFC 2069 style.
    if params.contains_key("qop") && !qop_auth {
        return Err(DigestError::UnsupportedQop(params.get("qop").cloned().unwrap_or_default()));
    }
    Ok(Challenge {
        realm: need("realm")?,
        nonce: need("nonce")?,
        opaque: params.get("opaque").cloned(),
        algorithm,
        session,
        qop_auth,
        stale: params.get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
    })
}

/// The challenge header a 401 or 407 carries, and the credentials header
/// that answers it (RFC 3261 §22.2, §22.3).
pub fn header_names(status: StatusCode) -> Option<(&'static str, &'static str)> {
    match status.as_u16() {
        401 => Some(("WWW-Authenticate", "Authorization")),
        407 => Some(("Proxy-Authenticate", "Proxy-Authorization")),
        _ => None,
    }
}

/// The first challenge in `resp` (a 401 or 407) whose algorithm is in
/// `allowed`. RFC 7616 §3.7 and RFC 8760 §2.4: the server lists its
/// preferred algorithm first and the client takes the first it supports.
pub fn pick_challenge(resp: &SipMessage, allowed: &[DigestAlgorithm]) -> Option<Challenge> {
    let (name, _) = header_names(resp.status()?)?;
    resp.headers(name).filter_map(|v| parse_challenge(v).ok()).find(|c| allowed.contains(&c.algorithm))
}

/// A challenge the user agent keeps answering: it reuses the nonce with an
/// increasing `nc` (RFC 7616 §3.4) until the server calls it stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedAuth {
    pub challenge: Challenge,
    /// The last `nc` sent with this nonce.
    pub nc: u32,
}

impl CachedAuth {
    pub fn new(challenge: Challenge) -> CachedAuth {
        CachedAuth { challenge, nc: 0 }
    }

    /// The next credentials value for `method` on `uri`, with `cnonce`
    /// (the caller's fresh random string).
    pub fn answer(&mut self, user: &str, password: &str, method: &str, uri: &str, cnonce: &str) -> String {
        self.nc = self.nc.wrapping_add(1).max(1);
        authorization(&self.challenge, user, password, method, uri, self.nc, cnonce)
    }
}

/// The `Authorization`/`Proxy-Authorization` value for `ch` (RFC 7616 §3.4,
/// RFC 3261 §22.4: `uri` is the Request-URI). With `qop=auth` it carries
/// `nc` (8 hex digits) and `cnonce`; without qop it is RFC 2069 style.
pub fn authorization(
    ch: &Challenge,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
    cnonce: &str,
) -> String {
    let ha1 = digest::ha1(ch.algorithm, user, &ch.realm, password);
    let with_cnonce = ch.qop_auth || ch.session;
    let creds = Credentials {
        username: user.to_owned(),
        realm: ch.realm.clone(),
        nonce: ch.nonce.clone(),
        uri: uri.to_owned(),
        response: String::new(),
        algorithm: ch.algorithm,
        session: ch.session,
        cnonce: with_cnonce.then(|| cnonce.to_owned()),
        nc: ch.qop_auth.then(|| NonceCount::parse(&format!("{nc:08x}")).ok()).flatten(),
        qop: ch.qop_auth.then_some(Qop::Auth),
        opaque: ch.opaque.clone(),
    };
    let response = digest::compute_response(&creds, method, &ha1, None);
    let alg = if ch.session { format!("{}-sess", ch.algorithm.as_str()) } else { ch.algorithm.as_str().to_owned() };
    let mut out = format!(
        "Digest username={}, realm={}, nonce={}, uri={}, response={}, algorithm={alg}",
        digest::quote(user),
        digest::quote(&ch.realm),
        digest::quote(&ch.nonce),
        digest::quote(uri),
        digest::quote(&response),
    );
    if let Some(c) = &creds.cnonce {
        out.push_str(", cnonce=");
        out.push_str(&digest::quote(c));
    }
    if let Some(nc) = &creds.nc {
        out.push_str(", nc=");
        out.push_str(nc.as_str());
        out.push_str(", qop=auth");
    }
    if let Some(o) = &ch.opaque {
        out.push_str(", opaque=");
        out.push_str(&digest::quote(o));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::digest::{ha1, parse_credentials, verify};

    const NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const OPAQUE: &str = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";
    const CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

    fn rfc7616_challenge(alg: &str) -> String {
        format!(
            "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm={alg}, \
             nonce=\"{NONCE}\", opaque=\"{OPAQUE}\""
        )
    }

    /// RFC 7616 §3.9.1: the example's SHA-256 and MD5 responses.
    #[test]
    fn rfc7616_example_responses() {
        for (alg, algorithm, expected) in [
            ("SHA-256", DigestAlgorithm::Sha256, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
            ("MD5", DigestAlgorithm::Md5, "8ca523f5e9506fed4657c9700eebdbec"),
        ] {
            let ch = parse_challenge(&rfc7616_challenge(alg)).unwrap();
            assert_eq!(ch.algorithm, algorithm);
            assert!(ch.qop_auth && !ch.stale && !ch.session);
            assert_eq!(ch.opaque.as_deref(), Some(OPAQUE));
            let value = authorization(&ch, "Mufasa", "Circle of Life", "GET", "/dir/index.html", 1, CNONCE);
            let creds = parse_credentials(&value).unwrap();
            assert_eq!(creds.response, expected, "{alg}");
            assert_eq!(creds.nc.as_ref().map(NonceCount::as_str), Some("00000001"));
            assert_eq!(creds.opaque.as_deref(), Some(OPAQUE));
            let stored = ha1(algorithm, "Mufasa", "http-auth@example.org", "Circle of Life");
            assert!(verify(&creds, "GET", &stored, None));
        }
    }

    #[test]
    fn nonce_count_increases_and_rfc2069_form() {
        let mut cached = CachedAuth::new(parse_challenge(&rfc7616_challenge("MD5")).unwrap());
        let first = parse_credentials(&cached.answer("u", "p", "REGISTER", "sip:d", "c1")).unwrap();
        let second = parse_credentials(&cached.answer("u", "p", "REGISTER", "sip:d", "c2")).unwrap();
        assert_eq!(first.nc.map(|n| n.value()), Some(1));
        assert_eq!(second.nc.map(|n| n.value()), Some(2));

        // No qop offered: no nc, no cnonce, response = H(HA1:nonce:HA2).
        let ch = parse_challenge("Digest realm=\"r\", nonce=\"n\"").unwrap();
        let creds = parse_credentials(&authorization(&ch, "u", "p", "INVITE", "sip:b@d", 1, "c")).unwrap();
        assert_eq!((creds.qop, &creds.nc, &creds.cnonce), (None, &None, &None));
        assert!(verify(&creds, "INVITE", &ha1(DigestAlgorithm::Md5, "u", "r", "p"), None));
    }

    #[test]
    fn challenge_choice_and_errors() {
        let resp = SipMessage::parse(
            b"SIP/2.0 407 Proxy Authentication Required\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
              From: <sip:a@d>;tag=1\r\nTo: <sip:b@d>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
              Proxy-Authenticate: Digest realm=\"d\", nonce=\"x\", algorithm=SHA-512-256, qop=\"auth\"\r\n\
              Proxy-Authenticate: Digest realm=\"d\", nonce=\"y\", algorithm=SHA-256, qop=\"auth\", stale=TRUE\r\n\
              Proxy-Authenticate: Digest realm=\"d\", nonce=\"z\", algorithm=MD5, qop=\"auth\"\r\n\
              Content-Length: 0\r\n\r\n",
        )
        .unwrap();
        let all = [DigestAlgorithm::Sha256, DigestAlgorithm::Md5];
        let ch = pick_challenge(&resp, &all).unwrap();
        assert_eq!((ch.nonce.as_str(), ch.stale), ("y", true));
        assert_eq!(pick_challenge(&resp, &[DigestAlgorithm::Md5]).unwrap().nonce, "z");
        assert!(parse_challenge("Basic realm=\"x\"").is_err());
        assert!(parse_challenge("Digest realm=\"x\", nonce=\"n\", qop=\"auth-int\"").is_err());
        assert!(matches!(parse_challenge("Digest nonce=\"n\""), Err(DigestError::Missing("realm"))));
        let sess = parse_challenge("Digest realm=\"r\", nonce=\"n\", algorithm=SHA-256-sess, qop=auth").unwrap();
        let creds = parse_credentials(&authorization(&sess, "u", "p", "BYE", "sip:x", 3, "cn")).unwrap();
        assert!(creds.session);
        assert!(verify(&creds, "BYE", &ha1(DigestAlgorithm::Sha256, "u", "r", "p"), None));
    }
}
