//! Timeouts, retries, limits and the inbound rate limit in real pods, set by pod annotations the
//! injector turns into the proxy's settings, against the echo fixture's /fault route (fail the
//! first N requests of a key, hang, ...). curl in the client pod is the app.

use crate::support::*;

const PORT: u16 = 8080;

/// `curl` in `pod`: the response head (with the status line) and the status code.
fn curl(tb: &weft_testbed::Testbed, pod: &str, args: &[&str], url: &str) -> (String, u16) {
    let mut argv = vec![
        "curl",
        "-sS",
        "--max-time",
        "20",
        "-D",
        "-",
        "-o",
        "/dev/null",
    ];
    argv.extend(args);
    argv.push(url);
    let head = exec_ok(tb, pod, &argv);
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line from {url}:\n{head}"));
    (head, status)
}

#[test]
fn retries_and_the_request_timeout_follow_the_pod_annotations() {
    require(&[("curl", "curl")]);
    let tb = up(&[
        client_pod().annotate("timeout", "1s"),
        http_echo_pod("server", PORT),
    ]);
    let ip = tb.service_ip("server").expect("server has a ClusterIP");
    let url = |q: &str| format!("http://{ip}:{PORT}/fault?{q}");

    // The first two GETs of this key fail with 503; the proxy's two default retries hide them.
    let (head, status) = curl(&tb, "client", &[], &url("fail_first=2&key=get"));
    assert_eq!(status, 200, "{head}");
    assert_eq!(header(&head, "X-Fault-Count"), Some("3"), "{head}");

    // A POST is not retried by default: the client sees the 503.
    let (head, status) = curl(
        &tb,
        "client",
        &["-X", "POST"],
        &url("fail_first=1&key=post"),
    );
    assert_eq!(status, 503, "{head}");

    // A hanging server: the request timeout answers 504 and names itself.
    let (head, status) = curl(&tb, "client", &[], &url("hang=1"));
    assert_eq!(status, 504, "{head}");
    assert_eq!(
        header(&head, "weft-error"),
        Some("request timeout"),
        "{head}"
    );

    let retries = counter(
        &tb,
        "client",
        "weft_retry_total",
        &[("direction", "outbound")],
    );
    assert_eq!(retries, 2.0);
    let timeouts = counter(
        &tb,
        "client",
        "weft_timeout_total",
        &[("direction", "outbound"), ("kind", "request")],
    );
    assert_eq!(timeouts, 1.0);
}

#[test]
fn non_idempotent_retries_and_limits_follow_the_pod_annotations() {
    require(&[("curl", "curl"), ("sh", "dash")]);
    let tb = up(&[
        client_pod()
            .annotate("retry-non-idempotent", "true")
            .annotate("max-in-flight", "1")
            .annotate("max-pending", "0"),
        http_echo_pod("server", PORT),
    ]);
    let ip = tb.service_ip("server").expect("server has a ClusterIP");

    let url = format!("http://{ip}:{PORT}/fault?fail_first=1&key=post");
    let (head, status) = curl(&tb, "client", &["-X", "POST", "--data", "order"], &url);
    assert_eq!(
        status, 200,
        "POST retried as the annotation allows:\n{head}"
    );

    // One slow request holds the only in-flight slot; the next is refused at once.
    let script = format!(
        "curl -s -o /dev/null -w 'slow=%{{http_code}}\\n' http://{ip}:{PORT}/slow?ms=3000 & \
         sleep 1; \
         curl -s -D - -o /dev/null -w 'fast_secs=%{{time_total}}\\n' http://{ip}:{PORT}/fault; \
         wait"
    );
    let out = exec_ok(&tb, "client", &["sh", "-c", &script]);
    assert!(out.contains("slow=200"), "{out}");
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert_eq!(header(&out, "weft-error"), Some("overloaded"), "{out}");
    let overloaded = counter(
        &tb,
        "client",
        "weft_overload_rejected_total",
        &[("direction", "outbound"), ("limit", "in_flight")],
    );
    assert_eq!(overloaded, 1.0);
}

