//! The ComputeCluster controller: standby pods that keep instances warm, admission of runs up
//! to `maxInstances` (first come, first served), idle scale-down and the instance counts in
//! status (docs/compute.md).
//!
//! Admission itself is decided by the TrainingRun controller from the same pure [`admission`]
//! plan this controller uses for its counts, so the two always agree.
//!
//! Watches: standby pods by metadata (label-selected), the Jobs of training runs (label-selected,
//! slimmed), training runs and instance types. The PriorityClasses are applied at start-up.

pub mod admission;
pub mod build;
mod reconcile;
pub mod status;

use std::sync::Arc;

use futures::Stream;
use k8s_openapi::api::{batch::v1::Job, core::v1::Pod, scheduling::v1::PriorityClass};
use kube::{
    Api, Client, ResourceExt,
    core::PartialObjectMeta,
    runtime::{WatchStreamExt, reflector::ObjectRef, watcher},
};
use tokio_util::sync::CancellationToken;

use super::RunOptions;
use crate::{
    api::{ComputeCluster, InstanceType, TrainingRun},
    context::Context,
    runtime::{apply::apply, cache::cache, watch::lenient_watcher},
};

/// The field manager of everything this controller writes.
pub const MANAGER: &str = "atrium-computecluster";

/// Runs the ComputeCluster controller until `shutdown` is cancelled.
pub async fn run(ctx: Arc<Context>, opts: RunOptions, shutdown: CancellationToken) {
    tokio::spawn(install_priority_classes(ctx.client.clone(), shutdown.clone()));
    let client = ctx.client.clone();
    let metrics = ctx.metrics.clone();

    let (itypes, itype_changes) = cache(lenient_watcher::<InstanceType>(
        client.clone(),
        watcher::Config::default(),
        "computecluster",
        metrics.clone(),
    ));
    let (runs, run_changes) = cache(lenient_watcher::<TrainingRun>(
        client.clone(),
        selected(opts.object_selector.as_deref()),
        "computecluster",
        metrics,
    ));
    let (jobs, job_changes) = cache(run_job_events(client.clone()));
    let standby_events = watcher::watcher(
        Api::<PartialObjectMeta<Pod>>::all(client.clone()),
        watcher::Config::default().labels(&crate::runtime::labels::children_of_kind("computecluster")).any_semantic(),
    );
    let (standby, standby_changes) = cache(standby_events);
    let caches = reconcile::Caches { itypes, runs, jobs, standby };

    super::run::<ComputeCluster, _, _>(
        "computecluster",
        ctx,
        opts,
        |c| {
            let clusters = c.store();
            let clusters_of_type = move |itype: InstanceType| {
                let name = itype.name_any();
                clusters
                    .state()
                    .iter()
                    .filter(|cc| cc.spec.effective_instance_type() == name)
                    .map(|cc| ObjectRef::from_obj(cc.as_ref()))
                    .collect::<Vec<_>>()
            };
            c.owns_stream(standby_changes)
                .watches_stream(itype_changes, clusters_of_type)
                .watches_stream(run_changes, |run: TrainingRun| {
                    let ns = run.namespace().unwrap_or_default();
                    Some(ObjectRef::new(&run.spec.compute_cluster).within(&ns))
                })
                .watches_stream(job_changes, |job: Job| {
                    let ns = job.namespace().unwrap_or_default();
                    job.annotations().get(admission::CLUSTER_ANNOTATION).map(|cc| ObjectRef::new(cc).within(&ns))
                })
        },
        move |cluster, ctx| reconcile::reconcile(cluster, ctx, caches.clone()),
        shutdown,
    )
    .await;
}

/// A watch config with the operator's object selector, if any.
pub(crate) fn selected(object_selector: Option<&str>) -> watcher::Config {
    let config = watcher::Config::default().any_semantic();
    match object_selector {
        Some(s) => config.labels(s),
        None => config,
    }
}

/// The Jobs of training runs, without their pod templates (what the caches need is in the
/// metadata and the status).
pub(crate) fn run_job_events(
    client: Client,
) -> impl Stream<Item = Result<watcher::Event<Job>, watcher::Error>> + Send + 'static {
    watcher::watcher(
        Api::<Job>::all(client),
        watcher::Config::default().labels(&crate::runtime::labels::children_of_kind("trainingrun")).any_semantic(),
    )
    .modify(|job: &mut Job| {
        job.metadata.managed_fields = None;
        if let Some(spec) = job.spec.as_mut() {
            spec.template = Default::default();
        }
    })
}

/// Applies the PriorityClasses (skipped when unchanged), retrying until it succeeds.
async fn install_priority_classes(client: Client, shutdown: CancellationToken) {
    let api: Api<PriorityClass> = Api::all(client);
    crate::runtime::startup::until_done("PriorityClasses", shutdown, || async {
        let mut written = 0;
        for class in build::priority_classes() {
            let live = api.get_metadata_opt(&class.name_any()).await?;
            written += usize::from(apply(&api, MANAGER, class, live.as_ref().map(|m| &m.metadata)).await?);
        }
        Ok(written)
    })
    .await;
}
