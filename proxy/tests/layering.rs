//! Keeps weft-proxy's modules in layers: every module of proxy/src has a layer in [`LAYERS`], and
//! a module imports only modules of its own layer or of layers below it, with no cycle anywhere.
//! A shared type therefore lives below everyone who uses it. Test code (`#[cfg(test)]` modules
//! and the test-only modules they declare) is exempt, except that it must not import another
//! module's `tests`: shared test helpers live in `test_support`.
//!
//! On a failure it prints each offending import as `file:line: ...`. `WEFT_LAYERING_SRC` points it
//! at another source tree (to check an old checkout).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Bottom to top. docs/architecture.md shows the same table.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "vocabulary",
        &[
            "backoff",
            "balance",
            "balance::ewma",
            "balance::p2c",
            "balance::split",
            "detect",
            "detect::prefixed",
            "direction",
            "drain",
            "inbound_policy",
            "labels",
            "log",
            "peer",
            "readiness",
            "resilience",
            "resilience::breaker",
            "resilience::budget",
            "resilience::error",
            "resilience::kinds",
            "resilience::policy",
        ],
    ),
    (
        "metric handles",
        &[
            "metrics",
            "metrics::discovery",
            "metrics::identity",
            "metrics::prometheus_text",
            "metrics::resilience",
            "metrics::tls",
        ],
    ),
    (
        "I/O and identity",
        &[
            "adaptive_copy",
            "connect",
            "connection_limit",
            "identity",
            "identity::certify",
            "identity::config",
            "identity::rotation",
            "idle",
            "listener",
            "loop_guard",
            "observed_io",
            "opaque",
            "original_dst",
            "resilience::connection_slots",
            "tls",
            "tls::accept",
            "tls::client_hello",
            "tls::connect",
            "tls::transport",
        ],
    ),
    (
        "discovery",
        &[
            "discovery",
            "discovery::cache",
            "discovery::client",
            "discovery::dns",
            "discovery::endpoints",
        ],
    ),
    (
        "HTTP vocabulary",
        &[
            "http",
            "http::error",
            "http::extensions",
            "http::grpc",
            "http::hop_by_hop",
            "http::mesh_encoding",
            "http::target",
        ],
    ),
    (
        "HTTP services",
        &[
            "app_probe",
            "http::balance",
            "http::client_identity",
            "http::endpoint",
            "http::error_response",
            "http::peer_client",
            "http::pool",
            "http::premature_resets",
            "http::request_metrics",
            "http::request_target",
            "http::route",
            "http::server",
            "http::upgrade",
            "resilience::concurrency_limit",
            "resilience::limits",
            "resilience::rate_limit",
            "resilience::replay",
            "resilience::retry",
            "resilience::service_overrides",
            "resilience::service_policy",
            "resilience::stream_idle",
            "resilience::timeout",
            "resilience::upstream",
        ],
    ),
    (
        "assembly",
        &[
            "",
            "admin",
            "config",
            "connection",
            "connection::plan",
            "http::stack",
            "inbound",
            "inbound::path",
            "inbound::termination",
            "main",
            "outbound",
            "outbound::path",
            "sidecar",
            "wait_ready",
        ],
    ),
];

/// A module of the crate: its path ("" for the crate root) and the file that holds it.
struct Module {
    path: String,
    file: PathBuf,
}

fn src_dir() -> PathBuf {
    match std::env::var_os("WEFT_LAYERING_SRC") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
    }
}

fn modules(src: &Path) -> Vec<Module> {
    let mut files = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read proxy/src") {
            let path = entry.expect("read proxy/src").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let rel = file
                .strip_prefix(src)
                .expect("under src")
                .with_extension("");
            let mut segs: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(segs.last().map(String::as_str), Some("mod" | "lib")) {
                segs.pop();
            }
            Module {
                path: segs.join("::"),
                file,
            }
        })
        .collect()
}

/// The file's lines before its first file-scope `#[cfg(test)]` (tests come last, by habit of
/// the house), with comments removed.
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        let code = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        out.push((i + 1, code.to_owned()));
    }
    out
}

/// Modules declared test-only (`#[cfg(test)] mod x;`) and everything below them.
fn test_only(modules: &[Module]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for module in modules {
        let text = std::fs::read_to_string(&module.file).expect("read module");
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.windows(2) {
            if pair[0].trim() == "#[cfg(test)]" {
                let decl = pair[1].trim();
                let name = decl
                    .strip_prefix("pub(crate) mod ")
                    .or_else(|| decl.strip_prefix("mod "))
                    .and_then(|rest| rest.strip_suffix(';'));
                if let Some(name) = name {
                    out.insert(join(&module.path, name));
                }
            }
        }
    }
    out
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}::{name}")
    }
}

/// Every `crate::a::b` path in `code`, braces of `use` trees expanded.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        expand(&mut out, Vec::new(), rest);
    }
    out
}

/// Reads one path (or `{...}` tree) from the start of `s` after `prefix`.
fn expand(out: &mut Vec<Vec<String>>, mut prefix: Vec<String>, s: &str) {
    let mut s = s.trim_start();
    loop {
        if let Some(inner) = s.strip_prefix('{') {
            let mut depth = 1;
            let mut end = inner.len();
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let body = &inner[..end];
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in body.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        expand(out, prefix.clone(), &body[start..i]);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            expand(out, prefix, &body[start..]);
            return;
        }
        let ident: String = s
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            break;
        }
        s = &s[ident.len()..];
        if ident != "self" {
            prefix.push(ident);
        }
        match s.strip_prefix("::") {
            Some(more) => s = more.trim_start(),
            None => break,
        }
    }
    if !prefix.is_empty() {
        out.push(prefix);
    }
}

