//! Certificates and clocks for the link machines' tests.

#[cfg(test)]
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::LinkSecurity;
use crate::security::{KeyAlgorithm, KeyPair, OverlayCa};
use crate::wire::NodeId;

pub const OVERLAY: &str = "links.example.org";

pub fn wall() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

pub fn start() -> Instant {
    Instant::now()
}

pub fn new_ca() -> OverlayCa {
    let t = wall();
    OverlayCa::create(OVERLAY, KeyPair::generate(KeyAlgorithm::EcdsaP256Sha256).unwrap(), t - 60, t + 3600).unwrap()
}

pub fn node(n: u8) -> NodeId {
    NodeId([n; 16])
}

pub fn security(ca: &OverlayCa, id: NodeId) -> Arc<LinkSecurity> {
    let key = KeyPair::generate(KeyAlgorithm::EcdsaP256Sha256).unwrap();
    let t = wall();
    let cert = ca.issue(&key.spki_der(), Some(&format!("n{}@{OVERLAY}", id.0[0])), &[id], t - 60, t + 3600).unwrap();
    Arc::new(LinkSecurity {
        overlay: OVERLAY.into(),
        ca_der: ca.cert_der().to_vec(),
        cert_der: cert,
        key_pkcs8: key.to_pkcs8_der(),
        max_message_size: 5000,
    })
}

/// A RELOAD message of exactly `len` bytes (a forwarding header and
/// filler), which the §6.7 fragmenter accepts.
pub fn reload_message(len: usize) -> Vec<u8> {
    use crate::wire::{Destination, ForwardingHeader, Writer};
    let h = ForwardingHeader::new(1, 1, 42, vec![Destination::Node(node(2))]);
    let mut w = Writer::new();
    h.encode_with_length(&mut w, 0);
    let payload = len - w.len();
    w.bytes(&(0..payload).map(|i| (i % 251) as u8).collect::<Vec<_>>());
    w.patch_u32(16, len as u32);
    w.finish().unwrap()
}
