//! The RFC 7904 usage as the Peer runs it: where registrations live in the
//! overlay, what their removal leaves, and what a peer does for the
//! registrations it serves when a neighbor dies.

use std::time::Duration;

use super::{Net, two_users};
use crate::sip::digest::DigestAlgorithm;
use crate::sip::message::Method;
use crate::sip::test_phones::{PhoneNet, SDP, alice, answer, baresip_register, bob, call, linphone_register, reply};
use crate::usage::{node_ref, serving_nodes};
use crate::wire::storage::StoredDataValue;
use crate::wire::{KindId, ResourceId};

const ALICE: &str = "alice@chordphone.test";
const BOB: &str = "bob@chordphone.test";

/// Bob's Linphone removes its binding (Expires: 0), through the 401.
fn unregister_bob(net: &mut Net) {
    let zero = |cseq: u32, auth: Option<&str>| {
        String::from_utf8(linphone_register(cseq, auth)).unwrap().replace("Expires: 600", "Expires: 0")
    };
    net.local(1, bob(), zero(30, None).as_bytes());
    let ch = net.got(bob(), "401");
    let auth = answer(&ch, "REGISTER", "sip:chordphone.test;transport=tcp", "bob", "builder", DigestAlgorithm::Sha256);
    net.local(1, bob(), zero(31, Some(&auth)).as_bytes());
    assert_eq!(net.got(bob(), "200").header("Contact"), None, "no binding left");
}

/// Alice's baresip refreshes its registration with CSeqs `cseq`, `cseq + 1`.
fn refresh_alice(net: &mut Net, cseq: u32) -> u16 {
    net.local(0, alice(), &baresip_register("alice", cseq, 3600, None));
    let ch = net.got(alice(), "401");
    let auth = answer(&ch, "REGISTER", "sip:chordphone.test", "alice", "wonderland", DigestAlgorithm::Md5);
    net.local(0, alice(), &baresip_register("alice", cseq + 1, 3600, Some(&auth)));
    let all = net.take(alice());
    assert_eq!(all.len(), 1);
    all[0].status().unwrap().as_u16()
}

/// Whether every live peer in `peers` holds a copy of `aor`'s registrations.
fn copies_at(net: &Net, aor: &str, peers: &[usize]) -> bool {
    let r = ResourceId::from_name(aor.as_bytes());
    peers.iter().all(|&i| net.peer(i).overlay().holds(&r, KindId::SIP_REGISTRATION))
}

#[test]
fn a_registration_resolves_through_every_peer_and_its_removal_leaves_a_tombstone() {
    let mut net = two_users();
    let (a, b) = (node_ref(net.ids[0]), node_ref(net.ids[1]));
    // Stored once, by the serving node; the responsible peer and its two
    // replicas (RFC 6940 §10.4) are all three peers here.
    assert_eq!((net.usage(0).stores, net.usage(1).stores), (1, 1));
    assert!(copies_at(&net, ALICE, &[0, 1, 2]) && copies_at(&net, BOB, &[0, 1, 2]));
    for via in 0..3 {
        assert_eq!(serving_nodes(&net.fetch(via, ALICE)), vec![a], "through peer {via}");
        assert_eq!(serving_nodes(&net.fetch(via, BOB)), vec![b], "through peer {via}");
    }

    // RFC 6940 §7.2.1: the removal is B's entry stored again with
    // exists=false, so a replica that missed it cannot bring it back.
    unregister_bob(&mut net);
    assert_eq!(net.usage(1).removals, 1);
    let values = net.fetch(2, BOB);
    let [StoredDataValue::Dictionary(entry)] = values.as_slice() else { panic!("{values:?}") };
    assert_eq!(entry.key, net.ids[1].0.to_vec(), "keyed by the node that stored it");
    assert!(!entry.value.exists, "a tombstone");
    assert!(serving_nodes(&values).is_empty());
    assert_eq!(serving_nodes(&net.fetch(0, ALICE)), vec![a], "Alice's record untouched");

    call(&mut net, "bob");
    assert_eq!(net.got(alice(), "404").cseq().method, Method::Invite);
}

#[test]
fn after_a_peer_dies_the_survivors_store_their_registrations_again_and_calls_go_through() {
    let mut net = two_users();
    let stores = (net.usage(0).stores, net.usage(1).stores);
    net.kill(2);
    // The restore waits 1 s plus a spread derived from the Node-ID (< 3 s).
    net.advance(Duration::from_secs(4));
    assert_eq!(net.usage(0).stores, stores.0 + 1, "A stored Alice's registration again");
    assert_eq!(net.usage(1).stores, stores.1 + 1, "B stored Bob's registration again");
    assert!(copies_at(&net, ALICE, &[0, 1]) && copies_at(&net, BOB, &[0, 1]));
    assert!(net.registered(BOB, 1));

    call(&mut net, "bob");
    let inv = net.got(bob(), "INVITE");
    let contact = "<sip:bob@10.0.0.7:40123;transport=tcp>";
    net.local(1, bob(), &reply(&inv, 200, "bobtag", Some(contact), SDP));
    let ok = net.got(alice(), "200");
    assert_eq!(ok.cseq().method, Method::Invite);
    assert_eq!(ok.to().tag(), Some("bobtag"));
}

#[test]
fn a_store_replaces_the_last_within_the_same_millisecond_and_after_the_clock_steps_back() {
    // RFC 6940 §7.4.1.1 refuses a value whose storage_time is not newer
    // than the one held (Error_Data_Too_Old): the refresh below comes in
    // the very millisecond of the first registration, then after node A's
    // wall clock stepped back a minute.
    let mut net = two_users();
    assert_eq!(refresh_alice(&mut net, 3), 200);
    net.step_wall_clock_back(0, Duration::from_secs(60));
    assert_eq!(refresh_alice(&mut net, 5), 200);
    assert_eq!(net.usage(0).stores, 3);
    assert!(net.registered(ALICE, 0));
}
