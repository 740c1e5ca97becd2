//! What a RELOAD certificate says (RFC 6940 §11.3) and whether to believe
//! it: the `reload://` SubjectAltName URIs naming Node-IDs, the rfc822Name
//! user name, the chain to the overlay's root, and the self-signed
//! alternative (§11.3.1).

use sha1::Sha1;
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{OID_PKCS1_SHA256WITHRSA, OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ED25519};

use super::error::SecurityError;
use super::keys::KeyAlgorithm;
use crate::wire::security_block::SignatureAndHashAlgorithm;
use crate::wire::{Codec, Destination, NODE_ID_LEN, NodeId, Reader};

/// What a verified certificate vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdentity {
    /// The Node-IDs of the `reload://` URIs, in certificate order.
    pub node_ids: Vec<NodeId>,
    /// The rfc822Name (user name, also the SIP AOR), when present.
    pub user: Option<String>,
    /// The subject's key, DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// The algorithm signatures by this key carry.
    pub algorithm: SignatureAndHashAlgorithm,
    /// The certificate itself (what `cert_hash` identities hash).
    pub cert_der: Vec<u8>,
    /// Validity period, seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
}

impl VerifiedIdentity {
    /// Whether `now` falls in the validity period; stored data is checked
    /// against it when read, not only when stored (§7.1).
    pub fn is_valid_at(&self, now: u64) -> bool {
        validity_error(self.not_before, self.not_after, now).is_none()
    }

    /// [`Self::is_valid_at`] saying which bound `now` is outside of.
    pub fn check_valid_at(&self, now: u64) -> Result<(), SecurityError> {
        validity_error(self.not_before, self.not_after, now).map_or(Ok(()), Err)
    }
}

/// The SubjectAltName URI naming `node_id` in `overlay` (§11.3):
/// `reload://` + lowercase hex of a Destination List holding one node_id
/// Destination (no outer length, §14.15) + `@` + overlay + `/`.
pub fn node_id_uri(node_id: &NodeId, overlay: &str) -> String {
    // Destination{type node(1), length 16, id}: fixed size, cannot fail.
    format!("reload://0110{}@{}/", node_id.to_hex(), overlay)
}

/// Parses a [`node_id_uri`] back into its Node-ID and overlay name.
pub fn parse_node_id_uri(uri: &str) -> Result<(NodeId, String), SecurityError> {
    let bad = || SecurityError::MalformedUri(uri.to_owned());
    let scheme = uri.get(..9).ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("reload://") {
        return Err(bad());
    }
    let rest = uri.get(9..).ok_or_else(bad)?;
    let (dest_hex, after) = rest.split_once('@').ok_or_else(bad)?;
    // §11.3 ends the URI with "/"; tolerate its absence but nothing after it.
    let overlay = after.strip_suffix('/').unwrap_or(after);
    if overlay.is_empty() || overlay.contains('/') {
        return Err(bad());
    }
    let bytes = hex::decode(dest_hex).map_err(|_| bad())?;
    let mut r = Reader::new(&bytes);
    let mut node = None;
    while !r.is_empty() {
        match Destination::decode(&mut r).map_err(|_| bad())? {
            Destination::Node(n) if node.is_none() => node = Some(n),
            _ => return Err(bad()),
        }
    }
    Ok((node.ok_or_else(bad)?, overlay.to_owned()))
}

/// Checks `cert_der` against the overlay's `root_der` at wall time `now`
/// (§11.3: the chain, including BasicConstraints, must lead to a
/// configured root-cert) and returns the identity it carries.
pub fn verify_chain(
    cert_der: &[u8],
    root_der: &[u8],
    now: u64,
    overlay_name: &str,
) -> Result<VerifiedIdentity, SecurityError> {
    let root = parse_cert(root_der)?;
    let cert = parse_cert(cert_der)?;
    let is_ca = root.basic_constraints().ok().flatten().is_some_and(|bc| bc.value.ca);
    if !is_ca {
        return Err(SecurityError::RootNotCa);
    }
    if validity_error(root.validity().not_before.timestamp(), root.validity().not_after.timestamp(), now).is_some() {
        return Err(SecurityError::RootNotValid { now });
    }
    if cert.issuer().as_raw() != root.subject().as_raw() || !key_ids_agree(&cert, &root) {
        return Err(SecurityError::WrongCa);
    }
    check_signature_algorithm(&cert)?;
    cert.verify_signature(Some(root.public_key())).map_err(|_| SecurityError::BadCertificateSignature)?;
    identity_of(&cert, cert_der, now, overlay_name)
}

