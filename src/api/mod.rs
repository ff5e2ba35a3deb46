//! The `atrium.dev/v1alpha1` API: one module per kind, the shared types, and the generated
//! CustomResourceDefinitions.
//!
//! Use [`all_crds`] (or [`crd`]) rather than `CustomResourceExt::crd` directly: it tidies the
//! generated schemas into what the API server stores.

pub mod common;
pub mod compute_cluster;
pub mod instance_type;
pub mod model;
pub mod model_deployment;
pub mod training_run;
pub mod workspace;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

pub use common::{Condition, ContainerResources, ModelReference};
pub use compute_cluster::{ComputeCluster, ComputeClusterSpec, ComputeClusterStatus};
pub use instance_type::{InstanceType, InstanceTypeSpec, InstanceTypeStatus};
pub use model::{Model, ModelSpec, ModelStatus};
pub use model_deployment::{ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus};
pub use training_run::{TrainingRun, TrainingRunSpec, TrainingRunStatus};
pub use workspace::{Workspace, WorkspaceSpec, WorkspaceStatus};

/// The API group of every Atrium kind.
pub const GROUP: &str = "atrium.dev";
/// The API version of every Atrium kind.
pub const VERSION: &str = "v1alpha1";
/// The condition type every kind reports, and that `kubectl wait --for=condition=Ready` uses.
pub const READY: &str = "Ready";

/// Access to the conditions in a kind's status.
pub trait HasConditions {
    /// The conditions, empty when there is no status yet.
    fn conditions(&self) -> &[Condition];

    /// The condition of this type.
    fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions().iter().find(|c| c.type_ == type_)
    }

    /// Whether the condition of this type has status `True`.
    fn is_condition_true(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == "True")
    }

    /// Whether the `Ready` condition is `True`.
    fn is_ready(&self) -> bool {
        self.is_condition_true(READY)
    }
}

macro_rules! impl_has_conditions {
    ($($kind:ty => $status:ty),* $(,)?) => {$(
        impl HasConditions for $status {
            fn conditions(&self) -> &[Condition] {
                &self.conditions
            }
        }

        impl HasConditions for $kind {
            fn conditions(&self) -> &[Condition] {
                self.status.as_ref().map_or(&[], |s| &s.conditions)
            }
        }
    )*};
}

impl_has_conditions! {
    Workspace => WorkspaceStatus,
    InstanceType => InstanceTypeStatus,
    ComputeCluster => ComputeClusterStatus,
    TrainingRun => TrainingRunStatus,
    Model => ModelStatus,
    ModelDeployment => ModelDeploymentStatus,
}

/// The CustomResourceDefinitions of every Atrium kind, as installed in a cluster.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![
        crd::<Workspace>(),
        crd::<InstanceType>(),
        crd::<ComputeCluster>(),
        crd::<TrainingRun>(),
        crd::<Model>(),
        crd::<ModelDeployment>(),
    ]
}

/// The CustomResourceDefinition of one kind, with its schema tidied: no `nullable` (a `null`
/// is pruned like an absent field, so schema defaults still apply), no schemars `title`,
/// descriptions reflowed into paragraphs, and no empty `required`, `enum` or `properties` that
/// the API server would drop.
pub fn crd<K: CustomResourceExt>() -> CustomResourceDefinition {
    let mut crd = K::crd();
    for version in &mut crd.spec.versions {
        let Some(schema) = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) else {
            continue;
        };
        let mut value = serde_json::to_value(&*schema).expect("a JSONSchemaProps serializes");
        tidy_schema(&mut value);
        *schema = serde_json::from_value(value).expect("a tidied schema is still a JSONSchemaProps");
    }
    crd
}

/// The file a CRD is written to by `crdgen`: `<plural>.<group>.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or_default())
}

/// A CRD as committed under `crds/`: a header comment and the YAML document.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> String {
    let yaml = serde_yaml::to_string(crd).expect("a CustomResourceDefinition serializes to YAML");
    format!("# Generated from src/api by `make crds`; do not edit.\n{yaml}")
}

