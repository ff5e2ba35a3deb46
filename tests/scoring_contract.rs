//! The Azure ML scoring contract, checked locally (no cluster): the serving container the operator
//! builds for an `AzureML` deployment is run as a local process — its exact command, arguments
//! and environment, with each volume mount mapped to a temporary folder — using the real Azure ML
//! inference HTTP server (`azureml-inference-server-http`), a real scikit-learn model trained by
//! the quickstart's `train.py` and its real `score.py`; a POST to `/score` must return the right
//! predictions.
//!
//! The server and scikit-learn are installed with pip into a virtualenv under the target
//! directory the first time (about a minute), then reused.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use atrium::{
    api::{
        ModelDeployment, instance_type::default_instance_type, model::ModelSource,
        model_deployment::ModelDeploymentSpec,
    },
    controller::{
        model::build::{WorkspaceStorage, locate},
        model_deployment::build::{self, DeploymentPlan, Images, ServedModel},
    },
};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Container};
use serde_json::{Value, json};

/// What the virtualenv gets. The server's major version is the contract under test.
const REQUIREMENTS: [&str; 2] = ["azureml-inference-server-http>=1.5,<2", "scikit-learn>=1.4"];

/// The quickstart scoring script, as a user puts it in the code ConfigMap.
const SCORE_PY: &str = include_str!("../examples/quickstart/score.py");

/// The quickstart's training script: writes `model.pkl` (joblib) to `ATRIUM_OUTPUT_DIR`.
const TRAIN_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart/train.py");

/// A virtualenv with the requirements, made once and reused while the requirements stay the same.
fn virtualenv() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("scoring-venv");
    let stamp = venv.join("atrium-requirements.txt");
    let wanted = REQUIREMENTS.join("\n");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return venv;
    }
    let run = |cmd: &mut Command, what: &str| {
        let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e} (needs python3 with venv)"));
        assert!(
            out.status.success(),
            "{what} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let _ = std::fs::remove_dir_all(&venv);
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv), "python3 -m venv");
    run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(REQUIREMENTS),
        "pip install azureml-inference-server-http scikit-learn",
    );
    std::fs::write(&stamp, wanted).unwrap();
    venv
}

/// The deployment a user would write for the quickstart, built by the operator's pure builder
/// with the model resolved the way the controllers resolve it.
fn serving_deployment() -> (ModelDeployment, Deployment) {
    let spec: ModelDeploymentSpec = serde_json::from_value(json!({
        "deployments": [{
            "name": "blue",
            "model": {"name": "iris", "version": 1},
            "code": {"configMap": "iris-score", "scoringScript": "score.py"},
            "requestSettings": {"requestTimeoutMs": 3000, "maxConcurrentRequestsPerInstance": 2},
        }]
    }))
    .unwrap();
    let mut md = ModelDeployment::new("iris", spec);
    md.metadata.namespace = Some("team-a".into());
    md.metadata.uid = Some("00000000-0000-0000-0000-000000000001".into());

    let source = ModelSource { storage_path: Some("runs/train-iris/outputs".into()), uri: None };
    let storage = WorkspaceStorage::Claim { workspace: "team-a".into(), claim: "atrium-storage".into() };
    let location = locate(&source, &storage).unwrap();
    let model = ServedModel { name: "iris".into(), version: 1, location };
    let spec = &md.spec.deployments[0];
    let plan = DeploymentPlan {
        spec,
        model: Some(model),
        image: spec.effective_image().unwrap().to_owned(),
        instance_type: default_instance_type().spec,
        service_account: Some("atrium-inference".into()),
    };
    let deployment = build::model_server(&md, &plan, &Images::defaults());
    (md, deployment)
}

/// The container's filesystem, with each mount a link to a local folder: `/x/y` is `root/x/y`.
struct Filesystem {
    root: PathBuf,
}

impl Filesystem {
    fn path(&self, container_path: &str) -> PathBuf {
        self.root.join(container_path.trim_start_matches('/'))
    }

    /// An argument or environment value with any absolute path mapped into the root.
    fn map(&self, value: &str) -> String {
        if value.starts_with('/') { self.path(value).to_string_lossy().into_owned() } else { value.to_owned() }
    }
}

