//! Module boundaries and the sans-IO contract (docs/architecture.md).
//!
//! 1. Import edges: the table of allowed imports between top-level modules is
//!    read from docs/architecture.md (between the `import-table` markers), so
//!    the table and this test cannot drift. Every module reachable from
//!    `src/lib.rs` is lexed (comments and string literals dropped) and every
//!    path into another top-level module is checked: `use crate::…` with
//!    grouped and nested braces, `pub use`, multi-line uses, `super::super::…`
//!    climbing out of a top-level module, and inline `crate::x::…` paths in
//!    code. Only items under `#[cfg(test)]` are exempt (an inline module up to
//!    its matching brace, or a `#[cfg(test)] mod x;` file and its children).
//! 2. I/O: outside `node`, `cli` and `main.rs` no tokio/hyper/redb, no
//!    `std::net` sockets, no `std::fs`, no thread sleep/spawn and no
//!    `Instant::now`/`SystemTime::now` (clippy.toml's disallowed lists check
//!    the same by type; this check also sees the crates clippy cannot name).
//!    A reviewed exception carries `// layering: allowed (reason)` on its line.

// Integration tests drive real processes, sockets, files and clocks; clippy.toml's
// sans-IO lists are for the library's cores.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Top-level modules allowed to do I/O (besides `main.rs`, never checked).
const IO_MODULES: &[&str] = &["node", "cli"];
/// Crates that are I/O by nature.
const IO_CRATES: &[&str] = &["tokio", "tokio_openssl", "hyper", "hyper_util", "redb"];
/// Socket types (any path that names them).
const SOCKETS: &[&str] = &["UdpSocket", "TcpStream", "TcpListener"];
/// Inline token sequences that read the clock, touch files or threads.
const IO_SEQUENCES: &[&[&str]] = &[
    &["Instant", "::", "now"],
    &["SystemTime", "::", "now"],
    &["std", "::", "fs"],
    &["thread", "::", "sleep"],
    &["thread", "::", "spawn"],
];
/// Imported paths (after expanding groups) that are I/O.
const IO_USE_PREFIXES: &[&[&str]] = &[&["std", "fs"], &["std", "thread", "sleep"], &["std", "thread", "spawn"]];
const EXCEPTION_MARK: &str = "// layering: allowed (";

// ---------------------------------------------------------------- lexer

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Ident,
    Punct,
    Str,
    Other,
}

#[derive(Clone, Debug)]
struct Tok {
    kind: Kind,
    text: String,
    line: usize,
}

/// Rust tokens without comments; string and char literals become `Str`/`Other`
/// tokens whose text is never read as a path.
fn lex(src: &str) -> Vec<Tok> {
    let c: Vec<char> = src.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let (mut i, mut line, mut out) = (0, 1, Vec::new());
    let mut push = |kind, text: String, line| out.push(Tok { kind, text, line });
    while i < c.len() {
        let (ch, start_line) = (c[i], line);
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            loop {
                if i >= c.len() {
                    break;
                } else if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(c[i] == '\n');
                    i += 1;
                }
            }
        } else if let Some((end, text)) = raw_string(&c, i) {
            line += c[i..end].iter().filter(|&&x| x == '\n').count();
            push(Kind::Str, text, start_line);
            i = end;
        } else if ch == '"' || ((ch == 'b' || ch == 'c') && at(i + 1) == '"') {
            i += if ch == '"' { 1 } else { 2 };
            let mut text = String::new();
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    i += 1;
                }
                line += usize::from(at(i) == '\n');
                text.push(at(i));
                i += 1;
            }
            push(Kind::Str, text, start_line);
            i += 1;
        } else if ch == '\'' || (ch == 'b' && at(i + 1) == '\'') {
            // A char literal ('x', '\n', b'x') or a lifetime/label ('a).
            let q = if ch == 'b' { i + 1 } else { i };
            if at(q + 1) == '\\' {
                i = q + 3;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(q + 2) == '\'' {
                i = q + 3;
            } else {
                i = q + 1;
                while at(i).is_alphanumeric() || at(i) == '_' {
                    i += 1;
                }
            }
            push(Kind::Other, String::from("'"), start_line);
        } else if ch.is_alphabetic() || ch == '_' {
            if ch == 'r' && at(i + 1) == '#' {
                i += 2; // raw identifier r#name
            }
            let s = i;
            while at(i).is_alphanumeric() || at(i) == '_' {
                i += 1;
            }
            push(Kind::Ident, c[s..i].iter().collect(), start_line);
        } else if ch.is_ascii_digit() {
            while at(i).is_alphanumeric() || at(i) == '_' {
                i += 1;
            }
            push(Kind::Other, String::from("0"), start_line);
        } else if ch == ':' && at(i + 1) == ':' {
            push(Kind::Punct, String::from("::"), start_line);
            i += 2;
        } else {
            push(Kind::Punct, ch.to_string(), start_line);
            i += 1;
        }
    }
    out
}

