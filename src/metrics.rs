//! Prometheus metrics, served as text on `/metrics`.
//!
//! Every series has a bounded set of labels (kinds, fixed CamelCase reasons, Stalled or
//! Reconciling): 100,000 Components are a handful of series, never one per object. The one
//! exception is opt-in and capped: per-stream usage ([`Metrics::enable_usage`]), for at most the
//! number of Components the admin gives. The chart's
//! alerts and dashboard (`charts/jetstream-kv-operator/templates/prometheusrule.yaml`,
//! `dashboards/jetstream-kv-operator.json`) name only these, and `tests/alerts.rs` holds them to
//! a live scrape.

use std::collections::{HashMap, HashSet};
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotReadyLabels {
    kind: String,
    reason: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UsageLabels {
    kind: String,
    component_namespace: String,
    component: String,
    stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

/// What the metrics keep of one Component's status: its Ready condition and, when not Ready,
/// its reason and whether someone must act.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectState {
    /// The kind of the operator's object: `KeyValueBucket` or `JetStreamStream`.
    pub kind: std::borrow::Cow<'static, str>,
    /// Ready=True.
    pub ready: bool,
    /// The Ready condition's reason.
    pub reason: String,
    /// Stalled=True (someone must act), as opposed to Reconciling (the operator retries).
    pub stalled: bool,
}

impl ObjectState {
    fn ready_label(&self) -> &'static str {
        if self.ready { "true" } else { "false" }
    }

    fn not_ready(&self) -> Option<NotReadyLabels> {
        (!self.ready).then(|| NotReadyLabels {
            kind: self.kind.to_string(),
            reason: self.reason.clone(),
            state: if self.stalled {
                "Stalled"
            } else {
                "Reconciling"
            }
            .to_string(),
        })
    }
}

/// How full one stream of a Component is, as its last reconcile read it from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamUsage {
    /// The stream's name (`KV_<bucket>` for a bucket).
    pub stream: String,
    /// Bytes stored.
    pub bytes: u64,
    /// The stream's size limit; None when unlimited.
    pub max_bytes: Option<u64>,
}

/// The opt-in per-stream usage series, for at most `limit` Components.
struct Usage {
    limit: usize,
    bytes: Family<UsageLabels, Gauge>,
    max_bytes: Family<UsageLabels, Gauge>,
    left_out: Gauge,
    shown: Mutex<UsageShown>,
}

/// Which Components have series, and which were left out for the cap.
#[derive(Default)]
struct UsageShown {
    series: HashMap<String, Vec<UsageLabels>>,
    left_out: HashSet<String>,
}

/// How an admission review ended, for `jetstream_kv_webhook_reviews_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewResult {
    /// Allowed.
    Allowed,
    /// Refused: the Component is broken (the webhook did its job).
    Denied,
    /// Not a review the webhook could answer (bad path, method, body or encoding).
    Error,
}

impl ReviewResult {
    fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Error => "error",
        }
    }
}

