//! Server-side HTTP Digest authentication for SIP (sans-IO).
//!
//! Implements RFC 3261 §22.4 (Digest in SIP, `401`/`407` challenges), RFC 7616
//! §3.3–§3.5 (challenge, `Authorization` syntax, response computation with
//! MD5 and SHA-256, `qop=auth`/`auth-int`, `-sess` variants) and RFC 8760
//! §2.4 (SHA-256 for SIP, one challenge per algorithm, strongest first).
//!
//! Credential storage never keeps passwords, only `H(username:realm:password)`
//! ([`ha1`]). Nonces are stateless and self-verifying ([`NonceKeeper`]): a
//! timestamp, a counter and an HMAC-SHA256 tag over both. Time is an input:
//! `now_ms` is wall-clock milliseconds since the Unix epoch, so that nonces
//! survive a restart and can be checked by any process sharing the secret.
//!
//! Not implemented: `userhash` (RFC 7616 §3.4.4), `charset`/`username*`
//! (§3.4.3), `SHA-512-256`, and the `Authentication-Info` header (§3.5).
//! Checking that `uri` names the Request-URI (RFC 7616 §3.4.6) is the caller's
//! job: [`authenticate`] only requires it to be present.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use md5::Md5;
use ring::hmac;
use sha2::Sha256;

/// Default nonce lifetime: 5 minutes, after which a nonce is [`NonceState::Stale`].
pub const DEFAULT_NONCE_LIFETIME: Duration = Duration::from_secs(300);
/// Default bound on the number of nonces whose highest `nc` is remembered.
pub const DEFAULT_NC_CAPACITY: usize = 100_000;

/// A digest hash algorithm (RFC 7616 §3.3, RFC 8760 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DigestAlgorithm {
    /// MD5, the RFC 2617 default; every SIP phone knows it.
    Md5,
    /// SHA-256 (RFC 7616, RFC 8760).
    Sha256,
}

impl DigestAlgorithm {
    /// The token used in the `algorithm` parameter (without `-sess`).
    pub fn as_str(self) -> &'static str {
        match self {
            DigestAlgorithm::Md5 => "MD5",
            DigestAlgorithm::Sha256 => "SHA-256",
        }
    }

    /// Length in hex characters of a hash of this algorithm.
    pub fn hex_len(self) -> usize {
        match self {
            DigestAlgorithm::Md5 => 32,
            DigestAlgorithm::Sha256 => 64,
        }
    }
}

impl fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Quality of protection (RFC 7616 §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qop {
    /// `auth`: the response covers method and uri.
    Auth,
    /// `auth-int`: the response also covers a hash of the body.
    AuthInt,
}

impl Qop {
    /// The token as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Qop::Auth => "auth",
            Qop::AuthInt => "auth-int",
        }
    }
}

/// A nonce count (`nc`, 8 hex digits): its text, which the response hashes,
/// and its value, which replay protection compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonceCount {
    text: String,
    value: u32,
}

impl NonceCount {
    /// Parses exactly 8 hex digits (RFC 7616 §3.4: `nc-value = 8LHEX`; upper
    /// case is tolerated).
    pub fn parse(text: &str) -> Result<Self, DigestError> {
        if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(DigestError::BadNonceCount(text.to_owned()));
        }
        let value = u32::from_str_radix(text, 16).map_err(|_| DigestError::BadNonceCount(text.to_owned()))?;
        Ok(NonceCount { text: text.to_owned(), value })
    }

    /// The digits exactly as the client sent them.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The numeric value.
    pub fn value(&self) -> u32 {
        self.value
    }
}

/// Parsed `Authorization` / `Proxy-Authorization` Digest credentials
/// (RFC 3261 §25.1 `digest-response`, RFC 7616 §3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `username`.
    pub username: String,
    /// `realm`.
    pub realm: String,
    /// `nonce`, as issued by the server.
    pub nonce: String,
    /// `uri` (the digest-uri, normally the Request-URI).
    pub uri: String,
    /// `response`: the client's hex digest.
    pub response: String,
    /// `algorithm`, MD5 when absent.
    pub algorithm: DigestAlgorithm,
    /// Whether the algorithm was a `-sess` variant.
    pub session: bool,
    /// `cnonce`; present whenever `qop` or `session` is.
    pub cnonce: Option<String>,
    /// `nc`; present whenever `qop` is.
    pub nc: Option<NonceCount>,
    /// `qop`; absent for RFC 2069-style responses.
    pub qop: Option<Qop>,
    /// `opaque`, echoed from the challenge.
    pub opaque: Option<String>,
}

/// Why a credentials header could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// The header is empty or its scheme is not `Digest`.
    #[error("authorization scheme is not Digest")]
    NotDigest,
    /// The parameter list does not follow the grammar.
    #[error("malformed Digest parameters: {0}")]
    Malformed(String),
    /// A parameter appears twice.
    #[error("duplicate Digest parameter `{0}`")]
    Duplicate(String),
    /// A required parameter is missing.
    #[error("missing Digest parameter `{0}`")]
    Missing(&'static str),
    /// The `algorithm` is not one this server supports.
    #[error("unsupported Digest algorithm `{0}`")]
    UnsupportedAlgorithm(String),
    /// The `qop` is neither `auth` nor `auth-int`.
    #[error("unsupported qop `{0}`")]
    UnsupportedQop(String),
    /// The `nc` is not 8 hex digits.
    #[error("bad nonce count `{0}`")]
    BadNonceCount(String),
}

