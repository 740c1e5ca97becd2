//! Certificate enrollment (RFC 6940 §11.3): the HTTPS enrollment server an
//! overlay operator runs next to its CA, the client a joining node uses,
//! and the local shortcut for a process that holds the CA itself.
//!
//! The exchange (§11.3):
//! 1. The node makes a key pair and a PKCS#10 request (RFC 2986) for it.
//! 2. It POSTs `multipart/form-data` with the fields `username`,
//!    `password`, `nodeids` (how many Node-IDs it wants; optional, one if
//!    absent) and `csr` (Content-Type `application/pkcs10`, the DER
//!    request), sending `Accept: application/pkix-cert`.
//! 3. The server authenticates the user, **picks the Node-IDs at random**
//!    (nothing in the request influences them) and answers 200 with
//!    `application/pkix-cert` (RFC 2585): the DER certificate alone. The
//!    root is not sent; the node already has it from the configuration
//!    document's `root-cert`.
//! 4. The node checks that the certificate chains to that root, including
//!    BasicConstraints ([`verify_chain`]), and that it certifies its key.
//!
//! Refusals are `text/plain`, the first line one of the §11.3 tokens
//! (`failed_authentication`, `Node-IDs_not_available`, `bad_CSR`) or a
//! generic one, the second line a detail: 403 for wrong credentials and
//! refused Node-ID counts (401 would need an HTTP authentication
//! challenge, which this form-based exchange does not have), 400 for a
//! malformed form or CSR, 405 for methods other than POST, 413 above
//! [`MAX_BODY`], 415 for other content types.
//!
//! Leniency (server side): the form may also be
//! `application/x-www-form-urlencoded`, and the `csr` value may be DER,
//! PEM or bare base64.
//!
//! Trust: the client trusts **only the overlay's root certificate** for
//! the server's TLS certificate (no system store) and checks the URL's host
//! name or IP address against the certificate's SubjectAltName, as HTTPS
//! does (RFC 9110 §4.3.4). The host check matters because every enrolled
//! node also holds a certificate from the same root; node certificates
//! carry no DNS or IP names, so they cannot pose as the server.
//! [`server_tls_identity`] issues the server's certificate from the CA.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_PAD_INDIFFERENT, URL_SAFE_PAD_INDIFFERENT};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{ACCEPT, ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioIo, TokioTimer};
use openssl::pkey::PKey;
use openssl::ssl::{Ssl, SslAcceptor, SslConnector, SslMethod, SslVersion};
use openssl::x509::X509;
use openssl::x509::store::X509StoreBuilder;
use rand::{Rng, RngExt};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyUsagePurpose, SanType,
    SerialNumber,
};
use ring::pbkdf2;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_openssl::SslStream;
use tracing::{Instrument, debug, error, info, info_span, warn};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use crate::security::{KeyAlgorithm, KeyPair, OverlayCa, SecurityError, verify_chain};
use crate::wire::{NODE_ID_LEN, NodeId};

/// Most Node-IDs one certificate may carry.
pub const MAX_NODE_IDS: u32 = 16;
/// Largest request (and response) body accepted, in bytes.
pub const MAX_BODY: usize = 64 * 1024;
/// Validity of a certificate from [`enroll_local`]: one year.
pub const DEFAULT_VALIDITY_S: u64 = 365 * 24 * 3600;
/// Issued certificates start this long before the issuing time, so a
/// client whose clock is a little behind the server's accepts them.
pub const CLOCK_SKEW_S: u64 = 300;
/// The users file's name inside an overlay directory.
pub const USERS_FILE: &str = "enroll-users";
/// The media type of the certificate in a successful answer (RFC 2585).
pub const PKIX_CERT: &str = "application/pkix-cert";
/// The media type of the `csr` form field (RFC 5967).
pub const PKCS10: &str = "application/pkcs10";

/// PBKDF2-HMAC-SHA256 rounds for new password hashes.
const PBKDF2_ROUNDS: u32 = 100_000;
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;
/// Concurrent connections the server handles; further ones wait in the
/// listen backlog until one finishes.
const MAX_CONNECTIONS: usize = 64;
/// Whole-connection deadline (TLS handshake, request, answer).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`serve`] lets open connections finish after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Deadline of one [`enroll_remote`] exchange, key generation excluded.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Most fields a form may have.
const MAX_FORM_FIELDS: usize = 16;

/// What a node keeps after enrolling: its key, its certificate, the root
/// that certificate chains to, and what the certificate says.
#[derive(Clone, PartialEq, Eq)]
pub struct Enrollment {
    /// The node's private key, PKCS#8 DER.
    pub key_pkcs8: Vec<u8>,
    /// The certificate the CA issued, DER.
    pub cert_der: Vec<u8>,
    /// The overlay's root certificate, DER.
    pub ca_der: Vec<u8>,
    /// The Node-IDs the CA chose, in certificate order.
    pub node_ids: Vec<NodeId>,
    /// The rfc822Name user name, if the certificate has one.
    pub user: Option<String>,
}

impl fmt::Debug for Enrollment {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Enrollment")
            .field("node_ids", &self.node_ids)
            .field("user", &self.user)
            .field("cert_der_len", &self.cert_der.len())
            .finish_non_exhaustive()
    }
}

