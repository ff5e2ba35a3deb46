//! Prometheus metrics of the controllers: reconciles, errors by reason, reconcile durations.

use std::time::Duration;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: String,
    pub reason: String,
}

pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerLabel, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: Family<ControllerLabel, Histogram>,
    undecodable: Family<ControllerLabel, Counter>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("atrium");
        let reconciles = Family::<ControllerLabel, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let durations = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        });
        let undecodable = Family::<ControllerLabel, Counter>::default();
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciles run, by controller", reconciles.clone());
        registry.register("reconcile_errors", "Failed reconciles, by controller and reason", errors.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile, by controller",
            durations.clone(),
        );
        registry.register(
            "undecodable_objects",
            "Objects skipped because they could not be decoded, by controller",
            undecodable.clone(),
        );
        registry.register("leader", "1 while this replica holds the leader Lease", leader.clone());
        Self { registry, reconciles, errors, durations, undecodable, leader }
    }
}

impl Metrics {
    pub fn reconciled(&self, controller: &str, took: Duration) {
        let l = ControllerLabel { controller: controller.into() };
        self.reconciles.get_or_create(&l).inc();
        self.durations.get_or_create(&l).observe(took.as_secs_f64());
    }

    pub fn failed(&self, controller: &str, reason: &str) {
        self.errors.get_or_create(&ErrorLabels { controller: controller.into(), reason: reason.into() }).inc();
    }

    pub fn undecodable(&self, controller: &str) {
        self.undecodable.get_or_create(&ControllerLabel { controller: controller.into() }).inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.reconciled("workspace", Duration::from_millis(3));
        m.failed("workspace", "kube");
        let text = m.render();
        assert!(text.contains("atrium_reconciles_total{controller=\"workspace\"} 1"), "{text}");
        assert!(text.contains("atrium_reconcile_errors_total{controller=\"workspace\",reason=\"kube\"} 1"), "{text}");
        assert!(
            text.contains("atrium_reconcile_duration_seconds_bucket{le=\"0.005\",controller=\"workspace\"} 1"),
            "{text}"
        );
    }
}
