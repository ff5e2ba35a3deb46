use super::*;
use crate::controller::model_deployment::build::{self as b, tests::endpoint};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

fn t(s: i64) -> Time {
    Time(Timestamp::from_second(s).unwrap())
}

/// A pod as the cache keeps it.
fn pod(name: &str, status: Value) -> PodSummary {
    PodSummary::of(&serde_json::from_value(json!({"metadata": {"name": name}, "status": status})).unwrap())
}

fn ready_pod(name: &str) -> PodSummary {
    pod(name, json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}))
}

/// As kwok reports a restarted container that exits with `code`.
fn crash_looping(name: &str, code: i32, reason: &str) -> PodSummary {
    pod(
        name,
        json!({
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{
                "name": "inference-server", "image": "x", "imageID": "", "ready": false, "restartCount": 5,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting failed container"}},
                "lastState": {"terminated": {"exitCode": code, "reason": reason}},
            }],
        }),
    )
}

fn pull_error(name: &str) -> PodSummary {
    pod(
        name,
        json!({
            "phase": "Pending",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{
                "name": "inference-server", "image": "registry.invalid/app:1", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ErrImagePull", "message": "failed to pull and unpack image \"registry.invalid/app:1\""}},
            }],
        }),
    )
}

/// A Deployment as the cache keeps it.
fn deployment(replicas: i32, ready: i32) -> DeploymentSummary {
    DeploymentSummary::of(
        serde_json::from_value(json!({
            "metadata": {"name": "d"},
            "spec": {"replicas": replicas, "selector": {}, "template": {}},
            "status": {"replicas": replicas, "readyReplicas": ready},
        }))
        .unwrap(),
    )
}

fn lb_service(ip: Option<&str>) -> Service {
    let ingress = ip.map(|ip| json!([{"ip": ip}])).unwrap_or(json!([]));
    serde_json::from_value(json!({
        "metadata": {"name": "fraud"},
        "spec": {"type": "LoadBalancer"},
        "status": {"loadBalancer": {"ingress": ingress}},
    }))
    .unwrap()
}

fn two_deployments(exposure: &str) -> ModelDeployment {
    endpoint(
        "fraud",
        json!({
            "exposure": {"type": exposure},
            "deployments": [{"name": "blue", "model": {"name": "iris"}}, {"name": "green", "model": {"name": "iris"}}],
            "traffic": {"blue": 90, "green": 10},
        }),
    )
}

#[test]
fn crash_loops_image_pull_errors_and_oom_kills_are_read_from_pods() {
    let f = pod_failure([&crash_looping("p-1", 1, "Error")]).unwrap();
    assert_eq!(f.reason.as_deref(), Some("CrashLoopBackOff"));
    let message = f.message.unwrap();
    assert!(message.contains("last exit code 1") && message.contains("pod p-1"), "{message}");

    let f = pod_failure([&crash_looping("p-1", 137, "OOMKilled")]).unwrap();
    assert_eq!(f.reason.as_deref(), Some("OOMKilled"));

    let f = pod_failure([&pull_error("p-2")]).unwrap();
    assert_eq!(f.reason.as_deref(), Some("ErrImagePull"));
    assert!(f.message.unwrap().contains("registry.invalid/app:1"));

    // A ready pod, or one only starting, is no failure.
    assert_eq!(pod_failure([&ready_pod("p-3")]), None);
    let starting = pod(
        "p-4",
        json!({"phase": "Pending", "containerStatuses": [{
        "name": "c", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
    );
    assert_eq!(pod_failure([&starting]), None);

    // The first failing pod by name, whatever the order given.
    let f = pod_failure([&pull_error("b"), &crash_looping("a", 2, "Error")]).unwrap();
    assert_eq!(f.reason.as_deref(), Some("CrashLoopBackOff"));

    let unschedulable = pod(
        "p-5",
        json!({"phase": "Pending", "conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available"}]}),
    );
    assert_eq!(pod_failure([&unschedulable]).unwrap().reason.as_deref(), Some("Unschedulable"));

    let init = pod(
        "p-6",
        json!({"phase": "Pending", "initContainerStatuses": [{
        "name": "fetch-model", "image": "curl", "imageID": "", "ready": false, "restartCount": 2,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"exitCode": 22, "reason": "Error"}}}]}),
    );
    let f = pod_failure([&init]).unwrap();
    assert!(f.message.unwrap().contains("init container fetch-model"));
}

