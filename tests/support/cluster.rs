//! Real `chordphone node` processes on loopback for integration tests:
//! an overlay directory, enrolled nodes, start/stop/kill by PID, status
//! over the control socket, and polling with a bound (never a bare sleep
//! as synchronisation: each wait polls a condition and fails loudly on
//! its timeout).

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_chordphone")
}

/// A port free right now on 127.0.0.1 (the OS picks it).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// GET /metrics from a node's Prometheus endpoint (empty on failure).
pub fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

pub fn run(args: &[&str]) -> Output {
    Command::new(bin()).args(args).env("RUST_LOG", "warn").output().expect("run chordphone")
}

pub fn run_ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "chordphone {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `cond` every 100 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub struct NodeProc {
    pub name: String,
    pub dir: PathBuf,
    pub port: u16,
    pub id: String,
    pub user: String,
    pub child: Option<Child>,
    starts: u32,
}

impl NodeProc {
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("node-{}.log", self.starts))
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        self.starts += 1;
        let log = std::fs::File::create(self.log_path()).expect("log file");
        let child = Command::new(bin())
            .args(["node", "--data-dir"])
            .arg(&self.dir)
            .env("RUST_LOG", "info,chordphone::overlay=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn chordphone node");
        self.child = Some(child);
    }

    /// kill -9: no leave, no final persist.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a graceful exit; returns its exit status success.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else { return true };
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.success();
            }
            if Instant::now() >= end {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn alive(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn status(&self) -> Option<Value> {
        let out = run(&["status", "--json", "--data-dir", self.dir.to_str()?]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn joined(&self) -> bool {
        self.status().is_some_and(|s| s["joined"] == true)
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        let mut a: Vec<&str> = args.to_vec();
        let d = self.dir.to_str().expect("utf-8 path");
        a.extend(["--data-dir", d]);
        run(&a)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct Cluster {
    pub tmp: tempfile::TempDir,
    pub overlay_dir: PathBuf,
    pub name: String,
    pub nodes: Vec<NodeProc>,
}

impl Cluster {
    /// An overlay whose bootstrap node is node 0, and `n` enrolled nodes
    /// (not started). Short Chord intervals keep repairs quick.
    pub fn new(n: usize, extra_toml: &str) -> Cluster {
        Cluster::new_with(n, |_| extra_toml.to_owned())
    }

    /// Like [`Cluster::new`] with per-node extra `node.toml` lines.
    pub fn new_with(n: usize, extra_toml: impl Fn(usize) -> String) -> Cluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let name = "cluster.test".to_owned();
        let overlay_dir = tmp.path().join("overlay");
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let boot = format!("127.0.0.1:{}", ports[0]);
        run_ok(&[
            "overlay",
            "init",
            "--name",
            &name,
            "--dir",
            overlay_dir.to_str().expect("utf-8"),
            "--bootstrap",
            &boot,
            "--update-interval",
            "3",
            "--ping-interval",
            "3",
        ]);
        let mut nodes = Vec::new();
        for (i, port) in ports.into_iter().enumerate() {
            let dir = tmp.path().join(format!("node{i}"));
            let user = format!("node{i}@{name}");
            let out = run_ok(&[
                "enroll",
                "--overlay",
                overlay_dir.to_str().expect("utf-8"),
                "--out",
                dir.to_str().expect("utf-8"),
                "--user",
                &user,
            ]);
            let id = out.split_whitespace().nth(2).expect("enroll prints the node id").to_owned();
            let mut toml = format!("listen = \"127.0.0.1:{port}\"\n{}", extra_toml(i));
            // Overlay-only tests keep the SIP listeners (default 5060) off.
            if !toml.contains("[sip]") {
                toml.push_str("\n[sip]\nudp = \"off\"\ntcp = \"off\"\ntls = \"off\"\nnode_tls = \"off\"\n");
            }
            std::fs::write(dir.join("node.toml"), toml).expect("node.toml");
            nodes.push(NodeProc { name: format!("node{i}"), dir, port, id, user, child: None, starts: 0 });
        }
        Cluster { tmp, overlay_dir, name, nodes }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Ids of running nodes.
    pub fn live_ids(&mut self) -> Vec<String> {
        let mut ids: Vec<String> =
            self.nodes.iter_mut().filter_map(|n| if n.alive() { Some(n.id.clone()) } else { None }).collect();
        ids.sort();
        ids
    }

    /// Why the running nodes' rings differ from the reference ring of the
    /// live ids (None when they agree): each node's first successors and
    /// predecessors must be the next/previous live ids in ring order.
    pub fn ring_mismatch(&mut self) -> Option<String> {
        let ids = self.live_ids();
        let n = ids.len();
        for node in self.nodes.iter_mut().filter(|n| n.child.is_some()) {
            let s = node.status()?;
            if s["joined"] != true {
                return Some(format!("{} not joined", node.name));
            }
            let pos = ids.iter().position(|i| *i == node.id)?;
            let want = |off: isize| ids[((pos as isize + off).rem_euclid(n as isize)) as usize].clone();
            let list = |k: &str| -> Vec<String> {
                s[k].as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default()
            };
            let (succ, pred) = (list("successors"), list("predecessors"));
            let depth = 3.min(n - 1);
            let want_succ: Vec<String> = (1..=depth as isize).map(want).collect();
            let want_pred: Vec<String> = (1..=depth as isize).map(|k| want(-k)).collect();
            if succ.len() < depth || succ[..depth] != want_succ[..] {
                return Some(format!("{}: successors {succ:?}, reference {want_succ:?}", node.name));
            }
            if pred.len() < depth || pred[..depth] != want_pred[..] {
                return Some(format!("{}: predecessors {pred:?}, reference {want_pred:?}", node.name));
            }
        }
        None
    }

    /// Waits for the reference ring; on timeout panics with the mismatch
    /// and the nodes' log tails.
    pub fn await_ring(&mut self, timeout: Duration) {
        let mut last = None;
        let ok = wait_for(timeout, || {
            last = self.ring_mismatch();
            last.is_none()
        });
        if !ok {
            self.dump_logs();
            panic!("ring did not converge within {timeout:?}: {last:?}");
        }
    }

    pub fn dump_logs(&self) {
        for n in &self.nodes {
            let log = n.log();
            let tail: Vec<&str> = log.lines().rev().take(25).collect();
            eprintln!("---- {} ({}) ----", n.name, n.id);
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}
