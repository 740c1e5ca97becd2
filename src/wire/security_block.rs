//! The security block that closes every RELOAD message (RFC 6940 §6.3.4):
//! the certificates a receiver needs, then the sender's signature.
//!
//! Only the wire form lives here; computing and checking signatures is
//! `crate::security`'s job.

use super::codec::{Codec, Reader, WireError, Writer, get_vec, put_vec};

/// `GenericCertificate` (§6.3.4): a certificate type from the TLS
/// "Certificate Types" registry (RFC 6091) and the certificate itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenericCertificate {
    pub cert_type: u8,
    pub cert: Vec<u8>,
}

impl GenericCertificate {
    /// RFC 6091 `X.509(0)`: the certificate is DER.
    pub const X509: u8 = 0;

    /// An X.509 certificate in DER.
    pub fn x509(der: Vec<u8>) -> Self {
        GenericCertificate { cert_type: Self::X509, cert: der }
    }
}

/// `SignatureAndHashAlgorithm` (§6.3.4, borrowed from TLS 1.2, RFC 5246
/// §7.4.1.4.1): one byte from each TLS registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SignatureAndHashAlgorithm {
    pub hash: u8,
    pub signature: u8,
}

impl SignatureAndHashAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256, the algorithm every node MUST
    /// implement (§6.3.4): hash sha256(4), signature rsa(1).
    pub const RSA_PKCS1_SHA256: Self = Self { hash: 4, signature: 1 };
    /// ECDSA over P-256 with SHA-256 (RFC 8422 §5.1.1): sha256(4), ecdsa(3).
    pub const ECDSA_P256_SHA256: Self = Self { hash: 4, signature: 3 };
    /// Ed25519 (RFC 8422 §5.1.3): hash `Intrinsic(8)`, signature ed25519(7).
    pub const ED25519: Self = Self { hash: 8, signature: 7 };
    /// The algorithm of a synthesized signature (§6.3.4 `none`): anonymous.
    pub const NONE: Self = Self { hash: 0, signature: 0 };
}

/// `SignerIdentityType` values (§6.3.4, IANA §14.16).
pub mod identity_type {
    pub const CERT_HASH: u8 = 1;
    pub const CERT_HASH_NODE_ID: u8 = 2;
    pub const NONE: u8 = 3;
}

/// `SignerIdentity` (§6.3.4): which certificate vouches for a signature.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SignerIdentity {
    /// `cert_hash(1)`: a hash of the DER certificate; used when the
    /// certificate holds a single Node-ID.
    CertHash { hash_alg: u8, certificate_hash: Vec<u8> },
    /// `cert_hash_node_id(2)`: H(Node-ID ‖ certificate); names both the
    /// certificate and which of its Node-IDs signed.
    CertHashNodeId { hash_alg: u8, certificate_node_id_hash: Vec<u8> },
    /// `none(3)`: only in the signature of a value synthesized for a
    /// Fetch of something that does not exist (§6.3.4).
    None,
    /// A type this implementation does not know; the `length` envelope
    /// lets it be skipped and re-encoded unchanged.
    Unknown { identity_type: u8, value: Vec<u8> },
}

impl SignerIdentity {
    /// The `identity_type` byte this identity is sent with.
    pub fn identity_type(&self) -> u8 {
        match self {
            SignerIdentity::CertHash { .. } => identity_type::CERT_HASH,
            SignerIdentity::CertHashNodeId { .. } => identity_type::CERT_HASH_NODE_ID,
            SignerIdentity::None => identity_type::NONE,
            SignerIdentity::Unknown { identity_type, .. } => *identity_type,
        }
    }
}

/// `Signature` (§6.3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub algorithm: SignatureAndHashAlgorithm,
    pub identity: SignerIdentity,
    pub value: Vec<u8>,
}

impl Signature {
    /// The signature of a synthesized "nonexistent" value (§6.3.4, §7.4.2.2):
    /// algorithm {0,0}, identity `none`, empty value.
    pub fn none() -> Self {
        Signature { algorithm: SignatureAndHashAlgorithm::NONE, identity: SignerIdentity::None, value: Vec::new() }
    }

    /// Whether this is the synthesized form of [`Signature::none`].
    pub fn is_none(&self) -> bool {
        self.identity == SignerIdentity::None
    }
}

/// `SecurityBlock` (§6.3.4): every certificate needed to check every
/// signature in the message (stored values' included), then the
/// message's own signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityBlock {
    pub certificates: Vec<GenericCertificate>,
    pub signature: Signature,
}