/// Called before each scrape to refresh gauges read from elsewhere (the connection pool).
type ScrapeHook = Box<dyn Fn(&Metrics) + Send + Sync>;

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
    not_ready: Family<NotReadyLabels, Gauge>,
    api_write_errors: Counter,
    nats_connections_down: Gauge,
    leader: Gauge,
    ready: Gauge,
    webhook_reviews: Family<ResultLabel, Counter>,
    webhook_duration: Histogram,
    resident_memory: Gauge,
    memory_limit: Gauge,
    memory_limit_registered: bool,
    usage: Option<Usage>,
    by_object: Mutex<HashMap<String, ObjectState>>,
    scrape_hooks: Mutex<Vec<ScrapeHook>>,
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
        let not_ready = Family::<NotReadyLabels, Gauge>::default();
        let api_write_errors = Counter::default();
        let nats_connections_down = Gauge::default();
        let leader = Gauge::default();
        let ready = Gauge::default();
        let webhook_reviews = Family::<ResultLabel, Counter>::default();
        let webhook_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        let resident_memory = Gauge::default();
        let memory_limit = Gauge::default();
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
            "KeyValueBuckets and JetStreamStreams by Ready condition",
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
        registry.register(
            "not_ready",
            "Components whose KeyValueBucket or JetStreamStream is not Ready, by kind, reason and \
             state (Stalled: someone must act; Reconciling: the operator retries)",
            not_ready.clone(),
        );
        registry.register(
            "api_write_errors",
            "Writes to the Kubernetes API that failed (the reconcile is retried with back-off)",
            api_write_errors.clone(),
        );
        registry.register(
            "nats_connections_down",
            "Open NATS connections whose link is down (the client reconnects in the background)",
            nats_connections_down.clone(),
        );
        registry.register(
            "leader",
            "1 while this process reconciles (holds the leader Lease, or runs without election)",
            leader.clone(),
        );
        registry.register(
            "ready",
            "1 while /readyz answers ready (caches synced, every CRD current)",
            ready.clone(),
        );
        registry.register(
            "webhook_reviews",
            "Admission reviews the webhook answered, by result (allowed, denied, error)",
            webhook_reviews.clone(),
        );
        registry.register(
            "webhook_review_duration_seconds",
            "Time the webhook takes to answer an admission review",
            webhook_duration.clone(),
        );
        registry.register(
            "resident_memory_bytes",
            "Resident memory of the operator's process",
            resident_memory.clone(),
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
            not_ready,
            api_write_errors,
            nats_connections_down,
            leader,
            ready,
            webhook_reviews,
            webhook_duration,
            resident_memory,
            memory_limit,
            memory_limit_registered: false,
            usage: None,
            by_object: Mutex::default(),
            scrape_hooks: Mutex::default(),
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

    /// Records the status of one Component's KeyValueBucket or JetStreamStream (`None` when it
    /// is gone). Constant time: it runs after every reconcile of every Component (counting the
    /// map each time made a pass over 100,000 Components quadratic).
    pub fn set_state(&self, object: &str, state: Option<ObjectState>) {
        if state.is_none() {
            self.set_usage(object, None);
        }
        let mut map = self.by_object.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(object) == state.as_ref() {
            return;
        }
        let previous = match &state {
            Some(s) => map.insert(object.to_string(), s.clone()),
            None => map.remove(object),
        };
        // Both `buckets` series exist from the first call, as before.
        for label in ["true", "false"] {
            let gauge = self.buckets.get_or_create(&ReadyLabel {
                ready: label.into(),
            });
            if previous.as_ref().map(ObjectState::ready_label) == Some(label) {
                gauge.dec();
            }
            if state.as_ref().map(ObjectState::ready_label) == Some(label) {
                gauge.inc();
            }
        }
        if let Some(labels) = previous.as_ref().and_then(ObjectState::not_ready) {
            self.not_ready.get_or_create(&labels).dec();
        }
        if let Some(labels) = state.as_ref().and_then(ObjectState::not_ready) {
            self.not_ready.get_or_create(&labels).inc();
        }
    }

    /// Counts a write to the Kubernetes API that failed.
    pub fn api_write_failed(&self) {
        self.api_write_errors.inc();
    }

    /// Sets the number of open NATS connections whose link is down.
    pub fn set_nats_connections_down(&self, n: usize) {
        self.nats_connections_down.set(n as i64);
    }

    /// Marks this process as the one that reconciles (or not any more).
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Records one admission review: how it ended and how long it took.
    pub fn webhook_reviewed(&self, result: ReviewResult, elapsed: Duration) {
        self.webhook_reviews
            .get_or_create(&ResultLabel {
                result: result.as_str().into(),
            })
            .inc();
        self.webhook_duration.observe(elapsed.as_secs_f64());
    }

    /// The memory limit of the operator's container in bytes (the chart passes the pod's
    /// `limits.memory`); `jetstream_kv_memory_limit_bytes` is exposed only once it is known.
    pub fn set_memory_limit(&mut self, bytes: u64) {
        if !std::mem::replace(&mut self.memory_limit_registered, true) {
            self.registry.register(
                "memory_limit_bytes",
                "Memory limit of the operator's container (the pod's limits.memory)",
                self.memory_limit.clone(),
            );
        }
        self.memory_limit
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Exposes how full each Component's bucket or streams are (`jetstream_kv_stream_bytes` and
    /// `jetstream_kv_stream_max_bytes`, labelled by kind, the Component's namespace and name and
    /// the stream), for at most `limit` Components: the series a near-full alert and dashboard
    /// need, bounded however many Components there are. Components beyond the cap are counted in
    /// `jetstream_kv_stream_usage_left_out`. `limit` 0 keeps them off.
    pub fn enable_usage(&mut self, limit: usize) {
        if limit == 0 || self.usage.is_some() {
            return;
        }
        let usage = Usage {
            limit,
            bytes: Family::default(),
            max_bytes: Family::default(),
            left_out: Gauge::default(),
            shown: Mutex::default(),
        };
        self.registry.register(
            "stream_bytes",
            "Bytes stored in a Component's bucket or stream, as its last reconcile read them \
             (opt-in, for a capped number of Components)",
            usage.bytes.clone(),
        );
        self.registry.register(
            "stream_max_bytes",
            "The size limit (max-bytes) of a Component's bucket or stream, when it has one \
             (opt-in, for a capped number of Components)",
            usage.max_bytes.clone(),
        );
        self.registry.register(
            "stream_usage_left_out",
            "Components whose usage is not exposed because the cap on usage series was reached",
            usage.left_out.clone(),
        );
        self.usage = Some(usage);
    }

    /// Whether per-stream usage is exposed ([`enable_usage`](Self::enable_usage)).
    pub fn usage_enabled(&self) -> bool {
        self.usage.is_some()
    }

    /// Records how full the streams of `object` (a Component's `namespace/name`) are, or drops
    /// its series (`None`: gone, or the server not reached, so the usage is not known). A no-op
    /// unless usage is enabled. Constant time in the number of Components.
    pub fn set_usage(&self, object: &str, usage: Option<(&str, &[StreamUsage])>) {
        let Some(u) = &self.usage else { return };
        let mut shown = u.shown.lock().unwrap_or_else(|e| e.into_inner());
        let old = shown.series.remove(object).unwrap_or_default();
        let Some((kind, streams)) = usage else {
            for labels in &old {
                u.bytes.remove(labels);
                u.max_bytes.remove(labels);
            }
            shown.left_out.remove(object);
            u.left_out.set(shown.left_out.len() as i64);
            return;
        };
        if old.is_empty() && shown.series.len() >= u.limit {
            shown.left_out.insert(object.to_string());
            u.left_out.set(shown.left_out.len() as i64);
            return;
        }
        let (namespace, name) = object.split_once('/').unwrap_or(("", object));
        let new: Vec<UsageLabels> = streams
            .iter()
            .map(|s| UsageLabels {
                kind: kind.to_string(),
                component_namespace: namespace.to_string(),
                component: name.to_string(),
                stream: s.stream.clone(),
            })
            .collect();
        for labels in old.iter().filter(|l| !new.contains(l)) {
            u.bytes.remove(labels);
            u.max_bytes.remove(labels);
        }
        for (labels, s) in new.iter().zip(streams) {
            u.bytes
                .get_or_create(labels)
                .set(i64::try_from(s.bytes).unwrap_or(i64::MAX));
            match s.max_bytes {
                Some(max) => {
                    u.max_bytes
                        .get_or_create(labels)
                        .set(i64::try_from(max).unwrap_or(i64::MAX));
                }
                None => {
                    u.max_bytes.remove(labels);
                }
            }
        }
        shown.left_out.remove(object);
        u.left_out.set(shown.left_out.len() as i64);
        shown.series.insert(object.to_string(), new);
    }

    /// Runs `hook` before each scrape (to refresh a gauge read from elsewhere).
    pub fn on_scrape(&self, hook: impl Fn(&Metrics) + Send + Sync + 'static) {
        self.scrape_hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(hook));
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

    /// The metrics in the Prometheus text format; `ready` is what `/readyz` says now.
    pub fn encode(&self, ready: bool) -> String {
        self.ready.set(i64::from(ready));
        if let Some(bytes) = resident_memory() {
            self.resident_memory
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        for hook in self
            .scrape_hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            hook(self);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The resident memory of this process (Linux: `/proc/self/statm`, in pages of 4 KiB on the
/// architectures the image is built for); None elsewhere.
fn resident_memory() -> Option<u64> {
    const PAGE: u64 = 4096;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * PAGE)
}

/// A memory quantity as Kubernetes writes it (`134217728`, `128Mi`, `1G`) in bytes; what the
/// Downward API gives for `limits.memory` with a divisor of 1 is plain bytes.
pub fn parse_memory(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let factor: u64 = match unit {
        "" => 1,
        "k" | "K" => 1000,
        "M" => 1000u64.pow(2),
        "G" => 1000u64.pow(3),
        "T" => 1000u64.pow(4),
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reconciles_errors_and_buckets() {
        let m = Metrics::new();
        m.reconciled(Duration::from_millis(3), None);
        m.reconciled(Duration::from_millis(3), Some("NatsUnavailable"));
        m.set_state("a/x", Some(state(true, "BucketManaged", false)));
        m.set_state("a/y", Some(state(false, "NatsUnavailable", false)));
        m.set_state("a/y", None);
        let text = m.encode(true);
        assert!(text.contains("jetstream_kv_reconciles_total 2"), "{text}");
        assert!(
            text.contains(r#"jetstream_kv_reconcile_errors_total{reason="NatsUnavailable"} 1"#)
        );
        assert!(text.contains(r#"jetstream_kv_buckets{ready="true"} 1"#));
        assert!(text.contains(r#"jetstream_kv_buckets{ready="false"} 0"#));
        assert!(text.contains("jetstream_kv_ready 1"), "{text}");
        assert!(text.contains("jetstream_kv_leader 0"), "{text}");
        assert!(!text.contains("memory_limit_bytes"), "{text}");
    }

    fn state(ready: bool, reason: &str, stalled: bool) -> ObjectState {
        ObjectState {
            kind: "KeyValueBucket".into(),
            ready,
            reason: reason.into(),
            stalled,
        }
    }

    #[test]
    fn not_ready_components_are_counted_by_kind_reason_and_state() {
        let m = Metrics::new();
        let reconciling = r#"jetstream_kv_not_ready{kind="KeyValueBucket",reason="NatsUnavailable",state="Reconciling"}"#;
        let stalled = r#"jetstream_kv_not_ready{kind="KeyValueBucket",reason="SecretNotFound",state="Stalled"}"#;
        m.set_state("a/x", Some(state(false, "NatsUnavailable", false)));
        m.set_state("a/y", Some(state(false, "NatsUnavailable", false)));
        m.set_state("a/z", Some(state(false, "SecretNotFound", true)));
        let text = m.encode(true);
        assert!(text.contains(&format!("{reconciling} 2")), "{text}");
        assert!(text.contains(&format!("{stalled} 1")), "{text}");
        // The same state again changes nothing; a change moves the object between series.
        m.set_state("a/x", Some(state(false, "NatsUnavailable", false)));
        m.set_state("a/y", Some(state(true, "BucketManaged", false)));
        m.set_state("a/z", None);
        let text = m.encode(true);
        assert!(text.contains(&format!("{reconciling} 1")), "{text}");
        assert!(text.contains(&format!("{stalled} 0")), "{text}");
        assert!(
            text.contains(r#"jetstream_kv_buckets{ready="true"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"jetstream_kv_buckets{ready="false"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn scrape_time_gauges_and_the_memory_limit() {
        let mut m = Metrics::new();
        m.set_memory_limit(parse_memory("128Mi").unwrap());
        m.on_scrape(|m| m.set_nats_connections_down(2));
        m.set_leader(true);
        m.webhook_reviewed(ReviewResult::Error, Duration::from_millis(2));
        let text = m.encode(false);
        assert!(
            text.contains("jetstream_kv_memory_limit_bytes 134217728"),
            "{text}"
        );
        assert!(
            text.contains("jetstream_kv_nats_connections_down 2"),
            "{text}"
        );
        assert!(text.contains("jetstream_kv_leader 1"), "{text}");
        assert!(text.contains("jetstream_kv_ready 0"), "{text}");
        assert!(text.contains(r#"jetstream_kv_webhook_reviews_total{result="error"} 1"#));
        if cfg!(target_os = "linux") {
            assert!(
                !text.contains("jetstream_kv_resident_memory_bytes 0"),
                "{text}"
            );
        }
        assert_eq!(parse_memory("134217728"), Some(134_217_728));
        assert_eq!(parse_memory("1G"), Some(1_000_000_000));
        assert_eq!(parse_memory("1.5Gi"), None);
        assert_eq!(parse_memory("x"), None);
    }

    fn usage(stream: &str, bytes: u64, max_bytes: Option<u64>) -> StreamUsage {
        StreamUsage {
            stream: stream.into(),
            bytes,
            max_bytes,
        }
    }

    #[test]
    fn usage_series_are_opt_in_capped_and_dropped_with_their_component() {
        let off = Metrics::new();
        off.set_usage(
            "a/x",
            Some(("KeyValueBucket", &[usage("KV_x", 5, Some(10))])),
        );
        assert!(!off.encode(true).contains("stream_bytes"));

        let mut m = Metrics::new();
        m.enable_usage(2);
        let kv = "KeyValueBucket";
        m.set_usage("a/x", Some((kv, &[usage("KV_x", 5, Some(10))])));
        m.set_usage("a/y", Some((kv, &[usage("KV_y", 7, None)])));
        m.set_usage("b/z", Some((kv, &[usage("KV_z", 9, Some(10))])));
        let text = m.encode(true);
        let x = r#"{kind="KeyValueBucket",component_namespace="a",component="x",stream="KV_x"}"#;
        let y = r#"{kind="KeyValueBucket",component_namespace="a",component="y",stream="KV_y"}"#;
        assert!(
            text.contains(&format!("jetstream_kv_stream_bytes{x} 5")),
            "{text}"
        );
        assert!(
            text.contains(&format!("jetstream_kv_stream_max_bytes{x} 10")),
            "{text}"
        );
        assert!(
            text.contains(&format!("jetstream_kv_stream_bytes{y} 7")),
            "{text}"
        );
        // No limit: no max series (the alert's ratio has nothing to divide by).
        assert!(
            !text.contains(&format!("jetstream_kv_stream_max_bytes{y}")),
            "{text}"
        );
        // The cap: the third Component is counted, not exposed.
        assert!(!text.contains("KV_z"), "{text}");
        assert!(
            text.contains("jetstream_kv_stream_usage_left_out 1"),
            "{text}"
        );

        // A Component deleted frees its place for the next reconcile of one left out.
        m.set_state("a/x", None);
        m.set_usage("b/z", Some((kv, &[usage("KV_z", 9, Some(10))])));
        let text = m.encode(true);
        assert!(!text.contains("KV_x"), "{text}");
        assert!(text.contains("KV_z"), "{text}");
        assert!(
            text.contains("jetstream_kv_stream_usage_left_out 0"),
            "{text}"
        );

        // A stream renamed (a pub/sub's stream changed) or the server not reached: old series go.
        m.set_usage(
            "b/z",
            Some(("JetStreamStream", &[usage("ORDERS", 1, None)])),
        );
        m.set_usage("a/y", None);
        let text = m.encode(true);
        assert!(!text.contains("KV_z") && !text.contains("KV_y"), "{text}");
        assert!(text.contains(r#"stream="ORDERS"} 1"#), "{text}");
    }
}
