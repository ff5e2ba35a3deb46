//! The TrainingRun pipeline.
//!
//! - Finished (`Succeeded`, `Failed`, `Canceled`): the status is the run's record and stays; a
//!   success with `registerModel` makes sure its Model version exists.
//! - Admitted (its Job exists): phase, times and failure from the Job and its pods.
//! - Not admitted: dereference (workspace storage, compute cluster, instance type, inputs) →
//!   admission (the cluster's first-come-first-served queue) → snapshot the code → apply the
//!   headless Service and the Job. Anything missing keeps the run `Queued` with a reason.
//!
//! The Job is created once and never updated: the run's spec cannot change, and a later change
//! of its cluster or instance type must not touch a running Job.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{ConfigMap, Pod, Service},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, PostParams, Preconditions},
    runtime::{controller::Action, events::EventType, reflector::ObjectRef},
};

use super::{
    MANAGER,
    build::{self, CodeMount, JobInputs},
    status::{self, Observed, Record},
};
use crate::{
    api::{
        ComputeCluster, InstanceType, Model, TrainingRun, Workspace,
        training_run::{CodeSnapshot, RegisterModel, RunPhase, TrainingRunStatus},
    },
    context::Context,
    controller::{
        Result,
        compute_cluster::{
            admission::{self, Admission},
            status::instance_type_readiness,
        },
    },
    runtime::{
        apply::{apply, apply_status, is_conflict, is_not_found},
        cache::Cache,
        conditions::now,
        labels::OWNER_UID,
    },
};

/// Reason: no Workspace owns the namespace, or its storage claim is not there yet.
pub const REASON_WORKSPACE_NOT_READY: &str = "WorkspaceNotReady";
/// Reason: the named compute cluster does not exist.
pub const REASON_CLUSTER_NOT_FOUND: &str = "ComputeClusterNotFound";
/// Reason: the run waits for an instance of its cluster.
pub const REASON_QUEUED: &str = "Queued";
/// Reason: the run needs more instances than its cluster's `maxInstances`.
pub const REASON_EXCEEDS_MAX: &str = "ExceedsMaxInstances";
/// Reason: the code ConfigMap does not exist.
pub const REASON_CODE_NOT_FOUND: &str = "CodeNotFound";
/// Reason: a child of an earlier run of the same name is still being deleted.
pub const REASON_PREVIOUS_RUN: &str = "PreviousRunCleanup";
/// Reason: a child's name is taken by an object that is not this run's.
pub const REASON_NAME_TAKEN: &str = "NameTaken";
/// Reason: an input's model does not exist, or its files are not on the workspace storage.
pub const REASON_INPUT_NOT_FOUND: &str = "InputNotFound";

/// What the reconcile reads.
#[derive(Clone)]
pub struct Caches {
    pub runs: Cache<TrainingRun>,
    pub jobs: Cache<Job>,
    pub pods: Cache<Pod>,
    pub clusters: Cache<ComputeCluster>,
    pub itypes: Cache<InstanceType>,
    pub workspaces: Cache<Workspace>,
    pub models: Cache<Model>,
}

impl Caches {
    async fn synced(&self) -> Result<()> {
        self.runs.synced().await?;
        self.jobs.synced().await?;
        self.pods.synced().await?;
        self.clusters.synced().await?;
        self.itypes.synced().await?;
        self.workspaces.synced().await?;
        self.models.synced().await?;
        Ok(())
    }

    /// The cached Job of `run`: its name, and owned by it (not a leftover of an earlier run of
    /// the same name).
    fn job_of(&self, run: &TrainingRun) -> Option<Arc<Job>> {
        let ns = run.namespace().unwrap_or_default();
        self.jobs.store().get(&ObjectRef::new(&build::job_name(run)).within(&ns)).filter(|j| owned_by(j.as_ref(), run))
    }
}

fn owned_by<K: kube::Resource>(child: &K, run: &TrainingRun) -> bool {
    let uid = run.uid();
    child.meta().labels.as_ref().and_then(|l| l.get(OWNER_UID)) == uid.as_ref()
}

