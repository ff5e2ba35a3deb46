//! Live configuration changes, start-up without configuration, and invalid configurations.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Backend, TestClient, TestRouter, WAIT, eventually, full, router_config};
use http::{Response, StatusCode};

/// Sends requests until 20 in a row come from `deployment`; returns how long that took.
async fn until_only(client: &TestClient, router: &TestRouter, deployment: &str) -> Duration {
    let started = Instant::now();
    let mut streak = 0;
    while streak < 20 {
        assert!(started.elapsed() < WAIT, "traffic never moved to {deployment}");
        let reply = client.post(&router.url("/score"), "{}").await;
        assert_eq!(reply.status, StatusCode::OK);
        streak = if reply.deployment() == deployment { streak + 1 } else { 0 };
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_change_under_load_without_dropping_a_request() {
    // blue answers /slow after a while: a request in flight across the change.
    let blue = Backend::start("blue", |seen| async move {
        if seen.path == "/slow" {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        Response::new(full("blue"))
    })
    .await;
    let green = Backend::echo("green").await;
    let deployments = vec![blue.config(), green.config()];
    let router =
        TestRouter::start(Some(&router_config(deployments.clone(), &[("blue", 100), ("green", 0)], &[])), None).await;
    let client = TestClient::default();

    // Background load for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (client, url, stop, done) = (client.clone(), router.url("/score"), Arc::clone(&stop), Arc::clone(&done));
        workers.push(tokio::spawn(async move {
            let mut statuses: HashMap<u16, usize> = HashMap::new();
            while !stop.load(Ordering::Relaxed) {
                let reply = client.post(&url, "{}").await;
                *statuses.entry(reply.status.as_u16()).or_default() += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            statuses
        }));
    }
    eventually(WAIT, "load to be running", || async { done.load(Ordering::Relaxed) >= 200 }).await;

    let slow = tokio::spawn({
        let (client, url) = (client.clone(), router.url("/slow"));
        async move { client.get(&url).await }
    });
    eventually(WAIT, "the slow request at blue", || async { blue.seen().iter().any(|s| s.path == "/slow") }).await;

    // Blue → green.
    let changed = Instant::now();
    router.write_config(&router_config(deployments.clone(), &[("blue", 0), ("green", 100)], &[]));
    until_only(&client, &router, "green").await;
    let took = changed.elapsed();
    assert!(took < Duration::from_secs(5), "the new weights took {took:?} to apply");
    // The request in flight during the change finished where it started.
    let slow = slow.await.unwrap();
    assert_eq!((slow.status, slow.text().as_str()), (StatusCode::OK, "blue"));

    // Green → an even split, then back to blue only, still under load.
    router.write_config(&router_config(deployments.clone(), &[("blue", 50), ("green", 50)], &[]));
    eventually(WAIT, "both deployments to get traffic", || async {
        let mut blues = 0;
        for _ in 0..40 {
            if client.post(&router.url("/score"), "{}").await.deployment() == "blue" {
                blues += 1;
            }
        }
        blues > 0 && blues < 40
    })
    .await;
    let changed = Instant::now();
    router.write_config(&router_config(deployments, &[("blue", 100), ("green", 0)], &[]));
    until_only(&client, &router, "blue").await;
    assert!(changed.elapsed() < Duration::from_secs(5));

    let before = done.load(Ordering::Relaxed);
    eventually(WAIT, "more load after the last change", || async { done.load(Ordering::Relaxed) >= before + 200 })
        .await;
    stop.store(true, Ordering::Relaxed);
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for worker in workers {
        for (status, n) in worker.await.unwrap() {
            *statuses.entry(status).or_default() += n;
        }
    }
    let total: usize = statuses.values().sum();
    assert!(total >= 400, "{total} requests");
    assert_eq!(statuses.keys().copied().collect::<Vec<_>>(), [200], "every response is 200: {statuses:?}");
}

#[tokio::test]
async fn removing_a_deployment_does_not_cut_its_in_flight_requests() {
    let blue = Backend::start("blue", |seen| async move {
        if seen.path == "/slow" {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        Response::new(full("blue"))
    })
    .await;
    let green = Backend::echo("green").await;
    let router =
        TestRouter::start(Some(&router_config(vec![blue.config(), green.config()], &[("blue", 100)], &[])), None).await;
    let client = TestClient::default();
    let slow = tokio::spawn({
        let (client, url) = (client.clone(), router.url("/slow"));
        async move { client.get(&url).await }
    });
    eventually(WAIT, "the slow request at blue", || async { blue.hits() == 1 }).await;
    router.write_config(&router_config(vec![green.config()], &[("green", 100)], &[]));
    until_only(&client, &router, "green").await;
    let slow = slow.await.unwrap();
    assert_eq!((slow.status, slow.text().as_str()), (StatusCode::OK, "blue"));
}

#[tokio::test]
async fn an_invalid_configuration_is_refused_and_the_last_good_one_kept() {
    let (blue, green) = (Backend::echo("blue").await, Backend::echo("green").await);
    let deployments = vec![blue.config(), green.config()];
    let router = TestRouter::start(Some(&router_config(deployments.clone(), &[("blue", 100)], &[])), None).await;
    let client = TestClient::default();
    let failures = r#"atrium_router_config_reloads_total{file="config",result="failure"}"#;

    // Weights summing to 90, then not JSON at all.
    router.write_config(&router_config(deployments.clone(), &[("blue", 60), ("green", 30)], &[]));
    eventually(WAIT, "the bad weights to be refused", || async { router.metric(&client, failures).await == Some(1.0) })
        .await;
    router.write_config_bytes(b"{ not json");
    eventually(WAIT, "the bad JSON to be refused", || async { router.metric(&client, failures).await == Some(2.0) })
        .await;
    for _ in 0..20 {
        let reply = client.post(&router.url("/score"), "{}").await;
        assert_eq!((reply.status, reply.deployment()), (StatusCode::OK, "blue"));
    }
    assert_eq!(client.get(&router.admin_url("/readyz")).await.status, StatusCode::OK);

    // A good one is applied again.
    router.write_config(&router_config(deployments, &[("green", 100)], &[]));
    until_only(&client, &router, "green").await;
}

#[tokio::test]
async fn starts_unready_without_configuration_and_picks_it_up() {
    let blue = Backend::echo("blue").await;
    let router = TestRouter::start(None, None).await;
    let client = TestClient::default();

    let ready = client.get(&router.admin_url("/readyz")).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready.text().contains("no configuration"), "{}", ready.text());
    assert_eq!(client.get(&router.admin_url("/healthz")).await.status, StatusCode::OK);
    let reply = client.post(&router.url("/score"), "{}").await;
    assert_eq!((reply.status, reply.error_code().as_str()), (StatusCode::SERVICE_UNAVAILABLE, "NotReady"));

    router.write_config(&router_config(vec![blue.config()], &[("blue", 100)], &[]));
    eventually(WAIT, "readiness", || async { client.get(&router.admin_url("/readyz")).await.status == StatusCode::OK })
        .await;
    assert_eq!(client.post(&router.url("/score"), "{}").await.status, StatusCode::OK);
}
