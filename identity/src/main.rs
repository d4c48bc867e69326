//! weft-identity: `ca init`, `ca rotate-issuer`, `serve`, `token`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use weft_identity::{
    Authenticator, CaDirectory, InitOptions, LeafPolicy, LocalTokenAuthenticator, ServeOptions,
    token::claims_for,
};
use weft_settings::parse_duration;

#[derive(Parser)]
#[command(
    name = "weft-identity",
    version,
    about = "Weft's CA: signs short-lived SPIFFE workload certificates"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage the CA's keys and certificates.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Serve the Certify API over TLS.
    Serve {
        /// The CA directory made by `ca init`.
        #[arg(long, env = "WEFT_IDENTITY_DIR")]
        dir: PathBuf,
        #[arg(long, env = "WEFT_IDENTITY_LISTEN", default_value = "0.0.0.0:8080")]
        listen: SocketAddr,
        /// /metrics, /ready and /live.
        #[arg(
            long,
            env = "WEFT_IDENTITY_ADMIN_LISTEN",
            default_value = "0.0.0.0:9990"
        )]
        admin_listen: SocketAddr,
        /// Lifetime of issued workload certificates.
        #[arg(long, env = "WEFT_IDENTITY_CERT_LIFETIME", default_value = "24h", value_parser = parse_duration)]
        cert_lifetime: Duration,
        /// How far back notBefore is set, for workloads whose clocks run behind.
        #[arg(long, env = "WEFT_IDENTITY_BACKDATE", default_value = "1m", value_parser = parse_duration)]
        backdate: Duration,
        /// How callers prove their service account.
        #[arg(long, env = "WEFT_IDENTITY_AUTHENTICATOR", value_enum, default_value_t = AuthenticatorKind::Kubernetes)]
        authenticator: AuthenticatorKind,
    },
    /// Mint a local token proving a service account (for `--authenticator local`); prints it.
    Token {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        service_account: String,
        #[arg(long, default_value = "8760h", value_parser = parse_duration)]
        lifetime: Duration,
    },
    /// Check a CA end to end as a proxy would: make a key, send a CSR with the token, verify the
    /// CA's SPIFFE id, and print the issued chain (PEM). The key is discarded.
    Certify {
        /// The CA, host:port (as WEFT_IDENTITY_ADDR).
        #[arg(long, env = "WEFT_IDENTITY_ADDR")]
        addr: String,
        /// File holding the token (as WEFT_IDENTITY_TOKEN_FILE).
        #[arg(long, env = "WEFT_IDENTITY_TOKEN_FILE")]
        token_file: PathBuf,
        /// PEM trust anchors (as WEFT_TRUST_ANCHORS).
        #[arg(long, env = "WEFT_TRUST_ANCHORS")]
        trust_anchors: PathBuf,
        #[arg(long, env = "WEFT_TRUST_DOMAIN", default_value = "cluster.local")]
        trust_domain: String,
        /// spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>
        #[arg(long)]
        identity: String,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create a trust anchor, an issuer signed by it, and a local-token signing key in DIR.
    Init {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
        #[arg(long, default_value = "8760h", value_parser = parse_duration)]
        anchor_lifetime: Duration,
        #[arg(long, default_value = "2160h", value_parser = parse_duration)]
        issuer_lifetime: Duration,
        /// Replace an existing CA in DIR.
        #[arg(long)]
        force: bool,
    },
    /// Replace the issuer with a new one under the same anchor (restart `serve` afterwards).
    RotateIssuer {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "2160h", value_parser = parse_duration)]
        issuer_lifetime: Duration,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum AuthenticatorKind {
    /// Kubernetes TokenReview of projected service-account tokens (audience weft-identity).
    Kubernetes,
    /// Tokens minted by `weft-identity token` with this CA's key.
    Local,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Ca {
            command:
                CaCommand::Init {
                    dir,
                    trust_domain,
                    anchor_lifetime,
                    issuer_lifetime,
                    force,
                },
        } => {
            CaDirectory::new(&dir).init(&InitOptions {
                trust_domain: trust_domain.clone(),
                anchor_lifetime,
                issuer_lifetime,
                force,
            })?;
            println!(
                "created a CA for trust domain {trust_domain} in {}; distribute {} as the trust anchors",
                dir.display(),
                dir.join(weft_identity::ca_directory::ANCHOR_CERT).display()
            );
            Ok(())
        }
        Command::Ca {
            command:
                CaCommand::RotateIssuer {
                    dir,
                    issuer_lifetime,
                },
        } => {
            CaDirectory::new(&dir).rotate_issuer(issuer_lifetime)?;
            println!(
                "replaced the issuer in {}; restart weft-identity serve to sign with it",
                dir.display()
            );
            Ok(())
        }
        Command::Token {
            dir,
            namespace,
            service_account,
            lifetime,
        } => {
            // Validate like the CA will, so a typo fails here and not at the proxy.
            weft_tls::SpiffeId::new("x", &namespace, &service_account)
                .context("--namespace/--service-account")?;
            let key = CaDirectory::new(&dir).load_token_key()?;
            println!(
                "{}",
                key.mint(&claims_for(
                    &namespace,
                    &service_account,
                    lifetime,
                    SystemTime::now()
                ))?
            );
            Ok(())
        }
        Command::Certify {
            addr,
            token_file,
            trust_anchors,
            trust_domain,
            identity,
        } => {
            let identity = weft_tls::SpiffeId::parse(&identity).context("--identity")?;
            let token = std::fs::read_to_string(&token_file)
                .with_context(|| format!("--token-file {}", token_file.display()))?;
            let anchors =
                weft_tls::TrustAnchors::from_pem_file(&trust_anchors).context("--trust-anchors")?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(certify_once(
                &addr,
                &anchors,
                &trust_domain,
                token.trim(),
                &identity,
            ))
        }
        Command::Serve {
            dir,
            listen,
            admin_listen,
            cert_lifetime,
            backdate,
            authenticator,
        } => {
            init_logging()?;
            if cert_lifetime < Duration::from_secs(1) {
                anyhow::bail!("--cert-lifetime must be at least 1s");
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(async move {
                let ca = CaDirectory::new(&dir);
                let authority = ca.load_authority()?;
                let authenticator: Arc<dyn Authenticator> = match authenticator {
                    AuthenticatorKind::Local => {
                        Arc::new(LocalTokenAuthenticator::new(ca.load_token_key()?))
                    }
                    AuthenticatorKind::Kubernetes => kubernetes_authenticator().await?,
                };
                let options = ServeOptions {
                    listen,
                    admin_listen,
                    leaf: LeafPolicy {
                        lifetime: cert_lifetime,
                        backdate,
                    },
                };
                weft_identity::serve(options, authority, authenticator, shutdown_signal()).await?;
                Ok(())
            })
        }
    }
}

