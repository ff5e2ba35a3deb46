//! The ModelDeployment controller: an online endpoint. Per deployment a Deployment serving the
//! model with its scoring script, a ClusterIP Service, an HPA (`scale`) and a PodDisruptionBudget
//! (more than one instance); per endpoint the router (Deployment, configuration ConfigMap,
//! Service of the exposure type) and the key Secret. Status comes from the live children: ready
//! instances, failures read from the pods, the load balancer's address (docs/serving.md).
//!
//! Watches: its children (label-selected to ModelDeployment children) and their pods, each cached
//! as only what a reconcile reads (`cached`: summaries of Deployments and pods, Services without
//! their spec, the rest as metadata), and the objects the spec refers to — Models (so that
//! registering a model makes a waiting endpoint Ready with no edit), InstanceTypes and Workspaces
//! (the pods' ServiceAccount).

pub mod build;
pub mod cached;
mod reconcile;
pub mod status;

use cached::{DeploymentSummary, PodSummary};

use std::sync::Arc;

use k8s_openapi::api::{
    apps::v1::Deployment,
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::{ConfigMap, Pod, Secret, Service},
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    core::PartialObjectMeta,
    runtime::{
        Controller, WatchStreamExt,
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::RunOptions;
use crate::{
    api::{InstanceType, Model, ModelDeployment, Workspace, instance_type::DEFAULT_INSTANCE_TYPE},
    context::Context,
    runtime::{
        cache::{Cache, NotSynced, cache, project},
        labels::{self, OWNER_UID},
        watch::{LIST_PAGE, lenient_watcher},
    },
};

/// The controller's name in metrics and logs.
pub const CONTROLLER: &str = "modeldeployment";
/// The field manager of everything this controller writes.
pub const MANAGER: &str = "atrium-modeldeployment";

/// Selects the children of ModelDeployments (and their pods).
pub fn children_selector() -> String {
    labels::children_of_kind("modeldeployment")
}

/// What a reconcile reads besides the ModelDeployment.
pub(crate) struct Caches {
    models: Cache<Model>,
    instance_types: Cache<InstanceType>,
    workspaces: Cache<Workspace>,
    deployments: Cache<DeploymentSummary>,
    services: Cache<Service>,
    pods: Cache<PodSummary>,
    config_maps: Cache<PartialObjectMeta<ConfigMap>>,
    secrets: Cache<PartialObjectMeta<Secret>>,
    autoscalers: Cache<PartialObjectMeta<HorizontalPodAutoscaler>>,
    disruption_budgets: Cache<PartialObjectMeta<PodDisruptionBudget>>,
    images: build::Images,
}

impl Caches {
    /// Waits until every cache has had its first complete listing.
    async fn synced(&self) -> Result<(), NotSynced> {
        self.models.synced().await?;
        self.instance_types.synced().await?;
        self.workspaces.synced().await?;
        self.deployments.synced().await?;
        self.services.synced().await?;
        self.pods.synced().await?;
        self.config_maps.synced().await?;
        self.secrets.synced().await?;
        self.autoscalers.synced().await?;
        self.disruption_budgets.synced().await
    }
}

/// The children's watches: listed in pages (`LIST_PAGE`).
fn selected() -> watcher::Config {
    watcher::Config::default().labels(&children_selector()).page_size(LIST_PAGE)
}

fn full_watch<K>(
    client: &Client,
) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    watcher::watcher(Api::<K>::all(client.clone()), selected())
}

fn metadata_watch<K>(
    client: &Client,
) -> impl futures::Stream<Item = Result<watcher::Event<PartialObjectMeta<K>>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    watcher::watcher(Api::<PartialObjectMeta<K>>::all(client.clone()), selected())
}

/// The ModelDeployments in `namespace` matching `pred`, as reconcile requests.
fn endpoints_where(
    store: &Store<ModelDeployment>,
    namespace: Option<&str>,
    pred: impl Fn(&ModelDeployment) -> bool,
) -> Vec<ObjectRef<ModelDeployment>> {
    store
        .state()
        .iter()
        .filter(|md| namespace.is_none_or(|ns| md.namespace().as_deref() == Some(ns)) && pred(md))
        .map(|md| ObjectRef::from_obj(md.as_ref()))
        .collect()
}

