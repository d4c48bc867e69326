//! The one error type of the testbed library; every variant names what it was doing and to what.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("manifests: {0}")]
    Manifest(String),

    #[error("{kind} {namespace}/{name}: {reason}")]
    Object {
        kind: String,
        namespace: String,
        name: String,
        reason: String,
    },

    #[error("running `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },

    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        command: String,
        status: String,
        stderr: String,
    },

    #[error("`{command}` did not finish within {timeout:?}")]
    Timeout { command: String, timeout: Duration },

    #[error("pod {pod}: init container {container} exited with {status}; log tail:\n{log_tail}")]
    InitFailed {
        pod: String,
        container: String,
        status: String,
        log_tail: String,
    },

    #[error(
        "pod {pod}: container {container}'s postStart hook `{hook}` failed ({outcome}); log tail:\n{log_tail}"
    )]
    HookFailed {
        pod: String,
        container: String,
        hook: String,
        outcome: String,
        log_tail: String,
    },

    #[error(
        "pod {pod}: container {container} not ready within {timeout:?}: {last}; log tail:\n{log_tail}"
    )]
    NotReady {
        pod: String,
        container: String,
        timeout: Duration,
        last: String,
        log_tail: String,
    },

    #[error("admission webhook weft-injector denied pod {pod}: {message}")]
    Denied { pod: String, message: String },

    #[error("admitting pod {pod} through weft-injector: {reason}")]
    Admission { pod: String, reason: String },

    #[error("no pod matches `{0}`")]
    NoSuchPod(String),

    #[error("`{query}` matches several pods: {candidates}")]
    AmbiguousPod { query: String, candidates: String },

    #[error("pod {pod} has no container named `{container}`")]
    NoSuchContainer { pod: String, container: String },

    #[error("no service `{0}` (give name or name.namespace)")]
    NoSuchService(String),

    #[error("no workload `{0}` that can be scaled (Deployment, ReplicaSet or StatefulSet)")]
    NoSuchWorkload(String),

    #[error("address pool {pool} exhausted")]
    AddressesExhausted { pool: String },

    #[error("weft-proxy binary: {0}")]
    ProxyBinary(String),

    #[error("{what} {path}: {source}")]
    Io {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("network namespace {netns}: {reason}")]
    Netns { netns: String, reason: String },

    #[error("instance state {path}: {reason}")]
    State { path: PathBuf, reason: String },

    #[error("invalid instance name `{0}`: use 1-40 of a-z, 0-9 and -")]
    InstanceName(String),
}

impl TestbedError {
    pub(crate) fn io(
        what: impl Into<String>,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        TestbedError::Io {
            what: what.into(),
            path: path.into(),
            source,
        }
    }

    pub(crate) fn object(
        kind: &str,
        namespace: &str,
        name: &str,
        reason: impl Into<String>,
    ) -> Self {
        TestbedError::Object {
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            reason: reason.into(),
        }
    }
}
