//! The operator at scale: waves of Dapr Components applied as fast as the API server takes them,
//! an idle period, and an operator restart, against a real control plane, a real nats-server and
//! the release operator binary as a separate process. Run it with `test-env/bench.sh` (see
//! `bench/README.md`); results go to `bench/results/`.
//!
//! ```text
//! cargo bench --bench operator -- [--sizes 100,1000] [--scenarios floor,wave,idle,restart]
//!     [--resync 30s] [--noise-per-component 2] [--namespaces 20] [--in-flight 64]
//!     [--floor-in-flight 16] [--cluster] [--out bench/results]
//!     [--operator-args "--concurrency 32"]
//! ```
//!
//! Each size gets a fresh control plane, nats-server and operator, so sizes do not influence
//! each other. The floor runs first, on a control plane of its own and without an operator: the
//! same creates, plus the operator's writes made by the benchmark itself. The other scenarios run
//! in order on the same objects: `idle` and `restart` need `wave`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, future};
use jetstream_kv_operator::crd::{KeyValueBucket, MANAGER};
use jetstream_kv_operator::dapr::Component;
use k8s_openapi::api::core::v1::{Event, Namespace};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};

use support::ControlPlane;
use support::cluster::NatsCluster;
use support::nats::NatsServer;
use support::operator::Operator;

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
    namespaces: usize,
    in_flight: usize,
    floor_in_flight: usize,
    out: PathBuf,
    operator_args: Vec<String>,
    /// A three-node JetStream cluster and R3 buckets instead of one nats-server.
    cluster: bool,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        sizes: vec![100, 1000],
        scenarios: vec![
            "floor".into(),
            "wave".into(),
            "idle".into(),
            "restart".into(),
        ],
        resync: Duration::from_secs(30),
        noise_per_component: 2,
        namespaces: 20,
        in_flight: 64,
        // The operator's default --concurrency: its reconciles, so its writes, in flight.
        floor_in_flight: 16,
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
            "--namespaces" => {
                o.namespaces = value()?.parse().map_err(|e| format!("{e}"))?;
                if o.namespaces == 0 {
                    return Err("--namespaces must be at least 1".into());
                }
            }
            // A platform team's cluster: 10% of the Components are ours, over 100 namespaces.
            "--platform" => {
                o.noise_per_component = 9;
                o.namespaces = 100;
            }
            "--in-flight" => o.in_flight = value()?.parse().map_err(|e| format!("{e}"))?,
            "--floor-in-flight" => {
                o.floor_in_flight = value()?.parse().map_err(|e| format!("{e}"))?
            }
            "--out" => o.out = PathBuf::from(value()?),
            "--cluster" => o.cluster = true,
            "--operator-args" => {
                o.operator_args = value()?.split_whitespace().map(str::to_string).collect()
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    for s in &o.scenarios {
        if !["floor", "wave", "idle", "restart"].contains(&s.as_str()) {
            return Err(format!(
                "unknown scenario {s:?}: use floor, wave, idle, restart"
            ));
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
    let date = jiff::Timestamp::now().strftime("%Y-%m-%dT%H%M").to_string();
    let has = |s: &str| options.scenarios.iter().any(|x| x == s);
    let floor_result = if has("floor") {
        let (floor, machine) = floor(options, size).await;
        let seconds = floor["all_ready_after_first_create_seconds"].as_f64();
        save(options, &date, "floor", size, &machine, floor);
        seconds
    } else {
        None
    };
    if !has("wave") {
        return;
    }
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
    let mut machine = machine(&env.cp, Some(&env.nats));
    machine["operator_args"] = json!(env.operator_args.join(" "));
    if options.cluster {
        machine["nats"] = json!("3-node JetStream cluster, R3 buckets");
    }
    let namespaces = create_namespaces(&env.client, options.namespaces).await;

    let mut wave = wave(&env, options, size, &namespaces).await;
    if let Some(floor) = floor_result {
        let ratio = wave["all_ready_after_first_apply_seconds"]
            .as_f64()
            .map(|w| round(w / floor, 2));
        progress(&format!(
            "wave: {ratio:?} times the floor ({floor}s) measured in this run"
        ));
        wave["floor_seconds"] = json!(floor);
        wave["ratio_to_floor"] = json!(ratio);
    }
    save(options, &date, "wave", size, &machine, wave);

    if has("idle") {
        let idle = idle(&env, options, size).await;
        save(options, &date, "idle", size, &machine, idle);
    }
    if has("restart") {
        let restart = restart(&mut env, size).await;
        save(options, &date, "restart", size, &machine, restart);
    }
    progress(&format!("size {size}: done; stopping the servers"));
}

async fn create_namespaces(client: &Client, n: usize) -> Vec<String> {
    let namespaces: Vec<String> = (0..n)
        .map(|i| format!("bench-{i:03}-{}", support::random_suffix()))
        .collect();
    let ns_api: Api<Namespace> = Api::all(client.clone());
    for ns in &namespaces {
        let object: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns}})).expect("namespace");
        ns_api
            .create(&PostParams::default(), &object)
            .await
            .expect("create namespace");
    }
    namespaces
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
// Scenario 0: the floor.

