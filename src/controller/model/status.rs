//! Pure: a Model's status from the other versions in its namespace and the workspace storage.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::build::{WorkspaceStorage, locate};
use crate::{
    api::{Model, ModelStatus, model::REASON_DUPLICATE_VERSION},
    runtime::conditions::{Cond, READY, merge},
};

/// Reason: the model's files are known.
pub const REASON_RESOLVED: &str = "Resolved";
/// Reason: a `storagePath` model in a namespace no Workspace owns.
pub const REASON_WORKSPACE_NOT_FOUND: &str = "WorkspaceNotFound";
/// Reason: the Workspace owning the namespace has no storage claim yet.
pub const REASON_STORAGE_NOT_READY: &str = "StorageNotReady";

/// Whether two Models register the same version of the same model (names ignore case).
pub fn same_version(a: &Model, b: &Model) -> bool {
    a.spec.version == b.spec.version && a.spec.model.eq_ignore_ascii_case(&b.spec.model)
}

/// The order of registration: creation time, then name for Models created in the same second.
fn registration_key(model: &Model) -> (Option<i64>, &str) {
    (model.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()), model.metadata.name.as_deref().unwrap_or(""))
}

/// The oldest other Model in the same namespace registering the same model and version, when
/// it is older than `model`: then `model` is the duplicate. Models being deleted do not count.
pub fn older_duplicate<'a>(model: &Model, others: impl IntoIterator<Item = &'a Model>) -> Option<&'a Model> {
    others
        .into_iter()
        .filter(|other| {
            other.uid() != model.uid()
                && other.namespace() == model.namespace()
                && other.metadata.deletion_timestamp.is_none()
                && same_version(model, other)
        })
        .min_by(|a, b| registration_key(a).cmp(&registration_key(b)))
        .filter(|oldest| registration_key(oldest) < registration_key(model))
}

/// The status a Model should have.
pub fn desired_status(
    model: &Model,
    duplicate_of: Option<&Model>,
    storage: &WorkspaceStorage,
    now: &Time,
) -> ModelStatus {
    let version = model.spec.version_ref();
    let (cond, resolved_uri) = match duplicate_of {
        Some(older) => (
            Cond::fail(
                READY,
                REASON_DUPLICATE_VERSION,
                format!(
                    "version {} of model {:?} is already registered by Model {:?} (model names ignore case); \
                     register a new version instead",
                    model.spec.version,
                    older.spec.model,
                    older.name_any()
                ),
            ),
            None,
        ),
        None => match locate(&model.spec.source, storage) {
            Ok(location) => {
                let uri = location.to_uri();
                (Cond::ok(READY, REASON_RESOLVED, format!("model {version} is at {uri}")), Some(uri))
            }
            Err((reason, message)) => (Cond::fail(READY, reason, message), None),
        },
    };
    let existing = model.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    ModelStatus {
        observed_generation: model.metadata.generation,
        conditions: merge(existing, &[cond], model.metadata.generation, now),
        resolved_uri,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ModelSpec, model::ModelSource};
    use k8s_openapi::jiff::Timestamp;

    pub(crate) fn model(name: &str, model: &str, version: i64, created: i64) -> Model {
        let mut m = Model::new(
            name,
            ModelSpec {
                model: model.into(),
                version,
                source: ModelSource { storage_path: Some(format!("models/{model}/{version}")), uri: None },
                format: "custom".into(),
                description: None,
                tags: Default::default(),
            },
        );
        m.metadata.namespace = Some("team".into());
        m.metadata.uid = Some(format!("uid-{name}"));
        m.metadata.generation = Some(1);
        m.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
        m
    }

    fn t(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    #[test]
    fn the_younger_of_two_equal_versions_is_the_duplicate_ignoring_case() {
        let old = model("iris-1", "Iris", 1, 100);
        let young = model("iris-one", "IRIS", 1, 200);
        let other_version = model("iris-2", "iris", 2, 50);
        let all = [old.clone(), young.clone(), other_version.clone()];
        assert_eq!(older_duplicate(&young, &all).map(|m| m.name_any()), Some("iris-1".into()));
        assert!(older_duplicate(&old, &all).is_none());
        assert!(older_duplicate(&other_version, &all).is_none());

        // Same second: the name decides, so exactly one of them is the duplicate.
        let a = model("a", "iris", 1, 100);
        let b = model("b", "iris", 1, 100);
        assert!(older_duplicate(&a, [&b]).is_none());
        assert!(older_duplicate(&b, [&a]).is_some());

        // The older one being deleted frees the version.
        let mut deleting = old.clone();
        deleting.metadata.deletion_timestamp = Some(t(300));
        assert!(older_duplicate(&young, [&deleting]).is_none());
    }

    #[test]
    fn status_says_why_and_moves_only_on_change() {
        let storage = WorkspaceStorage::Claim { workspace: "team".into(), claim: "team-storage".into() };
        let young = model("iris-one", "iris", 1, 200);
        let old = model("iris-1", "Iris", 1, 100);

        let dup = desired_status(&young, Some(&old), &storage, &t(1000));
        assert_eq!(dup.conditions[0].status, "False");
        assert_eq!(dup.conditions[0].reason, "DuplicateVersion");
        assert!(dup.conditions[0].message.contains("\"iris-1\""), "{}", dup.conditions[0].message);
        assert_eq!(dup.resolved_uri, None);

        let ok = desired_status(&old, None, &storage, &t(1000));
        assert_eq!(ok.resolved_uri.as_deref(), Some("pvc://team-storage/models/Iris/1"));
        assert_eq!(ok.conditions[0].reason, "Resolved");

        let mut again = old.clone();
        again.status = Some(ok.clone());
        assert_eq!(desired_status(&again, None, &storage, &t(2000)), ok, "a no-op reconcile changes nothing");

        let missing = desired_status(&old, None, &WorkspaceStorage::NoWorkspace, &t(1000));
        assert_eq!(missing.conditions[0].reason, "WorkspaceNotFound");
    }
}
