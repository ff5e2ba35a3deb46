//! Models and online endpoints on the local control plane: registered versions, the children of
//! a ModelDeployment, traffic changes applied without restarting the router, failures read from
//! the pods, rollouts that never leave a deployment without a ready instance, and the HPA owning
//! the replica count.
//!
//! Each test runs its own operator on its own shard of objects, in its own namespace, with
//! workspace storage it provides itself (a volume bound to a claim and a Workspace whose status
//! names them — the test plays the Workspace controller).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use atrium::{
    api::{HasConditions, Model, ModelDeployment, Workspace, model_deployment::OnlineDeploymentStatus},
    controller::model_deployment::build::{MODELS_ROOT, PRIMARY_KEY, SECONDARY_KEY},
};
use atrium_router::config::RouterConfig;
use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::Deployment,
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::{
        ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, ResourceQuota, Secret, Service, ServiceAccount,
    },
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::harness::{ClusterObjects, Operator, TestNamespace, apply, eventually, install_crds, unique, wait_for};

const SHARD_LABEL: &str = "atrium.dev/test-shard";
const MINUTE: Duration = Duration::from_secs(60);
/// Removed deployments keep serving until routers have the new configuration (90 s).
const PRUNE_TIMEOUT: Duration = Duration::from_secs(180);
const CLAIM: &str = "workspace-storage";

/// One test's namespace, operator, workspace storage and cleanup.
struct Serving {
    ns: TestNamespace,
    client: Client,
    shard: String,
    operator: Operator,
    cleanup: ClusterObjects,
}

impl Serving {
    async fn start(prefix: &str) -> Self {
        install_crds().await;
        let ns = TestNamespace::new(prefix).await;
        let shard = unique("shard");
        let selector = format!("{SHARD_LABEL}={shard}");
        let operator =
            Operator::start(&format!("{prefix}-{shard}"), &["--leader-elect=false", "--object-selector", &selector]);
        let client = ns.client.clone();
        let mut serving = Self { ns, client, shard, operator, cleanup: ClusterObjects::default() };
        serving.workspace_storage().await;
        serving.code().await;
        serving
    }

    /// A volume bound to the claim, the inference ServiceAccount, and a Workspace that owns the
    /// namespace with that claim (on a shard no operator serves).
    async fn workspace_storage(&mut self) {
        let ns = self.ns.name.clone();
        let volume = unique("atrium-test-pv");
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": { "name": volume },
            "spec": {
                "capacity": { "storage": "1Gi" }, "accessModes": ["ReadWriteMany"],
                "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                "hostPath": { "path": format!("/tmp/{volume}") },
                "claimRef": { "namespace": ns, "name": CLAIM }
            }
        }))
        .unwrap();
        Api::<PersistentVolume>::all(self.client.clone()).create(&PostParams::default(), &pv).await.unwrap();
        self.cleanup.add::<PersistentVolume>(&volume);
        let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": { "name": CLAIM },
            "spec": {
                "accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": volume,
                "resources": { "requests": { "storage": "1Gi" } }
            }
        }))
        .unwrap();
        let pvcs: Api<PersistentVolumeClaim> = self.ns.api();
        pvcs.create(&PostParams::default(), &pvc).await.unwrap();
        wait_for(&pvcs, CLAIM, MINUTE, |c: Option<&PersistentVolumeClaim>| {
            c.and_then(|c| c.status.as_ref()?.phase.as_deref()) == Some("Bound")
        })
        .await;
        let sa: ServiceAccount = serde_json::from_value(json!({ "metadata": { "name": "atrium-inference" } })).unwrap();
        self.ns.api::<ServiceAccount>().create(&PostParams::default(), &sa).await.unwrap();

        let workspace = unique("ws");
        let workspaces: Api<Workspace> = Api::all(self.client.clone());
        let body = json!({
            "apiVersion": "atrium.dev/v1alpha1", "kind": "Workspace",
            "metadata": { "name": workspace, "labels": { SHARD_LABEL: format!("{}-unserved", self.shard) } },
            "spec": { "namespace": ns, "adoptNamespace": true, "storage": { "existingClaim": CLAIM } }
        });
        apply(&workspaces, body).await;
        self.cleanup.add::<Workspace>(&workspace);
        let status = json!({ "status": { "namespace": ns, "storage": { "claimName": CLAIM, "phase": "Bound" } } });
        workspaces.patch_status(&workspace, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    }

    /// The scoring code ConfigMap, with the quickstart's script.
    async fn code(&self) {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": { "name": "iris-score" },
            "data": { "score.py": include_str!("../../examples/quickstart/score.py") }
        }))
        .unwrap();
        self.ns.api::<ConfigMap>().create(&PostParams::default(), &cm).await.unwrap();
    }

    fn labels(&self) -> Value {
        json!({ SHARD_LABEL: self.shard })
    }

    /// Registers a model version: on the workspace storage, or at a URI.
    async fn model(&self, name: &str, model: &str, version: i64, source: Value) -> Model {
        let body = json!({
            "apiVersion": "atrium.dev/v1alpha1", "kind": "Model",
            "metadata": { "name": name, "labels": self.labels() },
            "spec": { "model": model, "version": version, "source": source }
        });
        apply(&self.ns.api(), body).await
    }

    /// Creates or updates an endpoint as `kubectl apply` would.
    async fn endpoint(&self, name: &str, spec: Value) -> ModelDeployment {
        let body = json!({
            "apiVersion": "atrium.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": { "name": name, "labels": self.labels() },
            "spec": spec
        });
        apply(&self.ns.api(), body).await
    }

    async fn wait_endpoint(&self, name: &str, what: &str, cond: impl Fn(&ModelDeployment) -> bool) -> ModelDeployment {
        let api: Api<ModelDeployment> = self.ns.api();
        eventually(what, MINUTE, || async {
            let md = api.get_opt(name).await.ok().flatten()?;
            let fresh = md.status.as_ref()?.observed_generation == md.metadata.generation;
            (fresh && cond(&md)).then_some(md)
        })
        .await
    }

    async fn ready(&self, name: &str) -> ModelDeployment {
        self.wait_endpoint(name, &format!("{name} Ready"), |md| md.is_ready()).await
    }

    async fn get<K>(&self, name: &str) -> Option<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        self.ns.api::<K>().get_opt(name).await.unwrap()
    }

    async fn router_config(&self, endpoint: &str) -> RouterConfig {
        let cm: ConfigMap = self.get(&format!("{endpoint}-router")).await.expect("the router ConfigMap");
        RouterConfig::from_json(cm.data.unwrap()["config.json"].as_bytes()).expect("a valid router configuration")
    }

    fn operator_alive(&mut self) -> bool {
        self.operator.child.try_wait().unwrap().is_none()
    }
}

