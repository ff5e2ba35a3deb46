//! One caller's request from arrival to the last byte of its response: the access log line and
//! the request metrics, plus the response body wrapper that streams a deployment's answer while
//! holding the request's concurrency slot and enforcing its deadline.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, Uri};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Sleep;

use crate::limiter::Permit;
use crate::metrics::{NO_DEPLOYMENT, RequestLabels, UpstreamError};
use crate::state::Shared;
use crate::table::Deployment;

/// Boxed error of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How an exchange ended, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The whole response was sent.
    Complete,
    /// The router answered itself (an error or a refusal).
    Local,
    /// The caller went away before the response was fully sent.
    CallerGone,
    /// The deployment failed while the body was streaming.
    UpstreamError,
    /// The deadline passed while the body was streaming.
    Timeout,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::Local => "local",
            Outcome::CallerGone => "caller_gone",
            Outcome::UpstreamError => "upstream_error",
            Outcome::Timeout => "timeout",
        }
    }
}

/// What is known about a request for logging and metrics. Never holds the body or credentials:
/// the access log has the method, the path without its query, the deployment, the status, the
/// latency and the request id.
#[derive(Debug)]
pub struct Exchange {
    shared: Arc<Shared>,
    start: Instant,
    method: Method,
    uri: Uri,
    request_id: HeaderValue,
    deployment: Option<Arc<Deployment>>,
    recorded: bool,
}

/// Status recorded for callers that went away before they got a response (nginx's convention;
/// nothing is sent).
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

impl Exchange {
    /// Starts timing a request.
    pub fn new(shared: Arc<Shared>, method: Method, uri: Uri, request_id: HeaderValue) -> Self {
        Self { shared, start: Instant::now(), method, uri, request_id, deployment: None, recorded: false }
    }

    /// Records the deployment chosen for the request.
    pub fn set_deployment(&mut self, deployment: Arc<Deployment>) {
        self.deployment = Some(deployment);
    }

    /// The request id.
    pub fn request_id(&self) -> &HeaderValue {
        &self.request_id
    }

    /// The deployment chosen, once known.
    pub fn deployment(&self) -> Option<&Arc<Deployment>> {
        self.deployment.as_ref()
    }

    /// The deployment name for labels.
    pub fn deployment_name(&self) -> &str {
        self.deployment.as_deref().map_or(NO_DEPLOYMENT, |d| d.name.as_str())
    }

    /// Counts and logs the exchange.
    pub fn finish(mut self, status: StatusCode, outcome: Outcome) {
        self.record(status.as_u16(), outcome);
    }

    fn record(&mut self, status: u16, outcome: Outcome) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        let elapsed = self.start.elapsed();
        let metrics = &self.shared.metrics;
        let deployment = self.deployment_name();
        metrics.requests.get_or_create(&RequestLabels { deployment: deployment.to_owned(), code: status }).inc();
        match &self.deployment {
            Some(d) => d.duration.observe(elapsed.as_secs_f64()),
            None => metrics
                .duration
                .get_or_create(&crate::metrics::DeploymentLabels { deployment: deployment.to_owned() })
                .observe(elapsed.as_secs_f64()),
        }
        tracing::info!(
            target: "atrium_router::access",
            method = %self.method,
            path = self.uri.path(),
            deployment,
            status,
            // Microsecond precision: more digits are noise, and make log lines longer.
            latency_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3,
            outcome = outcome.as_str(),
            request_id = self.request_id.to_str().unwrap_or("-"),
        );
    }
}

// A caller that disconnects while its request is queued or forwarded drops the request's future,
// and this with it: the request is still counted and logged.
impl Drop for Exchange {
    fn drop(&mut self) {
        self.record(CLIENT_CLOSED_REQUEST, Outcome::CallerGone);
    }
}

/// A deployment's response body on its way to the caller. Streams frame by frame; holds the
/// request's concurrency slot until the body ends (a streaming response is still work for the
/// deployment); cuts the body off when the request deadline passes, so a stalled deployment cannot
/// keep a slot forever; and finishes the exchange when it ends or is dropped.
#[derive(Debug)]
pub struct TrackedBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
    status: StatusCode,
    permit: Option<Permit>,
    exchange: Option<Exchange>,
}

impl TrackedBody {
    /// Wraps `inner`; `deadline` is the request's, already running.
    pub fn new(
        inner: Incoming,
        deadline: Pin<Box<Sleep>>,
        status: StatusCode,
        permit: Permit,
        exchange: Exchange,
    ) -> Self {
        Self { inner, deadline, status, permit: Some(permit), exchange: Some(exchange) }
    }

    fn finish(&mut self, outcome: Outcome) {
        // Free the slot before logging: the next request should not wait on our bookkeeping.
        self.permit = None;
        if let Some(exchange) = self.exchange.take() {
            match outcome {
                Outcome::Timeout => {
                    exchange.shared.metrics.upstream_error(exchange.deployment_name(), UpstreamError::timeout)
                }
                Outcome::UpstreamError => {
                    exchange.shared.metrics.upstream_error(exchange.deployment_name(), UpstreamError::error)
                }
                _ => {}
            }
            exchange.finish(self.status, outcome);
        }
    }
}

/// The body was cut off because the deployment exceeded requestTimeoutMs mid-stream.
#[derive(Debug, thiserror::Error)]
#[error("the deployment did not finish its response within requestTimeoutMs")]
pub struct BodyTimeout;

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Err(e))) => {
                this.finish(Outcome::UpstreamError);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.finish(Outcome::Complete);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.exchange.is_some() && this.deadline.as_mut().poll(cx).is_ready() {
                    this.finish(Outcome::Timeout);
                    return Poll::Ready(Some(Err(BodyTimeout.into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        // hyper may stop polling once `is_end_stream` says so, or drop the body because the caller
        // disconnected; either way the exchange is recorded exactly once.
        let outcome = if self.inner.is_end_stream() { Outcome::Complete } else { Outcome::CallerGone };
        self.finish(outcome);
    }
}
