//! One running pod: its namespace, its containers as processes, and its readiness.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::cleanup::etc_netns_dir;
use crate::container::{ContainerSpec, IntOrString, PodFacts, PodSpec, Probe};
use crate::error::TestbedError;
use crate::hosts;
use crate::lookup::PodKey;
use crate::probe;
use crate::process::{child_pid, describe, describe_status, run_bounded, stop_group, wait_until};
use crate::volumes::{PodVolumes, VolumeSource};

/// What the library tells callers about a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub name: String,
    pub namespace: String,
    pub ip: Ipv4Addr,
    pub labels: BTreeMap<String, String>,
    /// As admitted (`weft.io/injected` on a pod the webhook meshed).
    pub annotations: BTreeMap<String, String>,
    /// The controller (Deployment, StatefulSet, ...) that made it; None for a bare Pod.
    pub owner: Option<String>,
}

#[derive(Debug)]
pub struct Container {
    pub spec: ContainerSpec,
    pub init: bool,
    pub log: PathBuf,
    pub pid: Option<i32>,
    child: Mutex<Option<Child>>,
    exit: Mutex<Option<ExitStatus>>,
    /// Whether its startupProbe has passed (true at once without one): until then the kubelet
    /// runs neither its liveness nor its readiness probe.
    started: Mutex<bool>,
}

impl Container {
    /// Exit status if the process has exited (reaping it when it just did).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        let mut exit = self.exit.lock().unwrap_or_else(|p| p.into_inner());
        if exit.is_none() {
            let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = child.as_mut() {
                *exit = c.try_wait().ok().flatten();
            }
        }
        *exit
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// An init container running beside the app containers (`restartPolicy: Always`).
    pub fn is_sidecar(&self) -> bool {
        self.init && self.spec.is_sidecar()
    }

    /// A container the kubelet keeps running (and probes): app containers and native sidecars.
    fn is_long_running(&self) -> bool {
        !self.init || self.spec.is_sidecar()
    }

    fn new(spec: ContainerSpec, init: bool, log: PathBuf, child: Child) -> Self {
        let started = spec.startup_probe.is_none();
        Container {
            spec,
            init,
            log,
            pid: Some(child_pid(&child)),
            child: Mutex::new(Some(child)),
            exit: Mutex::new(None),
            started: Mutex::new(started),
        }
    }

    fn has_started(&self) -> bool {
        *self.started.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_started(&self) {
        *self.started.lock().unwrap_or_else(|p| p.into_inner()) = true;
    }
}

/// What a pod is, as `kubectl get pod` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodPhase {
    Running,
    /// Every app container exited 0 (restartPolicy Never or OnFailure).
    Succeeded,
    /// Every app container exited, at least one not with 0 (restartPolicy Never or OnFailure).
    Failed,
}

/// Exit code as a shell reports it: the code, or 128 + the signal that ended it.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// Everything a pod needs to know about where it runs.
pub struct PodContext<'a> {
    pub node_name: &'a str,
    /// The node's network namespace, where the kubelet's HTTP and TCP probes come from.
    pub node_netns: &'a str,
    pub log_dir: &'a Path,
    /// Built binaries by name (see `proxy_bin::BUILT`).
    pub binaries: &'a BTreeMap<String, PathBuf>,
    /// Where pod volumes are written (one directory per pod).
    pub volumes_dir: &'a Path,
    /// Tokens and ConfigMaps for those volumes.
    pub volume_source: &'a dyn VolumeSource,
}

#[derive(Debug)]
pub struct Pod {
    pub info: PodInfo,
    pub spec: PodSpec,
    /// Index of the workload that made it, and its replica index there.
    pub workload: usize,
    pub replica: usize,
    pub netns: String,
    pub hostname: Option<String>,
    pub subdomain: Option<String>,
    pub containers: Vec<Container>,
    pub ready: bool,
}

impl PodKey for Pod {
    fn pod_name(&self) -> &str {
        &self.info.name
    }
    fn pod_namespace(&self) -> &str {
        &self.info.namespace
    }
    fn pod_owner(&self) -> Option<&str> {
        self.info.owner.as_deref()
    }
}

