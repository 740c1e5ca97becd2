//! The registrar on its own: a shared [`EdgeCore`] and a [`Registrar`], no
//! proxy, no SIP edge around them.

use std::time::{Duration, Instant};

use super::*;
use crate::sip::account::NodeRef;
use crate::sip::digest::{Credentials, NonceCount, Qop};
use crate::sip::edge::EdgeConfig;
use crate::sip::transaction::{RequestDisposition, Transport};

const DOMAIN: &str = "chordphone.test";

/// The fake clock's origin.
fn t0() -> Instant {
    Instant::now() // layering: allowed (test-only module: the fake clock's origin)
}

fn core() -> EdgeCore {
    let cfg = EdgeConfig::new(NodeRef::from_u128(7), DOMAIN, ("192.0.2.1".into(), 5060), [3; 32]);
    EdgeCore::new(cfg).unwrap()
}

fn alice() -> SipUser {
    SipUser {
        aor: format!("alice@{DOMAIN}"),
        realm: DOMAIN.into(),
        ha1_md5: digest::ha1(DigestAlgorithm::Md5, "alice", DOMAIN, "secret"),
        ha1_sha256: digest::ha1(DigestAlgorithm::Sha256, "alice", DOMAIN, "secret"),
        created_unix_s: 0,
    }
}

fn phone() -> TransportAddr {
    TransportAddr { transport: Transport::Udp, addr: "203.0.113.5:61234".parse().unwrap(), flow: None }
}

fn register(cseq: u32, auth: Option<&str>) -> SipMessage {
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let text = format!(
        "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bKr{cseq};rport\r\n\
         Contact: <sip:alice@192.168.1.20:5060>;expires=600\r\nMax-Forwards: 70\r\nTo: <sip:alice@{DOMAIN}>\r\n\
         From: <sip:alice@{DOMAIN}>;tag=a1\r\nCall-ID: reg-1\r\nCSeq: {cseq} REGISTER\r\n{auth}Content-Length: 0\r\n\r\n"
    );
    SipMessage::parse(text.as_bytes()).unwrap()
}

/// Feeds `req` to the registrar through a new server transaction.
fn feed(core: &mut EdgeCore, reg: &mut Registrar, now: Instant, req: &SipMessage) {
    let RequestDisposition::New(id) = core.tl.handle_request(now, req, phone()) else { panic!("not new") };
    reg.handle_register(core, now, 1_000, id, req, phone());
}

fn sent(core: &mut EdgeCore) -> Vec<SipMessage> {
    std::iter::from_fn(|| core.tl.poll_transmit()).map(|t| SipMessage::parse(&t.payload).unwrap()).collect()
}

/// The MD5 Authorization value for the challenge in `resp`.
fn answer(resp: &SipMessage) -> String {
    let ch = resp.headers("WWW-Authenticate").find(|h| h.contains("algorithm=MD5")).unwrap();
    let nonce = ch.split("nonce=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let uri = format!("sip:{DOMAIN}");
    let creds = Credentials {
        username: "alice".into(),
        realm: DOMAIN.into(),
        nonce: nonce.clone(),
        uri: uri.clone(),
        response: String::new(),
        algorithm: DigestAlgorithm::Md5,
        session: false,
        cnonce: Some("0a4f113b".into()),
        nc: Some(NonceCount::parse("00000001").unwrap()),
        qop: Some(Qop::Auth),
        opaque: None,
    };
    let ha1 = digest::ha1(DigestAlgorithm::Md5, "alice", DOMAIN, "secret");
    let response = digest::compute_response(&creds, "REGISTER", &ha1, None);
    format!(
        "Digest username=\"alice\",realm=\"{DOMAIN}\",nonce=\"{nonce}\",uri=\"{uri}\",response=\"{response}\",\
         algorithm=MD5,cnonce=\"0a4f113b\",qop=auth,nc=00000001"
    )
}

#[test]
fn aor_forms() {
    assert_eq!(normalize_aor("sip:Bob@Example.ORG").as_deref(), Some("Bob@example.org"));
    assert_eq!(normalize_aor("nobody"), None);
    assert_eq!(account_aor("bob", "example.org").as_deref(), Some("bob@example.org"));
    assert_eq!(account_aor("bob@other.net", "example.org").as_deref(), Some("bob@other.net"));
}

/// 401, then a stored record before 200 (RFC 7904 §3), then expiry removes
/// the overlay entry.
#[test]
fn challenge_store_then_commit_and_expire() {
    let (mut core, mut reg, now) = (core(), Registrar::new([3; 32]), t0());
    assert!(reg.add_user(alice()));
    feed(&mut core, &mut reg, now, &register(1, None));
    let challenge = sent(&mut core).pop().unwrap();
    assert_eq!(challenge.status(), Some(StatusCode::UNAUTHORIZED));
    assert_eq!(core.counters.auth_challenges, 1);
    assert!(core.out.is_empty());

    feed(&mut core, &mut reg, now, &register(2, Some(&answer(&challenge))));
    assert!(sent(&mut core).is_empty(), "no answer before the overlay stored the record");
    let Some(EdgeOutput::StoreRegistration { op, aor, expires_s: 600 }) = core.out.pop_front() else { panic!() };
    assert_eq!(aor, format!("alice@{DOMAIN}"));
    assert!(reg.owns(op) && reg.bindings(&aor).is_empty());
    reg.handle_overlay(&mut core, now, op, OverlayResult::Stored);
    let ok = sent(&mut core).pop().unwrap();
    assert_eq!(ok.status(), Some(StatusCode::OK));
    assert_eq!(ok.header("Contact"), Some("<sip:alice@192.168.1.20:5060>;expires=600"));
    assert_eq!(reg.bindings(&format!("sip:alice@{DOMAIN}")).len(), 1);
    assert_eq!(core.counters.register_ok, 1);

    // The answered store's deadline passes quietly; then the binding
    // expires and the overlay entry is removed.
    let store_deadline = now + core.cfg.overlay_timeout;
    reg.handle_timeout(&mut core, store_deadline);
    assert!(core.out.is_empty() && sent(&mut core).is_empty());
    let expiry = reg.poll_timeout().unwrap();
    assert_eq!(expiry, now + Duration::from_secs(600));
    reg.handle_timeout(&mut core, expiry);
    assert!(reg.bindings(&aor).is_empty());
    assert!(matches!(core.out.pop_front(), Some(EdgeOutput::RemoveRegistration { .. })));
}

/// An overlay store that never answers fails the REGISTER with 500.
#[test]
fn store_timeout_is_500() {
    let (mut core, mut reg, now) = (core(), Registrar::new([3; 32]), t0());
    reg.add_user(alice());
    feed(&mut core, &mut reg, now, &register(1, None));
    let challenge = sent(&mut core).pop().unwrap();
    feed(&mut core, &mut reg, now, &register(2, Some(&answer(&challenge))));
    let Some(EdgeOutput::StoreRegistration { op, .. }) = core.out.pop_front() else { panic!() };
    let deadline = reg.poll_timeout().unwrap();
    assert_eq!(deadline, now + core.cfg.overlay_timeout);
    reg.handle_timeout(&mut core, deadline);
    assert!(!reg.owns(op));
    let refused = sent(&mut core).pop().unwrap();
    assert_eq!(refused.status(), Some(StatusCode::SERVER_ERROR));
    assert_eq!(refused.reason(), Some("overlay store failed: timed out"));
    assert_eq!(core.counters.register_fail, 1);
    assert!(reg.bindings(&format!("alice@{DOMAIN}")).is_empty());
}