/// `r"…"`, `r#"…"#`, `br"…"`, `cr#"…"#`: (end index, contents).
fn raw_string(c: &[char], i: usize) -> Option<(usize, String)> {
    let mut j = i;
    if matches!(c.get(j), Some('b' | 'c')) {
        j += 1;
    }
    if c.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = c[j..].iter().take_while(|&&x| x == '#').count();
    j += hashes;
    if c.get(j) != Some(&'"') {
        return None;
    }
    let body = j + 1;
    let mut k = body;
    while k < c.len() {
        if c[k] == '"' && c[k + 1..].iter().take(hashes).filter(|&&x| x == '#').count() == hashes {
            return Some((k + 1 + hashes, c[body..k].iter().collect()));
        }
        k += 1;
    }
    Some((c.len(), c[body..].iter().collect()))
}

// ---------------------------------------------------------------- scanner

/// What one file says: paths it names, modules it declares, I/O it does.
#[derive(Default)]
struct FileScan {
    /// (module path at that point, path segments, line)
    paths: Vec<(Vec<String>, Vec<String>, usize)>,
    /// (inline module stack, name, `#[path]`, exempt)
    children: Vec<(Vec<String>, String, Option<String>, bool)>,
    /// (line, what)
    io: Vec<(usize, String)>,
    /// `#![cfg(test)]` on the whole file.
    exempt: bool,
}

fn is(t: &[Tok], i: usize, text: &str) -> bool {
    t.get(i).is_some_and(|x| x.text == text && x.kind != Kind::Str)
}

fn ident(t: &[Tok], i: usize) -> Option<&str> {
    t.get(i).filter(|x| x.kind == Kind::Ident).map(|x| x.text.as_str())
}

/// Index of the token closing the group opened at `open`.
fn matching(t: &[Tok], open: usize) -> usize {
    let mut depth = 0i32;
    for (k, tok) in t.iter().enumerate().skip(open) {
        if tok.kind != Kind::Punct {
            continue;
        }
        match tok.text.as_str() {
            "{" | "[" | "(" => depth += 1,
            "}" | "]" | ")" => depth -= 1,
            _ => {}
        }
        if depth == 0 {
            return k;
        }
    }
    t.len().saturating_sub(1)
}

/// Last token of the item starting at `i`: its `;`, or its body's `}`.
fn item_end(t: &[Tok], i: usize) -> usize {
    let mut k = i;
    while k < t.len() {
        if is(t, k, "(") || is(t, k, "[") {
            k = matching(t, k);
        } else if is(t, k, ";") {
            return k;
        } else if is(t, k, "{") {
            return matching(t, k);
        }
        k += 1;
    }
    k
}

/// Expands a use tree (`a::{b, c::{d, e as f}, *}`) into full paths with
/// the line of each leaf.
fn use_tree(t: &[Tok], i: &mut usize, prefix: &[String], out: &mut Vec<(Vec<String>, usize)>) {
    let mut path = prefix.to_vec();
    let mut line = t.get(*i).map_or(0, |x| x.line);
    if is(t, *i, "::") {
        path.push(String::from("::"));
        *i += 1;
    }
    loop {
        if is(t, *i, "$") {
            *i += 1;
        }
        if let Some(name) = ident(t, *i) {
            path.push(name.to_string());
            line = t[*i].line;
            *i += 1;
        } else if is(t, *i, "*") {
            path.push(String::from("*"));
            line = t[*i].line;
            *i += 1;
            break;
        } else if is(t, *i, "{") {
            *i += 1;
            while *i < t.len() && !is(t, *i, "}") {
                let before = *i;
                use_tree(t, i, &path, out);
                if is(t, *i, ",") || *i == before {
                    *i += 1;
                }
            }
            *i += 1;
            return;
        } else {
            break;
        }
        if is(t, *i, "::") {
            *i += 1;
        } else {
            break;
        }
    }
    if is(t, *i, "as") {
        *i += 2;
    }
    out.push((path, line));
}