/// Why enrollment failed, on either side.
#[derive(Debug, Error)]
pub enum EnrollError {
    /// A received PKCS#10 request is unusable (§11.3 `bad_CSR`).
    #[error("bad CSR: {0}")]
    BadCsr(String),
    /// A PKCS#10 request could not be made.
    #[error("cannot build CSR: {0}")]
    CsrBuild(String),
    /// Outside 1..=[`MAX_NODE_IDS`] (§11.3 `Node-IDs_not_available`).
    #[error("cannot issue {0} Node-IDs: 1 to {MAX_NODE_IDS} per certificate")]
    NodeIdCount(u32),
    /// Key generation, issuing or checking a certificate failed.
    #[error(transparent)]
    Security(#[from] SecurityError),
    /// A user name that cannot be an rfc822Name.
    #[error("bad user name {name:?}: {reason}")]
    BadUserName { name: String, reason: &'static str },
    /// Accounts need a password.
    #[error("empty password")]
    EmptyPassword,
    /// The users file is malformed.
    #[error("users file {path}: {reason}")]
    UsersFile { path: PathBuf, reason: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("bad enrollment URL {url:?}: {reason}")]
    Url { url: String, reason: &'static str },
    /// The server answered with an error status; `reason` is its text.
    #[error("enrollment server refused ({status}): {reason}")]
    Rejected { status: u16, reason: String },
    /// The server answered 200 with something that is not our certificate.
    #[error("bad enrollment answer: {0}")]
    BadResponse(String),
    #[error("enrollment timed out after {0:?}")]
    Timeout(Duration),
}

/// A PKCS#10 request (RFC 2986) for `key`, signed by it. The subject DN
/// is empty; `user`, if given, goes in as an rfc822Name SubjectAltName. The
/// server ignores both (it certifies the name it authenticated) but they
/// make the request self-describing.
pub fn csr_der(key: &KeyPair, user: Option<&str>) -> Result<Vec<u8>, EnrollError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if let Some(u) = user {
        validate_user_name(u)?;
        let name = u.try_into().map_err(|e: rcgen::Error| EnrollError::CsrBuild(e.to_string()))?;
        params.subject_alt_names = vec![SanType::Rfc822Name(name)];
    }
    let csr = params.serialize_request(key.rcgen()).map_err(|e| EnrollError::CsrBuild(e.to_string()))?;
    Ok(csr.der().to_vec())
}

/// The SubjectPublicKeyInfo (DER) of a PKCS#10 request, after checking
/// that the request is well-formed, signed by that key and for a key type
/// RELOAD nodes use (RSA, ECDSA P-256, Ed25519).
pub fn csr_public_key(csr_der: &[u8]) -> Result<Vec<u8>, EnrollError> {
    let (rest, csr) = X509CertificationRequest::from_der(csr_der)
        .map_err(|e| EnrollError::BadCsr(format!("not a DER PKCS#10 request ({e})")))?;
    if !rest.is_empty() {
        return Err(EnrollError::BadCsr(format!("{} bytes after the request", rest.len())));
    }
    csr.verify_signature().map_err(|e| EnrollError::BadCsr(format!("self-signature does not verify ({e})")))?;
    let spki = csr.certification_request_info.subject_pki.raw.to_vec();
    KeyAlgorithm::of_spki(&spki)
        .map_err(|_| EnrollError::BadCsr("unsupported key type (RSA, ECDSA P-256 or Ed25519 only)".into()))?;
    Ok(spki)
}

/// The CA side of §11.3: checks `csr_der`, picks `node_id_count` random
/// Node-IDs with `rng` and issues a certificate binding them and `user` to
/// the request's key, valid from `now_unix_s - CLOCK_SKEW_S` to
/// `now_unix_s + validity_s`. The caller has authenticated `user`.
pub fn issue_from_csr(
    ca: &OverlayCa,
    csr_der: &[u8],
    user: Option<&str>,
    node_id_count: u32,
    now_unix_s: u64,
    validity_s: u64,
    rng: &mut impl Rng,
) -> Result<(Vec<u8>, Vec<NodeId>), EnrollError> {
    check_node_id_count(node_id_count)?;
    if let Some(u) = user {
        validate_user_name(u)?;
    }
    let spki = csr_public_key(csr_der)?;
    let node_ids = random_node_ids(node_id_count, rng);
    let not_before = now_unix_s.saturating_sub(CLOCK_SKEW_S);
    let not_after = now_unix_s.saturating_add(validity_s);
    let cert = ca.issue(&spki, user, &node_ids, not_before, not_after)?;
    Ok((cert, node_ids))
}

/// Enrollment without the network, for a process holding the CA (the
/// first node of a new overlay, tests, `overlay enroll` run by the
/// operator): a fresh `key_alg` key and one random Node-ID, valid for
/// [`DEFAULT_VALIDITY_S`]. EcdsaP256Sha256 is the usual node key: small,
/// fast, and accepted by OpenSSL for TLS and DTLS.
pub fn enroll_local(
    ca: &OverlayCa,
    user: Option<&str>,
    key_alg: KeyAlgorithm,
    now_unix_s: u64,
) -> Result<Enrollment, EnrollError> {
    if let Some(u) = user {
        validate_user_name(u)?;
    }
    let key = KeyPair::generate(key_alg)?;
    let node_ids = random_node_ids(1, &mut rand::rng());
    let not_before = now_unix_s.saturating_sub(CLOCK_SKEW_S);
    let not_after = now_unix_s.saturating_add(DEFAULT_VALIDITY_S);
    let cert_der = ca.issue(&key.spki_der(), user, &node_ids, not_before, not_after)?;
    Ok(Enrollment {
        key_pkcs8: key.to_pkcs8_der(),
        cert_der,
        ca_der: ca.cert_der().to_vec(),
        node_ids,
        user: user.map(str::to_owned),
    })
}

/// A TLS server certificate for the enrollment server at `host` (a DNS
/// name or an IP address), issued by the overlay CA so that clients, which
/// trust only the overlay root, accept it. Returns the certificate DER and
/// a fresh ECDSA P-256 key as PKCS#8 DER.
pub fn server_tls_identity(
    ca: &OverlayCa,
    host: &str,
    now_unix_s: u64,
    validity_s: u64,
) -> Result<(Vec<u8>, Vec<u8>), EnrollError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let key = KeyPair::generate(KeyAlgorithm::EcdsaP256Sha256)?;
    let issue = |e: rcgen::Error| EnrollError::Security(SecurityError::Issue(e.to_string()));
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, host);
    params.distinguished_name = dn;
    params.subject_alt_names = vec![match host.parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(host.try_into().map_err(issue)?),
    }];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = unix_time(now_unix_s.saturating_sub(CLOCK_SKEW_S))?;
    params.not_after = unix_time(now_unix_s.saturating_add(validity_s))?;
    let mut serial = [0u8; 16];
    rand::rng().fill_bytes(&mut serial);
    if let Some(first) = serial.first_mut() {
        // Positive, no leading zero octet (DER INTEGER).
        *first = (*first & 0x7f) | 0x40;
    }
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.use_authority_key_identifier_extension = true;
    let issuer = Issuer::from_ca_cert_der(&ca.cert_der().into(), ca.key().rcgen()).map_err(issue)?;
    let cert = params.signed_by(key.rcgen(), &issuer).map_err(issue)?;
    Ok((cert.der().to_vec(), key.to_pkcs8_der()))
}

/// The accounts the enrollment server accepts: user name → salted
/// PBKDF2-HMAC-SHA256 password hash. Stored as TOML in the overlay
/// directory's [`USERS_FILE`]:
///
/// ```toml
/// [users]
/// "alice@example.org" = "pbkdf2-sha256$100000$<salt hex>$<hash hex>"
/// ```
#[derive(Clone, Default)]
pub struct EnrollUsers {
    users: BTreeMap<String, PasswordHash>,
}

#[derive(Serialize, Deserialize, Default)]
struct UsersFile {
    #[serde(default)]
    users: BTreeMap<String, String>,
}

