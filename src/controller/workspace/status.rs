//! The Workspace's conditions and status: pure functions of what the reconcile saw of the live
//! children (and of the other workspaces, for name conflicts). Nothing is remembered between
//! reconciles; an unchanged world gives an equal status, so its write is skipped.

use k8s_openapi::apimachinery::pkg::{
    api::resource::Quantity,
    apis::meta::v1::{ObjectMeta, Time},
};
use kube::ResourceExt;

use crate::{
    api::workspace::{
        ACCESS_READY, NAMESPACE_READY, QUOTA_READY, REASON_NAME_CONFLICT, REASON_NAMESPACE_CONFLICT, STORAGE_READY,
        Workspace, WorkspaceStatus, WorkspaceStorageStatus,
    },
    runtime::{
        conditions::{Cond, READY, merge},
        labels::{OWNER_KIND, OWNER_UID},
    },
};

/// Reason: the namespace is being deleted; the workspace waits until it is gone and creates it again.
pub const REASON_NAMESPACE_TERMINATING: &str = "NamespaceTerminating";
/// Reason: the registry pull Secret named in `spec.containerRegistry` does not exist.
pub const REASON_PULL_SECRET_NOT_FOUND: &str = "PullSecretNotFound";
/// Reason: the registry pull Secret is not an image pull secret.
pub const REASON_PULL_SECRET_INVALID: &str = "PullSecretInvalid";
/// Reason: `storage.existingClaim` names a claim that does not exist.
pub const REASON_CLAIM_NOT_FOUND: &str = "ClaimNotFound";
/// Reason: the claim lost its volume.
pub const REASON_CLAIM_LOST: &str = "ClaimLost";
/// Reason: the claim is being deleted.
pub const REASON_CLAIM_TERMINATING: &str = "ClaimTerminating";
/// Reason: the API server refused the change to the claim (most of a claim cannot change).
pub const REASON_CLAIM_NOT_UPDATABLE: &str = "ClaimNotUpdatable";

/// Namespaces a workspace never takes: deleting the workspace with `deletionPolicy: Delete`
/// would delete them.
const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// The workspace namespace as the workspace sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceState {
    /// Not there: it is created.
    Absent,
    /// There, labelled as this workspace's (or with its owner reference).
    Owned,
    /// There, owned by no one, and `adoptNamespace` is true: it is taken over.
    Adoptable,
    /// Being deleted: nothing is written until it is gone.
    Terminating,
    /// Someone else's: nothing in it is touched. The message says whose and what to do.
    Conflict(String),
}

impl NamespaceState {
    /// Whether the workspace may write into the namespace.
    pub fn writable(&self) -> bool {
        matches!(self, Self::Absent | Self::Owned | Self::Adoptable)
    }
}

/// Decides what the workspace may do with its namespace, `live` being the namespace's metadata and
/// `workspaces` every workspace there is. A namespace is a workspace's when it carries the
/// workspace's `atrium.dev/owner-uid` label (with `Retain` it has no owner reference) or its owner
/// reference; it is another's while that other workspace exists. A namespace left behind by a
/// deleted `Retain` workspace is no one's: it can be adopted.
pub fn namespace_state<'a>(
    ws: &Workspace,
    namespace: &str,
    live: Option<&ObjectMeta>,
    workspaces: impl IntoIterator<Item = &'a Workspace>,
) -> NamespaceState {
    let uid = ws.uid().unwrap_or_default();
    if SYSTEM_NAMESPACES.contains(&namespace) {
        return NamespaceState::Conflict(format!(
            "namespace {namespace} is a system namespace and cannot belong to a workspace: set spec.namespace to another namespace"
        ));
    }
    let Some(live) = live else { return NamespaceState::Absent };
    if live.deletion_timestamp.is_some() {
        return NamespaceState::Terminating;
    }
    let owners = live.owner_references.as_deref().unwrap_or_default();
    let labels = live.labels.as_ref();
    let labelled_for = labels
        .filter(|l| l.get(OWNER_KIND).is_some_and(|k| k == "workspace"))
        .and_then(|l| l.get(OWNER_UID))
        .filter(|u| !u.is_empty());
    if labelled_for.is_some_and(|u| *u == uid) || owners.iter().any(|o| o.uid == uid) {
        return NamespaceState::Owned;
    }
    let belongs = |kind: &str, name: &str| {
        NamespaceState::Conflict(format!(
            "namespace {namespace} belongs to {kind} {name}; a namespace can belong to one workspace only"
        ))
    };
    if let Some(controller) = owners.iter().find(|o| o.controller == Some(true)) {
        return belongs(&controller.kind, &controller.name);
    }
    if let Some(other) = labelled_for.and_then(|u| workspaces.into_iter().find(|w| w.uid().as_ref() == Some(u))) {
        return belongs("Workspace", &other.name_any());
    }
    if ws.spec.adopt_namespace {
        NamespaceState::Adoptable
    } else {
        NamespaceState::Conflict(format!(
            "namespace {namespace} already exists and does not belong to this workspace: set spec.adoptNamespace: true to take it over, or delete it"
        ))
    }
}

