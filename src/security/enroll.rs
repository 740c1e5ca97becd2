//! The CA side of certificate enrollment (RFC 6940 §11.3), without the
//! network: PKCS#10 requests (RFC 2986) made and checked, the enrollment
//! policy (how many Node-IDs, which user names), and the certificate the
//! overlay CA issues for a request. The HTTPS exchange around it is the
//! runtime's (`node::enroll`).
//!
//! Sans-IO: wall time is an argument and every random choice (Node-IDs,
//! serial numbers) comes from the caller's `rng`; only key generation draws
//! on the OS.

use std::fmt;
use std::net::IpAddr;

use rand::Rng;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyUsagePurpose, SanType,
    SerialNumber,
};
use thiserror::Error;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use super::{KeyAlgorithm, KeyPair, OverlayCa, SecurityError};
use crate::wire::{NODE_ID_LEN, NodeId};

/// Most Node-IDs one certificate may carry.
pub const MAX_NODE_IDS: u32 = 16;
/// Validity of a certificate from [`issue_local`]: one year.
pub const DEFAULT_VALIDITY_S: u64 = 365 * 24 * 3600;
/// Issued certificates start this long before the issuing time, so a
/// client whose clock is a little behind the server's accepts them.
pub const CLOCK_SKEW_S: u64 = 300;
/// Longest user name: RFC 5321's path limit.
const MAX_USER_NAME: usize = 254;

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

/// Why a request could not be made or a certificate not issued.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IssueError {
    /// A received PKCS#10 request is unusable (§11.3 `bad_CSR`).
    #[error("bad CSR: {0}")]
    BadCsr(String),
    /// A PKCS#10 request could not be made.
    #[error("cannot build CSR: {0}")]
    CsrBuild(String),
    /// Outside 1..=[`MAX_NODE_IDS`] (§11.3 `Node-IDs_not_available`).
    #[error("cannot issue {0} Node-IDs: 1 to {MAX_NODE_IDS} per certificate")]
    NodeIdCount(u32),
    /// A user name that cannot be an rfc822Name.
    #[error("bad user name {name:?}: {reason}")]
    BadUserName { name: String, reason: &'static str },
    /// Key generation or issuing failed.
    #[error(transparent)]
    Security(#[from] SecurityError),
}

/// A PKCS#10 request (RFC 2986) for `key`, signed by it. The subject DN
/// is empty; `user`, if given, goes in as an rfc822Name SubjectAltName. The
/// server ignores both (it certifies the name it authenticated) but they
/// make the request self-describing.
pub fn csr_der(key: &KeyPair, user: Option<&str>) -> Result<Vec<u8>, IssueError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if let Some(u) = user {
        validate_user_name(u)?;
        let name = u.try_into().map_err(|e: rcgen::Error| IssueError::CsrBuild(e.to_string()))?;
        params.subject_alt_names = vec![SanType::Rfc822Name(name)];
    }
    let csr = params.serialize_request(key.rcgen()).map_err(|e| IssueError::CsrBuild(e.to_string()))?;
    Ok(csr.der().to_vec())
}

