//! `atrium-local`: runs what the operator generated — a training Job, a model server Deployment,
//! an endpoint's router — as local processes, exactly as their specs say, with the workspace
//! storage claim mapped to a local folder. `make demo` uses it to print a real prediction on a
//! machine whose cluster nodes are simulated.

use std::{
    collections::BTreeMap,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use atrium::local::{LocalProcess, LocalVolumes, absolute, local_process};
use clap::{Parser, Subcommand};
use k8s_openapi::{
    ByteString,
    api::{
        apps::v1::Deployment,
        batch::v1::Job,
        core::v1::{ConfigMap, PodSpec, Secret},
    },
};
use kube::{Api, Client};

#[derive(Parser)]
#[command(version, about = "Run Atrium's generated workloads as local processes")]
struct Args {
    /// Namespace of the object.
    #[arg(short, long, global = true, default_value = "default")]
    namespace: String,
    /// Local folder that stands for every PersistentVolumeClaim (the workspace storage).
    #[arg(long, global = true, default_value = "target/demo/storage")]
    storage: PathBuf,
    /// Local folder for ConfigMap, Secret and emptyDir volumes.
    #[arg(long, global = true, default_value = "target/demo/scratch")]
    scratch: PathBuf,
    /// Folders put first on PATH (e.g. a Python virtualenv's bin/).
    #[arg(long, global = true)]
    path_prepend: Vec<PathBuf>,
    /// Print the process that would run (argv, environment, working directory, mounts) and exit.
    #[arg(long, global = true)]
    dry_run: bool,
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Runs the Job's container to completion and exits with its exit code.
    Job { name: String },
    /// Runs the Deployment's container (replacing this process), serving on `--port`.
    Deployment {
        name: String,
        /// Container to run (default: the first).
        #[arg(long)]
        container: Option<String>,
        /// Local port for the server (replaces the value of its `--port` argument).
        #[arg(long)]
        port: u16,
    },
    /// Runs an endpoint's router Deployment (replacing this process) with `--bin` as the router
    /// and each deployment's backend replaced by a local address.
    Router {
        name: String,
        /// The atrium-router binary.
        #[arg(long)]
        bin: PathBuf,
        /// Local address for requests.
        #[arg(long)]
        listen: String,
        /// Local address for /healthz, /readyz and /metrics.
        #[arg(long)]
        admin_listen: String,
        /// `<deployment>=<base URL>` for each deployment of the endpoint.
        #[arg(long, value_parser = parse_backend)]
        backend: Vec<(String, String)>,
    },
}

fn parse_backend(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(a, b)| (a.to_string(), b.to_string())).ok_or_else(|| "expected <deployment>=<url>".into())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::try_default().await.context("a cluster from KUBECONFIG")?;
    let ns = args.namespace.as_str();
    match &args.what {
        What::Job { name } => {
            let job = Api::<Job>::namespaced(client.clone(), ns)
                .get(name)
                .await
                .with_context(|| format!("Job {ns}/{name}"))?;
            let pod = job.spec.and_then(|s| s.template.spec).context("the Job has no pod template")?;
            let container = pod.containers.first().context("the Job has no container")?.name.clone();
            let process = prepare(&client, ns, &pod, &container, &args).await?;
            let status = command(&process, &args).status().context("starting the training process")?;
            std::process::exit(status.code().unwrap_or(1));
        }
        What::Deployment { name, container, port } => {
            let d = Api::<Deployment>::namespaced(client.clone(), ns)
                .get(name)
                .await
                .with_context(|| format!("Deployment {ns}/{name}"))?;
            let pod = d.spec.and_then(|s| s.template.spec).context("the Deployment has no pod template")?;
            let container = container.clone().unwrap_or_else(|| pod.containers[0].name.clone());
            let mut process = prepare(&client, ns, &pod, &container, &args).await?;
            set_flag(&mut process.argv, "--port", &port.to_string());
            Err(command(&process, &args).exec()).context("starting the server")
        }
        What::Router { name, bin, listen, admin_listen, backend } => {
            let d = Api::<Deployment>::namespaced(client.clone(), ns)
                .get(name)
                .await
                .with_context(|| format!("Deployment {ns}/{name}"))?;
            let pod = d.spec.and_then(|s| s.template.spec).context("the router Deployment has no pod template")?;
            let container = pod.containers[0].name.clone();
            let mut process = prepare(&client, ns, &pod, &container, &args).await?;
            // The image's entrypoint is the router binary; the pod spec gives only its arguments.
            process.argv.insert(0, absolute(bin).display().to_string());
            set_flag(&mut process.argv, "--listen", listen);
            set_flag(&mut process.argv, "--admin-listen", admin_listen);
            let config_path = flag(&process.argv, "--config").context("the router has no --config")?;
            // Arguments are already mapped to local paths.
            let local_config = PathBuf::from(&config_path);
            if !local_config.is_file() {
                bail!("the router's config {config_path} is not in a mounted volume");
            }
            let backends: BTreeMap<_, _> = backend.iter().cloned().collect();
            rewrite_backends(&local_config, &backends)?;
            Err(command(&process, &args).exec()).context("starting the router")
        }
    }
}

