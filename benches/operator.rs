//! The operator at scale: waves of Dapr Components applied as fast as the API server takes them,
//! an idle period, and an operator restart, against a real control plane, a real nats-server and
//! the release operator binary as a separate process. Run it with `test-env/bench.sh` (see
//! `bench/README.md`); results go to `bench/results/`.
//!
//! ```text
//! cargo bench --bench operator -- [--sizes 100,1000] [--scenarios wave,idle,restart]
//!     [--resync 30s] [--noise-per-component 2] [--in-flight 64] [--out bench/results]
//!     [--operator-args "--concurrency 32"]
//! ```
//!
//! Each size gets a fresh control plane, nats-server and operator, so sizes do not influence
//! each other. Scenarios run in order on the same objects: `idle` and `restart` need `wave`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jetstream_kv_operator::crd::KeyValueBucket;
use jetstream_kv_operator::dapr::Component;
use k8s_openapi::api::core::v1::{Event, Namespace};
use kube::api::{ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use support::ControlPlane;
use support::cluster::NatsCluster;
use support::nats::NatsServer;
use support::operator::Operator;

const NAMESPACES: usize = 20;
const NOISE_TYPES: [&str; 5] = [
    "state.redis",
    "pubsub.kafka",
    "bindings.cron",
    "secretstores.kubernetes",
    "state.postgresql",
];

struct Options {
    sizes: Vec<usize>,
    scenarios: Vec<String>,
    resync: Duration,
    noise_per_component: usize,
    in_flight: usize,
    out: PathBuf,
    operator_args: Vec<String>,
    /// A three-node JetStream cluster and R3 buckets instead of one nats-server.
    cluster: bool,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        sizes: vec![100, 1000],
        scenarios: vec!["wave".into(), "idle".into(), "restart".into()],
        resync: Duration::from_secs(30),
        noise_per_component: 2,
        in_flight: 64,
        out: support::repo_root().join("bench/results"),
        operator_args: Vec::new(),
        cluster: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        // `cargo bench` passes --bench to harness = false targets.
        if arg == "--bench" {
            continue;
        }
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--sizes" => {
                o.sizes = value()?
                    .split(',')
                    .map(|s| s.trim().parse().map_err(|_| format!("bad size {s:?}")))
                    .collect::<Result<_, _>>()?
            }
            "--scenarios" => o.scenarios = value()?.split(',').map(str::to_string).collect(),
            "--resync" => o.resync = jetstream_kv_operator::cli::parse_duration(&value()?)?,
            "--noise-per-component" => {
                o.noise_per_component = value()?.parse().map_err(|e| format!("{e}"))?
            }
            "--in-flight" => o.in_flight = value()?.parse().map_err(|e| format!("{e}"))?,
            "--out" => o.out = PathBuf::from(value()?),
            "--cluster" => o.cluster = true,
            "--operator-args" => {
                o.operator_args = value()?.split_whitespace().map(str::to_string).collect()
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    for s in &o.scenarios {
        if !["wave", "idle", "restart"].contains(&s.as_str()) {
            return Err(format!("unknown scenario {s:?}: use wave, idle, restart"));
        }
    }
    Ok(o)
}

fn main() {
    let options = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    std::fs::create_dir_all(&options.out).expect("results directory");
    for &size in &options.sizes {
        runtime.block_on(run_size(&options, size));
    }
    write_readme(&options.out);
    progress(&format!(
        "results in {} (README.md regenerated)",
        options.out.display()
    ));
}

fn progress(message: &str) {
    eprintln!(
        "[bench {}] {message}",
        jiff::Timestamp::now().strftime("%H:%M:%S")
    );
}

/// Everything one size runs against.
struct Env {
    cp: ControlPlane,
    nats: Nats,
    operator: Operator,
    operator_args: Vec<String>,
    client: Client,
}

/// One nats-server, or a three-node cluster whose buckets get three replicas.
enum Nats {
    Single(NatsServer),
    Cluster(NatsCluster),
}

impl Nats {
    fn url(&self) -> String {
        match self {
            Nats::Single(s) => s.url(),
            Nats::Cluster(c) => c.url(),
        }
    }

    /// `/jsz`; on a cluster the API counters summed over the nodes, the streams of node 1 (which
    /// holds a replica of every R3 stream).
    fn jsz(&self) -> Value {
        match self {
            Nats::Single(s) => s.monitor("/jsz"),
            Nats::Cluster(c) => {
                let mut jsz = c.monitor(0, "/jsz");
                for field in ["total", "errors"] {
                    let sum: f64 = (0..3)
                        .map(|i| {
                            c.monitor(i, "/jsz")["api"][field]
                                .as_f64()
                                .unwrap_or_default()
                        })
                        .sum();
                    jsz["api"][field] = json!(sum);
                }
                jsz
            }
        }
    }

    fn varz(&self) -> Value {
        match self {
            Nats::Single(s) => s.varz(),
            Nats::Cluster(c) => c.monitor(0, "/varz"),
        }
    }

    /// The process whose CPU and memory are recorded (node 1 of a cluster).
    fn pid(&self) -> Option<u32> {
        match self {
            Nats::Single(s) => s.pid(),
            Nats::Cluster(c) => c.pid(0),
        }
    }

    /// Bucket settings of the wave's Components.
    fn settings(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            Nats::Single(_) => &[],
            Nats::Cluster(_) => &[("replicas", "3")],
        }
    }
}

