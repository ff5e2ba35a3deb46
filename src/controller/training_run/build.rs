//! The desired children of a training run: the code snapshot ConfigMap, the batch Job (Indexed
//! when distributed) and its headless Service, and the Model version registered on success.
//! Pure: everything a child needs is resolved by the reconcile and passed in.
//!
//! The pod contract (what a training script sees; docs/compute.md):
//! - the code, read-only, at `/atrium/code` — the working directory;
//! - the outputs folder at `/atrium/outputs` (`ATRIUM_OUTPUT_DIR`), which is
//!   `runs/<run>/outputs` on the workspace storage;
//! - each input, read-only, at `/atrium/inputs/<name>` (`ATRIUM_INPUT_<name>`);
//! - `ATRIUM_RUN_NAME`, `ATRIUM_EXPERIMENT`, and for PyTorch runs of several instances the
//!   torch.distributed rendezvous variables.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::{
        batch::v1::{Job, JobSpec},
        core::v1::{
            ConfigMap, ConfigMapVolumeSource, Container, EnvVar, EnvVarSource, ObjectFieldSelector,
            PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Service, ServicePort, ServiceSpec, Volume,
            VolumeMount,
        },
    },
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::{
    api::{
        ComputeCluster, InstanceType, TrainingRun,
        model::{Model, ModelSource, ModelSpec},
        training_run::{DistributionType, TrainingRunSpec},
    },
    controller::compute_cluster::{
        admission::{CLUSTER_ANNOTATION, RUN_ANNOTATION},
        build::{CLUSTER_LABEL, instance_placement, run_priority_class},
    },
    runtime::{
        labels::{child_labels, controller_ref},
        naming::{bounded_name, child_name, hex, label_value},
    },
};

/// Where the code is mounted, read-only; the working directory of the training container.
pub const CODE_DIR: &str = "/atrium/code";
/// Where the outputs folder is mounted (`ATRIUM_OUTPUT_DIR`).
pub const OUTPUT_DIR: &str = "/atrium/outputs";
/// Under which each input is mounted, read-only, as `<INPUTS_DIR>/<name>`.
pub const INPUTS_DIR: &str = "/atrium/inputs";
/// The ServiceAccount of training pods (created by the Workspace controller).
pub const RUN_SERVICE_ACCOUNT: &str = "atrium-run";
/// The name of the training container.
pub const TRAINING_CONTAINER: &str = "training";
/// The port of the PyTorch rendezvous (`MASTER_PORT`).
pub const RENDEZVOUS_PORT: i32 = 29500;
/// The component label of a run's Job, pods and Service.
pub const TRAINING_COMPONENT: &str = "training";
/// The component label of a run's code snapshot.
pub const CODE_COMPONENT: &str = "code";
/// The annotation of the snapshot ConfigMap that holds its digest.
pub const DIGEST_ANNOTATION: &str = "atrium.dev/code-digest";
/// The label with a run's experiment.
pub const EXPERIMENT_LABEL: &str = "atrium.dev/experiment";
/// The label on a registered Model naming the run it came from.
pub const REGISTERED_BY_LABEL: &str = "atrium.dev/registered-by-run";
/// The annotation on a registered Model with the uid of the run it came from: how a retried
/// registration finds the version it already made.
pub const REGISTERED_BY_UID_ANNOTATION: &str = "atrium.dev/registered-by-run-uid";
/// The Job controller's annotation with a pod's completion index.
const COMPLETION_INDEX: &str = "metadata.annotations['batch.kubernetes.io/job-completion-index']";

/// The folder of a run's outputs, relative to the workspace storage root.
pub fn outputs_path(run: &TrainingRun) -> String {
    format!("runs/{}/outputs", run.name_any())
}

/// The name of a run's Job, and of its headless Service: at most 52 characters (the Job
/// controller appends the completion index and a random suffix to pod names), starting with a
/// letter (a Service name must).
pub fn job_name(run: &TrainingRun) -> String {
    let name = run.name_any();
    let n = bounded_name(&[&name], 52);
    if n.starts_with(|c: char| c.is_ascii_alphabetic()) { n } else { bounded_name(&["run", &name], 52) }
}

