//! Atrium's inference router: the data plane of a `ModelDeployment` endpoint.
//!
//! It checks endpoint keys, splits traffic between deployments by weight, mirrors a share of it,
//! routes the `azureml-model-deployment` header to one deployment, enforces request timeouts and a
//! per-deployment concurrency limit with a bounded wait queue, exposes Prometheus metrics, and
//! applies configuration and key changes without a restart. See `README.md` for the behaviour.
//!
//! The operator depends on this crate only for [`config::RouterConfig`], the file it generates.
#![warn(missing_docs)]

pub mod admin;
pub mod auth;
pub mod config;
pub mod exchange;
pub mod headers;
pub mod limiter;
pub mod metrics;
pub mod mirror;
pub mod proxy;
pub mod reload;
pub mod response;
pub mod server;
pub mod split;
pub mod state;
pub mod table;
