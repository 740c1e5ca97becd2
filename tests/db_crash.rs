//! Crash safety of `node.db`: a writer process is SIGKILLed in the middle of
//! a stream of `replace_records` commits, and the file must reopen holding
//! exactly one complete snapshot, at least as new as the last commit the
//! writer reported.
//!
//! The test binary plays both roles. `killed_writer_leaves_a_complete_snapshot`
//! does this for several rounds on the same file, each time re-running this
//! binary filtered to `crash_writer` with `CHORDPHONE_DB_CRASH_WRITER=<db path>`
//! set; `crash_writer` then continues from the snapshot it finds, committing
//! snapshots and printing `DBCRASH committed N` after each commit.
//! Without that variable (a normal `cargo test` run), `crash_writer` returns
//! at once and passes.

// Integration tests drive real processes, sockets, files and clocks; clippy.toml's
// sans-IO lists are for the library's cores.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chordphone::node::db::{DbError, NodeDb, RecordRow};

const WRITER_ENV: &str = "CHORDPHONE_DB_CRASH_WRITER";
const MARKER: &str = "DBCRASH committed ";
/// Commits the parent waits for before killing a writer.
const COMMITS_BEFORE_KILL: u64 = 10;
/// Writers killed in turn on the same file, each at a different delay.
const ROUNDS: u32 = 6;
/// Bound on the writer's loop, so an orphaned writer ends on its own.
const WRITER_MAX_COMMITS: u64 = 5_000;

/// Snapshot number `n`: `n` rows, each naming the snapshot, so rows of two
/// different snapshots can never pass for one.
fn snapshot(n: u64) -> Vec<RecordRow> {
    (0..n)
        .map(|i| RecordRow {
            resource: format!("resource-{i}").into_bytes(),
            kind: u32::try_from(i).unwrap(),
            data: format!("snapshot {n} row {i} {}", "x".repeat(64)).into_bytes(),
        })
        .collect()
}

/// The writer role; a no-op unless `CHORDPHONE_DB_CRASH_WRITER` is set. It
/// continues from whatever snapshot the file holds.
#[test]
fn crash_writer() {
    let Some(path) = std::env::var_os(WRITER_ENV) else { return };
    let db = NodeDb::open(Path::new(&path)).unwrap();
    let start = u64::try_from(db.records().unwrap().len()).unwrap();
    let mut out = std::io::stdout().lock();
    for n in start + 1..=start + WRITER_MAX_COMMITS {
        db.replace_records(&snapshot(n)).unwrap();
        // Stop quietly if the parent is gone.
        if writeln!(out, "{MARKER}{n}").and_then(|()| out.flush()).is_err() {
            return;
        }
    }
}

fn committed(line: &str) -> Option<u64> {
    line.split_once(MARKER).map(|(_, n)| n.trim().parse().unwrap())
}

/// Runs one writer from snapshot `start`, kills it `delay` after it reported
/// `start + COMMITS_BEFORE_KILL`, reopens the file and checks it; returns the
/// snapshot found.
fn kill_writer_and_check(path: &Path, start: u64, delay: Duration, check_lock: bool) -> u64 {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_writer", "--exact", "--nocapture", "--test-threads=1"])
        .env(WRITER_ENV, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut last_seen = start;
    while last_seen < start + COMMITS_BEFORE_KILL {
        let line = lines.next().expect("writer exited before committing enough").unwrap();
        if let Some(n) = committed(&line) {
            assert_eq!(n, last_seen + 1, "commits are reported in order");
            last_seen = n;
            if check_lock && n == start + 1 {
                // While the writer holds the file, another process is refused.
                let err = NodeDb::open(path).unwrap_err();
                assert!(matches!(err, DbError::Locked { .. }), "{err}");
            }
        }
    }
    // Synchronisation is the line above; this busy wait only moves the kill
    // to a different point inside the writer's following transactions.
    let until = Instant::now() + delay;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "writer was killed, not finished: {status}");
    // Everything the writer printed before dying ends with its last commit.
    let last_reported = lines.map_while(Result::ok).filter_map(|l| committed(&l)).last().unwrap_or(last_seen);
    assert!(last_reported < start + WRITER_MAX_COMMITS, "writer finished before the kill; nothing was tested");

    let db = NodeDb::open(path).unwrap();
    let rows = db.records().unwrap();
    let n = u64::try_from(rows.len()).unwrap();
    assert_eq!(rows, snapshot(n), "records are one complete snapshot");
    // The last reported commit is durable; at most one more (committed but
    // not yet printed when the kill landed) may be present.
    assert!(
        (last_reported..=last_reported + 1).contains(&n),
        "snapshot {n} after last reported commit {last_reported}"
    );
    n
}

#[test]
fn killed_writer_leaves_a_complete_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.db");
    let mut snapshot_no = 0;
    for round in 0..ROUNDS {
        let delay = Duration::from_micros(u64::from(round) * 250);
        snapshot_no = kill_writer_and_check(&path, snapshot_no, delay, round == 0);
    }
    assert!(snapshot_no >= u64::from(ROUNDS) * COMMITS_BEFORE_KILL);
}