fn deployment_status<'a>(md: &'a ModelDeployment, name: &str) -> Option<&'a OnlineDeploymentStatus> {
    md.status.as_ref()?.deployments.iter().find(|d| d.name == name)
}

fn ready_reason(md: &ModelDeployment) -> Option<&str> {
    md.condition("Ready").map(|c| c.reason.as_str())
}

fn container(d: &Deployment) -> &k8s_openapi::api::core::v1::Container {
    &d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
}

fn env(d: &Deployment, name: &str) -> Option<String> {
    container(d).env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value.clone())
}

fn traffic(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

#[tokio::test]
async fn an_endpoint_with_two_deployments_behind_a_load_balancer_converges_through_traffic_changes() {
    let s = Serving::start("serving").await;
    s.model("iris-1", "iris", 1, json!({ "storagePath": "runs/train-iris/outputs/model" })).await;
    s.model("iris-2", "IRIS", 2, json!({ "uri": "https://models.example.com/iris/2/model.pkl" })).await;
    let blue =
        json!({ "name": "blue", "model": { "name": "iris", "version": 1 }, "code": { "configMap": "iris-score" } });
    let green = json!({ "name": "green", "model": { "name": "Iris" }, "code": { "configMap": "iris-score" }, "instanceCount": 2 });
    let shadow = json!({ "name": "shadow", "model": { "name": "iris" }, "code": { "configMap": "iris-score" } });
    s.endpoint(
        "fraud",
        json!({ "exposure": { "type": "LoadBalancer" }, "deployments": [blue, green], "traffic": { "blue": 90, "green": 10 } }),
    )
    .await;

    let md = s
        .wait_endpoint("fraud", "fraud Ready with every instance", |md| {
            let ready = |d: &str| deployment_status(md, d).and_then(|d| d.ready_replicas);
            md.is_ready() && ready("blue") == Some(1) && ready("green") == Some(2)
        })
        .await;
    let status = md.status.clone().unwrap();
    let uri = status.scoring_uri.clone().unwrap();
    assert!(uri.starts_with("http://192.0.2.") && uri.ends_with("/score"), "the load balancer's address: {uri}");
    assert_eq!(status.keys_secret.as_deref(), Some("fraud-keys"));
    assert_eq!(status.traffic, BTreeMap::from([("blue".into(), 90), ("green".into(), 10)]));
    let blue_status = deployment_status(&md, "blue").unwrap();
    assert_eq!((blue_status.model.as_deref(), blue_status.ready_replicas), (Some("iris:1"), Some(1)));
    let green_status = deployment_status(&md, "green").unwrap();
    assert_eq!(green_status.model.as_deref(), Some("IRIS:2"), "no version: the highest Ready one");
    assert_eq!(green_status.ready_replicas, Some(2));
    assert!(md.is_condition_true("TrafficValid"));

    // Blue: the model mounted read-only from the workspace claim, the scoring script from its
    // ConfigMap, the Azure ML server's command and environment, zero-unavailable rollouts.
    let d: Deployment = s.get("fraud-blue").await.unwrap();
    let spec = d.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(1));
    let rolling = spec.strategy.as_ref().unwrap().rolling_update.as_ref().unwrap();
    assert_eq!(rolling.max_unavailable, Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(0)));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("atrium-inference"));
    let claim = pod.volumes.iter().flatten().find_map(|v| v.persistent_volume_claim.clone()).unwrap();
    assert_eq!((claim.claim_name.as_str(), claim.read_only), (CLAIM, Some(true)));
    let c = container(&d);
    assert_eq!(c.command.as_deref(), Some(&["azmlinfsrv".to_owned()][..]));
    assert_eq!(env(&d, "AZUREML_MODEL_DIR").as_deref(), Some(format!("{MODELS_ROOT}/iris/1").as_str()));
    let model_mount = c.volume_mounts.iter().flatten().find(|m| m.name == "model").unwrap();
    assert_eq!(model_mount.sub_path.as_deref(), Some("runs/train-iris/outputs/model"));
    assert_eq!(model_mount.read_only, Some(true));
    assert_eq!(c.resources.as_ref().unwrap().requests.as_ref().unwrap()["cpu"].0, "100m", "defaultinstancetype");
    let owner = &d.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.controller), ("ModelDeployment", "fraud", Some(true)));

    // Green: the https model fetched by an init container; two instances, so a PDB.
    let d: Deployment = s.get("fraud-green").await.unwrap();
    let init = &d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
    assert_eq!(init.name, "fetch-model");
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(2));
    assert!(s.get::<PodDisruptionBudget>("fraud-green").await.is_some());
    assert!(s.get::<PodDisruptionBudget>("fraud-blue").await.is_none());
    assert!(s.get::<HorizontalPodAutoscaler>("fraud-blue").await.is_none());
    for name in ["fraud-blue", "fraud-green"] {
        let svc: Service = s.get(name).await.unwrap();
        assert_eq!(svc.spec.unwrap().type_.as_deref(), Some("ClusterIP"));
    }
    let svc: Service = s.get("fraud").await.unwrap();
    assert_eq!(svc.spec.unwrap().type_.as_deref(), Some("LoadBalancer"));

    // The router: its configuration, its image, its keys.
    let config = s.router_config("fraud").await;
    assert_eq!(config.traffic, traffic(&[("blue", 90), ("green", 10)]));
    let urls: Vec<_> = config.deployments.iter().map(|b| b.url.clone()).collect();
    let ns = &s.ns.name;
    assert_eq!(urls, [format!("http://fraud-blue.{ns}.svc:80"), format!("http://fraud-green.{ns}.svc:80")]);
    let router: Deployment = s.get("fraud").await.unwrap();
    assert!(container(&router).image.as_deref().unwrap().starts_with("ghcr.io/atrium-dev/atrium-router:"));
    let keys: Secret = s.get("fraud-keys").await.unwrap();
    let key_data = keys.data.clone().unwrap();
    for key in [PRIMARY_KEY, SECONDARY_KEY] {
        assert_eq!(key_data[key].0.len(), 64, "32 random bytes, hex");
    }
    assert_ne!(key_data[PRIMARY_KEY], key_data[SECONDARY_KEY]);

    // A no-op reconcile writes nothing: everything stays at its resourceVersion.
    let versions = || async {
        let md: ModelDeployment = s.get("fraud").await.unwrap();
        let d: Deployment = s.get("fraud-blue").await.unwrap();
        let cm: ConfigMap = s.get("fraud-router").await.unwrap();
        let svc: Service = s.get("fraud").await.unwrap();
        [md.resource_version(), d.resource_version(), cm.resource_version(), svc.resource_version()]
    };
    // Pods that turn ready late (a loaded machine) are real changes the status follows; what
    // must not happen is a write on every reconcile. So: within a minute, a 3 s window in which
    // nothing is written.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let before = versions().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = versions().await;
        if after == before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no writes without a change: still writing after 60 s ({before:?} → {after:?})"
        );
    }

    // 50/50: the configuration changes, the router is not restarted.
    let router_before: Deployment = s.get("fraud").await.unwrap();
    let router_pods = |s: &Serving| {
        let api: Api<Pod> = s.ns.api();
        async move {
            let pods = api.list(&Default::default()).await.unwrap();
            pods.items
                .into_iter()
                .filter(|p| p.labels().get("app.kubernetes.io/component").map(String::as_str) == Some("router"))
                .map(|p| p.uid().unwrap())
                .collect::<BTreeSet<_>>()
        }
    };
    let pods_before = router_pods(&s).await;
    let blue =
        json!({ "name": "blue", "model": { "name": "iris", "version": 1 }, "code": { "configMap": "iris-score" } });
    let green = json!({ "name": "green", "model": { "name": "Iris" }, "code": { "configMap": "iris-score" }, "instanceCount": 2 });
    s.endpoint(
        "fraud",
        json!({ "exposure": { "type": "LoadBalancer" }, "deployments": [blue, green], "traffic": { "blue": 50, "green": 50 } }),
    )
    .await;
    s.wait_endpoint("fraud", "traffic 50/50", |md| {
        md.is_ready()
            && md.status.as_ref().unwrap().traffic == BTreeMap::from([("blue".into(), 50), ("green".into(), 50)])
    })
    .await;
    assert_eq!(s.router_config("fraud").await.traffic, traffic(&[("blue", 50), ("green", 50)]));
    let router_after: Deployment = s.get("fraud").await.unwrap();
    assert_eq!(
        router_after.metadata.generation, router_before.metadata.generation,
        "the router Deployment is untouched"
    );
    assert_eq!(router_pods(&s).await, pods_before, "the same router pods serve the new split");

    // A third deployment as a 10% mirror.
    s.endpoint(
        "fraud",
        json!({
            "exposure": { "type": "LoadBalancer" }, "deployments": [blue, green, shadow],
            "traffic": { "blue": 50, "green": 50 }, "mirrorTraffic": { "shadow": 10 }
        }),
    )
    .await;
    let md = s
        .wait_endpoint("fraud", "the mirror deployed", |md| {
            md.is_ready() && deployment_status(md, "shadow").is_some_and(|d| d.ready_replicas == Some(1))
        })
        .await;
    assert!(md.condition("TrafficValid").unwrap().message.contains("mirrored: shadow 10%"));
    let config = s.router_config("fraud").await;
    assert_eq!(config.mirror_traffic, traffic(&[("shadow", 10)]));
    assert_eq!(config.deployments.len(), 3);
    assert!(s.get::<Service>("fraud-shadow").await.is_some());

    // Green removed: gone from the configuration at once, its children once routers have it.
    s.endpoint(
        "fraud",
        json!({
            "exposure": { "type": "LoadBalancer" }, "deployments": [blue, shadow],
            "traffic": { "blue": 100 }, "mirrorTraffic": { "shadow": 10 }
        }),
    )
    .await;
    s.wait_endpoint("fraud", "green removed from the status", |md| {
        md.is_ready() && deployment_status(md, "green").is_none()
    })
    .await;
    let config = s.router_config("fraud").await;
    assert_eq!(config.deployments.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(), ["blue", "shadow"]);
    assert_eq!(config.traffic, traffic(&[("blue", 100)]));
    eventually("green's children gone", PRUNE_TIMEOUT, || async {
        let gone = s.get::<Deployment>("fraud-green").await.is_none()
            && s.get::<Service>("fraud-green").await.is_none()
            && s.get::<PodDisruptionBudget>("fraud-green").await.is_none();
        gone.then_some(())
    })
    .await;
    assert!(s.get::<Deployment>("fraud-blue").await.is_some() && s.get::<Deployment>("fraud-shadow").await.is_some());

    // The keys were never rewritten.
    let keys: Secret = s.get("fraud-keys").await.unwrap();
    assert_eq!(keys.data.unwrap(), key_data);
}

