use super::*;
use proptest::prelude::*;

/// CRLF line ends for hand-written captures.
fn crlf(s: &str) -> Vec<u8> {
    s.replace('\n', "\r\n").into_bytes()
}

const BARESIP_REGISTER: &str = "REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK4b3a8c1f2d9e;rport
Contact: <sip:alice-0x55d3a1@192.168.1.20:5060;transport=udp>;expires=3600;+sip.instance=\"<urn:uuid:6e4ad4a3-1c2b-4f5e-8a9b-0c1d2e3f4a5b>\";reg-id=1
Max-Forwards: 70
To: <sip:alice@example.com>
From: <sip:alice@example.com>;tag=a8f3c2e1b0d94f7e
Call-ID: 3c2f8e1a9b7d4c6e
CSeq: 35113 REGISTER
User-Agent: baresip v3.10.1 (x86_64/Linux)
Allow: INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSCRIBE,INFO,MESSAGE,UPDATE,REFER
Supported: outbound,path,gruu,replaces
Content-Length: 0

";

const LINPHONE_REGISTER: &str = "REGISTER sip:sip.example.org;transport=tcp SIP/2.0
Via: SIP/2.0/TCP 10.0.0.7:40123;alias;branch=z9hG4bK.Jd9s~2kQx;rport
From: <sip:bob@sip.example.org>;tag=Zq8Ue~0pX
To: sip:bob@sip.example.org
CSeq: 20 REGISTER
Call-ID: kSd8-1QnR0
Max-Forwards: 70
Supported: replaces, outbound, gruu, path
Accept: application/sdp
Accept: text/plain
Accept: application/vnd.gsma.rcs-ft-http+xml
Contact: <sip:bob@10.0.0.7:40123;transport=tcp>;+sip.instance=\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\";+org.linphone.specs=\"lime\"
Expires: 600
User-Agent: Linphone-Desktop/5.2.4 (ubuntu) LinphoneSDK/5.3.14
Content-Length: 0

";

const SDP: &str = "v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n";

/// Compact forms, a two-value Via line, a folded To, a quoted display
/// name with a comma and escaped quotes.
fn compact_invite() -> Vec<u8> {
    let head = "INVITE sip:bob@biloxi.example.com SIP/2.0
v: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds , SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds8;received=192.0.2.1
Max-Forwards: 70
t: Bob
 <sip:bob@biloxi.example.com>
f: \"Alice, the \\\"first\\\"\" <sip:alice@atlanta.example.com>;tag=1928301774
i: a84b4c76e66710@pc33.atlanta.example.com
CSeq: 314159 INVITE
m: <sip:alice@pc33.atlanta.example.com>
Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>
c: application/sdp
k: 100rel
s: Lunch
X-Custom-Thing:   keep   this  spacing
";
    let mut out = crlf(head);
    out.extend_from_slice(format!("l: {}\r\n\r\n{SDP}", SDP.len()).as_bytes());
    out
}

const RESPONSE_401: &str = "SIP/2.0 401 Unauthorized
Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK4b3a8c1f2d9e;rport=5060;received=203.0.113.5
From: <sip:alice@example.com>;tag=a8f3c2e1b0d94f7e
To: <sip:alice@example.com>;tag=srv-77
Call-ID: 3c2f8e1a9b7d4c6e
CSeq: 35113 REGISTER
WWW-Authenticate: Digest realm=\"example.com\", nonce=\"abc,def\", algorithm=MD5, qop=\"auth\"
Content-Length: 0

";

fn parse(s: &str) -> SipMessage {
    SipMessage::parse(&crlf(s)).unwrap()
}

fn roundtrips(m: &SipMessage) {
    assert_eq!(&SipMessage::parse(&m.to_bytes()).unwrap(), m);
}

