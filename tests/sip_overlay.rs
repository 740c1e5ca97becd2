//! SIP across the overlay with a real SIP tool (sipp, Debian's
//! `sip-tester`): three chordphone nodes on loopback; sipp phones register
//! with digest auth on different nodes and call each other through the
//! overlay (Fetch of the AOR, AppAttach 5060, node-to-node TLS); a wrong
//! password is refused; malformed requests get 400 and the node keeps
//! serving.

// Integration tests drive real processes, sockets, files and clocks; clippy.toml's
// sans-IO lists are for the library's cores.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

#[path = "support/cluster.rs"]
mod cluster;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use cluster::{Cluster, free_port, run_ok, wait_for};

const DOMAIN: &str = "chordphone.test";

fn scenario(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop/sip/sipp").join(name).to_string_lossy().into_owned()
}

/// A sipp command with the flags every run here uses: a bound on the run,
/// failures as exit status, errors traced, no keyboard.
fn sipp_command(dir: &std::path::Path, args: &[&str], timeout: &str) -> Command {
    let mut c = Command::new("sipp");
    c.args(args)
        .args(["-timeout", timeout, "-timeout_error", "-trace_err", "-nostdin"])
        .current_dir(dir)
        .stdin(Stdio::null());
    c
}

fn sipp(dir: &std::path::Path, args: &[&str]) -> Output {
    sipp_command(dir, args, "30s")
        .output()
        .expect("sipp (Debian package sip-tester) must be installed: interop/test-suite.sh installs it")
}

fn sipp_bg(dir: &std::path::Path, args: &[&str]) -> Child {
    sipp_command(dir, args, "40s").stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("sipp")
}

fn users_csv(dir: &std::path::Path, name: &str, rows: &[(&str, &str)]) -> String {
    let mut text = String::from("SEQUENTIAL\n");
    for (u, p) in rows {
        text.push_str(&format!("{u};{p}\n"));
    }
    let path = dir.join(name);
    std::fs::write(&path, text).expect("csv");
    path.to_string_lossy().into_owned()
}

fn register(dir: &std::path::Path, sip_port: u16, csv: &str, local_port: u16) -> Output {
    register_many(dir, sip_port, csv, local_port, &["-m", "1"])
}

/// sipp's REGISTER-with-digest scenario; `extra` sets the call count/rate.
fn register_many(dir: &std::path::Path, sip_port: u16, csv: &str, local_port: u16, extra: &[&str]) -> Output {
    let target = format!("127.0.0.1:{sip_port}");
    let port = local_port.to_string();
    let sf = scenario("register_auth.xml");
    let mut args: Vec<&str> = vec![
        &target,
        "-sf",
        &sf,
        "-inf",
        csv,
        "-key",
        "domain",
        DOMAIN,
        "-key",
        "registrar",
        &target,
        "-key",
        "expires",
        "600",
        "-i",
        "127.0.0.1",
        "-p",
        &port,
    ];
    args.extend_from_slice(extra);
    sipp(dir, &args)
}

fn records(c: &Cluster, kind: &str) -> u64 {
    c.nodes.iter().filter_map(|n| n.status()).filter_map(|s| s["records_by_kind"][kind].as_u64()).sum()
}

