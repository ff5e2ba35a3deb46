//! Access logs. In a test binary of its own: tracing caches per-callsite interest process-wide,
//! so a subscriber scoped to one test can miss events when other tests run alongside it.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use atrium_router::config::AuthMode;
use common::{Backend, TestClient, TestRouter, full, router_config};
use http::{Request, StatusCode};

/// A `MakeWriter` that keeps log lines for inspection.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// Current-thread runtime: every task runs on this thread, under the subscriber set here.
#[tokio::test]
async fn access_logs_are_structured_and_leak_no_payload_or_key() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt().json().flatten_event(true).with_writer(logs.clone()).finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let blue = Backend::echo("blue").await;
    let mut config = router_config(vec![blue.config()], &[("blue", 100)], &[]);
    config.auth_mode = AuthMode::Key;
    let router = TestRouter::start(Some(&config), Some(("the-secret-key", "other-key"))).await;
    let client = TestClient::default();
    let reply = client
        .send(
            Request::post(router.url("/score?token=query-secret"))
                .header("authorization", "Bearer the-secret-key")
                .body(full(r#"{"patient": "secret-payload"}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let refused = client.post(&router.url("/v2/models"), "{}").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let access: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "atrium_router::access")
        .collect();
    assert_eq!(access.len(), 2, "{text}");
    let ok = &access[0];
    assert_eq!(
        (&ok["method"], &ok["path"], &ok["deployment"], &ok["status"]),
        (&"POST".into(), &"/score".into(), &"blue".into(), &200.into())
    );
    assert!(ok["latency_ms"].as_f64().is_some() && ok["request_id"].is_string(), "{ok}");
    assert_eq!((&access[1]["status"], &access[1]["deployment"]), (&401.into(), &"none".into()));
    for secret in ["the-secret-key", "other-key", "secret-payload", "query-secret"] {
        assert!(!text.contains(secret), "{secret} leaked into the logs:\n{text}");
    }
}
