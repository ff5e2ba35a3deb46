//! One reconcile of a Workspace: dereference (the other workspaces, the namespace, the source
//! pull Secret) → validate (name and namespace conflicts) → build (pure) → apply and prune →
//! status from what is live. A workspace whose world did not change writes nothing.

use std::{
    collections::{BTreeSet, HashMap},
    fmt::Debug,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::{
    NamespaceResourceScope,
    api::core::v1::{LimitRange, Namespace, PersistentVolumeClaim, ResourceQuota, Secret, ServiceAccount},
    api::networking::v1::NetworkPolicy,
    api::rbac::v1::RoleBinding,
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DynamicObject, ListParams, Patch, PatchParams},
    runtime::{controller::Action, events::EventType, reflector::ObjectRef, reflector::Store},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;
use tracing::{debug, info};

use super::{
    Caches, FINALIZER, MANAGER, Meta,
    build::{self, Inputs, PULL_SECRET, Registry},
    status::{self, ClaimObserved, NamespaceState, Observed, RegistryObserved, StorageObserved},
};
use crate::{
    api::workspace::{DeletionPolicy, Workspace, WorkspaceStorageStatus},
    context::Context,
    controller::Result,
    runtime::{
        apply::{apply, apply_status, content_hash, is_not_found, prune},
        conditions::{Cond, now},
        labels::{OWNER_UID, owner_selector},
    },
};

/// A rejected child is retried at this pace when the refusal may be the operator's own
/// permissions (403), which no watched object announces the fix of.
const FORBIDDEN_RETRY: Duration = Duration::from_secs(300);

/// The API server's refusals of children as built (bad input the schema could not catch), by
/// child, with the hash of what was refused: an unchanged child that was refused is not sent
/// again — the workspace waits for a change instead of retrying on every event. A 403 is tried
/// again after [`FORBIDDEN_RETRY`].
#[derive(Default)]
pub(super) struct Refusals(Mutex<HashMap<String, Refusal>>);

struct Refusal {
    hash: String,
    message: String,
    retry_at: Option<Instant>,
}

impl Refusals {
    /// The refusal of exactly this content, if it still stands.
    fn get(&self, key: &str, hash: &str) -> Option<(String, bool)> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let r = map.get(key).filter(|r| r.hash == hash && r.retry_at.is_none_or(|at| Instant::now() < at))?;
        Some((r.message.clone(), r.retry_at.is_some()))
    }

    fn set(&self, key: String, refusal: Option<Refusal>) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match refusal {
            Some(r) => map.insert(key, r),
            None => map.remove(&key),
        };
    }
}

