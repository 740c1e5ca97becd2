//! Ten real `chordphone node` processes on loopback (issue 4): they join,
//! agree with the reference ring, share a record, survive kill -9 of three
//! peers, and a restarted peer rejoins through its host cache (its
//! bootstrap peer is dead) with its stored records intact.

// Integration tests drive real processes, sockets, files and clocks; clippy.toml's
// sans-IO lists are for the library's cores.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

#[path = "support/cluster.rs"]
mod cluster;

use std::time::Duration;

use cluster::{Cluster, wait_for};

fn fetch(c: &Cluster, i: usize, name: &str) -> Result<String, String> {
    let out = c.nodes[i].ctl(&["fetch", name]);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

#[test]
fn ten_peers_join_share_survive_and_restart() {
    let mut c = Cluster::new(10, "");
    // The bootstrap peer first: it finds nobody and starts the ring.
    c.nodes[0].start();
    assert!(wait_for(Duration::from_secs(20), || c.nodes[0].joined()), "bootstrap node did not start the ring");
    for n in c.nodes.iter_mut().skip(1) {
        n.start();
    }
    c.await_ring(Duration::from_secs(90));

    // A record stored through one peer is fetched through every other.
    let owner = 3;
    let name = c.nodes[owner].user.clone();
    let out = c.nodes[owner].ctl(&["store", &name, "hello-ring"]);
    assert!(out.status.success(), "store failed: {}", String::from_utf8_lossy(&out.stderr));
    for i in 0..10 {
        assert_eq!(fetch(&c, i, &name).as_deref(), Ok("hello-ring"), "fetch through node{i}");
    }
    // Only the certificate's user may write there (USER-MATCH).
    let denied = c.nodes[4].ctl(&["store", &name, "mallory"]);
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("Forbidden"), "{denied:?}");

    // kill -9 three peers: the one responsible for the record, the
    // bootstrap peer, and one more.
    let lookup = c.nodes[5].ctl(&["lookup", "--json", &name]);
    assert!(lookup.status.success());
    let lookup: serde_json::Value = serde_json::from_slice(&lookup.stdout).expect("lookup json");
    let responsible = lookup["responsible"].as_str().expect("responsible").to_owned();
    let route: Vec<String> =
        lookup["route"].as_array().expect("route").iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
    // The route ends at the responsible peer (empty when the asker is it).
    match route.last() {
        Some(last) => assert_eq!(last, &responsible, "the route ends at the responsible peer"),
        None => assert_eq!(responsible, c.nodes[5].id, "an empty route means node5 is responsible"),
    }
    let r = c.nodes.iter().position(|n| n.id == responsible).expect("responsible is one of ours");
    // The responsible peer and its two replicas hold the record; with two
    // replicas, three simultaneous deaths among them could lose it, so the
    // third victim is a peer without a copy.
    let holds = |c: &Cluster, i: usize| {
        c.nodes[i].status().is_some_and(|s| s["records_by_kind"]["CHORDPHONE-TEST"].as_u64() >= Some(1))
    };
    let mut holders: Vec<usize> = Vec::new();
    wait_for(Duration::from_secs(10), || {
        holders = (0..10).filter(|&i| holds(&c, i)).collect();
        holders.len() >= 3
    });
    assert!(holders.len() >= 3, "the record has {} copies, want 3: {holders:?}", holders.len());
    let mut victims = vec![r];
    if r != 0 {
        victims.push(0);
    }
    let spare: Vec<usize> = (1..10).filter(|i| !victims.contains(i) && *i != owner && !holders.contains(i)).collect();
    victims.extend(spare.into_iter().take(3 - victims.len()));
    assert_eq!(victims.len(), 3, "not enough peers without a copy");
    assert!(holders.iter().any(|h| !victims.contains(h)), "a copy must survive: {holders:?} {victims:?}");
    for &v in &victims {
        c.nodes[v].kill9();
    }
    c.await_ring(Duration::from_secs(90));
    let survivors: Vec<usize> = (0..10).filter(|i| !victims.contains(i)).collect();
    for &i in &survivors {
        let mut last = Err(String::new());
        let ok = wait_for(Duration::from_secs(30), || {
            last = fetch(&c, i, &name);
            last.as_deref() == Ok("hello-ring")
        });
        assert!(ok, "after the kills node{i} cannot fetch: {last:?}");
    }

    // Restart a peer that holds a copy while its bootstrap peer (node0)
    // is dead: it must rejoin through its host cache, records intact.
    let holder = survivors
        .iter()
        .copied()
        .find(|&i| {
            i != owner
                && c.nodes[i].status().is_some_and(|s| s["records_by_kind"]["CHORDPHONE-TEST"].as_u64() >= Some(1))
        })
        .expect("some survivor holds a copy");
    assert!(c.nodes[holder].terminate(), "SIGTERM did not stop node{holder} cleanly");
    assert!(c.nodes[holder].log().contains("left the overlay"), "no graceful leave logged");
    c.nodes[holder].start();
    let mut restored = None;
    assert!(
        wait_for(Duration::from_secs(20), || {
            restored = c.nodes[holder].status().map(|s| s["records_by_kind"]["CHORDPHONE-TEST"].as_u64());
            restored.is_some()
        }),
        "restarted node{holder} never answered status"
    );
    assert_eq!(restored, Some(Some(1)), "records were not restored from the database");
    c.await_ring(Duration::from_secs(60));
    // It tried its dead bootstrap peer and joined through another.
    let log = c.nodes[holder].log();
    let boot = format!("127.0.0.1:{}", c.nodes[0].port);
    let joining = log.lines().find(|l| l.contains("joining")).unwrap_or_default().to_owned();
    assert!(!joining.is_empty() && !joining.contains(&boot), "joined through the dead bootstrap peer?\n{log}");
    assert_eq!(fetch(&c, holder, &name).as_deref(), Ok("hello-ring"));
}

