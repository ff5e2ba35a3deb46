//! The Workspace's desired children, and the ClusterRoles its access entries bind: pure
//! functions of the Workspace and of what it refers to (no API calls), so they are tested as
//! plain unit tests.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        core::v1::{
            LimitRange, LimitRangeItem, LimitRangeSpec, LocalObjectReference, Namespace, PersistentVolumeClaim,
            PersistentVolumeClaimSpec, ResourceQuota, ResourceQuotaSpec, Secret, ServiceAccount,
            VolumeResourceRequirements,
        },
        networking::v1::{NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicySpec},
        rbac::v1::{ClusterRole, PolicyRule, RoleBinding, RoleRef, Subject},
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
};
use kube::{
    api::{ApiResource, DynamicObject},
    core::TypeMeta,
};
use serde_json::json;

use crate::{
    api::workspace::{AccessEntry, DeletionPolicy, SubjectKind, Workspace, WorkspaceRole},
    runtime::{
        labels::{self, child_labels, controller_ref},
        naming::child_name,
    },
};

/// The ServiceAccount training runs use.
pub const RUN_SERVICE_ACCOUNT: &str = "atrium-run";
/// The ServiceAccount inference endpoints use.
pub const INFERENCE_SERVICE_ACCOUNT: &str = "atrium-inference";
/// The claim Atrium creates for the workspace storage (unless `storage.existingClaim` is set).
pub const STORAGE_CLAIM: &str = "atrium-storage";
/// The copy of the registry pull Secret in the workspace namespace.
pub const PULL_SECRET: &str = "atrium-registry";
/// The ResourceQuota and the LimitRange made from `spec.quota`.
pub const QUOTA: &str = "atrium-workspace";
/// The PodMonitor made from `spec.monitoring` (when the Prometheus Operator is installed).
pub const POD_MONITOR: &str = "atrium-workspace";
/// NetworkPolicy: pods of the workspace accept traffic from the workspace namespace only.
pub const POLICY_SAME_NAMESPACE: &str = "atrium-same-namespace";
/// NetworkPolicy: endpoint routers accept traffic from anywhere.
pub const POLICY_ROUTERS: &str = "atrium-endpoint-routers";
/// NetworkPolicy: Prometheus (in any namespace) may scrape the workspace's pods.
pub const POLICY_PROMETHEUS: &str = "atrium-prometheus";

/// Namespace label set when `monitoring.prometheus` is on, for scrape configurations (and the
/// pod controllers) that select namespaces rather than PodMonitors.
pub const MONITORING_LABEL: &str = "atrium.dev/monitoring";

/// The ClusterRole bound for `Owner` entries.
pub const OWNER_ROLE: &str = "atrium-workspace-owner";
/// The ClusterRole bound for `Contributor` entries.
pub const CONTRIBUTOR_ROLE: &str = "atrium-workspace-contributor";
/// The ClusterRole bound for `Reader` entries.
pub const READER_ROLE: &str = "atrium-workspace-reader";

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
const DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
const DOCKER_CFG: &str = "kubernetes.io/dockercfg";

/// The Prometheus Operator's PodMonitor.
pub fn pod_monitor_resource() -> ApiResource {
    ApiResource {
        group: "monitoring.coreos.com".into(),
        version: "v1".into(),
        api_version: "monitoring.coreos.com/v1".into(),
        kind: "PodMonitor".into(),
        plural: "podmonitors".into(),
    }
}

/// The CustomResourceDefinition whose presence turns PodMonitors on.
pub const POD_MONITOR_CRD: &str = "podmonitors.monitoring.coreos.com";

/// What the registry pull Secret copy should be this round.
#[derive(Clone, Copy, Debug)]
pub enum Registry<'a> {
    /// No `spec.containerRegistry`: no copy, no `imagePullSecrets`.
    None,
    /// Copy this source Secret (found and of a pull-secret type).
    Copy(&'a Secret),
    /// The source is missing or unusable but a copy made earlier exists: keep it and keep it
    /// attached, so pulls that worked go on working (bad input deletes nothing).
    KeepCopy,
    /// The source is missing or unusable and there is no copy: nothing to attach.
    Unavailable,
}