/// The name of a run's code snapshot ConfigMap.
pub fn snapshot_name(run: &TrainingRun) -> String {
    child_name(&[&run.name_any(), "snapshot"])
}

/// Whether a run is one torch.distributed job across several instances.
pub fn is_distributed(spec: &TrainingRunSpec) -> bool {
    spec.instance_count > 1 && spec.distribution.as_ref().is_some_and(|d| d.type_ == DistributionType::PyTorch)
}

/// The digest of a code snapshot: `sha256:` and the SHA-256 of the lines
/// `<sha256 of the file>  <file name>\n` in file name order — what `sha256sum * | sha256sum`
/// prints in the code folder (with `LC_ALL=C`).
pub fn code_digest(data: &BTreeMap<String, String>, binary: &BTreeMap<String, ByteString>) -> String {
    let mut files: BTreeMap<&str, &[u8]> = data.iter().map(|(k, v)| (k.as_str(), v.as_bytes())).collect();
    files.extend(binary.iter().map(|(k, v)| (k.as_str(), v.0.as_slice())));
    let mut manifest = Sha256::new();
    for (name, content) in files {
        manifest.update(format!("{}  {name}\n", hex(&Sha256::digest(content))));
    }
    format!("sha256:{}", hex(&manifest.finalize()))
}

/// The immutable snapshot of `source` (the run's code ConfigMap), owned by the run.
pub fn snapshot_config_map(run: &TrainingRun, source: &ConfigMap) -> ConfigMap {
    let data = source.data.clone().unwrap_or_default();
    let binary = source.binary_data.clone().unwrap_or_default();
    let digest = code_digest(&data, &binary);
    let ns = run.namespace();
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(snapshot_name(run)),
            namespace: ns.clone(),
            labels: Some(child_labels(run, CODE_COMPONENT)),
            annotations: Some(BTreeMap::from([(DIGEST_ANNOTATION.into(), digest)])),
            owner_references: controller_ref(run, ns.as_deref()).map(|r| vec![r]),
            ..Default::default()
        },
        data: (!data.is_empty()).then_some(data),
        binary_data: (!binary.is_empty()).then_some(binary),
        immutable: Some(true),
    }
}

/// Where the run's code comes from, once resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodeMount {
    /// The snapshot ConfigMap of this name.
    Snapshot(String),
    /// A folder of the workspace storage.
    StoragePath(String),
}

/// Everything the Job is built from.
#[derive(Clone, Debug)]
pub struct JobInputs<'a> {
    pub run: &'a TrainingRun,
    pub cluster: &'a ComputeCluster,
    pub itype: &'a InstanceType,
    /// The workspace storage claim.
    pub claim: &'a str,
    pub code: Option<CodeMount>,
    /// Each input's folder (or file) on the workspace storage.
    pub inputs: BTreeMap<String, String>,
}

/// The labels of a run's Job, pods and Service.
fn training_labels(run: &TrainingRun) -> BTreeMap<String, String> {
    let mut labels = child_labels(run, TRAINING_COMPONENT);
    labels.insert(CLUSTER_LABEL.into(), label_value(&run.spec.compute_cluster));
    labels.insert(EXPERIMENT_LABEL.into(), label_value(&run.spec.experiment));
    labels
}