impl Env {
    fn start_operator(kubeconfig: &Path, args: &[String]) -> Operator {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Operator::start(kubeconfig, &args)
    }
}

async fn run_size(options: &Options, size: usize) {
    progress(&format!(
        "size {size}: starting control plane, nats-server and operator"
    ));
    let cp = ControlPlane::start();
    cp.install_crds();
    let nats = if options.cluster {
        Nats::Cluster(NatsCluster::start())
    } else {
        Nats::Single(NatsServer::start())
    };
    let resync = format!("{}s", options.resync.as_secs());
    let mut operator_args: Vec<String> = ["--resync-interval", &resync, "--log-level", "info"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    operator_args.extend(options.operator_args.iter().cloned());
    let operator = Env::start_operator(&cp.kubeconfig, &operator_args);
    let client = support::client_for(&cp.kubeconfig).await;
    let mut env = Env {
        cp,
        nats,
        operator,
        operator_args,
        client,
    };
    wait_operator_ready(&env.operator, Duration::from_secs(60)).await;
    let date = jiff::Timestamp::now().strftime("%Y-%m-%dT%H%M").to_string();
    let mut machine = machine(&env);
    machine["operator_args"] = json!(env.operator_args.join(" "));
    if options.cluster {
        machine["nats"] = json!("3-node JetStream cluster, R3 buckets");
    }

    let namespaces: Vec<String> = (0..NAMESPACES)
        .map(|i| format!("bench-{i:02}-{}", support::random_suffix()))
        .collect();
    let ns_api: Api<Namespace> = Api::all(env.client.clone());
    for ns in &namespaces {
        let object: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns}})).expect("namespace");
        ns_api
            .create(&PostParams::default(), &object)
            .await
            .expect("create namespace");
    }

    if !options.scenarios.iter().any(|s| s == "wave") {
        progress("nothing to do without the wave scenario");
        return;
    }
    let wave = wave(&env, options, size, &namespaces).await;
    save(options, &date, "wave", size, &machine, wave);

    if options.scenarios.iter().any(|s| s == "idle") {
        let idle = idle(&env, options, size).await;
        save(options, &date, "idle", size, &machine, idle);
    }
    if options.scenarios.iter().any(|s| s == "restart") {
        let restart = restart(&mut env, size).await;
        save(options, &date, "restart", size, &machine, restart);
    }
    progress(&format!("size {size}: done; stopping the servers"));
}

fn save(options: &Options, date: &str, scenario: &str, size: usize, machine: &Value, mut v: Value) {
    v["scenario"] = json!(scenario);
    v["components"] = json!(size);
    v["date"] = json!(date);
    v["machine"] = machine.clone();
    let path = options.out.join(format!("{date}-{scenario}-{size}.json"));
    let text = serde_json::to_string_pretty(&v).expect("JSON") + "\n";
    std::fs::write(&path, text).expect("write result");
    progress(&format!("wrote {}", path.display()));
}

async fn wait_operator_ready(operator: &Operator, timeout: Duration) -> Duration {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if matches!(operator.http_get("/readyz"), Some((200, _))) {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the operator was not ready after {timeout:?}:\n{}",
        operator.log_tail()
    );
}

// ---------------------------------------------------------------------------------------------
// Scenario 1: the wave.

/// When each KeyValueBucket was first seen Ready by the benchmark's own watch.
#[derive(Default)]
struct ReadySeen {
    at: HashMap<String, Instant>,
}

