//! What every reconcile gets: the client, metrics, the event reporter and per-object backoff.

use std::sync::Arc;

use tokio::sync::Semaphore;

use kube::{
    Client, Resource,
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use tracing::warn;

use crate::{
    health::Health,
    runtime::{backoff::Backoff, metrics::Metrics, own_writes::OwnWrites, settle::Settle},
};

pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub backoff: Backoff,
    /// Progress-only status changes waiting to settle before they are written.
    pub settle: Settle,
    /// Status writes the caches may not have caught up with yet.
    pub own_writes: OwnWrites,
    recorder: Recorder,
    /// Events being published in the background, at most [`EVENTS_IN_FLIGHT`].
    events_in_flight: Arc<Semaphore>,
}

/// How many Events may be on their way to the API server at once; beyond that an Event is
/// dropped with a log line (Events are best-effort, as client-go's recorder treats them).
const EVENTS_IN_FLIGHT: usize = 256;

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
            own_writes: OwnWrites::default(),
            events_in_flight: Arc::new(Semaphore::new(EVENTS_IN_FLIGHT)),
        }
    }

    /// Publishes an Event on `obj` in the background: a reconcile never waits for it, so an
    /// Event does not add a round trip to reaching Ready. Controllers call it on transitions and
    /// errors only, never on every reconcile. Must be called within the Tokio runtime.
    pub fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
        action: &str,
    ) {
        let Ok(permit) = self.events_in_flight.clone().try_acquire_owned() else {
            warn!(reason, "dropping an event: {EVENTS_IN_FLIGHT} are already being published");
            return;
        };
        let ev = Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
        let (recorder, reference) = (self.recorder.clone(), obj.object_ref(&()));
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&ev, &reference).await {
                warn!(error = %e, reason = %ev.reason, "could not publish an event");
            }
            drop(permit);
        });
    }
}