#[tokio::test]
async fn a_missing_model_waits_with_a_reason_and_registering_it_makes_the_endpoint_ready() {
    let mut s = Serving::start("serving-missing").await;
    s.endpoint(
        "churn",
        json!({ "deployments": [{ "name": "blue", "model": { "name": "Churn" }, "code": { "configMap": "iris-score" } }] }),
    )
    .await;
    let md = s
        .wait_endpoint("churn", "ModelNotFound, the router up", |md| {
            ready_reason(md) == Some("ModelNotFound") && md.status.as_ref().unwrap().scoring_uri.is_some()
        })
        .await;
    let ready = md.condition("Ready").unwrap();
    assert_eq!(ready.status, "False");
    assert!(ready.message.contains("\"Churn\"") && ready.message.contains("register one"), "{}", ready.message);
    let blue = deployment_status(&md, "blue").unwrap();
    assert_eq!(blue.last_failure.as_ref().unwrap().reason.as_deref(), Some("ModelNotFound"));
    assert!(s.get::<Deployment>("churn-blue").await.is_none(), "nothing is built for a missing model");
    let generation = md.metadata.generation;

    // No hot loop while it waits: the status stays as it is.
    let before = md.resource_version();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let md: ModelDeployment = s.get("churn").await.unwrap();
    assert_eq!(md.resource_version(), before);
    assert!(s.operator_alive(), "no crash");

    // Registering the model (a lower-case name: names ignore case) is enough.
    let model = s.model("churn-1", "churn", 1, json!({ "storagePath": "models/churn" })).await;
    let api: Api<Model> = s.ns.api();
    let model =
        wait_for(&api, &model.name_any(), MINUTE, |m: Option<&Model>| m.is_some_and(|m| m.is_ready())).await.unwrap();
    assert_eq!(model.status.unwrap().resolved_uri.as_deref(), Some(format!("pvc://{CLAIM}/models/churn").as_str()));
    let md = s.ready("churn").await;
    assert_eq!(md.metadata.generation, generation, "the endpoint was not edited");
    assert_eq!(deployment_status(&md, "blue").unwrap().model.as_deref(), Some("churn:1"));

    // The same version registered again, under another case: the younger is the duplicate.
    s.model("churn-1-again", "CHURN", 1, json!({ "uri": "s3://models/churn" })).await;
    let duplicate = wait_for(&api, "churn-1-again", MINUTE, |m: Option<&Model>| {
        m.and_then(|m| m.condition("Ready")).is_some_and(|c| c.reason == "DuplicateVersion")
    })
    .await
    .unwrap();
    assert!(duplicate.condition("Ready").unwrap().message.contains("\"churn-1\""));
    let first: Model = s.get("churn-1").await.unwrap();
    assert!(first.is_ready(), "the first registration stays usable");
    assert!(s.ready("churn").await.is_ready());

    // A model in a namespace no workspace owns cannot be read from storage: a reason, no crash.
    let other = TestNamespace::new("serving-no-ws").await;
    let orphan = json!({
        "apiVersion": "atrium.dev/v1alpha1", "kind": "Model",
        "metadata": { "name": "orphan-1", "labels": s.labels() },
        "spec": { "model": "orphan", "version": 1, "source": { "storagePath": "models/orphan" } }
    });
    let other_api: Api<Model> = other.api();
    apply(&other_api, orphan).await;
    let orphan =
        wait_for(&other_api, "orphan-1", MINUTE, |m: Option<&Model>| m.and_then(|m| m.condition("Ready")).is_some())
            .await
            .unwrap();
    assert_eq!(orphan.condition("Ready").unwrap().reason, "WorkspaceNotFound");
    assert!(s.operator_alive());
}

