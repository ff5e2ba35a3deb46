//! Compute against the local control plane and its fake nodes: instance types fitted to nodes,
//! compute clusters' standby pods, admission of runs up to `maxInstances` and idle scale-down,
//! training runs as Jobs (distributed too), failures read from pods, cancellation, and Model
//! registration.
//!
//! Each test runs its own operator, reconciling only objects labelled with its shard. A test that
//! runs training gets workspace storage of its own: a PersistentVolume bound to a claim in its
//! namespace, the `atrium-run` ServiceAccount, and a Workspace whose status names both (written by
//! the test; no operator serves that Workspace), so runs do not depend on the Workspace controller.

use std::{collections::BTreeMap, time::Duration};

use atrium::{
    api::{ComputeCluster, HasConditions, InstanceType, Model, TrainingRun, Workspace, training_run::RunPhase},
    controller::training_run::build::code_digest,
};
use k8s_openapi::{
    api::{
        batch::v1::Job,
        core::v1::{
            ConfigMap, Node, PersistentVolume, PersistentVolumeClaim, Pod, ResourceQuota, Service, ServiceAccount,
        },
    },
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use crate::harness::{
    ClusterObjects, Operator, TestNamespace, apply, client, eventually, install_crds, unique, wait_for,
};

const SHARD_LABEL: &str = "atrium.dev/test-shard";
const MINUTE: Duration = Duration::from_secs(60);
const TWO_MINUTES: Duration = Duration::from_secs(120);

/// One test's operator, namespace and cluster-scoped objects.
struct Env {
    ns: TestNamespace,
    shard: String,
    client: Client,
    _operator: Operator,
    cleanup: ClusterObjects,
}

impl Env {
    async fn new(prefix: &str) -> Self {
        install_crds().await;
        let ns = TestNamespace::new(prefix).await;
        let shard = unique("compute");
        let selector = format!("{SHARD_LABEL}={shard}");
        let operator = Operator::start(&shard, &["--leader-elect=false", "--object-selector", selector.as_str()]);
        Self { client: ns.client.clone(), ns, shard, _operator: operator, cleanup: ClusterObjects::default() }
    }

    fn labels(&self) -> Value {
        json!({ SHARD_LABEL: self.shard })
    }

    /// An instance type of a unique name with `spec`, deleted when the test ends.
    async fn instance_type(&mut self, prefix: &str, spec: Value) -> String {
        let name = unique(prefix);
        let api: Api<InstanceType> = Api::all(self.client.clone());
        let body = json!({
            "apiVersion": "atrium.dev/v1alpha1", "kind": "InstanceType",
            "metadata": { "name": name, "labels": self.labels() }, "spec": spec
        });
        apply(&api, body).await;
        self.cleanup.add::<InstanceType>(&name);
        name
    }

    async fn compute_cluster(&self, name: &str, spec: Value) -> ComputeCluster {
        let body = json!({
            "apiVersion": "atrium.dev/v1alpha1", "kind": "ComputeCluster",
            "metadata": { "name": name, "labels": self.labels() }, "spec": spec
        });
        apply(&self.ns.api(), body).await
    }

    async fn training_run(&self, name: &str, spec: Value) -> TrainingRun {
        let body = json!({
            "apiVersion": "atrium.dev/v1alpha1", "kind": "TrainingRun",
            "metadata": { "name": name, "labels": self.labels() }, "spec": spec
        });
        apply(&self.ns.api(), body).await
    }

    /// Workspace storage for runs: a volume bound to a claim, the `atrium-run` ServiceAccount,
    /// and a Workspace whose status names the claim. Returns the claim's name.
    async fn workspace_storage(&mut self) -> String {
        let ns = self.ns.name.clone();
        let volume = unique("atrium-test-pv");
        let claim = "workspace-storage";
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": { "name": volume },
            "spec": {
                "capacity": { "storage": "1Gi" },
                "accessModes": ["ReadWriteMany"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": { "path": format!("/tmp/{volume}") },
                "claimRef": { "namespace": ns, "name": claim }
            }
        }))
        .unwrap();
        pvs.create(&PostParams::default(), &pv).await.expect("create the test volume");
        self.cleanup.add::<PersistentVolume>(&volume);
        let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": { "name": claim },
            "spec": {
                "accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": volume,
                "resources": { "requests": { "storage": "1Gi" } }
            }
        }))
        .unwrap();
        let pvcs: Api<PersistentVolumeClaim> = self.ns.api();
        pvcs.create(&PostParams::default(), &pvc).await.expect("create the test claim");
        wait_for(&pvcs, claim, MINUTE, |c: Option<&PersistentVolumeClaim>| {
            c.and_then(|c| c.status.as_ref()?.phase.as_deref()) == Some("Bound")
        })
        .await;
        let sa: ServiceAccount = serde_json::from_value(json!({ "metadata": { "name": "atrium-run" } })).unwrap();
        self.ns.api::<ServiceAccount>().create(&PostParams::default(), &sa).await.expect("create atrium-run");

        let workspace = unique("ws");
        let workspaces: Api<Workspace> = Api::all(self.client.clone());
        let body = json!({
            "apiVersion": "atrium.dev/v1alpha1", "kind": "Workspace",
            // A shard no operator serves: the test plays the Workspace controller.
            "metadata": { "name": workspace, "labels": { SHARD_LABEL: format!("{}-unserved", self.shard) } },
            "spec": { "namespace": ns, "adoptNamespace": true, "storage": { "existingClaim": claim } }
        });
        apply(&workspaces, body).await;
        self.cleanup.add::<Workspace>(&workspace);
        let status = json!({ "status": { "namespace": ns, "storage": { "claimName": claim, "phase": "Bound" } } });
        workspaces.patch_status(&workspace, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
        claim.to_owned()
    }
}

