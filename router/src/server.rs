//! Listeners, connections and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};

use crate::admin;
use crate::proxy::{self, Proxy};
use crate::reload::Reloader;
use crate::state::Shared;

/// How to run a router.
#[derive(Debug, Clone)]
pub struct Options {
    /// Data port address.
    pub listen: SocketAddr,
    /// Admin port address (`/healthz`, `/readyz`, `/metrics`).
    pub admin_listen: SocketAddr,
    /// The configuration file (JSON [`crate::config::RouterConfig`]).
    pub config: PathBuf,
    /// Directory with the `primary` and `secondary` key files; none: no keys.
    pub keys_dir: Option<PathBuf>,
    /// How often the configuration and keys are re-read.
    pub reload_interval: Duration,
    /// How long the router keeps accepting connections after it is asked to stop, with readiness
    /// already failing: endpoints and load balancers take a moment to stop sending new ones.
    pub shutdown_delay: Duration,
    /// Longest wait for in-flight requests at shutdown.
    pub drain_timeout: Duration,
}

/// A router with its ports bound, ready to [`Router::run`].
#[derive(Debug)]
pub struct Router {
    shared: Arc<Shared>,
    data: TcpListener,
    admin: TcpListener,
    reloader: Reloader,
    options: Options,
}

impl Router {
    /// Loads the configuration and keys once and binds both ports. A missing or invalid
    /// configuration is not fatal: the router starts unready and picks the file up when it
    /// appears or is fixed.
    pub async fn bind(options: Options) -> io::Result<Self> {
        let shared = Shared::new();
        let mut reloader = Reloader::new(options.config.clone(), options.keys_dir.clone());
        reloader.poll(&shared);
        let data = TcpListener::bind(options.listen).await?;
        let admin = TcpListener::bind(options.admin_listen).await?;
        Ok(Self { shared, data, admin, reloader, options })
    }

    /// The bound data address (useful with port 0).
    pub fn data_addr(&self) -> io::Result<SocketAddr> {
        self.data.local_addr()
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Serves until `shutdown` completes; then fails readiness at once, keeps accepting for the
    /// shutdown delay (so that callers routed here before the endpoints update are still served),
    /// stops accepting, and waits up to the drain timeout for open connections to finish their
    /// requests.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Self { shared, data, admin, reloader, options } = self;
        let reload = tokio::spawn(reloader.run(Arc::clone(&shared), options.reload_interval));
        let admin = tokio::spawn(serve_admin(admin, Arc::clone(&shared)));

        let proxy = Arc::new(Proxy::new(Arc::clone(&shared), proxy::client()));
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // The timer enables HTTP/1's header read timeout (30 s by default), which closes
        // connections that never finish sending a request head.
        builder.http1().timer(TokioTimer::new());
        builder.http2().timer(TokioTimer::new());
        let graceful = GracefulShutdown::new();

        let stop_accepting = async {
            shutdown.await;
            shared.start_shutdown();
            tracing::info!(
                delay_s = options.shutdown_delay.as_secs_f64(),
                "shutdown requested: not ready; still accepting connections for the shutdown delay"
            );
            // Without a delay, stop at once: no await between failing readiness and closing.
            if !options.shutdown_delay.is_zero() {
                tokio::time::sleep(options.shutdown_delay).await;
            }
        };
        tokio::pin!(stop_accepting);
        loop {
            tokio::select! {
                accepted = data.accept() => match accepted {
                    Ok((stream, remote)) => {
                        serve_data(&builder, &graceful, stream, remote, Arc::clone(&proxy));
                    }
                    Err(e) => accept_failed(e).await,
                },
                () = &mut stop_accepting => break,
            }
        }

        drop(data);
        tracing::info!(connections = graceful.count(), "shutting down: draining in-flight requests");
        match tokio::time::timeout(options.drain_timeout, graceful.shutdown()).await {
            Ok(()) => tracing::info!("drained"),
            Err(_) => tracing::warn!(
                timeout_s = options.drain_timeout.as_secs_f64(),
                "drain timeout: closing the remaining connections"
            ),
        }
        reload.abort();
        admin.abort();
    }
}

fn serve_data(
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    stream: TcpStream,
    remote: SocketAddr,
    proxy: Arc<Proxy>,
) {
    // Responses are often small and written in one go; do not let Nagle hold them back.
    let _ = stream.set_nodelay(true);
    let ip = remote.ip();
    let service = service_fn(move |request| {
        let proxy = Arc::clone(&proxy);
        async move { Ok::<_, Infallible>(proxy.handle(request, ip).await) }
    });
    let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            // Mostly callers closing connections mid-request; not the router's problem.
            tracing::debug!(%remote, error = %proxy::error_chain(e.as_ref()), "connection ended with an error");
        }
    });
}

async fn serve_admin(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                accept_failed(e).await;
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        let service = service_fn(move |request| {
            let response = admin::handle(&shared, &request);
            async move { Ok::<_, Infallible>(response) }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Accept fails mostly when out of file descriptors; pausing briefly lets connections close
/// instead of spinning on the error.
async fn accept_failed(error: io::Error) {
    tracing::error!(%error, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}
