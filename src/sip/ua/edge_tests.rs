//! User agents against the real [`SipEdge`] (registrar and proxy), in
//! virtual time. The overlay is answered only as far as the edge needs:
//! every Store and Remove succeeds, Fetches find nothing (all phones are
//! registered at this one edge).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{UaConfig, UaEvent, UserAgent};
use crate::node::db::SipUser;
use crate::sip::NodeRef;
use crate::sip::digest::{self, DigestAlgorithm};
use crate::sip::edge::{EdgeConfig, EdgeOutput, OverlayResult, SipEdge};
use crate::sip::message::SipMessage;
use crate::sip::transaction::{Transport, TransportAddr};

const DOMAIN: &str = "chordphone.test";

fn udp(addr: &str) -> TransportAddr {
    TransportAddr { transport: Transport::Udp, addr: addr.parse().unwrap(), flow: None }
}

fn account(name: &str, password: &str) -> SipUser {
    SipUser {
        aor: format!("{name}@{DOMAIN}"),
        realm: DOMAIN.into(),
        ha1_md5: digest::ha1(DigestAlgorithm::Md5, name, DOMAIN, password),
        ha1_sha256: digest::ha1(DigestAlgorithm::Sha256, name, DOMAIN, password),
        created_unix_s: 0,
    }
}

struct World {
    edge: SipEdge,
    edge_addr: TransportAddr,
    uas: Vec<UserAgent>,
    addrs: Vec<TransportAddr>,
    now: Instant,
    start: Instant,
    wall: u64,
    events: Vec<Vec<(Duration, UaEvent)>>,
    /// Requests the phones sent: (time, phone, message).
    sent: Vec<(Duration, usize, SipMessage)>,
    /// AOR → registered in the (pretend) overlay.
    overlay: BTreeMap<String, bool>,
}

impl World {
    /// An edge with accounts alice/wonderland and bob/builder; `phones`
    /// are (user, password) with `tune` applied to their configuration.
    fn new(edge_tune: impl Fn(&mut EdgeConfig), phones: &[(&str, &str)], tune: impl Fn(usize, &mut UaConfig)) -> World {
        let edge_addr = udp("198.51.100.1:5060");
        let mut cfg = EdgeConfig::new(NodeRef::from_u128(1), DOMAIN, ("198.51.100.1".into(), 5060), [7; 32]);
        edge_tune(&mut cfg);
        let mut edge = SipEdge::new(cfg).unwrap();
        edge.set_users(vec![account("alice", "wonderland"), account("bob", "builder")]);
        let mut uas = Vec::new();
        let mut addrs = Vec::new();
        for (i, (user, password)) in phones.iter().enumerate() {
            let addr = udp(&format!("192.0.2.{}:5060", i + 10));
            let contact = (addr.addr.ip().to_string(), 5060);
            let mut c = UaConfig::new(&format!("sip:{user}@{DOMAIN}"), password, edge_addr, contact, 42 + i as u64);
            tune(i, &mut c);
            uas.push(UserAgent::new(c).unwrap());
            addrs.push(addr);
        }
        let start = Instant::now(); // layering: allowed (test-only: the virtual clock's origin)
        World {
            edge,
            edge_addr,
            events: vec![Vec::new(); uas.len()],
            uas,
            addrs,
            now: start,
            start,
            wall: 1_700_000_000_000,
            sent: Vec::new(),
            overlay: BTreeMap::new(),
        }
    }

    fn pump(&mut self) {
        loop {
            let mut idle = true;
            for i in 0..self.uas.len() {
                while let Some(t) = self.uas[i].poll_transmit() {
                    idle = false;
                    assert_eq!(t.to, self.edge_addr, "a phone sends everything to its next hop");
                    self.sent.push((self.now - self.start, i, SipMessage::parse(&t.payload).unwrap()));
                    self.edge.handle_local(
                        self.now,
                        crate::time::WallTime::from_millis(self.wall),
                        &t.payload,
                        self.addrs[i],
                    );
                }
                while let Some(ev) = self.uas[i].poll_event() {
                    self.events[i].push((self.now - self.start, ev));
                }
            }
            while let Some(out) = self.edge.poll_output() {
                idle = false;
                self.apply(out);
            }
            if idle {
                break;
            }
        }
    }

