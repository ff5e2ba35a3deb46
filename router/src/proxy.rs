//! The data path: authenticate, choose a deployment, wait for a slot, forward, stream back.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{InvalidUri, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Sleep;

use crate::config::AuthMode;
use crate::exchange::{Exchange, Outcome, TrackedBody};
use crate::headers::{self, DEPLOYMENT, REQUEST_ID};
use crate::limiter::{Permit, Rejection};
use crate::metrics::{MirrorResult, NO_DEPLOYMENT, RejectReason, UpstreamError};
use crate::mirror;
use crate::response::RouterError;
use crate::state::Shared;
use crate::table::{Deployment, RouteTable};

/// Largest request body copied for mirroring. Mirroring needs the whole body in memory (it is sent
/// twice), so larger bodies, and bodies of unknown length (chunked), are forwarded streaming to the
/// live deployment and not mirrored; `mirrored_requests_total{result="body_too_large"}` counts them.
pub const MAX_MIRROR_BODY: u64 = 1024 * 1024;

/// Request body sent to a deployment: the caller's stream, or a buffered copy when mirroring.
pub type UpstreamBody = Either<Incoming, Full<Bytes>>;
/// The pooled HTTP/1.1 client to deployments.
pub type HttpClient = Client<HttpConnector, UpstreamBody>;
/// Response body sent to callers: a deployment's stream, or the router's own answer.
pub type ResponseBody = Either<TrackedBody, Full<Bytes>>;

/// The client used for every deployment. Connections are pooled per `host:port` and reused across
/// configurations; Nagle is off because requests are small and latency matters.
pub fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    // In-cluster connects are fast; this only bounds a black-holed address, the request deadline
    // bounds the rest.
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    connector.set_keepalive(Some(Duration::from_secs(60)));
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

/// Handles requests on the data port.
#[derive(Debug, Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
    client: HttpClient,
}

/// A deployment's response, before it is handed to the caller.
struct Upstream {
    response: Response<Incoming>,
    deployment: Arc<Deployment>,
    permit: Permit,
    deadline: Pin<Box<Sleep>>,
}

impl Proxy {
    /// A proxy over the shared state.
    pub fn new(shared: Arc<Shared>, client: HttpClient) -> Self {
        Self { shared, client }
    }

    /// Answers one request. Never fails: every problem becomes a response with a status and a
    /// JSON message.
    pub async fn handle(&self, request: Request<Incoming>, client_ip: IpAddr) -> Response<ResponseBody> {
        let request_id = headers::request_id(request.headers());
        let mut exchange =
            Exchange::new(Arc::clone(&self.shared), request.method().clone(), request.uri().clone(), request_id);
        match self.forward(request, client_ip, &mut exchange).await {
            Ok(Upstream { response, deployment, permit, deadline }) => {
                let (mut parts, body) = response.into_parts();
                headers::strip_hop_by_hop(&mut parts.headers);
                if let Some(name) = &deployment.header_value {
                    parts.headers.insert(DEPLOYMENT, name.clone());
                }
                parts.headers.insert(REQUEST_ID, exchange.request_id().clone());
                let body = TrackedBody::new(body, deadline, parts.status, permit, exchange);
                Response::from_parts(parts, Either::Left(body))
            }
            Err(error) => {
                let status = error.status;
                let mut response = error.into_response();
                let headers = response.headers_mut();
                headers.insert(REQUEST_ID, exchange.request_id().clone());
                // Say which deployment timed out or was full, when one had been chosen.
                if let Some(name) = exchange.deployment().and_then(|d| d.header_value.clone()) {
                    headers.insert(DEPLOYMENT, name);
                }
                exchange.finish(status, Outcome::Local);
                response.map(Either::Right)
            }
        }
    }

    async fn forward(
        &self,
        request: Request<Incoming>,
        client_ip: IpAddr,
        exchange: &mut Exchange,
    ) -> Result<Upstream, RouterError> {
        let table = self.authorize(&request)?;
        let (deployment, mirrors) = self.route(&table, &request)?;
        exchange.set_deployment(Arc::clone(&deployment));
        let permit = deployment
            .limiter
            .acquire(deployment.max_queue_wait)
            .await
            .map_err(|rejection| self.refuse(&deployment, rejection))?;

        let (mut parts, body) = request.into_parts();
        let original_path = parts.uri.path_and_query().cloned();
        headers::to_upstream(&mut parts.headers, client_ip, table.auth_mode == AuthMode::Key);
        parts.headers.insert(REQUEST_ID, exchange.request_id().clone());
        parts.uri = upstream_uri(&deployment, original_path.as_ref()).map_err(|e| {
            RouterError::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("the request path cannot be forwarded: {e}"),
            )
        })?;
        // Deployments speak HTTP/1.1 whatever the caller used; the client refuses an HTTP/2
        // request on an HTTP/1 connection.
        parts.version = Version::HTTP_11;
        parts.extensions = http::Extensions::new();