/// The display name as compared between workspaces: without case.
pub fn display_key(ws: &Workspace) -> String {
    ws.spec.effective_display_name(&ws.name_any()).to_lowercase()
}

/// Whether `ws` currently reports a name conflict.
pub fn in_name_conflict(ws: &Workspace) -> bool {
    ws.status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == READY && c.reason == REASON_NAME_CONFLICT))
}

/// The oldest other workspace whose display name equals `ws`'s ignoring case, when it is older
/// than `ws` (then `ws` is the younger and in conflict). Age is the creation time, then the name
/// (creation times have one-second resolution).
pub fn older_namesake<'a>(ws: &Workspace, all: impl IntoIterator<Item = &'a Workspace>) -> Option<&'a Workspace> {
    let key = display_key(ws);
    let age = |w: &Workspace| (w.creation_timestamp().map(|t| t.0), w.name_any());
    let mine = age(ws);
    all.into_iter()
        .filter(|other| other.name_any() != ws.name_any() && display_key(other) == key)
        .filter(|other| age(other) < mine)
        .min_by_key(|other| age(other))
}

/// Reason: the API server refused a child as built from the spec (an invalid quota resource
/// name, say); the message is the API server's.
pub const REASON_REJECTED: &str = "Rejected";

/// The registry pull Secret as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryObserved {
    NotConfigured,
    Synced { source: String },
    SourceMissing { source: String, kept_copy: bool },
    SourceInvalid { source: String, reason: String, kept_copy: bool },
}

/// The workspace's claim as found.
#[derive(Clone, Debug, PartialEq)]
pub enum ClaimObserved {
    Missing,
    Present { phase: Option<String>, capacity: Option<Quantity>, deleting: bool },
}

#[derive(Clone, Debug, PartialEq)]
pub struct StorageObserved {
    pub claim_name: String,
    /// `storage.existingClaim`: the user's claim, only read.
    pub existing: bool,
    pub claim: ClaimObserved,
    /// The API server refused the claim Atrium applied, with its message.
    pub rejected: Option<String>,
}

/// Everything the conditions of a workspace that owns its namespace are computed from: the live
/// namespace, source Secret and claim, and the API server's answers to this round's writes.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub namespace: String,
    pub registry: RegistryObserved,
    /// Refusals of the ServiceAccounts, pull secret copy, NetworkPolicies or PodMonitor.
    pub namespace_rejected: Vec<String>,
    pub access_bindings: usize,
    pub access_rejected: Vec<String>,
    /// What the quota became, e.g. `["ResourceQuota", "LimitRange"]`; empty without `spec.quota`.
    pub quota_objects: Vec<&'static str>,
    pub quota_rejected: Vec<String>,
    pub storage: StorageObserved,
}