impl Codec for GenericCertificate {
    fn encode(&self, w: &mut Writer) {
        w.u8(self.cert_type);
        // §6.3.4: `opaque certificate<0..2^16-1>`.
        w.opaque(2, "certificate", &self.cert);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let cert_type = r.u8("certificate type")?;
        let cert = r.opaque(2, "certificate")?.to_vec();
        Ok(GenericCertificate { cert_type, cert })
    }
}

impl Codec for SignatureAndHashAlgorithm {
    fn encode(&self, w: &mut Writer) {
        w.u8(self.hash);
        w.u8(self.signature);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let hash = r.u8("hash algorithm")?;
        let signature = r.u8("signature algorithm")?;
        Ok(SignatureAndHashAlgorithm { hash, signature })
    }
}

impl Codec for SignerIdentity {
    fn encode(&self, w: &mut Writer) {
        w.u8(self.identity_type());
        // §6.3.4: `uint16 length` then `SignerIdentityValue identity[length]`.
        w.vec(2, "signer identity", |w| match self {
            // Both hash forms are `HashAlgorithm hash_alg; opaque hash<0..2^8-1>`.
            SignerIdentity::CertHash { hash_alg, certificate_hash: h }
            | SignerIdentity::CertHashNodeId { hash_alg, certificate_node_id_hash: h } => {
                w.u8(*hash_alg);
                w.opaque(1, "certificate hash", h);
            }
            SignerIdentity::None => {}
            SignerIdentity::Unknown { value, .. } => w.bytes(value),
        });
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let ty = r.u8("signer identity type")?;
        let mut body = r.sub(2, "signer identity")?;
        let id = match ty {
            identity_type::CERT_HASH => SignerIdentity::CertHash {
                hash_alg: body.u8("hash algorithm")?,
                certificate_hash: body.opaque(1, "certificate hash")?.to_vec(),
            },
            identity_type::CERT_HASH_NODE_ID => SignerIdentity::CertHashNodeId {
                hash_alg: body.u8("hash algorithm")?,
                certificate_node_id_hash: body.opaque(1, "certificate node id hash")?.to_vec(),
            },
            identity_type::NONE => SignerIdentity::None,
            identity_type => SignerIdentity::Unknown {
                identity_type,
                value: body.bytes(body.remaining(), "signer identity")?.to_vec(),
            },
        };
        // A known type's value must fill the declared length exactly.
        body.finish("signer identity")?;
        Ok(id)
    }
}

impl Codec for Signature {
    fn encode(&self, w: &mut Writer) {
        self.algorithm.encode(w);
        self.identity.encode(w);
        // §6.3.4: `opaque signature_value<0..2^16-1>`.
        w.opaque(2, "signature value", &self.value);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let algorithm = SignatureAndHashAlgorithm::decode(r)?;
        let identity = SignerIdentity::decode(r)?;
        let value = r.opaque(2, "signature value")?.to_vec();
        Ok(Signature { algorithm, identity, value })
    }
}

impl Codec for SecurityBlock {
    fn encode(&self, w: &mut Writer) {
        // §6.3.4: `GenericCertificate certificates<0..2^16-1>`.
        put_vec(w, 2, "certificates", &self.certificates);
        self.signature.encode(w);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let certificates = get_vec(r, 2, "certificates")?;
        let signature = Signature::decode(r)?;
        Ok(SecurityBlock { certificates, signature })
    }
}

#[cfg(test)]
pub(crate) mod strategies {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    pub(crate) fn generic_certificate() -> impl Strategy<Value = GenericCertificate> {
        (any::<u8>(), vec(any::<u8>(), 0..32)).prop_map(|(cert_type, cert)| GenericCertificate { cert_type, cert })
    }

    pub(crate) fn algorithm() -> impl Strategy<Value = SignatureAndHashAlgorithm> {
        (any::<u8>(), any::<u8>()).prop_map(|(hash, signature)| SignatureAndHashAlgorithm { hash, signature })
    }

