//! Top-level decoders of stored values: SIP-REGISTRATION (RFC 7904 §3.2)
//! and TURN-SERVICE (RFC 6940 §9) as a fetching node decodes them.
#![no_main]
use chordphone::wire::Codec;
use chordphone::wire::kinds::{SipRegistration, TurnServer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = SipRegistration::from_bytes(data) {
        assert_eq!(v.to_bytes().expect("re-encodes"), data);
    }
    if let Ok(v) = TurnServer::from_bytes(data) {
        assert_eq!(v.to_bytes().expect("re-encodes"), data);
    }
});
