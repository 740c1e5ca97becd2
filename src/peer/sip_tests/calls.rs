//! Calls and MESSAGEs across nodes on the real overlay: the caller's node
//! finds the callee's with a Fetch, reaches it after an AppAttach, and
//! forwards over the node-to-node SIP connection.

use std::time::Duration;

use super::{Net, two_users};
use crate::overlay::Outcome;
use crate::sip::digest::DigestAlgorithm;
use crate::sip::message::{Method, SipMessage, StatusCode};
use crate::sip::test_phones::{
    DOMAIN, PhoneNet, SDP, alice, answer, baresip_register, bob, bob2, call, login, msg, reply, user_of_route,
};
use crate::usage;

#[test]
fn call_across_nodes_with_record_route_ack_and_bye() {
    let mut net = two_users();
    call(&mut net, "bob");
    let trying = net.got(alice(), "100");
    assert_eq!(trying.to().tag(), None);

    // Bob's Linphone gets the INVITE over its registration flow, addressed
    // to its Contact, with both nodes' Record-Route and Via.
    let inv = net.got(bob(), "INVITE");
    assert_eq!(inv.request_uri().unwrap().to_string(), "sip:bob@10.0.0.7:40123;transport=tcp");
    let rr: Vec<String> = inv.header_list("Record-Route").map(str::to_owned).collect();
    assert_eq!(rr.len(), 2, "{rr:?}");
    assert_eq!(user_of_route(&rr[0]), net.ids[1].to_hex());
    assert!(rr[0].contains("198.51.100.2:5070;transport=tcp;cpt="), "B faces Bob over TCP: {}", rr[0]);
    assert!(rr[0].ends_with(";lr>"), "{}", rr[0]);
    assert_eq!(user_of_route(&rr[1]), net.ids[0].to_hex());
    assert!(rr[1].contains("198.51.100.1:5060;transport=udp;cpt="), "A faces Alice over UDP: {}", rr[1]);
    assert_eq!(inv.vias().len(), 3);
    assert_eq!(inv.max_forwards(), Some(68));
    assert_eq!(inv.header("Proxy-Authorization"), None, "our credentials are consumed");
    assert_eq!(inv.body(), SDP.as_bytes(), "SDP untouched");

    let bob_contact = "<sip:bob@10.0.0.7:40123;transport=tcp>";
    net.local(1, bob(), &reply(&inv, 180, "bobtag", Some(bob_contact), ""));
    let ringing = net.got(alice(), "180");
    assert_eq!(ringing.vias().len(), 1);
    let answer_sdp = SDP.replace("192.168.1.20", "10.0.0.7");
    net.local(1, bob(), &reply(&inv, 200, "bobtag", Some(bob_contact), &answer_sdp));
    let ok = net.got(alice(), "200");
    assert_eq!(ok.body(), answer_sdp.as_bytes());
    let rr: Vec<String> = ok.header_list("Record-Route").map(str::to_owned).collect();
    assert_eq!(rr.len(), 2);

    // Alice's ACK: Route set is the Record-Route reversed (§12.1.2).
    let ack = msg(
        &format!(
            "
ACK sip:bob@10.0.0.7:40123;transport=tcp SIP/2.0
Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bKack2;rport
Route: {}, {}
Max-Forwards: 70
To: {}
From: {}
Call-ID: {}
CSeq: 2 ACK
",
            rr[1],
            rr[0],
            ok.header("To").unwrap(),
            ok.header("From").unwrap(),
            ok.call_id()
        ),
        "",
    );
    net.local(0, alice(), &ack);
    let got_ack = net.got(bob(), "ACK");
    assert_eq!(got_ack.header("Route"), None, "both Routes consumed");
    assert_eq!(got_ack.vias().len(), 3);

    // Bob hangs up: his Route set is the Record-Route in order; the
    // Request-URI is Alice's Contact (a private address: A delivers to the
    // NAT binding).
    let bye = msg(
        &format!(
            "
BYE sip:alice-0x55d3a1@192.168.1.20:5060;transport=udp SIP/2.0
Via: SIP/2.0/TCP 10.0.0.7:40123;alias;branch=z9hG4bK.bye1;rport
Route: {}
Route: {}
From: <sip:bob@{DOMAIN}>;tag=bobtag
To: \"Alice\" <sip:alice@{DOMAIN}>;tag=5f1b3c9a
Call-ID: {}
CSeq: 101 BYE
Max-Forwards: 70
User-Agent: Linphone-Desktop/5.2.4 (ubuntu) LinphoneSDK/5.3.14
",
            rr[0],
            rr[1],
            ok.call_id()
        ),
        "",
    );
    // The same BYE with the Record-Route tokens stripped (or with another
    // dialog's) is not vouched for: B challenges it instead of forwarding.
    let strip = |r: &str| {
        let i = r.find(";cpt=").unwrap();
        let j = i + 1 + r[i + 1..].find(';').unwrap();
        format!("{}{}", &r[..i], &r[j..])
    };
    let text = String::from_utf8(bye.clone()).unwrap();
    let forged = text.replace(&rr[0], &strip(&rr[0])).replace(&rr[1], &strip(&rr[1])).replace(".bye1", ".bye0");
    net.local(1, bob(), forged.as_bytes());
    assert_eq!(net.got(bob(), "407").cseq().method, Method::Bye);
    let other_dialog = text.replace(&format!("Call-ID: {}", ok.call_id()), "Call-ID: other").replace(".bye1", ".bye2");
    net.local(1, bob(), other_dialog.as_bytes());
    assert_eq!(net.got(bob(), "407").cseq().method, Method::Bye);
    net.local(1, bob(), &bye);
    let got_bye = net.got(alice(), "BYE");
    assert_eq!(got_bye.request_uri().unwrap().to_string(), "sip:alice-0x55d3a1@192.168.1.20:5060;transport=udp");
    assert_eq!(got_bye.header("Route"), None);
    net.local(0, alice(), &reply(&got_bye, 200, "5f1b3c9a", None, ""));
    assert_eq!(net.got(bob(), "200").cseq().method, Method::Bye);
    // Once the transactions' timers ran out, no proxy state is left.
    net.advance(Duration::from_secs(40));
    for i in 0..3 {
        assert!(net.edge(i).is_idle(), "node {i}: {:?}", net.edge(i));
    }
    // INVITE and ACK went A → B → Bob, the BYE B → A → Alice.
    let (a, b) = (net.edge(0).counters(), net.edge(1).counters());
    assert_eq!((a.requests_forwarded_node, a.requests_forwarded_local), (2, 1));
    assert_eq!((b.requests_forwarded_node, b.requests_forwarded_local), (1, 2));
}