impl EnrollUsers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a users file.
    pub fn load(path: &Path) -> Result<Self, EnrollError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| EnrollError::Io { what: format!("read {}", path.display()), source })?;
        Self::parse(&text).map_err(|reason| EnrollError::UsersFile { path: path.to_owned(), reason })
    }

    /// Writes the users file (owner-only permissions; written beside it
    /// and renamed into place so a crash never leaves half a file).
    pub fn save(&self, path: &Path) -> Result<(), EnrollError> {
        let file = UsersFile { users: self.users.iter().map(|(u, h)| (u.clone(), h.to_string())).collect() };
        let body = toml::to_string(&file)
            .map_err(|e| EnrollError::UsersFile { path: path.to_owned(), reason: e.to_string() })?;
        let text = format!("# chordphone enrollment accounts (RFC 6940 §11.3); `chordphone overlay` edits it.\n{body}");
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let io = |what: &str, source| EnrollError::Io { what: format!("{what} {}", tmp.display()), source };
        write_private(&tmp, text.as_bytes()).map_err(|e| io("write", e))?;
        std::fs::rename(&tmp, path).map_err(|e| io("rename", e))
    }

    /// Adds `user` or replaces its password. The name must be usable as an
    /// rfc822Name (ASCII, no spaces); the password must not be empty.
    pub fn add(&mut self, user: &str, password: &str) -> Result<(), EnrollError> {
        validate_user_name(user)?;
        if password.is_empty() {
            return Err(EnrollError::EmptyPassword);
        }
        let mut salt = [0u8; SALT_LEN];
        rand::rng().fill_bytes(&mut salt);
        self.users.insert(user.to_owned(), PasswordHash::new(&salt, password));
        Ok(())
    }

    /// Removes `user`; whether it existed.
    pub fn remove(&mut self, user: &str) -> bool {
        self.users.remove(user).is_some()
    }

    /// Whether `password` is `user`'s. The hash comparison is constant
    /// time, and an unknown user costs the same hashing work as a known
    /// one, so timing tells neither which names exist nor how close a
    /// guess was.
    pub fn check(&self, user: &str, password: &str) -> bool {
        match self.users.get(user) {
            Some(h) => h.verify(password),
            None => {
                let _ = PasswordHash::DUMMY.verify(password);
                false
            }
        }
    }

    /// The user names, sorted.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    fn parse(text: &str) -> Result<Self, String> {
        let file: UsersFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut users = BTreeMap::new();
        for (name, hash) in file.users {
            validate_user_name(&name).map_err(|e| e.to_string())?;
            let h = PasswordHash::parse(&hash).map_err(|r| format!("user {name:?}: {r}"))?;
            users.insert(name, h);
        }
        Ok(EnrollUsers { users })
    }
}

impl fmt::Debug for EnrollUsers {
    // Names only; hashes stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollUsers").field("users", &self.users.keys().collect::<Vec<_>>()).finish()
    }
}

/// What [`serve`] needs.
pub struct EnrollServerConfig {
    /// Where to listen (ignored by [`serve_on`]).
    pub listen: SocketAddr,
    pub ca: Arc<OverlayCa>,
    /// The server's TLS certificate and key, e.g. from [`server_tls_identity`].
    pub tls_cert_der: Vec<u8>,
    pub tls_key_pkcs8: Vec<u8>,
    pub users: EnrollUsers,
    /// Lifetime of issued certificates, seconds.
    pub validity_s: u64,
}

impl fmt::Debug for EnrollServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollServerConfig")
            .field("listen", &self.listen)
            .field("overlay", &self.ca.overlay_name())
            .field("users", &self.users)
            .field("validity_s", &self.validity_s)
            .finish_non_exhaustive()
    }
}

/// Binds `cfg.listen` and runs the enrollment server until `shutdown`
/// completes (see [`serve_on`]).
pub async fn serve(cfg: EnrollServerConfig, shutdown: impl Future<Output = ()>) -> Result<(), EnrollError> {
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| EnrollError::Io { what: format!("bind {}", cfg.listen), source })?;
    serve_on(listener, cfg, shutdown).await
}

/// Runs the HTTPS enrollment server on an already bound `listener` until
/// `shutdown` completes; open connections then get a few seconds to
/// finish. Errors only if the TLS identity is unusable: a bad connection
/// or request is answered or dropped and the server carries on.
pub async fn serve_on(
    listener: TcpListener,
    cfg: EnrollServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), EnrollError> {
    let acceptor = tls_acceptor(&cfg.tls_cert_der, &cfg.tls_key_pkcs8)?;
    let state = Arc::new(ServerState { ca: cfg.ca, users: cfg.users, validity_s: cfg.validity_s, acceptor });
    let local = listener.local_addr().ok();
    info!(addr = ?local, overlay = state.ca.overlay_name(), users = state.users.len(), "enrollment server up");
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while conns.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // the semaphore is never closed
            },
        };
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // E.g. out of file descriptors: back off, keep serving.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let span = info_span!("enroll_conn", %peer);
        conns.spawn(serve_connection(Arc::clone(&state), tcp, peer, permit).instrument(span));
    }
    info!(open = conns.len(), "enrollment server shutting down");
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        conns.abort_all();
    }
    Ok(())
}

/// Enrolls with the server at `url` (`https://host[:port]/path`; an IP
/// address host works): makes a `key_alg` key, sends a CSR with the
/// credentials asking for `node_id_count` Node-IDs, and checks the answer
/// chains to `root_der` (the configuration's root-cert) for overlay
/// `overlay_name`, certifies our key and names `username`. The server's
/// TLS certificate must chain to `root_der` too and match the URL's host.
pub async fn enroll_remote(
    url: &str,
    root_der: &[u8],
    overlay_name: &str,
    username: &str,
    password: &str,
    node_id_count: u32,
    key_alg: KeyAlgorithm,
) -> Result<Enrollment, EnrollError> {
    let target = EnrollUrl::parse(url)?;
    check_node_id_count(node_id_count)?;
    validate_user_name(username)?;
    // RSA generation takes a noticeable time: keep it off the runtime.
    let key = tokio::task::spawn_blocking(move || KeyPair::generate(key_alg))
        .await
        .map_err(|e| EnrollError::Security(SecurityError::Key(e.to_string())))??;
    let csr = csr_der(&key, Some(username))?;
    let count = node_id_count.to_string();
    let fields: [FormPart<'_>; 4] = [
        FormPart { name: "username", content_type: None, value: username.as_bytes() },
        FormPart { name: "password", content_type: None, value: password.as_bytes() },
        FormPart { name: "nodeids", content_type: None, value: count.as_bytes() },
        FormPart { name: "csr", content_type: Some(PKCS10), value: &csr },
    ];
    let (content_type, body) = multipart_body(&fields, &mut rand::rng());
    let answer = tokio::time::timeout(CLIENT_TIMEOUT, https_post(&target, root_der, &content_type, body))
        .await
        .map_err(|_| EnrollError::Timeout(CLIENT_TIMEOUT))??;
    if answer.status != StatusCode::OK {
        return Err(EnrollError::Rejected { status: answer.status.as_u16(), reason: printable(&answer.body) });
    }
    let media = answer.content_type.as_deref().map(media_type).unwrap_or_default();
    if media != PKIX_CERT {
        return Err(EnrollError::BadResponse(format!("content type {media:?}, expected {PKIX_CERT}")));
    }
    let id = verify_chain(&answer.body, root_der, unix_now(), overlay_name)?;
    if id.spki_der != key.spki_der() {
        return Err(EnrollError::BadResponse("the certificate is for another key".into()));
    }
    if id.user.as_deref() != Some(username) {
        return Err(EnrollError::BadResponse(format!("the certificate names user {:?}, not {username:?}", id.user)));
    }
    if id.node_ids.len() != node_id_count as usize {
        warn!(asked = node_id_count, got = id.node_ids.len(), "server issued a different number of Node-IDs");
    }
    info!(user = username, node_ids = ?id.node_ids, "enrolled");
    Ok(Enrollment {
        key_pkcs8: key.to_pkcs8_der(),
        cert_der: answer.body,
        ca_der: root_der.to_vec(),
        node_ids: id.node_ids,
        user: id.user,
    })
}