/// `H(username:realm:password)` in lower-case hex (RFC 7616 §3.4.2): the only
/// form in which credentials are stored.
pub fn ha1(alg: DigestAlgorithm, user: &str, realm: &str, password: &str) -> String {
    hash_hex(alg, &[user.as_bytes(), realm.as_bytes(), password.as_bytes()])
}

/// Parses a `Digest ...` credentials header value. Tolerates any amount of
/// whitespace and folding around separators, empty list elements, quoted or
/// bare values and any order; parameter names are case-insensitive and
/// unknown parameters are ignored. Never panics.
pub fn parse_credentials(value: &str) -> Result<Credentials, DigestError> {
    let params = parse_params(value)?;
    let take = |name: &'static str| params.get(name).cloned();
    let need = |name: &'static str| take(name).ok_or(DigestError::Missing(name));

    let (algorithm, session) = match params.get("algorithm") {
        None => (DigestAlgorithm::Md5, false),
        Some(a) => parse_algorithm(a)?,
    };
    let qop = match params.get("qop") {
        None => None,
        Some(q) if q.eq_ignore_ascii_case("auth") => Some(Qop::Auth),
        Some(q) if q.eq_ignore_ascii_case("auth-int") => Some(Qop::AuthInt),
        Some(q) => return Err(DigestError::UnsupportedQop(q.clone())),
    };
    let nc = params.get("nc").map(|s| NonceCount::parse(s)).transpose()?;
    let cnonce = take("cnonce");
    // RFC 7616 §3.4: cnonce and nc MUST be sent with qop; -sess needs cnonce.
    if qop.is_some() && nc.is_none() {
        return Err(DigestError::Missing("nc"));
    }
    if (qop.is_some() || session) && cnonce.is_none() {
        return Err(DigestError::Missing("cnonce"));
    }
    Ok(Credentials {
        username: need("username")?,
        realm: need("realm")?,
        nonce: need("nonce")?,
        uri: need("uri")?,
        response: need("response")?,
        algorithm,
        session,
        cnonce,
        nc,
        qop,
        opaque: take("opaque"),
    })
}

/// The response digest a client with `ha1` computes for `creds` (RFC 7616
/// §3.4.1–§3.4.3; RFC 2069 form when `qop` is absent). `body` is hashed only
/// for `qop=auth-int`; `None` means an empty body.
pub fn compute_response(creds: &Credentials, method: &str, ha1: &str, body: Option<&[u8]>) -> String {
    let alg = creds.algorithm;
    let ha1 = ha1.to_ascii_lowercase();
    let cnonce = creds.cnonce.as_deref().unwrap_or_default();
    // §3.4.2: for -sess, A1 = H(user:realm:pass):nonce:cnonce.
    let a1 =
        if creds.session { hash_hex(alg, &[ha1.as_bytes(), creds.nonce.as_bytes(), cnonce.as_bytes()]) } else { ha1 };
    // §3.4.3: A2 = method:uri[:H(entity-body)].
    let ha2 = match creds.qop {
        Some(Qop::AuthInt) => {
            let body_hash = hash_hex(alg, &[body.unwrap_or_default()]);
            hash_hex(alg, &[method.as_bytes(), creds.uri.as_bytes(), body_hash.as_bytes()])
        }
        _ => hash_hex(alg, &[method.as_bytes(), creds.uri.as_bytes()]),
    };
    match (creds.qop, &creds.nc) {
        (Some(qop), Some(nc)) => hash_hex(
            alg,
            &[
                a1.as_bytes(),
                creds.nonce.as_bytes(),
                nc.as_str().as_bytes(),
                cnonce.as_bytes(),
                qop.as_str().as_bytes(),
                ha2.as_bytes(),
            ],
        ),
        _ => hash_hex(alg, &[a1.as_bytes(), creds.nonce.as_bytes(), ha2.as_bytes()]),
    }
}

/// Whether `creds.response` is correct for `method`, `stored_ha1` (the HA1
/// for `creds.algorithm`) and `body` (used only for `qop=auth-int`). The
/// digests are compared in constant time; hex case is ignored.
pub fn verify(creds: &Credentials, method: &str, stored_ha1: &str, body: Option<&[u8]>) -> bool {
    let expected = compute_response(creds, method, stored_ha1, body);
    match (hex::decode(&expected), hex::decode(&creds.response)) {
        (Ok(a), Ok(b)) => constant_time_eq(&a, &b),
        _ => false,
    }
}

/// One `WWW-Authenticate` / `Proxy-Authenticate` value (RFC 7616 §3.3),
/// always offering `qop="auth"`.
pub fn challenge(realm: &str, nonce: &str, algorithm: DigestAlgorithm, stale: bool, opaque: Option<&str>) -> String {
    let mut out = format!("Digest realm={}, nonce={}", quote(realm), quote(nonce));
    if let Some(o) = opaque {
        out.push_str(", opaque=");
        out.push_str(&quote(o));
    }
    out.push_str(", algorithm=");
    out.push_str(algorithm.as_str());
    out.push_str(", qop=\"auth\"");
    if stale {
        out.push_str(", stale=true");
    }
    out
}

/// Both challenges, SHA-256 first then MD5 (RFC 8760 §2.4: one header per
/// algorithm, most preferred first; MD5-only phones skip the SHA-256 one).
pub fn challenges(realm: &str, nonce: &str, stale: bool) -> Vec<String> {
    [DigestAlgorithm::Sha256, DigestAlgorithm::Md5]
        .into_iter()
        .map(|alg| challenge(realm, nonce, alg, stale, None))
        .collect()
}

