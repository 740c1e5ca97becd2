//! User agent ↔ user agent, directly: each one's next hop is the other, in
//! virtual time, with datagrams lost on purpose.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{CallId, UaConfig, UaEvent, UserAgent};
use crate::sip::message::SipMessage;
use crate::sip::transaction::{Transport, TransportAddr};

const T1: Duration = Duration::from_millis(500);

fn udp(addr: &str) -> TransportAddr {
    TransportAddr { transport: Transport::Udp, addr: addr.parse().unwrap(), flow: None }
}

/// Two phones, alice (0) and bob (1), each the other's next hop.
struct Pair {
    uas: Vec<UserAgent>,
    addrs: Vec<TransportAddr>,
    now: Instant,
    start: Instant,
    events: Vec<Vec<(Duration, UaEvent)>>,
    /// First-line prefix → datagrams with it still to lose.
    lose: BTreeMap<String, usize>,
    lost: usize,
    /// Every datagram delivered: (time, from, first line).
    wire: Vec<(Duration, usize, String)>,
    sent: Vec<Vec<u8>>,
}

impl Pair {
    fn new(tune: impl Fn(usize, &mut UaConfig)) -> Pair {
        let addrs = vec![udp("192.0.2.1:5060"), udp("192.0.2.2:5060")];
        let names = ["alice", "bob"];
        let uas = (0..2)
            .map(|i| {
                let contact = (addrs[i].addr.ip().to_string(), 5060);
                let aor = format!("sip:{}@chordphone.test", names[i]);
                let mut cfg = UaConfig::new(&aor, "pw", addrs[1 - i], contact, 100 + i as u64);
                tune(i, &mut cfg);
                UserAgent::new(cfg).unwrap()
            })
            .collect();
        let start = Instant::now(); // layering: allowed (test-only: the virtual clock's origin)
        Pair {
            uas,
            addrs,
            now: start,
            start,
            events: vec![Vec::new(), Vec::new()],
            lose: BTreeMap::new(),
            lost: 0,
            wire: Vec::new(),
            sent: Vec::new(),
        }
    }

    fn lose(&mut self, prefix: &str, n: usize) {
        self.lose.insert(prefix.to_owned(), n);
    }

    fn pump(&mut self) {
        loop {
            let mut idle = true;
            for i in 0..2 {
                while let Some(t) = self.uas[i].poll_transmit() {
                    idle = false;
                    let line = String::from_utf8_lossy(&t.payload).lines().next().unwrap_or("").to_owned();
                    if let Some(n) = self.lose.iter_mut().find(|(p, n)| line.starts_with(p.as_str()) && **n > 0) {
                        *n.1 -= 1;
                        self.lost += 1;
                        continue;
                    }
                    let j = self.addrs.iter().position(|a| *a == t.to).expect("sent to an unknown address");
                    self.wire.push((self.now - self.start, i, line));
                    self.sent.push(t.payload.to_vec());
                    self.uas[j].handle_input(self.now, self.addrs[i], &t.payload);
                }
                while let Some(ev) = self.uas[i].poll_event() {
                    self.events[i].push((self.now - self.start, ev));
                }
            }
            if idle {
                break;
            }
        }
    }

    /// Moves virtual time by `by`, firing timers on the way.
    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        self.pump();
        while let Some(t) = self.uas.iter().filter_map(UserAgent::poll_timeout).min().filter(|t| *t <= end) {
            self.now = self.now.max(t);
            for ua in &mut self.uas {
                ua.handle_timeout(self.now);
            }
            self.pump();
        }
        self.now = end;
    }

    fn take(&mut self, i: usize) -> Vec<UaEvent> {
        self.events[i].drain(..).map(|(_, e)| e).collect()
    }

    fn count(&self, prefix: &str) -> usize {
        self.wire.iter().filter(|(_, _, l)| l.starts_with(prefix)).count()
    }
}

fn established(evs: &[UaEvent]) -> Option<(CallId, Duration)> {
    evs.iter().find_map(|e| match e {
        UaEvent::CallEstablished { call, setup } => Some((*call, *setup)),
        _ => None,
    })
}

fn incoming(evs: &[UaEvent]) -> Option<CallId> {
    evs.iter().find_map(|e| match e {
        UaEvent::IncomingCall { call, .. } => Some(*call),
        _ => None,
    })
}

