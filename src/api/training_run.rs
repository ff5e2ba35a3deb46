//! `TrainingRun`: one run of a training script on a compute cluster (namespaced, short name
//! `trun`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::EnvVar;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    Condition, MODEL_NAME_MESSAGE, MODEL_NAME_RULE, ModelReference, STORAGE_PATH_MESSAGE, STORAGE_PATH_RULE,
};

fn default_experiment() -> String {
    "default".to_owned()
}

fn default_instance_count() -> i32 {
    1
}

/// The definition of a TrainingRun: what to run, on which compute cluster, with which code and
/// inputs. It cannot be changed after creation.
// clippy reads the `type_ = ...` of several printcolumn(...) lists as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "atrium.dev",
    version = "v1alpha1",
    kind = "TrainingRun",
    namespaced,
    status = "TrainingRunStatus",
    shortname = "trun",
    category = "atrium",
    derive = "PartialEq",
    doc = "A TrainingRun is one run of a training script on a compute cluster, like an Azure ML job. \
           Its spec cannot be changed after creation, and the object is the run's record: phase, \
           code snapshot, outputs and failure. Deleting a running TrainingRun cancels it.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "Whether the run succeeded"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Queued, Starting, Running, Succeeded, Failed or Canceled"
    ),
    printcolumn(
        name = "Experiment",
        type_ = "string",
        json_path = ".spec.experiment",
        description = "The experiment the run belongs to"
    ),
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.computeCluster",
        description = "The compute cluster the run uses"
    ),
    printcolumn(
        name = "Started",
        type_ = "date",
        json_path = ".status.startTime",
        description = "When the run started running",
        priority = 1
    ),
    printcolumn(
        name = "Completed",
        type_ = "date",
        json_path = ".status.completionTime",
        description = "When the run finished",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message(
    "a TrainingRun's spec cannot be changed after creation; create a new TrainingRun instead"
))]
pub struct TrainingRunSpec {
    /// The experiment the run belongs to; runs are grouped and labelled by it.
    /// Defaults to `default`.
    #[serde(default = "default_experiment")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$')").message(
        "must start and end with a letter or digit and contain only letters, digits, '-', '_' and '.'"
    ))]
    pub experiment: String,

    /// Name of the ComputeCluster in this namespace to run on.
    #[schemars(length(min = 1, max = 253))]
    pub compute_cluster: String,

    /// The container image that runs the training script.
    #[schemars(length(min = 1, max = 1024))]
    pub image: String,

    /// The command to run, replacing the image's entrypoint, for example
    /// `["python", "train.py"]`. Runs in the code directory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,

    /// Arguments to the command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,

    /// Environment variables for the training containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,

    /// The training code. It is snapshotted when the run is admitted and mounted read-only as
    /// the working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<CodeSource>,

    /// Number of instances (pods) the run uses. Defaults to 1.
    #[serde(default = "default_instance_count")]
    #[schemars(range(min = 1))]
    pub instance_count: i32,

    /// How a distributed run is launched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<Distribution>,

    /// Named inputs: data from the workspace storage or a registered model, mounted read-only.
    /// Names are identifiers (letters, digits and '_').
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) <= 63 && k.matches('^[A-Za-z_][A-Za-z0-9_]*$'))").message(
        "input names must be identifiers of at most 63 characters: letters, digits and '_', not starting with a digit"
    ))]
    pub inputs: BTreeMap<String, RunInput>,

    /// Seconds the run may take before it is stopped and marked Failed. No limit when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: Option<i64>,

    /// How many times a failed run is retried. Defaults to 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub max_retries: Option<i32>,

    /// On success, register the run's outputs as a new version of this model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register_model: Option<RegisterModel>,
}

/// Where a run's code comes from: exactly one of `configMap` or `storagePath`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.configMap) != has(self.storagePath)")
    .message("set exactly one of configMap or storagePath"))]
pub struct CodeSource {
    /// Name of a ConfigMap in this namespace whose keys are the code files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub config_map: Option<String>,

