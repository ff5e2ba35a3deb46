use super::*;
use crate::api::{ContainerResources, instance_type::default_instance_type, model_deployment::ModelDeploymentSpec};
use serde_json::{Value, json};

/// A ModelDeployment from the `spec` a user would write.
pub(crate) fn endpoint(name: &str, spec: Value) -> ModelDeployment {
    let spec: ModelDeploymentSpec = serde_json::from_value(spec).unwrap();
    let mut md = ModelDeployment::new(name, spec);
    md.metadata.namespace = Some("team".into());
    md.metadata.uid = Some("uid-1".into());
    md.metadata.generation = Some(1);
    md
}

fn iris(version: i64, location: ModelLocation) -> ServedModel {
    ServedModel { name: "Iris".into(), version, location }
}

fn on_claim(version: i64) -> ServedModel {
    iris(version, ModelLocation::Claim { claim: "atrium-storage".into(), path: "runs/train/outputs/model".into() })
}

fn plan<'a>(md: &'a ModelDeployment, name: &str, model: Option<ServedModel>) -> DeploymentPlan<'a> {
    let spec = md.spec.deployment(name).unwrap();
    DeploymentPlan {
        spec,
        model,
        image: spec.effective_image().unwrap().to_owned(),
        instance_type: default_instance_type().spec,
        service_account: Some("atrium-inference".into()),
    }
}

fn two_deployments() -> ModelDeployment {
    endpoint(
        "fraud",
        json!({
            "exposure": {"type": "LoadBalancer", "port": 8000, "annotations": {"lb.example.com/internal": "true"}},
            "deployments": [
                {"name": "blue", "model": {"name": "iris", "version": 1}, "code": {"configMap": "score"},
                 "instanceCount": 2,
                 "environment": {"env": [{"name": "LOG_LEVEL", "value": "debug"}, {"name": "WORKER_COUNT", "value": "3"}]},
                 "requestSettings": {"requestTimeoutMs": 2000, "maxConcurrentRequestsPerInstance": 2, "maxQueueWaitMs": 100}},
                {"name": "green", "model": {"name": "iris"}, "code": {"configMap": "score", "scoringScript": "v2.py"},
                 "scale": {"minInstances": 2, "maxInstances": 6, "targetUtilizationPercentage": 60}},
                {"name": "shadow", "runtime": {"type": "OpenInference"}, "model": {"name": "iris"},
                 "environment": {"image": "ghcr.io/example/triton:1"}},
            ],
            "traffic": {"blue": 90, "green": 10},
            "mirrorTraffic": {"shadow": 10},
        }),
    )
}

fn container(d: &Deployment) -> &Container {
    &d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
}

fn env_of(c: &Container) -> BTreeMap<String, String> {
    c.env.iter().flatten().map(|e| (e.name.clone(), e.value.clone().unwrap_or_default())).collect()
}

#[test]
fn names_are_deterministic_and_distinct_per_kind() {
    assert_eq!(deployment_child_name("fraud", "blue"), "fraud-blue");
    assert_eq!(router_name("fraud"), "fraud");
    assert_eq!(router_config_name("fraud"), "fraud-router");
    assert_eq!(keys_secret_name("fraud"), "fraud-keys");
    assert_eq!(backend_url("fraud", "team", "blue"), "http://fraud-blue.team.svc:80");
    let long = "e".repeat(60);
    assert!(deployment_child_name(&long, "blue").len() <= 63);
    assert_ne!(deployment_child_name(&long, "blue"), deployment_child_name(&long, "green"));
}