/// Makes each of the container's mounts, from the pod's volumes: the workspace claim is
/// `storage`, a ConfigMap is a folder with its keys as files, an emptyDir an empty folder.
fn mount_volumes(
    deployment: &Deployment,
    container: &Container,
    fs: &Filesystem,
    storage: &Path,
    config_maps: &BTreeMap<&str, BTreeMap<&str, &str>>,
    scratch: &Path,
) {
    let pod = deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    for mount in container.volume_mounts.iter().flatten() {
        let volume = pod.volumes.iter().flatten().find(|v| v.name == mount.name).expect("every mount has a volume");
        let mut source = if let Some(claim) = &volume.persistent_volume_claim {
            assert_eq!(claim.claim_name, "atrium-storage", "the model comes from the workspace claim");
            assert_eq!(claim.read_only, Some(true));
            storage.to_path_buf()
        } else if let Some(cm) = &volume.config_map {
            let dir = scratch.join("configmaps").join(&cm.name);
            std::fs::create_dir_all(&dir).unwrap();
            for (key, content) in config_maps.get(cm.name.as_str()).expect("a ConfigMap the test provides") {
                std::fs::write(dir.join(key), content).unwrap();
            }
            dir
        } else if volume.empty_dir.is_some() {
            let dir = scratch.join("empty").join(&volume.name);
            std::fs::create_dir_all(&dir).unwrap();
            dir
        } else {
            panic!("volume {} has a source this test does not know", volume.name)
        };
        if let Some(sub_path) = &mount.sub_path {
            source = source.join(sub_path);
        }
        assert!(source.exists(), "{} does not exist", source.display());
        let target = fs.path(&mount.mount_path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&source, &target).unwrap();
    }
}

/// The server process, stopped (with its gunicorn workers) when dropped.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The server leads its own process group (gunicorn and its workers): signal the group.
        let group = format!("-{}", self.child.id());
        for (signal, grace) in [("-TERM", Duration::from_secs(10)), ("-KILL", Duration::from_secs(5))] {
            let _ = Command::new("kill").args([signal, "--", &group]).status();
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// One HTTP/1.1 request on loopback: (status, body).
fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

#[test]
fn the_azureml_server_runs_the_built_container_and_scores_with_the_real_script_and_model() {
    let venv = virtualenv();
    let scratch = tempfile::tempdir().unwrap();
    let fs = Filesystem { root: scratch.path().join("container") };

    // The workspace storage, with the outputs of a quickstart training run.
    let storage = scratch.path().join("storage");
    let outputs = storage.join("runs/train-iris/outputs");
    let trained =
        Command::new(venv.join("bin/python")).arg(TRAIN_PY).env("ATRIUM_OUTPUT_DIR", &outputs).output().unwrap();
    assert!(trained.status.success(), "training failed: {}", String::from_utf8_lossy(&trained.stderr));

    let (_md, deployment) = serving_deployment();
    let container = deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].clone();
    assert_eq!(container.command.as_deref(), Some(&[build::AZUREML_SERVER_COMMAND.to_owned()][..]));
    assert!(
        venv.join("bin").join(build::AZUREML_SERVER_COMMAND).exists(),
        "the package provides the command the container runs"
    );

    let config_maps = BTreeMap::from([("iris-score", BTreeMap::from([("score.py", SCORE_PY)]))]);
    mount_volumes(&deployment, &container, &fs, &storage, &config_maps, scratch.path());

    // The container's command and environment, paths mapped into the root; the container port
    // mapped to a free local one (as `docker run -p` would).
    let container_port = container.ports.as_ref().unwrap()[0].container_port;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut args: Vec<String> = container.args.clone().unwrap_or_default().iter().map(|a| fs.map(a)).collect();
    let port_arg = args.iter().position(|a| a == "--port").expect("the port is given to the server") + 1;
    assert_eq!(args[port_arg], container_port.to_string());
    args[port_arg] = port.to_string();
    let env: Vec<(String, String)> = container
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), fs.map(e.value.as_deref().expect("plain values only"))))
        .collect();
    let log = scratch.path().join("server.log");
    let out = std::fs::File::create(&log).unwrap();
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", venv.join("bin").display());
    let child = Command::new(&container.command.as_ref().unwrap()[0])
        .args(&args)
        .env_clear()
        .envs(env)
        .env("PATH", path)
        .env("HOME", scratch.path())
        .current_dir(scratch.path())
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .process_group(0)
        .spawn()
        .expect("start azmlinfsrv");
    let mut server = Server { child, log };

    // Ready when the liveness path answers, as the kubelet would probe it.
    let liveness = container.liveness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.clone().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok((200, _)) = http(port, "GET", &liveness, "") {
            break;
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("the server exited ({status}):\n{}", server.logs());
        }
        assert!(Instant::now() < deadline, "the server did not answer {liveness} in 120 s:\n{}", server.logs());
        std::thread::sleep(Duration::from_millis(250));
    }

    let (status, body) =
        http(port, "POST", "/score", r#"{"data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 2.8, 4.3, 1.3]]}"#)
            .expect("POST /score");
    assert_eq!(status, 200, "{body}\n{}", server.logs());
    let answer: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(answer, json!({"predictions": ["setosa", "virginica", "versicolor"]}));

    let (status, body) = http(port, "POST", "/score", r#"{"rows": []}"#).unwrap();
    assert_eq!(status, 400, "a malformed request is the caller's error: {body}");

    let logs = server.logs();
    assert!(logs.contains("loaded model from"), "init() ran with the model from AZUREML_MODEL_DIR:\n{logs}");
}
