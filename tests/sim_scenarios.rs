//! Deterministic N-node scenarios over the real overlay node machine,
//! driven through the simulator's library API (not the binary).

// Integration tests drive real processes, sockets, files and clocks; clippy.toml's
// sans-IO lists are for the library's cores.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use chordphone::overlay::{Command, Failure, Outcome};
use chordphone::sim::{CryptoMode, SimOptions, Simulation, run};
use chordphone::wire::error::ErrorCode;
use chordphone::wire::storage::{ArrayEntry, DataValue, StoredDataValue};
use chordphone::wire::{KindId, NodeId, ResourceId};

fn opts(nodes: usize, seed: u64) -> SimOptions {
    SimOptions { nodes, seed, crypto: CryptoMode::Fast, join_rate: 5.0, ..SimOptions::default() }
}

fn built(o: &SimOptions) -> Simulation {
    let mut sim = Simulation::new(o).unwrap();
    assert!(sim.build(), "not every node joined: {:?}", sim.check_ring());
    sim
}

fn assert_ring(sim: &Simulation) {
    let check = sim.check_ring();
    assert!(check.correct, "ring wrong at {} s: {check:?}", sim.now_s());
}

fn store_own(sim: &mut Simulation, who: NodeId, value: &[u8]) -> Outcome {
    let cmd = Command::Store {
        resource_name: sim.user_name(who).into_bytes(),
        kind: KindId::CHORDPHONE_TEST,
        value: StoredDataValue::Single(DataValue::new(value.to_vec())),
        lifetime_s: 86_400,
    };
    let req = sim.command(who, cmd).unwrap();
    sim.wait_for(who, req, 60.0).expect("store did not complete")
}

fn fetch_value(sim: &mut Simulation, from: NodeId, owner: NodeId) -> Option<Vec<u8>> {
    let resource = ResourceId::from_name(sim.user_name(owner).as_bytes());
    let req = sim.command(from, Command::Fetch { resource, kind: KindId::CHORDPHONE_TEST }).unwrap();
    match sim.wait_for(from, req, 60.0)? {
        Outcome::Fetched { values } => values.into_iter().find_map(|v| match v {
            StoredDataValue::Single(DataValue { exists: true, value }) => Some(value),
            _ => None,
        }),
        _ => None,
    }
}

/// The node responsible for `owner`'s record in the reference ring.
fn responsible_for(sim: &Simulation, owner: NodeId) -> NodeId {
    let point = ResourceId::from_name(sim.user_name(owner).as_bytes()).as_u128().unwrap();
    let ring = sim.ring_ids();
    ring.iter().copied().find(|n| n.as_u128() >= point).unwrap_or(ring[0])
}

#[test]
fn join_builds_a_correct_ring() {
    let mut sim = built(&opts(30, 1));
    sim.run_for(30.0);
    assert_ring(&sim);
    assert_eq!(sim.ring_ids().len(), 30);
}

#[test]
fn join_with_real_crypto() {
    let o = SimOptions { crypto: CryptoMode::Real, ..opts(10, 2) };
    let mut sim = built(&o);
    sim.run_for(30.0);
    assert_ring(&sim);
}

#[test]
fn graceful_leave_keeps_ring_and_data() {
    let mut sim = built(&opts(20, 3));
    let ids = sim.ring_ids();
    let owner = ids[4];
    assert!(matches!(store_own(&mut sim, owner, b"kept"), Outcome::Stored { .. }));
    let resp = responsible_for(&sim, owner);
    sim.leave(resp);
    for &n in ids.iter().filter(|&&n| n != resp && n != owner).take(2) {
        sim.leave(n);
    }
    sim.run_for(60.0);
    assert_eq!(sim.ring_ids().len(), 17);
    assert_ring(&sim);
    let new_resp = responsible_for(&sim, owner);
    let res = ResourceId::from_name(sim.user_name(owner).as_bytes());
    assert!(sim.node(new_resp).unwrap().holds(&res, KindId::CHORDPHONE_TEST));
    assert_eq!(fetch_value(&mut sim, ids[10], owner).as_deref(), Some(&b"kept"[..]));
}

#[test]
fn crash_is_repaired() {
    let mut sim = built(&opts(20, 4));
    let ids = sim.ring_ids();
    let owner = ids[7];
    assert!(matches!(store_own(&mut sim, owner, b"survives"), Outcome::Stored { .. }));
    sim.run_for(5.0);
    let resp = responsible_for(&sim, owner);
    sim.crash(resp);
    sim.crash(ids[15]);
    sim.run_for(120.0);
    assert_ring(&sim);
    let res = ResourceId::from_name(sim.user_name(owner).as_bytes());
    let new_resp = responsible_for(&sim, owner);
    assert!(sim.node(new_resp).unwrap().holds(&res, KindId::CHORDPHONE_TEST));
    let from = sim.ring_ids()[0];
    assert_eq!(fetch_value(&mut sim, from, owner).as_deref(), Some(&b"survives"[..]));
}

