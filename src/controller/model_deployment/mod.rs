//! The ModelDeployment controller: an online endpoint. Per deployment a Deployment serving the
//! model with its scoring script, a ClusterIP Service, an HPA (`scale`) and a PodDisruptionBudget
//! (more than one instance); per endpoint the router (Deployment, configuration ConfigMap,
//! Service of the exposure type) and the key Secret. Status comes from the live children: ready
//! instances, failures read from the pods, the load balancer's address (docs/serving.md).
//!
//! Watches: its children (label-selected to ModelDeployment children; Deployments, Services and
//! pods in full because readiness, failures and addresses are in their status, the rest as
//! metadata), and the objects the spec refers to — Models (so that registering a model makes a
//! waiting endpoint Ready with no edit), InstanceTypes and Workspaces (the pods' ServiceAccount).

pub mod build;
mod reconcile;
pub mod status;

use std::sync::Arc;

use k8s_openapi::api::{
    apps::v1::Deployment,
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::{ConfigMap, Pod, PodStatus, Secret, Service},
    policy::v1::PodDisruptionBudget,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ObjectMeta};
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
        cache::{Cache, NotSynced, cache},
        labels::{MANAGED_BY, MANAGER as MANAGED_BY_ATRIUM, OWNER_KIND, OWNER_UID},
        watch::lenient_watcher,
    },
};

/// The controller's name in metrics and logs.
pub const CONTROLLER: &str = "modeldeployment";
/// The field manager of everything this controller writes.
pub const MANAGER: &str = "atrium-modeldeployment";

/// Selects the children of ModelDeployments (and their pods).
pub fn children_selector() -> String {
    format!("{MANAGED_BY}={MANAGED_BY_ATRIUM},{OWNER_KIND}=modeldeployment")
}

/// What a reconcile reads besides the ModelDeployment.
pub(crate) struct Caches {
    models: Cache<Model>,
    instance_types: Cache<InstanceType>,
    workspaces: Cache<Workspace>,
    deployments: Cache<Deployment>,
    services: Cache<Service>,
    pods: Cache<Pod>,
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

fn selected() -> watcher::Config {
    watcher::Config::default().any_semantic().labels(&children_selector())
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

/// Keeps what failures and readiness are read from: the pod's labels, name and status.
/// Managed fields as the reconcile reads them: who applied what when (manager, operation, time,
/// subresource) and whether an entry holds `spec.replicas`. The field sets themselves — a JSON tree
/// per manager, most of a cached Deployment's memory — are dropped.
fn slim_managed_fields(meta: &mut ObjectMeta) {
    for entry in meta.managed_fields.iter_mut().flatten() {
        let replicas = entry.fields_v1.as_ref().is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some());
        entry.fields_v1 = replicas.then(|| FieldsV1(serde_json::json!({ "f:spec": { "f:replicas": {} } })));
    }
}

/// A Deployment as the reconcile reads it: metadata, the replica count and the status. The pod
/// template (applies are skipped by the hash annotation, not by comparing specs) is dropped.
fn slim_deployment(deployment: &mut Deployment) {
    slim_managed_fields(&mut deployment.metadata);
    if let Some(spec) = deployment.spec.as_mut() {
        spec.template = Default::default();
        spec.selector = Default::default();
        spec.strategy = None;
    }
}

fn slim_meta<K>(object: &mut PartialObjectMeta<K>) {
    slim_managed_fields(&mut object.metadata);
}

fn slim_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    pod.spec = None;
    pod.status = pod.status.take().map(|s| PodStatus {
        conditions: s.conditions,
        container_statuses: s.container_statuses,
        init_container_statuses: s.init_container_statuses,
        phase: s.phase,
        reason: s.reason,
        message: s.message,
        ..Default::default()
    });
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
    let (deployments, deployment_events) = cache(full_watch::<Deployment>(&client).modify(slim_deployment));
    let (services, service_events) =
        cache(full_watch::<Service>(&client).modify(|s: &mut Service| slim_managed_fields(&mut s.metadata)));
    let (pods, pod_events) = cache(full_watch::<Pod>(&client).modify(slim_pod));
    let (config_maps, config_map_events) = cache(metadata_watch::<ConfigMap>(&client).modify(slim_meta));
    let (secrets, secret_events) = cache(metadata_watch::<Secret>(&client).modify(slim_meta));
    let (autoscalers, autoscaler_events) = cache(metadata_watch::<HorizontalPodAutoscaler>(&client).modify(slim_meta));
    let (disruption_budgets, disruption_budget_events) =
        cache(metadata_watch::<PodDisruptionBudget>(&client).modify(slim_meta));
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
            .watches_stream(pod_events, move |pod: Pod| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_slim_deployment_keeps_what_the_reconcile_reads() {
        let mut d: Deployment = serde_json::from_value(json!({
            "metadata": {
                "name": "e-blue",
                "annotations": { "atrium.dev/applied-hash": "abc" },
                "managedFields": [
                    { "manager": MANAGER, "operation": "Apply", "time": "2026-01-01T00:00:00Z",
                      "fieldsType": "FieldsV1",
                      "fieldsV1": { "f:spec": { "f:replicas": {}, "f:template": { "f:spec": {} } } } },
                    { "manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
                      "time": "2026-01-01T00:00:01Z", "fieldsType": "FieldsV1",
                      "fieldsV1": { "f:status": { "f:readyReplicas": {} } } }
                ]
            },
            "spec": {
                "replicas": 3,
                "selector": { "matchLabels": { "a": "b" } },
                "template": { "metadata": { "labels": { "a": "b" } }, "spec": { "containers": [{ "name": "c" }] } }
            },
            "status": { "readyReplicas": 2 }
        }))
        .unwrap();
        slim_deployment(&mut d);
        let fields = d.metadata.managed_fields.as_ref().unwrap();
        assert_eq!(fields.len(), 2);
        assert_eq!(fields[0].fields_v1.as_ref().unwrap().0, json!({ "f:spec": { "f:replicas": {} } }));
        assert_eq!(fields[0].manager.as_deref(), Some(MANAGER));
        assert!(fields[0].time.is_some());
        assert!(fields[1].fields_v1.is_none());
        assert_eq!(fields[1].subresource.as_deref(), Some("status"));
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert!(spec.template.spec.is_none());
        assert_eq!(d.status.unwrap().ready_replicas, Some(2));
        assert_eq!(d.metadata.annotations.unwrap()["atrium.dev/applied-hash"], "abc");
    }
}