#[test]
fn phones_register_on_different_nodes_and_call_through_the_overlay() {
    let sip_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let node_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let metrics_port = free_port();
    let mut c = Cluster::new_with(3, |i| {
        let metrics = if i == 0 { format!("metrics_listen = \"127.0.0.1:{metrics_port}\"\n") } else { String::new() };
        format!(
            "{metrics}[sip]\nudp = \"127.0.0.1:{p}\"\ntcp = \"127.0.0.1:{p}\"\ntls = \"off\"\nnode_tls = \"127.0.0.1:{t}\"\ndomain = \"{DOMAIN}\"\nmd5_first = true\n",
            p = sip_ports[i],
            t = node_ports[i]
        )
    });
    let ov = c.overlay_dir.to_string_lossy().into_owned();
    for (aor, node) in [("alice", 0), ("bob", 2)] {
        let dir = c.nodes[node].dir.to_string_lossy().into_owned();
        run_ok(&[
            "user",
            "add",
            &format!("{aor}@{DOMAIN}"),
            "--password",
            "s3cret",
            "--overlay",
            &ov,
            "--data-dir",
            &dir,
        ]);
    }
    c.nodes[0].start();
    assert!(wait_for(Duration::from_secs(20), || c.nodes[0].joined()));
    c.nodes[1].start();
    c.nodes[2].start();
    c.await_ring(Duration::from_secs(60));
    let work = c.path().join("sipp");
    std::fs::create_dir_all(&work).expect("work dir");

    // A wrong password is refused (403 after the challenge).
    let bad = users_csv(&work, "bad.csv", &[("alice", "wrong")]);
    let out = register(&work, sip_ports[0], &bad, free_port());
    assert!(!out.status.success(), "a wrong password registered");

    // Alice registers on node 0; Bob (a sipp UAS) on node 2.
    let alice = users_csv(&work, "alice.csv", &[("alice", "s3cret")]);
    let out = register(&work, sip_ports[0], &alice, free_port());
    assert!(out.status.success(), "alice's REGISTER failed: {}", String::from_utf8_lossy(&out.stdout));
    let bob_port = free_port();
    let bob = users_csv(&work, "bob.csv", &[("bob", "s3cret")]);
    let out = register(&work, sip_ports[2], &bob, bob_port);
    assert!(out.status.success(), "bob's REGISTER failed: {}", String::from_utf8_lossy(&out.stdout));
    // Each registration is in the overlay with its replicas.
    assert!(
        wait_for(Duration::from_secs(10), || records(&c, "SIP-REGISTRATION") >= 4),
        "registrations not stored and replicated: {}",
        records(&c, "SIP-REGISTRATION")
    );

    // Alice (on node 0) calls bob (on node 2): INVITE/180/200/ACK/BYE.
    let mut uas = sipp_bg(
        &work,
        &["-sf", &scenario("uas_answer.xml"), "-i", "127.0.0.1", "-p", &bob_port.to_string(), "-m", "1"],
    );
    let target = format!("127.0.0.1:{}", sip_ports[0]);
    let out = sipp(
        &work,
        &[
            &target,
            "-sf",
            &scenario("uac_call.xml"),
            "-inf",
            &alice,
            "-s",
            "bob",
            "-key",
            "domain",
            DOMAIN,
            "-m",
            "1",
            "-i",
            "127.0.0.1",
            "-p",
            &free_port().to_string(),
        ],
    );
    let uas_ok = wait_for(Duration::from_secs(40), || matches!(uas.try_wait(), Ok(Some(_))));
    let uas_status = uas.try_wait().ok().flatten();
    if !uas_ok {
        let _ = uas.kill();
    }
    if !out.status.success() {
        c.dump_logs();
    }
    assert!(out.status.success(), "the call failed: {}", String::from_utf8_lossy(&out.stdout));
    assert!(uas_status.is_some_and(|s| s.success()), "the callee did not complete the call");
    // The SIP counters reach Prometheus: one good REGISTER, one refused.
    let mut body = String::new();
    let scraped = wait_for(Duration::from_secs(5), || {
        body = cluster::scrape(metrics_port);
        body.contains("chordphone_sip_register_ok_total 1") && body.contains("chordphone_sip_register_fail_total 1")
    });
    assert!(scraped, "SIP metrics: {body}");

    // Malformed requests: 400, and the node keeps serving.
    let target1 = format!("127.0.0.1:{}", sip_ports[1]);
    let out = sipp(
        &work,
        &[&target1, "-sf", &scenario("malformed.xml"), "-key", "domain", DOMAIN, "-m", "1", "-i", "127.0.0.1"],
    );
    assert!(out.status.success(), "malformed scenario failed: {}", String::from_utf8_lossy(&out.stdout));
    assert!(c.nodes[1].alive() && c.nodes[1].joined(), "node 1 stopped serving");
}

/// sipp REGISTERs 1,000 users with digest auth on one node; every
/// registration is stored in the overlay with its two replicas.
#[test]
fn a_thousand_users_register_with_digest() {
    const USERS: usize = 1000;
    let sip_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut c = Cluster::new_with(3, |i| {
        format!(
            "[sip]\nudp = \"127.0.0.1:{p}\"\ntcp = \"off\"\ntls = \"off\"\nnode_tls = \"off\"\ndomain = \"{DOMAIN}\"\nmd5_first = true\n",
            p = sip_ports[i]
        )
    });
    let work = c.path().join("sipp");
    std::fs::create_dir_all(&work).expect("work dir");
    let rows: Vec<(String, String)> = (0..USERS).map(|i| (format!("u{i:04}"), format!("pw-{i}"))).collect();
    let rows_ref: Vec<(&str, &str)> = rows.iter().map(|(u, p)| (u.as_str(), p.as_str())).collect();
    let csv = users_csv(&work, "users.csv", &rows_ref);
    let ov = c.overlay_dir.to_string_lossy().into_owned();
    let dir = c.nodes[1].dir.to_string_lossy().into_owned();
    let out = run_ok(&["user", "import", &csv, "--domain", DOMAIN, "--overlay", &ov, "--data-dir", &dir]);
    assert!(out.contains(&format!("imported {USERS}")), "{out}");
    c.nodes[0].start();
    assert!(wait_for(Duration::from_secs(20), || c.nodes[0].joined()));
    c.nodes[1].start();
    c.nodes[2].start();
    c.await_ring(Duration::from_secs(60));

    let users = USERS.to_string();
    let out = register_many(&work, sip_ports[1], &csv, free_port(), &["-m", &users, "-r", "100", "-l", "50"]);
    assert!(out.status.success(), "some REGISTERs failed: {}", String::from_utf8_lossy(&out.stdout));
    // The responsible peer and two replicas each hold every registration.
    let want = (USERS * 3) as u64;
    let mut got = 0;
    let ok = wait_for(Duration::from_secs(30), || {
        got = records(&c, "SIP-REGISTRATION");
        got >= want
    });
    assert!(ok, "{got} SIP-REGISTRATION copies in the overlay, want {want}");
}