#[test]
fn the_azureml_runtime_serves_the_scoring_script_with_the_model_mounted_read_only() {
    let md = two_deployments();
    let d = model_server(&md, &plan(&md, "blue", Some(on_claim(1))), &Images::defaults());
    assert_eq!(d.metadata.name.as_deref(), Some("fraud-blue"));
    assert_eq!(d.metadata.annotations.as_ref().unwrap()[MODEL_ANNOTATION], "Iris:1");
    let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.controller), ("ModelDeployment", Some(true)));

    let c = container(&d);
    assert_eq!(c.image.as_deref(), Some(crate::api::model_deployment::DEFAULT_AZUREML_IMAGE));
    assert_eq!(c.command.as_deref(), Some(&["azmlinfsrv".to_owned()][..]));
    assert_eq!(c.args.as_deref().unwrap(), ["--entry_script", "/var/azureml-app/code/score.py", "--port", "5001"]);
    let env = env_of(c);
    assert_eq!(env["AZUREML_MODEL_DIR"], "/var/azureml-app/azureml-models/Iris/1");
    assert_eq!(env["AZUREML_ENTRY_SCRIPT"], "/var/azureml-app/code/score.py");
    assert_eq!(env["AML_APP_ROOT"], "/var/azureml-app/code");
    assert_eq!(env["SCORING_TIMEOUT_MS"], "2000");
    assert_eq!(env["WORKER_COUNT"], "3", "the user's variable wins over ours");
    assert_eq!(c.env.as_ref().unwrap().iter().filter(|e| e.name == "WORKER_COUNT").count(), 1);
    assert_eq!(env["LOG_LEVEL"], "debug");

    let mounts = c.volume_mounts.as_ref().unwrap();
    let model = mounts.iter().find(|m| m.name == "model").unwrap();
    assert_eq!(model.mount_path, "/var/azureml-app/azureml-models/Iris/1/model");
    assert_eq!(model.sub_path.as_deref(), Some("runs/train/outputs/model"));
    assert_eq!(model.read_only, Some(true));
    let code = mounts.iter().find(|m| m.name == "code").unwrap();
    assert_eq!((code.mount_path.as_str(), code.read_only), ("/var/azureml-app/code", Some(true)));

    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let volumes = pod.volumes.as_ref().unwrap();
    let claim = volumes.iter().find_map(|v| v.persistent_volume_claim.as_ref()).unwrap();
    assert_eq!((claim.claim_name.as_str(), claim.read_only), ("atrium-storage", Some(true)));
    assert_eq!(volumes.iter().find_map(|v| v.config_map.as_ref()).unwrap().name, "score");
    assert_eq!(pod.service_account_name.as_deref(), Some("atrium-inference"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert!(pod.init_containers.is_none());

    // Probes: the runtime's paths on the named port, Azure ML's default timings.
    let liveness = c.liveness_probe.as_ref().unwrap();
    assert_eq!(liveness.http_get.as_ref().unwrap().path.as_deref(), Some("/"));
    assert_eq!(liveness.http_get.as_ref().unwrap().port, IntOrString::String("http".into()));
    assert_eq!((liveness.initial_delay_seconds, liveness.failure_threshold), (Some(10), Some(30)));
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 5001);

    // Resources from the instance type.
    let resources = c.resources.as_ref().unwrap();
    assert_eq!(resources.requests.as_ref().unwrap()["cpu"], Quantity("100m".into()));
    assert_eq!(resources.limits.as_ref().unwrap()["memory"], Quantity("2Gi".into()));
}

#[test]
fn rollouts_never_take_away_a_ready_instance_and_the_hpa_owns_scaled_replicas() {
    let md = two_deployments();
    let blue = model_server(&md, &plan(&md, "blue", Some(on_claim(1))), &Images::defaults());
    let spec = blue.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));
    let rolling = spec.strategy.as_ref().unwrap().rolling_update.as_ref().unwrap();
    assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));

    let green = model_server(&md, &plan(&md, "green", Some(on_claim(2))), &Images::defaults());
    assert_eq!(green.spec.as_ref().unwrap().replicas, None, "with scale the HPA sets the replicas");
    let json = serde_json::to_value(&green).unwrap();
    assert!(json["spec"].get("replicas").is_none(), "the field is not even sent, so it is never claimed");
    assert_eq!(container(&green).args.as_deref().unwrap()[1], "/var/azureml-app/code/v2.py");

    let hpa = autoscaler(&md, md.spec.deployment("green").unwrap()).unwrap();
    let hpa_spec = &hpa.spec;
    assert_eq!((hpa_spec.min_replicas, hpa_spec.max_replicas), (Some(2), 6));
    assert_eq!(hpa_spec.scale_target_ref.name, "fraud-green");
    let target = &hpa_spec.metrics.as_ref().unwrap()[0].resource.as_ref().unwrap().target;
    assert_eq!(target.average_utilization, Some(60));
    assert!(autoscaler(&md, md.spec.deployment("blue").unwrap()).is_none());
}