pub(super) async fn reconcile(ws: Arc<Workspace>, ctx: Arc<Context>, caches: Arc<Caches>) -> Result<Action> {
    caches.synced().await?;
    let name = ws.name_any();
    let namespace = ws.spec.effective_namespace(&name).to_owned();

    if ws.meta().deletion_timestamp.is_some() {
        return finalize(&ws, &ctx.client, &namespace).await;
    }

    // Validate. The name check reads this controller's own cache of workspaces; once it holds
    // `ws` it holds every workspace created before it (one watch, in order).
    if caches.workspaces.store().get(&ObjectRef::from_obj(ws.as_ref())).is_none() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let all = caches.workspaces.store().state();
    if let Some(older) = status::older_namesake(&ws, all.iter().map(AsRef::as_ref)) {
        write_status(&ws, &ctx, &status::name_conflict_conditions(&ws, older), None, None).await?;
        return Ok(Action::await_change());
    }
    let live_ns = caches.namespaces.store().get(&ObjectRef::new(&namespace));
    let ns_state = status::namespace_state(
        &ws,
        &namespace,
        live_ns.as_deref().map(|m| &m.metadata),
        all.iter().map(AsRef::as_ref),
    );
    if !ns_state.writable() {
        write_status(&ws, &ctx, &status::namespace_blocked_conditions(&namespace, &ns_state), None, None).await?;
        return Ok(Action::await_change());
    }
    set_finalizer(&ws, &ctx.client, ws.spec.deletion_policy == DeletionPolicy::Retain).await?;

    // Dereference and build.
    let uid = ws.uid().unwrap_or_default();
    let client = &ctx.client;
    let (registry, source) = registry(&ws, client, &namespace, caches.secrets.store(), &uid).await?;
    let registry_input = match (&registry, &source) {
        (RegistryObserved::NotConfigured, _) => Registry::None,
        (_, Some(secret)) => Registry::Copy(secret),
        (
            RegistryObserved::SourceMissing { kept_copy: true, .. }
            | RegistryObserved::SourceInvalid { kept_copy: true, .. },
            None,
        ) => Registry::KeepCopy,
        _ => Registry::Unavailable,
    };
    let pod_monitors = caches.pod_monitor_crd.store().state().iter().any(|c| c.metadata.deletion_timestamp.is_none());
    let children = build::desired_children(&ws, &namespace, &Inputs { registry: registry_input, pod_monitors });

    // Apply, namespace first.
    if ns_state == NamespaceState::Adoptable {
        info!(workspace = %name, namespace = %namespace, "adopting the existing namespace");
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    apply(&namespaces, MANAGER, children.namespace, live_ns.as_deref().map(|m| &m.metadata)).await?;

    let mut round =
        Round { client, namespace: &namespace, uid: &uid, refusals: &caches.refusals, wrote: 0, forbidden: false };
    // A copy whose source vanished is kept, not pruned.
    let keep_copy: &[&str] = if matches!(registry_input, Registry::KeepCopy) { &[PULL_SECRET] } else { &[] };
    let mut namespace_rejected = round.sync(caches.service_accounts.store(), children.service_accounts, &[]).await?;
    namespace_rejected.extend(round.sync(caches.secrets.store(), children.pull_secret, keep_copy).await?);
    namespace_rejected.extend(round.sync(caches.network_policies.store(), children.network_policies, &[]).await?);
    namespace_rejected.extend(round.sync_pod_monitor(children.pod_monitor, pod_monitors).await?);

    let access_bindings = children.role_bindings.len();
    let access_rejected = round.sync(caches.role_bindings.store(), children.role_bindings, &[]).await?;

    let quota_objects: Vec<&'static str> = [
        children.resource_quota.as_ref().map(|_| "ResourceQuota"),
        children.limit_range.as_ref().map(|_| "LimitRange"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut quota_rejected = round.sync(caches.resource_quotas.store(), children.resource_quota, &[]).await?;
    quota_rejected.extend(round.sync(caches.limit_ranges.store(), children.limit_range, &[]).await?);

    let storage = round.sync_claim(build::claim_name(&ws), caches.claims.store(), children.claim).await?;

    // Status, from what is live now.
    let observed = Observed {
        namespace: namespace.clone(),
        registry,
        namespace_rejected,
        access_bindings,
        access_rejected,
        quota_objects,
        quota_rejected,
        storage,
    };
    let (wrote, forbidden) = (round.wrote, round.forbidden);
    if wrote > 0 {
        debug!(workspace = %name, writes = wrote, "children applied");
    }
    let storage_status = status::storage_status(&observed.storage);
    write_status(&ws, &ctx, &status::conditions(&observed), Some(namespace), Some(storage_status)).await?;
    Ok(if forbidden { Action::requeue(FORBIDDEN_RETRY) } else { Action::await_change() })
}

/// One round of writes into the namespace of the workspace with `uid`: what it wrote, and
/// whether the API server refused something with 403.
struct Round<'a> {
    client: &'a Client,
    namespace: &'a str,
    uid: &'a str,
    refusals: &'a Refusals,
    wrote: usize,
    forbidden: bool,
}

impl Round<'_> {
    /// Applies `desired` (every child of kind `K` the workspace should have in `namespace`),
    /// then deletes the workspace's other children of that kind except `keep`. Returns the API
    /// server's refusals of a child as built (bad input the schema could not catch), which the
    /// conditions report; any other failure is an error, retried with backoff.
    async fn sync<K>(
        &mut self,
        store: &Store<Meta<K>>,
        desired: impl IntoIterator<Item = K>,
        keep: &[&str],
    ) -> Result<Vec<String>>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Serialize + DeserializeOwned + Clone + Debug,
    {
        let (namespace, uid) = (self.namespace, self.uid);
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let mut keep: BTreeSet<String> = keep.iter().map(|k| (*k).to_owned()).collect();
        let mut rejected = Vec::new();
        for child in desired {
            let name = child.name_any();
            let live = store.get(&ObjectRef::new(&name).within(namespace));
            self.apply(&api, child, live.as_deref().map(|m| &m.metadata), K::kind(&()).as_ref(), &mut rejected).await?;
            keep.insert(name);
        }
        let owned: Vec<ObjectMeta> =
            store.state().iter().map(|m| &m.metadata).filter(|m| is_owned_in(m, uid, namespace)).cloned().collect();
        self.wrote += prune(|_| api.clone(), &owned, &keep).await?;
        Ok(rejected)
    }

    /// The PodMonitor, when the Prometheus Operator's CRD is installed. PodMonitors are not
    /// watched (the CRD may come and go): read and listed here instead.
    async fn sync_pod_monitor(&mut self, desired: Option<DynamicObject>, crd_installed: bool) -> Result<Vec<String>> {
        if !crd_installed {
            return Ok(Vec::new());
        }
        let ar = build::pod_monitor_resource();
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), self.namespace, &ar);
        let owned: Vec<ObjectMeta> = api
            .list_metadata(&ListParams::default().labels(&format!("{OWNER_UID}={}", self.uid)))
            .await?
            .items
            .into_iter()
            .map(|m| m.metadata)
            .collect();
        let mut keep = BTreeSet::new();
        let mut rejected = Vec::new();
        if let Some(pm) = desired {
            let name = pm.name_any();
            let live = owned.iter().find(|m| m.name.as_deref() == Some(name.as_str()));
            self.apply(&api, pm, live, "PodMonitor", &mut rejected).await?;
            keep.insert(name);
        }
        self.wrote += prune(|_| api.clone(), &owned, &keep).await?;
        Ok(rejected)
    }

    /// Applies Atrium's claim (never an `existingClaim`) and reads the claim in use. A claim is
    /// never pruned: switching to `existingClaim` leaves Atrium's claim, and its data, in place.
    async fn sync_claim(
        &mut self,
        claim_name: &str,
        store: &Store<Meta<PersistentVolumeClaim>>,
        desired: Option<PersistentVolumeClaim>,
    ) -> Result<StorageObserved> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), self.namespace);
        let claim_name = claim_name.to_owned();
        let existing = desired.is_none();
        let mut rejected = Vec::new();
        if let Some(claim) = desired {
            let live = store.get(&ObjectRef::new(&claim_name).within(self.namespace));
            self.apply(&api, claim, live.as_deref().map(|m| &m.metadata), "", &mut rejected).await?;
        }
        let claim = match api.get_opt(&claim_name).await? {
            None => ClaimObserved::Missing,
            Some(pvc) => {
                let status = pvc.status.unwrap_or_default();
                ClaimObserved::Present {
                    phase: status.phase,
                    capacity: status.capacity.and_then(|mut c| c.remove("storage")),
                    deleting: pvc.metadata.deletion_timestamp.is_some(),
                }
            }
        };
        Ok(StorageObserved { claim_name, existing, claim, rejected: rejected.pop() })
    }

    /// Applies one child (skipped when unchanged), counting the write. A refusal as built (400,
    /// 403, 422) is recorded in `rejected` as `"<kind> <name>: <message>"` (the bare message
    /// without a kind) and remembered, so the same content is not sent again; anything else is an
    /// error.
    async fn apply<K>(
        &mut self,
        api: &Api<K>,
        child: K,
        live: Option<&ObjectMeta>,
        kind: &str,
        rejected: &mut Vec<String>,
    ) -> Result<()>
    where
        K: Resource + Serialize + DeserializeOwned + Clone + Debug,
    {
        let name = child.name_any();
        let key = format!("{kind}/{}/{name}", self.namespace);
        let hash = content_hash(&child);
        let describe =
            |message: &str| if kind.is_empty() { message.to_owned() } else { format!("{kind} {name}: {message}") };
        if let Some((message, forbidden)) = self.refusals.get(&key, &hash) {
            self.forbidden |= forbidden;
            rejected.push(describe(&message));
            return Ok(());
        }
        match apply(api, MANAGER, child, live).await {
            Ok(wrote) => {
                self.wrote += usize::from(wrote);
                self.refusals.set(key, None);
                Ok(())
            }
            Err(kube::Error::Api(s)) if matches!(s.code, 400 | 403 | 422) => {
                let forbidden = s.code == 403;
                self.forbidden |= forbidden;
                rejected.push(describe(&s.message));
                let retry_at = forbidden.then(|| Instant::now() + FORBIDDEN_RETRY);
                self.refusals.set(key, Some(Refusal { hash, message: s.message, retry_at }));
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn is_owned_in(meta: &ObjectMeta, uid: &str, namespace: &str) -> bool {
    meta.namespace.as_deref() == Some(namespace)
        && meta.labels.as_ref().and_then(|l| l.get(OWNER_UID)).is_some_and(|u| u == uid)
}

/// Reads the source pull Secret. Returns what the conditions say about it and the Secret to
/// copy, if it can be copied.
async fn registry(
    ws: &Workspace,
    client: &Client,
    namespace: &str,
    secrets: &Store<Meta<Secret>>,
    uid: &str,
) -> Result<(RegistryObserved, Option<Secret>)> {
    let Some(reg) = &ws.spec.container_registry else { return Ok((RegistryObserved::NotConfigured, None)) };
    let source_ref = &reg.pull_secret;
    let source = format!("{}/{}", source_ref.namespace, source_ref.name);
    let kept_copy = secrets
        .get(&ObjectRef::new(PULL_SECRET).within(namespace))
        .is_some_and(|m| is_owned_in(&m.metadata, uid, namespace));
    if source_ref.namespace == namespace && source_ref.name == PULL_SECRET {
        let reason = format!(
            "is the workspace's own copy: name the Secret it should be copied from (not {PULL_SECRET} in the workspace namespace)"
        );
        return Ok((RegistryObserved::SourceInvalid { source, reason, kept_copy }, None));
    }
    let api: Api<Secret> = Api::namespaced(client.clone(), &source_ref.namespace);
    Ok(match api.get_opt(&source_ref.name).await? {
        None => (RegistryObserved::SourceMissing { source, kept_copy }, None),
        Some(secret) if !build::is_pull_secret_type(&secret) => {
            let reason = format!(
                "has type {}: an image pull secret has type kubernetes.io/dockerconfigjson (kubectl create secret docker-registry)",
                secret.type_.as_deref().unwrap_or("Opaque")
            );
            (RegistryObserved::SourceInvalid { source, reason, kept_copy }, None)
        }
        Some(secret) => (RegistryObserved::Synced { source }, Some(secret)),
    })
}

/// Writes the status unless it is unchanged, and publishes an Event when `Ready` changes.
async fn write_status(
    ws: &Workspace,
    ctx: &Context,
    conds: &[Cond],
    namespace: Option<String>,
    storage: Option<WorkspaceStorageStatus>,
) -> Result<()> {
    let next = status::status(ws, conds, namespace, storage, &now());
    let api: Api<Workspace> = Api::all(ctx.client.clone());
    if !apply_status(&api, MANAGER, &ctx.own_writes, ws, ws.status.as_ref(), &next).await? {
        return Ok(());
    }
    let (before, after) = (status::ready_of(ws.status.as_ref()), status::ready_of(Some(&next)));
    if before != after
        && let Some(ready) = conds.iter().find(|c| c.type_ == crate::runtime::conditions::READY)
    {
        let type_ = if ready.status { EventType::Normal } else { EventType::Warning };
        ctx.event(ws, type_, &ready.reason, ready.message.clone(), "Reconcile");
    }
    Ok(())
}

/// Adds or removes [`FINALIZER`]. A merge patch of the whole list, guarded by the
/// resourceVersion it was read at (a concurrent change makes it 409 and the reconcile retries).
async fn set_finalizer(ws: &Workspace, client: &Client, wanted: bool) -> Result<()> {
    let has = ws.finalizers().iter().any(|f| f == FINALIZER);
    if has == wanted {
        return Ok(());
    }
    let finalizers: Vec<&str> = ws
        .finalizers()
        .iter()
        .map(String::as_str)
        .filter(|f| *f != FINALIZER)
        .chain(wanted.then_some(FINALIZER))
        .collect();
    let patch = json!({ "metadata": { "resourceVersion": ws.resource_version(), "finalizers": finalizers } });
    let api: Api<Workspace> = Api::all(client.clone());
    let params = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
    match api.patch(&ws.name_any(), &params, &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A workspace being deleted. With `Retain`, the owner references to it are removed from its
/// namespace and children first, so the garbage collector keeps them; then the finalizer goes.
/// This never waits on anything: a namespace already gone or terminating has nothing to keep.
async fn finalize(ws: &Workspace, client: &Client, namespace: &str) -> Result<Action> {
    if !ws.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    if ws.spec.deletion_policy == DeletionPolicy::Retain {
        release(ws, client, namespace).await?;
        info!(workspace = %ws.name_any(), namespace, "workspace deleted; namespace retained");
    }
    set_finalizer(ws, client, false).await?;
    Ok(Action::await_change())
}

/// Removes the owner references to `ws` from its namespace and every child in it. Reads fresh
/// lists (not the caches): deletion is rare, and nothing may be missed.
async fn release(ws: &Workspace, client: &Client, namespace: &str) -> Result<()> {
    let uid = ws.uid().unwrap_or_default();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let Some(ns) = namespaces.get_metadata_opt(namespace).await? else { return Ok(()) };
    if ns.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let selector = owner_selector(ws);
    release_all::<ServiceAccount>(client, namespace, &selector, &uid).await?;
    release_all::<Secret>(client, namespace, &selector, &uid).await?;
    release_all::<RoleBinding>(client, namespace, &selector, &uid).await?;
    release_all::<ResourceQuota>(client, namespace, &selector, &uid).await?;
    release_all::<LimitRange>(client, namespace, &selector, &uid).await?;
    release_all::<PersistentVolumeClaim>(client, namespace, &selector, &uid).await?;
    release_all::<NetworkPolicy>(client, namespace, &selector, &uid).await?;
    let monitors: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &build::pod_monitor_resource());
    match monitors.list_metadata(&ListParams::default().labels(&selector)).await {
        Ok(list) => {
            for m in list.items {
                disown(&monitors, &m.metadata, &uid).await?;
            }
        }
        Err(e) if is_not_found(&e) => {} // no Prometheus Operator
        Err(e) => return Err(e.into()),
    }
    disown(&namespaces, &ns.metadata, &uid).await?;
    Ok(())
}

async fn release_all<K>(client: &Client, namespace: &str, selector: &str, uid: &str) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    for m in api.list_metadata(&ListParams::default().labels(selector)).await?.items {
        disown(&api, &m.metadata, uid).await?;
    }
    Ok(())
}

/// Removes the owner reference with `uid` from one object, guarded by its resourceVersion.
async fn disown<K>(api: &Api<K>, meta: &ObjectMeta, uid: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let refs = meta.owner_references.as_deref().unwrap_or_default();
    if !refs.iter().any(|r| r.uid == uid) {
        return Ok(());
    }
    let remaining: Vec<_> = refs.iter().filter(|r| r.uid != uid).collect();
    let patch = json!({ "metadata": { "resourceVersion": meta.resource_version, "ownerReferences": remaining } });
    let params = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
    match api.patch_metadata(meta.name.as_deref().unwrap_or_default(), &params, &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(hash: &str, retry_at: Option<Instant>) -> Option<Refusal> {
        Some(Refusal { hash: hash.into(), message: "invalid".into(), retry_at })
    }

    #[test]
    fn a_refusal_stands_for_the_same_content_only() {
        let r = Refusals::default();
        r.set("ResourceQuota/ns/q".into(), refusal("h1", None));
        assert_eq!(r.get("ResourceQuota/ns/q", "h1"), Some(("invalid".into(), false)));
        assert_eq!(r.get("ResourceQuota/ns/q", "h2"), None, "changed content is sent again");
        assert_eq!(r.get("LimitRange/ns/q", "h1"), None);
        r.set("ResourceQuota/ns/q".into(), None);
        assert_eq!(r.get("ResourceQuota/ns/q", "h1"), None, "accepted later: forgotten");
    }

    #[test]
    fn a_forbidden_write_is_tried_again_later() {
        let r = Refusals::default();
        r.set("k".into(), refusal("h", Some(Instant::now() + Duration::from_secs(60))));
        assert_eq!(r.get("k", "h"), Some(("invalid".into(), true)));
        r.set("k".into(), refusal("h", Some(Instant::now() - Duration::from_secs(1))));
        assert_eq!(r.get("k", "h"), None);
    }
}
