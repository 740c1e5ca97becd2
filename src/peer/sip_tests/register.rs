//! REGISTER on the real overlay: the record a registration leaves (or
//! does not) is looked for with a Fetch through another peer.

use std::time::Duration;

use super::Net;
use crate::overlay::{Command, Outcome};
use crate::sip::digest::DigestAlgorithm;
use crate::sip::message::StatusCode;
use crate::sip::test_phones::{PhoneNet, alice, answer, baresip_register, bob, linphone_register, login};
use crate::wire::ResourceId;

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
    assert_eq!(net.edge(0).bindings("alice@chordphone.test")[0].source, alice());
    assert_eq!(net.edge(0).counters().register_ok, 1);
    assert_eq!(net.edge(0).counters().auth_challenges, 1);

    net.advance(Duration::from_secs(59));
    assert!(net.registered("alice@chordphone.test", 0));
    net.advance(Duration::from_secs(2));
    assert!(!net.registered("alice@chordphone.test", 0), "expired binding leaves the overlay");
    assert!(net.edge(0).bindings("alice@chordphone.test").is_empty());
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
    assert_eq!(net.registration_records(), 0, "nothing stored anywhere");
    assert_eq!(net.edge(0).counters().register_fail, 2);
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

    // Node A cannot sign as Alice (it holds no certificate for her AOR):
    // the overlay refuses the Store, nothing unsigned leaves.
    net.refuse_user_signatures(true);
    let r = login(&mut net, 0, alice(), "alice", "wonderland", false);
    assert_eq!(r.status().unwrap().as_u16(), 500);
    assert_eq!(
        r.reason(),
        Some("overlay store failed: this node holds no certificate for user 'alice@chordphone.test'")
    );
    assert_eq!(net.registration_records(), 0);
    assert!(net.edge(0).bindings("alice@chordphone.test").is_empty(), "nothing bound without the record");
}

#[test]
fn a_store_lost_in_the_overlay_fails_the_register_with_500() {
    let mut net = Net::new();
    // Alice registers at a node other than the one responsible for her
    // record, so the Store has to cross the overlay, where it is lost.
    let resource = ResourceId::from_name(b"alice@chordphone.test");
    let Outcome::LookedUp { responsible, .. } = net.command(0, Command::Lookup { resource }) else { panic!() };
    let home = (0..3).find(|&i| net.ids[i] != responsible).unwrap();
    net.local(home, alice(), &baresip_register("alice", 1, 3600, None));
    let challenge = net.got(alice(), "401");
    let auth = answer(&challenge, "REGISTER", "sip:chordphone.test", "alice", "wonderland", DigestAlgorithm::Md5);
    net.lose_overlay = true;
    net.local(home, alice(), &baresip_register("alice", 2, 3600, Some(&auth)));
    assert!(net.take(alice()).is_empty(), "no answer before the Store fails");
    net.advance(Duration::from_secs(30));
    let r = net.got(alice(), "500");
    assert_eq!(r.reason(), Some("overlay store failed: overlay timeout"));
    assert!(net.edge(home).bindings("alice@chordphone.test").is_empty(), "nothing bound without the record");
    assert_eq!(net.edge(home).counters().register_fail, 1);
}
