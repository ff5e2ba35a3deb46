//! Router configuration: the contract between the operator and the router.
//!
//! The operator renders one [`RouterConfig`] per `ModelDeployment` into a ConfigMap as JSON
//! (camelCase field names); the router reads it from the mounted file and re-reads it whenever its
//! content changes. Both sides use these types, so they cannot drift apart.
//!
//! Unknown fields are ignored on purpose: during an operator upgrade a newer operator may write a
//! field that an older router does not know yet, and the router must keep serving.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// How callers authenticate to the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum AuthMode {
    /// Callers send `Authorization: Bearer <key>` with the primary or the secondary key.
    #[default]
    Key,
    /// No authentication: every caller is accepted.
    None,
}

/// The whole configuration of one endpoint's router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouterConfig {
    /// Name of the endpoint (the `ModelDeployment`); used in messages and logs.
    pub endpoint: String,
    /// Whether callers must present a key.
    #[serde(default)]
    pub auth_mode: AuthMode,
    /// Every deployment of the endpoint, whether or not it receives traffic. A deployment with no
    /// weight can still be reached with the `azureml-model-deployment` header.
    #[serde(default)]
    pub deployments: Vec<Backend>,
    /// Live traffic: deployment name → percent. The percents sum to 100, or to 0 when no deployment
    /// takes live traffic (then only header-routed requests are served).
    #[serde(default)]
    pub traffic: BTreeMap<String, u32>,
    /// Mirrored traffic: deployment name → percent of live requests copied to it. The copies'
    /// responses are discarded. A deployment is live or mirrored, not both.
    #[serde(default)]
    pub mirror_traffic: BTreeMap<String, u32>,
}

/// One deployment behind the router, as a backend to proxy to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    /// Deployment name, unique within the endpoint; the value of the `azureml-model-deployment` header.
    pub name: String,
    /// Base URL of the deployment's Service, e.g. `http://blue.ws.svc:80`. Only `http` is supported;
    /// a path, if any, is prefixed to every forwarded path.
    pub url: String,
    /// Path that requests to the endpoint's `/score` are forwarded to (e.g. `/score`, or
    /// `/v2/models/m/infer`). Other paths are forwarded unchanged.
    #[serde(default = "default_scoring_path")]
    pub scoring_path: String,
    /// Number of instances (pods) of the deployment; with `maxConcurrentRequestsPerInstance` it
    /// bounds the requests in flight to the deployment. Zero means the deployment cannot serve.
    #[serde(default = "default_instances")]
    pub instances: u32,
    /// Time allowed for the deployment to answer, from the moment the request is sent to it until
    /// its response has been fully received. Must be positive.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Requests one instance handles at once. At least 1.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent_requests_per_instance: u32,
    /// Longest time a request waits for a free slot before it is refused with 429. Zero: never wait.
    #[serde(default = "default_max_queue_wait_ms")]
    pub max_queue_wait_ms: u64,
}

/// Whether `path` can be sent as the path of a request: starts with `/`, parses as a request
/// target, and has no query or fragment (`/score` requests keep their own query).
fn is_url_path(path: &str) -> bool {
    path.starts_with('/')
        && http::uri::PathAndQuery::try_from(path).is_ok_and(|pq| pq.query().is_none() && pq.as_str() == path)
}

fn default_scoring_path() -> String {
    "/score".to_owned()
}
fn default_instances() -> u32 {
    1
}
fn default_request_timeout_ms() -> u64 {
    5_000
}
fn default_max_concurrent() -> u32 {
    1
}
fn default_max_queue_wait_ms() -> u64 {
    500
}

