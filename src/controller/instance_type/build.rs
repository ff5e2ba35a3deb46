//! What a pod of an instance looks like: the instance type's resources, node selector and
//! tolerations. Compute clusters (standby pods) and training runs (job pods) both build their
//! pods from it, so an instance is the same slot whoever fills it.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{ResourceRequirements, Toleration},
    apimachinery::pkg::api::resource::Quantity,
};

use crate::api::instance_type::InstanceTypeSpec;

/// The pod-level placement of one instance.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Placement {
    /// The container resources of the instance's (main) container.
    pub resources: Option<ResourceRequirements>,
    /// The pod's node selector, `None` when empty (so nothing empty is applied).
    pub node_selector: Option<BTreeMap<String, String>>,
    /// The pod's tolerations, `None` when empty.
    pub tolerations: Option<Vec<Toleration>>,
}

impl Placement {
    /// Adds tolerations (for example the spot tolerations of a LowPriority cluster) that the
    /// instance type does not already have.
    pub fn with_tolerations(mut self, extra: impl IntoIterator<Item = Toleration>) -> Self {
        let mut all = self.tolerations.take().unwrap_or_default();
        for t in extra {
            if !all.contains(&t) {
                all.push(t);
            }
        }
        self.tolerations = (!all.is_empty()).then_some(all);
        self
    }
}

/// The placement of one instance of `spec`.
pub fn placement(spec: &InstanceTypeSpec) -> Placement {
    let resources =
        spec.resources.as_ref().map(|r| r.to_requirements()).filter(|r| r.requests.is_some() || r.limits.is_some());
    Placement {
        resources,
        node_selector: (!spec.node_selector.is_empty()).then(|| spec.node_selector.clone()),
        tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
    }
}

/// What the scheduler reserves for one instance: its requests, with the limit standing in for a
/// resource that has only a limit (the API server defaults such a request to the limit — the
/// usual case for GPUs).
pub fn effective_requests(spec: &InstanceTypeSpec) -> BTreeMap<String, Quantity> {
    let Some(resources) = &spec.resources else { return BTreeMap::new() };
    let mut requests = resources.requests.clone();
    for (name, limit) in &resources.limits {
        requests.entry(name.clone()).or_insert_with(|| limit.clone());
    }
    requests
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{common::ContainerResources, instance_type::default_instance_type};

    #[test]
    fn the_default_instance_type_requests_what_design_says() {
        let spec = default_instance_type().spec;
        let p = placement(&spec);
        assert!(p.node_selector.is_none() && p.tolerations.is_none());
        let r = p.resources.unwrap();
        assert_eq!(r.requests.unwrap()["cpu"], Quantity("100m".into()));
        assert_eq!(r.limits.unwrap()["cpu"], Quantity("2".into()));
    }

    #[test]
    fn a_gpu_limit_is_an_effective_request() {
        let spec = InstanceTypeSpec {
            resources: Some(ContainerResources {
                requests: BTreeMap::from([("cpu".into(), Quantity("1".into()))]),
                limits: BTreeMap::from([
                    ("cpu".into(), Quantity("4".into())),
                    ("nvidia.com/gpu".into(), Quantity("1".into())),
                ]),
            }),
            ..Default::default()
        };
        let r = effective_requests(&spec);
        assert_eq!(r["cpu"], Quantity("1".into()), "the request wins over the limit");
        assert_eq!(r["nvidia.com/gpu"], Quantity("1".into()));
    }

    #[test]
    fn extra_tolerations_are_added_once() {
        let t = Toleration { key: Some("k".into()), operator: Some("Exists".into()), ..Default::default() };
        let p = Placement::default().with_tolerations([t.clone(), t.clone()]);
        assert_eq!(p.tolerations, Some(vec![t]));
        assert_eq!(Placement::default().with_tolerations([]).tolerations, None);
    }
}
