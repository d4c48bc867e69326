//! The real-world corpus (testdata/real-world) through the `weft-inject` binary: what a user
//! pipes through it comes out meshed where asked, and identical everywhere else.

mod cli;

use std::collections::BTreeSet;

use cli::{CLUSTER_FLAGS, corpus, flatten, name_of, run_ok};
use serde_json::{Value, json};
use weft_inject::parse_manifests;

/// What the summary says for each file, one line per workload.
fn expected_summary(file: &str) -> &'static str {
    match file {
        "batch.yaml" => {
            "injected CronJob shop/report\n\
             skipped Job shop/migrate-0042: not meshed (no weft.io/inject: enabled on it or its namespace)\n"
        }
        "custom-job.yaml" => {
            "skipped Job ml/train: batch.volcano.sh/v1alpha1 is not a Kubernetes workload API, so it runs no pod to mesh\n"
        }
        "daemonsets.yaml" => {
            "skipped DaemonSet monitoring/node-exporter: hostNetwork: the sidecar's iptables rules would take over the node's own traffic\n\
             skipped DaemonSet logging/fluent-bit: not meshed (no weft.io/inject: enabled on it or its namespace)\n"
        }
        "list.yaml" => {
            "injected Deployment shop/catalog\n\
             skipped Pod shop/debug: not meshed (no weft.io/inject: enabled on it or its namespace)\n\
             skipped ReplicaSet shop/catalog-6d4cf56db6: not meshed (no weft.io/inject: enabled on it or its namespace)\n"
        }
        "stateful.yaml" => "injected StatefulSet shop/postgres\n",
        "web.yaml" => "injected Deployment shop/web\n",
        other => panic!("testdata/real-world/{other} has no expected summary in this test"),
    }
}

