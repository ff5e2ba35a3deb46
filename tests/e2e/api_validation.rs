//! The CRDs as users meet them: applied and served, documented for `kubectl explain`, and
//! rejecting at `kubectl apply` what one object can get wrong on its own.

use std::time::Duration;

use kube::{
    Api,
    api::{DynamicObject, Patch, PatchParams, PostParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::{Value, json};

use crate::harness::{TestNamespace, client, eventually, install_crds, unique};

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("atrium.dev", "v1alpha1", kind), plural)
}

fn obj(kind: &str, name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "atrium.dev/v1alpha1", "kind": kind, "metadata": { "name": name }, "spec": spec
    }))
    .unwrap()
}

fn deployment(name: &str) -> Value {
    json!({ "name": name, "model": { "name": "iris", "version": 1 }, "code": { "configMap": "score" } })
}

async fn create(api: &Api<DynamicObject>, o: &DynamicObject) -> Result<(), String> {
    api.create(&PostParams::default(), o).await.map(|_| ()).map_err(|e| e.to_string())
}

#[tokio::test]
async fn invalid_manifests_are_rejected_with_readable_messages() {
    install_crds().await;
    let ns = TestNamespace::new("cel").await;
    let c = client().await;
    let clusters =
        Api::<DynamicObject>::namespaced_with(c.clone(), &ns.name, &resource("ComputeCluster", "computeclusters"));
    let deps =
        Api::<DynamicObject>::namespaced_with(c.clone(), &ns.name, &resource("ModelDeployment", "modeldeployments"));
    let runs = Api::<DynamicObject>::namespaced_with(c.clone(), &ns.name, &resource("TrainingRun", "trainingruns"));

    // (what is wrong, api, object, words the message must contain)
    let cases: Vec<(&str, &Api<DynamicObject>, DynamicObject, &[&str])> = vec![
        (
            "min > max",
            &clusters,
            obj("ComputeCluster", "minmax", json!({ "minInstances": 5, "maxInstances": 2 })),
            &["minInstances", "maxInstances"],
        ),
        (
            "a negative count",
            &clusters,
            obj("ComputeCluster", "negative", json!({ "minInstances": -1 })),
            &["minInstances"],
        ),
        (
            "an unknown enum value",
            &clusters,
            obj("ComputeCluster", "tier", json!({ "tier": "Spot" })),
            &["tier", "Dedicated"],
        ),
        (
            "traffic 60 + 30",
            &deps,
            obj(
                "ModelDeployment",
                "traffic",
                json!({ "deployments": [deployment("blue"), deployment("green")], "traffic": { "blue": 60, "green": 30 } }),
            ),
            &["100"],
        ),
        (
            "a deployment both live and mirrored",
            &deps,
            obj(
                "ModelDeployment",
                "mirror",
                json!({ "deployments": [deployment("blue"), deployment("green")], "traffic": { "blue": 100 }, "mirrorTraffic": { "blue": 10 } }),
            ),
            &["mirror"],
        ),
        (
            "an uppercase deployment name",
            &deps,
            obj("ModelDeployment", "upper", json!({ "deployments": [deployment("Blue")] })),
            &["name"],
        ),
        (
            "a scoring path with a space",
            &deps,
            obj(
                "ModelDeployment",
                "path",
                json!({ "deployments": [{
                    "name": "blue", "model": { "name": "iris", "version": 1 }, "code": { "configMap": "score" },
                    "runtime": { "scoringPath": "/my score" }
                }] }),
            ),
            &["scoringPath", "URL path"],
        ),
        (
            "an unknown auth mode",
            &deps,
            obj("ModelDeployment", "auth", json!({ "authMode": "Token", "deployments": [deployment("blue")] })),
            &["authMode"],
        ),
        (
            "a negative instance count",
            &runs,
            obj(
                "TrainingRun",
                "count",
                json!({ "computeCluster": "cpu", "image": "python:3.12", "command": ["python"], "instanceCount": -1 }),
            ),
            &["instanceCount"],
        ),
    ];
    for (what, api, o, words) in cases {
        let err = create(api, &o).await.expect_err(&format!("{what} must be rejected"));
        for w in words {
            assert!(err.contains(w), "{what}: the message names {w:?}: {err}");
        }
    }

    // Valid objects are accepted, and defaults come from the schema.
    create(&clusters, &obj("ComputeCluster", "ok", json!({}))).await.expect("an empty ComputeCluster is valid");
    let cc = clusters.get("ok").await.unwrap();
    assert_eq!(cc.data["spec"]["maxInstances"], 4);
    assert_eq!(cc.data["spec"]["minInstances"], 0);
    create(&deps, &obj("ModelDeployment", "ok", json!({ "deployments": [deployment("blue")] })))
        .await
        .expect("one deployment is valid");

    // A TrainingRun's spec is immutable.
    create(
        &runs,
        &obj(
            "TrainingRun",
            "immutable",
            json!({ "computeCluster": "cpu", "image": "python:3.12", "command": ["python", "train.py"] }),
        ),
    )
    .await
    .unwrap();
    let changed = json!({ "apiVersion": "atrium.dev/v1alpha1", "kind": "TrainingRun", "spec": { "computeCluster": "cpu", "image": "python:3.13", "command": ["python", "train.py"] } });
    let err = runs
        .patch("immutable", &PatchParams::apply("atrium-tests").force(), &Patch::Apply(&changed))
        .await
        .expect_err("changing a TrainingRun's image must be rejected")
        .to_string();
    assert!(err.to_lowercase().contains("immutable"), "{err}");
}

