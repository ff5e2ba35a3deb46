//! `InstanceType`: a pod-sized slice of a node, like an Azure ML VM size (cluster-scoped, short
//! name `itype`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{Condition, ContainerResources};

/// The instance type used wherever none is named.
pub const DEFAULT_INSTANCE_TYPE: &str = "defaultinstancetype";
/// Reason: no node matches the instance type's selector and fits its requests.
pub const REASON_UNSCHEDULABLE: &str = "Unschedulable";

/// The definition of an InstanceType: the resources of one instance and the nodes it may run on.
// clippy reads the `type_ = ...` of several printcolumn(...) lists as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "atrium.dev",
    version = "v1alpha1",
    kind = "InstanceType",
    status = "InstanceTypeStatus",
    shortname = "itype",
    category = "atrium",
    derive = "PartialEq",
    derive = "Default",
    doc = "An InstanceType is the size of one instance of compute, like an Azure ML VM size: the \
           resources of one pod and the nodes it may run on. Compute clusters and model deployments \
           name one; the one named defaultinstancetype is used where none is named.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "Whether at least one node can run an instance"
    ),
    printcolumn(
        name = "CPU",
        type_ = "string",
        json_path = ".spec.resources.requests.cpu",
        description = "CPU requested per instance"
    ),
    printcolumn(
        name = "Memory",
        type_ = "string",
        json_path = ".spec.resources.requests.memory",
        description = "Memory requested per instance"
    ),
    printcolumn(
        name = "GPU",
        type_ = "string",
        json_path = r".spec.resources.limits.nvidia\.com/gpu",
        description = "NVIDIA GPUs per instance"
    ),
    printcolumn(
        name = "Nodes",
        type_ = "integer",
        json_path = ".status.matchingNodes",
        description = "Nodes that can run an instance"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct InstanceTypeSpec {
    /// Node labels an instance's node must have, for example
    /// `node.kubernetes.io/instance-type: Standard_NC6s_v3`. Empty matches every node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub node_selector: BTreeMap<String, String>,

    /// Requests and limits of one instance. GPUs go in `limits`, for example
    /// `nvidia.com/gpu: 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ContainerResources>,

    /// Tolerations added to instance pods, for example for tainted GPU nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tolerations: Vec<Toleration>,
}

/// The observed state of an InstanceType.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceTypeStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The instance type's conditions. `Ready` is False with reason `Unschedulable` when no
    /// node can run an instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Nodes whose labels match `nodeSelector` and whose allocatable resources fit the requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matching_nodes: Option<i32>,

    /// The most instances one matching node can hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_node: Option<i32>,
}

/// The `defaultinstancetype` installed with the operator: requests 100m CPU and 2Gi memory,
/// limits 2 CPU and 2Gi memory, on any node.
pub fn default_instance_type() -> InstanceType {
    let quantities =
        |pairs: [(&str, &str); 2]| pairs.into_iter().map(|(k, v)| (k.to_owned(), Quantity(v.to_owned()))).collect();
    InstanceType::new(
        DEFAULT_INSTANCE_TYPE,
        InstanceTypeSpec {
            resources: Some(ContainerResources {
                requests: quantities([("cpu", "100m"), ("memory", "2Gi")]),
                limits: quantities([("cpu", "2"), ("memory", "2Gi")]),
            }),
            ..Default::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn default_instance_type_matches_design() {
        let itype = default_instance_type();
        assert_eq!(itype.metadata.name.as_deref(), Some("defaultinstancetype"));
        assert_eq!(
            serde_json::to_value(&itype.spec).unwrap(),
            json!({"resources": {
                "requests": {"cpu": "100m", "memory": "2Gi"},
                "limits": {"cpu": "2", "memory": "2Gi"},
            }})
        );
    }
}
