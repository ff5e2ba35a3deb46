//! The desired children of a compute cluster — its standby pods — and the cluster-wide
//! PriorityClasses its instances use. Pure.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        core::v1::{Container, Pod, PodSpec, Toleration},
        scheduling::v1::PriorityClass,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::ResourceExt;

use super::admission::CLUSTER_ANNOTATION;
use crate::{
    api::{ComputeCluster, ComputeClusterSpec, InstanceType, compute_cluster::Tier},
    controller::instance_type::build::{Placement, placement},
    runtime::{
        apply::content_hash,
        labels::{child_labels, controller_ref},
        naming::{child_name, label_value},
    },
};

/// The PriorityClass of standby pods: below every other pod, so any pod that needs the room
/// preempts them; they never preempt anything.
pub const STANDBY_PRIORITY_CLASS: &str = "atrium-standby";
/// The PriorityClass of the run pods of a `LowPriority` cluster: they preempt standby pods, and
/// any pod of the default priority preempts them.
pub const PREEMPTIBLE_PRIORITY_CLASS: &str = "atrium-preemptible";
const STANDBY_PRIORITY: i32 = -10;
const PREEMPTIBLE_PRIORITY: i32 = -5;

/// The default container image of standby pods: the pause image, which only holds its resources.
pub const STANDBY_IMAGE: &str = "registry.k8s.io/pause:3.10";

/// The image standby pods run: `ATRIUM_STANDBY_IMAGE` when set (a mirror, for air-gapped
/// clusters; the Helm chart's `images.standby`), else [`STANDBY_IMAGE`]. Read once per process.
pub fn standby_image() -> &'static str {
    static IMAGE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        std::env::var("ATRIUM_STANDBY_IMAGE").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| STANDBY_IMAGE.into())
    });
    &IMAGE
}
/// The component label of standby pods.
pub const STANDBY_COMPONENT: &str = "standby";
/// The label (value: the cluster's name as a label value) on every pod of a cluster's instances.
pub const CLUSTER_LABEL: &str = "atrium.dev/compute-cluster";

/// The taints of spot (low-priority) node pools that a `LowPriority` cluster's instances
/// tolerate: AKS spot node pools, GKE spot VMs, and `atrium.dev/spot` for pools tainted by hand.
pub fn spot_tolerations() -> Vec<Toleration> {
    let equal = |key: &str, value: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Equal".into()),
        value: Some(value.into()),
        effect: Some("NoSchedule".into()),
        ..Default::default()
    };
    vec![
        equal("kubernetes.azure.com/scalesetpriority", "spot"),
        equal("cloud.google.com/gke-spot", "true"),
        Toleration {
            key: Some("atrium.dev/spot".into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        },
    ]
}

/// The placement of one instance of a cluster: the instance type's, plus the spot tolerations
/// of the `LowPriority` tier.
pub fn instance_placement(spec: &ComputeClusterSpec, itype: &InstanceType) -> Placement {
    let p = placement(&itype.spec);
    match spec.tier {
        Tier::Dedicated => p,
        Tier::LowPriority => p.with_tolerations(spot_tolerations()),
    }
}

/// The PriorityClass of the pods of runs on a cluster of `tier` (`None`: the default priority).
pub fn run_priority_class(tier: Tier) -> Option<&'static str> {
    match tier {
        Tier::Dedicated => None,
        Tier::LowPriority => Some(PREEMPTIBLE_PRIORITY_CLASS),
    }
}

/// The PriorityClasses Atrium installs at start-up.
pub fn priority_classes() -> Vec<PriorityClass> {
    let class = |name: &str, value: i32, policy: &str, description: &str| PriorityClass {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/managed-by".into(), "atrium".into()),
                ("app.kubernetes.io/part-of".into(), "atrium".into()),
            ])),
            ..Default::default()
        },
        value: Some(value),
        preemption_policy: Some(policy.into()),
        global_default: Some(false),
        description: Some(description.into()),
    };
    vec![
        class(
            STANDBY_PRIORITY_CLASS,
            STANDBY_PRIORITY,
            "Never",
            "Atrium compute-cluster standby pods: placeholders that keep capacity warm; any pod preempts them.",
        ),
        class(
            PREEMPTIBLE_PRIORITY_CLASS,
            PREEMPTIBLE_PRIORITY,
            "PreemptLowerPriority",
            "Atrium LowPriority compute-cluster instances: preempt standby pods, preempted by regular pods.",
        ),
    ]
}

