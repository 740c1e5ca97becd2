//! Two-node scenarios for [`super::edge::SipEdge`]: node A and node B with a
//! fake clock and a fake overlay (a map applying Store/Fetch), each edge's
//! `SendNode` wired into the other's `handle_node`, and phones played by
//! the test with baresip (UDP, behind NAT) and Linphone (TCP) traffic.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::account::NodeRef;
use super::account::SipUser;
use super::digest::{self, Credentials, DigestAlgorithm, NonceCount, Qop};
use super::edge::{EdgeConfig, EdgeOutput, OverlayResult, SipEdge};
use super::message::{Method, SipMessage, StatusCode};
use super::transaction::{Transport, TransportAddr};

const DOMAIN: &str = "chordphone.test";
const SDP: &str = "v=0\r\no=alice 2890844526 2890844526 IN IP4 192.168.1.20\r\ns=baresip\r\nc=IN IP4 192.168.1.20\r\n\
t=0 0\r\nm=audio 10000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";

/// A fresh number for branch parameters: every new request a phone sends
/// has its own branch (§8.1.1.7), or it would read as a retransmission.
fn fresh() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn node(i: u128) -> NodeRef {
    NodeRef::from_u128(0x1111_0000_0000_0000_0000_0000_0000_0000 * i + i)
}

fn udp(addr: &str) -> TransportAddr {
    TransportAddr { transport: Transport::Udp, addr: addr.parse().unwrap(), flow: None }
}

