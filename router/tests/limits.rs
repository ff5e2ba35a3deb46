//! Request timeouts, concurrency limits and the wait queue, and streaming.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Backend, TestBody, TestClient, TestRouter, WAIT, eventually, full, router_config};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Channel};
use tokio::sync::Semaphore;

/// A backend that holds every request until the test releases it.
async fn gated(name: &str) -> (Backend, Arc<Semaphore>) {
    let gate = Arc::new(Semaphore::new(0));
    let g = Arc::clone(&gate);
    let backend = Backend::start(name, move |_| {
        let gate = Arc::clone(&g);
        async move {
            gate.acquire().await.unwrap().forget();
            Response::new(full("done"))
        }
    })
    .await;
    (backend, gate)
}

#[tokio::test]
async fn slow_deployment_gets_504_with_a_json_message() {
    let (blue, _gate) = gated("blue").await;
    let mut deployment = blue.config();
    deployment.request_timeout_ms = 300;
    deployment.max_concurrent_requests_per_instance = 1;
    let router = TestRouter::start(Some(&router_config(vec![deployment], &[("blue", 100)], &[])), None).await;
    let client = TestClient::default();

    let started = Instant::now();
    let reply = client.post(&router.url("/score"), "{}").await;
    let elapsed = started.elapsed();
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(reply.error_code(), "RequestTimeout");
    assert!(reply.error_message().contains("300 ms"), "{}", reply.text());
    assert_eq!(reply.deployment(), "blue");
    assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(5), "{elapsed:?}");

    // The timed-out request gave its slot back: the next one is not refused with 429.
    let reply = client.post(&router.url("/score"), "{}").await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        router.metric(&client, r#"atrium_router_upstream_errors_total{deployment="blue",reason="timeout"}"#).await,
        Some(2.0)
    );
}