/// The conditions of a workspace that owns its namespace: `Ready` first, then `NamespaceReady`,
/// `AccessReady`, `QuotaReady`, `StorageReady`.
pub fn conditions(o: &Observed) -> Vec<Cond> {
    let ns = &o.namespace;
    let namespace = match &o.registry {
        _ if !o.namespace_rejected.is_empty() => rejected(NAMESPACE_READY, &o.namespace_rejected),
        RegistryObserved::SourceMissing { source, kept_copy } => Cond::fail(
            NAMESPACE_READY,
            REASON_PULL_SECRET_NOT_FOUND,
            format!("the registry pull Secret {source} does not exist{}", kept_note(*kept_copy)),
        ),
        RegistryObserved::SourceInvalid { source, reason, kept_copy } => Cond::fail(
            NAMESPACE_READY,
            REASON_PULL_SECRET_INVALID,
            format!("the registry pull Secret {source} {reason}{}", kept_note(*kept_copy)),
        ),
        registry => {
            let pull = match registry {
                RegistryObserved::Synced { source } => format!(", pulling images with a copy of {source}"),
                _ => String::new(),
            };
            Cond::ok(
                NAMESPACE_READY,
                "NamespaceReady",
                format!(
                    "namespace {ns} belongs to the workspace, with ServiceAccounts atrium-run and atrium-inference{pull}"
                ),
            )
        }
    };
    let access = if !o.access_rejected.is_empty() {
        rejected(ACCESS_READY, &o.access_rejected)
    } else {
        let message = match o.access_bindings {
            0 => "no access entries: only cluster administrators can use the workspace".to_owned(),
            1 => "1 access entry bound".to_owned(),
            n => format!("{n} access entries bound"),
        };
        Cond::ok(ACCESS_READY, "Bound", message)
    };
    let quota = if !o.quota_rejected.is_empty() {
        rejected(QUOTA_READY, &o.quota_rejected)
    } else if o.quota_objects.is_empty() {
        Cond::ok(QUOTA_READY, "NoQuota", "no quota: the namespace is not limited")
    } else {
        Cond::ok(QUOTA_READY, "Applied", format!("{} applied", o.quota_objects.join(" and ")))
    };
    let storage = storage_condition(&o.storage, ns);
    let parts = [namespace, access, quota, storage];
    let ready = match parts.iter().find(|c| !c.status) {
        Some(failing) => Cond::fail(READY, &failing.reason, failing.message.clone()),
        None => {
            let pending =
                matches!(&o.storage.claim, ClaimObserved::Present { phase, .. } if phase.as_deref() != Some("Bound"));
            let note = if pending {
                format!("; storage claim {} is Pending until a volume is provisioned for it", o.storage.claim_name)
            } else {
                String::new()
            };
            Cond::ok(READY, "Ready", format!("workspace is ready in namespace {ns}{note}"))
        }
    };
    std::iter::once(ready).chain(parts).collect()
}

fn rejected(type_: &str, messages: &[String]) -> Cond {
    Cond::fail(type_, REASON_REJECTED, format!("the API server refused: {}", messages.join("; ")))
}

fn kept_note(kept: bool) -> &'static str {
    if kept { "; the copy made earlier is kept and still attached" } else { "" }
}

/// `StorageReady`. A `Pending` claim is ready: with a `WaitForFirstConsumer` storage class a
/// claim binds only when the first pod uses it, and runs and endpoints are what use it. A lost,
/// missing, terminating or refused claim is not.
fn storage_condition(s: &StorageObserved, ns: &str) -> Cond {
    let claim = &s.claim_name;
    if let Some(message) = &s.rejected {
        return Cond::fail(
            STORAGE_READY,
            REASON_CLAIM_NOT_UPDATABLE,
            format!(
                "claim {claim} cannot be changed as the spec asks (most of a claim is immutable; size can only grow, with an expandable storage class): {message}"
            ),
        );
    }
    match &s.claim {
        ClaimObserved::Missing if s.existing => Cond::fail(
            STORAGE_READY,
            REASON_CLAIM_NOT_FOUND,
            format!(
                "storage.existingClaim {claim} does not exist in namespace {ns}: create it, or remove existingClaim to have Atrium create one"
            ),
        ),
        ClaimObserved::Missing => {
            Cond::fail(STORAGE_READY, REASON_CLAIM_NOT_FOUND, format!("claim {claim} does not exist yet"))
        }
        ClaimObserved::Present { deleting: true, .. } => Cond::fail(
            STORAGE_READY,
            REASON_CLAIM_TERMINATING,
            format!("claim {claim} is being deleted (it stays until no pod uses it)"),
        ),
        ClaimObserved::Present { phase, capacity, .. } => match phase.as_deref() {
            Some("Bound") => {
                let size = capacity.as_ref().map(|q| format!(" ({})", q.0)).unwrap_or_default();
                Cond::ok(STORAGE_READY, "Bound", format!("claim {claim} is bound{size}"))
            }
            Some("Lost") => Cond::fail(
                STORAGE_READY,
                REASON_CLAIM_LOST,
                format!(
                    "claim {claim} lost its volume: its data is unavailable; restore the volume or replace the claim"
                ),
            ),
            _ => Cond::ok(
                STORAGE_READY,
                "Pending",
                format!(
                    "claim {claim} is Pending: it binds when a volume is provisioned (with a WaitForFirstConsumer storage class, when the first run or endpoint uses it)"
                ),
            ),
        },
    }
}