fn tcp(addr: &str, flow: u64) -> TransportAddr {
    TransportAddr { transport: Transport::Tcp, addr: addr.parse().unwrap(), flow: Some(flow) }
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

/// A message from a head written with `\n` line ends, plus a body.
fn msg(head: &str, body: &str) -> Vec<u8> {
    let head = head.trim_start().replace('\n', "\r\n");
    format!("{head}Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

/// The Authorization value a phone computes for the challenge in `resp`.
fn answer(resp: &SipMessage, method: &str, uri: &str, user: &str, password: &str, alg: DigestAlgorithm) -> String {
    let name = if resp.status() == Some(StatusCode::UNAUTHORIZED) { "WWW-Authenticate" } else { "Proxy-Authenticate" };
    let ch = resp.headers(name).find(|h| h.contains(&format!("algorithm={}", alg.as_str()))).unwrap();
    let nonce = ch.split("nonce=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let creds = Credentials {
        username: user.into(),
        realm: DOMAIN.into(),
        nonce: nonce.clone(),
        uri: uri.into(),
        response: String::new(),
        algorithm: alg,
        session: false,
        cnonce: Some("0a4f113b".into()),
        nc: Some(NonceCount::parse("00000001").unwrap()),
        qop: Some(Qop::Auth),
        opaque: None,
    };
    let response = digest::compute_response(&creds, method, &digest::ha1(alg, user, DOMAIN, password), None);
    format!(
        "Digest username=\"{user}\",realm=\"{DOMAIN}\",nonce=\"{nonce}\",uri=\"{uri}\",response=\"{response}\",\
         algorithm={},cnonce=\"0a4f113b\",qop=auth,nc=00000001",
        alg.as_str()
    )
}

/// What a UAS sends back: §8.2.6 plus the Record-Route copy of §12.1.1.
fn reply(req: &SipMessage, code: u16, tag: &str, contact: Option<&str>, body: &str) -> Vec<u8> {
    let mut r = SipMessage::response_to(req, StatusCode::new(code).unwrap(), None, Some(tag));
    for rr in req.headers("Record-Route") {
        r.add_header("Record-Route", rr).unwrap();
    }
    if let Some(c) = contact {
        r.add_header("Contact", c).unwrap();
    }
    if !body.is_empty() {
        r.add_header("Content-Type", "application/sdp").unwrap();
        r.set_body(body.as_bytes().to_vec());
    }
    r.to_bytes()
}

struct Net {
    edges: Vec<SipEdge>,
    ids: Vec<NodeRef>,
    overlay: HashMap<String, BTreeMap<NodeRef, bool>>,
    fail_stores: bool,
    /// Node-to-node messages not delivered (to play an unreachable node).
    cut: bool,
    held: Vec<(usize, NodeRef, Vec<u8>)>,
    /// Overlay Fetches the edges asked for.
    fetches: usize,
    now: Instant,
    wall: u64,
    inbox: Vec<(usize, TransportAddr, SipMessage)>,
}

impl Net {
    fn new() -> Net {
        Net::with(|_| {})
    }

    /// A net whose edges' configuration `tune` adjusts.
    fn with(tune: impl Fn(&mut EdgeConfig)) -> Net {
        let start = Instant::now(); // layering: allowed (test-only module: the fake clock's origin)
        let ids = vec![node(1), node(2)];
        let edges = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let port = 5060 + 10 * i as u16;
                let mut cfg = EdgeConfig::new(*id, DOMAIN, (format!("198.51.100.{}", i + 1), port), [i as u8 + 7; 32]);
                tune(&mut cfg);
                let mut e = SipEdge::new(cfg).unwrap();
                e.set_users(vec![account("alice", "wonderland"), account("bob", "builder"), account("carol", "c4r0l")]);
                e
            })
            .collect();
        Net {
            edges,
            ids,
            overlay: HashMap::new(),
            fail_stores: false,
            cut: false,
            held: Vec::new(),
            fetches: 0,
            now: start,
            wall: 1_700_000_000_000,
            inbox: Vec::new(),
        }
    }

    fn local(&mut self, node: usize, from: TransportAddr, bytes: &[u8]) {
        self.edges[node].handle_local(self.now, self.wall, bytes, from);
        self.pump();
    }

    fn pump(&mut self) {
        loop {
            let mut idle = true;
            for i in 0..self.edges.len() {
                while let Some(out) = self.edges[i].poll_output() {
                    idle = false;
                    self.apply(i, out);
                }
            }
            if idle {
                break;
            }
        }
    }

    fn apply(&mut self, i: usize, out: EdgeOutput) {
        let (now, wall, me) = (self.now, self.wall, self.ids[i]);
        match out {
            EdgeOutput::SendLocal { to, bytes } => self.inbox.push((i, to, SipMessage::parse(&bytes).unwrap())),
            EdgeOutput::SendNode { node, bytes } => {
                if self.cut {
                    self.held.push((i, node, bytes));
                    return;
                }
                let j = self.ids.iter().position(|n| *n == node).unwrap();
                self.edges[j].handle_node(now, wall, me, &bytes);
            }
            EdgeOutput::StoreRegistration { op, aor, expires_s } => {
                assert!((60..=3600).contains(&expires_s), "lifetime {expires_s}");
                let result = if self.fail_stores {
                    OverlayResult::Failed("no replica answered".into())
                } else {
                    self.overlay.entry(aor).or_default().insert(me, true);
                    OverlayResult::Stored
                };
                self.edges[i].handle_overlay(now, wall, op, result);
            }
            EdgeOutput::RemoveRegistration { op, aor } => {
                if let Some(e) = self.overlay.get_mut(&aor).and_then(|m| m.get_mut(&me)) {
                    *e = false;
                }
                self.edges[i].handle_overlay(now, wall, op, OverlayResult::Stored);
            }
            EdgeOutput::FetchRegistration { op, aor } => {
                self.fetches += 1;
                let entries = self
                    .overlay
                    .get(&aor)
                    .map(|m| m.iter().filter(|(_, live)| **live).map(|(k, _)| *k).collect())
                    .unwrap_or_default();
                self.edges[i].handle_overlay(now, wall, op, OverlayResult::Located(entries));
            }
        }
    }

    /// Moves the clock, firing every timer on the way.
    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        loop {
            let next = self.edges.iter().filter_map(SipEdge::poll_timeout).min();
            match next {
                Some(t) if t <= end => {
                    if t > self.now {
                        self.wall += (t - self.now).as_millis() as u64;
                        self.now = t;
                    }
                    for i in 0..self.edges.len() {
                        self.edges[i].handle_timeout(self.now, self.wall);
                    }
                    self.pump();
                }
                _ => break,
            }
        }
        self.wall += (end - self.now).as_millis() as u64;
        self.now = end;
    }

    /// Everything delivered to phone address `to`, oldest first.
    fn take(&mut self, to: TransportAddr) -> Vec<SipMessage> {
        let (mine, rest) = self.inbox.drain(..).partition(|(_, a, _)| *a == to);
        self.inbox = rest;
        mine.into_iter().map(|(_, _, m)| m).collect()
    }

    /// The one message `to` received with this status (responses) or method.
    fn got(&mut self, to: TransportAddr, what: &str) -> SipMessage {
        let all = self.take(to);
        let found = all.iter().find(|m| match m.status() {
            Some(s) => s.as_u16().to_string() == what,
            None => m.method().unwrap().as_str() == what,
        });
        found.cloned().unwrap_or_else(|| panic!("{what} not received at {to:?}; got {:?}", summary(&all)))
    }

    fn registered(&self, aor: &str, node: usize) -> bool {
        self.overlay.get(aor).and_then(|m| m.get(&self.ids[node])).is_some_and(|e| *e)
    }
}

