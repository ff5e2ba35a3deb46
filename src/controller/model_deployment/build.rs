//! Pure: the children a ModelDeployment should have, from its spec and what its references
//! resolved to. No API calls here, so everything is unit-tested over plain values.
//!
//! Per deployment `d` of endpoint `e`: a Deployment and a ClusterIP Service named `e-d`, an HPA
//! `e-d` when `scale` is set, a PodDisruptionBudget `e-d` when there can be more than one
//! instance. Per endpoint: the router Deployment and Service `e`, its configuration ConfigMap
//! `e-router` and (created once, elsewhere) the key Secret `e-keys`.

use std::collections::BTreeMap;

use atrium_router::config::{AuthMode as RouterAuthMode, Backend, RouterConfig};
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment},
        autoscaling::v2::{
            CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
            MetricTarget, ResourceMetricSource,
        },
        core::v1::{
            Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
            HTTPGetAction, KeyToPath, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Probe,
            ResourceRequirements, Secret, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec,
            TCPSocketAction, Volume, VolumeMount,
        },
        policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};
use kube::ResourceExt;

use crate::{
    api::{
        InstanceTypeSpec, ModelDeployment,
        common::model_version_ref,
        model_deployment::{AuthMode, ExposureType, OnlineDeployment, ProbeSettings, RuntimeType},
    },
    controller::model::build::ModelLocation,
    runtime::{
        labels::{self, child_labels, controller_ref},
        naming::{child_name, label_value},
    },
};

/// Label on the children of one deployment: the deployment's name (as a label value).
pub const DEPLOYMENT_LABEL: &str = "atrium.dev/deployment";
/// Annotation on a deployment's Deployment: the model version it serves, `name:version`.
pub const MODEL_ANNOTATION: &str = "atrium.dev/model";
/// `app.kubernetes.io/component` of a deployment's children.
pub const COMPONENT_INFERENCE: &str = "inference";
/// `app.kubernetes.io/component` of the endpoint router's children (the workspace's network
/// policies and pod monitors select routers by it).
pub const COMPONENT_ROUTER: &str = "router";
/// `app.kubernetes.io/component` of the key Secret.
pub const COMPONENT_KEYS: &str = "keys";

/// The serving container of a deployment.
pub const INFERENCE_CONTAINER: &str = "inference-server";
/// The init container that downloads `uri` models.
pub const FETCH_CONTAINER: &str = "fetch-model";
/// The Azure ML inference HTTP server's command (package `azureml-inference-server-http`).
pub const AZUREML_SERVER_COMMAND: &str = "azmlinfsrv";
/// Where the scoring code (the code ConfigMap) is mounted.
pub const CODE_DIR: &str = "/var/azureml-app/code";
/// Under it, `<model>/<version>` is `AZUREML_MODEL_DIR`, as in Azure ML.
pub const MODELS_ROOT: &str = "/var/azureml-app/azureml-models";
/// The port of every deployment's Service (the router's backends).
pub const SERVICE_PORT: i32 = 80;

/// The router's data port, admin port (probes and `/metrics`), and mounted files.
pub const ROUTER_PORT: i32 = 8080;
pub const ROUTER_ADMIN_PORT: i32 = 9090;
pub const ROUTER_CONFIG_DIR: &str = "/etc/atrium-router/config";
pub const ROUTER_KEYS_DIR: &str = "/etc/atrium-router/keys";
/// The key of the router configuration in its ConfigMap.
pub const ROUTER_CONFIG_FILE: &str = "config.json";
/// Router instances per endpoint: two, so that a node going away does not take the endpoint down.
pub const ROUTER_REPLICAS: i32 = 2;

/// Keys of the key Secret (as the design names them) and the files the router reads them from.
pub const PRIMARY_KEY: &str = "primaryKey";
pub const SECONDARY_KEY: &str = "secondaryKey";
const KEY_FILES: [(&str, &str); 2] = [(PRIMARY_KEY, "primary"), (SECONDARY_KEY, "secondary")];

