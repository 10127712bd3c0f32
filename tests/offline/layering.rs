//! The architecture's layering, read from the code: every `crate::` path in `src/` (outside unit
//! tests) must point to a module of a lower layer (ARCHITECTURE.md, "Layers"), the module graph
//! has no cycle, and the pure state machine (`call`), policy (`admission`) and bot codecs (`bot`)
//! do no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may import only modules of a strictly lower layer; the
/// first layer imports nothing from the crate. Keep in step with ARCHITECTURE.md.
const LAYERS: &[&[&str]] = &[
    &["ids", "backoff", "audio", "net", "metrics"],
    &["bot"],
    &["media", "config"],
    &["ari"],
    &["call", "preflight"],
    &["admission", "dispatch"],
    &["timer", "shared"],
    &["worker", "intake"],
    &["leftovers"],
    &["app"],
];

/// Modules that must stay pure: no sockets, threads, files, clocks of their own to wait on.
const PURE: &[&str] = &["call", "admission", "bot"];
const IO: &[&str] = &[
    "std::net",
    "std::thread",
    "std::fs",
    "std::process",
    "ureq",
    "tungstenite",
    "socket2",
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// `src/ari/rest.rs` → `ari`; `src/lib.rs` and `src/main.rs` → `None` (they name every module).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    match first.strip_suffix(".rs") {
        Some("lib" | "main") => None,
        Some(m) => Some(m.to_string()),
        None => Some(first),
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's code before its unit tests, without comments.
fn code_of(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let code = line.split("//").next().unwrap_or_default();
        lines.push((i + 1, code.to_string()));
    }
    lines
}

/// The crate modules a line of code names: `crate::x`, and each `x` of `use crate::{x, y::z}`.
fn imports(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: `a`, `b::c`, `d::{e, f}` → a, b, d.
            let mut depth = 0;
            let mut start = 0;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        found.push(first_segment(&group[start..j]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.push(first_segment(&group[start..j]));
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            found.push(first_segment(rest));
        }
    }
    found.retain(|m| !m.is_empty() && m != "self");
    found
}

fn first_segment(path: &str) -> String {
    path.trim()
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Every cross-module import in `src/`: (importer, imported) → where.
fn graph() -> BTreeMap<(String, String), Vec<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(&src, &file) else {
            continue;
        };
        let text = fs::read_to_string(&file).unwrap();
        for (n, line) in code_of(&text) {
            for target in imports(&line) {
                if target != module {
                    let at = format!(
                        "{}:{n}: {}",
                        file.strip_prefix(&src).unwrap().display(),
                        line.trim()
                    );
                    edges.entry((module.clone(), target)).or_default().push(at);
                }
            }
        }
    }
    edges
}

#[test]
fn every_import_points_to_a_lower_layer() {
    let mut wrong = Vec::new();
    for ((from, to), at) in graph() {
        let ok = match (layer(&from), layer(&to)) {
            (Some(a), Some(b)) => b < a,
            _ => false,
        };
        if !ok {
            let why = match (layer(&from), layer(&to)) {
                (None, _) => format!("module `{from}` is in no layer of LAYERS"),
                (_, None) => format!("module `{to}` is in no layer of LAYERS"),
                (Some(0), _) => format!("`{from}` is a leaf: it imports nothing from the crate"),
                _ => format!("`{from}` may not import `{to}` (not a lower layer)"),
            };
            wrong.push(format!("{why}:\n    {}", at.join("\n    ")));
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering (ARCHITECTURE.md, Layers):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_module_graph_has_no_cycle() {
    let edges = graph();
    let mut next: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        next.entry(from).or_default().insert(to);
    }
    // Depth-first search; a node met again on the current path closes a cycle.
    fn visit<'a>(
        n: &'a str,
        next: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(i) = path.iter().position(|p| *p == n) {
            let mut cycle = path[i..].to_vec();
            cycle.push(n);
            return Some(cycle);
        }
        if !done.insert(n) {
            return None;
        }
        path.push(n);
        for m in next.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for n in next.keys() {
        if let Some(cycle) = visit(n, &next, &mut Vec::new(), &mut done) {
            let at: Vec<String> = cycle
                .windows(2)
                .flat_map(|w| {
                    edges[&(w[0].to_string(), w[1].to_string())]
                        .iter()
                        .take(1)
                        .cloned()
                })
                .collect();
            panic!(
                "import cycle {}:\n    {}",
                cycle.join(" → "),
                at.join("\n    ")
            );
        }
    }
}

#[test]
fn the_state_machine_and_the_admission_policy_do_no_io() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    for module in PURE {
        // `src/m.rs`, or every file of `src/m/`.
        let single = src.join(format!("{module}.rs"));
        let mut files = Vec::new();
        if single.exists() {
            files.push(single);
        } else {
            rust_files(&src.join(module), &mut files);
        }
        assert!(!files.is_empty(), "no source for the pure module {module}");
        for file in files {
            let text = fs::read_to_string(&file).unwrap();
            let shown = file
                .strip_prefix(src.parent().unwrap())
                .unwrap_or(&file)
                .display()
                .to_string();
            for (n, line) in code_of(&text) {
                if let Some(io) = IO.iter().find(|io| {
                    line.contains(&format!("{io}::")) || line.contains(&format!("use {io};"))
                }) {
                    wrong.push(format!("{shown}:{n}: uses {io}: {}", line.trim()));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "I/O in a pure module:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn imports_are_read_from_use_groups_and_inline_paths() {
    assert_eq!(imports("use crate::ari::{AriClient, Channel};"), ["ari"]);
    assert_eq!(
        imports("use crate::{ids::CallId, media::{Echo, Waking}, metrics};"),
        ["ids", "media", "metrics"]
    );
    assert_eq!(
        imports(
            "    let x = crate::config::PoolExhausted::Transfer; crate::metrics::call_ended(e);"
        ),
        ["config", "metrics"]
    );
    assert!(imports("use super::pool::Lease;").is_empty());
}
