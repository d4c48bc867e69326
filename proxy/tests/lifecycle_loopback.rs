//! The pod lifecycle as the kubelet drives it, against the real `weft-proxy` binary in a
//! throwaway network namespace (see `support`): the app's probes answered on the admin port, and
//! a SIGTERM that arrives together with the app's (a classic sidecar), after which the app's
//! outbound calls are still served while new inbound connections are refused. Needs root, `ip`,
//! iptables and setpriv.

mod support;

use std::time::{Duration, Instant};

use http_body_util::Full;
use support::*;
use tokio::net::TcpStream;

/// The kubelet's HTTP and TCP probes of the app, sent to the admin port, reach the app through
/// the proxy: the probe passes while the app answers, and fails (503, with the reason) when it
/// does not; an undeclared probe is 404.
#[test]
fn app_probes_run_against_the_app() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        spawn_echo(listen("127.0.0.9:8090").await, false, Duration::ZERO);
        let probes = r#"{
            "web/readiness": {"httpGet": {"port": 8090, "path": "/healthz"}},
            "web/liveness": {"tcpSocket": {"port": 8090}},
            "web/startup": {"tcpSocket": {"port": 8091}, "timeoutSeconds": 1}
        }"#;
        let _proxy = Proxy::start(
            &name,
            &[("WEFT_APP_PROBES", probes), ("WEFT_POD_IP", "127.0.0.9")],
        )
        .await;
        assert_eq!(
            admin_get("/app-health/web/readiness").await.unwrap(),
            (200, "ok".into())
        );
        assert_eq!(admin_get("/app-health/web/liveness").await.unwrap().0, 200);
        let (status, body) = admin_get("/app-health/web/startup").await.unwrap();
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("cannot connect to 127.0.0.9:8091"), "{body}");
        assert_eq!(admin_get("/app-health/api/readiness").await.unwrap().0, 404);
    });
}

#[test]
fn a_bad_probe_setting_stops_start_up_naming_it() {
    let out = std::process::Command::new(BIN)
        .env(
            "WEFT_APP_PROBES",
            r#"{"web/liveness": {"httpGet": {"port": "http"}}}"#,
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("invalid WEFT_APP_PROBES="), "{stderr}");
}

/// SIGTERM with the app still running (a classic sidecar): /ready turns 503 and new inbound
/// connections are refused, but the app's new outbound calls are served until the proxy has been
/// quiet for WEFT_SHUTDOWN_QUIET_PERIOD; then it exits 0.
#[test]
fn sigterm_keeps_serving_the_apps_outbound_calls_until_quiet() {
    let ns = Netns::new();
    let name = ns.name.clone();
    ns.run(move || async move {
        spawn_echo(listen("127.0.0.2:8092").await, false, Duration::ZERO);
        spawn_echo(listen("127.0.0.3:8093").await, false, Duration::ZERO);
        let mut proxy = Proxy::start(&name, &[("WEFT_SHUTDOWN_QUIET_PERIOD", "2s")]).await;
        proxy.sigterm();
        let signalled = Instant::now();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (status, _) = admin_get("/ready").await.unwrap();
        assert_eq!(status, 503, "/ready while draining");
        assert!(
            TcpStream::connect("127.0.0.3:8093").await.is_err(),
            "new inbound connections must be refused once draining"
        );
        // The app, shutting down, calls out: twice, a second apart, each on a new connection.
        let mut last_call = Instant::now();
        for (i, call) in ["/first", "/second"].into_iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let mut client = h1_client("127.0.0.2:8092").await;
            let req = http::Request::get(call)
                .header("host", "app")
                .body(Full::default())
                .unwrap();
            let resp = within(call, client.send_request(req)).await.unwrap();
            assert_eq!(resp.status(), 200, "{call} during shutdown");
            last_call = Instant::now();
        }
        assert_eq!(proxy.wait_exit().await, Some(0));
        // Two seconds of quiet after the last connection, less the polling's slack.
        let quiet = last_call.elapsed();
        assert!(
            quiet >= Duration::from_millis(1500),
            "exited {quiet:?} after the last call, before its quiet period"
        );
        assert!(
            signalled.elapsed() < Duration::from_secs(9),
            "grace not needed"
        );
    });
}

/// `weft-proxy wait-ready` (a classic sidecar's postStart hook) returns once /ready is 200, and
/// fails with the reason when the proxy never gets ready in time.
#[test]
fn wait_ready_waits_for_the_proxy() {
    let ns = Netns::new();
    let name = ns.name.clone();
    let wait = move |timeout: &str| {
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &name,
                BIN,
                "wait-ready",
                "--timeout",
                timeout,
            ])
            .output()
            .unwrap()
    };
    let out = wait("1s");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/ready did not answer 200 within 1s"),
        "{stderr}"
    );
    let name = ns.name.clone();
    ns.run(move || async move {
        let _proxy = Proxy::start(&name, &[]).await;
        let out = tokio::task::spawn_blocking(move || wait("5s"))
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}
