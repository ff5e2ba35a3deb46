//! Running a pod's container as a local process, exactly as its spec says — command, arguments,
//! environment, working directory and volume mounts — with each volume mapped to a local folder.
//! The demo uses it to run what the operator generated (training Jobs, scoring servers) on a
//! machine without a container runtime, and the contract tests use it to check those specs.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use k8s_openapi::api::core::v1::{Container, PodSpec};

/// Where a pod's volumes come from on this machine.
#[derive(Default)]
pub struct LocalVolumes {
    /// PersistentVolumeClaim name → the folder that stands for it.
    pub claims: BTreeMap<String, PathBuf>,
    /// ConfigMap or Secret name → its files (key → content).
    pub files: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// Where ConfigMap, Secret and emptyDir volumes are written out.
    pub scratch: PathBuf,
}

/// A container as a local process.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalProcess {
    /// `command` followed by `args`, paths inside the container mapped to local ones.
    pub argv: Vec<String>,
    /// The container's environment, paths inside the container mapped to local ones.
    pub env: BTreeMap<String, String>,
    /// The working directory, mapped.
    pub workdir: Option<PathBuf>,
    /// Mount path in the container → local folder.
    pub mounts: BTreeMap<String, PathBuf>,
    /// A folder standing for the container's root: each mount is a link in it, so that folders
    /// above mounts (e.g. a model root holding mounted versions) exist too.
    pub root: PathBuf,
}

impl LocalProcess {
    /// The local path for a path inside the container: inside a mount, the mount's folder;
    /// above mounts, the same path under `root`; elsewhere, `None`.
    pub fn host_path(&self, container_path: &str) -> Option<PathBuf> {
        host_path(&self.mounts, &self.root, container_path)
    }
}

fn host_path(mounts: &BTreeMap<String, PathBuf>, root: &Path, container_path: &str) -> Option<PathBuf> {
    let inside = |m: &str| container_path == m || container_path.starts_with(&format!("{}/", m.trim_end_matches('/')));
    if let Some((m, host)) = mounts.iter().filter(|(m, _)| inside(m)).max_by_key(|(m, _)| m.len()) {
        let rest = container_path[m.len()..].trim_start_matches('/');
        return Some(if rest.is_empty() { host.clone() } else { host.join(rest) });
    }
    let above = container_path.starts_with('/')
        && mounts.keys().any(|m| m.starts_with(&format!("{}/", container_path.trim_end_matches('/'))));
    above.then(|| root.join(container_path.trim_start_matches('/')))
}

/// `value` mapped when it is a path inside or above a mount.
fn map_path(mounts: &BTreeMap<String, PathBuf>, root: &Path, value: &str) -> String {
    host_path(mounts, root, value).map(|p| p.display().to_string()).unwrap_or_else(|| value.to_string())
}

/// The local process for `container` (an init container or a container) of `pod`. Writes out
/// ConfigMap, Secret and emptyDir volumes under `volumes.scratch`.
pub fn local_process(pod: &PodSpec, container: &str, volumes: &LocalVolumes) -> Result<LocalProcess, String> {
    let c: &Container = pod
        .init_containers
        .iter()
        .flatten()
        .chain(pod.containers.iter())
        .find(|c| c.name == container)
        .ok_or_else(|| format!("the pod has no container {container:?}"))?;

    let mut volume_dirs = BTreeMap::new();
    for v in pod.volumes.iter().flatten() {
        let dir = if let Some(pvc) = &v.persistent_volume_claim {
            volumes
                .claims
                .get(&pvc.claim_name)
                .cloned()
                .ok_or_else(|| format!("no local folder for claim {:?}", pvc.claim_name))?
        } else {
            let source =
                v.config_map.as_ref().map(|c| (c.name.clone(), c.items.clone())).or_else(|| {
                    v.secret.as_ref().map(|s| (s.secret_name.clone().unwrap_or_default(), s.items.clone()))
                });
            let dir = volumes.scratch.join(&v.name);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            if let Some((name, items)) = source {
                let files = volumes
                    .files
                    .get(&name)
                    .ok_or_else(|| format!("no local content for {name:?} (volume {})", v.name))?;
                for (key, content) in files {
                    // `items` selects keys and renames them; without it every key is a file.
                    let path = match &items {
                        Some(items) => match items.iter().find(|i| &i.key == key) {
                            Some(i) => i.path.clone(),
                            None => continue,
                        },
                        None => key.clone(),
                    };
                    let file = dir.join(path);
                    if let Some(parent) = file.parent() {
                        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                    }
                    std::fs::write(&file, content).map_err(|e| format!("{}: {e}", file.display()))?;
                }
            } else if v.empty_dir.is_none() {
                return Err(format!("volume {} is of a kind that cannot be run locally", v.name));
            }
            dir
        };
        volume_dirs.insert(v.name.clone(), dir);
    }

    let mut mounts = BTreeMap::new();
    for m in c.volume_mounts.iter().flatten() {
        let mut dir = volume_dirs.get(&m.name).cloned().ok_or_else(|| format!("mount of unknown volume {}", m.name))?;
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            dir = dir.join(sub);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        mounts.insert(m.mount_path.clone(), dir);
    }

    // The container's root: a link for every outermost mount.
    let root = volumes.scratch.join("rootfs");
    for (path, dir) in &mounts {
        let nested =
            mounts.keys().any(|other| other != path && path.starts_with(&format!("{}/", other.trim_end_matches('/'))));
        if nested {
            continue;
        }
        let link = root.join(path.trim_start_matches('/'));
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(dir, &link).map_err(|e| format!("{}: {e}", link.display()))?;
    }

    let mut env = BTreeMap::new();
    for var in c.env.iter().flatten() {
        let Some(value) = var.value.clone() else {
            return Err(format!("{} comes from {:?}: only literal values run locally", var.name, var.value_from));
        };
        let value = expand(&value, &env);
        env.insert(var.name.clone(), map_path(&mounts, &root, &value));
    }
    // Arguments were expanded from the container's (unmapped) paths: map them as well.
    let argv: Vec<String> = c
        .command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .map(|a| map_path(&mounts, &root, &expand(a, &env)))
        .collect();
    if argv.is_empty() {
        return Err(format!("container {container} has no command: the image's entrypoint cannot be run locally"));
    }
    let workdir = c
        .working_dir
        .as_deref()
        .map(|w| host_path(&mounts, &root, w).ok_or_else(|| format!("working directory {w} is not a mount")))
        .transpose()?;
    Ok(LocalProcess { argv, env, workdir, mounts, root })
}