#[test]
fn cancel_before_answer_gives_487() {
    let mut net = two_users();
    let (cseq, branch) = call(&mut net, "bob");
    let inv = net.got(bob(), "INVITE");
    net.local(1, bob(), &reply(&inv, 180, "bobtag", Some("<sip:bob@10.0.0.7:40123;transport=tcp>"), ""));
    net.got(alice(), "180");

    let cancel = msg(
        &format!(
            "
CANCEL sip:bob@{DOMAIN} SIP/2.0
Via: SIP/2.0/UDP 192.168.1.20:5060;branch={branch};rport
Max-Forwards: 70
To: <sip:bob@{DOMAIN}>
From: \"Alice\" <sip:alice@{DOMAIN}>;tag=5f1b3c9a
Call-ID: 7d2e9f3a1b4c5d6e-bob
CSeq: {cseq} CANCEL
"
        ),
        "",
    );
    net.local(0, alice(), &cancel);
    assert_eq!(net.got(alice(), "200").cseq().method, Method::Cancel, "CANCEL answered hop by hop");
    let fwd = net.got(bob(), "CANCEL");
    assert_eq!(fwd.top_via().unwrap().branch(), inv.top_via().unwrap().branch());
    net.local(1, bob(), &reply(&fwd, 200, "bobtag", None, ""));
    net.local(1, bob(), &reply(&inv, 487, "bobtag", None, ""));
    // B's client transaction ACKs Bob's 487; Alice gets the 487.
    assert_eq!(net.got(bob(), "ACK").cseq().seq, inv.cseq().seq);
    let terminated = net.got(alice(), "487");
    assert_eq!(terminated.cseq().method, Method::Invite);
}

