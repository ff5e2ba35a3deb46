//! The controllers, one folder per kind, and the machinery they share to run: a resilient
//! watch, bounded concurrency, per-object backoff, metrics and graceful shutdown.

use std::{fmt::Debug, future::Future, sync::Arc, time::Instant};

use futures::{FutureExt, StreamExt};
use kube::{
    Resource, ResourceExt,
    runtime::{
        Controller, WatchStreamExt,
        controller::{self, Action},
        reflector, watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{context::Context, runtime::watch::lenient_watcher};

/// Why a reconcile failed. The variant names the metric label and tells transient from not.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request: retried with backoff.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Something the controller cannot serialize (a bug): retried with backoff.
    #[error("encoding: {0}")]
    Encode(#[from] serde_json::Error),
}

impl Error {
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(s)) if s.code == 422 || s.code == 400 => "invalid",
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "transport",
            Error::Encode(_) => "encode",
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
    let mut wc = watcher::Config::default().any_semantic();
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
                    let start = Instant::now();
                    let key = object_key(obj.as_ref());
                    let result = reconcile(obj, ctx.clone()).await;
                    ctx.metrics.reconciled(name, start.elapsed());
                    if result.is_ok() {
                        ctx.backoff.reset(&key);
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
    use crate::api::{ComputeCluster, InstanceType, Model, ModelDeployment, TrainingRun, Workspace};
    // Kinds whose controller has not landed yet are watched (so the operator is ready and their
    // objects are validated by their schemas) but not reconciled into anything.
    tokio::join!(
        run::<Workspace, _, _>("workspace", ctx.clone(), opts.clone(), |c| c, pending, shutdown.clone()),
        run::<InstanceType, _, _>("instancetype", ctx.clone(), opts.clone(), |c| c, pending, shutdown.clone()),
        run::<ComputeCluster, _, _>("computecluster", ctx.clone(), opts.clone(), |c| c, pending, shutdown.clone()),
        run::<TrainingRun, _, _>("trainingrun", ctx.clone(), opts.clone(), |c| c, pending, shutdown.clone()),
        run::<Model, _, _>("model", ctx.clone(), opts.clone(), |c| c, pending, shutdown.clone()),
        run::<ModelDeployment, _, _>("modeldeployment", ctx.clone(), opts.clone(), |c| c, pending, shutdown.clone()),
    );
}

/// The reconcile of a kind whose controller has not landed: nothing to do, no writes.
async fn pending<K>(_obj: Arc<K>, _ctx: Arc<Context>) -> Result<Action> {
    Ok(Action::await_change())
}