pub async fn reconcile(run: Arc<TrainingRun>, ctx: Arc<Context>, caches: Caches) -> Result<Action> {
    if run.metadata.deletion_timestamp.is_some() {
        // Deleting a run cancels it: the garbage collector removes its Job, and so its pods.
        return Ok(Action::await_change());
    }
    caches.synced().await?;
    let current = run.status.clone().unwrap_or_default();
    if current.phase.is_some_and(RunPhase::is_terminal) {
        return finished(&run, &ctx, &current).await;
    }

    let ns = run.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let job_name = build::job_name(&run);
    let mut job = caches.job_of(&run);
    if job.is_none() && current.job_name.is_some() {
        // Created by an earlier reconcile: the cache may not have it yet.
        job = jobs.get_opt(&job_name).await?.filter(|j| owned_by(j, &run)).map(Arc::new);
    }

    if let Some(job) = job {
        return follow(&run, &ctx, &caches, &current, &job).await;
    }
    if current.job_name.is_some() {
        let observed = Observed::canceled("the run's Job was deleted before it finished", jiff::Timestamp::now());
        let record = Record {
            snapshot: current.snapshot.clone(),
            job_name: current.job_name.clone(),
            outputs_path: current.outputs_path.clone(),
            registered_model: None,
        };
        write_status(&run, &ctx, &observed, record).await?;
        return Ok(Action::await_change());
    }

    match prerequisites(&run, &caches) {
        Err(waiting) => {
            write_status(&run, &ctx, waiting.as_ref(), Record::default()).await?;
            Ok(Action::await_change())
        }
        Ok(admitted) => start(&run, &ctx, admitted).await,
    }
}

/// What an admitted run is started with.
struct Admitted {
    cluster: Arc<ComputeCluster>,
    itype: Arc<InstanceType>,
    claim: String,
    inputs: BTreeMap<String, String>,
}

/// Everything a run needs before it can start, and its place in the queue. `Err`: why it waits.
fn prerequisites(run: &TrainingRun, caches: &Caches) -> Result<Admitted, Box<Observed>> {
    let ns = run.namespace().unwrap_or_default();
    let workspaces = caches.workspaces.store().state();
    let Some(workspace) =
        workspaces.iter().find(|w| w.status.as_ref().and_then(|s| s.namespace.as_deref()) == Some(&ns))
    else {
        return Err(Box::new(Observed::queued(
            REASON_WORKSPACE_NOT_READY,
            format!("no Workspace owns namespace {ns:?}: training runs write to the storage of their workspace"),
        )));
    };
    let Some(claim) = workspace.status.as_ref().and_then(|s| s.storage.as_ref()?.claim_name.clone()) else {
        return Err(Box::new(Observed::queued(
            REASON_WORKSPACE_NOT_READY,
            format!("workspace {:?} has no storage claim yet", workspace.name_any()),
        )));
    };

    let cluster_name = &run.spec.compute_cluster;
    let Some(cluster) = caches.clusters.store().get(&ObjectRef::new(cluster_name).within(&ns)) else {
        return Err(Box::new(Observed::queued(
            REASON_CLUSTER_NOT_FOUND,
            format!("compute cluster {cluster_name:?} does not exist in namespace {ns:?}"),
        )));
    };
    let itype_name = cluster.spec.effective_instance_type();
    let itype = caches.itypes.store().get(&ObjectRef::new(itype_name));
    if let Err(cond) = instance_type_readiness(itype_name, itype.as_deref()) {
        return Err(Box::new(Observed::queued(&cond.reason, cond.message)));
    }
    let itype = itype.expect("a ready instance type exists");

    let mut inputs = BTreeMap::new();
    for (name, input) in &run.spec.inputs {
        let path = match (&input.storage_path, &input.model) {
            (Some(path), _) => path.clone(),
            (None, Some(reference)) => model_path(caches, &ns, reference)
                .map_err(|m| Box::new(Observed::queued(REASON_INPUT_NOT_FOUND, format!("input {name:?}: {m}"))))?,
            (None, None) => continue,
        };
        inputs.insert(name.clone(), path);
    }

    // The queue: this controller's runs of the cluster, with their Jobs.
    let runs = caches.runs.store().state();
    let jobs: Vec<_> = runs.iter().map(|r| caches.job_of(r)).collect();
    let slots: Vec<_> = runs
        .iter()
        .zip(&jobs)
        .filter(|(r, _)| r.namespace().as_deref() == Some(ns.as_str()) && &r.spec.compute_cluster == cluster_name)
        .map(|(r, j)| admission::slot(r, j.as_deref()))
        .collect();
    // This run is waiting whatever the cache says about it.
    let mut slots = slots;
    if let Some(me) = slots.iter_mut().find(|s| s.name == run.name_any()) {
        me.state = admission::SlotState::Waiting;
    } else {
        slots.push(admission::slot(run, None));
    }
    let plan = admission::plan(&cluster.spec, &slots, jiff::Timestamp::now());
    let max = cluster.spec.max_instances;
    match plan.admission(&run.name_any()) {
        Some(Admission::Admitted) => {}
        Some(Admission::TooLarge) => {
            return Err(Box::new(Observed::queued(
                REASON_EXCEEDS_MAX,
                format!(
                    "the run needs {} instances but compute cluster {cluster_name:?} has at most {max}: \
                     raise its maxInstances",
                    run.spec.instance_count
                ),
            )));
        }
        Some(Admission::Queued { position, .. }) => {
            return Err(Box::new(Observed::queued(
                REASON_QUEUED,
                format!(
                    "position {position} in the queue of compute cluster {cluster_name:?}: {} of {max} instances busy",
                    plan.busy
                ),
            )));
        }
        // Not reached: the run was made one of the waiting slots above.
        None => return Err(Box::new(Observed::queued(REASON_QUEUED, "waiting for admission"))),
    }
    Ok(Admitted { cluster, itype, claim, inputs })
}