/// Why a configuration was refused. The messages are meant for the person who wrote the
/// `ModelDeployment`, so they name the offending deployment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file is not valid JSON or does not have the expected shape.
    #[error("invalid router configuration: {0}")]
    Parse(String),
    /// A deployment has an empty name.
    #[error("a deployment has an empty name")]
    EmptyName,
    /// Two deployments share a name.
    #[error("deployment {0:?} is listed more than once")]
    DuplicateName(String),
    /// A deployment's URL cannot be used.
    #[error("deployment {name:?}: invalid url {url:?}: {reason}")]
    InvalidUrl {
        /// The deployment.
        name: String,
        /// The URL as written.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A deployment's scoring path is not a URL path.
    #[error("deployment {name:?}: scoringPath {path:?} must be a URL path: '/' and then no spaces, '?' or '#'")]
    InvalidScoringPath {
        /// The deployment.
        name: String,
        /// The path as written.
        path: String,
    },
    /// A deployment's request timeout is zero.
    #[error("deployment {0:?}: requestTimeoutMs must be greater than 0")]
    ZeroTimeout(String),
    /// A deployment's per-instance concurrency is zero.
    #[error("deployment {0:?}: maxConcurrentRequestsPerInstance must be at least 1")]
    ZeroConcurrency(String),
    /// `traffic` or `mirrorTraffic` names a deployment that is not in `deployments`.
    #[error("{map} names deployment {name:?}, which is not one of the endpoint's deployments")]
    UnknownDeployment {
        /// `traffic` or `mirrorTraffic`.
        map: &'static str,
        /// The unknown name.
        name: String,
    },
    /// The live weights do not sum to 100 or 0.
    #[error("traffic weights sum to {0}; they must sum to 100 (or 0 for no live traffic)")]
    TrafficSum(u64),
    /// A mirror percent is over 100.
    #[error("mirrorTraffic for deployment {name:?} is {percent}; it must be between 0 and 100")]
    MirrorPercent {
        /// The deployment.
        name: String,
        /// The percent as written.
        percent: u32,
    },
    /// A deployment has both live and mirrored traffic.
    #[error("deployment {0:?} has both live traffic and mirrored traffic; it can only have one")]
    LiveAndMirrored(String),
}

impl RouterConfig {
    /// Parses and validates a configuration from the JSON the operator writes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let config: RouterConfig = serde_json::from_slice(bytes).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: names, URLs, limits and weights. Returns the first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut names = BTreeSet::new();
        for backend in &self.deployments {
            backend.validate()?;
            if !names.insert(backend.name.as_str()) {
                return Err(ConfigError::DuplicateName(backend.name.clone()));
            }
        }
        for (map, weights) in [("traffic", &self.traffic), ("mirrorTraffic", &self.mirror_traffic)] {
            if let Some(name) = weights.keys().find(|n| !names.contains(n.as_str())) {
                return Err(ConfigError::UnknownDeployment { map, name: name.clone() });
            }
        }
        // Summed in u64 so that absurd u32 weights cannot wrap around to 100.
        let sum: u64 = self.traffic.values().map(|&w| u64::from(w)).sum();
        if sum != 100 && sum != 0 {
            return Err(ConfigError::TrafficSum(sum));
        }
        for (name, &percent) in &self.mirror_traffic {
            if percent > 100 {
                return Err(ConfigError::MirrorPercent { name: name.clone(), percent });
            }
            // A zero entry on either side is "not live" / "not mirrored": only both positive conflict.
            if percent > 0 && self.traffic.get(name).is_some_and(|&w| w > 0) {
                return Err(ConfigError::LiveAndMirrored(name.clone()));
            }
        }
        Ok(())
    }

    /// Whether any deployment takes live (weighted) traffic.
    pub fn has_live_traffic(&self) -> bool {
        self.traffic.values().any(|&w| w > 0)
    }
}

impl Backend {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::EmptyName);
        }
        parse_base_url(&self.url).map_err(|reason| ConfigError::InvalidUrl {
            name: self.name.clone(),
            url: self.url.clone(),
            reason,
        })?;
        if !is_url_path(&self.scoring_path) {
            return Err(ConfigError::InvalidScoringPath { name: self.name.clone(), path: self.scoring_path.clone() });
        }
        if self.request_timeout_ms == 0 {
            return Err(ConfigError::ZeroTimeout(self.name.clone()));
        }
        if self.max_concurrent_requests_per_instance == 0 {
            return Err(ConfigError::ZeroConcurrency(self.name.clone()));
        }
        Ok(())
    }

    /// Requests allowed in flight to this deployment at once.
    pub fn concurrency_limit(&self) -> usize {
        let limit = u64::from(self.instances) * u64::from(self.max_concurrent_requests_per_instance);
        usize::try_from(limit).unwrap_or(usize::MAX)
    }
}

