//! The controllers, one folder per kind, and the machinery they share to run: a resilient
//! watch, bounded concurrency, per-object backoff, metrics and graceful shutdown.

use std::{fmt::Debug, future::Future, sync::Arc, time::Instant};

use futures::{FutureExt, StreamExt};
use kube::{
    Resource, ResourceExt,
    runtime::{
        Controller, WatchStreamExt,
        controller::{self, Action},
        events::EventType,
        reflector, watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{context::Context, runtime::watch::lenient_watcher};

pub mod model;
pub mod model_deployment;

pub mod compute_cluster;
pub mod instance_type;
pub mod training_run;
pub mod workspace;

/// Reasons of `Ready=False` that mean an object is on its way — waiting for something that happens
/// by itself (pods starting, an address being assigned, storage or a namespace settling) — rather
/// than that a person has to act. Argo CD's health check shipped with the chart
/// (`charts/atrium/files/argocd/ready.lua`) shows these as Progressing and every other `False`
/// reason as Degraded; `tests/argocd_health.rs` checks that the two agree.
pub const WAITING_REASONS: &[&str] = &[
    model_deployment::status::REASON_DEPLOYMENT_NOT_READY,
    model_deployment::status::REASON_ROUTER_NOT_READY,
    model_deployment::status::REASON_LOAD_BALANCER_PENDING,
    model::resolve::REASON_MODEL_NOT_READY,
    model::status::REASON_STORAGE_NOT_READY,
    compute_cluster::status::REASON_INSTANCE_TYPE_PENDING,
    workspace::REASON_NAMESPACE_TERMINATING,
];

/// Why a reconcile failed. The variant names the metric label and tells transient from not.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request: retried with backoff.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Something the controller cannot serialize (a bug): retried with backoff.
    #[error("encoding: {0}")]
    Encode(#[from] serde_json::Error),
    /// A cache the reconcile reads has not had its first listing yet: retried with backoff.
    #[error("{0}")]
    NotSynced(#[from] crate::runtime::cache::NotSynced),
}

impl Error {
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(s)) if s.code == 422 || s.code == 400 => "invalid",
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "transport",
            Error::Encode(_) => "encode",
            Error::NotSynced(_) => "not_synced",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Options shared by every controller.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Reconciles of one controller at once (distinct objects; one object is never reconciled
    /// twice at once).
    pub concurrency: u16,
    /// Only objects whose labels match are reconciled.
    pub object_selector: Option<String>,
    /// Install the workspace ClusterRoles at start (when no Helm chart does).
    pub install_workspace_roles: bool,
}

/// Wraps a reconcile with metrics and backoff bookkeeping, and runs the controller until
/// `shutdown` resolves. `setup` adds watches of children (`owns`, `watches`).
pub async fn run<K, F, Fut>(
    name: &'static str,
    ctx: Arc<Context>,
    opts: RunOptions,
    setup: impl FnOnce(Controller<K>) -> Controller<K>,
    reconcile: F,
    shutdown: CancellationToken,
) where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug + Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<Context>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action>> + Send + 'static,
{
    let (reader, writer) = reflector::store();
    // Listed in pages: a controller's own objects are decoded from untyped JSON trees, several
    // times their size, a page at a time (runtime::watch::LIST_PAGE).
    let mut wc = watcher::Config::default().page_size(crate::runtime::watch::LIST_PAGE);
    if let Some(sel) = &opts.object_selector {
        wc = wc.labels(sel);
    }
    // Readiness counts this cache as synced at the first complete listing. (Awaiting
    // `Store::wait_until_ready` beside the controller would not do: it wakes one waiter only.)
    let health = ctx.health.clone();
    let mut synced = false;
    let objects = lenient_watcher::<K>(ctx.client.clone(), wc, name, ctx.metrics.clone())
        .inspect(move |event| {
            if !synced && matches!(event, Ok(watcher::Event::InitDone)) {
                synced = true;
                tracing::debug!(controller = name, "cache synced");
                health.cache_synced();
            }
        })
        .default_backoff()
        // No reconcile reads its own object's managed fields: a field set per manager is most
        // of a small object's size, kept for every object in the cache.
        .modify(|object: &mut K| object.meta_mut().managed_fields = None)
        .reflect(writer)
        .applied_objects();
    let controller = Controller::for_stream(objects, reader)
        .with_config(controller::Config::default().concurrency(opts.concurrency))
        .graceful_shutdown_on(shutdown.cancelled_owned());
    let reconcile = Arc::new(reconcile);
    setup(controller)
        .run(
            move |obj, ctx| {
                let reconcile = reconcile.clone();
                async move {
                    // The cache has not caught up with this controller's last status write: the
                    // write's own event brings the object back, fresh (runtime::own_writes).
                    if let Some(wait) = ctx.own_writes.stale(obj.as_ref()) {
                        return Ok(Action::requeue(wait));
                    }
                    let start = Instant::now();
                    let key = object_key(obj.as_ref());
                    let result = reconcile(obj.clone(), ctx.clone()).await;
                    ctx.metrics.reconciled(name, start.elapsed());
                    match &result {
                        Ok(_) => ctx.backoff.reset(&key),
                        // One Event when an object starts failing, not one per retry.
                        Err(e) if !ctx.backoff.is_failing(&key) => {
                            let note = format!("{e} (retrying with backoff)");
                            ctx.event(obj.as_ref(), EventType::Warning, "ReconcileFailed", note, "Reconcile");
                        }
                        Err(_) => {}
                    }
                    result
                }
                .boxed()
            },
            move |obj, err, ctx| {
                ctx.metrics.failed(name, err.metric_reason());
                let delay = ctx.backoff.next_delay(&object_key(obj.as_ref()));
                warn!(controller = name, object = %object_key(obj.as_ref()), error = %err, retry_in = ?delay, "reconcile failed");
                Action::requeue(delay)
            },
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
    info!(controller = name, "stopped");
}

fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    match obj.namespace() {
        Some(ns) => format!("{}/{ns}/{}", K::kind(&()), obj.name_any()),
        None => format!("{}/{}", K::kind(&()), obj.name_any()),
    }
}

/// How many controllers [`run_all`] runs (for readiness: each syncs one cache).
pub const COUNT: usize = 6;

/// Runs every controller until `shutdown` is cancelled.
pub async fn run_all(ctx: Arc<Context>, opts: RunOptions, shutdown: CancellationToken) {
    tokio::join!(
        workspace::run(ctx.clone(), opts.clone(), shutdown.clone()),
        instance_type::run(ctx.clone(), opts.clone(), shutdown.clone()),
        compute_cluster::run(ctx.clone(), opts.clone(), shutdown.clone()),
        training_run::run(ctx.clone(), opts.clone(), shutdown.clone()),
        model::run(ctx.clone(), opts.clone(), shutdown.clone()),
        model_deployment::run(ctx.clone(), opts.clone(), shutdown.clone()),
    );
}
