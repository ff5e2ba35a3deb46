//! `ModelDeployment`: an online endpoint and the deployments behind it (namespaced, short name
//! `mdep`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::EnvVar;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, DNS_LABEL_MESSAGE, DNS_LABEL_RULE, ModelReference};

/// Condition type: the traffic split is consistent with the deployments.
pub const TRAFFIC_VALID: &str = "TrafficValid";

/// Image of the `AzureML` runtime when `environment.image` is not given.
pub const DEFAULT_AZUREML_IMAGE: &str = "mcr.microsoft.com/azureml/minimal-ubuntu22.04-py39-cpu-inference:latest";

fn default_port() -> i32 {
    80
}

fn default_scoring_script() -> String {
    "score.py".to_owned()
}

fn one() -> i32 {
    1
}

fn default_target_utilization_percentage() -> i32 {
    70
}

fn default_request_timeout_ms() -> i32 {
    5000
}

fn default_max_queue_wait_ms() -> i32 {
    500
}

/// The desired state of a ModelDeployment: how the endpoint is authenticated and exposed, its
/// deployments, and how live and mirrored traffic is split between them.
// clippy reads the `type_ = ...` of several printcolumn(...) lists as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "atrium.dev",
    version = "v1alpha1",
    kind = "ModelDeployment",
    namespaced,
    status = "ModelDeploymentStatus",
    shortname = "mdep",
    category = "atrium",
    derive = "PartialEq",
    doc = "A ModelDeployment is an online endpoint, like an Azure ML managed online endpoint: one \
           scoring URI with key authentication, and up to 10 deployments of a model and scoring \
           script behind it that split its traffic by weight.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "Whether the endpoint serves every deployment that has traffic"
    ),
    printcolumn(
        name = "Scoring URI",
        type_ = "string",
        json_path = ".status.scoringUri",
        description = "Where to send scoring requests"
    ),
    printcolumn(
        name = "Auth",
        type_ = "string",
        json_path = ".spec.authMode",
        description = "Key or None",
        priority = 1
    ),
    printcolumn(
        name = "Exposure",
        type_ = "string",
        json_path = ".spec.exposure.type",
        description = "The endpoint Service type",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.traffic) || self.traffic.all(k, self.deployments.exists(d, d.name == k))")
        .message("every key of traffic must be the name of a deployment in spec.deployments")
        .field_path(".traffic"),
    validation = Rule::new("!has(self.mirrorTraffic) || self.mirrorTraffic.all(k, self.deployments.exists(d, d.name == k))")
        .message("every key of mirrorTraffic must be the name of a deployment in spec.deployments")
        .field_path(".mirrorTraffic"),
    validation = Rule::new("!has(self.traffic) || self.traffic.map(k, self.traffic[k]).sum() in [0, 100]")
        .message("traffic percentages must add up to 100, or to 0 to stop live traffic")
        .field_path(".traffic"),
    validation = Rule::new("!has(self.mirrorTraffic) || !has(self.traffic) || self.mirrorTraffic.all(k, !(k in self.traffic) || self.traffic[k] == 0)")
        .message("a deployment is either live or mirrored, not both: a deployment in mirrorTraffic cannot have traffic above 0")
        .field_path(".mirrorTraffic"),
)]
pub struct ModelDeploymentSpec {
    /// `Key` (the default): requests need `Authorization: Bearer <key>` with one of the two
    /// keys in the Secret `<name>-keys`, generated once and never overwritten. `None`: no
    /// authentication.
    #[serde(default)]
    pub auth_mode: AuthMode,

    /// How the endpoint is exposed. Defaults to a ClusterIP Service on port 80.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure: Option<Exposure>,

    /// The deployments behind the endpoint, 1 to 10, each identified by its name.
    #[schemars(length(min = 1, max = 10))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub deployments: Vec<OnlineDeployment>,

    /// Live traffic by deployment name, in percent. The percentages add up to 100, or to 0 to
    /// stop live traffic. With a single deployment and no traffic given, it gets 100.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 10))]
    #[x_kube(validation = Rule::new("self.all(k, self[k] >= 0 && self[k] <= 100)")
        .message("traffic percentages must be between 0 and 100"))]
    pub traffic: BTreeMap<String, i32>,

    /// Mirrored traffic by deployment name, in percent of live requests: a copy is sent to the
    /// deployment and its response discarded. A deployment is either live or mirrored, not both.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 10))]
    #[x_kube(validation = Rule::new("self.all(k, self[k] >= 0 && self[k] <= 100)")
        .message("mirrorTraffic percentages must be between 0 and 100"))]
    pub mirror_traffic: BTreeMap<String, i32>,
}