/// Kubernetes' `$(VAR)` expansion of earlier variables.
fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = s.to_string();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    out
}

/// A path made absolute against the current directory.
pub fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir().unwrap_or_default().join(p) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mounts_env_and_workdir_are_mapped() {
        let pod: PodSpec = serde_json::from_value(json!({
            "containers": [{
                "name": "main", "command": ["python", "$(CODE)/train.py", "/models/m/1"], "workingDir": "/code",
                "env": [{"name": "CODE", "value": "/code"}, {"name": "OUT", "value": "/data/runs/r/outputs"}, {"name": "X", "value": "1"}],
                "volumeMounts": [
                    {"name": "code", "mountPath": "/code"},
                    {"name": "storage", "mountPath": "/data"},
                    {"name": "storage", "mountPath": "/data/runs/r/outputs", "subPath": "runs/r/outputs"},
                    {"name": "storage", "mountPath": "/models/m/1/outputs", "subPath": "runs/r/outputs"}
                ]
            }],
            "volumes": [
                {"name": "code", "configMap": {"name": "src"}},
                {"name": "storage", "persistentVolumeClaim": {"claimName": "ws"}}
            ]
        }))
        .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let vols = LocalVolumes {
            claims: BTreeMap::from([("ws".into(), tmp.path().join("storage"))]),
            files: BTreeMap::from([("src".into(), BTreeMap::from([("train.py".into(), b"print(1)".to_vec())]))]),
            scratch: tmp.path().join("scratch"),
        };
        let p = local_process(&pod, "main", &vols).unwrap();
        let code = tmp.path().join("scratch/code");
        let model_dir = tmp.path().join("scratch/rootfs/models/m/1");
        assert_eq!(
            p.argv,
            ["python".to_string(), format!("{}/train.py", code.display()), model_dir.display().to_string()]
        );
        assert!(model_dir.join("outputs").is_dir(), "folders above a mount exist, the mount is linked in");
        assert_eq!(p.workdir.as_deref(), Some(code.as_path()));
        assert_eq!(std::fs::read_to_string(code.join("train.py")).unwrap(), "print(1)");
        assert_eq!(
            p.env["OUT"],
            tmp.path().join("storage/runs/r/outputs").display().to_string(),
            "the longest mount wins"
        );
        assert_eq!(p.env["X"], "1");
        assert!(tmp.path().join("storage/runs/r/outputs").is_dir(), "subPath folders are created");
    }

    #[test]
    fn what_cannot_run_locally_is_an_error() {
        let pod: PodSpec = serde_json::from_value(json!({
            "containers": [{"name": "main", "image": "x"}]
        }))
        .unwrap();
        let err = local_process(&pod, "main", &LocalVolumes::default()).unwrap_err();
        assert!(err.contains("no command"), "{err}");
        assert!(local_process(&pod, "other", &LocalVolumes::default()).unwrap_err().contains("no container"));
    }
}
