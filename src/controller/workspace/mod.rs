//! The Workspace controller: a workspace's namespace, ServiceAccounts, access, quota, storage,
//! registry credentials, network isolation and monitoring (docs/workspace.md).
//!
//! `reconcile` is the pipeline (dereference → validate → build → apply → status); `build` and
//! `status` are pure. This module wires the watches: every child kind by metadata only (so the
//! apply skip can read the applied-hash annotation without caching whole objects), mostly with
//! the managed-by label selector; Namespaces and claims without one (a conflicting namespace and
//! an `existingClaim` are not Atrium's); Secrets without a cache, to follow the source pull
//! Secrets wherever they are; and the other workspaces, for display-name conflicts.

mod build;
mod reconcile;
mod status;

pub use status::REASON_NAMESPACE_TERMINATING;

use std::{fmt::Debug, sync::Arc};

use futures::Stream;
use k8s_openapi::{
    api::{
        core::v1::{LimitRange, Namespace, PersistentVolumeClaim, ResourceQuota, Secret, ServiceAccount},
        networking::v1::NetworkPolicy,
        rbac::v1::{ClusterRole, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    core::PartialObjectMeta,
    runtime::{
        Controller, WatchStreamExt,
        reflector::{ObjectRef, Store},
        watcher::{self, watcher},
    },
};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

pub use build::{CONTRIBUTOR_ROLE, OWNER_ROLE, READER_ROLE, cluster_roles};

use super::RunOptions;
use crate::{
    api::workspace::Workspace,
    context::Context,
    runtime::{
        apply::apply,
        cache::{Cache, NotSynced, cache},
        labels::{OWNER_UID, children_of_kind},
        startup,
        watch::lenient_watcher,
    },
};

/// The field manager of everything this controller writes.
pub const MANAGER: &str = "atrium-workspace";
/// Held by workspaces with `deletionPolicy: Retain`: before the workspace goes, the owner
/// references to it are removed from its namespace and children, so the garbage collector keeps
/// them. Workspaces with `Delete` carry no finalizer (the garbage collector does the work).
pub const FINALIZER: &str = "atrium.dev/retain-namespace";

pub(crate) type Meta<K> = PartialObjectMeta<K>;

/// The caches the reconcile reads, each filled by a watch that is also a trigger.
pub(crate) struct Caches {
    workspaces: Cache<Workspace>,
    namespaces: Cache<Meta<Namespace>>,
    service_accounts: Cache<Meta<ServiceAccount>>,
    secrets: Cache<Meta<Secret>>,
    role_bindings: Cache<Meta<RoleBinding>>,
    resource_quotas: Cache<Meta<ResourceQuota>>,
    limit_ranges: Cache<Meta<LimitRange>>,
    claims: Cache<Meta<PersistentVolumeClaim>>,
    network_policies: Cache<Meta<NetworkPolicy>>,
    pod_monitor_crd: Cache<Meta<CustomResourceDefinition>>,
    /// What the API server refused to take, so that it is not sent again unchanged.
    refusals: reconcile::Refusals,
}

impl Caches {
    /// Waits until every cache has had its first complete listing: before that, a child missing
    /// from a cache may just not be seen yet.
    async fn synced(&self) -> Result<(), NotSynced> {
        self.workspaces.synced().await?;
        self.namespaces.synced().await?;
        self.service_accounts.synced().await?;
        self.secrets.synced().await?;
        self.role_bindings.synced().await?;
        self.resource_quotas.synced().await?;
        self.limit_ranges.synced().await?;
        self.claims.synced().await?;
        self.network_policies.synced().await?;
        self.pod_monitor_crd.synced().await
    }
}

/// Runs the Workspace controller until `shutdown` is cancelled. Applies the workspace
/// ClusterRoles first (in the background, retried until it succeeds).
pub async fn run(ctx: Arc<Context>, opts: RunOptions, shutdown: CancellationToken) {
    if opts.install_workspace_roles {
        tokio::spawn(install_cluster_roles(ctx.client.clone(), shutdown.clone()));
    }
    let client = ctx.client.clone();
    let managed = watcher::Config::default().labels(&children_of_kind("workspace"));
    let everything = watcher::Config::default();
    let mut own_workspaces = watcher::Config::default().any_semantic();
    if let Some(sel) = &opts.object_selector {
        own_workspaces = own_workspaces.labels(sel);
    }
    let crd = watcher::Config::default().fields(&format!("metadata.name={}", build::POD_MONITOR_CRD));

    let (workspaces, workspace_events) =
        cache(lenient_watcher::<Workspace>(client.clone(), own_workspaces, "workspace", ctx.metrics.clone()));
    let (namespaces, namespace_events) = cache(metadata::<Namespace>(&client, everything.clone()));
    let (claims, claim_events) = cache(metadata::<PersistentVolumeClaim>(&client, everything.clone()));
    let (secrets, secret_events) = cache(metadata::<Secret>(&client, managed.clone()));
    let (service_accounts, service_account_events) = cache(metadata::<ServiceAccount>(&client, managed.clone()));
    let (role_bindings, role_binding_events) = cache(metadata::<RoleBinding>(&client, managed.clone()));
    let (resource_quotas, resource_quota_events) = cache(metadata::<ResourceQuota>(&client, managed.clone()));
    let (limit_ranges, limit_range_events) = cache(metadata::<LimitRange>(&client, managed.clone()));
    let (network_policies, network_policy_events) = cache(metadata::<NetworkPolicy>(&client, managed));
    let (pod_monitor_crd, crd_events) = cache(metadata::<CustomResourceDefinition>(&client, crd));
    // The source pull Secrets can be anywhere and are not Atrium's: a metadata watch of every
    // Secret, not cached, only mapped to the workspaces that name them (a rotation reaches the copy).
    let source_secret_events =
        watcher(Api::<Meta<Secret>>::all(client.clone()), everything).default_backoff().touched_objects();

    let caches = Arc::new(Caches {
        workspaces,
        namespaces,
        service_accounts,
        secrets,
        role_bindings,
        resource_quotas,
        limit_ranges,
        claims,
        network_policies,
        pod_monitor_crd,
        refusals: Default::default(),
    });

    let ws = caches.workspaces.store().clone();
    let peers = {
        let ws = ws.clone();
        move |changed: Workspace| name_peers(&ws, &changed)
    };
    let by_namespace = {
        let ws = ws.clone();
        move |ns: Meta<Namespace>| {
            let name = ns.name_any();
            workspaces_where(&ws, |w| w.spec.effective_namespace(&w.name_any()) == name)
        }
    };
    let by_source_secret = {
        let ws = ws.clone();
        move |secret: Meta<Secret>| {
            let (ns, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
            workspaces_where(&ws, |w| {
                w.spec
                    .container_registry
                    .as_ref()
                    .is_some_and(|r| r.pull_secret.namespace == ns && r.pull_secret.name == name)
            })
        }
    };
    let by_claim = {
        let ws = ws.clone();
        move |claim: Meta<PersistentVolumeClaim>| {
            let (ns, name) = (claim.namespace().unwrap_or_default(), claim.name_any());
            let mut refs = workspaces_where(&ws, |w| {
                w.spec.effective_namespace(&w.name_any()) == ns && build::claim_name(w) == name
            });
            refs.extend(owning_workspace(&ws, &claim));
            refs
        }
    };
    let (secret_owner, service_account_owner, role_binding_owner) = (by_owner(&ws), by_owner(&ws), by_owner(&ws));
    let (resource_quota_owner, limit_range_owner, network_policy_owner) = (by_owner(&ws), by_owner(&ws), by_owner(&ws));
    let with_monitoring = move |_: Meta<CustomResourceDefinition>| {
        workspaces_where(&ws, |w| w.spec.monitoring.as_ref().is_some_and(|m| m.prometheus))
    };

    let setup = move |controller: Controller<Workspace>| {
        controller
            .watches_stream(workspace_events, peers)
            .watches_stream(namespace_events, by_namespace)
            .watches_stream(claim_events, by_claim)
            .watches_stream(source_secret_events, by_source_secret)
            .watches_stream(secret_events, secret_owner)
            .watches_stream(service_account_events, service_account_owner)
            .watches_stream(role_binding_events, role_binding_owner)
            .watches_stream(resource_quota_events, resource_quota_owner)
            .watches_stream(limit_range_events, limit_range_owner)
            .watches_stream(network_policy_events, network_policy_owner)
            .watches_stream(crd_events, with_monitoring)
    };
    super::run::<Workspace, _, _>(
        "workspace",
        ctx,
        opts,
        setup,
        move |ws, ctx| reconcile::reconcile(ws, ctx, caches.clone()),
        shutdown,
    )
    .await;
}

/// A metadata-only watch of every `K` that `config` selects, without managed fields (never
/// read, and most of an object's metadata).
fn metadata<K>(
    client: &Client,
    config: watcher::Config,
) -> impl Stream<Item = Result<watcher::Event<Meta<K>>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    watcher(Api::<Meta<K>>::all(client.clone()), config.any_semantic())
        .modify(|m: &mut Meta<K>| m.metadata.managed_fields = None)
}

/// The workspace `obj` belongs to, by its `atrium.dev/owner-uid` label: the children of a
/// `Retain` workspace have no owner reference (kube's `owns` maps by owner reference, and would
/// look for the cluster-scoped workspace in the child's namespace).
fn owning_workspace<K: Resource>(store: &Store<Workspace>, obj: &K) -> Option<ObjectRef<Workspace>> {
    let uid = obj.meta().labels.as_ref()?.get(OWNER_UID)?;
    store.state().iter().find(|w| w.uid().as_ref() == Some(uid)).map(|w| ObjectRef::from_obj(w.as_ref()))
}

/// [`owning_workspace`] as a mapper for a watch of children of kind `K`.
fn by_owner<K: Resource>(
    store: &Store<Workspace>,
) -> impl Fn(K) -> Option<ObjectRef<Workspace>> + Send + Sync + 'static {
    let store = store.clone();
    move |obj| owning_workspace(&store, &obj)
}

fn workspaces_where(store: &Store<Workspace>, pred: impl Fn(&Workspace) -> bool) -> Vec<ObjectRef<Workspace>> {
    store.state().iter().filter(|ws| pred(ws)).map(|ws| ObjectRef::from_obj(ws.as_ref())).collect()
}

/// When a workspace appears, changes or goes, the others whose display name or namespace may now
/// (or no longer) conflict with it: those with the same name or namespace, and those in conflict
/// now (the change may have been a rename away from their name). A namespace left behind by a
/// deleted `Retain` workspace carries no owner reference to change, so its namespace watch would
/// not tell a workspace waiting to adopt it.
fn name_peers(store: &Store<Workspace>, changed: &Workspace) -> Vec<ObjectRef<Workspace>> {
    let key = status::display_key(changed);
    let name = changed.name_any();
    let namespace = changed.spec.effective_namespace(&name);
    workspaces_where(store, |ws| {
        let other = ws.name_any();
        other != name
            && (status::display_key(ws) == key
                || status::in_name_conflict(ws)
                || ws.spec.effective_namespace(&other) == namespace)
    })
}

/// Applies the workspace ClusterRoles (skipped when unchanged), retrying until it succeeds. The
/// Helm chart installs the same roles (and turns this off); this keeps `make run` self-sufficient.
async fn install_cluster_roles(client: Client, shutdown: CancellationToken) {
    let api: Api<ClusterRole> = Api::all(client);
    startup::until_done("workspace ClusterRoles", shutdown, || apply_cluster_roles(&api)).await;
}

async fn apply_cluster_roles(api: &Api<ClusterRole>) -> kube::Result<usize> {
    let mut written = 0;
    for role in cluster_roles() {
        let live = api.get_metadata_opt(&role.name_any()).await?;
        if apply(api, MANAGER, role, live.as_ref().map(|m| &m.metadata)).await? {
            written += 1;
        }
    }
    Ok(written)
}
