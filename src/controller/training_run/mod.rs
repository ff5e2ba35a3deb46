//! The TrainingRun controller: admission on the run's compute cluster, the code snapshot, the
//! batch Job (Indexed with a headless Service and the PyTorch rendezvous environment when
//! distributed), phases, times and failures read from the pods, cancellation on delete and
//! Model registration on success (docs/compute.md).
//!
//! Watches: the Jobs of runs (label-selected, slimmed) and their pods (label-selected, slimmed
//! to metadata and status), the runs again (a change of one re-evaluates the runs waiting
//! behind it), and the compute clusters, instance types, workspaces and models runs refer to.

pub mod build;
mod reconcile;
pub mod status;

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use tokio_util::sync::CancellationToken;

use super::{
    RunOptions,
    compute_cluster::{admission::RUN_ANNOTATION, run_job_events, selected},
};
use crate::{
    api::{ComputeCluster, InstanceType, Model, TrainingRun, Workspace},
    context::Context,
    runtime::{cache::cache, watch::lenient_watcher},
};

/// The field manager of everything this controller writes.
pub const MANAGER: &str = "atrium-trainingrun";

/// Runs the TrainingRun controller until `shutdown` is cancelled.
pub async fn run(ctx: Arc<Context>, opts: RunOptions, shutdown: CancellationToken) {
    let client = ctx.client.clone();
    let metrics = ctx.metrics.clone();
    let all = || watcher::Config::default().any_semantic();

    let (runs, run_changes) = cache(lenient_watcher::<TrainingRun>(
        client.clone(),
        selected(opts.object_selector.as_deref()),
        "trainingrun",
        metrics.clone(),
    ));
    let (jobs, job_changes) = cache(run_job_events(client.clone()));
    let pod_events = watcher::watcher(
        Api::<Pod>::all(client.clone()),
        all().labels(&crate::runtime::labels::children_of_kind("trainingrun")),
    )
    .modify(|pod: &mut Pod| {
        pod.metadata.managed_fields = None;
        pod.spec = None;
    });
    let (pods, pod_changes) = cache(pod_events);
    let (clusters, cluster_changes) =
        cache(lenient_watcher::<ComputeCluster>(client.clone(), all(), "trainingrun", metrics.clone()));
    let (itypes, itype_changes) =
        cache(lenient_watcher::<InstanceType>(client.clone(), all(), "trainingrun", metrics.clone()));
    let (workspaces, workspace_changes) =
        cache(lenient_watcher::<Workspace>(client.clone(), all(), "trainingrun", metrics.clone()));
    let (models, model_changes) = cache(lenient_watcher::<Model>(client.clone(), all(), "trainingrun", metrics));

    let waiting = runs.store().clone();
    let caches = reconcile::Caches { runs, jobs, pods, clusters, itypes, workspaces, models };
    super::run::<TrainingRun, _, _>(
        "trainingrun",
        ctx,
        opts,
        move |c| {
            let (w1, w2, w3, w4, w5) = (waiting.clone(), waiting.clone(), waiting.clone(), waiting.clone(), waiting);
            c.watches_stream(job_changes, |job| owner_run(&job))
                .watches_stream(pod_changes, |pod: Pod| owner_run(&pod))
                // A run that starts, finishes or goes frees or takes room in its cluster's queue.
                .watches_stream(run_changes, move |changed: TrainingRun| {
                    let (ns, cluster, me) =
                        (changed.namespace(), changed.spec.compute_cluster.clone(), changed.name_any());
                    waiting_runs(&w1, |r| {
                        r.namespace() == ns && r.spec.compute_cluster == cluster && r.name_any() != me
                    })
                })
                .watches_stream(cluster_changes, move |cc: ComputeCluster| {
                    let (ns, name) = (cc.namespace(), cc.name_any());
                    waiting_runs(&w2, |r| r.namespace() == ns && r.spec.compute_cluster == name)
                })
                .watches_stream(itype_changes, move |_: InstanceType| waiting_runs(&w3, |_| true))
                .watches_stream(workspace_changes, move |ws: Workspace| {
                    let ns = ws.status.and_then(|s| s.namespace);
                    waiting_runs(&w4, |r| ns.is_some() && r.namespace() == ns)
                })
                .watches_stream(model_changes, move |model: Model| {
                    let ns = model.namespace();
                    waiting_runs(&w5, |r| r.namespace() == ns && r.spec.inputs.values().any(|i| i.model.is_some()))
                })
        },
        move |run, ctx| reconcile::reconcile(run, ctx, caches.clone()),
        shutdown,
    )
    .await;
}

/// The run a Job or pod belongs to, from the annotation the Job template carries.
fn owner_run<K: kube::Resource>(child: &K) -> Option<ObjectRef<TrainingRun>> {
    let meta = child.meta();
    let run = meta.annotations.as_ref()?.get(RUN_ANNOTATION)?;
    Some(ObjectRef::new(run).within(meta.namespace.as_deref()?))
}

/// The runs in `store` that have not been admitted yet and match `filter`.
fn waiting_runs(store: &Store<TrainingRun>, filter: impl Fn(&TrainingRun) -> bool) -> Vec<ObjectRef<TrainingRun>> {
    store
        .state()
        .iter()
        .filter(|r| {
            let status = r.status.as_ref();
            status.and_then(|s| s.job_name.as_ref()).is_none()
                && !status.and_then(|s| s.phase).is_some_and(|p| p.is_terminal())
        })
        .filter(|r| filter(r))
        .map(|r| ObjectRef::from_obj(r.as_ref()))
        .collect()
}
