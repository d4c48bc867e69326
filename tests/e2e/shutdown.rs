//! SIGTERM drains: a slow request already in flight through both proxies completes with its full
//! answer, and the proxies exit within their grace period afterwards.

use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn sigterm_drains_in_flight_request() {
    require(&[("curl", "curl")]);
    let tb = up(&[
        client_pod().annotate("shutdown-grace", "15s"),
        http_echo_pod("server", 8080).annotate("shutdown-grace", "15s"),
    ]);
    let ip = tb.service_ip("server").expect("server has a ClusterIP");
    let scratch = Scratch::new("drain");
    let (body, status) = (scratch.path("body"), scratch.path("status"));
    let script = format!(
        "curl -sS --max-time 30 -o '{}' -w '%{{http_code}}' http://{ip}:8080/slow?ms=4000 > '{}.tmp' 2>&1; mv '{}.tmp' '{}'",
        body.display(),
        status.display(),
        status.display(),
        status.display()
    );
    let _curl = tb
        .spawn("client", &["sh", "-c", &script])
        .expect("start curl in the client pod");

    // Signal only once the app holds the request, so it is truly in flight through both proxies.
    wait_for(
        Duration::from_secs(20),
        "the slow request to reach the app",
        || logs(&tb, "server", "app").contains("slow request started"),
    );
    for pod in ["client", "server"] {
        tb.signal(pod, "weft-proxy", libc::SIGTERM)
            .unwrap_or_else(|e| panic!("SIGTERM to {pod}'s proxy: {e}"));
    }

    wait_for(Duration::from_secs(30), "curl to finish", || {
        status.exists()
    });
    let code = std::fs::read_to_string(&status).unwrap_or_default();
    assert_eq!(
        code.trim(),
        "200",
        "in-flight request was not drained to completion: {code}"
    );
    let answer = std::fs::read_to_string(&body).unwrap_or_default();
    assert_eq!(
        answer, "slept 4000 ms\n",
        "in-flight request's answer was cut"
    );

    for pod in ["client", "server"] {
        let exit = tb
            .wait_exit(pod, "weft-proxy", Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{pod}'s proxy: {e}"));
        assert_eq!(
            exit,
            Some(0),
            "{pod}'s proxy did not exit cleanly after draining (None: still running)"
        );
    }
}

/// Polls `done` every 100 ms until it holds, failing the test after `limit`.
fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
