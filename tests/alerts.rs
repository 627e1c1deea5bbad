//! The chart's alerts and dashboard, proven by Prometheus's own code (`promtool`, built from
//! Prometheus's Go module by `test-env/setup.sh`, `JKO_PROMTOOL_BIN`):
//!
//! - the rules tested are the ones `helm template` renders with `prometheusRule.enabled`;
//! - their input is captured from live operators: each operator's `/metrics` is scraped twice,
//!   some seconds apart, in each state (steady, and one fault each); gauges keep the value they
//!   had, counters grow at the rate they grew between the two scrapes, for the 50 minutes of the
//!   rule test; a scrape that fails is `up 0`, as Prometheus records it;
//! - `promtool test rules` then checks, at 45 minutes, that every alert fires on its fault with
//!   exactly the labels and annotations the chart gives it, and that no other alert fires (in the
//!   steady state: none);
//! - every query of the dashboard is parsed by Prometheus's parser (`promtool check rules`), and
//!   every metric the rules and the dashboard name is one the live operators exposed.
//!
//! Positive controls run with the real ones: a rules file with a metric renamed must fail the
//! rule tests, and a dashboard query naming an unknown metric must fail the name check.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;
use support::nats::NatsServer;
use support::operator::Operator;
use support::{ComponentManifest, TestNamespace, client, control_plane};

const RELEASE: &str = "jko";
const RELEASE_NAMESPACE: &str = "monitoring";
/// The `job` label the chart's ServiceMonitor gives the operator's series: its metrics Service.
const JOB: &str = "jko-jetstream-kv-operator-metrics";
/// How long apart the two scrapes of a capture are: long enough for every counter the alerts
/// rate to move (the operators resync every 4 s and retry after at most 2 s).
const CAPTURE: Duration = Duration::from_secs(5);
/// The rule test's length (minutes) and when it checks the alerts.
const MINUTES: u32 = 50;
const EVAL_AT: &str = "45m";

fn promtool() -> PathBuf {
    let hint = r#"run `eval "$(test-env/setup.sh)"` (part promtool) to build it"#;
    let bin = std::env::var_os("JKO_PROMTOOL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("JKO_PROMTOOL_BIN is not set: {hint}"));
    assert!(
        bin.is_file(),
        "JKO_PROMTOOL_BIN={}: no such file: {hint}",
        bin.display()
    );
    bin
}

/// Runs promtool: `Ok(output)` or `Err(output)`.
fn run_promtool(args: &[&str]) -> Result<String, String> {
    support::run_command(support::path_str(&promtool()), None, args)
}

fn helm_bin() -> String {
    std::env::var("JKO_HELM_BIN").unwrap_or_else(|_| "helm".into())
}

/// The chart rendered with the alerts and the dashboard on (and `extra` values), as YAML
/// documents.
fn render(extra: &[&str]) -> Vec<serde_yaml::Value> {
    let chart = support::repo_root().join("charts/jetstream-kv-operator");
    let mut args = vec![
        "template",
        RELEASE,
        support::path_str(&chart),
        "--namespace",
        RELEASE_NAMESPACE,
        "--set",
        "prometheusRule.enabled=true,grafanaDashboard.enabled=true",
    ];
    args.extend_from_slice(extra);
    let out = Command::new(helm_bin())
        .args(&args)
        .output()
        .unwrap_or_else(|e| panic!("run helm (eval \"$(test-env/setup.sh)\" first): {e}"));
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::Value::deserialize(d).expect("helm renders YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The rule groups of the rendered PrometheusRule, as a Prometheus rules file.
fn rules_file(extra: &[&str]) -> serde_json::Value {
    let rule = render(extra)
        .into_iter()
        .find(|o| o["kind"].as_str() == Some("PrometheusRule"))
        .expect("prometheusRule.enabled renders a PrometheusRule");
    let rule: serde_json::Value = serde_json::to_value(rule).expect("JSON");
    json!({"groups": rule["spec"]["groups"]})
}

/// Every alerting rule of a rules file: name → the rule.
fn alerts(rules: &serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .filter_map(|r| Some((r["alert"].as_str()?.to_string(), r.clone())))
        .collect()
}

/// The dashboard the rendered ConfigMap holds.
fn dashboard() -> serde_json::Value {
    let map = render(&[])
        .into_iter()
        .find(|o| {
            o["kind"].as_str() == Some("ConfigMap")
                && o["metadata"]["labels"]["grafana_dashboard"].as_str() == Some("1")
        })
        .expect("grafanaDashboard.enabled renders a ConfigMap with the sidecar's label");
    let json = map["data"]["jetstream-kv-operator.json"]
        .as_str()
        .expect("the dashboard's JSON");
    serde_json::from_str(json).expect("the dashboard is JSON")
}

/// Every query of the dashboard, with Grafana's `$__rate_interval` as Grafana would give it.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    let queries: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| {
            t["expr"]
                .as_str()
                .map(|e| e.replace("$__rate_interval", "5m"))
        })
        .collect();
    assert!(queries.len() >= 10, "{queries:?}");
    queries
}