#[test]
fn call_setup_ack_and_bye_in_both_directions() {
    let mut p = Pair::new(|i, c| c.auto_answer = (i == 1).then_some(Duration::from_secs(2)));
    // alice → bob, bob answers by itself after 2 s.
    let call = p.uas[0].call(p.now, "bob@chordphone.test", None).unwrap();
    p.advance(Duration::from_millis(10));
    let (a, b) = (p.take(0), p.take(1));
    assert_eq!(a, vec![UaEvent::Ringing { call }]);
    let bob_call = incoming(&b).unwrap();
    assert!(matches!(&b[0], UaEvent::IncomingCall { from, .. } if from == "sip:alice@chordphone.test"));
    p.advance(Duration::from_secs(3));
    assert_eq!(established(&p.take(0)), Some((call, Duration::from_secs(2))));
    assert_eq!(established(&p.take(1)), Some((bob_call, Duration::from_secs(2))));
    assert_eq!((p.uas[0].active_calls(), p.uas[1].active_calls()), (1, 1));
    p.uas[0].hangup(p.now, call).unwrap();
    p.advance(Duration::from_secs(1));
    assert_eq!(p.take(0), vec![UaEvent::CallEnded { call, by_remote: false }]);
    assert_eq!(p.take(1), vec![UaEvent::CallEnded { call: bob_call, by_remote: true }]);
    let lines: Vec<&str> = p.wire.iter().map(|(_, _, l)| l.as_str()).collect();
    assert_eq!(
        lines,
        [
            "INVITE sip:bob@chordphone.test SIP/2.0",
            "SIP/2.0 180 Ringing",
            "SIP/2.0 200 OK",
            "ACK sip:bob@192.0.2.2:5060 SIP/2.0",
            "BYE sip:bob@192.0.2.2:5060 SIP/2.0",
            "SIP/2.0 200 OK"
        ]
    );

    // bob → alice, alice answers explicitly, bob hangs up.
    let call = p.uas[1].call(p.now, "sip:alice@chordphone.test", Some(b"v=0\r\n".to_vec())).unwrap();
    p.advance(Duration::from_millis(10));
    let alice_call = incoming(&p.take(0)).unwrap();
    assert_eq!(p.take(1), vec![UaEvent::Ringing { call }]);
    p.advance(Duration::from_secs(5));
    assert!(p.take(1).is_empty(), "no auto-answer configured for alice");
    p.uas[0].answer(p.now, alice_call, Some(b"v=0\r\ns=answer\r\n".to_vec())).unwrap();
    p.advance(Duration::from_millis(10));
    assert_eq!(established(&p.take(1)), Some((call, Duration::from_millis(5010))));
    assert!(established(&p.take(0)).is_some());
    p.uas[1].hangup(p.now, call).unwrap();
    p.advance(Duration::from_secs(1));
    assert_eq!(p.take(0), vec![UaEvent::CallEnded { call: alice_call, by_remote: true }]);
    assert_eq!((p.uas[0].active_calls(), p.uas[1].active_calls()), (0, 0));
    assert_eq!(p.lost, 0);
    assert_eq!(p.uas[0].counters(), Default::default());
}

#[test]
fn dialog_messages_follow_rfc3261() {
    let mut p = Pair::new(|i, c| c.auto_answer = (i == 1).then_some(Duration::from_secs(1)));
    let call = p.uas[0].call(p.now, "bob@chordphone.test", None).unwrap();
    p.advance(Duration::from_secs(2));
    p.uas[0].hangup(p.now, call).unwrap();
    p.advance(Duration::from_secs(1));
    let msgs: Vec<SipMessage> = p.sent.iter().map(|b| SipMessage::parse(b).unwrap()).collect();
    let (invite, ok, ack, bye) = (&msgs[0], &msgs[2], &msgs[3], &msgs[4]);
    assert_eq!(invite.header("Content-Type"), Some("application/sdp"));
    assert!(invite.body().starts_with(b"v=0\r\n"));
    assert!(invite.top_via().unwrap().branch().unwrap().starts_with("z9hG4bK"));
    // §13.2.2.4: ACK has the INVITE's CSeq number, the dialog's tags and a
    // new branch; BYE a higher CSeq.
    assert_eq!(ack.cseq().seq, invite.cseq().seq);
    assert_eq!(ack.to().tag(), ok.to().tag());
    assert_eq!(ack.from().tag(), invite.from().tag());
    assert_ne!(ack.top_via().unwrap().branch(), invite.top_via().unwrap().branch());
    assert_eq!(bye.cseq().seq, invite.cseq().seq + 1);
    assert_eq!(bye.call_id(), invite.call_id());
    assert_eq!(ok.header("Content-Type"), Some("application/sdp"));
    assert!(ok.header("Contact").is_some());
}

