//! The routing table: an immutable snapshot built from one configuration.
//!
//! Each request takes the current snapshot once and uses it to the end, so a reload never changes
//! the deployment, timeout or limits of a request already in flight; the next request sees the new
//! snapshot. Limiters are the exception on purpose: they outlive snapshots (kept by deployment
//! name) because they count requests that are still in flight from older snapshots.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use http::uri::Authority;
use prometheus_client::metrics::histogram::Histogram;

use crate::config::{AuthMode, RouterConfig, parse_base_url};
use crate::limiter::Limiter;
use crate::metrics::{DeploymentLabels, Metrics};
use crate::split::{Sampler, WeightedSplit};

/// One deployment as the proxy uses it.
#[derive(Debug)]
pub struct Deployment {
    /// Deployment name.
    pub name: String,
    /// The name as a header value, for `azureml-model-deployment` on responses (`None` if the name
    /// is not a valid header value).
    pub header_value: Option<HeaderValue>,
    /// `host:port` of the deployment's Service.
    pub authority: Authority,
    /// Path prefix of the base URL, without a trailing slash.
    pub prefix: String,
    /// Where `/score` goes.
    pub scoring_path: String,
    /// requestTimeoutMs.
    pub timeout: Duration,
    /// maxQueueWaitMs.
    pub max_queue_wait: Duration,
    /// Admission control, shared with older and newer snapshots.
    pub limiter: Arc<Limiter>,
    /// The deployment's latency histogram, looked up once here rather than per request.
    pub duration: Histogram,
}

/// Where requests go, for one configuration.
#[derive(Debug)]
pub struct RouteTable {
    /// Endpoint name.
    pub endpoint: String,
    /// Whether keys are checked.
    pub auth_mode: AuthMode,
    deployments: Vec<Arc<Deployment>>,
    split: Option<WeightedSplit>,
    mirrors: Vec<(Arc<Deployment>, Sampler)>,
}

impl RouteTable {
    /// Builds the table for a validated configuration. `limiters` holds the limiter of every
    /// deployment across reloads: existing ones get the new limit, new ones are created, and those
    /// of removed deployments are dropped (requests still using them keep them alive).
    pub fn build(
        config: &RouterConfig,
        limiters: &mut HashMap<String, Arc<Limiter>>,
        metrics: &Metrics,
    ) -> Result<Self, crate::config::ConfigError> {
        config.validate()?;
        limiters.retain(|name, _| config.deployments.iter().any(|d| &d.name == name));
        let mut deployments = Vec::with_capacity(config.deployments.len());
        for backend in &config.deployments {
            // Validated above, so this cannot fail; map it anyway rather than unwrap.
            let base = parse_base_url(&backend.url).map_err(|reason| crate::config::ConfigError::InvalidUrl {
                name: backend.name.clone(),
                url: backend.url.clone(),
                reason,
            })?;
            let labels = DeploymentLabels { deployment: backend.name.clone() };
            let limit = backend.concurrency_limit();
            let limiter = limiters
                .entry(backend.name.clone())
                .and_modify(|l| l.set_limit(limit))
                .or_insert_with(|| {
                    Limiter::new(
                        limit,
                        metrics.in_flight.get_or_create_owned(&labels),
                        metrics.queued.get_or_create_owned(&labels),
                    )
                })
                .clone();
            deployments.push(Arc::new(Deployment {
                name: backend.name.clone(),
                header_value: HeaderValue::from_str(&backend.name).ok(),
                authority: base.authority,
                prefix: base.prefix,
                scoring_path: backend.scoring_path.clone(),
                timeout: Duration::from_millis(backend.request_timeout_ms),
                max_queue_wait: Duration::from_millis(backend.max_queue_wait_ms),
                limiter,
                duration: metrics.duration.get_or_create_owned(&labels),
            }));
        }
        let index = |name: &str| deployments.iter().position(|d| d.name == name);
        let mut rng = rand::rng();
        let weights: Vec<(usize, u32)> =
            config.traffic.iter().filter_map(|(name, &w)| Some((index(name)?, w))).collect();
        let split = WeightedSplit::new(&weights, &mut rng);
        let mirrors = config
            .mirror_traffic
            .iter()
            .filter(|&(_, &percent)| percent > 0)
            .filter_map(|(name, &percent)| {
                Some((Arc::clone(&deployments[index(name)?]), Sampler::new(percent, &mut rng)))
            })
            .collect();
        Ok(Self { endpoint: config.endpoint.clone(), auth_mode: config.auth_mode, deployments, split, mirrors })
    }

    /// The deployment named by the `azureml-model-deployment` header.
    pub fn by_name(&self, name: &[u8]) -> Option<&Arc<Deployment>> {
        self.deployments.iter().find(|d| d.name.as_bytes() == name)
    }

    /// The deployment for the next weighted request; `None` when no deployment has traffic.
    pub fn pick(&self) -> Option<&Arc<Deployment>> {
        self.split.as_ref().map(|split| &self.deployments[split.pick()])
    }

    /// The mirror deployments that get a copy of the current request (usually none).
    pub fn sample_mirrors(&self) -> Vec<Arc<Deployment>> {
        self.mirrors.iter().filter(|(_, sampler)| sampler.sample()).map(|(d, _)| Arc::clone(d)).collect()
    }

    /// Whether any deployment takes weighted traffic.
    pub fn has_live_traffic(&self) -> bool {
        self.split.is_some()
    }

    /// Deployment names, for messages.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.deployments.iter().map(|d| d.name.as_str())
    }
}