impl Pod {
    /// Writes /etc/netns/<netns>/{hosts,resolv.conf}. In place (same inode), so processes that
    /// already have them bind-mounted see updates too.
    pub fn write_dns(&self, records: &[hosts::ServiceRecord]) -> Result<(), TestbedError> {
        let dir = etc_netns_dir(&self.netns);
        std::fs::create_dir_all(&dir).map_err(|e| TestbedError::io("creating", &dir, e))?;
        let record = hosts::PodRecord {
            name: &self.info.name,
            namespace: &self.info.namespace,
            ip: self.info.ip,
        };
        let hosts_path = dir.join("hosts");
        std::fs::write(&hosts_path, hosts::hosts_file(&record, records))
            .map_err(|e| TestbedError::io("writing", &hosts_path, e))?;
        let resolv_path = dir.join("resolv.conf");
        std::fs::write(&resolv_path, hosts::resolv_conf(&self.info.namespace))
            .map_err(|e| TestbedError::io("writing", &resolv_path, e))
    }

    /// The pod's service account, `default` when the spec names none (as Kubernetes does).
    pub fn service_account(&self) -> &str {
        self.spec
            .service_account_name
            .as_deref()
            .unwrap_or("default")
    }

    /// Runs the init containers in order, each to completion, then starts the others in order,
    /// as the kubelet does: a native sidecar (an init container with `restartPolicy: Always`)
    /// keeps running, and the next container starts only once its startupProbe passes (at once
    /// without one); a container's exec `postStart` hook returns before the next one starts, and
    /// a failing hook fails the container (and the pod).
    pub fn start(
        &mut self,
        ctx: &PodContext<'_>,
        init_timeout: Duration,
    ) -> Result<(), TestbedError> {
        let deadline = Instant::now() + init_timeout;
        let specs: Vec<(ContainerSpec, bool)> = self
            .spec
            .init_containers
            .iter()
            .map(|c| (c.clone(), true))
            .chain(self.spec.containers.iter().map(|c| (c.clone(), false)))
            .collect();
        let volumes = PodVolumes::materialise(
            &ctx.volumes_dir.join(&self.info.name),
            &self.spec.volumes,
            &self.info.namespace,
            self.service_account(),
            ctx.volume_source,
        )
        .map_err(|reason| {
            TestbedError::object("Pod", &self.info.namespace, &self.info.name, reason)
        })?;
        for (spec, init) in specs {
            let log = ctx
                .log_dir
                .join(format!("{}.{}.log", self.info.name, spec.name));
            let mut child = self.launch(&spec, &log, ctx, &volumes)?;
            let pid = child_pid(&child);
            if init && !spec.is_sidecar() {
                let status = match wait_until(&mut child, deadline) {
                    Some(status) => status,
                    None => {
                        stop_group(&mut child, Duration::ZERO);
                        return Err(TestbedError::InitFailed {
                            pod: self.info.name.clone(),
                            container: spec.name.clone(),
                            status: format!("no exit within {init_timeout:?}"),
                            log_tail: log_tail(&log),
                        });
                    }
                };
                // Reap any stragglers the init container left in its group.
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                if !status.success() {
                    return Err(TestbedError::InitFailed {
                        pod: self.info.name.clone(),
                        container: spec.name.clone(),
                        status: describe_status(&status),
                        log_tail: log_tail(&log),
                    });
                }
                let container = Container::new(spec, init, log, child);
                *container.exit.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
                self.containers.push(container);
                continue;
            }
            self.containers.push(Container::new(spec, init, log, child));
            let index = self.containers.len() - 1;
            if init {
                self.wait_started(index, ctx.node_netns, deadline)?;
            } else {
                self.run_post_start(index, ctx, deadline)?;
            }
        }
        Ok(())
    }