#[test]
fn inbound_rate_limit_answers_429() {
    require(&[("curl", "curl")]);
    let tb = up(&[
        client_pod(),
        http_echo_pod("server", PORT).annotate("inbound-rate-limit", "3/m"),
    ]);
    let ip = tb.service_ip("server").expect("server has a ClusterIP");
    let url = format!("http://{ip}:{PORT}/fault");
    let statuses: Vec<u16> = (0..5).map(|_| curl(&tb, "client", &[], &url).1).collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let (head, _) = curl(&tb, "client", &[], &url);
    assert_eq!(header(&head, "weft-error"), Some("rate limited"), "{head}");
    let limited = counter(
        &tb,
        "server",
        "weft_rate_limited_total",
        &[("direction", "inbound"), ("scope", "overall")],
    );
    assert_eq!(limited, 3.0);
}

// ---- Three replicas behind one Service, balanced through discovery ----

/// Pods `{name}-0..` labelled `app: {name}`, each running the echo fixture with its own extra
/// arguments (the `--fault-*` knobs), behind a Service `name` with `annotations`.
fn replicas(name: &str, faults: &[&[&str]], annotations: &[(&str, &str)]) -> String {
    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let (py, echo) = (python(), fixture("http_echo.py"));
    let mut out = String::new();
    for (i, extra) in faults.iter().enumerate() {
        let pod = format!("{name}-{i}");
        let mut command = vec![q(&py), q(&echo), q("--port"), q(&PORT.to_string())];
        command.extend(extra.iter().map(|a| q(a)));
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\n  namespace: default\n  \
             labels: {{app: {name}}}\n  annotations: {{weft.io/inject: enabled}}\nspec:\n  \
             containers:\n  - name: app\n    image: fixture\n    env: [{{name: POD_NAME, value: {pod}}}]\n    \
             command: [{}]\n",
            command.join(", ")
        ));
    }
    let annotations: Vec<String> = annotations
        .iter()
        .map(|(k, v)| format!("weft.io/{k}: {}", q(v)))
        .collect();
    out.push_str(&format!(
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\n  \
         annotations: {{{}}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{port: {PORT}}}]\n",
        annotations.join(", ")
    ));
    out
}

/// Brings up the client and `services` (from [`replicas`]) with the full control plane, and
/// waits for every replica to listen.
fn up_replicas(services: &[String]) -> weft_testbed::Testbed {
    let yaml = format!("{}{}", manifests(&[client_pod()]), services.concat());
    let tb = match weft_testbed::Testbed::up(&yaml, weft_testbed::TestbedOptions::default()) {
        Ok(tb) => tb,
        Err(e) => panic!("testbed up failed: {e}\nmanifests:\n{yaml}"),
    };
    for pod in tb.pods() {
        if pod.namespace == "default" && pod.name != "client" {
            wait_listening(&tb, &pod.name, PORT);
        }
    }
    tb
}

/// What the app saw of `n` requests to `url` (`concurrency` keep-alive connections).
#[derive(Debug, serde::Deserialize)]
struct Load {
    /// By status ("200", "503", ...; "error" when no response came).
    statuses: std::collections::BTreeMap<String, usize>,
    /// Successful answers by the replica that gave them (X-Pod).
    pods: std::collections::BTreeMap<String, usize>,
    /// `weft-error` values of the proxy's own answers.
    weft_errors: std::collections::BTreeMap<String, usize>,
    secs: f64,
    /// The slowest request, and the slowest refused one (503 overloaded).
    max_secs: f64,
    max_overloaded_secs: f64,
}

impl Load {
    fn ok(&self) -> usize {
        self.statuses.get("200").copied().unwrap_or(0)
    }
    fn total(&self) -> usize {
        self.statuses.values().sum()
    }
}

