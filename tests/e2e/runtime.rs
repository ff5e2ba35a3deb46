//! The shared toolkit against a real API server: apply skips what is unchanged, prune deletes
//! exactly what is no longer desired, and a watch survives an object it cannot decode.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use atrium::runtime::{
    apply::{APPLIED_HASH, apply, prune},
    metrics::Metrics,
    watch::lenient_watcher,
};
use futures::StreamExt;
use k8s_openapi::{
    api::core::v1::ConfigMap, apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, CustomResource, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::{wait::conditions, watcher},
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::harness::{TestNamespace, client, eventually, wait_for};

fn config_map(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": name, "labels": { "atrium.dev/owner-uid": "test-owner" } },
        "data": { "k": value }
    }))
    .unwrap()
}

#[tokio::test]
async fn apply_writes_only_when_the_desired_child_changed() {
    let ns = TestNamespace::new("apply").await;
    let cms: Api<ConfigMap> = ns.api();
    assert!(apply(&cms, "atrium-test", config_map("c", "1"), None).await.unwrap(), "first apply writes");
    let live = cms.get("c").await.unwrap();
    assert!(live.annotations().contains_key(APPLIED_HASH));
    let rv = live.resource_version();

    let again = apply(&cms, "atrium-test", config_map("c", "1"), Some(&live.metadata)).await.unwrap();
    assert!(!again, "an unchanged child is not written");
    assert_eq!(cms.get("c").await.unwrap().resource_version(), rv);

    assert!(apply(&cms, "atrium-test", config_map("c", "2"), Some(&live.metadata)).await.unwrap());
    assert_eq!(cms.get("c").await.unwrap().data.unwrap()["k"], "2");
}

#[tokio::test]
async fn prune_deletes_exactly_the_children_no_longer_desired() {
    let ns = TestNamespace::new("prune").await;
    let cms: Api<ConfigMap> = ns.api();
    for n in ["keep", "stale-1", "stale-2"] {
        cms.create(&PostParams::default(), &config_map(n, "v")).await.unwrap();
    }
    let existing = cms.list(&ListParams::default().labels("atrium.dev/owner-uid=test-owner")).await.unwrap();
    let metas: Vec<_> = existing.items.iter().map(|c| c.metadata.clone()).collect();

    // "stale-2" is deleted and re-created by someone else before the prune: the uid
    // precondition protects the new object.
    cms.delete("stale-2", &Default::default()).await.unwrap();
    wait_for(&cms, "stale-2", Duration::from_secs(30), |c: Option<&ConfigMap>| c.is_none()).await;
    cms.create(&PostParams::default(), &config_map("stale-2", "new")).await.unwrap();

    let keep = BTreeSet::from(["keep".to_string()]);
    let client = cms.clone().into_client();
    let api = |ns: Option<&str>| Api::<ConfigMap>::namespaced(client.clone(), ns.unwrap_or_default());
    let deleted = prune(api, metas.iter(), &keep).await.unwrap();
    assert_eq!(deleted, 1, "only stale-1: stale-2 is a different object now");
    let names: BTreeSet<String> =
        cms.list(&ListParams::default()).await.unwrap().iter().map(|c| c.name_any()).collect();
    assert!(names.contains("keep") && names.contains("stale-2") && !names.contains("stale-1"), "{names:?}");
}

/// A kind whose Rust type is stricter than its schema: `size` must fit a u8.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "runtime-test.atrium.dev", version = "v1", kind = "Gadget", namespaced)]
struct GadgetSpec {
    size: u8,
}

#[tokio::test]
async fn a_watch_skips_an_undecodable_object_and_keeps_going() {
    let c = client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    // The served schema accepts any integer, so the API server stores size 1000.
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": { "name": "gadgets.runtime-test.atrium.dev" },
        "spec": {
            "group": "runtime-test.atrium.dev", "scope": "Namespaced",
            "names": { "kind": "Gadget", "plural": "gadgets", "singular": "gadget" },
            "versions": [{ "name": "v1", "served": true, "storage": true, "schema": { "openAPIV3Schema": {
                "type": "object", "properties": { "spec": { "type": "object", "properties": { "size": { "type": "integer" } } } }
            }}}]
        }
    }))
    .unwrap();
    crds.patch("gadgets.runtime-test.atrium.dev", &PatchParams::apply("atrium-tests").force(), &Patch::Apply(&crd))
        .await
        .unwrap();
    wait_for(&crds, "gadgets.runtime-test.atrium.dev", Duration::from_secs(30), conditions::is_crd_established()).await;

    let ns = TestNamespace::new("lenient").await;
    // Written untyped: the typed client could not even read the bad object back.
    let ar = kube::core::ApiResource::erase::<Gadget>(&());
    let gadgets: Api<kube::api::DynamicObject> = Api::namespaced_with(c.clone(), &ns.name, &ar);
    let raw = |name: &str, size: i64| json!({ "apiVersion": "runtime-test.atrium.dev/v1", "kind": "Gadget", "metadata": { "name": name }, "spec": { "size": size } });
    eventually("the gadget CRD to be served", Duration::from_secs(30), || async {
        gadgets.patch("bad", &PatchParams::apply("atrium-tests"), &Patch::Apply(&raw("bad", 1000))).await.ok()
    })
    .await;

    let metrics = Arc::new(Metrics::default());
    let config = watcher::Config::default().fields(&format!("metadata.namespace={}", ns.name));
    let mut names = Box::pin(
        lenient_watcher::<Gadget>(c.clone(), config, "gadget", metrics.clone())
            .filter_map(|e| futures::future::ready(e.ok()))
            .filter_map(|e| {
                futures::future::ready(match e {
                    watcher::Event::Apply(g) | watcher::Event::InitApply(g) => Some(g.name_any()),
                    _ => None,
                })
            }),
    );
    gadgets.patch("good", &PatchParams::apply("atrium-tests"), &Patch::Apply(&raw("good", 3))).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(30), names.next()).await.expect("the good object arrives");
    assert_eq!(first.as_deref(), Some("good"), "the undecodable object is skipped, the good one is not");
    assert!(
        metrics.render().contains("atrium_undecodable_objects_total{controller=\"gadget\"} 1"),
        "{}",
        metrics.render()
    );
}