/// The same creates as the wave, and for each of ours the four writes the operator makes to
/// reach Ready, made by the benchmark itself at the operator's concurrency, on a control plane
/// of its own with no operator: what the API server alone takes. The wave's time divided by
/// this one is the operator's overhead.
async fn floor(options: &Options, size: usize) -> (Value, Value) {
    let noise = size * options.noise_per_component;
    progress(&format!(
        "floor: size {size}: starting a control plane of its own (no operator, no NATS)"
    ));
    let cp = ControlPlane::start();
    cp.install_crds();
    let client = support::client_for(&cp.kubeconfig).await;
    let machine = machine(&cp, None);
    let namespaces = create_namespaces(&client, options.namespaces).await;
    progress(&format!(
        "floor: {size} state.jetstream Components and {noise} others across {} namespaces, {} creates in flight; for each of ours the operator's 4 writes, {} Components in flight",
        namespaces.len(),
        options.in_flight,
        options.floor_in_flight
    ));
    let load_before = loadavg();
    let seen = watch_ready(&client);
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: MANAGER.into(),
            instance: Some("bench-floor".into()),
        },
    );
    let before = snapshot_of(&cp, &client, None, None).await;
    let objects = components(options, size, &namespaces, "nats://127.0.0.1:4222", &[]);
    let retries = Arc::new(AtomicU64::new(0));
    let (tx, rx) = futures::channel::mpsc::unbounded::<Component>();
    let first_create = Instant::now();
    let creates = {
        let client = client.clone();
        let retries = retries.clone();
        let in_flight = options.in_flight;
        async move {
            futures::stream::iter(objects)
                .map(|(ours, component)| {
                    let client = client.clone();
                    let retries = retries.clone();
                    async move { (ours, create(client, component, &retries).await) }
                })
                .buffer_unordered(in_flight)
                .for_each(|(ours, component)| {
                    if ours {
                        let _ = tx.unbounded_send(component);
                    }
                    future::ready(())
                })
                .await;
            Instant::now()
        }
    };
    let writes = rx
        .map(|component| operator_writes(&client, &recorder, component))
        .buffer_unordered(options.floor_in_flight)
        .collect::<Vec<()>>();
    let (last_create, _) = futures::join!(creates, writes);
    let writes_done = Instant::now();
    // Ready as the wave measures it: the benchmark's watch seeing the status written.
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().expect("lock").at.len() < size && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = snapshot_of(&cp, &client, None, None).await;
    let ready_at = seen
        .lock()
        .expect("lock")
        .at
        .values()
        .max()
        .copied()
        .unwrap_or(writes_done);
    let all_ready = seen.lock().expect("lock").at.len() >= size;
    let d = delta(&before, &after, (size + noise) as f64);
    let ready_seconds = (ready_at - first_create).as_secs_f64();
    progress(&format!(
        "floor: creates done after {:.1}s, all writes after {:.1}s, all Ready seen after {ready_seconds:.1}s; {} writes per Component (API server)",
        (last_create - first_create).as_secs_f64(),
        (writes_done - first_create).as_secs_f64(),
        round(
            d["apiserver"]["operator_writes"]
                .as_f64()
                .unwrap_or_default()
                / size as f64,
            2
        ),
    ));
    let value = json!({
        "load_before": load_before,
        "load_after": loadavg(),
        "noise_components": noise,
        "namespaces": namespaces.len(),
        "creates_in_flight": options.in_flight,
        "writes_components_in_flight": options.floor_in_flight,
        "create_retries": retries.load(Ordering::Relaxed),
        "all_ready": all_ready,
        "apply_seconds": round((last_create - first_create).as_secs_f64(), 2),
        "all_writes_done_seconds": round((writes_done - first_create).as_secs_f64(), 2),
        "all_ready_after_first_create_seconds": round(ready_seconds, 2),
        "note": "no operator: the benchmark creates the same Components and, for each state.jetstream one once created, makes the operator's 4 writes in its order (KeyValueBucket apply, its status apply, the Component's annotations apply, one Event) with the given number of Components in flight; time from the first create to the benchmark's watch seeing the last KeyValueBucket Ready",
        "per_component": {
            "api_writes_apiserver": round(d["apiserver"]["operator_writes"].as_f64().unwrap_or_default() / size as f64, 2),
        },
        "floor": d,
    });
    progress(&format!(
        "floor: size {size}: done; stopping its control plane"
    ));
    (value, machine)
}