#[test]
fn deployments_report_counts_and_the_most_precise_failure() {
    let live = deployment(2, 1);
    let crashing = crash_looping("p", 1, "Error");
    let observed = Observed { live: Some(&live), pods: vec![&crashing], model: Some("iris:2".into()), problem: None };
    let status = deployment_status("blue", &observed);
    assert_eq!((status.replicas, status.ready_replicas), (Some(2), Some(1)));
    assert_eq!(status.model.as_deref(), Some("iris:2"));
    assert_eq!(status.last_failure.unwrap().reason.as_deref(), Some("CrashLoopBackOff"));

    // What could not be built comes first.
    let missing = Observed {
        problem: Some(DeploymentFailure { reason: Some("ModelNotFound".into()), message: Some("no model".into()) }),
        ..observed.clone()
    };
    assert_eq!(deployment_status("blue", &missing).last_failure.unwrap().reason.as_deref(), Some("ModelNotFound"));

    // No live Deployment: no counts at all.
    let none = deployment_status("blue", &Observed::default());
    assert_eq!((none.replicas, none.ready_replicas, none.last_failure), (None, None, None));

    let quota = DeploymentSummary::of(
        serde_json::from_value(json!({
            "metadata": {"name": "d"}, "spec": {"selector": {}, "template": {}},
            "status": {"conditions": [{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                                       "message": "exceeded quota"}]},
        }))
        .unwrap(),
    );
    let f = deployment_status("blue", &Observed { live: Some(&quota), ..Default::default() }).last_failure.unwrap();
    assert_eq!((f.reason.as_deref(), f.message.as_deref()), (Some("FailedCreate"), Some("exceeded quota")));
}

fn ready_of(
    md: &ModelDeployment,
    deployments: &[(i32, Option<DeploymentFailure>)],
    router_ready: i32,
    svc: Option<&Service>,
) -> Cond {
    let router = deployment(2, router_ready);
    let names = ["blue", "green", "shadow"];
    let statuses: Vec<OnlineDeploymentStatus> = deployments
        .iter()
        .enumerate()
        .map(|(i, (ready, failure))| OnlineDeploymentStatus {
            name: names[i].into(),
            replicas: Some(1),
            ready_replicas: Some(*ready),
            model: None,
            last_failure: failure.clone(),
        })
        .collect();
    let config = b::router_config(md, |_| 1);
    let router = Router { deployment: Some(&router), pods: vec![], service: svc };
    ready_condition(md, &traffic_condition(&config), &[], &statuses, &router)
}

#[test]
fn ready_needs_every_deployment_with_traffic_the_router_and_the_load_balancer() {
    let md = two_deployments("LoadBalancer");
    let with_ip = lb_service(Some("192.0.2.10"));
    let pending = lb_service(None);

    let ready = ready_of(&md, &[(1, None), (1, None)], 2, Some(&with_ip));
    assert!(ready.status, "{ready:?}");
    assert_eq!(ready.message, "serving blue 90%, green 10%");

    let crash = DeploymentFailure { reason: Some("CrashLoopBackOff".into()), message: Some("keeps exiting".into()) };
    let not_ready = ready_of(&md, &[(1, None), (0, Some(crash))], 2, Some(&with_ip));
    assert_eq!((not_ready.status, not_ready.reason.as_str()), (false, "CrashLoopBackOff"));
    assert!(not_ready.message.contains("deployment green (10% of traffic)"), "{}", not_ready.message);

    let starting = ready_of(&md, &[(0, None), (1, None)], 2, Some(&with_ip));
    assert_eq!(starting.reason, REASON_DEPLOYMENT_NOT_READY);

    assert_eq!(ready_of(&md, &[(1, None), (1, None)], 0, Some(&with_ip)).reason, REASON_ROUTER_NOT_READY);
    assert_eq!(ready_of(&md, &[(1, None), (1, None)], 2, Some(&pending)).reason, REASON_LOAD_BALANCER_PENDING);

    // A deployment with no live traffic (a mirror, a canary at 0) does not hold Ready back.
    let mut canary = md.clone();
    canary.spec.traffic = BTreeMap::from([("blue".into(), 100), ("green".into(), 0)]);
    assert!(ready_of(&canary, &[(1, None), (0, None)], 2, Some(&with_ip)).status);

    let mut stopped = md.clone();
    stopped.spec.traffic = BTreeMap::from([("blue".into(), 0), ("green".into(), 0)]);
    assert_eq!(ready_of(&stopped, &[(1, None), (1, None)], 2, Some(&with_ip)).reason, REASON_NO_LIVE_TRAFFIC);
}