    pub(crate) fn signer_identity() -> impl Strategy<Value = SignerIdentity> {
        prop_oneof![
            (any::<u8>(), vec(any::<u8>(), 0..32))
                .prop_map(|(hash_alg, certificate_hash)| SignerIdentity::CertHash { hash_alg, certificate_hash }),
            (any::<u8>(), vec(any::<u8>(), 0..32)).prop_map(|(hash_alg, certificate_node_id_hash)| {
                SignerIdentity::CertHashNodeId { hash_alg, certificate_node_id_hash }
            }),
            Just(SignerIdentity::None),
            (any::<u8>().prop_filter("unknown type", |t| !(1..=3).contains(t)), vec(any::<u8>(), 0..32))
                .prop_map(|(identity_type, value)| SignerIdentity::Unknown { identity_type, value }),
        ]
    }

    pub(crate) fn signature() -> impl Strategy<Value = Signature> {
        (algorithm(), signer_identity(), vec(any::<u8>(), 0..32)).prop_map(|(algorithm, identity, value)| Signature {
            algorithm,
            identity,
            value,
        })
    }

    pub(crate) fn security_block() -> impl Strategy<Value = SecurityBlock> {
        (vec(generic_certificate(), 0..4), signature())
            .prop_map(|(certificates, signature)| SecurityBlock { certificates, signature })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hand_checked_security_block() {
        let block = SecurityBlock {
            certificates: vec![GenericCertificate::x509(vec![0x30, 0x03, 0x02, 0x01, 0x05])],
            signature: Signature {
                algorithm: SignatureAndHashAlgorithm::RSA_PKCS1_SHA256,
                identity: SignerIdentity::CertHash { hash_alg: 4, certificate_hash: vec![0xaa, 0xbb] },
                value: vec![0x01, 0x02, 0x03],
            },
        };
        let expected: Vec<u8> = vec![
            0x00, 0x08, // certificates<0..2^16-1>: 8 bytes
            0x00, // type x509
            0x00, 0x05, 0x30, 0x03, 0x02, 0x01, 0x05, // certificate<0..2^16-1>
            0x04, 0x01, // sha256, rsa
            0x01, // identity_type cert_hash
            0x00, 0x04, // length
            0x04, // hash_alg sha256
            0x02, 0xaa, 0xbb, // certificate_hash<0..2^8-1>
            0x00, 0x03, 0x01, 0x02, 0x03, // signature_value<0..2^16-1>
        ];
        assert_eq!(block.to_bytes().unwrap(), expected);
        assert_eq!(SecurityBlock::from_bytes(&expected).unwrap(), block);
    }

    #[test]
    fn synthesized_none_signature() {
        // {0,0} algorithm, none(3) with zero length, empty value.
        let b = Signature::none().to_bytes().unwrap();
        assert_eq!(b, vec![0, 0, 3, 0, 0, 0, 0]);
        assert!(Signature::from_bytes(&b).unwrap().is_none());
    }

    #[test]
    fn cert_hash_node_id_layout() {
        let id = SignerIdentity::CertHashNodeId { hash_alg: 4, certificate_node_id_hash: vec![9; 3] };
        assert_eq!(id.to_bytes().unwrap(), vec![2, 0, 5, 4, 3, 9, 9, 9]);
    }

    #[test]
    fn unknown_identity_is_kept() {
        let bytes = [7, 0, 2, 0xde, 0xad];
        let id = SignerIdentity::from_bytes(&bytes).unwrap();
        assert_eq!(id, SignerIdentity::Unknown { identity_type: 7, value: vec![0xde, 0xad] });
        assert_eq!(id.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn malformed_identities_are_rejected() {
        // cert_hash whose inner opaque claims more than the envelope holds.
        assert!(SignerIdentity::from_bytes(&[1, 0, 2, 4, 5]).is_err());
        // cert_hash with a byte left over inside the envelope.
        assert!(matches!(SignerIdentity::from_bytes(&[1, 0, 3, 4, 0, 0xff]), Err(WireError::Trailing { .. })));
        // none must be empty.
        assert!(SignerIdentity::from_bytes(&[3, 0, 1, 0]).is_err());
        // envelope longer than the input.
        assert!(matches!(SignerIdentity::from_bytes(&[1, 0, 9, 4]), Err(WireError::Truncated { .. })));
    }

    proptest! {
        #[test]
        fn security_block_round_trips(b in strategies::security_block()) {
            let bytes = b.to_bytes().unwrap();
            prop_assert_eq!(SecurityBlock::from_bytes(&bytes).unwrap(), b);
        }

        #[test]
        fn signature_round_trips(s in strategies::signature()) {
            let bytes = s.to_bytes().unwrap();
            prop_assert_eq!(Signature::from_bytes(&bytes).unwrap(), s);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = SecurityBlock::from_bytes(&bytes);
        }
    }
}