#[test]
fn a_disruption_budget_only_when_there_can_be_more_than_one_instance() {
    let md = two_deployments();
    let blue = disruption_budget(&md, md.spec.deployment("blue").unwrap()).unwrap();
    let spec = blue.spec.as_ref().unwrap();
    assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(spec.selector.as_ref().unwrap().match_labels.as_ref().unwrap(), &deployment_selector(&md, "blue"));
    assert!(disruption_budget(&md, md.spec.deployment("green").unwrap()).is_some(), "scale up to 6");
    assert!(disruption_budget(&md, md.spec.deployment("shadow").unwrap()).is_none(), "one instance");
}

#[test]
fn selectors_never_overlap_between_deployments_and_the_router() {
    let md = two_deployments();
    let blue = deployment_labels(&md, "blue");
    let router = child_labels(&md, COMPONENT_ROUTER);
    let matches = |selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>| {
        selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    assert!(matches(&deployment_selector(&md, "blue"), &blue));
    assert!(!matches(&deployment_selector(&md, "green"), &blue));
    assert!(!matches(&deployment_selector(&md, "blue"), &router));
    assert!(matches(&router_selector(&md), &router));
    assert!(!matches(&router_selector(&md), &blue));
}

#[test]
fn uri_models_are_fetched_by_an_init_container() {
    let md = two_deployments();
    let https = iris(3, ModelLocation::Uri("https://models.example.com/iris/model.pkl?sig=x".into()));
    let d = model_server(&md, &plan(&md, "blue", Some(https)), &Images::defaults());
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let init = &pod.init_containers.as_ref().unwrap()[0];
    assert_eq!(init.name, FETCH_CONTAINER);
    assert!(init.image.as_deref().unwrap().contains("curl"));
    let env = env_of(init);
    assert_eq!(env["MODEL_URI"], "https://models.example.com/iris/model.pkl?sig=x");
    assert_eq!(env["MODEL_DEST"], "/var/azureml-app/azureml-models/Iris/3/model.pkl");
    assert_eq!(env["LOG_LEVEL"], "debug", "the user's variables (credentials) reach the download");
    assert!(pod.volumes.as_ref().unwrap().iter().any(|v| v.name == "model" && v.empty_dir.is_some()));
    let mount = container(&d).volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "model").unwrap().clone();
    assert_eq!((mount.mount_path.as_str(), mount.read_only), ("/var/azureml-app/azureml-models/Iris/3", Some(true)));

    let s3 = iris(3, ModelLocation::Uri("s3://bucket/models/iris/".into()));
    let d = model_server(&md, &plan(&md, "blue", Some(s3)), &Images::defaults());
    let init = &d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
    assert!(init.image.as_deref().unwrap().contains("aws-cli"));
    assert!(init.command.as_ref().unwrap()[2].contains("--recursive"));
    assert_eq!(env_of(init)["MODEL_DEST"], "/var/azureml-app/azureml-models/Iris/3/iris");
}

#[test]
fn open_inference_and_custom_runtimes_keep_their_image_command() {
    let md = two_deployments();
    let d = model_server(&md, &plan(&md, "shadow", Some(on_claim(1))), &Images::defaults());
    let c = container(&d);
    assert_eq!(c.image.as_deref(), Some("ghcr.io/example/triton:1"));
    assert!(c.command.is_none() && c.args.is_none());
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8080);
    assert_eq!(
        c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(),
        Some("/v2/health/ready")
    );
    assert!(!env_of(c).contains_key("WORKER_COUNT"));
    assert_eq!(scoring_path(md.spec.deployment("shadow").unwrap()), "/v2/models/iris/infer");

    let custom = endpoint(
        "c",
        json!({"deployments": [{"name": "x", "environment": {"image": "app:1"},
               "runtime": {"type": "Custom", "port": 9000, "scoringPath": "/predict"},
               "livenessProbe": {"successThreshold": 3, "periodSeconds": 5}}]}),
    );
    let d = model_server(&custom, &plan(&custom, "x", None), &Images::defaults());
    let c = container(&d);
    let liveness = c.liveness_probe.as_ref().unwrap();
    assert!(liveness.http_get.is_none());
    assert_eq!(liveness.tcp_socket.as_ref().unwrap().port, IntOrString::String("http".into()));
    assert_eq!((liveness.success_threshold, liveness.period_seconds), (Some(1), Some(5)), "liveness needs 1");
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 9000);
    assert!(c.volume_mounts.is_none() && c.env.is_none());
    assert_eq!(scoring_path(custom.spec.deployment("x").unwrap()), "/predict");
}

