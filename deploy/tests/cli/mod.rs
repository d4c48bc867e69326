//! Driving the real `weft-inject` binary as a user would, and the real-world corpus in
//! testdata/real-world/.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// Runs `weft-inject` with `args`, feeding `stdin`.
pub fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft-inject"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting weft-inject");
    // A CLI that refuses its arguments exits without reading: a broken pipe is its answer.
    match child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin.as_bytes())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.expect("writing weft-inject's stdin"),
    }
    child.wait_with_output().expect("waiting for weft-inject")
}

/// Runs `weft-inject`, which must succeed; returns (stdout, stderr).
pub fn run_ok(args: &[&str], stdin: &str) -> (String, String) {
    let out = run(args, stdin);
    let stderr = String::from_utf8(out.stderr).expect("stderr is UTF-8");
    assert!(
        out.status.success(),
        "weft-inject {args:?} failed: {stderr}"
    );
    (
        String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr,
    )
}

/// The flags a cluster install uses: the control plane's addresses, so pods get identity too.
pub const CLUSTER_FLAGS: [&str; 4] = [
    "--discovery-addr",
    "weft-discovery.weft.svc.cluster.local:8086",
    "--identity-addr",
    "weft-identity.weft.svc.cluster.local:8080",
];

/// The real-world corpus: (file name, contents), sorted by name.
pub fn corpus() -> Vec<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/real-world");
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .expect("reading testdata/real-world")
        .map(|entry| {
            let path = entry.expect("listing testdata/real-world").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).expect("reading a corpus file");
            (name, text)
        })
        .filter(|(name, _)| name.ends_with(".yaml"))
        .collect();
    files.sort();
    files
}

/// Every object, the items of List documents included.
pub fn flatten(docs: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for doc in docs {
        match doc.get("items").and_then(Value::as_array) {
            Some(items) if doc["kind"].as_str().is_some_and(|k| k.ends_with("List")) => {
                out.extend(flatten(items));
            }
            _ => out.push(doc.clone()),
        }
    }
    out
}

/// "Deployment shop/web", as the summary names objects.
pub fn name_of(object: &Value) -> String {
    format!(
        "{} {}/{}",
        object["kind"].as_str().unwrap_or("object"),
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default"),
        object["metadata"]["name"].as_str().unwrap_or("<unnamed>")
    )
}