    /// A directory in the workspace storage, relative to its root, for example `code/train`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new(STORAGE_PATH_RULE).message(STORAGE_PATH_MESSAGE))]
    pub storage_path: Option<String>,
}

/// How a distributed run is launched.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.processesPerInstance) || self.type == 'PyTorch'")
    .message("processesPerInstance applies only to type PyTorch"))]
pub struct Distribution {
    /// `None` (the default): every instance runs the command on its own. `PyTorch`: instances
    /// form one torch.distributed job, with the rendezvous variables (`MASTER_ADDR`,
    /// `MASTER_PORT`, `WORLD_SIZE`, `RANK`, ...) set.
    #[serde(rename = "type", default)]
    pub type_: DistributionType,

    /// Processes started on each instance, usually its number of GPUs. Defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub processes_per_instance: Option<i32>,
}

/// The launcher of a distributed run.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DistributionType {
    /// Every instance runs the command on its own.
    #[default]
    None,
    /// torch.distributed, with the rendezvous environment set.
    PyTorch,
}

/// One named input of a run: exactly one of `storagePath` or `model`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.storagePath) != has(self.model)")
    .message("set exactly one of storagePath or model"))]
pub struct RunInput {
    /// A file or directory in the workspace storage, relative to its root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new(STORAGE_PATH_RULE).message(STORAGE_PATH_MESSAGE))]
    pub storage_path: Option<String>,

    /// A registered model; without a version, its highest Ready version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelReference>,
}

/// Register a run's outputs as a model version.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RegisterModel {
    /// The model's registry name. The new version is one more than the highest existing version.
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new(MODEL_NAME_RULE).message(MODEL_NAME_MESSAGE))]
    pub name: String,
}

/// The observed state of a TrainingRun.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrainingRunStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The run's conditions. `Ready` is True once the run has succeeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Where the run is in its life: `Queued`, `Starting`, `Running`, `Succeeded`, `Failed`
    /// or `Canceled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RunPhase>,

    /// When the run's pods started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// When the run succeeded, failed or was canceled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    /// The immutable snapshot of the run's code, taken at admission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<CodeSnapshot>,

    /// Where the run writes its outputs, relative to the workspace storage root
    /// (`runs/<run>/outputs`); the run sees it as `ATRIUM_OUTPUT_DIR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs_path: Option<String>,

    /// Name of the batch Job running the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,

    /// Why the run failed, read from its pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<RunFailure>,

    /// The model version registered from the outputs, as `name:version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_model: Option<String>,
}

/// The phase of a training run.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunPhase {
    /// Waiting for an instance of its compute cluster.
    Queued,
    /// Admitted; pods are being scheduled and images pulled.
    Starting,
    /// The training containers are running.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished with an error, timed out or could not start.
    Failed,
    /// Deleted or stopped before finishing.
    Canceled,
}

impl RunPhase {
    /// True for the phases a run never leaves.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Canceled)
    }
}

/// The snapshot of a run's code.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CodeSnapshot {
    /// The sha256 digest of the code, as `sha256:<hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,

    /// Name of the immutable ConfigMap holding the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<String>,
}

/// Why a run failed.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RunFailure {
    /// A CamelCase reason, for example `ImagePullBackOff`, `OOMKilled`, `Error`,
    /// `DeadlineExceeded` or `Unschedulable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,

    /// A human-readable explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// The exit code of the failed training container, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn minimal_spec_gets_defaults_and_round_trips() {
        let spec: TrainingRunSpec = serde_json::from_value(json!({
            "computeCluster": "cpu", "image": "python:3.12"
        }))
        .unwrap();
        assert_eq!(spec.experiment, "default");
        assert_eq!(spec.instance_count, 1);
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            json!({"experiment": "default", "computeCluster": "cpu", "image": "python:3.12", "instanceCount": 1})
        );
    }

    #[test]
    fn terminal_phases() {
        assert!(RunPhase::Canceled.is_terminal());
        assert!(!RunPhase::Running.is_terminal());
    }
}