#[tokio::test]
async fn full_queue_gets_429_and_queued_requests_are_served_in_turn() {
    let (blue, gate) = gated("blue").await;
    let mut deployment = blue.config();
    // One slot, so a queue of one.
    deployment.instances = 1;
    deployment.max_concurrent_requests_per_instance = 1;
    deployment.max_queue_wait_ms = 10_000;
    let router = TestRouter::start(Some(&router_config(vec![deployment], &[("blue", 100)], &[])), None).await;
    let client = TestClient::default();

    let first = tokio::spawn({
        let (client, url) = (client.clone(), router.url("/score"));
        async move { client.post(&url, "1").await }
    });
    eventually(WAIT, "the first request at the backend", || async { blue.hits() == 1 }).await;
    let second = tokio::spawn({
        let (client, url) = (client.clone(), router.url("/score"));
        async move { client.post(&url, "2").await }
    });
    eventually(WAIT, "the second request in the queue", || async {
        router.metric(&client, r#"atrium_router_queued_requests{deployment="blue"}"#).await == Some(1.0)
    })
    .await;

    let started = Instant::now();
    let third = client.post(&router.url("/score"), "3").await;
    assert_eq!(third.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(started.elapsed() < Duration::from_secs(2), "refused at once, not after waiting");
    assert_eq!(third.error_code(), "TooManyRequests");
    assert!(third.error_message().contains("queue is full"), "{}", third.text());
    assert_eq!(third.headers["retry-after"], "1");

    gate.add_permits(2);
    assert_eq!(first.await.unwrap().status, StatusCode::OK);
    assert_eq!(second.await.unwrap().status, StatusCode::OK);
    assert_eq!(blue.hits(), 2);
    assert_eq!(
        router.metric(&client, r#"atrium_router_rejected_requests_total{deployment="blue",reason="queue_full"}"#).await,
        Some(1.0)
    );
    assert_eq!(router.metric(&client, r#"atrium_router_in_flight_requests{deployment="blue"}"#).await, Some(0.0));
}

#[tokio::test]
async fn queue_wait_expires_with_429() {
    let (blue, gate) = gated("blue").await;
    let mut deployment = blue.config();
    deployment.max_concurrent_requests_per_instance = 1;
    deployment.max_queue_wait_ms = 200;
    let router = TestRouter::start(Some(&router_config(vec![deployment], &[("blue", 100)], &[])), None).await;
    let client = TestClient::default();

    let first = tokio::spawn({
        let (client, url) = (client.clone(), router.url("/score"));
        async move { client.post(&url, "1").await }
    });
    eventually(WAIT, "the first request at the backend", || async { blue.hits() == 1 }).await;
    let started = Instant::now();
    let second = client.post(&router.url("/score"), "2").await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(started.elapsed() >= Duration::from_millis(200), "{:?}", started.elapsed());
    assert!(second.error_message().contains("200 ms (maxQueueWaitMs)"), "{}", second.text());

    gate.add_permits(1);
    assert_eq!(first.await.unwrap().status, StatusCode::OK);
}

#[tokio::test]
async fn zero_instances_get_503() {
    let blue = Backend::echo("blue").await;
    let mut deployment = blue.config();
    deployment.instances = 0;
    let router = TestRouter::start(Some(&router_config(vec![deployment], &[("blue", 100)], &[])), None).await;
    let reply = TestClient::default().post(&router.url("/score"), "{}").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.error_code(), "NoCapacity");
}

#[tokio::test]
async fn response_bodies_stream_through() {
    let release = Arc::new(Semaphore::new(0));
    let r = Arc::clone(&release);
    let blue = Backend::start("blue", move |_| {
        let release = Arc::clone(&r);
        async move {
            let (mut tx, body) = Channel::<Bytes, common::BoxError>::new(1);
            tokio::spawn(async move {
                tx.send_data(Bytes::from_static(b"first ")).await.unwrap();
                release.acquire().await.unwrap().forget();
                tx.send_data(Bytes::from_static(b"second")).await.unwrap();
            });
            Response::new(body.boxed())
        }
    })
    .await;
    let router = TestRouter::start(Some(&router_config(vec![blue.config()], &[("blue", 100)], &[])), None).await;
    let response =
        TestClient::default().send_streaming(Request::post(router.url("/score")).body(full("{}")).unwrap()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    // The first chunk arrives while the backend is still holding the rest.
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"first ");
    release.add_permits(1);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(&rest[..], b"second");
}

#[tokio::test]
async fn request_bodies_stream_through() {
    let (first_chunk_tx, first_chunk_rx) = tokio::sync::oneshot::channel::<Bytes>();
    let first_chunk_tx = std::sync::Mutex::new(Some(first_chunk_tx));
    let blue = Backend::start_raw("blue", Default::default(), Default::default(), move |request| {
        let tx = first_chunk_tx.lock().unwrap().take();
        async move {
            let mut body = request.into_body();
            let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
            if let Some(tx) = tx {
                let _ = tx.send(first);
            }
            let rest = body.collect().await.unwrap().to_bytes();
            Response::new(full(rest))
        }
    })
    .await;
    let router = TestRouter::start(Some(&router_config(vec![blue.config()], &[("blue", 100)], &[])), None).await;

    let (mut tx, body) = Channel::<Bytes, common::BoxError>::new(1);
    let request = Request::post(router.url("/score")).body(TestBody::new(body)).unwrap();
    let client = TestClient::default();
    let response = tokio::spawn(async move { client.send(request).await });
    tx.send_data(Bytes::from_static(b"part one")).await.unwrap();
    // The backend has the first part before the caller sends the second.
    let first = tokio::time::timeout(WAIT, first_chunk_rx).await.unwrap().unwrap();
    assert_eq!(&first[..], b"part one");
    tx.send_data(Bytes::from_static(b"part two")).await.unwrap();
    drop(tx);
    let reply = response.await.unwrap();
    assert_eq!((reply.status, reply.text().as_str()), (StatusCode::OK, "part two"));
}

#[tokio::test]
async fn a_stalled_response_body_is_cut_at_the_deadline_and_frees_its_slot() {
    let blue = Backend::start("blue", |_| async {
        let (mut tx, body) = Channel::<Bytes, common::BoxError>::new(1);
        tokio::spawn(async move {
            tx.send_data(Bytes::from_static(b"partial")).await.unwrap();
            // Never finishes.
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(tx);
        });
        Response::new(body.boxed())
    })
    .await;
    let mut deployment = blue.config();
    deployment.request_timeout_ms = 300;
    deployment.max_concurrent_requests_per_instance = 1;
    deployment.max_queue_wait_ms = 0;
    let router = TestRouter::start(Some(&router_config(vec![deployment], &[("blue", 100)], &[])), None).await;
    let client = TestClient::default();

    let started = Instant::now();
    let result = client.try_send(Request::post(router.url("/score")).body(full("{}")).unwrap()).await;
    assert!(result.is_err(), "the body is cut off, not completed: {result:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    eventually(WAIT, "the slot to be free", || async {
        router.metric(&client, r#"atrium_router_in_flight_requests{deployment="blue"}"#).await == Some(0.0)
    })
    .await;
}

#[tokio::test]
async fn callers_that_hang_up_free_their_slot_and_are_counted() {
    let (blue, _gate) = gated("blue").await;
    let mut deployment = blue.config();
    deployment.max_concurrent_requests_per_instance = 1;
    let router = TestRouter::start(Some(&router_config(vec![deployment], &[("blue", 100)], &[])), None).await;
    let client = TestClient::default();

    let caller = tokio::spawn({
        let url = router.url("/score");
        async move { TestClient::default().post(&url, "{}").await }
    });
    eventually(WAIT, "the request at the backend", || async { blue.hits() == 1 }).await;
    // Dropping the caller's client closes its connection.
    caller.abort();
    let _ = caller.await;
    eventually(WAIT, "the hang-up to be counted and the slot freed", || async {
        router.metric(&client, r#"atrium_router_requests_total{deployment="blue",code="499"}"#).await == Some(1.0)
            && router.metric(&client, r#"atrium_router_in_flight_requests{deployment="blue"}"#).await == Some(0.0)
    })
    .await;
}
