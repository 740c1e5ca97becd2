//! Scripted phones for the SIP edge's tests: the messages baresip (UDP,
//! behind NAT) and Linphone (TCP) send, digest answers, UAS replies, and
//! the REGISTER and INVITE dances, over any harness that delivers a
//! phone's message to a node and collects what the node sends back
//! ([`PhoneNet`]). Used by the edge-level tests (`super::edge_tests`) and
//! by the scenarios on the real overlay (`crate::peer`).

use std::sync::atomic::{AtomicU32, Ordering};

use super::account::SipUser;
use super::digest::{self, Credentials, DigestAlgorithm, NonceCount, Qop};
use super::message::{SipMessage, StatusCode};
use super::transaction::{Transport, TransportAddr};

pub(crate) const DOMAIN: &str = "chordphone.test";
pub(crate) const SDP: &str = "v=0\r\no=alice 2890844526 2890844526 IN IP4 192.168.1.20\r\ns=baresip\r\nc=IN IP4 192.168.1.20\r\n\
t=0 0\r\nm=audio 10000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";

/// A fresh number for branch parameters: every new request a phone sends
/// has its own branch (§8.1.1.7), or it would read as a retransmission.
pub(crate) fn fresh() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

pub(crate) fn udp(addr: &str) -> TransportAddr {
    TransportAddr { transport: Transport::Udp, addr: addr.parse().unwrap(), flow: None }
}

pub(crate) fn tcp(addr: &str, flow: u64) -> TransportAddr {
    TransportAddr { transport: Transport::Tcp, addr: addr.parse().unwrap(), flow: Some(flow) }
}

pub(crate) fn account(name: &str, password: &str) -> SipUser {
    SipUser {
        aor: format!("{name}@{DOMAIN}"),
        realm: DOMAIN.into(),
        ha1_md5: digest::ha1(DigestAlgorithm::Md5, name, DOMAIN, password),
        ha1_sha256: digest::ha1(DigestAlgorithm::Sha256, name, DOMAIN, password),
        created_unix_s: 0,
    }
}

/// A message from a head written with `\n` line ends, plus a body.
pub(crate) fn msg(head: &str, body: &str) -> Vec<u8> {
    let head = head.trim_start().replace('\n', "\r\n");
    format!("{head}Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

/// The Authorization value a phone computes for the challenge in `resp`.
pub(crate) fn answer(
    resp: &SipMessage,
    method: &str,
    uri: &str,
    user: &str,
    password: &str,
    alg: DigestAlgorithm,
) -> String {
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
pub(crate) fn reply(req: &SipMessage, code: u16, tag: &str, contact: Option<&str>, body: &str) -> Vec<u8> {
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

/// A harness phones talk through: node `node` gets a phone's message, and
/// what nodes send to phones is collected per phone address.
pub(crate) trait PhoneNet {
    /// Delivers `bytes` from the phone at `from` to node `node` and runs
    /// everything that follows to quiescence.
    fn local(&mut self, node: usize, from: TransportAddr, bytes: &[u8]);

    /// Everything delivered to phone address `to`, oldest first.
    fn take(&mut self, to: TransportAddr) -> Vec<SipMessage>;

    /// The one message `to` received with this status (responses) or method.
    fn got(&mut self, to: TransportAddr, what: &str) -> SipMessage {
        let all = self.take(to);
        let found = all.iter().find(|m| match m.status() {
            Some(s) => s.as_u16().to_string() == what,
            None => m.method().unwrap().as_str() == what,
        });
        found.cloned().unwrap_or_else(|| panic!("{what} not received at {to:?}; got {:?}", summary(&all)))
    }
}

pub(crate) fn summary(all: &[SipMessage]) -> Vec<String> {
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
pub(crate) fn alice() -> TransportAddr {
    udp("203.0.113.5:61234")
}

/// Bob's Linphone on node B over TCP.
pub(crate) fn bob() -> TransportAddr {
    tcp("198.51.100.77:40123", 17)
}

/// Bob's second device (baresip, UDP) on node B.
pub(crate) fn bob2() -> TransportAddr {
    udp("198.51.100.78:5060")
}

pub(crate) fn baresip_register(user: &str, cseq: u32, expires: u32, auth: Option<&str>) -> Vec<u8> {
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

pub(crate) fn linphone_register(cseq: u32, auth: Option<&str>) -> Vec<u8> {
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
pub(crate) fn login(
    net: &mut impl PhoneNet,
    node: usize,
    phone: TransportAddr,
    user: &str,
    password: &str,
    linphone: bool,
) -> SipMessage {
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

pub(crate) fn invite(to_user: &str, cseq: u32, branch: &str, auth: Option<&str>) -> Vec<u8> {
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
pub(crate) fn call(net: &mut impl PhoneNet, to_user: &str) -> (u32, String) {
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
pub(crate) fn ack_for(resp: &SipMessage, ruri: &str, branch: &str) -> Vec<u8> {
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

pub(crate) fn user_of_route(v: &str) -> String {
    v.trim_start_matches("<sip:").split('@').next().unwrap().to_owned()
}