    /// Runs a native sidecar's startupProbe until it passes; the sidecar exiting or the
    /// deadline passing fails the pod's start.
    fn wait_started(
        &self,
        index: usize,
        node_netns: &str,
        deadline: Instant,
    ) -> Result<(), TestbedError> {
        let container = &self.containers[index];
        let Some(probe) = &container.spec.startup_probe else {
            return Ok(());
        };
        let fail = |status: String| TestbedError::InitFailed {
            pod: self.info.name.clone(),
            container: container.name().to_string(),
            status,
            log_tail: log_tail(&container.log),
        };
        loop {
            if let Some(status) = container.exit_status() {
                return Err(fail(format!(
                    "exited before its startupProbe passed ({})",
                    describe_status(&status)
                )));
            }
            let last = match self.run_probe(container, probe, node_netns)? {
                Ok(()) => {
                    container.set_started();
                    return Ok(());
                }
                Err(reason) => reason,
            };
            if Instant::now() >= deadline {
                return Err(fail(format!("startupProbe still failing: {last}")));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs the container's exec `postStart` hook in the pod as the container's user and waits
    /// for it; a hook that fails or outlives the deadline kills the container and fails the pod.
    fn run_post_start(
        &self,
        index: usize,
        ctx: &PodContext<'_>,
        deadline: Instant,
    ) -> Result<(), TestbedError> {
        let container = &self.containers[index];
        let hook = container.spec.post_start(ctx.binaries).map_err(|reason| {
            TestbedError::object("Pod", &self.info.namespace, &self.info.name, reason)
        })?;
        let Some(hook) = hook else {
            return Ok(());
        };
        let (uid, gid) = container.spec.identity(self.spec.security_context.as_ref());
        let timeout = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        let outcome = match run_bounded(in_pod_as(&self.netns, uid, gid, &hook), timeout) {
            Ok(output) if output.status.success() => return Ok(()),
            Ok(output) => format!(
                "{}: {}",
                describe_status(&output.status),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(e) => e.to_string(),
        };
        if let Some(child) = container
            .child
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            stop_group(child, Duration::ZERO);
        }
        Err(TestbedError::HookFailed {
            pod: self.info.name.clone(),
            container: container.name().to_string(),
            hook: hook.join(" "),
            outcome,
            log_tail: log_tail(&container.log),
        })
    }

    /// Starts an exited main container or native sidecar again with the same spec, appending to
    /// its log: what a kubelet does for `restartPolicy: Always`. A container still running is an error (signal
    /// it first), so a test always knows which process it is talking to.
    pub fn restart_container(
        &mut self,
        name: &str,
        ctx: &PodContext<'_>,
    ) -> Result<(), TestbedError> {
        let index = self
            .containers
            .iter()
            .position(|c| c.is_long_running() && c.name() == name)
            .ok_or_else(|| TestbedError::NoSuchContainer {
                pod: self.info.name.clone(),
                container: name.to_string(),
            })?;
        if self.containers[index].exit_status().is_none() {
            return Err(TestbedError::CommandFailed {
                command: format!("restart {}/{name}", self.info.name),
                status: "container still running".into(),
                stderr: "signal it and wait for it to exit first".into(),
            });
        }
        let volumes = PodVolumes::materialise(
            &ctx.volumes_dir.join(&self.info.name),
            &self.spec.volumes,
            &self.info.namespace,
            self.service_account(),
            ctx.volume_source,
        )
        .map_err(|reason| {
            TestbedError::object("Pod", &self.info.namespace, &self.info.name, reason)
        })?;
        let spec = self.containers[index].spec.clone();
        let log = self.containers[index].log.clone();
        let init = self.containers[index].init;
        let child = self.launch(&spec, &log, ctx, &volumes)?;
        self.containers[index] = Container::new(spec, init, log, child);
        self.run_post_start(index, ctx, Instant::now() + Duration::from_secs(120))
    }

    fn launch(
        &self,
        spec: &ContainerSpec,
        log: &Path,
        ctx: &PodContext<'_>,
        volumes: &PodVolumes,
    ) -> Result<Child, TestbedError> {
        let ip = self.info.ip.to_string();
        let facts = PodFacts {
            name: &self.info.name,
            namespace: &self.info.namespace,
            ip: &ip,
            service_account: self.service_account(),
            node_name: ctx.node_name,
        };
        let bad = |reason: String| {
            TestbedError::object(
                "Pod",
                &self.info.namespace,
                &self.info.name,
                format!("container {}: {reason}", spec.name),
            )
        };
        let env = spec.environment(&facts).map_err(bad)?;
        let env = volumes.rewrite_env(&spec.volume_mounts, env).map_err(bad)?;
        let argv = spec.argv(&env, ctx.binaries).map_err(bad)?;
        let (uid, gid) = spec.identity(self.spec.security_context.as_ref());
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| TestbedError::io("opening container log", log, e))?;
        let err_file = file
            .try_clone()
            .map_err(|e| TestbedError::io("opening container log", log, e))?;
        let mut cmd = in_pod_as(&self.netns, uid, gid, &argv);
        // A container sees its own environment, not the testbed's (PATH aside, to find programs).
        cmd.env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH")
                    .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into()),
            )
            .env("HOME", if uid == 0 { "/root" } else { "/" })
            .env("HOSTNAME", &self.info.name)
            .envs(env)
            .current_dir(spec.working_dir.as_deref().unwrap_or("/"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err_file))
            .process_group(0);
        let command = describe(&cmd);
        cmd.spawn()
            .map_err(|source| TestbedError::Spawn { command, source })
    }

