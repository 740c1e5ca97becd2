//! Lookup latency measured inside the node (interop/bench/lookup-latency.sh
//! reads it): three real `chordphone node` processes on loopback; a single
//! lookup carries `elapsed_us`, and `lookup --repeat K` answers with K
//! samples whose hop counts agree with single lookups of the same names.

// Integration tests drive real processes and sockets: the sans-IO lists in
// clippy.toml are for the library cores, not for tests.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

#[path = "support/cluster.rs"]
mod cluster;

use std::time::Duration;

use cluster::{Cluster, wait_for};
use serde_json::Value;

fn json(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[test]
fn lookups_are_timed_in_the_node_singly_and_in_series() {
    let mut c = Cluster::new(3, "");
    c.nodes[0].start();
    assert!(wait_for(Duration::from_secs(20), || c.nodes[0].joined()), "bootstrap node did not start the ring");
    for n in c.nodes.iter_mut().skip(1) {
        n.start();
    }
    c.await_ring(Duration::from_secs(60));

    let one = json(&c.nodes[1].ctl(&["lookup", "--json", "probe7"]));
    let elapsed = one["elapsed_us"].as_u64().expect("a lookup answer carries elapsed_us");
    assert!(elapsed > 0 && elapsed < 30_000_000, "elapsed_us {elapsed}");

    let series = json(&c.nodes[1].ctl(&["lookup", "--repeat", "25", "--json", "probe"]));
    assert_eq!(series["count"], 25);
    assert_eq!(series["failed"], 0, "{series}");
    let samples = series["elapsed_us"].as_array().expect("elapsed_us list");
    let hops = series["hops"].as_array().expect("hops list");
    assert_eq!((samples.len(), hops.len()), (25, 25));
    assert!(samples.iter().all(|s| s.as_u64().is_some_and(|us| us > 0)), "{samples:?}");
    // The series looked up probe0 … probe24: sample 7 is the name above.
    assert_eq!(hops.get(7), Some(&one["hops"]), "series hops {hops:?}, single {one}");

    let text = c.nodes[2].ctl(&["lookup", "--repeat", "5", "probe"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("lookups      5 (0 failed)") && text.contains("p99"), "{text}");

    for bad in ["0", "100001"] {
        let refused = c.nodes[1].ctl(&["lookup", "--repeat", bad, "probe"]);
        assert!(!refused.status.success(), "--repeat {bad} accepted");
    }
}
