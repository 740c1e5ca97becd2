//! Key pairs for the three signature algorithms chordphone speaks, and
//! verification against a SubjectPublicKeyInfo.
//!
//! RSASSA-PKCS1-v1_5 with SHA-256 is the one every RELOAD node MUST
//! implement (RFC 6940 §6.3.4); ECDSA P-256 and Ed25519 are the smaller,
//! faster choices (RFC 8422 code points). Signatures use the encodings TLS
//! uses for the same code points, since RELOAD borrows TLS's registry:
//! PKCS#1 v1.5 blocks, DER `ECDSA-Sig-Value`, raw 64-byte Ed25519.

use std::fmt;

use rcgen::{PublicKeyData, SigningKey};
use ring::signature::{self as ring_sig, UnparsedPublicKey};
use rsa::pkcs8::EncodePrivateKey;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::error::SecurityError;
use crate::wire::security_block::SignatureAndHashAlgorithm;

/// RSA modulus size for generated keys: the minimum ring accepts and the
/// usual size for TLS-era RELOAD deployments.
pub const RSA_BITS: usize = 2048;

/// The kinds of key this implementation generates and verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    RsaPkcs1Sha256,
    EcdsaP256Sha256,
    Ed25519,
}

impl KeyAlgorithm {
    /// The RELOAD/TLS code points a signature made with this key carries.
    pub fn signature_algorithm(self) -> SignatureAndHashAlgorithm {
        match self {
            KeyAlgorithm::RsaPkcs1Sha256 => SignatureAndHashAlgorithm::RSA_PKCS1_SHA256,
            KeyAlgorithm::EcdsaP256Sha256 => SignatureAndHashAlgorithm::ECDSA_P256_SHA256,
            KeyAlgorithm::Ed25519 => SignatureAndHashAlgorithm::ED25519,
        }
    }

    /// The inverse of [`KeyAlgorithm::signature_algorithm`].
    pub fn from_signature_algorithm(alg: SignatureAndHashAlgorithm) -> Result<Self, SecurityError> {
        match alg {
            SignatureAndHashAlgorithm::RSA_PKCS1_SHA256 => Ok(KeyAlgorithm::RsaPkcs1Sha256),
            SignatureAndHashAlgorithm::ECDSA_P256_SHA256 => Ok(KeyAlgorithm::EcdsaP256Sha256),
            SignatureAndHashAlgorithm::ED25519 => Ok(KeyAlgorithm::Ed25519),
            other => Err(SecurityError::UnsupportedAlgorithm { hash: other.hash, signature: other.signature }),
        }
    }

    /// The key type a SubjectPublicKeyInfo holds.
    pub fn of_spki(spki_der: &[u8]) -> Result<Self, SecurityError> {
        let spki = parse_spki(spki_der)?;
        Self::of_parsed_spki(&spki)
    }

    pub(crate) fn of_parsed_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Self, SecurityError> {
        let oid = &spki.algorithm.algorithm;
        if *oid == OID_PKCS1_RSAENCRYPTION {
            Ok(KeyAlgorithm::RsaPkcs1Sha256)
        } else if *oid == OID_SIG_ED25519 {
            Ok(KeyAlgorithm::Ed25519)
        } else if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
            match curve {
                Some(c) if c == OID_EC_P256 => Ok(KeyAlgorithm::EcdsaP256Sha256),
                _ => Err(SecurityError::UnsupportedKey),
            }
        } else {
            Err(SecurityError::UnsupportedKey)
        }
    }

    pub(crate) fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyAlgorithm::RsaPkcs1Sha256 => &rcgen::PKCS_RSA_SHA256,
            KeyAlgorithm::EcdsaP256Sha256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

/// A private key that signs messages, stored data and (for a CA)
/// certificates. Persisted as PKCS#8 DER.
pub struct KeyPair {
    inner: rcgen::KeyPair,
    algorithm: KeyAlgorithm,
}

impl KeyPair {
    /// A fresh key from the operating system's randomness. RSA keys are
    /// [`RSA_BITS`] long and made by the `rsa` crate (ring cannot make them).
    pub fn generate(algorithm: KeyAlgorithm) -> Result<Self, SecurityError> {
        let inner = match algorithm {
            KeyAlgorithm::RsaPkcs1Sha256 => {
                let mut rng = OsRng::new();
                let key = rsa::RsaPrivateKey::new(&mut rng, RSA_BITS).map_err(|e| SecurityError::Key(e.to_string()))?;
                if rng.failed {
                    return Err(SecurityError::Key("OS random source failed".into()));
                }
                let der = key.to_pkcs8_der().map_err(|e| SecurityError::Key(e.to_string()))?;
                rcgen::KeyPair::try_from(der.as_bytes()).map_err(key_err)?
            }
            other => rcgen::KeyPair::generate_for(other.rcgen()).map_err(key_err)?,
        };
        Ok(KeyPair { inner, algorithm })
    }

