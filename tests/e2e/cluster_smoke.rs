//! The local control plane behaves as the operator's tests need: kwok's fake kubelets run pods,
//! complete Job pods, fail pods on request and report unpullable images; LoadBalancer Services get
//! an address; namespaces delete completely; CRDs are served.

use std::time::Duration;

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        batch::v1::Job,
        core::v1::{Namespace, Pod, Service},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams},
    core::{ApiResource, GroupVersionKind},
    runtime::wait::conditions,
};
use serde_json::json;

use crate::harness::{TestNamespace, client, eventually, unique, wait_for};

const T: Duration = Duration::from_secs(60);

fn from_json<K: serde::de::DeserializeOwned>(v: serde_json::Value) -> K {
    serde_json::from_value(v).expect("valid object")
}

fn pod(name: &str, restart: &str, image: &str, annotations: serde_json::Value) -> Pod {
    from_json(json!({
        "metadata": { "name": name, "annotations": annotations },
        "spec": {
            "restartPolicy": restart,
            "containers": [{ "name": "main", "image": image }]
        }
    }))
}

#[tokio::test]
async fn three_ready_nodes_one_with_gpus() {
    let nodes =
        Api::<k8s_openapi::api::core::v1::Node>::all(client().await).list(&ListParams::default()).await.unwrap();
    let ready = |n: &k8s_openapi::api::core::v1::Node| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    assert!(nodes.items.iter().filter(|n| ready(n)).count() >= 3, "at least 3 Ready nodes");
    let gpus =
        nodes.items.iter().filter_map(|n| n.status.as_ref()?.allocatable.as_ref()?.get("nvidia.com/gpu")).count();
    assert_eq!(gpus, 1, "exactly one node has nvidia.com/gpu allocatable");
}

#[tokio::test]
async fn deployment_pods_become_running_and_ready() {
    let ns = TestNamespace::new("smoke-deploy").await;
    let deploys: Api<Deployment> = ns.api();
    let d: Deployment = from_json(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "registry.k8s.io/pause:3.10" }] }
            }
        }
    }));
    deploys.create(&PostParams::default(), &d).await.unwrap();
    wait_for(&deploys, "web", T, conditions::is_deployment_completed()).await;
    let pods = ns.api::<Pod>().list(&ListParams::default().labels("app=web")).await.unwrap();
    assert_eq!(pods.items.len(), 2);
    for p in pods {
        let st = p.status.unwrap();
        assert_eq!(st.phase.as_deref(), Some("Running"));
        assert!(st.conditions.unwrap().iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    }
}

#[tokio::test]
async fn job_pods_complete() {
    let ns = TestNamespace::new("smoke-job").await;
    let jobs: Api<Job> = ns.api();
    let job: Job = from_json(json!({
        "metadata": { "name": "train" },
        "spec": {
            "completions": 2, "parallelism": 2, "completionMode": "Indexed", "backoffLimit": 0,
            "template": { "spec": {
                "restartPolicy": "Never",
                "containers": [{ "name": "train", "image": "python:3.12-slim", "command": ["python", "-c", "print(1)"] }]
            }}
        }
    }));
    jobs.create(&PostParams::default(), &job).await.unwrap();
    wait_for(&jobs, "train", T, conditions::is_job_completed()).await;
    let done = jobs.get("train").await.unwrap().status.unwrap();
    assert_eq!(done.succeeded, Some(2));
}

#[tokio::test]
async fn a_pod_can_be_made_to_fail() {
    let ns = TestNamespace::new("smoke-fail").await;
    let pods: Api<Pod> = ns.api();
    pods.create(&PostParams::default(), &pod("fails", "Never", "busybox", json!({ "kwok.atrium.dev/exit-code": "3" })))
        .await
        .unwrap();
    let failed = wait_for(&pods, "fails", T, |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref()?.phase.as_deref()) == Some("Failed")
    })
    .await
    .unwrap();
    let term = failed.status.unwrap().container_statuses.unwrap()[0].state.clone().unwrap().terminated.unwrap();
    assert_eq!(term.exit_code, 3);
    assert_eq!(term.reason.as_deref(), Some("Error"));

    // A restarted container with an exit code crash-loops instead.
    pods.create(
        &PostParams::default(),
        &pod("crashes", "Always", "busybox", json!({ "kwok.atrium.dev/exit-code": "1" })),
    )
    .await
    .unwrap();
    let crashing = wait_for(&pods, "crashes", T, |p: Option<&Pod>| {
        p.and_then(|p| {
            p.status.as_ref()?.container_statuses.as_ref()?.first()?.state.as_ref()?.waiting.as_ref()?.reason.clone()
        })
        .as_deref()
            == Some("CrashLoopBackOff")
    })
    .await
    .unwrap();
    let cs = &crashing.status.unwrap().container_statuses.unwrap()[0];
    assert!(!cs.ready);
    assert_eq!(cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap().exit_code, 1);

    // An image from a host that can never resolve is never pulled.
    pods.create(&PostParams::default(), &pod("unpullable", "Never", "registry.invalid/nope:1", json!({})))
        .await
        .unwrap();
    let pending = wait_for(&pods, "unpullable", T, |p: Option<&Pod>| {
        p.and_then(|p| {
            p.status.as_ref()?.container_statuses.as_ref()?.first()?.state.as_ref()?.waiting.as_ref()?.reason.clone()
        })
        .as_deref()
            == Some("ErrImagePull")
    })
    .await
    .unwrap();
    assert_eq!(pending.status.unwrap().phase.as_deref(), Some("Pending"));
}

