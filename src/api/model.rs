//! `Model`: one registered version of a model (namespaced, short name `mdl`).

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{
    Condition, MODEL_NAME_MESSAGE, MODEL_NAME_RULE, STORAGE_PATH_MESSAGE, STORAGE_PATH_RULE, model_version_ref,
};

/// Reason: an older Model has the same model name (ignoring case) and version.
pub const REASON_DUPLICATE_VERSION: &str = "DuplicateVersion";

fn default_format() -> String {
    "custom".to_owned()
}

/// The definition of a registered model version: its name, version, files and format. Only
/// `description` and `tags` can be changed after creation.
// clippy reads the `type_ = ...` of several printcolumn(...) lists as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "atrium.dev",
    version = "v1alpha1",
    kind = "Model",
    namespaced,
    status = "ModelStatus",
    shortname = "mdl",
    category = "atrium",
    derive = "PartialEq",
    doc = "A Model is one registered version of a model, like a model version in the Azure ML registry: \
           a name, a version number and where its files are. Only description and tags can be changed \
           after creation; register a new version for anything else.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "Whether the model version can be used"
    ),
    printcolumn(
        name = "Model",
        type_ = "string",
        json_path = ".spec.model",
        description = "The model's registry name"
    ),
    printcolumn(name = "Version", type_ = "integer", json_path = ".spec.version", description = "The model version"),
    printcolumn(name = "Format", type_ = "string", json_path = ".spec.format", description = "The model format"),
    printcolumn(
        name = "URI",
        type_ = "string",
        json_path = ".status.resolvedUri",
        description = "Where the model files are",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "self.model == oldSelf.model && self.version == oldSelf.version && self.source == oldSelf.source && self.format == oldSelf.format"
).message(
    "a registered model version cannot be changed except for description and tags; register a new version instead"
))]
pub struct ModelSpec {
    /// The model's registry name, compared case-insensitively. All versions of a model share it.
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new(MODEL_NAME_RULE).message(MODEL_NAME_MESSAGE))]
    pub model: String,

    /// The version number, a positive integer. Two Models with the same name and version:
    /// the younger one is not Ready (reason `DuplicateVersion`).
    #[schemars(range(min = 1))]
    pub version: i64,

    /// Where the model files are.
    pub source: ModelSource,

    /// The model format, for example `custom` (the default), `mlflow`, `onnx`, `pytorch`,
    /// `tensorflow` or `triton`.
    #[serde(default = "default_format")]
    #[schemars(length(min = 1, max = 64))]
    pub format: String,

    /// A free-text description. Can be changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,

    /// Free-form key/value tags. Can be changed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

impl ModelSpec {
    /// The Azure ML style reference to this version, `name:version`.
    pub fn version_ref(&self) -> String {
        model_version_ref(&self.model, self.version)
    }
}

/// Where a model's files are: exactly one of `storagePath` or `uri`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.storagePath) != has(self.uri)")
    .message("set exactly one of storagePath or uri"))]
pub struct ModelSource {
    /// A file or directory in the workspace storage, relative to its root, for example
    /// `runs/train-42/outputs/model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new(STORAGE_PATH_RULE).message(STORAGE_PATH_MESSAGE))]
    pub storage_path: Option<String>,

    /// An `https://` or `s3://` URL the model files are downloaded from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('s3://')")
        .message("must be an https:// or s3:// URL"))]
    pub uri: Option<String>,
}

/// The observed state of a Model.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The model's conditions, including `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The model files' location: the `uri`, or `pvc://<claim>/<path>` for a `storagePath`
    /// source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_uri: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn format_defaults_to_custom() {
        let spec: ModelSpec = serde_json::from_value(json!({
            "model": "Iris", "version": 3, "source": {"uri": "s3://models/iris"}
        }))
        .unwrap();
        assert_eq!(spec.format, "custom");
        assert_eq!(spec.version_ref(), "Iris:3");
    }
}
