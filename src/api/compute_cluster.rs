//! `ComputeCluster`: a pool of instances that training runs use (namespaced, short name `cc`).

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::Condition;
use super::instance_type::DEFAULT_INSTANCE_TYPE;

fn default_max_instances() -> i32 {
    4
}

fn default_idle_time_before_scale_down() -> i64 {
    120
}

/// The desired state of a ComputeCluster: its instance type, how many instances it keeps warm
/// and how many it runs at most.
// clippy reads the `type_ = ...` of several printcolumn(...) lists as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "atrium.dev",
    version = "v1alpha1",
    kind = "ComputeCluster",
    namespaced,
    status = "ComputeClusterStatus",
    shortname = "cc",
    category = "atrium",
    derive = "PartialEq",
    derive = "Default",
    doc = "A ComputeCluster is a pool of instances of one instance type for training runs, like an \
           Azure ML compute cluster. It keeps minInstances warm and admits at most maxInstances busy \
           instances at a time; further runs wait in the Queued phase, first come first served.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "Whether the cluster can run training"
    ),
    printcolumn(
        name = "Instance Type",
        type_ = "string",
        json_path = ".spec.instanceType",
        description = "The instance type of the cluster's instances"
    ),
    printcolumn(
        name = "Min",
        type_ = "integer",
        json_path = ".spec.minInstances",
        description = "Instances kept warm"
    ),
    printcolumn(
        name = "Max",
        type_ = "integer",
        json_path = ".spec.maxInstances",
        description = "Most busy instances"
    ),
    printcolumn(
        name = "Busy",
        type_ = "integer",
        json_path = ".status.instances.busy",
        description = "Instances running training"
    ),
    printcolumn(
        name = "Standby",
        type_ = "integer",
        json_path = ".status.instances.standby",
        description = "Instances kept warm for the next run",
        priority = 1
    ),
    printcolumn(
        name = "Queued",
        type_ = "integer",
        json_path = ".status.queuedRuns",
        description = "Runs waiting for an instance"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minInstances <= self.maxInstances")
    .message("minInstances cannot be greater than maxInstances")
    .field_path(".minInstances"))]
pub struct ComputeClusterSpec {
    /// Name of the InstanceType of one instance. Defaults to `defaultinstancetype`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub instance_type: Option<String>,

    /// Instances kept available even when idle, as standby pods that any run preempts.
    /// Defaults to 0.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub min_instances: i32,

    /// The most instances busy at once; runs beyond it wait in `Queued`. Defaults to 4.
    #[serde(default = "default_max_instances")]
    #[schemars(range(min = 1))]
    pub max_instances: i32,

    /// Seconds an instance freed by a finished run stays warm before it is released.
    /// Defaults to 120.
    #[serde(default = "default_idle_time_before_scale_down")]
    #[schemars(range(min = 0))]
    pub idle_time_before_scale_down: i64,

    /// `Dedicated` (the default) or `LowPriority`: instances that tolerate spot nodes and can be
    /// preempted.
    #[serde(default)]
    pub tier: Tier,
}

impl Default for ComputeClusterSpec {
    fn default() -> Self {
        Self {
            instance_type: None,
            min_instances: 0,
            max_instances: default_max_instances(),
            idle_time_before_scale_down: default_idle_time_before_scale_down(),
            tier: Tier::default(),
        }
    }
}

impl ComputeClusterSpec {
    /// The instance type in effect: `spec.instanceType`, or `defaultinstancetype`.
    pub fn effective_instance_type(&self) -> &str {
        self.instance_type.as_deref().unwrap_or(DEFAULT_INSTANCE_TYPE)
    }
}

/// The priority tier of a compute cluster's instances.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Regular instances that are not preempted.
    #[default]
    Dedicated,
    /// Instances that tolerate spot nodes and use a preemptible PriorityClass.
    LowPriority,
}

/// The observed state of a ComputeCluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComputeClusterStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The cluster's conditions, including `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The cluster's instances by state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<InstanceCounts>,

    /// Training runs waiting for an instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_runs: Option<i32>,
}

/// Instance counts of a compute cluster.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceCounts {
    /// Instances running training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy: Option<i32>,

    /// Standby instances kept warm for the next run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby: Option<i32>,

    /// Busy plus standby instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_match_design() {
        let spec: ComputeClusterSpec = serde_json::from_value(json!({})).unwrap();
        assert_eq!(spec, ComputeClusterSpec::default());
        assert_eq!(spec.min_instances, 0);
        assert_eq!(spec.max_instances, 4);
        assert_eq!(spec.idle_time_before_scale_down, 120);
        assert_eq!(spec.tier, Tier::Dedicated);
        assert_eq!(spec.effective_instance_type(), "defaultinstancetype");
    }
}
