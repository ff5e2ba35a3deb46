//! What every integration test needs: a client from `KUBECONFIG`, a namespace of its own that is
//! removed afterwards, and waiting for a condition with a timeout (never a bare sleep).

use std::{fmt::Debug, future::Future, time::Duration};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::{
    Api, Client, Resource,
    api::{DeleteParams, PostParams},
    runtime::wait::{Condition, await_condition},
};
use serde::de::DeserializeOwned;

/// A client for the cluster `make test` started. Fails loudly (rather than skipping) without one.
pub async fn client() -> Client {
    if std::env::var_os("KUBECONFIG").is_none() {
        panic!(
            "integration tests need a cluster: run them with `make test` (or `make cluster` and KUBECONFIG=target/cluster/kubeconfig)"
        );
    }
    Client::try_default().await.expect("a client from KUBECONFIG")
}

/// A short random suffix, so cluster-scoped names of concurrent tests never collide.
pub fn unique(prefix: &str) -> String {
    let n: u32 = rand::random();
    format!("{prefix}-{n:08x}")
}

/// A namespace owned by one test: created with its `default` ServiceAccount in place (the
/// ServiceAccount admission plugin refuses pods before that), deleted when dropped.
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

impl TestNamespace {
    pub async fn new(prefix: &str) -> Self {
        let client = client().await;
        let name = unique(prefix);
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { "atrium.dev/test": "true" } }
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("create test namespace");
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        wait_for(&sas, "default", Duration::from_secs(30), |sa: Option<&ServiceAccount>| sa.is_some()).await;
        Self { name, client }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop cannot be async and tests may run on a current-thread runtime: delete from a
        // thread of our own with its own small runtime.
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                if let Ok(client) = Client::try_default().await {
                    let _ = Api::<Namespace>::all(client).delete(&name, &DeleteParams::background()).await;
                }
            });
        })
        .join();
    }
}

/// Waits until `cond` holds for the named object, or panics after `timeout` showing the last
/// state seen.
pub async fn wait_for<K, C>(api: &Api<K>, name: &str, timeout: Duration, cond: C) -> Option<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    C: Condition<K>,
{
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(obj)) => obj,
        Ok(Err(e)) => panic!("watching {name}: {e}"),
        Err(_) => {
            let last = api.get_opt(name).await.ok().flatten();
            panic!("timed out after {timeout:?} waiting for {name}; last seen: {last:#?}")
        }
    }
}

/// Polls `probe` until it returns `Some`, or panics after `timeout` with `what`. For conditions
/// that span several objects (a watch on one object cannot express them).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Applies Atrium's CRDs (as generated from the types) and waits until they are served.
pub async fn install_crds() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::{
        ResourceExt,
        api::{Patch, PatchParams},
        runtime::wait::conditions,
    };
    let crds: Api<CustomResourceDefinition> = Api::all(client().await);
    for crd in atrium::api::all_crds() {
        let name = crd.name_any();
        crds.patch(&name, &PatchParams::apply("atrium-tests").force(), &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        wait_for(&crds, &name, Duration::from_secs(30), conditions::is_crd_established()).await;
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A plain HTTP/1.1 GET on loopback: (status, body), or `None` when nothing answers.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// An `atrium-operator` process (the binary Cargo built for these tests), killed when dropped.
pub struct Operator {
    pub child: std::process::Child,
    pub http_port: u16,
}

impl Operator {
    /// Starts the operator with `args` added to its defaults (text logs to `target/e2e-logs/`).
    pub fn start(log_name: &str, args: &[&str]) -> Self {
        let http_port = free_port();
        let logs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e-logs");
        std::fs::create_dir_all(&logs).unwrap();
        let log = std::fs::File::create(logs.join(format!("{log_name}.log"))).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_atrium-operator"))
            .arg(format!("--http-addr=127.0.0.1:{http_port}"))
            .args(args)
            .env("RUST_LOG", "info,kube=warn,atrium=debug")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start atrium-operator");
        Self { child, http_port }
    }

    /// The value of an unlabelled metric (or the sum over a metric's label sets).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (status, body) = http_get(self.http_port, "/metrics").await?;
        (status == 200).then(|| {
            body.lines()
                .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        })
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Creates or updates `body` by forced server-side apply, as a user's `kubectl apply` would.
pub async fn apply<K>(api: &Api<K>, body: serde_json::Value) -> K
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    use kube::api::{Patch, PatchParams};
    let name = body["metadata"]["name"].as_str().expect("the object has a name").to_owned();
    api.patch(&name, &PatchParams::apply("atrium-tests").force(), &Patch::Apply(&body))
        .await
        .unwrap_or_else(|e| panic!("applying {name}: {e}"))
}

/// Cluster-scoped objects a test made, deleted when it ends, passed or failed.
#[derive(Default)]
pub struct ClusterObjects(Vec<(kube::core::ApiResource, String)>);

impl ClusterObjects {
    pub fn add<K: Resource<DynamicType = ()>>(&mut self, name: &str) {
        self.0.push((kube::core::ApiResource::erase::<K>(&()), name.to_owned()));
    }
}

impl Drop for ClusterObjects {
    fn drop(&mut self) {
        let items = std::mem::take(&mut self.0);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let Ok(client) = Client::try_default().await else { return };
                for (ar, name) in items {
                    let api: Api<kube::api::DynamicObject> = Api::all_with(client.clone(), &ar);
                    let _ = api.delete(&name, &DeleteParams::background()).await;
                }
            });
        })
        .join();
    }
}