// ---------------------------------------------------------------------
// Helpers: Node-IDs, names, passwords.

fn check_node_id_count(n: u32) -> Result<(), EnrollError> {
    if n == 0 || n > MAX_NODE_IDS { Err(EnrollError::NodeIdCount(n)) } else { Ok(()) }
}

/// `count` distinct random Node-IDs (§11.3: the enrollment server chooses
/// them). The wildcard (all ones, §6.3.2.2) and all zeros are skipped.
fn random_node_ids(count: u32, rng: &mut impl Rng) -> Vec<NodeId> {
    let mut ids: Vec<NodeId> = Vec::with_capacity(count as usize);
    while ids.len() < count as usize {
        let mut b = [0u8; NODE_ID_LEN];
        rng.fill_bytes(&mut b);
        let id = NodeId(b);
        if id != NodeId::WILDCARD && id != NodeId::default() && !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

/// A user name becomes the certificate's rfc822Name, an IA5String: ASCII
/// without spaces or control characters, at most 254 octets (RFC 5321's
/// path limit).
fn validate_user_name(name: &str) -> Result<(), EnrollError> {
    let bad = |reason| Err(EnrollError::BadUserName { name: name.to_owned(), reason });
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 254 {
        return bad("longer than 254 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return bad("only printable ASCII without spaces is allowed");
    }
    Ok(())
}

/// A salted PBKDF2-HMAC-SHA256 hash, written
/// `pbkdf2-sha256$<rounds>$<salt hex>$<hash hex>`.
#[derive(Clone)]
struct PasswordHash {
    rounds: NonZeroU32,
    salt: Vec<u8>,
    hash: [u8; HASH_LEN],
}

impl PasswordHash {
    const PREFIX: &'static str = "pbkdf2-sha256";
    /// Checked against for unknown users, so they cost the same time.
    const DUMMY: PasswordHash = PasswordHash {
        rounds: NonZeroU32::MIN.saturating_add(PBKDF2_ROUNDS - 1),
        salt: Vec::new(),
        hash: [0; HASH_LEN],
    };

    fn new(salt: &[u8], password: &str) -> Self {
        let rounds = NonZeroU32::MIN.saturating_add(PBKDF2_ROUNDS - 1);
        let mut hash = [0u8; HASH_LEN];
        pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, rounds, salt, password.as_bytes(), &mut hash);
        PasswordHash { rounds, salt: salt.to_vec(), hash }
    }

    fn verify(&self, password: &str) -> bool {
        pbkdf2::verify(pbkdf2::PBKDF2_HMAC_SHA256, self.rounds, &self.salt, password.as_bytes(), &self.hash).is_ok()
    }

    fn parse(s: &str) -> Result<Self, &'static str> {
        let mut it = s.split('$');
        if it.next() != Some(Self::PREFIX) {
            return Err("password hash is not pbkdf2-sha256$rounds$salt$hash");
        }
        let rounds = it.next().and_then(|r| r.parse::<NonZeroU32>().ok()).ok_or("bad PBKDF2 round count")?;
        let salt = it.next().and_then(|h| hex::decode(h).ok()).ok_or("bad salt (hex expected)")?;
        let hash = it.next().and_then(|h| hex::decode(h).ok()).ok_or("bad hash (hex expected)")?;
        let hash: [u8; HASH_LEN] = hash.try_into().map_err(|_| "hash is not 32 bytes")?;
        if it.next().is_some() {
            return Err("trailing fields after the hash");
        }
        Ok(PasswordHash { rounds, salt, hash })
    }
}

impl fmt::Display for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}${}${}${}", Self::PREFIX, self.rounds, hex::encode(&self.salt), hex::encode(self.hash))
    }
}

#[cfg(unix)]
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, data)
}

fn unix_time(secs: u64) -> Result<time::OffsetDateTime, EnrollError> {
    let s = i64::try_from(secs).map_err(|_| SecurityError::Issue("time out of range".into()))?;
    Ok(time::OffsetDateTime::from_unix_timestamp(s).map_err(|e| SecurityError::Issue(e.to_string()))?)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

// ---------------------------------------------------------------------
// Server.

struct ServerState {
    ca: Arc<OverlayCa>,
    users: EnrollUsers,
    validity_s: u64,
    acceptor: SslAcceptor,
}

fn tls_acceptor(cert_der: &[u8], key_pkcs8: &[u8]) -> Result<SslAcceptor, EnrollError> {
    let tls = |what: &str, e: openssl::error::ErrorStack| EnrollError::Tls(format!("{what}: {e}"));
    let cert = X509::from_der(cert_der).map_err(|e| tls("server certificate", e))?;
    let key = PKey::private_key_from_der(key_pkcs8).map_err(|e| tls("server key", e))?;
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(|e| tls("context", e))?;
    b.set_certificate(&cert).map_err(|e| tls("server certificate", e))?;
    b.set_private_key(&key).map_err(|e| tls("server key", e))?;
    b.check_private_key().map_err(|e| tls("server key does not match its certificate", e))?;
    Ok(b.build())
}

/// One TLS connection carrying one request (no keep-alive: a client
/// enrolls once).
async fn serve_connection(state: Arc<ServerState>, tcp: TcpStream, peer: SocketAddr, _slot: OwnedSemaphorePermit) {
    let run = async {
        let ssl = Ssl::new(state.acceptor.context()).map_err(|e| EnrollError::Tls(e.to_string()))?;
        let mut tls = SslStream::new(ssl, tcp).map_err(|e| EnrollError::Tls(e.to_string()))?;
        Pin::new(&mut tls).accept().await.map_err(|e| EnrollError::Tls(format!("handshake: {e}")))?;
        let svc = service_fn(move |req| handle(Arc::clone(&state), req));
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).keep_alive(false);
        http.serve_connection(TokioIo::new(tls), svc).await.map_err(|e| EnrollError::Http(e.to_string()))
    };
    match tokio::time::timeout(CONNECTION_TIMEOUT, run).await {
        Ok(Ok(())) => {}
        // Scanners and impatient clients: not worth more than debug.
        Ok(Err(e)) => debug!(%peer, error = %e, "connection ended"),
        Err(_) => debug!(%peer, "connection timed out"),
    }
}

/// Why a request was refused: the status and the `text/plain` body's two
/// lines.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    token: &'static str,
    detail: String,
}

impl Refusal {
    fn new(status: StatusCode, token: &'static str, detail: impl Into<String>) -> Self {
        Refusal { status, token, detail: detail.into() }
    }
    fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", detail)
    }
}