fn watch_ready(client: &Client) -> Arc<Mutex<ReadySeen>> {
    let seen = Arc::new(Mutex::new(ReadySeen::default()));
    let api: Api<KeyValueBucket> = Api::all(client.clone());
    let sink = seen.clone();
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(event) = stream.next().await {
            let Ok(kvb) = event else { continue };
            let ready = kvb.condition("Ready").is_some_and(|c| c.status == "True");
            if ready {
                let key = format!("{}/{}", kvb.namespace().unwrap_or_default(), kvb.name_any());
                let mut s = sink.lock().expect("lock");
                s.at.entry(key).or_insert_with(Instant::now);
            }
        }
    });
    seen
}

fn jetstream_component(
    ns: &str,
    name: &str,
    url: &str,
    bucket: &str,
    settings: &[(&str, &str)],
) -> Component {
    support::ComponentManifest::store(ns, name, url, bucket)
        .settings(settings)
        .component()
}

fn noise_component(ns: &str, name: &str, i: usize) -> Component {
    let type_ = NOISE_TYPES[i % NOISE_TYPES.len()];
    support::ComponentManifest::new(ns, name)
        .type_(type_)
        .item("host", &format!("{name}.example:6379"))
        .raw_item(json!({"name": "enableTLS", "value": false}))
        .item_from_secret("password", "redis", Some("password"))
        .component()
}

/// A point-in-time reading of every counter the benchmark compares.
struct Snapshot {
    at: Instant,
    apiserver: BTreeMap<String, f64>,
    operator: BTreeMap<String, f64>,
    jsz_api_total: f64,
    jsz_api_errors: f64,
    streams: f64,
    operator_proc: Proc,
    apiserver_proc: Proc,
    nats_proc: Proc,
}

#[derive(Clone, Copy, Default)]
struct Proc {
    cpu_seconds: f64,
    rss_mib: f64,
    hwm_mib: f64,
}

fn proc_stats(pid: Option<u32>) -> Proc {
    let Some(pid) = pid else {
        return Proc::default();
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu_seconds = stat
        .rfind(')')
        .map(|i| stat[i + 1..].split_whitespace().collect::<Vec<_>>())
        .and_then(|f| {
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        })
        .unwrap_or_default();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |field: &str| {
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_default()
    };
    Proc {
        cpu_seconds,
        rss_mib: kib("VmRSS:") / 1024.0,
        hwm_mib: kib("VmHWM:") / 1024.0,
    }
}

fn label<'a>(series: &'a str, name: &str) -> &'a str {
    let needle = format!("{name}=\"");
    series
        .find(&needle)
        .map(|i| &series[i + needle.len()..])
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("")
}

async fn snapshot(env: &Env) -> Snapshot {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("request");
    let text = env.client.request_text(request).await.unwrap_or_default();
    // Only the request counter is kept: the API server exposes thousands of series.
    let apiserver = support::fixtures::samples(&text)
        .into_iter()
        .filter(|(k, _)| k.starts_with("apiserver_request_total{"))
        .map(|(k, v)| {
            let key = format!(
                "{} {}{}{}",
                label(&k, "verb"),
                label(&k, "resource"),
                if label(&k, "subresource").is_empty() {
                    ""
                } else {
                    "/"
                },
                label(&k, "subresource")
            );
            (key, v)
        })
        .fold(BTreeMap::new(), |mut m, (k, v)| {
            *m.entry(k).or_insert(0.0) += v;
            m
        });
    let operator = env
        .operator
        .http_get("/metrics")
        .map(|(_, body)| support::fixtures::samples(&body))
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.starts_with("jetstream_kv_"))
        .collect();
    let jsz = env.nats.jsz();
    Snapshot {
        at: Instant::now(),
        apiserver,
        operator,
        jsz_api_total: jsz["api"]["total"].as_f64().unwrap_or_default(),
        jsz_api_errors: jsz["api"]["errors"].as_f64().unwrap_or_default(),
        streams: jsz["streams"].as_f64().unwrap_or_default(),
        operator_proc: proc_stats(env.operator.pid()),
        apiserver_proc: proc_stats(env.cp.apiserver_pid()),
        nats_proc: proc_stats(env.nats.pid()),
    }
}

const WRITE_VERBS: [&str; 5] = ["POST", "PUT", "PATCH", "APPLY", "DELETE"];
const MUTATING_NATS: [&str; 3] = ["create", "update", "delete"];

