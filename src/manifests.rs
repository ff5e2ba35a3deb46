//! Every manifest generated from the code and committed: the CRDs (for `kubectl apply` and for the
//! Helm chart) and the workspace ClusterRoles (for the chart). `make crds` writes them
//! (`crdgen`); a test fails when the committed files drift from what this module generates.

use std::path::PathBuf;

use crate::{
    api::{all_crds, crd_file_name, crd_yaml},
    controller::workspace::cluster_roles,
};

/// The folders this module owns: every `*.yaml` in them is generated.
pub const DIRS: [&str; 3] = ["crds", "charts/atrium/files/crds", "charts/atrium/files/workspace-roles"];

/// Each generated file, as a path relative to the repository root and its content.
pub fn generated() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    for crd in all_crds() {
        let yaml = crd_yaml(&crd);
        files.push((PathBuf::from(DIRS[0]).join(crd_file_name(&crd)), yaml.clone()));
        files.push((PathBuf::from(DIRS[1]).join(crd_file_name(&crd)), yaml));
    }
    for role in cluster_roles() {
        let name = role.metadata.name.clone().expect("workspace roles are named");
        let yaml = serde_yaml::to_string(&role).expect("a ClusterRole serializes to YAML");
        let text = format!("# Generated from src/controller/workspace by `make crds`; do not edit.\n{yaml}");
        files.push((PathBuf::from(DIRS[2]).join(format!("{name}.yaml")), text));
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_in_an_owned_folder_and_named_once() {
        let files = generated();
        let mut paths: Vec<_> = files.iter().map(|(p, _)| p.clone()).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), files.len());
        assert!(files.iter().all(|(p, _)| DIRS.iter().any(|d| p.starts_with(d))));
        assert_eq!(files.len(), 6 * 2 + 3);
    }
}
