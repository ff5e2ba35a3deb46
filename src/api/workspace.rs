//! `Workspace`: the top-level home of a team's machine learning (cluster-scoped, short name `ws`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    Condition, ContainerResources, DNS_LABEL_MESSAGE, DNS_LABEL_RULE, MAX_QUANTITY_LENGTH, MAX_RESOURCE_NAMES,
    QUANTITY_MAP_MESSAGE, QUANTITY_MAP_RULE,
};

/// Condition type: the workspace namespace exists, is owned by this workspace and carries its
/// labels and ServiceAccounts.
pub const NAMESPACE_READY: &str = "NamespaceReady";
/// Condition type: every `spec.access` entry is bound and no other binding remains.
pub const ACCESS_READY: &str = "AccessReady";
/// Condition type: the ResourceQuota and LimitRange match `spec.quota`.
pub const QUOTA_READY: &str = "QuotaReady";
/// Condition type: the storage claim is bound.
pub const STORAGE_READY: &str = "StorageReady";
/// Reason: another, older workspace has the same display name ignoring case.
pub const REASON_NAME_CONFLICT: &str = "NameConflict";
/// Reason: the namespace exists and is not owned by this workspace.
pub const REASON_NAMESPACE_CONFLICT: &str = "NamespaceConflict";

/// Storage size used when `spec.storage.size` is not given.
pub const DEFAULT_STORAGE_SIZE: &str = "10Gi";

/// The desired state of a Workspace: its namespace, access roles, quota, default storage,
/// registry credentials and network isolation.
// clippy reads the `type_ = ...` of several printcolumn(...) lists as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "atrium.dev",
    version = "v1alpha1",
    kind = "Workspace",
    status = "WorkspaceStatus",
    shortname = "ws",
    category = "atrium",
    derive = "PartialEq",
    derive = "Default",
    doc = "A Workspace is the top-level home of a team's machine learning, like an Azure ML workspace: \
           a namespace with its access roles, quotas, default storage and registry credentials. \
           Compute clusters, training runs, models and model deployments are created in the workspace namespace.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "Whether the workspace is ready"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#,
        description = "Why the workspace is or is not ready",
        priority = 1
    ),
    printcolumn(
        name = "Namespace",
        type_ = "string",
        json_path = ".status.namespace",
        description = "The namespace the workspace owns"
    ),
    printcolumn(
        name = "Display Name",
        type_ = "string",
        json_path = ".spec.displayName",
        description = "The workspace's display name",
        priority = 1
    ),
    printcolumn(
        name = "Storage",
        type_ = "string",
        json_path = ".status.storage.phase",
        description = "Phase of the workspace storage claim",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(
        "has(self.spec.__namespace__) || (size(self.metadata.name) <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))"
    ).message(
        "metadata.name cannot be used as the namespace name (a DNS label of at most 63 characters): set spec.namespace"
    ).field_path(".spec.namespace"),
    validation = Rule::new(
        "(has(self.spec.__namespace__) ? self.spec.__namespace__ : self.metadata.name) == (has(oldSelf.spec.__namespace__) ? oldSelf.spec.__namespace__ : oldSelf.metadata.name)"
    ).message(
        "spec.namespace cannot be changed: a workspace keeps the namespace it was created with; create a new Workspace for another namespace"
    ).field_path(".spec.namespace")
)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceSpec {
    /// The name people see, case preserved, 1 to 64 characters. Defaults to `metadata.name`.
    /// Workspace names are case-insensitive: when two workspaces have display names that are
    /// equal ignoring case, the younger one is not Ready (reason `NameConflict`) and does nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub display_name: Option<String>,

    /// A free-text description of the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,

    /// Free-form key/value tags, as in Azure ML.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,

    /// The namespace the workspace owns; defaults to `metadata.name`. Cannot be changed after
    /// creation. An existing namespace that this workspace does not own is a conflict (reason
    /// `NamespaceConflict`) unless `adoptNamespace` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(DNS_LABEL_RULE).message(DNS_LABEL_MESSAGE))]
    pub namespace: Option<String>,

    /// Take ownership of the namespace when it already exists and is not owned by this workspace.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopt_namespace: bool,

    /// Who may use the workspace and with which role. Each entry becomes a RoleBinding to one of
    /// Atrium's ClusterRoles in the workspace namespace; removing an entry revokes it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub access: Vec<AccessEntry>,

    /// Resource quota for the workspace namespace, applied as a ResourceQuota and a LimitRange.
    /// Removing it removes both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<WorkspaceQuota>,

    /// The workspace's default datastore, a PersistentVolumeClaim in the workspace namespace.
    /// Training runs write their outputs under `runs/<run>/` and models are read from it. When
    /// omitted, a 10Gi claim of the cluster's default storage class is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<WorkspaceStorage>,

    /// A container registry whose pull secret is copied into the workspace namespace, kept in
    /// sync, and attached to the workspace ServiceAccounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_registry: Option<ContainerRegistry>,

    /// Metrics collection for the workspace's training runs and endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<Monitoring>,

    /// When true, NetworkPolicies refuse traffic from other namespaces, except to endpoint routers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub network_isolation: bool,

    /// What deleting the Workspace does to its namespace: `Retain` (the default) keeps the
    /// namespace and its data, with owner references removed; `Delete` deletes the namespace
    /// and everything in it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

impl WorkspaceSpec {
    /// The display name in effect: `spec.displayName`, or the object's name.
    pub fn effective_display_name<'a>(&'a self, name: &'a str) -> &'a str {
        self.display_name.as_deref().unwrap_or(name)
    }

    /// The namespace in effect: `spec.namespace`, or the object's name.
    pub fn effective_namespace<'a>(&'a self, name: &'a str) -> &'a str {
        self.namespace.as_deref().unwrap_or(name)
    }
}

/// One subject's role in the workspace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "self.kind == 'ServiceAccount' ? has(self.__namespace__) : !has(self.__namespace__)"
).message("namespace is required when kind is ServiceAccount, and only allowed then"))]
pub struct AccessEntry {
    /// The kind of subject: `User`, `Group` or `ServiceAccount`.
    pub kind: SubjectKind,