        // One timer for the whole exchange: it bounds reading a body to mirror, waiting for the
        // response head, and (moved into the response body) streaming the response.
        let mut deadline = Box::pin(tokio::time::sleep(deployment.timeout));
        let body = tokio::select! {
            body = self.mirror(body, mirrors, &parts, original_path) => body?,
            () = &mut deadline => return Err(self.timed_out(&deployment)),
        };
        let response = tokio::select! {
            response = self.client.request(Request::from_parts(parts, body)) => response,
            () = &mut deadline => return Err(self.timed_out(&deployment)),
        };
        match response {
            Ok(response) => Ok(Upstream { response, deployment, permit, deadline }),
            Err(e) => Err(self.upstream_failed(&deployment, exchange, &e)),
        }
    }

    /// The current table, if the caller may use it.
    fn authorize(&self, request: &Request<Incoming>) -> Result<Arc<RouteTable>, RouterError> {
        let metrics = &self.shared.metrics;
        let Some(table) = self.shared.table() else {
            metrics.reject(NO_DEPLOYMENT, RejectReason::not_ready);
            return Err(RouterError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "NotReady",
                "the router has not loaded a valid configuration yet",
            ));
        };
        if table.auth_mode == AuthMode::Key && !self.shared.keys().authorize(request.headers()) {
            metrics.reject(NO_DEPLOYMENT, RejectReason::unauthorized);
            return Err(RouterError::new(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "a valid key is required: send 'Authorization: Bearer <key>' with the endpoint's \
                 primary or secondary key",
            ));
        }
        Ok(table)
    }

    /// The deployment for the request, and the mirrors that get a copy of it.
    fn route(
        &self,
        table: &RouteTable,
        request: &Request<Incoming>,
    ) -> Result<(Arc<Deployment>, Vec<Arc<Deployment>>), RouterError> {
        let metrics = &self.shared.metrics;
        // Requests that name a deployment go there and are not mirrored: they are usually tests of
        // one deployment, and copying them elsewhere would skew the mirror's sample.
        if let Some(name) = request.headers().get(DEPLOYMENT) {
            return match table.by_name(name.as_bytes()) {
                Some(deployment) => Ok((Arc::clone(deployment), Vec::new())),
                None => {
                    metrics.reject(NO_DEPLOYMENT, RejectReason::unknown_deployment);
                    Err(RouterError::new(
                        StatusCode::NOT_FOUND,
                        "DeploymentNotFound",
                        format!(
                            "endpoint {:?} has no deployment named {:?} (from the {DEPLOYMENT} header); its \
                             deployments are: {}",
                            table.endpoint,
                            String::from_utf8_lossy(name.as_bytes()),
                            table.names().collect::<Vec<_>>().join(", ")
                        ),
                    ))
                }
            };
        }
        match table.pick() {
            Some(deployment) => Ok((Arc::clone(deployment), table.sample_mirrors())),
            None => {
                metrics.reject(NO_DEPLOYMENT, RejectReason::no_traffic);
                Err(RouterError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "NoTraffic",
                    format!(
                        "no deployment has traffic on endpoint {:?}: give a deployment a traffic weight, or \
                         name one with the {DEPLOYMENT} header",
                        table.endpoint
                    ),
                ))
            }
        }
    }

    /// The body to send to the live deployment; when the request is mirrored, reads it (if small
    /// enough) and sends the copies.
    async fn mirror(
        &self,
        body: Incoming,
        mirrors: Vec<Arc<Deployment>>,
        parts: &http::request::Parts,
        original_path: Option<PathAndQuery>,
    ) -> Result<UpstreamBody, RouterError> {
        if mirrors.is_empty() {
            return Ok(Either::Left(body));
        }
        if body.size_hint().exact().is_none_or(|len| len > MAX_MIRROR_BODY) {
            for mirror in &mirrors {
                self.shared.metrics.mirror(&mirror.name, MirrorResult::body_too_large);
            }
            return Ok(Either::Left(body));
        }
        let bytes = body
            .collect()
            .await
            .map_err(|_| RouterError::new(StatusCode::BAD_REQUEST, "BadRequest", "the request body could not be read"))?
            .to_bytes();
        for deployment in mirrors {
            mirror::spawn(mirror::Mirrored {
                client: self.client.clone(),
                shared: Arc::clone(&self.shared),
                deployment,
                method: parts.method.clone(),
                headers: parts.headers.clone(),
                path: original_path.clone(),
                body: bytes.clone(),
            });
        }
        Ok(Either::Right(Full::new(bytes)))
    }

    fn timed_out(&self, deployment: &Deployment) -> RouterError {
        self.shared.metrics.upstream_error(&deployment.name, UpstreamError::timeout);
        RouterError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "RequestTimeout",
            format!(
                "deployment {:?} did not respond within {} ms (requestTimeoutMs)",
                deployment.name,
                deployment.timeout.as_millis()
            ),
        )
    }

    fn upstream_failed(
        &self,
        deployment: &Deployment,
        exchange: &Exchange,
        error: &hyper_util::client::legacy::Error,
    ) -> RouterError {
        self.shared.metrics.upstream_error(&deployment.name, UpstreamError::error);
        tracing::warn!(
            deployment = %deployment.name,
            request_id = exchange.request_id().to_str().unwrap_or("-"),
            error = %error_chain(error),
            "forwarding to the deployment failed"
        );
        let message = if error.is_connect() {
            format!("deployment {:?} could not be reached", deployment.name)
        } else {
            format!("the connection to deployment {:?} failed before it responded", deployment.name)
        };
        RouterError::new(StatusCode::BAD_GATEWAY, "UpstreamError", message)
    }

    fn refuse(&self, deployment: &Deployment, rejection: Rejection) -> RouterError {
        let metrics = &self.shared.metrics;
        let name = &deployment.name;
        match rejection {
            Rejection::NoCapacity => {
                metrics.reject(name, RejectReason::no_capacity);
                RouterError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "NoCapacity",
                    format!("deployment {name:?} has no instances"),
                )
            }
            Rejection::QueueFull => {
                metrics.reject(name, RejectReason::queue_full);
                RouterError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequests",
                    format!(
                        "deployment {name:?} is at its concurrency limit \
                         (instances x maxConcurrentRequestsPerInstance) and its wait queue is full"
                    ),
                )
            }
            Rejection::QueueTimeout => {
                metrics.reject(name, RejectReason::queue_timeout);
                RouterError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequests",
                    format!(
                        "deployment {name:?} is at its concurrency limit and no slot freed up \
                         within {} ms (maxQueueWaitMs)",
                        deployment.max_queue_wait.as_millis()
                    ),
                )
            }
        }
    }
}

