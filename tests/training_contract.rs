//! The training contract, checked without a cluster: the Job the operator builds for a run is
//! run as a local process — its container's command, arguments, environment and working
//! directory exactly as in the pod template, its volume mounts mapped to temporary folders laid
//! out as the kubelet would (the snapshot ConfigMap's files, sub-paths of the workspace
//! storage) — and the real quickstart script (scikit-learn on its bundled iris data) must leave
//! its model in the outputs folder, which is `runs/<run>/outputs` on the workspace storage.
//!
//! Needs `python3` with scikit-learn; when scikit-learn is missing it is installed with pip.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use atrium::{
    api::{ComputeCluster, InstanceType, TrainingRun, instance_type::default_instance_type},
    controller::training_run::build::{self, CodeMount, JobInputs},
};
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::json;

/// The real interpreter behind `python3` (not a version-manager shim), with scikit-learn.
fn python_with_sklearn() -> PathBuf {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let run = |args: &[&str]| Command::new(&python).args(args).output();
    let probe = run(&["-c", "import sys; print(sys.executable)"])
        .unwrap_or_else(|e| panic!("the training contract test needs python3 on PATH (or $PYTHON): {e}"));
    assert!(probe.status.success(), "python3 does not run: {}", String::from_utf8_lossy(&probe.stderr));
    let exe = PathBuf::from(String::from_utf8(probe.stdout).unwrap().trim());

    let has_sklearn = || run(&["-c", "import sklearn, joblib"]).is_ok_and(|o| o.status.success());
    if !has_sklearn() {
        eprintln!("installing scikit-learn with pip for the training contract test");
        let install = run(&["-m", "pip", "install", "--quiet", "scikit-learn"]).expect("run pip");
        if !install.status.success() {
            // Interpreters managed by the OS refuse plain installs (PEP 668).
            let again = run(&["-m", "pip", "install", "--quiet", "--break-system-packages", "scikit-learn"]);
            assert!(
                again.is_ok_and(|o| o.status.success()),
                "could not install scikit-learn (`{python} -m pip install scikit-learn`): {}",
                String::from_utf8_lossy(&install.stderr)
            );
        }
        assert!(has_sklearn(), "scikit-learn is still not importable by {python} after installing it");
    }
    exe
}

fn quickstart_run() -> TrainingRun {
    serde_json::from_value(json!({
        "apiVersion": "atrium.dev/v1alpha1", "kind": "TrainingRun",
        "metadata": {"name": "iris-train", "namespace": "team-a", "uid": "0a1b2c3d"},
        "spec": {
            "experiment": "quickstart",
            "computeCluster": "cpu",
            "image": "python:3.12-slim",
            "command": ["python", "train.py"],
            "env": [{"name": "MAX_ITER", "value": "300"}],
            "code": {"configMap": "quickstart-code"},
            "inputs": {"iris_notes": {"storagePath": "datasets/iris"}},
            "registerModel": {"name": "iris"}
        }
    }))
    .unwrap()
}

/// Maps a container path to the host folder its mount stands for: the longest mount path that
/// is a prefix wins, as in a container.
fn host_path(mounts: &BTreeMap<String, PathBuf>, container_path: &str) -> Option<PathBuf> {
    mounts
        .iter()
        .filter(|(m, _)| container_path == m.as_str() || container_path.starts_with(&format!("{m}/")))
        .max_by_key(|(m, _)| m.len())
        .map(|(m, host)| host.join(container_path[m.len()..].trim_start_matches('/')))
}

