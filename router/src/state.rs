//! State shared by the data port, the admin port and the reloaders.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};
use prometheus_client::registry::Registry;

use crate::auth::Keys;
use crate::config::{AuthMode, ConfigError, RouterConfig};
use crate::limiter::Limiter;
use crate::metrics::Metrics;
use crate::table::RouteTable;

/// Everything a request handler needs, swapped atomically on reload.
#[derive(Debug)]
pub struct Shared {
    table: ArcSwapOption<RouteTable>,
    keys: ArcSwap<Keys>,
    /// Limiters by deployment name; only touched when a configuration is applied.
    limiters: Mutex<HashMap<String, Arc<Limiter>>>,
    shutting_down: AtomicBool,
    /// The router's metrics.
    pub metrics: Metrics,
    /// The registry they are in, for `/metrics`.
    pub registry: Registry,
}

impl Shared {
    /// Empty state: no configuration, no keys.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        Arc::new(Self {
            table: ArcSwapOption::empty(),
            keys: ArcSwap::from_pointee(Keys::default()),
            limiters: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
            metrics,
            registry,
        })
    }

    /// The current routing table, if a configuration has been loaded.
    pub fn table(&self) -> Option<Arc<RouteTable>> {
        self.table.load_full()
    }

    /// Builds a table for `config` and makes it current. On error the current table stays.
    pub fn apply_config(&self, config: &RouterConfig) -> Result<(), ConfigError> {
        let mut limiters = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        let table = RouteTable::build(config, &mut limiters, &self.metrics)?;
        self.table.store(Some(Arc::new(table)));
        Ok(())
    }

    /// The current keys.
    pub fn keys(&self) -> arc_swap::Guard<Arc<Keys>> {
        self.keys.load()
    }

    /// Replaces the keys.
    pub fn set_keys(&self, keys: Keys) {
        self.keys.store(Arc::new(keys));
    }

    /// Marks the router as draining: `/readyz` fails from now on.
    pub fn start_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// `Ok` when the router should receive traffic, else why not.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err("shutting down");
        }
        let table = self.table().ok_or("no configuration loaded")?;
        if !table.has_live_traffic() {
            return Err("no deployment has traffic");
        }
        if table.auth_mode == AuthMode::Key && !self.keys().any() {
            return Err("authMode is Key but no key is loaded");
        }
        Ok(())
    }
}