#[tokio::test]
async fn crashing_pods_and_image_pull_errors_surface_as_last_failure() {
    let s = Serving::start("serving-failures").await;
    s.model("iris-1", "iris", 1, json!({ "storagePath": "runs/train-iris/outputs/model" })).await;
    let healthy = json!({ "name": "blue", "model": { "name": "iris" }, "code": { "configMap": "iris-score" } });
    // The fake kubelets crash-loop containers with KWOK_EXIT_CODE.
    let crashing = json!({
        "name": "green", "model": { "name": "iris" }, "code": { "configMap": "iris-score" },
        "environment": { "env": [{ "name": "KWOK_EXIT_CODE", "value": "3" }] }
    });
    let unpullable = json!({
        "name": "red", "model": { "name": "iris" }, "code": { "configMap": "iris-score" },
        "environment": { "image": "registry.invalid/inference:1" }
    });
    let deployments = json!([healthy, crashing, unpullable]);
    s.endpoint("shaky", json!({ "deployments": deployments, "traffic": { "blue": 100 } })).await;

    // Only blue has traffic: the endpoint is Ready, and the others say what is wrong.
    let md = s
        .wait_endpoint("shaky", "failures reported while Ready", |md| {
            let reason = |d: &str| deployment_status(md, d)?.last_failure.as_ref()?.reason.clone();
            md.is_ready()
                && reason("green").as_deref() == Some("CrashLoopBackOff")
                && reason("red").as_deref() == Some("ErrImagePull")
        })
        .await;
    let green = deployment_status(&md, "green").unwrap();
    assert!(green.last_failure.as_ref().unwrap().message.as_deref().unwrap().contains("last exit code 3"));
    assert_eq!(green.ready_replicas, Some(0));
    let red = deployment_status(&md, "red").unwrap();
    assert!(red.last_failure.as_ref().unwrap().message.as_deref().unwrap().contains("registry.invalid"));
    assert_eq!(deployment_status(&md, "blue").unwrap().last_failure, None);

    // Traffic to the crashing deployment: Ready turns False with the failure as its reason.
    s.endpoint("shaky", json!({ "deployments": deployments, "traffic": { "blue": 0, "green": 100 } })).await;
    let md = s.wait_endpoint("shaky", "Ready=False from the crash loop", |md| !md.is_ready()).await;
    let ready = md.condition("Ready").unwrap();
    assert_eq!(ready.reason, "CrashLoopBackOff");
    assert!(ready.message.contains("deployment green (100% of traffic) has no ready instance"), "{}", ready.message);

    s.endpoint("shaky", json!({ "deployments": deployments, "traffic": { "red": 100 } })).await;
    let md =
        s.wait_endpoint("shaky", "Ready=False from the image", |md| ready_reason(md) == Some("ErrImagePull")).await;
    assert!(!md.is_ready());

    s.endpoint("shaky", json!({ "deployments": deployments, "traffic": { "blue": 100 } })).await;
    s.ready("shaky").await;
}