/// The writes the operator makes for a new `state.jetstream` Component, in its order and shape.
async fn operator_writes(client: &Client, recorder: &Recorder, component: Component) {
    let ns = component.namespace().unwrap_or_default();
    let name = component.name_any();
    let bucket = component
        .spec
        .metadata
        .iter()
        .find(|m| m.name == "bucket")
        .and_then(|m| m.value.as_ref())
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let api: Api<KeyValueBucket> = Api::namespaced(client.clone(), &ns);
    let apply = PatchParams::apply(MANAGER).force();
    let config = json!({"history": 1, "storage": "file", "replicas": 1, "compression": false});
    let object = json!({
        "apiVersion": "jetstreamkv.io/v1alpha1",
        "kind": "KeyValueBucket",
        "metadata": {
            "name": name,
            "namespace": ns,
            "ownerReferences": [{
                "apiVersion": "dapr.io/v1alpha1",
                "kind": "Component",
                "name": name,
                "uid": component.uid().unwrap_or_default(),
                "controller": true,
                "blockOwnerDeletion": true,
            }],
            "labels": {"app.kubernetes.io/managed-by": MANAGER},
        },
        "spec": {
            "component": name,
            "bucket": bucket,
            "servers": ["nats://127.0.0.1:4222"],
            "auth": "none",
            "config": config,
            "onExisting": "verify",
            "deletionPolicy": "retain",
        },
    });
    let annotations = json!({
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name, "namespace": ns, "annotations": {
            "jetstreamkv.io/ready": "true",
            "jetstreamkv.io/reason": "BucketManaged",
            "jetstreamkv.io/observed-generation": component.metadata.generation.unwrap_or_default().to_string(),
        }},
    });
    let event = kube::runtime::events::Event {
        type_: EventType::Normal,
        reason: "BucketCreated".into(),
        note: Some(format!("created bucket {bucket}")),
        action: "Reconcile".into(),
        secondary: None,
    };
    // As the operator does (src/reconcile/report.rs), one after the other: the KeyValueBucket,
    // its status, the Component's annotations, the Event.
    let applied = api
        .patch(&name, &apply, &Patch::Apply(object))
        .await
        .unwrap_or_else(|e| panic!("floor: apply KeyValueBucket {ns}/{name}: {e}"));
    let status = bucket_status(&component, &bucket, &config, applied.metadata.generation);
    api.patch_status(&name, &apply, &Patch::Apply(status))
        .await
        .unwrap_or_else(|e| panic!("floor: apply KeyValueBucket status {ns}/{name}: {e}"));
    Api::<Component>::namespaced(client.clone(), &ns)
        .patch_metadata(&name, &apply, &Patch::Apply(annotations))
        .await
        .unwrap_or_else(|e| panic!("floor: apply Component annotations {ns}/{name}: {e}"));
    recorder
        .publish(&event, &component.object_ref(&()))
        .await
        .unwrap_or_else(|e| panic!("floor: publish an Event for {ns}/{name}: {e}"));
}

