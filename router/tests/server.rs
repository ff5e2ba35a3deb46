//! Admin endpoints, metrics and graceful shutdown.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Backend, TestClient, TestRouter, WAIT, eventually, full, router_config};
use http::{Request, Response, StatusCode};
use tokio::sync::Semaphore;

#[tokio::test]
async fn admin_port_serves_health_readiness_and_metrics() {
    let (blue, shadow) = (Backend::echo("blue").await, Backend::echo("shadow").await);
    let config = router_config(vec![blue.config(), shadow.config()], &[("blue", 100)], &[("shadow", 100)]);
    let router = TestRouter::start(Some(&config), None).await;
    let client = TestClient::default();

    assert_eq!(client.get(&router.admin_url("/healthz")).await.status, StatusCode::OK);
    assert_eq!(client.get(&router.admin_url("/readyz")).await.status, StatusCode::OK);
    assert_eq!(client.get(&router.admin_url("/nope")).await.status, StatusCode::NOT_FOUND);

    for _ in 0..3 {
        client.post(&router.url("/score"), "{}").await;
    }
    client
        .send(Request::post(router.url("/score")).header("azureml-model-deployment", "nope").body(full("{}")).unwrap())
        .await;
    eventually(WAIT, "mirrored copies to be counted", || async {
        router.metric(&client, r#"atrium_router_mirrored_requests_total{deployment="shadow",result="ok"}"#).await
            == Some(3.0)
    })
    .await;

    let metrics = client.get(&router.admin_url("/metrics")).await;
    assert!(metrics.headers["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = metrics.text();
    for series in [
        r#"atrium_router_requests_total{deployment="blue",code="200"} 3"#,
        r#"atrium_router_requests_total{deployment="none",code="404"} 1"#,
        r#"atrium_router_request_duration_seconds_count{deployment="blue"} 3"#,
        r#"atrium_router_request_duration_seconds_bucket{le="0.001",deployment="blue"}"#,
        r#"atrium_router_in_flight_requests{deployment="blue"} 0"#,
        r#"atrium_router_rejected_requests_total{deployment="none",reason="unknown_deployment"} 1"#,
        r#"atrium_router_config_reloads_total{file="config",result="success"} 1"#,
    ] {
        assert!(text.contains(series), "missing {series} in:\n{text}");
    }
}

#[tokio::test]
async fn after_shutdown_is_requested_new_connections_are_served_for_the_shutdown_delay() {
    let blue = Backend::echo("blue").await;
    let config = router_config(vec![blue.config()], &[("blue", 100)], &[]);
    let delay = Duration::from_secs(2);
    let mut router = TestRouter::start_with_shutdown_delay(Some(&config), None, delay).await;
    router.shutdown();
    let asked = std::time::Instant::now();
    eventually(WAIT, "readiness to fail", || async {
        TestClient::default().get(&router.admin_url("/readyz")).await.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    // Not ready, but a caller that an endpoint still sends here is served (a fresh client: a new
    // connection).
    let reply = TestClient::default().post(&router.url("/score"), "{}").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(asked.elapsed() < delay, "served within the delay");
    // After the delay, new connections are refused and the router stops.
    let task = router.task.take().unwrap();
    tokio::time::timeout(delay + Duration::from_secs(5), task).await.expect("router stops after the delay").unwrap();
    let refused = TestClient::default().try_send(Request::get(router.url("/score")).body(full("")).unwrap()).await;
    assert!(refused.is_err(), "{refused:?}");
}

#[tokio::test]
async fn shutdown_stops_accepting_and_drains_in_flight_requests() {
    let gate = Arc::new(Semaphore::new(0));
    let g = Arc::clone(&gate);
    let blue = Backend::start("blue", move |_| {
        let gate = Arc::clone(&g);
        async move {
            gate.acquire().await.unwrap().forget();
            Response::new(full("done"))
        }
    })
    .await;
    let mut router = TestRouter::start(Some(&router_config(vec![blue.config()], &[("blue", 100)], &[])), None).await;

    let in_flight = tokio::spawn({
        let url = router.url("/score");
        async move { TestClient::default().post(&url, "{}").await }
    });
    eventually(WAIT, "the request at the backend", || async { blue.hits() == 1 }).await;

    router.shutdown();
    eventually(WAIT, "readiness to fail", || async {
        let ready = TestClient::default().get(&router.admin_url("/readyz")).await;
        ready.status == StatusCode::SERVICE_UNAVAILABLE && ready.text().contains("shutting down")
    })
    .await;
    // New connections are refused (a fresh client, so no pooled connection is reused).
    let refused = TestClient::default().try_send(Request::get(router.url("/score")).body(full("")).unwrap()).await;
    assert!(refused.is_err(), "{refused:?}");

    gate.add_permits(1);
    let reply = in_flight.await.unwrap();
    assert_eq!((reply.status, reply.text().as_str()), (StatusCode::OK, "done"));
    let task = router.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("router stops once drained").unwrap();
}