fn phase(run: Option<&TrainingRun>) -> Option<RunPhase> {
    run?.status.as_ref()?.phase
}

fn ready_reason<K: HasConditions>(obj: &K) -> Option<&str> {
    obj.condition("Ready").map(|c| c.reason.as_str())
}

/// Pods in `ns` with the label `atrium.dev/owner-uid` of `owner`.
async fn pods_of<K: Resource>(client: &Client, ns: &str, owner: &K) -> Vec<Pod> {
    let uid = owner.meta().uid.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.list(&ListParams::default().labels(&format!("atrium.dev/owner-uid={uid}"))).await.unwrap().items
}

fn counts(cc: &ComputeCluster) -> Option<(i32, i32, i32, i32)> {
    let s = cc.status.as_ref()?;
    let i = s.instances.as_ref()?;
    Some((i.busy?, i.standby?, i.total?, s.queued_runs?))
}

#[tokio::test]
async fn instance_types_fit_nodes_and_standby_pods_land_where_they_fit() {
    let mut env = Env::new("compute-fit").await;
    let small = env
        .instance_type(
            "small",
            json!({"nodeSelector": {"atrium.dev/pool": "cpu"}, "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}),
        )
        .await;
    let gpu = env
        .instance_type(
            "gpu",
            json!({
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"nvidia.com/gpu": "1"}},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
            }),
        )
        .await;
    let huge = env.instance_type("huge", json!({"resources": {"requests": {"cpu": "1000"}}})).await;

    let itypes: Api<InstanceType> = Api::all(env.client.clone());
    let fitted = |name: &str| {
        let (itypes, name) = (itypes.clone(), name.to_owned());
        async move {
            let it = wait_for(&itypes, &name, MINUTE, |it: Option<&InstanceType>| {
                it.and_then(|it| it.status.as_ref()?.matching_nodes).is_some()
            })
            .await
            .unwrap();
            let s = it.status.clone().unwrap();
            (it.is_ready(), s.matching_nodes.unwrap(), s.max_per_node.unwrap())
        }
    };
    assert_eq!(fitted(&small).await, (true, 2, 80), "cpu-1 and cpu-2, 8 CPUs / 100m each");
    assert_eq!(fitted(&gpu).await, (true, 1, 4), "gpu-1 and its 4 GPUs");
    assert_eq!(fitted(&huge).await, (false, 0, 0));
    let huge_it = itypes.get(&huge).await.unwrap();
    assert_eq!(ready_reason(&huge_it), Some("Unschedulable"));

    let ns = env.ns.name.clone();
    let cpu = env.compute_cluster("cpu", json!({"instanceType": small, "minInstances": 2})).await;
    let gpu_cc = env.compute_cluster("gpu", json!({"instanceType": gpu, "minInstances": 1})).await;
    let huge_cc = env.compute_cluster("huge", json!({"instanceType": huge, "minInstances": 1})).await;

    // Two standby pods on the CPU nodes; one on the GPU node.
    let scheduled = |owner: ComputeCluster, want: usize| {
        let (client, ns) = (env.client.clone(), ns.clone());
        async move {
            eventually(&format!("{want} standby pods of {} scheduled", owner.name_any()), MINUTE, || async {
                let pods = pods_of(&client, &ns, &owner).await;
                let nodes: Vec<String> = pods.iter().filter_map(|p| p.spec.as_ref()?.node_name.clone()).collect();
                (pods.len() == want && nodes.len() == want).then_some((pods, nodes))
            })
            .await
        }
    };
    let (pods, nodes) = scheduled(cpu.clone(), 2).await;
    assert!(nodes.iter().all(|n| n.starts_with("cpu-")), "{nodes:?}");
    let spec = pods[0].spec.as_ref().unwrap();
    assert_eq!(spec.priority_class_name.as_deref(), Some("atrium-standby"));
    assert!(spec.priority.unwrap_or_default() < 0, "standby pods are preempted by any run pod");
    let (_, nodes) = scheduled(gpu_cc.clone(), 1).await;
    assert_eq!(nodes, ["gpu-1"]);

    let ccs: Api<ComputeCluster> = env.ns.api();
    let cc = wait_for(&ccs, "cpu", MINUTE, |cc: Option<&ComputeCluster>| cc.and_then(counts) == Some((0, 2, 2, 0)))
        .await
        .unwrap();
    assert!(cc.is_ready());

    // An instance type that fits nowhere: the cluster says so, and nothing is created.
    let cc = wait_for(&ccs, "huge", MINUTE, |cc: Option<&ComputeCluster>| {
        cc.is_some_and(|c| ready_reason(c) == Some("Unschedulable"))
    })
    .await
    .unwrap();
    assert!(!cc.is_ready());
    assert_eq!(ready_reason(&cc), Some("Unschedulable"));
    assert!(pods_of(&env.client, &ns, &huge_cc).await.is_empty());

    // LowPriority: instances that tolerate spot nodes.
    let spot =
        env.compute_cluster("spot", json!({"instanceType": small, "minInstances": 1, "tier": "LowPriority"})).await;
    let (pods, _) = scheduled(spot, 1).await;
    let tolerations = pods[0].spec.as_ref().unwrap().tolerations.clone().unwrap_or_default();
    assert!(
        tolerations.iter().any(|t| t.key.as_deref() == Some("kubernetes.azure.com/scalesetpriority")),
        "{tolerations:?}"
    );

    // Scaling down removes standby pods.
    env.compute_cluster("cpu", json!({"instanceType": small, "minInstances": 1})).await;
    scheduled(cpu.clone(), 1).await;
    wait_for(&ccs, "cpu", MINUTE, |cc: Option<&ComputeCluster>| cc.and_then(counts) == Some((0, 1, 1, 0))).await;

    // A run in a namespace no Workspace owns waits, saying why.
    env.training_run("orphan", json!({"computeCluster": "cpu", "image": "python:3.12"})).await;
    let runs: Api<TrainingRun> = env.ns.api();
    let run = wait_for(&runs, "orphan", MINUTE, |r: Option<&TrainingRun>| phase(r).is_some()).await.unwrap();
    assert_eq!(phase(Some(&run)), Some(RunPhase::Queued));
    assert_eq!(ready_reason(&run), Some("WorkspaceNotReady"));
}