#[test]
fn message_both_ways() {
    let mut net = two_users();
    let message = |from: &str, to: &str, via: &str, cseq: u32, auth: Option<&str>| {
        let auth = auth.map(|a| format!("Proxy-Authorization: {a}\n")).unwrap_or_default();
        msg(
            &format!(
                "
MESSAGE sip:{to}@{DOMAIN} SIP/2.0
Via: {via};branch=z9hG4bKmsg{from}{cseq};rport
Max-Forwards: 70
To: <sip:{to}@{DOMAIN}>
From: <sip:{from}@{DOMAIN}>;tag=m{from}
Call-ID: msg-{from}-{to}
CSeq: {cseq} MESSAGE
Content-Type: text/plain
{auth}"
            ),
            "hello",
        )
    };
    let alice_via = "SIP/2.0/UDP 192.168.1.20:5060";
    net.local(0, alice(), &message("alice", "bob", alice_via, 1, None));
    let ch = net.got(alice(), "407");
    let auth = answer(&ch, "MESSAGE", "sip:bob@chordphone.test", "alice", "wonderland", DigestAlgorithm::Md5);
    net.local(0, alice(), &message("alice", "bob", alice_via, 2, Some(&auth)));
    let m = net.got(bob(), "MESSAGE");
    assert_eq!(m.body(), b"hello");
    net.local(1, bob(), &reply(&m, 200, "rx1", None, ""));
    assert_eq!(net.got(alice(), "200").cseq().method, Method::Message);

    let bob_via = "SIP/2.0/TCP 10.0.0.7:40123;alias";
    net.local(1, bob(), &message("bob", "alice", bob_via, 1, None));
    let ch = net.got(bob(), "407");
    let auth = answer(&ch, "MESSAGE", "sip:alice@chordphone.test", "bob", "builder", DigestAlgorithm::Sha256);
    net.local(1, bob(), &message("bob", "alice", bob_via, 2, Some(&auth)));
    let m = net.got(alice(), "MESSAGE");
    assert_eq!(m.request_uri().unwrap().to_string(), "sip:alice-0x55d3a1@192.168.1.20:5060;transport=udp");
    net.local(0, alice(), &reply(&m, 200, "rx2", None, ""));
    assert_eq!(net.got(bob(), "200").cseq().method, Method::Message);

    // Bob may not send as Alice.
    let spoof = String::from_utf8(message("bob", "alice", bob_via, 3, None)).unwrap();
    let spoof = spoof.replace("From: <sip:bob@", "From: <sip:alice@");
    net.local(1, bob(), spoof.as_bytes());
    let ch = net.got(bob(), "407");
    let auth = answer(&ch, "MESSAGE", "sip:alice@chordphone.test", "bob", "builder", DigestAlgorithm::Sha256);
    let spoof = spoof.replace("CSeq: 3", "CSeq: 4").replace("msgbob3", "msgbob4");
    let spoof = spoof.replace("Content-Type", &format!("Proxy-Authorization: {auth}\r\nContent-Type"));
    net.local(1, bob(), spoof.as_bytes());
    assert_eq!(net.got(bob(), "403").reason(), Some("From does not match the authenticated user"));
}

#[test]
fn unregistered_aor_is_404_and_stale_record_is_480() {
    let mut net = two_users();
    call(&mut net, "carol");
    assert_eq!(net.got(alice(), "404").cseq().method, Method::Invite);

    // Dave's record names B, but B has no binding for him: B stored it
    // (signed as Dave, as a registration would be) without a REGISTER.
    let record = usage::registration_value(net.ids[1]).unwrap();
    let stored = net.command(1, usage::store_command("dave@chordphone.test", record, 3600));
    assert!(matches!(stored, Outcome::Stored { .. }), "{stored:?}");
    call(&mut net, "dave");
    let r = net.got(alice(), "480");
    assert_eq!(r.reason(), Some("No binding here (stale registration)"));
}