/// Joins the lines of each paragraph of a doc comment, so `kubectl explain` can wrap the text to
/// the terminal; paragraphs stay separated by a blank line.
fn reflow(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| paragraph.lines().map(str::trim).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Recursively removes what the API server would not store from a schema node.
fn tidy_schema(schema: &mut Value) {
    let Value::Object(node) = schema else {
        return;
    };
    node.remove("nullable");
    node.remove("title");
    if let Some(Value::String(description)) = node.get_mut("description") {
        *description = reflow(description);
    }
    for key in ["required", "enum"] {
        if node.get(key).and_then(Value::as_array).is_some_and(Vec::is_empty) {
            node.remove(key);
        }
    }
    if node.get("properties").and_then(Value::as_object).is_some_and(|p| p.is_empty()) {
        node.remove("properties");
    }
    if let Some(Value::Object(properties)) = node.get_mut("properties") {
        properties.values_mut().for_each(tidy_schema);
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = node.get_mut(key) {
            tidy_schema(child);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(children)) = node.get_mut(key) {
            children.iter_mut().for_each(tidy_schema);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinitionVersion;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn version(crd: &CustomResourceDefinition) -> &CustomResourceDefinitionVersion {
        assert_eq!(crd.spec.versions.len(), 1);
        &crd.spec.versions[0]
    }

    fn schema(crd: &CustomResourceDefinition) -> Value {
        let schema = version(crd).schema.as_ref().unwrap().open_api_v3_schema.as_ref();
        serde_json::to_value(schema.unwrap()).unwrap()
    }

    /// Calls `f(path, node)` for every schema node under `node`.
    fn walk(path: &str, node: &Value, f: &mut impl FnMut(&str, &Value)) {
        f(path, node);
        if let Some(properties) = node.get("properties").and_then(Value::as_object) {
            for (name, child) in properties {
                walk(&format!("{path}.{name}"), child, f);
            }
        }
        if let Some(items) = node.get("items") {
            walk(&format!("{path}[]"), items, f);
        }
        if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
            walk(&format!("{path}{{}}"), values, f);
        }
    }

    #[test]
    fn every_kind_is_in_group_and_category() {
        let crds = all_crds();
        assert_eq!(crds.len(), 6);
        for crd in &crds {
            let names = &crd.spec.names;
            assert_eq!(crd.spec.group, GROUP, "{}", names.kind);
            assert_eq!(version(crd).name, VERSION, "{}", names.kind);
            assert_eq!(names.categories.as_deref(), Some(&["atrium".to_owned()][..]), "{}", names.kind);
            assert_eq!(names.short_names.as_ref().map(Vec::len), Some(1), "{}", names.kind);
        }
    }

    #[test]
    fn scopes_and_short_names_match_design() {
        let expected = [
            ("Workspace", "Cluster", "ws"),
            ("InstanceType", "Cluster", "itype"),
            ("ComputeCluster", "Namespaced", "cc"),
            ("TrainingRun", "Namespaced", "trun"),
            ("Model", "Namespaced", "mdl"),
            ("ModelDeployment", "Namespaced", "mdep"),
        ];
        let actual: Vec<_> = all_crds()
            .into_iter()
            .map(|crd| {
                let short = crd.spec.names.short_names.unwrap().remove(0);
                (crd.spec.names.kind, crd.spec.scope, short)
            })
            .collect();
        let expected: Vec<_> = expected.iter().map(|(k, s, n)| (k.to_string(), s.to_string(), n.to_string())).collect();
        assert_eq!(actual, expected);
    }

    #[test]
    fn every_kind_has_status_subresource_and_ready_and_age_columns() {
        for crd in all_crds() {
            let kind = &crd.spec.names.kind;
            let version = version(&crd);
            let status = version.subresources.as_ref().and_then(|s| s.status.as_ref());
            assert!(status.is_some(), "{kind} has no status subresource");

            let columns = version.additional_printer_columns.as_deref().unwrap_or_default();
            let ready = columns.iter().find(|c| c.name == "Ready");
            assert_eq!(
                ready.map(|c| c.json_path.as_str()),
                Some(r#".status.conditions[?(@.type=="Ready")].status"#),
                "{kind} has no Ready column"
            );
            assert_eq!(columns.first().map(|c| c.name.as_str()), Some("Ready"), "{kind}");
            let age = columns.last().unwrap();
            assert_eq!(
                (age.name.as_str(), age.type_.as_str(), age.json_path.as_str()),
                ("Age", "date", ".metadata.creationTimestamp"),
                "{kind} does not end with an Age column"
            );
        }
    }

    /// The `kubectl explain` guarantee: every field is documented.
    #[test]
    fn every_schema_property_has_a_description() {
        let mut undocumented = Vec::new();
        for crd in all_crds() {
            let kind = crd.spec.names.kind.clone();
            walk(&kind, &schema(&crd), &mut |path, node| {
                let description = node.get("description").and_then(Value::as_str);
                if !path.ends_with("[]") && !path.ends_with("{}") && description.is_none_or(|d| d.trim().is_empty()) {
                    undocumented.push(path.to_owned());
                }
            });
        }
        assert!(undocumented.is_empty(), "fields without a description: {undocumented:#?}");
    }

    #[test]
    fn schemas_are_structural() {
        let mut problems = Vec::new();
        for crd in all_crds() {
            let kind = crd.spec.names.kind.clone();
            walk(&kind, &schema(&crd), &mut |path, node| {
                for key in ["anyOf", "oneOf", "allOf", "not", "nullable", "const", "$ref", "title"] {
                    if node.get(key).is_some() {
                        problems.push(format!("{path}: has {key}"));
                    }
                }
                for key in ["required", "enum"] {
                    if node.get(key).and_then(Value::as_array).is_some_and(Vec::is_empty) {
                        problems.push(format!("{path}: empty {key}"));
                    }
                }
                let typed = node.get("type").and_then(Value::as_str).is_some()
                    || node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
                    || node.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
                if !typed {
                    problems.push(format!("{path}: no single type"));
                }
            });
        }
        assert!(problems.is_empty(), "non-structural schema: {problems:#?}");
    }

    #[test]
    fn reflow_joins_lines_and_keeps_paragraphs() {
        assert_eq!(reflow("one\ntwo\n\nthree\n  four"), "one two\n\nthree four");
    }

    #[test]
    fn crd_yaml_is_deterministic() {
        let first: Vec<_> = all_crds().iter().map(crd_yaml).collect();
        let second: Vec<_> = all_crds().iter().map(crd_yaml).collect();
        assert_eq!(first, second);
        assert_eq!(crd_file_name(&all_crds()[0]), "workspaces.atrium.dev.yaml");
    }

    #[test]
    fn conditions_helpers() {
        let condition = |type_: &str, status: &str| Condition {
            type_: type_.into(),
            status: status.into(),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
            message: String::new(),
            observed_generation: None,
            reason: "Test".into(),
        };
        let mut ws = Workspace::default();
        assert!(!ws.is_ready());
        ws.status = Some(WorkspaceStatus {
            conditions: vec![condition(READY, "True"), condition("StorageReady", "False")],
            ..Default::default()
        });
        assert!(ws.is_ready());
        assert!(!ws.is_condition_true(workspace::STORAGE_READY));
        assert_eq!(ws.condition("StorageReady").map(|c| c.status.as_str()), Some("False"));
        assert!(ws.condition("Missing").is_none());
    }

    #[test]
    fn objects_built_in_rust_serialize_without_empty_fields() {
        let ws = Workspace::new("team-a", WorkspaceSpec::default());
        assert_eq!(
            serde_json::to_value(&ws).unwrap(),
            serde_json::json!({
                "apiVersion": "atrium.dev/v1alpha1",
                "kind": "Workspace",
                "metadata": {"name": "team-a"},
                "spec": {"deletionPolicy": "Retain"},
            })
        );
        let back: Workspace = serde_json::from_value(serde_json::to_value(&ws).unwrap()).unwrap();
        assert_eq!(back, ws);
    }

    #[test]
    fn status_serializes_only_what_is_set() {
        let status = model_deployment::ModelDeploymentStatus {
            scoring_uri: Some("http://blue.team-a".into()),
            ..Default::default()
        };
        assert_eq!(serde_json::to_value(status).unwrap(), serde_json::json!({"scoringUri": "http://blue.team-a"}));
    }
}
