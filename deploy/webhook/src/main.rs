//! `weft-injector`: the Kubernetes mutating admission webhook that adds the Weft sidecar to pods
//! exactly as `weft-inject` adds it to manifests. See deploy/webhook/README.md.

mod certificate;
mod kubernetes;
mod namespace_dir;
mod patch;
mod review;
mod server;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing_subscriber::EnvFilter;
use weft_inject::InjectOptions;

use crate::certificate::{CertificateFiles, CertificateSlot, FileContents, ServingCertificate};
use crate::kubernetes::NamespaceSource;
use crate::namespace_dir::NamespaceDir;
use crate::review::Injector;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Admission webhook adding the Weft sidecar to pods annotated weft.io/inject: enabled (or in such a namespace)"
)]
struct Args {
    /// Address of the HTTPS server (POST /inject, GET /ready, GET /live).
    #[arg(long, env = "WEFT_INJECTOR_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,

    /// Serving certificate chain (PEM), e.g. a cert-manager Secret's tls.crt; without it the
    /// injector generates a CA and a certificate for the Service at start.
    #[arg(long, env = "WEFT_INJECTOR_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "WEFT_INJECTOR_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// How often --tls-cert and --tls-key are re-read; a renewed pair is served from then on.
    #[arg(long, env = "WEFT_INJECTOR_TLS_RELOAD_INTERVAL", value_parser = weft_settings::parse_duration, default_value = "10s")]
    tls_reload_interval: Duration,
    /// The Service the API server calls: the generated certificate is for
    /// NAME.NAMESPACE.svc and NAME.NAMESPACE.svc.CLUSTER_DOMAIN.
    #[arg(
        long,
        env = "WEFT_INJECTOR_SERVICE_NAME",
        default_value = "weft-injector"
    )]
    service_name: String,
    /// Namespace of that Service.
    #[arg(long, env = "WEFT_INJECTOR_SERVICE_NAMESPACE", default_value = "weft")]
    service_namespace: String,
    /// The cluster's DNS domain.
    #[arg(
        long,
        env = "WEFT_INJECTOR_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    cluster_domain: String,
    /// Write the generated CA (the caBundle) to this file, PEM.
    #[arg(long, env = "WEFT_INJECTOR_WRITE_CA", conflicts_with = "tls_cert")]
    write_ca: Option<PathBuf>,
    /// Keep the caBundle of every webhook of this MutatingWebhookConfiguration set to the
    /// generated CA (needs get and patch on it).
    #[arg(
        long,
        env = "WEFT_INJECTOR_PATCH_WEBHOOK_CONFIG",
        conflicts_with = "tls_cert"
    )]
    patch_webhook_config: Option<String>,
    /// Where a pod's namespace annotations come from: `api` reads the Namespace (needs get on
    /// namespaces), `file:DIR` reads Namespace objects from the YAML files in DIR (without the
    /// API), `off` honours only the pod's own annotations.
    #[arg(
        long,
        env = "WEFT_INJECTOR_NAMESPACE_LOOKUP",
        value_parser = parse_namespace_lookup,
        default_value = "api"
    )]
    namespace_lookup: NamespaceLookup,

    /// Image of the proxy and init containers, unless a pod sets weft.io/proxy-image.
    #[arg(long, env = "WEFT_INJECTOR_PROXY_IMAGE", value_parser = weft_settings::parse_image, default_value = weft_settings::DEFAULT_PROXY_IMAGE)]
    proxy_image: String,
    /// The discovery service (host:port) the proxies watch; without it they resolve with DNS.
    #[arg(long, env = "WEFT_INJECTOR_DISCOVERY_ADDR")]
    discovery_addr: Option<String>,
    /// The identity service (host:port) that signs the proxies' certificates.
    #[arg(long, env = "WEFT_INJECTOR_IDENTITY_ADDR")]
    identity_addr: Option<String>,
    /// Workload identities are spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>.
    #[arg(long, env = "WEFT_INJECTOR_TRUST_DOMAIN", value_parser = weft_inject::parse_trust_domain, default_value = weft_inject::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,

    /// Log filter (tracing directives).
    #[arg(long, env = "WEFT_INJECTOR_LOG", default_value = "info")]
    log: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum NamespaceLookup {
    Api,
    File(PathBuf),
    Off,
}