/// The storage path of a model input: the Ready version asked for, else the highest Ready
/// version (the Model controller's rule).
fn model_path(
    caches: &Caches,
    ns: &str,
    reference: &crate::api::common::ModelReference,
) -> std::result::Result<String, String> {
    let models = caches.models.store().state();
    let model = crate::controller::model::resolve::resolve(ns, reference, models.iter().map(Arc::as_ref))
        .map_err(|unresolved| unresolved.message)?;
    model.spec.source.storage_path.clone().ok_or_else(|| {
        format!(
            "model {} is not on the workspace storage (only storagePath models can be inputs)",
            model.spec.version_ref()
        )
    })
}

/// Starts an admitted run: snapshot, Service, Job, then the status that says so.
async fn start(run: &TrainingRun, ctx: &Context, admitted: Admitted) -> Result<Action> {
    let ns = run.namespace().unwrap_or_default();
    let client = ctx.client.clone();
    let params = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };

    // The code snapshot, taken once: an immutable ConfigMap.
    let (code, snapshot) = match run.spec.code.as_ref().map(|c| (&c.config_map, &c.storage_path)) {
        Some((Some(source), _)) => {
            let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
            let name = build::snapshot_name(run);
            let snapshot = match config_maps.get_opt(&name).await? {
                Some(cm) if owned_by(&cm, run) => cm,
                Some(other) => return leftover(run, ctx, "ConfigMap", &other.metadata).await,
                None => {
                    let Some(source_cm) = config_maps.get_opt(source).await? else {
                        let waiting = Observed::queued(
                            REASON_CODE_NOT_FOUND,
                            format!("the code ConfigMap {source:?} does not exist in namespace {ns:?}"),
                        );
                        write_status(run, ctx, &waiting, Record::default()).await?;
                        // The user's ConfigMaps are not watched: look again later.
                        return Ok(Action::requeue(std::time::Duration::from_secs(30)));
                    };
                    // A conflict (created meanwhile) is retried, and then found above.
                    config_maps.create(&params, &build::snapshot_config_map(run, &source_cm)).await?
                }
            };
            let digest = snapshot.annotations().get(build::DIGEST_ANNOTATION).cloned();
            let record = CodeSnapshot { digest, config_map: Some(snapshot.name_any()) };
            (Some(CodeMount::Snapshot(snapshot.name_any())), Some(record))
        }
        Some((None, Some(path))) => (Some(CodeMount::StoragePath(path.clone())), None),
        _ => (None, None),
    };

    if let Some(service) = build::rendezvous_service(run) {
        let services: Api<Service> = Api::namespaced(client.clone(), &ns);
        apply(&services, MANAGER, service, None).await?;
    }

    let job = build::training_job(&JobInputs {
        run,
        cluster: &admitted.cluster,
        itype: &admitted.itype,
        claim: &admitted.claim,
        code,
        inputs: admitted.inputs,
    });
    let jobs: Api<Job> = Api::namespaced(client, &ns);
    match jobs.create(&params, &job).await {
        Ok(_) => {}
        Err(e) if is_conflict(&e) => match jobs.get_opt(&job.name_any()).await? {
            // Created before (a status write that failed since): it stands as it is.
            Some(existing) if owned_by(&existing, run) => {}
            Some(other) => return leftover(run, ctx, "Job", &other.metadata).await,
            None => return Err(e.into()),
        },
        Err(e) => return Err(e.into()),
    }
    ctx.event(
        run,
        EventType::Normal,
        "Admitted",
        format!("started Job {} on compute cluster {}", job.name_any(), run.spec.compute_cluster),
        "Start",
    );

    let observed = Observed {
        phase: RunPhase::Starting,
        reason: "Starting".into(),
        message: "waiting for the run's pods to start".into(),
        start_time: None,
        completion_time: None,
        failure: None,
        recheck_in: None,
        stop_job: false,
    };
    let record = Record {
        snapshot,
        job_name: Some(job.name_any()),
        outputs_path: Some(build::outputs_path(run)),
        registered_model: None,
    };
    write_status(run, ctx, &observed, record).await?;
    Ok(Action::await_change())
}