    /// Runs every long-running container's probes once, as the kubelet would (HTTP and TCP
    /// from the node's namespace to the pod IP): the startupProbe until it has passed, then the
    /// livenessProbe and the readinessProbe; `Ok` when all pass. The testbed restarts nothing,
    /// so a failing liveness probe keeps the pod from being ready (and `up` fails with it). A
    /// container with a probe that has exited is an error: it can never become ready; app
    /// containers of a pod that completes (a Job's) are done instead.
    pub fn probe_once(
        &self,
        node_netns: &str,
    ) -> Result<Result<(), (String, String)>, TestbedError> {
        for container in self.containers.iter().filter(|c| c.is_long_running()) {
            let spec = &container.spec;
            let probed = spec.readiness_probe.is_some()
                || spec.liveness_probe.is_some()
                || spec.startup_probe.is_some();
            if !probed {
                continue;
            }
            if let Some(status) = container.exit_status() {
                if !container.init && self.spec.completes() {
                    continue;
                }
                return Err(TestbedError::NotReady {
                    pod: self.info.name.clone(),
                    container: container.name().to_string(),
                    timeout: Duration::ZERO,
                    last: format!("the process exited ({})", describe_status(&status)),
                    log_tail: log_tail(&container.log),
                });
            }
            let failed = |kind: &str, reason: String| {
                Ok(Err((
                    container.name().to_string(),
                    format!("{kind} failing: {reason}"),
                )))
            };
            if !container.has_started()
                && let Some(probe) = &spec.startup_probe
            {
                match self.run_probe(container, probe, node_netns)? {
                    Ok(()) => container.set_started(),
                    Err(reason) => return failed("startupProbe", reason),
                }
            }
            if let Some(probe) = &spec.liveness_probe
                && let Err(reason) = self.run_probe(container, probe, node_netns)?
            {
                return failed(
                    "livenessProbe (a kubelet would restart the container; the testbed does not)",
                    reason,
                );
            }
            if let Some(probe) = &spec.readiness_probe
                && let Err(reason) = self.run_probe(container, probe, node_netns)?
            {
                return failed("readinessProbe", reason);
            }
        }
        Ok(Ok(()))
    }

