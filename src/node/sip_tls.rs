//! The certificate phones see on the node's SIP-over-TLS listener (RFC 3261
//! §26.2.1, RFC 5630 §3): server authentication only, phones show none.
//!
//! `[sip] tls_cert` / `tls_key` (PEM; e.g. a Let's Encrypt `fullchain.pem`
//! and `privkey.pem` for the node's domain) name it; without them the node
//! shows its overlay certificate, which phones accept only when they trust
//! the overlay root (`ca.der` of the overlay directory) and do not check
//! the host name (the certificate names Node-IDs, RFC 6940 §11.3, not hosts).

use std::io;
use std::path::{Path, PathBuf};

use openssl::asn1::Asn1Time;
use openssl::error::ErrorStack;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslAcceptor, SslMethod};
use openssl::x509::X509;
use thiserror::Error;
use tracing::{info, warn};

use super::super::config::SipSettings;
use super::super::link::{LinkSecurity, private_key};

/// Why the TLS listener's certificate cannot be used.
#[derive(Debug, Error)]
pub enum SipTlsError {
    #[error("[sip] {present} is set but {missing} is not: set both or neither")]
    HalfConfigured { present: &'static str, missing: &'static str },
    #[error("cannot read [sip] {key} {}: {source}", path.display())]
    Read { key: &'static str, path: PathBuf, source: io::Error },
    #[error("[sip] tls_cert {} holds no PEM certificate ({reason})", path.display())]
    NoCertificate { path: PathBuf, reason: String },
    #[error("[sip] tls_key {} holds no PEM private key ({reason})", path.display())]
    NoKey { path: PathBuf, reason: String },
    #[error("[sip] tls_key {} does not match the certificate in tls_cert {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("the node's overlay certificate cannot serve SIP over TLS: {0}")]
    OverlayIdentity(String),
    #[error("cannot set up SIP over TLS: {0}")]
    OpenSsl(#[from] ErrorStack),
}

/// The acceptor for `[sip] tls`: the configured PEM certificate chain and
/// key (relative paths are read from `data_dir`), else the node's overlay
/// certificate and key from `sec`.
pub fn acceptor(sip: &SipSettings, data_dir: &Path, sec: &LinkSecurity) -> Result<SslAcceptor, SipTlsError> {
    let (chain, key) = match (&sip.tls_cert, &sip.tls_key) {
        (Some(cert), Some(key)) => {
            let (cert, key) = (data_dir.join(cert), data_dir.join(key));
            let chain = read_chain(&cert)?;
            let pkey = read_key(&key)?;
            if !chain.first().and_then(|c| c.public_key().ok()).is_some_and(|p| p.public_eq(&pkey)) {
                return Err(SipTlsError::KeyMismatch { cert, key });
            }
            info!(cert = %cert.display(), "SIP over TLS shows the configured certificate");
            (chain, pkey)
        }
        (Some(_), None) => return Err(SipTlsError::HalfConfigured { present: "tls_cert", missing: "tls_key" }),
        (None, Some(_)) => return Err(SipTlsError::HalfConfigured { present: "tls_key", missing: "tls_cert" }),
        (None, None) => {
            let overlay = |e: ErrorStack| SipTlsError::OverlayIdentity(e.to_string());
            let cert = X509::from_der(&sec.cert_der).map_err(overlay)?;
            let key = private_key(&sec.key_pkcs8).map_err(|e| SipTlsError::OverlayIdentity(e.to_string()))?;
            info!("SIP over TLS shows the overlay certificate: phones must trust the overlay's ca.der");
            (vec![cert], key)
        }
    };
    build(&chain, &key)
}

/// Mozilla's "intermediate" server profile (TLS 1.2 and 1.3, AEAD
/// ciphers): what current phones speak; no client certificate requested.
fn build(chain: &[X509], key: &PKey<Private>) -> Result<SslAcceptor, SipTlsError> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    let mut certs = chain.iter();
    if let Some(leaf) = certs.next() {
        b.set_certificate(leaf)?;
        if leaf.not_after() < Asn1Time::days_from_now(0)? {
            warn!(not_after = %leaf.not_after(), "the SIP TLS certificate has expired: phones will refuse it");
        }
    }
    for c in certs {
        b.add_extra_chain_cert(c.clone())?;
    }
    b.set_private_key(key)?;
    b.check_private_key()?;
    Ok(b.build())
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, SipTlsError> {
    std::fs::read(path).map_err(|source| SipTlsError::Read { key, path: path.to_owned(), source })
}

/// The leaf first, then any intermediates (a `fullchain.pem`).
fn read_chain(path: &Path) -> Result<Vec<X509>, SipTlsError> {
    let pem = read("tls_cert", path)?;
    let no_cert = |reason: String| SipTlsError::NoCertificate { path: path.to_owned(), reason };
    let chain = X509::stack_from_pem(&pem).map_err(|e| no_cert(e.to_string()))?;
    if chain.is_empty() {
        return Err(no_cert("no BEGIN CERTIFICATE block".into()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PKey<Private>, SipTlsError> {
    let pem = read("tls_key", path)?;
    PKey::private_key_from_pem(&pem).map_err(|e| SipTlsError::NoKey { path: path.to_owned(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::{KeyAlgorithm, KeyPair, OverlayCa};
    use crate::wire::NodeId;

    fn overlay_sec() -> LinkSecurity {
        let ca_key = KeyPair::generate(KeyAlgorithm::EcdsaP256Sha256).unwrap();
        let ca = OverlayCa::create("test.overlay", ca_key, 0, 4_000_000_000).unwrap();
        let key = KeyPair::generate(KeyAlgorithm::EcdsaP256Sha256).unwrap();
        let cert = ca.issue(&key.spki_der(), Some("n@test.overlay"), &[NodeId([7; 16])], 0, 4_000_000_000).unwrap();
        LinkSecurity {
            overlay: "test.overlay".into(),
            ca_der: ca.cert_der().to_vec(),
            cert_der: cert,
            key_pkcs8: key.to_pkcs8_der(),
            max_message_size: 16 * 1024,
        }
    }

    fn pem_pair(name: &str) -> (String, String) {
        let k = rcgen::KeyPair::generate().unwrap();
        let c = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap().self_signed(&k).unwrap();
        (c.pem(), k.serialize_pem())
    }

    fn settings(cert: Option<&str>, key: Option<&str>) -> SipSettings {
        SipSettings { tls_cert: cert.map(Into::into), tls_key: key.map(Into::into), ..SipSettings::default() }
    }

    fn leaf_der(a: &SslAcceptor) -> Vec<u8> {
        a.context().certificate().unwrap().to_der().unwrap()
    }

    #[test]
    fn without_files_the_overlay_certificate_is_shown() {
        let sec = overlay_sec();
        let a = acceptor(&settings(None, None), Path::new("/nonexistent"), &sec).unwrap();
        assert_eq!(leaf_der(&a), sec.cert_der);
    }

    #[test]
    fn configured_pem_files_are_read_relative_to_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pem_pair("sip.example.org");
        let (inter, _) = pem_pair("intermediate");
        std::fs::write(dir.path().join("fullchain.pem"), format!("{cert}{inter}")).unwrap();
        std::fs::write(dir.path().join("privkey.pem"), key).unwrap();
        let s = settings(Some("fullchain.pem"), Some("privkey.pem"));
        let a = acceptor(&s, dir.path(), &overlay_sec()).unwrap();
        assert_eq!(leaf_der(&a), X509::from_pem(cert.as_bytes()).unwrap().to_der().unwrap());
        assert_eq!(a.context().extra_chain_certs().len(), 1);
    }

    #[test]
    fn problems_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let sec = overlay_sec();
        let (cert, key) = pem_pair("a.example.org");
        let (_, other_key) = pem_pair("b.example.org");
        std::fs::write(dir.path().join("cert.pem"), &cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), &key).unwrap();
        std::fs::write(dir.path().join("other.pem"), &other_key).unwrap();
        std::fs::write(dir.path().join("junk.pem"), "not pem").unwrap();
        let err = |c: Option<&str>, k: Option<&str>| acceptor(&settings(c, k), dir.path(), &sec).err().unwrap();

        let e = err(Some("missing.pem"), Some("key.pem"));
        assert!(matches!(e, SipTlsError::Read { key: "tls_cert", .. }), "{e}");
        assert!(e.to_string().contains("missing.pem") && e.to_string().contains("No such file"), "{e}");
        let e = err(Some("cert.pem"), Some("missing.pem"));
        assert!(matches!(e, SipTlsError::Read { key: "tls_key", .. }), "{e}");
        let e = err(Some("junk.pem"), Some("key.pem"));
        assert!(matches!(e, SipTlsError::NoCertificate { .. }), "{e}");
        let e = err(Some("cert.pem"), Some("junk.pem"));
        assert!(matches!(e, SipTlsError::NoKey { .. }), "{e}");
        let e = err(Some("cert.pem"), Some("other.pem")).to_string();
        assert!(e.contains("other.pem does not match the certificate in tls_cert") && e.contains("cert.pem"), "{e}");
        let e = err(Some("cert.pem"), None).to_string();
        assert_eq!(e, "[sip] tls_cert is set but tls_key is not: set both or neither");
        assert!(matches!(err(None, Some("key.pem")), SipTlsError::HalfConfigured { present: "tls_key", .. }));
    }
}
