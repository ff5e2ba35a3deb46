//! What the controller's caches keep of each child: what a reconcile reads, cut down as the
//! object arrives from its watch. An endpoint has some nine children and pods; at 1000 endpoints
//! their typed Kubernetes objects, kept whole, were most of the operator's memory (a `Pod` or a
//! `Deployment` takes 2.4 KiB before its first label: the pod spec is inline).
//!
//! Pods and Deployments become summaries (their own types, so nothing can read a field that is
//! no longer there); Services, ConfigMaps, Secrets, HPAs and PDBs keep their type with the
//! metadata cut down ([`slim_child_meta`]).

use std::borrow::Cow;

use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        apps::v1::Deployment,
        core::v1::{Pod, Service},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{Resource, core::PartialObjectMeta};
use serde::Deserialize;

use super::{MANAGER, status};
use crate::{api::model_deployment::DeploymentFailure, runtime::labels};

/// What a reconcile reads of a child's metadata; the rest is dropped. Kept: name, namespace,
/// uid, owner references (how `owns` finds the endpoint), deletion, Atrium's labels and
/// annotations (owner, deployment, applied hash, model), the component label, and when this
/// controller last applied the child. Other managers' entries and every field set (a JSON tree
/// per manager, the largest part of most cached children) are never read.
pub fn slim_child_meta(meta: &mut ObjectMeta) {
    meta.labels = meta.labels.as_ref().map(labels::read_by_controllers);
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|k, _| k.starts_with(labels::ATRIUM_PREFIX));
    }
    meta.generate_name = None;
    if let Some(entries) = meta.managed_fields.as_mut() {
        entries.retain(|e| is_own_apply(e) && e.subresource.is_none());
        for entry in entries.iter_mut() {
            entry.fields_v1 = None;
            entry.fields_type = None;
            entry.api_version = None;
        }
    }
}

fn is_own_apply(entry: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry) -> bool {
    entry.manager.as_deref() == Some(MANAGER) && entry.operation.as_deref() == Some("Apply")
}

/// Whether this controller's server-side apply holds `spec.replicas` (read before the field sets
/// are dropped).
pub fn applies_replicas(meta: &ObjectMeta) -> bool {
    meta.managed_fields.iter().flatten().any(|entry| {
        is_own_apply(entry)
            && entry.subresource.is_none()
            && entry.fields_v1.as_ref().is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some())
    })
}

/// A Service as the reconcile reads it: metadata and the load balancer's address.
pub fn slim_service(service: &mut Service) {
    slim_child_meta(&mut service.metadata);
    service.spec = None;
    if let Some(status) = service.status.as_mut() {
        status.conditions = None;
    }
}

/// A child read by metadata only.
pub fn slim_meta<K>(object: &mut PartialObjectMeta<K>) {
    slim_child_meta(&mut object.metadata);
}

/// What a reconcile reads of a Deployment: its metadata, the replica count it asks for, the
/// counts it reports and the failure its conditions report.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct DeploymentSummary {
    /// As [`slim_child_meta`] keeps it.
    pub metadata: ObjectMeta,
    /// `spec.replicas`.
    pub replicas: Option<i32>,
    /// Whether this controller's apply holds `spec.replicas` (to hand it over to an HPA).
    pub applies_replicas: bool,
    /// `status.replicas`.
    pub current_replicas: Option<i32>,
    /// `status.readyReplicas`.
    pub ready_replicas: Option<i32>,
    /// A rollout past its deadline or pods it cannot create (quota, admission).
    pub failure: Option<DeploymentFailure>,
}

impl DeploymentSummary {
    pub fn of(deployment: Deployment) -> Self {
        let failure = status::rollout_failure(&deployment);
        let Deployment { mut metadata, spec, status, .. } = deployment;
        let applies_replicas = applies_replicas(&metadata);
        slim_child_meta(&mut metadata);
        DeploymentSummary {
            metadata,
            replicas: spec.and_then(|s| s.replicas),
            applies_replicas,
            current_replicas: status.as_ref().and_then(|s| s.replicas),
            ready_replicas: status.as_ref().and_then(|s| s.ready_replicas),
            failure,
        }
    }
}

/// What a reconcile reads of a pod: where it belongs and why it cannot serve, worked out once as
/// the pod arrives (the Deployment's counts say whether it is ready).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct PodSummary {
    /// Name, namespace, and the labels that place it: Atrium's own and the component.
    pub metadata: ObjectMeta,
    /// Why it cannot serve, when that is a failure and not just starting up.
    pub failure: Option<DeploymentFailure>,
}

impl PodSummary {
    pub fn of(pod: &Pod) -> Self {
        let metadata = ObjectMeta {
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            labels: pod.metadata.labels.as_ref().map(labels::read_by_controllers),
            ..Default::default()
        };
        PodSummary { metadata, failure: status::single_pod_failure(pod) }
    }
}

/// A summary is cached, watched and mapped to its endpoint as the kind it summarizes.
macro_rules! summary_of {
    ($summary:ty, $kind:ty) => {
        impl Resource for $summary {
            type DynamicType = ();
            type Scope = NamespaceResourceScope;

            fn kind(dt: &()) -> Cow<'_, str> {
                <$kind>::kind(dt)
            }
            fn group(dt: &()) -> Cow<'_, str> {
                <$kind>::group(dt)
            }
            fn version(dt: &()) -> Cow<'_, str> {
                <$kind>::version(dt)
            }
            fn plural(dt: &()) -> Cow<'_, str> {
                <$kind>::plural(dt)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}
