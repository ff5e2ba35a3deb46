//! Which nodes can run an instance, and the status that says so. Pure: nodes in, status out.
//!
//! A node can run an instance when it is not cordoned, its labels match the node selector, the
//! instance tolerates its `NoSchedule` and `NoExecute` taints, and its allocatable resources hold
//! at least one instance's effective requests (and one more pod).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Taint, Toleration};
use kube::ResourceExt;

use super::{
    build::effective_requests,
    quantity::{self, Milli},
};
use crate::{
    api::instance_type::{InstanceType, InstanceTypeSpec, InstanceTypeStatus, REASON_UNSCHEDULABLE},
    runtime::conditions::{Cond, READY, merge},
};

/// Reason of `Ready=True`: at least one node can run an instance.
pub const REASON_SCHEDULABLE: &str = "Schedulable";
/// Reason of `Ready=False`: a requested quantity does not parse.
pub const REASON_INVALID_RESOURCES: &str = "InvalidResources";

/// How an instance type fits the cluster's nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fit {
    /// Nodes that can run at least one instance.
    pub matching_nodes: i32,
    /// The most instances one node can hold.
    pub max_per_node: i32,
    /// For nodes that cannot run one: why, as (reason, nodes).
    pub misfits: BTreeMap<&'static str, i32>,
    /// A request that is not a quantity, if any.
    pub invalid: Option<String>,
}

/// Why a node cannot run an instance.
const CORDONED: &str = "cordoned";
const LABELS: &str = "without the selected labels";
const TAINTS: &str = "with taints the instance type does not tolerate";

/// How `spec` fits `nodes`.
pub fn fit<'a>(spec: &InstanceTypeSpec, nodes: impl IntoIterator<Item = &'a Node>) -> Fit {
    let mut fit = Fit::default();
    let mut requests = Vec::new();
    for (name, q) in effective_requests(spec) {
        match quantity::parse(&q) {
            Some(v) if v > 0 => requests.push((name, v)),
            Some(_) => {}
            None => {
                fit.invalid = Some(format!("{name}: {:?} is not a quantity", q.0));
                return fit;
            }
        }
    }
    for node in nodes {
        match instances_on(spec, &requests, node) {
            Ok(n) => {
                fit.matching_nodes += 1;
                fit.max_per_node = fit.max_per_node.max(n);
            }
            Err(why) => *fit.misfits.entry(why).or_default() += 1,
        }
    }
    fit
}

/// How many instances `node` can hold (at least one), or why it cannot hold one.
fn instances_on(spec: &InstanceTypeSpec, requests: &[(String, Milli)], node: &Node) -> Result<i32, &'static str> {
    if node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) {
        return Err(CORDONED);
    }
    let labels = node.labels();
    if !spec.node_selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
        return Err(LABELS);
    }
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default();
    if !taints.iter().all(|t| t.effect == "PreferNoSchedule" || spec.tolerations.iter().any(|tol| tolerates(tol, t))) {
        return Err(TAINTS);
    }
    let allocatable = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    let available = |name: &str| allocatable.and_then(|a| a.get(name)).and_then(quantity::parse).unwrap_or(0);
    // Each instance is one pod.
    let mut n = match allocatable.and_then(|a| a.get("pods")) {
        Some(pods) => quantity::parse(pods).unwrap_or(0) / 1000,
        None => i128::from(i32::MAX),
    };
    let mut short = None;
    for (name, request) in requests {
        let fits = available(name) / request;
        if fits < n {
            n = fits;
            short = Some(name);
        }
    }
    if n < 1 {
        return Err(match short.map(String::as_str) {
            Some("cpu") => "with too little allocatable cpu",
            Some("memory") => "with too little allocatable memory",
            Some("pods") | None => "with no room for another pod",
            Some(_) => "without enough of an extended resource (such as nvidia.com/gpu)",
        });
    }
    Ok(i32::try_from(n).unwrap_or(i32::MAX))
}

/// Whether `toleration` tolerates `taint` (the scheduler's rule).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect_ok = toleration.effect.as_deref().is_none_or(|e| e.is_empty() || e == taint.effect);
    let key = toleration.key.as_deref().unwrap_or_default();
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => effect_ok && (key.is_empty() || key == taint.key),
        _ => {
            effect_ok
                && key == taint.key
                && toleration.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default()
        }
    }
}

