//! The sans-IO contract (docs/architecture.md): only the node runtime
//! (`src/node`) and `src/main.rs` may touch tokio, sockets, files or the
//! clock. This test reads every other source file and fails on a use.

use std::fs;
use std::path::{Path, PathBuf};

const FORBIDDEN: &[&str] = &[
    "tokio",
    "std::net::TcpStream",
    "std::net::UdpSocket",
    "TcpListener",
    "Instant::now",
    "SystemTime::now",
    "std::fs",
    "std::thread::sleep",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Code before the first `#[cfg(test)]` (tests may use the clock).
fn production_part(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |i| &text[..i])
}

#[test]
fn cores_do_no_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    assert!(files.len() > 10, "found only {} source files", files.len());
    let mut offences = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap_or(f).to_string_lossy().replace('\\', "/");
        if rel.starts_with("node/") || rel == "main.rs" || rel.starts_with("cli/") {
            continue;
        }
        let text = fs::read_to_string(f).unwrap_or_default();
        for (n, line) in production_part(&text).lines().enumerate() {
            // A reviewed exception carries its reason on the line itself.
            if line.contains("// layering: allowed (") {
                continue;
            }
            let code = line.split("//").next().unwrap_or_default();
            for word in FORBIDDEN {
                if code.contains(word) {
                    offences.push(format!("src/{rel}:{}: {word}", n + 1));
                }
            }
        }
    }
    assert!(offences.is_empty(), "I/O or clock use outside the runtime:\n{}", offences.join("\n"));
}

#[test]
fn the_check_catches_an_offence() {
    // Guard against a check that cannot fail.
    let text = "fn f() { let t = std::time::Instant::now(); }\n#[cfg(test)]\nmod t {}";
    assert!(production_part(text).contains("Instant::now"));
    assert!(!production_part("#[cfg(test)]\nfn g() { Instant::now(); }").contains("Instant::now"));
}