fn summary(all: &[SipMessage]) -> Vec<String> {
    all.iter()
        .map(|m| match m.status() {
            Some(s) => format!("{} {}", s.as_u16(), m.reason().unwrap_or("")),
            None => m.method().unwrap().to_string(),
        })
        .collect()
}

// ---- phones

/// Alice's baresip on node A: UDP, behind NAT (Via says 192.168.1.20, the
/// datagrams come from 203.0.113.5:61234).
fn alice() -> TransportAddr {
    udp("203.0.113.5:61234")
}

/// Bob's Linphone on node B over TCP.
fn bob() -> TransportAddr {
    tcp("198.51.100.77:40123", 17)
}

/// Bob's second device (baresip, UDP) on node B.
fn bob2() -> TransportAddr {
    udp("198.51.100.78:5060")
}

fn baresip_register(user: &str, cseq: u32, expires: u32, auth: Option<&str>) -> Vec<u8> {
    let auth = auth.map(|a| format!("Authorization: {a}\n")).unwrap_or_default();
    msg(
        &format!(
            "
REGISTER sip:{DOMAIN} SIP/2.0
Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK4b3a8c1f{};rport
Contact: <sip:{user}-0x55d3a1@192.168.1.20:5060;transport=udp>;expires={expires};+sip.instance=\"<urn:uuid:6e4ad4a3-1c2b-4f5e-8a9b-0c1d2e3f4a5b>\";reg-id=1
Max-Forwards: 70
To: <sip:{user}@{DOMAIN}>
From: <sip:{user}@{DOMAIN}>;tag=a8f3c2e1b0d94f7e
Call-ID: 3c2f8e1a9b7d4c6e-{user}
CSeq: {cseq} REGISTER
User-Agent: baresip v3.10.1 (x86_64/Linux)
Allow: INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSCRIBE,INFO,MESSAGE,UPDATE,REFER
Supported: outbound,path,gruu,replaces
{auth}",
            fresh()
        ),
        "",
    )
}

fn linphone_register(cseq: u32, auth: Option<&str>) -> Vec<u8> {
    let auth = auth.map(|a| format!("Authorization: {a}\n")).unwrap_or_default();
    msg(
        &format!(
            "
REGISTER sip:{DOMAIN};transport=tcp SIP/2.0
Via: SIP/2.0/TCP 10.0.0.7:40123;alias;branch=z9hG4bK.Jd9s~{};rport
From: <sip:bob@{DOMAIN}>;tag=Zq8Ue~0pX
To: sip:bob@{DOMAIN}
CSeq: {cseq} REGISTER
Call-ID: kSd8-1QnR0
Max-Forwards: 70
Supported: replaces, outbound, gruu, path
Accept: application/sdp
Accept: text/plain
Contact: <sip:bob@10.0.0.7:40123;transport=tcp>;+sip.instance=\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\";+org.linphone.specs=\"lime\"
Expires: 600
User-Agent: Linphone-Desktop/5.2.4 (ubuntu) LinphoneSDK/5.3.14
{auth}",
            fresh()
        ),
        "",
    )
}