/// The status of `itype` given how it fits.
pub fn desired_status(
    itype: &InstanceType,
    fit: &Fit,
    now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> InstanceTypeStatus {
    let current = itype.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let ready = if let Some(invalid) = &fit.invalid {
        Cond::fail(READY, REASON_INVALID_RESOURCES, format!("the resources are not valid quantities: {invalid}"))
    } else if fit.matching_nodes > 0 {
        let nodes = if fit.matching_nodes == 1 { "1 node".to_owned() } else { format!("{} nodes", fit.matching_nodes) };
        Cond::ok(
            READY,
            REASON_SCHEDULABLE,
            format!("{nodes} can run an instance, at most {} per node", fit.max_per_node),
        )
    } else {
        let total: i32 = fit.misfits.values().sum();
        let why = fit.misfits.iter().map(|(why, n)| format!("{n} {why}")).collect::<Vec<_>>().join(", ");
        let message = if total == 0 {
            "no node can run an instance: the cluster has no nodes".to_owned()
        } else {
            format!("no node can run an instance: of {total} nodes, {why}")
        };
        Cond::fail(READY, REASON_UNSCHEDULABLE, message)
    };
    InstanceTypeStatus {
        observed_generation: itype.metadata.generation,
        conditions: merge(current, &[ready], itype.metadata.generation, now),
        matching_nodes: Some(fit.matching_nodes),
        max_per_node: Some(fit.max_per_node),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::instance_type::default_instance_type;
    use crate::runtime::conditions::is_true;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    /// The local cluster's nodes.
    fn nodes() -> Vec<Node> {
        let cpu = |name: &str| {
            json!({"metadata": {"name": name, "labels": {"atrium.dev/pool": "cpu"}},
                   "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"}}})
        };
        let gpu = json!({
            "metadata": {"name": "gpu-1", "labels": {"atrium.dev/pool": "gpu"}},
            "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110", "nvidia.com/gpu": "4"}}
        });
        [cpu("cpu-1"), cpu("cpu-2"), gpu].into_iter().map(|v| serde_json::from_value(v).unwrap()).collect()
    }

    fn spec(v: serde_json::Value) -> InstanceTypeSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_default_instance_type_fits_the_untainted_nodes() {
        let f = fit(&default_instance_type().spec, &nodes());
        assert_eq!((f.matching_nodes, f.max_per_node), (2, 16), "32Gi / 2Gi");
        assert_eq!(f.misfits, BTreeMap::from([(TAINTS, 1)]));
    }

    #[test]
    fn a_gpu_instance_type_fits_the_gpu_node_only() {
        let s = spec(json!({
            "resources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"nvidia.com/gpu": "1"}},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        }));
        let f = fit(&s, &nodes());
        assert_eq!((f.matching_nodes, f.max_per_node), (1, 4), "4 GPUs");
    }

    #[test]
    fn labels_and_size_are_both_checked() {
        let s = spec(json!({"nodeSelector": {"atrium.dev/pool": "cpu"}, "resources": {"requests": {"cpu": "3"}}}));
        let f = fit(&s, &nodes());
        assert_eq!((f.matching_nodes, f.max_per_node), (2, 2));
        let too_big = spec(json!({"resources": {"requests": {"cpu": "100"}},
            "tolerations": [{"operator": "Exists"}]}));
        let f = fit(&too_big, &nodes());
        assert_eq!(f.matching_nodes, 0);
        assert_eq!(f.misfits, BTreeMap::from([("with too little allocatable cpu", 3)]));
    }

    #[test]
    fn cordoned_nodes_do_not_count() {
        let mut ns = nodes();
        ns[0].spec.get_or_insert_default().unschedulable = Some(true);
        assert_eq!(fit(&default_instance_type().spec, &ns).matching_nodes, 1);
    }

    #[test]
    fn tolerations_follow_the_scheduler_rules() {
        let taint = Taint { key: "k".into(), value: Some("v".into()), effect: "NoSchedule".into(), time_added: None };
        let t = |v: serde_json::Value| serde_json::from_value::<Toleration>(v).unwrap();
        assert!(tolerates(&t(json!({"key": "k", "value": "v"})), &taint));
        assert!(tolerates(&t(json!({"key": "k", "operator": "Exists", "effect": "NoSchedule"})), &taint));
        assert!(tolerates(&t(json!({"operator": "Exists"})), &taint));
        assert!(!tolerates(&t(json!({"key": "k", "value": "w"})), &taint));
        assert!(!tolerates(&t(json!({"key": "k", "operator": "Exists", "effect": "NoExecute"})), &taint));
    }

    #[test]
    fn status_says_unschedulable_and_why() {
        let mut it = default_instance_type();
        it.spec.node_selector.insert("atrium.dev/pool".into(), "none".into());
        let now = Time(jiff::Timestamp::from_second(100).unwrap());
        let s = desired_status(&it, &fit(&it.spec, &nodes()), &now);
        assert!(!is_true(&s.conditions, READY));
        assert_eq!(s.conditions[0].reason, "Unschedulable");
        assert!(
            s.conditions[0].message.contains("of 3 nodes, 3 without the selected labels"),
            "{}",
            s.conditions[0].message
        );
        assert_eq!(s.matching_nodes, Some(0));

        // Same nodes later: an equal status, so no write.
        it.status = Some(s.clone());
        let later = Time(jiff::Timestamp::from_second(200).unwrap());
        assert_eq!(desired_status(&it, &fit(&it.spec, &nodes()), &later), s);
    }

    #[test]
    fn a_bad_quantity_is_reported() {
        let s = spec(json!({"resources": {"requests": {"cpu": "lots"}}}));
        let f = fit(&s, &nodes());
        assert!(f.invalid.is_some());
    }
}
