//! The labels and owner references every child carries.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use super::naming::label_value;

pub const NAME: &str = "app.kubernetes.io/name";
pub const INSTANCE: &str = "app.kubernetes.io/instance";
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const PART_OF: &str = "app.kubernetes.io/part-of";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The prefix of Atrium's own labels and annotations.
pub const ATRIUM_PREFIX: &str = "atrium.dev/";
/// The kind of the Atrium object a child belongs to (lower case).
pub const OWNER_KIND: &str = "atrium.dev/owner-kind";
/// The name of the Atrium object a child belongs to (as a label value).
pub const OWNER_NAME: &str = "atrium.dev/owner-name";
/// The uid of the Atrium object a child belongs to: what pruning selects on.
pub const OWNER_UID: &str = "atrium.dev/owner-uid";

pub const MANAGER: &str = "atrium";

/// Selects the children of one kind of Atrium object (`kind` in lower case). The controllers'
/// watches of children use it, so a cache holds neither objects Atrium does not manage nor
/// another controller's children.
pub fn children_of_kind(kind: &str) -> String {
    format!("{MANAGED_BY}={MANAGER},{OWNER_KIND}={kind}")
}

/// The labels a controller reads from a cached child: Atrium's own (`atrium.dev/...`: owner and
/// deployment) and the component. Caches keep only these; the rest of a child's labels (the
/// `app.kubernetes.io` set, `pod-template-hash`) would be most of its cached size.
pub fn read_by_controllers(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(k, _)| k.starts_with(ATRIUM_PREFIX) || k.as_str() == COMPONENT)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Selects the children of one owner.
pub fn owner_selector<K: Resource<DynamicType = ()>>(owner: &K) -> String {
    format!("{OWNER_UID}={}", owner.uid().unwrap_or_default())
}

/// Standard labels for a child of `owner` playing `component`.
pub fn child_labels<K: Resource<DynamicType = ()>>(owner: &K, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME.into(), "atrium".into()),
        (INSTANCE.into(), label_value(&owner.name_any())),
        (COMPONENT.into(), component.into()),
        (PART_OF.into(), "atrium".into()),
        (MANAGED_BY.into(), MANAGER.into()),
        (OWNER_KIND.into(), K::kind(&()).to_ascii_lowercase()),
        (OWNER_NAME.into(), label_value(&owner.name_any())),
        (OWNER_UID.into(), owner.uid().unwrap_or_default()),
    ])
}

/// The controller owner reference to `owner`, or `None` where one is not allowed: a namespaced
/// owner can only own children in its own namespace (cluster-scoped owners own anything).
pub fn controller_ref<K: Resource<DynamicType = ()>>(
    owner: &K,
    child_namespace: Option<&str>,
) -> Option<OwnerReference> {
    match (owner.meta().namespace.as_deref(), child_namespace) {
        (Some(own), Some(child)) if own != child => None,
        (Some(_), None) => None,
        _ => owner.controller_owner_ref(&()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn owner(ns: Option<&str>) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some("Owner.Name".into());
        cm.metadata.namespace = ns.map(Into::into);
        cm.metadata.uid = Some("0000-1111".into());
        cm
    }

    #[test]
    fn labels_are_valid_values() {
        let l = child_labels(&owner(Some("a")), "router");
        assert_eq!(l[OWNER_UID], "0000-1111");
        assert!(l[OWNER_NAME].starts_with("owner-name-"));
        assert_eq!(l[OWNER_KIND], "configmap");
    }

    #[test]
    fn never_owns_across_namespaces() {
        let o = owner(Some("a"));
        assert!(controller_ref(&o, Some("a")).is_some_and(|r| r.controller == Some(true)));
        assert!(controller_ref(&o, Some("b")).is_none());
        assert!(controller_ref(&o, None).is_none());
        let cluster_scoped = owner(None);
        assert!(controller_ref(&cluster_scoped, Some("b")).is_some());
    }
}
