//! The InstanceType controller: which nodes can run an instance (`matchingNodes`, `maxPerNode`,
//! `Ready=False/Unschedulable` when none), re-evaluated whenever a node comes, goes or changes;
//! and the `defaultinstancetype` installed at start-up (docs/compute.md).
//!
//! Nodes are cached slimmed down to what fitting reads: labels, taints, `unschedulable` and
//! allocatable resources.

pub mod build;
pub mod quantity;
mod reconcile;
pub mod status;

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus};
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, reflector::ObjectRef, watcher},
};
use tokio_util::sync::CancellationToken;

use super::RunOptions;
use crate::{
    api::{InstanceType, instance_type::default_instance_type},
    context::Context,
    runtime::{apply::apply, cache::cache},
};

/// The field manager of everything this controller writes.
pub const MANAGER: &str = "atrium-instancetype";

/// Runs the InstanceType controller until `shutdown` is cancelled.
pub async fn run(ctx: Arc<Context>, opts: RunOptions, shutdown: CancellationToken) {
    tokio::spawn(install_default_instance_type(ctx.client.clone(), shutdown.clone()));

    let node_events = watcher::watcher(Api::<Node>::all(ctx.client.clone()), watcher::Config::default().any_semantic())
        .modify(slim_node);
    let (nodes, node_changes) = cache(node_events);
    super::run::<InstanceType, _, _>(
        "instancetype",
        ctx,
        opts,
        |c| {
            // Any node change can change every instance type's fit.
            let itypes = c.store();
            c.watches_stream(node_changes, move |_node: Node| {
                itypes.state().iter().map(|it| ObjectRef::from_obj(it.as_ref())).collect::<Vec<_>>()
            })
        },
        move |itype, ctx| reconcile::reconcile(itype, ctx, nodes.clone()),
        shutdown,
    )
    .await;
}

/// Keeps only what fitting reads, so the node cache stays small (no images, conditions or
/// managed fields).
fn slim_node(node: &mut Node) {
    node.metadata.managed_fields = None;
    node.metadata.annotations = None;
    node.spec =
        node.spec.take().map(|s| NodeSpec { taints: s.taints, unschedulable: s.unschedulable, ..Default::default() });
    node.status = node.status.take().map(|s| NodeStatus { allocatable: s.allocatable, ..Default::default() });
}

/// Creates `defaultinstancetype` when it does not exist, retrying until it succeeds, so that every
/// installation (Helm or not) has it. Once it exists it is the platform team's to edit: the
/// operator never overwrites it.
async fn install_default_instance_type(client: Client, shutdown: CancellationToken) {
    let api: Api<InstanceType> = Api::all(client);
    let desired = default_instance_type();
    crate::runtime::startup::until_done("defaultinstancetype", shutdown, || async {
        if api.get_metadata_opt(&desired.name_any()).await?.is_some() {
            return Ok(0);
        }
        Ok(usize::from(apply(&api, MANAGER, desired.clone(), None).await?))
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slim_nodes_keep_what_fitting_reads() {
        let mut node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n", "labels": {"a": "b"}, "annotations": {"big": "x"}},
            "spec": {"podCIDR": "10.0.0.0/24", "taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "8"}, "images": [{"names": ["x"], "sizeBytes": 1}]}
        }))
        .unwrap();
        slim_node(&mut node);
        assert_eq!(
            serde_json::to_value(&node).unwrap(),
            serde_json::json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": "n", "labels": {"a": "b"}},
                "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]},
                "status": {"allocatable": {"cpu": "8"}}
            })
        );
    }
}