/// What the desired children depend on besides the Workspace itself.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    pub registry: Registry<'a>,
    /// The cluster serves PodMonitors (the Prometheus Operator's CRD is installed).
    pub pod_monitors: bool,
}

/// Every child of a Workspace, as it should be. The namespace is applied first; the others live
/// in it.
#[derive(Clone, Debug)]
pub struct Children {
    pub namespace: Namespace,
    pub service_accounts: Vec<ServiceAccount>,
    pub pull_secret: Option<Secret>,
    pub role_bindings: Vec<RoleBinding>,
    pub resource_quota: Option<ResourceQuota>,
    pub limit_range: Option<LimitRange>,
    /// `None` with `storage.existingClaim`: that claim is the user's and is never written.
    pub claim: Option<PersistentVolumeClaim>,
    pub network_policies: Vec<NetworkPolicy>,
    pub pod_monitor: Option<DynamicObject>,
}

/// The name of the claim the workspace uses: `storage.existingClaim` or Atrium's own.
pub fn claim_name(ws: &Workspace) -> &str {
    ws.spec.storage.as_ref().and_then(|s| s.existing_claim.as_deref()).unwrap_or(STORAGE_CLAIM)
}

/// Whether a Secret can serve as an image pull secret.
pub fn is_pull_secret_type(secret: &Secret) -> bool {
    matches!(secret.type_.as_deref(), Some(DOCKER_CONFIG_JSON | DOCKER_CFG))
}

/// The ClusterRole an access role binds.
pub fn cluster_role_name(role: WorkspaceRole) -> &'static str {
    match role {
        WorkspaceRole::Owner => OWNER_ROLE,
        WorkspaceRole::Contributor => CONTRIBUTOR_ROLE,
        WorkspaceRole::Reader => READER_ROLE,
    }
}

/// The RoleBinding name of an access entry. The role is part of the name because a binding's
/// `roleRef` cannot change: a changed role is a new binding, and the old one is pruned.
pub fn binding_name(entry: &AccessEntry) -> String {
    let role = match entry.role {
        WorkspaceRole::Owner => "owner",
        WorkspaceRole::Contributor => "contributor",
        WorkspaceRole::Reader => "reader",
    };
    let kind = match entry.kind {
        SubjectKind::User => "user",
        SubjectKind::Group => "group",
        SubjectKind::ServiceAccount => "sa",
    };
    child_name(&["atrium", role, kind, entry.namespace.as_deref().unwrap_or(""), &entry.name])
}

/// The owner reference the children of `ws` carry: with `Delete`, the workspace controls them
/// and the garbage collector deletes them with it. With `Retain` there is none, so no deletion of
/// the workspace can take them — not even a foreground one (`kubectl delete --cascade=foreground`,
/// Argo CD's default pruning), which deletes every dependent an owner reference names. The
/// `atrium.dev/owner-uid` label says whose they are either way.
pub fn owner_references(ws: &Workspace) -> Option<Vec<OwnerReference>> {
    match ws.spec.deletion_policy {
        DeletionPolicy::Delete => controller_ref(ws, None).map(|r| vec![r]),
        DeletionPolicy::Retain => None,
    }
}