/// The module a path names: its longest prefix that is a module.
fn resolve<'a>(path: &[String], known: &'a BTreeMap<String, usize>) -> Option<&'a str> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find_map(|candidate| known.get_key_value(&candidate).map(|(k, _)| k.as_str()))
}

#[test]
fn modules_import_only_their_layer_and_below_without_cycles() {
    let src = src_dir();
    let modules = modules(&src);
    let tests = test_only(&modules);
    let mut layer_of: BTreeMap<String, usize> = BTreeMap::new();
    for (layer, (_, names)) in LAYERS.iter().enumerate() {
        for name in *names {
            assert!(
                layer_of.insert((*name).to_owned(), layer).is_none(),
                "{name} is in two layers"
            );
        }
    }
    let mut problems = String::new();
    let known: BTreeMap<String, usize> = modules
        .iter()
        .map(|m| (m.path.clone(), 0))
        .chain(layer_of.iter().map(|(k, v)| (k.clone(), *v)))
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for module in &modules {
        let is_test = tests
            .iter()
            .any(|t| module.path == *t || module.path.starts_with(&format!("{t}::")))
            || module.path == "test_support"
            || module.path.starts_with("test_support::");
        let text = std::fs::read_to_string(&module.file).expect("read module");
        let rel = module
            .file
            .strip_prefix(&src)
            .unwrap_or(&module.file)
            .display()
            .to_string();
        for (number, line) in text.lines().enumerate() {
            if line.contains("::tests::") && !line.trim_start().starts_with("//") {
                let _ = writeln!(
                    problems,
                    "src/{rel}:{}: imports another module's tests (shared test helpers belong in test_support): {}",
                    number + 1,
                    line.trim()
                );
            }
        }
        if is_test {
            continue;
        }
        let Some(&layer) = layer_of.get(&module.path) else {
            let _ = writeln!(
                problems,
                "src/{rel}: module `{}` has no layer: add it to LAYERS in proxy/tests/layering.rs and docs/architecture.md",
                module.path
            );
            continue;
        };
        for (number, line) in code_lines(&text) {
            for path in crate_paths(&line) {
                let Some(target) = resolve(&path, &known) else {
                    continue;
                };
                // A module naming itself or its own descendants is not an import across modules.
                if target == module.path
                    || target.starts_with(&format!("{}::", module.path)) && module.path.is_empty()
                {
                    continue;
                }
                edges
                    .entry(module.path.clone())
                    .or_default()
                    .insert(target.to_owned());
                let Some(&target_layer) = layer_of.get(target) else {
                    continue;
                };
                if target_layer > layer {
                    let _ = writeln!(
                        problems,
                        "src/{rel}:{number}: `{}` (layer {layer}, {}) imports `{target}` (layer {target_layer}, {}): `crate::{}`",
                        module.path,
                        LAYERS[layer].0,
                        LAYERS[target_layer].0,
                        path.join("::"),
                    );
                }
            }
        }
    }
    for cycle in cycles(&edges) {
        let _ = writeln!(
            problems,
            "modules import each other in a cycle: {}",
            cycle.join(" -> ")
        );
    }
    assert!(problems.is_empty(), "layering broken:\n{problems}");
}

/// One cycle per strongly connected component of more than one module.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Depth-first search from every node, reporting the first back edge found in each.
    let mut found = Vec::new();
    let mut done: BTreeSet<String> = BTreeSet::new();
    for start in edges.keys() {
        if done.contains(start) {
            continue;
        }
        let mut stack: Vec<(String, Vec<String>)> = vec![(start.clone(), Vec::new())];
        let mut on_path: Vec<String> = Vec::new();
        while let Some((node, _)) = stack.last().cloned() {
            if !on_path.contains(&node) {
                on_path.push(node.clone());
                let next: Vec<String> = edges
                    .get(&node)
                    .map(|s| s.iter().cloned().collect())
                    .unwrap_or_default();
                stack.last_mut().expect("just pushed").1 = next;
            }
            let child = stack.last_mut().expect("non-empty").1.pop();
            match child {
                Some(child) if on_path.contains(&child) => {
                    let at = on_path.iter().position(|n| *n == child).unwrap_or(0);
                    let mut cycle = on_path[at..].to_vec();
                    cycle.push(child);
                    if !found.iter().any(|c: &Vec<String>| {
                        c.len() == cycle.len() && cycle.iter().all(|m| c.contains(m))
                    }) {
                        found.push(cycle);
                    }
                }
                Some(child) if !done.contains(&child) => stack.push((child, Vec::new())),
                Some(_) => {}
                None => {
                    stack.pop();
                    if let Some(finished) = on_path.pop() {
                        done.insert(finished);
                    }
                }
            }
        }
    }
    found
}

#[test]
fn the_checker_sees_grouped_and_inline_paths() {
    let paths = crate_paths("use crate::http::{error::ProxyError, target::{self, Target}};");
    let joined: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        joined,
        [
            "http::error::ProxyError",
            "http::target",
            "http::target::Target"
        ]
    );
    let inline = crate_paths("let x = crate::metrics::Metrics::new(); // not weft_crate::x");
    assert_eq!(
        inline,
        [vec![
            "metrics".to_owned(),
            "Metrics".to_owned(),
            "new".to_owned()
        ]]
    );
    let mut edges = BTreeMap::new();
    edges.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    edges.insert("b".to_owned(), BTreeSet::from(["c".to_owned()]));
    edges.insert("c".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(cycles(&edges).len(), 1);
    edges.insert("c".to_owned(), BTreeSet::new());
    assert!(cycles(&edges).is_empty());
}