#[test]
fn instant_messages_both_ways() {
    let mut p = Pair::new(|_, _| {});
    let id = p.uas[0].send_message(p.now, "bob@chordphone.test", b"hello bob".to_vec()).unwrap();
    p.advance(Duration::from_millis(10));
    assert_eq!(p.take(0), vec![UaEvent::MessageDelivered { id }]);
    assert_eq!(
        p.take(1),
        vec![UaEvent::MessageReceived { from: "sip:alice@chordphone.test".into(), body: b"hello bob".to_vec() }]
    );
    let id = p.uas[1].send_message(p.now, "sip:alice@chordphone.test", b"hi".to_vec()).unwrap();
    p.advance(Duration::from_millis(10));
    assert_eq!(p.take(1), vec![UaEvent::MessageDelivered { id }]);
    assert_eq!(p.take(0).len(), 1);
    // Nobody answers: Timer F → 408.
    p.lose("SIP/2.0 200", 100);
    let id = p.uas[0].send_message(p.now, "bob@chordphone.test", b"lost".to_vec()).unwrap();
    p.advance(Duration::from_secs(40));
    assert_eq!(p.take(0), vec![UaEvent::MessageFailed { id, code: 408 }]);
}

#[test]
fn lost_datagrams_are_recovered_by_retransmission() {
    let mut p = Pair::new(|i, c| c.auto_answer = (i == 1).then_some(Duration::from_secs(2)));
    for first_line in ["INVITE", "SIP/2.0 180", "SIP/2.0 200", "ACK", "BYE"] {
        p.lose(first_line, 1);
    }
    let call = p.uas[0].call(p.now, "bob@chordphone.test", None).unwrap();
    p.advance(Duration::from_secs(10));
    let a = p.take(0);
    // INVITE lost once: it arrives at T1 and rings; the 180 is lost and
    // re-sent for the next INVITE retransmission (at 3*T1). bob answers
    // 2 s after the INVITE came; the 200 is lost and the UAS core repeats
    // it at T1; then the ACK is lost and the 200 repeated again (2*T1).
    assert_eq!(
        a,
        vec![UaEvent::Ringing { call }, UaEvent::CallEstablished { call, setup: T1 + Duration::from_secs(2) + T1 }]
    );
    let bob_call = established(&p.take(1)).unwrap().0;
    assert!(p.uas[1].counters().retransmitted_2xx >= 2);
    p.uas[0].hangup(p.now, call).unwrap();
    p.advance(Duration::from_secs(5));
    assert_eq!(p.take(0), vec![UaEvent::CallEnded { call, by_remote: false }]);
    assert_eq!(p.take(1), vec![UaEvent::CallEnded { call: bob_call, by_remote: true }]);
    assert_eq!(p.lost, 5);
}

#[test]
fn cancel_before_answer() {
    let mut p = Pair::new(|_, _| {});
    let call = p.uas[0].call(p.now, "bob@chordphone.test", None).unwrap();
    p.advance(Duration::from_millis(10));
    let bob_call = incoming(&p.take(1)).unwrap();
    p.uas[0].hangup(p.now, call).unwrap();
    p.advance(Duration::from_secs(1));
    assert_eq!(p.take(0), vec![UaEvent::Ringing { call }, UaEvent::CallFailed { call, code: 487 }]);
    assert_eq!(p.take(1), vec![UaEvent::CallEnded { call: bob_call, by_remote: true }]);
    assert_eq!(p.count("CANCEL"), 1);
    assert_eq!(p.count("SIP/2.0 487"), 1);
    assert_eq!(p.count("ACK"), 1, "the 487 is ACKed hop by hop");
    // Declining a ringing call: 603 to the caller.
    let call = p.uas[0].call(p.now, "bob@chordphone.test", None).unwrap();
    p.advance(Duration::from_millis(10));
    let bob_call = incoming(&p.take(1)).unwrap();
    p.uas[1].hangup(p.now, bob_call).unwrap();
    p.advance(Duration::from_millis(10));
    assert_eq!(p.take(0), vec![UaEvent::Ringing { call }, UaEvent::CallFailed { call, code: 603 }]);
}

