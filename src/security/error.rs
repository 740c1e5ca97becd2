//! Why a key, certificate or signature was refused.

use thiserror::Error;

use crate::wire::WireError;

/// Every failure of the security module, each naming what went wrong so a
/// caller can log it and pick the RELOAD error to answer with (§6.3.4:
/// a request whose signature does not verify is dropped or answered with
/// Error_Forbidden).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SecurityError {
    /// A private key could not be made, read or used.
    #[error("key error: {0}")]
    Key(String),
    /// A certificate could not be made.
    #[error("cannot issue certificate: {0}")]
    Issue(String),
    /// A {hash, signature} pair this implementation does not verify.
    #[error("unsupported signature algorithm {{hash {hash}, signature {signature}}}")]
    UnsupportedAlgorithm { hash: u8, signature: u8 },
    /// A public key of a type we do not use (only RSA, P-256, Ed25519).
    #[error("unsupported public key type")]
    UnsupportedKey,
    /// The signature names an algorithm the signer's key cannot produce.
    #[error("signature algorithm does not match the signer's key")]
    AlgorithmMismatch,
    /// The signature does not verify over the data.
    #[error("bad signature")]
    BadSignature,
    /// Bytes that should be DER are not a certificate or key.
    #[error("malformed certificate: {0}")]
    MalformedCertificate(String),
    /// The certificate was issued by some other CA than the overlay's root.
    #[error("certificate not issued by this overlay's CA")]
    WrongCa,
    /// The certificate names the root as issuer but its signature fails.
    #[error("certificate signature does not verify")]
    BadCertificateSignature,
    /// The configured root is not a CA (no BasicConstraints cA=TRUE).
    #[error("root certificate is not a CA")]
    RootNotCa,
    /// The root itself is outside its validity period at `now`.
    #[error("root certificate not valid at {now}")]
    RootNotValid { now: u64 },
    #[error("certificate expired at {not_after}, now {now}")]
    Expired { not_after: i64, now: u64 },
    #[error("certificate not valid before {not_before}, now {now}")]
    NotYetValid { not_before: i64, now: u64 },
    /// No `reload://` SubjectAltName URI names a Node-ID.
    #[error("certificate carries no Node-ID")]
    NoNodeId,
    /// A `reload://` URI names another overlay.
    #[error("certificate is for overlay {found:?}, not {expected:?}")]
    WrongOverlay { expected: String, found: String },
    /// A `reload://` URI is not of the §11.3 form.
    #[error("malformed reload URI {0:?}")]
    MalformedUri(String),
    /// §11.3: a certificate carries exactly one rfc822Name user name.
    #[error("certificate carries {0} user names")]
    UserNames(usize),
    /// §11.3.1: a self-signed certificate's Node-ID is not its key's digest.
    #[error("self-signed Node-ID {0} does not match the key")]
    NodeIdMismatch(crate::wire::NodeId),
    /// An array entry shorter than its 4-byte index (§7.2.2).
    #[error("array value shorter than its index")]
    ValueTooShort,
    #[error("encoding: {0}")]
    Wire(#[from] WireError),
}
