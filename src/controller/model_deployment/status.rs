//! Pure: a ModelDeployment's status from its live children — Deployments, their pods, the router
//! and its Service — and from what could not be resolved. Nothing is remembered between
//! reconciles: readiness and failures are read anew every time.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentCondition},
        core::v1::{ContainerStatus, Pod, Service},
    },
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::ResourceExt;

use super::{
    build,
    cached::{DeploymentSummary, PodSummary},
};
use crate::{
    api::{
        ModelDeployment, ModelDeploymentStatus,
        model_deployment::{
            AuthMode, DeploymentFailure, ExposureType, OnlineDeployment, OnlineDeploymentStatus, TRAFFIC_VALID,
        },
    },
    runtime::conditions::{Cond, READY, merge},
};

/// Ready: every deployment with live traffic has a ready instance, the router too, and the load
/// balancer (if asked for) has an address.
pub const REASON_SERVING: &str = "Serving";
/// TrafficValid: the split is consistent.
pub const REASON_VALID: &str = "Valid";
/// The traffic does not form a valid router configuration.
pub const REASON_INVALID_TRAFFIC: &str = "InvalidTraffic";
/// No deployment has a positive traffic weight.
pub const REASON_NO_LIVE_TRAFFIC: &str = "NoLiveTraffic";
/// A deployment with traffic has no ready instance (and no more precise failure is known).
pub const REASON_DEPLOYMENT_NOT_READY: &str = "DeploymentNotReady";
/// The router has no ready instance.
pub const REASON_ROUTER_NOT_READY: &str = "RouterNotReady";
/// The LoadBalancer Service has no address yet.
pub const REASON_LOAD_BALANCER_PENDING: &str = "LoadBalancerPending";
/// Reasons of a `Ready=False` that mean the endpoint is on its way, not that something is wrong:
/// status changes among them are written once they settle (`runtime::settle`).
pub const PROGRESS_REASONS: &[&str] =
    &[REASON_DEPLOYMENT_NOT_READY, REASON_ROUTER_NOT_READY, REASON_LOAD_BALANCER_PENDING];
/// A child's name is taken by another ModelDeployment's child.
pub const REASON_NAME_CONFLICT: &str = "NameConflict";
/// The instance type a deployment names does not exist.
pub const REASON_INSTANCE_TYPE_NOT_FOUND: &str = "InstanceTypeNotFound";
/// The API server refused a child built from the spec (for example an invalid env entry).
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";
/// The API server refused a child as forbidden: a ResourceQuota it would exceed (say
/// `services.loadbalancers`), or an admission policy.
pub const REASON_FORBIDDEN: &str = "Forbidden";

/// Container waiting reasons that mean the container cannot run, as the kubelet reports them.
const WAITING_FAILURES: [&str; 8] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

fn failure(reason: &str, message: String) -> DeploymentFailure {
    DeploymentFailure { reason: Some(reason.to_owned()), message: Some(message) }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn container_failure(pod: &str, kind: &str, cs: &ContainerStatus) -> Option<DeploymentFailure> {
    let state = cs.state.as_ref()?;
    if let Some(waiting) = &state.waiting {
        let reason = waiting.reason.as_deref().filter(|r| WAITING_FAILURES.contains(r))?;
        if reason == "CrashLoopBackOff" {
            let last = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref());
            let exit = last.map(|t| t.exit_code).unwrap_or_default();
            let last_reason = last.and_then(|t| t.reason.as_deref()).unwrap_or("Error");
            let reason = if last_reason == "OOMKilled" { "OOMKilled" } else { reason };
            return Some(failure(
                reason,
                format!(
                    "{kind} {} of pod {pod} keeps exiting (last exit code {exit}, {last_reason}); see `kubectl logs {pod} -c {} --previous`",
                    cs.name, cs.name
                ),
            ));
        }
        let detail = waiting.message.as_deref().filter(|m| !m.is_empty()).unwrap_or(reason);
        return Some(failure(reason, format!("{kind} {} of pod {pod}: {detail}", cs.name)));
    }
    // An init container that failed and is not (yet) restarted.
    let terminated = state.terminated.as_ref().filter(|t| t.exit_code != 0 && kind == "init container")?;
    let reason = terminated.reason.as_deref().unwrap_or("Error");
    Some(failure(reason, format!("{kind} {} of pod {pod} failed with exit code {}", cs.name, terminated.exit_code)))
}