#[test]
fn short_partition_is_ridden_out() {
    let mut sim = built(&opts(20, 5));
    let ids = sim.ring_ids();
    let half: Vec<NodeId> = ids.iter().copied().step_by(2).collect();
    sim.partition(&half);
    sim.run_for(1.0); // shorter than --detect-ms: no link goes down
    sim.heal();
    sim.run_for(60.0);
    assert_ring(&sim);
    assert_eq!(sim.ring_ids().len(), 20);
}

#[test]
fn long_partition_then_heal_converges_to_one_ring() {
    let mut sim = built(&opts(30, 6));
    let ids = sim.ring_ids();
    // A contiguous arc of ten peers on one side.
    let arc: Vec<NodeId> = ids[5..15].to_vec();
    sim.partition(&arc);
    sim.run_for(60.0);
    sim.heal();
    sim.run_for(600.0);
    assert_ring(&sim);
    assert_eq!(sim.ring_ids().len(), 30);
}

#[test]
fn store_and_fetch_under_churn() {
    let o = SimOptions { session_median: Some(300.0), duration: 180.0, stores: 15, lookups_per_s: 4.0, ..opts(30, 7) };
    let r = run(&o);
    assert_eq!(r.error, None);
    assert!(r.departures_graceful + r.departures_crash > 0, "no churn happened");
    assert_eq!(r.stores_ok, 15, "{:?}", r.failures);
    assert!(r.lookup_success_rate.unwrap() >= 0.9, "{r:?}");
    assert!(r.fetch_success_rate.unwrap() >= 0.9, "{r:?}");
    assert_eq!(r.records_lost_with_live_replica, 0, "{r:?}");
    assert!(r.ring_correct, "{:?}", r.ring);
}

#[test]
fn mass_kill_is_repaired() {
    let o = SimOptions { kill_fraction: 0.3, duration: 60.0, stores: 20, lookups_per_s: 2.0, ..opts(50, 8) };
    let r = run(&o);
    assert_eq!(r.killed, 15);
    assert!(r.repair_s.is_some(), "never repaired: {r:?}");
    assert_eq!(r.records_lost_with_live_replica, 0, "{r:?}");
    assert!(r.ring_correct, "{:?}", r.ring);
}

#[test]
fn lookups_find_the_responsible_peer() {
    let o = SimOptions { duration: 60.0, lookups_per_s: 10.0, stores: 10, ..opts(50, 9) };
    let r = run(&o);
    assert!(r.lookups > 200);
    assert_eq!(r.lookup_success_rate, Some(1.0), "{:?}", r.failures);
    assert_eq!(r.lookup_correct_rate, Some(1.0));
    assert_eq!(r.fetch_success_rate, Some(1.0), "{:?}", r.failures);
    // Chord routes in O(log N) hops: log2(50) ≈ 5.6.
    assert!(r.hops_mean.unwrap() <= 6.0, "{r:?}");
    assert!(r.ring_correct);
    assert_eq!(r.records_lost_with_live_replica + r.records_lost_all_replicas_dead, 0);
}

#[test]
fn access_control_rejects_with_reload_errors() {
    // Real certificates: the user names come from the CA.
    let o = SimOptions { crypto: CryptoMode::Real, ..opts(10, 10) };
    let mut sim = built(&o);
    let ids = sim.ring_ids();
    let (alice, bob) = (ids[1], ids[6]);

    // §7.3.1 USER-MATCH: only the user the name hashes from may write.
    let cmd = Command::Store {
        resource_name: sim.user_name(bob).into_bytes(),
        kind: KindId::CHORDPHONE_TEST,
        value: StoredDataValue::Single(DataValue::new(b"mine now".to_vec())),
        lifetime_s: 600,
    };
    let req = sim.command(alice, cmd).unwrap();
    match sim.wait_for(alice, req, 60.0) {
        Some(Outcome::Failed(Failure::Error(code, _))) => assert_eq!(code, ErrorCode::FORBIDDEN),
        other => panic!("expected Error_Forbidden, got {other:?}"),
    }

    // §7.3.2 NODE-MATCH: the Resource-ID must hash from the signer's Node-ID.
    let cmd = Command::Store {
        resource_name: bob.0.to_vec(),
        kind: KindId::CERTIFICATE_BY_NODE,
        value: StoredDataValue::Array(ArrayEntry { index: ArrayEntry::APPEND, value: DataValue::new(vec![1, 2, 3]) }),
        lifetime_s: 600,
    };
    let req = sim.command(alice, cmd).unwrap();
    match sim.wait_for(alice, req, 60.0) {
        Some(Outcome::Failed(Failure::Error(code, _))) => assert_eq!(code, ErrorCode::FORBIDDEN),
        other => panic!("expected Error_Forbidden, got {other:?}"),
    }

    // The rightful owner may, and everyone can read it back.
    assert!(matches!(store_own(&mut sim, bob, b"bob's"), Outcome::Stored { .. }));
    assert_eq!(fetch_value(&mut sim, alice, bob).as_deref(), Some(&b"bob's"[..]));
}