/// The images the operator runs besides the users' own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    /// The endpoint router (`ATRIUM_ROUTER_IMAGE`).
    pub router: String,
    /// Downloads `https://` models (`ATRIUM_FETCH_HTTPS_IMAGE`); needs `sh` and `curl`.
    pub fetch_https: String,
    /// Downloads `s3://` models (`ATRIUM_FETCH_S3_IMAGE`); needs `sh` and the `aws` CLI.
    pub fetch_s3: String,
}

impl Images {
    /// The defaults: the router of this operator's version and pinned public fetch images.
    pub fn defaults() -> Self {
        Self {
            router: format!("ghcr.io/atrium-dev/atrium-router:{}", env!("CARGO_PKG_VERSION")),
            fetch_https: "docker.io/curlimages/curl:8.11.1".into(),
            fetch_s3: "docker.io/amazon/aws-cli:2.22.35".into(),
        }
    }

    /// The defaults, each overridden by its environment variable when set (for air-gapped
    /// mirrors; the Helm chart sets them from `router.image` and `images.*`).
    pub fn from_env() -> Self {
        let defaults = Self::defaults();
        let var = |name: &str, default: String| std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or(default);
        Self {
            router: var("ATRIUM_ROUTER_IMAGE", defaults.router),
            fetch_https: var("ATRIUM_FETCH_HTTPS_IMAGE", defaults.fetch_https),
            fetch_s3: var("ATRIUM_FETCH_S3_IMAGE", defaults.fetch_s3),
        }
    }
}

/// A resolved model version, as served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedModel {
    /// The model's registry name, as registered.
    pub name: String,
    pub version: i64,
    pub location: ModelLocation,
}

impl ServedModel {
    /// `AZUREML_MODEL_DIR`: `/var/azureml-app/azureml-models/<model>/<version>`. The registered
    /// file or folder is inside it under its own name, as in Azure ML.
    pub fn dir(&self) -> String {
        format!("{MODELS_ROOT}/{}/{}", self.name, self.version)
    }

    /// Where the registered file or folder is in the container.
    pub fn files(&self) -> String {
        format!("{}/{}", self.dir(), self.location.file_name())
    }
}

/// One deployment with everything it refers to resolved: what [`model_server`] needs.
#[derive(Clone, Debug)]
pub struct DeploymentPlan<'a> {
    pub spec: &'a OnlineDeployment,
    /// The model version to serve; `None` when the deployment names no model.
    pub model: Option<ServedModel>,
    /// The image in effect.
    pub image: String,
    /// The instance type's resources, node selector and tolerations.
    pub instance_type: InstanceTypeSpec,
    /// The ServiceAccount of the pods; `None` for the namespace's default.
    pub service_account: Option<String>,
}

/// The children to apply this round (the key Secret is created apart, once).
#[derive(Clone, Debug, Default)]
pub struct Children {
    pub deployments: Vec<Deployment>,
    pub services: Vec<Service>,
    pub autoscalers: Vec<HorizontalPodAutoscaler>,
    pub disruption_budgets: Vec<PodDisruptionBudget>,
    pub config_maps: Vec<ConfigMap>,
}

/// The name of deployment `deployment`'s children.
pub fn deployment_child_name(endpoint: &str, deployment: &str) -> String {
    child_name(&[endpoint, deployment])
}

/// The name of the router Deployment and Service.
pub fn router_name(endpoint: &str) -> String {
    child_name(&[endpoint])
}

/// The name of the router configuration ConfigMap.
pub fn router_config_name(endpoint: &str) -> String {
    child_name(&[endpoint, "router"])
}

/// The name of the key Secret.
pub fn keys_secret_name(endpoint: &str) -> String {
    child_name(&[endpoint, "keys"])
}