#[tokio::test]
async fn a_standby_pod_refused_by_a_quota_is_ready_false_and_tried_again_when_the_quota_grows() {
    let mut env = Env::new("compute-quota").await;
    let small = env
        .instance_type(
            "small",
            json!({"nodeSelector": {"atrium.dev/pool": "cpu"}, "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}),
        )
        .await;
    // A quota of two pods, as a workspace quota would set.
    let quotas: Api<ResourceQuota> = env.ns.api();
    let quota = |pods: &str| json!({ "apiVersion": "v1", "kind": "ResourceQuota", "metadata": { "name": "q" }, "spec": { "hard": { "pods": pods } } });
    apply(&quotas, quota("2")).await;
    eventually("the quota to be counted", MINUTE, || async {
        let q = quotas.get("q").await.ok()?;
        q.status?.hard.is_some().then_some(())
    })
    .await;

    env.compute_cluster("warm", json!({"instanceType": small, "minInstances": 3})).await;
    let api: Api<ComputeCluster> = env.ns.api();
    let cc = wait_for(&api, "warm", MINUTE, |cc: Option<&ComputeCluster>| {
        cc.is_some_and(|cc| ready_reason(cc) == Some("StandbyRefused"))
    })
    .await
    .unwrap();
    let ready = cc.condition("Ready").unwrap();
    assert!(ready.message.starts_with("2 of 3 standby instances are up"), "{}", ready.message);
    assert!(ready.message.contains("exceeded quota"), "the API server's own words: {}", ready.message);
    assert_eq!(counts(&cc), Some((0, 2, 2, 0)));
    assert_eq!(pods_of(&env.client, &env.ns.name, &cc).await.len(), 2, "the two that fit are kept");

    // More quota: the third standby pod comes on the next try (within a minute), and Ready with it.
    apply(&quotas, quota("5")).await;
    let cc = wait_for(&api, "warm", TWO_MINUTES, |cc: Option<&ComputeCluster>| cc.is_some_and(|cc| cc.is_ready()))
        .await
        .unwrap();
    assert_eq!(counts(&cc), Some((0, 3, 3, 0)));
}

#[tokio::test]
async fn instance_types_follow_nodes_as_they_come_and_go() {
    let mut env = Env::new("compute-nodes").await;
    let node_name = unique("atrium-test-node");
    let itype = env
        .instance_type(
            "on-new-node",
            json!({
                "nodeSelector": {"atrium.dev/test-node": node_name},
                "tolerations": [{"key": "atrium.dev/test-node", "operator": "Exists", "effect": "NoSchedule"}],
                "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}
            }),
        )
        .await;
    let itypes: Api<InstanceType> = Api::all(env.client.clone());
    let it = wait_for(&itypes, &itype, MINUTE, |it: Option<&InstanceType>| it.is_some_and(|it| it.status.is_some()))
        .await
        .unwrap();
    assert_eq!(ready_reason(&it), Some("Unschedulable"));

    // A node of its own, tainted so that nothing else lands on it.
    let node: Node = serde_json::from_value(json!({
        "metadata": {
            "name": node_name,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {"atrium.dev/test-node": node_name, "type": "kwok"}
        },
        "spec": {"taints": [{"key": "atrium.dev/test-node", "value": node_name, "effect": "NoSchedule"}]},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                   "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"}}
    }))
    .unwrap();
    let nodes: Api<Node> = Api::all(env.client.clone());
    nodes.create(&PostParams::default(), &node).await.expect("create a node");
    env.cleanup.add::<Node>(&node_name);
    let it = wait_for(&itypes, &itype, MINUTE, |it: Option<&InstanceType>| it.is_some_and(|it| it.is_ready()))
        .await
        .unwrap();
    let s = it.status.unwrap();
    assert_eq!((s.matching_nodes, s.max_per_node), (Some(1), Some(4)));

    nodes.delete(&node_name, &DeleteParams::default()).await.unwrap();
    let it = wait_for(&itypes, &itype, MINUTE, |it: Option<&InstanceType>| {
        it.is_some_and(|it| !it.is_ready() && it.status.as_ref().and_then(|s| s.matching_nodes) == Some(0))
    })
    .await
    .unwrap();
    assert_eq!(ready_reason(&it), Some("Unschedulable"));
}