#[test]
fn lossy_network_still_converges() {
    // Every message has a 2 % chance of being dropped; end-to-end
    // retransmission (§6.2.1) and stabilization must cope.
    let o = SimOptions { loss: 0.02, duration: 60.0, stores: 10, lookups_per_s: 4.0, ..opts(40, 13) };
    let r = run(&o);
    assert!(r.dropped_loss > 0);
    assert!(r.ring_correct, "{:?}", r.ring);
    assert!(r.lookup_success_rate.unwrap() >= 0.95, "{r:?}");
    assert_eq!(r.stores_ok, 10, "{:?}", r.failures);
    assert_eq!(r.records_lost_with_live_replica, 0, "{r:?}");
}

#[test]
fn same_seed_same_report_with_real_crypto() {
    // Ed25519 signatures are deterministic and keys come from the seed.
    let o = SimOptions {
        crypto: CryptoMode::Real,
        duration: 20.0,
        stores: 3,
        lookups_per_s: 2.0,
        quiesce: 20.0,
        ..opts(8, 14)
    };
    let a = run(&o);
    assert_eq!(a.error, None);
    assert_eq!(a.node_totals.dropped_signature, 0);
    assert_eq!(a.to_json(), run(&o).to_json());
}

#[test]
fn same_seed_same_report() {
    let o = SimOptions {
        session_median: Some(120.0),
        kill_fraction: 0.2,
        loss: 0.01,
        duration: 60.0,
        stores: 8,
        lookups_per_s: 3.0,
        quiesce: 60.0,
        ..opts(25, 11)
    };
    let a = run(&o);
    let b = run(&o);
    assert_eq!(a.error, None);
    assert_eq!(a.to_json(), b.to_json());
    assert!(a.messages > 0);
    let c = run(&SimOptions { seed: 12, ..o });
    assert_ne!(a.to_json(), c.to_json());
}

// ---- phones: the SIP edge, the RFC 7904 usage and real user agents on
// every peer, through the same Peer the daemon runs ----

fn phones(nodes: usize, phones: usize, seed: u64) -> SimOptions {
    SimOptions { phones, calls_per_s: 4.0, messages_per_s: 4.0, duration: 60.0, quiesce: 20.0, ..opts(nodes, seed) }
}

#[test]
fn phones_register_call_and_message_across_the_overlay() {
    let r = run(&phones(30, 200, 21));
    assert_eq!(r.error, None);
    assert_eq!(r.registrations, 200);
    assert_eq!(r.registration_success_rate, Some(1.0), "{:?}", r.failures);
    assert!(r.calls > 100, "{r:?}");
    assert_eq!(r.call_success_rate, Some(1.0), "{:?}", r.failures);
    assert!(r.sip_messages > 100);
    assert_eq!(r.messages_delivered_rate, Some(1.0), "{:?}", r.failures);
    assert_eq!(r.registrations_lost, 0);
    // Virtual-time setup: a few overlay round trips at 50 ms per hop.
    let p50 = r.call_setup_ms_p50.unwrap();
    assert!(p50 > 100.0 && p50 < 3000.0, "setup p50 {p50} ms");
}

#[test]
fn phones_with_real_signatures_register_as_their_aor() {
    // Every registration is stored signed with a user certificate that
    // binds the AOR and the serving peer (USER-NODE-MATCH).
    let o = SimOptions { crypto: CryptoMode::Real, duration: 30.0, ..phones(10, 40, 22) };
    let r = run(&o);
    assert_eq!(r.registration_success_rate, Some(1.0), "{:?}", r.failures);
    assert_eq!(r.call_success_rate, Some(1.0), "{:?}", r.failures);
    assert_eq!(r.registrations_lost, 0);
    assert_eq!(r.node_totals.dropped_signature, 0);
}

#[test]
fn phones_survive_a_mass_failure() {
    // Half the peers crash at once: calls to phones whose peer survived
    // work again within 10 simulated seconds; phones of dead peers
    // register elsewhere and are reachable again.
    let o = SimOptions { kill_fraction: 0.5, kill_at: Some(30.0), duration: 90.0, ..phones(40, 300, 23) };
    let r = run(&o);
    assert_eq!(r.killed, 20);
    assert!(r.phones_rehomed > 50, "{r:?}");
    assert_eq!(r.registration_success_rate, Some(1.0), "{:?}", r.failures);
    let recovery = r.call_recovery_s.expect("a kill happened");
    assert!(recovery <= 10.0, "calls failed until {recovery} s after the kill: {:?}", r.failures);
    // Reachable as soon as their REGISTER at the new peer succeeded.
    assert!(r.calls_to_rehomed > 10, "{r:?}");
    assert_eq!(r.calls_to_rehomed_failed, 0, "{:?}", r.failures);
    assert_eq!(r.registrations_lost, 0);
    assert!(r.ring_correct);
}

#[test]
fn phones_same_seed_same_report() {
    let o = SimOptions { kill_fraction: 0.2, loss: 0.01, ..phones(20, 100, 24) };
    let a = run(&o);
    assert_eq!(a.to_json(), run(&o).to_json());
    assert!(a.calls > 0);
}