/// The 401 dance: unauthenticated REGISTER, then with credentials.
fn login(net: &mut Net, node: usize, phone: TransportAddr, user: &str, password: &str, linphone: bool) -> SipMessage {
    let first = if linphone { linphone_register(20, None) } else { baresip_register(user, 1, 3600, None) };
    net.local(node, phone, &first);
    let challenge = net.got(phone, "401");
    let (alg, uri, cseq) = if linphone {
        (DigestAlgorithm::Sha256, format!("sip:{DOMAIN};transport=tcp"), 21)
    } else {
        (DigestAlgorithm::Md5, format!("sip:{DOMAIN}"), 2)
    };
    let auth = answer(&challenge, "REGISTER", &uri, user, password, alg);
    let second =
        if linphone { linphone_register(cseq, Some(&auth)) } else { baresip_register(user, cseq, 3600, Some(&auth)) };
    net.local(node, phone, &second);
    let all = net.take(phone);
    assert_eq!(all.len(), 1, "{:?}", summary(&all));
    all.into_iter().next().unwrap()
}

fn invite(to_user: &str, cseq: u32, branch: &str, auth: Option<&str>) -> Vec<u8> {
    let auth = auth.map(|a| format!("Proxy-Authorization: {a}\n")).unwrap_or_default();
    msg(
        &format!(
            "
INVITE sip:{to_user}@{DOMAIN} SIP/2.0
Via: SIP/2.0/UDP 192.168.1.20:5060;branch={branch};rport
Contact: <sip:alice-0x55d3a1@192.168.1.20:5060;transport=udp>
Max-Forwards: 70
To: <sip:{to_user}@{DOMAIN}>
From: \"Alice\" <sip:alice@{DOMAIN}>;tag=5f1b3c9a
Call-ID: 7d2e9f3a1b4c5d6e-{to_user}
CSeq: {cseq} INVITE
User-Agent: baresip v3.10.1 (x86_64/Linux)
Allow: INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSCRIBE,INFO,MESSAGE,UPDATE,REFER
Supported: replaces,norefersub
Content-Type: application/sdp
{auth}"
        ),
        SDP,
    )
}

/// Alice calls `to_user` and passes the 407 challenge; returns the final
/// INVITE's CSeq and branch.
fn call(net: &mut Net, to_user: &str) -> (u32, String) {
    let first = format!("z9hG4bKinv{}", fresh());
    net.local(0, alice(), &invite(to_user, 1, &first, None));
    let challenge = net.got(alice(), "407");
    // baresip ACKs the 407 (absorbed by the server transaction).
    let ack = ack_for(&challenge, &format!("sip:{to_user}@{DOMAIN}"), &first);
    net.local(0, alice(), &ack);
    let auth =
        answer(&challenge, "INVITE", &format!("sip:{to_user}@{DOMAIN}"), "alice", "wonderland", DigestAlgorithm::Md5);
    let second = format!("z9hG4bKinv{}", fresh());
    net.local(0, alice(), &invite(to_user, 2, &second, Some(&auth)));
    (2, second)
}

/// The ACK for a non-2xx final response (§17.1.1.3).
fn ack_for(resp: &SipMessage, ruri: &str, branch: &str) -> Vec<u8> {
    msg(
        &format!(
            "
ACK {ruri} SIP/2.0
Via: SIP/2.0/UDP 192.168.1.20:5060;branch={branch};rport
Max-Forwards: 70
To: {}
From: {}
Call-ID: {}
CSeq: {} ACK
",
            resp.header("To").unwrap(),
            resp.header("From").unwrap(),
            resp.call_id(),
            resp.cseq().seq
        ),
        "",
    )
}

fn user_of_route(v: &str) -> String {
    v.trim_start_matches("<sip:").split('@').next().unwrap().to_owned()
}

// ---- REGISTER