impl ModelDeploymentSpec {
    /// The live traffic split in effect: `spec.traffic`, or 100 to the only deployment when
    /// there is one and no traffic is given.
    pub fn effective_traffic(&self) -> BTreeMap<String, i32> {
        match self.deployments.as_slice() {
            [only] if self.traffic.is_empty() => BTreeMap::from([(only.name.clone(), 100)]),
            _ => self.traffic.clone(),
        }
    }

    /// The deployment with this name.
    pub fn deployment(&self, name: &str) -> Option<&OnlineDeployment> {
        self.deployments.iter().find(|d| d.name == name)
    }
}

/// How requests to the endpoint are authenticated.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AuthMode {
    /// A bearer key from the endpoint's key Secret is required.
    #[default]
    Key,
    /// No authentication.
    None,
}

/// How the endpoint is exposed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Exposure {
    /// The Service type of the endpoint: `ClusterIP` (the default), `NodePort` or
    /// `LoadBalancer`.
    #[serde(rename = "type", default)]
    pub type_: ExposureType,

    /// The Service port. Defaults to 80.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Annotations for the endpoint Service, for example to configure a cloud load balancer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Default for Exposure {
    fn default() -> Self {
        Self { type_: ExposureType::default(), port: default_port(), annotations: BTreeMap::new() }
    }
}

/// The Service type of an endpoint.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ExposureType {
    /// Reachable inside the cluster only.
    #[default]
    ClusterIP,
    /// Also reachable on a port of every node.
    NodePort,
    /// Also reachable through a cloud or bare-metal load balancer.
    LoadBalancer,
}

/// One deployment of a model behind the endpoint: its code, image, runtime and scale.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "(!has(self.runtime) || self.runtime.type == 'AzureML') || (has(self.environment) && has(self.environment.image))"
).message("environment.image is required unless runtime.type is AzureML"))]
pub struct OnlineDeployment {
    /// The deployment's name, unique in the endpoint: a DNS label of at most 63 characters.
    /// Requests with the header `azureml-model-deployment: <name>` go to this deployment only.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(DNS_LABEL_RULE).message(DNS_LABEL_MESSAGE))]
    pub name: String,

    /// The model to serve, mounted read-only (or downloaded, for `uri` sources). Without a
    /// version, the highest Ready version is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelReference>,

    /// The scoring code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<DeploymentCode>,

    /// The container image and environment variables of the deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<DeploymentEnvironment>,

    /// The serving contract. Defaults to `AzureML`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,

    /// Name of the InstanceType of one instance. Defaults to `defaultinstancetype`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub instance_type: Option<String>,

    /// Number of instances (pods) when `scale` is not set. Defaults to 1.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub instance_count: i32,

    /// Autoscaling on CPU utilization. When set, the instance count moves between
    /// `minInstances` and `maxInstances` and `instanceCount` is not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<Scale>,

    /// Request timeout and concurrency limits, enforced by the endpoint router.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_settings: Option<RequestSettings>,

    /// Liveness probe settings; unset fields use the runtime's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("!has(self.successThreshold) || self.successThreshold == 1")
        .message("successThreshold must be 1 for a liveness probe"))]
    pub liveness_probe: Option<ProbeSettings>,

    /// Readiness probe settings; unset fields use the runtime's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<ProbeSettings>,
}

impl OnlineDeployment {
    /// A deployment with this name and every other field unset or defaulted.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            model: None,
            code: None,
            environment: None,
            runtime: None,
            instance_type: None,
            instance_count: one(),
            scale: None,
            request_settings: None,
            liveness_probe: None,
            readiness_probe: None,
        }
    }

    /// The runtime in effect: `runtime`, or `AzureML` with its defaults.
    pub fn effective_runtime(&self) -> Runtime {
        self.runtime.clone().unwrap_or_default()
    }

    /// The image in effect: `environment.image`, or the Azure ML inference image for the
    /// `AzureML` runtime.
    pub fn effective_image(&self) -> Option<&str> {
        match self.environment.as_ref().and_then(|e| e.image.as_deref()) {
            Some(image) => Some(image),
            None if self.effective_runtime().type_ == RuntimeType::AzureML => Some(DEFAULT_AZUREML_IMAGE),
            None => None,
        }
    }
}

/// The scoring code of a deployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentCode {
    /// Name of a ConfigMap in this namespace whose keys are the code files.
    #[schemars(length(min = 1, max = 253))]
    pub config_map: String,

    /// The scoring script among the code files, with `init()` and `run(raw_data)`.
    /// Defaults to `score.py`.
    #[serde(default = "default_scoring_script")]
    #[schemars(length(min = 1, max = 253))]
    pub scoring_script: String,
}

