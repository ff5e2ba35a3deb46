//! The InstanceType pipeline: read the nodes from the cache, fit, write the status when it
//! changed. An instance type has no children.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, ResourceExt,
    runtime::{controller::Action, events::EventType},
};

use super::{MANAGER, status};
use crate::{
    api::{HasConditions, InstanceType},
    context::Context,
    controller::Result,
    runtime::{apply::apply_status, cache::Cache, conditions::now},
};

pub async fn reconcile(itype: Arc<InstanceType>, ctx: Arc<Context>, nodes: Cache<Node>) -> Result<Action> {
    nodes.synced().await?;
    let state = nodes.store().state();
    let fit = status::fit(&itype.spec, state.iter().map(Arc::as_ref));
    let desired = status::desired_status(&itype, &fit, &now());

    let api: Api<InstanceType> = Api::all(ctx.client.clone());
    if apply_status(&api, MANAGER, &ctx.own_writes, itype.as_ref(), itype.status.as_ref(), &desired).await? {
        let was_ready = itype.is_ready();
        let is_ready = desired.is_ready();
        if was_ready != is_ready || itype.status.is_none() {
            let ready = &desired.conditions[0];
            let type_ = if is_ready { EventType::Normal } else { EventType::Warning };
            ctx.event(itype.as_ref(), type_, &ready.reason, ready.message.clone(), "Fit");
        }
        tracing::debug!(instance_type = %itype.name_any(), matching = fit.matching_nodes, "status written");
    }
    // Node changes trigger this reconcile; nothing to do until then.
    Ok(Action::await_change())
}