/// `storage` of the status.
pub fn storage_status(s: &StorageObserved) -> WorkspaceStorageStatus {
    let (phase, capacity) = match &s.claim {
        ClaimObserved::Present { phase, capacity, .. } => (phase.clone(), capacity.clone()),
        ClaimObserved::Missing => (None, None),
    };
    WorkspaceStorageStatus { claim_name: Some(s.claim_name.clone()), phase, capacity }
}

/// The conditions of the younger of two workspaces with the same display name.
pub fn name_conflict_conditions(ws: &Workspace, older: &Workspace) -> Vec<Cond> {
    vec![Cond::fail(
        READY,
        REASON_NAME_CONFLICT,
        format!(
            "display name {:?} is already used by workspace {} (names are compared without case): choose another spec.displayName",
            ws.spec.effective_display_name(&ws.name_any()),
            older.name_any()
        ),
    )]
}

/// The conditions of a workspace that may not write into its namespace.
pub fn namespace_blocked_conditions(namespace: &str, state: &NamespaceState) -> Vec<Cond> {
    let (reason, message) = match state {
        NamespaceState::Terminating => (
            REASON_NAMESPACE_TERMINATING,
            format!("namespace {namespace} is being deleted; it is created again once it is gone"),
        ),
        NamespaceState::Conflict(message) => (REASON_NAMESPACE_CONFLICT, message.clone()),
        _ => unreachable!("only a namespace the workspace cannot write is blocked"),
    };
    vec![Cond::fail(READY, reason, message.clone()), Cond::fail(NAMESPACE_READY, reason, message)]
}

/// The whole status the controller writes: conditions merged with the current ones (times move
/// only on flips), the observed generation, the namespace and the storage.
pub fn status(
    ws: &Workspace,
    conds: &[Cond],
    namespace: Option<String>,
    storage: Option<WorkspaceStorageStatus>,
    now: &Time,
) -> WorkspaceStatus {
    let current = ws.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let generation = ws.metadata.generation;
    WorkspaceStatus {
        observed_generation: generation,
        conditions: merge(current, conds, generation, now),
        namespace,
        storage,
    }
}

