//! Top-level decoder: fragment reassembly (RFC 6940 §6.7) fed a stream of
//! arbitrary fragments separated by a marker.
#![no_main]
use std::time::{Duration, Instant};

use chordphone::wire::fragment::Reassembler;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut r = Reassembler::new(64 * 1024, 256 * 1024);
    for (i, piece) in data.split(|b| *b == 0xfe).enumerate() {
        let _ = r.push(start + Duration::from_millis(i as u64 * 500), piece);
        r.handle_timeout(start + Duration::from_millis(i as u64 * 500));
    }
});
