//! `atrium-router`: the inference router process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use atrium_router::server::{Options, Router};
use clap::{Parser, ValueEnum};
use tracing_subscriber::EnvFilter;

/// Atrium's inference router: keys, traffic split, mirroring, timeouts and concurrency limits in
/// front of a ModelDeployment's deployments.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Data port: every request is proxied to a deployment.
    #[arg(long, env = "ATRIUM_ROUTER_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Admin port: /healthz, /readyz, /metrics.
    #[arg(long, env = "ATRIUM_ROUTER_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    admin_listen: SocketAddr,
    /// Router configuration (JSON written by the operator); re-read every second.
    #[arg(long, env = "ATRIUM_ROUTER_CONFIG")]
    config: PathBuf,
    /// Directory holding the key files `primary` and `secondary`; re-read every second.
    #[arg(long, env = "ATRIUM_ROUTER_KEYS_DIR")]
    keys_dir: Option<PathBuf>,
    /// Seconds the router keeps accepting connections after SIGTERM, not ready, while endpoints
    /// and load balancers stop sending it new ones.
    #[arg(long, env = "ATRIUM_ROUTER_SHUTDOWN_DELAY", default_value_t = 5)]
    shutdown_delay_seconds: u64,
    /// Longest wait for in-flight requests after SIGTERM (after the shutdown delay), in seconds.
    #[arg(long, env = "ATRIUM_ROUTER_DRAIN_TIMEOUT", default_value_t = 25)]
    drain_timeout_seconds: u64,
    /// Log format.
    #[arg(long, env = "ATRIUM_ROUTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // One access log line per request: write them from a separate thread, in batches, so that
    // requests never wait on stdout. Lossy: under extreme overload lines are dropped rather than
    // slowing the data path. The queue is preallocated: 16 Ki lines (~0.5 MiB) is about half a second
    // at full speed. The guard flushes what is queued when main returns.
    let (writer, _flush_on_exit) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(16 * 1024)
        .finish(std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout()));
    // RUST_LOG overrides; e.g. `info,atrium_router::access=off` silences access logs.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match args.log_format {
        LogFormat::Json => logs.json().flatten_event(true).init(),
        LogFormat::Text => logs.with_ansi(false).init(),
    }

    let router = Router::bind(Options {
        listen: args.listen,
        admin_listen: args.admin_listen,
        config: args.config,
        keys_dir: args.keys_dir,
        reload_interval: Duration::from_secs(1),
        shutdown_delay: Duration::from_secs(args.shutdown_delay_seconds),
        drain_timeout: Duration::from_secs(args.drain_timeout_seconds),
    })
    .await?;
    tracing::info!(
        listen = %router.data_addr()?,
        admin_listen = %router.admin_addr()?,
        "atrium-router started"
    );
    router.run(shutdown_signal()).await;
    Ok(())
}

/// SIGTERM (Kubernetes) or SIGINT (a terminal). If the handlers cannot be installed the router
/// runs until killed, which is what it would do without them.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::warn!("cannot install signal handlers; graceful shutdown is disabled");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