/// Metric names a PromQL expression selects: identifiers directly followed by `{` (the
/// chart's and the dashboard's queries write every selector with matchers), except `by`/`without`
/// clauses, which are followed by `(`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let bytes = expr.as_bytes();
    let mut names = BTreeSet::new();
    let mut start = None;
    for (i, &b) in bytes.iter().enumerate() {
        let ident = b.is_ascii_alphanumeric() || b == b'_' || b == b':';
        match (ident, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if b == b'{' && !bytes[s].is_ascii_digit() {
                    names.insert(expr[s..i].to_string());
                }
                start = None;
            }
            _ => {}
        }
    }
    names
}

/// Checks that `expressions` parse (as recording rules, with `promtool check rules`).
fn check_parse(expressions: &[String], dir: &Path) -> Result<String, String> {
    let rules: Vec<_> = expressions
        .iter()
        .enumerate()
        .map(|(i, e)| json!({"record": format!("dashboard:query_{i}"), "expr": e}))
        .collect();
    let path = dir.join("dashboard-queries.yaml");
    std::fs::write(
        &path,
        serde_json::to_string(&json!({"groups": [{"name": "dashboard", "rules": rules}]}))
            .expect("JSON"),
    )
    .expect("write");
    run_promtool(&["check", "rules", support::path_str(&path)])
}

#[test]
fn the_rendered_rules_and_every_dashboard_query_parse_with_prometheus_own_parser() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let rules = rules_file(&[]);
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, serde_json::to_string(&rules).expect("JSON")).expect("write");
    let out = run_promtool(&["check", "rules", support::path_str(&path)])
        .unwrap_or_else(|e| panic!("promtool check rules on the chart's rules:\n{e}"));
    assert!(out.contains("SUCCESS: 13 rules found"), "{out}");
    for (name, rule) in alerts(&rules) {
        let url = rule["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_default();
        let anchor = url.rsplit_once('#').map(|(_, a)| a).unwrap_or_default();
        assert_eq!(anchor, name.to_lowercase(), "{name}'s runbook_url: {url}");
        let docs = std::fs::read_to_string(support::repo_root().join("docs/alerts.md"))
            .expect("docs/alerts.md");
        assert!(
            docs.contains(&format!("### {name}\n")),
            "docs/alerts.md has no runbook section for {name}"
        );
    }
    let queries = dashboard_queries(&dashboard());
    let out = check_parse(&queries, dir.path())
        .unwrap_or_else(|e| panic!("a dashboard query does not parse:\n{e}"));
    assert!(out.contains("SUCCESS"), "{out}");
    // The instrument sees: a query Prometheus cannot parse fails the check.
    let mut broken = queries.clone();
    broken[0] = broken[0].replacen('(', "((", 1);
    assert!(
        check_parse(&broken, dir.path()).is_err(),
        "promtool check rules accepted {}",
        broken[0]
    );
}

/// One scrape target of a capture: the pod label it gets, and its two pages (None: the scrape
/// failed).
struct Target {
    pod: String,
    pages: Option<(String, String)>,
}

/// The operators of one state, scraped twice [`CAPTURE`] apart.
fn capture(operators: &[(&str, &Operator)]) -> Vec<Target> {
    let first: Vec<_> = operators.iter().map(|(_, o)| scrape(o)).collect();
    std::thread::sleep(CAPTURE);
    operators
        .iter()
        .zip(first)
        .map(|((pod, o), first)| Target {
            pod: pod.to_string(),
            pages: first.zip(scrape(o)),
        })
        .collect()
}

fn scrape(operator: &Operator) -> Option<String> {
    match operator.http_get("/metrics") {
        Some((200, body)) => Some(body),
        _ => None,
    }
}