#[test]
fn instance_types_place_and_size_the_pods() {
    let md = two_deployments();
    let mut p = plan(&md, "blue", Some(on_claim(1)));
    p.instance_type = InstanceTypeSpec {
        node_selector: BTreeMap::from([("atrium.dev/pool".into(), "gpu".into())]),
        resources: Some(ContainerResources {
            requests: BTreeMap::from([("cpu".into(), Quantity("4".into()))]),
            limits: BTreeMap::from([("nvidia.com/gpu".into(), Quantity("1".into()))]),
        }),
        tolerations: vec![k8s_openapi::api::core::v1::Toleration {
            key: Some("nvidia.com/gpu".into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }],
    };
    let d = model_server(&md, &p, &Images::defaults());
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.node_selector.as_ref().unwrap()["atrium.dev/pool"], "gpu");
    assert_eq!(pod.tolerations.as_ref().unwrap().len(), 1);
    let limits = container(&d).resources.as_ref().unwrap().limits.as_ref().unwrap().clone();
    assert_eq!(limits["nvidia.com/gpu"], Quantity("1".into()));
}

#[test]
fn the_router_configuration_lists_every_deployment_with_its_limits_and_the_split() {
    let md = two_deployments();
    let config = router_config(&md, |d| if d.name == "green" { 0 } else { 2 });
    assert_eq!(config.validate(), Ok(()));
    assert_eq!(config.endpoint, "fraud");
    assert_eq!(config.auth_mode, RouterAuthMode::Key);
    assert_eq!(config.traffic, BTreeMap::from([("blue".into(), 90), ("green".into(), 10)]));
    assert_eq!(config.mirror_traffic, BTreeMap::from([("shadow".into(), 10)]));
    let blue = &config.deployments[0];
    assert_eq!(blue.url, "http://fraud-blue.team.svc:80");
    assert_eq!((blue.scoring_path.as_str(), blue.instances), ("/score", 2));
    assert_eq!(
        (blue.request_timeout_ms, blue.max_concurrent_requests_per_instance, blue.max_queue_wait_ms),
        (2000, 2, 100)
    );
    assert_eq!(config.deployments[1].instances, 0);
    assert_eq!(config.deployments[2].scoring_path, "/v2/models/iris/infer");

    let cm = router_config_map(&md, &config);
    assert_eq!(cm.metadata.name.as_deref(), Some("fraud-router"));
    let parsed = RouterConfig::from_json(cm.data.as_ref().unwrap()[ROUTER_CONFIG_FILE].as_bytes()).unwrap();
    assert_eq!(parsed, config, "the router reads back exactly what was written");

    let single = endpoint("one", json!({"authMode": "None", "deployments": [{"name": "only"}]}));
    let config = router_config(&single, |_| 1);
    assert_eq!(config.traffic, BTreeMap::from([("only".into(), 100)]), "one deployment gets all traffic");
    assert_eq!(config.auth_mode, RouterAuthMode::None);
}