#[tokio::test]
async fn max_instances_queue_runs_first_come_first_served_and_idle_standby_returns_to_min() {
    let mut env = Env::new("compute-queue").await;
    env.workspace_storage().await;
    let small = env
        .instance_type(
            "queue",
            json!({"nodeSelector": {"atrium.dev/pool": "cpu"}, "resources": {"requests": {"cpu": "100m"}}}),
        )
        .await;
    env.compute_cluster(
        "cpu",
        json!({"instanceType": small, "minInstances": 1, "maxInstances": 2, "idleTimeBeforeScaleDown": 10}),
    )
    .await;
    let ccs: Api<ComputeCluster> = env.ns.api();
    wait_for(&ccs, "cpu", MINUTE, |cc: Option<&ComputeCluster>| cc.and_then(counts) == Some((0, 1, 1, 0))).await;

    // Three runs of 12 s (kwok's pods take KWOK_DURATION) on a cluster of at most 2 instances.
    let spec = json!({"computeCluster": "cpu", "image": "python:3.12", "command": ["python", "train.py"],
        "env": [{"name": "KWOK_DURATION", "value": "12s"}]});
    for name in ["run-a", "run-b", "run-c"] {
        env.training_run(name, spec.clone()).await;
    }
    let runs: Api<TrainingRun> = env.ns.api();
    let phases = || {
        let runs = runs.clone();
        async move {
            let mut out = BTreeMap::new();
            for r in runs.list(&ListParams::default()).await.unwrap() {
                out.insert(r.name_any(), (phase(Some(&r)), r.condition("Ready").map(|c| c.message.clone())));
            }
            out
        }
    };
    let snapshot = eventually("two runs Running and one Queued", MINUTE, || async {
        let p = phases().await;
        let running = ["run-a", "run-b"].iter().all(|n| p[*n].0 == Some(RunPhase::Running));
        (running && p["run-c"].0 == Some(RunPhase::Queued)).then_some(p)
    })
    .await;
    let message = snapshot["run-c"].1.clone().unwrap_or_default();
    assert!(message.contains("position 1"), "the queued run says where it stands: {message}");
    let cc = wait_for(&ccs, "cpu", MINUTE, |cc: Option<&ComputeCluster>| {
        cc.and_then(counts).is_some_and(|(busy, standby, _, queued)| busy == 2 && standby == 0 && queued == 1)
    })
    .await
    .unwrap();
    assert_eq!(cc.status.unwrap().queued_runs, Some(1));
    // Never more than two at once: the third has no Job while the others run.
    let jobs: Api<Job> = env.ns.api();
    assert!(jobs.get_opt("run-c").await.unwrap().is_none());

    // One finishes: the third starts.
    eventually("the queued run to start", MINUTE, || async {
        let p = phases().await;
        matches!(p["run-c"].0, Some(RunPhase::Starting | RunPhase::Running)).then_some(())
    })
    .await;
    let p = phases().await;
    assert!(
        [&p["run-a"].0, &p["run-b"].0].contains(&&Some(RunPhase::Succeeded)),
        "it started because another finished: {p:?}"
    );

    // All finish; the freed instances stay warm for the idle time, then standby is back at min.
    eventually("all runs Succeeded", TWO_MINUTES, || async {
        phases().await.values().all(|(p, _)| *p == Some(RunPhase::Succeeded)).then_some(())
    })
    .await;
    wait_for(&ccs, "cpu", MINUTE, |cc: Option<&ComputeCluster>| {
        cc.and_then(counts).is_some_and(|(busy, standby, _, _)| busy == 0 && standby == 2)
    })
    .await;
    wait_for(&ccs, "cpu", MINUTE, |cc: Option<&ComputeCluster>| cc.and_then(counts) == Some((0, 1, 1, 0))).await;
    let cc = ccs.get("cpu").await.unwrap();
    assert_eq!(pods_of(&env.client, &env.ns.name, &cc).await.len(), 1);
    let a = runs.get("run-a").await.unwrap().status.unwrap();
    assert!(a.start_time.is_some() && a.completion_time.is_some());
    assert!(a.start_time.unwrap().0 <= a.completion_time.unwrap().0);
}