#[test]
fn scoring_uri_is_the_load_balancer_address_or_the_service_name() {
    let md = two_deployments("LoadBalancer");
    assert_eq!(scoring_uri(&md, Some(&lb_service(Some("192.0.2.7")))).as_deref(), Some("http://192.0.2.7/score"));
    assert_eq!(scoring_uri(&md, Some(&lb_service(None))), None);
    assert_eq!(scoring_uri(&md, None), None);

    let mut internal = endpoint("fraud", json!({"exposure": {"port": 8080}, "deployments": [{"name": "blue"}]}));
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "fraud"}})).unwrap();
    assert_eq!(scoring_uri(&internal, Some(&svc)).as_deref(), Some("http://fraud.team.svc:8080/score"));
    internal.spec.exposure = None;
    assert_eq!(scoring_uri(&internal, Some(&svc)).as_deref(), Some("http://fraud.team.svc/score"));
}

#[test]
fn traffic_valid_describes_the_split() {
    let md = endpoint(
        "fraud",
        json!({"deployments": [{"name": "blue"}, {"name": "green"}, {"name": "shadow"}],
               "traffic": {"blue": 50, "green": 50}, "mirrorTraffic": {"shadow": 10}}),
    );
    let cond = traffic_condition(&b::router_config(&md, |_| 1));
    assert!(cond.status);
    assert_eq!(cond.message, "live: blue 50%, green 50%; mirrored: shadow 10%");

    let mut bad = md.clone();
    bad.spec.traffic = BTreeMap::from([("blue".into(), 60), ("green".into(), 30)]);
    let cond = traffic_condition(&b::router_config(&bad, |_| 1));
    assert_eq!((cond.status, cond.reason.as_str()), (false, REASON_INVALID_TRAFFIC));
}

#[test]
fn an_unchanged_world_gives_an_equal_status() {
    let md = two_deployments("LoadBalancer");
    let (blue, green) = (deployment(1, 1), deployment(1, 1));
    let router = deployment(2, 2);
    let svc = lb_service(Some("192.0.2.9"));
    let config = b::router_config(&md, |_| 1);
    let inputs = Inputs {
        deployments: vec![
            (
                &md.spec.deployments[0],
                Observed { live: Some(&blue), pods: vec![], model: Some("iris:1".into()), problem: None },
            ),
            (
                &md.spec.deployments[1],
                Observed { live: Some(&green), pods: vec![], model: Some("iris:1".into()), problem: None },
            ),
        ],
        config: &config,
        blocked: vec![],
        router: Router { deployment: Some(&router), pods: vec![], service: Some(&svc) },
    };
    let first = desired_status(&md, &inputs, &t(100));
    assert!(first.conditions.iter().all(|c| c.status == "True"), "{:?}", first.conditions);
    assert_eq!(first.scoring_uri.as_deref(), Some("http://192.0.2.9/score"));
    assert_eq!(first.keys_secret.as_deref(), Some("fraud-keys"));
    assert_eq!(first.traffic, BTreeMap::from([("blue".into(), 90), ("green".into(), 10)]));

    let mut again = md.clone();
    again.status = Some(first.clone());
    let inputs = Inputs { deployments: inputs.deployments.clone(), ..inputs };
    assert_eq!(desired_status(&again, &inputs, &t(999)), first, "a no-op reconcile writes nothing");

    let blocked = Inputs { blocked: vec![(REASON_NAME_CONFLICT.into(), "taken".into())], ..inputs };
    let status = desired_status(&again, &blocked, &t(1000));
    assert_eq!(status.conditions[0].reason, REASON_NAME_CONFLICT);
    assert_eq!(status.conditions[0].last_transition_time, t(1000), "the flip is stamped");
}
