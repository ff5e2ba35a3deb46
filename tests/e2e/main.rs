//! Integration tests against the real kube-apiserver of the local control plane.
//!
//! `make test` starts the control plane and sets `KUBECONFIG`; each test gets its own namespace.
//! All of them live in one test binary so the (large) kube dependency graph links once.

mod harness;
mod helm;

mod api_validation;
mod cluster_smoke;
mod compute;
mod gitops;
mod operator;
mod runtime;
mod serving;
mod workspace;