#[test]
fn the_quickstart_script_runs_as_the_job_describes_and_leaves_its_model_in_the_outputs() {
    let python = python_with_sklearn();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script =
        std::fs::read_to_string(root.join("examples/quickstart/train.py")).expect("examples/quickstart/train.py");

    // What the operator builds: the snapshot of the code ConfigMap, and the Job.
    let run = quickstart_run();
    let source = ConfigMap { data: Some(BTreeMap::from([("train.py".to_owned(), script)])), ..Default::default() };
    let snapshot = build::snapshot_config_map(&run, &source);
    let cluster: ComputeCluster = serde_json::from_value(json!({
        "apiVersion": "atrium.dev/v1alpha1", "kind": "ComputeCluster",
        "metadata": {"name": "cpu", "namespace": "team-a", "uid": "cc"}, "spec": {}
    }))
    .unwrap();
    let itype: InstanceType = default_instance_type();
    let job = build::training_job(&JobInputs {
        run: &run,
        cluster: &cluster,
        itype: &itype,
        claim: "team-a-storage",
        code: Some(CodeMount::Snapshot(snapshot.metadata.name.clone().unwrap())),
        inputs: BTreeMap::from([("iris_notes".to_owned(), "datasets/iris".to_owned())]),
    });
    let pod = job.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.containers.len(), 1);
    let container = &pod.containers[0];

    // The volumes, laid out on the host: the workspace storage is a folder, the snapshot's
    // files are written the way the kubelet projects a ConfigMap.
    let tmp = tempfile::tempdir().unwrap();
    let storage = tmp.path().join("storage");
    std::fs::create_dir_all(storage.join("datasets/iris")).unwrap();
    std::fs::write(storage.join("datasets/iris/README"), "iris ships with scikit-learn\n").unwrap();
    let mut volumes = BTreeMap::new();
    for volume in pod.volumes.iter().flatten() {
        if let Some(claim) = &volume.persistent_volume_claim {
            assert_eq!(claim.claim_name, "team-a-storage");
            volumes.insert(volume.name.clone(), storage.clone());
        } else if let Some(cm) = &volume.config_map {
            assert_eq!(Some(&cm.name), snapshot.metadata.name.as_ref());
            let dir = tmp.path().join(format!("configmap-{}", volume.name));
            std::fs::create_dir_all(&dir).unwrap();
            for (file, content) in snapshot.data.iter().flatten() {
                std::fs::write(dir.join(file), content).unwrap();
            }
            volumes.insert(volume.name.clone(), dir);
        } else {
            panic!("a volume kind the contract test does not know: {volume:?}");
        }
    }
    let mut mounts = BTreeMap::new();
    for mount in container.volume_mounts.iter().flatten() {
        let mut host = volumes[&mount.name].clone();
        if let Some(sub) = &mount.sub_path {
            host = host.join(sub);
            // The kubelet creates a missing sub-path.
            std::fs::create_dir_all(&host).unwrap();
        }
        mounts.insert(mount.mount_path.clone(), host);
    }

    // The environment, with container paths mapped to the host.
    let mut env = BTreeMap::new();
    for var in container.env.iter().flatten() {
        let value = var.value.clone().unwrap_or_else(|| {
            panic!("{} comes from {:?}: not expected in a single-instance run", var.name, var.value_from)
        });
        let mapped = host_path(&mounts, &value).map(|p| p.display().to_string()).unwrap_or(value);
        env.insert(var.name.clone(), mapped);
    }
    let workdir = host_path(&mounts, container.working_dir.as_deref().expect("the code is the working directory"))
        .expect("the working directory is a mount");

    let command: Vec<String> =
        container.command.iter().flatten().chain(container.args.iter().flatten()).cloned().collect();
    assert_eq!(command, ["python", "train.py"]);
    let output = Command::new(&python)
        .args(&command[1..])
        .current_dir(&workdir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", tmp.path())
        .envs(&env)
        .output()
        .expect("run the training script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the training script failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("run iris-train"), "ATRIUM_RUN_NAME reached the script: {stdout}");

    // The model is in the outputs folder: runs/<run>/outputs on the workspace storage, where
    // the registered Model version points.
    let outputs = storage.join(build::outputs_path(&run));
    assert_eq!(PathBuf::from(&env["ATRIUM_OUTPUT_DIR"]), outputs);
    let model = outputs.join("model.pkl");
    assert!(model.is_file(), "no model.pkl in {}", outputs.display());
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(outputs.join("metrics.json")).unwrap()).unwrap();
    assert!(metrics["accuracy"].as_f64().unwrap() > 0.8, "{metrics}");
    let registered = build::registered_model(&run, "iris", 1);
    assert_eq!(registered.spec.source.storage_path.as_deref(), Some("runs/iris-train/outputs"));

    // And it is a model: it loads and classifies a setosa.
    let predict = Command::new(&python)
        .args(["-c", "import joblib, sys; print(joblib.load(sys.argv[1]).predict([[5.1, 3.5, 1.4, 0.2]])[0])"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(predict.status.success(), "{}", String::from_utf8_lossy(&predict.stderr));
    assert_eq!(String::from_utf8_lossy(&predict.stdout).trim(), "0");

    // The code and inputs were mounted read-only, the outputs read-write.
    let read_only: BTreeMap<_, _> =
        container.volume_mounts.iter().flatten().map(|m| (m.mount_path.as_str(), m.read_only == Some(true))).collect();
    assert!(read_only[build::CODE_DIR]);
    assert!(read_only["/atrium/inputs/iris_notes"]);
    assert!(!read_only[build::OUTPUT_DIR]);
}