    fn apply(&mut self, out: EdgeOutput) {
        let (now, wall) = (self.now, self.wall);
        match out {
            EdgeOutput::SendLocal { to, bytes } => {
                let i = self.addrs.iter().position(|a| *a == to).expect("edge sent to an unknown phone");
                self.uas[i].handle_input(now, self.edge_addr, &bytes);
            }
            EdgeOutput::StoreRegistration { op, aor, .. } => {
                self.overlay.insert(aor, true);
                self.edge.handle_overlay(now, crate::time::WallTime::from_millis(wall), op, OverlayResult::Stored);
            }
            EdgeOutput::RemoveRegistration { op, aor } => {
                self.overlay.insert(aor, false);
                self.edge.handle_overlay(now, crate::time::WallTime::from_millis(wall), op, OverlayResult::Stored);
            }
            EdgeOutput::FetchRegistration { op, .. } => {
                self.edge.handle_overlay(
                    now,
                    crate::time::WallTime::from_millis(wall),
                    op,
                    OverlayResult::Located(Vec::new()),
                );
            }
            EdgeOutput::SendNode { .. } => panic!("one edge: nothing goes to another node"),
        }
    }

    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        self.pump();
        loop {
            let next = self.uas.iter().filter_map(UserAgent::poll_timeout).chain(self.edge.poll_timeout()).min();
            let Some(t) = next.filter(|t| *t <= end) else { break };
            if t > self.now {
                self.wall += (t - self.now).as_millis() as u64;
                self.now = t;
            }
            self.edge.handle_timeout(self.now, crate::time::WallTime::from_millis(self.wall));
            for ua in &mut self.uas {
                ua.handle_timeout(self.now);
            }
            self.pump();
        }
        self.wall += (end - self.now).as_millis() as u64;
        self.now = end;
    }

    fn take(&mut self, i: usize) -> Vec<UaEvent> {
        self.events[i].drain(..).map(|(_, e)| e).collect()
    }

    /// The Authorization values phone `i` sent in REGISTERs.
    fn authorizations(&self, i: usize) -> Vec<String> {
        self.sent
            .iter()
            .filter(|(_, p, m)| *p == i && m.method().is_some_and(|m| m.as_str() == "REGISTER"))
            .filter_map(|(_, _, m)| m.header("Authorization").map(str::to_owned))
            .collect()
    }

    fn registers(&self, i: usize) -> usize {
        self.sent.iter().filter(|(_, p, m)| *p == i && m.method().is_some_and(|m| m.as_str() == "REGISTER")).count()
    }
}

#[test]
fn register_with_sha256_and_with_md5() {
    let mut w = World::new(
        |_| {},
        &[("alice", "wonderland"), ("bob", "builder")],
        |i, c| {
            if i == 1 {
                c.algorithms = vec![DigestAlgorithm::Md5];
            }
        },
    );
    w.uas[0].register(w.now).unwrap();
    w.uas[1].register(w.now).unwrap();
    w.advance(Duration::from_millis(10));
    assert_eq!(w.take(0), vec![UaEvent::Registered { expires: 3600 }]);
    assert_eq!(w.take(1), vec![UaEvent::Registered { expires: 3600 }]);
    // 401 first, then credentials: SHA-256 (listed first) and MD5.
    assert_eq!(w.registers(0), 2);
    let (a, b) = (w.authorizations(0), w.authorizations(1));
    assert!(a.len() == 1 && a[0].contains("algorithm=SHA-256") && a[0].contains("nc=00000001"), "{a:?}");
    assert!(b.len() == 1 && b[0].contains("algorithm=MD5"), "{b:?}");
    assert!(w.uas[0].is_registered() && w.uas[1].is_registered());
    assert_eq!(w.edge.bindings("alice@chordphone.test").len(), 1);
    assert_eq!(w.edge.bindings("bob@chordphone.test")[0].source, w.addrs[1]);
    assert_eq!(w.overlay.get("alice@chordphone.test"), Some(&true));

    // An edge offering only MD5: a phone allowing both picks MD5.
    let mut w = World::new(|c| c.md5_only = true, &[("alice", "wonderland")], |_, _| {});
    w.uas[0].register(w.now).unwrap();
    w.advance(Duration::from_millis(10));
    assert_eq!(w.take(0), vec![UaEvent::Registered { expires: 3600 }]);
    assert!(w.authorizations(0)[0].contains("algorithm=MD5"));
}

