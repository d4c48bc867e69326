//! Admission through the running webhook, as the API server does it: every application pod is
//! sent to the weft-injector pod as an AdmissionReview v1 (CREATE, the pod template turned into
//! the Pod object with its name and namespace), over HTTPS from the node's network namespace to
//! the injector's Service, the server verified as `weft-injector.weft.svc` against the CA the
//! injector wrote out (`--write-ca`). The answer's JSONPatch is applied to the pod, and the
//! patched pod is what runs; a denial fails `up` with the webhook's message.
//!
//! The client is curl (already a testbed requirement): one process per review, and no TLS stack
//! in the testbed itself. Every review and answer is kept in the instance's `admission/`
//! directory for a look after a failure.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::control_plane::{INJECTOR_HOST, INJECTOR_PORT};
use crate::error::TestbedError;
use crate::process::{describe, describe_status, run_bounded};
use crate::workload::Workload;

/// Bound on one review (the API server's `timeoutSeconds` is 5 in deploy/manifests; curl also
/// pays for a TLS handshake per review).
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);
/// Between attempts to reach `/ready`.
const READY_RETRY: Duration = Duration::from_millis(100);

/// The running injector as the testbed calls it.
#[derive(Debug)]
pub struct Webhook {
    /// Where curl runs: the node namespace, which reaches every ClusterIP.
    node_netns: String,
    /// The injector Service's ClusterIP (`weft-injector.weft.svc` resolves to it for curl).
    cluster_ip: Ipv4Addr,
    /// The CA the injector wrote (`--write-ca`).
    ca_file: PathBuf,
    /// Reviews and answers, one pair of files per review.
    dir: PathBuf,
    next_uid: AtomicU32,
}

impl Webhook {
    pub fn new(node_netns: &str, cluster_ip: Ipv4Addr, ca_file: &Path, dir: &Path) -> Webhook {
        Webhook {
            node_netns: node_netns.to_owned(),
            cluster_ip,
            ca_file: ca_file.to_owned(),
            dir: dir.to_owned(),
            next_uid: AtomicU32::new(1),
        }
    }

    /// Returns `Ok(Ok(()))` once `GET /ready` answers 200 over verified HTTPS; at `deadline`,
    /// the last reason it did not.
    pub fn wait_ready(&self, deadline: Instant) -> Result<Result<(), String>, TestbedError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| TestbedError::io("creating", &self.dir, e))?;
        let answer = self.dir.join("ready.txt");
        loop {
            let last = match self.curl("/ready", None, &answer)? {
                Ok(200) => return Ok(Ok(())),
                Ok(status) => format!("HTTP {status}"),
                Err(reason) => reason,
            };
            if Instant::now() >= deadline {
                return Ok(Err(format!(
                    "GET https://{INJECTOR_HOST}:{INJECTOR_PORT}/ready did not answer 200: {last}"
                )));
            }
            std::thread::sleep(READY_RETRY);
        }
    }

    /// The pod the webhook admits for replica `pod_name` of `workload`, with its patch applied.
    pub fn admit(&self, workload: &Workload, pod_name: &str) -> Result<Value, TestbedError> {
        let pod = pod_object(workload, pod_name);
        let subject = format!("{}/{pod_name}", workload.namespace);
        let n = self.next_uid.fetch_add(1, Ordering::Relaxed);
        let uid = format!("00000000-0000-4000-8000-{n:012}");
        let review = review(&uid, &workload.namespace, pod_name, &pod);
        let request = self.dir.join(format!("review-{n}-{pod_name}.json"));
        let answer = self.dir.join(format!("answer-{n}-{pod_name}.json"));
        std::fs::write(&request, review.to_string())
            .map_err(|e| TestbedError::io("writing", &request, e))?;
        let failed = |reason: String| TestbedError::Admission {
            pod: subject.clone(),
            reason,
        };
        match self.curl("/inject", Some(&request), &answer)? {
            Ok(200) => {}
            Ok(status) => {
                let body = std::fs::read_to_string(&answer).unwrap_or_default();
                return Err(failed(format!("HTTP {status}: {}", body.trim())));
            }
            Err(reason) => return Err(failed(reason)),
        }
        let body = std::fs::read(&answer).map_err(|e| TestbedError::io("reading", &answer, e))?;
        apply_answer(&uid, &body, pod, &subject)
    }

    /// One HTTPS request with curl in the node namespace: POST `body_file` (JSON) when given,
    /// else GET. The response body goes to `answer`; the outer error is about running curl, the
    /// inner one why no HTTP status came back.
    fn curl(
        &self,
        path: &str,
        body_file: Option<&Path>,
        answer: &Path,
    ) -> Result<Result<u16, String>, TestbedError> {
        let url = format!("https://{INJECTOR_HOST}:{INJECTOR_PORT}{path}");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.node_netns, "curl"])
            .args(["--silent", "--show-error", "--max-time"])
            .arg(REVIEW_TIMEOUT.as_secs().to_string())
            .arg("--cacert")
            .arg(&self.ca_file)
            .arg("--resolve")
            .arg(format!(
                "{INJECTOR_HOST}:{INJECTOR_PORT}:{}",
                self.cluster_ip
            ))
            .args(["--write-out", "%{http_code}", "--output"])
            .arg(answer);
        if let Some(file) = body_file {
            cmd.args([
                "--header",
                "Content-Type: application/json",
                "--data-binary",
            ])
            .arg(format!("@{}", file.display()));
        }
        cmd.arg(&url);
        let command = describe(&cmd);
        let output = run_bounded(cmd, REVIEW_TIMEOUT + Duration::from_secs(2))?;
        let status = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            return Ok(Err(format!(
                "`{command}` failed ({}): {stderr}",
                describe_status(&output.status)
            )));
        }
        Ok(status
            .parse()
            .map_err(|_| format!("`{command}` printed no HTTP status: {status:?}")))
    }
}