/// The desired children of `ws`, whose namespace is `namespace`.
pub fn desired_children(ws: &Workspace, namespace: &str, inputs: &Inputs) -> Children {
    let meta = |name: &str, component: &str| ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        labels: Some(child_labels(ws, component)),
        owner_references: owner_references(ws),
        ..Default::default()
    };
    let spec = &ws.spec;
    let prometheus = spec.monitoring.as_ref().is_some_and(|m| m.prometheus);

    let mut ns_labels = child_labels(ws, "namespace");
    if prometheus {
        ns_labels.insert(MONITORING_LABEL.into(), "prometheus".into());
    }
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(namespace.into()),
            labels: Some(ns_labels),
            owner_references: owner_references(ws),
            ..Default::default()
        },
        ..Default::default()
    };

    let pull_secret = match inputs.registry {
        Registry::Copy(source) => Some(Secret {
            metadata: meta(PULL_SECRET, "registry"),
            type_: source.type_.clone(),
            data: source.data.clone(),
            ..Default::default()
        }),
        _ => None,
    };
    let attached = matches!(inputs.registry, Registry::Copy(_) | Registry::KeepCopy);
    let service_accounts = [(RUN_SERVICE_ACCOUNT, "run"), (INFERENCE_SERVICE_ACCOUNT, "inference")]
        .into_iter()
        .map(|(name, component)| ServiceAccount {
            metadata: meta(name, component),
            image_pull_secrets: attached.then(|| vec![LocalObjectReference { name: PULL_SECRET.into() }]),
            ..Default::default()
        })
        .collect();

    // Keyed by name: the same entry listed twice is one binding.
    let role_bindings: BTreeMap<String, RoleBinding> = spec
        .access
        .iter()
        .map(|entry| {
            let name = binding_name(entry);
            let binding = RoleBinding {
                metadata: meta(&name, "access"),
                role_ref: RoleRef {
                    api_group: Some(RBAC_GROUP.into()),
                    kind: "ClusterRole".into(),
                    name: cluster_role_name(entry.role).into(),
                },
                subjects: Some(vec![subject(entry)]),
            };
            (name, binding)
        })
        .collect();

    let quota = spec.quota.as_ref();
    let resource_quota = quota.filter(|q| !q.hard.is_empty()).map(|q| ResourceQuota {
        metadata: meta(QUOTA, "quota"),
        spec: Some(ResourceQuotaSpec { hard: Some(q.hard.clone()), ..Default::default() }),
        ..Default::default()
    });
    let limit_range = quota
        .and_then(|q| q.default_container_resources.as_ref())
        .filter(|d| !(d.requests.is_empty() && d.limits.is_empty()))
        .map(|d| LimitRange {
            metadata: meta(QUOTA, "quota"),
            spec: Some(LimitRangeSpec {
                limits: vec![LimitRangeItem {
                    type_: "Container".into(),
                    default: (!d.limits.is_empty()).then(|| d.limits.clone()),
                    default_request: (!d.requests.is_empty()).then(|| d.requests.clone()),
                    ..Default::default()
                }],
            }),
        });

    let storage = spec.storage.clone().unwrap_or_default();
    let claim = storage.existing_claim.is_none().then(|| PersistentVolumeClaim {
        metadata: meta(STORAGE_CLAIM, "storage"),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(storage.effective_access_modes().iter().map(|m| m.as_str().to_owned()).collect()),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), storage.effective_size())])),
                ..Default::default()
            }),
            // Unset: the cluster's default class, filled in by the API server (and left its own).
            storage_class_name: storage.storage_class_name.clone(),
            ..Default::default()
        }),
        ..Default::default()
    });

    let mut network_policies = Vec::new();
    if spec.network_isolation {
        network_policies.push(ingress_policy(
            meta(POLICY_SAME_NAMESPACE, "network"),
            LabelSelector::default(),
            Some(vec![NetworkPolicyPeer { pod_selector: Some(LabelSelector::default()), ..Default::default() }]),
        ));
        network_policies.push(ingress_policy(
            meta(POLICY_ROUTERS, "network"),
            match_labels([(labels::COMPONENT, "router"), (labels::PART_OF, "atrium")]),
            None,
        ));
        if prometheus {
            network_policies.push(ingress_policy(
                meta(POLICY_PROMETHEUS, "network"),
                LabelSelector::default(),
                Some(vec![NetworkPolicyPeer {
                    namespace_selector: Some(LabelSelector::default()),
                    pod_selector: Some(match_labels([(labels::NAME, "prometheus")])),
                    ..Default::default()
                }]),
            ));
        }
    }

    let pod_monitor = (prometheus && inputs.pod_monitors).then(|| {
        let ar = pod_monitor_resource();
        DynamicObject {
            types: Some(TypeMeta { api_version: ar.api_version, kind: ar.kind }),
            metadata: meta(POD_MONITOR, "monitoring"),
            data: json!({
                "spec": {
                    "selector": { "matchLabels": { labels::PART_OF: "atrium" } },
                    "podMetricsEndpoints": [{ "port": "metrics", "path": "/metrics" }],
                }
            }),
        }
    });

    Children {
        namespace: ns,
        service_accounts,
        pull_secret,
        role_bindings: role_bindings.into_values().collect(),
        resource_quota,
        limit_range,
        claim,
        network_policies,
        pod_monitor,
    }
}