    /// Reads a PKCS#8 private key of one of the three supported types.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, SecurityError> {
        let inner = rcgen::KeyPair::try_from(der).map_err(key_err)?;
        let algorithm = if inner.algorithm() == &rcgen::PKCS_RSA_SHA256 {
            KeyAlgorithm::RsaPkcs1Sha256
        } else if inner.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256 {
            KeyAlgorithm::EcdsaP256Sha256
        } else if inner.algorithm() == &rcgen::PKCS_ED25519 {
            KeyAlgorithm::Ed25519
        } else {
            return Err(SecurityError::UnsupportedKey);
        };
        Ok(KeyPair { inner, algorithm })
    }

    pub fn to_pkcs8_der(&self) -> Vec<u8> {
        self.inner.serialize_der()
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The code points that go into a `Signature` this key made (§6.3.4).
    pub fn signature_algorithm(&self) -> SignatureAndHashAlgorithm {
        self.algorithm.signature_algorithm()
    }

    /// The public half as DER SubjectPublicKeyInfo, the bytes the
    /// self-signed Node-ID is a digest of (§11.3.1).
    pub fn spki_der(&self) -> Vec<u8> {
        self.inner.subject_public_key_info()
    }

    /// Signs `data` with this key's algorithm.
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, SecurityError> {
        self.inner.sign(data).map_err(key_err)
    }

    /// The rcgen view of the key, for signing certificates.
    pub(crate) fn rcgen(&self) -> &rcgen::KeyPair {
        &self.inner
    }
}

impl fmt::Debug for KeyPair {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair").field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

/// Checks `sig` over `data` by the key in `spki_der` under `alg`. The
/// algorithm must be one of the three supported and must fit the key type.
pub fn verify(alg: SignatureAndHashAlgorithm, spki_der: &[u8], data: &[u8], sig: &[u8]) -> Result<(), SecurityError> {
    let wanted = KeyAlgorithm::from_signature_algorithm(alg)?;
    let spki = parse_spki(spki_der)?;
    if KeyAlgorithm::of_parsed_spki(&spki)? != wanted {
        return Err(SecurityError::AlgorithmMismatch);
    }
    let ring_alg: &dyn ring_sig::VerificationAlgorithm = match wanted {
        KeyAlgorithm::RsaPkcs1Sha256 => &ring_sig::RSA_PKCS1_2048_8192_SHA256,
        KeyAlgorithm::EcdsaP256Sha256 => &ring_sig::ECDSA_P256_SHA256_ASN1,
        KeyAlgorithm::Ed25519 => &ring_sig::ED25519,
    };
    UnparsedPublicKey::new(ring_alg, &spki.subject_public_key.data)
        .verify(data, sig)
        .map_err(|_| SecurityError::BadSignature)
}

/// A public key taken from a DER SubjectPublicKeyInfo, in the form rcgen
/// needs to put it into a certificate it signs.
pub(crate) struct SubjectKey {
    raw: Vec<u8>,
    alg: &'static rcgen::SignatureAlgorithm,
}

impl SubjectKey {
    pub(crate) fn from_spki_der(spki_der: &[u8]) -> Result<Self, SecurityError> {
        let spki = parse_spki(spki_der)?;
        let alg = KeyAlgorithm::of_parsed_spki(&spki)?.rcgen();
        Ok(SubjectKey { raw: spki.subject_public_key.data.to_vec(), alg })
    }
}

impl PublicKeyData for SubjectKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

fn parse_spki(spki_der: &[u8]) -> Result<SubjectPublicKeyInfo<'_>, SecurityError> {
    let (rest, spki) =
        SubjectPublicKeyInfo::from_der(spki_der).map_err(|e| SecurityError::MalformedCertificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(SecurityError::MalformedCertificate("trailing bytes after SubjectPublicKeyInfo".into()));
    }
    Ok(spki)
}

fn key_err(e: rcgen::Error) -> SecurityError {
    SecurityError::Key(e.to_string())
}