    /// The name of the user, group or ServiceAccount, as the cluster's authentication knows it.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,

    /// The ServiceAccount's namespace. Required for ServiceAccounts, not allowed otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,

    /// The role granted in the workspace: `Owner` (everything, including access), `Contributor`
    /// (create and change compute, runs, models and deployments) or `Reader` (view only).
    pub role: WorkspaceRole,
}

/// The kind of subject an access entry grants a role to.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubjectKind {
    /// A user, as named by the cluster's authentication.
    User,
    /// A group, as named by the cluster's authentication.
    Group,
    /// A Kubernetes ServiceAccount.
    ServiceAccount,
}

/// A workspace role, bound to one of Atrium's ClusterRoles.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkspaceRole {
    /// Full control of the workspace, including access.
    Owner,
    /// Create and change compute, runs, models and deployments.
    Contributor,
    /// Read-only access.
    Reader,
}

/// Resource quota for the workspace namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceQuota {
    /// Hard limits for the namespace, by ResourceQuota resource name, for example
    /// `requests.cpu: "16"`, `requests.nvidia.com/gpu: 2` or `pods: 50`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = MAX_RESOURCE_NAMES,
        "additionalProperties" = {"x-kubernetes-int-or-string": true, "maxLength": MAX_QUANTITY_LENGTH},
    ))]
    #[x_kube(validation = Rule::new(QUANTITY_MAP_RULE).message(QUANTITY_MAP_MESSAGE))]
    pub hard: BTreeMap<String, Quantity>,

    /// Requests and limits given to containers in the namespace that do not set their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_container_resources: Option<ContainerResources>,
}

/// The workspace's default datastore: a new claim (`size`, `storageClassName`, `accessModes`)
/// or an existing one (`existingClaim`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.existingClaim) || !(has(self.size) || has(self.storageClassName) || has(self.accessModes))"
).message("existingClaim uses a claim you manage: size, storageClassName and accessModes cannot be set with it")
.field_path(".existingClaim"))]
pub struct WorkspaceStorage {
    /// Size of the claim to create. Defaults to 10Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxLength" = MAX_QUANTITY_LENGTH))]
    #[x_kube(validation = Rule::new(
        "isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))"
    ).message("must be a positive quantity, such as 10Gi"))]
    pub size: Option<Quantity>,

    /// Storage class of the claim to create. Defaults to the cluster's default storage class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,

    /// Access modes of the claim to create. Defaults to `ReadWriteOnce`; use `ReadWriteMany`
    /// when runs and endpoints on several nodes share the storage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 4))]
    pub access_modes: Vec<AccessMode>,

    /// Name of an existing PersistentVolumeClaim in the workspace namespace to use instead of
    /// creating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub existing_claim: Option<String>,
}