#[test]
fn baresip_register() {
    let m = parse(BARESIP_REGISTER);
    assert_eq!(m.method(), Some(&Method::Register));
    let Some(Uri::Sip(ruri)) = m.request_uri() else { panic!() };
    assert_eq!(ruri.host, Host::Name("example.com".into()));
    let via = m.top_via().unwrap();
    assert_eq!(via.transport, "UDP");
    assert_eq!(via.host, Host::Ipv4("192.168.1.20".parse().unwrap()));
    assert_eq!(via.port, Some(5060));
    assert_eq!(via.branch(), Some("z9hG4bK4b3a8c1f2d9e"));
    assert_eq!(via.rport(), Some(None));
    assert_eq!(m.call_id(), "3c2f8e1a9b7d4c6e");
    assert_eq!(m.cseq(), &CSeq { seq: 35113, method: Method::Register });
    assert_eq!(m.from().tag(), Some("a8f3c2e1b0d94f7e"));
    assert_eq!(m.to().tag(), None);
    assert_eq!(m.max_forwards(), Some(70));
    assert_eq!(m.expires(), None);
    let Contacts::Bindings(c) = m.contacts().unwrap() else { panic!() };
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].expires(), Some(3600));
    assert_eq!(c[0].params.value("+sip.instance"), Some("<urn:uuid:6e4ad4a3-1c2b-4f5e-8a9b-0c1d2e3f4a5b>"));
    assert_eq!(c[0].params.value("reg-id"), Some("1"));
    let Uri::Sip(cu) = &c[0].uri else { panic!() };
    assert_eq!(cu.user_name(), Some("alice-0x55d3a1"));
    assert_eq!(cu.params.value("transport"), Some("udp"));
    assert_eq!(m.header("user-agent"), Some("baresip v3.10.1 (x86_64/Linux)"));
    assert_eq!(m.header_list("Allow").count(), 11);
    assert_eq!(m.content_length(), 0);
    roundtrips(&m);
}

#[test]
fn linphone_register() {
    let m = parse(LINPHONE_REGISTER);
    let via = m.top_via().unwrap();
    assert_eq!(via.transport, "TCP");
    assert!(via.params.contains("alias"));
    assert_eq!(via.branch(), Some("z9hG4bK.Jd9s~2kQx"));
    // addr-spec form To.
    assert_eq!(m.to().uri.to_string(), "sip:bob@sip.example.org");
    assert_eq!(m.to().display, None);
    assert_eq!(m.headers("Accept").count(), 3);
    assert_eq!(m.expires(), Some(600));
    let Contacts::Bindings(c) = m.contacts().unwrap() else { panic!() };
    assert_eq!(c[0].params.value("+sip.instance"), Some("<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"));
    assert_eq!(c[0].params.get("+org.linphone.specs").unwrap().value.as_deref(), Some("\"lime\""));
    assert_eq!(c[0].expires(), None);
    roundtrips(&m);
}

#[test]
fn compact_folded_invite_with_sdp() {
    let m = SipMessage::parse(&compact_invite()).unwrap();
    assert_eq!(m.vias().len(), 2);
    assert_eq!(m.vias()[1].received(), Some("192.0.2.1"));
    assert_eq!(m.to().display.as_deref(), Some("Bob"));
    assert_eq!(m.header("To"), Some("Bob <sip:bob@biloxi.example.com>"));
    assert_eq!(m.from().display.as_deref(), Some("Alice, the \"first\""));
    assert_eq!(m.from().tag(), Some("1928301774"));
    assert_eq!(m.call_id(), "a84b4c76e66710@pc33.atlanta.example.com");
    assert_eq!(m.content_type(), Some("application/sdp"));
    assert_eq!(m.header("Supported"), Some("100rel"));
    assert_eq!(m.header("Subject"), Some("Lunch"));
    assert_eq!(m.body(), SDP.as_bytes());
    assert_eq!(m.record_routes().unwrap().len(), 2);
    let Contacts::Bindings(c) = m.contacts().unwrap() else { panic!() };
    assert_eq!(c.len(), 1);
    // Raw text (compact names, inner spacing) survives re-serialisation.
    let text = String::from_utf8(m.to_bytes()).unwrap();
    assert!(text.contains("\r\nv: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds , SIP/2.0/UDP"));
    assert!(text.contains("\r\nX-Custom-Thing: keep   this  spacing\r\n"));
    assert!(text.contains(&format!("\r\nContent-Length: {}\r\n\r\nv=0", SDP.len())));
    roundtrips(&m);
}

