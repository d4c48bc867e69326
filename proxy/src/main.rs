//! `weft-proxy`: the sidecar (no subcommand) or `weft-proxy init` (the pod's iptables rules).

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory, Parser, Subcommand};
use weft_init::InitArgs;
use weft_proxy::config::{ProxyConfig, describe_invalid_value};
use weft_proxy::wait_ready::WaitReadyArgs;

#[derive(Parser)]
#[command(
    name = "weft-proxy",
    version,
    about = "Weft's per-pod sidecar proxy",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    proxy: ProxyConfig,
}

#[derive(Subcommand)]
enum Command {
    /// Install (or with --remove, take out) the pod's iptables rules.
    Init(InitArgs),
    /// Wait until the proxy's /ready answers 200 (a classic sidecar's postStart hook, so the
    /// kubelet starts the app containers only once the proxy is ready).
    WaitReady(WaitReadyArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            if let Some(line) = describe_invalid_value(&err, &Cli::command()) {
                eprintln!("weft-proxy: {line}");
                return ExitCode::from(2);
            }
            err.exit()
        }
    };
    match cli.command {
        Some(Command::Init(args)) => match weft_init::run(&args) {
            Ok(outcome) => {
                println!("{outcome}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("weft-proxy init: {err}");
                ExitCode::FAILURE
            }
        },
        Some(Command::WaitReady(args)) => match weft_proxy::wait_ready::wait(&args) {
            Ok(waited) => {
                println!("weft-proxy ready after {waited:?}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("weft-proxy wait-ready: {err}");
                ExitCode::FAILURE
            }
        },
        None => match run_proxy(cli.proxy) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("weft-proxy: {err:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run_proxy(config: ProxyConfig) -> anyhow::Result<()> {
    weft_proxy::log::init(&config.log, config.log_format)?;
    let mut builder = if config.worker_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(config.worker_threads as usize);
        builder
    };
    let runtime = builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(weft_proxy::sidecar::run(config))?;
    Ok(())
}
