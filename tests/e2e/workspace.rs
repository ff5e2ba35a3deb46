//! The Workspace controller against the local control plane: children and access, convergence
//! after spec edits, display-name and namespace conflicts, both deletion policies, and no writes
//! once ready. Each test runs its own operator, reconciling only its own workspaces (a shard
//! label), so tests run side by side.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, Seek},
    path::PathBuf,
    time::{Duration, Instant},
};

use atrium::{
    api::workspace::{Workspace, WorkspaceStatus},
    controller::workspace::{CONTRIBUTOR_ROLE, FINALIZER, OWNER_ROLE, READER_ROLE},
};
use k8s_openapi::{
    ByteString,
    api::{
        core::v1::{Event, LimitRange, Namespace, PersistentVolumeClaim, ResourceQuota, Secret, ServiceAccount},
        networking::v1::NetworkPolicy,
        rbac::v1::{ClusterRole, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams},
    runtime::wait::conditions,
};
use serde_json::{Value, json};

use crate::harness::{Operator, TestNamespace, client, eventually, install_crds, unique, wait_for};

const SHARD_LABEL: &str = "atrium.dev/test-shard";
const OWNER_UID: &str = "atrium.dev/owner-uid";

/// An operator of its own for one test, reconciling only workspaces labelled with `shard`.
fn operator(shard: &str) -> Operator {
    operator_logging_to(shard, shard)
}

fn operator_logging_to(log_name: &str, shard: &str) -> Operator {
    let selector = format!("{SHARD_LABEL}={shard}");
    Operator::start(log_name, &["--leader-elect=false", "--object-selector", selector.as_str()])
}

fn workspaces(client: &Client) -> Api<Workspace> {
    Api::all(client.clone())
}

/// Creates or updates (server-side apply, field manager of the tests) the workspace `name` with
/// `spec`: fields left out of `spec` are removed, as a user's `kubectl apply` would.
async fn apply_workspace(api: &Api<Workspace>, name: &str, shard: &str, spec: Value) -> Workspace {
    let body = json!({
        "apiVersion": "atrium.dev/v1alpha1", "kind": "Workspace",
        "metadata": { "name": name, "labels": { SHARD_LABEL: shard } },
        "spec": spec,
    });
    api.patch(name, &PatchParams::apply("atrium-tests").force(), &Patch::Apply(&body))
        .await
        .unwrap_or_else(|e| panic!("applying workspace {name}: {e}"))
}

fn condition<'a>(ws: &'a Workspace, type_: &str) -> Option<&'a Condition> {
    ws.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
}

/// Waits until the workspace's current generation is observed with `Ready` of `status` (and
/// `reason`, when given).
async fn wait_ready(api: &Api<Workspace>, name: &str, status: bool, reason: Option<&str>) -> Workspace {
    let want = if status { "True" } else { "False" };
    let reason = reason.map(str::to_owned);
    wait_for(api, name, Duration::from_secs(60), move |ws: Option<&Workspace>| {
        ws.is_some_and(|ws| {
            let observed = ws.status.as_ref().and_then(|s| s.observed_generation) == ws.metadata.generation;
            observed
                && condition(ws, "Ready")
                    .is_some_and(|c| c.status == want && reason.as_ref().is_none_or(|r| &c.reason == r))
        })
    })
    .await
    .unwrap()
}

/// Removes what a test made even when it fails half-way: workspaces (finalizers first — their
/// operator may be gone) and namespaces. Declare it before the test's operator, so that the
/// operator is stopped first (a running one would put a `Retain` finalizer back).
#[derive(Default)]
struct Cleanup {
    workspaces: Vec<String>,
    namespaces: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (workspaces, namespaces) = (std::mem::take(&mut self.workspaces), std::mem::take(&mut self.namespaces));
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let Ok(client) = Client::try_default().await else { return };
                let ws: Api<Workspace> = Api::all(client.clone());
                for name in workspaces {
                    let _ = ws
                        .patch(&name, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}})))
                        .await;
                    let _ = ws.delete(&name, &DeleteParams::background()).await;
                }
                let ns: Api<Namespace> = Api::all(client);
                for name in namespaces {
                    let _ = ns.delete(&name, &DeleteParams::background()).await;
                }
            });
        })
        .join();
    }
}

/// The kubectl of the local control plane.
fn kubectl() -> PathBuf {
    let dir = std::env::var("ATRIUM_BIN_DIR").map(PathBuf::from).unwrap_or_else(|_| {
        let out = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/hack/cluster/build.sh"))
            .output()
            .expect("run hack/cluster/build.sh");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    });
    dir.join("kubectl")
}