/// The container image and environment of a deployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentEnvironment {
    /// The serving image. Defaults, for the `AzureML` runtime only, to
    /// `mcr.microsoft.com/azureml/minimal-ubuntu22.04-py39-cpu-inference:latest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub image: Option<String>,

    /// Environment variables for the serving container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
}

/// The serving contract of a deployment's container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type != 'Custom' || (has(self.port) && has(self.scoringPath))")
    .message("a Custom runtime needs port and scoringPath"))]
pub struct Runtime {
    /// `AzureML` (the default): the Azure ML scoring-script contract served by
    /// azureml-inference-server-http (port 5001, scoring on `/score`, liveness and readiness on
    /// `/`). `OpenInference`: the V2 inference protocol (port 8080, readiness on
    /// `/v2/health/ready`, liveness on `/v2/health/live`). `Custom`: give `port` and
    /// `scoringPath`; without probe paths, the port is probed over TCP.
    #[serde(rename = "type", default)]
    pub type_: RuntimeType,

    /// The container port that serves requests, overriding the runtime's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,

    /// HTTP path of the liveness probe, overriding the runtime's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("must be a URL path starting with '/'"))]
    pub liveness_path: Option<String>,

    /// HTTP path of the readiness probe, overriding the runtime's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("must be a URL path starting with '/'"))]
    pub readiness_path: Option<String>,

    /// HTTP path that scoring requests are sent to, overriding the runtime's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self.matches('^/[!-~]*$') && !self.contains('?') && !self.contains('#')")
        .message("must be a URL path: '/' and then printable ASCII without spaces, '?' or '#' (percent-encode anything else)"))]
    pub scoring_path: Option<String>,
}

impl Runtime {
    /// The container port in effect.
    pub fn effective_port(&self) -> Option<i32> {
        self.port.or(match self.type_ {
            RuntimeType::AzureML => Some(5001),
            RuntimeType::OpenInference => Some(8080),
            RuntimeType::Custom => None,
        })
    }

    /// The liveness probe path in effect; `None` means a TCP probe.
    pub fn effective_liveness_path(&self) -> Option<&str> {
        self.liveness_path.as_deref().or(match self.type_ {
            RuntimeType::AzureML => Some("/"),
            RuntimeType::OpenInference => Some("/v2/health/live"),
            RuntimeType::Custom => None,
        })
    }

    /// The readiness probe path in effect; `None` means a TCP probe.
    pub fn effective_readiness_path(&self) -> Option<&str> {
        self.readiness_path.as_deref().or(match self.type_ {
            RuntimeType::AzureML => Some("/"),
            RuntimeType::OpenInference => Some("/v2/health/ready"),
            RuntimeType::Custom => None,
        })
    }

    /// The scoring path in effect for the `AzureML` and `Custom` runtimes. `OpenInference`
    /// requests keep their `/v2/models/{model}/infer` path.
    pub fn effective_scoring_path(&self) -> Option<&str> {
        self.scoring_path.as_deref().or(match self.type_ {
            RuntimeType::AzureML => Some("/score"),
            RuntimeType::OpenInference | RuntimeType::Custom => None,
        })
    }
}

/// The serving contract of a deployment's container.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RuntimeType {
    /// The Azure ML scoring-script contract (`init()` and `run(raw_data)`).
    #[default]
    AzureML,
    /// The V2 inference protocol.
    OpenInference,
    /// Any HTTP server, described by the runtime's port and paths.
    Custom,
}

/// Autoscaling of a deployment on CPU utilization.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minInstances <= self.maxInstances")
    .message("minInstances cannot be greater than maxInstances")
    .field_path(".minInstances"))]
pub struct Scale {
    /// The fewest instances. Defaults to 1.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub min_instances: i32,

    /// The most instances.
    #[schemars(range(min = 1))]
    pub max_instances: i32,

    /// The average CPU utilization, in percent of the requests, that autoscaling aims for.
    /// Defaults to 70.
    #[serde(default = "default_target_utilization_percentage")]
    #[schemars(range(min = 1, max = 100))]
    pub target_utilization_percentage: i32,
}

/// Request handling limits of a deployment, enforced by the endpoint router.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RequestSettings {
    /// Milliseconds a request may take, from getting a slot to the last byte of the response,
    /// before the router answers 504 (or cuts off a response already streaming). Defaults to 5000.
    #[serde(default = "default_request_timeout_ms")]
    #[schemars(range(min = 1))]
    pub request_timeout_ms: i32,

    /// Requests one instance handles at a time; more wait in a bounded queue. Defaults to 1.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub max_concurrent_requests_per_instance: i32,

    /// Milliseconds a request may wait in the queue before the router answers 429.
    /// Defaults to 500.
    #[serde(default = "default_max_queue_wait_ms")]
    #[schemars(range(min = 0))]
    pub max_queue_wait_ms: i32,
}