fn parse_namespace_lookup(value: &str) -> Result<NamespaceLookup, String> {
    match value {
        "api" => Ok(NamespaceLookup::Api),
        "off" => Ok(NamespaceLookup::Off),
        _ => match value.strip_prefix("file:") {
            Some("") => Err("file: needs a directory, e.g. file:/etc/weft/namespaces".to_owned()),
            Some(dir) => Ok(NamespaceLookup::File(PathBuf::from(dir))),
            None => Err(format!(
                "{value:?} is not a namespace lookup: use api, file:DIR or off"
            )),
        },
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = EnvFilter::try_new(&args.log).with_context(|| {
        format!(
            "--log / WEFT_INJECTOR_LOG {:?} is not a log filter",
            args.log
        )
    })?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // The only provider linked; the Kubernetes client's TLS takes the process default.
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        tracing::debug!("a rustls provider was already installed");
    }

    let (certificate, renewal) = serving_certificate(&args)?;
    if let (Some(path), Some(ca_pem)) = (&args.write_ca, &certificate.ca_pem) {
        std::fs::write(path, ca_pem)
            .with_context(|| format!("writing the CA to {} (--write-ca)", path.display()))?;
    }
    let slot = CertificateSlot::new(Arc::clone(&certificate.key));
    if let Some((files, loaded)) = renewal {
        tokio::spawn(certificate::keep_reloaded(
            files,
            Arc::clone(&slot),
            loaded,
            args.tls_reload_interval,
        ));
    }
    let tls = TlsAcceptor::from(certificate::server_config(slot)?);

    let client = kubernetes_client(&args).await?;
    if let (Some(name), Some(ca_pem), Some(client)) =
        (&args.patch_webhook_config, &certificate.ca_pem, &client)
    {
        tokio::spawn(kubernetes::keep_ca_bundle(
            client.clone(),
            name.clone(),
            ca_pem.clone(),
        ));
    }
    let namespaces = match (&args.namespace_lookup, client) {
        (NamespaceLookup::Api, Some(client)) => NamespaceSource::Api(client),
        (NamespaceLookup::File(dir), _) => {
            NamespaceSource::File(Arc::new(NamespaceDir::new(dir.clone())?))
        }
        _ => NamespaceSource::Off,
    };
    let injector = Arc::new(Injector {
        options: InjectOptions {
            proxy_image: args.proxy_image.clone(),
            discovery_addr: args.discovery_addr.clone(),
            identity_addr: args.identity_addr.clone(),
            trust_domain: args.trust_domain.clone(),
            ..InjectOptions::default()
        },
        namespaces,
    });

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
    let local = listener
        .local_addr()
        .context("reading the listening address")?;
    let shutdown = terminated()?;
    tracing::info!(
        listen = %local,
        path = server::INJECT_PATH,
        certificate = if certificate.ca_pem.is_some() { "generated" } else { "files" },
        namespace_lookup = %shown(&args.namespace_lookup),
        "weft-injector serving AdmissionReview v1"
    );
    server::serve(listener, tls, injector, shutdown).await;
    tracing::info!("weft-injector stopped");
    Ok(())
}

/// The lookup as the flag spells it, for the start-up line.
fn shown(lookup: &NamespaceLookup) -> String {
    match lookup {
        NamespaceLookup::Api => "api".to_owned(),
        NamespaceLookup::File(dir) => format!("file:{}", dir.display()),
        NamespaceLookup::Off => "off".to_owned(),
    }
}

/// The generated certificate, or the files' with what was read (to notice their renewal).
fn serving_certificate(
    args: &Args,
) -> anyhow::Result<(ServingCertificate, Option<(CertificateFiles, FileContents)>)> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let files = CertificateFiles {
            cert: cert.clone(),
            key: key.clone(),
        };
        let contents = files.read()?;
        let certificate = files.load(&contents)?;
        return Ok((certificate, Some((files, contents))));
    }
    let names = certificate::service_dns_names(
        &args.service_name,
        &args.service_namespace,
        &args.cluster_domain,
    );
    Ok((certificate::generate(&names)?, None))
}

/// A client when a flag needs the API: in-cluster service account, else KUBECONFIG.
async fn kubernetes_client(args: &Args) -> anyhow::Result<Option<kube::Client>> {
    let needs_api =
        args.namespace_lookup == NamespaceLookup::Api || args.patch_webhook_config.is_some();
    if !needs_api {
        return Ok(None);
    }
    let client = kube::Client::try_default().await.context(
        "cannot configure the Kubernetes client (in-cluster service account or KUBECONFIG), \
         needed by --namespace-lookup api and --patch-webhook-config; \
         use --namespace-lookup file:DIR or off without --patch-webhook-config to run without the API",
    )?;
    Ok(Some(client))
}

/// Resolves on SIGTERM (the kubelet stopping the pod) or Ctrl-C; the handler is in place as soon
/// as this returns, before the injector says it serves.
fn terminated() -> anyhow::Result<impl Future<Output = ()>> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    })
}