#[tokio::test]
async fn an_endpoint_never_takes_over_a_name_another_endpoint_holds() {
    let s = Serving::start("serving-names").await;
    s.model("iris-1", "iris", 1, json!({ "storagePath": "runs/train-iris/outputs/model" })).await;
    let deployment =
        |name: &str| json!({ "name": name, "model": { "name": "iris" }, "code": { "configMap": "iris-score" } });
    // Endpoint a's deployment b is the Deployment and Service a-b.
    s.endpoint("a", json!({ "deployments": [deployment("b")] })).await;
    let a = s.ready("a").await;
    let a_uid = a.uid().unwrap();
    let service: Service = s.get("a-b").await.expect("deployment b's Service");
    let selector = service.spec.unwrap().selector;

    // Endpoint a-b's router would be the Deployment and Service a-b too: it reports the conflict
    // and leaves them to a.
    s.endpoint("a-b", json!({ "deployments": [deployment("c")] })).await;
    let md = s.wait_endpoint("a-b", "a-b to report NameConflict", |md| ready_reason(md) == Some("NameConflict")).await;
    let message = &md.condition("Ready").unwrap().message;
    assert!(message.contains("\"a-b\" already belongs to modeldeployment \"a\""), "{message}");
    let service: Service = s.get("a-b").await.unwrap();
    assert_eq!(service.labels()["atrium.dev/owner-uid"], a_uid, "the Service is still a's");
    assert_eq!(service.spec.unwrap().selector, selector, "and still selects a's pods");
    let model_server: Deployment = s.get("a-b").await.unwrap();
    assert_eq!(model_server.labels()["atrium.dev/owner-uid"], a_uid);
    let a = s.ready("a").await;
    assert!(a.is_ready());

    // A Service of the user's, not made by Atrium, is not taken over either.
    let theirs: Service = serde_json::from_value(json!({
        "metadata": { "name": "mine", "labels": { "team": "a" } },
        "spec": { "selector": { "app": "legacy" }, "ports": [{ "port": 8080 }] }
    }))
    .unwrap();
    s.ns.api::<Service>().create(&PostParams::default(), &theirs).await.unwrap();
    s.endpoint("mine", json!({ "deployments": [deployment("blue")] })).await;
    let md =
        s.wait_endpoint("mine", "mine to report NameConflict", |md| ready_reason(md) == Some("NameConflict")).await;
    let message = &md.condition("Ready").unwrap().message;
    assert!(message.contains("\"mine\" already exists and is not one of this endpoint's objects"), "{message}");
    let service: Service = s.get("mine").await.unwrap();
    assert_eq!(service.labels().get("atrium.dev/owner-uid"), None, "left as the user made it");
    assert_eq!(service.spec.unwrap().selector.unwrap()["app"], "legacy");
}