async fn handle(state: Arc<ServerState>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let span =
        info_span!("enroll_request", method = %req.method(), path = %req.uri().path(), user = tracing::field::Empty);
    let answer = async {
        match enroll_request(state, req).await {
            Ok((cert, node_ids)) => {
                info!(?node_ids, "certificate issued");
                let mut r = Response::new(Full::new(Bytes::from(cert)));
                r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(PKIX_CERT));
                r
            }
            Err(refusal) => {
                if refusal.status.is_server_error() {
                    error!(status = refusal.status.as_u16(), detail = %refusal.detail, "enrollment failed");
                } else {
                    warn!(status = refusal.status.as_u16(), token = refusal.token, detail = %refusal.detail, "enrollment refused");
                }
                refusal_response(refusal)
            }
        }
    }
    .instrument(span)
    .await;
    Ok(answer)
}

fn refusal_response(r: Refusal) -> Response<Full<Bytes>> {
    let allow_post = r.status == StatusCode::METHOD_NOT_ALLOWED;
    let mut resp = Response::new(Full::new(Bytes::from(format!("{}\n{}\n", r.token, r.detail))));
    *resp.status_mut() = r.status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if allow_post {
        resp.headers_mut().insert(ALLOW, HeaderValue::from_static("POST"));
    }
    resp
}

/// §11.3 server steps for one request: read the form, authenticate, issue.
async fn enroll_request(state: Arc<ServerState>, req: Request<Incoming>) -> Result<(Vec<u8>, Vec<NodeId>), Refusal> {
    if req.method() != Method::POST {
        return Err(Refusal::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "only POST enrolls"));
    }
    let too_large = || Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("body over {MAX_BODY} bytes"));
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let kind = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(FormKind::of)
        .unwrap_or(Err("no Content-Type"))
        .map_err(|d| Refusal::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", d))?;
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
        Err(e) => return Err(Refusal::bad_request(format!("cannot read the body: {e}"))),
    };
    let form = EnrollForm::parse(&kind, &body).map_err(Refusal::bad_request)?;
    tracing::Span::current().record("user", form.username.as_str());
    let count = match form.nodeids.as_deref().map(str::trim) {
        None | Some("") => 1,
        Some(n) => n.parse::<u32>().map_err(|_| Refusal::bad_request(format!("nodeids {n:?} is not a number")))?,
    };
    // PBKDF2 and signing are CPU work: off the runtime's threads.
    tokio::task::spawn_blocking(move || {
        if !state.users.check(&form.username, &form.password) {
            return Err(Refusal::new(StatusCode::FORBIDDEN, "failed_authentication", "wrong user name or password"));
        }
        let r = issue_from_csr(
            &state.ca,
            &form.csr,
            Some(&form.username),
            count,
            unix_now(),
            state.validity_s,
            &mut rand::rng(),
        );
        r.map_err(|e| match e {
            EnrollError::BadCsr(d) => Refusal::new(StatusCode::BAD_REQUEST, "bad_CSR", d),
            EnrollError::NodeIdCount(_) => Refusal::new(StatusCode::FORBIDDEN, "Node-IDs_not_available", e.to_string()),
            other => Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", other.to_string()),
        })
    })
    .await
    .map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", e.to_string()))?
}

// ---------------------------------------------------------------------
// Forms: multipart/form-data (RFC 7578, what §11.3 specifies) and, leniently,
// application/x-www-form-urlencoded.

#[derive(Debug, PartialEq, Eq)]
enum FormKind {
    Multipart { boundary: String },
    UrlEncoded,
}

impl FormKind {
    fn of(content_type: &str) -> Result<Self, &'static str> {
        let media = media_type(content_type);
        if media == "application/x-www-form-urlencoded" {
            return Ok(FormKind::UrlEncoded);
        }
        if media != "multipart/form-data" {
            return Err("expected multipart/form-data (RFC 6940 §11.3)");
        }
        let boundary = content_type
            .split(';')
            .skip(1)
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
            .map(|(_, v)| v.trim().trim_matches('"').to_owned())
            .ok_or("multipart/form-data without a boundary")?;
        if boundary.is_empty() || boundary.len() > 70 {
            return Err("multipart boundary must be 1 to 70 characters");
        }
        Ok(FormKind::Multipart { boundary })
    }
}

/// The lowercase `type/subtype` of a Content-Type value.
fn media_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// The §11.3 fields.
#[derive(Debug)]
struct EnrollForm {
    username: String,
    password: String,
    nodeids: Option<String>,
    /// The PKCS#10 request, DER.
    csr: Vec<u8>,
}

impl EnrollForm {
    fn parse(kind: &FormKind, body: &[u8]) -> Result<Self, String> {
        let fields = match kind {
            FormKind::Multipart { boundary } => parse_multipart(body, boundary)?,
            FormKind::UrlEncoded => parse_urlencoded(body)?,
        };
        let mut seen: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (name, value) in fields {
            if seen.insert(name.clone(), value).is_some() {
                return Err(format!("field {name:?} given twice"));
            }
        }
        let mut text = |name: &str| -> Result<Option<String>, String> {
            seen.remove(name)
                .map(|v| String::from_utf8(v).map_err(|_| format!("field {name:?} is not UTF-8")))
                .transpose()
        };
        let username = text("username")?.ok_or("missing field \"username\"")?;
        let password = text("password")?.ok_or("missing field \"password\"")?;
        let nodeids = text("nodeids")?;
        let csr = seen.remove("csr").ok_or("missing field \"csr\"")?;
        Ok(EnrollForm { username, password, nodeids, csr: decode_csr(&csr)? })
    }
}

/// A `csr` value as DER: binary DER as §11.3 sends it, or PEM / base64 text.
fn decode_csr(raw: &[u8]) -> Result<Vec<u8>, String> {
    if raw.first() == Some(&0x30) {
        return Ok(raw.to_vec());
    }
    let text = std::str::from_utf8(raw).map_err(|_| "bad_CSR: neither DER nor text".to_owned())?.trim();
    let b64: String = if text.starts_with("-----BEGIN") {
        text.lines().filter(|l| !l.trim_start().starts_with("-----")).collect()
    } else {
        text.to_owned()
    };
    let b64: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    STANDARD_PAD_INDIFFERENT
        .decode(&b64)
        .or_else(|_| URL_SAFE_PAD_INDIFFERENT.decode(&b64))
        .map_err(|_| "bad_CSR: neither DER, PEM nor base64".to_owned())
}

