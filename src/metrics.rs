//! Prometheus metrics, served as text on `/metrics`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadyLabel {
    ready: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

/// The operator's metrics. Labels never carry a secret: reasons are fixed CamelCase words.
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    errors: Family<ReasonLabel, Counter>,
    duration: Histogram,
    buckets: Family<ReadyLabel, Gauge>,
    nats_connections: Gauge,
    nats_requests: Family<KindLabel, Counter>,
    api_writes: Family<KindLabel, Counter>,
    fair_share_deferred: Counter,
    ready_by_object: Mutex<HashMap<String, &'static str>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `jetstream_kv` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("jetstream_kv");
        let reconciles = Counter::default();
        let errors = Family::<ReasonLabel, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let buckets = Family::<ReadyLabel, Gauge>::default();
        let nats_connections = Gauge::default();
        let nats_requests = Family::<KindLabel, Counter>::default();
        let api_writes = Family::<KindLabel, Counter>::default();
        let fair_share_deferred = Counter::default();
        registry.register(
            "fair_share_deferred",
            "Reconciles put back because their namespace held its share of the workers",
            fair_share_deferred.clone(),
        );
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that ended with a reason other than Ready, by reason",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time a reconcile takes",
            duration.clone(),
        );
        registry.register(
            "buckets",
            "KeyValueBuckets by Ready condition",
            buckets.clone(),
        );
        registry.register(
            "nats_connections",
            "Open NATS connections",
            nats_connections.clone(),
        );
        registry.register(
            "nats_requests",
            "JetStream API requests sent, by kind (info, create, update, delete)",
            nats_requests.clone(),
        );
        registry.register(
            "api_writes",
            "Writes to the Kubernetes API, by kind",
            api_writes.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
            buckets,
            nats_connections,
            nats_requests,
            api_writes,
            fair_share_deferred,
            ready_by_object: Mutex::default(),
        }
    }

    /// Records one reconcile: its duration and, unless it ended Ready, its reason.
    pub fn reconciled(&self, elapsed: Duration, error_reason: Option<&str>) {
        self.reconciles.inc();
        self.duration.observe(elapsed.as_secs_f64());
        if let Some(reason) = error_reason {
            self.errors
                .get_or_create(&ReasonLabel {
                    reason: reason.to_string(),
                })
                .inc();
        }
    }

    /// Records the Ready state of one KeyValueBucket (`None` when it is gone). Constant time: it
    /// runs after every reconcile of every Component (counting the map each time made a pass
    /// over 100,000 Components quadratic).
    pub fn set_ready(&self, object: &str, ready: Option<bool>) {
        let state = ready.map(|r| if r { "true" } else { "false" });
        let mut map = self
            .ready_by_object
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let previous = match state {
            Some(s) if map.get(object) == Some(&s) => return,
            Some(s) => map.insert(object.to_string(), s),
            None => map.remove(object),
        };
        // Both series exist from the first call, as before.
        for label in ["true", "false"] {
            let gauge = self.buckets.get_or_create(&ReadyLabel {
                ready: label.into(),
            });
            if previous == Some(label) {
                gauge.dec();
            }
            if state == Some(label) {
                gauge.inc();
            }
        }
    }

    /// Sets the number of open NATS connections.
    pub fn set_nats_connections(&self, n: usize) {
        self.nats_connections.set(n as i64);
    }

    /// Counts one JetStream API request.
    pub fn nats_request(&self, kind: &str) {
        self.nats_requests
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }

    /// Counts one write to the Kubernetes API.
    pub fn api_write(&self, kind: &str) {
        self.api_writes
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }

    /// Counts a reconcile put back because its namespace held its share of the workers.
    pub fn fair_share_deferred(&self) {
        self.fair_share_deferred.inc();
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reconciles_errors_and_buckets() {
        let m = Metrics::new();
        m.reconciled(Duration::from_millis(3), None);
        m.reconciled(Duration::from_millis(3), Some("NatsUnavailable"));
        m.set_ready("a/x", Some(true));
        m.set_ready("a/y", Some(false));
        m.set_ready("a/y", None);
        let text = m.encode();
        assert!(text.contains("jetstream_kv_reconciles_total 2"), "{text}");
        assert!(
            text.contains(r#"jetstream_kv_reconcile_errors_total{reason="NatsUnavailable"} 1"#)
        );
        assert!(text.contains(r#"jetstream_kv_buckets{ready="true"} 1"#));
        assert!(text.contains(r#"jetstream_kv_buckets{ready="false"} 0"#));
    }
}
