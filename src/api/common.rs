//! Types and validation rules shared by several kinds.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// CEL rule: the string is a DNS-1123 label (the shape of namespace and Service names).
pub(crate) const DNS_LABEL_RULE: &str = "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')";
pub(crate) const DNS_LABEL_MESSAGE: &str =
    "must be a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit";

/// CEL rule: a path relative to the workspace storage root that cannot escape it.
pub(crate) const STORAGE_PATH_RULE: &str = "!self.startsWith('/') && !self.matches('(^|/)[.][.](/|$)')";
pub(crate) const STORAGE_PATH_MESSAGE: &str =
    "must be a path relative to the workspace storage, such as 'datasets/iris': no leading '/' and no '..'";

/// CEL rule: a model registry name (Azure ML's model naming rules).
pub(crate) const MODEL_NAME_RULE: &str = "self.matches('^[A-Za-z0-9][-A-Za-z0-9_.]*$')";
pub(crate) const MODEL_NAME_MESSAGE: &str =
    "must start with a letter or digit and contain only letters, digits, '-', '_' and '.'";

/// CEL rule on a map of quantities: every value parses as a Kubernetes quantity.
pub(crate) const QUANTITY_MAP_RULE: &str = "self.all(k, isQuantity(string(self[k])))";
pub(crate) const QUANTITY_MAP_MESSAGE: &str =
    "every value must be a Kubernetes quantity, such as 500m, 2, 512Mi or 10Gi";

/// The longest quantity string accepted; the bound keeps the cost of the CEL quantity rules
/// within the API server's budget.
pub(crate) const MAX_QUANTITY_LENGTH: i64 = 64;

/// The most resource names one requests, limits or quota map may hold.
pub(crate) const MAX_RESOURCE_NAMES: i64 = 32;

/// Requests and limits for a container, keyed by resource name.
///
/// This is the `requests`/`limits` half of a Pod's resource requirements; convert it with
/// [`ContainerResources::to_requirements`].
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.requests) || !has(self.limits) || self.limits.all(r, !(r in self.requests) \
     || !isQuantity(string(self.requests[r])) || !isQuantity(string(self.limits[r])) \
     || quantity(string(self.requests[r])).compareTo(quantity(string(self.limits[r]))) <= 0)"
).message("a request cannot be larger than the limit for the same resource"))]
pub struct ContainerResources {
    /// Resources reserved for the container, by resource name, for example
    /// `cpu: 500m` and `memory: 2Gi`. The scheduler places the container only on a node with
    /// this much unreserved capacity.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = MAX_RESOURCE_NAMES,
        "additionalProperties" = {"x-kubernetes-int-or-string": true, "maxLength": MAX_QUANTITY_LENGTH},
    ))]
    #[x_kube(validation = Rule::new(QUANTITY_MAP_RULE).message(QUANTITY_MAP_MESSAGE))]
    pub requests: BTreeMap<String, Quantity>,

    /// The most the container may use, by resource name, for example `cpu: "2"`,
    /// `memory: 4Gi` or `nvidia.com/gpu: 1`. Extended resources such as GPUs are given here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = MAX_RESOURCE_NAMES,
        "additionalProperties" = {"x-kubernetes-int-or-string": true, "maxLength": MAX_QUANTITY_LENGTH},
    ))]
    #[x_kube(validation = Rule::new(QUANTITY_MAP_RULE).message(QUANTITY_MAP_MESSAGE))]
    pub limits: BTreeMap<String, Quantity>,
}

impl ContainerResources {
    /// The Kubernetes form, for a container's `resources`.
    pub fn to_requirements(&self) -> ResourceRequirements {
        let non_empty = |m: &BTreeMap<String, Quantity>| (!m.is_empty()).then(|| m.clone());
        ResourceRequirements {
            requests: non_empty(&self.requests),
            limits: non_empty(&self.limits),
            ..Default::default()
        }
    }
}

/// A registered model, by its registry name and optionally a version.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ModelReference {
    /// The model's registry name (`spec.model` of a Model in the same namespace), compared
    /// case-insensitively.
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new(MODEL_NAME_RULE).message(MODEL_NAME_MESSAGE))]
    pub name: String,

    /// The model version. When omitted, the highest version whose Model is Ready is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub version: Option<i64>,
}

/// Formats a model name and version the way Azure ML references a model version: `name:version`.
pub fn model_version_ref(name: &str, version: i64) -> String {
    format!("{name}:{version}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_resources_to_requirements_skips_empty_maps() {
        let resources = ContainerResources {
            requests: BTreeMap::from([("cpu".to_owned(), Quantity("100m".to_owned()))]),
            limits: BTreeMap::new(),
        };
        let requirements = resources.to_requirements();
        assert_eq!(requirements.requests.unwrap()["cpu"], Quantity("100m".to_owned()));
        assert!(requirements.limits.is_none());
        assert!(requirements.claims.is_none());
    }

    #[test]
    fn empty_resources_serialize_to_empty_object() {
        let json = serde_json::to_value(ContainerResources::default()).unwrap();
        assert_eq!(json, serde_json::json!({}));
    }
}