/// The in-cluster URL of a deployment's Service.
pub fn backend_url(endpoint: &str, namespace: &str, deployment: &str) -> String {
    format!("http://{}.{namespace}.svc:{SERVICE_PORT}", deployment_child_name(endpoint, deployment))
}

fn metadata(md: &ModelDeployment, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    let namespace = md.namespace();
    ObjectMeta {
        name: Some(name),
        owner_references: controller_ref(md, namespace.as_deref()).map(|r| vec![r]),
        namespace,
        labels: Some(labels),
        ..Default::default()
    }
}

/// Labels of a deployment's children and pods.
pub fn deployment_labels(md: &ModelDeployment, deployment: &str) -> BTreeMap<String, String> {
    let mut labels = child_labels(md, COMPONENT_INFERENCE);
    labels.insert(DEPLOYMENT_LABEL.into(), label_value(deployment));
    labels
}

/// Selects a deployment's pods: the owner's uid (names can repeat over time, uids not) and the
/// deployment.
pub fn deployment_selector(md: &ModelDeployment, deployment: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::OWNER_UID.into(), md.uid().unwrap_or_default()),
        (labels::COMPONENT.into(), COMPONENT_INFERENCE.into()),
        (DEPLOYMENT_LABEL.into(), label_value(deployment)),
    ])
}

/// Selects the router's pods.
pub fn router_selector(md: &ModelDeployment) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::OWNER_UID.into(), md.uid().unwrap_or_default()),
        (labels::COMPONENT.into(), COMPONENT_ROUTER.into()),
    ])
}

fn probe(path: Option<&str>, settings: Option<&ProbeSettings>, liveness: bool) -> Probe {
    let s = settings.cloned().unwrap_or_default().with_defaults();
    let port = IntOrString::String("http".into());
    Probe {
        http_get: path.map(|p| HTTPGetAction { path: Some(p.to_owned()), port: port.clone(), ..Default::default() }),
        tcp_socket: path.is_none().then(|| TCPSocketAction { port, ..Default::default() }),
        initial_delay_seconds: s.initial_delay_seconds,
        period_seconds: s.period_seconds,
        timeout_seconds: s.timeout_seconds,
        // Kubernetes requires 1 for liveness.
        success_threshold: if liveness { Some(1) } else { s.success_threshold },
        failure_threshold: s.failure_threshold,
        ..Default::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..Default::default() }
}

/// `ours`, less what the user sets too, then the user's: the user's variables win.
fn with_user_env(ours: Vec<EnvVar>, user: &[EnvVar]) -> Vec<EnvVar> {
    let mut all: Vec<EnvVar> = ours.into_iter().filter(|e| !user.iter().any(|u| u.name == e.name)).collect();
    all.extend(user.iter().cloned());
    all
}

/// The rolling update every serving Deployment uses: a new pod is Ready before an old one goes.
fn zero_unavailable() -> DeploymentStrategy {
    DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment {
            max_unavailable: Some(IntOrString::Int(0)),
            max_surge: Some(IntOrString::String("25%".into())),
        }),
    }
}