/// The Pod the API server would review for replica `pod_name`: the template's metadata with the
/// pod's name and namespace, and its spec, every field as written.
pub fn pod_object(workload: &Workload, pod_name: &str) -> Value {
    let mut metadata = workload
        .template
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    metadata.insert("name".into(), json!(pod_name));
    metadata.insert("namespace".into(), json!(workload.namespace));
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": workload.template.get("spec").cloned().unwrap_or_else(|| json!({})),
    })
}

/// An AdmissionReview v1 for the creation of `pod`, as the API server sends it.
fn review(uid: &str, namespace: &str, name: &str, pod: &Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": name,
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "weft-testbed", "groups": ["system:authenticated"]},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    })
}

/// `pod` as the answer `body` to review `uid` admits it: patched when it carries a JSONPatch,
/// an error naming the pod when it is denied or not an answer to that review.
fn apply_answer(
    uid: &str,
    body: &[u8],
    mut pod: Value,
    subject: &str,
) -> Result<Value, TestbedError> {
    let failed = |reason: String| TestbedError::Admission {
        pod: subject.to_owned(),
        reason,
    };
    let answer: Value =
        serde_json::from_slice(body).map_err(|e| failed(format!("the answer is not JSON: {e}")))?;
    let response = answer
        .get("response")
        .ok_or_else(|| failed(format!("the answer has no response: {answer}")))?;
    if response.get("uid").and_then(Value::as_str) != Some(uid) {
        return Err(failed(format!(
            "the answer's response.uid is {}, not the review's {uid}",
            response.get("uid").unwrap_or(&Value::Null)
        )));
    }
    for warning in response
        .get("warnings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        tracing::warn!(pod = %subject, "admission warning: {}", warning.as_str().unwrap_or_default());
    }
    if response.get("allowed").and_then(Value::as_bool) != Some(true) {
        let message = response
            .pointer("/status/message")
            .and_then(Value::as_str)
            .unwrap_or("(no message)");
        return Err(TestbedError::Denied {
            pod: subject.to_owned(),
            message: message.to_owned(),
        });
    }
    let Some(encoded) = response.get("patch").and_then(Value::as_str) else {
        return Ok(pod);
    };
    if response.get("patchType").and_then(Value::as_str) != Some("JSONPatch") {
        return Err(failed(format!(
            "a patch of type {}, not JSONPatch",
            response.get("patchType").unwrap_or(&Value::Null)
        )));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| failed(format!("the patch is not base64: {e}")))?;
    let patch: json_patch::Patch = serde_json::from_slice(&bytes)
        .map_err(|e| failed(format!("the patch is not a JSON patch: {e}")))?;
    json_patch::patch(&mut pod, &patch.0)
        .map_err(|e| failed(format!("the patch does not apply to the pod: {e}")))?;
    Ok(pod)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(response: Value) -> Vec<u8> {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
            .to_string()
            .into_bytes()
    }

    fn pod() -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-0", "namespace": "shop"},
               "spec": {"containers": [{"name": "app", "image": "x"}]}})
    }

    #[test]
    fn a_json_patch_is_applied_to_the_pod() {
        let ops = json!([
            {"op": "add", "path": "/metadata/annotations", "value": {"weft.io/injected": "0.1.0"}},
            {"op": "add", "path": "/spec/containers/0", "value": {"name": "weft-proxy", "image": "weft-proxy"}}
        ]);
        let encoded = base64::engine::general_purpose::STANDARD.encode(ops.to_string());
        let body = answer(
            json!({"uid": "u1", "allowed": true, "patchType": "JSONPatch", "patch": encoded}),
        );
        let patched = apply_answer("u1", &body, pod(), "shop/web-0").unwrap();
        assert_eq!(
            patched["metadata"]["annotations"]["weft.io/injected"],
            "0.1.0"
        );
        assert_eq!(patched["spec"]["containers"][0]["name"], "weft-proxy");
        assert_eq!(patched["spec"]["containers"][1]["name"], "app");
    }

    #[test]
    fn allowed_without_a_patch_is_the_pod_as_sent() {
        let body = answer(json!({"uid": "u2", "allowed": true}));
        assert_eq!(
            apply_answer("u2", &body, pod(), "shop/web-0").unwrap(),
            pod()
        );
    }

    #[test]
    fn a_denial_names_the_pod_and_carries_the_message() {
        let body = answer(json!({"uid": "u3", "allowed": false,
            "status": {"code": 403, "message": "Pod shop/web-0: weft.io/timeout \"soon\" is not a duration"}}));
        let err = apply_answer("u3", &body, pod(), "shop/web-0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("denied pod shop/web-0"), "{err}");
        assert!(err.contains("weft.io/timeout \"soon\""), "{err}");
    }

    #[test]
    fn an_answer_to_another_review_or_a_broken_patch_is_refused() {
        let body = answer(json!({"uid": "other", "allowed": true}));
        let err = apply_answer("u4", &body, pod(), "shop/web-0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not the review's u4"), "{err}");
        let encoded = base64::engine::general_purpose::STANDARD
            .encode(json!([{"op": "remove", "path": "/spec/volumes/3"}]).to_string());
        let body = answer(
            json!({"uid": "u5", "allowed": true, "patchType": "JSONPatch", "patch": encoded}),
        );
        let err = apply_answer("u5", &body, pod(), "shop/web-0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not apply"), "{err}");
    }

    #[test]
    fn the_reviewed_pod_is_the_template_with_name_and_namespace() {
        let workload = Workload {
            kind: crate::workload::WorkloadKind::Deployment,
            name: "web".into(),
            namespace: "shop".into(),
            replicas: 1,
            spec: Default::default(),
            template: json!({"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "app", "image": "x", "stdin": true}]}}),
            service_name: None,
        };
        let pod = pod_object(&workload, "web-abc-0");
        assert_eq!(pod["kind"], "Pod");
        assert_eq!(pod["metadata"]["name"], "web-abc-0");
        assert_eq!(pod["metadata"]["namespace"], "shop");
        assert_eq!(pod["metadata"]["labels"]["app"], "web");
        assert_eq!(pod["spec"]["containers"][0]["stdin"], true);
        let review = review("u6", "shop", "web-abc-0", &pod);
        assert_eq!(review["request"]["operation"], "CREATE");
        assert_eq!(review["request"]["object"], pod);
    }
}