/// The KeyValueBucket status the operator writes for a new bucket.
fn bucket_status(
    component: &Component,
    bucket: &str,
    config: &Value,
    generation: Option<i64>,
) -> Value {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let condition = |type_: &str, reason: &str, message: String| {
        json!({"type": type_, "status": "True", "reason": reason, "message": message,
               "observedGeneration": generation, "lastTransitionTime": now})
    };
    json!({
        "apiVersion": "jetstreamkv.io/v1alpha1",
        "kind": "KeyValueBucket",
        "status": {
            "observedGeneration": generation,
            "componentGeneration": component.metadata.generation,
            "conditions": [
                condition("Ready", "BucketManaged", format!("bucket {bucket} exists and matches the Component")),
                condition("CredentialsResolved", "CredentialsResolved", "no credentials needed".into()),
                condition("Connected", "Connected", "connected to nats://127.0.0.1:4222 (nats-server 2.15.1)".into()),
                condition("BucketAvailable", "BucketFound", format!("bucket {bucket} exists (stream KV_{bucket})")),
                condition("ConfigSynced", "ConfigSynced", "the bucket's settings match the Component".into()),
            ],
            "bucket": {"stream": format!("KV_{bucket}"), "managed": true, "serverVersion": "2.15.1",
                       "config": config, "bytes": 0, "values": 0},
        },
    })
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
    /// The control plane's own process: etcd runs embedded in it.
    etcd_proc: Proc,
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
    snapshot_of(&env.cp, &env.client, Some(&env.operator), Some(&env.nats)).await
}

/// The process that runs etcd (embedded) and started kube-apiserver: its parent.
fn etcd_pid(cp: &ControlPlane) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", cp.apiserver_pid()?)).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