fn scan(src: &str) -> FileScan {
    let t = lex(src);
    let lines: Vec<&str> = src.lines().collect();
    let mut s = FileScan::default();
    let mut stack: Vec<(String, usize)> = Vec::new();
    let (mut depth, mut pending_test, mut pending_path) = (0usize, false, None::<String>);
    let mut i = 0;
    while i < t.len() {
        let modpath = |stack: &[(String, usize)]| stack.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
        if is(&t, i, "#") && (is(&t, i + 1, "[") || (is(&t, i + 1, "!") && is(&t, i + 2, "["))) {
            let open = if is(&t, i + 1, "[") { i + 1 } else { i + 2 };
            let close = matching(&t, open);
            let body: Vec<&str> = t[open + 1..close].iter().map(|x| x.text.as_str()).collect();
            if body == ["cfg", "(", "test", ")"] {
                if open == i + 2 && stack.is_empty() {
                    s.exempt = true;
                    return s;
                }
                pending_test = open == i + 1;
            }
            if body.len() == 3 && body[0] == "path" && body[1] == "=" {
                pending_path = Some(body[2].to_string());
            }
            i = close + 1;
            continue;
        }
        if pending_test {
            let end = item_end(&t, i);
            if is(&t, end, ";")
                && end >= 2
                && is(&t, end - 2, "mod")
                && let Some(name) = ident(&t, end - 1)
            {
                s.children.push((modpath(&stack), name.to_string(), pending_path.take(), true));
            }
            pending_test = false;
            pending_path = None;
            i = end + 1;
            continue;
        }
        if is(&t, i, "mod") && ident(&t, i + 1).is_some() {
            let name = t[i + 1].text.clone();
            if is(&t, i + 2, ";") {
                s.children.push((modpath(&stack), name, pending_path.take(), false));
                i += 3;
                continue;
            }
            if is(&t, i + 2, "{") {
                stack.push((name, depth));
                depth += 1;
                pending_path = None;
                i += 3;
                continue;
            }
        }
        let prev_sep = i > 0 && is(&t, i - 1, "::");
        if is(&t, i, "use") {
            let end = {
                let mut k = i + 1;
                while k < t.len() && !is(&t, k, ";") {
                    k = if is(&t, k, "{") { matching(&t, k) + 1 } else { k + 1 };
                }
                k
            };
            let mut trees = Vec::new();
            let mut k = i + 1;
            use_tree(&t[..end.min(t.len())], &mut k, &[], &mut trees);
            for (path, line) in trees {
                s.paths.push((modpath(&stack), path, line));
            }
            io_tokens(&t[i..end.min(t.len())], &lines, &mut s.io);
            i = end + 1;
            continue;
        }
        if (is(&t, i, "crate") || is(&t, i, "super")) && is(&t, i + 1, "::") && !prev_sep {
            let mut k = i;
            let mut path = Vec::new();
            while let Some(seg) = ident(&t, k) {
                path.push(seg.to_string());
                if !is(&t, k + 1, "::") || !matches!(seg, "crate" | "super") {
                    break;
                }
                k += 2;
            }
            s.paths.push((modpath(&stack), path, t[i].line));
        }
        if is(&t, i, "{") {
            depth += 1;
        } else if is(&t, i, "}") {
            depth = depth.saturating_sub(1);
            if stack.last().is_some_and(|x| x.1 == depth) {
                stack.pop();
            }
        }
        io_tokens(&t[i..(i + 3).min(t.len())], &lines, &mut s.io);
        i += 1;
    }
    s
}

