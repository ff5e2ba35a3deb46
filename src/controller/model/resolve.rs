//! Pure: which Model a reference `{name, version?}` means — the named version, or the highest
//! Ready version — with names compared ignoring case.

use kube::ResourceExt;

use crate::api::{HasConditions, Model, ModelReference, READY};

/// Reason: no Model has the referenced name (or version).
pub const REASON_MODEL_NOT_FOUND: &str = "ModelNotFound";
/// Reason: the referenced version exists but is not Ready.
pub const REASON_MODEL_NOT_READY: &str = "ModelNotReady";

/// Why a reference does not resolve: a reason and a message a user can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unresolved {
    pub reason: &'static str,
    pub message: String,
}

/// The Model in `namespace` that `reference` names: the Ready Model of that version, or without
/// a version the Ready Model with the highest version.
pub fn resolve<'a>(
    namespace: &str,
    reference: &ModelReference,
    models: impl IntoIterator<Item = &'a Model>,
) -> Result<&'a Model, Unresolved> {
    let mut candidates: Vec<&Model> = models
        .into_iter()
        .filter(|m| {
            m.namespace().as_deref() == Some(namespace)
                && m.metadata.deletion_timestamp.is_none()
                && m.spec.model.eq_ignore_ascii_case(&reference.name)
        })
        .collect();
    if candidates.is_empty() {
        return Err(Unresolved {
            reason: REASON_MODEL_NOT_FOUND,
            message: format!(
                "no Model registers model {:?} in namespace {namespace:?}; register one (kind: Model, spec.model: {})",
                reference.name, reference.name
            ),
        });
    }
    // Highest version first; within a version, the oldest registration first (the one that is
    // not the duplicate).
    candidates
        .sort_by_key(|m| (std::cmp::Reverse(m.spec.version), m.metadata.creation_timestamp.clone(), m.name_any()));
    if let Some(version) = reference.version {
        let versions: Vec<String> = {
            let mut v: Vec<i64> = candidates.iter().map(|m| m.spec.version).collect();
            v.dedup();
            v.iter().rev().map(i64::to_string).collect()
        };
        candidates.retain(|m| m.spec.version == version);
        if candidates.is_empty() {
            return Err(Unresolved {
                reason: REASON_MODEL_NOT_FOUND,
                message: format!(
                    "model {:?} has no version {version} in namespace {namespace:?} (registered versions: {})",
                    reference.name,
                    versions.join(", ")
                ),
            });
        }
    }
    if let Some(ready) = candidates.iter().find(|m| m.is_ready()) {
        return Ok(ready);
    }
    let newest = candidates[0];
    let why = newest.condition(READY).map(|c| c.message.clone()).filter(|m| !m.is_empty());
    Err(Unresolved {
        reason: REASON_MODEL_NOT_READY,
        message: match (reference.version, why) {
            (Some(_), Some(why)) => {
                format!("Model {:?} ({}) is not Ready: {why}", newest.name_any(), newest.spec.version_ref())
            }
            (Some(_), None) => {
                format!("Model {:?} ({}) is not Ready yet", newest.name_any(), newest.spec.version_ref())
            }
            (None, Some(why)) => format!(
                "no version of model {:?} is Ready; the newest, Model {:?} ({}): {why}",
                reference.name,
                newest.name_any(),
                newest.spec.version_ref()
            ),
            (None, None) => format!("no version of model {:?} is Ready yet", reference.name),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        api::{ModelSpec, ModelStatus, model::ModelSource},
        runtime::conditions::{Cond, merge},
    };
    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

    fn model(name: &str, model: &str, version: i64, ready: bool) -> Model {
        let mut m = Model::new(
            name,
            ModelSpec {
                model: model.into(),
                version,
                source: ModelSource { storage_path: Some("m".into()), uri: None },
                format: "custom".into(),
                description: None,
                tags: Default::default(),
            },
        );
        m.metadata.namespace = Some("team".into());
        m.metadata.creation_timestamp = Some(Time(Timestamp::from_second(version * 10).unwrap()));
        let cond =
            if ready { Cond::ok(READY, "Resolved", "") } else { Cond::fail(READY, "WorkspaceNotFound", "no ws") };
        m.status = Some(ModelStatus {
            conditions: merge(&[], &[cond], None, &Time(Timestamp::UNIX_EPOCH)),
            ..Default::default()
        });
        m
    }

    fn reference(name: &str, version: Option<i64>) -> ModelReference {
        ModelReference { name: name.into(), version }
    }

    #[test]
    fn without_a_version_the_highest_ready_version_wins() {
        let models =
            [model("iris-1", "Iris", 1, true), model("iris-2", "iris", 2, true), model("iris-3", "IRIS", 3, false)];
        let found = resolve("team", &reference("iris", None), &models).unwrap();
        assert_eq!(found.name_any(), "iris-2");
        assert!(resolve("other", &reference("iris", None), &models).is_err(), "other namespaces do not count");
    }

    #[test]
    fn a_named_version_must_exist_and_be_ready() {
        let models = [model("iris-1", "iris", 1, true), model("iris-3", "iris", 3, false)];
        assert_eq!(resolve("team", &reference("IRIS", Some(1)), &models).unwrap().name_any(), "iris-1");

        let missing = resolve("team", &reference("iris", Some(2)), &models).unwrap_err();
        assert_eq!(missing.reason, REASON_MODEL_NOT_FOUND);
        assert!(missing.message.contains("registered versions: 1, 3"), "{}", missing.message);

        let not_ready = resolve("team", &reference("iris", Some(3)), &models).unwrap_err();
        assert_eq!(not_ready.reason, REASON_MODEL_NOT_READY);
        assert!(not_ready.message.contains("no ws"), "{}", not_ready.message);
    }

    #[test]
    fn an_unknown_model_says_how_to_fix_it() {
        let err = resolve("team", &reference("fraud", None), &[]).unwrap_err();
        assert_eq!(err.reason, REASON_MODEL_NOT_FOUND);
        assert!(err.message.contains("register one"), "{}", err.message);
        let none_ready = resolve("team", &reference("iris", None), &[model("iris-1", "iris", 1, false)]).unwrap_err();
        assert_eq!(none_ready.reason, REASON_MODEL_NOT_READY);
    }

    #[test]
    fn of_duplicates_the_ready_one_is_used() {
        let mut dup = model("iris-1b", "iris", 1, false);
        dup.metadata.creation_timestamp = Some(Time(Timestamp::from_second(99).unwrap()));
        let models = [dup, model("iris-1", "iris", 1, true)];
        assert_eq!(resolve("team", &reference("iris", Some(1)), &models).unwrap().name_any(), "iris-1");
    }
}
