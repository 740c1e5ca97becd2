//! Top-level decoder: the link framing header (RFC 6940 §6.6.2), as a
//! stream reader would cut frames out of TCP bytes.
#![no_main]
use chordphone::wire::framing::{FramedMessage, frame_len};
use chordphone::wire::Codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some(n)) = frame_len(rest) {
        let Some(frame) = rest.get(..n) else { break };
        if let Ok(f) = FramedMessage::from_bytes(frame) {
            assert_eq!(f.to_bytes().expect("re-encodes"), frame);
        }
        rest = &rest[n..];
    }
});