/// I/O named by the tokens starting at `t[0]` (inline) or, for a `use`
/// statement, by any path it imports.
fn io_tokens(t: &[Tok], lines: &[&str], out: &mut Vec<(usize, String)>) {
    let allowed = |line: usize| lines.get(line.wrapping_sub(1)).is_some_and(|l| l.contains(EXCEPTION_MARK));
    let mut hit = |line: usize, what: String| {
        if !allowed(line) {
            out.push((line, what));
        }
    };
    let Some(first) = t.first() else { return };
    if first.text == "use" {
        let mut trees = Vec::new();
        use_tree(t, &mut 1, &[], &mut trees);
        for (path, line) in trees {
            let p: Vec<&str> = path.iter().map(String::as_str).filter(|x| *x != "::").collect();
            let io = IO_CRATES.contains(&p.first().copied().unwrap_or_default())
                || IO_USE_PREFIXES.iter().any(|pre| p.starts_with(pre))
                || p.iter().any(|x| SOCKETS.contains(x));
            if io {
                hit(line, p.join("::"));
            }
        }
        return;
    }
    if first.kind != Kind::Ident {
        return;
    }
    if SOCKETS.contains(&first.text.as_str()) || (IO_CRATES.contains(&first.text.as_str()) && is(t, 1, "::")) {
        hit(first.line, first.text.clone());
    }
    for seq in IO_SEQUENCES {
        if seq.len() <= t.len() && seq.iter().zip(t).all(|(w, x)| x.kind != Kind::Str && x.text == *w) {
            hit(first.line, seq.concat());
        }
    }
}

// ---------------------------------------------------------------- crate walk

type Table = BTreeMap<String, BTreeSet<String>>;

/// Rows between the markers: | `module` | `a`, `b` | (or — for none).
fn parse_table(doc: &str) -> Table {
    let begin = doc.find("<!-- import-table:begin -->").expect("import-table:begin marker");
    let end = doc.find("<!-- import-table:end -->").expect("import-table:end marker");
    let name = |s: &str| s.trim().trim_matches('`').to_string();
    let mut table = Table::new();
    for row in doc[begin..end].lines().filter(|l| l.trim_start().starts_with('|')) {
        let cells: Vec<&str> = row.trim().trim_matches('|').split('|').collect();
        let (Some(m), Some(deps)) = (cells.first(), cells.get(1)) else { continue };
        if !m.contains('`') {
            continue; // header or separator
        }
        let deps = deps.split(',').map(name).filter(|d| !d.is_empty() && d != "—" && d != "-");
        table.insert(name(m), deps.collect());
    }
    table
}

/// Checks the crate rooted at `lib.rs` in `files` (paths relative to `src/`).
/// Returns every offence as `src/file:line: what`.
fn check(files: &BTreeMap<String, String>, table: &Table) -> Vec<String> {
    let mut offences = BTreeSet::new();
    let mut visited = BTreeSet::from([String::from("main.rs")]);
    let mut todo = vec![(String::from("lib.rs"), Vec::<String>::new(), String::new(), false)];
    while let Some((rel, modpath, child_dir, exempt)) = todo.pop() {
        let Some(src) = files.get(&rel) else { continue };
        visited.insert(rel.clone());
        let s = scan(src);
        let exempt = exempt || s.exempt;
        let dir = rel.rsplit_once('/').map_or("", |x| x.0);
        for (inline, name, path_attr, test) in &s.children {
            let base = [child_dir.as_str()].into_iter().chain(inline.iter().map(String::as_str));
            let base: Vec<&str> = base.filter(|x| !x.is_empty()).collect();
            let found = if let Some(p) = path_attr {
                let p = if inline.is_empty() { join(&[dir, p]) } else { join(&[&base.join("/"), p]) };
                Some((p.clone(), p.trim_end_matches(".rs").to_string()))
            } else {
                let stem = join(&[&base.join("/"), name]);
                let flat = format!("{stem}.rs");
                let nested = format!("{stem}/mod.rs");
                [flat, nested].into_iter().find(|f| files.contains_key(f)).map(|f| (f, stem))
            };
            let Some((file, sub_dir)) = found else { continue };
            let mut mp = modpath.clone();
            mp.extend(inline.iter().cloned());
            mp.push(name.clone());
            let is_mod_rs = file.ends_with("/mod.rs") || path_attr.is_some();
            let sub_dir = if is_mod_rs { file.rsplit_once('/').map_or("", |x| x.0).to_string() } else { sub_dir };
            todo.push((file, mp, sub_dir, exempt || *test));
        }
        if exempt || modpath.is_empty() {
            continue;
        }
        let from = &modpath[0];
        let Some(allowed) = table.get(from) else {
            offences.insert(format!("src/{rel}:1: module `{from}` has no row in the import table"));
            continue;
        };
        for (inner, path, line) in &s.paths {
            let mut here = modpath.clone();
            here.extend(inner.iter().cloned());
            let Some(to) = resolve(&here, path) else { continue };
            if &to != from && !allowed.contains(&to) {
                offences.insert(format!("src/{rel}:{line}: `{from}` imports `{to}` ({})", path.join("::")));
            }
        }
        if !IO_MODULES.contains(&from.as_str()) {
            for (line, what) in &s.io {
                offences.insert(format!("src/{rel}:{line}: I/O outside the runtime: {what}"));
            }
        }
    }
    for f in files.keys().filter(|f| !visited.contains(*f)) {
        offences.insert(format!("src/{f}:1: not reached from src/lib.rs by any `mod` this test can follow"));
    }
    offences.into_iter().collect()
}

