//! What every reconcile gets: the client, metrics, the event reporter and per-object backoff.

use std::sync::Arc;

use kube::{
    Client, Resource,
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use tracing::warn;

use crate::{
    health::Health,
    runtime::{backoff::Backoff, metrics::Metrics, settle::Settle},
};

pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub backoff: Backoff,
    /// Progress-only status changes waiting to settle before they are written.
    pub settle: Settle,
    recorder: Recorder,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, health: Arc<Health>, instance: &str) -> Self {
        let reporter = Reporter { controller: "atrium-operator".into(), instance: Some(instance.into()) };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            health,
            backoff: Backoff::default(),
            settle: Settle::default(),
        }
    }

    /// Publishes an Event on `obj`. Controllers call it on transitions and errors only, never
    /// on every reconcile.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
        action: &str,
    ) {
        let ev = Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            warn!(error = %e, reason, "could not publish an event");
        }
    }
}