#[test]
fn unreachable_serving_node_gives_480() {
    let mut net = two_users();
    net.cut = true;
    call(&mut net, "bob");
    assert_eq!(net.held.len(), 1);
    // The connection to B fails (e.g. its TLS session died).
    net.sip_node_failed(0, 1);
    assert_eq!(net.got(alice(), "480").cseq().method, Method::Invite);
}

#[test]
fn forking_first_200_wins_and_the_other_branch_is_cancelled() {
    let mut net = two_users();
    // Bob's second device: baresip on UDP, another instance.
    let second = |cseq: u32, auth: Option<&str>| {
        String::from_utf8(baresip_register("bob", cseq, 3600, auth))
            .unwrap()
            .replace("6e4ad4a3-1c2b-4f5e-8a9b-0c1d2e3f4a5b", "0b0b0b0b-1c2b-4f5e-8a9b-0c1d2e3f4a5b")
            .replace("192.168.1.20", "198.51.100.78")
    };
    net.local(1, bob2(), second(1, None).as_bytes());
    let ch = net.got(bob2(), "401");
    let auth = answer(&ch, "REGISTER", "sip:chordphone.test", "bob", "builder", DigestAlgorithm::Md5);
    net.local(1, bob2(), second(2, Some(&auth)).as_bytes());
    let ok = net.got(bob2(), "200");
    assert_eq!(ok.header_list("Contact").count(), 2, "{ok:?}");
    assert_eq!(net.edge(1).bindings("bob@chordphone.test").len(), 2);

    call(&mut net, "bob");
    let inv1 = net.got(bob(), "INVITE");
    let inv2 = net.got(bob2(), "INVITE");
    assert_ne!(inv1.top_via().unwrap().branch(), inv2.top_via().unwrap().branch());
    // Bob2 is UDP: B adds a Record-Route facing it with transport=udp.
    assert!(inv2.header("Record-Route").unwrap().contains("transport=udp"));
    net.local(1, bob(), &reply(&inv1, 180, "t1", Some("<sip:bob@10.0.0.7:40123;transport=tcp>"), ""));
    net.local(1, bob2(), &reply(&inv2, 180, "t2", Some("<sip:bob-0x55d3a1@198.51.100.78:5060;transport=udp>"), ""));
    assert_eq!(net.take(alice()).len(), 3, "100 and two 180s");
    net.local(1, bob(), &reply(&inv1, 200, "t1", Some("<sip:bob@10.0.0.7:40123;transport=tcp>"), SDP));
    assert_eq!(net.got(alice(), "200").to().tag(), Some("t1"));
    let cancel = net.got(bob2(), "CANCEL");
    assert_eq!(cancel.top_via().unwrap().branch(), inv2.top_via().unwrap().branch());
    net.local(1, bob2(), &reply(&cancel, 200, "t2", None, ""));
    net.local(1, bob2(), &reply(&inv2, 487, "t2", None, ""));
    assert_eq!(net.got(bob2(), "ACK").cseq().seq, inv2.cseq().seq);
    assert!(net.take(alice()).is_empty(), "the 487 stays at the proxy");
}

#[test]
fn a_looped_request_is_refused_with_482() {
    let mut net = two_users();
    net.cut = true;
    call(&mut net, "bob");
    let (_, to, bytes) = net.held.pop().unwrap();
    assert_eq!(to, net.ids[1]);
    // B (say, misconfigured) hands the very same request back to A.
    net.sip_from_node(0, 1, &bytes);
    let b = net.ids[1];
    let refused = net.held.iter().any(|(from, node, bytes)| {
        *from == 0 && *node == b && SipMessage::parse(bytes).unwrap().status() == Some(StatusCode::LOOP_DETECTED)
    });
    assert!(refused, "{} messages held", net.held.len());
}

