//! The quickstart as Argo CD would sync it: server-side apply, wait for Ready, apply again —
//! nothing changes (no generation or resourceVersion moves) and `kubectl diff --server-side` is
//! empty, because the operator writes nothing but status and its children.

use std::time::Duration;

use atrium::api::{ComputeCluster, HasConditions, InstanceType, Model, ModelDeployment, TrainingRun, Workspace};
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, DynamicObject, ListParams, PostParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::json;

use crate::harness::{Operator, client, eventually, install_crds, wait_for};

const QUICKSTART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart");
const T: Duration = Duration::from_secs(120);

async fn kubectl(args: &[&str]) -> std::process::Output {
    let bin = std::env::var("ATRIUM_BIN_DIR").expect("ATRIUM_BIN_DIR (set by make test) holds kubectl");
    tokio::process::Command::new(format!("{bin}/kubectl")).args(args).output().await.expect("run kubectl")
}

/// `kubectl apply --server-side` of the cluster-scoped part (`workspace.yaml`) or of the
/// namespaced part (the kustomization), as a GitOps tool would sync them.
async fn apply(cluster_scoped: bool) {
    let workspace = format!("{QUICKSTART}/workspace.yaml");
    let args = if cluster_scoped {
        ["apply", "--server-side", "-f", workspace.as_str()]
    } else {
        ["apply", "--server-side", "-k", QUICKSTART]
    };
    let out = kubectl(&args).await;
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// (kind/name, generation, resourceVersion) of every object the quickstart declares.
async fn snapshot(ns: &str) -> Vec<(String, Option<i64>, Option<String>)> {
    let c = client().await;
    let mut out = Vec::new();
    let kinds = [
        ("Workspace", "workspaces", false),
        ("InstanceType", "instancetypes", false),
        ("ComputeCluster", "computeclusters", true),
        ("TrainingRun", "trainingruns", true),
        ("ModelDeployment", "modeldeployments", true),
    ];
    for (kind, plural, namespaced) in kinds {
        let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("atrium.dev", "v1alpha1", kind), plural);
        let api: Api<DynamicObject> =
            if namespaced { Api::namespaced_with(c.clone(), ns, &ar) } else { Api::all_with(c.clone(), &ar) };
        for o in api.list(&ListParams::default()).await.unwrap() {
            if !namespaced && !["team-a", "cpu-small"].contains(&o.name_any().as_str()) {
                continue;
            }
            out.push((format!("{kind}/{}", o.name_any()), o.metadata.generation, o.resource_version()));
        }
    }
    for name in ["iris-score", "iris-train-code"] {
        let cm = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(c.clone(), ns).get(name).await.unwrap();
        out.push((format!("ConfigMap/{name}"), None, cm.resource_version()));
    }
    out.sort();
    out
}

#[tokio::test]
async fn the_quickstart_syncs_to_ready_and_a_second_sync_changes_nothing() {
    install_crds().await;
    // The quickstart's objects carry no test-shard label; every other test's objects do.
    let _operator = Operator::start("gitops", &["--leader-elect=false", "--object-selector", "!atrium.dev/test-shard"]);
    let c = client().await;
    let ns = "team-a";

    // The namespaced objects go into the workspace's namespace: apply them once it exists (Argo
    // CD gets there by retrying, or with a sync wave).
    apply(true).await;
    let workspaces: Api<Workspace> = Api::all(c.clone());
    wait_for(&workspaces, "team-a", T, |w: Option<&Workspace>| w.is_some_and(|w| w.is_ready())).await;
    apply(false).await;
    // No storage provisioner here: a volume for the workspace claim, as for static storage.
    let claim = workspaces.get("team-a").await.unwrap().status.unwrap().storage.unwrap().claim_name.unwrap();
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": { "name": "atrium-gitops-team-a" },
        "spec": {
            "capacity": { "storage": "10Gi" }, "accessModes": ["ReadWriteOnce"],
            "hostPath": { "path": "/tmp/atrium-gitops" },
            "claimRef": { "namespace": ns, "name": claim }
        }
    }))
    .unwrap();
    let pvs: Api<PersistentVolume> = Api::all(c.clone());
    pvs.create(&PostParams::default(), &pv).await.unwrap();

    let clusters: Api<ComputeCluster> = Api::namespaced(c.clone(), ns);
    wait_for(&clusters, "cpu-cluster", T, |o: Option<&ComputeCluster>| o.is_some_and(|o| o.is_ready())).await;
    let runs: Api<TrainingRun> = Api::namespaced(c.clone(), ns);
    wait_for(&runs, "iris-train", T, |r: Option<&TrainingRun>| {
        r.and_then(|r| r.status.as_ref()?.registered_model.clone()).is_some()
    })
    .await;
    let models: Api<Model> = Api::namespaced(c.clone(), ns);
    eventually("the registered model to be Ready", T, || async {
        models.list(&ListParams::default()).await.ok()?.items.iter().any(|m| m.is_ready()).then_some(())
    })
    .await;
    let endpoints: Api<ModelDeployment> = Api::namespaced(c.clone(), ns);
    wait_for(&endpoints, "iris", T, |o: Option<&ModelDeployment>| o.is_some_and(|o| o.is_ready())).await;
    let itypes: Api<InstanceType> = Api::all(c.clone());
    assert!(itypes.get("cpu-small").await.unwrap().is_ready());

    let before = snapshot(ns).await;
    apply(true).await;
    apply(false).await;
    let after = snapshot(ns).await;
    assert_eq!(before, after, "a second sync changes nothing (generation and resourceVersion)");
    for args in [
        ["diff", "--server-side", "-f", &format!("{QUICKSTART}/workspace.yaml")],
        ["diff", "--server-side", "-k", QUICKSTART],
    ] {
        let out = kubectl(&args).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "kubectl {args:?} shows drift:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(out.stdout.is_empty());
    }

    // Clean up: the workspace's deletionPolicy is Delete, so its namespace goes with it.
    let uid = workspaces.get("team-a").await.unwrap().uid().unwrap();
    workspaces.delete("team-a", &DeleteParams::default()).await.unwrap();
    wait_for(&workspaces, "team-a", T, kube::runtime::wait::conditions::is_deleted(&uid)).await;
    let _ = itypes.delete("cpu-small", &DeleteParams::default()).await;
    let _ = pvs.delete("atrium-gitops-team-a", &DeleteParams::default()).await;
}
