//! Watches that one bad object cannot stop.
//!
//! A typed watch fails as a whole when a single object does not decode (an old object from
//! before a schema change, say), and restarting it fails again: nothing reconciles. Here the
//! watch is untyped and each object is decoded on its own; one that fails is logged, counted
//! and skipped, and the rest flow on.

use std::{fmt::Debug, sync::Arc};

use futures::{Stream, StreamExt};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ApiResource, DynamicObject},
    runtime::watcher::{self, Event},
};
use serde::de::DeserializeOwned;
use tracing::warn;

use super::metrics::Metrics;

/// Objects per page when a watch of many objects lists them (at start, and again when a watch
/// expires). A listing is held whole as decoded objects until each is cached (cut down, for
/// children), and the allocator keeps what a peak took: 1000 endpoints' pods in one response
/// were some 60 MiB for a moment. Such watches also leave out `any_semantic`, with which the
/// API server answers from its cache in one response whatever the page size.
pub const LIST_PAGE: u32 = 100;

/// A watch of `K` (all namespaces) whose undecodable objects are skipped.
pub fn lenient_watcher<K>(
    client: Client,
    config: watcher::Config,
    controller: &'static str,
    metrics: Arc<Metrics>,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug + Send + 'static,
{
    let ar = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = Api::all_with(client, &ar);
    watcher::watcher(api, config).filter_map(move |event| {
        let metrics = metrics.clone();
        let decode = move |o: DynamicObject| -> Option<K> {
            let name = o.name_any();
            let ns = o.namespace().unwrap_or_default();
            match serde_json::to_value(o).and_then(serde_json::from_value::<K>) {
                Ok(k) => Some(k),
                Err(e) => {
                    metrics.undecodable(controller);
                    warn!(controller, namespace = %ns, name = %name, error = %e, "skipping an object that does not decode");
                    None
                }
            }
        };
        let out = match event {
            Err(e) => Some(Err(e)),
            Ok(Event::Init) => Some(Ok(Event::Init)),
            Ok(Event::InitDone) => Some(Ok(Event::InitDone)),
            Ok(Event::InitApply(o)) => decode(o).map(|k| Ok(Event::InitApply(k))),
            Ok(Event::Apply(o)) => decode(o).map(|k| Ok(Event::Apply(k))),
            Ok(Event::Delete(o)) => decode(o).map(|k| Ok(Event::Delete(k))),
        };
        futures::future::ready(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    #[test]
    fn a_bad_object_does_not_decode_but_a_good_one_does() {
        let good: DynamicObject = serde_json::from_value(
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}}),
        )
        .unwrap();
        let bad: DynamicObject = serde_json::from_value(
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}, "data": {"k": 3}}),
        )
        .unwrap();
        assert!(serde_json::to_value(good).and_then(serde_json::from_value::<ConfigMap>).is_ok());
        assert!(serde_json::to_value(bad).and_then(serde_json::from_value::<ConfigMap>).is_err());
    }
}
