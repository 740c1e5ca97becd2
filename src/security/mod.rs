//! Identities and signatures (RFC 6940 §6.3.4, §7.1, §11.3): key pairs,
//! the overlay's enrollment CA, certificate checks, and the signatures on
//! messages and stored data; [`enroll`] is the CA side of §11.3
//! enrollment (certificate requests, the enrollment policy, issuing).
//!
//! Sans-IO: nothing here reads a clock (wall time is an argument) and the
//! only randomness is the OS's, drawn by `ring` and `rsa` for key
//! generation and ECDSA nonces.

mod ca;
mod cert;
pub mod enroll;
mod error;
mod keys;
pub mod seam;
mod sign;

pub use ca::{OverlayCa, self_signed_certificate};
pub use cert::{
    SelfSignedDigest, VerifiedIdentity, node_id_uri, parse_node_id_uri, self_signed_node_id, verify_chain,
    verify_self_signed,
};
pub use error::SecurityError;
pub use keys::{KeyAlgorithm, KeyPair, verify};
pub use sign::{
    SignerMatch, cert_hash_identity, cert_hash_node_id_identity, find_signer, message_signature_input, sign_message,
    sign_stored_data, signer_identity_for, stored_data_signature_input, verify_message, verify_stored_data,
};
