//! Pure: where a Model's files are. A Model has no children; what it "builds" is its resolved
//! location, `pvc://<claim>/<path>` for workspace storage or the `uri` itself.

use crate::api::{Workspace, model::ModelSource};

/// The scheme of a resolved location on the workspace storage.
pub const PVC_SCHEME: &str = "pvc://";

/// Where a model version's files are, as the serving side needs to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelLocation {
    /// A file or directory on a PersistentVolumeClaim of the namespace.
    Claim { claim: String, path: String },
    /// An `https://` or `s3://` URL to download.
    Uri(String),
}

impl ModelLocation {
    /// Parses a `resolvedUri`: `pvc://<claim>/<path>`, or an https/s3 URL.
    pub fn parse(resolved_uri: &str) -> Option<Self> {
        if let Some(rest) = resolved_uri.strip_prefix(PVC_SCHEME) {
            let (claim, path) = rest.split_once('/')?;
            let path = path.trim_matches('/');
            return (!claim.is_empty() && !path.is_empty())
                .then(|| Self::Claim { claim: claim.to_owned(), path: path.to_owned() });
        }
        (resolved_uri.starts_with("https://") || resolved_uri.starts_with("s3://"))
            .then(|| Self::Uri(resolved_uri.to_owned()))
    }

    /// The `resolvedUri` form.
    pub fn to_uri(&self) -> String {
        match self {
            Self::Claim { claim, path } => format!("{PVC_SCHEME}{claim}/{path}"),
            Self::Uri(uri) => uri.clone(),
        }
    }

    /// The last path segment: the name the files get under the model directory (Azure ML
    /// keeps the registered file or folder name under `AZUREML_MODEL_DIR`).
    pub fn file_name(&self) -> String {
        let path = match self {
            Self::Claim { path, .. } => path.as_str(),
            Self::Uri(uri) => {
                let no_scheme = uri.split_once("://").map_or(uri.as_str(), |(_, rest)| rest);
                let no_query = no_scheme.split(['?', '#']).next().unwrap_or_default();
                // `s3://bucket` or `https://host` alone has no path: the bucket or host is no file name.
                no_query.split_once('/').map_or("", |(_, path)| path)
            }
        };
        path.trim_end_matches('/').rsplit('/').next().filter(|s| !s.is_empty()).unwrap_or("model").to_owned()
    }
}

/// What the workspace storage of a namespace looks like to a Model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkspaceStorage {
    /// No Workspace has this namespace in `status.namespace`.
    NoWorkspace,
    /// The Workspace exists but reports no storage claim (yet).
    NoClaim { workspace: String },
    /// The claim models are read from.
    Claim { workspace: String, claim: String },
}

impl WorkspaceStorage {
    /// The storage of the Workspace owning `namespace` among `workspaces`. When (wrongly) more
    /// than one claims it, one with a claim wins, then the first by name, so the answer is stable.
    pub fn of_namespace<'a>(namespace: &str, workspaces: impl IntoIterator<Item = &'a Workspace>) -> Self {
        let mut owners: Vec<(&str, Option<&str>)> = workspaces
            .into_iter()
            .filter_map(|ws| {
                let status = ws.status.as_ref()?;
                (status.namespace.as_deref() == Some(namespace)).then(|| {
                    let claim = status.storage.as_ref().and_then(|s| s.claim_name.as_deref()).filter(|c| !c.is_empty());
                    (ws.metadata.name.as_deref().unwrap_or_default(), claim)
                })
            })
            .collect();
        owners.sort_by_key(|(name, claim)| (claim.is_none(), *name));
        match owners.first() {
            None => Self::NoWorkspace,
            Some((workspace, None)) => Self::NoClaim { workspace: (*workspace).to_owned() },
            Some((workspace, Some(claim))) => {
                Self::Claim { workspace: (*workspace).to_owned(), claim: (*claim).to_owned() }
            }
        }
    }
}

