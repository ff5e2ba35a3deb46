//! Bursts: N objects created at once, and the time until each is done, as the operator makes
//! them (ModelDeployments, ComputeClusters) or as the oracle makes the same children directly.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Debug,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use atrium::{
    api::{ComputeCluster, ModelDeployment, READY},
    runtime::{conditions::is_true, labels::OWNER_NAME},
};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        apps::v1::Deployment,
        core::v1::{ConfigMap, Namespace, Pod, Secret, Service, ServiceAccount},
    },
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ApiResource, DynamicObject, ListParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// What a burst measured.
#[derive(Clone, Debug)]
pub struct Burst {
    /// From the first create request to the last object done.
    pub total: Duration,
    /// Per object: from its create request returning to it being done.
    pub latencies: Vec<Duration>,
}

/// The kinds a burst is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A ModelDeployment with one deployment of one instance: done when `Ready`.
    ModelDeployment,
    /// A ComputeCluster with one standby instance: done when `Ready` with its standby pod counted.
    ComputeCluster,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::ModelDeployment => "md",
            Kind::ComputeCluster => "cc",
        }
    }

    /// The name of object `i` of a burst.
    pub fn object_name(self, i: usize) -> String {
        format!("{}-{i:05}", self.label())
    }

    /// The object the benchmark creates.
    pub fn body(self, name: &str) -> Value {
        match self {
            Kind::ModelDeployment => json!({
                "apiVersion": "atrium.dev/v1alpha1", "kind": "ModelDeployment",
                "metadata": { "name": name },
                "spec": {
                    "deployments": [{ "name": "blue", "code": { "configMap": CODE_CONFIG_MAP, "scoringScript": "score.py" } }],
                    "traffic": { "blue": 100 }
                }
            }),
            Kind::ComputeCluster => json!({
                "apiVersion": "atrium.dev/v1alpha1", "kind": "ComputeCluster",
                "metadata": { "name": name },
                "spec": { "minInstances": 1, "maxInstances": 2 }
            }),
        }
    }
}

/// The scoring code every benchmark endpoint uses.
const CODE_CONFIG_MAP: &str = "score";

/// A fresh namespace with what the objects need: the code ConfigMap, and the `default`
/// ServiceAccount (pods are refused until it exists).
pub async fn namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let ns: Namespace =
        serde_json::from_value(json!({ "metadata": { "name": name, "labels": { "atrium.dev/bench": "true" } } }))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": CODE_CONFIG_MAP },
        "data": { "score.py": "def init():\n    pass\n\ndef run(raw):\n    return raw\n" }
    }))?;
    Api::<ConfigMap>::namespaced(client.clone(), name).create(&PostParams::default(), &cm).await?;
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), name);
    wait(Duration::from_secs(60), &format!("the default ServiceAccount in {name}"), || async {
        Ok(sas.get_opt("default").await?.is_some())
    })
    .await
}

/// Polls `probe` every 200 ms until it is true, or fails after `timeout`.
pub async fn wait<F, Fut>(timeout: Duration, what: &str, mut probe: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        if probe().await? {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
    }
}

/// Watches `api` and records when each group is done: `done` names the group an object belongs
/// to when that object is done; a group is done when `members` of its objects are.
async fn track<K>(
    api: Api<K>,
    expected: usize,
    members: usize,
    done: impl Fn(&K) -> Option<String>,
    timeout: Duration,
) -> anyhow::Result<HashMap<String, Instant>>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    let mut finished: HashMap<String, Instant> = HashMap::new();
    let mut seen: HashMap<String, HashSet<String>> = HashMap::new();
    let events = watcher(api, watcher::Config::default()).default_backoff().applied_objects();
    let mut events = std::pin::pin!(events);
    let deadline = tokio::time::sleep(timeout);
    let mut deadline = std::pin::pin!(deadline);
    while finished.len() < expected {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { bail!("the watch ended") };
                let Ok(object) = event else { continue };
                let Some(group) = done(&object) else { continue };
                if finished.contains_key(&group) {
                    continue;
                }
                let names = seen.entry(group.clone()).or_default();
                names.insert(object.name_any());
                if names.len() >= members {
                    finished.insert(group, Instant::now());
                }
            }
            _ = &mut deadline => bail!("{} of {expected} done after {timeout:?}", finished.len()),
        }
    }
    Ok(finished)
}