#[test]
fn wrong_password_fails_and_is_not_retried() {
    let mut w = World::new(|_| {}, &[("alice", "rabbit-hole"), ("mallory", "x")], |_, _| {});
    w.uas[0].register(w.now).unwrap();
    w.uas[1].register(w.now).unwrap();
    w.advance(Duration::from_secs(600));
    // The edge answers both a wrong password and an unknown user with 403.
    assert_eq!(w.take(0), vec![UaEvent::RegistrationFailed { code: 403 }]);
    assert_eq!(w.take(1), vec![UaEvent::RegistrationFailed { code: 403 }]);
    assert_eq!(w.registers(0), 2);
    assert!(!w.uas[0].is_registered());
    assert!(w.edge.bindings("alice@chordphone.test").is_empty());
}

#[test]
fn refreshes_before_expiry_across_stale_nonces() {
    let mut w = World::new(|_| {}, &[("alice", "wonderland")], |_, c| c.register_expires = 120);
    w.uas[0].register(w.now).unwrap();
    // 15 minutes: the 5-minute nonces go stale twice on the way.
    for _ in 0..900 {
        w.advance(Duration::from_secs(1));
        assert_eq!(w.edge.bindings("alice@chordphone.test").len(), 1, "binding lapsed at {:?}", w.now - w.start);
    }
    let times: Vec<Duration> = w.events[0]
        .iter()
        .map(|(t, e)| {
            assert_eq!(e, &UaEvent::Registered { expires: 120 });
            *t
        })
        .collect();
    assert_eq!(times.len(), 16, "{times:?}");
    for pair in times.windows(2) {
        assert_eq!(pair[1] - pair[0], Duration::from_secs(60), "refresh at half of 120 s");
    }
    // Refreshes reuse the nonce with a growing nc; a stale nonce costs one
    // extra round trip, never a failure.
    let auths = w.authorizations(0);
    assert!(auths.iter().any(|a| a.contains("nc=00000002")));
    assert!(w.registers(0) > times.len() + 1 && w.registers(0) <= times.len() + 4, "{}", w.registers(0));
    assert_eq!(w.overlay.get("alice@chordphone.test"), Some(&true));
}

#[test]
fn interval_too_brief_then_unregister() {
    let mut w = World::new(|_| {}, &[("alice", "wonderland")], |_, c| c.register_expires = 30);
    w.uas[0].register(w.now).unwrap();
    w.advance(Duration::from_millis(10));
    // 401, then 423 Min-Expires: 60, then 200 for 60 s.
    assert_eq!(w.take(0), vec![UaEvent::Registered { expires: 60 }]);
    assert_eq!(w.registers(0), 3);
    w.uas[0].unregister(w.now).unwrap();
    w.advance(Duration::from_millis(10));
    assert_eq!(w.take(0), vec![UaEvent::Unregistered]);
    assert!(w.edge.bindings("alice@chordphone.test").is_empty());
    assert_eq!(w.overlay.get("alice@chordphone.test"), Some(&false));
    // No refresh after unregistering.
    w.advance(Duration::from_secs(300));
    assert_eq!(w.registers(0), 4);
}

