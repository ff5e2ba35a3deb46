//! Mirrored copies of live requests.
//!
//! A copy runs in its own task, detached from the caller's request: the caller's response never
//! waits for it, and its failures are only counted. A copy never queues — when the mirror
//! deployment has no free slot the copy is dropped — so a slow mirror cannot build up a backlog of
//! tasks and buffered bodies in the router.

use std::sync::Arc;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Version};
use http_body_util::{BodyExt, Either, Full};

use crate::metrics::MirrorResult;
use crate::proxy::{HttpClient, error_chain, upstream_uri};
use crate::state::Shared;
use crate::table::Deployment;

/// Everything needed to send one copy.
#[derive(Debug)]
pub struct Mirrored {
    /// The shared client.
    pub client: HttpClient,
    /// For metrics.
    pub shared: Arc<Shared>,
    /// The mirror deployment.
    pub deployment: Arc<Deployment>,
    /// The caller's method.
    pub method: Method,
    /// The caller's headers, already prepared for a deployment.
    pub headers: HeaderMap,
    /// The caller's path and query (`/score` is rewritten for the mirror as for live traffic).
    pub path: Option<PathAndQuery>,
    /// The caller's body.
    pub body: Bytes,
}

/// Sends the copy in the background.
pub fn spawn(copy: Mirrored) {
    tokio::spawn(send(copy));
}

async fn send(copy: Mirrored) {
    let Mirrored { client, shared, deployment, method, headers, path, body } = copy;
    let metrics = &shared.metrics;
    let Some(_permit) = deployment.limiter.try_acquire() else {
        metrics.mirror(&deployment.name, MirrorResult::overloaded);
        return;
    };
    let uri = match upstream_uri(&deployment, path.as_ref()) {
        Ok(uri) => uri,
        Err(_) => {
            metrics.mirror(&deployment.name, MirrorResult::error);
            return;
        }
    };
    let mut request = Request::new(Either::Right(Full::new(body)));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;

    // The response is read to the end (so the connection can go back to the pool) and discarded.
    let exchange = async {
        let response = client.request(request).await.map_err(|e| error_chain(&e))?;
        let status = response.status();
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            frame.map_err(|e| error_chain(&e))?;
        }
        Ok::<_, String>(status)
    };
    let result = match tokio::time::timeout(deployment.timeout, exchange).await {
        Ok(Ok(status)) if status.is_success() => MirrorResult::ok,
        Ok(Ok(_)) => MirrorResult::bad_status,
        Ok(Err(error)) => {
            tracing::debug!(deployment = %deployment.name, %error, "mirrored request failed");
            MirrorResult::error
        }
        Err(_) => MirrorResult::timeout,
    };
    metrics.mirror(&deployment.name, result);
}