/// The location of a Model's files, or why it has none.
pub fn locate(source: &ModelSource, storage: &WorkspaceStorage) -> Result<ModelLocation, (&'static str, String)> {
    if let Some(uri) = &source.uri {
        return Ok(ModelLocation::Uri(uri.clone()));
    }
    let path = source.storage_path.as_deref().unwrap_or_default().trim_matches('/');
    match storage {
        WorkspaceStorage::Claim { claim, .. } => {
            Ok(ModelLocation::Claim { claim: claim.clone(), path: path.to_owned() })
        }
        WorkspaceStorage::NoWorkspace => Err((
            super::status::REASON_WORKSPACE_NOT_FOUND,
            format!(
                "storagePath {path:?} is read from the workspace storage, but no Workspace owns this namespace; \
                 create a Workspace for it or use source.uri"
            ),
        )),
        WorkspaceStorage::NoClaim { workspace } => Err((
            super::status::REASON_STORAGE_NOT_READY,
            format!(
                "storagePath {path:?} is read from the storage of Workspace {workspace:?}, which has no storage claim yet"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{WorkspaceSpec, WorkspaceStatus, workspace::WorkspaceStorageStatus};

    fn workspace(name: &str, namespace: &str, claim: Option<&str>) -> Workspace {
        let mut ws = Workspace::new(name, WorkspaceSpec::default());
        ws.status = Some(WorkspaceStatus {
            namespace: Some(namespace.into()),
            storage: claim.map(|c| WorkspaceStorageStatus { claim_name: Some(c.into()), ..Default::default() }),
            ..Default::default()
        });
        ws
    }

    #[test]
    fn locations_round_trip() {
        for uri in
            ["pvc://ws-storage/runs/train/outputs/model", "https://example.com/m.onnx", "s3://bucket/models/iris/"]
        {
            assert_eq!(ModelLocation::parse(uri).unwrap().to_uri(), uri);
        }
        assert_eq!(
            ModelLocation::parse("pvc://c/a/b/").unwrap(),
            ModelLocation::Claim { claim: "c".into(), path: "a/b".into() }
        );
        assert_eq!(ModelLocation::parse("pvc://c"), None);
        assert_eq!(ModelLocation::parse("ftp://x/y"), None);
    }

    #[test]
    fn file_names_are_the_last_segment() {
        let name = |uri: &str| ModelLocation::parse(uri).unwrap().file_name();
        assert_eq!(name("pvc://c/runs/train/outputs/model"), "model");
        assert_eq!(name("pvc://c/model.pkl"), "model.pkl");
        assert_eq!(name("https://example.com/files/iris.onnx?sig=abc"), "iris.onnx");
        assert_eq!(name("s3://bucket/models/iris/"), "iris");
        assert_eq!(name("s3://bucket"), "model");
        assert_eq!(name("https://example.com/"), "model");
    }

    #[test]
    fn the_workspace_owning_the_namespace_gives_the_claim() {
        let wss = [workspace("other", "elsewhere", Some("x")), workspace("team", "team-ns", Some("team-storage"))];
        assert_eq!(
            WorkspaceStorage::of_namespace("team-ns", &wss),
            WorkspaceStorage::Claim { workspace: "team".into(), claim: "team-storage".into() }
        );
        assert_eq!(WorkspaceStorage::of_namespace("nobody", &wss), WorkspaceStorage::NoWorkspace);
        let pending = [workspace("team", "team-ns", None)];
        assert_eq!(
            WorkspaceStorage::of_namespace("team-ns", &pending),
            WorkspaceStorage::NoClaim { workspace: "team".into() }
        );
    }

    #[test]
    fn sources_locate_on_storage_or_by_uri() {
        let claim = WorkspaceStorage::Claim { workspace: "w".into(), claim: "c".into() };
        let stored = ModelSource { storage_path: Some("runs/r/outputs/".into()), uri: None };
        assert_eq!(locate(&stored, &claim).unwrap().to_uri(), "pvc://c/runs/r/outputs");
        let (reason, message) = locate(&stored, &WorkspaceStorage::NoWorkspace).unwrap_err();
        assert_eq!(reason, "WorkspaceNotFound");
        assert!(message.contains("no Workspace owns this namespace"), "{message}");
        let remote = ModelSource { storage_path: None, uri: Some("s3://b/m".into()) };
        assert_eq!(locate(&remote, &WorkspaceStorage::NoWorkspace).unwrap(), ModelLocation::Uri("s3://b/m".into()));
    }
}