#[tokio::test]
async fn a_child_refused_by_a_quota_is_forbidden_and_tried_again_when_the_quota_grows() {
    let s = Serving::start("serving-quota").await;
    s.model("iris-1", "iris", 1, json!({ "storagePath": "runs/train-iris/outputs/model" })).await;
    // No load balancers in this namespace.
    let quotas: Api<ResourceQuota> = s.ns.api();
    let quota = |lbs: &str| {
        json!({ "apiVersion": "v1", "kind": "ResourceQuota", "metadata": { "name": "q" },
                "spec": { "hard": { "services.loadbalancers": lbs } } })
    };
    apply(&quotas, quota("0")).await;
    eventually("the quota to be counted", MINUTE, || async { quotas.get("q").await.ok()?.status?.hard.map(|_| ()) })
        .await;

    let blue = json!({ "name": "blue", "model": { "name": "iris" }, "code": { "configMap": "iris-score" } });
    s.endpoint("public", json!({ "exposure": { "type": "LoadBalancer" }, "deployments": [blue] })).await;
    let md = s.wait_endpoint("public", "public to report Forbidden", |md| ready_reason(md) == Some("Forbidden")).await;
    let message = &md.condition("Ready").unwrap().message;
    assert!(message.contains("Service \"public\"") && message.contains("exceeded quota"), "{message}");
    assert!(s.get::<Service>("public").await.is_none(), "nothing was created in its place");

    // One load balancer allowed: the Service comes on the next try, and the endpoint is Ready.
    apply(&quotas, quota("1")).await;
    let api: Api<ModelDeployment> = s.ns.api();
    eventually("public Ready once the quota allows it", Duration::from_secs(150), || async {
        api.get("public").await.ok().filter(|md| md.is_ready()).map(|_| ())
    })
    .await;
}