#[test]
fn the_router_pod_does_not_depend_on_traffic_so_traffic_changes_never_restart_it() {
    let mut md = two_deployments();
    let before = router_deployment(&md, "router:1", None);
    md.spec.traffic = BTreeMap::from([("blue".into(), 50), ("green".into(), 50)]);
    md.spec.deployments.pop();
    md.spec.mirror_traffic.clear();
    assert_eq!(router_deployment(&md, "router:1", None), before);

    let spec = before.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(ROUTER_REPLICAS));
    let pod = spec.template.spec.as_ref().unwrap();
    let c = &pod.containers[0];
    assert_eq!(
        c.args.as_deref().unwrap(),
        [
            "--config",
            "/etc/atrium-router/config/config.json",
            "--listen",
            "0.0.0.0:8080",
            "--admin-listen",
            "0.0.0.0:9090",
            "--keys-dir",
            "/etc/atrium-router/keys"
        ]
    );
    let keys = pod.volumes.as_ref().unwrap().iter().find_map(|v| v.secret.as_ref()).unwrap();
    assert_eq!(keys.secret_name.as_deref(), Some("fraud-keys"));
    let files: Vec<_> = keys.items.iter().flatten().map(|i| (i.key.as_str(), i.path.as_str())).collect();
    assert_eq!(files, [("primaryKey", "primary"), ("secondaryKey", "secondary")]);
    assert_eq!(c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(), Some("/readyz"));
    assert_eq!(
        spec.template.metadata.as_ref().unwrap().labels.as_ref().unwrap()[labels::COMPONENT],
        "router",
        "the workspace's network policies admit traffic to routers by this label"
    );

    let open = endpoint("open", json!({"authMode": "None", "deployments": [{"name": "only"}]}));
    let router = router_deployment(&open, "router:1", None);
    let pod = router.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert!(!pod.containers[0].args.as_ref().unwrap().contains(&"--keys-dir".to_owned()));
    assert!(pod.volumes.as_ref().unwrap().iter().all(|v| v.secret.is_none()));
}

#[test]
fn the_endpoint_service_has_the_exposure_type_port_and_annotations() {
    let md = two_deployments();
    let svc = router_service(&md);
    assert_eq!(svc.metadata.name.as_deref(), Some("fraud"));
    assert_eq!(svc.metadata.annotations.as_ref().unwrap()["lb.example.com/internal"], "true");
    let spec = svc.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(spec.ports.as_ref().unwrap()[0].port, 8000);
    assert_eq!(spec.ports.as_ref().unwrap()[0].target_port, Some(IntOrString::String("http".into())));
    let json = serde_json::to_value(&svc).unwrap();
    assert!(json["spec"].get("clusterIP").is_none() && json["spec"]["ports"][0].get("nodePort").is_none());

    let blue = model_service(&md, md.spec.deployment("blue").unwrap());
    let spec = blue.spec.as_ref().unwrap();
    assert_eq!((spec.type_.as_deref(), spec.ports.as_ref().unwrap()[0].port), (Some("ClusterIP"), 80));

    let default = endpoint("d", json!({"deployments": [{"name": "only"}]}));
    let spec = router_service(&default).spec.unwrap();
    assert_eq!((spec.type_.as_deref(), spec.ports.unwrap()[0].port), (Some("ClusterIP"), 80));
}

#[test]
fn keys_are_given_under_the_designed_names() {
    let md = two_deployments();
    let secret = keys_secret(&md, "p", "s");
    assert_eq!(secret.metadata.name.as_deref(), Some("fraud-keys"));
    let data = secret.string_data.unwrap();
    assert_eq!((data[PRIMARY_KEY].as_str(), data[SECONDARY_KEY].as_str()), ("p", "s"));
}

#[test]
fn desired_children_cover_every_planned_deployment_and_the_router() {
    let md = two_deployments();
    let plans = [plan(&md, "blue", Some(on_claim(1))), plan(&md, "green", Some(on_claim(2)))];
    let config = router_config(&md, |_| 1);
    let children = desired_children(&md, &plans, &config, &Images::defaults(), None);
    let names = |v: Vec<Option<String>>| v.into_iter().map(Option::unwrap).collect::<Vec<_>>();
    assert_eq!(
        names(children.deployments.iter().map(|d| d.metadata.name.clone()).collect()),
        ["fraud-blue", "fraud-green", "fraud"]
    );
    assert_eq!(
        names(children.services.iter().map(|d| d.metadata.name.clone()).collect()),
        ["fraud-blue", "fraud-green", "fraud"]
    );
    assert_eq!(names(children.autoscalers.iter().map(|d| d.metadata.name.clone()).collect()), ["fraud-green"]);
    assert_eq!(
        names(children.disruption_budgets.iter().map(|d| d.metadata.name.clone()).collect()),
        ["fraud-blue", "fraud-green"]
    );
    assert_eq!(names(children.config_maps.iter().map(|d| d.metadata.name.clone()).collect()), ["fraud-router"]);
    assert!(
        children.deployments[2].spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
            .image
            .as_deref()
            .unwrap()
            .starts_with("ghcr.io/atrium-dev/atrium-router:")
    );
}