    fn run_probe(
        &self,
        container: &Container,
        probe: &Probe,
        node_netns: &str,
    ) -> Result<Result<(), String>, TestbedError> {
        // Kubernetes' default timeoutSeconds is 1.
        let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1));
        let port_of = |port: &IntOrString| {
            container
                .spec
                .resolve_port(port)
                .ok_or_else(|| format!("probe port {port:?} is not a port of the container"))
        };
        let host_of = |host: &Option<String>| -> Result<IpAddr, String> {
            match host {
                None => Ok(IpAddr::V4(self.info.ip)),
                Some(h) => h
                    .parse()
                    .map_err(|_| format!("probe host {h} is not an IP address")),
            }
        };
        if let Some(get) = &probe.http_get {
            let addr = match (host_of(&get.host), port_of(&get.port)) {
                (Ok(h), Ok(p)) => SocketAddr::new(h, p),
                (Err(e), _) | (_, Err(e)) => return Ok(Err(e)),
            };
            let path = get.path.as_deref().unwrap_or("/");
            return Ok(
                probe::http_get(node_netns, addr, path, timeout)?.and_then(|r| {
                    // Kubernetes counts 200..400 as success.
                    if (200..400).contains(&r.status) {
                        Ok(())
                    } else {
                        Err(format!(
                            "GET http://{addr}{path} answered {}: {}",
                            r.status,
                            r.body.trim()
                        ))
                    }
                }),
            );
        }
        if let Some(tcp) = &probe.tcp_socket {
            let addr = match (host_of(&tcp.host), port_of(&tcp.port)) {
                (Ok(h), Ok(p)) => SocketAddr::new(h, p),
                (Err(e), _) | (_, Err(e)) => return Ok(Err(e)),
            };
            return probe::tcp_connect(node_netns, addr, timeout);
        }
        if let Some(exec) = &probe.exec {
            let (uid, gid) = container.spec.identity(self.spec.security_context.as_ref());
            let output = run_bounded(
                in_pod_as(&self.netns, uid, gid, &exec.command),
                timeout.max(Duration::from_secs(5)),
            )?;
            return Ok(if output.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "exec probe {:?} {}",
                    exec.command,
                    describe_status(&output.status)
                ))
            });
        }
        if probe.grpc.is_some() {
            return Ok(Err(
                "the testbed does not run gRPC probes (the injector points a meshed pod's at \
                 the proxy's /app-health)"
                    .to_string(),
            ));
        }
        Ok(Ok(()))
    }

    /// Pending → Running → Succeeded/Failed, for pods that complete (restartPolicy Never or
    /// OnFailure): Succeeded once every app container has exited 0, Failed once they have all
    /// exited and one did not with 0. Native sidecars do not count, as in Kubernetes.
    pub fn phase(&self) -> PodPhase {
        if !self.spec.completes() {
            return PodPhase::Running;
        }
        let mut all_ok = true;
        for container in self.containers.iter().filter(|c| !c.init) {
            match container.exit_status() {
                None => return PodPhase::Running,
                Some(status) => all_ok &= status.success(),
            }
        }
        if self.containers.iter().all(|c| c.init) {
            return PodPhase::Running;
        }
        if all_ok {
            PodPhase::Succeeded
        } else {
            PodPhase::Failed
        }
    }

    /// Sends `sig` to the process group of every running container of one kind: the app
    /// containers (classic sidecars included), or the native sidecars (last-started first).
    pub fn signal_containers(&self, sig: Signal, sidecars: bool) {
        for container in self.containers.iter().rev() {
            if container.is_sidecar() == sidecars
                && let Some(pid) = container.pid
                && container.exit_status().is_none()
            {
                let _ = killpg(Pid::from_raw(pid), sig);
            }
        }
    }

    /// Waits until `deadline` for the containers of one kind (see `signal_containers`) to
    /// exit, then kills what is left.
    pub fn reap(&self, deadline: Instant, sidecars: bool) {
        for container in self
            .containers
            .iter()
            .filter(|c| c.is_sidecar() == sidecars)
        {
            let mut child = container.child.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = child.as_mut() {
                let remaining = deadline.saturating_duration_since(Instant::now());
                let status = stop_group(c, remaining.max(Duration::from_millis(1)));
                let mut exit = container.exit.lock().unwrap_or_else(|p| p.into_inner());
                if exit.is_none() {
                    *exit = status;
                }
            }
        }
    }

    /// Whether any native sidecar still runs.
    pub fn sidecars_running(&self) -> bool {
        self.containers
            .iter()
            .any(|c| c.is_sidecar() && c.exit_status().is_none())
    }

    /// The pod's `terminationGracePeriodSeconds`, else `default`.
    pub fn grace(&self, default: Duration) -> Duration {
        self.spec
            .termination_grace_period_seconds
            .map_or(default, Duration::from_secs)
    }
}

/// `ip netns exec NS setpriv --reuid U --regid G --clear-groups -- argv...`: a process in the pod's
/// network namespace, with its /etc/netns files mounted over /etc, as the given user.
pub fn in_pod_as(netns: &str, uid: u32, gid: u32, argv: &[String]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, "setpriv"])
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .args(["--clear-groups", "--"])
        .args(argv);
    cmd
}

/// The last lines of a log, for error messages.
pub fn log_tail(path: &Path) -> String {
    const LINES: usize = 20;
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LINES)..].join("\n")
        }
        Err(e) => format!("(log {} unreadable: {e})", path.display()),
    }
}