/// Watches the pods of one Deployment (by its selector) and records the fewest Ready pods seen
/// at any moment since the first one was Ready.
fn track_ready_pods(api: Api<Pod>, selector: String) -> (Arc<Mutex<Option<usize>>>, tokio::task::JoinHandle<()>) {
    let fewest: Arc<Mutex<Option<usize>>> = Arc::new(Mutex::new(None));
    let record = fewest.clone();
    let task = tokio::spawn(async move {
        let mut ready: BTreeMap<String, bool> = BTreeMap::new();
        let stream = watcher::watcher(api, watcher::Config::default().labels(&selector));
        let mut events = std::pin::pin!(stream.default_backoff());
        while let Some(Ok(event)) = events.next().await {
            let is_ready = |p: &Pod| {
                p.metadata.deletion_timestamp.is_none()
                    && p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            };
            match event {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                    ready.insert(p.name_any(), is_ready(&p));
                }
                watcher::Event::Delete(p) => {
                    ready.remove(&p.name_any());
                }
                watcher::Event::Init | watcher::Event::InitDone => {}
            }
            let now = ready.values().filter(|r| **r).count();
            let mut fewest = record.lock().unwrap();
            if now > 0 || fewest.is_some() {
                *fewest = Some(fewest.map_or(now, |f| f.min(now)));
            }
        }
    });
    (fewest, task)
}

#[tokio::test]
async fn image_and_model_changes_roll_out_without_a_moment_without_a_ready_instance() {
    let s = Serving::start("serving-rollout").await;
    s.model("iris-1", "iris", 1, json!({ "storagePath": "models/iris/1" })).await;
    let deployment = |image: &str| {
        json!([{
            "name": "blue", "model": { "name": "iris" }, "code": { "configMap": "iris-score" },
            "environment": { "image": image }
        }])
    };
    let first = "mcr.microsoft.com/azureml/minimal-ubuntu22.04-py39-cpu-inference:20240101";
    s.endpoint("steady", json!({ "deployments": deployment(first) })).await;
    s.ready("steady").await;
    let live: Deployment = s.get("steady-blue").await.unwrap();
    let selector = live.spec.as_ref().unwrap().selector.match_labels.clone().unwrap();
    let selector = selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    let (fewest, watch) = track_ready_pods(s.ns.api(), selector);

    let rolled_out = |d: &Deployment, check: &dyn Fn(&Deployment) -> bool| {
        let status = d.status.clone().unwrap_or_default();
        check(d)
            && status.observed_generation == d.metadata.generation
            && status.updated_replicas == Some(1)
            && status.replicas == Some(1)
            && status.ready_replicas == Some(1)
    };
    let api: Api<Deployment> = s.ns.api();

    // A new image.
    let second = "mcr.microsoft.com/azureml/minimal-ubuntu22.04-py39-cpu-inference:20250101";
    s.endpoint("steady", json!({ "deployments": deployment(second) })).await;
    wait_for(&api, "steady-blue", MINUTE, |d: Option<&Deployment>| {
        d.is_some_and(|d| rolled_out(d, &|d| container(d).image.as_deref() == Some(second)))
    })
    .await;

    // A new model version: the deployment names no version, so it follows the highest Ready one.
    s.model("iris-2", "iris", 2, json!({ "storagePath": "models/iris/2" })).await;
    wait_for(&api, "steady-blue", MINUTE, |d: Option<&Deployment>| {
        d.is_some_and(|d| rolled_out(d, &|d| env(d, "AZUREML_MODEL_DIR").is_some_and(|m| m.ends_with("/iris/2"))))
    })
    .await;
    let md = s
        .wait_endpoint("steady", "serving iris:2", |md| {
            md.is_ready() && deployment_status(md, "blue").and_then(|d| d.model.as_deref()) == Some("iris:2")
        })
        .await;
    assert!(md.is_ready());
    // Let the pod watch catch up with the last old pod going away.
    tokio::time::sleep(Duration::from_secs(2)).await;
    watch.abort();
    let fewest = *fewest.lock().unwrap();
    assert_eq!(fewest, Some(1), "two rollouts, and at every moment at least one Ready instance");
}

