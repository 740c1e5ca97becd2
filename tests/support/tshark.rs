//! Running tshark on a capture and reading what it reports: its JSON
//! dissection, its expert infos and its rendering of ACK bitmaps.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// tshark's RELOAD settings, pinned so a user profile cannot change them:
/// 16-byte Node-IDs and CHORD-RELOAD as in our overlay (§10), reassembly
/// on, frames on our port decoded as reload-framing (§6.6.2), and our
/// private kind declared so its values are dissected too.
pub const DISSECTOR_ARGS: &[&str] = &[
    "-o",
    "reload.nodeid_length:16",
    "-o",
    "reload.topology_plugin:CHORD-RELOAD",
    "-o",
    "reload.defragment:TRUE",
    "-o",
    r#"uat:reload_kindids:"4026531841","CHORDPHONE-TEST","SINGLE""#,
    "-d",
    "udp.port==6084,reload-framing",
];

/// The tshark binary (`$TSHARK` or `tshark` on the PATH) with a private,
/// empty configuration directory.
pub struct Tshark {
    bin: String,
    config_dir: PathBuf,
}

impl Tshark {
    pub fn new(work: &Path) -> Tshark {
        let bin = std::env::var("TSHARK").unwrap_or_else(|_| "tshark".to_string());
        match Command::new(&bin).arg("--version").output() {
            Ok(out) if out.status.success() => {
                let version = String::from_utf8_lossy(&out.stdout);
                eprintln!("using {}", version.lines().next().unwrap_or("tshark"));
            }
            Ok(out) => panic!("`{bin} --version` failed: {}", String::from_utf8_lossy(&out.stderr)),
            Err(e) => panic!(
                "tshark is required for this test and could not be run ({bin}: {e}).\n\
                 Install it (Debian/Ubuntu: `sudo apt-get install tshark`; interop/test-suite.sh does this) \
                 or point $TSHARK at the binary."
            ),
        }
        let config_dir = work.join("wireshark-profile");
        std::fs::create_dir_all(&config_dir).unwrap();
        Tshark { bin, config_dir }
    }

    pub fn run(&self, pcap: &Path, args: &[&str]) -> String {
        let out = Command::new(&self.bin)
            .env("WIRESHARK_CONFIG_DIR", &self.config_dir)
            .arg("-n")
            .arg("-r")
            .arg(pcap)
            .args(DISSECTOR_ARGS)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tshark {args:?} on {} failed: {}",
            pcap.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The expert infos of severity warning or error (`-z expert,warn`),
    /// optionally of one frame only, one line each. The expert tap sees
    /// every item, including those a dissector attaches to no tree field.
    pub fn expert(&self, pcap: &Path, frame: Option<usize>) -> Vec<String> {
        let tap = match frame {
            Some(n) => format!("expert,warn,frame.number=={n}"),
            None => "expert,warn".to_string(),
        };
        let out = self.run(pcap, &["-q", "-z", &tap]);
        let mut severity = String::new();
        let mut found = Vec::new();
        for line in out.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('=')) {
            if line.starts_with("Frequency") {
                continue;
            }
            if line.starts_with(|c: char| c.is_ascii_digit()) {
                found.push(format!(
                    "expert info ({severity}): {}",
                    line.split_whitespace().collect::<Vec<_>>().join(" ")
                ));
            } else {
                severity = line.to_string();
            }
        }
        found
    }
}

/// Every value stored under `key` (or `key_tree`) inside `v`, arrays
/// flattened; a match is not searched further.
pub fn find<'a>(v: &'a Value, key: &str) -> Vec<&'a Value> {
    let mut out = Vec::new();
    walk(v, key, &mut out);
    out
}

fn walk<'a>(v: &'a Value, key: &str, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                if k == key || k.strip_suffix("_tree") == Some(key) && !map.contains_key(key) {
                    match child {
                        Value::Array(items) => out.extend(items),
                        one => out.push(one),
                    }
                } else {
                    walk(child, key, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| walk(i, key, out)),
        _ => {}
    }
}

/// The normalised values of `field` inside every `within` subtree of `v`
/// (all of `v` when `within` is empty); a subtree value counts as
/// `<subtree>`.
pub fn strings(v: &Value, within: &str, field: &str) -> Vec<String> {
    let scopes = if within.is_empty() { vec![v] } else { find(v, within) };
    scopes
        .into_iter()
        .flat_map(|s| find(s, field))
        .map(|x| x.as_str().map(norm).unwrap_or_else(|| "<subtree>".to_string()))
        .collect()
}

/// tshark prints numbers in decimal or `0x` hex and bytes as `aa:bb:..`;
/// both become one canonical form (decimal, plain lowercase hex).
pub fn norm(s: &str) -> String {
    if let Some(h) = s.strip_prefix("0x")
        && let Ok(n) = u64::from_str_radix(h, 16)
    {
        return n.to_string();
    }
    if s.contains(':') && s.split(':').all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit())) {
        return s.replace(':', "").to_lowercase();
    }
    s.to_string()
}

/// The generated "Acked Frames" list of every frame (empty for non-ACKs)
/// from tshark's PDML output. Wireshark prints a run of two as "a,b" but
/// appends the second number of such a pair in the middle of the bitmap to
/// the `received` field's text instead of the list (see the README), so
/// numbers found there count too.
pub fn acked_frames(pdml: &str) -> Vec<BTreeSet<u32>> {
    let shown = |packet: &str, field: &str, prefix: &str| -> String {
        let Some(at) = packet.find(&format!("name=\"{field}\" showname=\"{prefix}")) else { return String::new() };
        let rest = &packet[at..];
        let start = rest.find(prefix).unwrap() + prefix.len();
        rest[start..].split('"').next().unwrap_or("").to_string()
    };
    pdml.split("<packet>")
        .skip(1)
        .map(|packet| {
            let listed = shown(packet, "reload_framing.parsed_received", "Acked Frames:");
            let appended = shown(packet, "reload_framing.received", "received (uint32): ");
            let appended = appended.split_once(',').map(|(_, tail)| tail).unwrap_or("");
            let mut set = BTreeSet::new();
            for item in listed.trim_matches(|c| c == '[' || c == ']').split(',').chain(appended.split(',')) {
                let item = item.trim();
                if item.is_empty() {
                    continue;
                }
                let (first, last) = item.split_once('-').unwrap_or((item, item));
                let (mut n, last): (u32, u32) = (first.parse().unwrap(), last.parse().unwrap());
                set.insert(n);
                while n != last {
                    n = n.wrapping_add(1);
                    set.insert(n);
                }
            }
            set
        })
        .collect()
}
