//! The certificates a storing peer keeps beside the values it holds.
//!
//! §6.3.4: a message's security block carries every certificate needed to
//! check every signature in it, stored values' included. A storing peer
//! therefore keeps each value signer's certificate and hands it out again
//! with Fetch answers and replica Stores. Certificates are shared between
//! values (one user signs many) and counted, so the last value to go
//! takes its certificate with it.

use std::collections::BTreeMap;

use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::security::seam::Signer;
use crate::wire::security_block::{GenericCertificate, SignerIdentity};

/// Names a certificate in the pool: SHA-256 of its type and bytes.
pub(super) type CertKey = [u8; 32];

pub(super) fn cert_key(cert: &GenericCertificate) -> CertKey {
    Sha256::new().chain_update([cert.cert_type]).chain_update(&cert.cert).finalize().into()
}

/// The certificates of `bucket` that `identity` names (§6.3.4): `cert_hash`
/// is H(certificate), `cert_hash_node_id` is H(Node-ID ‖ certificate) for
/// one of the signer's Node-IDs. When none can be singled out (a hash
/// algorithm we do not know, or a certificate the verifier remembered from
/// earlier), the whole bucket is kept: it holds every certificate needed.
pub(super) fn certs_for(
    identity: &SignerIdentity,
    signer: &Signer,
    bucket: &[GenericCertificate],
) -> Vec<GenericCertificate> {
    let names = |c: &GenericCertificate| match identity {
        SignerIdentity::CertHash { hash_alg, certificate_hash } => {
            hash(*hash_alg, &[&c.cert]).is_some_and(|h| h == *certificate_hash)
        }
        SignerIdentity::CertHashNodeId { hash_alg, certificate_node_id_hash } => signer
            .node_ids
            .iter()
            .any(|n| hash(*hash_alg, &[&n.0, &c.cert]).is_some_and(|h| h == *certificate_node_id_hash)),
        SignerIdentity::None | SignerIdentity::Unknown { .. } => false,
    };
    let named: Vec<GenericCertificate> = bucket.iter().filter(|c| names(c)).cloned().collect();
    if named.is_empty() { bucket.to_vec() } else { named }
}

/// TLS HashAlgorithm code points (RFC 5246 §7.4.1.4.1): sha1(2),
/// sha256(4), sha384(5), sha512(6).
fn hash(alg: u8, parts: &[&[u8]]) -> Option<Vec<u8>> {
    fn digest<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
        let mut d = D::new();
        parts.iter().for_each(|p| d.update(p));
        d.finalize().to_vec()
    }
    match alg {
        2 => Some(digest::<Sha1>(parts)),
        4 => Some(digest::<Sha256>(parts)),
        5 => Some(digest::<Sha384>(parts)),
        6 => Some(digest::<Sha512>(parts)),
        _ => None,
    }
}

/// Reference-counted certificates, one count per held value naming them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct CertPool {
    certs: BTreeMap<CertKey, (GenericCertificate, usize)>,
}

impl CertPool {
    /// Makes `cert` available to [`CertPool::retain`]; unreferenced until then.
    pub(super) fn offer(&mut self, key: CertKey, cert: &GenericCertificate) {
        self.certs.entry(key).or_insert_with(|| (cert.clone(), 0));
    }

    pub(super) fn retain(&mut self, key: &CertKey) {
        if let Some((_, refs)) = self.certs.get_mut(key) {
            *refs += 1;
        }
    }

    pub(super) fn release(&mut self, key: &CertKey) {
        if let Some((_, refs)) = self.certs.get_mut(key) {
            *refs = refs.saturating_sub(1);
        }
        self.prune(key);
    }

    /// Drops `key` if no value names it (an offered certificate never used).
    pub(super) fn prune(&mut self, key: &CertKey) {
        if self.certs.get(key).is_some_and(|(_, refs)| *refs == 0) {
            self.certs.remove(key);
        }
    }

    pub(super) fn get(&self, key: &CertKey) -> Option<&GenericCertificate> {
        self.certs.get(key).map(|(c, _)| c)
    }

    pub(super) fn len(&self) -> usize {
        self.certs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::NodeId;

    fn cert(b: u8) -> GenericCertificate {
        GenericCertificate::x509(vec![b; 4])
    }

    fn signer() -> Signer {
        Signer { node_ids: vec![NodeId::from_u128(1), NodeId::from_u128(2)], user: None }
    }

    #[test]
    fn cert_hash_names_one_certificate() {
        let bucket = [cert(1), cert(2)];
        let id = SignerIdentity::CertHash { hash_alg: 4, certificate_hash: Sha256::digest([2u8; 4]).to_vec() };
        assert_eq!(certs_for(&id, &signer(), &bucket), vec![cert(2)]);
        let sha1 = SignerIdentity::CertHash { hash_alg: 2, certificate_hash: Sha1::digest([1u8; 4]).to_vec() };
        assert_eq!(certs_for(&sha1, &signer(), &bucket), vec![cert(1)]);
    }

    #[test]
    fn cert_hash_node_id_uses_the_signer_node_ids() {
        let bucket = [cert(1), cert(2)];
        let h = Sha256::new().chain_update(NodeId::from_u128(2).0).chain_update([1u8; 4]).finalize();
        let id = SignerIdentity::CertHashNodeId { hash_alg: 4, certificate_node_id_hash: h.to_vec() };
        assert_eq!(certs_for(&id, &signer(), &bucket), vec![cert(1)]);
    }

    #[test]
    fn unmatched_identities_keep_the_whole_bucket() {
        let bucket = [cert(1), cert(2)];
        let id = SignerIdentity::CertHash { hash_alg: 9, certificate_hash: vec![0; 4] };
        assert_eq!(certs_for(&id, &signer(), &bucket), bucket.to_vec());
        let unknown = SignerIdentity::Unknown { identity_type: 7, value: vec![] };
        assert_eq!(certs_for(&unknown, &signer(), &bucket), bucket.to_vec());
    }

    #[test]
    fn pool_counts_references() {
        let mut pool = CertPool::default();
        let (c, k) = (cert(1), cert_key(&cert(1)));
        pool.offer(k, &c);
        pool.retain(&k);
        pool.retain(&k);
        pool.offer(k, &c);
        pool.release(&k);
        assert_eq!(pool.get(&k), Some(&c));
        pool.release(&k);
        assert_eq!(pool.len(), 0);
        // Offered but never retained: pruned.
        pool.offer(k, &c);
        pool.prune(&k);
        assert_eq!(pool.len(), 0);
    }
}
