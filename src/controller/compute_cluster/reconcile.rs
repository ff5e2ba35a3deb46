//! The ComputeCluster pipeline: dereference the instance type → plan (admission and standby,
//! from the runs and Jobs in the caches) → build the standby pods → apply and prune → status.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::{
    Api, ResourceExt,
    core::PartialObjectMeta,
    runtime::{controller::Action, events::EventType, reflector::ObjectRef},
};

use super::{MANAGER, admission, build, status};
use crate::{
    api::{ComputeCluster, HasConditions, InstanceType, TrainingRun},
    context::Context,
    controller::Result,
    runtime::{
        apply::{apply, apply_status, prune},
        cache::Cache,
        conditions::now,
        labels::OWNER_UID,
    },
};

/// What the reconcile reads.
#[derive(Clone)]
pub struct Caches {
    pub itypes: Cache<InstanceType>,
    pub runs: Cache<TrainingRun>,
    pub jobs: Cache<Job>,
    pub standby: Cache<PartialObjectMeta<Pod>>,
}

impl Caches {
    async fn synced(&self) -> Result<()> {
        self.itypes.synced().await?;
        self.runs.synced().await?;
        self.jobs.synced().await?;
        self.standby.synced().await?;
        Ok(())
    }
}

/// How soon a refused standby pod is tried again: nothing the controller watches announces a
/// ResourceQuota raised or a policy changed (a run finishing, which frees quota, is an event).
const REFUSED_RETRY: std::time::Duration = std::time::Duration::from_secs(60);

pub async fn reconcile(cluster: Arc<ComputeCluster>, ctx: Arc<Context>, caches: Caches) -> Result<Action> {
    if cluster.metadata.deletion_timestamp.is_some() {
        // The garbage collector removes the standby pods.
        return Ok(Action::await_change());
    }
    caches.synced().await?;
    let ns = cluster.namespace().unwrap_or_default();
    let uid = cluster.uid().unwrap_or_default();
    let now_ts = jiff::Timestamp::now();

    // Dereference.
    let itype_name = cluster.spec.effective_instance_type();
    let itype = caches.itypes.store().get(&ObjectRef::new(itype_name));
    let readiness = status::instance_type_readiness(itype_name, itype.as_deref());

    // Plan from the live runs and their Jobs.
    let runs = caches.runs.store().state();
    let jobs = caches.jobs.store().state();
    let jobs_by_run: HashMap<&str, &Job> = jobs
        .iter()
        .filter(|j| j.namespace().as_deref() == Some(ns.as_str()))
        .filter_map(|j| Some((j.labels().get(OWNER_UID)?.as_str(), j.as_ref())))
        .collect();
    let job_of = |run: &TrainingRun| run.metadata.uid.as_deref().and_then(|uid| jobs_by_run.get(uid).copied());
    let slots = admission::slots(&cluster, runs.iter().map(Arc::as_ref), job_of);
    let plan = admission::plan(&cluster.spec, &slots, now_ts);

    // Build: no instance type that fits, no standby pods.
    let desired = match (&readiness, &itype) {
        (Ok(_), Some(itype)) => build::standby_pods(&cluster, itype, plan.standby),
        _ => Vec::new(),
    };

    // Apply and prune.
    let live: Vec<Arc<PartialObjectMeta<Pod>>> = caches
        .standby
        .store()
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()) && p.labels().get(OWNER_UID) == Some(&uid))
        .collect();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mut keep = BTreeSet::new();
    // The API server's refusal of a standby pod: a ResourceQuota it would exceed, or an admission
    // policy. The pods after it are not tried (they would be refused too); the live ones stay.
    let mut refused = None;
    for pod in desired {
        let name = pod.name_any();
        let live_meta = live.iter().find(|p| p.name_any() == name).map(|p| &p.metadata);
        if refused.is_none() {
            match apply(&pods, MANAGER, pod, live_meta).await {
                Ok(_) => {
                    keep.insert(name);
                    continue;
                }
                Err(kube::Error::Api(s)) if matches!(s.code, 400 | 403 | 422) => refused = Some(s.message),
                Err(e) => return Err(e.into()),
            }
        }
        if live_meta.is_some() {
            keep.insert(name);
        }
    }
    let client = ctx.client.clone();
    let live_metas: Vec<_> = live.iter().map(|p| p.metadata.clone()).collect();
    let pruned =
        prune(|ns: Option<&str>| Api::<Pod>::namespaced(client.clone(), ns.unwrap_or_default()), &live_metas, &keep)
            .await?;
    if pruned > 0 {
        tracing::debug!(cluster = %cluster.name_any(), pruned, "released standby pods");
    }

    // Status, from what is live: every pod just applied exists (the cache may not have seen a new
    // one yet, and counting it now saves a second status write), unless it is on its way out.
    let terminating =
        |name: &String| live.iter().any(|p| p.metadata.deletion_timestamp.is_some() && &p.name_any() == name);
    let live_standby = keep.iter().filter(|name| !terminating(name)).count() as i32;
    let desired_status = status::desired_status(&cluster, &readiness, &plan, live_standby, refused.as_deref(), &now());
    let api: Api<ComputeCluster> = Api::namespaced(ctx.client.clone(), &ns);
    if apply_status(&api, MANAGER, &ctx.own_writes, cluster.as_ref(), cluster.status.as_ref(), &desired_status).await? {
        let (was, is) = (cluster.is_ready(), desired_status.is_ready());
        if was != is || cluster.status.is_none() {
            let ready = &desired_status.conditions[0];
            let type_ = if is { EventType::Normal } else { EventType::Warning };
            ctx.event(cluster.as_ref(), type_, &ready.reason, ready.message.clone(), "Reconcile");
        }
    }

    // Come back when the idle time of freed instances runs out; everything else is an event, but
    // a quota raised or a policy relaxed: a refused pod is tried again after a while.
    let retry_refused = refused.map(|_| REFUSED_RETRY);
    let scale_down = plan.next_scale_down.map(|left| left + std::time::Duration::from_millis(500));
    Ok(match scale_down.into_iter().chain(retry_refused).min() {
        Some(wait) => Action::requeue(wait),
        None => Action::await_change(),
    })
}