#[test]
fn three_peers_over_dtls_links() {
    let mut c = Cluster::new(3, "link = \"DTLS-UDP-SR-NO-ICE\"\n");
    c.nodes[0].start();
    assert!(wait_for(Duration::from_secs(20), || c.nodes[0].joined()), "bootstrap node did not start the ring");
    c.nodes[1].start();
    c.nodes[2].start();
    c.await_ring(Duration::from_secs(60));
    let s = c.nodes[1].status().expect("status");
    assert_eq!(s["link_type"], "DtlsUdpSrNoIce");
    let name = c.nodes[2].user.clone();
    let out = c.nodes[2].ctl(&["store", &name, "over-dtls"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for i in 0..3 {
        assert_eq!(fetch(&c, i, &name).as_deref(), Ok("over-dtls"), "fetch through node{i}");
    }
}

/// A non-routing client (RFC 6940 §4.2) joins through a peer without
/// listening, stores and fetches; a peer's Prometheus endpoint answers.
#[test]
fn a_client_joins_and_metrics_are_scraped() {
    let metrics_port = cluster::free_port();
    let mut c = Cluster::new_with(3, |i| match i {
        0 => format!("metrics_listen = \"127.0.0.1:{metrics_port}\"\n"),
        2 => "client = true\n".to_owned(),
        _ => String::new(),
    });
    c.nodes[0].start();
    assert!(wait_for(Duration::from_secs(20), || c.nodes[0].joined()));
    c.nodes[1].start();
    assert!(wait_for(Duration::from_secs(20), || c.nodes[1].joined()));
    c.nodes[2].start();
    assert!(wait_for(Duration::from_secs(20), || c.nodes[2].joined()), "the client did not join");
    let s = c.nodes[2].status().expect("client status");
    assert_eq!(s["client"], true);
    // A client is in nobody's ring.
    for i in 0..2 {
        let st = c.nodes[i].status().expect("status");
        let ring: Vec<&str> = ["successors", "predecessors"]
            .iter()
            .flat_map(|k| st[*k].as_array().into_iter().flatten().filter_map(|v| v.as_str()))
            .collect();
        assert!(!ring.contains(&c.nodes[2].id.as_str()), "node{i} routes through the client");
    }
    let name = c.nodes[2].user.clone();
    let out = c.nodes[2].ctl(&["store", &name, "from-a-client"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(fetch(&c, 0, &name).as_deref(), Ok("from-a-client"));
    assert_eq!(fetch(&c, 2, &name).as_deref(), Ok("from-a-client"));

    // Prometheus text exposition from node 0.
    let mut body = String::new();
    let ok = wait_for(Duration::from_secs(5), || {
        body = cluster::scrape(metrics_port);
        body.contains("chordphone_joined 1") && body.contains("chordphone_records{kind=\"CHORDPHONE-TEST\"} 1")
    });
    assert!(ok, "metrics: {body}");
    assert!(body.contains("# TYPE chordphone_reload_messages_sent_total counter"), "{body}");
    assert!(body.contains("chordphone_reload_messages_received_total"), "{body}");
}
