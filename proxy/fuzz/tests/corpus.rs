//! Replays every saved input of every fuzz target (corpus/<target>/*) through the target's body,
//! so an ordinary test run checks each one, libFuzzer or not. A failure names the file.

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("reading {}: {err}", dir.display()))
        .map(|entry| entry.expect("a corpus directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_target_has_a_seed_corpus() {
    for (target, _) in weft_fuzz::TARGETS {
        assert!(!inputs(target).is_empty(), "corpus/{target} is empty");
    }
}

#[test]
fn every_saved_input_passes_its_target() {
    let mut replayed = 0;
    for (target, check) in weft_fuzz::TARGETS {
        for path in inputs(target) {
            let data = std::fs::read(&path).expect("a readable corpus file");
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(
                outcome.is_ok(),
                "{target}: input {} fails (replay with `proxy/fuzz/run {target} {}`)",
                path.display(),
                path.display()
            );
            replayed += 1;
        }
    }
    assert!(replayed > 0);
}

#[test]
fn every_target_has_a_fuzz_binary() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz_targets");
    for (target, _) in weft_fuzz::TARGETS {
        assert!(
            dir.join(format!("{target}.rs")).is_file(),
            "fuzz_targets/{target}.rs is missing"
        );
    }
}