/// The SubjectPublicKeyInfo (DER) of a PKCS#10 request, after checking
/// that the request is well-formed, signed by that key and for a key type
/// RELOAD nodes use (RSA, ECDSA P-256, Ed25519).
pub fn csr_public_key(csr_der: &[u8]) -> Result<Vec<u8>, IssueError> {
    let (rest, csr) = X509CertificationRequest::from_der(csr_der)
        .map_err(|e| IssueError::BadCsr(format!("not a DER PKCS#10 request ({e})")))?;
    if !rest.is_empty() {
        return Err(IssueError::BadCsr(format!("{} bytes after the request", rest.len())));
    }
    csr.verify_signature().map_err(|e| IssueError::BadCsr(format!("self-signature does not verify ({e})")))?;
    let spki = csr.certification_request_info.subject_pki.raw.to_vec();
    KeyAlgorithm::of_spki(&spki)
        .map_err(|_| IssueError::BadCsr("unsupported key type (RSA, ECDSA P-256 or Ed25519 only)".into()))?;
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
) -> Result<(Vec<u8>, Vec<NodeId>), IssueError> {
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
/// operator): a fresh `key_alg` key and one Node-ID drawn from `rng`,
/// valid for [`DEFAULT_VALIDITY_S`]. EcdsaP256Sha256 is the usual node
/// key: small, fast, and accepted by OpenSSL for TLS and DTLS.
pub fn issue_local(
    ca: &OverlayCa,
    user: Option<&str>,
    key_alg: KeyAlgorithm,
    now_unix_s: u64,
    rng: &mut impl Rng,
) -> Result<Enrollment, IssueError> {
    if let Some(u) = user {
        validate_user_name(u)?;
    }
    let key = KeyPair::generate(key_alg)?;
    let node_ids = random_node_ids(1, rng);
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
/// name or an IP address, IPv6 with or without brackets), issued by the
/// overlay CA so that clients, which trust only the overlay root, accept
/// it (RFC 9110 §4.3.4 host check against the SubjectAltName). Returns the
/// certificate DER and a fresh ECDSA P-256 key as PKCS#8 DER; the serial
/// number comes from `rng`.
pub fn server_tls_identity(
    ca: &OverlayCa,
    host: &str,
    now_unix_s: u64,
    validity_s: u64,
    rng: &mut impl Rng,
) -> Result<(Vec<u8>, Vec<u8>), IssueError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let key = KeyPair::generate(KeyAlgorithm::EcdsaP256Sha256)?;
    let issue = |e: rcgen::Error| IssueError::Security(SecurityError::Issue(e.to_string()));
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
    rng.fill_bytes(&mut serial);
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

/// The policy on Node-ID counts: 1 to [`MAX_NODE_IDS`] per certificate.
pub fn check_node_id_count(n: u32) -> Result<(), IssueError> {
    if n == 0 || n > MAX_NODE_IDS { Err(IssueError::NodeIdCount(n)) } else { Ok(()) }
}

/// A user name becomes the certificate's rfc822Name, an IA5String: ASCII
/// without spaces or control characters, at most 254 octets (RFC 5321's
/// path limit).
pub fn validate_user_name(name: &str) -> Result<(), IssueError> {
    let bad = |reason| Err(IssueError::BadUserName { name: name.to_owned(), reason });
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_USER_NAME {
        return bad("longer than 254 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return bad("only printable ASCII without spaces is allowed");
    }
    Ok(())
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

fn unix_time(secs: u64) -> Result<time::OffsetDateTime, IssueError> {
    let s = i64::try_from(secs).map_err(|_| SecurityError::Issue("time out of range".into()))?;
    Ok(time::OffsetDateTime::from_unix_timestamp(s).map_err(|e| SecurityError::Issue(e.to_string()))?)
}

#[cfg(test)]
mod tests {
    use openssl::x509::X509;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::security::{SelfSignedDigest, self_signed_node_id, verify_chain};

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
            assert_eq!(r, Err(IssueError::NodeIdCount(bad)));
        }
        let (_, ids) = issue_from_csr(&ca, &csr, None, MAX_NODE_IDS, T0, YEAR, &mut rng).unwrap();
        assert_eq!(ids.len(), MAX_NODE_IDS as usize);
    }

    fn bad_csr(csr: &[u8]) -> String {
        let r = issue_from_csr(&ca(), csr, None, 1, T0, YEAR, &mut StdRng::seed_from_u64(1));
        match r {
            Err(IssueError::BadCsr(d)) => d,
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
        let mut rng = StdRng::seed_from_u64(4);
        let e = issue_local(&ca, Some("bob@example.org"), KeyAlgorithm::EcdsaP256Sha256, T0, &mut rng).unwrap();
        let id = verify_chain(&e.cert_der, &e.ca_der, T0 + 5, OVERLAY).unwrap();
        assert_eq!(id.node_ids, e.node_ids);
        assert_eq!(e.node_ids.len(), 1);
        assert_eq!(id.user.as_deref(), Some("bob@example.org"));
        assert_eq!(KeyPair::from_pkcs8_der(&e.key_pkcs8).unwrap().spki_der(), id.spki_der);
        assert!(!format!("{e:?}").contains("key_pkcs8"));
        assert!(matches!(
            issue_local(&ca, Some("bob smith"), KeyAlgorithm::Ed25519, T0, &mut rng),
            Err(IssueError::BadUserName { .. })
        ));
    }

    #[test]
    fn user_names_are_printable_ascii() {
        assert!(validate_user_name("alice@example.org").is_ok());
        for bad in ["", "has space", "é@example.org", "tab\there"] {
            assert!(matches!(validate_user_name(bad), Err(IssueError::BadUserName { .. })), "{bad:?}");
        }
        assert!(validate_user_name(&"a".repeat(MAX_USER_NAME)).is_ok());
        assert!(validate_user_name(&"a".repeat(MAX_USER_NAME + 1)).is_err());
    }

    #[test]
    fn server_identity_names_the_host() {
        let ca = ca();
        let mut rng = StdRng::seed_from_u64(5);
        for host in ["127.0.0.1", "enroll.example.org", "[::1]"] {
            let (cert, key) = server_tls_identity(&ca, host, T0, YEAR, &mut rng).unwrap();
            let x = X509::from_der(&cert).unwrap();
            let sans = x.subject_alt_names().unwrap();
            let san = sans.iter().next().unwrap();
            match host.trim_matches(['[', ']']).parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) => assert_eq!(san.ipaddress(), Some(&ip.octets()[..])),
                Ok(IpAddr::V6(ip)) => assert_eq!(san.ipaddress(), Some(&ip.octets()[..])),
                Err(_) => assert_eq!(san.dnsname(), Some(host)),
            }
            // Signed by the overlay root, and the key is the certificate's.
            let root = X509::from_der(ca.cert_der()).unwrap();
            assert!(x.verify(&root.public_key().unwrap()).unwrap());
            let spki = KeyPair::from_pkcs8_der(&key).unwrap().spki_der();
            assert_eq!(x.public_key().unwrap().public_key_to_der().unwrap(), spki);
        }
    }
}