/// Runs the ModelDeployment controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, opts: RunOptions, shutdown: CancellationToken) {
    let client = ctx.client.clone();
    let all = watcher::Config::default().any_semantic();
    let lenient = |config: watcher::Config| (client.clone(), config, ctx.metrics.clone());

    let (c, w, m) = lenient(all.clone());
    let (models, model_events) = cache(lenient_watcher::<Model>(c, w, CONTROLLER, m));
    let (c, w, m) = lenient(all.clone());
    let (instance_types, instance_type_events) = cache(lenient_watcher::<InstanceType>(c, w, CONTROLLER, m));
    let (c, w, m) = lenient(all);
    let (workspaces, workspace_events) = cache(lenient_watcher::<Workspace>(c, w, CONTROLLER, m));
    // What the reconcile reads of each child, and no more (`cached`).
    let (deployments, deployment_events) = cache(project(full_watch::<Deployment>(&client), DeploymentSummary::of));
    let (services, service_events) = cache(full_watch::<Service>(&client).modify(cached::slim_service));
    let (pods, pod_events) = cache(project(full_watch::<Pod>(&client), |pod| PodSummary::of(&pod)));
    let (config_maps, config_map_events) = cache(metadata_watch::<ConfigMap>(&client).modify(cached::slim_meta));
    let (secrets, secret_events) = cache(metadata_watch::<Secret>(&client).modify(cached::slim_meta));
    let (autoscalers, autoscaler_events) =
        cache(metadata_watch::<HorizontalPodAutoscaler>(&client).modify(cached::slim_meta));
    let (disruption_budgets, disruption_budget_events) =
        cache(metadata_watch::<PodDisruptionBudget>(&client).modify(cached::slim_meta));
    let caches = Arc::new(Caches {
        models,
        instance_types,
        workspaces,
        deployments,
        services,
        pods,
        config_maps,
        secrets,
        autoscalers,
        disruption_budgets,
        images: build::Images::from_env(),
    });

    let setup = move |controller: Controller<ModelDeployment>| {
        let endpoints = controller.store();
        let (by_model, by_instance_type, by_workspace, by_pod) =
            (endpoints.clone(), endpoints.clone(), endpoints.clone(), endpoints);
        controller
            .owns_stream(deployment_events)
            .owns_stream(service_events)
            .owns_stream(config_map_events)
            .owns_stream(secret_events)
            .owns_stream(autoscaler_events)
            .owns_stream(disruption_budget_events)
            // Registering, readying or removing a version can change what a reference resolves to.
            .watches_stream(model_events, move |model: Model| {
                endpoints_where(&by_model, model.namespace().as_deref(), |md| {
                    md.spec
                        .deployments
                        .iter()
                        .any(|d| d.model.as_ref().is_some_and(|r| r.name.eq_ignore_ascii_case(&model.spec.model)))
                })
            })
            .watches_stream(instance_type_events, move |itype: InstanceType| {
                let name = itype.name_any();
                endpoints_where(&by_instance_type, None, |md| {
                    md.spec
                        .deployments
                        .iter()
                        .any(|d| d.instance_type.as_deref().unwrap_or(DEFAULT_INSTANCE_TYPE) == name)
                })
            })
            .watches_stream(workspace_events, move |ws: Workspace| match ws.status.and_then(|s| s.namespace) {
                Some(namespace) => endpoints_where(&by_workspace, Some(&namespace), |_| true),
                None => Vec::new(),
            })
            // Pods belong to ReplicaSets: find their endpoint by the owner uid label.
            .watches_stream(pod_events, move |pod: PodSummary| {
                let Some(uid) = pod.labels().get(OWNER_UID).cloned() else { return Vec::new() };
                endpoints_where(&by_pod, pod.namespace().as_deref(), |md| md.uid().as_deref() == Some(uid.as_str()))
            })
    };
    super::run::<ModelDeployment, _, _>(
        CONTROLLER,
        ctx,
        opts,
        setup,
        move |md, ctx| reconcile::reconcile(md, ctx, caches.clone()),
        shutdown,
    )
    .await;
}
