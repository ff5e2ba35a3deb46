//! Applying configuration and key changes without a restart.
//!
//! Kubernetes updates ConfigMap and Secret volumes by writing a new directory and swapping a
//! symlink, so file events and inode numbers are unreliable signals; the router re-reads the files
//! every interval and compares their content with what it last saw. The files are small, and the
//! reads land on a tmpfs, so this costs next to nothing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Keys;
use crate::config::RouterConfig;
use crate::metrics::ReloadResult;
use crate::state::Shared;

/// Watches the configuration file and the keys directory.
#[derive(Debug)]
pub struct Reloader {
    config_path: PathBuf,
    keys_dir: Option<PathBuf>,
    /// Content last read, valid or not: a bad file is reported once, not every interval.
    last_config: Option<Vec<u8>>,
    last_config_read_error: Option<String>,
    last_keys_error: Option<String>,
}

impl Reloader {
    /// A reloader for the given files; nothing is read until [`Reloader::poll`].
    pub fn new(config_path: PathBuf, keys_dir: Option<PathBuf>) -> Self {
        Self { config_path, keys_dir, last_config: None, last_config_read_error: None, last_keys_error: None }
    }

    /// Reads both sources once and applies what changed.
    pub fn poll(&mut self, shared: &Shared) {
        self.poll_config(shared);
        self.poll_keys(shared);
    }

    fn poll_config(&mut self, shared: &Shared) {
        // A blocking read on the runtime, on purpose: a few KiB from a tmpfs once a second is
        // cheaper than a hop to the blocking pool.
        let bytes = match std::fs::read(&self.config_path) {
            Ok(bytes) => {
                self.last_config_read_error = None;
                bytes
            }
            Err(e) => {
                let message = e.to_string();
                if self.last_config_read_error.as_ref() != Some(&message) {
                    tracing::error!(
                        path = %self.config_path.display(), error = %message,
                        "cannot read the router configuration; keeping the last good one"
                    );
                    shared.metrics.reload("config", ReloadResult::failure);
                    self.last_config_read_error = Some(message);
                }
                return;
            }
        };
        if self.last_config.as_ref() == Some(&bytes) {
            return;
        }
        let outcome = RouterConfig::from_json(&bytes).and_then(|config| shared.apply_config(&config).map(|()| config));
        match outcome {
            Ok(config) => {
                shared.metrics.reload("config", ReloadResult::success);
                tracing::info!(
                    endpoint = %config.endpoint,
                    traffic = ?config.traffic,
                    mirror_traffic = ?config.mirror_traffic,
                    deployments = config.deployments.len(),
                    "router configuration applied"
                );
            }
            Err(e) => {
                shared.metrics.reload("config", ReloadResult::failure);
                tracing::error!(
                    path = %self.config_path.display(), error = %e,
                    "invalid router configuration; keeping the last good one"
                );
            }
        }
        self.last_config = Some(bytes);
    }

    fn poll_keys(&mut self, shared: &Shared) {
        let Some(dir) = &self.keys_dir else { return };
        match Keys::load(dir) {
            Ok(keys) => {
                self.last_keys_error = None;
                if **shared.keys() != keys {
                    if !keys.any() {
                        tracing::warn!(dir = %dir.display(), "no key found: every request will get 401");
                    }
                    shared.set_keys(keys);
                    shared.metrics.reload("keys", ReloadResult::success);
                    tracing::info!(dir = %dir.display(), "keys applied");
                }
            }
            Err(e) => {
                let message = e.to_string();
                if self.last_keys_error.as_ref() != Some(&message) {
                    shared.metrics.reload("keys", ReloadResult::failure);
                    tracing::error!(dir = %dir.display(), error = %message, "cannot read keys; keeping the last ones");
                    self.last_keys_error = Some(message);
                }
            }
        }
    }

    /// Polls forever, every `interval`.
    pub async fn run(mut self, shared: Arc<Shared>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; the files were just read at start-up.
        ticker.tick().await;
        loop {
            ticker.tick().await;
            self.poll(&shared);
        }
    }
}