/// What [`NonceKeeper::check`] thinks of a nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceState {
    /// Issued by this keeper and still fresh.
    Valid,
    /// Issued by this keeper but expired (or forgotten): re-challenge with
    /// `stale=true`.
    Stale,
    /// Not issued by this keeper (forged, tampered, or another secret).
    Invalid,
}

/// Issues and checks stateless nonces, and remembers the highest nonce count
/// seen per nonce.
///
/// Nonce: `base64url(ts_ms:u64be ‖ counter:u32be ‖ HMAC-SHA256(secret, ts ‖ counter))`.
/// The counter keeps nonces issued in the same millisecond distinct, so that
/// two clients never share an `nc` sequence.
///
/// Replay policy (RFC 7616 §3.3, §5.12):
/// - With `qop`, the `nc` of each accepted request must be strictly greater
///   than any `nc` accepted before for that nonce (the first one must be ≥ 1).
///   A repeated or decreasing `nc` fails. Counts are recorded only after the
///   response is verified, so forged requests cannot burn counts.
/// - Without `qop` (RFC 2069 style, which many SIP phones still send) there is
///   no count: the nonce may be reused until it expires.
/// - At most `capacity` nonces are tracked. Expired ones are dropped first;
///   if still full, the oldest-issued is forgotten and every nonce issued at
///   or before it becomes [`NonceState::Stale`], so a forgotten nonce can
///   never be replayed; its owner just gets a fresh challenge.
pub struct NonceKeeper {
    key: hmac::Key,
    lifetime: Duration,
    capacity: usize,
    counter: u32,
    /// (issue time ms, counter) → highest accepted nc, ordered oldest first.
    seen: BTreeMap<(u64, u32), u32>,
    /// Nonces at or below this (issue time, counter) are forgotten: stale.
    floor: Option<(u64, u32)>,
}

impl fmt::Debug for NonceKeeper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NonceKeeper")
            .field("lifetime", &self.lifetime)
            .field("capacity", &self.capacity)
            .field("tracked", &self.seen.len())
            .finish_non_exhaustive()
    }
}

const NONCE_HEAD: usize = 12;
const NONCE_LEN: usize = NONCE_HEAD + 32;

impl NonceKeeper {
    /// A keeper with [`DEFAULT_NONCE_LIFETIME`] and [`DEFAULT_NC_CAPACITY`].
    /// The secret must be random and kept across restarts for nonces to
    /// survive them.
    pub fn new(secret: [u8; 32]) -> Self {
        NonceKeeper {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            lifetime: DEFAULT_NONCE_LIFETIME,
            capacity: DEFAULT_NC_CAPACITY,
            counter: 0,
            seen: BTreeMap::new(),
            floor: None,
        }
    }