async fn snapshot_of(
    cp: &ControlPlane,
    client: &Client,
    operator: Option<&Operator>,
    nats: Option<&Nats>,
) -> Snapshot {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("request");
    let text = client.request_text(request).await.unwrap_or_default();
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
    let operator_metrics = operator
        .and_then(|o| o.http_get("/metrics"))
        .map(|(_, body)| support::fixtures::samples(&body))
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.starts_with("jetstream_kv_"))
        .collect();
    let jsz = nats.map(Nats::jsz).unwrap_or_default();
    Snapshot {
        at: Instant::now(),
        apiserver,
        operator: operator_metrics,
        jsz_api_total: jsz["api"]["total"].as_f64().unwrap_or_default(),
        jsz_api_errors: jsz["api"]["errors"].as_f64().unwrap_or_default(),
        streams: jsz["streams"].as_f64().unwrap_or_default(),
        operator_proc: proc_stats(operator.and_then(Operator::pid)),
        apiserver_proc: proc_stats(cp.apiserver_pid()),
        nats_proc: proc_stats(nats.and_then(Nats::pid)),
        etcd_proc: proc_stats(etcd_pid(cp)),
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
        "etcd_process": proc(before.etcd_proc, after.etcd_proc),
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

/// The Components of one size: `size` of ours, each its own bucket, and `noise_per_component`
/// others per one of ours, interleaved as a real cluster's come, round-robin over the namespaces.
fn components(
    options: &Options,
    size: usize,
    namespaces: &[String],
    url: &str,
    settings: &[(&str, &str)],
) -> Vec<(bool, Component)> {
    let noise = size * options.noise_per_component;
    let run = support::random_suffix();
    let mut objects: Vec<(bool, Component)> = Vec::with_capacity(size + noise);
    let (mut j, mut n) = (0usize, 0usize);
    while j < size || n < noise {
        if j < size {
            let ns = &namespaces[j % namespaces.len()];
            let name = format!("kv-{j:06}");
            objects.push((
                true,
                jetstream_component(ns, &name, url, &format!("b{run}_{j}"), settings),
            ));
            j += 1;
        }
        for _ in 0..options.noise_per_component {
            if n < noise {
                let ns = &namespaces[n % namespaces.len()];
                objects.push((false, noise_component(ns, &format!("other-{n:06}"), n)));
                n += 1;
            }
        }
    }
    objects
}

/// Creates a Component (retrying a few times), and returns it as created.
async fn create(client: Client, component: Component, retries: &AtomicU64) -> Component {
    let ns = component.namespace().unwrap_or_default();
    let key = format!("{ns}/{}", component.name_any());
    let api: Api<Component> = Api::namespaced(client, &ns);
    let mut attempt = 0;
    loop {
        match api.create(&PostParams::default(), &component).await {
            Ok(created) => return created,
            Err(e) if attempt < 10 => {
                attempt += 1;
                retries.fetch_add(1, Ordering::Relaxed);
                if attempt == 1 {
                    progress(&format!("create {key} failed, retrying: {e}"));
                }
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => panic!("create {key}: {e}"),
        }
    }
}

async fn wave(env: &Env, options: &Options, size: usize, namespaces: &[String]) -> Value {
    let noise = size * options.noise_per_component;
    progress(&format!(
        "wave: {size} state.jetstream Components and {noise} others across {} namespaces, {} creates in flight",
        namespaces.len(),
        options.in_flight
    ));
    let load_before = loadavg();
    let seen = watch_ready(&env.client);
    let before = snapshot(env).await;
    let objects = components(
        options,
        size,
        namespaces,
        &env.nats.url(),
        env.nats.settings(),
    );

    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let retries = Arc::new(AtomicU64::new(0));
    let total = objects.len();
    let first_apply = Instant::now();
    let mut done = 0usize;
    futures::stream::iter(objects)
        .map(|(ours, component)| {
            let client = env.client.clone();
            let created = created.clone();
            let retries = retries.clone();
            async move {
                let component = create(client, component, &retries).await;
                if ours {
                    let key = format!(
                        "{}/{}",
                        component.namespace().unwrap_or_default(),
                        component.name_any()
                    );
                    created.lock().expect("lock").insert(key, Instant::now());
                }
            }
        })
        .buffer_unordered(options.in_flight)
        .for_each(|()| {
            // At 100,000 Components the creates take minutes: show them going.
            done += 1;
            if done.is_multiple_of(10_000) && done < total {
                let seconds = first_apply.elapsed().as_secs_f64();
                progress(&format!(
                    "wave: {done}/{total} Components applied in {seconds:.0}s ({:.0}/s); {} Ready",
                    done as f64 / seconds,
                    seen.lock().expect("lock").at.len()
                ));
            }
            future::ready(())
        })
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
        "namespaces": namespaces.len(),
        "operator_rss_before_mib": round(before.operator_proc.rss_mib, 1),
        "creates_in_flight": options.in_flight,
        "create_retries": retries.load(Ordering::Relaxed),
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
    // nats-server's JetStream API counter, sampled while the buckets are re-verified: the read
    // rate the restart puts on NATS.
    let jsz_total = |env: &Env| env.nats.jsz()["api"]["total"].as_f64().unwrap_or_default();
    let mut samples: Vec<(f64, f64)> = vec![(0.0, before.jsz_api_total)];
    let mut last_sample = Instant::now();
    let verified = loop {
        if last_sample.elapsed() >= Duration::from_millis(250) {
            samples.push((started.elapsed().as_secs_f64(), jsz_total(&*env)));
            last_sample = Instant::now();
        }
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
    samples.push((started.elapsed().as_secs_f64(), jsz_total(&*env)));
    // The highest rate over any window of at least one second, and the mean over the re-verify.
    let peak_rate = samples
        .iter()
        .enumerate()
        .filter_map(|(i, &(t0, n0))| {
            let &(t1, n1) = samples[i..].iter().find(|(t, _)| t - t0 >= 1.0)?;
            Some((n1 - n0) / (t1 - t0))
        })
        .fold(0.0, f64::max);
    let reads_until_verified =
        samples.last().map(|s| s.1).unwrap_or_default() - before.jsz_api_total;
    let mean_rate = verified
        .map(|v| v.saturating_sub(ready_after).as_secs_f64().max(0.001))
        .map(|window| reads_until_verified / window);
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
        etcd_proc: before.etcd_proc,
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
        "nats_reads_until_reverified": reads_until_verified,
        "nats_read_rate_mean_per_second": mean_rate.map(|r| round(r, 0)),
        "nats_read_rate_peak_per_second": round(peak_rate, 0),
        "nats_read_rate_note": "nats-server's /jsz api.total sampled every 250 ms from the restart until every bucket was re-verified; mean over the window from caches synced to all re-verified, peak over any window of at least 1 s",
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

fn machine(cp: &ControlPlane, nats: Option<&Nats>) -> Value {
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
    let varz = nats.map(Nats::varz).unwrap_or_default();
    let dirty =
        !command_output("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_gib": round(mem_kib / 1024.0 / 1024.0, 1),
        "cpu_model": model,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "kubernetes": cp.version,
        "nats_server": varz["version"],
        "operator": env!("CARGO_PKG_VERSION"),
        "rustc": command_output("rustc", &["--version"]),
        "git_commit": format!("{}{}", command_output("git", &["rev-parse", "--short", "HEAD"]), if dirty { "-dirty" } else { "" }),
        // Another build of the operator than this commit's (JKO_OPERATOR_BIN), when given.
        "operator_binary": std::env::var("JKO_OPERATOR_BIN").ok(),
    })
}

/// A run's name in the tables: its file name and commit.
fn run_label(file: &str, v: &Value) -> String {
    let commit = v["machine"]["git_commit"].as_str().unwrap_or("?");
    // A binary given by JKO_OPERATOR_BIN is named by its folder.
    let binary = v["machine"]["operator_binary"]
        .as_str()
        .and_then(|b| Path::new(b).parent()?.file_name())
        .map(|d| format!(", operator of {}", d.to_string_lossy()))
        .unwrap_or_default();
    format!("{} ({commit}{binary})", file.trim_end_matches(".json"))
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
    for (_, v) in results.iter().filter(|(_, v)| v["scenario"] != "floor") {
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
           | run (commit) | operator flags | Components (+ others) | load | apply s | all Ready after first / last apply s | × floor | latency p50 / p95 / p99 s | API writes per Component (operator / API server) | NATS requests per Component (operator / nats-server) | reconciles per Component | operator CPU s | peak RSS MiB | Events |\n\
           |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
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
            "| {} | {} | {} (+{}) | {} | {} | {} / {}{} | {} | {} / {} / {} | {} / {} | {} / {} | {} | {} | {} | {} |\n",
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
            num(&v["ratio_to_floor"]),
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
           | run (commit) | Components | load | caches synced s | all re-verified s | API writes (operator / API server) | mutating NATS requests | NATS reads | NATS reads/s mean / peak | operator CPU s | peak RSS MiB |\n\
           |---|---|---|---|---|---|---|---|---|---|---|\n";
    for (file, v) in of("restart") {
        let d = &v["after_restart"];
        md += &format!(
            "| {} | {} | {} | {} | {} | {} / {} | {} | {} | {} / {} | {} | {} |\n",
            run_label(file, v),
            num(&v["components"]),
            v["load_before"].as_str().unwrap_or(""),
            num(&v["caches_synced_seconds"]),
            num(&v["all_reverified_seconds"]),
            num(&d["operator_metrics"]["api_writes"]),
            num(&d["apiserver"]["operator_writes"]),
            num(&d["operator_metrics"]["nats_mutating_requests"]),
            num(&d["nats_server"]["jetstream_api_requests"]),
            num(&v["nats_read_rate_mean_per_second"]),
            num(&v["nats_read_rate_peak_per_second"]),
            num(&d["operator_process"]["cpu_seconds"]),
            num(&d["operator_process"]["peak_rss_mib"]),
        );
    }
    md += &floor_and_series(&results);
    std::fs::write(dir.join("README.md"), md).expect("write README.md");
}

/// The floor runs, and the scale series: one row per run with a wave, the figures per Component.
fn floor_and_series(results: &[(String, Value)]) -> String {
    let num = |v: &Value| match v {
        Value::Number(n) => n.to_string(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let f = |v: f64, digits: i32| {
        if v.is_finite() {
            round(v, digits).to_string()
        } else {
            "-".into()
        }
    };
    let mut md = String::from(
        "\n## Floor (the same writes without the operator)\n\n\
         | run (commit) | Components (+ others) | load | namespaces | creates / Components in flight | creates done s | all writes done s | all Ready seen s | API writes per Component (API server) | kube-apiserver CPU s | etcd (control plane) peak RSS MiB |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (file, v) in results.iter().filter(|(_, v)| v["scenario"] == "floor") {
        md += &format!(
            "| {} | {} (+{}) | {} | {} | {} / {} | {} | {} | {} | {} | {} | {} |\n",
            run_label(file, v),
            num(&v["components"]),
            num(&v["noise_components"]),
            v["load_before"].as_str().unwrap_or(""),
            num(&v["namespaces"]),
            num(&v["creates_in_flight"]),
            num(&v["writes_components_in_flight"]),
            num(&v["apply_seconds"]),
            num(&v["all_writes_done_seconds"]),
            num(&v["all_ready_after_first_create_seconds"]),
            num(&v["per_component"]["api_writes_apiserver"]),
            num(&v["floor"]["apiserver_process"]["cpu_seconds"]),
            num(&v["floor"]["etcd_process"]["peak_rss_mib"]),
        );
    }
    md += "\n## Scale series (per Component)\n\n\
           Per state.jetstream Component: the wave's figures until the operator was quiet. RSS per \
           cached Component: the operator's peak RSS during the wave less its RSS before it, over \
           every Component in the cache (ours and the others).\n\n\
           | run (commit) | Components cached (ours) | namespaces | load | wave s (× floor) | API writes | NATS requests | operator CPU ms | peak RSS MiB (KiB per cached Component) | kube-apiserver / etcd peak RSS MiB | restart: ready / all re-verified s | restart: writes, NATS reads/s mean / peak |\n\
           |---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for (file, v) in results.iter().filter(|(_, v)| v["scenario"] == "wave") {
        let ours = v["components"].as_f64().unwrap_or(f64::NAN);
        let cached = ours + v["noise_components"].as_f64().unwrap_or_default();
        let settled = &v["until_settled"];
        let peak = settled["operator_process"]["peak_rss_mib"]
            .as_f64()
            .unwrap_or(f64::NAN);
        let before = v["operator_rss_before_mib"].as_f64().unwrap_or(f64::NAN);
        let restart_file = file.replace("-wave-", "-restart-");
        let restart = results
            .iter()
            .find(|(f, _)| *f == restart_file)
            .map(|(_, r)| r);
        let (restart_times, restart_reads) = match restart {
            Some(r) => (
                format!(
                    "{} / {}",
                    num(&r["caches_synced_seconds"]),
                    num(&r["all_reverified_seconds"])
                ),
                format!(
                    "{}, {} / {}",
                    num(&r["after_restart"]["apiserver"]["operator_writes"]),
                    num(&r["nats_read_rate_mean_per_second"]),
                    num(&r["nats_read_rate_peak_per_second"])
                ),
            ),
            None => ("-".into(), "-".into()),
        };
        md += &format!(
            "| {} | {} ({}) | {} | {} | {} ({}) | {} | {} | {} | {} ({}) | {} / {} | {} | {} |\n",
            run_label(file, v),
            cached,
            ours,
            num(&v["namespaces"]),
            v["load_before"].as_str().unwrap_or(""),
            num(&v["all_ready_after_first_apply_seconds"]),
            num(&v["ratio_to_floor"]),
            num(&v["per_component"]["api_writes_apiserver"]),
            num(&v["per_component"]["nats_requests_nats_server"]),
            f(
                settled["operator_process"]["cpu_seconds"]
                    .as_f64()
                    .unwrap_or(f64::NAN)
                    * 1000.0
                    / ours,
                2
            ),
            num(&settled["operator_process"]["peak_rss_mib"]),
            f((peak - before) * 1024.0 / cached, 2),
            num(&settled["apiserver_process"]["peak_rss_mib"]),
            num(&settled["etcd_process"]["peak_rss_mib"]),
            restart_times,
            restart_reads,
        );
    }
    md
}
