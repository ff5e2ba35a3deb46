//! The ModelDeployment pipeline: dereference (models, instance types, the workspace) → build
//! (pure) → apply (skipped when unchanged; never over another endpoint's child) → prune → status
//! from the live children.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Debug,
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        apps::v1::Deployment,
        autoscaling::v2::HorizontalPodAutoscaler,
        core::v1::{ConfigMap, Secret, Service},
        policy::v1::PodDisruptionBudget,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    core::PartialObjectMeta,
    runtime::{controller::Action, events::EventType, reflector::ObjectRef},
};
use serde::{Serialize, de::DeserializeOwned};
use tracing::{debug, info};

use super::{
    Caches, MANAGER,
    build::{self, DeploymentPlan, ServedModel},
    cached::{DeploymentSummary, PodSummary},
    status::{
        self, Observed, REASON_FORBIDDEN, REASON_INSTANCE_TYPE_NOT_FOUND, REASON_INVALID_SPEC, REASON_NAME_CONFLICT,
    },
};
use crate::{
    api::{
        HasConditions, InstanceTypeSpec, ModelDeployment, READY,
        common::model_version_ref,
        instance_type::{DEFAULT_INSTANCE_TYPE, default_instance_type},
        model_deployment::{AuthMode, DeploymentFailure, OnlineDeployment},
    },
    context::Context,
    controller::{
        Result,
        model::{build::ModelLocation, resolve::resolve},
    },
    runtime::{
        apply::{apply, apply_status, is_conflict, prune},
        conditions::now,
        labels::{COMPONENT, OWNER_KIND, OWNER_NAME, OWNER_UID},
        naming::{hex, label_value},
        settle::{self, Decision},
    },
};

/// The ServiceAccount the Workspace controller makes for endpoints in a workspace namespace.
pub const INFERENCE_SERVICE_ACCOUNT: &str = "atrium-inference";

/// The field manager that holds a Deployment's replica count for a moment when an HPA takes it
/// over, so that the operator dropping the field does not reset it to 1.
pub const REPLICAS_HANDOVER_MANAGER: &str = "atrium-modeldeployment-handover";

/// How long a removed deployment keeps serving after the router configuration without it was
/// written: kubelets update mounted ConfigMaps within their sync period (a minute) and a margin,
/// and until then routers may still send it requests.
pub const ROUTER_CONFIG_PROPAGATION: Duration = Duration::from_secs(90);

/// How soon children refused by a quota or policy (403) are tried again.
const FORBIDDEN_RETRY: Duration = Duration::from_secs(60);

fn problem(reason: &str, message: String) -> DeploymentFailure {
    DeploymentFailure { reason: Some(reason.to_owned()), message: Some(message) }
}

/// The children of one endpoint in a cache.
fn owned<K: Resource + Clone>(all: Vec<Arc<K>>, namespace: &str, uid: &str) -> Vec<Arc<K>> {
    all.into_iter()
        .filter(|o| {
            o.meta().namespace.as_deref() == Some(namespace)
                && o.labels().get(OWNER_UID).map(String::as_str) == Some(uid)
        })
        .collect()
}

fn by_name<K: Resource>(objects: &[Arc<K>], name: &str) -> Option<Arc<K>> {
    objects.iter().find(|o| o.meta().name.as_deref() == Some(name)).cloned()
}

/// A workspace namespace runs inference pods as the workspace's `atrium-inference`
/// ServiceAccount (it carries the registry pull secret); elsewhere, as the default one.
fn service_account(namespace: &str, caches: &Caches) -> Option<String> {
    caches
        .workspaces
        .store()
        .state()
        .iter()
        .any(|ws| ws.status.as_ref().and_then(|s| s.namespace.as_deref()) == Some(namespace))
        .then(|| INFERENCE_SERVICE_ACCOUNT.to_owned())
}

fn instance_type(name: Option<&str>, caches: &Caches) -> Result<InstanceTypeSpec, DeploymentFailure> {
    let name = name.unwrap_or(DEFAULT_INSTANCE_TYPE);
    match caches.instance_types.store().get(&ObjectRef::new(name)) {
        Some(itype) => Ok(itype.spec.clone()),
        // The operator installs it at start-up; until it is there its definition is known.
        None if name == DEFAULT_INSTANCE_TYPE => Ok(default_instance_type().spec),
        None => Err(problem(
            REASON_INSTANCE_TYPE_NOT_FOUND,
            format!("instance type {name:?} does not exist; create it or name another (kubectl get instancetypes)"),
        )),
    }
}

