//! SIP input as phones and other nodes send it: the message parser (RFC
//! 3261 §7, with the torture cases of RFC 4475 in mind), its serialiser
//! (what parses must serialise to something that parses again), a user
//! agent fed the bytes as if they came from its proxy, and the RFC 7983
//! first-byte demultiplexer of the link socket. None may panic.
#![no_main]
use std::time::Instant;

use chordphone::nat::demux::classify;
use chordphone::sip::message::SipMessage;
use chordphone::sip::transaction::{Transport, TransportAddr};
use chordphone::sip::ua::{UaConfig, UserAgent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = classify(data);
    if let Ok(msg) = SipMessage::parse(data) {
        let again = msg.to_bytes();
        SipMessage::parse(&again).expect("a parsed message serialises to one that parses");
    }
    let proxy = TransportAddr { transport: Transport::Udp, addr: "192.0.2.1:5060".parse().unwrap(), flow: None };
    let cfg = UaConfig::new("sip:alice@example.test", "secret", proxy, ("192.0.2.10".into(), 5060), 7);
    let Ok(mut ua) = UserAgent::new(cfg) else { return };
    let now = Instant::now();
    let _ = ua.register(now);
    while ua.poll_transmit().is_some() {}
    ua.handle_input(now, proxy, data);
    while ua.poll_transmit().is_some() {}
    while ua.poll_event().is_some() {}
});
