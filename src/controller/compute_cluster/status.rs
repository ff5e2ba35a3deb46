//! A compute cluster's status from its instance type, its plan and its live standby pods. Pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::admission::Plan;
use crate::{
    api::{
        ComputeCluster, HasConditions, InstanceType,
        compute_cluster::{ComputeClusterStatus, InstanceCounts},
        instance_type::REASON_UNSCHEDULABLE,
    },
    runtime::conditions::{Cond, READY, merge},
};

/// Reason: the named instance type does not exist.
pub const REASON_INSTANCE_TYPE_NOT_FOUND: &str = "InstanceTypeNotFound";
/// Reason: the instance type has not been fitted to the nodes yet.
pub const REASON_INSTANCE_TYPE_PENDING: &str = "InstanceTypePending";
/// Reason of `Ready=True`.
pub const REASON_READY: &str = "Ready";
/// Reason: the API server refused a standby pod (a ResourceQuota, or an admission policy).
pub const REASON_STANDBY_REFUSED: &str = "StandbyRefused";

/// Whether the cluster's instance type can run instances; `Ok` holds its matching nodes.
pub fn instance_type_readiness(name: &str, itype: Option<&InstanceType>) -> Result<i32, Cond> {
    let Some(itype) = itype else {
        return Err(Cond::fail(
            READY,
            REASON_INSTANCE_TYPE_NOT_FOUND,
            format!("instance type {name:?} does not exist: create it, or name another in spec.instanceType"),
        ));
    };
    match itype.condition(READY) {
        Some(c) if c.status == "True" => Ok(itype.status.as_ref().and_then(|s| s.matching_nodes).unwrap_or(0)),
        Some(c) if c.reason == REASON_UNSCHEDULABLE => {
            Err(Cond::fail(READY, REASON_UNSCHEDULABLE, format!("instance type {name:?} fits no node: {}", c.message)))
        }
        Some(c) => Err(Cond::fail(READY, &c.reason, format!("instance type {name:?} is not ready: {}", c.message))),
        None => Err(Cond::fail(
            READY,
            REASON_INSTANCE_TYPE_PENDING,
            format!("instance type {name:?} has not been matched to the nodes yet"),
        )),
    }
}

/// The status of `cluster`: `Ready` from its instance type and, when the API server refused a
/// standby pod, from that refusal (`refused`: its message); counts from the plan and the live
/// standby pods.
pub fn desired_status(
    cluster: &ComputeCluster,
    readiness: &Result<i32, Cond>,
    plan: &Plan,
    live_standby: i32,
    refused: Option<&str>,
    now: &Time,
) -> ComputeClusterStatus {
    let name = cluster.spec.effective_instance_type();
    let ready = match readiness {
        Ok(_) if let Some(message) = refused => Cond::fail(
            READY,
            REASON_STANDBY_REFUSED,
            format!(
                "{live_standby} of {} standby instances are up: the API server refused a standby pod ({message}); \
                 raise the namespace's ResourceQuota or relax the policy, or lower minInstances",
                plan.standby
            ),
        ),
        Ok(nodes) => Cond::ok(
            READY,
            REASON_READY,
            format!("instance type {name:?} fits {nodes} node{}", if *nodes == 1 { "" } else { "s" }),
        ),
        Err(cond) => cond.clone(),
    };
    let current = cluster.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let generation = cluster.metadata.generation;
    ComputeClusterStatus {
        observed_generation: generation,
        conditions: merge(current, &[ready], generation, now),
        instances: Some(InstanceCounts {
            busy: Some(plan.busy),
            standby: Some(live_standby),
            total: Some(plan.busy + live_standby),
        }),
        queued_runs: Some(plan.queued()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::conditions::is_true;
    use serde_json::json;

    fn itype(status: serde_json::Value) -> InstanceType {
        serde_json::from_value(json!({
            "apiVersion": "atrium.dev/v1alpha1", "kind": "InstanceType",
            "metadata": {"name": "small"}, "spec": {}, "status": status
        }))
        .unwrap()
    }

    fn t(s: i64) -> Time {
        Time(jiff::Timestamp::from_second(s).unwrap())
    }

    #[test]
    fn readiness_follows_the_instance_type() {
        assert_eq!(instance_type_readiness("x", None).unwrap_err().reason, REASON_INSTANCE_TYPE_NOT_FOUND);
        assert_eq!(
            instance_type_readiness("x", Some(&itype(json!({})))).unwrap_err().reason,
            REASON_INSTANCE_TYPE_PENDING
        );
        let unschedulable =
            itype(json!({"conditions": [{"type": "Ready", "status": "False", "reason": "Unschedulable",
            "message": "no node", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}));
        let err = instance_type_readiness("x", Some(&unschedulable)).unwrap_err();
        assert_eq!(err.reason, "Unschedulable");
        assert!(err.message.contains("no node"));
        let ready = itype(json!({"matchingNodes": 2, "conditions": [{"type": "Ready", "status": "True",
            "reason": "Schedulable", "message": "", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}));
        assert_eq!(instance_type_readiness("x", Some(&ready)), Ok(2));
    }

    #[test]
    fn counts_and_an_unchanged_status() {
        let mut cluster = ComputeCluster::new("cpu", Default::default());
        let plan = Plan {
            busy: 2,
            queue: vec![("c".into(), super::super::admission::Admission::Queued { position: 1, ahead_instances: 0 })],
            ..Default::default()
        };
        let s = desired_status(&cluster, &Ok(2), &plan, 1, None, &t(1));
        assert!(is_true(&s.conditions, READY));
        assert_eq!(s.instances, Some(InstanceCounts { busy: Some(2), standby: Some(1), total: Some(3) }));
        assert_eq!(s.queued_runs, Some(1));
        cluster.status = Some(s.clone());
        assert_eq!(desired_status(&cluster, &Ok(2), &plan, 1, None, &t(99)), s);
    }

    #[test]
    fn a_refused_standby_pod_is_ready_false_with_the_api_servers_message() {
        let cluster = ComputeCluster::new("gpu", Default::default());
        let plan = Plan { standby: 6, ..Default::default() };
        let quota = "pods \"x\" is forbidden: exceeded quota: atrium-workspace, requested: requests.nvidia.com/gpu=1";
        let s = desired_status(&cluster, &Ok(2), &plan, 4, Some(quota), &t(1));
        let ready = &s.conditions[0];
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", REASON_STANDBY_REFUSED));
        assert!(ready.message.starts_with("4 of 6 standby instances are up") && ready.message.contains(quota));
        assert_eq!(s.instances.unwrap().standby, Some(4));
        // The instance type comes first: a cluster that cannot run at all says why.
        let missing = instance_type_readiness("x", None);
        let s = desired_status(&cluster, &missing, &plan, 0, Some(quota), &t(1));
        assert_eq!(s.conditions[0].reason, REASON_INSTANCE_TYPE_NOT_FOUND);
    }
}