/// Why one pod cannot serve, if it cannot and the reason is a failure (not just starting).
pub fn single_pod_failure(pod: &Pod) -> Option<DeploymentFailure> {
    if is_ready(pod) || pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let name = pod.name_any();
    let status = pod.status.as_ref()?;
    if let Some(c) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable"))
    {
        return Some(failure(
            "Unschedulable",
            format!("pod {name} cannot be scheduled: {}", c.message.as_deref().unwrap_or("")),
        ));
    }
    let init = status.init_container_statuses.iter().flatten().map(|cs| ("init container", cs));
    let main = status.container_statuses.iter().flatten().map(|cs| ("container", cs));
    if let Some(found) = init.chain(main).find_map(|(kind, cs)| container_failure(&name, kind, cs)) {
        return Some(found);
    }
    (status.phase.as_deref() == Some("Failed")).then(|| {
        let reason = status.reason.as_deref().unwrap_or("PodFailed");
        failure(reason, format!("pod {name} failed: {}", status.message.as_deref().unwrap_or(reason)))
    })
}

/// The failure of the first failing pod (by name, so the answer is stable).
pub fn pod_failure<'a>(pods: impl IntoIterator<Item = &'a PodSummary>) -> Option<DeploymentFailure> {
    let mut pods: Vec<&PodSummary> = pods.into_iter().collect();
    pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    pods.into_iter().find_map(|p| p.failure.clone())
}

/// A failure the Deployment itself reports: pods it cannot create (quota, admission) or a
/// rollout past its deadline.
pub fn rollout_failure(deployment: &Deployment) -> Option<DeploymentFailure> {
    deployment.status.as_ref()?.conditions.as_ref()?.iter().find_map(rollout_failure_condition)
}

/// The failure one Deployment condition reports, if it reports one.
pub fn rollout_failure_condition(c: &DeploymentCondition) -> Option<DeploymentFailure> {
    match (c.type_.as_str(), c.status.as_str()) {
        ("ReplicaFailure", "True") => {
            Some(failure(c.reason.as_deref().unwrap_or("ReplicaFailure"), c.message.clone().unwrap_or_default()))
        }
        ("Progressing", "False") => Some(failure(
            c.reason.as_deref().unwrap_or("ProgressDeadlineExceeded"),
            c.message.clone().unwrap_or_default(),
        )),
        _ => None,
    }
}

/// What is known about one deployment this round.
#[derive(Clone, Debug, Default)]
pub struct Observed<'a> {
    /// The live Deployment, if any.
    pub live: Option<&'a DeploymentSummary>,
    /// Its pods.
    pub pods: Vec<&'a PodSummary>,
    /// The model version it serves, `name:version`.
    pub model: Option<String>,
    /// Why it could not be (re)built this round: an unresolved reference or a refused child.
    pub problem: Option<DeploymentFailure>,
}

/// The status of one deployment: counts from the live Deployment; the failure from what could
/// not be built, else the pods, else the Deployment's own conditions.
pub fn deployment_status(name: &str, observed: &Observed) -> OnlineDeploymentStatus {
    let last_failure = observed
        .problem
        .clone()
        .or_else(|| pod_failure(observed.pods.iter().copied()))
        .or_else(|| observed.live.and_then(|d| d.failure.clone()));
    OnlineDeploymentStatus {
        name: name.to_owned(),
        replicas: observed.live.map(|d| d.current_replicas.unwrap_or(0)),
        ready_replicas: observed.live.map(|d| d.ready_replicas.unwrap_or(0)),
        model: observed.model.clone(),
        last_failure,
    }
}

/// The load balancer address of a Service, if it has one.
pub fn load_balancer_address(service: &Service) -> Option<String> {
    let ingress = service.status.as_ref()?.load_balancer.as_ref()?.ingress.as_ref()?;
    ingress.iter().find_map(|i| i.ip.clone().or_else(|| i.hostname.clone()).filter(|a| !a.is_empty()))
}

/// Where to send scoring requests: the load balancer's address for `LoadBalancer` exposure
/// (none until it has one), else the Service's in-cluster name.
pub fn scoring_uri(md: &ModelDeployment, router_service: Option<&Service>) -> Option<String> {
    let service = router_service?;
    let exposure = md.spec.exposure.clone().unwrap_or_default();
    let port = if exposure.port == 80 { String::new() } else { format!(":{}", exposure.port) };
    let host = match exposure.type_ {
        ExposureType::LoadBalancer => load_balancer_address(service)?,
        ExposureType::ClusterIP | ExposureType::NodePort => {
            format!("{}.{}.svc", service.name_any(), md.namespace().unwrap_or_default())
        }
    };
    Some(format!("http://{host}{port}/score"))
}

fn describe_split(split: &BTreeMap<String, u32>) -> String {
    split.iter().map(|(name, percent)| format!("{name} {percent}%")).collect::<Vec<_>>().join(", ")
}