/// The init container downloading a `uri` model into the model directory.
fn fetch_container(model: &ServedModel, uri: &str, images: &Images, plan: &DeploymentPlan) -> Container {
    let (image, script) = if uri.starts_with("s3://") {
        (
            &images.fetch_s3,
            // A prefix (a "folder") is copied recursively, an object as one file.
            "set -eu\n\
             if aws s3 ls \"${MODEL_URI%/}/\" >/dev/null 2>&1; then\n\
             \x20 exec aws s3 cp --only-show-errors --recursive \"${MODEL_URI%/}/\" \"$MODEL_DEST\"\n\
             fi\n\
             exec aws s3 cp --only-show-errors \"$MODEL_URI\" \"$MODEL_DEST\"\n",
        )
    } else {
        (
            &images.fetch_https,
            "set -eu\nexec curl --fail --silent --show-error --location --retry 5 --output \"$MODEL_DEST\" \"$MODEL_URI\"\n",
        )
    };
    // The user's variables come along: credentials (AWS_*, from a Secret) and endpoints
    // (AWS_ENDPOINT_URL) for the download.
    let user_env = plan.spec.environment.as_ref().map(|e| e.env.as_slice()).unwrap_or_default();
    Container {
        name: FETCH_CONTAINER.into(),
        image: Some(image.clone()),
        command: Some(vec!["/bin/sh".into(), "-c".into(), script.into()]),
        env: Some(with_user_env(vec![env("MODEL_URI", uri), env("MODEL_DEST", model.files())], user_env)),
        volume_mounts: Some(vec![VolumeMount { name: "model".into(), mount_path: model.dir(), ..Default::default() }]),
        resources: plan.instance_type.resources.as_ref().map(|r| r.to_requirements()),
        ..Default::default()
    }
}

