//! Key authentication and key rotation.

mod common;

use std::time::{Duration, Instant};

use atrium_router::config::AuthMode;
use common::{Backend, TestClient, TestRouter, WAIT, eventually, full, router_config};
use http::{Request, StatusCode};

async fn call(client: &TestClient, router: &TestRouter, authorization: Option<&str>) -> common::Reply {
    let mut request = Request::post(router.url("/score"));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    client.send(request.body(full("{}")).unwrap()).await
}

#[tokio::test]
async fn missing_or_bad_keys_get_401_and_either_key_passes() {
    let blue = Backend::echo("blue").await;
    let mut config = router_config(vec![blue.config()], &[("blue", 100)], &[]);
    config.auth_mode = AuthMode::Key;
    let router = TestRouter::start(Some(&config), Some(("primary-key-1", "secondary-key-1"))).await;
    let client = TestClient::default();

    for bad in
        [None, Some("Bearer wrong"), Some("Bearer primary-key-"), Some("Basic primary-key-1"), Some("primary-key-1")]
    {
        let reply = call(&client, &router, bad).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{bad:?}");
        assert_eq!(reply.error_code(), "Unauthorized");
        assert_eq!(reply.headers["www-authenticate"], "Bearer");
    }
    assert_eq!(blue.hits(), 0, "refused requests never reach a deployment");

    assert_eq!(call(&client, &router, Some("Bearer primary-key-1")).await.status, StatusCode::OK);
    assert_eq!(call(&client, &router, Some("Bearer secondary-key-1")).await.status, StatusCode::OK);
    // The key is the router's business: it is not passed to the scoring code.
    assert!(blue.seen().iter().all(|s| !s.headers.contains_key("authorization")));
    assert_eq!(
        router
            .metric(&client, r#"atrium_router_rejected_requests_total{deployment="none",reason="unauthorized"}"#)
            .await,
        Some(5.0)
    );
}

#[tokio::test]
async fn auth_mode_none_checks_nothing() {
    let blue = Backend::echo("blue").await;
    let router = TestRouter::start(Some(&router_config(vec![blue.config()], &[("blue", 100)], &[])), None).await;
    let client = TestClient::default();
    assert_eq!(call(&client, &router, None).await.status, StatusCode::OK);
    let reply = call(&client, &router, Some("Bearer anything")).await;
    assert_eq!(reply.status, StatusCode::OK);
    // Without auth, the header may be the application's own: it is forwarded.
    assert_eq!(blue.seen()[1].headers["authorization"], "Bearer anything");
}

#[tokio::test]
async fn rotated_keys_apply_without_restart() {
    let blue = Backend::echo("blue").await;
    let mut config = router_config(vec![blue.config()], &[("blue", 100)], &[]);
    config.auth_mode = AuthMode::Key;
    let router = TestRouter::start(Some(&config), Some(("old-primary", "old-secondary"))).await;
    let client = TestClient::default();
    assert_eq!(call(&client, &router, Some("Bearer old-primary")).await.status, StatusCode::OK);

    // Rotate the primary key, keep the secondary.
    let rotated = Instant::now();
    router.write_keys("new-primary", "old-secondary");
    eventually(WAIT, "the new primary key to be accepted", || async {
        call(&client, &router, Some("Bearer new-primary")).await.status == StatusCode::OK
    })
    .await;
    assert!(rotated.elapsed() < Duration::from_secs(5), "took {:?}", rotated.elapsed());
    assert_eq!(call(&client, &router, Some("Bearer old-primary")).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&client, &router, Some("Bearer old-secondary")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn key_mode_without_keys_refuses_and_is_not_ready() {
    let blue = Backend::echo("blue").await;
    let mut config = router_config(vec![blue.config()], &[("blue", 100)], &[]);
    config.auth_mode = AuthMode::Key;
    let router = TestRouter::start(Some(&config), None).await;
    let client = TestClient::default();
    assert_eq!(call(&client, &router, Some("Bearer ")).await.status, StatusCode::UNAUTHORIZED);
    let ready = client.get(&router.admin_url("/readyz")).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready.text().contains("no key"), "{}", ready.text());
}
