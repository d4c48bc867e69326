//! `weft-discovery`: the discovery service binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::{error, info};
use weft_discovery::admin::Admin;
use weft_discovery::metrics::Metrics;
use weft_discovery::source::{FileSource, KubernetesSource, ObjectSink, Source};
use weft_discovery::{IndexConfig, Translator, WatchService};

#[derive(Parser)]
#[command(
    name = "weft-discovery",
    version,
    about = "Weft's discovery service",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Where Services, EndpointSlices and Pods come from.
    #[arg(long, env = "WEFT_DISCOVERY_SOURCE", value_enum, required = true)]
    source: Option<SourceKind>,
    /// The directory of YAML files (--source file).
    #[arg(long, env = "WEFT_DISCOVERY_DIR", required_if_eq("source", "file"))]
    dir: Option<PathBuf>,
    /// The gRPC Watch API's address.
    #[arg(long, env = "WEFT_DISCOVERY_LISTEN", default_value = "0.0.0.0:8086")]
    listen: SocketAddr,
    /// The admin server's address: /metrics, /ready, /live.
    #[arg(long, env = "WEFT_DISCOVERY_ADMIN", default_value = "0.0.0.0:9996")]
    admin: SocketAddr,
    /// Workload identities are spiffe://<trust-domain>/ns/<ns>/sa/<service-account>.
    #[arg(long, env = "WEFT_TRUST_DOMAIN", default_value = "cluster.local", value_parser = parse_domain)]
    trust_domain: String,
    /// Service names end in .svc.<cluster-domain>.
    #[arg(long, env = "WEFT_CLUSTER_DOMAIN", default_value = "cluster.local", value_parser = parse_domain)]
    cluster_domain: String,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "WEFT_LOG", default_value = "info", value_parser = weft_settings::parse_log_filter)]
    log: String,
}

#[derive(Subcommand)]
enum Command {
    /// Watch one target as a proxy would and print each update on a line.
    Watch {
        /// "IP:port" or "host:port".
        target: String,
        /// The discovery service.
        #[arg(long, default_value = "127.0.0.1:8086")]
        addr: String,
        /// The namespace a bare name is resolved in (the watching pod's).
        #[arg(long, default_value = "")]
        namespace: String,
        /// Exit after this many updates (default: run until the stream ends).
        #[arg(long)]
        updates: Option<usize>,
        /// Give up after this long.
        #[arg(long, default_value = "30s", value_parser = weft_settings::parse_duration)]
        timeout: Duration,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum SourceKind {
    Kubernetes,
    File,
}

/// A DNS name: lowercase labels of letters, digits and '-'.
fn parse_domain(s: &str) -> Result<String, String> {
    let valid = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if valid {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "expected a lowercase DNS name such as \"cluster.local\", got {s:?}"
        ))
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Some(Command::Watch {
            target,
            addr,
            namespace,
            updates,
            timeout,
        }) => {
            runtime.block_on(weft_discovery::watch_client::watch(
                &addr,
                &target,
                &namespace,
                updates,
                timeout,
                |line| println!("{line}"),
            ))?;
            Ok(())
        }
        None => runtime.block_on(run(cli)),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let (sink, objects) = ObjectSink::new(metrics.clone());
    let (index_tx, index) = watch::channel(None);

    let grpc = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("--listen {}: cannot bind", cli.listen))?;
    let admin = TcpListener::bind(cli.admin)
        .await
        .with_context(|| format!("--admin {}: cannot bind", cli.admin))?;

    let source = match cli.source.context("--source is required")? {
        SourceKind::File => {
            let dir = cli.dir.context("--dir is required with --source file")?;
            tokio::spawn(run_source(FileSource::new(dir)?, sink))
        }
        SourceKind::Kubernetes => {
            tokio::spawn(run_source(KubernetesSource::connect().await?, sink))
        }
    };
    let config = IndexConfig {
        trust_domain: cli.trust_domain,
        cluster_domain: cli.cluster_domain,
    };
    let translator = tokio::spawn(Translator::new(config, metrics.clone()).run(objects, index_tx));
    tokio::spawn(Admin::new(metrics.clone(), index.clone()).serve(admin));

    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let shutdown = async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    };
    info!(listen = %cli.listen, admin = %cli.admin, "serving weft.discovery.v1.Discovery");
    let mut server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(WatchService::new(index, metrics).into_server())
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(grpc),
                shutdown,
            ),
    );
    let outcome = tokio::select! {
        _ = term.recv() => Ok(()),
        _ = int.recv() => Ok(()),
        result = &mut server => {
            return match result {
                Ok(Ok(())) => Err(anyhow::anyhow!("the gRPC server stopped")),
                Ok(Err(err)) => Err(anyhow::Error::from(err).context("the gRPC server failed")),
                Err(err) => Err(anyhow::anyhow!("the gRPC server task failed: {err}")),
            };
        }
        result = source => match result {
            Ok(Err(err)) => Err(err),
            Ok(Ok(())) => Err(anyhow::anyhow!("the source stopped")),
            Err(err) => Err(anyhow::anyhow!("the source task failed: {err}")),
        },
    };
    info!("shutting down");
    // Ending the index publisher ends every watch stream, which lets the server drain.
    translator.abort();
    let _ = stop_tx.send(true);
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => error!(error = %err, "the gRPC server failed"),
        Ok(Err(err)) => error!(error = %err, "the gRPC server task failed"),
        Err(_) => error!("the gRPC server did not drain within 5s"),
    }
    outcome
}

async fn run_source<S: Source>(source: S, sink: ObjectSink) -> anyhow::Result<()> {
    source.run(sink).await.map_err(anyhow::Error::from)
}