/// `(name, value)` pairs of a multipart/form-data body (RFC 7578, RFC
/// 2046 §5.1.1). A part with `Content-Transfer-Encoding: base64` is
/// decoded. Parameters are split on `;` without honouring quoted `;`.
fn parse_multipart(body: &[u8], boundary: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let first = format!("--{boundary}");
    let next = format!("\r\n--{boundary}");
    let start = find(body, first.as_bytes()).ok_or("no multipart boundary in the body")?;
    let mut rest = body.get(start + first.len()..).unwrap_or_default();
    let mut fields = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Ok(fields);
        }
        // Transport padding, then CRLF, after each delimiter.
        let eol = find(rest, b"\r\n").ok_or("truncated multipart body")?;
        if !rest.get(..eol).unwrap_or_default().iter().all(|b| *b == b' ' || *b == b'\t') {
            return Err("garbage after a multipart boundary".into());
        }
        rest = rest.get(eol + 2..).unwrap_or_default();
        let (headers, content_start) = if rest.starts_with(b"\r\n") {
            (&[][..], 2)
        } else {
            let end = find(rest, b"\r\n\r\n").ok_or("multipart part without a blank line after its headers")?;
            (rest.get(..end).unwrap_or_default(), end + 4)
        };
        let after = rest.get(content_start..).unwrap_or_default();
        let end = find(after, next.as_bytes()).ok_or("multipart part not closed by the boundary")?;
        fields.push(parse_part(headers, after.get(..end).unwrap_or_default())?);
        if fields.len() > MAX_FORM_FIELDS {
            return Err(format!("more than {MAX_FORM_FIELDS} form fields"));
        }
        rest = after.get(end + next.len()..).unwrap_or_default();
    }
}

fn parse_part(headers: &[u8], content: &[u8]) -> Result<(String, Vec<u8>), String> {
    let headers = std::str::from_utf8(headers).map_err(|_| "multipart headers are not UTF-8")?;
    let mut name = None;
    let mut base64 = false;
    for line in headers.split("\r\n").filter(|l| !l.is_empty()) {
        let (h, v) = line.split_once(':').ok_or_else(|| format!("bad multipart header {line:?}"))?;
        let h = h.trim();
        if h.eq_ignore_ascii_case("content-disposition") {
            let mut params = v.split(';').map(str::trim);
            if !params.next().is_some_and(|d| d.eq_ignore_ascii_case("form-data")) {
                return Err(format!("part disposition {v:?} is not form-data"));
            }
            name = params
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("name"))
                .map(|(_, v)| v.trim().trim_matches('"').to_owned());
        } else if h.eq_ignore_ascii_case("content-transfer-encoding") {
            base64 = v.trim().eq_ignore_ascii_case("base64");
        }
    }
    let name = name.ok_or("multipart part without a form-data name")?;
    let value = if base64 {
        let text: Vec<u8> = content.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
        STANDARD_PAD_INDIFFERENT.decode(&text).map_err(|_| format!("field {name:?}: bad base64"))?
    } else {
        content.to_vec()
    };
    Ok((name, value))
}

fn parse_urlencoded(body: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut fields = Vec::new();
    for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (pair.get(..i).unwrap_or_default(), pair.get(i + 1..).unwrap_or_default()),
            None => (pair, &[][..]),
        };
        let k = String::from_utf8(percent_decode(k)?).map_err(|_| "form field name is not UTF-8")?;
        fields.push((k, percent_decode(v)?));
        if fields.len() > MAX_FORM_FIELDS {
            return Err(format!("more than {MAX_FORM_FIELDS} form fields"));
        }
    }
    if fields.is_empty() {
        return Err("empty form".into());
    }
    Ok(fields)
}

fn percent_decode(s: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut it = s.iter().copied();
    while let Some(b) = it.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = it.next().and_then(hex_val);
                let lo = it.next().and_then(hex_val);
                match (hi, lo) {
                    (Some(h), Some(l)) => out.push(h << 4 | l),
                    _ => return Err("bad %-escape in the form".into()),
                }
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        // `windows(0)` would panic.
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------
// Client.

struct FormPart<'a> {
    name: &'a str,
    content_type: Option<&'a str>,
    value: &'a [u8],
}

/// A multipart/form-data body (RFC 7578) and its Content-Type, with a
/// random boundary that occurs in no value.
fn multipart_body(parts: &[FormPart<'_>], rng: &mut impl Rng) -> (String, Vec<u8>) {
    let boundary = loop {
        let b = format!("chordphone-{:032x}", rng.random::<u128>());
        if !parts.iter().any(|p| find(p.value, b.as_bytes()).is_some()) {
            break b;
        }
    };
    let mut body = Vec::new();
    for p in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{}\"", p.name).as_bytes());
        if let Some(ct) = p.content_type {
            body.extend_from_slice(format!("; filename=\"{}.der\"\r\nContent-Type: {ct}", p.name).as_bytes());
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(p.value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// An `https://host[:port]/path` URL taken apart.
#[derive(Debug, PartialEq, Eq)]
struct EnrollUrl {
    /// Host name or IP address, without IPv6 brackets.
    host: String,
    port: u16,
    /// `host[:port]` as written, for the Host header.
    authority: String,
    path_and_query: String,
}

impl EnrollUrl {
    fn parse(url: &str) -> Result<Self, EnrollError> {
        let bad = |reason| EnrollError::Url { url: url.to_owned(), reason };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("enrollment is over https (RFC 6940 §11.3)"));
        }
        let auth = uri.authority().ok_or_else(|| bad("no host"))?;
        if auth.as_str().contains('@') {
            return Err(bad("user info in the URL is not supported"));
        }
        let host = auth.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let path_and_query = uri.path_and_query().map(|p| p.as_str()).filter(|p| !p.is_empty()).unwrap_or("/");
        Ok(EnrollUrl {
            host,
            port: auth.port_u16().unwrap_or(443),
            authority: auth.as_str().to_owned(),
            path_and_query: path_and_query.to_owned(),
        })
    }
}

/// A TLS client context whose only trust anchor is the overlay root.
fn tls_connector(root_der: &[u8]) -> Result<SslConnector, EnrollError> {
    let tls = |what: &str, e: openssl::error::ErrorStack| EnrollError::Tls(format!("{what}: {e}"));
    let root = X509::from_der(root_der).map_err(|e| tls("root certificate", e))?;
    let mut store = X509StoreBuilder::new().map_err(|e| tls("trust store", e))?;
    store.add_cert(root).map_err(|e| tls("trust store", e))?;
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| tls("context", e))?;
    // Replaces the system store set up by `builder`.
    b.set_cert_store(store.build());
    b.set_min_proto_version(Some(SslVersion::TLS1_2)).map_err(|e| tls("context", e))?;
    Ok(b.build())
}

struct Answer {
    status: StatusCode,
    content_type: Option<String>,
    body: Vec<u8>,
}