/// `kubectl auth can-i <verb> <resource> -n <ns> --as <user> [--as-group <g>]…`; `resource` may
/// name a subresource (`pods/log`).
fn can_i(ns: &str, user: &str, groups: &[&str], verb: &str, resource: &str) -> bool {
    let mut cmd = std::process::Command::new(kubectl());
    match resource.split_once('/') {
        Some((r, sub)) => cmd.args(["auth", "can-i", verb, r, "--subresource", sub]),
        None => cmd.args(["auth", "can-i", verb, resource]),
    };
    cmd.args(["-n", ns, "--as", user]);
    for g in groups {
        cmd.args(["--as-group", g]);
    }
    let out = cmd.output().expect("run kubectl");
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => true,
        "no" => false,
        other => panic!("kubectl auth can-i: {other:?} {}", String::from_utf8_lossy(&out.stderr)),
    }
}

/// Asserts `can_i` gives `want`, allowing the API server's RBAC cache a moment to catch up.
async fn expect_access(ns: &str, user: &str, groups: &[&str], checks: &[(&str, &str, bool)]) {
    for &(verb, resource, want) in checks {
        let what = format!("{user} {groups:?}: can-i {verb} {resource} in {ns} = {want}");
        eventually(&what, Duration::from_secs(10), || async {
            (can_i(ns, user, groups, verb, resource) == want).then_some(())
        })
        .await;
    }
}

fn docker_config(server: &str, auth: &str) -> ByteString {
    ByteString(json!({ "auths": { server: { "auth": auth } } }).to_string().into_bytes())
}

/// A registry pull Secret in `ns`.
async fn pull_secret(client: &Client, ns: &str, name: &str, config: ByteString) -> Secret {
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(BTreeMap::from([(".dockerconfigjson".into(), config)])),
        ..Default::default()
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    api.patch(name, &PatchParams::apply("atrium-tests").force(), &Patch::Apply(&secret)).await.unwrap()
}

fn pod_monitors(client: &Client, ns: &str) -> Api<DynamicObject> {
    let ar = ApiResource {
        group: "monitoring.coreos.com".into(),
        version: "v1".into(),
        api_version: "monitoring.coreos.com/v1".into(),
        kind: "PodMonitor".into(),
        plural: "podmonitors".into(),
    };
    Api::namespaced_with(client.clone(), ns, &ar)
}

/// The Prometheus Operator's PodMonitor CRD, reduced to what the test needs (installed once,
/// left in place: other tests may be using it).
async fn install_pod_monitor_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = "podmonitors.monitoring.coreos.com";
    if crds.get_opt(name).await.unwrap().is_none() {
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": { "name": name },
            "spec": {
                "group": "monitoring.coreos.com", "scope": "Namespaced",
                "names": { "kind": "PodMonitor", "plural": "podmonitors", "singular": "podmonitor", "listKind": "PodMonitorList" },
                "versions": [{ "name": "v1", "served": true, "storage": true,
                    "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } } }]
            }
        }))
        .unwrap();
        match crds.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("creating the PodMonitor CRD: {e}"),
        }
    }
    wait_for(&crds, name, Duration::from_secs(30), conditions::is_crd_established()).await;
}

/// Names of the workspace's children of kind `K` in `ns`.
async fn owned<K>(client: &Client, ns: &str, ws: &Workspace) -> BTreeSet<String>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let selector = format!("{OWNER_UID}={}", ws.uid().unwrap());
    api.list_metadata(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|m| m.metadata.deletion_timestamp.is_none())
        .map(|m| m.name_any())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

fn owner_uids<K: Resource>(obj: &K) -> Vec<String> {
    obj.meta().owner_references.iter().flatten().map(|o| o.uid.clone()).collect()
}