fn load(tb: &weft_testbed::Testbed, method: &str, url: &str, n: usize, concurrency: usize) -> Load {
    let script = r#"
import collections, http.client, json, sys, threading, time, urllib.parse
method, url, n, c = sys.argv[1], urllib.parse.urlsplit(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
path = url.path + ("?" + url.query if url.query else "")
lock = threading.Lock()
statuses, pods, errors = collections.Counter(), collections.Counter(), collections.Counter()
slowest = [0.0, 0.0]
def worker(count):
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=20)
    for _ in range(count):
        start = time.monotonic()
        try:
            conn.request(method, path, body=b"order" if method == "POST" else None)
            resp = conn.getresponse(); resp.read()
            status, pod, err = str(resp.status), resp.getheader("X-Pod"), resp.getheader("weft-error")
        except Exception:
            status, pod, err = "error", None, None
            conn.close()
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=20)
        took = time.monotonic() - start
        with lock:
            statuses[status] += 1
            if status == "200" and pod:
                pods[pod] += 1
            if err:
                errors[err] += 1
            slowest[0] = max(slowest[0], took)
            if err == "overloaded":
                slowest[1] = max(slowest[1], took)
start = time.monotonic()
threads = [threading.Thread(target=worker, args=(n // c + (1 if i < n % c else 0),)) for i in range(c)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"statuses": statuses, "pods": pods, "weft_errors": errors,
                  "secs": time.monotonic() - start, "max_secs": slowest[0], "max_overloaded_secs": slowest[1]}))
