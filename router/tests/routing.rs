//! Traffic split, header routing, path handling, protocols and upstream failures.

mod common;

use std::collections::HashMap;

use common::{Backend, TestClient, TestRouter, full, router_config};
use http::{Request, StatusCode, Version};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_follows_weights_over_2000_requests() {
    let (blue, green, red) = (Backend::echo("blue").await, Backend::echo("green").await, Backend::echo("red").await);
    let config = router_config(
        vec![blue.config(), green.config(), red.config()],
        &[("blue", 70), ("green", 20), ("red", 10)],
        &[],
    );
    let router = TestRouter::start(Some(&config), None).await;
    let client = TestClient::default();

    // 16 concurrent callers, 125 requests each.
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (client, url) = (client.clone(), router.url("/score"));
        tasks.push(tokio::spawn(async move {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for _ in 0..125 {
                let reply = client.post(&url, "{}").await;
                assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
                assert_eq!(reply.deployment(), reply.text(), "header names the deployment that answered");
                *counts.entry(reply.text()).or_default() += 1;
            }
            counts
        }));
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for task in tasks {
        for (name, n) in task.await.unwrap() {
            *counts.entry(name).or_default() += n;
        }
    }
    assert_eq!(counts.values().sum::<usize>(), 2_000);
    for (name, weight) in [("blue", 70.0), ("green", 20.0), ("red", 10.0)] {
        let percent = counts.get(name).copied().unwrap_or(0) as f64 / 20.0;
        assert!((percent - weight).abs() <= 3.0, "{name}: {percent}% for a weight of {weight}%");
    }
    assert_eq!(blue.hits() + green.hits() + red.hits(), 2_000);
}

#[tokio::test]
async fn header_routes_to_one_deployment_even_without_weight() {
    let (blue, green) = (Backend::echo("blue").await, Backend::echo("green").await);
    let config = router_config(vec![blue.config(), green.config()], &[("blue", 100), ("green", 0)], &[]);
    let router = TestRouter::start(Some(&config), None).await;
    let client = TestClient::default();

    for _ in 0..5 {
        let reply = client
            .send(
                Request::post(router.url("/score"))
                    .header("azureml-model-deployment", "green")
                    .body(full("{}"))
                    .unwrap(),
            )
            .await;
        assert_eq!((reply.status, reply.text().as_str()), (StatusCode::OK, "green"));
        assert_eq!(reply.deployment(), "green");
    }
    assert_eq!((blue.hits(), green.hits()), (0, 5));
}

#[tokio::test]
async fn unknown_deployment_header_is_404_with_a_clear_message() {
    let blue = Backend::echo("blue").await;
    let router = TestRouter::start(Some(&router_config(vec![blue.config()], &[("blue", 100)], &[])), None).await;
    let reply = TestClient::default()
        .send(
            Request::post(router.url("/score")).header("azureml-model-deployment", "purple").body(full("{}")).unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error_code(), "DeploymentNotFound");
    let message = reply.error_message();
    assert!(message.contains("\"purple\"") && message.contains("blue"), "{message}");
    assert_eq!(blue.hits(), 0);
}

#[tokio::test]
async fn no_traffic_is_503_but_header_routing_still_works() {
    let blue = Backend::echo("blue").await;
    let router = TestRouter::start(Some(&router_config(vec![blue.config()], &[("blue", 0)], &[])), None).await;
    let client = TestClient::default();

    let reply = client.post(&router.url("/score"), "{}").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.error_code(), "NoTraffic");
    assert!(reply.error_message().contains("no deployment has traffic"), "{}", reply.text());

    let reply = client
        .send(Request::post(router.url("/score")).header("azureml-model-deployment", "blue").body(full("{}")).unwrap())
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(client.get(&router.admin_url("/readyz")).await.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn score_goes_to_the_scoring_path_and_other_paths_pass_through() {
    let blue = Backend::echo("blue").await;
    let mut deployment = blue.config();
    deployment.scoring_path = "/v2/models/m/infer".to_owned();
    // A base URL with a path prefix is prepended to everything.
    let prefixed = Backend::echo("prefixed").await;
    let mut prefixed_deployment = prefixed.config();
    prefixed_deployment.url = format!("{}/api/", prefixed.url());
    let config = router_config(vec![deployment, prefixed_deployment], &[("blue", 100)], &[]);
    let router = TestRouter::start(Some(&config), None).await;
    let client = TestClient::default();

    client.post(&router.url("/score?verbose=1"), "{}").await;
    client.get(&router.url("/v2/health/ready")).await;
    client.get(&router.url("/scores")).await;
    let paths: Vec<String> = blue.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/v2/models/m/infer?verbose=1", "/v2/health/ready", "/scores"]);

    client
        .send(
            Request::post(router.url("/score"))
                .header("azureml-model-deployment", "prefixed")
                .body(full("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(prefixed.seen()[0].path, "/api/score");
}

#[tokio::test]
async fn forwards_method_body_and_end_to_end_headers_only() {
    let blue = Backend::echo("blue").await;
    let router = TestRouter::start(Some(&router_config(vec![blue.config()], &[("blue", 100)], &[])), None).await;
    let reply = TestClient::default()
        .send(
            Request::put(router.url("/score"))
                .header("content-type", "application/json")
                .header("x-custom", "kept")
                .header("connection", "x-hop")
                .header("x-hop", "dropped")
                .header("x-request-id", "req-42")
                .body(full(r#"{"data": [1, 2]}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["x-request-id"], "req-42");
    let seen = &blue.seen()[0];
    assert_eq!(seen.method, http::Method::PUT);
    assert_eq!(&seen.body[..], br#"{"data": [1, 2]}"#);
    assert_eq!(seen.headers["content-type"], "application/json");
    assert_eq!(seen.headers["x-custom"], "kept");
    assert_eq!(seen.headers["x-request-id"], "req-42");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert!(!seen.headers.contains_key("x-hop"));
    assert_eq!(seen.headers["host"], blue.addr.to_string().as_str());
}

#[tokio::test]
async fn http2_prior_knowledge_clients_are_served() {
    let blue = Backend::echo("blue").await;
    let router = TestRouter::start(Some(&router_config(vec![blue.config()], &[("blue", 100)], &[])), None).await;
    let client = TestClient::h2c();
    for _ in 0..3 {
        let reply = client.post(&router.url("/score"), "{}").await;
        assert_eq!((reply.status, reply.version), (StatusCode::OK, Version::HTTP_2));
        assert_eq!(reply.text(), "blue");
    }
}

#[tokio::test]
async fn unreachable_deployment_is_502() {
    // Bind and drop a listener to get a loopback port with nothing behind it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let blue = Backend::echo("blue").await;
    let mut deployment = blue.config();
    deployment.url = format!("http://127.0.0.1:{port}");
    let router = TestRouter::start(Some(&router_config(vec![deployment], &[("blue", 100)], &[])), None).await;
    let reply = TestClient::default().post(&router.url("/score"), "{}").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.error_code(), "UpstreamError");
    assert!(reply.error_message().contains("could not be reached"), "{}", reply.text());
}

#[tokio::test]
async fn deployment_status_codes_and_bodies_pass_through() {
    let blue = Backend::start("blue", |_| async {
        let mut response = http::Response::new(full(r#"{"detail":"bad input"}"#));
        *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        response
    })
    .await;
    let router = TestRouter::start(Some(&router_config(vec![blue.config()], &[("blue", 100)], &[])), None).await;
    let reply = TestClient::default().post(&router.url("/score"), "{}").await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.text(), r#"{"detail":"bad input"}"#);
    assert_eq!(reply.deployment(), "blue");
}
