//! Test harness: real HTTP backends and a real router, in process, on 127.0.0.1 ports chosen by
//! the OS. Conditions are awaited by polling with a deadline, never by fixed sleeps.
#![allow(dead_code)] // each test file uses a different part of the harness

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atrium_router::config::{AuthMode, Backend as BackendConfig, RouterConfig};
use atrium_router::server::{Options, Router};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TestBody = BoxBody<Bytes, BoxError>;

/// A generous bound for conditions that should hold within milliseconds.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn full(body: impl Into<Bytes>) -> TestBody {
    Full::new(body.into()).map_err(|never| match never {}).boxed()
}

/// Polls `check` until it returns true; panics after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A request as a backend saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    /// Path and query.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// An HTTP backend standing in for a deployment.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    /// A backend that answers 200 with its name as the body.
    pub async fn echo(name: &str) -> Self {
        let body = name.to_owned();
        Self::start(name, move |_seen| {
            let body = body.clone();
            async move { Response::new(full(body)) }
        })
        .await
    }

    /// A backend whose answers come from `handler`, given the request with its body read.
    pub async fn start<F, Fut>(name: &str, handler: F) -> Self
    where
        F: Fn(Seen) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let hits = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(handler);
        let (seen2, hits2) = (Arc::clone(&seen), Arc::clone(&hits));
        Self::start_raw(name, seen, hits, move |request: Request<Incoming>| {
            let (handler, seen, hits) = (Arc::clone(&handler), Arc::clone(&seen2), Arc::clone(&hits2));
            async move {
                let (parts, body) = request.into_parts();
                let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                let record = Seen {
                    method: parts.method,
                    path: parts.uri.path_and_query().map_or("/".into(), |pq| pq.to_string()),
                    headers: parts.headers,
                    body,
                };
                seen.lock().unwrap().push(record.clone());
                hits.fetch_add(1, Ordering::SeqCst);
                handler(record).await
            }
        })
        .await
    }

    /// A backend that gets the request with its body still streaming.
    pub async fn start_raw<F, Fut>(name: &str, seen: Arc<Mutex<Vec<Seen>>>, hits: Arc<AtomicUsize>, handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler = Arc::new(handler);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let handler = Arc::clone(&handler);
                let service = service_fn(move |request| {
                    let response = handler(request);
                    async move { Ok::<_, Infallible>(response.await) }
                });
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { name: name.to_owned(), addr, seen, hits, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// This backend as a deployment of the router configuration: generous limits by default.
    pub fn config(&self) -> BackendConfig {
        BackendConfig {
            name: self.name.clone(),
            url: self.url(),
            scoring_path: "/score".to_owned(),
            instances: 1,
            request_timeout_ms: 10_000,
            max_concurrent_requests_per_instance: 64,
            max_queue_wait_ms: 1_000,
        }
    }
}

/// A router configuration without auth.
pub fn router_config(deployments: Vec<BackendConfig>, traffic: &[(&str, u32)], mirror: &[(&str, u32)]) -> RouterConfig {
    RouterConfig {
        endpoint: "test-endpoint".to_owned(),
        auth_mode: AuthMode::None,
        deployments,
        traffic: traffic.iter().map(|(n, w)| ((*n).to_owned(), *w)).collect(),
        mirror_traffic: mirror.iter().map(|(n, w)| ((*n).to_owned(), *w)).collect(),
    }
}

/// A router running in this process.
pub struct TestRouter {
    pub data: SocketAddr,
    pub admin: SocketAddr,
    pub dir: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<()>>,
}

impl TestRouter {
    /// Starts a router with `config` (if any) and `keys` (if any), laid out as Kubernetes mounts
    /// ConfigMaps and Secrets.
    pub async fn start(config: Option<&RouterConfig>, keys: Option<(&str, &str)>) -> Self {
        Self::start_with_shutdown_delay(config, keys, Duration::ZERO).await
    }

    /// [`TestRouter::start`] with a shutdown delay.
    pub async fn start_with_shutdown_delay(
        config: Option<&RouterConfig>,
        keys: Option<(&str, &str)>,
        shutdown_delay: Duration,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config_dir = dir.path().join("config");
        let keys_dir = dir.path().join("keys");
        std::fs::create_dir_all(&config_dir).unwrap();
        std::fs::create_dir_all(&keys_dir).unwrap();
        if let Some(config) = config {
            write_projected(&config_dir, "config.json", &serde_json::to_vec_pretty(config).unwrap());
        }
        if let Some((primary, secondary)) = keys {
            write_keys(&keys_dir, primary, secondary);
        }
        let router = Router::bind(Options {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            config: config_dir.join("config.json"),
            keys_dir: Some(keys_dir),
            reload_interval: Duration::from_secs(1),
            shutdown_delay,
            drain_timeout: Duration::from_secs(10),
        })
        .await
        .unwrap();
        let (data, admin) = (router.data_addr().unwrap(), router.admin_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(router.run(async move {
            let _ = rx.await;
        }));
        Self { data, admin, dir, shutdown: Some(tx), task: Some(task) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.data, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// Replaces the configuration the way the kubelet updates a ConfigMap volume.
    pub fn write_config(&self, config: &RouterConfig) {
        self.write_config_bytes(&serde_json::to_vec_pretty(config).unwrap());
    }

    pub fn write_config_bytes(&self, bytes: &[u8]) {
        write_projected(&self.dir.path().join("config"), "config.json", bytes);
    }

    pub fn write_keys(&self, primary: &str, secondary: &str) {
        write_keys(&self.dir.path().join("keys"), primary, secondary);
    }

    /// Starts a graceful shutdown.
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// The value of one metric series, e.g. `atrium_router_queued_requests{deployment="blue"}`.
    pub async fn metric(&self, client: &TestClient, series: &str) -> Option<f64> {
        let text = client.get(&self.admin_url("/metrics")).await.text();
        text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())
    }
}

fn write_keys(dir: &Path, primary: &str, secondary: &str) {
    write_projected(dir, "primary", primary.as_bytes());
    write_projected(dir, "secondary", secondary.as_bytes());
}

/// Writes `name` in `dir` as the kubelet's atomic writer does: files live in a timestamped
/// directory, `..data` is a symlink to it swapped by rename, and `name` is a symlink through
/// `..data`. The file's inode and path never change from the reader's point of view; only the
/// content does.
fn write_projected(dir: &Path, name: &str, content: &[u8]) {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let data = dir.join("..data");
    let version = format!("..v{}", SEQ.fetch_add(1, Ordering::SeqCst));
    let version_dir = dir.join(&version);
    std::fs::create_dir(&version_dir).unwrap();
    // Carry over the other files of the volume.
    if let Ok(entries) = std::fs::read_dir(&data) {
        for entry in entries.flatten() {
            std::fs::copy(entry.path(), version_dir.join(entry.file_name())).unwrap();
        }
    }
    std::fs::write(version_dir.join(name), content).unwrap();
    let old: Option<PathBuf> = std::fs::read_link(&data).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&version, &tmp).unwrap();
    std::fs::rename(&tmp, &data).unwrap();
    let link = dir.join(name);
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink(Path::new("..data").join(name), &link).unwrap();
    }
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The `azureml-model-deployment` response header.
    pub fn deployment(&self) -> &str {
        self.headers.get("azureml-model-deployment").and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    pub fn error_code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_owned()
    }

    pub fn error_message(&self) -> String {
        self.json()["error"]["message"].as_str().unwrap_or_default().to_owned()
    }
}

/// An HTTP/1.1 client with a connection pool.
#[derive(Clone)]
pub struct TestClient(Client<HttpConnector, TestBody>);

impl Default for TestClient {
    fn default() -> Self {
        Self(Client::builder(TokioExecutor::new()).build_http())
    }
}

impl TestClient {
    /// An HTTP/2 client with prior knowledge (h2c).
    pub fn h2c() -> Self {
        Self(Client::builder(TokioExecutor::new()).http2_only(true).build_http())
    }

    pub async fn send(&self, request: Request<TestBody>) -> Reply {
        self.try_send(request).await.expect("request failed")
    }

    pub async fn try_send(&self, request: Request<TestBody>) -> Result<Reply, BoxError> {
        let response = self.0.request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply { status: parts.status, version: parts.version, headers: parts.headers, body })
    }

    /// The response head only; the body is left streaming.
    pub async fn send_streaming(&self, request: Request<TestBody>) -> Response<Incoming> {
        self.0.request(request).await.expect("request failed")
    }

    pub async fn get(&self, url: &str) -> Reply {
        self.send(Request::get(url).body(full("")).unwrap()).await
    }

    pub async fn post(&self, url: &str, body: &str) -> Reply {
        self.send(Request::post(url).body(full(body.to_owned())).unwrap()).await
    }
}