/// The environment of the training container: Atrium's contract first, then the run's own
/// variables except those that would override the contract.
fn environment(inputs: &JobInputs) -> Vec<EnvVar> {
    let run = inputs.run;
    let value = |name: &str, value: String| EnvVar { name: name.into(), value: Some(value), value_from: None };
    let field = |name: &str, path: &str| EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.into(), api_version: None }),
            ..Default::default()
        }),
    };
    let mut env = vec![
        value("ATRIUM_RUN_NAME", run.name_any()),
        value("ATRIUM_EXPERIMENT", run.spec.experiment.clone()),
        value("ATRIUM_OUTPUT_DIR", OUTPUT_DIR.into()),
    ];
    if inputs.code.is_some() {
        env.push(value("ATRIUM_CODE_DIR", CODE_DIR.into()));
    }
    for name in inputs.inputs.keys() {
        env.push(value(&format!("ATRIUM_INPUT_{name}"), format!("{INPUTS_DIR}/{name}")));
    }
    if is_distributed(&run.spec) {
        let nodes = run.spec.instance_count;
        let per_node = run.spec.distribution.as_ref().and_then(|d| d.processes_per_instance).unwrap_or(1);
        let job = job_name(run);
        // Pods of an Indexed Job with a subdomain are reachable as <job>-<index>.<subdomain>.
        let master = format!("{job}-0.{job}");
        env.extend([
            value("MASTER_ADDR", master.clone()),
            value("MASTER_PORT", RENDEZVOUS_PORT.to_string()),
            value("WORLD_SIZE", (nodes * per_node).to_string()),
            value("LOCAL_WORLD_SIZE", per_node.to_string()),
            field("NODE_RANK", COMPLETION_INDEX),
            // torchrun reads these (`PET_` + its option names).
            value("PET_MASTER_ADDR", master),
            value("PET_MASTER_PORT", RENDEZVOUS_PORT.to_string()),
            value("PET_NNODES", nodes.to_string()),
            value("PET_NPROC_PER_NODE", per_node.to_string()),
            field("PET_NODE_RANK", COMPLETION_INDEX),
        ]);
        if per_node == 1 {
            // One process per instance: its global rank is the instance's index. With more, the
            // launcher (torchrun) sets RANK per process.
            env.push(field("RANK", COMPLETION_INDEX));
        }
    }
    let ours: Vec<String> = env.iter().map(|e| e.name.clone()).collect();
    env.extend(run.spec.env.iter().filter(|e| !ours.contains(&e.name)).cloned());
    env
}