#[test]
fn lf_only_ipv6_and_tel() {
    let raw = "INVITE sip:b@[2001:db8::2] SIP/2.0\nVia: SIP/2.0/UDP [2001:db8::9]:5060;received=2001:db8::9;branch=z9hG4bKv6\nFrom: <tel:+15551234>;tag=1\nTo: <sip:b@[2001:db8::2]>\nCall-ID: v6\nCSeq: 1 INVITE\nl: 0\n\n";
    let m = SipMessage::parse(raw.as_bytes()).unwrap();
    let via = m.top_via().unwrap();
    assert_eq!(via.host, Host::Ipv6("2001:db8::9".parse().unwrap()));
    assert_eq!(via.received(), Some("2001:db8::9"));
    assert_eq!(m.from().uri, Uri::Other("tel:+15551234".into()));
    let Some(Uri::Sip(u)) = m.request_uri() else { panic!() };
    assert_eq!(u.host.ip(), Some("2001:db8::2".parse().unwrap()));
    roundtrips(&m);
}

#[test]
fn datagram_content_length_rules() {
    // Bytes past Content-Length are discarded (§18.3).
    let mut d = crlf(&BARESIP_REGISTER.replace("Content-Length: 0", "Content-Length: 3"));
    d.extend_from_slice(b"abcdef");
    assert_eq!(SipMessage::parse(&d).unwrap().body(), b"abc");
    // Without Content-Length the rest of the datagram is the body.
    let mut d = crlf(&BARESIP_REGISTER.replace("Content-Length: 0\n", ""));
    d.extend_from_slice(b"xyz");
    assert_eq!(SipMessage::parse(&d).unwrap().body(), b"xyz");
    // Leading CRLFs are ignored (§7.5).
    let mut d = b"\r\n\r\n".to_vec();
    d.extend(crlf(BARESIP_REGISTER));
    assert!(SipMessage::parse(&d).is_ok());
}

#[test]
fn many_folded_lines_stay_linear() {
    // 30,000 continuation lines in a 64 KiB datagram must not be quadratic.
    let folded = format!("Subject: a   {}", "\r\n x".repeat(30_000));
    let raw = BARESIP_REGISTER.replace("Supported: outbound,path,gruu,replaces", "X-Placeholder: 1");
    let raw = String::from_utf8(crlf(&raw)).unwrap().replace("X-Placeholder: 1", &folded);
    let start = std::time::Instant::now(); // layering: allowed (test-only module: times the parser)
    let m = SipMessage::parse(raw.as_bytes()).unwrap();
    assert!(start.elapsed() < std::time::Duration::from_secs(1));
    let subject = m.header("Subject").unwrap();
    assert!(subject.starts_with("a x x"));
    assert_eq!(subject.len(), 1 + 2 * 30_000);
}

#[test]
fn response_keeps_raw_auth_header() {
    let m = parse(RESPONSE_401);
    assert_eq!(m.status(), Some(StatusCode::UNAUTHORIZED));
    assert_eq!(m.reason(), Some("Unauthorized"));
    assert_eq!(m.method(), None);
    assert_eq!(m.top_via().unwrap().rport(), Some(Some(5060)));
    assert_eq!(
        m.header("www-authenticate"),
        Some("Digest realm=\"example.com\", nonce=\"abc,def\", algorithm=MD5, qop=\"auth\"")
    );
    roundtrips(&m);
}

#[track_caller]
fn rejects(input: &[u8], want: ParseError) {
    assert_eq!(SipMessage::parse(input), Err(want));
}

