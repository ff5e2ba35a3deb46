//! Mirrored traffic: copies arrive, and a slow or failing mirror never touches the caller.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, TestClient, TestRouter, WAIT, eventually, full, router_config};
use http::{Request, Response, StatusCode};

#[tokio::test]
async fn mirrored_copies_arrive_with_the_same_request() {
    let (blue, shadow) = (Backend::echo("blue").await, Backend::echo("shadow").await);
    let mut shadow_deployment = shadow.config();
    shadow_deployment.scoring_path = "/predict".to_owned();
    let config = router_config(vec![blue.config(), shadow_deployment], &[("blue", 100)], &[("shadow", 100)]);
    let router = TestRouter::start(Some(&config), None).await;
    let client = TestClient::default();

    for i in 0..10 {
        let reply = client
            .send(
                Request::post(router.url("/score?n=1"))
                    .header("content-type", "application/json")
                    .body(full(format!(r#"{{"i": {i}}}"#)))
                    .unwrap(),
            )
            .await;
        assert_eq!((reply.status, reply.text().as_str()), (StatusCode::OK, "blue"));
    }
    eventually(WAIT, "10 mirrored copies", || async { shadow.hits() == 10 }).await;
    let mut bodies: Vec<String> = shadow.seen().iter().map(|s| String::from_utf8_lossy(&s.body).into_owned()).collect();
    bodies.sort();
    let mut expected: Vec<String> = (0..10).map(|i| format!(r#"{{"i": {i}}}"#)).collect();
    expected.sort();
    assert_eq!(bodies, expected);
    let copy = &shadow.seen()[0];
    assert_eq!(copy.path, "/predict?n=1", "/score is rewritten for the mirror too");
    assert_eq!(copy.headers["content-type"], "application/json");
    eventually(WAIT, "mirror metrics", || async {
        router.metric(&client, r#"atrium_router_mirrored_requests_total{deployment="shadow",result="ok"}"#).await
            == Some(10.0)
    })
    .await;
}

#[tokio::test]
async fn mirror_percent_is_a_share_of_live_requests() {
    let (blue, shadow) = (Backend::echo("blue").await, Backend::echo("shadow").await);
    let config = router_config(vec![blue.config(), shadow.config()], &[("blue", 100)], &[("shadow", 25)]);
    let router = TestRouter::start(Some(&config), None).await;
    let client = TestClient::default();
    for _ in 0..200 {
        assert_eq!(client.post(&router.url("/score"), "{}").await.status, StatusCode::OK);
    }
    eventually(WAIT, "50 mirrored copies", || async { shadow.hits() == 50 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_mirror_neither_slows_nor_fails_the_caller() {
    let blue = Backend::echo("blue").await;
    let slow = Backend::start("slow", |_| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Response::new(full("late"))
    })
    .await;
    let config = router_config(vec![blue.config(), slow.config()], &[("blue", 100)], &[("slow", 100)]);
    let router = TestRouter::start(Some(&config), None).await;
    let client = TestClient::default();

    let started = Instant::now();
    for _ in 0..20 {
        let one = Instant::now();
        let reply = client.post(&router.url("/score"), "{}").await;
        assert_eq!((reply.status, reply.text().as_str()), (StatusCode::OK, "blue"));
        assert!(one.elapsed() < Duration::from_secs(2), "a request took {:?}", one.elapsed());
    }
    assert!(started.elapsed() < Duration::from_secs(5), "20 requests took {:?}", started.elapsed());
    // The copies did arrive and are still being "processed" by the slow mirror.
    eventually(WAIT, "copies at the slow mirror", || async { slow.hits() == 20 }).await;
}

#[tokio::test]
async fn failing_mirrors_do_not_fail_the_caller() {
    let blue = Backend::echo("blue").await;
    let failing = Backend::start("failing", |_| async {
        let mut response = Response::new(full("boom"));
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        response
    })
    .await;
    // A mirror with nothing listening at all.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut gone = failing.config();
    gone.name = "gone".to_owned();
    gone.url = format!("http://127.0.0.1:{port}");
    let config = router_config(
        vec![blue.config(), failing.config(), gone],
        &[("blue", 100)],
        &[("failing", 100), ("gone", 100)],
    );
    let router = TestRouter::start(Some(&config), None).await;
    let client = TestClient::default();
    for _ in 0..10 {
        let reply = client.post(&router.url("/score"), "{}").await;
        assert_eq!((reply.status, reply.text().as_str()), (StatusCode::OK, "blue"));
    }
    eventually(WAIT, "failures to be counted", || async {
        let bad = router
            .metric(&client, r#"atrium_router_mirrored_requests_total{deployment="failing",result="bad_status"}"#)
            .await;
        let error =
            router.metric(&client, r#"atrium_router_mirrored_requests_total{deployment="gone",result="error"}"#).await;
        bad == Some(10.0) && error == Some(10.0)
    })
    .await;
}

#[tokio::test]
async fn large_or_unsized_bodies_are_forwarded_but_not_mirrored() {
    let (blue, shadow) = (Backend::echo("blue").await, Backend::echo("shadow").await);
    let config = router_config(vec![blue.config(), shadow.config()], &[("blue", 100)], &[("shadow", 100)]);
    let router = TestRouter::start(Some(&config), None).await;
    let client = TestClient::default();

    let large = "x".repeat(1024 * 1024 + 1);
    let reply = client.post(&router.url("/score"), &large).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(blue.seen()[0].body.len(), large.len());

    let small = client.post(&router.url("/score"), "{}").await;
    assert_eq!(small.status, StatusCode::OK);
    eventually(WAIT, "the small body's copy", || async { shadow.hits() == 1 }).await;
    assert_eq!(&shadow.seen()[0].body[..], b"{}");
    assert_eq!(
        router
            .metric(&client, r#"atrium_router_mirrored_requests_total{deployment="shadow",result="body_too_large"}"#)
            .await,
        Some(1.0)
    );
}