/// A sample line's series (`name{labels}`) split into its name and its labels.
fn split_series(series: &str) -> (String, BTreeMap<String, String>) {
    let Some((name, rest)) = series.split_once('{') else {
        return (series.to_string(), BTreeMap::new());
    };
    let mut labels = BTreeMap::new();
    // Label values of the operator are plain words and numbers (reasons, kinds, `le`): no
    // commas or escaped quotes.
    for pair in rest
        .trim_end_matches('}')
        .split(',')
        .filter(|p| !p.is_empty())
    {
        if let Some((k, v)) = pair.split_once('=') {
            labels.insert(k.to_string(), v.trim_matches('"').to_string());
        }
    }
    (name.to_string(), labels)
}

fn is_counter(name: &str) -> bool {
    ["_total", "_bucket", "_count", "_sum"]
        .iter()
        .any(|s| name.ends_with(s))
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

/// A capture as promtool's `input_series`: labels as Prometheus would add them (job,
/// namespace, pod, instance), `up`, gauges held, counters at their measured rate per minute.
fn input_series(targets: &[Target]) -> Vec<serde_json::Value> {
    let mut series = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        let target_labels = format!(
            r#"job="{JOB}", namespace="{RELEASE_NAMESPACE}", pod="{}", instance="10.0.0.{}:8080""#,
            target.pod,
            i + 10
        );
        let up = u8::from(target.pages.is_some());
        series.push(json!({
            "series": format!("up{{{target_labels}}}"),
            "values": format!("{up}+0x{MINUTES}"),
        }));
        let Some((first, second)) = &target.pages else {
            continue;
        };
        let before = support::fixtures::samples(first);
        for (key, value) in support::fixtures::samples(second) {
            let (name, labels) = split_series(&key);
            let mut all: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!(r#"{k}="{v}""#))
                .collect();
            all.push(target_labels.clone());
            let values = if is_counter(&name) {
                let start = before.get(&key).copied().unwrap_or(0.0);
                let per_minute = (value - start).max(0.0) / CAPTURE.as_secs_f64() * 60.0;
                format!("{}+{}x{MINUTES}", number(start), number(per_minute))
            } else {
                format!("{}+0x{MINUTES}", number(value))
            };
            series.push(json!({
                "series": format!("{name}{{{}}}", all.join(", ")),
                "values": values,
            }));
        }
    }
    series
}

/// The alert a state expects: its name and the labels its expression gives it.
struct Expected {
    alert: &'static str,
    labels: Vec<(&'static str, String)>,
}

fn expect(alert: &'static str, labels: &[(&'static str, &str)]) -> Expected {
    Expected {
        alert,
        labels: labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
    }
}

/// One state: its name, what was captured, and the alerts that must fire (all others must not).
struct State {
    name: String,
    targets: Vec<Target>,
    expected: Vec<Expected>,
}

/// The annotations of `rule` for an alert with `labels`: `{{ $labels.x }}` filled in (the chart
/// uses nothing else in them).
fn annotations(rule: &serde_json::Value, labels: &BTreeMap<String, String>) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (k, v) in rule["annotations"].as_object().expect("annotations") {
        let mut text = v.as_str().expect("annotation text").to_string();
        for (label, value) in labels {
            text = text.replace(&format!("{{{{ $labels.{label} }}}}"), value);
        }
        assert!(!text.contains("{{"), "{k}: unexpected template in {text}");
        out.insert(k.clone(), json!(text));
    }
    serde_json::Value::Object(out)
}

/// promtool's test file for `states` against `rules` (the file name of the rules).
fn rule_tests(rules: &serde_json::Value, rules_path: &str, states: &[&State]) -> serde_json::Value {
    let alerts = alerts(rules);
    let tests: Vec<_> = states
        .iter()
        .map(|state| {
            for e in &state.expected {
                assert!(alerts.contains_key(e.alert), "no alert {}", e.alert);
            }
            let checks: Vec<_> = alerts
                .iter()
                .map(|(name, rule)| {
                    let exp: Vec<_> = state
                        .expected
                        .iter()
                        .filter(|e| e.alert == name)
                        .map(|e| {
                            let mut labels: BTreeMap<String, String> = e
                                .labels
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.clone()))
                                .collect();
                            for (k, v) in rule["labels"].as_object().expect("labels") {
                                labels.insert(k.clone(), v.as_str().expect("label").into());
                            }
                            json!({
                                "exp_labels": labels,
                                "exp_annotations": annotations(rule, &labels),
                            })
                        })
                        .collect();
                    json!({"eval_time": EVAL_AT, "alertname": name, "exp_alerts": exp})
                })
                .collect();
            json!({
                "name": state.name,
                "interval": "1m",
                "input_series": input_series(&state.targets),
                "alert_rule_test": checks,
            })
        })
        .collect();
    json!({"rule_files": [rules_path], "evaluation_interval": "1m", "tests": tests})
}

