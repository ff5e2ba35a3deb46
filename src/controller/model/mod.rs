//! The Model controller: one registered version per object. It decides whether the version is
//! usable — not a duplicate of an older registration (names ignore case), and its files locatable
//! on the workspace storage or by URI — and records `resolvedUri`. [`resolve`] is how other
//! controllers pick a version: the named one, or the highest Ready one.

pub mod build;
mod reconcile;
pub mod resolve;
pub mod status;

use std::sync::{Arc, OnceLock};

use kube::{
    ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use tokio_util::sync::CancellationToken;

use super::RunOptions;
use crate::{
    api::{Model, Workspace},
    context::Context,
    runtime::{
        cache::{Cache, cache},
        watch::lenient_watcher,
    },
};

/// The controller's name in metrics and logs.
pub const CONTROLLER: &str = "model";
/// The field manager of the Model status.
pub const MANAGER: &str = "atrium-model";

/// What a Model reconcile reads besides the Model.
pub(crate) struct Caches {
    /// Every Model the controller reconciles (its own store), for duplicate versions.
    models: OnceLock<Store<Model>>,
    /// Every Workspace: the one whose `status.namespace` is the Model's has the storage claim.
    workspaces: Cache<Workspace>,
}

/// Runs the Model controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, opts: RunOptions, shutdown: CancellationToken) {
    let config = watcher::Config::default().any_semantic();
    let (workspaces, workspace_events) =
        cache(lenient_watcher::<Workspace>(ctx.client.clone(), config.clone(), CONTROLLER, ctx.metrics.clone()));
    // A second watch of Models, for deletions too: removing (or registering) a version can make
    // another object of the same version a duplicate or not.
    let model_config = match &opts.object_selector {
        Some(selector) => config.labels(selector),
        None => config,
    };
    // (No store: the controller's own holds the Models.)
    let model_events = lenient_watcher::<Model>(ctx.client.clone(), model_config, CONTROLLER, ctx.metrics.clone())
        .default_backoff()
        .touched_objects();
    let caches = Arc::new(Caches { models: OnceLock::new(), workspaces });

    let setup_caches = caches.clone();
    let setup = move |controller: kube::runtime::Controller<Model>| {
        let models = controller.store();
        let _ = setup_caches.models.set(models.clone());
        let in_namespace = models.clone();
        controller
            .watches_stream(workspace_events, move |ws: Workspace| {
                let namespace = ws.status.and_then(|s| s.namespace);
                in_namespace
                    .state()
                    .into_iter()
                    .filter(|m| namespace.is_some() && m.namespace() == namespace)
                    .map(|m| ObjectRef::from_obj(m.as_ref()))
                    .collect::<Vec<_>>()
            })
            .watches_stream(model_events, move |changed: Model| {
                models
                    .state()
                    .into_iter()
                    .filter(|m| m.namespace() == changed.namespace() && status::same_version(m, &changed))
                    .map(|m| ObjectRef::from_obj(m.as_ref()))
                    .collect::<Vec<_>>()
            })
    };
    super::run::<Model, _, _>(
        CONTROLLER,
        ctx,
        opts,
        setup,
        move |model, ctx| reconcile::reconcile(model, ctx, caches.clone()),
        shutdown,
    )
    .await;
}