#[test]
fn unacknowledged_2xx_ends_the_call() {
    let mut p = Pair::new(|i, c| c.auto_answer = (i == 1).then_some(Duration::ZERO));
    p.lose("ACK", 100);
    let call = p.uas[0].call(p.now, "bob@chordphone.test", None).unwrap();
    p.advance(Duration::from_secs(40));
    let bob = p.take(1);
    assert!(matches!(bob.last(), Some(UaEvent::CallFailed { code: 408, .. })), "{bob:?}");
    // bob's BYE ends alice's call too.
    assert_eq!(p.take(0).last(), Some(&UaEvent::CallEnded { call, by_remote: true }));
    assert_eq!(p.uas[1].counters().retransmitted_2xx, 10, "Timer G: 0.5, 1, 2, 4, 4 … s until 64*T1");
}

#[test]
fn bad_input_is_counted_or_answered() {
    let mut p = Pair::new(|_, _| {});
    let (alice, bob) = (p.addrs[0], p.addrs[1]);
    p.uas[1].handle_input(p.now, alice, b"garbage\r\n\r\n");
    p.uas[1].handle_input(p.now, alice, b"\r\n\r\n");
    assert_eq!(p.uas[1].counters().malformed, 1);
    let req = |method: &str, to_tag: &str| {
        format!(
            "{method} sip:bob@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{method}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@chordphone.test>;tag=a\r\nTo: <sip:bob@chordphone.test>{to_tag}\r\n\
             Call-ID: x1\r\nCSeq: 5 {method}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let answers = |p: &mut Pair, text: String| {
        p.uas[1].handle_input(p.now, alice, text.as_bytes());
        let t = p.uas[1].poll_transmit().unwrap();
        assert_eq!(t.to, alice);
        SipMessage::parse(&t.payload).unwrap().status().unwrap().as_u16()
    };
    assert_eq!(answers(&mut p, req("BYE", ";tag=zz")), 481);
    assert_eq!(answers(&mut p, req("OPTIONS", "")), 200);
    assert_eq!(answers(&mut p, req("SUBSCRIBE", "")), 405);
    assert_eq!(answers(&mut p, req("INFO", ";tag=zz")), 481);
    // An INVITE without Contact cannot make a dialog.
    assert_eq!(answers(&mut p, req("INVITE", "")), 400);
    // A response to nothing.
    let stray = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKnope\r\nFrom: <sip:b@d>;tag=1\r\n\
                 To: <sip:a@d>;tag=2\r\nCall-ID: y\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    p.uas[1].handle_input(p.now, alice, stray.as_bytes());
    let c = p.uas[1].counters();
    assert_eq!((c.stray_responses, c.unknown_dialog, c.rejected_requests), (1, 2, 2));
    assert!(p.uas[1].poll_transmit().is_none());
    let _ = bob;
    // API misuse is an error, not a panic.
    assert!(p.uas[0].call(p.now, "not a uri", None).is_err());
    assert!(p.uas[0].hangup(p.now, CallId(999)).is_err());
    assert!(p.uas[0].answer(p.now, CallId(999), None).is_err());
}

#[test]
fn same_seed_same_bytes() {
    let run = || {
        let mut p = Pair::new(|i, c| c.auto_answer = (i == 1).then_some(Duration::from_millis(300)));
        p.lose("SIP/2.0 200", 1);
        let call = p.uas[0].call(p.now, "bob@chordphone.test", None).unwrap();
        p.uas[1].send_message(p.now, "alice@chordphone.test", b"x".to_vec()).unwrap();
        p.advance(Duration::from_secs(3));
        p.uas[0].hangup(p.now, call).unwrap();
        p.advance(Duration::from_secs(3));
        p.sent
    };
    let (a, b) = (run(), run());
    assert!(!a.is_empty());
    assert_eq!(a, b);
}

#[test]
fn a_user_agent_is_small() {
    // The simulator keeps 20,000 and more of these.
    let size = std::mem::size_of::<UserAgent>();
    println!("size_of::<UserAgent>() = {size}");
    assert!(size <= 1280, "UserAgent is {size} bytes");
}

/// 20,000 phones in one process, the way a simulator drives them: every
/// even phone calls its odd neighbour (auto-answer after 1 s), hangs up
/// 10 s later, and every phone sends one MESSAGE. Timers are kept in one
/// ordered set, so only due phones are touched.
#[test]
#[ignore = "scale figure: cargo test --release --lib sip::ua::tests::twenty_thousand_phones -- --ignored --nocapture"]
fn twenty_thousand_phones() {
    use std::collections::{BTreeSet, VecDeque};
    const N: usize = 20_000;
    let addr = |i: usize| udp(&format!("10.{}.{}.{}:5060", i >> 16, (i >> 8) & 255, i & 255));
    let index = |a: &TransportAddr| match a.addr.ip() {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            (usize::from(o[1]) << 16) | (usize::from(o[2]) << 8) | usize::from(o[3])
        }
        std::net::IpAddr::V6(_) => unreachable!(),
    };
    let wall = std::time::Instant::now(); // layering: allowed (test-only: measures the run)
    let mut uas: Vec<UserAgent> = (0..N)
        .map(|i| {
            let a = addr(i);
            let mut c = UaConfig::new(
                &format!("sip:u{i}@sim.test"),
                "pw",
                addr(i ^ 1),
                (a.addr.ip().to_string(), 5060),
                i as u64,
            );
            c.auto_answer = Some(Duration::from_secs(1));
            UserAgent::new(c).unwrap()
        })
        .collect();
    let start = Instant::now(); // layering: allowed (test-only: the virtual clock's origin)
    let mut now = start;
    let mut timers: BTreeSet<(Instant, usize)> = BTreeSet::new();
    let mut scheduled: Vec<Option<Instant>> = vec![None; N];
    let mut wire: VecDeque<(usize, usize, bytes::Bytes)> = VecDeque::new();
    let (mut established, mut ended, mut delivered, mut datagrams) = (0usize, 0usize, 0usize, 0usize);
    let mut calls = Vec::new();
    for (i, ua) in uas.iter_mut().enumerate() {
        if i % 2 == 0 {
            calls.push((i, ua.call(now, &format!("u{}@sim.test", i + 1), None).unwrap()));
        }
        ua.send_message(now, &format!("u{}@sim.test", i ^ 1), b"hi".to_vec()).unwrap();
    }
    let mut touched: Vec<usize> = (0..N).collect();
    let mut hung_up = false;
    loop {
        // Drain the phones that did something, then deliver their datagrams.
        while !touched.is_empty() || !wire.is_empty() {
            for i in touched.drain(..) {
                while let Some(t) = uas[i].poll_transmit() {
                    wire.push_back((i, index(&t.to), t.payload));
                }
                while let Some(ev) = uas[i].poll_event() {
                    match ev {
                        UaEvent::CallEstablished { .. } => established += 1,
                        UaEvent::CallEnded { .. } => ended += 1,
                        UaEvent::MessageDelivered { .. } => delivered += 1,
                        _ => {}
                    }
                }
                let next = uas[i].poll_timeout();
                if scheduled[i] != next {
                    if let Some(old) = scheduled[i] {
                        timers.remove(&(old, i));
                    }
                    if let Some(at) = next {
                        timers.insert((at, i));
                    }
                    scheduled[i] = next;
                }
            }
            while let Some((from, to, bytes)) = wire.pop_front() {
                datagrams += 1;
                uas[to].handle_input(now, addr(from), &bytes);
                touched.push(to);
            }
        }
        if !hung_up && now >= start + Duration::from_secs(11) {
            hung_up = true;
            for &(i, call) in &calls {
                uas[i].hangup(now, call).unwrap();
                touched.push(i);
            }
            continue;
        }
        let Some(&(at, i)) = timers.first() else { break };
        if at > start + Duration::from_secs(120) {
            break;
        }
        timers.pop_first();
        scheduled[i] = None;
        now = now.max(at);
        if !hung_up && now >= start + Duration::from_secs(11) {
            timers.insert((at, i));
            scheduled[i] = Some(at);
            continue;
        }
        uas[i].handle_timeout(now);
        touched.push(i);
    }
    let rss = std::fs::read_to_string("/proc/self/status") // layering: allowed (test-only: reports memory)
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?")
        .to_owned();
    println!(
        "{N} phones: {established} established (both ends), {ended} ended, {delivered} messages, {datagrams} datagrams, \
         {:?} wall, {rss}",
        wall.elapsed()
    );
    assert_eq!((established, ended, delivered), (N, N, N));
}

