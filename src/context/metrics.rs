//! Prometheus metrics. Labels are bounded: the controller name and the error category,
//! never object names or error text.
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub controller: &'static str,
    pub error: &'static str,
}

/// Every metric concord exports.
pub struct Metrics {
    pub registry: Registry,
    pub reconciliations: Family<ControllerLabels, Counter>,
    pub failures: Family<FailureLabels, Counter>,
    pub duration: Family<ControllerLabels, Histogram>,
    /// Out-of-band edits in Consul that concord reverted.
    pub drift_corrections: Family<ControllerLabels, Counter>,
    /// 1 while this process holds the leader Lease (or runs without leader election).
    pub leader: Gauge,
    /// Times this process became the leader.
    pub leader_transitions: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("concord");
        let reconciliations = Family::<ControllerLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let duration = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        });
        let drift_corrections = Family::<ControllerLabels, Counter>::default();
        registry.register("reconciliations", "Reconciliations run", reconciliations.clone());
        registry.register("reconcile_failures", "Reconciliations that failed, by error category", failures.clone());
        registry.register("reconcile_duration_seconds", "Time spent in one reconciliation", duration.clone());
        registry.register(
            "drift_corrections",
            "Out-of-band edits in Consul that were reverted",
            drift_corrections.clone(),
        );
        let leader = Gauge::default();
        let leader_transitions = Counter::default();
        registry.register("leader", "1 while this replica leads and runs the controllers", leader.clone());
        registry.register("leader_transitions", "Times this replica became the leader", leader_transitions.clone());
        Self { registry, reconciliations, failures, duration, drift_corrections, leader, leader_transitions }
    }
}

/// Measures one reconciliation; records its duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    start: Instant,
}

impl Metrics {
    /// Counts a reconciliation and starts its timer.
    pub fn reconcile_started(&self, controller: &'static str) -> ReconcileTimer<'_> {
        self.reconciliations.get_or_create(&ControllerLabels { controller }).inc();
        ReconcileTimer { metrics: self, controller, start: Instant::now() }
    }

    /// Counts a failed reconciliation by error category.
    pub fn reconcile_failed(&self, controller: &'static str, error: &'static str) {
        self.failures.get_or_create(&FailureLabels { controller, error }).inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .get_or_create(&ControllerLabels { controller: self.controller })
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_bounded_labels() {
        let m = Metrics::default();
        drop(m.reconcile_started("kvconfig"));
        m.reconcile_failed("kvconfig", "consul");
        let text = m.encode();
        assert!(text.contains(r#"concord_reconciliations_total{controller="kvconfig"} 1"#), "{text}");
        assert!(text.contains(r#"concord_reconcile_failures_total{controller="kvconfig",error="consul"} 1"#), "{text}");
        assert!(text.contains("concord_reconcile_duration_seconds_count{controller=\"kvconfig\"} 1"), "{text}");
    }
}