async fn certify_once(
    addr: &str,
    anchors: &weft_tls::TrustAnchors,
    trust_domain: &str,
    token: &str,
    identity: &weft_tls::SpiffeId,
) -> anyhow::Result<()> {
    let channel =
        weft_identity_api::ca_channel(addr, anchors, trust_domain, Duration::from_secs(5))?;
    let key = weft_tls::WorkloadKey::generate()?;
    let request = weft_identity_api::CertifyRequest {
        token: token.to_owned(),
        certificate_signing_request: key.csr_der(identity)?,
        identity: identity.uri(),
    };
    let response = weft_identity_api::v1::identity_client::IdentityClient::new(channel)
        .certify(request)
        .await
        .map_err(|status| {
            anyhow::anyhow!(
                "Certify at {addr} refused: {:?}: {}",
                status.code(),
                status.message()
            )
        })?
        .into_inner();
    let mut chain = vec![response.leaf_certificate.into()];
    chain.extend(
        response
            .intermediate_certificates
            .into_iter()
            .map(Into::into),
    );
    key.certified_key(chain.clone())
        .context("the CA returned a certificate for another key")?;
    let info = weft_tls::certificate::inspect(&chain[0])?;
    eprintln!(
        "issued {} serial {} valid until {:?}",
        info.identity, info.serial, info.not_after
    );
    print!("{}", weft_tls::pem::certificates_to_pem(&chain));
    Ok(())
}

#[cfg(feature = "kubernetes")]
async fn kubernetes_authenticator() -> anyhow::Result<Arc<dyn Authenticator>> {
    let client = kube::Client::try_default()
        .await
        .context("--authenticator kubernetes: cannot reach the Kubernetes API (no in-cluster config or kubeconfig)")?;
    Ok(Arc::new(
        weft_identity::token_review::TokenReviewAuthenticator::new(client),
    ))
}

#[cfg(not(feature = "kubernetes"))]
async fn kubernetes_authenticator() -> anyhow::Result<Arc<dyn Authenticator>> {
    anyhow::bail!(
        "--authenticator kubernetes: this weft-identity was built without the `kubernetes` feature; use --authenticator local"
    )
}

fn init_logging() -> anyhow::Result<()> {
    let filter = std::env::var("WEFT_LOG").unwrap_or_else(|_| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .with_context(|| format!("WEFT_LOG={filter:?} is not a valid log filter"))?;
    tracing_subscriber::fmt().with_env_filter(filter).init();
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
}
