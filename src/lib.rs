//! Atrium: Azure Machine Learning workspaces on any Kubernetes cluster.
//!
//! `api` holds the `atrium.dev/v1alpha1` kinds; `controller` one folder per kind; `runtime` the
//! toolkit they share; `health` the operator's HTTP endpoints.

pub mod api;
pub mod context;
pub mod controller;
pub mod health;
pub mod local;
pub mod manifests;
pub mod runtime;