/// The Deployment serving one deployment of the endpoint.
pub fn model_server(md: &ModelDeployment, plan: &DeploymentPlan, images: &Images) -> Deployment {
    let spec = plan.spec;
    let runtime = spec.effective_runtime();
    let port = runtime.effective_port().unwrap_or(8080);
    let settings = spec.request_settings.clone().unwrap_or_default();
    let user_env = spec.environment.as_ref().map(|e| e.env.as_slice()).unwrap_or_default();

    let mut ours = Vec::new();
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let mut init_containers = Vec::new();
    if let Some(model) = &plan.model {
        ours.push(env("AZUREML_MODEL_DIR", model.dir()));
        match &model.location {
            ModelLocation::Claim { claim, path } => {
                volumes.push(Volume {
                    name: "model".into(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: claim.clone(),
                        read_only: Some(true),
                    }),
                    ..Default::default()
                });
                mounts.push(VolumeMount {
                    name: "model".into(),
                    mount_path: model.files(),
                    sub_path: Some(path.clone()),
                    read_only: Some(true),
                    ..Default::default()
                });
            }
            ModelLocation::Uri(uri) => {
                volumes.push(Volume {
                    name: "model".into(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Default::default()
                });
                mounts.push(VolumeMount {
                    name: "model".into(),
                    mount_path: model.dir(),
                    read_only: Some(true),
                    ..Default::default()
                });
                init_containers.push(fetch_container(model, uri, images, plan));
            }
        }
    }
    if let Some(code) = &spec.code {
        volumes.push(Volume {
            name: "code".into(),
            config_map: Some(ConfigMapVolumeSource { name: code.config_map.clone(), ..Default::default() }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "code".into(),
            mount_path: CODE_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }

    // The Azure ML scoring-script contract: the inference server runs the script's init() once
    // and run() per request. Without code, the image's own command serves (a script baked in).
    let (command, args) = match (runtime.type_, &spec.code) {
        (RuntimeType::AzureML, Some(code)) => {
            let script = format!("{CODE_DIR}/{}", code.scoring_script);
            ours.push(env("AML_APP_ROOT", CODE_DIR));
            ours.push(env("AZUREML_ENTRY_SCRIPT", script.clone()));
            (
                Some(vec![AZUREML_SERVER_COMMAND.to_owned()]),
                Some(vec!["--entry_script".into(), script, "--port".into(), port.to_string()]),
            )
        }
        _ => (None, None),
    };
    if runtime.type_ == RuntimeType::AzureML {
        ours.push(env("WORKER_COUNT", settings.max_concurrent_requests_per_instance.to_string()));
        ours.push(env("SCORING_TIMEOUT_MS", settings.request_timeout_ms.to_string()));
    }

    let container = Container {
        name: INFERENCE_CONTAINER.into(),
        image: Some(plan.image.clone()),
        command,
        args,
        env: Some(with_user_env(ours, user_env)).filter(|e| !e.is_empty()),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: port,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        liveness_probe: Some(probe(runtime.effective_liveness_path(), spec.liveness_probe.as_ref(), true)),
        readiness_probe: Some(probe(runtime.effective_readiness_path(), spec.readiness_probe.as_ref(), false)),
        resources: plan.instance_type.resources.as_ref().map(|r| r.to_requirements()),
        volume_mounts: Some(mounts).filter(|m| !m.is_empty()),
        ..Default::default()
    };

    let name = deployment_child_name(&md.name_any(), &spec.name);
    let labels = deployment_labels(md, &spec.name);
    let mut meta = metadata(md, name, labels.clone());
    meta.annotations = plan
        .model
        .as_ref()
        .map(|m| BTreeMap::from([(MODEL_ANNOTATION.to_owned(), model_version_ref(&m.name, m.version))]));
    Deployment {
        metadata: meta,
        spec: Some(DeploymentSpec {
            // With an HPA the replica count is the HPA's: leaving it out keeps the operator from
            // ever resetting it.
            replicas: spec.scale.is_none().then_some(spec.instance_count),
            selector: LabelSelector { match_labels: Some(deployment_selector(md, &spec.name)), ..Default::default() },
            strategy: Some(zero_unavailable()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..Default::default() }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    init_containers: Some(init_containers).filter(|c| !c.is_empty()),
                    volumes: Some(volumes).filter(|v| !v.is_empty()),
                    service_account_name: plan.service_account.clone(),
                    // Scoring code has no business with the Kubernetes API.
                    automount_service_account_token: Some(false),
                    // Service links put a variable per Service of the namespace in the
                    // environment: noise for scoring code, and slow with many endpoints.
                    enable_service_links: Some(false),
                    node_selector: Some(plan.instance_type.node_selector.clone()).filter(|n| !n.is_empty()),
                    tolerations: Some(plan.instance_type.tolerations.clone()).filter(|t| !t.is_empty()),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// The ClusterIP Service in front of one deployment: the router's backend.
pub fn model_service(md: &ModelDeployment, deployment: &OnlineDeployment) -> Service {
    let name = deployment_child_name(&md.name_any(), &deployment.name);
    Service {
        metadata: metadata(md, name, deployment_labels(md, &deployment.name)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(deployment_selector(md, &deployment.name)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: SERVICE_PORT,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// The HPA of a deployment with `scale`: CPU utilization of the requests, between the bounds.
pub fn autoscaler(md: &ModelDeployment, deployment: &OnlineDeployment) -> Option<HorizontalPodAutoscaler> {
    let scale = deployment.scale.as_ref()?;
    let name = deployment_child_name(&md.name_any(), &deployment.name);
    Some(HorizontalPodAutoscaler {
        metadata: metadata(md, name.clone(), deployment_labels(md, &deployment.name)),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name,
            },
            min_replicas: Some(scale.min_instances),
            max_replicas: scale.max_instances,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(scale.target_utilization_percentage),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]),
            behavior: None,
        },
        status: None,
    })
}

/// The most instances a deployment can have.
pub fn max_instances(deployment: &OnlineDeployment) -> i32 {
    deployment.scale.as_ref().map_or(deployment.instance_count, |s| s.max_instances)
}

/// The PodDisruptionBudget of a deployment that can have more than one instance: voluntary
/// disruptions (node drains) take one instance at a time.
pub fn disruption_budget(md: &ModelDeployment, deployment: &OnlineDeployment) -> Option<PodDisruptionBudget> {
    if max_instances(deployment) <= 1 {
        return None;
    }
    let name = deployment_child_name(&md.name_any(), &deployment.name);
    Some(PodDisruptionBudget {
        metadata: metadata(md, name, deployment_labels(md, &deployment.name)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(deployment_selector(md, &deployment.name)),
                ..Default::default()
            }),
            // A crash-looping instance must not block a drain.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..Default::default()
        }),
        status: None,
    })
}

/// The path the router sends `/score` to: the runtime's scoring path, or for OpenInference the
/// V2 inference path of the model (by its registry name, else the deployment's name).
pub fn scoring_path(deployment: &OnlineDeployment) -> String {
    let runtime = deployment.effective_runtime();
    match runtime.effective_scoring_path() {
        Some(path) => path.to_owned(),
        None if runtime.type_ == RuntimeType::OpenInference => {
            let model = deployment.model.as_ref().map_or(deployment.name.as_str(), |m| m.name.as_str());
            format!("/v2/models/{model}/infer")
        }
        None => "/score".to_owned(),
    }
}

/// The router's configuration: every deployment as a backend, the effective traffic and the
/// mirrors. `instances(deployment)` is how many instances it has (0 while it has none).
pub fn router_config(md: &ModelDeployment, instances: impl Fn(&OnlineDeployment) -> u32) -> RouterConfig {
    let namespace = md.namespace().unwrap_or_default();
    let endpoint = md.name_any();
    let percent = |v: &i32| u32::try_from(*v).unwrap_or(0);
    RouterConfig {
        endpoint: endpoint.clone(),
        auth_mode: match md.spec.auth_mode {
            AuthMode::Key => RouterAuthMode::Key,
            AuthMode::None => RouterAuthMode::None,
        },
        deployments: md
            .spec
            .deployments
            .iter()
            .map(|d| {
                let settings = d.request_settings.clone().unwrap_or_default();
                Backend {
                    name: d.name.clone(),
                    url: backend_url(&endpoint, &namespace, &d.name),
                    scoring_path: scoring_path(d),
                    instances: instances(d),
                    request_timeout_ms: u64::try_from(settings.request_timeout_ms).unwrap_or(1).max(1),
                    max_concurrent_requests_per_instance: u32::try_from(settings.max_concurrent_requests_per_instance)
                        .unwrap_or(1)
                        .max(1),
                    max_queue_wait_ms: u64::try_from(settings.max_queue_wait_ms).unwrap_or(0),
                }
            })
            .collect(),
        traffic: md.spec.effective_traffic().iter().map(|(k, v)| (k.clone(), percent(v))).collect(),
        mirror_traffic: md.spec.mirror_traffic.iter().map(|(k, v)| (k.clone(), percent(v))).collect(),
    }
}

/// The ConfigMap holding the router configuration. The router re-reads the mounted file when it
/// changes, so traffic changes apply without restarting it.
pub fn router_config_map(md: &ModelDeployment, config: &RouterConfig) -> ConfigMap {
    let json = serde_json::to_string_pretty(config).expect("a RouterConfig serializes");
    ConfigMap {
        metadata: metadata(md, router_config_name(&md.name_any()), child_labels(md, COMPONENT_ROUTER)),
        data: Some(BTreeMap::from([(ROUTER_CONFIG_FILE.into(), json)])),
        ..Default::default()
    }
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned()))).collect()
}

/// The router Deployment. Its pod template does not depend on the traffic or the deployments,
/// so changing them never restarts the router.
pub fn router_deployment(md: &ModelDeployment, image: &str, service_account: Option<&str>) -> Deployment {
    let endpoint = md.name_any();
    let key_auth = md.spec.auth_mode == AuthMode::Key;
    let mut args = vec![
        "--config".to_owned(),
        format!("{ROUTER_CONFIG_DIR}/{ROUTER_CONFIG_FILE}"),
        "--listen".to_owned(),
        format!("0.0.0.0:{ROUTER_PORT}"),
        "--admin-listen".to_owned(),
        format!("0.0.0.0:{ROUTER_ADMIN_PORT}"),
    ];
    let mut volumes = vec![Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource { name: router_config_name(&endpoint), ..Default::default() }),
        ..Default::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "config".into(),
        mount_path: ROUTER_CONFIG_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    }];
    if key_auth {
        args.extend(["--keys-dir".to_owned(), ROUTER_KEYS_DIR.to_owned()]);
        volumes.push(Volume {
            name: "keys".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(keys_secret_name(&endpoint)),
                items: Some(
                    KEY_FILES
                        .iter()
                        .map(|(key, file)| KeyToPath { key: (*key).into(), path: (*file).into(), mode: None })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "keys".into(),
            mount_path: ROUTER_KEYS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    let admin_probe = |path: &str, failure_threshold: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("metrics".into()),
            ..Default::default()
        }),
        period_seconds: Some(5),
        timeout_seconds: Some(2),
        failure_threshold: Some(failure_threshold),
        ..Default::default()
    };
    let port = |name: &str, port: i32| ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let container = Container {
        name: "router".into(),
        image: Some(image.into()),
        args: Some(args),
        ports: Some(vec![port("http", ROUTER_PORT), port("metrics", ROUTER_ADMIN_PORT)]),
        readiness_probe: Some(admin_probe("/readyz", 2)),
        liveness_probe: Some(admin_probe("/healthz", 6)),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&[("cpu", "50m"), ("memory", "64Mi")])),
            limits: Some(quantities(&[("cpu", "1"), ("memory", "256Mi")])),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    let labels = child_labels(md, COMPONENT_ROUTER);
    Deployment {
        metadata: metadata(md, router_name(&endpoint), labels.clone()),
        spec: Some(DeploymentSpec {
            replicas: Some(ROUTER_REPLICAS),
            selector: LabelSelector { match_labels: Some(router_selector(md)), ..Default::default() },
            strategy: Some(zero_unavailable()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..Default::default() }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    service_account_name: service_account.map(Into::into),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    // The router's shutdown delay (5 s), its drain time (25 s), and a margin.
                    termination_grace_period_seconds: Some(35),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// The endpoint's Service, of the exposure's type, in front of the router.
pub fn router_service(md: &ModelDeployment) -> Service {
    let exposure = md.spec.exposure.clone().unwrap_or_default();
    let mut meta = metadata(md, router_name(&md.name_any()), child_labels(md, COMPONENT_ROUTER));
    meta.annotations = Some(exposure.annotations.clone()).filter(|a| !a.is_empty());
    let type_ = match exposure.type_ {
        ExposureType::ClusterIP => "ClusterIP",
        ExposureType::NodePort => "NodePort",
        ExposureType::LoadBalancer => "LoadBalancer",
    };
    Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            selector: Some(router_selector(md)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: exposure.port,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// The key Secret with these two keys. Created once and never written again.
pub fn keys_secret(md: &ModelDeployment, primary: &str, secondary: &str) -> Secret {
    Secret {
        metadata: metadata(md, keys_secret_name(&md.name_any()), child_labels(md, COMPONENT_KEYS)),
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([
            (PRIMARY_KEY.into(), primary.to_owned()),
            (SECONDARY_KEY.into(), secondary.to_owned()),
        ])),
        ..Default::default()
    }
}

/// Every child to apply: per planned deployment its Deployment, Service, HPA and PDB; the
/// router's Deployment, Service and configuration.
pub fn desired_children(
    md: &ModelDeployment,
    plans: &[DeploymentPlan],
    config: &RouterConfig,
    images: &Images,
    service_account: Option<&str>,
) -> Children {
    let mut children = Children::default();
    for plan in plans {
        children.deployments.push(model_server(md, plan, images));
        children.services.push(model_service(md, plan.spec));
        children.autoscalers.extend(autoscaler(md, plan.spec));
        children.disruption_budgets.extend(disruption_budget(md, plan.spec));
    }
    children.config_maps.push(router_config_map(md, config));
    children.deployments.push(router_deployment(md, &images.router, service_account));
    children.services.push(router_service(md));
    children
}

#[cfg(test)]
pub(crate) mod tests;
