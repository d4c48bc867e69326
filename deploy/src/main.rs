//! `weft-inject [-f FILE|-] [--proxy-image IMG] [--discovery-addr H:P] [--identity-addr H:P]
//! [--trust-domain TD] [--uninject]`: reads Kubernetes YAML, writes it back with the
//! Weft sidecar added to every meshed pod (or taken out of every pod, with `--uninject`).
//! Standard output carries only YAML; standard error one line per workload saying what was done.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use weft_inject::{InjectOptions, inject_with_outcomes, parse_manifests, to_yaml, uninject};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Adds the Weft sidecar to Kubernetes workloads annotated weft.io/inject: enabled"
)]
struct Args {
    /// Manifests to read; "-" reads standard input.
    #[arg(short = 'f', long = "filename", default_value = "-")]
    file: PathBuf,
    /// Image of the proxy and init containers, unless a pod sets weft.io/proxy-image.
    #[arg(long, value_parser = weft_settings::parse_image, default_value = weft_settings::DEFAULT_PROXY_IMAGE)]
    proxy_image: String,
    /// The discovery service (host:port) the proxies watch; without it they resolve with DNS.
    #[arg(long)]
    discovery_addr: Option<String>,
    /// The identity service (host:port) that signs the proxies' certificates.
    #[arg(long)]
    identity_addr: Option<String>,
    /// Workload identities are spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>.
    #[arg(long, value_parser = weft_inject::parse_trust_domain, default_value = weft_inject::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// Take the sidecar out of every injected pod instead: exactly what injecting added goes.
    #[arg(long, conflicts_with_all = ["proxy_image", "discovery_addr", "identity_addr", "trust_domain"])]
    uninject: bool,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            // --help and --version also arrive here, on stdout and successful.
            let failed = e.use_stderr();
            // Nothing more useful to do when even printing the usage fails.
            let _ = e.print();
            return if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line naming the object, as the error types already do.
            eprintln!("weft-inject: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let input = read_input(&args.file)?;
    let docs = parse_manifests(&input)?;
    let injection = if args.uninject {
        uninject(docs)?
    } else {
        let opts = InjectOptions {
            proxy_image: args.proxy_image.clone(),
            discovery_addr: args.discovery_addr.clone(),
            identity_addr: args.identity_addr.clone(),
            trust_domain: args.trust_domain.clone(),
            ..InjectOptions::default()
        };
        inject_with_outcomes(docs, &opts)?
    };
    let yaml = to_yaml(&injection.docs)?;
    std::io::stdout()
        .lock()
        .write_all(yaml.as_bytes())
        .context("writing the injected manifests to standard output")?;
    let mut stderr = std::io::stderr().lock();
    for outcome in &injection.outcomes {
        // The summary is for the reader; a closed stderr must not fail a run whose YAML is out.
        let _ = writeln!(stderr, "{outcome}");
    }
    Ok(())
}

fn read_input(file: &PathBuf) -> anyhow::Result<String> {
    if file.as_os_str() == "-" {
        let mut input = String::new();
        std::io::stdin()
            .read_to_string(&mut input)
            .context("reading manifests from standard input")?;
        Ok(input)
    } else {
        std::fs::read_to_string(file)
            .with_context(|| format!("reading manifests from {}", file.display()))
    }
}
