//! A real node's data plane (issue 9 §3): forwarding entries installed
//! with `chordphone forward`, UDP datagrams relayed both ways on loopback,
//! per-entry counters, removal, and refusals with a clear message.

// Integration tests drive real processes, sockets, files and clocks; clippy.toml's
// sans-IO lists are for the library's cores.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

#[path = "support/cluster.rs"]
mod cluster;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use cluster::{Cluster, NodeProc, free_port, scrape, wait_for};
use serde_json::Value;

const PACKET: usize = 172;

fn endpoint() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    s
}

fn json(node: &NodeProc, args: &[&str]) -> Value {
    let out = node.ctl(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

fn refused(node: &NodeProc, args: &[&str]) -> String {
    let out = node.ctl(args);
    assert!(!out.status.success(), "{args:?} should be refused");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn entry(node: &NodeProc, id: u64) -> Value {
    let list = json(node, &["forward", "list", "--json"]);
    list["entries"].as_array().expect("entries").iter().find(|e| e["id"] == id).cloned().expect("the entry is listed")
}

/// Sends from `from` to `via` until `to` receives the datagram (the worker
/// takes an install asynchronously); returns the sender `to` saw.
fn deliver(from: &UdpSocket, via: SocketAddr, to: &UdpSocket) -> Option<SocketAddr> {
    let end = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        from.send_to(&[7u8; PACKET], via).expect("send");
        if let Ok((n, src)) = to.recv_from(&mut buf) {
            assert_eq!(n, PACKET);
            return Some(src);
        }
    }
    None
}

/// Drains what `s` holds; returns how many datagrams.
fn drain(s: &UdpSocket) -> usize {
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while s.recv_from(&mut buf).is_ok() {
        n += 1;
    }
    n
}

#[test]
fn forward_entries_relay_both_ways_count_and_stop() {
    let metrics = free_port();
    let toml = format!("metrics_listen = \"127.0.0.1:{metrics}\"\n[dataplane]\nworkers = 2\naddress = \"127.0.0.1\"\n");
    let mut c = Cluster::new(1, &toml);
    c.nodes[0].start();
    assert!(wait_for(Duration::from_secs(20), || c.nodes[0].status().is_some()), "node did not start");
    let node = &c.nodes[0];
    let status = node.status().expect("status");
    assert_eq!(status["dataplane"]["sockets"].as_array().map(Vec::len), Some(2), "{status}");

    let (a, b) = (endpoint(), endpoint());
    let (aa, ba) = (a.local_addr().unwrap().to_string(), b.local_addr().unwrap().to_string());
    let added = json(node, &["forward", "add", "--from", &aa, "--to", &ba, "--json"]);
    let id = added["id"].as_u64().expect("id");
    let via: SocketAddr = added["via"].as_str().expect("via").parse().expect("via address");

    // Both directions, sent from the node's data-plane socket.
    assert_eq!(deliver(&a, via, &b), Some(via), "A to B");
    assert_eq!(deliver(&b, via, &a), Some(via), "B to A");
    drain(&a);
    drain(&b);
    let before = entry(node, id)["counters"].clone();
    for _ in 0..50 {
        a.send_to(&[1u8; PACKET], via).unwrap();
        b.send_to(&[2u8; PACKET], via).unwrap();
    }
    let mut got = (0, 0);
    assert!(
        wait_for(Duration::from_secs(5), || {
            got.0 += drain(&b);
            got.1 += drain(&a);
            got == (50, 50)
        }),
        "received {got:?} of (50, 50)"
    );
    // A datagram is counted once `sendmmsg` returns: maybe just after it arrived.
    let mut after = Value::Null;
    let delta = |after: &Value, dir: &str, k: &str| after[dir][k].as_u64().unwrap() - before[dir][k].as_u64().unwrap();
    let counted = wait_for(Duration::from_secs(5), || {
        after = entry(node, id)["counters"].clone();
        (delta(&after, "a_to_b", "packets"), delta(&after, "b_to_a", "packets")) == (50, 50)
    });
    assert!(counted, "counters {after}, before {before}");
    let delta = |dir: &str, k: &str| delta(&after, dir, k);
    assert_eq!(delta("a_to_b", "bytes"), 50 * PACKET as u64);
    assert_eq!(after["drops"], 0);
    let text = String::from_utf8_lossy(&node.ctl(&["forward", "list"]).stdout).into_owned();
    assert!(text.contains(&format!("{id} {aa} <-> {ba} via {via}")), "{text}");

    // Totals in status and Prometheus.
    let forwarded = node.status().expect("status")["dataplane"]["totals"]["forwarded"].as_u64().unwrap();
    assert!(forwarded >= 102, "status totals: {forwarded}");
    assert!(
        wait_for(Duration::from_secs(5), || scrape(metrics).lines().any(|l| l
            .strip_prefix("chordphone_dataplane_forwarded_packets_total ")
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| v >= 102.0))),
        "metrics lack the forwarded total"
    );

    // Refusals, each with its reason.
    let own = via.to_string();
    assert!(refused(node, &["forward", "add", "--from", &aa, "--to", &own]).contains("would loop"));
    let other = endpoint().local_addr().unwrap().to_string();
    let e = refused(node, &["forward", "add", "--from", &other, "--to", &ba]);
    assert!(e.contains(&format!("{ba} is already an address of entry {id}")), "{e}");
    assert!(refused(node, &["forward", "add", "--from", &aa, "--to", &aa]).contains("same address"));
    assert!(refused(node, &["forward", "add", "--from", "0.0.0.0:9", "--to", &ba]).contains("not a usable"));
    assert!(refused(node, &["forward", "remove", "999"]).contains("no entry 999"));
    assert!(refused(node, &["forward", "add", "--from", "nonsense", "--to", &ba]).contains("invalid"));

    // Removal: the worker counts A's datagrams as unmatched, B gets nothing.
    let out = node.ctl(&["forward", "remove", &id.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let unmatched = || json(node, &["forward", "list", "--json"])["totals"]["unmatched"].as_u64().unwrap();
    let u0 = unmatched();
    assert!(
        wait_for(Duration::from_secs(5), || {
            a.send_to(&[3u8; PACKET], via).unwrap();
            unmatched() > u0
        }),
        "datagrams after removal are not counted as unmatched"
    );
    drain(&b);
    a.send_to(&[4u8; PACKET], via).unwrap();
    assert_eq!(drain(&b), 0, "forwarded after removal");
    assert_eq!(json(node, &["forward", "list", "--json"])["entries"].as_array().map(Vec::len), Some(0));
    assert!(c.nodes[0].terminate(), "the node stops cleanly with its workers");
}
