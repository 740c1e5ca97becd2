//! The overlay's enrollment CA (RFC 6940 §11.3) and self-signed
//! certificates (§11.3.1), both made with rcgen.
//!
//! The HTTPS enrollment exchange is the runtime's business; this is the
//! part that turns a public key, a user name and Node-IDs into a
//! certificate.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyUsagePurpose, SanType,
    SerialNumber,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::cert::{node_id_uri, parse_cert};
use super::error::SecurityError;
use super::keys::{KeyPair, SubjectKey};
use crate::wire::NodeId;

/// An overlay's certificate authority: a self-signed CA certificate and
/// its key. Persist it as [`OverlayCa::cert_der`] plus the key's PKCS#8.
#[derive(Debug)]
pub struct OverlayCa {
    overlay: String,
    cert_der: Vec<u8>,
    key: KeyPair,
}

impl OverlayCa {
    /// A new root for `overlay_name`, valid between the two Unix times.
    pub fn create(overlay_name: &str, key: KeyPair, not_before: u64, not_after: u64) -> Result<Self, SecurityError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{overlay_name} enrollment CA"));
        params.distinguished_name = dn;
        // §11.3: clients check the chain "including BasicConstraints".
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = unix_time(not_before)?;
        params.not_after = unix_time(not_after)?;
        params.serial_number = Some(serial(&[&key.spki_der(), overlay_name.as_bytes(), &not_before.to_be_bytes()]));
        let cert = params.self_signed(key.rcgen()).map_err(issue_err)?;
        Ok(OverlayCa { overlay: overlay_name.to_owned(), cert_der: cert.der().to_vec(), key })
    }

    /// Reloads a persisted CA, checking that the key is the certificate's.
    pub fn from_parts(overlay_name: &str, cert_der: Vec<u8>, key_pkcs8: &[u8]) -> Result<Self, SecurityError> {
        let key = KeyPair::from_pkcs8_der(key_pkcs8)?;
        let matches = parse_cert(&cert_der)?.public_key().raw == key.spki_der().as_slice();
        if !matches {
            return Err(SecurityError::Key("CA key does not match its certificate".into()));
        }
        Ok(OverlayCa { overlay: overlay_name.to_owned(), cert_der, key })
    }

    /// The root certificate (the overlay configuration's `root-cert`).
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    pub fn key(&self) -> &KeyPair {
        &self.key
    }

    pub fn overlay_name(&self) -> &str {
        &self.overlay
    }

    /// Issues a certificate for `subject_spki_der` (§11.3): an empty
    /// subject DN, one `reload://` URI per Node-ID and the user name as the
    /// single rfc822Name. The caller has already authenticated the user and
    /// picked the Node-IDs (randomly, §11.3).
    pub fn issue(
        &self,
        subject_spki_der: &[u8],
        user: Option<&str>,
        node_ids: &[NodeId],
        not_before: u64,
        not_after: u64,
    ) -> Result<Vec<u8>, SecurityError> {
        let subject = SubjectKey::from_spki_der(subject_spki_der)?;
        let mut params = leaf_params(&self.overlay, user, node_ids, not_before, not_after)?;
        params.serial_number = Some(serial(&[
            subject_spki_der,
            &not_before.to_be_bytes(),
            &not_after.to_be_bytes(),
            &node_ids.iter().flat_map(|n| n.0).collect::<Vec<u8>>(),
        ]));
        // Lets a verifier tell "another CA" from "forged signature".
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_ca_cert_der(&self.cert_der.as_slice().into(), self.key.rcgen()).map_err(issue_err)?;
        let cert = params.signed_by(&subject, &issuer).map_err(issue_err)?;
        Ok(cert.der().to_vec())
    }
}

/// A self-signed certificate (§11.3.1) for `key`. The Node-IDs should be
/// derived with [`super::self_signed_node_id`] so verifiers accept them.
pub fn self_signed_certificate(
    key: &KeyPair,
    overlay_name: &str,
    user: Option<&str>,
    node_ids: &[NodeId],
    not_before: u64,
    not_after: u64,
) -> Result<Vec<u8>, SecurityError> {
    let mut params = leaf_params(overlay_name, user, node_ids, not_before, not_after)?;
    params.serial_number = Some(serial(&[&key.spki_der(), &not_before.to_be_bytes()]));
    let cert = params.self_signed(key.rcgen()).map_err(issue_err)?;
    Ok(cert.der().to_vec())
}