#[test]
fn malformed_inputs_are_errors() {
    let base = BARESIP_REGISTER;
    rejects(&crlf(&base.replace("Call-ID: 3c2f8e1a9b7d4c6e\n", "")), ParseError::MissingHeader("Call-ID"));
    rejects(
        &crlf(&base.replace("CSeq: 35113 REGISTER", "CSeq: abc REGISTER")),
        ParseError::InvalidHeader { name: "CSeq", reason: "bad sequence number" },
    );
    rejects(
        &crlf(&base.replace("CSeq: 35113 REGISTER", "CSeq: 99999999999 REGISTER")),
        ParseError::InvalidHeader { name: "CSeq", reason: "bad sequence number" },
    );
    rejects(&crlf(&base.replace("CSeq: 35113 REGISTER", "CSeq: 1 INVITE")), ParseError::CSeqMethodMismatch);
    rejects(&crlf(&base.replace("Content-Length: 0", "Content-Length: 10")), ParseError::BodyTruncated);
    rejects(&crlf(&base.replace("Via: ", "X-Via: ")), ParseError::MissingHeader("Via"));
    rejects(&crlf(&base.replace("Max-Forwards: 70\n", "From: <sip:x@y>\n")), ParseError::DuplicateHeader("From"));
    rejects(
        &crlf(&base.replace("Max-Forwards: 70", "Max-Forwards: seventy")),
        ParseError::InvalidHeader { name: "Max-Forwards", reason: "not a number" },
    );
    rejects(&crlf(&base.replace("User-Agent:", "User-Agent")), ParseError::BadHeaderLine);
    rejects(&crlf(&base.replace("SIP/2.0\n", "SIP/3.0\n")), ParseError::BadVersion);
    rejects(b"SIP/1.0 200 OK\r\n\r\n", ParseError::BadVersion);
    rejects(b"SIP/2.0 2000 OK\r\n\r\n", ParseError::BadStatusCode);
    rejects(b"SIP/2.0 099 Low\r\n\r\n", ParseError::BadStatusCode);
    rejects(
        &crlf(&base.replace("REGISTER sip:example.com", "REGISTER example.com")),
        ParseError::BadRequestUri("no URI scheme"),
    );
    rejects(
        &crlf(&base.replace("From: <sip:alice@example.com>", "From: <sip:alice@example.com")),
        ParseError::InvalidHeader { name: "From", reason: "missing '>'" },
    );
    rejects(&crlf(&base.replace("baresip", "bare\u{1}sip")), ParseError::BadHeaderValue);
    rejects(&crlf(base)[..60], ParseError::IncompleteHead);
    rejects(b"\r\n\r\n", ParseError::Empty);
    rejects(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n", ParseError::NotUtf8);
    rejects(b"\x00\x01garbage\r\n\r\n", ParseError::BadStartLine);
    rejects(b"IN\x00VITE sip:a@b SIP/2.0\r\n\r\n", ParseError::BadMethod);
    // Reason phrases are fit for a status line and map to a status code.
    let e = SipMessage::parse(&crlf(&base.replace("Call-ID: 3c2f8e1a9b7d4c6e\n", ""))).unwrap_err();
    assert_eq!(e.to_string(), "Missing Call-ID header");
    assert_eq!(e.status_code(), 400);
    assert_eq!(ParseError::BadVersion.status_code(), 505);
}

#[test]
fn response_to_copies_per_8_2_6() {
    let mut req = SipMessage::parse(&compact_invite()).unwrap();
    req.add_header("Timestamp", "54").unwrap();
    let ok = SipMessage::response_to(&req, StatusCode::OK, None, Some("as83kd9b"));
    assert_eq!(ok.status(), Some(StatusCode::OK));
    assert_eq!(ok.reason(), Some("OK"));
    assert_eq!(ok.vias(), req.vias());
    assert_eq!(ok.headers("Via").collect::<Vec<_>>(), req.headers("Via").collect::<Vec<_>>());
    assert_eq!(ok.to().tag(), Some("as83kd9b"));
    assert_eq!(ok.header("To"), Some("Bob <sip:bob@biloxi.example.com>;tag=as83kd9b"));
    assert_eq!(ok.from(), req.from());
    assert_eq!(ok.call_id(), req.call_id());
    assert_eq!(ok.cseq(), req.cseq());
    assert_eq!(ok.header("Record-Route"), None);
    assert_eq!(ok.header("Timestamp"), None);
    assert_eq!(ok.max_forwards(), None);
    assert!(ok.body().is_empty());
    roundtrips(&ok);

    let trying = SipMessage::response_to(&req, StatusCode::TRYING, None, None);
    assert_eq!(trying.header("Timestamp"), Some("54"));
    assert_eq!(trying.to().tag(), None);
    roundtrips(&trying);

    // An existing To tag is kept; a bad tag argument is ignored.
    let again = SipMessage::response_to(&ok, StatusCode::new(486).unwrap(), Some("Busy\r\nX: y"), Some("other"));
    assert_eq!(again.to().tag(), Some("as83kd9b"));
    assert_eq!(again.reason(), Some("Busy  X: y"));
    let bad_tag = SipMessage::response_to(&req, StatusCode::OK, None, Some("a b"));
    assert_eq!(bad_tag.to().tag(), None);
    roundtrips(&again);
}

#[test]
fn via_mutators() {
    let mut m = SipMessage::parse(&compact_invite()).unwrap();
    let mine = Via::new("TCP", Host::Name("proxy.example.net".into()), Some(5070), "z9hG4bKproxy1").unwrap();
    m.push_via(&mine).unwrap();
    assert_eq!(m.vias().len(), 3);
    assert_eq!(m.top_via(), Some(&mine));
    assert_eq!(m.all_headers()[0].value(), "SIP/2.0/TCP proxy.example.net:5070;branch=z9hG4bKproxy1");
    assert_eq!(m.pop_via(), Some(mine));
    // Popping from a two-value line keeps the second value on that line.
    let popped = m.pop_via().unwrap();
    assert_eq!(popped.branch(), Some("z9hG4bK776asdhds"));
    assert_eq!(m.header("Via"), Some("SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds8;received=192.0.2.1"));
    assert!(m.pop_via().is_some());
    assert!(m.top_via().is_none());
    assert!(m.pop_via().is_none());
}

#[test]
fn stamp_received_rfc3581() {
    // RFC 3581 §4 example: rport requested → received + rport always.
    let mut m = parse(BARESIP_REGISTER);
    let nat: SocketAddr = "203.0.113.5:61234".parse().unwrap();
    m.stamp_received(nat).unwrap();
    let via = m.top_via().unwrap();
    assert_eq!(via.rport(), Some(Some(61234)));
    assert_eq!(via.received(), Some("203.0.113.5"));
    assert!(
        m.header("Via")
            .unwrap()
            .starts_with("SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK4b3a8c1f2d9e;rport=61234;received=203.0.113.5")
    );
    roundtrips(&m);

    // No rport, sent-by equals the source: nothing added (§18.2.1).
    let mut m = parse(&BARESIP_REGISTER.replace(";rport", ""));
    m.stamp_received("192.168.1.20:5060".parse().unwrap()).unwrap();
    assert_eq!(m.top_via().unwrap().received(), None);
    // No rport, different source: received only.
    m.stamp_received("198.51.100.1:5060".parse().unwrap()).unwrap();
    assert_eq!(m.top_via().unwrap().received(), Some("198.51.100.1"));
    assert_eq!(m.top_via().unwrap().rport(), None);
    // IPv6 source: received is an unbracketed address.
    m.stamp_received("[2001:db8::7]:5060".parse().unwrap()).unwrap();
    assert_eq!(m.top_via().unwrap().received(), Some("2001:db8::7"));
    roundtrips(&m);
}

#[test]
fn max_forwards_and_header_edits() {
    let mut m = parse(BARESIP_REGISTER);
    assert_eq!(m.decrement_max_forwards(), Some(69));
    assert_eq!(m.header("Max-Forwards"), Some("69"));
    m.set_header("Max-Forwards", "0").unwrap();
    assert_eq!(m.decrement_max_forwards(), None);
    m.remove_header("max-forwards").unwrap();
    assert_eq!(m.decrement_max_forwards(), Some(70));

    let before = m.clone();
    assert!(m.set_header("From", "not a uri").is_err());
    assert_eq!(m.remove_header("i"), Err(ParseError::MissingHeader("Call-ID")));
    assert_eq!(m.add_header("X-Evil", "a\r\nVia: x"), Err(ParseError::BadHeaderValue));
    assert_eq!(m.add_header("Bad Name", "x"), Err(ParseError::BadHeaderName));
    assert_eq!(m.set_header("l", "5"), Err(ParseError::ComputedHeader("Content-Length")));
    assert_eq!(m.add_header("CSeq", "1 REGISTER"), Err(ParseError::DuplicateHeader("CSeq")));
    assert_eq!(m, before, "failed edits leave the message unchanged");

    m.set_header("f", "\"Al\" <sip:alice@example.com>;tag=new").unwrap();
    assert_eq!(m.from().tag(), Some("new"));
    assert_eq!(m.headers("From").count(), 1);
    m.set_body(b"hello".to_vec());
    assert_eq!(m.content_length(), 5);
    roundtrips(&m);
}

#[test]
fn routes_and_record_routes() {
    let mut m = SipMessage::parse(&compact_invite()).unwrap();
    m.add_header("Route", "<sip:p1.example.com;lr>,<sip:p2.example.com;lr>").unwrap();
    m.prepend_header("Record-Route", "<sip:me.example.net;lr>").unwrap();
    let rr = m.record_routes().unwrap();
    assert_eq!(rr.len(), 3);
    assert_eq!(rr[0].uri.to_string(), "sip:me.example.net;lr");
    let first = m.pop_route().unwrap().unwrap();
    assert!(first.uri.as_sip().unwrap().params.contains("lr"));
    assert_eq!(first.uri.as_sip().unwrap().host, Host::Name("p1.example.com".into()));
    assert_eq!(m.routes().unwrap().len(), 1);
    m.pop_route().unwrap();
    assert_eq!(m.pop_route().unwrap(), None);
    assert_eq!(m.header("Route"), None);
    m.set_request_uri(Uri::parse("sip:bob@192.0.2.99:5062;transport=tcp").unwrap()).unwrap();
    roundtrips(&m);
}

#[test]
fn contact_wildcard_and_errors() {
    let m =
        parse(&BARESIP_REGISTER.replace(
            "Contact: <sip:alice-0x55d3a1@192.168.1.20:5060;transport=udp>;expires=3600;",
            "Contact: *\nX-Old: ",
        ));
    assert_eq!(m.contacts().unwrap(), Contacts::Wildcard);
    let mut m2 = m.clone();
    m2.add_header("m", "<sip:a@b>").unwrap();
    assert!(m2.contacts().is_err());
    let mut m3 = m.clone();
    m3.set_header("Contact", "<sip:a@b").unwrap();
    assert_eq!(m3.contacts(), Err(ParseError::InvalidHeader { name: "Contact", reason: "missing '>'" }));
}

/// ezk-sip-types as an oracle: it must read the same Via, From/To tags,
/// CSeq and Contact hosts from the captures. (ezk rejects escaped quotes
/// inside a quoted display name, legal per §25.1 `quoted-pair`, so the
/// compact INVITE goes in with a plain display name.)
#[test]
fn agrees_with_ezk_sip_types() {
    use ezk_sip_types::header::typed;
    use ezk_sip_types::{Headers, Name};
    let plain = String::from_utf8(compact_invite()).unwrap().replace(r#""Alice, the \"first\"""#, "Alice");
    let corpus = [crlf(BARESIP_REGISTER), crlf(LINPHONE_REGISTER), plain.into_bytes(), crlf(RESPONSE_401)];
    for raw in corpus {
        let ours = SipMessage::parse(&raw).unwrap();
        let mut h = Headers::new();
        for line in ours.all_headers() {
            h.insert(Name::from(expand_compact(line.name()).to_owned()), line.value().to_owned());
        }
        let vias: Vec<typed::Via> = h.get_named().unwrap();
        assert_eq!(vias.len(), ours.vias().len());
        for (e, o) in vias.iter().zip(ours.vias()) {
            assert_eq!(e.transport.as_ref(), o.transport);
            assert_eq!(e.sent_by.host.to_string(), o.host.to_string());
            assert_eq!(e.sent_by.port, o.port);
            assert_eq!(e.params.get_val("branch").map(|b| b.to_string()).as_deref(), o.branch());
        }
        let from: typed::FromTo = h.get(Name::FROM).unwrap();
        let to: typed::FromTo = h.get(Name::TO).unwrap();
        assert_eq!(from.tag.as_deref(), ours.from().tag());
        assert_eq!(to.tag.as_deref(), ours.to().tag());
        let cseq: typed::CSeq = h.get_named().unwrap();
        assert_eq!((cseq.cseq, cseq.method.to_string()), (ours.cseq().seq, ours.cseq().method.to_string()));
        if let Ok(Contacts::Bindings(c)) = ours.contacts()
            && !c.is_empty()
        {
            let theirs: Vec<typed::Contact> = h.get_named().unwrap();
            assert_eq!(theirs.len(), c.len());
            for (e, o) in theirs.iter().zip(&c) {
                assert_eq!(e.uri.uri.host_port.host.to_string(), o.uri.as_sip().unwrap().host.to_string());
            }
        }
    }
}

fn corpus() -> Vec<Vec<u8>> {
    vec![crlf(BARESIP_REGISTER), crlf(LINPHONE_REGISTER), compact_invite(), crlf(RESPONSE_401)]
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9.!%*_+`'~-]{0,11}"
}

fn host() -> impl Strategy<Value = Host> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| Host::Ipv4(b.into())),
        any::<[u16; 8]>().prop_map(|b| Host::Ipv6(b.into())),
        "[a-z][a-z0-9-]{0,8}(\\.[a-z]{2,5}){0,2}".prop_map(Host::Name),
    ]
}

fn params() -> impl Strategy<Value = Vec<(String, Option<String>)>> {
    proptest::collection::vec((token(), proptest::option::of("[A-Za-z0-9:.\\[\\]/_-]{1,10}")), 0..3)
}

fn sip_uri() -> impl Strategy<Value = Uri> {
    (any::<bool>(), proptest::option::of("[a-z0-9+._-]{1,8}"), host(), proptest::option::of(any::<u16>()), params())
        .prop_map(|(secure, user, host, port, ps)| {
            let mut u = SipUri::new(host, port);
            u.secure = secure;
            u.user = user;
            for (n, v) in ps {
                u.params.set(&n, v.as_deref()).unwrap();
            }
            Uri::Sip(u)
        })
}

fn name_addr() -> impl Strategy<Value = NameAddr> {
    (proptest::option::of("[A-Za-z \"\\\\,é]{0,10}"), sip_uri(), params()).prop_map(|(d, uri, ps)| {
        let mut n = NameAddr::new(uri);
        n.display = d;
        for (k, v) in ps {
            n.params.set(&k, v.as_deref()).unwrap();
        }
        n
    })
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::Invite),
        Just(Method::Ack),
        Just(Method::Register),
        Just(Method::Cancel),
        token().prop_map(|t| Method::parse(&t).unwrap()),
    ]
}

prop_compose! {
    fn message()(
        request in any::<bool>(),
        method in method(),
        ruri in sip_uri(),
        status in 100u16..700,
        reason in "[A-Za-z ]{0,12}",
        vias in proptest::collection::vec((prop_oneof![Just("UDP"), Just("TCP"), Just("tls")], host(),
            proptest::option::of(any::<u16>()), token(), any::<bool>()), 1..4),
        from in name_addr(),
        to in name_addr(),
        call_id in "[A-Za-z0-9@.-]{1,20}",
        seq in any::<u32>(),
        max_fwd in proptest::option::of(0u8..=255),
        extra in proptest::collection::vec(("X-[A-Za-z0-9-]{1,8}", "[ -~]{0,20}"), 0..4),
        compact in any::<bool>(),
        body in proptest::collection::vec(any::<u8>(), 0..40),
    ) -> SipMessage {
        let mut headers = Vec::new();
        let mut line: Vec<String> = Vec::new();
        for (t, h, p, b, same_line) in vias {
            let via = Via::new(t, h, p, &format!("z9hG4bK{b}")).unwrap().to_string();
            if same_line && !line.is_empty() {
                line.push(via);
            } else {
                if !line.is_empty() {
                    headers.push(Header::new(if compact { "v" } else { "Via" }, &line.join(", ")).unwrap());
                }
                line = vec![via];
            }
        }
        headers.push(Header::new("Via", &line.join(",")).unwrap());
        headers.push(Header::new(if compact { "f" } else { "From" }, &from.to_string()).unwrap());
        headers.push(Header::new("TO", &to.to_string()).unwrap());
        headers.push(Header::new(if compact { "i" } else { "Call-ID" }, &call_id).unwrap());
        headers.push(Header::new("CSeq", &format!("{seq} {method}")).unwrap());
        if let Some(mf) = max_fwd {
            headers.push(Header::new("Max-Forwards", &mf.to_string()).unwrap());
        }
        for (n, v) in extra {
            headers.push(Header::new(&n, &v).unwrap());
        }
        if request {
            SipMessage::new_request(method, ruri, headers, body).unwrap()
        } else {
            SipMessage::new_response(StatusCode::new(status).unwrap(), &reason, headers, body).unwrap()
        }
    }
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = SipMessage::parse(&bytes);
    }

    #[test]
    fn never_panics_on_mutated_captures(
        which in 0usize..4,
        edits in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<proptest::sample::Index>(),
    ) {
        let mut bytes = corpus().swap_remove(which);
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        let _ = SipMessage::parse(&bytes);
        let n = cut.index(bytes.len());
        if let Ok(m) = SipMessage::parse(&bytes[..n]) {
            prop_assert_eq!(SipMessage::parse(&m.to_bytes()).unwrap(), m);
        }
    }

    #[test]
    fn generated_messages_roundtrip(m in message()) {
        prop_assert_eq!(SipMessage::parse(&m.to_bytes()).unwrap(), m.clone());
        let resp = SipMessage::response_to(&m, StatusCode::OK, None, Some("t1"));
        prop_assert_eq!(SipMessage::parse(&resp.to_bytes()).unwrap(), resp);
    }
}