/// The deployment URI for a caller's path: `/score` becomes the deployment's scoring path, other
/// paths are kept; the base URL's prefix goes in front; the query string is kept.
pub(crate) fn upstream_uri(deployment: &Deployment, original: Option<&PathAndQuery>) -> Result<Uri, http::Error> {
    let path_and_query = upstream_path(deployment, original)?;
    Uri::builder().scheme(Scheme::HTTP).authority(deployment.authority.clone()).path_and_query(path_and_query).build()
}

fn upstream_path(deployment: &Deployment, original: Option<&PathAndQuery>) -> Result<PathAndQuery, InvalidUri> {
    let (path, query) = original.map_or(("/", None), |pq| (pq.path(), pq.query()));
    let rewritten = path == "/score";
    if !rewritten
        && deployment.prefix.is_empty()
        && let Some(pq) = original
    {
        // The common case: forward as is, without copying.
        return Ok(pq.clone());
    }
    let path = if rewritten { deployment.scoring_path.as_str() } else { path };
    let mut out = String::with_capacity(deployment.prefix.len() + path.len() + query.map_or(0, |q| q.len() + 1));
    out.push_str(&deployment.prefix);
    out.push_str(path);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    PathAndQuery::try_from(out)
}

/// An error and its causes on one line (hyper's errors put the useful part in `source`).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::Limiter;
    use prometheus_client::metrics::{gauge::Gauge, histogram::Histogram};

    fn deployment(prefix: &str, scoring_path: &str) -> Deployment {
        Deployment {
            name: "blue".into(),
            header_value: None,
            authority: "blue.ns.svc:8080".parse().unwrap(),
            prefix: prefix.into(),
            scoring_path: scoring_path.into(),
            timeout: Duration::from_secs(1),
            max_queue_wait: Duration::ZERO,
            limiter: Limiter::new(1, Gauge::default(), Gauge::default()),
            duration: Histogram::new([1.0]),
        }
    }

    fn uri(d: &Deployment, original: &str) -> String {
        let pq: PathAndQuery = original.parse().unwrap();
        upstream_uri(d, Some(&pq)).unwrap().to_string()
    }

    #[test]
    fn score_is_rewritten_and_other_paths_kept() {
        let d = deployment("", "/v2/models/m/infer");
        assert_eq!(uri(&d, "/score"), "http://blue.ns.svc:8080/v2/models/m/infer");
        assert_eq!(uri(&d, "/score?a=1&b=2"), "http://blue.ns.svc:8080/v2/models/m/infer?a=1&b=2");
        assert_eq!(uri(&d, "/score/"), "http://blue.ns.svc:8080/score/");
        assert_eq!(uri(&d, "/v2/health/ready"), "http://blue.ns.svc:8080/v2/health/ready");
        assert_eq!(upstream_uri(&d, None).unwrap().to_string(), "http://blue.ns.svc:8080/");
    }

    #[test]
    fn base_url_prefix_is_prepended() {
        let d = deployment("/api", "/score");
        assert_eq!(uri(&d, "/score?x=1"), "http://blue.ns.svc:8080/api/score?x=1");
        assert_eq!(uri(&d, "/v2/models"), "http://blue.ns.svc:8080/api/v2/models");
    }
}