/// Resolves what one deployment refers to.
fn plan<'a>(
    deployment: &'a OnlineDeployment,
    namespace: &str,
    caches: &Caches,
    service_account: Option<&str>,
) -> Result<DeploymentPlan<'a>, DeploymentFailure> {
    let model = match &deployment.model {
        None => None,
        Some(reference) => {
            let models = caches.models.store().state();
            let model = resolve(namespace, reference, models.iter().map(AsRef::as_ref))
                .map_err(|u| problem(u.reason, u.message))?;
            let location = model.status.as_ref().and_then(|s| s.resolved_uri.as_deref()).and_then(ModelLocation::parse);
            let Some(location) = location else {
                return Err(problem(
                    crate::controller::model::resolve::REASON_MODEL_NOT_READY,
                    format!("Model {:?} has no resolvedUri yet", model.name_any()),
                ));
            };
            Some(ServedModel { name: model.spec.model.clone(), version: model.spec.version, location })
        }
    };
    let Some(image) = deployment.effective_image() else {
        return Err(problem(
            REASON_INVALID_SPEC,
            format!(
                "deployment {}: environment.image is required for the {:?} runtime",
                deployment.name,
                deployment.effective_runtime().type_
            ),
        ));
    };
    Ok(DeploymentPlan {
        spec: deployment,
        model,
        image: image.to_owned(),
        instance_type: instance_type(deployment.instance_type.as_deref(), caches)?,
        service_account: service_account.map(Into::into),
    })
}

/// When this controller last applied an object (from its managed fields).
fn last_applied(meta: &ObjectMeta) -> Option<jiff::Timestamp> {
    meta.managed_fields
        .iter()
        .flatten()
        .filter(|e| e.manager.as_deref() == Some(MANAGER) && e.operation.as_deref() == Some("Apply"))
        .filter_map(|e| e.time.as_ref().map(|t| t.0))
        .max()
}

/// The metadata of each object.
fn metas<K: Resource>(objects: &[Arc<K>]) -> impl Iterator<Item = &ObjectMeta> {
    objects.iter().map(|o| o.meta())
}

/// The names of `objects`.
fn names<K: Resource>(objects: &[K]) -> Vec<String> {
    objects.iter().map(|o| o.meta().name.clone().unwrap_or_default()).collect()
}

/// An `Api` per namespace, as [`prune`] takes it.
fn in_namespace<K>(client: &Client) -> impl Fn(Option<&str>) -> Api<K> + use<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    let client = client.clone();
    move |ns| Api::namespaced(client.clone(), ns.unwrap_or_default())
}

/// What happened to one child.
enum Outcome {
    Written,
    Unchanged,
    /// Its name is taken by another endpoint's child: left alone.
    Conflict(String),
    /// The API server refused it: a spec the schema could not catch (`InvalidSpec`), or a
    /// ResourceQuota or admission policy (403, `Forbidden`).
    Refused(&'static str, String),
}

/// Applies children of one endpoint, collecting what could not be applied.
struct Applier<'a> {
    client: Client,
    namespace: &'a str,
    /// The endpoint's uid, as its children's `atrium.dev/owner-uid` label carries it.
    uid: &'a str,
}