/// Fetches what the pod's volumes reference and maps the container to a local process.
async fn prepare(
    client: &Client,
    ns: &str,
    pod: &PodSpec,
    container: &str,
    args: &Args,
) -> anyhow::Result<LocalProcess> {
    let mut volumes = LocalVolumes { scratch: absolute(&args.scratch), ..Default::default() };
    std::fs::create_dir_all(&args.storage)?;
    for v in pod.volumes.iter().flatten() {
        if let Some(pvc) = &v.persistent_volume_claim {
            volumes.claims.insert(pvc.claim_name.clone(), absolute(&args.storage));
        }
        if let Some(cm) = &v.config_map {
            let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
                .get(&cm.name)
                .await
                .with_context(|| format!("ConfigMap {}", cm.name))?;
            let mut files: BTreeMap<String, Vec<u8>> =
                cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
            files.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, ByteString(v))| (k, v)));
            volumes.files.insert(cm.metadata.name.unwrap_or_default(), files);
        }
        if let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            let s = Api::<Secret>::namespaced(client.clone(), ns)
                .get(&name)
                .await
                .with_context(|| format!("Secret {name}"))?;
            let files = s.data.unwrap_or_default().into_iter().map(|(k, ByteString(v))| (k, v)).collect();
            volumes.files.insert(name, files);
        }
    }
    local_process(pod, container, &volumes).map_err(anyhow::Error::msg)
}

fn command(p: &LocalProcess, args: &Args) -> Command {
    if args.dry_run {
        println!("{p:#?}");
        std::process::exit(0);
    }
    let path_prepend = &args.path_prepend;
    let mut path: Vec<PathBuf> = path_prepend.iter().map(|p| absolute(p)).collect();
    path.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    let mut c = Command::new(&p.argv[0]);
    c.args(&p.argv[1..]).envs(&p.env).env("PATH", std::env::join_paths(path).unwrap_or_default());
    if let Some(dir) = &p.workdir {
        c.current_dir(dir);
    }
    c
}

/// The value of `--name value` or `--name=value` in `argv`.
fn flag(argv: &[String], name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    argv.iter().enumerate().find_map(|(i, a)| {
        if a == name { argv.get(i + 1).cloned() } else { a.strip_prefix(&prefix).map(str::to_string) }
    })
}

/// Sets `--name` to `value` in `argv`, replacing an existing value or appending the flag.
fn set_flag(argv: &mut Vec<String>, name: &str, value: &str) {
    let prefix = format!("{name}=");
    if let Some(i) = argv.iter().position(|a| a == name)
        && i + 1 < argv.len()
    {
        argv[i + 1] = value.to_string();
        return;
    }
    if let Some(a) = argv.iter_mut().find(|a| a.starts_with(&prefix)) {
        *a = format!("{name}={value}");
        return;
    }
    argv.extend([name.to_string(), value.to_string()]);
}

/// Points each deployment of the router's config at its local server.
fn rewrite_backends(config: &Path, backends: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let mut cfg: atrium_router::config::RouterConfig =
        serde_json::from_slice(&std::fs::read(config)?).with_context(|| format!("{}", config.display()))?;
    for b in &mut cfg.deployments {
        match backends.get(&b.name) {
            Some(url) => b.url = url.clone(),
            None => bail!("no --backend for deployment {}", b.name),
        }
    }
    std::fs::write(config, serde_json::to_vec_pretty(&cfg)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_read_and_replaced_in_both_spellings() {
        let mut argv: Vec<String> = ["srv", "--port", "5001", "--listen=0.0.0.0:8080"].map(String::from).to_vec();
        assert_eq!(flag(&argv, "--port").as_deref(), Some("5001"));
        assert_eq!(flag(&argv, "--listen").as_deref(), Some("0.0.0.0:8080"));
        set_flag(&mut argv, "--port", "7000");
        set_flag(&mut argv, "--listen", "127.0.0.1:1");
        set_flag(&mut argv, "--admin-listen", "127.0.0.1:2");
        assert_eq!(argv, ["srv", "--port", "7000", "--listen=127.0.0.1:1", "--admin-listen", "127.0.0.1:2"]);
    }
}