/// The `count` standby pods of `cluster`, each holding one instance of `itype`.
///
/// Their names carry a hash of the pod template: a changed instance type gives new names (pods
/// cannot be changed in place), and the old pods are pruned. Index `i` is kept by the same pod
/// while the template stands, so scaling down removes the highest indexes only.
pub fn standby_pods(cluster: &ComputeCluster, itype: &InstanceType, count: i32) -> Vec<Pod> {
    let p = instance_placement(&cluster.spec, itype);
    let spec = PodSpec {
        containers: vec![Container {
            name: "standby".into(),
            image: Some(standby_image().into()),
            resources: p.resources,
            ..Default::default()
        }],
        node_selector: p.node_selector,
        tolerations: p.tolerations,
        priority_class_name: Some(STANDBY_PRIORITY_CLASS.into()),
        restart_policy: Some("Always".into()),
        termination_grace_period_seconds: Some(0),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        ..Default::default()
    };
    let template = content_hash(&spec)[..8].to_string();
    let ns = cluster.namespace();
    let mut labels = child_labels(cluster, STANDBY_COMPONENT);
    labels.insert(CLUSTER_LABEL.into(), label_value(&cluster.name_any()));
    (0..count.max(0))
        .map(|i| Pod {
            metadata: ObjectMeta {
                name: Some(child_name(&[&cluster.name_any(), "standby", &template, &i.to_string()])),
                namespace: ns.clone(),
                labels: Some(labels.clone()),
                annotations: Some(BTreeMap::from([(CLUSTER_ANNOTATION.into(), cluster.name_any())])),
                owner_references: controller_ref(cluster, ns.as_deref()).map(|r| vec![r]),
                ..Default::default()
            },
            spec: Some(spec.clone()),
            status: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cluster(tier: &str) -> ComputeCluster {
        serde_json::from_value(json!({
            "apiVersion": "atrium.dev/v1alpha1", "kind": "ComputeCluster",
            "metadata": {"name": "cpu", "namespace": "team-a", "uid": "cc-uid"},
            "spec": {"instanceType": "gpu", "minInstances": 2, "tier": tier}
        }))
        .unwrap()
    }

    fn gpu_type() -> InstanceType {
        serde_json::from_value(json!({
            "apiVersion": "atrium.dev/v1alpha1", "kind": "InstanceType",
            "metadata": {"name": "gpu"},
            "spec": {
                "nodeSelector": {"atrium.dev/pool": "gpu"},
                "resources": {"requests": {"cpu": "1"}, "limits": {"nvidia.com/gpu": "1"}},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn standby_pods_hold_an_instance_at_standby_priority() {
        let pods = standby_pods(&cluster("Dedicated"), &gpu_type(), 2);
        assert_eq!(pods.len(), 2);
        let pod = &pods[0];
        assert!(pod.name_any().starts_with("cpu-standby-"), "{}", pod.name_any());
        assert!(pod.name_any().ends_with("-0"));
        assert_ne!(pods[0].name_any(), pods[1].name_any());
        assert_eq!(pod.labels()["app.kubernetes.io/component"], "standby");
        assert_eq!(pod.labels()[CLUSTER_LABEL], "cpu");
        let owner = &pod.owner_references()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("ComputeCluster", Some(true)));
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.priority_class_name.as_deref(), Some(STANDBY_PRIORITY_CLASS));
        assert_eq!(spec.node_selector.as_ref().unwrap()["atrium.dev/pool"], "gpu");
        assert_eq!(spec.tolerations.as_ref().unwrap().len(), 1);
        let limits = spec.containers[0].resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!(limits["nvidia.com/gpu"].0, "1");
    }

    #[test]
    fn low_priority_instances_tolerate_spot_nodes() {
        let pods = standby_pods(&cluster("LowPriority"), &gpu_type(), 1);
        let tolerations = pods[0].spec.as_ref().unwrap().tolerations.as_ref().unwrap();
        assert_eq!(tolerations.len(), 1 + spot_tolerations().len());
        assert_eq!(run_priority_class(Tier::LowPriority), Some(PREEMPTIBLE_PRIORITY_CLASS));
        assert_eq!(run_priority_class(Tier::Dedicated), None);
    }

    #[test]
    fn a_changed_instance_type_renames_the_pods() {
        let mut other = gpu_type();
        other.spec.node_selector.clear();
        let a = standby_pods(&cluster("Dedicated"), &gpu_type(), 1);
        let b = standby_pods(&cluster("Dedicated"), &other, 1);
        assert_ne!(a[0].name_any(), b[0].name_any());
        assert_eq!(a, standby_pods(&cluster("Dedicated"), &gpu_type(), 1), "deterministic");
    }

    #[test]
    fn priority_classes_preempt_in_order() {
        let classes = priority_classes();
        let value = |name: &str| classes.iter().find(|c| c.name_any() == name).unwrap().value.unwrap();
        assert!(value(STANDBY_PRIORITY_CLASS) < value(PREEMPTIBLE_PRIORITY_CLASS));
        assert!(value(PREEMPTIBLE_PRIORITY_CLASS) < 0, "below the default priority");
    }
}