impl Applier<'_> {
    /// Applies `desired`, one of this endpoint's children; `live` is the endpoint's own child of
    /// that name, if there is one.
    async fn apply<K>(&self, desired: K, live: Option<&ObjectMeta>) -> Result<Outcome>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Serialize + DeserializeOwned + Clone + Debug,
    {
        let kind = K::kind(&());
        let name = desired.name_any();
        let api: Api<K> = Api::namespaced(self.client.clone(), self.namespace);
        // Not among the endpoint's own children: the name may be another endpoint's child, or an
        // object Atrium did not make, which a forced apply would take over. Read it before the
        // first apply (one read per new child).
        if live.is_none()
            && let Some(existing) = api.get_metadata_opt(&name).await?
        {
            let labels = existing.labels();
            if labels.get(OWNER_UID).map(String::as_str) != Some(self.uid) {
                return Ok(Outcome::Conflict(match (labels.get(OWNER_KIND), labels.get(OWNER_NAME)) {
                    (Some(owner_kind), Some(owner)) => format!(
                        "{kind} {name:?} already belongs to {owner_kind} {owner:?}; rename this endpoint or that deployment"
                    ),
                    _ => format!(
                        "{kind} {name:?} already exists and is not one of this endpoint's objects; rename this \
                         endpoint, or delete or rename that {kind}"
                    ),
                }));
            }
        }
        match apply(&api, MANAGER, desired, live).await {
            Ok(true) => Ok(Outcome::Written),
            Ok(false) => Ok(Outcome::Unchanged),
            Err(kube::Error::Api(s)) if matches!(s.code, 400 | 403 | 422) => {
                let reason = if s.code == 403 { REASON_FORBIDDEN } else { REASON_INVALID_SPEC };
                Ok(Outcome::Refused(reason, format!("the API server refused {kind} {name:?}: {}", s.message)))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Before the HPA takes a Deployment's replicas: another manager holds the current count,
    /// so that this controller leaving the field out does not reset it.
    async fn hand_over_replicas(&self, live: &DeploymentSummary) -> Result<()> {
        let replicas = live.replicas.unwrap_or(1);
        let patch = serde_json::json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": live.name_any() },
            "spec": { "replicas": replicas },
        });
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), self.namespace);
        api.patch(&live.name_any(), &PatchParams::apply(REPLICAS_HANDOVER_MANAGER).force(), &Patch::Apply(&patch))
            .await?;
        info!(deployment = %live.name_any(), replicas, "replica count handed over to the HorizontalPodAutoscaler");
        Ok(())
    }
}

/// Where each outcome goes: a per-deployment problem or an endpoint-wide one.
fn record(
    outcome: Outcome,
    deployment: Option<&str>,
    problems: &mut BTreeMap<String, DeploymentFailure>,
    blocked: &mut Vec<(String, String)>,
) -> bool {
    match outcome {
        Outcome::Written => true,
        Outcome::Unchanged => false,
        Outcome::Conflict(message) => {
            blocked.push((REASON_NAME_CONFLICT.to_owned(), message));
            false
        }
        Outcome::Refused(reason, message) => {
            match deployment {
                Some(d) => {
                    problems.entry(d.to_owned()).or_insert_with(|| problem(reason, message));
                }
                None => blocked.push((reason.to_owned(), message)),
            }
            false
        }
    }
}

/// The spec deployment a child belongs to, from its deployment label.
fn deployment_of<'a>(md: &'a ModelDeployment, labels: &BTreeMap<String, String>) -> Option<&'a str> {
    let value = labels.get(build::DEPLOYMENT_LABEL)?;
    md.spec.deployments.iter().find(|d| label_value(&d.name) == *value).map(|d| d.name.as_str())
}

/// The children of one endpoint as they are now, from the caches.
struct Live {
    deployments: Vec<Arc<DeploymentSummary>>,
    services: Vec<Arc<Service>>,
    config_maps: Vec<Arc<PartialObjectMeta<ConfigMap>>>,
    autoscalers: Vec<Arc<PartialObjectMeta<HorizontalPodAutoscaler>>>,
    disruption_budgets: Vec<Arc<PartialObjectMeta<PodDisruptionBudget>>>,
    pods: Vec<Arc<PodSummary>>,
}

impl Live {
    fn read(caches: &Caches, namespace: &str, uid: &str) -> Self {
        Self {
            deployments: owned(caches.deployments.store().state(), namespace, uid),
            services: owned(caches.services.store().state(), namespace, uid),
            config_maps: owned(caches.config_maps.store().state(), namespace, uid),
            autoscalers: owned(caches.autoscalers.store().state(), namespace, uid),
            disruption_budgets: owned(caches.disruption_budgets.store().state(), namespace, uid),
            pods: owned(caches.pods.store().state(), namespace, uid),
        }
    }

    fn deployment(&self, endpoint: &str, deployment: &str) -> Option<Arc<DeploymentSummary>> {
        by_name(&self.deployments, &build::deployment_child_name(endpoint, deployment))
    }

    /// The pods of one component, and of one deployment when given.
    fn pods(&self, component: &str, deployment: Option<&str>) -> Vec<&PodSummary> {
        let deployment = deployment.map(label_value);
        self.pods
            .iter()
            .filter(|p| {
                let labels = p.labels();
                labels.get(COMPONENT).map(String::as_str) == Some(component)
                    && deployment.as_ref().is_none_or(|d| labels.get(build::DEPLOYMENT_LABEL) == Some(d))
            })
            .map(AsRef::as_ref)
            .collect()
    }
}

