//! Top-level decoder: a whole RELOAD message (RFC 6940 §6.3). Whatever
//! decodes must re-encode to the same bytes (the signature covers them).
#![no_main]
use chordphone::wire::{Message, RawMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = RawMessage::parse(data).map(|raw| raw.code());
    if let Ok(msg) = Message::decode(data) {
        let again = msg.encode().expect("a decoded message re-encodes");
        assert_eq!(again, data, "decode/encode is not the identity");
    }
});