fn injected_names(summary: &str) -> BTreeSet<String> {
    summary
        .lines()
        .filter_map(|line| line.strip_prefix("injected "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_corpus_is_there() {
    let names: Vec<String> = corpus().into_iter().map(|(name, _)| name).collect();
    assert_eq!(
        names,
        [
            "batch.yaml",
            "custom-job.yaml",
            "daemonsets.yaml",
            "list.yaml",
            "stateful.yaml",
            "web.yaml"
        ]
    );
}

#[test]
fn each_file_is_summarised_one_line_per_workload_on_stderr() {
    for (file, text) in corpus() {
        let (stdout, stderr) = run_ok(&CLUSTER_FLAGS, &text);
        assert_eq!(stderr, expected_summary(&file), "{file}");
        // stdout is nothing but YAML.
        parse_manifests(&stdout).unwrap_or_else(|e| panic!("{file}: {e}\n{stdout}"));
    }
}

#[test]
fn what_is_not_meshed_comes_out_semantically_identical() {
    for (file, text) in corpus() {
        let (stdout, stderr) = run_ok(&CLUSTER_FLAGS, &text);
        let meshed = injected_names(&stderr);
        let input = parse_manifests(&text).unwrap();
        let output = parse_manifests(&stdout).unwrap();
        assert_eq!(output.len(), input.len(), "{file}: documents");
        let (input, output) = (flatten(&input), flatten(&output));
        assert_eq!(output.len(), input.len(), "{file}: objects");
        for (before, after) in input.iter().zip(&output) {
            let name = name_of(before);
            if meshed.contains(&name) {
                assert_ne!(before, after, "{file}: {name} should be meshed");
            } else {
                assert_eq!(
                    before, after,
                    "{file}: {name} should pass through as it was"
                );
            }
        }
    }
}

#[test]
fn uninject_gives_back_the_input() {
    for (file, text) in corpus() {
        let (meshed, _) = run_ok(&CLUSTER_FLAGS, &text);
        let (back, stderr) = run_ok(&["--uninject"], &meshed);
        assert_eq!(
            parse_manifests(&back).unwrap(),
            parse_manifests(&text).unwrap(),
            "{file}"
        );
        for name in injected_names(expected_summary(&file)) {
            assert!(
                stderr.contains(&format!("uninjected {name}: --uninject\n")),
                "{file}: {stderr}"
            );
        }
    }
}

#[test]
fn injecting_the_output_again_is_byte_identical() {
    for (file, text) in corpus() {
        let (once, _) = run_ok(&CLUSTER_FLAGS, &text);
        let (twice, stderr) = run_ok(&CLUSTER_FLAGS, &once);
        assert_eq!(twice, once, "{file}");
        for name in injected_names(expected_summary(&file)) {
            assert!(
                stderr.contains(&format!("unchanged {name}: already injected as asked\n")),
                "{file}: {stderr}"
            );
        }
    }
}

#[test]
fn re_injecting_with_other_flags_replaces_the_old_sidecar() {
    let text = corpus()
        .into_iter()
        .find(|(name, _)| name == "web.yaml")
        .unwrap()
        .1;
    // First meshed without a control plane, then with one and another proxy image.
    let (old, _) = run_ok(&["--proxy-image", "weft-proxy:old"], &text);
    let mut flags = CLUSTER_FLAGS.to_vec();
    flags.extend(["--proxy-image", "weft-proxy:new"]);
    let (new, stderr) = run_ok(&flags, &old);
    assert_eq!(
        stderr,
        "updated Deployment shop/web: its injection was replaced by one with the current settings\n"
    );
    let (direct, _) = run_ok(&flags, &text);
    assert_eq!(
        new, direct,
        "re-injecting must equal injecting the original"
    );
    let pod = &parse_manifests(&new).unwrap()[3]["spec"]["template"];
    let names: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web"]);
    assert_eq!(pod["spec"]["initContainers"][1]["name"], "weft-proxy");
    assert_eq!(pod["spec"]["initContainers"][1]["image"], "weft-proxy:new");
    assert_eq!(pod["spec"]["initContainers"][0]["image"], "weft-proxy:new");
    assert_eq!(pod["spec"]["initContainers"][2]["name"], "wait-for-db");
}

#[test]
fn yaml_1_1_scalars_keep_their_meaning() {
    let text = corpus()
        .into_iter()
        .find(|(name, _)| name == "web.yaml")
        .unwrap()
        .1;
    let (stdout, _) = run_ok(&CLUSTER_FLAGS, &text);
    // 0644 and 0755 are octal file modes, as kubectl reads them.
    assert!(stdout.contains("defaultMode: 420\n"), "{stdout}");
    assert!(stdout.contains("defaultMode: 493\n"), "{stdout}");
    assert!(stdout.contains("mode: 448\n"), "{stdout}");
    assert!(!stdout.contains("644.0"), "{stdout}");
    let docs = parse_manifests(&stdout).unwrap();
    let pod = &docs[3]["spec"]["template"];
    let env = &pod["spec"]["containers"][0]["env"];
    let value = |name: &str| {
        env.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap()["value"]
            .clone()
    };
    // Plain yes/on stay the strings they spell, and are written quoted for YAML 1.1 readers.
    assert_eq!(value("ENABLE_CACHE"), json!("yes"));
    assert_eq!(value("COMPRESSION"), json!("on"));
    assert!(
        stdout.contains("value: 'yes'") || stdout.contains("value: \"yes\""),
        "{stdout}"
    );
    assert_eq!(value("DEBUG"), json!("no"));
    assert_eq!(value("PORT"), json!("8080"));
    assert_eq!(value("LIMIT"), json!("9007199254740993"));
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/port"],
        json!("9090")
    );
    let resources = &pod["spec"]["containers"][0]["resources"];
    assert_eq!(
        resources,
        &json!({"limits": {"cpu": "500m", "memory": "1Gi"},
                "requests": {"cpu": "250m", "memory": "256Mi"}})
    );
    // The ConfigMap's multi-line strings come back byte for byte.
    let config = &docs[1]["data"];
    assert_eq!(
        config["nginx.conf"],
        json!(
            "server {\n  listen 8080;\n  location / {\n    proxy_pass http://127.0.0.1:9000;\n  }\n}\n"
        )
    );
    assert_eq!(
        config["motd"],
        json!("Welcome to the shop. Folded into one line.\n")
    );
    assert_eq!(config["FEATURE_FLAG"], Value::String("on".into()));
}

#[test]
fn a_kubectl_list_comes_back_meshed() {
    let text = corpus()
        .into_iter()
        .find(|(name, _)| name == "list.yaml")
        .unwrap()
        .1;
    let (stdout, _) = run_ok(&[], &text);
    let docs = parse_manifests(&stdout).unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["kind"], "List");
    let deployment = &docs[0]["items"][0];
    assert_eq!(
        deployment["spec"]["template"]["spec"]["initContainers"][1]["name"],
        "weft-proxy"
    );
    // Server-set fields are kept as they were.
    assert_eq!(deployment["status"]["readyReplicas"], 2);
    assert_eq!(deployment["metadata"]["resourceVersion"], "184467");
}

#[test]
fn uninject_takes_no_injection_flags() {
    let out = cli::run(&["--uninject", "--proxy-image", "weft-proxy:x"], "");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("'--uninject' cannot be used with '--proxy-image"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}