fn join(parts: &[&str]) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in parts.iter().flat_map(|p| p.split('/')).filter(|s| !s.is_empty() && *s != ".") {
        if seg == ".." {
            out.pop();
        } else {
            out.push(seg);
        }
    }
    out.join("/")
}

/// The top-level module a path in module `here` names, if it is in this crate.
fn resolve(here: &[String], path: &[String]) -> Option<String> {
    match path.first().map(String::as_str) {
        Some("crate") => path.get(1).cloned(),
        Some("super") => {
            let ups = path.iter().take_while(|s| *s == "super").count();
            match here.len().checked_sub(ups) {
                None => Some(String::from("<above the crate root>")),
                Some(0) => path.get(ups).cloned(),
                Some(_) => here.first().cloned(),
            }
        }
        Some("self") if here.is_empty() => path.get(1).cloned(),
        _ => None,
    }
}

fn load_sources(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            load_sources(root, &p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let rel = p.strip_prefix(root).unwrap_or(&p).to_string_lossy().replace('\\', "/");
            out.insert(rel, fs::read_to_string(&p).unwrap_or_default());
        }
    }
}

fn real_table() -> Table {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/architecture.md");
    parse_table(&fs::read_to_string(doc).expect("docs/architecture.md"))
}

#[test]
fn imports_follow_the_table_and_cores_do_no_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    load_sources(&root, &root, &mut files);
    assert!(files.len() > 10, "found only {} source files", files.len());
    let offences = check(&files, &real_table());
    assert!(offences.is_empty(), "{} forbidden edge(s) or I/O use(s):\n{}", offences.len(), offences.join("\n"));
}

#[test]
fn the_table_is_read_from_the_architecture_doc() {
    let t = real_table();
    assert!(t.len() >= 10, "table has only {} rows", t.len());
    assert!(t["time"].is_empty(), "time imports nothing");
    assert!(t["storage"].contains("security") && !t["storage"].contains("overlay"));
    assert!(!t["sip"].contains("overlay") && !t["sip"].contains("node"));
    for (m, deps) in &t {
        for d in deps {
            assert!(t.contains_key(d), "`{m}` may import `{d}`, which has no row");
        }
    }
}

// ---------------------------------------------------------------- self-tests

const TABLE: &str = "<!-- import-table:begin -->\n| module | may import |\n|---|---|\n\
    | `wire` | — |\n| `storage` | `wire` |\n| `node` | `storage`, `wire` |\n<!-- import-table:end -->";

fn run(files: &[(&str, &str)]) -> Vec<String> {
    let mut map: BTreeMap<String, String> = files.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    map.entry(String::from("lib.rs"))
        .or_insert_with(|| String::from("pub mod wire;\npub mod storage;\npub mod node;\n"));
    for m in ["wire.rs", "node/mod.rs"] {
        map.entry(m.to_string()).or_default();
    }
    check(&map, &parse_table(TABLE))
}

fn storage(src: &str) -> Vec<String> {
    run(&[("storage/mod.rs", src)])
}

#[test]
fn allowed_edges_pass() {
    let src =
        "use crate::wire::X;\npub use crate::{wire::{a, b}};\nuse super::wire as w;\nuse self::x::Y;\nuse std::fmt;";
    assert_eq!(storage(src), Vec::<String>::new());
}

#[test]
fn catches_a_grouped_import() {
    let got = storage("use crate::{wire::X,\n    node::Y};\n");
    assert_eq!(got, ["src/storage/mod.rs:2: `storage` imports `node` (crate::node::Y)"]);
}

#[test]
fn catches_a_nested_and_multi_line_import() {
    let got = storage("pub(crate) use crate::{\n wire::{a, b},\n node::{\n  c::{d as e}, *}};\n");
    let want = [
        "src/storage/mod.rs:4: `storage` imports `node` (crate::node::*)",
        "src/storage/mod.rs:4: `storage` imports `node` (crate::node::c::d)",
    ];
    assert_eq!(got, want);
    let got = storage("use {crate::node::A, std::fmt};");
    assert_eq!(got.len(), 1, "{got:?}");
}

