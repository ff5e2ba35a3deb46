//! Prometheus metrics, served on the admin port's `/metrics`.
//!
//! Every name is prefixed `atrium_router_`. Label values are deployment names from the operator's
//! configuration and fixed words chosen here — never anything a caller sends — so a caller cannot
//! grow the number of series.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `deployment` label of requests refused before a deployment was chosen.
pub const NO_DEPLOYMENT: &str = "none";

/// Labels `{deployment}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeploymentLabels {
    /// Deployment name.
    pub deployment: String,
}

/// Labels `{deployment, code}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Deployment name, or [`NO_DEPLOYMENT`].
    pub deployment: String,
    /// HTTP status code returned to the caller.
    pub code: u16,
}

/// Why the router refused a request itself.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // the variant names are the label values
pub enum RejectReason {
    /// No configuration loaded yet (503).
    not_ready,
    /// Missing or wrong key (401).
    unauthorized,
    /// The deployment header names no deployment (404).
    unknown_deployment,
    /// No deployment has live traffic (503).
    no_traffic,
    /// The deployment has no instances (503).
    no_capacity,
    /// The wait queue was full (429).
    queue_full,
    /// No slot freed up within maxQueueWaitMs (429).
    queue_timeout,
}

/// Labels `{deployment, reason}` of rejected requests.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// Deployment name, or [`NO_DEPLOYMENT`].
    pub deployment: String,
    /// Why.
    pub reason: RejectReason,
}

/// Why a forwarded request failed without a response from the deployment.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum UpstreamError {
    /// requestTimeoutMs elapsed (504, or a cut response body).
    timeout,
    /// Connecting, sending or receiving failed (502, or a cut response body).
    error,
}

/// Labels `{deployment, reason}` of upstream failures.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    /// Deployment name.
    pub deployment: String,
    /// What failed.
    pub reason: UpstreamError,
}

/// What became of a mirrored copy.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum MirrorResult {
    /// The mirror answered with a 2xx.
    ok,
    /// The mirror answered with another status.
    bad_status,
    /// The mirror could not be reached or the exchange failed.
    error,
    /// The mirror did not answer within its requestTimeoutMs.
    timeout,
    /// Not sent: the request body was too large or of unknown length to copy.
    body_too_large,
    /// Not sent: the mirror deployment had no free slot (mirrors never queue).
    overloaded,
}

/// Labels `{deployment, result}` of mirrored copies.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MirrorLabels {
    /// The mirror deployment.
    pub deployment: String,
    /// What happened to the copy.
    pub result: MirrorResult,
}

/// Outcome of reading a configuration or keys file.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ReloadResult {
    /// Applied.
    success,
    /// Refused; the previous one is kept.
    failure,
}

/// Labels `{file, result}` of reloads.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `config` or `keys`.
    pub file: &'static str,
    /// Applied or refused.
    pub result: ReloadResult,
}

/// All of the router's metrics. Cheap to clone (every metric is an `Arc` inside).
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `requests_total{deployment, code}`: responses returned to callers.
    pub requests: Family<RequestLabels, Counter>,
    /// `request_duration_seconds{deployment}`: from request received to response body sent.
    pub duration: Family<DeploymentLabels, Histogram>,
    /// `in_flight_requests{deployment}`: requests holding a slot of the deployment, mirrored
    /// copies included.
    pub in_flight: Family<DeploymentLabels, Gauge>,
    /// `queued_requests{deployment}`: requests waiting for a slot.
    pub queued: Family<DeploymentLabels, Gauge>,
    /// `rejected_requests_total{deployment, reason}`: requests refused by the router itself.
    pub rejected: Family<RejectLabels, Counter>,
    /// `upstream_errors_total{deployment, reason}`: forwarded requests that failed.
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    /// `mirrored_requests_total{deployment, result}`: mirrored copies by outcome.
    pub mirrored: Family<MirrorLabels, Counter>,
    /// `config_reloads_total{file, result}`.
    pub reloads: Family<ReloadLabels, Counter>,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        fn latency_histogram() -> Histogram {
            // 0.25 ms … ~65 s: resolves the router's own sub-millisecond overhead as well as slow
            // models.
            Histogram::new(exponential_buckets(0.000_25, 2.0, 19))
        }
        let metrics = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            in_flight: Family::default(),
            queued: Family::default(),
            rejected: Family::default(),
            upstream_errors: Family::default(),
            mirrored: Family::default(),
            reloads: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("atrium_router");
        r.register("requests", "Responses returned to callers", metrics.requests.clone());
        r.register(
            "request_duration_seconds",
            "Time from receiving a request to sending the last byte of its response",
            metrics.duration.clone(),
        );
        r.register(
            "in_flight_requests",
            "Requests holding a concurrency slot of the deployment (mirrored copies included)",
            metrics.in_flight.clone(),
        );
        r.register("queued_requests", "Requests waiting for a concurrency slot", metrics.queued.clone());
        r.register("rejected_requests", "Requests refused by the router", metrics.rejected.clone());
        r.register("upstream_errors", "Forwarded requests that failed or timed out", metrics.upstream_errors.clone());
        r.register("mirrored_requests", "Mirrored copies of requests, by outcome", metrics.mirrored.clone());
        r.register("config_reloads", "Reads of changed configuration and key files", metrics.reloads.clone());
        metrics
    }

    /// Counts a request refused by the router.
    pub fn reject(&self, deployment: &str, reason: RejectReason) {
        self.rejected.get_or_create(&RejectLabels { deployment: deployment.to_owned(), reason }).inc();
    }

    /// Counts a failed forward.
    pub fn upstream_error(&self, deployment: &str, reason: UpstreamError) {
        self.upstream_errors.get_or_create(&UpstreamErrorLabels { deployment: deployment.to_owned(), reason }).inc();
    }

    /// Counts a mirrored copy's outcome.
    pub fn mirror(&self, deployment: &str, result: MirrorResult) {
        self.mirrored.get_or_create(&MirrorLabels { deployment: deployment.to_owned(), result }).inc();
    }

    /// Counts a reload.
    pub fn reload(&self, file: &'static str, result: ReloadResult) {
        self.reloads.get_or_create(&ReloadLabels { file, result }).inc();
    }
}

/// Renders the registry in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}