/// Instances the router counts for a deployment: the operator's count, the HPA's when it
/// scales, and for one that could not be built what is running (0 for nothing).
fn instances(deployment: &OnlineDeployment, built: bool, live: Option<&DeploymentSummary>) -> u32 {
    let live_replicas = live.and_then(|l| l.replicas);
    let n = match (&deployment.scale, built) {
        (_, false) => live_replicas.unwrap_or(0),
        (Some(scale), true) => live_replicas.unwrap_or(scale.min_instances),
        (None, true) => deployment.instance_count,
    };
    u32::try_from(n).unwrap_or(0)
}

pub(super) async fn reconcile(md: Arc<ModelDeployment>, ctx: Arc<Context>, caches: Arc<Caches>) -> Result<Action> {
    caches.synced().await?;
    let (Some(namespace), Some(uid)) = (md.namespace(), md.uid()) else { return Ok(Action::await_change()) };
    if md.metadata.deletion_timestamp.is_some() {
        // Owner references: the garbage collector removes the children.
        return Ok(Action::await_change());
    }
    let endpoint = md.name_any();
    let ns = namespace.as_str();

    // Dereference: what each deployment refers to, and the children as they are.
    let live = Live::read(&caches, ns, &uid);
    let service_account = service_account(ns, &caches);
    let mut plans = Vec::new();
    let mut problems = BTreeMap::new();
    for deployment in &md.spec.deployments {
        match plan(deployment, ns, &caches, service_account.as_deref()) {
            Ok(p) => plans.push(p),
            Err(why) => {
                debug!(endpoint = %endpoint, deployment = %deployment.name, reason = ?why.reason, "deployment not built");
                problems.insert(deployment.name.clone(), why);
            }
        }
    }

    // Build.
    let config = build::router_config(&md, |d| {
        instances(d, !problems.contains_key(&d.name), live.deployment(&endpoint, &d.name).as_deref())
    });
    let children = build::desired_children(&md, &plans, &config, &caches.images, service_account.as_deref());

    // Apply, then prune.
    let applier = Applier { client: ctx.client.clone(), namespace: ns, uid: &uid };
    let mut blocked = Vec::new();
    let wrote_config = apply_children(&applier, &md, &children, &live, &mut problems, &mut blocked).await?;
    if md.spec.auth_mode == AuthMode::Key {
        ensure_keys(&md, &ctx, &caches, ns, &uid, &mut blocked).await?;
    }
    let draining = prune_children(&ctx.client, &md, &children, &live, &problems, wrote_config).await?;
    // A refusal by quota or policy is tried again after a while: nothing watched announces a
    // quota raised or a policy changed.
    let forbidden = blocked.iter().any(|(reason, _)| reason == REASON_FORBIDDEN)
        || problems.values().any(|p| p.reason.as_deref() == Some(REASON_FORBIDDEN));

    // Status, from the live children.
    let live_per_deployment: Vec<_> =
        md.spec.deployments.iter().map(|d| (d, live.deployment(&endpoint, &d.name))).collect();
    let observed = live_per_deployment
        .iter()
        .map(|(d, live_deployment)| {
            let model = match plans.iter().find(|p| p.spec.name == d.name) {
                Some(p) => p.model.as_ref().map(|m| model_version_ref(&m.name, m.version)),
                // Not built this round: what the running Deployment serves.
                None => live_deployment.as_ref().and_then(|l| l.annotations().get(build::MODEL_ANNOTATION).cloned()),
            };
            let observed = Observed {
                live: live_deployment.as_deref(),
                pods: live.pods(build::COMPONENT_INFERENCE, Some(&d.name)),
                model,
                problem: problems.get(&d.name).cloned(),
            };
            (*d, observed)
        })
        .collect();
    let router_deployment = by_name(&live.deployments, &build::router_name(&endpoint));
    let router_service = by_name(&live.services, &build::router_name(&endpoint));
    let inputs = status::Inputs {
        deployments: observed,
        config: &config,
        blocked,
        router: status::Router {
            deployment: router_deployment.as_deref(),
            pods: live.pods(build::COMPONENT_ROUTER, None),
            service: router_service.as_deref(),
        },
    };
    let desired = status::desired_status(&md, &inputs, &now());
    let api: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), ns);
    let mut settling = None;
    if md.status.as_ref() == Some(&desired) {
        ctx.settle.forget(&uid);
    } else {
        let urgency = settle::urgency(
            md.status.as_ref().map(|s| (s.observed_generation, s.conditions.as_slice())),
            (desired.observed_generation, &desired.conditions),
            status::PROGRESS_REASONS,
        );
        match ctx.settle.decide(&uid, urgency, settle::digest(&desired), Instant::now()) {
            Decision::Write => {
                apply_status(&api, MANAGER, &ctx.own_writes, md.as_ref(), md.status.as_ref(), &desired).await?;
                announce_transition(&md, &desired, &ctx);
            }
            Decision::Wait(wait) => settling = Some(wait),
        }
    }

    // A removed deployment still draining is pruned once routers have the new configuration; a
    // progress-only status is written once it settles.
    let draining = draining.map(|wait| wait + Duration::from_secs(1));
    let retry_forbidden = forbidden.then_some(FORBIDDEN_RETRY);
    Ok(match draining.into_iter().chain(settling).chain(retry_forbidden).min() {
        Some(wait) => Action::requeue(wait),
        None => Action::await_change(),
    })
}