summary_of!(DeploymentSummary, Deployment);
summary_of!(PodSummary, Pod);

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;
    use serde_json::json;

    #[test]
    fn a_deployment_summary_keeps_what_the_reconcile_reads() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {
                "name": "e-blue",
                "generateName": "e-",
                "labels": {
                    "app.kubernetes.io/name": "atrium", "app.kubernetes.io/component": "inference",
                    "atrium.dev/owner-uid": "u-1", "atrium.dev/deployment": "blue"
                },
                "annotations": { "atrium.dev/applied-hash": "abc", "deployment.kubernetes.io/revision": "3" },
                "ownerReferences": [{ "apiVersion": "atrium.dev/v1alpha1", "kind": "ModelDeployment",
                                      "name": "e", "uid": "u-1", "controller": true }],
                "managedFields": [
                    { "manager": MANAGER, "operation": "Apply", "time": "2026-01-01T00:00:00Z",
                      "fieldsType": "FieldsV1",
                      "fieldsV1": { "f:spec": { "f:replicas": {}, "f:template": { "f:spec": {} } } } },
                    { "manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
                      "time": "2026-01-01T00:00:01Z", "fieldsType": "FieldsV1",
                      "fieldsV1": { "f:status": { "f:readyReplicas": {} } } }
                ]
            },
            "spec": {
                "replicas": 3,
                "selector": { "matchLabels": { "a": "b" } },
                "template": { "metadata": { "labels": { "a": "b" } }, "spec": { "containers": [{ "name": "c" }] } }
            },
            "status": { "replicas": 3, "readyReplicas": 2, "conditions": [
                { "type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "ok" },
                { "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": "exceeded quota" }
            ] }
        }))
        .unwrap();
        let s = DeploymentSummary::of(d);
        assert_eq!((s.replicas, s.current_replicas, s.ready_replicas), (Some(3), Some(3), Some(2)));
        assert!(s.applies_replicas);
        assert_eq!(s.failure.as_ref().and_then(|f| f.message.as_deref()), Some("exceeded quota"));
        // This controller's apply (its time, for how long ago it applied), nobody else's.
        let fields = s.metadata.managed_fields.as_ref().unwrap();
        assert_eq!(fields.len(), 1);
        assert_eq!((fields[0].manager.as_deref(), fields[0].fields_v1.as_ref()), (Some(MANAGER), None));
        assert!(fields[0].time.is_some());
        // Atrium's labels and annotations, the component and the owner; nothing else.
        let kept: Vec<&str> = s.labels().keys().map(String::as_str).collect();
        assert_eq!(kept, ["app.kubernetes.io/component", "atrium.dev/deployment", "atrium.dev/owner-uid"]);
        let kept: Vec<&str> = s.annotations().keys().map(String::as_str).collect();
        assert_eq!(kept, ["atrium.dev/applied-hash"]);
        assert_eq!(s.owner_references().len(), 1);
        assert_eq!(s.metadata.generate_name, None);
    }

    #[test]
    fn replicas_another_manager_holds_are_not_this_controllers() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": { "name": "e-blue", "managedFields": [
                { "manager": "atrium-modeldeployment-handover", "operation": "Apply",
                  "fieldsType": "FieldsV1", "fieldsV1": { "f:spec": { "f:replicas": {} } } },
                { "manager": MANAGER, "operation": "Apply",
                  "fieldsType": "FieldsV1", "fieldsV1": { "f:spec": { "f:template": {} } } }
            ] },
            "spec": { "replicas": 4, "selector": {}, "template": {} }
        }))
        .unwrap();
        let s = DeploymentSummary::of(d);
        assert!(!s.applies_replicas);
        assert_eq!(s.replicas, Some(4));
    }

    #[test]
    fn a_slim_service_keeps_its_load_balancer_address() {
        let mut s: Service = serde_json::from_value(json!({
            "metadata": { "name": "e", "labels": { "atrium.dev/owner-uid": "u-1", "app.kubernetes.io/part-of": "atrium" } },
            "spec": { "type": "LoadBalancer", "ports": [{ "port": 80 }], "selector": { "a": "b" } },
            "status": { "loadBalancer": { "ingress": [{ "ip": "192.0.2.7" }] } }
        }))
        .unwrap();
        slim_service(&mut s);
        assert_eq!(status::load_balancer_address(&s).as_deref(), Some("192.0.2.7"));
        assert!(s.spec.is_none());
        assert_eq!(s.labels().len(), 1);
    }

    #[test]
    fn a_pod_summary_keeps_what_places_it_and_why_it_fails() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": "e-blue-1", "namespace": "ns", "generateName": "e-blue-",
                          "labels": { "atrium.dev/owner-uid": "u-1", "app.kubernetes.io/component": "inference",
                                      "pod-template-hash": "abc" } },
            "spec": { "containers": [{ "name": "inference-server", "image": "x" }] },
            "status": { "phase": "Pending", "containerStatuses": [{
                "name": "inference-server", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": { "waiting": { "reason": "ImagePullBackOff", "message": "no such image" } } }] }
        }))
        .unwrap();
        let summary = PodSummary::of(&pod);
        assert_eq!((summary.name_any(), summary.namespace().as_deref()), ("e-blue-1".to_owned(), Some("ns")));
        let kept: Vec<&str> = summary.labels().keys().map(String::as_str).collect();
        assert_eq!(kept, ["app.kubernetes.io/component", "atrium.dev/owner-uid"]);
        assert_eq!(summary.failure.unwrap().reason.as_deref(), Some("ImagePullBackOff"));
    }
}
