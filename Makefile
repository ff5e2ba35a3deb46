# Atrium — every command a user or CI needs. `make help` lists them.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# The control plane binaries and the Python virtualenv are cached outside the checkout, so fresh
# clones reuse them. Cargo's target dir stays in the checkout: shared between checkouts, cargo
# would run one clone's test binaries (with that clone's paths baked in) for another.
export ATRIUM_CACHE ?= $(HOME)/.cache/atrium
CLUSTER_DIR := $(CURDIR)/target/cluster
KUBECONFIG_LOCAL := $(CLUSTER_DIR)/kubeconfig

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

.PHONY: tools
tools: ## build the local control plane binaries and helm (cached; only what is missing)
	@hack/cluster/build.sh >/dev/null

.PHONY: cluster
cluster: ## start the local control plane (kubeconfig: target/cluster/kubeconfig)
	@hack/cluster/up.sh

.PHONY: cluster-down
cluster-down: ## stop the local control plane and remove its state
	@hack/cluster/down.sh

.PHONY: build
build: ## build the operator and the router (debug)
	cargo build --workspace --bins

.PHONY: crds
crds: ## regenerate crds/ from the API types
	cargo run --quiet --bin crdgen

.PHONY: lint
lint: ## rustfmt and clippy, warnings are errors
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

.PHONY: run
run: ## run the operator against KUBECONFIG (default: the local cluster)
	KUBECONFIG=$${KUBECONFIG:-$(KUBECONFIG_LOCAL)} cargo run --bin atrium-operator

.PHONY: test
test: ## everything: lint, unit and integration tests on a fresh local control plane
	@hack/test.sh

.PHONY: bench
bench: ## operator benchmarks on a local control plane (about 1.5 h); writes docs/benchmarks.md
	@bench/run.sh

.PHONY: bench-router
bench-router: ## router vs direct backend on loopback; writes docs/benchmarks.md
	@router/bench/run.sh

.PHONY: demo
demo: ## the quickstart end to end on the local control plane, ending in a real prediction
	@hack/demo.sh

.PHONY: demo-down
demo-down: ## stop the demo and the local control plane
	@hack/demo-down.sh