/// The name of a child is taken by an object that is not this run's. Either a child of an
/// earlier run of the same name that the garbage collector is about to remove (wait for it), or
/// something of the user's (say so: only a person can resolve it).
async fn leftover(run: &TrainingRun, ctx: &Context, kind: &str, other: &ObjectMeta) -> Result<Action> {
    let name = other.name.as_deref().unwrap_or_default();
    let earlier_run = other.deletion_timestamp.is_some()
        || other
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "TrainingRun" && o.api_version.starts_with("atrium.dev/"));
    let waiting = if earlier_run {
        Observed::queued(
            REASON_PREVIOUS_RUN,
            format!("the {kind} {name:?} of an earlier run of the same name is still being deleted"),
        )
    } else {
        Observed::queued(
            REASON_NAME_TAKEN,
            format!(
                "a {kind} named {name:?} already exists and is not this run's; the run needs that name: rename or delete it"
            ),
        )
    };
    write_status(run, ctx, &waiting, Record::default()).await?;
    Ok(Action::requeue(std::time::Duration::from_secs(if earlier_run { 5 } else { 60 })))
}

/// Follows an admitted run through its Job and pods.
async fn follow(
    run: &TrainingRun,
    ctx: &Context,
    caches: &Caches,
    current: &TrainingRunStatus,
    job: &Job,
) -> Result<Action> {
    let ns = run.namespace().unwrap_or_default();
    let pods: Vec<Arc<Pod>> = caches
        .pods
        .store()
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()) && owned_by(p.as_ref(), run))
        .collect();
    let pod_refs: Vec<&Pod> = pods.iter().map(Arc::as_ref).collect();
    let observed = status::observe(job, &pod_refs, jiff::Timestamp::now());

    if observed.stop_job {
        // It would wait for ever: stop it (the run's record keeps the failure).
        let dp = DeleteParams {
            preconditions: Some(Preconditions { uid: job.uid(), resource_version: None }),
            ..DeleteParams::background()
        };
        match Api::<Job>::namespaced(ctx.client.clone(), &ns).delete(&job.name_any(), &dp).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) || is_conflict(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }

    let snapshot = match &current.snapshot {
        Some(s) => Some(s.clone()),
        None => recover_snapshot(run, ctx).await?,
    };
    let mut record = Record {
        snapshot,
        job_name: Some(job.name_any()),
        outputs_path: Some(build::outputs_path(run)),
        registered_model: None,
    };
    if observed.phase == RunPhase::Succeeded
        && let Some(reg) = &run.spec.register_model
    {
        record.registered_model = Some(register(run, ctx, reg).await?);
    }
    write_status(run, ctx, &observed, record).await?;
    Ok(match observed.recheck_in {
        Some(after) => Action::requeue(after + std::time::Duration::from_millis(500)),
        None => Action::await_change(),
    })
}