#[tokio::test]
async fn a_distributed_pytorch_run_is_an_indexed_job_with_a_rendezvous_service() {
    let mut env = Env::new("compute-torch").await;
    let claim = env.workspace_storage().await;
    let small = env
        .instance_type(
            "torch",
            json!({"nodeSelector": {"atrium.dev/pool": "cpu"}, "resources": {"requests": {"cpu": "100m"}}}),
        )
        .await;
    env.compute_cluster("cpu", json!({"instanceType": small, "maxInstances": 4})).await;
    let code = BTreeMap::from([("train.py".to_owned(), "import torch.distributed as dist\n".to_owned())]);
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "torch-code"}, "data": code})).unwrap();
    env.ns.api::<ConfigMap>().create(&PostParams::default(), &cm).await.unwrap();
    env.training_run(
        "ddp",
        json!({"computeCluster": "cpu", "image": "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime",
            "command": ["torchrun", "train.py"], "instanceCount": 3, "distribution": {"type": "PyTorch"},
            "code": {"configMap": "torch-code"}}),
    )
    .await;

    let jobs: Api<Job> = env.ns.api();
    let job = wait_for(&jobs, "ddp", MINUTE, |j: Option<&Job>| j.is_some()).await.unwrap();
    let spec = job.spec.unwrap();
    assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
    assert_eq!((spec.completions, spec.parallelism), (Some(3), Some(3)));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.subdomain.as_deref(), Some("ddp"));
    let env_vars: BTreeMap<String, Option<String>> =
        pod.containers[0].env.iter().flatten().map(|e| (e.name.clone(), e.value.clone())).collect();
    assert_eq!(env_vars["MASTER_ADDR"].as_deref(), Some("ddp-0.ddp"));
    assert_eq!(env_vars["MASTER_PORT"].as_deref(), Some("29500"));
    assert_eq!(env_vars["WORLD_SIZE"].as_deref(), Some("3"));
    for from_index in ["RANK", "NODE_RANK", "PET_NODE_RANK"] {
        assert!(env_vars.contains_key(from_index), "{from_index}");
    }
    assert_eq!(env_vars["ATRIUM_OUTPUT_DIR"].as_deref(), Some("/atrium/outputs"));
    let claims: Vec<_> = pod
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.clone())
        .collect();
    assert_eq!(claims, [claim]);

    let services: Api<Service> = env.ns.api();
    let svc = services.get("ddp").await.expect("the headless Service");
    assert_eq!(svc.spec.unwrap().cluster_ip.as_deref(), Some("None"));

    // The code was snapshotted into an immutable ConfigMap, its digest recorded.
    let runs: Api<TrainingRun> = env.ns.api();
    let run =
        wait_for(&runs, "ddp", MINUTE, |r: Option<&TrainingRun>| phase(r) == Some(RunPhase::Succeeded)).await.unwrap();
    let status = run.status.unwrap();
    let snapshot = status.snapshot.unwrap();
    assert_eq!(snapshot.digest, Some(code_digest(&code, &BTreeMap::new())));
    let snap = env.ns.api::<ConfigMap>().get(snapshot.config_map.as_deref().unwrap()).await.unwrap();
    assert_eq!(snap.immutable, Some(true));
    assert_eq!(snap.data, Some(code));
    assert_eq!(status.outputs_path.as_deref(), Some("runs/ddp/outputs"));
    assert_eq!(status.job_name.as_deref(), Some("ddp"));
    assert!(status.completion_time.is_some());
}