#[tokio::test]
async fn the_autoscaler_owns_the_replica_count_once_scale_is_set() {
    let s = Serving::start("serving-hpa").await;
    s.model("iris-1", "iris", 1, json!({ "uri": "s3://models/iris/1/" })).await;
    let spec = |extra: Value| {
        let mut d = json!({ "name": "blue", "model": { "name": "iris" }, "code": { "configMap": "iris-score" } });
        d.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        json!({ "deployments": [d] })
    };
    s.endpoint("scaled", spec(json!({ "instanceCount": 2 }))).await;
    s.wait_endpoint("scaled", "two ready", |md| {
        md.is_ready() && deployment_status(md, "blue").is_some_and(|d| d.ready_replicas == Some(2))
    })
    .await;
    assert!(s.get::<PodDisruptionBudget>("scaled-blue").await.is_some());

    // Record every replica count the Deployment goes through from here on.
    let api: Api<Deployment> = s.ns.api();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let watch_api = api.clone();
    let watch = tokio::spawn(async move {
        let config = watcher::Config::default().fields("metadata.name=scaled-blue");
        let mut events = std::pin::pin!(watcher::watcher(watch_api, config).default_backoff().applied_objects());
        while let Some(Ok(d)) = events.next().await {
            record.lock().unwrap().push(d.spec.and_then(|s| s.replicas).unwrap_or(0));
        }
    });

    // scale: the HPA (the cluster's own controller) raises the replicas to its minimum.
    s.endpoint("scaled", spec(json!({ "instanceCount": 2, "scale": { "minInstances": 3, "maxInstances": 5 } }))).await;
    assert!(
        eventually("the HPA", MINUTE, || async { s.get::<HorizontalPodAutoscaler>("scaled-blue").await })
            .await
            .spec
            .min_replicas
            == Some(3)
    );
    wait_for(&api, "scaled-blue", Duration::from_secs(90), |d: Option<&Deployment>| {
        d.and_then(|d| d.spec.as_ref()?.replicas) == Some(3)
    })
    .await;

    // A change to the deployment is applied without touching the HPA's count.
    s.endpoint(
        "scaled",
        spec(json!({
            "instanceCount": 2, "scale": { "minInstances": 3, "maxInstances": 5 },
            "environment": { "env": [{ "name": "LOG_LEVEL", "value": "debug" }] }
        })),
    )
    .await;
    let d = wait_for(&api, "scaled-blue", MINUTE, |d: Option<&Deployment>| {
        d.is_some_and(|d| env(d, "LOG_LEVEL").as_deref() == Some("debug"))
    })
    .await
    .unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(3));
    s.wait_endpoint("scaled", "three ready", |md| {
        md.is_ready() && deployment_status(md, "blue").is_some_and(|d| d.ready_replicas == Some(3))
    })
    .await;
    let counts = seen.lock().unwrap().clone();
    assert!(counts.iter().all(|n| *n >= 2), "the replica count never dropped while the HPA took over: {counts:?}");

    // Without scale, the operator owns the count again; the HPA and the PDB go.
    s.endpoint("scaled", spec(json!({ "instanceCount": 1 }))).await;
    wait_for(&api, "scaled-blue", MINUTE, |d: Option<&Deployment>| {
        d.and_then(|d| d.spec.as_ref()?.replicas) == Some(1)
    })
    .await;
    eventually("HPA and PDB removed", MINUTE, || async {
        let gone = s.get::<HorizontalPodAutoscaler>("scaled-blue").await.is_none()
            && s.get::<PodDisruptionBudget>("scaled-blue").await.is_none();
        gone.then_some(())
    })
    .await;
    watch.abort();
}