/// `TrafficValid`: whether the live and mirrored split make a valid router configuration.
pub fn traffic_condition(config: &atrium_router::config::RouterConfig) -> Cond {
    match config.validate() {
        Err(e) => Cond::fail(TRAFFIC_VALID, REASON_INVALID_TRAFFIC, e.to_string()),
        Ok(()) => {
            let live: BTreeMap<String, u32> = config.traffic.clone().into_iter().filter(|(_, p)| *p > 0).collect();
            let mirrored: BTreeMap<String, u32> =
                config.mirror_traffic.clone().into_iter().filter(|(_, p)| *p > 0).collect();
            let mut message =
                if live.is_empty() { "no live traffic".to_owned() } else { format!("live: {}", describe_split(&live)) };
            if !mirrored.is_empty() {
                message.push_str(&format!("; mirrored: {}", describe_split(&mirrored)));
            }
            Cond::ok(TRAFFIC_VALID, REASON_VALID, message)
        }
    }
}

/// The router's side of readiness.
#[derive(Clone, Debug, Default)]
pub struct Router<'a> {
    pub deployment: Option<&'a DeploymentSummary>,
    pub pods: Vec<&'a PodSummary>,
    pub service: Option<&'a Service>,
}

/// `Ready`, from the first thing in the way, in the order a user would fix them.
pub fn ready_condition(
    md: &ModelDeployment,
    traffic: &Cond,
    blocked: &[(String, String)],
    deployments: &[OnlineDeploymentStatus],
    router: &Router,
) -> Cond {
    if let Some((reason, message)) = blocked.first() {
        return Cond::fail(READY, reason, message.clone());
    }
    if !traffic.status {
        return Cond::fail(READY, &traffic.reason, traffic.message.clone());
    }
    let live = md.spec.effective_traffic();
    if !live.values().any(|p| *p > 0) {
        return Cond::fail(
            READY,
            REASON_NO_LIVE_TRAFFIC,
            "no deployment takes live traffic: set spec.traffic (with several deployments there is no default)",
        );
    }
    for status in deployments {
        let Some(percent) = live.get(&status.name).filter(|p| **p > 0) else { continue };
        if status.ready_replicas.unwrap_or(0) > 0 {
            continue;
        }
        let (reason, message) = match &status.last_failure {
            Some(f) => (
                f.reason.clone().unwrap_or_else(|| REASON_DEPLOYMENT_NOT_READY.to_owned()),
                format!(
                    "deployment {} ({percent}% of traffic) has no ready instance: {}",
                    status.name,
                    f.message.as_deref().unwrap_or_default()
                ),
            ),
            None => (
                REASON_DEPLOYMENT_NOT_READY.to_owned(),
                format!("deployment {} ({percent}% of traffic) has no ready instance yet", status.name),
            ),
        };
        return Cond::fail(READY, &reason, message);
    }
    let router_ready = router.deployment.and_then(|d| d.ready_replicas).unwrap_or(0) > 0;
    if !router_ready {
        let why = pod_failure(router.pods.iter().copied()).and_then(|f| f.message).map_or_else(
            || "the router has no ready instance yet".to_owned(),
            |m| format!("the router has no ready instance: {m}"),
        );
        return Cond::fail(READY, REASON_ROUTER_NOT_READY, why);
    }
    let exposure = md.spec.exposure.clone().unwrap_or_default();
    if exposure.type_ == ExposureType::LoadBalancer && router.service.and_then(load_balancer_address).is_none() {
        return Cond::fail(
            READY,
            REASON_LOAD_BALANCER_PENDING,
            format!(
                "waiting for the load balancer of Service {} to get an address",
                build::router_name(&md.name_any())
            ),
        );
    }
    let serving = deployments
        .iter()
        .filter_map(|d| live.get(&d.name).filter(|p| **p > 0).map(|p| format!("{} {p}%", d.name)))
        .collect::<Vec<_>>()
        .join(", ");
    Cond::ok(READY, REASON_SERVING, format!("serving {serving}"))
}

/// Everything the status is made from.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    /// Per spec deployment, in spec order.
    pub deployments: Vec<(&'a OnlineDeployment, Observed<'a>)>,
    pub config: &'a atrium_router::config::RouterConfig,
    /// Endpoint-wide reasons children could not be applied (`NameConflict`, `InvalidSpec`).
    pub blocked: Vec<(String, String)>,
    pub router: Router<'a>,
}

/// The status to write.
pub fn desired_status(md: &ModelDeployment, inputs: &Inputs, now: &Time) -> ModelDeploymentStatus {
    let deployments: Vec<OnlineDeploymentStatus> =
        inputs.deployments.iter().map(|(spec, observed)| deployment_status(&spec.name, observed)).collect();
    let traffic = traffic_condition(inputs.config);
    let ready = ready_condition(md, &traffic, &inputs.blocked, &deployments, &inputs.router);
    let existing = md.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    ModelDeploymentStatus {
        observed_generation: md.metadata.generation,
        conditions: merge(existing, &[ready, traffic], md.metadata.generation, now),
        scoring_uri: scoring_uri(md, inputs.router.service),
        keys_secret: (md.spec.auth_mode == AuthMode::Key).then(|| build::keys_secret_name(&md.name_any())),
        traffic: md.spec.effective_traffic(),
        deployments,
    }
}

#[cfg(test)]
mod tests;