#[tokio::test]
async fn load_balancer_services_get_a_test_net_address() {
    let ns = TestNamespace::new("smoke-lb").await;
    let svcs: Api<Service> = ns.api();
    let svc: Service = from_json(json!({
        "metadata": { "name": "lb" },
        "spec": { "type": "LoadBalancer", "selector": { "app": "x" }, "ports": [{ "port": 80 }] }
    }));
    svcs.create(&PostParams::default(), &svc).await.unwrap();
    let lb = wait_for(&svcs, "lb", T, conditions::is_service_loadbalancer_provisioned()).await.unwrap();
    let ip = lb.status.unwrap().load_balancer.unwrap().ingress.unwrap()[0].ip.clone().unwrap();
    assert!(ip.starts_with("192.0.2."), "address {ip} is in TEST-NET-1");
}

#[tokio::test]
async fn namespaces_delete_completely() {
    let client = client().await;
    let name = unique("smoke-nsdel");
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(&PostParams::default(), &from_json(json!({ "metadata": { "name": name } }))).await.unwrap();
    // Something inside, so the namespace controller has work to do.
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), &name);
    cms.create(&PostParams::default(), &from_json(json!({ "metadata": { "name": "c" }, "data": { "k": "v" } })))
        .await
        .unwrap();
    let uid = nss.get(&name).await.unwrap().uid().unwrap();
    nss.delete(&name, &DeleteParams::default()).await.unwrap();
    wait_for(&nss, &name, T, conditions::is_deleted(&uid)).await;
}

#[tokio::test]
async fn a_crd_is_applied_and_served() {
    let client = client().await;
    let plural = unique("widgets").replace('-', "");
    let group = "smoke.atrium.dev";
    let crd_name = format!("{plural}.{group}");
    let crd: CustomResourceDefinition = from_json(json!({
        "metadata": { "name": crd_name },
        "spec": {
            "group": group,
            "names": { "kind": "Widget", "plural": plural, "singular": plural.trim_end_matches('s') },
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": { "type": "object", "properties": {
                    "spec": { "type": "object", "properties": { "size": { "type": "integer", "minimum": 1 } } }
                }}}
            }]
        }
    }));
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(&crd_name, &PatchParams::apply("atrium-tests").force(), &Patch::Apply(&crd)).await.unwrap();
    wait_for(&crds, &crd_name, T, conditions::is_crd_established()).await;

    let ns = TestNamespace::new("smoke-crd").await;
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1", "Widget"), &plural);
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns.name, &ar);
    let w: DynamicObject = from_json(json!({
        "apiVersion": format!("{group}/v1"), "kind": "Widget",
        "metadata": { "name": "w" }, "spec": { "size": 3 }
    }));
    // Discovery may lag the Established condition by a moment.
    eventually("the new CRD to be served", T, || async { widgets.create(&PostParams::default(), &w).await.ok() }).await;
    let bad: DynamicObject = from_json(json!({
        "apiVersion": format!("{group}/v1"), "kind": "Widget",
        "metadata": { "name": "bad" }, "spec": { "size": 0 }
    }));
    let err = widgets.create(&PostParams::default(), &bad).await.unwrap_err().to_string();
    assert!(err.contains("spec.size"), "schema validation names the field: {err}");
    assert_eq!(widgets.list(&ListParams::default()).await.unwrap().items.len(), 1);
    crds.delete(&crd_name, &DeleteParams::default()).await.unwrap();
}
