//! The operator's HTTP endpoints: `/healthz` (the process serves), `/readyz` (CRDs present and,
//! on the leader, every controller's cache synced) and `/metrics` (Prometheus).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::runtime::metrics::Metrics;

/// What `/readyz` reports.
#[derive(Default)]
pub struct Health {
    crds_present: AtomicBool,
    leader: AtomicBool,
    synced: AtomicUsize,
    controllers: AtomicUsize,
}

impl Health {
    pub fn set_crds_present(&self, v: bool) {
        self.crds_present.store(v, Ordering::Relaxed);
    }
    /// Leadership starts (with `controllers` caches to sync) or ends.
    pub fn set_leader(&self, leader: bool, controllers: usize) {
        self.synced.store(0, Ordering::Relaxed);
        self.controllers.store(controllers, Ordering::Relaxed);
        self.leader.store(leader, Ordering::Relaxed);
    }
    pub fn cache_synced(&self) {
        self.synced.fetch_add(1, Ordering::Relaxed);
    }
    /// Ready: the CRDs are there, and a leader has synced every controller's cache. A standby
    /// replica is ready as soon as the CRDs are there (it can take over).
    pub fn ready(&self) -> Result<(), String> {
        if !self.crds_present.load(Ordering::Relaxed) {
            return Err("waiting for Atrium's CRDs to be installed".into());
        }
        if self.leader.load(Ordering::Relaxed) {
            let (synced, total) = (self.synced.load(Ordering::Relaxed), self.controllers.load(Ordering::Relaxed));
            if synced < total {
                return Err(format!("{synced} of {total} controller caches synced"));
            }
        }
        Ok(())
    }
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a static response is valid")
}

fn route(req: &Request<Incoming>, health: &Health, metrics: &Metrics) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/healthz" | "/livez" => respond(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => match health.ready() {
            Ok(()) => respond(StatusCode::OK, "text/plain", "ok\n".into()),
            Err(why) => respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("{why}\n")),
        },
        "/metrics" => {
            respond(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", metrics.render())
        }
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    info!(%addr, "serving /healthz, /readyz and /metrics");
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => { warn!(error = %e, "accept failed"); continue; }
            },
            _ = shutdown.cancelled() => return Ok(()),
        };
        let (health, metrics) = (health.clone(), metrics.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let resp = route(&req, &health, &metrics);
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_crds_and_caches() {
        let h = Health::default();
        assert!(h.ready().unwrap_err().contains("CRDs"));
        h.set_crds_present(true);
        assert!(h.ready().is_ok(), "a standby replica is ready");
        h.set_leader(true, 2);
        assert!(h.ready().unwrap_err().contains("0 of 2"));
        h.cache_synced();
        h.cache_synced();
        assert!(h.ready().is_ok());
    }
}
