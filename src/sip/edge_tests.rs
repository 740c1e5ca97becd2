//! Edge-level tests of [`super::edge::SipEdge`]: what one node's edge
//! answers on its own, before any registration is stored or looked up
//! (parsing, §16.3 validation, digest challenges). The harness is one edge
//! and a fake clock; any overlay request or node-to-node message fails the
//! test. Scenarios that store, look up or forward across nodes run on the
//! real overlay through `crate::peer::Peer`s (`src/peer/sip_tests/`).

use std::time::{Duration, Instant};

use super::account::NodeRef;
use super::digest::DigestAlgorithm;
use super::edge::{EdgeConfig, EdgeOutput, SipEdge};
use super::message::SipMessage;
use super::test_phones::{DOMAIN, PhoneNet, account, alice, answer, baresip_register, invite, msg};
use super::transaction::TransportAddr;

/// One edge, its clock, and what it sent to phones.
struct Net {
    edge: SipEdge,
    now: Instant,
    wall: u64,
    inbox: Vec<(TransportAddr, SipMessage)>,
}

impl Net {
    fn new() -> Net {
        Net::with(|_| {})
    }

    /// An edge whose configuration `tune` adjusts.
    fn with(tune: impl Fn(&mut EdgeConfig)) -> Net {
        let start = Instant::now(); // layering: allowed (test-only module: the fake clock's origin)
        let id = NodeRef::from_u128(0x1111_0000_0000_0000_0000_0000_0000_0001);
        let mut cfg = EdgeConfig::new(id, DOMAIN, ("198.51.100.1".into(), 5060), [7; 32]);
        tune(&mut cfg);
        let mut edge = SipEdge::new(cfg).unwrap();
        edge.set_users(vec![account("alice", "wonderland"), account("bob", "builder"), account("carol", "c4r0l")]);
        Net { edge, now: start, wall: 1_700_000_000_000, inbox: Vec::new() }
    }

    fn pump(&mut self) {
        while let Some(out) = self.edge.poll_output() {
            match out {
                EdgeOutput::SendLocal { to, bytes } => self.inbox.push((to, SipMessage::parse(&bytes).unwrap())),
                other => panic!("an edge-level test reached the overlay or another node: {other:?}"),
            }
        }
    }

    /// Moves the clock, firing every timer on the way.
    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        while let Some(t) = self.edge.poll_timeout().filter(|t| *t <= end) {
            self.wall += (t.max(self.now) - self.now).as_millis() as u64;
            self.now = t.max(self.now);
            self.edge.handle_timeout(self.now, crate::time::WallTime::from_millis(self.wall));
            self.pump();
        }
        self.wall += (end - self.now).as_millis() as u64;
        self.now = end;
    }
}

impl PhoneNet for Net {
    fn local(&mut self, node: usize, from: TransportAddr, bytes: &[u8]) {
        assert_eq!(node, 0, "one edge");
        self.edge.handle_local(self.now, crate::time::WallTime::from_millis(self.wall), bytes, from);
        self.pump();
    }

    fn take(&mut self, to: TransportAddr) -> Vec<SipMessage> {
        let (mine, rest) = self.inbox.drain(..).partition(|(a, _)| *a == to);
        self.inbox = rest;
        mine.into_iter().map(|(_, m)| m).collect()
    }
}

#[test]
fn malformed_request_gets_400_and_garbage_is_dropped() {
    let mut net = Net::new();
    let bad = String::from_utf8(invite("bob", 1, "z9hG4bKbad1", None))
        .unwrap()
        .replace("Max-Forwards: 70", "Max-Forwards: seventy");
    net.local(0, alice(), bad.as_bytes());
    let r = net.got(alice(), "400");
    assert_eq!(r.reason(), Some("Invalid Max-Forwards header: not a number"));
    assert_eq!(r.call_id(), "7d2e9f3a1b4c5d6e-bob");
    assert!(r.to().tag().is_some());
    net.local(0, alice(), b"\x16\x03\x01\x02\x00 not sip at all\r\n\r\n");
    assert!(net.take(alice()).is_empty());
    net.local(0, alice(), b"\r\n\r\n");
    let c = net.edge.counters();
    assert_eq!((c.malformed_rejected, c.malformed_dropped), (1, 1));
}

#[test]
fn max_forwards_zero_is_483_and_tel_uri_is_416() {
    // Refused before any lookup: the harness fails on a Fetch.
    let mut net = Net::new();
    let zero =
        String::from_utf8(invite("bob", 1, "z9hG4bKmf0", None)).unwrap().replace("Max-Forwards: 70", "Max-Forwards: 0");
    net.local(0, alice(), zero.as_bytes());
    assert_eq!(net.got(alice(), "483").reason(), Some("Too Many Hops"));
    let tel = String::from_utf8(invite("bob", 1, "z9hG4bKtel1", None))
        .unwrap()
        .replace("INVITE sip:bob@chordphone.test", "INVITE tel:+15551234");
    net.local(0, alice(), tel.as_bytes());
    assert_eq!(net.got(alice(), "416").reason(), Some("Unsupported URI Scheme"));
}

#[test]
fn options_to_the_domain_and_other_methods() {
    let mut net = Net::new();
    let probe = |method: &str| {
        msg(
            &format!(
                "
{method} sip:{DOMAIN} SIP/2.0
Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bKopt{method};rport
Max-Forwards: 70
To: <sip:{DOMAIN}>
From: <sip:alice@{DOMAIN}>;tag=o1
Call-ID: opt-{method}
CSeq: 1 {method}
"
            ),
            "",
        )
    };
    net.local(0, alice(), &probe("OPTIONS"));
    assert!(net.got(alice(), "200").header("Allow").unwrap().contains("REGISTER"));
    net.local(0, alice(), &probe("PUBLISH"));
    assert!(net.got(alice(), "405").header("Allow").is_some());
}

#[test]
fn stale_nonce_is_rechallenged_with_stale_true() {
    let mut net = Net::new();
    net.local(0, alice(), &baresip_register("alice", 1, 3600, None));
    let challenge = net.got(alice(), "401");
    net.advance(Duration::from_secs(301));
    let auth = answer(&challenge, "REGISTER", "sip:chordphone.test", "alice", "wonderland", DigestAlgorithm::Md5);
    net.local(0, alice(), &baresip_register("alice", 2, 3600, Some(&auth)));
    let again = net.got(alice(), "401");
    assert!(again.headers("WWW-Authenticate").all(|c| c.contains("stale=true")));
    // Nothing bound (and no Store asked for: the harness fails on one).
    assert!(net.edge.bindings("alice@chordphone.test").is_empty());
}

#[test]
fn challenge_order_and_md5_only() {
    let algs = |net: &mut Net| -> Vec<String> {
        net.local(0, alice(), &baresip_register("alice", 1, 3600, None));
        let c = net.got(alice(), "401");
        c.headers("WWW-Authenticate")
            .map(|h| if h.contains("SHA-256") { "SHA-256".to_owned() } else { "MD5".to_owned() })
            .collect()
    };
    // RFC 8760 §2.4: the preferred algorithm first.
    assert_eq!(algs(&mut Net::new()), ["SHA-256", "MD5"]);
    assert_eq!(algs(&mut Net::with(|c| c.md5_first = true)), ["MD5", "SHA-256"]);
    assert_eq!(algs(&mut Net::with(|c| c.md5_only = true)), ["MD5"]);
}