#[tokio::test]
async fn cluster_scoped_kinds_validate_too() {
    install_crds().await;
    let c = client().await;
    let ws = Api::<DynamicObject>::all_with(c.clone(), &resource("Workspace", "workspaces"));
    let long = "x".repeat(65);
    let err = create(&ws, &obj("Workspace", &unique("ws-long"), json!({ "displayName": long }))).await.unwrap_err();
    assert!(err.contains("displayName"), "{err}");
    let err = create(
        &ws,
        &obj(
            "Workspace",
            &unique("ws-sa"),
            json!({ "access": [{ "kind": "ServiceAccount", "name": "ci", "role": "Reader" }] }),
        ),
    )
    .await
    .unwrap_err();
    assert!(err.contains("namespace"), "a ServiceAccount entry needs a namespace: {err}");
}

#[tokio::test]
async fn kubectl_explain_shows_the_field_docs() {
    install_crds().await;
    let bin = std::env::var("ATRIUM_BIN_DIR").expect("ATRIUM_BIN_DIR (set by make test) holds kubectl");
    let kubeconfig = std::env::var("KUBECONFIG").unwrap();
    let crd = atrium::api::all_crds().into_iter().find(|c| c.spec.names.kind == "Workspace").unwrap();
    let schema = crd.spec.versions[0].schema.clone().unwrap().open_api_v3_schema.unwrap();
    let doc =
        schema.properties.unwrap()["spec"].properties.clone().unwrap()["displayName"].description.clone().unwrap();
    let first_words: String = doc.split_whitespace().take(4).collect::<Vec<_>>().join(" ");
    // `kubectl explain` reads the published OpenAPI, which trails the CRD by a moment.
    eventually("kubectl explain to show the displayName docs", Duration::from_secs(60), || {
        let (bin, kubeconfig, first_words) = (bin.clone(), kubeconfig.clone(), first_words.clone());
        async move {
            let out = tokio::process::Command::new(format!("{bin}/kubectl"))
                .args(["--kubeconfig", &kubeconfig, "explain", "workspace.spec.displayName"])
                .output()
                .await
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
            text.contains(&first_words).then_some(())
        }
    })
    .await;
}