    /// Sets how long a nonce stays [`NonceState::Valid`].
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Sets how many nonces' counts are remembered (at least 1).
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// A fresh nonce stamped with `now_ms` (Unix milliseconds).
    pub fn issue(&mut self, now_ms: u64) -> String {
        self.counter = self.counter.wrapping_add(1);
        let mut raw = Vec::with_capacity(NONCE_LEN);
        raw.extend_from_slice(&now_ms.to_be_bytes());
        raw.extend_from_slice(&self.counter.to_be_bytes());
        let tag = hmac::sign(&self.key, &raw);
        raw.extend_from_slice(tag.as_ref());
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Classifies `nonce` at `now_ms`. A nonce stamped in the future beyond
    /// one lifetime (the clock stepped back) counts as stale.
    pub fn check(&self, nonce: &str, now_ms: u64) -> NonceState {
        let Some(id) = self.authentic(nonce) else { return NonceState::Invalid };
        if self.expired(id.0, now_ms) || self.floor.is_some_and(|f| id <= f) {
            NonceState::Stale
        } else {
            NonceState::Valid
        }
    }

    /// Records `nc` for a valid `nonce` if it is above every count accepted
    /// before; returns false (a replay) otherwise, or if `nonce` is not
    /// authentic.
    pub fn record_nc(&mut self, nonce: &str, nc: u32, now_ms: u64) -> bool {
        let Some(id) = self.authentic(nonce) else { return false };
        if let Some(highest) = self.seen.get_mut(&id) {
            if nc <= *highest {
                return false;
            }
            *highest = nc;
            return true;
        }
        if nc == 0 || self.floor.is_some_and(|f| id <= f) {
            return false;
        }
        self.make_room(now_ms);
        self.seen.insert(id, nc);
        true
    }

    /// Makes every nonce issued before `ts_ms` stale. Counts live in
    /// memory only, so the runtime calls this at start-up with the current
    /// time: otherwise a nonce issued before a restart could be replayed
    /// with an old `nc` until it expires.
    pub fn retire_before(&mut self, ts_ms: u64) {
        let mark = (ts_ms.saturating_sub(1), u32::MAX);
        self.floor = Some(self.floor.map_or(mark, |f| f.max(mark)));
        self.seen.retain(|id, _| *id > mark);
    }

    /// Number of nonces whose count is currently remembered.
    pub fn tracked(&self) -> usize {
        self.seen.len()
    }

    fn make_room(&mut self, now_ms: u64) {
        while let Some((&(ts, ctr), _)) = self.seen.first_key_value() {
            let expired = self.expired(ts, now_ms);
            if !expired && self.seen.len() < self.capacity {
                break;
            }
            self.seen.pop_first();
            if !expired {
                self.floor = Some(self.floor.map_or((ts, ctr), |f| f.max((ts, ctr))));
            }
        }
    }

    fn expired(&self, ts: u64, now_ms: u64) -> bool {
        let life = u64::try_from(self.lifetime.as_millis()).unwrap_or(u64::MAX);
        now_ms.saturating_sub(ts) > life || ts.saturating_sub(now_ms) > life
    }

    /// The (timestamp, counter) of an authentic nonce.
    fn authentic(&self, nonce: &str) -> Option<(u64, u32)> {
        // Reject oversized input before decoding it.
        if nonce.len() > 2 * NONCE_LEN {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(nonce).ok()?;
        if raw.len() != NONCE_LEN {
            return None;
        }
        let (head, tag) = raw.split_at(NONCE_HEAD);
        hmac::verify(&self.key, head, tag).ok()?;
        let (ts, ctr) = head.split_at(8);
        Some((u64::from_be_bytes(ts.try_into().ok()?), u32::from_be_bytes(ctr.try_into().ok()?)))
    }
}

/// Outcome of [`authenticate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthResult {
    /// Credentials are correct and fresh.
    Ok {
        /// The authenticated username.
        username: String,
    },
    /// Correct credentials for an expired nonce: re-challenge with `stale=true`.
    Stale,
    /// Rejected; re-challenge (401/407) or refuse (403).
    Fail(FailReason),
    /// No HA1 for this username and algorithm. Answer as for `Fail`, or the
    /// difference tells attackers which usernames exist.
    UnknownUser,
}

/// Why [`authenticate`] rejected a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailReason {
    /// The header did not parse.
    #[error(transparent)]
    Malformed(#[from] DigestError),
    /// The `realm` is not ours.
    #[error("realm does not match")]
    RealmMismatch,
    /// `qop=auth-int` was never offered (our challenges say `qop="auth"`).
    #[error("qop not offered")]
    QopNotOffered,
    /// The nonce was not issued by us.
    #[error("nonce not issued by this server")]
    InvalidNonce,
    /// The response digest is wrong (wrong password, method or uri).
    #[error("wrong digest response")]
    WrongResponse,
    /// The nonce count was repeated or went backwards.
    #[error("nonce count replayed")]
    Replay,
}

/// Checks one `Authorization`/`Proxy-Authorization` header value for a
/// request with `method` against `realm` at `now_ms`: syntax, realm, qop,
/// nonce authenticity, the user's HA1 from `lookup(username, algorithm)`,
/// the response, then staleness and nonce-count replay (see [`NonceKeeper`]).
pub fn authenticate(
    keeper: &mut NonceKeeper,
    header_value: &str,
    method: &str,
    realm: &str,
    now_ms: u64,
    lookup: impl Fn(&str, DigestAlgorithm) -> Option<String>,
) -> AuthResult {
    let creds = match parse_credentials(header_value) {
        Ok(c) => c,
        Err(e) => return AuthResult::Fail(FailReason::Malformed(e)),
    };
    if creds.realm != realm {
        return AuthResult::Fail(FailReason::RealmMismatch);
    }
    if creds.qop == Some(Qop::AuthInt) {
        return AuthResult::Fail(FailReason::QopNotOffered);
    }
    let state = keeper.check(&creds.nonce, now_ms);
    if state == NonceState::Invalid {
        return AuthResult::Fail(FailReason::InvalidNonce);
    }
    let Some(stored) = lookup(&creds.username, creds.algorithm) else { return AuthResult::UnknownUser };
    if !verify(&creds, method, &stored, None) {
        return AuthResult::Fail(FailReason::WrongResponse);
    }
    // RFC 7616 §3.3: stale only when the digest itself was valid.
    if state == NonceState::Stale {
        return AuthResult::Stale;
    }
    if let Some(nc) = &creds.nc
        && !keeper.record_nc(&creds.nonce, nc.value(), now_ms)
    {
        return AuthResult::Fail(FailReason::Replay);
    }
    AuthResult::Ok { username: creds.username }
}

// ---------------------------------------------------------------------------

fn hash_hex(alg: DigestAlgorithm, parts: &[&[u8]]) -> String {
    fn run<D: md5::Digest>(parts: &[&[u8]]) -> String {
        let mut h = D::new();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                h.update(b":");
            }
            h.update(p);
        }
        hex::encode(h.finalize())
    }
    match alg {
        DigestAlgorithm::Md5 => run::<Md5>(parts),
        DigestAlgorithm::Sha256 => run::<Sha256>(parts),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

pub(super) fn parse_algorithm(a: &str) -> Result<(DigestAlgorithm, bool), DigestError> {
    let lower = a.to_ascii_lowercase();
    let (base, session) = match lower.strip_suffix("-sess") {
        Some(b) => (b, true),
        None => (lower.as_str(), false),
    };
    match base {
        "md5" => Ok((DigestAlgorithm::Md5, session)),
        "sha-256" => Ok((DigestAlgorithm::Sha256, session)),
        _ => Err(DigestError::UnsupportedAlgorithm(a.to_owned())),
    }
}

/// A quoted-string with `"` and `\` escaped (RFC 3261 §25.1).
pub(super) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// RFC 3261 §25.1 `token` characters.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Whitespace, including the CR LF of a folded line.
fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Splits `Digest name=value, ...` into lower-cased names and unquoted values
/// (credentials here, challenges in the user agent's client side).
pub(super) fn parse_params(value: &str) -> Result<BTreeMap<String, String>, DigestError> {
    let mut cur = Cursor { bytes: value.as_bytes(), pos: 0 };
    cur.skip(is_lws);
    let scheme = cur.take_while(is_token);
    if !scheme.eq_ignore_ascii_case(b"digest") {
        return Err(DigestError::NotDigest);
    }
    if cur.peek().is_some_and(|b| !is_lws(b)) {
        return Err(DigestError::NotDigest);
    }
    let mut params = BTreeMap::new();
    loop {
        cur.skip(|b| is_lws(b) || b == b',');
        if cur.peek().is_none() {
            return Ok(params);
        }
        let name = cur.take_while(is_token).to_ascii_lowercase();
        if name.is_empty() {
            return Err(cur.error("expected a parameter name"));
        }
        cur.skip(is_lws);
        if cur.peek() != Some(b'=') {
            return Err(cur.error("expected `=`"));
        }
        cur.pos += 1;
        cur.skip(is_lws);
        let val = if cur.peek() == Some(b'"') { cur.quoted()? } else { cur.bare()? };
        let name = String::from_utf8(name).map_err(|_| cur.error("non-ASCII parameter name"))?;
        if params.contains_key(&name) {
            return Err(DigestError::Duplicate(name));
        }
        params.insert(name, val);
        cur.skip(is_lws);
        match cur.peek() {
            None | Some(b',') => {}
            Some(_) => return Err(cur.error("expected `,` between parameters")),
        }
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip(&mut self, f: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> Vec<u8> {
        let start = self.pos;
        self.skip(f);
        self.bytes.get(start..self.pos).unwrap_or_default().to_vec()
    }

    fn error(&self, what: &str) -> DigestError {
        DigestError::Malformed(format!("{what} at byte {}", self.pos))
    }

    /// A quoted-string with quoted-pairs; the cursor is on the opening quote.
    fn quoted(&mut self) -> Result<String, DigestError> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated quoted-string")),
                Some(b'"') => break,
                Some(b'\\') => {
                    self.pos += 1;
                    let Some(b) = self.peek() else { return Err(self.error("unterminated quoted-pair")) };
                    out.push(b);
                }
                Some(b) => out.push(b),
            }
            self.pos += 1;
        }
        self.pos += 1;
        String::from_utf8(out).map_err(|_| self.error("invalid UTF-8 in quoted-string"))
    }

    /// An unquoted value: everything up to whitespace or a comma.
    fn bare(&mut self) -> Result<String, DigestError> {
        let raw = self.take_while(|b| !is_lws(b) && b != b',' && b != b'"');
        if raw.is_empty() {
            return Err(self.error("expected a value"));
        }
        String::from_utf8(raw).map_err(|_| self.error("invalid UTF-8 in value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const REALM: &str = "chordphone.test";
    const T0: u64 = 1_700_000_000_000;

    fn keeper() -> NonceKeeper {
        NonceKeeper::new([7u8; 32])
    }

    fn users(user: &str, alg: DigestAlgorithm) -> Option<String> {
        (user == "alice").then(|| ha1(alg, "alice", REALM, "s3cr3t"))
    }

    /// What a phone sends: compute the response for `password` and format it.
    fn client_header(nonce: &str, alg: DigestAlgorithm, password: &str, nc: Option<u32>) -> String {
        let mut creds = Credentials {
            username: "alice".into(),
            realm: REALM.into(),
            nonce: nonce.into(),
            uri: "sip:chordphone.test".into(),
            response: String::new(),
            algorithm: alg,
            session: false,
            cnonce: nc.map(|_| "0a4f113b".into()),
            nc: nc.map(|n| NonceCount::parse(&format!("{n:08x}")).unwrap()),
            qop: nc.map(|_| Qop::Auth),
            opaque: None,
        };
        creds.response = compute_response(&creds, "REGISTER", &ha1(alg, "alice", REALM, password), None);
        let mut h = format!(
            "Digest username=\"alice\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"sip:chordphone.test\", \
             response=\"{}\", algorithm={}",
            creds.response, alg
        );
        if let Some(nc) = &creds.nc {
            h.push_str(&format!(", cnonce=\"0a4f113b\", nc={}, qop=auth", nc.as_str()));
        }
        h
    }

    #[test]
    fn rfc2617_md5_qop_auth_example() {
        let h = r#"Digest username="Mufasa",
                 realm="testrealm@host.com",
                 nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                 uri="/dir/index.html",
                 qop=auth,
                 nc=00000001,
                 cnonce="0a4f113b",
                 response="6629fae49393a05397450978507c4ef1",
                 opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
        let c = parse_credentials(h).unwrap();
        assert_eq!(c.algorithm, DigestAlgorithm::Md5);
        assert_eq!(c.qop, Some(Qop::Auth));
        assert_eq!(c.nc.as_ref().map(NonceCount::value), Some(1));
        let stored = ha1(DigestAlgorithm::Md5, "Mufasa", "testrealm@host.com", "Circle Of Life");
        assert_eq!(compute_response(&c, "GET", &stored, None), "6629fae49393a05397450978507c4ef1");
        assert!(verify(&c, "GET", &stored, None));
        assert!(!verify(&c, "POST", &stored, None));
    }

    fn rfc7616_creds(alg: &str, response: &str) -> Credentials {
        parse_credentials(&format!(
            r#"Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html",
               algorithm={alg}, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001,
               cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, response="{response}",
               opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#
        ))
        .unwrap()
    }

    #[test]
    fn rfc7616_sha256_and_md5_examples() {
        let sha = "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1";
        let c = rfc7616_creds("SHA-256", sha);
        assert_eq!(c.algorithm, DigestAlgorithm::Sha256);
        let stored = ha1(DigestAlgorithm::Sha256, "Mufasa", "http-auth@example.org", "Circle of Life");
        assert_eq!(compute_response(&c, "GET", &stored, None), sha);
        assert!(verify(&c, "GET", &stored, None));
        assert!(verify(&c, "GET", &stored.to_ascii_uppercase(), None));

        let md5 = "8ca523f5e9506fed4657c9700eebdbec";
        let c = rfc7616_creds("MD5", md5);
        let stored = ha1(DigestAlgorithm::Md5, "Mufasa", "http-auth@example.org", "Circle of Life");
        assert!(verify(&c, "GET", &stored, None));
        // A SHA-256 HA1 against MD5 credentials must not verify.
        let wrong = ha1(DigestAlgorithm::Sha256, "Mufasa", "http-auth@example.org", "Circle of Life");
        assert!(!verify(&c, "GET", &wrong, None));
    }

    #[test]
    fn sip_register_without_qop() {
        // Expected values computed independently with coreutils md5sum.
        let stored = ha1(DigestAlgorithm::Md5, "alice", REALM, "s3cr3t");
        assert_eq!(stored, "d3111bd2cb61be33e53c14007ae67d34");
        let h = "Digest username=\"alice\",realm=\"chordphone.test\",nonce=\"4a0f1b2c3d4e5f60\",\
                 uri=\"sip:chordphone.test\",response=\"56fcae1256a487fed9e14cc4d14ab384\",algorithm=MD5";
        let c = parse_credentials(h).unwrap();
        assert_eq!(c.qop, None);
        assert!(verify(&c, "REGISTER", &stored, None));
        let upper = Credentials { response: c.response.to_ascii_uppercase(), ..c.clone() };
        assert!(verify(&upper, "REGISTER", &stored, None));
        let wrong = ha1(DigestAlgorithm::Md5, "alice", REALM, "s3cr3T");
        assert!(!verify(&c, "REGISTER", &wrong, None));
    }

    #[test]
    fn md5_sess_and_sha256_auth_int() {
        let stored = ha1(DigestAlgorithm::Md5, "alice", REALM, "s3cr3t");
        let c = parse_credentials(
            "Digest username=alice, realm=chordphone.test, nonce=abc, uri=\"sip:chordphone.test\", \
             algorithm=MD5-sess, qop=auth, nc=00000002, cnonce=xyz, response=628b92ee26baf66f507ea4a1310d1b52",
        )
        .unwrap();
        assert!(c.session);
        assert!(verify(&c, "REGISTER", &stored, None));

        let stored = ha1(DigestAlgorithm::Sha256, "alice", REALM, "s3cr3t");
        let c = parse_credentials(
            "Digest username=alice, realm=chordphone.test, nonce=n1, uri=\"sip:bob@chordphone.test\", \
             algorithm=SHA-256, qop=auth-int, nc=0000000a, cnonce=c1, \
             response=bfe85fee1b3318699f5f1ed6d7f0530dbd213f4c1a343d1a8ccfef9fa2a78c92",
        )
        .unwrap();
        assert!(verify(&c, "INVITE", &stored, Some(b"v=0\r\n")));
        assert!(!verify(&c, "INVITE", &stored, Some(b"v=1\r\n")));
    }

    #[test]
    fn parses_linphone_and_baresip_headers() {
        // belle-sip (Linphone) style: algorithm and opaque early, bare qop/nc.
        let linphone = "Digest realm=\"sip.linphone.org\", nonce=\"4iv9ZQAAAAC1zJ7mAACf9SrjYioAAAAA\", \
            algorithm=SHA-256, opaque=\"+GNywA==\", username=\"bob\",  uri=\"sip:sip.linphone.org\", \
            response=\"0d1ae3e5c4a94ab6b0f8b6b3bb1f0f6e8d9c6b8cf7b2a5b0b6f4c2c1e7d8a9f0\", \
            cnonce=\"2c1f9a0e6b7d4a31\", nc=00000001, qop=auth";
        let c = parse_credentials(linphone).unwrap();
        assert_eq!(c.username, "bob");
        assert_eq!(c.realm, "sip.linphone.org");
        assert_eq!(c.algorithm, DigestAlgorithm::Sha256);
        assert_eq!(c.opaque.as_deref(), Some("+GNywA=="));
        assert_eq!(c.cnonce.as_deref(), Some("2c1f9a0e6b7d4a31"));

        // libre (baresip) style: no spaces after commas, MD5, qop=auth.
        let baresip = "Digest username=\"1001\",realm=\"asterisk\",nonce=\"1700000000/8f3c\",\
            uri=\"sip:192.0.2.10;transport=udp\",response=\"b5c7b3a4e0d1c2f3a4b5c6d7e8f90a1b\",\
            cnonce=\"7a0f2e1b\",qop=auth,nc=00000003,algorithm=MD5";
        let c = parse_credentials(baresip).unwrap();
        assert_eq!(c.uri, "sip:192.0.2.10;transport=udp");
        assert_eq!(c.nc.as_ref().map(NonceCount::value), Some(3));
        assert_eq!(c.algorithm, DigestAlgorithm::Md5);

        // Folded header, lower-case scheme, quoted qop, escapes.
        let folded = "digest username=\"a\\\"b\\\\c\",\r\n\trealm=\"r\" ,nonce=\"n\"\r\n , uri=\"u\",,\
                      response=\"00\", qop=\"auth\", nc=0000000A, cnonce=\"c\"";
        let c = parse_credentials(folded).unwrap();
        assert_eq!(c.username, "a\"b\\c");
        assert_eq!(c.nc.as_ref().map(NonceCount::value), Some(10));
    }

    #[test]
    fn parse_errors_are_specific() {
        let base = "username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"00\"";
        assert!(parse_credentials(&format!("Digest {base}")).is_ok());
        assert_eq!(parse_credentials(&format!("Basic {base}")), Err(DigestError::NotDigest));
        assert_eq!(parse_credentials(""), Err(DigestError::NotDigest));
        assert_eq!(parse_credentials("Digest"), Err(DigestError::Missing("username")));
        assert_eq!(
            parse_credentials("Digest username=a, realm=r, nonce=n, response=0"),
            Err(DigestError::Missing("uri"))
        );
        assert_eq!(
            parse_credentials(&format!("Digest {base}, Realm=\"x\"")),
            Err(DigestError::Duplicate("realm".into()))
        );
        assert_eq!(parse_credentials(&format!("Digest {base}, qop=auth")), Err(DigestError::Missing("nc")));
        assert_eq!(
            parse_credentials(&format!("Digest {base}, qop=auth, nc=00000001")),
            Err(DigestError::Missing("cnonce"))
        );
        assert_eq!(
            parse_credentials(&format!("Digest {base}, algorithm=SHA-512-256")),
            Err(DigestError::UnsupportedAlgorithm("SHA-512-256".into()))
        );
        assert_eq!(
            parse_credentials(&format!("Digest {base}, qop=auth-conf, nc=00000001, cnonce=c")),
            Err(DigestError::UnsupportedQop("auth-conf".into()))
        );
        assert_eq!(
            parse_credentials(&format!("Digest {base}, qop=auth, nc=1, cnonce=c")),
            Err(DigestError::BadNonceCount("1".into()))
        );
        assert!(matches!(parse_credentials("Digest username=\"a"), Err(DigestError::Malformed(_))));
        assert!(matches!(parse_credentials("Digest username=\"a\" realm=b"), Err(DigestError::Malformed(_))));
        assert!(matches!(parse_credentials("Digest =a"), Err(DigestError::Malformed(_))));
        assert!(matches!(parse_credentials("Digest username="), Err(DigestError::Malformed(_))));
        assert_eq!(parse_credentials("Digestusername=a"), Err(DigestError::NotDigest));
    }

    #[test]
    fn challenge_format_and_order() {
        assert_eq!(
            challenge(REALM, "abc", DigestAlgorithm::Sha256, false, None),
            "Digest realm=\"chordphone.test\", nonce=\"abc\", algorithm=SHA-256, qop=\"auth\""
        );
        assert_eq!(
            challenge("a\"b", "n", DigestAlgorithm::Md5, true, Some("o")),
            "Digest realm=\"a\\\"b\", nonce=\"n\", opaque=\"o\", algorithm=MD5, qop=\"auth\", stale=true"
        );
        let both = challenges(REALM, "n", true);
        assert_eq!(both.len(), 2);
        assert!(both[0].contains("algorithm=SHA-256") && both[0].ends_with("stale=true"));
        assert!(both[1].contains("algorithm=MD5"));
    }

    #[test]
    fn nonce_lifecycle() {
        let mut k = keeper().with_lifetime(Duration::from_secs(60));
        let n1 = k.issue(T0);
        let n2 = k.issue(T0);
        assert_ne!(n1, n2, "same-millisecond nonces must differ");
        assert_eq!(k.check(&n1, T0), NonceState::Valid);
        assert_eq!(k.check(&n1, T0 + 60_000), NonceState::Valid);
        assert_eq!(k.check(&n1, T0 + 60_001), NonceState::Stale);
        assert_eq!(k.check(&n1, T0 - 61_000), NonceState::Stale);
        // Another secret, a flipped character, truncation, garbage.
        assert_eq!(NonceKeeper::new([8u8; 32]).check(&n1, T0), NonceState::Invalid);
        let mut tampered = n1.clone().into_bytes();
        tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
        assert_eq!(k.check(&String::from_utf8(tampered).unwrap(), T0), NonceState::Invalid);
        assert_eq!(k.check(&n1[..n1.len() - 2], T0), NonceState::Invalid);
        assert_eq!(k.check("dcd98b7102dd2f0e8b11d0f600bfb0c093", T0), NonceState::Invalid);
    }

    #[test]
    fn nonce_count_policy_and_eviction() {
        let mut k = keeper().with_capacity(2).with_lifetime(Duration::from_secs(60));
        let a = k.issue(T0);
        let b = k.issue(T0 + 1);
        let c = k.issue(T0 + 2);
        assert!(!k.record_nc(&a, 0, T0), "nc starts at 1");
        assert!(k.record_nc(&a, 1, T0));
        assert!(!k.record_nc(&a, 1, T0), "repeat");
        assert!(k.record_nc(&a, 3, T0));
        assert!(!k.record_nc(&a, 2, T0), "decrease");
        assert!(k.record_nc(&b, 1, T0));
        assert!(k.record_nc(&c, 1, T0), "full: evicts the oldest, a");
        assert_eq!(k.tracked(), 2);
        assert_eq!(k.check(&a, T0), NonceState::Stale, "forgotten nonces become stale");
        assert!(!k.record_nc(&a, 4, T0), "and cannot be replayed");
        assert_eq!(k.check(&b, T0), NonceState::Valid);
        assert!(!k.record_nc("bogus", 5, T0));
        // Expired entries are pruned before anything fresh is evicted.
        let d = k.issue(T0 + 120_000);
        assert!(k.record_nc(&d, 1, T0 + 120_000));
        assert_eq!(k.tracked(), 1);
        // After a restart, nonces issued before it are retired (this one was
        // issued by the previous process with the same secret).
        let old = k.issue(T0 + 119_999);
        let mut fresh = keeper().with_lifetime(Duration::from_secs(60));
        fresh.retire_before(T0 + 120_000);
        assert_eq!(fresh.check(&old, T0 + 120_001), NonceState::Stale);
        assert!(!fresh.record_nc(&old, 2, T0 + 120_001));
        let e = fresh.issue(T0 + 120_000);
        assert_eq!(fresh.check(&e, T0 + 120_001), NonceState::Valid);
    }

    #[test]
    fn authenticate_outcomes() {
        let mut k = keeper();
        let n = k.issue(T0);
        for alg in [DigestAlgorithm::Sha256, DigestAlgorithm::Md5] {
            let n = k.issue(T0);
            let ok = authenticate(&mut k, &client_header(&n, alg, "s3cr3t", Some(1)), "REGISTER", REALM, T0, users);
            assert_eq!(ok, AuthResult::Ok { username: "alice".into() });
        }
        // Without qop the nonce may be reused until it expires.
        let h = client_header(&n, DigestAlgorithm::Md5, "s3cr3t", None);
        for _ in 0..2 {
            assert!(matches!(authenticate(&mut k, &h, "REGISTER", REALM, T0, users), AuthResult::Ok { .. }));
        }
        assert_eq!(
            authenticate(&mut k, &h, "INVITE", REALM, T0, users),
            AuthResult::Fail(FailReason::WrongResponse),
            "method is covered"
        );
        // Replay with qop.
        let h = client_header(&n, DigestAlgorithm::Md5, "s3cr3t", Some(7));
        assert!(matches!(authenticate(&mut k, &h, "REGISTER", REALM, T0, users), AuthResult::Ok { .. }));
        assert_eq!(authenticate(&mut k, &h, "REGISTER", REALM, T0, users), AuthResult::Fail(FailReason::Replay));
        let h6 = client_header(&n, DigestAlgorithm::Md5, "s3cr3t", Some(6));
        assert_eq!(authenticate(&mut k, &h6, "REGISTER", REALM, T0, users), AuthResult::Fail(FailReason::Replay));
        // Wrong password does not burn a count.
        let bad = client_header(&n, DigestAlgorithm::Md5, "guess", Some(8));
        assert_eq!(
            authenticate(&mut k, &bad, "REGISTER", REALM, T0, users),
            AuthResult::Fail(FailReason::WrongResponse)
        );
        let good = client_header(&n, DigestAlgorithm::Md5, "s3cr3t", Some(8));
        assert!(matches!(authenticate(&mut k, &good, "REGISTER", REALM, T0, users), AuthResult::Ok { .. }));
        // Stale: right password, old nonce. Wrong password on old nonce: fail.
        let later = T0 + 301_000;
        let h = client_header(&n, DigestAlgorithm::Sha256, "s3cr3t", Some(9));
        assert_eq!(authenticate(&mut k, &h, "REGISTER", REALM, later, users), AuthResult::Stale);
        let h = client_header(&n, DigestAlgorithm::Sha256, "guess", Some(10));
        assert_eq!(
            authenticate(&mut k, &h, "REGISTER", REALM, later, users),
            AuthResult::Fail(FailReason::WrongResponse)
        );
        // Tampered nonce, unknown user, wrong realm, garbage, auth-int.
        let forged = client_header(
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            DigestAlgorithm::Md5,
            "s3cr3t",
            Some(1),
        );
        assert_eq!(
            authenticate(&mut k, &forged, "REGISTER", REALM, T0, users),
            AuthResult::Fail(FailReason::InvalidNonce)
        );
        let eve = client_header(&n, DigestAlgorithm::Md5, "x", None).replace("\"alice\"", "\"eve\"");
        assert_eq!(authenticate(&mut k, &eve, "REGISTER", REALM, T0, users), AuthResult::UnknownUser);
        let h = client_header(&n, DigestAlgorithm::Md5, "s3cr3t", None);
        assert_eq!(
            authenticate(&mut k, &h, "REGISTER", "other.test", T0, users),
            AuthResult::Fail(FailReason::RealmMismatch)
        );
        assert!(matches!(
            authenticate(&mut k, "Basic YWxhZGRpbjpvcGVuc2VzYW1l", "REGISTER", REALM, T0, users),
            AuthResult::Fail(FailReason::Malformed(DigestError::NotDigest))
        ));
        let int = client_header(&n, DigestAlgorithm::Md5, "s3cr3t", Some(20)).replace("qop=auth", "qop=auth-int");
        assert_eq!(
            authenticate(&mut k, &int, "REGISTER", REALM, T0, users),
            AuthResult::Fail(FailReason::QopNotOffered)
        );
    }

    proptest! {
        #[test]
        fn garbage_never_panics(s in any::<String>()) {
            let _ = parse_credentials(&s);
            let k = keeper();
            let _ = k.check(&s, T0);
        }

        #[test]
        fn digestish_garbage_never_panics(
            s in "[Dd]igest[ \t\r\n]{0,2}([a-z]{0,8}[ ]?=?[ ]?(\"([^\"\\\\]|\\\\.){0,6}\"?|[A-Za-z0-9/+=-]{0,10})[ ,]{0,3}){0,12}\\\\?"
        ) {
            let _ = parse_credentials(&s);
            let mut k = keeper();
            let _ = authenticate(&mut k, &s, "REGISTER", REALM, T0, users);
        }

        #[test]
        fn quoted_values_round_trip(v in "[ -~]{0,40}") {
            let h = format!("Digest username={}, realm=r, nonce=n, uri=u, response=00", quote(&v));
            prop_assert_eq!(parse_credentials(&h).map(|c| c.username), Ok(v));
        }
    }
}