/// The snapshot of a run whose status lost it (a status write that failed after the Job was
/// created), from the snapshot ConfigMap.
async fn recover_snapshot(run: &TrainingRun, ctx: &Context) -> Result<Option<CodeSnapshot>> {
    if run.spec.code.as_ref().and_then(|c| c.config_map.as_ref()).is_none() {
        return Ok(None);
    }
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default());
    Ok(api.get_opt(&build::snapshot_name(run)).await?.filter(|c| owned_by(c, run)).map(|cm| CodeSnapshot {
        digest: cm.annotations().get(build::DIGEST_ANNOTATION).cloned(),
        config_map: Some(cm.name_any()),
    }))
}

/// A finished run: nothing changes but a success's Model registration, if it is still due.
async fn finished(run: &TrainingRun, ctx: &Context, current: &TrainingRunStatus) -> Result<Action> {
    if current.phase == Some(RunPhase::Succeeded)
        && current.registered_model.is_none()
        && let Some(reg) = &run.spec.register_model
    {
        let registered = register(run, ctx, reg).await?;
        let status = TrainingRunStatus { registered_model: Some(registered), ..current.clone() };
        let api: Api<TrainingRun> = Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default());
        apply_status(&api, MANAGER, &ctx.own_writes, run, run.status.as_ref(), &status).await?;
    }
    Ok(Action::await_change())
}

/// Registers the run's outputs as the next version of the model, once: a Model this run
/// registered before is found by the run's uid. Returns `name:version`.
async fn register(run: &TrainingRun, ctx: &Context, reg: &RegisterModel) -> Result<String> {
    let ns = run.namespace().unwrap_or_default();
    let models: Api<Model> = Api::namespaced(ctx.client.clone(), &ns);
    // Live, not cached: two runs registering at once must not take the same version (the
    // second create then conflicts, and its retry takes the next one).
    let existing = models.list(&ListParams::default()).await?;
    let versions: Vec<&Model> = existing.iter().filter(|m| m.spec.model.eq_ignore_ascii_case(&reg.name)).collect();
    let uid = run.uid().unwrap_or_default();
    if let Some(mine) = versions.iter().find(|m| m.annotations().get(build::REGISTERED_BY_UID_ANNOTATION) == Some(&uid))
    {
        return Ok(mine.spec.version_ref());
    }
    let version = versions.iter().map(|m| m.spec.version).max().unwrap_or(0) + 1;
    let model = build::registered_model(run, &reg.name, version);
    let params = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
    models.create(&params, &model).await?;
    let registered = model.spec.version_ref();
    ctx.event(
        run,
        EventType::Normal,
        "ModelRegistered",
        format!("registered model {registered} from {}", build::outputs_path(run)),
        "Register",
    );
    Ok(registered)
}

/// Writes the status (when it changed) and publishes an Event when the phase moved.
async fn write_status(run: &TrainingRun, ctx: &Context, observed: &Observed, record: Record) -> Result<()> {
    let desired = status::desired_status(run, observed, record, &now());
    let api: Api<TrainingRun> = Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default());
    let before = run.status.as_ref().and_then(|s| s.phase);
    if apply_status(&api, MANAGER, &ctx.own_writes, run, run.status.as_ref(), &desired).await?
        && before != Some(observed.phase)
    {
        let type_ = if observed.phase == RunPhase::Failed { EventType::Warning } else { EventType::Normal };
        let phase = format!("{:?}", observed.phase);
        ctx.event(run, type_, &phase, format!("{phase}: {}", observed.message), "Reconcile");
    }
    Ok(())
}