/// The OS random source in the shape the `rsa` crate's key generation
/// wants (rand_core 0.6). A failure of the source cannot be returned
/// through `fill_bytes`, so it is remembered and the key thrown away.
/// Reviewed exception to the sans-IO lists (clippy.toml): key generation is
/// the one use of the OS RNG in a core, and the caller asks for it explicitly.
#[allow(clippy::disallowed_types)]
struct OsRng {
    sys: ring::rand::SystemRandom,
    failed: bool,
}

#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
impl OsRng {
    fn new() -> Self {
        OsRng { sys: ring::rand::SystemRandom::new(), failed: false }
    }
}

impl rsa::rand_core::RngCore for OsRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        use ring::rand::SecureRandom;
        if self.sys.fill(dest).is_err() {
            self.failed = true;
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rsa::rand_core::CryptoRng for OsRng {}

#[cfg(test)]
pub(crate) mod test_keys {
    //! One key of each type per test process: RSA generation takes a
    //! noticeable fraction of a second even optimised.
    use std::sync::OnceLock;

    use super::*;

    pub(crate) fn key(alg: KeyAlgorithm) -> KeyPair {
        static DER: OnceLock<[Vec<u8>; 3]> = OnceLock::new();
        let ders = DER.get_or_init(|| {
            [KeyAlgorithm::RsaPkcs1Sha256, KeyAlgorithm::EcdsaP256Sha256, KeyAlgorithm::Ed25519]
                .map(|a| KeyPair::generate(a).unwrap().to_pkcs8_der())
        });
        let i = match alg {
            KeyAlgorithm::RsaPkcs1Sha256 => 0,
            KeyAlgorithm::EcdsaP256Sha256 => 1,
            KeyAlgorithm::Ed25519 => 2,
        };
        KeyPair::from_pkcs8_der(&ders[i]).unwrap()
    }

    pub(crate) const ALL: [KeyAlgorithm; 3] =
        [KeyAlgorithm::RsaPkcs1Sha256, KeyAlgorithm::EcdsaP256Sha256, KeyAlgorithm::Ed25519];
}

#[cfg(test)]
mod tests {
    use super::test_keys::{ALL, key};
    use super::*;

    #[test]
    fn sign_and_verify_each_algorithm() {
        for alg in ALL {
            let k = key(alg);
            assert_eq!(k.algorithm(), alg);
            assert_eq!(KeyAlgorithm::of_spki(&k.spki_der()).unwrap(), alg);
            let sig = k.sign(b"hello overlay").unwrap();
            verify(k.signature_algorithm(), &k.spki_der(), b"hello overlay", &sig).unwrap();
            assert_eq!(
                verify(k.signature_algorithm(), &k.spki_der(), b"hello overlaz", &sig),
                Err(SecurityError::BadSignature)
            );
            let mut bad = sig.clone();
            if let Some(b) = bad.last_mut() {
                *b ^= 1;
            }
            assert!(verify(k.signature_algorithm(), &k.spki_der(), b"hello overlay", &bad).is_err());
        }
    }

    #[test]
    fn pkcs8_round_trip_keeps_the_key() {
        for alg in ALL {
            let k = key(alg);
            let again = KeyPair::from_pkcs8_der(&k.to_pkcs8_der()).unwrap();
            assert_eq!(again.spki_der(), k.spki_der());
            let sig = again.sign(b"x").unwrap();
            verify(k.signature_algorithm(), &k.spki_der(), b"x", &sig).unwrap();
        }
        assert!(KeyPair::from_pkcs8_der(b"not a key").is_err());
    }

    #[test]
    fn algorithm_must_fit_the_key() {
        let ed = key(KeyAlgorithm::Ed25519);
        let sig = ed.sign(b"x").unwrap();
        assert_eq!(
            verify(SignatureAndHashAlgorithm::RSA_PKCS1_SHA256, &ed.spki_der(), b"x", &sig),
            Err(SecurityError::AlgorithmMismatch)
        );
        assert_eq!(
            verify(SignatureAndHashAlgorithm::NONE, &ed.spki_der(), b"x", &sig),
            Err(SecurityError::UnsupportedAlgorithm { hash: 0, signature: 0 })
        );
    }

    #[test]
    fn rsa_keys_are_2048_bits() {
        let k = key(KeyAlgorithm::RsaPkcs1Sha256);
        // PKCS#1 v1.5 signature length equals the modulus length.
        assert_eq!(k.sign(b"x").unwrap().len(), RSA_BITS / 8);
    }
}