/// Checks a self-signed certificate (§11.3.1, allowed when the overlay
/// configuration has `self-signed-permitted`): signed by its own key, valid
/// at `now`, and every Node-ID derived from the key by `digest`.
pub fn verify_self_signed(
    cert_der: &[u8],
    now: u64,
    overlay_name: &str,
    digest: SelfSignedDigest,
) -> Result<VerifiedIdentity, SecurityError> {
    let cert = parse_cert(cert_der)?;
    check_signature_algorithm(&cert)?;
    cert.verify_signature(None).map_err(|_| SecurityError::BadCertificateSignature)?;
    let id = identity_of(&cert, cert_der, now, overlay_name)?;
    let single = id.node_ids.len() == 1;
    for (i, n) in id.node_ids.iter().enumerate() {
        let index = if single { None } else { Some(u32::try_from(i).map_err(|_| SecurityError::NodeIdMismatch(*n))?) };
        if self_signed_node_id(digest, &id.spki_der, index) != *n {
            return Err(SecurityError::NodeIdMismatch(*n));
        }
    }
    Ok(id)
}

/// The digest named by the configuration's `self-signed-permitted`
/// element (§11.1): both MUST be supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelfSignedDigest {
    Sha1,
    Sha256,
}

/// The Node-ID of a self-signed certificate (§11.3.1): the high-order
/// 128 bits of digest(SubjectPublicKeyInfo DER). A node with several
/// Node-IDs prepends a 4-byte big-endian index (0, 1, …) to the key before
/// hashing; `index` is `None` for the single-Node-ID form.
pub fn self_signed_node_id(digest: SelfSignedDigest, spki_der: &[u8], index: Option<u32>) -> NodeId {
    let prefix = index.map(u32::to_be_bytes);
    let prefix: &[u8] = prefix.as_ref().map_or(&[], |p| p.as_slice());
    let d: Vec<u8> = match digest {
        SelfSignedDigest::Sha1 => Sha1::new().chain_update(prefix).chain_update(spki_der).finalize().to_vec(),
        SelfSignedDigest::Sha256 => Sha256::new().chain_update(prefix).chain_update(spki_der).finalize().to_vec(),
    };
    let mut id = [0u8; NODE_ID_LEN];
    if let Some(high) = d.get(..NODE_ID_LEN) {
        id.copy_from_slice(high);
    }
    NodeId(id)
}

pub(crate) fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, SecurityError> {
    let (rest, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| SecurityError::MalformedCertificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(SecurityError::MalformedCertificate("trailing bytes after certificate".into()));
    }
    Ok(cert)
}

/// The certificate's validity, Node-IDs and user name.
fn identity_of(
    cert: &X509Certificate<'_>,
    cert_der: &[u8],
    now: u64,
    overlay_name: &str,
) -> Result<VerifiedIdentity, SecurityError> {
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    if let Some(e) = validity_error(not_before, not_after, now) {
        return Err(e);
    }
    let mut node_ids = Vec::new();
    let mut users = Vec::new();
    let san = cert.subject_alternative_name().map_err(|e| SecurityError::MalformedCertificate(e.to_string()))?;
    for name in san.iter().flat_map(|s| s.value.general_names.iter()) {
        match name {
            GeneralName::URI(uri) if uri.get(..9).is_some_and(|s| s.eq_ignore_ascii_case("reload://")) => {
                let (id, overlay) = parse_node_id_uri(uri)?;
                if !overlay.eq_ignore_ascii_case(overlay_name) {
                    return Err(SecurityError::WrongOverlay { expected: overlay_name.to_owned(), found: overlay });
                }
                node_ids.push(id);
            }
            GeneralName::RFC822Name(u) => users.push((*u).to_owned()),
            _ => {}
        }
    }
    if node_ids.is_empty() {
        return Err(SecurityError::NoNodeId);
    }
    // §11.3: exactly one rfc822Name for enrolled users; none is tolerated
    // (a bare node identity), several are not.
    if users.len() > 1 {
        return Err(SecurityError::UserNames(users.len()));
    }
    let spki = cert.public_key();
    let algorithm = KeyAlgorithm::of_parsed_spki(spki)?.signature_algorithm();
    Ok(VerifiedIdentity {
        node_ids,
        user: users.pop(),
        spki_der: spki.raw.to_vec(),
        algorithm,
        cert_der: cert_der.to_vec(),
        not_before,
        not_after,
    })
}

