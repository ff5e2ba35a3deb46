//! Read-only caches of objects a controller reads but does not reconcile: the nodes an instance
//! type is matched against, the pods of a run, the objects a spec refers to.
//!
//! Each cache is filled by a watch whose events are also the controller's triggers: [`cache`]
//! returns the cache and the stream of touched objects to hand to `owns_stream` or
//! `watches_stream`. A reconcile awaits [`Cache::synced`] before it trusts what the cache says,
//! so an empty cache right after start-up is never mistaken for "nothing exists". (kube's
//! `Store::wait_until_ready` wakes one waiter only; several reconciles wait here at once.)

use std::{fmt::Debug, hash::Hash, time::Duration};

use futures::{Stream, StreamExt};
use kube::{
    Resource,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use tokio::sync::watch;

/// How long a reconcile waits for a cache's first listing before it fails (and backs off).
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// A cache of `K` and whether its first complete listing has arrived.
pub struct Cache<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    synced: watch::Receiver<bool>,
}

impl<K> Clone for Cache<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    fn clone(&self) -> Self {
        Self { store: self.store.clone(), synced: self.synced.clone() }
    }
}

/// The first listing of a cache did not arrive within [`SYNC_TIMEOUT`].
#[derive(Debug, thiserror::Error)]
#[error("the cache has not synced yet")]
pub struct NotSynced;

impl<K> Cache<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    /// The objects seen so far.
    pub fn store(&self) -> &Store<K> {
        &self.store
    }

    /// Whether the first complete listing is in the cache.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until the first complete listing is in the cache, at most [`SYNC_TIMEOUT`].
    pub async fn synced(&self) -> Result<(), NotSynced> {
        let mut rx = self.synced.clone();
        match tokio::time::timeout(SYNC_TIMEOUT, rx.wait_for(|synced| *synced)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(NotSynced),
        }
    }
}

/// Reflects `events` (a watch, with its errors backed off) into a new cache. The returned stream
/// yields every object applied or deleted, and must be polled for the cache to fill: give it to
/// the controller as a trigger.
pub fn cache<K, S>(events: S) -> (Cache<K>, impl Stream<Item = Result<K, watcher::Error>> + Send + 'static)
where
    K: Resource + Clone + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Default + Send + Sync,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let (store, writer) = reflector::store();
    let (tx, synced) = watch::channel(false);
    let touched = events
        .default_backoff()
        .reflect(writer)
        // After `reflect`: the store has swapped in the complete listing by the time we see it.
        .inspect(move |event| {
            if matches!(event, Ok(watcher::Event::InitDone)) {
                tx.send_replace(true);
            }
        })
        .touched_objects();
    (Cache { store, synced }, touched)
}

/// A watch of `K` as a watch of what a cache keeps of it, `project(object)`: for kinds whose
/// objects are large and of which a controller reads little.
pub fn project<K, T, S>(
    events: S,
    project: impl Fn(K) -> T + Send + 'static,
) -> impl Stream<Item = Result<watcher::Event<T>, watcher::Error>> + Send + 'static
where
    K: Send + 'static,
    T: Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    events.map(move |event| {
        event.map(|event| match event {
            watcher::Event::Apply(o) => watcher::Event::Apply(project(o)),
            watcher::Event::Delete(o) => watcher::Event::Delete(project(o)),
            watcher::Event::Init => watcher::Event::Init,
            watcher::Event::InitApply(o) => watcher::Event::InitApply(project(o)),
            watcher::Event::InitDone => watcher::Event::InitDone,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn cm(name: &str) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.into());
        cm.metadata.namespace = Some("ns".into());
        cm
    }

    #[tokio::test]
    async fn synced_only_after_the_first_complete_listing() {
        let events = futures::stream::iter(vec![
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(cm("a"))),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Apply(cm("b"))),
        ]);
        let (cache, touched) = cache::<ConfigMap, _>(events);
        assert!(!cache.is_synced());
        let names: Vec<String> = touched.map(|o| o.unwrap().metadata.name.unwrap()).collect::<Vec<_>>().await;
        assert_eq!(names, ["a", "b"]);
        assert!(cache.is_synced());
        cache.synced().await.unwrap();
        assert_eq!(cache.store().len(), 2);
    }
}