/// What changed between two snapshots. `own_creates` are the benchmark's Component POSTs, taken
/// out of the API server's write count.
fn delta(before: &Snapshot, after: &Snapshot, own_creates: f64) -> Value {
    let diff = |a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>| -> BTreeMap<String, f64> {
        b.iter()
            .map(|(k, v)| (k.clone(), v - a.get(k).copied().unwrap_or_default()))
            .filter(|(_, v)| *v != 0.0)
            .collect()
    };
    let api = diff(&before.apiserver, &after.apiserver);
    let writes: BTreeMap<String, f64> = api
        .iter()
        .filter(|(k, _)| WRITE_VERBS.iter().any(|v| k.starts_with(&format!("{v} "))))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    // Writes the operator makes: its resources, Component metadata (not the benchmark's creates)
    // and Events. Everything else (the API server's own leases, ...) is listed apart.
    let operator_resource = |k: &str| {
        let resource = k.split(' ').nth(1).unwrap_or("");
        resource.starts_with("keyvaluebuckets")
            || resource.starts_with("events")
            || (resource.starts_with("components") && !k.starts_with("POST "))
    };
    let operator_writes: f64 = writes
        .iter()
        .filter(|(k, _)| operator_resource(k))
        .map(|(_, v)| v)
        .sum();
    let other_writes: f64 = writes
        .iter()
        .filter(|(k, _)| !operator_resource(k))
        .map(|(_, v)| v)
        .sum::<f64>()
        - own_creates;
    let op = diff(&before.operator, &after.operator);
    let sum_prefix = |m: &BTreeMap<String, f64>, prefix: &str| -> f64 {
        m.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    };
    let op_writes = sum_prefix(&op, "jetstream_kv_api_writes_total");
    let op_nats = sum_prefix(&op, "jetstream_kv_nats_requests_total");
    let op_nats_mutating: f64 = MUTATING_NATS
        .iter()
        .map(|k| {
            op.get(&format!("jetstream_kv_nats_requests_total{{kind=\"{k}\"}}"))
                .copied()
                .unwrap_or_default()
        })
        .sum();
    let proc = |a: Proc, b: Proc| {
        json!({
            "cpu_seconds": round(b.cpu_seconds - a.cpu_seconds, 2),
            "rss_mib": round(b.rss_mib, 1),
            "peak_rss_mib": round(b.hwm_mib, 1),
        })
    };
    json!({
        "seconds": round((after.at - before.at).as_secs_f64(), 2),
        "apiserver": {
            "operator_writes": round(operator_writes, 2),
            "other_writes": round(other_writes, 2),
            "writes_by_verb_and_resource": writes,
            "reads_by_verb_and_resource": api.iter()
                .filter(|(k, _)| !WRITE_VERBS.iter().any(|v| k.starts_with(&format!("{v} "))))
                .map(|(k, v)| (k.clone(), *v)).collect::<BTreeMap<_, _>>(),
        },
        "operator_metrics": {
            "api_writes": round(op_writes, 2),
            "nats_requests": round(op_nats, 2),
            "nats_mutating_requests": round(op_nats_mutating, 2),
            "reconciles": round(sum_prefix(&op, "jetstream_kv_reconciles_total"), 2),
            "by_series": op,
        },
        "nats_server": {
            "jetstream_api_requests": round(after.jsz_api_total - before.jsz_api_total, 2),
            "jetstream_api_errors": round(after.jsz_api_errors - before.jsz_api_errors, 2),
            "streams": after.streams,
        },
        "operator_process": proc(before.operator_proc, after.operator_proc),
        "apiserver_process": proc(before.apiserver_proc, after.apiserver_proc),
        "nats_server_process": proc(before.nats_proc, after.nats_proc),
    })
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    // `+ 0.0` turns -0.0 into 0.0.
    (v * f).round() / f + 0.0
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn wave(env: &Env, options: &Options, size: usize, namespaces: &[String]) -> Value {
    let noise = size * options.noise_per_component;
    progress(&format!(
        "wave: {size} state.jetstream Components and {noise} others across {NAMESPACES} namespaces, {} creates in flight",
        options.in_flight
    ));
    let load_before = loadavg();
    let seen = watch_ready(&env.client);
    let before = snapshot(env).await;
    let url = env.nats.url();
    let settings = env.nats.settings();
    let run = support::random_suffix();

    // Interleave the noise with ours, as a real cluster's Components come.
    let mut objects: Vec<(bool, Component)> = Vec::with_capacity(size + noise);
    let (mut j, mut n) = (0usize, 0usize);
    while j < size || n < noise {
        if j < size {
            let ns = &namespaces[j % NAMESPACES];
            let name = format!("kv-{j:05}");
            objects.push((
                true,
                jetstream_component(ns, &name, &url, &format!("b{run}_{j}"), settings),
            ));
            j += 1;
        }
        for _ in 0..options.noise_per_component {
            if n < noise {
                let ns = &namespaces[n % NAMESPACES];
                objects.push((false, noise_component(ns, &format!("other-{n:05}"), n)));
                n += 1;
            }
        }
    }

    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let retries = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let first_apply = Instant::now();
    futures::stream::iter(objects)
        .map(|(ours, component)| {
            let client = env.client.clone();
            let created = created.clone();
            let retries = retries.clone();
            async move {
                let ns = component.namespace().unwrap_or_default();
                let key = format!("{ns}/{}", component.name_any());
                let api: Api<Component> = Api::namespaced(client, &ns);
                let mut attempt = 0;
                loop {
                    match api.create(&PostParams::default(), &component).await {
                        Ok(_) => break,
                        Err(e) if attempt < 10 => {
                            attempt += 1;
                            retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if attempt == 1 {
                                progress(&format!("create {key} failed, retrying: {e}"));
                            }
                            tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                        }
                        Err(e) => panic!("create {key}: {e}"),
                    }
                }
                if ours {
                    created.lock().expect("lock").insert(key, Instant::now());
                }
            }
        })
        .buffer_unordered(options.in_flight)
        .collect::<Vec<()>>()
        .await;
    let last_apply = Instant::now();
    let apply_seconds = (last_apply - first_apply).as_secs_f64();
    progress(&format!(
        "wave: {} Components applied in {apply_seconds:.1}s ({:.0}/s); waiting for {size} KeyValueBuckets Ready",
        size + noise,
        (size + noise) as f64 / apply_seconds
    ));

    let timeout = Duration::from_secs(120) + Duration::from_millis(100 * size as u64);
    let mut last_report = Instant::now();
    let all_ready = loop {
        let ready = seen.lock().expect("lock").at.len();
        if ready >= size {
            break true;
        }
        if last_apply.elapsed() > timeout {
            progress(&format!(
                "wave: only {ready}/{size} Ready after {timeout:?}"
            ));
            break false;
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            progress(&format!(
                "wave: {ready}/{size} Ready, {:.0}s after the last apply",
                last_apply.elapsed().as_secs_f64()
            ));
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let at_ready = snapshot(env).await;
    let (ready_at, latencies) = {
        let seen = seen.lock().expect("lock");
        let created = created.lock().expect("lock");
        let last = seen.at.values().max().copied().unwrap_or(last_apply);
        let mut l: Vec<f64> = created
            .iter()
            .filter_map(|(k, c)| Some(seen.at.get(k)?.saturating_duration_since(*c).as_secs_f64()))
            .collect();
        l.sort_by(f64::total_cmp);
        (last, l)
    };
    progress(&format!(
        "wave: all Ready {:.1}s after the first apply, {:.1}s after the last; settling",
        (ready_at - first_apply).as_secs_f64(),
        ready_at.saturating_duration_since(last_apply).as_secs_f64()
    ));
    // The reconciles that Ready itself triggers (our own KeyValueBucket appearing in the watch)
    // come after; wait until the operator is quiet so they are counted.
    let settled = settle(env).await;
    let settle_snapshot = snapshot(env).await;

    let events = count_events(&env.client, namespaces).await;
    let own_creates = (size + noise) as f64;
    let to_ready = delta(&before, &at_ready, own_creates);
    let to_settled = delta(&before, &settle_snapshot, own_creates);
    let per = |v: &Value| round(v.as_f64().unwrap_or_default() / size as f64, 2);
    progress(&format!(
        "wave: per Component: {} API writes (operator metrics), {} (API server), {} NATS requests (operator), {} (nats-server); operator CPU {}s, peak RSS {} MiB",
        per(&to_settled["operator_metrics"]["api_writes"]),
        per(&to_settled["apiserver"]["operator_writes"]),
        per(&to_settled["operator_metrics"]["nats_requests"]),
        per(&to_settled["nats_server"]["jetstream_api_requests"]),
        to_settled["operator_process"]["cpu_seconds"],
        to_settled["operator_process"]["peak_rss_mib"],
    ));
    json!({
        "load_before": load_before,
        "load_after": loadavg(),
        "noise_components": noise,
        "namespaces": NAMESPACES,
        "creates_in_flight": options.in_flight,
        "create_retries": retries.load(std::sync::atomic::Ordering::Relaxed),
        "all_ready": all_ready,
        "apply_seconds": round(apply_seconds, 2),
        "all_ready_after_first_apply_seconds": round((ready_at - first_apply).as_secs_f64(), 2),
        "all_ready_after_last_apply_seconds": round(ready_at.saturating_duration_since(last_apply).as_secs_f64(), 2),
        "latency_note": "per Component: from the create response to the first watch event showing Ready=True (benchmark clocks; creationTimestamp and lastTransitionTime only have second resolution)",
        "latency_seconds": {
            "count": latencies.len(),
            "p50": round(percentile(&latencies, 50.0), 3),
            "p95": round(percentile(&latencies, 95.0), 3),
            "p99": round(percentile(&latencies, 99.0), 3),
            "max": round(latencies.last().copied().unwrap_or(f64::NAN), 3),
        },
        "per_component": {
            "api_writes_operator_metrics": per(&to_settled["operator_metrics"]["api_writes"]),
            "api_writes_apiserver": per(&to_settled["apiserver"]["operator_writes"]),
            "nats_requests_operator_metrics": per(&to_settled["operator_metrics"]["nats_requests"]),
            "nats_requests_nats_server": per(&to_settled["nats_server"]["jetstream_api_requests"]),
            "nats_creates": per(&to_settled["operator_metrics"]["by_series"]["jetstream_kv_nats_requests_total{kind=\"create\"}"]),
            "reconciles": per(&to_settled["operator_metrics"]["reconciles"]),
            "api_writes_at_all_ready": per(&to_ready["operator_metrics"]["api_writes"]),
            "nats_requests_at_all_ready": per(&to_ready["operator_metrics"]["nats_requests"]),
        },
        "settle_seconds": round(settled.as_secs_f64(), 1),
        "events_by_reason": events,
        "until_all_ready": to_ready,
        "until_settled": to_settled,
    })
}

/// Waits until the operator's reconcile counter has not moved for 3 s (at most 60 s).
async fn settle(env: &Env) -> Duration {
    let started = Instant::now();
    let reconciles = || {
        env.operator
            .http_get("/metrics")
            .and_then(|(_, body)| {
                support::fixtures::samples(&body)
                    .get("jetstream_kv_reconciles_total")
                    .copied()
            })
            .unwrap_or_default()
    };
    let mut last = reconciles();
    let mut quiet_since = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = reconciles();
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    started.elapsed()
}

async fn count_events(client: &Client, namespaces: &[String]) -> BTreeMap<String, u64> {
    let mut by_reason = BTreeMap::new();
    for ns in namespaces {
        let api: Api<Event> = Api::namespaced(client.clone(), ns);
        let Ok(list) = api.list(&ListParams::default()).await else {
            continue;
        };
        for e in list {
            *by_reason
                .entry(e.reason.unwrap_or_default())
                .or_insert(0u64) += e.count.unwrap_or(1).max(1) as u64;
        }
    }
    by_reason
}

// ---------------------------------------------------------------------------------------------
// Scenario 2: idle.

async fn idle(env: &Env, options: &Options, size: usize) -> Value {
    let period = options.resync * 3;
    progress(&format!(
        "idle: {size} Ready KeyValueBuckets for three resync periods ({period:?})"
    ));
    let load_before = loadavg();
    let before = snapshot(env).await;
    tokio::time::sleep(period).await;
    let after = snapshot(env).await;
    let d = delta(&before, &after, 0.0);
    progress(&format!(
        "idle: {} API writes (operator metrics), {} (API server), {} mutating NATS requests, {} NATS reads; CPU {}s, RSS {} MiB",
        d["operator_metrics"]["api_writes"],
        d["apiserver"]["operator_writes"],
        d["operator_metrics"]["nats_mutating_requests"],
        d["nats_server"]["jetstream_api_requests"],
        d["operator_process"]["cpu_seconds"],
        d["operator_process"]["rss_mib"],
    ));
    json!({
        "load_before": load_before,
        "load_after": loadavg(),
        "resync_seconds": options.resync.as_secs(),
        "idle_seconds": period.as_secs(),
        "idle": d,
    })
}

// ---------------------------------------------------------------------------------------------
// Scenario 3: restart.

async fn restart(env: &mut Env, size: usize) -> Value {
    progress(&format!(
        "restart: SIGTERM the operator and start it again with {size} Ready KeyValueBuckets"
    ));
    let load_before = loadavg();
    let before = snapshot(env).await;
    let (stop_took, status) = env.operator.terminate();
    let started = Instant::now();
    env.operator = Env::start_operator(&env.cp.kubeconfig, &env.operator_args);
    let ready_after = wait_operator_ready(&env.operator, Duration::from_secs(120)).await;
    // Every state.jetstream Component has been reconciled by the new process and found Ready
    // when the new process's bucket gauge counts all of them.
    let deadline = Duration::from_secs(120) + Duration::from_millis(50 * size as u64);
    let verified = loop {
        let ready = env
            .operator
            .http_get("/metrics")
            .and_then(|(_, body)| {
                support::fixtures::samples(&body)
                    .get("jetstream_kv_buckets{ready=\"true\"}")
                    .copied()
            })
            .unwrap_or_default();
        if ready as usize >= size {
            break Some(started.elapsed());
        }
        if started.elapsed() > deadline {
            progress(&format!("restart: only {ready}/{size} re-verified"));
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let settled = settle(env).await;
    // The new process's counters start at zero: compare its totals, and the servers' deltas.
    let after = snapshot(env).await;
    let zero = Snapshot {
        at: started,
        apiserver: before.apiserver.clone(),
        operator: BTreeMap::new(),
        jsz_api_total: before.jsz_api_total,
        jsz_api_errors: before.jsz_api_errors,
        streams: before.streams,
        operator_proc: Proc::default(),
        apiserver_proc: before.apiserver_proc,
        nats_proc: before.nats_proc,
    };
    let d = delta(&zero, &after, 0.0);
    progress(&format!(
        "restart: ready (caches synced) after {:.2}s, every bucket re-verified after {}; {} API writes (operator metrics), {} (API server), {} mutating NATS requests",
        ready_after.as_secs_f64(),
        verified
            .map(|v| format!("{:.2}s", v.as_secs_f64()))
            .unwrap_or("never".into()),
        d["operator_metrics"]["api_writes"],
        d["apiserver"]["operator_writes"],
        d["operator_metrics"]["nats_mutating_requests"],
    ));
    json!({
        "load_before": load_before,
        "load_after": loadavg(),
        "graceful_stop_seconds": round(stop_took.as_secs_f64(), 2),
        "exit_status": status.map(|s| s.to_string()),
        "caches_synced_seconds": round(ready_after.as_secs_f64(), 2),
        "all_reverified_seconds": verified.map(|v| round(v.as_secs_f64(), 2)),
        "reverified_note": "from spawning the new process until its jetstream_kv_buckets{ready=\"true\"} gauge counts every state.jetstream Component (each one reconciled by the new process and found Ready)",
        "settle_seconds": round(settled.as_secs_f64(), 1),
        "after_restart": d,
    })
}

// ---------------------------------------------------------------------------------------------
// Machine and README.

fn command_output(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine(env: &Env) -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_default();
    let varz = env.nats.varz();
    let dirty =
        !command_output("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_gib": round(mem_kib / 1024.0 / 1024.0, 1),
        "cpu_model": model,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "kubernetes": env.cp.version,
        "nats_server": varz["version"],
        "operator": env!("CARGO_PKG_VERSION"),
        "rustc": command_output("rustc", &["--version"]),
        "git_commit": format!("{}{}", command_output("git", &["rev-parse", "--short", "HEAD"]), if dirty { "-dirty" } else { "" }),
    })
}

/// A run's name in the tables: its file name and commit.
fn run_label(file: &str, v: &Value) -> String {
    let commit = v["machine"]["git_commit"].as_str().unwrap_or("?");
    format!("{} ({commit})", file.trim_end_matches(".json"))
}

/// Regenerates `README.md` from every result file in `dir`.
fn write_readme(dir: &Path) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    let results: Vec<(String, Value)> = files
        .iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(p).ok()?;
            Some((
                p.file_name()?.to_string_lossy().into_owned(),
                serde_json::from_str(&text).ok()?,
            ))
        })
        .collect();
    let of = |scenario: &'static str| {
        results
            .iter()
            .filter(move |(_, v)| v["scenario"] == scenario)
    };
    let num = |v: &Value| match v {
        Value::Number(n) => n.to_string(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let mut md = String::from(
        "# Benchmark results\n\n\
         Generated by `test-env/bench.sh` from the JSON files in this directory (one per run and\n\
         scenario); see [../README.md](../README.md) for the method, the targets and the analysis.\n\
         Load is `/proc/loadavg` (1, 5, 15 min) when the scenario started: the machine is shared, so\n\
         runs under load are noisier.\n\n",
    );
    let mut machines = BTreeMap::new();
    for (_, v) in &results {
        let m = &v["machine"];
        machines.insert(
            format!(
                "{} CPUs ({}), {} GiB, Linux {}; Kubernetes {}, nats-server {}, {}",
                num(&m["nproc"]),
                m["cpu_model"].as_str().unwrap_or(""),
                num(&m["memory_gib"]),
                m["kernel"].as_str().unwrap_or(""),
                m["kubernetes"].as_str().unwrap_or(""),
                m["nats_server"].as_str().unwrap_or(""),
                m["rustc"].as_str().unwrap_or(""),
            ),
            (),
        );
    }
    md += "Machine:\n\n";
    for m in machines.keys() {
        md += &format!("- {m}\n");
    }
    md += "\n## Wave\n\n\
           | run (commit) | operator flags | Components (+ others) | load | apply s | all Ready after first / last apply s | latency p50 / p95 / p99 s | API writes per Component (operator / API server) | NATS requests per Component (operator / nats-server) | reconciles per Component | operator CPU s | peak RSS MiB | Events |\n\
           |---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for (file, v) in of("wave") {
        let pc = &v["per_component"];
        let l = &v["latency_seconds"];
        let events = v["events_by_reason"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        md += &format!(
            "| {} | {} | {} (+{}) | {} | {} | {} / {}{} | {} / {} / {} | {} / {} | {} / {} | {} | {} | {} | {} |\n",
            run_label(file, v),
            v["machine"]["operator_args"]
                .as_str()
                .unwrap_or("--resync-interval 30s --log-level info"),
            num(&v["components"]),
            num(&v["noise_components"]),
            v["load_before"].as_str().unwrap_or(""),
            num(&v["apply_seconds"]),
            num(&v["all_ready_after_first_apply_seconds"]),
            num(&v["all_ready_after_last_apply_seconds"]),
            if v["all_ready"] == true {
                ""
            } else {
                " (not all Ready)"
            },
            num(&l["p50"]),
            num(&l["p95"]),
            num(&l["p99"]),
            num(&pc["api_writes_operator_metrics"]),
            num(&pc["api_writes_apiserver"]),
            num(&pc["nats_requests_operator_metrics"]),
            if pc["nats_creates"].is_null() {
                num(&pc["nats_requests_nats_server"])
            } else {
                format!(
                    "{} ({} creates)",
                    num(&pc["nats_requests_nats_server"]),
                    num(&pc["nats_creates"])
                )
            },
            num(&pc["reconciles"]),
            num(&v["until_settled"]["operator_process"]["cpu_seconds"]),
            num(&v["until_settled"]["operator_process"]["peak_rss_mib"]),
            events,
        );
    }
    md += "\n## Idle (three resync periods)\n\n\
           | run (commit) | Components | load | seconds (resync) | API writes (operator / API server) | mutating NATS requests | NATS reads (nats-server) | reconciles | operator CPU s | RSS / peak MiB |\n\
           |---|---|---|---|---|---|---|---|---|---|\n";
    for (file, v) in of("idle") {
        let d = &v["idle"];
        md += &format!(
            "| {} | {} | {} | {} ({}) | {} / {} | {} | {} | {} | {} | {} / {} |\n",
            run_label(file, v),
            num(&v["components"]),
            v["load_before"].as_str().unwrap_or(""),
            num(&v["idle_seconds"]),
            num(&v["resync_seconds"]),
            num(&d["operator_metrics"]["api_writes"]),
            num(&d["apiserver"]["operator_writes"]),
            num(&d["operator_metrics"]["nats_mutating_requests"]),
            num(&d["nats_server"]["jetstream_api_requests"]),
            num(&d["operator_metrics"]["reconciles"]),
            num(&d["operator_process"]["cpu_seconds"]),
            num(&d["operator_process"]["rss_mib"]),
            num(&d["operator_process"]["peak_rss_mib"]),
        );
    }
    md += "\n## Restart (SIGTERM, start again, everything Ready)\n\n\
           | run (commit) | Components | load | caches synced s | all re-verified s | API writes (operator / API server) | mutating NATS requests | NATS reads | operator CPU s | peak RSS MiB |\n\
           |---|---|---|---|---|---|---|---|---|---|\n";
    for (file, v) in of("restart") {
        let d = &v["after_restart"];
        md += &format!(
            "| {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} |\n",
            run_label(file, v),
            num(&v["components"]),
            v["load_before"].as_str().unwrap_or(""),
            num(&v["caches_synced_seconds"]),
            num(&v["all_reverified_seconds"]),
            num(&d["operator_metrics"]["api_writes"]),
            num(&d["apiserver"]["operator_writes"]),
            num(&d["operator_metrics"]["nats_mutating_requests"]),
            num(&d["nats_server"]["jetstream_api_requests"]),
            num(&d["operator_process"]["cpu_seconds"]),
            num(&d["operator_process"]["peak_rss_mib"]),
        );
    }
    std::fs::write(dir.join("README.md"), md).expect("write README.md");
}