"#;
    let (n, c) = (n.to_string(), concurrency.to_string());
    let out = exec_ok(
        tb,
        "client",
        &[&python(), "-c", script, method, url, &n, &c],
    );
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Waits (bounded) until the client's proxy balances `service` over all its replicas: until
/// discovery's answer is in, requests go where the app sent them (the node's DNAT). The warm-up
/// requests ask for /stats, which the fault knobs leave alone.
fn wait_balanced(tb: &weft_testbed::Testbed, service: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let upstream = format!("{service}.default:{PORT}");
    let url = format!("http://{service}:{PORT}/stats");
    loop {
        exec(
            tb,
            "client",
            &["curl", "-sS", "-o", "/dev/null", "-m", "5", &url],
        );
        let text = metrics(tb, "client");
        let known = tb
            .pods()
            .into_iter()
            .filter(|p| p.labels.get("app").map(String::as_str) == Some(service))
            .all(|p| {
                let label = format!(r#"endpoint="{}:{PORT}""#, p.ip);
                text.lines().any(|l| {
                    l.starts_with("weft_endpoint_requests_total")
                        && l.contains(&format!(r#"upstream="{upstream}""#))
                        && l.contains(&label)
                })
            });
        if known {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the client's proxy never learnt {service}'s endpoints:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Requests the client's proxy balanced to `pod` of `upstream`.
fn endpoint_requests(tb: &weft_testbed::Testbed, upstream: &str, pod: &str) -> f64 {
    let ip = tb
        .pods()
        .into_iter()
        .find(|p| p.name == pod)
        .unwrap_or_else(|| panic!("no pod {pod}"))
        .ip;
    counter(
        tb,
        "client",
        "weft_endpoint_requests_total",
        &[
            ("upstream", upstream),
            ("endpoint", &format!("{ip}:{PORT}")),
        ],
    )
}

/// One replica of three answers 503 to half its requests, at random (seeded): the default
/// retries hide its failures from the app, and five failures in a row — about every 60 of its
/// requests at p = 0.5 — eject it, so its share of the traffic falls far below a third.
#[test]
fn a_replica_failing_half_its_requests_is_retried_around_and_ejected() {
    let tb = up_replicas(&[replicas(
        "web",
        &[&[], &[], &["--fault-fail-random", "0.5"]],
        &[],
    )]);
    wait_balanced(&tb, "web");
    let upstream = format!("web.default:{PORT}");
    let seen = load(&tb, "GET", &format!("http://web:{PORT}/echo"), 3000, 4);
    let success = seen.ok() as f64 / seen.total() as f64;
    let attempts: Vec<f64> = ["web-0", "web-1", "web-2"]
        .iter()
        .map(|p| endpoint_requests(&tb, &upstream, p))
        .collect();
    let (bad, all) = (attempts[2], attempts.iter().sum::<f64>());
    let share = bad / all;
    let ejections = counter(
        &tb,
        "client",
        "weft_breaker_state_changes_total",
        &[("upstream", &upstream), ("state", "open")],
    );
    let retries = counter(
        &tb,
        "client",
        "weft_retry_total",
        &[("upstream", &upstream)],
    );
    println!(
        "failing replica: success {:.4}% over {} requests in {:.1}s; attempts by replica \
         {attempts:?}, web-2's share {:.1}%; {ejections} ejections, {retries} retries; \
         answers by pod {:?}",
        success * 100.0,
        seen.total(),
        seen.secs,
        share * 100.0,
        seen.pods
    );
    assert!(seen.total() >= 2000, "{seen:?}");
    assert!(success >= 0.999, "{seen:?}");
    // Only web-2 ever fails, so every ejection of the upstream is web-2's.
    assert!(ejections >= 1.0, "{}", metrics(&tb, "client"));
    // Balancing alone (failures priced as slow answers) leaves a replica failing half its
    // requests 18-24% of the attempts; ejected for 30 s after about 30-60 of them, it gets a
    // few percent. Each healthy replica takes several times its share.
    assert!(share < 0.12, "web-2's share {share}: {attempts:?}");
    assert!(
        attempts[0].min(attempts[1]) > 3.0 * bad,
        "the healthy replicas took {attempts:?}"
    );
    assert!(
        retries >= 1.0 && retries <= bad,
        "retries {retries}, web-2 {bad}"
    );
}

/// Service annotations, read by discovery and applied per request by the client's proxy: a
/// per-try timeout moves requests off a hanging replica; a retry budget stops a retry storm
/// when every replica fails; an in-flight limit refuses the excess at once; POSTs are retried
/// only once the Service allows it, a change made live.
#[test]
fn service_annotations_set_timeouts_budgets_limits_and_post_retries_live() {
    let mut tb = up_replicas(&[
        replicas(
            "hang",
            &[&[], &[], &["--fault-hang"]],
            &[("per-try-timeout", "500ms"), ("timeout", "3s")],
        ),
        replicas(
            "down",
            &[&["--fault-fail-ratio", "1"] as &[&str]; 3],
            &[("retry-budget", "0.1"), ("retry-budget-min-rps", "1")],
        ),
        replicas(
            "busy",
            &[&[]],
            &[("max-in-flight", "2"), ("max-pending", "0")],
        ),
        replicas(
            "orders",
            &[&[], &[], &["--fault-fail-ratio", "1"]],
            // Keep the failing replica in, so that POSTs keep meeting it.
            &[("breaker-failures", "100000")],
        ),
    ]);

    for service in ["hang", "down", "busy", "orders"] {
        wait_balanced(&tb, service);
    }
    // The hanging replica: each attempt on it gives up after 500 ms and moves elsewhere.
    let hang = load(&tb, "GET", &format!("http://hang:{PORT}/echo"), 60, 2);
    println!("hanging replica: {hang:?}");
    assert_eq!(hang.ok(), hang.total(), "{hang:?}");
    assert!(!hang.pods.contains_key("hang-2"), "{hang:?}");
    assert!(hang.max_secs < 3.0, "bounded by the 3 s timeout: {hang:?}");
    let per_try = counter(
        &tb,
        "client",
        "weft_timeout_total",
        &[
            ("upstream", &format!("hang.default:{PORT}")),
            ("kind", "per_try"),
        ],
    );
    assert!(per_try >= 1.0, "{}", metrics(&tb, "client"));
    // Abandoned attempts are failures: five in a row eject the hanging replica.
    let ejected = counter(
        &tb,
        "client",
        "weft_breaker_state_changes_total",
        &[
            ("upstream", &format!("hang.default:{PORT}")),
            ("state", "open"),
        ],
    );
    assert!(ejected >= 1.0, "{}", metrics(&tb, "client"));

    // POSTs are not retried, so one sent to the hanging replica would end in a 504; ejected,
    // it gets none (the breaker's state outlives the connections that tripped it).
    let posts = load(&tb, "POST", &format!("http://hang:{PORT}/echo"), 12, 1);
    println!("POSTs to the hanging service after its ejection: {posts:?}");
    assert_eq!(posts.ok(), posts.total(), "{posts:?}");
    // Every replica fails: retries stay within 10% of requests + 1/s over the 10 s window.
    let n = 400;
    let down = load(&tb, "GET", &format!("http://down:{PORT}/echo"), n, 4);
    let upstream = format!("down.default:{PORT}");
    let retries = counter(
        &tb,
        "client",
        "weft_retry_total",
        &[("upstream", &upstream)],
    );
    let exhausted = counter(
        &tb,
        "client",
        "weft_retry_budget_exhausted_total",
        &[("upstream", &upstream)],
    );
    let windows = (down.secs / 10.0).ceil() + 1.0;
    let allowed = 0.1 * n as f64 + 10.0 * windows;
    println!(
        "retry storm: {n} requests in {:.1}s, {retries} retries (budget {allowed:.0}, \
         unbudgeted {}), {exhausted} refused by the budget",
        down.secs,
        2 * n
    );
    assert_eq!(down.ok(), 0, "{down:?}");
    assert!(
        retries >= 1.0 && retries <= allowed,
        "{retries} > {allowed}"
    );
    assert!(exhausted >= 1.0, "{}", metrics(&tb, "client"));

    // Two in flight, none waiting: of 8 concurrent slow requests some are refused at once.
    let busy = load(
        &tb,
        "GET",
        &format!("http://busy:{PORT}/slow?ms=2000"),
        8,
        8,
    );
    println!("over the limit: {busy:?}");
    let overloaded = busy.weft_errors.get("overloaded").copied().unwrap_or(0);
    assert!(busy.ok() >= 2, "{busy:?}");
    assert!(overloaded >= 1, "{busy:?}");
    assert_eq!(busy.ok() + overloaded, busy.total(), "{busy:?}");
    assert!(
        busy.max_overloaded_secs < 1.0,
        "refused, not queued: {busy:?}"
    );
    // The Service raises its limit live: the same burst is served in full, no restart.
    tb.set_service_annotation("busy", "weft.io/max-in-flight", "8")
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let raised = loop {
        let raised = load(&tb, "GET", &format!("http://busy:{PORT}/slow?ms=500"), 8, 8);
        if raised.ok() == raised.total() || std::time::Instant::now() > deadline {
            break raised;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    println!("after max-in-flight 8, set live: {raised:?}");
    assert_eq!(raised.ok(), raised.total(), "{raised:?}");

    // POSTs meeting the failing replica are not retried...
    let url = format!("http://orders:{PORT}/echo");
    let before = load(&tb, "POST", &url, 60, 1);
    println!("POSTs before retry-non-idempotent: {before:?}");
    assert!(
        before.statuses.get("503").copied().unwrap_or(0) >= 1,
        "{before:?}"
    );
    let upstream = format!("orders.default:{PORT}");
    assert_eq!(
        counter(
            &tb,
            "client",
            "weft_retry_total",
            &[("upstream", &upstream)]
        ),
        0.0
    );
    // ... until the Service says they may be: no restart, the next requests follow it.
    tb.set_service_annotation("orders", "weft.io/retry-non-idempotent", "true")
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let after = loop {
        let after = load(&tb, "POST", &url, 60, 1);
        if after.ok() == after.total() || std::time::Instant::now() > deadline {
            break after;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    println!("POSTs after retry-non-idempotent: {after:?}");
    assert_eq!(after.ok(), after.total(), "{after:?}");
    assert!(
        counter(
            &tb,
            "client",
            "weft_retry_total",
            &[("upstream", &upstream)]
        ) >= 1.0
    );
}