/// Writes the rules and the tests for `states` to `dir` and runs `promtool test rules`.
fn test_rules(
    dir: &Path,
    label: &str,
    rules: &serde_json::Value,
    states: &[&State],
) -> Result<String, String> {
    let rules_path = format!("{label}-rules.yaml");
    std::fs::write(
        dir.join(&rules_path),
        serde_json::to_string_pretty(rules).expect("JSON"),
    )
    .expect("write rules");
    let tests = dir.join(format!("{label}-tests.yaml"));
    std::fs::write(
        &tests,
        serde_json::to_string_pretty(&rule_tests(rules, &rules_path, states)).expect("JSON"),
    )
    .expect("write tests");
    run_promtool(&["test", "rules", support::path_str(&tests)])
}

/// The Ready condition's (status, reason) of a KeyValueBucket, when it has one.
fn kvb_ready(ns: &str, name: &str) -> Option<(String, String)> {
    let out = control_plane()
        .kubectl(
            &[
                "-n",
                ns,
                "get",
                "kvb",
                name,
                "-o",
                r#"jsonpath={.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].reason}"#,
            ],
            None,
        )
        .ok()?;
    let (status, reason) = out.trim().split_once(' ')?;
    Some((status.to_string(), reason.to_string()))
}

/// Waits until the KeyValueBucket's Ready condition satisfies `ok(status, reason)`; returns
/// the reason.
fn wait_kvb(ns: &str, name: &str, operator: &Operator, ok: impl Fn(&str, &str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((status, reason)) = kvb_ready(ns, name)
            && ok(&status, &reason)
        {
            return reason;
        }
        assert!(
            Instant::now() < deadline,
            "kvb/{name} in {ns}: timed out\n{}\n--- operator log:\n{}",
            support::describe(ns, "kvb", name),
            operator.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the operator's page shows `what`.
fn wait_metrics(operator: &Operator, what: &str, ok: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !scrape(operator).is_some_and(|page| ok(&page)) {
        assert!(
            Instant::now() < deadline,
            "the operator's /metrics never showed {what}:\n{}\n--- log:\n{}",
            scrape(operator).unwrap_or_default(),
            operator.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn apply(manifest: &str) {
    control_plane().apply(manifest);
}

fn delete(args: &[&str]) {
    let mut all = vec!["delete", "--ignore-not-found", "--wait=false"];
    all.extend_from_slice(args);
    let _ = control_plane().kubectl(&all, None);
}

/// A kubeconfig of a ServiceAccount with no permission at all: an operator run with it never
/// syncs its caches.
fn powerless_kubeconfig(namespace: &str) -> PathBuf {
    let cp = control_plane();
    cp.kubectl(
        &["-n", namespace, "create", "serviceaccount", "nobody"],
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let token = cp
        .kubectl(
            &[
                "-n",
                namespace,
                "create",
                "token",
                "nobody",
                "--duration=1h",
            ],
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let admin: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&cp.kubeconfig).expect("kubeconfig"))
            .expect("kubeconfig YAML");
    let cluster = &admin["clusters"][0]["cluster"];
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {
            "server": cluster["server"].as_str().expect("server"),
            "certificate-authority-data": cluster["certificate-authority-data"].as_str().expect("CA"),
        }}],
        "users": [{"name": "nobody", "user": {"token": token.trim()}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "nobody"}}],
        "current-context": "c",
    });
    let path = cp.dir.join(format!("{namespace}-nobody.kubeconfig"));
    std::fs::write(&path, serde_json::to_string(&config).expect("JSON")).expect("write");
    path
}

/// Deletes what the test made outside its namespaces when it ends, even when it fails.
struct ClusterScoped(Vec<(String, String)>);

impl Drop for ClusterScoped {
    fn drop(&mut self) {
        for (kind, name) in &self.0 {
            delete(&[kind.as_str(), name.as_str()]);
        }
    }
}

/// A Component of a type the operator ignores (the webhook is asked about it all the same).
fn redis(ns: &str, name: &str) -> String {
    ComponentManifest::store(ns, name, "nats://127.0.0.1:1", "b")
        .type_("state.redis")
        .yaml()
}

/// The max-bytes of the bucket the near-max-bytes alert is tested on.
const LIMITED_MAX_BYTES: u64 = 64 * 1024;

/// Puts 1 KiB values into `bucket` until the server reports it holds `share` of
/// [`LIMITED_MAX_BYTES`] (or refuses a put: full); returns the bytes it reports.
async fn fill(url: &str, bucket: &str, share: f64) -> u64 {
    let js = support::jetstream(url).await;
    let kv = js.get_key_value(bucket).await.expect("the limited bucket");
    let value = vec![b'x'; 1024];
    let mut i = 0u64;
    loop {
        i += 1;
        let bytes = js
            .get_stream(format!("KV_{bucket}"))
            .await
            .expect("the limited bucket's stream")
            .info()
            .await
            .expect("stream info")
            .state
            .bytes;
        if bytes as f64 >= share * LIMITED_MAX_BYTES as f64
            || kv.put(format!("k{i}"), value.clone().into()).await.is_err()
        {
            return bytes;
        }
    }
}

fn resident_memory(page: &str) -> f64 {
    support::fixtures::metric(page, "jetstream_kv_resident_memory_bytes ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alert_fires_on_its_fault_and_none_in_the_steady_state() {
    let started = Instant::now();
    let cp = control_plane();
    let client = client().await;
    let ns = TestNamespace::new(&client, "alerts").await;
    let mut nats = NatsServer::start();
    let operator = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["--resync-interval", "4s", "--max-backoff", "2s"];
        all.extend_from_slice(args);
        Operator::start_with_env(&cp.kubeconfig, &all, env)
    };
    let scoped = ["--namespaces", ns.name.as_str()];
    let mut states: Vec<State> = Vec::new();

    // The steady state: three Ready buckets, one with a max-bytes it is far from, and an
    // operator with the chart's memory limit and usage series on.
    let main = operator(
        &scoped,
        &[
            ("MEMORY_LIMIT", "512Mi"),
            ("USAGE_METRICS_MAX_COMPONENTS", "100"),
        ],
    );
    for name in ["orders", "carts"] {
        apply(
            &ComponentManifest::store(&ns.name, name, &nats.url(), &support::unique_bucket(name))
                .yaml(),
        );
    }
    let limited_bucket = support::unique_bucket("limited");
    apply(
        &ComponentManifest::store(&ns.name, "limited", &nats.url(), &limited_bucket)
            .annotation("jetstreamkv.io/max-bytes", &LIMITED_MAX_BYTES.to_string())
            .yaml(),
    );
    for name in ["orders", "carts", "limited"] {
        wait_kvb(&ns.name, name, &main, |s, _| s == "True");
    }
    wait_metrics(&main, "the leader, ready", |p| {
        p.contains("jetstream_kv_leader 1") && p.contains("jetstream_kv_ready 1")
    });
    let steady = capture(&[("operator-0", &main)]);
    let steady_memory = steady[0]
        .pages
        .as_ref()
        .map(|(_, p)| resident_memory(p))
        .expect("the steady operator was scraped");
    assert!(steady_memory > 0.0, "no resident memory exposed");
    states.push(State {
        name: "steady".into(),
        targets: steady,
        expected: vec![],
    });

    // A Stalled Component: a bucket name Dapr refuses (someone must change the manifest).
    apply(&ComponentManifest::store(&ns.name, "bad", &nats.url(), "not.a.bucket").yaml());
    let reason = wait_kvb(&ns.name, "bad", &main, |s, _| s == "False");
    wait_metrics(&main, "a Stalled Component", |p| {
        p.contains(&format!(r#"reason="{reason}",state="Stalled"}} 1"#))
    });
    states.push(State {
        name: "a Stalled Component".into(),
        targets: capture(&[("operator-0", &main)]),
        expected: vec![expect(
            "JetStreamKVComponentsStalled",
            &[("kind", "KeyValueBucket"), ("reason", &reason)],
        )],
    });
    delete(&["-n", &ns.name, "component", "bad"]);
    wait_metrics(&main, "no Stalled Component", |p| {
        !p.lines()
            .any(|l| l.contains(r#"state="Stalled""#) && !l.ends_with(" 0"))
    });

    // NATS stopped: the connection is down, the Components are retried (Reconciling), every
    // reconcile ends not Ready.
    nats.stop();
    let reasons: BTreeSet<String> = ["orders", "carts"]
        .iter()
        .map(|name| wait_kvb(&ns.name, name, &main, |s, _| s == "False"))
        .collect();
    wait_metrics(&main, "a NATS connection down", |p| {
        p.contains("jetstream_kv_nats_connections_down 1")
    });
    let mut expected = vec![
        expect("JetStreamKVNatsConnectionDown", &[]),
        expect("JetStreamKVReconcileErrors", &[]),
    ];
    for reason in &reasons {
        expected.push(expect(
            "JetStreamKVComponentsReconciling",
            &[("kind", "KeyValueBucket"), ("reason", reason)],
        ));
    }
    states.push(State {
        name: "NATS stopped".into(),
        targets: capture(&[("operator-0", &main)]),
        expected,
    });
    nats.start_again();
    for name in ["orders", "carts"] {
        wait_kvb(&ns.name, name, &main, |s, _| s == "True");
    }

    // API writes refused: a ValidatingAdmissionPolicy refuses every KeyValueBucket of a
    // namespace the operator watches.
    let denied = TestNamespace::new(&client, "alerts-denied").await;
    let policy = format!("jko-alerts-{}", denied.name);
    let _cleanup = ClusterScoped(vec![
        ("validatingadmissionpolicybinding".into(), policy.clone()),
        ("validatingadmissionpolicy".into(), policy.clone()),
    ]);
    apply(&format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\n\
         metadata:\n  name: {policy}\nspec:\n  failurePolicy: Fail\n  matchConstraints:\n    \
         resourceRules:\n    - apiGroups: [jetstreamkv.io]\n      apiVersions: [\"*\"]\n      \
         operations: [CREATE, UPDATE]\n      resources: [keyvaluebuckets]\n  validations:\n  \
         - expression: \"false\"\n    message: refused by the alerts test\n---\n\
         apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\n\
         metadata:\n  name: {policy}\nspec:\n  policyName: {policy}\n  validationActions: \
         [Deny]\n  matchResources:\n    namespaceSelector:\n      matchLabels:\n        \
         kubernetes.io/metadata.name: {}\n",
        denied.name
    ));
    let writer = operator(&["--namespaces", &denied.name], &[]);
    // The policy takes a moment to be enforced: a KeyValueBucket that got through is deleted
    // with its Component, and the next one is refused.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let name = format!("refused-{attempt}");
        apply(&ComponentManifest::store(&denied.name, &name, &nats.url(), &name).yaml());
        std::thread::sleep(Duration::from_secs(3));
        if kvb_ready(&denied.name, &name).is_none()
            && scrape(&writer).is_some_and(|p| {
                support::fixtures::metric(&p, "jetstream_kv_api_write_errors_total ") > 0.0
            })
        {
            break;
        }
        delete(&["-n", &denied.name, "component", &name]);
        assert!(
            Instant::now() < deadline,
            "the policy never refused a KeyValueBucket:\n{}",
            writer.log_tail()
        );
    }
    states.push(State {
        name: "API writes refused".into(),
        targets: capture(&[("operator-0", &writer)]),
        expected: vec![expect("JetStreamKVAPIWriteErrors", &[])],
    });
    drop(writer);

    // Two operators reconcile at once (a second one run without leader election).
    let second = operator(&scoped, &[]);
    wait_metrics(&second, "the second operator reconciling", |p| {
        p.contains("jetstream_kv_leader 1") && p.contains("jetstream_kv_ready 1")
    });
    states.push(State {
        name: "two leaders".into(),
        targets: capture(&[("operator-0", &main), ("operator-1", &second)]),
        expected: vec![expect("JetStreamKVSeveralLeaders", &[])],
    });
    drop(second);

    // No leader: the only instance waits for a Lease another holder keeps renewed.
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.000000Z");
    apply(&format!(
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: held-elsewhere\n  \
         namespace: {}\nspec:\n  holderIdentity: someone-else\n  leaseDurationSeconds: 3600\n  \
         acquireTime: {now}\n  renewTime: {now}\n",
        ns.name
    ));
    let standby = operator(
        &[
            "--namespaces",
            &ns.name,
            "--leader-election",
            "--lease-name",
            "held-elsewhere",
            "--lease-namespace",
            &ns.name,
        ],
        &[],
    );
    wait_metrics(&standby, "a ready standby", |p| {
        p.contains("jetstream_kv_leader 0") && p.contains("jetstream_kv_ready 1")
    });
    states.push(State {
        name: "no leader".into(),
        targets: capture(&[("operator-0", &standby)]),
        expected: vec![expect("JetStreamKVNoLeader", &[])],
    });
    // Beside a leader, the same standby is the healthy pair of two replicas: silent.
    states.push(State {
        name: "a leader and a standby".into(),
        targets: capture(&[("operator-0", &main), ("operator-1", &standby)]),
        expected: vec![],
    });
    drop(standby);

    // Memory at the limit: an operator whose limit is 90% of what the steady one used.
    let limit = format!("{}", (steady_memory * 0.9) as u64);
    let hungry = operator(&scoped, &[("MEMORY_LIMIT", &limit)]);
    wait_metrics(&hungry, "the memory limit", |p| {
        p.contains("jetstream_kv_memory_limit_bytes") && p.contains("jetstream_kv_ready 1")
    });
    states.push(State {
        name: "memory at the limit".into(),
        targets: capture(&[("operator-0", &hungry)]),
        expected: vec![expect(
            "JetStreamKVMemoryNearLimit",
            &[("pod", "operator-0")],
        )],
    });
    drop(hungry);

    // Not ready: an operator whose ServiceAccount may not list anything never syncs.
    let powerless = Operator::start(&powerless_kubeconfig(&ns.name), &scoped);
    wait_metrics(&powerless, "a leader that is not ready", |p| {
        p.contains("jetstream_kv_leader 1") && p.contains("jetstream_kv_ready 0")
    });
    states.push(State {
        name: "not ready".into(),
        targets: capture(&[("operator-0", &powerless)]),
        expected: vec![expect(
            "JetStreamKVOperatorNotReady",
            &[("pod", "operator-0")],
        )],
    });
    drop(powerless);

    // The webhook failing: its configuration names a path the operator does not serve, so
    // every review the API server asks for fails (and, with failurePolicy Ignore, is skipped).
    let hooked = TestNamespace::new(&client, "alerts-webhook").await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = format!("jko-alerts-{}", hooked.name);
    let _webhook_cleanup = ClusterScoped(vec![(
        "validatingwebhookconfiguration".into(),
        config.clone(),
    )]);
    let addr = format!("127.0.0.1:{}", support::process::free_port());
    apply(&format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\n\
         metadata:\n  name: {config}\nwebhooks:\n- name: components.jetstreamkv.io\n  \
         admissionReviewVersions: [v1]\n  sideEffects: None\n  failurePolicy: Ignore\n  \
         timeoutSeconds: 5\n  clientConfig:\n    url: https://{addr}/wrong-path\n  \
         namespaceSelector:\n    matchLabels:\n      kubernetes.io/metadata.name: {}\n  \
         rules:\n  - apiGroups: [dapr.io]\n    apiVersions: [v1alpha1]\n    operations: \
         [CREATE, UPDATE]\n    resources: [components]\n    scope: Namespaced\n",
        hooked.name
    ));
    let ca_file = dir.path().join("ca.crt");
    let webhook = operator(
        &[
            "--namespaces",
            &hooked.name,
            "--webhook-addr",
            &addr,
            "--webhook-self-signed",
            "--webhook-host",
            "127.0.0.1",
            "--webhook-ca-file",
            support::path_str(&ca_file),
            "--webhook-config-name",
            &config,
        ],
        &[],
    );
    // Components applied through the broken webhook until the operator has answered some.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 0;
    while !scrape(&webhook).is_some_and(|p| p.contains(r#"result="error"} "#)) {
        n += 1;
        apply(&redis(&hooked.name, &format!("c{n}")));
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            Instant::now() < deadline,
            "the API server never reached the webhook:\n{}",
            webhook.log_tail()
        );
    }
    // Reviews during the capture, so that their rate is measured.
    let applier = {
        let ns = hooked.name.clone();
        std::thread::spawn(move || {
            for i in 0..CAPTURE.as_secs().saturating_sub(1) {
                let manifest = redis(&ns, &format!("during-{i}"));
                let _ = control_plane().kubectl(&["apply", "-f", "-"], Some(&manifest));
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    let webhook_state = State {
        name: "webhook failing".into(),
        targets: capture(&[("operator-0", &webhook)]),
        expected: vec![expect("JetStreamKVWebhookErrors", &[])],
    };
    applier.join().expect("the applier thread");
    drop(webhook);

    // A bucket filled past 90% of its max-bytes, as the operator reads it at its next resync.
    let limited_stream = format!("KV_{limited_bucket}");
    let filled = fill(&nats.url(), &limited_bucket, 0.93).await;
    wait_metrics(&main, "the bucket's usage past 90%", |p| {
        let samples = support::fixtures::samples(p);
        samples.iter().any(|(k, v)| {
            k.starts_with("jetstream_kv_stream_bytes{")
                && k.contains(&format!("stream=\"{limited_stream}\""))
                && *v >= 0.9 * LIMITED_MAX_BYTES as f64
        })
    });
    states.push(State {
        name: "a bucket near its max-bytes".into(),
        targets: capture(&[("operator-0", &main)]),
        expected: vec![expect(
            "JetStreamKVStreamNearMaxBytes",
            &[
                ("kind", "KeyValueBucket"),
                ("component_namespace", &ns.name),
                ("component", "limited"),
                ("stream", &limited_stream),
            ],
        )],
    });
    eprintln!("alerts: {filled} bytes written to {limited_stream} (max-bytes {LIMITED_MAX_BYTES})");

    // Killed: the one instance is gone; Prometheus's scrape fails (up 0).
    let doomed = operator(&scoped, &[]);
    wait_metrics(&doomed, "ready", |p| p.contains("jetstream_kv_ready 1"));
    doomed.kill();
    states.push(State {
        name: "operator killed".into(),
        targets: capture(&[("operator-0", &doomed)]),
        expected: vec![expect("JetStreamKVOperatorDown", &[])],
    });
    // Absent: nothing is scraped at all (the Deployment deleted, or never selected).
    states.push(State {
        name: "operator absent".into(),
        targets: vec![],
        expected: vec![expect("JetStreamKVOperatorDown", &[])],
    });
    let captured_in = started.elapsed();

    // JKO_ALERTS_DIR keeps the rules and promtool's test files (with the captured series) there.
    let work = tempfile::tempdir().expect("temporary directory");
    let kept = std::env::var_os("JKO_ALERTS_DIR").map(PathBuf::from);
    let dir = kept.as_deref().unwrap_or(work.path());
    std::fs::create_dir_all(dir).expect("JKO_ALERTS_DIR");
    let rules = rules_file(&[]);
    let mut all: Vec<&State> = states.iter().collect();
    all.push(&webhook_state);
    let out = test_rules(dir, "chart", &rules, &all)
        .unwrap_or_else(|e| panic!("promtool test rules on the chart's rules:\n{e}"));
    assert!(out.contains("SUCCESS"), "{out}");
    eprintln!(
        "promtool test rules, the chart's rules on {} states:\n{out}",
        all.len()
    );

    // The webhook's latency alert, with its threshold under the live answers' time (they are
    // all quick): it fires on what the operator measured, and only there.
    let slow_rules = rules_file(&["--set-json", "prometheusRule.webhookSlow.seconds=0.0001"]);
    let mut slow_state = State {
        name: "webhook slower than its threshold".into(),
        targets: webhook_state.targets,
        expected: webhook_state.expected,
    };
    slow_state
        .expected
        .push(expect("JetStreamKVWebhookSlow", &[]));
    let out = test_rules(dir, "slow", &slow_rules, &[&slow_state, &states[0]])
        .unwrap_or_else(|e| panic!("promtool test rules with a low webhook threshold:\n{e}"));
    assert!(out.contains("SUCCESS"), "{out}");

    // The instrument sees: a metric renamed in the rules makes the rule tests fail.
    let renamed: serde_json::Value = serde_json::from_str(
        &serde_json::to_string(&rules)
            .expect("JSON")
            .replace("jetstream_kv_leader{", "jetstream_kv_leaders{"),
    )
    .expect("JSON");
    let failed = test_rules(dir, "renamed", &renamed, &[&states[4]]);
    assert!(
        failed.is_err(),
        "promtool passed the rules with jetstream_kv_leader renamed:\n{failed:?}"
    );

    // Every metric the rules and the dashboard name is one a live operator exposed.
    let mut exposed: BTreeSet<String> = BTreeSet::from(["up".to_string()]);
    for target in states.iter().chain([&slow_state]).flat_map(|s| &s.targets) {
        if let Some((_, page)) = &target.pages {
            for key in support::fixtures::samples(page).keys() {
                exposed.insert(split_series(key).0);
            }
        }
    }
    let mut named = BTreeSet::new();
    for rule in alerts(&rules).values() {
        named.extend(metric_names(rule["expr"].as_str().expect("expr")));
    }
    let queries = dashboard_queries(&dashboard());
    for query in &queries {
        named.extend(metric_names(query));
    }
    let unknown: Vec<_> = named.difference(&exposed).collect();
    assert!(
        unknown.is_empty(),
        "the rules or the dashboard name metrics no live operator exposed: {unknown:?}\n\
         exposed: {exposed:?}"
    );
    assert!(named.len() >= 15, "{named:?}");
    // The instrument sees: a renamed metric in a query is caught.
    let renamed_query = queries[0].replace("jetstream_kv_buckets{", "jetstream_kv_bucket{");
    assert!(
        !metric_names(&renamed_query).is_subset(&exposed),
        "{renamed_query}"
    );
    eprintln!(
        "alerts: {} states captured in {captured_in:?}; rule tests and checks done in {:?}",
        states.len() + 1,
        started.elapsed()
    );
}