#[test]
fn catches_an_inline_path_but_not_comments_or_strings() {
    let src = "// crate::node::a\n/* crate::node::b /* nested */ crate::node::c */\n\
        fn f() -> &'static str { let _c = 'x'; let _s = r#\"crate::node::d\"#; \"crate::node::e\" }\n\
        fn g() { crate::node::run(); }\n";
    assert_eq!(storage(src), ["src/storage/mod.rs:4: `storage` imports `node` (crate::node)"]);
}

#[test]
fn catches_super_super_out_of_a_top_level_module() {
    let files = [
        ("storage/mod.rs", "mod store;\n"),
        (
            "storage/store.rs",
            "use super::super::node::X;\nuse super::Sibling;\nmod inner {\n    use super::super::super::node::Y;\n}\n",
        ),
    ];
    let got = run(&files);
    assert_eq!(
        got,
        [
            "src/storage/store.rs:1: `storage` imports `node` (super::super::node::X)",
            "src/storage/store.rs:4: `storage` imports `node` (super::super::super::node::Y)"
        ]
    );
    assert_eq!(run(&[("storage/mod.rs", "fn f() { super::node::g(); }")]).len(), 1);
}

#[test]
fn a_cfg_test_module_is_exempt_but_code_after_it_is_not() {
    let src = "#[cfg(test)]\n#[allow(dead_code)]\nmod tests {\n    use crate::node::A;\n    fn f() { if true { crate::node::b(); } }\n}\n\
        use crate::node::C;\n";
    assert_eq!(storage(src), ["src/storage/mod.rs:7: `storage` imports `node` (crate::node::C)"]);
}

#[test]
fn a_cfg_test_file_module_and_its_children_are_exempt() {
    let files = [
        ("storage/mod.rs", "#[cfg(test)]\nmod tests;\nmod real;\n"),
        ("storage/tests.rs", "use crate::node::A;\nmod deeper;\n"),
        ("storage/tests/deeper.rs", "use crate::node::B;\n"),
        ("storage/real.rs", "use crate::node::C;\n"),
    ];
    assert_eq!(run(&files), ["src/storage/real.rs:1: `storage` imports `node` (crate::node::C)"]);
}

#[test]
fn follows_path_attributes_and_reports_unreached_files() {
    let files = [
        ("node/mod.rs", "mod runtime;\n"),
        ("node/runtime.rs", "#[path = \"glue.rs\"]\nmod glue;\n"),
        ("node/glue.rs", "use super::super::db::Db;\n"),
        ("storage/mod.rs", ""),
        ("storage/orphan.rs", ""),
    ];
    assert_eq!(run(&files), ["src/storage/orphan.rs:1: not reached from src/lib.rs by any `mod` this test can follow"]);
}

#[test]
fn a_module_without_a_row_is_reported() {
    let got = run(&[
        ("lib.rs", "pub mod wire;\npub mod storage;\npub mod node;\nmod extra;"),
        ("storage/mod.rs", ""),
        ("extra.rs", ""),
    ]);
    assert_eq!(got, ["src/extra.rs:1: module `extra` has no row in the import table"]);
}

#[test]
fn catches_io_outside_the_runtime() {
    let src = "use std::{fs, net::UdpSocket};\nfn f() { let _t = std::time::Instant::now(); }\n\
        fn g() { std::thread::sleep(d); tokio::spawn(x); }\n\
        fn h() { let _a = std::time::Instant::now(); } // layering: allowed (reviewed anchor)\n\
        // Instant::now in a comment\n#[cfg(test)]\nmod t { fn f() { std::time::Instant::now(); } }\n";
    let got = storage(src);
    let want = [
        "src/storage/mod.rs:1: I/O outside the runtime: std::fs",
        "src/storage/mod.rs:1: I/O outside the runtime: std::net::UdpSocket",
        "src/storage/mod.rs:2: I/O outside the runtime: Instant::now",
        "src/storage/mod.rs:3: I/O outside the runtime: thread::sleep",
        "src/storage/mod.rs:3: I/O outside the runtime: tokio",
    ];
    assert_eq!(got, want);
    assert_eq!(run(&[("node/mod.rs", src), ("storage/mod.rs", "")]), Vec::<String>::new());
}