/// alice against a scripted far end that challenges with 407.
#[test]
fn challenged_requests_are_retried_with_credentials() {
    use crate::sip::digest::{DigestAlgorithm, ha1, parse_credentials, verify};
    let far = udp("192.0.2.2:5060");
    let cfg = UaConfig::new("sip:alice@d.test", "secret", far, ("192.0.2.1".into(), 5060), 9);
    let mut ua = UserAgent::new(cfg).unwrap();
    let now = Instant::now(); // layering: allowed (test-only: the virtual clock's origin)
    let next = |ua: &mut UserAgent| SipMessage::parse(&ua.poll_transmit().unwrap().payload).unwrap();
    let answer = |ua: &mut UserAgent, req: &SipMessage, code: u16, extra: &[(&str, &str)]| {
        let status = crate::sip::message::StatusCode::new(code).unwrap();
        let mut r = SipMessage::response_to(req, status, None, Some("far1"));
        for (n, v) in extra {
            r.add_header(n, v).unwrap();
        }
        ua.handle_input(now, far, &r.to_bytes());
    };
    let challenge = "Digest realm=\"d.test\", nonce=\"n1\", algorithm=MD5, qop=\"auth\"";
    let stored = ha1(DigestAlgorithm::Md5, "alice", "d.test", "secret");

    let call = ua.call(now, "bob@d.test", None).unwrap();
    let invite = next(&mut ua);
    answer(&mut ua, &invite, 407, &[("Proxy-Authenticate", challenge)]);
    assert_eq!(next(&mut ua).method().unwrap().as_str(), "ACK");
    let invite2 = next(&mut ua);
    assert_eq!(invite2.cseq().seq, invite.cseq().seq + 1);
    assert_eq!((invite2.call_id(), invite2.from().tag()), (invite.call_id(), invite.from().tag()));
    let creds = parse_credentials(invite2.header("Proxy-Authorization").unwrap()).unwrap();
    assert!(verify(&creds, "INVITE", &stored, None));
    answer(&mut ua, &invite2, 200, &[("Contact", "<sip:bob@192.0.2.2>")]);
    let ack = next(&mut ua);
    assert_eq!(ack.request_uri().unwrap().to_string(), "sip:bob@192.0.2.2");
    assert!(matches!(ua.poll_event(), Some(UaEvent::CallEstablished { .. })));

    ua.hangup(now, call).unwrap();
    let bye = next(&mut ua);
    assert!(bye.header("Proxy-Authorization").is_none(), "no credentials in dialog until challenged");
    answer(&mut ua, &bye, 407, &[("Proxy-Authenticate", challenge)]);
    let bye2 = next(&mut ua);
    assert_eq!(bye2.cseq().seq, bye.cseq().seq + 1);
    let creds = parse_credentials(bye2.header("Proxy-Authorization").unwrap()).unwrap();
    assert_eq!(creds.nc.as_ref().map(|n| n.value()), Some(2), "the nonce is reused with the next nc");
    assert!(verify(&creds, "BYE", &stored, None));
    answer(&mut ua, &bye2, 200, &[]);
    assert_eq!(ua.poll_event(), Some(UaEvent::CallEnded { call, by_remote: false }));

    // A second fresh challenge after our credentials: the password is wrong.
    let call = ua.call(now, "bob@d.test", None).unwrap();
    let invite = next(&mut ua);
    assert!(invite.header("Proxy-Authorization").is_some(), "the cached challenge is answered at once");
    answer(&mut ua, &invite, 407, &[("Proxy-Authenticate", "Digest realm=\"d.test\", nonce=\"n2\", qop=\"auth\"")]);
    let _ack = next(&mut ua);
    let invite2 = next(&mut ua);
    answer(&mut ua, &invite2, 407, &[("Proxy-Authenticate", "Digest realm=\"d.test\", nonce=\"n3\", qop=\"auth\"")]);
    assert_eq!(ua.poll_event(), Some(UaEvent::CallFailed { call, code: 407 }));
}