fn subject(entry: &AccessEntry) -> Subject {
    match entry.kind {
        SubjectKind::User | SubjectKind::Group => Subject {
            api_group: Some(RBAC_GROUP.into()),
            kind: if entry.kind == SubjectKind::User { "User" } else { "Group" }.into(),
            name: entry.name.clone(),
            namespace: None,
        },
        SubjectKind::ServiceAccount => Subject {
            api_group: None,
            kind: "ServiceAccount".into(),
            name: entry.name.clone(),
            namespace: entry.namespace.clone(),
        },
    }
}

fn match_labels<const N: usize>(pairs: [(&str, &str); N]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()),
        ..Default::default()
    }
}

/// An ingress policy for the pods `pods` selects: from `from` only, or from anywhere when `None`.
fn ingress_policy(metadata: ObjectMeta, pods: LabelSelector, from: Option<Vec<NetworkPolicyPeer>>) -> NetworkPolicy {
    NetworkPolicy {
        metadata,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(pods),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule { from, ports: None }]),
            ..Default::default()
        }),
    }
}

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"];

/// Atrium's namespaced kinds (cluster-scoped `Workspace` and `InstanceType` cannot be granted
/// by a RoleBinding).
const ATRIUM_KINDS: &[&str] = &["computeclusters", "trainingruns", "models", "modeldeployments"];

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.into()]),
        resources: Some(resources.iter().map(|r| (*r).into()).collect()),
        verbs: verbs.iter().map(|v| (*v).into()).collect(),
        ..Default::default()
    }
}

/// Read access to what the workspace's kinds become, and to pods and their logs.
fn reader_rules() -> Vec<PolicyRule> {
    let statuses: Vec<String> = ATRIUM_KINDS.iter().map(|k| format!("{k}/status")).collect();
    let statuses: Vec<&str> = statuses.iter().map(String::as_str).collect();
    vec![
        rule(crate::api::GROUP, ATRIUM_KINDS, READ),
        rule(crate::api::GROUP, &statuses, READ),
        rule(
            "",
            &[
                "pods",
                "pods/log",
                "services",
                "endpoints",
                "configmaps",
                "persistentvolumeclaims",
                "serviceaccounts",
                "events",
                "resourcequotas",
                "limitranges",
            ],
            READ,
        ),
        rule("apps", &["deployments", "replicasets"], READ),
        rule("batch", &["jobs"], READ),
        rule("autoscaling", &["horizontalpodautoscalers"], READ),
        rule("policy", &["poddisruptionbudgets"], READ),
        rule("networking.k8s.io", &["networkpolicies"], READ),
        rule("discovery.k8s.io", &["endpointslices"], READ),
        rule("events.k8s.io", &["events"], READ),
        rule("monitoring.coreos.com", &["podmonitors"], READ),
    ]
}

/// Reader, plus: create and change compute, runs, models and deployments; the ConfigMaps and
/// Secrets they use (code, credentials, endpoint keys); delete and port-forward pods.
fn contributor_rules() -> Vec<PolicyRule> {
    let mut rules = reader_rules();
    rules.extend([
        rule(crate::api::GROUP, ATRIUM_KINDS, WRITE),
        rule("", &["configmaps", "secrets"], WRITE),
        rule("", &["pods"], &["delete"]),
        rule("", &["pods/portforward"], &["get", "create"]),
    ]);
    rules
}

