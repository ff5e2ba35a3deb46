//! Writing children and status: forced server-side apply with a field manager per controller,
//! skipped when nothing changed; pruning of children no longer desired.

use std::{collections::BTreeSet, fmt::Debug};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, Preconditions},
};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use super::{naming::hex, own_writes::OwnWrites};

/// Annotation on every child: a hash of what Atrium last applied. When the live child (from the
/// metadata cache) carries the hash of the desired child, the apply is skipped, so a reconcile
/// that changes nothing writes nothing. (A field we own that someone else edits is put back the
/// next time the desired child changes; deleting a child re-creates it at once.)
pub const APPLIED_HASH: &str = "atrium.dev/applied-hash";

/// A stable hash of `obj`'s JSON form (struct fields in declaration order, maps sorted).
pub fn content_hash<T: Serialize>(obj: &T) -> String {
    let bytes = serde_json::to_vec(obj).expect("Kubernetes objects serialize");
    hex(&Sha256::digest(&bytes))[..16].to_string()
}

/// Server-side applies `desired` (forced, as `manager`) unless `live` shows the same content was
/// applied before. Returns whether a write was made.
pub async fn apply<K>(api: &Api<K>, manager: &str, mut desired: K, live: Option<&ObjectMeta>) -> kube::Result<bool>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
{
    let hash = content_hash(&desired);
    if live.and_then(|m| m.annotations.as_ref()?.get(APPLIED_HASH)) == Some(&hash) {
        return Ok(false);
    }
    desired.annotations_mut().insert(APPLIED_HASH.into(), hash);
    let name = desired.name_any();
    api.patch(&name, &PatchParams::apply(manager).force(), &Patch::Apply(&desired)).await?;
    Ok(true)
}

/// Server-side applies `status` to the status subresource of `obj` unless it already equals the
/// live status. `status` is the whole status this controller owns; fields it leaves out are
/// removed. A write is recorded in `own` (reconciles wait for the cache to catch up with it).
/// Returns whether a write was made.
pub async fn apply_status<K, S>(
    api: &Api<K>,
    manager: &str,
    own: &OwnWrites,
    obj: &K,
    current: Option<&S>,
    status: &S,
) -> kube::Result<bool>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(false);
    }
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(&obj.name_any(), &PatchParams::apply(manager).force(), &Patch::Apply(&patch)).await?;
    own.wrote(obj);
    Ok(true)
}

/// Deletes the children in `existing` whose names are not in `keep`, each guarded by its uid so
/// a re-created object of the same name is never deleted by mistake. Returns how many were
/// deleted. Deletion is in the background: the garbage collector removes what they own.
pub async fn prune<'a, K>(
    api: impl Fn(Option<&str>) -> Api<K>,
    existing: impl IntoIterator<Item = &'a ObjectMeta>,
    keep: &BTreeSet<String>,
) -> kube::Result<usize>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let mut deleted = 0;
    for meta in existing {
        let Some(name) = meta.name.as_deref() else { continue };
        if keep.contains(name) || meta.deletion_timestamp.is_some() {
            continue;
        }
        let dp = DeleteParams {
            preconditions: Some(Preconditions { uid: meta.uid.clone(), resource_version: None }),
            ..DeleteParams::background()
        };
        match api(meta.namespace.as_deref()).delete(name, &dp).await {
            Ok(_) => deleted += 1,
            Err(e) if is_not_found(&e) || is_conflict(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

/// Whether the API answered 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whether the API answered 409 (a precondition or resourceVersion no longer holds).
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use std::collections::BTreeMap;

    #[test]
    fn the_hash_is_stable_and_sensitive() {
        let mut a = ConfigMap::default();
        a.metadata.name = Some("x".into());
        a.data = Some(BTreeMap::from([("b".into(), "2".into()), ("a".into(), "1".into())]));
        let mut b = a.clone();
        assert_eq!(content_hash(&a), content_hash(&b));
        b.data.as_mut().unwrap().insert("a".into(), "changed".into());
        assert_ne!(content_hash(&a), content_hash(&b));
    }

    #[test]
    fn unchanged_children_are_not_written() {
        // The skip decision is pure: same hash in the live annotation → no write.
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some("x".into());
        let live = ObjectMeta {
            annotations: Some(BTreeMap::from([(APPLIED_HASH.into(), content_hash(&cm))])),
            ..Default::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let wrote = rt.block_on(async {
            // A client for an address where nothing listens: any request would fail.
            let client = kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
            let api: Api<ConfigMap> = Api::namespaced(client, "ns");
            apply(&api, "test", cm, Some(&live)).await
        });
        assert!(!wrote.unwrap());
    }
}