impl Default for RequestSettings {
    fn default() -> Self {
        Self {
            request_timeout_ms: default_request_timeout_ms(),
            max_concurrent_requests_per_instance: one(),
            max_queue_wait_ms: default_max_queue_wait_ms(),
        }
    }
}

/// Probe settings of a deployment's container. Unset fields use the defaults of
/// Azure ML: initialDelaySeconds 10, periodSeconds 10, timeoutSeconds 2, successThreshold 1,
/// failureThreshold 30.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSettings {
    /// Seconds after the container starts before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub initial_delay_seconds: Option<i32>,

    /// Seconds between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub period_seconds: Option<i32>,

    /// Seconds after which a probe times out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: Option<i32>,

    /// Consecutive successes for the probe to pass after a failure. Must be 1 for liveness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub success_threshold: Option<i32>,

    /// Consecutive failures for the probe to fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub failure_threshold: Option<i32>,
}

impl ProbeSettings {
    /// These settings with every unset field given Azure ML's default.
    pub fn with_defaults(&self) -> Self {
        Self {
            initial_delay_seconds: self.initial_delay_seconds.or(Some(10)),
            period_seconds: self.period_seconds.or(Some(10)),
            timeout_seconds: self.timeout_seconds.or(Some(2)),
            success_threshold: self.success_threshold.or(Some(1)),
            failure_threshold: self.failure_threshold.or(Some(30)),
        }
    }
}

/// The observed state of a ModelDeployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The endpoint's conditions: `Ready` (every deployment with traffic has a ready instance,
    /// the router is ready, and the load balancer has an address when asked for) and
    /// `TrafficValid`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The URL to send scoring requests to; the load balancer's address for `LoadBalancer`
    /// exposure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scoring_uri: Option<String>,

    /// Name of the Secret holding the `primaryKey` and `secondaryKey` for `Key` authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_secret: Option<String>,

    /// The live traffic split in effect, by deployment name, in percent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub traffic: BTreeMap<String, i32>,

    /// The state of each deployment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub deployments: Vec<OnlineDeploymentStatus>,
}

/// The observed state of one deployment.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OnlineDeploymentStatus {
    /// The deployment's name.
    pub name: String,

    /// Instances (pods) of the deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,

    /// Instances ready to serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,

    /// The model version served, as `name:version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,

    /// The last reason the deployment could not serve, read from its pods or its model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<DeploymentFailure>,
}

/// Why a deployment could not serve.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentFailure {
    /// A CamelCase reason, for example `ImagePullBackOff`, `CrashLoopBackOff` or `ModelNotFound`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,

    /// A human-readable explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn minimal_spec_round_trips() {
        let spec: ModelDeploymentSpec = serde_json::from_value(json!({"deployments": [{"name": "blue"}]})).unwrap();
        assert_eq!(spec.auth_mode, AuthMode::Key);
        assert_eq!(spec.deployments, [OnlineDeployment::named("blue")]);
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            json!({"authMode": "Key", "deployments": [{"name": "blue", "instanceCount": 1}]})
        );
    }

    #[test]
    fn single_deployment_gets_all_traffic() {
        let mut spec = ModelDeploymentSpec {
            auth_mode: AuthMode::Key,
            exposure: None,
            deployments: vec![OnlineDeployment::named("blue")],
            traffic: BTreeMap::new(),
            mirror_traffic: BTreeMap::new(),
        };
        assert_eq!(spec.effective_traffic(), BTreeMap::from([("blue".into(), 100)]));
        spec.deployments.push(OnlineDeployment::named("green"));
        assert!(spec.effective_traffic().is_empty());
    }

    #[test]
    fn nested_defaults_match_design() {
        let exposure: Exposure = serde_json::from_value(json!({})).unwrap();
        assert_eq!(exposure, Exposure::default());
        assert_eq!((exposure.type_, exposure.port), (ExposureType::ClusterIP, 80));

        let settings: RequestSettings = serde_json::from_value(json!({})).unwrap();
        assert_eq!(settings, RequestSettings::default());
        assert_eq!(
            (settings.request_timeout_ms, settings.max_concurrent_requests_per_instance, settings.max_queue_wait_ms),
            (5000, 1, 500)
        );

        let code: DeploymentCode = serde_json::from_value(json!({"configMap": "score"})).unwrap();
        assert_eq!(code.scoring_script, "score.py");

        let runtime = Runtime::default();
        assert_eq!(runtime.type_, RuntimeType::AzureML);
        assert_eq!(runtime.effective_scoring_path(), Some("/score"));
        assert_eq!(runtime.effective_liveness_path(), Some("/"));
        assert_eq!(OnlineDeployment::named("blue").effective_image(), Some(DEFAULT_AZUREML_IMAGE));
    }
}