/// Contributor, plus: access (RoleBindings in the namespace — only to roles the owner holds, so
/// to Atrium's three), storage claims, and exec into pods.
fn owner_rules() -> Vec<PolicyRule> {
    let mut rules = contributor_rules();
    rules.extend([
        rule(RBAC_GROUP, &["rolebindings"], WRITE),
        rule("", &["persistentvolumeclaims"], WRITE),
        rule("", &["pods/exec", "pods/attach"], &["get", "create"]),
    ]);
    rules
}

/// Atrium's three workspace ClusterRoles, bound per access entry in each workspace namespace.
/// Installed with the operator: the Helm chart renders the same, and the Workspace controller
/// applies them at start-up (so `make run` needs no chart).
pub fn cluster_roles() -> Vec<ClusterRole> {
    let role = |name: &str, rules: Vec<PolicyRule>| ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([
                (labels::NAME.into(), "atrium".into()),
                (labels::COMPONENT.into(), "workspace-role".into()),
                (labels::PART_OF.into(), "atrium".into()),
                (labels::MANAGED_BY.into(), labels::MANAGER.into()),
            ])),
            ..Default::default()
        },
        rules: Some(rules),
        aggregation_rule: None,
    };
    vec![
        role(OWNER_ROLE, owner_rules()),
        role(CONTRIBUTOR_ROLE, contributor_rules()),
        role(READER_ROLE, reader_rules()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::workspace::{
        AccessMode, ContainerRegistry, DeletionPolicy, Monitoring, SecretReference, WorkspaceQuota, WorkspaceSpec,
        WorkspaceStorage,
    };
    use k8s_openapi::{ByteString, apimachinery::pkg::api::resource::Quantity};
    use kube::ResourceExt;

    fn workspace(spec: serde_json::Value) -> Workspace {
        let mut ws = Workspace::new("team-a", serde_json::from_value::<WorkspaceSpec>(spec).unwrap());
        ws.metadata.uid = Some("uid-1".into());
        ws
    }

    fn minimal() -> Inputs<'static> {
        Inputs { registry: Registry::None, pod_monitors: false }
    }

    #[test]
    fn a_minimal_workspace_is_a_namespace_two_service_accounts_and_a_10gi_claim() {
        let ws = workspace(json!({}));
        let c = desired_children(&ws, "team-a", &minimal());
        assert_eq!(c.namespace.metadata.name.as_deref(), Some("team-a"));
        assert_eq!(c.namespace.labels()[labels::OWNER_UID], "uid-1");
        assert!(c.namespace.metadata.owner_references.is_none(), "Retain (the default): no owner reference");
        assert!(!c.namespace.labels().contains_key(MONITORING_LABEL));
        let sas: Vec<_> = c.service_accounts.iter().map(|s| s.name_any()).collect();
        assert_eq!(sas, [RUN_SERVICE_ACCOUNT, INFERENCE_SERVICE_ACCOUNT]);
        assert!(c.service_accounts.iter().all(|s| s.image_pull_secrets.is_none()));
        let claim = c.claim.unwrap();
        let spec = claim.spec.unwrap();
        assert_eq!(spec.resources.unwrap().requests.unwrap()["storage"], Quantity("10Gi".into()));
        assert_eq!(spec.access_modes.unwrap(), ["ReadWriteOnce"]);
        assert!(spec.storage_class_name.is_none(), "the default class is the server's to fill in");
        assert!(c.role_bindings.is_empty() && c.resource_quota.is_none() && c.limit_range.is_none());
        assert!(c.pull_secret.is_none() && c.network_policies.is_empty() && c.pod_monitor.is_none());
    }

    #[test]
    fn every_child_is_labelled_and_owned_in_the_workspace_namespace() {
        for (policy, owned) in [("Delete", true), ("Retain", false)] {
            let ws = workspace(json!({
                "access": [{"kind": "User", "name": "alice", "role": "Reader"}],
                "quota": {"hard": {"pods": "10"}, "defaultContainerResources": {"requests": {"cpu": "100m"}}},
                "networkIsolation": true,
                "deletionPolicy": policy,
            }));
            let c = desired_children(&ws, "ns-x", &minimal());
            children_are_labelled(&c, owned);
        }
    }

    /// Every child is in the workspace namespace and labelled as the workspace's; with an owner
    /// reference to it if `owned`, with none otherwise.
    fn children_are_labelled(c: &Children, owned: bool) {
        let metas: Vec<&ObjectMeta> = std::iter::once(&c.namespace.metadata)
            .chain(c.service_accounts.iter().map(|o| &o.metadata))
            .chain(c.role_bindings.iter().map(|o| &o.metadata))
            .chain(c.resource_quota.iter().map(|o| &o.metadata))
            .chain(c.limit_range.iter().map(|o| &o.metadata))
            .chain(c.claim.iter().map(|o| &o.metadata))
            .chain(c.network_policies.iter().map(|o| &o.metadata))
            .collect();
        assert_eq!(metas.len(), 1 + 2 + 1 + 1 + 1 + 1 + 2);
        for m in metas {
            if m.name.as_deref() != Some("ns-x") {
                assert_eq!(m.namespace.as_deref(), Some("ns-x"));
            }
            assert_eq!(m.labels.as_ref().unwrap()[labels::OWNER_UID], "uid-1");
            assert_eq!(m.labels.as_ref().unwrap()[labels::MANAGED_BY], "atrium");
            match &m.owner_references {
                Some(refs) => {
                    assert!(owned, "{:?} has an owner reference under Retain", m.name);
                    assert_eq!((refs.len(), refs[0].uid.as_str(), refs[0].controller), (1, "uid-1", Some(true)));
                }
                None => assert!(!owned, "{:?} has no owner reference under Delete", m.name),
            }
        }
    }

    #[test]
    fn access_entries_bind_atrium_roles_one_binding_per_entry() {
        let ws = workspace(json!({"access": [
            {"kind": "User", "name": "alice@example.com", "role": "Reader"},
            {"kind": "Group", "name": "ml-team", "role": "Contributor"},
            {"kind": "ServiceAccount", "name": "ci", "namespace": "tools", "role": "Owner"},
            {"kind": "User", "name": "alice@example.com", "role": "Reader"},
        ]}));
        let c = desired_children(&ws, "team-a", &minimal());
        assert_eq!(c.role_bindings.len(), 3, "a repeated entry is one binding");
        let by_role: BTreeMap<&str, &RoleBinding> =
            c.role_bindings.iter().map(|b| (b.role_ref.name.as_str(), b)).collect();
        let reader = by_role[READER_ROLE].subjects.as_ref().unwrap();
        assert_eq!((reader[0].kind.as_str(), reader[0].name.as_str()), ("User", "alice@example.com"));
        assert_eq!(reader[0].api_group.as_deref(), Some(RBAC_GROUP));
        let owner = by_role[OWNER_ROLE].subjects.as_ref().unwrap();
        assert_eq!((owner[0].kind.as_str(), owner[0].namespace.as_deref()), ("ServiceAccount", Some("tools")));
        assert_eq!(by_role[CONTRIBUTOR_ROLE].subjects.as_ref().unwrap()[0].kind, "Group");
        for b in &c.role_bindings {
            assert_eq!(b.role_ref.kind, "ClusterRole");
            let name = b.name_any();
            assert!(name.len() <= 63 && name.starts_with("atrium-"), "{name}");
        }
    }

    #[test]
    fn a_changed_role_is_a_new_binding_name() {
        let entry = |role| AccessEntry { kind: SubjectKind::User, name: "bob".into(), namespace: None, role };
        assert_eq!(binding_name(&entry(WorkspaceRole::Reader)), "atrium-reader-user-bob");
        assert_ne!(binding_name(&entry(WorkspaceRole::Reader)), binding_name(&entry(WorkspaceRole::Owner)));
        // Names that sanitize alike stay distinct.
        let a = AccessEntry { name: "bob.smith".into(), ..entry(WorkspaceRole::Reader) };
        let b = AccessEntry { name: "bob-smith".into(), ..entry(WorkspaceRole::Reader) };
        assert_ne!(binding_name(&a), binding_name(&b));
    }

    #[test]
    fn quota_becomes_a_resource_quota_and_a_limit_range() {
        let ws = workspace(json!({"quota": {
            "hard": {"requests.cpu": "16", "pods": 50},
            "defaultContainerResources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        }}));
        let c = desired_children(&ws, "team-a", &minimal());
        let hard = c.resource_quota.unwrap().spec.unwrap().hard.unwrap();
        assert_eq!(hard["requests.cpu"], Quantity("16".into()));
        assert_eq!(hard["pods"], Quantity("50".into()));
        let item = &c.limit_range.unwrap().spec.unwrap().limits[0];
        assert_eq!(item.type_, "Container");
        assert_eq!(item.default.as_ref().unwrap()["memory"], Quantity("1Gi".into()));
        assert_eq!(item.default_request.as_ref().unwrap()["cpu"], Quantity("250m".into()));

        // Only defaults: no ResourceQuota. Only hard limits: no LimitRange.
        let only_defaults = workspace(json!({"quota": {"defaultContainerResources": {"limits": {"cpu": "1"}}}}));
        let c = desired_children(&only_defaults, "team-a", &minimal());
        assert!(c.resource_quota.is_none());
        assert!(c.limit_range.unwrap().spec.unwrap().limits[0].default_request.is_none());
        let only_hard = workspace(json!({"quota": {"hard": {"pods": "5"}}}));
        assert!(desired_children(&only_hard, "team-a", &minimal()).limit_range.is_none());
    }

    #[test]
    fn storage_claim_follows_the_spec_and_an_existing_claim_is_never_written() {
        let ws = Workspace {
            spec: WorkspaceSpec {
                storage: Some(WorkspaceStorage {
                    size: Some(Quantity("50Gi".into())),
                    storage_class_name: Some("fast".into()),
                    access_modes: vec![AccessMode::ReadWriteMany],
                    existing_claim: None,
                }),
                ..Default::default()
            },
            ..workspace(json!({}))
        };
        let spec = desired_children(&ws, "team-a", &minimal()).claim.unwrap().spec.unwrap();
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(spec.access_modes.unwrap(), ["ReadWriteMany"]);
        assert_eq!(claim_name(&ws), STORAGE_CLAIM);

        let existing = workspace(json!({"storage": {"existingClaim": "team-data"}}));
        assert!(desired_children(&existing, "team-a", &minimal()).claim.is_none());
        assert_eq!(claim_name(&existing), "team-data");
    }

    #[test]
    fn the_registry_secret_is_copied_and_attached_to_both_service_accounts() {
        let ws = Workspace {
            spec: WorkspaceSpec {
                container_registry: Some(ContainerRegistry {
                    server: "registry.example.com".into(),
                    pull_secret: SecretReference { namespace: "infra".into(), name: "acr".into() },
                }),
                deletion_policy: DeletionPolicy::Retain,
                ..Default::default()
            },
            ..workspace(json!({}))
        };
        let source = Secret {
            metadata: ObjectMeta {
                name: Some("acr".into()),
                namespace: Some("infra".into()),
                labels: Some(BTreeMap::from([("team".into(), "infra".into())])),
                ..Default::default()
            },
            type_: Some(DOCKER_CONFIG_JSON.into()),
            data: Some(BTreeMap::from([(".dockerconfigjson".into(), ByteString(b"{}".to_vec()))])),
            ..Default::default()
        };
        assert!(is_pull_secret_type(&source));
        let inputs = Inputs { registry: Registry::Copy(&source), pod_monitors: false };
        let c = desired_children(&ws, "team-a", &inputs);
        let copy = c.pull_secret.unwrap();
        assert_eq!(copy.name_any(), PULL_SECRET);
        assert_eq!(copy.namespace().as_deref(), Some("team-a"));
        assert_eq!(copy.data, source.data);
        assert_eq!(copy.type_, source.type_);
        assert!(!copy.labels().contains_key("team"), "the source's own labels are not copied");
        for sa in &c.service_accounts {
            assert_eq!(sa.image_pull_secrets.as_ref().unwrap()[0].name, PULL_SECRET);
        }

        // A vanished source: the earlier copy stays attached, and is not re-written.
        let kept = desired_children(&ws, "team-a", &Inputs { registry: Registry::KeepCopy, pod_monitors: false });
        assert!(kept.pull_secret.is_none());
        assert!(kept.service_accounts.iter().all(|s| s.image_pull_secrets.is_some()));
        let none = desired_children(&ws, "team-a", &Inputs { registry: Registry::Unavailable, pod_monitors: false });
        assert!(none.service_accounts.iter().all(|s| s.image_pull_secrets.is_none()));
    }

    #[test]
    fn isolation_and_monitoring_become_policies_a_label_and_a_pod_monitor() {
        let mut ws = workspace(json!({"networkIsolation": true}));
        let c = desired_children(&ws, "team-a", &minimal());
        let names: Vec<_> = c.network_policies.iter().map(|p| p.name_any()).collect();
        assert_eq!(names, [POLICY_SAME_NAMESPACE, POLICY_ROUTERS]);
        let same_ns = c.network_policies[0].spec.as_ref().unwrap();
        assert_eq!(same_ns.pod_selector, Some(LabelSelector::default()), "every pod of the workspace");
        let from = same_ns.ingress.as_ref().unwrap()[0].from.as_ref().unwrap();
        assert!(from[0].namespace_selector.is_none(), "only pods of the same namespace");
        let routers = c.network_policies[1].spec.as_ref().unwrap();
        assert!(routers.ingress.as_ref().unwrap()[0].from.is_none(), "routers accept traffic from anywhere");

        ws.spec.monitoring = Some(Monitoring { prometheus: true });
        let without_crd = desired_children(&ws, "team-a", &minimal());
        assert_eq!(without_crd.namespace.labels()[MONITORING_LABEL], "prometheus");
        assert_eq!(without_crd.network_policies.len(), 3);
        assert!(without_crd.pod_monitor.is_none());
        let with_crd = desired_children(&ws, "team-a", &Inputs { registry: Registry::None, pod_monitors: true });
        let pm = with_crd.pod_monitor.unwrap();
        assert_eq!(pm.types.as_ref().unwrap().kind, "PodMonitor");
        assert_eq!(pm.data["spec"]["podMetricsEndpoints"][0]["port"], "metrics");
    }

    #[test]
    fn a_quota_of_nothing_is_no_quota() {
        let ws = Workspace {
            spec: WorkspaceSpec { quota: Some(WorkspaceQuota::default()), ..Default::default() },
            ..workspace(json!({}))
        };
        let c = desired_children(&ws, "team-a", &minimal());
        assert!(c.resource_quota.is_none() && c.limit_range.is_none());
    }

    #[test]
    fn the_reader_only_reads_and_each_role_includes_the_one_below() {
        let roles = cluster_roles();
        let names: Vec<_> = roles.iter().map(|r| r.name_any()).collect();
        assert_eq!(names, [OWNER_ROLE, CONTRIBUTOR_ROLE, READER_ROLE]);
        let rules = |i: usize| roles[i].rules.clone().unwrap();
        for r in rules(2) {
            assert!(r.verbs.iter().all(|v| READ.contains(&v.as_str())), "reader writes: {r:?}");
            assert!(!r.resources.unwrap().contains(&"secrets".to_string()), "reader reads secrets");
        }
        let (owner, contributor, reader) = (rules(0), rules(1), rules(2));
        assert!(reader.iter().all(|r| contributor.contains(r)));
        assert!(contributor.iter().all(|r| owner.contains(r)));
        let grants = |rules: &[PolicyRule], resource: &str, verb: &str| {
            rules.iter().any(|r| {
                r.resources.as_ref().unwrap().iter().any(|x| x == resource) && r.verbs.iter().any(|v| v == verb)
            })
        };
        assert!(grants(&contributor, "trainingruns", "create"));
        assert!(!grants(&contributor, "rolebindings", "create"));
        assert!(grants(&owner, "rolebindings", "create"));
        assert!(grants(&reader, "pods/log", "get"));
    }
}