fn leaf_params(
    overlay: &str,
    user: Option<&str>,
    node_ids: &[NodeId],
    not_before: u64,
    not_after: u64,
) -> Result<CertificateParams, SecurityError> {
    if node_ids.is_empty() {
        return Err(SecurityError::NoNodeId);
    }
    let mut params = CertificateParams::default();
    // §11.3: the subject DN is empty; identity lives in SubjectAltName
    // (which rcgen then marks critical, as RFC 5280 §4.2.1.6 requires).
    params.distinguished_name = DistinguishedName::new();
    let mut sans = Vec::with_capacity(node_ids.len() + 1);
    for n in node_ids {
        sans.push(SanType::URI(node_id_uri(n, overlay).try_into().map_err(issue_err)?));
    }
    if let Some(u) = user {
        sans.push(SanType::Rfc822Name(u.try_into().map_err(issue_err)?));
    }
    params.subject_alt_names = sans;
    params.not_before = unix_time(not_before)?;
    params.not_after = unix_time(not_after)?;
    Ok(params)
}

/// A positive 128-bit serial derived from what makes the certificate
/// unique, so issuing needs no random source.
fn serial(parts: &[&[u8]]) -> SerialNumber {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let d = h.finalize();
    let mut s = d.get(..16).map(<[u8]>::to_vec).unwrap_or_default();
    if let Some(first) = s.first_mut() {
        // Positive and without a leading zero octet: 1xxxxxxx is negative
        // in DER INTEGER, 0 would shorten the number.
        *first = (*first & 0x7f) | 0x40;
    }
    SerialNumber::from_slice(&s)
}

fn unix_time(secs: u64) -> Result<OffsetDateTime, SecurityError> {
    let s = i64::try_from(secs).map_err(|_| SecurityError::Issue("time out of range".into()))?;
    OffsetDateTime::from_unix_timestamp(s).map_err(|e| SecurityError::Issue(e.to_string()))
}

fn issue_err(e: rcgen::Error) -> SecurityError {
    SecurityError::Issue(e.to_string())
}

#[cfg(test)]
mod tests {
    use x509_parser::extensions::GeneralName;

    use super::super::cert::{SelfSignedDigest, self_signed_node_id, verify_chain, verify_self_signed};
    use super::super::keys::KeyAlgorithm;
    use super::super::keys::test_keys::{ALL, key};
    use super::*;

    const OVERLAY: &str = "overlay.example.org";
    const T0: u64 = 1_700_000_000;
    const YEAR: u64 = 365 * 24 * 3600;

    fn ca(alg: KeyAlgorithm) -> OverlayCa {
        OverlayCa::create(OVERLAY, key(alg), T0 - 10, T0 + 10 * YEAR).unwrap()
    }

    #[test]
    fn issued_certificate_verifies_for_every_key_type() {
        for ca_alg in ALL {
            let ca = ca(ca_alg);
            for alg in ALL {
                let subject = key(alg);
                let ids = [NodeId::from_u128(1), NodeId::from_u128(u128::MAX - 5)];
                let der = ca.issue(&subject.spki_der(), Some("alice@example.org"), &ids, T0, T0 + YEAR).unwrap();
                let id = verify_chain(&der, ca.cert_der(), T0 + 100, OVERLAY).unwrap();
                assert_eq!(id.node_ids, ids);
                assert_eq!(id.user.as_deref(), Some("alice@example.org"));
                assert_eq!(id.spki_der, subject.spki_der());
                assert_eq!(id.algorithm, subject.signature_algorithm());
                assert_eq!(id.cert_der, der);
            }
        }
    }

    #[test]
    fn certificate_layout_follows_section_11_3() {
        let ca = ca(KeyAlgorithm::Ed25519);
        let n = NodeId::from_u128(0xabcdef);
        let der = ca.issue(&key(KeyAlgorithm::Ed25519).spki_der(), Some("bob@example.org"), &[n], T0, T0 + 1).unwrap();
        let cert = parse_cert(&der).unwrap();
        assert!(cert.subject().as_raw().len() <= 2, "empty subject DN");
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert!(san.critical);
        let uri = format!("reload://0110{}abcdef@overlay.example.org/", "0".repeat(26));
        assert_eq!(san.value.general_names, vec![GeneralName::URI(&uri), GeneralName::RFC822Name("bob@example.org")]);
    }

    #[test]
    fn another_cas_certificate_is_wrong_ca() {
        let ours = ca(KeyAlgorithm::Ed25519);
        let theirs = OverlayCa::create("other.example.org", key(KeyAlgorithm::EcdsaP256Sha256), T0, T0 + YEAR).unwrap();
        let der = theirs.issue(&key(KeyAlgorithm::Ed25519).spki_der(), None, &[NodeId::from_u128(3)], T0, T0 + YEAR);
        let r = verify_chain(&der.unwrap(), ours.cert_der(), T0 + 1, OVERLAY);
        assert_eq!(r, Err(SecurityError::WrongCa));
        // Same name, different key: caught by the key identifiers.
        let twin = OverlayCa::create(OVERLAY, key(KeyAlgorithm::EcdsaP256Sha256), T0 - 10, T0 + YEAR).unwrap();
        let der = twin.issue(&key(KeyAlgorithm::Ed25519).spki_der(), None, &[NodeId::from_u128(3)], T0, T0 + YEAR);
        assert_eq!(verify_chain(&der.unwrap(), ours.cert_der(), T0 + 1, OVERLAY), Err(SecurityError::WrongCa));
    }