/// The (status, reason) of `Ready`, to publish an Event only when it changes.
pub fn ready_of(status: Option<&WorkspaceStatus>) -> Option<(String, String)> {
    status?.conditions.iter().find(|c| c.type_ == READY).map(|c| (c.status.clone(), c.reason.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::workspace::WorkspaceSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
    use serde_json::json;

    fn ws(name: &str, created: i64, spec: serde_json::Value) -> Workspace {
        let mut w = Workspace::new(name, serde_json::from_value::<WorkspaceSpec>(spec).unwrap());
        w.metadata.uid = Some(format!("uid-{name}"));
        w.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(created).unwrap()));
        w.metadata.generation = Some(1);
        w
    }

    fn owner_ref(uid: &str, controller: bool) -> OwnerReference {
        OwnerReference {
            api_version: "atrium.dev/v1alpha1".into(),
            kind: "Workspace".into(),
            name: format!("ws-{uid}"),
            uid: uid.into(),
            controller: Some(controller),
            block_owner_deletion: Some(true),
        }
    }

    fn healthy() -> Observed {
        Observed {
            namespace: "team-a".into(),
            registry: RegistryObserved::NotConfigured,
            namespace_rejected: vec![],
            access_bindings: 2,
            access_rejected: vec![],
            quota_objects: vec![],
            quota_rejected: vec![],
            storage: StorageObserved {
                claim_name: "atrium-storage".into(),
                existing: false,
                claim: ClaimObserved::Present {
                    phase: Some("Bound".into()),
                    capacity: Some(Quantity("10Gi".into())),
                    deleting: false,
                },
                rejected: None,
            },
        }
    }

    fn find<'a>(conds: &'a [Cond], type_: &str) -> &'a Cond {
        conds.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn the_younger_of_two_names_equal_without_case_is_in_conflict() {
        let a = ws("a", 100, json!({"displayName": "Team-A"}));
        let b = ws("b", 200, json!({"displayName": "team-a"}));
        let c = ws("c", 50, json!({"displayName": "other"}));
        let all = [a.clone(), b.clone(), c.clone()];
        assert!(older_namesake(&a, &all).is_none(), "the older one keeps its name");
        assert_eq!(older_namesake(&b, &all).unwrap().name_any(), "a");
        assert!(older_namesake(&c, &all).is_none());
        // Same second: the name decides, the same way for both.
        let d = ws("d", 100, json!({"displayName": "TEAM-a"}));
        let all = [a.clone(), d.clone()];
        assert!(older_namesake(&a, &all).is_none());
        assert_eq!(older_namesake(&d, &all).unwrap().name_any(), "a");
        // The display name defaults to metadata.name.
        let e = ws("team-a", 300, json!({}));
        assert_eq!(older_namesake(&e, &[a.clone(), e.clone()]).unwrap().name_any(), "a");
    }

    #[test]
    fn a_namespace_is_created_owned_adopted_or_someone_elses() {
        let w = ws("w", 1, json!({}));
        let none: [&Workspace; 0] = [];
        let state = |w: &Workspace, live: &ObjectMeta| namespace_state(w, "w", Some(live), none);
        assert_eq!(namespace_state(&w, "w", None, none), NamespaceState::Absent);
        let owned = ObjectMeta { owner_references: Some(vec![owner_ref("uid-w", true)]), ..Default::default() };
        assert_eq!(state(&w, &owned), NamespaceState::Owned);
        // Retain: the label alone says whose it is.
        assert_eq!(state(&w, &labelled("uid-w")), NamespaceState::Owned);
        let plain = ObjectMeta::default();
        assert!(matches!(state(&w, &plain), NamespaceState::Conflict(m) if m.contains("adoptNamespace")));
        let adopting = ws("w", 1, json!({"adoptNamespace": true}));
        assert_eq!(state(&adopting, &plain), NamespaceState::Adoptable);
        // Another workspace's namespace is never adopted: by its owner reference (Delete) ...
        let theirs = ObjectMeta { owner_references: Some(vec![owner_ref("uid-other", true)]), ..Default::default() };
        assert!(matches!(state(&adopting, &theirs), NamespaceState::Conflict(m) if m.contains("ws-uid-other")));
        // ... or by its label (Retain), while that workspace exists; once it is gone, the namespace
        // it left behind can be adopted.
        let other = ws("other", 1, json!({}));
        assert!(matches!(
            namespace_state(&adopting, "w", Some(&labelled("uid-other")), [&other]),
            NamespaceState::Conflict(m) if m.contains("Workspace other")
        ));
        assert_eq!(state(&adopting, &labelled("uid-other")), NamespaceState::Adoptable);
        // A non-controller owner does not make it someone else's.
        let shared = ObjectMeta { owner_references: Some(vec![owner_ref("uid-x", false)]), ..Default::default() };
        assert_eq!(state(&adopting, &shared), NamespaceState::Adoptable);
        let terminating = ObjectMeta { deletion_timestamp: Some(Time(jiff::Timestamp::UNIX_EPOCH)), ..owned.clone() };
        assert_eq!(state(&w, &terminating), NamespaceState::Terminating);
        assert!(matches!(namespace_state(&adopting, "kube-system", Some(&plain), none), NamespaceState::Conflict(_)));
        assert!(!NamespaceState::Terminating.writable() && NamespaceState::Adoptable.writable());
    }

    /// Namespace metadata labelled as the workspace with `uid`'s.
    fn labelled(uid: &str) -> ObjectMeta {
        let labels = [(OWNER_KIND, "workspace"), (OWNER_UID, uid)];
        ObjectMeta { labels: Some(labels.map(|(k, v)| (k.to_owned(), v.to_owned())).into()), ..Default::default() }
    }

    #[test]
    fn everything_in_place_is_ready() {
        let conds = conditions(&healthy());
        let types: Vec<_> = conds.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [READY, NAMESPACE_READY, ACCESS_READY, QUOTA_READY, STORAGE_READY]);
        assert!(conds.iter().all(|c| c.status), "{conds:#?}");
        assert_eq!(find(&conds, ACCESS_READY).message, "2 access entries bound");
        assert_eq!(find(&conds, QUOTA_READY).reason, "NoQuota");
        assert_eq!(find(&conds, STORAGE_READY).message, "claim atrium-storage is bound (10Gi)");
    }

    #[test]
    fn a_pending_claim_is_ready_and_says_so_a_lost_one_is_not() {
        let mut o = healthy();
        o.storage.claim = ClaimObserved::Present { phase: Some("Pending".into()), capacity: None, deleting: false };
        let conds = conditions(&o);
        assert!(find(&conds, STORAGE_READY).status);
        assert_eq!(find(&conds, STORAGE_READY).reason, "Pending");
        assert!(find(&conds, READY).status);
        assert!(find(&conds, READY).message.contains("Pending"), "{}", find(&conds, READY).message);

        o.storage.claim = ClaimObserved::Present { phase: Some("Lost".into()), capacity: None, deleting: false };
        let conds = conditions(&o);
        assert_eq!((find(&conds, READY).status, find(&conds, READY).reason.as_str()), (false, REASON_CLAIM_LOST));

        o.storage.existing = true;
        o.storage.claim = ClaimObserved::Missing;
        assert_eq!(find(&conditions(&o), READY).reason, REASON_CLAIM_NOT_FOUND);

        o.storage.rejected = Some("spec is immutable".into());
        assert_eq!(find(&conditions(&o), STORAGE_READY).reason, REASON_CLAIM_NOT_UPDATABLE);
    }

    #[test]
    fn a_missing_pull_secret_is_not_ready_and_says_what_is_kept() {
        let mut o = healthy();
        o.registry = RegistryObserved::SourceMissing { source: "infra/acr".into(), kept_copy: true };
        let conds = conditions(&o);
        let ns = find(&conds, NAMESPACE_READY);
        assert_eq!((ns.status, ns.reason.as_str()), (false, REASON_PULL_SECRET_NOT_FOUND));
        assert!(ns.message.contains("infra/acr") && ns.message.contains("kept"), "{}", ns.message);
        assert_eq!(find(&conds, READY).reason, REASON_PULL_SECRET_NOT_FOUND);
    }

    #[test]
    fn a_refused_child_is_reported_with_the_api_servers_words() {
        let mut o = healthy();
        o.quota_objects = vec!["ResourceQuota"];
        o.quota_rejected = vec!["ResourceQuota atrium-workspace: spec.hard[foo]: Invalid value".into()];
        let conds = conditions(&o);
        let quota = find(&conds, QUOTA_READY);
        assert_eq!((quota.status, quota.reason.as_str()), (false, REASON_REJECTED));
        assert!(quota.message.contains("spec.hard[foo]"), "{}", quota.message);
        assert_eq!(find(&conds, READY).reason, REASON_REJECTED);
        assert!(find(&conds, ACCESS_READY).status);
    }

    #[test]
    fn an_unchanged_world_gives_an_equal_status() {
        let w = ws("w", 1, json!({}));
        let conds = conditions(&healthy());
        let first = status(
            &w,
            &conds,
            Some("team-a".into()),
            Some(storage_status(&healthy().storage)),
            &Time(jiff::Timestamp::from_second(10).unwrap()),
        );
        let w = Workspace { status: Some(first.clone()), ..w };
        let again = status(
            &w,
            &conditions(&healthy()),
            Some("team-a".into()),
            Some(storage_status(&healthy().storage)),
            &Time(jiff::Timestamp::from_second(99).unwrap()),
        );
        assert_eq!(first, again);
        assert_eq!(first.observed_generation, Some(1));
        assert_eq!(ready_of(Some(&first)), Some(("True".into(), "Ready".into())));
    }

    #[test]
    fn blocked_namespaces_explain_themselves() {
        let conds = namespace_blocked_conditions("team-a", &NamespaceState::Terminating);
        assert_eq!(conds.len(), 2);
        assert!(conds.iter().all(|c| !c.status && c.reason == REASON_NAMESPACE_TERMINATING));
        let conds = namespace_blocked_conditions("team-a", &NamespaceState::Conflict("theirs".into()));
        assert_eq!(find(&conds, READY).reason, REASON_NAMESPACE_CONFLICT);
        let a = ws("a", 1, json!({"displayName": "Team-A"}));
        let b = ws("b", 2, json!({"displayName": "team-a"}));
        let conds = name_conflict_conditions(&b, &a);
        assert_eq!((conds[0].reason.as_str(), conds.len()), (REASON_NAME_CONFLICT, 1));
        assert!(conds[0].message.contains("workspace a"));
        let b = Workspace { status: Some(status(&b, &conds, None, None, &Time(jiff::Timestamp::UNIX_EPOCH))), ..b };
        assert!(in_name_conflict(&b));
    }
}
