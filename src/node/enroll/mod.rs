//! Certificate enrollment over HTTPS (RFC 6940 §11.3): the enrollment
//! server an overlay operator runs next to its CA, the client a joining
//! node uses, and the local shortcut for a process that holds the CA
//! itself. Requests, the enrollment policy and issuing are pure and live in
//! [`crate::security::enroll`]; this module is the HTTP, TLS and file side.
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
//!    BasicConstraints ([`crate::security::verify_chain`]), and that it
//!    certifies its key.
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
//! `application/x-www-form-urlencoded` (then its values are UTF-8 text), and
//! the `csr` value may be DER, PEM or bare base64.
//!
//! Trust: the client trusts **only the overlay's root certificate** for
//! the server's TLS certificate (no system store) and checks the URL's host
//! name or IP address against the certificate's SubjectAltName, as HTTPS
//! does (RFC 9110 §4.3.4). The host check matters because every enrolled
//! node also holds a certificate from the same root; node certificates
//! carry no DNS or IP names, so they cannot pose as the server.
//! [`server_tls_identity`] issues the server's certificate from the CA.

mod client;
mod form;
mod server;
mod users;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;

pub use self::client::enroll_remote;
pub use self::server::{EnrollServerConfig, serve, serve_on};
pub use self::users::EnrollUsers;
use crate::security::enroll::IssueError;
pub use crate::security::enroll::{CLOCK_SKEW_S, DEFAULT_VALIDITY_S, Enrollment, MAX_NODE_IDS, csr_der};
use crate::security::{KeyAlgorithm, OverlayCa, SecurityError};

/// Largest request (and response) body accepted, in bytes.
pub const MAX_BODY: usize = 64 * 1024;
/// The users file's name inside an overlay directory.
pub const USERS_FILE: &str = "enroll-users";
/// The media type of the certificate in a successful answer (RFC 2585).
pub const PKIX_CERT: &str = "application/pkix-cert";
/// The media type of the `csr` form field (RFC 5967).
pub const PKCS10: &str = "application/pkcs10";

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

impl From<IssueError> for EnrollError {
    fn from(e: IssueError) -> Self {
        match e {
            IssueError::BadCsr(d) => EnrollError::BadCsr(d),
            IssueError::CsrBuild(d) => EnrollError::CsrBuild(d),
            IssueError::NodeIdCount(n) => EnrollError::NodeIdCount(n),
            IssueError::BadUserName { name, reason } => EnrollError::BadUserName { name, reason },
            IssueError::Security(s) => EnrollError::Security(s),
        }
    }
}

/// [`crate::security::enroll::issue_local`] with the process's RNG: one
/// random Node-ID and a fresh `key_alg` key, valid for
/// [`DEFAULT_VALIDITY_S`].
pub fn enroll_local(
    ca: &OverlayCa,
    user: Option<&str>,
    key_alg: KeyAlgorithm,
    now_unix_s: u64,
) -> Result<Enrollment, EnrollError> {
    Ok(crate::security::enroll::issue_local(ca, user, key_alg, now_unix_s, &mut rand::rng())?)
}

/// [`crate::security::enroll::server_tls_identity`] with a random serial:
/// the enrollment server's certificate for `host` and its PKCS#8 key.
pub fn server_tls_identity(
    ca: &OverlayCa,
    host: &str,
    now_unix_s: u64,
    validity_s: u64,
) -> Result<(Vec<u8>, Vec<u8>), EnrollError> {
    Ok(crate::security::enroll::server_tls_identity(ca, host, now_unix_s, validity_s, &mut rand::rng())?)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The lowercase `type/subtype` of a Content-Type value; empty if it is
/// not a media type.
fn media_type(content_type: &str) -> String {
    content_type.parse::<mime::Mime>().map(|m| m.essence_str().to_owned()).unwrap_or_default()
}