    #[test]
    fn validity_period_is_enforced() {
        let ca = ca(KeyAlgorithm::EcdsaP256Sha256);
        let der = ca.issue(&key(KeyAlgorithm::Ed25519).spki_der(), None, &[NodeId::from_u128(9)], T0, T0 + 60).unwrap();
        assert!(verify_chain(&der, ca.cert_der(), T0 + 60, OVERLAY).is_ok());
        assert_eq!(
            verify_chain(&der, ca.cert_der(), T0 + 61, OVERLAY),
            Err(SecurityError::Expired { not_after: (T0 + 60) as i64, now: T0 + 61 })
        );
        assert_eq!(
            verify_chain(&der, ca.cert_der(), T0 - 1, OVERLAY),
            Err(SecurityError::NotYetValid { not_before: T0 as i64, now: T0 - 1 })
        );
    }

    #[test]
    fn tampered_signature_is_rejected() {
        let ca = ca(KeyAlgorithm::RsaPkcs1Sha256);
        let mut der =
            ca.issue(&key(KeyAlgorithm::Ed25519).spki_der(), None, &[NodeId::from_u128(9)], T0, T0 + 60).unwrap();
        if let Some(b) = der.last_mut() {
            *b ^= 0x01;
        }
        assert_eq!(verify_chain(&der, ca.cert_der(), T0, OVERLAY), Err(SecurityError::BadCertificateSignature));
    }

    #[test]
    fn wrong_overlay_and_non_ca_root() {
        let ca = ca(KeyAlgorithm::Ed25519);
        let der = ca.issue(&key(KeyAlgorithm::Ed25519).spki_der(), None, &[NodeId::from_u128(9)], T0, T0 + 60).unwrap();
        assert_eq!(
            verify_chain(&der, ca.cert_der(), T0, "elsewhere.org"),
            Err(SecurityError::WrongOverlay { expected: "elsewhere.org".into(), found: OVERLAY.into() })
        );
        // A leaf certificate is no root.
        assert_eq!(verify_chain(&der, &der, T0, OVERLAY), Err(SecurityError::RootNotCa));
        assert_eq!(
            ca.issue(&key(KeyAlgorithm::Ed25519).spki_der(), None, &[], T0, T0 + 60),
            Err(SecurityError::NoNodeId)
        );
    }

    #[test]
    fn ca_survives_persistence() {
        let ca = ca(KeyAlgorithm::RsaPkcs1Sha256);
        let again = OverlayCa::from_parts(OVERLAY, ca.cert_der().to_vec(), &ca.key().to_pkcs8_der()).unwrap();
        let der =
            again.issue(&key(KeyAlgorithm::Ed25519).spki_der(), None, &[NodeId::from_u128(4)], T0, T0 + 60).unwrap();
        assert!(verify_chain(&der, ca.cert_der(), T0, OVERLAY).is_ok());
        let other_key = key(KeyAlgorithm::Ed25519).to_pkcs8_der();
        assert!(OverlayCa::from_parts(OVERLAY, ca.cert_der().to_vec(), &other_key).is_err());
    }

    #[test]
    fn self_signed_certificates() {
        for alg in ALL {
            let k = key(alg);
            let single = [self_signed_node_id(SelfSignedDigest::Sha256, &k.spki_der(), None)];
            let der = self_signed_certificate(&k, OVERLAY, Some("carol@example.org"), &single, T0, T0 + 60).unwrap();
            let id = verify_self_signed(&der, T0, OVERLAY, SelfSignedDigest::Sha256).unwrap();
            assert_eq!(id.node_ids, single);
            assert!(matches!(
                verify_self_signed(&der, T0, OVERLAY, SelfSignedDigest::Sha1),
                Err(SecurityError::NodeIdMismatch(_))
            ));
            let multi: Vec<NodeId> =
                (0..3).map(|i| self_signed_node_id(SelfSignedDigest::Sha1, &k.spki_der(), Some(i))).collect();
            let der = self_signed_certificate(&k, OVERLAY, None, &multi, T0, T0 + 60).unwrap();
            assert_eq!(verify_self_signed(&der, T0, OVERLAY, SelfSignedDigest::Sha1).unwrap().node_ids, multi);
            let chosen = [NodeId::from_u128(42)];
            let der = self_signed_certificate(&k, OVERLAY, None, &chosen, T0, T0 + 60).unwrap();
            assert_eq!(
                verify_self_signed(&der, T0, OVERLAY, SelfSignedDigest::Sha256),
                Err(SecurityError::NodeIdMismatch(chosen[0]))
            );
        }
    }
}