#[tokio::test]
async fn workspace_with_every_field_is_ready_with_its_children_and_roles() {
    install_crds().await;
    let client = client().await;
    install_pod_monitor_crd(&client).await;
    let source = TestNamespace::new("ws-registry").await;
    let config = docker_config("registry.example.com", "dXNlcjpwYXNz");
    pull_secret(&client, &source.name, "acr", config.clone()).await;

    let shard = unique("ws-all");
    let mut cleanup = Cleanup::default();
    let _op = operator(&shard);
    let name = unique("ws-all");
    let ns = unique("ws-all-ns");
    cleanup.workspaces.push(name.clone());
    cleanup.namespaces.push(ns.clone());
    let api = workspaces(&client);
    let started = Instant::now();
    apply_workspace(&api, &name, &shard, json!({
        "displayName": format!("Every Field {name}"),
        "description": "a workspace using every field",
        "tags": { "team": "ml" },
        "namespace": ns,
        "access": [
            { "kind": "User", "name": "alice", "role": "Reader" },
            { "kind": "User", "name": "bob", "role": "Contributor" },
            { "kind": "Group", "name": "ml-admins", "role": "Owner" },
            { "kind": "ServiceAccount", "name": "ci", "namespace": source.name, "role": "Contributor" },
        ],
        "quota": {
            "hard": { "requests.cpu": "8", "pods": "20" },
            "defaultContainerResources": { "requests": { "cpu": "100m", "memory": "128Mi" }, "limits": { "cpu": "1", "memory": "1Gi" } },
        },
        "storage": { "size": "1Gi", "storageClassName": "standard", "accessModes": ["ReadWriteOnce"] },
        "containerRegistry": { "server": "registry.example.com", "pullSecret": { "namespace": source.name, "name": "acr" } },
        "monitoring": { "prometheus": true },
        "networkIsolation": true,
        "deletionPolicy": "Delete",
    }))
    .await;
    let ws = wait_ready(&api, &name, true, Some("Ready")).await;
    eprintln!("every-field workspace Ready after {:?}", started.elapsed());

    // Status: every condition true; the claim Pending (no provisioner here) and shown as such.
    let status: &WorkspaceStatus = ws.status.as_ref().unwrap();
    for type_ in ["Ready", "NamespaceReady", "AccessReady", "QuotaReady", "StorageReady"] {
        assert_eq!(condition(&ws, type_).map(|c| c.status.as_str()), Some("True"), "{type_}: {status:#?}");
    }
    assert_eq!(condition(&ws, "StorageReady").unwrap().reason, "Pending");
    assert_eq!(status.namespace.as_deref(), Some(ns.as_str()));
    let storage = status.storage.as_ref().unwrap();
    assert_eq!((storage.claim_name.as_deref(), storage.phase.as_deref()), (Some("atrium-storage"), Some("Pending")));
    assert!(ws.finalizers().is_empty(), "Delete needs no finalizer: {:?}", ws.finalizers());
    let uid = ws.uid().unwrap();

    // The namespace: owned by the workspace, labelled for monitoring.
    let namespace = Api::<Namespace>::all(client.clone()).get(&ns).await.unwrap();
    assert_eq!(owner_uids(&namespace), std::slice::from_ref(&uid));
    assert_eq!(namespace.labels()["atrium.dev/monitoring"], "prometheus");
    assert_eq!(namespace.labels()["app.kubernetes.io/managed-by"], "atrium");

    // ServiceAccounts with the copied pull secret.
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    for sa in ["atrium-run", "atrium-inference"] {
        let sa = sas.get(sa).await.unwrap();
        let pulls: Vec<_> = sa.image_pull_secrets.unwrap_or_default().into_iter().map(|r| r.name).collect();
        assert_eq!(pulls, ["atrium-registry"]);
    }
    let copy = Api::<Secret>::namespaced(client.clone(), &ns).get("atrium-registry").await.unwrap();
    assert_eq!(copy.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));
    assert_eq!(copy.data.unwrap()[".dockerconfigjson"], config);

    // One RoleBinding per entry, to Atrium's ClusterRoles.
    let bindings = Api::<RoleBinding>::namespaced(client.clone(), &ns);
    let by_name: BTreeMap<String, RoleBinding> = bindings
        .list(&ListParams::default().labels(&format!("{OWNER_UID}={uid}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|b| (b.name_any(), b))
        .collect();
    let roles: BTreeMap<&str, &str> = by_name.iter().map(|(n, b)| (n.as_str(), b.role_ref.name.as_str())).collect();
    assert_eq!(roles.len(), 4, "{roles:?}");
    assert_eq!(roles["atrium-reader-user-alice"], READER_ROLE);
    assert_eq!(roles["atrium-contributor-user-bob"], CONTRIBUTOR_ROLE);
    assert_eq!(roles["atrium-owner-group-ml-admins"], OWNER_ROLE);
    let sa_binding = by_name.iter().find(|(n, _)| n.starts_with("atrium-contributor-sa-")).unwrap().1;
    let subject = &sa_binding.subjects.as_ref().unwrap()[0];
    assert_eq!(
        (subject.kind.as_str(), subject.name.as_str(), subject.namespace.as_deref()),
        ("ServiceAccount", "ci", Some(source.name.as_str()))
    );
    let cluster_roles: Api<ClusterRole> = Api::all(client.clone());
    for role in [OWNER_ROLE, CONTRIBUTOR_ROLE, READER_ROLE] {
        assert!(cluster_roles.get_opt(role).await.unwrap().is_some(), "{role} installed");
    }

    // Quota.
    let rq = Api::<ResourceQuota>::namespaced(client.clone(), &ns).get("atrium-workspace").await.unwrap();
    let hard = rq.spec.unwrap().hard.unwrap();
    assert_eq!((hard["requests.cpu"].0.as_str(), hard["pods"].0.as_str()), ("8", "20"));
    let lr = Api::<LimitRange>::namespaced(client.clone(), &ns).get("atrium-workspace").await.unwrap();
    let item = &lr.spec.unwrap().limits[0];
    assert_eq!(item.default.as_ref().unwrap()["memory"].0, "1Gi");
    assert_eq!(item.default_request.as_ref().unwrap()["cpu"].0, "100m");

    // Storage.
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns).get("atrium-storage").await.unwrap();
    let spec = pvc.spec.clone().unwrap();
    assert_eq!(spec.storage_class_name.as_deref(), Some("standard"));
    assert_eq!(spec.access_modes.unwrap(), ["ReadWriteOnce"]);
    assert_eq!(spec.resources.unwrap().requests.unwrap()["storage"].0, "1Gi");
    assert_eq!(owner_uids(&pvc), std::slice::from_ref(&uid));

    // Network isolation and Prometheus.
    assert_eq!(
        owned::<NetworkPolicy>(&client, &ns, &ws).await,
        set(&["atrium-endpoint-routers", "atrium-prometheus", "atrium-same-namespace"])
    );
    let pm = pod_monitors(&client, &ns).get("atrium-workspace").await.unwrap();
    assert_eq!(pm.data["spec"]["podMetricsEndpoints"][0]["port"], "metrics");

    // Access as each role.
    expect_access(
        &ns,
        "alice",
        &[],
        &[
            ("get", "trainingruns.atrium.dev", true),
            ("list", "modeldeployments.atrium.dev", true),
            ("get", "pods/log", true),
            ("list", "jobs.batch", true),
            ("create", "trainingruns.atrium.dev", false),
            ("delete", "models.atrium.dev", false),
            ("get", "secrets", false),
            ("delete", "pods", false),
            ("create", "rolebindings.rbac.authorization.k8s.io", false),
        ],
    )
    .await;
    expect_access(
        &ns,
        "bob",
        &[],
        &[
            ("create", "trainingruns.atrium.dev", true),
            ("delete", "modeldeployments.atrium.dev", true),
            ("create", "computeclusters.atrium.dev", true),
            ("get", "secrets", true),
            ("get", "pods/log", true),
            ("create", "rolebindings.rbac.authorization.k8s.io", false),
            ("create", "pods/exec", false),
        ],
    )
    .await;
    expect_access(
        &ns,
        "carol",
        &["ml-admins"],
        &[
            ("create", "rolebindings.rbac.authorization.k8s.io", true),
            ("delete", "trainingruns.atrium.dev", true),
            ("create", "pods/exec", true),
            ("delete", "persistentvolumeclaims", true),
        ],
    )
    .await;
    let ci = format!("system:serviceaccount:{}:ci", source.name);
    expect_access(
        &ns,
        &ci,
        &[],
        &[("create", "models.atrium.dev", true), ("create", "rolebindings.rbac.authorization.k8s.io", false)],
    )
    .await;
    expect_access(&ns, "mallory", &[], &[("get", "trainingruns.atrium.dev", false), ("get", "pods", false)]).await;
    // Only in the workspace namespace.
    expect_access(&source.name, "alice", &[], &[("get", "trainingruns.atrium.dev", false)]).await;
}

#[tokio::test]
async fn spec_edits_converge_to_exactly_the_new_desired_state() {
    install_crds().await;
    let client = client().await;
    let source = TestNamespace::new("ws-edit-registry").await;
    let v1 = docker_config("registry.example.com", "djE6djE=");
    pull_secret(&client, &source.name, "pull", v1.clone()).await;

    let shard = unique("ws-edit");
    let mut cleanup = Cleanup::default();
    let _op = operator(&shard);
    let name = unique("ws-edit");
    cleanup.workspaces.push(name.clone());
    cleanup.namespaces.push(name.clone());
    let api = workspaces(&client);
    let registry =
        json!({ "server": "registry.example.com", "pullSecret": { "namespace": source.name, "name": "pull" } });
    apply_workspace(
        &api,
        &name,
        &shard,
        json!({
            "access": [
                { "kind": "User", "name": "alice", "role": "Reader" },
                { "kind": "User", "name": "bob", "role": "Contributor" },
            ],
            "quota": { "hard": { "pods": "10" }, "defaultContainerResources": { "limits": { "cpu": "1" } } },
            "containerRegistry": registry,
            "networkIsolation": true,
            "deletionPolicy": "Delete",
        }),
    )
    .await;
    let ws = wait_ready(&api, &name, true, None).await;
    assert_eq!(
        owned::<RoleBinding>(&client, &name, &ws).await,
        set(&["atrium-contributor-user-bob", "atrium-reader-user-alice"])
    );
    assert_eq!(owned::<ResourceQuota>(&client, &name, &ws).await, set(&["atrium-workspace"]));
    assert_eq!(owned::<NetworkPolicy>(&client, &name, &ws).await.len(), 2);
    expect_access(&name, "alice", &[], &[("get", "trainingruns.atrium.dev", true)]).await;

    // Edit: alice's entry removed, bob promoted, the quota and the isolation dropped.
    let started = Instant::now();
    apply_workspace(
        &api,
        &name,
        &shard,
        json!({
            "access": [{ "kind": "User", "name": "bob", "role": "Owner" }],
            "containerRegistry": registry,
            "deletionPolicy": "Delete",
        }),
    )
    .await;
    let ws = wait_ready(&api, &name, true, None).await;
    eventually("exactly the new children", Duration::from_secs(30), || async {
        let done = owned::<RoleBinding>(&client, &name, &ws).await == set(&["atrium-owner-user-bob"])
            && owned::<ResourceQuota>(&client, &name, &ws).await.is_empty()
            && owned::<LimitRange>(&client, &name, &ws).await.is_empty()
            && owned::<NetworkPolicy>(&client, &name, &ws).await.is_empty();
        done.then_some(())
    })
    .await;
    eprintln!("spec edit converged in {:?}", started.elapsed());
    assert_eq!(condition(&ws, "QuotaReady").unwrap().reason, "NoQuota");
    assert_eq!(condition(&ws, "AccessReady").unwrap().message, "1 access entry bound");
    expect_access(&name, "alice", &[], &[("get", "trainingruns.atrium.dev", false)]).await;
    expect_access(&name, "bob", &[], &[("create", "rolebindings.rbac.authorization.k8s.io", true)]).await;
    // The two ServiceAccounts, the pull secret copy and the claim are all that is left.
    assert_eq!(owned::<ServiceAccount>(&client, &name, &ws).await, set(&["atrium-inference", "atrium-run"]));
    assert_eq!(owned::<Secret>(&client, &name, &ws).await, set(&["atrium-registry"]));

    // Rotating the source Secret reaches the copy.
    let started = Instant::now();
    let v2 = docker_config("registry.example.com", "djI6djI=");
    pull_secret(&client, &source.name, "pull", v2.clone()).await;
    let copies: Api<Secret> = Api::namespaced(client.clone(), &name);
    eventually("the rotated secret copied", Duration::from_secs(30), || async {
        let copy = copies.get("atrium-registry").await.ok()?;
        (copy.data?.get(".dockerconfigjson")? == &v2).then_some(())
    })
    .await;
    eprintln!("rotation reached the copy in {:?}", started.elapsed());

    // The source deleted: the copy stays attached (nothing is deleted on bad input), and the
    // workspace says why it is not ready.
    Api::<Secret>::namespaced(client.clone(), &source.name).delete("pull", &DeleteParams::default()).await.unwrap();
    let ws = wait_ready(&api, &name, false, Some("PullSecretNotFound")).await;
    assert!(condition(&ws, "NamespaceReady").unwrap().message.contains("kept"));
    assert!(copies.get_opt("atrium-registry").await.unwrap().is_some());

    // The registry removed from the spec: the copy goes, and so do the references to it.
    apply_workspace(
        &api,
        &name,
        &shard,
        json!({
            "access": [{ "kind": "User", "name": "bob", "role": "Owner" }],
            "deletionPolicy": "Delete",
        }),
    )
    .await;
    let ws = wait_ready(&api, &name, true, None).await;
    eventually("the copy pruned and detached", Duration::from_secs(30), || async {
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        let detached = sas.get("atrium-run").await.ok()?.image_pull_secrets.is_none_or(|p| p.is_empty());
        (detached && owned::<Secret>(&client, &name, &ws).await.is_empty()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn display_names_equal_without_case_make_the_younger_a_name_conflict() {
    install_crds().await;
    let client = client().await;
    let shard = unique("ws-names");
    let mut cleanup = Cleanup::default();
    let _op = operator(&shard);
    let api = workspaces(&client);
    let suffix = unique("x");
    let (older, younger) = (unique("ws-older"), unique("ws-younger"));
    cleanup.workspaces.extend([older.clone(), younger.clone()]);
    cleanup.namespaces.extend([older.clone(), younger.clone()]);

    apply_workspace(
        &api,
        &older,
        &shard,
        json!({ "displayName": format!("Team-A-{suffix}"), "deletionPolicy": "Delete" }),
    )
    .await;
    wait_ready(&api, &older, true, None).await;
    // Creation times have one-second resolution: make the order unambiguous.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    apply_workspace(
        &api,
        &younger,
        &shard,
        json!({ "displayName": format!("team-a-{suffix}"), "deletionPolicy": "Delete" }),
    )
    .await;

    let ws = wait_ready(&api, &younger, false, Some("NameConflict")).await;
    assert!(condition(&ws, "Ready").unwrap().message.contains(&older), "{:?}", condition(&ws, "Ready"));
    assert!(ws.status.as_ref().unwrap().namespace.is_none());
    let ws_older = api.get(&older).await.unwrap();
    assert_eq!(condition(&ws_older, "Ready").unwrap().status, "True");
    assert!(
        Api::<Namespace>::all(client.clone()).get_opt(&younger).await.unwrap().is_none(),
        "a conflicting workspace creates nothing"
    );

    // The older one goes: the name is free and the younger one becomes Ready.
    api.delete(&older, &DeleteParams::default()).await.unwrap();
    wait_ready(&api, &younger, true, None).await;
}

#[tokio::test]
async fn an_existing_namespace_is_a_conflict_unless_adopted_and_never_taken_from_another_workspace() {
    install_crds().await;
    let client = client().await;
    let existing = TestNamespace::new("ws-existing").await;
    let shard = unique("ws-adopt");
    let mut cleanup = Cleanup::default();
    let _op = operator(&shard);
    let api = workspaces(&client);
    let (name, rival) = (unique("ws-adopt"), unique("ws-rival"));
    cleanup.workspaces.extend([name.clone(), rival.clone()]);

    let spec = |adopt: bool| {
        json!({
            "namespace": existing.name, "adoptNamespace": adopt,
            "access": [{ "kind": "User", "name": "alice", "role": "Reader" }],
        })
    };
    apply_workspace(&api, &name, &shard, spec(false)).await;
    let ws = wait_ready(&api, &name, false, Some("NamespaceConflict")).await;
    assert!(condition(&ws, "NamespaceReady").unwrap().message.contains("adoptNamespace"));
    assert!(ws.finalizers().is_empty(), "nothing to clean up, no finalizer");
    let rbs: Api<RoleBinding> = existing.api();
    let sas: Api<ServiceAccount> = existing.api();
    assert!(rbs.list_metadata(&ListParams::default()).await.unwrap().items.is_empty(), "nothing touched");
    assert!(sas.get_opt("atrium-run").await.unwrap().is_none(), "nothing touched");
    let before = Api::<Namespace>::all(client.clone()).get(&existing.name).await.unwrap();
    assert!(before.owner_references().is_empty());

    apply_workspace(&api, &name, &shard, spec(true)).await;
    let ws = wait_ready(&api, &name, true, None).await;
    let after = Api::<Namespace>::all(client.clone()).get(&existing.name).await.unwrap();
    assert_eq!(after.labels()["atrium.dev/owner-uid"], ws.uid().unwrap());
    assert!(after.owner_references().is_empty(), "Retain: no owner reference");
    assert_eq!(after.labels()["atrium.dev/test"], "true", "the namespace's own labels stay");
    assert!(sas.get_opt("atrium-run").await.unwrap().is_some());

    // Another workspace cannot adopt it away.
    apply_workspace(&api, &rival, &shard, spec(true)).await;
    let r = wait_ready(&api, &rival, false, Some("NamespaceConflict")).await;
    assert!(condition(&r, "Ready").unwrap().message.contains(&name), "{:?}", condition(&r, "Ready"));
}

#[tokio::test]
async fn retain_keeps_the_namespace_and_claim_even_in_foreground_and_delete_removes_the_namespace() {
    install_crds().await;
    let client = client().await;
    let shard = unique("ws-delete");
    let mut cleanup = Cleanup::default();
    let _op = operator(&shard);
    let api = workspaces(&client);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let (kept, switched, gone) = (unique("ws-retain"), unique("ws-switched"), unique("ws-delete"));
    cleanup.workspaces.extend([kept.clone(), switched.clone(), gone.clone()]);
    cleanup.namespaces.extend([kept.clone(), switched.clone(), gone.clone()]);

    let access = json!([{ "kind": "User", "name": "alice", "role": "Reader" }]);
    apply_workspace(&api, &kept, &shard, json!({ "access": access })).await;
    apply_workspace(&api, &switched, &shard, json!({ "access": access, "deletionPolicy": "Delete" })).await;
    apply_workspace(&api, &gone, &shard, json!({ "access": access, "deletionPolicy": "Delete" })).await;
    let ws_kept = wait_ready(&api, &kept, true, None).await;
    let ws_gone = wait_ready(&api, &gone, true, None).await;
    assert_eq!(ws_kept.finalizers(), [FINALIZER]);
    assert!(ws_gone.finalizers().is_empty());

    // Retain: the children are labelled as the workspace's but carry no owner reference, so no
    // deletion of the workspace can take them.
    let uid = ws_kept.uid().unwrap();
    let ns = namespaces.get(&kept).await.unwrap();
    assert!(owner_uids(&ns).is_empty() && ns.labels()["atrium.dev/owner-uid"] == uid, "{:?}", ns.metadata);
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &kept).get("atrium-storage").await.unwrap();
    assert!(owner_uids(&pvc).is_empty());
    // Delete: owned, so the garbage collector deletes them with the workspace.
    let ns_gone = namespaces.get(&gone).await.unwrap();
    assert_eq!(owner_uids(&ns_gone), [ws_gone.uid().unwrap()]);

    // Delete → Retain (as after an upgrade from an operator that owned Retain children): the owner
    // references go.
    let ws_switched = wait_ready(&api, &switched, true, None).await;
    let switched_uid = ws_switched.uid().unwrap();
    assert_eq!(owner_uids(&namespaces.get(&switched).await.unwrap()), std::slice::from_ref(&switched_uid));
    apply_workspace(&api, &switched, &shard, json!({ "access": access, "deletionPolicy": "Retain" })).await;
    eventually("the switched workspace's children to lose their owner references", Duration::from_secs(30), || async {
        let ns = namespaces.get(&switched).await.unwrap();
        let pvc =
            Api::<PersistentVolumeClaim>::namespaced(client.clone(), &switched).get("atrium-storage").await.unwrap();
        let rb =
            Api::<RoleBinding>::namespaced(client.clone(), &switched).get("atrium-reader-user-alice").await.unwrap();
        (owner_uids(&ns).is_empty() && owner_uids(&pvc).is_empty() && owner_uids(&rb).is_empty()).then_some(())
    })
    .await;

    // Foreground deletion — `kubectl delete --cascade=foreground`, Argo CD's pruning — deletes
    // every dependent an owner reference names; a Retain workspace names none.
    let started = Instant::now();
    api.delete(&kept, &DeleteParams::foreground()).await.unwrap();
    api.delete(&switched, &DeleteParams::foreground()).await.unwrap();
    api.delete(&gone, &DeleteParams::default()).await.unwrap();
    wait_for(&api, &kept, Duration::from_secs(30), conditions::is_deleted(&uid)).await;
    eprintln!("Retain: workspace deleted in {:?}", started.elapsed());
    wait_for(&api, &switched, Duration::from_secs(30), conditions::is_deleted(&switched_uid)).await;
    wait_for(&api, &gone, Duration::from_secs(30), conditions::is_deleted(&ws_gone.uid().unwrap())).await;

    // Delete: the namespace goes.
    let started = Instant::now();
    eventually("the Delete workspace's namespace to go", Duration::from_secs(90), || async {
        namespaces.get_opt(&gone).await.unwrap().is_none().then_some(())
    })
    .await;
    eprintln!("Delete: namespace gone {:?} after the workspace", started.elapsed());

    // Retain: namespace, claim and the rest are still there — looked at once the workspaces are
    // gone (a foreground deletion ends only after the garbage collector has dealt with the
    // dependents) and the Delete workspace's namespace too.
    for namespace in [&kept, &switched] {
        let ns = namespaces.get(namespace).await.unwrap();
        assert!(ns.metadata.deletion_timestamp.is_none(), "the retained namespace {namespace} is not deleted");
        let pvc =
            Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace).get("atrium-storage").await.unwrap();
        assert!(pvc.metadata.deletion_timestamp.is_none(), "the claim in {namespace} is not deleted");
        let rb =
            Api::<RoleBinding>::namespaced(client.clone(), namespace).get("atrium-reader-user-alice").await.unwrap();
        assert!(rb.metadata.deletion_timestamp.is_none());
        let sa = Api::<ServiceAccount>::namespaced(client.clone(), namespace).get("atrium-run").await.unwrap();
        assert!(sa.metadata.deletion_timestamp.is_none());
    }
}

#[tokio::test]
async fn deleting_never_hangs_when_the_namespace_is_terminating_or_gone() {
    install_crds().await;
    let client = client().await;
    let shard = unique("ws-hang");
    let mut cleanup = Cleanup::default();
    let mut op = operator(&shard);
    let api = workspaces(&client);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let (terminating, missing) = (unique("ws-terminating"), unique("ws-missing"));
    cleanup.workspaces.extend([terminating.clone(), missing.clone()]);
    cleanup.namespaces.extend([terminating.clone(), missing.clone()]);
    apply_workspace(&api, &terminating, &shard, json!({})).await;
    apply_workspace(&api, &missing, &shard, json!({})).await;
    let ws_t = wait_ready(&api, &terminating, true, None).await;
    let ws_m = wait_ready(&api, &missing, true, None).await;

    // Terminating: the namespace is being deleted when the workspace is.
    namespaces.delete(&terminating, &DeleteParams::default()).await.unwrap();
    wait_ready(&api, &terminating, false, Some("NamespaceTerminating")).await;
    let started = Instant::now();
    api.delete(&terminating, &DeleteParams::default()).await.unwrap();
    wait_for(&api, &terminating, Duration::from_secs(20), conditions::is_deleted(&ws_t.uid().unwrap())).await;
    eprintln!("deleted with its namespace terminating in {:?}", started.elapsed());

    // Gone: the namespace was deleted while the operator was down, then the workspace.
    op.kill();
    namespaces.delete(&missing, &DeleteParams::default()).await.unwrap();
    eventually("the namespace to be gone", Duration::from_secs(90), || async {
        namespaces.get_opt(&missing).await.unwrap().is_none().then_some(())
    })
    .await;
    api.delete(&missing, &DeleteParams::default()).await.unwrap();
    let _restarted = operator_logging_to(&format!("{shard}-restarted"), &shard);
    let started = Instant::now();
    wait_for(&api, &missing, Duration::from_secs(30), conditions::is_deleted(&ws_m.uid().unwrap())).await;
    eprintln!("deleted with its namespace gone in {:?} after the operator restarted", started.elapsed());
    assert!(namespaces.get_opt(&missing).await.unwrap().is_none(), "not re-created by a workspace being deleted");
}

/// The audit log of the local control plane (`<kubeconfig dir>/logs/audit.log`).
fn audit_log() -> PathBuf {
    let kubeconfig = PathBuf::from(std::env::var("KUBECONFIG").expect("KUBECONFIG"));
    kubeconfig.parent().unwrap().join("logs/audit.log")
}

fn audit_offset() -> u64 {
    std::fs::metadata(audit_log()).map(|m| m.len()).unwrap_or(0)
}

/// Writes (the audit log records writes only) since `offset` by the operator's user to the
/// workspace, its namespace, anything in it, or Events about the workspace (which, the workspace
/// being cluster-scoped, are in `default` and named after it). kube-rs sends no User-Agent, so
/// requests are told apart by the objects they touch.
fn writes_since(offset: u64, ws: &str, ns: &str) -> Vec<String> {
    let mut file = std::fs::File::open(audit_log()).expect("the audit log");
    file.seek(std::io::SeekFrom::Start(offset)).unwrap();
    let event_prefix = format!("{ws}.");
    std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str::<Value>(&line).ok())
        .filter(|e| e["user"]["username"] == "admin")
        .filter(|e| {
            let o = &e["objectRef"];
            let (resource, namespace, name) = (
                o["resource"].as_str().unwrap_or(""),
                o["namespace"].as_str().unwrap_or(""),
                o["name"].as_str().unwrap_or(""),
            );
            namespace == ns
                || (resource == "workspaces" && name == ws)
                || (resource == "events" && namespace == "default" && name.starts_with(&event_prefix))
        })
        .map(|e| format!("{} {}", e["verb"].as_str().unwrap_or(""), e["requestURI"].as_str().unwrap_or("")))
        .collect()
}

#[tokio::test]
async fn a_ready_unchanged_workspace_makes_no_writes() {
    install_crds().await;
    let client = client().await;
    install_pod_monitor_crd(&client).await;
    let source = TestNamespace::new("ws-quiet-registry").await;
    pull_secret(&client, &source.name, "pull", docker_config("registry.example.com", "cTpx")).await;
    let shard = unique("ws-quiet");
    let mut cleanup = Cleanup::default();
    let _op = operator(&shard);
    let api = workspaces(&client);
    let name = unique("ws-quiet");
    cleanup.workspaces.push(name.clone());
    cleanup.namespaces.push(name.clone());

    let before = audit_offset();
    apply_workspace(&api, &name, &shard, json!({
        "access": [{ "kind": "User", "name": "alice", "role": "Reader" }, { "kind": "Group", "name": "ops", "role": "Owner" }],
        "quota": { "hard": { "pods": "10" }, "defaultContainerResources": { "requests": { "cpu": "100m" } } },
        "containerRegistry": { "server": "registry.example.com", "pullSecret": { "namespace": source.name, "name": "pull" } },
        "monitoring": { "prometheus": true },
        "networkIsolation": true,
    }))
    .await;
    wait_ready(&api, &name, true, Some("Ready")).await;
    // The Ready transition publishes an Event: wait for it, it belongs to getting ready.
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    eventually("the Ready event", Duration::from_secs(10), || async {
        let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
        events.list(&lp).await.ok()?.items.iter().any(|e| e.reason.as_deref() == Some("Ready")).then_some(())
    })
    .await;

    // The filter sees the operator's writes (creating the children was many)...
    let start = audit_offset();
    let creating = writes_since(before, &name, &name);
    assert!(creating.len() >= 10, "the audit filter should see the writes that made the workspace: {creating:#?}");
    // ...and none while nothing changes.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let quiet = writes_since(start, &name, &name);
    assert!(quiet.is_empty(), "writes by an unchanged workspace in 30 s: {quiet:#?}");
    eprintln!("{} writes to get ready, 0 in the 30 s after", creating.len());
}

#[tokio::test]
async fn a_child_the_api_server_refuses_is_reported_and_not_retried_hot() {
    install_crds().await;
    let client = client().await;
    let shard = unique("ws-bad");
    let mut cleanup = Cleanup::default();
    let _op = operator(&shard);
    let api = workspaces(&client);
    let name = unique("ws-bad");
    cleanup.workspaces.push(name.clone());
    cleanup.namespaces.push(name.clone());

    // A quantity the schema accepts for a resource name quota does not know.
    apply_workspace(
        &api,
        &name,
        &shard,
        json!({
            "quota": { "hard": { "foo": "1" } },
            "access": [{ "kind": "User", "name": "alice", "role": "Reader" }],
            "deletionPolicy": "Delete",
        }),
    )
    .await;
    let ws = wait_ready(&api, &name, false, Some("Rejected")).await;
    let quota = condition(&ws, "QuotaReady").unwrap();
    assert_eq!((quota.status.as_str(), quota.reason.as_str()), ("False", "Rejected"));
    assert!(quota.message.contains("spec.hard[foo]"), "{}", quota.message);
    // Everything else is in place.
    assert_eq!(condition(&ws, "AccessReady").unwrap().status, "True");
    assert_eq!(owned::<RoleBinding>(&client, &name, &ws).await, set(&["atrium-reader-user-alice"]));

    // Waiting for a change, not retrying: no writes (not even refused ones).
    let start = audit_offset();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let writes = writes_since(start, &name, &name);
    assert!(writes.is_empty(), "{writes:#?}");

    // Fixing the spec fixes the workspace.
    apply_workspace(
        &api,
        &name,
        &shard,
        json!({
            "quota": { "hard": { "pods": "1" } },
            "access": [{ "kind": "User", "name": "alice", "role": "Reader" }],
            "deletionPolicy": "Delete",
        }),
    )
    .await;
    wait_ready(&api, &name, true, None).await;
}