/// A backend base URL split into the parts the proxy needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BaseUrl {
    pub(crate) authority: http::uri::Authority,
    /// Path prefix without a trailing slash; empty for none.
    pub(crate) prefix: String,
}

/// Parses `http://host[:port][/prefix]`. Only plain HTTP: backends are in-cluster Services and the
/// router's client has no TLS.
pub(crate) fn parse_base_url(url: &str) -> Result<BaseUrl, String> {
    let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| e.to_string())?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => return Err(format!("scheme {other:?} is not supported, use http")),
        None => return Err("missing scheme, expected http://host:port".to_owned()),
    }
    let authority = uri.authority().cloned().ok_or_else(|| "missing host".to_owned())?;
    if authority.host().is_empty() {
        return Err("missing host".to_owned());
    }
    if uri.query().is_some() {
        return Err("a query string is not allowed".to_owned());
    }
    let prefix = uri.path().trim_end_matches('/').to_owned();
    Ok(BaseUrl { authority, prefix })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(name: &str) -> Backend {
        Backend {
            name: name.to_owned(),
            url: format!("http://{name}.ns.svc:80"),
            scoring_path: "/score".to_owned(),
            instances: 1,
            request_timeout_ms: 5000,
            max_concurrent_requests_per_instance: 1,
            max_queue_wait_ms: 500,
        }
    }

    fn config(traffic: &[(&str, u32)], mirror: &[(&str, u32)]) -> RouterConfig {
        RouterConfig {
            endpoint: "ep".to_owned(),
            auth_mode: AuthMode::Key,
            deployments: vec![backend("blue"), backend("green")],
            traffic: traffic.iter().map(|(n, w)| ((*n).to_owned(), *w)).collect(),
            mirror_traffic: mirror.iter().map(|(n, w)| ((*n).to_owned(), *w)).collect(),
        }
    }

    #[test]
    fn accepts_valid_configs() {
        assert_eq!(config(&[("blue", 100)], &[]).validate(), Ok(()));
        assert_eq!(config(&[("blue", 70), ("green", 30)], &[]).validate(), Ok(()));
        assert_eq!(config(&[], &[]).validate(), Ok(()));
        assert_eq!(config(&[("blue", 0), ("green", 0)], &[]).validate(), Ok(()));
        assert_eq!(config(&[("blue", 100)], &[("green", 20)]).validate(), Ok(()));
        // Zero on one side is not a conflict.
        assert_eq!(config(&[("blue", 100), ("green", 0)], &[("green", 10)]).validate(), Ok(()));
    }

    #[test]
    fn rejects_bad_sums() {
        assert_eq!(config(&[("blue", 60), ("green", 30)], &[]).validate(), Err(ConfigError::TrafficSum(90)));
        // Would wrap to 100 in u32 arithmetic.
        assert_eq!(
            config(&[("blue", u32::MAX), ("green", 101)], &[]).validate(),
            Err(ConfigError::TrafficSum(u64::from(u32::MAX) + 101))
        );
    }

    #[test]
    fn rejects_unknown_names() {
        let err = config(&[("red", 100)], &[]).validate().unwrap_err();
        assert_eq!(err, ConfigError::UnknownDeployment { map: "traffic", name: "red".into() });
        assert!(err.to_string().contains("\"red\""), "{err}");
        let err = config(&[("blue", 100)], &[("red", 10)]).validate().unwrap_err();
        assert_eq!(err, ConfigError::UnknownDeployment { map: "mirrorTraffic", name: "red".into() });
    }

    #[test]
    fn rejects_live_and_mirrored() {
        let err = config(&[("blue", 50), ("green", 50)], &[("green", 10)]).validate().unwrap_err();
        assert_eq!(err, ConfigError::LiveAndMirrored("green".into()));
        assert!(config(&[("blue", 100)], &[("green", 101)]).validate().is_err());
    }

    #[test]
    fn rejects_bad_backends() {
        let mut c = config(&[("blue", 100)], &[]);
        c.deployments.push(backend("blue"));
        assert_eq!(c.validate(), Err(ConfigError::DuplicateName("blue".into())));

        for url in ["https://x:443", "x.svc:80", "http://", "not a url", "http://x/p?q=1"] {
            let mut c = config(&[("blue", 100)], &[]);
            c.deployments[0].url = url.to_owned();
            assert!(matches!(c.validate(), Err(ConfigError::InvalidUrl { .. })), "{url} should be refused");
        }

        for path in ["score", "/my score", "/score?x=1", "/score#top", "/a\tb"] {
            let mut c = config(&[("blue", 100)], &[]);
            c.deployments[0].scoring_path = path.into();
            assert!(matches!(c.validate(), Err(ConfigError::InvalidScoringPath { .. })), "{path:?} should be refused");
        }
        for path in ["/", "/score", "/v1/models/iris:predict", "/api/%20x"] {
            let mut c = config(&[("blue", 100)], &[]);
            c.deployments[0].scoring_path = path.into();
            assert_eq!(c.validate(), Ok(()), "{path:?}");
        }

        let mut c = config(&[("blue", 100)], &[]);
        c.deployments[0].request_timeout_ms = 0;
        assert_eq!(c.validate(), Err(ConfigError::ZeroTimeout("blue".into())));

        let mut c = config(&[("blue", 100)], &[]);
        c.deployments[0].max_concurrent_requests_per_instance = 0;
        assert_eq!(c.validate(), Err(ConfigError::ZeroConcurrency("blue".into())));

        let mut c = config(&[("blue", 100)], &[]);
        c.deployments[0].name.clear();
        assert_eq!(c.validate(), Err(ConfigError::EmptyName));
    }

    #[test]
    fn json_round_trip_uses_camel_case_and_defaults() {
        let json = br#"{
            "endpoint": "ep",
            "authMode": "None",
            "deployments": [{"name": "blue", "url": "http://blue:8080/prefix/"}],
            "traffic": {"blue": 100},
            "someFutureField": true
        }"#;
        let c = RouterConfig::from_json(json).unwrap();
        assert_eq!(c.auth_mode, AuthMode::None);
        assert!(c.mirror_traffic.is_empty());
        let b = &c.deployments[0];
        assert_eq!((b.scoring_path.as_str(), b.instances, b.request_timeout_ms), ("/score", 1, 5000));
        assert_eq!((b.max_concurrent_requests_per_instance, b.max_queue_wait_ms), (1, 500));
        assert_eq!(parse_base_url(&b.url).unwrap().prefix, "/prefix");

        let text = serde_json::to_string(&c).unwrap();
        assert!(text.contains("\"mirrorTraffic\"") && text.contains("\"requestTimeoutMs\""));
        assert_eq!(RouterConfig::from_json(text.as_bytes()).unwrap(), c);
    }

    #[test]
    fn parse_errors_are_reported() {
        assert!(matches!(RouterConfig::from_json(b"{"), Err(ConfigError::Parse(_))));
        assert!(matches!(
            RouterConfig::from_json(br#"{"endpoint":"e","authMode":"Token"}"#),
            Err(ConfigError::Parse(_))
        ));
    }

    #[test]
    fn concurrency_limit_multiplies() {
        let mut b = backend("b");
        b.instances = 3;
        b.max_concurrent_requests_per_instance = 4;
        assert_eq!(b.concurrency_limit(), 12);
        b.instances = 0;
        assert_eq!(b.concurrency_limit(), 0);
    }
}