#[test]
fn call_and_message_through_the_edge() {
    let mut w = World::new(
        |_| {},
        &[("alice", "wonderland"), ("bob", "builder")],
        |i, c| {
            c.auto_answer = (i == 1).then_some(Duration::from_secs(1));
        },
    );
    w.uas[0].register(w.now).unwrap();
    w.uas[1].register(w.now).unwrap();
    w.advance(Duration::from_millis(10));
    w.take(0);
    w.take(1);
    let call = w.uas[0].call(w.now, "bob@chordphone.test", None).unwrap();
    w.advance(Duration::from_secs(2));
    let a = w.take(0);
    assert_eq!(a[0], UaEvent::Ringing { call });
    assert_eq!(a[1], UaEvent::CallEstablished { call, setup: Duration::from_secs(1) });
    let b = w.take(1);
    assert!(matches!(b[0], UaEvent::IncomingCall { .. }), "{b:?}");
    assert!(matches!(b[1], UaEvent::CallEstablished { .. }), "{b:?}");
    // 407 then INVITE with Proxy-Authorization; the 2xx ACK and the BYE
    // carry the edge's Record-Route as Route.
    let invites: Vec<&SipMessage> = w
        .sent
        .iter()
        .filter(|(_, p, m)| *p == 0 && m.method().is_some_and(|m| m.as_str() == "INVITE"))
        .map(|(_, _, m)| m)
        .collect();
    assert_eq!(invites.len(), 2);
    assert!(invites[1].header("Proxy-Authorization").is_some_and(|v| v.contains("algorithm=SHA-256")));
    assert_eq!(invites[1].cseq().seq, invites[0].cseq().seq + 1);
    let answered_cseq = invites[1].cseq().seq;
    w.uas[1].hangup(w.now, call_of(&b)).unwrap();
    w.advance(Duration::from_secs(1));
    assert_eq!(w.take(0), vec![UaEvent::CallEnded { call, by_remote: true }]);
    assert_eq!(w.take(1), vec![UaEvent::CallEnded { call: call_of(&b), by_remote: false }]);
    let routed: Vec<&SipMessage> = w
        .sent
        .iter()
        // (The ACK of the 407 is hop by hop, without Route, §17.1.1.3.)
        .filter(|(_, _, m)| m.method().is_some_and(|m| matches!(m.as_str(), "ACK" | "BYE")))
        .filter(|(_, p, m)| *p == 1 || m.cseq().seq >= answered_cseq)
        .map(|(_, _, m)| m)
        .collect();
    assert!(routed.iter().any(|m| m.method().unwrap().as_str() == "ACK"));
    assert!(routed.iter().any(|m| m.method().unwrap().as_str() == "BYE"));
    for m in routed {
        assert!(
            m.header("Route").is_some_and(|r| r.contains("198.51.100.1")),
            "{:?}",
            String::from_utf8_lossy(&m.to_bytes())
        );
    }

    // MESSAGE: the cached proxy challenge is answered at once (no 407).
    let before = w.edge.counters().auth_challenges;
    let id = w.uas[0].send_message(w.now, "bob@chordphone.test", b"ping".to_vec()).unwrap();
    w.advance(Duration::from_millis(10));
    assert_eq!(w.take(0), vec![UaEvent::MessageDelivered { id }]);
    assert_eq!(
        w.take(1),
        vec![UaEvent::MessageReceived { from: "sip:alice@chordphone.test".into(), body: b"ping".to_vec() }]
    );
    assert_eq!(w.edge.counters().auth_challenges, before);
    assert_eq!(w.uas[0].counters(), Default::default());
    assert_eq!(w.uas[1].counters(), Default::default());
}

fn call_of(evs: &[UaEvent]) -> super::CallId {
    evs.iter()
        .find_map(|e| match e {
            UaEvent::IncomingCall { call, .. } => Some(*call),
            _ => None,
        })
        .unwrap()
}
