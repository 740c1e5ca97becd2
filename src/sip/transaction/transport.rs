//! Transport addressing (RFC 3261 §18): which transport and address a message
//! came from or goes to, and where a response is sent (§18.2.2, RFC 3581 §4).

use std::net::{IpAddr, SocketAddr};

use crate::sip::message::Via;

/// A SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// Reliable transports need no retransmissions (§17.1.1.2, §17.1.2.2).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// The Via transport token.
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
}

/// Where a message came from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransportAddr {
    pub transport: Transport,
    pub addr: SocketAddr,
    /// The connection a stream message arrived on, so responses reuse it
    /// (§18.2.2, RFC 5626 flows). `None` for UDP or "any connection".
    pub flow: Option<u64>,
}

/// §18.2.2 with RFC 3581 §4: streams answer on the same connection; UDP
/// answers the source when `rport` was requested, else `received` (or the
/// sent-by IP, or the source IP when sent-by is a name) at the sent-by port.
pub(super) fn response_target(via: &Via, from: TransportAddr) -> TransportAddr {
    if from.transport.is_reliable() || via.rport().is_some() {
        return from;
    }
    let ip = via.received().and_then(|r| r.parse::<IpAddr>().ok()).or(via.host.ip()).unwrap_or(from.addr.ip());
    TransportAddr { transport: from.transport, addr: SocketAddr::new(ip, via.port_or_default()), flow: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::transaction::test_support::*;
    use std::time::Instant;

    use crate::sip::transaction::RequestDisposition;

    #[test]
    fn response_addressing() {
        let (mut l, t0) = (layer(), Instant::now());
        let nat = TransportAddr { transport: Transport::Udp, addr: "203.0.113.9:61000".parse().unwrap(), flow: None };
        // rport requested: answer the source address and port (RFC 3581).
        let mut req = request("OPTIONS", "z9hG4bKad1", "UDP", "");
        req.set_top_via_param("rport", None).unwrap();
        req.stamp_received(nat.addr).unwrap();
        let RequestDisposition::New(id) = l.handle_request(t0, &req, nat) else { panic!() };
        l.respond(t0, id, reply(&req, 200)).unwrap();
        assert_eq!(transmits(&mut l)[0].to, nat);
        // No rport: received address, sent-by port (§18.2.2).
        let mut req = request("OPTIONS", "z9hG4bKad2", "UDP", "");
        req.stamp_received(nat.addr).unwrap();
        let RequestDisposition::New(id) = l.handle_request(t0, &req, nat) else { panic!() };
        l.respond(t0, id, reply(&req, 200)).unwrap();
        assert_eq!(transmits(&mut l)[0].to.addr, "203.0.113.9:5060".parse().unwrap());
    }
}