async fn https_post(
    target: &EnrollUrl,
    root_der: &[u8],
    content_type: &str,
    body: Vec<u8>,
) -> Result<Answer, EnrollError> {
    let connector = tls_connector(root_der)?;
    let where_ = format!("{}:{}", target.host, target.port);
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|source| EnrollError::Io { what: format!("connect to {where_}"), source })?;
    // `into_ssl` sends SNI for names and checks the certificate against
    // the host name or IP address.
    let ssl =
        connector.configure().and_then(|c| c.into_ssl(&target.host)).map_err(|e| EnrollError::Tls(e.to_string()))?;
    let mut tls = SslStream::new(ssl, tcp).map_err(|e| EnrollError::Tls(e.to_string()))?;
    Pin::new(&mut tls).connect().await.map_err(|e| EnrollError::Tls(format!("handshake with {where_}: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tls))
        .await
        .map_err(|e| EnrollError::Http(e.to_string()))?;
    let conn = tokio::spawn(conn);
    let req = Request::post(target.path_and_query.as_str())
        .header(HOST, target.authority.as_str())
        .header(CONTENT_TYPE, content_type)
        .header(ACCEPT, PKIX_CERT)
        .header(CONNECTION, "close")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| EnrollError::Http(e.to_string()))?;
    let result = async {
        let resp = sender.send_request(req).await.map_err(|e| EnrollError::Http(e.to_string()))?;
        let status = resp.status();
        let content_type = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| EnrollError::Http(format!("reading the answer: {e}")))?
            .to_bytes()
            .to_vec();
        Ok(Answer { status, content_type, body })
    }
    .await;
    conn.abort();
    result
}