#[tokio::test]
async fn failures_are_read_from_the_pods() {
    let mut env = Env::new("compute-fail").await;
    env.workspace_storage().await;
    let small = env
        .instance_type(
            "fail",
            json!({"nodeSelector": {"atrium.dev/pool": "cpu"}, "resources": {"requests": {"cpu": "100m"}}}),
        )
        .await;
    env.compute_cluster("cpu", json!({"instanceType": small, "maxInstances": 4})).await;
    let failing = |code: &str| json!({"computeCluster": "cpu", "image": "python:3.12", "env": [{"name": "KWOK_EXIT_CODE", "value": code}]});
    let mut retried = failing("3");
    retried["maxRetries"] = json!(1);
    env.training_run("exits-3", retried).await;
    env.training_run(
        "too-slow",
        json!({"computeCluster": "cpu", "image": "python:3.12", "timeoutSeconds": 3,
            "env": [{"name": "KWOK_DURATION", "value": "300s"}]}),
    )
    .await;
    env.training_run("oom", failing("137")).await;
    env.training_run("unpullable", json!({"computeCluster": "cpu", "image": "registry.invalid/train:1"})).await;

    let runs: Api<TrainingRun> = env.ns.api();
    let failed = |name: &'static str| {
        let runs = runs.clone();
        async move {
            let run = wait_for(&runs, name, TWO_MINUTES, |r: Option<&TrainingRun>| phase(r) == Some(RunPhase::Failed))
                .await
                .unwrap();
            let failure = run.status.as_ref().unwrap().failure.clone().expect("a failure");
            assert!(!run.is_ready());
            assert!(run.status.as_ref().unwrap().completion_time.is_some(), "{name}");
            (failure.reason.unwrap_or_default(), failure.exit_code, failure.message.unwrap_or_default())
        }
    };
    let (reason, code, message) = failed("exits-3").await;
    assert_eq!((reason.as_str(), code), ("Error", Some(3)), "{message}");
    assert!(message.contains("exited with code 3"), "{message}");
    let jobs: Api<Job> = env.ns.api();
    let job = jobs.get("exits-3").await.unwrap();
    assert_eq!(job.status.unwrap().failed, Some(2), "maxRetries 1: a second pod was tried");
    let (reason, code, message) = failed("too-slow").await;
    assert_eq!((reason.as_str(), code), ("DeadlineExceeded", None), "{message}");
    let (reason, code, _) = failed("oom").await;
    assert_eq!((reason.as_str(), code), ("OOMKilled", Some(137)));
    let (reason, code, message) = failed("unpullable").await;
    assert!(reason == "ErrImagePull" || reason == "ImagePullBackOff", "{reason}: {message}");
    assert_eq!(code, None);
    assert!(message.contains("registry.invalid"), "{message}");
    // The Job that could never start is stopped.
    wait_for(&jobs, "unpullable", MINUTE, |j: Option<&Job>| j.is_none_or(|j| j.metadata.deletion_timestamp.is_some()))
        .await;
}

