//! `atrium-operator`: every Atrium controller in one process, with leader election, health and
//! metrics endpoints, and graceful shutdown.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use atrium::{
    api,
    context::Context,
    controller::{self, RunOptions},
    health::{self, Health},
    runtime::{
        leader::{LeaderElector, LeaseConfig},
        metrics::Metrics,
    },
};
use clap::{Parser, ValueEnum};
use k8s_openapi::{
    api::coordination::v1::Lease, apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{Api, Client, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[derive(Parser, Debug)]
#[command(version, about = "Atrium: Azure ML workspaces on any Kubernetes cluster")]
struct Args {
    /// Address of the HTTP server for /healthz, /readyz and /metrics.
    #[arg(long, env = "ATRIUM_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Elect a leader through a Lease so that only one replica reconciles.
    #[arg(long, env = "ATRIUM_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the leader Lease (default: the pod's namespace, else `default`).
    #[arg(long, env = "ATRIUM_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, env = "ATRIUM_LEASE_NAME", default_value = "atrium-operator")]
    lease_name: String,
    /// Seconds a leader's lease is valid without renewal: the longest a failover takes.
    #[arg(long, env = "ATRIUM_LEASE_DURATION", default_value_t = 15)]
    lease_duration: u64,
    /// Reconciles each controller runs at once.
    #[arg(long, env = "ATRIUM_CONCURRENCY", default_value_t = 4)]
    concurrency: u16,
    /// Reconcile only Atrium objects whose labels match this selector (e.g. to shard objects
    /// between operator installations, or to test one in isolation). Default: all.
    #[arg(long, env = "ATRIUM_OBJECT_SELECTOR")]
    object_selector: Option<String>,
    /// Install the workspace ClusterRoles (owner, contributor, reader) at start. The Helm chart
    /// installs them itself and turns this off, so the operator needs no right to write roles.
    #[arg(long, env = "ATRIUM_INSTALL_WORKSPACE_ROLES", default_value_t = true, action = clap::ArgAction::Set)]
    install_workspace_roles: bool,
    /// Log format.
    #[arg(long, env = "ATRIUM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,kube=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(args.log_format);

    let mut config = kube::Config::infer().await.context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    // Named requests: audit logs and API priority and fairness can tell the operator apart.
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(concat!("atrium-operator/", env!("CARGO_PKG_VERSION"))),
    ));
    let client = Client::try_from(config).context("building the Kubernetes client")?;
    let identity = format!(
        "{}-{:06x}",
        std::env::var("POD_NAME").unwrap_or_else(|_| hostname()),
        rand::random::<u32>() & 0xff_ffff
    );
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_on_signal(shutdown.clone()));
    tokio::spawn(atrium::runtime::memory::trim_periodically(shutdown.clone()));

    let server = tokio::spawn(health::serve(args.http_addr, health.clone(), metrics.clone(), shutdown.clone()));

    wait_for_crds(&client, &health, &shutdown).await;
    let ctx = Arc::new(Context::new(client.clone(), metrics.clone(), health.clone(), &identity));
    let opts = RunOptions {
        concurrency: args.concurrency,
        object_selector: args.object_selector.clone(),
        install_workspace_roles: args.install_workspace_roles,
    };

    if !args.leader_elect {
        metrics.set_leader(true);
        health.set_leader(true, controller::COUNT);
        controller::run_all(ctx, opts, shutdown.clone()).await;
    } else {
        let ns = args
            .lease_namespace
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| client.default_namespace().to_string());
        let mut cfg = LeaseConfig::new(&args.lease_name, &identity);
        cfg.lease_duration = Duration::from_secs(args.lease_duration.max(3));
        cfg.renew_period = cfg.lease_duration / 3;
        cfg.retry_period = (cfg.lease_duration / 5).max(Duration::from_secs(1));
        let mut elector = LeaderElector::new(Api::<Lease>::namespaced(client.clone(), &ns), cfg);
        info!(identity = %elector.identity(), lease = %format!("{ns}/{}", args.lease_name), "waiting for leadership");
        while !shutdown.is_cancelled() {
            tokio::select! {
                _ = elector.acquire() => {}
                _ = shutdown.cancelled() => break,
            }
            metrics.set_leader(true);
            health.set_leader(true, controller::COUNT);
            let term = shutdown.child_token();
            let controllers = tokio::spawn(controller::run_all(ctx.clone(), opts.clone(), term.clone()));
            tokio::select! {
                _ = elector.hold() => warn!("lost leadership: stopping the controllers"),
                _ = shutdown.cancelled() => {}
            }
            term.cancel();
            let _ = controllers.await;
            metrics.set_leader(false);
            health.set_leader(false, 0);
        }
        elector.release().await;
    }
    shutdown.cancel();
    let _ = server.await;
    info!("stopped");
    Ok(())
}

/// Waits until every Atrium CRD is Established, so that the operator can start before its CRDs
/// (as Argo CD and Helm may order things) instead of crash-looping.
async fn wait_for_crds(client: &Client, health: &Health, shutdown: &CancellationToken) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let wanted: Vec<String> = api::all_crds().iter().map(|c| c.name_any()).collect();
    let mut logged = false;
    loop {
        let mut missing = Vec::new();
        for name in &wanted {
            let established = match crds.get_opt(name).await {
                Ok(Some(crd)) => crd
                    .status
                    .and_then(|s| s.conditions)
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Established" && c.status == "True")),
                Ok(None) => false,
                Err(e) => {
                    warn!(error = %e, "could not read CRDs");
                    false
                }
            };
            if !established {
                missing.push(name.as_str());
            }
        }
        if missing.is_empty() {
            health.set_crds_present(true);
            info!("all CRDs are installed");
            return;
        }
        if !logged {
            warn!(?missing, "waiting for Atrium's CRDs to be installed (kubectl apply -f crds/ or the Helm chart)");
            logged = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

async fn shutdown_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    info!("shutting down");
    token.cancel();
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "atrium".into())
}