fn validity_error(not_before: i64, not_after: i64, now: u64) -> Option<SecurityError> {
    let t = i64::try_from(now).unwrap_or(i64::MAX);
    if t < not_before {
        Some(SecurityError::NotYetValid { not_before, now })
    } else if t > not_after {
        Some(SecurityError::Expired { not_after, now })
    } else {
        None
    }
}

/// When both sides name key identifiers, they must agree; this tells a
/// certificate of another CA with the same name from a forged signature.
fn key_ids_agree(cert: &X509Certificate<'_>, root: &X509Certificate<'_>) -> bool {
    let aki = cert.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| k.0),
        _ => None,
    });
    let ski = root.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0),
        _ => None,
    });
    match (aki, ski) {
        (Some(a), Some(s)) => a == s,
        _ => true,
    }
}

/// Only the certificate signature algorithms matching the three key types
/// are accepted (x509-parser would also take SHA-1 RSA).
fn check_signature_algorithm(cert: &X509Certificate<'_>) -> Result<(), SecurityError> {
    let oid = &cert.signature_algorithm.algorithm;
    if *oid == OID_PKCS1_SHA256WITHRSA || *oid == OID_SIG_ECDSA_WITH_SHA256 || *oid == OID_SIG_ED25519 {
        Ok(())
    } else {
        Err(SecurityError::MalformedCertificate(format!("unsupported certificate signature algorithm {oid}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_uri_format() {
        let n = NodeId::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let uri = node_id_uri(&n, "overlay.example.org");
        assert_eq!(uri, "reload://01100123456789abcdef0011223344556677@overlay.example.org/");
        assert_eq!(parse_node_id_uri(&uri).unwrap(), (n, "overlay.example.org".to_owned()));
        // Uppercase hex and scheme, no trailing slash.
        let (m, o) = parse_node_id_uri("RELOAD://01100123456789ABCDEF0011223344556677@x").unwrap();
        assert_eq!((m, o.as_str()), (n, "x"));
    }

    #[test]
    fn malformed_uris() {
        let one = format!("0110{}", "00".repeat(16));
        let two = format!("reload://{one}{one}@x/");
        let resource = format!("reload://0211{}{}@x/", "10", "00".repeat(16));
        for bad in [
            "sip:alice@example.org",
            "reload://@x/",
            "reload://0110aa@x/",
            "reload://0110000@x/",
            two.as_str(),
            resource.as_str(),
            "reload://01100123456789abcdef0011223344556677@/",
            "reload://01100123456789abcdef0011223344556677@x/extra",
            "reload://01100123456789abcdef0011223344556677",
        ] {
            assert!(parse_node_id_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn self_signed_node_id_is_high_bits_of_the_digest() {
        let spki = b"not really a key";
        let full = Sha256::digest(spki);
        assert_eq!(self_signed_node_id(SelfSignedDigest::Sha256, spki, None).0, full[..16]);
        let full1 = Sha1::digest(spki);
        assert_eq!(self_signed_node_id(SelfSignedDigest::Sha1, spki, None).0, full1[..16]);
        let mut prefixed = vec![0, 0, 0, 2];
        prefixed.extend_from_slice(spki);
        assert_eq!(self_signed_node_id(SelfSignedDigest::Sha256, spki, Some(2)).0, Sha256::digest(&prefixed)[..16]);
        // Fixed vector: SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223...
        assert_eq!(
            self_signed_node_id(SelfSignedDigest::Sha256, b"abc", None).to_hex(),
            "ba7816bf8f01cfea414140de5dae2223"
        );
    }
}