fn ready_md(md: &ModelDeployment) -> Option<String> {
    md.status.as_ref().is_some_and(|s| is_true(&s.conditions, READY)).then(|| md.name_any())
}

fn ready_cc(cc: &ComputeCluster) -> Option<String> {
    let status = cc.status.as_ref()?;
    let standby = status.instances.as_ref().and_then(|i| i.standby).unwrap_or(0);
    (is_true(&status.conditions, READY) && standby >= cc.spec.min_instances).then(|| cc.name_any())
}

/// Creates `n` objects, `concurrency` at a time; returns when each create returned.
async fn create_all<F, Fut>(n: usize, concurrency: usize, create: F) -> anyhow::Result<HashMap<String, Instant>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<String>>,
{
    stream::iter(0..n)
        .map(|i| {
            let fut = create(i);
            async move { fut.await.map(|name| (name, Instant::now())) }
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await
}

fn burst(start: Instant, created: &HashMap<String, Instant>, done: &HashMap<String, Instant>) -> Burst {
    let last = done.values().max().copied().unwrap_or(start);
    let latencies =
        done.iter().filter_map(|(name, at)| created.get(name).map(|c| at.saturating_duration_since(*c))).collect();
    Burst { total: last - start, latencies }
}

/// One burst: `n` objects of `kind` in namespace `ns`, `concurrency` at a time, within `timeout`.
#[derive(Clone, Copy, Debug)]
pub struct Spec<'a> {
    pub kind: Kind,
    pub ns: &'a str,
    pub n: usize,
    pub concurrency: usize,
    pub timeout: Duration,
}

/// The objects of a burst created at once (`concurrency` requests in flight) for the operator to
/// reconcile; done when each is Ready.
pub async fn operator_burst(client: &Client, spec: &Spec<'_>) -> anyhow::Result<Burst> {
    let Spec { kind, ns, n, concurrency, timeout } = *spec;
    // The first create of a custom resource on a fresh API server sets up its storage and
    // validation; the oracle creates built-in kinds that are set up already. Warm up with a dry run.
    match kind {
        Kind::ModelDeployment => warm_up(&Api::<ModelDeployment>::namespaced(client.clone(), ns), kind).await?,
        Kind::ComputeCluster => warm_up(&Api::<ComputeCluster>::namespaced(client.clone(), ns), kind).await?,
    }
    let start = Instant::now();
    let created = match kind {
        Kind::ModelDeployment => {
            let api = Api::<ModelDeployment>::namespaced(client.clone(), ns);
            let watch = tokio::spawn(track(api.clone(), n, 1, ready_md, timeout));
            let created = create_objects(&api, kind, n, concurrency).await?;
            (created, watch.await??)
        }
        Kind::ComputeCluster => {
            let api = Api::<ComputeCluster>::namespaced(client.clone(), ns);
            let watch = tokio::spawn(track(api.clone(), n, 1, ready_cc, timeout));
            let created = create_objects(&api, kind, n, concurrency).await?;
            (created, watch.await??)
        }
    };
    Ok(burst(start, &created.0, &created.1))
}

async fn warm_up<K>(api: &Api<K>, kind: Kind) -> anyhow::Result<()>
where
    K: Resource + Clone + DeserializeOwned + serde::Serialize + Debug,
{
    let object: K = serde_json::from_value(kind.body("warm-up"))?;
    api.create(&PostParams { dry_run: true, ..Default::default() }, &object).await.context("a dry-run create")?;
    Ok(())
}

async fn create_objects<K>(
    api: &Api<K>,
    kind: Kind,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<HashMap<String, Instant>>
where
    K: Resource + Clone + DeserializeOwned + serde::Serialize + Debug,
{
    create_all(n, concurrency, |i| async move {
        let name = kind.object_name(i);
        let object: K = serde_json::from_value(kind.body(&name))?;
        api.create(&PostParams::default(), &object).await.with_context(|| format!("creating {name}"))?;
        Ok(name)
    })
    .await
}

/// The children the operator made for one object, as templates with `{{name}}` for the owner's
/// name and `{{uid}}` for its uid: what the oracle creates, object by object.
#[derive(Clone, Debug, Default)]
pub struct Templates {
    /// In creation order: ConfigMaps and Secrets, Services, then Deployments and Pods.
    pub children: Vec<String>,
}

/// A live child made a template: server-set fields dropped (status, uid, resourceVersion, owner
/// references, managed fields, allocated cluster IPs, the node a pod runs on, the token volume
/// admission injects), the owner's name, uid and namespace made placeholders.
pub fn template(child: &Value, owner_name: &str, owner_uid: &str, ns: &str) -> String {
    let mut object = json!({
        "apiVersion": child["apiVersion"],
        "kind": child["kind"],
        "metadata": { "name": child["metadata"]["name"], "labels": child["metadata"]["labels"] },
    });
    if let Some(annotations) = child["metadata"]["annotations"].as_object() {
        let kept: serde_json::Map<String, Value> = annotations
            .iter()
            .filter(|(k, _)| !k.starts_with("deployment.kubernetes.io/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !kept.is_empty() {
            object["metadata"]["annotations"] = Value::Object(kept);
        }
    }
    for field in ["spec", "data", "stringData", "type"] {
        if !child[field].is_null() {
            object[field] = child[field].clone();
        }
    }
    if let Some(spec) = object["spec"].as_object_mut() {
        for allocated in ["clusterIP", "clusterIPs", "nodeName"] {
            spec.remove(allocated);
        }
        let token_volume = |v: &Value| v["name"].as_str().is_some_and(|n| n.starts_with("kube-api-access-"));
        if let Some(volumes) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
            volumes.retain(|v| !token_volume(v));
        }
        if let Some(containers) = spec.get_mut("containers").and_then(Value::as_array_mut) {
            for container in containers {
                if let Some(mounts) = container.get_mut("volumeMounts").and_then(Value::as_array_mut) {
                    mounts.retain(|m| !token_volume(m));
                }
            }
        }
    }
    object.to_string().replace(owner_uid, "{{uid}}").replace(owner_name, "{{name}}").replace(ns, "{{ns}}")
}

/// Template `t` for object `i` of a burst of `kind` in namespace `ns`.
pub fn instantiate(t: &str, kind: Kind, i: usize, ns: &str) -> anyhow::Result<Value> {
    let text = t
        .replace("{{name}}", &kind.object_name(i))
        .replace("{{uid}}", &format!("00000000-0000-4000-8000-{i:012}"))
        .replace("{{ns}}", ns);
    Ok(serde_json::from_str(&text)?)
}

fn creation_rank(kind: &str) -> u8 {
    match kind {
        "ConfigMap" | "Secret" => 0,
        "Service" => 1,
        _ => 2,
    }
}

/// Makes one object of `kind` in `ns` with the operator running, waits until it is done and
/// reads its children back as templates.
pub async fn capture(client: &Client, kind: Kind, ns: &str, timeout: Duration) -> anyhow::Result<Templates> {
    operator_burst(client, &Spec { kind, ns, n: 1, concurrency: 1, timeout }).await?;
    let name = kind.object_name(0);
    let uid = match kind {
        Kind::ModelDeployment => Api::<ModelDeployment>::namespaced(client.clone(), ns).get(&name).await?.uid(),
        Kind::ComputeCluster => Api::<ComputeCluster>::namespaced(client.clone(), ns).get(&name).await?.uid(),
    }
    .context("no uid")?;
    let selector = ListParams::default().labels(&format!("{}={uid}", atrium::runtime::labels::OWNER_UID));
    let mut children: Vec<Value> = Vec::new();
    match kind {
        Kind::ModelDeployment => {
            children.extend(list::<ConfigMap>(client, ns, &selector).await?);
            children.extend(list::<Secret>(client, ns, &selector).await?);
            children.extend(list::<Service>(client, ns, &selector).await?);
            children.extend(list::<Deployment>(client, ns, &selector).await?);
        }
        Kind::ComputeCluster => children.extend(list::<Pod>(client, ns, &selector).await?),
    }
    anyhow::ensure!(!children.is_empty(), "{name} has no children labelled with its uid");
    children.sort_by_key(|c| creation_rank(c["kind"].as_str().unwrap_or_default()));
    Ok(Templates { children: children.iter().map(|c| template(c, &name, &uid, ns)).collect() })
}

async fn list<K>(client: &Client, ns: &str, lp: &ListParams) -> anyhow::Result<Vec<Value>>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + serde::Serialize + Debug,
    K::DynamicType: Default,
{
    let dt = K::DynamicType::default();
    let items = Api::<K>::namespaced(client.clone(), ns).list(lp).await?.items;
    items
        .into_iter()
        .map(|item| {
            let mut v = serde_json::to_value(item)?;
            v["apiVersion"] = Value::from(K::api_version(&dt).into_owned());
            v["kind"] = Value::from(K::kind(&dt).into_owned());
            Ok(v)
        })
        .collect()
}

fn api_resource(kind: &str) -> anyhow::Result<ApiResource> {
    Ok(match kind {
        "ConfigMap" => ApiResource::erase::<ConfigMap>(&()),
        "Secret" => ApiResource::erase::<Secret>(&()),
        "Service" => ApiResource::erase::<Service>(&()),
        "Deployment" => ApiResource::erase::<Deployment>(&()),
        "Pod" => ApiResource::erase::<Pod>(&()),
        other => bail!("no oracle for kind {other}"),
    })
}

/// The oracle: the same children the operator makes for `n` objects, created directly by a
/// client with nothing else to do, `concurrency` objects at a time (each object's children one
/// after the other, as a reconcile applies them); done when they are as far as the operator's
/// objects are when Ready (each Deployment has a ready replica; each standby pod exists).
pub async fn oracle_burst(client: &Client, templates: &Templates, spec: &Spec<'_>) -> anyhow::Result<Burst> {
    let Spec { kind, ns, n, timeout, .. } = *spec;
    let group = |labels: &BTreeMap<String, String>| labels.get(OWNER_NAME).cloned();
    let start = Instant::now();
    let (created, done) = match kind {
        Kind::ModelDeployment => {
            let members = templates.children.iter().filter(|t| t.contains("\"kind\":\"Deployment\"")).count();
            let api = Api::<Deployment>::namespaced(client.clone(), ns);
            let ready = move |d: &Deployment| {
                let ready = d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0) > 0;
                if ready { group(d.labels()) } else { None }
            };
            let watch = tokio::spawn(track(api, n, members, ready, timeout));
            let created = create_children(client, templates, spec).await?;
            (created, watch.await??)
        }
        Kind::ComputeCluster => {
            let members = templates.children.len();
            let api = Api::<Pod>::namespaced(client.clone(), ns);
            let watch = tokio::spawn(track(api, n, members, move |p: &Pod| group(p.labels()), timeout));
            let created = create_children(client, templates, spec).await?;
            (created, watch.await??)
        }
    };
    Ok(burst(start, &created, &done))
}

async fn create_children(
    client: &Client,
    templates: &Templates,
    spec: &Spec<'_>,
) -> anyhow::Result<HashMap<String, Instant>> {
    let Spec { kind, ns, n, concurrency, .. } = *spec;
    let apis: Arc<Mutex<HashMap<String, Api<DynamicObject>>>> = Arc::default();
    create_all(n, concurrency, |i| {
        let apis = apis.clone();
        async move {
            for t in &templates.children {
                let value = instantiate(t, kind, i, ns)?;
                let k = value["kind"].as_str().unwrap_or_default().to_owned();
                let api = {
                    let mut apis = apis.lock().await;
                    match apis.get(&k) {
                        Some(api) => api.clone(),
                        None => {
                            let api = Api::namespaced_with(client.clone(), ns, &api_resource(&k)?);
                            apis.insert(k.clone(), api.clone());
                            api
                        }
                    }
                };
                let object: DynamicObject = serde_json::from_value(value)?;
                api.create(&PostParams::default(), &object)
                    .await
                    .with_context(|| format!("oracle: creating {k} {}", object.name_any()))?;
            }
            Ok(kind.object_name(i))
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_drops_what_the_server_set_and_names_its_owner() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "cc-00000-standby-0", "uid": "u-1", "resourceVersion": "9",
                "labels": { "atrium.dev/owner-name": "cc-00000", "atrium.dev/owner-uid": "abc-123" },
                "ownerReferences": [{ "uid": "abc-123" }], "managedFields": []
            },
            "spec": {
                "nodeName": "cpu-1",
                "containers": [{ "name": "c", "volumeMounts": [{ "name": "kube-api-access-x1" }, { "name": "data" }] }],
                "volumes": [{ "name": "kube-api-access-x1" }, { "name": "data" }]
            },
            "status": { "phase": "Running" }
        });
        let t = template(&pod, "cc-00000", "abc-123", "tmpl-ns");
        let v = instantiate(&t, Kind::ComputeCluster, 7, "ns-7").unwrap();
        assert_eq!(v["metadata"]["name"], "cc-00007-standby-0");
        assert_eq!(v["metadata"]["labels"]["atrium.dev/owner-name"], "cc-00007");
        assert_eq!(v["metadata"]["labels"]["atrium.dev/owner-uid"], "00000000-0000-4000-8000-000000000007");
        for gone in ["uid", "resourceVersion", "ownerReferences", "managedFields"] {
            assert!(v["metadata"][gone].is_null(), "{gone} kept");
        }
        assert!(v["status"].is_null());
        assert!(v["spec"]["nodeName"].is_null());
        assert_eq!(v["spec"]["volumes"], json!([{ "name": "data" }]));
        assert_eq!(v["spec"]["containers"][0]["volumeMounts"], json!([{ "name": "data" }]));
    }

    #[test]
    fn a_service_template_asks_for_a_new_cluster_ip() {
        let svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": "md-00000", "annotations": { "a": "md-00000.tmpl-ns.svc" } },
            "spec": { "clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7"], "ports": [{ "port": 80 }] }
        });
        let v =
            instantiate(&template(&svc, "md-00000", "0d5e-uid", "tmpl-ns"), Kind::ModelDeployment, 3, "b-1").unwrap();
        assert_eq!(v["spec"], json!({ "ports": [{ "port": 80 }] }));
        assert_eq!(v["metadata"]["annotations"]["a"], "md-00003.b-1.svc");
    }

    #[test]
    fn burst_times_run_from_the_start_to_the_last_done() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let created = HashMap::from([("a".to_owned(), at(10)), ("b".to_owned(), at(20))]);
        let done = HashMap::from([("a".to_owned(), at(110)), ("b".to_owned(), at(520))]);
        let b = burst(start, &created, &done);
        assert_eq!(b.total, Duration::from_millis(520));
        let mut l = b.latencies.clone();
        l.sort();
        assert_eq!(l, [Duration::from_millis(100), Duration::from_millis(500)]);
    }
}