#[tokio::test]
async fn a_successful_run_registers_a_model_version_and_deleting_a_running_run_cancels_it() {
    let mut env = Env::new("compute-model").await;
    env.workspace_storage().await;
    let small = env
        .instance_type(
            "model",
            json!({"nodeSelector": {"atrium.dev/pool": "cpu"}, "resources": {"requests": {"cpu": "100m"}}}),
        )
        .await;
    env.compute_cluster("cpu", json!({"instanceType": small, "maxInstances": 4})).await;
    let train = json!({"computeCluster": "cpu", "image": "python:3.12", "command": ["python", "train.py"],
        "registerModel": {"name": "iris"}});
    env.training_run("train-1", train.clone()).await;

    let runs: Api<TrainingRun> = env.ns.api();
    let run = wait_for(&runs, "train-1", TWO_MINUTES, |r: Option<&TrainingRun>| {
        r.and_then(|r| r.status.as_ref()?.registered_model.as_ref()).is_some()
    })
    .await
    .unwrap();
    assert!(run.is_ready());
    assert_eq!(phase(Some(&run)), Some(RunPhase::Succeeded));
    assert_eq!(run.status.as_ref().unwrap().registered_model.as_deref(), Some("iris:1"));

    let models: Api<Model> = env.ns.api();
    let model = eventually("a Ready model version", MINUTE, || async {
        let list = models.list(&ListParams::default()).await.unwrap();
        list.items.into_iter().find(|m| m.spec.model == "iris" && m.spec.version == 1 && m.is_ready())
    })
    .await;
    assert_eq!(model.spec.source.storage_path.as_deref(), Some("runs/train-1/outputs"));
    assert_eq!(model.labels().get(SHARD_LABEL), Some(&env.shard), "it carries the run's labels");

    // The next successful run registers the next version.
    env.training_run("train-2", train).await;
    let run = wait_for(&runs, "train-2", TWO_MINUTES, |r: Option<&TrainingRun>| {
        r.and_then(|r| r.status.as_ref()?.registered_model.as_ref()).is_some()
    })
    .await
    .unwrap();
    assert_eq!(run.status.unwrap().registered_model.as_deref(), Some("iris:2"));

    // Deleting a running run cancels it: its Job and pods go.
    env.training_run(
        "long",
        json!({"computeCluster": "cpu", "image": "python:3.12", "env": [{"name": "KWOK_DURATION", "value": "300s"}]}),
    )
    .await;
    let run =
        wait_for(&runs, "long", MINUTE, |r: Option<&TrainingRun>| phase(r) == Some(RunPhase::Running)).await.unwrap();
    let start: Option<Time> = run.status.as_ref().unwrap().start_time.clone();
    assert!(start.is_some(), "a running run has a start time");
    assert_eq!(pods_of(&env.client, &env.ns.name, &run).await.len(), 1);
    runs.delete("long", &DeleteParams::default()).await.unwrap();
    let jobs: Api<Job> = env.ns.api();
    wait_for(&jobs, "long", MINUTE, |j: Option<&Job>| j.is_none()).await;
    eventually("the run's pods gone", MINUTE, || async {
        pods_of(&env.client, &env.ns.name, &run).await.is_empty().then_some(())
    })
    .await;
}

/// The operator's own objects: the default instance type and the PriorityClasses.
#[tokio::test]
async fn the_operator_installs_the_default_instance_type_and_priority_classes() {
    let env = Env::new("compute-defaults").await;
    let itypes: Api<InstanceType> = Api::all(env.client.clone());
    let it = wait_for(&itypes, "defaultinstancetype", MINUTE, |it: Option<&InstanceType>| it.is_some()).await.unwrap();
    let requests = it.spec.resources.unwrap().requests;
    assert_eq!(requests["cpu"].0, "100m");
    let classes: Api<k8s_openapi::api::scheduling::v1::PriorityClass> = Api::all(client().await);
    for (name, below) in [("atrium-standby", -1), ("atrium-preemptible", 0)] {
        let class =
            wait_for(&classes, name, MINUTE, |c: Option<&k8s_openapi::api::scheduling::v1::PriorityClass>| c.is_some())
                .await
                .unwrap();
        assert!(class.value.unwrap() < below, "{name}");
    }
}