#[test]
fn register_with_digest_then_expiry_removes_the_record() {
    let mut net = Net::new();
    net.local(0, alice(), &baresip_register("alice", 1, 60, None));
    let challenge = net.got(alice(), "401");
    let offered: Vec<&str> = challenge.headers("WWW-Authenticate").collect();
    assert_eq!(offered.len(), 2);
    assert!(offered[0].contains("algorithm=SHA-256") && offered[1].contains("algorithm=MD5"), "{offered:?}");
    assert!(!net.registered("alice@chordphone.test", 0));

    let auth = answer(&challenge, "REGISTER", "sip:chordphone.test", "alice", "wonderland", DigestAlgorithm::Md5);
    net.local(0, alice(), &baresip_register("alice", 2, 60, Some(&auth)));
    let ok = net.got(alice(), "200");
    let contact = ok.header("Contact").unwrap();
    assert!(contact.starts_with("<sip:alice-0x55d3a1@192.168.1.20:5060;transport=udp>"), "{contact}");
    assert!(contact.contains("expires=60") && contact.contains("reg-id=1"), "{contact}");
    assert_eq!(ok.header("Require"), Some("outbound"));
    // The response went to the NAT address the REGISTER came from (rport).
    assert!(ok.top_via().unwrap().received() == Some("203.0.113.5"));
    assert!(net.registered("alice@chordphone.test", 0));
    // The binding keeps the real source, not the private Contact.
    assert_eq!(net.edges[0].bindings("alice@chordphone.test")[0].source, alice());
    assert_eq!(net.edges[0].counters().register_ok, 1);
    assert_eq!(net.edges[0].counters().auth_challenges, 1);

    net.advance(Duration::from_secs(59));
    assert!(net.registered("alice@chordphone.test", 0));
    net.advance(Duration::from_secs(2));
    assert!(!net.registered("alice@chordphone.test", 0), "expired binding leaves the overlay");
    assert!(net.edges[0].bindings("alice@chordphone.test").is_empty());
}

#[test]
fn linphone_sha256_register_refresh_and_unregister() {
    let mut net = Net::new();
    let ok = login(&mut net, 1, bob(), "bob", "builder", true);
    assert_eq!(ok.status(), Some(StatusCode::OK));
    assert!(ok.header("Contact").unwrap().contains("expires=600"));
    assert!(net.registered("bob@chordphone.test", 1));

    // Contact: * with Expires: 0 removes everything (and the record).
    let head = String::from_utf8(linphone_register(22, None)).unwrap();
    let star = head
        .replace(
            "Contact: <sip:bob@10.0.0.7:40123;transport=tcp>;+sip.instance=\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\";+org.linphone.specs=\"lime\"",
            "Contact: *",
        )
        .replace("Expires: 600", "Expires: 0");
    net.local(1, bob(), star.as_bytes());
    let challenge = net.got(bob(), "401");
    let auth =
        answer(&challenge, "REGISTER", "sip:chordphone.test;transport=tcp", "bob", "builder", DigestAlgorithm::Sha256);
    let star = star
        .replace("CSeq: 22", "CSeq: 23")
        .replace(".Jd9s~", ".Jd9s~x")
        .replace("User-Agent", &format!("Authorization: {auth}\r\nUser-Agent"));
    net.local(1, bob(), star.as_bytes());
    let ok = net.got(bob(), "200");
    assert_eq!(ok.header("Contact"), None);
    assert!(!net.registered("bob@chordphone.test", 1));
}

#[test]
fn wrong_password_and_unknown_user_get_403() {
    let mut net = Net::new();
    assert_eq!(login(&mut net, 0, alice(), "alice", "rabbit-hole", false).status().unwrap().as_u16(), 403);
    let r = login(&mut net, 0, alice(), "mallory", "anything", false);
    assert_eq!(r.status().unwrap().as_u16(), 403);
    assert_eq!(r.reason(), Some("Forbidden"), "unknown user looks like a wrong password");
    assert!(net.overlay.is_empty());
    assert_eq!(net.edges[0].counters().register_fail, 2);
}

#[test]
fn register_interval_too_brief_and_overlay_failure() {
    let mut net = Net::new();
    net.local(0, alice(), &baresip_register("alice", 1, 30, None));
    let challenge = net.got(alice(), "401");
    let auth = answer(&challenge, "REGISTER", "sip:chordphone.test", "alice", "wonderland", DigestAlgorithm::Md5);
    net.local(0, alice(), &baresip_register("alice", 2, 30, Some(&auth)));
    let brief = net.got(alice(), "423");
    assert_eq!(brief.header("Min-Expires"), Some("60"));

    net.fail_stores = true;
    let r = login(&mut net, 0, alice(), "alice", "wonderland", false);
    assert_eq!(r.status().unwrap().as_u16(), 500);
    assert_eq!(r.reason(), Some("overlay store failed: no replica answered"));
    assert!(net.edges[0].bindings("alice@chordphone.test").is_empty(), "nothing bound without the record");
}