/// Applies every child, in the order pods need them: the router configuration first (the router
/// mounts it), then Services, Deployments, HPAs and PDBs. Returns whether the router
/// configuration was written.
async fn apply_children(
    applier: &Applier<'_>,
    md: &ModelDeployment,
    children: &build::Children,
    live: &Live,
    problems: &mut BTreeMap<String, DeploymentFailure>,
    blocked: &mut Vec<(String, String)>,
) -> Result<bool> {
    let mut wrote_config = false;
    for desired in children.config_maps.iter().cloned() {
        let current = by_name(&live.config_maps, &desired.name_any());
        let outcome = applier.apply(desired, current.as_ref().map(|l| &l.metadata)).await?;
        wrote_config |= record(outcome, None, problems, blocked);
    }
    for desired in children.services.iter().cloned() {
        let current = by_name(&live.services, &desired.name_any());
        let deployment = deployment_of(md, desired.labels());
        let outcome = applier.apply(desired, current.as_ref().map(|l| &l.metadata)).await?;
        record(outcome, deployment, problems, blocked);
    }
    for desired in children.deployments.iter().cloned() {
        let current = by_name(&live.deployments, &desired.name_any());
        let deployment = deployment_of(md, desired.labels());
        let scaled = deployment.and_then(|d| md.spec.deployment(d)).is_some_and(|d| d.scale.is_some());
        if let Some(current) = current.as_ref().filter(|l| scaled && l.applies_replicas) {
            applier.hand_over_replicas(current).await?;
        }
        let outcome = applier.apply(desired, current.as_ref().map(|l| &l.metadata)).await?;
        record(outcome, deployment, problems, blocked);
    }
    for desired in children.autoscalers.iter().cloned() {
        let current = by_name(&live.autoscalers, &desired.name_any());
        let deployment = deployment_of(md, desired.labels());
        let outcome = applier.apply(desired, current.as_ref().map(|l| &l.metadata)).await?;
        record(outcome, deployment, problems, blocked);
    }
    for desired in children.disruption_budgets.iter().cloned() {
        let current = by_name(&live.disruption_budgets, &desired.name_any());
        let deployment = deployment_of(md, desired.labels());
        let outcome = applier.apply(desired, current.as_ref().map(|l| &l.metadata)).await?;
        record(outcome, deployment, problems, blocked);
    }
    Ok(wrote_config)
}

