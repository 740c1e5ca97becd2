//! Helpers shared by the transaction tests.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::sip::message::{SipMessage, StatusCode};

pub(super) fn udp(port: u16) -> TransportAddr {
    TransportAddr { transport: Transport::Udp, addr: SocketAddr::new([192, 0, 2, 10].into(), port), flow: None }
}

pub(super) fn tcp(port: u16) -> TransportAddr {
    TransportAddr { transport: Transport::Tcp, addr: SocketAddr::new([192, 0, 2, 10].into(), port), flow: Some(7) }
}

pub(super) fn request(method: &str, branch: &str, transport: &str, extra: &str) -> SipMessage {
    let text = format!(
        "{method} sip:bob@example.com SIP/2.0\r\n\
         Via: SIP/2.0/{transport} 192.0.2.10:5060;branch={branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=fa\r\nTo: <sip:bob@example.com>\r\n\
         Call-ID: call-1\r\nCSeq: 7 {method}\r\n{extra}\r\n"
    );
    SipMessage::parse(text.as_bytes()).unwrap()
}

pub(super) fn invite(branch: &str) -> SipMessage {
    request("INVITE", branch, "UDP", "Route: <sip:edge.example.net;lr>\r\nContact: <sip:alice@192.0.2.10>\r\n")
}

pub(super) fn reply(req: &SipMessage, code: u16) -> SipMessage {
    let tag = (code > 100).then_some("tb");
    SipMessage::response_to(req, StatusCode::new(code).unwrap(), None, tag)
}

pub(super) fn layer() -> TransactionLayer {
    TransactionLayer::new(TransactionConfig::default())
}

pub(super) fn transmits(l: &mut TransactionLayer) -> Vec<Transmit> {
    std::iter::from_fn(|| l.poll_transmit()).collect()
}

pub(super) fn events(l: &mut TransactionLayer) -> Vec<TxEvent> {
    std::iter::from_fn(|| l.poll_event()).collect()
}

pub(super) fn parsed(t: &Transmit) -> SipMessage {
    SipMessage::parse(&t.payload).unwrap()
}

/// Fires every timer up to `end`; returns (time since t0, transmit).
pub(super) fn run(l: &mut TransactionLayer, t0: Instant, end: Instant) -> Vec<(Duration, Transmit)> {
    let mut out = Vec::new();
    while let Some(at) = l.poll_timeout().filter(|at| *at <= end) {
        l.handle_timeout(at);
        out.extend(transmits(l).into_iter().map(|t| (at - t0, t)));
    }
    out
}

pub(super) fn ms(v: &[u64]) -> Vec<Duration> {
    v.iter().map(|m| Duration::from_millis(*m)).collect()
}
