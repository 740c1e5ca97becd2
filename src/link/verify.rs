//! The certificate side of both link kinds: OpenSSL contexts carrying our
//! certificate, and the §11.3 check of the peer's, with wall time as input.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openssl::pkey::PKey;
use openssl::ssl::{Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslSessionCacheMode, SslVerifyMode};
use openssl::x509::X509;

use super::{LinkError, LinkKind, LinkSecurity, PeerIdentity};
use crate::security::{SecurityError, verify_chain};
use crate::wire::NodeId;

/// Wall time (Unix seconds) for certificate validity, set by the owner:
/// OpenSSL's verify callback reads it in the middle of a handshake.
#[derive(Debug, Clone, Default)]
pub struct WallClock(Arc<AtomicU64>);

impl WallClock {
    pub fn new(unix_secs: u64) -> Self {
        WallClock(Arc::new(AtomicU64::new(unix_secs)))
    }

    pub fn set(&self, unix_secs: u64) {
        self.0.store(unix_secs, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// An OpenSSL context for `kind` carrying our certificate and key, asking
/// for (and accepting any) peer certificate: the real check is per
/// connection, see [`new_ssl`].
pub fn base_context(kind: LinkKind, sec: &LinkSecurity) -> Result<SslContextBuilder, LinkError> {
    let (method, min) = match kind {
        LinkKind::TlsTcpFhNoIce => (SslMethod::tls(), openssl::ssl::SslVersion::TLS1_2),
        LinkKind::DtlsUdpSrNoIce => (SslMethod::dtls(), openssl::ssl::SslVersion::DTLS1_2),
    };
    let mut b = SslContextBuilder::new(method)?;
    b.set_min_proto_version(Some(min))?;
    let cert = X509::from_der(&sec.cert_der)?;
    let key = private_key(&sec.key_pkcs8)?;
    b.set_certificate(&cert)?;
    b.set_private_key(&key)?;
    b.check_private_key()?;
    b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    // Every link shows its certificate afresh: no resumption, so the
    // identity check always sees the peer's current certificate.
    b.set_session_cache_mode(SslSessionCacheMode::OFF);
    b.set_options(SslOptions::NO_TICKET | SslOptions::NO_RENEGOTIATION);
    b.set_num_tickets(0)?;
    Ok(b)
}

/// Reads our PKCS#8 key. OpenSSL 3.0 cannot read the PKCS#8 v2
/// (RFC 5958, with the public key) that `ring` writes for Ed25519, so an
/// Ed25519 key it refuses is loaded from its 32-byte seed instead.
pub fn private_key(der: &[u8]) -> Result<PKey<openssl::pkey::Private>, LinkError> {
    match PKey::private_key_from_pkcs8(der) {
        Ok(k) => Ok(k),
        Err(e) => match ed25519_seed(der) {
            Some(seed) => Ok(PKey::private_key_from_raw_bytes(seed, openssl::pkey::Id::ED25519)?),
            None => Err(e.into()),
        },
    }
}

/// The seed of an Ed25519 PKCS#8 key (RFC 8410 §7): the algorithm OID
/// 1.3.101.112, then `privateKey OCTET STRING { CurvePrivateKey OCTET
/// STRING (32) }`.
fn ed25519_seed(der: &[u8]) -> Option<&[u8]> {
    const OID: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];
    const KEY: [u8; 4] = [0x04, 0x22, 0x04, 0x20];
    let after_oid = der.windows(OID.len()).position(|w| w == OID)? + OID.len();
    let rest = der.get(after_oid..)?;
    let at = rest.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    rest.get(at..at + 32)
}

/// Where the verify callback leaves the reason it refused a certificate.
pub type VerifySlot = Arc<Mutex<Option<SecurityError>>>;

/// A connection object whose verify callback runs our §11.3 check on the
/// peer's end-entity certificate at `wall` time, so a refused peer gets an
/// alert.
pub fn new_ssl(ctx: &SslContext, sec: &Arc<LinkSecurity>, wall: &WallClock) -> Result<(Ssl, VerifySlot), LinkError> {
    let mut ssl = Ssl::new(ctx)?;
    let slot: VerifySlot = Arc::new(Mutex::new(None));
    let (s, sec, wall) = (slot.clone(), sec.clone(), wall.clone());
    ssl.set_verify_callback(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT, move |_, store| {
        // OpenSSL has no trust store here and so always "fails"; only our
        // verdict on the peer's own certificate (depth 0) counts.
        if store.error_depth() != 0 {
            return true;
        }
        let Some(der) = store.current_cert().and_then(|c| c.to_der().ok()) else { return false };
        match verify_chain(&der, &sec.ca_der, wall.get(), &sec.overlay) {
            Ok(_) => true,
            Err(e) => {
                if let Ok(mut g) = s.lock() {
                    *g = Some(e);
                }
                false
            }
        }
    });
    Ok((ssl, slot))
}

/// A handshake error, replaced by the certificate verdict when that is
/// what failed it.
pub fn handshake_error(e: impl std::fmt::Display, slot: &VerifySlot) -> LinkError {
    match slot.lock().ok().and_then(|mut g| g.take()) {
        Some(reason) => LinkError::Certificate(reason),
        None => LinkError::Handshake(e.to_string()),
    }
}

/// The identity of a finished handshake's peer (§6.6.1: the link is bound
/// to the certificate's Node-IDs), checking `expected` when dialing.
pub fn peer_identity(
    ssl: &openssl::ssl::SslRef,
    sec: &LinkSecurity,
    expected: Option<NodeId>,
    wall_secs: u64,
) -> Result<PeerIdentity, LinkError> {
    let cert = ssl.peer_certificate().ok_or(LinkError::NoCertificate)?;
    let der = cert.to_der()?;
    let id = verify_chain(&der, &sec.ca_der, wall_secs, &sec.overlay)?;
    if let Some(want) = expected
        && !id.node_ids.contains(&want)
    {
        return Err(LinkError::WrongNodeId { expected: want, found: id.node_ids.iter().map(|n| n.to_hex()).collect() });
    }
    Ok(PeerIdentity { node_ids: id.node_ids, user: id.user, cert_der: der })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_type_loads_into_openssl() {
        use crate::security::{KeyAlgorithm, KeyPair};
        for alg in [KeyAlgorithm::EcdsaP256Sha256, KeyAlgorithm::Ed25519] {
            let k = KeyPair::generate(alg).unwrap();
            let pkey = private_key(&k.to_pkcs8_der()).unwrap();
            // The same key: OpenSSL derives the public half we know.
            assert_eq!(pkey.public_key_to_der().unwrap(), k.spki_der(), "{alg:?}");
        }
        assert!(private_key(b"not a key").is_err());
    }
}
