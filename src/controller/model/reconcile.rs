//! The Model pipeline: read the other versions and the workspace storage, decide the status,
//! write it when it changed.

use std::sync::Arc;

use kube::{Api, ResourceExt, runtime::controller::Action, runtime::events::EventType};

use super::{Caches, MANAGER, build::WorkspaceStorage, status};
use crate::{
    api::{HasConditions, Model, READY},
    context::Context,
    controller::Result,
    runtime::{apply::apply_status, conditions::now},
};

pub(super) async fn reconcile(model: Arc<Model>, ctx: Arc<Context>, caches: Arc<Caches>) -> Result<Action> {
    caches.workspaces.synced().await?;
    let Some(namespace) = model.namespace() else { return Ok(Action::await_change()) };

    let models = caches.models.get().map(|s| s.state()).unwrap_or_default();
    let duplicate_of = status::older_duplicate(&model, models.iter().map(AsRef::as_ref));
    let storage =
        WorkspaceStorage::of_namespace(&namespace, caches.workspaces.store().state().iter().map(AsRef::as_ref));
    let desired = status::desired_status(&model, duplicate_of, &storage, &now());

    let api: Api<Model> = Api::namespaced(ctx.client.clone(), &namespace);
    if apply_status(&api, MANAGER, &ctx.own_writes, model.as_ref(), model.status.as_ref(), &desired).await? {
        announce_transition(&model, &desired, &ctx);
    }
    Ok(Action::await_change())
}

/// An Event when the model becomes usable or stops being usable (never on a no-op).
fn announce_transition(model: &Model, desired: &crate::api::ModelStatus, ctx: &Context) {
    let Some(ready) = desired.condition(READY) else { return };
    let was = model.condition(READY).map(|c| c.status.as_str());
    if was == Some(ready.status.as_str()) {
        return;
    }
    let type_ = if ready.status == "True" { EventType::Normal } else { EventType::Warning };
    ctx.event(model, type_, &ready.reason, ready.message.clone(), "Resolve");
}