// ---- calls across nodes

/// Alice registered on A, Bob (Linphone, TCP) on B.
fn two_users() -> Net {
    let mut net = Net::new();
    assert_eq!(login(&mut net, 0, alice(), "alice", "wonderland", false).status(), Some(StatusCode::OK));
    assert_eq!(login(&mut net, 1, bob(), "bob", "builder", true).status(), Some(StatusCode::OK));
    net
}

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
    for e in &net.edges {
        assert!(e.proxy.proxies.is_empty() && e.proxy.by_client.is_empty() && e.proxy.by_server.is_empty());
        assert!(e.core.tl.is_empty(), "{:?}", e.core.tl);
    }
    // INVITE and ACK went A → B → Bob, the BYE B → A → Alice.
    let (a, b) = (net.edges[0].counters(), net.edges[1].counters());
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

    // Dave's record names B, but B has no binding for him.
    net.overlay.entry("dave@chordphone.test".into()).or_default().insert(net.ids[1], true);
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
    let b = net.ids[1];
    let (now, wall) = (net.now, net.wall);
    net.edges[0].handle_node_unreachable(now, wall, b);
    net.pump();
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
    assert_eq!(net.edges[1].bindings("bob@chordphone.test").len(), 2);

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
    let c = net.edges[0].counters();
    assert_eq!((c.malformed_rejected, c.malformed_dropped), (1, 1));
}

#[test]
fn max_forwards_zero_is_483_and_tel_uri_is_416() {
    let mut net = two_users();
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
fn a_looped_request_is_refused_with_482() {
    let mut net = two_users();
    net.cut = true;
    call(&mut net, "bob");
    let (_, to, bytes) = net.held.pop().unwrap();
    assert_eq!(to, net.ids[1]);
    // B (say, misconfigured) hands the very same request back to A.
    let (now, wall, b) = (net.now, net.wall, net.ids[1]);
    net.edges[0].handle_node(now, wall, b, &bytes);
    let out = std::iter::from_fn(|| net.edges[0].poll_output()).collect::<Vec<_>>();
    let refused = out.iter().any(|o| match o {
        EdgeOutput::SendNode { node, bytes } => {
            *node == b && SipMessage::parse(bytes).unwrap().status() == Some(StatusCode::LOOP_DETECTED)
        }
        _ => false,
    });
    assert!(refused, "{out:?}");
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
fn stale_nonce_is_rechallenged_with_stale_true() {
    let mut net = Net::new();
    net.local(0, alice(), &baresip_register("alice", 1, 3600, None));
    let challenge = net.got(alice(), "401");
    net.advance(Duration::from_secs(301));
    let auth = answer(&challenge, "REGISTER", "sip:chordphone.test", "alice", "wonderland", DigestAlgorithm::Md5);
    net.local(0, alice(), &baresip_register("alice", 2, 3600, Some(&auth)));
    let again = net.got(alice(), "401");
    assert!(again.headers("WWW-Authenticate").all(|c| c.contains("stale=true")));
    assert!(!net.registered("alice@chordphone.test", 0));
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
    assert_eq!(net.fetches, 1);
    // Again: node B is known from the first Fetch, no overlay round trip.
    assert_eq!(send(&mut net, 2).status(), Some(StatusCode::OK));
    assert_eq!(net.fetches, 1, "served from the location cache");
    // B stops answering: the request fails (the cached location was used)…
    net.cut = true;
    let failed = send(&mut net, 3);
    assert!(failed.status().is_some_and(|s| s.as_u16() >= 400), "{failed:?}");
    assert_eq!(net.fetches, 1);
    // … and is forgotten: the next request looks Bob up again.
    net.cut = false;
    net.held.clear();
    assert_eq!(send(&mut net, 4).status(), Some(StatusCode::OK));
    assert_eq!(net.fetches, 2, "looked up again after the failure");
}
