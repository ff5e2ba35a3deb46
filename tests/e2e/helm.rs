//! The Helm chart: lints, renders the generated CRDs so upgrades upgrade them, rejects bad
//! values through its schema, and installs into the local control plane with Ready pods.

use std::process::Output;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;

use crate::harness::{TestNamespace, unique};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/atrium");

async fn helm(args: &[&str]) -> Output {
    let bin = std::env::var("ATRIUM_BIN_DIR").expect("ATRIUM_BIN_DIR (set by make test) holds helm");
    tokio::process::Command::new(format!("{bin}/helm"))
        .args(args)
        .env("HELM_CACHE_HOME", concat!(env!("CARGO_MANIFEST_DIR"), "/target/helm/cache"))
        .env("HELM_CONFIG_HOME", concat!(env!("CARGO_MANIFEST_DIR"), "/target/helm/config"))
        .env("HELM_DATA_HOME", concat!(env!("CARGO_MANIFEST_DIR"), "/target/helm/data"))
        .output()
        .await
        .expect("run helm")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `helm template` of the chart with `args` added: its documents.
async fn render(args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["template", "atrium", CHART, "--namespace", "atrium-system", "--kube-version", "1.36.3"];
    all.extend_from_slice(args);
    let out = helm(&all).await;
    assert!(out.status.success(), "helm template: {}", text(&out));
    serde_yaml::Deserializer::from_slice(&out.stdout)
        .filter_map(|d| serde::Deserialize::deserialize(d).ok())
        .filter(|v: &serde_json::Value| !v.is_null())
        .collect()
}

#[tokio::test]
async fn the_chart_lints_and_renders_the_generated_crds() {
    let lint = helm(&["lint", "--strict", CHART]).await;
    assert!(lint.status.success(), "helm lint: {}", text(&lint));

    let docs = render(&[]).await;
    for crd in atrium::api::all_crds() {
        let name = crd.metadata.name.clone().unwrap();
        let rendered = docs
            .iter()
            .find(|d| d["kind"] == "CustomResourceDefinition" && d["metadata"]["name"] == name.as_str())
            .unwrap_or_else(|| panic!("the chart renders CRD {name}"));
        assert_eq!(
            rendered["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "{name} is kept on uninstall"
        );
        let rendered: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
            serde_json::from_value(rendered.clone()).unwrap();
        assert_eq!(rendered.spec, crd.spec, "{name} matches the API types");
    }
    for role in atrium::controller::workspace::cluster_roles() {
        let name = role.metadata.name.clone().unwrap();
        let rendered = docs
            .iter()
            .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == name.as_str())
            .unwrap_or_else(|| panic!("the chart renders workspace role {name}"));
        let rendered: k8s_openapi::api::rbac::v1::ClusterRole = serde_json::from_value(rendered.clone()).unwrap();
        assert_eq!(rendered.rules, role.rules, "{name} grants what the operator's code defines");
    }
    let deploy = docs.iter().find(|d| d["kind"] == "Deployment").expect("a Deployment");
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");

    // Shards installed side by side (objectSelector) each elect a leader on a Lease of their own.
    let lease_arg = |docs: &[serde_json::Value]| -> Option<String> {
        let deploy = docs.iter().find(|d| d["kind"] == "Deployment")?;
        let args = deploy["spec"]["template"]["spec"]["containers"][0]["args"].as_array()?;
        args.iter().filter_map(|a| a.as_str()).find(|a| a.starts_with("--lease-name=")).map(str::to_owned)
    };
    assert_eq!(lease_arg(&docs), None, "one installation: the operator's default Lease");
    let sharded = render(&["--set", "objectSelector=shard=a"]).await;
    assert_eq!(lease_arg(&sharded).as_deref(), Some("--lease-name=atrium"));

    // Air-gapped: every image the operator creates pods with can point at a mirror.
    let env = |c: &serde_json::Value| -> Vec<(String, String)> {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| Some((e["name"].as_str()?.into(), e["value"].as_str()?.into())))
            .collect()
    };
    assert!(!env(c).iter().any(|(n, _)| n == "ATRIUM_STANDBY_IMAGE"), "unset: the operator's default");
    let docs = render(&[
        "--set",
        "router.image.repository=mirror.local/atrium-router",
        "--set",
        "router.image.tag=v1",
        "--set",
        "images.fetchHttps=mirror.local/curl:1",
        "--set",
        "images.fetchS3=mirror.local/aws-cli:1",
        "--set",
        "images.standby=mirror.local/pause:1",
    ])
    .await;
    let deploy = docs.iter().find(|d| d["kind"] == "Deployment").expect("a Deployment");
    let env = env(&deploy["spec"]["template"]["spec"]["containers"][0]);
    for (name, value) in [
        ("ATRIUM_ROUTER_IMAGE", "mirror.local/atrium-router:v1"),
        ("ATRIUM_FETCH_HTTPS_IMAGE", "mirror.local/curl:1"),
        ("ATRIUM_FETCH_S3_IMAGE", "mirror.local/aws-cli:1"),
        ("ATRIUM_STANDBY_IMAGE", "mirror.local/pause:1"),
    ] {
        assert!(env.contains(&(name.into(), value.into())), "{name}={value} in {env:?}");
    }

    let bad = helm(&["template", "atrium", CHART, "--kube-version", "1.36.3", "--set", "replicaCount=-1"]).await;
    assert!(!bad.status.success(), "a negative replica count is refused");
    assert!(text(&bad).contains("replicaCount"), "{}", text(&bad));
}

#[tokio::test]
async fn the_chart_installs_with_ready_operator_pods() {
    let ns = TestNamespace::new("helm").await;
    let release = unique("rel");
    // The CRDs and workspace roles are cluster-wide and shared by every test on this cluster, so
    // this release leaves them to the test harness; rendering them is tested above.
    let install = helm(&[
        "install",
        &release,
        CHART,
        "--namespace",
        &ns.name,
        "--set",
        "crds.install=false",
        "--set",
        "workspaceRoles.create=false",
        "--wait",
        "--timeout",
        "120s",
    ])
    .await;
    assert!(install.status.success(), "helm install: {}", text(&install));
    let deploys: Api<Deployment> = ns.api();
    let d = deploys.get(&format!("{release}-atrium")).await.unwrap();
    assert_eq!(d.status.and_then(|s| s.ready_replicas), Some(2), "both operator replicas are Ready");
    let uninstall = helm(&["uninstall", &release, "--namespace", &ns.name, "--wait"]).await;
    assert!(uninstall.status.success(), "helm uninstall: {}", text(&uninstall));
}
