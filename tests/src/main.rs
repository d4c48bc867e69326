//! `weft-testbed`: bring Kubernetes manifests up as local pods, run commands in them, read their
//! logs, and clear everything away again.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use weft_testbed::{
    DownTarget, InstanceState, STATE_ROOT, Testbed, TestbedOptions, down, named_instance,
};

#[derive(Parser)]
#[command(
    name = "weft-testbed",
    about = "Kubernetes manifests as pods in network namespaces on this machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Bring manifests up and stay in the foreground until Ctrl-C / SIGTERM (or --detach).
    Up {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        #[arg(long)]
        name: Option<String>,
        /// Leave the pods running and return; `down --name` removes them.
        #[arg(long)]
        detach: bool,
        /// The weft-proxy binary (default: WEFT_PROXY_BIN, else beside this executable).
        #[arg(long, env = "WEFT_PROXY_BIN")]
        proxy_bin: Option<PathBuf>,
        /// Seconds to wait for init containers and readiness.
        #[arg(long, default_value_t = 30)]
        ready_timeout: u64,
    },
    /// Run a command in a pod's network namespace (as root, with its DNS files).
    Exec {
        #[arg(long)]
        name: Option<String>,
        pod: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Print a container's stdout and stderr.
    Logs {
        #[arg(long)]
        name: Option<String>,
        pod: String,
        container: Option<String>,
    },
    /// Remove an instance (--name), every instance (--all), or by default those whose owner died.
    Down {
        #[arg(long, conflicts_with = "all")]
        name: Option<String>,
        #[arg(long)]
        all: bool,
    },
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weft-testbed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Cmd::Up {
            file,
            name,
            detach,
            proxy_bin,
            ready_timeout,
        } => up(&file, name, detach, proxy_bin, ready_timeout),
        Cmd::Exec { name, pod, command } => exec(name.as_deref(), &pod, &command),
        Cmd::Logs {
            name,
            pod,
            container,
        } => logs(name.as_deref(), &pod, container.as_deref()),
        Cmd::Down { name, all } => {
            let target = match (name, all) {
                (Some(n), _) => DownTarget::Instance(named_instance(&n)?),
                (None, true) => DownTarget::All,
                (None, false) => DownTarget::Crashed,
            };
            let removed = down(&target, Path::new(STATE_ROOT))?;
            if removed.is_empty() {
                println!("nothing to remove");
            }
            for instance in removed {
                println!("removed {instance}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn install_stop_handlers() -> Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }
            .with_context(|| format!("installing a {sig} handler"))?;
    }
    Ok(())
}

fn up(
    file: &Path,
    name: Option<String>,
    detach: bool,
    proxy_bin: Option<PathBuf>,
    ready_timeout: u64,
) -> Result<ExitCode> {
    let yaml = std::fs::read_to_string(file)
        .with_context(|| format!("reading manifests {}", file.display()))?;
    // Installed first: a Ctrl-C during start-up still ends in a teardown once `up` returns.
    install_stop_handlers()?;
    let opts = TestbedOptions {
        proxy_bin,
        ready_timeout: Duration::from_secs(ready_timeout),
        name,
        ..TestbedOptions::default()
    };
    let bed =
        Testbed::up(&yaml, opts).with_context(|| format!("bringing up {}", file.display()))?;
    print_summary(&bed);
    if STOP.load(Ordering::SeqCst) {
        println!("stopping: signal received during start-up");
        return Ok(ExitCode::SUCCESS);
    }
    if detach {
        let instance = bed.instance().to_string();
        bed.detach()?;
        println!("detached; remove with: weft-testbed down --name {instance}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("instance {} is up; Ctrl-C to tear down", bed.instance());
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("tearing down {}", bed.instance());
    drop(bed);
    Ok(ExitCode::SUCCESS)
}

fn print_summary(bed: &Testbed) {
    println!(
        "instance {} (node namespace {})",
        bed.instance(),
        bed.node_netns()
    );
    println!("{:<40} {:<12} {:<16} READY", "POD", "NAMESPACE", "IP");
    for pod in bed.pods() {
        println!(
            "{:<40} {:<12} {:<16} yes",
            pod.name,
            pod.namespace,
            pod.ip.to_string()
        );
    }
    println!(
        "{:<40} {:<12} {:<16} PORTS",
        "SERVICE", "NAMESPACE", "CLUSTER-IP"
    );
    for svc in bed.services() {
        let ip = svc
            .cluster_ip
            .map_or_else(|| "None".to_string(), |ip| ip.to_string());
        let ports = svc
            .ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",");
        println!("{:<40} {:<12} {:<16} {ports}", svc.name, svc.namespace, ip);
    }
}

/// The instance named, or the only one there is.
fn instance_state(name: Option<&str>) -> Result<InstanceState> {
    let root = Path::new(STATE_ROOT);
    let instance = match name {
        Some(n) => named_instance(n)?,
        None => {
            let mut found: Vec<String> = std::fs::read_dir(root)
                .map(|d| {
                    d.filter_map(Result::ok)
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            found.retain(|n| root.join(n).join("state.json").exists());
            match found.as_slice() {
                [one] => one.clone(),
                [] => bail!("no testbed instance is up (nothing in {STATE_ROOT})"),
                many => bail!(
                    "several instances are up ({}); pick one with --name",
                    many.join(", ")
                ),
            }
        }
    };
    InstanceState::load(&root.join(&instance)).with_context(|| format!("instance {instance}"))
}

fn exec(name: Option<&str>, pod: &str, command: &[String]) -> Result<ExitCode> {
    let state = instance_state(name)?;
    let pod = state.pod(pod)?;
    let status = Command::new("ip")
        .args(["netns", "exec", &pod.netns])
        .args(command)
        .status()
        .with_context(|| format!("running {command:?} in pod {}", pod.name))?;
    Ok(ExitCode::from(
        status
            .code()
            .and_then(|c| u8::try_from(c).ok())
            .unwrap_or(1),
    ))
}

fn logs(name: Option<&str>, pod: &str, container: Option<&str>) -> Result<ExitCode> {
    let state = instance_state(name)?;
    let pod = state.pod(pod)?;
    let chosen = pod.containers.iter().find(|c| match container {
        Some(n) => c.name == n,
        None => !c.init && c.name != "weft-proxy",
    });
    let Some(c) = chosen.or_else(|| {
        pod.containers
            .iter()
            .find(|c| container.is_none() && !c.init)
    }) else {
        bail!(
            "pod {} has no container {}",
            pod.name,
            container.unwrap_or("to show")
        );
    };
    let text = std::fs::read(&c.log).with_context(|| format!("reading {}", c.log.display()))?;
    print!("{}", String::from_utf8_lossy(&text));
    Ok(ExitCode::SUCCESS)
}