/// Server text made safe for an error message: printable, one line, short.
fn printable(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line: String =
        text.trim().chars().map(|c| if c == '\n' { ';' } else { c }).filter(|c| !c.is_control()).take(300).collect();
    if one_line.is_empty() { "(no reason given)".into() } else { one_line }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::security::{SelfSignedDigest, self_signed_node_id};

    const OVERLAY: &str = "overlay.example.org";
    const T0: u64 = 1_700_000_000;
    const YEAR: u64 = 365 * 24 * 3600;

    fn ca() -> OverlayCa {
        let key = KeyPair::generate(KeyAlgorithm::EcdsaP256Sha256).unwrap();
        OverlayCa::create(OVERLAY, key, T0 - 10, T0 + 10 * YEAR).unwrap()
    }

    #[test]
    fn csr_to_certificate_binds_chosen_node_ids_and_user() {
        let ca = ca();
        for alg in [KeyAlgorithm::EcdsaP256Sha256, KeyAlgorithm::Ed25519, KeyAlgorithm::RsaPkcs1Sha256] {
            let key = KeyPair::generate(alg).unwrap();
            let csr = csr_der(&key, Some("alice@example.org")).unwrap();
            assert_eq!(csr_public_key(&csr).unwrap(), key.spki_der());
            let mut rng = StdRng::seed_from_u64(7);
            let (cert, ids) = issue_from_csr(&ca, &csr, Some("alice@example.org"), 3, T0, YEAR, &mut rng).unwrap();
            assert_eq!(ids.len(), 3);
            let id = verify_chain(&cert, ca.cert_der(), T0, OVERLAY).unwrap();
            assert_eq!(id.node_ids, ids);
            assert_eq!(id.user.as_deref(), Some("alice@example.org"));
            assert_eq!(id.spki_der, key.spki_der());
            assert_eq!(id.not_before, (T0 - CLOCK_SKEW_S) as i64);
            assert_eq!(id.not_after, (T0 + YEAR) as i64);
        }
    }

    #[test]
    fn node_ids_come_from_the_rng_not_the_request() {
        let ca = ca();
        let key = KeyPair::generate(KeyAlgorithm::Ed25519).unwrap();
        let csr = csr_der(&key, None).unwrap();
        let (_, a) = issue_from_csr(&ca, &csr, None, 1, T0, YEAR, &mut StdRng::seed_from_u64(1)).unwrap();
        let (_, b) = issue_from_csr(&ca, &csr, None, 1, T0, YEAR, &mut StdRng::seed_from_u64(2)).unwrap();
        let (_, a2) = issue_from_csr(&ca, &csr, None, 1, T0, YEAR, &mut StdRng::seed_from_u64(1)).unwrap();
        assert_ne!(a, b);
        assert_eq!(a, a2);
        for digest in [SelfSignedDigest::Sha1, SelfSignedDigest::Sha256] {
            assert_ne!(a.first().copied(), Some(self_signed_node_id(digest, &key.spki_der(), None)));
        }
        let many = random_node_ids(16, &mut StdRng::seed_from_u64(3));
        let mut dedup = many.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), 16);
    }

    #[test]
    fn node_id_count_is_bounded() {
        let ca = ca();
        let csr = csr_der(&KeyPair::generate(KeyAlgorithm::Ed25519).unwrap(), None).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        for bad in [0, MAX_NODE_IDS + 1] {
            let r = issue_from_csr(&ca, &csr, None, bad, T0, YEAR, &mut rng);
            assert!(matches!(r, Err(EnrollError::NodeIdCount(n)) if n == bad), "{r:?}");
        }
        let (_, ids) = issue_from_csr(&ca, &csr, None, MAX_NODE_IDS, T0, YEAR, &mut rng).unwrap();
        assert_eq!(ids.len(), MAX_NODE_IDS as usize);
    }

    fn bad_csr(csr: &[u8]) -> String {
        let r = issue_from_csr(&ca(), csr, None, 1, T0, YEAR, &mut StdRng::seed_from_u64(1));
        match r {
            Err(EnrollError::BadCsr(d)) => d,
            other => panic!("expected BadCsr, got {other:?}"),
        }
    }

    #[test]
    fn bad_csrs_are_refused_with_the_reason() {
        assert!(bad_csr(b"hello").contains("not a DER PKCS#10"));
        let good = csr_der(&KeyPair::generate(KeyAlgorithm::EcdsaP256Sha256).unwrap(), None).unwrap();
        let mut tampered = good.clone();
        if let Some(b) = tampered.last_mut() {
            *b ^= 1;
        }
        assert!(bad_csr(&tampered).contains("self-signature"));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(bad_csr(&trailing).contains("after the request"));
        // Well signed, but P-384 is no RELOAD node key type here.
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let csr = params.serialize_request(&p384).unwrap();
        assert!(bad_csr(csr.der()).contains("unsupported key type"));
    }

    #[test]
    fn local_enrollment_verifies() {
        let ca = ca();
        let e = enroll_local(&ca, Some("bob@example.org"), KeyAlgorithm::EcdsaP256Sha256, T0).unwrap();
        let id = verify_chain(&e.cert_der, &e.ca_der, T0 + 5, OVERLAY).unwrap();
        assert_eq!(id.node_ids, e.node_ids);
        assert_eq!(e.node_ids.len(), 1);
        assert_eq!(id.user.as_deref(), Some("bob@example.org"));
        assert_eq!(KeyPair::from_pkcs8_der(&e.key_pkcs8).unwrap().spki_der(), id.spki_der);
        assert!(matches!(
            enroll_local(&ca, Some("bob smith"), KeyAlgorithm::Ed25519, T0),
            Err(EnrollError::BadUserName { .. })
        ));
    }

    #[test]
    fn server_identity_names_the_host() {
        let ca = ca();
        for host in ["127.0.0.1", "enroll.example.org", "[::1]"] {
            let (cert, key) = server_tls_identity(&ca, host, T0, YEAR).unwrap();
            let x = X509::from_der(&cert).unwrap();
            let sans = x.subject_alt_names().unwrap();
            let san = sans.iter().next().unwrap();
            match host.trim_matches(['[', ']']).parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) => assert_eq!(san.ipaddress(), Some(&ip.octets()[..])),
                Ok(IpAddr::V6(ip)) => assert_eq!(san.ipaddress(), Some(&ip.octets()[..])),
                Err(_) => assert_eq!(san.dnsname(), Some(host)),
            }
            // Signed by the overlay root, and the key fits the certificate.
            let root = X509::from_der(ca.cert_der()).unwrap();
            assert!(x.verify(&root.public_key().unwrap()).unwrap());
            tls_acceptor(&cert, &key).unwrap();
        }
    }

    #[test]
    fn users_check_passwords() {
        let mut users = EnrollUsers::new();
        users.add("alice@example.org", "correct horse").unwrap();
        users.add("bob@example.org", "battery staple").unwrap();
        assert!(users.check("alice@example.org", "correct horse"));
        assert!(!users.check("alice@example.org", "battery staple"));
        assert!(!users.check("alice@example.org", ""));
        assert!(!users.check("carol@example.org", "correct horse"));
        assert!(users.add("has space", "x").is_err());
        assert!(users.add("dave@example.org", "").is_err());
        assert!(users.add("é@example.org", "x").is_err());
        assert!(users.remove("bob@example.org"));
        assert!(!users.check("bob@example.org", "battery staple"));
        assert_eq!(users.users().collect::<Vec<_>>(), ["alice@example.org"]);
        assert!(!format!("{users:?}").contains("pbkdf2"));
    }

    #[test]
    fn users_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(USERS_FILE);
        let mut users = EnrollUsers::new();
        users.add("alice@example.org", "s3cret").unwrap();
        users.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"alice@example.org\" = \"pbkdf2-sha256$100000$"));
        assert!(!text.contains("s3cret"));
        let again = EnrollUsers::load(&path).unwrap();
        assert!(again.check("alice@example.org", "s3cret"));
        assert!(!again.check("alice@example.org", "s3cret!"));
        std::fs::write(&path, "[users]\n\"alice@example.org\" = \"md5$abc\"\n").unwrap();
        let err = EnrollUsers::load(&path).unwrap_err().to_string();
        assert!(err.contains("alice@example.org") && err.contains("pbkdf2-sha256"), "{err}");
        assert!(EnrollUsers::load(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn multipart_round_trip_with_binary_csr() {
        let csr = csr_der(&KeyPair::generate(KeyAlgorithm::Ed25519).unwrap(), Some("a@b.c")).unwrap();
        // Binary values may contain CRLF and dashes.
        let weird = b"pa\r\n--ss".to_vec();
        let parts = [
            FormPart { name: "username", content_type: None, value: b"a@b.c" },
            FormPart { name: "password", content_type: None, value: &weird },
            FormPart { name: "csr", content_type: Some(PKCS10), value: &csr },
        ];
        let (ct, body) = multipart_body(&parts, &mut StdRng::seed_from_u64(9));
        let kind = FormKind::of(&ct).unwrap();
        let form = EnrollForm::parse(&kind, &body).unwrap();
        assert_eq!(form.username, "a@b.c");
        assert_eq!(form.password.as_bytes(), weird.as_slice());
        assert_eq!(form.nodeids, None);
        assert_eq!(form.csr, csr);
    }

    #[test]
    fn multipart_written_by_others_parses() {
        let body = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nalice\r\n\
--XyZ  \r\ncontent-disposition: form-data; name=password\r\n\r\npw\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"nodeids\"\r\n\r\n2\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"csr\"\r\nContent-Type: application/pkcs10\r\n\
Content-Transfer-Encoding: base64\r\n\r\nMAA=\r\n--XyZ--\r\nepilogue";
        let kind = FormKind::of("Multipart/Form-Data; boundary=\"XyZ\"").unwrap();
        let form = EnrollForm::parse(&kind, body).unwrap();
        assert_eq!((form.username.as_str(), form.password.as_str()), ("alice", "pw"));
        assert_eq!(form.nodeids.as_deref(), Some("2"));
        assert_eq!(form.csr, [0x30, 0x00]);
    }

    #[test]
    fn urlencoded_form_with_base64_csr() {
        let kind = FormKind::of("application/x-www-form-urlencoded").unwrap();
        let form = EnrollForm::parse(&kind, b"username=alice%40ex.org&password=a+b%21&csr=MAA%3D").unwrap();
        assert_eq!(form.username, "alice@ex.org");
        assert_eq!(form.password, "a b!");
        assert_eq!(form.csr, [0x30, 0x00]);
        let pem = "username=a&password=b&csr=-----BEGIN+CERTIFICATE+REQUEST-----%0AMAA%3D%0A-----END+CERTIFICATE+REQUEST-----";
        assert_eq!(EnrollForm::parse(&kind, pem.as_bytes()).unwrap().csr, [0x30, 0x00]);
    }

    #[test]
    fn malformed_forms_are_refused() {
        let url = FormKind::UrlEncoded;
        let mp = FormKind::Multipart { boundary: "B".into() };
        let cases: [(&FormKind, &[u8], &str); 7] = [
            (&url, b"", "empty form"),
            (&url, b"username=a&password=b", "missing field \"csr\""),
            (&url, b"username=a&username=b", "given twice"),
            (&url, b"username=%zz", "%-escape"),
            (&url, b"username=a&password=b&csr=%FF%FE", "neither DER nor text"),
            (&mp, b"\x00\x01garbage", "no multipart boundary"),
            (&mp, b"--B\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nvalue without end", "not closed"),
        ];
        for (kind, body, want) in cases {
            let err = EnrollForm::parse(kind, body).unwrap_err();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
        assert!(FormKind::of("application/json").is_err());
        assert!(FormKind::of("multipart/form-data").is_err());
    }

    #[test]
    fn enrollment_urls() {
        let u = EnrollUrl::parse("https://127.0.0.1:8443/enroll").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path_and_query.as_str()), ("127.0.0.1", 8443, "/enroll"));
        let u = EnrollUrl::parse("https://[::1]/").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.authority.as_str()), ("::1", 443, "[::1]"));
        let u = EnrollUrl::parse("https://enroll.example.org").unwrap();
        assert_eq!(u.path_and_query, "/");
        for bad in ["http://example.org/enroll", "example.org", "https://u:p@example.org/", "not a url"] {
            assert!(matches!(EnrollUrl::parse(bad), Err(EnrollError::Url { .. })), "{bad}");
        }
    }

    #[test]
    fn server_text_is_sanitised() {
        assert_eq!(printable(b"failed_authentication\nwrong password\n"), "failed_authentication;wrong password");
        assert_eq!(printable(b"\x1b[31mred"), "[31mred");
        assert_eq!(printable(b""), "(no reason given)");
        assert_eq!(printable(&[b'a'; 1000]).len(), 300);
    }
}