impl WorkspaceStorage {
    /// The size in effect for a claim Atrium creates.
    pub fn effective_size(&self) -> Quantity {
        self.size.clone().unwrap_or_else(|| Quantity(DEFAULT_STORAGE_SIZE.to_owned()))
    }

    /// The access modes in effect for a claim Atrium creates.
    pub fn effective_access_modes(&self) -> Vec<AccessMode> {
        if self.access_modes.is_empty() { vec![AccessMode::ReadWriteOnce] } else { self.access_modes.clone() }
    }
}

/// A PersistentVolumeClaim access mode.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessMode {
    /// Read-write by a single node.
    ReadWriteOnce,
    /// Read-only by many nodes.
    ReadOnlyMany,
    /// Read-write by many nodes.
    ReadWriteMany,
    /// Read-write by a single pod.
    ReadWriteOncePod,
}

impl AccessMode {
    /// The Kubernetes spelling, as used in a PersistentVolumeClaim.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadWriteOnce => "ReadWriteOnce",
            Self::ReadOnlyMany => "ReadOnlyMany",
            Self::ReadWriteMany => "ReadWriteMany",
            Self::ReadWriteOncePod => "ReadWriteOncePod",
        }
    }
}

/// A container registry and the credentials to pull from it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRegistry {
    /// The registry host, for example `myregistry.azurecr.io`.
    #[schemars(length(min = 1, max = 253))]
    pub server: String,

    /// The image pull Secret (type `kubernetes.io/dockerconfigjson`) to copy into the workspace
    /// namespace.
    pub pull_secret: SecretReference,
}

/// A Secret in a given namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// The Secret's namespace.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,

    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Metrics collection settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Monitoring {
    /// Have Prometheus scrape the workspace's runs and endpoints (a PodMonitor when the
    /// Prometheus Operator is installed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prometheus: bool,
}

/// What deleting a Workspace does to its namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DeletionPolicy {
    /// Keep the namespace and its data; owner references are removed.
    #[default]
    Retain,
    /// Delete the namespace and everything in it.
    Delete,
}

/// The observed state of a Workspace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The workspace's conditions: `Ready`, `NamespaceReady`, `AccessReady`, `QuotaReady` and
    /// `StorageReady`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The namespace the workspace owns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,

    /// The workspace's default datastore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<WorkspaceStorageStatus>,
}

/// The observed state of the workspace's default datastore.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceStorageStatus {
    /// The name of the PersistentVolumeClaim in the workspace namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_name: Option<String>,

    /// The claim's phase: `Pending`, `Bound` or `Lost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,

    /// The capacity of the bound volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Quantity>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn minimal_spec_round_trips_without_empty_fields() {
        let spec: WorkspaceSpec = serde_json::from_value(json!({})).unwrap();
        assert_eq!(spec.deletion_policy, DeletionPolicy::Retain);
        assert_eq!(serde_json::to_value(&spec).unwrap(), json!({"deletionPolicy": "Retain"}));
    }

    #[test]
    fn effective_defaults() {
        let spec = WorkspaceSpec::default();
        assert_eq!(spec.effective_namespace("team-a"), "team-a");
        assert_eq!(spec.effective_display_name("team-a"), "team-a");
        let storage = WorkspaceStorage::default();
        assert_eq!(storage.effective_size(), Quantity("10Gi".into()));
        assert_eq!(storage.effective_access_modes(), [AccessMode::ReadWriteOnce]);
    }

    #[test]
    fn access_entry_uses_design_spelling() {
        let entry: AccessEntry = serde_json::from_value(json!({
            "kind": "ServiceAccount", "name": "ci", "namespace": "tools", "role": "Contributor"
        }))
        .unwrap();
        assert_eq!(entry.kind, SubjectKind::ServiceAccount);
        assert_eq!(entry.role, WorkspaceRole::Contributor);
    }
}