/// The batch Job of a run: `instanceCount` pods of the cluster's instance type, retried
/// `maxRetries` times, stopped after `timeoutSeconds`.
pub fn training_job(inputs: &JobInputs) -> Job {
    let run = inputs.run;
    let spec = &run.spec;
    let ns = run.namespace();
    let name = job_name(run);
    let labels = training_labels(run);
    let placement = instance_placement(&inputs.cluster.spec, inputs.itype);
    let distributed = is_distributed(spec);

    const STORAGE: &str = "workspace";
    const CODE: &str = "code";
    let mut volumes = vec![Volume {
        name: STORAGE.into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: inputs.claim.into(),
            read_only: None,
        }),
        ..Default::default()
    }];
    let mount = |volume: &str, path: String, sub_path: Option<String>, read_only: bool| VolumeMount {
        name: volume.into(),
        mount_path: path,
        sub_path,
        read_only: read_only.then_some(true),
        ..Default::default()
    };
    let mut mounts = vec![mount(STORAGE, OUTPUT_DIR.into(), Some(outputs_path(run)), false)];
    match &inputs.code {
        Some(CodeMount::Snapshot(config_map)) => {
            volumes.push(Volume {
                name: CODE.into(),
                config_map: Some(ConfigMapVolumeSource { name: config_map.clone(), ..Default::default() }),
                ..Default::default()
            });
            mounts.push(mount(CODE, CODE_DIR.into(), None, true));
        }
        Some(CodeMount::StoragePath(path)) => mounts.push(mount(STORAGE, CODE_DIR.into(), Some(path.clone()), true)),
        None => {}
    }
    for (input, path) in &inputs.inputs {
        mounts.push(mount(STORAGE, format!("{INPUTS_DIR}/{input}"), Some(path.clone()), true));
    }

    let container = Container {
        name: TRAINING_CONTAINER.into(),
        image: Some(spec.image.clone()),
        command: (!spec.command.is_empty()).then(|| spec.command.clone()),
        args: (!spec.args.is_empty()).then(|| spec.args.clone()),
        env: Some(environment(inputs)),
        working_dir: inputs.code.as_ref().map(|_| CODE_DIR.into()),
        resources: placement.resources,
        volume_mounts: Some(mounts),
        ports: distributed.then(|| {
            vec![k8s_openapi::api::core::v1::ContainerPort {
                name: Some("rendezvous".into()),
                container_port: RENDEZVOUS_PORT,
                ..Default::default()
            }]
        }),
        ..Default::default()
    };
    let annotations = BTreeMap::from([(RUN_ANNOTATION.to_string(), run.name_any())]);
    let mut job_annotations = annotations.clone();
    job_annotations.insert(CLUSTER_ANNOTATION.into(), spec.compute_cluster.clone());
    Job {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: ns.clone(),
            labels: Some(labels.clone()),
            annotations: Some(job_annotations),
            owner_references: controller_ref(run, ns.as_deref()).map(|r| vec![r]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            completions: Some(spec.instance_count),
            parallelism: Some(spec.instance_count),
            completion_mode: distributed.then(|| "Indexed".into()),
            backoff_limit: Some(spec.max_retries.unwrap_or(0)),
            active_deadline_seconds: spec.timeout_seconds,
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    restart_policy: Some("Never".into()),
                    service_account_name: Some(RUN_SERVICE_ACCOUNT.into()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    subdomain: distributed.then(|| name.clone()),
                    node_selector: placement.node_selector,
                    tolerations: placement.tolerations,
                    priority_class_name: run_priority_class(inputs.cluster.spec.tier).map(Into::into),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// The headless Service that gives the pods of a distributed run their DNS names, `None` for a
/// run that is not distributed.
pub fn rendezvous_service(run: &TrainingRun) -> Option<Service> {
    if !is_distributed(&run.spec) {
        return None;
    }
    let ns = run.namespace();
    let labels = training_labels(run);
    let selector = BTreeMap::from([
        (crate::runtime::labels::OWNER_UID.to_string(), run.uid().unwrap_or_default()),
        ("app.kubernetes.io/component".to_string(), TRAINING_COMPONENT.to_string()),
    ]);
    Some(Service {
        metadata: ObjectMeta {
            name: Some(job_name(run)),
            namespace: ns.clone(),
            labels: Some(labels),
            owner_references: controller_ref(run, ns.as_deref()).map(|r| vec![r]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector),
            // Ranks find each other before any of them is ready.
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![ServicePort {
                name: Some("rendezvous".into()),
                port: RENDEZVOUS_PORT,
                target_port: Some(IntOrString::Int(RENDEZVOUS_PORT)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    })
}

/// The Model version registered from a successful run's outputs. It carries the run's labels
/// but is not owned by it: a registered model outlives the run that produced it.
pub fn registered_model(run: &TrainingRun, name: &str, version: i64) -> Model {
    let mut labels = run.labels().clone();
    labels.insert(REGISTERED_BY_LABEL.into(), label_value(&run.name_any()));
    labels.insert(EXPERIMENT_LABEL.into(), label_value(&run.spec.experiment));
    let mut model = Model::new(
        &child_name(&[name, &version.to_string()]),
        ModelSpec {
            model: name.into(),
            version,
            source: ModelSource { storage_path: Some(outputs_path(run)), uri: None },
            format: "custom".into(),
            description: Some(format!(
                "Registered from the outputs of training run {} (experiment {}).",
                run.name_any(),
                run.spec.experiment
            )),
            tags: BTreeMap::from([
                ("trainingRun".into(), run.name_any()),
                ("experiment".into(), run.spec.experiment.clone()),
            ]),
        },
    );
    model.meta_mut().namespace = run.namespace();
    model.meta_mut().labels = Some(labels);
    model.meta_mut().annotations = Some(BTreeMap::from([
        (RUN_ANNOTATION.into(), run.name_any()),
        (REGISTERED_BY_UID_ANNOTATION.into(), run.uid().unwrap_or_default()),
    ]));
    model
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn run(spec: serde_json::Value) -> TrainingRun {
        serde_json::from_value(json!({
            "apiVersion": "atrium.dev/v1alpha1", "kind": "TrainingRun",
            "metadata": {"name": "train-1", "namespace": "team-a", "uid": "run-uid",
                         "labels": {"team": "vision"}},
            "spec": spec
        }))
        .unwrap()
    }

    fn cluster(tier: &str) -> ComputeCluster {
        serde_json::from_value(json!({
            "apiVersion": "atrium.dev/v1alpha1", "kind": "ComputeCluster",
            "metadata": {"name": "cpu", "namespace": "team-a", "uid": "cc-uid"},
            "spec": {"instanceType": "small", "tier": tier}
        }))
        .unwrap()
    }

    fn itype() -> InstanceType {
        serde_json::from_value(json!({
            "apiVersion": "atrium.dev/v1alpha1", "kind": "InstanceType",
            "metadata": {"name": "small"},
            "spec": {"nodeSelector": {"atrium.dev/pool": "cpu"},
                     "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}}
        }))
        .unwrap()
    }

    fn env_of(job: &Job) -> BTreeMap<String, EnvVar> {
        let c = &job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
        c.env.iter().flatten().map(|e| (e.name.clone(), e.clone())).collect()
    }

    #[test]
    fn a_single_instance_run_is_a_plain_job_on_the_instance_type() {
        let r = run(json!({"computeCluster": "cpu", "image": "python:3.12", "command": ["python", "train.py"],
            "env": [{"name": "EPOCHS", "value": "3"}, {"name": "ATRIUM_OUTPUT_DIR", "value": "/elsewhere"}],
            "inputs": {"iris": {"storagePath": "datasets/iris"}}, "timeoutSeconds": 600, "maxRetries": 2}));
        let c = cluster("Dedicated");
        let it = itype();
        let job = training_job(&JobInputs {
            run: &r,
            cluster: &c,
            itype: &it,
            claim: "team-a-storage",
            code: Some(CodeMount::Snapshot("train-1-snapshot".into())),
            inputs: BTreeMap::from([("iris".into(), "datasets/iris".into())]),
        });
        assert_eq!(job.name_any(), "train-1");
        assert_eq!(job.owner_references()[0].kind, "TrainingRun");
        assert_eq!(job.annotations()[CLUSTER_ANNOTATION], "cpu");
        let spec = job.spec.as_ref().unwrap();
        assert_eq!((spec.completions, spec.parallelism, spec.completion_mode.as_deref()), (Some(1), Some(1), None));
        assert_eq!((spec.backoff_limit, spec.active_deadline_seconds), (Some(2), Some(600)));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.service_account_name.as_deref(), Some("atrium-run"));
        assert_eq!(pod.node_selector.as_ref().unwrap()["atrium.dev/pool"], "cpu");
        assert!(pod.priority_class_name.is_none() && pod.subdomain.is_none());
        let container = &pod.containers[0];
        assert_eq!(container.working_dir.as_deref(), Some(CODE_DIR));
        assert_eq!(container.resources.as_ref().unwrap().requests.as_ref().unwrap()["cpu"].0, "500m");
        let mounts: BTreeMap<_, _> =
            container.volume_mounts.iter().flatten().map(|m| (m.mount_path.as_str(), m)).collect();
        assert_eq!(mounts[OUTPUT_DIR].sub_path.as_deref(), Some("runs/train-1/outputs"));
        assert_eq!(mounts[OUTPUT_DIR].read_only, None);
        assert_eq!(mounts[CODE_DIR].read_only, Some(true));
        assert_eq!(mounts["/atrium/inputs/iris"].sub_path.as_deref(), Some("datasets/iris"));
        assert_eq!(mounts["/atrium/inputs/iris"].read_only, Some(true));
        let env = env_of(&job);
        assert_eq!(env["ATRIUM_OUTPUT_DIR"].value.as_deref(), Some(OUTPUT_DIR), "the contract wins");
        assert_eq!(env["EPOCHS"].value.as_deref(), Some("3"));
        assert_eq!(env["ATRIUM_INPUT_iris"].value.as_deref(), Some("/atrium/inputs/iris"));
        assert!(!env.contains_key("MASTER_ADDR"));
        let pod_labels = spec.template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert_eq!(pod_labels["atrium.dev/owner-uid"], "run-uid");
        assert_eq!(pod_labels["app.kubernetes.io/managed-by"], "atrium");
        assert!(rendezvous_service(&r).is_none());
    }

    #[test]
    fn a_pytorch_run_of_three_is_indexed_with_the_rendezvous_environment() {
        let r = run(json!({"computeCluster": "cpu", "image": "pytorch/pytorch:2", "instanceCount": 3,
            "distribution": {"type": "PyTorch"}}));
        let c = cluster("LowPriority");
        let it = itype();
        let job = training_job(&JobInputs {
            run: &r,
            cluster: &c,
            itype: &it,
            claim: "claim",
            code: None,
            inputs: BTreeMap::new(),
        });
        let spec = job.spec.as_ref().unwrap();
        assert_eq!((spec.completions, spec.parallelism), (Some(3), Some(3)));
        assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.subdomain.as_deref(), Some("train-1"));
        assert_eq!(pod.priority_class_name.as_deref(), Some("atrium-preemptible"));
        assert!(pod.containers[0].working_dir.is_none());
        let env = env_of(&job);
        assert_eq!(env["MASTER_ADDR"].value.as_deref(), Some("train-1-0.train-1"));
        assert_eq!(env["MASTER_PORT"].value.as_deref(), Some("29500"));
        assert_eq!(env["WORLD_SIZE"].value.as_deref(), Some("3"));
        assert_eq!(env["PET_NNODES"].value.as_deref(), Some("3"));
        let rank = env["RANK"].value_from.as_ref().unwrap().field_ref.as_ref().unwrap();
        assert_eq!(rank.field_path, COMPLETION_INDEX);
        assert!(env.contains_key("NODE_RANK"));

        let svc = rendezvous_service(&r).unwrap();
        assert_eq!(svc.name_any(), "train-1");
        let s = svc.spec.unwrap();
        assert_eq!(s.cluster_ip.as_deref(), Some("None"));
        assert_eq!(s.selector.unwrap()["atrium.dev/owner-uid"], "run-uid");
    }

    #[test]
    fn several_processes_per_instance_leave_rank_to_the_launcher() {
        let r = run(json!({"computeCluster": "cpu", "image": "x", "instanceCount": 2,
            "distribution": {"type": "PyTorch", "processesPerInstance": 4}}));
        let (c, it) = (cluster("Dedicated"), itype());
        let job = training_job(&JobInputs {
            run: &r,
            cluster: &c,
            itype: &it,
            claim: "c",
            code: None,
            inputs: BTreeMap::new(),
        });
        let env = env_of(&job);
        assert_eq!(env["WORLD_SIZE"].value.as_deref(), Some("8"));
        assert_eq!(env["PET_NPROC_PER_NODE"].value.as_deref(), Some("4"));
        assert!(!env.contains_key("RANK"));
    }

    #[test]
    fn names_are_valid_for_jobs_and_services() {
        let mut r = run(json!({"computeCluster": "cpu", "image": "x"}));
        r.metadata.name = Some("7-".repeat(60) + "x");
        let n = job_name(&r);
        assert!(n.len() <= 52 && n.starts_with("run-"), "{n}");
    }

    #[test]
    fn the_snapshot_is_immutable_and_its_digest_is_what_sha256sum_prints() {
        let r = run(json!({"computeCluster": "cpu", "image": "x", "code": {"configMap": "src"}}));
        let source = ConfigMap {
            data: Some(BTreeMap::from([("train.py".into(), "print('hi')\n".into())])),
            ..Default::default()
        };
        let snap = snapshot_config_map(&r, &source);
        assert_eq!(snap.immutable, Some(true));
        assert_eq!(snap.name_any(), "train-1-snapshot");
        assert_eq!(snap.owner_references()[0].uid, "run-uid");
        // printf "print('hi')\n" > train.py; sha256sum * | sha256sum
        let file = hex(&Sha256::digest(b"print('hi')\n"));
        let expected = hex(&Sha256::digest(format!("{file}  train.py\n").as_bytes()));
        assert_eq!(snap.annotations()[DIGEST_ANNOTATION], format!("sha256:{expected}"));
    }

    #[test]
    fn a_registered_model_points_at_the_outputs_and_keeps_the_run_labels() {
        let r = run(json!({"computeCluster": "cpu", "image": "x", "registerModel": {"name": "Iris"}}));
        let m = registered_model(&r, "Iris", 3);
        assert_eq!(m.spec.version, 3);
        assert_eq!(m.spec.source.storage_path.as_deref(), Some("runs/train-1/outputs"));
        assert_eq!(m.labels()["team"], "vision");
        assert!(m.owner_references().is_empty());
        assert!(m.name_any().starts_with("iris-3"));
    }
}