#[test]
fn transaction_cap_gives_503_with_retry_after() {
    let mut net = Net::with(|c| c.transactions.max_transactions = 2);
    // Answered REGISTERs linger for Timer J but do not count toward the cap …
    assert_eq!(login(&mut net, 0, alice(), "alice", "wonderland", false).status(), Some(StatusCode::OK));
    assert_eq!(login(&mut net, 1, bob(), "bob", "builder", true).status(), Some(StatusCode::OK));
    // … while a call still in progress does: its server transaction and
    // the client transaction toward node B (which stays silent).
    net.cut = true;
    call(&mut net, "bob");
    net.got(alice(), "100");
    let other = String::from_utf8(baresip_register("alice", 9, 3600, None)).unwrap();
    net.local(0, alice(), other.as_bytes());
    let busy = net.got(alice(), "503");
    assert_eq!(busy.header("Retry-After"), Some("5"));
}

#[test]
fn silent_serving_node_times_out_to_480() {
    let mut net = two_users();
    net.cut = true;
    call(&mut net, "bob");
    net.got(alice(), "100");
    net.advance(Duration::from_secs(31));
    assert!(net.take(alice()).is_empty());
    // Timer B (64*T1) on the branch to B.
    net.advance(Duration::from_secs(2));
    assert_eq!(net.got(alice(), "480").cseq().method, Method::Invite);
}

#[test]
fn repeated_requests_reuse_the_fetched_location_until_it_fails() {
    let mut net = Net::with(|c| c.location_cache = Duration::from_secs(600));
    assert_eq!(login(&mut net, 0, alice(), "alice", "wonderland", false).status(), Some(StatusCode::OK));
    assert_eq!(login(&mut net, 1, bob(), "bob", "builder", true).status(), Some(StatusCode::OK));
    // Alice sends Bob a MESSAGE (407, then with credentials); returns what
    // Alice finally got when Bob's phone answers 200 if reached.
    let send = |net: &mut Net, n: u32| -> SipMessage {
        let m = |cseq: u32, auth: Option<&str>| {
            let auth = auth.map(|a| format!("Proxy-Authorization: {a}\n")).unwrap_or_default();
            msg(
                &format!(
                    "
MESSAGE sip:bob@{DOMAIN} SIP/2.0
Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bKcache{cseq};rport
Max-Forwards: 70
To: <sip:bob@{DOMAIN}>
From: <sip:alice@{DOMAIN}>;tag=cache
Call-ID: cache-{n}
CSeq: {cseq} MESSAGE
Content-Type: text/plain
{auth}"
                ),
                "hi",
            )
        };
        net.local(0, alice(), &m(2 * n, None));
        let ch = net.got(alice(), "407");
        let auth = answer(&ch, "MESSAGE", "sip:bob@chordphone.test", "alice", "wonderland", DigestAlgorithm::Md5);
        net.local(0, alice(), &m(2 * n + 1, Some(&auth)));
        if let Some(at_bob) = net.take(bob()).into_iter().find(|m| m.method() == Some(&Method::Message)) {
            net.local(1, bob(), &reply(&at_bob, 200, "rx", None, ""));
        } else {
            net.advance(Duration::from_secs(40));
        }
        let all = net.take(alice());
        all.into_iter().rfind(|m| m.status().is_some_and(|s| s.as_u16() >= 200)).expect("a final answer")
    };
    assert_eq!(send(&mut net, 1).status(), Some(StatusCode::OK));
    assert_eq!(net.usage(0).fetches, 1);
    // Again: node B is known from the first Fetch, no overlay round trip.
    assert_eq!(send(&mut net, 2).status(), Some(StatusCode::OK));
    assert_eq!(net.usage(0).fetches, 1, "served from the location cache");
    // B stops answering: the request fails (the cached location was used)…
    net.cut = true;
    let failed = send(&mut net, 3);
    assert!(failed.status().is_some_and(|s| s.as_u16() >= 400), "{failed:?}");
    assert_eq!(net.usage(0).fetches, 1);
    // … and is forgotten: the next request looks Bob up again.
    net.cut = false;
    net.held.clear();
    assert_eq!(send(&mut net, 4).status(), Some(StatusCode::OK));
    assert_eq!(net.usage(0).fetches, 2, "looked up again after the failure");
}