/// Deletes the children no longer desired. Those of a deployment that could not be built stay
/// as they are (nothing is deleted for a missing reference); those of a removed deployment stay
/// until every router has the configuration without it. Returns how long that still takes, if
/// some are waiting.
async fn prune_children(
    client: &Client,
    md: &ModelDeployment,
    children: &build::Children,
    live: &Live,
    problems: &BTreeMap<String, DeploymentFailure>,
    wrote_config: bool,
) -> Result<Option<Duration>> {
    let endpoint = md.name_any();
    let config_written_at = if wrote_config {
        Some(jiff::Timestamp::now())
    } else {
        by_name(&live.config_maps, &build::router_config_name(&endpoint)).and_then(|c| last_applied(&c.metadata))
    };
    let since_config = config_written_at
        .map(|t| Duration::try_from(jiff::Timestamp::now().duration_since(t)).unwrap_or_default())
        .unwrap_or(ROUTER_CONFIG_PROPAGATION);
    let drain = ROUTER_CONFIG_PROPAGATION.saturating_sub(since_config);

    let mut keep: BTreeSet<String> = problems.keys().map(|d| build::deployment_child_name(&endpoint, d)).collect();
    let mut draining = false;
    if !drain.is_zero() {
        let in_spec: BTreeSet<String> = md.spec.deployments.iter().map(|d| label_value(&d.name)).collect();
        for removed in live
            .deployments
            .iter()
            .filter(|d| d.labels().get(build::DEPLOYMENT_LABEL).is_some_and(|l| !in_spec.contains(l)))
        {
            keep.insert(removed.name_any());
            draining = true;
        }
    }
    let keeping =
        |desired: Vec<String>| -> BTreeSet<String> { desired.into_iter().chain(keep.iter().cloned()).collect() };

    let mut pruned = 0;
    pruned +=
        prune(in_namespace::<Deployment>(client), metas(&live.deployments), &keeping(names(&children.deployments)))
            .await?;
    pruned +=
        prune(in_namespace::<Service>(client), metas(&live.services), &keeping(names(&children.services))).await?;
    pruned += prune(
        in_namespace::<HorizontalPodAutoscaler>(client),
        metas(&live.autoscalers),
        &keeping(names(&children.autoscalers)),
    )
    .await?;
    pruned += prune(
        in_namespace::<PodDisruptionBudget>(client),
        metas(&live.disruption_budgets),
        &keeping(names(&children.disruption_budgets)),
    )
    .await?;
    let config_maps = names(&children.config_maps).into_iter().collect();
    pruned += prune(in_namespace::<ConfigMap>(client), metas(&live.config_maps), &config_maps).await?;
    if pruned > 0 {
        info!(endpoint = %endpoint, namespace = ?md.namespace(), pruned, "removed children no longer desired");
    }
    Ok(draining.then_some(drain))
}

/// Creates the key Secret when it does not exist. It is never written again: keys a user
/// regenerated by editing the Secret stay.
async fn ensure_keys(
    md: &ModelDeployment,
    ctx: &Context,
    caches: &Caches,
    namespace: &str,
    uid: &str,
    blocked: &mut Vec<(String, String)>,
) -> Result<()> {
    let name = build::keys_secret_name(&md.name_any());
    let mut check_owner = |labels: &BTreeMap<String, String>| {
        if labels.get(OWNER_UID).map(String::as_str) != Some(uid) {
            blocked.push((
                REASON_NAME_CONFLICT.to_owned(),
                format!("Secret {name:?} already belongs to another endpoint; rename this endpoint"),
            ));
        }
    };
    if let Some(live) = caches.secrets.store().get(&ObjectRef::new(&name).within(namespace)) {
        check_owner(live.labels());
        return Ok(());
    }
    // Not in the cache: it may only be that the cache has not seen the Secret this controller
    // created a moment ago (a reconcile for another child's event can come first). A read tells,
    // and spares the API server a create that would be refused.
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    if let Some(live) = api.get_metadata_opt(&name).await? {
        check_owner(live.labels());
        return Ok(());
    }
    let key = || hex(&rand::random::<[u8; 32]>());
    let secret = build::keys_secret(md, &key(), &key());
    let params = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
    match api.create(&params, &secret).await {
        // No Event: status.keysSecret names the Secret, and a burst of endpoints would pay a
        // write each for news nobody acts on.
        Ok(_) => {
            info!(endpoint = %md.name_any(), namespace, secret = %name, "generated endpoint keys");
            Ok(())
        }
        // Created meanwhile (or not yet in the cache): it is never overwritten.
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// An Event when the endpoint becomes Ready or stops being Ready, or when its first status is a
/// problem (never on a no-op, never for an endpoint that is only on its way).
fn announce_transition(md: &ModelDeployment, desired: &crate::api::ModelDeploymentStatus, ctx: &Context) {
    let Some(ready) = desired.condition(READY) else { return };
    let news = match md.condition(READY) {
        Some(was) => was.status != ready.status,
        None => ready.status == "True" || !status::PROGRESS_REASONS.contains(&ready.reason.as_str()),
    };
    if !news {
        return;
    }
    let type_ = if ready.status == "True" { EventType::Normal } else { EventType::Warning };
    ctx.event(md, type_, &ready.reason, ready.message.clone(), "Reconcile");
}
